//! What each version of a release actually got from the embedded proxy: the share of
//! traffic beside the weight set, and the request rate, error rate and latency second by
//! second, for the dashboard's release page (`GET /v1/releases/{name}/traffic`). Read
//! from the proxy's sliding windows; nothing here is stored.

use cutover_core::spec::GuardrailSpec;
use cutover_proxy::metrics::WindowStats;
use serde::Serialize;

use crate::{Controller, ControllerError};

/// The longest window a traffic request may ask for, in seconds: the proxy keeps about
/// this much history per version, and a bigger answer would only be empty seconds.
pub const MAX_TRAFFIC_SECONDS: u64 = 300;

/// The window a traffic request gets when it names none, in seconds.
pub const DEFAULT_TRAFFIC_SECONDS: u64 = 60;

/// A release's traffic by version, and its guardrails (the limits the proxy holds the
/// candidate's traffic to).
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Traffic {
    /// The release.
    pub name: String,
    /// Whether the controller embeds the proxy that counts the traffic. `false` with
    /// `--no-proxy`: proxies elsewhere count it, and `versions` is empty.
    pub available: bool,
    /// The window, in seconds.
    pub seconds: u64,
    /// The percentage of weighted traffic the controller set on the candidate.
    pub weight_set: u8,
    /// The stable version, then the candidate (when it differs).
    pub versions: Vec<VersionTraffic>,
    /// The release's guardrails, as submitted.
    pub guardrails: Vec<GuardrailSpec>,
}

/// One version's traffic over the window.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct VersionTraffic {
    /// The version's name.
    pub version: String,
    /// `stable` or `candidate`.
    pub role: &'static str,
    /// Percentage of the window's requests (of both versions) this one answered; `None`
    /// when neither answered any.
    pub share: Option<f64>,
    /// The whole window's numbers.
    pub window: WindowStats,
    /// Second by second, oldest first; seconds without requests left out.
    pub series: Vec<TrafficSecond>,
}

/// One second of one version's traffic.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TrafficSecond {
    /// How many seconds ago (0: the second under way).
    pub ago: u64,
    /// Requests completed.
    pub requests: u64,
    /// Of those, 5xx answers and upstream failures.
    pub errors: u64,
    /// Median latency, in seconds.
    pub latency_p50: Option<f64>,
    /// 99th percentile latency, in seconds.
    pub latency_p99: Option<f64>,
}

impl Controller {
    /// The release's traffic over the last `seconds` (at most [`MAX_TRAFFIC_SECONDS`]).
    pub async fn traffic(&self, name: &str, seconds: u64) -> Result<Traffic, ControllerError> {
        let status = self.status(name)?;
        let record = self.record(name).await?;
        let seconds = seconds.clamp(1, MAX_TRAFFIC_SECONDS);
        let mut roles = vec![("stable", status.stable.version.clone())];
        if status.candidate.version != status.stable.version {
            roles.push(("candidate", status.candidate.version.clone()));
        }
        let versions = match &self.inner.proxy {
            None => Vec::new(),
            Some(proxy) => {
                let mut versions: Vec<VersionTraffic> = roles
                    .into_iter()
                    .map(|(role, version)| {
                        let window = proxy.window(name, &version, seconds).unwrap_or_default();
                        let series = proxy
                            .traffic_by_second(name, &version, seconds)
                            .into_iter()
                            .map(|(ago, s)| TrafficSecond {
                                ago,
                                requests: s.requests,
                                errors: s.errors,
                                latency_p50: s.latency_p50,
                                latency_p99: s.latency_p99,
                            })
                            .collect();
                        VersionTraffic {
                            version,
                            role,
                            share: None,
                            window,
                            series,
                        }
                    })
                    .collect();
                let total: u64 = versions.iter().map(|v| v.window.requests).sum();
                for version in &mut versions {
                    version.share =
                        (total > 0).then(|| version.window.requests as f64 * 100.0 / total as f64);
                }
                versions
            }
        };
        Ok(Traffic {
            name: name.to_string(),
            available: self.inner.proxy.is_some(),
            seconds,
            weight_set: status.weight,
            versions,
            guardrails: record.release.spec.guardrails,
        })
    }
}
