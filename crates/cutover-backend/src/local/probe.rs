//! The readiness probe: one HTTP/1.1 `GET` to an instance, ready on 2xx.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::Empty;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// How long one probe may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// Asks `address` (`host:port`) for `path`; `Ok(())` on 2xx, otherwise what went wrong.
pub async fn probe(address: &str, path: &str) -> Result<(), String> {
    tokio::time::timeout(PROBE_TIMEOUT, probe_once(address, path))
        .await
        .unwrap_or_else(|_| Err(format!("no answer within {}s", PROBE_TIMEOUT.as_secs())))
}

async fn probe_once(address: &str, path: &str) -> Result<(), String> {
    let stream = TcpStream::connect(address)
        .await
        .map_err(|e| format!("cannot connect: {e}"))?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| format!("HTTP handshake failed: {e}"))?;
    tokio::spawn(async move {
        // Ends when the response is read and the sender dropped.
        let _ = connection.await;
    });
    let request = http::Request::get(path)
        .header(http::header::HOST, address)
        .header(http::header::USER_AGENT, "cutover-probe")
        .body(Empty::<Bytes>::new())
        .map_err(|e| format!("bad readiness path '{path}': {e}"))?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| format!("request failed: {e}"))?;
    if response.status().is_success() {
        Ok(())
    } else {
        Err(format!("answered {}", response.status()))
    }
}
