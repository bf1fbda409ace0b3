//! A real multi-node Docker Swarm for end-to-end tests: three engines in network namespaces
//! on one host bridge, made by `scripts/swarm-cluster.sh up` (the test script runs it before
//! the cluster suite and `down` after it). A [`Cluster`] talks to each node's engine, kills,
//! restarts and partitions nodes through the script; a [`Stage`] is one scenario's corner of
//! it: an overlay network, the controller as a Swarm service, the proxy as a global service
//! with host-mode ports on every node, Prometheus scraping every proxy, and cleanup.
//!
//! The suite runs only when `CUTOVER_CLUSTER` is set (the test script's cluster block sets
//! it, after `up`); otherwise it skips, saying so. With `CUTOVER_CLUSTER` set, a missing
//! cluster fails it; without root or Docker it skips, except under CI, where it fails.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::swarm::{PROXY_IMAGE, TEST_LABEL, demo_image};

/// The Prometheus image `scripts/swarm-env.sh` builds and `swarm-cluster.sh` loads.
pub const PROMETHEUS_IMAGE: &str = "localhost/cutover-prometheus:debian";

/// Host-mode ports every stage publishes on the nodes (nothing else uses the nodes' own
/// addresses, so they are fixed).
pub const PROXY_PORT: u16 = 18080;
/// The proxies' admin listener (`/routes`, `/metrics`).
pub const ADMIN_PORT: u16 = 19901;
/// The controller's API, on the node that runs it.
pub const API_PORT: u16 = 19900;

/// One engine of the cluster.
#[derive(Clone, Debug)]
pub struct Node {
    /// 1-based, as the script numbers them.
    pub index: usize,
    /// `node<i>`: the node's host name in the Swarm.
    pub name: String,
    /// The engine's socket on this host.
    pub socket: String,
    /// The node's address on the bridge, which the host reaches.
    pub address: Ipv4Addr,
}

/// The cluster `scripts/swarm-cluster.sh` made.
pub struct Cluster {
    /// Its nodes, node1 first.
    pub nodes: Vec<Node>,
    script: PathBuf,
}

impl Cluster {
    /// The cluster the script made; `None` (having said why) to skip.
    pub fn connect() -> Option<Cluster> {
        if Command::new("docker").arg("--version").output().is_err() {
            return crate::skip_or_fail("Docker", crate::swarm::SWARM_SETUP);
        }
        // The script needs root for namespaces, the bridge and iptables.
        let uid = Command::new("id")
            .arg("-u")
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_default();
        if uid != "0" {
            return crate::skip_or_fail(
                "root (network namespaces, a bridge, iptables)",
                "`bash scripts/test.sh` as root",
            );
        }
        if std::env::var_os("CUTOVER_CLUSTER").is_none() {
            // Not a failure under CI: the workspace run meets this suite before the test
            // script's own cluster block, which runs it on a cluster it brings up.
            eprintln!(
                "SKIPPED: the multi-node Swarm suite runs in scripts/test.sh's cluster block \
                 (bash scripts/swarm-cluster.sh up; CUTOVER_CLUSTER=1 cargo test -p cutover-e2e \
                 --test swarm_cluster -- --test-threads=1; bash scripts/swarm-cluster.sh down)"
            );
            return None;
        }
        let script =
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../scripts/swarm-cluster.sh");
        let output = Command::new("bash")
            .arg(&script)
            .arg("env")
            .output()
            .expect("bash runs");
        let nodes: Vec<Node> = String::from_utf8_lossy(&output.stdout)
            .lines()
            .filter_map(|line| {
                let mut words = line.split_whitespace();
                let name = words.next()?.to_string();
                let socket = words.next()?.to_string();
                let address = words.next()?.parse().ok()?;
                let index = name.strip_prefix("node")?.parse().ok()?;
                Some(Node {
                    index,
                    name,
                    socket,
                    address,
                })
            })
            .collect();
        assert!(
            nodes.len() >= 3,
            "CUTOVER_CLUSTER is set but no three-node cluster is up: run `bash scripts/swarm-cluster.sh up 3` first ({})",
            String::from_utf8_lossy(&output.stderr)
        );
        Some(Cluster { nodes, script })
    }

    /// `docker args…` on node `index`'s engine: stdout, or `Err(stderr)`.
    pub fn docker_on(&self, index: usize, args: &[&str]) -> Result<String, String> {
        let node = &self.nodes[index - 1];
        let output = Command::new("docker")
            .arg("-H")
            .arg(format!("unix://{}", node.socket))
            .args(args)
            .output()
            .map_err(|e| format!("docker cannot run: {e}"))?;
        if output.status.success() {
            Ok(String::from_utf8_lossy(&output.stdout).trim().to_string())
        } else {
            Err(format!(
                "docker ({}) {}: {}",
                node.name,
                args.join(" "),
                String::from_utf8_lossy(&output.stderr).trim()
            ))
        }
    }

    /// `docker args…` on the first node whose engine carries it out (a manager that can
    /// reach the Swarm's leader).
    pub fn docker(&self, args: &[&str]) -> Result<String, String> {
        let mut errors = Vec::new();
        for node in &self.nodes {
            match self.docker_on(node.index, args) {
                Ok(out) => return Ok(out),
                Err(e) => errors.push(e),
            }
        }
        Err(errors.join("; "))
    }

    /// [`docker`](Self::docker), panicking with Docker's words.
    pub fn must(&self, args: &[&str]) -> String {
        self.docker(args).unwrap_or_else(|e| panic!("{e}"))
    }

    fn script(&self, args: &[&str]) {
        let output = Command::new("bash")
            .arg(&self.script)
            .args(args)
            .output()
            .expect("bash runs");
        assert!(
            output.status.success(),
            "swarm-cluster.sh {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr)
        );
    }

    /// Kills node `index` (engine, containerd, its containers) as if the machine died.
    pub fn kill_node(&self, index: usize) {
        self.script(&["kill-node", &index.to_string()]);
    }

    /// Starts node `index`'s engine again; it rejoins the Swarm.
    pub fn start_node(&self, index: usize) {
        self.script(&["start-node", &index.to_string()]);
    }

    /// Cuts node `index`'s link to the bridge.
    pub fn partition(&self, index: usize) {
        self.script(&["partition", &index.to_string()]);
    }

    /// Restores node `index`'s link.
    pub fn heal(&self, index: usize) {
        self.script(&["heal", &index.to_string()]);
    }

    /// How long [`restore`](Self::restore) waits for every node to be Ready again.
    const RECOVERY: Duration = Duration::from_secs(180);

    /// Every node up, linked and Ready in the Swarm, every manager reachable: what each
    /// scenario starts from, whatever the one before it left.
    pub fn restore(&self) {
        for node in &self.nodes {
            self.heal(node.index);
            if self.docker_on(node.index, &["info"]).is_err() {
                self.start_node(node.index);
            }
        }
        let started = Instant::now();
        loop {
            let listed = self
                .docker(&["node", "ls", "--format", "{{.Status}} {{.ManagerStatus}}"])
                .unwrap_or_else(|e| format!("(no manager answers: {e})"));
            let healthy = listed
                .lines()
                .filter(|l| *l == "Ready Leader" || *l == "Ready Reachable")
                .count();
            if healthy == self.nodes.len() {
                return;
            }
            // A healed or restarted manager may wait out Raft's election and the
            // dispatcher's heartbeats before the Swarm lists every node Ready again.
            assert!(
                started.elapsed() < Self::RECOVERY,
                "the cluster did not recover within {:?}: {listed}",
                Self::RECOVERY
            );
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    /// The node (index) a service's running task is on, for each running task.
    pub fn task_nodes(&self, service: &str) -> Vec<usize> {
        let listed = self
            .docker(&[
                "service",
                "ps",
                "--filter",
                "desired-state=running",
                "--format",
                "{{.Node}} {{.CurrentState}}",
                service,
            ])
            .unwrap_or_default();
        let mut nodes: Vec<usize> = listed
            .lines()
            .filter(|l| l.contains(" Running"))
            .filter_map(|l| l.split(' ').next()?.strip_prefix("node")?.parse().ok())
            .collect();
        nodes.sort_unstable();
        nodes
    }

    /// Node `index` (1-based).
    pub fn node(&self, index: usize) -> &Node {
        &self.nodes[index - 1]
    }
}

/// `GET path` on `address`; the status and body, `None` when no answer came.
pub fn get(address: SocketAddr, path: &str) -> Option<(u16, String)> {
    let answer = crate::net::get(address, path, None)?;
    Some((answer.status, answer.body))
}

/// One scenario's objects on the cluster, all labelled with its prefix and removed when it
/// ends, passed or failed.
pub struct Stage<'c> {
    /// The cluster.
    pub cluster: &'c Cluster,
    /// Prefixes every name; the value of [`TEST_LABEL`].
    pub prefix: String,
    /// The overlay network of every service.
    pub network: String,
    /// The controller's write token, in a file of mode 0600 for the CLI.
    token_file: PathBuf,
}

impl<'c> Stage<'c> {
    /// Makes the network and the secrets; the services come with [`deploy`](Self::deploy).
    pub fn new(cluster: &'c Cluster, label: &str) -> Stage<'c> {
        let prefix = format!("cc{}{label}", std::process::id());
        let dir = std::env::temp_dir().join(&prefix);
        std::fs::create_dir_all(&dir).expect("scratch dir");
        let stage = Stage {
            cluster,
            network: format!("{prefix}-net"),
            token_file: dir.join("token"),
            prefix,
        };
        stage.cleanup();
        cluster.must(&[
            "network",
            "create",
            "--driver",
            "overlay",
            "--attachable",
            "--label",
            &stage.label(),
            &stage.network,
        ]);
        stage
    }

    /// `dev.cutover.test=<prefix>`.
    pub fn label(&self) -> String {
        format!("{TEST_LABEL}={}", self.prefix)
    }

    /// `<prefix>-<name>`.
    pub fn name(&self, name: &str) -> String {
        format!("{}-{name}", self.prefix)
    }

    fn object(&self, kind: &str, name: &str, data: &str) -> String {
        let name = self.name(name);
        let file = self.token_file.with_file_name(format!("{kind}-{name}"));
        write_private(&file, data);
        self.cluster.must(&[
            kind,
            "create",
            "--label",
            &self.label(),
            &name,
            file.to_str().expect("path"),
        ]);
        let _ = std::fs::remove_file(&file);
        name
    }

    /// Creates a `dnsrr` service on the stage's network; `extra` flags go before the
    /// image, `arguments` after it. Does not wait.
    pub fn create(&self, name: &str, image: &str, extra: &[&str], arguments: &[&str]) -> String {
        let name = self.name(name);
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
        ];
        args.extend_from_slice(extra);
        args.push(image);
        args.extend_from_slice(arguments);
        self.cluster.must(&args);
        name
    }

    /// Waits until `service` runs `count` tasks.
    pub fn wait_tasks(&self, service: &str, count: usize) {
        let started = Instant::now();
        while self.cluster.task_nodes(service).len() < count {
            assert!(
                started.elapsed() < Duration::from_secs(90),
                "service {service} did not start {count} tasks: {}",
                self.cluster
                    .docker(&["service", "ps", "--no-trunc", service])
                    .unwrap_or_else(|e| e)
            );
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    /// The stage's parts: `web` (v1, 3 replicas), Prometheus (pinned to `prometheus_on`,
    /// scraping every proxy each second), the controller (replicas 1, restarted on any
    /// failure, on a manager matching `controller_constraint`, talking to its own node's
    /// engine) and the proxy (global, host-mode ports on every node). Waits until each
    /// node's proxy answers.
    pub fn deploy(&self, prometheus_on: &str, controller_constraint: &str) -> Deployed {
        let token = random_hex();
        write_private(&self.token_file, &token);
        let secret = self.object("secret", "token", &token);
        let edge = self.object("secret", "edge", &random_hex());
        let proxy_name = self.name("proxy");
        let prometheus_config = self.object(
            "config",
            "prometheus",
            &format!(
                "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  - job_name: cutover-proxy\n    dns_sd_configs:\n      - names: [tasks.{proxy_name}]\n        type: A\n        port: 9901\n        refresh_interval: 2s\n"
            ),
        );
        let proxy_config = self.object(
            "config",
            "proxy",
            "listeners:\n  - address: 0.0.0.0:8080\nadmin:\n  address: 0.0.0.0:9901\n",
        );
        let web = self.create("web", &demo_image("v1"), &["--replicas", "3"], &[]);
        let prometheus = self.create(
            "prometheus",
            PROMETHEUS_IMAGE,
            &[
                "--replicas",
                "1",
                "--constraint",
                &format!("node.hostname=={prometheus_on}"),
                "--config",
                &format!("source={prometheus_config},target=/etc/prometheus/prometheus.yml"),
            ],
            &[
                "--config.file=/etc/prometheus/prometheus.yml",
                "--storage.tsdb.path=/prometheus",
            ],
        );
        let controller = self.create(
            "controller",
            PROXY_IMAGE,
            &[
                "--replicas",
                "1",
                "--constraint",
                "node.role==manager",
                "--constraint",
                controller_constraint,
                "--restart-condition",
                "any",
                "--restart-delay",
                "1s",
                "--mount",
                "type=bind,source=/run/cutover-cluster/self/docker.sock,target=/var/run/docker.sock",
                "--secret",
                &format!("source={secret},target=token"),
                "--secret",
                &format!("source={edge},target=edge"),
                "--publish",
                &format!("mode=host,target=9900,published={API_PORT}"),
            ],
            &[
                "serve",
                "--backend=swarm",
                &format!("--name={}", self.prefix),
                "--no-proxy",
                "--api=0.0.0.0:9900",
                "--token-file=/run/secrets/token",
                "--edge-token-file=/run/secrets/edge",
                &format!("--prometheus=http://{prometheus}:9090"),
            ],
        );
        let routes_from = format!("--routes-from=http://{controller}:9900");
        let proxy = self.create(
            "proxy",
            PROXY_IMAGE,
            &[
                "--mode",
                "global",
                "--secret",
                &format!("source={edge},target=edge"),
                "--env",
                "CUTOVER_TOKEN_FILE=/run/secrets/edge",
                "--config",
                &format!("source={proxy_config},target=/etc/cutover/proxy.yaml"),
                "--publish",
                &format!("mode=host,target=8080,published={PROXY_PORT}"),
                "--publish",
                &format!("mode=host,target=9901,published={ADMIN_PORT}"),
            ],
            &["proxy", "--config", "/etc/cutover/proxy.yaml", &routes_from],
        );
        self.wait_tasks(&web, 3);
        self.wait_tasks(&prometheus, 1);
        self.wait_tasks(&controller, 1);
        self.wait_tasks(&proxy, self.cluster.nodes.len());
        for node in &self.cluster.nodes {
            let admin = SocketAddr::from((node.address, ADMIN_PORT));
            let started = Instant::now();
            while get(admin, "/routes").is_none() {
                assert!(
                    started.elapsed() < Duration::from_secs(60),
                    "the proxy on {} did not answer",
                    node.name
                );
                std::thread::sleep(Duration::from_millis(200));
            }
        }
        Deployed {
            web,
            controller,
            proxy,
        }
    }

    /// The node (index) the controller runs on, once it runs and its API answers.
    pub fn controller_node(&self, controller: &str, limit: Duration) -> usize {
        let started = Instant::now();
        loop {
            if let Some(&node) = self.cluster.task_nodes(controller).first() {
                let api = SocketAddr::from((self.cluster.node(node).address, API_PORT));
                if get(api, "/healthz").is_some_and(|(s, _)| s == 200) {
                    return node;
                }
            }
            assert!(
                started.elapsed() < limit,
                "the controller did not answer within {limit:?}: {}",
                self.cluster
                    .docker(&["service", "ps", "--no-trunc", controller])
                    .unwrap_or_else(|e| e)
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// `POST /v1/releases` of the release file to the controller on `node`, with the
    /// write token (what `cutover run` sends, without needing the binary built); the
    /// status and body.
    pub fn submit(&self, node: usize, file: &std::path::Path) -> Option<(u16, String)> {
        let body = std::fs::read_to_string(file).expect("release file");
        let token = std::fs::read_to_string(&self.token_file).expect("token");
        let api = SocketAddr::from((self.cluster.node(node).address, API_PORT));
        let mut stream = TcpStream::connect_timeout(&api, Duration::from_secs(2)).ok()?;
        stream
            .set_read_timeout(Some(Duration::from_secs(60)))
            .ok()?;
        write!(
            stream,
            "POST /v1/releases HTTP/1.1\r\nHost: {api}\r\nAuthorization: Bearer {}\r\nX-Cutover-Filename: release.yaml\r\nContent-Type: application/yaml\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            token.trim(),
            body.len()
        )
        .ok()?;
        let mut text = String::new();
        stream.read_to_string(&mut text).ok()?;
        let (head, body) = text.split_once("\r\n\r\n")?;
        let status = head.split(' ').nth(1)?.parse().ok()?;
        Some((status, body.to_string()))
    }

    /// Writes a release file of `web` to `version` with `sections`, 3 replicas.
    pub fn release_file(&self, name: &str, web: &str, version: &str, sections: &str) -> PathBuf {
        let path = self.token_file.with_file_name(format!("{name}.yaml"));
        let text = format!(
            "apiVersion: cutover.dev/v1\nkind: Release\nmetadata:\n  name: {name}\nspec:\n  backend:\n    swarm:\n      service: {web}\n      network: {}\n  image: {}\n  replicas: 3\n  port: 8080\n{sections}",
            self.network,
            demo_image(version),
        );
        std::fs::write(&path, text).expect("release file");
        path
    }

    /// A release's status from the controller on `node`; `None` while it does not answer.
    pub fn status(&self, node: usize, name: &str) -> Option<serde_json::Value> {
        let api = SocketAddr::from((self.cluster.node(node).address, API_PORT));
        let (status, body) = get(api, &format!("/v1/releases/{name}"))?;
        (status == 200).then(|| serde_json::from_str(&body).ok())?
    }

    /// A release's history lines from the controller on `node`.
    pub fn history(&self, node: usize, name: &str) -> Vec<String> {
        let api = SocketAddr::from((self.cluster.node(node).address, API_PORT));
        let body = get(api, &format!("/v1/releases/{name}/history"))
            .map(|(_, b)| b)
            .unwrap_or_default();
        let value: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
        value["events"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|e| e["message"].as_str().map(str::to_string))
            .collect()
    }

    /// A service's labels.
    pub fn labels(&self, service: &str) -> serde_json::Value {
        let text = self.cluster.must(&[
            "service",
            "inspect",
            service,
            "--format",
            "{{json .Spec.Labels}}",
        ]);
        serde_json::from_str(&text).unwrap_or_default()
    }

    /// Names of the services carrying the stage's label, sorted.
    pub fn services(&self) -> Vec<String> {
        let listed = self
            .cluster
            .docker(&[
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

    /// The proxy's listener on every node but `except`.
    pub fn proxies_except(&self, except: &[usize]) -> Vec<SocketAddr> {
        self.cluster
            .nodes
            .iter()
            .filter(|n| !except.contains(&n.index))
            .map(|n| SocketAddr::from((n.address, PROXY_PORT)))
            .collect()
    }

    fn cleanup(&self) {
        let label = format!("label={}", self.label());
        for kind in ["service", "secret", "config"] {
            let ids = self
                .cluster
                .docker(&[kind, "ls", "--quiet", "--filter", &label])
                .unwrap_or_default();
            let ids: Vec<&str> = ids.lines().collect();
            if !ids.is_empty() {
                let mut args = vec![kind, "rm"];
                args.extend(ids);
                if let Err(e) = self.cluster.docker(&args) {
                    eprintln!("cleanup: {e}");
                }
            }
        }
        let started = Instant::now();
        loop {
            let networks = self
                .cluster
                .docker(&["network", "ls", "--quiet", "--filter", &label])
                .unwrap_or_default();
            let mut left = false;
            for id in networks.lines() {
                left |= self.cluster.docker(&["network", "rm", id]).is_err();
            }
            if !left || started.elapsed() > Duration::from_secs(60) {
                return;
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    }
}

impl Drop for Stage<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            for service in self.services() {
                eprintln!(
                    "service {service}:\n{}\n{}",
                    self.cluster
                        .docker(&["service", "ps", "--no-trunc", &service])
                        .unwrap_or_else(|e| e),
                    self.cluster
                        .docker(&["service", "logs", "--raw", "--tail", "30", &service])
                        .unwrap_or_else(|e| e)
                );
            }
        }
        self.cleanup();
        if let Some(dir) = self.token_file.parent() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// The services of a deployed stage.
pub struct Deployed {
    /// The released service (v1, 3 replicas).
    pub web: String,
    /// The controller service.
    pub controller: String,
    /// The global proxy service.
    pub proxy: String,
}

fn write_private(path: &std::path::Path, data: &str) {
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .expect("a private file");
    file.write_all(data.as_bytes()).expect("write");
}

fn random_hex() -> String {
    let mut bytes = [0u8; 24];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .expect("random bytes");
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Steady load on several proxies at once (one [`Load`](crate::Load) each), as a load
/// balancer in front of the nodes would send it.
pub struct Spread {
    loads: Vec<(SocketAddr, crate::Load)>,
}

impl Spread {
    /// `rate` requests per second to each of `proxies`.
    pub fn start(proxies: &[SocketAddr], rate: u32) -> Spread {
        Spread {
            loads: proxies
                .iter()
                .map(|p| (*p, crate::Load::start(*p, rate)))
                .collect(),
        }
    }

    /// Stops and returns the counts summed over the proxies.
    pub fn finish(self) -> crate::Counts {
        let mut total = crate::Counts::default();
        for (_, load) in self.loads {
            let counts = load.finish();
            total.unanswered += counts.unanswered;
            for (version, (answered, failed)) in counts.by_version {
                let entry = total.by_version.entry(version).or_default();
                entry.0 += answered;
                entry.1 += failed;
            }
        }
        total
    }
}
