//! The request path: route, choose a version and an endpoint, forward, stream back.
//!
//! Upstream failures map to 502 (refused, reset) or 504 (timed out), never to 4xx.
//! Requests without a body and with an idempotent method are retried once on another
//! endpoint when the connection could not be made. Hop-by-hop headers are stripped both
//! ways (RFC 9110 §7.6.1) and `X-Forwarded-*` and `Forwarded` are set; the client's
//! `Host` is kept.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
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
use crate::metrics::{UpstreamError, VersionStats};
use crate::table::{Endpoint, Pick, Route};

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

/// Adds `X-Forwarded-For/-Proto/-Host` and `Forwarded` for a request from `peer`.
fn add_forwarding(
    headers: &mut HeaderMap,
    peer: SocketAddr,
    host: Option<&HeaderValue>,
    tls: bool,
) {
    let ip = peer.ip().to_string();
    let proto = if tls { "https" } else { "http" };
    let xff = match headers.get("x-forwarded-for").and_then(|v| v.to_str().ok()) {
        Some(previous) => format!("{previous}, {ip}"),
        None => ip.clone(),
    };
    if let Ok(v) = HeaderValue::from_str(&xff) {
        headers.insert("x-forwarded-for", v);
    }
    headers.insert(
        "x-forwarded-proto",
        HeaderValue::from_static(if tls { "https" } else { "http" }),
    );
    if let Some(host) = host {
        headers.insert("x-forwarded-host", host.clone());
    }
    let for_ = if peer.is_ipv6() {
        format!("\"[{ip}]\"")
    } else {
        ip
    };
    let mut forwarded = format!("for={for_};proto={proto}");
    if let Some(host) = host.and_then(|h| h.to_str().ok()) {
        forwarded.push_str(&format!(";host=\"{host}\""));
    }
    let value = match headers.get(header::FORWARDED).and_then(|v| v.to_str().ok()) {
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
    /// The client's streamed body went past `maxBodyBytes`: 413, nobody's fault upstream.
    BodyTooLarge,
}

/// A request body cut off at `limit` bytes. Going past it ends the body with an error and
/// sets `exceeded`, so the failure is answered 413 rather than blamed on the upstream.
struct LimitedBody {
    inner: Incoming,
    remaining: u64,
    exceeded: Arc<AtomicBool>,
}

impl hyper::body::Body for LimitedBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        match std::pin::Pin::new(&mut this.inner).poll_frame(cx) {
            std::task::Poll::Ready(Some(Ok(frame))) => {
                let len = frame.data_ref().map_or(0, |d| d.len() as u64);
                if len > this.remaining {
                    this.exceeded.store(true, Ordering::Relaxed);
                    return std::task::Poll::Ready(Some(Err(
                        "request body larger than maxBodyBytes".into(),
                    )));
                }
                this.remaining -= len;
                std::task::Poll::Ready(Some(Ok(frame)))
            }
            other => other.map(|f| f.map(|r| r.map_err(BoxError::from))),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}

/// Methods whose copy to the candidate changes nothing: only these are mirrored.
fn is_safe(method: &Method) -> bool {
    matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

/// Serves one client request.
pub(crate) async fn handle(
    shared: Arc<Shared>,
    mut req: Request<Incoming>,
    peer: SocketAddr,
    tls: bool,
) -> Result<Response<ProxyBody>, Infallible> {
    if let Some(shape) = smuggling(req.headers()) {
        return Ok(text(StatusCode::BAD_REQUEST, &format!("rejected: {shape}")));
    }
    let max_body = shared.config.limits.max_body_bytes;
    if let Some(max) = max_body {
        let declared = req
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok());
        if declared.is_some_and(|n| n > max) {
            return Ok(text(
                StatusCode::PAYLOAD_TOO_LARGE,
                &format!("request body larger than {max} bytes"),
            ));
        }
    }
    let table = shared.table.load_full();
    let host = host_of(&req);
    let Some(route) = table.find(host.as_deref(), req.uri().path()) else {
        return Ok(text(
            StatusCode::NOT_FOUND,
            "no route for this host and path",
        ));
    };
    let route = route.clone();
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
    add_forwarding(&mut parts.headers, peer, original_host.as_ref(), tls);
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
    let exceeded = Arc::new(AtomicBool::new(false));
    let body: ProxyBody = match max_body {
        Some(max) => LimitedBody {
            inner: body,
            remaining: max,
            exceeded: exceeded.clone(),
        }
        .boxed(),
        None => body.map_err(BoxError::from).boxed(),
    };
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

    let mut stats = version.stats.clone();
    let mut started = Instant::now();
    stats.start();
    // Boxed: hyper keeps room for this handler's future for as long as the client
    // connection lives, so the large upstream state is allocated per request instead of
    // sitting in every idle keep-alive connection.
    let mut result = Box::pin(send(
        &shared,
        &endpoint,
        &parts,
        body,
        upgrade.is_some(),
        &exceeded,
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
            if !Arc::ptr_eq(&retry_version.stats, &stats) {
                // The candidate's failure is the candidate's; stable's answer is stable's.
                stats.finish(
                    None,
                    Some(UpstreamError::Connect),
                    started.elapsed(),
                    shared.second(),
                );
                stats = retry_version.stats.clone();
                started = Instant::now();
                stats.start();
            }
            result = Box::pin(send(&shared, &other, &parts, empty(), false, &exceeded)).await;
        }
    }
    let response = match result {
        Ok(mut response) => {
            stats.finish(
                Some(response.status().as_u16()),
                None,
                started.elapsed(),
                shared.second(),
            );
            if response.status() == StatusCode::SWITCHING_PROTOCOLS
                && let Some(client_upgrade) = client_upgrade
            {
                tunnel(
                    shared.clone(),
                    client_upgrade,
                    hyper::upgrade::on(&mut response),
                );
            } else {
                strip_hop_by_hop(response.headers_mut());
            }
            response
        }
        Err(Failed::BodyTooLarge) => {
            stats.finish(Some(413), None, started.elapsed(), shared.second());
            let max = max_body.unwrap_or_default();
            text(
                StatusCode::PAYLOAD_TOO_LARGE,
                &format!("request body larger than {max} bytes"),
            )
        }
        Err(Failed::Upstream(kind)) => {
            stats.finish(None, Some(kind), started.elapsed(), shared.second());
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
        mirror_to_candidate(shared, route, method, uri, headers);
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
async fn send(
    shared: &Shared,
    endpoint: &Arc<Endpoint>,
    parts: &http::request::Parts,
    body: ProxyBody,
    upgrade: bool,
    body_exceeded: &AtomicBool,
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
    if outcome.is_err() && body_exceeded.load(Ordering::Relaxed) {
        return Err(Failed::BodyTooLarge);
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

/// Copies a request to the candidate in the background; its answer is discarded and the
/// client never waits for it.
fn mirror_to_candidate(
    shared: Arc<Shared>,
    route: Arc<Route>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) {
    tokio::spawn(async move {
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
        let stats: Arc<VersionStats> = candidate.stats.clone();
        let started = Instant::now();
        stats.start();
        match send(
            &shared,
            &endpoint,
            &parts,
            empty(),
            false,
            &AtomicBool::new(false),
        )
        .await
        {
            Ok(response) => {
                stats.finish(
                    Some(response.status().as_u16()),
                    None,
                    started.elapsed(),
                    shared.second(),
                );
                let _ = response.into_body().collect().await;
            }
            Err(Failed::Upstream(kind)) => {
                stats.finish(None, Some(kind), started.elapsed(), shared.second())
            }
            Err(Failed::BodyTooLarge) => {}
        }
    });
}

/// Joins the client's and the upstream's upgraded connections and copies bytes both ways
/// until either side closes.
fn tunnel(
    shared: Arc<Shared>,
    client: hyper::upgrade::OnUpgrade,
    upstream: hyper::upgrade::OnUpgrade,
) {
    shared.tunnels.fetch_add(1, Ordering::AcqRel);
    tokio::spawn(async move {
        if let (Ok(client), Ok(upstream)) = (client.await, upstream.await) {
            let mut client = TokioIo::new(client);
            let mut upstream = TokioIo::new(upstream);
            let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
        }
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
    fn forwarding_headers_append_to_what_came_before() {
        let mut h = headers(&[("x-forwarded-for", "10.0.0.1")]);
        let host = HeaderValue::from_static("shop.example");
        add_forwarding(
            &mut h,
            "[::1]:5000".parse().expect("addr"),
            Some(&host),
            true,
        );
        assert_eq!(h["x-forwarded-for"], "10.0.0.1, ::1");
        assert_eq!(h["x-forwarded-proto"], "https");
        assert_eq!(h["x-forwarded-host"], "shop.example");
        assert_eq!(
            h[header::FORWARDED],
            "for=\"[::1]\";proto=https;host=\"shop.example\""
        );
    }
}

#[cfg(test)]
mod future_size {
    fn size_of_future<A, B, C, D, F: std::future::Future>(_: fn(A, B, C, D) -> F) -> usize {
        std::mem::size_of::<F>()
    }

    /// Every idle keep-alive connection reserves room for this future: keep it small.
    #[test]
    fn the_request_handler_future_stays_small() {
        let size = size_of_future(super::handle);
        assert!(size <= 2048, "handle's future is {size} bytes");
    }
}
