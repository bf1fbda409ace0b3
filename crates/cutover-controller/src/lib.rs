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
//! - [`logs`]: instance logs over the API (local backend).

pub mod analysis;
pub mod api;
pub mod clock;
mod driver;
mod driver_state;
mod guardrails;
pub mod hooks;
pub mod logs;
pub mod metrics;
mod release_route;
mod resume;
pub mod routes;
pub mod status;
mod submit;
mod versions;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cutover_backend::{Backend, BackendError};
use cutover_core::Diagnostic;
use cutover_core::load::{self, Format, Source};
use cutover_core::rollout::{Command, CommandRejected, HistoryEntry, Rollout};
use cutover_core::spec::Release;
use cutover_metrics::prometheus::PrometheusClient;
use cutover_metrics::web::WebClient;
use cutover_proxy::Proxy;
use serde::Serialize;
use tokio::sync::oneshot;

pub use analysis::Providers;
pub use clock::Clock;
pub use cutover_backend::LogFile;
pub use status::{ReleaseRecord, RolloutStatus, RolloutSummary, VersionDefinition};

use driver::{Handle, Input};
use guardrails::{guardrail_tripped, watch_events};
use metrics::ControllerMetrics;
use routes::{PublishedTable, RoutePublisher};
use versions::undo_release;

/// How long `delete --force` waits for the rollout it aborted to finish rolling back.
pub const DELETE_ROLLBACK_WITHIN: Duration = Duration::from_secs(60);

/// What the controller is built from.
pub struct ControllerOptions {
    /// Where releases run.
    pub backend: Arc<dyn Backend>,
    /// The proxy in this process; `None` when proxies pull the route table.
    pub proxy: Option<Arc<Proxy>>,
    /// The Prometheus address for metrics that name none.
    pub prometheus: Option<String>,
}

/// What a seeded simulation puts in place of the parts of the world a controller in
/// production reads: the time, the proxy's traffic (for builtin analyses) and hook
/// delivery. The default is production's: the wall clock, the embedded proxy, HTTP.
#[doc(hidden)]
#[derive(Default)]
pub struct Substitutes {
    /// Where the time is read.
    pub clock: Clock,
    /// Where builtin analyses read traffic, instead of the embedded proxy.
    pub windows: Option<Arc<dyn cutover_metrics::WindowSource>>,
    /// Where hooks are delivered, instead of over HTTP.
    pub hooks: Option<Arc<dyn hooks::HookDelivery>>,
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
    /// The backend cannot do this; the message says where to do it instead.
    #[error("{0}")]
    Unsupported(String),
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
    /// Where every time the controller uses is read.
    clock: Clock,
    proxy: Option<Arc<Proxy>>,
    routes: Arc<RoutePublisher>,
    providers: Providers,
    hooks: Arc<dyn hooks::HookDelivery>,
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
pub(crate) const STORE_HINT: &str = "move the state away (the release then starts afresh at its next submission) or restore it from a backup, then restart the controller";

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
        Controller::start_with(options, Substitutes::default()).await
    }

    /// Starts the controller with `substitutes` in place of the wall clock, the proxy's
    /// traffic or hook delivery: the entry point of seeded simulations, which run the
    /// controller under tokio's paused time with a simulated backend, traffic and hooks.
    #[doc(hidden)]
    pub async fn start_with(
        options: ControllerOptions,
        substitutes: Substitutes,
    ) -> Result<Controller, ControllerError> {
        let routes = RoutePublisher::start(options.proxy.clone());
        let clock = substitutes.clock;
        let windows = substitutes.windows.or_else(|| {
            options
                .proxy
                .clone()
                .map(|p| p as Arc<dyn cutover_metrics::WindowSource>)
        });
        let inner = Arc::new(Inner {
            clock,
            backend: options.backend,
            proxy: options.proxy,
            routes,
            providers: Providers {
                prometheus: PrometheusClient::new(options.prometheus),
                web: WebClient::default(),
                windows,
            },
            hooks: substitutes
                .hooks
                .unwrap_or_else(|| Arc::new(hooks::HookClient::default())),
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

    /// The lock that serialises starting and deleting rollouts of one release, so that a
    /// `run` and a `delete` of the same name never interleave.
    fn release_lock(&self, name: &str) -> Arc<tokio::sync::Mutex<()>> {
        self.inner
            .submitting
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .entry(name.to_string())
            .or_default()
            .clone()
    }

    /// Starts a rollout of `release`. Refused while another rollout of the same release
    /// is under way.
    pub async fn submit(&self, release: Release) -> Result<Arc<RolloutStatus>, ControllerError> {
        let name = release.metadata.name.clone();
        let lock = self.release_lock(&name);
        let _one_at_a_time = lock.lock().await;
        self.refuse_if_under_way(&name)?;
        // The finished rollout's driver holds still while this one starts, so that a
        // command (a `retry`) cannot move it in between; it acts again if this fails.
        self.with_driver_held(&name, self.start_rollout(release))
            .await
    }

    /// Runs `work` while the driver of `name` (if it has one) holds still, having
    /// finished what it was doing; the driver goes on if `work` fails, and is left held
    /// (for its caller to replace or remove) if it succeeds.
    async fn with_driver_held<T>(
        &self,
        name: &str,
        work: impl Future<Output = Result<T, ControllerError>>,
    ) -> Result<T, ControllerError> {
        let inputs = self.drivers().get(name).map(|h| h.inputs.clone());
        if let Some(inputs) = &inputs {
            let (stopped, frozen) = oneshot::channel();
            let _ = inputs.send(Input::Freeze(stopped));
            let _ = frozen.await;
        }
        let result = work.await;
        if result.is_err()
            && let Some(inputs) = inputs
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
        if command == Command::Abort
            && let Some(finished) = self.finished_for_abort(name).await?
        {
            return Ok(finished);
        }
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
            Ok(Err(_)) if command == Command::Abort && self.status(name)?.done => {
                // It ended between the check above and the command: said as it is.
                return self
                    .finished_for_abort(name)
                    .await
                    .map(|finished| finished.unwrap_or_else(|| status.borrow().clone()));
            }
            Ok(Err(rejected))
                if command == Command::Abort && past_point_of_no_return(status.borrow().phase) =>
            {
                // Past the point of no return: the promotion completes, then `undo`.
                return Err(ControllerError::Conflict(format!(
                    "cannot abort '{name}': the candidate is being promoted ({}); wait for it (`cutover status {name} --watch`), then `cutover undo {name}` rolls back to the previous version",
                    rejected.phase
                )));
            }
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

    /// For an `abort`: the status of a rollout that is already over, if it is. An aborted
    /// or rolled-back one is answered as it is (the abort has nothing left to do); a
    /// promoted one is refused, naming `undo`.
    async fn finished_for_abort(
        &self,
        name: &str,
    ) -> Result<Option<Arc<RolloutStatus>>, ControllerError> {
        let status = self.status(name)?;
        if !status.done {
            return Ok(None);
        }
        if status.outcome == Some("promoted") {
            let (promoted, before) = match self.record(name).await {
                Ok(record) => (record.candidate_version, record.stable_version),
                Err(_) => (
                    status.stable.version.clone(),
                    "the previous version".to_string(),
                ),
            };
            return Err(ControllerError::Conflict(format!(
                "cannot abort '{name}': its rollout is finished and {promoted} was promoted; `cutover undo {name}` rolls back to {before}"
            )));
        }
        Ok(Some(status))
    }

    /// Waits until the rollout of `name` is done, at most `limit`; `Ok(None)` if it is
    /// still under way then.
    pub async fn wait_done(
        &self,
        name: &str,
        limit: Duration,
    ) -> Result<Option<Arc<RolloutStatus>>, ControllerError> {
        let mut watch = self.watch(name)?;
        let done = tokio::time::timeout(limit, watch.wait_for(|s| s.done)).await;
        Ok(match done {
            Ok(Ok(status)) => Some(status.clone()),
            Ok(Err(_)) => None,
            Err(_) => None,
        })
    }

    /// Starts a rollout back to the version that served before the last promotion of
    /// `name`: through the release's own strategy, or with `full` straight to it (no
    /// steps, as `promote --full`). Refused while a rollout is under way (that is
    /// `abort`'s job), when the last rollout did not promote, and when the previous
    /// version's definition is unknown (an orchestrator ran it before cutover adopted it).
    pub async fn undo(
        &self,
        name: &str,
        full: bool,
    ) -> Result<Arc<RolloutStatus>, ControllerError> {
        let status = self.status(name)?;
        if !status.done {
            return Err(ControllerError::Conflict(format!(
                "cannot undo '{name}': a rollout is under way ({}); `cutover abort {name}` rolls it back",
                status.description
            )));
        }
        if status.outcome != Some("promoted") {
            return Err(ControllerError::Conflict(format!(
                "nothing to undo: the last rollout of '{name}' was {} and {} still serves; undo goes back to the previous version after a promotion (`cutover history {name}`)",
                status.outcome.unwrap_or("not finished"),
                status.stable.version
            )));
        }
        let record = self.record(name).await?;
        let Some(previous) = record.stable_definition.clone() else {
            return Err(ControllerError::Conflict(format!(
                "cannot undo '{name}': what {} (the version before {}) runs is not known: cutover did not deploy it (it ran before cutover adopted the release) or its record predates `undo`; release it again with `cutover run` and a file that names it",
                record.stable_version, record.candidate_version
            )));
        };
        let release = undo_release(&record, previous, full)?;
        tracing::info!(release = %name, to = %record.stable_version, full, "undo requested");
        self.submit(release).await
    }

    /// The stored record of `name`.
    async fn record(&self, name: &str) -> Result<ReleaseRecord, ControllerError> {
        let stored = self
            .inner
            .backend
            .load_state(name)
            .await
            .map_err(|e| self.backend_error(e))?
            .ok_or_else(|| ControllerError::NotFound(name.to_string()))?;
        serde_json::from_value(stored.state).map_err(|e| {
            ControllerError::Conflict(format!("the stored state of '{name}' cannot be read: {e}"))
        })
    }

    /// Stops the instances of `name` and forgets it: its stored state, slots and logs,
    /// its route, its driver. Refused while a rollout is under way unless `force`, which
    /// aborts it first and waits (up to [`DELETE_ROLLBACK_WITHIN`]) for the rollback.
    /// A quarantined release can be deleted too.
    pub async fn delete(&self, name: &str, force: bool) -> Result<(), ControllerError> {
        if !self.inner.backend.can_delete() {
            return Err(ControllerError::Unsupported(format!(
                "the {} backend cannot delete releases yet; {}",
                self.inner.backend.kind(),
                delete_hint(self.inner.backend.kind(), name)
            )));
        }
        let known = self.drivers().contains_key(name) || self.quarantine_reason(name).is_some();
        if !known {
            return Err(ControllerError::NotFound(name.to_string()));
        }
        let lock = self.release_lock(name);
        let _one_at_a_time = lock.lock().await;
        if let Ok(status) = self.status(name)
            && !status.done
        {
            if !force {
                return Err(ControllerError::Conflict(format!(
                    "release '{name}' has a rollout under way ({}); `cutover abort {name}` first, or `cutover delete {name} --force` to abort it and delete",
                    status.description
                )));
            }
            match self.command(name, Command::Abort).await {
                Ok(_) | Err(ControllerError::Rejected(_) | ControllerError::Conflict(_)) => {}
                Err(e) => return Err(e),
            }
            if self
                .wait_done(name, DELETE_ROLLBACK_WITHIN)
                .await?
                .is_none()
            {
                return Err(ControllerError::Conflict(format!(
                    "release '{name}' is still rolling back after {}s; nothing was deleted; try again (`cutover status {name}`)",
                    DELETE_ROLLBACK_WITHIN.as_secs()
                )));
            }
        }
        // The driver holds still while the backend deletes, so it writes nothing back.
        let deleted =
            async { (self.inner.backend.delete(name).await).map_err(|e| self.backend_error(e)) };
        self.with_driver_held(name, deleted).await?;
        if let Some(handle) = self.drivers().remove(name) {
            handle.task.abort();
        }
        self.inner.routes.set(name, None);
        self.inner.routes.clear_cut(name);
        self.inner.metrics.forget(name);
        self.inner
            .quarantined
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(name);
        tracing::info!(release = %name, "release deleted");
        Ok(())
    }

    /// The log files of `name`'s instances; refused, with where to read them instead, on
    /// a backend whose orchestrator keeps the logs.
    pub async fn log_files(&self, name: &str) -> Result<Vec<LogFile>, ControllerError> {
        let unsupported = || {
            ControllerError::Unsupported(format!(
                "the {} backend keeps no instance logs of its own; {}",
                self.inner.backend.kind(),
                logs_hint(self.inner.backend.kind(), name)
            ))
        };
        if !self.inner.backend.keeps_logs() {
            return Err(unsupported());
        }
        self.status(name)?;
        self.inner
            .backend
            .log_files(name)
            .await
            .map_err(|e| self.backend_error(e))?
            .ok_or_else(unsupported)
    }

    /// A release's history.
    pub async fn history(&self, name: &str) -> Result<History, ControllerError> {
        self.status(name)?;
        let record = self.record(name).await?;
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

/// Whether a refused abort was refused because the candidate is past the point of no
/// return, judged by the status's phase word (see [`RolloutStatus::phase`]): being made
/// stable (`promoting`, whose routing part does accept an abort) or the previous version
/// being scaled down (`scalingDown`). A finished rollout is answered before this.
fn past_point_of_no_return(phase: &str) -> bool {
    matches!(phase, "promoting" | "scalingDown")
}

/// Where to remove a release by hand on a backend that cannot delete.
fn delete_hint(kind: &str, name: &str) -> String {
    match kind {
        "swarm" => format!(
            "remove the services cutover created by hand (`docker service ls --filter label=dev.cutover.release={name}`; the one you deployed first is yours)"
        ),
        "kubernetes" => format!(
            "remove the Deployments cutover created by hand (`kubectl get deployments -l cutover.dev/release={name}`, and `-l cutover.io/release={name}` for those an older version made; the anchor is yours)"
        ),
        "docker" => format!(
            "remove the containers cutover created by hand (`docker ps -a --filter label=dev.cutover.release={name}`; the ones you started are yours) and the release's files under the state directory's docker/"
        ),
        _ => "remove its workloads by hand".to_string(),
    }
}

/// Where to read a release's logs on a backend whose orchestrator keeps them.
fn logs_hint(kind: &str, name: &str) -> String {
    match kind {
        "swarm" => format!(
            "read them with `docker service logs` (the services: `docker service ls --filter label=dev.cutover.release={name}`)"
        ),
        "kubernetes" => format!(
            "read them with `kubectl logs -l cutover.dev/release={name}` (and `-l cutover.io/release={name}` for pods an older version made)"
        ),
        "docker" => format!(
            "read them with `docker logs` (the containers cutover created: `docker ps --filter label=dev.cutover.release={name}`)"
        ),
        _ => "read them where the instances run".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_abort_refused_while_promoting_or_scaling_down_names_undo_and_no_other_phase_does() {
        assert!(past_point_of_no_return("promoting"));
        assert!(past_point_of_no_return("scalingDown"));
        // "promoted" holds "promot" too; a finished rollout has its own answer.
        for phase in ["promoted", "step", "rollingBack", "aborted", "deploying"] {
            assert!(!past_point_of_no_return(phase), "{phase}");
        }
    }
}
