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

fn compare(
    kind: EvidenceKind,
    comparison: &Comparison,
    candidate: &Evidence,
    stable: &Evidence,
    levels: Levels,
    findings: &mut Vec<Finding>,
) {
    let directions: &[Direction] = match comparison.direction {
        Direction::Either => &[Direction::Increase, Direction::Decrease],
        Direction::Increase => &[Direction::Increase],
        Direction::Decrease => &[Direction::Decrease],
    };
    for &direction in directions {
        if let Some(delta) = comparison.max_increase {
            findings.push(tolerance_test(
                kind,
                candidate,
                stable,
                direction,
                Tolerance::Absolute(delta),
                levels,
            ));
        }
        if let Some(percent) = comparison.max_increase_percent {
            findings.push(tolerance_test(
                kind,
                candidate,
                stable,
                direction,
                Tolerance::Percent(percent),
                levels,
            ));
        }
        if let Some(test) = &comparison.mann_whitney {
            findings.push(match kind {
                // On counts, a rank test is a comparison of proportions.
                EvidenceKind::ErrorRate => tolerance_test(
                    kind,
                    candidate,
                    stable,
                    direction,
                    Tolerance::Percent(test.min_effect_percent),
                    levels.at(test.confidence),
                ),
                EvidenceKind::Latency { .. } => rank_test(
                    candidate,
                    stable,
                    direction,
                    test,
                    levels.at(test.confidence),
                ),
            });
        }
    }
}

#[derive(Clone, Copy)]
enum Tolerance {
    Absolute(f64),
    Percent(f64),
}

impl Tolerance {
    fn describe(self, kind: EvidenceKind) -> String {
        match (self, kind) {
            (Tolerance::Absolute(d), EvidenceKind::ErrorRate) => {
                format!("maxIncrease {} ({} points)", num(d), pct(d * 100.0))
            }
            (Tolerance::Absolute(d), EvidenceKind::Latency { .. }) => {
                format!("maxIncrease {}s", num(d))
            }
            (Tolerance::Percent(p), _) => format!("{}%", num(p)),
        }
    }
}

/// A comparison with a tolerance: pass when the regression's upper bound is within it, fail
/// when the candidate is significantly worse and its estimated regression beyond it.
fn tolerance_test(
    kind: EvidenceKind,
    candidate: &Evidence,
    stable: &Evidence,
    direction: Direction,
    tolerance: Tolerance,
    levels: Levels,
) -> Finding {
    match kind {
        EvidenceKind::ErrorRate => proportion_comparison(
            candidate.errors,
            candidate.requests,
            stable.errors,
            stable.requests,
            direction,
            tolerance,
            levels,
            "error rate",
            kind,
        ),
        EvidenceKind::Latency { quantile } => {
            quantile_comparison(candidate, stable, quantile, direction, tolerance, levels)
        }
    }
}

/// `p_c` against `p_s` with a tolerance, both ways round by `direction`.
#[allow(clippy::too_many_arguments)]
fn proportion_comparison(
    c_events: f64,
    c_trials: f64,
    s_events: f64,
    s_trials: f64,
    direction: Direction,
    tolerance: Tolerance,
    levels: Levels,
    what: &str,
    kind: EvidenceKind,
) -> Finding {
    // Harm is shown on exact bounds, its absence on Wilson's (see `stats`).
    let failing = || {
        Some((
            exact(c_events, c_trials, levels.fail_alpha)?,
            exact(s_events, s_trials, levels.fail_alpha)?,
        ))
    };
    let passing = || {
        Some((
            proportion(c_events, c_trials, levels.pass_z)?,
            proportion(s_events, s_trials, levels.pass_z)?,
        ))
    };
    let (Some((c_fail, s_fail)), Some((c_pass, s_pass))) = (failing(), passing()) else {
        return Finding::Undecided(format!("no {what} data to compare"));
    };
    // The regression "candidate worse than stable beyond the tolerance", written as a
    // linear combination that is positive exactly when the tolerance is exceeded.
    let sign = match direction {
        Direction::Decrease => -1.0,
        _ => 1.0,
    };
    let (stable_coefficient, constant) = match tolerance {
        Tolerance::Absolute(d) => (1.0, -d),
        Tolerance::Percent(p) => (1.0 + sign * p / 100.0, 0.0),
    };
    let combination = |c: Interval, s: Interval, k: f64, constant: f64| {
        mover(
            &[
                Term {
                    coefficient: sign,
                    interval: c,
                },
                Term {
                    coefficient: -sign * k,
                    interval: s,
                },
            ],
            constant,
        )
    };
    let beyond = combination(c_pass, s_pass, stable_coefficient, constant);
    let difference = combination(c_fail, s_fail, 1.0, 0.0);
    let c_rate = c_events / c_trials;
    let s_rate = s_events / s_trials;
    let words = format!(
        "{what} {} ({} of {}) against stable {} ({} of {})",
        pct(c_rate * 100.0) + "%",
        count(c_events),
        count(c_trials),
        pct(s_rate * 100.0) + "%",
        count(s_events),
        count(s_trials)
    );
    let limit = tolerance.describe(kind);
    if beyond.upper < 0.0 {
        return Finding::Pass;
    }
    if difference.lower > 0.0 && beyond.estimate > 0.0 {
        return Finding::Fail(format!(
            "{words}: {} worse, beyond {limit} (significant at {} confidence)",
            match tolerance {
                Tolerance::Absolute(_) =>
                    format!("{} points", pct((c_rate - s_rate).abs() * 100.0)),
                Tolerance::Percent(_) if s_rate > 0.0 =>
                    format!("{}%", pct(((c_rate / s_rate) - 1.0).abs() * 100.0)),
                Tolerance::Percent(_) => "infinitely".to_string(),
            },
            pct(levels.confidence * 100.0) + "%"
        ));
    }
    Finding::Undecided(format!(
        "cannot tell yet whether the candidate is worse than stable beyond {limit}: {words}"
    ))
}

/// A latency quantile against stable's: the share of candidate requests slower than
/// stable's quantile raised by the tolerance, against stable's share beyond its quantile.
fn quantile_comparison(
    candidate: &Evidence,
    stable: &Evidence,
    quantile: f64,
    direction: Direction,
    tolerance: Tolerance,
    levels: Levels,
) -> Finding {
    let (Some(s_q), Some(c_q)) = (
        stable.latency.quantile(quantile),
        candidate.latency.quantile(quantile),
    ) else {
        return Finding::Undecided("no latencies to compare".to_string());
    };
    let increase = direction != Direction::Decrease;
    if candidate.latency.open_at(s_q.max(c_q)) || stable.latency.open_at(s_q.max(c_q)) {
        return Finding::Undecided(format!(
            "the p{} falls in an open-ended histogram bucket: how much slower is unknown",
            pct(quantile * 100.0)
        ));
    }
    let limit = match (tolerance, increase) {
        (Tolerance::Absolute(d), true) => s_q + d,
        (Tolerance::Absolute(d), false) => s_q - d,
        (Tolerance::Percent(p), true) => s_q * (1.0 + p / 100.0),
        (Tolerance::Percent(p), false) => s_q * (1.0 - p / 100.0),
    };
    let beyond = |h: &Histogram, t: f64| {
        if increase {
            h.count_above(t)
        } else {
            h.count_below(t)
        }
    };
    let c_n = candidate.latency.total();
    let s_n = stable.latency.total();
    let s_beyond = beyond(&stable.latency, s_q);
    // The candidate's share of requests beyond `threshold` against stable's share beyond
    // its own quantile.
    let candidate_beyond = |threshold: f64| {
        proportion_comparison(
            beyond(&candidate.latency, threshold),
            c_n,
            s_beyond,
            s_n,
            Direction::Increase,
            Tolerance::Absolute(0.0),
            levels,
            "share",
            EvidenceKind::ErrorRate,
        )
    };
    // Pass: the candidate's share beyond the raised limit is below stable's share beyond
    // its own quantile, so the candidate's quantile is below the limit.
    let pass = candidate_beyond(limit);
    let words = format!(
        "p{} {}s against stable {}s ({} and {} latencies)",
        pct(quantile * 100.0),
        num(c_q),
        num(s_q),
        count(c_n),
        count(s_n)
    );
    let limit_words = format!(
        "{} ({}s)",
        tolerance.describe(EvidenceKind::Latency { quantile }),
        num(limit)
    );
    let estimate_beyond = if increase { c_q > limit } else { c_q < limit };
    // Fail: significantly more candidate requests beyond stable's own quantile, and the
    // candidate's quantile itself beyond the limit.
    let shown_worse = candidate_beyond(s_q);
    // A tail quantile is no evidence of a regression until the candidate has had enough
    // requests to reach its tail: below one expected request beyond the quantile (100 for a
    // p99), a slow request or two would "show" a p99 far above stable's, and stable's own
    // quantile is too uncertain at such counts for the intervals to hold.
    let tail_share = if increase { 1.0 - quantile } else { quantile };
    let reaches_tail = c_n * tail_share >= 1.0;
    match (pass, shown_worse) {
        (Finding::Pass, _) => Finding::Pass,
        (Finding::Fail(_), _) | (_, Finding::Fail(_)) if !reaches_tail => {
            Finding::Undecided(format!(
                "{words}: too few candidate requests to show a p{} regression (at least {} needed)",
                pct(quantile * 100.0),
                (1.0 / tail_share.max(1e-9)).ceil()
            ))
        }
        (Finding::Fail(_), _) => Finding::Fail(format!(
            "{words}: beyond {limit_words}, shown at {} confidence",
            pct(levels.confidence * 100.0) + "%"
        )),
        (_, Finding::Fail(_)) if estimate_beyond => Finding::Fail(format!(
            "{words}: beyond {limit_words}, significantly slower at {} confidence",
            pct(levels.confidence * 100.0) + "%"
        )),
        (Finding::Undecided(_), _) => Finding::Undecided(format!(
            "cannot tell yet whether the candidate is slower than stable beyond {limit_words}: {words}"
        )),
    }
}

/// The Mann-Whitney check on the two latency histograms.
fn rank_test(
    candidate: &Evidence,
    stable: &Evidence,
    direction: Direction,
    test: &StatisticalTest,
    levels: Levels,
) -> Finding {
    let effect = test.min_effect_percent / 100.0;
    let increase = direction != Direction::Decrease;
    let scale = if increase { 1.0 + effect } else { 1.0 - effect };
    let (Some(plain), Some(shifted), Some(c_median), Some(s_median)) = (
        mann_whitney_binned(&candidate.latency, &stable.latency, 1.0),
        mann_whitney_binned_against_candidate(&candidate.latency, &stable.latency, scale, increase),
        candidate.latency.quantile(0.5),
        stable.latency.quantile(0.5),
    ) else {
        return Finding::Undecided("no latencies for the Mann-Whitney test".to_string());
    };
    // z toward "worse" and toward "within the effect".
    let (worse_z, within_z) = if increase {
        (plain.z, -shifted.z)
    } else {
        (-plain.z, shifted.z)
    };
    let words = format!(
        "candidate median {}s against stable {}s ({} and {} latencies)",
        num(c_median),
        num(s_median),
        count(candidate.latency.total()),
        count(stable.latency.total())
    );
    let change = if s_median > 0.0 {
        c_median / s_median - 1.0
    } else {
        0.0
    };
    let beyond_effect = if increase {
        change > effect
    } else {
        change < -effect
    };
    if within_z > levels.pass_z {
        return Finding::Pass;
    }
    if worse_z > levels.fail_z && beyond_effect {
        return Finding::Fail(format!(
            "Mann-Whitney: {words} ({}{}%), beyond minEffectPercent {}% (z {} > {} at {} confidence)",
            if change >= 0.0 { "+" } else { "" },
            pct(change * 100.0),
            num(test.min_effect_percent),
            pct(worse_z),
            pct(levels.fail_z),
            pct(levels.confidence * 100.0) + "%"
        ));
    }
    Finding::Undecided(format!(
        "Mann-Whitney cannot tell yet whether the candidate is slower than stable by {}% or more: {words}",
        num(test.min_effect_percent)
    ))
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
mod tests {
    use super::*;
    use crate::judge::testing::{SplitMix64, compared, drawn_evidence, spec};
    use crate::spec::{BuiltinMetric, Provider};

    fn levels() -> Levels {
        Levels::new(0.98, 1, 1, 1)
    }

    fn counts(requests: f64, errors: f64) -> Evidence {
        Evidence {
            requests,
            errors,
            seconds: 60.0,
            ..Evidence::default()
        }
    }

    fn error_spec(edit: impl FnOnce(&mut MetricSpec)) -> MetricSpec {
        let mut s = spec();
        edit(&mut s);
        s
    }

    fn latency_metric(edit: impl FnOnce(&mut MetricSpec)) -> MetricSpec {
        let mut s = MetricSpec {
            provider: Provider::Builtin(BuiltinMetric::LatencyP99),
            ..spec()
        };
        edit(&mut s);
        s
    }

    const P99: EvidenceKind = EvidenceKind::Latency { quantile: 0.99 };

    fn verdict(spec: &MetricSpec, kind: EvidenceKind, c: &Evidence, s: &Evidence) -> Assessment {
        assess_pooled(spec, kind, c, Some(s), levels())
    }

    #[test]
    fn one_error_in_sixty_against_twenty_in_5400_cannot_tell_the_versions_apart() {
        // The old judge failed this on maxIncrease 0.01: 1.7 % against 0.37 %.
        let spec = error_spec(|s| {
            s.compare = Some(Comparison {
                max_increase: Some(0.01),
                ..compared(Direction::Increase)
            })
        });
        let a = verdict(
            &spec,
            EvidenceKind::ErrorRate,
            &counts(60.0, 1.0),
            &counts(5400.0, 20.0),
        );
        match a {
            Assessment::Inconclusive { reason, needs } => {
                assert!(reason.contains("cannot tell yet"), "{reason}");
                let needs = needs.expect("an estimate of the data needed");
                assert!(needs.candidate_requests > 60, "{needs:?}");
                assert!(needs.seconds.is_some());
            }
            other => panic!("expected inconclusive, got {other:?}"),
        }
    }

    #[test]
    fn twice_the_errors_on_enough_traffic_fail_and_equal_rates_pass() {
        let spec = error_spec(|s| {
            s.compare = Some(Comparison {
                max_increase: Some(0.005),
                ..compared(Direction::Increase)
            })
        });
        let stable = counts(50_000.0, 500.0);
        let doubled = verdict(
            &spec,
            EvidenceKind::ErrorRate,
            &counts(5_000.0, 100.0),
            &stable,
        );
        assert!(matches!(doubled, Assessment::Fail { .. }), "{doubled:?}");
        let equal = verdict(
            &spec,
            EvidenceKind::ErrorRate,
            &counts(5_000.0, 50.0),
            &stable,
        );
        assert_eq!(equal, Assessment::Pass);
        let few = verdict(&spec, EvidenceKind::ErrorRate, &counts(50.0, 0.0), &stable);
        assert!(matches!(few, Assessment::Inconclusive { .. }), "{few:?}");
    }

    #[test]
    fn an_absolute_threshold_needs_enough_requests_to_pass() {
        let spec = error_spec(|s| s.max = Some(0.01));
        let alone = |requests, errors| {
            assess_pooled(
                &spec,
                EvidenceKind::ErrorRate,
                &counts(requests, errors),
                None,
                levels(),
            )
        };
        // 0 errors in 50 requests: the true rate may still be 7 %.
        let a = alone(50.0, 0.0);
        assert!(matches!(a, Assessment::Inconclusive { .. }), "{a:?}");
        assert_eq!(alone(1_000.0, 0.0), Assessment::Pass);
        let a = alone(1_000.0, 50.0);
        assert!(matches!(a, Assessment::Fail { .. }), "{a:?}");
    }

    #[test]
    fn a_threshold_stable_breaches_as_much_is_not_the_candidates_failure() {
        let spec = error_spec(|s| s.max = Some(0.01));
        let a = verdict(
            &spec,
            EvidenceKind::ErrorRate,
            &counts(1_000.0, 50.0),
            &counts(20_000.0, 1_000.0),
        );
        match a {
            Assessment::Inconclusive { reason, .. } => {
                assert!(reason.contains("stable breaches too"), "{reason}")
            }
            other => panic!("expected inconclusive, got {other:?}"),
        }
        // Worse than an equally broken stable: still a failure.
        let a = verdict(
            &spec,
            EvidenceKind::ErrorRate,
            &counts(1_000.0, 150.0),
            &counts(20_000.0, 1_000.0),
        );
        assert!(matches!(a, Assessment::Fail { .. }), "{a:?}");
    }

    #[test]
    fn a_thirty_percent_slower_candidate_fails_both_latency_tests() {
        let mut random = SplitMix64(7);
        let stable = drawn_evidence(&mut random, 20_000, 0.0, 0.050);
        let slower = drawn_evidence(&mut random, 2_000, 0.0, 0.065);
        let same = drawn_evidence(&mut random, 2_000, 0.0, 0.050);
        let quantile = latency_metric(|s| {
            s.compare = Some(Comparison {
                max_increase_percent: Some(20.0),
                ..compared(Direction::Increase)
            })
        });
        let a = verdict(&quantile, P99, &slower, &stable);
        assert!(matches!(a, Assessment::Fail { .. }), "{a:?}");
        let ranks = latency_metric(|s| {
            s.compare = Some(Comparison {
                mann_whitney: Some(StatisticalTest {
                    min_effect_percent: 10.0,
                    ..StatisticalTest::default()
                }),
                ..compared(Direction::Increase)
            })
        });
        let a = verdict(&ranks, P99, &slower, &stable);
        assert!(matches!(a, Assessment::Fail { .. }), "{a:?}");
        assert_eq!(verdict(&ranks, P99, &same, &stable), Assessment::Pass);
    }

    #[test]
    fn a_p99_is_not_judged_worse_before_the_candidate_reaches_its_tail() {
        let latencies = |fast: f64, slow: f64| Evidence {
            requests: fast + slow,
            latency: Histogram::from_bins([
                Bin {
                    lower: 0.100,
                    upper: 0.101,
                    count: fast,
                },
                Bin {
                    lower: 0.300,
                    upper: 0.301,
                    count: slow,
                },
            ]),
            seconds: 60.0,
            ..Evidence::default()
        };
        let spec = latency_metric(|s| {
            s.compare = Some(Comparison {
                max_increase_percent: Some(20.0),
                ..compared(Direction::Increase)
            })
        });
        // Three slow requests in 14: a p99 three times stable's, but 14 requests say
        // little about anyone's slowest 1 %.
        let few = verdict(&spec, P99, &latencies(11.0, 3.0), &latencies(299.0, 3.0));
        match few {
            Assessment::Inconclusive { reason, .. } => {
                assert!(reason.contains("too few candidate requests"), "{reason}")
            }
            other => panic!("expected inconclusive, got {other:?}"),
        }
        // The same share of slow requests in 300: shown.
        let many = verdict(
            &spec,
            P99,
            &latencies(236.0, 64.0),
            &latencies(2990.0, 30.0),
        );
        assert!(matches!(many, Assessment::Fail { .. }), "{many:?}");
    }

    #[test]
    fn a_latency_threshold_is_a_share_of_slow_requests() {
        let mut random = SplitMix64(11);
        let fast = drawn_evidence(&mut random, 3_000, 0.0, 0.010);
        let spec = latency_metric(|s| s.max = Some(0.025));
        let a = assess_pooled(&spec, P99, &fast, None, levels());
        assert_eq!(a, Assessment::Pass);
        let spec = latency_metric(|s| s.max = Some(0.012));
        let a = assess_pooled(&spec, P99, &fast, None, levels());
        assert!(matches!(a, Assessment::Fail { .. }), "{a:?}");
    }

    #[test]
    fn levels_split_the_failure_chance_over_looks_and_checks() {
        let one = Levels::new(0.98, 1, 1, 1);
        let many = Levels::new(0.98, 5, 1, 2);
        assert!((one.fail_z - 2.053_748_9).abs() < 1e-6);
        assert!((many.fail_z - normal_quantile(1.0 - 0.002)).abs() < 1e-9);
        assert!((many.pass_z - one.pass_z).abs() < 1e-12);
    }

    /// Equal versions at low counts: never a pass (weak data is not a pass), rarely a
    /// failure (at most the level's chance).
    #[test]
    fn equal_versions_at_low_counts_are_inconclusive_not_passed() {
        let spec = error_spec(|s| {
            s.min_requests = 1;
            s.compare = Some(Comparison {
                max_increase: Some(0.01),
                ..compared(Direction::Increase)
            })
        });
        let latency = latency_metric(|s| {
            s.compare = Some(Comparison {
                max_increase_percent: Some(20.0),
                mann_whitney: Some(StatisticalTest {
                    min_effect_percent: 10.0,
                    ..StatisticalTest::default()
                }),
                ..compared(Direction::Increase)
            })
        });
        let mut random = SplitMix64(2026);
        let (mut passed, mut failed) = (0, [0, 0]);
        for _ in 0..500 {
            let c = drawn_evidence(&mut random, 15, 0.01, 0.05);
            let s = drawn_evidence(&mut random, 1_500, 0.01, 0.05);
            for (i, (spec, kind)) in [(&spec, EvidenceKind::ErrorRate), (&latency, P99)]
                .into_iter()
                .enumerate()
            {
                let levels = Levels::new(0.98, 1, 1, fail_checks(spec));
                match assess_pooled(spec, kind, &c, Some(&s), levels) {
                    Assessment::Pass => passed += 1,
                    Assessment::Fail { .. } => failed[i] += 1,
                    _ => {}
                }
            }
        }
        assert_eq!(
            passed, 0,
            "15 candidate requests never exclude a regression"
        );
        // At most 2 % of 500 is 10 per metric; allow for chance (99.9th percentile 21).
        assert!(
            failed.iter().all(|f| *f <= 21),
            "{failed:?} of 500 equal comparisons failed"
        );
    }

    /// Equal versions at ample counts: false failures stay within the confidence.
    #[test]
    fn equal_versions_fail_no_more_often_than_the_confidence_allows() {
        let spec = error_spec(|s| {
            s.compare = Some(Comparison {
                max_increase: Some(0.0),
                ..compared(Direction::Increase)
            })
        });
        let ranks = latency_metric(|s| {
            s.compare = Some(Comparison {
                mann_whitney: Some(StatisticalTest::default()),
                ..compared(Direction::Increase)
            })
        });
        let mut random = SplitMix64(99);
        let (mut error_failures, mut rank_failures) = (0, 0);
        let runs = 400;
        for _ in 0..runs {
            let c = drawn_evidence(&mut random, 300, 0.05, 0.05);
            let s = drawn_evidence(&mut random, 3_000, 0.05, 0.05);
            // Zero tolerance: a failure needs only significance, so this is the test's
            // own false-alarm rate at 98 %.
            if matches!(
                verdict(&spec, EvidenceKind::ErrorRate, &c, &s),
                Assessment::Fail { .. }
            ) {
                error_failures += 1;
            }
            if matches!(verdict(&ranks, P99, &c, &s), Assessment::Fail { .. }) {
                rank_failures += 1;
            }
        }
        // 2 % of 400 is 8; allow for chance (binomial 99.9th percentile about 17).
        assert!(error_failures <= 17, "{error_failures} of {runs}");
        assert!(rank_failures <= 17, "{rank_failures} of {runs}");
    }
}
