//! Runs one analysis run: asks each metric's provider at the times the shared schedule
//! (`cutover_core::judge::AnalysisRun`) says, hands the results to the judge, and returns
//! the run's verdict. `cutover analyze` replays recorded samples through the same
//! schedule and judge, so a backtest decides exactly as this does.
//!
//! A run starts from the progress the state machine hands it (`StartAnalysis`): a new run's
//! is empty, a run resumed after a restart has its start, measurements, pooled evidence
//! and the time up to which evidence was read. After every measurement the run reports its
//! progress, which the driver gives the state machine to persist, so a controller killed
//! mid-analysis goes on where it was: no `initialDelay` again, no measurement repeated, no
//! evidence counted twice.

use std::sync::{Arc, Mutex};

use cutover_core::judge::{
    AnalysisProgress, AnalysisRun, Assessment, MeasurementResult, MoreData, Verdict,
};
use cutover_core::spec::{MetricSpec, Provider};
use cutover_metrics::prometheus::PrometheusClient;
use cutover_metrics::web::WebClient;
use cutover_metrics::{Context, WindowSource};
use serde::Serialize;

use crate::clock::Clock;
use crate::metrics::ControllerMetrics;

/// How long after a restart a resumed `builtin` metric is measured at the earliest: the
/// embedded proxy started with the controller, and its evidence holds whole seconds only,
/// so two seconds make sure at least one whole second is in.
const PROXY_SETTLE: cutover_core::Duration = cutover_core::Duration::from_secs(2);

/// Where measurements come from.
#[derive(Clone)]
pub struct Providers {
    /// For `prometheus` metrics.
    pub prometheus: PrometheusClient,
    /// For `web` metrics.
    pub web: WebClient,
    /// For `builtin` metrics: the embedded proxy's windows; `None` when the proxies run
    /// elsewhere, and `builtin` metrics then measure an error.
    pub windows: Option<Arc<dyn WindowSource>>,
}

impl Providers {
    async fn measure(&self, spec: &MetricSpec, context: &Context<'_>) -> MeasurementResult {
        match &spec.provider {
            Provider::Prometheus(p) => self.prometheus.measure(p, context).await,
            Provider::Web(w) => self.web.measure(w, context).await,
            Provider::Builtin(metric) => match &self.windows {
                Some(windows) => {
                    cutover_metrics::builtin::measure(windows.as_ref(), *metric, context)
                }
                None => MeasurementResult::Error(
                    "builtin metrics need the proxy embedded in the controller".into(),
                ),
            },
        }
    }
}

/// One metric of the run in progress, for `cutover status`.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MetricView {
    /// The metric's name.
    pub name: String,
    /// The candidate's last measured value.
    pub last_value: Option<f64>,
    /// The lower limit, if any.
    pub min: Option<f64>,
    /// The upper limit, if any.
    pub max: Option<f64>,
    /// Whether the metric compares the candidate with stable.
    pub compares: bool,
    /// Measurements that passed.
    pub passed: u32,
    /// Measurements that failed.
    pub failed: u32,
    /// Measurements without enough data.
    pub inconclusive: u32,
    /// Measurements the provider could not answer.
    pub errors: u32,
    /// Measurements the metric takes.
    pub count: u32,
    /// The metric's verdict, once decided.
    pub verdict: Option<Verdict>,
    /// The last assessment's reason (why it failed or was inconclusive).
    pub last_reason: Option<String>,
    /// Measurements the provider answered so far (on evidence, pending ones included).
    pub measurements: u32,
    /// The most measurements it may take (`maxCount`, else `count`).
    pub max_count: u32,
    /// On evidence, while undecided: how much more candidate traffic a decision needs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub needs: Option<MoreData>,
}

/// The run in progress, for `cutover status`.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AnalysisView {
    /// The run's number.
    pub run: u32,
    /// The plan step it belongs to.
    pub step: usize,
    /// Its metrics.
    pub metrics: Vec<MetricView>,
    /// The run's verdict, once decided.
    pub verdict: Option<Verdict>,
}

fn view_of(run_number: u32, step: usize, run: &AnalysisRun) -> AnalysisView {
    AnalysisView {
        run: run_number,
        step,
        verdict: run.verdict(),
        metrics: run
            .judge()
            .metrics()
            .iter()
            .map(|m| MetricView {
                name: m.name().to_string(),
                last_value: m.last_value(),
                min: m.spec().min,
                max: m.spec().max,
                compares: m.spec().compare.is_some(),
                passed: m.passed(),
                failed: m.failed(),
                inconclusive: m.inconclusive(),
                errors: m.errors(),
                count: m.spec().count,
                verdict: m.verdict(),
                last_reason: m
                    .last_assessment()
                    .and_then(Assessment::reason)
                    .map(str::to_string),
                measurements: m.measurements(),
                max_count: m.spec().most_measurements(),
                needs: match m.last_assessment() {
                    Some(Assessment::Inconclusive { needs, .. }) => *needs,
                    _ => None,
                },
            })
            .collect(),
    }
}

/// The names an analysis measures.
pub struct Subject<'a> {
    /// The release.
    pub release: &'a str,
    /// The stable version.
    pub stable: &'a str,
    /// The candidate version.
    pub candidate: &'a str,
}

/// Where a run reports its progress.
pub struct Reporting<'a> {
    /// The run as `cutover status` shows it, replaced after every measurement.
    pub view: &'a Mutex<Option<AnalysisView>>,
    /// Counts measurements by result.
    pub counters: &'a ControllerMetrics,
    /// Called after every measurement with the run's progress and how it looks: the
    /// driver has the progress persisted, then shows the view, so a status never shows a
    /// measurement a restart would not find.
    pub on_progress: &'a (dyn Fn(AnalysisProgress, AnalysisView) + Send + Sync),
    /// Where the run reads the time (measurements fall due by it).
    pub clock: Clock,
}

/// Runs an analysis of `metrics` from `progress` (a new run's, or, `resumed`, one
/// persisted before a restart) until it decides; returns the verdict and which metric
/// decided it and why.
pub async fn run(
    providers: &Providers,
    metrics: &[MetricSpec],
    subject: Subject<'_>,
    (run_number, step): (u32, usize),
    (progress, resumed): (&AnalysisProgress, bool),
    reporting: Reporting<'_>,
) -> (Verdict, String) {
    let Reporting {
        view,
        counters,
        on_progress,
        clock,
    } = reporting;
    let now = clock.now();
    let mut run = AnalysisRun::resume(metrics, progress, now);
    if resumed {
        tracing::info!(
            measurements = progress.attempts(),
            "analysis resumed with its measurements so far"
        );
        // The embedded proxy started with this controller and gives evidence of whole
        // seconds only: a builtin metric is measured once the proxy has a whole second to
        // give, not on an empty window that would use up one of its measurements.
        for spec in metrics
            .iter()
            .filter(|m| matches!(m.provider, Provider::Builtin(_)))
        {
            run.hold_until(&spec.name, now.after(PROXY_SETTLE));
        }
    }
    let publish = |run: &AnalysisRun| {
        *view
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) =
            Some(view_of(run_number, step, run));
    };
    publish(&run);
    // On evidence, the run keeps when each metric's seconds were last read (persisted with
    // its progress): the next measurement reads the seconds since then, so windows pooled
    // by the judge never overlap nor leave a gap, also when a measurement runs late, the
    // next one is due at once, or the controller restarted in between.
    loop {
        if let Some(verdict) = run.verdict() {
            publish(&run);
            return (verdict, decided_by(&run, verdict));
        }
        let Some(due_at) = run.next_due() else {
            return (Verdict::Inconclusive, "the analysis has no metrics".into());
        };
        clock.sleep_until(due_at).await;
        for due in run.due(clock.now()) {
            let Some(spec) = metrics.iter().find(|m| m.name == due.metric) else {
                continue;
            };
            let now = clock.now();
            let on_evidence = spec.evidence_kind().is_some();
            let window = match run.read_until(&due.metric).filter(|_| on_evidence) {
                // Whole seconds, as the proxy keeps them.
                Some(last) => cutover_core::Duration::from_secs(
                    (now.0.saturating_sub(last.0).saturating_add(500)) / 1000,
                ),
                None => spec.interval,
            };
            let context = Context {
                release: subject.release,
                stable: subject.stable,
                candidate: subject.candidate,
                interval: window,
            };
            let result = if on_evidence && window.as_secs() == 0 {
                // Due again within the second it was read: nothing new to read.
                MeasurementResult::Value(cutover_core::judge::Measurement::default().with_evidence(
                    cutover_core::judge::Evidence::default(),
                    Some(cutover_core::judge::Evidence::default()),
                ))
            } else {
                providers.measure(spec, &context).await
            };
            if on_evidence && matches!(result, MeasurementResult::Value(_)) {
                run.set_read_until(&due.metric, now);
            }
            let outcome = match run.record(&due.metric, &result) {
                Ok(Some(assessment)) => assessment,
                Ok(None) | Err(_) => continue,
            };
            let label = match &outcome {
                Assessment::Pass => "pass",
                Assessment::Fail { .. } => "fail",
                Assessment::Inconclusive { .. } => "inconclusive",
                Assessment::Error { .. } => "error",
            };
            counters.measurement(subject.release, &due.metric, label);
            tracing::info!(
                run = run_number,
                metric = %due.metric,
                measurement = due.number,
                result = label,
                reason = outcome.reason().unwrap_or(""),
                "measured"
            );
            on_progress(run.progress(run_number), view_of(run_number, step, &run));
        }
    }
}

/// Which metric decided the run, in words.
fn decided_by(run: &AnalysisRun, verdict: Verdict) -> String {
    if verdict == Verdict::Success {
        return "every metric passed".into();
    }
    run.judge()
        .metrics()
        .iter()
        .find(|m| m.verdict() == Some(verdict))
        .map(|m| {
            format!(
                "{}: {}",
                m.name(),
                m.reason().unwrap_or("no reason recorded")
            )
        })
        .unwrap_or_else(|| format!("{verdict:?}"))
}
