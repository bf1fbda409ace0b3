//! A fixed, small load through the proxy's request path, for counting instructions:
//! `valgrind --tool=callgrind target/release/examples/request_path_load N`.
//!
//! One process holds two upstreams (fixed raw HTTP/1.1 answers), the proxy splitting
//! 90/10 between them, and a client sending `N` GET requests one after another on one
//! keep-alive connection. Run it with `N` and with 0: the difference over `N` is the cost
//! of one request, client and upstream included (they are the same before and after a
//! change to the proxy).
//!
//! A second argument `W` serves the client on `W` worker threads of their own
//! (`Proxy::start_workers`, as `cutover proxy` runs) instead of this process's one
//! thread: `request_path_load N 1`.

use std::net::SocketAddr;

use cutover_proxy::Proxy;
use cutover_proxy::config::ProxyConfig;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// The allocator `cutover` runs with, so that the count is the binary's.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The index just past `\r\n\r\n` in `buf`, if the head is complete.
fn head_end(buf: &[u8]) -> Option<usize> {
    buf.windows(4).position(|w| w == b"\r\n\r\n").map(|i| i + 4)
}

/// An upstream answering every request head with a fixed 200, the head nginx gives it and
/// a three-byte body.
async fn upstream() -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = Vec::with_capacity(4096);
                let mut chunk = [0u8; 4096];
                loop {
                    while let Some(end) = head_end(&buf) {
                        buf.drain(..end);
                        // As nginx answers `bench/proxy.sh`'s requests.
                        let answer = b"HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\nDate: Mon, 07 Dec 2026 04:00:00 GMT\r\nContent-Type: text/plain\r\nContent-Length: 3\r\nConnection: keep-alive\r\n\r\nv1\n";
                        if stream.write_all(answer).await.is_err() {
                            return;
                        }
                    }
                    match stream.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
            });
        }
    });
    Ok(addr)
}

/// Sends `count` requests on one connection, reading each answer (head and a
/// `content-length` body) before the next.
async fn client(proxy: SocketAddr, count: u64) -> std::io::Result<()> {
    let mut stream = TcpStream::connect(proxy).await?;
    let mut buf = Vec::with_capacity(8192);
    let mut chunk = [0u8; 8192];
    for _ in 0..count {
        stream
            .write_all(b"GET /item?id=7 HTTP/1.1\r\nhost: shop.example\r\nuser-agent: load\r\n\r\n")
            .await?;
        loop {
            if let Some(end) = head_end(&buf) {
                let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
                let length: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .and_then(|v| v.trim().parse().ok())
                    .unwrap_or(0);
                if buf.len() >= end + length {
                    buf.drain(..end + length);
                    break;
                }
            }
            let n = stream.read(&mut chunk).await?;
            if n == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            buf.extend_from_slice(&chunk[..n]);
        }
    }
    Ok(())
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let count: u64 = std::env::args()
        .nth(1)
        .map(|n| n.parse())
        .transpose()?
        .unwrap_or(1000);
    let (stable, candidate) = (upstream().await?, upstream().await?);
    // Defaults for everything else, as a configuration file would have them.
    let config: ProxyConfig = serde_json::from_value(serde_json::json!({
        "listeners": [{ "address": "127.0.0.1:0" }],
        "admin": { "address": "127.0.0.1:0" },
        "routes": [{
            "release": "shop",
            "stable": { "name": "v1", "endpoints": [stable.to_string()] },
            "candidate": { "name": "v2", "endpoints": [candidate.to_string()] },
            "weight": 10,
        }],
    }))?;
    let proxy = match std::env::args().nth(2) {
        Some(workers) => Proxy::start_workers(config, workers.parse()?).await?,
        None => Proxy::start(config).await?,
    };
    let addr = proxy.listen_addrs()[0];
    client(addr, count).await?;
    proxy.shutdown().await;
    Ok(())
}
