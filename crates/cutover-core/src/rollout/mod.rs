//! The rollout state machine: sans I/O, driven by a thin async loop.
//!
//! A [`Rollout`] walks a [`Plan`]: pre-rollout hooks, deploying the candidate, each step
//! (route changes, pauses, analyses), then promotion and the previous version's
//! scale-down, or a rollback that ends with all traffic on stable and the candidate
//! retired. It performs no I/O and never reads a clock: time comes in as a parameter,
//! effects go out as [`Action`]s, and what the driver saw comes back as [`Observation`]s.
//!
//! # Calling order
//!
//! ```text
//! let mut rollout = Rollout::new(plan, now);          // or a persisted one + resume(now)
//! loop {
//!     while let Some(action) = rollout.poll_action() { carry it out }   // Persist first
//!     wait until rollout.poll_timeout() or an observation arrives;
//!     rollout.handle(now, observation)  or  rollout.handle_timeout(now);
//! }
//! ```
//!
//! Every batch of actions starts with [`Action::Persist`]: the driver writes the state
//! before it acts, so a controller killed at any point resumes in the phase whose actions
//! it may not have finished, and [`Rollout::resume`] issues them again (they are
//! idempotent). Steps advance only on observations, so no step is skipped or repeated.
//! An analysis under way is part of the state: the driver reports its progress after
//! every measurement ([`Observation::AnalysisProgress`], persisted like any change), and a
//! restarted controller's [`Action::StartAnalysis`] carries it, so the analysis goes on
//! where it was instead of starting over.
//!
//! Method groups: getters; `handle*` for inputs; `poll_*` for outputs.

mod commands;
mod getters;
mod io;
mod observe;
mod phase;
mod time;

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

pub use io::{Action, Command, CommandRejected, Observation, Operation, RolloutEvent, Route, Slot};
pub use phase::{
    Outcome, Phase, PromotionProgress, RollbackProgress, RollbackReason, StepProgress,
};
pub use time::{DeadlineClock, Timer, Timestamp};

use crate::judge::{AnalysisProgress, Verdict};
use crate::plan::{Plan, PlanStep};
use crate::spec::{HookPoint, Trigger};
use crate::{Backoff, Duration};

/// The version of the persisted state's layout. A state of another version is refused
/// rather than misread.
pub const STATE_FORMAT_VERSION: u32 = 1;

/// Forward operations are given up (and the rollout rolled back) after this many
/// consecutive failures; rollback operations are retried without limit.
pub const MAX_FORWARD_ATTEMPTS: u32 = 5;

/// How long a `prePromotion` gate that answered non-2xx waits before it is asked again.
pub const GATE_RETRY: Duration = Duration::from_secs(30);

/// The longest wait between retries of a failed backend operation.
pub const MAX_BACKOFF: Duration = Duration::from_secs(32);

/// How long a failed backend operation waits before it is tried again: 1 s, doubling with
/// each failure in a row, at most [`MAX_BACKOFF`].
pub const BACKEND_RETRY: Backoff = Backoff::new(Duration::from_secs(1), MAX_BACKOFF);

/// How many history entries a rollout keeps.
const HISTORY_LIMIT: usize = 200;

/// One rollout of one release: the persisted state plus the actions not yet taken.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Rollout {
    format_version: u32,
    plan: Plan,
    phase: Phase,
    /// The route most recently asked for.
    route: Route,
    route_generation: u64,
    /// The generation the proxy last confirmed.
    route_applied: u64,
    analysis_runs: u32,
    /// 1 for the first try, +1 per `retry`.
    attempt: u32,
    /// Set by `pause`, cleared by `resume` or `promote`.
    paused_since: Option<Timestamp>,
    deadline: DeadlineClock,
    retry: Option<PendingRetry>,
    started_at: Timestamp,
    now: Timestamp,
    history: VecDeque<HistoryEntry>,
    /// The analysis run under way and its measurements so far. Absent in states written
    /// before analyses were persisted: such a run starts over when resumed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    analysis: Option<AnalysisProgress>,
    #[serde(skip)]
    pending: VecDeque<Action>,
    /// Events for people not yet taken by `poll_event`; not persisted (a notification is
    /// sent at most once, after the state that caused it was stored).
    #[serde(skip)]
    events: UntoldEvents,
}

/// The events not yet taken by `poll_event`: output on its way out, not state, so two
/// rollouts in the same state are equal whatever either has still to tell (a restored
/// copy has nothing to tell, by design).
#[derive(Clone, Debug, Default)]
struct UntoldEvents(VecDeque<RolloutEvent>);

impl PartialEq for UntoldEvents {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

/// A failed operation waiting for its next attempt.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PendingRetry {
    /// What failed.
    pub operation: Operation,
    /// Consecutive failures so far.
    pub failures: u32,
    /// When to try again; `None` once the retry was issued and its result is awaited.
    pub at: Option<Timestamp>,
    /// The last error.
    pub message: String,
}

/// One line of a rollout's history.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HistoryEntry {
    /// When.
    pub at: Timestamp,
    /// What happened, for people.
    pub message: String,
}

/// Why a persisted state was refused.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// Not a rollout state at all.
    #[error("the stored rollout state cannot be read")]
    Malformed(#[source] serde_json::Error),
    /// Written by a cutover with another state layout.
    #[error(
        "the stored rollout state has format version {found}, this cutover reads {STATE_FORMAT_VERSION}"
    )]
    Version {
        /// The version found.
        found: u32,
    },
}

/// Feeds `inputs` to `rollout` at `now`, fires due timers, and returns the rollout with the
/// actions to carry out and the commands that were refused. The functional face of the
/// same machine: `advance(state, now, observations) -> (state, actions)`.
pub fn advance(
    mut rollout: Rollout,
    now: Timestamp,
    inputs: impl IntoIterator<Item = Observation>,
) -> (Rollout, Vec<Action>, Vec<CommandRejected>) {
    let mut rejected = Vec::new();
    // Timers that were due before these inputs arrived fire first.
    rollout.handle_timeout(now);
    for input in inputs {
        if let Err(e) = rollout.handle(now, input) {
            rejected.push(e);
        }
    }
    rollout.handle_timeout(now);
    let actions = std::iter::from_fn(|| rollout.poll_action()).collect();
    (rollout, actions, rejected)
}

// Getters: in getters.rs.

// Construction and resumption.
impl Rollout {
    /// A new rollout of `plan`, starting at `now`.
    pub fn new(plan: Plan, now: Timestamp) -> Rollout {
        let mut rollout = Rollout {
            format_version: STATE_FORMAT_VERSION,
            deadline: DeadlineClock::new(plan.progress_deadline),
            plan,
            phase: Phase::PreRollout,
            route: Route::default(),
            route_generation: 0,
            route_applied: 0,
            analysis_runs: 0,
            attempt: 1,
            paused_since: None,
            retry: None,
            started_at: now,
            now,
            history: VecDeque::new(),
            analysis: None,
            pending: VecDeque::new(),
            events: UntoldEvents::default(),
        };
        let mut batch = Vec::new();
        rollout.record("rollout started");
        rollout.event(Trigger::RolloutStarted, None, "rollout started".into());
        rollout.start(&mut batch);
        rollout.finish(batch);
        rollout
    }

    /// After a restore: issues again the actions of the current phase that may not have
    /// been carried out before the controller stopped, and the current route (a proxy
    /// that restarted with the controller has none).
    pub fn resume(&mut self, now: Timestamp) {
        self.observe_time(now);
        let mut batch = Vec::new();
        // While the backend swaps roles, "candidate" may already name nothing: the
        // re-issued `Promote` points the route at the new stable version instead.
        let route_issued = matches!(
            self.phase,
            Phase::Step {
                progress: StepProgress::Routing { .. },
                ..
            } | Phase::Promoting {
                progress: PromotionProgress::Routing { .. } | PromotionProgress::Swapping
            } | Phase::RollingBack {
                progress: RollbackProgress::Routing { .. },
                ..
            }
        );
        if !self.is_done() && !route_issued {
            batch.push(self.set_route_action());
        }
        // A retry still waiting for its time is issued by its timer.
        if self.retry.as_ref().is_none_or(|r| r.at.is_none()) {
            self.reissue(&mut batch);
        }
        self.record("resumed after a restart");
        self.pending.clear();
        self.finish(batch);
    }

    /// The actions that carry the current phase forward, as first issued.
    fn reissue(&mut self, batch: &mut Vec<Action>) {
        match &self.phase {
            Phase::PreRollout => batch.push(Action::RunHook {
                point: HookPoint::PreRollout,
            }),
            Phase::Deploying => batch.push(Action::Deploy),
            Phase::Step { index, progress } => match progress {
                StepProgress::Routing { .. } => batch.push(self.set_route_action()),
                StepProgress::Analyzing { run } => {
                    if let Some(PlanStep::Analysis { metrics, stage, .. }) =
                        self.plan.steps.get(*index)
                    {
                        // The run goes on from its persisted progress; a state without
                        // one (written by an older cutover) starts the run over.
                        let progress = self
                            .analysis
                            .clone()
                            .filter(|p| p.run == *run)
                            .unwrap_or_else(|| AnalysisProgress::started(*run, self.now));
                        batch.push(Action::StartAnalysis {
                            run: *run,
                            step: *index,
                            metrics: metrics.clone(),
                            stage: *stage,
                            progress: progress.clone(),
                            resumed: true,
                        });
                        let kept = progress.attempts();
                        if kept > 0 {
                            self.record(format!(
                                "analysis run {run} resumed with {kept} measurements kept"
                            ));
                        }
                        self.analysis = Some(progress);
                    }
                }
                StepProgress::Gate => batch.push(Action::RunHook {
                    point: HookPoint::PrePromotion,
                }),
                StepProgress::Pausing { .. }
                | StepProgress::Inconclusive { .. }
                | StepProgress::GateHeld { .. }
                | StepProgress::Complete => {}
            },
            Phase::Promoting { progress } => match progress {
                PromotionProgress::Routing { .. } => batch.push(self.set_route_action()),
                PromotionProgress::Swapping => batch.push(Action::Promote),
            },
            Phase::ScalingDown { until: None } => batch.push(Action::Retire {
                slot: Slot::Previous,
            }),
            Phase::ScalingDown { until: Some(_) } => {}
            Phase::RollingBack { progress, .. } => match progress {
                RollbackProgress::Routing { .. } => batch.push(self.set_route_action()),
                RollbackProgress::Retiring => batch.push(Action::Retire {
                    slot: Slot::Candidate,
                }),
            },
            Phase::Done { .. } => {}
        }
    }
}

// Inputs.
impl Rollout {
    /// Takes in one observation at `now`. Observations that do not fit the phase (a late
    /// acknowledgement, a verdict of a stopped run) are ignored; a command that does not
    /// fit is refused with a [`CommandRejected`] saying what would fit.
    pub fn handle(
        &mut self,
        now: Timestamp,
        observation: Observation,
    ) -> Result<(), CommandRejected> {
        let before = self.snapshot();
        self.observe_time(now);
        let mut batch = Vec::new();
        let result = match observation {
            Observation::Command(command) => self.command(command, &mut batch),
            other => {
                self.observation(other, &mut batch);
                Ok(())
            }
        };
        self.finish_if_changed(&before, batch);
        result
    }

    /// Fires every timer that is due at `now`. Calling it early, or twice, is harmless.
    pub fn handle_timeout(&mut self, now: Timestamp) {
        let before = self.snapshot();
        self.observe_time(now);
        let mut batch = Vec::new();
        if let Some(retry) = self
            .retry
            .as_mut()
            .filter(|r| r.at.is_some_and(|at| at <= now))
        {
            retry.at = None;
            let operation = retry.operation;
            if self.awaits(operation) {
                self.reissue(&mut batch);
            } else {
                self.retry = None;
            }
        }
        if self.deadline_applies() && self.deadline.due().is_some_and(|due| due <= now) {
            self.record("progress deadline exceeded");
            self.roll_back(RollbackReason::DeadlineExceeded, &mut batch);
        }
        match self.phase.clone() {
            Phase::Step {
                progress: StepProgress::Pausing { until: Some(until) },
                ..
            } if until <= now && !self.is_paused() => {
                self.record("pause ended");
                self.complete_step(&mut batch);
            }
            Phase::Step {
                index,
                progress: StepProgress::GateHeld { retry_at },
            } if retry_at <= now => {
                self.phase = Phase::Step {
                    index,
                    progress: StepProgress::Gate,
                };
                batch.push(Action::RunHook {
                    point: HookPoint::PrePromotion,
                });
            }
            Phase::ScalingDown { until: Some(until) } if until <= now => {
                self.phase = Phase::ScalingDown { until: None };
                self.record("scale-down delay over: retiring the previous version");
                batch.push(Action::Retire {
                    slot: Slot::Previous,
                });
            }
            _ => {}
        }
        self.finish_if_changed(&before, batch);
    }
}

// Outputs.
impl Rollout {
    /// The next action to carry out, in order. Drain it after every `handle*` call.
    #[must_use]
    pub fn poll_action(&mut self) -> Option<Action> {
        self.pending.pop_front()
    }

    /// The earliest time at which [`Rollout::handle_timeout`] has something to do.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Timestamp> {
        self.timers().into_iter().map(|(_, at)| at).min()
    }

    /// Every armed timer and when it fires.
    pub fn timers(&self) -> Vec<(Timer, Timestamp)> {
        let mut timers = Vec::new();
        if let Some(at) = self.retry.as_ref().and_then(|r| r.at) {
            timers.push((Timer::BackendRetry, at));
        }
        if self.deadline_applies()
            && let Some(due) = self.deadline.due()
        {
            timers.push((Timer::ProgressDeadline, due));
        }
        match &self.phase {
            Phase::Step {
                progress: StepProgress::Pausing { until: Some(until) },
                ..
            } if !self.is_paused() => {
                timers.push((Timer::StepPause, *until));
            }
            Phase::Step {
                progress: StepProgress::GateHeld { retry_at },
                ..
            } => {
                timers.push((Timer::HookRetry, *retry_at));
            }
            Phase::ScalingDown { until: Some(until) } => {
                timers.push((Timer::ScaleDownDelay, *until))
            }
            _ => {}
        }
        timers
    }
}

// The walk.
impl Rollout {
    fn observe_time(&mut self, now: Timestamp) {
        self.now = self.now.max(now);
    }

    /// The state as persisted, less the clock reading, to tell whether an input changed
    /// anything worth writing.
    fn snapshot(&self) -> Rollout {
        let mut copy = self.clone();
        copy.pending.clear();
        copy
    }

    /// As [`Rollout::finish`], but an input that changed nothing (a stale acknowledgement,
    /// an early timeout) yields no actions at all, not even a `Persist`.
    fn finish_if_changed(&mut self, before: &Rollout, batch: Vec<Action>) {
        self.forget_ended_analysis();
        let mut after = self.snapshot();
        after.now = before.now;
        after.finish_clocks();
        if batch.is_empty() && after == *before {
            self.finish_clocks();
            return;
        }
        self.finish(batch);
    }

    fn finish_clocks(&mut self) {
        let now = self.now;
        if self.deadline_applies() && !self.waits_for_person() {
            self.deadline.run(now);
        } else {
            self.deadline.stop(now);
        }
    }

    /// Ends a batch: keeps the deadline clock in step with the phase and queues the
    /// batch behind a `Persist`.
    fn finish(&mut self, batch: Vec<Action>) {
        self.forget_ended_analysis();
        self.finish_clocks();
        self.pending.push_back(Action::Persist);
        self.pending.extend(batch);
    }

    /// Drops the progress of an analysis run that is no longer under way (decided,
    /// stopped, or left by a rollback or promotion): only the running one is persisted.
    fn forget_ended_analysis(&mut self) {
        let running = match self.phase {
            Phase::Step {
                progress: StepProgress::Analyzing { run },
                ..
            } => Some(run),
            _ => None,
        };
        if self.analysis.as_ref().map(|p| p.run) != running {
            self.analysis = None;
        }
    }

    /// The deadline counts while the rollout moves forward towards promotion.
    ///
    /// It is also the window in which a rollback is possible: once `Promote` is issued the
    /// backend may already have swapped the roles, so from there on nothing rolls back and
    /// a failing `Promote` is retried until it succeeds.
    fn deadline_applies(&self) -> bool {
        matches!(
            self.phase,
            Phase::PreRollout
                | Phase::Deploying
                | Phase::Step { .. }
                | Phase::Promoting {
                    progress: PromotionProgress::Routing { .. }
                }
        )
    }

    /// Queues an event for people (notifications), taken by [`Rollout::poll_event`]. The
    /// one place the machine says "someone may want to know": every trigger comes
    /// through here.
    fn event(&mut self, trigger: Trigger, step: Option<usize>, reason: String) {
        let step = step.or(match self.phase {
            Phase::Step { index, .. } => Some(index),
            _ => None,
        });
        self.events.0.push_back(RolloutEvent {
            at: self.now,
            trigger,
            step,
            reason,
        });
    }

    fn record(&mut self, message: impl Into<String>) {
        if self.history.len() == HISTORY_LIMIT {
            self.history.pop_front();
        }
        self.history.push_back(HistoryEntry {
            at: self.now,
            message: message.into(),
        });
    }

    fn start(&mut self, batch: &mut Vec<Action>) {
        if self.plan.hooks.pre_rollout {
            self.phase = Phase::PreRollout;
            batch.push(Action::RunHook {
                point: HookPoint::PreRollout,
            });
        } else {
            self.deploy(batch);
        }
    }

    fn deploy(&mut self, batch: &mut Vec<Action>) {
        self.phase = Phase::Deploying;
        self.record("deploying the candidate");
        batch.push(Action::Deploy);
    }

    fn set_route_action(&self) -> Action {
        Action::SetRoute {
            generation: self.route_generation,
            route: self.route.clone(),
        }
    }

    /// Asks for `route`, returning its generation.
    fn new_route(&mut self, route: Route, batch: &mut Vec<Action>) -> u64 {
        self.route_generation += 1;
        self.route = route;
        batch.push(self.set_route_action());
        self.route_generation
    }

    fn enter_step(&mut self, index: usize, batch: &mut Vec<Action>) {
        let Some(step) = self.plan.steps.get(index).cloned() else {
            self.route_for_promotion(batch);
            return;
        };
        let progress = match step {
            PlanStep::SetWeight { weight } => {
                self.record(format!("step {index}: weight {weight}%"));
                let route = Route {
                    candidate_weight: weight,
                    ..self.route.clone()
                };
                StepProgress::Routing {
                    generation: self.new_route(route, batch),
                }
            }
            PlanStep::SetHeaderRoute { rules } => {
                self.record(format!(
                    "step {index}: header route with {} rule(s)",
                    rules.len()
                ));
                let route = Route {
                    header_route: rules,
                    ..self.route.clone()
                };
                StepProgress::Routing {
                    generation: self.new_route(route, batch),
                }
            }
            PlanStep::Mirror { percent } => {
                self.record(format!("step {index}: mirror {percent}%"));
                let route = Route {
                    mirror_percent: percent,
                    ..self.route.clone()
                };
                StepProgress::Routing {
                    generation: self.new_route(route, batch),
                }
            }
            PlanStep::PromotionGate => {
                self.record(format!("step {index}: asking the prePromotion gate"));
                batch.push(Action::RunHook {
                    point: HookPoint::PrePromotion,
                });
                StepProgress::Gate
            }
            PlanStep::Pause { duration } => {
                self.record(match duration {
                    Some(d) => format!("step {index}: pause {d}"),
                    None => format!("step {index}: waiting for promote"),
                });
                if duration.is_none() {
                    self.event(
                        Trigger::PausedForPerson,
                        Some(index),
                        format!("step {index} waits for promote"),
                    );
                }
                StepProgress::Pausing {
                    until: duration.map(|d| self.now.after(d)),
                }
            }
            PlanStep::Analysis { metrics, stage, .. } => {
                self.analysis_runs += 1;
                let run = self.analysis_runs;
                self.record(format!(
                    "step {index}: analysis run {run} of {}",
                    metrics.join(", ")
                ));
                let progress = AnalysisProgress::started(run, self.now);
                self.analysis = Some(progress.clone());
                batch.push(Action::StartAnalysis {
                    run,
                    step: index,
                    metrics,
                    stage,
                    progress,
                    resumed: false,
                });
                StepProgress::Analyzing { run }
            }
        };
        self.phase = Phase::Step { index, progress };
    }

    /// The current step is done: go on, unless a manual pause holds the rollout.
    fn complete_step(&mut self, batch: &mut Vec<Action>) {
        let Phase::Step { index, .. } = self.phase else {
            return;
        };
        self.event(
            Trigger::StepCompleted,
            Some(index),
            format!("step {index} completed"),
        );
        if self.is_paused() {
            self.phase = Phase::Step {
                index,
                progress: StepProgress::Complete,
            };
        } else {
            self.enter_step(index + 1, batch);
        }
    }

    fn route_for_promotion(&mut self, batch: &mut Vec<Action>) {
        let all_candidate = Route {
            candidate_weight: 100,
            header_route: Vec::new(),
            mirror_percent: 0,
        };
        if self.route == all_candidate && self.route_applied == self.route_generation {
            // A last `setWeight: 100` step already moved everything.
            self.swap(batch);
            return;
        }
        self.paused_since = None;
        self.record("moving all traffic to the candidate");
        let generation = self.new_route(all_candidate, batch);
        self.phase = Phase::Promoting {
            progress: PromotionProgress::Routing { generation },
        };
    }

    fn swap(&mut self, batch: &mut Vec<Action>) {
        self.paused_since = None;
        self.phase = Phase::Promoting {
            progress: PromotionProgress::Swapping,
        };
        batch.push(Action::Promote);
    }

    fn stop_running_analysis(&mut self, batch: &mut Vec<Action>) {
        if let Phase::Step {
            progress: StepProgress::Analyzing { run },
            ..
        } = self.phase
        {
            batch.push(Action::StopAnalysis { run });
        }
    }

    fn roll_back(&mut self, reason: RollbackReason, batch: &mut Vec<Action>) {
        if !self.deadline_applies() {
            return;
        }
        self.stop_running_analysis(batch);
        self.paused_since = None;
        self.retry = None;
        self.record(format!("rolling back: {reason}"));
        let trigger = match reason {
            RollbackReason::Aborted => Some(Trigger::Aborted),
            RollbackReason::Guardrail { .. } => Some(Trigger::GuardrailTripped),
            RollbackReason::DeadlineExceeded => Some(Trigger::ProgressDeadlineExceeded),
            // Analyses say failed or in error where the verdict is known.
            _ => None,
        };
        if let Some(trigger) = trigger {
            self.event(trigger, None, reason.to_string());
        }
        let generation = self.new_route(Route::default(), batch);
        self.phase = Phase::RollingBack {
            reason,
            progress: RollbackProgress::Routing { generation },
        };
    }
}
