//! A release that an older version of cutover wrote (keys `cutover.io/…`), taken over live by
//! this one (`cutover.dev/…`) on the fake API server: the anchor, its candidate Deployment
//! and their Services are made as the older version made them (merge patch on the anchor,
//! server-side apply as field manager `cutover` for the rest), mid-rollout. The new backend
//! finds the release, recovers it, reads and compare-and-swaps its state, reads endpoints
//! from the old Services' slices, deploys the candidate again (its old selector kept, as the
//! API server requires), promotes it and retires the old version; what is left carries only
//! new keys, but for the old candidate's selector and pod labels.

mod support;

use std::time::{Duration, Instant};

use cutover_backend::{Backend, BackendError, Readiness, Slot};
use cutover_kube::KubeBackend;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Service;
use kube::api::{Patch, PatchParams};
use kube::{Api, Client};
use serde_json::{Value, json};
use support::{Kube, NAMESPACE, cluster};

/// The controller's name, in the old labels and the new backend alike.
const CONTROLLER: &str = "upgrade";

/// How long one backend call may take: a deploy waits for the candidate's pods.
const CALL_BUDGET: Duration = Duration::from_secs(60);

async fn within<T>(what: &str, call: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(CALL_BUDGET, call)
        .await
        .unwrap_or_else(|_| panic!("{what} took longer than {CALL_BUDGET:?}"))
}

/// The state an older controller stored mid-rollout, revision 3.
fn state_mid_rollout() -> Value {
    json!({"phase": "canary", "step": 0, "candidate": "v2"})
}

/// The old labels of release `web`'s objects.
fn old_labels(extra: (&str, &str)) -> Value {
    json!({
        "cutover.io/controller": CONTROLLER,
        "cutover.io/release": "web",
        (extra.0): extra.1,
    })
}

/// The slot Service an older version applied for `deployment`.
fn old_service(deployment: &str, selector: Value) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": format!("cutover-{deployment}"),
            "namespace": NAMESPACE,
            "labels": old_labels(("cutover.io/deployment", deployment)),
        },
        "spec": {
            "clusterIP": "None",
            "selector": selector,
            "ports": [{ "name": "http", "port": 8080, "targetPort": 8080, "protocol": "TCP" }],
        },
    })
}

/// Makes release `web` as an older version left it: `web` adopted as the anchor (stable,
/// holding the state) and `web-green` deployed as the candidate, with their Services.
async fn write_the_old_way(client: Client) {
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), NAMESPACE);
    let services: Api<Service> = Api::namespaced(client, NAMESPACE);
    let apply = PatchParams::apply("cutover").force();
    let slots = json!({
        "port": 8080,
        "stable": { "deployment": "web", "version": "v1" },
        "candidate": { "deployment": "web-green", "version": "v2" },
    });
    let anchor = json!({ "metadata": {
        "labels": old_labels(("cutover.io/anchor", "true")),
        "annotations": {
            "cutover.io/slots": slots.to_string(),
            "cutover.io/state": state_mid_rollout().to_string(),
            "cutover.io/revision": "3",
            "cutover.io/writer": "old-controller",
        },
    }});
    deployments
        .patch("web", &PatchParams::default(), &Patch::Merge(&anchor))
        .await
        .expect("the anchor is labelled");
    let selector = old_labels(("cutover.io/colour", "green"));
    let green = json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": "web-green",
            "namespace": NAMESPACE,
            "labels": selector,
            "annotations": { "cutover.io/version": "v2" },
        },
        "spec": {
            "replicas": 1,
            "selector": { "matchLabels": selector },
            "template": {
                "metadata": { "labels": selector },
                "spec": { "containers": [{
                    "name": "app",
                    "image": "demo:v2",
                    "ports": [{ "name": "http", "containerPort": 8080 }],
                    "readinessProbe": { "httpGet": { "path": "/", "port": 8080 } },
                }]},
            },
        },
    });
    deployments
        .patch("web-green", &apply, &Patch::Apply(&green))
        .await
        .expect("the old candidate is applied");
    for (deployment, selector) in [("web", json!({"app": "web"})), ("web-green", selector)] {
        services
            .patch(
                &format!("cutover-{deployment}"),
                &apply,
                &Patch::Apply(&old_service(deployment, selector)),
            )
            .await
            .expect("the old Service is applied");
    }
}

/// The keys of `object`'s `field` (`/metadata/labels`, ...) in the old domain.
fn old_keys(object: &Value, field: &str) -> Vec<String> {
    object
        .pointer(field)
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
        .map(|(k, _)| k.clone())
        .filter(|k| k.starts_with("cutover.io/"))
        .collect()
}

/// Polls the backend's view of `slot` until it has endpoints.
async fn endpoints_of(backend: &KubeBackend, slot: Slot) -> (String, Vec<String>) {
    let started = Instant::now();
    loop {
        let view = backend
            .endpoints("web", slot)
            .await
            .expect("endpoints")
            .expect("the slot exists");
        if !view.endpoints.is_empty() {
            return (view.version, view.endpoints);
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the {slot:?} slot shows no endpoints"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn upgrade(kube: &Kube) {
    let config = kube.config().await;
    let client = Client::try_from(config.clone()).expect("client");
    write_the_old_way(client).await;
    let backend = KubeBackend::connect_with(config, CONTROLLER, Some(NAMESPACE))
        .await
        .expect("connects");

    let releases = within("releases", backend.releases())
        .await
        .expect("releases");
    assert_eq!(
        releases,
        vec!["web".to_string()],
        "the old release is found"
    );
    within("recover", backend.recover("web"))
        .await
        .expect("recovers the old release");
    let stored = within("load_state", backend.load_state("web"))
        .await
        .expect("loads")
        .expect("the old state is read");
    assert_eq!((stored.version, stored.state), (4, state_mid_rollout()));
    let next = json!({"phase": "canary", "step": 1, "candidate": "v2"});
    let stale = within("store_state", backend.store_state("web", &next, Some(3))).await;
    assert!(
        matches!(stale, Err(BackendError::Conflict { .. })),
        "a write against the old revision is refused: {stale:?}"
    );
    let revision = within("store_state", backend.store_state("web", &next, Some(4)))
        .await
        .expect("compare-and-swap on the upgraded state");
    assert_eq!(revision, 5);

    // Endpoints come from the slices of the Service the older version labelled.
    let (version, _) = within("endpoints", endpoints_of(&backend, Slot::Candidate)).await;
    assert_eq!(version, "v2");

    match within("deploy", backend.deploy(&kube.release, "v2"))
        .await
        .expect("deploys again over the old candidate")
    {
        Readiness::Ready(view) => assert_eq!(view.version, "v2"),
        Readiness::Failed { reason } => panic!("the old candidate failed: {reason}"),
    }
    within("promote", backend.promote("web"))
        .await
        .expect("promotes the old candidate");
    within("retire", backend.retire("web", Slot::Previous))
        .await
        .expect("retires the old stable Deployment");
    let (version, _) = within("endpoints", endpoints_of(&backend, Slot::Stable)).await;
    assert_eq!(version, "v2");
    let stored = within("load_state", backend.load_state("web"))
        .await
        .expect("loads")
        .expect("the state stays on the anchor");
    assert_eq!((stored.version, stored.state), (5, next));

    // The old version's Service of the retired anchor is recognised as the release's and
    // deleted; the anchor itself is only scaled down.
    assert!(
        kube.api.get("services", NAMESPACE, "cutover-web").is_none(),
        "the retired anchor's old Service is left"
    );
    let web = kube
        .api
        .get("deployments", NAMESPACE, "web")
        .expect("the anchor stays");
    assert!(
        old_keys(&web, "/metadata/labels").is_empty(),
        "{}",
        web["metadata"]
    );
    assert!(
        old_keys(&web, "/metadata/annotations").is_empty(),
        "{}",
        web["metadata"]
    );
    assert_eq!(web["metadata"]["labels"]["cutover.dev/anchor"], "true");
    assert_eq!(
        web["spec"]["replicas"], 0,
        "the retired anchor is scaled down"
    );
    assert_eq!(web["metadata"]["annotations"]["cutover.dev/revision"], "5");
    let green = kube
        .api
        .get("deployments", NAMESPACE, "web-green")
        .expect("the candidate stays");
    assert!(
        old_keys(&green, "/metadata/labels").is_empty(),
        "{}",
        green["metadata"]
    );
    assert!(
        old_keys(&green, "/metadata/annotations").is_empty(),
        "{}",
        green["metadata"]
    );
    assert_eq!(green["metadata"]["labels"]["cutover.dev/colour"], "green");
    // The one place the old keys stay: a selector cannot change.
    assert_eq!(
        green["spec"]["selector"]["matchLabels"]["cutover.io/colour"],
        "green"
    );
    let service = kube
        .api
        .get("services", NAMESPACE, "cutover-web-green")
        .expect("the candidate's Service stays");
    // Its pods keep the old selector, and so its Service the old controller key beside the
    // new one: its slices are never out of both domains' watches.
    assert_eq!(
        old_keys(&service, "/metadata/labels"),
        ["cutover.io/controller"],
        "{}",
        service["metadata"]
    );
    assert_eq!(
        service["metadata"]["labels"]["cutover.dev/deployment"],
        "web-green"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_release_written_by_an_older_version_is_taken_over_and_relabelled() {
    if std::process::Command::new("python3")
        .arg("--version")
        .output()
        .is_err()
    {
        assert!(std::env::var_os("CI").is_none(), "python3 is missing");
        eprintln!("SKIPPED: the upgrade test needs python3 for its pods");
        return;
    }
    let kube = tokio::task::spawn_blocking(|| cluster("upgrade"))
        .await
        .expect("set-up");
    upgrade(&kube).await;
    let _ = std::fs::remove_file(&kube.kubeconfig);
}
