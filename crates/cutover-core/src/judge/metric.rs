//! One metric over one analysis: assessments accumulate into a verdict.

use super::Verdict;
use super::assess::{Assessment, assess};
use super::evidence::Evidence;
use super::grid;
use super::inference::{self, Levels};
use super::measurement::{Measurement, MeasurementResult};
use super::progress::{MetricProgress, PersistedEvidence, answered, bounded_assessment};
use crate::spec::MetricSpec;

/// Judges one metric over one analysis, measurement by measurement, with Argo Rollouts'
/// rules, and decides as early as the rules allow so that a bad candidate is rolled back
/// without waiting for the remaining measurements.
///
/// * More failed measurements than `failureLimit`: [`Verdict::Failure`] at once.
/// * More inconclusive measurements than `inconclusiveLimit`: [`Verdict::Inconclusive`]
///   at once.
/// * More provider errors in a row than `consecutiveErrorLimit`: [`Verdict::Error`] at
///   once. Any measurement the provider answered ends the run of errors; errors do not
///   count towards `count`.
/// * `count` answered measurements in, none of the above: [`Verdict::Success`], provided
///   at least one of them passed. When none passed (every one failed or was inconclusive,
///   within limits set that loosely), the verdict is [`Verdict::Inconclusive`]: no data is
///   never a pass. With `count` 0 there is nothing to measure, so the judge starts out
///   decided inconclusive.
///
/// Once decided, the verdict never changes: later measurements are ignored, so a late
/// pass cannot undo a failure that a rollback may already be acting on.
///
/// **On evidence** (measurements that carry counts and histograms, for metrics with an
/// [`EvidenceKind`](crate::spec::EvidenceKind)) the windows of the analysis are pooled and
/// each measurement judges everything so far with the tests of `inference`. A failure
/// counts at any measurement; a pass decides only from measurement `count` on (the least
/// the analysis observes); an undecided measurement before `maxCount` (default `count`) is
/// pending, not inconclusive, since the next window adds evidence. Failing is tested at the
/// metric's confidence split over every measurement and check, and over the run's metrics
/// (Bonferroni), passing over the measurements from `count` to `maxCount`, so looking often
/// does not raise the chance of a wrong verdict.
///
/// The judge does not read the clock: the driver measures every `interval` and hands each
/// result to [`MetricJudge::record`].
#[derive(Clone, Debug, PartialEq)]
pub struct MetricJudge {
    spec: MetricSpec,
    passed: u32,
    failed: u32,
    inconclusive: u32,
    pending: u32,
    errors: u32,
    consecutive_errors: u32,
    last_value: Option<f64>,
    last_assessment: Option<Assessment>,
    decision: Option<(Verdict, String)>,
    /// The candidate's and stable's evidence pooled over the analysis, once a measurement
    /// brought evidence.
    pooled: Option<(Evidence, Option<Evidence>)>,
    /// The grid level the pooled latency histograms are kept at (see [`super::grid`]); a
    /// window is brought to it before it is pooled.
    level: u8,
    /// How many metrics of the run share the chance of a false failure (see
    /// [`MetricJudge::in_run_of`]).
    family: u32,
}

impl MetricJudge {
    /// A judge for one analysis of the metric `spec`, with no measurement yet.
    pub fn new(spec: &MetricSpec) -> Self {
        let mut judge = MetricJudge {
            spec: spec.clone(),
            passed: 0,
            failed: 0,
            inconclusive: 0,
            pending: 0,
            errors: 0,
            consecutive_errors: 0,
            last_value: None,
            last_assessment: None,
            decision: None,
            pooled: None,
            level: 0,
            family: 1,
        };
        judge.decide();
        judge
    }

    /// A judge for one of `metrics` metrics of one analysis run. Any one metric's failure
    /// fails the run, so on evidence the run's chance of failing a candidate as good as
    /// stable is split between its metrics (Bonferroni): the run, not each metric, keeps
    /// it within `1 - confidence`.
    pub fn in_run_of(spec: &MetricSpec, metrics: usize) -> Self {
        MetricJudge {
            family: u32::try_from(metrics).unwrap_or(u32::MAX).max(1),
            ..MetricJudge::new(spec)
        }
    }

    /// Assesses one measurement attempt and counts it. Returns the assessment, or `None`
    /// when the metric was already decided and the result was ignored.
    pub fn record(&mut self, result: &MeasurementResult) -> Option<&Assessment> {
        if self.decision.is_some() {
            return None;
        }
        let on_evidence = match result {
            MeasurementResult::Value(m) if m.candidate_evidence.is_some() => self.pool(m),
            _ => false,
        };
        let assessment = if on_evidence {
            self.assess_pooled()
        } else if self.pooled.is_some() && matches!(result, MeasurementResult::Value(_)) {
            // Once judged on evidence, a bare value adds nothing to the pooled evidence and
            // must not pass the metric by itself.
            Assessment::inconclusive("this measurement brought no evidence to add to the analysis")
        } else {
            assess(&self.spec, result)
        };
        let on_evidence = on_evidence || self.pooled.is_some();
        // This measurement's number, from 1, when the provider answered.
        let look = self.measurements().saturating_add(1);
        match &assessment {
            Assessment::Error { .. } => {
                self.errors = self.errors.saturating_add(1);
                self.consecutive_errors = self.consecutive_errors.saturating_add(1);
            }
            Assessment::Pass if on_evidence && look < self.spec.count => {
                self.pending = self.pending.saturating_add(1);
            }
            Assessment::Pass => self.passed = self.passed.saturating_add(1),
            Assessment::Fail { .. } => self.failed = self.failed.saturating_add(1),
            Assessment::Inconclusive { .. }
                if on_evidence && look < self.spec.most_measurements() =>
            {
                self.pending = self.pending.saturating_add(1);
            }
            Assessment::Inconclusive { .. } => {
                self.inconclusive = self.inconclusive.saturating_add(1);
            }
        }
        if !matches!(assessment, Assessment::Error { .. }) {
            self.consecutive_errors = 0;
        }
        if let MeasurementResult::Value(measurement) = result {
            // On evidence, the estimate the verdict rests on (the pooled error rate or
            // quantile), so the number shown and the reason given agree.
            self.last_value = self
                .pooled_estimate()
                .or(measurement.candidate)
                .filter(|v| !v.is_nan());
        }
        self.last_assessment = Some(assessment);
        self.decide();
        self.last_assessment.as_ref()
    }

    /// Adds a measurement's evidence to the pool; `false` when the metric cannot be judged
    /// on evidence, so the measurement is judged on its values.
    fn pool(&mut self, measurement: &Measurement) -> bool {
        let (Some(candidate), Some(_)) =
            (&measurement.candidate_evidence, self.spec.evidence_kind())
        else {
            return false;
        };
        let level = self.level;
        let (pooled_candidate, pooled_stable) = self
            .pooled
            .get_or_insert_with(|| (Evidence::default(), None));
        pooled_candidate.merge(&at_level(candidate, level));
        if let Some(stable) = &measurement.stable_evidence {
            pooled_stable
                .get_or_insert_with(Evidence::default)
                .merge(&at_level(stable, level));
        }
        true
    }

    /// The candidate's pooled error rate or latency quantile, when judged on evidence.
    fn pooled_estimate(&self) -> Option<f64> {
        let (candidate, _) = self.pooled.as_ref()?;
        match self.spec.evidence_kind()? {
            crate::spec::EvidenceKind::ErrorRate => candidate.error_rate(),
            crate::spec::EvidenceKind::Latency { quantile } => candidate.latency.quantile(quantile),
        }
    }

    /// How many latency buckets the pooled histograms would have at grid `level`.
    pub(crate) fn buckets_at(&self, level: u8) -> usize {
        self.pooled.as_ref().map_or(0, |(candidate, stable)| {
            std::iter::once(candidate)
                .chain(stable)
                .map(|e| grid::buckets_at(&e.latency, level))
                .sum()
        })
    }

    /// Keeps the pooled latency histograms at grid `level` from now on (a level below the
    /// current one changes nothing: resolution once given up is not made up).
    pub(crate) fn coarsen_to(&mut self, level: u8) {
        if level <= self.level {
            return;
        }
        self.level = level;
        if let Some((candidate, stable)) = &mut self.pooled {
            for evidence in std::iter::once(candidate).chain(stable.as_mut()) {
                evidence.latency = grid::to_level(&evidence.latency, level);
            }
        }
    }

    /// Judges the pooled evidence at this measurement's levels.
    fn assess_pooled(&self) -> Assessment {
        let (Some((candidate, stable)), Some(kind)) = (&self.pooled, self.spec.evidence_kind())
        else {
            return Assessment::inconclusive("no evidence");
        };
        let spec = &self.spec;
        let most = spec.most_measurements();
        let levels = Levels::new(
            spec.confidence,
            most,
            most.saturating_sub(spec.count).saturating_add(1),
            inference::fail_checks(spec).saturating_mul(self.family),
        );
        inference::assess_pooled(spec, kind, candidate, stable.as_ref(), levels)
    }

    /// The pooled evidence of the analysis so far: the candidate's and stable's, once a
    /// measurement brought evidence.
    pub fn pooled(&self) -> Option<(&Evidence, Option<&Evidence>)> {
        self.pooled.as_ref().map(|(c, s)| (c, s.as_ref()))
    }

    /// Applies the rules to the counts so far; called only while undecided.
    fn decide(&mut self) {
        let spec = &self.spec;
        let last_reason = self
            .last_assessment_reason()
            .map(|r| format!(" (last: {r})"))
            .unwrap_or_default();
        self.decision = if self.failed > spec.failure_limit {
            Some((
                Verdict::Failure,
                format!(
                    "{} failed measurements, more than failureLimit {}{last_reason}",
                    self.failed, spec.failure_limit
                ),
            ))
        } else if self.pooled.is_some() && self.consecutive_errors <= spec.consecutive_error_limit {
            self.decide_on_evidence()
        } else if self.inconclusive > spec.inconclusive_limit {
            Some((
                Verdict::Inconclusive,
                format!(
                    "{} inconclusive measurements, more than inconclusiveLimit {}{last_reason}",
                    self.inconclusive, spec.inconclusive_limit
                ),
            ))
        } else if self.consecutive_errors > spec.consecutive_error_limit {
            Some((
                Verdict::Error,
                format!(
                    "{} provider errors in a row, more than consecutiveErrorLimit {}{last_reason}",
                    self.consecutive_errors, spec.consecutive_error_limit
                ),
            ))
        } else if self.measurements() >= spec.count {
            let count = self.measurements();
            if spec.count == 0 {
                Some((
                    Verdict::Inconclusive,
                    "count is 0: nothing was measured".to_string(),
                ))
            } else if self.passed == 0 {
                Some((
                    Verdict::Inconclusive,
                    format!("none of the {count} measurements passed"),
                ))
            } else {
                Some((
                    Verdict::Success,
                    format!("{} of {count} measurements passed", self.passed),
                ))
            }
        } else {
            None
        };
    }

    /// The verdict on pooled evidence: a pass from measurement `count` on succeeds; undecided
    /// at `maxCount` is inconclusive.
    fn decide_on_evidence(&self) -> Option<(Verdict, String)> {
        let looks = self.measurements();
        let spec = &self.spec;
        if looks >= spec.count && self.passed > 0 {
            let confidence = super::assess::pct(spec.confidence * 100.0);
            return Some((
                Verdict::Success,
                format!(
                    "the evidence of {looks} measurements excludes a breach at {confidence}% confidence"
                ),
            ));
        }
        if looks >= spec.most_measurements() {
            let last = self
                .last_assessment_reason()
                .map(|r| format!(": {r}"))
                .unwrap_or_default();
            return Some((
                Verdict::Inconclusive,
                format!("after {looks} measurements the evidence cannot decide{last}"),
            ));
        }
        None
    }

    /// The reason of the last assessment, to say what tipped the verdict.
    fn last_assessment_reason(&self) -> Option<String> {
        self.last_assessment
            .as_ref()
            .and_then(Assessment::reason)
            .map(str::to_string)
    }

    /// The metric's name, as analysis steps and reports call it.
    pub fn name(&self) -> &str {
        &self.spec.name
    }

    /// The metric being judged: its interval, count and limits tell the driver when to
    /// measure.
    pub fn spec(&self) -> &MetricSpec {
        &self.spec
    }

    /// The verdict, or `None` while the metric is undecided and more measurements are
    /// needed.
    pub fn verdict(&self) -> Option<Verdict> {
        self.decision.as_ref().map(|(verdict, _)| *verdict)
    }

    /// Why the metric was decided as it was, for the operator; `None` while undecided.
    pub fn reason(&self) -> Option<&str> {
        self.decision.as_ref().map(|(_, reason)| reason.as_str())
    }

    /// Measurements the provider answered (passed, failed, inconclusive or, on evidence,
    /// pending): those that count towards `count`. Provider errors are not among them.
    pub fn measurements(&self) -> u32 {
        answered([self.passed, self.failed, self.inconclusive, self.pending])
    }

    /// Measurement attempts of every kind, provider errors included.
    pub fn attempts(&self) -> u32 {
        self.measurements().saturating_add(self.errors)
    }

    /// Answered measurements still needed to reach `count`, if nothing decides earlier.
    pub fn remaining(&self) -> u32 {
        self.spec.count.saturating_sub(self.measurements())
    }

    /// Measurements that passed every check.
    pub fn passed(&self) -> u32 {
        self.passed
    }

    /// Measurements that failed a check.
    pub fn failed(&self) -> u32 {
        self.failed
    }

    /// Measurements with too little data to tell.
    pub fn inconclusive(&self) -> u32 {
        self.inconclusive
    }

    /// On evidence, measurements that could not decide yet while more were to come.
    pub fn pending(&self) -> u32 {
        self.pending
    }

    /// Attempts where the provider could not be asked, in all.
    pub fn errors(&self) -> u32 {
        self.errors
    }

    /// Provider errors since the provider last answered: more than
    /// `consecutiveErrorLimit` ends the metric in [`Verdict::Error`].
    pub fn consecutive_errors(&self) -> u32 {
        self.consecutive_errors
    }

    /// The candidate's value in the last answered measurement, for status displays: on
    /// evidence, its error rate or latency quantile over the pooled evidence the verdict rests
    /// on, otherwise the provider's value. `None` before any or when it had no data. A
    /// provider error leaves it as it was.
    pub fn last_value(&self) -> Option<f64> {
        self.last_value
    }

    /// The assessment of the last recorded attempt, errors included.
    pub fn last_assessment(&self) -> Option<&Assessment> {
        self.last_assessment.as_ref()
    }

    /// The judge's counts and pooled evidence in their persisted form; `read_until` and
    /// `shifted_ms` are the schedule's and are left at their defaults. Evidence that cannot
    /// be persisted (a histogram off the grid and too large) is left out, and the metric
    /// starts over after a restart.
    pub fn progress(&self) -> MetricProgress {
        let persisted = self.pooled.as_ref().and_then(|(candidate, stable)| {
            let candidate = PersistedEvidence::of(candidate, self.level)?;
            let stable = match stable {
                Some(stable) => Some(PersistedEvidence::of(stable, self.level)?),
                None => None,
            };
            Some((candidate, stable))
        });
        let (candidate, stable) = persisted.map_or((None, None), |(c, s)| (Some(c), s));
        MetricProgress {
            name: self.spec.name.clone(),
            passed: self.passed,
            failed: self.failed,
            inconclusive: self.inconclusive,
            pending: self.pending,
            errors: self.errors,
            consecutive_errors: self.consecutive_errors,
            last_value: self.last_value,
            last_assessment: self.last_assessment.as_ref().map(bounded_assessment),
            candidate,
            stable,
            read_until: None,
            shifted_ms: 0,
        }
    }

    /// A judge for one of `metrics` metrics of a run (as [`MetricJudge::in_run_of`]) that
    /// goes on from `progress`, persisted before a restart, its histograms at grid `level`.
    /// Progress that does not fit the spec — more answered measurements than the metric
    /// takes, more errors in a row than it tolerates, numbers that are not finite, buckets
    /// off the run's level, evidence for a metric not judged on evidence — is not trusted:
    /// the judge starts afresh (`None`), so a damaged state makes an analysis longer. A
    /// metric judged on evidence resumes passed only when the persisted evidence itself
    /// passes: counts alone cannot pass it.
    pub fn resumed(
        spec: &MetricSpec,
        metrics: usize,
        level: u8,
        progress: &MetricProgress,
    ) -> Option<Self> {
        let mut judge = MetricJudge::in_run_of(spec, metrics);
        let on_evidence = spec.evidence_kind().is_some();
        let at_run_level =
            |e: &Option<PersistedEvidence>| e.as_ref().is_none_or(|e| e.level == level);
        let fits = progress.name == spec.name
            && progress.is_sound()
            && progress.measurements() <= spec.most_measurements()
            && progress.consecutive_errors <= spec.consecutive_error_limit.saturating_add(1)
            && (progress.candidate.is_none() || on_evidence)
            && (progress.stable.is_none() || progress.candidate.is_some())
            && at_run_level(&progress.candidate)
            && at_run_level(&progress.stable);
        if !fits || judge.decision.is_some() {
            return None;
        }
        let candidate = match &progress.candidate {
            Some(c) => Some(c.evidence()?),
            None => None,
        };
        let stable = match &progress.stable {
            Some(s) => Some(s.evidence()?),
            None => None,
        };
        judge.passed = progress.passed;
        judge.failed = progress.failed;
        judge.inconclusive = progress.inconclusive;
        judge.pending = progress.pending;
        judge.errors = progress.errors;
        judge.consecutive_errors = progress.consecutive_errors;
        judge.last_value = progress.last_value;
        judge.last_assessment = progress.last_assessment.clone();
        judge.level = level.min(grid::MAX_LEVEL);
        judge.pooled = candidate.map(|c| (c, stable));
        judge.decide();
        let passed = matches!(judge.decision, Some((Verdict::Success, _)));
        let shown = match &judge.pooled {
            Some(_) => judge.assess_pooled() == Assessment::Pass,
            None => !on_evidence,
        };
        if passed && !shown {
            return None;
        }
        Some(judge)
    }
}

/// `evidence` with its latency histogram at grid `level`.
fn at_level(evidence: &Evidence, level: u8) -> Evidence {
    if level == 0 {
        return evidence.clone();
    }
    Evidence {
        latency: grid::to_level(&evidence.latency, level),
        ..evidence.clone()
    }
}

#[cfg(test)]
mod tests;
