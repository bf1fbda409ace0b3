//! A Compose project on a real engine for the Docker backend's end-to-end tests: Docker, or
//! Podman's Docker-compatible API when the test script serves it (`CUTOVER_TEST_PODMAN`).
//!
//! Each test writes its own `compose.yaml` and `.env` into a scratch directory, brings the
//! project up with Debian's `docker-compose` (1.29), labels every container, network and
//! volume with [`TEST_LABEL`] = the test's prefix (Compose copies the service's labels onto
//! its containers, and cutover copies them onto the candidates), and removes everything so
//! labelled when it ends, passed or failed.
//!
//! A missing engine, image or `docker-compose` makes the test skip, saying so loudly, except
//! under CI (`CI` set), where it fails. Podman's variants skip when the test script found no
//! Podman answering (the notes and docs/compose.md say why that can be).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::scratch::Scratch;
use crate::serve::Serve;
pub use crate::swarm::{TEST_LABEL, demo_image};

/// The environment variable the test script sets to Podman's socket when Podman answers.
pub const PODMAN_ENV: &str = "CUTOVER_TEST_PODMAN";

/// Podman's Docker-compatible API ignores containers.conf's default ulimits, and Podman's
/// own defaults exceed this machine's hard limits: every service a test runs on Podman
/// states its own (harmless on Docker).
pub const ULIMITS: &str =
    "    ulimits:\n      nofile: {soft: 1024, hard: 4096}\n      nproc: 1024\n";

/// Which engine a test drives.
#[derive(Clone, Debug)]
pub struct Engine {
    /// "docker" or "podman", for messages and names.
    pub name: &'static str,
    /// `DOCKER_HOST` for the engine.
    pub host: String,
}

impl Engine {
    /// The Docker engine of `DOCKER_HOST`, or the default socket.
    pub fn docker() -> Engine {
        Engine {
            name: "docker",
            host: std::env::var("DOCKER_HOST")
                .unwrap_or_else(|_| "unix:///var/run/docker.sock".to_string()),
        }
    }

    /// Podman, if the test script serves its API; `None` (the test skips) otherwise.
    pub fn podman() -> Option<Engine> {
        match std::env::var(PODMAN_ENV) {
            Ok(host) if !host.is_empty() => Some(Engine {
                name: "podman",
                host,
            }),
            _ => {
                eprintln!(
                    "SKIPPED: Podman's variant of this test needs `podman system service` answering; scripts/test.sh starts it and sets {PODMAN_ENV}"
                );
                None
            }
        }
    }

    /// Runs `docker args…` against this engine; its stdout, or `Err(stderr)`.
    pub fn run(&self, args: &[&str]) -> Result<String, String> {
        let output = Command::new("docker")
            .args(args)
            .env("DOCKER_HOST", &self.host)
            .output()
            .map_err(|e| format!("docker cannot run: {e}"))?;
        if output.status.success() {
            Ok(String::from_utf8_lossy(&output.stdout).trim().to_string())
        } else {
            Err(format!(
                "docker {} ({}): {}",
                args.join(" "),
                self.name,
                String::from_utf8_lossy(&output.stderr).trim()
            ))
        }
    }

    /// `docker args…`, panicking with the engine's words on failure.
    pub fn must(&self, args: &[&str]) -> String {
        self.run(args).unwrap_or_else(|e| panic!("{e}"))
    }
}

/// One test's Compose project: its directory, its prefix, and cleanup.
pub struct ComposeTest {
    /// The engine.
    pub engine: Engine,
    /// The Compose project's name; prefixes every name and is the value of [`TEST_LABEL`].
    pub project: String,
    /// The project's directory: `compose.yaml`, `.env`, secret files.
    pub dir: PathBuf,
    _scratch: Scratch,
}

impl ComposeTest {
    /// Checks for the engine, `docker-compose` and the demo images; `None` to skip.
    pub fn start(label: &str, engine: Engine) -> Option<ComposeTest> {
        let missing = if let Err(e) = engine.run(&["version", "--format", "{{.Server.Version}}"]) {
            Some(format!("a {} engine ({e})", engine.name))
        } else if let Err(e) = engine.run(&["image", "inspect", &demo_image("v4")]) {
            Some(format!("the demo images ({e})"))
        } else if Command::new("docker-compose")
            .arg("version")
            .output()
            .map(|o| !o.status.success())
            .unwrap_or(true)
        {
            Some("docker-compose (Debian's package)".to_string())
        } else {
            None
        };
        if let Some(missing) = missing {
            return crate::skip_or_fail(&missing, "`bash scripts/test.sh` (as root)");
        }
        let project = format!("ct{}{label}", std::process::id());
        let scratch = Scratch::new(&project);
        let dir = scratch.path.join("project");
        std::fs::create_dir_all(&dir).expect("project dir");
        let test = ComposeTest {
            engine,
            project,
            dir,
            _scratch: scratch,
        };
        test.cleanup();
        Some(test)
    }

    /// `dev.cutover.test=<project>`.
    pub fn label(&self) -> String {
        format!("{TEST_LABEL}={}", self.project)
    }

    /// The project's default network, which the proxy's endpoints are read on.
    pub fn network(&self) -> String {
        format!("{}_default", self.project)
    }

    /// Writes the project's `compose.yaml`: the service `web` of the demo app, its tag
    /// read from `.env`'s `WEB_TAG`, `replicas` containers, no published port, `extra`
    /// service keys (YAML indented by 4), the default network and the `networks` named
    /// beside it, all labelled, and `top` top-level sections (volumes, secrets; YAML).
    /// Writes `.env` with `WEB_TAG=<tag>`.
    pub fn write(&self, tag: &str, replicas: u32, extra: &str, networks: &[&str], top: &str) {
        let label = self.label();
        let networks: String = std::iter::once("default")
            .chain(networks.iter().copied())
            .map(|n| format!("  {n}:\n    labels:\n      - {label}\n"))
            .collect();
        let compose = format!(
            "services:\n  web:\n    image: localhost/cutover-demo:${{WEB_TAG}}\n    scale: {replicas}\n    labels:\n      - {label}\n{ULIMITS}{extra}networks:\n{networks}{top}",
        );
        std::fs::write(self.dir.join("compose.yaml"), compose).expect("compose.yaml");
        self.set_tag(tag);
    }

    /// Rewrites `.env` with `WEB_TAG=<tag>`.
    pub fn set_tag(&self, tag: &str) {
        std::fs::write(self.dir.join(".env"), format!("WEB_TAG={tag}\n")).expect(".env");
    }

    /// Runs `docker-compose -p <project> args…` in the project's directory on this engine.
    pub fn compose(&self, args: &[&str]) -> Result<String, String> {
        compose(&self.engine, &self.project, &self.dir, args)
    }

    /// `docker-compose up -d`, panicking with Compose's words on failure; returns its output.
    pub fn up(&self) -> String {
        self.compose(&["up", "-d"])
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// IDs of the running containers of the project's `service`, sorted.
    pub fn containers(&self, service: &str) -> Vec<String> {
        let listed = self
            .engine
            .run(&[
                "ps",
                "--quiet",
                "--no-trunc",
                "--filter",
                &format!("label=com.docker.compose.project={}", self.project),
                "--filter",
                &format!("label=com.docker.compose.service={service}"),
            ])
            .unwrap_or_default();
        let mut ids: Vec<String> = listed.lines().map(str::to_string).collect();
        ids.sort();
        ids
    }

    /// IDs of every container, running or not, that carries this test's label, sorted.
    pub fn labelled(&self) -> Vec<String> {
        let listed = self
            .engine
            .run(&[
                "ps",
                "--all",
                "--quiet",
                "--no-trunc",
                "--filter",
                &format!("label={}", self.label()),
            ])
            .unwrap_or_default();
        let mut ids: Vec<String> = listed.lines().map(str::to_string).collect();
        ids.sort();
        ids
    }

    /// `docker inspect` of a container, as JSON (`Value::Null` once it is gone).
    pub fn inspect(&self, id: &str) -> Value {
        self.engine
            .run(&["container", "inspect", id])
            .ok()
            .and_then(|text| serde_json::from_str::<Value>(&text).ok())
            .map(|list| list[0].clone())
            .unwrap_or(Value::Null)
    }

    /// The version each of `ids` runs, from its image's tag.
    pub fn versions(&self, ids: &[String]) -> Vec<String> {
        ids.iter()
            .map(|id| {
                self.inspect(id)["Config"]["Image"]
                    .as_str()
                    .and_then(|i| i.rsplit(':').next())
                    .unwrap_or_default()
                    .to_string()
            })
            .collect()
    }

    /// A controller for this engine on this host (`--backend docker`, the proxy embedded:
    /// the host reaches the bridge addresses of the project's containers).
    pub fn controller(&self, extra: &[&str]) -> Serve {
        let mut args = vec!["--backend", "docker", "--name", &self.project];
        args.extend_from_slice(extra);
        Serve::start_with(
            "127.0.0.1",
            &self.project,
            &args,
            &[("DOCKER_HOST", self.engine.host.clone())],
            true,
        )
    }

    /// The release file of the project's service `web` to `version`, with `sections`
    /// (strategy, analysis; YAML indented by 2).
    pub fn release(&self, name: &str, version: &str, sections: &str) -> String {
        format!(
            "apiVersion: cutover.dev/v1\nkind: Release\nmetadata:\n  name: {name}\nspec:\n  backend:\n    docker:\n      project: {}\n      service: web\n      network: {}\n  image: {}\n  port: 8080\n{sections}",
            self.project,
            self.network(),
            demo_image(version),
        )
    }

    /// Waits until `done()` holds, panicking with `what` after `limit`.
    pub fn wait(&self, limit: Duration, what: &str, done: impl Fn() -> bool) {
        let started = Instant::now();
        while !done() {
            assert!(
                started.elapsed() < limit,
                "{what} ({:?})",
                started.elapsed()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn cleanup(&self) {
        let _ = self.compose(&["down", "--volumes", "--remove-orphans", "--timeout", "2"]);
        let label = format!("label={}", self.label());
        let ids = self
            .engine
            .run(&["ps", "--all", "--quiet", "--filter", &label])
            .unwrap_or_default();
        let ids: Vec<&str> = ids.lines().collect();
        if !ids.is_empty() {
            let mut args = vec!["rm", "--force", "--volumes"];
            args.extend(ids);
            if let Err(e) = self.engine.run(&args) {
                eprintln!("cleanup: {e}");
            }
        }
        for kind in ["network", "volume"] {
            let ids = self
                .engine
                .run(&[kind, "ls", "--quiet", "--filter", &label])
                .unwrap_or_default();
            for id in ids.lines() {
                if let Err(e) = self.engine.run(&[kind, "rm", id]) {
                    eprintln!("cleanup: {e}");
                }
            }
        }
    }
}

impl Drop for ComposeTest {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "containers of {} ({}):\n{}",
                self.project,
                self.engine.name,
                self.engine
                    .run(&[
                        "ps",
                        "--all",
                        "--filter",
                        &format!("label={}", self.label()),
                        "--format",
                        "{{.ID}} {{.Names}} {{.Image}} {{.Status}}",
                    ])
                    .unwrap_or_else(|e| e)
            );
        }
        self.cleanup();
    }
}

/// Runs `docker-compose --project-name <project> args…` in `dir` (where the compose file
/// and `.env` are) on `engine`, `COMPOSE_FILE` unset: Compose's stdout and stderr, or
/// `Err` with them and the command.
pub fn compose(
    engine: &Engine,
    project: &str,
    dir: &Path,
    args: &[&str],
) -> Result<String, String> {
    let output = Command::new("docker-compose")
        .arg("--project-name")
        .arg(project)
        .args(args)
        .current_dir(dir)
        .env("DOCKER_HOST", &engine.host)
        .env_remove("COMPOSE_FILE")
        .output()
        .map_err(|e| format!("docker-compose cannot run: {e}"))?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    if output.status.success() {
        Ok(text)
    } else {
        Err(format!(
            "docker-compose {} ({}): {text}",
            args.join(" "),
            engine.name
        ))
    }
}

/// One `GET /` through the proxy with the header `name: value`; the answering version.
pub fn version_with_header(proxy: SocketAddr, name: &str, value: &str) -> Option<String> {
    let answer = crate::net::get(proxy, "/", Some((name, value)))?;
    if !(200..300).contains(&answer.status) {
        return None;
    }
    answer.header("x-demo-version").map(str::to_string)
}
