//! The release's record on its anchor Deployment: finding the anchor, reading the slots
//! and the rollout state from its annotations, and writing them with compare-and-swap on
//! its `resourceVersion`.

use super::*;

impl KubeBackend {
    /// The uids of the slot Services this process applied.
    pub(super) fn service_uids(&self) -> MutexGuard<'_, HashMap<String, String>> {
        self.inner
            .service_uids
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// The anchors found so far.
    pub(super) fn anchors(&self) -> MutexGuard<'_, HashMap<String, String>> {
        self.inner
            .anchors
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// [`anchor`](Self::anchor) for reads that repeat (the endpoint refresh): a GET of the
    /// Deployment found last time, if it still anchors the release; a list otherwise.
    /// Writes go through `anchor`, which also finds a second anchor labelled by mistake.
    pub(super) async fn known_anchor(
        &self,
        release: &str,
    ) -> Result<Option<Deployment>, BackendError> {
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
    pub(super) fn anchors_release(&self, deployment: &Deployment, release: &str) -> bool {
        let labels = deployment.metadata.labels.as_ref();
        let label = |key: &str| labels.and_then(|l| l.get(key)).map(String::as_str);
        label(keys::CONTROLLER) == Some(self.inner.controller.as_str())
            && label(keys::RELEASE) == Some(release)
            && label(keys::ANCHOR) == Some("true")
    }

    /// The anchor Deployment of `release`, if it has been adopted.
    pub(super) async fn anchor(&self, release: &str) -> Result<Option<Deployment>, BackendError> {
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
    pub(super) async fn colours(&self, release: &str) -> Result<Vec<String>, BackendError> {
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
    pub(super) async fn refuse_without_record(&self, release: &str) -> Result<(), BackendError> {
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
    pub(super) async fn slots(
        &self,
        release: &str,
    ) -> Result<Option<(Deployment, Slots)>, BackendError> {
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
    pub(super) async fn update_anchor(
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
}

/// The slots in an anchor's annotations.
pub(super) fn read_slots(anchor: &Deployment) -> Result<Slots, BackendError> {
    annotation_slots(&anchor.metadata.annotations.clone().unwrap_or_default())
}

pub(super) fn annotation_slots(
    annotations: &BTreeMap<String, String>,
) -> Result<Slots, BackendError> {
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
pub(super) fn stored_revision(annotations: &BTreeMap<String, String>) -> Option<u64> {
    annotations.get(keys::STATE)?;
    Some(
        annotations
            .get(keys::REVISION)
            .and_then(|r| r.parse().ok())
            .unwrap_or(0),
    )
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
