//! Checks of a strategy: canary steps and their weights, the blue/green block, header
//! routes, and analyses that name metrics the release defines.

use super::Checker;
use crate::Duration;
use crate::diagnostic::{Code, FieldPath, Segment, did_you_mean};
use crate::spec::{
    AnalysisStep, BlueGreenStrategy, CanaryStep, CanaryStrategy, HeaderRouteStep, MatchRule,
    StrategySpec,
};

pub(super) fn match_rules(c: &mut Checker<'_, '_>, path: &FieldPath, rules: &[MatchRule]) {
    for (i, rule) in rules.iter().enumerate() {
        let path = path.index(i);
        match (&rule.header, &rule.cookie) {
            (Some(_), Some(_)) => {
                c.error(
                    Code::Conflict,
                    path.clone(),
                    "a rule matches either a header or a cookie, not both",
                )
                .hint = Some("split it into two rules".into());
            }
            (None, None) => {
                c.error(
                    Code::MissingField,
                    path.clone(),
                    "a rule needs 'header' or 'cookie'",
                );
            }
            _ => {}
        }
        if rule.exact.is_some() && rule.regex.is_some() {
            c.error(
                Code::Conflict,
                path.clone(),
                "'exact' and 'regex' cannot both be set",
            );
        }
        if let Some(pattern) = &rule.regex
            && let Err(e) = regex_syntax::Parser::new().parse(pattern)
        {
            let message = e.to_string();
            let last = message.lines().last().unwrap_or("").trim();
            let last = last.strip_prefix("error: ").unwrap_or(last);
            c.error(
                Code::InvalidValue,
                path.key("regex"),
                format!("invalid regular expression: {last}"),
            );
        }
    }
}

pub(super) fn strategy(
    c: &mut Checker<'_, '_>,
    path: &FieldPath,
    s: &StrategySpec,
    metrics: Option<&[&str]>,
) {
    match (&s.canary, &s.blue_green) {
        (Some(_), Some(_)) => {
            c.error(
                Code::Conflict,
                path.clone(),
                "a strategy is either 'canary' or 'blueGreen', not both",
            );
        }
        (None, None) if !c.at.lost(&path.key("canary")) && !c.at.lost(&path.key("blueGreen")) => {
            c.error(
                Code::MissingField,
                path.clone(),
                "the strategy needs 'canary' steps or a 'blueGreen' block",
            )
            .hint = Some(format!(
                "or start from a preset: 'use: canary-progressive' (presets: {})",
                crate::load::preset_names().collect::<Vec<_>>().join(", ")
            ));
        }
        _ => {}
    }
    if s.progress_deadline == Duration::ZERO {
        c.error(
            Code::OutOfRange,
            path.key("progressDeadline"),
            "progressDeadline must be longer than 0s",
        );
    }
    if let Some(canary) = &s.canary {
        canary_steps(c, &path.key("canary").key("steps"), canary, metrics);
    }
    if let Some(bg) = &s.blue_green {
        blue_green(c, &path.key("blueGreen"), bg, metrics);
    }
}

/// The canary steps: weights that only go up, pauses, analyses, header routes, mirrors.
fn canary_steps(
    c: &mut Checker<'_, '_>,
    steps_path: &FieldPath,
    canary: &CanaryStrategy,
    metrics: Option<&[&str]>,
) {
    if canary.steps.is_empty() && !c.at.lost(steps_path) {
        c.warning(
            Code::Ignored,
            steps_path.clone(),
            "no steps: the candidate takes all traffic at once",
        )
        .hint = Some(
            "add 'setWeight' steps, or use the blueGreen strategy for an all-at-once switch".into(),
        );
    }
    let mut last_weight: Option<(u32, usize)> = None;
    for (i, step) in canary.steps.iter().enumerate() {
        let step_path = steps_path.index(i);
        match step {
            CanaryStep::SetWeight(w) => {
                let weight_path = step_path.key("setWeight");
                if *w > 100 {
                    c.error(
                        Code::OutOfRange,
                        weight_path,
                        format!("weight {w} is above 100"),
                    )
                    .hint = Some("weights are percentages from 0 to 100".into());
                } else if let Some((previous, at)) = last_weight.filter(|(p, _)| *w < *p) {
                    let at = match c.at.as_written(&steps_path.index(at)).0.last() {
                        Some(Segment::Index(written)) => *written,
                        _ => at,
                    };
                    c.error(
                        Code::DecreasingWeight,
                        weight_path,
                        format!("weight goes down from {previous} (steps[{at}]) to {w}"),
                    )
                    .hint = Some("weights must not decrease; a decrease is almost always a typo (use 'cutover abort' to roll back)".into());
                }
                if *w <= 100 {
                    last_weight = Some((last_weight.map_or(*w, |(p, _)| p.max(*w)), i));
                }
            }
            CanaryStep::Pause(pause) => {
                if pause.duration.is_none() && !c.at.lost(&step_path.key("pause").key("duration")) {
                    c.warning(
                        Code::ManualGate,
                        step_path.key("pause"),
                        "this pause has no duration: the rollout waits here for 'cutover promote'",
                    )
                    .hint = Some("in CI, 'cutover run --wait' blocks until --timeout; give it a duration like 'pause: {duration: 5m}'".into());
                }
            }
            CanaryStep::Analysis(step) => {
                analysis_ref(c, &step_path.key("analysis"), step, metrics);
            }
            CanaryStep::SetHeaderRoute(route) => {
                header_route(c, &step_path.key("setHeaderRoute"), route);
            }
            CanaryStep::Mirror(mirror) => {
                if mirror.percent > 100 {
                    c.error(
                        Code::OutOfRange,
                        step_path.key("mirror").key("percent"),
                        format!("mirror percent {} is above 100", mirror.percent),
                    );
                }
            }
        }
    }
}

/// The blue/green block: preview traffic, automatic promotion, the analyses around the switch.
fn blue_green(
    c: &mut Checker<'_, '_>,
    bg_path: &FieldPath,
    bg: &BlueGreenStrategy,
    metrics: Option<&[&str]>,
) {
    if let Some(preview) = &bg.preview_traffic {
        header_route(c, &bg_path.key("previewTraffic"), preview);
    }
    if !bg.auto_promotion {
        c.warning(
            Code::ManualGate,
            bg_path.key("autoPromotion"),
            "autoPromotion is off: the switch waits for 'cutover promote'",
        )
        .hint = Some("in CI, 'cutover run --wait' blocks until --timeout".into());
        if bg.auto_promotion_seconds.is_some() {
            c.warning(
                Code::Ignored,
                bg_path.key("autoPromotionSeconds"),
                "autoPromotionSeconds has no effect while autoPromotion is false",
            );
        }
    }
    if let Some(step) = &bg.pre_promotion_analysis {
        analysis_ref(c, &bg_path.key("prePromotionAnalysis"), step, metrics);
    }
    if let Some(step) = &bg.post_promotion_analysis {
        analysis_ref(c, &bg_path.key("postPromotionAnalysis"), step, metrics);
    }
}

pub(super) fn header_route(c: &mut Checker<'_, '_>, path: &FieldPath, route: &HeaderRouteStep) {
    match_rules(c, &path.key("match"), &route.match_rules);
}

/// `metrics` is `None` where the metrics are not known (presets) or were set aside.
fn analysis_ref(
    c: &mut Checker<'_, '_>,
    path: &FieldPath,
    step: &AnalysisStep,
    metrics: Option<&[&str]>,
) {
    let Some(defined) = metrics else {
        return;
    };
    if defined.is_empty() {
        c.error(
            Code::UndefinedMetric,
            path.clone(),
            "this analysis has no metric to run: spec.analysis.metrics is empty",
        )
        .hint = Some(
            "define one, e.g. '- {name: errors, provider: {builtin: error_rate}, max: 0.01}'"
                .into(),
        );
        return;
    }
    for (i, wanted) in step.metrics.iter().enumerate() {
        if !defined.contains(&wanted.as_str()) {
            let d = c.error(
                Code::UndefinedMetric,
                path.key("metrics").index(i),
                format!("no metric named '{wanted}' in spec.analysis.metrics"),
            );
            d.hint = did_you_mean(wanted, defined.iter().copied())
                .or_else(|| Some(format!("defined metrics: {}", defined.join(", "))));
        }
    }
}
