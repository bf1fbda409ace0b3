//! A real `cutover serve` process on ephemeral ports with its own state directory, and
//! the `cutover` CLI pointed at it.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::binary::cutover_bin;
use crate::net::{free_port, http_get};
use crate::scratch::Scratch;

/// A `cutover serve` process.
pub struct Serve {
    child: Option<Child>,
    /// Its scratch directory: the state directory (`state/`), its log, release files.
    pub scratch: Scratch,
    /// The API's port.
    pub api: u16,
    /// The embedded proxy's listener port.
    pub listen: u16,
    /// The embedded proxy's admin port.
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
        // The ports were free when picked, but until the controller binds them any
        // connection on this machine may be given one as its own (an ephemeral port). A
        // start that fails on that is tried again on new ports, its log removed, so that
        // the test sees one start only.
        for attempt in 1..=3 {
            match serve.try_launch() {
                Ok(()) => return serve,
                Err(log) if attempt < 3 && log.contains("Address already in use") => {
                    serve.kill();
                    let _ = std::fs::remove_file(serve.scratch.path.join("serve.log"));
                    (serve.api, serve.listen, serve.admin) =
                        (free_port(), free_port(), free_port());
                }
                Err(log) => panic!("the controller did not answer; its log:\n{log}"),
            }
        }
        unreachable!("the last attempt returns or panics")
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
        self.scratch.own(release);
    }

    fn launch(&mut self) {
        if let Err(log) = self.try_launch() {
            panic!("the controller did not answer; its log:\n{log}");
        }
    }

    /// Starts the process and, if it serves an API, waits for it: `Err` with the log if
    /// the process exited first or the API did not answer within 20 s.
    fn try_launch(&mut self) -> Result<(), String> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.scratch.path.join("serve.log"))
            .expect("log file");
        let child = Command::new(cutover_bin())
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
            return Ok(());
        }
        let started = Instant::now();
        while http_get(self.api, "/healthz").is_none() {
            if started.elapsed() > Duration::from_secs(20) || self.exited().is_some() {
                return Err(self.log());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(())
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

    /// The CLI pointed at this controller (its address and token file), with nothing else
    /// from this machine's environment.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(cutover_bin());
        command
            .args(args)
            .env_clear()
            .env(
                "CUTOVER_CONTROLLER",
                format!("http://127.0.0.1:{}", self.api),
            )
            .env(
                "CUTOVER_TOKEN_FILE",
                self.scratch.path.join("state").join("token"),
            );
        command
    }

    /// Runs the CLI against this controller.
    pub fn cli(&self, args: &[&str]) -> Output {
        self.command(args).output().expect("cutover runs")
    }

    /// The CLI as a background process (for `run --wait`).
    pub fn cli_background(&self, args: &[&str]) -> Child {
        self.command(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("cutover runs")
    }

    /// `cutover run FILE`: submits the release, or with `wait` follows it to its outcome
    /// (`--wait --timeout 3m --output json`).
    pub fn run(&self, file: &Path, wait: bool) -> Output {
        let path = file.to_str().expect("path");
        if wait {
            self.cli(&["run", path, "--wait", "--timeout", "3m", "--output", "json"])
        } else {
            self.cli(&["run", path])
        }
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
