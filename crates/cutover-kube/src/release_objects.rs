//! `cutover serve --backend kubernetes`: releases applied as `Release` objects.
//!
//! A reconcile loop over the watched objects. An object whose `metadata.generation` is
//! newer than what was acted on is loaded as a release file would be and submitted (once
//! the release's rollout under way, if any, has ended); the object's status shows the
//! rollout it started. What was acted on is known three ways, the first surviving any
//! restart: the rollout's record (the release is submitted with the object's uid and
//! generation in its annotations, and the record is stored with compare-and-swap next to
//! the workload before anything happens), the object's `status.observedGeneration`, and
//! this process's memory. So a generation is submitted once, even when the leader changes
//! between the submission and the status write.
//!
//! The rollouts themselves belong to the controller, which sits above this crate: the loop
//! reaches them through [`Rollouts`], which the controller's caller implements, so this
//! crate never depends on the controller.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::time::{Duration, Instant};

use cutover_core::Backoff;
use cutover_core::load::{self, Format, Source};
use cutover_core::spec::Release;
use serde_json::{Map, Value, json};

use crate::resources::{ReleaseObject, ReleaseObjects};

/// How often the objects are looked at.
const PERIOD: Duration = Duration::from_secs(1);
/// The wait before a submission that failed for now is tried again: 2 s after the first
/// failure, doubling with each failure in a row, at most 60 s.
const RETRY_BACKOFF: Backoff = Backoff::new(
    cutover_core::Duration::from_secs(2),
    cutover_core::Duration::from_secs(60),
);
/// The wait before a submission that cannot pass by itself is tried again.
const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// Release annotation: the uid of the object a rollout was started from.
pub const OBJECT_UID: &str = "cutover.dev/object-uid";
/// Release annotation: the object's generation the rollout was started from.
pub const OBJECT_GENERATION: &str = "cutover.dev/object-generation";

/// What the loop needs to know of a release's rollout: what its status shows, and the
/// annotations that say which object and generation started it.
#[derive(Clone, Debug, Default)]
pub struct RolloutSummary {
    /// The release's annotations (with [`OBJECT_UID`] and [`OBJECT_GENERATION`] when an
    /// object started the rollout).
    pub annotations: BTreeMap<String, String>,
    /// Whether the rollout has ended: only then may a newer generation be submitted.
    pub done: bool,
    /// The rollout's phase, as the API names it.
    pub phase: &'static str,
    /// What is going on, in a sentence: the status's message when there is no other.
    pub description: String,
    /// The candidate's share of traffic, in percent.
    pub weight: u8,
    /// The version that served before this rollout.
    pub previous_version: String,
    /// The candidate's version.
    pub candidate_version: String,
    /// How the rollout ended, once it has.
    pub outcome: Option<&'static str>,
    /// Why it was rolled back, if it was.
    pub reason: Option<String>,
    /// The current step (from 0), while in one.
    pub step: Option<usize>,
    /// How many steps the plan has.
    pub steps: usize,
}

/// Why a submission did not start a rollout.
#[derive(Debug, thiserror::Error)]
pub enum SubmitError {
    /// The backend failed: tried again with back-off if `retryable` (it may pass by
    /// itself), else after the longest wait (the cluster may be changed meanwhile).
    #[error("{message}")]
    Unavailable {
        /// What failed, ready to show on the object.
        message: String,
        /// Whether the failure may pass by itself.
        retryable: bool,
    },
    /// Refused as written (the same version again, another backend, no usable plan):
    /// done with until the next generation.
    #[error("{0}")]
    Refused(String),
}

/// The rollouts the loop starts and reads: the controller, given by its caller.
pub trait Rollouts: Send + Sync + 'static {
    /// The release's current (or last) rollout, if it has one.
    fn rollout(&self, name: &str) -> Option<RolloutSummary>;
    /// Starts a rollout of `release`.
    fn submit(
        &self,
        release: Release,
    ) -> impl Future<Output = Result<RolloutSummary, SubmitError>> + Send;
}

/// Why a generation was not rolled out, shown on the object until the next generation.
#[derive(Clone, Debug)]
struct Note {
    generation: i64,
    phase: &'static str,
    message: String,
}

/// What the loop remembers, by object uid.
#[derive(Default)]
struct Memory {
    /// The newest generation submitted (or refused) by this process.
    submitted: BTreeMap<String, i64>,
    /// Why the last generation acted on did not start a rollout.
    notes: BTreeMap<String, Note>,
    /// When a submission that failed for now may be tried again, and how many failed.
    retry: BTreeMap<String, (Instant, u32)>,
    /// The status last written.
    written: BTreeMap<String, Value>,
}

/// Runs the loop until the process ends (or the task running it is aborted).
pub async fn reconcile_forever(rollouts: impl Rollouts, objects: ReleaseObjects) {
    let mut memory = Memory::default();
    loop {
        let seen = objects.objects();
        let uids: BTreeSet<&String> = seen.iter().map(|o| &o.uid).collect();
        memory.submitted.retain(|uid, _| uids.contains(uid));
        memory.notes.retain(|uid, _| uids.contains(uid));
        memory.retry.retain(|uid, _| uids.contains(uid));
        memory.written.retain(|uid, _| uids.contains(uid));
        for object in &seen {
            let status = reconcile(&rollouts, object, &mut memory).await;
            if memory.written.get(&object.uid) == Some(&status) || covers(&object.status, &status) {
                continue;
            }
            match objects.set_status(&object.name, &status).await {
                Ok(()) => {
                    memory.written.insert(object.uid.clone(), status);
                }
                Err(e) => {
                    tracing::warn!(release = %object.name, error = %e, "cannot write the Release object's status")
                }
            }
        }
        tokio::time::sleep(PERIOD).await;
    }
}

/// The generation of `object` that `rollout` was started from, if it was.
fn started_from(rollout: &RolloutSummary, object: &ReleaseObject) -> Option<i64> {
    if rollout.annotations.get(OBJECT_UID) != Some(&object.uid) {
        return None;
    }
    rollout.annotations.get(OBJECT_GENERATION)?.parse().ok()
}

/// The status `object` should show, after submitting its generation if it is new.
async fn reconcile(rollouts: &impl Rollouts, object: &ReleaseObject, memory: &mut Memory) -> Value {
    let name = &object.name;
    let uid = &object.uid;
    let current = rollouts.rollout(name);
    // The release's rollout, if this object started it.
    let mine = current
        .as_ref()
        .and_then(|r| started_from(r, object).map(|g| (r, g)));
    let observed = [
        object.observed_generation,
        memory.submitted.get(uid).copied(),
        mine.map(|(_, g)| g),
    ]
    .into_iter()
    .flatten()
    .max()
    .unwrap_or(0);
    if object.generation <= observed {
        if let Some(note) = memory.notes.get(uid).filter(|n| n.generation == observed) {
            return noted(mine.map(|(r, _)| r), observed, note);
        }
        return match mine {
            Some((rollout, generation)) if generation == observed => {
                status_of(Some(rollout), generation, None)
            }
            // Nothing of this process's to add, or a later generation was refused (by an
            // earlier leader, whose note this one does not have): what is shown stays.
            _ => object.status.clone(),
        };
    }
    if let Some((at, _)) = memory.retry.get(uid)
        && Instant::now() < *at
    {
        return object.status.clone();
    }
    if let Some(running) = current.as_ref().filter(|s| !s.done) {
        let waiting = format!(
            "generation {} waits for the rollout under way ({}); `cutover abort {name}` ends it",
            object.generation, running.description
        );
        return status_of(mine.map(|(r, _)| r), observed, Some(waiting));
    }
    let mut release = match parse(name, &object.document) {
        Ok(release) => release,
        Err(diagnostics) => {
            let message = diagnostics
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("\n");
            tracing::warn!(release = %name, generation = object.generation, "the Release object is invalid:\n{message}");
            return refuse(memory, object, "invalid", message);
        }
    };
    release
        .metadata
        .annotations
        .insert(OBJECT_UID.into(), uid.clone());
    release
        .metadata
        .annotations
        .insert(OBJECT_GENERATION.into(), object.generation.to_string());
    tracing::info!(release = %name, generation = object.generation, "submitting the Release object");
    match rollouts.submit(release).await {
        Ok(started) => {
            memory.submitted.insert(uid.clone(), object.generation);
            memory.retry.remove(uid);
            status_of(Some(&started), object.generation, None)
        }
        // The backend may answer later (or the cluster change: the Deployment applied,
        // a Role fixed): tried again, less and less often; at once only what may pass
        // by itself.
        Err(SubmitError::Unavailable { message, retryable }) => {
            let failures = memory.retry.get(uid).map_or(0, |(_, n)| *n) + 1;
            let wait = if retryable {
                RETRY_BACKOFF.delay_after(failures).into()
            } else {
                MAX_BACKOFF
            };
            memory
                .retry
                .insert(uid.clone(), (Instant::now() + wait, failures));
            let message = format!("{message}; trying again in {}s", wait.as_secs());
            status_of(mine.map(|(r, _)| r), observed, Some(message))
        }
        // Refused as written (the same version again, another backend, no usable plan):
        // done with until the next generation.
        Err(SubmitError::Refused(message)) => refuse(memory, object, "refused", message),
    }
}

/// Loads an object's document as the controller's API loads a release file: with every
/// check, but no `${VAR}` interpolation and no `CUTOVER_` overrides.
fn parse(name: &str, document: &str) -> Result<Release, Vec<cutover_core::Diagnostic>> {
    let file = format!("{name}.json");
    let source = Source {
        name: &file,
        text: document,
        format: Format::from_path(std::path::Path::new(&file)),
    };
    load::load_release_resolved(source).map(|(release, _warnings)| release)
}

/// Records that `object`'s generation was acted on without a rollout, and why.
fn refuse(
    memory: &mut Memory,
    object: &ReleaseObject,
    phase: &'static str,
    message: String,
) -> Value {
    let note = Note {
        generation: object.generation,
        phase,
        message,
    };
    memory
        .submitted
        .insert(object.uid.clone(), object.generation);
    memory.retry.remove(&object.uid);
    let status = noted(None, object.generation, &note);
    memory.notes.insert(object.uid.clone(), note);
    status
}

fn noted(rollout: Option<&RolloutSummary>, observed: i64, note: &Note) -> Value {
    let mut status = status_of(rollout, observed, Some(note.message.clone()));
    status["phase"] = note.phase.into();
    status
}

/// The status fields cutover writes: from the rollout, with `message` (or the rollout's
/// description) saying what is going on.
fn status_of(rollout: Option<&RolloutSummary>, observed: i64, message: Option<String>) -> Value {
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
        status["stableVersion"] = r.previous_version.clone().into();
        status["candidateVersion"] = r.candidate_version.clone().into();
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
