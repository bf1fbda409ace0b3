//! Coarser levels of the proxy's log-linear latency buckets, for an analysis whose pooled
//! histograms outgrow what a rollout's persisted state may hold.
//!
//! Level 0 is the proxy's own layout ([`latency_bucket`]): exact below 64 µs, 64 buckets per
//! power of two. Level `k` merges `2^k` neighbouring buckets on fixed boundaries, down to
//! one bucket per power of two at [`MAX_LEVEL`]. The levels nest: every bucket of level `k`
//! lies inside exactly one of level `k + 1`. So coarsening is exact (counts add up, no value
//! moves to a bucket that does not contain it), both versions land on the same boundaries
//! (neither is favoured by where its buckets happen to end), and a window merged into a
//! coarsened histogram after it is mapped to the same level leaves no overlapping buckets.
//!
//! Only histograms in this layout are coarsened. Another layout (a Prometheus histogram's
//! `le` bounds, a recording's) is left as it came: its buckets are few and fixed.

use super::evidence::{Bin, Histogram, latency_bucket};

/// The coarsest level: one bucket per power of two (and 64 µs wide below 64 µs).
pub const MAX_LEVEL: u8 = 6;

/// The bounds `[lower, upper)` in microseconds of the level-`level` bucket that holds
/// `micros`.
pub fn cell(micros: u64, level: u8) -> (u64, u64) {
    let level = u32::from(level.min(MAX_LEVEL));
    let index = u64::from(latency_bucket(micros));
    if index < 64 {
        let lower = index >> level << level;
        return (lower, lower + (1 << level));
    }
    let shift = (index - 64) / 64;
    let mantissa = (64 + (index - 64) % 64) >> level << level;
    (mantissa << shift, (mantissa + (1 << level)) << shift)
}

/// Seconds as the proxy's histograms write a bound of `micros` microseconds.
pub fn seconds(micros: u64) -> f64 {
    micros as f64 / 1e6
}

/// The microseconds a bound of `seconds` was written from, if it was one.
fn micros(seconds: f64) -> Option<u64> {
    if !(0.0..1e7).contains(&seconds) {
        return None;
    }
    let micros = (seconds * 1e6).round() as u64;
    (self::seconds(micros) == seconds).then_some(micros)
}

/// The level of `bin` when it is a bucket of some level, `None` when it is not on the
/// grid. The finest level that fits wins (a bucket can be one at several levels only when
/// they coincide).
pub fn level_of(bin: &Bin) -> Option<u8> {
    let (lower, upper) = (micros(bin.lower)?, micros(bin.upper)?);
    (0..=MAX_LEVEL).find(|&level| cell(lower, level) == (lower, upper))
}

/// Whether every bucket of `histogram` is on the grid (an empty one is).
pub fn is_on_grid(histogram: &Histogram) -> bool {
    histogram.bins().iter().all(|b| level_of(b).is_some())
}

/// `histogram` with every bucket finer than `level` merged into its level-`level` bucket.
/// A histogram not on the grid comes back unchanged.
pub fn to_level(histogram: &Histogram, level: u8) -> Histogram {
    if level == 0 || !is_on_grid(histogram) {
        return histogram.clone();
    }
    Histogram::from_bins(histogram.bins().iter().map(|bin| {
        match (micros(bin.lower), level_of(bin)) {
            (Some(lower), Some(own)) if own < level => {
                let (lower, upper) = cell(lower, level);
                Bin {
                    lower: seconds(lower),
                    upper: seconds(upper),
                    count: bin.count,
                }
            }
            _ => *bin,
        }
    }))
}

/// How many buckets `histogram` would have at `level` (its own count when it is not on the
/// grid).
pub fn buckets_at(histogram: &Histogram, level: u8) -> usize {
    if !is_on_grid(histogram) {
        return histogram.bins().len();
    }
    let mut cells: Vec<u64> = histogram
        .bins()
        .iter()
        .filter_map(|b| micros(b.lower))
        .map(|lower| cell(lower, level).0)
        .collect();
    cells.dedup();
    cells.len()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::judge::evidence::latency_bucket_bounds;

    #[test]
    fn the_levels_nest_and_start_at_the_proxys_buckets() {
        for index in 0..latency_bucket((1 << 36) - 1) {
            let (lower, upper) = latency_bucket_bounds(index);
            assert_eq!(cell(lower, 0), (lower, upper), "bucket {index}");
            for level in 0..MAX_LEVEL {
                let (a, b) = cell(lower, level);
                let (c, d) = cell(lower, level + 1);
                assert!(
                    c <= a && b <= d,
                    "{index} at {level}: [{a},{b}) in [{c},{d})"
                );
                assert!(c <= lower && upper <= d);
            }
        }
        // One bucket per power of two at the coarsest level.
        assert_eq!(cell(1_500, MAX_LEVEL), (1_024, 2_048));
        assert_eq!(cell(10, MAX_LEVEL), (0, 64));
    }

    #[test]
    fn coarsening_keeps_the_counts_and_both_versions_share_boundaries() {
        let fine = |values: &[u64]| {
            let mut buckets = std::collections::BTreeMap::<u16, f64>::new();
            for &v in values {
                *buckets.entry(latency_bucket(v)).or_default() += 1.0;
            }
            Histogram::from_log_linear(buckets)
        };
        let stable: Vec<u64> = (0..2_000).map(|i| 1_000 + i * 37).collect();
        let candidate: Vec<u64> = (0..50).map(|i| 1_200 + i * 991).collect();
        for level in 1..=MAX_LEVEL {
            let (s, c) = (
                to_level(&fine(&stable), level),
                to_level(&fine(&candidate), level),
            );
            assert_eq!(s.total(), 2_000.0);
            assert_eq!(c.total(), 50.0);
            for bin in s.bins().iter().chain(c.bins()) {
                assert_eq!(level_of(bin), Some(level), "{bin:?}");
            }
            assert_eq!(buckets_at(&fine(&stable), level), s.bins().len());
            // Coarsening in two steps is coarsening in one.
            assert_eq!(to_level(&to_level(&fine(&stable), 1), level), s);
            // A fine window merged into a coarse histogram leaves no overlap once mapped.
            let mut pooled = s.clone();
            pooled.merge(&to_level(&fine(&candidate), level));
            for pair in pooled.bins().windows(2) {
                assert!(pair[0].upper <= pair[1].lower, "{pair:?}");
            }
        }
    }

    #[test]
    fn other_layouts_are_left_alone() {
        let prometheus =
            Histogram::from_cumulative([(0.005, 3.0), (0.1, 9.0), (f64::INFINITY, 10.0)]);
        assert!(!is_on_grid(&prometheus));
        assert_eq!(to_level(&prometheus, 3), prometheus);
        assert_eq!(buckets_at(&prometheus, 3), prometheus.bins().len());
    }
}
