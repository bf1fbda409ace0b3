//! Fixtures for the state machine's tests: the plans they walk, the epoch their clock
//! starts at, and hook answers. The seeded fault simulation runs through the controller's
//! real driver (`crates/cutover-controller/tests/simulation.rs`), not here.

use cutover_core::Duration;
use cutover_core::plan::{AnalysisStage, HookPoints, Plan, PlanStep, StrategyKind};
use cutover_core::rollout::Observation;
use cutover_core::spec::{HookPoint, MatchRule};

/// The tests' epoch: the machine's timestamps are milliseconds after it.
pub const T0: u64 = 1_700_000_000_000;

/// A canary plan: 10, analysis, 50 (+ a 1m pause), analysis, header route, mirror, 100.
pub fn canary_plan() -> Plan {
    Plan {
        kind: StrategyKind::Canary,
        steps: vec![
            PlanStep::SetWeight { weight: 10 },
            PlanStep::Analysis {
                metrics: vec!["errors".into()],
                stage: AnalysisStage::Step,
                minimum: Duration::from_secs(60),
            },
            PlanStep::SetHeaderRoute {
                rules: vec![MatchRule {
                    header: Some("X-Canary".into()),
                    ..MatchRule::default()
                }],
            },
            PlanStep::Mirror { percent: 20 },
            PlanStep::SetWeight { weight: 50 },
            PlanStep::Pause {
                duration: Some(Duration::from_secs(60)),
            },
            PlanStep::Analysis {
                metrics: vec!["errors".into()],
                stage: AnalysisStage::Step,
                minimum: Duration::from_secs(60),
            },
            PlanStep::SetWeight { weight: 100 },
            PlanStep::PromotionGate,
        ],
        scale_down_delay: Duration::from_secs(30),
        progress_deadline: Duration::from_secs(3600),
        hooks: HookPoints {
            pre_rollout: true,
            pre_promotion: true,
            post_promotion: true,
            on_rollback: true,
        },
    }
}

/// A blue/green plan as the blue-green preset expands (with a manual gate when `manual`).
pub fn blue_green_plan(manual: bool) -> Plan {
    let mut steps = vec![
        PlanStep::SetHeaderRoute {
            rules: vec![MatchRule {
                header: Some("X-Cutover-Preview".into()),
                ..MatchRule::default()
            }],
        },
        PlanStep::Analysis {
            metrics: vec!["errors".into()],
            stage: AnalysisStage::PrePromotion,
            minimum: Duration::from_secs(60),
        },
    ];
    if manual {
        steps.push(PlanStep::Pause { duration: None });
    }
    steps.extend([
        PlanStep::SetHeaderRoute { rules: Vec::new() },
        PlanStep::SetWeight { weight: 100 },
        PlanStep::Analysis {
            metrics: vec!["errors".into()],
            stage: AnalysisStage::PostPromotion,
            minimum: Duration::from_secs(60),
        },
    ]);
    Plan {
        kind: StrategyKind::BlueGreen,
        steps,
        scale_down_delay: Duration::from_secs(30),
        progress_deadline: Duration::from_secs(3600),
        hooks: HookPoints::default(),
    }
}

pub fn hook(point: HookPoint, passed: bool) -> Observation {
    Observation::HookResult {
        point,
        passed,
        detail: String::new(),
    }
}
