//! TLS for the suites: self-signed certificates written where a listener reads them, a trust
//! store holding one, a server config for a test's own HTTPS server, and a client handshake.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio_rustls::rustls::{self, RootCertStore};

/// A self-signed certificate and its key.
pub struct Certificate {
    /// The certificate, PEM.
    pub cert_pem: String,
    /// Its private key, PEM.
    pub key_pem: String,
    der: CertificateDer<'static>,
}

impl Certificate {
    /// A self-signed certificate for `names` (DNS names or IP addresses).
    pub fn self_signed(names: &[&str]) -> Certificate {
        let names = names.iter().map(|n| n.to_string()).collect::<Vec<_>>();
        let certified = rcgen::generate_simple_self_signed(names).expect("certificate");
        Certificate {
            cert_pem: certified.cert.pem(),
            key_pem: certified.signing_key.serialize_pem(),
            der: certified.cert.der().clone(),
        }
    }

    /// Writes `cert.pem` and `key.pem` into `dir` (made if missing); their paths.
    pub fn write(&self, dir: &Path) -> (PathBuf, PathBuf) {
        std::fs::create_dir_all(dir).expect("certificate dir");
        let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
        std::fs::write(&cert, &self.cert_pem).expect("cert written");
        std::fs::write(&key, &self.key_pem).expect("key written");
        (cert, key)
    }

    /// A trust store holding only this certificate.
    pub fn roots(&self) -> RootCertStore {
        let mut roots = RootCertStore::empty();
        roots.add(self.der.clone()).expect("root");
        roots
    }

    /// A server config presenting this certificate (ring, safe default versions).
    pub fn server_config(&self) -> rustls::ServerConfig {
        let certs = vec![CertificateDer::from_pem_slice(self.cert_pem.as_bytes()).expect("cert")];
        let key = PrivateKeyDer::from_pem_slice(self.key_pem.as_bytes()).expect("key");
        rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .expect("server config")
    }
}

/// A TLS connection to `addr` as `localhost`, trusting `roots` and offering `alpn`.
pub async fn connect(addr: SocketAddr, roots: &RootCertStore, alpn: &[u8]) -> TlsStream<TcpStream> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut client_config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots.clone())
        .with_no_client_auth();
    // An empty `alpn` offers none: the client of a load balancer set to speak HTTP/2
    // without ALPN.
    client_config.alpn_protocols = if alpn.is_empty() {
        Vec::new()
    } else {
        vec![alpn.to_vec()]
    };
    let connector = tokio_rustls::TlsConnector::from(Arc::new(client_config));
    let tcp = TcpStream::connect(addr).await.expect("connect");
    let name = ServerName::try_from("localhost").expect("name");
    connector.connect(name, tcp).await.expect("TLS handshake")
}
