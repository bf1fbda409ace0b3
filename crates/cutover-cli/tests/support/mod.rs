//! End-to-end test support: a real `cutover serve` process on ephemeral ports with its own
//! state directory, the `cutover` CLI pointed at it, `cutover demo-app` instances as the
//! versions, real HTTP load through the proxy, and (where asked) a real Prometheus.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub mod kube;
pub mod prometheus;
pub mod swarm;

use serde_json::Value;

/// The `cutover` binary under test.
pub const CUTOVER: &str = env!("CARGO_BIN_EXE_cutover");

/// A port nothing listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// A directory removed (with every process of its releases) when dropped.
pub struct Scratch {
    pub path: PathBuf,
    releases: Vec<String>,
}

impl Scratch {
    pub fn new(label: &str) -> Scratch {
        let path = std::env::temp_dir().join(format!(
            "cutover-e2e-{label}-{}-{}",
            std::process::id(),
            free_port()
        ));
        std::fs::create_dir_all(&path).expect("scratch dir");
        Scratch {
            path,
            releases: Vec::new(),
        }
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if !self.releases.is_empty() {
            stop_instances(&self.releases);
        }
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// Stops every process the local backend started for these releases (they outlive the
/// controller by design).
pub fn stop_instances(releases: &[String]) {
    let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    else {
        return;
    };
    runtime.block_on(async {
        for release in releases {
            for (pid, tag) in instances(release) {
                cutover_backend::local::process::terminate(pid, &tag).await;
            }
        }
    });
}

/// Running instances of a release (from any state directory: release names are unique
/// across the tests), as `(pid, tag)`.
pub fn instances(release: &str) -> Vec<(u32, String)> {
    cutover_backend::local::process::find_tagged("")
        .into_iter()
        .filter(|(_, tag)| tag.split('/').nth(1) == Some(release))
        .collect()
}

/// A `cutover serve` process.
pub struct Serve {
    child: Option<Child>,
    pub scratch: Scratch,
    pub api: u16,
    pub listen: u16,
    pub admin: u16,
    /// The address the API binds (containers reach a controller on the host only through
    /// a non-loopback address).
    api_host: &'static str,
    extra: Vec<String>,
    /// Environment variables for the controller (say, `KUBECONFIG`).
    env: Vec<(String, String)>,
    /// Whether a start waits for the API (a standby replica serves none).
    wait_api: bool,
}

impl Serve {
    /// Starts a controller with the proxy embedded; `extra` flags are passed on.
    pub fn start(label: &str, extra: &[&str]) -> Serve {
        Serve::start_on("127.0.0.1", label, extra)
    }

    /// Starts a controller whose API binds `api_host`.
    pub fn start_on(api_host: &'static str, label: &str, extra: &[&str]) -> Serve {
        Serve::start_with(api_host, label, extra, &[], true)
    }

    /// Starts a controller with `env` added to its environment; waits for its API if
    /// `wait_api` (a controller standing by for a Lease serves none).
    pub fn start_with(
        api_host: &'static str,
        label: &str,
        extra: &[&str],
        env: &[(&str, String)],
        wait_api: bool,
    ) -> Serve {
        let mut serve = Serve {
            api_host,
            child: None,
            scratch: Scratch::new(label),
            api: free_port(),
            listen: free_port(),
            admin: free_port(),
            extra: extra.iter().map(|s| s.to_string()).collect(),
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.clone()))
                .collect(),
            wait_api,
        };
        serve.launch();
        serve
    }

    /// Whether the API answers within `limit`.
    pub fn answers_within(&self, limit: Duration) -> bool {
        let started = Instant::now();
        while started.elapsed() < limit {
            if http_get(self.api, "/healthz").is_some() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }

    /// Releases whose instances are stopped at the end of the test.
    pub fn owns(&mut self, release: &str) {
        self.scratch.releases.push(release.to_string());
    }

    fn launch(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.scratch.path.join("serve.log"))
            .expect("log file");
        let child = Command::new(CUTOVER)
            .arg("serve")
            .arg("--state-dir")
            .arg(self.scratch.path.join("state"))
            .arg("--api")
            .arg(format!("{}:{}", self.api_host, self.api))
            .arg("--listen")
            .arg(format!("127.0.0.1:{}", self.listen))
            .arg("--admin")
            .arg(format!("127.0.0.1:{}", self.admin))
            .args(&self.extra)
            .env("CUTOVER_LOG", "info,cutover_proxy=warn")
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("cutover serve starts");
        self.child = Some(child);
        if !self.wait_api {
            return;
        }
        let started = Instant::now();
        while http_get(self.api, "/healthz").is_none() {
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "the controller did not answer; its log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGKILL, as a crash would.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// The controller's exit status, once it has exited by itself.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.as_mut()?.try_wait().ok().flatten()
    }

    /// Kills and starts the controller again on the same state and ports.
    pub fn restart(&mut self) {
        self.kill();
        self.launch();
    }

    /// The controller's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.scratch.path.join("serve.log")).unwrap_or_default()
    }

    /// Runs the CLI against this controller.
    pub fn cli(&self, args: &[&str]) -> Output {
        Command::new(CUTOVER)
            .args(args)
            .env_clear()
            .env(
                "CUTOVER_CONTROLLER",
                format!("http://127.0.0.1:{}", self.api),
            )
            .env(
                "CUTOVER_TOKEN_FILE",
                self.scratch.path.join("state").join("token"),
            )
            .output()
            .expect("cutover runs")
    }

    /// The CLI as a background process (for `run --wait`).
    pub fn cli_background(&self, args: &[&str]) -> Child {
        Command::new(CUTOVER)
            .args(args)
            .env_clear()
            .env(
                "CUTOVER_CONTROLLER",
                format!("http://127.0.0.1:{}", self.api),
            )
            .env(
                "CUTOVER_TOKEN_FILE",
                self.scratch.path.join("state").join("token"),
            )
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("cutover runs")
    }

    /// A release's status from the API (`None` while the controller is down).
    pub fn status(&self, name: &str) -> Option<Value> {
        let body = http_get(self.api, &format!("/v1/releases/{name}"))?;
        serde_json::from_str(&body).ok()
    }

    /// Waits until `done(status)` holds; panics with the log after `limit`.
    pub fn wait_for(&self, name: &str, limit: Duration, done: impl Fn(&Value) -> bool) -> Value {
        let started = Instant::now();
        loop {
            if let Some(status) = self.status(name)
                && done(&status)
            {
                return status;
            }
            assert!(
                started.elapsed() < limit,
                "{name} did not get there within {limit:?}; last status: {}\nproxy routes: {}\nproxy metrics: {}\ncontroller log:\n{}",
                self.status(name).map(|s| s.to_string()).unwrap_or_default(),
                http_get(self.admin, "/routes").unwrap_or_default(),
                http_get(self.admin, "/metrics")
                    .unwrap_or_default()
                    .lines()
                    .filter(|l| l.starts_with("cutover_requests_total"))
                    .collect::<Vec<_>>()
                    .join("\n"),
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits until the release's stable slot runs and the proxy can route it: load
    /// started before then would meet no route.
    pub fn wait_routed(&self, name: &str) {
        self.wait_for(name, Duration::from_secs(20), |s| {
            s["stable"]["endpoints"]
                .as_array()
                .is_some_and(|e| !e.is_empty())
        });
    }

    /// Waits until the rollout is done.
    pub fn wait_done(&self, name: &str, limit: Duration) -> Value {
        self.wait_for(name, limit, |s| s["done"].as_bool() == Some(true))
    }

    /// The proxy's listener.
    pub fn proxy(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.listen))
    }

    /// Writes a release file into the scratch directory.
    pub fn release_file(&self, name: &str, yaml: &str) -> PathBuf {
        let path = self.scratch.path.join(format!("{name}.yaml"));
        std::fs::write(&path, yaml).expect("release file");
        path
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            eprintln!("controller log:\n{}", self.log());
        }
    }
}

/// `GET path` on 127.0.0.1:port; the body on 2xx, `None` otherwise or if down.
pub fn http_get(port: u16, path: &str) -> Option<String> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut text = String::new();
    stream.read_to_string(&mut text).ok()?;
    let (head, body) = text.split_once("\r\n\r\n")?;
    let ok = head
        .split(' ')
        .nth(1)
        .is_some_and(|code| code.starts_with('2'));
    ok.then(|| body.to_string())
}

/// The command line of a demo-app instance of `version`, for a release file.
pub fn demo_app(version: &str, flags: &[&str]) -> String {
    let mut argv = vec![
        format!("{CUTOVER:?}"),
        "demo-app".into(),
        "--app-version".into(),
        version.into(),
        "--port".into(),
        "\"{{port}}\"".into(),
    ];
    argv.extend(flags.iter().map(|f| format!("{f:?}")));
    format!("[{}]", argv.join(", "))
}

/// A release of `name` from `stable` to `candidate` (demo-app versions and flags) with
/// the given `strategy`, `analysis` and other spec sections (YAML, indented by 2).
pub fn release(
    name: &str,
    stable: (&str, &[&str]),
    candidate: (&str, &[&str]),
    sections: &str,
) -> String {
    format!(
        "apiVersion: cutover.dev/v1\nkind: Release\nmetadata:\n  name: {name}\nspec:\n  backend:\n    local:\n      stable:\n        command: {}\n      candidate:\n        command: {}\n      readinessPath: /healthz\n  version: {}\n  stableVersion: {}\n  port: 8080\n{sections}",
        demo_app(stable.0, stable.1),
        demo_app(candidate.0, candidate.1),
        candidate.0,
        stable.0,
    )
}

/// Answers counted by the version that gave them.
#[derive(Clone, Debug, Default)]
pub struct Counts {
    /// version -> (answered, failed)
    pub by_version: BTreeMap<String, (u64, u64)>,
    /// Requests that got no answer from any version (the proxy's own errors, resets).
    pub unanswered: u64,
}

impl Counts {
    /// Failed requests of the given versions plus unanswered ones.
    pub fn failures_except(&self, bad: &[&str]) -> u64 {
        self.unanswered
            + self
                .by_version
                .iter()
                .filter(|(v, _)| !bad.contains(&v.as_str()))
                .map(|(_, (_, f))| f)
                .sum::<u64>()
    }

    pub fn answered(&self, version: &str) -> u64 {
        self.by_version.get(version).map_or(0, |(n, _)| *n)
    }
}

/// Steady HTTP load through the proxy until dropped.
pub struct Load {
    stop: Arc<AtomicBool>,
    counts: Arc<Mutex<Counts>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Load {
    /// `rate` requests per second to `proxy`.
    pub fn start(proxy: SocketAddr, rate: u32) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let counts = Arc::new(Mutex::new(Counts::default()));
        let (s, c) = (stop.clone(), counts.clone());
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            runtime.block_on(generate(proxy, rate, s, c));
        });
        Load {
            stop,
            counts,
            thread: Some(thread),
        }
    }

    /// What was counted so far.
    pub fn counts(&self) -> Counts {
        self.counts.lock().expect("counts").clone()
    }

    /// Stops and returns the final counts.
    pub fn finish(mut self) -> Counts {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        self.counts()
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

async fn generate(proxy: SocketAddr, rate: u32, stop: Arc<AtomicBool>, counts: Arc<Mutex<Counts>>) {
    use http_body_util::{BodyExt, Empty};
    let client: hyper_util::client::legacy::Client<_, Empty<bytes::Bytes>> =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .build_http();
    let mut interval = tokio::time::interval(Duration::from_secs(1) / rate.max(1));
    let mut tasks = tokio::task::JoinSet::new();
    while !stop.load(Ordering::Relaxed) {
        interval.tick().await;
        let (client, counts) = (client.clone(), counts.clone());
        tasks.spawn(async move {
            let uri: http::Uri = format!("http://{proxy}/").parse().expect("uri");
            let answer = client.get(uri).await;
            let outcome = match answer {
                Ok(response) => {
                    let failed = !response.status().is_success();
                    let version = response
                        .headers()
                        .get("x-demo-version")
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_string);
                    let _ = response.into_body().collect().await;
                    version.map(|v| (v, failed))
                }
                Err(_) => None,
            };
            let mut counts = counts.lock().expect("counts");
            match outcome {
                Some((version, failed)) => {
                    let entry = counts.by_version.entry(version).or_default();
                    entry.0 += 1;
                    entry.1 += u64::from(failed);
                }
                None => counts.unanswered += 1,
            }
        });
        while tasks.try_join_next().is_some() {}
    }
    while tasks.join_next().await.is_some() {}
}

/// Sends `n` requests one after another and counts answers by version.
pub fn sample(proxy: SocketAddr, n: usize) -> Counts {
    let mut counts = Counts::default();
    for _ in 0..n {
        let Ok(mut stream) = TcpStream::connect(proxy) else {
            counts.unanswered += 1;
            continue;
        };
        let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
        let _ = write!(
            stream,
            "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        );
        let mut text = String::new();
        let _ = stream.read_to_string(&mut text);
        let version = text.lines().find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("x-demo-version: ")
                .map(str::to_string)
        });
        match version {
            Some(version) => {
                let failed = !text.starts_with("HTTP/1.1 2");
                let entry = counts
                    .by_version
                    .entry(version.trim().to_string())
                    .or_default();
                entry.0 += 1;
                entry.1 += u64::from(failed);
            }
            None => counts.unanswered += 1,
        }
    }
    counts
}

/// The history lines of a release.
pub fn history(serve: &Serve, name: &str) -> Vec<String> {
    let body = http_get(serve.api, &format!("/v1/releases/{name}/history")).unwrap_or_default();
    let value: Value = serde_json::from_str(&body).unwrap_or_default();
    value["events"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| e["message"].as_str().map(str::to_string))
        .collect()
}

/// A path in the scratch area that names nothing yet.
pub fn path_in(dir: &Path, name: &str) -> PathBuf {
    dir.join(name)
}

/// A canary with two analysed steps, judged by the proxy's own counters: the error rate's
/// upper confidence bound must be within `metric_max` to pass, its lower bound beyond it to
/// fail; each analysis measures every second until the evidence decides (up to 40).
pub fn canary(metric_max: f64) -> String {
    format!(
        "  strategy:
    progressDeadline: 2m
    canary:
      scaleDownDelay: 1s
      steps:
        - setWeight: 20
        - analysis: {{}}
        - setWeight: 60
        - analysis: {{}}
  analysis:
    metrics:
      - name: error-rate
        provider:
          builtin: error_rate
        max: {metric_max}
        interval: 1s
        count: 2
        maxCount: 40
        minRequests: 5
"
    )
}

/// `cutover record` in the background: the proxy's evidence of `release` (candidate
/// `candidate`, stable `stable`) for `seconds`, written to `path`.
pub fn record(
    serve: &Serve,
    release: &str,
    candidate: &str,
    stable: &str,
    seconds: u64,
    path: &Path,
) -> Child {
    let proxy = format!("http://127.0.0.1:{}", serve.admin);
    let span = format!("{seconds}s");
    serve.cli_background(&[
        "record",
        "--proxy",
        &proxy,
        "--release",
        release,
        "--candidate",
        candidate,
        "--stable",
        stable,
        "--seconds",
        "10",
        "--for",
        &span,
        "--output",
        path.to_str().expect("path"),
    ])
}

/// Waits for a `record` started by [`record`], then replays the recording through
/// `cutover analyze` with the release file; returns analyze's output.
pub fn replay(serve: &Serve, recorder: Child, release_file: &Path, recording: &Path) -> Output {
    let recorded = recorder.wait_with_output().expect("record ends");
    assert_eq!(recorded.status.code(), Some(0), "record: {recorded:?}");
    serve.cli(&[
        "analyze",
        release_file.to_str().expect("path"),
        "--samples",
        recording.to_str().expect("path"),
    ])
}
