//! One release's driver: a task that owns the release's `Rollout` state machine, carries
//! out its actions (persisting first, then the backend, the route table, hooks and
//! analyses, each in its own task reporting back), feeds it what happened, and publishes
//! its status.
//!
//! The loop is the whole of the controller's logic for a rollout; everything it decides
//! comes from the state machine, and the few rules of its own (acting or held still, the
//! guardrail cut, slot operations under way, refreshes, persist retries) from its
//! [`DriverState`]. It reads the time only from the controller's `Clock`. Inputs are
//! handled one at a time, in arrival order.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use cutover_backend::{BackendError, Readiness, Slot, SlotView};
use cutover_core::judge::AnalysisProgress;
use cutover_core::rollout::{
    Action, Command, CommandRejected, Observation, Operation, Phase, Rollout, Timestamp,
};
use cutover_core::spec::{HookPoint, MetricSpec};
use cutover_proxy::config::RouteConfig;
use tokio::sync::{mpsc, oneshot, watch};
use tracing::Instrument;

use crate::Inner;
use crate::analysis::{self, AnalysisView, Subject};
use crate::driver_state::{CommandGate, DriverState, PersistFailure, SlotOpId, SlotOperation};
use crate::hooks::HookPayload;
use crate::release_route::release_route;
use crate::status::{self, ReleaseRecord, RolloutStatus, StatusInput, phase_label};

/// What a driver is told.
pub enum Input {
    /// Something happened (from an action's task).
    Observation(Observation),
    /// Slot operation `id` (deploy, promote, retire) ended with `observation`.
    SlotDone {
        /// The operation, as `DriverState::begin` named it.
        id: SlotOpId,
        /// Its outcome.
        observation: Observation,
    },
    /// A person said something; the reply says whether it fit.
    Command(Command, oneshot::Sender<Result<(), CommandRejected>>),
    /// The proxy tripped a guardrail on this version.
    Guardrail {
        /// The candidate version the proxy cut off.
        version: String,
        /// The guardrail's name.
        name: String,
        /// What was measured.
        detail: String,
    },
    /// An analysis took a measurement: its progress, to persist, and the run as the
    /// status shows it once persisted.
    AnalysisMeasured {
        /// The run's progress.
        progress: AnalysisProgress,
        /// The run for `cutover status`.
        view: AnalysisView,
    },
    /// A new rollout of the release is being submitted: stop acting (say so on the
    /// channel once stopped) until `Thaw`, or for good if the submission goes through.
    Freeze(oneshot::Sender<()>),
    /// The submission failed: act again.
    Thaw,
    /// The slots as the backend reports them now.
    Endpoints {
        /// The slot epoch the refresh started in (`None`: from the operation that changed
        /// the slots, always current). A refresh that raced a slot operation is dropped.
        epoch: Option<u64>,
        /// The stable slot.
        stable: Option<SlotView>,
        /// The candidate slot.
        candidate: Option<SlotView>,
    },
}

/// A command's answer channel and the answer, held until its actions are dispatched.
type Reply = (
    oneshot::Sender<Result<(), CommandRejected>>,
    Result<(), CommandRejected>,
);

/// A running driver, as the controller holds it.
pub struct Handle {
    /// Where to send inputs.
    pub inputs: mpsc::UnboundedSender<Input>,
    /// The latest status.
    pub status: watch::Receiver<Arc<RolloutStatus>>,
    /// The task.
    pub task: tokio::task::JoinHandle<()>,
}

/// Where a driver starts.
pub struct Start {
    /// The persisted record (its `rollout` field is refreshed at every persist).
    pub record: ReleaseRecord,
    /// The state machine, with its first actions pending.
    pub rollout: Rollout,
    /// The revision of the stored state the first persist replaces.
    pub revision: Option<u64>,
    /// The stable slot.
    pub stable: SlotView,
    /// The candidate slot, if it exists.
    pub candidate: Option<SlotView>,
}

/// Starts a driver.
pub fn spawn(inner: Arc<Inner>, start: Start) -> Handle {
    let (inputs, receiver) = mpsc::unbounded_channel();
    let name = start.record.release.metadata.name.clone();
    let state = DriverState::new(
        inner.clock.now(),
        inner.backend.endpoint_refresh(),
        start.rollout.is_done(),
    );
    let mut driver = Driver {
        inner,
        name: name.clone(),
        record: start.record,
        rollout: start.rollout,
        revision: start.revision,
        stable: start.stable,
        candidate: start.candidate,
        inputs: inputs.clone(),
        analyses: HashMap::new(),
        analysis_view: Arc::new(Mutex::new(None)),
        state,
        problem: None,
        status: None,
        replies: Vec::new(),
        deploy_task: None,
    };
    // A new rollout starts uncut: a cut-off is kept only for the rollout it happened in.
    if matches!(driver.rollout.phase(), Phase::PreRollout) {
        driver.inner.routes.clear_cut(&driver.name);
    }
    // The route as the state stands, before the publisher's first table after a start.
    driver
        .inner
        .routes
        .set(&driver.name, Some(driver.route_config()));
    let first = Arc::new(driver.build_status());
    let (status_tx, status) = watch::channel(first);
    driver.status = Some(status_tx);
    let span = tracing::info_span!("rollout", release = %name);
    let task = tokio::spawn(driver.run(receiver).instrument(span));
    Handle {
        inputs,
        status,
        task,
    }
}

struct Driver {
    inner: Arc<Inner>,
    name: String,
    record: ReleaseRecord,
    rollout: Rollout,
    revision: Option<u64>,
    stable: SlotView,
    candidate: Option<SlotView>,
    inputs: mpsc::UnboundedSender<Input>,
    analyses: HashMap<u32, tokio::task::JoinHandle<()>>,
    analysis_view: Arc<Mutex<Option<AnalysisView>>>,
    /// The driver's own decisions: acting or not, the guardrail cut, slot operations
    /// under way, refreshes, persist retries.
    state: DriverState,
    problem: Option<String>,
    status: Option<watch::Sender<Arc<RolloutStatus>>>,
    /// Commands to answer after the actions they caused are dispatched.
    replies: Vec<Reply>,
    /// The deploy under way, aborted before the candidate is retired so that nothing it
    /// creates outlives the retirement.
    deploy_task: Option<tokio::task::JoinHandle<()>>,
}

impl Driver {
    async fn run(mut self, mut receiver: mpsc::UnboundedReceiver<Input>) {
        let clock = self.inner.clock;
        // A proxy that restarted with the controller has no route for this release.
        self.apply_route(None);
        self.execute().await;
        loop {
            let refresh_at = self.state.refresh_at(clock.now());
            let wake = self
                .rollout
                .poll_timeout()
                .map_or(refresh_at, |t| t.min(refresh_at));
            // Inputs first, in arrival order, then the timer: the same choice every time,
            // so that a seeded simulation replays exactly.
            let received = tokio::select! {
                biased;
                input = receiver.recv() => match input {
                    Some(input) => Some(input),
                    None => return,
                },
                _ = tokio::time::sleep_until(clock.deadline(wake)) => None,
            };
            let began = tokio::time::Instant::now();
            if let Some(input) = received {
                self.handle(input);
            }
            // The timer too once it is due, also after an input: a steady stream of
            // inputs must not hold a step's timeout or a refresh back.
            let now = clock.now();
            if now >= wake {
                if self.state.refresh_due(now) {
                    self.refresh_endpoints();
                }
                self.rollout.handle_timeout(now);
            }
            if !self.state.acts() {
                continue;
            }
            let acted = self.execute().await;
            for (reply, result) in self.replies.drain(..) {
                let _ = reply.send(result);
            }
            if acted {
                self.inner
                    .metrics
                    .step_latency(began.elapsed().as_secs_f64());
            }
        }
    }

    /// Takes one input: the driver's own decisions first, then the state machine's.
    fn handle(&mut self, input: Input) {
        let now = self.inner.clock.now();
        match input {
            Input::Observation(observation) => {
                let _ = self.rollout.handle(now, observation);
            }
            Input::SlotDone { id, observation } => {
                self.state.acknowledged(id);
                self.slots_changed(&observation);
                let _ = self.rollout.handle(now, observation);
            }
            Input::Freeze(stopped) => {
                self.state.freeze();
                let _ = stopped.send(());
            }
            Input::Thaw => self.state.thaw(),
            Input::AnalysisMeasured { progress, view } => {
                let _ = self
                    .rollout
                    .handle(now, Observation::AnalysisProgress { progress });
                // Shown only when the machine took it (a stopped run may report late);
                // the status goes out after the persist this causes.
                if self.rollout.analysis().is_some_and(|p| p.run == view.run) {
                    *self
                        .analysis_view
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(view);
                }
            }
            Input::Command(command, reply) => self.command(now, command, reply),
            Input::Guardrail {
                version,
                name,
                detail,
            } => self.guardrail(now, &version, name, detail),
            Input::Endpoints {
                epoch,
                stable,
                candidate,
            } => self.endpoints(epoch, stable, candidate),
        }
    }

    /// A slot operation's outcome: the slots as the driver knows them follow it.
    fn slots_changed(&mut self, observation: &Observation) {
        match observation {
            Observation::Retired {
                slot: Slot::Candidate,
            } => {
                self.candidate = None;
                self.apply_route(None);
            }
            Observation::Promoted => {
                // The candidate is the stable slot now: no backend call needed to know
                // where it listens.
                if let Some(candidate) = self.candidate.take() {
                    self.stable = candidate;
                }
                self.apply_route(None);
            }
            _ => {}
        }
    }

    /// A person's command: refused here while held still or stopped, else the machine's;
    /// answered once its actions are under way and the status shows them.
    fn command(
        &mut self,
        now: Timestamp,
        command: Command,
        reply: oneshot::Sender<Result<(), CommandRejected>>,
    ) {
        if let CommandGate::Refuse(rejected) = self.state.gate_command(command) {
            let _ = reply.send(Err(rejected));
            return;
        }
        let result = self.rollout.handle(now, Observation::Command(command));
        match &result {
            Ok(()) => tracing::info!(%command, "command accepted"),
            Err(e) => tracing::info!(%command, error = %e, "command refused"),
        }
        if result.is_ok() && self.state.command_accepted(command) {
            self.inner.routes.clear_cut(&self.name);
        }
        self.replies.push((reply, result));
    }

    /// The proxy cut a version off: the machine decides; once it rolls back, every route
    /// built from here on keeps the candidate cut off.
    fn guardrail(&mut self, now: Timestamp, version: &str, name: String, detail: String) {
        let candidate = &self.record.candidate_version;
        if !self
            .state
            .trip_applies(version, candidate, self.rollout.is_done())
        {
            return;
        }
        self.inner.metrics.trip(&self.name, &name);
        tracing::warn!(guardrail = %name, %detail, "guardrail tripped");
        let _ = self
            .rollout
            .handle(now, Observation::GuardrailTripped { name, detail });
        self.state.trip_handled(self.rollout.phase());
    }

    /// The slots as read by a refresh (or a deploy): used unless a slot operation raced it.
    fn endpoints(
        &mut self,
        epoch: Option<u64>,
        stable: Option<SlotView>,
        candidate: Option<SlotView>,
    ) {
        if !self.state.endpoints_current(epoch) {
            return;
        }
        let mut changed = false;
        if let Some(stable) = stable.filter(|s| *s != self.stable) {
            self.stable = stable;
            changed = true;
        }
        if candidate != self.candidate {
            self.candidate = candidate;
            changed = true;
        }
        if changed {
            self.apply_route(None);
        }
    }

    /// Carries out every pending action; returns whether there were any.
    async fn execute(&mut self) -> bool {
        let mut acted = false;
        while let Some(action) = self.rollout.poll_action() {
            acted = true;
            self.act(action).await;
            if self.state.stopped() {
                return acted;
            }
        }
        self.notify();
        self.publish();
        acted
    }

    /// Hands the events the last inputs caused to the notifier: the one place every
    /// notification starts, after the state that caused it was persisted. Queued, never
    /// awaited: a slow receiver cannot hold the rollout.
    fn notify(&mut self) {
        let subscriptions = &self.record.release.spec.notifications;
        while let Some(event) = self.rollout.poll_event() {
            let notice = crate::notify::Notice {
                release: self.name.clone(),
                trigger: event.trigger,
                at: event.at.0,
                stable: self.record.stable_version.clone(),
                candidate: self.record.candidate_version.clone(),
                weight: self.rollout.route().candidate_weight,
                step: event.step,
                steps: self.rollout.plan().steps.len(),
                phase: phase_label(self.rollout.phase()).to_string(),
                reason: event.reason,
            };
            self.inner.notifier.notify(subscriptions, &notice);
        }
    }

    async fn act(&mut self, action: Action) {
        match action {
            Action::Persist => self.persist().await,
            Action::RunHook { point } => self.run_hook(point),
            Action::Deploy => self.deploy(),
            Action::SetRoute { generation, .. } => self.apply_route(Some(generation)),
            Action::StartAnalysis {
                run,
                step,
                metrics,
                progress,
                resumed,
                ..
            } => self.start_analysis(run, step, &metrics, (progress, resumed)),
            Action::StopAnalysis { run } => {
                if let Some(task) = self.analyses.remove(&run) {
                    task.abort();
                }
            }
            Action::Promote => self.promote(),
            Action::Retire { slot } => self.retire(slot),
        }
    }

    /// Writes the record with the current state; retries until it succeeds, unless
    /// another writer took the state over.
    async fn persist(&mut self) {
        self.record.rollout = self.rollout.to_json();
        let value = match serde_json::to_value(&self.record) {
            Ok(value) => value,
            Err(e) => {
                tracing::error!(error = %e, "cannot encode the rollout state");
                return;
            }
        };
        loop {
            let error = match self
                .inner
                .backend
                .store_state(&self.name, &value, self.revision)
                .await
            {
                Ok(revision) => {
                    self.revision = Some(revision);
                    self.state.persisted();
                    if self.problem.take().is_some() {
                        tracing::info!("the state store answers again");
                    }
                    return;
                }
                Err(e) => e,
            };
            let conflict = matches!(error, BackendError::Conflict { .. });
            match self.state.persist_failed(conflict) {
                PersistFailure::Stop => {
                    tracing::error!(
                        "the stored state changed under this controller: another controller drives this release; stopping"
                    );
                    self.problem = Some(
                        "another controller wrote this release's state; this one stopped driving it"
                            .into(),
                    );
                    self.publish();
                    return;
                }
                PersistFailure::RetryAfter(delay) => {
                    tracing::warn!(error = %error, "cannot persist the rollout state; retrying");
                    self.problem = Some(format!("cannot persist the rollout state: {error}"));
                    self.publish();
                    tokio::time::sleep(delay).await;
                }
            }
        }
    }

    fn report(&self) -> impl Fn(Observation) + Send + 'static {
        let inputs = self.inputs.clone();
        move |observation| {
            let _ = inputs.send(Input::Observation(observation));
        }
    }

    fn run_hook(&self, point: HookPoint) {
        let hooks = self.record.release.spec.hooks.at(point).to_vec();
        let client = self.inner.hooks.clone();
        let report = self.report();
        let (release, stable, candidate) = (
            self.name.clone(),
            self.record.stable_version.clone(),
            self.record.candidate_version.clone(),
        );
        let attempt = self.rollout.attempt();
        let span = tracing::info_span!("hook", %point);
        tokio::spawn(
            async move {
                let payload = HookPayload {
                    release: &release,
                    point,
                    stable_version: &stable,
                    candidate_version: &candidate,
                    attempt,
                };
                let result = client.deliver(&hooks, &payload).await;
                if let Err(e) = &result {
                    tracing::warn!(error = %e, "hook failed");
                }
                report(Observation::HookResult {
                    point,
                    passed: result.is_ok(),
                    detail: result.err().unwrap_or_default(),
                });
            }
            .instrument(span),
        );
    }

    fn deploy(&mut self) {
        let id = self.state.begin(SlotOperation::Deploy);
        let backend = self.inner.backend.clone();
        let release = self.record.release.clone();
        let version = self.record.candidate_version.clone();
        let inputs = self.inputs.clone();
        let span = tracing::info_span!("deploy", %version);
        let task = tokio::spawn(
            async move {
                let observation = match backend.deploy(&release, &version).await {
                    Ok(Readiness::Ready(view)) => {
                        tracing::info!(endpoints = ?view.endpoints, "candidate ready");
                        let _ = inputs.send(Input::Endpoints {
                            epoch: None,
                            stable: None,
                            candidate: Some(view),
                        });
                        Observation::CandidateReady
                    }
                    Ok(Readiness::Failed { reason }) => Observation::CandidateFailed { reason },
                    Err(BackendError::Invalid(reason)) => Observation::CandidateFailed { reason },
                    Err(e) => Observation::BackendError {
                        operation: Operation::Deploy,
                        message: e.to_string(),
                    },
                };
                let _ = inputs.send(Input::SlotDone { id, observation });
            }
            .instrument(span),
        );
        self.deploy_task = Some(task);
    }

    fn promote(&mut self) {
        let id = self.state.begin(SlotOperation::Promote);
        let backend = self.inner.backend.clone();
        let name = self.name.clone();
        let inputs = self.inputs.clone();
        tokio::spawn(
            async move {
                let observation = match backend.promote(&name).await {
                    Ok(()) => Observation::Promoted,
                    Err(e) => Observation::BackendError {
                        operation: Operation::Promote,
                        message: e.to_string(),
                    },
                };
                let _ = inputs.send(Input::SlotDone { id, observation });
            }
            .instrument(tracing::info_span!("promote")),
        );
    }

    fn retire(&mut self, slot: Slot) {
        let backend = self.inner.backend.clone();
        let name = self.name.clone();
        let inputs = self.inputs.clone();
        // A deploy still under way (an abort while deploying) ends first, so the retire
        // sees everything it created; it is not awaited any more (aborted, it never
        // reports; a report already on its way is stale).
        let deploy = if slot == Slot::Candidate {
            self.deploy_task.take()
        } else {
            None
        };
        if deploy.is_some() {
            self.state.cancel_deploy();
        }
        let id = self.state.begin(SlotOperation::Retire);
        tokio::spawn(
            async move {
                if let Some(deploy) = deploy {
                    deploy.abort();
                    let _ = deploy.await;
                }
                let observation = match backend.retire(&name, slot).await {
                    Ok(()) => Observation::Retired { slot },
                    Err(e) => Observation::BackendError {
                        operation: Operation::Retire,
                        message: e.to_string(),
                    },
                };
                let _ = inputs.send(Input::SlotDone { id, observation });
            }
            .instrument(tracing::info_span!("retire", ?slot)),
        );
    }

    /// Starts analysis run `run` from `progress`: a new run's, or (`resumed`) the one
    /// persisted before a restart, which the run goes on from.
    fn start_analysis(
        &mut self,
        run: u32,
        step: usize,
        names: &[String],
        (progress, resumed): (AnalysisProgress, bool),
    ) {
        let metrics: Vec<MetricSpec> = self
            .record
            .release
            .spec
            .analysis
            .metrics
            .iter()
            .filter(|m| names.contains(&m.name))
            .cloned()
            .collect();
        *self
            .analysis_view
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = None;
        let inner = self.inner.clone();
        let report = self.report();
        let view = self.analysis_view.clone();
        let inputs = self.inputs.clone();
        let (release, stable, candidate) = (
            self.name.clone(),
            self.record.stable_version.clone(),
            self.record.candidate_version.clone(),
        );
        let span = tracing::info_span!("analysis", run, step);
        let task = tokio::spawn(
            async move {
                let (verdict, detail) = analysis::run(
                    &inner.providers,
                    &metrics,
                    Subject {
                        release: &release,
                        stable: &stable,
                        candidate: &candidate,
                    },
                    (run, step),
                    (&progress, resumed),
                    analysis::Reporting {
                        view: &view,
                        counters: &inner.metrics,
                        // Persisted by the state machine's next batch, then published.
                        on_progress: &|progress, view| {
                            let _ = inputs.send(Input::AnalysisMeasured { progress, view });
                        },
                        clock: inner.clock,
                    },
                )
                .await;
                tracing::info!(?verdict, %detail, "analysis decided");
                report(Observation::AnalysisVerdict {
                    run,
                    verdict,
                    detail,
                });
            }
            .instrument(span),
        );
        self.analyses.insert(run, task);
    }

    /// Publishes the route for the current state; `generation` is acknowledged to the
    /// state machine once it is live.
    fn apply_route(&self, generation: Option<u64>) {
        let version = self.inner.routes.set(&self.name, Some(self.route_config()));
        let routes = self.inner.routes.clone();
        let report = self.report();
        tokio::spawn(async move {
            match routes.published_at(version).await {
                Ok(()) => {
                    if let Some(generation) = generation {
                        report(Observation::RouteApplied { generation });
                    }
                }
                Err(message) => {
                    if generation.is_some() {
                        report(Observation::BackendError {
                            operation: Operation::SetRoute,
                            message,
                        });
                    }
                }
            }
        });
    }

    /// The proxy's route for this release now (see [`release_route`]).
    fn route_config(&self) -> RouteConfig {
        release_route(
            &self.record.release,
            self.rollout.route(),
            self.state.candidate_open(self.rollout.phase()),
            &self.stable,
            self.candidate.as_ref(),
        )
    }

    /// Reads the slots again in a task; what it reads is used only if no slot operation
    /// started or ended meanwhile.
    fn refresh_endpoints(&self) {
        let backend = self.inner.backend.clone();
        let name = self.name.clone();
        let inputs = self.inputs.clone();
        let epoch = Some(self.state.slot_epoch());
        let stable_version = self.stable.version.clone();
        tokio::spawn(async move {
            let stable = backend.endpoints(&name, Slot::Stable).await;
            let candidate = backend.endpoints(&name, Slot::Candidate).await;
            // The last endpoints stay in the routes; the trouble is said, each time.
            for e in [&stable, &candidate]
                .into_iter()
                .filter_map(|r| r.as_ref().err())
            {
                tracing::warn!(release = %name, error = %e, "cannot refresh the endpoints");
            }
            if let (Ok(stable), Ok(candidate)) = (stable, candidate) {
                // A stable slot that is gone (its service removed by hand) serves nothing:
                // say so, and route to nothing rather than to addresses that are dead.
                let stable = stable.unwrap_or_else(|| {
                    tracing::warn!("the backend has no stable slot for this release any more");
                    SlotView {
                        version: stable_version,
                        endpoints: Vec::new(),
                    }
                });
                let _ = inputs.send(Input::Endpoints {
                    epoch,
                    stable: Some(stable),
                    candidate,
                });
            }
        });
    }

    fn build_status(&self) -> RolloutStatus {
        let notifications = self.inner.notifier.failures(&self.name);
        let analysis = self
            .analysis_view
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        let mut status = status::status(StatusInput {
            record: &self.record,
            rollout: &self.rollout,
            stable: &self.stable,
            candidate: self.candidate.as_ref(),
            analysis,
            problem: self.problem.clone(),
        });
        status.notifications = notifications;
        status
    }

    fn publish(&mut self) {
        let status = self.build_status();
        let step = status.step.unwrap_or(0);
        self.inner.metrics.rollout(
            &self.name,
            phase_label(self.rollout.phase()),
            status.weight,
            step,
            status.steps,
        );
        if self.state.finish_to_count(self.rollout.is_done()) {
            let seconds = self
                .rollout
                .now()
                .since(self.rollout.started_at())
                .as_millis() as f64
                / 1000.0;
            self.inner.metrics.finished(status.phase, seconds);
            tracing::info!(
                outcome = status.phase,
                reason = status.reason.as_deref().unwrap_or(""),
                seconds,
                "rollout finished"
            );
        }
        if let Some(sender) = &self.status {
            sender.send_if_modified(|current| {
                if **current == status {
                    false
                } else {
                    *current = Arc::new(status);
                    true
                }
            });
        }
    }
}
