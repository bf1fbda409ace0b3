//! Real servers for the providers' tests.

#![allow(dead_code)]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use cutover_proxy::Proxy;
use cutover_test_kit::proxy::{config, route};
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;

/// A real HTTP server answering with `answer(path, request number)`.
pub async fn server(
    answer: impl Fn(&str, u64) -> (StatusCode, String) + Send + Sync + 'static,
) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let answer = Arc::new(answer);
    let count = Arc::new(AtomicU64::new(0));
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let (answer, count) = (answer.clone(), count.clone());
            tokio::spawn(async move {
                let service = service_fn(move |req: Request<Incoming>| {
                    let n = count.fetch_add(1, Ordering::Relaxed) + 1;
                    let (status, body) = answer(req.uri().path(), n);
                    let mut response = Response::new(Full::new(Bytes::from(body)));
                    *response.status_mut() = status;
                    async move { Ok::<_, Infallible>(response) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    addr
}

/// A proxy splitting release `shop` 50/50 between a healthy `v1` and a `v2` failing every
/// 5th request.
pub async fn proxy_over_two_versions() -> Proxy {
    let stable = server(|_, _| (StatusCode::OK, "v1".into())).await;
    let candidate = server(|_, n| {
        if n % 5 == 0 {
            (StatusCode::INTERNAL_SERVER_ERROR, "oops".into())
        } else {
            (StatusCode::OK, "v2".into())
        }
    })
    .await;
    Proxy::start(config(vec![route("shop", stable, Some(candidate), 50)]))
        .await
        .expect("proxy")
}

/// Sends `n` GETs through the proxy, one after another.
pub async fn load(proxy: &Proxy, n: usize) {
    let client: hyper_util::client::legacy::Client<_, Empty<Bytes>> =
        hyper_util::client::legacy::Client::builder(TokioExecutor::new()).build_http();
    for _ in 0..n {
        let req = Request::get(format!("http://{}/", proxy.listen_addrs()[0]))
            .body(Empty::new())
            .expect("request");
        let response = client.request(req).await.expect("response");
        let _ = response.into_body().collect().await;
    }
}
