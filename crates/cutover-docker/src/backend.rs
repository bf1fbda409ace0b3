//! [`DockerBackend`]: the [`Backend`] trait on one Docker (or Podman) engine.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use cutover_backend::revision::target_of;
use cutover_backend::{
    Backend, BackendError, BoxFuture, Readiness, ReleaseLocks, Slot, SlotView, StateDir,
    StateError, Stored,
};
use cutover_core::spec::{Backend as BackendSpec, DockerTarget, Release};
use cutover_swarm::error::api;
use cutover_swarm::raw::{self, ApiError, Endpoint, RawClient};
use serde_json::Value;
use tracing::Instrument;

mod candidate;

use crate::clone;
use crate::compose;
use crate::ready::{self, State};
use crate::slots::{Group, Record, Records};

/// How often a deploy looks at the candidate's containers.
const POLL: Duration = Duration::from_millis(250);
/// How long one Docker API call may take (a stop: the container's grace period more).
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// The Docker backend. Cheap to clone: clones share the client, the records and one set
/// of per-release locks.
#[derive(Clone)]
pub struct DockerBackend {
    inner: Arc<Inner>,
}

struct Inner {
    /// Where the engine listens (for clients with longer timeouts).
    endpoint: Endpoint,
    /// The engine's API, as JSON.
    raw: RawClient,
    /// This controller's name, on the containers it creates.
    controller: String,
    /// One lock per release: operations that change a release's containers hold it.
    locks: ReleaseLocks,
    /// The rollout states (`docker/releases`).
    states: Arc<StateDir>,
    /// The slot records (`docker/slots`).
    records: Records,
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
        source: ApiError,
    },
    /// `DOCKER_HOST` names a scheme the backend does not speak.
    #[error(
        "DOCKER_HOST={0} is not supported: use unix:///path/to/docker.sock (Podman: unix:///run/podman/podman.sock), tcp://host:port or http://host:port"
    )]
    Scheme(String),
    /// The controller's name is empty.
    #[error("the controller's name (--name) must not be empty")]
    Name,
    /// The state directory cannot be opened.
    #[error("cannot open the docker backend's state directory")]
    State(#[source] StateError),
}

/// What a deploy created, ready to be watched.
struct Created {
    containers: Vec<String>,
    network: String,
    port: u16,
    path: String,
}

impl DockerBackend {
    /// Connects to the engine named by `DOCKER_HOST` (`unix://`, `tcp://` or `http://`;
    /// `unix:///var/run/docker.sock` by default), settles on an API version both sides
    /// speak, and keeps its records under `state_dir/docker`. `controller` names this
    /// controller on the containers it creates.
    pub async fn connect(
        controller: &str,
        state_dir: &Path,
    ) -> Result<DockerBackend, ConnectError> {
        let host = std::env::var("DOCKER_HOST")
            .ok()
            .filter(|h| !h.trim().is_empty())
            .unwrap_or_else(|| "unix:///var/run/docker.sock".to_string());
        if controller.trim().is_empty() {
            return Err(ConnectError::Name);
        }
        let endpoint = Endpoint::parse(&host).ok_or_else(|| ConnectError::Scheme(host.clone()))?;
        let raw = RawClient::negotiate(endpoint.clone(), CALL_TIMEOUT)
            .await
            .map_err(|source| ConnectError::Unreachable {
                host: host.clone(),
                source,
            })?;
        let root = state_dir.join("docker");
        let states = StateDir::open(root.join("releases")).map_err(ConnectError::State)?;
        let records = StateDir::open(root.join("slots")).map_err(ConnectError::State)?;
        tracing::info!(host, api = raw.version(), "connected to the Docker engine");
        Ok(DockerBackend {
            inner: Arc::new(Inner {
                endpoint,
                raw,
                controller: controller.to_string(),
                locks: ReleaseLocks::default(),
                states: Arc::new(states),
                records: Records::new(records),
            }),
        })
    }

    fn raw(&self) -> &RawClient {
        &self.inner.raw
    }

    async fn lock(&self, release: &str) -> tokio::sync::OwnedMutexGuard<()> {
        self.inner.locks.lock(release).await
    }

    /// A container's inspect; `None` if it does not exist.
    async fn inspect(&self, container: &str) -> Result<Option<Value>, BackendError> {
        match self
            .raw()
            .get(&format!("/containers/{container}/json"))
            .await
        {
            Ok(found) => Ok(Some(found)),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(api(&format!("inspect container '{container}'"), e)),
        }
    }

    /// Containers (running only, unless `all`) carrying every label of `labels`.
    async fn list(&self, labels: &[String], all: bool) -> Result<Vec<Value>, BackendError> {
        let mut filters = serde_json::json!({ "label": labels });
        if !all {
            filters["status"] = serde_json::json!(["running"]);
        }
        let listed = self
            .raw()
            .get(&format!(
                "/containers/json?all={}&filters={}",
                u8::from(all),
                raw::encode(&filters.to_string())
            ))
            .await
            .map_err(|e| api("list containers", e))?;
        match listed {
            Value::Array(containers) => Ok(containers),
            other => Err(BackendError::Unavailable(format!(
                "docker: the container list is not a list: {other}"
            ))),
        }
    }

    /// The containers this controller created for `release` that the record does not
    /// count as stable or previous: the candidate's, or a crashed deploy's leftovers.
    async fn candidates(&self, release: &str, record: &Record) -> Result<Vec<Value>, BackendError> {
        let labels = [
            format!("{}={release}", compose::RELEASE),
            format!("{}={}", compose::CONTROLLER, self.inner.controller),
        ];
        let mut found: Vec<Value> = self
            .list(&labels, true)
            .await?
            .into_iter()
            .filter(|c| c["Id"].as_str().is_some_and(|id| !record.holds(id)))
            .collect();
        found.sort_by(|a, b| a["Names"][0].as_str().cmp(&b["Names"][0].as_str()));
        Ok(found)
    }

    /// The running containers `target` names, sorted by name. A Swarm task among them,
    /// or a Swarm service of that name, is refused with a pointer to the Swarm backend.
    async fn select(&self, target: &DockerTarget) -> Result<Vec<Value>, BackendError> {
        let mut chosen = Vec::new();
        let described;
        if let Some(service) = &target.service {
            let mut labels = vec![format!("{}={service}", compose::SERVICE)];
            if let Some(project) = &target.project {
                labels.push(format!("{}={project}", compose::PROJECT));
            }
            for listed in self.list(&labels, false).await? {
                if let Some(id) = listed["Id"].as_str()
                    && let Some(inspect) = self.inspect(id).await?
                {
                    chosen.push(inspect);
                }
            }
            described = match &target.project {
                Some(project) => format!("Compose service '{service}' of project '{project}'"),
                None => format!("Compose service '{service}'"),
            };
            let projects: std::collections::BTreeSet<&str> = chosen
                .iter()
                .filter_map(|c| compose::label(c, compose::PROJECT))
                .collect();
            if projects.len() > 1 {
                return Err(BackendError::Invalid(format!(
                    "the {described} runs in several projects ({}): name one with 'project'",
                    projects.into_iter().collect::<Vec<_>>().join(", ")
                )));
            }
        } else if let Some(label) = &target.label {
            for listed in self.list(std::slice::from_ref(label), false).await? {
                if let Some(id) = listed["Id"].as_str()
                    && let Some(inspect) = self.inspect(id).await?
                {
                    chosen.push(inspect);
                }
            }
            described = format!("container with label '{label}'");
        } else {
            for name in &target.containers {
                match self.inspect(name).await? {
                    Some(inspect) if inspect["State"]["Running"] == true => chosen.push(inspect),
                    Some(_) => {
                        return Err(BackendError::Invalid(format!(
                            "container '{name}' is not running: start it before releasing"
                        )));
                    }
                    None => {}
                }
            }
            described = format!("container named {}", target.containers.join(", "));
        }
        for container in &chosen {
            if let Some(service) = compose::label(container, compose::SWARM_SERVICE) {
                return Err(BackendError::Invalid(format!(
                    "container '{}' is a task of the Swarm service '{service}': use --backend swarm",
                    clone::name_of(container)
                )));
            }
        }
        if chosen.is_empty() {
            let names = target.service.iter().chain(target.containers.iter());
            for name in names {
                if self.raw().get(&format!("/services/{name}")).await.is_ok() {
                    return Err(BackendError::Invalid(format!(
                        "'{name}' is a Swarm service: use --backend swarm"
                    )));
                }
            }
            return Err(BackendError::Invalid(format!(
                "no running {described} on the Docker engine"
            )));
        }
        chosen.sort_by_key(clone::name_of);
        Ok(chosen)
    }

    /// The network the proxy reaches `container` on: the release's, or its only one.
    fn network_of(target: &DockerTarget, container: &Value) -> Result<String, BackendError> {
        let networks: Vec<&String> = container["NetworkSettings"]["Networks"]
            .as_object()
            .map(|n| n.keys().collect())
            .unwrap_or_default();
        let name = clone::name_of(container);
        match &target.network {
            Some(network) if networks.contains(&network) => Ok(network.clone()),
            Some(network) => Err(BackendError::Invalid(format!(
                "container '{name}' is not on the network '{network}' (it is on: {})",
                join(&networks)
            ))),
            None if networks.len() == 1 => Ok(networks[0].clone()),
            None => Err(BackendError::Invalid(format!(
                "container '{name}' is on {} networks ({}): name the one the proxy shares with it in 'backend.docker.network'",
                networks.len(),
                join(&networks)
            ))),
        }
    }

    /// Adopts what `target` names as the stable slot, untouched.
    async fn adopt(
        &self,
        release: &Release,
        target: &DockerTarget,
        version: &str,
        record: &mut Record,
        revision: Option<u64>,
    ) -> Result<(), BackendError> {
        let chosen = compose::adoptable(self.select(target).await?, &release.metadata.name);
        let Some(first) = chosen.first() else {
            return Err(BackendError::Invalid(format!(
                "every container the release names was made by cutover for a release (label '{}'): name the service's own containers",
                compose::RELEASE
            )));
        };
        let network = Self::network_of(target, first)?;
        let containers: Vec<String> = chosen
            .iter()
            .filter_map(|c| c["Id"].as_str().map(str::to_string))
            .collect();
        tracing::info!(
            release = %release.metadata.name,
            containers = %chosen.iter().map(clone::name_of).collect::<Vec<_>>().join(","),
            network,
            "adopted the stable containers"
        );
        record.stable = Some(Group {
            version: version.to_string(),
            containers,
            created: false,
        });
        record.network = network;
        record.port = release.spec.port;
        record.target = Some(target.clone());
        self.inner
            .records
            .store(&release.metadata.name, record, revision)
            .await?;
        Ok(())
    }

    /// When none of the stable containers exists any more and the release chose them by
    /// Compose service or label, the containers that answer to that choice now (less the
    /// candidate's) become the stable ones: Compose replaces a service's containers when
    /// the compose file or `.env` changes, and the proxy must follow. Called under the
    /// release's lock.
    async fn refresh_stable(&self, release: &str) -> Result<Record, BackendError> {
        let (mut record, revision) = self.inner.records.load(release).await?;
        let (Some(stable), Some(target)) = (&record.stable, &record.target) else {
            return Ok(record);
        };
        if !target.containers.is_empty() {
            return Ok(record);
        }
        for id in &stable.containers {
            if self.inspect(id).await?.is_some() {
                return Ok(record);
            }
        }
        let candidates: Vec<String> = self
            .candidates(release, &record)
            .await?
            .iter()
            .filter_map(|c| c["Id"].as_str().map(str::to_string))
            .collect();
        let stable_version = stable.version.clone();
        let previous: Vec<String> = record
            .previous
            .as_ref()
            .map(|g| g.containers.clone())
            .unwrap_or_default();
        let found: Vec<String> = match self.select(target).await {
            Ok(found) => found
                .iter()
                .filter(|c| compose::may_serve_as(c, release, &stable_version))
                .filter_map(|c| c["Id"].as_str().map(str::to_string))
                .filter(|id| !candidates.contains(id) && !previous.contains(id))
                .collect(),
            Err(e) => {
                tracing::warn!(release, error = %e, "the stable containers are gone and none replaces them");
                return Ok(record);
            }
        };
        if found.is_empty() {
            return Ok(record);
        }
        tracing::info!(release, containers = ?found, "the stable containers were replaced (by Compose?); following them");
        if let Some(stable) = record.stable.as_mut() {
            stable.containers = found;
            stable.created = false;
        }
        self.inner.records.store(release, &record, revision).await?;
        Ok(record)
    }

    /// The slot view of `ids`: the addresses of those running and healthy.
    async fn view(
        &self,
        version: &str,
        ids: &[String],
        network: &str,
        port: u16,
    ) -> Result<SlotView, BackendError> {
        let mut endpoints = Vec::new();
        for id in ids {
            let Some(inspect) = self.inspect(id).await? else {
                continue;
            };
            if matches!(ready::state(&inspect), State::Healthy | State::Running)
                && let Some(ip) = address(&inspect, network)
            {
                endpoints.push(format!("{ip}:{port}"));
            }
        }
        Ok(SlotView {
            version: version.to_string(),
            endpoints,
        })
    }

    /// Removes a container at once; `volumes`: its anonymous volumes too.
    async fn remove(&self, id: &str, volumes: bool) -> Result<(), BackendError> {
        let path = format!("/containers/{id}?force=1&v={}", u8::from(volumes));
        match self.raw().delete(&path).await {
            Ok(()) => {
                tracing::info!(container = id, "container removed");
                Ok(())
            }
            Err(e) if e.is_not_found() => Ok(()),
            // Already being removed.
            Err(e) if e.is_conflict() && e.message.contains("already in progress") => Ok(()),
            Err(e) => Err(api(&format!("remove container {id}"), e)),
        }
    }

    /// Stops a container with its own stop signal and grace period, then removes it.
    async fn stop_and_remove(&self, id: &str, volumes: bool) -> Result<(), BackendError> {
        let Some(inspect) = self.inspect(id).await? else {
            return Ok(());
        };
        let grace = clone::stop_timeout(&inspect);
        let client = RawClient::new(
            self.inner.endpoint.clone(),
            self.raw().version().to_string(),
            CALL_TIMEOUT + Duration::from_secs(grace),
        );
        match client.post_empty(&format!("/containers/{id}/stop")).await {
            Ok(_) => {}
            Err(e) if e.status == Some(304) || e.is_not_found() => {}
            Err(e) => return Err(api(&format!("stop container {id}"), e)),
        }
        self.remove(id, volumes).await
    }
}

/// A container's address on `network`, if it has one.
fn address(inspect: &Value, network: &str) -> Option<String> {
    inspect["NetworkSettings"]["Networks"][network]["IPAddress"]
        .as_str()
        .filter(|ip| !ip.is_empty())
        .map(str::to_string)
}

fn join(names: &[&String]) -> String {
    if names.is_empty() {
        return "none".into();
    }
    names
        .iter()
        .map(|n| n.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

fn docker_target(release: &Release) -> Result<&DockerTarget, BackendError> {
    target_of(release, "Docker", |spec| match spec {
        BackendSpec::Docker(target) => Some(target),
        _ => None,
    })
}

impl Backend for DockerBackend {
    fn kind(&self) -> &'static str {
        "docker"
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
            let target = docker_target(release)?;
            let name = &release.metadata.name;
            let _guard = self.lock(name).await;
            let (mut record, revision) = self.inner.records.load(name).await?;
            if record.stable.is_none() {
                self.adopt(release, target, version, &mut record, revision)
                    .await?;
            } else {
                record = self.refresh_stable(name).await?;
            }
            let Some(stable) = &record.stable else {
                return Err(BackendError::Invalid(format!(
                    "release '{name}' has no stable containers"
                )));
            };
            self.view(
                &stable.version,
                &stable.containers,
                &record.network,
                record.port,
            )
            .await
        })
    }

    fn deploy<'a>(
        &'a self,
        release: &'a Release,
        version: &'a str,
    ) -> BoxFuture<'a, Result<Readiness, BackendError>> {
        Box::pin(async move {
            let target = docker_target(release)?.clone();
            // The creation runs as a task of its own, holding the release's lock: if the
            // caller cancels this deploy (to retire the candidate), a create already sent
            // completes before the retire looks for the candidate's containers.
            let backend = self.clone();
            let owned_release = release.clone();
            let owned_version = version.to_string();
            let guard = self.lock(&release.metadata.name).await;
            let created = tokio::spawn(
                async move {
                    let _guard = guard;
                    backend
                        .create_candidate(&owned_release, &target, &owned_version)
                        .await
                }
                .in_current_span(),
            )
            .await
            .map_err(|e| BackendError::Unavailable(format!("the deploy task failed: {e}")))??;
            match created {
                Ok(created) => {
                    self.wait_ready(&release.metadata.name, version, created)
                        .await
                }
                Err(reason) => Ok(Readiness::Failed { reason }),
            }
        })
    }

    fn endpoints<'a>(
        &'a self,
        release: &'a str,
        slot: Slot,
    ) -> BoxFuture<'a, Result<Option<SlotView>, BackendError>> {
        Box::pin(async move {
            let record = if slot == Slot::Stable {
                let _guard = self.lock(release).await;
                self.refresh_stable(release).await?
            } else {
                self.inner.records.load(release).await?.0
            };
            let (version, ids) = match slot {
                Slot::Candidate => {
                    let Some(planned) = &record.candidate else {
                        return Ok(None);
                    };
                    let ids: Vec<String> = self
                        .candidates(release, &record)
                        .await?
                        .iter()
                        .filter(|c| {
                            compose::label(c, compose::VERSION) == Some(planned.version.as_str())
                        })
                        .filter_map(|c| c["Id"].as_str().map(str::to_string))
                        .collect();
                    (planned.version.clone(), ids)
                }
                _ => match record.group(slot) {
                    Some(group) => (group.version.clone(), group.containers.clone()),
                    None => return Ok(None),
                },
            };
            Ok(Some(
                self.view(&version, &ids, &record.network, record.port)
                    .await?,
            ))
        })
    }

    fn recover<'a>(&'a self, release: &'a str) -> BoxFuture<'a, Result<(), BackendError>> {
        // Docker restarts the containers by their restart policy and the record says who
        // plays which slot; what is left is the fence: the state is written again one
        // revision up, so a write a dead controller still had in flight is refused.
        Box::pin(async move {
            let _guard = self.lock(release).await;
            let states = self.inner.states.clone();
            let name = release.to_string();
            tokio::task::spawn_blocking(move || states.fence(&name))
                .await
                .map_err(|e| BackendError::Unavailable(format!("the state fence failed: {e}")))??;
            Ok(())
        })
    }

    fn promote<'a>(&'a self, release: &'a str) -> BoxFuture<'a, Result<(), BackendError>> {
        Box::pin(async move {
            let _guard = self.lock(release).await;
            let (mut record, revision) = self.inner.records.load(release).await?;
            let Some(planned) = record.candidate.clone() else {
                return if record.stable.is_some() {
                    // Promoted already.
                    Ok(())
                } else {
                    Err(BackendError::Invalid(format!(
                        "release '{release}' has no candidate to promote"
                    )))
                };
            };
            let found = self.candidates(release, &record).await?;
            let running: Vec<&Value> = found
                .iter()
                .filter(|c| compose::label(c, compose::VERSION) == Some(planned.version.as_str()))
                .filter(|c| c["State"]["Running"] == true || c["State"] == "running")
                .collect();
            // Never make a stable slot of fewer containers than planned: the old ones would
            // then be retired with nothing (or too little) serving in their place.
            if (running.len() as u64) < planned.count {
                return Err(BackendError::Unavailable(format!(
                    "release '{release}': {} of the {} containers of version '{}' are running, so it is not promoted",
                    running.len(),
                    planned.count,
                    planned.version
                )));
            }
            let containers: Vec<String> = running
                .iter()
                .filter_map(|c| c["Id"].as_str().map(str::to_string))
                .collect();
            if let Some(older) = record.previous.take() {
                for id in &older.containers {
                    self.stop_and_remove(id, older.created).await?;
                }
            }
            record.previous = record.stable.take();
            record.stable = Some(Group {
                version: planned.version,
                containers,
                created: true,
            });
            record.candidate = None;
            self.inner.records.store(release, &record, revision).await?;
            tracing::info!(
                release,
                "promoted: the candidate containers are the stable ones"
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
            let _guard = self.lock(release).await;
            let (mut record, revision) = self.inner.records.load(release).await?;
            match slot {
                Slot::Candidate => {
                    self.remove_candidates(release, &record).await?;
                    if record.candidate.take().is_some() {
                        self.inner.records.store(release, &record, revision).await?;
                    }
                }
                Slot::Previous | Slot::Stable => {
                    let group = if slot == Slot::Previous {
                        record.previous.take()
                    } else {
                        record.stable.take()
                    };
                    if let Some(group) = group {
                        for id in &group.containers {
                            self.stop_and_remove(id, group.created).await?;
                        }
                        self.inner.records.store(release, &record, revision).await?;
                    }
                }
            }
            Ok(())
        })
    }

    fn load_state<'a>(
        &'a self,
        release: &'a str,
    ) -> BoxFuture<'a, Result<Option<Stored>, BackendError>> {
        Box::pin(async move {
            let states = self.inner.states.clone();
            let name = release.to_string();
            Ok(tokio::task::spawn_blocking(move || states.load(&name))
                .await
                .map_err(|e| BackendError::Unavailable(format!("the state read failed: {e}")))??)
        })
    }

    fn store_state<'a>(
        &'a self,
        release: &'a str,
        state: &'a serde_json::Value,
        expected: Option<u64>,
    ) -> BoxFuture<'a, Result<u64, BackendError>> {
        Box::pin(async move {
            let states = self.inner.states.clone();
            let name = release.to_string();
            let state = state.clone();
            Ok(
                tokio::task::spawn_blocking(move || states.store(&name, &state, expected))
                    .await
                    .map_err(|e| {
                        BackendError::Unavailable(format!("the state write failed: {e}"))
                    })??,
            )
        })
    }

    fn releases(&self) -> BoxFuture<'_, Result<Vec<String>, BackendError>> {
        Box::pin(async move {
            let states = self.inner.states.clone();
            Ok(tokio::task::spawn_blocking(move || states.releases())
                .await
                .map_err(|e| BackendError::Unavailable(format!("the state list failed: {e}")))??)
        })
    }
}
