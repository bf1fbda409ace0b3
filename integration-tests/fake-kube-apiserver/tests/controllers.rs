//! The simulated control plane: Deployments run real processes, scale, roll, fail to pull,
//! crash-loop and time out; Services get EndpointSlices; everything is cleaned up.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::*;
use serde_json::{Value, json};

const T: Duration = Duration::from_secs(20);

fn available(server: &fake_kube_apiserver::FakeApiServer, name: &str, replicas: u64) -> Value {
    wait_for(&format!("{name} to have {replicas} available"), T, || {
        let d = server.get("deployments", "default", name)?;
        let status = &d["status"];
        let ready = status["availableReplicas"].as_u64().unwrap_or(0) == replicas
            && status["replicas"].as_u64().unwrap_or(0) == replicas
            && status["updatedReplicas"].as_u64().unwrap_or(0) == replicas
            && status["observedGeneration"] == d["metadata"]["generation"];
        ready.then_some(d)
    })
}

fn pods_of(server: &fake_kube_apiserver::FakeApiServer, app: &str) -> Vec<Value> {
    server
        .list("pods", "default")
        .into_iter()
        .filter(|p| p["metadata"]["labels"]["app"] == app)
        .collect()
}

#[test]
fn a_deployment_becomes_available_with_conditions_and_pod_details() {
    let server = start();
    server.create(deployment("web", DEMO, 2)).unwrap();
    let d = available(&server, "web", 2);
    let available_condition = condition(&d, "Available").unwrap();
    assert_eq!(available_condition["reason"], "MinimumReplicasAvailable");
    let progressing = condition(&d, "Progressing").unwrap();
    assert_eq!(
        (
            progressing["status"].as_str(),
            progressing["reason"].as_str()
        ),
        (Some("True"), Some("NewReplicaSetAvailable"))
    );
    let pods = pods_of(&server, "web");
    assert_eq!(pods.len(), 2);
    for pod in &pods {
        let name = pod["metadata"]["name"].as_str().unwrap();
        let hash = pod["metadata"]["labels"]["pod-template-hash"]
            .as_str()
            .unwrap();
        assert!(name.starts_with(&format!("web-{hash}-")), "{name}");
        assert_eq!(pod["metadata"]["ownerReferences"][0]["kind"], "Deployment");
        assert_eq!(pod["status"]["phase"], "Running");
        let ip = pod["status"]["podIP"].as_str().unwrap();
        assert!(ip.starts_with("127."));
        assert_eq!(pod["status"]["podIPs"][0]["ip"], ip);
        assert_eq!(condition(pod, "Ready").unwrap()["status"], "True");
        let container = &pod["status"]["containerStatuses"][0];
        assert_eq!(
            (
                container["ready"].as_bool(),
                container["restartCount"].as_u64()
            ),
            (Some(true), Some(0))
        );
        assert!(container["state"]["running"]["startedAt"].is_string());
        assert!(
            server
                .pod_log("default", name)
                .unwrap()
                .contains("listening on")
        );
    }
}

#[test]
fn scaling_to_zero_kills_the_processes() {
    let server = start();
    server.create(deployment("web", DEMO, 1)).unwrap();
    available(&server, "web", 1);
    let ip = pods_of(&server, "web")[0]["status"]["podIP"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(listening(&ip, 8080));
    let mut d = server.get("deployments", "default", "web").unwrap();
    d["spec"]["replicas"] = json!(0);
    put(
        &server,
        "/apis/apps/v1/namespaces/default/deployments/web",
        &d,
    );
    wait_for("the pod to go", T, || {
        pods_of(&server, "web").is_empty().then_some(())
    });
    wait_for("the process to die", T, || {
        (!listening(&ip, 8080) && server.processes().is_empty()).then_some(())
    });
    let d = wait_for("status to follow", T, || {
        let d = server.get("deployments", "default", "web")?;
        d["status"].get("replicas").is_none().then_some(d)
    });
    assert_eq!(condition(&d, "Available").unwrap()["status"], "True");
}

#[test]
fn deleting_a_deployment_collects_its_pods_and_kills_processes() {
    let server = start();
    server.create(deployment("web", DEMO, 2)).unwrap();
    available(&server, "web", 2);
    let ips: Vec<String> = pods_of(&server, "web")
        .iter()
        .map(|p| p["status"]["podIP"].as_str().unwrap().to_string())
        .collect();
    let reply = delete(
        &server,
        "/apis/apps/v1/namespaces/default/deployments/web?propagationPolicy=Background",
    );
    assert_eq!(reply.code, 200);
    assert_eq!(reply.body["metadata"]["name"], "web");
    assert!(
        pods_of(&server, "web").is_empty(),
        "pods are collected with their owner"
    );
    wait_for("the processes to die", T, || {
        (server.processes().is_empty() && ips.iter().all(|ip| !listening(ip, 8080))).then_some(())
    });
}

#[test]
fn a_new_template_rolls_pods_over_without_losing_readiness() {
    let server = start();
    server.create(deployment("web", DEMO, 2)).unwrap();
    available(&server, "web", 2);
    let old_hash = pods_of(&server, "web")[0]["metadata"]["labels"]["pod-template-hash"].clone();
    let reply = patch(
        &server,
        "/apis/apps/v1/namespaces/default/deployments/web",
        "application/strategic-merge-patch+json",
        &json!({"spec": {"template": {"spec": {"containers": [{"name": "app", "image": DEMO_V2}]}}}}),
    );
    assert_eq!(reply.body["metadata"]["generation"], 2);
    wait_for("the rollout", T, || {
        let pods = pods_of(&server, "web");
        let d = server.get("deployments", "default", "web")?;
        let ready = pods
            .iter()
            .filter(|p| condition(p, "Ready").is_some_and(|c| c["status"] == "True"))
            .count();
        let in_flight = pods.len() > 2
            || pods
                .iter()
                .any(|p| p["metadata"]["labels"]["pod-template-hash"] == old_hash);
        if in_flight {
            assert!(
                ready >= 2,
                "never fewer ready pods than replicas during the rollout"
            );
        }
        let done = !in_flight
            && d["status"]["updatedReplicas"] == 2
            && d["status"]["availableReplicas"] == 2;
        done.then_some(())
    });
    for pod in pods_of(&server, "web") {
        let ip = pod["status"]["podIP"].as_str().unwrap();
        let body = http_text(ip, 8080, "/");
        assert!(body.contains("demo-app v2"), "{body}");
    }
}

fn http_text(ip: &str, port: u16, path: &str) -> String {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect((ip, port)).unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {ip}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut text = String::new();
    stream.read_to_string(&mut text).unwrap();
    text
}

#[test]
fn an_unknown_image_fails_to_pull_and_backs_off() {
    let mut config = config();
    config.crash_backoff = Duration::from_secs(2);
    let server = fake_kube_apiserver::FakeApiServer::start(config).unwrap();
    server
        .create(deployment("web", "registry.example/nope:1", 1))
        .unwrap();
    let waiting_reason = |server: &fake_kube_apiserver::FakeApiServer| {
        let pod = pods_of(server, "web").pop()?;
        Some(pod["status"]["containerStatuses"][0]["state"]["waiting"].clone())
    };
    let first = wait_for("ErrImagePull", T, || {
        waiting_reason(&server).filter(|w| w["reason"] == "ErrImagePull")
    });
    assert!(
        first["message"]
            .as_str()
            .unwrap()
            .contains("registry.example/nope:1")
    );
    let then = wait_for("ImagePullBackOff", T, || {
        waiting_reason(&server).filter(|w| w["reason"] == "ImagePullBackOff")
    });
    assert_eq!(
        then["message"],
        "Back-off pulling image \"registry.example/nope:1\""
    );
    let pod = pods_of(&server, "web").pop().unwrap();
    assert_eq!(condition(&pod, "Ready").unwrap()["status"], "False");
    assert_eq!(pod["status"]["phase"], "Pending");
    assert!(server.processes().is_empty());
}

#[test]
fn a_crashing_process_loops_with_back_off_and_restart_counts() {
    let server = start();
    server.create(deployment("web", CRASH, 1)).unwrap();
    let status = wait_for("two restarts", T, || {
        let pod = pods_of(&server, "web").pop()?;
        let status = pod["status"]["containerStatuses"][0].clone();
        (status["restartCount"].as_u64()? >= 2
            && status["state"]["waiting"]["reason"] == "CrashLoopBackOff")
            .then_some(status)
    });
    let message = status["state"]["waiting"]["message"].as_str().unwrap();
    assert!(
        message.starts_with("back-off ")
            && message.contains("restarting failed container=app pod=web-"),
        "{message}"
    );
    assert_eq!(status["lastState"]["terminated"]["exitCode"], 3);
    assert_eq!(status["lastState"]["terminated"]["reason"], "Error");
    assert_eq!(status["ready"], false);
    let pod = pods_of(&server, "web").pop().unwrap();
    let name = pod["metadata"]["name"].as_str().unwrap();
    assert!(server.pod_log("default", name).unwrap().contains("dying"));
}

#[test]
fn a_rollout_that_never_gets_ready_exceeds_its_progress_deadline() {
    let server = start();
    let mut d = deployment("web", "registry.example/nope:1", 1);
    d["spec"]["progressDeadlineSeconds"] = json!(1);
    server.create(d).unwrap();
    let d = wait_for("ProgressDeadlineExceeded", T, || {
        let d = server.get("deployments", "default", "web")?;
        (condition(&d, "Progressing")?["reason"] == "ProgressDeadlineExceeded").then_some(d)
    });
    let progressing = condition(&d, "Progressing").unwrap();
    assert_eq!(progressing["status"], "False");
    let hash = pods_of(&server, "web")[0]["metadata"]["labels"]["pod-template-hash"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(
        progressing["message"],
        format!("ReplicaSet \"web-{hash}\" has timed out progressing.")
    );
    assert_eq!(
        condition(&d, "Available").unwrap()["reason"],
        "MinimumReplicasUnavailable"
    );
}

#[test]
fn services_get_endpoint_slices_that_follow_pod_readiness() {
    let server = start();
    server
        .create(json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "web", "labels": {"team": "edge"}},
            "spec": {"selector": {"app": "web"}, "ports": [{"name": "http", "port": 80, "targetPort": "http"}]},
        }))
        .unwrap();
    let service = server.get("services", "default", "web").unwrap();
    assert!(
        service["spec"]["clusterIP"]
            .as_str()
            .unwrap()
            .starts_with("10.96.")
    );
    let slice = wait_for("an empty slice", T, || {
        server.list("endpointslices", "default").pop()
    });
    let name = slice["metadata"]["name"].as_str().unwrap();
    assert!(name.starts_with("web-") && name.len() == 9, "{name}");
    assert_eq!(slice["metadata"]["labels"]["team"], "edge");
    assert_eq!(
        slice["metadata"]["labels"]["kubernetes.io/service-name"],
        "web"
    );
    assert_eq!(
        slice["metadata"]["labels"]["endpointslice.kubernetes.io/managed-by"],
        "endpointslice-controller.k8s.io"
    );
    assert_eq!(slice["metadata"]["ownerReferences"][0]["kind"], "Service");
    assert_eq!(slice["addressType"], "IPv4");

    server.create(deployment("web", DEMO, 2)).unwrap();
    let slice = wait_for("two ready endpoints", T, || {
        let slice = server.list("endpointslices", "default").pop()?;
        let endpoints = slice["endpoints"].as_array()?;
        (endpoints.len() == 2 && endpoints.iter().all(|e| e["conditions"]["ready"] == true))
            .then_some(slice)
    });
    assert_eq!(
        slice["ports"],
        json!([{"name": "http", "protocol": "TCP", "port": 8080}])
    );
    let endpoint = &slice["endpoints"][0];
    assert_eq!(endpoint["targetRef"]["kind"], "Pod");
    assert_eq!(endpoint["nodeName"], "fake-node");
    let ip = endpoint["addresses"][0].as_str().unwrap();
    assert!(http_text(ip, 8080, "/healthz").contains("200 OK"));

    delete(&server, "/api/v1/namespaces/default/services/web");
    assert!(
        server.list("endpointslices", "default").is_empty(),
        "slices go with their Service"
    );
}

#[test]
fn dropping_the_server_kills_every_pod_process() {
    let server = start();
    server.create(deployment("web", DEMO, 1)).unwrap();
    available(&server, "web", 1);
    let ip = pods_of(&server, "web")[0]["status"]["podIP"]
        .as_str()
        .unwrap()
        .to_string();
    drop(server);
    wait_for("the process to die", T, || {
        (!listening(&ip, 8080)).then_some(())
    });
}

#[test]
fn processes_keep_running_while_the_api_server_is_stopped() {
    let server = start();
    server.create(deployment("web", DEMO, 1)).unwrap();
    available(&server, "web", 1);
    let ip = pods_of(&server, "web")[0]["status"]["podIP"]
        .as_str()
        .unwrap()
        .to_string();
    server.stop();
    assert!(listening(&ip, 8080));
    server.restart();
    assert_eq!(
        get(&server, "/apis/apps/v1/namespaces/default/deployments/web").code,
        200
    );
}
