//! The Mann-Whitney U test (Wilcoxon rank-sum test), written out so the core needs no
//! statistics crate.
//!
//! Why this test: canary metrics such as latency are skewed and heavy-tailed, so a test on
//! means (Student's t) is thrown off by a few slow requests. Mann-Whitney compares ranks
//! only: it asks whether a value drawn from the candidate tends to be larger than one
//! drawn from stable, whatever the shape of the distributions. Kayenta judges canaries the
//! same way.
//!
//! Without ties and with small samples the p-value is exact (the permutation distribution
//! of U, counted with Gaussian binomial coefficients). Otherwise it comes from the normal
//! approximation with tie correction and continuity correction. The normal tail uses a
//! Chebyshev-fitted `erfc` (Numerical Recipes' `erfcc`), fractional error below 1.2e-7.

use std::cmp::Ordering;

use super::normal::{normal_cdf, normal_sf};

/// Which difference the test looks for. `Greater` means the candidate tends to be
/// **larger** than stable; pick it for metrics where higher is worse (latency, errors).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Alternative {
    /// The candidate tends to be larger than stable (one-sided).
    Greater,
    /// The candidate tends to be smaller than stable (one-sided).
    Less,
    /// The candidate differs from stable either way (two-sided).
    TwoSided,
}

/// The outcome of a Mann-Whitney U test of candidate against stable.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct MannWhitney {
    /// The candidate's U statistic: the number of (candidate, stable) pairs in which the
    /// candidate is larger, ties counting one half. Between 0 and `n1 * n2`; `n1 * n2 / 2`
    /// when neither tends to be larger.
    pub u: f64,
    /// U standardised by the normal approximation (tie-corrected, continuity-corrected
    /// toward the mean): positive when the candidate tends to be larger. Reported even when
    /// the p-value is exact, as a sense of the effect's strength; 0 when all values are
    /// equal.
    pub z: f64,
    /// The probability, were both samples from the same distribution, of a U at least as
    /// extreme in the direction of the [`Alternative`]. Between 0 and 1: small means the
    /// difference is real.
    pub p_value: f64,
    /// Whether `p_value` comes from the exact distribution of U (no ties, small samples)
    /// rather than the normal approximation.
    pub exact: bool,
}

/// Above this many (candidate, stable) pairs, the exact distribution is not computed: it
/// costs `min(n1, n2) * n1 * n2` steps, and the normal approximation is already close.
const EXACT_MAX_PAIRS: usize = 10_000;

/// Runs the Mann-Whitney U test of `candidate` against `stable`.
///
/// NaN values are dropped first (they have no rank); infinities are ordinary extreme
/// values. Returns `None` when either sample is empty after that, since nothing can be
/// said. The p-value is exact when there are no ties, at most 10,000 pairs
/// and few enough orderings to count in 128-bit integers (e.g. 8 against 1,000, or 50
/// against 50), and from the normal approximation otherwise, where it is already close.
pub fn mann_whitney_u(
    candidate: &[f64],
    stable: &[f64],
    alternative: Alternative,
) -> Option<MannWhitney> {
    let mut values: Vec<(f64, bool)> = candidate
        .iter()
        .map(|&v| (v, true))
        .chain(stable.iter().map(|&v| (v, false)))
        .filter(|(v, _)| !v.is_nan())
        .collect();
    let n1 = values
        .iter()
        .filter(|(_, is_candidate)| *is_candidate)
        .count();
    let n2 = values.len() - n1;
    if n1 == 0 || n2 == 0 {
        return None;
    }
    // No NaN is left, so `partial_cmp` is total here (and -0.0 ties with 0.0).
    values.sort_by(|a, b| a.0.partial_cmp(&b.0).unwrap_or(Ordering::Equal));

    // Ranks 1..=n, ties sharing the average of the ranks they span.
    let mut rank_sum = 0.0;
    let mut tie_term = 0.0; // sum of t^3 - t over groups of t tied values
    let mut start = 0;
    while start < values.len() {
        let mut end = start + 1;
        while end < values.len() && values[end].0 == values[start].0 {
            end += 1;
        }
        let t = (end - start) as f64;
        let average_rank = (start + 1 + end) as f64 / 2.0;
        let in_candidate = values[start..end].iter().filter(|(_, c)| *c).count();
        rank_sum += average_rank * in_candidate as f64;
        tie_term += t * t * t - t;
        start = end;
    }

    let (n1f, n2f) = (n1 as f64, n2 as f64);
    let n = n1f + n2f;
    let u = (rank_sum - n1f * (n1f + 1.0) / 2.0).clamp(0.0, n1f * n2f);
    let mean = n1f * n2f / 2.0;
    let variance = n1f * n2f / 12.0 * ((n + 1.0) - tie_term / (n * (n - 1.0)));
    let sd = variance.max(0.0).sqrt();

    let diff = u - mean;
    let (z, normal_p) = if sd > 0.0 {
        match alternative {
            Alternative::Greater => {
                let z = (diff - 0.5) / sd;
                (z, normal_sf(z))
            }
            Alternative::Less => {
                let z = (diff + 0.5) / sd;
                (z, normal_cdf(z))
            }
            Alternative::TwoSided => {
                let z = diff.signum() * (diff.abs() - 0.5).max(0.0) / sd;
                (z, 2.0 * normal_sf(z.abs()))
            }
        }
    } else {
        // Every value is the same: U is always its mean, nothing is more extreme.
        (0.0, 1.0)
    };

    let exact_p = if tie_term == 0.0 {
        exact_p_value(n1, n2, u, alternative)
    } else {
        None
    };
    let exact = exact_p.is_some();
    let p_value = exact_p.unwrap_or(normal_p).clamp(0.0, 1.0);
    Some(MannWhitney {
        u,
        z,
        p_value,
        exact,
    })
}

/// The exact p-value of `u` when there are no ties, or `None` when the samples are too
/// large for it.
///
/// Under the null hypothesis every one of the `C(n1+n2, n1)` orderings of the two samples
/// is equally likely, and the number of orderings with U = k is the coefficient of `q^k` in
/// the Gaussian binomial coefficient `[n1+n2 choose n1]_q`. That polynomial is built with
/// `[n+i choose i]_q = [n+i-1 choose i-1]_q * (1 - q^(n+i)) / (1 - q^i)`, in exact integers.
fn exact_p_value(n1: usize, n2: usize, u: f64, alternative: Alternative) -> Option<f64> {
    let pairs = n1.checked_mul(n2)?;
    if pairs > EXACT_MAX_PAIRS {
        return None;
    }
    let (small, large) = (n1.min(n2), n1.max(n2));
    // Every intermediate coefficient is bounded by the final total C(n1+n2, small); make
    // sure that fits with room to spare.
    let mut total: i128 = 1;
    for i in 1..=small {
        total = total.checked_mul(i128::try_from(large + i).ok()?)? / i128::try_from(i).ok()?;
        if total > i128::MAX / 8 {
            return None;
        }
    }

    let mut counts: Vec<i128> = vec![0; pairs + 1];
    counts[0] = 1;
    let mut degree = 0; // current polynomial degree: i * large after step i
    for i in 1..=small {
        // Multiply by (1 - q^(large+i)); descending so each term reads the old value.
        let shift = large + i;
        let new_degree = degree + large;
        for k in (shift..=new_degree.min(pairs)).rev() {
            counts[k] -= counts[k - shift];
        }
        // Divide by (1 - q^i): the quotient's coefficients are running sums with stride i.
        for k in i..=new_degree.min(pairs) {
            counts[k] += counts[k - i];
        }
        degree = new_degree;
    }

    // No ties, so U is a whole number.
    let observed = u.round().clamp(0.0, pairs as f64) as usize;
    let at_most: i128 = counts[..=observed].iter().sum();
    let at_least: i128 = counts[observed..].iter().sum();
    let total = total as f64;
    let p = match alternative {
        Alternative::Greater => at_least as f64 / total,
        Alternative::Less => at_most as f64 / total,
        Alternative::TwoSided => 2.0 * (at_least.min(at_most) as f64) / total,
    };
    Some(p.min(1.0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::judge::normal::erfc;
    use proptest::prelude::*;

    #[track_caller]
    fn assert_close(actual: f64, expected: f64, relative: f64) {
        let error = ((actual - expected) / expected).abs();
        assert!(
            error <= relative,
            "{actual} vs expected {expected}: relative error {error:e} > {relative:e}"
        );
    }

    #[test]
    fn erfc_matches_reference_values_to_1e7() {
        // Reference values from mpmath at 30 digits.
        for (x, expected) in [
            (0.0, 1.0),
            (0.1, 0.887537083981715),
            (0.5, 0.4795001221869535),
            (1.0, 0.157_299_207_050_285_13),
            (1.5, 0.033_894_853_524_689_273),
            (2.0, 0.004677734981047266),
            (3.0, 2.209049699858544e-5),
            (4.0, 1.541725790028002e-8),
            (5.0, 1.537459794428035e-12),
            (6.0, 2.151_973_671_249_891_3e-17),
            (10.0, 2.088487583762545e-45),
            (-1.0, 1.842700792949715),
            (-3.0, 1.999_977_909_503_001_4),
        ] {
            assert_close(erfc(x), expected, 1.2e-7);
        }
        assert_close(normal_cdf(1.96), 0.975_002_104_851_779_6, 1e-7);
        assert_close(normal_sf(1.96), 1.0 - 0.975_002_104_851_779_6, 1e-6);
    }

    #[test]
    fn u_with_ties_matches_hand_count() {
        // Pairs where the candidate is larger, ties one half:
        // 1 beats nothing; each 2 ties the stable 2 (0.5 each); 3 beats 2 and ties 3 (1.5).
        let result = mann_whitney_u(
            &[1.0, 2.0, 2.0, 3.0],
            &[2.0, 3.0, 4.0],
            Alternative::Greater,
        );
        let result = result.expect("both samples have values");
        assert_eq!(result.u, 2.5);
        assert!(!result.exact, "ties force the normal approximation");
        // The stable sample's U is the complement.
        let reverse = mann_whitney_u(&[2.0, 3.0, 4.0], &[1.0, 2.0, 2.0, 3.0], Alternative::Less);
        assert_eq!(reverse.map(|r| r.u), Some(12.0 - 2.5));
    }

    #[test]
    fn shifted_samples_with_ties_give_the_normal_approximation_p_value() {
        // candidate 1..=8, stable 6..=13: ranks give U = 4.5; three pairs of ties, so
        // sigma^2 = 64/12 * (17 - 18/240) and z = (4.5 - 32 + 0.5) / sigma = -2.8418.
        let candidate: Vec<f64> = (1..=8).map(f64::from).collect();
        let stable: Vec<f64> = candidate.iter().map(|v| v + 5.0).collect();
        let less = mann_whitney_u(&candidate, &stable, Alternative::Less).expect("samples");
        assert_eq!(less.u, 4.5);
        assert_close(less.z, -2.841_842_870_574_299, 1e-12);
        assert_close(less.p_value, 0.002_242_679_609_210_231_5, 1e-6);
        let two = mann_whitney_u(&candidate, &stable, Alternative::TwoSided).expect("samples");
        assert_close(two.p_value, 0.004_485_359_218_420_463, 1e-6);
        let greater = mann_whitney_u(&candidate, &stable, Alternative::Greater).expect("samples");
        assert!(greater.p_value > 0.99, "{greater:?}");
    }

    #[test]
    fn fully_separated_samples_give_the_exact_smallest_p_value() {
        // No ties: every one of the C(16, 8) orderings is equally likely and only one puts
        // all of the candidate below stable.
        let candidate: Vec<f64> = (1..=8).map(f64::from).collect();
        let stable: Vec<f64> = candidate.iter().map(|v| v + 10.0).collect();
        let less = mann_whitney_u(&candidate, &stable, Alternative::Less).expect("samples");
        assert!(less.exact);
        assert_eq!(less.u, 0.0);
        assert_close(less.p_value, 1.0 / 12_870.0, 1e-12);
        let two = mann_whitney_u(&candidate, &stable, Alternative::TwoSided).expect("samples");
        assert_close(two.p_value, 2.0 / 12_870.0, 1e-12);
        let greater = mann_whitney_u(&candidate, &stable, Alternative::Greater).expect("samples");
        assert_eq!(greater.p_value, 1.0);
    }

    #[test]
    fn exact_distribution_matches_hand_enumeration() {
        // n1 = n2 = 3: of the 20 orderings, U = 0..=9 occur 1, 1, 2, 3, 3, 3, 3, 2, 1, 1
        // times. candidate [1, 2, 4] vs [3, 5, 6]: only 4 > 3, so U = 1.
        let candidate = [1.0, 2.0, 4.0];
        let stable = [3.0, 5.0, 6.0];
        let less = mann_whitney_u(&candidate, &stable, Alternative::Less).expect("samples");
        assert!(less.exact);
        assert_eq!(less.u, 1.0);
        assert_close(less.p_value, 2.0 / 20.0, 1e-12);
        let greater = mann_whitney_u(&candidate, &stable, Alternative::Greater).expect("samples");
        assert_close(greater.p_value, 19.0 / 20.0, 1e-12);
        let two = mann_whitney_u(&candidate, &stable, Alternative::TwoSided).expect("samples");
        assert_close(two.p_value, 4.0 / 20.0, 1e-12);
        // Unequal sizes: candidate [10] vs stable [1, 2, 3]: U = 3, the maximum; P = 1/4.
        let greater =
            mann_whitney_u(&[10.0], &[1.0, 2.0, 3.0], Alternative::Greater).expect("samples");
        assert_eq!(greater.u, 3.0);
        assert_close(greater.p_value, 0.25, 1e-12);
    }

    #[test]
    fn exact_and_normal_agree_on_larger_samples() {
        // 40 against 40 interleaved values: the normal approximation is good here, so the
        // exact answer must be near it.
        let candidate: Vec<f64> = (0..40).map(|i| f64::from(i) + 0.6).collect();
        let stable: Vec<f64> = (0..40).map(f64::from).collect();
        let result = mann_whitney_u(&candidate, &stable, Alternative::Greater).expect("samples");
        assert!(result.exact);
        let normal = normal_sf(result.z);
        assert!(
            (result.p_value - normal).abs() < 0.01,
            "{result:?} vs {normal}"
        );
    }

    #[test]
    fn identical_samples_have_p_near_one_two_sided_and_near_half_one_sided() {
        let sample: Vec<f64> = (1..=20).map(f64::from).collect();
        let two = mann_whitney_u(&sample, &sample, Alternative::TwoSided).expect("samples");
        assert_eq!(two.u, 200.0);
        assert_eq!(two.p_value, 1.0);
        let greater = mann_whitney_u(&sample, &sample, Alternative::Greater).expect("samples");
        assert!(
            greater.p_value > 0.5 && greater.p_value < 0.55,
            "{greater:?}"
        );
        let less = mann_whitney_u(&sample, &sample, Alternative::Less).expect("samples");
        assert!(less.p_value > 0.5 && less.p_value < 0.55, "{less:?}");
    }

    #[test]
    fn all_values_equal_gives_p_one() {
        let result = mann_whitney_u(&[3.0; 5], &[3.0; 7], Alternative::Greater).expect("samples");
        assert_eq!(result.u, 17.5);
        assert_eq!(result.z, 0.0);
        assert_eq!(result.p_value, 1.0);
    }

    #[test]
    fn empty_or_all_nan_sample_gives_none() {
        assert_eq!(mann_whitney_u(&[], &[1.0], Alternative::TwoSided), None);
        assert_eq!(mann_whitney_u(&[1.0], &[], Alternative::TwoSided), None);
        assert_eq!(
            mann_whitney_u(&[f64::NAN], &[1.0], Alternative::TwoSided),
            None
        );
    }

    #[test]
    fn nan_values_are_dropped_and_negative_zero_ties_zero() {
        let with_nan = mann_whitney_u(&[1.0, f64::NAN, 2.0], &[0.0, 3.0], Alternative::Greater);
        let without = mann_whitney_u(&[1.0, 2.0], &[0.0, 3.0], Alternative::Greater);
        assert_eq!(with_nan, without);
        let zeros = mann_whitney_u(&[-0.0], &[0.0], Alternative::TwoSided).expect("samples");
        assert_eq!(zeros.u, 0.5);
        assert_eq!(zeros.p_value, 1.0);
    }

    #[test]
    fn exact_distribution_covers_lopsided_and_medium_samples() {
        let few: Vec<f64> = (0..8).map(|i| f64::from(i) * 100.0 + 0.5).collect();
        let many: Vec<f64> = (0..1000).map(f64::from).collect();
        let lopsided = mann_whitney_u(&few, &many, Alternative::TwoSided).expect("samples");
        assert!(lopsided.exact, "{lopsided:?}");
        let fifty: Vec<f64> = (0..50).map(|i| f64::from(i) + 0.5).collect();
        let medium = mann_whitney_u(&fifty, &many[..50], Alternative::Greater).expect("samples");
        assert!(medium.exact, "{medium:?}");
        assert!(
            (medium.p_value - normal_sf(medium.z)).abs() < 0.01,
            "{medium:?}"
        );
    }

    #[test]
    fn large_samples_use_the_normal_approximation() {
        let candidate: Vec<f64> = (0..200).map(|i| f64::from(i) + 0.5).collect();
        let stable: Vec<f64> = (0..200).map(f64::from).collect();
        let result = mann_whitney_u(&candidate, &stable, Alternative::TwoSided).expect("samples");
        assert!(!result.exact);
        assert!(result.p_value > 0.5, "{result:?}");
    }

    fn finite() -> impl Strategy<Value = f64> {
        prop_oneof![
            // Small whole numbers, to make ties common.
            (-4i32..4).prop_map(f64::from),
            prop::num::f64::POSITIVE
                | prop::num::f64::NEGATIVE
                | prop::num::f64::NORMAL
                | prop::num::f64::SUBNORMAL
                | prop::num::f64::ZERO,
        ]
    }

    fn alternative() -> impl Strategy<Value = Alternative> {
        prop_oneof![
            Just(Alternative::Greater),
            Just(Alternative::Less),
            Just(Alternative::TwoSided)
        ]
    }

    proptest! {
        #[test]
        fn p_value_is_a_probability_and_u_is_in_range(
            candidate in prop::collection::vec(finite(), 0..60),
            stable in prop::collection::vec(finite(), 0..60),
            alternative in alternative(),
        ) {
            match mann_whitney_u(&candidate, &stable, alternative) {
                None => prop_assert!(candidate.is_empty() || stable.is_empty()),
                Some(result) => {
                    let pairs = (candidate.len() * stable.len()) as f64;
                    prop_assert!((0.0..=1.0).contains(&result.p_value), "{result:?}");
                    prop_assert!((0.0..=pairs).contains(&result.u), "{result:?}");
                    prop_assert!(result.z.is_finite(), "{result:?}");
                }
            }
        }

        #[test]
        fn u_of_both_sides_adds_up_to_the_number_of_pairs(
            candidate in prop::collection::vec(finite(), 1..30),
            stable in prop::collection::vec(finite(), 1..30),
        ) {
            let forward = mann_whitney_u(&candidate, &stable, Alternative::Greater);
            let backward = mann_whitney_u(&stable, &candidate, Alternative::Less);
            let (Some(forward), Some(backward)) = (forward, backward) else {
                return Err(TestCaseError::fail("non-empty samples gave no result"));
            };
            let pairs = (candidate.len() * stable.len()) as f64;
            prop_assert!((forward.u + backward.u - pairs).abs() < 1e-9);
            // Greater for the candidate is Less for stable seen from the other side.
            prop_assert!((forward.p_value - backward.p_value).abs() < 1e-12);
        }
    }
}
