//! The client's request body on its way upstream, and whose fault a failed exchange was:
//! a body that is malformed, stalls, trickles or grows past its limit is the client's
//! fault ([`ClientFault`]), answered 4xx and never charged to the upstream.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};

use bytes::Bytes;
use http::{Response, StatusCode};
use hyper::body::Incoming;

use super::{BoxError, ProxyBody, closing, text};
use crate::metrics::UpstreamError;

/// Why an upstream call gave no response.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Failed {
    /// The upstream failed: 502 or 504, and it counts against the endpoint's health.
    Upstream(UpstreamError),
    /// The client failed: answered 4xx, never charged to the upstream.
    Client(ClientFault),
}

/// How a client can make a request fail by itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum ClientFault {
    /// The body was malformed (a bad chunk size) or ended early (the client went away):
    /// 400.
    BadBody,
    /// The body paused past `timeouts.clientBodyIdle`, or was still arriving when the
    /// request timeout ran out: 408.
    SlowBody,
    /// The body went past `maxBodyBytes`: 413.
    BodyTooLarge,
}

impl ClientFault {
    const NONE: u8 = 0;

    fn code(self) -> u8 {
        match self {
            ClientFault::BadBody => 1,
            ClientFault::SlowBody => 2,
            ClientFault::BodyTooLarge => 3,
        }
    }

    fn from_code(code: u8) -> Option<ClientFault> {
        match code {
            1 => Some(ClientFault::BadBody),
            2 => Some(ClientFault::SlowBody),
            3 => Some(ClientFault::BodyTooLarge),
            _ => None,
        }
    }

    /// The answer to the client. The connection closes after it: the rest of the body is
    /// not worth reading.
    pub(super) fn response(self, max_body: Option<u64>) -> Response<ProxyBody> {
        let response = match self {
            ClientFault::BadBody => text(
                StatusCode::BAD_REQUEST,
                "malformed or incomplete request body",
            ),
            ClientFault::SlowBody => text(
                StatusCode::REQUEST_TIMEOUT,
                "the request body arrived too slowly",
            ),
            ClientFault::BodyTooLarge => text(
                StatusCode::PAYLOAD_TOO_LARGE,
                &format!(
                    "request body larger than {} bytes",
                    max_body.unwrap_or_default()
                ),
            ),
        };
        closing(response)
    }
}

/// What is known about a client's request body while it streams to the upstream: read by
/// [`super::send::send`] to tell a client's failure from the upstream's.
pub(super) struct BodyWatch {
    /// A [`ClientFault`] code, or [`ClientFault::NONE`].
    fault: AtomicU8,
    /// The body reached its end.
    done: AtomicBool,
    /// The last read of the body found nothing yet: the proxy is waiting on the client.
    waiting: AtomicBool,
}

/// The watch of every request without a body: complete from the start, never at fault.
pub(super) static NO_BODY: BodyWatch = BodyWatch::new(true);

impl BodyWatch {
    /// A watch of a body not yet complete (`done: false`), or of none (`true`).
    pub(super) const fn new(done: bool) -> BodyWatch {
        BodyWatch {
            fault: AtomicU8::new(ClientFault::NONE),
            done: AtomicBool::new(done),
            waiting: AtomicBool::new(false),
        }
    }

    fn set(&self, fault: ClientFault) {
        let _ = self.fault.compare_exchange(
            ClientFault::NONE,
            fault.code(),
            Ordering::Relaxed,
            Ordering::Relaxed,
        );
    }

    /// The client's fault in a failed exchange, if it was the client's: a body error, or
    /// a timeout that struck while the proxy was still waiting for the client's body.
    pub(super) fn fault(&self, outcome: Option<UpstreamError>) -> Option<ClientFault> {
        if let Some(fault) = ClientFault::from_code(self.fault.load(Ordering::Relaxed)) {
            return Some(fault);
        }
        let waiting_on_client =
            !self.done.load(Ordering::Relaxed) && self.waiting.load(Ordering::Relaxed);
        (outcome == Some(UpstreamError::Timeout) && waiting_on_client)
            .then_some(ClientFault::SlowBody)
    }
}

/// The body of a client's request as the request path gets it: hyper's, or none at all
/// for a request the proxy's own HTTP/1.1 reader took whole (it reads only requests that
/// declare no body: see `http1::fast`).
pub(crate) enum Inbound {
    /// A body hyper reads (HTTP/2, and HTTP/1 requests that declare one).
    Hyper(Incoming),
    /// No body.
    Empty,
}

impl From<Incoming> for Inbound {
    fn from(body: Incoming) -> Inbound {
        Inbound::Hyper(body)
    }
}

impl hyper::body::Body for Inbound {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, hyper::Error>>> {
        match self.get_mut() {
            Inbound::Hyper(body) => std::pin::Pin::new(body).poll_frame(cx),
            Inbound::Empty => std::task::Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Inbound::Hyper(body) => body.is_end_stream(),
            Inbound::Empty => true,
        }
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        match self {
            Inbound::Hyper(body) => body.size_hint(),
            Inbound::Empty => hyper::body::SizeHint::with_exact(0),
        }
    }
}

/// The client's request body on its way upstream: cut off past `maxBodyBytes`, failed
/// when it pauses longer than `timeouts.clientBodyIdle`, and watched ([`BodyWatch`]) so
/// that its failures are charged to the client.
pub(super) struct ClientBody {
    inner: Inbound,
    remaining: Option<u64>,
    idle: std::time::Duration,
    /// Armed when a read finds nothing, from then on: fires when the client pauses too long.
    stall: Option<std::pin::Pin<Box<tokio::time::Sleep>>>,
    pending: bool,
    watch: Arc<BodyWatch>,
}

impl ClientBody {
    /// Watches `inner` into `watch`, cut off past `max_body` bytes and failed when it
    /// pauses longer than `idle`.
    pub(super) fn new(
        inner: Inbound,
        max_body: Option<u64>,
        idle: std::time::Duration,
        watch: Arc<BodyWatch>,
    ) -> ClientBody {
        ClientBody {
            inner,
            remaining: max_body,
            idle,
            stall: None,
            pending: false,
            watch,
        }
    }
}

impl hyper::body::Body for ClientBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, BoxError>>> {
        use std::future::Future as _;
        use std::task::Poll;
        let this = &mut *self;
        match std::pin::Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Pending => {
                this.watch.waiting.store(true, Ordering::Relaxed);
                let deadline = tokio::time::Instant::now() + this.idle;
                let stall = this
                    .stall
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
                if !this.pending {
                    this.pending = true;
                    stall.as_mut().reset(deadline);
                }
                if stall.as_mut().poll(cx).is_ready() {
                    this.watch.set(ClientFault::SlowBody);
                    return Poll::Ready(Some(Err("the client's request body stalled".into())));
                }
                Poll::Pending
            }
            Poll::Ready(Some(Ok(frame))) => {
                this.pending = false;
                this.watch.waiting.store(false, Ordering::Relaxed);
                let len = frame.data_ref().map_or(0, |d| d.len() as u64);
                if let Some(remaining) = &mut this.remaining {
                    if len > *remaining {
                        this.watch.set(ClientFault::BodyTooLarge);
                        return Poll::Ready(Some(Err(
                            "request body larger than maxBodyBytes".into()
                        )));
                    }
                    *remaining -= len;
                }
                if this.inner.is_end_stream() {
                    this.watch.done.store(true, Ordering::Relaxed);
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => {
                this.watch.waiting.store(false, Ordering::Relaxed);
                this.watch.set(ClientFault::BadBody);
                Poll::Ready(Some(Err(BoxError::from(e))))
            }
            Poll::Ready(None) => {
                this.watch.waiting.store(false, Ordering::Relaxed);
                this.watch.done.store(true, Ordering::Relaxed);
                Poll::Ready(None)
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}
