//! [`SwarmBackend`]: the [`Backend`] trait on a Docker Swarm manager.

use std::sync::Arc;
use std::time::Duration;

use cutover_backend::revision::{Decision, Held, Request, decide, target_of};
use cutover_backend::{
    Backend, BackendError, BoxFuture, Readiness, ReleaseLocks, Slot, SlotView, Stored,
};
use cutover_core::spec::{Backend as BackendSpec, Release, SwarmTarget};
use serde_json::{Map, Value};
use tracing::Instrument;

use crate::clone::{self, CandidateOf};
use crate::error::api;
use crate::labels::{self, Managed, Role, SlotLabels, Slots};
use crate::raw::{self, Endpoint, RawClient};
use crate::tasks::{self, Progress, TaskRecord};

mod lifecycle;
mod state;

/// How often a deploy looks at the candidate's tasks.
const POLL: Duration = Duration::from_millis(250);
/// How long one Docker API call may take.
const CALL_TIMEOUT: u64 = 30;
/// Attempts at a compare-and-swap label update that loses to Swarm's own writes.
const UPDATE_ATTEMPTS: usize = 5;

/// The Swarm backend. Cheap to clone: clones share the Docker client and one set of
/// per-release locks.
#[derive(Clone)]
pub struct SwarmBackend {
    inner: Arc<Inner>,
}

struct Inner {
    /// The engine's API, as JSON.
    raw: RawClient,
    /// This controller's name (see `labels::CONTROLLER`).
    controller: String,
    /// One lock per release: operations that change a release's services hold it.
    locks: ReleaseLocks,
    /// This process among the controller's writers (see `labels::WRITER`).
    writer: String,
}

/// Why the backend could not start.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// No engine answered at `DOCKER_HOST` (or the default socket).
    #[error("cannot reach the Docker engine at {host}: {source}")]
    Unreachable {
        /// Where it was looked for.
        host: String,
        /// What the client said.
        source: raw::ApiError,
    },
    /// `DOCKER_HOST` names a scheme the backend does not speak.
    #[error(
        "DOCKER_HOST={0} is not supported: use unix:///path/to/docker.sock, tcp://host:port or \
         http://host:port (TLS and ssh:// are not; tunnel them to a local socket)"
    )]
    Scheme(String),
    /// The controller's name is empty.
    #[error("the controller's name (--name) must not be empty")]
    Name,
    /// The engine answers but cannot manage services.
    #[error(
        "the Docker engine at {host} is not a Swarm manager ({state}): run `docker swarm init`, \
         or point DOCKER_HOST at a manager node"
    )]
    NotManager {
        /// Where it was found.
        host: String,
        /// The node's Swarm state.
        state: String,
    },
}

impl SwarmBackend {
    /// Connects to the engine named by `DOCKER_HOST` (`unix://`, `tcp://` or `http://`;
    /// the local socket by default), settles on an API version both sides speak, and
    /// checks that the engine is a Swarm manager. `controller` names this controller: it
    /// drives and resumes only the releases labelled with its name.
    pub async fn connect(controller: &str) -> Result<SwarmBackend, ConnectError> {
        let host = std::env::var("DOCKER_HOST")
            .ok()
            .filter(|h| !h.trim().is_empty())
            .unwrap_or_else(|| "unix:///var/run/docker.sock".to_string());
        if controller.trim().is_empty() {
            return Err(ConnectError::Name);
        }
        let endpoint = Endpoint::parse(&host).ok_or_else(|| ConnectError::Scheme(host.clone()))?;
        let unreachable = |source| ConnectError::Unreachable {
            host: host.clone(),
            source,
        };
        let raw = RawClient::negotiate(endpoint, Duration::from_secs(CALL_TIMEOUT))
            .await
            .map_err(unreachable)?;
        let info = raw.get("/info").await.map_err(unreachable)?;
        let swarm = &info["Swarm"];
        if swarm["ControlAvailable"].as_bool() != Some(true) {
            let state = swarm["LocalNodeState"]
                .as_str()
                .map_or_else(|| "no Swarm".to_string(), |s| format!("node state {s}"));
            return Err(ConnectError::NotManager { host, state });
        }
        tracing::info!(%host, api = %raw.version(), "connected to the Swarm manager");
        Ok(SwarmBackend {
            inner: Arc::new(Inner {
                raw,
                controller: controller.to_string(),
                locks: ReleaseLocks::default(),
                writer: cutover_backend::writer_id(),
            }),
        })
    }

    fn raw(&self) -> &RawClient {
        &self.inner.raw
    }

    async fn lock(&self, release: &str) -> tokio::sync::OwnedMutexGuard<()> {
        self.inner.locks.lock(release).await
    }

    /// The services of this controller that also carry the label `key` (with `value`, if
    /// given), as the API lists them. Asked twice, once under the new names and once under
    /// the names older versions wrote (see [`labels::LEGACY_PREFIX`]): a release an older
    /// controller labelled is found until its services are written again.
    async fn services_labelled(
        &self,
        key: &str,
        value: Option<&str>,
    ) -> Result<Vec<Value>, BackendError> {
        let mut found: Vec<Value> = Vec::new();
        for (key, controller) in [
            (key.to_string(), labels::CONTROLLER.to_string()),
            (labels::legacy(key), labels::legacy(labels::CONTROLLER)),
        ] {
            let label = match value {
                Some(value) => format!("{key}={value}"),
                None => key,
            };
            let filters = serde_json::json!({
                "label": [label, format!("{controller}={}", self.inner.controller)]
            });
            let listed = self
                .raw()
                .get(&format!(
                    "/services?filters={}",
                    raw::encode(&filters.to_string())
                ))
                .await
                .map_err(|e| api("list services", e))?;
            let Value::Array(services) = listed else {
                return Err(BackendError::Unavailable(format!(
                    "docker: the service list is not a list: {listed}"
                )));
            };
            for service in services {
                if !found.iter().any(|f| f["ID"] == service["ID"]) {
                    found.push(service);
                }
            }
        }
        Ok(found)
    }

    /// Every service labelled as `release`'s by this controller, sorted into slots.
    async fn slots(&self, release: &str) -> Result<Slots, BackendError> {
        let services = self
            .services_labelled(labels::RELEASE, Some(release))
            .await?;
        Ok(Slots::sort(
            services.iter().filter_map(Managed::from_service).collect(),
        ))
    }

    /// A service as the API gives it (`ID`, `Version`, `Spec`, ...); `None` if missing.
    async fn inspect(&self, service: &str) -> Result<Option<Value>, BackendError> {
        match self.raw().get(&format!("/services/{service}")).await {
            Ok(found) => Ok(Some(found)),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(api(&format!("inspect service '{service}'"), e)),
        }
    }

    /// The service's tasks, current and recent, with their network attachments.
    async fn tasks(&self, service_id: &str) -> Result<Vec<TaskRecord>, BackendError> {
        let filters = serde_json::json!({ "service": [service_id] });
        let value = self
            .raw()
            .get(&format!(
                "/tasks?filters={}",
                raw::encode(&filters.to_string())
            ))
            .await
            .map_err(|e| api("list tasks", e))?;
        serde_json::from_value(value).map_err(|e| {
            BackendError::Unavailable(format!("docker: the task list cannot be read: {e}"))
        })
    }

    async fn view(&self, service: &Managed) -> Result<SlotView, BackendError> {
        let tasks = self.tasks(&service.id).await?;
        Ok(SlotView {
            version: service.version.clone(),
            endpoints: tasks::endpoints(&tasks, &service.network, service.port),
        })
    }

    /// Rewrites a service's labels with `change`, compare-and-swap on the service's
    /// version: when Swarm or someone else updated the service in between, reads it
    /// again and retries, so `change` always sees the labels it replaces. `change` returns
    /// whether there is anything to write. Nothing but the labels changes: the spec goes
    /// back exactly as it was read, so the service's tasks are not touched. Labels an older
    /// version wrote are moved to their new names in the same update (see
    /// [`labels::upgrade`]), so `change` sees only new names.
    async fn update_labels(
        &self,
        service_id: &str,
        change: impl Fn(&mut Map<String, Value>) -> Result<bool, BackendError>,
    ) -> Result<(), BackendError> {
        let mut last = None;
        for _ in 0..UPDATE_ATTEMPTS {
            let Some(mut service) = self.inspect(service_id).await? else {
                return Err(BackendError::Unavailable(format!(
                    "service {service_id} disappeared while its labels were being written"
                )));
            };
            let index = service["Version"]["Index"].as_u64().unwrap_or_default();
            let Some(spec) = service.get_mut("Spec").and_then(Value::as_object_mut) else {
                return Err(BackendError::Unavailable(format!(
                    "service {service_id} came without a spec"
                )));
            };
            let labels = clone::labels_of(spec);
            labels::upgrade(labels);
            if !change(labels)? {
                return Ok(());
            }
            let path = format!("/services/{service_id}/update?version={index}");
            match self.raw().post(&path, &service["Spec"]).await {
                Ok(_) => return Ok(()),
                Err(e) if e.is_out_of_sequence() => last = Some(e),
                Err(e) if e.is_not_found() => {
                    return Err(BackendError::Unavailable(format!(
                        "service {service_id} disappeared while its labels were being written"
                    )));
                }
                Err(e) => return Err(api("update service labels", e)),
            }
        }
        Err(last.map_or_else(
            || BackendError::Unavailable("service update kept losing races".into()),
            |e| api("update service labels", e),
        ))
    }

    async fn remove(&self, service: &Managed) -> Result<(), BackendError> {
        match self
            .raw()
            .delete(&format!("/services/{}", service.id))
            .await
        {
            Ok(()) => {
                tracing::info!(service = %service.name, "service removed");
                Ok(())
            }
            Err(e) if e.is_not_found() => Ok(()),
            Err(e) => Err(api(&format!("remove service '{}'", service.name), e)),
        }
    }
}

/// Tasks wanted of a service (its `Spec`): its replicas, `None` when global.
fn wanted(spec: &Value) -> Option<usize> {
    clone::replicas(spec).map(|r| usize::try_from(r).unwrap_or(usize::MAX))
}

fn swarm_target(release: &Release) -> Result<&SwarmTarget, BackendError> {
    target_of(release, "Docker Swarm", |spec| match spec {
        BackendSpec::Swarm(target) => Some(target),
        _ => None,
    })
}

impl Backend for SwarmBackend {
    fn kind(&self) -> &'static str {
        "swarm"
    }

    fn endpoint_refresh(&self) -> Duration {
        Duration::from_secs(2)
    }

    fn stable<'a>(
        &'a self,
        release: &'a Release,
        version: &'a str,
    ) -> BoxFuture<'a, Result<SlotView, BackendError>> {
        Box::pin(async move {
            let target = swarm_target(release)?;
            let _guard = self.lock(&release.metadata.name).await;
            let stable = match self.slots(&release.metadata.name).await?.stable {
                Some(stable) => stable,
                None => self.adopt(release, target, version).await?,
            };
            self.view(&stable).await
        })
    }

    fn deploy<'a>(
        &'a self,
        release: &'a Release,
        version: &'a str,
    ) -> BoxFuture<'a, Result<Readiness, BackendError>> {
        Box::pin(async move {
            swarm_target(release)?;
            // The creation runs as a task of its own, holding the release's lock: if the
            // caller cancels this deploy (to retire the candidate), a create request
            // already sent still completes before the retire can look for the service.
            let backend = self.clone();
            let owned_release = release.clone();
            let owned_version = version.to_string();
            let guard = self.lock(&release.metadata.name).await;
            let created = tokio::spawn(
                async move {
                    let _guard = guard;
                    backend
                        .create_candidate(&owned_release, &owned_version)
                        .await
                }
                .in_current_span(),
            )
            .await
            .map_err(|e| BackendError::Unavailable(format!("the deploy task failed: {e}")))?;
            let (candidate, wanted) = created?;
            self.wait_ready(&candidate, wanted).await
        })
    }

    fn endpoints<'a>(
        &'a self,
        release: &'a str,
        slot: Slot,
    ) -> BoxFuture<'a, Result<Option<SlotView>, BackendError>> {
        Box::pin(async move {
            let slots = self.slots(release).await?;
            match slots.get(slot) {
                Some(service) => Ok(Some(self.view(service).await?)),
                None => Ok(None),
            }
        })
    }

    fn recover<'a>(&'a self, release: &'a str) -> BoxFuture<'a, Result<(), BackendError>> {
        // Swarm supervises the tasks and the labels say which service plays which slot;
        // what is left is the fence (see `labels::FENCE`): every service of the release
        // gets a new version index, so a write a dead controller still had in flight (made
        // against the old index) is refused; and the state is written again one revision
        // up, so a controller that is not dead after all fails its next compare-and-swap
        // instead of writing over this one. A write that landed during the fence is read
        // and fenced again.
        Box::pin(async move {
            let _guard = self.lock(release).await;
            let mut attempts = 0;
            loop {
                attempts += 1;
                let slots = self.slots(release).await?;
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_millis())
                    .to_string();
                for service in slots.all() {
                    self.update_labels(&service.id, |labels| {
                        labels.insert(labels::FENCE.into(), now.clone().into());
                        Ok(true)
                    })
                    .await?;
                }
                let Some((revision, state)) = slots.state_holder().and_then(|h| h.state.clone())
                else {
                    return Ok(());
                };
                match self.store_locked(release, &state, Some(revision)).await {
                    Ok(_) => return Ok(()),
                    Err(BackendError::Conflict { .. }) if attempts < 3 => continue,
                    Err(e) => return Err(e),
                }
            }
        })
    }

    fn promote<'a>(&'a self, release: &'a str) -> BoxFuture<'a, Result<(), BackendError>> {
        Box::pin(async move {
            let _guard = self.lock(release).await;
            let slots = self.slots(release).await?;
            let Some(candidate) = slots.candidate else {
                return if slots.stable.is_some() {
                    // Promoted already: the candidate's role is `stable`.
                    Ok(())
                } else {
                    Err(BackendError::Invalid(format!(
                        "release '{release}' has no candidate to promote"
                    )))
                };
            };
            self.update_labels(&candidate.id, |labels| {
                labels.insert(labels::ROLE.into(), Role::Stable.as_str().into());
                Ok(true)
            })
            .await?;
            tracing::info!(service = %candidate.name, "promoted: the candidate service is the stable one");
            Ok(())
        })
    }

    fn retire<'a>(
        &'a self,
        release: &'a str,
        slot: Slot,
    ) -> BoxFuture<'a, Result<(), BackendError>> {
        Box::pin(async move {
            let _guard = self.lock(release).await;
            let slots = self.slots(release).await?;
            let targets: Vec<&Managed> = match slot {
                Slot::Stable => slots.stable.iter().collect(),
                Slot::Candidate => slots
                    .candidate
                    .iter()
                    .chain(slots.previous.iter().filter(|m| m.role == Role::Candidate))
                    .collect(),
                Slot::Previous => slots.previous.iter().collect(),
            };
            // The state stays: if it is on a service about to go, it moves first.
            if let Some(holder) = slots.state_holder()
                && targets.iter().any(|t| t.id == holder.id)
                && let Some(keeper) = slots
                    .stable
                    .iter()
                    .chain(slots.all())
                    .find(|m| !targets.iter().any(|t| t.id == m.id))
            {
                self.move_state(holder, keeper).await?;
            }
            for service in targets {
                self.remove(service).await?;
            }
            Ok(())
        })
    }

    fn load_state<'a>(
        &'a self,
        release: &'a str,
    ) -> BoxFuture<'a, Result<Option<Stored>, BackendError>> {
        Box::pin(async move {
            let slots = self.slots(release).await?;
            let Some(holder) = slots.state_holder() else {
                return Ok(None);
            };
            let Some((revision, text)) = &holder.state else {
                return Ok(None);
            };
            let state = serde_json::from_str(text).map_err(|e| {
                BackendError::Invalid(format!(
                    "the rollout state in the labels of service '{}' is not JSON ({e}); \
                     remove the label {} to start afresh",
                    holder.name,
                    labels::STATE
                ))
            })?;
            Ok(Some(Stored {
                version: *revision,
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
            let _guard = self.lock(release).await;
            self.store_locked(release, &text, expected).await
        })
    }

    fn releases(&self) -> BoxFuture<'_, Result<Vec<String>, BackendError>> {
        Box::pin(async move {
            let mut names: Vec<String> = self
                .services_labelled(labels::STATE, None)
                .await?
                .iter()
                .filter_map(|s| labels::read(&s["Spec"]["Labels"], labels::RELEASE))
                .map(str::to_string)
                .collect();
            names.sort();
            names.dedup();
            Ok(names)
        })
    }
}
