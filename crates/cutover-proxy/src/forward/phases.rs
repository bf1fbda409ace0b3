//! The phases of one request, in the order [`super::handle`] runs them (as pingora's
//! `ProxyHttp` phases): [`reject_early`], [`choose_upstream`], [`build_upstream_request`],
//! [`send_with_retry`], [`map_response`], [`mirror`]. What they share travels in a
//! [`RequestContext`] on the handler's stack, never on the heap.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use http::header::{self, HeaderMap, HeaderValue};
use http::request::Parts;
use http::{Method, Request, Response, StatusCode, Uri};
use http_body_util::BodyExt;
use hyper::body::Body as _;

use super::body::{BodyWatch, ClientBody, ClientFault, Failed, Inbound, NO_BODY};
use super::headers::{
    ForwardingFields, Framing, forwarding_fields, host_of, smuggling_in, strip_hop_by_hop,
    upgrade_of,
};
use super::record::{Counted, Recording};
use super::send::{mirror_to_candidate, send};
use super::tunnel::tunnel;
use super::{ProxyBody, closing, empty, text};
use crate::Shared;
use crate::listen::ConnInfo;
use crate::metrics::UpstreamError;
use crate::table::{CompiledRoute, Endpoint, Pick, Version};

/// What a mirrored copy of a request carries: it never has a body.
pub(super) struct MirrorCopy {
    method: Method,
    uri: Uri,
    headers: HeaderMap,
}

/// What the phases of one request share, in place of the locals of one long function.
/// [`choose_upstream`] creates it; [`build_upstream_request`] fills in what the request's
/// shape decides.
pub(super) struct RequestContext {
    /// The route the request matched. Only the route is kept, not the whole snapshot: a
    /// long request must not keep every version of an old table known (see
    /// `Registry::forget_unrouted`).
    pub(super) route: Arc<CompiledRoute>,
    /// The version the route chose (match rules, sticky bucket, weight).
    pub(super) pick: Pick,
    /// The version that serves: `pick`, or stable when every candidate endpoint is ejected.
    pub(super) serving: Pick,
    /// The endpoint chosen to serve: its place among the serving version's endpoints
    /// (see [`RequestContext::endpoint`]).
    pub(super) endpoint_index: usize,
    /// This request's random number for power-of-two choices (the retry's derives from it).
    pub(super) random: u64,
    /// When the request was routed (its route and version found): its latency is timed
    /// from here.
    pub(super) routed: Instant,
    /// An HTTP/1.1 upgrade (WebSocket and others): sent through hyper-util's client.
    pub(super) upgrade: bool,
    /// Safe to send again after a refused connection: idempotent, no body, no upgrade.
    pub(super) replayable: bool,
    /// How the client's body fares on its way up; `None` for a request without a body.
    pub(super) watched: Option<Arc<BodyWatch>>,
    /// The copy for the candidate, if this request is mirrored.
    pub(super) mirror: Option<MirrorCopy>,
}

impl RequestContext {
    /// The version that serves the request.
    pub(super) fn version(&self) -> &Version {
        self.route.version(self.serving)
    }

    /// The endpoint chosen to serve. Kept as a place in the route the context holds, not
    /// as a clone of its `Arc`, whose count every worker writes (the response body still
    /// takes one clone, to give its connection back to the endpoint's idle list).
    pub(super) fn endpoint(&self) -> &Arc<Endpoint> {
        &self.version().endpoints[self.endpoint_index]
    }

    /// The watch of the client's body ([`NO_BODY`] for a request without one).
    fn watch(&self) -> &BodyWatch {
        self.watched.as_deref().unwrap_or(&NO_BODY)
    }
}

/// Why the proxy answers a request itself, before any upstream is asked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Refusal {
    /// A shape used to smuggle a second request ([`smuggling`]): 400.
    Smuggling(&'static str),
    /// A declared `Content-Length` over `maxBodyBytes` (the limit): 413.
    DeclaredTooLarge(u64),
    /// No route for the request's host and path: 404.
    NoRoute,
    /// The route's versions have no endpoints at all: 503.
    NoEndpoints,
    /// `CONNECT`: a reverse proxy opens no tunnels to where a client asks: 405.
    Connect,
}

impl Refusal {
    /// The answer to the client. A refused body is left unread and, for a smuggling
    /// shape, its framing is in doubt: the connection closes after the answer rather than
    /// read what follows as a request.
    pub(super) fn response(self) -> Response<ProxyBody> {
        match self {
            Refusal::Smuggling(shape) => {
                closing(text(StatusCode::BAD_REQUEST, &format!("rejected: {shape}")))
            }
            Refusal::DeclaredTooLarge(max) => closing(text(
                StatusCode::PAYLOAD_TOO_LARGE,
                &format!("request body larger than {max} bytes"),
            )),
            Refusal::NoRoute => text(StatusCode::NOT_FOUND, "no route for this host and path"),
            Refusal::NoEndpoints => text(
                StatusCode::SERVICE_UNAVAILABLE,
                "the release has no endpoints",
            ),
            Refusal::Connect => closing(text(
                StatusCode::METHOD_NOT_ALLOWED,
                "CONNECT is not served: this is a reverse proxy",
            )),
        }
    }
}

/// Phase 1: refuses what must not reach an upstream, before any route is looked up:
/// smuggling shapes (400) and a declared length over `maxBodyBytes` (413), both closing
/// the connection. Equal duplicate `Content-Length`s are allowed (RFC 9110 §8.6) but some
/// upstreams refuse them: one is kept.
pub(super) fn reject_early(
    max_body: Option<u64>,
    req: &mut Request<Inbound>,
) -> Result<(), Refusal> {
    // One pass over the fields serves the smuggling shapes, the limit and the duplicate
    // check.
    let framing = Framing::of(req.headers());
    if let Some(shape) = smuggling_in(&framing, req.headers()) {
        return Err(Refusal::Smuggling(shape));
    }
    if req.method() == Method::CONNECT {
        return Err(Refusal::Connect);
    }
    let Some(first) = framing.first_length else {
        return Ok(());
    };
    if let Some(max) = max_body {
        let declared = crate::upstream::parse_length(first.as_bytes());
        if declared.is_some_and(|n| n > max) {
            return Err(Refusal::DeclaredTooLarge(max));
        }
    }
    if framing.repeated_length {
        let length = first.clone();
        req.headers_mut().insert(header::CONTENT_LENGTH, length);
    }
    Ok(())
}

/// Phase 2: the route for the request's host and path (404 without one), the version it
/// chooses, and an endpoint of it. When every candidate endpoint is ejected, stable serves
/// and the candidate is charged an unavailable request, so its error rate (and its
/// guardrails) see it failing; with no stable endpoint either: 503.
pub(super) fn choose_upstream(
    shared: &Shared,
    req: &Request<Inbound>,
    peer: SocketAddr,
) -> Result<RequestContext, Refusal> {
    let host = host_of(req);
    let found = shared.table.load().find(host, req.uri().path()).cloned();
    let Some(route) = found else {
        return Err(Refusal::NoRoute);
    };
    let pick = route.choose(req.headers(), Some(peer.ip()));
    let routed = Instant::now();
    let now_ms = shared.now_ms_at(routed);
    let random = super::random();
    let (serving, endpoint_index) = match route.version(pick).pick_index(now_ms, random, None) {
        Some(endpoint) => (pick, endpoint),
        None => {
            if pick == Pick::Candidate
                && let Some(candidate) = &route.candidate
            {
                candidate.stats.unavailable(shared.second_at(routed));
            }
            let stable = &route.stable;
            match stable
                .pick_index(now_ms, random, None)
                .or_else(|| (!stable.endpoints.is_empty()).then_some(0))
            {
                Some(endpoint) => (Pick::Stable, endpoint),
                None => return Err(Refusal::NoEndpoints),
            }
        }
    };
    Ok(RequestContext {
        route,
        pick,
        serving,
        endpoint_index,
        random,
        routed,
        upgrade: false,
        replayable: false,
        watched: None,
        mirror: None,
    })
}

/// Phase 3: the request as the upstream gets it: hop-by-hop headers stripped (an upgrade's
/// `Connection`/`Upgrade` put back), the client's `Host` kept, the forwarding fields
/// made (the client's own taken out; the new ones go beside the parts, for [`send`] to
/// write), and the body cut off past `maxBodyBytes` and watched for the client's faults.
/// Decides whether the request may be retried and whether it is mirrored.
pub(super) fn build_upstream_request(
    shared: &Shared,
    conn: &ConnInfo,
    ctx: &mut RequestContext,
    mut req: Request<Inbound>,
) -> UpstreamRequest {
    let upgrade = upgrade_of(&req);
    let client_upgrade = upgrade.as_ref().map(|_| hyper::upgrade::on(&mut req));
    ctx.upgrade = upgrade.is_some();
    let host_field = req.headers().get(header::HOST).cloned();
    let had_host_field = host_field.is_some();
    let original_host = host_field.or_else(|| {
        req.uri()
            .authority()
            .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
    });
    let (mut parts, body) = req.into_parts();
    // Before the hop-by-hop headers go: HTTP/1 chunked bodies and HTTP/2 bodies without a
    // length both show here.
    let has_body = !body.is_end_stream();
    let named_stripped = strip_hop_by_hop(&mut parts.headers);
    let forwarding = forwarding_fields(
        &mut parts.headers,
        &conn.forwarding,
        original_host.as_ref(),
        conn.trusted,
    );
    if let Some(protocol) = upgrade {
        parts
            .headers
            .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        parts.headers.insert(header::UPGRADE, protocol);
    }
    // `Host` is put back only where the map may lack it: an HTTP/2 request names its
    // host in the authority, and a `Connection` field may have named `Host` itself.
    if (!had_host_field || named_stripped)
        && parts.headers.get(header::HOST).is_none()
        && let Some(host) = original_host
    {
        parts.headers.insert(header::HOST, host);
    }
    ctx.replayable = is_replayable(&parts.method, has_body, ctx.upgrade);
    // A request without a body needs no watching: its body cannot fail by the client.
    ctx.watched = has_body.then(|| Arc::new(BodyWatch::new(false)));
    let body: ProxyBody = match &ctx.watched {
        Some(watch) => ClientBody::new(
            body,
            shared.config.limits.max_body_bytes,
            shared.config.timeouts.client_body_idle.into(),
            watch.clone(),
        )
        .boxed(),
        // Nothing to read: an empty body costs no allocation, the client's is dropped.
        None => empty(),
    };
    let mirrored = ctx.pick == Pick::Stable
        && !has_body
        && is_safe(&parts.method)
        && !ctx.upgrade
        && ctx.route.mirror();
    ctx.mirror = mirrored.then(|| {
        let mut headers = parts.headers.clone();
        forwarding.insert_into(&mut headers);
        MirrorCopy {
            method: parts.method.clone(),
            uri: parts.uri.clone(),
            headers,
        }
    });
    UpstreamRequest {
        parts,
        forwarding,
        body,
        client_upgrade,
    }
}

/// What [`build_upstream_request`] makes of the client's request.
pub(super) struct UpstreamRequest {
    /// The head as the upstream gets it, less the forwarding fields.
    pub(super) parts: Parts,
    /// The forwarding fields, written after the head's own.
    pub(super) forwarding: ForwardingFields,
    /// The body, cut off past `maxBodyBytes` and watched.
    pub(super) body: ProxyBody,
    /// The client side of an upgrade, handed to the tunnel on `101 Switching Protocols`.
    pub(super) client_upgrade: Option<hyper::upgrade::OnUpgrade>,
}

/// Phase 4: sends the request to the chosen endpoint and, when [`retry_eligible`], once
/// more to [`retry_target`]. A retry on another version moves the request's entry in the
/// counters: the first version's failure stays the first version's.
pub(super) async fn send_with_retry<'a>(
    shared: &Shared,
    ctx: &'a RequestContext,
    parts: &mut Parts,
    forwarding: &ForwardingFields,
    body: ProxyBody,
    recording: &mut Recording<'a>,
) -> Result<Response<ProxyBody>, Failed> {
    // Not boxed apart: the handler's future is allocated once per request already (boxed
    // by the proxy's HTTP/1 reader; by hyper in each connection it serves, which parks
    // within `PARK_AFTER` of its last request, and in each HTTP/2 stream's task). A second
    // box of over a kilobyte per request cost glibc's slow path twice (about 400
    // instructions, measured before the binary used mimalloc); room for the exchange is
    // held only while a request is under way.
    let result = send(
        shared,
        ctx.endpoint(),
        parts,
        Some(forwarding),
        body,
        ctx.upgrade,
        ctx.watch(),
    )
    .await;
    if !retry_eligible(&result, ctx.replayable) {
        return result;
    }
    let Some((version, other)) = retry_target(ctx, shared.now_ms()) else {
        return result;
    };
    if !std::ptr::eq(&*version.stats, recording.stats()) {
        // The candidate's failure is the candidate's; stable's answer is stable's.
        recording.count(Counted::Upstream(UpstreamError::Connect), shared);
        *recording = Recording::start(&version.stats, Instant::now());
    }
    Box::pin(send(
        shared,
        &other,
        parts,
        Some(forwarding),
        empty(),
        false,
        ctx.watch(),
    ))
    .await
}

/// Whether a failed attempt may be sent again: only a refused connection (nothing was
/// sent) of a [`is_replayable`] request. A timeout or a reset may have reached the
/// upstream; a client's fault would fail again.
pub(super) fn retry_eligible<T>(result: &Result<T, Failed>, replayable: bool) -> bool {
    replayable && matches!(result, Err(Failed::Upstream(UpstreamError::Connect)))
}

/// Where a retry goes: another endpoint of the serving version, or stable if the route
/// chose the candidate and it has no other.
pub(super) fn retry_target(ctx: &RequestContext, now_ms: u64) -> Option<(&Version, Arc<Endpoint>)> {
    let version = ctx.version();
    version
        .pick(now_ms, ctx.random.rotate_left(17), Some(ctx.endpoint()))
        .map(|e| (version, e.clone()))
        .or_else(|| {
            let stable = &ctx.route.stable;
            (ctx.pick == Pick::Candidate)
                .then(|| stable.pick(now_ms, ctx.random, None))
                .flatten()
                .map(|e| (stable, e.clone()))
        })
}

/// Phase 5: the client's answer, counted where it belongs. An upstream's answer goes back
/// with its hop-by-hop headers stripped (or, on `101`, its connection joined to the
/// client's in a tunnel); a failure is answered by [`failure_response`] and counted by
/// [`counted_as`].
pub(super) fn map_response(
    conn: &Arc<ConnInfo>,
    client_upgrade: Option<hyper::upgrade::OnUpgrade>,
    result: Result<Response<ProxyBody>, Failed>,
    recording: &mut Recording<'_>,
) -> Response<ProxyBody> {
    let shared = &conn.shared;
    match result {
        Ok(mut response) => {
            recording.count(Counted::Status(response.status().as_u16()), shared);
            if response.status() == StatusCode::SWITCHING_PROTOCOLS
                && let Some(client_upgrade) = client_upgrade
            {
                tunnel(
                    conn.clone(),
                    client_upgrade,
                    hyper::upgrade::on(&mut response),
                );
            } else {
                strip_hop_by_hop(response.headers_mut());
            }
            response
        }
        Err(failed) => {
            recording.count(counted_as(failed), shared);
            failure_response(failed, shared.config.limits.max_body_bytes)
        }
    }
}

/// Where a request that got no answer is counted: an upstream's failure against the
/// version; a body over `maxBodyBytes` as the version's 413 (what an upstream that
/// refused it would have answered); any other client fault only as a client error, so it
/// never feeds the version's error rate or a guardrail.
pub(super) fn counted_as(failed: Failed) -> Counted {
    match failed {
        Failed::Upstream(kind) => Counted::Upstream(kind),
        Failed::Client(ClientFault::BodyTooLarge) => Counted::Status(413),
        Failed::Client(_) => Counted::ClientError,
    }
}

/// The answer to a request that got no response: 502 (refused, reset) or 504 (timed out)
/// for the upstream's failures, never 4xx; 400, 408 or 413 for the client's, never 5xx.
pub(super) fn failure_response(failed: Failed, max_body: Option<u64>) -> Response<ProxyBody> {
    match failed {
        Failed::Client(fault) => fault.response(max_body),
        Failed::Upstream(UpstreamError::Timeout) => text(
            StatusCode::GATEWAY_TIMEOUT,
            "the upstream did not answer in time",
        ),
        Failed::Upstream(UpstreamError::Connect) => text(
            StatusCode::BAD_GATEWAY,
            "the upstream refused the connection",
        ),
        Failed::Upstream(UpstreamError::Reset) => {
            text(StatusCode::BAD_GATEWAY, "the upstream connection failed")
        }
    }
}

/// Phase 6: copies the request to the candidate in the background, within
/// `limits.maxMirrorInFlight` (a copy over it is dropped and counted).
pub(super) fn mirror(shared: Arc<Shared>, route: Arc<CompiledRoute>, copy: MirrorCopy) {
    match shared.mirror_permits.clone().try_acquire_owned() {
        Ok(permit) => {
            mirror_to_candidate(shared, route, copy.method, copy.uri, copy.headers, permit);
        }
        Err(_) => {
            shared.mirror_dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Whether a request can be sent again after its connection was refused: an idempotent
/// method (RFC 9110 §9.2.2), no body to replay, and not an upgrade.
pub(super) fn is_replayable(method: &Method, has_body: bool, upgrade: bool) -> bool {
    let idempotent = matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::PUT | Method::DELETE | Method::TRACE
    );
    idempotent && !has_body && !upgrade
}

/// Methods whose copy to the candidate changes nothing: only these are mirrored.
fn is_safe(method: &Method) -> bool {
    matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL_FAILURES: [Failed; 6] = [
        Failed::Upstream(UpstreamError::Connect),
        Failed::Upstream(UpstreamError::Reset),
        Failed::Upstream(UpstreamError::Timeout),
        Failed::Client(ClientFault::BadBody),
        Failed::Client(ClientFault::SlowBody),
        Failed::Client(ClientFault::BodyTooLarge),
    ];

    #[test]
    fn upstream_failures_map_to_502_or_504_and_client_faults_to_4xx() {
        let status = |failed| failure_response(failed, Some(10)).status().as_u16();
        assert_eq!(status(Failed::Upstream(UpstreamError::Connect)), 502);
        assert_eq!(status(Failed::Upstream(UpstreamError::Reset)), 502);
        assert_eq!(status(Failed::Upstream(UpstreamError::Timeout)), 504);
        assert_eq!(status(Failed::Client(ClientFault::BadBody)), 400);
        assert_eq!(status(Failed::Client(ClientFault::SlowBody)), 408);
        assert_eq!(status(Failed::Client(ClientFault::BodyTooLarge)), 413);
        for failed in ALL_FAILURES {
            let code = status(failed);
            match failed {
                Failed::Upstream(_) => assert!((500..600).contains(&code), "{failed:?}"),
                Failed::Client(_) => assert!((400..500).contains(&code), "{failed:?}"),
            }
        }
    }

    #[test]
    fn client_faults_close_the_connection_and_upstream_failures_do_not() {
        for failed in ALL_FAILURES {
            let closes = failure_response(failed, None)
                .headers()
                .get(header::CONNECTION)
                .is_some_and(|v| v == "close");
            assert_eq!(closes, matches!(failed, Failed::Client(_)), "{failed:?}");
        }
    }

    #[test]
    fn only_upstream_failures_and_oversized_bodies_count_against_the_version() {
        for kind in [
            UpstreamError::Connect,
            UpstreamError::Reset,
            UpstreamError::Timeout,
        ] {
            assert_eq!(counted_as(Failed::Upstream(kind)), Counted::Upstream(kind));
        }
        assert_eq!(
            counted_as(Failed::Client(ClientFault::BodyTooLarge)),
            Counted::Status(413)
        );
        assert_eq!(
            counted_as(Failed::Client(ClientFault::BadBody)),
            Counted::ClientError
        );
        assert_eq!(
            counted_as(Failed::Client(ClientFault::SlowBody)),
            Counted::ClientError
        );
    }

    #[test]
    fn refusals_before_an_upstream_are_4xx_or_503_and_close_when_the_body_is_in_doubt() {
        let answer = |refusal: Refusal| {
            let response = refusal.response();
            let closes = response
                .headers()
                .get(header::CONNECTION)
                .is_some_and(|v| v == "close");
            (response.status().as_u16(), closes)
        };
        assert_eq!(
            answer(Refusal::Smuggling("conflicting Content-Length values")),
            (400, true)
        );
        assert_eq!(answer(Refusal::DeclaredTooLarge(10)), (413, true));
        assert_eq!(answer(Refusal::NoRoute), (404, false));
        assert_eq!(answer(Refusal::NoEndpoints), (503, false));
        assert_eq!(answer(Refusal::Connect), (405, true));
    }

    #[test]
    fn only_a_refused_connection_of_a_replayable_request_is_retried() {
        let refused: Result<(), Failed> = Err(Failed::Upstream(UpstreamError::Connect));
        assert!(retry_eligible(&refused, true));
        assert!(!retry_eligible(&refused, false), "not replayable");
        for failed in ALL_FAILURES.into_iter().skip(1) {
            assert!(!retry_eligible(&Err::<(), _>(failed), true), "{failed:?}");
        }
        assert!(!retry_eligible(&Ok::<(), Failed>(()), true), "an answer");
    }

    #[test]
    fn only_idempotent_requests_without_a_body_or_upgrade_are_replayable() {
        for method in [
            Method::GET,
            Method::HEAD,
            Method::OPTIONS,
            Method::PUT,
            Method::DELETE,
        ] {
            assert!(is_replayable(&method, false, false), "{method}");
            assert!(!is_replayable(&method, true, false), "{method} with a body");
        }
        assert!(!is_replayable(&Method::GET, false, true), "an upgrade");
        assert!(!is_replayable(&Method::POST, false, false));
        assert!(!is_replayable(&Method::PATCH, false, false));
    }
}
