//! What the API and `cutover status` show of a rollout, and what is persisted with it.

use std::collections::BTreeMap;

use cutover_backend::SlotView;
use cutover_core::plan::{PlanStep, StrategyKind};
use cutover_core::rollout::{Outcome, Phase, RollbackReason, Rollout, Timestamp};
use cutover_core::spec::{LocalSlot, Release};
use serde::{Deserialize, Serialize};

use crate::analysis::AnalysisView;

/// Everything the controller persists for one release: the release as submitted, the
/// names of its two versions, the rollout's state, and a summary of earlier rollouts.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReleaseRecord {
    /// The release as submitted (presets, interpolation and overrides applied).
    pub release: Release,
    /// The version serving before this rollout.
    pub stable_version: String,
    /// The version being rolled out.
    pub candidate_version: String,
    /// The rollout state machine, as `Rollout::to_json` writes it.
    pub rollout: serde_json::Value,
    /// Earlier rollouts of this release, newest last.
    #[serde(default)]
    pub earlier: Vec<RolloutSummary>,
    /// What the version serving before this rollout runs, when the controller knows it
    /// (it deployed that version, or the local backend started it from the release
    /// file): what `cutover undo` deploys again after a promotion. `None` for a version
    /// an orchestrator ran before cutover adopted it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stable_definition: Option<VersionDefinition>,
}

/// How to run one version again: its name and what a release file says of it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VersionDefinition {
    /// The version's name.
    pub version: String,
    /// Its image (Swarm, Kubernetes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// Its local slot (the local backend).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local: Option<LocalSlot>,
}

/// How many earlier rollouts a record keeps.
pub const EARLIER_LIMIT: usize = 20;

/// One finished rollout, for `cutover history`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RolloutSummary {
    /// The version it started from.
    pub stable_version: String,
    /// The version it rolled out.
    pub candidate_version: String,
    /// `promoted`, `rolledBack`, `aborted`, or the phase it was left in.
    pub outcome: String,
    /// Why it rolled back.
    pub reason: Option<String>,
    /// When it started (ms since the epoch).
    pub started_at: Timestamp,
    /// When it was last seen (ms since the epoch).
    pub finished_at: Timestamp,
}

/// The phase as one word: the `phase` label of `cutover_rollout_phase` and the
/// `phase` field of the API.
pub fn phase_label(phase: &Phase) -> &'static str {
    match phase {
        Phase::PreRollout => "preRollout",
        Phase::Deploying => "deploying",
        Phase::Step { .. } => "step",
        Phase::Promoting { .. } => "promoting",
        Phase::ScalingDown { .. } => "scalingDown",
        Phase::RollingBack { .. } => "rollingBack",
        Phase::Done {
            outcome: Outcome::Promoted,
        } => "promoted",
        Phase::Done {
            outcome:
                Outcome::RolledBack {
                    reason: RollbackReason::Aborted,
                },
        } => "aborted",
        Phase::Done { .. } => "rolledBack",
    }
}

/// Why the rollout is rolling back or rolled back.
pub fn rollback_reason(phase: &Phase) -> Option<String> {
    match phase {
        Phase::RollingBack { reason, .. }
        | Phase::Done {
            outcome: Outcome::RolledBack { reason },
        } => Some(reason.to_string()),
        _ => None,
    }
}

/// A summary of `rollout` for the history.
pub fn summary(record: &ReleaseRecord, rollout: &Rollout) -> RolloutSummary {
    RolloutSummary {
        stable_version: record.stable_version.clone(),
        candidate_version: record.candidate_version.clone(),
        outcome: phase_label(rollout.phase()).to_string(),
        reason: rollback_reason(rollout.phase()),
        started_at: rollout.started_at(),
        finished_at: rollout.now(),
    }
}

/// A rollout as the API shows it. Stable: fields are only ever added (see
/// `docs/http-api.md`).
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RolloutStatus {
    /// The release's name.
    pub name: String,
    /// The backend it runs on.
    pub backend: String,
    /// `canary` or `blueGreen`.
    pub strategy: StrategyKind,
    /// One word: `preRollout`, `deploying`, `step`, `promoting`, `scalingDown`,
    /// `rollingBack`, `promoted`, `rolledBack`, `aborted`.
    pub phase: &'static str,
    /// The phase in words.
    pub description: String,
    /// The plan step (from 0) while in `step`.
    pub step: Option<usize>,
    /// The number of plan steps.
    pub steps: usize,
    /// What each plan step does, in words.
    pub plan: Vec<String>,
    /// Percentage of weighted traffic on the candidate.
    pub weight: u8,
    /// The stable slot as it is now, and its endpoints: the version serving before the
    /// rollout until the candidate is made stable, then the promoted version.
    pub stable: SlotView,
    /// The version serving before this rollout, whatever happened since (the record's
    /// `stableVersion`): `stable.version` turns into the candidate's at promotion, this
    /// does not, so a report can say `v1 -> v2` after the fact.
    pub previous_version: String,
    /// The version being rolled out and its endpoints (none before it is deployed and
    /// after it is retired).
    pub candidate: SlotView,
    /// Whether a manual pause holds it.
    pub paused: bool,
    /// Whether it waits for a person (`promote` or `resume`).
    pub waiting_for_person: bool,
    /// Whether it is finished.
    pub done: bool,
    /// `promoted`, `rolledBack` or `aborted` once finished.
    pub outcome: Option<&'static str>,
    /// Why it rolled back.
    pub reason: Option<String>,
    /// 1 for the first try, +1 per `retry`.
    pub attempt: u32,
    /// When it started (ms since the epoch).
    pub started_at: Timestamp,
    /// When the controller last moved it (ms since the epoch).
    pub updated_at: Timestamp,
    /// The analysis run in progress or last decided.
    pub analysis: Option<AnalysisView>,
    /// The latest history line.
    pub last_event: Option<String>,
    /// A problem the controller is working around (say, the state store failing).
    pub problem: Option<String>,
    /// The release's `metadata.annotations` as submitted: notes for people, and for
    /// whatever submitted it (a `Release` object records its uid and generation here).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    /// The last notification each service did not get (never its URL or secret).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub notifications: Vec<crate::notify::NotificationFailure>,
}

/// A plan step in words.
pub fn describe_step(step: &PlanStep) -> String {
    match step {
        PlanStep::SetWeight { weight } => format!("setWeight {weight}"),
        PlanStep::Pause { duration: Some(d) } => format!("pause {d}"),
        PlanStep::Pause { duration: None } => "pause until promoted".into(),
        PlanStep::Analysis { metrics, .. } => format!("analysis ({})", metrics.join(", ")),
        PlanStep::SetHeaderRoute { rules } => format!("setHeaderRoute ({} rules)", rules.len()),
        PlanStep::Mirror { percent } => format!("mirror {percent}%"),
        PlanStep::PromotionGate => "prePromotion gate".into(),
    }
}

/// Everything needed to build a status.
pub struct StatusInput<'a> {
    /// The record (release, versions).
    pub record: &'a ReleaseRecord,
    /// The state machine.
    pub rollout: &'a Rollout,
    /// The stable slot as last seen.
    pub stable: &'a SlotView,
    /// The candidate slot as last seen.
    pub candidate: Option<&'a SlotView>,
    /// The current analysis.
    pub analysis: Option<AnalysisView>,
    /// A problem being worked around.
    pub problem: Option<String>,
}

/// Builds the status of a rollout.
pub fn status(input: StatusInput<'_>) -> RolloutStatus {
    let StatusInput {
        record,
        rollout,
        stable,
        candidate,
        analysis,
        problem,
    } = input;
    let phase = rollout.phase();
    let label = phase_label(phase);
    RolloutStatus {
        name: record.release.metadata.name.clone(),
        backend: record.release.spec.backend.name().to_string(),
        strategy: rollout.plan().kind,
        phase: label,
        description: phase.describe(),
        step: match phase {
            Phase::Step { index, .. } => Some(*index),
            _ => None,
        },
        steps: rollout.plan().steps.len(),
        plan: rollout.plan().steps.iter().map(describe_step).collect(),
        weight: rollout.route().candidate_weight,
        stable: stable.clone(),
        previous_version: record.stable_version.clone(),
        candidate: candidate.cloned().unwrap_or_else(|| SlotView {
            version: record.candidate_version.clone(),
            endpoints: Vec::new(),
        }),
        paused: rollout.is_paused(),
        waiting_for_person: rollout.waits_for_person(),
        done: rollout.is_done(),
        outcome: rollout.is_done().then_some(label),
        reason: rollback_reason(phase),
        attempt: rollout.attempt(),
        started_at: rollout.started_at(),
        updated_at: rollout.now(),
        analysis,
        last_event: rollout.history().last().map(|h| h.message.clone()),
        problem,
        annotations: record.release.metadata.annotations.clone(),
        notifications: Vec::new(),
    }
}
