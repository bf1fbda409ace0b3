//! The controller: runs the rollout state machine of every release, carries out its
//! actions through a backend, the proxy's route table, hooks and metric providers,
//! persists every transition next to the workload, and resumes every rollout after a
//! restart.
//!
//! - [`Controller`]: the releases and their drivers; what the HTTP API calls.
//! - `driver`: one task per release, owning its `Rollout`.
//! - [`routes`]: the route table, published to the embedded proxy or pulled by others.
//! - [`analysis`], [`hooks`]: the I/O behind `StartAnalysis` and `RunHook`.
//! - [`api`]: the HTTP API (JSON, bearer token on writes, server-sent events).
//! - [`metrics`]: the controller's own Prometheus metrics.

pub mod analysis;
pub mod api;
mod clock;
mod driver;
pub mod hooks;
pub mod metrics;
pub mod routes;
pub mod status;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cutover_backend::{Backend, BackendError, Slot, SlotView};
use cutover_core::Diagnostic;
use cutover_core::load::{self, Format, Source};
use cutover_core::plan::Plan;
use cutover_core::rollout::{Command, CommandRejected, HistoryEntry, Rollout};
use cutover_core::spec::{Backend as BackendSpec, LocalSlot, Release};
use cutover_metrics::prometheus::PrometheusClient;
use cutover_metrics::web::WebClient;
use cutover_proxy::Proxy;
use cutover_proxy::events::EventKind;
use serde::Serialize;
use tokio::sync::oneshot;

pub use analysis::Providers;
pub use status::{ReleaseRecord, RolloutStatus, RolloutSummary};

use driver::{Handle, Input, Start};
use metrics::ControllerMetrics;
use routes::{PublishedTable, RouteTable};

/// How often the embedded proxy's events (guardrail trips) are read.
const EVENT_POLL: Duration = Duration::from_millis(50);

/// What the controller is built from.
pub struct ControllerOptions {
    /// Where releases run.
    pub backend: Arc<dyn Backend>,
    /// The proxy in this process; `None` when proxies pull the route table.
    pub proxy: Option<Arc<Proxy>>,
    /// The Prometheus address for metrics that name none.
    pub prometheus: Option<String>,
}

/// Why the controller refused a request. Each maps to an HTTP status in the API.
#[derive(Debug, thiserror::Error)]
pub enum ControllerError {
    /// No release of that name.
    #[error("no release named '{0}'; `cutover list` shows the releases")]
    NotFound(String),
    /// The release file is invalid.
    #[error("the release is invalid ({} problems)", .0.len())]
    Invalid(Vec<Diagnostic>),
    /// The request conflicts with the release's state.
    #[error("{0}")]
    Conflict(String),
    /// The command does not fit the rollout's phase.
    #[error(transparent)]
    Rejected(#[from] CommandRejected),
    /// The release's stored state cannot be read: it is left alone until an operator
    /// mends or removes it (the reason says which file and how).
    #[error("release '{name}' is quarantined: {reason}")]
    Quarantined {
        /// The release.
        name: String,
        /// What cannot be read, and what to do.
        reason: String,
    },
    /// The backend failed.
    #[error("the {backend} backend failed: {source}")]
    Backend {
        /// Which backend.
        backend: &'static str,
        /// Why.
        #[source]
        source: BackendError,
    },
}

/// The controller's shared state.
pub struct Inner {
    backend: Arc<dyn Backend>,
    proxy: Option<Arc<Proxy>>,
    routes: Arc<RouteTable>,
    providers: Providers,
    hooks: hooks::HookClient,
    metrics: ControllerMetrics,
    drivers: Mutex<BTreeMap<String, Handle>>,
    /// Releases whose stored state could not be read at the start, with the reason: left
    /// alone (no driver) so that every other release resumes.
    quarantined: Mutex<BTreeMap<String, String>>,
    /// Submissions of one release run one at a time, so two cannot race.
    submitting: Mutex<BTreeMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

/// The controller. Cheap to clone.
#[derive(Clone)]
pub struct Controller {
    inner: Arc<Inner>,
}

/// What an operator is told to do about a stored state that cannot be read.
const STORE_HINT: &str = "move the state away (the release then starts afresh at its next submission) or restore it from a backup, then restart the controller";

/// A release left alone because its stored state cannot be used.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Quarantined {
    /// The release.
    pub name: String,
    /// Which file or record cannot be read, why, and what to do.
    pub reason: String,
}

/// A release's history: this rollout's events and earlier rollouts.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct History {
    /// The release.
    pub name: String,
    /// The current (or last) rollout's events, oldest first.
    pub events: Vec<HistoryEntry>,
    /// Earlier rollouts, oldest first.
    pub earlier: Vec<RolloutSummary>,
}

impl Controller {
    /// Starts the controller: resumes every stored release, then watches the proxy's
    /// guardrail events.
    pub async fn start(options: ControllerOptions) -> Result<Controller, ControllerError> {
        let routes = RouteTable::start(options.proxy.clone());
        let windows = options
            .proxy
            .clone()
            .map(|p| p as Arc<dyn cutover_metrics::WindowSource>);
        let inner = Arc::new(Inner {
            backend: options.backend,
            proxy: options.proxy,
            routes,
            providers: Providers {
                prometheus: PrometheusClient::new(options.prometheus),
                web: WebClient::default(),
                windows,
            },
            hooks: hooks::HookClient::default(),
            metrics: ControllerMetrics::default(),
            drivers: Mutex::new(BTreeMap::new()),
            quarantined: Mutex::new(BTreeMap::new()),
            submitting: Mutex::new(BTreeMap::new()),
        });
        let controller = Controller { inner };
        controller.resume_all().await?;
        controller.inner.routes.open();
        if let Some(proxy) = controller.inner.proxy.clone() {
            tokio::spawn(watch_events(controller.inner.clone(), proxy));
        }
        Ok(controller)
    }

    fn backend_error(&self, source: BackendError) -> ControllerError {
        ControllerError::Backend {
            backend: self.inner.backend.kind(),
            source,
        }
    }

    fn drivers(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Handle>> {
        self.inner
            .drivers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    async fn resume_all(&self) -> Result<(), ControllerError> {
        /// Tries at `Backend::recover` before the start fails.
        const RECOVER_ATTEMPTS: u32 = 5;
        let backend = self.inner.backend.clone();
        let names = backend
            .releases()
            .await
            .map_err(|e| self.backend_error(e))?;
        // First, every release: the instances outlived the old controller, and are
        // supervised again; and a backend whose store is remote fences off writes the old
        // controller still had in flight, so the state read next is the last one. All of
        // them before any driver starts, so a start that fails here has done nothing.
        let mut recovered = Vec::new();
        'releases: for name in names {
            let mut delay = std::time::Duration::from_millis(250);
            let mut attempt = 1;
            while let Err(e) = backend.recover(&name).await {
                if !e.is_retryable() {
                    self.quarantine(&name, format!("cannot take the release over: {e}"));
                    continue 'releases;
                }
                if attempt == RECOVER_ATTEMPTS {
                    // Resuming without it could let the old controller's last write land
                    // after this one read the state: better not to start.
                    tracing::error!(release = %name, error = %e, "cannot take the release over");
                    return Err(self.backend_error(e));
                }
                tracing::warn!(release = %name, error = %e, "cannot take the release over yet; retrying");
                tokio::time::sleep(delay).await;
                delay *= 2;
                attempt += 1;
            }
            recovered.push(name);
        }
        for name in recovered {
            let stored = match backend.load_state(&name).await {
                Ok(Some(stored)) => stored,
                Ok(None) => continue,
                // One unreadable release must not keep the others from resuming.
                Err(BackendError::Invalid(message)) => {
                    self.quarantine(&name, format!("cannot read the stored release: {message}"));
                    continue;
                }
                Err(e) => return Err(self.backend_error(e)),
            };
            let record: ReleaseRecord = match serde_json::from_value(stored.state) {
                Ok(record) => record,
                Err(e) => {
                    self.quarantine(
                        &name,
                        format!("the stored release is not a release record ({e}); {STORE_HINT}"),
                    );
                    continue;
                }
            };
            let mut rollout = match Rollout::from_json(record.rollout.clone()) {
                Ok(rollout) => rollout,
                Err(e) => {
                    self.quarantine(
                        &name,
                        format!("the stored rollout cannot be read ({e}); {STORE_HINT}"),
                    );
                    continue;
                }
            };
            if !rollout.is_done() {
                rollout.resume(clock::now());
                tracing::info!(release = %name, phase = %rollout.phase().describe(), "resuming");
            }
            // Endpoints that cannot be read now start empty: the driver's refresh reads
            // them again, and one release's trouble does not keep the others from resuming.
            let slot = |slot: Slot| {
                let backend = backend.clone();
                let name = name.clone();
                async move {
                    backend.endpoints(&name, slot).await.unwrap_or_else(|e| {
                        tracing::warn!(release = %name, ?slot, error = %e, "cannot read the endpoints yet");
                        None
                    })
                }
            };
            let stable = slot(Slot::Stable).await.unwrap_or_else(|| SlotView {
                version: record.stable_version.clone(),
                endpoints: Vec::new(),
            });
            let candidate = slot(Slot::Candidate).await;
            let handle = driver::spawn(
                self.inner.clone(),
                Start {
                    record,
                    rollout,
                    revision: Some(stored.version),
                    stable,
                    candidate,
                },
            );
            self.drivers().insert(name, handle);
        }
        Ok(())
    }

    /// Leaves `release` alone: no driver, a `quarantined` entry in the API's list and
    /// an error log line saying why and what to do.
    fn quarantine(&self, release: &str, reason: String) {
        tracing::error!(release = %release, reason = %reason, "release quarantined: its stored state cannot be used; every other release resumes");
        self.inner
            .quarantined
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(release.to_string(), reason);
    }

    /// The quarantine reason of `release`, if it is quarantined.
    fn quarantine_reason(&self, release: &str) -> Option<String> {
        self.inner
            .quarantined
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(release)
            .cloned()
    }

    /// The releases left alone at the start because their stored state cannot be used,
    /// with the reason (which file, and what to do).
    pub fn quarantined(&self) -> Vec<Quarantined> {
        self.inner
            .quarantined
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
            .map(|(name, reason)| Quarantined {
                name: name.clone(),
                reason: reason.clone(),
            })
            .collect()
    }

    /// Loads a release file's text (YAML, TOML, or the JSON `cutover run` sends) as the
    /// API receives it: with every check, but no `${VAR}` interpolation and no `CUTOVER_`
    /// overrides, which happen where the file is read (`cutover run`, with CI's
    /// environment), so a `$` that survived them stays a `$`.
    pub fn parse(name: &str, text: &str) -> Result<Release, ControllerError> {
        let format = Format::from_path(std::path::Path::new(name));
        let source = Source { name, text, format };
        match load::load_release_resolved(source) {
            Ok((release, _warnings)) => Ok(release),
            Err(diagnostics) => Err(ControllerError::Invalid(diagnostics)),
        }
    }

    /// Starts a rollout of `release`. Refused while another rollout of the same release
    /// is under way.
    pub async fn submit(&self, release: Release) -> Result<Arc<RolloutStatus>, ControllerError> {
        let name = release.metadata.name.clone();
        let lock = self
            .inner
            .submitting
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .entry(name.clone())
            .or_default()
            .clone();
        let _one_at_a_time = lock.lock().await;
        self.refuse_if_under_way(&name)?;
        // The finished rollout's driver holds still while this one starts, so that a
        // command (a `retry`) cannot move it in between; it acts again if this fails.
        let old = self.drivers().get(&name).map(|h| h.inputs.clone());
        if let Some(inputs) = &old {
            let (stopped, frozen) = oneshot::channel();
            let _ = inputs.send(Input::Freeze(stopped));
            let _ = frozen.await;
        }
        let result = self.start_rollout(release).await;
        if result.is_err()
            && let Some(inputs) = old
        {
            let _ = inputs.send(Input::Thaw);
        }
        result
    }

    /// Refuses a new rollout while the release's current one is under way.
    fn refuse_if_under_way(&self, name: &str) -> Result<(), ControllerError> {
        if let Some(handle) = self.drivers().get(name) {
            let status = handle.status.borrow().clone();
            if !status.done {
                return Err(ControllerError::Conflict(format!(
                    "release '{name}' has a rollout under way ({}); wait for it, or `cutover abort {name}` first",
                    status.description
                )));
            }
        }
        Ok(())
    }

    async fn start_rollout(&self, release: Release) -> Result<Arc<RolloutStatus>, ControllerError> {
        let name = release.metadata.name.clone();
        // Checked again: a `retry` may have restarted it before it was held still.
        self.refuse_if_under_way(&name)?;
        if release.spec.backend.name() != self.inner.backend.kind() {
            return Err(ControllerError::Conflict(format!(
                "release '{name}' is for the {} backend, and this controller runs the {} one",
                release.spec.backend.name(),
                self.inner.backend.kind()
            )));
        }
        let plan = Plan::from_release(&release).map_err(|e| {
            ControllerError::Conflict(format!("release '{name}' has no usable plan: {e}"))
        })?;
        let backend = self.inner.backend.clone();
        let previous = match backend.load_state(&name).await {
            Ok(previous) => previous,
            Err(BackendError::Invalid(message)) if self.quarantine_reason(&name).is_some() => {
                return Err(ControllerError::Quarantined {
                    name,
                    reason: format!("cannot read the stored release: {message}"),
                });
            }
            Err(e) => return Err(self.backend_error(e)),
        };
        let (previous_record, revision) = match previous {
            Some(stored) => (
                serde_json::from_value::<ReleaseRecord>(stored.state).ok(),
                Some(stored.version),
            ),
            None => (None, None),
        };
        let hint = stable_version_hint(&release, previous_record.as_ref());
        let stable = backend
            .stable(&release, &hint)
            .await
            .map_err(|e| self.backend_error(e))?;
        let candidate_version = candidate_version(&release);
        if candidate_version == stable.version {
            return Err(ControllerError::Conflict(format!(
                "the new version is named '{candidate_version}', which is the version serving now; \
                 give the release a new spec.version (or image)"
            )));
        }
        let mut earlier = Vec::new();
        if let Some(previous) = previous_record
            && let Ok(rollout) = Rollout::from_json(previous.rollout.clone())
        {
            earlier = previous.earlier.clone();
            earlier.push(status::summary(&previous, &rollout));
            let excess = earlier.len().saturating_sub(status::EARLIER_LIMIT);
            earlier.drain(..excess);
        }
        let rollout = Rollout::new(plan, clock::now());
        let record = ReleaseRecord {
            release,
            stable_version: stable.version.clone(),
            candidate_version,
            rollout: rollout.to_json(),
            earlier,
        };
        tracing::info!(
            release = %name,
            stable = %record.stable_version,
            candidate = %record.candidate_version,
            "rollout submitted"
        );
        if let Some(old) = self.drivers().remove(&name) {
            old.task.abort();
        }
        let handle = driver::spawn(
            self.inner.clone(),
            Start {
                record,
                rollout,
                revision,
                stable,
                candidate: None,
            },
        );
        let status = handle.status.borrow().clone();
        // Its state was readable again (an operator mended or removed the file).
        self.inner
            .quarantined
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(&name);
        self.drivers().insert(name, handle);
        Ok(status)
    }

    /// Every release's status, by name.
    pub fn list(&self) -> Vec<Arc<RolloutStatus>> {
        self.drivers()
            .values()
            .map(|h| h.status.borrow().clone())
            .collect()
    }

    /// One release's status; `Quarantined` for a release left alone at the start.
    pub fn status(&self, name: &str) -> Result<Arc<RolloutStatus>, ControllerError> {
        if let Some(status) = self.drivers().get(name).map(|h| h.status.borrow().clone()) {
            return Ok(status);
        }
        Err(match self.quarantine_reason(name) {
            Some(reason) => ControllerError::Quarantined {
                name: name.to_string(),
                reason,
            },
            None => ControllerError::NotFound(name.to_string()),
        })
    }

    /// A receiver of a release's status as it changes.
    pub fn watch(
        &self,
        name: &str,
    ) -> Result<tokio::sync::watch::Receiver<Arc<RolloutStatus>>, ControllerError> {
        self.drivers()
            .get(name)
            .map(|h| h.status.clone())
            .ok_or_else(|| ControllerError::NotFound(name.to_string()))
    }

    /// Sends a manual command; returns the status once the controller acted on it.
    pub async fn command(
        &self,
        name: &str,
        command: Command,
    ) -> Result<Arc<RolloutStatus>, ControllerError> {
        let (reply, answer) = oneshot::channel();
        let status = {
            let drivers = self.drivers();
            let handle = drivers
                .get(name)
                .ok_or_else(|| ControllerError::NotFound(name.to_string()))?;
            let _ = handle.inputs.send(Input::Command(command, reply));
            handle.status.clone()
        };
        match answer.await {
            Ok(Ok(())) => {}
            Ok(Err(rejected)) => return Err(rejected.into()),
            Err(_) => {
                return Err(ControllerError::Conflict(format!(
                    "the driver of '{name}' stopped"
                )));
            }
        }
        // The driver answers after it published the status its actions led to.
        let latest = status.borrow().clone();
        Ok(latest)
    }

    /// A release's history.
    pub async fn history(&self, name: &str) -> Result<History, ControllerError> {
        self.status(name)?;
        let stored = self
            .inner
            .backend
            .load_state(name)
            .await
            .map_err(|e| self.backend_error(e))?
            .ok_or_else(|| ControllerError::NotFound(name.to_string()))?;
        let record: ReleaseRecord = serde_json::from_value(stored.state).map_err(|e| {
            ControllerError::Conflict(format!("the stored state of '{name}' cannot be read: {e}"))
        })?;
        let events = Rollout::from_json(record.rollout)
            .map(|r| r.history().cloned().collect())
            .unwrap_or_default();
        Ok(History {
            name: name.to_string(),
            events,
            earlier: record.earlier,
        })
    }

    /// The controller's metrics in Prometheus's text format.
    pub fn metrics(&self) -> String {
        self.inner.metrics.render()
    }

    /// The route table as last published, for proxies that pull it; `None` until the
    /// first table after a start is out.
    pub fn routes(&self) -> Option<PublishedTable> {
        self.inner.routes.published()
    }

    /// A guardrail trip that a proxy elsewhere (one pulling its routes) reports: handled as
    /// a trip of the embedded proxy is. `Err` if the release is unknown.
    pub fn report_guardrail_trip(
        &self,
        release: &str,
        version: &str,
        guardrail: String,
        detail: String,
    ) -> Result<(), ControllerError> {
        if !self.drivers().contains_key(release) {
            return Err(ControllerError::NotFound(release.to_string()));
        }
        tracing::warn!(%release, %version, %guardrail, %detail, "a pulling proxy reports a guardrail trip");
        guardrail_tripped(&self.inner, release, version, guardrail, detail);
        Ok(())
    }

    /// The route table once its version differs from `version`, or after `limit` the
    /// table as it stands: a long poll for pulling proxies.
    pub async fn routes_after(
        &self,
        version: u64,
        limit: std::time::Duration,
    ) -> Option<PublishedTable> {
        self.inner.routes.published_after(version, limit).await
    }

    /// Stops every driver (rollouts stay where they are, persisted, for the next start).
    pub fn stop(&self) {
        for (_, handle) in std::mem::take(&mut *self.drivers()) {
            handle.task.abort();
        }
    }
}

/// Forwards the proxy's guardrail trips to the drivers of their releases.
async fn watch_events(inner: Arc<Inner>, proxy: Arc<Proxy>) {
    let mut seen = proxy.events_since(0).last().map_or(0, |e| e.id);
    let mut interval = tokio::time::interval(EVENT_POLL);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        interval.tick().await;
        for event in proxy.events_since(seen) {
            seen = seen.max(event.id);
            if let EventKind::GuardrailTripped {
                release,
                version,
                guardrail,
                value,
                max,
                requests,
            } = event.kind
            {
                guardrail_tripped(
                    &inner,
                    &release,
                    &version,
                    guardrail,
                    format!("{value:.4} over the limit {max} on {requests} requests"),
                );
            }
        }
    }
}

/// A proxy cut `release`'s candidate `version` off: keeps the cut in every table
/// published from now on, until the driver has decided what the trip means, and tells the
/// driver.
fn guardrail_tripped(inner: &Inner, release: &str, version: &str, name: String, detail: String) {
    inner.routes.cut_candidate(release, version);
    let drivers = inner
        .drivers
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some(handle) = drivers.get(release) {
        let _ = handle.inputs.send(Input::Guardrail {
            version: version.to_string(),
            name,
            detail,
        });
    }
}

/// The name of the version serving now, for a backend that keeps none: the version the
/// last rollout left serving, else `spec.stableVersion`, else a hash of the stable slot.
fn stable_version_hint(release: &Release, previous: Option<&ReleaseRecord>) -> String {
    if let Some(previous) = previous
        && let Ok(rollout) = Rollout::from_json(previous.rollout.clone())
    {
        return match rollout.outcome() {
            Some(cutover_core::rollout::Outcome::Promoted) => previous.candidate_version.clone(),
            _ => previous.stable_version.clone(),
        };
    }
    if let Some(version) = &release.spec.stable_version {
        return version.clone();
    }
    match &release.spec.backend {
        BackendSpec::Local(target) => short_hash("stable", &target.stable),
        _ => "stable".to_string(),
    }
}

/// The new version's name: `spec.version`, else the image's tag, else a hash of the
/// image (an untagged image's name holds `/` and `:`, outside the version's character set,
/// which metric labels and queries rely on), else a hash of the candidate slot.
fn candidate_version(release: &Release) -> String {
    if let Some(version) = &release.spec.version {
        return version.clone();
    }
    if let Some(image) = &release.spec.image {
        return match cutover_core::spec::image_tag(image) {
            Some(tag) => tag.to_string(),
            None => format!("image-{:08x}", fnv32(image)),
        };
    }
    match &release.spec.backend {
        BackendSpec::Local(target) => short_hash("candidate", &target.candidate),
        _ => "candidate".to_string(),
    }
}

/// `prefix-` and eight hex digits of an FNV-1a hash of the slot's definition.
fn short_hash(prefix: &str, slot: &LocalSlot) -> String {
    let text = serde_json::to_string(slot).unwrap_or_default();
    format!("{prefix}-{:08x}", fnv32(&text))
}

/// The low 32 bits of the FNV-1a hash of `text`: a short name that stays the same across
/// restarts.
fn fnv32(text: &str) -> u32 {
    let hash = text.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    });
    (hash & 0xffff_ffff) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_image_tag_names_the_version_and_a_registry_port_does_not() {
        let mut release = Controller::parse(
            "r.yaml",
            "apiVersion: cutover.dev/v1\nkind: Release\nmetadata: {name: shop}\nspec:\n  backend: {swarm: {service: shop, network: net}}\n  image: registry:5000/shop:v7\n  port: 80\n  strategy: {canary: {steps: [{setWeight: 50}]}}\n",
        )
        .expect("valid");
        assert_eq!(candidate_version(&release), "v7");
        // An untagged image's name holds ':' and '/': the version is a hash of it, within
        // the version character set that metric labels and queries rely on.
        release.spec.image = Some("registry:5000/shop".into());
        let name = candidate_version(&release);
        assert!(
            name.starts_with("image-") && name.len() == "image-".len() + 8,
            "{name}"
        );
        assert!(
            name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'),
            "{name}"
        );
        release.spec.version = Some("2.1".into());
        assert_eq!(candidate_version(&release), "2.1");
    }

    #[test]
    fn local_slots_without_names_get_stable_distinct_hashes() {
        let a = short_hash(
            "candidate",
            &LocalSlot::Addresses(vec!["127.0.0.1:1".into()]),
        );
        let b = short_hash(
            "candidate",
            &LocalSlot::Addresses(vec!["127.0.0.1:2".into()]),
        );
        assert_ne!(a, b);
        assert_eq!(
            a,
            short_hash(
                "candidate",
                &LocalSlot::Addresses(vec!["127.0.0.1:1".into()])
            )
        );
        assert!(a.starts_with("candidate-") && a.len() == "candidate-".len() + 8);
    }
}
