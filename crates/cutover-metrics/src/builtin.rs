//! The builtin provider: the proxy's own measurements of what it routed, per version, over
//! the metric's interval. No Prometheus needed.

use cutover_core::judge::{Measurement, MeasurementResult};
use cutover_core::spec::BuiltinMetric;
use cutover_proxy::Proxy;
use cutover_proxy::metrics::WindowStats;

use crate::Context;

/// Where the proxy's windows are read from: the proxy in this process, or (later) a proxy's
/// admin API.
pub trait WindowSource: Send + Sync {
    /// One version's traffic over the last `seconds`; `None` if never routed.
    fn window(&self, release: &str, version: &str, seconds: u64) -> Option<WindowStats>;
    /// The same second by second, for statistical comparisons.
    fn series(&self, release: &str, version: &str, seconds: u64) -> Vec<WindowStats>;
}

impl WindowSource for Proxy {
    fn window(&self, release: &str, version: &str, seconds: u64) -> Option<WindowStats> {
        Proxy::window(self, release, version, seconds)
    }

    fn series(&self, release: &str, version: &str, seconds: u64) -> Vec<WindowStats> {
        self.window_series(release, version, seconds)
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
    MeasurementResult::Value(Measurement {
        candidate: candidate.as_ref().and_then(|w| value(metric, w)),
        stable: stable.as_ref().and_then(|w| value(metric, w)),
        candidate_requests: Some(candidate.map_or(0, |w| w.requests)),
        candidate_samples: samples(context.candidate),
        stable_samples: samples(context.stable),
    })
}
