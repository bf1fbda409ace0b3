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
        let label = |key: &str| labels.and_then(|l| keys::read(l, key));
        label(keys::CONTROLLER) == Some(self.inner.controller.as_str())
            && label(keys::RELEASE) == Some(release)
            && label(keys::ANCHOR) == Some("true")
    }

    /// The Deployments matching `selector`, a label selector of the keys in `keys`
    /// (`{controller}` and the like, filled in for each domain), listed once under the new
    /// keys and once under the old ones (see [`keys::LEGACY_PREFIX`]): an object an older
    /// version labelled is found until it is written again.
    pub(super) async fn list_both(
        &self,
        selector: impl Fn(keys::Domain) -> String,
    ) -> Result<Vec<Deployment>, BackendError> {
        let mut found: Vec<Deployment> = Vec::new();
        for domain in [keys::Domain::Current, keys::Domain::Legacy] {
            let listed = self
                .deployments()
                .list(&ListParams::default().labels(&selector(domain)))
                .await
                .map_err(|e| classify(self.call("list", "deployments", "apps"), e))?
                .items;
            for deployment in listed {
                if !found
                    .iter()
                    .any(|d| d.metadata.uid == deployment.metadata.uid)
                {
                    found.push(deployment);
                }
            }
        }
        Ok(found)
    }

    /// The anchor Deployment of `release`, if it has been adopted.
    pub(super) async fn anchor(&self, release: &str) -> Result<Option<Deployment>, BackendError> {
        let controller = &self.inner.controller;
        let mut found = self
            .list_both(|d| {
                format!(
                    "{}={controller},{}={release},{}=true",
                    d.key(keys::CONTROLLER),
                    d.key(keys::RELEASE),
                    d.key(keys::ANCHOR)
                )
            })
            .await?;
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
        let controller = &self.inner.controller;
        let found = self
            .list_both(|d| {
                format!(
                    "{}={controller},{}={release},{}",
                    d.key(keys::CONTROLLER),
                    d.key(keys::RELEASE),
                    d.key(keys::COLOUR)
                )
            })
            .await?;
        Ok(found.into_iter().filter_map(|d| d.metadata.name).collect())
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
    /// `change` returns whether there is anything to write. Keys an older version wrote
    /// move to their new names in the same patch, on the annotations and on the anchor's
    /// own labels (see [`keys::upgrade`]), so `change` sees only new names and the anchor
    /// never carries two states.
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
            keys::upgrade(&mut after);
            if !change(&mut after)? {
                return Ok(());
            }
            let labels_before = anchor.metadata.labels.clone().unwrap_or_default();
            let mut labels_after = labels_before.clone();
            keys::upgrade(&mut labels_after);
            let patch = json!({ "metadata": {
                "resourceVersion": anchor.metadata.resource_version,
                "labels": merge_patch(&labels_before, &labels_after),
                "annotations": merge_patch(&before, &after),
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

/// The JSON merge patch that turns the map `before` into `after`: changed keys with their
/// value, removed ones with `null`.
fn merge_patch(
    before: &BTreeMap<String, String>,
    after: &BTreeMap<String, String>,
) -> serde_json::Map<String, Value> {
    let mut patch = serde_json::Map::new();
    for (k, v) in after {
        if before.get(k) != Some(v) {
            patch.insert(k.clone(), v.clone().into());
        }
    }
    for k in before.keys().filter(|k| !after.contains_key(*k)) {
        patch.insert(k.clone(), Value::Null);
    }
    patch
}

/// An anchor's annotations under the new keys, whichever version wrote them.
pub(super) fn anchor_annotations(anchor: &Deployment) -> BTreeMap<String, String> {
    let mut annotations = anchor.metadata.annotations.clone().unwrap_or_default();
    keys::upgrade(&mut annotations);
    annotations
}

/// The slots in an anchor's annotations.
pub(super) fn read_slots(anchor: &Deployment) -> Result<Slots, BackendError> {
    annotation_slots(&anchor_annotations(anchor))
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

    #[test]
    fn an_anchor_written_by_an_older_version_reads_the_same() {
        let mut anchor = Deployment::default();
        let slots = r#"{"port":8080,"stable":{"deployment":"web","version":"v1"}}"#;
        anchor.metadata.annotations = Some(BTreeMap::from([
            ("cutover.io/slots".to_string(), slots.to_string()),
            ("cutover.io/state".to_string(), "{}".to_string()),
            ("cutover.io/revision".to_string(), "3".to_string()),
        ]));
        let read = read_slots(&anchor).expect("readable");
        assert_eq!(read.stable.map(|s| s.deployment).as_deref(), Some("web"));
        assert_eq!(stored_revision(&anchor_annotations(&anchor)), Some(3));
    }

    #[test]
    fn the_patch_moves_old_keys_in_one_write() {
        let before = BTreeMap::from([
            ("cutover.io/state".to_string(), "{}".to_string()),
            ("app".to_string(), "web".to_string()),
        ]);
        let mut after = before.clone();
        keys::upgrade(&mut after);
        let patch = merge_patch(&before, &after);
        assert_eq!(patch["cutover.io/state"], Value::Null);
        assert_eq!(patch[keys::STATE], "{}");
        assert!(!patch.contains_key("app"));
    }
}
