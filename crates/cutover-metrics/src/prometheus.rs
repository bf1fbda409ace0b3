//! The Prometheus provider: an instant PromQL query over Prometheus's HTTP API.
//!
//! The query must come down to one number: a scalar, or a vector of one series (aggregate
//! with `sum()` and the like). An empty vector or NaN is no data; Prometheus unreachable,
//! an error answer, or several series is an error. Neither is ever a pass.

use cutover_core::judge::MeasurementResult;
use cutover_core::spec::PrometheusProvider;
use cutover_core::spec::secret::redact_url;
use http_body_util::{BodyExt, Empty, Limited};

use crate::http::{HttpClient, client, per_version_measurement};
use crate::{Context, render};

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
        per_version_measurement(&provider.query, context, |version| {
            self.query(&address, provider, context, Some(version))
        })
        .await
    }

    /// One instant query; `Ok(None)` for an empty result or NaN.
    async fn query(
        &self,
        address: &str,
        provider: &PrometheusProvider,
        context: &Context<'_>,
        version: Option<&str>,
    ) -> Result<Option<f64>, String> {
        let promql = render(&provider.query, context, version);
        let url = format!(
            "{}/api/v1/query?query={}",
            address.trim_end_matches('/'),
            percent_encode(&promql)
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
        let answer: serde_json::Value = serde_json::from_slice(&body)
            .map_err(|e| format!("Prometheus at {address} answered {status} without JSON: {e}"))?;
        if answer["status"] != "success" {
            let message = answer["error"].as_str().unwrap_or("unknown error");
            return Err(format!(
                "Prometheus rejected the query `{promql}`: {message}"
            ));
        }
        let sample = |value: &serde_json::Value| -> Option<f64> {
            value
                .get(1)
                .and_then(|v| v.as_str())
                .and_then(|v| v.parse::<f64>().ok())
                .filter(|v| !v.is_nan())
        };
        let data = &answer["data"];
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
