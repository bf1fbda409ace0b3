//! Kubernetes tests' world: the test-only fake API server (`fake-kube-apiserver`), whose
//! simulated kubelet runs `cutover demo-app` processes as pods on 127.x.y.z, a kubeconfig
//! pointing at it, and a `web` Deployment of v1 to release.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use fake_kube_apiserver::{Config, FakeApiServer};
use serde_json::{Value, json};

use crate::binary::cutover_bin;
use crate::scratch::Scratch;
use crate::serve::Serve;

/// The namespace every test releases in.
pub const NAMESPACE: &str = "shop";

/// The argv of a demo-app pod of `version` with extra flags.
fn demo(version: &str, flags: &[&str]) -> Vec<String> {
    let mut argv: Vec<String> = [
        cutover_bin(),
        "demo-app",
        "--app-version",
        version,
        "--bind",
        "{{ip}}",
        "--port",
        "{{port}}",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    argv.extend(flags.iter().map(|s| s.to_string()));
    argv
}

/// One test's fake cluster.
pub struct KubeTest {
    /// The fake API server.
    pub api: FakeApiServer,
    /// A kubeconfig for it, with [`NAMESPACE`] as the context's namespace.
    pub kubeconfig: PathBuf,
    /// Where the kubeconfig lives.
    pub scratch: Scratch,
}

impl KubeTest {
    /// Starts the fake API server. Images: `demo:v1`, `demo:v2`, `demo:v4` (healthy),
    /// `demo:v3` (answers 20 % of requests 500), `demo:stuck` (a process that never
    /// listens, so never ready); any other image fails to pull.
    pub fn start(label: &str) -> KubeTest {
        let mut images = HashMap::new();
        for version in ["v1", "v2", "v4"] {
            images.insert(format!("demo:{version}"), demo(version, &[]));
        }
        images.insert("demo:v3".into(), demo("v3", &["--error-rate", "0.2"]));
        images.insert(
            "demo:stuck".into(),
            vec!["sleep".to_string(), "600".to_string()],
        );
        let api = FakeApiServer::start(Config {
            images,
            ..Config::default()
        })
        .expect("the fake API server starts");
        let scratch = Scratch::new(label);
        let kubeconfig = scratch.path.join("kubeconfig");
        api.write_kubeconfig(&kubeconfig, NAMESPACE)
            .expect("kubeconfig");
        KubeTest {
            api,
            kubeconfig,
            scratch,
        }
    }

    /// The `KUBECONFIG` for processes.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![("KUBECONFIG", self.kubeconfig.display().to_string())]
    }

    /// Applies `web`: `replicas` pods of `demo:v1` selected by `app=web`, probed on
    /// `/healthz`, with `spec` merged over it; waits until they are available.
    pub fn web(&self, replicas: u32, spec: Value) -> Value {
        let mut deployment = json!({
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": { "name": "web", "namespace": NAMESPACE, "labels": { "app": "web" } },
            "spec": {
                "replicas": replicas,
                "selector": { "matchLabels": { "app": "web" } },
                "template": {
                    "metadata": { "labels": { "app": "web", "tier": "front" } },
                    "spec": { "containers": [{
                        "name": "app",
                        "image": "demo:v1",
                        "ports": [{ "name": "http", "containerPort": 8080 }],
                        "env": [{ "name": "MODE", "value": "test" }],
                        "readinessProbe": { "httpGet": { "path": "/healthz", "port": 8080 } },
                    }]},
                },
            },
        });
        merge(&mut deployment["spec"], spec);
        self.api
            .create(deployment)
            .unwrap_or_else(|e| panic!("web is created: {e:?}"));
        self.wait_deployment("web", Duration::from_secs(20), |d| {
            d["status"]["availableReplicas"].as_u64() == Some(u64::from(replicas))
        })
    }

    /// A controller for the fake cluster, its proxy embedded.
    pub fn controller(&self, name: &str, extra: &[&str]) -> Serve {
        let mut args = vec![
            "--backend",
            "kubernetes",
            "--namespace",
            NAMESPACE,
            "--name",
            name,
        ];
        args.extend_from_slice(extra);
        Serve::start_with("127.0.0.1", name, &args, &self.env(), true)
    }

    /// A Deployment as the API server has it.
    pub fn deployment(&self, name: &str) -> Option<Value> {
        self.api.get("deployments", NAMESPACE, name)
    }

    /// Waits until Deployment `name` satisfies `done`.
    pub fn wait_deployment(
        &self,
        name: &str,
        limit: Duration,
        done: impl Fn(&Value) -> bool,
    ) -> Value {
        self.wait_object("deployments", "Deployment", name, limit, done)
    }

    /// Waits until the object `name` of `resource` (a `kind`) in [`NAMESPACE`] satisfies
    /// `done`; panics with the object as it is after `limit`.
    fn wait_object(
        &self,
        resource: &str,
        kind: &str,
        name: &str,
        limit: Duration,
        done: impl Fn(&Value) -> bool,
    ) -> Value {
        let started = Instant::now();
        loop {
            if let Some(object) = self.api.get(resource, NAMESPACE, name)
                && done(&object)
            {
                return object;
            }
            assert!(
                started.elapsed() < limit,
                "{kind} {name} did not get there within {limit:?}: {:#}",
                self.api.get(resource, NAMESPACE, name).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The names of the Deployments in the namespace, sorted.
    pub fn deployments(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .api
            .list("deployments", NAMESPACE)
            .iter()
            .filter_map(|d| d["metadata"]["name"].as_str().map(str::to_string))
            .collect();
        names.sort();
        names
    }

    /// Waits until the namespace holds exactly the Deployments `names` (sorted).
    pub fn wait_deployments(&self, names: &[&str]) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while self.deployments() != names {
            assert!(Instant::now() < deadline, "{:?}", self.deployments());
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Pods whose labels include `labels`.
    pub fn pods(&self, labels: &[(&str, &str)]) -> Vec<Value> {
        self.api
            .list("pods", NAMESPACE)
            .into_iter()
            .filter(|p| {
                labels
                    .iter()
                    .all(|(k, v)| p["metadata"]["labels"][*k].as_str() == Some(*v))
            })
            .collect()
    }
}

/// A release of Deployment `web` to `image` in [`NAMESPACE`], with `sections` (YAML,
/// indented by 2).
pub fn release(name: &str, image: &str, sections: &str) -> String {
    format!(
        "apiVersion: cutover.dev/v1\nkind: Release\nmetadata:\n  name: {name}\nspec:\n  backend:\n    kubernetes:\n      namespace: {NAMESPACE}\n      deployment: web\n  image: {image}\n  port: 8080\n{sections}"
    )
}

/// RFC 7386 merge of `patch` into `target`.
fn merge(target: &mut Value, patch: Value) {
    match (target, patch) {
        (Value::Object(t), Value::Object(p)) => {
            for (k, v) in p {
                if v.is_null() {
                    t.remove(&k);
                } else {
                    merge(t.entry(k).or_insert(Value::Null), v);
                }
            }
        }
        (t, p) => *t = p,
    }
}

impl KubeTest {
    /// A merge patch of the object at `path` (say
    /// `/apis/cutover.dev/v1/namespaces/shop/releases/web`), as `kubectl patch --type merge`
    /// sends it; the HTTP status.
    pub fn merge_patch(&self, path: &str, patch: &Value) -> u16 {
        use std::io::{Read, Write};
        let address = self.api.url().trim_start_matches("http://").to_string();
        let body = patch.to_string();
        let mut stream = std::net::TcpStream::connect(&address).expect("the fake API server");
        write!(
            stream,
            "PATCH {path}?fieldManager=kubectl-patch HTTP/1.1\r\nHost: {address}\r\nContent-Type: application/merge-patch+json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
        .expect("request");
        let mut answer = String::new();
        let _ = stream.read_to_string(&mut answer);
        answer
            .split(' ')
            .nth(1)
            .and_then(|code| code.parse().ok())
            .unwrap_or(0)
    }

    /// Waits until the `Release` object `name` satisfies `done`.
    pub fn wait_release_object(
        &self,
        name: &str,
        limit: Duration,
        done: impl Fn(&Value) -> bool,
    ) -> Value {
        self.wait_object("releases", "Release", name, limit, done)
    }
}
