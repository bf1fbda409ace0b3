//! The backend's one Docker client: API calls with JSON bodies, on the engine named by
//! `DOCKER_HOST` (parsed once, here). JSON rather than typed models, because service specs
//! must come back exactly as they were read (see [`RawClient`]), and the task list carries
//! `NetworksAttachments` (each task's addresses on its networks), which the manager keeps
//! for every task of the cluster, so a controller on any manager sees every task's address.

use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
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
        // Docker's default for a plain-TCP engine.
        let authority = if authority
            .rsplit_once(':')
            .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
        {
            authority.to_string()
        } else {
            format!("{authority}:2375")
        };
        Some(Endpoint::Tcp(authority))
    }
}

/// A Docker API call that failed: the engine's status and message, or no status when no
/// answer came (a refused connection, a timeout).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiError {
    /// The HTTP status of the engine's answer, if there was one.
    pub status: Option<u16>,
    /// The engine's `message`, or what went wrong on the way.
    pub message: String,
}

impl ApiError {
    /// The object does not exist (404).
    pub fn is_not_found(&self) -> bool {
        self.status == Some(404)
    }

    /// A name already in use (409).
    pub fn is_conflict(&self) -> bool {
        self.status == Some(409)
    }

    /// A compare-and-swap update lost: the service changed since it was read.
    pub fn is_out_of_sequence(&self) -> bool {
        self.message.contains("update out of sequence")
    }

    fn transport(message: String) -> ApiError {
        ApiError {
            status: None,
            message,
        }
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.status {
            Some(status) => write!(f, "{} ({status})", self.message.trim()),
            None => f.write_str(self.message.trim()),
        }
    }
}

impl std::error::Error for ApiError {}

/// The newest Docker API version this client asks for; an older engine's own version is
/// used instead (`1.41` with Debian's engine).
const NEWEST_API: (u32, u32) = (1, 53);

/// Calls on the engine's API with JSON bodies, one connection per call (a few a second).
///
/// cutover reads and writes service specs as JSON rather than through bollard's typed
/// models: a spec must come back exactly as it was read, and the typed models drop what
/// they do not know or name differently (bollard 0.21 spells the container spec's
/// `Healthcheck` as `HealthCheck`, so a round trip deletes the healthcheck and restarts
/// the service's tasks).
#[derive(Clone, Debug)]
pub struct RawClient {
    endpoint: Endpoint,
    /// The API version both sides speak (see [`RawClient::negotiate`]).
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

    /// A client for `endpoint` speaking the older of the engine's API version and
    /// [`NEWEST_API`], as the engine's unversioned `GET /version` says.
    pub async fn negotiate(endpoint: Endpoint, timeout: Duration) -> Result<RawClient, ApiError> {
        let mut client = RawClient::new(endpoint, String::new(), timeout);
        let answer = client
            .call_uri(http::Method::GET, "/version".into(), None)
            .await?;
        let engine = answer["ApiVersion"].as_str().unwrap_or_default();
        let engine = parse_version(engine).ok_or_else(|| {
            ApiError::transport(format!(
                "the engine's API version '{engine}' is not MAJOR.MINOR"
            ))
        })?;
        let (major, minor) = engine.min(NEWEST_API);
        client.version = format!("{major}.{minor}");
        Ok(client)
    }

    /// The API version this client speaks (`1.41`).
    pub fn version(&self) -> &str {
        &self.version
    }

    /// `GET /v<version><path>`, parsed as JSON.
    pub async fn get(&self, path: &str) -> Result<serde_json::Value, ApiError> {
        self.call(http::Method::GET, path, None).await
    }

    /// `POST` with a JSON body; the answer parsed as JSON (`null` if empty).
    pub async fn post(
        &self,
        path: &str,
        body: &serde_json::Value,
    ) -> Result<serde_json::Value, ApiError> {
        self.call(http::Method::POST, path, Some(body)).await
    }

    /// `POST` without a body (`/containers/{id}/start` refuses one); the answer parsed as
    /// JSON (`null` if empty).
    pub async fn post_empty(&self, path: &str) -> Result<serde_json::Value, ApiError> {
        self.call(http::Method::POST, path, None).await
    }

    /// `DELETE`.
    pub async fn delete(&self, path: &str) -> Result<(), ApiError> {
        self.call(http::Method::DELETE, path, None)
            .await
            .map(|_| ())
    }

    async fn call(
        &self,
        method: http::Method,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> Result<serde_json::Value, ApiError> {
        let uri = format!("/v{}{path}", self.version);
        self.call_uri(method, uri, body).await
    }

    async fn call_uri(
        &self,
        method: http::Method,
        uri: String,
        body: Option<&serde_json::Value>,
    ) -> Result<serde_json::Value, ApiError> {
        let answer = tokio::time::timeout(self.timeout, self.exchange(method, uri, body))
            .await
            .map_err(|_| ApiError::transport(format!("no answer within {:?}", self.timeout)))??;
        if answer.is_empty() {
            return Ok(serde_json::Value::Null);
        }
        serde_json::from_slice(&answer)
            .map_err(|e| ApiError::transport(format!("the answer is not JSON: {e}")))
    }

    async fn exchange(
        &self,
        method: http::Method,
        uri: String,
        body: Option<&serde_json::Value>,
    ) -> Result<Bytes, ApiError> {
        let (host, mut sender) = match &self.endpoint {
            Endpoint::Unix(socket) => {
                let stream = tokio::net::UnixStream::connect(socket).await.map_err(|e| {
                    ApiError::transport(format!("cannot connect to {}: {e}", socket.display()))
                })?;
                ("docker".to_string(), handshake(stream).await?)
            }
            Endpoint::Tcp(authority) => {
                let stream = tokio::net::TcpStream::connect(authority)
                    .await
                    .map_err(|e| {
                        ApiError::transport(format!("cannot connect to {authority}: {e}"))
                    })?;
                (authority.clone(), handshake(stream).await?)
            }
        };
        let payload = match body {
            Some(body) => Bytes::from(
                serde_json::to_vec(body).map_err(|e| ApiError::transport(e.to_string()))?,
            ),
            None => Bytes::new(),
        };
        let request = http::Request::builder()
            .method(method)
            .uri(uri)
            .header(http::header::HOST, host)
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(Full::new(payload))
            .map_err(|e| ApiError::transport(e.to_string()))?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| ApiError::transport(e.to_string()))?;
        let status = response.status();
        let answer = response
            .into_body()
            .collect()
            .await
            .map_err(|e| ApiError::transport(e.to_string()))?
            .to_bytes();
        if status.is_success() {
            return Ok(answer);
        }
        let message = serde_json::from_slice::<serde_json::Value>(&answer)
            .ok()
            .and_then(|v| v["message"].as_str().map(str::to_string))
            .unwrap_or_else(|| String::from_utf8_lossy(&answer).trim().to_string());
        Err(ApiError {
            status: Some(status.as_u16()),
            message,
        })
    }
}

async fn handshake<S>(
    stream: S,
) -> Result<hyper::client::conn::http1::SendRequest<Full<Bytes>>, ApiError>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static,
{
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| ApiError::transport(e.to_string()))?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(sender)
}

/// `MAJOR.MINOR` as numbers, so that `1.9` sorts before `1.41`.
fn parse_version(text: &str) -> Option<(u32, u32)> {
    let (major, minor) = text.trim().split_once('.')?;
    Some((major.parse().ok()?, minor.parse().ok()?))
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
        assert_eq!(
            Endpoint::parse("tcp://manager"),
            Some(Endpoint::Tcp("manager:2375".into()))
        );
        assert_eq!(Endpoint::parse("ssh://manager"), None);
    }

    #[test]
    fn api_versions_compare_as_numbers() {
        assert_eq!(parse_version("1.41"), Some((1, 41)));
        assert!(parse_version("1.9") < parse_version("1.41"));
        assert_eq!(
            parse_version("1.41").map(|v| v.min(NEWEST_API)),
            Some((1, 41))
        );
        assert_eq!(
            parse_version("1.99").map(|v| v.min(NEWEST_API)),
            Some(NEWEST_API)
        );
        assert_eq!(parse_version("one"), None);
        assert_eq!(parse_version("1"), None);
    }

    #[test]
    fn filters_are_percent_encoded() {
        assert_eq!(
            encode(r#"{"service":["abc"]}"#),
            "%7B%22service%22%3A%5B%22abc%22%5D%7D"
        );
    }
}
