//! The seeded fault simulation, run through the controller users run: its `Controller`
//! and `Driver`, on a simulated clock that follows tokio's paused time, with a simulated
//! backend (transient errors, lost acknowledgements, slow calls, candidates that cannot
//! start, fencing of a dead controller's calls on `recover`), simulated traffic for the
//! builtin analyses (missing metrics, failing candidates), guardrail trips, stray commands,
//! crashes anywhere (every driver task dropped mid-flight and the controller restarted from
//! the state persisted in the simulated backend) and progress deadlines.
//!
//! Each seed is one rollout on its own paused runtime; a failure names its seed, and
//! `SIM_SEED=n` runs that seed alone.

mod sim;

use cutover_controller::Clock;
use cutover_core::rollout::Timestamp;
use cutover_core::spec::HookPoint;
use sim::{Faults, Outcome, run_seed};

/// Every kind of fault, each frequent enough to happen in most seeds.
fn every_fault() -> Faults {
    Faults {
        backend_error: 0.1,
        lost_ack: 0.05,
        slow: 0.2,
        crash: 0.08,
        missing_metrics: 0.15,
        bad_candidate: 0.15,
        candidate_fails: 0.05,
        guardrail: 0.03,
        stray_command: 0.08,
        hook_failure: 0.1,
    }
}

/// 1,000 seeded rollouts with every kind of fault: each ends promoted or rolled back, with
/// nothing left behind, no step skipped or entered out of order across crashes, and never
/// a promotion in an attempt that rolled back.
#[test]
fn every_seeded_rollout_through_the_driver_ends_promoted_or_rolled_back() {
    let seeds: Vec<u64> = match std::env::var("SIM_SEED") {
        Ok(seed) => vec![seed.parse().expect("SIM_SEED is a number")],
        Err(_) => (0..1_000).collect(),
    };
    let faults = every_fault();
    let (mut promoted, mut rolled_back, mut crashes) = (0, 0, 0);
    let started = std::time::Instant::now();
    // Each seed runs on a runtime of its own, so seeds spread over the cores and every
    // seed still sees the same world in every run.
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get().min(4));
    let reports: Vec<_> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|worker| {
                let (seeds, faults) = (&seeds, &faults);
                scope.spawn(move || {
                    seeds
                        .iter()
                        .skip(worker)
                        .step_by(threads)
                        .map(|seed| run_seed(*seed, faults))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().unwrap_or_else(|e| std::panic::resume_unwind(e)))
            .collect()
    });
    let mut informational = [0, 0];
    for report in reports {
        for (_, point) in &report.hooks {
            match point {
                HookPoint::PostPromotion => informational[0] += 1,
                HookPoint::OnRollback => informational[1] += 1,
                _ => {}
            }
        }
        crashes += report.crashes;
        match report.outcome {
            Outcome::Promoted => promoted += 1,
            Outcome::RolledBack => rolled_back += 1,
        }
    }
    eprintln!(
        "{} seeds in {:?}: {promoted} promoted, {rolled_back} rolled back, {crashes} crashes",
        seeds.len(),
        started.elapsed()
    );
    if seeds.len() > 1 {
        // The faults are frequent enough that both outcomes and many crashes happen.
        assert!(
            promoted > 100 && rolled_back > 100,
            "promoted {promoted}, rolled back {rolled_back}"
        );
        assert!(crashes > 500, "only {crashes} crashes");
        assert!(
            informational.iter().all(|n| *n > 100),
            "postPromotion and onRollback hooks delivered: {informational:?}"
        );
    }
}

/// Without faults (and without a progress deadline: odd seeds) every rollout promotes:
/// the simulation's harness itself does not roll anything back.
#[test]
fn without_faults_every_strategy_promotes() {
    for seed in [1, 3, 5, 7, 9, 11] {
        let report = run_seed(seed, &Faults::default());
        assert_eq!(
            report.outcome,
            Outcome::Promoted,
            "seed {seed}: {}",
            report.description
        );
        assert_eq!(report.crashes, 0);
    }
}

/// A seed replays exactly: the same events at the same simulated times, so the seed a
/// failure prints reproduces it.
#[test]
fn a_seed_replays_exactly() {
    let faults = every_fault();
    for seed in [0, 1, 2, 17] {
        let first = run_seed(seed, &faults);
        let second = run_seed(seed, &faults);
        assert_eq!(first.events, second.events, "seed {seed}");
        assert_eq!(first.crashes, second.crashes, "seed {seed}");
    }
}

/// The simulated clock starts at its epoch and moves with paused time only, so a seed
/// sees the same timestamps in every run.
#[test]
fn the_simulated_clock_is_the_same_in_every_run() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .expect("a runtime");
    let read = || {
        runtime.block_on(async {
            let clock = Clock::simulated(Timestamp(5_000));
            tokio::time::sleep(std::time::Duration::from_secs(90)).await;
            clock.now()
        })
    };
    assert_eq!(read(), Timestamp(95_000));
    assert_eq!(read(), Timestamp(95_000));
}
