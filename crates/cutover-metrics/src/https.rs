//! TLS for cutover's own HTTP: the client cutover calls out with (Prometheus, web
//! metrics, the controller's hooks, the CLI talking to the controller): plain HTTP, or
//! HTTPS through rustls, checking servers against the system's CA bundle (`SSL_CERT_FILE`,
//! else Debian's `/etc/ssl/certs/ca-certificates.crt`) or a given CA file; and
//! [`server_config`], the server side from PEM files (the controller's API).

pub use cutover_core::error_chain;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::Uri;
use http::uri::Scheme;
use hyper::body::Body;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::{Connected, Connection, HttpConnector};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio_rustls::rustls::{self, RootCertStore};

/// Where the trusted CA certificates are read from when `SSL_CERT_FILE` is not set.
const SYSTEM_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

/// A client for `http://` and `https://` URLs.
pub type HttpsClient<B> = Client<Connector, B>;

/// A client with a 5 s connect timeout, for request bodies of type `B`, trusting the
/// system's CA bundle.
pub fn client<B>() -> HttpsClient<B>
where
    B: Body + Send + 'static,
    B::Data: Send,
{
    Client::builder(TokioExecutor::new()).build(Connector::new())
}

/// The same, trusting only the CA certificates in the PEM file `bundle`.
pub fn client_trusting<B>(bundle: &str) -> HttpsClient<B>
where
    B: Body + Send + 'static,
    B::Data: Send,
{
    Client::builder(TokioExecutor::new()).build(Connector::trusting(bundle))
}

/// Connects over TCP, then TLS for `https://`.
#[derive(Clone)]
pub struct Connector {
    http: HttpConnector,
    /// `Err` says why there is no trust store (the bundle is missing or unreadable): an
    /// `https://` call then fails with that reason, plain HTTP still works.
    tls: Result<TlsConnector, Arc<str>>,
}

impl Default for Connector {
    fn default() -> Self {
        Connector::new()
    }
}

impl Connector {
    /// A connector trusting only the CA certificates in the PEM file `bundle`; `Err` (the
    /// reason) when the file cannot be read or holds no certificate, for a CA file the
    /// user named, which should fail at once rather than at the first `https://` call.
    pub fn checked_trusting(bundle: &str) -> Result<Connector, String> {
        let connector = Connector::trusting(bundle);
        match &connector.tls {
            Ok(_) => Ok(connector),
            Err(reason) => Err(reason.to_string()),
        }
    }

    /// A connector trusting the system's CA bundle (`SSL_CERT_FILE`, else Debian's).
    pub fn new() -> Connector {
        let bundle = std::env::var("SSL_CERT_FILE").unwrap_or_else(|_| SYSTEM_BUNDLE.to_string());
        Connector::trusting(&bundle)
    }

    /// A connector trusting the CA certificates in the PEM file `bundle`.
    pub fn trusting(bundle: &str) -> Connector {
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_connect_timeout(Some(Duration::from_secs(5)));
        Connector {
            http,
            tls: trust_store(bundle)
                .map(|roots| {
                    let provider = Arc::new(rustls::crypto::ring::default_provider());
                    let config = rustls::ClientConfig::builder_with_provider(provider)
                        .with_safe_default_protocol_versions()
                        .map(|b| b.with_root_certificates(roots).with_no_client_auth());
                    match config {
                        Ok(config) => Ok(TlsConnector::from(Arc::new(config))),
                        Err(e) => Err(Arc::from(format!("TLS cannot be set up: {e}"))),
                    }
                })
                .and_then(|c| c),
        }
    }
}

fn trust_store(path: &str) -> Result<RootCertStore, Arc<str>> {
    let mut roots = RootCertStore::empty();
    let certificates = CertificateDer::pem_file_iter(path)
        .map_err(|e| Arc::from(format!("cannot read the CA bundle {path}: {e}")))?;
    for certificate in certificates.flatten() {
        // A certificate the store cannot use is skipped, as curl does.
        let _ = roots.add(certificate);
    }
    if roots.is_empty() {
        return Err(Arc::from(format!("no CA certificate in {path}")));
    }
    Ok(roots)
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl tower_service::Service<Uri> for Connector {
    type Response = Stream;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Stream, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.http.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let https = uri.scheme() == Some(&Scheme::HTTPS);
        let host = uri
            .host()
            .unwrap_or_default()
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        let connecting = self.http.call(uri);
        let tls = self.tls.clone();
        Box::pin(async move {
            let tcp = connecting.await?;
            if !https {
                return Ok(Stream::Plain(tcp));
            }
            let tls = tls.map_err(|reason| -> BoxError { reason.to_string().into() })?;
            let name = ServerName::try_from(host)?;
            let stream = tls.connect(name, tcp.into_inner()).await?;
            Ok(Stream::Tls(Box::new(TokioIo::new(stream))))
        })
    }
}

/// A connection, plain or TLS.
pub enum Stream {
    /// `http://`.
    Plain(TokioIo<TcpStream>),
    /// `https://`.
    Tls(Box<TokioIo<TlsStream<TcpStream>>>),
}

impl Connection for Stream {
    fn connected(&self) -> Connected {
        match self {
            Stream::Plain(stream) => stream.connected(),
            Stream::Tls(_) => Connected::new(),
        }
    }
}

impl hyper::rt::Read for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl hyper::rt::Write for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// Why a server's certificate and key cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("cannot use the certificate {cert} with the key {key}: {message}")]
pub struct ServerTlsError {
    /// The certificate file (PEM, the chain with the server's certificate first).
    pub cert: String,
    /// The private key file (PEM).
    pub key: String,
    /// What is wrong.
    pub message: String,
}

/// A rustls server configuration from a PEM certificate chain and a PEM private key
/// (PKCS#8, PKCS#1 or SEC1), speaking HTTP/1.1 only (ALPN `http/1.1`): TLS 1.2 and 1.3
/// with rustls's safe defaults, no client certificates.
pub fn server_config(
    cert: &std::path::Path,
    key: &std::path::Path,
) -> Result<Arc<rustls::ServerConfig>, ServerTlsError> {
    let fail = |message: String| ServerTlsError {
        cert: cert.display().to_string(),
        key: key.display().to_string(),
        message,
    };
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| fail(format!("cannot read the certificate: {e}")))?
        .collect::<Result<_, _>>()
        .map_err(|e| fail(format!("cannot parse the certificate: {e}")))?;
    if certs.is_empty() {
        return Err(fail("the certificate file holds no certificate".into()));
    }
    let key =
        PrivateKeyDer::from_pem_file(key).map_err(|e| fail(format!("cannot read the key: {e}")))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| fail(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| fail(e.to_string()))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}
