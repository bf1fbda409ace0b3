//! The proxy's own HTTP/1.1 server for the requests nearly all traffic is: a request that
//! declares no body, arrives whole in one read and keeps the connection alive (a `GET`
//! of a page, an API read). It is read, handed to the request path and answered without
//! hyper's connection: no 8 KiB read and 8 KiB write buffer while the connection serves,
//! no new read buffer per request, and nothing held between requests (such a connection
//! never needs parking).
//!
//! Everything else goes to hyper with the bytes read so far ([`Read::Hyper`]): a head
//! that is not whole yet, a body (`Content-Length`, `Transfer-Encoding`), `Expect`, `TE`,
//! an upgrade, `Connection` other than `keep-alive`, HTTP/1.0, `CONNECT`, a target that
//! is not a path, more than [`MAX_FIELDS`] fields, and anything `httparse` finds
//! malformed: hyper answers those as it always has (400, 431 and the smuggling checks of
//! the request path are unchanged). What comes this way is answered as hyper would, byte
//! for byte ([`super::encode`]), and a client that closes while its request is under way
//! has it dropped, as hyper drops it, so the upstream's work is cancelled.

use std::future::poll_fn;
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderName, HeaderValue};
use http::{Method, Request, Uri, Version};
use hyper::body::Body as _;
use tokio::io::AsyncWriteExt as _;

use super::encode::{self, BodyLength, Framing};
use super::{ConnService, ParkIo, ParkStream};
use crate::forward::{Inbound, field_name};
use crate::listen::Tracked;

/// The most header fields a request read here may have; hyper takes one with more (its
/// own limit is 100).
const MAX_FIELDS: usize = 64;

/// Output gathered before it is written: small frames of a body go out together, and a
/// streamed body is held this much at most.
const GATHER: usize = 64 * 1024;

/// Frames at least this large are written as they are, not copied into the output.
const WRITE_THROUGH: usize = 16 * 1024;

/// What reading the connection's next request gave.
// Returned and taken apart at once, never kept: boxing the request would cost an
// allocation per request for nothing.
#[allow(clippy::large_enum_variant)]
pub(super) enum Read {
    /// A whole request this module serves.
    Request(Request<Inbound>),
    /// Bytes for hyper: they wait in the stream's unread bytes.
    Hyper,
    /// Only empty lines came (a CRLF some clients send after a request): ignored, as RFC
    /// 9112 §2.2 allows before a request line; no head has started.
    EmptyLines,
    /// The client closed the connection, or it failed.
    Closed,
}

/// Reads the connection's next request: from the bytes read before and not used if there
/// are any, or else with one read of the socket. `Pending` when nothing is there to read
/// yet (over TLS, a record may not be whole).
pub(super) fn read<T: ParkStream>(io: &mut ParkIo<T>, cx: &mut Context<'_>) -> Poll<Read> {
    let bytes = if io.has_unread() {
        io.take_unread()
    } else {
        match io.poll_read_socket(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(Ok(bytes)) if !bytes.is_empty() => bytes,
            Poll::Ready(_) => return Poll::Ready(Read::Closed),
        }
    };
    if bytes.iter().all(|&b| b == b'\r' || b == b'\n') {
        return Poll::Ready(Read::EmptyLines);
    }
    match request_of(&bytes) {
        Some((request, len)) => {
            if len < bytes.len() {
                io.unread(bytes.slice(len..));
            }
            Poll::Ready(Read::Request(request))
        }
        None => {
            io.unread(bytes);
            Poll::Ready(Read::Hyper)
        }
    }
}

/// The request whose head starts `bytes`, and the head's length, if it is whole and one
/// this module serves. Its target and field values are views into `bytes`, not copies.
fn request_of(bytes: &Bytes) -> Option<(Request<Inbound>, usize)> {
    // Uninitialised: filling the slots first would cost more than most parses.
    let mut fields = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_FIELDS];
    let mut parsed = httparse::Request::new(&mut []);
    let httparse::Status::Complete(len) = httparse::ParserConfig::default()
        .parse_request_with_uninit_headers(&mut parsed, bytes, &mut fields)
        .ok()?
    else {
        return None;
    };
    if parsed.version != Some(1) {
        return None;
    }
    let method = Method::from_bytes(parsed.method?.as_bytes()).ok()?;
    if method == Method::CONNECT {
        return None;
    }
    let path = parsed.path?;
    if !path.starts_with('/') {
        return None;
    }
    let uri = Uri::from_maybe_shared(bytes.slice_ref(path.as_bytes())).ok()?;
    // Room for the request's own fields only: the forwarding fields the request path
    // adds are kept beside the map, not in it.
    let mut headers = crate::header_maps::take(parsed.headers.len());
    for field in parsed.headers.iter() {
        let name = field_name(field.name.as_bytes()).ok()?;
        if is_for_hyper(&name, field.value) {
            return None;
        }
        let value = HeaderValue::from_maybe_shared(bytes.slice_ref(field.value)).ok()?;
        headers.append(name, value);
    }
    let mut request = Request::new(Inbound::Empty);
    *request.method_mut() = method;
    *request.uri_mut() = uri;
    *request.version_mut() = Version::HTTP_11;
    *request.headers_mut() = headers;
    Some((request, len))
}

/// Whether a field makes its request one for hyper: it declares a body, asks for
/// `100 Continue` or trailers, upgrades, or has `Connection` say more than `keep-alive`.
fn is_for_hyper(name: &HeaderName, value: &[u8]) -> bool {
    match *name {
        header::CONTENT_LENGTH
        | header::TRANSFER_ENCODING
        | header::EXPECT
        | header::TE
        | header::UPGRADE => true,
        header::CONNECTION => value
            .split(|&b| b == b',')
            .any(|token| !token.trim_ascii().eq_ignore_ascii_case(b"keep-alive")),
        _ => false,
    }
}

/// How the connection goes on after [`answer`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Answered {
    /// The response went out whole: the connection waits for the next request.
    KeepAlive,
    /// The response went out whole and ends the connection (it said `close`, the proxy is
    /// shutting down, or its body ran until the close): shut it down cleanly.
    Close,
    /// The client went away, the connection failed, or the response's body failed or came
    /// up short: drop the connection without a clean close (no TLS `close_notify`), so the
    /// client sees the response cut off, as hyper leaves it.
    Abort,
}

/// Serves `request` on the connection and writes its response. `stopping` tells whether
/// the proxy is shutting down, looked at just before the response is written; `idle`
/// bounds the writing of what is left once the response's body has ended
/// (`keepAliveIdle`).
pub(super) fn answer<S: ConnService, T: ParkStream>(
    io: &mut ParkIo<T>,
    service: &S,
    request: Request<Inbound>,
    stopping: impl Fn() -> bool + Send,
    idle: Duration,
) -> impl Future<Output = Answered> + Send {
    let head_request = request.method() == Method::HEAD;
    // Called here, not in the `async` block: the service is not held across an await.
    // Boxed by itself: the request path's future is most of the answer's size, and each
    // `async` step it passed through would keep a copy of it (and copy it once more).
    let handled = super::pinned_in_box(|| service.call_read(request));
    respond(io, handled, head_request, stopping, idle)
}

/// [`answer`]'s part after the request is handed over.
async fn respond<F, T>(
    io: &mut ParkIo<T>,
    mut handled: Pin<Box<F>>,
    head_request: bool,
    stopping: impl Fn() -> bool,
    idle: Duration,
) -> Answered
where
    F: Future<Output = Result<http::Response<Tracked>, std::convert::Infallible>>,
    T: ParkStream,
{
    let Some(Ok(response)) = until_client_leaves(handled.as_mut(), io).await else {
        return Answered::Abort;
    };
    drop(handled);
    after_ready_tasks().await;
    write_response(io, response, head_request, stopping(), idle).await
}

/// Returns once every task already in this worker's run queue when it is first polled
/// has had its turn: the task wakes itself, which Tokio answers by putting it at the back
/// of the run queue, with no system call (`yield_now` would poll for I/O first).
///
/// An answer waits for this before it is written, so that the answers that come ready in
/// one turn of the worker's event loop go out together at its end, after the requests
/// read in that turn have gone upstream; written at once, each went out between the reads
/// of other connections. Against writing at once, this served 3–4.5 % more requests a
/// second at 3 % less CPU per request, at one worker and at two (docs/benchmarks.md,
/// eleventh pass). The answer's upstream connection goes back to its pool after the wait,
/// so the tasks that run meanwhile take another: at most one more per answer waiting. A
/// worker with nothing else ready polls the task again at once (unless it is due to look
/// for I/O, every 61 polls).
async fn after_ready_tasks() {
    let mut queued = false;
    poll_fn(move |cx| {
        if queued {
            return Poll::Ready(());
        }
        queued = true;
        cx.waker().wake_by_ref();
        Poll::Pending
    })
    .await;
}

/// `handled`'s output, or `None` if the client closes the connection (or it fails) first:
/// then the caller drops `handled`, as hyper drops a request whose client left. Bytes the
/// client sends meanwhile (a next, pipelined request) are kept for later, and from then on
/// the connection is not read until the response is out, as hyper does; nor is it read if
/// such bytes were there already (hyper looks for a close only with nothing buffered: a
/// client that pipelines and then shuts its side down still gets its answers).
async fn until_client_leaves<F: Future, T: ParkStream>(
    mut handled: Pin<&mut F>,
    io: &mut ParkIo<T>,
) -> Option<F::Output> {
    let mut watching = !io.has_unread();
    poll_fn(|cx| {
        if let Poll::Ready(output) = handled.as_mut().poll(cx) {
            return Poll::Ready(Some(output));
        }
        if watching {
            match io.poll_read_socket(cx) {
                Poll::Ready(Ok(bytes)) if !bytes.is_empty() => {
                    io.append_unread(bytes);
                    watching = false;
                }
                Poll::Ready(_) => return Poll::Ready(None),
                Poll::Pending => {}
            }
        }
        Poll::Pending
    })
    .await
}

/// Writes `response` (the head, then its body as it comes, framed as [`encode::head`]
/// decided), and says how the connection goes on. The body, and with it the mark of the
/// request under way, is dropped once it has ended, as hyper drops it ([`send_then_end`]);
/// what is then left to write must go out within `idle`, so that a client that stops
/// reading cannot hold the connection past its idle time.
async fn write_response<T: ParkStream>(
    io: &mut ParkIo<T>,
    response: http::Response<Tracked>,
    head_request: bool,
    closing: bool,
    idle: Duration,
) -> Answered {
    let (mut parts, mut body) = response.into_parts();
    let length = if body.is_end_stream() {
        BodyLength::Empty
    } else {
        body.size_hint()
            .exact()
            .map_or(BodyLength::Unknown, BodyLength::Known)
    };
    let mut out = Vec::with_capacity(256 + parts.headers.len() * 32);
    let written = encode::head(&parts, head_request, length, closing, &mut out);
    crate::header_maps::give_back(std::mem::take(&mut parts.headers));
    drop(parts);
    let mut framing = written.framing;
    let mut sending = length != BodyLength::Empty && framing != Framing::Length(0);
    while sending {
        let next = poll_fn(|cx| match Pin::new(&mut body).poll_frame(cx) {
            Poll::Ready(frame) => Poll::Ready(Some(frame)),
            // Nothing more yet: what is gathered goes out meanwhile.
            Poll::Pending if out.is_empty() => Poll::Pending,
            Poll::Pending => Poll::Ready(None),
        })
        .await;
        let data = match next {
            None => {
                if !send(io, &mut out).await {
                    return Answered::Abort;
                }
                continue;
            }
            Some(None) => break,
            // The upstream's body failed mid-way: what came goes out, and the client must
            // see it cut off there.
            Some(Some(Err(_))) => {
                let _ = send_then_end(io, &mut out, body, idle).await;
                return Answered::Abort;
            }
            Some(Some(Ok(frame))) => match frame.into_data() {
                Ok(data) => data,
                // Trailers: never sent, as the request did not ask for them (`TE`).
                Err(_) => continue,
            },
        };
        if data.is_empty() {
            continue;
        }
        let data = match &mut framing {
            Framing::Length(remaining) => {
                // A body longer than its length is cut there, as hyper does.
                let take = data
                    .len()
                    .min(usize::try_from(*remaining).unwrap_or(usize::MAX));
                *remaining -= take as u64;
                sending = *remaining > 0;
                data.slice(..take)
            }
            Framing::Chunked => {
                encode::chunk_size(data.len(), &mut out);
                data
            }
            Framing::UntilClose => data,
        };
        if data.len() >= WRITE_THROUGH {
            if !send(io, &mut out).await || !send_bytes(io, &data).await {
                return Answered::Abort;
            }
        } else {
            out.extend_from_slice(&data);
        }
        if framing == Framing::Chunked {
            out.extend_from_slice(b"\r\n");
        }
        if out.len() >= GATHER && !send(io, &mut out).await {
            return Answered::Abort;
        }
    }
    let whole = match framing {
        Framing::Chunked => {
            out.extend_from_slice(b"0\r\n\r\n");
            true
        }
        // A body shorter than its length: the client must see it cut off.
        Framing::Length(remaining) => remaining == 0,
        Framing::UntilClose => true,
    };
    let sent = send_then_end(io, &mut out, body, idle).await;
    match (sent && whole, written.last) {
        (false, _) => Answered::Abort,
        (true, true) => Answered::Close,
        (true, false) => Answered::KeepAlive,
    }
}

/// Sends what is left of an answer whose body has ended, and drops the body (and with it
/// the mark of the request under way) as hyper does at the body's end. Nearly every answer
/// goes out at once, and then the body is dropped after the write, so that the client's
/// answer leaves before the upstream connection goes back to its pool. One that does not
/// go out at once must within `limit`, with the body dropped meanwhile: `false` if the
/// write failed or took longer. Only such an answer reads the clock and sets a timer.
async fn send_then_end<T: ParkStream, B>(
    io: &mut ParkIo<T>,
    out: &mut Vec<u8>,
    body: B,
    limit: Duration,
) -> bool {
    let mut sending = std::pin::pin!(send(io, out));
    let first = poll_fn(|cx| Poll::Ready(sending.as_mut().poll(cx))).await;
    drop(body);
    match first {
        Poll::Ready(sent) => sent,
        Poll::Pending => tokio::time::timeout(limit, sending).await.unwrap_or(false),
    }
}

/// Writes and flushes what `out` gathered, and empties it: `false` if the connection
/// failed.
async fn send<T: ParkStream>(io: &mut ParkIo<T>, out: &mut Vec<u8>) -> bool {
    if out.is_empty() {
        return true;
    }
    let sent = send_bytes(io, out).await;
    out.clear();
    sent
}

/// Writes and flushes `bytes` (a TLS stream holds written bytes until flushed): `false`
/// if the connection failed.
async fn send_bytes<T: ParkStream>(io: &mut ParkIo<T>, bytes: &[u8]) -> bool {
    io.write_all(bytes).await.is_ok() && io.flush().await.is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The answer is boxed and moved into its box on every request read here; the request
    /// path's future (about 2 KiB), boxed apart, is not part of it. With a 2 KiB handler it
    /// was 6,312 bytes (688 now) when each `async` step kept its own copy of the handler's future.
    #[tokio::test]
    async fn the_answer_future_stays_small() {
        let (_client, stream) = super::super::tests::loopback_pair().await;
        let activity = crate::listen::Activity::new();
        // As the request path's, a large future: 2 KiB held across an await.
        let handler = |_request: Request<Inbound>| async {
            let ballast = [0u8; 2048];
            tokio::task::yield_now().await;
            std::hint::black_box(&ballast);
            Ok(http::Response::new(crate::forward::full("ok")))
        };
        let service = crate::listen::tracked(activity.clone(), handler);
        let mut io = ParkIo::new(stream, activity);
        let answering = answer(
            &mut io,
            &service,
            Request::new(Inbound::Empty),
            || false,
            Duration::from_secs(1),
        );
        let size = std::mem::size_of_val(&answering);
        assert!(size <= 1024, "the answer's future is {size} bytes");
    }

    /// What makes one turn's answers go out together: an answer that is ready waits
    /// behind the tasks that were ready before it (on a worker's runtime, as here).
    #[test]
    fn an_answer_waits_for_the_tasks_ready_before_it() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("a runtime");
        let order = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let log = |name: &'static str| {
            let order = order.clone();
            move || order.lock().expect("not poisoned").push(name)
        };
        runtime.block_on(async {
            let (answer, other) = (log("answer"), log("other"));
            let answering = tokio::spawn(async move {
                after_ready_tasks().await;
                answer();
            });
            let ready = tokio::spawn(async move { other() });
            answering.await.expect("ran");
            ready.await.expect("ran");
        });
        assert_eq!(*order.lock().expect("not poisoned"), ["other", "answer"]);
    }

    fn read(head: &str) -> Option<(Request<Inbound>, usize)> {
        request_of(&Bytes::copy_from_slice(head.as_bytes()))
    }

    #[test]
    fn a_whole_bodiless_request_is_read_with_its_fields_in_order() {
        let head = "GET /a?b=c HTTP/1.1\r\nHost: shop\r\nX-A: 1\r\nx-a: 2\r\nConnection: Keep-Alive\r\n\r\nGET /next";
        let (request, len) = read(head).expect("served here");
        assert_eq!(len, head.len() - "GET /next".len());
        assert_eq!(request.method(), Method::GET);
        assert_eq!(request.uri(), "/a?b=c");
        assert_eq!(request.version(), Version::HTTP_11);
        assert_eq!(request.headers()["host"], "shop");
        // Kept as hyper keeps it: routing sees the same fields whichever reader read them.
        assert_eq!(request.headers()["connection"], "Keep-Alive");
        let values: Vec<_> = request.headers().get_all("x-a").iter().collect();
        assert_eq!(values, ["1", "2"]);
        assert!(request.body().is_end_stream());
    }

    #[test]
    fn anything_else_is_left_to_hyper() {
        for head in [
            // Not whole yet.
            "GET / HTTP/1.1\r\nHost: shop\r\n",
            // Bodies, and what asks more of the server.
            "POST / HTTP/1.1\r\nContent-Length: 0\r\n\r\n",
            "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
            "PUT / HTTP/1.1\r\nExpect: 100-continue\r\n\r\n",
            "GET / HTTP/1.1\r\nTE: trailers\r\n\r\n",
            "GET / HTTP/1.1\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
            "GET / HTTP/1.1\r\nConnection: keep-alive, close\r\n\r\n",
            // Other versions, methods and targets.
            "GET / HTTP/1.0\r\n\r\n",
            "CONNECT shop:443 HTTP/1.1\r\n\r\n",
            "GET http://shop/ HTTP/1.1\r\n\r\n",
            "OPTIONS * HTTP/1.1\r\n\r\n",
            // Malformed: hyper answers 400.
            "GET / HTTP/1.1\r\nBad Name: x\r\n\r\n",
            "GET / HTTP/1.1\r\nX: a\r\n folded\r\n\r\n",
            "GET /\x7f HTTP/1.1\r\n\r\n",
        ] {
            assert!(read(head).is_none(), "{head:?} was read here");
        }
        let many: String = (0..=MAX_FIELDS).map(|i| format!("X-{i}: v\r\n")).collect();
        assert!(read(&format!("GET / HTTP/1.1\r\n{many}\r\n")).is_none());
    }
}
