//! `cutover proxy --config FILE`: the proxy on its own.

use std::collections::BTreeMap;
use std::path::Path;

use cutover_core::load;
use cutover_proxy::Proxy;
use cutover_proxy::config::ProxyConfig;

use crate::client::error_chain;
use crate::failure::{Failure, Outcome};
use crate::{InputFile, exit};

/// Loads the configuration, runs the proxy until SIGINT or SIGTERM, then drains it.
pub fn run(
    path: &Path,
    routes_from: Option<&crate::client::ConnectionArgs>,
    env: &BTreeMap<String, String>,
) -> Outcome {
    init_logging(env, LogFormat::Text);
    let config = load_config(path, env)?;
    // Client connections run on `workers` threads of their own (one per core by default),
    // each a single-threaded runtime; this thread runs the admin API, the guardrails, the
    // route puller and the signals.
    let workers = config.workers.unwrap_or_else(|| {
        std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
    });
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure::error(exit::UNAVAILABLE, format!("cannot start the runtime: {e}")))?;
    runtime.block_on(async move {
        let signals = Signals::install();
        let proxy = match Proxy::start_workers(config, workers).await {
            Ok(proxy) => proxy,
            Err(e) => {
                // Bad settings are invalid input (2); what the machine refuses (a port in
                // use, an unreadable file) leaves the proxy unable to start (4).
                let code = match e {
                    cutover_proxy::StartError::Routes(_)
                    | cutover_proxy::StartError::Config(_)
                    | cutover_proxy::StartError::EmptyToken { .. } => exit::INVALID_INPUT,
                    _ => exit::UNAVAILABLE,
                };
                return Err(Failure::error(code, error_chain(&e)));
            }
        };
        eprintln!(
            "cutover proxy listening on {} (admin {})",
            proxy
                .listen_addrs()
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", "),
            proxy.admin_addr()
        );
        let proxy = std::sync::Arc::new(proxy);
        let tasks = match routes_from {
            Some(controller) => match pull_routes(proxy.clone(), controller, env) {
                Ok(tasks) => tasks,
                Err(message) => return Err(Failure::error(exit::INVALID_INPUT, message)),
            },
            None => Vec::new(),
        };
        signals.wait().await;
        for task in tasks {
            task.abort();
            let _ = task.await;
        }
        eprintln!("shutting down: draining in-flight requests");
        let Ok(proxy) = std::sync::Arc::try_unwrap(proxy) else {
            return Ok(exit::OK);
        };
        proxy.shutdown().await;
        Ok(exit::OK)
    })
}

/// The proxy's configuration file, read and checked (its warnings printed).
fn load_config(path: &Path, env: &BTreeMap<String, String>) -> Result<ProxyConfig, Failure> {
    let input = InputFile::open(path)?;
    match load::load_as(input.source(), env) {
        Ok((config, warnings)) => {
            for w in warnings {
                eprintln!("{w}");
            }
            Ok(config)
        }
        Err(diagnostics) => Err(Failure::lines(exit::INVALID_INPUT, diagnostics)),
    }
}

/// How long a pulling proxy waits before asking again after a failure, or after an
/// answer that brought nothing new (a controller that does not long-poll).
const PULL_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

/// Keeps the proxy's route table equal to the controller's, and reports the guardrail
/// trips of this proxy to the controller (see [`report_trips`]).
///
/// Long-polls `GET /v1/routes?after=VERSION`: the controller answers as soon as its table
/// differs from the one applied here (or after 25 s), so a change reaches the proxy within
/// milliseconds. When the controller is gone the proxy keeps serving the last table and
/// asks again every second.
fn pull_routes(
    proxy: std::sync::Arc<Proxy>,
    controller: &crate::client::ConnectionArgs,
    env: &BTreeMap<String, String>,
) -> Result<Vec<tokio::task::JoinHandle<()>>, String> {
    let client =
        crate::client::ApiClient::from_settings(controller, env).map_err(|e| e.to_string())?;
    let reporter = tokio::spawn(report_trips(proxy.clone(), client.clone()));
    let puller = tokio::spawn(async move {
        let mut applied: Option<u64> = None;
        let mut failing = false;
        loop {
            let path = match applied {
                Some(version) => format!("/v1/routes?after={version}"),
                None => "/v1/routes".to_string(),
            };
            match client.get(&path).await {
                Ok(table) => {
                    failing = false;
                    let version = table["version"].as_u64();
                    if version == applied {
                        tokio::time::sleep(PULL_EVERY).await;
                        continue;
                    }
                    match serde_json::from_value::<cutover_proxy::config::RouteTableConfig>(
                        serde_json::json!({ "routes": table["routes"] }),
                    ) {
                        Ok(routes) => match proxy.set_routes(&routes).await {
                            Ok(_) => {
                                tracing::info!(version, "route table pulled from the controller");
                                applied = version;
                            }
                            Err(e) => {
                                tracing::error!(error = %e, "the controller's route table is refused");
                                tokio::time::sleep(PULL_EVERY).await;
                            }
                        },
                        Err(e) => {
                            tracing::error!(error = %e, "the controller's route table cannot be read");
                            tokio::time::sleep(PULL_EVERY).await;
                        }
                    }
                }
                Err(e) => {
                    if !failing {
                        tracing::warn!(error = %e, "cannot pull routes; serving the last table");
                    }
                    failing = true;
                    tokio::time::sleep(PULL_EVERY).await;
                }
            }
        }
    });
    Ok(vec![puller, reporter])
}

/// How long a trip report is retried while the controller cannot take it.
const REPORT_FOR: std::time::Duration = std::time::Duration::from_secs(120);

/// Reports each guardrail trip of this proxy to the controller (`POST
/// /v1/releases/{name}/guardrail`, with the edge token), so the controller rolls the
/// release back, as it does when its embedded proxy trips. Without the report the proxy
/// would cut the candidate off by itself while the controller, hearing nothing, went on
/// setting weights. It waits on the proxy's events rather than polling them. A report that
/// fails is retried every second for two minutes.
async fn report_trips(proxy: std::sync::Arc<Proxy>, client: crate::client::ApiClient) {
    let mut ids = proxy.subscribe_events();
    let mut seen = *ids.borrow_and_update();
    let mut pending: Vec<(String, serde_json::Value, tokio::time::Instant)> = Vec::new();
    let mut next_retry = tokio::time::Instant::now();
    loop {
        // Woken by the proxy's next event, or when a report that failed is due again.
        let changed = if pending.is_empty() {
            ids.changed().await
        } else {
            tokio::select! {
                changed = ids.changed() => changed,
                () = tokio::time::sleep_until(next_retry) => Ok(()),
            }
        };
        if changed.is_err() {
            return;
        }
        for event in proxy.events_since(seen) {
            seen = seen.max(event.id);
            if let Some(trip) = event.kind.into_guardrail_trip() {
                let body = serde_json::json!({
                    "version": trip.version,
                    "guardrail": trip.guardrail,
                    "detail": trip.detail,
                });
                pending.push((trip.release, body, tokio::time::Instant::now() + REPORT_FOR));
                next_retry = tokio::time::Instant::now();
            }
        }
        if pending.is_empty() || tokio::time::Instant::now() < next_retry {
            continue;
        }
        let mut left = Vec::new();
        for (release, body, until) in pending.drain(..) {
            let path = format!("/v1/releases/{release}/guardrail");
            match client
                .post(
                    &path,
                    body.to_string().into_bytes(),
                    &[("content-type", "application/json".to_string())],
                )
                .await
            {
                Ok(_) => tracing::info!(%release, "guardrail trip reported to the controller"),
                Err(e)
                    if e.exit_code() == crate::exit::UNAVAILABLE
                        && tokio::time::Instant::now() < until =>
                {
                    tracing::warn!(%release, error = %e, "cannot report a guardrail trip yet; retrying");
                    left.push((release, body, until));
                }
                Err(e) => tracing::error!(
                    %release,
                    error = %e,
                    "the controller did not take the guardrail trip (give this proxy the controller's edge token: --token-file)"
                ),
            }
        }
        pending = left;
        next_retry = tokio::time::Instant::now() + PULL_EVERY;
    }
}

/// SIGINT and SIGTERM, caught from the moment this is made: made before the proxy says it
/// listens, so a signal sent right after that drains instead of killing the process.
pub struct Signals {
    #[cfg(unix)]
    term: Option<tokio::signal::unix::Signal>,
    interrupt: std::pin::Pin<Box<dyn std::future::Future<Output = std::io::Result<()>> + Send>>,
}

impl Signals {
    /// Starts catching SIGINT and SIGTERM.
    pub fn install() -> Signals {
        Signals {
            #[cfg(unix)]
            term: tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok(),
            interrupt: Box::pin(tokio::signal::ctrl_c()),
        }
    }

    /// Waits for either.
    pub async fn wait(mut self) {
        #[cfg(unix)]
        if let Some(term) = self.term.as_mut() {
            tokio::select! {
                _ = &mut self.interrupt => {}
                _ = term.recv() => {}
            }
            return;
        }
        let _ = self.interrupt.await;
    }
}

/// How logs are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line, for log collectors.
    Json,
}

/// Logs to stderr; `CUTOVER_LOG` (or `RUST_LOG`) filters, `info` by default.
pub fn init_logging(env: &BTreeMap<String, String>, format: LogFormat) {
    let filter = env
        .get("CUTOVER_LOG")
        .or_else(|| env.get("RUST_LOG"))
        .cloned()
        .unwrap_or_else(|| "info".to_string());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .try_init(),
        LogFormat::Json => builder.json().with_current_span(true).try_init(),
    };
}
