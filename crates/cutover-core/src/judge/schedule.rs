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

use super::grid::MAX_LEVEL;
use super::progress::{AnalysisProgress, MetricProgress, PERSISTED_BINS, PROGRESS_FORMAT};
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
    /// The grid level every metric's pooled latency histograms are kept at: raised after a
    /// measurement when they would outgrow [`PERSISTED_BINS`], never lowered.
    latency_level: u8,
}

impl AnalysisRun {
    /// A run of `metrics` starting at `start`.
    pub fn new<'a>(metrics: impl IntoIterator<Item = &'a MetricSpec>, start: Timestamp) -> Self {
        AnalysisRun {
            start,
            judge: RunJudge::new(metrics),
            read_until: BTreeMap::new(),
            shifted: BTreeMap::new(),
            latency_level: 0,
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
        let level = progress.latency_level.min(MAX_LEVEL);
        run.keep_latency_at(level);
        for saved in &progress.metrics {
            let Some(spec) = run.judge.metric(&saved.name).map(|m| m.spec().clone()) else {
                continue;
            };
            let Some(judge) = MetricJudge::resumed(&spec, family, level, saved) else {
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

    /// The run's progress in its persisted form (run number `run`). Only metrics with an
    /// attempt are listed.
    pub fn progress(&self, run: u32) -> AnalysisProgress {
        AnalysisProgress {
            format: PROGRESS_FORMAT,
            run,
            started_at: self.start,
            latency_level: self.latency_level,
            metrics: self
                .judge
                .metrics()
                .iter()
                .filter(|m| m.attempts() > 0)
                .map(|m| MetricProgress {
                    read_until: self.read_until.get(m.name()).copied(),
                    shifted_ms: self.shifted.get(m.name()).map_or(0, |d| d.as_millis()),
                    ..m.progress()
                })
                .collect(),
        }
    }

    /// Raises the run's latency level until its pooled histograms fit [`PERSISTED_BINS`]
    /// (or the coarsest level is reached). The same data gives the same level, so a run that
    /// restarted and one that did not coarsen at the same measurement.
    fn fit_latency_level(&mut self) {
        let buckets = |run: &Self, level: u8| -> usize {
            run.judge
                .metrics()
                .iter()
                .map(|m| m.buckets_at(level))
                .sum()
        };
        let mut level = self.latency_level;
        while level < MAX_LEVEL && buckets(self, level) > PERSISTED_BINS {
            level += 1;
        }
        self.keep_latency_at(level);
    }

    fn keep_latency_at(&mut self, level: u8) {
        self.latency_level = self.latency_level.max(level);
        let level = self.latency_level;
        self.judge.each_metric_mut(|m| m.coarsen_to(level));
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
        let assessment = self.judge.record(metric, result).map(|a| a.cloned())?;
        self.fit_latency_level();
        Ok(assessment)
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

    /// A window of proxy evidence: `requests` latencies spread evenly on a log scale over
    /// `powers` powers of two from `from` microseconds, some 64 log-linear buckets a power.
    fn latency_window(requests: u64, from: u64, powers: f64) -> crate::judge::Evidence {
        let mut buckets = BTreeMap::<u16, f64>::new();
        for i in 0..requests {
            let micros = (from as f64 * (powers * i as f64 / requests as f64).exp2()) as u64;
            *buckets
                .entry(crate::judge::evidence::latency_bucket(micros))
                .or_default() += 1.0;
        }
        crate::judge::Evidence {
            requests: requests as f64,
            errors: 0.0,
            latency: crate::judge::Histogram::from_log_linear(buckets),
            seconds: 10.0,
        }
    }

    #[test]
    fn a_run_restarted_at_every_measurement_holds_and_decides_what_a_straight_one_does() {
        // Four latency metrics against stable: eight histograms of ~700 buckets, more
        // than a persisted run keeps, so the run coarsens as it goes.
        let mut specs = Vec::new();
        for name in ["slow-a", "slow-b", "slow-c", "slow-d"] {
            let mut spec = metric(name, 10, 3, 0);
            spec.provider = Provider::Builtin(BuiltinMetric::LatencyP99);
            spec.max = Some(1.5);
            spec.max_count = Some(5);
            specs.push(spec);
        }
        let mut straight = AnalysisRun::new(&specs, Timestamp(0));
        let mut interrupted = AnalysisRun::new(&specs, Timestamp(0));
        for window in 0..5u64 {
            for spec in &specs {
                let measurement = Measurement::of_candidate(0.5).with_evidence(
                    latency_window(1_000, 900 + window * 131, 10.5),
                    Some(latency_window(3_000, 1_000 + window * 17, 11.0)),
                );
                let result = MeasurementResult::Value(measurement);
                interrupted = AnalysisRun::resume(&specs, &persisted(&interrupted), Timestamp(0));
                let a = straight.record(&spec.name, &result).expect("known");
                let b = interrupted.record(&spec.name, &result).expect("known");
                assert_eq!(a, b, "window {window}, {}", spec.name);
                assert_eq!(persisted(&interrupted), persisted(&straight));
            }
        }
        assert!(persisted(&straight).latency_level >= 1, "the run coarsened");
        for spec in &specs {
            let pooled = |run: &AnalysisRun| {
                run.judge()
                    .metric(&spec.name)
                    .and_then(MetricJudge::pooled)
                    .map(|(c, s)| (c.clone(), s.cloned()))
            };
            assert_eq!(pooled(&interrupted), pooled(&straight));
            let (candidate, stable) = pooled(&straight).expect("pooled");
            let stable = stable.expect("stable");
            for pair in candidate.latency.bins().windows(2) {
                assert!(pair[0].upper <= pair[1].lower, "no overlap: {pair:?}");
            }
            // Both versions on the same boundaries: every bucket of one is a bucket of the
            // other's grid level.
            let level = |h: &crate::judge::Histogram| {
                h.bins()
                    .iter()
                    .map(crate::judge::grid::level_of)
                    .collect::<std::collections::BTreeSet<_>>()
            };
            assert_eq!(level(&candidate.latency), level(&stable.latency));
        }
        assert_eq!(interrupted.verdict(), straight.verdict());
    }

    #[test]
    fn a_pass_its_persisted_evidence_does_not_show_starts_the_metric_over() {
        let mut spec = metric("errors", 10, 2, 0);
        spec.max = Some(0.01);
        spec.max_count = Some(6);
        let specs = [spec];
        let mut run = AnalysisRun::new(&specs, Timestamp(0));
        // 5 % errors: far from passing a 1 % limit.
        run.record("errors", &evidence(200.0, 10.0)).expect("known");
        assert_eq!(run.verdict(), None);
        let forged = |change: &dyn Fn(&mut MetricProgress)| {
            let mut progress = persisted(&run);
            change(&mut progress.metrics[0]);
            AnalysisRun::resume(&specs, &progress, Timestamp(5_000))
        };
        let passed = |m: &mut MetricProgress| {
            m.passed = 2;
            m.pending = 0;
            m.last_assessment = Some(Assessment::Pass);
        };
        for resumed in [
            forged(&passed),
            // The evidence stripped: counts alone cannot pass a metric judged on evidence.
            forged(&|m| {
                passed(m);
                m.candidate = None;
                m.stable = None;
            }),
            // Buckets said to be of another level than the run's.
            forged(&|m| {
                if let Some(c) = &mut m.candidate {
                    c.level = 3;
                }
            }),
        ] {
            assert_eq!(resumed.verdict(), None);
            assert_eq!(
                resumed.judge().metric("errors").map(MetricJudge::attempts),
                Some(0),
                "starts over"
            );
        }
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
            .map(|e| e.buckets.len() + e.latency.len())
            .sum();
        assert!(bins <= super::super::progress::PERSISTED_BINS, "{bins}");
        assert_eq!(progress.metrics.len(), 3);
    }
}
