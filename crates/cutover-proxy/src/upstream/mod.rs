//! Upstream HTTP/1.1 connections, pooled per endpoint and driven inline, speaking
//! HTTP/1.1 through a codec of their own.
//!
//! A pooled client that runs every upstream connection as a task of its own (hyper-util's
//! legacy client) makes each request cross from the client connection's task to the
//! upstream connection's task and back: two wake-ups, often a thread hop. Here the request
//! that holds an upstream connection drives it itself ([`exchange`]): the request is
//! written and the answer read from the request's future until the response head arrives,
//! then from the response body's `poll_frame` while the body streams to the client, and the
//! connection goes back to its endpoint's idle list when the body ends with the connection
//! reusable. The messages themselves are [`codec`]'s: an upstream exchange is the simplest
//! HTTP/1.1 there is (one request at a time, origin-form, no upgrade), and a general client
//! (hyper's, with its request channel and dispatcher) cost about a third of the proxy's
//! instructions per request.

mod codec;
pub(crate) use codec::{hex_usize, itoa_u64, parse_length};
mod exchange;

use std::sync::Mutex;
use std::sync::atomic::AtomicUsize;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use http::{Request, Response};
use tokio::net::TcpStream;

use crate::forward::{ForwardingFields, ProxyBody};
use crate::metrics::UpstreamError;

/// Most idle connections kept per endpoint and worker.
const MAX_IDLE: usize = 1024;

/// An upstream connection: its socket and what has been read from it and not yet used.
pub(crate) struct Upstream {
    stream: TcpStream,
    read: BytesMut,
    /// Room for the next request's head, kept from the last one.
    write: BytesMut,
    /// The worker whose runtime's reactor the socket is registered with
    /// ([`crate::workers::worker`]): past [`crate::workers::SHARDS`] workers, two share
    /// an idle list, and each takes back only its own.
    worker: usize,
}

/// What each worker keeps of one endpoint, in a cache line of its own (see
/// [`crate::workers::PerWorker`]): its requests in flight and its idle connections. Every
/// request writes both, and only its worker does (past `SHARDS` workers, two share a
/// slot). Together they fit one 64-byte line.
///
/// The idle connections are one list per worker thread (see [`crate::workers::shard`]),
/// most recently used last. A connection is driven by the runtime that made it (its
/// socket is registered with that runtime's reactor), so a worker only ever takes back
/// its own; a worker's list is locked by that worker on the request path and by the
/// reaper once a second.
#[derive(Default)]
pub(crate) struct PerWorkerEndpoint {
    shards: crate::workers::PerWorker<EndpointShard>,
}

/// One worker's share of an endpoint.
#[derive(Default)]
struct EndpointShard {
    /// The worker's requests in flight to the endpoint: what power of two choices weighs.
    in_flight: AtomicUsize,
    /// The worker's idle connections, each with the time it went idle.
    idle: Mutex<IdleList>,
}

/// One worker's idle connections of an endpoint, each with the time it went idle.
type IdleList = Vec<(Instant, Box<Upstream>)>;

impl PerWorkerEndpoint {
    /// This thread's count of requests in flight to the endpoint.
    pub(crate) fn in_flight(&self) -> &AtomicUsize {
        &self.shards.mine().in_flight
    }

    /// This thread's idle list.
    fn idle_list(&self) -> &Mutex<IdleList> {
        &self.shards.mine().idle
    }

    /// The most recently used idle connection that is still open and younger than
    /// `max_idle`; older ones are dropped (closed) on the way.
    fn take_idle(&self, max_idle: Duration) -> Option<Box<Upstream>> {
        let now = Instant::now();
        let me = crate::workers::worker();
        let mut idle = self.idle_list().lock().ok()?;
        while let Some(at) = idle.iter().rposition(|(_, upstream)| upstream.worker == me) {
            let (since, mut upstream) = idle.remove(at);
            if now.duration_since(since) > max_idle {
                // Everything below is older still.
                idle.truncate(at);
                return None;
            }
            if upstream.is_usable() {
                return Some(upstream);
            }
        }
        None
    }

    /// Closes idle connections older than `max_idle`, and those the upstream closed.
    pub(crate) fn reap_idle(&self, max_idle: Duration) -> usize {
        let now = Instant::now();
        let mut reaped = 0;
        for shard in self.shards.iter() {
            let Ok(mut idle) = shard.idle.lock() else {
                continue;
            };
            let before = idle.len();
            idle.retain_mut(|(since, upstream)| {
                now.duration_since(*since) <= max_idle && upstream.is_usable()
            });
            reaped += before - idle.len();
        }
        reaped
    }

    /// Idle connections kept now.
    pub(crate) fn idle_len(&self) -> usize {
        self.shards
            .iter()
            .map(|shard| shard.idle.lock().map_or(0, |idle| idle.len()))
            .sum()
    }

    fn put_idle(&self, upstream: Box<Upstream>) {
        if let Ok(mut idle) = self.idle_list().lock()
            && idle.len() < MAX_IDLE
        {
            idle.push((Instant::now(), upstream));
        }
    }
}

impl Upstream {
    /// Whether an idle connection can take a request, found without waiting: one the
    /// upstream closed (or wrote to, unasked: a `408` before an idle close, bytes past an
    /// answer) while idle is dropped now, rather than failing a request or having its
    /// stray bytes taken for the request's answer. `try_read` looks at the socket's
    /// readiness first (no system call when the reactor has seen nothing since the last
    /// `WouldBlock`) and, unlike `poll_read_ready`, never answers "not ready" because the
    /// task has used up its cooperative budget, which would pass any connection.
    fn is_usable(&mut self) -> bool {
        matches!(
            self.stream.try_read(&mut [0u8; 1]),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock
        )
    }

    /// A new connection to `authority`. Its callers box the future: a pooled connection
    /// is the common case, and a request's future should not carry room for a connect.
    async fn connect(
        authority: &str,
        connect_timeout: Duration,
    ) -> Result<Box<Upstream>, UpstreamError> {
        let stream =
            match tokio::time::timeout(connect_timeout, TcpStream::connect(authority)).await {
                Ok(Ok(stream)) => stream,
                Ok(Err(_)) | Err(_) => return Err(UpstreamError::Connect),
            };
        let _ = stream.set_nodelay(true);
        // Boxed: a connection moves in and out of the pool, the exchange and the response
        // body on every request; a pointer moves cheaper.
        Ok(Box::new(Upstream {
            stream,
            read: BytesMut::new(),
            write: BytesMut::new(),
            worker: crate::workers::worker(),
        }))
    }
}

/// Where a request goes and the pool its connection comes from and returns to.
pub(crate) struct Target<'a> {
    pub(crate) authority: &'a str,
    pub(crate) pool: &'a std::sync::Arc<crate::table::Endpoint>,
    pub(crate) connect_timeout: Duration,
    pub(crate) idle_timeout: Duration,
    /// Whether the request's header map may be kept for another message once the request
    /// is sent ([`crate::header_maps`]): true when an HTTP/1 reader built it (at most 100
    /// values). An HTTP/2 request's map may have held thousands of values of one name,
    /// and emptying a map keeps the room they took.
    pub(crate) keep_headers: bool,
}

/// Why an exchange failed, and the request back when it never left the proxy.
pub(crate) struct SendFailure {
    /// What went wrong.
    pub(crate) kind: UpstreamError,
    /// The request, untouched, when sending it again cannot do harm: no connection could
    /// be made, the connection took none of it, or it closed without a byte of answer to
    /// an idempotent request whose body was never read. The caller can send it elsewhere
    /// without having kept a copy of its headers.
    pub(crate) unsent: Option<Request<ProxyBody>>,
}

/// Sends `request` (origin-form URI, `Host` set), with the fields `added` after its own,
/// and returns the response head; the body
/// streams as the caller reads it. A reused connection that turns out closed (the race of
/// an upstream closing an idle connection as a request goes out on it) is replaced by a
/// fresh one, once, when the exchange hands the request back (see
/// [`SendFailure::unsent`]), so nothing is copied beforehand.
///
/// An `async` block, not an `async fn`: an `async fn` moves its arguments into locals and
/// keeps room for both, so the request would take its room twice in every request's future.
#[expect(
    clippy::manual_async_fn,
    reason = "an `async fn` keeps room for its arguments twice"
)]
pub(crate) fn send(
    target: &Target<'_>,
    request: Request<ProxyBody>,
    added: Option<&ForwardingFields>,
) -> impl Future<Output = Result<Response<ProxyBody>, SendFailure>> + Send {
    async move {
        let pooled = target.pool.local.take_idle(target.idle_timeout);
        let reused = pooled.is_some();
        let upstream = match pooled {
            Some(upstream) => upstream,
            None => {
                match Box::pin(Upstream::connect(target.authority, target.connect_timeout)).await {
                    Ok(upstream) => upstream,
                    Err(kind) => {
                        return Err(SendFailure {
                            kind,
                            unsent: Some(request),
                        });
                    }
                }
            }
        };
        let keep = target.keep_headers;
        match exchange::exchange(target.pool.clone(), upstream, request, added, keep).await {
            Err(SendFailure {
                unsent: Some(request),
                ..
            }) if reused => {
                // Handed back, the request is whole and safe to send again: nothing of it
                // reached the upstream, or it is idempotent and its body was never read.
                match Box::pin(Upstream::connect(target.authority, target.connect_timeout)).await {
                    Ok(fresh) => {
                        Box::pin(exchange::exchange(
                            target.pool.clone(),
                            fresh,
                            request,
                            added,
                            keep,
                        ))
                        .await
                    }
                    Err(kind) => Err(SendFailure {
                        kind,
                        unsent: Some(request),
                    }),
                }
            }
            result => result,
        }
    }
}
