//! Comparisons with stable: the increase over stable against `maxIncrease` and
//! `maxIncreasePercent` as a non-inferiority test on error counts or latency shares, and the
//! Mann-Whitney rank test on the two latency histograms.

use super::{
    Comparison, Direction, Evidence, EvidenceKind, Finding, Histogram, Interval, Levels,
    StatisticalTest, Term, count, exact, mann_whitney_binned,
    mann_whitney_binned_against_candidate, mover, num, pct, proportion,
};

pub(super) fn compare(
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
