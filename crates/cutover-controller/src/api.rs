//! The controller's HTTP API: JSON for everything the CLI does, a bearer token on every
//! write, server-sent events for a rollout's progress. Reference: `docs/http-api.md`.
//!
//! Two tokens, two scopes ([`Scope`]): the write token allows every `POST`; the edge
//! token, for proxies that pull their routes, allows only `POST .../guardrail` (reads
//! need no token). The listener is hostile by default ([`ApiLimits`]): a cap on
//! connections, a deadline for each request's head (which also ends idle keep-alive
//! connections), for the TLS handshake and for a request's body, a size cap on heads and
//! bodies, and a back-off when accepting fails.
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
//! | `POST /v1/releases/{name}/abort?wait=S` | abort, and answer once rolled back (at most S seconds) |
//! | `POST /v1/releases/{name}/undo[?full=true]` | roll back to the version before the last promotion |
//! | `POST /v1/releases/{name}/delete[?force=true]` | stop its instances and forget it |
//! | `GET /v1/releases/{name}/logs`          | its instances' output (local backend; token needed) |
//! | `POST /v1/releases/{name}/guardrail`    | a pulling proxy reports that a guardrail tripped |
//! | `GET /v1/routes[?after=VERSION]`        | the route table, for proxies that pull; with `after`, a long poll |
//! | `GET /v1/releases/{name}/traffic`       | what each version got from the embedded proxy, second by second |
//! | `GET {base}/`, `GET {base}/assets/..`   | the web dashboard ([`crate::dashboard`]); the API also answers under `{base}` |

use cutover_core::Backoff;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use cutover_core::rollout::Command;
use cutover_proxy::http_api::{self, Bearer, BodyError, FromBytes, authorize, json, respond};
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::{Body, Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use serde::Serialize;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, mpsc, watch};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::ServerConfig;

use crate::dashboard::{self, DashboardOptions};
use crate::traffic::DEFAULT_TRAFFIC_SECONDS;
use crate::{Controller, ControllerError};

mod writes;
use writes::{command, detached, guardrail, submit};

/// The largest release file accepted.
const MAX_RELEASE_BYTES: usize = 1024 * 1024;

/// How often an idle event stream sends a comment, so proxies and clients keep it open.
const KEEPALIVE: Duration = Duration::from_secs(15);

/// A response body: a whole buffer, or an event stream.
pub enum ApiBody {
    /// A complete body.
    Full(Full<Bytes>),
    /// Server-sent events (or a followed log), written as they come.
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

/// Where the API listens, the tokens it takes and its limits.
pub struct ApiOptions {
    /// The address (127.0.0.1:9900 by default).
    pub address: SocketAddr,
    /// The bearer token every write must carry (scope [`Scope::Write`]).
    pub token: String,
    /// The bearer token of edge proxies (scope [`Scope::Edge`]): it reports guardrail
    /// trips and nothing else. `None`: only the write token does.
    pub edge_token: Option<String>,
    /// Serve HTTPS with this configuration instead of plain HTTP.
    pub tls: Option<Arc<ServerConfig>>,
    /// Timeouts and caps.
    pub limits: ApiLimits,
    /// The bearer token reads of releases need (scope [`Scope::Read`]; the write token
    /// reads too). `None`: reads are open to anyone who can reach the API.
    pub read_token: Option<String>,
    /// The web dashboard, served on this listener; `None`: no dashboard.
    pub dashboard: Option<DashboardOptions>,
}

/// The API listener's limits. A client that breaks one is disconnected (or, for a body,
/// answered 408 or 413); none of them depends on what the client says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ApiLimits {
    /// Connections served at once; the next ones wait in the kernel's accept queue.
    pub max_connections: usize,
    /// How long a client has to send a request's head, from the moment the connection
    /// is ready for one: for the first request from the connection's start (or the end
    /// of the TLS handshake), for the next ones from the end of the previous answer, so
    /// it is also how long an idle keep-alive connection stays open.
    pub header_read_timeout: Duration,
    /// How long a client has to finish the TLS handshake.
    pub tls_handshake_timeout: Duration,
    /// How long a client has to send a request's body.
    pub body_read_timeout: Duration,
    /// The largest request head (request line and headers), in bytes.
    pub max_header_bytes: usize,
    /// Followed logs (`GET .../logs?follow`) open at once, in all: each holds a
    /// connection for up to an hour. Beyond it: 429.
    pub max_follows: usize,
    /// Followed logs open at once of one release. Beyond it: 429.
    pub max_follows_per_release: usize,
}

impl Default for ApiLimits {
    fn default() -> Self {
        ApiLimits {
            max_connections: 512,
            header_read_timeout: Duration::from_secs(10),
            tls_handshake_timeout: Duration::from_secs(10),
            body_read_timeout: Duration::from_secs(30),
            max_header_bytes: 64 * 1024,
            max_follows: 16,
            max_follows_per_release: 4,
        }
    }
}

/// What a bearer token allows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    /// Every write: submit, promote, abort, pause, resume, retry, and guardrail reports.
    Write,
    /// An edge proxy's: report guardrail trips (`POST /v1/releases/{name}/guardrail`).
    /// Reading routes needs no token.
    Edge,
    /// Reads of releases, when they need a token (`--read-token-file`): what a
    /// dashboard for watchers holds.
    Read,
}

/// The tokens the API compares requests with.
struct Tokens {
    write: String,
    edge: Option<String>,
    read: Option<String>,
}

impl Tokens {
    /// The scope of the request's bearer token; else whether it had none or a wrong one.
    /// Empty tokens never match.
    fn scope(&self, req: &Request<Incoming>) -> Result<Scope, Bearer> {
        let edge = self.edge.as_deref().unwrap_or("");
        let read = self.read.as_deref().unwrap_or("");
        match authorize(req.headers(), &[&self.write, edge, read]) {
            Bearer::Matches(0) => Ok(Scope::Write),
            Bearer::Matches(1) => Ok(Scope::Edge),
            Bearer::Matches(_) => Ok(Scope::Read),
            refused => Err(refused),
        }
    }
}

/// Why the API cannot start.
#[derive(Debug, thiserror::Error)]
pub enum ApiStartError {
    /// The write token is empty.
    #[error("the API token is empty; give `cutover serve` a token file with a token in it")]
    EmptyToken,
    /// The edge token is empty, or the same as the write token.
    #[error("the edge token must be non-empty and differ from the write token")]
    EdgeToken,
    /// The read token is empty, or the same as the write or the edge token.
    #[error("the read token must be non-empty and differ from the write and edge tokens")]
    ReadToken,
    /// The address cannot be bound.
    #[error("cannot listen on {address}")]
    Bind {
        /// The address.
        address: SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// The API, bound and serving.
pub struct Api {
    address: SocketAddr,
    shutdown: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Api {
    /// Binds and starts serving.
    pub async fn start(controller: Controller, options: ApiOptions) -> Result<Api, ApiStartError> {
        if options.token.trim().is_empty() {
            return Err(ApiStartError::EmptyToken);
        }
        if let Some(edge) = &options.edge_token
            && (edge.trim().is_empty() || edge.trim() == options.token.trim())
        {
            return Err(ApiStartError::EdgeToken);
        }
        if let Some(read) = &options.read_token
            && (read.trim().is_empty()
                || read.trim() == options.token.trim()
                || options
                    .edge_token
                    .as_deref()
                    .is_some_and(|edge| edge.trim() == read.trim()))
        {
            return Err(ApiStartError::ReadToken);
        }
        let bind = |source| ApiStartError::Bind {
            address: options.address,
            source,
        };
        let listener = TcpListener::bind(options.address).await.map_err(bind)?;
        let address = listener.local_addr().map_err(bind)?;
        let (shutdown, stopped) = watch::channel(false);
        let shared = Arc::new(Shared {
            controller,
            tokens: Tokens {
                write: options.token.trim().to_string(),
                edge: options.edge_token.map(|t| t.trim().to_string()),
                read: options.read_token.map(|t| t.trim().to_string()),
            },
            dashboard: options.dashboard,
            limits: options.limits,
            tls: options.tls.map(TlsAcceptor::from),
            follows: crate::logs::FollowLimits::new(&options.limits),
        });
        let task = tokio::spawn(serve(listener, shared, stopped));
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

/// What every connection of the API shares.
struct Shared {
    controller: Controller,
    tokens: Tokens,
    limits: ApiLimits,
    tls: Option<TlsAcceptor>,
    follows: crate::logs::FollowLimits,
    dashboard: Option<DashboardOptions>,
}

/// The pause after failed `accept`s in a row (out of file descriptors, say): 5 ms, doubling
/// to at most 1 s, so a failing accept does not spin.
const ACCEPT_BACKOFF: Backoff = Backoff::new(
    cutover_core::Duration::from_millis(5),
    cutover_core::Duration::from_secs(1),
);

async fn serve(listener: TcpListener, shared: Arc<Shared>, mut stopped: watch::Receiver<bool>) {
    let permits = Arc::new(Semaphore::new(shared.limits.max_connections.max(1)));
    let mut backoff = ACCEPT_BACKOFF;
    loop {
        // At the cap, stop accepting: new clients wait in the kernel's queue.
        let permit = tokio::select! {
            permit = permits.clone().acquire_owned() => permit,
            _ = stopped.changed() => return,
        };
        let Ok(permit) = permit else { return };
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = stopped.changed() => return,
        };
        let stream = match accepted {
            Ok((stream, _)) => {
                backoff.reset();
                stream
            }
            Err(e) => {
                let pause = Duration::from(backoff.next_delay());
                tracing::warn!(error = %e, ?pause, "the API cannot accept a connection; pausing");
                drop(permit);
                tokio::select! {
                    () = tokio::time::sleep(pause) => {}
                    _ = stopped.changed() => return,
                }
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let shared = shared.clone();
        tokio::spawn(async move {
            let _permit = permit;
            match &shared.tls {
                None => serve_connection(shared.clone(), stream).await,
                Some(acceptor) => {
                    let handshake = tokio::time::timeout(
                        shared.limits.tls_handshake_timeout,
                        acceptor.accept(stream),
                    )
                    .await;
                    match handshake {
                        Ok(Ok(stream)) => serve_connection(shared.clone(), stream).await,
                        Ok(Err(e)) => tracing::debug!(error = %e, "API TLS handshake failed"),
                        Err(_) => tracing::debug!("API TLS handshake timed out"),
                    }
                }
            }
        });
    }
}

/// Serves HTTP/1.1 on one connection, plain or TLS, until the client or a limit ends it.
async fn serve_connection<S>(shared: Arc<Shared>, stream: S)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let limits = shared.limits;
    let service = service_fn(move |req| {
        let shared = shared.clone();
        async move { Ok::<_, Infallible>(handle(&shared, req).await) }
    });
    let _ = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_header_size(limits.max_header_bytes)
        .max_buf_size(limits.max_header_bytes.max(8192))
        .serve_connection(TokioIo::new(stream), service)
        .await;
}

impl FromBytes for ApiBody {
    fn from_bytes(bytes: Bytes) -> ApiBody {
        ApiBody::Full(Full::new(bytes))
    }
}

pub(crate) fn full(
    status: StatusCode,
    content_type: &'static str,
    body: Vec<u8>,
) -> Response<ApiBody> {
    respond(status, content_type, body)
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

pub(crate) fn error(
    status: StatusCode,
    kind: &str,
    message: impl Into<String>,
) -> Response<ApiBody> {
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

pub(crate) fn controller_error(e: &ControllerError) -> Response<ApiBody> {
    let (status, kind) = match e {
        ControllerError::NotFound(_) => (StatusCode::NOT_FOUND, "notFound"),
        ControllerError::Invalid(_) => (StatusCode::BAD_REQUEST, "invalid"),
        ControllerError::Conflict(_) => (StatusCode::CONFLICT, "conflict"),
        ControllerError::Rejected(_) => (StatusCode::CONFLICT, "rejected"),
        ControllerError::Quarantined { .. } => (StatusCode::CONFLICT, "quarantined"),
        ControllerError::Unsupported(_) => (StatusCode::CONFLICT, "unsupported"),
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

/// The longest `?wait=` an abort may ask for: under the CLI's request timeout.
const MAX_COMMAND_WAIT_SECONDS: u64 = 60;

/// How long `GET /v1/routes?after=V` waits for a table newer than `V`.
const ROUTES_LONG_POLL: Duration = Duration::from_secs(25);

/// The value of `name` in the request's query.
pub(crate) fn query_value<'a>(req: &'a Request<Incoming>, name: &str) -> Option<&'a str> {
    http_api::query_value(req.uri(), name)
}

/// Whether the request's query sets the flag `name` (`name`, `name=true`, `name=1`).
pub(crate) fn query_flag(req: &Request<Incoming>, name: &str) -> bool {
    http_api::query_flag(req.uri(), name)
}

/// Whether a request may go on: every `POST` needs a token, and only the write token
/// writes; the edge token reports guardrail trips only. `Some` is the refusal.
fn refusal(
    tokens: &Tokens,
    method: &Method,
    segments: &[&str],
    req: &Request<Incoming>,
) -> Option<Response<ApiBody>> {
    // Instance output may hold what an instance was given: read only with the write
    // token, as the log files are the state directory owner's alone.
    let logs = method == Method::GET && matches!(segments, ["v1", "releases", _, "logs"]);
    // With a read token, reads of releases need it (or the write token). The route
    // table stays open to pulling proxies, and /metrics to Prometheus.
    let guarded_read = tokens.read.is_some()
        && method == Method::GET
        && matches!(segments, ["v1", "releases", ..]);
    if method != Method::POST && !logs && !guarded_read {
        return None;
    }
    match tokens.scope(req) {
        Ok(Scope::Write) => None,
        Ok(Scope::Read) if guarded_read && !logs => None,
        Ok(Scope::Read) => Some(error(
            StatusCode::FORBIDDEN,
            "forbidden",
            "the read token only reads releases; this needs the write token (--token-file, CUTOVER_TOKEN)",
        )),
        Ok(Scope::Edge) if matches!(segments, ["v1", "releases", _, "guardrail"]) => None,
        Ok(Scope::Edge) if guarded_read => Some(error(
            StatusCode::FORBIDDEN,
            "forbidden",
            "the edge token only reports guardrail trips; reading releases needs the read token (--read-token-file) or the write token",
        )),
        Ok(Scope::Edge) => Some(error(
            StatusCode::FORBIDDEN,
            "forbidden",
            "the edge token only reports guardrail trips; this needs the write token (--token-file, CUTOVER_TOKEN)",
        )),
        Err(Bearer::Missing) if guarded_read => Some(error(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "no bearer token: reads of releases need this controller's read token (--read-token-file) or its write token",
        )),
        Err(Bearer::Wrong) => Some(error(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "wrong bearer token: it is not this controller's; use the one in its state directory's `token` file (`<state-dir>/token`, default .cutover/token) with --token-file, CUTOVER_TOKEN_FILE or CUTOVER_TOKEN",
        )),
        Err(_) => Some(error(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "no bearer token: writes need this controller's token, in its state directory's `token` file (`<state-dir>/token`, default .cutover/token); pass it with --token-file, CUTOVER_TOKEN_FILE or CUTOVER_TOKEN",
        )),
    }
}

async fn handle(shared: &Shared, req: Request<Incoming>) -> Response<ApiBody> {
    let controller = shared.controller.clone();
    let body_timeout = shared.limits.body_read_timeout;
    let full_path = req.uri().path().to_string();
    let method = req.method().clone();
    // Under a base path, the dashboard and the API answer within it; the API still
    // answers at `/` too, where the CLI and proxies ask.
    let path = match &shared.dashboard {
        Some(options) => match options.strip(&full_path) {
            Some("/") if !options.base_path.is_empty() && full_path == options.base_path => {
                return dashboard::redirect_to_slash(options);
            }
            Some(within) => {
                if method == Method::GET
                    && let Some(page) = dashboard::serve(options, within)
                {
                    return page;
                }
                within.to_string()
            }
            None => full_path.clone(),
        },
        None => full_path.clone(),
    };
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    if let Some(refused) = refusal(&shared.tokens, &method, &segments, &req) {
        return refused;
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
            &serde_json::json!({
                "releases": controller.list().iter().map(|s| &**s).collect::<Vec<_>>(),
                "quarantined": controller.quarantined(),
            }),
        ),
        (&Method::POST, ["v1", "releases"]) => submit(controller, req, body_timeout).await,
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
        (&Method::GET, ["v1", "releases", name, "traffic"]) => {
            let seconds = query_value(&req, "seconds")
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(DEFAULT_TRAFFIC_SECONDS);
            match controller.traffic(name, seconds).await {
                Ok(traffic) => json(StatusCode::OK, &traffic),
                Err(e) => controller_error(&e),
            }
        }
        (&Method::POST, ["v1", "releases", name, "guardrail"]) => {
            guardrail(&controller, name, req, body_timeout).await
        }
        (&Method::GET, ["v1", "releases", name, "logs"]) => {
            crate::logs::serve(&controller, &shared.follows, name, &req).await
        }
        (&Method::POST, ["v1", "releases", name, "undo"]) => {
            let full = query_flag(&req, "full");
            let name = name.to_string();
            // Runs to the end even if the client goes away, as a submission does.
            detached(
                "undo",
                async move { controller.undo(&name, full).await },
                |status| json(StatusCode::CREATED, &*status),
            )
            .await
        }
        (&Method::POST, ["v1", "releases", name, "delete"]) => {
            let force = query_flag(&req, "force");
            let name = name.to_string();
            // Runs to the end even if the client goes away: a delete half done would
            // leave a release frozen.
            detached(
                "delete",
                async move { controller.delete(&name, force).await },
                |()| json(StatusCode::OK, &serde_json::json!({ "deleted": true })),
            )
            .await
        }
        (&Method::POST, ["v1", "releases", name, verb]) => {
            command(&controller, name, verb, &req).await
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
    streamed(receiver, "text/event-stream")
}

/// A 200 whose body is what `receiver` gets, as it comes, never cached: an event stream
/// or a followed log.
pub(crate) fn streamed(
    receiver: mpsc::Receiver<Bytes>,
    content_type: &'static str,
) -> Response<ApiBody> {
    let mut response = Response::new(ApiBody::Events(receiver));
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(content_type),
    );
    headers.insert(
        header::CACHE_CONTROL,
        header::HeaderValue::from_static("no-cache"),
    );
    response
}
