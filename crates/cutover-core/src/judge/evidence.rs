//! Evidence: what a comparison rests on. Per version and window, the request and error
//! counts and a latency histogram, rather than summaries such as a p99 or an error rate.
//!
//! Summaries of unequal samples are not comparable: the p99 of 30 requests is biased low
//! against the p99 of 3,000, and averaging per-second p99s compares traffic volumes rather
//! than versions. Counts and histograms add up exactly, so the evidence of a window, or of
//! every window of an analysis, is one sample per version however the traffic was split,
//! and the tests in [`super::inference`] judge it with a stated confidence.
//!
//! Counts are `f64`: Prometheus's `increase()` extrapolates and returns fractions. Every
//! test here accepts fractional counts.

use serde::{Deserialize, Serialize};

/// Values below this many microseconds get a bucket each; above, every power of two is
/// split into this many equal buckets.
const SUB_BUCKETS: u64 = 64;
/// The largest latency the log-linear scheme tells apart (about 19 hours); slower
/// requests share its last bucket.
const MAX_MICROS: u64 = (1 << 36) - 1;

/// The index of the log-linear bucket holding a latency of `micros` microseconds.
///
/// The scheme is HDR-like: exact below 64 µs, then 64 equal buckets per power of two, so a
/// bucket is at most 1/64 (1.6 %) of its lower bound wide and its midpoint is within 0.8 % of
/// any value in it: fine enough to see a 5 % shift. Indices stay below 2,048, so they fit a
/// `u16`, and a bucket's bounds need no table ([`latency_bucket_bounds`]).
pub fn latency_bucket(micros: u64) -> u16 {
    let v = micros.min(MAX_MICROS);
    if v < SUB_BUCKETS {
        return v as u16;
    }
    let exponent = 63 - u64::from(v.leading_zeros());
    let shift = exponent - 6;
    let mantissa = v >> shift;
    (SUB_BUCKETS + shift * SUB_BUCKETS + (mantissa - SUB_BUCKETS)) as u16
}

/// The bounds `[lower, upper)` in microseconds of the bucket `index` of [`latency_bucket`].
pub fn latency_bucket_bounds(index: u16) -> (u64, u64) {
    let i = u64::from(index);
    if i < SUB_BUCKETS {
        return (i, i + 1);
    }
    let shift = (i - SUB_BUCKETS) / SUB_BUCKETS;
    let mantissa = SUB_BUCKETS + (i - SUB_BUCKETS) % SUB_BUCKETS;
    (mantissa << shift, (mantissa + 1) << shift)
}

/// One bucket of a [`Histogram`]: `count` values between `lower` and `upper` seconds.
///
/// `lower == upper` stands for values of at least `lower` with no known upper bound (the
/// `+Inf` bucket of a Prometheus histogram): they are taken to be `lower`, which understates
/// them, never overstates.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Bin {
    /// Lower bound in seconds.
    pub lower: f64,
    /// Upper bound in seconds.
    pub upper: f64,
    /// How many values fell in the bucket; may be fractional.
    pub count: f64,
}

impl Bin {
    /// The value that stands for every value in the bucket: its midpoint.
    pub fn value(&self) -> f64 {
        (self.lower + self.upper) / 2.0
    }
}

/// A latency histogram: buckets sorted by their bounds, none empty.
///
/// Any bucket layout is accepted (the proxy's log-linear one, a Prometheus histogram's
/// `le` bounds, a recording's), so every provider that can give evidence gives it in its
/// own resolution; the tests are exact up to that resolution.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Histogram {
    bins: Vec<Bin>,
}

impl Histogram {
    /// A histogram of the given buckets, in any order. Buckets with invalid bounds or a
    /// count that is not positive are dropped; buckets with the same bounds are added up.
    pub fn from_bins(bins: impl IntoIterator<Item = Bin>) -> Self {
        let mut bins: Vec<Bin> = bins
            .into_iter()
            .filter(|b| {
                b.lower.is_finite()
                    && b.upper.is_finite()
                    && b.lower >= 0.0
                    && b.upper >= b.lower
                    && b.count.is_finite()
                    && b.count > 0.0
            })
            .collect();
        bins.sort_by(|a, b| {
            a.lower
                .total_cmp(&b.lower)
                .then(a.upper.total_cmp(&b.upper))
        });
        let mut merged: Vec<Bin> = Vec::with_capacity(bins.len());
        for bin in bins {
            match merged.last_mut() {
                Some(last) if last.lower == bin.lower && last.upper == bin.upper => {
                    last.count += bin.count;
                }
                _ => merged.push(bin),
            }
        }
        Histogram { bins: merged }
    }

    /// A histogram from the proxy's log-linear bucket indices and counts.
    pub fn from_log_linear(buckets: impl IntoIterator<Item = (u16, f64)>) -> Self {
        Histogram::from_bins(buckets.into_iter().map(|(index, count)| {
            let (lower, upper) = latency_bucket_bounds(index);
            Bin {
                lower: lower as f64 / 1e6,
                upper: upper as f64 / 1e6,
                count,
            }
        }))
    }

    /// A histogram from cumulative `le` buckets as Prometheus exports them: `(le, count of
    /// values <= le)`, `le` possibly infinite. Counts that go down (a counter reset inside
    /// the window) are taken as zero for that bucket.
    pub fn from_cumulative(buckets: impl IntoIterator<Item = (f64, f64)>) -> Self {
        let mut sorted: Vec<(f64, f64)> = buckets
            .into_iter()
            .filter(|(le, count)| !le.is_nan() && count.is_finite())
            .collect();
        sorted.sort_by(|a, b| a.0.total_cmp(&b.0));
        let mut bins = Vec::with_capacity(sorted.len());
        let (mut lower, mut below) = (0.0_f64, 0.0_f64);
        for (le, cumulative) in sorted {
            let count = cumulative - below;
            let upper = if le.is_finite() { le } else { lower };
            bins.push(Bin {
                lower,
                upper: upper.max(lower),
                count,
            });
            below = below.max(cumulative);
            if le.is_finite() {
                lower = le.max(0.0);
            }
        }
        Histogram::from_bins(bins)
    }

    /// The buckets, sorted.
    pub fn bins(&self) -> &[Bin] {
        &self.bins
    }

    /// Whether no value was recorded.
    pub fn is_empty(&self) -> bool {
        self.bins.is_empty()
    }

    /// How many values were recorded.
    pub fn total(&self) -> f64 {
        self.bins.iter().map(|b| b.count).sum()
    }

    /// Adds another histogram's values to this one.
    pub fn merge(&mut self, other: &Histogram) {
        if other.bins.is_empty() {
            return;
        }
        let bins = std::mem::take(&mut self.bins);
        *self = Histogram::from_bins(bins.into_iter().chain(other.bins.iter().copied()));
    }

    /// The `q` quantile (0 < q < 1), interpolated linearly inside its bucket as Prometheus's
    /// `histogram_quantile` does; `None` when empty.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        let total = self.total();
        if total <= 0.0 || !(0.0..=1.0).contains(&q) {
            return None;
        }
        let rank = q * total;
        let mut seen = 0.0;
        for bin in &self.bins {
            if seen + bin.count >= rank {
                let inside = ((rank - seen) / bin.count).clamp(0.0, 1.0);
                return Some(bin.lower + (bin.upper - bin.lower) * inside);
            }
            seen += bin.count;
        }
        self.bins.last().map(|b| b.upper)
    }

    /// How many values are above `threshold`, a bucket that straddles it counted in
    /// proportion (values taken as spread evenly inside a bucket).
    pub fn count_above(&self, threshold: f64) -> f64 {
        self.bins
            .iter()
            .map(|bin| {
                if bin.lower >= threshold {
                    if bin.upper == bin.lower && bin.lower == threshold {
                        0.0
                    } else {
                        bin.count
                    }
                } else if bin.upper <= threshold {
                    0.0
                } else {
                    bin.count * (bin.upper - threshold) / (bin.upper - bin.lower)
                }
            })
            .sum()
    }

    /// Whether an open-ended bucket (values of at least its lower bound, upper bound
    /// unknown: a Prometheus `+Inf` bucket) holds values that may lie on either side of
    /// `threshold`: then no count above or below it can be trusted.
    pub fn open_at(&self, threshold: f64) -> bool {
        self.bins
            .iter()
            .any(|b| b.upper == b.lower && b.lower <= threshold && b.count > 0.0)
    }

    /// How many values are below `threshold`: the complement of [`Histogram::count_above`].
    pub fn count_below(&self, threshold: f64) -> f64 {
        (self.total() - self.count_above(threshold)).max(0.0)
    }
}

/// One version's traffic over a window: what the statistical tests judge.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Evidence {
    /// Requests completed.
    pub requests: f64,
    /// Of those, failures (5xx answers and upstream failures).
    pub errors: f64,
    /// The requests' latencies (upstream failures without a latency are not in it).
    #[serde(default, skip_serializing_if = "Histogram::is_empty")]
    pub latency: Histogram,
    /// How many seconds of traffic this covers, for "at the current rate".
    #[serde(default)]
    pub seconds: f64,
}

impl Evidence {
    /// Adds another window's evidence of the same version.
    pub fn merge(&mut self, other: &Evidence) {
        self.requests += other.requests;
        self.errors += other.errors;
        self.latency.merge(&other.latency);
        self.seconds += other.seconds;
    }

    /// The observed error rate; `None` without requests.
    pub fn error_rate(&self) -> Option<f64> {
        (self.requests > 0.0).then(|| (self.errors / self.requests).clamp(0.0, 1.0))
    }

    /// Requests per second over the covered time; `None` when no time is known.
    pub fn rate(&self) -> Option<f64> {
        (self.seconds > 0.0).then(|| self.requests / self.seconds)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_linear_buckets_are_contiguous_and_within_two_percent() {
        let mut previous_upper = 0;
        for index in 0..latency_bucket(MAX_MICROS) {
            let (lower, upper) = latency_bucket_bounds(index);
            assert_eq!(
                lower, previous_upper,
                "bucket {index} starts where the last ended"
            );
            assert!(upper > lower);
            if lower >= SUB_BUCKETS {
                let width = (upper - lower) as f64 / lower as f64;
                assert!(
                    width <= 1.0 / 64.0 + 1e-12,
                    "bucket {index} is {width} wide"
                );
            }
            previous_upper = upper;
        }
        for micros in [
            0, 1, 63, 64, 65, 127, 128, 1_000, 12_345, 999_999, 60_000_000,
        ] {
            let (lower, upper) = latency_bucket_bounds(latency_bucket(micros));
            assert!(
                lower <= micros && micros < upper,
                "{micros} in [{lower}, {upper})"
            );
        }
        assert!(latency_bucket(u64::MAX) < 2048);
    }

    #[test]
    fn cumulative_buckets_become_bins_and_inf_counts_at_the_last_bound() {
        let h = Histogram::from_cumulative([
            (0.1, 10.0),
            (0.5, 30.0),
            (f64::INFINITY, 32.0),
            (1.0, 30.0),
        ]);
        assert_eq!(h.total(), 32.0);
        let bins = h.bins();
        assert_eq!(bins.len(), 3);
        assert_eq!(
            (bins[0].lower, bins[0].upper, bins[0].count),
            (0.0, 0.1, 10.0)
        );
        assert_eq!(
            (bins[1].lower, bins[1].upper, bins[1].count),
            (0.1, 0.5, 20.0)
        );
        assert_eq!(
            (bins[2].lower, bins[2].upper, bins[2].count),
            (1.0, 1.0, 2.0)
        );
    }

    #[test]
    fn quantiles_and_exceedances_interpolate_inside_buckets() {
        let h = Histogram::from_bins([
            Bin {
                lower: 0.0,
                upper: 1.0,
                count: 50.0,
            },
            Bin {
                lower: 1.0,
                upper: 2.0,
                count: 50.0,
            },
        ]);
        assert_eq!(h.quantile(0.5), Some(1.0));
        assert_eq!(h.quantile(0.75), Some(1.5));
        assert_eq!(h.count_above(1.5), 25.0);
        assert_eq!(h.count_above(0.5), 75.0);
        assert_eq!(h.count_below(0.5), 25.0);
        assert_eq!(Histogram::default().quantile(0.5), None);
    }

    #[test]
    fn merging_adds_counts_of_equal_buckets() {
        let mut a = Histogram::from_log_linear([(100, 2.0), (200, 1.0)]);
        let b = Histogram::from_log_linear([(100, 3.0), (150, 1.0)]);
        a.merge(&b);
        assert_eq!(a.bins().len(), 3);
        assert_eq!(a.total(), 7.0);
        let mut e = Evidence {
            requests: 10.0,
            errors: 1.0,
            latency: a,
            seconds: 5.0,
        };
        e.merge(&e.clone());
        assert_eq!((e.requests, e.errors, e.seconds), (20.0, 2.0, 10.0));
        assert_eq!(e.error_rate(), Some(0.1));
        assert_eq!(e.rate(), Some(2.0));
    }
}
