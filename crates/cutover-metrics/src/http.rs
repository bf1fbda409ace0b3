//! What the HTTP providers (Prometheus, web) share: the client, and asking once per version.

use std::future::Future;
use std::time::Duration as StdDuration;

use bytes::Bytes;
use cutover_core::judge::{Measurement, MeasurementResult};
use http_body_util::Empty;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use crate::Context;
use crate::template::per_version;

/// A plain-HTTP client with a connect timeout.
pub(crate) type HttpClient = Client<HttpConnector, Empty<Bytes>>;

pub(crate) fn client() -> HttpClient {
    let mut connector = HttpConnector::new();
    connector.set_connect_timeout(Some(StdDuration::from_secs(5)));
    Client::builder(TokioExecutor::new()).build(connector)
}

/// Asks `fetch` for the candidate's value and, when `template` has `{{version}}`, for
/// stable's; a failure of either is the measurement's error.
pub(crate) async fn per_version_measurement<'a, F, Fut>(
    template: &str,
    context: &Context<'a>,
    fetch: F,
) -> MeasurementResult
where
    F: Fn(&'a str) -> Fut,
    Fut: Future<Output = Result<Option<f64>, String>>,
{
    let candidate = match fetch(context.candidate).await {
        Ok(value) => value,
        Err(message) => return MeasurementResult::Error(message),
    };
    let stable = if per_version(template) {
        match fetch(context.stable).await {
            Ok(value) => value,
            Err(message) => return MeasurementResult::Error(message),
        }
    } else {
        None
    };
    MeasurementResult::Value(Measurement {
        candidate,
        stable,
        ..Measurement::default()
    })
}
