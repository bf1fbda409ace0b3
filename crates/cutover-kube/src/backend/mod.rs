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

use cutover_backend::revision::{Decision, Held, Request, decide, fenced, target_of};
use cutover_backend::{
    Backend, BackendError, BoxFuture, Readiness, ReleaseLocks, Slot, SlotView, Stored,
};
use cutover_core::spec::{Backend as BackendSpec, KubernetesTarget, Release};
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

mod lifecycle;
mod record;

use lifecycle::check_releasable;
use record::{anchor_annotations, annotation_slots, read_slots, stored_revision};

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
            self.wait_ready(&entry, release.spec.port).await
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
            let annotations = anchor_annotations(&anchor);
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
            let controller = &self.inner.controller;
            let anchors = self
                .list_both(|d| {
                    format!(
                        "{}={controller},{}=true",
                        d.key(keys::CONTROLLER),
                        d.key(keys::ANCHOR)
                    )
                })
                .await?;
            let mut names: Vec<String> = anchors
                .iter()
                .filter(|d| anchor_annotations(d).contains_key(keys::STATE))
                .filter_map(|d| {
                    Some(keys::read(d.metadata.labels.as_ref()?, keys::RELEASE)?.to_string())
                })
                .collect();
            names.sort();
            names.dedup();
            Ok(names)
        })
    }
}
