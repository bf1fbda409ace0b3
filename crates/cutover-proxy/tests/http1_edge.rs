//! HTTP/1.1 edge cases over raw sockets (issue 15): the client listener runs hyper only
//! while a request is under way and parks idle connections without their buffers, so
//! every case here is also tried across a park (the connection idles past the park delay
//! between requests), and the memory of idle connections is measured.

mod support;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::{Response, StatusCode};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use support::raw::Raw;
use support::{config, full, route, rss_kib, start, upstream};
use tokio::net::TcpListener;

/// Longer than the proxy's park delay (50 ms): the connection has been parked since.
const PARKED: Duration = Duration::from_millis(200);

/// A proxy in front of one `v1` upstream (the test support's), as `shop`.
async fn proxy() -> (cutover_proxy::Proxy, SocketAddr) {
    let v1 = upstream("v1").await;
    let proxy = start(config(vec![route("shop", &v1, None, 0)])).await;
    let addr = proxy.listen_addrs()[0];
    (proxy, addr)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_requests_are_answered_in_order_before_and_after_a_park() {
    let (_proxy, addr) = proxy().await;
    let mut c = Raw::connect(addr).await;
    let get = "GET / HTTP/1.1\r\nHost: shop\r\n\r\n";
    let upload = "POST /upload HTTP/1.1\r\nHost: shop\r\nContent-Length: 3\r\n\r\nabc";
    c.send(format!("{get}{upload}{get}").as_bytes()).await;
    let answers = [
        c.answer(false).await,
        c.answer(false).await,
        c.answer(false).await,
    ];
    let bodies: Vec<_> = answers.iter().map(|a| a.body.clone()).collect();
    assert_eq!(
        bodies,
        [b"v1".to_vec(), b"3".to_vec(), b"v1".to_vec()],
        "{answers:?}"
    );
    tokio::time::sleep(PARKED).await;
    // The second of these arrives in two pieces, the connection parked between them.
    c.send(format!("{get}GET / HT").as_bytes()).await;
    let first = c.answer(false).await;
    assert_eq!(first.body, b"v1", "{first:?}");
    tokio::time::sleep(PARKED).await;
    c.send(b"TP/1.1\r\nHost: shop\r\n\r\n").await;
    let second = c.answer(false).await;
    assert_eq!(second.body, b"v1", "{second:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expect_100_continue_is_answered_before_the_body_is_sent() {
    let (_proxy, addr) = proxy().await;
    let mut c = Raw::connect(addr).await;
    for _ in 0..2 {
        c.send(
            b"POST /upload HTTP/1.1\r\nHost: shop\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n",
        )
        .await;
        let interim = c.answer(false).await;
        assert_eq!(interim.status(), 100, "{interim:?}");
        c.send(b"hello").await;
        let answer = c.answer(false).await;
        assert_eq!((answer.status(), &answer.body[..]), (200, &b"5"[..]));
        tokio::time::sleep(PARKED).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chunked_upload_with_extensions_and_trailers_arrives_whole() {
    let (_proxy, addr) = proxy().await;
    let mut c = Raw::connect(addr).await;
    for _ in 0..2 {
        c.send(
            b"POST /upload HTTP/1.1\r\nHost: shop\r\nTransfer-Encoding: chunked\r\n\r\n\
              5;name=value\r\nhello\r\n6\r\n world\r\n0\r\nx-checksum: 42\r\n\r\n",
        )
        .await;
        let answer = c.answer(false).await;
        assert_eq!((answer.status(), &answer.body[..]), (200, &b"11"[..]));
        tokio::time::sleep(PARKED).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn head_answers_carry_no_body_and_the_connection_goes_on() {
    let (_proxy, addr) = proxy().await;
    let mut c = Raw::connect(addr).await;
    c.send(b"HEAD / HTTP/1.1\r\nHost: shop\r\n\r\n").await;
    let head = c.answer(true).await;
    assert_eq!(head.status(), 200, "{head:?}");
    tokio::time::sleep(PARKED).await;
    // Had the HEAD answer carried a body, this would read it as the next head.
    c.send(b"GET / HTTP/1.1\r\nHost: shop\r\n\r\n").await;
    let get = c.answer(false).await;
    assert_eq!((get.status(), &get.body[..]), (200, &b"v1"[..]), "{get:?}");
}

/// An upstream answering `/204` with 204 and `/304` with 304, anything else 200 `ok`.
async fn bodiless_upstream() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let service = service_fn(|req: http::Request<hyper::body::Incoming>| async move {
                    let status = match req.uri().path() {
                        "/204" => StatusCode::NO_CONTENT,
                        "/304" => StatusCode::NOT_MODIFIED,
                        _ => StatusCode::OK,
                    };
                    let mut response = Response::new(if status == StatusCode::OK {
                        full("ok")
                    } else {
                        full(Bytes::new())
                    });
                    *response.status_mut() = status;
                    if status == StatusCode::NOT_MODIFIED {
                        response
                            .headers_mut()
                            .insert("etag", "\"x\"".parse().expect("value"));
                    }
                    Ok::<_, Infallible>(response)
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_content_and_not_modified_carry_no_body() {
    let up = bodiless_upstream().await;
    let proxy = start(config(vec![cutover_test_kit::proxy::route(
        "shop", up, None, 0,
    )]))
    .await;
    let addr = proxy.listen_addrs()[0];
    let mut c = Raw::connect(addr).await;
    for path in ["/204", "/304"] {
        c.send(format!("GET {path} HTTP/1.1\r\nHost: shop\r\n\r\n").as_bytes())
            .await;
        let answer = c.answer(true).await;
        assert!(
            answer.header("transfer-encoding").is_none(),
            "{path}: {answer:?}"
        );
        tokio::time::sleep(PARKED).await;
    }
    c.send(b"GET / HTTP/1.1\r\nHost: shop\r\n\r\n").await;
    let after = c.answer(false).await;
    assert_eq!(
        (after.status(), &after.body[..]),
        (200, &b"ok"[..]),
        "no stray body bytes came before: {after:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_closing_mid_body_is_a_client_error() {
    let (proxy, addr) = proxy().await;
    for _ in 0..3 {
        let mut c = Raw::connect(addr).await;
        c.send(b"GET / HTTP/1.1\r\nHost: shop\r\n\r\n").await;
        assert_eq!(c.answer(false).await.status(), 200);
        tokio::time::sleep(PARKED).await;
        c.send(b"POST /upload HTTP/1.1\r\nHost: shop\r\nContent-Length: 100\r\n\r\n0123456789")
            .await;
        tokio::time::sleep(Duration::from_millis(50)).await;
        drop(c);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let window = proxy.window("shop", "v1", 10).expect("routed");
    assert_eq!(window.errors, 0, "{window:?}");
    let (status, metrics) =
        support::get(&support::client(), proxy.admin_addr(), "/metrics", &[]).await;
    assert_eq!(status, StatusCode::OK);
    let client_errors = support::metric_sum(&metrics, "cutover_client_errors_total", "");
    assert_eq!(client_errors, 3.0, "{metrics}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_1_0_closes_unless_kept_alive_and_connection_close_closes() {
    let (_proxy, addr) = proxy().await;

    let mut c = Raw::connect(addr).await;
    c.send(b"GET / HTTP/1.0\r\nHost: shop\r\n\r\n").await;
    let answer = c.answer(false).await;
    assert_eq!(
        (answer.status(), &answer.body[..]),
        (200, &b"v1"[..]),
        "{answer:?}"
    );
    assert!(answer.head.starts_with("HTTP/1.0 ") || answer.head.starts_with("HTTP/1.1 "));
    assert!(c.closed_within(Duration::from_secs(2)).await, "1.0 closes");

    let mut c = Raw::connect(addr).await;
    for _ in 0..2 {
        c.send(b"GET / HTTP/1.0\r\nHost: shop\r\nConnection: keep-alive\r\n\r\n")
            .await;
        let answer = c.answer(false).await;
        assert_eq!(answer.body, b"v1", "{answer:?}");
        tokio::time::sleep(PARKED).await;
    }

    let mut c = Raw::connect(addr).await;
    c.send(b"GET / HTTP/1.1\r\nHost: shop\r\n\r\n").await;
    assert_eq!(c.answer(false).await.status(), 200);
    tokio::time::sleep(PARKED).await;
    c.send(b"GET / HTTP/1.1\r\nHost: shop\r\nConnection: close\r\n\r\n")
        .await;
    let answer = c.answer(false).await;
    assert_eq!(answer.body, b"v1", "{answer:?}");
    assert!(
        c.closed_within(Duration::from_secs(2)).await,
        "close closes"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_websocket_upgrade_after_a_park_tunnels() {
    let (_proxy, addr) = proxy().await;
    let mut c = Raw::connect(addr).await;
    c.send(b"GET / HTTP/1.1\r\nHost: shop\r\n\r\n").await;
    assert_eq!(c.answer(false).await.status(), 200);
    tokio::time::sleep(PARKED).await;
    c.send(
        b"GET /ws HTTP/1.1\r\nHost: shop\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
          Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
    )
    .await;
    let switched = c.answer(true).await;
    assert_eq!(switched.status(), 101, "{switched:?}");
    // One masked text frame "hi"; the echo comes back unmasked.
    let mask = [1u8, 2, 3, 4];
    let mut frame = vec![0x81, 0x80 | 2];
    frame.extend_from_slice(&mask);
    frame.extend(b"hi".iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    c.send(&frame).await;
    while c.buf.len() < 4 {
        assert!(c.fill().await, "tunnel closed");
    }
    assert_eq!(&c.buf[..4], &[0x81, 2, b'h', b'i']);
}

/// The finding: every idle HTTP/1.1 keep-alive connection held about 21 KiB
/// (hyper's 8 KiB read and write buffers and its connection state). Parked, one holds
/// the socket and a small state. The proxy runs in this process, so its resident memory
/// grows by what the idle connections hold (the clients are plain sockets: kernel
/// memory only).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_keep_alive_connections_hold_little_memory() {
    const CONNECTIONS: usize = 2_000;
    let (_proxy, addr) = proxy().await;
    let open = move |n: usize| {
        tokio::task::spawn_blocking(move || {
            use std::io::{Read, Write};
            let mut held = Vec::with_capacity(n);
            for _ in 0..n {
                let mut s = std::net::TcpStream::connect(addr).expect("connect");
                s.set_read_timeout(Some(Duration::from_secs(5)))
                    .expect("timeout");
                s.write_all(b"GET / HTTP/1.1\r\nHost: shop\r\n\r\n")
                    .expect("write");
                let mut seen = Vec::new();
                let mut chunk = [0u8; 1024];
                while !seen.ends_with(b"v1") {
                    let got = s.read(&mut chunk).expect("read");
                    assert!(got > 0, "closed");
                    seen.extend_from_slice(&chunk[..got]);
                }
                held.push(s);
            }
            held
        })
    };
    // Warm up: allocator arenas, the upstream pool, the tasks' first pages.
    let warm = open(200).await.expect("warm-up");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = rss_kib();
    let held = open(CONNECTIONS).await.expect("connections");
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    let after = rss_kib();
    let per_connection = (after.saturating_sub(before) * 1024) / CONNECTIONS as u64;
    drop((warm, held));
    eprintln!(
        "idle keep-alive connection: {per_connection} bytes ({before} KiB before, {after} KiB after {CONNECTIONS})"
    );
    assert!(
        per_connection <= 4 * 1024,
        "each idle keep-alive connection holds {per_connection} bytes ({before} KiB before, {after} KiB after {CONNECTIONS})"
    );
}
