//! The `Backend` trait: what the controller needs from wherever a release runs.
//!
//! # Contract
//!
//! A backend manages up to three *slots* per release ([`Slot`]): `Stable` (what serves),
//! `Candidate` (the version being rolled out) and, after a promotion until the scale-down
//! delay ends, `Previous`. The controller calls it from the actions of the rollout state
//! machine, and may call any operation again after a crash, a timeout or an error, so:
//!
//! - **Every operation is idempotent.** `deploy` of a candidate that exists finds it (and
//!   completes what a crashed call left undone) instead of creating a second one; `retire`
//!   of a slot that is gone succeeds; `promote` once the roles are swapped succeeds.
//! - **Every operation may be retried** after a [`BackendError`] whose
//!   [`is_retryable`](BackendError::is_retryable) is true. Others mean the release cannot
//!   run here as written (a bad image, a missing service): the rollout rolls back.
//! - **Operations on one release are serialised by the backend**, and a `retire` of the
//!   candidate issued while its `deploy` is under way waits for or cancels the deploy, so
//!   nothing the deploy creates outlives the retirement.
//! - **What a backend must persist** is what it needs to find its slots again from a new
//!   process, possibly on another host: which workload plays which role, and the rollout
//!   state the controller hands to [`store_state`](Backend::store_state), stored next to
//!   the workload (a state directory for the local backend, service labels on Swarm,
//!   annotations on Kubernetes) with optimistic concurrency: a store names the revision it
//!   read and fails with [`BackendError::Conflict`] if another writer got there first.
//!
//! Scaling has no operation of its own: a slot gets its instances when it is
//! deployed, and a scale-down is a `retire` after the delay.
//!
//! The trait is object-safe (futures are boxed) so the controller holds a
//! `Arc<dyn Backend>` chosen at run time.

use std::future::Future;
use std::pin::Pin;

use cutover_core::spec::Release;
use serde::Serialize;

pub use cutover_core::rollout::Slot;

use crate::state_dir::{StateError, Stored};

/// A boxed, sendable future: what the trait's methods return.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// One slot as the proxy needs it: the version's name and where its instances listen.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SlotView {
    /// The version's name (the `version` label on the proxy's metrics).
    pub version: String,
    /// `host:port` of every ready instance.
    pub endpoints: Vec<String>,
}

/// One instance's log file, as a backend that keeps logs reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogFile {
    /// The slot the instance belongs to.
    pub slot: Slot,
    /// The slot's version.
    pub version: String,
    /// The instance's index within its slot (from 0).
    pub instance: usize,
    /// Where its output goes.
    pub path: std::path::PathBuf,
}

/// How a deployment ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Readiness {
    /// Every instance is running and answers its readiness check.
    Ready(SlotView),
    /// The candidate cannot start (the process exits, the image does not exist): retrying
    /// will not help. The backend's own words, with what it logged.
    Failed {
        /// Why.
        reason: String,
    },
}

/// Why a backend operation failed.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    /// The release cannot run on this backend as written; retrying will not help.
    #[error("{0}")]
    Invalid(String),
    /// The backend or the host did not answer or failed for now (a timeout, a 5xx, an
    /// I/O error): retry.
    #[error("{0}")]
    Unavailable(String),
    /// The stored state changed since it was read: read it again.
    #[error("the stored state of '{release}' changed since it was read")]
    Conflict {
        /// The release.
        release: String,
    },
    /// The state store failed.
    #[error(transparent)]
    State(StateError),
}

impl BackendError {
    /// Whether trying the same operation again may succeed.
    pub fn is_retryable(&self) -> bool {
        !matches!(self, BackendError::Invalid(_))
    }
}

impl From<StateError> for BackendError {
    fn from(e: StateError) -> Self {
        match e {
            StateError::Conflict { release, .. } => BackendError::Conflict { release },
            StateError::Name(name) => BackendError::Invalid(StateError::Name(name).to_string()),
            other => BackendError::State(other),
        }
    }
}

/// Where releases run. See the module documentation for the contract.
pub trait Backend: Send + Sync {
    /// The backend's name as the release file spells it (`local`, `swarm`, `kubernetes`).
    fn kind(&self) -> &'static str;

    /// How often the controller asks for the slots' endpoints again while a rollout runs,
    /// so instances that an orchestrator replaces reach the proxy. Ten seconds suits a
    /// backend whose instances change only through its own operations.
    fn endpoint_refresh(&self) -> std::time::Duration {
        std::time::Duration::from_secs(10)
    }

    /// Finds (adopting what serves now, on a first release) or restarts the stable slot
    /// of `release`, and returns it. `version` names it when the backend keeps no name
    /// of its own yet.
    fn stable<'a>(
        &'a self,
        release: &'a Release,
        version: &'a str,
    ) -> BoxFuture<'a, Result<SlotView, BackendError>>;

    /// Creates the candidate slot running `version` (or finds the one a previous call
    /// created) and waits until it is ready or has failed. The caller bounds the wait.
    fn deploy<'a>(
        &'a self,
        release: &'a Release,
        version: &'a str,
    ) -> BoxFuture<'a, Result<Readiness, BackendError>>;

    /// The slot's version and current endpoints; `None` if the slot does not exist.
    fn endpoints<'a>(
        &'a self,
        release: &'a str,
        slot: Slot,
    ) -> BoxFuture<'a, Result<Option<SlotView>, BackendError>>;

    /// After a controller restart, before the state is loaded: takes up supervision of
    /// whatever the release's slots run (the local backend adopts its instances and starts
    /// again those that died), and fences off writes that a dead controller still had in
    /// flight, so that [`load_state`](Backend::load_state) reads the last word and the
    /// next store does not meet a ghost's revision. Does not wait for readiness.
    fn recover<'a>(&'a self, release: &'a str) -> BoxFuture<'a, Result<(), BackendError>>;

    /// Makes the candidate the stable slot and the former stable one `Previous`.
    fn promote<'a>(&'a self, release: &'a str) -> BoxFuture<'a, Result<(), BackendError>>;

    /// Removes a slot's workload entirely.
    fn retire<'a>(
        &'a self,
        release: &'a str,
        slot: Slot,
    ) -> BoxFuture<'a, Result<(), BackendError>>;

    /// The controller's stored state of `release`, with its revision.
    fn load_state<'a>(
        &'a self,
        release: &'a str,
    ) -> BoxFuture<'a, Result<Option<Stored>, BackendError>>;

    /// Stores the controller's state of `release` if the stored revision is still
    /// `expected` (`None`: nothing stored yet); returns the new revision.
    fn store_state<'a>(
        &'a self,
        release: &'a str,
        state: &'a serde_json::Value,
        expected: Option<u64>,
    ) -> BoxFuture<'a, Result<u64, BackendError>>;

    /// Every release with a stored state: what a restarted controller resumes.
    fn releases(&self) -> BoxFuture<'_, Result<Vec<String>, BackendError>>;

    /// Whether [`delete`](Backend::delete) is supported; the controller refuses a delete
    /// up front on a backend without it, before touching anything.
    fn can_delete(&self) -> bool {
        false
    }

    /// Stops every instance of `release` that cutover runs and forgets the release: its
    /// slots, its stored state and what else the backend keeps of it, so that a new
    /// release of the same name starts afresh. Idempotent: a release already gone is
    /// deleted. The controller calls it only once no rollout of the release runs.
    fn delete<'a>(&'a self, release: &'a str) -> BoxFuture<'a, Result<(), BackendError>> {
        Box::pin(async move {
            Err(BackendError::Invalid(format!(
                "the {} backend cannot delete release '{release}'",
                self.kind()
            )))
        })
    }

    /// Whether [`log_files`](Backend::log_files) can answer: the backend writes its
    /// instances' output itself (the local backend), instead of an orchestrator keeping it
    /// (Swarm, Kubernetes: read it there).
    fn keeps_logs(&self) -> bool {
        false
    }

    /// The log files of the instances of `release`'s slots, for a backend that writes
    /// its instances' output itself; `None` for one that does not.
    fn log_files<'a>(
        &'a self,
        release: &'a str,
    ) -> BoxFuture<'a, Result<Option<Vec<LogFile>>, BackendError>> {
        let _ = release;
        Box::pin(async { Ok(None) })
    }
}
