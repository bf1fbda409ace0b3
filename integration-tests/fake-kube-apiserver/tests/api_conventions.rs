//! The API conventions a controller relies on, through raw HTTP: resourceVersions,
//! optimistic concurrency, error Statuses, selectors, list-then-watch and 410 Gone.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use common::*;
use fake_kube_apiserver::{Config, FakeApiServer};
use serde_json::{Value, json};

const DEPLOYMENTS: &str = "/apis/apps/v1/namespaces/default/deployments";
const CONFIGMAPS: &str = "/api/v1/namespaces/default/configmaps";

fn configmap(name: &str, labels: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "labels": labels}, "data": {"k": "v"}})
}

fn quiet_server() -> FakeApiServer {
    FakeApiServer::start(Config::default()).unwrap()
}

#[test]
fn resource_version_increases_on_every_write_and_not_on_a_no_op() {
    let server = quiet_server();
    let created = post(&server, CONFIGMAPS, &configmap("a", json!({})));
    assert_eq!(created.code, 201);
    let mut last = rv(&created.body);
    let path = format!("{CONFIGMAPS}/a");
    for value in ["1", "2", "3"] {
        let reply = patch(
            &server,
            &path,
            "application/merge-patch+json",
            &json!({"data": {"k": value}}),
        );
        assert_eq!(reply.code, 200);
        assert!(rv(&reply.body) > last);
        last = rv(&reply.body);
    }
    let same = patch(
        &server,
        &path,
        "application/merge-patch+json",
        &json!({"data": {"k": "3"}}),
    );
    assert_eq!(
        rv(&same.body),
        last,
        "a write that changes nothing keeps the resourceVersion"
    );
    let other = post(&server, CONFIGMAPS, &configmap("b", json!({})));
    assert!(rv(&other.body) > last, "one counter for every object");
    let list = get(&server, CONFIGMAPS);
    assert_eq!(list.body["kind"], "ConfigMapList");
    assert_eq!(
        list.body["metadata"]["resourceVersion"].as_str().unwrap(),
        rv(&other.body).to_string()
    );
}

#[test]
fn stale_writes_conflict_with_the_real_message() {
    let server = quiet_server();
    let created = post(&server, DEPLOYMENTS, &deployment("web", "missing:image", 1)).body;
    let path = format!("{DEPLOYMENTS}/web");
    let mut changed = created.clone();
    changed["spec"]["replicas"] = json!(2);
    let first = put(&server, &path, &changed);
    assert_eq!(first.code, 200);
    assert_eq!(first.body["metadata"]["generation"], 2);
    let stale = put(&server, &path, &changed);
    assert_eq!(stale.code, 409);
    assert_eq!(stale.body["kind"], "Status");
    assert_eq!(stale.body["reason"], "Conflict");
    assert_eq!(
        stale.body["message"],
        "Operation cannot be fulfilled on deployments.apps \"web\": the object has been modified; please apply your changes to the latest version and try again"
    );
    assert_eq!(
        stale.body["details"],
        json!({"name": "web", "group": "apps", "kind": "deployments"})
    );
    let stale_patch = patch(
        &server,
        &path,
        "application/merge-patch+json",
        &json!({"metadata": {"resourceVersion": created["metadata"]["resourceVersion"]}, "spec": {"replicas": 4}}),
    );
    assert_eq!(stale_patch.code, 409);
    let fresh_patch = patch(
        &server,
        &path,
        "application/merge-patch+json",
        &json!({"metadata": {"resourceVersion": first.body["metadata"]["resourceVersion"]}, "spec": {"replicas": 4}}),
    );
    assert_eq!(fresh_patch.code, 200);
    assert_eq!(
        put(
            &server,
            &format!("{DEPLOYMENTS}/absent"),
            &deployment("absent", "x", 1)
        )
        .code,
        404
    );
}

#[test]
fn errors_are_statuses_with_the_right_code_and_reason() {
    let server = quiet_server();
    let check = |reply: Reply, code: u16, reason: &str| {
        assert_eq!(reply.code, code, "{:?}", reply.body);
        assert_eq!(reply.body["kind"], "Status");
        assert_eq!(reply.body["status"], "Failure");
        assert_eq!(reply.body["code"], code);
        assert_eq!(reply.body["reason"], reason, "{:?}", reply.body);
    };
    assert_eq!(
        post(&server, CONFIGMAPS, &configmap("a", json!({}))).code,
        201
    );
    check(
        post(&server, CONFIGMAPS, &configmap("a", json!({}))),
        409,
        "AlreadyExists",
    );
    check(get(&server, &format!("{CONFIGMAPS}/nope")), 404, "NotFound");
    check(
        post(&server, CONFIGMAPS, &configmap("Bad_Name", json!({}))),
        422,
        "Invalid",
    );
    let mut mismatched = deployment("web", "x", 1);
    mismatched["spec"]["template"]["metadata"]["labels"] = json!({"app": "other"});
    let invalid = post(&server, DEPLOYMENTS, &mismatched);
    assert!(
        invalid.body["message"]
            .as_str()
            .unwrap()
            .contains("`selector` does not match template `labels`")
    );
    check(invalid, 422, "Invalid");
    assert_eq!(
        post(&server, DEPLOYMENTS, &deployment("web", "x", 1)).code,
        201
    );
    let reselect = patch(
        &server,
        &format!("{DEPLOYMENTS}/web"),
        "application/merge-patch+json",
        &json!({"spec": {"selector": {"matchLabels": {"app": "web", "x": "y"}}, "template": {"metadata": {"labels": {"x": "y"}}}}}),
    );
    assert!(
        reselect.body["message"]
            .as_str()
            .unwrap()
            .contains("field is immutable")
    );
    check(reselect, 422, "Invalid");
    check(
        request(&server, "POST", CONFIGMAPS, Some("application/json"), None),
        400,
        "BadRequest",
    );
    check(
        patch(
            &server,
            &format!("{CONFIGMAPS}/a"),
            "text/plain",
            &json!({}),
        ),
        415,
        "UnsupportedMediaType",
    );
    check(
        patch(
            &server,
            &format!("{CONFIGMAPS}/a"),
            "application/apply-patch+yaml",
            &json!({}),
        ),
        400,
        "BadRequest",
    );
    let yaml = request(
        &server,
        "PATCH",
        &format!("{CONFIGMAPS}/a?fieldManager=m"),
        Some("application/apply-patch+yaml"),
        None,
    );
    assert!(yaml.code == 415 || yaml.code == 400);
    check(
        request(
            &server,
            "POST",
            &format!("{CONFIGMAPS}/a"),
            Some("application/json"),
            Some(&json!({})),
        ),
        405,
        "MethodNotAllowed",
    );
    check(
        get(&server, "/apis/apps/v1/namespaces/default/widgets"),
        404,
        "NotFound",
    );
}

#[test]
fn generate_name_and_status_subresource() {
    let server = quiet_server();
    let mut d = deployment("ignored", "missing:image", 0);
    d["metadata"] = json!({"generateName": "web-", "labels": {"app": "ignored"}});
    d["status"] = json!({"replicas": 99});
    let created = post(&server, DEPLOYMENTS, &d).body;
    let name = created["metadata"]["name"].as_str().unwrap().to_string();
    assert!(name.starts_with("web-") && name.len() == 9, "{name}");
    assert_ne!(created["status"]["replicas"], 99, "create ignores status");
    let path = format!("{DEPLOYMENTS}/{name}");
    let current = wait_for(
        "the controller to write status",
        Duration::from_secs(5),
        || {
            let d = get(&server, &path).body;
            d["status"]["observedGeneration"].is_number().then_some(d)
        },
    );
    // A status write changes only status and keeps the generation.
    let mut status_write = current.clone();
    status_write["spec"]["replicas"] = json!(7);
    status_write["status"]["collisionCount"] = json!(3);
    let written = put(&server, &format!("{path}/status"), &status_write).body;
    assert_eq!(written["status"]["collisionCount"], 3);
    assert_eq!(written["spec"]["replicas"], 0);
    assert_eq!(written["metadata"]["generation"], 1);
    let managers: Vec<&str> = written["metadata"]["managedFields"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["subresource"] == "status")
        .map(|m| m["manager"].as_str().unwrap())
        .collect();
    assert!(managers.contains(&"unknown"));
}

#[test]
fn label_and_field_selectors_filter_lists() {
    let server = quiet_server();
    for (name, labels) in [
        ("a", json!({"app": "web", "track": "stable"})),
        ("b", json!({"app": "web", "track": "canary"})),
        ("c", json!({"app": "api"})),
    ] {
        assert_eq!(
            post(&server, CONFIGMAPS, &configmap(name, labels)).code,
            201
        );
    }
    let names = |query: &str| -> Vec<String> {
        let reply = get(&server, &format!("{CONFIGMAPS}?{query}"));
        assert_eq!(reply.code, 200, "{query}: {:?}", reply.body);
        reply.body["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["metadata"]["name"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(names("labelSelector=app%3Dweb"), ["a", "b"]);
    assert_eq!(
        names("labelSelector=app%3D%3Dweb%2Ctrack%21%3Dcanary"),
        ["a"]
    );
    assert_eq!(
        names("labelSelector=track+in+%28stable%2Ccanary%29"),
        ["a", "b"]
    );
    assert_eq!(names("labelSelector=track+notin+%28canary%29"), ["a", "c"]);
    assert_eq!(names("labelSelector=track"), ["a", "b"]);
    assert_eq!(names("labelSelector=%21track"), ["c"]);
    assert_eq!(names("fieldSelector=metadata.name%3Db"), ["b"]);
    assert_eq!(
        names("fieldSelector=metadata.namespace%3Ddefault&labelSelector=app%3Dapi"),
        ["c"]
    );
    let all = get(&server, "/api/v1/configmaps").body;
    assert_eq!(all["items"].as_array().unwrap().len(), 3);
}

#[test]
fn a_watch_from_a_list_sees_every_later_change_once_in_order() {
    let server = quiet_server();
    post(&server, CONFIGMAPS, &configmap("before", json!({})));
    let list = get(&server, CONFIGMAPS).body;
    let from = list["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .to_string();
    // Changes between the list and the watch must not be lost.
    post(&server, CONFIGMAPS, &configmap("x", json!({})));
    patch(
        &server,
        &format!("{CONFIGMAPS}/x"),
        "application/merge-patch+json",
        &json!({"data": {"k": "2"}}),
    );
    let mut watch = RawWatch::open(
        &server,
        &format!("{CONFIGMAPS}?watch=true&resourceVersion={from}"),
    );
    delete(&server, &format!("{CONFIGMAPS}/x"));
    post(
        &server,
        "/api/v1/namespaces/other/configmaps",
        &configmap("elsewhere", json!({})),
    );
    post(&server, CONFIGMAPS, &configmap("y", json!({})));
    let mut seen = Vec::new();
    let mut last_rv = from.parse::<u64>().unwrap();
    while seen.len() < 4 {
        let event = watch.next_change().unwrap();
        let rv = rv(&event["object"]);
        assert!(rv > last_rv, "events come in resourceVersion order");
        last_rv = rv;
        seen.push(format!(
            "{} {}",
            event["type"].as_str().unwrap(),
            event["object"]["metadata"]["name"].as_str().unwrap()
        ));
    }
    assert_eq!(seen, ["ADDED x", "MODIFIED x", "DELETED x", "ADDED y"]);
}

#[test]
fn a_watch_without_resource_version_starts_with_the_current_state() {
    let server = quiet_server();
    post(&server, CONFIGMAPS, &configmap("a", json!({})));
    post(&server, CONFIGMAPS, &configmap("b", json!({})));
    let mut watch = RawWatch::open(&server, &format!("{CONFIGMAPS}?watch=1"));
    let first = watch.next().unwrap();
    let second = watch.next().unwrap();
    assert_eq!(
        (first["type"].as_str(), second["type"].as_str()),
        (Some("ADDED"), Some("ADDED"))
    );
    post(&server, CONFIGMAPS, &configmap("c", json!({})));
    assert_eq!(watch.next().unwrap()["object"]["metadata"]["name"], "c");
}

#[test]
fn objects_entering_and_leaving_a_selector_are_added_and_deleted() {
    let server = quiet_server();
    post(
        &server,
        CONFIGMAPS,
        &configmap("a", json!({"track": "stable"})),
    );
    let from = get(&server, CONFIGMAPS).body["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .to_string();
    let mut watch = RawWatch::open(
        &server,
        &format!("{CONFIGMAPS}?watch=true&labelSelector=track%3Dcanary&resourceVersion={from}"),
    );
    let path = format!("{CONFIGMAPS}/a");
    patch(
        &server,
        &path,
        "application/merge-patch+json",
        &json!({"metadata": {"labels": {"track": "canary"}}}),
    );
    patch(
        &server,
        &path,
        "application/merge-patch+json",
        &json!({"data": {"k": "2"}}),
    );
    patch(
        &server,
        &path,
        "application/merge-patch+json",
        &json!({"metadata": {"labels": {"track": "stable"}}}),
    );
    let kinds: Vec<String> = (0..3)
        .map(|_| {
            watch.next_change().unwrap()["type"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(kinds, ["ADDED", "MODIFIED", "DELETED"]);
}

#[test]
fn a_watch_from_a_compacted_resource_version_gets_410() {
    let server = FakeApiServer::start(Config {
        history: 3,
        ..Config::default()
    })
    .unwrap();
    post(&server, CONFIGMAPS, &configmap("a", json!({})));
    let old = server.resource_version();
    for i in 0..5 {
        patch(
            &server,
            &format!("{CONFIGMAPS}/a"),
            "application/merge-patch+json",
            &json!({"data": {"k": i.to_string()}}),
        );
    }
    let mut watch = RawWatch::open(
        &server,
        &format!("{CONFIGMAPS}?watch=true&resourceVersion={old}"),
    );
    let event = watch.next().unwrap();
    assert_eq!(event["type"], "ERROR");
    assert_eq!(event["object"]["code"], 410);
    assert_eq!(event["object"]["reason"], "Expired");
    assert!(
        event["object"]["message"]
            .as_str()
            .unwrap()
            .starts_with(&format!("too old resource version: {old} ("))
    );
    assert!(watch.next().is_none(), "the stream ends after the error");

    // expire_watches: open watches get the 410 and history is compacted.
    let now = server.resource_version();
    let mut open = RawWatch::open(
        &server,
        &format!("{CONFIGMAPS}?watch=true&resourceVersion={now}"),
    );
    server.expire_watches();
    let event = open.next().unwrap();
    assert_eq!(
        (event["type"].as_str(), event["object"]["code"].as_u64()),
        (Some("ERROR"), Some(410))
    );
    assert!(open.next().is_none());
    patch(
        &server,
        &format!("{CONFIGMAPS}/a"),
        "application/merge-patch+json",
        &json!({"data": {"k": "x"}}),
    );
    let mut resumed = RawWatch::open(
        &server,
        &format!("{CONFIGMAPS}?watch=true&resourceVersion={}", now - 1),
    );
    assert_eq!(resumed.next().unwrap()["object"]["code"], 410);
}

#[test]
fn watches_end_at_timeout_and_send_bookmarks() {
    let server = quiet_server();
    let started = Instant::now();
    let mut watch = RawWatch::open(
        &server,
        &format!("{CONFIGMAPS}?watch=true&timeoutSeconds=1"),
    );
    assert!(watch.next().is_none());
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(5),
        "{took:?}"
    );

    let now = server.resource_version();
    let mut watch = RawWatch::open(
        &server,
        &format!(
            "{CONFIGMAPS}?watch=true&allowWatchBookmarks=true&resourceVersion={now}&timeoutSeconds=6"
        ),
    );
    let bookmark = watch.next().unwrap();
    assert_eq!(bookmark["type"], "BOOKMARK");
    assert_eq!(
        bookmark["object"]["metadata"]["resourceVersion"],
        now.to_string()
    );
}

#[test]
fn strategic_merge_and_json_patches() {
    let server = quiet_server();
    let mut d = deployment("web", "missing:image", 0);
    d["spec"]["template"]["spec"]["containers"]
        .as_array_mut()
        .unwrap()
        .push(json!({"name": "sidecar", "image": "side:1"}));
    post(&server, DEPLOYMENTS, &d);
    let path = format!("{DEPLOYMENTS}/web");
    let patched = patch(
        &server,
        &path,
        "application/strategic-merge-patch+json",
        &json!({"spec": {"template": {"spec": {"containers": [{"name": "app", "image": "missing:image2"}]}}}}),
    )
    .body;
    let containers = patched["spec"]["template"]["spec"]["containers"]
        .as_array()
        .unwrap();
    assert_eq!(containers.len(), 2, "merged by name, not replaced");
    assert_eq!(containers[0]["image"], "missing:image2");
    assert_eq!(containers[0]["ports"][0]["containerPort"], 8080);
    let patched = patch(
        &server,
        &path,
        "application/json-patch+json",
        &json!([{"op": "replace", "path": "/spec/replicas", "value": 0}, {"op": "add", "path": "/metadata/annotations", "value": {"a": "b"}}]),
    )
    .body;
    assert_eq!(patched["metadata"]["annotations"]["a"], "b");
    let failed = patch(
        &server,
        &path,
        "application/json-patch+json",
        &json!([{"op": "test", "path": "/spec/replicas", "value": 5}]),
    );
    assert_eq!(failed.code, 422);
}

#[test]
fn discovery_and_health_documents() {
    let server = quiet_server();
    assert_eq!(get(&server, "/version").body["major"], "1");
    assert_eq!(get(&server, "/api").body["versions"], json!(["v1"]));
    let groups = get(&server, "/apis").body;
    let names: Vec<&str> = groups["groups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["name"].as_str().unwrap())
        .collect();
    assert!(
        names.contains(&"apps")
            && names.contains(&"discovery.k8s.io")
            && names.contains(&"coordination.k8s.io")
    );
    let apps = get(&server, "/apis/apps/v1").body;
    assert!(
        apps["resources"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["name"] == "deployments/scale")
    );
    assert_eq!(get(&server, "/healthz").code, 200);
    assert_eq!(get(&server, "/readyz").code, 200);
    assert_eq!(
        get(&server, "/api/v1/namespaces/anything").body["status"]["phase"],
        "Active"
    );
}

#[test]
fn stop_and_restart_keep_state_on_the_same_port() {
    let server = quiet_server();
    post(&server, CONFIGMAPS, &configmap("kept", json!({})));
    let url = server.url();
    let mut watch = RawWatch::open(
        &server,
        &format!(
            "{CONFIGMAPS}?watch=true&resourceVersion={}",
            server.resource_version()
        ),
    );
    server.stop();
    assert!(watch.next().is_none(), "open watches are dropped");
    assert!(std::net::TcpStream::connect(("127.0.0.1", server.port())).is_err());
    server.restart();
    assert_eq!(server.url(), url);
    assert_eq!(get(&server, &format!("{CONFIGMAPS}/kept")).code, 200);
}

#[test]
fn every_request_is_recorded() {
    let server = quiet_server();
    post(
        &server,
        &format!("{CONFIGMAPS}?fieldManager=tester"),
        &configmap("a", json!({})),
    );
    get(&server, &format!("{CONFIGMAPS}/missing"));
    let requests = server.requests();
    assert_eq!(requests.len(), 2);
    assert_eq!(requests[0].method, http::Method::POST);
    assert_eq!(requests[0].field_manager.as_deref(), Some("tester"));
    assert_eq!(
        requests[0].content_type.as_deref(),
        Some("application/json")
    );
    assert_eq!(requests[0].status, 201);
    assert_eq!(requests[1].status, 404);
    assert_eq!(requests[1].path, format!("{CONFIGMAPS}/missing"));
    let managers = server.get("configmaps", "default", "a").unwrap()["metadata"]["managedFields"]
        [0]["manager"]
        .clone();
    assert_eq!(managers, "tester");
}

#[test]
fn apply_removes_list_items_and_fields_the_manager_stopped_applying() {
    let server = quiet_server();
    let path = format!("{DEPLOYMENTS}/web?fieldManager=cutover");
    let mut applied = deployment("web", "missing:image", 0);
    applied["spec"]["template"]["spec"]["containers"]
        .as_array_mut()
        .unwrap()
        .push(json!({"name": "sidecar", "image": "side:1"}));
    applied["metadata"]["annotations"] = json!({"cutover.dev/state": "one"});
    let created = patch(&server, &path, "application/apply-patch+yaml", &applied);
    assert_eq!(created.code, 201);
    // Someone else adds an annotation; it must survive cutover's next apply.
    patch(
        &server,
        &format!("{DEPLOYMENTS}/web?fieldManager=kubectl-annotate"),
        "application/merge-patch+json",
        &json!({"metadata": {"annotations": {"note": "mine"}}}),
    );
    applied["spec"]["template"]["spec"]["containers"]
        .as_array_mut()
        .unwrap()
        .pop();
    applied["metadata"]["annotations"] = json!({});
    let updated = patch(&server, &path, "application/apply-patch+yaml", &applied);
    assert_eq!(updated.code, 200);
    let containers = updated.body["spec"]["template"]["spec"]["containers"]
        .as_array()
        .unwrap();
    assert_eq!(containers.len(), 1);
    assert_eq!(
        updated.body["metadata"]["annotations"],
        json!({"note": "mine"})
    );
    let stale = {
        let mut stale = applied.clone();
        stale["metadata"]["resourceVersion"] = created.body["metadata"]["resourceVersion"].clone();
        patch(&server, &path, "application/apply-patch+yaml", &stale)
    };
    assert_eq!(
        stale.code, 409,
        "a resourceVersion in an applied object is a precondition"
    );
}
