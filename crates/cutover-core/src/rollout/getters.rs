//! What a rollout tells about itself: its plan, phase, step, weight, history, analyses and
//! the events for people it has still to tell.

use super::*;

impl Rollout {
    /// The next event for people (a notification trigger) the last inputs caused, oldest
    /// first. Call after the batch of actions was carried out (the state persisted), so
    /// an event is never told about a state a restart could take back.
    #[must_use]
    pub fn poll_event(&mut self) -> Option<RolloutEvent> {
        self.events.0.pop_front()
    }

    /// The plan being walked.
    pub fn plan(&self) -> &Plan {
        &self.plan
    }

    /// The current phase.
    pub fn phase(&self) -> &Phase {
        &self.phase
    }

    /// The route most recently asked for.
    pub fn route(&self) -> &Route {
        &self.route
    }

    /// The outcome, once finished.
    pub fn outcome(&self) -> Option<&Outcome> {
        match &self.phase {
            Phase::Done { outcome } => Some(outcome),
            _ => None,
        }
    }

    /// Whether the rollout is finished (promoted, or rolled back and not retried).
    pub fn is_done(&self) -> bool {
        matches!(self.phase, Phase::Done { .. })
    }

    /// Whether a manual pause holds the rollout.
    pub fn is_paused(&self) -> bool {
        self.paused_since.is_some()
    }

    /// Whether the rollout waits for a person (an indefinite pause, an inconclusive
    /// analysis, a manual pause).
    pub fn waits_for_person(&self) -> bool {
        self.is_paused()
            || matches!(
                self.phase,
                Phase::Step {
                    progress: StepProgress::Pausing { until: None }
                        | StepProgress::Inconclusive { .. },
                    ..
                }
            )
    }

    /// 1 for the first try, +1 per `retry`.
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// The latest time the machine has seen.
    pub fn now(&self) -> Timestamp {
        self.now
    }

    /// When the rollout (or its latest retry) started.
    pub fn started_at(&self) -> Timestamp {
        self.started_at
    }

    /// The analysis run under way and its measurements so far, as persisted.
    pub fn analysis(&self) -> Option<&AnalysisProgress> {
        self.analysis.as_ref()
    }

    /// What happened so far, oldest first (the last 200 entries).
    pub fn history(&self) -> impl Iterator<Item = &HistoryEntry> {
        self.history.iter()
    }

    /// The persisted form.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::to_value(self).unwrap_or(serde_json::Value::Null)
    }

    /// Restores a persisted rollout. Call [`Rollout::resume`] next.
    pub fn from_json(value: serde_json::Value) -> Result<Rollout, StateError> {
        let found = value
            .get("formatVersion")
            .and_then(serde_json::Value::as_u64)
            .unwrap_or(0);
        if found != u64::from(STATE_FORMAT_VERSION) {
            return Err(StateError::Version {
                found: u32::try_from(found).unwrap_or(u32::MAX),
            });
        }
        serde_json::from_value(value).map_err(StateError::Malformed)
    }
}
