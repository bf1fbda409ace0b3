//! The builtin provider: the proxy's own measurements of what it routed, per version, over
//! the metric's interval. No Prometheus needed.
//!
//! For the error rate and the latency quantiles it hands the judge evidence (request and
//! error counts, the latency histogram) of the interval's whole seconds, so the judge
//! pools an analysis's windows and tests them; the summaries go along for display.

use cutover_core::judge::{Evidence, Measurement, MeasurementResult};
use cutover_core::spec::BuiltinMetric;
use cutover_proxy::Proxy;
use cutover_proxy::metrics::WindowStats;

use crate::Context;

/// Where the proxy's windows are read from: the proxy in this process, or (later) a proxy's
/// admin API.
pub trait WindowSource: Send + Sync {
    /// One version's traffic over the last `seconds`; `None` if never routed.
    fn window(&self, release: &str, version: &str, seconds: u64) -> Option<WindowStats>;
    /// The same second by second, for statistical comparisons of summaries.
    fn series(&self, release: &str, version: &str, seconds: u64) -> Vec<WindowStats>;
    /// One version's evidence (counts and latency histogram) over the last `seconds`
    /// whole seconds; `None` if never routed.
    fn evidence(&self, release: &str, version: &str, seconds: u64) -> Option<Evidence>;
}

impl WindowSource for Proxy {
    fn window(&self, release: &str, version: &str, seconds: u64) -> Option<WindowStats> {
        Proxy::window(self, release, version, seconds)
    }

    fn series(&self, release: &str, version: &str, seconds: u64) -> Vec<WindowStats> {
        self.window_series(release, version, seconds)
    }

    fn evidence(&self, release: &str, version: &str, seconds: u64) -> Option<Evidence> {
        Proxy::evidence(self, release, version, seconds)
    }
}

/// The metric's value in a window; `None` where the window holds no data for it.
fn value(metric: BuiltinMetric, w: &WindowStats) -> Option<f64> {
    match metric {
        BuiltinMetric::ErrorRate => w.error_rate,
        BuiltinMetric::LatencyP50 => w.latency_p50,
        BuiltinMetric::LatencyP90 => w.latency_p90,
        BuiltinMetric::LatencyP95 => w.latency_p95,
        BuiltinMetric::LatencyP99 => w.latency_p99,
        BuiltinMetric::RequestRate => Some(w.request_rate),
    }
}

/// Measures `metric` for both versions over the context's interval.
pub fn measure(
    source: &dyn WindowSource,
    metric: BuiltinMetric,
    context: &Context<'_>,
) -> MeasurementResult {
    let seconds = context.interval.as_secs().max(1);
    let candidate = source.window(context.release, context.candidate, seconds);
    if let Some(kept) = candidate
        .as_ref()
        .map(|w| w.seconds)
        .filter(|kept| *kept < seconds)
    {
        // Judging the last part of the interval only would miss what happened before it.
        return MeasurementResult::Error(format!(
            "the interval ({}) is longer than the {kept}s the proxy keeps (metricsWindow)",
            context.interval
        ));
    }
    let stable = source.window(context.release, context.stable, seconds);
    let samples = |version: &str| -> Vec<f64> {
        source
            .series(context.release, version, seconds)
            .iter()
            .filter_map(|w| value(metric, w))
            .collect()
    };
    // Evidence for the tests (error rate and latency); the summaries above for display
    // and for the request rate, which has no test on evidence.
    let (candidate_evidence, stable_evidence) = if metric.evidence_kind().is_some() {
        (
            Some(
                source
                    .evidence(context.release, context.candidate, seconds)
                    .unwrap_or_else(|| Evidence {
                        seconds: seconds as f64,
                        ..Evidence::default()
                    }),
            ),
            source.evidence(context.release, context.stable, seconds),
        )
    } else {
        (None, None)
    };
    let on_evidence = candidate_evidence.is_some();
    MeasurementResult::Value(Measurement {
        candidate: candidate.as_ref().and_then(|w| value(metric, w)),
        stable: stable.as_ref().and_then(|w| value(metric, w)),
        candidate_requests: Some(candidate.map_or(0, |w| w.requests)),
        // Per-second summaries are no sample of requests: kept only where no evidence is.
        candidate_samples: if on_evidence {
            Vec::new()
        } else {
            samples(context.candidate)
        },
        stable_samples: if on_evidence {
            Vec::new()
        } else {
            samples(context.stable)
        },
        candidate_evidence,
        stable_evidence,
    })
}
