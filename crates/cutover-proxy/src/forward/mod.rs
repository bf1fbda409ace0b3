//! The request path: route, choose a version and an endpoint, forward, stream back.
//!
//! [`handle`] runs the phases of [`phases`] in order, as pingora's `ProxyHttp` does:
//! reject early, choose the upstream, build the upstream request, send with retry, map and
//! record the response, mirror. A [`phases::RequestContext`] on the handler's stack carries
//! what they share. `headers` rewrites headers, `body` watches the client's body,
//! `send` makes one exchange (within the request timeout, kept by `deadline`), `record`
//! counts it, `tunnel` carries upgraded connections.
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

mod body;
mod deadline;
mod headers;
mod phases;
mod record;
mod send;
mod tunnel;

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Request, Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Empty, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};

pub(crate) use body::Inbound;
pub(crate) use headers::{
    Cidr, ForwardingFields, PeerForwarding, connection_lists, connection_names_no_field,
    field_name, smuggling, strip_hop_by_hop,
};

use crate::config::Timeouts;
use crate::listen::ConnInfo;
use record::Recording;

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
pub(super) fn closing(mut response: Response<ProxyBody>) -> Response<ProxyBody> {
    response
        .headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    response
}

/// A whole body of `body`.
pub(crate) fn full(body: impl Into<Bytes>) -> ProxyBody {
    Full::new(body.into())
        .map_err(|never| match never {})
        .boxed()
}

/// A body with nothing in it.
pub(super) fn empty() -> ProxyBody {
    Empty::new().map_err(|never| match never {}).boxed()
}

/// Serves one client request arriving on connection `conn`: the phases of [`phases`], in
/// order. A phase that answers by itself (a refusal, no route, no endpoint) ends it.
///
/// An `async` block, not an `async fn`: an `async fn` moves its arguments into locals and
/// keeps room for both, so the request would take its room twice.
#[expect(
    clippy::manual_async_fn,
    reason = "an `async fn` keeps room for its arguments twice"
)]
pub(crate) fn handle(
    mut req: Request<Inbound>,
    conn: Arc<ConnInfo>,
) -> impl Future<Output = Result<Response<ProxyBody>, Infallible>> + Send {
    async move {
        // Reached through the connection, whose `Arc` only this connection's requests
        // touch: a clone of the proxy-wide `Arc<Shared>` per request wrote a reference
        // count that every worker writes.
        let shared = &conn.shared;
        if let Err(refusal) = phases::reject_early(shared.config.limits.max_body_bytes, &mut req) {
            return Ok(refusal.response());
        }
        let mut ctx = match phases::choose_upstream(shared, &req, conn.peer) {
            Ok(ctx) => ctx,
            Err(refusal) => return Ok(refusal.response()),
        };
        let phases::UpstreamRequest {
            mut parts,
            forwarding,
            body,
            client_upgrade,
        } = phases::build_upstream_request(shared, &conn, &mut ctx, req);
        let mut recording = Recording::start(&ctx.version().stats, ctx.routed);
        let result =
            phases::send_with_retry(shared, &ctx, &mut parts, &forwarding, body, &mut recording)
                .await;
        let response = phases::map_response(&conn, client_upgrade, result, &mut recording);
        // Counted by now; dropped to give the route back for the mirrored copy.
        drop(recording);
        if let Some(copy) = ctx.mirror.take() {
            phases::mirror(shared.clone(), ctx.route, copy);
        }
        Ok(response)
    }
}

/// A cheap per-request random number for power-of-two choices.
pub(super) fn random() -> u64 {
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

#[cfg(test)]
mod future_size {
    fn size_of_future<A, B, F: std::future::Future>(_: fn(A, B) -> F) -> usize {
        std::mem::size_of::<F>()
    }

    /// hyper keeps room for this future in every HTTP/1 connection it serves (until the
    /// connection parks) and in the task of every HTTP/2 stream, and it is moved into its
    /// box on every request: keep it small. It holds the exchange's future (below) since
    /// that is no longer boxed apart: 3,448 bytes then, 2,536 (release and debug) once
    /// the handler, the upstream send and the exchange kept no second copy of their
    /// arguments, 2,712 with the forwarding fields kept beside the request's header map
    /// (four header values rather than four inserts into the map).
    #[test]
    fn the_request_handler_future_stays_small() {
        let size = size_of_future(super::handle);
        assert!(size <= 2816, "handle's future is {size} bytes");
    }

    /// The exchange's future is most of the request handler's: it was 3,776 bytes while
    /// it held room for an upgrade through hyper-util's client and an `async fn` timeout
    /// kept the exchange twice, 2,128 while `async fn`s kept their arguments twice, then
    /// 1,496, and is 1,520 now that it carries the forwarding fields and whether the
    /// request's header map may be kept (release and debug).
    #[test]
    fn the_exchange_future_stays_small() {
        fn size_of_send<A, B, C, D, E, G, H, F>(_: fn(A, B, C, D, E, G, H) -> F) -> usize {
            std::mem::size_of::<F>()
        }
        let size = size_of_send(super::send::send);
        assert!(size <= 1600, "send's future is {size} bytes");
    }
}
