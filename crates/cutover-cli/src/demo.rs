//! `cutover demo`: the whole story in one process, nothing to install. It starts the
//! proxy, the controller on the local backend (in a temporary state directory), and a load
//! generator; `cutover demo-app` (this same binary) plays v1, v2 and v3. It rolls v1 -> v2
//! with `canary-progressive` to promotion, then v2 -> v3 (5 % errors, 40 ms slower), which
//! the analysis rolls back, and prints what happened and why.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use cutover_backend::{Backend, LocalBackend, Slot};
use cutover_controller::{Controller, ControllerOptions, RolloutStatus};
use cutover_proxy::Proxy;
use cutover_proxy::config::{AdminConfig, ListenerConfig, ProxyConfig};
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use crate::exit;
use crate::failure::{Failure, Outcome};
use crate::proxy::{LogFormat, init_logging};

/// The demo's release.
const RELEASE: &str = "demo-shop";

/// Longest a rollout of the demo may take before the demo gives up on it.
const ROLLOUT_LIMIT: Duration = Duration::from_secs(90);

/// Requests by version, as the load generator saw them.
#[derive(Default)]
struct Tally {
    by_version: BTreeMap<String, (u64, u64)>,
}

impl Tally {
    fn count(&mut self, version: &str, failed: bool) {
        let entry = self.by_version.entry(version.to_string()).or_default();
        entry.0 += 1;
        entry.1 += u64::from(failed);
    }
}

/// The release file for `stable -> candidate`.
fn release_yaml(exe: &Path, stable: (&str, &str), candidate: (&str, &str)) -> String {
    let exe = serde_json::to_string(&exe.display().to_string()).unwrap_or_default();
    let command = |version: &str, flags: &str| {
        format!("[{exe}, demo-app, --app-version, {version}, --port, \"{{{{port}}}}\"{flags}]")
    };
    format!(
        r#"apiVersion: cutover.dev/v1
kind: Release
metadata:
  name: {RELEASE}
spec:
  backend:
    local:
      stable:
        command: {stable_command}
      candidate:
        command: {candidate_command}
      readinessPath: /healthz
  version: {candidate_version}
  stableVersion: {stable_version}
  port: 8080
  strategy:
    use: canary-progressive
    canary:
      scaleDownDelay: 2s
  analysis:
    metrics:
      # Each analysis pools its 5 s windows until the evidence decides (up to a minute):
      # the candidate passes once the data excludes a regression, at 98 % confidence.
      - name: error-rate
        provider:
          builtin: error_rate
        compare:
          maxIncrease: 0.02
        interval: 5s
        count: 1
        maxCount: 12
        minRequests: 20
      - name: latency-p95
        provider:
          builtin: latency_p95
        compare:
          maxIncrease: 0.01
        interval: 5s
        count: 1
        maxCount: 12
        minRequests: 20
  guardrails:
    - name: candidate-5xx
      metric: error_rate
      max: 0.5
      window: 5s
      minRequests: 20
"#,
        stable_command = command(stable.0, stable.1),
        candidate_command = command(candidate.0, candidate.1),
        stable_version = stable.0,
        candidate_version = candidate.0,
    )
}

/// Runs the demo; exit 0 when v2 was promoted and v3 rolled back.
pub fn run(rate: u32, env: &BTreeMap<String, String>) -> Outcome {
    if !env.contains_key("CUTOVER_LOG") && !env.contains_key("RUST_LOG") {
        // The demo prints its own story; the controller's logs only when asked for.
        let mut quiet = env.clone();
        quiet.insert("CUTOVER_LOG".into(), "warn".into());
        init_logging(&quiet, LogFormat::Text);
    } else {
        init_logging(env, LogFormat::Text);
    }
    let exe = std::env::current_exe().map_err(|e| {
        Failure::error(
            exit::UNAVAILABLE,
            format!("cannot find this program's path: {e}"),
        )
    })?;
    let state = std::env::temp_dir().join(format!("cutover-demo-{}", std::process::id()));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure::error(exit::UNAVAILABLE, format!("cannot start the runtime: {e}")))?;
    let code = runtime.block_on(async {
        let backend =
            Arc::new(LocalBackend::open(&state).map_err(|e| Failure::error(exit::UNAVAILABLE, e))?);
        let running: Arc<Mutex<Option<Controller>>> = Arc::default();
        let code = tokio::select! {
            code = demo(&exe, &state, rate.max(20), backend.clone(), running.clone()) => code,
            _ = crate::proxy::Signals::install().wait() => {
                eprintln!("\ninterrupted: stopping the demo's processes");
                Ok(exit::FAILED)
            }
        };
        // Whatever happened, stop the rollouts, then every process the demo started.
        if let Some(controller) = running
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take()
        {
            controller.stop();
        }
        for slot in [Slot::Candidate, Slot::Previous, Slot::Stable] {
            let _ = backend.retire(RELEASE, slot).await;
        }
        code
    });
    let _ = std::fs::remove_dir_all(&state);
    code
}

/// The demo's proxy (on a free loopback port, and its listening address) and a
/// controller driving the local backend through it.
async fn start_services(
    backend: Arc<LocalBackend>,
) -> Result<(Arc<Proxy>, SocketAddr, Controller), Failure> {
    let mut config: ProxyConfig = serde_json::from_value(serde_json::json!({ "listeners": [] }))
        .map_err(|e| Failure::error(exit::UNAVAILABLE, e))?;
    config.listeners = vec![ListenerConfig {
        address: SocketAddr::from(([127, 0, 0, 1], 0)),
        tls: None,
    }];
    config.admin = AdminConfig {
        address: SocketAddr::from(([127, 0, 0, 1], 0)),
        token_file: None,
    };
    let proxy = Arc::new(Proxy::start(config).await.map_err(|e| {
        Failure::error(
            exit::UNAVAILABLE,
            format!("cannot start the proxy: {}", crate::client::error_chain(&e)),
        )
    })?);
    let Some(listen) = proxy.listen_addrs().first().copied() else {
        return Err(Failure::lines(exit::UNAVAILABLE, Vec::<String>::new()));
    };
    let controller = Controller::start(ControllerOptions {
        backend,
        proxy: Some(proxy.clone()),
        prometheus: None,
        notifications: Vec::new(),
    })
    .await
    .map_err(|e| Failure::error(exit::UNAVAILABLE, e))?;
    Ok((proxy, listen, controller))
}

/// Both rollouts under load, then the summary: exit 0 when both ended as expected and
/// no request to a healthy version failed.
async fn demo(
    exe: &Path,
    state: &Path,
    rate: u32,
    backend: Arc<LocalBackend>,
    running: Arc<Mutex<Option<Controller>>>,
) -> Outcome {
    let started = Instant::now();
    let (proxy, listen, controller) = start_services(backend).await?;
    *running
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(controller.clone());
    println!(
        "cutover demo: proxy on http://{listen} (metrics on http://{}/metrics), state in {}",
        proxy.admin_addr(),
        state.display()
    );
    println!("load: {rate} requests/s through the proxy, counted by the version that answered\n");

    let tally = Arc::new(Mutex::new(Tally::default()));
    let mut load = None;

    let mut results = Vec::new();
    let rollouts = [
        (
            ("v1", ""),
            ("v2", ""),
            "v2 is healthy: canary-progressive should promote it",
        ),
        (
            ("v2", ""),
            ("v3", ", --error-rate, \"0.05\", --latency, 40ms"),
            "v3 fails 5 % of requests and is 40 ms slower: the analysis should roll it back",
        ),
    ];
    for (stable, candidate, expectation) in rollouts {
        println!("== {} -> {}: {expectation}", stable.0, candidate.0);
        let text = release_yaml(exe, stable, candidate);
        let file = state.join(format!("release-{}.yaml", candidate.0));
        let _ = std::fs::write(&file, &text);
        println!("   release file: {}", file.display());
        let release = Controller::parse(&file.display().to_string(), &text).map_err(|e| {
            Failure::error(
                exit::INVALID_INPUT,
                format!("the demo's release is invalid: {e}"),
            )
        })?;
        let rollout_started = Instant::now();
        controller
            .submit(release)
            .await
            .map_err(|e| Failure::error(exit::UNAVAILABLE, e))?;
        if load.is_none() {
            // Traffic starts once the proxy routes the release (stable only, at first).
            while proxy.routes().routes.is_empty() {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            load = Some(tokio::spawn(generate_load(listen, rate, tally.clone())));
        }
        let finished = follow(&controller, started).await;
        let Some(status) = finished else {
            return Err(Failure::error(
                exit::FAILED,
                format!(
                    "the rollout did not finish within {}s",
                    ROLLOUT_LIMIT.as_secs()
                ),
            ));
        };
        results.push((stable.0, candidate.0, status, rollout_started.elapsed()));
        println!();
    }
    if let Some(load) = load {
        load.abort();
    }
    controller.stop();

    Ok(summary(started, &results, &tally))
}

/// Prints how each rollout ended and what the load saw; the exit code says whether all
/// went as expected.
fn summary(
    started: Instant,
    results: &[(&str, &str, Arc<RolloutStatus>, Duration)],
    tally: &Mutex<Tally>,
) -> u8 {
    println!("== Summary ({:.0}s)", started.elapsed().as_secs_f64());
    let mut as_expected = true;
    for (i, (from, to, status, took)) in results.iter().enumerate() {
        let outcome = status.outcome.unwrap_or("unfinished");
        let reason = status
            .reason
            .as_deref()
            .map(|r| format!(": {r}"))
            .unwrap_or_default();
        println!(
            "   {from} -> {to}: {outcome} after {:.1}s{reason}",
            took.as_secs_f64()
        );
        let expected = if i == 0 { "promoted" } else { "rolledBack" };
        as_expected &= outcome == expected;
    }
    let tally = tally
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let total: u64 = tally.by_version.values().map(|(n, _)| n).sum();
    println!("   requests through the proxy: {total}");
    let mut healthy_failures = 0;
    for (version, (n, failed)) in &tally.by_version {
        let note = if version == "v3" {
            " (v3's own errors, on the share of traffic it got before the rollback)"
        } else {
            healthy_failures += failed;
            ""
        };
        println!("     {version:<8} {n:>7} answered, {failed} failed{note}");
    }
    println!("   failed requests on healthy versions: {healthy_failures}");
    if as_expected && healthy_failures == 0 {
        println!(
            "\nAs expected: the healthy version was promoted step by step, the bad one rolled back, and no request to a healthy version failed."
        );
        exit::OK
    } else {
        println!("\nNot as expected: see above.");
        exit::FAILED
    }
}

/// Prints the rollout's progress until it is done; `None` past [`ROLLOUT_LIMIT`].
async fn follow(controller: &Controller, started: Instant) -> Option<Arc<RolloutStatus>> {
    let mut watch = controller.watch(RELEASE).ok()?;
    let deadline = Instant::now() + ROLLOUT_LIMIT;
    let mut last_line = String::new();
    loop {
        let status = watch.borrow_and_update().clone();
        let line = progress_line(&status);
        if line != last_line {
            println!("   [{:>5.1}s] {line}", started.elapsed().as_secs_f64());
            last_line = line;
        }
        if status.done {
            return Some(status);
        }
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, watch.changed()).await {
            Ok(Ok(())) => {}
            _ => return None,
        }
    }
}

fn progress_line(status: &RolloutStatus) -> String {
    let mut line = format!("{}, weight {}%", status.description, status.weight);
    if let Some(step) = status.step.and_then(|s| status.plan.get(s)) {
        line = format!("{line} [{step}]");
    }
    if !status.done
        && let Some(analysis) = &status.analysis
        && status.description.contains("analyzing")
    {
        for m in &analysis.metrics {
            let value = m.last_value.map_or("-".to_string(), |v| format!("{v:.4}"));
            let state = match (m.verdict, m.needs) {
                (Some(verdict), _) => format!("{verdict:?}").to_lowercase(),
                (None, Some(needs)) => needs.to_string(),
                (None, None) => format!("measurement {} of up to {}", m.measurements, m.max_count),
            };
            line.push_str(&format!(" | {} {value}: {state}", m.name));
        }
    }
    if let Some(reason) = &status.reason {
        line.push_str(&format!(" ({reason})"));
    }
    line
}

/// Sends `rate` requests per second through the proxy, counting answers by version.
async fn generate_load(listen: SocketAddr, rate: u32, tally: Arc<Mutex<Tally>>) {
    let client: Client<HttpConnector, Empty<Bytes>> =
        Client::builder(TokioExecutor::new()).build(HttpConnector::new());
    let mut interval = tokio::time::interval(Duration::from_secs(1) / rate);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let uri: http::Uri = match format!("http://{listen}/").parse() {
        Ok(uri) => uri,
        Err(_) => return,
    };
    loop {
        interval.tick().await;
        let client = client.clone();
        let tally = tally.clone();
        let uri = uri.clone();
        tokio::spawn(async move {
            let (version, failed) = match client.get(uri).await {
                Ok(response) => {
                    let version = response
                        .headers()
                        .get("x-demo-version")
                        .and_then(|v| v.to_str().ok())
                        .map_or_else(
                            || format!("(proxy {})", response.status().as_u16()),
                            str::to_string,
                        );
                    let failed = !response.status().is_success();
                    let _ = response.into_body().collect().await;
                    (version, failed)
                }
                Err(_) => ("(no answer)".to_string(), true),
            };
            tally
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .count(&version, failed);
        });
    }
}
