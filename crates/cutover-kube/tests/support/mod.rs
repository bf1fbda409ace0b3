//! What the Kubernetes suites share: a fake cluster (the test-only fake API server of
//! `integration-tests/fake-kube-apiserver`, with Deployment `web` serving v1) and a client
//! configuration for it.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use cutover_core::load::{Format, Source, load_release};
use cutover_core::spec::Release;
use fake_kube_apiserver::{Config, FakeApiServer};
use serde_json::json;

/// The namespace of every object.
pub const NAMESPACE: &str = "shop";

/// One check's fake cluster, with Deployment `web` serving v1.
pub struct Kube {
    /// The server, to look at and break.
    pub api: FakeApiServer,
    /// A kubeconfig naming it, removed by the check's cleanup.
    pub kubeconfig: std::path::PathBuf,
    /// Release `web` of Deployment `web`.
    pub release: Release,
}

impl Kube {
    /// A client configuration for the server, as a controller would read it.
    pub async fn config(&self) -> kube::Config {
        let kubeconfig = kube::config::Kubeconfig::read_from(&self.kubeconfig).expect("kubeconfig");
        kube::Config::from_custom_kubeconfig(
            kubeconfig,
            &kube::config::KubeConfigOptions::default(),
        )
        .await
        .expect("config")
    }
}

/// A pod's process: a static file server on the pod's address and container port.
pub fn pod() -> Vec<String> {
    [
        "python3",
        "-m",
        "http.server",
        "{{port}}",
        "--bind",
        "{{ip}}",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

pub fn release(name: &str) -> Release {
    let text = format!(
        "apiVersion: cutover.dev/v1\nkind: Release\nmetadata:\n  name: {name}\nspec:\n  backend:\n    kubernetes:\n      namespace: {NAMESPACE}\n      deployment: web\n  image: demo:v2\n  port: 8080\n  strategy:\n    canary:\n      steps:\n        - setWeight: 50\n"
    );
    let source = Source {
        name: "web.yaml",
        text: &text,
        format: Format::Yaml,
    };
    match load_release(source, &Default::default()) {
        Ok((release, _)) => release,
        Err(d) => panic!("{d:?}"),
    }
}

/// Starts the fake API server and Deployment `web` (1 pod of `demo:v1`, ready on `/`).
pub fn cluster(check: &str) -> Kube {
    let mut images = HashMap::new();
    for version in ["v1", "v2"] {
        images.insert(format!("demo:{version}"), pod());
    }
    let api = FakeApiServer::start(Config {
        images,
        ..Config::default()
    })
    .expect("the fake API server starts");
    let kubeconfig = std::env::temp_dir().join(format!(
        "cutover-kube-conf-{check}-{}.yaml",
        std::process::id()
    ));
    api.write_kubeconfig(&kubeconfig, NAMESPACE)
        .expect("kubeconfig");
    api.create(json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": { "name": "web", "namespace": NAMESPACE, "labels": { "app": "web" } },
        "spec": {
            "replicas": 1,
            "selector": { "matchLabels": { "app": "web" } },
            "template": {
                "metadata": { "labels": { "app": "web" } },
                "spec": { "containers": [{
                    "name": "app",
                    "image": "demo:v1",
                    "ports": [{ "name": "http", "containerPort": 8080 }],
                    "readinessProbe": { "httpGet": { "path": "/", "port": 8080 } },
                }]},
            },
        },
    }))
    .unwrap_or_else(|e| panic!("web is created: {e:?}"));
    let started = Instant::now();
    while api
        .get("deployments", NAMESPACE, "web")
        .and_then(|d| d["status"]["availableReplicas"].as_u64())
        != Some(1)
    {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "web did not become available"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    Kube {
        api,
        kubeconfig,
        release: release("web"),
    }
}
