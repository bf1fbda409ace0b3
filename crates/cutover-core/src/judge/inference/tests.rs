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
