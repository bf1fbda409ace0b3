//! Header values given by reference reach the server, read at each request; messages
//! never show credentials from a URL.

use std::sync::{Arc, Mutex};

use cutover_core::Duration;
use cutover_core::judge::MeasurementResult;
use cutover_core::spec::{
    PrometheusProvider, SecretReference, SecretSource, SecretValue, WebProvider,
};
use cutover_metrics::Context;
use cutover_metrics::prometheus::PrometheusClient;
use cutover_metrics::web::WebClient;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

fn context() -> Context<'static> {
    Context {
        release: "shop",
        stable: "v1",
        candidate: "v2",
        interval: Duration::from_secs(30),
    }
}

/// A server that records each request's head and answers `status` with `body`.
async fn recording_server(status: u16, body: &'static str) -> (u16, Arc<Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let heads = Arc::new(Mutex::new(Vec::new()));
    let seen = heads.clone();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let mut head = Vec::new();
            let mut buffer = [0u8; 1024];
            while !head.ends_with(b"\r\n\r\n") {
                match stream.read(&mut buffer).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => head.extend_from_slice(&buffer[..n]),
                }
            }
            seen.lock()
                .expect("heads")
                .push(String::from_utf8_lossy(&head).into_owned());
            let answer = format!(
                "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = stream.write_all(answer.as_bytes()).await;
        }
    });
    (port, heads)
}

fn file_ref(path: &std::path::Path) -> SecretValue {
    SecretValue::Reference(SecretReference {
        value_from: SecretSource::File(path.to_string_lossy().into_owned()),
    })
}

fn secret_file(name: &str, value: &str) -> std::path::PathBuf {
    let path = std::env::temp_dir().join(format!("cutover-{name}-{}", std::process::id()));
    std::fs::write(&path, format!("{value}\n")).expect("written");
    path
}

#[tokio::test]
async fn web_headers_by_reference_reach_the_server_read_at_each_request() {
    let (port, heads) = recording_server(200, r#"{"value": 0.5}"#).await;
    let path = secret_file("web-key", "k3y-one");
    let provider = WebProvider {
        url: SecretValue::Inline(format!("http://127.0.0.1:{port}/m")),
        json_pointer: "/value".into(),
        headers: [("X-Api-Key".to_string(), file_ref(&path))].into(),
        timeout: Duration::from_secs(5),
    };
    let client = WebClient::default();
    let first = client.measure(&provider, &context()).await;
    assert!(matches!(first, MeasurementResult::Value(_)), "{first:?}");
    std::fs::write(&path, "k3y-two\n").expect("rotated");
    let _ = client.measure(&provider, &context()).await;
    let heads = heads.lock().expect("heads").clone();
    assert!(
        heads[0].to_lowercase().contains("x-api-key: k3y-one"),
        "{heads:?}"
    );
    assert!(
        heads[1].to_lowercase().contains("x-api-key: k3y-two"),
        "{heads:?}"
    );
    // A reference that cannot be read is the measurement's error, naming the file.
    std::fs::remove_file(&path).expect("removed");
    let MeasurementResult::Error(message) = client.measure(&provider, &context()).await else {
        panic!("an unreadable secret is an error");
    };
    assert!(message.contains(&path.display().to_string()), "{message}");
}

#[tokio::test]
async fn messages_about_a_url_with_credentials_do_not_show_them() {
    let (port, _) = recording_server(503, "{}").await;
    let provider = WebProvider {
        url: SecretValue::Inline(format!(
            "http://ci:hunter2@127.0.0.1:{port}/m?api_key=s3cret&v={{{{version}}}}"
        )),
        json_pointer: "/value".into(),
        headers: Default::default(),
        timeout: Duration::from_secs(5),
    };
    let MeasurementResult::Error(message) =
        WebClient::default().measure(&provider, &context()).await
    else {
        panic!("a 503 is an error");
    };
    assert!(message.contains("503"), "{message}");
    assert!(
        !message.contains("hunter2") && !message.contains("s3cret"),
        "{message}"
    );
    assert!(message.contains("<redacted>"), "{message}");
}

#[tokio::test]
async fn prometheus_gets_its_bearer_token_and_headers_by_reference() {
    let (port, heads) = recording_server(
        200,
        r#"{"status":"success","data":{"resultType":"scalar","result":[1,"0.25"]}}"#,
    )
    .await;
    let token = secret_file("prom-token", "pr0m-t0ken");
    let tenant = secret_file("prom-tenant", "team-a");
    let provider = PrometheusProvider {
        address: Some(format!("http://127.0.0.1:{port}")),
        query: "sum(up)".into(),
        timeout: Duration::from_secs(5),
        headers: [("X-Scope-OrgID".to_string(), file_ref(&tenant))].into(),
        bearer_token_from: Some(SecretSource::File(token.to_string_lossy().into_owned())),
        proxy_metric: None,
    };
    let result = PrometheusClient::new(None)
        .measure(&provider, &context())
        .await;
    assert!(matches!(result, MeasurementResult::Value(_)), "{result:?}");
    let head = heads.lock().expect("heads")[0].to_lowercase();
    assert!(head.contains("authorization: bearer pr0m-t0ken"), "{head}");
    assert!(head.contains("x-scope-orgid: team-a"), "{head}");
    let _ = std::fs::remove_file(token);
    let _ = std::fs::remove_file(tenant);
}

#[tokio::test]
async fn a_url_given_by_reference_is_read_at_use_and_never_shown() {
    let (port, heads) = recording_server(503, "{}").await;
    let path = secret_file(
        "web-url",
        &format!("http://127.0.0.1:{port}/m/{{{{version}}}}?api_key=k3y-in-url"),
    );
    let provider = WebProvider {
        url: file_ref(&path),
        json_pointer: "/value".into(),
        headers: Default::default(),
        timeout: Duration::from_secs(5),
    };
    let MeasurementResult::Error(message) =
        WebClient::default().measure(&provider, &context()).await
    else {
        panic!("a 503 is an error");
    };
    let head = heads.lock().expect("heads")[0].clone();
    assert!(head.starts_with("GET /m/v2?api_key=k3y-in-url "), "{head}");
    assert!(!message.contains("k3y-in-url"), "{message}");
    assert!(
        message.contains(&format!("the URL from file {}", path.display())),
        "{message}"
    );
    let _ = std::fs::remove_file(path);
}
