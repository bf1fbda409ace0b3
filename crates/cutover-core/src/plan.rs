//! A strategy expanded into the flat list of steps the rollout state machine walks.
//!
//! Canary and blue/green are two walks over the same two-slot model: a blue/green block
//! becomes "preview route, pre-promotion analysis, wait, switch to 100 %, post-promotion
//! analysis", a canary's steps are taken as written, and both end in promotion. The same
//! plan prints as `cutover plan`'s timeline.

use serde::{Deserialize, Serialize};

use crate::Duration;
use crate::spec::{
    AnalysisStep, CanaryStep, HookPoint, HooksSpec, MatchRule, MetricSpec, Release, StrategySpec,
};

/// The steps of a rollout, in order, and the settings around them.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Plan {
    /// Which strategy the plan came from.
    pub kind: StrategyKind,
    /// The steps. After the last one the candidate is promoted.
    pub steps: Vec<PlanStep>,
    /// How long the old version runs on after promotion.
    pub scale_down_delay: Duration,
    /// Limit on the time the rollout may take, not counting waits for a person.
    pub progress_deadline: Duration,
    /// Which hook points have hooks, so the state machine only waits where there is
    /// something to wait for.
    pub hooks: HookPoints,
}

/// The two shapes of strategy.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum StrategyKind {
    /// Weighted steps.
    Canary,
    /// Full-size candidate, one switch.
    BlueGreen,
}

/// Hook points that have at least one hook.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HookPoints {
    /// `preRollout` hooks exist.
    pub pre_rollout: bool,
    /// `prePromotion` hooks exist.
    pub pre_promotion: bool,
    /// `postPromotion` hooks exist.
    pub post_promotion: bool,
    /// `onRollback` hooks exist.
    pub on_rollback: bool,
}

impl HookPoints {
    /// The points of `hooks` that are not empty.
    pub fn of(hooks: &HooksSpec) -> Self {
        HookPoints {
            pre_rollout: !hooks.pre_rollout.is_empty(),
            pre_promotion: !hooks.pre_promotion.is_empty(),
            post_promotion: !hooks.post_promotion.is_empty(),
            on_rollback: !hooks.on_rollback.is_empty(),
        }
    }

    /// Whether `point` has hooks.
    pub fn has(&self, point: HookPoint) -> bool {
        match point {
            HookPoint::PreRollout => self.pre_rollout,
            HookPoint::PrePromotion => self.pre_promotion,
            HookPoint::PostPromotion => self.post_promotion,
            HookPoint::OnRollback => self.on_rollback,
        }
    }
}

/// Where in a blue/green walk an analysis runs; canary analyses are plain steps.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum AnalysisStage {
    /// A canary `analysis` step.
    Step,
    /// Blue/green, before the switch.
    PrePromotion,
    /// Blue/green, after the switch while the old version still runs.
    PostPromotion,
}

/// One step of a plan.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum PlanStep {
    /// Route this percentage of traffic to the candidate.
    SetWeight {
        /// 0 to 100.
        weight: u8,
    },
    /// Wait for a duration, or for a person when there is none.
    Pause {
        /// How long; `None` waits for `promote`.
        duration: Option<Duration>,
    },
    /// Run these metrics and continue only on success.
    Analysis {
        /// Metric names, resolved: never empty in a release's plan.
        metrics: Vec<String>,
        /// Where the analysis sits.
        stage: AnalysisStage,
        /// The least time the analysis takes: its slowest metric's `initialDelay +
        /// count × interval`.
        minimum: Duration,
    },
    /// Route requests matching these rules to the candidate; empty removes the route.
    SetHeaderRoute {
        /// The rules.
        rules: Vec<MatchRule>,
    },
    /// Copy this percentage of requests to the candidate.
    Mirror {
        /// 0 to 100.
        percent: u8,
    },
    /// Ask the `prePromotion` hooks; a non-2xx answer holds here and asks again. Placed
    /// before the switch in blue/green, after the last step in a canary.
    PromotionGate,
}

/// Why a plan could not be made (the validator reports these with positions first).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    /// Neither `canary` nor `blueGreen`, or both.
    #[error("the strategy must have exactly one of 'canary' and 'blueGreen'")]
    NoStrategy,
    /// A weight or percentage above 100.
    #[error("{0} is not a percentage from 0 to 100")]
    NotAPercentage(u32),
}

impl Plan {
    /// The plan of a validated release.
    pub fn from_release(release: &Release) -> Result<Plan, PlanError> {
        let mut plan = Plan::from_strategy(&release.spec.strategy, &release.spec.analysis.metrics)?;
        plan.hooks = HookPoints::of(&release.spec.hooks);
        if plan.hooks.pre_promotion {
            let at = match plan.kind {
                // Before the switch, while preview traffic still reaches the new version.
                StrategyKind::BlueGreen => plan
                    .steps
                    .iter()
                    .position(|s| {
                        matches!(s, PlanStep::SetHeaderRoute { rules } if rules.is_empty())
                            || matches!(s, PlanStep::SetWeight { weight: 100 })
                    })
                    .unwrap_or(plan.steps.len()),
                StrategyKind::Canary => plan.steps.len(),
            };
            plan.steps.insert(at, PlanStep::PromotionGate);
        }
        Ok(plan)
    }

    /// The plan of a strategy, with `metrics` resolving analysis steps (empty for a preset
    /// on its own, whose analyses then name no metric).
    pub fn from_strategy(
        strategy: &StrategySpec,
        metrics: &[MetricSpec],
    ) -> Result<Plan, PlanError> {
        let analysis = |step: &AnalysisStep, stage| {
            let chosen: Vec<&MetricSpec> = metrics
                .iter()
                .filter(|m| step.metrics.is_empty() || step.metrics.contains(&m.name))
                .collect();
            let minimum = chosen
                .iter()
                .map(|m| {
                    m.initial_delay
                        .saturating_add(m.interval.saturating_mul(u64::from(m.count)))
                })
                .max()
                .unwrap_or(Duration::ZERO);
            PlanStep::Analysis {
                metrics: chosen.iter().map(|m| m.name.clone()).collect(),
                stage,
                minimum,
            }
        };
        let percent = |n: u32| {
            u8::try_from(n)
                .ok()
                .filter(|p| *p <= 100)
                .ok_or(PlanError::NotAPercentage(n))
        };
        let (kind, steps, scale_down_delay) = match (&strategy.canary, &strategy.blue_green) {
            (Some(canary), None) => {
                let mut steps = Vec::with_capacity(canary.steps.len());
                for step in &canary.steps {
                    steps.push(match step {
                        CanaryStep::SetWeight(w) => PlanStep::SetWeight {
                            weight: percent(*w)?,
                        },
                        CanaryStep::Pause(p) => PlanStep::Pause {
                            duration: p.duration,
                        },
                        CanaryStep::Analysis(a) => analysis(a, AnalysisStage::Step),
                        CanaryStep::SetHeaderRoute(r) => PlanStep::SetHeaderRoute {
                            rules: r.match_rules.clone(),
                        },
                        CanaryStep::Mirror(m) => PlanStep::Mirror {
                            percent: percent(m.percent)?,
                        },
                    });
                }
                (StrategyKind::Canary, steps, canary.scale_down_delay)
            }
            (None, Some(bg)) => {
                let mut steps = Vec::new();
                if let Some(preview) = &bg.preview_traffic {
                    steps.push(PlanStep::SetHeaderRoute {
                        rules: preview.match_rules.clone(),
                    });
                }
                if let Some(pre) = &bg.pre_promotion_analysis {
                    steps.push(analysis(pre, AnalysisStage::PrePromotion));
                }
                match (bg.auto_promotion, bg.auto_promotion_seconds) {
                    (false, _) => steps.push(PlanStep::Pause { duration: None }),
                    (true, Some(secs)) if secs > 0 => steps.push(PlanStep::Pause {
                        duration: Some(Duration::from_secs(secs)),
                    }),
                    (true, _) => {}
                }
                if bg.preview_traffic.is_some() {
                    steps.push(PlanStep::SetHeaderRoute { rules: Vec::new() });
                }
                steps.push(PlanStep::SetWeight { weight: 100 });
                if let Some(post) = &bg.post_promotion_analysis {
                    steps.push(analysis(post, AnalysisStage::PostPromotion));
                }
                (StrategyKind::BlueGreen, steps, bg.scale_down_delay)
            }
            _ => return Err(PlanError::NoStrategy),
        };
        Ok(Plan {
            kind,
            steps,
            scale_down_delay,
            progress_deadline: strategy.progress_deadline,
            hooks: HookPoints::default(),
        })
    }

    /// The least time the steps take, not counting waits for a person: what the progress
    /// deadline must allow.
    pub fn minimum_duration(&self) -> Duration {
        self.steps.iter().fold(Duration::ZERO, |total, step| {
            total.saturating_add(step.minimum_duration())
        })
    }

    /// The steps with the weight in force after each and the earliest time each can be
    /// reached, for `cutover plan`.
    pub fn timeline(&self) -> Vec<TimelineEntry<'_>> {
        let mut earliest = Duration::ZERO;
        let mut weight = 0u8;
        let mut entries = Vec::with_capacity(self.steps.len() + 1);
        for (index, step) in self.steps.iter().enumerate() {
            if let PlanStep::SetWeight { weight: w } = step {
                weight = *w;
            }
            entries.push(TimelineEntry {
                index: Some(index),
                step: Some(step),
                weight,
                earliest,
                waits_for_person: matches!(step, PlanStep::Pause { duration: None }),
            });
            earliest = earliest.saturating_add(step.minimum_duration());
        }
        entries.push(TimelineEntry {
            index: None,
            step: None,
            weight: 100,
            earliest,
            waits_for_person: false,
        });
        entries
    }
}

impl PlanStep {
    /// The least time this step takes.
    pub fn minimum_duration(&self) -> Duration {
        match self {
            PlanStep::Pause { duration: Some(d) } => *d,
            PlanStep::Analysis { minimum, .. } => *minimum,
            _ => Duration::ZERO,
        }
    }
}

/// One line of `cutover plan`: a step (or, with `step: None`, the promotion at the end).
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TimelineEntry<'a> {
    /// The step's index; `None` for the final promotion.
    pub index: Option<usize>,
    /// The step; `None` for the final promotion.
    pub step: Option<&'a PlanStep>,
    /// The candidate's weight once this step is done.
    pub weight: u8,
    /// The earliest time after the candidate is ready at which this step can start.
    pub earliest: Duration,
    /// Whether the step waits for `cutover promote`.
    pub waits_for_person: bool,
}
