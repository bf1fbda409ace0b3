//! [`KubeBackend`]: the [`Backend`] trait on a Kubernetes namespace.
//!
//! A release anchors on the Deployment its file names (`backend.kubernetes.deployment`):
//! the first release adopts it as the stable slot by labelling it, and from then on its
//! annotations hold the release's record: which Deployment plays which slot
//! ([`Slots`]) and the controller's rollout state, written together with compare-and-swap
//! on the anchor's `resourceVersion`. Candidates are Deployments of their own
//! (`<anchor>-green`, `<anchor>-blue`) applied by server-side apply; each slot's
//! Deployment gets a headless Service whose EndpointSlices, watched, give the proxy its
//! endpoints. A promotion swaps the roles in one write; the former stable Deployment is
//! scaled to zero (the anchor) or deleted (a colour) when the scale-down delay ends.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use cutover_backend::{
    Backend, BackendError, BoxFuture, Readiness, ReleaseLocks, Slot, SlotView, Stored,
};
use cutover_core::spec::{Backend as BackendSpec, KubernetesTarget, Release};
use cutover_backend::revision::{Decision, Held, Request, decide, fenced, target_of};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Pod, Service};
use kube::api::{
    ApiResource, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, Preconditions,
};
use kube::{Api, Client};
use serde_json::{Value, json};
use tracing::Instrument;

use crate::endpoints::EndpointCache;
use crate::error::{self, Call, classify};
use crate::keys;
use crate::readiness::{self, Progress};
use crate::slots::{SlotEntry, Slots};
use crate::template::{self, CandidateOf};

/// How often a deploy looks at the candidate.
const POLL: Duration = Duration::from_millis(500);
/// Attempts at a compare-and-swap write that loses to other writers of the anchor (the
/// deployment controller updates its status all the time).
const UPDATE_ATTEMPTS: usize = 8;
/// How long `stable` waits for the EndpointSlices of a Deployment that has ready pods.
const ENDPOINTS_WAIT: Duration = Duration::from_secs(10);
/// How long a deploy waits for a Deployment of its candidate's name to finish being
/// deleted.
const TERMINATING_WAIT: Duration = Duration::from_secs(120);
/// How long an API call may wait for its answer.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// The Kubernetes backend. Cheap to clone: clones share the client, the EndpointSlice
/// cache and one set of per-release locks.
#[derive(Clone)]
pub struct KubeBackend {
    inner: Arc<Inner>,
}

struct Inner {
    /// For calls: with a read timeout.
    client: Client,
    /// For watches: without one.
    watch_client: Client,
    namespace: String,
    controller: String,
    locks: ReleaseLocks,
    endpoints: EndpointCache,
    /// The uid of each slot Service this process applied, by Deployment.
    service_uids: Mutex<HashMap<String, String>>,
    /// The anchor Deployment of each release, by release, as last found: the endpoint
    /// refresh reads it every second by name instead of listing.
    anchors: Mutex<HashMap<String, String>>,
    /// This process among the controller's writers (see `keys::WRITER`).
    writer: String,
}

/// Why the backend could not start.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// Neither a kubeconfig nor the in-cluster service account gave a configuration.
    #[error(
        "no Kubernetes configuration: set KUBECONFIG, write ~/.kube/config, or run in a pod \
         with a service account ({0})"
    )]
    Config(String),
    /// The API server did not answer, or refused to list Deployments.
    #[error("cannot use the Kubernetes API at {url}: {message}")]
    Unreachable {
        /// The server.
        url: String,
        /// Why.
        message: String,
    },
    /// The controller's name is empty.
    #[error("the controller's name (--name) must not be empty")]
    Name,
}

impl KubeBackend {
    /// Connects with the configuration `KUBECONFIG` (or `~/.kube/config`, or the pod's
    /// service account) gives, to manage the releases in `namespace` (by default the
    /// configuration's namespace), and checks that Deployments there can be listed. Starts
    /// the EndpointSlice watch. `controller` names this controller: it drives and resumes
    /// only releases labelled with its name.
    pub async fn connect(
        controller: &str,
        namespace: Option<&str>,
    ) -> Result<KubeBackend, ConnectError> {
        let config = kube::Config::infer()
            .await
            .map_err(|e| ConnectError::Config(e.to_string()))?;
        KubeBackend::connect_with(config, controller, namespace).await
    }

    /// [`connect`](Self::connect) with a configuration of the caller's.
    pub async fn connect_with(
        config: kube::Config,
        controller: &str,
        namespace: Option<&str>,
    ) -> Result<KubeBackend, ConnectError> {
        if controller.trim().is_empty() {
            return Err(ConnectError::Name);
        }
        let url = config.cluster_url.to_string();
        let namespace = namespace.map_or_else(|| config.default_namespace.clone(), str::to_string);
        let unreachable = |e: kube::Error| ConnectError::Unreachable {
            url: url.clone(),
            message: e.to_string(),
        };
        // Watches stay open for minutes without a byte when nothing changes, so they get a
        // client without a read timeout; every other call gets one, so that a connection
        // that stalls (rather than fails) cannot hold a release's lock, or a leader's
        // renewal, forever.
        let watch_client = Client::try_from(config.clone()).map_err(unreachable)?;
        let mut config = config;
        if config.read_timeout.is_none() {
            config.read_timeout = Some(CALL_TIMEOUT);
            config.reset_reader_on_write = true;
        }
        let client = Client::try_from(config).map_err(unreachable)?;
        let deployments: Api<Deployment> = Api::namespaced(client.clone(), &namespace);
        deployments
            .list_metadata(&ListParams::default().limit(1))
            .await
            .map_err(|e| ConnectError::Unreachable {
                url: url.clone(),
                message: classify(
                    Call {
                        verbs: &["list"],
                        resource: "deployments",
                        group: "apps",
                        namespace: &namespace,
                    },
                    e,
                )
                .to_string(),
            })?;
        tracing::info!(%url, %namespace, "connected to the Kubernetes API");
        let endpoints = EndpointCache::start(watch_client.clone(), &namespace, controller);
        Ok(KubeBackend {
            inner: Arc::new(Inner {
                client,
                watch_client,
                namespace,
                controller: controller.to_string(),
                locks: ReleaseLocks::default(),
                endpoints,
                service_uids: Mutex::default(),
                anchors: Mutex::default(),
                writer: cutover_backend::writer_id(),
            }),
        })
    }

    /// The client for calls (with a read timeout), for the controller's leader election.
    pub fn client(&self) -> Client {
        self.inner.client.clone()
    }

    /// The client for watches (without a read timeout), for watching `Release` objects.
    pub fn watch_client(&self) -> Client {
        self.inner.watch_client.clone()
    }

    /// The namespace this controller manages.
    pub fn namespace(&self) -> &str {
        &self.inner.namespace
    }

    fn deployments(&self) -> Api<Deployment> {
        Api::namespaced(self.inner.client.clone(), &self.inner.namespace)
    }

    /// Deployments as the server's JSON: a template is cloned from what the server holds,
    /// not from a typed model that may not know every field.
    fn raw_deployments(&self) -> Api<DynamicObject> {
        Api::namespaced_with(
            self.inner.client.clone(),
            &self.inner.namespace,
            &ApiResource::erase::<Deployment>(&()),
        )
    }

    fn services(&self) -> Api<Service> {
        Api::namespaced(self.inner.client.clone(), &self.inner.namespace)
    }

    fn pods(&self) -> Api<Pod> {
        Api::namespaced(self.inner.client.clone(), &self.inner.namespace)
    }

    fn call<'a>(&'a self, verb: &'a str, resource: &'a str, group: &'a str) -> Call<'a> {
        let verbs: &'a [&'a str] = match verb {
            // Server-side apply: `create` when the object is new, `patch` otherwise.
            "apply" => &["create", "patch"],
            "get" => &["get"],
            "list" => &["list"],
            "delete" => &["delete"],
            _ => &["patch"],
        };
        Call {
            verbs,
            resource,
            group,
            namespace: &self.inner.namespace,
        }
    }

    fn target<'r>(&self, release: &'r Release) -> Result<&'r KubernetesTarget, BackendError> {
        let target = target_of(release, "Kubernetes", |spec| match spec {
            BackendSpec::Kubernetes(target) => Some(target),
            _ => None,
        })?;
        if let Some(namespace) = &release.metadata.namespace
            && *namespace != target.namespace
        {
            return Err(BackendError::Invalid(format!(
                "release '{}' says metadata.namespace: {namespace} but \
                 backend.kubernetes.namespace: {} (the namespace of its Deployment): set \
                 backend.kubernetes.namespace: {namespace}",
                release.metadata.name, target.namespace
            )));
        }
        if target.namespace != self.inner.namespace {
            return Err(BackendError::Invalid(format!(
                "release '{}' is in namespace '{}', but this controller manages namespace '{}': \
                 set backend.kubernetes.namespace: {} or send it to a controller started with \
                 --namespace {}",
                release.metadata.name,
                target.namespace,
                self.inner.namespace,
                self.inner.namespace,
                target.namespace
            )));
        }
        Ok(target)
    }

    /// The uids of the slot Services this process applied.
    fn service_uids(&self) -> MutexGuard<'_, HashMap<String, String>> {
        self.inner
            .service_uids
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// The anchors found so far.
    fn anchors(&self) -> MutexGuard<'_, HashMap<String, String>> {
        self.inner
            .anchors
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// [`anchor`](Self::anchor) for reads that repeat (the endpoint refresh): a GET of the
    /// Deployment found last time, if it still anchors the release; a list otherwise.
    /// Writes go through `anchor`, which also finds a second anchor labelled by mistake.
    async fn known_anchor(&self, release: &str) -> Result<Option<Deployment>, BackendError> {
        let known = self.anchors().get(release).cloned();
        if let Some(name) = known {
            let found = self
                .deployments()
                .get_opt(&name)
                .await
                .map_err(|e| classify(self.call("get", "deployments", "apps"), e))?;
            if let Some(found) = found.filter(|d| self.anchors_release(d, release)) {
                return Ok(Some(found));
            }
        }
        self.anchor(release).await
    }

    /// Whether `deployment` is labelled as `release`'s anchor, of this controller.
    fn anchors_release(&self, deployment: &Deployment, release: &str) -> bool {
        let labels = deployment.metadata.labels.as_ref();
        let label = |key: &str| labels.and_then(|l| l.get(key)).map(String::as_str);
        label(keys::CONTROLLER) == Some(self.inner.controller.as_str())
            && label(keys::RELEASE) == Some(release)
            && label(keys::ANCHOR) == Some("true")
    }

    /// The anchor Deployment of `release`, if it has been adopted.
    async fn anchor(&self, release: &str) -> Result<Option<Deployment>, BackendError> {
        let selector = format!(
            "{}={},{}={release},{}=true",
            keys::CONTROLLER,
            self.inner.controller,
            keys::RELEASE,
            keys::ANCHOR
        );
        let mut found = self
            .deployments()
            .list(&ListParams::default().labels(&selector))
            .await
            .map_err(|e| classify(self.call("list", "deployments", "apps"), e))?
            .items;
        match found.len() {
            0 => Ok(None),
            1 => {
                let anchor = found.pop();
                if let Some(name) = anchor.as_ref().and_then(|d| d.metadata.name.clone()) {
                    self.anchors().insert(release.to_string(), name);
                }
                Ok(anchor)
            }
            _ => Err(BackendError::Invalid(format!(
                "release '{release}' has {} anchor Deployments ({}); remove the label {} from \
                 all but the one its release file names",
                found.len(),
                found
                    .iter()
                    .filter_map(|d| d.metadata.name.clone())
                    .collect::<Vec<_>>()
                    .join(", "),
                keys::ANCHOR
            ))),
        }
    }

    /// The names of the colour Deployments of `release` (those cutover made; never the
    /// anchor).
    async fn colours(&self, release: &str) -> Result<Vec<String>, BackendError> {
        let selector = format!(
            "{}={},{}={release},{}",
            keys::CONTROLLER,
            self.inner.controller,
            keys::RELEASE,
            keys::COLOUR
        );
        let found = self
            .deployments()
            .list_metadata(&ListParams::default().labels(&selector))
            .await
            .map_err(|e| classify(self.call("list", "deployments", "apps"), e))?;
        Ok(found
            .items
            .into_iter()
            .filter_map(|d| d.metadata.name)
            .collect())
    }

    /// Refuses to go on without the anchor's record while Deployments of the release run:
    /// adopting the anchor afresh would make it stable again and could apply a candidate
    /// over the Deployment that serves.
    async fn refuse_without_record(&self, release: &str) -> Result<(), BackendError> {
        let running = self.colours(release).await?;
        if running.is_empty() {
            return Ok(());
        }
        Err(BackendError::Unavailable(format!(
            "the record of release '{release}' (the {} annotation and {} label of the \
             Deployment its file names) is gone while its Deployments {} exist: restore the \
             record, or delete those Deployments to start the release afresh",
            keys::SLOTS,
            keys::ANCHOR,
            running.join(", ")
        )))
    }

    /// The anchor and its slots; `None` before the first adoption.
    async fn slots(&self, release: &str) -> Result<Option<(Deployment, Slots)>, BackendError> {
        let Some(anchor) = self.anchor(release).await? else {
            return Ok(None);
        };
        let slots = read_slots(&anchor)?;
        Ok(Some((anchor, slots)))
    }

    /// Rewrites the anchor's annotations with `change`, compare-and-swap on its
    /// `resourceVersion`: on a 409 (the deployment controller or another writer got there
    /// first) reads it again and retries, so `change` always sees what it replaces.
    /// `change` returns whether there is anything to write.
    async fn update_anchor(
        &self,
        release: &str,
        change: impl Fn(&mut BTreeMap<String, String>) -> Result<bool, BackendError>,
    ) -> Result<(), BackendError> {
        for _ in 0..UPDATE_ATTEMPTS {
            let Some(anchor) = self.anchor(release).await? else {
                return Err(BackendError::Invalid(format!(
                    "release '{release}' has no Deployment to keep its record on"
                )));
            };
            let before = anchor.metadata.annotations.clone().unwrap_or_default();
            let mut after = before.clone();
            if !change(&mut after)? {
                return Ok(());
            }
            let mut annotations = serde_json::Map::new();
            for (k, v) in &after {
                if before.get(k) != Some(v) {
                    annotations.insert(k.clone(), v.clone().into());
                }
            }
            for k in before.keys().filter(|k| !after.contains_key(*k)) {
                annotations.insert(k.clone(), Value::Null);
            }
            let patch = json!({ "metadata": {
                "resourceVersion": anchor.metadata.resource_version,
                "annotations": annotations,
            }});
            let name = anchor.metadata.name.clone().unwrap_or_default();
            match self
                .deployments()
                .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                Ok(_) => return Ok(()),
                Err(e) if error::is_conflict(&e) => continue,
                Err(e) => return Err(classify(self.call("patch", "deployments", "apps"), e)),
            }
        }
        Err(BackendError::Unavailable(format!(
            "the record of release '{release}' kept changing while being written"
        )))
    }

    /// Adopts the Deployment the release file names as the stable slot: labels and
    /// annotates it, without touching its pods.
    async fn adopt(
        &self,
        release: &Release,
        target: &KubernetesTarget,
        hint: &str,
    ) -> Result<(), BackendError> {
        let name = &release.metadata.name;
        for _ in 0..UPDATE_ATTEMPTS {
            let Some(found) = self
                .raw_deployments()
                .get_opt(&target.deployment)
                .await
                .map_err(|e| classify(self.call("get", "deployments", "apps"), e))?
            else {
                return Err(BackendError::Invalid(format!(
                    "there is no Deployment '{}' in namespace '{}' to adopt as the stable \
                     version: apply it first (`kubectl apply -f ...`), then start the release",
                    target.deployment, self.inner.namespace
                )));
            };
            let labels = found.metadata.labels.clone().unwrap_or_default();
            if let Some(other) = labels.get(keys::RELEASE) {
                let owner = labels.get(keys::CONTROLLER).map_or("", String::as_str);
                if other != name || owner != self.inner.controller {
                    return Err(BackendError::Invalid(format!(
                        "Deployment '{}' already belongs to release '{other}' of controller \
                         '{owner}'",
                        target.deployment
                    )));
                }
            }
            let value = serde_json::to_value(&found).map_err(|e| {
                BackendError::Unavailable(format!("Deployment '{}': {e}", target.deployment))
            })?;
            template::selector(&value).map_err(|e| BackendError::Invalid(e.to_string()))?;
            check_releasable(&value, &target.deployment, release.spec.port)?;
            let image = template::image(&value, release.spec.port).unwrap_or_default();
            let version = release
                .spec
                .stable_version
                .clone()
                .or_else(|| cutover_core::spec::image_tag(&image).map(str::to_string))
                .unwrap_or_else(|| hint.to_string());
            let slots = Slots {
                port: release.spec.port,
                stable: Some(SlotEntry {
                    deployment: target.deployment.clone(),
                    version: version.clone(),
                }),
                candidate: None,
                previous: None,
            };
            let patch = json!({ "metadata": {
                "resourceVersion": found.metadata.resource_version,
                "labels": {
                    keys::CONTROLLER: self.inner.controller,
                    keys::RELEASE: name,
                    keys::ANCHOR: "true",
                },
                "annotations": { keys::SLOTS: slots.to_text() },
            }});
            match self
                .deployments()
                .patch(
                    &target.deployment,
                    &PatchParams::default(),
                    &Patch::Merge(&patch),
                )
                .await
            {
                Ok(_) => {
                    tracing::info!(deployment = %target.deployment, %version, "adopted as the stable version");
                    return Ok(());
                }
                Err(e) if error::is_conflict(&e) => continue,
                Err(e) => return Err(classify(self.call("patch", "deployments", "apps"), e)),
            }
        }
        Err(BackendError::Unavailable(format!(
            "Deployment '{}' kept changing while being adopted",
            target.deployment
        )))
    }

    /// Applies the headless Service that publishes `deployment`'s pods (server-side apply,
    /// so applying it again changes nothing).
    async fn apply_service(
        &self,
        release: &str,
        deployment: &str,
        selector: &BTreeMap<String, String>,
        port: u16,
    ) -> Result<(), BackendError> {
        let service = template::slot_service(
            deployment,
            &self.inner.namespace,
            &self.inner.controller,
            release,
            selector,
            port,
        );
        let applied = self
            .services()
            .patch(
                &keys::service_name(deployment),
                &PatchParams::apply(keys::FIELD_MANAGER).force(),
                &Patch::Apply(&service),
            )
            .await
            .map_err(|e| classify(self.call("apply", "services", ""), e))?;
        if let Some(uid) = applied.metadata.uid {
            self.service_uids().insert(deployment.to_string(), uid);
        }
        Ok(())
    }

    /// The Deployment as the server's JSON; `None` if it is gone.
    async fn raw_deployment(&self, name: &str) -> Result<Option<Value>, BackendError> {
        let found = self
            .raw_deployments()
            .get_opt(name)
            .await
            .map_err(|e| classify(self.call("get", "deployments", "apps"), e))?;
        found
            .map(|d| {
                serde_json::to_value(&d)
                    .map_err(|e| BackendError::Unavailable(format!("Deployment '{name}': {e}")))
            })
            .transpose()
    }

    /// Removes a slot's workload: the anchor is scaled to zero (it holds the release's
    /// record and is the user's object), a colour Deployment is deleted; the slot's
    /// Service goes too. Gone already is fine. Only objects labelled as this release's are
    /// deleted, and only the very object that was checked (a UID precondition), so a
    /// Deployment of that name made by someone else is never touched.
    async fn remove(
        &self,
        release: &str,
        anchor: &str,
        deployment: &str,
    ) -> Result<(), BackendError> {
        if deployment == anchor {
            let patch = json!({ "spec": { "replicas": 0 } });
            match self
                .deployments()
                .patch(deployment, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                Ok(_) => tracing::info!(%deployment, "scaled to zero"),
                Err(e) if error::is_not_found(&e) => {}
                Err(e) => return Err(classify(self.call("patch", "deployments", "apps"), e)),
            }
        } else if let Some(found) = self.raw_deployment(deployment).await? {
            if self.owns(&found["metadata"], release) {
                // In the foreground: the Deployment stays, being deleted, until its pods
                // are gone, so a candidate of the same colour made next waits for them
                // (see `apply_candidate`) instead of counting them as its own.
                let params = DeleteParams {
                    preconditions: Some(Preconditions {
                        uid: found["metadata"]["uid"].as_str().map(str::to_string),
                        resource_version: None,
                    }),
                    ..DeleteParams::foreground()
                };
                match self.deployments().delete(deployment, &params).await {
                    Ok(_) => tracing::info!(%deployment, "Deployment deleted"),
                    Err(e) if error::is_not_found(&e) || error::is_conflict(&e) => {}
                    Err(e) => {
                        return Err(classify(self.call("delete", "deployments", "apps"), e));
                    }
                }
            } else {
                tracing::warn!(%deployment, "not deleted: it is not this release's");
            }
        }
        let service = keys::service_name(deployment);
        let found = self
            .services()
            .get_opt(&service)
            .await
            .map_err(|e| classify(self.call("get", "services", ""), e))?;
        let Some(found) = found else {
            return Ok(());
        };
        let metadata = serde_json::to_value(&found.metadata).unwrap_or_default();
        if !self.owns(&metadata, release) {
            return Ok(());
        }
        let params = DeleteParams {
            preconditions: Some(Preconditions {
                uid: found.metadata.uid.clone(),
                resource_version: None,
            }),
            ..DeleteParams::background()
        };
        self.service_uids().remove(deployment);
        match self.services().delete(&service, &params).await {
            Ok(_) => Ok(()),
            Err(e) if error::is_not_found(&e) || error::is_conflict(&e) => Ok(()),
            Err(e) => Err(classify(self.call("delete", "services", ""), e)),
        }
    }

    /// Whether an object's `metadata` labels it as `release`'s, of this controller.
    fn owns(&self, metadata: &Value, release: &str) -> bool {
        metadata["labels"][keys::CONTROLLER].as_str() == Some(self.inner.controller.as_str())
            && metadata["labels"][keys::RELEASE].as_str() == Some(release)
    }

    /// Records the candidate on the anchor, then applies its Deployment and Service (in
    /// that order: a controller killed in between finds the candidate by its record, so
    /// nothing it made is unowned). Applying again is harmless, so a retried deploy just
    /// does it again.
    async fn apply_candidate(
        &self,
        release: &Release,
        version: &str,
    ) -> Result<SlotEntry, BackendError> {
        let name = &release.metadata.name;
        let image = release.spec.image.clone().ok_or_else(|| {
            BackendError::Invalid("the kubernetes backend needs the new version's 'image'".into())
        })?;
        let Some((anchor, slots)) = self.slots(name).await? else {
            return Err(BackendError::Invalid(format!(
                "release '{name}' has no stable Deployment to clone"
            )));
        };
        let anchor_name = anchor.metadata.name.clone().unwrap_or_default();
        let Some(stable) = slots.stable.clone() else {
            return Err(BackendError::Invalid(format!(
                "release '{name}' has no stable Deployment to clone"
            )));
        };
        let candidate_name = keys::candidate_name(&anchor_name, &stable.deployment);
        // A candidate of another colour (left by a crash) goes; so does a former stable
        // Deployment of the colour the candidate needs, waiting for its scale-down.
        for slot in [Slot::Candidate, Slot::Previous] {
            if let Some(entry) = slots.get(slot)
                && (slot == Slot::Candidate) != (entry.deployment == candidate_name)
                && !slots.used_elsewhere(slot, &entry.deployment)
            {
                self.remove(name, &anchor_name, &entry.deployment).await?;
                let gone = entry.deployment.clone();
                self.update_anchor(name, |annotations| {
                    let mut slots = annotation_slots(annotations)?;
                    if slots.get(slot).is_some_and(|e| e.deployment == gone) {
                        *slots.get_mut(slot) = None;
                        annotations.insert(keys::SLOTS.into(), slots.to_text());
                        return Ok(true);
                    }
                    Ok(false)
                })
                .await?;
            }
        }
        let Some(source) = self.raw_deployment(&stable.deployment).await? else {
            return Err(BackendError::Unavailable(format!(
                "the stable Deployment '{}' is gone",
                stable.deployment
            )));
        };
        let body = CandidateOf {
            name: &candidate_name,
            namespace: &self.inner.namespace,
            controller: &self.inner.controller,
            release: name,
            version,
            image: &image,
            port: slots.port,
            replicas: release.spec.replicas,
            labels: &release.metadata.labels,
        }
        .deployment(&source)
        .map_err(|e| BackendError::Invalid(e.to_string()))?;
        if body["spec"]["replicas"].as_u64() == Some(0) {
            return Err(BackendError::Invalid(format!(
                "the stable Deployment '{}' runs 0 replicas, so the candidate would too: scale \
                 it up or set spec.replicas",
                stable.deployment
            )));
        }
        // A Deployment of that name being deleted (a candidate of this colour rolled back
        // a moment ago) is waited out: its pods carry the labels the new one selects.
        let deadline = tokio::time::Instant::now() + TERMINATING_WAIT;
        let existing = loop {
            let existing = self.raw_deployment(&candidate_name).await?;
            match &existing {
                Some(d) if !d["metadata"]["deletionTimestamp"].is_null() => {
                    if tokio::time::Instant::now() >= deadline {
                        return Err(BackendError::Unavailable(format!(
                            "Deployment '{candidate_name}' is still being deleted"
                        )));
                    }
                    tokio::time::sleep(POLL).await;
                }
                _ => break existing,
            }
        };
        if let Some(existing) = existing
            && !self.owns(&existing["metadata"], name)
        {
            return Err(BackendError::Invalid(format!(
                "a Deployment named '{candidate_name}' exists and is not release '{name}''s: \
                 cutover names a release's candidates <deployment>-green and -blue; rename or \
                 remove that Deployment"
            )));
        }
        let entry = SlotEntry {
            deployment: candidate_name.clone(),
            version: version.to_string(),
        };
        self.update_anchor(name, |annotations| {
            let mut slots = annotation_slots(annotations)?;
            if slots.candidate.as_ref() == Some(&entry) {
                return Ok(false);
            }
            slots.candidate = Some(entry.clone());
            annotations.insert(keys::SLOTS.into(), slots.to_text());
            Ok(true)
        })
        .await?;
        self.raw_deployments()
            .patch(
                &candidate_name,
                &PatchParams::apply(keys::FIELD_MANAGER).force(),
                &Patch::Apply(&body),
            )
            .await
            .map_err(|e| classify(self.call("apply", "deployments", "apps"), e))?;
        let selector =
            template::selector(&body).map_err(|e| BackendError::Invalid(e.to_string()))?;
        self.apply_service(name, &candidate_name, &selector, slots.port)
            .await?;
        tracing::info!(deployment = %candidate_name, %image, "candidate applied");
        Ok(entry)
    }

    /// Waits until the candidate's Deployment is complete and its endpoints are published,
    /// or Kubernetes says it cannot start.
    async fn wait_ready(
        &self,
        release: &str,
        entry: &SlotEntry,
        port: u16,
    ) -> Result<Readiness, BackendError> {
        let selector = format!(
            "{}={},{}={release},{}={}",
            keys::CONTROLLER,
            self.inner.controller,
            keys::RELEASE,
            keys::COLOUR,
            keys::colour_of(&entry.deployment)
        );
        let mut said = None;
        loop {
            let observed = match self.observe(&entry.deployment, &selector).await {
                Ok(observed) => observed,
                // The API server is away or overloaded: the pods run on regardless, so the
                // wait goes on (the caller bounds it) rather than failing the deploy.
                Err(e) if e.is_retryable() => {
                    let now = e.to_string();
                    if said.as_ref() != Some(&now) {
                        tracing::warn!(deployment = %entry.deployment, error = %now, "cannot see the candidate; still waiting");
                        said = Some(now);
                    }
                    tokio::time::sleep(POLL).await;
                    continue;
                }
                Err(e) => return Err(e),
            };
            let Some((deployment, pods)) = observed else {
                return Ok(Readiness::Failed {
                    reason: format!(
                        "the candidate Deployment '{}' was deleted",
                        entry.deployment
                    ),
                });
            };
            match readiness::assess(&deployment, &pods) {
                Progress::Failed(reason) => return Ok(Readiness::Failed { reason }),
                Progress::Complete { replicas } => {
                    let endpoints = self.slot_endpoints(&entry.deployment, port);
                    if endpoints.len() >= replicas {
                        return Ok(Readiness::Ready(SlotView {
                            version: entry.version.clone(),
                            endpoints,
                        }));
                    }
                    let now = "waiting for the EndpointSlices".to_string();
                    if said.as_ref() != Some(&now) {
                        tracing::info!(deployment = %entry.deployment, "{now}");
                        said = Some(now);
                    }
                }
                Progress::Starting(message) => {
                    if said.as_ref() != Some(&message) {
                        tracing::info!(deployment = %entry.deployment, status = %message, "candidate starting");
                        said = Some(message);
                    }
                }
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// A Deployment and the pods `selector` picks; `None` if the Deployment is gone.
    async fn observe(
        &self,
        deployment: &str,
        selector: &str,
    ) -> Result<Option<(Deployment, Vec<Pod>)>, BackendError> {
        let Some(found) = self
            .deployments()
            .get_opt(deployment)
            .await
            .map_err(|e| classify(self.call("get", "deployments", "apps"), e))?
        else {
            return Ok(None);
        };
        let pods = self
            .pods()
            .list(&ListParams::default().labels(selector))
            .await
            .map_err(|e| classify(self.call("list", "pods", ""), e))?
            .items;
        Ok(Some((found, pods)))
    }

    /// The slot's view from the EndpointSlice cache.
    fn view(&self, entry: &SlotEntry, port: u16) -> SlotView {
        SlotView {
            version: entry.version.clone(),
            endpoints: self.slot_endpoints(&entry.deployment, port),
        }
    }

    /// Looks up the uid of `deployment`'s slot Service if this process has not applied it
    /// (after a restart), so that only its own slices count.
    async fn learn_service_uid(&self, deployment: &str) -> Result<(), BackendError> {
        let known = self.service_uids().contains_key(deployment);
        if known {
            return Ok(());
        }
        let found = self
            .services()
            .get_opt(&keys::service_name(deployment))
            .await
            .map_err(|e| classify(self.call("get", "services", ""), e))?;
        if let Some(uid) = found.and_then(|s| s.metadata.uid) {
            self.service_uids().insert(deployment.to_string(), uid);
        }
        Ok(())
    }

    /// The ready endpoints of `deployment`, from the slices of the Service this process
    /// applied for it (any of that name before it has).
    fn slot_endpoints(&self, deployment: &str, port: u16) -> Vec<String> {
        let uid = self.service_uids().get(deployment).cloned();
        self.inner
            .endpoints
            .endpoints(deployment, port, uid.as_deref())
    }
}

/// What a release of `deployment` (the anchor named `anchor`) needs of it, checked at
/// every submission (not only at adoption): a selector a Service can express, a container
/// that is clearly the service's, and names cutover can make from the anchor's.
fn check_releasable(deployment: &Value, anchor: &str, port: u16) -> Result<(), BackendError> {
    template::selector(deployment).map_err(|e| BackendError::Invalid(e.to_string()))?;
    template::service_container(deployment, port)
        .map_err(|e| BackendError::Invalid(e.to_string()))?;
    // The longest name made from it, a candidate's Service, must be a DNS label, and
    // is a label value too.
    let longest = keys::service_name(&format!("{anchor}-green"));
    if longest.len() > 63 {
        return Err(BackendError::Invalid(format!(
            "Deployment name '{anchor}' is too long for cutover: its candidates' Services \
             ('{longest}') would pass the 63 characters Kubernetes allows; use a Deployment \
             name of at most {} characters",
            63 - (longest.len() - anchor.len())
        )));
    }
    if !anchor
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
    {
        return Err(BackendError::Invalid(format!(
            "Deployment name '{anchor}' cannot name cutover's Services ('{longest}' is not a DNS \
             label): use a name of lowercase letters, digits and '-'"
        )));
    }
    Ok(())
}

/// The slots in an anchor's annotations.
fn read_slots(anchor: &Deployment) -> Result<Slots, BackendError> {
    annotation_slots(&anchor.metadata.annotations.clone().unwrap_or_default())
}

fn annotation_slots(annotations: &BTreeMap<String, String>) -> Result<Slots, BackendError> {
    match annotations.get(keys::SLOTS) {
        None => Ok(Slots::default()),
        Some(text) => Slots::parse(text).map_err(|e| {
            BackendError::Invalid(format!(
                "the annotation {} on the release's Deployment is not readable ({e}); restore \
                 it, or remove it to adopt the Deployment afresh",
                keys::SLOTS
            ))
        }),
    }
}

/// The revision of the stored state: `None` without a state.
fn stored_revision(annotations: &BTreeMap<String, String>) -> Option<u64> {
    annotations.get(keys::STATE)?;
    Some(
        annotations
            .get(keys::REVISION)
            .and_then(|r| r.parse().ok())
            .unwrap_or(0),
    )
}

impl Backend for KubeBackend {
    fn kind(&self) -> &'static str {
        "kubernetes"
    }

    fn endpoint_refresh(&self) -> Duration {
        // The endpoints come from the watched cache; what is asked for each time is the
        // anchor's record.
        Duration::from_secs(1)
    }

    fn stable<'a>(
        &'a self,
        release: &'a Release,
        version: &'a str,
    ) -> BoxFuture<'a, Result<SlotView, BackendError>> {
        Box::pin(async move {
            let target = self.target(release)?;
            let name = &release.metadata.name;
            let _guard = self.inner.locks.lock(name).await;
            let (anchor, slots) = match self.slots(name).await? {
                Some((anchor, slots)) if slots.stable.is_some() => (anchor, slots),
                _ => {
                    self.refuse_without_record(name).await?;
                    self.adopt(release, target, version).await?;
                    self.slots(name).await?.ok_or_else(|| {
                        BackendError::Unavailable(format!(
                            "Deployment '{}' lost its labels",
                            target.deployment
                        ))
                    })?
                }
            };
            let anchor_name = anchor.metadata.name.clone().unwrap_or_default();
            if anchor_name != target.deployment {
                return Err(BackendError::Invalid(format!(
                    "release '{name}' is anchored on Deployment '{anchor_name}', but its file \
                     names '{}'",
                    target.deployment
                )));
            }
            let Some(stable) = slots.stable.clone() else {
                return Err(BackendError::Unavailable(format!(
                    "release '{name}' lost its stable slot"
                )));
            };
            let Some(found) = self.raw_deployment(&stable.deployment).await? else {
                return Err(BackendError::Invalid(format!(
                    "the stable Deployment '{}' of release '{name}' is gone",
                    stable.deployment
                )));
            };
            check_releasable(&found, &anchor_name, release.spec.port)?;
            let selector =
                template::selector(&found).map_err(|e| BackendError::Invalid(e.to_string()))?;
            self.apply_service(name, &stable.deployment, &selector, slots.port)
                .await?;
            // A fresh Service's slices take a moment: wait for them if there are pods to
            // show, so the first route is not empty.
            self.inner.endpoints.ready(ENDPOINTS_WAIT).await;
            let available = found["status"]["availableReplicas"].as_u64().unwrap_or(0);
            let deadline = tokio::time::Instant::now() + ENDPOINTS_WAIT;
            let mut view = self.view(&stable, slots.port);
            while available > 0
                && view.endpoints.is_empty()
                && tokio::time::Instant::now() < deadline
            {
                tokio::time::sleep(Duration::from_millis(100)).await;
                view = self.view(&stable, slots.port);
            }
            Ok(view)
        })
    }

    fn deploy<'a>(
        &'a self,
        release: &'a Release,
        version: &'a str,
    ) -> BoxFuture<'a, Result<Readiness, BackendError>> {
        Box::pin(async move {
            self.target(release)?;
            // The writes run as a task of their own, holding the release's lock: if the
            // caller cancels this deploy (to retire the candidate), an apply already sent
            // completes before the retire looks.
            let backend = self.clone();
            let owned_release = release.clone();
            let owned_version = version.to_string();
            let guard = self.inner.locks.lock(&release.metadata.name).await;
            let applied = tokio::spawn(
                async move {
                    let _guard = guard;
                    backend
                        .apply_candidate(&owned_release, &owned_version)
                        .await
                }
                .in_current_span(),
            )
            .await
            .map_err(|e| BackendError::Unavailable(format!("the deploy task failed: {e}")))?;
            let entry = applied?;
            self.wait_ready(&release.metadata.name, &entry, release.spec.port)
                .await
        })
    }

    fn endpoints<'a>(
        &'a self,
        release: &'a str,
        slot: Slot,
    ) -> BoxFuture<'a, Result<Option<SlotView>, BackendError>> {
        Box::pin(async move {
            let Some(anchor) = self.known_anchor(release).await? else {
                // The anchor is gone (deleted, pruned, relabelled) and with it the record
                // of which Deployment serves: while Deployments of the release still run,
                // that is an error to retry, so the proxy keeps its last endpoints instead
                // of routing the release to nothing.
                self.refuse_without_record(release).await?;
                return Ok(None);
            };
            let slots = read_slots(&anchor)?;
            let Some(entry) = slots.get(slot) else {
                return Ok(None);
            };
            self.learn_service_uid(&entry.deployment).await?;
            Ok(Some(self.view(entry, slots.port)))
        })
    }

    fn recover<'a>(&'a self, release: &'a str) -> BoxFuture<'a, Result<(), BackendError>> {
        // Kubernetes supervises the pods and the anchor says which Deployment plays which
        // slot; what is left is the fence: the state is written again one revision up, so
        // a write a dead controller still had in flight (against the old resourceVersion
        // and revision) is refused, and a controller that is not dead after all fails its
        // next compare-and-swap instead of writing over this one.
        Box::pin(async move {
            let _guard = self.inner.locks.lock(release).await;
            self.update_anchor(release, |annotations| {
                let Some(revision) = fenced(stored_revision(annotations)) else {
                    return Ok(false);
                };
                annotations.insert(keys::REVISION.into(), revision.to_string());
                annotations.insert(keys::WRITER.into(), self.inner.writer.clone());
                Ok(true)
            })
            .await
        })
    }

    fn promote<'a>(&'a self, release: &'a str) -> BoxFuture<'a, Result<(), BackendError>> {
        Box::pin(async move {
            let _guard = self.inner.locks.lock(release).await;
            let Some((_, slots)) = self.slots(release).await? else {
                return Err(BackendError::Invalid(format!(
                    "release '{release}' has no Deployments to promote"
                )));
            };
            if slots.candidate.is_none() {
                return if slots.stable.is_some() {
                    Ok(())
                } else {
                    Err(BackendError::Invalid(format!(
                        "release '{release}' has no candidate to promote"
                    )))
                };
            }
            self.update_anchor(release, |annotations| {
                let mut slots = annotation_slots(annotations)?;
                if !slots.promote() {
                    return Ok(false);
                }
                annotations.insert(keys::SLOTS.into(), slots.to_text());
                Ok(true)
            })
            .await?;
            tracing::info!(
                release,
                "promoted: the candidate Deployment is the stable one"
            );
            Ok(())
        })
    }

    fn retire<'a>(
        &'a self,
        release: &'a str,
        slot: Slot,
    ) -> BoxFuture<'a, Result<(), BackendError>> {
        Box::pin(async move {
            let _guard = self.inner.locks.lock(release).await;
            let Some((anchor, slots)) = self.slots(release).await? else {
                // Without the record, what the slot was is unknown: retried until the
                // record is restored, rather than leaving a candidate running unsaid.
                return self.refuse_without_record(release).await;
            };
            let Some(entry) = slots.get(slot).cloned() else {
                return Ok(());
            };
            let anchor_name = anchor.metadata.name.clone().unwrap_or_default();
            if !slots.used_elsewhere(slot, &entry.deployment) {
                self.remove(release, &anchor_name, &entry.deployment)
                    .await?;
            }
            self.update_anchor(release, |annotations| {
                let mut slots = annotation_slots(annotations)?;
                if slots.get(slot) != Some(&entry) {
                    return Ok(false);
                }
                *slots.get_mut(slot) = None;
                annotations.insert(keys::SLOTS.into(), slots.to_text());
                Ok(true)
            })
            .await
        })
    }

    fn load_state<'a>(
        &'a self,
        release: &'a str,
    ) -> BoxFuture<'a, Result<Option<Stored>, BackendError>> {
        Box::pin(async move {
            let Some(anchor) = self.anchor(release).await? else {
                return Ok(None);
            };
            let annotations = anchor.metadata.annotations.unwrap_or_default();
            let (Some(revision), Some(text)) =
                (stored_revision(&annotations), annotations.get(keys::STATE))
            else {
                return Ok(None);
            };
            let state = serde_json::from_str(text).map_err(|e| {
                BackendError::Invalid(format!(
                    "the rollout state in the annotation {} of Deployment '{}' is not JSON \
                     ({e}); remove it to start afresh",
                    keys::STATE,
                    anchor.metadata.name.unwrap_or_default()
                ))
            })?;
            Ok(Some(Stored {
                version: revision,
                state,
            }))
        })
    }

    fn store_state<'a>(
        &'a self,
        release: &'a str,
        state: &'a serde_json::Value,
        expected: Option<u64>,
    ) -> BoxFuture<'a, Result<u64, BackendError>> {
        Box::pin(async move {
            let text = serde_json::to_string(state)
                .map_err(|e| BackendError::Invalid(format!("the state is not JSON: {e}")))?;
            let revision = expected.unwrap_or(0) + 1;
            let _guard = self.inner.locks.lock(release).await;
            self.update_anchor(release, |annotations| {
                let held = Held {
                    revision: stored_revision(annotations),
                    text: annotations.get(keys::STATE).map(String::as_str),
                    writer: annotations.get(keys::WRITER).map(String::as_str),
                };
                let write = Request {
                    expected,
                    text: &text,
                    writer: &self.inner.writer,
                };
                match decide(held, write) {
                    Decision::Replay { .. } => Ok(false),
                    Decision::Conflict => Err(BackendError::Conflict {
                        release: release.to_string(),
                    }),
                    Decision::Write { revision } => {
                        annotations.insert(keys::STATE.into(), text.clone());
                        annotations.insert(keys::REVISION.into(), revision.to_string());
                        annotations.insert(keys::WRITER.into(), self.inner.writer.clone());
                        Ok(true)
                    }
                }
            })
            .await?;
            Ok(revision)
        })
    }

    fn releases(&self) -> BoxFuture<'_, Result<Vec<String>, BackendError>> {
        Box::pin(async move {
            let selector = format!(
                "{}={},{}=true",
                keys::CONTROLLER,
                self.inner.controller,
                keys::ANCHOR
            );
            let anchors = self
                .deployments()
                .list(&ListParams::default().labels(&selector))
                .await
                .map_err(|e| classify(self.call("list", "deployments", "apps"), e))?
                .items;
            let mut names: Vec<String> = anchors
                .iter()
                .filter(|d| {
                    d.metadata
                        .annotations
                        .as_ref()
                        .is_some_and(|a| a.contains_key(keys::STATE))
                })
                .filter_map(|d| d.metadata.labels.as_ref()?.get(keys::RELEASE).cloned())
                .collect();
            names.sort();
            names.dedup();
            Ok(names)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn revisions_read_from_annotations() {
        let mut a = BTreeMap::new();
        assert_eq!(stored_revision(&a), None);
        a.insert(keys::STATE.to_string(), "{}".to_string());
        assert_eq!(stored_revision(&a), Some(0));
        a.insert(keys::REVISION.to_string(), "7".to_string());
        assert_eq!(stored_revision(&a), Some(7));
    }
}
