//! A deterministic world for driving the rollout state machine in tests: a fake clock, a
//! fake backend (which workloads exist), a fake proxy (which route is applied), fake
//! analyses and hooks, with seeded fault injection (backend errors, controller crashes,
//! missing metrics, failing candidates, guardrail trips, people typing commands).

#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};

use cutover_core::Duration;
use cutover_core::judge::Verdict;
use cutover_core::plan::{AnalysisStage, HookPoints, Plan, PlanStep, StrategyKind};
use cutover_core::rollout::{
    Action, Command, Observation, Operation, Outcome, Phase, Rollout, Route, Slot, StepProgress,
    Timestamp,
};
use cutover_core::spec::{HookPoint, MatchRule};

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
        (self.next() >> 11) as f64 / (1u64 << 53) as f64 <= p
    }

    /// Uniform in `lo..=hi`.
    pub fn between(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo + 1)
    }
}

/// Probabilities of each fault, per opportunity.
#[derive(Clone, Debug, Default)]
pub struct Faults {
    /// A backend or proxy call fails transiently.
    pub backend_error: f64,
    /// The controller dies after carrying out an action.
    pub crash: f64,
    /// An analysis ends with no data (inconclusive) or provider errors.
    pub missing_metrics: f64,
    /// An analysis fails.
    pub analysis_failure: f64,
    /// The candidate cannot start.
    pub candidate_fails: f64,
    /// A guardrail trips at a given event.
    pub guardrail: f64,
    /// A hook answers non-2xx.
    pub hook_failure: f64,
    /// A person types a random command at a given event.
    pub stray_command: f64,
    /// An acknowledgement in flight is lost in a crash.
    pub lost_in_crash: f64,
}

/// Workloads by role, as the fake backend keeps them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Backend {
    /// Version names per slot.
    pub slots: BTreeMap<&'static str, String>,
    /// How many versions were ever created.
    pub created: u32,
}

pub struct World {
    pub rollout: Option<Rollout>,
    pub persisted: Option<serde_json::Value>,
    pub now: u64,
    pub rng: Rng,
    pub faults: Faults,
    pub backend: Backend,
    /// The route the proxy serves; `None` until the first route arrives.
    pub proxy_route: Option<Route>,
    /// Acknowledgements in flight: (delivery time, sequence, observation).
    pub in_flight: Vec<(u64, u64, Observation)>,
    seq: u64,
    /// Every action carried out, with its time.
    pub log: Vec<(u64, Action)>,
    /// Every route weight the machine asked for.
    pub weights: Vec<u8>,
    /// Attempts in which an analysis failure was delivered while the machine awaited it.
    pub failed_attempts: BTreeSet<u32>,
    /// Attempts in which the machine asked to promote.
    pub promoted_attempts: BTreeSet<u32>,
    pub crashes: u32,
    pub rejected: u32,
    /// How many times a person may still retry a rolled-back release.
    pub retries_left: u32,
    /// Verdicts for analysis runs in order; when exhausted, drawn from the faults.
    pub scripted_verdicts: Vec<Verdict>,
}

pub const T0: u64 = 1_700_000_000_000;

impl World {
    pub fn new(plan: Plan, seed: u64, faults: Faults) -> World {
        let mut backend = Backend::default();
        backend.slots.insert("stable", "v1".to_string());
        backend.created = 1;
        World {
            rollout: Some(Rollout::new(plan, Timestamp(T0))),
            persisted: None,
            now: T0,
            rng: Rng::new(seed),
            faults,
            backend,
            proxy_route: None,
            in_flight: Vec::new(),
            seq: 0,
            log: Vec::new(),
            weights: Vec::new(),
            failed_attempts: BTreeSet::new(),
            promoted_attempts: BTreeSet::new(),
            crashes: 0,
            rejected: 0,
            retries_left: 1,
            scripted_verdicts: Vec::new(),
        }
    }

    pub fn rollout(&self) -> &Rollout {
        self.rollout.as_ref().expect("the controller is running")
    }

    fn deliver_later(&mut self, delay_ms: u64, observation: Observation) {
        self.seq += 1;
        self.in_flight
            .push((self.now + delay_ms, self.seq, observation));
    }

    fn latency(&mut self) -> u64 {
        self.rng.between(5, 2_000)
    }

    /// Carries out every pending action. Returns false if the controller crashed.
    fn run_actions(&mut self) -> bool {
        loop {
            let Some(rollout) = self.rollout.as_mut() else {
                return false;
            };
            let attempt = rollout.attempt();
            let Some(action) = rollout.poll_action() else {
                return true;
            };
            self.log.push((self.now, action.clone()));
            match action {
                Action::Persist => {
                    self.persisted = Some(rollout.to_json());
                }
                Action::RunHook { point } => {
                    let passed = !self.rng.chance(self.faults.hook_failure);
                    let delay = self.latency();
                    self.deliver_later(
                        delay,
                        Observation::HookResult {
                            point,
                            passed,
                            detail: String::new(),
                        },
                    );
                }
                Action::Deploy => {
                    let delay = self.latency();
                    if self.rng.chance(self.faults.backend_error) {
                        self.deliver_later(
                            delay,
                            Observation::BackendError {
                                operation: Operation::Deploy,
                                message: "timeout".into(),
                            },
                        );
                    } else if self.rng.chance(self.faults.candidate_fails) {
                        // Half created: the backend must still be able to remove it.
                        self.backend.slots.insert("candidate", "broken".into());
                        self.deliver_later(
                            delay,
                            Observation::CandidateFailed {
                                reason: "image not found".into(),
                            },
                        );
                    } else {
                        if !self.backend.slots.contains_key("candidate") {
                            self.backend.created += 1;
                            self.backend
                                .slots
                                .insert("candidate", format!("v{}", self.backend.created));
                        }
                        self.deliver_later(delay, Observation::CandidateReady);
                    }
                }
                Action::SetRoute { generation, route } => {
                    assert!(
                        route.candidate_weight <= 100,
                        "weight {} out of range",
                        route.candidate_weight
                    );
                    assert!(route.mirror_percent <= 100);
                    self.weights.push(route.candidate_weight);
                    let delay = self.latency();
                    if self.rng.chance(self.faults.backend_error) {
                        self.deliver_later(
                            delay,
                            Observation::BackendError {
                                operation: Operation::SetRoute,
                                message: "proxy unreachable".into(),
                            },
                        );
                    } else {
                        self.proxy_route = Some(route);
                        self.deliver_later(delay, Observation::RouteApplied { generation });
                    }
                }
                Action::StartAnalysis { run, .. } => {
                    let verdict = if self.scripted_verdicts.is_empty() {
                        if self.rng.chance(self.faults.analysis_failure) {
                            Verdict::Failure
                        } else if self.rng.chance(self.faults.missing_metrics) {
                            if self.rng.chance(0.5) {
                                Verdict::Inconclusive
                            } else {
                                Verdict::Error
                            }
                        } else {
                            Verdict::Success
                        }
                    } else {
                        self.scripted_verdicts.remove(0)
                    };
                    let delay = self.rng.between(10_000, 180_000);
                    self.deliver_later(
                        delay,
                        Observation::AnalysisVerdict {
                            run,
                            verdict,
                            detail: format!("{verdict:?}"),
                        },
                    );
                }
                Action::StopAnalysis { run } => {
                    self.in_flight.retain(|(_, _, o)| !matches!(o, Observation::AnalysisVerdict { run: r, .. } if *r == run));
                }
                Action::Promote => {
                    self.promoted_attempts.insert(attempt);
                    let delay = self.latency();
                    if self.rng.chance(self.faults.backend_error) {
                        self.deliver_later(
                            delay,
                            Observation::BackendError {
                                operation: Operation::Promote,
                                message: "conflict".into(),
                            },
                        );
                    } else {
                        // Idempotent: promoting what is already promoted only re-points the route.
                        if let Some(candidate) = self.backend.slots.remove("candidate")
                            && let Some(old) = self.backend.slots.insert("stable", candidate)
                        {
                            self.backend.slots.insert("previous", old);
                        }
                        self.proxy_route = Some(Route::default());
                        self.deliver_later(delay, Observation::Promoted);
                    }
                }
                Action::Retire { slot } => {
                    let delay = self.latency();
                    if self.rng.chance(self.faults.backend_error) {
                        self.deliver_later(
                            delay,
                            Observation::BackendError {
                                operation: Operation::Retire,
                                message: "daemon busy".into(),
                            },
                        );
                    } else {
                        let key = match slot {
                            Slot::Candidate => "candidate",
                            Slot::Previous => "previous",
                            Slot::Stable => panic!("the machine must never retire stable"),
                        };
                        self.backend.slots.remove(key);
                        self.deliver_later(delay, Observation::Retired { slot });
                    }
                }
            }
            if self.faults.crash > 0.0 && self.rng.chance(self.faults.crash) {
                self.crash();
                return false;
            }
        }
    }

    /// The controller dies: its memory is gone, some acknowledgements are lost, and a new
    /// controller restores the last persisted state.
    pub fn crash(&mut self) {
        self.crashes += 1;
        self.rollout = None;
        let lost = self.faults.lost_in_crash;
        let mut kept = Vec::new();
        for item in std::mem::take(&mut self.in_flight) {
            if !self.rng.chance(lost) {
                kept.push(item);
            }
        }
        self.in_flight = kept;
        let state = self
            .persisted
            .clone()
            .expect("a state was persisted before any action");
        let mut restored = Rollout::from_json(state).expect("the persisted state reads back");
        restored.resume(Timestamp(self.now));
        self.rollout = Some(restored);
    }

    /// A person reacting to a rollout that waits for them.
    fn operator(&mut self) {
        let Some(rollout) = self.rollout.as_mut() else {
            return;
        };
        let now = Timestamp(self.now);
        if rollout.waits_for_person() {
            let command = match self.rng.between(0, 9) {
                0..=5 => Command::Promote,
                6..=7 => Command::Resume,
                _ => Command::Abort,
            };
            if rollout.handle(now, Observation::Command(command)).is_err() {
                self.rejected += 1;
            }
        } else if matches!(rollout.outcome(), Some(Outcome::RolledBack { .. }))
            && self.retries_left > 0
        {
            self.retries_left -= 1;
            rollout
                .handle(now, Observation::Command(Command::Retry))
                .expect("retry after a rollback is accepted");
        }
    }

    fn stray(&mut self) {
        let command = match self.rng.between(0, 5) {
            0 => Command::Promote,
            1 => Command::PromoteFull,
            2 => Command::Abort,
            3 => Command::Pause,
            4 => Command::Resume,
            _ => Command::Retry,
        };
        let now = Timestamp(self.now);
        if let Some(rollout) = self.rollout.as_mut()
            && rollout.handle(now, Observation::Command(command)).is_err()
        {
            self.rejected += 1;
        }
    }

    /// Runs until the rollout is done and nothing is in flight, or `max_events` pass.
    /// Returns whether it finished.
    pub fn run(&mut self, max_events: usize) -> bool {
        for _ in 0..max_events {
            if !self.run_actions() {
                continue;
            }
            let rollout = self.rollout();
            if rollout.is_done() && self.in_flight.is_empty() {
                let rolled_back = matches!(rollout.outcome(), Some(Outcome::RolledBack { .. }));
                if !(rolled_back && self.retries_left > 0) {
                    return true;
                }
            }
            // The next event: a delivery, a timer, or a person after a while.
            let timer = rollout.poll_timeout().map(|t| t.0);
            let delivery = self.in_flight.iter().map(|(t, s, _)| (*t, *s)).min();
            let waits = rollout.waits_for_person() || rollout.is_done();
            let person = waits.then(|| self.now + 60_000);
            let next = [timer, delivery.map(|d| d.0), person]
                .into_iter()
                .flatten()
                .min();
            let Some(next) = next else {
                panic!(
                    "stuck: nothing in flight, no timer, no person needed, phase {:?}",
                    self.rollout().phase()
                );
            };
            self.now = self.now.max(next);
            let now = Timestamp(self.now);
            if self.rng.chance(self.faults.guardrail) {
                let rollout = self.rollout.as_mut().expect("running");
                let _ = rollout.handle(
                    now,
                    Observation::GuardrailTripped {
                        name: "5xx".into(),
                        detail: "0.9 > 0.5".into(),
                    },
                );
            }
            if self.rng.chance(self.faults.stray_command) {
                self.stray();
            }
            if delivery.is_some_and(|(t, _)| t <= self.now) {
                let (t, s) = delivery.expect("checked");
                let index = self
                    .in_flight
                    .iter()
                    .position(|(tt, ss, _)| *tt == t && *ss == s)
                    .expect("present");
                let (_, _, observation) = self.in_flight.remove(index);
                let rollout = self.rollout.as_mut().expect("running");
                let attempt = rollout.attempt();
                let awaited = matches!(
                    (rollout.phase(), &observation),
                    (Phase::Step { progress: StepProgress::Analyzing { run }, .. }, Observation::AnalysisVerdict { run: r, verdict: Verdict::Failure, .. }) if run == r
                );
                if awaited {
                    self.failed_attempts.insert(attempt);
                }
                let _ = rollout.handle(now, observation);
            }
            if timer.is_some_and(|t| t <= self.now) {
                self.rollout.as_mut().expect("running").handle_timeout(now);
            }
            if person.is_some_and(|p| p <= self.now) {
                self.operator();
            }
        }
        false
    }

    /// Checks what must hold once a rollout is done; panics with the seed's story if not.
    pub fn check_end_state(&self, seed: u64) {
        let rollout = self.rollout();
        let outcome = rollout
            .outcome()
            .unwrap_or_else(|| panic!("seed {seed}: not done: {:?}", rollout.phase()));
        let route = self.proxy_route.clone().unwrap_or_default();
        assert_eq!(
            route.candidate_weight, 0,
            "seed {seed}: candidate weight left at the end"
        );
        assert!(
            route.header_route.is_empty(),
            "seed {seed}: header route left"
        );
        assert_eq!(route.mirror_percent, 0, "seed {seed}: mirroring left on");
        let slots: Vec<&str> = self.backend.slots.keys().copied().collect();
        assert_eq!(
            slots,
            vec!["stable"],
            "seed {seed}: workloads left: {:?}",
            self.backend.slots
        );
        match outcome {
            Outcome::Promoted => {
                assert_ne!(
                    self.backend.slots["stable"], "v1",
                    "seed {seed}: promoted but v1 still stable"
                );
                assert!(
                    !self.failed_attempts.contains(&rollout.attempt()),
                    "seed {seed}: promoted after a failed analysis"
                );
            }
            Outcome::RolledBack { .. } => {
                assert_eq!(
                    self.backend.slots["stable"], "v1",
                    "seed {seed}: rolled back but stable changed"
                );
            }
        }
        for attempt in &self.failed_attempts {
            assert!(
                !self.promoted_attempts.contains(attempt),
                "seed {seed}: attempt {attempt} promoted after a failed analysis"
            );
        }
    }
}

/// A canary plan: 10, analysis, 50 (+ a 1m pause), analysis, header route, mirror, 100.
pub fn canary_plan() -> Plan {
    Plan {
        kind: StrategyKind::Canary,
        steps: vec![
            PlanStep::SetWeight { weight: 10 },
            PlanStep::Analysis {
                metrics: vec!["errors".into()],
                stage: AnalysisStage::Step,
                minimum: Duration::from_secs(60),
            },
            PlanStep::SetHeaderRoute {
                rules: vec![MatchRule {
                    header: Some("X-Canary".into()),
                    ..MatchRule::default()
                }],
            },
            PlanStep::Mirror { percent: 20 },
            PlanStep::SetWeight { weight: 50 },
            PlanStep::Pause {
                duration: Some(Duration::from_secs(60)),
            },
            PlanStep::Analysis {
                metrics: vec!["errors".into()],
                stage: AnalysisStage::Step,
                minimum: Duration::from_secs(60),
            },
            PlanStep::SetWeight { weight: 100 },
            PlanStep::PromotionGate,
        ],
        scale_down_delay: Duration::from_secs(30),
        progress_deadline: Duration::from_secs(3600),
        hooks: HookPoints {
            pre_rollout: true,
            pre_promotion: true,
            post_promotion: true,
            on_rollback: true,
        },
    }
}

/// A blue/green plan as the blue-green preset expands (with a manual gate when `manual`).
pub fn blue_green_plan(manual: bool) -> Plan {
    let mut steps = vec![
        PlanStep::SetHeaderRoute {
            rules: vec![MatchRule {
                header: Some("X-Cutover-Preview".into()),
                ..MatchRule::default()
            }],
        },
        PlanStep::Analysis {
            metrics: vec!["errors".into()],
            stage: AnalysisStage::PrePromotion,
            minimum: Duration::from_secs(60),
        },
    ];
    if manual {
        steps.push(PlanStep::Pause { duration: None });
    }
    steps.extend([
        PlanStep::SetHeaderRoute { rules: Vec::new() },
        PlanStep::SetWeight { weight: 100 },
        PlanStep::Analysis {
            metrics: vec!["errors".into()],
            stage: AnalysisStage::PostPromotion,
            minimum: Duration::from_secs(60),
        },
    ]);
    Plan {
        kind: StrategyKind::BlueGreen,
        steps,
        scale_down_delay: Duration::from_secs(30),
        progress_deadline: Duration::from_secs(3600),
        hooks: HookPoints::default(),
    }
}

pub fn hook(point: HookPoint, passed: bool) -> Observation {
    Observation::HookResult {
        point,
        passed,
        detail: String::new(),
    }
}
