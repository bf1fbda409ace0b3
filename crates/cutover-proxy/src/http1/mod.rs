//! Plain HTTP/1.1 client connections that hold no buffers while they idle.
//!
//! hyper keeps an 8 KiB read and an 8 KiB write buffer (and its dispatcher) for as long as
//! an HTTP/1 connection lives. A front proxy holds many more idle keep-alive connections
//! than busy ones, so [`serve_plain`] runs hyper only while a request is under way: once a
//! connection has been idle for [`PARK_AFTER`] with nothing half-read and nothing left to
//! write, hyper's connection is shut down gracefully *without* closing the socket
//! ([`ParkIo`] ignores the shutdown while parking), its buffers are freed, and the task
//! waits for the socket to become readable holding only the socket, the connection's
//! small [`Activity`] and its service. Bytes hyper had read but not used are kept and fed
//! to the next hyper connection first.
//!
//! The first bytes are peeked: the HTTP/2 preface (h2c with prior knowledge), or a prefix
//! of it too short to tell, goes to hyper's auto connection as before ([`listen::drive`]).
//! TLS connections are not parked (rustls holds its own buffers); the admin listener stays
//! on [`listen::drive`] too.

mod park;

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::TcpStream;
use tokio::sync::watch;

use crate::forward::ProxyBody;
use crate::listen::{self, Activity, ConnTimeouts, Watched};
pub(crate) use park::ParkIo;

/// How long an HTTP/1 connection idles before hyper's buffers are given back. Short
/// enough that idle connections hold no buffers within a blink; long enough that a
/// client sending requests back to back keeps its hyper connection.
pub(crate) const PARK_AFTER: Duration = Duration::from_millis(50);

/// The HTTP/2 connection preface (RFC 9113 §3.4).
const H2_PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// The HTTP/1.1 server builder of the client listeners: the same settings as the HTTP/1
/// half of [`listen::builder`].
pub(crate) fn builder(max_header_bytes: usize) -> http1::Builder {
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .max_buf_size(max_header_bytes.max(8192))
        // `serve_plain` times heads and idle connections, as `listen::drive` does.
        .header_read_timeout(None)
        .keep_alive(true);
    builder
}

/// The HTTP/1 connection type [`serve_plain`] runs while a request is under way.
type Conn<S> = http1::UpgradeableConnection<TokioIo<ParkIo>, S>;

/// How a stretch of hyper serving ended.
enum Stretch<S> {
    /// The connection is over (closed, failed, timed out or upgraded).
    Ended,
    /// The connection idles: hyper's buffers are gone; these are the socket, the bytes
    /// read and not used, and the service.
    Parked(ParkIo, Bytes, S),
}

/// Serves one plain client connection until it ends: HTTP/1.1 with hyper run only while
/// a request is under way, or HTTP/2 (prior knowledge) through `auto`. Timeouts as in
/// [`listen::drive`]: `header_read` for the first head and for a head that started
/// arriving, `keep_alive_idle` after the last request ended.
pub(crate) async fn serve_plain<S>(
    stream: TcpStream,
    http1: &http1::Builder,
    auto: &auto::Builder<TokioExecutor>,
    mut service: S,
    activity: Arc<Activity>,
    timeouts: ConnTimeouts,
    mut shutdown: watch::Receiver<bool>,
) where
    S: hyper::service::Service<
            http::Request<Incoming>,
            Response = http::Response<ProxyBody>,
            Error = Infallible,
        > + Send
        + Unpin
        + 'static,
    S::Future: Send + 'static,
{
    let first_deadline = tokio::time::Instant::now() + timeouts.header_read;
    let Some(http1_bytes) = plain_http1(&stream, first_deadline, &mut shutdown).await else {
        return;
    };
    if !http1_bytes {
        // HTTP/2 with prior knowledge, or too few bytes to tell: hyper's auto connection.
        let io = TokioIo::new(Watched::new(stream, activity.clone()));
        Box::pin(listen::drive(
            auto, io, service, &activity, timeouts, shutdown,
        ))
        .await;
        return;
    }
    let mut io = ParkIo::new(stream, activity.clone());
    loop {
        let conn = Box::new(
            http1
                .serve_connection(TokioIo::new(io), service)
                .with_upgrades(),
        );
        // Boxed, as hyper's connection is: the task's own size is what a parked
        // connection holds.
        match Box::pin(run(conn, &activity, timeouts, &mut shutdown)).await {
            Stretch::Ended => return,
            Stretch::Parked(parked, unread, returned) => {
                io = parked;
                service = returned;
                io.unread(unread);
            }
        }
        if io.has_unread() {
            // A next head had started arriving: serve it at once, and time it from now
            // (`header_read`), so a head left half-sent is neither parked again nor
            // given the whole idle time.
            activity.bytes_arrived();
            continue;
        }
        // Parked: only the socket and the small state are held while waiting.
        let Some(deadline) = activity.deadline(timeouts.header_read, timeouts.keep_alive_idle)
        else {
            return;
        };
        if *shutdown.borrow() {
            return;
        }
        tokio::select! {
            readable = io.readable() => if readable.is_err() { return },
            _ = tokio::time::sleep_until(tokio::time::Instant::from_std(deadline)) => return,
            _ = shutdown.changed() => return,
        }
    }
}

/// Whether the connection's first bytes are not the HTTP/2 preface nor a prefix of it;
/// `None` if none arrive by `deadline`, the peer closes, or the proxy shuts down.
async fn plain_http1(
    stream: &TcpStream,
    deadline: tokio::time::Instant,
    shutdown: &mut watch::Receiver<bool>,
) -> Option<bool> {
    let mut peeked = [0u8; H2_PREFACE.len()];
    tokio::select! {
        peek = stream.peek(&mut peeked) => match peek {
            Ok(0) | Err(_) => None,
            Ok(n) => Some(!H2_PREFACE.starts_with(&peeked[..n])),
        },
        _ = tokio::time::sleep_until(deadline) => None,
        _ = shutdown.changed() => None,
    }
}

/// Runs hyper on the connection until it ends or parks. The watchdog of
/// [`listen::drive`], plus parking: when the connection has been idle for [`PARK_AFTER`]
/// with no head arriving and nothing left to write.
async fn run<S>(
    mut conn: Box<Conn<S>>,
    activity: &Activity,
    timeouts: ConnTimeouts,
    shutdown: &mut watch::Receiver<bool>,
) -> Stretch<S>
where
    S: hyper::service::Service<
            http::Request<Incoming>,
            Response = http::Response<ProxyBody>,
            Error = Infallible,
        > + Send
        + Unpin
        + 'static,
    S::Future: Send + 'static,
{
    let first = match activity.deadline(timeouts.header_read, timeouts.keep_alive_idle) {
        Some(at) if activity.has_served() => at.min(Instant::now() + PARK_AFTER),
        Some(at) => at,
        None => Instant::now() + timeouts.keep_alive_idle,
    };
    let timer = tokio::time::sleep_until(tokio::time::Instant::from_std(first));
    tokio::pin!(timer);
    let mut closing = false;
    loop {
        tokio::select! {
            _ = &mut *conn => return Stretch::Ended,
            _ = activity.changed(), if !closing => {
                if let Some(at) = activity.deadline(timeouts.header_read, timeouts.keep_alive_idle) {
                    let park = Instant::now() + PARK_AFTER;
                    timer.as_mut().reset(tokio::time::Instant::from_std(at.min(park)));
                }
            }
            _ = timer.as_mut() => {
                if closing {
                    return Stretch::Ended;
                }
                let now = Instant::now();
                match activity.deadline(timeouts.header_read, timeouts.keep_alive_idle) {
                    Some(at) if at <= now => return Stretch::Ended,
                    Some(_) if activity.parkable() => {
                        return park(conn, activity, timeouts).await;
                    }
                    Some(at) if activity.has_served() => {
                        // Still writing, or a head is arriving: look again soon.
                        let again = now + PARK_AFTER;
                        timer.as_mut().reset(tokio::time::Instant::from_std(at.min(again)));
                    }
                    Some(at) => timer.as_mut().reset(tokio::time::Instant::from_std(at)),
                    None => timer
                        .as_mut()
                        .reset(tokio::time::Instant::from_std(now + timeouts.keep_alive_idle)),
                }
            }
            changed = shutdown.changed(), if !closing => {
                if changed.is_err() || *shutdown.borrow() {
                    std::pin::Pin::new(&mut *conn).graceful_shutdown();
                    closing = true;
                    // Requests under way get the shutdown grace, which the proxy enforces.
                    timer.as_mut().reset(tokio::time::Instant::now() + Duration::from_secs(3600));
                }
            }
        }
    }
}

/// Shuts hyper's idle connection down without closing the socket and takes the socket,
/// the bytes read and not used, and the service back. hyper closes an idle connection at
/// once; if it was not idle after all, it finishes the exchange first, within
/// `header_read`, or the connection ends.
async fn park<S>(mut conn: Box<Conn<S>>, activity: &Activity, timeouts: ConnTimeouts) -> Stretch<S>
where
    S: hyper::service::Service<
            http::Request<Incoming>,
            Response = http::Response<ProxyBody>,
            Error = Infallible,
        > + Send
        + Unpin
        + 'static,
    S::Future: Send + 'static,
{
    activity.set_parking(true);
    std::pin::Pin::new(&mut *conn).graceful_shutdown();
    let ended = tokio::time::timeout(timeouts.header_read, &mut *conn).await;
    activity.set_parking(false);
    if !matches!(ended, Ok(Ok(()))) || activity.is_busy() {
        return Stretch::Ended;
    }
    match conn.into_parts() {
        // `read_buf` is a view into hyper's whole read buffer: a copy of the unread
        // bytes (none, usually) lets the buffer go.
        Some(parts) => Stretch::Parked(
            parts.io.into_inner(),
            Bytes::copy_from_slice(&parts.read_buf),
            parts.service,
        ),
        None => Stretch::Ended,
    }
}

/// Joins bytes hyper had read and not used (`front`) with those still unread (`back`).
fn join(front: Bytes, back: Bytes) -> Bytes {
    if back.is_empty() {
        return front;
    }
    if front.is_empty() {
        return back;
    }
    let mut joined = BytesMut::with_capacity(front.len() + back.len());
    joined.extend_from_slice(&front);
    joined.extend_from_slice(&back);
    joined.freeze()
}

impl Activity {
    /// Whether hyper's connection can be shut down for idling without losing anything:
    /// a request was served, none is under way, no next head has started arriving, and
    /// the last write went through.
    fn parkable(&self) -> bool {
        self.has_served()
            && !self.is_busy()
            && !self.head_arriving()
            && !self.write_blocked.load(Ordering::Relaxed)
            && !self.is_http2()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unread_bytes_keep_their_order() {
        let joined = join(
            Bytes::from_static(b"GET / HT"),
            Bytes::from_static(b"TP/1.1"),
        );
        assert_eq!(&joined[..], b"GET / HTTP/1.1");
        assert_eq!(&join(Bytes::new(), Bytes::from_static(b"x"))[..], b"x");
        assert_eq!(&join(Bytes::from_static(b"y"), Bytes::new())[..], b"y");
    }
}
