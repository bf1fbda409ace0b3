//! One request's entry in its version's counters, kept true whatever way the request ends.

use std::time::Instant;

use crate::Shared;
use crate::metrics::{UpstreamError, VersionStats};

/// Where a request ends up in the counters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Counted {
    /// Answered with this status (by the upstream, or by the proxy for it).
    Status(u16),
    /// No answer by the upstream's fault: counts as a 5xx of the version.
    Upstream(UpstreamError),
    /// Failed by the client's fault: `cutover_client_errors_total`, never the version's
    /// requests.
    ClientError,
}

/// One request's entry in its version's counters. Dropped without [`Recording::count`]
/// (the client went away and hyper dropped the request), it takes the request out of the
/// in-flight gauge as a client error, so the gauge stays true.
///
/// It borrows the counters from the route the request holds rather than cloning their
/// `Arc`: that reference count is written by every worker.
pub(super) struct Recording<'a> {
    stats: &'a VersionStats,
    started: Instant,
    open: bool,
}

impl<'a> Recording<'a> {
    /// Counts the request in flight for `stats`' version, its latency timed from `at`
    /// (a clock read the caller made anyway, or `Instant::now()`).
    pub(super) fn start(stats: &'a VersionStats, at: Instant) -> Recording<'a> {
        stats.start();
        Recording {
            stats,
            started: at,
            open: true,
        }
    }

    /// The counters of the version the request is counted for.
    pub(super) fn stats(&self) -> &VersionStats {
        self.stats
    }

    /// Ends the entry as `counted`, now, on the clock of `shared` (one read of the clock
    /// for the latency and the window's second); only the first call counts.
    pub(super) fn count(&mut self, counted: Counted, shared: &Shared) {
        if !std::mem::replace(&mut self.open, false) {
            return;
        }
        let (status, upstream_error) = match counted {
            Counted::Status(status) => (Some(status), None),
            Counted::Upstream(kind) => (None, Some(kind)),
            Counted::ClientError => return self.stats.client_error(),
        };
        let now = Instant::now();
        let latency = now.saturating_duration_since(self.started);
        self.stats
            .finish(status, upstream_error, latency, shared.second_at(now));
    }
}

impl Drop for Recording<'_> {
    fn drop(&mut self) {
        if std::mem::replace(&mut self.open, false) {
            self.stats.client_error();
        }
    }
}
