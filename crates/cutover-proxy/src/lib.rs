//! cutover's data plane: a reverse proxy that splits each release's traffic between its
//! stable and candidate versions, measures what it routes, and cuts a failing candidate
//! off by itself.
//!
//! [`Proxy::start`] binds the listeners and the admin listener and returns a handle. The
//! route table is an immutable snapshot ([`table::RouteTable`]) swapped atomically by
//! [`Proxy::set_routes`] or `PUT /routes`; a request reads it once, so a change never
//! blocks or fails a request in flight. Per release and version the proxy counts requests
//! by status class and upstream errors by kind and records latency
//! ([`metrics::VersionStats`]), exported at `/metrics` and read in-process through
//! [`Proxy::window`]. Guardrails are checked every 250 ms on those windows, and a route's
//! within 20 ms of its candidate failing; a trip cuts the candidate off and raises an
//! [`events::Event`].

pub mod admin;
pub mod config;
pub mod events;
mod forward;
pub mod fuzzing;
mod guardrail;
mod header_maps;
mod http1;
pub mod http_api;
mod listen;
pub mod metrics;
mod observed;
pub mod table;
mod upstream;
mod workers;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Instant;

use arc_swap::ArcSwap;
use tokio::sync::{Mutex, Notify, watch};
use tokio::task::JoinSet;

use crate::config::{ProxyConfig, RouteTableConfig};
use crate::events::{EventKind, EventLog};
use crate::metrics::WindowStats;
use crate::table::{Registry, RouteTable, TableError};

/// Why the proxy could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A listener could not bind.
    #[error("cannot listen on {address}")]
    Bind {
        /// The address.
        address: SocketAddr,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The TLS certificate or key could not be used.
    #[error("cannot use the TLS certificate {cert} and key {key}: {message}")]
    Tls {
        /// The certificate file.
        cert: String,
        /// The key file.
        key: String,
        /// What went wrong.
        message: String,
    },
    /// The admin token file could not be read.
    #[error("cannot read the admin token file {path}")]
    Token {
        /// The file.
        path: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The admin token file holds no token: starting would leave the admin API open to
    /// anyone who can reach it, so the proxy refuses.
    #[error(
        "the admin token file {path} is empty (hint: write a token into it, or remove \
         admin.tokenFile to keep the admin API read-only)"
    )]
    EmptyToken {
        /// The file.
        path: String,
    },
    /// A worker thread or its runtime could not be started.
    #[error("cannot start a worker thread (hint: lower `workers`)")]
    Worker {
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The configuration is invalid.
    #[error("invalid proxy configuration")]
    Config(#[from] config::ConfigError),
    /// The initial route table is invalid.
    #[error("invalid route table")]
    Routes(#[from] TableError),
}

/// State shared by every connection, the admin API and the guardrail task.
pub(crate) struct Shared {
    pub(crate) config: ProxyConfig,
    pub(crate) table: ArcSwap<RouteTable>,
    /// Serialises table writers, so generations increase and a guardrail trip is not lost
    /// to a concurrent `PUT`.
    pub(crate) table_writer: Mutex<()>,
    pub(crate) registry: Registry,
    pub(crate) events: EventLog,
    pub(crate) client: forward::UpstreamClient,
    pub(crate) token: Option<String>,
    /// `limits.trustedProxies`, parsed.
    pub(crate) trusted: Vec<forward::Cidr>,
    /// One permit per mirrored copy in flight (`limits.maxMirrorInFlight`).
    pub(crate) mirror_permits: Arc<tokio::sync::Semaphore>,
    /// Mirrored copies dropped because every permit was taken.
    pub(crate) mirror_dropped: AtomicU64,
    started: Instant,
    /// Upgraded connections (WebSocket and others) being tunnelled.
    pub(crate) tunnels: AtomicUsize,
    pub(crate) tunnels_done: Notify,
    /// Client connections accepted, by the shard of the thread that accepted them (a
    /// worker's, see [`workers::shard`]).
    pub(crate) accepted: [AtomicU64; workers::SHARDS],
}

impl Shared {
    /// Milliseconds since the proxy started: the clock of health checks.
    pub(crate) fn now_ms(&self) -> u64 {
        self.now_ms_at(Instant::now())
    }

    /// Seconds since the proxy started: the clock of the rolling windows.
    pub(crate) fn second(&self) -> u64 {
        self.second_at(Instant::now())
    }

    /// [`Shared::second`] at `now`, a clock read the caller made anyway.
    pub(crate) fn second_at(&self, now: Instant) -> u64 {
        now.saturating_duration_since(self.started).as_secs()
    }

    /// [`Shared::now_ms`] at `now`, a clock read the caller made anyway.
    pub(crate) fn now_ms_at(&self, now: Instant) -> u64 {
        u64::try_from(now.saturating_duration_since(self.started).as_millis()).unwrap_or(u64::MAX)
    }

    /// Compiles and publishes `config` as the next table. Callers hold `table_writer`.
    pub(crate) fn publish(&self, config: &RouteTableConfig) -> Result<u64, TableError> {
        let generation = self.table.load().generation + 1;
        let table = self.registry.compile(config, generation)?;
        self.table.store(Arc::new(table));
        self.events.push(EventKind::RoutesChanged { generation });
        Ok(generation)
    }
}

/// A running proxy.
pub struct Proxy {
    shared: Arc<Shared>,
    listen_addrs: Vec<SocketAddr>,
    admin_addr: SocketAddr,
    shutdown: watch::Sender<bool>,
    tasks: JoinSet<()>,
    /// Worker threads serving the client listeners ([`Proxy::start_workers`]); empty when
    /// they are served on the caller's runtime.
    workers: Vec<workers::Worker>,
}

impl Proxy {
    /// Binds every listener and the admin listener, and starts serving on the calling
    /// runtime (`workers` is ignored: the caller owns the runtime). Must be called within
    /// a Tokio runtime. This is how `cutover serve` embeds the proxy.
    pub async fn start(config: ProxyConfig) -> Result<Proxy, StartError> {
        let shared = prepare(config)?;
        let (shutdown, shutdown_rx) = watch::channel(false);
        let mut tasks = JoinSet::new();
        let mut listen_addrs = Vec::new();
        let permits = connection_permits(&shared);
        for listener in &shared.config.listeners {
            let bound = listen::bind(listener).await?;
            listen_addrs.push(bound.local_addr);
            tasks.spawn(listen::serve(
                shared.clone(),
                bound,
                permits.clone(),
                shutdown_rx.clone(),
            ));
        }
        Proxy::start_control(
            shared,
            listen_addrs,
            Vec::new(),
            shutdown,
            shutdown_rx,
            tasks,
        )
        .await
    }

    /// Binds every listener and the admin listener, and serves client connections on
    /// `workers` threads of their own, each a single-threaded runtime with its own socket
    /// on every client address (`SO_REUSEPORT`; a port 0 address is bound once and the
    /// other workers join its port). The admin listener, the guardrails and the reaper run
    /// on the calling runtime, which may well be a single-threaded one. This is how
    /// `cutover proxy` runs (`workers` in its configuration).
    pub async fn start_workers(config: ProxyConfig, workers: usize) -> Result<Proxy, StartError> {
        let workers = workers.max(1);
        let shared = prepare(config)?;
        let (shutdown, shutdown_rx) = watch::channel(false);
        let permits = connection_permits(&shared);
        let mut sockets: Vec<Vec<workers::WorkerListener>> =
            (0..workers).map(|_| Vec::new()).collect();
        let mut listen_addrs = Vec::new();
        for listener in &shared.config.listeners {
            let tls = match &listener.tls {
                Some(tls) => Some(listen::acceptor(tls)?),
                None => None,
            };
            let mut address = listener.address;
            for per_worker in &mut sockets {
                let socket = workers::bind_shared(address)?;
                let local_addr = socket
                    .local_addr()
                    .map_err(|source| StartError::Bind { address, source })?;
                // The first socket fixes the port (port 0 picks one); the others join it.
                address = local_addr;
                per_worker.push(workers::WorkerListener {
                    socket,
                    local_addr,
                    tls: tls.clone(),
                });
            }
            listen_addrs.push(address);
        }
        let mut running = Vec::with_capacity(workers);
        for (index, listeners) in sockets.into_iter().enumerate() {
            let worker = workers::Worker::spawn(
                index + 1,
                shared.clone(),
                listeners,
                permits.clone(),
                shutdown_rx.clone(),
            )
            .map_err(|source| StartError::Worker { source })?;
            running.push(worker);
        }
        Proxy::start_control(
            shared,
            listen_addrs,
            running,
            shutdown,
            shutdown_rx,
            JoinSet::new(),
        )
        .await
    }

    /// Starts what runs beside the client listeners: the admin listener, the guardrails
    /// and the idle reaper, on the calling runtime.
    async fn start_control(
        shared: Arc<Shared>,
        listen_addrs: Vec<SocketAddr>,
        workers: Vec<workers::Worker>,
        shutdown: watch::Sender<bool>,
        shutdown_rx: watch::Receiver<bool>,
        mut tasks: JoinSet<()>,
    ) -> Result<Proxy, StartError> {
        let admin = listen::bind_plain(shared.config.admin.address).await?;
        let admin_addr = admin.local_addr;
        tasks.spawn(admin::serve(shared.clone(), admin, shutdown_rx.clone()));
        tasks.spawn(guardrail::watch(shared.clone(), shutdown_rx.clone()));
        tasks.spawn(reap_idle_upstreams(shared.clone(), shutdown_rx));
        tracing::info!(listeners = ?listen_addrs, admin = %admin_addr, workers = workers.len(), "proxy started");
        Ok(Proxy {
            shared,
            listen_addrs,
            admin_addr,
            shutdown,
            tasks,
            workers,
        })
    }

    /// The bound addresses of the client listeners, in configuration order.
    pub fn listen_addrs(&self) -> &[SocketAddr] {
        &self.listen_addrs
    }

    /// The bound address of the admin listener.
    pub fn admin_addr(&self) -> SocketAddr {
        self.admin_addr
    }

    /// Replaces the route table; returns its generation.
    pub async fn set_routes(&self, config: &RouteTableConfig) -> Result<u64, TableError> {
        let _writer = self.shared.table_writer.lock().await;
        self.shared.publish(config)
    }

    /// The current route table.
    pub fn routes(&self) -> RouteTableConfig {
        self.shared.table.load().to_config()
    }

    /// The last `seconds` of one version's traffic, for the builtin metric provider.
    /// `None` if the version has never been routed, or was forgotten after leaving the
    /// table (`limits.forgetUnroutedAfter`).
    ///
    /// The window is the last `seconds` whole seconds plus the second under way, so that
    /// a measurement taken just as a second begins (say, one second after a controller
    /// and its proxy started together) still sees a full `seconds` of traffic.
    pub fn window(&self, release: &str, version: &str, seconds: u64) -> Option<WindowStats> {
        let stats = self.shared.registry.stats(release, version)?;
        let elapsed = self.shared.started.elapsed().as_secs_f64();
        let mut window = stats.window(seconds.saturating_add(1), self.shared.second());
        window.seconds = window.seconds.min(seconds);
        let covered = window.seconds as f64 + elapsed.fract();
        window.request_rate = window.requests as f64 / covered.max(1e-3);
        Some(window)
    }

    /// One version's traffic second by second over the last `seconds` and the second
    /// under way (seconds without requests left out), for statistical comparisons. Empty
    /// if never routed.
    pub fn window_series(&self, release: &str, version: &str, seconds: u64) -> Vec<WindowStats> {
        self.shared
            .registry
            .stats(release, version)
            .map(|stats| stats.series(seconds.saturating_add(1), self.shared.second()))
            .unwrap_or_default()
    }

    /// One version's traffic second by second over the last `seconds` and the second
    /// under way, each with how many seconds ago it was (0: the second under way), for
    /// the dashboard's charts. Empty if never routed.
    pub fn traffic_by_second(
        &self,
        release: &str,
        version: &str,
        seconds: u64,
    ) -> Vec<(u64, WindowStats)> {
        self.shared
            .registry
            .stats(release, version)
            .map(|stats| stats.series_by_second(seconds.saturating_add(1), self.shared.second()))
            .unwrap_or_default()
    }

    /// One version's evidence (request and error counts, latency histogram) over the
    /// `seconds` whole seconds before the second under way, for the tests on evidence.
    /// Measurements taken one interval apart cover adjoining seconds, so an analysis can
    /// pool them without counting a second twice. `None` if never routed.
    pub fn evidence(
        &self,
        release: &str,
        version: &str,
        seconds: u64,
    ) -> Option<cutover_core::judge::Evidence> {
        let stats = self.shared.registry.stats(release, version)?;
        Some(stats.evidence(seconds, self.shared.second()))
    }

    /// The same second by second, for recordings (`cutover record`); empty if never
    /// routed.
    pub fn evidence_by_second(
        &self,
        release: &str,
        version: &str,
        seconds: u64,
    ) -> Vec<metrics::SecondEvidence> {
        self.shared
            .registry
            .stats(release, version)
            .map(|stats| stats.evidence_by_second(seconds, self.shared.second()))
            .unwrap_or_default()
    }

    /// Events with an id above `since`.
    pub fn events_since(&self, since: u64) -> Vec<events::Event> {
        self.shared.events.since(since)
    }

    /// The id of the latest event, changing with each new one: readers of the events (the
    /// controller, a pulling proxy's reporter) await it instead of polling
    /// [`Proxy::events_since`]. See [`events::EventLog::subscribe`].
    pub fn subscribe_events(&self) -> tokio::sync::watch::Receiver<u64> {
        self.shared.events.subscribe()
    }

    /// Stops accepting, lets in-flight requests and tunnels finish within the configured
    /// grace period, then returns. Connections still open after the grace period are
    /// closed when the runtime stops (at process exit for `cutover proxy`); those of
    /// worker threads when their runtimes are dropped, before this returns.
    pub async fn shutdown(mut self) {
        let _ = self.shutdown.send(true);
        let grace: std::time::Duration = self.shared.config.timeouts.shutdown_grace.into();
        let drained = async {
            while self.tasks.join_next().await.is_some() {}
            for worker in &mut self.workers {
                worker.drained().await;
            }
            while self.shared.tunnels.load(Ordering::Acquire) > 0 {
                self.shared.tunnels_done.notified().await;
            }
        };
        if tokio::time::timeout(grace, drained).await.is_err() {
            tracing::warn!("shutdown grace period over; closing what is left");
            self.tasks.abort_all();
        }
        for worker in std::mem::take(&mut self.workers) {
            worker.stop().await;
        }
    }
}

/// Checks the configuration and builds the state every part of the proxy shares.
fn prepare(config: ProxyConfig) -> Result<Arc<Shared>, StartError> {
    config.validate()?;
    let token = match &config.admin.token_file {
        Some(path) => Some(read_token(path)?),
        None => None,
    };
    let trusted = config
        .limits
        .trusted_proxies
        .iter()
        .filter_map(|entry| forward::Cidr::parse(entry))
        .collect();
    let registry = Registry::new(config.metrics_window.as_secs().max(1));
    let table = registry.compile(
        &RouteTableConfig {
            routes: config.routes.clone(),
        },
        1,
    )?;
    Ok(Arc::new(Shared {
        client: forward::upstream_client(&config.timeouts),
        table: ArcSwap::from_pointee(table),
        table_writer: Mutex::new(()),
        registry,
        events: EventLog::default(),
        token,
        trusted,
        mirror_permits: Arc::new(tokio::sync::Semaphore::new(
            config.limits.max_mirror_in_flight,
        )),
        mirror_dropped: AtomicU64::new(0),
        started: Instant::now(),
        tunnels: AtomicUsize::new(0),
        tunnels_done: Notify::new(),
        accepted: std::array::from_fn(|_| AtomicU64::new(0)),
        config,
    }))
}

/// One permit per client connection under `limits.maxConnections`, shared by every
/// listener (and every worker): the limit caps them all together, tunnels included.
fn connection_permits(shared: &Shared) -> Arc<tokio::sync::Semaphore> {
    Arc::new(tokio::sync::Semaphore::new(
        shared.config.limits.max_connections.max(1),
    ))
}

/// Reads the admin token; an empty or whitespace-only file is refused, never taken as "no
/// token needed".
fn read_token(path: &std::path::Path) -> Result<String, StartError> {
    let token = std::fs::read_to_string(path)
        .map_err(|source| StartError::Token {
            path: path.display().to_string(),
            source,
        })?
        .trim()
        .to_string();
    if token.is_empty() {
        return Err(StartError::EmptyToken {
            path: path.display().to_string(),
        });
    }
    Ok(token)
}

/// Every second: closes pooled upstream connections that idled past
/// `timeouts.upstreamIdle` or that the upstream closed (an idle pool does not hold sockets
/// forever), and forgets versions and endpoints no route has used for
/// `limits.forgetUnroutedAfter` (see [`Registry::forget_unrouted`]).
async fn reap_idle_upstreams(shared: Arc<Shared>, mut shutdown: watch::Receiver<bool>) {
    let max_idle: std::time::Duration = shared.config.timeouts.upstream_idle.into();
    let grace_ms = shared.config.limits.forget_unrouted_after.as_millis();
    let mut interval = tokio::time::interval(std::time::Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = interval.tick() => {}
            _ = shutdown.changed() => return,
        }
        for endpoint in shared.registry.endpoints() {
            endpoint.local.reap_idle(max_idle);
        }
        let table = shared.table.load_full();
        shared
            .registry
            .forget_unrouted(&table, shared.now_ms(), grace_ms);
    }
}

impl Proxy {
    /// Client connections accepted so far by each worker thread, in worker order (empty
    /// when the proxy serves on the caller's runtime, [`Proxy::start`]): how evenly the
    /// kernel spreads connections over the workers' sockets.
    pub fn worker_connections(&self) -> Vec<u64> {
        (1..=self.workers.len())
            .map(|worker| self.shared.accepted[worker % workers::SHARDS].load(Ordering::Relaxed))
            .collect()
    }

    /// How many upstream connections sit idle in the pool now.
    pub fn idle_upstream_connections(&self) -> usize {
        self.shared
            .registry
            .endpoints()
            .iter()
            .map(|e| e.local.idle_len())
            .sum()
    }
}

fn _assert_send_sync() {
    fn check<T: Send + Sync>() {}
    check::<Shared>();
    check::<Proxy>();
}
