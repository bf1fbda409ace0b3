//! When each metric of an analysis run is measured: the same schedule for the controller,
//! which asks providers at these times, and for `cutover analyze`, which replays recorded
//! samples through it, so a backtest decides exactly as a live rollout would.
//!
//! Measurement `k` (from 1) of a metric is due at `start + initialDelay + k × interval` and
//! covers the window of the `interval` before it. A metric is measured until its judge
//! decides; errors do not count towards `count`, so a metric whose provider fails is
//! measured again at its next interval, up to `consecutiveErrorLimit`.

use serde::Serialize;

use super::{Assessment, MeasurementResult, RunJudge, UnknownMetric, Verdict};
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
}

impl AnalysisRun {
    /// A run of `metrics` starting at `start`.
    pub fn new<'a>(metrics: impl IntoIterator<Item = &'a MetricSpec>, start: Timestamp) -> Self {
        AnalysisRun {
            start,
            judge: RunJudge::new(metrics),
        }
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
                    .after(spec.interval.saturating_mul(u64::from(number)));
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
}
