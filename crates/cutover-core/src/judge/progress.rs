//! An analysis run under way in the form that is persisted with the rollout, so that a
//! controller that restarts mid-analysis goes on where it was: when the run started (no
//! `initialDelay` waited again), each metric's counts and last assessment, on evidence the
//! pooled evidence (what [`MetricJudge`](super::MetricJudge) judges, one sample per version
//! however many windows went into it) and the second up to which it was read, so the next
//! read continues from there.
//!
//! The form is bounded: the judge needs the pooled evidence, not each window's, and when
//! the pooled latency histograms of a run outgrow [`PERSISTED_BINS`] buckets (a Swarm
//! release keeps its state in a service label and a Kubernetes one in annotations, 256 KiB
//! in all), the run coarsens them to a level of the proxy's bucket grid ([`super::grid`]) —
//! in memory as well as on disk, so a run that restarts holds exactly the data of one that
//! did not, and decides as it would. Reasons are cut to [`REASON_LIMIT`] bytes. It is read
//! back with the same suspicion as any stored file: a metric whose progress does not fit
//! its spec (more measurements than it may take, counts that are not finite, buckets off
//! the grid, a pass its own evidence does not show) starts over rather than deciding
//! anything.

use serde::{Deserialize, Serialize};

use super::assess::Assessment;
use super::evidence::{Bin, Evidence, Histogram};
use super::grid::{self, MAX_LEVEL};
use crate::rollout::Timestamp;

/// The layout of [`AnalysisProgress`]. A progress of another layout is not resumed: the
/// run starts over, as a controller that did not persist progress did.
pub const PROGRESS_FORMAT: u32 = 1;

/// Latency buckets a run's pooled histograms may hold in all before the run coarsens them
/// (see [`super::grid`]). 10 to 15 bytes each in JSON: some 60 KB at most, well within the
/// 256 KiB of a Kubernetes object's annotations next to the release itself. At the
/// coarsest level a histogram has at most some 40 buckets, so a run of very many latency
/// metrics may exceed it by that much per histogram.
pub const PERSISTED_BINS: usize = 4096;

/// The most buckets a histogram off the grid (a Prometheus histogram's `le` layout) keeps
/// in a persisted run. Such layouts are not coarsened; one this large is not persisted, and
/// its metric starts over after a restart.
pub const OFF_GRID_BINS: usize = 256;

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
    /// The grid level the run's latency histograms are coarsened to (0: the proxy's own
    /// buckets).
    #[serde(default)]
    pub latency_level: u8,
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
            latency_level: 0,
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

/// Measurements answered, from the counts of each outcome: passed, failed, inconclusive,
/// pending (provider errors are not among them).
pub(crate) fn answered(outcomes: [u32; 4]) -> u32 {
    outcomes.iter().fold(0u32, |sum, n| sum.saturating_add(*n))
}

fn is_zero(value: &u64) -> bool {
    *value == 0
}

impl MetricProgress {
    /// Measurements the provider answered.
    pub fn measurements(&self) -> u32 {
        answered([self.passed, self.failed, self.inconclusive, self.pending])
    }

    /// Attempts of every kind, provider errors included.
    pub fn attempts(&self) -> u32 {
        self.measurements().saturating_add(self.errors)
    }

    /// Whether every number in it is one the judge can use.
    pub(crate) fn is_sound(&self) -> bool {
        self.last_value.is_none_or(f64::is_finite) && self.consecutive_errors <= self.errors
    }
}

/// [`Evidence`] in a compact persisted form: latency buckets on the grid as their lower
/// bound in microseconds and their count (the level gives the upper bound), others as
/// `[lower, upper, count]` triples in seconds.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct PersistedEvidence {
    /// Requests completed.
    pub requests: f64,
    /// Of those, failures.
    pub errors: f64,
    /// Seconds of traffic covered.
    pub seconds: f64,
    /// The grid level of `buckets`.
    #[serde(skip_serializing_if = "is_level_zero")]
    pub level: u8,
    /// Latency buckets on the grid: lower bound in microseconds, count.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub buckets: Vec<(u64, f64)>,
    /// Latency buckets off the grid: lower and upper bound in seconds, count.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub latency: Vec<(f64, f64, f64)>,
}

fn is_level_zero(level: &u8) -> bool {
    *level == 0
}

impl PersistedEvidence {
    /// The persisted form of `evidence`, whose histogram the run keeps at grid level
    /// `level`; `None` when its histogram is off the grid and over [`OFF_GRID_BINS`].
    pub fn of(evidence: &Evidence, level: u8) -> Option<Self> {
        let mut persisted = PersistedEvidence {
            requests: evidence.requests,
            errors: evidence.errors,
            seconds: evidence.seconds,
            level,
            ..PersistedEvidence::default()
        };
        let bins = evidence.latency.bins();
        if grid::is_on_grid(&evidence.latency) {
            let histogram = grid::to_level(&evidence.latency, level);
            persisted.buckets = histogram
                .bins()
                .iter()
                .map(|b| ((b.lower * 1e6).round() as u64, b.count))
                .collect();
        } else if bins.len() <= OFF_GRID_BINS {
            persisted.latency = bins.iter().map(|b| (b.lower, b.upper, b.count)).collect();
        } else {
            return None;
        }
        Some(persisted)
    }

    /// The evidence again, or `None` when a number or a bucket is not one the judge can
    /// use (a bucket off its level, a count that is not finite and positive).
    pub fn evidence(&self) -> Option<Evidence> {
        let sound = [self.requests, self.errors, self.seconds]
            .iter()
            .all(|v| v.is_finite() && *v >= 0.0)
            && self.errors <= self.requests
            && self.level <= MAX_LEVEL
            && self.buckets.len() <= PERSISTED_BINS
            && self.latency.len() <= OFF_GRID_BINS
            && (self.buckets.is_empty() || self.latency.is_empty());
        if !sound {
            return None;
        }
        let mut bins = Vec::with_capacity(self.buckets.len() + self.latency.len());
        for &(lower, count) in &self.buckets {
            let (start, end) = grid::cell(lower, self.level);
            if start != lower || !(count.is_finite() && count > 0.0) {
                return None;
            }
            bins.push(Bin {
                lower: grid::seconds(start),
                upper: grid::seconds(end),
                count,
            });
        }
        for &(lower, upper, count) in &self.latency {
            let bin = Bin {
                lower,
                upper,
                count,
            };
            if !(lower.is_finite() && upper >= lower && count.is_finite() && count > 0.0) {
                return None;
            }
            bins.push(bin);
        }
        let latency = Histogram::from_bins(bins);
        // Buckets that overlap would make quantiles meaningless.
        if latency.bins().windows(2).any(|w| w[1].lower < w[0].upper) {
            return None;
        }
        Some(Evidence {
            requests: self.requests,
            errors: self.errors,
            seconds: self.seconds,
            latency,
        })
    }
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
    fn persisted_evidence_round_trips_on_and_off_the_grid() {
        let evidence = Evidence {
            requests: 1_000.0,
            errors: 3.0,
            latency: wide_histogram(),
            seconds: 40.0,
        };
        assert!(evidence.latency.bins().len() > 600);
        for level in [0, 2, MAX_LEVEL] {
            let persisted = PersistedEvidence::of(&evidence, level).expect("on the grid");
            let text = serde_json::to_string(&persisted).expect("encodes");
            assert!(text.len() < 15 * 700, "{} bytes", text.len());
            let back: PersistedEvidence = serde_json::from_str(&text).expect("decodes");
            let again = back.evidence().expect("sound");
            assert_eq!(
                (again.requests, again.errors, again.seconds),
                (1_000.0, 3.0, 40.0)
            );
            // Exactly what the run holds in memory at that level.
            assert_eq!(again.latency, grid::to_level(&evidence.latency, level));
        }
        let prometheus = Evidence {
            requests: 10.0,
            latency: Histogram::from_cumulative([(0.1, 5.0), (0.5, 9.0), (f64::INFINITY, 10.0)]),
            ..Evidence::default()
        };
        let persisted = PersistedEvidence::of(&prometheus, 3).expect("small");
        assert_eq!(persisted.evidence(), Some(prometheus));
        let huge = Evidence {
            requests: 1e6,
            latency: Histogram::from_bins((0..=OFF_GRID_BINS).map(|i| Bin {
                lower: i as f64 * 0.001 + 0.0001,
                upper: i as f64 * 0.001 + 0.0011,
                count: 1.0,
            })),
            ..Evidence::default()
        };
        assert_eq!(PersistedEvidence::of(&huge, 0), None);
    }

    #[test]
    fn persisted_buckets_off_their_level_or_overlapping_are_refused() {
        let evidence = Evidence {
            requests: 1_000.0,
            latency: wide_histogram(),
            ..Evidence::default()
        };
        let mut persisted = PersistedEvidence::of(&evidence, 1).expect("on the grid");
        persisted.level = 2;
        assert_eq!(
            persisted.evidence(),
            None,
            "buckets of level 1 read as level 2"
        );
        let mut persisted = PersistedEvidence::of(&evidence, 0).expect("on the grid");
        persisted.buckets[3].1 = f64::NAN;
        assert_eq!(persisted.evidence(), None);
        let overlapping = PersistedEvidence {
            requests: 10.0,
            latency: vec![(0.1, 0.2, 1.0), (0.15, 0.3, 1.0)],
            ..PersistedEvidence::default()
        };
        assert_eq!(overlapping.evidence(), None);
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
