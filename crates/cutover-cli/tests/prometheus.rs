//! End to end with a real Prometheus (Debian's `prometheus`, scraping the embedded proxy's
//! `/metrics` every second): a PromQL error rate judges the candidate. In CI (`CI` set) a
//! missing `prometheus` fails the test; elsewhere the test skips, saying so loudly.

mod support;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use support::{Load, Serve, release, sample};

struct Prometheus {
    child: Child,
    port: u16,
    dir: std::path::PathBuf,
}

impl Prometheus {
    /// Starts Prometheus on `port`, scraping `target` every second; `None` where it is not
    /// installed outside CI.
    fn start(port: u16, target: u16) -> Option<Prometheus> {
        if Command::new("prometheus")
            .arg("--version")
            .output()
            .is_err()
        {
            assert!(
                std::env::var_os("CI").is_none(),
                "prometheus is not installed: scripts/test.sh installs Debian's package"
            );
            eprintln!(
                "SKIPPED: this end-to-end test needs `prometheus` (apt-get install prometheus)"
            );
            return None;
        }
        let dir = std::env::temp_dir().join(format!("cutover-e2e-prometheus-{port}"));
        std::fs::create_dir_all(&dir).expect("dir");
        let config = dir.join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  - job_name: cutover-proxy\n    static_configs:\n      - targets: ['127.0.0.1:{target}']\n"
            ),
        )
        .expect("config");
        let mut prometheus = Prometheus {
            child: Command::new("true").spawn().expect("placeholder"),
            port,
            dir,
        };
        prometheus.launch();
        Some(prometheus)
    }

    fn launch(&mut self) {
        self.child = Command::new("prometheus")
            .arg(format!(
                "--config.file={}",
                self.dir.join("prometheus.yml").display()
            ))
            .arg(format!(
                "--storage.tsdb.path={}",
                self.dir.join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{}", self.port))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("prometheus starts");
        let started = Instant::now();
        while support::http_get(self.port, "/-/ready").is_none() {
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "prometheus did not start"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Waits until Prometheus has scraped its target at least once.
    fn wait_scraping(&self) {
        let started = Instant::now();
        loop {
            let up = support::http_get(self.port, "/api/v1/query?query=up").unwrap_or_default();
            if up.contains("\"1\"]") {
                return;
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "prometheus never scraped: {up}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A canary judged by PromQL: the candidate's 5xx share over the last 5 s of scrapes.
const PROMQL_CANARY: &str = "  strategy:
    progressDeadline: 3m
    canary:
      scaleDownDelay: 1s
      steps:
        - setWeight: 30
        - analysis: {}
        - setWeight: 70
        - analysis: {}
  analysis:
    metrics:
      - name: error-rate
        provider:
          prometheus:
            query: >-
              sum(rate(cutover_requests_total{release=\"{{release}}\",version=\"{{candidate}}\",code_class=\"5xx\"}[5s]))
              / sum(rate(cutover_requests_total{release=\"{{release}}\",version=\"{{candidate}}\"}[5s]))
            timeout: 2s
        max: 0.05
        initialDelay: 4s
        interval: 2s
        count: 2
        # The candidate's series needs two scrapes before rate() has a value.
        inconclusiveLimit: 1
        consecutiveErrorLimit: 2
";

/// The controller and Prometheus, wired together; `None` when skipping.
fn setup(label: &str, release_name: &str) -> Option<(Serve, Prometheus)> {
    // Prometheus needs the proxy's admin port, the controller Prometheus's address: pick
    // Prometheus's port first.
    let port = support::free_port();
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
    let metrics = support::http_get(serve.api, "/metrics").unwrap_or_default();
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
    assert_eq!(support::instances("e2e-promql").len(), 1, "v3 is gone");
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
