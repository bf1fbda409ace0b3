//! The simulated world the controller runs in: a seeded backend, seeded traffic for the
//! builtin analyses, and the harness that drives one rollout per seed (commands, guardrail
//! trips, crashes) and checks how it ended.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use cutover_backend::{Backend, BackendError, BoxFuture, Readiness, Slot, SlotView, Stored};
use cutover_controller::hooks::{HookDelivery, HookPayload};
use cutover_controller::{Clock, Controller, ControllerOptions, Substitutes};
use cutover_core::judge::Evidence;
use cutover_core::rollout::{Command, Timestamp};
use cutover_core::spec::{HookPoint, HookSpec, Release};
use cutover_metrics::WindowSource;
use cutover_proxy::metrics::WindowStats;

/// SplitMix64: small, fast, and the same on every machine.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// True with probability `p`.
    pub fn chance(&mut self, p: f64) -> bool {
        p > 0.0 && (self.next() >> 11) as f64 / (1u64 << 53) as f64 <= p
    }

    /// Uniform in `lo..=hi`.
    pub fn between(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo + 1)
    }
}

/// A shared seeded generator: every source of randomness in one seed's world draws from
/// it, in the order the (single-threaded, paused) runtime runs them.
#[derive(Clone)]
pub struct SharedRng(Arc<Mutex<Rng>>);

impl SharedRng {
    fn with<T>(&self, f: impl FnOnce(&mut Rng) -> T) -> T {
        f(&mut self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner))
    }
}

/// Probabilities of each fault, per opportunity.
#[derive(Clone, Debug, Default)]
pub struct Faults {
    /// A backend call fails transiently, having done nothing.
    pub backend_error: f64,
    /// A backend call does its work and its answer is lost (an error comes back).
    pub lost_ack: f64,
    /// A backend call takes seconds to minutes.
    pub slow: f64,
    /// The controller dies at a given event.
    pub crash: f64,
    /// A measurement finds no data.
    pub missing_metrics: f64,
    /// The candidate serves errors (per seed): its analyses fail.
    pub bad_candidate: f64,
    /// The candidate cannot start (per seed).
    pub candidate_fails: f64,
    /// The proxy trips a guardrail at a given event.
    pub guardrail: f64,
    /// A person types a random command at a given event.
    pub stray_command: f64,
    /// A hook answers non-2xx.
    pub hook_failure: f64,
}

/// How a seed's rollout ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The candidate serves.
    Promoted,
    /// The stable version serves (rolled back or aborted).
    RolledBack,
}

/// What one seed did.
pub struct Report {
    /// How it ended.
    pub outcome: Outcome,
    /// How often the controller was killed and restarted.
    pub crashes: u32,
    /// The rollout's last status, in words.
    pub description: String,
    /// The rollout's history, with the time of each event.
    pub events: Vec<String>,
    /// Hook deliveries, by attempt and point, in order.
    pub hooks: Vec<(u32, HookPoint)>,
}

/// The workloads as the simulated backend keeps them.
#[derive(Clone, Debug, Default)]
struct Slots {
    stable: Option<String>,
    candidate: Option<String>,
    previous: Option<String>,
}

#[derive(Debug, Default)]
struct World {
    slots: Slots,
    stored: Option<Stored>,
    /// Bumped by `recover`: calls a dead controller still had in flight are fenced off.
    fence: u64,
}

/// A backend in memory that keeps the `Backend` contract (idempotent operations,
/// compare-and-swap state with replay of a write whose answer was lost, fencing on
/// `recover`) and injects the faults a real one shows.
pub struct SimBackend {
    world: Mutex<World>,
    rng: SharedRng,
    faults: Faults,
    /// This seed's candidate cannot start.
    candidate_fails: bool,
}

const RELEASE: &str = "shop";

fn endpoint(version: &str) -> Vec<String> {
    let port = if version == "v1" { 9001 } else { 9002 };
    vec![format!("127.0.0.1:{port}")]
}

impl SimBackend {
    fn world(&self) -> std::sync::MutexGuard<'_, World> {
        self.world
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Before a call acts: maybe slow, maybe failing at once; returns the fence the call
    /// started under.
    async fn enter(&self, operation: &str) -> Result<u64, BackendError> {
        let fence = self.world().fence;
        let delay = self.rng.with(|r| {
            if r.chance(self.faults.slow) {
                r.between(1_000, 90_000)
            } else {
                r.between(1, 200)
            }
        });
        tokio::time::sleep(Duration::from_millis(delay)).await;
        if self.rng.with(|r| r.chance(self.faults.backend_error)) {
            return Err(BackendError::Unavailable(format!(
                "simulated: {operation} failed"
            )));
        }
        Ok(fence)
    }

    /// Applies a call's work unless `recover` fenced it off since it started; then maybe
    /// loses the answer.
    fn apply<T>(
        &self,
        fence: u64,
        operation: &str,
        work: impl FnOnce(&mut World) -> Result<T, BackendError>,
    ) -> Result<T, BackendError> {
        let mut world = self.world();
        if world.fence != fence {
            return Err(BackendError::Unavailable(format!(
                "simulated: {operation} fenced off by a newer controller"
            )));
        }
        let result = work(&mut world)?;
        drop(world);
        if self.rng.with(|r| r.chance(self.faults.lost_ack)) {
            return Err(BackendError::Unavailable(format!(
                "simulated: the answer to {operation} was lost"
            )));
        }
        Ok(result)
    }

    fn slots(&self) -> Slots {
        self.world().slots.clone()
    }
}

impl Backend for SimBackend {
    fn kind(&self) -> &'static str {
        "local"
    }

    fn stable<'a>(
        &'a self,
        _release: &'a Release,
        version: &'a str,
    ) -> BoxFuture<'a, Result<SlotView, BackendError>> {
        Box::pin(async move {
            let fence = self.enter("stable").await?;
            self.apply(fence, "stable", |w| {
                let version = w
                    .slots
                    .stable
                    .get_or_insert_with(|| version.to_string())
                    .clone();
                Ok(SlotView {
                    endpoints: endpoint(&version),
                    version,
                })
            })
        })
    }

    fn deploy<'a>(
        &'a self,
        _release: &'a Release,
        version: &'a str,
    ) -> BoxFuture<'a, Result<Readiness, BackendError>> {
        Box::pin(async move {
            let fence = self.enter("deploy").await?;
            self.apply(fence, "deploy", |w| {
                w.slots.candidate = Some(version.to_string());
                Ok(())
            })?;
            // Readiness takes a while; a retirement may cancel the deploy meanwhile.
            let wait = self.rng.with(|r| r.between(500, 20_000));
            tokio::time::sleep(Duration::from_millis(wait)).await;
            if self.candidate_fails {
                return Ok(Readiness::Failed {
                    reason: "simulated: the candidate exits at once".into(),
                });
            }
            let fence = self.world().fence;
            self.apply(fence, "deploy", |w| match &w.slots.candidate {
                Some(v) if v == version => Ok(Readiness::Ready(SlotView {
                    version: version.to_string(),
                    endpoints: endpoint(version),
                })),
                _ => Err(BackendError::Unavailable(
                    "simulated: the candidate was removed while starting".into(),
                )),
            })
        })
    }

    fn endpoints<'a>(
        &'a self,
        _release: &'a str,
        slot: Slot,
    ) -> BoxFuture<'a, Result<Option<SlotView>, BackendError>> {
        Box::pin(async move {
            let fence = self.enter("endpoints").await?;
            self.apply(fence, "endpoints", |w| {
                let version = match slot {
                    Slot::Stable => w.slots.stable.clone(),
                    Slot::Candidate => w.slots.candidate.clone(),
                    Slot::Previous => w.slots.previous.clone(),
                };
                Ok(version.map(|version| SlotView {
                    endpoints: endpoint(&version),
                    version,
                }))
            })
        })
    }

    fn recover<'a>(&'a self, _release: &'a str) -> BoxFuture<'a, Result<(), BackendError>> {
        Box::pin(async move {
            self.enter("recover").await?;
            self.world().fence += 1;
            Ok(())
        })
    }

    fn promote<'a>(&'a self, _release: &'a str) -> BoxFuture<'a, Result<(), BackendError>> {
        Box::pin(async move {
            let fence = self.enter("promote").await?;
            self.apply(fence, "promote", |w| {
                if let Some(candidate) = w.slots.candidate.take() {
                    w.slots.previous = w.slots.stable.replace(candidate);
                }
                Ok(())
            })
        })
    }

    fn retire<'a>(
        &'a self,
        _release: &'a str,
        slot: Slot,
    ) -> BoxFuture<'a, Result<(), BackendError>> {
        Box::pin(async move {
            let fence = self.enter("retire").await?;
            self.apply(fence, "retire", |w| {
                match slot {
                    Slot::Stable => w.slots.stable = None,
                    Slot::Candidate => w.slots.candidate = None,
                    Slot::Previous => w.slots.previous = None,
                }
                Ok(())
            })
        })
    }

    fn load_state<'a>(
        &'a self,
        _release: &'a str,
    ) -> BoxFuture<'a, Result<Option<Stored>, BackendError>> {
        Box::pin(async move {
            let fence = self.enter("load_state").await?;
            self.apply(fence, "load_state", |w| Ok(w.stored.clone()))
        })
    }

    fn store_state<'a>(
        &'a self,
        release: &'a str,
        state: &'a serde_json::Value,
        expected: Option<u64>,
    ) -> BoxFuture<'a, Result<u64, BackendError>> {
        Box::pin(async move {
            let fence = self.enter("store_state").await?;
            self.apply(fence, "store_state", |w| {
                let current = w.stored.as_ref().map(|s| s.version);
                if current != expected {
                    // A write whose answer was lost, sent again: replayed, not a conflict.
                    if let Some(stored) = &w.stored
                        && stored.version == expected.unwrap_or(0) + 1
                        && &stored.state == state
                    {
                        return Ok(stored.version);
                    }
                    return Err(BackendError::Conflict {
                        release: release.to_string(),
                    });
                }
                let version = current.unwrap_or(0) + 1;
                w.stored = Some(Stored {
                    version,
                    state: state.clone(),
                });
                Ok(version)
            })
        })
    }

    fn releases(&self) -> BoxFuture<'_, Result<Vec<String>, BackendError>> {
        Box::pin(async move {
            let fence = self.enter("releases").await?;
            self.apply(fence, "releases", |w| {
                Ok(w.stored.iter().map(|_| RELEASE.to_string()).collect())
            })
        })
    }
}

/// Hook delivery as the hooks' receivers see it: every delivery recorded (once the
/// seconds it takes have passed), and answered non-2xx now and then.
pub struct SimHooks {
    rng: SharedRng,
    failure: f64,
    delivered: Mutex<Vec<(u32, HookPoint)>>,
}

impl HookDelivery for SimHooks {
    fn deliver<'a>(
        &'a self,
        _hooks: &'a [HookSpec],
        payload: &'a HookPayload<'a>,
    ) -> BoxFuture<'a, Result<(), String>> {
        Box::pin(async move {
            let (delay, failed) = self
                .rng
                .with(|r| (r.between(10, 3_000), r.chance(self.failure)));
            tokio::time::sleep(Duration::from_millis(delay)).await;
            self.delivered
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .push((payload.attempt, payload.point));
            if failed {
                return Err("simulated: the hook answered 503".into());
            }
            Ok(())
        })
    }
}

/// The proxy's traffic as the builtin analyses read it: the stable version healthy, the
/// candidate healthy or (a bad candidate) failing half its requests, and now and then no
/// data at all.
pub struct SimTraffic {
    rng: SharedRng,
    missing: f64,
    bad_candidate: bool,
}

impl SimTraffic {
    fn stats(&self, version: &str, seconds: u64) -> Option<(u64, u64)> {
        if self.rng.with(|r| r.chance(self.missing)) {
            return None;
        }
        let requests = 20 * seconds.max(1);
        let errors = if version != "v1" && self.bad_candidate {
            requests / 2
        } else {
            0
        };
        Some((requests, errors))
    }
}

impl WindowSource for SimTraffic {
    fn window(&self, _release: &str, version: &str, seconds: u64) -> Option<WindowStats> {
        let (requests, errors) = self.stats(version, seconds)?;
        Some(WindowStats {
            seconds,
            requests,
            errors,
            error_rate: Some(errors as f64 / requests as f64),
            request_rate: requests as f64 / seconds.max(1) as f64,
            latency_p50: Some(0.01),
            latency_p90: Some(0.02),
            latency_p95: Some(0.03),
            latency_p99: Some(0.05),
        })
    }

    fn series(&self, release: &str, version: &str, seconds: u64) -> Vec<WindowStats> {
        (0..seconds)
            .filter_map(|_| self.window(release, version, 1))
            .collect()
    }

    fn evidence(&self, _release: &str, version: &str, seconds: u64) -> Option<Evidence> {
        let (requests, errors) = self.stats(version, seconds)?;
        Some(Evidence {
            requests: requests as f64,
            errors: errors as f64,
            seconds: seconds as f64,
            ..Evidence::default()
        })
    }
}

/// The release a seed rolls out: a canary with analyses, a pause, mirroring and a header
/// route, or a blue-green switch (automatic or by hand) after a pre-promotion analysis;
/// every other seed with a progress deadline that can expire anywhere.
fn release(seed: u64) -> Release {
    let strategy = match seed % 3 {
        0 => "canary:\n      scaleDownDelay: 30s\n      steps:\n        - setWeight: 10\n        - analysis: {}\n        - setWeight: 50\n        - pause: {duration: 1m}\n        - analysis: {}\n        - mirror: {percent: 20}\n        - setWeight: 100".to_string(),
        1 => "blueGreen:\n      scaleDownDelay: 30s".to_string(),
        _ => "blueGreen:\n      scaleDownDelay: 30s\n      autoPromotion: false".to_string(),
    };
    let deadline = if seed.is_multiple_of(2) {
        format!("\n    progressDeadline: {}s", 120 + seed % 400)
    } else {
        String::new()
    };
    let text = format!(
        "apiVersion: cutover.dev/v1
kind: Release
metadata: {{name: {RELEASE}}}
spec:
  backend:
    local:
      stable: {{addresses: [\"127.0.0.1:9001\"]}}
      candidate: {{addresses: [\"127.0.0.1:9002\"]}}
  version: v2
  stableVersion: v1
  port: 8080
  strategy:
    {strategy}{deadline}
  hooks:
    preRollout: [{{url: \"http://127.0.0.1:9/pre-rollout\"}}]
    prePromotion: [{{url: \"http://127.0.0.1:9/pre-promotion\"}}]
    postPromotion: [{{url: \"http://127.0.0.1:9/post-promotion\"}}]
    onRollback: [{{url: \"http://127.0.0.1:9/on-rollback\"}}]
  analysis:
    metrics:
      - name: errors
        provider: {{builtin: error_rate}}
        max: 0.05
        interval: 10s
        count: 3
        minRequests: 10
"
    );
    Controller::parse("shop.yaml", &text).unwrap_or_else(|e| panic!("seed {seed}: {e:?}"))
}

/// Starts a controller on the simulated world, retrying a start that a transient backend
/// failure refused (as a supervisor restarts a controller that exits).
async fn start(
    backend: &Arc<SimBackend>,
    clock: Clock,
    (traffic, hooks): (&Arc<SimTraffic>, &Arc<SimHooks>),
    seed: u64,
) -> Controller {
    for _ in 0..100 {
        let options = ControllerOptions {
            backend: backend.clone(),
            proxy: None,
            prometheus: None,
            notifications: Vec::new(),
        };
        let windows: Arc<dyn WindowSource> = traffic.clone();
        let hooks: Arc<dyn HookDelivery> = hooks.clone();
        let substitutes = Substitutes {
            clock,
            windows: Some(windows),
            hooks: Some(hooks),
            notify_policy: None,
        };
        match Controller::start_with(options, substitutes).await {
            Ok(controller) => return controller,
            Err(_) => tokio::time::sleep(Duration::from_secs(5)).await,
        }
    }
    panic!("seed {seed}: the controller never started");
}

/// Submits the release, again after transient failures, as `cutover run` is retried.
async fn submit(controller: &Controller, release: &Release, seed: u64) {
    for _ in 0..100 {
        if controller.submit(release.clone()).await.is_ok() {
            return;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    panic!("seed {seed}: the rollout was never accepted");
}

fn any_command(rng: &mut Rng) -> Command {
    match rng.between(0, 6) {
        0 => Command::Promote,
        1 => Command::PromoteFull,
        2 => Command::Abort,
        3 => Command::Pause,
        4 => Command::Resume,
        5 => Command::Retry,
        _ => Command::Resume,
    }
}

/// Runs seed `seed`'s rollout to its end and checks the invariants; panics naming the
/// seed when one does not hold.
pub fn run_seed(seed: u64, faults: &Faults) -> Report {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .expect("a runtime");
    runtime.block_on(drive(seed, faults))
}

async fn drive(seed: u64, faults: &Faults) -> Report {
    let rng = SharedRng(Arc::new(Mutex::new(Rng::new(seed))));
    let (bad_candidate, candidate_fails) = rng.with(|r| {
        (
            r.chance(faults.bad_candidate),
            r.chance(faults.candidate_fails),
        )
    });
    let backend = Arc::new(SimBackend {
        world: Mutex::new(World {
            slots: Slots {
                stable: Some("v1".into()),
                ..Slots::default()
            },
            ..World::default()
        }),
        rng: rng.clone(),
        faults: faults.clone(),
        candidate_fails,
    });
    let traffic = Arc::new(SimTraffic {
        rng: rng.clone(),
        missing: faults.missing_metrics,
        bad_candidate,
    });
    let hooks = Arc::new(SimHooks {
        rng: rng.clone(),
        failure: faults.hook_failure,
        delivered: Mutex::new(Vec::new()),
    });
    let clock = Clock::simulated(Timestamp(1_700_000_000_000));
    let mut controller = start(&backend, clock, (&traffic, &hooks), seed).await;
    let release = release(seed);
    submit(&controller, &release, seed).await;
    let mut crashes = 0;
    // Faults at random points for a while; then only what an operator does to end a
    // rollout that waits for a person (a manual switch, an inconclusive analysis).
    for event in 0..400u32 {
        let wait = rng.with(|r| r.between(100, 20_000));
        tokio::time::sleep(Duration::from_millis(wait)).await;
        let faulty = event < 30;
        let (crash, command, trip) = rng.with(|r| {
            (
                faulty && r.chance(faults.crash),
                faulty && r.chance(faults.stray_command),
                faulty && r.chance(faults.guardrail),
            )
        });
        if crash {
            controller.stop();
            drop(controller);
            crashes += 1;
            controller = start(&backend, clock, (&traffic, &hooks), seed).await;
            // An accepted rollout was stored before it was accepted: it is never lost.
            assert!(
                controller.status(RELEASE).is_ok(),
                "seed {seed}: the accepted rollout was lost in a crash"
            );
            continue;
        }
        if trip {
            let _ = controller.report_guardrail_trip(
                RELEASE,
                "v2",
                "candidate-5xx".into(),
                "simulated: 0.5 over the limit 0.1".into(),
            );
        }
        if command {
            let command = rng.with(any_command);
            let _ = tokio::time::timeout(
                Duration::from_secs(600),
                controller.command(RELEASE, command),
            )
            .await;
        }
        let done = controller.status(RELEASE).is_ok_and(|s| s.done);
        if done && !faulty {
            break;
        }
        if !faulty && event.is_multiple_of(10) {
            // Waiting for a person: the operator answers, as one would (without stray
            // commands, only by promoting).
            let command = rng.with(|r| match r.between(0, 2) {
                _ if faults.stray_command == 0.0 => Command::Promote,
                0 => Command::Promote,
                1 => Command::Resume,
                _ => Command::Abort,
            });
            let _ = tokio::time::timeout(
                Duration::from_secs(600),
                controller.command(RELEASE, command),
            )
            .await;
        }
    }
    // Let the routes and the last status settle: past one endpoint refresh, so that a
    // controller restarted while the backend did not answer has read the slots again.
    tokio::time::sleep(Duration::from_secs(25)).await;
    let (outcome, events) = check_end_state(seed, &controller, &backend).await;
    let hooks = std::mem::take(
        &mut *hooks
            .delivered
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner),
    );
    check_hooks(seed, &hooks);
    let description = controller
        .status(RELEASE)
        .map(|s| {
            format!(
                "{} ({})",
                s.description,
                s.reason.clone().unwrap_or_default()
            )
        })
        .unwrap_or_default();
    controller.stop();
    Report {
        outcome,
        crashes,
        description,
        events,
        hooks,
    }
}

/// The invariants every seed must end with.
async fn check_end_state(
    seed: u64,
    controller: &Controller,
    backend: &SimBackend,
) -> (Outcome, Vec<String>) {
    let status = controller
        .status(RELEASE)
        .unwrap_or_else(|e| panic!("seed {seed}: no status: {e}"));
    assert!(
        status.done,
        "seed {seed}: did not finish: {}",
        status.description
    );
    let slots = backend.slots();
    assert_eq!(
        slots.candidate, None,
        "seed {seed}: the candidate workload was left: {slots:?}"
    );
    assert_eq!(
        slots.previous, None,
        "seed {seed}: the previous version was not retired: {slots:?}"
    );
    let outcome = match status.outcome {
        Some("promoted") => Outcome::Promoted,
        Some("rolledBack" | "aborted") => Outcome::RolledBack,
        other => panic!("seed {seed}: ended {other:?}"),
    };
    let serving = match outcome {
        Outcome::Promoted => "v2",
        Outcome::RolledBack => "v1",
    };
    assert_eq!(
        slots.stable.as_deref(),
        Some(serving),
        "seed {seed}: {outcome:?} but {slots:?}"
    );
    let table = controller
        .routes()
        .unwrap_or_else(|| panic!("seed {seed}: no route table published"));
    let route = table
        .routes
        .iter()
        .find(|r| r.release == RELEASE)
        .unwrap_or_else(|| panic!("seed {seed}: no route for the release"));
    assert_eq!(route.weight, 0, "seed {seed}: candidate weight left");
    assert!(
        route.candidate.is_none(),
        "seed {seed}: the route still names a candidate: {route:?}"
    );
    assert!(
        route.match_rules.is_empty(),
        "seed {seed}: header route left"
    );
    assert_eq!(route.mirror_percent, 0, "seed {seed}: mirroring left on");
    assert_eq!(
        route.stable.name,
        serving,
        "seed {seed}: the route's stable version: {route:?}, {:#?}",
        controller.history(RELEASE).await.map(|h| h.events)
    );
    let history = match controller.history(RELEASE).await {
        Ok(history) => history,
        // The store failed transiently on this read: read again.
        Err(_) => {
            let mut again = None;
            for _ in 0..50 {
                if let Ok(history) = controller.history(RELEASE).await {
                    again = Some(history);
                    break;
                }
            }
            again.unwrap_or_else(|| panic!("seed {seed}: the history cannot be read"))
        }
    };
    let messages: Vec<&str> = history.events.iter().map(|e| e.message.as_str()).collect();
    check_steps(seed, &messages);
    let events = history
        .events
        .iter()
        .map(|e| format!("{} {}", e.at.0, e.message))
        .collect();
    (outcome, events)
}

/// Per attempt (a `retry` starts one): the steps are entered in order, each one after the
/// one before, none skipped or gone back to, across crashes; and an attempt that rolled
/// back never promoted.
fn check_steps(seed: u64, messages: &[&str]) {
    for attempt in messages.split(|m| m.starts_with("retry: attempt")) {
        let mut last: Option<usize> = None;
        for message in attempt {
            let Some(index) = message
                .strip_prefix("step ")
                .and_then(|rest| rest.split(':').next())
                .and_then(|n| n.parse::<usize>().ok())
            else {
                continue;
            };
            if let Some(last) = last
                && index != last
            {
                assert_eq!(
                    index,
                    last + 1,
                    "seed {seed}: step {index} entered after step {last}: {messages:#?}"
                );
            }
            last = Some(index);
        }
        let rolled_back = attempt.iter().any(|m| m.starts_with("rolling back"));
        let promoted = attempt.iter().any(|m| m.starts_with("promoted:"));
        assert!(
            !(rolled_back && promoted),
            "seed {seed}: an attempt both rolled back and promoted: {messages:#?}"
        );
    }
}

/// The informational hooks (`postPromotion`, `onRollback`) run at most once per attempt,
/// across crashes.
fn check_hooks(seed: u64, delivered: &[(u32, HookPoint)]) {
    for point in [HookPoint::PostPromotion, HookPoint::OnRollback] {
        let mut attempts: Vec<u32> = delivered
            .iter()
            .filter(|(_, p)| *p == point)
            .map(|(attempt, _)| *attempt)
            .collect();
        let all = attempts.len();
        attempts.dedup();
        assert_eq!(
            all,
            attempts.len(),
            "seed {seed}: {point} ran twice in one attempt: {delivered:?}"
        );
    }
}
