//! The demo app as a real process, as the local backend and the demo start it.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn get(addr: &str, path: &str) -> (u16, String, Duration) {
    let started = Instant::now();
    let mut stream = TcpStream::connect(addr).expect("connect");
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: demo\r\nConnection: close\r\n\r\n"
    )
    .expect("write");
    let mut answer = String::new();
    stream.read_to_string(&mut answer).expect("read");
    let status = answer
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, answer, started.elapsed())
}

#[test]
fn serves_its_version_with_the_configured_errors_and_latency() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_demo-app"))
        .args([
            "--app-version",
            "v3",
            "--port",
            "0",
            "--error-rate",
            "0.05",
            "--latency",
            "20ms",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .expect("starts");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("read");
    let addr = line
        .trim()
        .strip_prefix("listening on ")
        .expect("announces its address")
        .to_string();
    let (status, answer, _) = get(&addr, "/healthz");
    assert_eq!(status, 200);
    assert!(
        answer.to_lowercase().contains("x-demo-version: v3"),
        "{answer}"
    );
    let mut failures = 0;
    let mut slowest_fast = Duration::MAX;
    for _ in 0..100 {
        let (status, answer, took) = get(&addr, "/");
        if status == 500 {
            failures += 1;
        } else {
            assert!(answer.ends_with("demo-app v3\n"), "{answer}");
        }
        slowest_fast = slowest_fast.min(took);
    }
    assert_eq!(failures, 5, "5 % of 100 requests");
    assert!(
        slowest_fast >= Duration::from_millis(20),
        "every answer waits the latency"
    );
    let _ = child.kill();
    let _ = child.wait();
}
