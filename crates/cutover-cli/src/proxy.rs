//! `cutover proxy --config FILE`: the proxy on its own.

use std::collections::BTreeMap;
use std::path::Path;

use cutover_core::load;
use cutover_proxy::Proxy;
use cutover_proxy::config::ProxyConfig;

use crate::{InputFile, exit};

/// Loads the configuration, runs the proxy until SIGINT or SIGTERM, then drains it.
pub fn run(path: &Path, env: &BTreeMap<String, String>) -> u8 {
    init_logging(env);
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
        signals.wait().await;
        eprintln!("shutting down: draining in-flight requests");
        proxy.shutdown().await;
        exit::OK
    })
}

/// SIGINT and SIGTERM, caught from the moment this is made: made before the proxy says it
/// listens, so a signal sent right after that drains instead of killing the process.
struct Signals {
    #[cfg(unix)]
    term: Option<tokio::signal::unix::Signal>,
    interrupt: std::pin::Pin<Box<dyn std::future::Future<Output = std::io::Result<()>> + Send>>,
}

impl Signals {
    fn install() -> Signals {
        Signals {
            #[cfg(unix)]
            term: tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok(),
            interrupt: Box::pin(tokio::signal::ctrl_c()),
        }
    }

    async fn wait(mut self) {
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

/// `error: cannot listen on 127.0.0.1:80: permission denied`: the causes, in a line.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// Logs to stderr; `CUTOVER_LOG` (or `RUST_LOG`) filters, `info` by default.
fn init_logging(env: &BTreeMap<String, String>) {
    let filter = env
        .get("CUTOVER_LOG")
        .or_else(|| env.get("RUST_LOG"))
        .cloned()
        .unwrap_or_else(|| "info".to_string());
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
}
