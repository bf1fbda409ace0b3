//! When each metric of an analysis run is measured: the same schedule for the controller,
//! which asks providers at these times, and for `cutover analyze`, which replays recorded
//! samples through it, so a backtest decides exactly as a live rollout would.
//!
//! Measurement `k` (from 1) of a metric is due at `start + initialDelay + k × interval` and
//! covers the window of the `interval` before it. A metric is measured until its judge
//! decides; errors do not count towards `count`, so a metric whose provider fails is
//! measured again at its next interval, up to `consecutiveErrorLimit`.

use std::collections::BTreeMap;

use serde::Serialize;

use super::progress::{AnalysisProgress, MetricProgress, PROGRESS_FORMAT, bins_each};
use super::{Assessment, MeasurementResult, MetricJudge, RunJudge, UnknownMetric, Verdict};
use crate::Duration;
use crate::rollout::Timestamp;
use crate::spec::MetricSpec;

/// One measurement to take.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Due {
    /// The metric.
    pub metric: String,
    /// The measurement's number within the metric, from 1.
    pub number: u32,
    /// The window measured: after `from`, up to and including `to`.
    pub from: Timestamp,
    /// When the measurement is due, and the window's end.
    pub to: Timestamp,
}

/// An analysis run over time: its schedule and its judge.
#[derive(Clone, Debug)]
pub struct AnalysisRun {
    start: Timestamp,
    judge: RunJudge,
    /// On evidence, per metric: the time up to which its evidence was read.
    read_until: BTreeMap<String, Timestamp>,
    /// Per metric: how far its schedule was moved on after a restart left it overdue.
    shifted: BTreeMap<String, Duration>,
}

impl AnalysisRun {
    /// A run of `metrics` starting at `start`.
    pub fn new<'a>(metrics: impl IntoIterator<Item = &'a MetricSpec>, start: Timestamp) -> Self {
        AnalysisRun {
            start,
            judge: RunJudge::new(metrics),
            read_until: BTreeMap::new(),
            shifted: BTreeMap::new(),
        }
    }

    /// The run of `metrics` that `progress` (persisted before a restart) describes, going
    /// on at `now`: it keeps its start, so `initialDelay` is not waited again, and each
    /// metric its measurements so far. A measurement that fell due while nobody measured
    /// is due at `now`, and the metric's later ones follow it at its `interval`, so a
    /// restart neither repeats a measurement nor crowds the next ones together. A metric
    /// whose progress cannot be trusted (see [`MetricJudge::resumed`]) starts over.
    pub fn resume<'a>(
        metrics: impl IntoIterator<Item = &'a MetricSpec>,
        progress: &AnalysisProgress,
        now: Timestamp,
    ) -> Self {
        let mut run = AnalysisRun::new(metrics, progress.started_at);
        if progress.format != PROGRESS_FORMAT {
            run.start = now;
            return run;
        }
        let family = run.judge.metrics().len();
        for saved in &progress.metrics {
            let Some(spec) = run.judge.metric(&saved.name).map(|m| m.spec().clone()) else {
                continue;
            };
            let Some(judge) = MetricJudge::resumed(&spec, family, saved) else {
                continue;
            };
            run.judge.replace(judge);
            if let Some(at) = saved.read_until {
                run.read_until.insert(saved.name.clone(), at);
            }
            if saved.shifted_ms > 0 {
                run.shifted
                    .insert(saved.name.clone(), Duration::from_millis(saved.shifted_ms));
            }
        }
        for due in run.next() {
            if due.to < now {
                let shift = run
                    .shifted
                    .get(&due.metric)
                    .copied()
                    .unwrap_or(Duration::ZERO)
                    .saturating_add(now.since(due.to));
                run.shifted.insert(due.metric, shift);
            }
        }
        run
    }

    /// The run's progress in its persisted form (run number `run`), within the bucket
    /// budget of [`PERSISTED_BINS`](super::progress::PERSISTED_BINS). Only metrics with an
    /// attempt are listed.
    pub fn progress(&self, run: u32) -> AnalysisProgress {
        let histograms = self
            .judge
            .metrics()
            .iter()
            .filter_map(MetricJudge::pooled)
            .map(|(_, stable)| 1 + usize::from(stable.is_some()))
            .sum();
        let bins = bins_each(histograms);
        AnalysisProgress {
            format: PROGRESS_FORMAT,
            run,
            started_at: self.start,
            metrics: self
                .judge
                .metrics()
                .iter()
                .filter(|m| m.attempts() > 0)
                .map(|m| MetricProgress {
                    read_until: self.read_until.get(m.name()).copied(),
                    shifted_ms: self.shifted.get(m.name()).map_or(0, |d| d.as_millis()),
                    ..m.progress(bins)
                })
                .collect(),
        }
    }

    /// Moves `metric`'s schedule on so that its next measurement is not due before `at`
    /// (the later ones follow it at `interval`); a metric due later anyway is left alone.
    /// For a provider that restarted with the controller and has nothing to read yet.
    pub fn hold_until(&mut self, metric: &str, at: Timestamp) {
        let Some(due) = self.next().into_iter().find(|d| d.metric == metric) else {
            return;
        };
        if due.to < at {
            let shift = self
                .shifted
                .get(metric)
                .copied()
                .unwrap_or(Duration::ZERO)
                .saturating_add(at.since(due.to));
            self.shifted.insert(metric.to_string(), shift);
        }
    }

    /// When `metric`'s evidence was last read up to, if it was.
    pub fn read_until(&self, metric: &str) -> Option<Timestamp> {
        self.read_until.get(metric).copied()
    }

    /// Notes that `metric`'s evidence was read up to `at`: the next read starts there.
    pub fn set_read_until(&mut self, metric: &str, at: Timestamp) {
        self.read_until.insert(metric.to_string(), at);
    }

    /// When the run started (its schedule counts from here).
    pub fn started_at(&self) -> Timestamp {
        self.start
    }

    /// The next measurement of each undecided metric, in time order (ties by name).
    pub fn next(&self) -> Vec<Due> {
        let mut due: Vec<Due> = self
            .judge
            .metrics()
            .iter()
            .filter(|m| m.verdict().is_none())
            .map(|m| {
                let spec = m.spec();
                let number = m.attempts() + 1;
                let to = self
                    .start
                    .after(spec.initial_delay)
                    .after(spec.interval.saturating_mul(u64::from(number)))
                    .after(
                        self.shifted
                            .get(m.name())
                            .copied()
                            .unwrap_or(Duration::ZERO),
                    );
                Due {
                    metric: m.name().to_string(),
                    number,
                    from: Timestamp(to.0.saturating_sub(spec.interval.as_millis())),
                    to,
                }
            })
            .collect();
        due.sort_by(|a, b| (a.to, &a.metric).cmp(&(b.to, &b.metric)));
        due
    }

    /// The measurements due at or before `now`.
    pub fn due(&self, now: Timestamp) -> Vec<Due> {
        self.next().into_iter().filter(|d| d.to <= now).collect()
    }

    /// When the next measurement is due; `None` once the run has decided.
    pub fn next_due(&self) -> Option<Timestamp> {
        if self.judge.verdict().is_some() {
            return None;
        }
        self.next().first().map(|d| d.to)
    }

    /// Hands in the result of a measurement of `metric`; returns its assessment, or `None`
    /// if the run or the metric had already decided and the result changes nothing.
    pub fn record(
        &mut self,
        metric: &str,
        result: &MeasurementResult,
    ) -> Result<Option<Assessment>, UnknownMetric> {
        self.judge.record(metric, result).map(|a| a.cloned())
    }

    /// The run's verdict, once decided.
    pub fn verdict(&self) -> Option<Verdict> {
        self.judge.verdict()
    }

    /// The judge, for per-metric detail.
    pub fn judge(&self) -> &RunJudge {
        &self.judge
    }

    /// The longest the run can take without errors: its slowest metric's
    /// `initialDelay + count × interval`.
    pub fn nominal_length(&self) -> Duration {
        self.judge
            .metrics()
            .iter()
            .map(|m| {
                let spec = m.spec();
                spec.initial_delay
                    .saturating_add(spec.interval.saturating_mul(u64::from(spec.count)))
            })
            .max()
            .unwrap_or(Duration::ZERO)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::judge::Measurement;
    use crate::spec::{BuiltinMetric, Provider};

    fn metric(name: &str, interval: u64, count: u32, delay: u64) -> MetricSpec {
        MetricSpec {
            name: name.into(),
            provider: Provider::Builtin(BuiltinMetric::ErrorRate),
            min: None,
            max: Some(0.1),
            compare: None,
            interval: Duration::from_secs(interval),
            count,
            initial_delay: Duration::from_secs(delay),
            failure_limit: 0,
            inconclusive_limit: 0,
            consecutive_error_limit: 4,
            min_requests: 1,
            confidence: 0.98,
            max_count: None,
        }
    }

    fn value(v: f64) -> MeasurementResult {
        MeasurementResult::Value(Measurement::of_candidate(v).with_requests(100))
    }

    #[test]
    fn measurements_come_at_the_end_of_each_interval_after_the_initial_delay() {
        let specs = [metric("a", 30, 2, 10), metric("b", 20, 1, 0)];
        let mut run = AnalysisRun::new(&specs, Timestamp(0));
        assert_eq!(run.nominal_length(), Duration::from_secs(70));
        let next = run.next();
        assert_eq!(
            (next[0].metric.as_str(), next[0].to),
            ("b", Timestamp(20_000))
        );
        assert_eq!(
            (next[1].metric.as_str(), next[1].from, next[1].to),
            ("a", Timestamp(10_000), Timestamp(40_000))
        );
        assert!(run.due(Timestamp(19_999)).is_empty());
        run.record("b", &value(0.01)).expect("known");
        run.record("a", &value(0.01)).expect("known");
        assert_eq!(
            run.next_due(),
            Some(Timestamp(70_000)),
            "b is decided; a's second measurement"
        );
        run.record("a", &value(0.01)).expect("known");
        assert_eq!(run.verdict(), Some(Verdict::Success));
        assert_eq!(run.next_due(), None);
    }

    #[test]
    fn an_error_is_measured_again_at_the_next_interval() {
        let specs = [metric("a", 10, 1, 0)];
        let mut run = AnalysisRun::new(&specs, Timestamp(0));
        run.record("a", &MeasurementResult::Error("timeout".into()))
            .expect("known");
        assert_eq!(run.next_due(), Some(Timestamp(20_000)));
        run.record("a", &value(0.5)).expect("known");
        assert_eq!(run.verdict(), Some(Verdict::Failure));
    }

    fn evidence(requests: f64, errors: f64) -> MeasurementResult {
        let candidate = crate::judge::Evidence {
            requests,
            errors,
            seconds: 10.0,
            ..Default::default()
        };
        MeasurementResult::Value(
            Measurement::of_candidate(errors / requests)
                .with_evidence(candidate.clone(), Some(candidate)),
        )
    }

    /// The progress written after two of five measurements, read back as a restarted
    /// controller reads it.
    fn persisted(run: &AnalysisRun) -> AnalysisProgress {
        let text = serde_json::to_string(&run.progress(3)).expect("encodes");
        serde_json::from_str(&text).expect("decodes")
    }

    #[test]
    fn a_resumed_run_keeps_its_measurements_and_its_schedule() {
        let specs = [metric("a", 10, 5, 30)];
        let mut run = AnalysisRun::new(&specs, Timestamp(1_000));
        run.record("a", &value(0.01)).expect("known");
        run.record("a", &value(0.01)).expect("known");
        run.set_read_until("a", Timestamp(51_000));
        let progress = persisted(&run);
        assert_eq!(progress.run, 3);
        assert_eq!(progress.attempts(), 2);
        // Restarted within the interval: the third measurement is due when it was, not
        // after another initialDelay.
        let resumed = AnalysisRun::resume(&specs, &progress, Timestamp(55_000));
        assert_eq!(resumed.started_at(), Timestamp(1_000));
        assert_eq!(resumed.next_due(), Some(Timestamp(61_000)));
        assert_eq!(resumed.next()[0].number, 3);
        assert_eq!(resumed.read_until("a"), Some(Timestamp(51_000)));
        assert_eq!(
            resumed.judge().metric("a").map(MetricJudge::passed),
            Some(2)
        );
        // A provider with nothing to read yet holds the metric until it has.
        let mut held = AnalysisRun::resume(&specs, &progress, Timestamp(55_000));
        held.hold_until("a", Timestamp(57_000));
        assert_eq!(held.next_due(), Some(Timestamp(61_000)), "due later anyway");
        held.hold_until("a", Timestamp(63_000));
        assert_eq!(held.next_due(), Some(Timestamp(63_000)));
        // Restarted late: the overdue measurement is due now, the next an interval later.
        let mut late = AnalysisRun::resume(&specs, &progress, Timestamp(95_000));
        assert_eq!(late.next_due(), Some(Timestamp(95_000)));
        late.record("a", &value(0.01)).expect("known");
        assert_eq!(late.next_due(), Some(Timestamp(105_000)));
        // The shift is persisted too: a second restart keeps the same schedule.
        let again = AnalysisRun::resume(&specs, &persisted(&late), Timestamp(100_000));
        assert_eq!(again.next_due(), Some(Timestamp(105_000)));
        assert_eq!(again.next()[0].number, 4);
    }

    #[test]
    fn a_resumed_run_decides_as_the_uninterrupted_one_on_pooled_evidence() {
        let mut spec = metric("errors", 10, 3, 0);
        spec.max = Some(0.05);
        spec.max_count = Some(6);
        let specs = [spec];
        let windows = [
            evidence(400.0, 2.0),
            evidence(400.0, 1.0),
            evidence(400.0, 3.0),
        ];
        let mut straight = AnalysisRun::new(&specs, Timestamp(0));
        let mut interrupted = AnalysisRun::new(&specs, Timestamp(0));
        for (i, window) in windows.iter().enumerate() {
            straight.record("errors", window).expect("known");
            if i == 1 {
                interrupted =
                    AnalysisRun::resume(&specs, &persisted(&interrupted), Timestamp(20_000));
            }
            interrupted.record("errors", window).expect("known");
        }
        let pooled = |run: &AnalysisRun| {
            run.judge()
                .metric("errors")
                .and_then(MetricJudge::pooled)
                .map(|(c, s)| (c.requests, c.errors, s.map(|s| s.requests)))
        };
        assert_eq!(pooled(&interrupted), Some((1_200.0, 6.0, Some(1_200.0))));
        assert_eq!(pooled(&interrupted), pooled(&straight));
        assert_eq!(interrupted.verdict(), straight.verdict());
        assert!(interrupted.verdict().is_some());
    }

    #[test]
    fn progress_that_does_not_fit_the_spec_starts_the_metric_over() {
        let specs = [metric("a", 10, 3, 0), metric("b", 10, 3, 0)];
        let mut run = AnalysisRun::new(&specs, Timestamp(0));
        run.record("a", &value(0.01)).expect("known");
        run.record("b", &value(0.01)).expect("known");
        let mut progress = persisted(&run);
        // A corrupted count would pass "a" outright; a NaN would poison "b".
        progress.metrics[0].passed = 1_000;
        progress.metrics[1].last_value = Some(f64::NAN);
        progress.metrics.push(MetricProgress {
            name: "gone".into(),
            passed: 1,
            ..MetricProgress::default()
        });
        let resumed = AnalysisRun::resume(&specs, &progress, Timestamp(5_000));
        assert_eq!(resumed.verdict(), None);
        for name in ["a", "b"] {
            assert_eq!(
                resumed.judge().metric(name).map(MetricJudge::attempts),
                Some(0),
                "{name} starts over"
            );
        }
        // Progress of another layout: the whole run starts over, now.
        let future = AnalysisProgress {
            format: PROGRESS_FORMAT + 1,
            ..persisted(&run)
        };
        let resumed = AnalysisRun::resume(&specs, &future, Timestamp(5_000));
        assert_eq!(resumed.started_at(), Timestamp(5_000));
        assert_eq!(resumed.progress(1).attempts(), 0);
    }

    #[test]
    fn the_progress_of_a_run_on_wide_histograms_stays_within_its_budget() {
        // Three latency metrics comparing with stable, each window a wide histogram with
        // fractional counts (as Prometheus's increase() gives): six histograms of ~700
        // buckets each before coarsening.
        let histogram = || {
            let mut bins = Vec::new();
            let mut micros = 1_000u64;
            while micros < 2_000_000 {
                let (lower, upper) = crate::judge::evidence::latency_bucket_bounds(
                    crate::judge::evidence::latency_bucket(micros),
                );
                bins.push(crate::judge::Bin {
                    lower: lower as f64 / 1e6,
                    upper: upper as f64 / 1e6,
                    count: 1.0 / 3.0 + micros as f64 / 7.0,
                });
                micros += micros / 200 + 1;
            }
            crate::judge::Histogram::from_bins(bins)
        };
        let evidence = crate::judge::Evidence {
            requests: 5_000.0,
            errors: 1.0,
            latency: histogram(),
            seconds: 10.0,
        };
        let mut specs = Vec::new();
        for name in ["p50", "p90", "p99"] {
            let mut spec = metric(name, 10, 5, 0);
            spec.provider = Provider::Builtin(BuiltinMetric::LatencyP99);
            spec.max = Some(10.0);
            specs.push(spec);
        }
        let mut run = AnalysisRun::new(&specs, Timestamp(0));
        for spec in &specs {
            let measurement = Measurement::of_candidate(0.1)
                .with_evidence(evidence.clone(), Some(evidence.clone()));
            run.record(&spec.name, &MeasurementResult::Value(measurement))
                .expect("known");
        }
        let progress = run.progress(1);
        let text = serde_json::to_string(&progress).expect("encodes");
        assert!(text.len() < 64 * 1024, "{} bytes", text.len());
        let bins: usize = progress
            .metrics
            .iter()
            .flat_map(|m| [&m.candidate, &m.stable])
            .flatten()
            .map(|e| e.latency.len())
            .sum();
        assert!(bins <= super::super::progress::PERSISTED_BINS, "{bins}");
        assert_eq!(progress.metrics.len(), 3);
    }
}
