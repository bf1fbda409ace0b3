//! What the HTTP providers (Prometheus, web) share: the client, and asking once per version.

use std::future::Future;

use bytes::Bytes;
use cutover_core::judge::{Measurement, MeasurementResult};
use http_body_util::Empty;

use crate::Context;
use crate::template::per_version;

/// An HTTP and HTTPS client with a connect timeout.
pub(crate) type HttpClient = crate::https::HttpsClient<Empty<Bytes>>;

pub(crate) fn client() -> HttpClient {
    crate::https::client()
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
