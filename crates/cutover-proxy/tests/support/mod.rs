//! Real upstream servers on loopback for the proxy's tests, and helpers to drive the proxy.

#![allow(dead_code)]

/// The allocator the `cutover` binary runs with, so that the tests that measure memory
/// (`http1_edge.rs`, `streaming.rs`) measure what ships.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use cutover_proxy::Proxy;
use cutover_proxy::config::{ProxyConfig, RouteConfig};
pub use cutover_test_kit::proxy::config;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, combinators::BoxBody};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

pub mod raw;

pub type Body = BoxBody<Bytes, Box<dyn std::error::Error + Send + Sync>>;

pub fn full(data: impl Into<Bytes>) -> Body {
    Full::new(data.into())
        .map_err(|never| match never {})
        .boxed()
}

/// A test upstream: answers with its version name, and on special paths echoes headers,
/// sleeps, fails, streams, counts uploads, or upgrades to a WebSocket echo.
pub struct Upstream {
    pub addr: SocketAddr,
    /// While set, every ordinary request answers 500.
    pub failing: Arc<AtomicBool>,
    pub requests: Arc<AtomicU64>,
    /// Connections accepted so far.
    pub connections: Arc<AtomicU64>,
}

pub async fn upstream(version: &'static str) -> Upstream {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let failing = Arc::new(AtomicBool::new(false));
    let requests = Arc::new(AtomicU64::new(0));
    let connections = Arc::new(AtomicU64::new(0));
    let (f, r, c) = (failing.clone(), requests.clone(), connections.clone());
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            c.fetch_add(1, Ordering::Relaxed);
            let (f, r) = (f.clone(), r.clone());
            tokio::spawn(async move {
                let service = service_fn(move |req| answer(version, f.clone(), r.clone(), req));
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .with_upgrades()
                    .await;
            });
        }
    });
    Upstream {
        addr,
        failing,
        requests,
        connections,
    }
}

fn query(req: &Request<Incoming>, name: &str) -> Option<u64> {
    req.uri()
        .query()?
        .split('&')
        .filter_map(|p| p.split_once('='))
        .find(|(k, _)| *k == name)?
        .1
        .parse()
        .ok()
}

async fn answer(
    version: &'static str,
    failing: Arc<AtomicBool>,
    requests: Arc<AtomicU64>,
    mut req: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    requests.fetch_add(1, Ordering::Relaxed);
    let path = req.uri().path().to_string();
    let response = match path.as_str() {
        "/headers" => {
            let mut seen = serde_json::Map::new();
            for (k, v) in req.headers() {
                seen.insert(
                    k.to_string(),
                    serde_json::Value::String(v.to_str().unwrap_or("").to_string()),
                );
            }
            let mut response = Response::new(full(serde_json::to_vec(&seen).unwrap_or_default()));
            let h = response.headers_mut();
            h.insert("keep-alive", "timeout=5".parse().expect("value"));
            h.insert("x-hop", "secret".parse().expect("value"));
            h.insert("connection", "x-hop".parse().expect("value"));
            h.insert("x-end", "kept".parse().expect("value"));
            response
        }
        "/slow" => {
            tokio::time::sleep(Duration::from_millis(query(&req, "ms").unwrap_or(1000))).await;
            Response::new(full(version))
        }
        "/upload" => {
            let mut total = 0u64;
            let mut body = req.into_body();
            while let Some(frame) = body.frame().await {
                if let Ok(data) = frame.map(|f| f.into_data()) {
                    total += data.map(|d| d.len() as u64).unwrap_or(0);
                }
            }
            Response::new(full(total.to_string()))
        }
        "/download" => {
            let size = query(&req, "bytes").unwrap_or(0);
            let chunk = Bytes::from(vec![b'x'; 64 * 1024]);
            Response::new(chunks::Chunks { left: size, chunk }.boxed())
        }
        "/ws" => return Ok(websocket_echo(&mut req)),
        _ if failing.load(Ordering::Relaxed) => {
            let mut response = Response::new(full("failing"));
            *response.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
            response
        }
        _ => Response::new(full(version)),
    };
    Ok(response)
}

/// A body of `left` bytes in 64 KiB frames, produced as the reader pulls: nothing is
/// buffered, so memory stays flat however large the body.
pub mod chunks {
    use std::pin::Pin;
    use std::task::{Context, Poll};

    use bytes::Bytes;
    use hyper::body::Frame;

    pub struct Chunks {
        pub left: u64,
        pub chunk: Bytes,
    }

    impl http_body::Body for Chunks {
        type Data = Bytes;
        type Error = Box<dyn std::error::Error + Send + Sync>;
        fn poll_frame(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
            if self.left == 0 {
                return Poll::Ready(None);
            }
            let n = self.left.min(self.chunk.len() as u64) as usize;
            self.left -= n as u64;
            Poll::Ready(Some(Ok(Frame::data(self.chunk.slice(..n)))))
        }
    }
}

/// Upgrades to a WebSocket (RFC 6455 handshake) that echoes one text frame back.
fn websocket_echo(req: &mut Request<Incoming>) -> Response<Body> {
    let key = req
        .headers()
        .get("sec-websocket-key")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    // The forwarding fields the handshake arrived with, for the client to check.
    let seen: Vec<(String, String)> = ["x-forwarded-for", "x-forwarded-proto", "forwarded"]
        .iter()
        .map(|name| {
            let values: Vec<&str> = req
                .headers()
                .get_all(*name)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .collect();
            (format!("x-seen-{name}"), values.join(" | "))
        })
        .collect();
    let on_upgrade = hyper::upgrade::on(req);
    tokio::spawn(async move {
        let Ok(upgraded) = on_upgrade.await else {
            return;
        };
        let mut io = TokioIo::new(upgraded);
        loop {
            let mut head = [0u8; 2];
            if io.read_exact(&mut head).await.is_err() {
                return;
            }
            let len = usize::from(head[1] & 0x7f);
            let mut mask = [0u8; 4];
            if io.read_exact(&mut mask).await.is_err() {
                return;
            }
            let mut payload = vec![0u8; len];
            if io.read_exact(&mut payload).await.is_err() {
                return;
            }
            for (i, b) in payload.iter_mut().enumerate() {
                *b ^= mask[i % 4];
            }
            let mut frame = vec![0x81, len as u8];
            frame.extend_from_slice(&payload);
            if io.write_all(&frame).await.is_err() {
                return;
            }
        }
    });
    let accept = websocket_accept(&key);
    let mut response = Response::new(full(""));
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = response.headers_mut();
    for (name, value) in seen {
        if let (Ok(name), Ok(value)) = (
            http::header::HeaderName::from_bytes(name.as_bytes()),
            value.parse::<http::HeaderValue>(),
        ) {
            h.insert(name, value);
        }
    }
    h.insert("connection", "upgrade".parse().expect("value"));
    h.insert("upgrade", "websocket".parse().expect("value"));
    h.insert("sec-websocket-accept", accept.parse().expect("value"));
    response
}

/// `Sec-WebSocket-Accept` for a key: base64(SHA-1(key + GUID)).
pub fn websocket_accept(key: &str) -> String {
    let digest = sha1(format!("{key}258EAFA5-E914-47DA-95CA-C5AB0DC85B11").as_bytes());
    base64(&digest)
}

fn sha1(data: &[u8]) -> [u8; 20] {
    let mut h: [u32; 5] = [0x67452301, 0xEFCDAB89, 0x98BADCFE, 0x10325476, 0xC3D2E1F0];
    let mut msg = data.to_vec();
    let bit_len = (data.len() as u64) * 8;
    msg.push(0x80);
    while msg.len() % 64 != 56 {
        msg.push(0);
    }
    msg.extend_from_slice(&bit_len.to_be_bytes());
    for block in msg.chunks(64) {
        let mut w = [0u32; 80];
        for i in 0..16 {
            w[i] = u32::from_be_bytes([
                block[4 * i],
                block[4 * i + 1],
                block[4 * i + 2],
                block[4 * i + 3],
            ]);
        }
        for i in 16..80 {
            w[i] = (w[i - 3] ^ w[i - 8] ^ w[i - 14] ^ w[i - 16]).rotate_left(1);
        }
        let [mut a, mut b, mut c, mut d, mut e] = h;
        for (i, wi) in w.iter().enumerate() {
            let (f, k) = match i {
                0..=19 => ((b & c) | (!b & d), 0x5A827999),
                20..=39 => (b ^ c ^ d, 0x6ED9EBA1),
                40..=59 => ((b & c) | (b & d) | (c & d), 0x8F1BBCDC),
                _ => (b ^ c ^ d, 0xCA62C1D6),
            };
            let t = a
                .rotate_left(5)
                .wrapping_add(f)
                .wrapping_add(e)
                .wrapping_add(k)
                .wrapping_add(*wi);
            e = d;
            d = c;
            c = b.rotate_left(30);
            b = a;
            a = t;
        }
        for (x, y) in h.iter_mut().zip([a, b, c, d, e]) {
            *x = x.wrapping_add(y);
        }
    }
    let mut out = [0u8; 20];
    for (i, word) in h.iter().enumerate() {
        out[4 * i..4 * i + 4].copy_from_slice(&word.to_be_bytes());
    }
    out
}

fn base64(data: &[u8]) -> String {
    const TABLE: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(TABLE[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// A route of `release` over one stable (`v1`) and one candidate (`v2`) upstream.
pub fn route(
    release: &str,
    stable: &Upstream,
    candidate: Option<&Upstream>,
    weight: u8,
) -> RouteConfig {
    cutover_test_kit::proxy::route(release, stable.addr, candidate.map(|c| c.addr), weight)
}

pub async fn start(config: ProxyConfig) -> Proxy {
    Proxy::start(config).await.expect("the proxy starts")
}

pub type Client =
    hyper_util::client::legacy::Client<hyper_util::client::legacy::connect::HttpConnector, Body>;

pub fn client() -> Client {
    hyper_util::client::legacy::Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(256)
        .build_http()
}

/// GET `path` through the proxy with extra headers; returns status and body text.
pub async fn get(
    client: &Client,
    proxy: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
) -> (StatusCode, String) {
    let mut req = Request::get(format!("http://{proxy}{path}"));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let req = req.body(full("")).expect("request");
    match client.request(req).await {
        Ok(response) => {
            let status = response.status();
            let body = response
                .into_body()
                .collect()
                .await
                .map(|b| b.to_bytes())
                .unwrap_or_default();
            (status, String::from_utf8_lossy(&body).into_owned())
        }
        Err(e) => panic!("request failed: {e}"),
    }
}

/// Resident memory of this process in KiB.
pub fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|n| n.parse().ok())
        })
        .unwrap_or(0)
}

/// A TLS listener configuration with a fresh self-signed certificate for `localhost`
/// (its files in a directory named after `tag`, which the caller removes), and the roots
/// a client trusts it by.
pub fn tls_certificate(
    tag: &str,
) -> (
    cutover_proxy::config::TlsConfig,
    tokio_rustls::rustls::RootCertStore,
    std::path::PathBuf,
) {
    let certificate = cutover_test_kit::tls::Certificate::self_signed(&["localhost"]);
    let dir = std::env::temp_dir().join(format!("cutover-proxy-{tag}-{}", std::process::id()));
    let (cert_file, key_file) = certificate.write(&dir);
    let tls = cutover_proxy::config::TlsConfig {
        cert_file,
        key_file,
    };
    (tls, certificate.roots(), dir)
}

/// The sum of every sample of the metric `name` whose labels contain `filter` (`""` for
/// all), in a Prometheus text exposition.
pub fn metric_sum(metrics: &str, name: &str, filter: &str) -> f64 {
    metrics
        .lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']))
        .filter(|l| l.contains(filter))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}
