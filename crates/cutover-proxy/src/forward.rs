//! The request path: route, choose a version and an endpoint, forward, stream back.
//!
//! Upstream failures map to 502 (refused, reset) or 504 (timed out), never to 4xx.
//! Requests without a body and with an idempotent method are retried once on another
//! endpoint when the connection could not be made. Hop-by-hop headers are stripped both
//! ways (RFC 9110 §7.6.1) and `X-Forwarded-*` and `Forwarded` are set (replaced unless
//! the peer is a trusted proxy); the client's `Host` is kept.
//!
//! Only the upstream's own failures count against a version. A request that fails by the
//! client's fault (a malformed chunked body, a body that stalls or trickles past the
//! request timeout, a client gone mid-request) is answered 400 or 408 (or not at all),
//! leaves the endpoint's health alone, and is counted in `cutover_client_errors_total`
//! instead of the version's requests, so it never feeds the error rate or a guardrail.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::time::Instant;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode, Uri, Version};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::{Body as _, Incoming};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};

use crate::Shared;
use crate::config::Timeouts;
use crate::listen::ConnInfo;
use crate::metrics::{UpstreamError, VersionStats};
use crate::table::{CompiledRoute, Endpoint, Pick};

/// Errors inside bodies, boxed.
pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Every body the proxy sends, either way.
pub(crate) type ProxyBody = BoxBody<Bytes, BoxError>;

/// The pooled upstream client.
pub(crate) type UpstreamClient = Client<HttpConnector, ProxyBody>;

/// Builds the upstream client: keep-alive pool with idle reaping (which needs the pool
/// timer), connect timeout, `TCP_NODELAY`.
pub(crate) fn upstream_client(timeouts: &Timeouts) -> UpstreamClient {
    let mut connector = HttpConnector::new();
    connector.set_connect_timeout(Some(timeouts.connect.into()));
    connector.set_nodelay(true);
    connector.enforce_http(true);
    Client::builder(TokioExecutor::new())
        .pool_idle_timeout(std::time::Duration::from(timeouts.upstream_idle))
        .pool_timer(TokioTimer::new())
        .pool_max_idle_per_host(1024)
        .build(connector)
}

/// A small body for the proxy's own answers.
pub(crate) fn text(status: StatusCode, message: &str) -> Response<ProxyBody> {
    let mut response = Response::new(full(format!("{message}\n")));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

/// `response` with `Connection: close`: the client connection ends after it.
fn closing(mut response: Response<ProxyBody>) -> Response<ProxyBody> {
    response
        .headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    response
}

pub(crate) fn full(body: impl Into<Bytes>) -> ProxyBody {
    Full::new(body.into())
        .map_err(|never| match never {})
        .boxed()
}

fn empty() -> ProxyBody {
    Empty::new().map_err(|never| match never {}).boxed()
}

/// Hop-by-hop headers, as Go's `httputil.ReverseProxy` and RFC 9110 §7.6.1 list them.
const HOP_BY_HOP: [HeaderName; 9] = [
    header::CONNECTION,
    HeaderName::from_static("proxy-connection"),
    HeaderName::from_static("keep-alive"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

/// Removes hop-by-hop headers, including those the `Connection` header names.
pub(crate) fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in named.iter().chain(HOP_BY_HOP.iter()) {
        headers.remove(name);
    }
}

/// The `Upgrade` value if this is an HTTP/1.1 upgrade request (WebSocket and others).
fn upgrade_of(req: &Request<Incoming>) -> Option<HeaderValue> {
    let connection_upgrade = req
        .headers()
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case("upgrade"));
    (req.version() == Version::HTTP_11 && connection_upgrade)
        .then(|| req.headers().get(header::UPGRADE).cloned())
        .flatten()
}

/// Request shapes used to smuggle a second request past a proxy: a `Transfer-Encoding`
/// other than plain `chunked` (a coding the proxy would silently drop, or one the upstream
/// may read differently), or conflicting lengths. (Both `Content-Length` and
/// `Transfer-Encoding` never get here over HTTP/1: the parser drops the length and closes
/// the connection after the answer, as RFC 9112 §6.3 requires of an intermediary. The
/// check stays for requests that arrive another way.)
pub(crate) fn smuggling(headers: &HeaderMap) -> Option<&'static str> {
    let te: Vec<&HeaderValue> = headers.get_all(header::TRANSFER_ENCODING).iter().collect();
    let cl: Vec<&HeaderValue> = headers.get_all(header::CONTENT_LENGTH).iter().collect();
    if !te.is_empty() && !cl.is_empty() {
        return Some("both Content-Length and Transfer-Encoding");
    }
    let codings: Vec<&str> = te
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .collect();
    let plain_chunked =
        matches!(codings.as_slice(), [only] if only.eq_ignore_ascii_case("chunked"));
    if !te.is_empty() && !plain_chunked {
        return Some("a Transfer-Encoding other than chunked");
    }
    if cl.len() > 1 && cl.windows(2).any(|w| w[0] != w[1]) {
        return Some("conflicting Content-Length values");
    }
    None
}

/// The request's host without port: the URI's authority (HTTP/2) or the `Host` header.
fn host_of(req: &Request<Incoming>) -> Option<String> {
    if let Some(host) = req.uri().host() {
        return Some(
            host.trim_start_matches('[')
                .trim_end_matches(']')
                .to_ascii_lowercase(),
        );
    }
    let value = req.headers().get(header::HOST)?.to_str().ok()?;
    let host = if let Some(rest) = value.strip_prefix('[') {
        rest.split(']').next().unwrap_or(rest)
    } else {
        value
            .rsplit_once(':')
            .filter(|(_, p)| p.bytes().all(|b| b.is_ascii_digit()))
            .map_or(value, |(h, _)| h)
    };
    Some(host.to_ascii_lowercase())
}

fn is_idempotent(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::PUT | Method::DELETE | Method::TRACE
    )
}

/// An address range of `limits.trustedProxies`: `10.0.0.0/8`, `::1/128`, or one address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Cidr {
    network: std::net::IpAddr,
    prefix: u8,
}

impl Cidr {
    /// Parses `ip` or `ip/prefix`; `None` if either part is malformed.
    pub(crate) fn parse(text: &str) -> Option<Cidr> {
        let (ip, prefix) = match text.trim().split_once('/') {
            Some((ip, prefix)) => (ip, Some(prefix.parse::<u8>().ok()?)),
            None => (text.trim(), None),
        };
        let network: std::net::IpAddr = ip.parse().ok()?;
        let bits = if network.is_ipv4() { 32 } else { 128 };
        let prefix = prefix.unwrap_or(bits);
        (prefix <= bits).then_some(Cidr { network, prefix })
    }

    /// Whether `ip` lies in the range (an IPv4-mapped IPv6 peer counts as IPv4).
    pub(crate) fn contains(&self, ip: std::net::IpAddr) -> bool {
        use std::net::IpAddr;
        let masked = |bits: u128, width: u32| {
            let shift = width - u32::from(self.prefix);
            if shift >= width { 0 } else { bits >> shift }
        };
        match (self.network, ip.to_canonical()) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                masked(u128::from(u32::from(net)), 32) == masked(u128::from(u32::from(ip)), 32)
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                masked(u128::from(net), 128) == masked(u128::from(ip), 128)
            }
            _ => false,
        }
    }
}

/// A `Forwarded` parameter value (RFC 7239 §4): bare if it is a token, else a quoted
/// string with `"` and `\` escaped. IPv6 nodes, `host:port` and anything with
/// separators need the quotes.
fn forwarded_value(value: &str) -> String {
    let tchar = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
    if !value.is_empty() && value.bytes().all(tchar) {
        return value.to_string();
    }
    let mut quoted = String::with_capacity(value.len() + 2);
    quoted.push('"');
    for c in value.chars() {
        if c == '"' || c == '\\' {
            quoted.push('\\');
        }
        quoted.push(c);
    }
    quoted.push('"');
    quoted
}

/// Sets `X-Forwarded-For/-Proto/-Host` and `Forwarded` for a request from `peer`. The
/// client's own `X-Forwarded-For` and `Forwarded` are kept (and appended to) only when
/// `trusted` (the peer is in `limits.trustedProxies`); from anyone else they are
/// replaced, so a client cannot choose the address the upstream believes.
fn add_forwarding(
    headers: &mut HeaderMap,
    peer: SocketAddr,
    host: Option<&HeaderValue>,
    tls: bool,
    trusted: bool,
) {
    let ip = peer.ip().to_canonical().to_string();
    let proto = if tls { "https" } else { "http" };
    let joined = |name: &HeaderName, headers: &HeaderMap| -> Option<String> {
        let values: Vec<&str> = headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect();
        (!values.is_empty()).then(|| values.join(", "))
    };
    let xff_name = HeaderName::from_static("x-forwarded-for");
    let xff = match trusted.then(|| joined(&xff_name, headers)).flatten() {
        Some(previous) => format!("{previous}, {ip}"),
        None => ip.clone(),
    };
    let previous_forwarded = trusted
        .then(|| joined(&header::FORWARDED, headers))
        .flatten();
    headers.remove(&xff_name);
    headers.remove(header::FORWARDED);
    if let Ok(v) = HeaderValue::from_str(&xff) {
        headers.insert(xff_name, v);
    }
    headers.insert("x-forwarded-proto", HeaderValue::from_static(proto));
    match host {
        Some(host) => {
            headers.insert("x-forwarded-host", host.clone());
        }
        None => {
            headers.remove("x-forwarded-host");
        }
    }
    let node = if peer.ip().to_canonical().is_ipv6() {
        format!("[{ip}]")
    } else {
        ip
    };
    let mut forwarded = format!("for={};proto={proto}", forwarded_value(&node));
    if let Some(host) = host.and_then(|h| h.to_str().ok()) {
        forwarded.push_str(";host=");
        forwarded.push_str(&forwarded_value(host));
    }
    let value = match previous_forwarded {
        Some(previous) => format!("{previous}, {forwarded}"),
        None => forwarded,
    };
    if let Ok(v) = HeaderValue::from_str(&value) {
        headers.insert(header::FORWARDED, v);
    }
}

/// A cheap per-request random number for power-of-two choices.
fn random() -> u64 {
    use std::cell::Cell;
    thread_local! {
        static STATE: Cell<u64> = Cell::new(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(0x2545_F491_4F6C_DD1D)
                | 1,
        );
    }
    STATE.with(|s| {
        let mut x = s.get();
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        s.set(x);
        x
    })
}

/// Why an upstream call gave no response.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Failed {
    /// The upstream failed: 502 or 504, and it counts against the endpoint's health.
    Upstream(UpstreamError),
    /// The client failed: answered 4xx, never charged to the upstream.
    Client(ClientFault),
}

/// How a client can make a request fail by itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ClientFault {
    /// The body was malformed (a bad chunk size) or ended early (the client went away):
    /// 400.
    BadBody,
    /// The body paused past `timeouts.clientBodyIdle`, or was still arriving when the
    /// request timeout ran out: 408.
    SlowBody,
    /// The body went past `maxBodyBytes`: 413.
    BodyTooLarge,
}

impl ClientFault {
    const NONE: u8 = 0;

    fn code(self) -> u8 {
        match self {
            ClientFault::BadBody => 1,
            ClientFault::SlowBody => 2,
            ClientFault::BodyTooLarge => 3,
        }
    }

    fn from_code(code: u8) -> Option<ClientFault> {
        match code {
            1 => Some(ClientFault::BadBody),
            2 => Some(ClientFault::SlowBody),
            3 => Some(ClientFault::BodyTooLarge),
            _ => None,
        }
    }

    /// The answer to the client. The connection closes after it: the rest of the body is
    /// not worth reading.
    fn response(self, max_body: Option<u64>) -> Response<ProxyBody> {
        let response = match self {
            ClientFault::BadBody => text(
                StatusCode::BAD_REQUEST,
                "malformed or incomplete request body",
            ),
            ClientFault::SlowBody => text(
                StatusCode::REQUEST_TIMEOUT,
                "the request body arrived too slowly",
            ),
            ClientFault::BodyTooLarge => text(
                StatusCode::PAYLOAD_TOO_LARGE,
                &format!(
                    "request body larger than {} bytes",
                    max_body.unwrap_or_default()
                ),
            ),
        };
        closing(response)
    }
}

/// What is known about a client's request body while it streams to the upstream: read by
/// [`send`] to tell a client's failure from the upstream's.
struct BodyWatch {
    /// A [`ClientFault`] code, or [`ClientFault::NONE`].
    fault: AtomicU8,
    /// The body reached its end.
    done: AtomicBool,
    /// The last read of the body found nothing yet: the proxy is waiting on the client.
    waiting: AtomicBool,
}

/// The watch of every request without a body: complete from the start, never at fault.
static NO_BODY: BodyWatch = BodyWatch::new(true);

impl BodyWatch {
    const fn new(done: bool) -> BodyWatch {
        BodyWatch {
            fault: AtomicU8::new(ClientFault::NONE),
            done: AtomicBool::new(done),
            waiting: AtomicBool::new(false),
        }
    }

    fn set(&self, fault: ClientFault) {
        let _ = self.fault.compare_exchange(
            ClientFault::NONE,
            fault.code(),
            Ordering::Relaxed,
            Ordering::Relaxed,
        );
    }

    /// The client's fault in a failed exchange, if it was the client's: a body error, or
    /// a timeout that struck while the proxy was still waiting for the client's body.
    fn fault(&self, outcome: Option<UpstreamError>) -> Option<ClientFault> {
        if let Some(fault) = ClientFault::from_code(self.fault.load(Ordering::Relaxed)) {
            return Some(fault);
        }
        let waiting_on_client =
            !self.done.load(Ordering::Relaxed) && self.waiting.load(Ordering::Relaxed);
        (outcome == Some(UpstreamError::Timeout) && waiting_on_client)
            .then_some(ClientFault::SlowBody)
    }
}

/// The client's request body on its way upstream: cut off past `maxBodyBytes`, failed
/// when it pauses longer than `timeouts.clientBodyIdle`, and watched ([`BodyWatch`]) so
/// that its failures are charged to the client.
struct ClientBody {
    inner: Incoming,
    remaining: Option<u64>,
    idle: std::time::Duration,
    /// Armed when a read finds nothing, from then on: fires when the client pauses too long.
    stall: Option<std::pin::Pin<Box<tokio::time::Sleep>>>,
    pending: bool,
    watch: Arc<BodyWatch>,
}

impl hyper::body::Body for ClientBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, BoxError>>> {
        use std::future::Future as _;
        use std::task::Poll;
        let this = &mut *self;
        match std::pin::Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Pending => {
                this.watch.waiting.store(true, Ordering::Relaxed);
                let deadline = tokio::time::Instant::now() + this.idle;
                let stall = this
                    .stall
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
                if !this.pending {
                    this.pending = true;
                    stall.as_mut().reset(deadline);
                }
                if stall.as_mut().poll(cx).is_ready() {
                    this.watch.set(ClientFault::SlowBody);
                    return Poll::Ready(Some(Err("the client's request body stalled".into())));
                }
                Poll::Pending
            }
            Poll::Ready(Some(Ok(frame))) => {
                this.pending = false;
                this.watch.waiting.store(false, Ordering::Relaxed);
                let len = frame.data_ref().map_or(0, |d| d.len() as u64);
                if let Some(remaining) = &mut this.remaining {
                    if len > *remaining {
                        this.watch.set(ClientFault::BodyTooLarge);
                        return Poll::Ready(Some(Err(
                            "request body larger than maxBodyBytes".into()
                        )));
                    }
                    *remaining -= len;
                }
                if this.inner.is_end_stream() {
                    this.watch.done.store(true, Ordering::Relaxed);
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => {
                this.watch.waiting.store(false, Ordering::Relaxed);
                this.watch.set(ClientFault::BadBody);
                Poll::Ready(Some(Err(BoxError::from(e))))
            }
            Poll::Ready(None) => {
                this.watch.waiting.store(false, Ordering::Relaxed);
                this.watch.done.store(true, Ordering::Relaxed);
                Poll::Ready(None)
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}

/// One request's entry in its version's counters. Dropped without [`Recording::finish`]
/// (the client went away and hyper dropped the request), it takes the request out of the
/// in-flight gauge as a client error, so the gauge stays true.
struct Recording {
    stats: Arc<VersionStats>,
    started: Instant,
    open: bool,
}

impl Recording {
    fn start(stats: Arc<VersionStats>) -> Recording {
        stats.start();
        Recording {
            stats,
            started: Instant::now(),
            open: true,
        }
    }

    fn finish(&mut self, status: Option<u16>, error: Option<UpstreamError>, second: u64) {
        if std::mem::replace(&mut self.open, false) {
            self.stats
                .finish(status, error, self.started.elapsed(), second);
        }
    }

    fn client_error(&mut self) {
        if std::mem::replace(&mut self.open, false) {
            self.stats.client_error();
        }
    }
}

impl Drop for Recording {
    fn drop(&mut self) {
        self.client_error();
    }
}

/// Methods whose copy to the candidate changes nothing: only these are mirrored.
fn is_safe(method: &Method) -> bool {
    matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

/// Serves one client request arriving on connection `conn`.
pub(crate) async fn handle(
    shared: Arc<Shared>,
    mut req: Request<Incoming>,
    conn: Arc<ConnInfo>,
) -> Result<Response<ProxyBody>, Infallible> {
    if let Some(shape) = smuggling(req.headers()) {
        // The body is left unread, and its framing is in doubt: close the connection
        // after the answer rather than read what follows as a request.
        return Ok(closing(text(
            StatusCode::BAD_REQUEST,
            &format!("rejected: {shape}"),
        )));
    }
    let max_body = shared.config.limits.max_body_bytes;
    if let Some(max) = max_body {
        let declared = req
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok());
        if declared.is_some_and(|n| n > max) {
            return Ok(closing(text(
                StatusCode::PAYLOAD_TOO_LARGE,
                &format!("request body larger than {max} bytes"),
            )));
        }
    }
    // Equal duplicates are allowed (RFC 9110 §8.6) but some upstreams refuse them: send one.
    if req
        .headers()
        .get_all(header::CONTENT_LENGTH)
        .iter()
        .nth(1)
        .is_some()
        && let Some(length) = req.headers().get(header::CONTENT_LENGTH).cloned()
    {
        req.headers_mut().insert(header::CONTENT_LENGTH, length);
    }
    let host = host_of(&req);
    // Only the route is kept, not the whole snapshot: a long request must not keep every
    // version of an old table known (see `Registry::forget_unrouted`).
    let found = shared
        .table
        .load()
        .find(host.as_deref(), req.uri().path())
        .cloned();
    let Some(route) = found else {
        return Ok(text(
            StatusCode::NOT_FOUND,
            "no route for this host and path",
        ));
    };
    let peer = conn.peer;
    let pick = route.choose(req.headers(), Some(peer.ip()));
    let now_ms = shared.now_ms();
    let random = random();
    let (version, endpoint) = match route.version(pick).pick(now_ms, random, None) {
        Some(endpoint) => (route.version(pick), endpoint.clone()),
        None => {
            if pick == Pick::Candidate
                && let Some(candidate) = &route.candidate
            {
                // Every candidate endpoint is ejected: stable serves the request, and the
                // candidate is charged an unavailable request, so its error rate (and its
                // guardrails) see it failing.
                candidate.stats.unavailable(shared.second());
            }
            match route
                .stable
                .pick(now_ms, random, None)
                .or_else(|| route.stable.endpoints.first())
            {
                Some(endpoint) => (&route.stable, endpoint.clone()),
                None => {
                    return Ok(text(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "the release has no endpoints",
                    ));
                }
            }
        }
    };

    let upgrade = upgrade_of(&req);
    let client_upgrade = upgrade.as_ref().map(|_| hyper::upgrade::on(&mut req));
    let original_host = req.headers().get(header::HOST).cloned().or_else(|| {
        req.uri()
            .authority()
            .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
    });
    let (mut parts, body) = req.into_parts();
    // Before the hop-by-hop headers go: HTTP/1 chunked bodies and HTTP/2 bodies without a
    // length both show here.
    let has_body = !body.is_end_stream();
    strip_hop_by_hop(&mut parts.headers);
    add_forwarding(
        &mut parts.headers,
        peer,
        original_host.as_ref(),
        conn.tls,
        conn.trusted,
    );
    if let Some(protocol) = &upgrade {
        parts
            .headers
            .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        parts.headers.insert(header::UPGRADE, protocol.clone());
    }
    if parts.headers.get(header::HOST).is_none()
        && let Some(host) = &original_host
    {
        parts.headers.insert(header::HOST, host.clone());
    }
    let replayable = is_idempotent(&parts.method) && !has_body && upgrade.is_none();
    // A request without a body needs no watching: its body cannot fail by the client.
    let watched = has_body.then(|| Arc::new(BodyWatch::new(false)));
    let body: ProxyBody = match &watched {
        Some(watch) => ClientBody {
            inner: body,
            remaining: max_body,
            idle: shared.config.timeouts.client_body_idle.into(),
            stall: None,
            pending: false,
            watch: watch.clone(),
        }
        .boxed(),
        None => body.map_err(BoxError::from).boxed(),
    };
    let watch: &BodyWatch = watched.as_deref().unwrap_or(&NO_BODY);
    let mirror = (pick == Pick::Stable
        && !has_body
        && is_safe(&parts.method)
        && upgrade.is_none()
        && route.mirror())
    .then(|| {
        (
            parts.method.clone(),
            parts.uri.clone(),
            parts.headers.clone(),
        )
    });

    let mut recording = Recording::start(version.stats.clone());
    // Boxed: hyper keeps room for this handler's future for as long as the client
    // connection lives, so the large upstream state is allocated per request instead of
    // sitting in every idle keep-alive connection.
    let mut result = Box::pin(send(
        &shared,
        &endpoint,
        &parts,
        body,
        upgrade.is_some(),
        watch,
    ))
    .await;
    if let Err(Failed::Upstream(UpstreamError::Connect)) = result
        && replayable
    {
        // Refused before anything was sent: safe to try once more, on another instance
        // of the same version, or on stable if the candidate has no other.
        let now_ms = shared.now_ms();
        let retry = version
            .pick(now_ms, random.rotate_left(17), Some(&endpoint))
            .map(|e| (version, e.clone()))
            .or_else(|| {
                (pick == Pick::Candidate)
                    .then(|| {
                        route
                            .stable
                            .pick(now_ms, random, None)
                            .map(|e| (&route.stable, e.clone()))
                    })
                    .flatten()
            });
        if let Some((retry_version, other)) = retry {
            if !Arc::ptr_eq(&retry_version.stats, &recording.stats) {
                // The candidate's failure is the candidate's; stable's answer is stable's.
                recording.finish(None, Some(UpstreamError::Connect), shared.second());
                recording = Recording::start(retry_version.stats.clone());
            }
            result = Box::pin(send(&shared, &other, &parts, empty(), false, watch)).await;
        }
    }
    let response = match result {
        Ok(mut response) => {
            recording.finish(Some(response.status().as_u16()), None, shared.second());
            if response.status() == StatusCode::SWITCHING_PROTOCOLS
                && let Some(client_upgrade) = client_upgrade
            {
                tunnel(
                    shared.clone(),
                    conn.clone(),
                    client_upgrade,
                    hyper::upgrade::on(&mut response),
                );
            } else {
                strip_hop_by_hop(response.headers_mut());
            }
            response
        }
        Err(Failed::Client(ClientFault::BodyTooLarge)) => {
            recording.finish(Some(413), None, shared.second());
            ClientFault::BodyTooLarge.response(max_body)
        }
        Err(Failed::Client(fault)) => {
            recording.client_error();
            fault.response(max_body)
        }
        Err(Failed::Upstream(kind)) => {
            recording.finish(None, Some(kind), shared.second());
            match kind {
                UpstreamError::Timeout => text(
                    StatusCode::GATEWAY_TIMEOUT,
                    "the upstream did not answer in time",
                ),
                UpstreamError::Connect => text(
                    StatusCode::BAD_GATEWAY,
                    "the upstream refused the connection",
                ),
                UpstreamError::Reset => {
                    text(StatusCode::BAD_GATEWAY, "the upstream connection failed")
                }
            }
        }
    };
    if let Some((method, uri, headers)) = mirror {
        match shared.mirror_permits.clone().try_acquire_owned() {
            Ok(permit) => mirror_to_candidate(shared, route, method, uri, headers, permit),
            Err(_) => {
                shared.mirror_dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
    Ok(response)
}

/// Builds the upstream request from the client's parts: origin-form URI (absolute-form
/// for the pooled legacy client), HTTP/1.1 whatever the client spoke.
fn upstream_request(parts: &http::request::Parts, uri: Uri, body: ProxyBody) -> Request<ProxyBody> {
    let mut request = Request::new(body);
    *request.method_mut() = parts.method.clone();
    *request.uri_mut() = uri;
    *request.version_mut() = Version::HTTP_11;
    *request.headers_mut() = parts.headers.clone();
    request
}

/// Sends one request to `endpoint` within the request timeout, updating its health.
/// Upgrade requests go through hyper-util's client, which hands over the upgraded
/// connection; everything else through the inline-driven pool of [`crate::upstream`].
/// A failure that `body` shows to be the client's is returned as [`Failed::Client`] and
/// leaves the endpoint's health alone.
async fn send(
    shared: &Shared,
    endpoint: &Arc<Endpoint>,
    parts: &http::request::Parts,
    body: ProxyBody,
    upgrade: bool,
    body_watch: &BodyWatch,
) -> Result<Response<ProxyBody>, Failed> {
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let _in_flight = endpoint.begin();
    let timeout: std::time::Duration = shared.config.timeouts.request.into();
    let outcome = if upgrade {
        let Ok(uri) = format!("{}{path}", endpoint.base).parse::<Uri>() else {
            return Err(Failed::Upstream(UpstreamError::Connect));
        };
        let request = upstream_request(parts, uri, body);
        match tokio::time::timeout(timeout, shared.client.request(request)).await {
            Ok(Ok(response)) => Ok(response.map(|b| b.map_err(BoxError::from).boxed())),
            Ok(Err(e)) if e.is_connect() => Err(UpstreamError::Connect),
            Ok(Err(_)) => Err(UpstreamError::Reset),
            Err(_) => Err(UpstreamError::Timeout),
        }
    } else {
        let Ok(uri) = path.parse::<Uri>() else {
            return Err(Failed::Upstream(UpstreamError::Connect));
        };
        let replayable = body.is_end_stream();
        let replay = || upstream_request(parts, uri.clone(), empty());
        let target = crate::upstream::Target {
            authority: &endpoint.authority,
            pool: endpoint,
            connect_timeout: shared.config.timeouts.connect.into(),
            idle_timeout: shared.config.timeouts.upstream_idle.into(),
        };
        let request = upstream_request(parts, uri.clone(), body);
        let replay: Option<&(dyn Fn() -> Request<ProxyBody> + Sync)> =
            if replayable { Some(&replay) } else { None };
        match tokio::time::timeout(timeout, crate::upstream::send(&target, request, replay)).await {
            Ok(result) => result,
            Err(_) => Err(UpstreamError::Timeout),
        }
    };
    if let Err(kind) = outcome
        && let Some(fault) = body_watch.fault(Some(kind))
    {
        return Err(Failed::Client(fault));
    }
    let health = &shared.config.health;
    match outcome {
        Ok(_) => endpoint.succeeded(),
        Err(_) => {
            if endpoint.failed(
                shared.now_ms(),
                health.consecutive_failures,
                health.ejection.as_millis(),
            ) {
                tracing::warn!(endpoint = %endpoint.authority, "endpoint ejected after repeated failures");
            }
        }
    }
    outcome.map_err(Failed::Upstream)
}

/// Copies a request to the candidate in the background; its answer is read and thrown
/// away frame by frame (never buffered) and the client never waits for it. `permit` is
/// one of `limits.maxMirrorInFlight`, held until the copy is done. Mirrored requests
/// never carry a body (only bodiless GET, HEAD and OPTIONS are copied), so a mirrored
/// body's size bound is zero.
fn mirror_to_candidate(
    shared: Arc<Shared>,
    route: Arc<CompiledRoute>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    permit: tokio::sync::OwnedSemaphorePermit,
) {
    tokio::spawn(async move {
        let _permit = permit;
        let Some(candidate) = route.candidate.as_ref() else {
            return;
        };
        let Some(endpoint) = candidate.pick(shared.now_ms(), random(), None).cloned() else {
            return;
        };
        let mut parts = Request::new(()).into_parts().0;
        parts.method = method;
        parts.uri = uri;
        parts.headers = headers;
        let mut recording = Recording::start(candidate.stats.clone());
        match send(&shared, &endpoint, &parts, empty(), false, &NO_BODY).await {
            Ok(response) => {
                recording.finish(Some(response.status().as_u16()), None, shared.second());
                let mut body = response.into_body();
                while let Some(frame) = body.frame().await {
                    if frame.is_err() {
                        break;
                    }
                }
            }
            Err(Failed::Upstream(kind)) => recording.finish(None, Some(kind), shared.second()),
            Err(Failed::Client(_)) => recording.client_error(),
        }
    });
}

/// Milliseconds since `base`, for activity stamps.
fn millis_since(base: Instant) -> u64 {
    u64::try_from(base.elapsed().as_millis()).unwrap_or(u64::MAX)
}

/// An upgraded connection that stamps `last` whenever bytes move, so the tunnel can be
/// closed when both directions have been quiet for `timeouts.tunnelIdle`.
struct Stamped<T> {
    io: T,
    base: Instant,
    last: Arc<AtomicU64>,
}

impl<T> Stamped<T> {
    fn stamp(&self) {
        self.last.store(millis_since(self.base), Ordering::Relaxed);
    }
}

impl<T: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for Stamped<T> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let result = std::pin::Pin::new(&mut self.io).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.stamp();
        }
        result
    }
}

impl<T: tokio::io::AsyncWrite + Unpin> tokio::io::AsyncWrite for Stamped<T> {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        let result = std::pin::Pin::new(&mut self.io).poll_write(cx, buf);
        if matches!(result, std::task::Poll::Ready(Ok(n)) if n > 0) {
            self.stamp();
        }
        result
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// Joins the client's and the upstream's upgraded connections and copies bytes both ways
/// until either side closes or both are quiet for `timeouts.tunnelIdle`. The tunnel holds
/// its client connection's slot (`conn`), so tunnels count against `maxConnections`.
fn tunnel(
    shared: Arc<Shared>,
    conn: Arc<ConnInfo>,
    client: hyper::upgrade::OnUpgrade,
    upstream: hyper::upgrade::OnUpgrade,
) {
    shared.tunnels.fetch_add(1, Ordering::AcqRel);
    let idle: std::time::Duration = shared.config.timeouts.tunnel_idle.into();
    tokio::spawn(async move {
        if let (Ok(client), Ok(upstream)) = (client.await, upstream.await) {
            let base = Instant::now();
            let last = Arc::new(AtomicU64::new(0));
            let mut client = Stamped {
                io: TokioIo::new(client),
                base,
                last: last.clone(),
            };
            let mut upstream = Stamped {
                io: TokioIo::new(upstream),
                base,
                last: last.clone(),
            };
            let copy = tokio::io::copy_bidirectional(&mut client, &mut upstream);
            tokio::pin!(copy);
            loop {
                let quiet_until = tokio::time::Instant::from_std(base)
                    + std::time::Duration::from_millis(last.load(Ordering::Relaxed))
                    + idle;
                tokio::select! {
                    _ = &mut copy => break,
                    _ = tokio::time::sleep_until(quiet_until) => {
                        let quiet = millis_since(base).saturating_sub(last.load(Ordering::Relaxed));
                        if u128::from(quiet) >= idle.as_millis() {
                            tracing::debug!(peer = %conn.peer, "tunnel idle; closing");
                            break;
                        }
                    }
                }
            }
        }
        drop(conn);
        shared.tunnels.fetch_sub(1, Ordering::AcqRel);
        shared.tunnels_done.notify_one();
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).expect("name"),
                v.parse().expect("value"),
            );
        }
        h
    }

    #[test]
    fn hop_by_hop_headers_and_those_connection_names_are_removed() {
        let mut h = headers(&[
            ("connection", "keep-alive, x-secret"),
            ("keep-alive", "timeout=5"),
            ("x-secret", "1"),
            ("te", "trailers"),
            ("upgrade", "websocket"),
            ("x-kept", "yes"),
        ]);
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key("x-kept"));
    }

    #[test]
    fn smuggling_shapes_are_recognised() {
        assert!(
            smuggling(&headers(&[
                ("content-length", "5"),
                ("transfer-encoding", "chunked")
            ]))
            .is_some()
        );
        assert!(smuggling(&headers(&[("transfer-encoding", "chunked, gzip")])).is_some());
        assert!(
            smuggling(&headers(&[
                ("content-length", "5"),
                ("content-length", "6")
            ]))
            .is_some()
        );
        assert!(smuggling(&headers(&[("transfer-encoding", "gzip, chunked")])).is_some());
        assert!(smuggling(&headers(&[("transfer-encoding", "chunked")])).is_none());
        assert!(smuggling(&headers(&[("content-length", "5")])).is_none());
    }

    #[test]
    fn forwarding_headers_append_to_what_a_trusted_proxy_sent() {
        let mut h = headers(&[
            ("x-forwarded-for", "10.0.0.1"),
            ("forwarded", "for=10.0.0.1"),
        ]);
        let host = HeaderValue::from_static("shop.example");
        add_forwarding(
            &mut h,
            "[::1]:5000".parse().expect("addr"),
            Some(&host),
            true,
            true,
        );
        assert_eq!(h["x-forwarded-for"], "10.0.0.1, ::1");
        assert_eq!(h["x-forwarded-proto"], "https");
        assert_eq!(h["x-forwarded-host"], "shop.example");
        assert_eq!(
            h[header::FORWARDED],
            "for=10.0.0.1, for=\"[::1]\";proto=https;host=shop.example"
        );
    }

    #[test]
    fn forwarding_headers_from_an_untrusted_client_are_replaced() {
        let mut h = headers(&[
            ("x-forwarded-for", "1.2.3.4"),
            ("x-forwarded-for", "5.6.7.8"),
            ("forwarded", "for=1.2.3.4;by=evil"),
        ]);
        add_forwarding(
            &mut h,
            "192.0.2.7:5000".parse().expect("addr"),
            None,
            false,
            false,
        );
        assert_eq!(h.get_all("x-forwarded-for").iter().count(), 1);
        assert_eq!(h["x-forwarded-for"], "192.0.2.7");
        assert_eq!(h.get_all(header::FORWARDED).iter().count(), 1);
        assert_eq!(h[header::FORWARDED], "for=192.0.2.7;proto=http");
    }

    #[test]
    fn forwarded_values_are_quoted_where_rfc_7239_needs_it() {
        assert_eq!(forwarded_value("192.0.2.7"), "192.0.2.7");
        assert_eq!(forwarded_value("shop.example"), "shop.example");
        assert_eq!(forwarded_value("[2001:db8::1]"), "\"[2001:db8::1]\"");
        assert_eq!(
            forwarded_value("shop.example:8080"),
            "\"shop.example:8080\""
        );
        assert_eq!(forwarded_value("a\"b\\c"), "\"a\\\"b\\\\c\"");
        assert_eq!(forwarded_value(""), "\"\"");
        let mut h = HeaderMap::new();
        let host = HeaderValue::from_static("shop.example:8443");
        add_forwarding(
            &mut h,
            "[::ffff:192.0.2.7]:5000".parse().expect("addr"),
            Some(&host),
            false,
            false,
        );
        assert_eq!(
            h[header::FORWARDED],
            "for=192.0.2.7;proto=http;host=\"shop.example:8443\"",
            "an IPv4-mapped peer is written as IPv4, a host with a port is quoted"
        );
    }

    #[test]
    fn trusted_proxy_ranges_match_by_prefix() {
        let ip = |s: &str| s.parse::<std::net::IpAddr>().expect("ip");
        let net = Cidr::parse("10.1.0.0/16").expect("cidr");
        assert!(net.contains(ip("10.1.200.3")));
        assert!(!net.contains(ip("10.2.0.1")));
        assert!(net.contains(ip("::ffff:10.1.0.9")), "IPv4-mapped peers");
        let one = Cidr::parse("::1").expect("address");
        assert!(one.contains(ip("::1")) && !one.contains(ip("::2")));
        assert!(
            Cidr::parse("0.0.0.0/0")
                .expect("all")
                .contains(ip("203.0.113.1"))
        );
        assert!(Cidr::parse("fd00::/8").expect("v6").contains(ip("fdab::1")));
        for bad in ["10.0.0.0/33", "::/129", "example.com", "10.0.0.0/x", ""] {
            assert!(Cidr::parse(bad).is_none(), "{bad}");
        }
    }
}

#[cfg(test)]
mod future_size {
    fn size_of_future<A, B, C, F: std::future::Future>(_: fn(A, B, C) -> F) -> usize {
        std::mem::size_of::<F>()
    }

    /// Every idle keep-alive connection reserves room for this future: keep it small.
    #[test]
    fn the_request_handler_future_stays_small() {
        let size = size_of_future(super::handle);
        assert!(size <= 2048, "handle's future is {size} bytes");
    }
}
