//! Decisions on evidence: a metric's thresholds and comparisons with stable as tests with a
//! stated confidence, each ending in pass, fail or "cannot tell yet, and how much more
//! traffic would tell".
//!
//! The rules, for every check:
//!
//! * **Pass** only when the data excludes the harm the check guards against at the
//!   metric's confidence: the upper confidence bound of the candidate's regression is
//!   below the tolerance (`maxIncrease`, `maxIncreasePercent`, `minEffectPercent`), or of its
//!   error rate or slow-request share below the threshold. This is a non-inferiority test:
//!   weak data never passes.
//! * **Fail** when the data shows the candidate worse: for a threshold, the lower bound is
//!   beyond it; for a comparison, the candidate is significantly worse than stable (the
//!   lower bound of the difference is above zero) and its estimated regression exceeds the
//!   tolerance. A threshold that stable breaches as much as the candidate is not a failure
//!   ("stable breaches too"): rolling back to an equally broken stable helps nobody.
//! * Otherwise **undecided**, with how much more candidate traffic (and time, at the rate
//!   seen) a decision would need were the versions to go on as they did: found by running
//!   the same tests on the evidence scaled up.
//!
//! Error rates are judged on request and error counts (Wilson and MOVER intervals from
//! [`super::stats`]); latency quantiles by the share of requests slower than the limit,
//! which is what "p99 below 250 ms" means (the p99 is below the limit exactly when fewer
//! than 1 % of requests are slower); the Mann-Whitney check by the rank test on the two
//! latency histograms, with stable scaled by the minimum effect for the pass side.

use super::assess::{Assessment, MoreData, num, pct};
use super::evidence::{Bin, Evidence, Histogram};
use super::normal::normal_quantile;
use super::stats::{
    Interval, Term, exact, mann_whitney_binned, mann_whitney_binned_against_candidate, mover,
    proportion,
};
use crate::spec::{Comparison, Direction, EvidenceKind, MetricSpec, StatisticalTest};

mod comparison;
use comparison::compare;

/// The confidence levels of one look, as normal quantiles: failing is held to a stricter
/// level than the metric's confidence because an analysis fails at the first look that
/// shows harm, and every look and check is another chance of a false alarm (Bonferroni);
/// passing is decided only from `count` on, so only those looks share its level.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Levels {
    /// Bound used to show harm.
    pub fail_z: f64,
    /// The same as a one-sided probability, for the exact bounds that show harm.
    pub fail_alpha: f64,
    /// Bound used to exclude harm.
    pub pass_z: f64,
    /// The confidence these stand for, for reasons.
    pub confidence: f64,
    looks: u32,
    pass_looks: u32,
    checks: u32,
}

impl Levels {
    /// Levels for a metric at `confidence` whose analysis may look `looks` times, the last
    /// `pass_looks` of which may pass it, with `checks` checks that can fail it.
    pub fn new(confidence: f64, looks: u32, pass_looks: u32, checks: u32) -> Levels {
        let alpha = (1.0 - confidence).clamp(1e-12, 0.5);
        let fail_alpha = alpha / f64::from(looks.max(1)) / f64::from(checks.max(1));
        let pass_alpha = alpha / f64::from(pass_looks.max(1));
        Levels {
            fail_z: normal_quantile(1.0 - fail_alpha),
            fail_alpha,
            pass_z: normal_quantile(1.0 - pass_alpha),
            confidence,
            looks,
            pass_looks,
            checks,
        }
    }

    /// The same looks and checks at another confidence (the Mann-Whitney check's own).
    fn at(self, confidence: f64) -> Levels {
        Levels::new(confidence, self.looks, self.pass_looks, self.checks)
    }
}

/// How many checks of `spec` can fail a measurement on evidence, for [`Levels::new`].
pub(crate) fn fail_checks(spec: &MetricSpec) -> u32 {
    let compare = spec.compare.as_ref();
    let directions = compare.map_or(1, |c| match c.direction {
        Direction::Either => 2,
        _ => 1,
    });
    let comparisons = compare.map_or(0, |c| {
        u32::from(c.max_increase.is_some())
            + u32::from(c.max_increase_percent.is_some())
            + u32::from(c.mann_whitney.is_some())
    });
    u32::from(spec.min.is_some()) + u32::from(spec.max.is_some()) + comparisons * directions
}

/// What one check says.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Finding {
    /// Harm excluded at the confidence.
    Pass,
    /// Harm shown; the reason says how.
    Fail(String),
    /// Neither: the reason says what is known.
    Undecided(String),
}

/// Judges the candidate's evidence, against stable's where given, on every check of
/// `spec` that evidence can answer.
pub(crate) fn judge(
    spec: &MetricSpec,
    kind: EvidenceKind,
    candidate: &Evidence,
    stable: Option<&Evidence>,
    levels: Levels,
) -> Vec<Finding> {
    if Sample::of(kind, candidate).trials <= 0.0 {
        return vec![Finding::Undecided(match kind {
            EvidenceKind::ErrorRate => "no candidate requests".to_string(),
            EvidenceKind::Latency { .. } => "no candidate latencies".to_string(),
        })];
    }
    let mut findings = Vec::new();
    if let Some(max) = spec.max {
        findings.push(threshold(kind, candidate, stable, max, Bound::Max, levels));
    }
    if let Some(min) = spec.min {
        findings.push(threshold(kind, candidate, stable, min, Bound::Min, levels));
    }
    if let Some(comparison) = &spec.compare {
        match stable.filter(|s| Sample::of(kind, s).trials > 0.0) {
            None if comparison_count(comparison) > 0 => findings.push(Finding::Undecided(
                "no data for stable to compare with".to_string(),
            )),
            None => {}
            Some(stable) => compare(kind, comparison, candidate, stable, levels, &mut findings),
        }
    }
    findings
}

fn comparison_count(c: &Comparison) -> usize {
    usize::from(c.max_increase.is_some())
        + usize::from(c.max_increase_percent.is_some())
        + usize::from(c.mann_whitney.is_some())
}

/// The trials a kind of metric is judged on.
struct Sample {
    trials: f64,
}

impl Sample {
    fn of(kind: EvidenceKind, evidence: &Evidence) -> Sample {
        Sample {
            trials: match kind {
                EvidenceKind::ErrorRate => evidence.requests,
                EvidenceKind::Latency { .. } => evidence.latency.total(),
            },
        }
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Bound {
    Max,
    Min,
}

/// The "bad" events a threshold counts, out of the trials: errors for an error rate;
/// for a latency quantile `q` against `max`, the requests slower than it (the quantile is
/// above `max` exactly when more than `1 - q` of requests are).
fn bad_events(kind: EvidenceKind, evidence: &Evidence, limit: f64, bound: Bound) -> (f64, f64) {
    match (kind, bound) {
        (EvidenceKind::ErrorRate, _) => (evidence.errors, evidence.requests),
        (EvidenceKind::Latency { .. }, Bound::Max) => (
            evidence.latency.count_above(limit),
            evidence.latency.total(),
        ),
        (EvidenceKind::Latency { .. }, Bound::Min) => (
            evidence.latency.count_below(limit),
            evidence.latency.total(),
        ),
    }
}

/// The share of bad events the threshold allows.
fn allowed_share(kind: EvidenceKind, limit: f64, bound: Bound) -> f64 {
    match (kind, bound) {
        (EvidenceKind::ErrorRate, _) => limit,
        (EvidenceKind::Latency { quantile }, Bound::Max) => 1.0 - quantile,
        (EvidenceKind::Latency { quantile }, Bound::Min) => quantile,
    }
}

fn threshold(
    kind: EvidenceKind,
    candidate: &Evidence,
    stable: Option<&Evidence>,
    limit: f64,
    bound: Bound,
    levels: Levels,
) -> Finding {
    if let EvidenceKind::Latency { .. } = kind
        && candidate.latency.open_at(limit)
    {
        return Finding::Undecided(format!(
            "the candidate's histogram has an open-ended bucket below {}s: how many requests are slower than it is unknown; give the histogram bounds above the limit",
            num(limit)
        ));
    }
    let (bad, trials) = bad_events(kind, candidate, limit, bound);
    let share = allowed_share(kind, limit, bound);
    let (Some(fail), Some(pass)) = (
        exact(bad, trials, levels.fail_alpha),
        proportion(bad, trials, levels.pass_z),
    ) else {
        return Finding::Undecided("no candidate data".to_string());
    };
    let name = match bound {
        Bound::Max => "max",
        Bound::Min => "min",
    };
    let observed = describe_share(kind, candidate, bad, trials);
    // An error rate over `min` is bad when it is below: mirror the share.
    let (worse, better) = match (kind, bound) {
        (EvidenceKind::ErrorRate, Bound::Min) => (fail.upper < share, pass.lower >= share),
        _ => (fail.lower > share, pass.upper <= share),
    };
    if better {
        return Finding::Pass;
    }
    if worse {
        if let Some(breach) =
            stable.and_then(|s| stable_breaches_too(kind, candidate, s, limit, bound, levels))
        {
            return Finding::Undecided(format!(
                "stable breaches too: {observed} against {name} {}, but {breach}",
                num(limit)
            ));
        }
        return Finding::Fail(format!(
            "{observed}: beyond {name} {} at {} confidence",
            num(limit),
            pct(levels.confidence * 100.0) + "%"
        ));
    }
    Finding::Undecided(format!(
        "cannot tell yet whether {observed} is within {name} {}: the true {} is between {} and {} at {} confidence",
        num(limit),
        share_name(kind, limit, bound),
        pct(fail.lower * 100.0) + "%",
        pct(pass.upper * 100.0) + "%",
        pct(levels.confidence * 100.0) + "%",
    ))
}

/// Why a breach of an absolute threshold is not the candidate's doing, if it is not:
/// stable breaches it as well and the candidate is not significantly worse than stable.
fn stable_breaches_too(
    kind: EvidenceKind,
    candidate: &Evidence,
    stable: &Evidence,
    limit: f64,
    bound: Bound,
    levels: Levels,
) -> Option<String> {
    let (s_bad, s_trials) = bad_events(kind, stable, limit, bound);
    let (c_bad, c_trials) = bad_events(kind, candidate, limit, bound);
    let share = allowed_share(kind, limit, bound);
    let mirrored = matches!((kind, bound), (EvidenceKind::ErrorRate, Bound::Min));
    let s = exact(s_bad, s_trials, levels.fail_alpha)?;
    let c = exact(c_bad, c_trials, levels.fail_alpha)?;
    // Stable must be shown to breach, not merely seen to: a stable with a handful of
    // requests proves nothing and must not excuse a candidate that is shown to breach.
    let stable_breaches = if mirrored {
        s.upper < share
    } else {
        s.lower > share
    };
    if !stable_breaches {
        return None;
    }
    let sign = if mirrored { -1.0 } else { 1.0 };
    let difference = mover(
        &[
            Term {
                coefficient: sign,
                interval: c,
            },
            Term {
                coefficient: -sign,
                interval: s,
            },
        ],
        0.0,
    );
    (difference.lower <= 0.0).then(|| {
        format!(
            "stable is at {} and the candidate is not worse than stable",
            describe_share(kind, stable, s_bad, s_trials)
        )
    })
}

fn share_name(kind: EvidenceKind, limit: f64, bound: Bound) -> String {
    match (kind, bound) {
        (EvidenceKind::ErrorRate, _) => "error rate".to_string(),
        (EvidenceKind::Latency { .. }, Bound::Max) => {
            format!("share of requests slower than {}s", num(limit))
        }
        (EvidenceKind::Latency { .. }, Bound::Min) => {
            format!("share of requests faster than {}s", num(limit))
        }
    }
}

fn describe_share(kind: EvidenceKind, evidence: &Evidence, bad: f64, trials: f64) -> String {
    match kind {
        EvidenceKind::ErrorRate => format!(
            "error rate {} ({} of {} requests)",
            pct(bad / trials * 100.0) + "%",
            count(bad),
            count(trials)
        ),
        EvidenceKind::Latency { quantile } => format!(
            "p{} {}s ({} of {} requests beyond the limit)",
            pct(quantile * 100.0),
            evidence
                .latency
                .quantile(quantile)
                .map_or("?".to_string(), num),
            count(bad),
            count(trials)
        ),
    }
}

/// A count for a reason: whole numbers without decimals.
fn count(x: f64) -> String {
    if (x - x.round()).abs() < 1e-9 {
        format!("{}", x.round() as i64)
    } else {
        format!("{x:.1}")
    }
}

/// Judges the pooled evidence of an analysis so far into one assessment: the
/// `minRequests` floor first, then every check; any failure fails, any undecided check
/// makes it inconclusive (with the more data the slowest check needs), else it passes.
pub(crate) fn assess_pooled(
    spec: &MetricSpec,
    kind: EvidenceKind,
    candidate: &Evidence,
    stable: Option<&Evidence>,
    levels: Levels,
) -> Assessment {
    let rate = candidate.rate();
    let more = |extra: f64| MoreData {
        candidate_requests: extra.max(1.0).ceil() as u64,
        seconds: rate
            .filter(|r| *r > 0.0)
            .map(|r| (extra.max(1.0) / r).ceil() as u64),
    };
    if candidate.requests < spec.min_requests as f64 {
        return Assessment::Inconclusive {
            reason: format!(
                "only {} candidate requests, fewer than minRequests {}",
                count(candidate.requests),
                spec.min_requests
            ),
            needs: Some(more(spec.min_requests as f64 - candidate.requests)),
        };
    }
    let findings = judge(spec, kind, candidate, stable, levels);
    let failures: Vec<&str> = findings
        .iter()
        .filter_map(|f| match f {
            Finding::Fail(reason) => Some(reason.as_str()),
            _ => None,
        })
        .collect();
    if !failures.is_empty() {
        return Assessment::Fail {
            reason: failures.join("; "),
        };
    }
    let reasons: Vec<&str> = findings
        .iter()
        .filter_map(|f| match f {
            Finding::Undecided(reason) => Some(reason.as_str()),
            _ => None,
        })
        .collect();
    if reasons.is_empty() {
        if findings.is_empty() {
            return Assessment::inconclusive(
                "the metric has no threshold or comparison that evidence can judge",
            );
        }
        return Assessment::Pass;
    }
    let needs = growth_to_decide(spec, kind, candidate, stable, levels)
        .map(|g| more(candidate.requests * (g - 1.0)));
    let mut reason = reasons.join("; ");
    if let Some(needs) = needs {
        reason.push_str(&format!("; {needs}"));
    }
    Assessment::Inconclusive { reason, needs }
}

/// The factor by which both versions' evidence would have to grow, at the rates and
/// distributions seen so far, for every check to decide: found by bisection on evidence
/// scaled up, so the estimate uses the same tests (and their small-count behaviour) as the
/// decision. `None` when even ten thousand times the data would not decide (the candidate
/// sits on a limit).
fn growth_to_decide(
    spec: &MetricSpec,
    kind: EvidenceKind,
    candidate: &Evidence,
    stable: Option<&Evidence>,
    levels: Levels,
) -> Option<f64> {
    let decided = |factor: f64| {
        let c = scaled(candidate, factor);
        let s = stable.map(|s| scaled(s, factor));
        let findings = judge(spec, kind, &c, s.as_ref(), levels);
        findings.iter().any(|f| matches!(f, Finding::Fail(_)))
            || findings.iter().all(|f| matches!(f, Finding::Pass))
    };
    const MOST: f64 = 1e4;
    if !decided(MOST) {
        return None;
    }
    // Bisect on the logarithm: the answer spans orders of magnitude.
    let (mut low, mut high) = (0.0_f64, MOST.ln());
    for _ in 0..40 {
        let middle = (low + high) / 2.0;
        if decided(middle.exp()) {
            high = middle;
        } else {
            low = middle;
        }
    }
    Some(high.exp())
}

/// Evidence with every count multiplied by `factor`: the same rates and distributions,
/// more of them.
fn scaled(evidence: &Evidence, factor: f64) -> Evidence {
    Evidence {
        requests: evidence.requests * factor,
        errors: evidence.errors * factor,
        latency: Histogram::from_bins(evidence.latency.bins().iter().map(|b| Bin {
            count: b.count * factor,
            ..*b
        })),
        seconds: evidence.seconds * factor,
    }
}

#[cfg(test)]
mod tests;
