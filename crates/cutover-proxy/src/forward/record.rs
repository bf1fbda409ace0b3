//! One request's entry in its version's counters, kept true whatever way the request ends.

use std::sync::Arc;
use std::time::Instant;

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
pub(super) struct Recording {
    stats: Arc<VersionStats>,
    started: Instant,
    open: bool,
}

impl Recording {
    /// Counts the request in flight for `stats`' version from now.
    pub(super) fn start(stats: Arc<VersionStats>) -> Recording {
        stats.start();
        Recording {
            stats,
            started: Instant::now(),
            open: true,
        }
    }

    /// The counters of the version the request is counted for.
    pub(super) fn stats(&self) -> &Arc<VersionStats> {
        &self.stats
    }

    /// Ends the entry as `counted`, in the window second `second`; only the first call
    /// counts.
    pub(super) fn count(&mut self, counted: Counted, second: u64) {
        if !std::mem::replace(&mut self.open, false) {
            return;
        }
        match counted {
            Counted::Status(status) => {
                self.stats
                    .finish(Some(status), None, self.started.elapsed(), second);
            }
            Counted::Upstream(kind) => {
                self.stats
                    .finish(None, Some(kind), self.started.elapsed(), second);
            }
            Counted::ClientError => self.stats.client_error(),
        }
    }
}

impl Drop for Recording {
    fn drop(&mut self) {
        self.count(Counted::ClientError, 0);
    }
}
