//! Watches: newline-delimited JSON events over a chunked response, served from the store's
//! history so that a watch from resourceVersion R sees every change after R exactly once.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::Response;
use http_body_util::BodyExt;
use hyper::body::Frame;
use serde_json::{Value, json};
use tokio::sync::{mpsc, watch as signal};

use crate::Shared;
use crate::http::{Body, Query};
use crate::resources::ResourceType;
use crate::selector::{FieldSelector, LabelSelector};
use crate::status::Status;
use crate::store::{Event, EventType};

/// How often bookmarks are sent to watches that allow them.
const BOOKMARK_PERIOD: Duration = Duration::from_secs(2);

/// A parsed watch request.
#[derive(Debug)]
pub(crate) struct WatchRequest {
    rt: &'static ResourceType,
    namespace: Option<String>,
    labels: LabelSelector,
    fields: FieldSelector,
    /// `None` (absent, empty or "0"): start with the current state as ADDED events.
    resource_version: Option<u64>,
    bookmarks: bool,
    timeout: Option<Duration>,
}

impl WatchRequest {
    /// The watch asked for by the query.
    pub(crate) fn new(
        rt: &'static ResourceType,
        namespace: Option<String>,
        labels: LabelSelector,
        fields: FieldSelector,
        query: &Query,
    ) -> Result<WatchRequest, Status> {
        let resource_version =
            match query.get("resourceVersion").unwrap_or("") {
                "" | "0" => None,
                rv => Some(rv.parse::<u64>().map_err(|_| {
                    Status::bad_request(format!("invalid resource version: {rv:?}"))
                })?),
            };
        if query.get("sendInitialEvents") == Some("true") {
            return Err(Status::new(
                422,
                "Invalid",
                "sendInitialEvents is forbidden for watch unless the WatchList feature gate is enabled",
            ));
        }
        let timeout = query
            .get("timeoutSeconds")
            .and_then(|t| t.parse::<u64>().ok())
            .filter(|t| *t > 0)
            .map(Duration::from_secs);
        Ok(WatchRequest {
            rt,
            namespace,
            labels,
            fields,
            resource_version,
            bookmarks: matches!(query.get("allowWatchBookmarks"), Some("true" | "1")),
            timeout,
        })
    }

    fn matches(&self, namespace: &str, object: &Value) -> bool {
        self.namespace.as_deref().is_none_or(|ns| ns == namespace)
            && self.labels.matches_object(object)
            && self.fields.matches_object(object)
    }

    /// The event a client sees for a change, if any: selector transitions turn into ADDED or
    /// DELETED, as on the real server.
    fn translate(&self, event: &Event) -> Option<Bytes> {
        if event.rt.plural != self.rt.plural {
            return None;
        }
        let now = self.matches(&event.namespace, &event.object);
        let before = event
            .old
            .as_ref()
            .is_some_and(|old| self.matches(&event.namespace, old));
        let kind = match (event.kind, before, now) {
            (EventType::Added, _, true) => EventType::Added,
            (EventType::Modified, true, true) => EventType::Modified,
            (EventType::Modified, false, true) => EventType::Added,
            (EventType::Modified, true, false) => EventType::Deleted,
            (EventType::Deleted, _, true) => EventType::Deleted,
            _ => return None,
        };
        Some(line(kind.as_str(), &event.object))
    }
}

fn line(kind: &str, object: &Value) -> Bytes {
    let mut text = json!({"type": kind, "object": object}).to_string();
    text.push('\n');
    Bytes::from(text)
}

/// Starts streaming: a 200 response whose body carries the events.
pub(crate) fn start(
    shared: Arc<Shared>,
    request: WatchRequest,
    shutdown: signal::Receiver<bool>,
) -> Response<Body> {
    let (tx, rx) = mpsc::channel(256);
    // Subscribe before answering, so that nothing after the response starts is missed.
    let mut changes = shared.changes.clone();
    changes.borrow_and_update();
    let mut expire = shared.expire.subscribe();
    expire.borrow_and_update();
    let signals = Signals {
        changes,
        expire,
        shutdown,
    };
    tokio::spawn(produce(shared, request, tx, signals));
    let mut response = Response::new(ChannelBody(rx).boxed());
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    response
}

/// What wakes a watch.
struct Signals {
    changes: signal::Receiver<u64>,
    expire: signal::Receiver<u64>,
    shutdown: signal::Receiver<bool>,
}

async fn produce(
    shared: Arc<Shared>,
    request: WatchRequest,
    tx: mpsc::Sender<Bytes>,
    signals: Signals,
) {
    let Signals {
        mut changes,
        mut expire,
        mut shutdown,
    } = signals;
    let (initial, mut cursor) = {
        let store = shared.store();
        match request.resource_version {
            None => {
                let lines: Vec<Bytes> = store
                    .list(request.rt, request.namespace.as_deref())
                    .into_iter()
                    .filter(|o| {
                        request.labels.matches_object(o) && request.fields.matches_object(o)
                    })
                    .map(|o| line("ADDED", o))
                    .collect();
                (lines, store.rv())
            }
            Some(rv) if rv < store.floor() => {
                let status = Status::expired(format!(
                    "too old resource version: {rv} ({})",
                    store.floor()
                ));
                (vec![line("ERROR", &status.to_json())], u64::MAX)
            }
            Some(rv) => (Vec::new(), rv),
        }
    };
    for item in initial {
        if tx.send(item).await.is_err() {
            return;
        }
    }
    if cursor == u64::MAX {
        return;
    }
    let deadline = request.timeout.map(|t| tokio::time::Instant::now() + t);
    let mut bookmarks = tokio::time::interval_at(
        tokio::time::Instant::now() + BOOKMARK_PERIOD,
        BOOKMARK_PERIOD,
    );
    loop {
        // Expiry wins over changes written after it: those belong to the next list.
        if expire.has_changed().unwrap_or(true) {
            let _ = tx.send(line("ERROR", &expired_status().to_json())).await;
            return;
        }
        let batch = {
            let store = shared.store();
            match store.events_since(cursor) {
                Ok(events) => {
                    cursor = cursor.max(store.rv());
                    Ok(events
                        .iter()
                        .filter_map(|e| request.translate(e))
                        .collect::<Vec<_>>())
                }
                Err(floor) => Err(Status::expired(format!(
                    "too old resource version: {cursor} ({floor})"
                ))),
            }
        };
        match batch {
            Ok(lines) => {
                for item in lines {
                    if tx.send(item).await.is_err() {
                        return;
                    }
                }
            }
            Err(status) => {
                let _ = tx.send(line("ERROR", &status.to_json())).await;
                return;
            }
        }
        tokio::select! {
            biased;
            _ = expire.changed() => {
                let _ = tx.send(line("ERROR", &expired_status().to_json())).await;
                return;
            }
            changed = changes.changed() => {
                if changed.is_err() {
                    return;
                }
            }
            _ = bookmarks.tick(), if request.bookmarks => {
                let bookmark = json!({
                    "kind": request.rt.kind,
                    "apiVersion": request.rt.api_version(),
                    "metadata": {"resourceVersion": cursor.to_string()},
                });
                if tx.send(line("BOOKMARK", &bookmark)).await.is_err() {
                    return;
                }
            }
            _ = sleep_until(deadline) => return,
            _ = crate::util::until_set(&mut shutdown) => return,
            _ = tx.closed() => return,
        }
    }
}

/// What an expired watch gets, as from a real server's watch cache.
fn expired_status() -> Status {
    Status::expired("The resourceVersion for the provided watch is too old.")
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// A response body fed by a channel: each message is one chunk.
struct ChannelBody(mpsc::Receiver<Bytes>);

impl hyper::body::Body for ChannelBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.0
            .poll_recv(cx)
            .map(|item| item.map(|bytes| Ok(Frame::data(bytes))))
    }
}
