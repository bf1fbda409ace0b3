//! The events for people (`Rollout::poll_event`, what notifications are sent for): each
//! trigger comes out once per event, at the step it happened at, and never again after a
//! restart.

// The plans and helpers the other state machine tests use are not all needed here.
#[allow(dead_code)]
mod support;

use cutover_core::Duration;
use cutover_core::judge::Verdict;
use cutover_core::plan::{AnalysisStage, HookPoints, Plan, PlanStep, StrategyKind};
use cutover_core::rollout::{Action, Command, Observation, Rollout, Timestamp};
use cutover_core::spec::Trigger;
use support::T0;

fn at(secs: u64) -> Timestamp {
    Timestamp(T0 + secs * 1000)
}

fn plan(steps: Vec<PlanStep>) -> Plan {
    Plan {
        kind: StrategyKind::Canary,
        steps,
        scale_down_delay: Duration::ZERO,
        progress_deadline: Duration::from_secs(600),
        hooks: HookPoints::default(),
    }
}

fn analysis() -> PlanStep {
    PlanStep::Analysis {
        metrics: vec!["errors".into()],
        stage: AnalysisStage::Step,
        minimum: Duration::from_secs(1),
    }
}

/// Answers every action as a healthy world would (analyses with `verdict`) until the
/// rollout waits for time or a person; returns the events that came out, as
/// `(trigger, step)`.
fn settle(r: &mut Rollout, t: u64, verdict: Verdict) -> Vec<(Trigger, Option<usize>)> {
    let mut events = Vec::new();
    for _ in 0..100 {
        let actions: Vec<Action> = std::iter::from_fn(|| r.poll_action()).collect();
        events.extend(std::iter::from_fn(|| r.poll_event()).map(|e| (e.trigger, e.step)));
        if actions.is_empty() {
            break;
        }
        for action in actions {
            let reply = match action {
                Action::Deploy => Observation::CandidateReady,
                Action::SetRoute { generation, .. } => Observation::RouteApplied { generation },
                Action::Promote => Observation::Promoted,
                Action::Retire { slot } => Observation::Retired { slot },
                Action::StartAnalysis { run, .. } => Observation::AnalysisVerdict {
                    run,
                    verdict,
                    detail: "errors: 0.4 > 0.05".into(),
                },
                _ => continue,
            };
            r.handle(at(t), reply).expect("observation");
        }
    }
    events
}

#[test]
fn a_promoted_rollout_tells_started_each_step_the_pause_for_a_person_and_promoted_once() {
    let mut r = Rollout::new(
        plan(vec![
            PlanStep::SetWeight { weight: 10 },
            PlanStep::Pause { duration: None },
            analysis(),
            PlanStep::SetWeight { weight: 50 },
        ]),
        at(0),
    );
    assert_eq!(
        settle(&mut r, 1, Verdict::Success),
        vec![
            (Trigger::RolloutStarted, None),
            (Trigger::StepCompleted, Some(0)),
            (Trigger::PausedForPerson, Some(1)),
        ]
    );
    r.handle(at(2), Observation::Command(Command::Promote))
        .expect("promote");
    assert_eq!(
        settle(&mut r, 3, Verdict::Success),
        vec![
            (Trigger::StepCompleted, Some(1)),
            (Trigger::StepCompleted, Some(2)),
            (Trigger::StepCompleted, Some(3)),
            (Trigger::Promoted, None),
        ]
    );
    assert!(r.is_done());
}

#[test]
fn a_failed_analysis_tells_analysis_failed_then_rolled_back() {
    let mut r = Rollout::new(
        plan(vec![PlanStep::SetWeight { weight: 10 }, analysis()]),
        at(0),
    );
    assert_eq!(
        settle(&mut r, 1, Verdict::Failure),
        vec![
            (Trigger::RolloutStarted, None),
            (Trigger::StepCompleted, Some(0)),
            (Trigger::AnalysisFailed, Some(1)),
            (Trigger::RolledBack, None),
        ]
    );
}

#[test]
fn an_analysis_in_error_is_told_apart_from_a_failed_one() {
    let mut r = Rollout::new(plan(vec![analysis()]), at(0));
    let events = settle(&mut r, 1, Verdict::Error);
    assert_eq!(
        events,
        vec![
            (Trigger::RolloutStarted, None),
            (Trigger::AnalysisError, Some(0)),
            (Trigger::RolledBack, None),
        ]
    );
}

#[test]
fn an_inconclusive_analysis_then_abort_tells_each_once() {
    let mut r = Rollout::new(plan(vec![analysis()]), at(0));
    assert_eq!(
        settle(&mut r, 1, Verdict::Inconclusive),
        vec![
            (Trigger::RolloutStarted, None),
            (Trigger::AnalysisInconclusive, Some(0)),
        ]
    );
    r.handle(at(2), Observation::Command(Command::Abort))
        .expect("abort");
    let events = settle(&mut r, 3, Verdict::Success);
    assert_eq!(
        events,
        vec![(Trigger::Aborted, Some(0)), (Trigger::RolledBack, None)]
    );
}

#[test]
fn a_guardrail_trip_and_a_passed_deadline_are_told() {
    let mut r = Rollout::new(plan(vec![PlanStep::Pause { duration: None }]), at(0));
    settle(&mut r, 1, Verdict::Success);
    r.handle(
        at(2),
        Observation::GuardrailTripped {
            name: "5xx".into(),
            detail: "0.8 > 0.5 over 40 requests".into(),
        },
    )
    .expect("observation");
    assert_eq!(
        settle(&mut r, 3, Verdict::Success),
        vec![
            (Trigger::GuardrailTripped, Some(0)),
            (Trigger::RolledBack, None)
        ]
    );

    // A wait for a person stops the deadline's clock; a long timed pause does not.
    let long_pause = PlanStep::Pause {
        duration: Some(Duration::from_secs(3600)),
    };
    let mut r = Rollout::new(plan(vec![long_pause]), at(0));
    settle(&mut r, 1, Verdict::Success);
    r.handle_timeout(at(600));
    assert_eq!(
        settle(&mut r, 601, Verdict::Success),
        vec![
            (Trigger::ProgressDeadlineExceeded, Some(0)),
            (Trigger::RolledBack, None)
        ]
    );
    r.handle(at(602), Observation::Command(Command::Retry))
        .expect("retry");
    assert_eq!(
        settle(&mut r, 603, Verdict::Success).first(),
        Some(&(Trigger::RolloutStarted, None)),
        "a retry is a new rollout for people"
    );
}

#[test]
fn events_are_not_persisted_so_a_restart_does_not_tell_them_again() {
    let mut r = Rollout::new(plan(vec![PlanStep::Pause { duration: None }]), at(0));
    let json = {
        let _ = std::iter::from_fn(|| r.poll_action()).count();
        r.to_json()
    };
    let mut restored = Rollout::from_json(json).expect("state");
    restored.resume(at(5));
    assert_eq!(restored.poll_event(), None);
    assert_eq!(
        r.poll_event().map(|e| e.trigger),
        Some(Trigger::RolloutStarted)
    );
}
