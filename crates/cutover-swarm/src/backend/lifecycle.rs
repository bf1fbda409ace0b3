//! The candidate lifecycle on Swarm: adopting the stable service, cloning a candidate from
//! it, and waiting until its tasks run.

use super::*;

impl SwarmBackend {
    /// Adopts the service the release file names as the stable slot: labels it, without
    /// touching what it runs.
    pub(super) async fn adopt(
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
        let spec = &service["Spec"];
        if let Some(other) = labels::read(&spec["Labels"], labels::RELEASE) {
            let owner = labels::read(&spec["Labels"], labels::CONTROLLER).unwrap_or("");
            if other != name || owner != self.inner.controller {
                return Err(BackendError::Invalid(format!(
                    "service '{}' already belongs to release '{other}' of controller '{owner}'",
                    target.service
                )));
            }
        }
        let mode = &spec["Mode"];
        if mode.get("ReplicatedJob").is_some() || mode.get("GlobalJob").is_some() {
            return Err(BackendError::Invalid(format!(
                "service '{}' is a job; only replicated and global services can be released",
                target.service
            )));
        }
        let published: Vec<String> = spec["EndpointSpec"]["Ports"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|p| p["TargetPort"].as_u64())
            .map(|p| p.to_string())
            .collect();
        if !published.is_empty() {
            return Err(BackendError::Invalid(format!(
                "service '{}' publishes ports (target {}): clients using them would bypass \
                 cutover's proxy, and the ports would go with the old version after a \
                 promotion. Publish the proxy instead, and remove them (the `ports:` of the \
                 stack file, or `docker service update --publish-rm {} {}`)",
                target.service,
                published.join(", "),
                published.join(" --publish-rm "),
                target.service
            )));
        }
        let path = format!("/networks/{}", raw::encode(&target.network));
        let network = match self.raw().get(&path).await {
            Ok(network) => network,
            Err(e) if e.is_not_found() => {
                return Err(BackendError::Invalid(format!(
                    "there is no network '{}': name the overlay network service '{}' is attached to",
                    target.network, target.service
                )));
            }
            Err(e) => return Err(api("inspect the network", e)),
        };
        let network_id = network["Id"].as_str().unwrap_or_default().to_string();
        let network_name = network["Name"]
            .as_str()
            .map_or_else(|| target.network.clone(), str::to_string);
        let attached = [&spec["TaskTemplate"]["Networks"], &spec["Networks"]]
            .into_iter()
            .filter_map(Value::as_array)
            .flatten()
            .filter_map(|n| n["Target"].as_str())
            .any(|t| t == network_id || t == network_name);
        if !attached {
            return Err(BackendError::Invalid(format!(
                "service '{}' is not attached to network '{}', so the proxy cannot reach its tasks: \
                 attach it (`docker service update --network-add {} {}`) or name the network it uses",
                target.service, target.network, target.network, target.service
            )));
        }
        let image = spec["TaskTemplate"]["ContainerSpec"]["Image"]
            .as_str()
            .unwrap_or_default();
        let version = release
            .spec
            .stable_version
            .clone()
            .or_else(|| cutover_core::spec::image_tag(image).map(str::to_string))
            .unwrap_or_else(|| hint.to_string());
        let id = service["ID"]
            .as_str()
            .unwrap_or(&target.service)
            .to_string();
        let base = spec["Name"].as_str().unwrap_or(&target.service).to_string();
        let slot = SlotLabels {
            controller: &self.inner.controller,
            release: name,
            role: Role::Stable,
            epoch: 0,
            version: &version,
            base: &base,
            port: release.spec.port,
            network: &network_name,
        };
        self.update_labels(&id, |labels| {
            slot.apply(labels);
            Ok(true)
        })
        .await?;
        tracing::info!(service = %base, %version, "adopted as the stable version");
        self.slots(name)
            .await?
            .stable
            .ok_or_else(|| BackendError::Unavailable(format!("service '{base}' lost its labels")))
    }

    /// Creates the candidate service (or finds the one an earlier call created); returns
    /// it and the number of tasks it should run.
    pub(super) async fn create_candidate(
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
        if let Some(candidate) = &slots.candidate {
            let existing = self.inspect(&candidate.id).await?;
            if let Some(existing) = existing
                && existing["Spec"]["TaskTemplate"]["ContainerSpec"]["Image"] == image.as_str()
                && candidate.version == version
            {
                tracing::info!(service = %candidate.name, "found the candidate an earlier call created");
                return Ok((candidate.clone(), wanted(&existing["Spec"])));
            }
        }
        // Anything that is neither the stable service nor a former stable one goes: the
        // candidate of another version, stray candidates a crash left.
        for stray in slots.all().filter(|m| m.role == Role::Candidate) {
            self.remove(stray).await?;
        }
        // The stable service has the highest epoch left, so the candidate's is above every
        // other, and its colour differs from the stable one's. A former stable service
        // waiting for its scale-down may have that colour: it goes now.
        let epoch = stable.epoch + 1;
        let service_name = labels::candidate_name(&stable.base, epoch);
        for previous in slots
            .previous
            .iter()
            .filter(|m| m.name == service_name && m.id != stable.id)
        {
            self.move_state(previous, &stable).await?;
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
        let spec = candidate.spec(&stable_service["Spec"]);
        let wanted = wanted(&spec);
        if wanted == Some(0) {
            return Err(BackendError::Invalid(format!(
                "the stable service '{}' runs 0 replicas, so the candidate would too: scale it \
                 up or set spec.replicas",
                stable.name
            )));
        }
        let created = match self.raw().post("/services/create", &spec).await {
            Ok(created) => created,
            Err(e) if e.is_conflict() => {
                // Someone made a service of that name since the slots were read: if it is
                // this release's candidate of this version (another call's), use it.
                let again = self.slots(name).await?;
                if let Some(candidate) = again
                    .candidate
                    .filter(|c| c.name == service_name && c.version == version)
                {
                    tracing::info!(service = %candidate.name, "the candidate was created meanwhile");
                    return Ok((candidate, wanted));
                }
                return Err(BackendError::Invalid(format!(
                    "cannot create the candidate: a service named '{service_name}' exists and is \
                     not this release's; rename or remove it ({})",
                    e.message
                )));
            }
            Err(e) => return Err(api(&format!("create service '{service_name}'"), e)),
        };
        tracing::info!(service = %service_name, %image, "candidate service created");
        let id = created["ID"].as_str().unwrap_or_default().to_string();
        let slots = self.slots(name).await?;
        let managed = slots.candidate.filter(|c| c.id == id).ok_or_else(|| {
            BackendError::Unavailable(format!(
                "service '{service_name}' was created but cannot be found"
            ))
        })?;
        Ok((managed, wanted))
    }

    /// Waits until the candidate runs every wanted task, or has failed.
    pub(super) async fn wait_ready(
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
