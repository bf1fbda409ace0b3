//! The controller's HTTP API: JSON for everything the CLI does, a bearer token on every
//! write, server-sent events for a rollout's progress. Reference: `docs/http-api.md`.
//!
//! | method and path                         | what                                   |
//! |-----------------------------------------|----------------------------------------|
//! | `GET /healthz`                          | 200 while the controller runs          |
//! | `GET /metrics`                          | the controller's Prometheus metrics    |
//! | `GET /v1/releases`                      | every release's status                 |
//! | `POST /v1/releases`                     | start a rollout (body: the release)    |
//! | `GET /v1/releases/{name}`               | one release's status                   |
//! | `GET /v1/releases/{name}/history`       | its events and earlier rollouts        |
//! | `GET /v1/releases/{name}/events`        | its status as server-sent events       |
//! | `POST /v1/releases/{name}/{verb}`       | `promote[?full=true]`, `abort`, `pause`, `resume`, `retry` |
//! | `POST /v1/releases/{name}/guardrail`    | a pulling proxy reports that a guardrail tripped |
//! | `GET /v1/routes[?after=VERSION]`        | the route table, for proxies that pull; with `after`, a long poll |

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use cutover_core::rollout::Command;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Body, Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde::Serialize;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};

use crate::{Controller, ControllerError};

/// The largest release file accepted.
const MAX_RELEASE_BYTES: usize = 1024 * 1024;

/// How often an idle event stream sends a comment, so proxies and clients keep it open.
const KEEPALIVE: Duration = Duration::from_secs(15);

/// A response body: a whole buffer, or an event stream.
pub enum ApiBody {
    /// A complete body.
    Full(Full<Bytes>),
    /// Server-sent events, written as they come.
    Events(mpsc::Receiver<Bytes>),
}

impl Body for ApiBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        match self.get_mut() {
            ApiBody::Full(full) => Pin::new(full).poll_frame(cx),
            ApiBody::Events(events) => events
                .poll_recv(cx)
                .map(|chunk| chunk.map(|c| Ok(Frame::data(c)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ApiBody::Full(full) => full.is_end_stream(),
            ApiBody::Events(_) => false,
        }
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        match self {
            ApiBody::Full(full) => full.size_hint(),
            ApiBody::Events(_) => hyper::body::SizeHint::default(),
        }
    }
}

/// Where the API listens and the token writes need.
pub struct ApiOptions {
    /// The address (127.0.0.1:9900 by default).
    pub address: SocketAddr,
    /// The bearer token every write must carry.
    pub token: String,
}

/// The API, bound and serving.
pub struct Api {
    address: SocketAddr,
    shutdown: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Api {
    /// Binds and starts serving.
    pub async fn start(controller: Controller, options: ApiOptions) -> std::io::Result<Api> {
        let listener = TcpListener::bind(options.address).await?;
        let address = listener.local_addr()?;
        let (shutdown, stopped) = watch::channel(false);
        let token: Arc<str> = options.token.into();
        let task = tokio::spawn(serve(listener, controller, token, stopped));
        Ok(Api {
            address,
            shutdown,
            task,
        })
    }

    /// The bound address.
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// Stops accepting connections.
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        let _ = self.task.await;
    }
}

async fn serve(
    listener: TcpListener,
    controller: Controller,
    token: Arc<str>,
    mut stopped: watch::Receiver<bool>,
) {
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = stopped.changed() => return,
        };
        let Ok((stream, _)) = accepted else {
            continue;
        };
        let controller = controller.clone();
        let token = token.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| {
                let controller = controller.clone();
                let token = token.clone();
                async move { Ok::<_, Infallible>(handle(controller, &token, req).await) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

fn full(status: StatusCode, content_type: &'static str, body: Vec<u8>) -> Response<ApiBody> {
    let mut response = Response::new(ApiBody::Full(Full::new(Bytes::from(body))));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(content_type),
    );
    response
}

fn json(status: StatusCode, value: &impl Serialize) -> Response<ApiBody> {
    let mut body = serde_json::to_vec_pretty(value).unwrap_or_default();
    body.push(b'\n');
    full(status, "application/json", body)
}

/// The error document: `{"error": {"kind", "message", "diagnostics"?}}`.
#[derive(Serialize)]
struct ErrorBody<'a> {
    error: ErrorDetail<'a>,
}

#[derive(Serialize)]
struct ErrorDetail<'a> {
    kind: &'a str,
    message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    diagnostics: Option<&'a [cutover_core::Diagnostic]>,
}

fn error(status: StatusCode, kind: &str, message: impl Into<String>) -> Response<ApiBody> {
    json(
        status,
        &ErrorBody {
            error: ErrorDetail {
                kind,
                message: message.into(),
                diagnostics: None,
            },
        },
    )
}

fn controller_error(e: &ControllerError) -> Response<ApiBody> {
    let (status, kind) = match e {
        ControllerError::NotFound(_) => (StatusCode::NOT_FOUND, "notFound"),
        ControllerError::Invalid(_) => (StatusCode::BAD_REQUEST, "invalid"),
        ControllerError::Conflict(_) => (StatusCode::CONFLICT, "conflict"),
        ControllerError::Rejected(_) => (StatusCode::CONFLICT, "rejected"),
        ControllerError::Backend { .. } => (StatusCode::BAD_GATEWAY, "backend"),
    };
    let message = match e {
        ControllerError::Backend { source, .. } => format!("{e}: {source}"),
        _ => e.to_string(),
    };
    json(
        status,
        &ErrorBody {
            error: ErrorDetail {
                kind,
                message,
                diagnostics: match e {
                    ControllerError::Invalid(d) => Some(d),
                    _ => None,
                },
            },
        },
    )
}

/// Compares two byte strings in time that depends only on their lengths.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn authorized(req: &Request<Incoming>, token: &str) -> bool {
    let presented = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    !token.is_empty() && constant_time_eq(presented.trim().as_bytes(), token.as_bytes())
}

/// How long `GET /v1/routes?after=V` waits for a table newer than `V`.
const ROUTES_LONG_POLL: Duration = Duration::from_secs(25);

fn query_value<'a>(req: &'a Request<Incoming>, name: &str) -> Option<&'a str> {
    req.uri()
        .query()?
        .split('&')
        .find_map(|pair| pair.strip_prefix(name)?.strip_prefix('='))
}

fn query_flag(req: &Request<Incoming>, name: &str) -> bool {
    req.uri().query().is_some_and(|q| {
        q.split('&').any(|pair| {
            pair == name || pair == format!("{name}=true") || pair == format!("{name}=1")
        })
    })
}

async fn handle(controller: Controller, token: &str, req: Request<Incoming>) -> Response<ApiBody> {
    let path = req.uri().path().to_string();
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    let method = req.method().clone();
    if method == Method::POST && !authorized(&req, token) {
        return error(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "missing or wrong bearer token: pass the controller's token (--token-file, CUTOVER_TOKEN)",
        );
    }
    match (&method, segments.as_slice()) {
        (&Method::GET, ["healthz"]) => full(StatusCode::OK, "text/plain", b"ok\n".to_vec()),
        (&Method::GET, ["metrics"]) => full(
            StatusCode::OK,
            "text/plain; version=0.0.4",
            controller.metrics().into_bytes(),
        ),
        (&Method::GET, ["v1", "routes"]) => {
            match match query_value(&req, "after").and_then(|v| v.parse::<u64>().ok()) {
                Some(after) => controller.routes_after(after, ROUTES_LONG_POLL).await,
                None => controller.routes(),
            } {
                Some(table) => json(StatusCode::OK, &table),
                None => error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "notReady",
                    "the controller has not published its first route table yet; ask again",
                ),
            }
        }
        (&Method::GET, ["v1", "releases"]) => json(
            StatusCode::OK,
            &serde_json::json!({ "releases": controller.list().iter().map(|s| &**s).collect::<Vec<_>>() }),
        ),
        (&Method::POST, ["v1", "releases"]) => submit(controller, req).await,
        (&Method::GET, ["v1", "releases", name]) => match controller.status(name) {
            Ok(status) => json(StatusCode::OK, &*status),
            Err(e) => controller_error(&e),
        },
        (&Method::GET, ["v1", "releases", name, "history"]) => {
            match controller.history(name).await {
                Ok(history) => json(StatusCode::OK, &history),
                Err(e) => controller_error(&e),
            }
        }
        (&Method::GET, ["v1", "releases", name, "events"]) => events(&controller, name),
        (&Method::POST, ["v1", "releases", name, "guardrail"]) => {
            guardrail(&controller, name, req).await
        }
        (&Method::POST, ["v1", "releases", name, verb]) => {
            let command = match *verb {
                "promote" if query_flag(&req, "full") => Command::PromoteFull,
                "promote" => Command::Promote,
                "abort" => Command::Abort,
                "pause" => Command::Pause,
                "resume" => Command::Resume,
                "retry" => Command::Retry,
                other => {
                    return error(
                        StatusCode::NOT_FOUND,
                        "notFound",
                        format!("no command '{other}': use promote, abort, pause, resume or retry"),
                    );
                }
            };
            match controller.command(name, command).await {
                Ok(status) => json(StatusCode::OK, &*status),
                Err(e) => controller_error(&e),
            }
        }
        (_, ["healthz" | "metrics"] | ["v1", ..]) => error(
            StatusCode::METHOD_NOT_ALLOWED,
            "methodNotAllowed",
            format!("{method} is not allowed on {path}"),
        ),
        _ => error(
            StatusCode::NOT_FOUND,
            "notFound",
            format!("no such path: {path} (see docs/http-api.md)"),
        ),
    }
}

/// A request's body, at most `limit` bytes; else the error answer, naming `what`.
async fn read_body(
    req: Request<Incoming>,
    limit: usize,
    what: &str,
) -> Result<Bytes, Response<ApiBody>> {
    match Limited::new(req.into_body(), limit).collect().await {
        Ok(body) => Ok(body.to_bytes()),
        Err(e) => Err(error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "badRequest",
            format!("cannot read {what} (at most {limit} bytes): {e}"),
        )),
    }
}

/// The largest guardrail report accepted.
const MAX_REPORT_BYTES: usize = 16 * 1024;

/// A guardrail trip reported by a proxy that pulls its routes.
#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct GuardrailReport {
    /// The candidate version cut off.
    version: String,
    /// The guardrail's name.
    guardrail: String,
    /// What was measured, for the history.
    #[serde(default)]
    detail: String,
}

async fn guardrail(
    controller: &Controller,
    name: &str,
    req: Request<Incoming>,
) -> Response<ApiBody> {
    let body = match read_body(req, MAX_REPORT_BYTES, "the report").await {
        Ok(body) => body,
        Err(response) => return response,
    };
    let report: GuardrailReport = match serde_json::from_slice(&body) {
        Ok(report) => report,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                "badRequest",
                format!("the report is not {{\"version\", \"guardrail\", \"detail\"}}: {e}"),
            );
        }
    };
    match controller.report_guardrail_trip(name, &report.version, report.guardrail, report.detail) {
        Ok(()) => json(
            StatusCode::ACCEPTED,
            &serde_json::json!({ "accepted": true }),
        ),
        Err(e) => controller_error(&e),
    }
}

async fn submit(controller: Controller, req: Request<Incoming>) -> Response<ApiBody> {
    let name = req
        .headers()
        .get("x-cutover-filename")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("release.yaml")
        .to_string();
    let body = match read_body(req, MAX_RELEASE_BYTES, "the release").await {
        Ok(body) => body,
        Err(response) => return response,
    };
    let Ok(text) = std::str::from_utf8(&body) else {
        return error(
            StatusCode::BAD_REQUEST,
            "badRequest",
            "the release is not UTF-8 text",
        );
    };
    let release = match Controller::parse(&name, text) {
        Ok(release) => release,
        Err(e) => return controller_error(&e),
    };
    // Runs to the end even if the client goes away (a CI job cancelled mid-request):
    // a submission dropped half-way would leave the release's driver held still.
    let submitted = tokio::spawn(async move { controller.submit(release).await }).await;
    match submitted {
        Ok(Ok(status)) => json(StatusCode::CREATED, &*status),
        Ok(Err(e)) => controller_error(&e),
        Err(e) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            format!("the submission failed: {e}"),
        ),
    }
}

/// `event: status` with the status JSON on every change; the stream ends after the
/// status of a finished rollout.
fn events(controller: &Controller, name: &str) -> Response<ApiBody> {
    let mut watch = match controller.watch(name) {
        Ok(watch) => watch,
        Err(e) => return controller_error(&e),
    };
    let (sender, receiver) = mpsc::channel::<Bytes>(16);
    tokio::spawn(async move {
        loop {
            let status = watch.borrow_and_update().clone();
            let data = serde_json::to_string(&*status).unwrap_or_default();
            if sender
                .send(Bytes::from(format!("event: status\ndata: {data}\n\n")))
                .await
                .is_err()
            {
                return;
            }
            if status.done {
                return;
            }
            loop {
                tokio::select! {
                    changed = watch.changed() => {
                        if changed.is_err() {
                            return;
                        }
                        break;
                    }
                    _ = tokio::time::sleep(KEEPALIVE) => {
                        if sender.send(Bytes::from_static(b": keep-alive\n\n")).await.is_err() {
                            return;
                        }
                    }
                }
            }
        }
    });
    let mut response = Response::new(ApiBody::Events(receiver));
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/event-stream"),
    );
    headers.insert(
        header::CACHE_CONTROL,
        header::HeaderValue::from_static("no-cache"),
    );
    response
}
