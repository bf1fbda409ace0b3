//! The [`Backend`] contract as checks any backend can be run through, written once (the
//! `conformance` feature; test code only).
//!
//! A backend's crate adds one file, `tests/conformance.rs`: a [`Harness`] that makes a
//! fresh world for one release (a state directory, a Swarm service, a Deployment on the fake
//! API server) and backends over it, and the line
//! `cutover_backend::conformance_suite!(its_harness);`, which makes one test per check, named
//! after the rule it proves. A harness that cannot have its world (no Docker engine, say)
//! returns `None` and the test skips, saying so; in CI it should fail instead.
//!
//! The checks count what really runs through [`Harness::workloads`], not through the
//! backend's own answers, so a backend that loses track of a second candidate fails.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use cutover_core::spec::Release;

use crate::backend::{Backend, BackendError, BoxFuture, Readiness, Slot, SlotView};

/// The stable slot's version in every check.
pub const STABLE: &str = "v1";
/// The candidate's version in every check.
pub const CANDIDATE: &str = "v2";

/// How long one backend call may take before a check fails: a deploy waits for readiness.
pub const CALL_BUDGET: Duration = Duration::from_secs(120);

/// One check's world, made fresh for it.
pub trait Harness: Send + Sync {
    /// A new backend over this world, as a new controller process would make it: every call
    /// gives another one (another writer), so two calls are an old and a new controller.
    fn backend(&self) -> BoxFuture<'_, Arc<dyn Backend>>;

    /// The release the checks run: its stable slot can be adopted or started as
    /// [`STABLE`], its candidate runs as [`CANDIDATE`] and becomes ready.
    fn release(&self) -> &Release;

    /// How many workloads of the release run now (instance sets, services, Deployments
    /// with replicas), counted by the harness from the platform itself.
    fn workloads(&self) -> BoxFuture<'_, usize>;

    /// Removes what the check made; runs also when the check failed.
    fn cleanup(&self) -> BoxFuture<'_, ()>;

    /// Makes the platform fail the backend's calls until [`mend`](Harness::mend) (the API
    /// server answering 503, a state directory that cannot be written): `false` when this
    /// harness cannot, and the check that needs it says it skipped.
    fn break_platform(&self) -> BoxFuture<'_, bool> {
        Box::pin(async { false })
    }

    /// Undoes [`break_platform`](Harness::break_platform).
    fn mend(&self) -> BoxFuture<'_, ()> {
        Box::pin(async {})
    }
}

/// Runs `check` against `harness` and cleans up, passed or failed (a failure is raised
/// again after the cleanup).
pub async fn run<F, Fut>(harness: Arc<dyn Harness>, check: F)
where
    F: FnOnce(Arc<dyn Harness>) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let outcome = tokio::spawn(check(harness.clone())).await;
    harness.cleanup().await;
    if let Err(e) = outcome {
        if e.is_panic() {
            std::panic::resume_unwind(e.into_panic());
        }
        panic!("the check was cancelled: {e}");
    }
}

/// Awaits one backend call within [`CALL_BUDGET`].
async fn within<T>(what: &str, call: impl Future<Output = T>) -> T {
    tokio::time::timeout(CALL_BUDGET, call)
        .await
        .unwrap_or_else(|_| panic!("{what} took longer than {CALL_BUDGET:?}"))
}

fn name(h: &dyn Harness) -> &str {
    &h.release().metadata.name
}

async fn stable(h: &dyn Harness, backend: &dyn Backend) -> SlotView {
    let view = within("stable", backend.stable(h.release(), STABLE))
        .await
        .unwrap_or_else(|e| panic!("stable: {e}"));
    assert_eq!(view.version, STABLE, "the stable slot's version");
    view
}

async fn deploy(h: &dyn Harness, backend: &dyn Backend) -> SlotView {
    match within("deploy", backend.deploy(h.release(), CANDIDATE)).await {
        Ok(Readiness::Ready(view)) => view,
        Ok(Readiness::Failed { reason }) => panic!("the candidate failed: {reason}"),
        Err(e) => panic!("deploy: {e}"),
    }
}

async fn slot(backend: &dyn Backend, release: &str, slot: Slot) -> Option<SlotView> {
    within("endpoints", backend.endpoints(release, slot))
        .await
        .unwrap_or_else(|e| panic!("endpoints of {slot:?}: {e}"))
}

fn is_conflict<T: std::fmt::Debug>(result: &Result<T, BackendError>) -> bool {
    matches!(result, Err(BackendError::Conflict { .. }))
}

/// `deploy` twice of the same version finds the first candidate: one candidate runs.
pub async fn deploy_twice_leaves_one_candidate(h: Arc<dyn Harness>) {
    let backend = h.backend().await;
    stable(&*h, &*backend).await;
    assert_eq!(h.workloads().await, 1, "the stable slot alone runs");
    let first = deploy(&*h, &*backend).await;
    let second = deploy(&*h, &*backend).await;
    assert_eq!(first.version, CANDIDATE);
    assert_eq!(second.version, CANDIDATE);
    assert_eq!(h.workloads().await, 2, "stable and one candidate, not two");
}

/// A `deploy` cut short (the controller's timeout, a crash) is retried, and the retry
/// finishes the same candidate instead of starting another.
pub async fn deploy_is_retryable_after_an_interrupted_call(h: Arc<dyn Harness>) {
    let backend = h.backend().await;
    stable(&*h, &*backend).await;
    for budget in [1, 50, 500] {
        let cut = tokio::time::timeout(
            Duration::from_millis(budget),
            backend.deploy(h.release(), CANDIDATE),
        )
        .await;
        if let Ok(Err(e)) = &cut {
            assert!(e.is_retryable(), "an interrupted deploy's error: {e}");
        }
    }
    let view = deploy(&*h, &*backend).await;
    assert_eq!(view.version, CANDIDATE);
    assert_eq!(h.workloads().await, 2, "stable and one candidate");
    // A controller restarted after the interruption finishes it too.
    let restarted = h.backend().await;
    within("recover", restarted.recover(name(&*h)))
        .await
        .expect("recover");
    assert_eq!(deploy(&*h, &*restarted).await.version, CANDIDATE);
    assert_eq!(h.workloads().await, 2, "still one candidate");
}

/// A `deploy` that fails because the platform does (an error the backend calls
/// retryable, or no answer within a bound) is retried once the platform is back, and the
/// retry makes one candidate.
pub async fn deploy_is_retryable_after_an_error(h: Arc<dyn Harness>) {
    let backend = h.backend().await;
    stable(&*h, &*backend).await;
    if !h.break_platform().await {
        eprintln!("SKIPPED: this harness cannot make the platform fail");
        return;
    }
    let during = tokio::time::timeout(
        Duration::from_secs(5),
        backend.deploy(h.release(), CANDIDATE),
    )
    .await;
    h.mend().await;
    eprintln!("the deploy on a broken platform: {during:?}");
    match during {
        Ok(Ok(readiness)) => panic!("deployed on a broken platform: {readiness:?}"),
        Ok(Err(e)) => assert!(e.is_retryable(), "a platform failure is retryable: {e}"),
        Err(_) => {}
    }
    assert_eq!(deploy(&*h, &*backend).await.version, CANDIDATE);
    assert_eq!(h.workloads().await, 2, "stable and one candidate");
}

/// `stable` and `endpoints` report what runs: the versions and endpoints of the slots
/// that exist, and `None` for one that does not.
pub async fn stable_and_endpoints_report_what_runs(h: Arc<dyn Harness>) {
    let backend = h.backend().await;
    let release = name(&*h).to_string();
    let view = stable(&*h, &*backend).await;
    assert!(!view.endpoints.is_empty(), "the stable slot has endpoints");
    let reported = slot(&*backend, &release, Slot::Stable).await;
    assert_eq!(reported.as_ref().map(|v| v.version.as_str()), Some(STABLE));
    assert_eq!(slot(&*backend, &release, Slot::Candidate).await, None);
    assert_eq!(slot(&*backend, &release, Slot::Previous).await, None);
    let candidate = deploy(&*h, &*backend).await;
    assert!(
        !candidate.endpoints.is_empty(),
        "a ready candidate has endpoints"
    );
    let reported = slot(&*backend, &release, Slot::Candidate)
        .await
        .expect("the candidate is reported");
    assert_eq!(reported.version, CANDIDATE);
    let (mut want, mut got) = (candidate.endpoints.clone(), reported.endpoints.clone());
    want.sort();
    got.sort();
    assert_eq!(
        got, want,
        "the candidate's endpoints as deploy reported them"
    );
    // Another controller reads the same from the platform.
    let other = h.backend().await;
    let from_other = slot(&*other, &release, Slot::Candidate).await;
    assert_eq!(from_other.map(|v| v.version), Some(CANDIDATE.to_string()));
}

/// `promote` swaps the roles once; again, it changes nothing and succeeds.
pub async fn promote_is_idempotent(h: Arc<dyn Harness>) {
    let backend = h.backend().await;
    let release = name(&*h).to_string();
    stable(&*h, &*backend).await;
    deploy(&*h, &*backend).await;
    for round in 0..2 {
        within("promote", backend.promote(&release))
            .await
            .unwrap_or_else(|e| panic!("promote (call {}): {e}", round + 1));
        let stable = slot(&*backend, &release, Slot::Stable).await;
        assert_eq!(stable.map(|v| v.version), Some(CANDIDATE.to_string()));
        let previous = slot(&*backend, &release, Slot::Previous).await;
        assert_eq!(previous.map(|v| v.version), Some(STABLE.to_string()));
        assert_eq!(slot(&*backend, &release, Slot::Candidate).await, None);
        assert_eq!(
            h.workloads().await,
            2,
            "the new stable and the previous one"
        );
    }
}

/// `retire` removes a slot's workload; again, or of a slot that is gone, it succeeds.
pub async fn retire_is_idempotent(h: Arc<dyn Harness>) {
    let backend = h.backend().await;
    let release = name(&*h).to_string();
    stable(&*h, &*backend).await;
    deploy(&*h, &*backend).await;
    within("retire", backend.retire(&release, Slot::Candidate))
        .await
        .expect("retire the candidate");
    assert_eq!(slot(&*backend, &release, Slot::Candidate).await, None);
    assert_eq!(h.workloads().await, 1, "the candidate's workload is gone");
    for round in 0..2 {
        within("retire", backend.retire(&release, Slot::Candidate))
            .await
            .unwrap_or_else(|e| panic!("retire of a retired candidate (call {}): {e}", round + 1));
    }
    deploy(&*h, &*backend).await;
    within("promote", backend.promote(&release))
        .await
        .expect("promote");
    for _ in 0..2 {
        within("retire", backend.retire(&release, Slot::Previous))
            .await
            .expect("retire the previous slot");
        assert_eq!(slot(&*backend, &release, Slot::Previous).await, None);
        assert_eq!(h.workloads().await, 1, "the new stable slot alone runs");
    }
    let stable = slot(&*backend, &release, Slot::Stable).await;
    assert_eq!(stable.map(|v| v.version), Some(CANDIDATE.to_string()));
}

/// `store_state` is a compare-and-swap: a stale expected revision is refused, and the same
/// write sent again (its reply lost) is answered with its revision, written once.
pub async fn state_is_compare_and_swap_with_replays(h: Arc<dyn Harness>) {
    let backend = h.backend().await;
    let release = name(&*h).to_string();
    stable(&*h, &*backend).await;
    let load = || async {
        within("load_state", backend.load_state(&release))
            .await
            .expect("load_state")
    };
    let store = |state: serde_json::Value, expected: Option<u64>| {
        let backend = backend.clone();
        let release = release.clone();
        async move {
            within(
                "store_state",
                backend.store_state(&release, &state, expected),
            )
            .await
        }
    };
    assert_eq!(load().await, None, "nothing stored yet");
    let first = serde_json::json!({"phase": "deploying"});
    let second = serde_json::json!({"phase": "step", "step": 1});
    assert_eq!(store(first.clone(), None).await.expect("first write"), 1);
    assert_eq!(
        store(first.clone(), None)
            .await
            .expect("the first write again"),
        1,
        "a replay is answered with its revision"
    );
    assert!(
        is_conflict(&store(second.clone(), None).await),
        "a first write over a stored state is refused"
    );
    assert_eq!(
        store(second.clone(), Some(1)).await.expect("second write"),
        2
    );
    assert_eq!(
        store(second.clone(), Some(1)).await.expect("a replay"),
        2,
        "a replay is answered with its revision"
    );
    let stale = store(serde_json::json!({"phase": "stale"}), Some(1)).await;
    assert!(
        is_conflict(&stale),
        "a stale revision is refused: {stale:?}"
    );
    assert!(stale.as_ref().is_err_and(BackendError::is_retryable));
    let stored = load().await.expect("a state");
    assert_eq!((stored.version, stored.state), (2, second.clone()));
    assert_eq!(
        store(first.clone(), Some(2)).await.expect("the next write"),
        3,
        "the replays wrote nothing"
    );
    let listed = within("releases", backend.releases())
        .await
        .expect("releases");
    assert!(listed.contains(&release), "{listed:?} lists the release");
}

/// A controller fenced by a newer one's `recover` cannot write: not even its own last
/// state again, which must not pass for a replay.
pub async fn recover_fences_an_older_writer(h: Arc<dyn Harness>) {
    let release = name(&*h).to_string();
    let old = h.backend().await;
    stable(&*h, &*old).await;
    let state = serde_json::json!({"phase": "step", "step": 2});
    let stored = within("store_state", old.store_state(&release, &state, None))
        .await
        .expect("stored");
    assert_eq!(stored, 1);
    let new = h.backend().await;
    within("recover", new.recover(&release))
        .await
        .expect("recover");
    let read = within("load_state", new.load_state(&release))
        .await
        .expect("load_state")
        .expect("the state survives the fence");
    assert_eq!(read.state, state, "the fence keeps the state");
    assert!(read.version > 1, "the fence moved the revision on");
    let fenced = within("store_state", old.store_state(&release, &state, Some(1))).await;
    assert!(
        is_conflict(&fenced),
        "the fenced writer's write: {fenced:?}"
    );
    let next = within(
        "store_state",
        new.store_state(&release, &state, Some(read.version)),
    )
    .await
    .expect("the new controller writes on");
    assert_eq!(next, read.version + 1);
}

/// Two `deploy`s of one release at once are serialised: one candidate runs.
pub async fn concurrent_deploys_leave_one_candidate(h: Arc<dyn Harness>) {
    let backend = h.backend().await;
    stable(&*h, &*backend).await;
    let (a, b) = tokio::join!(deploy(&*h, &*backend), deploy(&*h, &*backend));
    assert_eq!(
        (a.version.as_str(), b.version.as_str()),
        (CANDIDATE, CANDIDATE)
    );
    assert_eq!(h.workloads().await, 2, "stable and one candidate, not two");
    let reported = slot(&*backend, name(&*h), Slot::Candidate).await;
    assert_eq!(reported.map(|v| v.version), Some(CANDIDATE.to_string()));
}

/// One test per check of the contract, for a backend crate's `tests/conformance.rs`:
/// `conformance_suite!(harness)` where `harness` is an `async fn(&'static str) ->
/// Option<Arc<dyn Harness>>` making a fresh world for the named check (`None`: skip).
#[macro_export]
macro_rules! conformance_suite {
    ($harness:path) => {
        $crate::conformance_suite!(@checks $harness;
            deploy_twice_leaves_one_candidate,
            deploy_is_retryable_after_an_interrupted_call,
            deploy_is_retryable_after_an_error,
            stable_and_endpoints_report_what_runs,
            promote_is_idempotent,
            retire_is_idempotent,
            state_is_compare_and_swap_with_replays,
            recover_fences_an_older_writer,
            concurrent_deploys_leave_one_candidate,
        );
    };
    (@checks $harness:path; $($check:ident,)*) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $check() {
                let Some(harness) = $harness(stringify!($check)).await else {
                    return;
                };
                $crate::conformance::run(harness, $crate::conformance::$check).await;
            }
        )*
    };
}
