use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::Duration;

/// A hard limit the proxy checks by itself on a sliding window. A trip cuts all traffic to
/// the candidate within a second and raises an event on which the controller rolls the
/// release back, without waiting for an analysis interval.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GuardrailSpec {
    /// Unique name, shown in events and the rollback reason.
    pub name: String,
    /// What the proxy watches, on the candidate's traffic.
    pub metric: GuardrailMetric,
    /// The limit: a window whose value exceeds it trips the guardrail.
    pub max: f64,
    /// The sliding window.
    #[serde(default = "default_window")]
    pub window: Duration,
    /// A window with fewer candidate requests than this never trips.
    #[serde(default = "default_min_requests")]
    pub min_requests: u64,
}

fn default_window() -> Duration {
    Duration::from_secs(10)
}

fn default_min_requests() -> u64 {
    20
}

/// What a guardrail watches.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum GuardrailMetric {
    /// Share of 5xx responses and upstream errors, 0 to 1.
    ErrorRate,
    /// 99th percentile latency, in seconds.
    LatencyP99,
}
