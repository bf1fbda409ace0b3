//! The candidate lifecycle on Kubernetes: adopting the anchor as the stable slot, applying
//! candidate Deployments and their Services, waiting for readiness, reading endpoints, and
//! removing what a retired slot ran.

use super::*;

impl KubeBackend {
    /// Adopts the Deployment the release file names as the stable slot: labels and
    /// annotates it, without touching its pods.
    pub(super) async fn adopt(
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
            if let Some(other) = keys::read(&labels, keys::RELEASE) {
                let owner = keys::read(&labels, keys::CONTROLLER).unwrap_or("");
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
            // Keys an older version left go in the same write (`null` removes them).
            let patch = json!({ "metadata": {
                "resourceVersion": found.metadata.resource_version,
                "labels": {
                    keys::CONTROLLER: self.inner.controller,
                    keys::RELEASE: name,
                    keys::ANCHOR: "true",
                    keys::legacy(keys::CONTROLLER): null,
                    keys::legacy(keys::RELEASE): null,
                    keys::legacy(keys::ANCHOR): null,
                },
                "annotations": {
                    keys::SLOTS: slots.to_text(),
                    keys::legacy(keys::SLOTS): null,
                },
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
    pub(super) async fn apply_service(
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
    pub(super) async fn raw_deployment(&self, name: &str) -> Result<Option<Value>, BackendError> {
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
    pub(super) async fn remove(
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
    pub(super) fn owns(&self, metadata: &Value, release: &str) -> bool {
        let labels = &metadata["labels"];
        keys::read_json(labels, keys::CONTROLLER) == Some(self.inner.controller.as_str())
            && keys::read_json(labels, keys::RELEASE) == Some(release)
    }

    /// Records the candidate on the anchor, then applies its Deployment and Service (in
    /// that order: a controller killed in between finds the candidate by its record, so
    /// nothing it made is unowned). Applying again is harmless, so a retried deploy just
    /// does it again.
    pub(super) async fn apply_candidate(
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
        // A candidate an older version created keeps the keys of its selector; one on its
        // way out (a former stable removed above) is replaced by a new one, in new keys.
        let selector_domain = match self.raw_deployment(&candidate_name).await? {
            Some(existing) if existing["metadata"]["deletionTimestamp"].is_null() => {
                keys::Domain::of_selector(&existing["spec"]["selector"]["matchLabels"])
            }
            _ => keys::Domain::Current,
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
            selector_domain,
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
        self.claim_candidate_name(name, &candidate_name).await?;
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

    /// Makes sure `candidate_name` can be applied for `release`: a Deployment of that name
    /// being deleted (a candidate of this colour rolled back a moment ago) is waited out, for
    /// its pods carry the labels the new one selects; one that is not the release's is never
    /// touched.
    async fn claim_candidate_name(
        &self,
        name: &str,
        candidate_name: &str,
    ) -> Result<(), BackendError> {
        let deadline = tokio::time::Instant::now() + TERMINATING_WAIT;
        let existing = loop {
            let existing = self.raw_deployment(candidate_name).await?;
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
        Ok(())
    }

    /// Waits until the candidate's Deployment is complete and its endpoints are published,
    /// or Kubernetes says it cannot start.
    pub(super) async fn wait_ready(
        &self,
        entry: &SlotEntry,
        port: u16,
    ) -> Result<Readiness, BackendError> {
        let mut said = None;
        loop {
            let observed = match self.observe(&entry.deployment).await {
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

    /// A Deployment and the pods its selector picks (none for a selector without
    /// `matchLabels`, which cutover never creates); `None` if the Deployment is gone.
    pub(super) async fn observe(
        &self,
        deployment: &str,
    ) -> Result<Option<(Deployment, Vec<Pod>)>, BackendError> {
        let Some(found) = self
            .deployments()
            .get_opt(deployment)
            .await
            .map_err(|e| classify(self.call("get", "deployments", "apps"), e))?
        else {
            return Ok(None);
        };
        // The pods its own selector picks: the keys a Deployment was created with stay in
        // its selector for good (see `keys::Domain`).
        let selector = found
            .spec
            .as_ref()
            .and_then(|spec| spec.selector.match_labels.as_ref())
            .map(|labels| {
                labels
                    .iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect::<Vec<_>>()
                    .join(",")
            })
            .unwrap_or_default();
        if selector.is_empty() {
            return Ok(Some((found, Vec::new())));
        }
        let pods = self
            .pods()
            .list(&ListParams::default().labels(&selector))
            .await
            .map_err(|e| classify(self.call("list", "pods", ""), e))?
            .items;
        Ok(Some((found, pods)))
    }

    /// The slot's view from the EndpointSlice cache.
    pub(super) fn view(&self, entry: &SlotEntry, port: u16) -> SlotView {
        SlotView {
            version: entry.version.clone(),
            endpoints: self.slot_endpoints(&entry.deployment, port),
        }
    }

    /// Looks up the uid of `deployment`'s slot Service if this process has not applied it
    /// (after a restart), so that only its own slices count.
    pub(super) async fn learn_service_uid(&self, deployment: &str) -> Result<(), BackendError> {
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
    pub(super) fn slot_endpoints(&self, deployment: &str, port: u16) -> Vec<String> {
        let uid = self.service_uids().get(deployment).cloned();
        self.inner
            .endpoints
            .endpoints(deployment, port, uid.as_deref())
    }
}

/// What a release of `deployment` (the anchor named `anchor`) needs of it, checked at
/// every submission (not only at adoption): a selector a Service can express, a container
/// that is clearly the service's, and names cutover can make from the anchor's.
pub(super) fn check_releasable(
    deployment: &Value,
    anchor: &str,
    port: u16,
) -> Result<(), BackendError> {
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
