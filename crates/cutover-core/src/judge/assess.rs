//! Judging one measurement against one metric's limits.

use serde::{Deserialize, Serialize};

use super::mann_whitney::{Alternative, mann_whitney_u};
use super::measurement::{Measurement, MeasurementResult};
use crate::spec::{Comparison, Direction, MetricSpec, StatisticalTest};

/// What one measurement says about the candidate.
///
/// Each outcome other than `Pass` carries a reason written for the operator ("0.073 > max
/// 0.05"), because a rollout that stops must say why.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "camelCase")]
pub enum Assessment {
    /// Every configured check passed.
    Pass,
    /// At least one check failed: the candidate is worse than allowed.
    Fail {
        /// Every failed check, joined with "; ".
        reason: String,
    },
    /// Too little data to tell (no value, too few requests or samples, no stable value to
    /// compare with, evidence that neither excludes nor shows a breach). Never a pass.
    Inconclusive {
        /// What was missing.
        reason: String,
        /// How much more traffic a decision would need, when it can be foreseen.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        needs: Option<MoreData>,
    },
    /// The provider could not be asked: says nothing about the candidate.
    Error {
        /// The provider's error message.
        reason: String,
    },
}

/// How much more traffic an undecided measurement needs: the candidate requests (and, at
/// the rate seen so far, the time) after which the confidence bounds would have narrowed
/// enough to decide, were the versions to go on as they did. An estimate, not a promise:
/// the bounds narrow with the square root of the sample.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MoreData {
    /// Further candidate requests.
    pub candidate_requests: u64,
    /// Seconds those take at the candidate's current request rate, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seconds: Option<u64>,
}

impl std::fmt::Display for MoreData {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "needs about {} more candidate requests",
            self.candidate_requests
        )?;
        if let Some(seconds) = self.seconds {
            write!(
                f,
                " (about {} at the current rate)",
                crate::Duration::from_secs(seconds)
            )?;
        }
        Ok(())
    }
}

impl Assessment {
    /// An inconclusive assessment without an estimate of the data it needs.
    pub fn inconclusive(reason: impl Into<String>) -> Self {
        Assessment::Inconclusive {
            reason: reason.into(),
            needs: None,
        }
    }

    /// Whether this is [`Assessment::Pass`].
    pub fn is_pass(&self) -> bool {
        matches!(self, Assessment::Pass)
    }

    /// The reason given, for anything but a pass.
    pub fn reason(&self) -> Option<&str> {
        match self {
            Assessment::Pass => None,
            Assessment::Fail { reason }
            | Assessment::Inconclusive { reason, .. }
            | Assessment::Error { reason } => Some(reason),
        }
    }
}

/// Judges one measurement of the metric `spec`.
///
/// A provider error is an [`Assessment::Error`]. A missing or NaN candidate value, or fewer
/// candidate requests than `minRequests` (when the provider knows the count), is
/// [`Assessment::Inconclusive`] before anything else is checked: a value over too little
/// traffic must neither pass nor fail. Then every configured check applies: `min`, `max`,
/// and the comparison with stable (`maxIncrease`, `maxIncreasePercent`, the Mann-Whitney
/// test). Any failed check fails the measurement, even if another check lacked data;
/// otherwise a check that lacked data makes it inconclusive; otherwise it passes.
pub fn assess(spec: &MetricSpec, result: &MeasurementResult) -> Assessment {
    let measurement = match result {
        MeasurementResult::Error(message) if message.trim().is_empty() => {
            return Assessment::Error {
                reason: "provider error".to_string(),
            };
        }
        MeasurementResult::Error(message) => {
            return Assessment::Error {
                reason: message.clone(),
            };
        }
        MeasurementResult::Value(measurement) => measurement,
    };
    // An infinite value is no measurement: `-inf` would pass any `max`. Treated as no data.
    let Some(candidate) = measurement.candidate.filter(|v| v.is_finite()) else {
        return Assessment::inconclusive("no data for the candidate");
    };
    if let Some(requests) = measurement.candidate_requests
        && requests < spec.min_requests
    {
        return Assessment::inconclusive(format!(
            "only {requests} candidate requests, fewer than minRequests {}",
            spec.min_requests
        ));
    }

    let mut checks = Checks::default();
    if let Some(min) = spec.min
        && candidate < min
    {
        checks.fail(format!("{} < min {}", num(candidate), num(min)));
    }
    if let Some(max) = spec.max
        && candidate > max
    {
        checks.fail(format!("{} > max {}", num(candidate), num(max)));
    }
    if let Some(comparison) = &spec.compare {
        let before = checks.failures.len();
        compare(comparison, candidate, measurement, &mut checks);
        for failure in checks.failures.iter_mut().skip(before) {
            failure.push_str(ON_SUMMARIES);
        }
    }
    checks.into_assessment()
}

/// Said of every comparison failed on summaries: a p99 of 30 requests against a p99 of
/// 3,000 is biased by the traffic split itself, and the judge cannot correct for it.
const ON_SUMMARIES: &str = " (compared on summaries: only as good as they are)";

/// The outcomes of the individual checks of one measurement.
#[derive(Default)]
struct Checks {
    failures: Vec<String>,
    gaps: Vec<String>,
}

impl Checks {
    fn fail(&mut self, reason: String) {
        self.failures.push(reason);
    }

    fn lack(&mut self, reason: String) {
        self.gaps.push(reason);
    }

    fn into_assessment(self) -> Assessment {
        if !self.failures.is_empty() {
            Assessment::Fail {
                reason: self.failures.join("; "),
            }
        } else if !self.gaps.is_empty() {
            Assessment::inconclusive(self.gaps.join("; "))
        } else {
            Assessment::Pass
        }
    }
}

/// How much worse the candidate is than stable: positive is worse.
fn regression(direction: Direction, candidate: f64, stable: f64) -> f64 {
    match direction {
        Direction::Increase => candidate - stable,
        Direction::Decrease => stable - candidate,
        Direction::Either => (candidate - stable).abs(),
    }
}

/// "candidate 0.12 is 0.02 above stable 0.1", in the words of the direction.
fn describe(direction: Direction, candidate: f64, stable: f64, regression: f64) -> String {
    let (c, s, r) = (num(candidate), num(stable), num(regression));
    match direction {
        Direction::Increase => format!("candidate {c} is {r} above stable {s}"),
        Direction::Decrease => format!("candidate {c} is {r} below stable {s}"),
        Direction::Either => format!("candidate {c} differs from stable {s} by {r}"),
    }
}

fn compare(
    comparison: &Comparison,
    candidate: f64,
    measurement: &Measurement,
    checks: &mut Checks,
) {
    let direction = comparison.direction;
    if comparison.max_increase.is_some() || comparison.max_increase_percent.is_some() {
        match measurement.stable.filter(|v| v.is_finite()) {
            None => checks.lack("no data for stable to compare with".to_string()),
            Some(stable) => {
                let regression = regression(direction, candidate, stable);
                if regression.is_nan() {
                    // inf - inf: neither better nor worse can be said.
                    checks.lack(format!(
                        "candidate {} and stable {} cannot be compared",
                        num(candidate),
                        num(stable)
                    ));
                } else {
                    if let Some(limit) = comparison.max_increase
                        && regression > limit
                    {
                        checks.fail(format!(
                            "{}, more than maxIncrease {}",
                            describe(direction, candidate, stable, regression),
                            num(limit)
                        ));
                    }
                    if let Some(percent) = comparison.max_increase_percent {
                        relative(direction, candidate, stable, regression, percent, checks);
                    }
                }
            }
        }
    }
    if let Some(test) = &comparison.mann_whitney {
        statistical(test, direction, measurement, checks);
    }
}

/// The `maxIncreasePercent` check. A percentage of a zero baseline is zero, so against a
/// stable value of 0 any worsening fails and anything else passes.
fn relative(
    direction: Direction,
    candidate: f64,
    stable: f64,
    regression: f64,
    percent: f64,
    checks: &mut Checks,
) {
    if stable == 0.0 {
        if regression > 0.0 {
            checks.fail(format!(
                "{}: any worsening of a zero baseline exceeds maxIncreasePercent {}%",
                describe(direction, candidate, stable, regression),
                num(percent)
            ));
        }
        return;
    }
    let allowed = stable.abs() * percent / 100.0;
    if regression > allowed {
        checks.fail(format!(
            "{} ({}%), more than maxIncreasePercent {}%",
            describe(direction, candidate, stable, regression),
            pct(regression / stable.abs() * 100.0),
            num(percent)
        ));
    }
}

/// The Mann-Whitney check on the raw samples, NaN samples dropped first.
fn statistical(
    test: &StatisticalTest,
    direction: Direction,
    measurement: &Measurement,
    checks: &mut Checks,
) {
    let candidate = without_nan(&measurement.candidate_samples);
    let stable = without_nan(&measurement.stable_samples);
    let min = test.min_samples as usize;
    if candidate.len() < min || stable.len() < min {
        checks.lack(format!(
            "{} candidate and {} stable samples, fewer than minSamples {min}",
            candidate.len(),
            stable.len()
        ));
        return;
    }
    let alternative = match direction {
        Direction::Increase => Alternative::Greater,
        Direction::Decrease => Alternative::Less,
        Direction::Either => Alternative::TwoSided,
    };
    let (Some(result), Some(candidate_median), Some(stable_median)) = (
        mann_whitney_u(&candidate, &stable, alternative),
        median(&candidate),
        median(&stable),
    ) else {
        checks.lack("no samples for the Mann-Whitney test".to_string());
        return;
    };
    let alpha = 1.0 - test.confidence;
    let significant = result.p_value < alpha;
    if !significant {
        return;
    }
    let worse = regression(direction, candidate_median, stable_median);
    let effect = test.min_effect_percent;
    let large_enough = if effect > 0.0 {
        worse > 0.0 && worse >= stable_median.abs() * effect / 100.0
    } else {
        // No minimum effect: any significant difference fails unless the candidate's
        // median is actually better.
        worse >= 0.0
    };
    if large_enough {
        let change = if stable_median != 0.0 {
            format!(
                " ({}{}%)",
                if candidate_median >= stable_median {
                    "+"
                } else {
                    ""
                },
                pct((candidate_median - stable_median) / stable_median.abs() * 100.0)
            )
        } else {
            String::new()
        };
        let minimum = if effect > 0.0 {
            format!(", minEffectPercent {}%", num(effect))
        } else {
            String::new()
        };
        checks.fail(format!(
            "Mann-Whitney p = {} < {} (confidence {}): candidate median {} vs stable median {}{change}{minimum}",
            num(result.p_value),
            num(alpha),
            num(test.confidence),
            num(candidate_median),
            num(stable_median),
        ));
    }
}

/// The samples with NaN dropped: a NaN has no rank and no place in a median.
fn without_nan(samples: &[f64]) -> Vec<f64> {
    samples.iter().copied().filter(|v| v.is_finite()).collect()
}

/// The median of values without NaN; `None` when empty.
fn median(values: &[f64]) -> Option<f64> {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let middle = sorted.len() / 2;
    if sorted.len() % 2 == 1 {
        sorted.get(middle).copied()
    } else {
        let (low, high) = (*sorted.get(middle.checked_sub(1)?)?, *sorted.get(middle)?);
        // Halve first so that two huge values do not overflow to infinity.
        Some(low / 2.0 + high / 2.0)
    }
}

/// A number for a reason: six significant digits, plain notation where readable, so that
/// computed values read `0.02`, not `0.020000000000000018`.
pub(crate) fn num(x: f64) -> String {
    if x == 0.0 || !x.is_finite() {
        return format!("{x}");
    }
    if (1e-4..1e15).contains(&x.abs()) {
        let rounded: f64 = format!("{x:.5e}").parse().unwrap_or(x);
        format!("{rounded}")
    } else {
        format!("{x:.3e}")
    }
}

/// A percentage for a reason, to three significant digits: `23.7`, not `23.6548`.
pub(crate) fn pct(x: f64) -> String {
    if x.is_finite() && x.abs() >= 1e-4 {
        let rounded: f64 = format!("{x:.2e}").parse().unwrap_or(x);
        format!("{rounded}")
    } else {
        num(x)
    }
}

#[cfg(test)]
mod tests;
