//! Helpers shared by the judge's tests.

use crate::Duration;
use crate::spec::{BuiltinMetric, Comparison, Direction, MetricSpec, Provider, StatisticalTest};

/// A metric with no checks and Argo's strictest limits: no failure and no inconclusive
/// measurement tolerated, five measurements.
pub(crate) fn spec() -> MetricSpec {
    MetricSpec {
        name: "error-rate".to_string(),
        provider: Provider::Builtin(BuiltinMetric::ErrorRate),
        min: None,
        max: None,
        compare: None,
        interval: Duration::from_secs(30),
        count: 5,
        initial_delay: Duration::ZERO,
        failure_limit: 0,
        inconclusive_limit: 0,
        consecutive_error_limit: 4,
        min_requests: 1,
        confidence: 0.98,
        max_count: None,
    }
}

/// A comparison in `direction` with no limits yet.
pub(crate) fn compared(direction: Direction) -> Comparison {
    Comparison {
        direction,
        ..Comparison::default()
    }
}

/// A latency metric judged by the Mann-Whitney test alone, at its default settings.
pub(crate) fn latency_spec(direction: Direction) -> MetricSpec {
    MetricSpec {
        name: "latency".to_string(),
        provider: Provider::Builtin(BuiltinMetric::LatencyP50),
        compare: Some(Comparison {
            mann_whitney: Some(StatisticalTest::default()),
            ..compared(direction)
        }),
        ..spec()
    }
}

/// SplitMix64: a small, well-mixed deterministic generator, so that the statistical
/// tests are reproducible without a dependency.
pub(crate) struct SplitMix64(pub(crate) u64);

impl SplitMix64 {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in (0, 1].
    pub(crate) fn uniform(&mut self) -> f64 {
        ((self.next_u64() >> 11) + 1) as f64 / (1u64 << 53) as f64
    }

    /// Standard normal, by Box-Muller.
    fn normal(&mut self) -> f64 {
        let (u1, u2) = (self.uniform(), self.uniform());
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }

    /// Log-normal latencies around `median_seconds`: skewed, like real latencies.
    pub(crate) fn latencies(&mut self, n: usize, median_seconds: f64) -> Vec<f64> {
        (0..n)
            .map(|_| median_seconds * (0.3 * self.normal()).exp())
            .collect()
    }
}

/// Evidence of `requests` draws: each an error with probability `error_rate`, each with a
/// log-normal latency around `median_seconds`, binned as the proxy bins them.
pub(crate) fn drawn_evidence(
    random: &mut SplitMix64,
    requests: usize,
    error_rate: f64,
    median_seconds: f64,
) -> super::Evidence {
    let mut buckets = std::collections::BTreeMap::<u16, f64>::new();
    let mut errors = 0.0;
    for latency in random.latencies(requests, median_seconds) {
        if random.uniform() <= error_rate {
            errors += 1.0;
        }
        let micros = (latency * 1e6) as u64;
        *buckets
            .entry(super::evidence::latency_bucket(micros))
            .or_default() += 1.0;
    }
    super::Evidence {
        requests: requests as f64,
        errors,
        latency: super::Histogram::from_log_linear(buckets),
        seconds: 30.0,
    }
}
