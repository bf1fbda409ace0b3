//! The judge's test statistics against reference values computed by scipy
//! (`tests/fixtures/stats.py` writes `tests/fixtures/stats.json`).

use cutover_core::judge::normal::normal_quantile;
use cutover_core::judge::stats::{Interval, exact, mann_whitney_binned, wilson};
use cutover_core::judge::{Bin, Histogram};
use serde_json::Value;

fn fixtures() -> Value {
    serde_json::from_str(include_str!("fixtures/stats.json")).expect("stats.json is JSON")
}

fn number(v: &Value) -> f64 {
    v.as_f64().expect("a number")
}

/// Each value a bucket of its own, so the binned test sees exactly the raw sample.
fn histogram(values: &Value) -> Histogram {
    Histogram::from_bins(values.as_array().expect("a list").iter().map(|v| Bin {
        lower: number(v),
        upper: number(v),
        count: 1.0,
    }))
}

#[test]
fn binned_mann_whitney_matches_scipy_on_tied_samples() {
    let all = fixtures();
    let cases = all["mannWhitney"].as_array().expect("cases");
    assert!(cases.len() >= 30);
    for (i, case) in cases.iter().enumerate() {
        let t = mann_whitney_binned(
            &histogram(&case["candidate"]),
            &histogram(&case["stable"]),
            1.0,
        )
        .expect("both samples have values");
        let u = number(&case["u"]);
        assert!((t.u - u).abs() < 1e-9, "case {i}: U {} vs {u}", t.u);
        for (got, key) in [(t.p_greater, "pGreater"), (t.p_less, "pLess")] {
            let expected = number(&case[key]);
            assert!(
                (got - expected).abs() <= 1e-6 + 1e-5 * expected,
                "case {i}: {key} {got} vs {expected}"
            );
        }
    }
}

#[test]
fn normal_quantiles_match_scipy() {
    for case in fixtures()["normalQuantile"].as_array().expect("cases") {
        let (p, z) = (number(&case["p"]), number(&case["z"]));
        let got = normal_quantile(p);
        assert!(
            (got - z).abs() < 1e-6 * z.abs().max(1.0),
            "p {p}: {got} vs {z}"
        );
    }
}

/// Checks one of the fixture lists of intervals against `bounds(successes, trials, level)`.
fn check_intervals(key: &str, level: &str, bounds: impl Fn(f64, f64, f64) -> Option<Interval>) {
    for case in fixtures()[key].as_array().expect("cases") {
        let interval = bounds(
            number(&case["successes"]),
            number(&case["trials"]),
            number(&case[level]),
        )
        .expect("trials");
        let (lower, upper) = (number(&case["lower"]), number(&case["upper"]));
        assert!(
            (interval.lower - lower).abs() < 1e-9,
            "{case}: lower {}",
            interval.lower
        );
        assert!(
            (interval.upper - upper).abs() < 1e-9,
            "{case}: upper {}",
            interval.upper
        );
    }
}

#[test]
fn wilson_bounds_match_scipy() {
    check_intervals("wilson", "z", wilson);
}

#[test]
fn exact_bounds_match_scipy_clopper_pearson() {
    check_intervals("exact", "alpha", exact);
}
