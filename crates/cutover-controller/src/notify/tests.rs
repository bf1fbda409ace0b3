//! Deliveries against a real HTTP listener on loopback that records what it gets and
//! answers as each test scripts it.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cutover_core::Backoff;
use cutover_core::spec::{
    NotificationService, NotificationSpec, SecretReference, SecretSource, SecretValue, Trigger,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use super::*;

/// How the receiver answers its n-th request: a status, or never.
#[derive(Clone, Copy)]
enum Answer {
    Status(u16),
    Never,
}

/// One request as received.
#[derive(Clone, Debug)]
struct Received {
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Received {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).expect("a JSON body")
    }
}

/// A loopback HTTP/1.1 listener: answers the scripted statuses in order (the last one
/// for every request after), records every request.
struct Receiver {
    url: String,
    received: Arc<Mutex<Vec<Received>>>,
}

impl Receiver {
    async fn start(script: Vec<Answer>) -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("http://{}/hook", listener.local_addr().expect("address"));
        let received = Arc::new(Mutex::new(Vec::new()));
        let log = received.clone();
        tokio::spawn(async move {
            let mut n = 0;
            loop {
                let Ok((mut stream, _)) = listener.accept().await else {
                    return;
                };
                let answer = script
                    .get(n)
                    .or(script.last())
                    .copied()
                    .unwrap_or(Answer::Status(200));
                n += 1;
                let log = log.clone();
                tokio::spawn(async move {
                    let Some(request) = read_request(&mut stream).await else {
                        return;
                    };
                    log.lock().expect("log").push(request);
                    match answer {
                        Answer::Status(status) => {
                            let head = format!(
                                "HTTP/1.1 {status} X\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
                            );
                            let _ = stream.write_all(head.as_bytes()).await;
                        }
                        Answer::Never => {
                            tokio::time::sleep(Duration::from_secs(3600)).await;
                        }
                    }
                });
            }
        });
        Receiver { url, received }
    }

    fn received(&self) -> Vec<Received> {
        self.received.lock().expect("log").clone()
    }

    /// Waits (at most 10 s) until `n` requests arrived.
    async fn wait_for(&self, n: usize) -> Vec<Received> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let got = self.received();
            if got.len() >= n || Instant::now() > deadline {
                return got;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

/// Reads one request (head and a `content-length` body), within a 64 KiB budget.
async fn read_request(stream: &mut tokio::net::TcpStream) -> Option<Received> {
    let mut buffer = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
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
    let head = String::from_utf8_lossy(&buffer[..head_end]).into_owned();
    let headers: Vec<(String, String)> = head
        .lines()
        .skip(1)
        .filter_map(|line| {
            let (name, value) = line.split_once(':')?;
            Some((name.trim().to_string(), value.trim().to_string()))
        })
        .collect();
    let length: usize = headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    let mut body = buffer[head_end + 4..].to_vec();
    while body.len() < length.min(65_536) {
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            break;
        }
        body.extend_from_slice(&chunk[..n]);
    }
    Some(Received { headers, body })
}

fn file_reference(dir: &std::path::Path, name: &str, content: &str) -> SecretValue {
    let path = dir.join(name);
    std::fs::write(&path, format!("{content}\n")).expect("write the secret file");
    SecretValue::Reference(SecretReference {
        value_from: SecretSource::File(path.to_string_lossy().into_owned()),
    })
}

fn scratch(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("cutover-notify-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("scratch directory");
    dir
}

fn subscription(
    dir: &std::path::Path,
    service: NotificationService,
    url: &str,
    triggers: &[Trigger],
) -> NotificationSpec {
    NotificationSpec {
        service,
        url: file_reference(dir, &format!("{service}-url"), url),
        secret: None,
        triggers: triggers.to_vec(),
        template: None,
        timeout: cutover_core::Duration::from_millis(300),
    }
}

fn notice(trigger: Trigger) -> Notice {
    Notice {
        release: "shop".into(),
        trigger,
        at: 1_700_000_000_000,
        stable: "v1".into(),
        candidate: "v2".into(),
        weight: 20,
        step: Some(1),
        steps: 3,
        phase: "step".into(),
        reason: "why".into(),
    }
}

fn fast_policy() -> NotifyPolicy {
    NotifyPolicy {
        queue: 64,
        concurrency: 4,
        attempts: 5,
        backoff: Backoff::new(
            cutover_core::Duration::from_millis(20),
            cutover_core::Duration::from_millis(80),
        ),
        deadline: Duration::from_secs(5),
    }
}

fn start(
    defaults: Vec<NotificationSpec>,
    policy: NotifyPolicy,
) -> (Notifier, Arc<ControllerMetrics>) {
    let metrics = Arc::new(ControllerMetrics::default());
    let notifier = Notifier::start(defaults, Clock::Wall, metrics.clone(), policy);
    (notifier, metrics)
}

/// Waits (at most 10 s) until `/metrics` shows `sample`.
async fn wait_for_metric(metrics: &ControllerMetrics, sample: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let out = metrics.render();
        if out.contains(sample) || Instant::now() > deadline {
            return out;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn every_trigger_reaches_the_webhook_once_with_its_body_and_a_valid_signature() {
    let dir = scratch("every-trigger");
    let receiver = Receiver::start(vec![Answer::Status(204)]).await;
    let mut webhook = subscription(
        &dir,
        NotificationService::Webhook,
        &receiver.url,
        &Trigger::ALL,
    );
    webhook.secret = Some(file_reference(&dir, "signing-key", "s3cret"));
    let (notifier, metrics) = start(Vec::new(), fast_policy());
    for trigger in Trigger::ALL {
        notifier.notify(std::slice::from_ref(&webhook), &notice(trigger));
    }
    let got = receiver.wait_for(Trigger::ALL.len()).await;
    // Nothing more arrives: once per event.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let got_after = receiver.received();
    assert_eq!(got.len(), Trigger::ALL.len(), "{got:?}");
    assert_eq!(got_after.len(), Trigger::ALL.len());
    let mut triggers: Vec<String> = Vec::new();
    for request in &got {
        let timestamp: u64 = request
            .header(signature::TIMESTAMP_HEADER)
            .and_then(|t| t.parse().ok())
            .expect("a timestamp header");
        let now = cutover_core::rollout::Timestamp(Clock::Wall.now().0).0 / 1000;
        assert!(now.abs_diff(timestamp) < 60, "a current timestamp");
        let signed = request
            .header(signature::SIGNATURE_HEADER)
            .expect("a signature header");
        assert!(
            signature::verify(b"s3cret", timestamp, &request.body, signed),
            "the signature verifies with the secret file's content (without its line break)"
        );
        assert_eq!(request.header("content-type"), Some("application/json"));
        let body = request.json();
        assert_eq!(body["release"], "shop");
        assert_eq!(body["stable"], "v1");
        assert_eq!(body["candidate"], "v2");
        assert_eq!(body["weight"], 20);
        triggers.push(body["trigger"].as_str().expect("trigger").to_string());
    }
    triggers.sort();
    let mut expected: Vec<String> = Trigger::ALL.iter().map(|t| t.name().to_string()).collect();
    expected.sort();
    assert_eq!(triggers, expected);
    let out = wait_for_metric(
        &metrics,
        "cutover_notifications_total{service=\"webhook\",trigger=\"promoted\",result=\"sent\"} 1",
    )
    .await;
    assert!(
        out.contains(
            "cutover_notifications_total{service=\"webhook\",trigger=\"promoted\",result=\"sent\"} 1"
        ),
        "{out}"
    );
    assert!(notifier.failures("shop").is_empty());
}

#[tokio::test]
async fn only_subscribed_triggers_are_sent_and_defaults_stand_in_for_none() {
    let dir = scratch("subscribed");
    let receiver = Receiver::start(vec![Answer::Status(200)]).await;
    let slack = subscription(
        &dir,
        NotificationService::Slack,
        &receiver.url,
        &[Trigger::RolledBack],
    );
    let (notifier, _metrics) = start(vec![slack], fast_policy());
    notifier.notify(&[], &notice(Trigger::Promoted));
    notifier.notify(&[], &notice(Trigger::RolledBack));
    let got = receiver.wait_for(1).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(receiver.received().len(), 1);
    let body = got[0].json();
    assert_eq!(
        body["text"], "[shop] rolled back: all traffic on v1 (why)",
        "the default text, in Slack's shape"
    );
    assert!(body["blocks"].is_array());
    assert!(got[0].header(signature::SIGNATURE_HEADER).is_none());
}

#[tokio::test]
async fn a_receiver_that_fails_three_times_then_recovers_gets_the_message() {
    let dir = scratch("recovers");
    let receiver = Receiver::start(vec![
        Answer::Status(500),
        Answer::Status(503),
        Answer::Status(429),
        Answer::Status(200),
    ])
    .await;
    let teams = subscription(
        &dir,
        NotificationService::Teams,
        &receiver.url,
        &[Trigger::PausedForPerson],
    );
    let (notifier, metrics) = start(Vec::new(), fast_policy());
    notifier.notify(&[teams], &notice(Trigger::PausedForPerson));
    let sent = "cutover_notifications_total{service=\"teams\",trigger=\"pausedForPerson\",result=\"sent\"} 1";
    let out = wait_for_metric(&metrics, sent).await;
    assert!(out.contains(sent), "{out}");
    let got = receiver.received();
    assert_eq!(got.len(), 4, "three failures, then the delivery");
    assert!(
        got.iter().all(|r| r.body == got[0].body),
        "the same message each time"
    );
    let delivery = got[0].header(DELIVERY_HEADER).expect("a delivery id");
    assert_eq!(delivery.len(), 16, "{delivery}");
    assert!(
        got.iter()
            .all(|r| r.header(DELIVERY_HEADER) == Some(delivery)),
        "one delivery id across the attempts"
    );
    assert_eq!(got[3].json()["type"], "message");
    assert!(!out.contains("result=\"failed\""), "{out}");
    assert!(notifier.failures("shop").is_empty());
}

#[tokio::test]
async fn a_refusal_is_not_retried_and_is_shown_without_the_url() {
    let dir = scratch("refused");
    let receiver = Receiver::start(vec![Answer::Status(404)]).await;
    let discord = subscription(
        &dir,
        NotificationService::Discord,
        &receiver.url,
        &[Trigger::Aborted],
    );
    let (notifier, metrics) = start(Vec::new(), fast_policy());
    notifier.notify(&[discord], &notice(Trigger::Aborted));
    let failed =
        "cutover_notifications_total{service=\"discord\",trigger=\"aborted\",result=\"failed\"} 1";
    let out = wait_for_metric(&metrics, failed).await;
    assert!(out.contains(failed), "{out}");
    assert_eq!(receiver.received().len(), 1, "a 404 is final");
    let failures = notifier.failures("shop");
    assert_eq!(failures.len(), 1);
    assert_eq!(failures[0].service, NotificationService::Discord);
    assert_eq!(failures[0].trigger, Trigger::Aborted);
    assert!(failures[0].error.contains("404"), "{:?}", failures[0]);
    let port = receiver
        .url
        .split(':')
        .nth(2)
        .expect("port")
        .trim_end_matches("/hook");
    assert!(!failures[0].error.contains(port), "{:?}", failures[0]);
}

#[tokio::test]
async fn an_unreachable_receiver_is_shown_without_its_address() {
    let dir = scratch("unreachable");
    // A port that was free a moment ago: nothing listens there.
    let address = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.local_addr().expect("address")
    };
    let url = format!("http://{address}/secret-path?token=abc");
    let chat = subscription(
        &dir,
        NotificationService::GoogleChat,
        &url,
        &[Trigger::Promoted],
    );
    let policy = NotifyPolicy {
        attempts: 2,
        ..fast_policy()
    };
    let (notifier, metrics) = start(Vec::new(), policy);
    notifier.notify(&[chat], &notice(Trigger::Promoted));
    let failed = "cutover_notifications_total{service=\"googleChat\",trigger=\"promoted\",result=\"failed\"} 1";
    let out = wait_for_metric(&metrics, failed).await;
    assert!(out.contains(failed), "{out}");
    let failures = notifier.failures("shop");
    let error = &failures[0].error;
    assert!(error.contains("cannot be reached"), "{error}");
    for part in ["secret-path", "token", "abc", &address.to_string()] {
        assert!(!error.contains(part), "{error} shows {part}");
    }
}

#[tokio::test]
async fn a_receiver_that_never_answers_holds_neither_the_caller_nor_other_deliveries() {
    let dir = scratch("never");
    let silent = Receiver::start(vec![Answer::Never]).await;
    let healthy = Receiver::start(vec![Answer::Status(200)]).await;
    let hung = subscription(
        &dir,
        NotificationService::Webhook,
        &silent.url,
        &[Trigger::StepCompleted],
    );
    let fine = subscription(
        &dir,
        NotificationService::Slack,
        &healthy.url,
        &[Trigger::StepCompleted],
    );
    let policy = NotifyPolicy {
        attempts: 2,
        ..fast_policy()
    };
    let (notifier, metrics) = start(Vec::new(), policy);
    let began = Instant::now();
    for _ in 0..20 {
        notifier.notify(
            &[hung.clone(), fine.clone()],
            &notice(Trigger::StepCompleted),
        );
    }
    let took = began.elapsed();
    assert!(
        took < Duration::from_millis(50),
        "handing 40 notifications over took {took:?}"
    );
    let got = healthy.wait_for(20).await;
    assert_eq!(
        got.len(),
        20,
        "the healthy receiver is not held by the silent one"
    );
    let failed = "cutover_notifications_total{service=\"webhook\",trigger=\"stepCompleted\",result=\"failed\"} 20";
    let out = wait_for_metric(&metrics, failed).await;
    assert!(out.contains(failed), "{out}");
    let failures = notifier.failures("shop");
    let webhook = failures
        .iter()
        .find(|f| f.service == NotificationService::Webhook)
        .expect("the webhook's failure");
    assert!(
        webhook.error.contains("did not answer within 300ms"),
        "{webhook:?}"
    );
}

#[tokio::test]
async fn a_full_queue_drops_and_counts_instead_of_waiting() {
    let dir = scratch("full");
    let silent = Receiver::start(vec![Answer::Never]).await;
    let hung = subscription(
        &dir,
        NotificationService::Webhook,
        &silent.url,
        &[Trigger::StepCompleted],
    );
    let policy = NotifyPolicy {
        queue: 2,
        concurrency: 1,
        ..fast_policy()
    };
    let (notifier, metrics) = start(Vec::new(), policy);
    let began = Instant::now();
    for _ in 0..50 {
        notifier.notify(std::slice::from_ref(&hung), &notice(Trigger::StepCompleted));
    }
    assert!(began.elapsed() < Duration::from_millis(50));
    let out = metrics.render();
    let dropped = out
        .lines()
        .find(|l| l.starts_with("cutover_notifications_total{service=\"webhook\",trigger=\"stepCompleted\",result=\"dropped\"}"))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|n| n.parse::<u64>().ok())
        .unwrap_or(0);
    assert!(
        dropped >= 46,
        "at most the queue and one delivery hold jobs: {out}"
    );
    assert!(
        notifier.failures("shop")[0]
            .error
            .contains("queue was full"),
        "{:?}",
        notifier.failures("shop")
    );
}
