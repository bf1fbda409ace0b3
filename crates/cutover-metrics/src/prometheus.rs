//! The Prometheus provider: an instant PromQL query over Prometheus's HTTP API.
//!
//! The query must come down to one number: a scalar, or a vector of one series (aggregate
//! with `sum()` and the like). An empty vector or NaN is no data; Prometheus unreachable,
//! an error answer, or several series is an error. Neither is ever a pass.
//!
//! With `proxyMetric` instead of a query, the provider reads the proxy's own series as
//! evidence: per version, `increase()` over the interval of `cutover_requests_total` by
//! status class and of `cutover_request_duration_seconds_bucket` by `le`. The judge then
//! tests counts and buckets, as with the builtin provider, at the resolution of the
//! exported buckets.

use cutover_core::judge::{Evidence, Histogram, Measurement, MeasurementResult};
use cutover_core::spec::secret::redact_url;
use cutover_core::spec::{BuiltinMetric, PrometheusProvider};
use http_body_util::{BodyExt, Empty, Limited};

use crate::http::{HttpClient, client, per_version_measurement};
use crate::{Context, Destination, render};

/// Largest answer read.
const MAX_BODY: usize = 4 * 1024 * 1024;

/// A client for Prometheus's HTTP API.
#[derive(Clone)]
pub struct PrometheusClient {
    client: HttpClient,
    /// Used when a metric names no `address`.
    default_address: Option<String>,
}

impl PrometheusClient {
    /// A client; `default_address` serves metrics that name none.
    pub fn new(default_address: Option<String>) -> Self {
        PrometheusClient {
            client: client(),
            default_address,
        }
    }

    /// Runs the metric's query for the candidate (and for stable when the query has
    /// `{{version}}`).
    pub async fn measure(
        &self,
        provider: &PrometheusProvider,
        context: &Context<'_>,
    ) -> MeasurementResult {
        let Some(address) = provider
            .address
            .clone()
            .or_else(|| self.default_address.clone())
        else {
            return MeasurementResult::Error(
                "no Prometheus address: set provider.prometheus.address or the controller's default".into(),
            );
        };
        if let Some(metric) = provider.proxy_metric {
            return self
                .measure_evidence(&address, provider, metric, context)
                .await;
        }
        per_version_measurement(&provider.query, context, |version| {
            self.query(&address, provider, context, Some(version))
        })
        .await
    }

    /// The proxy's series of both versions as evidence, with their summaries for display.
    async fn measure_evidence(
        &self,
        address: &str,
        provider: &PrometheusProvider,
        metric: BuiltinMetric,
        context: &Context<'_>,
    ) -> MeasurementResult {
        let candidate = self.evidence(address, provider, metric, context, context.candidate);
        let stable = self.evidence(address, provider, metric, context, context.stable);
        let (candidate, stable) = match (candidate.await, stable.await) {
            (Ok(c), Ok(s)) => (c, s),
            (Err(e), _) | (_, Err(e)) => return MeasurementResult::Error(e),
        };
        let summary = |e: &Evidence| match metric.evidence_kind() {
            Some(cutover_core::spec::EvidenceKind::ErrorRate) => e.error_rate(),
            Some(cutover_core::spec::EvidenceKind::Latency { quantile }) => {
                e.latency.quantile(quantile)
            }
            None => None,
        };
        MeasurementResult::Value(
            Measurement {
                candidate: summary(&candidate),
                stable: summary(&stable),
                ..Measurement::default()
            }
            .with_requests(candidate.requests.max(0.0).round() as u64)
            .with_evidence(candidate, Some(stable)),
        )
    }

    /// One version's counts (and, for latency metrics, buckets) over the interval.
    async fn evidence(
        &self,
        address: &str,
        provider: &PrometheusProvider,
        metric: BuiltinMetric,
        context: &Context<'_>,
        version: &str,
    ) -> Result<Evidence, String> {
        let seconds = context.interval.as_secs().max(1);
        // The names go in as PromQL string literals, escaped by the template renderer.
        let selector = render(
            "release=\"{{release}}\",version=\"{{version}}\"",
            context,
            Some(version),
            Destination::PromQl,
        )
        .map_err(|e| format!("the proxy's series cannot be selected: {e}"))?;
        let classes = self
            .vector(
                address,
                provider,
                &format!(
                    "sum by (code_class) (increase(cutover_requests_total{{{selector}}}[{seconds}s]))"
                ),
                "code_class",
            )
            .await?;
        let requests: f64 = classes.iter().map(|(_, v)| v).sum();
        let errors: f64 = classes
            .iter()
            .filter(|(class, _)| class == "5xx")
            .map(|(_, v)| v)
            .sum();
        let latency = if matches!(
            metric.evidence_kind(),
            Some(cutover_core::spec::EvidenceKind::Latency { .. })
        ) {
            let buckets = self
                .vector(
                    address,
                    provider,
                    &format!(
                        "sum by (le) (increase(cutover_request_duration_seconds_bucket{{{selector}}}[{seconds}s]))"
                    ),
                    "le",
                )
                .await?;
            Histogram::from_cumulative(buckets.iter().filter_map(|(le, count)| {
                let le = if le == "+Inf" {
                    f64::INFINITY
                } else {
                    le.parse().ok()?
                };
                Some((le, *count))
            }))
        } else {
            Histogram::default()
        };
        Ok(Evidence {
            requests,
            errors,
            latency,
            seconds: seconds as f64,
        })
    }

    /// An instant query answering a vector: each series' `label` and value (NaN dropped).
    async fn vector(
        &self,
        address: &str,
        provider: &PrometheusProvider,
        promql: &str,
        label: &str,
    ) -> Result<Vec<(String, f64)>, String> {
        let data = self.ask(address, provider, promql).await?;
        let Some(series) = data["result"].as_array() else {
            return Err(format!("the query `{promql}` did not return a vector"));
        };
        Ok(series
            .iter()
            .filter_map(|s| {
                let name = s["metric"][label].as_str().unwrap_or("").to_string();
                let value = s["value"]
                    .get(1)
                    .and_then(|v| v.as_str())
                    .and_then(|v| v.parse::<f64>().ok())
                    .filter(|v| v.is_finite())?;
                Some((name, value))
            })
            .collect())
    }

    /// Runs one instant query and returns the answer's `data`, or why there is none.
    async fn ask(
        &self,
        address: &str,
        provider: &PrometheusProvider,
        promql: &str,
    ) -> Result<serde_json::Value, String> {
        let url = format!(
            "{}/api/v1/query?query={}",
            address.trim_end_matches('/'),
            percent_encode(promql)
        );
        // Messages name the address without its credentials.
        let address = &redact_url(address);
        let mut request = http::Request::get(&url);
        for (name, value) in crate::secrets::headers(&provider.headers)
            .map_err(|e| format!("Prometheus at {address}: {e}"))?
        {
            request = request.header(name, value);
        }
        if let Some(source) = &provider.bearer_token_from {
            let token = crate::secrets::read_source(source)
                .map_err(|e| format!("Prometheus at {address}: the bearer token: {e}"))?;
            let mut value = http::HeaderValue::try_from(format!("Bearer {token}")).map_err(|_| {
                format!("Prometheus at {address}: the bearer token from {source} is not a valid header value")
            })?;
            value.set_sensitive(true);
            request = request.header(http::header::AUTHORIZATION, value);
        }
        let request = request
            .body(Empty::new())
            .map_err(|e| format!("Prometheus at {address}: cannot build the request: {e}"))?;
        let timeout: std::time::Duration = provider.timeout.into();
        let response = match tokio::time::timeout(timeout, self.client.request(request)).await {
            Ok(Ok(response)) => response,
            Ok(Err(e)) => {
                return Err(format!(
                    "Prometheus at {address} cannot be reached: {}",
                    crate::https::error_chain(&e)
                ));
            }
            Err(_) => {
                return Err(format!(
                    "Prometheus at {address} did not answer within {}",
                    provider.timeout
                ));
            }
        };
        let status = response.status();
        let body = Limited::new(response.into_body(), MAX_BODY)
            .collect()
            .await
            .map_err(|e| format!("Prometheus at {address}: {e}"))?
            .to_bytes();
        let mut answer: serde_json::Value = serde_json::from_slice(&body)
            .map_err(|e| format!("Prometheus at {address} answered {status} without JSON: {e}"))?;
        if answer["status"] != "success" {
            let message = answer["error"].as_str().unwrap_or("unknown error");
            return Err(format!(
                "Prometheus rejected the query `{promql}`: {message}"
            ));
        }
        Ok(answer["data"].take())
    }

    /// One instant query; `Ok(None)` for an empty result or NaN.
    async fn query(
        &self,
        address: &str,
        provider: &PrometheusProvider,
        context: &Context<'_>,
        version: Option<&str>,
    ) -> Result<Option<f64>, String> {
        let promql = render(&provider.query, context, version, Destination::PromQl)
            .map_err(|e| format!("the query cannot be written: {e}"))?;
        let data = self.ask(address, provider, &promql).await?;
        let sample = |value: &serde_json::Value| -> Option<f64> {
            value
                .get(1)
                .and_then(|v| v.as_str())
                .and_then(|v| v.parse::<f64>().ok())
                .filter(|v| !v.is_nan())
        };
        let data = &data;
        match data["resultType"].as_str() {
            Some("scalar") => Ok(sample(&data["result"])),
            Some("vector") => match data["result"].as_array().map(Vec::as_slice) {
                None | Some([]) => Ok(None),
                Some([series]) => Ok(sample(&series["value"])),
                Some(many) => Err(format!(
                    "the query `{promql}` returns {} series; aggregate it to one (with sum(), avg(), max() ...)",
                    many.len()
                )),
            },
            other => Err(format!(
                "the query `{promql}` returns a {}; it must come down to one number",
                other.unwrap_or("nothing")
            )),
        }
    }
}

/// Percent-encodes a query-string value (RFC 3986 unreserved characters stay).
fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len() * 3);
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn percent_encoding_keeps_unreserved_characters() {
        assert_eq!(
            super::percent_encode("sum(x{a=\"b c\"})"),
            "sum%28x%7Ba%3D%22b%20c%22%7D%29"
        );
    }
}
