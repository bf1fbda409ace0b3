//! Events the proxy raises for the controller: guardrail trips, route table changes.

use std::collections::VecDeque;
use std::sync::Mutex;

use serde::Serialize;
use tokio::sync::watch;

/// How many events are kept for `GET /events`.
const KEPT: usize = 1_000;

/// Something that happened in the proxy.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase", tag = "kind")]
pub enum EventKind {
    /// A guardrail tripped; the candidate of `release` gets no more traffic.
    GuardrailTripped {
        /// The release.
        release: String,
        /// The candidate version.
        version: String,
        /// The guardrail's name.
        guardrail: String,
        /// The value measured over the window.
        value: f64,
        /// The limit.
        max: f64,
        /// Candidate requests in the window.
        requests: u64,
    },
    /// A new route table was published.
    RoutesChanged {
        /// The table's generation.
        generation: u64,
    },
}

/// A guardrail trip as its receivers act on it: which candidate to cut, and why in words.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GuardrailTrip {
    /// The release.
    pub release: String,
    /// The candidate version cut off.
    pub version: String,
    /// The guardrail's name.
    pub guardrail: String,
    /// What was measured against what limit, on how many requests.
    pub detail: String,
}

impl EventKind {
    /// The trip this event reports, if it is one; the one wording of its detail for the
    /// controller in-process and for a separate proxy reporting to it.
    pub fn into_guardrail_trip(self) -> Option<GuardrailTrip> {
        match self {
            EventKind::GuardrailTripped {
                release,
                version,
                guardrail,
                value,
                max,
                requests,
            } => Some(GuardrailTrip {
                release,
                version,
                guardrail,
                detail: format!("{value:.4} over the limit {max} on {requests} requests"),
            }),
            EventKind::RoutesChanged { .. } => None,
        }
    }
}

/// An event with its sequence number and time.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Event {
    /// Increases by one per event, from 1.
    pub id: u64,
    /// Milliseconds since the Unix epoch.
    pub at_ms: u64,
    /// What happened.
    #[serde(flatten)]
    pub kind: EventKind,
}

/// The last events, for readers that ask with `since`, and a signal of the latest id, so
/// that a reader waits for the next event rather than polling for it.
pub struct EventLog {
    inner: Mutex<(u64, VecDeque<Event>)>,
    latest: watch::Sender<u64>,
}

impl Default for EventLog {
    fn default() -> Self {
        EventLog {
            inner: Mutex::default(),
            latest: watch::Sender::new(0),
        }
    }
}

impl EventLog {
    /// Records an event.
    pub fn push(&self, kind: EventKind) -> u64 {
        let at_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
            .unwrap_or(0);
        let Ok(mut inner) = self.inner.lock() else {
            return 0;
        };
        inner.0 += 1;
        let id = inner.0;
        if inner.1.len() == KEPT {
            inner.1.pop_front();
        }
        inner.1.push_back(Event { id, at_ms, kind });
        // Sent under the lock, so the ids readers see only go up.
        self.latest.send_replace(id);
        id
    }

    /// The id of the latest event, changing with each new one: a reader remembers the
    /// id it got (`borrow_and_update`), awaits `changed()`, then reads [`EventLog::since`]
    /// that id. Events between two wake-ups are not lost, only read together.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.latest.subscribe()
    }

    /// Events with an id above `since`, oldest first.
    pub fn since(&self, since: u64) -> Vec<Event> {
        self.inner
            .lock()
            .map(|inner| inner.1.iter().filter(|e| e.id > since).cloned().collect())
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trip(version: &str) -> EventKind {
        EventKind::GuardrailTripped {
            release: "shop".into(),
            version: version.into(),
            guardrail: "5xx".into(),
            value: 1.0,
            max: 0.5,
            requests: 20,
        }
    }

    #[tokio::test]
    async fn a_subscriber_wakes_on_the_next_event_without_polling() {
        let log = std::sync::Arc::new(EventLog::default());
        log.push(EventKind::RoutesChanged { generation: 1 });
        let mut ids = log.subscribe();
        let seen = *ids.borrow_and_update();
        assert_eq!(seen, 1, "the latest id so far");
        let pusher = {
            let log = log.clone();
            tokio::spawn(async move {
                tokio::task::yield_now().await;
                log.push(trip("v2"));
                log.push(trip("v3"));
            })
        };
        tokio::time::timeout(std::time::Duration::from_secs(5), ids.changed())
            .await
            .expect("woken within 5 s")
            .expect("the log is alive");
        pusher.await.expect("pushed");
        let ids_read: Vec<u64> = log.since(seen).iter().map(|e| e.id).collect();
        assert_eq!(ids_read, [2, 3], "both events, none lost");
    }

    #[tokio::test]
    async fn no_wake_up_without_a_new_event() {
        let log = EventLog::default();
        let mut ids = log.subscribe();
        let _ = ids.borrow_and_update();
        let waited =
            tokio::time::timeout(std::time::Duration::from_millis(100), ids.changed()).await;
        assert!(waited.is_err(), "woken with nothing new");
    }
}
