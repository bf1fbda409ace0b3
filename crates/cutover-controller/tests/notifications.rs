//! Notifications from real rollouts: the controller with the local backend (two loopback
//! "versions" that answer 200), no proxy, and receivers on loopback that record what
//! they get or never answer.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cutover_backend::LocalBackend;
use cutover_controller::notify::signature;
use cutover_controller::{Controller, ControllerOptions};
use cutover_core::rollout::Command;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// A loopback listener: answers 200 to everything (`answer`) or never, and records each
/// request's signature headers and body.
struct Listener {
    address: String,
    received: Arc<Mutex<Vec<Request>>>,
}

impl Listener {
    async fn start(answer: bool) -> Listener {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let address = listener.local_addr().expect("address").to_string();
        let received = Arc::new(Mutex::new(Vec::new()));
        let log = received.clone();
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let log = log.clone();
                tokio::spawn(async move {
                    // Keep-alive: one request after another on the connection.
                    while let Some(request) = read_request(&mut stream).await {
                        log.lock().expect("log").push(request);
                        if !answer {
                            tokio::time::sleep(Duration::from_secs(3600)).await;
                            return;
                        }
                        let ok = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
                        if stream.write_all(ok).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        Listener { address, received }
    }

    fn bodies(&self) -> Vec<serde_json::Value> {
        self.received
            .lock()
            .expect("log")
            .iter()
            .filter(|(_, _, body)| !body.is_empty())
            .map(|(_, _, body)| serde_json::from_slice(body).expect("JSON"))
            .collect()
    }
}

/// A request as recorded: its timestamp and signature headers, and its body.
type Request = (Option<String>, Option<String>, Vec<u8>);

async fn read_request(stream: &mut tokio::net::TcpStream) -> Option<Request> {
    let mut buffer = Vec::new();
    let mut chunk = [0u8; 4096];
    let end = loop {
        if let Some(i) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
            break i;
        }
        if buffer.len() > 65_536 {
            return None;
        }
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buffer.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buffer[..end]).to_ascii_lowercase();
    let header = |name: &str| {
        head.lines().find_map(|l| {
            l.strip_prefix(&format!("{name}:"))
                .map(|v| v.trim().to_string())
        })
    };
    let length: usize = header("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
        .min(65_536);
    let (timestamp, signed) = (
        header(signature::TIMESTAMP_HEADER),
        header(signature::SIGNATURE_HEADER),
    );
    let mut body = buffer[end + 4..].to_vec();
    while body.len() < length {
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            break;
        }
        body.extend_from_slice(&chunk[..n]);
    }
    Some((timestamp, signed, body))
}

fn scratch(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "cutover-notifications-{name}-{}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch directory");
    dir
}

/// A release of the two loopback versions through `steps`, with `notifications` (YAML
/// list items, indented for `spec`).
fn release(name: &str, stable: &str, candidate: &str, steps: &str, notifications: &str) -> String {
    format!(
        "apiVersion: cutover.dev/v1
kind: Release
metadata:
  name: {name}
spec:
  backend:
    local:
      stable:
        addresses: [\"{stable}\"]
      candidate:
        addresses: [\"{candidate}\"]
  version: v2
  stableVersion: v1
  port: 8080
  strategy:
    progressDeadline: 5m
    canary:
      scaleDownDelay: 0s
      steps:
{steps}
{notifications}"
    )
}

async fn controller(dir: &std::path::Path) -> Controller {
    let backend = LocalBackend::open(dir.join("state")).expect("state directory");
    Controller::start(ControllerOptions {
        backend: Arc::new(backend),
        proxy: None,
        prometheus: None,
        notifications: Vec::new(),
    })
    .await
    .expect("controller")
}

/// Waits (at most 30 s) until `check` holds of the release's status.
async fn wait_until(
    controller: &Controller,
    name: &str,
    check: impl Fn(&cutover_controller::RolloutStatus) -> bool,
) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if let Ok(status) = controller.status(name)
            && check(&status)
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!(
        "{name}: {:?}",
        controller.status(name).map(|s| s.description.clone())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_promoted_rollout_tells_each_event_once_signed_to_the_webhook() {
    let dir = scratch("events");
    let (stable, candidate) = (Listener::start(true).await, Listener::start(true).await);
    let receiver = Listener::start(true).await;
    std::fs::write(
        dir.join("url"),
        format!("http://{}/hook\n", receiver.address),
    )
    .expect("url");
    std::fs::write(dir.join("key"), "k3y\n").expect("key");
    let notifications = format!(
        "  notifications:
    - service: webhook
      url: {{valueFrom: {{file: {dir}/url}}}}
      secret: {{valueFrom: {{file: {dir}/key}}}}
      triggers: [rolloutStarted, stepCompleted, pausedForPerson, promoted, rolledBack, aborted]
",
        dir = dir.display()
    );
    let steps = "        - setWeight: 20\n        - pause: {}\n        - setWeight: 60\n";
    let text = release(
        "shop",
        &stable.address,
        &candidate.address,
        steps,
        &notifications,
    );
    let controller = controller(&dir).await;
    let release = Controller::parse("shop.yaml", &text).expect("a valid release");
    controller.submit(release).await.expect("submitted");
    wait_until(&controller, "shop", |s| s.waiting_for_person).await;
    controller
        .command("shop", Command::Promote)
        .await
        .expect("promote");
    wait_until(&controller, "shop", |s| s.done).await;
    // Let the last deliveries land, then read what arrived.
    let deadline = Instant::now() + Duration::from_secs(10);
    while receiver.bodies().len() < 6 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut events: Vec<(String, Option<u64>)> = receiver
        .bodies()
        .iter()
        .map(|b| {
            (
                b["trigger"].as_str().unwrap_or_default().to_string(),
                b["step"].as_u64(),
            )
        })
        .collect();
    events.sort();
    assert_eq!(
        events,
        vec![
            ("pausedForPerson".to_string(), Some(1)),
            ("promoted".to_string(), None),
            ("rolloutStarted".to_string(), None),
            ("stepCompleted".to_string(), Some(0)),
            ("stepCompleted".to_string(), Some(1)),
            ("stepCompleted".to_string(), Some(2)),
        ],
        "each event once, nothing for triggers that did not happen"
    );
    for (timestamp, signed, body) in receiver.received.lock().expect("log").iter() {
        let timestamp: u64 = timestamp
            .as_deref()
            .and_then(|t| t.parse().ok())
            .expect("timestamp");
        assert!(signature::verify(
            b"k3y",
            timestamp,
            body,
            signed.as_deref().expect("signature")
        ));
    }
    let metrics = controller.metrics();
    assert!(
        metrics.contains(
            "cutover_notifications_total{service=\"webhook\",trigger=\"stepCompleted\",result=\"sent\"} 3"
        ),
        "{metrics}"
    );
    let status = serde_json::to_string(&*controller.status("shop").expect("status")).expect("json");
    assert!(!status.contains(&receiver.address), "{status}");
}

/// How long a rollout of three timed steps takes from submission to promoted.
async fn rollout_time(dir: &std::path::Path, name: &str, notifications: &str) -> Duration {
    let (stable, candidate) = (Listener::start(true).await, Listener::start(true).await);
    let steps = "        - setWeight: 20\n        - pause: {duration: 300ms}\n        - setWeight: 50\n        - pause: {duration: 300ms}\n        - setWeight: 80\n";
    let text = release(
        name,
        &stable.address,
        &candidate.address,
        steps,
        notifications,
    );
    let controller = controller(dir).await;
    let release = Controller::parse(&format!("{name}.yaml"), &text).expect("a valid release");
    let began = Instant::now();
    controller.submit(release).await.expect("submitted");
    wait_until(&controller, name, |s| s.done).await;
    let took = began.elapsed();
    let status = controller.status(name).expect("status");
    assert_eq!(status.outcome, Some("promoted"));
    took
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_that_never_answers_does_not_slow_the_rollout() {
    let dir = scratch("silent");
    let silent = Listener::start(false).await;
    std::fs::write(dir.join("url"), format!("http://{}/hook\n", silent.address)).expect("url");
    let notifications = format!(
        "  notifications:
    - service: slack
      url: {{valueFrom: {{file: {dir}/url}}}}
      timeout: 30s
      triggers: [rolloutStarted, stepCompleted, pausedForPerson, promoted]
",
        dir = dir.display()
    );
    let without = rollout_time(&scratch("plain"), "plain", "").await;
    let with = rollout_time(&dir, "held", &notifications).await;
    assert!(
        !silent.received.lock().expect("log").is_empty(),
        "the silent receiver was asked"
    );
    println!("rollout without notifications {without:?}, with a silent receiver {with:?}");
    assert!(
        with < without + Duration::from_millis(300),
        "a silent receiver slowed the rollout: {without:?} without, {with:?} with"
    );
}
