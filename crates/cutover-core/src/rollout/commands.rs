//! Commands from people: promote, abort, pause, resume, retry, each checked against the
//! phase it arrives in.

use super::{
    Action, Command, CommandRejected, DeadlineClock, Outcome, Phase, PromotionProgress,
    RollbackReason, Rollout, StepProgress, Trigger,
};

impl Rollout {
    fn reject(&self, command: Command, expected: &'static str) -> Result<(), CommandRejected> {
        Err(CommandRejected {
            command,
            phase: self.phase.describe(),
            expected,
        })
    }

    pub(super) fn command(
        &mut self,
        command: Command,
        batch: &mut Vec<Action>,
    ) -> Result<(), CommandRejected> {
        match command {
            Command::Promote => self.promote(batch),
            Command::PromoteFull => self.promote_full(batch),
            Command::Abort => self.abort(batch),
            Command::Pause => self.pause(),
            Command::Resume => self.resume_command(batch),
            Command::Retry => self.retry_command(batch),
        }
    }

    fn promote(&mut self, batch: &mut Vec<Action>) -> Result<(), CommandRejected> {
        match self.phase.clone() {
            Phase::Step { progress, .. } => {
                match progress {
                    StepProgress::Routing { .. } => {
                        return self.reject(
                            Command::Promote,
                            "the step is applying a route; try again in a moment",
                        );
                    }
                    StepProgress::Analyzing { .. } => {
                        return self.reject(
                            Command::Promote,
                            "an analysis is running; wait for its verdict, or use 'promote --full' to skip every remaining step",
                        );
                    }
                    StepProgress::Gate => {
                        return self.reject(
                            Command::Promote,
                            "the prePromotion gate is being asked; promote overrides it once it holds",
                        );
                    }
                    StepProgress::Pausing { .. }
                    | StepProgress::Inconclusive { .. }
                    | StepProgress::GateHeld { .. }
                    | StepProgress::Complete => {}
                }
                self.paused_since = None;
                self.record("promote: current step finished by hand");
                self.stop_running_analysis(batch);
                self.complete_step(batch);
                Ok(())
            }
            _ => self.reject(
                Command::Promote,
                "promote applies while the rollout walks its steps",
            ),
        }
    }

    fn promote_full(&mut self, batch: &mut Vec<Action>) -> Result<(), CommandRejected> {
        match self.phase.clone() {
            Phase::Step { .. } => {
                self.paused_since = None;
                self.record("promote --full: skipping the remaining steps");
                self.stop_running_analysis(batch);
                self.route_for_promotion(batch);
                Ok(())
            }
            Phase::Promoting { .. } => Ok(()),
            _ => self.reject(
                Command::PromoteFull,
                "promote --full applies once the candidate is ready and until promotion",
            ),
        }
    }

    fn abort(&mut self, batch: &mut Vec<Action>) -> Result<(), CommandRejected> {
        match &self.phase {
            Phase::RollingBack { .. } => Ok(()),
            Phase::Promoting {
                progress: PromotionProgress::Swapping,
            }
            | Phase::ScalingDown { .. }
            | Phase::Done { .. } => self.reject(
                Command::Abort,
                "the candidate is already promoted; release the previous version to go back",
            ),
            _ => {
                self.record("abort requested");
                self.roll_back(RollbackReason::Aborted, batch);
                Ok(())
            }
        }
    }

    fn pause(&mut self) -> Result<(), CommandRejected> {
        if !matches!(self.phase, Phase::Step { .. }) {
            return self.reject(
                Command::Pause,
                "pause applies while the rollout walks its steps",
            );
        }
        if self.paused_since.is_none() {
            self.paused_since = Some(self.now);
            self.record("paused by hand");
        }
        Ok(())
    }

    fn resume_command(&mut self, batch: &mut Vec<Action>) -> Result<(), CommandRejected> {
        let inconclusive = match self.phase {
            Phase::Step {
                index,
                progress: StepProgress::Inconclusive { .. },
            } => Some(index),
            _ => None,
        };
        if self.paused_since.is_none() && inconclusive.is_none() {
            return self.reject(
                Command::Resume,
                "resume applies to a paused rollout or an inconclusive analysis",
            );
        }
        if let Some(since) = self.paused_since.take() {
            let held = self.now.since(since);
            self.record(format!("resumed after {held}"));
            match &mut self.phase {
                Phase::Step {
                    progress: StepProgress::Pausing { until: Some(until) },
                    ..
                } => {
                    *until = until.after(held);
                }
                Phase::Step {
                    progress: StepProgress::Complete,
                    ..
                } => self.complete_step(batch),
                _ => {}
            }
        }
        if let Some(index) = inconclusive {
            self.record("resume: running the analysis again");
            self.enter_step(index, batch);
        }
        Ok(())
    }

    fn retry_command(&mut self, batch: &mut Vec<Action>) -> Result<(), CommandRejected> {
        match &self.phase {
            Phase::Done {
                outcome: Outcome::RolledBack { .. },
            } => {
                self.attempt += 1;
                self.started_at = self.now;
                self.deadline = DeadlineClock::new(self.plan.progress_deadline);
                self.paused_since = None;
                self.retry = None;
                self.record(format!("retry: attempt {}", self.attempt));
                self.event(
                    Trigger::RolloutStarted,
                    None,
                    format!("retry: attempt {}", self.attempt),
                );
                self.start(batch);
                Ok(())
            }
            _ => self.reject(
                Command::Retry,
                "retry applies to a rolled-back or aborted rollout",
            ),
        }
    }
}
