//! A plain GET on the Docker API, for the one answer bollard's types cannot carry: the
//! task list with `NetworksAttachments` (each task's addresses on its networks). The
//! manager keeps those for every task of the cluster, so a controller on any manager sees
//! every task's address, where a network's verbose inspection only lists the tasks that
//! the local node's network database knows.

use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;
use cutover_backend::BackendError;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;

/// Where the engine listens, as `DOCKER_HOST` says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Endpoint {
    /// `unix:///var/run/docker.sock`.
    Unix(PathBuf),
    /// `tcp://host:port` or `http://host:port`.
    Tcp(String),
}

impl Endpoint {
    /// Reads a `DOCKER_HOST` value; `None` for schemes this client does not speak.
    pub fn parse(host: &str) -> Option<Endpoint> {
        if let Some(path) = host.strip_prefix("unix://") {
            return Some(Endpoint::Unix(PathBuf::from(path)));
        }
        let rest = host
            .strip_prefix("tcp://")
            .or_else(|| host.strip_prefix("http://"))?;
        let authority = rest.split('/').next().filter(|a| !a.is_empty())?;
        Some(Endpoint::Tcp(authority.to_string()))
    }
}

/// GETs from the engine, one connection per request (these are rare: a few a second).
#[derive(Clone, Debug)]
pub struct RawClient {
    endpoint: Endpoint,
    /// `1.41`: the version negotiated by bollard.
    version: String,
    timeout: Duration,
}

impl RawClient {
    /// A client for `endpoint` speaking API `version`.
    pub fn new(endpoint: Endpoint, version: String, timeout: Duration) -> RawClient {
        RawClient {
            endpoint,
            version,
            timeout,
        }
    }

    /// `GET /v<version><path>`, parsed as JSON.
    pub async fn get_json(&self, path: &str) -> Result<serde_json::Value, BackendError> {
        let unavailable = |e: String| BackendError::Unavailable(format!("docker: GET {path}: {e}"));
        let body = tokio::time::timeout(self.timeout, self.get(path))
            .await
            .map_err(|_| unavailable(format!("no answer within {:?}", self.timeout)))?
            .map_err(unavailable)?;
        serde_json::from_slice(&body).map_err(|e| unavailable(format!("not JSON: {e}")))
    }

    async fn get(&self, path: &str) -> Result<Bytes, String> {
        let uri = format!("/v{}{path}", self.version);
        let (host, sender) = match &self.endpoint {
            Endpoint::Unix(socket) => {
                let stream = tokio::net::UnixStream::connect(socket)
                    .await
                    .map_err(|e| format!("cannot connect to {}: {e}", socket.display()))?;
                ("docker".to_string(), handshake(stream).await?)
            }
            Endpoint::Tcp(authority) => {
                let stream = tokio::net::TcpStream::connect(authority)
                    .await
                    .map_err(|e| format!("cannot connect to {authority}: {e}"))?;
                (authority.clone(), handshake(stream).await?)
            }
        };
        let mut sender = sender;
        let request = http::Request::get(uri)
            .header(http::header::HOST, host)
            .body(Empty::<Bytes>::new())
            .map_err(|e| e.to_string())?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| e.to_string())?;
        let status = response.status();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes();
        if !status.is_success() {
            return Err(format!(
                "{status}: {}",
                String::from_utf8_lossy(&body).trim()
            ));
        }
        Ok(body)
    }
}

async fn handshake<S>(
    stream: S,
) -> Result<hyper::client::conn::http1::SendRequest<Empty<Bytes>>, String>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static,
{
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(sender)
}

/// Percent-encodes a query value (the JSON of a `filters` parameter).
pub fn encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len() * 3);
    for byte in value.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_hosts() {
        assert_eq!(
            Endpoint::parse("unix:///var/run/docker.sock"),
            Some(Endpoint::Unix("/var/run/docker.sock".into()))
        );
        assert_eq!(
            Endpoint::parse("tcp://10.0.0.5:2375"),
            Some(Endpoint::Tcp("10.0.0.5:2375".into()))
        );
        assert_eq!(
            Endpoint::parse("http://manager:2375/"),
            Some(Endpoint::Tcp("manager:2375".into()))
        );
        assert_eq!(Endpoint::parse("ssh://manager"), None);
    }

    #[test]
    fn filters_are_percent_encoded() {
        assert_eq!(
            encode(r#"{"service":["abc"]}"#),
            "%7B%22service%22%3A%5B%22abc%22%5D%7D"
        );
    }
}
