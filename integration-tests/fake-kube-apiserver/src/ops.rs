//! Writes with the API server's semantics: validation, defaults, system metadata
//! (uid, resourceVersion, generation, managedFields), preconditions and garbage collection.
//! The HTTP layer, the public helpers and the simulated controllers all write through here.

use serde_json::{Map, Value, json};

use crate::fields::{self, FieldSet};
use crate::managed::{self, Entry, Operation};
use crate::resources::{self, ResourceType};
use crate::selector::LabelSelector;
use crate::status::Status;
use crate::store::Store;
use crate::util;

/// Who writes, and how ownership of the written fields is recorded.
#[derive(Debug)]
pub(crate) enum Ownership<'a> {
    /// An Update by this manager: it owns the fields it changed.
    Update(&'a str),
    /// Server-side apply computed the entries.
    Explicit(Vec<Entry>),
}

/// Fails with 409 Conflict when `wanted` is a resourceVersion other than the object's.
pub(crate) fn check_precondition(
    rt: &ResourceType,
    name: &str,
    current: &Value,
    wanted: Option<&str>,
) -> Result<(), Status> {
    match wanted {
        Some(wanted)
            if !wanted.is_empty()
                && Some(wanted) != util::str_at(current, "/metadata/resourceVersion") =>
        {
            Err(Status::conflict(rt, name))
        }
        _ => Ok(()),
    }
}

/// Creates an object as a POST would. `namespace` is empty for cluster-scoped types.
pub(crate) fn create(
    store: &mut Store,
    rt: &'static ResourceType,
    namespace: &str,
    mut object: Value,
    manager: &str,
    operation: Operation,
) -> Result<Value, Status> {
    check_type(rt, &mut object)?;
    let meta = object
        .as_object_mut()
        .and_then(|o| {
            o.entry("metadata")
                .or_insert_with(|| Value::Object(Map::new()))
                .as_object_mut()
        })
        .ok_or_else(|| Status::bad_request("metadata must be an object"))?;
    match meta.get("namespace").and_then(Value::as_str) {
        Some(ns) if rt.namespaced && !ns.is_empty() && ns != namespace => {
            return Err(Status::bad_request(
                "the namespace of the provided object does not match the namespace sent on the request",
            ));
        }
        _ => {}
    }
    if rt.namespaced {
        meta.insert("namespace".into(), Value::String(namespace.to_string()));
    } else {
        meta.remove("namespace");
    }
    let mut name = meta
        .get("name")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    if name.is_empty() {
        let prefix = meta
            .get("generateName")
            .and_then(Value::as_str)
            .unwrap_or("");
        if prefix.is_empty() {
            return Err(Status::invalid(
                rt,
                "",
                &[(
                    "metadata.name".into(),
                    "Required value: name or generateName is required".into(),
                )],
            ));
        }
        name = format!("{prefix}{}", store.rng.suffix(5));
        meta.insert("name".into(), Value::String(name.clone()));
    }
    validate_name(rt, &name)?;
    if store.get(rt, namespace, &name).is_some() {
        return Err(Status::already_exists(rt, &name));
    }
    let owned = fields::leaves(&fields::tracked(&object, false));
    if let Some(map) = object.as_object_mut() {
        map.remove("status");
    }
    set_initial_status(rt, &mut object);
    apply_defaults(store, rt, &mut object, None);
    validate(rt, &name, &object, None)?;
    let uid = store.rng.uuid();
    let now = util::now_rfc3339();
    let entries = vec![Entry {
        manager: manager.to_string(),
        operation,
        subresource: None,
        api_version: rt.api_version(),
        time: now.clone(),
        fields: owned,
    }];
    if let Some(meta) = object.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.insert("uid".into(), Value::String(uid));
        meta.insert("creationTimestamp".into(), Value::String(now));
        meta.insert("generation".into(), json!(1));
        meta.remove("resourceVersion");
        meta.remove("deletionTimestamp");
        meta.insert("managedFields".into(), managed::render(&entries));
    }
    Ok(store.put(rt, namespace, &name, object, None))
}

/// Replaces the object (or only its status) by `desired` as an Update by `manager`.
pub(crate) fn update(
    store: &mut Store,
    rt: &'static ResourceType,
    namespace: &str,
    name: &str,
    desired: Value,
    manager: &str,
    status_only: bool,
) -> Result<Value, Status> {
    let old = store
        .get(rt, namespace, name)
        .cloned()
        .ok_or_else(|| Status::not_found(rt, name))?;
    commit(
        store,
        rt,
        namespace,
        name,
        &old,
        desired,
        status_only,
        Ownership::Update(manager),
    )
}

/// Writes `desired` over `old`: keeps system metadata (and status, or everything but status
/// for `status_only`), applies defaults, validates, bumps generation on spec changes,
/// records ownership. A write that changes nothing is not stored and keeps the
/// resourceVersion, as on a real server.
#[allow(clippy::too_many_arguments)]
pub(crate) fn commit(
    store: &mut Store,
    rt: &'static ResourceType,
    namespace: &str,
    name: &str,
    old: &Value,
    mut desired: Value,
    status_only: bool,
    ownership: Ownership<'_>,
) -> Result<Value, Status> {
    check_type(rt, &mut desired)?;
    let mut result = if status_only {
        let mut result = old.clone();
        if let Some(map) = result.as_object_mut() {
            match desired.get("status") {
                Some(status) => map.insert("status".into(), status.clone()),
                None => map.remove("status"),
            };
        }
        result
    } else {
        let Some(map) = desired.as_object_mut() else {
            return Err(Status::bad_request("the object must be a JSON object"));
        };
        match old.get("status") {
            Some(status) => map.insert("status".into(), status.clone()),
            None => map.remove("status"),
        };
        let meta = map
            .entry("metadata")
            .or_insert_with(|| Value::Object(Map::new()));
        if !meta.is_object() {
            return Err(Status::bad_request("metadata must be an object"));
        }
        if let (Some(meta), Some(old_meta)) = (meta.as_object_mut(), old.get("metadata")) {
            for key in [
                "name",
                "namespace",
                "uid",
                "creationTimestamp",
                "generation",
                "managedFields",
                "resourceVersion",
                "generateName",
                "deletionTimestamp",
            ] {
                match old_meta.get(key) {
                    Some(v) => meta.insert(key.to_string(), v.clone()),
                    None => meta.remove(key),
                };
            }
        }
        desired
    };
    apply_defaults(store, rt, &mut result, Some(old));
    validate(rt, name, &result, Some(old))?;

    let old_entries = managed::parse(old);
    let subresource = status_only.then(|| "status".to_string());
    let entries = match ownership {
        Ownership::Explicit(mut entries) => {
            managed::prune(&mut entries, &result);
            entries
        }
        Ownership::Update(manager) => {
            let before = fields::tracked(old, status_only);
            let after = fields::tracked(&result, status_only);
            let changed: FieldSet = fields::leaves(&after)
                .into_iter()
                .filter(|p| fields::get(&before, p) != fields::get(&after, p))
                .collect();
            let mut entries = old_entries.clone();
            managed::record_update(
                &mut entries,
                Entry {
                    manager: manager.to_string(),
                    operation: Operation::Update,
                    subresource,
                    api_version: rt.api_version(),
                    time: util::now_rfc3339(),
                    fields: FieldSet::new(),
                },
                &changed,
                &result,
            );
            entries
        }
    };
    if without_managed(&result) == without_managed(old)
        && managed::same_ownership(&entries, &old_entries)
    {
        return Ok(old.clone());
    }
    let spec_changed = !status_only && content(&result) != content(old);
    if let Some(meta) = result.get_mut("metadata").and_then(Value::as_object_mut) {
        if spec_changed {
            let generation = meta.get("generation").and_then(Value::as_i64).unwrap_or(1);
            meta.insert("generation".into(), json!(generation + 1));
        }
        meta.insert("managedFields".into(), managed::render(&entries));
    }
    Ok(store.put(rt, namespace, name, result, Some(old.clone())))
}

/// Deletes an object and, unless `orphan`, everything it owns (transitively).
pub(crate) fn delete(
    store: &mut Store,
    rt: &'static ResourceType,
    namespace: &str,
    name: &str,
    orphan: bool,
) -> Result<Value, Status> {
    let deleted = store
        .remove(rt, namespace, name)
        .ok_or_else(|| Status::not_found(rt, name))?;
    if !orphan && let Some(uid) = util::str_at(&deleted, "/metadata/uid") {
        collect_garbage(store, uid);
    }
    Ok(deleted)
}

/// Deletes every object whose ownerReferences name `uid`.
fn collect_garbage(store: &mut Store, uid: &str) {
    let dependents: Vec<(&'static ResourceType, String, String)> = store
        .all()
        .filter(|(_, _, object)| owned_by(object, uid))
        .map(|(rt, ns, object)| {
            (
                rt,
                ns.to_string(),
                util::str_at(object, "/metadata/name")
                    .unwrap_or("")
                    .to_string(),
            )
        })
        .collect();
    for (rt, ns, name) in dependents {
        let _ = delete(store, rt, &ns, &name, false);
    }
}

/// Whether the object has an ownerReference with this uid.
pub(crate) fn owned_by(object: &Value, uid: &str) -> bool {
    object
        .pointer("/metadata/ownerReferences")
        .and_then(Value::as_array)
        .is_some_and(|refs| {
            refs.iter()
                .any(|r| r.get("uid").and_then(Value::as_str) == Some(uid))
        })
}

fn without_managed(object: &Value) -> Value {
    let mut copy = object.clone();
    if let Some(meta) = copy.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.remove("managedFields");
    }
    copy
}

/// Everything outside metadata and status: what `generation` counts changes of.
fn content(object: &Value) -> Value {
    let mut copy = object.clone();
    if let Some(map) = copy.as_object_mut() {
        map.remove("metadata");
        map.remove("status");
    }
    copy
}

fn check_type(rt: &ResourceType, object: &mut Value) -> Result<(), Status> {
    let Some(map) = object.as_object_mut() else {
        return Err(Status::bad_request("the object must be a JSON object"));
    };
    let api_version = rt.api_version();
    match map.get("apiVersion").and_then(Value::as_str) {
        Some(v) if !v.is_empty() && v != api_version => {
            return Err(Status::bad_request(format!(
                "the API version in the data ({v}) does not match the expected API version ({api_version})"
            )));
        }
        _ => {}
    }
    match map.get("kind").and_then(Value::as_str) {
        Some(k) if !k.is_empty() && k != rt.kind => {
            return Err(Status::bad_request(format!(
                "the kind in the data ({k}) does not match the expected kind ({})",
                rt.kind
            )));
        }
        _ => {}
    }
    map.insert("apiVersion".into(), Value::String(api_version));
    map.insert("kind".into(), Value::String(rt.kind.to_string()));
    Ok(())
}

fn validate_name(rt: &ResourceType, name: &str) -> Result<(), Status> {
    let (ok, message) = if rt.plural == "services" || rt.plural == "namespaces" {
        (
            is_dns_label(name),
            "a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an alphabetic character, and end with an alphanumeric character (e.g. 'my-name',  or 'abc-123', regex used for validation is '[a-z]([-a-z0-9]*[a-z0-9])?')",
        )
    } else {
        (
            is_dns_subdomain(name),
            "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')",
        )
    };
    if ok {
        Ok(())
    } else {
        Err(Status::invalid(
            rt,
            name,
            &[(
                "metadata.name".into(),
                format!("Invalid value: {name:?}: {message}"),
            )],
        ))
    }
}

fn is_label_part(part: &str, first_alpha: bool) -> bool {
    let bytes = part.as_bytes();
    let edge = |b: &u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    !bytes.is_empty()
        && bytes.len() <= 63
        && bytes.iter().all(|b| edge(b) || *b == b'-')
        && bytes.first().is_some_and(|b| {
            if first_alpha {
                b.is_ascii_lowercase()
            } else {
                edge(b)
            }
        })
        && bytes.last().is_some_and(edge)
}

fn is_dns_subdomain(name: &str) -> bool {
    name.len() <= 253 && name.split('.').all(|p| is_label_part(p, false))
}

fn is_dns_label(name: &str) -> bool {
    is_label_part(name, true)
}

fn set_initial_status(rt: &ResourceType, object: &mut Value) {
    let status = match rt.plural {
        "pods" => json!({"phase": "Pending", "qosClass": "BestEffort"}),
        "services" => json!({"loadBalancer": {}}),
        "namespaces" => json!({"phase": "Active"}),
        "deployments" => json!({}),
        "customresourcedefinitions" => crd_status(object),
        _ => return,
    };
    if let Some(map) = object.as_object_mut() {
        map.insert("status".into(), status);
    }
}

/// What the apiextensions controllers would soon write: the names accepted as asked, the
/// storage version stored, and the definition established.
fn crd_status(crd: &Value) -> Value {
    let mut names = crd.pointer("/spec/names").cloned().unwrap_or(json!({}));
    if let Some(map) = names.as_object_mut() {
        let kind = map.get("kind").and_then(Value::as_str).unwrap_or("");
        if !kind.is_empty() {
            let (list_kind, singular) = (format!("{kind}List"), kind.to_lowercase());
            ensure(map, "listKind", json!(list_kind));
            ensure(map, "singular", json!(singular));
        }
    }
    let stored: Vec<Value> = crd
        .pointer("/spec/versions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter(|v| v.get("storage").and_then(Value::as_bool) == Some(true))
        .filter_map(|v| v.get("name").cloned())
        .collect();
    let now = util::now_rfc3339();
    json!({
        "acceptedNames": names,
        "storedVersions": stored,
        "conditions": [
            {"type": "NamesAccepted", "status": "True", "reason": "NoConflicts", "message": "no conflicts found", "lastTransitionTime": now},
            {"type": "Established", "status": "True", "reason": "InitialNamesAccepted", "message": "the initial names have been accepted", "lastTransitionTime": now},
        ],
    })
}

fn ensure<'a>(map: &'a mut Map<String, Value>, key: &str, default: Value) -> &'a mut Value {
    let entry = map.entry(key.to_string()).or_insert(Value::Null);
    if entry.is_null() {
        *entry = default;
    }
    entry
}

/// The defaults the real API server fills in (the few that matter here).
fn apply_defaults(store: &mut Store, rt: &ResourceType, object: &mut Value, old: Option<&Value>) {
    let Some(spec) = object.get_mut("spec").and_then(Value::as_object_mut) else {
        return;
    };
    match rt.plural {
        "deployments" => {
            ensure(spec, "replicas", json!(1));
            ensure(spec, "progressDeadlineSeconds", json!(600));
            ensure(spec, "revisionHistoryLimit", json!(10));
            ensure(
                spec,
                "strategy",
                json!({"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"}}),
            );
        }
        "pods" => {
            ensure(spec, "restartPolicy", json!("Always"));
            default_container_ports(spec.get_mut("containers"));
        }
        "services" => {
            ensure(spec, "type", json!("ClusterIP"));
            ensure(spec, "sessionAffinity", json!("None"));
            if let Some(ports) = spec.get_mut("ports").and_then(Value::as_array_mut) {
                for port in ports.iter_mut().filter_map(Value::as_object_mut) {
                    ensure(port, "protocol", json!("TCP"));
                    let number = port.get("port").cloned().unwrap_or(Value::Null);
                    ensure(port, "targetPort", number);
                }
            }
            let old_ip = old.and_then(|o| o.pointer("/spec/clusterIP")).cloned();
            if spec
                .get("clusterIP")
                .is_none_or(|ip| ip.as_str().is_none_or(str::is_empty))
            {
                let ip = match old_ip {
                    Some(ip) => ip,
                    None => Value::String(store.allocate_cluster_ip()),
                };
                spec.insert("clusterIP".into(), ip);
            }
            if let Some(ip) = spec.get("clusterIP").cloned() {
                spec.insert("clusterIPs".into(), json!([ip]));
            }
        }
        _ => {}
    }
}

fn default_container_ports(containers: Option<&mut Value>) {
    for container in containers
        .and_then(Value::as_array_mut)
        .into_iter()
        .flatten()
        .filter_map(Value::as_object_mut)
    {
        for port in container
            .get_mut("ports")
            .and_then(Value::as_array_mut)
            .into_iter()
            .flatten()
            .filter_map(Value::as_object_mut)
        {
            ensure(port, "protocol", json!("TCP"));
        }
    }
}

/// Go's `%#v` of a string map, as validation messages print label maps.
fn go_map(map: Option<&Value>) -> String {
    let inner: Vec<String> = map
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
        .map(|(k, v)| format!("{k:?}:{:?}", v.as_str().unwrap_or("")))
        .collect();
    format!("map[string]string{{{}}}", inner.join(", "))
}

fn validate(
    rt: &ResourceType,
    name: &str,
    object: &Value,
    old: Option<&Value>,
) -> Result<(), Status> {
    let mut causes: Vec<(String, String)> = Vec::new();
    match rt.plural {
        "deployments" => {
            let selector = object.pointer("/spec/selector");
            let empty = selector.is_none_or(|s| {
                s.get("matchLabels")
                    .and_then(Value::as_object)
                    .is_none_or(Map::is_empty)
                    && s.get("matchExpressions")
                        .and_then(Value::as_array)
                        .is_none_or(Vec::is_empty)
            });
            if empty {
                causes.push(("spec.selector".into(), "Required value".into()));
            } else if let Some(selector) = selector {
                let labels = object.pointer("/spec/template/metadata/labels");
                if !LabelSelector::from_label_selector(selector)
                    .matches(labels.and_then(Value::as_object))
                {
                    causes.push((
                        "spec.template.metadata.labels".into(),
                        format!(
                            "Invalid value: {}: `selector` does not match template `labels`",
                            go_map(labels)
                        ),
                    ));
                }
                if let Some(old_selector) = old.and_then(|o| o.pointer("/spec/selector"))
                    && old_selector != selector
                {
                    causes.push((
                        "spec.selector".into(),
                        format!("Invalid value: {selector}: field is immutable"),
                    ));
                }
            }
            if object
                .pointer("/spec/template/spec/containers")
                .and_then(Value::as_array)
                .is_none_or(Vec::is_empty)
            {
                causes.push((
                    "spec.template.spec.containers".into(),
                    "Required value".into(),
                ));
            }
            if object
                .pointer("/spec/replicas")
                .and_then(Value::as_i64)
                .is_some_and(|r| r < 0)
            {
                causes.push((
                    "spec.replicas".into(),
                    "Invalid value: must be greater than or equal to 0".into(),
                ));
            }
        }
        "customresourcedefinitions" => {
            let plural = util::str_at(object, "/spec/names/plural").unwrap_or("");
            let group = util::str_at(object, "/spec/group").unwrap_or("");
            if name != format!("{plural}.{group}") {
                causes.push((
                    "metadata.name".into(),
                    format!("Invalid value: {name:?}: must be spec.names.plural+\".\"+spec.group"),
                ));
            }
        }
        "pods"
            if object
                .pointer("/spec/containers")
                .and_then(Value::as_array)
                .is_none_or(Vec::is_empty) =>
        {
            causes.push(("spec.containers".into(), "Required value".into()));
        }
        _ => {}
    }
    if causes.is_empty() {
        Ok(())
    } else {
        Err(Status::invalid(rt, name, &causes))
    }
}

/// The type for an object's `apiVersion` and `kind`, or 400/404 as a POST would answer.
pub(crate) fn type_of(object: &Value) -> Result<&'static ResourceType, Status> {
    let api_version = util::str_at(object, "/apiVersion").unwrap_or("");
    let kind = util::str_at(object, "/kind").unwrap_or("");
    if api_version.is_empty() || kind.is_empty() {
        return Err(Status::bad_request(
            "Object 'Kind' or 'apiVersion' is missing",
        ));
    }
    resources::by_kind(api_version, kind).ok_or_else(|| {
        Status::new(
            404,
            "NotFound",
            format!("the server could not find the requested resource ({kind} {api_version})"),
        )
    })
}
