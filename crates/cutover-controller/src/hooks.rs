//! Webhooks: cutover POSTs a JSON description of the rollout to each hook of a point, one
//! after another; the point passes when every hook answers 2xx.
//!
//! Delivery: `preRollout` and `prePromotion` are awaited and re-run after a controller
//! restart (at least once, so they should be idempotent); `postPromotion` and
//! `onRollback` are informational and run at most once (see `Action::RunHook`).

use std::time::Duration;

use bytes::Bytes;
use cutover_backend::BoxFuture;
use cutover_core::spec::{HookPoint, HookSpec};
use cutover_metrics::https::{HttpsClient, client};
use http_body_util::Full;
use serde::Serialize;

/// What every hook receives.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct HookPayload<'a> {
    /// The release's name.
    pub release: &'a str,
    /// The point being run.
    pub point: HookPoint,
    /// The version serving before the rollout.
    pub stable_version: &'a str,
    /// The version being rolled out.
    pub candidate_version: &'a str,
    /// 1 for the first try, +1 per `retry`.
    pub attempt: u32,
}

/// Where a point's hooks are delivered: over HTTP ([`HookClient`]) in production; a seeded
/// simulation delivers them to a recorder of its own, under paused time, where no socket
/// can wait.
pub trait HookDelivery: Send + Sync {
    /// Runs every hook of a point in order; `Ok` when all passed, else what failed.
    fn deliver<'a>(
        &'a self,
        hooks: &'a [HookSpec],
        payload: &'a HookPayload<'a>,
    ) -> BoxFuture<'a, Result<(), String>>;
}

impl HookDelivery for HookClient {
    fn deliver<'a>(
        &'a self,
        hooks: &'a [HookSpec],
        payload: &'a HookPayload<'a>,
    ) -> BoxFuture<'a, Result<(), String>> {
        Box::pin(self.run(hooks, payload))
    }
}

/// The HTTP client hooks are called with.
#[derive(Clone)]
pub struct HookClient {
    pub(crate) client: HttpsClient<Full<Bytes>>,
}

impl Default for HookClient {
    fn default() -> Self {
        HookClient { client: client() }
    }
}

impl HookClient {
    /// Runs every hook in order; `Ok` when all answered 2xx, else what failed.
    pub async fn run(&self, hooks: &[HookSpec], payload: &HookPayload<'_>) -> Result<(), String> {
        let body = Bytes::from(serde_json::to_vec(payload).unwrap_or_default());
        for hook in hooks {
            self.call(hook, body.clone()).await?;
        }
        Ok(())
    }

    /// One hook, with its retries on timeouts, connection failures and 5xx. Header
    /// references are read at each attempt; messages (which reach the history and the
    /// log) show the URL with its credentials redacted.
    async fn call(&self, hook: &HookSpec, body: Bytes) -> Result<(), String> {
        let url = cutover_metrics::secrets::describe_url(&hook.url);
        let mut last = String::new();
        for attempt in 0..=hook.retries {
            if attempt > 0 {
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            // A URL or header given by reference is read at each attempt: one that cannot
            // be read now (a secret file being rotated) may be readable at the next.
            let target = match cutover_metrics::secrets::resolve(&hook.url) {
                Ok(target) => target,
                Err(e) => {
                    last = format!("hook {url}: {e}");
                    continue;
                }
            };
            let headers = match cutover_metrics::secrets::headers(&hook.headers) {
                Ok(headers) => headers,
                Err(e) => {
                    last = format!("hook {url}: {e}");
                    continue;
                }
            };
            let timeout = Duration::from_millis(hook.timeout.as_millis());
            match post_json(&self.client, &target, headers, body.clone(), timeout).await {
                Err(e) => return Err(format!("hook {url}: {e}")),
                Ok(Posted::TimedOut) => {
                    last = format!("hook {url} did not answer within {}", hook.timeout);
                }
                Ok(Posted::Unreachable(e)) => {
                    last = format!("hook {url} cannot be reached: {e}");
                }
                Ok(Posted::Answered(status)) if status.is_success() => return Ok(()),
                Ok(Posted::Answered(status)) if status.is_server_error() => {
                    last = format!("hook {url} answered {status}");
                }
                Ok(Posted::Answered(status)) => {
                    // A 4xx is the hook's decision: asking again will not change it.
                    return Err(format!("hook {url} answered {status}"));
                }
            }
        }
        Err(last)
    }
}

/// How one POST ended.
#[derive(Debug)]
pub(crate) enum Posted {
    /// The receiver answered with this status (the body is not read).
    Answered(http::StatusCode),
    /// No answer within the timeout.
    TimedOut,
    /// The connection failed: the error's chain, which names no URL.
    Unreachable(String),
}

/// One POST of a JSON body with `headers`, bounded by `timeout`: what hooks and
/// notifications share. The error is a request that cannot be built (a bad URL); its
/// message names no URL, so a secret one is never shown.
pub(crate) async fn post_json(
    client: &HttpsClient<Full<Bytes>>,
    target: &str,
    headers: Vec<(http::HeaderName, http::HeaderValue)>,
    body: Bytes,
    timeout: Duration,
) -> Result<Posted, String> {
    let mut request = http::Request::post(target)
        .header(http::header::CONTENT_TYPE, "application/json")
        .header(http::header::USER_AGENT, "cutover");
    for (name, value) in headers {
        request = request.header(name, value);
    }
    let request = request
        .body(Full::new(body))
        .map_err(|_| "cannot build the request: the URL is not a valid http(s) URL".to_string())?;
    Ok(
        match tokio::time::timeout(timeout, client.request(request)).await {
            Err(_) => Posted::TimedOut,
            Ok(Err(e)) => Posted::Unreachable(cutover_metrics::https::error_chain(&e)),
            Ok(Ok(response)) => Posted::Answered(response.status()),
        },
    )
}
