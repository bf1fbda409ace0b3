//! Requests the proxy reads and answers itself, without hyper (issue 15): bodiless
//! HTTP/1.1 requests that arrive whole. A client must not be able to tell them from
//! those hyper serves, and a client that leaves must cancel its request as with hyper.
//! (Apart from `http1_edge.rs`, whose memory measurement wants no other test's traffic
//! in its process.)

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use support::raw::Raw;
use support::{config, metric_sum, route, start, upstream};
use tokio::net::TcpListener;

/// A proxy in front of one `v1` upstream (the test support's), as `shop`.
async fn proxy() -> (cutover_proxy::Proxy, SocketAddr) {
    let v1 = upstream("v1").await;
    let proxy = start(config(vec![route("shop", &v1, None, 0)])).await;
    let addr = proxy.listen_addrs()[0];
    (proxy, addr)
}

/// An upstream that answers each path with fixed bytes: lengths, chunks, trailers, no
/// body, a status without a reason, its own `Date`, hop-by-hop fields, and a close-delimited
/// HTTP/1.0 answer (after which it closes).
async fn canned_upstream() -> SocketAddr {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    fn canned(method: &str, path: &str) -> &'static [u8] {
        match (method, path) {
            ("HEAD", "/len") => b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n",
            (_, "/len") => b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nX-A: 1\r\nX-A: 2\r\nContent-Length: 5\r\nSet-Cookie: a=1\r\nSet-Cookie: b=2\r\n\r\nhello",
            (_, "/chunked") => b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n1b\r\n, and a longer second chunk\r\n0\r\n\r\n",
            (_, "/trailers") => b"HTTP/1.1 200 OK\r\nTrailer: x-sum\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\nx-sum: 7\r\n\r\n",
            (_, "/empty") => b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
            (_, "/204") => b"HTTP/1.1 204 No Content\r\nX-B: y\r\n\r\n",
            (_, "/304") => b"HTTP/1.1 304 Not Modified\r\nETag: \"x\"\r\nContent-Length: 42\r\n\r\n",
            (_, "/599") => b"HTTP/1.1 599 Whatever\r\nContent-Length: 2\r\n\r\nok",
            (_, "/date") => b"HTTP/1.1 200 OK\r\nDate: Tue, 01 Dec 2026 00:00:00 GMT\r\nContent-Length: 2\r\n\r\nok",
            (_, "/hop") => b"HTTP/1.1 201 Created\r\nConnection: keep-alive, x-private\r\nKeep-Alive: timeout=5\r\nX-Private: 1\r\nLocation: /x\r\nContent-Length: 0\r\n\r\n",
            (_, "/http10") => b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nuntil the close",
            _ => b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n",
        }
    }
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut seen = Vec::new();
                let mut chunk = [0u8; 4096];
                loop {
                    let Some(end) = seen.windows(4).position(|w| w == b"\r\n\r\n") else {
                        match stream.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => seen.extend_from_slice(&chunk[..n]),
                        }
                        continue;
                    };
                    let head = String::from_utf8_lossy(&seen[..end]).into_owned();
                    seen.drain(..end + 4);
                    let mut line = head.split_whitespace();
                    let (method, path) = (line.next().unwrap_or(""), line.next().unwrap_or(""));
                    if stream.write_all(canned(method, path)).await.is_err() || path == "/http10" {
                        return;
                    }
                }
            });
        }
    });
    addr
}

/// Bodiless HTTP/1.1 requests are read and answered by the proxy's own reader; anything
/// else by hyper. A client must not tell them apart: the same answer reaches it byte for
/// byte (but the date) both ways, here made to go through hyper by `Content-Length: 0`,
/// and the connection goes on (or closes) alike.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_read_by_the_proxy_are_answered_as_hyper_answers_them() {
    let up = canned_upstream().await;
    let closed = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let down = closed.local_addr().expect("addr");
    drop(closed);
    let proxy = start(config(vec![
        cutover_test_kit::proxy::route("shop", up, None, 0),
        cutover_test_kit::proxy::route("down", down, None, 0),
    ]))
    .await;
    let addr = proxy.listen_addrs()[0];
    let mask_date = |wire: &[u8]| {
        let text = String::from_utf8_lossy(wire).into_owned();
        text.split("\r\n")
            .map(|line| match line.split_once(':') {
                Some((name, _)) if name.eq_ignore_ascii_case("date") => "date: -",
                _ => line,
            })
            .collect::<Vec<_>>()
            .join("\r\n")
    };
    let cases = [
        ("GET", "shop", "/len"),
        ("HEAD", "shop", "/len"),
        ("GET", "shop", "/chunked"),
        ("GET", "shop", "/trailers"),
        ("GET", "shop", "/empty"),
        ("GET", "shop", "/204"),
        ("GET", "shop", "/304"),
        ("GET", "shop", "/599"),
        ("GET", "shop", "/date"),
        ("DELETE", "shop", "/hop"),
        ("GET", "shop", "/http10"),
        ("GET", "nowhere", "/"),
        ("GET", "down", "/"),
    ];
    for (method, host, path) in cases {
        let mut wires = Vec::new();
        for extra in ["", "Content-Length: 0\r\n"] {
            let mut c = Raw::connect(addr).await;
            c.send(format!("{method} {path} HTTP/1.1\r\nHost: {host}\r\n{extra}\r\n").as_bytes())
                .await;
            let answer = c.answer(method == "HEAD").await;
            if path == "/http10" {
                assert!(c.closed_within(Duration::from_secs(2)).await, "{answer:?}");
            } else {
                c.send(b"GET /len HTTP/1.1\r\nHost: shop\r\n\r\n").await;
                let next = c.answer(false).await;
                assert_eq!(
                    next.body, b"hello",
                    "{method} {host}{path} {extra:?}: {next:?}"
                );
            }
            wires.push(mask_date(&answer.wire));
        }
        assert_eq!(
            wires[0], wires[1],
            "{method} {host}{path}: read here, then by hyper"
        );
        assert_eq!(wires[0].matches("date: ").count(), 1, "{}", wires[0]);
    }
    let mut c = Raw::connect(addr).await;
    c.send(b"GET /date HTTP/1.1\r\nHost: shop\r\n\r\n").await;
    let answer = c.answer(false).await;
    assert_eq!(
        answer.header("date").as_deref(),
        Some("Tue, 01 Dec 2026 00:00:00 GMT"),
        "the upstream's own date is kept: {answer:?}"
    );
}

/// hyper drops a request whose client closes the connection before the answer, which
/// cancels the upstream's work; requests the proxy reads itself are dropped alike: the
/// in-flight gauge goes back to zero and each counts as the client's error, not the
/// version's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_leaving_before_its_answer_cancels_the_request() {
    let (proxy, addr) = proxy().await;
    for _ in 0..3 {
        let mut c = Raw::connect(addr).await;
        c.send(b"GET /slow?ms=4000 HTTP/1.1\r\nHost: shop\r\n\r\n")
            .await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        drop(c);
    }
    let in_flight = |metrics: &str| metric_sum(metrics, "cutover_requests_in_flight", "");
    let client = support::client();
    let deadline = std::time::Instant::now() + Duration::from_secs(2);
    let metrics = loop {
        let (_, metrics) = support::get(&client, proxy.admin_addr(), "/metrics", &[]).await;
        if in_flight(&metrics) == 0.0 || std::time::Instant::now() > deadline {
            break metrics;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(in_flight(&metrics), 0.0, "{metrics}");
    let client_errors = metric_sum(&metrics, "cutover_client_errors_total", "");
    assert_eq!(client_errors, 3.0, "{metrics}");
    let window = proxy.window("shop", "v1", 10).expect("routed");
    assert_eq!(window.errors, 0, "{window:?}");
}

/// An empty line after a request (some clients send a CRLF after each), in the request's
/// write or on its own, starts no head: the connection keeps its whole idle time, not the
/// header timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_line_after_a_request_starts_no_head() {
    let v1 = upstream("v1").await;
    let mut cfg = config(vec![route("shop", &v1, None, 0)]);
    cfg.timeouts.header_read = cutover_core::Duration::from_millis(300);
    cfg.timeouts.keep_alive_idle = cutover_core::Duration::from_secs(5);
    let proxy = start(cfg).await;
    let mut c = Raw::connect(proxy.listen_addrs()[0]).await;
    c.send(b"GET / HTTP/1.1\r\nHost: shop\r\n\r\n\r\n").await;
    assert_eq!(c.answer(false).await.body, b"v1");
    assert!(
        !c.closed_within(Duration::from_millis(900)).await,
        "closed at the header timeout"
    );
    c.send(b"GET / HTTP/1.1\r\nHost: shop\r\n\r\n").await;
    assert_eq!(c.answer(false).await.body, b"v1");
    c.send(b"\r\n").await;
    assert!(
        !c.closed_within(Duration::from_millis(900)).await,
        "closed at the header timeout after an empty line of its own"
    );
    c.send(b"GET / HTTP/1.1\r\nHost: shop\r\n\r\n").await;
    assert_eq!(c.answer(false).await.body, b"v1");
}

/// Empty lines start no head, but a client cannot keep a connection open by sending
/// nothing else: a flood of them is closed at the header timeout all the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_empty_lines_is_closed_at_the_header_timeout() {
    use tokio::io::AsyncWriteExt;
    let v1 = upstream("v1").await;
    let mut cfg = config(vec![route("shop", &v1, None, 0)]);
    cfg.timeouts.header_read = cutover_core::Duration::from_millis(300);
    let proxy = start(cfg).await;
    let mut c = Raw::connect(proxy.listen_addrs()[0]).await;
    let lines = b"\r\n".repeat(2048);
    let flood = async { while c.stream.write_all(&lines).await.is_ok() {} };
    assert!(
        tokio::time::timeout(Duration::from_secs(5), flood)
            .await
            .is_ok(),
        "a connection sending only empty lines was still open after 5 s"
    );
}

/// A client that pipelines two requests and shuts its side down gets the first answered:
/// with a next request waiting, the connection is not watched for the client's close (as
/// hyper does not watch with bytes buffered).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pipelining_client_that_shuts_its_side_gets_its_first_answer() {
    use tokio::io::AsyncWriteExt;
    let (_proxy, addr) = proxy().await;
    let mut c = Raw::connect(addr).await;
    c.send(b"GET /slow?ms=200 HTTP/1.1\r\nHost: shop\r\n\r\nGET / HTTP/1.1\r\nHost: shop\r\n\r\n")
        .await;
    c.stream.shutdown().await.expect("shut down the write side");
    let first = c.answer(false).await;
    assert_eq!(first.status(), 200, "{first:?}");
}
