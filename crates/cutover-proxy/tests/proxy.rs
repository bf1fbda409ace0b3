//! The proxy with real upstream servers on loopback.

mod support;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use cutover_core::spec::{MatchRule, StickyKey};
use cutover_proxy::config::RouteTableConfig;
use cutover_test_kit::closed_address;
use cutover_test_kit::tls;
use http::{Request, StatusCode};
use http_body_util::BodyExt;
use support::{client, config, full, get, route, start, tls_certificate, upstream};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Sends `n` GETs over `concurrency` keep-alive connections; counts bodies.
async fn load(proxy: std::net::SocketAddr, n: u64, concurrency: u64) -> BTreeMap<String, u64> {
    let client = client();
    let next = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let (client, next) = (client.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            let mut seen = BTreeMap::new();
            while next.fetch_add(1, Ordering::Relaxed) < n {
                let (status, body) = get(&client, proxy, "/", &[]).await;
                *seen.entry(format!("{status} {body}")).or_insert(0) += 1;
            }
            seen
        }));
    }
    let mut total = BTreeMap::new();
    for t in tasks {
        for (k, v) in t.await.expect("task") {
            *total.entry(k).or_insert(0) += v;
        }
    }
    total
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_thousand_requests_at_90_10_land_within_half_a_percent() {
    let (v1, v2) = (upstream("v1").await, upstream("v2").await);
    let proxy = start(config(vec![route("shop", &v1, Some(&v2), 10)])).await;
    let seen = load(proxy.listen_addrs()[0], 100_000, 32).await;
    let candidate = seen.get("200 OK v2").copied().unwrap_or(0);
    let stable = seen.get("200 OK v1").copied().unwrap_or(0);
    assert_eq!(
        candidate + stable,
        100_000,
        "every request succeeded: {seen:?}"
    );
    assert!(
        (9_500..=10_500).contains(&candidate),
        "{candidate} of 100,000 on the candidate"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sticky_users_never_move_back_as_the_weight_rises() {
    let (v1, v2) = (upstream("v1").await, upstream("v2").await);
    let mut r = route("shop", &v1, Some(&v2), 0);
    r.sticky = Some(StickyKey::Cookie("session".into()));
    let proxy = start(config(vec![r.clone()])).await;
    let client = client();
    let mut on_candidate = vec![false; 300];
    for weight in (0..=100).step_by(10) {
        r.weight = weight;
        proxy
            .set_routes(&RouteTableConfig {
                routes: vec![r.clone()],
            })
            .await
            .expect("valid");
        for (user, was) in on_candidate.iter_mut().enumerate() {
            let cookie = format!("session=user-{user}");
            let (_, body) = get(
                &client,
                proxy.listen_addrs()[0],
                "/",
                &[("cookie", &cookie)],
            )
            .await;
            let now = body == "v2";
            assert!(
                !*was || now,
                "user {user} moved back to stable at weight {weight}"
            );
            *was = now;
        }
        let share = on_candidate.iter().filter(|c| **c).count() as f64 / 300.0;
        assert!(
            (share - f64::from(weight) / 100.0).abs() < 0.1,
            "weight {weight}: {share}"
        );
    }
}

#[tokio::test]
async fn header_and_cookie_rules_pick_the_candidate() {
    let (v1, v2) = (upstream("v1").await, upstream("v2").await);
    let mut r = route("shop", &v1, Some(&v2), 0);
    r.match_rules = vec![
        MatchRule {
            header: Some("X-Canary".into()),
            ..MatchRule::default()
        },
        MatchRule {
            cookie: Some("beta".into()),
            exact: Some("yes".into()),
            ..MatchRule::default()
        },
        MatchRule {
            header: Some("X-Team".into()),
            regex: Some("^check".into()),
            ..MatchRule::default()
        },
    ];
    let proxy = start(config(vec![r])).await;
    let (c, addr) = (client(), proxy.listen_addrs()[0]);
    assert_eq!(get(&c, addr, "/", &[]).await.1, "v1");
    assert_eq!(get(&c, addr, "/", &[("x-canary", "always")]).await.1, "v2");
    assert_eq!(
        get(
            &c,
            addr,
            "/",
            &[("x-canary", "never"), ("cookie", "beta=yes")]
        )
        .await
        .1,
        "v1"
    );
    assert_eq!(
        get(&c, addr, "/", &[("cookie", "a=1; beta=yes")]).await.1,
        "v2"
    );
    assert_eq!(get(&c, addr, "/", &[("x-team", "checkout")]).await.1, "v2");
    assert_eq!(get(&c, addr, "/", &[("x-team", "search")]).await.1, "v1");
}

#[tokio::test]
async fn websocket_echo_through_the_proxy() {
    let v1 = upstream("v1").await;
    let proxy = start(config(vec![route("shop", &v1, None, 0)])).await;
    let mut stream = TcpStream::connect(proxy.listen_addrs()[0])
        .await
        .expect("connect");
    let key = "dGhlIHNhbXBsZSBub25jZQ==";
    // A client's own forwarding fields are replaced on an upgrade too (it goes upstream
    // through another client than other requests).
    let handshake = format!(
        "GET /ws HTTP/1.1\r\nHost: shop\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\nX-Forwarded-For: 1.2.3.4\r\nX-Forwarded-Proto: gopher\r\n\r\n"
    );
    stream.write_all(handshake.as_bytes()).await.expect("write");
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut byte = [0u8; 1];
        stream.read_exact(&mut byte).await.expect("read");
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).to_lowercase();
    assert!(head.starts_with("http/1.1 101"), "{head}");
    assert!(
        head.contains(&format!(
            "sec-websocket-accept: {}",
            support::websocket_accept(key).to_lowercase()
        )),
        "{head}"
    );
    for seen in [
        "x-seen-x-forwarded-for: 127.0.0.1\r\n",
        "x-seen-x-forwarded-proto: http\r\n",
        "x-seen-forwarded: for=127.0.0.1;proto=http;host=shop\r\n",
    ] {
        assert!(head.contains(seen), "{seen} in:\n{head}");
    }
    for message in ["hello", "through the proxy"] {
        let mask = [1u8, 2, 3, 4];
        let mut frame = vec![0x81, 0x80 | message.len() as u8];
        frame.extend_from_slice(&mask);
        frame.extend(message.bytes().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        stream.write_all(&frame).await.expect("write");
        let mut reply = vec![0u8; 2 + message.len()];
        stream.read_exact(&mut reply).await.expect("read");
        assert_eq!(&reply[2..], message.as_bytes());
    }
}

#[tokio::test]
async fn an_h2c_client_reaches_an_http1_upstream() {
    let v1 = upstream("v1").await;
    let proxy = start(config(vec![route("shop", &v1, None, 0)])).await;
    let h2: support::Client =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .http2_only(true)
            .build_http();
    let req = Request::get(format!("http://{}/headers", proxy.listen_addrs()[0]))
        .body(full(""))
        .expect("request");
    let response = h2.request(req).await.expect("h2c request");
    assert_eq!(response.version(), http::Version::HTTP_2);
    let body = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    let seen: serde_json::Value = serde_json::from_slice(&body).expect("json");
    assert!(
        seen.get("host").is_some(),
        "the h2 authority reaches the h1 upstream as Host: {seen}"
    );
}

#[tokio::test]
async fn hop_by_hop_headers_are_removed_and_forwarding_headers_set() {
    let v1 = upstream("v1").await;
    let proxy = start(config(vec![route("shop", &v1, None, 0)])).await;
    let c = client();
    let (status, body) = get(
        &c,
        proxy.listen_addrs()[0],
        "/headers",
        &[
            ("connection", "x-private"),
            ("x-private", "1"),
            ("proxy-authorization", "Basic x"),
            ("te", "gzip"),
            ("host", "shop.example:8080"),
            ("x-forwarded-for", "10.1.1.1"),
        ],
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let seen: serde_json::Value = serde_json::from_str(&body).expect("json");
    for gone in ["x-private", "proxy-authorization", "te"] {
        assert!(
            seen.get(gone).is_none(),
            "{gone} reached the upstream: {seen}"
        );
    }
    assert_eq!(
        seen["host"], "shop.example:8080",
        "the original Host is kept"
    );
    assert_eq!(
        seen["x-forwarded-for"], "127.0.0.1",
        "an untrusted client's X-Forwarded-For is replaced"
    );
    assert_eq!(seen["x-forwarded-proto"], "http");
    assert_eq!(seen["x-forwarded-host"], "shop.example:8080");
    assert_eq!(
        seen["forwarded"],
        "for=127.0.0.1;proto=http;host=\"shop.example:8080\""
    );
    let req = Request::get(format!("http://{}/headers", proxy.listen_addrs()[0]))
        .body(full(""))
        .expect("request");
    let response = c.request(req).await.expect("response");
    assert!(
        response.headers().get("x-hop").is_none() && response.headers().get("keep-alive").is_none()
    );
    assert_eq!(response.headers()["x-end"], "kept");
}

#[tokio::test]
async fn forwarding_headers_from_a_trusted_proxy_are_appended_to_and_others_replaced() {
    let v1 = upstream("v1").await;
    let sent = [
        ("x-forwarded-for", "203.0.113.9"),
        ("forwarded", "for=203.0.113.9;proto=https"),
    ];
    let seen_through = |trusted: Vec<String>| {
        let v1 = &v1;
        async move {
            let mut c = config(vec![route("shop", v1, None, 0)]);
            c.limits.trusted_proxies = trusted;
            let proxy = start(c).await;
            let (status, body) = get(&client(), proxy.listen_addrs()[0], "/headers", &sent).await;
            assert_eq!(status, StatusCode::OK);
            serde_json::from_str::<serde_json::Value>(&body).expect("json")
        }
    };
    let untrusted = seen_through(vec!["10.0.0.0/8".into(), "::1/128".into()]).await;
    assert_eq!(untrusted["x-forwarded-for"], "127.0.0.1");
    let forwarded = untrusted["forwarded"].as_str().unwrap_or("");
    assert!(
        forwarded.starts_with("for=127.0.0.1;proto=http;host=\"127.0.0.1:")
            && forwarded.matches("for=").count() == 1,
        "replaced, and a host with a port is quoted: {forwarded}"
    );
    let trusted = seen_through(vec!["127.0.0.0/8".into()]).await;
    assert_eq!(trusted["x-forwarded-for"], "203.0.113.9, 127.0.0.1");
    let forwarded = trusted["forwarded"].as_str().unwrap_or("");
    assert!(
        forwarded.starts_with("for=203.0.113.9;proto=https, for=127.0.0.1;proto=http;host="),
        "{forwarded}"
    );
}

#[tokio::test]
async fn a_bad_trusted_proxy_entry_is_refused_at_start() {
    let mut c = config(Vec::new());
    c.limits.trusted_proxies = vec!["10.0.0.0/40".into()];
    let error = cutover_proxy::Proxy::start(c).await.err().expect("refused");
    let chain = format!(
        "{error}: {}",
        std::error::Error::source(&error)
            .map(|e| e.to_string())
            .unwrap_or_default()
    );
    assert!(chain.contains("10.0.0.0/40"), "{chain}");
}

async fn raw(proxy: std::net::SocketAddr, request: &str) -> String {
    let mut stream = TcpStream::connect(proxy).await.expect("connect");
    stream.write_all(request.as_bytes()).await.expect("write");
    let mut out = vec![0u8; 512];
    let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut out))
        .await
        .expect("answer in time")
        .unwrap_or(0);
    String::from_utf8_lossy(&out[..n]).into_owned()
}

#[tokio::test]
async fn smuggling_attempts_are_rejected() {
    let v1 = upstream("v1").await;
    let proxy = start(config(vec![route("shop", &v1, None, 0)])).await;
    let addr = proxy.listen_addrs()[0];
    for attempt in [
        "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n",
        "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello",
        "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: a\r\nX-Folded: a\r\n b\r\n\r\n",
    ] {
        let answer = raw(addr, attempt).await;
        assert!(
            answer.starts_with("HTTP/1.1 400"),
            "{attempt:?} got {answer:?}"
        );
    }
    assert_eq!(
        v1.requests.load(Ordering::Relaxed),
        0,
        "nothing reached the upstream"
    );

    // Both Content-Length and Transfer-Encoding: handled as RFC 9112 §6.3 requires of an
    // intermediary (the length is dropped, the chunked body forwarded, the connection
    // closed after the answer), so a request hidden behind the first never runs.
    let smuggle = "POST /headers HTTP/1.1\r\nHost: a\r\nContent-Length: 40\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n";
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    stream.write_all(smuggle.as_bytes()).await.expect("write");
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut answer))
        .await
        .expect("closed in time")
        .expect("read");
    let answer = String::from_utf8_lossy(&answer);
    assert_eq!(
        answer.matches("HTTP/1.1").count(),
        1,
        "one answer, then the connection closes: {answer}"
    );
    assert!(
        answer.to_lowercase().contains("connection: close"),
        "{answer}"
    );
    assert!(
        !answer.contains("\"content-length\""),
        "the upstream saw no Content-Length: {answer}"
    );
    assert_eq!(
        v1.requests.load(Ordering::Relaxed),
        1,
        "the hidden request never reached the upstream"
    );
}

#[tokio::test]
async fn oversized_headers_get_431_and_bodies_413() {
    let v1 = upstream("v1").await;
    let mut cfg = config(vec![route("shop", &v1, None, 0)]);
    cfg.limits.max_header_bytes = 8192;
    cfg.limits.max_body_bytes = Some(1000);
    let proxy = start(cfg).await;
    let big = "x".repeat(20_000);
    let answer = raw(
        proxy.listen_addrs()[0],
        &format!("GET / HTTP/1.1\r\nHost: a\r\nX-Big: {big}\r\n\r\n"),
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 431"), "{answer:?}");
    let body = "y".repeat(2000);
    let answer = raw(
        proxy.listen_addrs()[0],
        &format!("POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: 2000\r\n\r\n{body}"),
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer:?}");
}

#[tokio::test]
async fn upstream_down_is_502_and_slow_is_504() {
    let v1 = upstream("v1").await;
    let closed = closed_address();
    let mut down = route("down", &v1, None, 0);
    down.stable.endpoints = vec![closed.to_string()];
    down.path_prefix = Some("/down".into());
    let mut cfg = config(vec![route("shop", &v1, None, 0), down]);
    cfg.timeouts.request = cutover_core::Duration::from_millis(300);
    let proxy = start(cfg).await;
    let c = client();
    assert_eq!(
        get(&c, proxy.listen_addrs()[0], "/down/x", &[]).await.0,
        StatusCode::BAD_GATEWAY
    );
    assert_eq!(
        get(&c, proxy.listen_addrs()[0], "/slow?ms=2000", &[])
            .await
            .0,
        StatusCode::GATEWAY_TIMEOUT
    );
    assert_eq!(
        get(&c, proxy.listen_addrs()[0], "/", &[]).await.0,
        StatusCode::OK,
        "still serving"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_candidate_with_every_endpoint_down_is_served_by_stable() {
    let v1 = upstream("v1").await;
    let closed = closed_address();
    let mut r = route("shop", &v1, None, 50);
    r.candidate = Some(cutover_proxy::config::VersionConfig {
        name: "v2".into(),
        endpoints: vec![closed.to_string()],
    });
    let proxy = start(config(vec![r])).await;
    let seen = load(proxy.listen_addrs()[0], 400, 4).await;
    // Refused GETs are retried on stable; after five failures the endpoint is ejected and
    // stable takes the candidate's share without trying.
    assert_eq!(seen.get("200 OK v1"), Some(&400), "{seen:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weights_changed_every_10ms_under_load_fail_no_request() {
    let (v1, v2) = (upstream("v1").await, upstream("v2").await);
    let proxy = Arc::new(start(config(vec![route("shop", &v1, Some(&v2), 0)])).await);
    let stop = Arc::new(AtomicBool::new(false));
    let flipper = {
        let (proxy, stop) = (proxy.clone(), stop.clone());
        let mut r = route("shop", &v1, Some(&v2), 0);
        tokio::spawn(async move {
            let mut changes = 0u64;
            while !stop.load(Ordering::Relaxed) {
                r.weight = (changes * 7 % 101) as u8;
                proxy
                    .set_routes(&RouteTableConfig {
                        routes: vec![r.clone()],
                    })
                    .await
                    .expect("valid");
                changes += 1;
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            changes
        })
    };
    let addr = proxy.listen_addrs()[0];
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut workers = Vec::new();
    for _ in 0..16 {
        let c = client();
        workers.push(tokio::spawn(async move {
            let (mut ok, mut failed) = (0u64, 0u64);
            while Instant::now() < deadline {
                let (status, _) = get(&c, addr, "/", &[]).await;
                if status == StatusCode::OK {
                    ok += 1
                } else {
                    failed += 1
                }
            }
            (ok, failed)
        }));
    }
    let (mut ok, mut failed) = (0, 0);
    for w in workers {
        let (o, f) = w.await.expect("worker");
        ok += o;
        failed += f;
    }
    stop.store(true, Ordering::Relaxed);
    let changes = flipper.await.expect("flipper");
    assert_eq!(failed, 0, "{failed} of {} requests failed", ok + failed);
    assert!(changes > 500, "only {changes} table changes");
    assert!(ok > 1_000, "only {ok} requests");
}

#[tokio::test]
async fn the_admin_api_needs_the_token_for_writes_and_exports_metrics() {
    let (v1, v2) = (upstream("v1").await, upstream("v2").await);
    let dir = std::env::temp_dir().join(format!("cutover-proxy-admin-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let token_file = dir.join("token");
    std::fs::write(&token_file, "s3cret\n").expect("token");
    let mut cfg = config(vec![route("shop", &v1, Some(&v2), 0)]);
    cfg.admin.token_file = Some(token_file);
    let proxy = start(cfg).await;
    let admin = proxy.admin_addr();
    let c = client();
    get(&c, proxy.listen_addrs()[0], "/", &[]).await;
    let table = serde_json::json!({"routes": [route("shop", &v1, Some(&v2), 100)]}).to_string();
    let put = |token: Option<&str>| {
        let mut req = Request::put(format!("http://{admin}/routes"));
        if let Some(token) = token {
            req = req.header("authorization", format!("Bearer {token}"));
        }
        req.body(full(table.clone())).expect("request")
    };
    assert_eq!(
        c.request(put(None)).await.expect("response").status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        c.request(put(Some("wrong")))
            .await
            .expect("response")
            .status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        c.request(put(Some("s3cret")))
            .await
            .expect("response")
            .status(),
        StatusCode::OK
    );
    assert_eq!(get(&c, proxy.listen_addrs()[0], "/", &[]).await.1, "v2");
    let bad = Request::put(format!("http://{admin}/routes"))
        .header("authorization", "Bearer s3cret")
        .body(full("{\"routes\": [{\"release\": 1}]}"))
        .expect("request");
    assert_eq!(
        c.request(bad).await.expect("response").status(),
        StatusCode::BAD_REQUEST
    );
    let (status, routes) = get(&c, admin, "/routes", &[]).await;
    assert_eq!(status, StatusCode::OK);
    assert!(routes.contains("\"weight\": 100"), "{routes}");
    let (_, metrics) = get(&c, admin, "/metrics", &[]).await;
    assert!(
        metrics.contains(
            "cutover_requests_total{release=\"shop\",version=\"v1\",code_class=\"2xx\"} 1"
        ),
        "{metrics}"
    );
    assert!(
        metrics.contains(
            "cutover_requests_total{release=\"shop\",version=\"v2\",code_class=\"2xx\"} 1"
        ),
        "{metrics}"
    );
    let window = proxy.window("shop", "v2", 60).expect("routed");
    assert_eq!((window.requests, window.error_rate), (1, Some(0.0)));
    assert_eq!(get(&c, admin, "/healthz", &[]).await.0, StatusCode::OK);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_lets_in_flight_requests_finish() {
    let v1 = upstream("v1").await;
    let proxy = start(config(vec![route("shop", &v1, None, 0)])).await;
    let addr = proxy.listen_addrs()[0];
    let slow = tokio::spawn(async move { get(&client(), addr, "/slow?ms=500", &[]).await });
    tokio::time::sleep(Duration::from_millis(100)).await;
    proxy.shutdown().await;
    let (status, body) = slow.await.expect("request");
    assert_eq!((status, body.as_str()), (StatusCode::OK, "v1"));
    assert!(
        TcpStream::connect(addr).await.is_err(),
        "no longer accepting"
    );
}

#[tokio::test]
async fn upstream_connections_are_reused() {
    let v1 = upstream("v1").await;
    let proxy = start(config(vec![route("shop", &v1, None, 0)])).await;
    let c = client();
    for _ in 0..50 {
        assert_eq!(get(&c, proxy.listen_addrs()[0], "/", &[]).await.1, "v1");
    }
    assert_eq!(
        get(&c, proxy.listen_addrs()[0], "/download?bytes=300000", &[])
            .await
            .1
            .len(),
        300_000
    );
    assert_eq!(get(&c, proxy.listen_addrs()[0], "/", &[]).await.1, "v1");
    assert_eq!(
        v1.connections.load(Ordering::Relaxed),
        1,
        "one upstream connection served them all"
    );
}

/// Regression: a chunked (or HTTP/2, length-less) PUT counted as bodiless, so a retry or a
/// mirror sent it on with an empty body.
#[tokio::test]
async fn bodies_are_never_replayed_empty_and_only_safe_methods_are_mirrored() {
    let (v1, v2) = (upstream("v1").await, upstream("v2").await);
    let mut r = route("shop", &v1, Some(&v2), 0);
    r.mirror_percent = 100;
    let proxy = start(config(vec![r])).await;
    let c = client();
    let upload = support::chunks::Chunks {
        left: 1000,
        chunk: bytes::Bytes::from(vec![b'u'; 100]),
    };
    let req = Request::put(format!("http://{}/upload", proxy.listen_addrs()[0]))
        .body(BodyExt::boxed(upload))
        .expect("request");
    let body = c
        .request(req)
        .await
        .expect("response")
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    assert_eq!(
        String::from_utf8_lossy(&body),
        "1000",
        "the chunked body arrived whole"
    );
    let req = Request::delete(format!("http://{}/", proxy.listen_addrs()[0]))
        .body(full(""))
        .expect("request");
    c.request(req).await.expect("response");
    get(&c, proxy.listen_addrs()[0], "/", &[]).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        v2.requests.load(Ordering::Relaxed),
        1,
        "only the GET was mirrored"
    );
}

/// Regression: a streamed body over the limit was answered 502 and blamed on the upstream.
#[tokio::test]
async fn a_streamed_body_over_the_limit_is_413_not_an_upstream_failure() {
    let v1 = upstream("v1").await;
    let mut cfg = config(vec![route("shop", &v1, None, 0)]);
    cfg.limits.max_body_bytes = Some(10_000);
    let proxy = start(cfg).await;
    let c = client();
    let upload = support::chunks::Chunks {
        left: 100_000,
        chunk: bytes::Bytes::from(vec![b'u'; 1000]),
    };
    let req = Request::post(format!("http://{}/upload", proxy.listen_addrs()[0]))
        .body(BodyExt::boxed(upload))
        .expect("request");
    let status = c.request(req).await.map(|r| r.status());
    assert!(
        matches!(status, Ok(StatusCode::PAYLOAD_TOO_LARGE)),
        "{status:?}"
    );
    let window = proxy.window("shop", "v1", 60).expect("routed");
    assert_eq!(window.errors, 0, "not an upstream failure");
}

/// Regression: a candidate whose every endpoint was down looked healthy, since its
/// requests were retried on stable and counted there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_candidate_that_is_down_shows_as_failing() {
    let v1 = upstream("v1").await;
    let closed = closed_address();
    let mut r = route("shop", &v1, None, 50);
    r.candidate = Some(cutover_proxy::config::VersionConfig {
        name: "v2".into(),
        endpoints: vec![closed.to_string()],
    });
    let proxy = start(config(vec![r])).await;
    load(proxy.listen_addrs()[0], 200, 2).await;
    let candidate = proxy.window("shop", "v2", 60).expect("routed");
    assert_eq!(candidate.error_rate, Some(1.0), "{candidate:?}");
    assert!((90..=110).contains(&candidate.requests), "{candidate:?}");
}

/// A TLS listener with a certificate from files answers HTTP/2 and HTTP/1.1, as ALPN picks.
#[tokio::test]
async fn tls_listeners_speak_http2_and_http1_by_alpn() {
    let v1 = upstream("v1").await;
    let (proxy, roots, dir) = tls_proxy(&v1, "tls", |_| {}).await;
    let addr = proxy.listen_addrs()[0];

    let tls = tls::connect(addr, &roots, b"h2").await;
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (version, body) = h2_get(tls).await;
    assert_eq!(version, http::Version::HTTP_2);
    assert_eq!(body, "v1");

    let tls = tls::connect(addr, &roots, b"http/1.1").await;
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
    let (version, body) = h1_get(tls, "/headers").await;
    assert_eq!(version, http::Version::HTTP_11);
    let seen: serde_json::Value = serde_json::from_slice(&body).expect("json");
    assert_eq!(
        seen["x-forwarded-proto"], "https",
        "the upstream learns the client spoke TLS"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// A TLS client that offers no ALPN and speaks HTTP/2 by its preface (a load balancer set
/// to speak HTTP/2 to its backends without ALPN) is served HTTP/2, as on a plain listener;
/// and one that offers none and speaks HTTP/1.1 is served too.
#[tokio::test]
async fn a_tls_client_without_alpn_is_served_by_its_preface() {
    let v1 = upstream("v1").await;
    let (proxy, roots, dir) = tls_proxy(&v1, "tls-noalpn", |_| {}).await;
    let addr = proxy.listen_addrs()[0];

    let tls = tls::connect(addr, &roots, b"").await;
    assert_eq!(tls.get_ref().1.alpn_protocol(), None);
    let (version, body) = h2_get(tls).await;
    assert_eq!(version, http::Version::HTTP_2, "HTTP/2 without ALPN");
    assert_eq!(body, "v1");

    let tls = tls::connect(addr, &roots, b"").await;
    let (version, body) = h1_get(tls, "/").await;
    assert_eq!(version, http::Version::HTTP_11, "HTTP/1.1 without ALPN");
    assert_eq!(body, "v1");
    let _ = std::fs::remove_dir_all(&dir);
}

/// A proxy whose one listener speaks TLS, routing `shop` to `v1`, with `tweak` applied to
/// its configuration; the roots a client trusts it by, and the directory of its
/// certificate files (named after `tag`), which the caller removes.
async fn tls_proxy(
    v1: &support::Upstream,
    tag: &str,
    tweak: impl FnOnce(&mut cutover_proxy::config::ProxyConfig),
) -> (
    cutover_proxy::Proxy,
    tokio_rustls::rustls::RootCertStore,
    std::path::PathBuf,
) {
    let (tls_config, roots, dir) = tls_certificate(tag);
    let mut cfg = config(vec![route("shop", v1, None, 0)]);
    cfg.listeners[0].tls = Some(tls_config);
    tweak(&mut cfg);
    (start(cfg).await, roots, dir)
}

/// One HTTP/2 GET of `/` over `tls`: the response's version and body.
async fn h2_get<T>(tls: T) -> (http::Version, bytes::Bytes)
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let io = hyper_util::rt::TokioIo::new(tls);
    let (mut h2, conn) =
        hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), io)
            .await
            .expect("h2");
    tokio::spawn(conn);
    let request = Request::get("https://localhost/")
        .body(full(""))
        .expect("request");
    let response = h2.send_request(request).await.expect("response");
    let version = response.version();
    let body = response.into_body().collect().await.expect("body");
    (version, body.to_bytes())
}

/// One HTTP/1.1 GET of `path` over `tls`: the response's version and body.
async fn h1_get<T>(tls: T, path: &str) -> (http::Version, bytes::Bytes)
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let io = hyper_util::rt::TokioIo::new(tls);
    let (mut h1, conn) = hyper::client::conn::http1::handshake(io).await.expect("h1");
    tokio::spawn(conn);
    let request = Request::get(path)
        .header("host", "localhost")
        .body(full(""))
        .expect("request");
    let response = h1.send_request(request).await.expect("response");
    let version = response.version();
    let body = response.into_body().collect().await.expect("body");
    (version, body.to_bytes())
}

/// An HTTP/1.1 connection over TLS is parked while it idles (hyper's buffers freed, the
/// TLS session kept) and serves the next request on the same connection when it comes,
/// including two sent in one write after a park.
#[tokio::test]
async fn a_tls_http1_connection_keeps_serving_across_idle_pauses() {
    let v1 = upstream("v1").await;
    let (proxy, roots, dir) = tls_proxy(&v1, "tls-park", |_| {}).await;
    let mut tls = tls::connect(proxy.listen_addrs()[0], &roots, b"http/1.1").await;
    const REQUEST: &[u8] = b"GET / HTTP/1.1\r\nhost: localhost\r\n\r\n";
    let mut answered = 0;
    let mut seen = Vec::new();
    // Longer pauses than the proxy waits before parking an idle connection; the last
    // round sends two requests in one write.
    for (pause, requests) in [(0, 1), (300, 1), (600, 1), (300, 2)] {
        tokio::time::sleep(Duration::from_millis(pause)).await;
        tls.write_all(&REQUEST.repeat(requests))
            .await
            .expect("write");
        answered += requests;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while count(&seen, b"HTTP/1.1 200") < answered || count(&seen, b"v1") < answered {
            let mut buf = [0u8; 4096];
            let read = tokio::time::timeout_at(deadline, tls.read(&mut buf))
                .await
                .unwrap_or_else(|_| panic!("no answer after {pause} ms idle"))
                .expect("read");
            assert!(
                read > 0,
                "the proxy closed the connection after {pause} ms idle"
            );
            seen.extend_from_slice(&buf[..read]);
        }
    }
    assert_eq!(
        count(&seen, b"HTTP/1.1 200"),
        5,
        "{}",
        String::from_utf8_lossy(&seen)
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// Over TLS too, an empty line a client sends on its own after an answer starts no head:
/// the connection keeps its idle time, not the header timeout.
#[tokio::test]
async fn an_empty_line_over_tls_starts_no_head() {
    let v1 = upstream("v1").await;
    let (proxy, roots, dir) = tls_proxy(&v1, "tls-crlf", |c| {
        c.timeouts.header_read = cutover_core::Duration::from_millis(300);
        c.timeouts.keep_alive_idle = cutover_core::Duration::from_secs(5);
    })
    .await;
    let mut tls = tls::connect(proxy.listen_addrs()[0], &roots, b"http/1.1").await;
    let mut seen = Vec::new();
    for answered in 1..=2 {
        tls.write_all(b"GET / HTTP/1.1\r\nhost: localhost\r\n\r\n")
            .await
            .expect("write");
        tls.flush().await.expect("flush");
        while count(&seen, b"v1") < answered {
            let mut buf = [0u8; 4096];
            let read = tokio::time::timeout(Duration::from_secs(5), tls.read(&mut buf))
                .await
                .expect("an answer within 5 s")
                .expect("read");
            assert!(read > 0, "closed after the empty line (answer {answered})");
            seen.extend_from_slice(&buf[..read]);
        }
        tls.write_all(b"\r\n").await.expect("write");
        tls.flush().await.expect("flush");
        tokio::time::sleep(Duration::from_millis(900)).await;
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// A parked TLS connection the proxy closes (it idled past `keepAliveIdle`, or the proxy
/// is shutting down) ends with the TLS `close_notify` alert, so the client can tell a
/// clean close from a connection cut mid-session (a truncation).
#[tokio::test]
async fn a_parked_tls_connection_is_closed_with_close_notify() {
    let v1 = upstream("v1").await;
    let (proxy, roots, dir) = tls_proxy(&v1, "tls-close", |c| {
        c.timeouts.keep_alive_idle = cutover_core::Duration::from_millis(400)
    })
    .await;
    let addr = proxy.listen_addrs()[0];
    const REQUEST: &[u8] = b"GET / HTTP/1.1\r\nhost: localhost\r\n\r\n";

    let mut idle = tls::connect(addr, &roots, b"http/1.1").await;
    idle.write_all(REQUEST).await.expect("write");
    let (seen, ended) = read_to_close(&mut idle).await;
    assert_eq!(
        count(&seen, b"HTTP/1.1 200"),
        1,
        "{}",
        String::from_utf8_lossy(&seen)
    );
    ended.expect("closed for idling with close_notify");

    let mut parked = tls::connect(addr, &roots, b"http/1.1").await;
    parked.write_all(REQUEST).await.expect("write");
    let mut buf = [0u8; 4096];
    let read = parked.read(&mut buf).await.expect("answer");
    assert!(
        count(&buf[..read], b"HTTP/1.1 200") == 1,
        "one read holds the small answer"
    );
    // Long enough to park, well short of the idle timeout.
    tokio::time::sleep(Duration::from_millis(150)).await;
    let stopping = tokio::spawn(proxy.shutdown());
    let (_, ended) = read_to_close(&mut parked).await;
    ended.expect("closed at shutdown with close_notify");
    stopping.await.expect("shut down");
    let _ = std::fs::remove_dir_all(&dir);
}

/// An answer the upstream cuts off (10 of 100 bytes, then it closes) reaches a TLS client
/// cut off: the connection ends without `close_notify`, so the client cannot take the
/// short body for a whole one. Alike for a request the proxy reads itself (bodiless) and
/// one hyper reads (`Content-Length: 0`); the proxy's own reader also sends what came
/// before the cut (hyper drops the connection with its buffer unsent).
#[tokio::test]
async fn an_answer_cut_off_upstream_ends_the_tls_connection_without_close_notify() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let up = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let _ = stream
                    .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n0123456789")
                    .await;
            });
        }
    });
    let (tls_config, roots, dir) = tls_certificate("tls-cut");
    let mut cfg = config(vec![cutover_test_kit::proxy::route("shop", up, None, 0)]);
    cfg.listeners[0].tls = Some(tls_config);
    let proxy = start(cfg).await;
    let addr = proxy.listen_addrs()[0];
    for extra in ["", "content-length: 0\r\n"] {
        let mut client = tls::connect(addr, &roots, b"http/1.1").await;
        client
            .write_all(format!("GET / HTTP/1.1\r\nhost: shop\r\n{extra}\r\n").as_bytes())
            .await
            .expect("write");
        let (seen, ended) = read_to_close(&mut client).await;
        if extra.is_empty() {
            assert!(
                count(&seen, b"HTTP/1.1 200") == 1 && seen.ends_with(b"\r\n\r\n0123456789"),
                "{}",
                String::from_utf8_lossy(&seen)
            );
        }
        let error = ended.expect_err("a cut-off answer must not end cleanly");
        assert_eq!(
            error.kind(),
            std::io::ErrorKind::UnexpectedEof,
            "{extra:?}: {error}"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// Reads `stream` until it ends, within 5 s: what came, and how it ended (`Ok` for a
/// clean end; over TLS, an end without `close_notify` is an `UnexpectedEof` error).
async fn read_to_close<S>(stream: &mut S) -> (Vec<u8>, std::io::Result<()>)
where
    S: tokio::io::AsyncRead + Unpin,
{
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Err(_) => panic!("still open after 5 s: {}", String::from_utf8_lossy(&seen)),
            Ok(Ok(0)) => return (seen, Ok(())),
            Ok(Ok(n)) => seen.extend_from_slice(&buf[..n]),
            Ok(Err(e)) => return (seen, Err(e)),
        }
    }
}

/// How many times `needle` occurs in `haystack`.
fn count(haystack: &[u8], needle: &[u8]) -> usize {
    haystack
        .windows(needle.len())
        .filter(|w| *w == needle)
        .count()
}

#[tokio::test]
async fn idle_upstream_connections_are_reaped() {
    let v1 = upstream("v1").await;
    let mut cfg = config(vec![route("shop", &v1, None, 0)]);
    cfg.timeouts.upstream_idle = cutover_core::Duration::from_millis(200);
    let proxy = start(cfg).await;
    get(&client(), proxy.listen_addrs()[0], "/", &[]).await;
    assert_eq!(proxy.idle_upstream_connections(), 1);
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    assert_eq!(
        proxy.idle_upstream_connections(),
        0,
        "closed after idling past upstreamIdle"
    );
}
