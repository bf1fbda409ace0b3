//! Hostile clients against the proxy (issue 12): each test reproduces a finding made by
//! probing the built binary, and fails without its fix.

mod support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use cutover_core::spec::{GuardrailMetric, GuardrailSpec};
use cutover_proxy::events::EventKind;
use cutover_proxy::{Proxy, StartError};
use cutover_test_kit::tls;
use http::{Request, StatusCode};
use http_body_util::BodyExt;
use support::metric_sum as sum;
use support::raw::read_until_closed;
use support::{client, config, full, get, route, start, tls_certificate, upstream};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn ms(millis: u64) -> cutover_core::Duration {
    cutover_core::Duration::from_millis(millis)
}

/// How long the proxy keeps `stream` open from now (it must close it within 6 s).
async fn held_until_closed<S>(stream: &mut S) -> Duration
where
    S: tokio::io::AsyncRead + Unpin,
{
    let started = Instant::now();
    let (_, closed) = read_until_closed(stream, Duration::from_secs(6)).await;
    assert!(closed, "closed in the end");
    started.elapsed()
}

/// Sends `request` on `stream` and reads the start of its answer, which must be a 200.
async fn answered_200<S>(stream: &mut S, request: &[u8])
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    stream.write_all(request).await.expect("write");
    stream.flush().await.expect("flush");
    let mut buf = [0u8; 1024];
    let n = stream.read(&mut buf).await.expect("read");
    assert!(
        String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&buf[..n])
    );
}

/// Sends `request` on a fresh connection and returns the status line's code ("" if none
/// came within 5 s).
async fn raw_status(proxy: SocketAddr, request: &[u8]) -> String {
    let mut stream = TcpStream::connect(proxy).await.expect("connect");
    let _ = stream.write_all(request).await;
    let (answer, _) = read_until_closed(&mut stream, Duration::from_secs(5)).await;
    answer
        .lines()
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .unwrap_or("")
        .to_string()
}

/// The admin API's `/metrics` text.
async fn metrics(proxy: &Proxy) -> String {
    let (status, body) = get(&client(), proxy.admin_addr(), "/metrics", &[]).await;
    assert_eq!(status, StatusCode::OK);
    body
}

/// The guardrail of the issue: the candidate's error rate above 50 % over 10 requests.
fn guarded_route(
    v1: &support::Upstream,
    v2: &support::Upstream,
) -> cutover_proxy::config::RouteConfig {
    let mut r = route("shop", v1, Some(v2), 50);
    r.guardrails = vec![GuardrailSpec {
        name: "candidate-5xx".into(),
        metric: GuardrailMetric::ErrorRate,
        max: 0.5,
        window: cutover_core::Duration::from_secs(10),
        min_requests: 10,
    }];
    r
}

/// The finding: 60 POSTs with malformed chunked bodies or aborted mid-body were
/// answered 502, counted as upstream resets, ejected both healthy endpoints and tripped
/// the candidate's guardrail. They are the client's fault: 400 or dropped, counted as
/// client errors, and the candidate keeps its weight.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_and_aborted_bodies_are_client_errors_and_the_candidate_keeps_its_weight() {
    let (v1, v2) = (upstream("v1").await, upstream("v2").await);
    let proxy = start(config(vec![guarded_route(&v1, &v2)])).await;
    let addr = proxy.listen_addrs()[0];
    let head = "POST /upload HTTP/1.1\r\nHost: shop\r\nTransfer-Encoding: chunked\r\n\r\n";
    let malformed = [
        "zz\r\nhello\r\n0\r\n\r\n",
        "5g\r\nhello\r\n0\r\n\r\n",
        "fffffffffffffffffffff\r\nhello\r\n0\r\n\r\n",
    ];
    let mut statuses = std::collections::BTreeMap::<String, u32>::new();
    for i in 0..60 {
        match i % 5 {
            0..=2 => {
                let request = format!("{head}{}", malformed[i % 5]);
                let status = raw_status(addr, request.as_bytes()).await;
                *statuses.entry(status).or_default() += 1;
            }
            3 => {
                // A chunked body cut off: the client goes away mid-body.
                let mut s = TcpStream::connect(addr).await.expect("connect");
                s.write_all(format!("{head}a\r\nhel").as_bytes())
                    .await
                    .expect("write");
                tokio::time::sleep(Duration::from_millis(20)).await;
                drop(s);
            }
            _ => {
                // A declared length never reached.
                let mut s = TcpStream::connect(addr).await.expect("connect");
                s.write_all(
                    b"POST /upload HTTP/1.1\r\nHost: shop\r\nContent-Length: 100\r\n\r\n0123456789",
                )
                .await
                .expect("write");
                tokio::time::sleep(Duration::from_millis(20)).await;
                drop(s);
            }
        }
    }
    assert_eq!(
        statuses.get("400").copied(),
        Some(36),
        "malformed bodies are answered 400: {statuses:?}"
    );
    // Four guardrail ticks, and time for the aborted requests to wind down.
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    let m = metrics(&proxy).await;
    assert_eq!(sum(&m, "cutover_upstream_errors_total", ""), 0.0, "{m}");
    assert_eq!(sum(&m, "cutover_requests_total", "5xx"), 0.0, "{m}");
    assert_eq!(sum(&m, "cutover_client_errors_total", ""), 60.0, "{m}");
    assert_eq!(sum(&m, "cutover_requests_in_flight", ""), 0.0, "{m}");
    assert!(
        proxy
            .events_since(0)
            .iter()
            .all(|e| !matches!(e.kind, EventKind::GuardrailTripped { .. })),
        "{:?}",
        proxy.events_since(0)
    );
    assert_eq!(
        proxy.routes().routes[0].weight,
        50,
        "the candidate keeps its weight"
    );
    // Both endpoints are healthy: with every candidate endpoint ejected, stable would
    // answer all of these.
    let c = client();
    let mut bodies = std::collections::BTreeSet::new();
    for _ in 0..20 {
        let (status, body) = get(&c, addr, "/", &[]).await;
        assert_eq!(status, StatusCode::OK);
        bodies.insert(body);
    }
    assert_eq!(bodies.len(), 2, "both versions answer: {bodies:?}");
    let candidate = proxy.window("shop", "v2", 10).expect("routed");
    assert_eq!(candidate.errors, 0, "{candidate:?}");
}

/// The finding: a client that uploads slowly was charged to the upstream as a
/// timeout. Past the request timeout while the proxy still waits for the body, it is a
/// 408 and a client error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_upload_is_408_and_not_an_upstream_timeout() {
    let (v1, v2) = (upstream("v1").await, upstream("v2").await);
    let mut c = config(vec![guarded_route(&v1, &v2)]);
    c.timeouts.request = ms(800);
    let proxy = start(c).await;
    let s = TcpStream::connect(proxy.listen_addrs()[0])
        .await
        .expect("connect");
    let (mut rd, mut wr) = s.into_split();
    wr.write_all(b"POST /upload HTTP/1.1\r\nHost: shop\r\nContent-Length: 40\r\n\r\n")
        .await
        .expect("write");
    let started = Instant::now();
    // One byte every 100 ms: the body would take 4 s, the request timeout is 0.8 s.
    let trickle = tokio::spawn(async move {
        for _ in 0..40 {
            if wr.write_all(b"x").await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    let mut buf = vec![0u8; 1024];
    let n = tokio::time::timeout(Duration::from_secs(5), rd.read(&mut buf))
        .await
        .ok()
        .and_then(Result::ok)
        .unwrap_or(0);
    let answer = String::from_utf8_lossy(&buf[..n]).to_string();
    trickle.abort();
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(started.elapsed() < Duration::from_secs(3));
    let m = metrics(&proxy).await;
    assert_eq!(sum(&m, "cutover_upstream_errors_total", ""), 0.0, "{m}");
    assert_eq!(sum(&m, "cutover_client_errors_total", ""), 1.0, "{m}");
    assert_eq!(sum(&m, "cutover_requests_in_flight", ""), 0.0, "{m}");
}

/// A body that stops arriving is cut off after `timeouts.clientBodyIdle`, answered 408,
/// and not charged to the upstream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_upload_is_408_after_the_body_idle_timeout() {
    let v1 = upstream("v1").await;
    let mut c = config(vec![route("shop", &v1, None, 0)]);
    c.timeouts.client_body_idle = ms(500);
    let proxy = start(c).await;
    let mut s = TcpStream::connect(proxy.listen_addrs()[0])
        .await
        .expect("connect");
    s.write_all(b"POST /upload HTTP/1.1\r\nHost: shop\r\nContent-Length: 40\r\n\r\n0123456789")
        .await
        .expect("write");
    let started = Instant::now();
    let (answer, _) = read_until_closed(&mut s, Duration::from_secs(5)).await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    let m = metrics(&proxy).await;
    assert_eq!(sum(&m, "cutover_upstream_errors_total", ""), 0.0, "{m}");
    assert_eq!(sum(&m, "cutover_client_errors_total", ""), 1.0, "{m}");
}

/// A client that resets its HTTP/2 stream while the upstream is still working: hyper drops
/// the request, and the in-flight gauge must not keep counting it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_in_flight_gauge_returns_to_zero_when_clients_disconnect() {
    let v1 = upstream("v1").await;
    let proxy = start(config(vec![route("shop", &v1, None, 0)])).await;
    let addr = proxy.listen_addrs()[0];
    let tcp = TcpStream::connect(addr).await.expect("connect");
    let (mut h2, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(tcp),
    )
    .await
    .expect("h2");
    tokio::spawn(conn);
    for _ in 0..3 {
        let request = Request::get(format!("http://{addr}/slow?ms=4000"))
            .body(full(""))
            .expect("request");
        let pending = h2.send_request(request);
        assert!(
            tokio::time::timeout(Duration::from_millis(300), pending)
                .await
                .is_err(),
            "the upstream is still working"
        );
    }
    let in_flight = sum(&metrics(&proxy).await, "cutover_requests_in_flight", "");
    let deadline = Instant::now() + Duration::from_secs(2);
    let mut now = in_flight;
    while now != 0.0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
        now = sum(&metrics(&proxy).await, "cutover_requests_in_flight", "");
    }
    assert_eq!(now, 0.0, "three cancelled requests left the gauge at {now}");
    let m = metrics(&proxy).await;
    assert_eq!(sum(&m, "cutover_client_errors_total", ""), 3.0, "{m}");
    assert_eq!(sum(&m, "cutover_requests_total", ""), 0.0, "{m}");
}

/// Connections that send one byte (`P`, the start of both `POST` and the HTTP/2 preface),
/// a trickle of header bytes, or nothing at all, on a listener capped at 4 connections.
/// Returns the open slowloris sockets.
async fn slowloris(addr: SocketAddr) -> Vec<TcpStream> {
    let mut open = Vec::new();
    for i in 0..4 {
        let mut s = TcpStream::connect(addr).await.expect("connect");
        match i {
            0 | 1 => s.write_all(b"P").await.expect("write"),
            2 => s
                .write_all(b"GET / HTTP/1.1\r\nHost: sh")
                .await
                .expect("write"),
            _ => {}
        }
        open.push(s);
    }
    open
}

/// Every socket is closed by the proxy within `within`.
async fn all_closed(sockets: Vec<TcpStream>, within: Duration) {
    let started = Instant::now();
    for (i, mut s) in sockets.into_iter().enumerate() {
        let left = within.saturating_sub(started.elapsed());
        let (_, closed) = read_until_closed(&mut s, left).await;
        assert!(
            closed,
            "slowloris connection {i} still open after {within:?}"
        );
    }
}

/// The finding: with `maxConnections: 4`, four connections that send one byte or
/// nothing were never closed, and every later request hung.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowloris_on_the_plain_listener_is_closed_and_later_requests_are_served() {
    let v1 = upstream("v1").await;
    let mut c = config(vec![route("shop", &v1, None, 0)]);
    c.limits.max_connections = 4;
    c.timeouts.header_read = ms(1_000);
    let proxy = start(c).await;
    let addr = proxy.listen_addrs()[0];
    let started = Instant::now();
    let sockets = slowloris(addr).await;
    let served = tokio::spawn(async move {
        let (status, body) = get(&client(), addr, "/", &[]).await;
        (status, body, Instant::now())
    });
    all_closed(sockets, Duration::from_millis(2_500)).await;
    let (status, body, at) = tokio::time::timeout(Duration::from_secs(5), served)
        .await
        .expect("served within 5 s")
        .expect("task");
    assert_eq!((status, body.as_str()), (StatusCode::OK, "v1"));
    assert!(at - started < Duration::from_secs(3), "{:?}", at - started);
}

/// An HTTP/1 keep-alive connection and an HTTP/2 connection that go quiet after a
/// request are closed after `timeouts.keepAliveIdle`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_keep_alive_and_http2_connections_are_closed() {
    let v1 = upstream("v1").await;
    let mut c = config(vec![route("shop", &v1, None, 0)]);
    c.timeouts.keep_alive_idle = ms(800);
    let proxy = start(c).await;
    let addr = proxy.listen_addrs()[0];

    let mut s = TcpStream::connect(addr).await.expect("connect");
    answered_200(&mut s, b"GET / HTTP/1.1\r\nHost: shop\r\n\r\n").await;
    let started = Instant::now();
    let (_, closed) = read_until_closed(&mut s, Duration::from_secs(3)).await;
    assert!(closed, "an idle keep-alive connection is closed");
    assert!(
        started.elapsed() >= Duration::from_millis(600),
        "{:?}",
        started.elapsed()
    );

    let tcp = TcpStream::connect(addr).await.expect("connect");
    let (mut h2, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(tcp),
    )
    .await
    .expect("h2");
    let conn = tokio::spawn(conn);
    let response = h2
        .send_request(
            Request::get(format!("http://{addr}/"))
                .body(full(""))
                .expect("request"),
        )
        .await
        .expect("response");
    assert_eq!(
        response
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes(),
        "v1"
    );
    let closed = tokio::time::timeout(Duration::from_secs(3), conn).await;
    assert!(
        closed.is_ok(),
        "an idle HTTP/2 connection is closed by the proxy"
    );
}

/// WebSocket tunnels hold their connection's slot (the issue found they left the count)
/// and are closed after `timeouts.tunnelIdle`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_tunnels_count_against_the_cap_and_close_when_idle() {
    let v1 = upstream("v1").await;
    let mut c = config(vec![route("shop", &v1, None, 0)]);
    c.limits.max_connections = 2;
    c.timeouts.tunnel_idle = ms(1_500);
    let proxy = start(c).await;
    let addr = proxy.listen_addrs()[0];
    let mut tunnels = Vec::new();
    for _ in 0..2 {
        let mut s = TcpStream::connect(addr).await.expect("connect");
        s.write_all(
            b"GET /ws HTTP/1.1\r\nHost: shop\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\
              Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
        )
        .await
        .expect("write");
        let mut buf = [0u8; 1024];
        let n = s.read(&mut buf).await.expect("read");
        assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 101"));
        tunnels.push(s);
    }
    let started = Instant::now();
    let served = tokio::spawn(async move {
        let (status, _) = get(&client(), addr, "/", &[]).await;
        (status, Instant::now())
    });
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert!(!served.is_finished(), "two open tunnels fill a cap of two");
    all_closed(tunnels, Duration::from_secs(3)).await;
    let (status, at) = tokio::time::timeout(Duration::from_secs(5), served)
        .await
        .expect("served once the tunnels idled out")
        .expect("task");
    assert_eq!(status, StatusCode::OK);
    assert!(
        at - started >= Duration::from_millis(700),
        "{:?}",
        at - started
    );
}

/// The finding: TLS connections that finish the handshake and go quiet were held
/// forever. Those, and connections that never start the handshake, are closed, and a
/// later request is served under a cap of 4.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowloris_on_the_tls_listener_is_closed_and_later_requests_are_served() {
    let v1 = upstream("v1").await;
    let (tls, roots, dir) = tls_certificate("slowloris");
    let mut c = config(vec![route("shop", &v1, None, 0)]);
    c.listeners[0].tls = Some(tls);
    c.limits.max_connections = 4;
    c.timeouts.header_read = ms(1_000);
    c.timeouts.tls_handshake = ms(1_000);
    let proxy = start(c).await;
    let addr = proxy.listen_addrs()[0];
    let started = Instant::now();
    let mut quiet = Vec::new();
    for _ in 0..2 {
        quiet.push(tls::connect(addr, &roots, b"http/1.1").await);
    }
    let silent = vec![
        TcpStream::connect(addr).await.expect("connect"),
        TcpStream::connect(addr).await.expect("connect"),
    ];
    let served = {
        let roots = roots.clone();
        tokio::spawn(async move {
            let tls = tls::connect(addr, &roots, b"http/1.1").await;
            let (mut h1, conn) =
                hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls))
                    .await
                    .expect("h1");
            tokio::spawn(conn);
            let request = Request::get("/")
                .header("host", "localhost")
                .body(full(""))
                .expect("request");
            let response = h1.send_request(request).await.expect("response");
            (response.status(), Instant::now())
        })
    };
    all_closed(silent, Duration::from_millis(2_500)).await;
    for (i, mut s) in quiet.into_iter().enumerate() {
        let mut buf = [0u8; 64];
        let read = tokio::time::timeout(Duration::from_millis(2_500), s.read(&mut buf)).await;
        assert!(
            matches!(read, Ok(Ok(0)) | Ok(Err(_))),
            "quiet TLS connection {i} still open: {read:?}"
        );
    }
    let (status, at) = tokio::time::timeout(Duration::from_secs(5), served)
        .await
        .expect("served within 5 s")
        .expect("task");
    assert_eq!(status, StatusCode::OK);
    assert!(at - started < Duration::from_secs(4), "{:?}", at - started);
    let _ = std::fs::remove_dir_all(&dir);
}

/// The finding: the admin API had no header timeout (36 bytes over 36 s stayed
/// open) and no connection cap.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowloris_on_the_admin_listener_is_closed_and_later_requests_are_served() {
    let mut c = config(Vec::new());
    c.limits.admin_max_connections = 4;
    c.timeouts.header_read = ms(1_000);
    let proxy = start(c).await;
    let admin = proxy.admin_addr();
    let started = Instant::now();
    let sockets = slowloris(admin).await;
    let served = tokio::spawn(async move {
        let (status, _) = get(&client(), admin, "/healthz", &[]).await;
        (status, Instant::now())
    });
    all_closed(sockets, Duration::from_millis(2_500)).await;
    let (status, at) = tokio::time::timeout(Duration::from_secs(5), served)
        .await
        .expect("served within 5 s")
        .expect("task");
    assert_eq!(status, StatusCode::OK);
    assert!(at - started < Duration::from_secs(3), "{:?}", at - started);
}

/// The admin API refuses a route table larger than `limits.adminMaxBodyBytes`.
#[tokio::test]
async fn the_admin_api_bounds_request_bodies() {
    let dir = std::env::temp_dir().join(format!("cutover-proxy-adminbody-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let token_file = dir.join("token");
    std::fs::write(&token_file, "s3cret\n").expect("token");
    let mut c = config(Vec::new());
    c.admin.token_file = Some(token_file);
    c.limits.admin_max_body_bytes = 1024;
    let proxy = start(c).await;
    let body = format!("{{\"routes\": [], \"pad\": \"{}\"}}", "x".repeat(4096));
    let request = Request::put(format!("http://{}/routes", proxy.admin_addr()))
        .header("authorization", "Bearer s3cret")
        .body(full(body))
        .expect("request");
    let response = client().request(request).await.expect("response");
    assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
    let _ = std::fs::remove_dir_all(&dir);
}

/// The finding: an empty (or whitespace-only) `admin.tokenFile` let `PUT /routes`
/// through without any `Authorization` header. The proxy now refuses to start.
#[tokio::test]
async fn an_empty_or_blank_admin_token_file_is_refused_at_start() {
    let dir = std::env::temp_dir().join(format!("cutover-proxy-emptytoken-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    for (name, content) in [("empty", ""), ("blank", " \n\t \n")] {
        let token_file = dir.join(name);
        std::fs::write(&token_file, content).expect("token");
        let mut c = config(Vec::new());
        c.admin.token_file = Some(token_file.clone());
        match Proxy::start(c).await {
            Err(e @ StartError::EmptyToken { .. }) => {
                let message = e.to_string();
                assert!(
                    message.contains("is empty")
                        && message.contains(&token_file.display().to_string()),
                    "{message}"
                );
            }
            Err(other) => panic!("{name}: refused for another reason: {other}"),
            Ok(_) => panic!("{name}: a proxy started with a {name} admin token file"),
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// A `metricsWindow` beyond the cap is refused with a message naming it.
#[tokio::test]
async fn a_metrics_window_beyond_the_cap_is_refused() {
    let mut c = config(Vec::new());
    c.metrics_window = cutover_core::Duration::from_secs(30 * 24 * 3600);
    match Proxy::start(c).await {
        Err(StartError::Config(e)) => {
            assert!(e.to_string().contains("metricsWindow"), "{e}");
        }
        Err(other) => panic!("refused for another reason: {other}"),
        Ok(_) => panic!("a proxy started with a 30-day window"),
    }
    let mut c = config(Vec::new());
    c.metrics_window = cutover_proxy::config::MAX_METRICS_WINDOW;
    start(c).await;
}

/// Versions and endpoints that leave the table are forgotten after the grace, but not
/// while a request still uses them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unrouted_versions_are_forgotten_after_the_grace_but_not_while_in_flight() {
    let (v1, v2, v3) = (
        upstream("v1").await,
        upstream("v2").await,
        upstream("v3").await,
    );
    let mut c = config(vec![route("shop", &v1, Some(&v2), 50)]);
    c.limits.forget_unrouted_after = ms(1_000);
    let proxy = Arc::new(start(c).await);
    let addr = proxy.listen_addrs()[0];
    let http = client();
    for _ in 0..4 {
        get(&http, addr, "/", &[]).await;
    }
    // A request that keeps v1 (stable) busy across the table change.
    let mut only_v1 = route("shop", &v1, None, 0);
    only_v1.release = "slow".into();
    only_v1.path_prefix = Some("/slow".into());
    let mut r3 = route("shop", &v3, None, 0);
    r3.stable.name = "v3".into();
    proxy
        .set_routes(&cutover_proxy::config::RouteTableConfig {
            routes: vec![route("shop", &v1, Some(&v2), 50), only_v1],
        })
        .await
        .expect("valid");
    let slow = {
        let http = http.clone();
        tokio::spawn(async move { get(&http, addr, "/slow?ms=6000", &[]).await })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    proxy
        .set_routes(&cutover_proxy::config::RouteTableConfig { routes: vec![r3] })
        .await
        .expect("valid");
    assert!(
        proxy.window("shop", "v2", 10).is_some(),
        "kept during the grace"
    );
    // The registry is swept once a second: the grace ends within a second of its length.
    let gone = |release: &'static str, version: &'static str| {
        let proxy = proxy.clone();
        async move {
            let deadline = Instant::now() + Duration::from_secs(4);
            while proxy.window(release, version, 10).is_some() && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            proxy.window(release, version, 10).is_none()
        }
    };
    assert!(gone("shop", "v2").await, "v2 forgotten");
    assert!(
        proxy.window("slow", "v1", 10).is_some(),
        "a version serving a request is kept"
    );
    assert!(!metrics(&proxy).await.contains("version=\"v2\""));
    let (status, _) = slow.await.expect("task");
    assert_eq!(status, StatusCode::OK);
    assert!(gone("slow", "v1").await, "forgotten once the request ended");
    assert!(proxy.window("shop", "v3", 10).is_some());
}

/// Mirroring is bounded: past `limits.maxMirrorInFlight` copies under way, further copies
/// are dropped and counted rather than queued.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mirroring_is_bounded_and_drops_are_counted() {
    let (v1, v2) = (upstream("v1").await, upstream("v2").await);
    let mut r = route("shop", &v1, Some(&v2), 0);
    r.mirror_percent = 100;
    let mut c = config(vec![r]);
    c.limits.max_mirror_in_flight = 2;
    let proxy = start(c).await;
    let addr = proxy.listen_addrs()[0];
    let mut requests = Vec::new();
    for _ in 0..10 {
        requests.push(tokio::spawn(async move {
            get(&client(), addr, "/slow?ms=800", &[]).await
        }));
    }
    for r in requests {
        assert_eq!(r.await.expect("task").0, StatusCode::OK);
    }
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let m = metrics(&proxy).await;
    let dropped = sum(&m, "cutover_mirror_dropped_total", "");
    let mirrored = v2.requests.load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(dropped + mirrored as f64, 10.0, "{m}");
    assert!(
        mirrored >= 2 && dropped >= 1.0,
        "mirrored {mirrored}, dropped {dropped}"
    );
}

/// A request refused for its framing (a Transfer-Encoding other than one `chunked`) leaves
/// its body unread: the connection must close after the 400, not read that body as the
/// next request.
#[tokio::test]
async fn a_request_refused_for_its_framing_closes_the_connection() {
    let v1 = upstream("v1").await;
    let proxy = start(config(vec![route("shop", &v1, None, 0)])).await;
    let addr = proxy.listen_addrs()[0];
    for te in ["identity, chunked", "chunked\r\nTransfer-Encoding: chunked"] {
        let mut s = TcpStream::connect(addr).await.expect("connect");
        let request = format!(
            "POST / HTTP/1.1\r\nHost: shop\r\nTransfer-Encoding: {te}\r\n\r\n\
             2e\r\nGET /smuggled HTTP/1.1\r\nHost: shop\r\nX: y\r\n\r\n\r\n0\r\n\r\n"
        );
        s.write_all(request.as_bytes()).await.expect("write");
        let (answer, closed) = read_until_closed(&mut s, Duration::from_secs(3)).await;
        assert!(answer.starts_with("HTTP/1.1 400"), "{te:?}: {answer}");
        assert_eq!(answer.matches("HTTP/1.1 ").count(), 1, "{te:?}: {answer}");
        assert!(closed, "{te:?}: the connection stays open after the 400");
    }
    assert_eq!(v1.requests.load(std::sync::atomic::Ordering::Relaxed), 0);
}

/// Equal duplicate `Content-Length` headers are accepted (RFC 9110 §8.6) and forwarded as
/// one, since some upstreams refuse duplicates.
#[tokio::test]
async fn equal_duplicate_content_lengths_reach_the_upstream_as_one() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let upstream_addr = listener.local_addr().expect("addr");
    let seen = tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.expect("accept");
        let mut head = Vec::new();
        let mut buf = [0u8; 1024];
        while !head.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = s.read(&mut buf).await.expect("read");
            assert!(n > 0, "closed early");
            head.extend_from_slice(&buf[..n]);
        }
        s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
            .await
            .expect("write");
        String::from_utf8_lossy(&head).to_lowercase()
    });
    let mut r = route("shop", &upstream("unused").await, None, 0);
    r.stable.endpoints = vec![upstream_addr.to_string()];
    let proxy = start(config(vec![r])).await;
    let status = raw_status(
        proxy.listen_addrs()[0],
        b"POST / HTTP/1.1\r\nHost: shop\r\nContent-Length: 5\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello",
    )
    .await;
    assert_eq!(status, "200");
    let head = seen.await.expect("task");
    assert_eq!(head.matches("content-length:").count(), 1, "{head}");
}

/// An idle HTTP/1 keep-alive connection waits `keepAliveIdle` (hyper's own header timer
/// would have cut it at `headerRead`), while a later request head trickled onto it gets
/// `headerRead` from its first byte.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_keep_alive_waits_its_time_but_a_trickled_later_head_gets_the_header_timeout() {
    let v1 = upstream("v1").await;
    let mut c = config(vec![route("shop", &v1, None, 0)]);
    c.timeouts.header_read = ms(1_000);
    c.timeouts.keep_alive_idle = ms(3_000);
    let proxy = start(c).await;
    let addr = proxy.listen_addrs()[0];
    let served = |trickle: bool| async move {
        let mut s = TcpStream::connect(addr).await.expect("connect");
        answered_200(&mut s, b"GET / HTTP/1.1\r\nHost: shop\r\n\r\n").await;
        if trickle {
            s.write_all(b"GET / HT").await.expect("write");
        }
        let started = Instant::now();
        let (_, closed) = read_until_closed(&mut s, Duration::from_secs(6)).await;
        assert!(closed, "closed in the end");
        started.elapsed()
    };
    let (idle, trickled) = tokio::join!(served(false), served(true));
    assert!(
        idle >= Duration::from_millis(2_500) && idle < Duration::from_millis(4_500),
        "an idle keep-alive connection closed after {idle:?}, not after keepAliveIdle"
    );
    assert!(
        trickled < Duration::from_millis(2_000),
        "a trickled head held its connection for {trickled:?}"
    );
}

/// The start of a next head sent in the same segment as a request (so read while that
/// request was under way) still gets `headerRead`: a parked connection that finds unread
/// bytes times them as a head that started arriving, rather than parking and unparking on
/// them until `keepAliveIdle`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_next_head_sent_with_a_request_and_left_half_gets_the_header_timeout() {
    let v1 = upstream("v1").await;
    let mut c = config(vec![route("shop", &v1, None, 0)]);
    c.timeouts.header_read = ms(1_000);
    c.timeouts.keep_alive_idle = ms(4_000);
    let proxy = start(c).await;
    let addr = proxy.listen_addrs()[0];
    let mut s = TcpStream::connect(addr).await.expect("connect");
    answered_200(&mut s, b"GET / HTTP/1.1\r\nHost: shop\r\n\r\nGET / HT").await;
    let held = held_until_closed(&mut s).await;
    assert!(
        held < Duration::from_millis(2_500),
        "a half-sent head behind a request held its connection for {held:?}"
    );
}

/// An HTTP/2 client that completes the preface and settings but never opens a stream is
/// closed after `timeouts.headerRead`, like an HTTP/1 client that never sends a head.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http2_connection_that_never_sends_a_request_is_closed() {
    let v1 = upstream("v1").await;
    let mut c = config(vec![route("shop", &v1, None, 0)]);
    c.timeouts.header_read = ms(1_000);
    let proxy = start(c).await;
    let tcp = TcpStream::connect(proxy.listen_addrs()[0])
        .await
        .expect("connect");
    let (_h2, conn) = hyper::client::conn::http2::handshake::<_, _, support::Body>(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(tcp),
    )
    .await
    .expect("h2");
    let started = Instant::now();
    let closed = tokio::time::timeout(Duration::from_secs(4), conn).await;
    assert!(
        closed.is_ok(),
        "an HTTP/2 connection without requests stays open"
    );
    assert!(
        started.elapsed() < Duration::from_millis(2_500),
        "{:?}",
        started.elapsed()
    );
}

/// Over TLS too, where an idle HTTP/1.1 connection is parked with its TLS session: a
/// client that starts a next head after the park and stops gets `headerRead` from its
/// first byte, not the rest of `keepAliveIdle`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_head_left_half_sent_after_a_park_over_tls_gets_the_header_timeout() {
    let v1 = upstream("v1").await;
    let (tls_config, roots, dir) = tls_certificate("tls-half-head");
    let mut c = config(vec![route("shop", &v1, None, 0)]);
    c.listeners[0].tls = Some(tls_config);
    c.timeouts.header_read = ms(1_000);
    c.timeouts.keep_alive_idle = ms(4_000);
    let proxy = start(c).await;
    let mut s = tls::connect(proxy.listen_addrs()[0], &roots, b"http/1.1").await;
    answered_200(&mut s, b"GET / HTTP/1.1\r\nHost: shop\r\n\r\n").await;
    // Longer than the proxy waits before parking an idle connection.
    tokio::time::sleep(Duration::from_millis(300)).await;
    s.write_all(b"GET / HT").await.expect("write");
    s.flush().await.expect("flush");
    let held = held_until_closed(&mut s).await;
    assert!(
        held < Duration::from_millis(2_500),
        "a head left half-sent after a park held its TLS connection for {held:?}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
