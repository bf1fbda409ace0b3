//! What every JSON API of cutover does the same way, written once for the proxy's admin API
//! (`admin.rs`) and the controller's API (`cutover_controller::api`): the bearer token
//! read from `Authorization` and compared in constant time, a request body read within a
//! size (and time) budget, JSON answers, and query parameters.
//!
//! It lives in the proxy crate because that is the lowest crate both APIs depend on (the
//! controller depends on the proxy, never the other way). Each API keeps its own error
//! document (`{"error": "..."}` for the admin API, `{"error": {"kind", "message"}}` for the
//! controller's) and its own messages; what they share is how a refusal is decided and
//! which status it gets.

use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Response, StatusCode, Uri, header};
use http_body_util::{BodyExt, Limited};
use serde::Serialize;

/// A response body an API can build from a buffer: lets [`json`] and [`respond`] serve
/// both the proxy's boxed bodies and the controller's own body type.
pub trait FromBytes: Sized {
    /// The body holding exactly `bytes`.
    fn from_bytes(bytes: Bytes) -> Self;
}

/// A response with `status`, `content_type` and `body`.
pub fn respond<B: FromBytes>(
    status: StatusCode,
    content_type: &'static str,
    body: impl Into<Bytes>,
) -> Response<B> {
    let mut response = Response::new(B::from_bytes(body.into()));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

/// `value` as pretty JSON, one trailing newline so that `curl` leaves the prompt on its
/// own line. A value that cannot be written (never, for the types the APIs answer with)
/// gives an empty body rather than a panic.
pub fn json<B: FromBytes>(status: StatusCode, value: &impl Serialize) -> Response<B> {
    let mut body = serde_json::to_vec_pretty(value).unwrap_or_default();
    body.push(b'\n');
    respond(status, "application/json", body)
}

/// The bearer token a request presents: `Authorization: Bearer TOKEN`, trimmed. `None`
/// without the header, with another scheme, or with an empty token, so that "no token"
/// and "a wrong token" can be told apart.
pub fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
        .map(str::trim)
        .filter(|token| !token.is_empty())
}

/// Compares two byte strings in time that depends only on their lengths, so that a
/// client cannot learn a token a byte at a time from how long a refusal takes.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Who a request's bearer token says it is, against the API's tokens.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Bearer {
    /// No bearer token at all: 401, "give one".
    Missing,
    /// A token that is none of the API's: 401, "wrong token".
    Wrong,
    /// The token at this index of the list given to [`authorize`].
    Matches(usize),
}

/// Matches the request's bearer token against `tokens` (each compared in constant time;
/// an empty token never matches), first match first.
pub fn authorize(headers: &HeaderMap, tokens: &[&str]) -> Bearer {
    let Some(presented) = bearer_token(headers) else {
        return Bearer::Missing;
    };
    tokens
        .iter()
        .position(|token| {
            !token.is_empty() && constant_time_eq(presented.as_bytes(), token.as_bytes())
        })
        .map_or(Bearer::Wrong, Bearer::Matches)
}

/// Why a request body could not be read.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    /// Larger than the budget, or broken off by the client: 413.
    #[error("at most {limit} bytes")]
    Unreadable {
        /// The budget in bytes.
        limit: usize,
        /// What the body reader reported.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// Not complete within the time budget: 408.
    #[error("did not arrive within {}s", .timeout.as_secs())]
    TimedOut {
        /// The time budget.
        timeout: Duration,
    },
}

impl BodyError {
    /// The status this failure is answered with.
    pub fn status(&self) -> StatusCode {
        match self {
            BodyError::Unreadable { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            BodyError::TimedOut { .. } => StatusCode::REQUEST_TIMEOUT,
        }
    }
}

/// A request body, whole, at most `limit` bytes and (if given) within `timeout`: every
/// body an API parses has a budget, so no client makes it buffer without end.
pub async fn read_body<B>(
    body: B,
    limit: usize,
    timeout: Option<Duration>,
) -> Result<Bytes, BodyError>
where
    B: hyper::body::Body,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let collect = Limited::new(body, limit).collect();
    let collected = match timeout {
        Some(timeout) => tokio::time::timeout(timeout, collect)
            .await
            .map_err(|_| BodyError::TimedOut { timeout })?,
        None => collect.await,
    };
    collected
        .map(|c| c.to_bytes())
        .map_err(|source| BodyError::Unreadable { limit, source })
}

/// The value of `name` in the URI's query (`?name=value`), undecoded.
pub fn query_value<'u>(uri: &'u Uri, name: &str) -> Option<&'u str> {
    uri.query()?
        .split('&')
        .find_map(|pair| pair.strip_prefix(name)?.strip_prefix('='))
}

/// Whether the query sets the flag `name`: `?name`, `?name=true` or `?name=1`.
pub fn query_flag(uri: &Uri, name: &str) -> bool {
    uri.query().is_some_and(|q| {
        q.split('&').any(|pair| {
            pair.strip_prefix(name)
                .is_some_and(|rest| matches!(rest, "" | "=true" | "=1"))
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_auth(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::AUTHORIZATION, value.parse().expect("value"));
        headers
    }

    #[test]
    fn token_comparison() {
        assert!(constant_time_eq(b"secret", b"secret"));
        assert!(!constant_time_eq(b"secret", b"secreT"));
        assert!(!constant_time_eq(b"secret", b"secret2"));
    }

    #[test]
    fn a_missing_token_and_a_wrong_one_are_told_apart() {
        let tokens = ["write", "edge"];
        assert_eq!(authorize(&HeaderMap::new(), &tokens), Bearer::Missing);
        assert_eq!(authorize(&with_auth("Bearer "), &tokens), Bearer::Missing);
        assert_eq!(
            authorize(&with_auth("Basic d3JpdGU="), &tokens),
            Bearer::Missing
        );
        assert_eq!(authorize(&with_auth("Bearer nope"), &tokens), Bearer::Wrong);
        assert_eq!(
            authorize(&with_auth("Bearer write "), &tokens),
            Bearer::Matches(0)
        );
        assert_eq!(
            authorize(&with_auth("Bearer edge"), &tokens),
            Bearer::Matches(1)
        );
    }

    #[test]
    fn an_empty_token_never_matches() {
        assert_eq!(
            authorize(&with_auth("Bearer x"), &["", "x"]),
            Bearer::Matches(1)
        );
        assert_eq!(authorize(&with_auth("Bearer x"), &[""]), Bearer::Wrong);
    }

    #[test]
    fn query_values_and_flags() {
        let uri: Uri = "/v1/x?wait=5&full&force=1&fullness=3&cold=false"
            .parse()
            .expect("uri");
        assert_eq!(query_value(&uri, "wait"), Some("5"));
        assert_eq!(query_value(&uri, "missing"), None);
        assert!(query_flag(&uri, "full"));
        assert!(query_flag(&uri, "force"));
        assert!(
            !query_flag(&uri, "fullness"),
            "a longer name is another flag"
        );
        assert!(!query_flag(&uri, "cold"));
    }

    #[tokio::test]
    async fn a_body_past_its_budget_is_413_and_a_slow_one_408() {
        let big = http_body_util::Full::new(Bytes::from(vec![b'x'; 11]));
        let error = read_body(big, 10, None).await.expect_err("too large");
        assert_eq!(error.status(), StatusCode::PAYLOAD_TOO_LARGE);
        let fits = http_body_util::Full::new(Bytes::from_static(b"{}"));
        assert_eq!(read_body(fits, 10, None).await.expect("fits"), "{}");
        let error = read_body(Stalled, 10, Some(Duration::from_millis(20)))
            .await
            .expect_err("slow");
        assert_eq!(error.status(), StatusCode::REQUEST_TIMEOUT);
    }

    /// A body whose client never sends a byte.
    struct Stalled;

    impl hyper::body::Body for Stalled {
        type Data = Bytes;
        type Error = std::convert::Infallible;

        fn poll_frame(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, Self::Error>>> {
            std::task::Poll::Pending
        }
    }
}
