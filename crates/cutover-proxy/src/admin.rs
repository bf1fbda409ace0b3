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
//! compared in constant time. Without a configured token, writes are refused. The token is
//! never logged.

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde::Serialize;
use tokio::sync::watch;

use crate::Shared;
use crate::config::RouteTableConfig;
use crate::forward::{ProxyBody, full, text};
use crate::listen::Bound;
use crate::metrics::export_preamble;

/// Largest `PUT /routes` body accepted.
const MAX_TABLE_BYTES: usize = 4 * 1024 * 1024;

/// Serves the admin API until shutdown.
pub(crate) async fn serve(shared: Arc<Shared>, bound: Bound, mut shutdown: watch::Receiver<bool>) {
    loop {
        let accepted = tokio::select! {
            accepted = bound.listener.accept() => accepted,
            _ = shutdown.changed() => return,
        };
        let Ok((stream, _)) = accepted else { continue };
        let shared = shared.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| handle(shared.clone(), req));
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

fn json(status: StatusCode, value: &impl Serialize) -> Response<ProxyBody> {
    let body = serde_json::to_vec_pretty(value).unwrap_or_default();
    let mut response = Response::new(full(body));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    response
}

fn error(status: StatusCode, message: &str) -> Response<ProxyBody> {
    json(status, &serde_json::json!({ "error": message }))
}

/// Compares two byte strings in time that depends only on their lengths.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// `None` if the request carries the admin token, else the response refusing it.
fn refusal(shared: &Shared, req: &Request<Incoming>) -> Option<Response<ProxyBody>> {
    let Some(token) = &shared.token else {
        return Some(error(
            StatusCode::FORBIDDEN,
            "writes are disabled: no admin token file is configured (admin.tokenFile)",
        ));
    };
    let presented = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    if constant_time_eq(presented.trim().as_bytes(), token.as_bytes()) {
        None
    } else {
        Some(error(
            StatusCode::UNAUTHORIZED,
            "missing or wrong bearer token",
        ))
    }
}

fn query<'q>(req: &'q Request<Incoming>, name: &str) -> Option<&'q str> {
    req.uri()
        .query()?
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
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
        (&Method::GET, "/windows") => {
            let (Some(release), Some(version)) = (query(&req, "release"), query(&req, "version"))
            else {
                return Ok(error(
                    StatusCode::BAD_REQUEST,
                    "give ?release=NAME&version=NAME[&seconds=N]",
                ));
            };
            let seconds = query(&req, "seconds")
                .and_then(|s| s.parse().ok())
                .unwrap_or(60);
            match shared.registry.stats(release, version) {
                Some(stats) => json(StatusCode::OK, &stats.window(seconds, shared.second())),
                None => error(
                    StatusCode::NOT_FOUND,
                    "this release and version were never routed",
                ),
            }
        }
        (&Method::GET, "/evidence") => {
            let (Some(release), Some(version)) = (query(&req, "release"), query(&req, "version"))
            else {
                return Ok(error(
                    StatusCode::BAD_REQUEST,
                    "give ?release=NAME&version=NAME[&seconds=N]",
                ));
            };
            let seconds = query(&req, "seconds")
                .and_then(|s| s.parse().ok())
                .unwrap_or(60);
            match shared.registry.stats(release, version) {
                Some(stats) => json(
                    StatusCode::OK,
                    &stats.evidence_by_second(seconds, shared.second()),
                ),
                None => error(
                    StatusCode::NOT_FOUND,
                    "this release and version were never routed",
                ),
            }
        }
        (
            _,
            "/healthz" | "/readyz" | "/metrics" | "/routes" | "/events" | "/windows" | "/evidence",
        ) => error(StatusCode::METHOD_NOT_ALLOWED, "method not allowed here"),
        _ => error(StatusCode::NOT_FOUND, "no such admin endpoint"),
    };
    Ok(response)
}

async fn put_routes(shared: &Shared, req: Request<Incoming>) -> Response<ProxyBody> {
    let body: Bytes = match Limited::new(req.into_body(), MAX_TABLE_BYTES)
        .collect()
        .await
    {
        Ok(collected) => collected.to_bytes(),
        Err(_) => {
            return error(
                StatusCode::PAYLOAD_TOO_LARGE,
                "the route table is larger than 4 MiB",
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

#[cfg(test)]
mod tests {
    use super::constant_time_eq;

    #[test]
    fn token_comparison() {
        assert!(constant_time_eq(b"secret", b"secret"));
        assert!(!constant_time_eq(b"secret", b"secreT"));
        assert!(!constant_time_eq(b"secret", b"secret2"));
    }
}
