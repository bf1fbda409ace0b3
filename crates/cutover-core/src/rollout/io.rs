//! What goes in and out of the state machine: observations and commands in, actions out.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::judge::{AnalysisProgress, Verdict};
use crate::plan::AnalysisStage;
use crate::spec::{HookPoint, MatchRule, Trigger};

use super::Timestamp;

/// Something a person may want to hear about (out of [`super::Rollout::poll_event`]):
/// what the controller's notifications are sent for.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RolloutEvent {
    /// When.
    pub at: Timestamp,
    /// Which kind of event.
    pub trigger: Trigger,
    /// The plan step (from 0) it happened at, if at one.
    pub step: Option<usize>,
    /// Why, in words (an analysis's detail, a rollback's reason).
    pub reason: String,
}

/// One of the two (or, during scale-down, three) workloads of a release.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Slot {
    /// The version serving before the rollout.
    Stable,
    /// The version being rolled out.
    Candidate,
    /// After promotion: the former stable version, running on until the scale-down delay.
    Previous,
}

/// What the proxy should do with the release's traffic. Always the whole desired state,
/// never a delta, so applying it twice is harmless.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Route {
    /// Percentage of weighted traffic sent to the candidate (stable gets the rest).
    pub candidate_weight: u8,
    /// Requests matching any of these go to the candidate whatever the weight.
    pub header_route: Vec<MatchRule>,
    /// Percentage of requests copied to the candidate.
    pub mirror_percent: u8,
}

/// A backend or proxy operation, named in [`Observation::BackendError`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Operation {
    /// [`Action::Deploy`].
    Deploy,
    /// [`Action::SetRoute`].
    SetRoute,
    /// [`Action::Promote`].
    Promote,
    /// [`Action::Retire`].
    Retire,
}

impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Operation::Deploy => "deploying the candidate",
            Operation::SetRoute => "setting the route",
            Operation::Promote => "promoting the candidate",
            Operation::Retire => "retiring a slot",
        })
    }
}

/// What the driver must do. Every action is idempotent: a driver that restarts re-runs the
/// actions of the persisted phase (see `Rollout::resume`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "action")]
pub enum Action {
    /// Write the state (`Rollout` serialized) where the workload lives, before carrying
    /// out the actions that follow it. Always comes first in a batch.
    Persist,
    /// Run every hook of this point and report one [`Observation::HookResult`].
    /// `preRollout` and `prePromotion` are awaited (and re-issued after a restart, so
    /// they run at least once); `postPromotion` and `onRollback` are informational, their
    /// result is ignored, and a controller that dies right after issuing them does not
    /// issue them again (at most once).
    RunHook {
        /// Which hooks.
        point: HookPoint,
    },
    /// Create (or find already created) the candidate slot with the new version, and
    /// report [`Observation::CandidateReady`] or [`Observation::CandidateFailed`].
    Deploy,
    /// Apply this route in the proxy and report [`Observation::RouteApplied`].
    SetRoute {
        /// Increases with every new route; an acknowledgement of an older one is ignored.
        generation: u64,
        /// The desired route.
        route: Route,
    },
    /// Start analysis run `run` of these metrics; report its [`Observation::AnalysisVerdict`].
    StartAnalysis {
        /// Identifies the run; a verdict for another run is ignored.
        run: u32,
        /// The plan step it belongs to.
        step: usize,
        /// The metrics.
        metrics: Vec<String>,
        /// Where in the walk it runs.
        stage: AnalysisStage,
        /// Where the run stands: when it started and, after a restart, its measurements
        /// so far. The driver goes on from here rather than starting the run over.
        progress: AnalysisProgress,
        /// Issued again by `Rollout::resume`: the driver restarted while the run was under
        /// way (its providers may have restarted with it).
        #[serde(default)]
        resumed: bool,
    },
    /// Stop analysis run `run`; its verdict no longer matters.
    StopAnalysis {
        /// The run.
        run: u32,
    },
    /// Make the candidate the stable slot (the former stable becomes `Previous`), point
    /// the route's stable version at it with all traffic, and report
    /// [`Observation::Promoted`].
    Promote,
    /// Remove a slot's workload entirely and report [`Observation::Retired`]. Removing
    /// what is already gone succeeds. A backend carries out operations on one slot in
    /// order: a `Retire` issued while that slot's `Deploy` is still under way (an abort
    /// during deployment) waits for or cancels the deploy, so nothing it creates outlives
    /// the retirement.
    Retire {
        /// `Candidate` on rollback, `Previous` after the scale-down delay.
        slot: Slot,
    },
}

/// What happened, reported by the driver.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "observation")]
pub enum Observation {
    /// The candidate's instances are all running and ready.
    CandidateReady,
    /// The candidate cannot start (bad image, crash loop): not worth retrying.
    CandidateFailed {
        /// The backend's own words.
        reason: String,
    },
    /// The proxy applied the route of this generation.
    RouteApplied {
        /// From [`Action::SetRoute`].
        generation: u64,
    },
    /// The hooks of a point finished.
    HookResult {
        /// Which point.
        point: HookPoint,
        /// Whether every hook answered 2xx.
        passed: bool,
        /// What failed, for the record.
        detail: String,
    },
    /// An analysis run reached its verdict.
    AnalysisVerdict {
        /// From [`Action::StartAnalysis`].
        run: u32,
        /// The run's verdict.
        verdict: Verdict,
        /// Which metric decided and why.
        detail: String,
    },
    /// An analysis run took a measurement: its progress so far, to persist, so that a
    /// controller that restarts goes on from it. Ignored unless the run is under way.
    AnalysisProgress {
        /// The run's progress (it names the run).
        progress: AnalysisProgress,
    },
    /// The proxy tripped a guardrail (and already cut the candidate's weight to 0).
    GuardrailTripped {
        /// The guardrail's name.
        name: String,
        /// The measured value and limit.
        detail: String,
    },
    /// The backend finished [`Action::Promote`].
    Promoted,
    /// The backend finished [`Action::Retire`].
    Retired {
        /// Which slot is gone.
        slot: Slot,
    },
    /// An operation failed in a way that may pass if tried again (a timeout, a 5xx, a
    /// conflict). The machine retries with back-off, and gives up on forward operations
    /// after a few attempts by rolling back; rollback operations are retried until they
    /// succeed, since a rollback must end with every created service accounted for.
    BackendError {
        /// Which operation.
        operation: Operation,
        /// The error.
        message: String,
    },
    /// A person (or CI) said something.
    Command(Command),
}

/// The manual verbs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Command {
    /// Finish the current step now: end a pause, accept an inconclusive or running
    /// analysis, release a held promotion gate. Also lifts a manual pause.
    Promote,
    /// Skip every remaining step and promote.
    PromoteFull,
    /// Roll back to stable now.
    Abort,
    /// Hold at the current step: timed pauses stop counting, nothing moves forward.
    /// Failures still roll back.
    Pause,
    /// Lift a pause; on an inconclusive analysis, run the analysis again.
    Resume,
    /// Start a rolled-back or aborted release again from the beginning.
    Retry,
}

impl fmt::Display for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Command::Promote => "promote",
            Command::PromoteFull => "promote --full",
            Command::Abort => "abort",
            Command::Pause => "pause",
            Command::Resume => "resume",
            Command::Retry => "retry",
        })
    }
}

/// A command that does not fit the rollout's phase.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("cannot {command} now: the rollout is {phase}; {expected}")]
pub struct CommandRejected {
    /// The command.
    pub command: Command,
    /// The phase, in words.
    pub phase: String,
    /// What would be accepted, or what to do instead.
    pub expected: &'static str,
}
