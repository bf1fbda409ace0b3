//! Client listeners: accept (with back-off on errors), optional TLS, HTTP/1.1 and HTTP/2
//! (h2c with prior knowledge, or ALPN over TLS), a connection limit, and graceful
//! shutdown. The admin listener reuses the same connection machinery.
//!
//! Client connections are served by [`crate::http1::serve_plain`] and
//! [`crate::http1::serve_tls`], which park idle HTTP/1 keep-alive connections without
//! hyper's buffers and time them as [`drive`] does; HTTP/2 and admin connections run under
//! [`drive`].
//!
//! Every connection, admin ones included, is watched: it must
//! deliver its first request head within `timeouts.headerRead` of opening (or of its TLS
//! handshake, itself bounded by `timeouts.tlsHandshake`), which bounds the HTTP/1-or-2
//! detection and slow or silent clients; and it is closed `timeouts.keepAliveIdle` after
//! its last request ended (HTTP/1 keep-alive and idle HTTP/2 alike). HTTP/2 connections
//! are also pinged (`timeouts.http2KeepAlive*`). A connection's slot under
//! `maxConnections` is held by its tunnel after an upgrade, so tunnels count too.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use cutover_core::Backoff;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, watch};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::config::{ListenerConfig, TlsConfig};
use crate::forward::ProxyBody;
use crate::observed::{IoObserver, Observed};
use crate::{Shared, StartError, forward};

/// A bound listener.
pub(crate) struct Bound {
    pub(crate) listener: TcpListener,
    pub(crate) local_addr: SocketAddr,
    tls: Option<TlsAcceptor>,
}

impl Bound {
    /// A listener bound elsewhere (a worker's `SO_REUSEPORT` socket), with its TLS acceptor.
    pub(crate) fn new(
        listener: TcpListener,
        local_addr: SocketAddr,
        tls: Option<TlsAcceptor>,
    ) -> Bound {
        Bound {
            listener,
            local_addr,
            tls,
        }
    }
}

/// Binds a plain TCP listener.
pub(crate) async fn bind_plain(address: SocketAddr) -> Result<Bound, StartError> {
    let listener = TcpListener::bind(address)
        .await
        .map_err(|source| StartError::Bind { address, source })?;
    let local_addr = listener
        .local_addr()
        .map_err(|source| StartError::Bind { address, source })?;
    Ok(Bound {
        listener,
        local_addr,
        tls: None,
    })
}

/// Binds a client listener, loading its certificate if it has one.
pub(crate) async fn bind(config: &ListenerConfig) -> Result<Bound, StartError> {
    let mut bound = bind_plain(config.address).await?;
    if let Some(tls) = &config.tls {
        bound.tls = Some(acceptor(tls)?);
    }
    Ok(bound)
}

/// The TLS acceptor of a listener with a certificate.
pub(crate) fn acceptor(tls: &TlsConfig) -> Result<TlsAcceptor, StartError> {
    let fail = |message: String| StartError::Tls {
        cert: tls.cert_file.display().to_string(),
        key: tls.key_file.display().to_string(),
        message,
    };
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&tls.cert_file)
        .map_err(|e| fail(format!("cannot read the certificate: {e}")))?
        .collect::<Result<_, _>>()
        .map_err(|e| fail(format!("cannot parse the certificate: {e}")))?;
    if certs.is_empty() {
        return Err(fail("the certificate file holds no certificate".into()));
    }
    let key = PrivateKeyDer::from_pem_file(&tls.key_file)
        .map_err(|e| fail(format!("cannot read the key: {e}")))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| fail(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| fail(e.to_string()))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// One client connection, as the request path sees it.
pub(crate) struct ConnInfo {
    /// The proxy's shared state, reached through the connection by its requests.
    pub(crate) shared: Arc<Shared>,
    /// The peer's address.
    pub(crate) peer: SocketAddr,
    /// Whether the peer is in `limits.trustedProxies`, so its forwarding headers are kept.
    pub(crate) trusted: bool,
    /// The peer's `X-Forwarded-For` and `Forwarded` values, worked out once.
    pub(crate) forwarding: forward::PeerForwarding,
    /// The connection's place under `maxConnections`, held by the connection and by any
    /// tunnel it was upgraded to: freed when the last of them ends.
    _slot: OwnedSemaphorePermit,
}

/// Whether a connection has a request under way, and since when it has not: what the
/// idle watchdog of [`drive`] reads.
pub(crate) struct Activity {
    base: Instant,
    /// Requests started and not yet answered in full (the response body is dropped).
    active: AtomicUsize,
    /// Whether any request started on this connection.
    served: AtomicBool,
    /// Milliseconds after `base` at which the last request ended.
    idle_since: AtomicU64,
    /// Milliseconds after `base` at which the first bytes of the next HTTP/1 request
    /// head arrived on an idle connection; [`NOT_STARTED`] if none have.
    head_started: AtomicU64,
    /// Whether the connection speaks HTTP/2 (its bytes while idle are pings and settings,
    /// not the start of a request head).
    http2: AtomicBool,
    /// Whether the last write to the connection could not go through yet (a parked
    /// HTTP/1 connection must have nothing left to write).
    pub(crate) write_blocked: AtomicBool,
    /// Whether hyper's HTTP/1 connection is being shut down to park it: its shutdown
    /// then leaves the socket open (see `http1`).
    pub(crate) parking: AtomicBool,
    /// Whether hyper started closing the connection itself (`Connection: close`, an
    /// HTTP/1.0 client): such a connection is never parked, even while its close is
    /// still being written.
    pub(crate) closing: AtomicBool,
    /// Whether a watchdog waits on `changed`: set by [`drive`] (HTTP/2, undetected and
    /// admin connections) before it serves. HTTP/1 connections' watchdog looks on a timer
    /// instead (see `http1`), so on them a request pays no wake-up nobody waits for.
    watched: AtomicBool,
    /// Wakes the watchdog of [`drive`] when a request starts or ends, or a head starts
    /// arriving, so it recomputes its deadline.
    changed: tokio::sync::Notify,
}

/// [`Activity::head_started`] when no head is arriving.
const NOT_STARTED: u64 = u64::MAX;

impl Activity {
    pub(crate) fn new() -> Arc<Activity> {
        Arc::new(Activity {
            base: Instant::now(),
            active: AtomicUsize::new(0),
            served: AtomicBool::new(false),
            idle_since: AtomicU64::new(0),
            head_started: AtomicU64::new(NOT_STARTED),
            http2: AtomicBool::new(false),
            write_blocked: AtomicBool::new(false),
            parking: AtomicBool::new(false),
            closing: AtomicBool::new(false),
            watched: AtomicBool::new(false),
            changed: tokio::sync::Notify::new(),
        })
    }

    /// When the last request ended (the connection's start if none has).
    pub(crate) fn idle_since(&self) -> Instant {
        self.base + Duration::from_millis(self.idle_since.load(Ordering::Relaxed))
    }

    fn millis(&self) -> u64 {
        u64::try_from(self.base.elapsed().as_millis()).unwrap_or(u64::MAX - 1)
    }

    /// The connection speaks HTTP/2 (by ALPN, or by its preface).
    pub(crate) fn mark_http2(&self) {
        self.http2.store(true, Ordering::Relaxed);
    }

    /// Whether the connection speaks HTTP/2.
    pub(crate) fn is_http2(&self) -> bool {
        self.http2.load(Ordering::Relaxed)
    }

    /// Whether any request started on this connection.
    pub(crate) fn has_served(&self) -> bool {
        self.served.load(Ordering::Relaxed)
    }

    /// Whether a request is under way.
    pub(crate) fn is_busy(&self) -> bool {
        self.active.load(Ordering::Acquire) > 0
    }

    /// Whether the next HTTP/1 head has started arriving on an idle connection.
    pub(crate) fn head_arriving(&self) -> bool {
        self.head_started.load(Ordering::Relaxed) != NOT_STARTED
    }

    /// Marks hyper's HTTP/1 connection as being parked (or no longer).
    pub(crate) fn set_parking(&self, parking: bool) {
        self.parking.store(parking, Ordering::Relaxed);
    }

    /// Bytes arrived. On an idle HTTP/1 connection that served a request, they are the
    /// start of the next request head, which from now on gets `header_read` to complete
    /// instead of the rest of the idle time.
    pub(crate) fn bytes_arrived(&self) {
        if self.http2.load(Ordering::Relaxed)
            || !self.served.load(Ordering::Relaxed)
            || self.active.load(Ordering::Acquire) > 0
            || self.head_started.load(Ordering::Relaxed) != NOT_STARTED
        {
            return;
        }
        self.head_started.store(self.millis(), Ordering::Relaxed);
        self.wake_watchdog();
    }

    /// From now on, wakes a watchdog waiting on `changed` whenever the deadline may have
    /// moved. Called before the connection serves anything, so no change is missed.
    fn watch(&self) {
        self.watched.store(true, Ordering::Relaxed);
    }

    /// Wakes [`drive`]'s watchdog, if one waits, to recompute the deadline.
    fn wake_watchdog(&self) {
        if self.watched.load(Ordering::Relaxed) {
            self.changed.notify_one();
        }
    }

    fn begin(self: &Arc<Self>) -> ActiveRequest {
        self.served.store(true, Ordering::Relaxed);
        self.head_started.store(NOT_STARTED, Ordering::Relaxed);
        if self.active.fetch_add(1, Ordering::AcqRel) == 0 {
            self.wake_watchdog();
        }
        ActiveRequest(self.clone())
    }

    /// When the connection may be closed for idling, or `None` while a request is under
    /// way: `header_read` after it opened if no request has started yet (protocol
    /// detection, a silent or slow first request); `keep_alive` after the last request
    /// ended; and, once the next HTTP/1 head starts arriving, `header_read` after that
    /// if it is sooner.
    pub(crate) fn deadline(&self, header_read: Duration, keep_alive: Duration) -> Option<Instant> {
        if self.active.load(Ordering::Acquire) > 0 {
            return None;
        }
        if !self.served.load(Ordering::Relaxed) {
            return Some(self.base + header_read);
        }
        let idle_since = Duration::from_millis(self.idle_since.load(Ordering::Relaxed));
        let idle_end = self.base + idle_since + keep_alive;
        match self.head_started.load(Ordering::Relaxed) {
            NOT_STARTED => Some(idle_end),
            started => Some(idle_end.min(self.base + Duration::from_millis(started) + header_read)),
        }
    }
}

/// Marks a request under way on its connection for as long as it lives.
struct ActiveRequest(Arc<Activity>);

impl Drop for ActiveRequest {
    fn drop(&mut self) {
        let ms = u64::try_from(self.0.base.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.0.idle_since.store(ms, Ordering::Relaxed);
        if self.0.active.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.wake_watchdog();
        }
    }
}

/// A client connection's byte stream, reporting arriving bytes to its [`Activity`] and
/// recognising the HTTP/2 preface.
pub(crate) type Watched<T> = Observed<T, ArrivingBytes>;

/// What [`Watched`] reports to: the connection's [`Activity`].
pub(crate) struct ArrivingBytes {
    activity: Arc<Activity>,
    /// The first bytes read, until there are four: `PRI ` starts the HTTP/2 preface.
    prefix: [u8; 4],
    prefix_len: usize,
}

impl<T> Observed<T, ArrivingBytes> {
    /// Watches the client connection `io` for `activity`.
    pub(crate) fn new(io: T, activity: Arc<Activity>) -> Watched<T> {
        Observed {
            io,
            observer: ArrivingBytes::new(activity),
        }
    }
}

impl ArrivingBytes {
    /// Reports to `activity`.
    pub(crate) fn new(activity: Arc<Activity>) -> ArrivingBytes {
        ArrivingBytes {
            activity,
            prefix: [0; 4],
            prefix_len: 0,
        }
    }

    /// The connection's activity.
    pub(crate) fn activity(&self) -> &Activity {
        &self.activity
    }

    /// Reports to `activity` on a connection whose protocol is settled already (HTTP/1.1,
    /// by its first bytes or by ALPN): its bytes are not looked at for the HTTP/2 preface
    /// (a request with the method `PRI` must not make it count as HTTP/2).
    pub(crate) fn settled(activity: Arc<Activity>) -> ArrivingBytes {
        ArrivingBytes {
            activity,
            prefix: [0; 4],
            prefix_len: 4,
        }
    }

    /// Looks for the HTTP/2 preface in the connection's first bytes, if `read` is among
    /// them.
    fn first_bytes(&mut self, read: &[u8]) {
        if self.prefix_len < self.prefix.len() {
            let n = read.len().min(self.prefix.len() - self.prefix_len);
            self.prefix[self.prefix_len..self.prefix_len + n].copy_from_slice(&read[..n]);
            self.prefix_len += n;
            if self.prefix_len == self.prefix.len() && &self.prefix == b"PRI " {
                self.activity.mark_http2();
            }
        }
    }
}

impl IoObserver for ArrivingBytes {
    fn read(&mut self, read: &[u8]) {
        self.first_bytes(read);
        self.activity.bytes_arrived();
    }
}

/// A response body that keeps its request marked under way until it is sent in full. The
/// body type every client listener's connection sends (not boxed again: one allocation
/// and one dynamic call per frame less than a [`ProxyBody`] around it).
pub(crate) struct Tracked {
    inner: ProxyBody,
    _active: Option<ActiveRequest>,
}

impl hyper::body::Body for Tracked {
    type Data = bytes::Bytes;
    type Error = forward::BoxError;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<bytes::Bytes>, Self::Error>>> {
        std::pin::Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}

/// A service that calls `handler` and marks each request under way on `activity` until
/// its response is sent in full. `B` is the request body type the handler takes: the
/// client listeners' handler takes [`forward::Inbound`], so that requests the proxy's own
/// HTTP/1.1 reader took whole reach it too ([`TrackedService::call_read`]).
pub(crate) fn tracked<F, B>(activity: Arc<Activity>, handler: F) -> TrackedService<F, B> {
    TrackedService {
        activity,
        handler,
        body: std::marker::PhantomData,
    }
}

/// The service [`tracked`] makes.
pub(crate) struct TrackedService<F, B> {
    activity: Arc<Activity>,
    handler: F,
    body: std::marker::PhantomData<fn(B)>,
}

impl<F, B, Fut> TrackedService<F, B>
where
    F: Fn(http::Request<B>) -> Fut,
    Fut: Future<Output = Result<http::Response<ProxyBody>, Infallible>>,
{
    /// Serves `req`, marked under way from now until its response is sent in full.
    pub(crate) fn call_read(&self, req: http::Request<B>) -> TrackedFuture<Fut> {
        let active = self.activity.begin();
        TrackedFuture {
            handled: (self.handler)(req),
            active: Some(active),
        }
    }
}

impl<F, B, Fut> hyper::service::Service<http::Request<Incoming>> for TrackedService<F, B>
where
    F: Fn(http::Request<B>) -> Fut,
    B: From<Incoming>,
    Fut: Future<Output = Result<http::Response<ProxyBody>, Infallible>>,
{
    type Response = http::Response<Tracked>;
    type Error = Infallible;
    type Future = TrackedFuture<Fut>;

    fn call(&self, req: http::Request<Incoming>) -> TrackedFuture<Fut> {
        self.call_read(req.map(B::from))
    }
}

pin_project_lite::pin_project! {
    /// The handler's answer, its body made [`Tracked`]: the request stays marked under
    /// way until that body is dropped.
    pub(crate) struct TrackedFuture<Fut> {
        #[pin]
        handled: Fut,
        active: Option<ActiveRequest>,
    }
}

impl<Fut> Future for TrackedFuture<Fut>
where
    Fut: Future<Output = Result<http::Response<ProxyBody>, Infallible>>,
{
    type Output = Result<http::Response<Tracked>, Infallible>;

    fn poll(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        let this = self.project();
        let Ok(response) = std::task::ready!(this.handled.poll(cx));
        // Taken once: a future is not polled again after it is ready.
        let active = this.active.take();
        std::task::Poll::Ready(Ok(response.map(|inner| Tracked {
            inner,
            _active: active,
        })))
    }
}

/// The timeouts every listener applies to its connections.
#[derive(Clone, Copy)]
pub(crate) struct ConnTimeouts {
    pub(crate) tls_handshake: Duration,
    pub(crate) header_read: Duration,
    pub(crate) keep_alive_idle: Duration,
}

impl ConnTimeouts {
    pub(crate) fn of(timeouts: &crate::config::Timeouts) -> ConnTimeouts {
        ConnTimeouts {
            tls_handshake: timeouts.tls_handshake.into(),
            header_read: timeouts.header_read.into(),
            keep_alive_idle: timeouts.keep_alive_idle.into(),
        }
    }
}

/// Serves one connection until it ends, closing it when it idles past its deadline (see
/// [`Activity::deadline`]) or when the proxy shuts down. A connection asked to close
/// gracefully gets `header_read` more to finish, then is dropped.
pub(crate) async fn drive<I, S>(
    builder: &auto::Builder<TokioExecutor>,
    io: I,
    service: S,
    activity: &Activity,
    timeouts: ConnTimeouts,
    mut shutdown: watch::Receiver<bool>,
) where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    S: hyper::service::Service<
            http::Request<Incoming>,
            Response = http::Response<Tracked>,
            Error = Infallible,
        > + Send,
    S::Future: Send + 'static,
{
    // Before anything is served: the requests' starts and ends wake the watchdog below.
    activity.watch();
    let conn = builder.serve_connection_with_upgrades(io, service);
    tokio::pin!(conn);
    // One timer for the connection's life, moved only when its deadline moves: a request
    // starting or ending on a keep-alive connection costs no timer registration.
    let first = activity
        .deadline(timeouts.header_read, timeouts.keep_alive_idle)
        .unwrap_or_else(|| Instant::now() + timeouts.keep_alive_idle);
    let timer = tokio::time::sleep_until(tokio::time::Instant::from_std(first));
    tokio::pin!(timer);
    let mut closing = false;
    loop {
        tokio::select! {
            _ = conn.as_mut() => return,
            _ = activity.changed.notified(), if !closing => {
                // Idle again: the deadline is the end of the request plus the idle time.
                // Busy: the timer stays where it is and is moved on when it fires.
                if let Some(at) = activity.deadline(timeouts.header_read, timeouts.keep_alive_idle) {
                    timer.as_mut().reset(tokio::time::Instant::from_std(at));
                }
            }
            _ = timer.as_mut() => {
                if closing {
                    return;
                }
                let now = Instant::now();
                match activity.deadline(timeouts.header_read, timeouts.keep_alive_idle) {
                    Some(at) if at <= now => {
                        if !activity.http2.load(Ordering::Relaxed) {
                            // Nothing under way: an HTTP/1 (or undetected) connection is
                            // simply dropped.
                            return;
                        }
                        // HTTP/2 gets a GOAWAY, and this long to close before it is dropped.
                        conn.as_mut().graceful_shutdown();
                        closing = true;
                        timer
                            .as_mut()
                            .reset(tokio::time::Instant::now() + timeouts.header_read);
                    }
                    Some(at) => timer.as_mut().reset(tokio::time::Instant::from_std(at)),
                    None => timer
                        .as_mut()
                        .reset(tokio::time::Instant::from_std(now + timeouts.keep_alive_idle)),
                }
            }
            changed = shutdown.changed(), if !closing => {
                if changed.is_err() || *shutdown.borrow() {
                    conn.as_mut().graceful_shutdown();
                    closing = true;
                    // Requests under way get the shutdown grace, which the proxy enforces.
                    timer.as_mut().reset(tokio::time::Instant::now() + Duration::from_secs(3600));
                }
            }
        }
    }
}

/// Accepts one connection, backing off when accepting fails: out of file descriptors
/// (EMFILE) and the like are retried after 5 ms, doubling to at most 1 s while the
/// failures last, rather than in a hot loop. `None` on shutdown.
pub(crate) async fn accept(
    listener: &TcpListener,
    shutdown: &mut watch::Receiver<bool>,
) -> Option<(tokio::net::TcpStream, SocketAddr)> {
    let mut backoff = ACCEPT_BACKOFF;
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => return Some(accepted),
                Err(e) => {
                    let pause = Duration::from(backoff.next_delay());
                    tracing::warn!(error = %e, retry_in = ?pause, "accept failed");
                    tokio::select! {
                        _ = tokio::time::sleep(pause) => {}
                        _ = shutdown.changed() => return None,
                    }
                }
            },
            _ = shutdown.changed() => return None,
        }
    }
}

/// The pause after failed accepts in a row: 5 ms, doubling to at most 1 s.
const ACCEPT_BACKOFF: Backoff = Backoff::new(
    cutover_core::Duration::from_millis(5),
    cutover_core::Duration::from_secs(1),
);

/// Tracks a listener's open connections, so that shutdown can wait for them to drain.
pub(crate) struct Drain {
    tx: Option<mpsc::Sender<()>>,
    rx: mpsc::Receiver<()>,
}

impl Drain {
    pub(crate) fn new() -> Drain {
        let (tx, rx) = mpsc::channel(1);
        Drain { tx: Some(tx), rx }
    }

    /// A token a connection holds while it lives.
    pub(crate) fn token(&self) -> Option<mpsc::Sender<()>> {
        self.tx.clone()
    }

    /// Waits until every token is dropped.
    pub(crate) async fn wait(mut self) {
        self.tx = None;
        let _ = self.rx.recv().await;
    }
}

/// A listener's word to its parked connections that the proxy is shutting down. A parked
/// HTTP/1 connection waits on this rather than on its own `watch` future: the wait is
/// part of what every idle connection holds, and a [`Notified`](tokio::sync::futures::Notified)
/// is half the size.
#[derive(Default)]
pub(crate) struct Stop {
    stopped: AtomicBool,
    notify: tokio::sync::Notify,
}

impl Stop {
    /// Says stop to every connection waiting now or later.
    pub(crate) fn fire(&self) {
        self.stopped.store(true, Ordering::Release);
        self.notify.notify_waiters();
    }

    /// Whether [`Stop::fire`] was called.
    pub(crate) fn is_fired(&self) -> bool {
        self.stopped.load(Ordering::Acquire)
    }

    /// Resolves on the next [`Stop::fire`]. Take it before looking at
    /// [`Stop::is_fired`]: a `fire` in between then still wakes it.
    pub(crate) fn notified(&self) -> tokio::sync::futures::Notified<'_> {
        self.notify.notified()
    }
}

/// The connection builder of every listener: HTTP/1.1 with a header timeout and HTTP/2
/// with keep-alive pings. `http1_only` for the admin listener.
pub(crate) fn builder(
    shared: &Shared,
    max_header_bytes: usize,
    http1_only: bool,
) -> auto::Builder<TokioExecutor> {
    let timeouts = &shared.config.timeouts;
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .max_buf_size(max_header_bytes.max(8192))
        // hyper's own header timer also runs while a keep-alive connection idles, which
        // would cut idle connections at `headerRead`; `drive` times heads instead.
        .header_read_timeout(None)
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(1024)
        .keep_alive_interval(Some(timeouts.http2_keep_alive_interval.into()))
        .keep_alive_timeout(timeouts.http2_keep_alive_timeout.into())
        .max_header_list_size(u32::try_from(max_header_bytes).unwrap_or(u32::MAX));
    if http1_only {
        builder.http1_only()
    } else {
        builder
    }
}

/// Accepts and serves connections until shutdown, then drains them. `permits` is shared by
/// every listener: `maxConnections` caps them all together, tunnels included.
pub(crate) async fn serve(
    shared: Arc<Shared>,
    bound: Bound,
    permits: Arc<Semaphore>,
    mut shutdown: watch::Receiver<bool>,
) {
    let builder = Arc::new(builder(
        &shared,
        shared.config.limits.max_header_bytes,
        false,
    ));
    let http1 = Arc::new(crate::http1::builder(shared.config.limits.max_header_bytes));
    let timeouts = ConnTimeouts::of(&shared.config.timeouts);
    let drain = Drain::new();
    let stop = Arc::new(Stop::default());
    let tls = bound.tls.clone();
    loop {
        let permit = tokio::select! {
            permit = permits.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break,
            },
            _ = shutdown.changed() => break,
        };
        let Some((stream, peer)) = accept(&bound.listener, &mut shutdown).await else {
            break;
        };
        let _ = stream.set_nodelay(true);
        shared.accepted[crate::workers::shard()].fetch_add(1, Ordering::Relaxed);
        let builder = builder.clone();
        let http1 = http1.clone();
        let shutdown = shutdown.clone();
        let token = drain.token();
        let conn = Arc::new(ConnInfo {
            shared: shared.clone(),
            peer,
            trusted: shared.trusted.iter().any(|c| c.contains(peer.ip())),
            forwarding: forward::PeerForwarding::of(peer, tls.is_some()),
            _slot: permit,
        });
        let handler = move |req| forward::handle(req, conn.clone());
        // Plain and TLS connections are separate tasks: a task's size is its largest
        // state, and a plain connection should not carry room for a TLS session (this
        // matters at tens of thousands of idle keep-alive connections).
        let listening = crate::http1::Listening {
            http1,
            auto: builder,
            timeouts,
            shutdown,
            stop: stop.clone(),
        };
        match tls.clone() {
            None => {
                let activity = Activity::new();
                let service = tracked(activity.clone(), handler);
                tokio::spawn(crate::http1::serve_plain(
                    listening.connection(activity),
                    stream,
                    service,
                    token,
                ));
            }
            Some(acceptor) => {
                // The connection's `Activity` is made once its handshake is done.
                let service = move |activity| tracked(activity, handler);
                tokio::spawn(crate::http1::serve_tls(
                    listening, acceptor, stream, service, token,
                ));
            }
        }
    }
    drop(bound);
    stop.fire();
    drain.wait().await;
}
