//! One request on one upstream connection, driven by the request that holds it: the head
//! and body written as the socket takes them, the response head read and parsed, and the
//! response body read from the socket as the client takes it.
//!
//! Both directions move in every poll, as a full-duplex exchange needs: an upstream may
//! answer before it has read the whole upload (and the request body keeps flowing while
//! the answer streams), or stop reading it and answer at once (`413`); the answer is
//! passed on either way, and a connection whose request did not go out whole is closed
//! after it rather than reused.

use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{Buf, Bytes, BytesMut};
use std::sync::Arc;

use http::{Method, Request, Response};
use http_body_util::BodyExt;
use hyper::body::{Body, Frame, SizeHint};
use tokio::io::AsyncWrite;
use tokio::net::TcpStream;

use super::codec::{self, BodyDecoder, Decoded, RequestFraming, ResponseHead};
use super::{SendFailure, Upstream};
use crate::forward::{BoxError, ForwardingFields, ProxyBody};
use crate::metrics::UpstreamError;
use crate::table::Endpoint;

/// Free room below which a read first makes more; what it makes.
const READ_MIN: usize = 1024;
const READ_CHUNK: usize = 8 * 1024;
/// The largest read buffer an idle pooled connection keeps.
const KEEP_IDLE_BUFFER: usize = 16 * 1024;

impl Upstream {
    /// Reads what the socket has into the read buffer: `Ok(0)` at end of stream.
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        if self.read.capacity() - self.read.len() < READ_MIN {
            self.read.reserve(READ_CHUNK);
        }
        // Through `AsyncRead`, not `try_read_buf`: tokio takes a read that leaves room in
        // the buffer as the socket drained and clears its readiness, so the next
        // `is_usable` of the idle connection costs no system call. After `try_read_buf`
        // the stale readiness made that check call `recvfrom` for nothing (`EAGAIN`),
        // once per request. A close that came with the answer stays visible: tokio keeps
        // the read-closed state.
        tokio_util::io::poll_read_buf(Pin::new(&mut self.stream), cx, &mut self.read)
    }
}

/// The request going out: head first, then the body as its frames come.
struct Sending {
    /// Framing bytes queued: the head, a chunk-size line, the last chunk.
    prefix: BytesMut,
    /// A body frame queued after `prefix`.
    data: Bytes,
    /// Queued after `data`: the CRLF that closes a chunk.
    suffix: &'static [u8],
    /// The body being read, once the head has gone.
    body: Option<ProxyBody>,
    framing: RequestFraming,
    /// Body bytes a length-framed request still owes.
    owed: u64,
    /// Whether the body has ended (what is queued is the last of the request).
    ended: bool,
    /// Whether every byte of the request has been written.
    done: bool,
    /// Whether any byte has been written.
    started: bool,
}

/// Why the request could not go out.
enum SendError {
    /// The client's body failed (its own fault, or the body watch's limit).
    Body,
    /// The socket refused the bytes.
    Io,
}

impl Sending {
    /// A request going out with `framing`, its head to be written into `buffer` (the
    /// connection's, emptied: its room is reused rather than allocated per request).
    fn new(framing: RequestFraming, mut buffer: BytesMut) -> Sending {
        buffer.clear();
        Sending {
            prefix: buffer,
            data: Bytes::new(),
            suffix: b"",
            body: None,
            framing,
            owed: match framing {
                RequestFraming::Length(n) => n,
                _ => 0,
            },
            ended: framing == RequestFraming::Bodiless,
            done: false,
            started: false,
        }
    }

    fn queued(&self) -> bool {
        !self.prefix.is_empty() || !self.data.is_empty() || !self.suffix.is_empty()
    }

    /// Writes what is queued, then what the body yields, until the socket or the body
    /// has to wait, or the body is needed and not given yet (`Ready(Ok)`, not `done`).
    fn poll_send(
        &mut self,
        stream: &mut TcpStream,
        cx: &mut Context<'_>,
    ) -> Poll<Result<(), SendError>> {
        loop {
            while self.queued() {
                // A head alone (a bodiless request's, or any head before its body is
                // read) is one `send`: a `writev` of one buffer costs the kernel more (its
                // vector is copied in and checked).
                let sent = if self.data.is_empty() && self.suffix.is_empty() {
                    Pin::new(&mut *stream).poll_write(cx, &self.prefix)
                } else {
                    let slices = [
                        IoSlice::new(&self.prefix),
                        IoSlice::new(&self.data),
                        IoSlice::new(self.suffix),
                    ];
                    Pin::new(&mut *stream).poll_write_vectored(cx, &slices)
                };
                let written = match ready!(sent) {
                    Ok(0) | Err(_) => return Poll::Ready(Err(SendError::Io)),
                    Ok(n) => n,
                };
                self.started = true;
                self.consume(written);
            }
            if self.ended {
                self.done = true;
                return Poll::Ready(Ok(()));
            }
            let Some(body) = self.body.as_mut() else {
                return Poll::Ready(Ok(()));
            };
            match Pin::new(body).poll_frame(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(Err(_))) => return Poll::Ready(Err(SendError::Body)),
                Poll::Ready(Some(Ok(frame))) => {
                    // Trailers are not forwarded, as the `Trailer` header that would
                    // announce them is hop-by-hop.
                    if let Ok(data) = frame.into_data() {
                        self.queue(data)?;
                    }
                }
                Poll::Ready(None) => self.finish()?,
            }
        }
    }

    fn consume(&mut self, mut n: usize) {
        let from_prefix = n.min(self.prefix.len());
        self.prefix.advance(from_prefix);
        n -= from_prefix;
        let from_data = n.min(self.data.len());
        self.data.advance(from_data);
        n -= from_data;
        self.suffix = &self.suffix[n.min(self.suffix.len())..];
    }

    fn queue(&mut self, data: Bytes) -> Result<(), SendError> {
        if data.is_empty() {
            return Ok(());
        }
        match self.framing {
            RequestFraming::Length(_) => {
                // A body longer than it said would be a second request to the upstream.
                self.owed = self
                    .owed
                    .checked_sub(data.len() as u64)
                    .ok_or(SendError::Body)?;
            }
            RequestFraming::Chunked => {
                codec::chunk_line(data.len(), &mut self.prefix);
                self.suffix = b"\r\n";
            }
            RequestFraming::Bodiless => return Ok(()),
        }
        self.data = data;
        Ok(())
    }

    fn finish(&mut self) -> Result<(), SendError> {
        self.body = None;
        self.ended = true;
        match self.framing {
            RequestFraming::Length(_) if self.owed != 0 => Err(SendError::Body),
            RequestFraming::Chunked => {
                self.prefix.extend_from_slice(b"0\r\n\r\n");
                Ok(())
            }
            _ => Ok(()),
        }
    }
}

/// A request under way on a connection: what is left to send, and whether the
/// connection is still fit to carry another request afterwards.
struct Exchange {
    upstream: Box<Upstream>,
    sending: Sending,
    /// The request, whole, until its body is needed (or the answer comes).
    held: Option<Request<ProxyBody>>,
    /// Whether the request's header map may be kept for another message.
    keep_headers: bool,
    /// The socket refused the request's bytes: the answer may still be read.
    write_failed: bool,
    /// Any byte of the answer has been read.
    received: bool,
}

impl Exchange {
    /// Moves the request out as far as the socket and the client's body allow. `Err`
    /// when the client's body failed.
    fn drive_send(&mut self, cx: &mut Context<'_>) -> Result<(), ()> {
        while !self.write_failed && !self.sending.done {
            match self.sending.poll_send(&mut self.upstream.stream, cx) {
                Poll::Pending => return Ok(()),
                Poll::Ready(Err(SendError::Body)) => return Err(()),
                // The upstream may have answered and stopped reading: its answer counts.
                Poll::Ready(Err(SendError::Io)) => self.write_failed = true,
                Poll::Ready(Ok(())) if !self.sending.done => match self.held.take() {
                    // The head is out: the body is read from now on.
                    Some(request) => self.sending.body = Some(request.into_body()),
                    None => return Ok(()),
                },
                Poll::Ready(Ok(())) => {}
            }
        }
        Ok(())
    }

    /// Reads until the response head is complete. A request that could not write its
    /// first byte fails at once: whatever the connection holds is no answer to it.
    fn poll_head(
        &mut self,
        method: &Method,
        cx: &mut Context<'_>,
    ) -> Poll<Result<ResponseHead, UpstreamError>> {
        if self.drive_send(cx).is_err() || (self.write_failed && !self.sending.started) {
            return Poll::Ready(Err(UpstreamError::Reset));
        }
        loop {
            if !self.upstream.read.is_empty() {
                match codec::parse_response(&mut self.upstream.read, method) {
                    Ok(Some(head)) => return Poll::Ready(Ok(head)),
                    Ok(None) => {}
                    Err(e) => {
                        tracing::debug!(error = %e, "bad response from an upstream");
                        return Poll::Ready(Err(UpstreamError::Reset));
                    }
                }
            }
            match ready!(self.upstream.poll_fill(cx)) {
                Ok(0) | Err(_) => return Poll::Ready(Err(UpstreamError::Reset)),
                Ok(_) => self.received = true,
            }
        }
    }

    /// Whether the request can be handed back after a failure: nothing of it reached the
    /// upstream, or nothing came back and sending it again cannot change the outcome.
    fn unsent(self) -> Option<Request<ProxyBody>> {
        let Exchange {
            sending,
            held,
            received,
            ..
        } = self;
        held.filter(|request| {
            !sending.started || (!received && sending.done && idempotent(request.method()))
        })
    }
}

/// One request on `upstream`, until the response head arrives; the fields `added` go
/// after the request's own, and the request's header map is kept for another message
/// once sent if `keep_headers` ([`super::Target::keep_headers`]). The head is encoded
/// when this is called; the future only waits for the answer. Not an `async fn`, which would
/// keep room for its arguments and for each local it builds from them besides the
/// [`Exchange`] that holds them all.
pub(super) fn exchange(
    pool: Arc<Endpoint>,
    mut upstream: Box<Upstream>,
    request: Request<ProxyBody>,
    added: Option<&ForwardingFields>,
    keep_headers: bool,
) -> impl Future<Output = Result<Response<ProxyBody>, SendFailure>> + Send {
    let framing = codec::request_framing(
        request.method(),
        request.headers(),
        request.body().is_end_stream(),
        request.body().size_hint().exact(),
    );
    let method = request.method().clone();
    let mut sending = Sending::new(framing, std::mem::take(&mut upstream.write));
    codec::encode_head(
        request.method(),
        request.uri(),
        request.headers(),
        added,
        framing,
        &mut sending.prefix,
    );
    let mut exchange = Exchange {
        upstream,
        sending,
        held: Some(request),
        keep_headers,
        write_failed: false,
        received: false,
    };
    async move {
        match std::future::poll_fn(|cx| exchange.poll_head(&method, cx)).await {
            Ok(head) => Ok(respond(head, exchange, pool)),
            Err(kind) => Err(SendFailure {
                kind,
                unsent: exchange.unsent(),
            }),
        }
    }
}

/// Whether a request may be sent twice without a different outcome (RFC 9110 §9.2.2).
fn idempotent(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::PUT | Method::DELETE
    )
}

/// The response for `head`, its body read from the exchange's connection.
fn respond(head: ResponseHead, mut exchange: Exchange, pool: Arc<Endpoint>) -> Response<ProxyBody> {
    if exchange.sending.done
        && let Some(request) = exchange.held.take()
        && exchange.keep_headers
    {
        // Nothing more to send: the request (kept for a resend) is not needed, and its
        // header map can carry another message.
        crate::header_maps::give_back(request.into_parts().0.headers);
    }
    let mut body = UpstreamBody {
        exchange: Some(exchange),
        decoder: BodyDecoder::new(head.framing),
        reusable: head.reusable,
        pool,
    };
    if body.decoder.is_done() {
        body.release();
    }
    let mut response = Response::new(body.boxed());
    *response.status_mut() = head.status;
    *response.version_mut() = head.version;
    *response.headers_mut() = head.headers;
    response
}

/// A response body read from its upstream connection as the client takes it; the
/// connection goes back to its endpoint's pool when the body has ended where its framing
/// said, the request went out whole and the upstream did not ask to close.
struct UpstreamBody {
    /// `None` once the body has ended or failed.
    exchange: Option<Exchange>,
    decoder: BodyDecoder,
    reusable: bool,
    pool: Arc<Endpoint>,
}

/// The connection closed before the body's framing said it would end.
#[derive(Debug, thiserror::Error)]
#[error("the upstream closed the connection mid-body")]
struct Truncated;

/// The client's request body failed while the answer was streaming.
#[derive(Debug, thiserror::Error)]
#[error("the request body failed while the answer was streaming")]
struct RequestBodyFailed;

impl UpstreamBody {
    /// The body is complete: its connection goes back to the pool if fit, else closes.
    fn release(&mut self) {
        if let Some(mut exchange) = self.exchange.take()
            && self.reusable
            && exchange.sending.done
            && !exchange.write_failed
            && exchange.upstream.read.is_empty()
        {
            let mut upstream = exchange.upstream;
            upstream.write = std::mem::take(&mut exchange.sending.prefix);
            if upstream.read.capacity() > KEEP_IDLE_BUFFER {
                // One large head or trailer section is no reason to hold its buffer
                // while the connection idles.
                upstream.read = BytesMut::new();
            }
            if upstream.write.capacity() > KEEP_IDLE_BUFFER {
                upstream.write = BytesMut::new();
            }
            self.pool.local.put_idle(upstream);
        }
    }

    /// Fails the body; the connection closes.
    fn fail(&mut self, error: BoxError) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        self.exchange = None;
        Poll::Ready(Some(Err(error)))
    }
}

impl Drop for UpstreamBody {
    /// A client that knows the body's length stops reading at its last byte, without the
    /// final `poll_frame`: a complete body dropped still returns its connection.
    fn drop(&mut self) {
        if self.decoder.is_done() {
            self.release();
        }
    }
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        let Some(exchange) = this.exchange.as_mut() else {
            return Poll::Ready(None);
        };
        if exchange.drive_send(cx).is_err() {
            return this.fail(Box::new(RequestBodyFailed));
        }
        loop {
            let decoded = match this.decoder.decode(&mut exchange.upstream.read) {
                Ok(decoded) => decoded,
                Err(e) => return this.fail(Box::new(e)),
            };
            let frame = match decoded {
                Decoded::Data(data) => Frame::data(data),
                Decoded::Trailers(trailers) => Frame::trailers(trailers),
                Decoded::End => {
                    this.release();
                    return Poll::Ready(None);
                }
                Decoded::NeedMore => match ready!(exchange.upstream.poll_fill(cx)) {
                    Ok(0) if this.decoder == BodyDecoder::UntilClose => {
                        this.decoder = BodyDecoder::Done;
                        this.exchange = None;
                        return Poll::Ready(None);
                    }
                    Ok(0) => return this.fail(Box::new(Truncated)),
                    Err(e) => return this.fail(Box::new(e)),
                    Ok(_) => continue,
                },
            };
            if this.decoder.is_done() {
                this.release();
            }
            return Poll::Ready(Some(Ok(frame)));
        }
    }

    fn is_end_stream(&self) -> bool {
        self.decoder.is_done()
    }

    fn size_hint(&self) -> SizeHint {
        match self.decoder.remaining() {
            Some(n) => SizeHint::with_exact(n),
            None => SizeHint::default(),
        }
    }
}
