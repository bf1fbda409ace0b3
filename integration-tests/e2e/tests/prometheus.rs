//! End to end with a real Prometheus (Debian's `prometheus`, scraping the embedded proxy's
//! `/metrics` every second): a PromQL error rate judges the candidate. In CI (`CI` set) a
//! missing `prometheus` fails the test; elsewhere the test skips, saying so loudly.

use std::time::{Duration, Instant};

use cutover_test_kit::prometheus::{PROMQL_CANARY, Prometheus};
use cutover_test_kit::{Load, Serve, release, sample};

/// The controller and Prometheus, wired together; `None` when skipping.
fn setup(label: &str, release_name: &str) -> Option<(Serve, Prometheus)> {
    // Prometheus needs the proxy's admin port, the controller Prometheus's address: pick
    // Prometheus's port first.
    let port = cutover_test_kit::free_port();
    let mut serve = Serve::start(
        label,
        &["--prometheus", &format!("http://127.0.0.1:{port}")],
    );
    serve.owns(release_name);
    let prometheus = Prometheus::start(port, serve.admin)?;
    prometheus.wait_scraping();
    Some((serve, prometheus))
}

fn start_with_load(serve: &Serve, name: &str, yaml: &str) -> Load {
    let file = serve.release_file(name, yaml);
    let submitted = serve.cli(&["run", file.to_str().expect("path")]);
    assert_eq!(submitted.status.code(), Some(0), "{submitted:?}");
    serve.wait_routed(name);
    Load::start(serve.proxy(), 80)
}

#[test]
fn promql_promotes_a_good_candidate_and_rolls_back_a_bad_one() {
    let Some((serve, _prometheus)) = setup("promql", "e2e-promql") else {
        return;
    };
    let load = start_with_load(
        &serve,
        "e2e-promql",
        &release("e2e-promql", ("v1", &[]), ("v2", &[]), PROMQL_CANARY),
    );
    let status = serve.wait_done("e2e-promql", Duration::from_secs(90));
    assert_eq!(status["outcome"], "promoted", "{status}");
    let metrics = cutover_test_kit::http_get(serve.api, "/metrics").unwrap_or_default();
    assert!(
        metrics.contains("cutover_analysis_measurements_total{release=\"e2e-promql\",metric=\"error-rate\",result=\"pass\"}"),
        "{metrics}"
    );
    // The next release of the same service: v2 -> v3, which fails 20 % of requests.
    let file = serve.release_file(
        "e2e-promql",
        &release(
            "e2e-promql",
            ("v2", &[]),
            ("v3", &["--error-rate", "0.2"]),
            PROMQL_CANARY,
        ),
    );
    let run = serve.cli(&[
        "run",
        file.to_str().expect("path"),
        "--wait",
        "--output",
        "json",
    ]);
    let counts = load.finish();
    assert_eq!(run.status.code(), Some(1), "{run:?}");
    let report: serde_json::Value = serde_json::from_slice(&run.stdout).expect("json");
    assert_eq!(report["outcome"], "rolledBack");
    assert!(
        report["reason"]
            .as_str()
            .is_some_and(|r| r.contains("error-rate")),
        "{report}"
    );
    assert_eq!(counts.failures_except(&["v3"]), 0, "{counts:?}");
    assert_eq!(
        sample(serve.proxy(), 20).answered("v2"),
        20,
        "all traffic on v2"
    );
    assert_eq!(
        cutover_test_kit::instances("e2e-promql").len(),
        1,
        "v3 is gone"
    );
}

#[test]
fn with_prometheus_gone_the_rollout_holds_then_rolls_back_and_never_promotes() {
    let Some((serve, mut prometheus)) = setup("promql-gone", "e2e-promql-gone") else {
        return;
    };
    let load = start_with_load(
        &serve,
        "e2e-promql-gone",
        &release("e2e-promql-gone", ("v1", &[]), ("v2", &[]), PROMQL_CANARY),
    );
    serve.wait_for("e2e-promql-gone", Duration::from_secs(30), |s| {
        s["step"] == 1 && s["phase"] == "step"
    });
    prometheus.stop();
    let stopped = Instant::now();
    // While the provider fails, the rollout does not move past its analysis.
    let held = serve.wait_for("e2e-promql-gone", Duration::from_secs(60), |s| {
        s["done"] == true || s["analysis"]["metrics"][0]["errors"].as_u64() >= Some(1)
    });
    assert_eq!(held["step"], 1, "held at the analysis: {held}");
    assert_eq!(held["weight"], 30);
    let status = serve.wait_done("e2e-promql-gone", Duration::from_secs(60));
    let counts = load.finish();
    assert_eq!(
        status["outcome"], "rolledBack",
        "never promoted without data: {status}"
    );
    let reason = status["reason"].as_str().expect("reason");
    assert!(reason.contains("error-rate"), "{reason}");
    // Three errors in a row (more than consecutiveErrorLimit 2), 2 s apart.
    assert!(
        stopped.elapsed() >= Duration::from_secs(3),
        "{:?}",
        stopped.elapsed()
    );
    assert_eq!(counts.failures_except(&[]), 0, "{counts:?}");
    assert_eq!(sample(serve.proxy(), 20).answered("v1"), 20);
}
