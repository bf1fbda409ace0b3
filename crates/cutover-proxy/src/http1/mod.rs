//! HTTP/1.1 client connections, plain and TLS, that hold no HTTP buffers while they idle.
//!
//! hyper keeps an 8 KiB read and an 8 KiB write buffer (and its dispatcher) for as long as
//! an HTTP/1 connection lives. A front proxy holds many more idle keep-alive connections
//! than busy ones, so [`serve_http1`] runs hyper only while a request is under way: once a
//! connection has been idle for [`PARK_AFTER`] with nothing half-read and nothing left to
//! write, hyper's connection is shut down gracefully *without* closing the stream
//! ([`ParkIo`] ignores the shutdown while parking), its buffers are freed, and the task
//! waits for the stream to become readable holding only the stream, the connection's
//! small [`Activity`] and its service. Bytes hyper had read but not used are kept and fed
//! to the next hyper connection first.
//!
//! Plain connections ([`serve_plain`]) have their first bytes peeked: the HTTP/2 preface
//! (h2c with prior knowledge), or a prefix of it too short to tell, goes to hyper's auto
//! connection ([`listen::drive`]). TLS connections ([`serve_tls`]) go by ALPN: HTTP/2 to
//! [`listen::drive`], HTTP/1.1 parked like plain ones (rustls' session stays: it is the
//! TLS state). The admin listener stays on [`listen::drive`].

mod encode;
mod fast;
mod park;

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::Poll;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::TcpStream;
use tokio::sync::watch;

use crate::forward::{Inbound, ProxyBody};
use crate::listen::{self, Activity, ConnTimeouts, Stop, Tracked, TrackedService, Watched};
pub(crate) use park::{ParkIo, ParkStream};

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
        // One buffer and one `write`: hyper's queue of buffers for `writev` costs more
        // instructions per request than copying a head and a small body (callgrind); a
        // large body is copied frame by frame, each frame one upstream read.
        .writev(false)
        // `serve_http1` times heads and idle connections, as `listen::drive` does.
        .header_read_timeout(None)
        .keep_alive(true);
    builder
}

/// The HTTP/1 connection type [`serve_http1`] runs while a request is under way.
type Conn<S, T> = http1::UpgradeableConnection<TokioIo<ParkIo<T>>, S>;

/// How a stretch of hyper serving ended.
enum Stretch<S, T> {
    /// The connection is over (closed, failed, timed out or upgraded).
    Ended,
    /// The connection idles: hyper's buffers are gone; these are the stream, the bytes
    /// read and not used, and the service.
    Parked(ParkIo<T>, Bytes, S),
}

/// What moves into hyper's connection while a request is under way and comes back when
/// the connection parks.
struct Idle<S, T> {
    io: ParkIo<T>,
    service: S,
}

/// What a client connection takes from its listener, besides its stream, its service and
/// the listener's drain token: the connection builders, the timeouts and the shutdown
/// signals.
pub(crate) struct Listening {
    pub(crate) http1: Arc<http1::Builder>,
    pub(crate) auto: Arc<auto::Builder<TokioExecutor>>,
    pub(crate) timeouts: ConnTimeouts,
    pub(crate) shutdown: watch::Receiver<bool>,
    pub(crate) stop: Arc<Stop>,
}

impl Listening {
    /// The context of a connection whose requests are marked on `activity`.
    pub(crate) fn connection(self, activity: Arc<Activity>) -> ConnContext {
        ConnContext {
            http1: self.http1,
            auto: self.auto,
            activity,
            timeouts: self.timeouts,
            shutdown: self.shutdown,
            stop: self.stop,
        }
    }
}

/// What a client connection holds while it is served: what it took from its listener
/// ([`Listening`]) and its [`Activity`].
pub(crate) struct ConnContext {
    pub(crate) http1: Arc<http1::Builder>,
    pub(crate) auto: Arc<auto::Builder<TokioExecutor>>,
    pub(crate) activity: Arc<Activity>,
    pub(crate) timeouts: ConnTimeouts,
    pub(crate) shutdown: watch::Receiver<bool>,
    pub(crate) stop: Arc<Stop>,
}

/// The service every client connection runs: the request path, marking each request
/// under way on the connection's [`Activity`]. Requests come from hyper, or whole from
/// the proxy's own reader ([`ConnService::call_read`]).
pub(crate) trait ConnService:
    hyper::service::Service<
        http::Request<Incoming>,
        Response = http::Response<Tracked>,
        Error = Infallible,
        Future: Send + 'static,
    > + Send
    + Unpin
    + 'static
{
    /// Serves a request [`fast`] read whole, as [`hyper::service::Service::call`] serves
    /// one hyper read.
    fn call_read(&self, request: http::Request<Inbound>) -> Self::Future;
}

impl<F, Fut> ConnService for TrackedService<F, Inbound>
where
    F: Fn(http::Request<Inbound>) -> Fut + Send + Unpin + 'static,
    Fut: Future<Output = Result<http::Response<ProxyBody>, Infallible>> + Send + 'static,
{
    fn call_read(&self, request: http::Request<Inbound>) -> Self::Future {
        TrackedService::call_read(self, request)
    }
}

/// Serves one plain client connection until it ends: HTTP/1.1 with hyper run only while
/// a request is under way ([`serve_http1`]), or HTTP/2 (prior knowledge) through `auto`.
/// Timeouts as in [`listen::drive`]: `header_read` for the first head and for a head that
/// started arriving, `keep_alive_idle` after the last request ended. `token` is held until
/// the connection ends (the listener's drain waits for it).
///
/// The returned future is the connection's whole task, so its size is what every parked
/// connection holds: it is one `async` block with no wrapper around it (an `async fn`
/// would keep its arguments twice), and the steps that need room only briefly (sniffing
/// the protocol, serving with hyper, HTTP/2) are boxed for as long as they run. What
/// stays is the socket, the small per-connection state and the parked wait
/// ([`ParkedWait`]).
pub(crate) fn serve_plain<S: ConnService, K: Send + 'static>(
    context: ConnContext,
    stream: TcpStream,
    service: S,
    token: K,
) -> impl Future<Output = ()> + Send + 'static {
    let mut context = context;
    let mut idle = Some(Idle {
        io: ParkIo::new(stream, context.activity.clone()),
        service,
    });
    async move {
        let _token = token;
        let Some(sniffing) = &idle else { return };
        let first_deadline = tokio::time::Instant::now() + context.timeouts.header_read;
        let sniff = plain_http1(sniffing.io.stream(), first_deadline, &mut context.shutdown);
        let Some(http1_bytes) = Box::pin(sniff).await else {
            return;
        };
        if http1_bytes {
            serve_http1(&mut context, &mut idle).await;
            return;
        }
        let Some(Idle { io, service }) = idle.take() else {
            return;
        };
        // HTTP/2 with prior knowledge, or too few bytes to tell: hyper's auto connection.
        Box::pin(serve_auto(context, io.into_stream(), service)).await;
    }
}

/// Serves a connection through hyper's auto connection (HTTP/2, or HTTP/1.1 told by the
/// absence of the HTTP/2 preface) under [`listen::drive`]'s watchdog, not parked. Its
/// callers box it: it needs room only on connections that take this way.
async fn serve_auto<I, S>(context: ConnContext, stream: I, service: S)
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    S: ConnService,
{
    let io = TokioIo::new(Watched::new(stream, context.activity.clone()));
    let ConnContext {
        auto,
        activity,
        timeouts,
        shutdown,
        ..
    } = context;
    Box::pin(listen::drive(
        &auto, io, service, &activity, timeouts, shutdown,
    ))
    .await;
}

/// Serves one TLS client connection until it ends: the handshake (within
/// `tls_handshake`), then HTTP/2 if ALPN chose it, or HTTP/1.1 parked while it idles as
/// plain connections are ([`serve_http1`]): hyper's buffers are freed, rustls' session
/// stays. Timeouts and `token` as in [`serve_plain`]; the connection's [`Activity`] (and
/// with it the header timeout) is made when the handshake ends (a connection that never
/// completes one costs none), and `service` makes the service that marks requests on it.
pub(crate) fn serve_tls<F, S, K>(
    listening: Listening,
    acceptor: tokio_rustls::TlsAcceptor,
    stream: TcpStream,
    service: F,
    token: K,
) -> impl Future<Output = ()> + Send + 'static
where
    F: FnOnce(Arc<Activity>) -> S + Send + 'static,
    S: ConnService,
    K: Send + 'static,
{
    // As in `serve_plain`, one `async` block with no wrapper around it.
    let tls_handshake = listening.timeouts.tls_handshake;
    async move {
        let _token = token;
        // Boxed at once: a TLS session is large, and this task should hold it once. The
        // acceptor goes with the handshake.
        let handshake =
            async move { tokio::time::timeout(tls_handshake, acceptor.accept(stream)).await };
        let stream = match Box::pin(handshake).await {
            Ok(Ok(stream)) => Box::new(stream),
            _ => return,
        };
        let mut context = listening.connection(Activity::new());
        let service = service(context.activity.clone());
        let alpn = stream.get_ref().1.alpn_protocol();
        if alpn != Some(b"http/1.1") {
            // HTTP/2 by ALPN; or no ALPN, where hyper's auto connection tells HTTP/2 by
            // its preface, as on a plain listener (not parked).
            if alpn == Some(b"h2") {
                context.activity.mark_http2();
            }
            Box::pin(serve_auto(context, stream, service)).await;
            return;
        }
        let mut idle = Some(Idle {
            io: ParkIo::new(stream, context.activity.clone()),
            service,
        });
        serve_http1(&mut context, &mut idle).await;
    }
}

/// The future `make` returns, pinned in a box allocated before the future is made. That
/// order lets the optimiser build the future in the box (not guaranteed; seen in release
/// builds), where `Box::pin(future)` builds it on the stack and copies it in: 2.7 KiB for
/// the request path's future, about 250 instructions per request. For the futures boxed
/// once per request on the proxy's own HTTP/1 path.
#[inline(always)]
fn pinned_in_box<F>(make: impl FnOnce() -> F) -> Pin<Box<F>> {
    Box::into_pin(Box::write(Box::new_uninit(), make()))
}

/// Serves HTTP/1.1 on a connection until it ends. A request that arrives whole and
/// declares no body is read and answered here ([`fast`]), holding no buffers between
/// requests; anything else goes to hyper, which runs until the connection idles again
/// ([`run`]). In between, only the stream and the small state are held, waiting for the
/// next bytes ([`ParkedWait`]). Takes the connection's parts by reference, so that its
/// caller's task keeps them once and this future adds only the wait.
async fn serve_http1<S: ConnService, T: ParkStream>(
    context: &mut ConnContext,
    idle: &mut Option<Idle<S, T>>,
) {
    // Taken before `Stop::is_fired` is first looked at, so that no `fire` is missed.
    let stop = context.stop.clone();
    let mut stopped = std::pin::pin!(stop.notified());
    // Registered at the first wait and moved on at each: to a later deadline (the next
    // idle time) that costs an atomic write, not a timer registration.
    let mut idle_timer = std::pin::pin!(tokio::time::sleep(context.timeouts.keep_alive_idle));
    // Whether the connection woke from a wait: bytes arrived that may start a next head.
    let mut woke = false;
    loop {
        let Some(parts) = idle.as_mut() else {
            return;
        };
        // What the read gave, and for a request read whole, how the connection goes on
        // after its answer. The request moves into a boxed future before anything is
        // awaited, so that this task keeps no room for it; the block ends that future's
        // borrow of the connection.
        let step = {
            let answering = match read_next(&mut parts.io).await {
                Some(fast::Read::Request(request)) => {
                    let stop = &context.stop;
                    let shutdown = &context.shutdown;
                    let stopping = move || stop.is_fired() || *shutdown.borrow();
                    Ok(pinned_in_box(|| {
                        fast::answer(
                            &mut parts.io,
                            &parts.service,
                            request,
                            stopping,
                            context.timeouts.keep_alive_idle,
                        )
                    }))
                }
                Some(fast::Read::Hyper) => Err(Step::Hyper),
                Some(fast::Read::EmptyLines) => Err(Step::EmptyLines),
                Some(fast::Read::Closed) => Err(Step::Closed),
                None => Err(Step::NothingYet),
            };
            match answering {
                Ok(answering) => Step::Answered(answering.await),
                Err(step) => step,
            }
        };
        match step {
            // Dropped without a clean close: the client sees its answer cut off.
            Step::Answered(fast::Answered::Abort) => return,
            // The answer ended the connection, or the client closed its side (or the
            // connection failed): closed on ours, as hyper does (over TLS with
            // `close_notify`).
            Step::Answered(fast::Answered::Close) | Step::Closed => {
                if let Some(parts) = idle.as_mut() {
                    Box::pin(close(&mut parts.io)).await;
                }
                return;
            }
            // A head that was not read whole (or, over TLS, bytes that woke the connection
            // but made no request yet: a record not yet whole) has started arriving: it
            // gets `header_read` from now. A request read whole needs no such time; nor
            // does a plain connection woken with nothing to read, nor empty lines.
            Step::Hyper => context.activity.bytes_arrived(),
            Step::NothingYet if T::PARTIAL_RECORDS && woke => context.activity.bytes_arrived(),
            // A client can keep the socket readable with empty lines alone, and the wait
            // looks at readability first: such a connection is closed at its deadline here.
            Step::EmptyLines if context.activity.is_past_deadline(context.timeouts) => {
                if let Some(parts) = idle.as_mut() {
                    Box::pin(close(&mut parts.io)).await;
                }
                return;
            }
            Step::Answered(fast::Answered::KeepAlive) | Step::NothingYet | Step::EmptyLines => {}
        }
        woke = false;
        if step == Step::Hyper && !serve_with_hyper(context, idle).await {
            return;
        }
        let Some(parked) = idle.as_mut() else {
            return;
        };
        let activity = &context.activity;
        let timeouts = context.timeouts;
        if parked.io.has_unread() {
            // A next head had started arriving: serve it at once. If it is not whole, it is
            // timed from now (`header_read`, above), so a head left half-sent is neither
            // parked again nor given the whole idle time.
            continue;
        }
        // Parked: only the stream and the small state are held while waiting.
        let Some(deadline) = activity.deadline(timeouts.header_read, timeouts.keep_alive_idle)
        else {
            return;
        };
        if stop.is_fired() || *context.shutdown.borrow() {
            Box::pin(close(&mut parked.io)).await;
            return;
        }
        idle_timer
            .as_mut()
            .reset(tokio::time::Instant::from_std(deadline));
        let wait = ParkedWait {
            io: &parked.io,
            deadline: idle_timer.as_mut(),
            stop: stopped.as_mut(),
        };
        if !wait.await {
            // Boxed, as the other steps that need room only briefly.
            Box::pin(close(&mut parked.io)).await;
            return;
        }
        woke = true;
    }
}

/// What one turn of [`serve_http1`] did with the connection's next bytes.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Step {
    /// A request read whole was answered; how the connection goes on.
    Answered(fast::Answered),
    /// The bytes are hyper's to serve.
    Hyper,
    /// Only empty lines came.
    EmptyLines,
    /// The client closed the connection, or it failed.
    Closed,
    /// Nothing to read yet.
    NothingYet,
}

/// What the connection's next read gives ([`fast::read`]): `None` if there is nothing to
/// read yet (over TLS, a record not yet whole).
fn read_next<T: ParkStream>(io: &mut ParkIo<T>) -> impl Future<Output = Option<fast::Read>> {
    std::future::poll_fn(|cx| match fast::read(io, cx) {
        Poll::Ready(read) => Poll::Ready(Some(read)),
        Poll::Pending => Poll::Ready(None),
    })
}

/// Serves the connection with hyper until it parks (`true`: its parts are back in
/// `idle`) or ends (`false`).
async fn serve_with_hyper<S: ConnService, T: ParkStream>(
    context: &mut ConnContext,
    idle: &mut Option<Idle<S, T>>,
) -> bool {
    let Some(Idle { io, service }) = idle.take() else {
        return false;
    };
    let conn = Box::new(
        context
            .http1
            .serve_connection(TokioIo::new(io), service)
            .with_upgrades(),
    );
    // Boxed, as hyper's connection is: the task's own size is what a parked connection
    // holds.
    let served = run(
        conn,
        &context.activity,
        context.timeouts,
        &mut context.shutdown,
    );
    match Box::pin(served).await {
        Stretch::Parked(mut io, unread, service) => {
            io.unread(unread);
            *idle = Some(Idle { io, service });
            true
        }
        Stretch::Ended => false,
    }
}

/// How long closing a parked connection may take: a client that reads nothing cannot
/// hold its task longer.
const CLOSE_GRACE: Duration = Duration::from_secs(1);

/// Closes a parked connection the proxy ends (it idled past its deadline, or the proxy is
/// shutting down): over TLS with the `close_notify` alert first, so that the client can
/// tell a clean close from a connection cut mid-session; over TCP with a FIN, as dropping
/// it would. A stream that failed already fails here at once.
async fn close<T: ParkStream>(io: &mut ParkIo<T>) {
    use tokio::io::AsyncWriteExt as _;
    let _ = tokio::time::timeout(CLOSE_GRACE, io.shutdown()).await;
}

/// A parked connection's wait: until its socket has something to read (`true`), or
/// until its idle deadline passes, the proxy shuts down or the socket fails (`false`).
/// Hand-written rather than `select!`ed, and readability is polled without a future of
/// its own, because every parked connection holds this state. The timer and the shutdown
/// waiter are the connection's own, kept from one wait to the next: a request costs no
/// timer registration, and the waiter is not added to the listener's list and taken off it
/// again at every wait.
struct ParkedWait<'a, 'b, T> {
    io: &'a ParkIo<T>,
    deadline: Pin<&'a mut tokio::time::Sleep>,
    stop: Pin<&'a mut tokio::sync::futures::Notified<'b>>,
}

impl<T: ParkStream> Future for ParkedWait<'_, '_, T> {
    type Output = bool;

    fn poll(mut self: Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> Poll<bool> {
        let this = &mut *self;
        if let Poll::Ready(readable) = this.io.poll_readable(cx) {
            return Poll::Ready(readable.is_ok());
        }
        if this.deadline.as_mut().poll(cx).is_ready() || this.stop.as_mut().poll(cx).is_ready() {
            return Poll::Ready(false);
        }
        Poll::Pending
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

/// Runs hyper on the connection until it ends or parks: the watchdog of
/// [`listen::drive`], plus parking when the connection has been idle for [`PARK_AFTER`]
/// with no head arriving and nothing left to write.
///
/// Unlike [`listen::drive`], this watchdog is not woken when a request starts or ends or
/// a head starts arriving: those happen inside hyper's poll of this very task, so each
/// would poll the whole connection once more, three times per request. It looks at the
/// connection's [`Activity`] on a timer instead: at its deadline or [`PARK_AFTER`] after
/// it went idle, whichever comes first, and, while there is nothing to do yet (a request
/// under way, none started), again after [`PARK_AFTER`], doubling to [`RECHECK_MAX`] (or
/// half the shorter of `header_read` and `keep_alive_idle`, if that is less): a busy
/// connection costs a wake-up a second at most. After a request that outlasted that
/// pause, the idle deadline is kept to within it: a connection idling past its deadline
/// is closed, at the latest, when the watchdog next looks.
async fn run<S: ConnService, T: ParkStream>(
    mut conn: Box<Conn<S, T>>,
    activity: &Activity,
    timeouts: ConnTimeouts,
    shutdown: &mut watch::Receiver<bool>,
) -> Stretch<S, T> {
    let mut pause = PARK_AFTER;
    // Short timeouts are looked at more often, so that they are kept to within half.
    let longest_pause = RECHECK_MAX
        .min(timeouts.header_read.min(timeouts.keep_alive_idle) / 2)
        .max(PARK_AFTER);
    let timer =
        tokio::time::sleep_until(tokio::time::Instant::from_std(Instant::now() + PARK_AFTER));
    tokio::pin!(timer);
    let mut closing = false;
    loop {
        tokio::select! {
            _ = &mut *conn => return Stretch::Ended,
            _ = timer.as_mut() => {
                if closing {
                    return Stretch::Ended;
                }
                let now = Instant::now();
                let next = match activity.deadline(timeouts.header_read, timeouts.keep_alive_idle) {
                    Some(at) if at <= now => return Stretch::Ended,
                    Some(at) if activity.has_served() && !activity.is_busy() && !activity.head_arriving() => {
                        let parks_at = activity.idle_since() + PARK_AFTER;
                        if parks_at > now {
                            // Idle, not for long enough yet: look again when it has been.
                            pause = PARK_AFTER;
                            at.min(parks_at)
                        } else if activity.parkable() {
                            return park(conn, activity, timeouts).await;
                        } else {
                            // The last write is still under way.
                            at.min(now + pause)
                        }
                    }
                    // A head arriving, or none yet: at its deadline, or sooner to see the
                    // request start.
                    Some(at) => at.min(now + pause),
                    // A request under way: no deadline.
                    None => now + pause,
                };
                pause = (pause * 2).min(longest_pause);
                timer.as_mut().reset(tokio::time::Instant::from_std(next));
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

/// The longest the watchdog of [`run`] waits between two looks at a connection that has
/// nothing for it to do yet.
const RECHECK_MAX: Duration = Duration::from_secs(1);

/// Shuts hyper's idle connection down without closing the socket and takes the socket,
/// the bytes read and not used, and the service back. hyper closes an idle connection at
/// once; if it was not idle after all, it finishes the exchange first, within
/// `header_read`, or the connection ends.
async fn park<S: ConnService, T: ParkStream>(
    mut conn: Box<Conn<S, T>>,
    activity: &Activity,
    timeouts: ConnTimeouts,
) -> Stretch<S, T> {
    activity.set_parking(true);
    std::pin::Pin::new(&mut *conn).graceful_shutdown();
    let ended = tokio::time::timeout(timeouts.header_read, &mut *conn).await;
    activity.set_parking(false);
    let closing = activity.closing.load(Ordering::Relaxed);
    if !matches!(ended, Ok(Ok(()))) || activity.is_busy() || closing {
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
    /// Whether the connection's deadline ([`Activity::deadline`]) has passed.
    fn is_past_deadline(&self, timeouts: ConnTimeouts) -> bool {
        self.deadline(timeouts.header_read, timeouts.keep_alive_idle)
            .is_some_and(|at| at <= Instant::now())
    }

    /// Whether hyper's connection can be shut down for idling without losing anything:
    /// a request was served, none is under way, no next head has started arriving, and
    /// the last write went through.
    fn parkable(&self) -> bool {
        self.has_served()
            && !self.is_busy()
            && !self.head_arriving()
            && !self.write_blocked.load(Ordering::Relaxed)
            && !self.closing.load(Ordering::Relaxed)
            && !self.is_http2()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Both ends of a TCP connection on loopback: the client's, then the accepted one.
    pub(super) async fn loopback_pair() -> (TcpStream, TcpStream) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let address = listener.local_addr().expect("address");
        let client = TcpStream::connect(address).await.expect("connect");
        let (accepted, _) = listener.accept().await.expect("accept");
        (client, accepted)
    }

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

    /// What a parked connection holds is, first of all, its task: the future
    /// [`serve_plain`] returns. It was 1,104 bytes in a release build when the protocol
    /// sniffing, the parked wait's `select!` and the arguments of an `async fn` all took
    /// room in it, and is about 420 now; this keeps it from growing back unnoticed (the
    /// bound holds for a debug build, whose futures are larger).
    #[tokio::test]
    async fn a_plain_connection_is_a_small_task() {
        let (_client, stream) = loopback_pair().await;
        let (_shutdown_tx, shutdown) = watch::channel(false);
        let activity = Activity::new();
        let answer = |_request| async { Ok(http::Response::new(crate::forward::full("ok"))) };
        let service = listen::tracked(activity.clone(), answer);
        let context = ConnContext {
            http1: Arc::new(builder(8192)),
            auto: Arc::new(auto::Builder::new(TokioExecutor::new())),
            activity,
            timeouts: ConnTimeouts {
                tls_handshake: Duration::from_secs(1),
                header_read: Duration::from_secs(1),
                keep_alive_idle: Duration::from_secs(1),
            },
            shutdown,
            stop: Arc::new(Stop::default()),
        };
        let task = serve_plain(context, stream, service, ());
        let size = std::mem::size_of_val(&task);
        assert!(size <= 512, "a plain connection's task is {size} bytes");
    }
}
