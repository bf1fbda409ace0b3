//! A conformance check by a real HTTP/2 peer (issue 15): `h2load` (Debian's
//! `nghttp2-client`) sends requests over h2c with prior knowledge and over TLS with ALPN
//! `h2` through the proxy, and every one must succeed. Without `h2load` the test skips,
//! saying so; with `CI` set it fails instead.

mod support;

use std::net::SocketAddr;
use std::process::Command;

use cutover_test_kit::tls::Certificate;
use support::{config, route, start, upstream};

/// Whether `h2load` can run here; under CI its absence is a failure.
fn h2load_present() -> bool {
    let present = Command::new("h2load")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !present {
        assert!(
            std::env::var_os("CI").is_none(),
            "h2load is missing: install nghttp2-client (scripts/test.sh does)"
        );
        eprintln!("SKIPPED: h2load is missing (Debian package nghttp2-client)");
    }
    present
}

/// Runs h2load against `url` (2,000 requests, 10 clients, 10 streams each) and returns
/// its summary lines.
async fn h2load(url: String) -> String {
    let output = tokio::task::spawn_blocking(move || {
        Command::new("h2load")
            .args(["-n", "2000", "-c", "10", "-m", "10", "-T", "10", &url])
            .output()
            .expect("h2load runs")
    })
    .await
    .expect("h2load finishes");
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(output.status.success(), "h2load failed: {text}");
    text
}

/// Checks that every request of the run succeeded with a 2xx over HTTP/2.
fn assert_clean(summary: &str) {
    assert!(
        summary.contains("Application protocol: h2"),
        "not spoken over HTTP/2: {summary}"
    );
    let requests = summary
        .lines()
        .find(|l| l.starts_with("requests:"))
        .unwrap_or_else(|| panic!("no summary: {summary}"));
    assert!(
        requests.contains("2000 succeeded, 0 failed, 0 errored, 0 timeout"),
        "{requests}\n{summary}"
    );
    let statuses = summary
        .lines()
        .find(|l| l.starts_with("status codes:"))
        .unwrap_or_default();
    assert!(statuses.starts_with("status codes: 2000 2xx"), "{summary}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2load_over_h2c_and_tls_sees_no_errors() {
    if !h2load_present() {
        return;
    }
    let v1 = upstream("v1").await;
    let plain = start(config(vec![route("shop", &v1, None, 0)])).await;
    let addr: SocketAddr = plain.listen_addrs()[0];
    assert_clean(&h2load(format!("http://{addr}/")).await);

    let certificate = Certificate::self_signed(&["localhost"]);
    let dir = std::env::temp_dir().join(format!("cutover-h2load-tls-{}", std::process::id()));
    let (cert_file, key_file) = certificate.write(&dir);
    let mut cfg = config(vec![route("shop", &v1, None, 0)]);
    cfg.listeners[0].tls = Some(cutover_proxy::config::TlsConfig {
        cert_file,
        key_file,
    });
    let tls = start(cfg).await;
    let addr: SocketAddr = tls.listen_addrs()[0];
    assert_clean(&h2load(format!("https://{addr}/")).await);
    let _ = std::fs::remove_dir_all(&dir);
}
