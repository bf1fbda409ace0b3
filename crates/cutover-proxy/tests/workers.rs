//! `workers: N`: N threads, each a single-threaded runtime with its own `SO_REUSEPORT`
//! socket on the listener's address ([`Proxy::start_workers`]).

mod support;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use cutover_proxy::Proxy;
use http::StatusCode;
use support::{client, config, get, route, upstream};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// One request on a connection of its own (`Connection: close`); returns the whole answer.
async fn one_request(proxy: std::net::SocketAddr, path: &str) -> String {
    let mut stream = TcpStream::connect(proxy).await.expect("connect");
    let request = format!("GET {path} HTTP/1.1\r\nhost: shop.example\r\nconnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.expect("write");
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut answer))
        .await
        .expect("answered in time")
        .expect("read");
    String::from_utf8_lossy(&answer).into_owned()
}

#[tokio::test(flavor = "current_thread")]
async fn a_port_0_listener_with_several_workers_ends_on_one_port_and_every_worker_accepts() {
    let stable = upstream("v1").await;
    let config = config(vec![route("shop", &stable, None, 0)]);
    let proxy = Proxy::start_workers(config, 3).await.expect("starts");
    assert_eq!(proxy.listen_addrs().len(), 1);
    let addr = proxy.listen_addrs()[0];
    assert_ne!(addr.port(), 0, "the first socket fixed the port");
    assert_eq!(proxy.worker_connections().len(), 3);
    // The kernel hashes each new connection to one of the three sockets: 60 connections
    // from 60 source ports all land on one socket with probability 3 × (1/3)^60.
    for _ in 0..60 {
        let answer = one_request(addr, "/").await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        assert!(answer.ends_with("v1"), "{answer}");
    }
    let accepted = proxy.worker_connections();
    assert_eq!(accepted.iter().sum::<u64>(), 60, "{accepted:?}");
    assert!(
        accepted.iter().all(|n| *n > 0),
        "every worker accepted connections: {accepted:?}"
    );
    proxy.shutdown().await;
}

#[tokio::test(flavor = "current_thread")]
async fn shutdown_drains_requests_in_flight_on_every_worker_then_stops_accepting() {
    let stable = upstream("v1").await;
    let config = config(vec![route("shop", &stable, None, 0)]);
    let proxy = Proxy::start_workers(config, 2).await.expect("starts");
    let addr = proxy.listen_addrs()[0];
    // Slow requests on a dozen connections, so that both workers hold some in flight.
    let slow: Vec<_> = (0..12)
        .map(|_| tokio::spawn(one_request(addr, "/slow?ms=600")))
        .collect();
    let deadline = Instant::now() + Duration::from_secs(10);
    while stable.requests.load(std::sync::atomic::Ordering::Relaxed) < 12 {
        assert!(
            Instant::now() < deadline,
            "the slow requests reached the upstream"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let busy: HashSet<usize> = proxy
        .worker_connections()
        .iter()
        .enumerate()
        .filter(|(_, n)| **n > 0)
        .map(|(i, _)| i)
        .collect();
    let started = Instant::now();
    proxy.shutdown().await;
    assert!(
        started.elapsed() >= Duration::from_millis(300),
        "shutdown waited for the requests in flight"
    );
    for request in slow {
        let answer = request.await.expect("joined");
        assert!(answer.starts_with("HTTP/1.1 200"), "drained: {answer}");
    }
    assert_eq!(busy.len(), 2, "both workers had requests in flight");
    // Every worker's socket is closed: nothing accepts on the port any more.
    assert!(
        TcpStream::connect(addr).await.is_err(),
        "no worker accepts after shutdown"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_share_the_route_table_and_the_counters() {
    let stable = upstream("v1").await;
    let candidate = upstream("v2").await;
    let config = config(vec![route("shop", &stable, Some(&candidate), 10)]);
    let proxy = Proxy::start_workers(config, 2).await.expect("starts");
    let addr = proxy.listen_addrs()[0];
    let client = client();
    // Connections of their own, so both workers serve some of the requests.
    for _ in 0..100 {
        let answer = one_request(addr, "/").await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    }
    let accepted = proxy.worker_connections();
    assert!(accepted.iter().all(|n| *n > 0), "{accepted:?}");
    // The counters of both workers add up exactly, and the weight holds across them.
    let v1 = proxy.window("shop", "v1", 60).expect("stable routed");
    let v2 = proxy.window("shop", "v2", 60).expect("candidate routed");
    assert_eq!(v1.requests + v2.requests, 100);
    assert!(
        (9..=11).contains(&v2.requests),
        "10 % of 100 on the candidate: {}",
        v2.requests
    );
    // A table change made on the caller's runtime reaches every worker.
    proxy
        .set_routes(&cutover_proxy::config::RouteTableConfig {
            routes: vec![route("shop", &stable, Some(&candidate), 100)],
        })
        .await
        .expect("valid");
    for _ in 0..20 {
        let (status, body) = get(&client, addr, "/", &[("host", "shop.example")]).await;
        assert_eq!((status, body.as_str()), (StatusCode::OK, "v2"));
    }
    proxy.shutdown().await;
}
