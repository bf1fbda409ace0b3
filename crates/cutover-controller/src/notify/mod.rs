//! Notifications: the rollout events a person may need (`Rollout::poll_event`) sent to
//! the services a release subscribes them to (`spec.notifications`, or the controller's
//! defaults), without ever holding a rollout back.
//!
//! A driver hands each event to [`Notifier::notify`], which only puts one job per
//! matching subscription on a bounded queue (`try_send`: a full queue drops the job and
//! counts it, it never waits). One worker task takes jobs off the queue and starts each
//! delivery in a task of its own, at most [`NotifyPolicy::concurrency`] at once, so a
//! receiver that never answers holds one delivery, not the queue. A delivery makes up to
//! [`NotifyPolicy::attempts`] attempts, each bounded by the subscription's `timeout`,
//! with the back-off of [`NotifyPolicy::backoff`] between them, all within
//! [`NotifyPolicy::deadline`]; a timeout, a connection failure, a 429 or a 5xx is tried
//! again, another 4xx is the receiver's final word.
//!
//! The URL and the webhook secret are read from their files at each attempt and live
//! only in that attempt: no message, log line, status or metric holds them.
//! Every outcome is counted in `cutover_notifications_total{service,trigger,result}`
//! (`sent`, `failed`, `dropped`), and the last failure per release and service is kept
//! for `cutover status`.

mod message;
pub mod signature;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use cutover_core::Backoff;
use cutover_core::spec::secret::REDACTED;
use cutover_core::spec::{NotificationService, NotificationSpec, Trigger};
use serde::Serialize;
use tokio::sync::{Semaphore, mpsc};

pub use message::{Notice, payload};

use crate::clock::Clock;
use crate::hooks::{HookClient, Posted, post_json};
use crate::metrics::ControllerMetrics;

/// How notifications are delivered. The default suits production; tests shorten the
/// back-off and the deadline.
#[derive(Clone, Debug)]
pub struct NotifyPolicy {
    /// Jobs waiting for delivery at most; more are dropped (and counted).
    pub queue: usize,
    /// Deliveries under way at most.
    pub concurrency: usize,
    /// Attempts per delivery, the first included.
    pub attempts: u32,
    /// The waits between attempts.
    pub backoff: Backoff,
    /// How long a delivery may take in all, attempts and waits together.
    pub deadline: Duration,
}

impl Default for NotifyPolicy {
    fn default() -> Self {
        NotifyPolicy {
            queue: 1024,
            concurrency: 16,
            attempts: 5,
            backoff: Backoff::new(
                cutover_core::Duration::from_secs(1),
                cutover_core::Duration::from_secs(30),
            ),
            deadline: Duration::from_secs(300),
        }
    }
}

/// The last notification a service did not get, for `cutover status`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NotificationFailure {
    /// The service (`webhook`, `slack`, ...).
    pub service: NotificationService,
    /// The event that was not told.
    pub trigger: Trigger,
    /// When it was given up, in milliseconds since the Unix epoch.
    pub at: u64,
    /// Why, without the URL or the secret.
    pub error: String,
}

/// One delivery to do.
struct Job {
    subscription: NotificationSpec,
    notice: Notice,
}

/// What the worker and the deliveries share.
struct Shared {
    clock: Clock,
    client: HookClient,
    metrics: Arc<ControllerMetrics>,
    policy: NotifyPolicy,
    /// The last failure by release, then service.
    failures: Mutex<BTreeMap<String, BTreeMap<NotificationService, NotificationFailure>>>,
}

/// The controller's notification sender. Cheap to clone.
#[derive(Clone)]
pub struct Notifier {
    defaults: Arc<[NotificationSpec]>,
    jobs: mpsc::Sender<Job>,
    shared: Arc<Shared>,
}

impl Notifier {
    /// Starts the worker (inside a tokio runtime). `defaults` are the subscriptions of a
    /// release that names none of its own.
    pub fn start(
        defaults: Vec<NotificationSpec>,
        clock: Clock,
        metrics: Arc<ControllerMetrics>,
        policy: NotifyPolicy,
    ) -> Notifier {
        let (jobs, queue) = mpsc::channel(policy.queue.max(1));
        let shared = Arc::new(Shared {
            clock,
            client: HookClient::default(),
            metrics,
            policy,
            failures: Mutex::new(BTreeMap::new()),
        });
        tokio::spawn(work(shared.clone(), queue));
        Notifier {
            defaults: defaults.into(),
            jobs,
            shared,
        }
    }

    /// Queues `notice` for every subscription of `subscriptions` (the controller's
    /// defaults when empty) that hears its trigger. Never waits: a full queue drops the
    /// job, counts it as `dropped` and keeps it as the service's last failure.
    pub fn notify(&self, subscriptions: &[NotificationSpec], notice: &Notice) {
        let subscriptions = if subscriptions.is_empty() {
            &self.defaults[..]
        } else {
            subscriptions
        };
        for subscription in subscriptions
            .iter()
            .filter(|s| s.triggers.contains(&notice.trigger))
        {
            let job = Job {
                subscription: subscription.clone(),
                notice: notice.clone(),
            };
            if let Err(e) = self.jobs.try_send(job) {
                let job = match e {
                    mpsc::error::TrySendError::Full(job)
                    | mpsc::error::TrySendError::Closed(job) => job,
                };
                tracing::warn!(
                    service = %job.subscription.service,
                    trigger = %job.notice.trigger,
                    "the notification queue is full: notification dropped"
                );
                self.shared
                    .gave_up(&job, "dropped", "the notification queue was full".into());
            }
        }
    }

    /// The last failure of each service `release` is told through, by service.
    pub fn failures(&self, release: &str) -> Vec<NotificationFailure> {
        self.shared
            .failures
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(release)
            .map(|by_service| by_service.values().cloned().collect())
            .unwrap_or_default()
    }

    /// Forgets a deleted release's failures.
    pub fn forget(&self, release: &str) {
        self.shared
            .failures
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(release);
    }
}

impl Shared {
    fn gave_up(&self, job: &Job, result: &'static str, error: String) {
        let service = job.subscription.service;
        self.metrics
            .notification(service.name(), job.notice.trigger.name(), result);
        self.failures
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .entry(job.notice.release.clone())
            .or_default()
            .insert(
                service,
                NotificationFailure {
                    service,
                    trigger: job.notice.trigger,
                    at: self.clock.now().0,
                    error,
                },
            );
    }
}

/// The worker: takes jobs in order and starts each delivery once a slot is free.
async fn work(shared: Arc<Shared>, mut queue: mpsc::Receiver<Job>) {
    let slots = Arc::new(Semaphore::new(shared.policy.concurrency.max(1)));
    while let Some(job) = queue.recv().await {
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let shared = shared.clone();
        tokio::spawn(async move {
            deliver(&shared, job).await;
            drop(slot);
        });
    }
}

/// One delivery, with its attempts; counts and keeps the outcome.
async fn deliver(shared: &Shared, job: Job) {
    let service = job.subscription.service;
    let trigger = job.notice.trigger;
    let text = job.notice.text(job.subscription.template.as_deref());
    let body =
        Bytes::from(serde_json::to_vec(&payload(service, &job.notice, &text)).unwrap_or_default());
    let started = tokio::time::Instant::now();
    let delivery = delivery_id();
    let per_attempt = Duration::from_millis(job.subscription.timeout.as_millis());
    let mut last = String::new();
    for attempt in 0..shared.policy.attempts {
        if attempt > 0 {
            let wait =
                Duration::from_millis(shared.policy.backoff.delay_after(attempt).as_millis());
            if started.elapsed() + wait >= shared.policy.deadline {
                last = format!("{last}; gave up at the delivery deadline");
                break;
            }
            tokio::time::sleep(wait).await;
        }
        let left = shared.policy.deadline.saturating_sub(started.elapsed());
        match attempt_once(shared, &job, &delivery, body.clone(), per_attempt.min(left)).await {
            Ok(()) => {
                shared
                    .metrics
                    .notification(service.name(), trigger.name(), "sent");
                return;
            }
            Err(Failed::Final(e)) => {
                last = e;
                break;
            }
            Err(Failed::Retry(e)) => last = e,
        }
    }
    tracing::warn!(%service, %trigger, error = %last, "notification not delivered");
    shared.gave_up(&job, "failed", last);
}

/// The header every attempt of one delivery carries with the same value: a receiver that
/// handled a message but answered too late gets it again, and can tell it has it already.
pub const DELIVERY_HEADER: &str = "x-cutover-delivery";

/// A fresh delivery id: 16 hex digits from the process's random hasher keys (unique, not
/// secret; the signature, not the id, proves who sent a message).
fn delivery_id() -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u64(DELIVERIES.fetch_add(1, std::sync::atomic::Ordering::Relaxed));
    format!("{:016x}", hasher.finish())
}

/// Deliveries started by this process, mixed into each id.
static DELIVERIES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Why an attempt failed.
enum Failed {
    /// Worth another attempt.
    Retry(String),
    /// The receiver refused: another attempt would not change it.
    Final(String),
}

/// One attempt: the URL (and the secret) read now, the body signed now, one POST.
async fn attempt_once(
    shared: &Shared,
    job: &Job,
    delivery: &str,
    body: Bytes,
    timeout: Duration,
) -> Result<(), Failed> {
    let service = job.subscription.service;
    let url = cutover_metrics::secrets::resolve(&job.subscription.url)
        .map_err(|e| Failed::Retry(format!("cannot read the {service} URL: {e}")))?;
    let mut headers = Vec::new();
    if let Ok(value) = http::HeaderValue::try_from(delivery) {
        headers.push((http::HeaderName::from_static(DELIVERY_HEADER), value));
    }
    if let Some(secret) = &job.subscription.secret {
        let secret = cutover_metrics::secrets::resolve(secret)
            .map_err(|e| Failed::Retry(format!("cannot read the {service} secret: {e}")))?;
        let timestamp = shared.clock.now().0 / 1000;
        let signed = signature::sign(secret.as_bytes(), timestamp, &body);
        for (name, value) in [
            (signature::TIMESTAMP_HEADER, timestamp.to_string()),
            (signature::SIGNATURE_HEADER, signed),
        ] {
            if let Ok(mut value) = http::HeaderValue::try_from(value) {
                value.set_sensitive(true);
                headers.push((http::HeaderName::from_static(name), value));
            }
        }
    }
    let posted = post_json(&shared.client.client, &url, headers, body, timeout)
        .await
        .map_err(|e| Failed::Final(format!("{service}: {e}")))?;
    match posted {
        Posted::Answered(status) if status.is_success() => Ok(()),
        Posted::Answered(status)
            if status.is_server_error() || status == http::StatusCode::TOO_MANY_REQUESTS =>
        {
            Err(Failed::Retry(format!("{service} answered {status}")))
        }
        Posted::Answered(status) => Err(Failed::Final(format!("{service} answered {status}"))),
        Posted::TimedOut => Err(Failed::Retry(format!(
            "{service} did not answer within {}ms",
            timeout.as_millis()
        ))),
        Posted::Unreachable(e) => Err(Failed::Retry(format!(
            "{service} cannot be reached: {}",
            redact(&e, &url)
        ))),
    }
}

/// `message` with the URL, and its host, replaced: a connection error may name either,
/// and a webhook URL is a credential.
fn redact(message: &str, url: &str) -> String {
    let host = url
        .split("://")
        .nth(1)
        .and_then(|rest| rest.split(['/', '?', '#']).next())
        .and_then(|authority| authority.rsplit('@').next())
        .unwrap_or("");
    let mut out = message.replace(url, REDACTED);
    if !host.is_empty() {
        out = out.replace(host, REDACTED);
    }
    out
}

#[cfg(test)]
mod tests;
