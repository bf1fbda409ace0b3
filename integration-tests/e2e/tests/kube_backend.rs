//! The Kubernetes backend's error paths, through the real `kube` client against the
//! test-only fake API server (real HTTP, real pods as `cutover demo-app` processes), with
//! faults injected into the server: 403 names the missing RBAC rule, 409 is read again and
//! retried, a watch told 410 Gone lists again, and an API server that goes away holds the
//! rollout without leaving anything half applied.

use std::time::{Duration, Instant};

use cutover_backend::{Backend, BackendError, Readiness, Slot};
use cutover_core::load::{Format, Source, load_release};
use cutover_core::spec::Release;
use cutover_kube::KubeBackend;
use cutover_test_kit::kube::{KubeTest, NAMESPACE, release};
use fake_kube_apiserver::Fault;
use k8s_openapi::api::core::v1::Pod;
use kube::api::DeleteParams;
use serde_json::json;

const CANARY: &str = "  strategy:\n    canary:\n      steps:\n        - setWeight: 50\n";

async fn config(test: &KubeTest) -> kube::Config {
    let kubeconfig = kube::config::Kubeconfig::read_from(&test.kubeconfig).expect("kubeconfig");
    kube::Config::from_custom_kubeconfig(kubeconfig, &kube::config::KubeConfigOptions::default())
        .await
        .expect("config")
}

async fn backend(test: &KubeTest) -> KubeBackend {
    KubeBackend::connect_with(config(test).await, "unit", Some(NAMESPACE))
        .await
        .expect("connects")
}

fn release_of(image: &str) -> Release {
    let text = release("web", image, CANARY);
    let source = Source {
        name: "web.yaml",
        text: &text,
        format: Format::Yaml,
    };
    load_release(source, &Default::default())
        .unwrap_or_else(|d| panic!("{d:?}"))
        .0
}

/// Runs the blocking `KubeTest` set-up off the async runtime.
async fn cluster(label: &'static str, replicas: u32) -> KubeTest {
    tokio::task::spawn_blocking(move || {
        let test = KubeTest::start(label);
        test.web(replicas, json!({}));
        test
    })
    .await
    .expect("set-up")
}

#[tokio::test]
async fn forbidden_names_the_missing_rbac_verb_and_resource() {
    let test = cluster("kb-forbidden", 1).await;
    let backend = backend(&test).await;
    test.api
        .inject(Fault::forbidden("patch", "deployments").times(usize::MAX));
    let error = backend
        .stable(&release_of("demo:v2"), "v1")
        .await
        .expect_err("adoption needs patch on deployments");
    assert!(!error.is_retryable(), "{error}");
    let text = error.to_string();
    assert!(
        text.contains(r#"{apiGroups: ["apps"], resources: ["deployments"], verbs: ["patch"]}"#),
        "{text}"
    );
    assert!(text.contains("namespace 'shop'"), "{text}");
    // Nothing was written.
    let web = test.deployment("web").expect("web");
    assert!(
        web["metadata"]["annotations"]
            .get("cutover.dev/slots")
            .is_none()
    );
}

#[tokio::test]
async fn a_conflict_is_read_again_and_retried_and_a_real_one_is_reported() {
    let test = cluster("kb-conflict", 1).await;
    let backend = backend(&test).await;
    backend
        .stable(&release_of("demo:v2"), "v1")
        .await
        .expect("adopted");
    test.api.inject(
        Fault::new(
            409,
            "Conflict",
            "Operation cannot be fulfilled on deployments.apps \"web\": the object has been modified; please apply your changes to the latest version and try again",
        )
        .method(http::Method::PATCH)
        .resource("deployments")
        .times(3),
    );
    let state = json!({ "phase": "deploying" });
    let revision = backend
        .store_state("web", &state, None)
        .await
        .expect("stored after three conflicts");
    assert_eq!(revision, 1);
    let conflicts = test
        .api
        .requests()
        .iter()
        .filter(|r| r.method == "PATCH" && r.status == 409)
        .count();
    assert_eq!(conflicts, 3);
    let stored = backend
        .load_state("web")
        .await
        .expect("load")
        .expect("a state");
    assert_eq!((stored.version, stored.state), (1, state.clone()));
    // Another writer's revision is a conflict for the controller, not a retry.
    assert!(matches!(
        backend
            .store_state("web", &json!({"other": "writer"}), None)
            .await,
        Err(BackendError::Conflict { .. })
    ));
    // The same write again (its reply lost) is recognised.
    assert_eq!(
        backend
            .store_state("web", &state, Some(0))
            .await
            .expect("replay"),
        1
    );
    // recover fences: the old revision no longer writes.
    backend.recover("web").await.expect("recovered");
    assert!(matches!(
        backend
            .store_state("web", &json!({"late": true}), Some(1))
            .await,
        Err(BackendError::Conflict { .. })
    ));
    let stored = backend
        .load_state("web")
        .await
        .expect("load")
        .expect("a state");
    assert_eq!((stored.version, stored.state), (2, state));
}

#[tokio::test]
async fn a_watch_told_410_gone_lists_again_and_the_endpoints_follow_a_replaced_pod() {
    let test = cluster("kb-gone", 1).await;
    let backend = backend(&test).await;
    let view = backend
        .stable(&release_of("demo:v2"), "v1")
        .await
        .expect("adopted");
    assert_eq!(view.endpoints.len(), 1, "{view:?}");
    let lists_before = endpointslice_lists(&test);
    test.api.expire_watches();
    // Kubernetes replaces a pod: a new address.
    let pods: kube::Api<Pod> = kube::Api::namespaced(
        kube::Client::try_from(config(&test).await).expect("client"),
        NAMESPACE,
    );
    let old = test.pods(&[("app", "web")])[0]["metadata"]["name"]
        .as_str()
        .expect("a pod")
        .to_string();
    pods.delete(&old, &DeleteParams::default())
        .await
        .expect("deleted");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let now = backend
            .endpoints("web", Slot::Stable)
            .await
            .expect("endpoints")
            .expect("a stable slot");
        if now.endpoints.len() == 1 && now.endpoints != view.endpoints {
            break;
        }
        assert!(Instant::now() < deadline, "still {now:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        endpointslice_lists(&test) > lists_before,
        "the watcher did not list again after 410"
    );
}

fn endpointslice_lists(test: &KubeTest) -> usize {
    test.api
        .requests()
        .iter()
        .filter(|r| {
            r.method == "GET" && r.path.ends_with("/endpointslices") && !r.query.contains("watch=")
        })
        .count()
}

#[tokio::test]
async fn with_the_api_server_gone_a_rollout_holds_and_nothing_is_half_applied() {
    let test = cluster("kb-gone-server", 1).await;
    let backend = backend(&test).await;
    let release = release_of("demo:v2");
    backend.stable(&release, "v1").await.expect("adopted");

    // Gone before the deploy: it fails, retryably, having written nothing.
    test.api.stop();
    let error = backend.deploy(&release, "v2").await.expect_err("no server");
    assert!(error.is_retryable(), "{error}");
    assert!(
        backend
            .store_state("web", &json!({}), None)
            .await
            .expect_err("no server")
            .is_retryable()
    );
    test.api.restart();
    assert_eq!(test.deployments(), vec!["web"]);

    // Gone while the candidate starts: the deploy holds, waiting, and completes once the
    // server is back, with the candidate it applied (not a second one). The candidate
    // cannot be seen as ready until the test says so, so the outage surely falls in the
    // wait.
    test.api.inject(
        Fault::new(503, "ServiceUnavailable", "the server is busy")
            .method(http::Method::GET)
            .resource("pods")
            .times(usize::MAX),
    );
    let deploying = {
        let backend = backend.clone();
        let release = release.clone();
        tokio::spawn(async move { backend.deploy(&release, "v2").await })
    };
    // Once the deploy asks for the candidate's pods, everything is applied and it waits.
    let deadline = Instant::now() + Duration::from_secs(20);
    while !test
        .api
        .requests()
        .iter()
        .any(|r| r.path.ends_with("/pods") && r.status == 503)
    {
        assert!(
            Instant::now() < deadline,
            "the deploy never waited for its pods"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let uid = test.deployment("web-green").expect("web-green")["metadata"]["uid"].clone();
    test.api.stop();
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        !deploying.is_finished(),
        "the deploy gave up while the server was away"
    );
    test.api.clear_faults();
    test.api.restart();
    let ready = tokio::time::timeout(Duration::from_secs(30), deploying)
        .await
        .expect("the deploy completes once the server is back")
        .expect("task")
        .expect("deployed");
    let Readiness::Ready(view) = ready else {
        panic!("not ready: {ready:?}");
    };
    assert_eq!(view.version, "v2");
    assert_eq!(view.endpoints.len(), 1, "{view:?}");
    assert_eq!(test.deployments(), vec!["web", "web-green"]);
    assert_eq!(
        test.deployment("web-green").expect("web-green")["metadata"]["uid"],
        uid
    );
    // Deploying again finds it.
    let deployed = backend.deploy(&release, "v2").await;
    assert!(matches!(deployed, Ok(Readiness::Ready(_))), "{deployed:?}");
    assert_eq!(
        test.deployment("web-green").expect("web-green")["metadata"]["uid"],
        uid
    );

    // A promotion and a scale-down, each once, whatever is retried.
    backend.promote("web").await.expect("promoted");
    backend
        .promote("web")
        .await
        .expect("promoted again is fine");
    backend
        .retire("web", Slot::Previous)
        .await
        .expect("retired");
    backend
        .retire("web", Slot::Previous)
        .await
        .expect("retired again is fine");
    let web = test.deployment("web").expect("web");
    assert_eq!(web["spec"]["replicas"], 0);
    let stable = backend
        .endpoints("web", Slot::Stable)
        .await
        .expect("endpoints")
        .expect("stable");
    assert_eq!(stable.version, "v2");
}

#[tokio::test]
async fn a_fenced_writer_cannot_pass_its_next_write_off_as_a_replay() {
    let test = cluster("kb-fence", 1).await;
    let old = backend(&test).await;
    old.stable(&release_of("demo:v2"), "v1")
        .await
        .expect("adopted");
    let state = json!({ "phase": "step" });
    assert_eq!(
        old.store_state("web", &state, None).await.expect("stored"),
        1
    );
    // Another controller takes over: it fences, writing the same state one revision up.
    let new = backend(&test).await;
    new.recover("web").await.expect("fenced");
    // The old one's next write carries the same text and expects revision 1: it is not a
    // replay of its own write, and is refused.
    assert!(matches!(
        old.store_state("web", &state, Some(1)).await,
        Err(BackendError::Conflict { .. })
    ));
    // The new one goes on from revision 2.
    assert_eq!(
        new.store_state("web", &state, Some(2))
            .await
            .expect("stored"),
        3
    );
}

#[tokio::test]
async fn a_deployment_of_the_candidates_name_that_is_not_the_releases_is_never_touched() {
    let test = cluster("kb-collision", 1).await;
    // Someone else's Deployment has the name the first candidate would get.
    let theirs = test
        .api
        .create(json!({
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": { "name": "web-green", "namespace": NAMESPACE },
            "spec": {
                "replicas": 1,
                "selector": { "matchLabels": { "app": "legacy" } },
                "template": {
                    "metadata": { "labels": { "app": "legacy" } },
                    "spec": { "containers": [{ "name": "app", "image": "demo:v1",
                                               "ports": [{ "containerPort": 8080 }] }] },
                },
            },
        }))
        .expect("created");
    let backend = backend(&test).await;
    let release = release_of("demo:v2");
    backend.stable(&release, "v1").await.expect("adopted");
    let error = backend.deploy(&release, "v2").await.expect_err("refused");
    assert!(!error.is_retryable(), "{error}");
    assert!(
        error
            .to_string()
            .contains("'web-green' exists and is not release 'web''s"),
        "{error}"
    );
    // A rollback retires the candidate slot: the other Deployment stays as it was.
    backend
        .retire("web", Slot::Candidate)
        .await
        .expect("retired");
    let after = test.deployment("web-green").expect("still there");
    assert_eq!(after["metadata"]["uid"], theirs["metadata"]["uid"]);
    assert_eq!(
        after["spec"]["template"]["spec"]["containers"][0]["image"],
        "demo:v1"
    );
}

#[tokio::test]
async fn a_lost_anchor_keeps_the_last_endpoints_rather_than_routing_to_nothing() {
    let test = cluster("kb-anchor", 1).await;
    let backend = backend(&test).await;
    let release = release_of("demo:v2");
    backend.stable(&release, "v1").await.expect("adopted");
    let deployed = backend.deploy(&release, "v2").await;
    assert!(matches!(deployed, Ok(Readiness::Ready(_))), "{deployed:?}");
    backend.promote("web").await.expect("promoted");
    // The anchor is pruned (say, by a GitOps tool) while web-green serves.
    test.api
        .delete("deployments", NAMESPACE, "web")
        .expect("deleted");
    let error = backend
        .endpoints("web", Slot::Stable)
        .await
        .expect_err("not 'no such slot'");
    assert!(error.is_retryable(), "{error}");
    assert!(error.to_string().contains("web-green"), "{error}");
    // The anchor comes back without its record (say, re-applied by a GitOps tool): it is
    // not adopted afresh, which would make it stable again and could apply a candidate
    // over web-green, which serves.
    let test = tokio::task::spawn_blocking(move || {
        test.web(1, json!({}));
        test
    })
    .await
    .expect("re-applied");
    let error = backend
        .stable(&release_of("demo:v4"), "v1")
        .await
        .expect_err("no adoption without the record");
    assert!(error.to_string().contains("web-green"), "{error}");
    assert!(backend.retire("web", Slot::Candidate).await.is_err());
    let green = test.deployment("web-green").expect("web-green serves on");
    assert_eq!(
        green["spec"]["template"]["spec"]["containers"][0]["image"],
        "demo:v2"
    );
    assert!(
        test.deployment("web").expect("web")["metadata"]["annotations"]
            .get("cutover.dev/slots")
            .is_none()
    );
}
