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

/// Most idle connections kept per endpoint.
const MAX_IDLE: usize = 1024;

type Conn = Connection<TokioIo<TcpStream>, ProxyBody>;

/// An upstream connection: the handle that sends requests and the connection state that
/// must be polled for anything to move.
pub(crate) struct Upstream {
    sender: SendRequest<ProxyBody>,
    conn: Conn,
}

/// Idle connections of one endpoint, most recently used last.
#[derive(Default)]
pub(crate) struct IdlePool {
    idle: Mutex<Vec<(Instant, Upstream)>>,
}

impl IdlePool {
    /// The most recently used idle connection that is still open and younger than
    /// `max_idle`; older ones are dropped (closed) on the way.
    fn take(&self, max_idle: Duration) -> Option<Upstream> {
        let now = Instant::now();
        loop {
            let (since, mut upstream) = self.idle.lock().ok()?.pop()?;
            if now.duration_since(since) > max_idle {
                // Everything below is older still.
                if let Ok(mut idle) = self.idle.lock() {
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
        let Ok(mut idle) = self.idle.lock() else {
            return 0;
        };
        let before = idle.len();
        idle.retain_mut(|(since, upstream)| {
            now.duration_since(*since) <= max_idle && upstream.is_usable()
        });
        before - idle.len()
    }

    /// Idle connections kept now.
    pub(crate) fn len(&self) -> usize {
        self.idle.lock().map_or(0, |idle| idle.len())
    }

    fn put(&self, upstream: Upstream) {
        if let Ok(mut idle) = self.idle.lock()
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
    ) -> Result<Upstream, UpstreamError> {
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
        Ok(Upstream { sender, conn })
    }
}

/// Where a request goes and the pool its connection comes from and returns to.
pub(crate) struct Target<'a> {
    pub(crate) authority: &'a str,
    pub(crate) pool: &'a std::sync::Arc<crate::table::Endpoint>,
    pub(crate) connect_timeout: Duration,
    pub(crate) idle_timeout: Duration,
}

/// Sends `request` (origin-form URI, `Host` set) and returns the response head; the body
/// streams as the caller reads it. A reused connection that turns out closed before the
/// request could be written is replaced by a fresh one, once, if `replay` can rebuild the
/// request.
pub(crate) async fn send(
    target: &Target<'_>,
    request: Request<ProxyBody>,
    replay: Option<&(dyn Fn() -> Request<ProxyBody> + Sync)>,
) -> Result<Response<ProxyBody>, UpstreamError> {
    let pooled = target.pool.idle.take(target.idle_timeout);
    let reused = pooled.is_some();
    let upstream = match pooled {
        Some(upstream) => upstream,
        None => Upstream::connect(target.authority, target.connect_timeout).await?,
    };
    match exchange(target, upstream, request).await {
        Err(Failure { sent: false, .. }) if reused => {
            let Some(replay) = replay else {
                return Err(UpstreamError::Reset);
            };
            let fresh = Upstream::connect(target.authority, target.connect_timeout).await?;
            exchange(target, fresh, replay()).await.map_err(|f| f.kind)
        }
        result => result.map_err(|f| f.kind),
    }
}

struct Failure {
    kind: UpstreamError,
    /// Whether the request may have reached the upstream.
    sent: bool,
}

/// One request on one connection, driving the connection until the response head arrives.
async fn exchange(
    target: &Target<'_>,
    mut upstream: Upstream,
    request: Request<ProxyBody>,
) -> Result<Response<ProxyBody>, Failure> {
    let mut response = std::pin::pin!(upstream.sender.send_request(request));
    let mut conn_done = false;
    let head = std::future::poll_fn(|cx| {
        if let Poll::Ready(result) = response.as_mut().poll(cx) {
            return Poll::Ready(result);
        }
        if !conn_done && Pin::new(&mut upstream.conn).poll(cx).is_ready() {
            conn_done = true;
            // The connection ended; the response future now holds the error, if any.
            return response.as_mut().poll(cx);
        }
        Poll::Pending
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
        Err(e) => Err(Failure {
            kind: if e.is_timeout() {
                UpstreamError::Timeout
            } else {
                UpstreamError::Reset
            },
            // hyper reports a connection that closed before the request went out as
            // canceled: safe to send again elsewhere.
            sent: !e.is_canceled(),
        }),
    }
}

/// A response body that keeps its upstream connection moving while the client reads,
/// and hands the connection back to the pool when the body is complete.
struct DrivenBody {
    body: Incoming,
    upstream: Option<Upstream>,
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
        // Drive the connection first: it moves bytes from the socket into the body.
        if let Some(upstream) = &mut this.upstream
            && Pin::new(&mut upstream.conn).poll(cx).is_ready()
        {
            this.upstream = None;
        }
        let frame = Pin::new(&mut this.body).poll_frame(cx);
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
