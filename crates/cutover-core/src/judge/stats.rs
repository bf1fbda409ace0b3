//! The test statistics the evidence is judged with, each a pure function of counts.
//!
//! * [`wilson`]: the Wilson score interval of one proportion. Chosen over the Wald
//!   interval because it stays inside [0, 1] and keeps its coverage at small counts and at
//!   zero events (0 errors in 40 requests has an upper bound of about 10 % at 98 %, where
//!   Wald claims 0).
//! * [`mover`]: a confidence interval for a linear combination of proportions, such as
//!   `p_candidate - 1.2 × p_stable - 0.005`, by the MOVER method of Zou and Donner (2008) on
//!   Wilson intervals; for a plain difference it is Newcombe's hybrid score interval
//!   (method 10 of Newcombe 1998). It needs no large-sample assumption on the smaller
//!   sample, which is the candidate's at a 1 % canary, and it handles zero counts. Chosen
//!   over Fisher's exact test because a non-inferiority decision needs an interval around a
//!   margin, not only a p-value at zero difference, and over a beta-binomial model because
//!   the proxy's counts are per request, not per overdispersed unit.
//! * [`mann_whitney_binned`]: the Mann-Whitney U test on two histograms, with the
//!   values of one scaled by a factor (to test "slower by more than 10 %"), ties within and
//!   across buckets handled by the tie-corrected variance.

use super::evidence::{Bin, Histogram};
use super::normal::{normal_quantile, normal_sf};

/// A one-sided interval: the proportion is above `lower` and below `upper`, each at the
/// confidence the `z` they were computed with stands for.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Interval {
    /// The point estimate.
    pub estimate: f64,
    /// The lower bound.
    pub lower: f64,
    /// The upper bound.
    pub upper: f64,
}

/// The exact (Clopper-Pearson) bounds of `successes` out of `trials`, each one-sided at
/// `alpha`: the proportions under which what was seen (or more, or less) has probability
/// `alpha`. Used to *show* harm, where a bound that is too tight would roll back a healthy
/// version: Wilson's lower bound is too high for small counts far in the tail (9 errors in
/// 167 "shows" a rate above 2 % at 99.8 %, though 2 % gives 9 or more 0.75 % of the time),
/// the exact bound never is. Counts may be fractional. `None` without trials.
pub fn exact(successes: f64, trials: f64, alpha: f64) -> Option<Interval> {
    if !trials.is_finite() || trials <= 0.0 || !successes.is_finite() {
        return None;
    }
    let x = successes.clamp(0.0, trials);
    let alpha = alpha.clamp(1e-15, 0.5);
    if x > LARGE && trials - x > LARGE {
        // Far from both ends the two agree to a fraction of a percent, and the beta
        // function's continued fraction would need ever more steps.
        return wilson(x, trials, normal_quantile(1.0 - alpha));
    }
    let lower = if x <= 0.0 {
        0.0
    } else {
        beta_quantile(alpha, x, trials - x + 1.0)
    };
    let upper = if x >= trials {
        1.0
    } else {
        beta_quantile(1.0 - alpha, x + 1.0, trials - x)
    };
    Some(Interval {
        estimate: x / trials,
        lower,
        upper,
    })
}

/// Above this many events and non-events, [`exact`] uses Wilson's bounds.
const LARGE: f64 = 5_000.0;

/// The `p` quantile of the beta distribution with shapes `a` and `b`, by bisection on
/// the regularized incomplete beta function.
fn beta_quantile(p: f64, a: f64, b: f64) -> f64 {
    let (mut low, mut high) = (0.0_f64, 1.0_f64);
    for _ in 0..80 {
        let middle = (low + high) / 2.0;
        if incomplete_beta(middle, a, b) < p {
            low = middle;
        } else {
            high = middle;
        }
    }
    (low + high) / 2.0
}

/// The regularized incomplete beta function `I_x(a, b)`, by its continued fraction
/// (Numerical Recipes' `betai` with Lentz's method).
pub fn incomplete_beta(x: f64, a: f64, b: f64) -> f64 {
    if x <= 0.0 {
        return 0.0;
    }
    if x >= 1.0 {
        return 1.0;
    }
    let front =
        (ln_gamma(a + b) - ln_gamma(a) - ln_gamma(b) + a * x.ln() + b * (1.0 - x).ln()).exp();
    if x < (a + 1.0) / (a + b + 2.0) {
        front * beta_fraction(x, a, b) / a
    } else {
        1.0 - front * beta_fraction(1.0 - x, b, a) / b
    }
}

fn beta_fraction(x: f64, a: f64, b: f64) -> f64 {
    const TINY: f64 = 1e-300;
    let (qab, qap, qam) = (a + b, a + 1.0, a - 1.0);
    let mut c = 1.0;
    let mut d = 1.0 - qab * x / qap;
    if d.abs() < TINY {
        d = TINY;
    }
    d = 1.0 / d;
    let mut h = d;
    // One step of Lentz's method with coefficient `aa`: the factor `h` is multiplied by.
    let mut step = |aa: f64| {
        d = 1.0 + aa * d;
        if d.abs() < TINY {
            d = TINY;
        }
        c = 1.0 + aa / c;
        if c.abs() < TINY {
            c = TINY;
        }
        d = 1.0 / d;
        d * c
    };
    for m in 1..10_000 {
        let m = f64::from(m);
        let m2 = 2.0 * m;
        h *= step(m * (b - m) * x / ((qam + m2) * (a + m2)));
        let delta = step(-(a + m) * (qab + m) * x / ((a + m2) * (qap + m2)));
        h *= delta;
        if (delta - 1.0).abs() < 1e-15 {
            break;
        }
    }
    h
}

/// `ln Γ(x)` for `x > 0` (Lanczos, g = 7, nine coefficients; relative error near 1e-15).
pub fn ln_gamma(x: f64) -> f64 {
    const G: f64 = 7.0;
    const C: [f64; 9] = [
        0.999_999_999_999_809_9,
        676.520_368_121_885_1,
        -1_259.139_216_722_402_8,
        771.323_428_777_653_1,
        -176.615_029_162_140_6,
        12.507_343_278_686_905,
        -0.138_571_095_265_720_12,
        9.984_369_578_019_572e-6,
        1.505_632_735_149_311_6e-7,
    ];
    if x < 0.5 {
        // Reflection: Γ(x) Γ(1 - x) = π / sin(πx).
        return (std::f64::consts::PI / (std::f64::consts::PI * x).sin()).ln() - ln_gamma(1.0 - x);
    }
    let x = x - 1.0;
    let mut sum = C[0];
    for (i, c) in C.iter().enumerate().skip(1) {
        sum += c / (x + i as f64);
    }
    let t = x + G + 0.5;
    0.5 * (2.0 * std::f64::consts::PI).ln() + (x + 0.5) * t.ln() - t + sum.ln()
}

/// The bounds of a proportion the tests use to *exclude* harm: Wilson's, widened on either
/// side to the exact bound where that is wider. Wilson's interval is tight in the middle
/// but too narrow far in the tail at small counts (one slow request in 15 would "show" a
/// rate above 1 % at 98 %, though 1 % gives at least one in 15 requests 14 % of the time;
/// Brown, Cai and DasGupta 2001), and the levels the judge works at are far in the tail.
pub fn proportion(successes: f64, trials: f64, z: f64) -> Option<Interval> {
    let wilson = wilson(successes, trials, z)?;
    let exact = exact(successes, trials, normal_sf(z))?;
    Some(Interval {
        estimate: wilson.estimate,
        lower: wilson.lower.min(exact.lower),
        upper: wilson.upper.max(exact.upper),
    })
}

/// The Wilson score bounds of `successes` out of `trials` at the normal quantile `z`;
/// `None` without trials.
pub fn wilson(successes: f64, trials: f64, z: f64) -> Option<Interval> {
    if !trials.is_finite() || trials <= 0.0 || !successes.is_finite() {
        return None;
    }
    let p = (successes / trials).clamp(0.0, 1.0);
    let z2 = z * z;
    let denominator = 1.0 + z2 / trials;
    let centre = (p + z2 / (2.0 * trials)) / denominator;
    let half = z * (p * (1.0 - p) / trials + z2 / (4.0 * trials * trials)).sqrt() / denominator;
    Some(Interval {
        estimate: p,
        lower: (centre - half).max(0.0),
        upper: (centre + half).min(1.0),
    })
}

/// A term of a linear combination: `coefficient × proportion`, the proportion given by its
/// Wilson interval.
#[derive(Clone, Copy, Debug)]
pub struct Term {
    /// The coefficient (negative to subtract).
    pub coefficient: f64,
    /// The proportion's interval.
    pub interval: Interval,
}

/// The MOVER interval of `Σ coefficient × proportion + constant`: each term's distance
/// from its estimate to the bound on the relevant side, combined in quadrature.
pub fn mover(terms: &[Term], constant: f64) -> Interval {
    let mut estimate = constant;
    let (mut below, mut above) = (0.0_f64, 0.0_f64);
    for term in terms {
        let c = term.coefficient;
        let Interval {
            estimate: p,
            lower: l,
            upper: u,
        } = term.interval;
        estimate += c * p;
        let (low, high) = if c >= 0.0 {
            (c * l, c * u)
        } else {
            (c * u, c * l)
        };
        below += (c * p - low).powi(2);
        above += (high - c * p).powi(2);
    }
    Interval {
        estimate,
        lower: estimate - below.sqrt(),
        upper: estimate + above.sqrt(),
    }
}

/// The outcome of a Mann-Whitney U test on binned values.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BinnedTest {
    /// The candidate's U: pairs in which its value is larger, ties counting one half.
    pub u: f64,
    /// U standardised (tie-corrected variance, continuity correction toward the mean):
    /// positive when the candidate tends to be larger.
    pub z: f64,
    /// `P(Z >= z)`: small when the candidate is significantly larger.
    pub p_greater: f64,
    /// `P(Z <= z)`: small when the candidate is significantly smaller.
    pub p_less: f64,
}

/// The Mann-Whitney U test of `candidate` against `stable` with every stable value
/// multiplied by `stable_scale`: with a scale of 1.1, "the candidate tends to be smaller"
/// means it is not 10 % slower (under a shift of log-latency). Each bucket stands for its
/// midpoint; values that fall together are ties, which the variance accounts for. The
/// normal approximation is used throughout: binned samples are large or they are tied, and
/// the test decides only with enough of them. `None` when either side is empty.
pub fn mann_whitney_binned(
    candidate: &Histogram,
    stable: &Histogram,
    stable_scale: f64,
) -> Option<BinnedTest> {
    ranks(candidate, stable, stable_scale, Bin::value, Bin::value)
}

/// The same test with every doubt resolved against the candidate: where larger is worse,
/// its values at their bucket's upper bound and stable's at their lower bound (before
/// scaling), the other way round where smaller is worse. For the pass side
/// of a comparison: with midpoints, values two versions share in a bucket would be ranked
/// "candidate faster" once stable's are scaled up, and a candidate at the margin would
/// pass far more often than the confidence allows when buckets are wide (Prometheus's).
pub fn mann_whitney_binned_against_candidate(
    candidate: &Histogram,
    stable: &Histogram,
    stable_scale: f64,
    larger_is_worse: bool,
) -> Option<BinnedTest> {
    if larger_is_worse {
        ranks(candidate, stable, stable_scale, |b| b.upper, |b| b.lower)
    } else {
        ranks(candidate, stable, stable_scale, |b| b.lower, |b| b.upper)
    }
}

fn ranks(
    candidate: &Histogram,
    stable: &Histogram,
    stable_scale: f64,
    candidate_value: impl Fn(&Bin) -> f64,
    stable_value: impl Fn(&Bin) -> f64,
) -> Option<BinnedTest> {
    let n1 = candidate.total();
    let n2 = stable.total();
    if n1 <= 0.0 || n2 <= 0.0 || !stable_scale.is_finite() || stable_scale <= 0.0 {
        return None;
    }
    // (value, candidate count, stable count), merged in value order.
    let mut points: Vec<(f64, f64, f64)> = candidate
        .bins()
        .iter()
        .map(|b| (candidate_value(b), b.count, 0.0))
        .chain(
            stable
                .bins()
                .iter()
                .map(|b| (stable_value(b) * stable_scale, 0.0, b.count)),
        )
        .collect();
    points.sort_by(|a, b| a.0.total_cmp(&b.0));
    let (mut u, mut stable_below, mut ties) = (0.0_f64, 0.0_f64, 0.0_f64);
    let mut i = 0;
    while i < points.len() {
        let value = points[i].0;
        let (mut c, mut s) = (0.0, 0.0);
        while i < points.len() && points[i].0 == value {
            c += points[i].1;
            s += points[i].2;
            i += 1;
        }
        u += c * (stable_below + s / 2.0);
        stable_below += s;
        let t = c + s;
        ties += t * t * t - t;
    }
    let n = n1 + n2;
    let mean = n1 * n2 / 2.0;
    let variance = n1 * n2 / 12.0 * ((n + 1.0) - ties / (n * (n - 1.0)).max(1.0));
    if variance <= 0.0 || !variance.is_finite() {
        return Some(BinnedTest {
            u,
            z: 0.0,
            p_greater: 1.0,
            p_less: 1.0,
        });
    }
    let sd = variance.sqrt();
    let distance = u - mean;
    let corrected = if distance.abs() <= 0.5 {
        0.0
    } else {
        distance - 0.5 * distance.signum()
    };
    // Each one-sided p-value takes the continuity correction against its own alternative,
    // as scipy's `mannwhitneyu(method="asymptotic")` does.
    Some(BinnedTest {
        u,
        z: corrected / sd,
        p_greater: normal_sf((distance - 0.5) / sd),
        p_less: normal_sf((-distance - 0.5) / sd),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[track_caller]
    fn close(actual: f64, expected: f64, tolerance: f64) {
        assert!(
            (actual - expected).abs() <= tolerance,
            "{actual} vs {expected} (±{tolerance})"
        );
    }

    #[test]
    fn wilson_matches_the_textbook_example() {
        // Newcombe (1998), Table I: 81/263 at 95 %: 0.2553 to 0.3662.
        let i = wilson(81.0, 263.0, 1.959_964).expect("trials");
        close(i.lower, 0.2553, 5e-5);
        close(i.upper, 0.3662, 5e-5);
        // 0/10 at 95 %: 0 to 0.2775.
        let i = wilson(0.0, 10.0, 1.959_964).expect("trials");
        close(i.lower, 0.0, 1e-12);
        close(i.upper, 0.2775, 5e-5);
        assert!(wilson(1.0, 0.0, 1.96).is_none());
    }

    #[test]
    fn few_events_get_the_exact_bound() {
        // One event in 15 at 98 %: Wilson says above 1.1 %; the exact bound is 0.13 %.
        let z = 2.053_748_9;
        let w = wilson(1.0, 15.0, z).expect("trials");
        let p = proportion(1.0, 15.0, z).expect("trials");
        assert!(w.lower > 0.01);
        close(p.lower, 1.0 - 0.98_f64.powf(1.0 / 15.0), 1e-6);
        assert!(p.upper >= w.upper);
        // And symmetrically at the top.
        let p = proportion(14.0, 15.0, z).expect("trials");
        close(p.upper, 0.98_f64.powf(1.0 / 15.0), 1e-6);
        // Infinite or NaN counts are no data, never an interval of [0, 0].
        assert!(proportion(1.0, f64::INFINITY, z).is_none());
        assert!(exact(f64::NAN, 10.0, 0.02).is_none());
    }

    #[test]
    fn large_counts_take_wilsons_bounds_which_agree_with_the_exact_ones() {
        let alpha = 0.001;
        let wide = exact(10_000.0, 100_000.0, alpha).expect("trials");
        let w = wilson(10_000.0, 100_000.0, normal_quantile(1.0 - alpha)).expect("trials");
        assert_eq!(wide, w);
        let below = exact(4_999.0, 50_000.0, alpha).expect("trials");
        let w = wilson(4_999.0, 50_000.0, normal_quantile(1.0 - alpha)).expect("trials");
        assert!((below.lower - w.lower).abs() < 5e-4 && (below.upper - w.upper).abs() < 5e-4);
    }

    /// Newcombe's hybrid score interval for `a/n - b/m` at 95 %.
    fn difference(a: f64, n: f64, b: f64, m: f64) -> Interval {
        let z = 1.959_964;
        let term = |coefficient, x, trials| Term {
            coefficient,
            interval: wilson(x, trials, z).expect("trials"),
        };
        mover(&[term(1.0, a, n), term(-1.0, b, m)], 0.0)
    }

    #[test]
    fn mover_of_a_difference_is_newcombes_method_10() {
        // Newcombe (1998), Table II, example (a): 56/70 - 48/80 at 95 %: 0.0524 to 0.3339.
        let d = difference(56.0, 70.0, 48.0, 80.0);
        close(d.estimate, 0.2, 1e-12);
        close(d.lower, 0.0524, 5e-5);
        close(d.upper, 0.3339, 5e-5);
        // Example (h): 0/10 - 0/20: -0.1611 to 0.2775.
        let d = difference(0.0, 10.0, 0.0, 20.0);
        close(d.lower, -0.1611, 5e-5);
        close(d.upper, 0.2775, 5e-5);
    }

    fn hist(values: &[(f64, f64)]) -> Histogram {
        Histogram::from_bins(values.iter().map(|&(v, count)| Bin {
            lower: v,
            upper: v,
            count,
        }))
    }

    #[test]
    fn binned_u_matches_the_unbinned_test_on_tied_values() {
        // scipy.stats.mannwhitneyu([1,2,2,3,3,3], [1,1,2,2,4], alternative='greater',
        // method='asymptotic', use_continuity=True): U = 19, p = 0.252427
        let c = hist(&[(1.0, 1.0), (2.0, 2.0), (3.0, 3.0)]);
        let s = hist(&[(1.0, 2.0), (2.0, 2.0), (4.0, 1.0)]);
        let t = mann_whitney_binned(&c, &s, 1.0).expect("data");
        close(t.u, 19.0, 1e-12);
        close(t.p_greater, 0.252_427, 2e-6);
    }

    #[test]
    fn scaling_stable_turns_a_shift_into_no_shift() {
        let c = hist(&[(1.5, 10.0), (3.0, 10.0), (4.5, 10.0)]);
        let s = hist(&[(1.0, 10.0), (2.0, 10.0), (3.0, 10.0)]);
        let plain = mann_whitney_binned(&c, &s, 1.0).expect("data");
        assert!(plain.z > 0.0);
        let scaled = mann_whitney_binned(&c, &s, 1.5).expect("data");
        close(scaled.z, 0.0, 1e-9);
        // Resolved against the candidate, ties in a bucket count as the candidate slower.
        let wide = |values: &[f64]| {
            Histogram::from_bins(values.iter().map(|&v| Bin {
                lower: v,
                upper: v * 1.26,
                count: 10.0,
            }))
        };
        let (c, s) = (wide(&[1.0, 2.0]), wide(&[1.0, 2.0]));
        let midpoints = mann_whitney_binned(&c, &s, 1.1).expect("data");
        let against = mann_whitney_binned_against_candidate(&c, &s, 1.1, true).expect("data");
        assert!(
            midpoints.z < 0.0,
            "midpoints make the equal candidate look faster"
        );
        assert!(against.z > 0.0, "{against:?}");
        assert!(mann_whitney_binned(&c, &Histogram::default(), 1.0).is_none());
    }

    mod properties {
        use super::*;
        use crate::judge::mann_whitney::{Alternative, mann_whitney_u};
        use proptest::prelude::*;

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(300))]

            #[test]
            fn bounds_hold_the_estimate_inside_zero_and_one(
                trials in 1u32..5_000,
                share in 0.0f64..=1.0,
                z in 0.5f64..5.0,
            ) {
                let events = (f64::from(trials) * share).floor();
                let w = wilson(events, f64::from(trials), z).expect("trials");
                let p = proportion(events, f64::from(trials), z).expect("trials");
                prop_assert!(0.0 <= p.lower && p.lower <= w.lower + 1e-12);
                prop_assert!(w.lower <= w.estimate + 1e-12 && w.estimate <= w.upper + 1e-12);
                prop_assert!(w.upper <= p.upper + 1e-12 && p.upper <= 1.0);
            }

            #[test]
            fn a_higher_confidence_never_narrows_a_bound(
                trials in 1u32..2_000,
                share in 0.0f64..=1.0,
                z in 0.5f64..4.0,
            ) {
                let events = (f64::from(trials) * share).floor();
                let narrow = proportion(events, f64::from(trials), z).expect("trials");
                let wide = proportion(events, f64::from(trials), z + 0.5).expect("trials");
                prop_assert!(wide.lower <= narrow.lower + 1e-12);
                prop_assert!(wide.upper + 1e-12 >= narrow.upper);
            }

            #[test]
            fn mover_holds_its_estimate(
                a in 0u32..500, n in 1u32..500, b in 0u32..500, m in 1u32..500,
                k in 0.0f64..3.0, c in -0.5f64..0.5,
            ) {
                let (a, b) = (a.min(n), b.min(m));
                let z = 2.05;
                let i = mover(
                    &[
                        Term { coefficient: 1.0, interval: proportion(f64::from(a), f64::from(n), z).expect("n") },
                        Term { coefficient: -k, interval: proportion(f64::from(b), f64::from(m), z).expect("m") },
                    ],
                    c,
                );
                prop_assert!(i.lower <= i.estimate + 1e-12 && i.estimate <= i.upper + 1e-12);
            }

            #[test]
            fn binned_u_is_the_rank_sum_u_of_the_same_values(
                x in prop::collection::vec(0u8..20, 1..60),
                y in prop::collection::vec(0u8..20, 1..60),
            ) {
                let hist = |v: &[u8]| Histogram::from_bins(v.iter().map(|&value| crate::judge::Bin {
                    lower: f64::from(value),
                    upper: f64::from(value),
                    count: 1.0,
                }));
                let binned = mann_whitney_binned(&hist(&x), &hist(&y), 1.0).expect("values");
                let xs: Vec<f64> = x.iter().map(|v| f64::from(*v)).collect();
                let ys: Vec<f64> = y.iter().map(|v| f64::from(*v)).collect();
                let raw = mann_whitney_u(&xs, &ys, Alternative::Greater).expect("values");
                prop_assert!((binned.u - raw.u).abs() < 1e-9);
                prop_assert!((0.0..=1.0).contains(&binned.p_greater));
                prop_assert!((0.0..=1.0).contains(&binned.p_less));
            }
        }
    }
}
