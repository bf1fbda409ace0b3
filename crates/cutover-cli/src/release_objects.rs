//! `cutover serve --backend kubernetes`: the controller as the rollouts that
//! `cutover_kube::release_objects`' reconcile loop starts and reads. The loop lives in
//! cutover-kube; this crate, above both, joins it to the controller.

use cutover_controller::{Controller, ControllerError, RolloutStatus};
use cutover_core::spec::Release;
use cutover_kube::release_objects::{RolloutSummary, Rollouts, SubmitError};
use cutover_kube::resources::ReleaseObjects;

/// The controller, as the reconcile loop sees it.
struct ControllerRollouts(Controller);

impl Rollouts for ControllerRollouts {
    fn rollout(&self, name: &str) -> Option<RolloutSummary> {
        self.0.status(name).ok().map(|status| summary(&status))
    }

    async fn submit(&self, release: Release) -> Result<RolloutSummary, SubmitError> {
        match self.0.submit(release).await {
            Ok(started) => Ok(summary(&started)),
            Err(e @ ControllerError::Backend { .. }) => {
                let retryable =
                    matches!(&e, ControllerError::Backend { source, .. } if source.is_retryable());
                Err(SubmitError::Unavailable {
                    message: e.to_string(),
                    retryable,
                })
            }
            Err(e) => Err(SubmitError::Refused(e.to_string())),
        }
    }
}

/// Runs the reconcile loop over `objects` with `controller`'s rollouts until the process
/// ends.
pub async fn reconcile_forever(controller: Controller, objects: ReleaseObjects) {
    cutover_kube::release_objects::reconcile_forever(ControllerRollouts(controller), objects).await;
}

/// What the loop reads of a rollout's status.
fn summary(status: &RolloutStatus) -> RolloutSummary {
    RolloutSummary {
        annotations: status.annotations.clone(),
        done: status.done,
        phase: status.phase,
        description: status.description.clone(),
        weight: status.weight,
        previous_version: status.previous_version.clone(),
        candidate_version: status.candidate.version.clone(),
        outcome: status.outcome,
        reason: status.reason.clone(),
        step: status.step,
        steps: status.steps,
    }
}
