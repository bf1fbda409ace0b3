//! [`ReleaseObjects`]: the `Release` custom resources of a namespace, watched, so that a
//! release applied as an object (by a GitOps tool, or `kubectl apply`) starts a rollout,
//! and its status shows how the rollout goes.
//!
//! This is the watching and the writing; deciding what to submit is the controller's
//! (`cutover serve` holds the loop, which needs the controller this crate does not know).

use futures_util::StreamExt;
use kube::api::{ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client};
use serde_json::{Value, json};

use cutover_backend::BackendError;

use crate::crd;
use crate::error::{self, Call, classify};

/// One `Release` object as the controller needs it.
#[derive(Clone, Debug, PartialEq)]
pub struct ReleaseObject {
    /// The object's name: the release's name.
    pub name: String,
    /// The object's uid: a deleted and re-created object is another object.
    pub uid: String,
    /// `metadata.generation`: increases with every change of the spec.
    pub generation: i64,
    /// `status.observedGeneration`: the generation the controller last acted on.
    pub observed_generation: Option<i64>,
    /// The release document (`apiVersion`, `kind`, `metadata.name`, `spec`) as
    /// pretty-printed JSON, for the same loader release files go through.
    pub document: String,
    /// The status as stored.
    pub status: Value,
}

/// The watched `Release` objects of one namespace. Cheap to clone.
#[derive(Clone)]
pub struct ReleaseObjects {
    api: Api<DynamicObject>,
    store: Store<DynamicObject>,
    namespace: String,
}

fn resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk(crd::GROUP, crd::VERSION, crd::KIND),
        crd::PLURAL,
    )
}

impl ReleaseObjects {
    /// Starts watching the `Release` objects of `namespace`. While the custom resource is
    /// not installed (or cutover may not list it) the watch retries with back-off and says
    /// so once.
    pub fn start(client: Client, namespace: &str) -> ReleaseObjects {
        let api: Api<DynamicObject> = Api::namespaced_with(client, namespace, &resource());
        let writer = reflector::store::Writer::new(resource());
        let store = writer.as_reader();
        let stream = reflector::reflector(writer, watcher(api.clone(), watcher::Config::default()))
            .default_backoff();
        let ns = namespace.to_string();
        tokio::spawn(async move {
            let mut stream = std::pin::pin!(stream);
            let mut said = None;
            while let Some(event) = stream.next().await {
                match event {
                    Ok(_) => said = None,
                    Err(e) => {
                        let text = e.to_string();
                        if said.as_ref() != Some(&text) {
                            tracing::warn!(
                                namespace = %ns,
                                error = %text,
                                "cannot watch Release objects (is the CRD installed? `cutover crd | kubectl apply -f -`); retrying"
                            );
                            said = Some(text);
                        }
                    }
                }
            }
        });
        ReleaseObjects {
            api,
            store,
            namespace: namespace.to_string(),
        }
    }

    /// Every object, as last seen, sorted by name.
    pub fn objects(&self) -> Vec<ReleaseObject> {
        let mut objects: Vec<ReleaseObject> =
            self.store.state().iter().filter_map(|o| read(o)).collect();
        objects.sort_by(|a, b| a.name.cmp(&b.name));
        objects
    }

    /// Replaces the fields of `status` in the object's status (merge patch on the status
    /// subresource; a `null` removes a field).
    pub async fn set_status(&self, name: &str, status: &Value) -> Result<(), BackendError> {
        let patch = json!({ "status": status });
        match self
            .api
            .patch_status(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => Ok(()),
            // Deleted meanwhile: nothing to show the status on.
            Err(e) if error::is_not_found(&e) => Ok(()),
            Err(e) => Err(classify(
                Call {
                    verbs: &["patch"],
                    resource: "releases/status",
                    group: crd::GROUP,
                    namespace: &self.namespace,
                },
                e,
            )),
        }
    }
}

/// The parts of an object the controller uses; `None` for one without a name.
fn read(object: &DynamicObject) -> Option<ReleaseObject> {
    let name = object.metadata.name.clone()?;
    let status = object.data.get("status").cloned().unwrap_or(Value::Null);
    let mut spec = object.data.get("spec").cloned().unwrap_or(Value::Null);
    // The object's namespace is where its Deployment is, unless the spec says otherwise.
    if let Some(target) = spec
        .pointer_mut("/backend/kubernetes")
        .and_then(Value::as_object_mut)
        && !target.contains_key("namespace")
        && let Some(namespace) = &object.metadata.namespace
    {
        target.insert("namespace".into(), namespace.clone().into());
    }
    let document = json!({
        "apiVersion": format!("{}/{}", crd::GROUP, crd::VERSION),
        "kind": crd::KIND,
        "metadata": { "name": name },
        "spec": spec,
    });
    Some(ReleaseObject {
        generation: object.metadata.generation.unwrap_or(1),
        observed_generation: status.get("observedGeneration").and_then(Value::as_i64),
        document: serde_json::to_string_pretty(&document).unwrap_or_default(),
        status,
        uid: object.metadata.uid.clone().unwrap_or_default(),
        name,
    })
}
