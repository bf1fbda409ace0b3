//! The Kubernetes backend through the `Backend` contract's checks
//! (`cutover_backend::conformance`), against the test-only fake API server
//! (`integration-tests/fake-kube-apiserver`: real HTTP, the real `kube` client, pods as
//! `python3 -m http.server` processes on 127.x addresses), one server per check.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use cutover_backend::conformance::Harness;
use cutover_backend::{Backend, BoxFuture};
use cutover_core::load::{Format, Source, load_release};
use cutover_core::spec::Release;
use cutover_kube::KubeBackend;
use fake_kube_apiserver::{Config, FakeApiServer, Fault};
use serde_json::json;

const NAMESPACE: &str = "shop";

/// One check's fake cluster, with Deployment `web` serving v1.
struct Kube {
    api: FakeApiServer,
    kubeconfig: std::path::PathBuf,
    release: Release,
}

/// A pod's process: a static file server on the pod's address and container port.
fn pod() -> Vec<String> {
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

fn release(name: &str) -> Release {
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
fn cluster(check: &str) -> Kube {
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

async fn kube(check: &'static str) -> Option<Arc<dyn Harness>> {
    if std::process::Command::new("python3")
        .arg("--version")
        .output()
        .is_err()
    {
        assert!(std::env::var_os("CI").is_none(), "python3 is missing");
        eprintln!("SKIPPED: the Kubernetes conformance run needs python3 for its pods");
        return None;
    }
    let kube = tokio::task::spawn_blocking(move || cluster(check))
        .await
        .expect("set-up");
    Some(Arc::new(kube))
}

impl Harness for Kube {
    fn backend(&self) -> BoxFuture<'_, Arc<dyn Backend>> {
        Box::pin(async move {
            let kubeconfig =
                kube::config::Kubeconfig::read_from(&self.kubeconfig).expect("kubeconfig");
            let config = kube::Config::from_custom_kubeconfig(
                kubeconfig,
                &kube::config::KubeConfigOptions::default(),
            )
            .await
            .expect("config");
            let backend: Arc<dyn Backend> = Arc::new(
                KubeBackend::connect_with(config, "conformance", Some(NAMESPACE))
                    .await
                    .expect("connects"),
            );
            backend
        })
    }

    fn release(&self) -> &Release {
        &self.release
    }

    fn workloads(&self) -> BoxFuture<'_, usize> {
        // Deployments with pods wanted: a retired adopted Deployment is scaled to 0, a
        // retired candidate deleted.
        Box::pin(async move {
            self.api
                .list("deployments", NAMESPACE)
                .iter()
                .filter(|d| d["spec"]["replicas"].as_u64().unwrap_or(1) > 0)
                .count()
        })
    }

    fn break_platform(&self) -> BoxFuture<'_, bool> {
        // The API server answers every call about Deployments with 503.
        Box::pin(async move {
            self.api.inject(
                Fault::new(
                    503,
                    "ServiceUnavailable",
                    "the server is currently unable to handle the request",
                )
                .resource("deployments")
                .times(usize::MAX),
            );
            true
        })
    }

    fn mend(&self) -> BoxFuture<'_, ()> {
        Box::pin(async move { self.api.clear_faults() })
    }

    fn cleanup(&self) -> BoxFuture<'_, ()> {
        // The server kills its pods when it is dropped.
        Box::pin(async move {
            let _ = std::fs::remove_file(&self.kubeconfig);
        })
    }
}

cutover_backend::conformance_suite!(kube);
