//! `cutover serve --backend kubernetes`: releases applied as `Release` objects.
//!
//! A reconcile loop over the watched objects: an object whose `metadata.generation` is
//! newer than its `status.observedGeneration` is loaded as a release file would be and
//! submitted (once the release's rollout under way, if any, has ended); every object's
//! status shows its release's rollout. Acting on a generation and recording it as
//! observed happen in that order, so a controller killed in between submits it again,
//! which the controller refuses while the rollout it started runs.

use std::collections::BTreeMap;
use std::time::Duration;

use cutover_controller::{Controller, ControllerError, RolloutStatus};
use cutover_kube::resources::{ReleaseObject, ReleaseObjects};
use serde_json::{Map, Value, json};

/// How often the objects are looked at.
const PERIOD: Duration = Duration::from_secs(1);

/// Runs the loop until the process ends.
pub async fn reconcile_forever(controller: Controller, objects: ReleaseObjects) {
    let mut submitted: BTreeMap<String, i64> = BTreeMap::new();
    let mut written: BTreeMap<String, Value> = BTreeMap::new();
    loop {
        for object in objects.objects() {
            let status = reconcile(&controller, &object, &mut submitted).await;
            if written.get(&object.name) == Some(&status) || covers(&object.status, &status) {
                continue;
            }
            match objects.set_status(&object.name, &status).await {
                Ok(()) => {
                    written.insert(object.name.clone(), status);
                }
                Err(e) => {
                    tracing::warn!(release = %object.name, error = %e, "cannot write the Release object's status")
                }
            }
        }
        tokio::time::sleep(PERIOD).await;
    }
}

/// The status `object` should show, after submitting its generation if it is new.
async fn reconcile(
    controller: &Controller,
    object: &ReleaseObject,
    submitted: &mut BTreeMap<String, i64>,
) -> Value {
    let name = &object.name;
    let observed = object
        .observed_generation
        .max(submitted.get(name).copied())
        .unwrap_or(0);
    let current = controller.status(name).ok();
    if object.generation <= observed {
        return status_of(current.as_deref(), observed, None);
    }
    if let Some(running) = current.as_deref().filter(|s| !s.done) {
        let waiting = format!(
            "generation {} waits for the rollout under way ({}); `cutover abort {name}` ends it",
            object.generation, running.description
        );
        return status_of(Some(running), observed, Some(waiting));
    }
    let release = match Controller::parse(&format!("{name}.json"), &object.document) {
        Ok(release) => release,
        Err(ControllerError::Invalid(diagnostics)) => {
            submitted.insert(name.clone(), object.generation);
            let message = diagnostics
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("\n");
            tracing::warn!(release = %name, generation = object.generation, "the Release object is invalid:\n{message}");
            let mut status = status_of(current.as_deref(), object.generation, Some(message));
            status["phase"] = "invalid".into();
            return status;
        }
        Err(e) => return status_of(current.as_deref(), observed, Some(e.to_string())),
    };
    tracing::info!(release = %name, generation = object.generation, "submitting the Release object");
    match controller.submit(release).await {
        Ok(started) => {
            submitted.insert(name.clone(), object.generation);
            status_of(Some(&started), object.generation, None)
        }
        // Retried at the next look: the backend may answer then.
        Err(e @ ControllerError::Backend { .. }) => {
            status_of(current.as_deref(), observed, Some(e.to_string()))
        }
        // Refused as written (the same version again, another backend): this generation
        // is done with; the next one is looked at afresh.
        Err(e) => {
            submitted.insert(name.clone(), object.generation);
            status_of(current.as_deref(), object.generation, Some(e.to_string()))
        }
    }
}

/// The status fields cutover writes: from the rollout, with `message` (or the rollout's
/// description) saying what is going on.
fn status_of(rollout: Option<&RolloutStatus>, observed: i64, message: Option<String>) -> Value {
    let mut status = json!({
        "observedGeneration": observed,
        "phase": Value::Null,
        "weight": Value::Null,
        "stableVersion": Value::Null,
        "candidateVersion": Value::Null,
        "outcome": Value::Null,
        "reason": Value::Null,
        "step": Value::Null,
        "message": message.clone(),
    });
    if let Some(r) = rollout {
        status["phase"] = r.phase.into();
        status["weight"] = r.weight.into();
        status["stableVersion"] = r.stable.version.clone().into();
        status["candidateVersion"] = r.candidate.version.clone().into();
        status["outcome"] = r.outcome.into();
        status["reason"] = r.reason.clone().into();
        status["step"] = r.step.map(|s| format!("{}/{}", s + 1, r.steps)).into();
        if message.is_none() {
            status["message"] = r.description.clone().into();
        }
    }
    status
}

/// Whether `stored` already shows every field of `wanted` (`null` meaning absent).
fn covers(stored: &Value, wanted: &Value) -> bool {
    let empty = Map::new();
    let stored = stored.as_object().unwrap_or(&empty);
    wanted.as_object().is_some_and(|wanted| {
        wanted
            .iter()
            .all(|(k, v)| stored.get(k).unwrap_or(&Value::Null) == v)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_status_already_shown_is_not_written_again() {
        let wanted = json!({ "observedGeneration": 2, "phase": "step", "outcome": null });
        assert!(covers(
            &json!({ "observedGeneration": 2, "phase": "step", "other": 1 }),
            &wanted
        ));
        assert!(!covers(
            &json!({ "observedGeneration": 1, "phase": "step" }),
            &wanted
        ));
        assert!(!covers(&Value::Null, &wanted));
    }
}
