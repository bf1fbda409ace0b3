//! Client listeners: accept, optional TLS, HTTP/1.1 and HTTP/2 (h2c with prior knowledge,
//! or ALPN over TLS), a connection limit, and graceful shutdown.

use std::net::SocketAddr;
use std::sync::Arc;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::config::{ListenerConfig, TlsConfig};
use crate::{Shared, StartError, forward};

/// A bound listener.
pub(crate) struct Bound {
    pub(crate) listener: TcpListener,
    pub(crate) local_addr: SocketAddr,
    tls: Option<TlsAcceptor>,
}

/// Binds a plain TCP listener.
pub(crate) async fn bind_plain(address: SocketAddr) -> Result<Bound, StartError> {
    let listener = TcpListener::bind(address)
        .await
        .map_err(|source| StartError::Bind { address, source })?;
    let local_addr = listener
        .local_addr()
        .map_err(|source| StartError::Bind { address, source })?;
    Ok(Bound {
        listener,
        local_addr,
        tls: None,
    })
}

/// Binds a client listener, loading its certificate if it has one.
pub(crate) async fn bind(config: &ListenerConfig) -> Result<Bound, StartError> {
    let mut bound = bind_plain(config.address).await?;
    if let Some(tls) = &config.tls {
        bound.tls = Some(acceptor(tls)?);
    }
    Ok(bound)
}

fn acceptor(tls: &TlsConfig) -> Result<TlsAcceptor, StartError> {
    let fail = |message: String| StartError::Tls {
        cert: tls.cert_file.display().to_string(),
        key: tls.key_file.display().to_string(),
        message,
    };
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&tls.cert_file)
        .map_err(|e| fail(format!("cannot read the certificate: {e}")))?
        .collect::<Result<_, _>>()
        .map_err(|e| fail(format!("cannot parse the certificate: {e}")))?;
    if certs.is_empty() {
        return Err(fail("the certificate file holds no certificate".into()));
    }
    let key = PrivateKeyDer::from_pem_file(&tls.key_file)
        .map_err(|e| fail(format!("cannot read the key: {e}")))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| fail(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| fail(e.to_string()))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// How long a client has to finish the TLS handshake.
const TLS_HANDSHAKE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Accepts and serves connections until shutdown, then drains them. `permits` is shared by
/// every listener: `maxConnections` caps them all together.
pub(crate) async fn serve(
    shared: Arc<Shared>,
    bound: Bound,
    permits: Arc<Semaphore>,
    mut shutdown: watch::Receiver<bool>,
) {
    let limits = shared.config.limits.clone();
    let graceful = GracefulShutdown::new();
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .max_buf_size(limits.max_header_bytes.max(8192))
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(1024)
        .max_header_list_size(u32::try_from(limits.max_header_bytes).unwrap_or(u32::MAX));
    let builder = Arc::new(builder);
    let tls = bound.tls.clone();
    loop {
        let permit = tokio::select! {
            permit = permits.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break,
            },
            _ = shutdown.changed() => break,
        };
        let (stream, peer) = tokio::select! {
            accepted = bound.listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = shutdown.changed() => break,
        };
        let _ = stream.set_nodelay(true);
        let shared = shared.clone();
        let builder = builder.clone();
        let watcher = graceful.watcher();
        // Plain and TLS connections are separate tasks: a task's size is its largest
        // state, and a plain connection should not carry room for a TLS session (this
        // matters at tens of thousands of idle keep-alive connections).
        match tls.clone() {
            None => {
                let io = TokioIo::new(stream);
                tokio::spawn(async move {
                    let service =
                        service_fn(move |req| forward::handle(shared.clone(), req, peer, false));
                    let conn = builder.serve_connection_with_upgrades(io, service);
                    let _ = watcher.watch(conn.into_owned()).await;
                    drop(permit);
                });
            }
            Some(acceptor) => {
                tokio::spawn(Box::pin(async move {
                    let handshake =
                        tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(stream));
                    let Ok(Ok(stream)) = handshake.await else {
                        return;
                    };
                    let service =
                        service_fn(move |req| forward::handle(shared.clone(), req, peer, true));
                    let conn =
                        builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
                    let _ = watcher.watch(conn.into_owned()).await;
                    drop(permit);
                }));
            }
        }
    }
    drop(bound);
    graceful.shutdown().await;
}
