//! The server through the real `kube` client: kubeconfig, typed CRUD, server-side apply,
//! conflicts, the runtime watcher's relist after 410, scale, leases and injected faults.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::*;
use fake_kube_apiserver::{FakeApiServer, Fault};
use futures_util::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::watcher;
use serde_json::json;

async fn client(server: &FakeApiServer) -> kube::Client {
    let dir = std::env::temp_dir().join(format!(
        "fake-kube-{}-{}",
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
    assert_eq!(config.default_namespace, "default");
    let _ = std::fs::remove_dir_all(&dir);
    kube::Client::try_from(config).unwrap()
}

fn api_error(e: kube::Error) -> Box<kube::core::Status> {
    match e {
        kube::Error::Api(status) => status,
        other => panic!("expected an API error, got {other:?}"),
    }
}

#[tokio::test]
async fn typed_create_get_list_and_delete() {
    let server = start();
    let api: Api<Deployment> = Api::default_namespaced(client(&server).await);
    let d: Deployment = serde_json::from_value(deployment("web", "missing:image", 1)).unwrap();
    let created = api.create(&PostParams::default(), &d).await.unwrap();
    assert!(created.metadata.uid.is_some());
    assert_eq!(created.metadata.generation, Some(1));
    let again = api.create(&PostParams::default(), &d).await.unwrap_err();
    let status = api_error(again);
    assert_eq!(
        (status.code, status.reason.as_str()),
        (409, "AlreadyExists")
    );
    assert_eq!(status.message, "deployments.apps \"web\" already exists");
    let list = api
        .list(&ListParams::default().labels("app=web"))
        .await
        .unwrap();
    assert_eq!(list.items.len(), 1);
    assert!(list.metadata.resource_version.is_some());
    let gone = api
        .delete("web", &DeleteParams::background())
        .await
        .unwrap();
    assert!(gone.is_left());
    let status = api_error(api.get("web").await.unwrap_err());
    assert_eq!((status.code, status.reason.as_str()), (404, "NotFound"));
}

#[tokio::test]
async fn server_side_apply_owns_updates_removes_and_conflicts() {
    let server = start();
    let api: Api<Deployment> = Api::default_namespaced(client(&server).await);
    let mut applied = deployment("web", "missing:image", 2);
    applied["metadata"]["labels"]["extra"] = json!("yes");
    let created = api
        .patch(
            "web",
            &PatchParams::apply("cutover"),
            &Patch::Apply(&applied),
        )
        .await
        .unwrap();
    let managers: Vec<String> = created
        .metadata
        .managed_fields
        .iter()
        .flatten()
        .filter_map(|m| m.manager.clone())
        .collect();
    assert_eq!(managers, ["cutover"]);
    assert_eq!(
        created.metadata.managed_fields.as_ref().unwrap()[0]
            .operation
            .as_deref(),
        Some("Apply")
    );

    // The same manager stops applying a label: it goes away.
    applied["metadata"]["labels"]
        .as_object_mut()
        .unwrap()
        .remove("extra");
    applied["spec"]["replicas"] = json!(3);
    let updated = api
        .patch(
            "web",
            &PatchParams::apply("cutover"),
            &Patch::Apply(&applied),
        )
        .await
        .unwrap();
    assert!(
        !updated
            .metadata
            .labels
            .as_ref()
            .unwrap()
            .contains_key("extra")
    );
    assert_eq!(updated.spec.as_ref().unwrap().replicas, Some(3));
    assert_eq!(updated.metadata.generation, Some(2));

    // Another manager setting replicas to another value conflicts without force.
    let other = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"}, "spec": {"replicas": 5}});
    let status = api_error(
        api.patch(
            "web",
            &PatchParams::apply("kubectl-client-side-apply"),
            &Patch::Apply(&other),
        )
        .await
        .unwrap_err(),
    );
    assert_eq!((status.code, status.reason.as_str()), (409, "Conflict"));
    assert_eq!(
        status.message,
        "Apply failed with 1 conflict: conflict with \"cutover\" using apps/v1: .spec.replicas"
    );
    // Force takes the field over.
    let forced = api
        .patch(
            "web",
            &PatchParams::apply("kubectl-client-side-apply").force(),
            &Patch::Apply(&other),
        )
        .await
        .unwrap();
    assert_eq!(forced.spec.as_ref().unwrap().replicas, Some(5));
    let fields = serde_json::to_value(&forced.metadata.managed_fields).unwrap();
    let owner_of_replicas: Vec<&str> = fields
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["fieldsV1"]["f:spec"].get("f:replicas").is_some())
        .map(|m| m["manager"].as_str().unwrap())
        .collect();
    assert_eq!(owner_of_replicas, ["kubectl-client-side-apply"]);

    // Applying without the field any more leaves the value to its new owner.
    applied["spec"].as_object_mut().unwrap().remove("replicas");
    let after = api
        .patch(
            "web",
            &PatchParams::apply("cutover"),
            &Patch::Apply(&applied),
        )
        .await
        .unwrap();
    assert_eq!(after.spec.as_ref().unwrap().replicas, Some(5));

    let requests = server.requests();
    assert!(
        requests
            .iter()
            .any(|r| r.field_manager.as_deref() == Some("cutover")
                && r.content_type.as_deref() == Some("application/apply-patch+yaml"))
    );
}

#[tokio::test]
async fn watcher_relists_after_watches_expire() {
    let server = start();
    let api: Api<Lease> = Api::default_namespaced(client(&server).await);
    let lease = |name: &str| -> Lease {
        serde_json::from_value(json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": {"name": name}, "spec": {"holderIdentity": "a"}})).unwrap()
    };
    api.create(&PostParams::default(), &lease("one"))
        .await
        .unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let mut stream = watcher(api.clone(), watcher::Config::default()).boxed();
    let pump = tokio::spawn(async move {
        while let Some(event) = stream.next().await {
            let summary = match event {
                Ok(watcher::Event::Init) => "init".to_string(),
                Ok(watcher::Event::InitApply(l)) => {
                    format!("init-apply {}", l.metadata.name.unwrap())
                }
                Ok(watcher::Event::InitDone) => "init-done".to_string(),
                Ok(watcher::Event::Apply(l)) => format!("apply {}", l.metadata.name.unwrap()),
                Ok(watcher::Event::Delete(l)) => format!("delete {}", l.metadata.name.unwrap()),
                Err(e) => format!("error {e}"),
            };
            if tx.send(summary).is_err() {
                return;
            }
        }
    });
    let next = async |rx: &mut tokio::sync::mpsc::UnboundedReceiver<String>| {
        tokio::time::timeout(Duration::from_secs(10), rx.recv())
            .await
            .unwrap()
            .unwrap()
    };
    assert_eq!(next(&mut rx).await, "init");
    assert_eq!(next(&mut rx).await, "init-apply one");
    assert_eq!(next(&mut rx).await, "init-done");
    // Once the watch is open, expire it and write meanwhile.
    let watching = |server: &FakeApiServer| {
        server
            .requests()
            .iter()
            .any(|r| r.path.ends_with("/leases") && r.query.contains("watch=true"))
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !watching(&server) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the watcher never watched"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    server.expire_watches();
    api.create(&PostParams::default(), &lease("two"))
        .await
        .unwrap();
    let error = next(&mut rx).await;
    assert!(
        error.starts_with("error") && error.contains("Expired"),
        "{error}"
    );
    assert_eq!(next(&mut rx).await, "init");
    assert_eq!(next(&mut rx).await, "init-apply one");
    // The relist may or may not have happened before "two" was written; either way the
    // watcher sees it exactly once.
    let events = [next(&mut rx).await, next(&mut rx).await];
    assert!(
        events == ["init-apply two", "init-done"] || events == ["init-done", "apply two"],
        "{events:?}"
    );
    // And it watches again from the new list.
    api.create(&PostParams::default(), &lease("three"))
        .await
        .unwrap();
    assert_eq!(next(&mut rx).await, "apply three");
    pump.abort();
}

#[tokio::test]
async fn lease_replace_with_a_stale_resource_version_conflicts() {
    let server = start();
    let api: Api<Lease> = Api::default_namespaced(client(&server).await);
    let lease: Lease = serde_json::from_value(json!({
        "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": {"name": "leader"},
        "spec": {"holderIdentity": "a", "leaseDurationSeconds": 15},
    }))
    .unwrap();
    let first = api.create(&PostParams::default(), &lease).await.unwrap();
    let mut mine = first.clone();
    mine.spec.as_mut().unwrap().holder_identity = Some("b".into());
    let second = api
        .replace("leader", &PostParams::default(), &mine)
        .await
        .unwrap();
    assert!(rv_of(&second) > rv_of(&first));
    // Replacing from the old version again is a conflict.
    let status = api_error(
        api.replace("leader", &PostParams::default(), &mine)
            .await
            .unwrap_err(),
    );
    assert_eq!((status.code, status.reason.as_str()), (409, "Conflict"));
    assert_eq!(
        status.message,
        "Operation cannot be fulfilled on leases.coordination.k8s.io \"leader\": the object has been modified; please apply your changes to the latest version and try again"
    );
}

fn rv_of<K: kube::Resource>(object: &K) -> u64 {
    object
        .meta()
        .resource_version
        .as_deref()
        .unwrap()
        .parse()
        .unwrap()
}

#[tokio::test]
async fn forbidden_fault_reads_like_rbac() {
    let server = start();
    let api: Api<Deployment> = Api::default_namespaced(client(&server).await);
    server
        .create(deployment("web-green", "missing:image", 1))
        .unwrap();
    server.inject(Fault::forbidden("patch", "deployments"));
    let status = api_error(
        api.patch(
            "web-green",
            &PatchParams::apply("cutover"),
            &Patch::Apply(&deployment("web-green", "missing:image", 2)),
        )
        .await
        .unwrap_err(),
    );
    assert_eq!((status.code, status.reason.as_str()), (403, "Forbidden"));
    assert_eq!(
        status.message,
        "deployments.apps \"web-green\" is forbidden: User \"system:serviceaccount:cutover:cutover\" cannot patch resource \"deployments\" in API group \"apps\" in the namespace \"default\""
    );
    // Reads are still allowed.
    api.get("web-green").await.unwrap();
    server.clear_faults();
    api.patch(
        "web-green",
        &PatchParams::apply("cutover").force(),
        &Patch::Apply(&deployment("web-green", "missing:image", 2)),
    )
    .await
    .unwrap();
}

#[tokio::test]
async fn injected_faults_fail_the_given_number_of_requests() {
    let server = start();
    let api: Api<Deployment> = Api::default_namespaced(client(&server).await);
    server
        .create(deployment("web", "missing:image", 1))
        .unwrap();
    server.inject(
        Fault::new(500, "InternalError", "etcdserver: request timed out")
            .method(http::Method::GET)
            .resource("deployments")
            .times(2),
    );
    for _ in 0..2 {
        let status = api_error(api.get("web").await.unwrap_err());
        assert_eq!(
            (status.code, status.reason.as_str()),
            (500, "InternalError")
        );
    }
    api.get("web").await.unwrap();
    server.inject(Fault::new(409, "Conflict", "injected").name("web"));
    assert_eq!(api_error(api.get("web").await.unwrap_err()).code, 409);
    api.get("web").await.unwrap();
}

#[tokio::test]
async fn scale_subresource_reads_and_writes_replicas() {
    let server = start();
    let api: Api<Deployment> = Api::default_namespaced(client(&server).await);
    server
        .create(deployment("web", "missing:image", 1))
        .unwrap();
    let scale = api.get_scale("web").await.unwrap();
    assert_eq!(scale.spec.unwrap().replicas, Some(1));
    api.patch_scale(
        "web",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"replicas": 3}})),
    )
    .await
    .unwrap();
    assert_eq!(
        api.get("web").await.unwrap().spec.unwrap().replicas,
        Some(3)
    );
    let pods: Api<Pod> = Api::default_namespaced(api.clone().into_client());
    let found = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let list = pods
                .list(&ListParams::default().labels("app=web"))
                .await
                .unwrap();
            if list.items.len() == 3 {
                return list;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .unwrap();
    assert!(
        found
            .items
            .iter()
            .all(|p| p.metadata.name.as_ref().unwrap().starts_with("web-"))
    );
}
