//! The admin API, on its own listener (127.0.0.1 by default):
//!
//! | method and path    | what                                                        |
//! |--------------------|-------------------------------------------------------------|
//! | `GET /healthz`     | 200 while the process runs                                  |
//! | `GET /readyz`      | 200 once listeners are bound and a route table is loaded    |
//! | `GET /metrics`     | Prometheus text: `cutover_*` series per release and version |
//! | `GET /routes`      | the route table as JSON, with its generation                |
//! | `PUT /routes`      | replaces the route table (bearer token required)            |
//! | `GET /events`      | events after `?since=ID`, oldest first                      |
//! | `GET /windows`     | rolling-window stats: `?release=R&version=V&seconds=N`      |
//!
//! Writes need `Authorization: Bearer TOKEN`, the token read from the configured file and
//! compared in constant time. Without a configured token, writes are refused; an empty
//! token file stops the proxy from starting. The token is never logged. The listener has
//! the client listeners' header and idle timeouts, a connection cap
//! (`limits.adminMaxConnections`) and a body limit (`limits.adminMaxBodyBytes`).

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use serde::Serialize;
use tokio::sync::{Semaphore, watch};

use crate::Shared;
use crate::config::RouteTableConfig;
use crate::forward::{ProxyBody, full, text};
use crate::http_api::{Bearer, FromBytes, authorize, json, query_value, read_body};
use crate::listen::{self, Bound};
use crate::metrics::VersionStats;
use crate::metrics::export_preamble;
use cutover_core::exposition::{Labels, MetricType, write_family, write_sample};

/// Serves the admin API until shutdown, under the same header and idle timeouts as the
/// client listeners and at most `limits.adminMaxConnections` connections at once (more
/// wait in the kernel's accept queue).
pub(crate) async fn serve(shared: Arc<Shared>, bound: Bound, mut shutdown: watch::Receiver<bool>) {
    let builder = Arc::new(listen::builder(&shared, 64 * 1024, true));
    let timeouts = listen::ConnTimeouts::of(&shared.config.timeouts);
    let permits = Arc::new(Semaphore::new(
        shared.config.limits.admin_max_connections.max(1),
    ));
    let drain = listen::Drain::new();
    loop {
        let permit = tokio::select! {
            permit = permits.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break,
            },
            _ = shutdown.changed() => break,
        };
        let Some((stream, _)) = listen::accept(&bound.listener, &mut shutdown).await else {
            break;
        };
        let shared = shared.clone();
        let builder = builder.clone();
        let shutdown = shutdown.clone();
        let token = drain.token();
        tokio::spawn(async move {
            let activity = listen::Activity::new();
            let service = listen::tracked(activity.clone(), move |req| handle(shared.clone(), req));
            let io = TokioIo::new(listen::Watched::new(stream, activity.clone()));
            listen::drive(&builder, io, service, &activity, timeouts, shutdown).await;
            drop((permit, token));
        });
    }
    drop(bound);
    drain.wait().await;
}

impl FromBytes for ProxyBody {
    fn from_bytes(bytes: Bytes) -> ProxyBody {
        full(bytes)
    }
}

/// The admin API's error document: `{"error": "message"}`.
fn error(status: StatusCode, message: &str) -> Response<ProxyBody> {
    json(status, &serde_json::json!({ "error": message }))
}

/// `None` if the request carries the admin token, else the response refusing it.
fn refusal(shared: &Shared, req: &Request<Incoming>) -> Option<Response<ProxyBody>> {
    let Some(token) = &shared.token else {
        return Some(error(
            StatusCode::FORBIDDEN,
            "writes are disabled: no admin token file is configured (admin.tokenFile)",
        ));
    };
    match authorize(req.headers(), &[token]) {
        Bearer::Matches(_) => None,
        Bearer::Missing | Bearer::Wrong => Some(error(
            StatusCode::UNAUTHORIZED,
            "missing or wrong bearer token",
        )),
    }
}

fn query<'q>(req: &'q Request<Incoming>, name: &str) -> Option<&'q str> {
    query_value(req.uri(), name)
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct TableView {
    generation: u64,
    #[serde(flatten)]
    table: RouteTableConfig,
}

async fn handle(
    shared: Arc<Shared>,
    req: Request<Incoming>,
) -> Result<Response<ProxyBody>, Infallible> {
    let response = match (req.method(), req.uri().path()) {
        (&Method::GET, "/healthz") => text(StatusCode::OK, "ok"),
        (&Method::GET, "/readyz") => text(StatusCode::OK, "ready"),
        (&Method::GET, "/metrics") => {
            let mut out = String::with_capacity(4096);
            export_preamble(&mut out);
            for stats in shared.registry.all_stats() {
                stats.export(&mut out);
            }
            write_family(
                &mut out,
                "cutover_mirror_dropped_total",
                "Mirrored copies dropped because limits.maxMirrorInFlight were under way.",
                MetricType::Counter,
            );
            let dropped = shared
                .mirror_dropped
                .load(std::sync::atomic::Ordering::Relaxed);
            write_sample(
                &mut out,
                "cutover_mirror_dropped_total",
                &Labels::new(),
                dropped,
            );
            let mut response = Response::new(full(out));
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                header::HeaderValue::from_static("text/plain; version=0.0.4"),
            );
            response
        }
        (&Method::GET, "/routes") => {
            let table = shared.table.load();
            json(
                StatusCode::OK,
                &TableView {
                    generation: table.generation,
                    table: table.to_config(),
                },
            )
        }
        (&Method::PUT, "/routes") => match refusal(&shared, &req) {
            Some(response) => response,
            None => put_routes(&shared, req).await,
        },
        (&Method::GET, "/events") => {
            let since = query(&req, "since")
                .and_then(|s| s.parse().ok())
                .unwrap_or(0);
            json(StatusCode::OK, &shared.events.since(since))
        }
        (&Method::GET, "/windows") => version_view(&shared, &req, |stats, seconds, now| {
            json(StatusCode::OK, &stats.window(seconds, now))
        }),
        (&Method::GET, "/evidence") => version_view(&shared, &req, |stats, seconds, now| {
            json(StatusCode::OK, &stats.evidence_by_second(seconds, now))
        }),
        (
            _,
            "/healthz" | "/readyz" | "/metrics" | "/routes" | "/events" | "/windows" | "/evidence",
        ) => error(StatusCode::METHOD_NOT_ALLOWED, "method not allowed here"),
        _ => error(StatusCode::NOT_FOUND, "no such admin endpoint"),
    };
    Ok(response)
}

/// `?release=NAME&version=NAME[&seconds=N]`: one version's numbers over the last `N`
/// seconds (60 by default), as `view` shows them; 400 without the names, 404 for a version
/// never routed.
fn version_view(
    shared: &Shared,
    req: &Request<Incoming>,
    view: impl Fn(&VersionStats, u64, u64) -> Response<ProxyBody>,
) -> Response<ProxyBody> {
    let (Some(release), Some(version)) = (query(req, "release"), query(req, "version")) else {
        return error(
            StatusCode::BAD_REQUEST,
            "give ?release=NAME&version=NAME[&seconds=N]",
        );
    };
    let seconds = query(req, "seconds")
        .and_then(|s| s.parse().ok())
        .unwrap_or(60);
    match shared.registry.stats(release, version) {
        Some(stats) => view(&stats, seconds, shared.second()),
        None => error(
            StatusCode::NOT_FOUND,
            "this release and version were never routed",
        ),
    }
}

async fn put_routes(shared: &Shared, req: Request<Incoming>) -> Response<ProxyBody> {
    let max = shared.config.limits.admin_max_body_bytes;
    let body = match read_body(req.into_body(), max, None).await {
        Ok(body) => body,
        Err(e) => {
            return error(
                e.status(),
                &format!("the route table is larger than {max} bytes (limits.adminMaxBodyBytes)"),
            );
        }
    };
    // What `GET /routes` returns can be sent back as it is: its `generation` is ignored.
    let mut value: serde_json::Value = match serde_json::from_slice(&body) {
        Ok(value) => value,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                &format!("invalid route table: {e}"),
            );
        }
    };
    if let Some(object) = value.as_object_mut() {
        object.remove("generation");
    }
    let config: RouteTableConfig = match serde_json::from_value(value) {
        Ok(config) => config,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                &format!("invalid route table: {e}"),
            );
        }
    };
    let _writer = shared.table_writer.lock().await;
    match shared.publish(&config) {
        Ok(generation) => json(
            StatusCode::OK,
            &serde_json::json!({ "generation": generation }),
        ),
        Err(e) => error(StatusCode::UNPROCESSABLE_ENTITY, &e.to_string()),
    }
}
