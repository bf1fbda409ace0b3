//! The phases of a rollout, each carrying only the data valid in it.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::Timestamp;
use super::io::Operation;
use crate::spec::HookPoint;

/// Where a rollout is.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "phase")]
pub enum Phase {
    /// Waiting for the `preRollout` hooks.
    PreRollout,
    /// Waiting for the candidate to be ready.
    Deploying,
    /// Walking plan step `index`.
    Step {
        /// Index into the plan's steps.
        index: usize,
        /// How far the step is.
        progress: StepProgress,
    },
    /// All steps done: final route, backend promotion.
    Promoting {
        /// How far promotion is.
        progress: PromotionProgress,
    },
    /// Promoted; the previous version runs on until `until`, then is retired.
    ScalingDown {
        /// When the previous version is retired; `None` once its retirement was asked for.
        until: Option<Timestamp>,
    },
    /// Going back to 100 % stable and removing the candidate.
    RollingBack {
        /// Why.
        reason: RollbackReason,
        /// How far.
        progress: RollbackProgress,
    },
    /// Finished. Only `retry` (after a rollback) leaves this phase.
    Done {
        /// How it ended.
        outcome: Outcome,
    },
}

/// Progress within a step.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "state")]
pub enum StepProgress {
    /// A route change was sent; waiting for the proxy to apply it.
    Routing {
        /// The route's generation.
        generation: u64,
    },
    /// Pausing until a time, or (`None`) until a person promotes.
    Pausing {
        /// When the pause ends.
        until: Option<Timestamp>,
    },
    /// An analysis is running.
    Analyzing {
        /// The analysis run.
        run: u32,
    },
    /// The analysis could not decide: waiting for a person to promote, resume (run it
    /// again) or abort.
    Inconclusive {
        /// The run that was inconclusive.
        run: u32,
    },
    /// A `prePromotion` gate step: waiting for its hooks.
    Gate,
    /// The gate answered non-2xx; it is asked again at `retry_at`.
    GateHeld {
        /// When to ask again.
        retry_at: Timestamp,
    },
    /// The step is done but a manual pause holds the rollout here.
    Complete,
}

/// Progress of promotion.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "state")]
pub enum PromotionProgress {
    /// The final route (100 % candidate) was sent.
    Routing {
        /// The route's generation.
        generation: u64,
    },
    /// The backend is making the candidate stable.
    Swapping,
}

/// Progress of a rollback.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "state")]
pub enum RollbackProgress {
    /// The all-stable route was sent.
    Routing {
        /// The route's generation.
        generation: u64,
    },
    /// The candidate is being removed.
    Retiring,
}

/// Why a rollout rolled back.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "kind")]
pub enum RollbackReason {
    /// A person ran `abort`.
    Aborted,
    /// An analysis failed.
    AnalysisFailed {
        /// The plan step.
        step: usize,
        /// Which metric and why.
        detail: String,
    },
    /// The proxy tripped a guardrail.
    Guardrail {
        /// The guardrail.
        name: String,
        /// What it saw.
        detail: String,
    },
    /// The progress deadline passed.
    DeadlineExceeded,
    /// A hook that gates the rollout failed.
    HookFailed {
        /// Which point.
        point: HookPoint,
        /// What failed.
        detail: String,
    },
    /// The candidate could not start.
    CandidateFailed {
        /// The backend's words.
        reason: String,
    },
    /// A backend operation kept failing.
    BackendFailed {
        /// Which operation.
        operation: Operation,
        /// The last error.
        message: String,
    },
}

impl fmt::Display for RollbackReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RollbackReason::Aborted => f.write_str("aborted by a person"),
            RollbackReason::AnalysisFailed { step, detail } => {
                write!(f, "analysis at step {step} failed: {detail}")
            }
            RollbackReason::Guardrail { name, detail } => {
                write!(f, "guardrail '{name}' tripped: {detail}")
            }
            RollbackReason::DeadlineExceeded => f.write_str("progress deadline exceeded"),
            RollbackReason::HookFailed { point, detail } => {
                write!(f, "{point} hook failed: {detail}")
            }
            RollbackReason::CandidateFailed { reason } => {
                write!(f, "the candidate could not start: {reason}")
            }
            RollbackReason::BackendFailed { operation, message } => {
                write!(f, "{operation} kept failing: {message}")
            }
        }
    }
}

/// How a rollout ended.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "outcome")]
pub enum Outcome {
    /// The candidate is the new stable version.
    Promoted,
    /// Back on the old version, the candidate removed.
    RolledBack {
        /// Why.
        reason: RollbackReason,
    },
}

impl Phase {
    /// A short description for messages: "at step 3 (analyzing)".
    pub fn describe(&self) -> String {
        match self {
            Phase::PreRollout => "running preRollout hooks".into(),
            Phase::Deploying => "deploying the candidate".into(),
            Phase::Step { index, progress } => {
                let what = match progress {
                    StepProgress::Routing { .. } => "applying a route",
                    StepProgress::Pausing { until: Some(_) } => "pausing",
                    StepProgress::Pausing { until: None } => "waiting for promote",
                    StepProgress::Analyzing { .. } => "analyzing",
                    StepProgress::Inconclusive { .. } => "holding on an inconclusive analysis",
                    StepProgress::Gate => "asking the prePromotion gate",
                    StepProgress::GateHeld { .. } => "held by the prePromotion gate",
                    StepProgress::Complete => "holding after the step",
                };
                format!("at step {index} ({what})")
            }
            Phase::Promoting { progress } => match progress {
                PromotionProgress::Routing { .. } => "promoting (moving all traffic)".into(),
                PromotionProgress::Swapping => "promoting (making the candidate stable)".into(),
            },
            Phase::ScalingDown { .. } => "promoted (scaling down the previous version)".into(),
            Phase::RollingBack { .. } => "rolling back".into(),
            Phase::Done {
                outcome: Outcome::Promoted,
            } => "promoted".into(),
            Phase::Done {
                outcome:
                    Outcome::RolledBack {
                        reason: RollbackReason::Aborted,
                    },
            } => "aborted".into(),
            Phase::Done {
                outcome: Outcome::RolledBack { .. },
            } => "rolled back".into(),
        }
    }
}
