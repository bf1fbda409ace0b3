//! One analysis run over several metrics.

use super::Verdict;
use super::assess::Assessment;
use super::measurement::MeasurementResult;
use super::metric::MetricJudge;
use crate::spec::MetricSpec;

/// A measurement was handed in for a metric the run does not judge: a driver bug or a
/// renamed metric, reported rather than silently dropped.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("no metric named '{name}' in this analysis{}", known_list(.known))]
pub struct UnknownMetric {
    /// The name that was asked for.
    pub name: String,
    /// The metrics the run does judge, in order, to spot a misspelling.
    pub known: Vec<String>,
}

fn known_list(known: &[String]) -> String {
    if known.is_empty() {
        "; it has no metrics".to_string()
    } else {
        format!("; its metrics are: {}", known.join(", "))
    }
}

/// Judges one analysis run: every metric of an analysis step, each with its own
/// [`MetricJudge`], combined into one verdict.
///
/// The run fails as soon as any metric fails, even while others are still measuring, so
/// that a rollback is not delayed. Otherwise it is decided once every metric is: any
/// [`Verdict::Error`] makes it an error, else any [`Verdict::Inconclusive`] makes it
/// inconclusive, else it succeeds. A run without metrics is inconclusive: nothing was
/// checked, and that is never a pass.
///
/// Once the run is decided its verdict never changes, and further measurements are
/// ignored.
#[derive(Clone, Debug, PartialEq)]
pub struct RunJudge {
    metrics: Vec<MetricJudge>,
}

impl RunJudge {
    /// A run judging the given metrics, in that order. Metric names are unique in a valid
    /// release file; should one repeat, the first metric of that name is kept.
    pub fn new<'a>(specs: impl IntoIterator<Item = &'a MetricSpec>) -> Self {
        let mut unique: Vec<&MetricSpec> = Vec::new();
        for spec in specs {
            if unique.iter().all(|m| m.name != spec.name) {
                unique.push(spec);
            }
        }
        let family = unique.len();
        RunJudge {
            metrics: unique
                .into_iter()
                .map(|spec| MetricJudge::in_run_of(spec, family))
                .collect(),
        }
    }

    /// Records one measurement attempt of the metric `metric_name`. Returns its assessment,
    /// or `Ok(None)` when it was ignored because the metric or the whole run was already
    /// decided; an error when the run has no such metric.
    pub fn record(
        &mut self,
        metric_name: &str,
        result: &MeasurementResult,
    ) -> Result<Option<&Assessment>, UnknownMetric> {
        let decided = self.verdict().is_some();
        let known: Vec<String> = if self.metrics.iter().any(|m| m.name() == metric_name) {
            Vec::new()
        } else {
            self.metrics.iter().map(|m| m.name().to_string()).collect()
        };
        let Some(metric) = self.metrics.iter_mut().find(|m| m.name() == metric_name) else {
            return Err(UnknownMetric {
                name: metric_name.to_string(),
                known,
            });
        };
        if decided {
            return Ok(None);
        }
        Ok(metric.record(result))
    }

    /// The judge of the metric `name`, for its counts and last value.
    pub fn metric(&self, name: &str) -> Option<&MetricJudge> {
        self.metrics.iter().find(|m| m.name() == name)
    }

    /// Puts `judge` in place of the metric judge of the same name (a judge resumed from
    /// persisted progress); a judge of a metric the run does not have is dropped.
    pub(crate) fn replace(&mut self, judge: MetricJudge) {
        if let Some(slot) = self.metrics.iter_mut().find(|m| m.name() == judge.name()) {
            *slot = judge;
        }
    }

    /// Applies `change` to every metric's judge.
    pub(crate) fn each_metric_mut(&mut self, change: impl FnMut(&mut MetricJudge)) {
        self.metrics.iter_mut().for_each(change);
    }

    /// Every metric's judge, in the order given.
    pub fn metrics(&self) -> &[MetricJudge] {
        &self.metrics
    }

    /// The metrics still undecided: those the driver must go on measuring.
    pub fn pending(&self) -> impl Iterator<Item = &MetricJudge> {
        self.metrics.iter().filter(|m| m.verdict().is_none())
    }

    /// The run's verdict, or `None` while it is undecided.
    pub fn verdict(&self) -> Option<Verdict> {
        if self.metrics.is_empty() {
            return Some(Verdict::Inconclusive);
        }
        let verdicts: Vec<Option<Verdict>> =
            self.metrics.iter().map(MetricJudge::verdict).collect();
        if verdicts.contains(&Some(Verdict::Failure)) {
            Some(Verdict::Failure)
        } else if verdicts.contains(&None) {
            None
        } else if verdicts.contains(&Some(Verdict::Error)) {
            Some(Verdict::Error)
        } else if verdicts.contains(&Some(Verdict::Inconclusive)) {
            Some(Verdict::Inconclusive)
        } else {
            Some(Verdict::Success)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::judge::measurement::Measurement;
    use crate::judge::testing::spec;

    fn metric(name: &str, count: u32) -> MetricSpec {
        MetricSpec {
            name: name.to_string(),
            max: Some(1.0),
            count,
            consecutive_error_limit: 0,
            ..spec()
        }
    }

    fn value(v: f64) -> MeasurementResult {
        MeasurementResult::Value(Measurement::of_candidate(v))
    }

    #[test]
    fn a_run_with_zero_metrics_is_inconclusive() {
        let run = RunJudge::new([]);
        assert_eq!(run.verdict(), Some(Verdict::Inconclusive));
    }

    #[test]
    fn one_failing_metric_fails_the_run_early() {
        let specs = [metric("errors", 5), metric("latency", 5)];
        let mut run = RunJudge::new(&specs);
        run.record("latency", &value(0.5)).ok();
        assert_eq!(run.verdict(), None);
        let assessment = run.record("errors", &value(3.0)).ok().flatten().cloned();
        assert!(
            matches!(assessment, Some(Assessment::Fail { .. })),
            "{assessment:?}"
        );
        assert_eq!(run.verdict(), Some(Verdict::Failure));
        assert_eq!(run.metric("latency").and_then(MetricJudge::verdict), None);
        // The run is decided: the other metric's measurements are ignored from now on.
        assert_eq!(run.record("latency", &value(0.5)), Ok(None));
        assert_eq!(
            run.metric("latency").map(MetricJudge::measurements),
            Some(1)
        );
    }

    #[test]
    fn a_run_succeeds_when_every_metric_does() {
        let specs = [metric("errors", 1), metric("latency", 2)];
        let mut run = RunJudge::new(&specs);
        assert_eq!(
            run.record("errors", &value(0.1)),
            Ok(Some(&Assessment::Pass))
        );
        assert_eq!(run.verdict(), None, "latency is still measuring");
        assert_eq!(
            run.pending().map(MetricJudge::name).collect::<Vec<_>>(),
            ["latency"]
        );
        run.record("latency", &value(0.1)).ok();
        run.record("latency", &value(0.2)).ok();
        assert_eq!(run.verdict(), Some(Verdict::Success));
    }

    #[test]
    fn error_outranks_inconclusive_once_every_metric_is_decided() {
        let specs = [metric("a", 1), metric("b", 1), metric("c", 1)];
        let mut run = RunJudge::new(&specs);
        run.record("a", &MeasurementResult::Value(Measurement::default()))
            .ok();
        run.record("b", &MeasurementResult::Error("down".to_string()))
            .ok();
        assert_eq!(run.verdict(), None);
        run.record("c", &value(0.1)).ok();
        assert_eq!(run.verdict(), Some(Verdict::Error));

        let mut run = RunJudge::new(&specs[..2]);
        run.record("a", &MeasurementResult::Value(Measurement::default()))
            .ok();
        run.record("b", &value(0.1)).ok();
        assert_eq!(run.verdict(), Some(Verdict::Inconclusive));
    }

    #[test]
    fn an_unknown_metric_is_an_error_naming_the_known_ones() {
        let specs = [metric("errors", 1), metric("latency", 1)];
        let mut run = RunJudge::new(&specs);
        let error = run.record("latancy", &value(0.1));
        assert_eq!(
            error.map_err(|e| e.to_string()),
            Err(
                "no metric named 'latancy' in this analysis; its metrics are: errors, latency"
                    .to_string()
            )
        );
        let mut empty = RunJudge::new([]);
        assert_eq!(
            empty.record("x", &value(0.1)).map_err(|e| e.to_string()),
            Err("no metric named 'x' in this analysis; it has no metrics".to_string())
        );
    }

    #[test]
    fn a_repeated_metric_name_keeps_the_first() {
        let specs = [metric("errors", 1), metric("errors", 7)];
        let run = RunJudge::new(&specs);
        assert_eq!(run.metrics().len(), 1);
        assert_eq!(run.metric("errors").map(|m| m.spec().count), Some(1));
    }
}
