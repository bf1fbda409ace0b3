//! Time as the state machine sees it: a number the driver passes in.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::Duration;

/// Milliseconds since the Unix epoch on the driver's clock.
///
/// Wall-clock rather than `Instant`, because the state is persisted and a controller that
/// restarts (elsewhere, even) must be able to tell when a pause that began before the
/// restart ends. The machine never goes backwards: an earlier `now` than one already seen
/// is taken as the later one.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct Timestamp(pub u64);

impl Timestamp {
    /// `self + d`, saturating.
    pub fn after(self, d: Duration) -> Timestamp {
        Timestamp(self.0.saturating_add(d.as_millis()))
    }

    /// The time from `earlier` to `self`, zero if `earlier` is later.
    pub fn since(self, earlier: Timestamp) -> Duration {
        Duration::from_millis(self.0.saturating_sub(earlier.0))
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}ms", self.0)
    }
}

/// The timers a rollout can have armed. A closed set: each is re-derived from the state,
/// so a restored rollout has the same timers as the one that was persisted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Timer {
    /// A `pause: {duration}` step ends.
    StepPause,
    /// The progress deadline passes.
    ProgressDeadline,
    /// The old version's scale-down delay after promotion ends.
    ScaleDownDelay,
    /// A `prePromotion` gate that held is asked again.
    HookRetry,
    /// A backend or proxy operation that failed is tried again.
    BackendRetry,
}

/// The progress deadline: a budget of time that runs only while the rollout is not
/// waiting for a person.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeadlineClock {
    /// Budget left when the clock last stopped (or started).
    pub remaining: Duration,
    /// When the clock last started; `None` while stopped.
    pub running_since: Option<Timestamp>,
}

impl DeadlineClock {
    /// A stopped clock with `budget` left.
    pub fn new(budget: Duration) -> Self {
        DeadlineClock {
            remaining: budget,
            running_since: None,
        }
    }

    /// When the budget runs out, if the clock is running.
    pub fn due(&self) -> Option<Timestamp> {
        self.running_since.map(|since| since.after(self.remaining))
    }

    /// Starts the clock (no-op if running).
    pub fn run(&mut self, now: Timestamp) {
        if self.running_since.is_none() {
            self.running_since = Some(now);
        }
    }

    /// Stops the clock, keeping what is left (no-op if stopped).
    pub fn stop(&mut self, now: Timestamp) {
        if let Some(since) = self.running_since.take() {
            let used = now.since(since);
            self.remaining =
                Duration::from_millis(self.remaining.as_millis().saturating_sub(used.as_millis()));
        }
    }
}
