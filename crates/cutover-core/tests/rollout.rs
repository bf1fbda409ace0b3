//! The rollout state machine, step by step and under random inputs. The seeded fault
//! simulation runs through the controller's driver (`cutover-controller/tests/simulation.rs`).

mod support;

use cutover_core::Duration;
use cutover_core::judge::{AnalysisProgress, MetricProgress, Verdict};
use cutover_core::plan::{HookPoints, Plan, PlanStep, StrategyKind};
use cutover_core::rollout::{
    Action, Command, Observation, Operation, Outcome, Phase, PromotionProgress, RollbackReason,
    Rollout, Route, Slot, StateError, StepProgress, Timer, Timestamp, advance,
};
use cutover_core::spec::HookPoint;
use proptest::prelude::*;
use support::{T0, blue_green_plan, canary_plan, hook};

fn at(secs: u64) -> Timestamp {
    Timestamp(T0 + secs * 1000)
}

fn drain(rollout: &mut Rollout) -> Vec<Action> {
    std::iter::from_fn(|| rollout.poll_action()).collect()
}

/// The actions after the leading `Persist`, which every batch must start with.
#[track_caller]
fn effects(rollout: &mut Rollout) -> Vec<Action> {
    let actions = drain(rollout);
    assert_eq!(
        actions.first(),
        Some(&Action::Persist),
        "a batch starts with Persist: {actions:?}"
    );
    actions[1..].to_vec()
}

fn route_generation(actions: &[Action]) -> u64 {
    actions
        .iter()
        .find_map(|a| match a {
            Action::SetRoute { generation, .. } => Some(*generation),
            _ => None,
        })
        .expect("a SetRoute action")
}

fn weight_plan(weights: &[u8]) -> Plan {
    Plan {
        kind: StrategyKind::Canary,
        steps: weights
            .iter()
            .map(|w| PlanStep::SetWeight { weight: *w })
            .collect(),
        scale_down_delay: Duration::from_secs(30),
        progress_deadline: Duration::from_secs(600),
        hooks: HookPoints::default(),
    }
}

/// Drives a rollout of `weight_plan` to its end with every acknowledgement given.
#[test]
fn canary_walks_each_weight_then_promotes_and_retires_previous() {
    let mut r = Rollout::new(weight_plan(&[10, 50]), at(0));
    assert_eq!(effects(&mut r), vec![Action::Deploy]);
    r.handle(at(5), Observation::CandidateReady)
        .expect("observation");
    let actions = effects(&mut r);
    assert!(
        matches!(&actions[..], [Action::SetRoute { route, .. }] if route.candidate_weight == 10)
    );
    r.handle(
        at(6),
        Observation::RouteApplied {
            generation: route_generation(&actions),
        },
    )
    .expect("observation");
    let actions = effects(&mut r);
    assert!(
        matches!(&actions[..], [Action::SetRoute { route, .. }] if route.candidate_weight == 50)
    );
    r.handle(
        at(7),
        Observation::RouteApplied {
            generation: route_generation(&actions),
        },
    )
    .expect("observation");
    let actions = effects(&mut r);
    assert!(
        matches!(&actions[..], [Action::SetRoute { route, .. }] if route.candidate_weight == 100)
    );
    r.handle(
        at(8),
        Observation::RouteApplied {
            generation: route_generation(&actions),
        },
    )
    .expect("observation");
    assert_eq!(effects(&mut r), vec![Action::Promote]);
    r.handle(at(9), Observation::Promoted).expect("observation");
    assert_eq!(effects(&mut r), vec![]);
    assert_eq!(r.timers(), vec![(Timer::ScaleDownDelay, at(39))]);
    r.handle_timeout(at(38));
    assert_eq!(
        drain(&mut r),
        vec![],
        "nothing before the delay, not even a Persist"
    );
    r.handle_timeout(at(39));
    assert_eq!(
        effects(&mut r),
        vec![Action::Retire {
            slot: Slot::Previous
        }]
    );
    r.handle(
        at(40),
        Observation::Retired {
            slot: Slot::Previous,
        },
    )
    .expect("observation");
    assert_eq!(r.outcome(), Some(&Outcome::Promoted));
    assert_eq!(
        r.route(),
        &Route::default(),
        "after promotion all traffic is on the new stable"
    );
}

#[test]
fn a_last_set_weight_100_is_not_sent_again_at_promotion() {
    let mut r = Rollout::new(weight_plan(&[50, 100]), at(0));
    drain(&mut r);
    r.handle(at(1), Observation::CandidateReady)
        .expect("observation");
    let g = route_generation(&effects(&mut r));
    r.handle(at(2), Observation::RouteApplied { generation: g })
        .expect("observation");
    let g = route_generation(&effects(&mut r));
    r.handle(at(3), Observation::RouteApplied { generation: g })
        .expect("observation");
    assert_eq!(effects(&mut r), vec![Action::Promote]);
}

#[test]
fn stale_acknowledgements_are_ignored() {
    let mut r = Rollout::new(weight_plan(&[10, 50]), at(0));
    drain(&mut r);
    r.handle(at(1), Observation::CandidateReady)
        .expect("observation");
    let g = route_generation(&effects(&mut r));
    r.handle(at(2), Observation::RouteApplied { generation: g + 7 })
        .expect("observation");
    assert!(matches!(
        r.phase(),
        Phase::Step {
            index: 0,
            progress: StepProgress::Routing { .. }
        }
    ));
    r.handle(
        at(2),
        Observation::AnalysisVerdict {
            run: 3,
            verdict: Verdict::Failure,
            detail: String::new(),
        },
    )
    .expect("observation");
    assert!(
        matches!(r.phase(), Phase::Step { index: 0, .. }),
        "a verdict of no running analysis changes nothing"
    );
}

/// The routes a run of actions set, in order.
fn routes_of(actions: &[Action]) -> Vec<Route> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::SetRoute { route, .. } => Some(route.clone()),
            _ => None,
        })
        .collect()
}

/// What a finished rollout must leave: all traffic on stable and the candidate retired
/// (its retirement the last slot operation asked for).
#[track_caller]
fn assert_left_clean(r: &Rollout, actions: &[Action]) {
    assert!(r.is_done(), "{:?}", r.phase());
    let route = r.route();
    assert_eq!(route.candidate_weight, 0, "candidate weight left");
    assert!(route.header_route.is_empty(), "header route left");
    assert_eq!(route.mirror_percent, 0, "mirroring left on");
    let last_retire = actions.iter().rev().find_map(|a| match a {
        Action::Retire { slot } => Some(*slot),
        _ => None,
    });
    let expected = match r.outcome() {
        Some(Outcome::Promoted) => Slot::Previous,
        _ => Slot::Candidate,
    };
    assert_eq!(last_retire, Some(expected));
}

#[test]
fn failed_analysis_rolls_back_to_all_stable_and_retires_candidate() {
    let mut r = Rollout::new(canary_plan(), at(0));
    let actions = complete_with(&mut r, 0, &[Verdict::Success, Verdict::Failure]);
    assert_left_clean(&r, &actions);
    let outcome = r.outcome().cloned();
    assert!(
        matches!(
            outcome,
            Some(Outcome::RolledBack {
                reason: RollbackReason::AnalysisFailed { step: 6, .. }
            })
        ),
        "{outcome:?}"
    );
    assert!(!actions.contains(&Action::Promote));
    assert!(actions.contains(&Action::RunHook {
        point: HookPoint::OnRollback
    }));
}

#[test]
fn canary_with_hooks_header_route_and_mirror_promotes() {
    let mut r = Rollout::new(canary_plan(), at(0));
    let actions = complete_with(&mut r, 0, &[Verdict::Success, Verdict::Success]);
    assert_left_clean(&r, &actions);
    assert_eq!(r.outcome(), Some(&Outcome::Promoted));
    let routes = routes_of(&actions);
    assert_eq!(
        routes
            .iter()
            .map(|r| r.candidate_weight)
            .collect::<Vec<_>>(),
        vec![10, 10, 10, 50, 100, 100]
    );
    assert_eq!(routes[2].mirror_percent, 20);
    assert_eq!(routes[1].header_route.len(), 1);
    assert!(
        routes[4].mirror_percent == 20,
        "the last step keeps the mirror"
    );
    assert!(
        routes[5].header_route.is_empty() && routes[5].mirror_percent == 0,
        "promotion clears header route and mirror"
    );
    let hooks: Vec<HookPoint> = actions
        .iter()
        .filter_map(|a| match a {
            Action::RunHook { point } => Some(*point),
            _ => None,
        })
        .collect();
    assert_eq!(
        hooks,
        vec![
            HookPoint::PreRollout,
            HookPoint::PrePromotion,
            HookPoint::PostPromotion
        ]
    );
}

#[test]
fn blue_green_switches_at_once_after_preview_analysis() {
    let mut r = Rollout::new(blue_green_plan(false), at(0));
    let actions = complete_with(&mut r, 0, &[Verdict::Success, Verdict::Success]);
    assert_left_clean(&r, &actions);
    assert_eq!(r.outcome(), Some(&Outcome::Promoted));
    let weights: Vec<u8> = routes_of(&actions)
        .iter()
        .map(|r| r.candidate_weight)
        .collect();
    assert!(
        weights.iter().all(|w| *w == 0 || *w == 100),
        "blue/green never splits by weight: {weights:?}"
    );
    assert!(weights.contains(&100), "{weights:?}");
}

#[test]
fn blue_green_post_promotion_failure_switches_back_while_old_version_runs() {
    let mut r = Rollout::new(blue_green_plan(false), at(0));
    let actions = complete_with(&mut r, 0, &[Verdict::Success, Verdict::Failure]);
    assert_left_clean(&r, &actions);
    assert!(matches!(r.outcome(), Some(Outcome::RolledBack { .. })));
    assert!(
        routes_of(&actions)
            .iter()
            .any(|r| r.candidate_weight == 100),
        "the switch happened before the failure"
    );
    assert!(
        !actions.contains(&Action::Promote),
        "the old version still runs"
    );
}

#[test]
fn manual_blue_green_waits_for_promote_and_deadline_stops_meanwhile() {
    let mut r = Rollout::new(blue_green_plan(true), at(0));
    drain(&mut r);
    r.handle(at(1), Observation::CandidateReady)
        .expect("observation");
    let g = route_generation(&effects(&mut r));
    r.handle(at(2), Observation::RouteApplied { generation: g })
        .expect("observation");
    let run = match &effects(&mut r)[..] {
        [Action::StartAnalysis { run, .. }] => *run,
        other => panic!("{other:?}"),
    };
    r.handle(
        at(60),
        Observation::AnalysisVerdict {
            run,
            verdict: Verdict::Success,
            detail: String::new(),
        },
    )
    .expect("observation");
    drain(&mut r);
    assert!(r.waits_for_person());
    assert!(
        r.timers()
            .iter()
            .all(|(t, _)| *t != Timer::ProgressDeadline),
        "no deadline while a person decides"
    );
    r.handle_timeout(at(100_000));
    assert!(
        r.waits_for_person(),
        "a day later it still waits: {:?}",
        r.phase()
    );
    r.handle(at(100_001), Observation::Command(Command::Promote))
        .expect("promote accepted");
    assert!(matches!(
        r.phase(),
        Phase::Step {
            index: 3,
            progress: StepProgress::Routing { .. }
        }
    ));
    assert!(
        r.timers()
            .iter()
            .any(|(t, _)| *t == Timer::ProgressDeadline)
    );
}

#[test]
fn inconclusive_analysis_holds_then_resume_runs_it_again() {
    let mut r = Rollout::new(canary_plan(), at(0));
    drain(&mut r);
    r.handle(at(1), hook(HookPoint::PreRollout, true))
        .expect("observation");
    drain(&mut r);
    r.handle(at(2), Observation::CandidateReady)
        .expect("observation");
    let g = route_generation(&effects(&mut r));
    r.handle(at(3), Observation::RouteApplied { generation: g })
        .expect("observation");
    let run = match &effects(&mut r)[..] {
        [Action::StartAnalysis { run, .. }] => *run,
        other => panic!("{other:?}"),
    };
    r.handle(
        at(70),
        Observation::AnalysisVerdict {
            run,
            verdict: Verdict::Inconclusive,
            detail: "3 < minRequests 100".into(),
        },
    )
    .expect("observation");
    drain(&mut r);
    assert!(
        matches!(
            r.phase(),
            Phase::Step {
                index: 1,
                progress: StepProgress::Inconclusive { .. }
            }
        ),
        "no data is never a pass"
    );
    r.handle(at(80), Observation::Command(Command::Resume))
        .expect("resume accepted");
    match &effects(&mut r)[..] {
        [
            Action::StartAnalysis {
                run: again,
                step: 1,
                ..
            },
        ] => assert_ne!(*again, run),
        other => panic!("{other:?}"),
    }
}

#[test]
fn manual_pause_stops_a_timed_pause_and_resume_extends_it() {
    let plan = Plan {
        steps: vec![
            PlanStep::Pause {
                duration: Some(Duration::from_secs(60)),
            },
            PlanStep::SetWeight { weight: 20 },
        ],
        ..weight_plan(&[])
    };
    let mut r = Rollout::new(plan, at(0));
    drain(&mut r);
    r.handle(at(0), Observation::CandidateReady)
        .expect("observation");
    drain(&mut r);
    assert!(r.timers().contains(&(Timer::StepPause, at(60))));
    r.handle(at(10), Observation::Command(Command::Pause))
        .expect("pause accepted");
    r.handle_timeout(at(100));
    assert!(
        matches!(r.phase(), Phase::Step { index: 0, .. }),
        "paused: the timed pause does not end"
    );
    r.handle(at(130), Observation::Command(Command::Resume))
        .expect("resume accepted");
    assert!(
        r.timers().contains(&(Timer::StepPause, at(180))),
        "50s were left when paused: {:?}",
        r.timers()
    );
    r.handle_timeout(at(180));
    assert!(matches!(r.phase(), Phase::Step { index: 1, .. }));
}

#[test]
fn progress_deadline_rolls_back() {
    let mut r = Rollout::new(weight_plan(&[10]), at(0));
    drain(&mut r);
    assert!(r.timers().contains(&(Timer::ProgressDeadline, at(600))));
    r.handle_timeout(at(600));
    assert!(matches!(
        r.phase(),
        Phase::RollingBack {
            reason: RollbackReason::DeadlineExceeded,
            ..
        }
    ));
    let actions = effects(&mut r);
    assert!(matches!(&actions[..], [Action::SetRoute { route, .. }] if *route == Route::default()));
}

#[test]
fn prepromotion_gate_holds_on_non_2xx_and_asks_again() {
    let mut plan = weight_plan(&[]);
    plan.steps.push(PlanStep::PromotionGate);
    let mut r = Rollout::new(plan, at(0));
    drain(&mut r);
    r.handle(at(1), Observation::CandidateReady)
        .expect("observation");
    assert_eq!(
        effects(&mut r),
        vec![Action::RunHook {
            point: HookPoint::PrePromotion
        }]
    );
    r.handle(at(2), hook(HookPoint::PrePromotion, false))
        .expect("observation");
    assert!(matches!(
        r.phase(),
        Phase::Step {
            progress: StepProgress::GateHeld { .. },
            ..
        }
    ));
    assert_eq!(effects(&mut r), vec![]);
    assert!(r.timers().contains(&(Timer::HookRetry, at(32))));
    r.handle_timeout(at(32));
    assert_eq!(
        effects(&mut r),
        vec![Action::RunHook {
            point: HookPoint::PrePromotion
        }]
    );
    r.handle(at(33), hook(HookPoint::PrePromotion, true))
        .expect("observation");
    assert!(matches!(
        r.phase(),
        Phase::Promoting {
            progress: PromotionProgress::Routing { .. }
        }
    ));
}

#[test]
fn a_person_can_release_a_held_gate() {
    let mut plan = weight_plan(&[]);
    plan.steps.push(PlanStep::PromotionGate);
    let mut r = Rollout::new(plan, at(0));
    drain(&mut r);
    r.handle(at(1), Observation::CandidateReady)
        .expect("observation");
    r.handle(at(2), hook(HookPoint::PrePromotion, false))
        .expect("observation");
    r.handle(at(3), Observation::Command(Command::Promote))
        .expect("promote overrides the gate");
    assert!(matches!(r.phase(), Phase::Promoting { .. }));
}

#[test]
fn forward_backend_errors_retry_with_backoff_then_roll_back() {
    let mut r = Rollout::new(weight_plan(&[10]), at(0));
    drain(&mut r);
    let mut t = 0;
    for failure in 1..5u64 {
        r.handle(
            at(t),
            Observation::BackendError {
                operation: Operation::Deploy,
                message: "timeout".into(),
            },
        )
        .expect("observation");
        let backoff = 1u64 << (failure - 1);
        assert!(
            r.timers().contains(&(Timer::BackendRetry, at(t + backoff))),
            "failure {failure}: {:?}",
            r.timers()
        );
        t += backoff;
        r.handle_timeout(at(t));
        assert_eq!(
            effects(&mut r).last(),
            Some(&Action::Deploy),
            "retried after {backoff}s"
        );
    }
    r.handle(
        at(t),
        Observation::BackendError {
            operation: Operation::Deploy,
            message: "timeout".into(),
        },
    )
    .expect("observation");
    assert!(matches!(
        r.phase(),
        Phase::RollingBack {
            reason: RollbackReason::BackendFailed {
                operation: Operation::Deploy,
                ..
            },
            ..
        }
    ));
}

#[test]
fn rollback_operations_are_retried_until_they_succeed() {
    let mut r = Rollout::new(weight_plan(&[10]), at(0));
    drain(&mut r);
    r.handle(at(1), Observation::Command(Command::Abort))
        .expect("abort accepted");
    let g = route_generation(&effects(&mut r));
    r.handle(at(2), Observation::RouteApplied { generation: g })
        .expect("observation");
    assert_eq!(
        effects(&mut r),
        vec![Action::Retire {
            slot: Slot::Candidate
        }]
    );
    let mut t = 2;
    for _ in 0..20 {
        r.handle(
            at(t),
            Observation::BackendError {
                operation: Operation::Retire,
                message: "busy".into(),
            },
        )
        .expect("observation");
        t = r
            .poll_timeout()
            .expect("a retry timer")
            .0
            .saturating_sub(T0)
            / 1000;
        r.handle_timeout(at(t));
        assert_eq!(
            effects(&mut r).last(),
            Some(&Action::Retire {
                slot: Slot::Candidate
            })
        );
    }
    r.handle(
        at(t),
        Observation::Retired {
            slot: Slot::Candidate,
        },
    )
    .expect("observation");
    assert_eq!(
        r.outcome(),
        Some(&Outcome::RolledBack {
            reason: RollbackReason::Aborted
        })
    );
}

#[test]
fn guardrail_trip_rolls_back_at_once() {
    let mut r = Rollout::new(weight_plan(&[10, 50]), at(0));
    drain(&mut r);
    r.handle(at(1), Observation::CandidateReady)
        .expect("observation");
    drain(&mut r);
    r.handle(
        at(2),
        Observation::GuardrailTripped {
            name: "5xx".into(),
            detail: "0.8 > 0.5 over 40 requests".into(),
        },
    )
    .expect("observation");
    assert!(matches!(
        r.phase(),
        Phase::RollingBack {
            reason: RollbackReason::Guardrail { .. },
            ..
        }
    ));
}

#[test]
fn commands_that_do_not_fit_say_what_would() {
    let mut r = Rollout::new(weight_plan(&[10]), at(0));
    drain(&mut r);
    let err = r
        .handle(at(1), Observation::Command(Command::Retry))
        .expect_err("retry of a running rollout");
    assert_eq!(
        err.to_string(),
        "cannot retry now: the rollout is deploying the candidate; retry applies to a rolled-back or aborted rollout"
    );
    assert!(
        r.handle(at(1), Observation::Command(Command::Promote))
            .is_err(),
        "promote before the candidate is ready"
    );
    assert!(
        r.handle(at(1), Observation::Command(Command::Resume))
            .is_err(),
        "resume of a rollout that is not paused"
    );
}

#[test]
fn promote_full_skips_remaining_steps() {
    let mut r = Rollout::new(canary_plan(), at(0));
    drain(&mut r);
    r.handle(at(1), hook(HookPoint::PreRollout, true))
        .expect("observation");
    r.handle(at(2), Observation::CandidateReady)
        .expect("observation");
    drain(&mut r);
    r.handle(at(3), Observation::Command(Command::PromoteFull))
        .expect("accepted");
    let actions = effects(&mut r);
    assert!(
        matches!(&actions[..], [Action::SetRoute { route, .. }] if route.candidate_weight == 100)
    );
    assert!(matches!(r.phase(), Phase::Promoting { .. }));
}

#[test]
fn retry_after_rollback_starts_over() {
    let mut r = Rollout::new(weight_plan(&[10]), at(0));
    drain(&mut r);
    r.handle(
        at(1),
        Observation::CandidateFailed {
            reason: "no such image".into(),
        },
    )
    .expect("observation");
    let g = route_generation(&effects(&mut r));
    r.handle(at(2), Observation::RouteApplied { generation: g })
        .expect("observation");
    r.handle(
        at(3),
        Observation::Retired {
            slot: Slot::Candidate,
        },
    )
    .expect("observation");
    assert!(matches!(
        r.outcome(),
        Some(Outcome::RolledBack {
            reason: RollbackReason::CandidateFailed { .. }
        })
    ));
    drain(&mut r);
    r.handle(at(4), Observation::Command(Command::Retry))
        .expect("retry accepted");
    assert_eq!(effects(&mut r), vec![Action::Deploy]);
    assert_eq!(r.attempt(), 2);
}

#[test]
fn a_state_of_another_format_version_is_refused() {
    let r = Rollout::new(weight_plan(&[10]), at(0));
    let mut json = r.to_json();
    json["formatVersion"] = serde_json::json!(99);
    assert!(matches!(
        Rollout::from_json(json),
        Err(StateError::Version { found: 99 })
    ));
    assert!(matches!(
        Rollout::from_json(serde_json::json!({"formatVersion": 1})),
        Err(StateError::Malformed(_))
    ));
}

#[test]
fn resume_reissues_the_current_phase_actions() {
    let mut r = Rollout::new(canary_plan(), at(0));
    drain(&mut r);
    r.handle(at(1), hook(HookPoint::PreRollout, true))
        .expect("observation");
    r.handle(at(2), Observation::CandidateReady)
        .expect("observation");
    let g = route_generation(&effects(&mut r));
    r.handle(at(3), Observation::RouteApplied { generation: g })
        .expect("observation");
    drain(&mut r);
    let mut restored = Rollout::from_json(r.to_json()).expect("reads back");
    restored.resume(at(10));
    let actions = effects(&mut restored);
    assert!(
        matches!(&actions[0], Action::SetRoute { route, .. } if route.candidate_weight == 10),
        "{actions:?}"
    );
    assert!(
        matches!(&actions[1], Action::StartAnalysis { step: 1, .. }),
        "{actions:?}"
    );
}

/// A canary rollout at its analysis step (`canary_plan`'s step 1), with the run's number.
fn at_analysis() -> (Rollout, u32) {
    let mut r = Rollout::new(canary_plan(), at(0));
    drain(&mut r);
    r.handle(at(1), hook(HookPoint::PreRollout, true))
        .expect("observation");
    r.handle(at(2), Observation::CandidateReady)
        .expect("observation");
    let g = route_generation(&effects(&mut r));
    r.handle(at(3), Observation::RouteApplied { generation: g })
        .expect("observation");
    match &effects(&mut r)[..] {
        [
            Action::StartAnalysis {
                run,
                progress,
                resumed: false,
                ..
            },
        ] => {
            assert_eq!(progress.started_at, at(3), "the run starts now");
            assert_eq!(progress.attempts(), 0);
            (r, *run)
        }
        other => panic!("{other:?}"),
    }
}

/// Progress after `passed` passing measurements of the canary plan's metric.
fn progress_of(run: u32, passed: u32) -> AnalysisProgress {
    let mut progress = AnalysisProgress::started(run, at(3));
    progress.metrics.push(MetricProgress {
        name: "errors".into(),
        passed,
        last_value: Some(0.01),
        ..MetricProgress::default()
    });
    progress
}

#[test]
fn analysis_progress_is_persisted_and_resumed_from() {
    let (mut r, run) = at_analysis();
    r.handle(
        at(33),
        Observation::AnalysisProgress {
            progress: progress_of(run, 1),
        },
    )
    .expect("observation");
    assert_eq!(
        drain(&mut r),
        vec![Action::Persist],
        "each measurement is persisted, nothing else happens"
    );
    // Progress of another run (a stopped one reporting late) is ignored.
    r.handle(
        at(34),
        Observation::AnalysisProgress {
            progress: progress_of(run + 1, 2),
        },
    )
    .expect("observation");
    assert_eq!(drain(&mut r), vec![]);
    let mut restored = Rollout::from_json(r.to_json()).expect("reads back");
    assert_eq!(restored.analysis(), Some(&progress_of(run, 1)));
    restored.resume(at(50));
    let actions = effects(&mut restored);
    match actions
        .iter()
        .find(|a| matches!(a, Action::StartAnalysis { .. }))
    {
        Some(Action::StartAnalysis {
            run: again,
            progress,
            resumed: true,
            ..
        }) => {
            assert_eq!(*again, run, "the same run goes on");
            assert!(
                restored
                    .history()
                    .any(|h| h.message
                        == format!("analysis run {run} resumed with 1 measurements kept")),
                "{:?}",
                restored.history().collect::<Vec<_>>()
            );
            assert_eq!(
                progress,
                &progress_of(run, 1),
                "started at 3 s, one measurement in"
            );
        }
        other => panic!("{other:?} in {actions:?}"),
    }
    // Once the run is decided its progress is dropped from the state.
    restored
        .handle(
            at(70),
            Observation::AnalysisVerdict {
                run,
                verdict: Verdict::Success,
                detail: String::new(),
            },
        )
        .expect("observation");
    assert_eq!(restored.analysis(), None);
    assert!(restored.to_json().get("analysis").is_none());
}

#[test]
fn a_state_written_before_analyses_were_persisted_starts_the_analysis_over() {
    let (mut r, run) = at_analysis();
    r.handle(
        at(33),
        Observation::AnalysisProgress {
            progress: progress_of(run, 1),
        },
    )
    .expect("observation");
    drain(&mut r);
    // The previous version's layout: the same state without the `analysis` part.
    let mut json = r.to_json();
    json.as_object_mut()
        .expect("an object")
        .remove("analysis")
        .expect("the progress is persisted");
    let mut old = Rollout::from_json(json).expect("an old state still loads");
    assert_eq!(old.analysis(), None);
    old.resume(at(50));
    match effects(&mut old)
        .iter()
        .find(|a| matches!(a, Action::StartAnalysis { .. }))
    {
        Some(Action::StartAnalysis {
            run: again,
            progress,
            ..
        }) => {
            assert_eq!(*again, run);
            assert_eq!(
                progress,
                &AnalysisProgress::started(run, at(50)),
                "over, from now"
            );
        }
        other => panic!("{other:?}"),
    }
    // From then on the restarted run is persisted like a new one.
    assert_eq!(old.analysis().map(|p| p.started_at), Some(at(50)));
}

#[test]
fn advance_is_the_functional_face_of_handle() {
    let r = Rollout::new(weight_plan(&[10]), at(0));
    let (r, actions, rejected) = advance(r, at(0), []);
    assert_eq!(actions, vec![Action::Persist, Action::Deploy]);
    let (r, actions, rejected2) = advance(
        r,
        at(1),
        [
            Observation::CandidateReady,
            Observation::Command(Command::Retry),
        ],
    );
    assert!(rejected.is_empty());
    assert_eq!(rejected2.len(), 1);
    assert!(matches!(r.phase(), Phase::Step { index: 0, .. }));
    assert!(actions.iter().any(|a| matches!(a, Action::SetRoute { .. })));
}

fn any_command() -> impl Strategy<Value = Command> {
    prop_oneof![
        Just(Command::Promote),
        Just(Command::PromoteFull),
        Just(Command::Abort),
        Just(Command::Pause),
        Just(Command::Resume),
        Just(Command::Retry),
    ]
}

fn any_observation() -> impl Strategy<Value = Observation> {
    let verdict = prop_oneof![
        Just(Verdict::Success),
        Just(Verdict::Failure),
        Just(Verdict::Inconclusive),
        Just(Verdict::Error)
    ];
    let point = prop_oneof![
        Just(HookPoint::PreRollout),
        Just(HookPoint::PrePromotion),
        Just(HookPoint::PostPromotion)
    ];
    let slot = prop_oneof![Just(Slot::Candidate), Just(Slot::Previous)];
    let operation = prop_oneof![
        Just(Operation::Deploy),
        Just(Operation::SetRoute),
        Just(Operation::Promote),
        Just(Operation::Retire)
    ];
    prop_oneof![
        Just(Observation::CandidateReady),
        Just(Observation::CandidateFailed { reason: "x".into() }),
        (0u64..12).prop_map(|generation| Observation::RouteApplied { generation }),
        (point, any::<bool>()).prop_map(|(point, passed)| Observation::HookResult {
            point,
            passed,
            detail: String::new()
        }),
        (0u32..6, verdict).prop_map(|(run, verdict)| Observation::AnalysisVerdict {
            run,
            verdict,
            detail: String::new()
        }),
        Just(Observation::GuardrailTripped {
            name: "g".into(),
            detail: String::new()
        }),
        Just(Observation::Promoted),
        slot.prop_map(|slot| Observation::Retired { slot }),
        operation.prop_map(|operation| Observation::BackendError {
            operation,
            message: "e".into()
        }),
        any_command().prop_map(Observation::Command),
    ]
}

/// Gives the machine what its actions ask for until it is done (or 200 rounds pass).
fn complete(r: &mut Rollout, t: u64) -> Vec<Action> {
    // A fresh driver takes over: actions issued before and never answered come again.
    r.resume(at(t));
    complete_with(r, t, &[])
}

/// As [`complete`], the analyses ending with `verdicts` in turn (then passing).
fn complete_with(r: &mut Rollout, mut t: u64, verdicts: &[Verdict]) -> Vec<Action> {
    let mut verdicts = verdicts.iter().copied();
    let mut all = Vec::new();
    for _ in 0..1_000 {
        let actions = drain(r);
        if actions.is_empty() {
            // Time moves only once everything asked for was answered.
            if r.is_done() {
                break;
            }
            if let Some(next) = r.poll_timeout() {
                t = t.max((next.0 - T0) / 1000);
                r.handle_timeout(at(t));
            } else if r.waits_for_person() {
                let _ = r.handle(at(t), Observation::Command(Command::Promote));
            } else {
                break;
            }
            continue;
        }
        all.extend(actions.iter().cloned());
        t += 1;
        for action in actions {
            let reply = match action {
                Action::Deploy => Some(Observation::CandidateReady),
                Action::SetRoute { generation, .. } => {
                    Some(Observation::RouteApplied { generation })
                }
                Action::Promote => Some(Observation::Promoted),
                Action::Retire { slot } => Some(Observation::Retired { slot }),
                Action::RunHook { point } => Some(hook(point, true)),
                Action::StartAnalysis { run, .. } => Some(Observation::AnalysisVerdict {
                    run,
                    verdict: verdicts.next().unwrap_or(Verdict::Success),
                    detail: String::new(),
                }),
                _ => None,
            };
            if let Some(reply) = reply {
                let _ = r.handle(at(t), reply);
            }
        }
    }
    all
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, .. ProptestConfig::default() })]

    /// Weights stay in 0..=100, a failed analysis is never followed by a promotion in the
    /// same attempt, and an accepted abort always ends with all traffic on stable.
    #[test]
    fn random_inputs_keep_the_invariants(inputs in proptest::collection::vec((0u64..120, any_observation()), 0..60)) {
        let mut r = Rollout::new(canary_plan(), at(0));
        let mut t = 0;
        let mut failed_in_attempt = None;
        for (dt, observation) in inputs {
            t += dt;
            let awaited_failure = matches!(
                (r.phase(), &observation),
                (Phase::Step { progress: StepProgress::Analyzing { run }, .. }, Observation::AnalysisVerdict { run: got, verdict: Verdict::Failure, .. }) if run == got
            );
            let _ = r.handle(at(t), observation);
            r.handle_timeout(at(t));
            if awaited_failure {
                failed_in_attempt = Some(r.attempt());
            }
            for action in drain(&mut r) {
                if let Action::SetRoute { route, .. } = &action {
                    prop_assert!(route.candidate_weight <= 100 && route.mirror_percent <= 100);
                }
                if action == Action::Promote {
                    prop_assert_ne!(failed_in_attempt, Some(r.attempt()), "promotion after a failed analysis");
                }
            }
        }
        if r.handle(at(t), Observation::Command(Command::Abort)).is_ok() && !r.is_done() {
            let actions = complete(&mut r, t);
            prop_assert!(!actions.contains(&Action::Promote));
            prop_assert!(matches!(r.outcome(), Some(Outcome::RolledBack { .. })), "{:?}", r.phase());
            prop_assert_eq!(r.route(), &Route::default());
        }
    }

    /// A state persisted and restored at any point continues exactly as the original.
    #[test]
    fn a_restored_state_continues_identically(
        inputs in proptest::collection::vec((0u64..120, any_observation()), 1..60),
        cut in 0usize..60,
    ) {
        let mut original = Rollout::new(canary_plan(), at(0));
        drain(&mut original);
        let mut copy: Option<Rollout> = None;
        let mut t = 0;
        for (i, (dt, observation)) in inputs.into_iter().enumerate() {
            if i == cut {
                copy = Some(Rollout::from_json(original.to_json()).expect("reads back"));
            }
            t += dt;
            let a = original.handle(at(t), observation.clone());
            original.handle_timeout(at(t));
            let actions_a = drain(&mut original);
            if let Some(c) = copy.as_mut() {
                let b = c.handle(at(t), observation);
                c.handle_timeout(at(t));
                let actions_b = drain(c);
                prop_assert_eq!(a, b);
                prop_assert_eq!(actions_a, actions_b);
                prop_assert_eq!(&original, &*c);
            }
        }
    }
}

/// Regression: the progress deadline rolled back a rollout whose `Promote` was already
/// issued, leaving the new version serving while the outcome said "rolled back".
#[test]
fn nothing_rolls_back_once_promote_is_issued() {
    let mut r = Rollout::new(weight_plan(&[100]), at(0));
    drain(&mut r);
    r.handle(at(1), Observation::CandidateReady)
        .expect("observation");
    let g = route_generation(&effects(&mut r));
    r.handle(at(2), Observation::RouteApplied { generation: g })
        .expect("observation");
    assert_eq!(effects(&mut r), vec![Action::Promote]);
    r.handle_timeout(at(10_000));
    assert!(
        matches!(
            r.phase(),
            Phase::Promoting {
                progress: PromotionProgress::Swapping
            }
        ),
        "{:?}",
        r.phase()
    );
    for _ in 0..20 {
        r.handle(
            r.now(),
            Observation::BackendError {
                operation: Operation::Promote,
                message: "timeout".into(),
            },
        )
        .expect("observation");
        drain(&mut r);
        let next = r.poll_timeout().expect("a retry");
        r.handle_timeout(next);
        assert_eq!(
            effects(&mut r),
            vec![Action::Promote],
            "retried, never given up"
        );
    }
    assert!(
        r.handle(r.now(), Observation::Command(Command::Abort))
            .is_err()
    );
    r.handle(r.now(), Observation::Promoted)
        .expect("observation");
    assert!(matches!(r.phase(), Phase::ScalingDown { .. }));
}

/// Regression: a pause accepted while deploying did not hold the first step, and a pause
/// outlived the promotion.
#[test]
fn pause_applies_only_to_steps_and_never_outlives_them() {
    let mut r = Rollout::new(weight_plan(&[50]), at(0));
    drain(&mut r);
    assert!(
        r.handle(at(1), Observation::Command(Command::Pause))
            .is_err(),
        "not while deploying"
    );
    r.handle(at(2), Observation::CandidateReady)
        .expect("observation");
    r.handle(at(3), Observation::Command(Command::Pause))
        .expect("pause during a step");
    let g = route_generation(&effects(&mut r));
    r.handle(at(4), Observation::RouteApplied { generation: g })
        .expect("observation");
    assert!(
        matches!(
            r.phase(),
            Phase::Step {
                progress: StepProgress::Complete,
                ..
            }
        ),
        "held after the step"
    );
    r.handle(at(5), Observation::Command(Command::PromoteFull))
        .expect("accepted");
    assert!(
        !r.is_paused() && !r.waits_for_person(),
        "promotion lifts the pause"
    );
}

/// Regression: a second `promote` (a double click) skipped the gate or analysis after a
/// pause.
#[test]
fn promote_does_not_skip_a_running_analysis_or_an_unanswered_gate() {
    let mut plan = weight_plan(&[]);
    plan.steps = vec![
        PlanStep::Pause { duration: None },
        PlanStep::Analysis {
            metrics: vec!["errors".into()],
            stage: cutover_core::plan::AnalysisStage::Step,
            minimum: Duration::from_secs(60),
        },
        PlanStep::PromotionGate,
    ];
    let mut r = Rollout::new(plan, at(0));
    drain(&mut r);
    r.handle(at(1), Observation::CandidateReady)
        .expect("observation");
    drain(&mut r);
    r.handle(at(2), Observation::Command(Command::Promote))
        .expect("ends the pause");
    let err = r
        .handle(at(2), Observation::Command(Command::Promote))
        .expect_err("the analysis runs");
    assert!(err.to_string().contains("an analysis is running"), "{err}");
    let run = match &effects(&mut r)[..] {
        [Action::StartAnalysis { run, .. }] => *run,
        other => panic!("{other:?}"),
    };
    r.handle(
        at(70),
        Observation::AnalysisVerdict {
            run,
            verdict: Verdict::Success,
            detail: String::new(),
        },
    )
    .expect("observation");
    assert!(
        r.handle(at(71), Observation::Command(Command::Promote))
            .is_err(),
        "the gate was not answered yet"
    );
}

/// Regression: after promotion the same route generation was re-sent with other content.
#[test]
fn promotion_starts_a_new_route_generation() {
    let mut r = Rollout::new(weight_plan(&[50]), at(0));
    drain(&mut r);
    r.handle(at(1), Observation::CandidateReady)
        .expect("observation");
    let g1 = route_generation(&effects(&mut r));
    r.handle(at(2), Observation::RouteApplied { generation: g1 })
        .expect("observation");
    let g2 = route_generation(&effects(&mut r));
    r.handle(at(3), Observation::RouteApplied { generation: g2 })
        .expect("observation");
    drain(&mut r);
    r.handle(at(4), Observation::Promoted).expect("observation");
    drain(&mut r);
    let mut restored = Rollout::from_json(r.to_json()).expect("reads back");
    restored.resume(at(5));
    match &effects(&mut restored)[..] {
        [Action::SetRoute { generation, route }] => {
            assert!(*generation > g2);
            assert_eq!(*route, Route::default());
        }
        other => panic!("{other:?}"),
    }
}
