//! The web provider: GET a URL, read a number from the JSON answer by JSON pointer.
//!
//! Header values given by reference are read at each request; messages show the URL with
//! its credentials (userinfo, key-like query parameters) redacted.

use cutover_core::judge::MeasurementResult;
use cutover_core::spec::WebProvider;
use cutover_core::spec::secret::redact_url;
use http_body_util::{BodyExt, Empty, Limited};

use crate::http::{HttpClient, client, per_version_measurement};
use crate::{Context, render};

/// Largest answer read.
const MAX_BODY: usize = 1024 * 1024;

/// An HTTP client for web metrics.
#[derive(Clone)]
pub struct WebClient {
    client: HttpClient,
}

impl Default for WebClient {
    fn default() -> Self {
        WebClient { client: client() }
    }
}

impl WebClient {
    /// Measures the metric: once for the candidate (`{{version}}` filled with its name, or
    /// the URL as rendered), and once for stable when the URL has `{{version}}`.
    pub async fn measure(
        &self,
        provider: &WebProvider,
        context: &Context<'_>,
    ) -> MeasurementResult {
        // A URL given by reference is read at each measurement.
        let template = match crate::secrets::resolve(&provider.url) {
            Ok(template) => template,
            Err(e) => {
                return MeasurementResult::Error(format!(
                    "{}: {e}",
                    crate::secrets::describe_url(&provider.url)
                ));
            }
        };
        per_version_measurement(&template, context, |version| {
            self.fetch(provider, &template, context, Some(version))
        })
        .await
    }

    /// The number at the pointer; `Ok(None)` when the document has no number there (no
    /// data), `Err` when the URL cannot be asked or the answer is not JSON.
    async fn fetch(
        &self,
        provider: &WebProvider,
        template: &str,
        context: &Context<'_>,
        version: Option<&str>,
    ) -> Result<Option<f64>, String> {
        let target = render(template, context, version, crate::Destination::Url)
            .map_err(|e| format!("the URL cannot be written: {e}"))?;
        // What messages show: credentials in an inline URL are hidden, a URL given by
        // reference is not shown at all.
        let url = match &provider.url {
            cutover_core::spec::SecretValue::Inline(_) => redact_url(&target),
            reference => crate::secrets::describe_url(reference),
        };
        let mut request = http::Request::get(&target);
        for (name, value) in
            crate::secrets::headers(&provider.headers).map_err(|e| format!("{url}: {e}"))?
        {
            request = request.header(name, value);
        }
        let request = request
            .body(Empty::new())
            .map_err(|e| format!("{url}: cannot build the request: {e}"))?;
        let timeout: std::time::Duration = provider.timeout.into();
        let response = match tokio::time::timeout(timeout, self.client.request(request)).await {
            Ok(Ok(response)) => response,
            Ok(Err(e)) => return Err(format!("{url}: {}", crate::https::error_chain(&e))),
            Err(_) => return Err(format!("{url}: no answer within {}", provider.timeout)),
        };
        let status = response.status();
        if !status.is_success() {
            return Err(format!("{url}: answered {status}"));
        }
        let body = Limited::new(response.into_body(), MAX_BODY)
            .collect()
            .await
            .map_err(|e| format!("{url}: {e}"))?
            .to_bytes();
        let document: serde_json::Value = serde_json::from_slice(&body)
            .map_err(|e| format!("{url}: the answer is not JSON: {e}"))?;
        Ok(match document.pointer(&provider.json_pointer) {
            Some(serde_json::Value::Number(n)) => n.as_f64(),
            Some(serde_json::Value::String(s)) => s.trim().parse().ok(),
            _ => None,
        })
    }
}
