//! How a rollout takes in what the driver observed: a backend operation done or failed,
//! a hook's result, readiness, an analysis's progress and verdict.

use super::{
    Action, BACKEND_RETRY, Duration, GATE_RETRY, HookPoint, MAX_FORWARD_ATTEMPTS, Observation,
    Operation, Outcome, PendingRetry, Phase, PromotionProgress, RollbackProgress, RollbackReason,
    Rollout, Route, Slot, StepProgress, Trigger, Verdict,
};

impl Rollout {
    pub(super) fn observation(&mut self, observation: Observation, batch: &mut Vec<Action>) {
        match (self.phase.clone(), observation) {
            (
                Phase::PreRollout,
                Observation::HookResult {
                    point: HookPoint::PreRollout,
                    passed,
                    detail,
                },
            ) => {
                self.pre_rollout_result(passed, detail, batch);
            }
            (Phase::Deploying, Observation::CandidateReady) => {
                self.retry = None;
                self.record("candidate ready");
                self.enter_step(0, batch);
            }
            (Phase::Deploying, Observation::CandidateFailed { reason }) => {
                self.roll_back(RollbackReason::CandidateFailed { reason }, batch);
            }
            (
                Phase::Step {
                    progress: StepProgress::Routing { generation },
                    ..
                },
                Observation::RouteApplied { generation: g },
            ) if g == generation => {
                self.retry = None;
                self.route_applied = g;
                self.complete_step(batch);
            }
            (
                Phase::Step {
                    progress: StepProgress::Analyzing { run },
                    ..
                },
                Observation::AnalysisProgress { progress },
            ) if progress.run == run => {
                self.analysis = Some(progress);
            }
            (
                Phase::Step {
                    index,
                    progress: StepProgress::Analyzing { run },
                },
                Observation::AnalysisVerdict {
                    run: r,
                    verdict,
                    detail,
                },
            ) if r == run => {
                self.analysis_verdict(index, run, verdict, detail, batch);
            }
            (
                Phase::Step {
                    index,
                    progress: StepProgress::Gate,
                },
                Observation::HookResult {
                    point: HookPoint::PrePromotion,
                    passed,
                    detail,
                },
            ) => {
                self.gate_result(index, passed, detail, batch);
            }
            (
                Phase::Promoting {
                    progress: PromotionProgress::Routing { generation },
                },
                Observation::RouteApplied { generation: g },
            ) if g == generation => {
                self.retry = None;
                self.route_applied = g;
                self.swap(batch);
            }
            (
                Phase::Promoting {
                    progress: PromotionProgress::Swapping,
                },
                Observation::Promoted,
            ) => {
                self.promoted(batch);
            }
            (
                Phase::ScalingDown { until: None },
                Observation::Retired {
                    slot: Slot::Previous,
                },
            ) => self.previous_retired(),
            (
                Phase::RollingBack {
                    reason,
                    progress: RollbackProgress::Routing { generation },
                },
                Observation::RouteApplied { generation: g },
            ) if g == generation => {
                self.rollback_routed(reason, g, batch);
            }
            (
                Phase::RollingBack {
                    reason,
                    progress: RollbackProgress::Retiring,
                },
                Observation::Retired {
                    slot: Slot::Candidate,
                },
            ) => {
                self.candidate_retired(reason, batch);
            }
            (phase, Observation::GuardrailTripped { name, detail }) => {
                self.guardrail_tripped(&phase, name, detail, batch);
            }
            (_, Observation::BackendError { operation, message }) if self.awaits(operation) => {
                self.backend_failed(operation, message, batch);
            }
            _ => {}
        }
    }

    /// An analysis run's verdict in its step: the step completes, the rollout rolls back,
    /// or it waits for a person after an inconclusive run.
    fn analysis_verdict(
        &mut self,
        index: usize,
        run: u32,
        verdict: Verdict,
        detail: String,
        batch: &mut Vec<Action>,
    ) {
        match verdict {
            Verdict::Success => {
                self.record(format!("analysis run {run} passed"));
                self.complete_step(batch);
            }
            // A provider that kept failing (Prometheus gone, say) leaves the candidate
            // unjudged for longer than the release allows: as in Argo Rollouts, that
            // ends the rollout rather than holding it for a person.
            Verdict::Failure | Verdict::Error => {
                let trigger = if verdict == Verdict::Error {
                    Trigger::AnalysisError
                } else {
                    Trigger::AnalysisFailed
                };
                self.event(
                    trigger,
                    Some(index),
                    format!("analysis run {run} at step {index}: {detail}"),
                );
                self.roll_back(
                    RollbackReason::AnalysisFailed {
                        step: index,
                        detail,
                    },
                    batch,
                );
            }
            Verdict::Inconclusive => {
                self.record(format!("analysis run {run} inconclusive ({detail}): waiting for promote, resume or abort"));
                self.event(
                    Trigger::AnalysisInconclusive,
                    Some(index),
                    format!("analysis run {run} inconclusive: {detail}"),
                );
                self.phase = Phase::Step {
                    index,
                    progress: StepProgress::Inconclusive { run },
                };
            }
        }
    }

    /// The prePromotion gate's result: the step completes, or the gate holds and is asked
    /// again later.
    fn gate_result(&mut self, index: usize, passed: bool, detail: String, batch: &mut Vec<Action>) {
        if passed {
            self.record("prePromotion gate passed");
            self.complete_step(batch);
        } else {
            self.record(format!("prePromotion gate held: {detail}"));
            self.phase = Phase::Step {
                index,
                progress: StepProgress::GateHeld {
                    retry_at: self.now.after(GATE_RETRY),
                },
            };
        }
    }

    /// The candidate took the stable slot: post-promotion hook, then the previous version
    /// retired now or after the scale-down delay.
    fn promoted(&mut self, batch: &mut Vec<Action>) {
        self.retry = None;
        // The promoted version is now the stable one and takes all traffic: a new
        // generation, since the same weights now mean another version.
        self.route = Route::default();
        self.route_generation += 1;
        self.record("promoted: the candidate is the stable version");
        self.event(
            Trigger::Promoted,
            None,
            "the candidate is the stable version".into(),
        );
        if self.plan.hooks.post_promotion {
            batch.push(Action::RunHook {
                point: HookPoint::PostPromotion,
            });
        }
        if self.plan.scale_down_delay == Duration::ZERO {
            self.phase = Phase::ScalingDown { until: None };
            batch.push(Action::Retire {
                slot: Slot::Previous,
            });
        } else {
            self.phase = Phase::ScalingDown {
                until: Some(self.now.after(self.plan.scale_down_delay)),
            };
        }
    }

    /// Stable takes all traffic again: the candidate is retired next.
    fn rollback_routed(&mut self, reason: RollbackReason, g: u64, batch: &mut Vec<Action>) {
        self.retry = None;
        self.route_applied = g;
        self.phase = Phase::RollingBack {
            reason,
            progress: RollbackProgress::Retiring,
        };
        batch.push(Action::Retire {
            slot: Slot::Candidate,
        });
    }

    /// The candidate is gone after a rollback: the onRollback hook, and the rollout ends.
    fn candidate_retired(&mut self, reason: RollbackReason, batch: &mut Vec<Action>) {
        self.retry = None;
        self.record("candidate retired; all traffic on stable");
        self.event(Trigger::RolledBack, None, reason.to_string());
        if self.plan.hooks.on_rollback {
            batch.push(Action::RunHook {
                point: HookPoint::OnRollback,
            });
        }
        self.phase = Phase::Done {
            outcome: Outcome::RolledBack { reason },
        };
    }

    /// The preRollout hook's result: deploy the candidate, or roll back.
    fn pre_rollout_result(&mut self, passed: bool, detail: String, batch: &mut Vec<Action>) {
        if passed {
            self.deploy(batch);
        } else {
            self.roll_back(
                RollbackReason::HookFailed {
                    point: HookPoint::PreRollout,
                    detail,
                },
                batch,
            );
        }
    }

    /// A guardrail tripped: a rollback, unless the swap is already under way.
    fn guardrail_tripped(
        &mut self,
        phase: &Phase,
        name: String,
        detail: String,
        batch: &mut Vec<Action>,
    ) {
        let before_swap = !matches!(
            phase,
            Phase::Promoting {
                progress: PromotionProgress::Swapping
            }
        );
        if before_swap {
            self.roll_back(RollbackReason::Guardrail { name, detail }, batch);
        }
    }

    /// The previous version is gone after a promotion: the rollout ends promoted.
    fn previous_retired(&mut self) {
        self.retry = None;
        self.record("previous version retired");
        self.phase = Phase::Done {
            outcome: Outcome::Promoted,
        };
    }

    /// Whether the current phase waits on `operation`, so that its failure matters.
    pub(super) fn awaits(&self, operation: Operation) -> bool {
        use PromotionProgress as P;
        use RollbackProgress as R;
        matches!(
            (&self.phase, operation),
            (Phase::Deploying, Operation::Deploy)
                | (
                    Phase::Step {
                        progress: StepProgress::Routing { .. },
                        ..
                    },
                    Operation::SetRoute
                )
                | (
                    Phase::Promoting {
                        progress: P::Routing { .. }
                    },
                    Operation::SetRoute
                )
                | (
                    Phase::RollingBack {
                        progress: R::Routing { .. },
                        ..
                    },
                    Operation::SetRoute
                )
                | (
                    Phase::Promoting {
                        progress: P::Swapping
                    },
                    Operation::Promote
                )
                | (Phase::ScalingDown { until: None }, Operation::Retire)
                | (
                    Phase::RollingBack {
                        progress: R::Retiring,
                        ..
                    },
                    Operation::Retire
                )
        )
    }

    fn backend_failed(&mut self, operation: Operation, message: String, batch: &mut Vec<Action>) {
        let failures = self
            .retry
            .as_ref()
            .filter(|r| r.operation == operation)
            .map_or(0, |r| r.failures)
            + 1;
        let forward = self.deadline_applies();
        if forward && failures >= MAX_FORWARD_ATTEMPTS {
            self.roll_back(RollbackReason::BackendFailed { operation, message }, batch);
            return;
        }
        let backoff = BACKEND_RETRY.delay_after(failures);
        self.record(format!(
            "{operation} failed ({message}); retrying in {backoff}"
        ));
        self.retry = Some(PendingRetry {
            operation,
            failures,
            at: Some(self.now.after(backoff)),
            message,
        });
    }
}
