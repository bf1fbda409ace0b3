//! `cutover serve`: the controller, with the proxy embedded (the default) or alone with
//! proxies pulling the route table from it.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::Read;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use clap::Args;
use cutover_backend::{Backend, LocalBackend};
use cutover_controller::api::{Api, ApiLimits, ApiOptions};
use cutover_controller::dashboard::{DashboardOptions, normalize_base_path};
use cutover_controller::{Controller, ControllerOptions};
use cutover_core::load;
use cutover_core::spec::NotificationSpec;
use cutover_docker::DockerBackend;
use cutover_kube::resources::ReleaseObjects;
use cutover_kube::{KubeBackend, LeaderElector, LeaseConfig};
use cutover_proxy::Proxy;
use cutover_proxy::config::{AdminConfig, ListenerConfig, ProxyConfig};
use cutover_swarm::SwarmBackend;

use crate::client::error_chain;
use crate::failure::{Failure, Outcome};
use crate::proxy::{LogFormat, Signals, init_logging};
use crate::release_objects;
use crate::{InputFile, exit};

mod state_dir;
use state_dir::{CreatedDir, claim_state_dir, note_holder};

/// `cutover serve`'s flags.
#[derive(Args, Debug, Clone)]
pub struct ServeArgs {
    /// Where rollout state, instance logs and the API token live [env: CUTOVER_STATE_DIR].
    #[arg(long, default_value = ".cutover")]
    pub state_dir: PathBuf,
    /// The API's address.
    #[arg(long, default_value = "127.0.0.1:9900")]
    pub api: SocketAddr,
    /// The embedded proxy's listener (repeat for more).
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub listen: Vec<SocketAddr>,
    /// The embedded proxy's admin listener (`/metrics`, `/routes`).
    #[arg(long, default_value = "127.0.0.1:9901")]
    pub admin: SocketAddr,
    /// A full proxy configuration for the embedded proxy (limits, TLS, timeouts) instead
    /// of `--listen` and `--admin`.
    #[arg(long, conflicts_with = "no_proxy")]
    pub proxy_config: Option<PathBuf>,
    /// Run no proxy here: proxies elsewhere pull the table (`cutover proxy --routes-from`).
    /// `builtin` metrics and guardrails need the embedded proxy.
    #[arg(long)]
    pub no_proxy: bool,
    /// The file holding the API's write token; created (0600) with a random token if
    /// missing. Default: `<state-dir>/token`.
    #[arg(long)]
    pub token_file: Option<PathBuf>,
    /// The file holding the edge token, which proxies pulling their routes use to report
    /// guardrail trips and which allows nothing else; created (0600) with a random token
    /// if missing. Default: `<state-dir>/edge-token`.
    #[arg(long)]
    pub edge_token_file: Option<PathBuf>,
    /// Make reads of releases (`GET /v1/releases...`, and so the dashboard) need a token:
    /// the one in this file (created, 0600, with a random token if missing), or the
    /// write token. Without it, reads are open to anyone who can reach the API.
    #[arg(long)]
    pub read_token_file: Option<PathBuf>,
    /// The path prefix the web dashboard, and the API beside it, are served under, for a
    /// reverse proxy that forwards a sub-path unchanged (`/cutover`: the dashboard at
    /// `/cutover/`, the API also at `/cutover/v1/...`).
    #[arg(long, default_value = "/")]
    pub dashboard_base_path: String,
    /// Serve the dashboard with no write control at all (the API still takes writes
    /// with the token, from the CLI).
    #[arg(long, conflicts_with = "no_dashboard")]
    pub dashboard_read_only: bool,
    /// Serve no web dashboard.
    #[arg(long)]
    pub no_dashboard: bool,
    /// Serve the API over HTTPS with this PEM certificate chain (with `--tls-key`).
    #[arg(long, requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The PEM private key of `--tls-cert`.
    #[arg(long, requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// How long an API client has to send a request's head (also how long an idle
    /// keep-alive connection stays open).
    #[arg(long, default_value = "10s")]
    pub api_header_timeout: cutover_core::Duration,
    /// How long an API client has to send a request's body (then 408).
    #[arg(long, default_value = "30s")]
    pub api_body_timeout: cutover_core::Duration,
    /// API connections served at once; more wait to be accepted.
    #[arg(long, default_value_t = 512)]
    pub api_max_connections: usize,
    /// The Prometheus address for metrics that name none, e.g. `http://127.0.0.1:9090`.
    #[arg(long)]
    pub prometheus: Option<String>,
    /// A YAML or TOML file of notification subscriptions (`notifications: [...]`, as in a
    /// release's `spec.notifications`) for every release whose file names none; checked
    /// like a release file before anything starts.
    #[arg(long)]
    pub notifications: Option<PathBuf>,
    /// Log format.
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// Where releases run: processes and addresses on this host (`local`), a Docker
    /// Swarm reached through `DOCKER_HOST` or the local socket (`swarm`), or a Kubernetes
    /// namespace reached through `KUBECONFIG`, `~/.kube/config` or the pod's service
    /// account (`kubernetes`), or containers on one Docker or Podman engine reached through
    /// `DOCKER_HOST` or the local socket (`docker`). A controller drives one backend; release files naming
    /// another are refused.
    #[arg(long, value_enum, default_value_t = BackendKind::Local)]
    pub backend: BackendKind,
    /// This controller's name on a shared orchestrator: it labels what it creates with
    /// it and resumes only releases of that name, so several controllers can share one
    /// Swarm. A controller restarted elsewhere under the same name takes over.
    #[arg(long, default_value = "cutover")]
    pub name: String,
    /// Kubernetes: the namespace whose Deployments this controller releases. Default: the
    /// kubeconfig context's namespace, or the pod's own.
    #[arg(long)]
    pub namespace: Option<String>,
    /// Kubernetes: how long the leader's Lease (`<name>-leader` in the namespace) lasts
    /// without renewal. Replicas of one controller elect a leader; the others stand by
    /// and take over this long after the leader stops renewing.
    #[arg(long, default_value = "15s")]
    pub lease_duration: cutover_core::Duration,
    /// Kubernetes: this replica's identity in the election. Default: `POD_NAME` or the
    /// host name, with the process id.
    #[arg(long)]
    pub identity: Option<String>,
    /// Kubernetes: do not watch `Release` objects (the custom resource of `cutover crd`);
    /// releases then come only through the API (`cutover run`).
    #[arg(long)]
    pub no_release_objects: bool,
}

/// The backends `cutover serve` can drive.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum BackendKind {
    /// Processes cutover supervises, or addresses; state in the state directory.
    Local,
    /// Docker Swarm services; state in service labels.
    Swarm,
    /// Kubernetes Deployments; state in annotations; replicas elect a leader.
    Kubernetes,
    /// Containers on one Docker or Podman engine (a Compose service, or containers by
    /// name or label) reached through `DOCKER_HOST` or the local socket; state in the
    /// state directory.
    Docker,
}

/// Runs the controller until SIGINT or SIGTERM.
pub fn run(args: ServeArgs, env: &BTreeMap<String, String>) -> Outcome {
    init_logging(env, args.log_format);
    let state_dir = env
        .get("CUTOVER_STATE_DIR")
        .filter(|_| args.state_dir == Path::new(".cutover"))
        .map_or(args.state_dir.clone(), PathBuf::from);
    let prepared = prepare(&args, env, &state_dir)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure::error(exit::UNAVAILABLE, format!("cannot start the runtime: {e}")))?;
    runtime.block_on(serve_until_stopped(args, state_dir, prepared))
}

/// What the checks before the start found and claimed: the state directory (locked,
/// removed again if the start fails), the tokens, TLS and the proxy's configuration.
struct Prepared {
    created: CreatedDir,
    lock_file: File,
    token_file: PathBuf,
    edge_token_file: PathBuf,
    /// `http` or `https`.
    scheme: &'static str,
    api: ApiOptions,
    proxy_config: Option<ProxyConfig>,
    notifications: Vec<NotificationSpec>,
}

/// The checks before anything starts, each failure saying what to do: the state
/// directory free and claimed, the tokens, TLS, the proxy's configuration.
fn prepare(
    args: &ServeArgs,
    env: &BTreeMap<String, String>,
    state_dir: &Path,
) -> Result<Prepared, Failure> {
    let (created, lock_file) = claim_state_dir(args, state_dir)?;
    let token_file = args
        .token_file
        .clone()
        .unwrap_or_else(|| state_dir.join("token"));
    let token = token(&token_file).map_err(|message| Failure::error(exit::UNAVAILABLE, message))?;
    let edge_token_file = args
        .edge_token_file
        .clone()
        .unwrap_or_else(|| state_dir.join("edge-token"));
    let edge_token = match self::token(&edge_token_file) {
        Ok(edge) if edge == token => {
            return Err(Failure::error(
                exit::INVALID_INPUT,
                format!(
                    "the edge token in {} is the write token of {}; give edge proxies a token of their own (remove {} and a new one is made)",
                    edge_token_file.display(),
                    token_file.display(),
                    edge_token_file.display()
                ),
            ));
        }
        Ok(edge) => edge,
        Err(message) => return Err(Failure::error(exit::UNAVAILABLE, message)),
    };
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => Some(
            cutover_metrics::https::server_config(cert, key)
                .map_err(|e| Failure::error(exit::INVALID_INPUT, e))?,
        ),
        _ => None,
    };
    let read_token = match &args.read_token_file {
        None => None,
        Some(file) => match self::token(file) {
            Ok(read) if read == token || read == edge_token => {
                return Err(Failure::error(
                    exit::INVALID_INPUT,
                    format!(
                        "the read token in {} is the write or the edge token; give readers a token of their own (remove {} and a new one is made)",
                        file.display(),
                        file.display()
                    ),
                ));
            }
            Ok(read) => Some(read),
            Err(message) => return Err(Failure::error(exit::UNAVAILABLE, message)),
        },
    };
    let dashboard = if args.no_dashboard {
        None
    } else {
        Some(DashboardOptions {
            base_path: normalize_base_path(&args.dashboard_base_path)
                .map_err(|e| Failure::error(exit::INVALID_INPUT, e.to_string()))?,
            read_only: args.dashboard_read_only,
            reads_need_token: read_token.is_some(),
        })
    };
    let proxy_config = proxy_config(args, env)?;
    let notifications = notification_defaults(args, env)?;
    Ok(Prepared {
        created,
        lock_file,
        token_file,
        edge_token_file,
        scheme: if tls.is_some() { "https" } else { "http" },
        api: ApiOptions {
            address: args.api,
            token,
            edge_token: Some(edge_token),
            tls,
            limits: ApiLimits {
                header_read_timeout: args.api_header_timeout.into(),
                body_read_timeout: args.api_body_timeout.into(),
                max_connections: args.api_max_connections,
                ..ApiLimits::default()
            },
            read_token,
            dashboard,
        },
        proxy_config,
        notifications,
    })
}

/// The controller's notification defaults from `--notifications`, with the checks and
/// `file:line:column` diagnostics of a release file.
fn notification_defaults(
    args: &ServeArgs,
    env: &BTreeMap<String, String>,
) -> Result<Vec<NotificationSpec>, Failure> {
    let Some(path) = &args.notifications else {
        return Ok(Vec::new());
    };
    let input = InputFile::open(path)?;
    match load::load_notification_defaults(input.source(), env) {
        Ok((defaults, _warnings)) => Ok(defaults.notifications),
        Err(diagnostics) => Err(Failure::lines(exit::INVALID_INPUT, diagnostics)),
    }
}

/// The backend `serve` drives, opened; on Kubernetes also the leader election and (unless
/// `--no-release-objects`) how to start watching `Release` objects once leading.
struct OpenedBackend {
    backend: Arc<dyn Backend>,
    elector: Option<LeaderElector>,
    release_objects: Option<Box<dyn FnOnce() -> ReleaseObjects + Send>>,
}

async fn open_backend(args: &ServeArgs, state_dir: &Path) -> Result<OpenedBackend, Failure> {
    let fail = |message: String| Failure::error(exit::UNAVAILABLE, message);
    let backend: Arc<dyn Backend> = match args.backend {
        BackendKind::Local => {
            Arc::new(LocalBackend::open(state_dir).map_err(|e| fail(e.to_string()))?)
        }
        BackendKind::Swarm => Arc::new(
            SwarmBackend::connect(&args.name)
                .await
                .map_err(|e| fail(error_chain(&e)))?,
        ),
        BackendKind::Docker => Arc::new(
            DockerBackend::connect(&args.name, state_dir)
                .await
                .map_err(|e| fail(error_chain(&e)))?,
        ),
        BackendKind::Kubernetes => {
            let backend = KubeBackend::connect(&args.name, args.namespace.as_deref())
                .await
                .map_err(|e| fail(error_chain(&e)))?;
            let release_objects = (!args.no_release_objects).then(|| {
                let (client, namespace) = (backend.watch_client(), backend.namespace().to_string());
                Box::new(move || ReleaseObjects::start(client, &namespace))
                    as Box<dyn FnOnce() -> ReleaseObjects + Send>
            });
            let elector = LeaderElector::new(
                backend.client(),
                LeaseConfig {
                    name: format!("{}-leader", args.name),
                    namespace: backend.namespace().to_string(),
                    identity: args
                        .identity
                        .clone()
                        .unwrap_or_else(cutover_kube::lease::default_identity),
                    duration: args.lease_duration.into(),
                },
            );
            return Ok(OpenedBackend {
                backend: Arc::new(backend),
                elector: Some(elector),
                release_objects,
            });
        }
    };
    Ok(OpenedBackend {
        backend,
        elector: None,
        release_objects: None,
    })
}

/// Of several replicas, only the leader drives rollouts (and serves the API, so a
/// Service in front of the replicas reaches the leader alone): waits to lead, then holds
/// the lease; the moment it is lost, this process stops, whatever it is doing, so that
/// two controllers never act at once (Kubernetes starts it again as a standby). `false`:
/// stopped by a signal before leading.
async fn lead(elector: &LeaderElector, shutdown: impl Future<Output = ()>) -> bool {
    eprintln!(
        "cutover controller: waiting to lead (Lease '{}' in namespace '{}', identity {})",
        elector.config().name,
        elector.config().namespace,
        elector.config().identity
    );
    let acquired = tokio::select! {
        acquired = elector.acquire() => acquired,
        () = shutdown => return false,
    };
    let elector = elector.clone();
    tokio::spawn(async move {
        let lost = elector.hold(acquired).await;
        eprintln!("error: {lost}; stopping so that only the leader drives rollouts");
        std::process::exit(exit::UNAVAILABLE.into());
    });
    true
}

/// Starts the embedded proxy (if any), the controller (which resumes what it drives) and
/// the API, each failure naming the flag to change.
async fn start(
    args: &ServeArgs,
    backend: Arc<dyn Backend>,
    proxy_config: Option<ProxyConfig>,
    api: ApiOptions,
    notifications: Vec<NotificationSpec>,
) -> Result<(Option<Arc<Proxy>>, Controller, Api), Failure> {
    let proxy = match proxy_config {
        None => None,
        Some(config) => match Proxy::start(config).await {
            Ok(proxy) => Some(Arc::new(proxy)),
            Err(e) => {
                let flags = if args.proxy_config.is_some() {
                    "the listeners of --proxy-config"
                } else {
                    "--listen or --admin"
                };
                return Err(Failure::error(
                    exit::UNAVAILABLE,
                    format!("{}{}", error_chain(&e), flag_hint(flags, &e)),
                ));
            }
        },
    };
    let controller = Controller::start(ControllerOptions {
        backend,
        proxy: proxy.clone(),
        prometheus: args.prometheus.clone(),
        notifications,
    })
    .await
    .map_err(|e| Failure::error(exit::UNAVAILABLE, error_chain(&e)))?;
    let api = Api::start(controller.clone(), api).await.map_err(|e| {
        Failure::error(
            exit::UNAVAILABLE,
            format!("{}{}", error_chain(&e), flag_hint("--api", &e)),
        )
    })?;
    Ok((proxy, controller, api))
}

/// Opens the backend, leads (on Kubernetes), starts, says where everything is, and
/// serves until a signal; then stops in order.
async fn serve_until_stopped(
    args: ServeArgs,
    state_dir: PathBuf,
    mut prepared: Prepared,
) -> Outcome {
    let mut shutdown = std::pin::pin!(Signals::install().wait());
    let opened = open_backend(&args, &state_dir).await?;
    if let Some(elector) = &opened.elector
        && !lead(elector, &mut shutdown).await
    {
        prepared.created.keep();
        return Ok(exit::OK);
    }
    let Prepared {
        mut created,
        mut lock_file,
        token_file,
        edge_token_file,
        scheme,
        api,
        proxy_config,
        notifications,
    } = prepared;
    let (proxy, controller, api) =
        start(&args, opened.backend, proxy_config, api, notifications).await?;
    // Started by the leader only, once the controller has resumed what it drives.
    let objects = opened.release_objects.map(|start| {
        tokio::spawn(release_objects::reconcile_forever(
            controller.clone(),
            start(),
        ))
    });
    // Started: the state directory is this controller's from now on.
    created.keep();
    note_holder(
        &mut lock_file,
        Some(&format!("{scheme}://{}", api.address())),
    );
    let files = (token_file.as_path(), edge_token_file.as_path());
    say_where(&api, proxy.as_deref(), scheme, &state_dir, files);
    if !args.no_dashboard {
        let base = normalize_base_path(&args.dashboard_base_path).unwrap_or_default();
        eprintln!(
            "dashboard on {scheme}://{}{base}/{}",
            api.address(),
            if args.dashboard_read_only {
                " (read-only)"
            } else {
                ""
            }
        );
    }
    shutdown.await;
    if let Some(objects) = objects {
        objects.abort();
    }
    eprintln!("shutting down: rollouts stay persisted and resume at the next start");
    api.shutdown().await;
    controller.stop();
    drop(controller);
    if let Some(proxy) = proxy {
        // The drivers' tasks may still hold the proxy for a moment.
        for _ in 0..50 {
            match Arc::try_unwrap(proxy.clone()) {
                Ok(proxy) => {
                    proxy.shutdown().await;
                    break;
                }
                Err(_) => tokio::time::sleep(std::time::Duration::from_millis(20)).await,
            }
        }
    }
    Ok(exit::OK)
}

/// The proxy's listeners, `A, B`.
fn listening(proxy: &Proxy) -> String {
    let addresses: Vec<String> = proxy
        .listen_addrs()
        .iter()
        .map(ToString::to_string)
        .collect();
    addresses.join(", ")
}

/// The started line: where the API, the proxy, the state and the tokens are.
fn say_where(
    api: &Api,
    proxy: Option<&Proxy>,
    scheme: &str,
    state_dir: &Path,
    (token_file, edge_token_file): (&Path, &Path),
) {
    match proxy {
        Some(proxy) => eprintln!(
            "cutover controller: API on {scheme}://{}, proxy on {} (admin {}), state in {}, token in {}, edge token in {}",
            api.address(),
            listening(proxy),
            proxy.admin_addr(),
            state_dir.display(),
            token_file.display(),
            edge_token_file.display()
        ),
        None => eprintln!(
            "cutover controller: API on {scheme}://{} (proxies pull GET /v1/routes), state in {}, token in {}, edge token in {}",
            api.address(),
            state_dir.display(),
            token_file.display(),
            edge_token_file.display()
        ),
    }
}

fn proxy_config(
    args: &ServeArgs,
    env: &BTreeMap<String, String>,
) -> Result<Option<ProxyConfig>, Failure> {
    if args.no_proxy {
        return Ok(None);
    }
    if let Some(path) = &args.proxy_config {
        let input = InputFile::open(path)?;
        return match load::load_as::<ProxyConfig>(input.source(), env) {
            Ok((config, _)) => Ok(Some(config)),
            Err(diagnostics) => Err(Failure::lines(exit::INVALID_INPUT, diagnostics)),
        };
    }
    let mut config: ProxyConfig = serde_json::from_value(serde_json::json!({ "listeners": [] }))
        .map_err(|e| Failure::error(exit::INVALID_INPUT, e))?;
    config.listeners = args
        .listen
        .iter()
        .map(|address| ListenerConfig {
            address: *address,
            tls: None,
        })
        .collect();
    config.admin = AdminConfig {
        address: args.admin,
        token_file: None,
    };
    Ok(Some(config))
}

/// Checks that every address `serve` will listen on is free, naming the flag of the one
/// that is not. The listeners are bound again for real later; this runs first so that a
/// port in use is found before anything is created.
fn addresses_free(args: &ServeArgs) -> Result<(), String> {
    let mut wanted = vec![("--api", args.api)];
    if !args.no_proxy && args.proxy_config.is_none() {
        wanted.extend(args.listen.iter().map(|a| ("--listen", *a)));
        wanted.push(("--admin", args.admin));
    }
    for (flag, address) in wanted {
        if let Err(e) = std::net::TcpListener::bind(address) {
            return Err(if e.kind() == std::io::ErrorKind::AddrInUse {
                format!(
                    "{flag} {address} is in use (another program, or another `cutover serve`, listens there); stop it, or pick a free address with {flag} ADDRESS"
                )
            } else {
                format!(
                    "cannot listen on {flag} {address}: {e}; pick another address with {flag} ADDRESS"
                )
            });
        }
    }
    Ok(())
}

/// For a listener that could not bind: which flag sets its address.
fn flag_hint(flags: &str, error: &(dyn std::error::Error + 'static)) -> String {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(e) = source {
        if let Some(io) = e.downcast_ref::<std::io::Error>()
            && io.kind() == std::io::ErrorKind::AddrInUse
        {
            return format!(
                "; the address is in use: stop what listens there, or pick a free one with {flags}"
            );
        }
        source = e.source();
    }
    String::new()
}

/// Reads a token, or writes a new random one if the file is missing: created atomically,
/// mode 0600, so a reader never sees it half-written and no one else can read it. An empty
/// or whitespace-only file is refused: it would be a token anyone could guess.
fn token(path: &Path) -> Result<String, String> {
    for _ in 0..2 {
        match std::fs::read_to_string(path) {
            Ok(token) if !token.trim().is_empty() => return Ok(token.trim().to_string()),
            Ok(_) => {
                return Err(format!(
                    "the token file {} is empty; put a token in it, or remove it and a random one is made",
                    path.display()
                ));
            }
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(format!(
                    "cannot read the token file {}: {e}",
                    path.display()
                ));
            }
            Err(_) => {}
        }
        let mut bytes = [0u8; 24];
        File::open("/dev/urandom")
            .and_then(|mut f| f.read_exact(&mut bytes))
            .map_err(|e| format!("cannot read random bytes for a token: {e}"))?;
        let token: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        // `false`: another process made the file in between; read that one.
        if cutover_backend::create_private_file(path, format!("{token}\n").as_bytes())
            .map_err(|e| format!("cannot write the token file {}: {e}", path.display()))?
        {
            return Ok(token);
        }
    }
    Err(format!("the token file {} keeps changing", path.display()))
}
