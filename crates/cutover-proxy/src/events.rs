//! Events the proxy raises for the controller: guardrail trips, route table changes.

use std::collections::VecDeque;
use std::sync::Mutex;

use serde::Serialize;

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

/// The last events, for readers that poll with `since`.
#[derive(Default)]
pub struct EventLog {
    inner: Mutex<(u64, VecDeque<Event>)>,
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
        id
    }

    /// Events with an id above `since`, oldest first.
    pub fn since(&self, since: u64) -> Vec<Event> {
        self.inner
            .lock()
            .map(|inner| inner.1.iter().filter(|e| e.id > since).cloned().collect())
            .unwrap_or_default()
    }
}
