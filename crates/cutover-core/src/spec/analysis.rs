use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::Duration;
use crate::spec::{SecretSource, SecretValue};

/// The metrics that judge a candidate. Analysis steps refer to them by name.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AnalysisSpec {
    /// The metrics, each with a unique name.
    #[serde(default)]
    pub metrics: Vec<MetricSpec>,
}

/// One metric: where its value comes from and what value passes.
///
/// Each analysis takes `count` measurements, one at the end of each `interval` (each
/// measures that interval's window), the first interval starting after `initialDelay`; so
/// an analysis takes at least `initialDelay + count × interval`. A
/// measurement passes, fails, is inconclusive (too few requests, no data) or is an error
/// (the provider could not be asked). The metric fails once failures exceed
/// `failureLimit`, is inconclusive once inconclusive measurements exceed
/// `inconclusiveLimit`, and passes only when all `count` measurements are in without
/// either. No data is never a pass.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MetricSpec {
    /// Unique name, used by analysis steps and in reports.
    pub name: String,
    /// Where the value comes from.
    pub provider: Provider,
    /// The candidate's value must be at least this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min: Option<f64>,
    /// The candidate's value must be at most this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<f64>,
    /// Compare the candidate with the stable version measured at the same time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compare: Option<Comparison>,
    /// Time between measurements.
    #[serde(default = "default_interval")]
    pub interval: Duration,
    /// Number of measurements in one analysis.
    #[serde(default = "default_count")]
    pub count: u32,
    /// Wait this long after the analysis starts before the first measurement.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub initial_delay: Duration,
    /// Failed measurements tolerated; one more fails the metric.
    #[serde(default)]
    pub failure_limit: u32,
    /// Inconclusive measurements tolerated; one more makes the metric inconclusive.
    #[serde(default)]
    pub inconclusive_limit: u32,
    /// Consecutive provider errors tolerated; one more ends the metric in error.
    #[serde(default = "default_consecutive_error_limit")]
    pub consecutive_error_limit: u32,
    /// A measurement over fewer candidate requests than this is inconclusive. On evidence
    /// (see `confidence`) the floor applies to the requests of the whole analysis so far.
    #[serde(default = "default_min_requests")]
    pub min_requests: u64,
    /// The confidence of every statistical decision on this metric, between 0.5 and 1
    /// (exclusive). Where the provider gives evidence (request and error counts and latency
    /// histograms: `builtin`, or `prometheus` with `proxyMetric`), the measurements of one
    /// analysis are pooled and every threshold and comparison is a test at this confidence:
    /// it passes only when the data excludes a breach, fails only when it shows one, and is
    /// otherwise undecided, saying how much more traffic a decision needs.
    #[serde(default = "default_confidence")]
    pub confidence: f64,
    /// On evidence, keep measuring past `count` while the data cannot decide, up to this many
    /// measurements in all; then the metric is inconclusive. Absent: `count`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_count: Option<u32>,
}

impl MetricSpec {
    /// How this metric's measurements can be judged on evidence, if they can: by its
    /// provider's kind of number.
    pub fn evidence_kind(&self) -> Option<EvidenceKind> {
        match &self.provider {
            Provider::Builtin(metric) => metric.evidence_kind(),
            Provider::Prometheus(p) => p.proxy_metric.and_then(BuiltinMetric::evidence_kind),
            Provider::Web(_) => None,
        }
    }

    /// The most measurements one analysis of this metric takes: `maxCount`, or `count`.
    pub fn most_measurements(&self) -> u32 {
        self.max_count.unwrap_or(self.count).max(self.count)
    }
}

/// What kind of number a metric is, for the tests on evidence.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum EvidenceKind {
    /// A share of failed requests: judged on request and error counts.
    ErrorRate,
    /// A latency quantile (0.99 for p99): judged on the latency histograms.
    Latency {
        /// The quantile, between 0 and 1.
        quantile: f64,
    },
}

fn is_zero(d: &Duration) -> bool {
    *d == Duration::ZERO
}

fn default_interval() -> Duration {
    Duration::from_secs(30)
}

fn default_count() -> u32 {
    5
}

fn default_consecutive_error_limit() -> u32 {
    4
}

fn default_min_requests() -> u64 {
    1
}

/// A metric's source. Exactly one key: `prometheus`, `builtin` or `web`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub enum Provider {
    /// A PromQL query.
    Prometheus(PrometheusProvider),
    /// A number the proxy measured itself, per version: no Prometheus needed.
    Builtin(BuiltinMetric),
    /// A number read from a JSON document served over HTTP.
    Web(WebProvider),
}

/// A Prometheus query.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PrometheusProvider {
    /// Prometheus's base URL. Absent: the controller's configured default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    /// The PromQL query. `{{release}}`, `{{stable}}`, `{{candidate}}` and `{{interval}}`
    /// are replaced before it runs; with `{{version}}` the query runs once per version, so
    /// the candidate can be compared with stable. Give either `query` or `proxyMetric`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub query: String,
    /// How long to wait for an answer.
    #[serde(default = "default_query_timeout")]
    pub timeout: Duration,
    /// Extra request headers, for a Prometheus behind authentication, e.g.
    /// `Authorization: {valueFrom: {file: /run/secrets/prometheus}}` (the file holding
    /// `Bearer ...`). Values may be references, as hook headers.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, SecretValue>,
    /// A bearer token read, at each query, from a file or an environment variable of
    /// the controller and sent as `Authorization: Bearer TOKEN` (as Prometheus's own
    /// `credentials_file`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bearer_token_from: Option<SecretSource>,
    /// Instead of `query`: one of the proxy's own metrics (`error_rate`, `latency_p99`, ...),
    /// read as evidence from Prometheus's copy of the proxy's series
    /// (`cutover_requests_total` and the `cutover_request_duration_seconds` histogram, per
    /// version, `increase()` over the interval), so the comparison is a test on counts and
    /// buckets rather than on two summaries.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxy_metric: Option<BuiltinMetric>,
}

fn default_query_timeout() -> Duration {
    Duration::from_secs(30)
}

/// A metric the proxy computes from what it routed, per version, over the last `interval`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum BuiltinMetric {
    /// Share of responses that are 5xx or upstream errors, 0 to 1.
    ErrorRate,
    /// Median latency in seconds.
    LatencyP50,
    /// 90th percentile latency in seconds.
    LatencyP90,
    /// 95th percentile latency in seconds.
    LatencyP95,
    /// 99th percentile latency in seconds.
    LatencyP99,
    /// Requests per second.
    RequestRate,
}

impl BuiltinMetric {
    /// The name as written in release files.
    pub fn as_str(self) -> &'static str {
        match self {
            BuiltinMetric::ErrorRate => "error_rate",
            BuiltinMetric::LatencyP50 => "latency_p50",
            BuiltinMetric::LatencyP90 => "latency_p90",
            BuiltinMetric::LatencyP95 => "latency_p95",
            BuiltinMetric::LatencyP99 => "latency_p99",
            BuiltinMetric::RequestRate => "request_rate",
        }
    }

    /// How the metric is judged on evidence; `None` for the request rate, a summary only.
    pub fn evidence_kind(self) -> Option<EvidenceKind> {
        let latency = |quantile| Some(EvidenceKind::Latency { quantile });
        match self {
            BuiltinMetric::ErrorRate => Some(EvidenceKind::ErrorRate),
            BuiltinMetric::LatencyP50 => latency(0.5),
            BuiltinMetric::LatencyP90 => latency(0.9),
            BuiltinMetric::LatencyP95 => latency(0.95),
            BuiltinMetric::LatencyP99 => latency(0.99),
            BuiltinMetric::RequestRate => None,
        }
    }
}

/// A JSON document served over HTTP.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WebProvider {
    /// The URL to GET. The same `{{...}}` placeholders as PromQL queries are replaced. A URL
    /// that carries a credential can be a reference (`{valueFrom: {file: PATH}}`,
    /// `{valueFrom: {env: NAME}}`), read by the controller at each measurement.
    pub url: SecretValue,
    /// A JSON pointer (RFC 6901, e.g. `/data/errorRate`) to the number.
    pub json_pointer: String,
    /// Extra request headers. Values may be references read by the controller at each
    /// request (`{valueFrom: {file: PATH}}`, `{valueFrom: {env: NAME}}`), as hook headers.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, SecretValue>,
    /// How long to wait for an answer.
    #[serde(default = "default_query_timeout")]
    pub timeout: Duration,
}

/// A comparison of the candidate with stable, measured over the same window.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Comparison {
    /// Which way is worse.
    #[serde(default)]
    pub direction: Direction,
    /// The candidate may be worse than stable by at most this much, in the metric's unit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_increase: Option<f64>,
    /// The candidate may be worse than stable by at most this percentage of stable's value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_increase_percent: Option<f64>,
    /// Compare the two versions' samples with a Mann-Whitney U test (as Kayenta does), which
    /// catches a regression where no fixed threshold was set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mann_whitney: Option<StatisticalTest>,
}

/// Which way a metric gets worse.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum Direction {
    /// Higher is worse (error rates, latency).
    #[default]
    Increase,
    /// Lower is worse (success rates, throughput).
    Decrease,
    /// Any difference is worse.
    Either,
}

/// Settings of the Mann-Whitney U test.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct StatisticalTest {
    /// Confidence at which a difference counts, between 0.5 and 1 (exclusive).
    #[serde(default = "default_confidence")]
    pub confidence: f64,
    /// A significant difference fails only if the candidate's median is worse by at least
    /// this percentage of stable's median: small but real differences are tolerated. On
    /// evidence it is also the margin a candidate must be shown within to pass, so it must
    /// be above 0 there.
    #[serde(default)]
    pub min_effect_percent: f64,
    /// Fewer samples than this per version: inconclusive.
    #[serde(default = "default_min_samples")]
    pub min_samples: u32,
}

impl Default for StatisticalTest {
    fn default() -> Self {
        StatisticalTest {
            confidence: default_confidence(),
            min_effect_percent: 0.0,
            min_samples: default_min_samples(),
        }
    }
}

fn default_confidence() -> f64 {
    0.98
}

fn default_min_samples() -> u32 {
    8
}
