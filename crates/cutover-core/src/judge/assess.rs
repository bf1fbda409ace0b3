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
mod tests {
    use super::*;
    use crate::judge::testing::{SplitMix64, compared, latency_spec, spec};
    use proptest::prelude::*;

    fn value(m: Measurement) -> MeasurementResult {
        MeasurementResult::Value(m)
    }

    #[track_caller]
    fn assert_fails(assessment: Assessment, expected_reason: &str) {
        match &assessment {
            Assessment::Fail { reason } => assert!(
                reason.contains(expected_reason),
                "reason '{reason}' lacks '{expected_reason}'"
            ),
            other => panic!("expected a failure, got {other:?}"),
        }
    }

    #[track_caller]
    fn assert_inconclusive(assessment: Assessment, expected_reason: &str) {
        match &assessment {
            Assessment::Inconclusive { reason, .. } => assert!(
                reason.contains(expected_reason),
                "reason '{reason}' lacks '{expected_reason}'"
            ),
            other => panic!("expected inconclusive, got {other:?}"),
        }
    }

    #[test]
    fn max_threshold_passes_at_or_below_and_fails_above() {
        let spec = MetricSpec {
            max: Some(0.05),
            ..spec()
        };
        assert_eq!(
            assess(&spec, &value(Measurement::of_candidate(0.01))),
            Assessment::Pass
        );
        assert_eq!(
            assess(&spec, &value(Measurement::of_candidate(0.05))),
            Assessment::Pass
        );
        assert_eq!(
            assess(&spec, &value(Measurement::of_candidate(0.073))),
            Assessment::Fail {
                reason: "0.073 > max 0.05".to_string()
            }
        );
    }

    #[test]
    fn min_threshold_fails_below() {
        let spec = MetricSpec {
            min: Some(0.99),
            ..spec()
        };
        assert_eq!(
            assess(&spec, &value(Measurement::of_candidate(0.995))),
            Assessment::Pass
        );
        assert_fails(
            assess(&spec, &value(Measurement::of_candidate(0.9))),
            "0.9 < min 0.99",
        );
    }

    #[test]
    fn every_failed_check_is_named() {
        let spec = MetricSpec {
            min: Some(1.0),
            max: Some(0.5),
            ..spec()
        };
        assert_eq!(
            assess(&spec, &value(Measurement::of_candidate(0.7))),
            Assessment::Fail {
                reason: "0.7 < min 1; 0.7 > max 0.5".to_string()
            }
        );
    }

    #[test]
    fn provider_error_is_an_error() {
        let spec = MetricSpec {
            max: Some(1.0),
            ..spec()
        };
        assert_eq!(
            assess(
                &spec,
                &MeasurementResult::Error("connection refused".to_string())
            ),
            Assessment::Error {
                reason: "connection refused".to_string()
            }
        );
    }

    #[test]
    fn no_data_is_inconclusive_never_a_pass() {
        // Even a metric with no checks at all does not pass on no data.
        for spec in [
            spec(),
            MetricSpec {
                max: Some(1.0),
                ..spec()
            },
        ] {
            assert_inconclusive(assess(&spec, &value(Measurement::default())), "no data");
            let nan = Measurement::of_candidate(f64::NAN);
            assert_inconclusive(assess(&spec, &value(nan)), "no data");
        }
    }

    #[test]
    fn too_few_requests_is_inconclusive_naming_the_counts() {
        let spec = MetricSpec {
            max: Some(0.05),
            min_requests: 50,
            ..spec()
        };
        // One error out of three requests is a 33% error rate, but says nothing yet.
        let few = Measurement::of_candidate(0.33).with_requests(3);
        assert_eq!(
            assess(&spec, &value(few)),
            Assessment::inconclusive("only 3 candidate requests, fewer than minRequests 50")
        );
        let enough = Measurement::of_candidate(0.01).with_requests(50);
        assert_eq!(assess(&spec, &value(enough)), Assessment::Pass);
        // An unknown count is not held against the measurement.
        assert_eq!(
            assess(&spec, &value(Measurement::of_candidate(0.01))),
            Assessment::Pass
        );
    }

    #[test]
    fn absolute_comparison_fails_on_increase() {
        let spec = MetricSpec {
            compare: Some(Comparison {
                max_increase: Some(0.01),
                ..compared(Direction::Increase)
            }),
            ..spec()
        };
        assert_eq!(
            assess(&spec, &value(Measurement::of_both(0.105, 0.1))),
            Assessment::Pass
        );
        // Better than stable is always fine.
        assert_eq!(
            assess(&spec, &value(Measurement::of_both(0.01, 0.1))),
            Assessment::Pass
        );
        assert_eq!(
            assess(&spec, &value(Measurement::of_both(0.12, 0.1))),
            Assessment::Fail {
                reason: "candidate 0.12 is 0.02 above stable 0.1, more than maxIncrease 0.01 (compared on summaries: only as good as they are)"
                    .to_string()
            }
        );
    }

    #[test]
    fn absolute_comparison_fails_on_decrease() {
        let spec = MetricSpec {
            compare: Some(Comparison {
                max_increase: Some(5.0),
                ..compared(Direction::Decrease)
            }),
            ..spec()
        };
        assert_eq!(
            assess(&spec, &value(Measurement::of_both(98.0, 100.0))),
            Assessment::Pass
        );
        assert_eq!(
            assess(&spec, &value(Measurement::of_both(150.0, 100.0))),
            Assessment::Pass
        );
        assert_fails(
            assess(&spec, &value(Measurement::of_both(90.0, 100.0))),
            "candidate 90 is 10 below stable 100, more than maxIncrease 5",
        );
    }

    #[test]
    fn absolute_comparison_fails_either_way() {
        let spec = MetricSpec {
            compare: Some(Comparison {
                max_increase: Some(5.0),
                ..compared(Direction::Either)
            }),
            ..spec()
        };
        assert_eq!(
            assess(&spec, &value(Measurement::of_both(104.0, 100.0))),
            Assessment::Pass
        );
        assert_eq!(
            assess(&spec, &value(Measurement::of_both(96.0, 100.0))),
            Assessment::Pass
        );
        assert_fails(
            assess(&spec, &value(Measurement::of_both(110.0, 100.0))),
            "differs from stable 100 by 10",
        );
        assert_fails(
            assess(&spec, &value(Measurement::of_both(90.0, 100.0))),
            "differs from stable 100 by 10",
        );
    }

    #[test]
    fn relative_comparison_fails_on_increase() {
        let spec = MetricSpec {
            compare: Some(Comparison {
                max_increase_percent: Some(10.0),
                ..compared(Direction::Increase)
            }),
            ..spec()
        };
        assert_eq!(
            assess(&spec, &value(Measurement::of_both(0.21, 0.2))),
            Assessment::Pass
        );
        assert_eq!(
            assess(&spec, &value(Measurement::of_both(0.25, 0.2))),
            Assessment::Fail {
                reason: "candidate 0.25 is 0.05 above stable 0.2 (25%), more than \
                         maxIncreasePercent 10% (compared on summaries: only as good as they are)"
                    .to_string()
            }
        );
        // A negative baseline: the allowance is a percentage of its magnitude.
        assert_eq!(
            assess(&spec, &value(Measurement::of_both(-9.5, -10.0))),
            Assessment::Pass
        );
        assert_fails(
            assess(&spec, &value(Measurement::of_both(-8.0, -10.0))),
            "20%",
        );
    }

    #[test]
    fn relative_comparison_fails_on_decrease() {
        let spec = MetricSpec {
            compare: Some(Comparison {
                max_increase_percent: Some(10.0),
                ..compared(Direction::Decrease)
            }),
            ..spec()
        };
        assert_eq!(
            assess(&spec, &value(Measurement::of_both(95.0, 100.0))),
            Assessment::Pass
        );
        assert_eq!(
            assess(&spec, &value(Measurement::of_both(200.0, 100.0))),
            Assessment::Pass
        );
        assert_fails(
            assess(&spec, &value(Measurement::of_both(80.0, 100.0))),
            "candidate 80 is 20 below stable 100 (20%)",
        );
    }

    #[test]
    fn relative_comparison_fails_either_way() {
        let spec = MetricSpec {
            compare: Some(Comparison {
                max_increase_percent: Some(10.0),
                ..compared(Direction::Either)
            }),
            ..spec()
        };
        assert_eq!(
            assess(&spec, &value(Measurement::of_both(105.0, 100.0))),
            Assessment::Pass
        );
        assert_fails(
            assess(&spec, &value(Measurement::of_both(120.0, 100.0))),
            "(20%)",
        );
        assert_fails(
            assess(&spec, &value(Measurement::of_both(80.0, 100.0))),
            "(20%)",
        );
    }

    #[test]
    fn relative_comparison_against_zero_stable_fails_any_worsening_only() {
        let increase = MetricSpec {
            compare: Some(Comparison {
                max_increase_percent: Some(50.0),
                ..compared(Direction::Increase)
            }),
            ..spec()
        };
        assert_eq!(
            assess(&increase, &value(Measurement::of_both(0.0, 0.0))),
            Assessment::Pass
        );
        assert_eq!(
            assess(&increase, &value(Measurement::of_both(-1.0, 0.0))),
            Assessment::Pass
        );
        assert_fails(
            assess(&increase, &value(Measurement::of_both(0.001, 0.0))),
            "zero baseline",
        );
        let either = MetricSpec {
            compare: Some(Comparison {
                max_increase_percent: Some(50.0),
                ..compared(Direction::Either)
            }),
            ..spec()
        };
        assert_eq!(
            assess(&either, &value(Measurement::of_both(0.0, -0.0))),
            Assessment::Pass
        );
        assert_fails(
            assess(&either, &value(Measurement::of_both(-0.5, 0.0))),
            "zero baseline",
        );
    }

    #[test]
    fn comparison_without_stable_is_inconclusive_unless_another_check_fails() {
        let spec = MetricSpec {
            max: Some(0.05),
            compare: Some(Comparison {
                max_increase: Some(0.01),
                ..compared(Direction::Increase)
            }),
            ..spec()
        };
        assert_inconclusive(
            assess(&spec, &value(Measurement::of_candidate(0.01))),
            "no data for stable",
        );
        let nan_stable = Measurement::of_both(0.01, f64::NAN);
        assert_inconclusive(assess(&spec, &value(nan_stable)), "no data for stable");
        // The threshold failure still counts: a failure is never hidden by missing data.
        assert_fails(
            assess(&spec, &value(Measurement::of_candidate(0.5))),
            "0.5 > max 0.05",
        );
    }

    #[test]
    /// Regression: `-inf` passed a `max`-only metric, `+inf` a `min`-only one.
    fn infinite_values_are_no_data_never_a_pass() {
        let max_only = MetricSpec {
            max: Some(0.01),
            ..spec()
        };
        let minus_infinity = Measurement::of_candidate(f64::NEG_INFINITY);
        assert_inconclusive(assess(&max_only, &value(minus_infinity)), "no data");
        let spec = MetricSpec {
            compare: Some(Comparison {
                max_increase: Some(1.0),
                ..compared(Direction::Increase)
            }),
            ..spec()
        };
        let both_infinite = Measurement::of_both(f64::INFINITY, f64::INFINITY);
        assert_inconclusive(assess(&spec, &value(both_infinite)), "no data");
        let stable_infinite = Measurement::of_both(1.0, f64::NEG_INFINITY);
        assert_inconclusive(assess(&spec, &value(stable_infinite)), "no data for stable");
    }

    fn with_samples(candidate: Vec<f64>, stable: Vec<f64>) -> MeasurementResult {
        let candidate_value = median(&candidate).unwrap_or(f64::NAN);
        let stable_value = median(&stable).unwrap_or(f64::NAN);
        value(Measurement::of_both(candidate_value, stable_value).with_samples(candidate, stable))
    }

    #[test]
    fn mann_whitney_catches_a_20_percent_latency_regression_without_thresholds() {
        let spec = latency_spec(Direction::Increase);
        for seed in 0..20 {
            let mut rng = SplitMix64(seed);
            let stable = rng.latencies(200, 0.100);
            let candidate = rng.latencies(200, 0.120);
            assert_fails(
                assess(&spec, &with_samples(candidate, stable)),
                "Mann-Whitney p = ",
            );
        }
    }

    #[test]
    fn mann_whitney_passes_equal_distributions() {
        let spec = latency_spec(Direction::Increase);
        let mut false_alarms = 0;
        for seed in 0..20 {
            let mut rng = SplitMix64(1000 + seed);
            let stable = rng.latencies(100, 0.100);
            let candidate = rng.latencies(100, 0.100);
            match assess(&spec, &with_samples(candidate, stable)) {
                Assessment::Pass => {}
                Assessment::Fail { .. } => false_alarms += 1,
                other => panic!("unexpected {other:?}"),
            }
        }
        // At 98% confidence about 0.4 false alarms are expected in 20 tries.
        assert!(false_alarms <= 1, "{false_alarms} false alarms in 20");
    }

    #[test]
    fn mann_whitney_passes_an_improvement_and_catches_a_drop_in_throughput() {
        let mut rng = SplitMix64(7);
        let stable = rng.latencies(60, 0.100);
        let faster = rng.latencies(60, 0.080);
        let increase = latency_spec(Direction::Increase);
        assert_eq!(
            assess(&increase, &with_samples(faster.clone(), stable.clone())),
            Assessment::Pass
        );
        // For a metric where lower is worse, the same data is a regression.
        let decrease = latency_spec(Direction::Decrease);
        assert_fails(
            assess(&decrease, &with_samples(faster.clone(), stable.clone())),
            "(-",
        );
        let either = latency_spec(Direction::Either);
        assert_fails(
            assess(&either, &with_samples(faster, stable)),
            "Mann-Whitney",
        );
    }

    #[test]
    fn mann_whitney_tolerates_a_significant_effect_below_min_effect_percent() {
        let mut rng = SplitMix64(42);
        let stable = rng.latencies(400, 0.100);
        let candidate = rng.latencies(400, 0.110);
        let mut spec = latency_spec(Direction::Increase);
        assert_fails(
            assess(&spec, &with_samples(candidate.clone(), stable.clone())),
            "Mann-Whitney",
        );
        if let Some(comparison) = &mut spec.compare {
            comparison.mann_whitney = Some(StatisticalTest {
                min_effect_percent: 25.0,
                ..StatisticalTest::default()
            });
        }
        assert_eq!(
            assess(&spec, &with_samples(candidate, stable)),
            Assessment::Pass
        );
    }

    #[test]
    fn mann_whitney_with_too_few_samples_is_inconclusive() {
        let spec = latency_spec(Direction::Increase);
        let mut rng = SplitMix64(3);
        let mut candidate = rng.latencies(7, 0.2);
        candidate.push(f64::NAN); // dropped: 7 real samples remain
        let stable = rng.latencies(30, 0.1);
        assert_inconclusive(
            assess(&spec, &with_samples(candidate, stable)),
            "7 candidate and 30 stable samples, fewer than minSamples 8",
        );
    }

    #[test]
    fn median_handles_odd_even_and_huge_values() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), Some(2.5));
        assert_eq!(median(&[f64::MAX, f64::MAX]), Some(f64::MAX));
        assert_eq!(median(&[]), None);
    }

    #[test]
    fn numbers_in_reasons_are_short() {
        assert_eq!(num(0.073), "0.073");
        assert_eq!(num(0.12 - 0.1), "0.02");
        assert_eq!(num(250.0), "250");
        assert_eq!(num(1.234e-9), "1.234e-9");
        assert_eq!(num(f64::INFINITY), "inf");
        assert_eq!(pct(23.6548), "23.7");
        assert_eq!(pct(25.000000000000004), "25");
    }

    fn any_f64() -> impl Strategy<Value = f64> {
        prop_oneof![
            (-3i32..3).prop_map(f64::from),
            Just(f64::NAN),
            Just(f64::INFINITY),
            Just(f64::NEG_INFINITY),
            any::<f64>(),
        ]
    }

    fn direction() -> impl Strategy<Value = Direction> {
        prop_oneof![
            Just(Direction::Increase),
            Just(Direction::Decrease),
            Just(Direction::Either)
        ]
    }

    prop_compose! {
        fn arbitrary_spec()(
            min in proptest::option::of(any_f64()),
            max in proptest::option::of(any_f64()),
            direction in direction(),
            max_increase in proptest::option::of(any_f64()),
            max_increase_percent in proptest::option::of(any_f64()),
            test in proptest::option::of((any_f64(), any_f64(), 0u32..12)),
            has_compare in any::<bool>(),
            min_requests in 0u64..10,
        ) -> MetricSpec {
            MetricSpec {
                min,
                max,
                compare: has_compare.then(|| Comparison {
                    direction,
                    max_increase,
                    max_increase_percent,
                    mann_whitney: test.map(|(confidence, min_effect_percent, min_samples)| {
                        StatisticalTest { confidence, min_effect_percent, min_samples }
                    }),
                }),
                min_requests,
                ..spec()
            }
        }
    }

    prop_compose! {
        fn arbitrary_measurement()(
            candidate in proptest::option::of(any_f64()),
            stable in proptest::option::of(any_f64()),
            candidate_requests in proptest::option::of(0u64..20),
            candidate_samples in prop::collection::vec(any_f64(), 0..20),
            stable_samples in prop::collection::vec(any_f64(), 0..20),
        ) -> Measurement {
            Measurement { candidate, stable, candidate_requests, candidate_samples, stable_samples, ..Measurement::default() }
        }
    }

    proptest! {
        #[test]
        fn assess_never_panics_and_no_data_never_passes(
            spec in arbitrary_spec(),
            measurement in arbitrary_measurement(),
        ) {
            let no_data = measurement.candidate.is_none_or(|v| !v.is_finite());
            let assessment = assess(&spec, &MeasurementResult::Value(measurement));
            if no_data {
                prop_assert!(
                    matches!(assessment, Assessment::Inconclusive { .. }),
                    "{assessment:?}"
                );
            }
            if let Some(reason) = assessment.reason() {
                prop_assert!(!reason.is_empty());
            }
        }
    }
}
