//! `demo-app`: the service cutover's demo and tests roll out. Its version, error rate and
//! latency are flags, so a "bad release" is one command line away:
//!
//! ```text
//! demo-app --app-version v1 --port 8081
//! demo-app --app-version v3 --port 8083 --error-rate 0.05 --latency 40ms
//! ```
//!
//! `GET /` answers `demo-app VERSION` (and `X-Demo-Version`), failing with 500 for the given
//! share of requests, spread evenly (every 20th at 5 %) so tests see the same rate every run;
//! `GET /healthz` always answers 200. With `--port 0` the port is chosen by the system. The
//! bound address is printed as `listening on ADDR` once the socket accepts.
//!
//! A library as well as a binary: `cutover demo` runs the same service as
//! `cutover demo-app`, so the demo needs nothing built besides `cutover`.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use clap::Parser;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;

/// A demo HTTP service with a configurable version, error rate and latency.
#[derive(Parser, Debug, Clone)]
#[command(name = "demo-app", version)]
pub struct Args {
    /// The version this instance reports.
    #[arg(long = "app-version", default_value = "v1")]
    pub app_version: String,
    /// Address to bind.
    #[arg(long, default_value = "127.0.0.1")]
    pub bind: std::net::IpAddr,
    /// Port to listen on; 0 lets the system choose.
    #[arg(long, default_value_t = 8080)]
    pub port: u16,
    /// Share of requests to `/` answered 500, from 0 to 1.
    #[arg(long, default_value_t = 0.0)]
    pub error_rate: f64,
    /// Time to wait before answering `/` (e.g. `20ms`).
    #[arg(long, default_value = "0s")]
    pub latency: cutover_core::Duration,
    /// Answer every request to `/` with 500 once this long has passed since start (a
    /// version that goes bad in production; the benchmarks time the reaction to it).
    /// The moment is printed as `failing from now (unix ms N)`.
    #[arg(long)]
    pub fail_after: Option<cutover_core::Duration>,
}

struct App {
    args: Args,
    served: AtomicU64,
    /// When `--fail-after` turns every answer into a 500.
    failing_from: Option<std::time::Instant>,
}

impl App {
    /// Whether request number `n` (from 1) fails: evenly spread, so that after any number of
    /// requests the failures are within one of `n × rate`.
    fn fails(&self, n: u64) -> bool {
        if self
            .failing_from
            .is_some_and(|from| std::time::Instant::now() >= from)
        {
            return true;
        }
        let rate = self.args.error_rate.clamp(0.0, 1.0);
        (n as f64 * rate).floor() > ((n - 1) as f64 * rate).floor()
    }

    async fn serve(
        self: Arc<Self>,
        req: Request<Incoming>,
    ) -> Result<Response<Full<Bytes>>, Infallible> {
        let version = self.args.app_version.as_str();
        let (status, body) = match req.uri().path() {
            "/healthz" => (StatusCode::OK, "ok\n".to_string()),
            "/version" => (StatusCode::OK, format!("{version}\n")),
            _ => {
                let latency: std::time::Duration = self.args.latency.into();
                if !latency.is_zero() {
                    tokio::time::sleep(latency).await;
                }
                let n = self.served.fetch_add(1, Ordering::Relaxed) + 1;
                if self.fails(n) {
                    (
                        StatusCode::INTERNAL_SERVER_ERROR,
                        format!("demo-app {version} failed on purpose\n"),
                    )
                } else {
                    (StatusCode::OK, format!("demo-app {version}\n"))
                }
            }
        };
        let mut response = Response::new(Full::new(Bytes::from(body)));
        *response.status_mut() = status;
        if let Ok(value) = http::HeaderValue::from_str(version) {
            response.headers_mut().insert("x-demo-version", value);
        }
        Ok(response)
    }
}

/// Serves until SIGINT or SIGTERM; the exit code says whether it could listen.
pub async fn run(args: Args) -> std::process::ExitCode {
    let address = SocketAddr::new(args.bind, args.port);
    let listener = match TcpListener::bind(address).await {
        Ok(listener) => listener,
        Err(e) => {
            eprintln!("demo-app: cannot listen on {address}: {e}");
            return std::process::ExitCode::from(1);
        }
    };
    match listener.local_addr() {
        Ok(bound) => println!("listening on {bound}"),
        Err(e) => eprintln!("demo-app: {e}"),
    }
    let failing_from = args.fail_after.map(|after| {
        let after: std::time::Duration = after.into();
        let from = std::time::Instant::now() + after;
        let unix_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| (d + after).as_millis());
        tokio::spawn(async move {
            tokio::time::sleep(after).await;
            println!("failing from now (unix ms {unix_ms})");
        });
        from
    });
    let app = Arc::new(App {
        args,
        served: AtomicU64::new(0),
        failing_from,
    });
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                let app = app.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |req| app.clone().serve(req));
                    let _ = auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
            _ = shutdown() => return std::process::ExitCode::SUCCESS,
        }
    }
}

/// SIGINT or SIGTERM.
async fn shutdown() {
    #[cfg(unix)]
    if let Ok(mut term) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
    {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        return;
    }
    let _ = tokio::signal::ctrl_c().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn app(rate: f64) -> App {
        App {
            args: Args::parse_from(["demo-app", "--error-rate", &rate.to_string()]),
            served: AtomicU64::new(0),
            failing_from: None,
        }
    }

    #[test]
    fn failures_are_spread_evenly_at_the_configured_rate() {
        for rate in [0.0, 0.05, 0.2, 1.0] {
            let a = app(rate);
            let failures = (1..=1000).filter(|n| a.fails(*n)).count();
            assert_eq!(failures, (1000.0 * rate) as usize, "rate {rate}");
            let first_hundred = (1..=100).filter(|n| a.fails(*n)).count();
            assert_eq!(first_hundred, (100.0 * rate) as usize, "rate {rate}");
        }
    }
}
