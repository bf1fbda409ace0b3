//! A real Prometheus (Debian's `prometheus`) scraping one target every second. In CI (`CI`
//! set) a missing `prometheus` fails the test; elsewhere the test skips, saying so loudly.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A Prometheus process with its own configuration and data directory, stopped (and
/// the directory removed) when dropped.
pub struct Prometheus {
    /// Its web port on 127.0.0.1.
    pub port: u16,
    child: Child,
    dir: std::path::PathBuf,
}

impl Prometheus {
    /// Starts Prometheus on `port`, scraping `target` every second; `None` where it is not
    /// installed outside CI.
    pub fn start(port: u16, target: u16) -> Option<Prometheus> {
        if Command::new("prometheus")
            .arg("--version")
            .output()
            .is_err()
        {
            return crate::skip_or_fail(
                "Debian's `prometheus`",
                "`bash scripts/test.sh` (as root) or `apt-get install prometheus`",
            );
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

    /// Starts the process (again, after [`stop`](Self::stop)) on the same port and data,
    /// and waits until it is ready.
    pub fn launch(&mut self) {
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
        while crate::net::http_get(self.port, "/-/ready").is_none() {
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "prometheus did not start"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Its address, as a provider's `address` names it.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Kills the process (its data stays until the drop).
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Waits until Prometheus has scraped its target at least once.
    pub fn wait_scraping(&self) {
        let started = Instant::now();
        loop {
            let up = crate::net::http_get(self.port, "/api/v1/query?query=up").unwrap_or_default();
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
pub const PROMQL_CANARY: &str = "  strategy:
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
