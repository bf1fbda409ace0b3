//! The guardrail's reaction time, alone in its test binary: no other test competes for the
//! cores while it measures.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use cutover_core::spec::{GuardrailMetric, GuardrailSpec};
use cutover_proxy::events::EventKind;
use support::{client, config, get, route, start, upstream};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guardrail_trips_within_a_second_of_the_candidate_failing() {
    let (v1, v2) = (upstream("v1").await, upstream("v2").await);
    let mut r = route("shop", &v1, Some(&v2), 50);
    r.guardrails = vec![GuardrailSpec {
        name: "candidate-5xx".into(),
        metric: GuardrailMetric::ErrorRate,
        max: 0.5,
        window: cutover_core::Duration::from_secs(10),
        min_requests: 20,
    }];
    let proxy = Arc::new(start(config(vec![r])).await);
    let addr = proxy.listen_addrs()[0];
    let stop = Arc::new(AtomicBool::new(false));
    let loader = {
        let stop = stop.clone();
        tokio::spawn(async move {
            let c = client();
            while !stop.load(Ordering::Relaxed) {
                get(&c, addr, "/", &[]).await;
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        proxy
            .events_since(0)
            .iter()
            .all(|e| !matches!(e.kind, EventKind::GuardrailTripped { .. })),
        "no trip while healthy"
    );
    v2.failing.store(true, Ordering::Relaxed);
    let failing_since = Instant::now();
    let tripped = loop {
        if let Some(e) = proxy
            .events_since(0)
            .into_iter()
            .find(|e| matches!(e.kind, EventKind::GuardrailTripped { .. }))
        {
            break (e, failing_since.elapsed());
        }
        assert!(
            failing_since.elapsed() < Duration::from_secs(5),
            "no trip after 5 s"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let (event, after) = tripped;
    assert!(
        after < Duration::from_secs(1),
        "tripped {after:?} after the candidate started failing"
    );
    assert!(
        matches!(event.kind, EventKind::GuardrailTripped { ref guardrail, .. } if guardrail == "candidate-5xx")
    );
    assert_eq!(
        proxy.routes().routes[0].weight,
        0,
        "the candidate is cut off"
    );
    let served_before = v2.requests.load(Ordering::Relaxed);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        v2.requests.load(Ordering::Relaxed),
        served_before,
        "no traffic reaches the candidate after the trip"
    );
    stop.store(true, Ordering::Relaxed);
    loader.await.expect("loader");
}
