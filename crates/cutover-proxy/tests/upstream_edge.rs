//! The upstream side of HTTP/1.1 (issue 15): the proxy speaks to upstreams through an
//! HTTP/1.1 codec of its own, so what an upstream can send it is tried here over raw
//! sockets: chunked answers with trailers, early answers to uploads, connections closed
//! while idle or as a request arrives, bytes past a body, and heads that cannot be trusted.

mod support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use support::raw::{Raw, read_until_closed};
use support::{config, start};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// What a scripted upstream does with one request.
enum Reply {
    /// Writes these bytes and reads the next request.
    Answer(&'static [u8]),
    /// Writes these bytes and closes.
    AnswerAndClose(&'static [u8]),
    /// Writes these bytes, then holds the connection open without reading, for 3 s.
    AnswerAndHold(&'static [u8]),
    /// Closes without a byte of answer.
    Close,
    /// Writes the first bytes, then, 50 ms later and unasked, the second (a `408` before
    /// an idle close, say), and reads the next request.
    AnswerThenStray(&'static [u8], &'static [u8]),
    /// Writes these bytes one at a time, 50 ms apart, then closes.
    Trickle(&'static [u8]),
}

/// A raw upstream: `script(connection, request)` (both counted from 0) says what to do
/// with each request head it reads. Returns its address and its connection count.
async fn scripted(
    script: impl Fn(u64, u64) -> Reply + Send + Sync + 'static,
) -> (SocketAddr, Arc<AtomicU64>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let connections = Arc::new(AtomicU64::new(0));
    let script = Arc::new(script);
    let count = connections.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let connection = count.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(serve(stream, connection, script.clone()));
        }
    });
    (addr, connections)
}

async fn serve(
    mut stream: TcpStream,
    connection: u64,
    script: Arc<impl Fn(u64, u64) -> Reply + Send + Sync + 'static>,
) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    for request in 0.. {
        while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        let end = buf.windows(4).position(|w| w == b"\r\n\r\n").unwrap_or(0) + 4;
        buf.drain(..end);
        match script(connection, request) {
            Reply::Answer(bytes) => {
                if stream.write_all(bytes).await.is_err() {
                    return;
                }
            }
            Reply::AnswerAndClose(bytes) => {
                let _ = stream.write_all(bytes).await;
                return;
            }
            Reply::AnswerAndHold(bytes) => {
                let _ = stream.write_all(bytes).await;
                tokio::time::sleep(Duration::from_secs(3)).await;
                return;
            }
            Reply::Close => return,
            Reply::AnswerThenStray(answer, stray) => {
                if stream.write_all(answer).await.is_err() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
                if stream.write_all(stray).await.is_err() {
                    return;
                }
            }
            Reply::Trickle(bytes) => {
                for byte in bytes.chunks(1) {
                    if stream.write_all(byte).await.is_err() {
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                return;
            }
        }
    }
}

/// A proxy with one route, `shop`, to `upstream`.
async fn proxy_to(upstream: SocketAddr) -> (cutover_proxy::Proxy, SocketAddr) {
    let route = cutover_test_kit::proxy::route("shop", upstream, None, 0);
    let proxy = start(config(vec![route])).await;
    let addr = proxy.listen_addrs()[0];
    (proxy, addr)
}

const GET: &[u8] = b"GET / HTTP/1.1\r\nHost: shop\r\n\r\n";

/// Sends `times` GETs on `client`'s connection, one after another, each answered 200 with
/// `body`, idling `pause` after each.
async fn gets_answered(client: &mut Raw, times: usize, body: &[u8], pause: Duration) {
    for _ in 0..times {
        client.send(GET).await;
        let answer = client.answer(false).await;
        assert_eq!(
            (answer.status(), answer.body.as_slice()),
            (200, body),
            "{}",
            answer.head
        );
        tokio::time::sleep(pause).await;
    }
}

/// A proxy in front of an upstream whose first connection answers one request and then
/// closes on the next without a byte (the race of an upstream closing an idle connection
/// just as a request goes out on it); later connections answer `later`. Returns the proxy,
/// a client whose first GET was answered, and the upstream's connection count.
async fn after_an_answer_then_a_silent_close(
    later: &'static [u8],
) -> (cutover_proxy::Proxy, Raw, Arc<AtomicU64>) {
    let (upstream, connections) =
        scripted(move |connection, request| match (connection, request) {
            (0, 0) => Reply::Answer(OK),
            (0, _) => Reply::Close,
            _ => Reply::Answer(later),
        })
        .await;
    let (proxy, addr) = proxy_to(upstream).await;
    let mut client = Raw::connect(addr).await;
    gets_answered(&mut client, 1, b"ok", Duration::ZERO).await;
    (proxy, client, connections)
}
const OK: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";

/// A raw upstream that answers every request `OK` and passes on each request head it
/// read, as it came.
async fn recording() -> (SocketAddr, tokio::sync::mpsc::UnboundedReceiver<String>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (heads, received) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let heads = heads.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                loop {
                    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                        match stream.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    }
                    let end = buf.windows(4).position(|w| w == b"\r\n\r\n").unwrap_or(0) + 4;
                    let head: Vec<u8> = buf.drain(..end).collect();
                    let length = String::from_utf8_lossy(&head)
                        .lines()
                        .find_map(|line| {
                            let (name, value) = line.split_once(':')?;
                            name.eq_ignore_ascii_case("content-length")
                                .then(|| value.trim().parse::<usize>().ok())
                                .flatten()
                        })
                        .unwrap_or(0);
                    while buf.len() < length {
                        match stream.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    }
                    buf.drain(..length);
                    let _ = heads.send(String::from_utf8_lossy(&head).into_owned());
                    if stream.write_all(OK).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (addr, received)
}

/// The forwarding fields a client sends, in any case and repeated, never reach the
/// upstream as it sent them: each of `X-Forwarded-For`, `-Proto`, `-Host` and
/// `Forwarded` arrives once, with this hop's value. Both ways a request is read: by the
/// proxy's own reader (no body) and by hyper (a body).
#[tokio::test]
async fn a_clients_forwarding_fields_are_replaced_and_reach_the_upstream_once_each() {
    let (upstream, mut heads) = recording().await;
    let (_proxy, addr) = proxy_to(upstream).await;
    let mut client = Raw::connect(addr).await;
    let fields = "Host: shop\r\nX-Forwarded-For: 1.2.3.4\r\nx-forwarded-for: 5.6.7.8\r\n\
        X-FORWARDED-PROTO: gopher\r\nX-Forwarded-Host: evil\r\nx-forwarded-host: evil2\r\n\
        Forwarded: for=1.2.3.4;by=evil\r\nFORWARDED: for=5.6.7.8\r\nX-Kept: 1\r\n";
    for request in [
        format!("GET / HTTP/1.1\r\n{fields}\r\n"),
        format!("POST / HTTP/1.1\r\n{fields}Content-Length: 2\r\n\r\nhi"),
    ] {
        client.send(request.as_bytes()).await;
        let answer = client.answer(false).await;
        assert_eq!(answer.status(), 200, "{}", answer.head);
        let head = heads.recv().await.expect("the upstream saw the request");
        assert_forwarded_once("the upstream", &head);
        for (name, value) in [("host", "shop"), ("x-kept", "1")] {
            assert_eq!(field_values(&head, name), [value], "{name} in:\n{head}");
        }
    }
}

/// The values of the fields called `wanted` (in any case) in a request `head`.
fn field_values(head: &str, wanted: &str) -> Vec<String> {
    head.lines()
        .filter_map(|line| line.split_once(':'))
        .filter(|(name, _)| name.eq_ignore_ascii_case(wanted))
        .map(|(_, value)| value.trim().to_string())
        .collect()
}

/// Asserts that `head`, as `who` received it, has each forwarding field once, with this
/// hop's value for a client at 127.0.0.1 asking for `shop` over plain HTTP.
fn assert_forwarded_once(who: &str, head: &str) {
    for (name, value) in [
        ("x-forwarded-for", "127.0.0.1"),
        ("x-forwarded-proto", "http"),
        ("x-forwarded-host", "shop"),
        ("forwarded", "for=127.0.0.1;proto=http;host=shop"),
    ] {
        assert_eq!(
            field_values(head, name),
            [value],
            "{who}: {name} in:\n{head}"
        );
    }
}

/// A mirrored copy goes to the candidate with this hop's forwarding fields, once each, as
/// the request the stable version serves does (the copy's fields are in its map; the
/// request's are written beside it).
#[tokio::test]
async fn a_mirrored_copy_carries_the_forwarding_fields_once_each() {
    let (stable, mut stable_heads) = recording().await;
    let (candidate, mut candidate_heads) = recording().await;
    let mut route = cutover_test_kit::proxy::route("shop", stable, Some(candidate), 0);
    route.mirror_percent = 100;
    let proxy = start(config(vec![route])).await;
    let mut client = Raw::connect(proxy.listen_addrs()[0]).await;
    client
        .send(b"GET / HTTP/1.1\r\nHost: shop\r\nX-Forwarded-For: 1.2.3.4\r\nForwarded: for=1.2.3.4\r\n\r\n")
        .await;
    let answer = client.answer(false).await;
    assert_eq!(answer.status(), 200, "{}", answer.head);
    for (who, heads) in [
        ("stable", &mut stable_heads),
        ("candidate", &mut candidate_heads),
    ] {
        let head = tokio::time::timeout(Duration::from_secs(5), heads.recv())
            .await
            .ok()
            .flatten()
            .unwrap_or_else(|| panic!("the {who} saw no request"));
        assert_forwarded_once(who, &head);
    }
}

/// A `Connection` field that names `Host` takes the client's `Host` out with the other
/// hop-by-hop fields; the upstream still gets the host the client asked for, once.
#[tokio::test]
async fn a_host_the_connection_field_names_still_reaches_the_upstream_once() {
    let (upstream, mut heads) = recording().await;
    let (_proxy, addr) = proxy_to(upstream).await;
    let mut client = Raw::connect(addr).await;
    client
        .send(
            b"GET / HTTP/1.1\r\nHost: shop\r\nConnection: host, x-private\r\nX-Private: 1\r\n\r\n",
        )
        .await;
    let answer = client.answer(false).await;
    assert_eq!(answer.status(), 200, "{}", answer.head);
    let head = heads.recv().await.expect("the upstream saw the request");
    let names: Vec<String> = head
        .lines()
        .filter_map(|line| line.split_once(':'))
        .map(|(name, _)| name.to_ascii_lowercase())
        .collect();
    assert_eq!(names.iter().filter(|n| *n == "host").count(), 1, "{head}");
    assert!(
        head.to_ascii_lowercase().contains("\r\nhost: shop\r\n"),
        "{head}"
    );
    assert!(
        !names.iter().any(|n| n == "x-private" || n == "connection"),
        "{head}"
    );
}

/// An upstream's `Connection` names fields the client must not see, `close` one called
/// `Close` among them (RFC 9110 §7.6.1); a `keep-alive` alone (which the codec leaves out
/// as it reads) takes `Keep-Alive` with it; an empty value or empty tokens name nothing.
#[tokio::test]
async fn fields_an_upstreams_connection_names_never_reach_the_client() {
    let answers: [&'static [u8]; 5] = [
        b"HTTP/1.1 200 OK\r\nConnection: close\r\nClose: secret\r\nX-End: kept\r\nContent-Length: 2\r\n\r\nok",
        b"HTTP/1.1 200 OK\r\nConnection: close, X-Private\r\nClose: secret\r\nX-Private: 1\r\nX-End: kept\r\nContent-Length: 2\r\n\r\nok",
        b"HTTP/1.1 200 OK\r\nConnection: Keep-Alive\r\nKeep-Alive: timeout=5\r\nX-End: kept\r\nContent-Length: 2\r\n\r\nok",
        b"HTTP/1.1 200 OK\r\nConnection: , keep-alive,,\r\nConnection: x-hop\r\nX-Hop: 1\r\nX-End: kept\r\nContent-Length: 2\r\n\r\nok",
        b"HTTP/1.1 200 OK\r\nConnection:\r\nX-End: kept\r\nContent-Length: 2\r\n\r\nok",
    ];
    for bytes in answers {
        let (upstream, _) = scripted(move |_, _| Reply::AnswerAndClose(bytes)).await;
        let (_proxy, addr) = proxy_to(upstream).await;
        let mut client = Raw::connect(addr).await;
        client.send(GET).await;
        let answer = client.answer(false).await;
        assert_eq!((answer.status(), answer.body.as_slice()), (200, &b"ok"[..]));
        for gone in ["connection", "close", "x-private", "keep-alive", "x-hop"] {
            assert_eq!(answer.header(gone), None, "{gone}: {}", answer.head);
        }
        assert_eq!(
            answer.header("x-end").as_deref(),
            Some("kept"),
            "{}",
            answer.head
        );
    }
}

#[tokio::test]
async fn a_chunked_answer_with_extensions_and_trailers_arrives_whole_and_its_connection_is_reused()
{
    let (upstream, connections) = scripted(|_, _| {
        Reply::Answer(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n\
              5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nX-Checksum: 11\r\n\r\n",
        )
    })
    .await;
    let (_proxy, addr) = proxy_to(upstream).await;
    let mut client = Raw::connect(addr).await;
    gets_answered(&mut client, 3, b"hello world", Duration::ZERO).await;
    assert_eq!(
        connections.load(Ordering::SeqCst),
        1,
        "one upstream connection"
    );
}

#[tokio::test]
async fn an_answer_to_an_upload_the_upstream_stopped_reading_is_passed_on() {
    let (upstream, _) = scripted(|_, _| {
        Reply::AnswerAndHold(
            b"HTTP/1.1 413 Content Too Large\r\nContent-Length: 8\r\nConnection: close\r\n\r\ntoo big\n",
        )
    })
    .await;
    let (_proxy, addr) = proxy_to(upstream).await;
    let stream = TcpStream::connect(addr).await.expect("connect");
    let (mut read, mut write) = stream.into_split();
    // 16 MiB announced: far more than the sockets between here and the upstream hold.
    let length = 16 << 20;
    let writer = tokio::spawn(async move {
        let head =
            format!("POST /upload HTTP/1.1\r\nHost: shop\r\nContent-Length: {length}\r\n\r\n");
        write.write_all(head.as_bytes()).await?;
        let block = vec![b'x'; 64 * 1024];
        for _ in 0..length / block.len() {
            write.write_all(&block).await?;
        }
        std::io::Result::Ok(())
    });
    let mut answer = Vec::new();
    let mut chunk = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while !answer.windows(4).any(|w| w == b"\r\n\r\n") {
        match tokio::time::timeout_at(deadline, read.read(&mut chunk)).await {
            Ok(Ok(n)) if n > 0 => answer.extend_from_slice(&chunk[..n]),
            other => panic!("no answer head: {other:?}, read {answer:?}"),
        }
    }
    let text = String::from_utf8_lossy(&answer);
    assert!(
        text.starts_with("HTTP/1.1 413"),
        "the upstream's answer, not a 502: {text}"
    );
    writer.abort();
}

#[tokio::test]
async fn a_connection_the_upstream_closed_while_idle_is_not_used() {
    let (upstream, connections) =
        scripted(|_, _| Reply::AnswerAndClose(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"))
            .await;
    let (_proxy, addr) = proxy_to(upstream).await;
    let mut client = Raw::connect(addr).await;
    // The upstream's close reaches the proxy while the connection idles in its pool.
    gets_answered(&mut client, 3, b"ok", Duration::from_millis(100)).await;
    assert_eq!(connections.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn a_reused_connection_closed_as_an_idempotent_request_arrives_is_replaced() {
    let (_proxy, mut client, connections) = after_an_answer_then_a_silent_close(OK).await;
    client.send(GET).await;
    let answer = client.answer(false).await;
    assert_eq!(
        answer.status(),
        200,
        "sent again on a fresh connection: {}",
        answer.head
    );
    assert_eq!(connections.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn a_reused_connection_closed_as_a_post_arrives_is_a_502_not_a_resend() {
    let (_proxy, mut client, _) =
        after_an_answer_then_a_silent_close(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\ntwice")
            .await;
    client
        .send(b"POST /order HTTP/1.1\r\nHost: shop\r\nContent-Length: 0\r\n\r\n")
        .await;
    assert_eq!(
        client.answer(false).await.status(),
        502,
        "a POST may have been acted on"
    );
}

#[tokio::test]
async fn a_connection_with_bytes_past_its_body_is_not_reused() {
    let (upstream, connections) = scripted(|_, _| {
        Reply::Answer(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokHTTP/1.1 200 OK\r\n")
    })
    .await;
    let (_proxy, addr) = proxy_to(upstream).await;
    let mut client = Raw::connect(addr).await;
    gets_answered(&mut client, 2, b"ok", Duration::ZERO).await;
    assert_eq!(
        connections.load(Ordering::SeqCst),
        2,
        "the first was dropped"
    );
}

#[tokio::test]
async fn answers_that_cannot_be_trusted_are_502() {
    for wire in [
        &b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nok"[..],
        b"HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nX: a\x01b\r\n\r\n",
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c\r\n\r\n",
        b"not http at all\r\n\r\n",
    ] {
        let (upstream, _) = scripted(move |_, _| Reply::AnswerAndClose(wire)).await;
        let (_proxy, addr) = proxy_to(upstream).await;
        let mut client = Raw::connect(addr).await;
        client.send(GET).await;
        let answer = client.answer(false).await;
        assert_eq!(answer.status(), 502, "{}", String::from_utf8_lossy(wire));
    }
}

#[tokio::test]
async fn a_body_cut_short_by_the_upstream_never_reaches_the_client_as_complete() {
    let (upstream, _) = scripted(|_, _| {
        Reply::AnswerAndClose(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhalf!")
    })
    .await;
    let (_proxy, addr) = proxy_to(upstream).await;
    let mut client = Raw::connect(addr).await;
    client.send(GET).await;
    let (text, closed) = read_until_closed(&mut client.stream, Duration::from_secs(5)).await;
    assert!(closed, "the client's connection closes: {text}");
    // What reached the client (hyper may not flush the head of an answer whose body
    // failed) never looks complete: a head promising ten bytes gets fewer.
    if let Some(end) = text.find("\r\n\r\n") {
        assert!(
            text.to_ascii_lowercase().contains("content-length: 10"),
            "{text}"
        );
        assert!(text.len() - end - 4 < 10, "{text}");
    }
}

#[tokio::test]
async fn bytes_an_idle_connection_got_unasked_are_never_taken_for_an_answer() {
    let (upstream, connections) = scripted(|_, _| {
        Reply::AnswerThenStray(
            OK,
            b"HTTP/1.1 408 Request Timeout\r\nContent-Length: 0\r\n\r\n",
        )
    })
    .await;
    let (_proxy, addr) = proxy_to(upstream).await;
    let mut client = Raw::connect(addr).await;
    // The stray 408 reaches the proxy while the connection idles in its pool.
    gets_answered(&mut client, 3, b"ok", Duration::from_millis(150)).await;
    assert_eq!(
        connections.load(Ordering::SeqCst),
        3,
        "each dirty connection was dropped"
    );
}

#[tokio::test]
async fn connect_is_refused_not_tunnelled() {
    let (upstream, connections) = scripted(|_, _| Reply::Answer(OK)).await;
    let (_proxy, addr) = proxy_to(upstream).await;
    let mut client = Raw::connect(addr).await;
    client
        .send(b"CONNECT internal.example:443 HTTP/1.1\r\nHost: shop\r\n\r\n")
        .await;
    assert_eq!(client.answer(false).await.status(), 405);
    assert_eq!(
        connections.load(Ordering::SeqCst),
        0,
        "nothing reached the upstream"
    );
}

/// An upstream that trickles its answer's head a byte at a time never gets more than the
/// request timeout: every byte is progress, so only the request's own deadline can end
/// the wait. The client gets 504 in about that time, and the failure is the upstream's.
#[tokio::test]
async fn an_upstream_trickling_its_head_is_cut_off_at_the_request_timeout() {
    let (upstream, _) = scripted(|_, _| {
        Reply::Trickle(
            b"HTTP/1.1 200 OK\r\nX-Padding: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\nContent-Length: 2\r\n\r\nok",
        )
    })
    .await;
    let route = cutover_test_kit::proxy::route("shop", upstream, None, 0);
    let mut settings = config(vec![route]);
    settings.timeouts.request = cutover_core::Duration::from_millis(600);
    let proxy = start(settings).await;
    let mut client = Raw::connect(proxy.listen_addrs()[0]).await;
    let started = std::time::Instant::now();
    client.send(GET).await;
    let answer = client.answer(false).await;
    let waited = started.elapsed();
    assert_eq!(answer.status(), 504, "{}", answer.head);
    assert!(
        waited >= Duration::from_millis(550) && waited < Duration::from_secs(3),
        "answered after {waited:?}, with the head taking about 4 s to arrive"
    );
}
