//! The Kubernetes backend through the `Backend` contract's checks
//! (`cutover_backend::conformance`), against the test-only fake API server
//! (`integration-tests/fake-kube-apiserver`: real HTTP, the real `kube` client, pods as
//! `python3 -m http.server` processes on 127.x addresses), one server per check.

mod support;

use std::sync::Arc;

use cutover_backend::conformance::Harness;
use cutover_backend::{Backend, BoxFuture};
use cutover_core::spec::Release;
use cutover_kube::KubeBackend;
use fake_kube_apiserver::Fault;
use support::{Kube, NAMESPACE, cluster};

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
            let config = self.config().await;
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
