//! The controller's start: every stored release taken over from the controller before
//! (`Backend::recover`, which fences off its writes still in flight), its state read, and
//! its driver resumed; a release whose state cannot be used is quarantined, listed with
//! the reason, and every other release resumes.

use cutover_backend::{BackendError, Slot, SlotView};
use cutover_core::Backoff;
use cutover_core::rollout::{Outcome, Phase, Rollout};

use crate::driver::{self, Start};
use crate::{Controller, ControllerError, ReleaseRecord, STORE_HINT};

impl Controller {
    pub(crate) async fn resume_all(&self) -> Result<(), ControllerError> {
        /// Tries at `Backend::recover` before the start fails.
        const RECOVER_ATTEMPTS: u32 = 5;
        /// The wait between those tries: 250 ms, doubling.
        const RECOVER_BACKOFF: Backoff = Backoff::new(
            cutover_core::Duration::from_millis(250),
            cutover_core::Duration::from_secs(4),
        );
        let backend = self.inner.backend.clone();
        let names = backend
            .releases()
            .await
            .map_err(|e| self.backend_error(e))?;
        // First, every release: the instances outlived the old controller, and are
        // supervised again; and a backend whose store is remote fences off writes the old
        // controller still had in flight, so the state read next is the last one. All of
        // them before any driver starts, so a start that fails here has done nothing.
        let mut recovered = Vec::new();
        'releases: for name in names {
            let mut backoff = RECOVER_BACKOFF;
            while let Err(e) = backend.recover(&name).await {
                if !e.is_retryable() {
                    self.quarantine(&name, format!("cannot take the release over: {e}"));
                    continue 'releases;
                }
                if backoff.failures() + 1 == RECOVER_ATTEMPTS {
                    // Resuming without it could let the old controller's last write land
                    // after this one read the state: better not to start.
                    tracing::error!(release = %name, error = %e, "cannot take the release over");
                    return Err(self.backend_error(e));
                }
                tracing::warn!(release = %name, error = %e, "cannot take the release over yet; retrying");
                tokio::time::sleep(backoff.next_delay().into()).await;
            }
            recovered.push(name);
        }
        for name in recovered {
            let stored = match backend.load_state(&name).await {
                Ok(Some(stored)) => stored,
                Ok(None) => continue,
                // One unreadable release must not keep the others from resuming.
                Err(BackendError::Invalid(message)) => {
                    self.quarantine(&name, format!("cannot read the stored release: {message}"));
                    continue;
                }
                Err(e) => return Err(self.backend_error(e)),
            };
            let record: ReleaseRecord = match serde_json::from_value(stored.state) {
                Ok(record) => record,
                Err(e) => {
                    self.quarantine(
                        &name,
                        format!("the stored release is not a release record ({e}); {STORE_HINT}"),
                    );
                    continue;
                }
            };
            let mut rollout = match Rollout::from_json(record.rollout.clone()) {
                Ok(rollout) => rollout,
                Err(e) => {
                    self.quarantine(
                        &name,
                        format!("the stored rollout cannot be read ({e}); {STORE_HINT}"),
                    );
                    continue;
                }
            };
            if !rollout.is_done() {
                rollout.resume(self.inner.clock.now());
                tracing::info!(release = %name, phase = %rollout.phase().describe(), "resuming");
            }
            // Endpoints that cannot be read now start empty: the driver's refresh reads
            // them again, and one release's trouble does not keep the others from resuming.
            let slot = |slot: Slot| {
                let backend = backend.clone();
                let name = name.clone();
                async move {
                    backend.endpoints(&name, slot).await.unwrap_or_else(|e| {
                        tracing::warn!(release = %name, ?slot, error = %e, "cannot read the endpoints yet");
                        None
                    })
                }
            };
            let stable = slot(Slot::Stable).await.unwrap_or_else(|| SlotView {
                version: serving_version(&record, &rollout).to_string(),
                endpoints: Vec::new(),
            });
            let candidate = slot(Slot::Candidate).await;
            let handle = driver::spawn(
                self.inner.clone(),
                Start {
                    record,
                    rollout,
                    revision: Some(stored.version),
                    stable,
                    candidate,
                },
            );
            self.drivers().insert(name, handle);
        }
        Ok(())
    }

    /// Leaves `release` alone: no driver, a `quarantined` entry in the API's list and
    /// an error log line saying why and what to do.
    pub(crate) fn quarantine(&self, release: &str, reason: String) {
        tracing::error!(release = %release, reason = %reason, "release quarantined: its stored state cannot be used; every other release resumes");
        self.inner
            .quarantined
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(release.to_string(), reason);
    }

    /// The quarantine reason of `release`, if it is quarantined.
    pub(crate) fn quarantine_reason(&self, release: &str) -> Option<String> {
        self.inner
            .quarantined
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(release)
            .cloned()
    }
}

/// The version the stable slot runs as far as the record knows, for a start that cannot
/// read the slot: the candidate once the rollout promoted it (scaling down or done), the
/// version before it otherwise.
fn serving_version<'a>(record: &'a ReleaseRecord, rollout: &Rollout) -> &'a str {
    let promoted = matches!(rollout.phase(), Phase::ScalingDown { .. })
        || matches!(rollout.outcome(), Some(Outcome::Promoted));
    if promoted {
        &record.candidate_version
    } else {
        &record.stable_version
    }
}
