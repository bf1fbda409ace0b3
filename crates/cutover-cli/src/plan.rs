//! `cutover plan`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use cutover_core::load;
use cutover_core::plan::{AnalysisStage, Plan, PlanStep, StrategyKind, TimelineEntry};
use cutover_core::spec::{MatchRule, Release};
use serde::Serialize;

use crate::failure::{Failure, Outcome};
use crate::{InputFile, Output, emit, exit};

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct PlanReport<'a> {
    release: &'a str,
    preset: Option<&'a str>,
    plan: &'a Plan,
    timeline: Vec<TimelineEntry<'a>>,
}

/// Loads the release, prints its timeline, and returns the exit code.
pub fn run(
    path: &Path,
    output: Output,
    env: &BTreeMap<String, String>,
    sets: &[load::Set],
) -> Outcome {
    let input = InputFile::open(path)?;
    let source = input.source();
    let name = &input.name;
    let (release, warnings) = match load::load_release_with(source, env, sets) {
        Ok(loaded) => loaded,
        Err(diagnostics) => {
            let sets: String = sets.iter().map(|s| format!(" {s}")).collect();
            return Err(
                Failure::lines(exit::INVALID_INPUT, diagnostics).then(format!(
                    "{name}: invalid; run 'cutover lint {name}{sets}' after fixing"
                )),
            );
        }
    };
    for w in &warnings {
        eprintln!("{w}");
    }
    let plan = Plan::from_release(&release).map_err(|e| Failure::error(exit::INVALID_INPUT, e))?;
    match output {
        Output::Json => {
            let report = PlanReport {
                release: &release.metadata.name,
                preset: release.spec.strategy.preset.as_deref(),
                plan: &plan,
                timeline: plan.timeline(),
            };
            let text = serde_json::to_string_pretty(&report)
                .map_err(|e| Failure::error(exit::OK, format!("cannot print the plan: {e}")))?;
            emit(&format!("{text}\n"));
        }
        Output::Text => emit(&render(&release, &plan)),
    }
    Ok(exit::OK)
}

/// The timeline as a table for people.
fn render(release: &Release, plan: &Plan) -> String {
    let mut out = String::new();
    let kind = match plan.kind {
        StrategyKind::Canary => "canary",
        StrategyKind::BlueGreen => "blue/green",
    };
    let preset = release
        .spec
        .strategy
        .preset
        .as_deref()
        .map(|p| format!(" from preset {p}"))
        .unwrap_or_default();
    let _ = writeln!(
        out,
        "release {} ({} backend): {kind}{preset}, progress deadline {}",
        release.metadata.name,
        release.spec.backend.name(),
        plan.progress_deadline
    );
    let _ = writeln!(
        out,
        "starts: {}deploy the candidate{} ({}), wait until ready",
        if plan.hooks.pre_rollout {
            "preRollout hooks, "
        } else {
            ""
        },
        // What `--set version=...` or `${VERSION}` made of it, for a last look.
        release
            .spec
            .version
            .as_deref()
            .map(|v| format!(" {v}"))
            .unwrap_or_default(),
        match (release.spec.replicas, &release.spec.backend) {
            (Some(1), _) => "1 replica".to_string(),
            (Some(n), _) => format!("{n} replicas"),
            (None, cutover_core::spec::Backend::Local(_)) => "1 replica".to_string(),
            (None, _) => "as many replicas as the stable version".to_string(),
        }
    );
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "{:>4}  {:>6}  {:<44}  {:<34}  {:>8}",
        "step", "weight", "action", "gate", "earliest"
    );
    for entry in plan.timeline() {
        let (index, action, gate) = match entry.step {
            Some(step) => (
                entry.index.map(|i| i.to_string()).unwrap_or_default(),
                describe(step),
                gate(step),
            ),
            None => (
                "end".to_string(),
                "promote: candidate becomes stable".to_string(),
                "-".to_string(),
            ),
        };
        let _ = writeln!(
            out,
            "{index:>4}  {:>5}%  {action:<44}  {gate:<34}  {:>8}",
            entry.weight,
            if entry.earliest == cutover_core::Duration::ZERO {
                "0s".to_string()
            } else {
                format!("+{}", entry.earliest)
            },
        );
    }
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "after promotion: old version removed after {}{}",
        plan.scale_down_delay,
        if plan.hooks.post_promotion {
            "; postPromotion hooks run"
        } else {
            ""
        }
    );
    let waits = plan
        .timeline()
        .iter()
        .filter(|e| e.waits_for_person)
        .count();
    if waits > 0 {
        let _ = writeln!(
            out,
            "waits for a person: {waits} time{} ('cutover promote {}')",
            if waits == 1 { "" } else { "s" },
            release.metadata.name
        );
    }
    let _ = writeln!(
        out,
        "fastest possible: {} after the candidate is ready; any failed analysis or guardrail rolls back to 100% stable",
        plan.minimum_duration()
    );
    out
}

fn describe(step: &PlanStep) -> String {
    match step {
        PlanStep::SetWeight { weight } => format!("setWeight {weight}"),
        PlanStep::Pause { duration: Some(d) } => format!("pause {d}"),
        PlanStep::Pause { duration: None } => "pause until promoted".to_string(),
        PlanStep::Analysis { metrics, stage, .. } => {
            let stage = match stage {
                AnalysisStage::Step => "analysis",
                AnalysisStage::PrePromotion => "pre-promotion analysis",
                AnalysisStage::PostPromotion => "post-promotion analysis",
            };
            format!("{stage}: {}", metrics.join(", "))
        }
        PlanStep::SetHeaderRoute { rules } if rules.is_empty() => "remove header route".to_string(),
        PlanStep::SetHeaderRoute { rules } => {
            format!(
                "header route: {}",
                rules.iter().map(rule).collect::<Vec<_>>().join(" or ")
            )
        }
        PlanStep::Mirror { percent } => format!("mirror {percent}% to candidate"),
        PlanStep::PromotionGate => "prePromotion gate".to_string(),
    }
}

fn rule(rule: &MatchRule) -> String {
    let (what, name) = match (&rule.header, &rule.cookie) {
        (Some(h), _) => ("header", h.as_str()),
        (None, Some(c)) => ("cookie", c.as_str()),
        (None, None) => ("?", ""),
    };
    match (&rule.exact, &rule.regex) {
        (Some(v), _) => format!("{what} {name}={v}"),
        (None, Some(r)) => format!("{what} {name}~/{r}/"),
        (None, None) => format!("{what} {name}=always"),
    }
}

fn gate(step: &PlanStep) -> String {
    match step {
        PlanStep::Pause { duration: Some(d) } => format!("{d} elapsed (or promote)"),
        PlanStep::Pause { duration: None } => "'cutover promote'".to_string(),
        PlanStep::Analysis { minimum, .. } => format!("analysis passes (>= {minimum})"),
        PlanStep::PromotionGate => "hooks answer 2xx (or promote)".to_string(),
        _ => "route applied".to_string(),
    }
}
