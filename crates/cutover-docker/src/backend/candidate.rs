//! Making the candidate: its plan, its containers cloned from the stable ones, their
//! start, and the wait until they are ready (or the removal of a candidate that cannot run).

use cutover_backend::{Backend, BackendError, Readiness, Slot, SlotView};
use cutover_core::spec::{DockerTarget, Release};
use cutover_swarm::error::api;
use cutover_swarm::raw;
use serde_json::Value;

use super::{Created, DockerBackend, POLL, address};
use crate::clone;
use crate::compose::{self, Owner};
use crate::ready::{self, State};
use crate::slots::{Group, Planned, Record};

/// What every container of one candidate is made from.
#[derive(Clone, Copy)]
struct ContainerSpec<'a> {
    /// The release's name.
    name: &'a str,
    /// The new version's image.
    image: &'a str,
    /// A stable container's inspect: the configuration to clone.
    template: &'a Value,
    /// The configuration of the stable container's image, left to the new image.
    old_image: &'a Value,
    /// The labels that say whose the container is.
    owner: &'a Owner<'a>,
}

impl DockerBackend {
    /// Creates (or finds) the candidate's containers and starts them. `Err(reason)`
    /// inside `Ok`: the candidate cannot run (say, its image is missing); nothing of it
    /// is left.
    pub(super) async fn create_candidate(
        &self,
        release: &Release,
        target: &DockerTarget,
        version: &str,
    ) -> Result<Result<Created, String>, BackendError> {
        let name = &release.metadata.name;
        let image = release
            .spec
            .image
            .as_deref()
            .ok_or_else(|| BackendError::Invalid("the docker backend needs 'image'".into()))?;
        let (mut record, mut revision) = self.inner.records.load(name).await?;
        if record.stable.is_none() {
            self.adopt(release, target, version, &mut record, revision)
                .await?;
            (record, revision) = self.inner.records.load(name).await?;
        }
        if record
            .candidate
            .as_ref()
            .is_some_and(|p| p.version != version)
        {
            // Another version's candidate that was never retired.
            self.remove_candidates(name, &record).await?;
            record.candidate = None;
        }
        let Some(stable) = record.stable.clone() else {
            return Err(BackendError::Invalid(format!(
                "release '{name}' has no stable containers"
            )));
        };
        let mut template = None;
        for id in &stable.containers {
            if let Some(inspect) = self.inspect(id).await? {
                template = Some(inspect);
                break;
            }
        }
        let Some(template) = template else {
            return Err(BackendError::Unavailable(format!(
                "none of the stable containers of '{name}' exists any more"
            )));
        };
        // A missing image fails here, before anything is created, in the engine's words.
        if let Err(e) = self.raw().get(&format!("/images/{image}/json")).await {
            if e.is_not_found() {
                if record.candidate.take().is_some() {
                    self.inner.records.store(name, &record, revision).await?;
                }
                return Ok(Err(format!("docker: {}", e.message.trim())));
            }
            return Err(api(&format!("inspect image '{image}'"), e));
        }
        let planned = match record.candidate.clone() {
            Some(planned) => planned,
            None => {
                self.plan(release, version, &template, &stable, &mut record, revision)
                    .await?
            }
        };
        let old_image = match self
            .raw()
            .get(&format!(
                "/images/{}/json",
                template["Image"].as_str().unwrap_or_default()
            ))
            .await
        {
            Ok(found) => found["Config"].clone(),
            Err(e) if e.is_not_found() => Value::Null,
            Err(e) => return Err(api("inspect the stable container's image", e)),
        };
        let owner = Owner {
            release: name,
            version,
            controller: &self.inner.controller,
        };
        let spec = ContainerSpec {
            name,
            image,
            template: &template,
            old_image: &old_image,
            owner: &owner,
        };
        let mut containers = Vec::new();
        for number in planned.numbers() {
            let container = format!("{name}-{version}-{number}");
            let id = match self
                .make_container(&spec, &container, number, &record)
                .await?
            {
                Ok(id) => id,
                Err(reason) => return Ok(Err(reason)),
            };
            match self
                .raw()
                .post_empty(&format!("/containers/{id}/start"))
                .await
            {
                Ok(_) => {}
                Err(e) if e.status == Some(304) => {}
                Err(e) if matches!(e.status, Some(400 | 404 | 500)) => {
                    let reason =
                        format!("docker: cannot start '{container}': {}", e.message.trim());
                    self.remove_candidates(name, &record).await?;
                    return Ok(Err(reason));
                }
                Err(e) => return Err(api(&format!("start container '{container}'"), e)),
            }
            containers.push(id);
        }
        Ok(Ok(Created {
            containers,
            network: record.network.clone(),
            port: record.port,
            path: target.readiness_path.clone(),
        }))
    }

    /// Waits until every candidate container is ready, or one has failed (then removes
    /// the candidate).
    pub(super) async fn wait_ready(
        &self,
        release: &str,
        version: &str,
        created: Created,
    ) -> Result<Readiness, BackendError> {
        loop {
            let mut endpoints = Vec::new();
            let mut waiting = None;
            for id in &created.containers {
                let Some(inspect) = self.inspect(id).await? else {
                    return self
                        .fail(release, format!("candidate container {id} disappeared"))
                        .await;
                };
                let address =
                    address(&inspect, &created.network).map(|ip| format!("{ip}:{}", created.port));
                match ready::state(&inspect) {
                    State::Failed(reason) => return self.fail(release, reason).await,
                    State::Waiting(why) => waiting = Some(why),
                    State::Healthy => match address {
                        Some(address) => endpoints.push(address),
                        None => waiting = Some("no address yet".into()),
                    },
                    State::Running => match address {
                        Some(address) => {
                            match cutover_backend::local::probe::probe(&address, &created.path)
                                .await
                            {
                                Ok(()) => endpoints.push(address),
                                Err(why) => waiting = Some(why),
                            }
                        }
                        None => waiting = Some("no address yet".into()),
                    },
                }
            }
            if waiting.is_none() {
                return Ok(Readiness::Ready(SlotView {
                    version: version.to_string(),
                    endpoints,
                }));
            }
            tracing::debug!(release, waiting = ?waiting, "candidate not ready yet");
            tokio::time::sleep(POLL).await;
        }
    }

    /// Removes the candidate after it failed and reports why.
    pub(super) async fn fail(
        &self,
        release: &str,
        reason: String,
    ) -> Result<Readiness, BackendError> {
        tracing::warn!(release, reason, "the candidate failed; removing it");
        self.retire(release, Slot::Candidate).await?;
        Ok(Readiness::Failed { reason })
    }

    /// Removes every container of the release's candidate (leftovers of crashed
    /// deploys too), with their anonymous volumes.
    pub(super) async fn remove_candidates(
        &self,
        release: &str,
        record: &Record,
    ) -> Result<(), BackendError> {
        for container in self.candidates(release, record).await? {
            if let Some(id) = container["Id"].as_str() {
                self.remove(id, true).await?;
            }
        }
        Ok(())
    }

    /// The candidate's containers as planned on its first deploy (their Compose numbers
    /// above every container of the service, and how many), stored before any is made so a
    /// retried deploy makes the same ones.
    async fn plan(
        &self,
        release: &Release,
        version: &str,
        template: &Value,
        stable: &Group,
        record: &mut Record,
        revision: Option<u64>,
    ) -> Result<Planned, BackendError> {
        let name = &release.metadata.name;
        let mut numbered = vec![template.clone()];
        if let (Some(project), Some(service)) = (
            compose::label(template, compose::PROJECT),
            compose::label(template, compose::SERVICE),
        ) {
            let labels = [
                format!("{}={project}", compose::PROJECT),
                format!("{}={service}", compose::SERVICE),
            ];
            numbered.extend(self.list(&labels, true).await?);
        }
        let first = record.last_number.max(compose::highest_number(&numbered)) + 1;
        let count = release
            .spec
            .replicas
            .map_or(stable.containers.len() as u64, u64::from)
            .max(1);
        let planned = Planned {
            version: version.to_string(),
            first,
            count,
        };
        record.last_number = first + count - 1;
        record.candidate = Some(planned.clone());
        self.inner.records.store(name, record, revision).await?;
        Ok(planned)
    }

    /// Finds the candidate container `container` (number `number`) made by an earlier try,
    /// or creates it from the stable `template` with `image` and joins its other networks.
    /// `Err(reason)` inside `Ok`: the engine refused it (the candidate is then removed).
    async fn make_container(
        &self,
        spec: &ContainerSpec<'_>,
        container: &str,
        number: u64,
        record: &Record,
    ) -> Result<Result<String, String>, BackendError> {
        let ContainerSpec {
            name,
            image,
            template,
            old_image,
            owner,
        } = *spec;
        let id = match self.inspect(container).await? {
            Some(found) if compose::label(&found, compose::RELEASE) == Some(name) => {
                found["Id"].as_str().unwrap_or_default().to_string()
            }
            Some(_) => {
                return Err(BackendError::Invalid(format!(
                    "a container named '{container}' exists and is not this release's: rename or remove it"
                )));
            }
            None => {
                let labels =
                    compose::candidate_labels(template, &old_image["Labels"], number, owner);
                let candidate = clone::candidate(template, old_image, image, labels)
                    .map_err(|e| BackendError::Invalid(e.to_string()))?;
                let created = match self
                    .raw()
                    .post(
                        &format!("/containers/create?name={}", raw::encode(container)),
                        &candidate.body,
                    )
                    .await
                {
                    Ok(created) => created,
                    Err(e) if matches!(e.status, Some(400 | 404)) => {
                        let reason = format!("docker: {}", e.message.trim());
                        self.remove_candidates(name, record).await?;
                        return Ok(Err(reason));
                    }
                    Err(e) => return Err(api(&format!("create container '{container}'"), e)),
                };
                let id = created["Id"].as_str().unwrap_or_default().to_string();
                for (network, endpoint) in &candidate.more_networks {
                    let body = serde_json::json!({ "Container": id, "EndpointConfig": endpoint });
                    let connected = self
                        .raw()
                        .post(
                            &format!("/networks/{}/connect", raw::encode(network)),
                            &body,
                        )
                        .await;
                    if let Err(e) = connected {
                        // Found again by name on a retry, a container left here would
                        // start without this network: it goes, and the retry makes it
                        // whole.
                        if let Err(removal) = self.remove(&id, true).await {
                            tracing::warn!(container, error = %removal, "could not remove a half-made candidate");
                        }
                        return Err(api(&format!("connect '{container}' to '{network}'"), e));
                    }
                }
                tracing::info!(container, image, "candidate container created");
                id
            }
        };
        Ok(Ok(id))
    }
}
