//! The local backend: each slot is a list of addresses the user runs (VMs, bare metal,
//! processes started elsewhere) or a command cutover starts `replicas` times and
//! supervises (a port assigned to each instance, readiness by HTTP probe, logs captured
//! to files, restarted when it exits, stopped on retire).
//!
//! Which slot is which lives in a state directory (`<root>/slots/<release>.json`), the
//! rollout state beside it (`<root>/releases/<release>.json`), and the instances' logs in
//! `<root>/logs/<release>/`. Instances outlive the controller; a new controller adopts
//! them by their tag (see [`process`]).

mod lifecycle;
pub mod probe;
pub mod process;
mod record;

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use cutover_core::spec::{Backend as BackendSpec, LocalSlot, LocalTarget, Release};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::backend::{Backend, BackendError, BoxFuture, LogFile, Readiness, Slot, SlotView};
use crate::locks::ReleaseLocks;
use crate::state_dir::{StateDir, StateError, Stored, create_private_dir, create_private_file};
use lifecycle::find_tagged;
use process::{InstanceSpec, Supervisor};
use record::{SlotRecord, Slots, Workload, directory_id, state_error};

/// A candidate whose instances exited this many times while it was being deployed is
/// failed: it crash-loops.
const CRASH_LOOP_RESTARTS: u32 = 3;

/// How often readiness is probed while deploying.
const PROBE_EVERY: Duration = Duration::from_millis(200);

/// How long the stable slot may take to become ready when cutover starts it.
const STABLE_READY_WITHIN: Duration = Duration::from_secs(60);

/// The running supervisors of one deployment (`set`).
type Running = HashMap<String, Vec<Supervisor>>;

/// The local backend. Cheap to share: hold it in an `Arc`.
pub struct LocalBackend {
    root: PathBuf,
    /// This state directory's identity, the first part of every instance tag, so that two
    /// controllers with releases of the same name on one host never touch each other's
    /// instances.
    id: String,
    releases: Arc<StateDir>,
    slots: Arc<StateDir>,
    running: tokio::sync::Mutex<Running>,
    /// One lock per release: operations on a release run one at a time.
    locks: ReleaseLocks,
    /// Raised by `retire(Candidate)` to cut short a deploy waiting for readiness.
    cancels: Mutex<HashMap<String, watch::Sender<u64>>>,
}

impl LocalBackend {
    /// Opens (creating) the state directory at `root`.
    pub fn open(root: impl Into<PathBuf>) -> Result<LocalBackend, BackendError> {
        let root = root.into();
        let id = directory_id(&root)?;
        Ok(LocalBackend {
            id,
            releases: Arc::new(StateDir::open(root.join("releases"))?),
            slots: Arc::new(StateDir::open(root.join("slots"))?),
            root,
            running: tokio::sync::Mutex::new(HashMap::new()),
            locks: ReleaseLocks::default(),
            cancels: Mutex::new(HashMap::new()),
        })
    }

    /// The state directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The tag prefix of every instance of `release` this directory runs.
    fn tag_prefix(&self, release: &str) -> String {
        format!("{}/{release}/", self.id)
    }

    /// The running instances of `release` started from this state directory, as
    /// `(pid, tag)`.
    pub async fn instances(&self, release: &str) -> Vec<(u32, String)> {
        find_tagged(self.tag_prefix(release)).await
    }

    /// Where instance `n` of deployment `set` of `release` writes its output.
    pub fn log_path(&self, release: &str, set: &str, n: usize) -> PathBuf {
        self.root
            .join("logs")
            .join(release)
            .join(format!("{set}-{n}.log"))
    }

    fn cancel_signal(&self, release: &str) -> watch::Receiver<u64> {
        self.cancels
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .entry(release.to_string())
            .or_insert_with(|| watch::channel(0).0)
            .subscribe()
    }

    fn cancel_deploy(&self, release: &str) {
        if let Some(sender) = self
            .cancels
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(release)
        {
            sender.send_modify(|n| *n += 1);
        }
    }

    /// The log file of every instance of `release`'s command slots.
    fn instance_logs(&self, release: &str) -> Result<Vec<LogFile>, BackendError> {
        let (slots, _) = self.load_slots(release)?;
        let mut files = Vec::new();
        for slot in [Slot::Stable, Slot::Candidate, Slot::Previous] {
            let Some(record) = slots.get(slot) else {
                continue;
            };
            if let Workload::Command { ports, .. } = &record.workload {
                files.extend((0..ports.len()).map(|n| LogFile {
                    slot,
                    version: record.version.clone(),
                    instance: n,
                    path: self.log_path(release, &record.set, n),
                }));
            }
        }
        Ok(files)
    }
}

fn local_target(release: &Release) -> Result<&LocalTarget, BackendError> {
    crate::revision::target_of(release, "the local backend", |spec| match spec {
        BackendSpec::Local(target) => Some(target),
        _ => None,
    })
}

impl Backend for LocalBackend {
    fn kind(&self) -> &'static str {
        "local"
    }

    fn stable<'a>(
        &'a self,
        release: &'a Release,
        version: &'a str,
    ) -> BoxFuture<'a, Result<SlotView, BackendError>> {
        Box::pin(self.stable_slot(release, version))
    }

    fn deploy<'a>(
        &'a self,
        release: &'a Release,
        version: &'a str,
    ) -> BoxFuture<'a, Result<Readiness, BackendError>> {
        Box::pin(self.deploy_candidate(release, version))
    }

    fn endpoints<'a>(
        &'a self,
        release: &'a str,
        slot: Slot,
    ) -> BoxFuture<'a, Result<Option<SlotView>, BackendError>> {
        Box::pin(async move {
            let (slots, _) = self.load_slots(release)?;
            Ok(slots.get(slot).map(SlotRecord::view))
        })
    }

    fn recover<'a>(&'a self, release: &'a str) -> BoxFuture<'a, Result<(), BackendError>> {
        Box::pin(async move {
            let _guard = self.locks.lock(release).await;
            let (slots, _) = self.load_slots(release)?;
            for record in [&slots.stable, &slots.candidate, &slots.previous]
                .into_iter()
                .flatten()
            {
                self.ensure_running(release, record).await;
            }
            // The fence: a writer of this directory that is not dead after all has its
            // next write refused rather than taken for its replay. The directory's lock
            // already keeps a second controller out, so the fence is a safety net: a file
            // that cannot be rewritten (a full disk, a corrupt state that `load_state`
            // quarantines with its own words) does not keep the controller from starting.
            let releases = self.releases.clone();
            let name = release.to_string();
            match tokio::task::spawn_blocking(move || releases.fence(&name)).await {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => tracing::warn!(
                    release,
                    error = %cutover_core::error_chain(&e),
                    "cannot fence the release's state file; going on"
                ),
                Err(e) => tracing::warn!(release, error = %e, "the state fence did not finish"),
            }
            Ok(())
        })
    }

    fn promote<'a>(&'a self, release: &'a str) -> BoxFuture<'a, Result<(), BackendError>> {
        Box::pin(self.promote_candidate(release))
    }

    fn retire<'a>(
        &'a self,
        release: &'a str,
        slot: Slot,
    ) -> BoxFuture<'a, Result<(), BackendError>> {
        Box::pin(self.retire_slot(release, slot))
    }

    fn load_state<'a>(
        &'a self,
        release: &'a str,
    ) -> BoxFuture<'a, Result<Option<Stored>, BackendError>> {
        Box::pin(async move { self.releases.load(release).map_err(state_error) })
    }

    fn store_state<'a>(
        &'a self,
        release: &'a str,
        state: &'a serde_json::Value,
        expected: Option<u64>,
    ) -> BoxFuture<'a, Result<u64, BackendError>> {
        // Two fsyncs: off the async workers, so a thousand rollouts persisting at once do
        // not stall the proxy and the API.
        let releases = self.releases.clone();
        let release = release.to_string();
        let state = state.clone();
        Box::pin(async move {
            tokio::task::spawn_blocking(move || releases.store(&release, &state, expected))
                .await
                .map_err(|e| BackendError::Unavailable(format!("the state writer failed: {e}")))?
                .map_err(state_error)
        })
    }

    fn releases(&self) -> BoxFuture<'_, Result<Vec<String>, BackendError>> {
        Box::pin(async move { Ok(self.releases.releases()?) })
    }

    fn can_delete(&self) -> bool {
        true
    }

    fn delete<'a>(&'a self, release: &'a str) -> BoxFuture<'a, Result<(), BackendError>> {
        Box::pin(self.delete_release(release))
    }

    fn keeps_logs(&self) -> bool {
        true
    }

    fn log_files<'a>(
        &'a self,
        release: &'a str,
    ) -> BoxFuture<'a, Result<Option<Vec<LogFile>>, BackendError>> {
        Box::pin(async move { self.instance_logs(release).map(Some) })
    }
}
