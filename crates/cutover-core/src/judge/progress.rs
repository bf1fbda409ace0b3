//! An analysis run under way in the form that is persisted with the rollout, so that a
//! controller that restarts mid-analysis goes on where it was: when the run started (no
//! `initialDelay` waited again), each metric's counts and last assessment, on evidence the
//! pooled evidence (what [`MetricJudge`](super::MetricJudge) judges, one sample per version
//! however many windows went into it) and the second up to which it was read, so the next
//! read continues from there.
//!
//! The form is bounded: the judge needs the pooled evidence, not each window's, and the
//! latency histograms are coarsened to a shared budget of [`PERSISTED_BINS`] buckets (a
//! Swarm release keeps its state in a service label and a Kubernetes one in annotations,
//! 256 KiB in all). Reasons are cut to [`REASON_LIMIT`] bytes. It is read back with the same
//! suspicion as any stored file: a metric whose progress does not fit its spec (more
//! measurements than it may take, counts that are not finite) starts over rather than
//! deciding anything.

use serde::{Deserialize, Serialize};

use super::assess::Assessment;
use super::evidence::{Bin, Evidence, Histogram};
use crate::rollout::Timestamp;

/// The layout of [`AnalysisProgress`]. A progress of another layout is not resumed: the
/// run starts over, as a controller that did not persist progress did.
pub const PROGRESS_FORMAT: u32 = 1;

/// Latency buckets a persisted run keeps over all its histograms (two per metric on
/// evidence). 25 to 45 bytes each in JSON: some 25 to 45 KB at most, well within the
/// 256 KiB of a Kubernetes object's annotations next to the release itself.
pub const PERSISTED_BINS: usize = 1024;

/// The fewest buckets one histogram is coarsened to, however many metrics share the budget.
const MIN_BINS_PER_HISTOGRAM: usize = 32;

/// The longest reason kept with a metric's last assessment.
pub const REASON_LIMIT: usize = 512;

/// An analysis run under way, as persisted with the rollout state.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AnalysisProgress {
    /// [`PROGRESS_FORMAT`] when written.
    pub format: u32,
    /// The analysis run this is the progress of.
    pub run: u32,
    /// When the run started: its schedule (`initialDelay`, then every `interval`) counts
    /// from here.
    pub started_at: Timestamp,
    /// The metrics measured so far; a metric not listed has not been measured.
    #[serde(default)]
    pub metrics: Vec<MetricProgress>,
}

impl AnalysisProgress {
    /// The progress of run `run` starting at `started_at`, before any measurement.
    pub fn started(run: u32, started_at: Timestamp) -> Self {
        AnalysisProgress {
            format: PROGRESS_FORMAT,
            run,
            started_at,
            metrics: Vec::new(),
        }
    }

    /// The progress of the metric `name`, if it was measured.
    pub fn metric(&self, name: &str) -> Option<&MetricProgress> {
        self.metrics.iter().find(|m| m.name == name)
    }

    /// Measurement attempts so far over every metric, provider errors included.
    pub fn attempts(&self) -> u32 {
        self.metrics
            .iter()
            .fold(0u32, |sum, m| sum.saturating_add(m.attempts()))
    }
}

/// One metric's measurements so far.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct MetricProgress {
    /// The metric's name.
    pub name: String,
    /// Measurements that passed.
    pub passed: u32,
    /// Measurements that failed.
    pub failed: u32,
    /// Measurements without enough data.
    pub inconclusive: u32,
    /// On evidence, measurements that could not decide yet.
    pub pending: u32,
    /// Provider errors in all.
    pub errors: u32,
    /// Provider errors since the provider last answered.
    pub consecutive_errors: u32,
    /// The candidate's value in the last answered measurement.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_value: Option<f64>,
    /// The last assessment, for the reason a verdict gives.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_assessment: Option<Assessment>,
    /// On evidence: the candidate's evidence pooled over the measurements so far.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub candidate: Option<PersistedEvidence>,
    /// On evidence: stable's, when the metric compares.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stable: Option<PersistedEvidence>,
    /// On evidence: the time up to which the provider's evidence was read; the next
    /// measurement reads from there.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub read_until: Option<Timestamp>,
    /// Milliseconds the metric's schedule was moved on, when a restart left a measurement
    /// overdue: it was taken at once and the later ones follow it at `interval`.
    #[serde(skip_serializing_if = "is_zero")]
    pub shifted_ms: u64,
}

fn is_zero(value: &u64) -> bool {
    *value == 0
}

impl MetricProgress {
    /// Measurements the provider answered.
    pub fn measurements(&self) -> u32 {
        self.passed
            .saturating_add(self.failed)
            .saturating_add(self.inconclusive)
            .saturating_add(self.pending)
    }

    /// Attempts of every kind, provider errors included.
    pub fn attempts(&self) -> u32 {
        self.measurements().saturating_add(self.errors)
    }

    /// Whether every number in it is one the judge can use.
    pub(crate) fn is_sound(&self) -> bool {
        self.last_value.is_none_or(f64::is_finite)
            && self.consecutive_errors <= self.errors
            && [&self.candidate, &self.stable]
                .into_iter()
                .flatten()
                .all(PersistedEvidence::is_sound)
    }
}

/// [`Evidence`] in a compact persisted form: latency buckets as `[lower, upper, count]`
/// triples rather than objects.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct PersistedEvidence {
    /// Requests completed.
    pub requests: f64,
    /// Of those, failures.
    pub errors: f64,
    /// Seconds of traffic covered.
    pub seconds: f64,
    /// Latency buckets: lower and upper bound in seconds, count.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub latency: Vec<(f64, f64, f64)>,
}

impl PersistedEvidence {
    /// The persisted form of `evidence`, its histogram coarsened to at most `bins`
    /// buckets.
    pub fn of(evidence: &Evidence, bins: usize) -> Self {
        PersistedEvidence {
            requests: evidence.requests,
            errors: evidence.errors,
            seconds: evidence.seconds,
            latency: coarsen(&evidence.latency, bins)
                .bins()
                .iter()
                .map(|b| (b.lower, b.upper, b.count))
                .collect(),
        }
    }

    /// The evidence again. Buckets with bad bounds or counts are dropped, as
    /// [`Histogram::from_bins`] does with any input.
    pub fn evidence(&self) -> Evidence {
        Evidence {
            requests: self.requests,
            errors: self.errors,
            seconds: self.seconds,
            latency: Histogram::from_bins(self.latency.iter().map(|&(lower, upper, count)| Bin {
                lower,
                upper,
                count,
            })),
        }
    }

    fn is_sound(&self) -> bool {
        [self.requests, self.errors, self.seconds]
            .iter()
            .all(|v| v.is_finite() && *v >= 0.0)
            && self.errors <= self.requests
            && self.latency.len() <= PERSISTED_BINS
    }
}

/// How many buckets each of `histograms` histograms may keep within [`PERSISTED_BINS`].
pub(crate) fn bins_each(histograms: usize) -> usize {
    (PERSISTED_BINS / histograms.max(1)).max(MIN_BINS_PER_HISTOGRAM)
}

/// `histogram` with at most `limit` buckets: neighbouring buckets are merged, narrowest
/// merges first (a merge whose width is the smallest share of its lower bound), so the
/// relative resolution drops evenly — from the proxy's 1/64 of a value to 1/32, 1/16 and so
/// on — rather than in one place. Open-ended buckets (`lower == upper`) are never merged,
/// and the counts add up exactly.
pub fn coarsen(histogram: &Histogram, limit: usize) -> Histogram {
    let limit = limit.max(1);
    let mut bins: Vec<Bin> = histogram.bins().to_vec();
    // The widest a merge may be, relative to its lower bound; doubled until the histogram
    // fits (bounded: after 64 doublings every finite pair merges).
    let mut width = 1.0 / 32.0;
    for _ in 0..64 {
        if bins.len() <= limit {
            break;
        }
        // Merges stop once the histogram fits, so what is left keeps the finer width.
        let mut excess = bins.len() - limit;
        let mut merged: Vec<Bin> = Vec::with_capacity(bins.len());
        for bin in bins {
            match merged.last_mut() {
                Some(last)
                    if excess > 0
                        && last.lower < last.upper
                        && bin.lower < bin.upper
                        && bin.upper - last.lower <= width * last.lower.max(1e-6) =>
                {
                    last.upper = bin.upper;
                    last.count += bin.count;
                    excess -= 1;
                }
                _ => merged.push(bin),
            }
        }
        bins = merged;
        width *= 2.0;
    }
    if bins.len() > limit {
        // Only open-ended buckets are left apart: keep the lowest, fold the rest into it.
        let extra: f64 = bins[limit - 1..].iter().map(|b| b.count).sum();
        bins.truncate(limit);
        if let Some(last) = bins.last_mut() {
            last.count = extra;
        }
    }
    Histogram::from_bins(bins)
}

/// `reason` cut to [`REASON_LIMIT`] bytes at a character boundary.
pub(crate) fn bounded_reason(reason: &str) -> String {
    if reason.len() <= REASON_LIMIT {
        return reason.to_string();
    }
    let mut end = REASON_LIMIT;
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &reason[..end])
}

/// The assessment with its reason bounded.
pub(crate) fn bounded_assessment(assessment: &Assessment) -> Assessment {
    match assessment {
        Assessment::Pass => Assessment::Pass,
        Assessment::Fail { reason } => Assessment::Fail {
            reason: bounded_reason(reason),
        },
        Assessment::Inconclusive { reason, needs } => Assessment::Inconclusive {
            reason: bounded_reason(reason),
            needs: *needs,
        },
        Assessment::Error { reason } => Assessment::Error {
            reason: bounded_reason(reason),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::judge::evidence::latency_bucket;

    /// A latency histogram as the proxy records it, one value every `step` microseconds
    /// from 1 ms to 2 s: about 700 log-linear buckets.
    fn wide_histogram() -> Histogram {
        let mut buckets = std::collections::BTreeMap::<u16, f64>::new();
        let mut micros = 1_000u64;
        while micros < 2_000_000 {
            *buckets.entry(latency_bucket(micros)).or_default() += 1.0;
            micros += micros / 200 + 1;
        }
        Histogram::from_log_linear(buckets)
    }

    #[test]
    fn coarsening_keeps_every_count_and_the_quantiles_close() {
        let histogram = wide_histogram();
        assert!(histogram.bins().len() > 600, "{}", histogram.bins().len());
        for limit in [512, 128, 32] {
            let coarse = coarsen(&histogram, limit);
            assert!(
                coarse.bins().len() <= limit,
                "{limit}: {}",
                coarse.bins().len()
            );
            assert!((coarse.total() - histogram.total()).abs() < 1e-9);
            for q in [0.5, 0.9, 0.99] {
                let (fine, rough) = (
                    histogram.quantile(q).unwrap_or(0.0),
                    coarse.quantile(q).unwrap_or(0.0),
                );
                assert!(
                    (rough - fine).abs() / fine < 0.15,
                    "{limit} buckets: p{q} {rough} against {fine}"
                );
            }
        }
    }

    #[test]
    fn coarsening_leaves_a_small_histogram_and_open_buckets_alone() {
        let histogram = Histogram::from_cumulative([(0.1, 5.0), (0.5, 9.0), (f64::INFINITY, 10.0)]);
        assert_eq!(coarsen(&histogram, 10), histogram);
        let coarse = coarsen(&histogram, 2);
        assert_eq!(coarse.bins().len(), 2);
        assert!(
            coarse
                .bins()
                .iter()
                .any(|b| b.lower == b.upper && b.count == 1.0)
        );
        assert!((coarse.total() - 10.0).abs() < 1e-9);
    }

    #[test]
    fn persisted_evidence_round_trips_within_its_budget() {
        let evidence = Evidence {
            requests: 1_000.0,
            errors: 3.0,
            latency: wide_histogram(),
            seconds: 40.0,
        };
        let persisted = PersistedEvidence::of(&evidence, bins_each(2));
        let text = serde_json::to_string(&persisted).expect("encodes");
        assert!(text.len() < 30_000, "{} bytes", text.len());
        let back: PersistedEvidence = serde_json::from_str(&text).expect("decodes");
        let again = back.evidence();
        assert_eq!(
            (again.requests, again.errors, again.seconds),
            (1_000.0, 3.0, 40.0)
        );
        assert!((again.latency.total() - evidence.latency.total()).abs() < 1e-9);
        // Within the budget already: the same buckets come back.
        let small = PersistedEvidence::of(&evidence, 4096);
        assert_eq!(small.evidence().latency, evidence.latency);
    }

    #[test]
    fn a_long_reason_is_cut_at_a_character_boundary() {
        let reason = "é".repeat(REASON_LIMIT);
        let cut = bounded_reason(&reason);
        assert!(cut.len() <= REASON_LIMIT + "…".len());
        assert!(cut.ends_with('…'));
        assert_eq!(bounded_reason("short"), "short");
    }
}
