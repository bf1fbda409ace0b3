//! cutover's custom resource, cutover.dev/v1 `Release`, with the semantics of a custom
//! resource with the status subresource: generation, status isolation, no strategic merge
//! patch, list kind, watches and discovery. Raw HTTP first, then the real `kube` client with
//! `DynamicObject`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use fake_kube_apiserver::{Config, FakeApiServer};
use futures_util::StreamExt;
use kube::api::{
    Api, ApiResource, DynamicObject, GroupVersionKind, ListParams, Patch, PatchParams, PostParams,
    WatchEvent, WatchParams,
};
use serde_json::{Value, json};

const RELEASES: &str = "/apis/cutover.dev/v1/namespaces/default/releases";
const ALL_RELEASES: &str = "/apis/cutover.dev/v1/releases";
const CRDS: &str = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions";

fn release(name: &str) -> Value {
    json!({
        "apiVersion": "cutover.dev/v1",
        "kind": "Release",
        "metadata": {"name": name, "labels": {"app": name}},
        "spec": {
            "backend": {"kubernetes": {"deployment": name}},
            "image": format!("registry:5000/{name}:v7"),
            "port": 80,
            "strategy": {"canary": {"steps": [{"setWeight": 50}]}},
        },
        "status": {"phase": "Smuggled"},
    })
}

fn generation(object: &Value) -> i64 {
    object["metadata"]["generation"].as_i64().unwrap()
}

fn check(reply: &Reply, code: u16) {
    assert_eq!(reply.code, code, "unexpected answer: {}", reply.body);
}

#[test]
fn releases_are_created_listed_and_deleted_with_a_release_list_kind() {
    let server = start();
    let created = post(&server, RELEASES, &release("shop"));
    check(&created, 201);
    let object = &created.body;
    assert_eq!(object["apiVersion"], "cutover.dev/v1");
    assert_eq!(object["kind"], "Release");
    assert_eq!(object["metadata"]["namespace"], "default");
    assert_eq!(generation(object), 1);
    assert!(object["metadata"]["uid"].is_string());
    assert!(
        object.get("status").is_none(),
        "create ignores status: {object}"
    );
    assert_eq!(object["spec"]["port"], 80);

    let again = post(&server, RELEASES, &release("shop"));
    check(&again, 409);
    assert_eq!(again.body["reason"], "AlreadyExists");
    assert_eq!(
        again.body["message"],
        "releases.cutover.dev \"shop\" already exists"
    );
    let mut other = release("cart");
    other["metadata"]["namespace"] = json!("prod");
    check(
        &post(
            &server,
            "/apis/cutover.dev/v1/namespaces/prod/releases",
            &other,
        ),
        201,
    );

    let got = get(&server, &format!("{RELEASES}/shop"));
    check(&got, 200);
    assert_eq!(got.body, created.body);
    let status_view = get(&server, &format!("{RELEASES}/shop/status"));
    check(&status_view, 200);
    assert_eq!(status_view.body, created.body);

    let list = get(&server, RELEASES);
    check(&list, 200);
    assert_eq!(list.body["kind"], "ReleaseList");
    assert_eq!(list.body["apiVersion"], "cutover.dev/v1");
    assert!(list.body["metadata"]["resourceVersion"].is_string());
    assert_eq!(list.body["items"].as_array().unwrap().len(), 1);
    let everywhere = get(&server, ALL_RELEASES);
    assert_eq!(everywhere.body["kind"], "ReleaseList");
    assert_eq!(everywhere.body["items"].as_array().unwrap().len(), 2);
    let selected = get(&server, &format!("{ALL_RELEASES}?labelSelector=app%3Dcart"));
    let items = selected.body["items"].as_array().unwrap();
    assert_eq!(items.len(), 1);
    assert_eq!(items[0]["metadata"]["namespace"], "prod");
    let by_field = get(
        &server,
        &format!("{ALL_RELEASES}?fieldSelector=metadata.namespace%3Ddefault"),
    );
    assert_eq!(by_field.body["items"][0]["metadata"]["name"], "shop");

    assert_eq!(
        server.get("releases", "default", "shop").unwrap()["kind"],
        "Release"
    );
    check(&delete(&server, &format!("{RELEASES}/shop")), 200);
    let gone = get(&server, &format!("{RELEASES}/shop"));
    check(&gone, 404);
    assert_eq!(
        gone.body["message"],
        "releases.cutover.dev \"shop\" not found"
    );
    assert_eq!(gone.body["details"]["group"], "cutover.dev");
    assert_eq!(gone.body["details"]["kind"], "releases");
    check(&get(&server, "/apis/cutover.dev/v1/releases/shop"), 404);
    check(&get(&server, &format!("{RELEASES}/cart/scale")), 404);
}

#[test]
fn generation_counts_spec_changes_only() {
    let server = start();
    let path = format!("{RELEASES}/shop");
    let created = post(&server, RELEASES, &release("shop")).body;
    assert_eq!(generation(&created), 1);

    // A spec change through PUT bumps generation.
    let mut desired = created.clone();
    desired["spec"]["image"] = json!("registry:5000/shop:v8");
    let replaced = put(&server, &path, &desired);
    check(&replaced, 200);
    assert_eq!(generation(&replaced.body), 2);
    assert!(rv(&replaced.body) > rv(&created));

    // Metadata changes are stored but do not bump it.
    let labelled = patch(
        &server,
        &path,
        "application/merge-patch+json",
        &json!({"metadata": {"labels": {"tier": "web"}, "annotations": {"note": "x"}}}),
    );
    check(&labelled, 200);
    assert_eq!(labelled.body["metadata"]["labels"]["tier"], "web");
    assert_eq!(generation(&labelled.body), 2);
    assert!(rv(&labelled.body) > rv(&replaced.body));

    // Status changes (through the subresource) do not bump it either.
    let status = patch(
        &server,
        &format!("{path}/status"),
        "application/merge-patch+json",
        &json!({"status": {"phase": "Progressing", "observedGeneration": 2}}),
    );
    check(&status, 200);
    assert_eq!(status.body["status"]["phase"], "Progressing");
    assert_eq!(generation(&status.body), 2);

    // A field outside spec, metadata and status counts as content too.
    let extra = patch(
        &server,
        &path,
        "application/merge-patch+json",
        &json!({"extra": {"k": "v"}}),
    );
    assert_eq!(generation(&extra.body), 3);

    // JSON patch and server-side apply of the spec bump it; a no-op does not.
    let json_patched = patch(
        &server,
        &path,
        "application/json-patch+json",
        &json!([{"op": "replace", "path": "/spec/port", "value": 8080}]),
    );
    check(&json_patched, 200);
    assert_eq!(json_patched.body["spec"]["port"], 8080);
    assert_eq!(generation(&json_patched.body), 4);
    let same = patch(
        &server,
        &path,
        "application/merge-patch+json",
        &json!({"spec": {"port": 8080}}),
    );
    assert_eq!(generation(&same.body), 4);
    assert_eq!(
        rv(&same.body),
        rv(&json_patched.body),
        "a no-op is not written"
    );
    let applied = patch(
        &server,
        &format!("{path}?fieldManager=cutover&force=true"),
        "application/apply-patch+yaml",
        &json!({"apiVersion": "cutover.dev/v1", "kind": "Release", "metadata": {"name": "shop"}, "spec": {"port": 9090}}),
    );
    check(&applied, 200);
    assert_eq!(applied.body["spec"]["port"], 9090);
    assert_eq!(generation(&applied.body), 5);
    assert_eq!(applied.body["status"]["phase"], "Progressing");

    // Apply creates a missing release, at generation 1.
    let fresh = patch(
        &server,
        &format!("{RELEASES}/cart?fieldManager=cutover"),
        "application/apply-patch+yaml",
        &json!({"apiVersion": "cutover.dev/v1", "kind": "Release", "metadata": {"name": "cart"}, "spec": {"port": 1}}),
    );
    check(&fresh, 201);
    assert_eq!(generation(&fresh.body), 1);
}

#[test]
fn the_status_subresource_isolates_status_from_the_rest() {
    let server = start();
    let path = format!("{RELEASES}/shop");
    let created = post(&server, RELEASES, &release("shop")).body;

    // Writes to the main resource ignore status.
    let mut desired = created.clone();
    desired["status"] = json!({"phase": "Done"});
    let replaced = put(&server, &path, &desired);
    check(&replaced, 200);
    assert!(replaced.body.get("status").is_none(), "{}", replaced.body);
    assert_eq!(
        rv(&replaced.body),
        rv(&created),
        "nothing changed: no write"
    );
    let merged = patch(
        &server,
        &path,
        "application/merge-patch+json",
        &json!({"status": {"phase": "Done"}}),
    );
    check(&merged, 200);
    assert!(merged.body.get("status").is_none());

    // Writes to /status change only status: spec and labels in the body are ignored.
    let mut desired = created.clone();
    desired["spec"]["image"] = json!("registry:5000/shop:v9");
    desired["metadata"]["labels"] = json!({"app": "other"});
    desired["status"] = json!({"phase": "Progressing", "step": 1});
    let status = put(&server, &format!("{path}/status"), &desired);
    check(&status, 200);
    assert_eq!(status.body["status"]["phase"], "Progressing");
    assert_eq!(status.body["spec"], created["spec"]);
    assert_eq!(status.body["metadata"]["labels"], json!({"app": "shop"}));
    assert_eq!(generation(&status.body), 1);

    // Main writes keep the stored status.
    let relabelled = patch(
        &server,
        &path,
        "application/merge-patch+json",
        &json!({"metadata": {"labels": {"tier": "web"}}, "status": null}),
    );
    assert_eq!(relabelled.body["status"]["phase"], "Progressing");

    // A stale status write conflicts like any other.
    let mut stale = status.body.clone();
    stale["status"]["step"] = json!(2);
    let conflict = put(&server, &format!("{path}/status"), &stale);
    check(&conflict, 409);
    assert_eq!(conflict.body["reason"], "Conflict");

    // JSON patch on /status.
    let json_patched = patch(
        &server,
        &format!("{path}/status"),
        "application/json-patch+json",
        &json!([{"op": "add", "path": "/status/step", "value": 3}, {"op": "replace", "path": "/spec/port", "value": 1}]),
    );
    check(&json_patched, 200);
    assert_eq!(json_patched.body["status"]["step"], 3);
    assert_eq!(json_patched.body["spec"]["port"], 80);
    assert_eq!(generation(&json_patched.body), 1);
    check(&get(&server, &format!("{RELEASES}/missing/status")), 404);
}

#[test]
fn strategic_merge_patch_is_unsupported_for_releases() {
    let server = start();
    post(&server, RELEASES, &release("shop"));
    for path in [
        format!("{RELEASES}/shop"),
        format!("{RELEASES}/shop/status"),
        format!("{RELEASES}/missing"),
    ] {
        let reply = patch(
            &server,
            &path,
            "application/strategic-merge-patch+json",
            &json!({"spec": {"port": 1}}),
        );
        check(&reply, 415);
        assert_eq!(reply.body["kind"], "Status");
        assert_eq!(reply.body["reason"], "UnsupportedMediaType");
        assert_eq!(
            reply.body["message"],
            "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml"
        );
    }
    assert_eq!(
        server.get("releases", "default", "shop").unwrap()["spec"]["port"],
        80
    );
    // Built-in resources still take it.
    let cm = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "a"}, "data": {"k": "v"}});
    post(&server, "/api/v1/namespaces/default/configmaps", &cm);
    let reply = patch(
        &server,
        "/api/v1/namespaces/default/configmaps/a",
        "application/strategic-merge-patch+json",
        &json!({"data": {"k": "w"}}),
    );
    check(&reply, 200);
}

#[test]
fn watches_see_spec_and_status_changes_and_expire_with_410() {
    let server = FakeApiServer::start(Config {
        history: 4,
        ..Config::default()
    })
    .unwrap();
    let path = format!("{RELEASES}/shop");
    let start_rv = server.resource_version();
    let mut watch = RawWatch::open(
        &server,
        &format!("{RELEASES}?watch=true&resourceVersion={start_rv}"),
    );
    post(&server, RELEASES, &release("shop"));
    patch(
        &server,
        &path,
        "application/merge-patch+json",
        &json!({"spec": {"port": 81}}),
    );
    patch(
        &server,
        &format!("{path}/status"),
        "application/merge-patch+json",
        &json!({"status": {"phase": "Progressing"}}),
    );
    delete(&server, &path);

    let added = watch.next_change().unwrap();
    assert_eq!(added["type"], "ADDED");
    assert_eq!(added["object"]["kind"], "Release");
    assert_eq!(generation(&added["object"]), 1);
    let spec = watch.next_change().unwrap();
    assert_eq!(spec["type"], "MODIFIED");
    assert_eq!(spec["object"]["spec"]["port"], 81);
    assert_eq!(generation(&spec["object"]), 2);
    let status = watch.next_change().unwrap();
    assert_eq!(status["type"], "MODIFIED");
    assert_eq!(status["object"]["status"]["phase"], "Progressing");
    assert_eq!(generation(&status["object"]), 2);
    let deleted = watch.next_change().unwrap();
    assert_eq!(deleted["type"], "DELETED");

    // A cluster-wide watch from a compacted resourceVersion gets 410 Expired.
    for i in 0..6 {
        let mut r = release(&format!("r{i}"));
        r["metadata"]["labels"] = json!({"n": i.to_string()});
        post(&server, RELEASES, &r);
    }
    let mut old = RawWatch::open(
        &server,
        &format!("{ALL_RELEASES}?watch=true&resourceVersion={start_rv}"),
    );
    let event = old.next().unwrap();
    assert_eq!(event["type"], "ERROR");
    assert_eq!(event["object"]["code"], 410);
    assert_eq!(event["object"]["reason"], "Expired");
    assert!(old.next().is_none());

    // A label-selected watch sees only matching releases.
    let now = server.resource_version();
    let mut selected = RawWatch::open(
        &server,
        &format!("{ALL_RELEASES}?watch=true&resourceVersion={now}&labelSelector=n%3D5"),
    );
    patch(
        &server,
        &format!("{RELEASES}/r4"),
        "application/merge-patch+json",
        &json!({"spec": {"port": 4}}),
    );
    patch(
        &server,
        &format!("{RELEASES}/r5"),
        "application/merge-patch+json",
        &json!({"spec": {"port": 5}}),
    );
    let event = selected.next_change().unwrap();
    assert_eq!(event["object"]["metadata"]["name"], "r5");
}

#[test]
fn discovery_lists_releases() {
    let server = start();
    let groups = get(&server, "/apis").body;
    let cutover = groups["groups"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["name"] == "cutover.dev")
        .expect("cutover.dev in /apis");
    assert_eq!(
        cutover["preferredVersion"]["groupVersion"],
        "cutover.dev/v1"
    );
    assert!(
        groups["groups"]
            .as_array()
            .unwrap()
            .iter()
            .any(|g| g["name"] == "apiextensions.k8s.io")
    );
    let group = get(&server, "/apis/cutover.dev");
    check(&group, 200);
    assert_eq!(group.body["kind"], "APIGroup");
    assert_eq!(group.body["versions"][0]["version"], "v1");
    let list = get(&server, "/apis/cutover.dev/v1");
    check(&list, 200);
    assert_eq!(list.body["groupVersion"], "cutover.dev/v1");
    let resources = list.body["resources"].as_array().unwrap();
    let main = resources.iter().find(|r| r["name"] == "releases").unwrap();
    assert_eq!(main["kind"], "Release");
    assert_eq!(main["singularName"], "release");
    assert_eq!(main["namespaced"], true);
    assert!(
        main["verbs"]
            .as_array()
            .unwrap()
            .iter()
            .any(|v| v == "watch")
    );
    let status = resources
        .iter()
        .find(|r| r["name"] == "releases/status")
        .unwrap();
    assert_eq!(status["kind"], "Release");
    assert_eq!(resources.len(), 2);
    check(&get(&server, "/apis/cutover.dev/v2"), 404);
    check(
        &get(
            &server,
            "/apis/cutover.dev/v1/namespaces/default/strategies",
        ),
        404,
    );
}

#[test]
fn custom_resource_definitions_are_stored() {
    let server = start();
    let crd = json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": "releases.cutover.dev"},
        "spec": {
            "group": "cutover.dev",
            "scope": "Namespaced",
            "names": {"plural": "releases", "singular": "release", "kind": "Release"},
            "versions": [{
                "name": "v1", "served": true, "storage": true,
                "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}},
                "subresources": {"status": {}},
            }],
        },
    });
    let created = post(&server, CRDS, &crd);
    check(&created, 201);
    assert!(created.body["metadata"].get("namespace").is_none());
    let established = condition(&created.body, "Established").unwrap();
    assert_eq!(established["status"], "True");
    assert_eq!(
        created.body["status"]["acceptedNames"]["listKind"],
        "ReleaseList"
    );
    assert_eq!(created.body["status"]["storedVersions"], json!(["v1"]));
    check(&get(&server, &format!("{CRDS}/releases.cutover.dev")), 200);
    assert_eq!(
        get(&server, CRDS).body["kind"],
        "CustomResourceDefinitionList"
    );

    let mut misnamed = crd.clone();
    misnamed["metadata"]["name"] = json!("releases");
    let invalid = post(&server, CRDS, &misnamed);
    check(&invalid, 422);
    assert_eq!(invalid.body["reason"], "Invalid");

    // Through the public helper too, and releases are served either way.
    let mut other = crd.clone();
    other["metadata"]["name"] = json!("strategies.cutover.dev");
    other["spec"]["names"] = json!({"plural": "strategies", "kind": "Strategy"});
    server.create(other).unwrap();
    check(&post(&server, RELEASES, &release("shop")), 201);
    server.create(release("cart")).unwrap();
    assert_eq!(server.list("releases", "default").len(), 2);
}

// ---- The real `kube` client, with DynamicObject ---------------------------------------

async fn client(server: &FakeApiServer) -> kube::Client {
    let dir = std::env::temp_dir().join(format!(
        "fake-kube-cr-{}-{}",
        std::process::id(),
        server.port()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("kubeconfig");
    server.write_kubeconfig(&path, "default").unwrap();
    let kubeconfig = kube::config::Kubeconfig::read_from(&path).unwrap();
    let config = kube::Config::from_custom_kubeconfig(
        kubeconfig,
        &kube::config::KubeConfigOptions::default(),
    )
    .await
    .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    kube::Client::try_from(config).unwrap()
}

fn release_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("cutover.dev", "v1", "Release"),
        "releases",
    )
}

fn dynamic_release(name: &str) -> DynamicObject {
    let value = release(name);
    DynamicObject::new(name, &release_resource()).data(json!({
        "spec": value["spec"],
        "status": value["status"],
    }))
}

fn api_error(e: kube::Error) -> Box<kube::core::Status> {
    match e {
        kube::Error::Api(status) => status,
        other => panic!("expected an API error, got {other:?}"),
    }
}

#[tokio::test]
async fn dynamic_objects_through_the_kube_client() {
    let server = start();
    let ar = release_resource();
    let api: Api<DynamicObject> = Api::namespaced_with(client(&server).await, "default", &ar);

    let created = api
        .create(&PostParams::default(), &dynamic_release("shop"))
        .await
        .unwrap();
    assert_eq!(created.metadata.generation, Some(1));
    assert_eq!(created.types.as_ref().unwrap().kind, "Release");
    assert!(
        created.data.get("status").is_none(),
        "create ignores status"
    );
    assert_eq!(created.data["spec"]["port"], 80);

    // Spec change through replace: generation 2; status sent along is ignored.
    let mut desired = created.clone();
    desired.data["spec"]["port"] = json!(81);
    desired.data["status"] = json!({"phase": "Ignored"});
    let replaced = api
        .replace("shop", &PostParams::default(), &desired)
        .await
        .unwrap();
    assert_eq!(replaced.metadata.generation, Some(2));
    assert!(replaced.data.get("status").is_none());

    // Metadata change through a merge patch: generation stays.
    let labelled = api
        .patch(
            "shop",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"tier": "web"}}})),
        )
        .await
        .unwrap();
    assert_eq!(labelled.metadata.generation, Some(2));
    assert_eq!(
        labelled.metadata.labels.as_ref().unwrap()["tier"],
        "web".to_string()
    );

    // patch_status with a merge patch: status only, generation stays.
    let status = api
        .patch_status(
            "shop",
            &PatchParams::default(),
            &Patch::Merge(json!({
                "spec": {"port": 1},
                "status": {"phase": "Progressing", "observedGeneration": 2},
            })),
        )
        .await
        .unwrap();
    assert_eq!(status.data["status"]["phase"], "Progressing");
    assert_eq!(status.data["spec"]["port"], 81, "status writes ignore spec");
    assert_eq!(status.metadata.generation, Some(2));

    // replace_status ignores spec too.
    let mut desired = status.clone();
    desired.data["spec"]["port"] = json!(2);
    desired.data["status"]["phase"] = json!("Succeeded");
    let replaced = api
        .replace_status("shop", &PostParams::default(), &desired)
        .await
        .unwrap();
    assert_eq!(replaced.data["status"]["phase"], "Succeeded");
    assert_eq!(replaced.data["spec"]["port"], 81);
    assert_eq!(replaced.metadata.generation, Some(2));
    let status_view = api.get_status("shop").await.unwrap();
    assert_eq!(status_view.data["status"]["phase"], "Succeeded");

    // Server-side apply of the spec.
    let applied = api
        .patch(
            "shop",
            &PatchParams::apply("cutover").force(),
            &Patch::Apply(json!({
                "apiVersion": "cutover.dev/v1",
                "kind": "Release",
                "metadata": {"name": "shop"},
                "spec": {"port": 82},
            })),
        )
        .await
        .unwrap();
    assert_eq!(applied.data["spec"]["port"], 82);
    assert_eq!(applied.metadata.generation, Some(3));

    // Strategic merge patch: 415, as for any custom resource.
    let refused = api
        .patch(
            "shop",
            &PatchParams::default(),
            &Patch::Strategic(json!({"spec": {"port": 83}})),
        )
        .await
        .unwrap_err();
    let status = api_error(refused);
    assert_eq!(
        (status.code, status.reason.as_str()),
        (415, "UnsupportedMediaType")
    );
    let refused = api
        .patch_status(
            "shop",
            &PatchParams::default(),
            &Patch::Strategic(json!({"status": {"phase": "X"}})),
        )
        .await
        .unwrap_err();
    assert_eq!(api_error(refused).code, 415);

    // Lists are ReleaseLists.
    let list = api
        .list(&ListParams::default().labels("tier=web"))
        .await
        .unwrap();
    assert_eq!(list.types.kind, "ReleaseList");
    assert_eq!(list.types.api_version, "cutover.dev/v1");
    assert_eq!(list.items.len(), 1);
    assert!(list.metadata.resource_version.is_some());
    let all: Api<DynamicObject> = Api::all_with(api.clone().into_client(), &ar);
    assert_eq!(
        all.list(&ListParams::default()).await.unwrap().items.len(),
        1
    );

    let missing = api_error(api.get("missing").await.unwrap_err());
    assert_eq!((missing.code, missing.reason.as_str()), (404, "NotFound"));
    api.delete("shop", &Default::default()).await.unwrap();
    assert!(api.get_opt("shop").await.unwrap().is_none());
}

#[tokio::test]
async fn the_kube_client_watches_spec_and_status_changes() {
    let server = start();
    let ar = release_resource();
    let api: Api<DynamicObject> = Api::namespaced_with(client(&server).await, "default", &ar);
    let created = api
        .create(&PostParams::default(), &dynamic_release("shop"))
        .await
        .unwrap();
    let from = created.metadata.resource_version.clone().unwrap();
    let mut events = api
        .watch(&WatchParams::default().timeout(10), &from)
        .await
        .unwrap()
        .boxed();

    api.patch(
        "shop",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"port": 90}})),
    )
    .await
    .unwrap();
    api.patch_status(
        "shop",
        &PatchParams::default(),
        &Patch::Merge(json!({"status": {"phase": "Progressing"}})),
    )
    .await
    .unwrap();

    let mut seen = Vec::new();
    while seen.len() < 2 {
        match events.next().await.expect("an event").unwrap() {
            WatchEvent::Modified(object) => seen.push(object),
            WatchEvent::Bookmark(_) => {}
            other => panic!("unexpected event {other:?}"),
        }
    }
    assert_eq!(seen[0].data["spec"]["port"], 90);
    assert_eq!(seen[0].metadata.generation, Some(2));
    assert!(seen[0].data.get("status").is_none());
    assert_eq!(seen[1].data["status"]["phase"], "Progressing");
    assert_eq!(seen[1].metadata.generation, Some(2));

    // A watch from a resourceVersion no longer kept ends with 410 Expired.
    server.expire_watches();
    let mut stale = api
        .watch(&WatchParams::default().timeout(10), &from)
        .await
        .unwrap()
        .boxed();
    match stale.next().await.expect("an event").unwrap() {
        WatchEvent::Error(e) => assert_eq!(e.code, 410),
        other => panic!("expected a 410, got {other:?}"),
    }
}
