//! One exchange with an upstream endpoint within the request timeout, with the endpoint's
//! passive health updated by its outcome; and the mirrored copy of a request to the
//! candidate.

use std::sync::Arc;

use http::header::HeaderMap;
use http::{Method, Request, Response, Uri, Version};
use http_body_util::BodyExt;

use super::body::{BodyWatch, Failed, NO_BODY};
use super::headers::ForwardingFields;
use super::record::{Counted, Recording};
use super::{BoxError, ProxyBody, empty, random};
use crate::Shared;
use crate::metrics::UpstreamError;
use crate::table::{CompiledRoute, Endpoint};

/// Builds the upstream request from the client's parts and the fields this hop `added`:
/// origin-form URI (absolute-form for the pooled legacy client), HTTP/1.1 whatever the
/// client spoke.
fn upstream_request(
    parts: &http::request::Parts,
    added: Option<&ForwardingFields>,
    uri: Uri,
    body: ProxyBody,
) -> Request<ProxyBody> {
    let mut request = Request::new(body);
    *request.method_mut() = parts.method.clone();
    *request.uri_mut() = uri;
    *request.version_mut() = Version::HTTP_11;
    *request.headers_mut() = parts.headers.clone();
    if let Some(added) = added {
        added.insert_into(request.headers_mut());
    }
    request
}

/// The origin-form URI (path and query) of `uri`: the client's own when it is one
/// already, which costs a reference count and no parse; `/` when it has no path.
fn origin_form(uri: &Uri) -> Option<Uri> {
    if uri.scheme().is_none() && uri.authority().is_none() {
        return Some(uri.clone());
    }
    let mut parts = http::uri::Parts::default();
    parts.path_and_query = Some(
        uri.path_and_query()
            .cloned()
            .unwrap_or_else(|| http::uri::PathAndQuery::from_static("/")),
    );
    Uri::from_parts(parts).ok()
}

/// Sends one request to `endpoint` within the request timeout, updating its health.
/// `parts`' headers go to the upstream with the request, then the fields `added` (the
/// forwarding fields, kept out of the map); the headers are back in `parts` after a
/// failure that sent nothing (the only failure a retry follows), and gone otherwise.
/// Upgrade requests go through hyper-util's client, which hands over the upgraded
/// connection; everything else through the inline-driven pool of [`crate::upstream`].
/// A failure that `body` shows to be the client's is returned as [`Failed::Client`] and
/// leaves the endpoint's health alone.
pub(super) async fn send(
    shared: &Shared,
    endpoint: &Arc<Endpoint>,
    parts: &mut http::request::Parts,
    added: Option<&ForwardingFields>,
    body: ProxyBody,
    upgrade: bool,
    body_watch: &BodyWatch,
) -> Result<Response<ProxyBody>, Failed> {
    let _in_flight = endpoint.begin();
    let timeout: std::time::Duration = shared.config.timeouts.request.into();
    let outcome = if upgrade {
        // Boxed, and only here: hyper-util's client future is large, and every request
        // would otherwise carry (and copy) room for it.
        Box::pin(send_upgrade(shared, endpoint, parts, added, body, timeout)).await
    } else {
        let Some(uri) = origin_form(&parts.uri) else {
            return Err(Failed::Upstream(UpstreamError::Connect));
        };
        let target = crate::upstream::Target {
            authority: &endpoint.authority,
            pool: endpoint,
            connect_timeout: shared.config.timeouts.connect.into(),
            idle_timeout: shared.config.timeouts.upstream_idle.into(),
            // An HTTP/1 reader bounds a request's values (a mirrored copy's map is a
            // compact clone); HTTP/2's header list does not.
            keep_headers: parts.version != Version::HTTP_2,
        };
        // The headers move into the request rather than being copied: a request that
        // does not leave the proxy comes back with them, for a retry elsewhere.
        let mut request = Request::new(body);
        *request.method_mut() = parts.method.clone();
        *request.uri_mut() = uri;
        *request.version_mut() = Version::HTTP_11;
        *request.headers_mut() = std::mem::take(&mut parts.headers);
        let sent =
            super::deadline::within(timeout, crate::upstream::send(&target, request, added)).await;
        match sent {
            Ok(Ok(response)) => Ok(response),
            Ok(Err(failure)) => {
                if let Some(unsent) = failure.unsent {
                    parts.headers = unsent.into_parts().0.headers;
                }
                Err(failure.kind)
            }
            Err(_) => Err(UpstreamError::Timeout),
        }
    };
    if let Err(kind) = outcome
        && let Some(fault) = body_watch.fault(Some(kind))
    {
        return Err(Failed::Client(fault));
    }
    let health = &shared.config.health;
    match outcome {
        Ok(_) => endpoint.succeeded(),
        Err(_) => {
            if endpoint.failed(
                shared.now_ms(),
                health.consecutive_failures,
                health.ejection.as_millis(),
            ) {
                tracing::warn!(endpoint = %endpoint.authority, "endpoint ejected after repeated failures");
            }
        }
    }
    outcome.map_err(Failed::Upstream)
}

/// Sends an upgrade request (WebSocket and others) through hyper-util's client, which
/// hands over the upgraded connection on `101`.
async fn send_upgrade(
    shared: &Shared,
    endpoint: &Endpoint,
    parts: &http::request::Parts,
    added: Option<&ForwardingFields>,
    body: ProxyBody,
    timeout: std::time::Duration,
) -> Result<Response<ProxyBody>, UpstreamError> {
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let Ok(uri) = format!("{}{path}", endpoint.base).parse::<Uri>() else {
        return Err(UpstreamError::Connect);
    };
    let request = upstream_request(parts, added, uri, body);
    match tokio::time::timeout(timeout, shared.client.request(request)).await {
        Ok(Ok(response)) => Ok(response.map(|b| b.map_err(BoxError::from).boxed())),
        Ok(Err(e)) if e.is_connect() => Err(UpstreamError::Connect),
        Ok(Err(_)) => Err(UpstreamError::Reset),
        Err(_) => Err(UpstreamError::Timeout),
    }
}

/// Copies a request to the candidate in the background; its answer is read and thrown
/// away frame by frame (never buffered) and the client never waits for it. `permit` is
/// one of `limits.maxMirrorInFlight`, held until the copy is done. Mirrored requests
/// never carry a body (only bodiless GET, HEAD and OPTIONS are copied), so a mirrored
/// body's size bound is zero.
pub(super) fn mirror_to_candidate(
    shared: Arc<Shared>,
    route: Arc<CompiledRoute>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    permit: tokio::sync::OwnedSemaphorePermit,
) {
    tokio::spawn(async move {
        let _permit = permit;
        let Some(candidate) = route.candidate.as_ref() else {
            return;
        };
        let Some(endpoint) = candidate.pick(shared.now_ms(), random(), None).cloned() else {
            return;
        };
        let mut parts = Request::new(()).into_parts().0;
        parts.method = method;
        parts.uri = uri;
        parts.headers = headers;
        let mut recording = Recording::start(&candidate.stats, std::time::Instant::now());
        // The copy's headers have the forwarding fields in them already.
        match send(
            &shared,
            &endpoint,
            &mut parts,
            None,
            empty(),
            false,
            &NO_BODY,
        )
        .await
        {
            Ok(response) => {
                recording.count(Counted::Status(response.status().as_u16()), &shared);
                let mut body = response.into_body();
                while let Some(frame) = body.frame().await {
                    if frame.is_err() {
                        break;
                    }
                }
            }
            Err(failed) => recording.count(super::phases::counted_as(failed), &shared),
        }
    });
}
