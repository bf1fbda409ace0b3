//! The local backend: each slot is a list of addresses the user runs (VMs, bare metal,
//! processes started elsewhere) or a command cutover starts `replicas` times and
//! supervises (a port assigned to each instance, readiness by HTTP probe, logs captured
//! to files, restarted when it exits, stopped on retire).
//!
//! Which slot is which lives in a state directory (`<root>/slots/<release>.json`), the
//! rollout state beside it (`<root>/releases/<release>.json`), and the instances' logs in
//! `<root>/logs/<release>/`. Instances outlive the controller; a new controller adopts
//! them by their tag (see [`process`]).

mod probe;
pub mod process;

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
use process::{InstanceSpec, Supervisor};

/// A candidate whose instances exited this many times while it was being deployed is
/// failed: it crash-loops.
const CRASH_LOOP_RESTARTS: u32 = 3;

/// How often readiness is probed while deploying.
const PROBE_EVERY: Duration = Duration::from_millis(200);

/// How long the stable slot may take to become ready when cutover starts it.
const STABLE_READY_WITHIN: Duration = Duration::from_secs(60);

/// Which workload plays which role for one release.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Slots {
    stable: Option<SlotRecord>,
    candidate: Option<SlotRecord>,
    previous: Option<SlotRecord>,
}

impl Slots {
    fn get(&self, slot: Slot) -> Option<&SlotRecord> {
        match slot {
            Slot::Stable => self.stable.as_ref(),
            Slot::Candidate => self.candidate.as_ref(),
            Slot::Previous => self.previous.as_ref(),
        }
    }

    fn take(&mut self, slot: Slot) -> Option<SlotRecord> {
        match slot {
            Slot::Stable => self.stable.take(),
            Slot::Candidate => self.candidate.take(),
            Slot::Previous => self.previous.take(),
        }
    }

    fn sets(&self) -> impl Iterator<Item = &str> {
        [&self.stable, &self.candidate, &self.previous]
            .into_iter()
            .flatten()
            .map(|r| r.set.as_str())
    }
}

/// One slot's workload.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct SlotRecord {
    version: String,
    /// Unique per deployment: the middle part of its instances' tags.
    set: String,
    readiness_path: String,
    workload: Workload,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
enum Workload {
    Addresses(Vec<String>),
    Command { argv: Vec<String>, ports: Vec<u16> },
}

impl SlotRecord {
    fn endpoints(&self) -> Vec<String> {
        match &self.workload {
            Workload::Addresses(addresses) => addresses.clone(),
            Workload::Command { ports, .. } => ports
                .iter()
                .map(|port| SocketAddr::from((Ipv4Addr::LOCALHOST, *port)).to_string())
                .collect(),
        }
    }

    fn view(&self) -> SlotView {
        SlotView {
            version: self.version.clone(),
            endpoints: self.endpoints(),
        }
    }
}

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

    fn load_slots(&self, release: &str) -> Result<(Slots, Option<u64>), BackendError> {
        match self.slots.load(release).map_err(state_error)? {
            None => Ok((Slots::default(), None)),
            Some(stored) => {
                let slots = serde_json::from_value(stored.state).map_err(|e| {
                    BackendError::Invalid(format!(
                        "the slot record {} of '{release}' cannot be read: {e}; move it away (cutover then starts the release's slots afresh) or restore it, then restart the controller",
                        self.slots.path_of(release).display()
                    ))
                })?;
                Ok((slots, Some(stored.version)))
            }
        }
    }

    /// Writes the slot record (two fsyncs, off the async workers).
    async fn store_slots(
        &self,
        release: &str,
        slots: &Slots,
        revision: Option<u64>,
    ) -> Result<Option<u64>, BackendError> {
        let value = serde_json::to_value(slots)
            .map_err(|e| BackendError::Unavailable(format!("cannot encode slots: {e}")))?;
        let store = self.slots.clone();
        let release = release.to_string();
        let stored = tokio::task::spawn_blocking(move || store.store(&release, &value, revision))
            .await
            .map_err(|e| BackendError::Unavailable(format!("the state writer failed: {e}")))?
            .map_err(state_error)?;
        Ok(Some(stored))
    }

    /// Makes a record for a new deployment of `definition`; command slots get their ports.
    fn new_record(
        release: &str,
        version: &str,
        definition: &LocalSlot,
        replicas: u32,
        readiness_path: &str,
    ) -> Result<SlotRecord, BackendError> {
        let workload = match definition {
            LocalSlot::Addresses(addresses) => {
                if addresses.is_empty() {
                    return Err(BackendError::Invalid(format!(
                        "release '{release}': a local slot needs at least one address"
                    )));
                }
                Workload::Addresses(addresses.clone())
            }
            LocalSlot::Command(argv) => {
                if argv.is_empty() {
                    return Err(BackendError::Invalid(format!(
                        "release '{release}': a local command slot needs a program"
                    )));
                }
                let ports = (0..replicas.max(1))
                    .map(|_| free_port())
                    .collect::<Result<_, _>>()?;
                Workload::Command {
                    argv: argv.clone(),
                    ports,
                }
            }
        };
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let set = format!("{}-{:x}", sanitize(version), nanos & 0xffff_ffff_ffff);
        Ok(SlotRecord {
            version: version.to_string(),
            set,
            readiness_path: readiness_path.to_string(),
            workload,
        })
    }

    /// Starts (or adopts, after a restart) the instances of a command slot that are not
    /// running under a supervisor of this process.
    async fn ensure_running(&self, release: &str, record: &SlotRecord) {
        let Workload::Command { argv, ports } = &record.workload else {
            return;
        };
        if self.running.lock().await.contains_key(&record.set) {
            return;
        }
        let prefix = format!("{}{}/", self.tag_prefix(release), record.set);
        let found = find_tagged(prefix.clone()).await;
        let mut running = self.running.lock().await;
        if running.contains_key(&record.set) {
            return;
        }
        let supervisors = ports
            .iter()
            .enumerate()
            .map(|(n, port)| {
                let tag = format!("{prefix}{n}");
                let adopt = found.iter().find(|(_, t)| *t == tag).map(|(pid, _)| *pid);
                if let Some(pid) = adopt {
                    tracing::info!(%tag, pid, "adopted a running instance");
                }
                let spec = InstanceSpec {
                    argv: argv
                        .iter()
                        .map(|a| a.replace("{{port}}", &port.to_string()))
                        .collect(),
                    port: *port,
                    tag,
                    log: self.log_path(release, &record.set, n),
                };
                Supervisor::start(spec, adopt)
            })
            .collect();
        running.insert(record.set.clone(), supervisors);
    }

    /// Stops every instance of `set`, supervised here or left by an earlier controller.
    async fn stop_set(&self, release: &str, set: &str) {
        let supervisors = self.running.lock().await.remove(set);
        // In a task of its own: a caller cancelled half-way (an aborted deploy) must not
        // drop supervisors that were taken out but not yet stopped.
        let stopping = tokio::spawn(async move {
            for supervisor in supervisors.into_iter().flatten() {
                supervisor.stop().await;
            }
        });
        let _ = stopping.await;
        for (pid, tag) in find_tagged(format!("{}{set}/", self.tag_prefix(release))).await {
            process::terminate(pid, &tag).await;
        }
    }

    /// Stops instances of `release` that no slot claims (left by a deploy whose record was
    /// replaced before its instances were stopped). Only releases with a command slot can
    /// have any, so address-only releases skip the scan of `/proc`.
    async fn sweep_strays(&self, release: &str, slots: &Slots, had_commands: bool) {
        let commands = [&slots.stable, &slots.candidate, &slots.previous]
            .into_iter()
            .flatten()
            .any(|r| matches!(r.workload, Workload::Command { .. }));
        if !commands && !had_commands {
            return;
        }
        let claimed: Vec<&str> = slots.sets().collect();
        for (pid, tag) in find_tagged(self.tag_prefix(release)).await {
            let set = tag.split('/').nth(2).unwrap_or_default();
            if !claimed.contains(&set) {
                tracing::info!(%tag, pid, "stopping an instance no slot claims");
                process::terminate(pid, &tag).await;
            }
        }
    }

    /// Why the slot's instances cannot run, if they cannot: a program that does not
    /// start, or one that keeps exiting.
    async fn failure(&self, record: &SlotRecord, release: &str) -> Option<String> {
        let health: Vec<_> = {
            let running = self.running.lock().await;
            running
                .get(&record.set)?
                .iter()
                .map(Supervisor::health)
                .collect()
        };
        health.into_iter().enumerate().find_map(|(n, health)| {
            if let Some(fatal) = health.fatal {
                return Some(fatal);
            }
            (health.restarts >= CRASH_LOOP_RESTARTS).then(|| {
                let tail = process::log_tail(&self.log_path(release, &record.set, n), 10);
                format!(
                    "instance {n} exited {} times (last: {}); its log ends:\n{tail}",
                    health.restarts,
                    health.last_exit.unwrap_or_default()
                )
            })
        })
    }

    /// Probes every endpoint until all answer (`Ready`), the slot fails, `cancel` fires,
    /// or `within` passes.
    async fn wait_ready(
        &self,
        release: &str,
        record: &SlotRecord,
        within: Option<Duration>,
        mut cancel: Option<watch::Receiver<u64>>,
    ) -> Result<Readiness, BackendError> {
        let started = tokio::time::Instant::now();
        loop {
            if let Some(reason) = self.failure(record, release).await {
                return Ok(Readiness::Failed { reason });
            }
            let mut problem = None;
            for endpoint in record.endpoints() {
                if let Err(e) = probe::probe(&endpoint, &record.readiness_path).await {
                    problem = Some(format!("{endpoint}{}: {e}", record.readiness_path));
                    break;
                }
            }
            let Some(last_problem) = problem else {
                return Ok(Readiness::Ready(record.view()));
            };
            if within.is_some_and(|w| started.elapsed() > w) {
                return Err(BackendError::Unavailable(format!(
                    "not ready within {}s: {last_problem}",
                    within.map_or(0, |w| w.as_secs())
                )));
            }
            let sleep = tokio::time::sleep(PROBE_EVERY);
            match cancel.as_mut() {
                Some(cancel) => tokio::select! {
                    _ = sleep => {}
                    _ = cancel.changed() => {
                        return Err(BackendError::Unavailable(
                            "the deployment was cancelled by a retirement".to_string(),
                        ));
                    }
                },
                None => sleep.await,
            }
        }
    }

    async fn stable_slot(
        &self,
        release: &Release,
        version: &str,
    ) -> Result<SlotView, BackendError> {
        let name = release.metadata.name.as_str();
        let target = local_target(release)?;
        let _guard = self.locks.lock(name).await;
        let (mut slots, mut revision) = self.load_slots(name)?;
        let created = slots.stable.is_none();
        let record = match &slots.stable {
            Some(record) => record.clone(),
            None => {
                let record = Self::new_record(
                    name,
                    version,
                    &target.stable,
                    release.spec.replicas.unwrap_or(1),
                    &target.readiness_path,
                )?;
                slots.stable = Some(record.clone());
                revision = self.store_slots(name, &slots, revision).await?;
                record
            }
        };
        let had_commands = matches!(target.candidate, LocalSlot::Command(_));
        self.sweep_strays(name, &slots, had_commands).await;
        self.ensure_running(name, &record).await;
        if matches!(record.workload, Workload::Addresses(_)) {
            // Instances cutover does not run are the user's to start: report, but do
            // not hold the release up on a slot that serves already.
            return Ok(record.view());
        }
        let failed = match self
            .wait_ready(name, &record, Some(STABLE_READY_WITHIN), None)
            .await
        {
            Ok(Readiness::Ready(view)) => return Ok(view),
            Ok(Readiness::Failed { reason }) => {
                BackendError::Invalid(format!("the stable slot of '{name}' cannot run: {reason}"))
            }
            Err(e) => e,
        };
        if created {
            // Nothing serves yet: forget the slot, so a corrected release file is read
            // again instead of this one retried for ever.
            self.stop_set(name, &record.set).await;
            slots.stable = None;
            self.store_slots(name, &slots, revision).await?;
        }
        Err(failed)
    }

    async fn deploy_candidate(
        &self,
        release: &Release,
        version: &str,
    ) -> Result<Readiness, BackendError> {
        let name = release.metadata.name.as_str();
        let target = local_target(release)?;
        let cancel = self.cancel_signal(name);
        let record = {
            let _guard = self.locks.lock(name).await;
            let (mut slots, revision) = self.load_slots(name)?;
            let record = match slots.candidate.clone() {
                Some(record) if record.version == version => record,
                stale => {
                    if let Some(stale) = stale {
                        self.stop_set(name, &stale.set).await;
                    }
                    let record = Self::new_record(
                        name,
                        version,
                        &target.candidate,
                        release.spec.replicas.unwrap_or(1),
                        &target.readiness_path,
                    )?;
                    // Recorded before anything starts, so a controller killed in between
                    // finds (and adopts or stops) what it started.
                    slots.candidate = Some(record.clone());
                    self.store_slots(name, &slots, revision).await?;
                    record
                }
            };
            self.ensure_running(name, &record).await;
            record
        };
        let readiness = self.wait_ready(name, &record, None, Some(cancel)).await?;
        if let Readiness::Failed { reason } = &readiness {
            tracing::warn!(release = name, %reason, "the candidate cannot run");
        }
        Ok(readiness)
    }

    async fn promote_candidate(&self, release: &str) -> Result<(), BackendError> {
        let _guard = self.locks.lock(release).await;
        let (mut slots, revision) = self.load_slots(release)?;
        let Some(candidate) = slots.candidate.take() else {
            // Promoted already.
            return Ok(());
        };
        if let Some(previous) = slots.previous.take() {
            // A scale-down that never finished: that version is two releases old.
            self.stop_set(release, &previous.set).await;
        }
        slots.previous = slots.stable.take();
        slots.stable = Some(candidate);
        self.store_slots(release, &slots, revision).await?;
        Ok(())
    }

    /// Stops every instance of `release` (its slots' and any left unclaimed), then
    /// removes its slot record, its stored state and its logs.
    async fn delete_release(&self, release: &str) -> Result<(), BackendError> {
        self.cancel_deploy(release);
        let _guard = self.locks.lock(release).await;
        // An unreadable slot record must not keep a delete from stopping what runs: the
        // tag scan below finds every instance of the release anyway.
        if let Ok((slots, _)) = self.load_slots(release) {
            for record in [&slots.stable, &slots.candidate, &slots.previous]
                .into_iter()
                .flatten()
            {
                self.stop_set(release, &record.set).await;
            }
        }
        for (pid, tag) in find_tagged(self.tag_prefix(release)).await {
            tracing::info!(%tag, pid, "stopping an instance of a deleted release");
            process::terminate(pid, &tag).await;
        }
        let (slots, releases) = (self.slots.clone(), self.releases.clone());
        let name = release.to_string();
        tokio::task::spawn_blocking(move || {
            slots.remove(&name)?;
            releases.remove(&name)
        })
        .await
        .map_err(|e| BackendError::Unavailable(format!("the state writer failed: {e}")))??;
        let logs = self.root.join("logs").join(release);
        match std::fs::remove_dir_all(&logs) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(BackendError::Unavailable(format!(
                    "cannot remove the logs {}: {e}",
                    logs.display()
                )));
            }
        }
        self.cancels
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(release);
        Ok(())
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

    async fn retire_slot(&self, release: &str, slot: Slot) -> Result<(), BackendError> {
        if slot == Slot::Candidate {
            self.cancel_deploy(release);
        }
        let _guard = self.locks.lock(release).await;
        let (mut slots, revision) = self.load_slots(release)?;
        let mut had_commands = false;
        if let Some(record) = slots.take(slot) {
            had_commands = matches!(record.workload, Workload::Command { .. });
            if had_commands {
                self.stop_set(release, &record.set).await;
            }
            self.store_slots(release, &slots, revision).await?;
        }
        self.sweep_strays(release, &slots, had_commands).await;
        Ok(())
    }
}

/// [`process::find_tagged`] off the async workers: it reads every process's environment.
async fn find_tagged(prefix: String) -> Vec<(u32, String)> {
    tokio::task::spawn_blocking(move || process::find_tagged(&prefix))
        .await
        .unwrap_or_default()
}

/// This state directory's identity: a random id written once to `<root>/id`.
///
/// A missing file gets a new id, written atomically; any other read error is an error:
/// a new identity would orphan every instance the directory's old id tagged.
fn directory_id(root: &Path) -> Result<String, BackendError> {
    let path = root.join("id");
    create_private_dir(root)
        .map_err(|e| BackendError::Unavailable(format!("cannot create {}: {e}", root.display())))?;
    for _ in 0..2 {
        match std::fs::read_to_string(&path) {
            Ok(id) if !id.trim().is_empty() => return Ok(id.trim().to_string()),
            Ok(_) => {
                return Err(BackendError::Invalid(format!(
                    "the state directory's id file {} is empty; restore it, or remove it if no instance of this directory runs any more",
                    path.display()
                )));
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(BackendError::Unavailable(format!(
                    "cannot read the state directory's id file {}: {e}",
                    path.display()
                )));
            }
        }
        let mut bytes = [0u8; 6];
        std::fs::File::open("/dev/urandom")
            .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut bytes))
            .map_err(|e| BackendError::Unavailable(format!("cannot read random bytes: {e}")))?;
        let id: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        // `false`: another process created it in between; read that one.
        if create_private_file(&path, format!("{id}\n").as_bytes()).map_err(|e| {
            BackendError::Unavailable(format!("cannot write {}: {e}", path.display()))
        })? {
            return Ok(id);
        }
    }
    Err(BackendError::Unavailable(format!(
        "the id file {} keeps changing",
        path.display()
    )))
}

/// A state store error as the controller should see it: a corrupt file is `Invalid`
/// (retrying will not mend it; the controller quarantines that release), naming the file
/// and what to do.
fn state_error(e: StateError) -> BackendError {
    match e {
        corrupt @ (StateError::Corrupt { .. } | StateError::TooLarge { .. }) => {
            BackendError::Invalid(cutover_core::error_chain(&corrupt))
        }
        other => other.into(),
    }
}

fn local_target(release: &Release) -> Result<&LocalTarget, BackendError> {
    crate::revision::target_of(release, "the local backend", |spec| match spec {
        BackendSpec::Local(target) => Some(target),
        _ => None,
    })
}

fn free_port() -> Result<u16, BackendError> {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| BackendError::Unavailable(format!("cannot find a free port: {e}")))
}

/// Keeps a version name usable in tags and file names.
fn sanitize(version: &str) -> String {
    version
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '.' {
                c
            } else {
                '_'
            }
        })
        .take(40)
        .collect()
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
            // next write refused rather than taken for its replay.
            let releases = self.releases.clone();
            let name = release.to_string();
            tokio::task::spawn_blocking(move || releases.fence(&name))
                .await
                .map_err(|e| BackendError::Unavailable(format!("the state writer failed: {e}")))?
                .map_err(state_error)?;
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

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let path =
            std::env::temp_dir().join(format!("cutover-local-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        path
    }

    #[test]
    fn an_unreadable_id_file_is_an_error_not_a_new_identity() {
        let root = scratch("id-unreadable");
        // A directory where the id file should be: reading it fails with an error other
        // than "not found".
        std::fs::create_dir_all(root.join("id")).expect("made");
        let err = directory_id(&root).expect_err("an unreadable id is an error");
        assert!(
            err.to_string()
                .contains("cannot read the state directory's id file"),
            "{err}"
        );
        assert!(root.join("id").is_dir(), "nothing replaced it");
        let _ = std::fs::remove_dir_all(&root);
    }

    #[test]
    fn the_id_is_written_once_privately_and_read_back() {
        let root = scratch("id-once");
        let id = directory_id(&root).expect("a new id");
        assert_eq!(directory_id(&root).expect("read back"), id);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode =
                |p: &Path| std::fs::metadata(p).expect("exists").permissions().mode() & 0o777;
            assert_eq!(mode(&root.join("id")), 0o600);
            assert_eq!(mode(&root), 0o700);
        }
        std::fs::write(root.join("id"), " \n").expect("emptied");
        assert!(matches!(directory_id(&root), Err(BackendError::Invalid(_))));
        let _ = std::fs::remove_dir_all(&root);
    }
}
