//! Upstream HTTP/1.1 connections, pooled per endpoint and driven inline.
//!
//! A pooled client that runs every upstream connection as a task of its own (hyper-util's
//! legacy client) makes each request cross from the client connection's task to the
//! upstream connection's task and back: two wake-ups, often a thread hop. Here the request
//! that holds an upstream connection drives it itself: the connection is polled from the
//! request's future until the response head arrives, then from the response body's
//! `poll_frame` while the body streams to the client, and goes back to its endpoint's idle
//! list when the body ends with the connection reusable.

use std::future::Future;
use std::pin::Pin;
use std::sync::Mutex;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::BodyExt;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::client::conn::http1::{Connection, SendRequest};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::forward::{BoxError, ProxyBody};
use crate::metrics::UpstreamError;

/// Most idle connections kept per endpoint and worker.
const MAX_IDLE: usize = 1024;

type Conn = Connection<TokioIo<TcpStream>, ProxyBody>;

/// An upstream connection: the handle that sends requests and the connection state that
/// must be polled for anything to move.
pub(crate) struct Upstream {
    sender: SendRequest<ProxyBody>,
    conn: Conn,
}

/// Idle connections of one endpoint, one list per worker thread (see
/// [`crate::workers::shard`]), most recently used last. A connection is driven by the
/// runtime that made it (its socket is registered with that runtime's reactor), so a
/// worker only ever takes back its own; a worker's list is locked by that worker alone on
/// the request path (and by the reaper once a second).
pub(crate) struct IdlePool {
    shards: [Mutex<IdleList>; crate::workers::SHARDS],
}

/// One worker's idle connections of an endpoint, each with the time it went idle.
type IdleList = Vec<(Instant, Box<Upstream>)>;

impl Default for IdlePool {
    fn default() -> IdlePool {
        IdlePool {
            shards: std::array::from_fn(|_| Mutex::new(Vec::new())),
        }
    }
}

impl IdlePool {
    /// This thread's idle list.
    fn mine(&self) -> &Mutex<IdleList> {
        &self.shards[crate::workers::shard()]
    }

    /// The most recently used idle connection that is still open and younger than
    /// `max_idle`; older ones are dropped (closed) on the way.
    fn take(&self, max_idle: Duration) -> Option<Box<Upstream>> {
        let now = Instant::now();
        let mine = self.mine();
        loop {
            let (since, mut upstream) = mine.lock().ok()?.pop()?;
            if now.duration_since(since) > max_idle {
                // Everything below is older still.
                if let Ok(mut idle) = mine.lock() {
                    idle.clear();
                }
                return None;
            }
            if upstream.is_usable() {
                return Some(upstream);
            }
        }
    }

    /// Closes idle connections older than `max_idle`, and those the upstream closed.
    pub(crate) fn reap(&self, max_idle: Duration) -> usize {
        let now = Instant::now();
        let mut reaped = 0;
        for shard in &self.shards {
            let Ok(mut idle) = shard.lock() else {
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
    pub(crate) fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|shard| shard.lock().map_or(0, |idle| idle.len()))
            .sum()
    }

    fn put(&self, upstream: Box<Upstream>) {
        if let Ok(mut idle) = self.mine().lock()
            && idle.len() < MAX_IDLE
        {
            idle.push((Instant::now(), upstream));
        }
    }
}

impl Upstream {
    /// Whether an idle connection can take a request: polls it once, without waiting, so
    /// a connection the upstream closed while idle is noticed now rather than on use.
    fn is_usable(&mut self) -> bool {
        let mut cx = Context::from_waker(Waker::noop());
        if Pin::new(&mut self.conn).poll(&mut cx).is_ready() {
            return false;
        }
        matches!(self.sender.poll_ready(&mut cx), Poll::Ready(Ok(())))
    }

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
        let (sender, conn) = hyper::client::conn::http1::Builder::new()
            .handshake(TokioIo::new(stream))
            .await
            .map_err(|_| UpstreamError::Connect)?;
        // Boxed: a connection moves in and out of the pool, the exchange and the response
        // body on every request; a pointer moves cheaper than hyper's connection state.
        Ok(Box::new(Upstream { sender, conn }))
    }
}

/// Where a request goes and the pool its connection comes from and returns to.
pub(crate) struct Target<'a> {
    pub(crate) authority: &'a str,
    pub(crate) pool: &'a std::sync::Arc<crate::table::Endpoint>,
    pub(crate) connect_timeout: Duration,
    pub(crate) idle_timeout: Duration,
}

/// Why an exchange failed, and the request back when it never left the proxy.
pub(crate) struct SendFailure {
    /// What went wrong.
    pub(crate) kind: UpstreamError,
    /// The request, untouched, when it was not sent (no connection could be made, or a
    /// pooled one turned out closed): the caller can send it elsewhere without having kept
    /// a copy of its headers.
    pub(crate) unsent: Option<Request<ProxyBody>>,
}

/// Sends `request` (origin-form URI, `Host` set) and returns the response head; the body
/// streams as the caller reads it. A reused connection that turns out closed before the
/// request could be written is replaced by a fresh one, once, when `replayable` (hyper
/// hands the unsent request back, so nothing is copied beforehand).
pub(crate) async fn send(
    target: &Target<'_>,
    request: Request<ProxyBody>,
    replayable: bool,
) -> Result<Response<ProxyBody>, SendFailure> {
    let pooled = target.pool.idle.take(target.idle_timeout);
    let reused = pooled.is_some();
    let upstream = match pooled {
        Some(upstream) => upstream,
        None => match Upstream::connect(target.authority, target.connect_timeout).await {
            Ok(upstream) => upstream,
            Err(kind) => {
                return Err(SendFailure {
                    kind,
                    unsent: Some(request),
                });
            }
        },
    };
    match exchange(target, upstream, request).await {
        Err(SendFailure {
            unsent: Some(request),
            ..
        }) if reused => {
            if !replayable {
                return Err(SendFailure {
                    kind: UpstreamError::Reset,
                    unsent: Some(request),
                });
            }
            match Upstream::connect(target.authority, target.connect_timeout).await {
                Ok(fresh) => exchange(target, fresh, request).await,
                Err(kind) => Err(SendFailure {
                    kind,
                    unsent: Some(request),
                }),
            }
        }
        result => result,
    }
}

/// One request on one connection, driving the connection until the response head arrives.
async fn exchange(
    target: &Target<'_>,
    mut upstream: Box<Upstream>,
    request: Request<ProxyBody>,
) -> Result<Response<ProxyBody>, SendFailure> {
    let mut response = std::pin::pin!(upstream.sender.try_send_request(request));
    let mut conn_done = false;
    let head = std::future::poll_fn(|cx| {
        // The connection first: the turn that reads the answer hands its head over, so
        // the head is taken in that same poll rather than after one more wake-up of the
        // task (and one more turn of the client connection's dispatcher).
        if !conn_done && Pin::new(&mut upstream.conn).poll(cx).is_ready() {
            // The connection ended; the response future now holds the error, if any.
            conn_done = true;
        }
        response.as_mut().poll(cx)
    })
    .await;
    match head {
        Ok(response) => {
            let (parts, body) = response.into_parts();
            let driven = DrivenBody {
                body,
                upstream: (!conn_done).then_some(upstream),
                pool: target.pool.clone(),
            };
            Ok(Response::from_parts(parts, driven.boxed()))
        }
        Err(mut e) => {
            // hyper gives the request back when the connection closed before it went
            // out: safe to send again elsewhere.
            let unsent = e.take_message();
            Err(SendFailure {
                kind: if e.error().is_timeout() {
                    UpstreamError::Timeout
                } else {
                    UpstreamError::Reset
                },
                unsent,
            })
        }
    }
}

/// A response body that keeps its upstream connection moving while the client reads,
/// and hands the connection back to the pool when the body is complete.
struct DrivenBody {
    body: Incoming,
    upstream: Option<Box<Upstream>>,
    pool: std::sync::Arc<crate::table::Endpoint>,
}

impl DrivenBody {
    /// The body is complete: give the connection back to its pool. One more turn lets the
    /// connection notice the message ended; whether it can take another request is
    /// checked when it is taken from the pool.
    fn release(&mut self, cx: &mut Context<'_>) {
        if let Some(mut upstream) = self.upstream.take()
            && Pin::new(&mut upstream.conn).poll(cx).is_pending()
        {
            self.pool.idle.put(upstream);
        }
    }
}

impl Drop for DrivenBody {
    /// A server that knows the body's length stops reading at its last byte, without the
    /// final `poll_frame`: a complete body dropped still returns its connection.
    fn drop(&mut self) {
        if self.upstream.is_some() && self.body.is_end_stream() {
            self.release(&mut Context::from_waker(Waker::noop()));
        }
    }
}

impl Body for DrivenBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        // The body first: a small body is there already when the head is, and driving
        // the connection for nothing costs a whole turn of hyper's dispatcher.
        let mut frame = Pin::new(&mut this.body).poll_frame(cx);
        if frame.is_pending() {
            // Drive the connection: it moves bytes from the socket into the body.
            if let Some(upstream) = &mut this.upstream
                && Pin::new(&mut upstream.conn).poll(cx).is_ready()
            {
                this.upstream = None;
            }
            frame = Pin::new(&mut this.body).poll_frame(cx);
        }
        if matches!(frame, Poll::Ready(None)) || this.body.is_end_stream() {
            this.release(cx);
        }
        frame.map(|f| f.map(|r| r.map_err(BoxError::from)))
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}
