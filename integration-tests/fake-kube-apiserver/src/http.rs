//! The HTTP server: accept loop, routing and the handlers for each verb.

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::sync::watch as signal;

use crate::apply::{self, ApplyRequest};
use crate::managed::Operation;
use crate::resources::{self, NAMESPACES, ResourceType};
use crate::selector::{FieldSelector, LabelSelector};
use crate::status::Status;
use crate::{Listening, RequestRecord, Shared, discovery, ops, patch, util, watch};

/// Response bodies: whole JSON documents or watch streams.
pub(crate) type Body = BoxBody<Bytes, Infallible>;

/// The largest request body accepted.
const MAX_BODY: usize = 8 * 1024 * 1024;

/// Starts accepting on `listener` (already bound) on the runtime.
pub(crate) fn serve(
    shared: Arc<Shared>,
    listener: std::net::TcpListener,
    runtime: &tokio::runtime::Handle,
) -> std::io::Result<Listening> {
    listener.set_nonblocking(true)?;
    let (stopped_tx, stopped) = std::sync::mpsc::channel::<()>();
    let (shutdown, shutdown_rx) = signal::channel(false);
    let accept = runtime.spawn(async move {
        let guard = stopped_tx;
        let listener = match tokio::net::TcpListener::from_std(listener) {
            Ok(listener) => listener,
            Err(e) => {
                tracing::error!("fake-kube-apiserver: cannot listen: {e}");
                return;
            }
        };
        loop {
            let stream = match listener.accept().await {
                Ok((stream, _)) => stream,
                Err(e) => {
                    tracing::debug!("fake-kube-apiserver: accept: {e}");
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                    continue;
                }
            };
            let _ = stream.set_nodelay(true);
            let shared = shared.clone();
            let guard = guard.clone();
            let mut shutdown = shutdown_rx.clone();
            tokio::spawn(async move {
                let _guard = guard;
                let conn_shutdown = shutdown.clone();
                let service =
                    service_fn(move |req| handle(shared.clone(), req, conn_shutdown.clone()));
                let conn = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service);
                tokio::select! {
                    _ = conn => {}
                    _ = crate::util::until_set(&mut shutdown) => {}
                }
            });
        }
    });
    Ok(Listening {
        accept: accept.abort_handle(),
        shutdown,
        stopped,
    })
}

/// A whole JSON response.
pub(crate) fn json_response(code: u16, value: &Value) -> Response<Body> {
    let mut response = Response::new(Full::new(Bytes::from(value.to_string())).boxed());
    *response.status_mut() =
        StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    response
}

fn status_response(status: &Status) -> Response<Body> {
    json_response(status.code, &status.to_json())
}

/// The query string as decoded pairs.
pub(crate) struct Query(Vec<(String, String)>);

impl Query {
    fn parse(query: &str) -> Query {
        Query(
            query
                .split('&')
                .filter(|p| !p.is_empty())
                .map(|pair| {
                    let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
                    (decode(k), decode(v))
                })
                .collect(),
        )
    }

    pub(crate) fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    fn flag(&self, key: &str) -> bool {
        matches!(self.get(key), Some("true" | "1"))
    }
}

/// Percent-decoding as in `application/x-www-form-urlencoded` (`+` is a space).
fn decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok();
                match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(b) => {
                        out.push(b);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// What a path addresses.
#[derive(Debug)]
enum Route {
    Health,
    Version,
    CoreVersions,
    Groups,
    Group(String),
    ResourceList(String, String),
    Resource {
        rt: &'static ResourceType,
        namespace: Option<String>,
        name: Option<String>,
        subresource: Option<String>,
    },
}

fn route(path: &str) -> Result<Route, Status> {
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (group, version, rest) = match segments.as_slice() {
        ["healthz" | "readyz" | "livez", ..] => return Ok(Route::Health),
        ["version"] => return Ok(Route::Version),
        ["api"] => return Ok(Route::CoreVersions),
        ["apis"] => return Ok(Route::Groups),
        ["apis", group] => return Ok(Route::Group(group.to_string())),
        ["api", version] => return Ok(Route::ResourceList(String::new(), version.to_string())),
        ["apis", group, version] => {
            return Ok(Route::ResourceList(group.to_string(), version.to_string()));
        }
        ["api", version, rest @ ..] => ("", *version, rest),
        ["apis", group, version, rest @ ..] => (*group, *version, rest),
        _ => return Err(Status::no_route()),
    };
    let find =
        |plural: &str| resources::by_path(group, version, plural).ok_or_else(Status::no_route);
    let owned = |s: &&str| s.to_string();
    let (rt, namespace, name, subresource) = match rest {
        ["namespaces", ns, plural, tail @ ..]
            if resources::by_path(group, version, plural).is_some() =>
        {
            let rt = find(plural)?;
            match tail {
                [] => (rt, Some(ns.to_string()), None, None),
                [name] => (rt, Some(ns.to_string()), Some(name.to_string()), None),
                [name, sub] => (
                    rt,
                    Some(ns.to_string()),
                    Some(name.to_string()),
                    Some(sub.to_string()),
                ),
                _ => return Err(Status::no_route()),
            }
        }
        [plural] => (find(plural)?, None, None, None),
        [plural, name] => (find(plural)?, None, Some(name.to_string()), None),
        [plural, name, sub] => (
            find(plural)?,
            None,
            Some(name.to_string()),
            Some(owned(sub)),
        ),
        _ => return Err(Status::no_route()),
    };
    if let Some(sub) = &subresource
        && !rt.subresources.contains(&sub.as_str())
    {
        return Err(Status::no_route());
    }
    if rt.namespaced && namespace.is_none() && name.is_some() {
        return Err(Status::no_route());
    }
    Ok(Route::Resource {
        rt,
        namespace,
        name,
        subresource,
    })
}

/// One request, parsed.
struct Call {
    method: Method,
    query: Query,
    content_type: String,
    body: Bytes,
}

impl Call {
    fn manager(&self) -> String {
        self.query
            .get("fieldManager")
            .filter(|m| !m.is_empty())
            .unwrap_or("unknown")
            .to_string()
    }

    fn json(&self) -> Result<Value, Status> {
        serde_json::from_slice(&self.body).map_err(|e| {
            Status::bad_request(format!(
                "the body of the request could not be decoded as JSON: {e}"
            ))
        })
    }
}

async fn handle(
    shared: Arc<Shared>,
    req: Request<Incoming>,
    shutdown: signal::Receiver<bool>,
) -> Result<Response<Body>, Infallible> {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let raw_query = req.uri().query().unwrap_or("").to_string();
    let query = Query::parse(&raw_query);
    let content_type = req
        .headers()
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let field_manager = query.get("fieldManager").map(str::to_string);
    let body = match Limited::new(req.into_body(), MAX_BODY).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(e) => {
            let response = status_response(&Status::bad_request(format!(
                "cannot read the request body: {e}"
            )));
            return Ok(response);
        }
    };
    let call = Call {
        method: method.clone(),
        query,
        content_type: content_type
            .as_deref()
            .map(|c| c.split(';').next().unwrap_or("").trim().to_string())
            .unwrap_or_default(),
        body,
    };
    let response = match dispatch(&shared, &path, &call, shutdown) {
        Ok(response) => response,
        Err(status) => status_response(&status),
    };
    tracing::debug!(%method, %path, query = %raw_query, status = response.status().as_u16(), "fake-kube-apiserver");
    shared.record(RequestRecord {
        method,
        path,
        query: raw_query,
        content_type,
        field_manager,
        status: response.status().as_u16(),
    });
    Ok(response)
}

fn dispatch(
    shared: &Arc<Shared>,
    path: &str,
    call: &Call,
    shutdown: signal::Receiver<bool>,
) -> Result<Response<Body>, Status> {
    let route = route(path)?;
    let Route::Resource {
        rt,
        namespace,
        name,
        subresource,
    } = route
    else {
        if call.method != Method::GET {
            return Err(Status::method_not_allowed());
        }
        return Ok(json_response(
            200,
            &match route {
                Route::Health => return Ok(plain("ok")),
                Route::Version => discovery::version(),
                Route::CoreVersions => discovery::core_versions(shared.port),
                Route::Groups => discovery::groups(),
                Route::Group(group) => discovery::group(&group).ok_or_else(Status::no_route)?,
                Route::ResourceList(group, version) => {
                    discovery::resource_list(&group, &version).ok_or_else(Status::no_route)?
                }
                Route::Resource { .. } => return Err(Status::no_route()),
            },
        ));
    };
    if let Some(fault) = shared.take_fault(&call.method, Some(rt.plural), name.as_deref()) {
        return Err(fault.status_for(rt.plural, rt.group, namespace.as_deref(), name.as_deref()));
    }
    if call.query.get("dryRun").is_some_and(|v| !v.is_empty()) {
        return Err(Status::bad_request(
            "dryRun is not supported by the fake API server",
        ));
    }
    // Cluster-scoped objects live under the empty namespace.
    let ns = if rt.namespaced {
        namespace.clone().unwrap_or_default()
    } else {
        String::new()
    };
    let target = Target { rt, ns: &ns };
    match (&call.method, name.as_deref(), subresource.as_deref()) {
        (&Method::GET, None, None) => {
            let labels = LabelSelector::parse(call.query.get("labelSelector").unwrap_or(""))?;
            let fields = FieldSelector::parse(call.query.get("fieldSelector").unwrap_or(""))?;
            let scope = if rt.namespaced {
                namespace.clone()
            } else {
                None
            };
            if call.query.flag("watch") {
                let request = watch::WatchRequest::new(rt, scope, labels, fields, &call.query)?;
                Ok(watch::start(shared.clone(), request, shutdown))
            } else {
                Ok(json_response(
                    200,
                    &list(shared, rt, scope.as_deref(), &labels, &fields),
                ))
            }
        }
        (&Method::GET, Some(name), None | Some("status")) => {
            get(shared, target, name).map(|o| json_response(200, &o))
        }
        (&Method::GET, Some(name), Some("scale")) => {
            let object = get(shared, target, name)?;
            Ok(json_response(200, &scale_of(&object)))
        }
        (&Method::POST, None, None) if !rt.namespaced || namespace.is_some() => {
            let object = call.json()?;
            let created = ops::create(
                &mut shared.store(),
                rt,
                &ns,
                object,
                &call.manager(),
                Operation::Update,
            )?;
            Ok(json_response(201, &created))
        }
        (&Method::PUT, Some(name), sub) => {
            replace(shared, target, name, sub, call).map(|o| json_response(200, &o))
        }
        (&Method::PATCH, Some(name), sub) => {
            patch_object(shared, target, name, sub, call).map(|(code, o)| json_response(code, &o))
        }
        (&Method::DELETE, Some(name), None) => {
            delete(shared, target, name, call).map(|o| json_response(200, &o))
        }
        _ => Err(Status::method_not_allowed()),
    }
}

fn plain(text: &'static str) -> Response<Body> {
    let mut response = Response::new(Full::new(Bytes::from_static(text.as_bytes())).boxed());
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

/// The type and namespace a request addresses.
#[derive(Clone, Copy)]
struct Target<'a> {
    rt: &'static ResourceType,
    ns: &'a str,
}

fn get(shared: &Shared, target: Target<'_>, name: &str) -> Result<Value, Status> {
    let store = shared.store();
    match store.get(target.rt, target.ns, name) {
        Some(object) => Ok(object.clone()),
        None if target.rt.plural == NAMESPACES.plural => Ok(implicit_namespace(name)),
        None => Err(Status::not_found(target.rt, name)),
    }
}

/// A namespace nobody created: every namespace exists here.
fn implicit_namespace(name: &str) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": name, "resourceVersion": "1", "labels": {"kubernetes.io/metadata.name": name}},
        "spec": {"finalizers": ["kubernetes"]},
        "status": {"phase": "Active"},
    })
}

fn list(
    shared: &Shared,
    rt: &'static ResourceType,
    namespace: Option<&str>,
    labels: &LabelSelector,
    fields: &FieldSelector,
) -> Value {
    let store = shared.store();
    let mut items: Vec<Value> = store
        .list(rt, namespace)
        .into_iter()
        .filter(|o| labels.matches_object(o) && fields.matches_object(o))
        .cloned()
        .collect();
    if rt.plural == NAMESPACES.plural {
        let mut names: Vec<String> = store.namespaces_in_use();
        names.extend(["default", "kube-system", "kube-public"].map(String::from));
        names.sort();
        names.dedup();
        for name in names {
            if store.get(rt, "", &name).is_none() {
                let ns = implicit_namespace(&name);
                if labels.matches_object(&ns) && fields.matches_object(&ns) {
                    items.push(ns);
                }
            }
        }
    }
    json!({
        "kind": format!("{}List", rt.kind),
        "apiVersion": rt.api_version(),
        "metadata": {"resourceVersion": store.rv().to_string()},
        "items": items,
    })
}

fn check_name(body: &Value, name: &str) -> Result<(), Status> {
    match util::str_at(body, "/metadata/name") {
        Some(n) if n != name => Err(Status::bad_request(format!(
            "the name of the object ({n}) does not match the name on the URL ({name})"
        ))),
        _ => Ok(()),
    }
}

fn replace(
    shared: &Shared,
    target: Target<'_>,
    name: &str,
    sub: Option<&str>,
    call: &Call,
) -> Result<Value, Status> {
    let rt = target.rt;
    let body = call.json()?;
    check_name(&body, name)?;
    let mut store = shared.store();
    let current = store
        .get(rt, target.ns, name)
        .cloned()
        .ok_or_else(|| Status::not_found(rt, name))?;
    ops::check_precondition(
        rt,
        name,
        &current,
        util::str_at(&body, "/metadata/resourceVersion"),
    )?;
    match sub {
        None | Some("status") => ops::commit(
            &mut store,
            rt,
            target.ns,
            name,
            &current,
            body,
            sub.is_some(),
            ops::Ownership::Update(&call.manager()),
        ),
        Some(_) => {
            let replicas = body.pointer("/spec/replicas").cloned().unwrap_or(json!(0));
            let updated = set_replicas(
                &mut store,
                target,
                name,
                &current,
                replicas,
                &call.manager(),
            )?;
            Ok(scale_of(&updated))
        }
    }
}

fn patch_object(
    shared: &Shared,
    target: Target<'_>,
    name: &str,
    sub: Option<&str>,
    call: &Call,
) -> Result<(u16, Value), Status> {
    let rt = target.rt;
    // As on a real server, the media type is checked before anything else; custom
    // resources have no strategic merge patch.
    let accepted = resources::patch_types(rt);
    if !accepted.contains(&call.content_type.as_str()) {
        return Err(Status::unsupported_media_type(accepted));
    }
    let body = call.json().map_err(|e| {
        if call.content_type == "application/apply-patch+yaml" {
            Status::new(
                415,
                "UnsupportedMediaType",
                "the fake API server reads apply patches as JSON only (JSON is YAML; send JSON)",
            )
        } else {
            e
        }
    })?;
    let mut store = shared.store();
    if call.content_type == "application/apply-patch+yaml" {
        let Some(manager) = call.query.get("fieldManager").filter(|m| !m.is_empty()) else {
            return Err(Status::bad_request(
                "PatchOptions.meta.k8s.io \"\" is invalid: fieldManager: Required value: is required for apply patch",
            ));
        };
        if sub == Some("scale") {
            return Err(Status::unsupported_media_type(&[
                "application/json-patch+json",
                "application/merge-patch+json",
                "application/strategic-merge-patch+json",
            ]));
        }
        let existed = store.get(rt, target.ns, name).is_some();
        let request = ApplyRequest {
            rt,
            namespace: target.ns,
            name,
            manager,
            force: call.query.flag("force"),
            status_only: sub == Some("status"),
        };
        let object = apply::apply(&mut store, &request, body)?;
        return Ok((if existed { 200 } else { 201 }, object));
    }
    let current = store
        .get(rt, target.ns, name)
        .cloned()
        .ok_or_else(|| Status::not_found(rt, name))?;
    let base = if sub == Some("scale") {
        scale_of(&current)
    } else {
        current.clone()
    };
    let mut patched = base.clone();
    match call.content_type.as_str() {
        "application/merge-patch+json" => {
            ops::check_precondition(
                rt,
                name,
                &current,
                util::str_at(&body, "/metadata/resourceVersion"),
            )?;
            patch::merge_patch(&mut patched, &body);
        }
        "application/strategic-merge-patch+json" => {
            ops::check_precondition(
                rt,
                name,
                &current,
                util::str_at(&body, "/metadata/resourceVersion"),
            )?;
            patch::strategic_merge_patch(&mut patched, &body);
        }
        "application/json-patch+json" => {
            patch::json_patch(&mut patched, &body)?;
            let after = util::str_at(&patched, "/metadata/resourceVersion");
            if after != util::str_at(&base, "/metadata/resourceVersion") {
                ops::check_precondition(rt, name, &current, after)?;
            }
        }
        _ => return Err(Status::unsupported_media_type(accepted)),
    }
    check_name(&patched, name)?;
    let manager = call.manager();
    let object = match sub {
        Some("scale") => {
            let replicas = patched
                .pointer("/spec/replicas")
                .cloned()
                .unwrap_or(json!(0));
            scale_of(&set_replicas(
                &mut store, target, name, &current, replicas, &manager,
            )?)
        }
        _ => ops::commit(
            &mut store,
            rt,
            target.ns,
            name,
            &current,
            patched,
            sub == Some("status"),
            ops::Ownership::Update(&manager),
        )?,
    };
    Ok((200, object))
}

fn set_replicas(
    store: &mut crate::store::Store,
    target: Target<'_>,
    name: &str,
    current: &Value,
    replicas: Value,
    manager: &str,
) -> Result<Value, Status> {
    if !replicas.is_i64() {
        return Err(Status::invalid(
            target.rt,
            name,
            &[(
                "spec.replicas".into(),
                format!("Invalid value: {replicas}: must be an integer"),
            )],
        ));
    }
    let mut desired = current.clone();
    if let Some(spec) = desired.get_mut("spec").and_then(Value::as_object_mut) {
        spec.insert("replicas".into(), replicas);
    }
    ops::commit(
        store,
        target.rt,
        target.ns,
        name,
        current,
        desired,
        false,
        ops::Ownership::Update(manager),
    )
}

/// The autoscaling/v1 `Scale` of a Deployment.
fn scale_of(object: &Value) -> Value {
    let selector = object
        .pointer("/spec/selector/matchLabels")
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
                .collect::<Vec<_>>()
                .join(",")
        })
        .unwrap_or_default();
    let meta = object.get("metadata").cloned().unwrap_or(json!({}));
    json!({
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": {
            "name": meta.get("name"),
            "namespace": meta.get("namespace"),
            "uid": meta.get("uid"),
            "resourceVersion": meta.get("resourceVersion"),
            "creationTimestamp": meta.get("creationTimestamp"),
        },
        "spec": {"replicas": object.pointer("/spec/replicas").cloned().unwrap_or(json!(0))},
        "status": {
            "replicas": object.pointer("/status/replicas").cloned().unwrap_or(json!(0)),
            "selector": selector,
        },
    })
}

fn delete(shared: &Shared, target: Target<'_>, name: &str, call: &Call) -> Result<Value, Status> {
    let options: Value = if call.body.is_empty() {
        json!({})
    } else {
        call.json()?
    };
    let policy = call
        .query
        .get("propagationPolicy")
        .map(str::to_string)
        .or_else(|| util::str_at(&options, "/propagationPolicy").map(str::to_string));
    let mut store = shared.store();
    let current = store
        .get(target.rt, target.ns, name)
        .cloned()
        .ok_or_else(|| Status::not_found(target.rt, name))?;
    if let Some(rv) = util::str_at(&options, "/preconditions/resourceVersion")
        && Some(rv) != util::str_at(&current, "/metadata/resourceVersion")
    {
        return Err(Status::new(
            409,
            "Conflict",
            format!(
                "Operation cannot be fulfilled on {} \"{name}\": Precondition failed: ResourceVersion in precondition: {rv}, ResourceVersion in object meta: {}",
                target.rt.qualified(),
                util::str_at(&current, "/metadata/resourceVersion").unwrap_or("")
            ),
        ));
    }
    if let Some(uid) = util::str_at(&options, "/preconditions/uid")
        && Some(uid) != util::str_at(&current, "/metadata/uid")
    {
        return Err(Status::new(
            409,
            "Conflict",
            format!(
                "Operation cannot be fulfilled on {} \"{name}\": Precondition failed: UID in precondition: {uid}, UID in object meta: {}",
                target.rt.qualified(),
                util::str_at(&current, "/metadata/uid").unwrap_or("")
            ),
        ));
    }
    ops::delete(
        &mut store,
        target.rt,
        target.ns,
        name,
        policy.as_deref() == Some("Orphan"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_form_encoding() {
        assert_eq!(decode("app+in+%28a%2Cb%29"), "app in (a,b)");
        assert_eq!(decode("100%"), "100%");
        assert_eq!(decode("%zz"), "%zz");
    }

    #[test]
    fn routes_namespaced_and_cluster_paths() {
        assert!(matches!(
            route("/apis/apps/v1/namespaces/default/deployments/web/scale"),
            Ok(Route::Resource {
                subresource: Some(_),
                name: Some(_),
                namespace: Some(_),
                ..
            })
        ));
        assert!(matches!(
            route("/api/v1/pods"),
            Ok(Route::Resource {
                namespace: None,
                name: None,
                ..
            })
        ));
        assert!(matches!(
            route("/api/v1/namespaces/default"),
            Ok(Route::Resource {
                namespace: None,
                name: Some(_),
                ..
            })
        ));
        assert!(matches!(
            route("/apis/cutover.dev/v1/namespaces/default/releases/shop/status"),
            Ok(Route::Resource { rt, subresource: Some(_), .. }) if rt.custom
        ));
        assert!(matches!(
            route("/apis/cutover.dev/v1/releases"),
            Ok(Route::Resource {
                namespace: None,
                name: None,
                ..
            })
        ));
        assert!(route("/apis/cutover.dev/v1/namespaces/default/releases/shop/scale").is_err());
        assert!(route("/apis/apps/v1/namespaces/default/widgets").is_err());
        assert!(route("/api/v1/pods/x").is_err());
    }
}
