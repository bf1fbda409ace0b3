//! A new rollout's start: checked against what serves and what is stored, its first
//! state stored before the request is answered (so an accepted rollout survives a crash
//! right after), then its driver spawned.

use std::sync::Arc;

use cutover_backend::BackendError;
use cutover_core::Backoff;
use cutover_core::plan::Plan;
use cutover_core::rollout::Rollout;
use cutover_core::spec::Release;

use crate::driver::{self, Start};
use crate::versions::{candidate_version, stable_definition, stable_version_hint};
use crate::{Controller, ControllerError, ReleaseRecord, RolloutStatus, status};

/// Tries at storing a new rollout's first state before the submission fails.
const STORE_ATTEMPTS: u32 = 4;

/// The wait between those tries: 100 ms, doubling to at most 1 s.
const STORE_BACKOFF: Backoff = Backoff::new(
    cutover_core::Duration::from_millis(100),
    cutover_core::Duration::from_secs(1),
);

impl Controller {
    /// Checks a new rollout of `release` against what serves and what is stored, stores
    /// its first state, and starts its driver.
    pub(crate) async fn start_rollout(
        &self,
        release: Release,
    ) -> Result<Arc<RolloutStatus>, ControllerError> {
        let name = release.metadata.name.clone();
        // Checked again: a `retry` may have restarted it before it was held still.
        self.refuse_if_under_way(&name)?;
        if release.spec.backend.name() != self.inner.backend.kind() {
            return Err(ControllerError::Conflict(format!(
                "release '{name}' is for the {} backend, and this controller runs the {} one",
                release.spec.backend.name(),
                self.inner.backend.kind()
            )));
        }
        let plan = Plan::from_release(&release).map_err(|e| {
            ControllerError::Conflict(format!("release '{name}' has no usable plan: {e}"))
        })?;
        let backend = self.inner.backend.clone();
        let previous = match backend.load_state(&name).await {
            Ok(previous) => previous,
            Err(BackendError::Invalid(message)) if self.quarantine_reason(&name).is_some() => {
                return Err(ControllerError::Quarantined {
                    name,
                    reason: format!("cannot read the stored release: {message}"),
                });
            }
            Err(e) => return Err(self.backend_error(e)),
        };
        let (previous_record, revision) = match previous {
            Some(stored) => (
                serde_json::from_value::<ReleaseRecord>(stored.state).ok(),
                Some(stored.version),
            ),
            None => (None, None),
        };
        let hint = stable_version_hint(&release, previous_record.as_ref());
        let stable = backend
            .stable(&release, &hint)
            .await
            .map_err(|e| self.backend_error(e))?;
        let candidate_version = candidate_version(&release);
        if candidate_version == stable.version {
            return Err(ControllerError::Conflict(format!(
                "the new version is named '{candidate_version}', which is the version serving now; \
                 give the release a new spec.version (or image)"
            )));
        }
        let stable_definition =
            stable_definition(&release, previous_record.as_ref(), &stable.version);
        let mut earlier = Vec::new();
        if let Some(previous) = previous_record
            && let Ok(rollout) = Rollout::from_json(previous.rollout.clone())
        {
            earlier = previous.earlier.clone();
            earlier.push(status::summary(&previous, &rollout));
            let excess = earlier.len().saturating_sub(status::EARLIER_LIMIT);
            earlier.drain(..excess);
        }
        let rollout = Rollout::new(plan, self.inner.clock.now());
        let record = ReleaseRecord {
            release,
            stable_version: stable.version.clone(),
            candidate_version,
            rollout: rollout.to_json(),
            earlier,
            stable_definition,
        };
        // Stored before it is accepted: a controller killed right after answering
        // resumes this rollout instead of losing it.
        let state = serde_json::to_value(&record).map_err(|e| {
            ControllerError::Conflict(format!("cannot encode the rollout state of '{name}': {e}"))
        })?;
        let revision = Some(self.store_first_state(&name, &state, revision).await?);
        tracing::info!(
            release = %name,
            stable = %record.stable_version,
            candidate = %record.candidate_version,
            "rollout submitted"
        );
        if let Some(old) = self.drivers().remove(&name) {
            old.task.abort();
        }
        let handle = driver::spawn(
            self.inner.clone(),
            Start {
                record,
                rollout,
                revision,
                stable,
                candidate: None,
            },
        );
        let status = handle.status.borrow().clone();
        // Its state was readable again (an operator mended or removed the file).
        self.inner
            .quarantined
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(&name);
        self.drivers().insert(name, handle);
        Ok(status)
    }

    /// Stores a new rollout's first state at `expected`, retrying a failure that may pass;
    /// a write that landed with its answer lost is answered as a replay on the retry. Past
    /// the last try, a stored state equal to `state` still counts as stored, so a rollout
    /// is never left stored and unstarted while the person is told it failed.
    async fn store_first_state(
        &self,
        name: &str,
        state: &serde_json::Value,
        expected: Option<u64>,
    ) -> Result<u64, ControllerError> {
        let backend = &self.inner.backend;
        let mut backoff = STORE_BACKOFF;
        loop {
            let error = match backend.store_state(name, state, expected).await {
                Ok(revision) => return Ok(revision),
                Err(e) => e,
            };
            let conflict = matches!(error, BackendError::Conflict { .. });
            if !conflict && error.is_retryable() && backoff.failures() + 1 < STORE_ATTEMPTS {
                tracing::warn!(release = name, error = %error, "cannot store the new rollout yet; retrying");
                tokio::time::sleep(backoff.next_delay().into()).await;
                continue;
            }
            if let Ok(Some(stored)) = backend.load_state(name).await
                && stored.state == *state
            {
                return Ok(stored.version);
            }
            return Err(self.backend_error(error));
        }
    }
}
