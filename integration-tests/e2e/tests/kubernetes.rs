//! End to end on Kubernetes, as far as this machine can go: `cutover serve --backend
//! kubernetes` talks through the real `kube` client to the test-only fake API server
//! (`integration-tests/fake-kube-apiserver`), whose simulated kubelet runs `cutover
//! demo-app` processes as pods and publishes their addresses in EndpointSlices. Load goes
//! through cutover's embedded proxy. No real cluster is involved: see docs/kubernetes.md
//! for what that leaves unconfirmed.

use std::time::{Duration, Instant};

use cutover_test_kit::kube::{KubeTest, NAMESPACE, release};
use cutover_test_kit::{Load, Serve, canary, history, sample};
use serde_json::{Value, json};

/// Submits `file`, and starts 50 requests/s through the proxy once the release is routed
/// (load started before would meet no route).
fn submit_under_load(serve: &Serve, file: &std::path::Path) -> Load {
    let submitted = serve.run(file, false);
    assert_eq!(submitted.status.code(), Some(0), "{submitted:?}");
    load_once_routed(serve)
}

/// 50 requests/s through the proxy, once release `web` is routed.
fn load_once_routed(serve: &Serve) -> Load {
    serve.wait_routed("web");
    std::thread::sleep(Duration::from_millis(300));
    Load::start(serve.proxy(), 50)
}

fn report(output: &std::process::Output) -> Value {
    serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
        panic!(
            "not JSON ({e}): {}\nstderr: {}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        )
    })
}

/// The release's record on its anchor Deployment.
fn slots(test: &KubeTest) -> Value {
    let web = test.deployment("web").expect("web");
    let text = web["metadata"]["annotations"]["cutover.dev/slots"]
        .as_str()
        .expect("a slots annotation")
        .to_string();
    serde_json::from_str(&text).expect("slots JSON")
}

/// The step numbers in the history, in order.
fn steps(serve: &Serve, name: &str) -> Vec<u32> {
    history(serve, name)
        .iter()
        .filter(|l| l.starts_with("step "))
        .filter_map(|l| l["step ".len()..].split(':').next()?.parse().ok())
        .collect()
}

#[test]
fn a_canary_is_promoted_under_load_by_server_side_apply_and_the_old_deployment_scaled_down() {
    let test = KubeTest::start("k8s-promote");
    let web_before = test.web(2, json!({}));
    let serve = test.controller("k8s-promote", &[]);
    let file = serve.release_file("web", &release("web", "demo:v2", &canary(0.1)));
    let load = submit_under_load(&serve, &file);
    let status = serve.wait_done("web", Duration::from_secs(90));
    std::thread::sleep(Duration::from_secs(1));
    let counts = load.finish();
    assert_eq!(status["outcome"], "promoted", "{status}");
    assert_eq!(counts.failures_except(&[]), 0, "{counts:?}");
    assert!(counts.answered("v2") > 20, "{counts:?}");
    assert_eq!(sample(serve.proxy(), 30).answered("v2"), 30);
    assert_eq!(steps(&serve, "web"), vec![0, 1, 2, 3]);

    // The record says web-green serves; web, the anchor, is scaled to zero and kept.
    let record = slots(&test);
    assert_eq!(record["stable"]["deployment"], "web-green", "{record}");
    assert_eq!(record["stable"]["version"], "v2", "{record}");
    assert!(record.get("candidate").is_none() && record.get("previous").is_none());
    test.wait_deployment("web", Duration::from_secs(20), |d| {
        d["spec"]["replicas"] == 0 && d["status"]["replicas"].as_u64().unwrap_or(0) == 0
    });
    assert_eq!(test.pods(&[("app", "web")]).len(), 0);
    // Adoption only labelled web: its pod template is untouched.
    let web_after = test.deployment("web").expect("web");
    assert_eq!(
        web_after["spec"]["template"],
        web_before["spec"]["template"]
    );

    // The candidate is the stable template with the new image, selected apart.
    let green = test.deployment("web-green").expect("web-green");
    let container = &green["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(container["image"], "demo:v2");
    assert_eq!(
        container["readinessProbe"],
        web_before["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]
    );
    assert_eq!(
        container["env"],
        json!([{ "name": "MODE", "value": "test" }])
    );
    assert_eq!(
        green["spec"]["selector"]["matchLabels"],
        json!({
            "cutover.dev/controller": "k8s-promote",
            "cutover.dev/release": "web",
            "cutover.dev/colour": "green",
        })
    );
    let green_pods = test.pods(&[("cutover.dev/colour", "green")]);
    assert_eq!(green_pods.len(), 2);
    for pod in &green_pods {
        assert!(pod["metadata"]["labels"].get("app").is_none(), "{pod}");
        assert_eq!(pod["metadata"]["labels"]["tier"], "front");
    }
    // ... written by server-side apply under cutover's field manager.
    let applied = test.api.requests().into_iter().any(|r| {
        r.method == "PATCH"
            && r.path.ends_with("/deployments/web-green")
            && r.content_type.as_deref() == Some("application/apply-patch+yaml")
            && r.field_manager.as_deref() == Some("cutover")
    });
    assert!(
        applied,
        "web-green was not server-side applied by 'cutover'"
    );
    assert_eq!(test.deployments(), vec!["web", "web-green"]);
}

#[test]
fn a_canary_answering_20_percent_5xx_is_rolled_back_by_the_analysis() {
    let test = KubeTest::start("k8s-rollback");
    test.web(2, json!({}));
    let serve = test.controller("k8s-rollback", &[]);
    let file = serve.release_file("web", &release("web", "demo:v3", &canary(0.05)));
    let mut waiting = serve.cli_background(&[
        "run",
        file.to_str().expect("path"),
        "--wait",
        "--output",
        "json",
    ]);
    let load = load_once_routed(&serve);
    let started = Instant::now();
    while waiting.try_wait().expect("wait").is_none() {
        assert!(
            started.elapsed() < Duration::from_secs(90),
            "run --wait never returned"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let output = waiting.wait_with_output().expect("output");
    let counts = load.finish();
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    let report = report(&output);
    assert_eq!(report["outcome"], "rolledBack", "{report}");
    assert!(
        report["reason"]
            .as_str()
            .is_some_and(|r| r.contains("error-rate")),
        "{report}"
    );
    assert_eq!(counts.failures_except(&["v3"]), 0, "{counts:?}");
    // The candidate is gone, web still runs v1 and takes everything.
    test.wait_deployments(&["web"]);
    assert!(test.pods(&[("cutover.dev/colour", "green")]).is_empty());
    assert_eq!(sample(serve.proxy(), 30).answered("v1"), 30);
    let record = slots(&test);
    assert_eq!(record["stable"]["deployment"], "web", "{record}");
    assert!(record.get("candidate").is_none(), "{record}");
    assert_eq!(test.deployment("web").expect("web")["spec"]["replicas"], 2);
}

#[test]
fn blue_green_switches_under_load_without_a_failed_request() {
    let test = KubeTest::start("k8s-bluegreen");
    test.web(2, json!({}));
    let serve = test.controller("k8s-bluegreen", &[]);
    let file = serve.release_file(
        "web",
        &release(
            "web",
            "demo:v2",
            "  strategy:\n    blueGreen:\n      autoPromotionSeconds: 3\n      scaleDownDelay: 2s\n",
        ),
    );
    let load = submit_under_load(&serve, &file);
    let status = serve.wait_done("web", Duration::from_secs(90));
    // Through the scale-down of the old pods too.
    test.wait_deployment("web", Duration::from_secs(20), |d| {
        d["status"]["replicas"].as_u64().unwrap_or(0) == 0
    });
    std::thread::sleep(Duration::from_millis(500));
    let counts = load.finish();
    assert_eq!(status["outcome"], "promoted", "{status}");
    assert_eq!(counts.failures_except(&[]), 0, "{counts:?}");
    assert!(
        counts.answered("v1") > 0 && counts.answered("v2") > 0,
        "{counts:?}"
    );
    assert_eq!(sample(serve.proxy(), 30).answered("v2"), 30);

    // A second release goes back to the other colour, and retires the first one's.
    let file = serve.release_file(
        "web",
        &release(
            "web",
            "demo:v4",
            "  strategy:\n    blueGreen:\n      scaleDownDelay: 1s\n",
        ),
    );
    let output = serve.run(&file, true);
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    assert_eq!(slots(&test)["stable"]["deployment"], "web-blue");
    test.wait_deployments(&["web", "web-blue"]);
    assert_eq!(sample(serve.proxy(), 30).answered("v4"), 30);
}

/// Runs a release of `web` to `image` that fails (`run --wait` exits 1, rolled back), and
/// checks that the candidate is gone; returns the report and how long `run` took.
fn failing_release(label: &str, image: &str, strategy: &str) -> (Value, Duration) {
    let test = KubeTest::start(label);
    test.web(1, json!({}));
    let serve = test.controller(label, &[]);
    let file = serve.release_file("web", &release("web", image, strategy));
    let started = Instant::now();
    let output = serve.run(&file, true);
    let took = started.elapsed();
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    let report = report(&output);
    assert_eq!(report["outcome"], "rolledBack", "{report}");
    test.wait_deployments(&["web"]);
    // No process of the candidate is left behind.
    assert!(test.pods(&[("cutover.dev/colour", "green")]).is_empty());
    (report, took)
}

#[test]
fn a_candidate_that_never_becomes_ready_fails_at_the_deadline() {
    let (report, took) = failing_release(
        "k8s-deadline",
        "demo:stuck",
        "  strategy:\n    progressDeadline: 6s\n    canary:\n      steps:\n        - setWeight: 50\n",
    );
    let reason = report["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("deadline"), "{report}");
    assert!(took >= Duration::from_secs(6), "took {took:?}");
}

#[test]
fn a_pod_that_cannot_pull_its_image_fails_the_rollout_with_the_kubelet_reason() {
    let (report, took) = failing_release(
        "k8s-pull",
        "demo:no-such-version",
        "  strategy:\n    canary:\n      steps:\n        - setWeight: 50\n",
    );
    let reason = report["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("ImagePullBackOff") && reason.contains("demo:no-such-version"),
        "{report}"
    );
    // Not the ten-minute progress deadline: the kubelet's reason ends it.
    assert!(took < Duration::from_secs(60), "took {took:?}");
}

#[test]
fn of_two_controllers_one_leads_and_the_other_takes_over_and_completes_the_rollout_once() {
    let test = KubeTest::start("k8s-leader");
    test.web(1, json!({}));
    let flags = [
        "--backend",
        "kubernetes",
        "--namespace",
        NAMESPACE,
        "--name",
        "pair",
        "--lease-duration",
        "3s",
    ];
    let env = test.env();
    let a = Serve::start_with("127.0.0.1", "k8s-leader-a", &flags, &env, false);
    let b = Serve::start_with("127.0.0.1", "k8s-leader-b", &flags, &env, false);
    let started = Instant::now();
    let (mut leader, standby) = loop {
        if a.answers_within(Duration::from_millis(100)) {
            break (a, b);
        }
        if b.answers_within(Duration::from_millis(100)) {
            break (b, a);
        }
        assert!(started.elapsed() < Duration::from_secs(20), "nobody leads");
    };
    // The other stands by for longer than a Lease lasts: one leader, not two.
    assert!(!standby.answers_within(Duration::from_secs(4)));
    let lease = test
        .api
        .get("leases", NAMESPACE, "pair-leader")
        .expect("the Lease");
    let first_holder = lease["spec"]["holderIdentity"]
        .as_str()
        .expect("a holder")
        .to_string();

    let file = leader.release_file(
        "web",
        &release(
            "web",
            "demo:v2",
            "  strategy:\n    canary:\n      scaleDownDelay: 1s\n      steps:\n        - setWeight: 20\n        - pause: {duration: 4s}\n        - setWeight: 60\n        - pause: {duration: 4s}\n",
        ),
    );
    let submitted = leader.run(&file, false);
    assert_eq!(submitted.status.code(), Some(0), "{submitted:?}");
    leader.wait_for("web", Duration::from_secs(60), |s| s["weight"] == 20);
    let green_uid = test.deployment("web-green").expect("web-green")["metadata"]["uid"].clone();

    leader.kill();
    let killed = Instant::now();
    assert!(
        standby.answers_within(Duration::from_secs(15)),
        "the standby did not take over; its log:\n{}",
        standby.log()
    );
    let took_over = killed.elapsed();
    // A Lease of 3 s, looked at every second: well within twice that.
    assert!(
        took_over < Duration::from_secs(6),
        "took over after {took_over:?}"
    );
    let status = standby.wait_done("web", Duration::from_secs(60));
    assert_eq!(status["outcome"], "promoted", "{status}");
    assert_eq!(steps(&standby, "web"), vec![0, 1, 2, 3], "each step once");
    // The candidate the first leader made was adopted, not made again.
    assert_eq!(
        test.deployment("web-green").expect("web-green")["metadata"]["uid"],
        green_uid
    );
    let lease = test
        .api
        .get("leases", NAMESPACE, "pair-leader")
        .expect("the Lease");
    assert_ne!(
        lease["spec"]["holderIdentity"].as_str(),
        Some(first_holder.as_str())
    );
    assert!(
        lease["spec"]["leaseTransitions"].as_u64() >= Some(1),
        "{lease}"
    );
    drop(leader);
}

#[test]
fn a_release_applied_as_an_object_rolls_out_and_reports_its_status() {
    let test = KubeTest::start("k8s-object");
    test.web(1, json!({}));
    let serve = test.controller("k8s-object", &[]);
    let spec = |image: &str| {
        json!({
            "backend": { "kubernetes": { "namespace": NAMESPACE, "deployment": "web" } },
            "image": image,
            "port": 8080,
            "strategy": { "canary": { "scaleDownDelay": "1s", "steps": [{ "setWeight": 50 }] } },
        })
    };
    let release_object = || {
        json!({
            "apiVersion": "cutover.dev/v1",
            "kind": "Release",
            "metadata": { "name": "web", "namespace": NAMESPACE },
            "spec": spec("demo:v2"),
        })
    };
    test.api.create(release_object()).expect("created");
    let object = test.wait_release_object("web", Duration::from_secs(60), |o| {
        o["status"]["outcome"] == "promoted" && o["status"]["observedGeneration"] == 1
    });
    assert_eq!(object["status"]["candidateVersion"], "v2", "{object}");
    assert_eq!(serve.status("web").expect("status")["outcome"], "promoted");
    assert_eq!(sample(serve.proxy(), 20).answered("v2"), 20);

    // A new generation is a new rollout.
    let path = format!("/apis/cutover.dev/v1/namespaces/{NAMESPACE}/releases/web");
    assert_eq!(
        test.merge_patch(&path, &json!({ "spec": { "image": "demo:v4" } })),
        200
    );
    let object = test.wait_release_object("web", Duration::from_secs(60), |o| {
        o["status"]["observedGeneration"] == 2 && o["status"]["outcome"] == "promoted"
    });
    assert_eq!(object["status"]["candidateVersion"], "v4", "{object}");
    // The version that served before this rollout, not the one promoted by it.
    assert_eq!(object["status"]["stableVersion"], "v2", "{object}");
    assert_eq!(slots(&test)["stable"]["deployment"], "web-blue");
    assert_eq!(sample(serve.proxy(), 20).answered("v4"), 20);

    // An invalid one is reported on the object, with the field and the fix, and changes
    // nothing.
    assert_eq!(
        test.merge_patch(
            &path,
            &json!({ "spec": { "strategy": { "canary": { "steps": [{ "setWieght": 20 }] } } } })
        ),
        200
    );
    let object = test.wait_release_object("web", Duration::from_secs(20), |o| {
        o["status"]["observedGeneration"] == 3
    });
    assert_eq!(object["status"]["phase"], "invalid", "{object}");
    let message = object["status"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("setWieght") && message.contains("setWeight"),
        "{message}"
    );
    // And stays reported.
    std::thread::sleep(Duration::from_secs(3));
    let object = test
        .api
        .get("releases", NAMESPACE, "web")
        .expect("the object");
    assert_eq!(object["status"]["phase"], "invalid", "{object}");
    assert_eq!(slots(&test)["stable"]["deployment"], "web-blue");
    let status = serve.status("web").expect("status");
    assert_eq!(
        (&status["candidate"]["version"], &status["outcome"]),
        (&json!("v4"), &json!("promoted")),
        "{status}"
    );

    // Deleted and applied again, it is a new object: its generation 1 is rolled out.
    test.api
        .delete("releases", NAMESPACE, "web")
        .expect("deleted");
    test.api.create(release_object()).expect("created again");
    let object = test.wait_release_object("web", Duration::from_secs(60), |o| {
        o["status"]["observedGeneration"] == 1 && o["status"]["outcome"] == "promoted"
    });
    assert_eq!(object["status"]["candidateVersion"], "v2", "{object}");
    assert_eq!(slots(&test)["stable"]["deployment"], "web-green");
}

#[test]
fn a_leader_whose_lease_is_taken_stops_at_once() {
    let test = KubeTest::start("k8s-lease-lost");
    test.web(1, json!({}));
    let mut serve = test.controller("k8s-lease-lost", &["--lease-duration", "3s"]);
    // Another holder writes itself into the Lease (say, after a network partition
    // outlasted it).
    let path =
        format!("/apis/coordination.k8s.io/v1/namespaces/{NAMESPACE}/leases/k8s-lease-lost-leader");
    assert_eq!(
        test.merge_patch(
            &path,
            &json!({ "spec": { "holderIdentity": "another-replica" } })
        ),
        200
    );
    let started = Instant::now();
    let status = loop {
        if let Some(status) = serve.exited() {
            break status;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "still running; its log:\n{}",
            serve.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(status.code(), Some(4), "{status:?}");
    assert!(serve.log().contains("lost the Lease"), "{}", serve.log());
}
