//! The guardrail's reaction time, alone in its test binary: no other test competes for the
//! cores while it measures.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use cutover_core::spec::{GuardrailMetric, GuardrailSpec};
use cutover_proxy::events::EventKind;
use support::{client, config, get, route, start, upstream};

/// Healthy requests before the candidate starts failing.
const WARM_UP_REQUESTS: usize = 100;

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
    // A healthy history of a set number of requests (about half reach the candidate), not
    // of as many as a loader manages in some time: the failures that outweigh it then
    // come within a fraction of a second even on a loaded machine, and what is timed is
    // the proxy's reaction, not how fast the client was before and after.
    let c = client();
    for _ in 0..WARM_UP_REQUESTS {
        get(&c, addr, "/", &[]).await;
    }
    // Two full checks of the guardrails see the healthy window.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        v2.requests.load(Ordering::Relaxed) >= 20,
        "the candidate served at least minRequests while healthy"
    );
    assert!(
        proxy
            .events_since(0)
            .iter()
            .all(|e| !matches!(e.kind, EventKind::GuardrailTripped { .. })),
        "no trip while healthy"
    );
    v2.failing.store(true, Ordering::Relaxed);
    let failing_since = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let answered = Arc::new(AtomicU64::new(0));
    let loader = {
        let (stop, answered) = (stop.clone(), answered.clone());
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                get(&c, addr, "/", &[]).await;
                answered.fetch_add(1, Ordering::Relaxed);
            }
        })
    };
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
    eprintln!("tripped {after:?} after the candidate started failing: {event:?}");
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
    // The loader's request under way when the trip was seen may have been routed by the
    // table before it; every request after that one starts once the cut is published.
    let in_flight_ended = answered.load(Ordering::Relaxed) + 1;
    while answered.load(Ordering::Relaxed) < in_flight_ended {
        assert!(
            failing_since.elapsed() < Duration::from_secs(10),
            "the request under way at the trip never ended"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
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
