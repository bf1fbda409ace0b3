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
