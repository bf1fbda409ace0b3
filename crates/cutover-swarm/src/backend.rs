//! [`SwarmBackend`]: the [`Backend`] trait on a Docker Swarm manager.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bollard::Docker;
use bollard::models::{Service, ServiceSpec};
use bollard::query_parameters::{
    InspectServiceOptions, ListServicesOptionsBuilder, UpdateServiceOptionsBuilder,
};
use cutover_backend::{Backend, BackendError, BoxFuture, Readiness, Slot, SlotView, Stored};
use cutover_core::spec::{Backend as BackendSpec, Release, SwarmTarget};
use tracing::Instrument;

use crate::clone::CandidateOf;
use crate::error::{Classify, docker};
use crate::labels::{self, Managed, Role, SlotLabels, Slots};
use crate::raw::{self, Endpoint, RawClient};
use crate::tasks::{self, Progress, TaskRecord};

/// How often a deploy looks at the candidate's tasks.
const POLL: Duration = Duration::from_millis(250);
/// How long one Docker API call may take.
const CALL_TIMEOUT: u64 = 30;
/// Attempts at a compare-and-swap label update that loses to Swarm's own writes.
const UPDATE_ATTEMPTS: usize = 5;

/// The Swarm backend. Cheap to clone: clones share one connection pool and one set of
/// per-release locks.
#[derive(Clone)]
pub struct SwarmBackend {
    inner: Arc<Inner>,
}

struct Inner {
    docker: Docker,
    /// For the task list with its network attachments.
    raw: RawClient,
    /// This controller's name (see `labels::CONTROLLER`).
    controller: String,
    /// One lock per release: operations that change a release's services hold it.
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
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
        source: bollard::errors::Error,
    },
    /// `DOCKER_HOST` names a scheme the backend does not speak.
    #[error(
        "DOCKER_HOST={0} is not supported: use unix:///path/to/docker.sock, tcp://host:port or http://host:port"
    )]
    Scheme(String),
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
            .unwrap_or_else(|_| "unix:///var/run/docker.sock".to_string());
        let unreachable = |source| ConnectError::Unreachable {
            host: host.clone(),
            source,
        };
        let docker = Docker::connect_with_host(&host).map_err(unreachable)?;
        let endpoint = Endpoint::parse(&host).ok_or_else(|| ConnectError::Scheme(host.clone()))?;
        let docker = docker
            .with_timeout(Duration::from_secs(CALL_TIMEOUT))
            .negotiate_version()
            .await
            .map_err(unreachable)?;
        let info = docker.info().await.map_err(unreachable)?;
        let swarm = info.swarm.unwrap_or_default();
        if swarm.control_available != Some(true) {
            let state = swarm
                .local_node_state
                .map_or_else(|| "no Swarm".to_string(), |s| format!("node state {s}"));
            return Err(ConnectError::NotManager { host, state });
        }
        tracing::info!(%host, api = %docker.client_version(), "connected to the Swarm manager");
        let raw = RawClient::new(
            endpoint,
            docker.client_version().to_string(),
            Duration::from_secs(CALL_TIMEOUT),
        );
        Ok(SwarmBackend {
            inner: Arc::new(Inner {
                docker,
                raw,
                controller: controller.to_string(),
                locks: Mutex::new(HashMap::new()),
            }),
        })
    }

    fn docker(&self) -> &Docker {
        &self.inner.docker
    }

    async fn lock(&self, release: &str) -> tokio::sync::OwnedMutexGuard<()> {
        let lock = {
            let mut locks = self
                .inner
                .locks
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            locks.entry(release.to_string()).or_default().clone()
        };
        lock.lock_owned().await
    }

    /// Every service labelled as `release`'s, sorted into slots.
    async fn slots(&self, release: &str) -> Result<Slots, BackendError> {
        let filters = HashMap::from([(
            "label".to_string(),
            vec![
                format!("{}={release}", labels::RELEASE),
                format!("{}={}", labels::CONTROLLER, self.inner.controller),
            ],
        )]);
        let services = self
            .docker()
            .list_services(Some(
                ListServicesOptionsBuilder::default()
                    .filters(&filters)
                    .build(),
            ))
            .await
            .map_err(|e| docker("list the release's services", e))?;
        Ok(Slots::sort(
            services.iter().filter_map(Managed::from_service).collect(),
        ))
    }

    async fn inspect(&self, service: &str) -> Result<Option<Service>, BackendError> {
        match self
            .docker()
            .inspect_service(service, None::<InspectServiceOptions>)
            .await
        {
            Ok(found) => Ok(Some(found)),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(docker(&format!("inspect service '{service}'"), e)),
        }
    }

    /// The service's tasks, current and recent, with their network attachments.
    async fn tasks(&self, service_id: &str) -> Result<Vec<TaskRecord>, BackendError> {
        let filters = raw::encode(&format!(r#"{{"service":["{service_id}"]}}"#));
        let value = self
            .inner
            .raw
            .get_json(&format!("/tasks?filters={filters}"))
            .await?;
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
    /// again and retries, so `change` always sees the labels it replaces.
    async fn update_labels(
        &self,
        service_id: &str,
        change: impl Fn(&mut HashMap<String, String>) -> Result<(), BackendError>,
    ) -> Result<(), BackendError> {
        let mut last = None;
        for _ in 0..UPDATE_ATTEMPTS {
            let Some(service) = self.inspect(service_id).await? else {
                return Err(BackendError::Unavailable(format!(
                    "service {service_id} disappeared while its labels were being written"
                )));
            };
            let index = service.version.and_then(|v| v.index).unwrap_or_default();
            let mut spec = service.spec.unwrap_or_default();
            let mut labels = spec.labels.take().unwrap_or_default();
            change(&mut labels)?;
            spec.labels = Some(labels);
            match self.update(service_id, spec, index).await {
                Err(e) if e.is_out_of_sequence() => last = Some(e),
                other => return other.map_err(|e| docker("update service labels", e)),
            }
        }
        Err(last.map_or_else(
            || BackendError::Unavailable("service update kept losing races".into()),
            |e| docker("update service labels", e),
        ))
    }

    async fn update(
        &self,
        service_id: &str,
        spec: ServiceSpec,
        index: u64,
    ) -> Result<(), bollard::errors::Error> {
        let version = i32::try_from(index).unwrap_or(i32::MAX);
        self.docker()
            .update_service(
                service_id,
                spec,
                UpdateServiceOptionsBuilder::default()
                    .version(version)
                    .build(),
                None,
            )
            .await
            .map(|_| ())
    }

    async fn remove(&self, service: &Managed) -> Result<(), BackendError> {
        match self.docker().delete_service(&service.id).await {
            Ok(()) => {
                tracing::info!(service = %service.name, "service removed");
                Ok(())
            }
            Err(e) if e.is_not_found() => Ok(()),
            Err(e) => Err(docker(&format!("remove service '{}'", service.name), e)),
        }
    }

    /// Adopts the service the release file names as the stable slot: labels it, without
    /// touching what it runs.
    async fn adopt(
        &self,
        release: &Release,
        target: &SwarmTarget,
        hint: &str,
    ) -> Result<Managed, BackendError> {
        let name = &release.metadata.name;
        let Some(service) = self.inspect(&target.service).await? else {
            return Err(BackendError::Invalid(format!(
                "there is no service '{}' to adopt as the stable version: create it first \
                 (`docker stack deploy` or `docker service create`), then start the release",
                target.service
            )));
        };
        let spec = service.spec.clone().unwrap_or_default();
        let existing = spec.labels.clone().unwrap_or_default();
        if let Some(other) = existing.get(labels::RELEASE) {
            let owner = existing.get(labels::CONTROLLER).map_or("", String::as_str);
            if other != name || owner != self.inner.controller {
                return Err(BackendError::Invalid(format!(
                    "service '{}' already belongs to release '{other}' of controller '{owner}'",
                    target.service
                )));
            }
        }
        let network = match self.docker().inspect_network(&target.network, None).await {
            Ok(network) => network,
            Err(e) if e.is_not_found() => {
                return Err(BackendError::Invalid(format!(
                    "there is no network '{}': name the overlay network service '{}' is attached to",
                    target.network, target.service
                )));
            }
            Err(e) => return Err(docker("inspect the network", e)),
        };
        let attached = spec
            .task_template
            .as_ref()
            .and_then(|t| t.networks.clone())
            .into_iter()
            .chain(spec.networks.clone())
            .flatten()
            .filter_map(|n| n.target)
            .any(|t| Some(&t) == network.id.as_ref() || t == target.network);
        if !attached {
            return Err(BackendError::Invalid(format!(
                "service '{}' is not attached to network '{}', so the proxy cannot reach its tasks: \
                 attach it (`docker service update --network-add {}`) or name the network it uses",
                target.service, target.network, target.network
            )));
        }
        let image = spec
            .task_template
            .as_ref()
            .and_then(|t| t.container_spec.as_ref())
            .and_then(|c| c.image.clone())
            .unwrap_or_default();
        let version = release
            .spec
            .stable_version
            .clone()
            .or_else(|| image_tag(&image))
            .unwrap_or_else(|| hint.to_string());
        let id = service.id.clone().unwrap_or_else(|| target.service.clone());
        let slot = SlotLabels {
            controller: &self.inner.controller,
            release: name,
            role: Role::Stable,
            epoch: 0,
            version: &version,
            base: &target.service,
            port: release.spec.port,
            network: &target.network,
        };
        self.update_labels(&id, |labels| {
            slot.apply(labels);
            Ok(())
        })
        .await?;
        tracing::info!(service = %target.service, %version, "adopted as the stable version");
        self.slots(name).await?.stable.ok_or_else(|| {
            BackendError::Unavailable(format!("service '{}' lost its labels", target.service))
        })
    }

    /// Creates the candidate service (or finds the one an earlier call created); returns
    /// it and the number of tasks it should run.
    async fn create_candidate(
        &self,
        release: &Release,
        version: &str,
    ) -> Result<(Managed, Option<usize>), BackendError> {
        let name = &release.metadata.name;
        let image = release.spec.image.clone().ok_or_else(|| {
            BackendError::Invalid("the swarm backend needs the new version's 'image'".into())
        })?;
        let slots = self.slots(name).await?;
        let Some(stable) = slots.stable.clone() else {
            return Err(BackendError::Invalid(format!(
                "release '{name}' has no stable service to clone"
            )));
        };
        let Some(stable_service) = self.inspect(&stable.id).await? else {
            return Err(BackendError::Unavailable(format!(
                "the stable service '{}' disappeared",
                stable.name
            )));
        };
        let stable_spec = stable_service.spec.unwrap_or_default();
        if let Some(candidate) = &slots.candidate {
            let running = self.inspect(&candidate.id).await?;
            let same_image = running
                .as_ref()
                .and_then(|s| s.spec.as_ref())
                .and_then(|s| s.task_template.as_ref())
                .and_then(|t| t.container_spec.as_ref())
                .and_then(|c| c.image.as_deref())
                == Some(image.as_str());
            if same_image && candidate.version == version {
                tracing::info!(service = %candidate.name, "found the candidate an earlier call created");
                return Ok((candidate.clone(), wanted(&stable_spec, release)));
            }
            self.remove(candidate).await?;
        }
        let epoch = slots.all().map(|m| m.epoch).max().unwrap_or(0) + 1;
        let service_name = labels::candidate_name(&stable.base, epoch);
        // A former stable service waiting for its scale-down may have this colour: it
        // goes now.
        for previous in slots.all().filter(|m| m.name == service_name) {
            self.remove(previous).await?;
        }
        let candidate = CandidateOf {
            name: &service_name,
            image: &image,
            replicas: release.spec.replicas,
            labels: SlotLabels {
                controller: &self.inner.controller,
                release: name,
                role: Role::Candidate,
                epoch,
                version,
                base: &stable.base,
                port: stable.port,
                network: &stable.network,
            },
        };
        let spec = candidate.spec(&stable_spec);
        let wanted = wanted(&spec, release);
        let created = self
            .docker()
            .create_service(spec, None)
            .await
            .map_err(|e| docker(&format!("create service '{service_name}'"), e))?;
        tracing::info!(service = %service_name, %image, "candidate service created");
        let slots = self.slots(name).await?;
        let managed = slots
            .candidate
            .filter(|c| Some(&c.id) == created.id.as_ref())
            .ok_or_else(|| {
                BackendError::Unavailable(format!(
                    "service '{service_name}' was created but cannot be found"
                ))
            })?;
        Ok((managed, wanted))
    }

    /// Waits until the candidate runs every wanted task, or has failed.
    async fn wait_ready(
        &self,
        candidate: &Managed,
        wanted: Option<usize>,
    ) -> Result<Readiness, BackendError> {
        let mut said = None;
        loop {
            if self.inspect(&candidate.id).await?.is_none() {
                return Ok(Readiness::Failed {
                    reason: format!("the candidate service '{}' was removed", candidate.name),
                });
            }
            let tasks = self.tasks(&candidate.id).await?;
            match tasks::assess(&tasks, wanted) {
                Progress::Failed(reason) => {
                    return Ok(Readiness::Failed {
                        reason: format!("service '{}': {reason}", candidate.name),
                    });
                }
                Progress::Running(running) => {
                    let endpoints = tasks::endpoints(&tasks, &candidate.network, candidate.port);
                    if endpoints.len() >= running.len() {
                        return Ok(Readiness::Ready(SlotView {
                            version: candidate.version.clone(),
                            endpoints,
                        }));
                    }
                }
                Progress::Starting {
                    running,
                    wanted,
                    message,
                } => {
                    let now = (running, message);
                    if said.as_ref() != Some(&now) {
                        tracing::info!(
                            running = now.0,
                            wanted,
                            status = now.1.as_deref().unwrap_or(""),
                            "candidate starting"
                        );
                        said = Some(now);
                    }
                }
            }
            tokio::time::sleep(POLL).await;
        }
    }
}

/// Tasks wanted of a service: its replicas, `None` when global.
fn wanted(spec: &ServiceSpec, release: &Release) -> Option<usize> {
    if spec.mode.as_ref().is_some_and(|m| m.global.is_some()) {
        None
    } else {
        Some(release.spec.replicas as usize)
    }
}

/// The tag of an image reference, without its digest: `shop/web:v1@sha256:..` → `v1`.
fn image_tag(image: &str) -> Option<String> {
    let image = image.split('@').next()?;
    let (_, tag) = image.rsplit_once(':')?;
    (!tag.contains('/') && !tag.is_empty()).then(|| tag.to_string())
}

fn swarm_target(release: &Release) -> Result<&SwarmTarget, BackendError> {
    match &release.spec.backend {
        BackendSpec::Swarm(target) => Ok(target),
        other => Err(BackendError::Invalid(format!(
            "release '{}' names the {} backend; this controller drives Docker Swarm",
            release.metadata.name,
            other.name()
        ))),
    }
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
        // what is left is the fence (see `labels::FENCE`).
        Box::pin(async move {
            let _guard = self.lock(release).await;
            let slots = self.slots(release).await?;
            let Some(holder) = slots.state_holder() else {
                return Ok(());
            };
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis());
            self.update_labels(&holder.id, |labels| {
                labels.insert(labels::FENCE.into(), now.to_string());
                Ok(())
            })
            .await
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
                Ok(())
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
            // The newest state stays: if it is on a service about to go, it moves first.
            if let Some(holder) = slots.state_holder()
                && targets.iter().any(|t| t.id == holder.id)
                && let Some(keeper) = slots.all().find(|m| !targets.iter().any(|t| t.id == m.id))
                && let Some((revision, state)) = holder.state.clone()
            {
                self.update_labels(&keeper.id, |labels| {
                    labels.insert(labels::STATE.into(), state.clone());
                    labels.insert(labels::REVISION.into(), revision.to_string());
                    Ok(())
                })
                .await?;
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
            let _guard = self.lock(release).await;
            let slots = self.slots(release).await?;
            let holder = slots.state_holder();
            let current = holder.and_then(|h| h.state.as_ref().map(|(r, _)| *r));
            let conflict = || BackendError::Conflict {
                release: release.to_string(),
            };
            if current != expected {
                tracing::warn!(?current, ?expected, holder = ?holder.map(|h| &h.name), "stored state revision moved");
                return Err(conflict());
            }
            let Some(target) = slots.stable.as_ref().or(holder) else {
                return Err(BackendError::Invalid(format!(
                    "release '{release}' has no service to keep its state on"
                )));
            };
            let text = serde_json::to_string(state)
                .map_err(|e| BackendError::Invalid(format!("the state is not JSON: {e}")))?;
            let revision = expected.unwrap_or(0) + 1;
            let target_is_holder = holder.is_some_and(|h| h.id == target.id);
            self.update_labels(&target.id, |labels| {
                // Read again under compare-and-swap: another writer may have got here.
                let there = labels
                    .get(labels::REVISION)
                    .and_then(|r| r.parse::<u64>().ok());
                if target_is_holder && there != expected {
                    tracing::warn!(
                        ?there,
                        ?expected,
                        "stored state revision moved (compare-and-swap)"
                    );
                    return Err(conflict());
                }
                labels.insert(labels::STATE.into(), text.clone());
                labels.insert(labels::REVISION.into(), revision.to_string());
                Ok(())
            })
            .await?;
            if let Some(old) = holder.filter(|h| h.id != target.id) {
                // The state moved to the new stable service; the old copy goes (it would
                // lose to the newer revision anyway, so a failure here is harmless).
                let cleared = self
                    .update_labels(&old.id, |labels| {
                        labels.remove(labels::STATE);
                        labels.remove(labels::REVISION);
                        Ok(())
                    })
                    .await;
                if let Err(e) = cleared {
                    tracing::debug!(error = %e, service = %old.name, "old state copy left in place");
                }
            }
            Ok(revision)
        })
    }

    fn releases(&self) -> BoxFuture<'_, Result<Vec<String>, BackendError>> {
        Box::pin(async move {
            let filters = HashMap::from([(
                "label".to_string(),
                vec![
                    labels::STATE.to_string(),
                    format!("{}={}", labels::CONTROLLER, self.inner.controller),
                ],
            )]);
            let services = self
                .docker()
                .list_services(Some(
                    ListServicesOptionsBuilder::default()
                        .filters(&filters)
                        .build(),
                ))
                .await
                .map_err(|e| docker("list services", e))?;
            let mut names: Vec<String> = services
                .iter()
                .filter_map(|s| {
                    s.spec
                        .as_ref()?
                        .labels
                        .as_ref()?
                        .get(labels::RELEASE)
                        .cloned()
                })
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
    fn image_tags() {
        assert_eq!(image_tag("shop/web:v1").as_deref(), Some("v1"));
        assert_eq!(image_tag("shop/web:v1@sha256:abcd").as_deref(), Some("v1"));
        assert_eq!(image_tag("localhost:5000/web").as_deref(), None);
        assert_eq!(image_tag("web").as_deref(), None);
    }
}
