//! Helpers shared by the integration tests: a tiny blocking HTTP client, a raw watch reader,
//! polling with deadlines and object builders.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use fake_kube_apiserver::{Config, FakeApiServer};
use serde_json::{Value, json};

/// The demo image the tests run: the workspace's demo-app.
pub const DEMO: &str = "demo:v1";
/// A second version of the demo image.
pub const DEMO_V2: &str = "demo:v2";
/// An image whose process exits at once with status 3.
pub const CRASH: &str = "crash:latest";

/// A config with the demo images.
pub fn config() -> Config {
    let bin = env!("CARGO_BIN_EXE_fake-kube-demo-app").to_string();
    let demo = |version: &str| {
        vec![
            bin.clone(),
            "--app-version".into(),
            version.into(),
            "--bind".into(),
            "{{ip}}".into(),
            "--port".into(),
            "{{port}}".into(),
        ]
    };
    let mut config = Config::default();
    config.images.insert(DEMO.into(), demo("v1"));
    config.images.insert(DEMO_V2.into(), demo("v2"));
    config.images.insert(
        CRASH.into(),
        vec!["/bin/sh".into(), "-c".into(), "echo dying; exit 3".into()],
    );
    config.crash_backoff = Duration::from_millis(200);
    config
}

pub fn start() -> FakeApiServer {
    FakeApiServer::start(config()).expect("the fake API server starts")
}

/// Polls `check` every 50 ms until it gives a value, failing after `timeout`.
pub fn wait_for<T>(what: &str, timeout: Duration, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A response: status code and JSON body (Null if not JSON).
#[derive(Debug)]
pub struct Reply {
    pub code: u16,
    pub body: Value,
}

/// One blocking HTTP/1.1 request.
pub fn request(
    server: &FakeApiServer,
    method: &str,
    path: &str,
    content_type: Option<&str>,
    body: Option<&Value>,
) -> Reply {
    let mut stream = TcpStream::connect(("127.0.0.1", server.port())).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    if let Some(ct) = content_type {
        head.push_str(&format!("Content-Type: {ct}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).unwrap();
    stream.write_all(body.as_bytes()).unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).unwrap();
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, rest) = text.split_once("\r\n\r\n").expect("a full response");
    let code = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(rest)
    } else {
        rest.to_string()
    };
    Reply {
        code,
        body: serde_json::from_str(&body).unwrap_or(Value::Null),
    }
}

fn dechunk(mut text: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = text.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        text = rest[n..].trim_start_matches("\r\n");
    }
    out
}

pub fn get(server: &FakeApiServer, path: &str) -> Reply {
    request(server, "GET", path, None, None)
}

pub fn post(server: &FakeApiServer, path: &str, body: &Value) -> Reply {
    request(server, "POST", path, Some("application/json"), Some(body))
}

pub fn put(server: &FakeApiServer, path: &str, body: &Value) -> Reply {
    request(server, "PUT", path, Some("application/json"), Some(body))
}

pub fn patch(server: &FakeApiServer, path: &str, content_type: &str, body: &Value) -> Reply {
    request(server, "PATCH", path, Some(content_type), Some(body))
}

pub fn delete(server: &FakeApiServer, path: &str) -> Reply {
    request(server, "DELETE", path, None, None)
}

/// A watch read line by line from a raw chunked response.
pub struct RawWatch {
    reader: BufReader<TcpStream>,
}

impl RawWatch {
    pub fn open(server: &FakeApiServer, path_and_query: &str) -> RawWatch {
        let mut stream = TcpStream::connect(("127.0.0.1", server.port())).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        write!(
            stream,
            "GET {path_and_query} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
        )
        .unwrap();
        let mut reader = BufReader::new(stream);
        let mut status = String::new();
        reader.read_line(&mut status).unwrap();
        assert!(status.contains(" 200 "), "watch answered {status}");
        loop {
            let mut line = String::new();
            reader.read_line(&mut line).unwrap();
            if line == "\r\n" {
                break;
            }
        }
        RawWatch { reader }
    }

    /// The next event, or None once the stream ends.
    pub fn next(&mut self) -> Option<Value> {
        loop {
            let mut size = String::new();
            if self.reader.read_line(&mut size).ok()? == 0 {
                return None;
            }
            let n = usize::from_str_radix(size.trim(), 16).ok()?;
            if n == 0 {
                return None;
            }
            let mut chunk = vec![0; n + 2];
            self.reader.read_exact(&mut chunk).ok()?;
            let text = String::from_utf8_lossy(&chunk[..n]).into_owned();
            if let Some(line) = text.lines().find(|l| !l.trim().is_empty()) {
                return serde_json::from_str(line).ok();
            }
        }
    }

    /// The next event that is not a bookmark.
    pub fn next_change(&mut self) -> Option<Value> {
        loop {
            let event = self.next()?;
            if event["type"] != "BOOKMARK" {
                return Some(event);
            }
        }
    }
}

/// A Deployment of the demo image.
pub fn deployment(name: &str, image: &str, replicas: u32) -> Value {
    json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": "default", "labels": {"app": name}},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{
                    "name": "app",
                    "image": image,
                    "ports": [{"name": "http", "containerPort": 8080}],
                    "readinessProbe": {"httpGet": {"path": "/healthz", "port": "http"}},
                }]},
            },
        },
    })
}

/// A condition of an object's status.
pub fn condition<'a>(object: &'a Value, kind: &str) -> Option<&'a Value> {
    object["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == kind)
}

pub fn rv(object: &Value) -> u64 {
    object["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap()
}

/// Whether something accepts TCP connections at ip:port.
pub fn listening(ip: &str, port: u16) -> bool {
    TcpStream::connect_timeout(
        &format!("{ip}:{port}").parse().unwrap(),
        Duration::from_millis(300),
    )
    .is_ok()
}
