//! The rollout state in service labels: the compare-and-swap write on the service that holds
//! it, and its move to the next stable service when its holder is retired.

use super::*;

impl SwarmBackend {
    /// Writes the state with revision `expected + 1`, compare-and-swap, in place on the
    /// service that holds it (the stable service, for a release's first write). The state
    /// stays on that service until it is retired, when [`move_state`](Self::move_state)
    /// carries it to the new stable service: one place decides every write.
    ///
    /// The write happens only if the holder still carries revision `expected` when Swarm
    /// applies it (the revision is checked on the service as read for the update, and the
    /// update names that read's version index). A write whose reply was lost is
    /// recognised when it is sent again (the holder already carries `expected + 1` with
    /// this very text) and succeeds, so a timeout never looks like another writer.
    /// Called with the release's lock held.
    pub(super) async fn store_locked(
        &self,
        release: &str,
        text: &str,
        expected: Option<u64>,
    ) -> Result<u64, BackendError> {
        let slots = self.slots(release).await?;
        let conflict = || BackendError::Conflict {
            release: release.to_string(),
        };
        let revision = expected.unwrap_or(0) + 1;
        let holder = slots.state_holder();
        // A replay only if this process made that write: a takeover's fence writes the
        // same text one revision up, and a dead controller's next write must not pass for
        // a replay of it.
        let writer = &self.inner.writer;
        let write = Request {
            expected,
            text,
            writer,
        };
        let held = Held {
            revision: holder.and_then(Managed::revision),
            text: holder
                .and_then(|h| h.state.as_ref())
                .map(|(_, text)| text.as_str()),
            writer: holder.and_then(|h| h.writer.as_deref()),
        };
        match decide(held, write) {
            Decision::Replay { revision } => return Ok(revision),
            Decision::Conflict => return Err(conflict()),
            Decision::Write { .. } => {}
        }
        let Some(target) = holder.or(slots.stable.as_ref()) else {
            return Err(BackendError::Invalid(format!(
                "release '{release}' has no service to keep its state on"
            )));
        };
        self.update_labels(&target.id, |labels| {
            // Checked on the service as read for this very update: an earlier attempt
            // whose reply was lost may have landed since the list above.
            let held = Held {
                revision: stored_revision(labels),
                text: labels.get(labels::STATE).and_then(Value::as_str),
                writer: labels.get(labels::WRITER).and_then(Value::as_str),
            };
            match decide(held, write) {
                Decision::Replay { .. } => Ok(false),
                Decision::Conflict => Err(conflict()),
                Decision::Write { revision } => {
                    labels.insert(labels::STATE.into(), text.into());
                    labels.insert(labels::REVISION.into(), revision.to_string().into());
                    labels.insert(labels::WRITER.into(), writer.clone().into());
                    Ok(true)
                }
            }
        })
        .await?;
        Ok(revision)
    }

    /// Carries the state from `from`, which is about to be removed, to `to`, unless `to`
    /// already has the same or a newer revision. Called with the release's lock held.
    pub(super) async fn move_state(
        &self,
        from: &Managed,
        to: &Managed,
    ) -> Result<(), BackendError> {
        let Some((revision, state)) = from.state.clone() else {
            return Ok(());
        };
        self.update_labels(&to.id, |labels| {
            if stored_revision(labels).is_some_and(|there| there >= revision) {
                return Ok(false);
            }
            labels.insert(labels::STATE.into(), state.clone().into());
            labels.insert(labels::REVISION.into(), revision.to_string().into());
            match &from.writer {
                Some(writer) => labels.insert(labels::WRITER.into(), writer.clone().into()),
                None => labels.remove(labels::WRITER),
            };
            Ok(true)
        })
        .await?;
        tracing::info!(from = %from.name, to = %to.name, revision, "rollout state moved");
        Ok(())
    }
}

/// The revision of the state in a service's labels: `None` without a state, 0 for a state
/// whose revision is missing or unreadable (as [`Managed::from_service`] reads it).
pub(super) fn stored_revision(labels: &Map<String, Value>) -> Option<u64> {
    labels.get(labels::STATE)?;
    Some(
        labels
            .get(labels::REVISION)
            .and_then(Value::as_str)
            .and_then(|r| r.parse().ok())
            .unwrap_or(0),
    )
}
