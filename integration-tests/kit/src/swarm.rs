//! A real Docker Swarm for end-to-end tests: `scripts/swarm-env.sh` (run by the test
//! script) starts the engine, makes it a Swarm manager and builds the images; each test
//! makes its own overlay network, services, secrets and configs, all labelled with the
//! test's prefix, and removes everything so labelled when it ends, passed or failed.
//!
//! In CI (`CI` set) a missing Swarm or missing images fail the test; elsewhere the test
//! skips, saying loudly what is missing.

use std::net::SocketAddr;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::net::{free_port, http_get};
use crate::serve::Serve;

/// The label every object a test creates carries, with the test's prefix as its value.
pub const TEST_LABEL: &str = "dev.cutover.test";

/// The images `scripts/swarm-env.sh` builds.
pub const PROXY_IMAGE: &str = "localhost/cutover:test";

/// How a machine gets the Swarm and the images these tests need: what a skipping test
/// tells its reader to run.
pub const SWARM_SETUP: &str = "`bash scripts/swarm-env.sh` (as root)";

/// `localhost/cutover-demo:<version>`: v1 to v4, v3 failing 20 % of requests.
pub fn demo_image(version: &str) -> String {
    format!("localhost/cutover-demo:{version}")
}

/// Runs `docker args…`; its stdout, or `Err(stderr)`.
pub fn docker(args: &[&str]) -> Result<String, String> {
    let output = Command::new("docker")
        .args(args)
        .output()
        .map_err(|e| format!("docker cannot run: {e}"))?;
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).trim().to_string())
    } else {
        Err(format!(
            "docker {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        ))
    }
}

/// `docker args…`, panicking with Docker's words on failure.
pub fn must(args: &[&str]) -> String {
    docker(args).unwrap_or_else(|e| panic!("{e}"))
}

/// One test's corner of the Swarm: a prefix for names, an overlay network, and cleanup.
pub struct SwarmTest {
    /// Prefixes every name and is the value of [`TEST_LABEL`].
    pub prefix: String,
    /// The test's overlay network.
    pub network: String,
    /// Where containers reach the host (the `docker_gwbridge` gateway).
    pub host_from_containers: String,
    volumes: Vec<String>,
}

impl SwarmTest {
    /// Checks for the Swarm and the images and makes the network; `None` to skip.
    pub fn start(label: &str) -> Option<SwarmTest> {
        let missing = match docker(&["info", "--format", "{{.Swarm.LocalNodeState}}"]) {
            Ok(state) if state == "active" => docker(&["image", "inspect", PROXY_IMAGE])
                .err()
                .map(|_| format!("the image {PROXY_IMAGE}")),
            Ok(state) => Some(format!("a Swarm (this engine's swarm state is '{state}')")),
            Err(e) => Some(format!("a Docker engine ({e})")),
        };
        if let Some(missing) = missing {
            return crate::skip_or_fail(&missing, SWARM_SETUP);
        }
        let prefix = format!("ct{}{}", std::process::id(), label);
        let network = format!("{prefix}-net");
        let test = SwarmTest {
            host_from_containers: must(&[
                "network",
                "inspect",
                "docker_gwbridge",
                "--format",
                "{{(index .IPAM.Config 0).Gateway}}",
            ]),
            prefix,
            network,
            volumes: Vec::new(),
        };
        test.cleanup();
        must(&[
            "network",
            "create",
            "--driver",
            "overlay",
            "--attachable",
            "--label",
            &test.label(),
            &test.network,
        ]);
        Some(test)
    }

    /// `dev.cutover.test=<prefix>`.
    pub fn label(&self) -> String {
        format!("{TEST_LABEL}={}", self.prefix)
    }

    /// `<prefix>-<name>`.
    pub fn name(&self, name: &str) -> String {
        format!("{}-{name}", self.prefix)
    }

    /// Creates a service of `image` on the test's network (DNS round robin: this host has
    /// no IPVS for virtual IPs), with `replicas` tasks and `extra` flags, and waits until
    /// its tasks run.
    pub fn service(&self, name: &str, image: &str, replicas: u32, extra: &[&str]) -> String {
        self.service_running(name, image, replicas, extra, &[])
    }

    /// [`service`](Self::service) with arguments for the image's entrypoint.
    pub fn service_running(
        &self,
        name: &str,
        image: &str,
        replicas: u32,
        extra: &[&str],
        arguments: &[&str],
    ) -> String {
        let name = self.name(name);
        let replicas = replicas.to_string();
        let label = self.label();
        let mut args = vec![
            "service",
            "create",
            "--detach",
            "--name",
            &name,
            "--label",
            &label,
            "--network",
            &self.network,
            "--endpoint-mode",
            "dnsrr",
            "--replicas",
            &replicas,
        ];
        args.extend_from_slice(extra);
        args.push(image);
        args.extend_from_slice(arguments);
        must(&args);
        self.wait_running(&name);
        name
    }

    /// Waits until every task of `service` runs.
    pub fn wait_running(&self, service: &str) {
        let started = Instant::now();
        loop {
            let replicas = docker(&[
                "service",
                "ls",
                "--filter",
                &format!("name={service}"),
                "--format",
                "{{.Name}} {{.Replicas}}",
            ])
            .unwrap_or_default();
            let done = replicas.lines().any(|line| {
                line.split_once(' ').is_some_and(|(n, r)| {
                    n == service && r.split_once('/').is_some_and(|(a, b)| a == b && a != "0")
                })
            });
            if done {
                return;
            }
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "service {service} did not start: {}",
                docker(&["service", "ps", "--no-trunc", service]).unwrap_or_else(|e| e)
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Creates a secret or a config (`kind`) holding `data`; returns its name.
    pub fn object(&self, kind: &str, name: &str, data: &str) -> String {
        let name = self.name(name);
        let dir = std::env::temp_dir().join(format!("{name}-{}", free_port()));
        std::fs::create_dir_all(&dir).expect("dir");
        let file = dir.join("data");
        std::fs::write(&file, data).expect("data");
        must(&[
            kind,
            "create",
            "--label",
            &self.label(),
            &name,
            file.to_str().expect("path"),
        ]);
        let _ = std::fs::remove_dir_all(&dir);
        name
    }

    /// A named volume that the test's services mount; removed at the end.
    pub fn volume(&mut self, name: &str) -> String {
        let name = self.name(name);
        self.volumes.push(name.clone());
        name
    }

    /// cutover's proxy as a Swarm service on the test's network, pulling its routes from
    /// `serve`, its settings a Docker config and the API token a Docker secret, its
    /// listener and admin ports published in host mode. Returns (listener, admin) on this
    /// host once it serves.
    pub fn proxy(&self, serve: &Serve) -> (SocketAddr, u16) {
        let (listen, admin) = (free_port(), free_port());
        let config = self.object(
            "config",
            "proxy-config",
            "listeners:\n  - address: 0.0.0.0:8080\nadmin:\n  address: 0.0.0.0:9901\n",
        );
        let routes_from = format!("http://{}:{}", self.host_from_containers, serve.api);
        // The API token, as a Docker secret: the proxy reports its guardrail trips with it.
        let token = std::fs::read_to_string(serve.scratch.path.join("state").join("token"))
            .expect("the controller's token");
        let secret = self.object("secret", "token", token.trim());
        // The image's entrypoint is `cutover`.
        let name = self.service_running(
            "proxy",
            PROXY_IMAGE,
            1,
            &[
                "--secret",
                &format!("source={secret},target=cutover-token"),
                "--env",
                "CUTOVER_TOKEN_FILE=/run/secrets/cutover-token",
                "--config",
                &format!("source={config},target=/etc/cutover/proxy.yaml"),
                "--publish",
                &format!("mode=host,target=8080,published={listen}"),
                "--publish",
                &format!("mode=host,target=9901,published={admin}"),
            ],
            &[
                "proxy",
                "--config",
                "/etc/cutover/proxy.yaml",
                "--routes-from",
                &routes_from,
            ],
        );
        let started = Instant::now();
        while http_get(admin, "/routes").is_none() {
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "the proxy service did not answer: {}",
                docker(&["service", "logs", "--raw", &name]).unwrap_or_else(|e| e)
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        (SocketAddr::from(([127, 0, 0, 1], listen)), admin)
    }

    /// Waits until the proxy service routes `release` (it long-polls the controller).
    pub fn wait_proxy_routes(&self, admin: u16, release: &str) {
        let started = Instant::now();
        loop {
            let routes = http_get(admin, "/routes").unwrap_or_default();
            if routes.contains(&format!("\"{release}\"")) && routes.contains("endpoints") {
                return;
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "the proxy never routed {release}: {routes}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Names of the services that carry this test's label.
    pub fn services(&self) -> Vec<String> {
        let listed = docker(&[
            "service",
            "ls",
            "--filter",
            &format!("label={}", self.label()),
            "--format",
            "{{.Name}}",
        ])
        .unwrap_or_default();
        let mut names: Vec<String> = listed.lines().map(str::to_string).collect();
        names.sort();
        names
    }

    /// A service's labels.
    pub fn labels(&self, service: &str) -> serde_json::Value {
        let text = must(&[
            "service",
            "inspect",
            service,
            "--format",
            "{{json .Spec.Labels}}",
        ]);
        serde_json::from_str(&text).unwrap_or_default()
    }

    /// The release file of a Swarm release.
    pub fn release(&self, name: &str, service: &str, version: &str, sections: &str) -> String {
        format!(
            "apiVersion: cutover.dev/v1\nkind: Release\nmetadata:\n  name: {name}\nspec:\n  backend:\n    swarm:\n      service: {service}\n      network: {}\n  image: {}\n  replicas: 2\n  port: 8080\n{sections}",
            self.network,
            demo_image(version),
        )
    }

    fn cleanup(&self) {
        let label = format!("label={}", self.label());
        for kind in ["service", "secret", "config"] {
            let ids = docker(&[kind, "ls", "--quiet", "--filter", &label]).unwrap_or_default();
            let ids: Vec<&str> = ids.lines().collect();
            if !ids.is_empty() {
                let mut args = vec![kind, "rm"];
                args.extend(ids);
                if let Err(e) = docker(&args) {
                    eprintln!("cleanup: {e}");
                }
            }
        }
        // The network and volumes are free once the removed services' containers are gone.
        let started = Instant::now();
        loop {
            let networks =
                docker(&["network", "ls", "--quiet", "--filter", &label]).unwrap_or_default();
            let mut left = false;
            for id in networks.lines() {
                left |= docker(&["network", "rm", id]).is_err();
            }
            for volume in &self.volumes {
                if docker(&["volume", "inspect", volume]).is_ok() {
                    left |= docker(&["volume", "rm", volume]).is_err();
                }
            }
            if !left || started.elapsed() > Duration::from_secs(60) {
                if left {
                    eprintln!(
                        "cleanup: the network or volumes of {} are still in use",
                        self.prefix
                    );
                }
                return;
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    }
}

impl Drop for SwarmTest {
    fn drop(&mut self) {
        if std::thread::panicking() {
            for service in self.services() {
                eprintln!(
                    "service {service}:\n{}\n{}",
                    docker(&["service", "ps", "--no-trunc", &service]).unwrap_or_else(|e| e),
                    docker(&["service", "logs", "--raw", "--tail", "20", &service])
                        .unwrap_or_else(|e| e)
                );
            }
        }
        self.cleanup();
    }
}
