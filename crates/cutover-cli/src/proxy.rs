//! `cutover proxy --config FILE`: the proxy on its own.

use std::collections::BTreeMap;
use std::path::Path;

use cutover_core::load;
use cutover_proxy::Proxy;
use cutover_proxy::config::ProxyConfig;

use crate::client::error_chain;
use crate::{InputFile, exit};

/// Loads the configuration, runs the proxy until SIGINT or SIGTERM, then drains it.
pub fn run(path: &Path, routes_from: Option<&str>, env: &BTreeMap<String, String>) -> u8 {
    init_logging(env, LogFormat::Text);
    let input = match InputFile::read_or_report(path) {
        Ok(input) => input,
        Err(code) => return code,
    };
    let source = input.source();
    let config: ProxyConfig = match load::load_as(source, env) {
        Ok((config, warnings)) => {
            for w in warnings {
                eprintln!("{w}");
            }
            config
        }
        Err(diagnostics) => {
            for d in diagnostics {
                eprintln!("{d}");
            }
            return exit::INVALID_INPUT;
        }
    };
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    if let Some(workers) = config.workers {
        runtime.worker_threads(workers.max(1));
    }
    let runtime = match runtime.enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return exit::UNAVAILABLE;
        }
    };
    runtime.block_on(async move {
        let signals = Signals::install();
        let proxy = match Proxy::start(config).await {
            Ok(proxy) => proxy,
            Err(e) => {
                eprintln!("error: {}", error_chain(&e));
                return match e {
                    cutover_proxy::StartError::Routes(_) => exit::INVALID_INPUT,
                    _ => exit::UNAVAILABLE,
                };
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
        let puller = match routes_from {
            Some(url) => match pull_routes(proxy.clone(), url, env) {
                Ok(task) => Some(task),
                Err(message) => {
                    eprintln!("error: {message}");
                    return exit::INVALID_INPUT;
                }
            },
            None => None,
        };
        signals.wait().await;
        if let Some(puller) = puller {
            puller.abort();
            let _ = puller.await;
        }
        eprintln!("shutting down: draining in-flight requests");
        let Ok(proxy) = std::sync::Arc::try_unwrap(proxy) else {
            return exit::OK;
        };
        proxy.shutdown().await;
        exit::OK
    })
}

/// How long a pulling proxy waits before asking again after a failure, or after an
/// answer that brought nothing new (a controller that does not long-poll).
const PULL_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

/// Keeps the proxy's route table equal to the controller's. Long-polls `GET
/// /v1/routes?after=VERSION`: the controller answers as soon as its table differs from the
/// one applied here (or after 25 s), so a change reaches the proxy within milliseconds.
/// When the controller is gone the proxy keeps serving the last table and asks again every
/// second.
fn pull_routes(
    proxy: std::sync::Arc<Proxy>,
    controller: &str,
    env: &BTreeMap<String, String>,
) -> Result<tokio::task::JoinHandle<()>, String> {
    let args = crate::client::ConnectionArgs {
        controller: Some(controller.to_string()),
        ..Default::default()
    };
    let client = crate::client::ApiClient::from_settings(&args, env).map_err(|e| e.to_string())?;
    Ok(tokio::spawn(async move {
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
    }))
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
