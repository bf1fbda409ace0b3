//! A release that an older version of cutover labelled (`io.cutover.*`), taken over live by
//! this one (`dev.cutover.*`) on the real engine: found, recovered, its state read and
//! compare-and-swapped, its candidate found and promoted, and every service left carrying
//! only the new names.
//!
//! Without a Docker Swarm the test skips, saying so; with `CI` set it fails instead.

mod support;

use std::future::Future;
use std::time::Duration;

use cutover_backend::{Backend, BackendError, Readiness, Slot};
use cutover_swarm::SwarmBackend;
use serde_json::{Value, json};
use support::{Swarm, TEST_LABEL, image, must, start};

/// How long one backend call may take: a deploy waits for the candidate's task.
const CALL_BUDGET: Duration = Duration::from_secs(120);

async fn within<T>(what: &str, call: impl Future<Output = T>) -> T {
    tokio::time::timeout(CALL_BUDGET, call)
        .await
        .unwrap_or_else(|_| panic!("{what} took longer than {CALL_BUDGET:?}"))
}

/// The labels an older version's adoption and candidate wrote, exactly as it spelled them.
fn old_labels(swarm: &Swarm, role: &str, epoch: u64, version: &str) -> Vec<String> {
    let prefix = &swarm.prefix;
    [
        ("io.cutover.controller", prefix.clone()),
        ("io.cutover.release", prefix.clone()),
        ("io.cutover.role", role.to_string()),
        ("io.cutover.epoch", epoch.to_string()),
        ("io.cutover.version", version.to_string()),
        ("io.cutover.base", format!("{prefix}-web")),
        ("io.cutover.port", "8080".to_string()),
        ("io.cutover.network", format!("{prefix}-net")),
    ]
    .into_iter()
    .map(|(key, value)| format!("{key}={value}"))
    .collect()
}

/// The state an older controller stored mid-rollout: on the stable service, revision 3.
fn state_mid_rollout() -> Value {
    json!({"phase": "canary", "step": 0, "candidate": "v2"})
}

/// Labels the stable service and creates the candidate as an older version did.
fn label_the_old_way(swarm: &Swarm) {
    let web = format!("{}-web", swarm.prefix);
    let mut update = vec!["service".to_string(), "update".into(), "--detach".into()];
    let mut stable = old_labels(swarm, "stable", 0, "v1");
    stable.push(format!("io.cutover.state={}", state_mid_rollout()));
    stable.push("io.cutover.revision=3".into());
    stable.push("io.cutover.writer=old-controller".into());
    for label in &stable {
        update.push("--label-add".into());
        update.push(label.clone());
    }
    update.push(web.clone());
    must(&update.iter().map(String::as_str).collect::<Vec<_>>());
    let mut create: Vec<String> = [
        "service",
        "create",
        "--detach",
        "--name",
        &format!("{web}-green"),
        "--label",
        &swarm.label(),
        "--network",
        &format!("{}-net", swarm.prefix),
        "--endpoint-mode",
        "dnsrr",
        "--replicas",
        "1",
    ]
    .map(str::to_string)
    .to_vec();
    for label in old_labels(swarm, "candidate", 1, "v2") {
        create.push("--label".into());
        create.push(label);
    }
    create.push(image("v2"));
    must(&create.iter().map(String::as_str).collect::<Vec<_>>());
}

/// The labels of a service, as the engine holds them.
fn labels_of(service: &str) -> Value {
    let text = must(&[
        "service",
        "inspect",
        "--format",
        "{{json .Spec.Labels}}",
        service,
    ]);
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("labels of {service}: {e}: {text}"))
}

async fn upgrade(swarm: &Swarm) {
    let release = &swarm.release;
    let name = release.metadata.name.as_str();
    let backend = SwarmBackend::connect(&swarm.prefix)
        .await
        .expect("connects to the Swarm");

    let releases = within("releases", backend.releases())
        .await
        .expect("releases");
    assert_eq!(releases, vec![name.to_string()], "the old release is found");
    within("recover", backend.recover(name))
        .await
        .expect("recovers the old release");
    // Recovery writes the state again one revision up, as the fence of a takeover.
    let stored = within("load_state", backend.load_state(name))
        .await
        .expect("loads")
        .expect("the old state is read");
    assert_eq!(stored.state, state_mid_rollout());
    assert_eq!(stored.version, 4);

    let next = json!({"phase": "canary", "step": 1, "candidate": "v2"});
    let stale = within("store_state", backend.store_state(name, &next, Some(3))).await;
    assert!(
        matches!(stale, Err(BackendError::Conflict { .. })),
        "a write against the old revision is refused: {stale:?}"
    );
    let revision = within("store_state", backend.store_state(name, &next, Some(4)))
        .await
        .expect("compare-and-swap on the upgraded state");
    assert_eq!(revision, 5);

    match within("deploy", backend.deploy(release, "v2"))
        .await
        .expect("deploy")
    {
        Readiness::Ready(view) => assert_eq!(view.version, "v2"),
        Readiness::Failed { reason } => panic!("the old candidate failed: {reason}"),
    }
    let services: Vec<String> = swarm.services().into_iter().map(|(n, _)| n).collect();
    assert_eq!(
        services.len(),
        2,
        "the old candidate is found, not doubled: {services:?}"
    );

    within("promote", backend.promote(name))
        .await
        .expect("promotes the old candidate");
    within("retire", backend.retire(name, Slot::Previous))
        .await
        .expect("retires the old stable service");
    let stable = within("endpoints", backend.endpoints(name, Slot::Stable))
        .await
        .expect("endpoints")
        .expect("a stable slot");
    assert_eq!(stable.version, "v2");
    let stored = within("load_state", backend.load_state(name))
        .await
        .expect("loads")
        .expect("the state moved with the promotion");
    assert_eq!((stored.version, stored.state), (5, next));

    let web_green = format!("{}-web-green", swarm.prefix);
    let services: Vec<String> = swarm.services().into_iter().map(|(n, _)| n).collect();
    assert_eq!(services, vec![web_green.clone()]);
    let labels = labels_of(&web_green);
    let Value::Object(map) = &labels else {
        panic!("labels are an object: {labels}")
    };
    let old: Vec<&String> = map
        .keys()
        .filter(|k| k.starts_with("io.cutover."))
        .collect();
    assert!(old.is_empty(), "old names left: {old:?} in {labels}");
    assert_eq!(labels["dev.cutover.role"], "stable", "{labels}");
    assert_eq!(labels["dev.cutover.release"], name, "{labels}");
    assert_eq!(labels["dev.cutover.revision"], "5", "{labels}");
    assert!(labels["dev.cutover.state"].is_string(), "{labels}");
    assert_eq!(labels[TEST_LABEL], swarm.prefix.as_str(), "{labels}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_release_labelled_by_an_older_version_is_taken_over_and_relabelled() {
    let Some(swarm) = tokio::task::spawn_blocking(|| start("upgrade_old_labels"))
        .await
        .expect("set-up")
    else {
        return;
    };
    let swarm = std::sync::Arc::new(swarm);
    let set_up = swarm.clone();
    tokio::task::spawn_blocking(move || label_the_old_way(&set_up))
        .await
        .expect("old labels");
    let check = swarm.clone();
    let outcome = tokio::spawn(async move { upgrade(&check).await }).await;
    let cleanup = swarm.clone();
    tokio::task::spawn_blocking(move || cleanup.remove_all())
        .await
        .expect("cleanup");
    if let Err(e) = outcome {
        if e.is_panic() {
            std::panic::resume_unwind(e.into_panic());
        }
        panic!("the check was cancelled: {e}");
    }
}
