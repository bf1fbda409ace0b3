//! HTTPS for the providers and hooks: a server whose certificate the trust store holds is
//! read; one it does not hold is an error, never an answer.

use std::sync::Arc;

use bytes::Bytes;
use cutover_test_kit::tls::Certificate;
use http_body_util::{BodyExt, Empty};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

/// An HTTPS server for `localhost` answering every request with `body`; returns its port
/// and its certificate in PEM.
async fn https_server(body: &'static str) -> (u16, String) {
    let certificate = Certificate::self_signed(&["localhost"]);
    let acceptor = TlsAcceptor::from(Arc::new(certificate.server_config()));
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                continue;
            };
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let mut request = [0u8; 4096];
                let _ = tls.read(&mut request).await;
                let answer = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = tls.write_all(answer.as_bytes()).await;
                let _ = tls.shutdown().await;
            });
        }
    });
    (port, certificate.cert_pem)
}

#[tokio::test]
async fn https_is_read_with_a_trusted_certificate_and_refused_without() {
    let (trusted, cert) = https_server(r#"{"errorRate": 0.25}"#).await;
    let (untrusted, _) = https_server(r#"{"errorRate": 0.5}"#).await;
    let bundle = std::env::temp_dir().join(format!("cutover-https-{}.pem", std::process::id()));
    std::fs::write(&bundle, cert).expect("bundle");
    let client =
        cutover_metrics::https::client_trusting::<Empty<Bytes>>(bundle.to_str().expect("path"));

    let uri: http::Uri = format!("https://localhost:{trusted}/stats")
        .parse()
        .expect("uri");
    let response = client.get(uri).await.expect("a trusted server answers");
    assert_eq!(response.status(), 200);
    let body = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    assert_eq!(&body[..], br#"{"errorRate": 0.25}"#);

    let uri: http::Uri = format!("https://localhost:{untrusted}/stats")
        .parse()
        .expect("uri");
    let error = client
        .get(uri)
        .await
        .expect_err("an untrusted server is refused");
    let chain = cutover_metrics::https::error_chain(&error).to_lowercase();
    assert!(chain.contains("certificate"), "{chain}");

    // Without a trust store, https fails and says why.
    let missing = cutover_metrics::https::client_trusting::<Empty<Bytes>>("/nonexistent.pem");
    let uri: http::Uri = format!("https://localhost:{trusted}/stats")
        .parse()
        .expect("uri");
    let error = missing
        .get(uri)
        .await
        .expect_err("no trust store, no https");
    let chain = cutover_metrics::https::error_chain(&error);
    assert!(chain.contains("/nonexistent.pem"), "{chain}");
    let _ = std::fs::remove_file(&bundle);
}
