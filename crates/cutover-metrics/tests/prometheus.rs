//! The Prometheus provider against a real Prometheus (Debian's package) scraping a real
//! proxy every second. In CI (`CI` set) a missing `prometheus` fails the test; elsewhere
//! the test skips, saying so.

mod support;

use std::time::{Duration as StdDuration, Instant};

use cutover_core::Duration;
use cutover_core::judge::{Assessment, MeasurementResult, MetricJudge, Verdict};
use cutover_core::spec::{BuiltinMetric, Comparison, MetricSpec, PrometheusProvider, Provider};
use cutover_metrics::Context;
use cutover_metrics::prometheus::PrometheusClient;
use cutover_test_kit::free_port;
use cutover_test_kit::prometheus::Prometheus;

fn query(promql: &str) -> PrometheusProvider {
    PrometheusProvider {
        address: None,
        query: promql.to_string(),
        timeout: Duration::from_secs(5),
        headers: Default::default(),
        bearer_token_from: None,
        proxy_metric: None,
    }
}

fn proxy_metric(metric: BuiltinMetric) -> PrometheusProvider {
    PrometheusProvider {
        query: String::new(),
        proxy_metric: Some(metric),
        ..query("")
    }
}

const ERROR_RATE: &str = "sum(rate(cutover_requests_total{release=\"{{release}}\",version=\"{{version}}\",code_class=\"5xx\"}[{{interval}}])) / sum(rate(cutover_requests_total{release=\"{{release}}\",version=\"{{version}}\"}[{{interval}}]))";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_measures_both_versions_and_never_invents_data() {
    let proxy = support::proxy_over_two_versions().await;
    let Some(mut prometheus) = Prometheus::start(free_port(), proxy.admin_addr().port()) else {
        return;
    };
    let context = Context {
        release: "shop",
        stable: "v1",
        candidate: "v2",
        interval: Duration::from_secs(10),
    };
    let client = PrometheusClient::new(Some(prometheus.url()));
    // Traffic while Prometheus scrapes, until the error rate shows for both versions.
    let started = Instant::now();
    let (candidate, stable) = loop {
        support::load(&proxy, 200).await;
        if let MeasurementResult::Value(m) = client.measure(&query(ERROR_RATE), &context).await
            && let (Some(c), Some(s)) = (m.candidate, m.stable)
        {
            break (c, s);
        }
        assert!(
            started.elapsed() < StdDuration::from_secs(30),
            "no data from Prometheus after 30 s"
        );
    };
    assert!(
        (candidate - 0.2).abs() < 0.02,
        "the candidate fails every 5th request: {candidate}"
    );
    assert_eq!(stable, 0.0);

    let unknown = Context {
        release: "nothing-here",
        ..context
    };
    match client.measure(&query(ERROR_RATE), &unknown).await {
        MeasurementResult::Value(m) => assert_eq!(m.candidate, None, "an empty result is no data"),
        other => panic!("{other:?}"),
    }
    // Regression: versions were pasted into queries as they were, and this one turned an
    // error count into a constant 0 (`...{version="v2"}) * 0 #"...`), which passes any
    // threshold. Escaped, it is one label value that matches nothing: no data.
    let errors = "sum(cutover_requests_total{release=\"{{release}}\",version=\"{{candidate}}\",code_class=\"5xx\"})";
    match client.measure(&query(errors), &context).await {
        MeasurementResult::Value(m) => assert!(m.candidate.is_some_and(|n| n > 0.0), "{m:?}"),
        other => panic!("{other:?}"),
    }
    let injected = Context {
        candidate: "v2\"}) * 0 #",
        ..context
    };
    match client.measure(&query(errors), &injected).await {
        MeasurementResult::Value(m) => {
            assert_eq!(m.candidate, None, "the injection stays a label value")
        }
        other => panic!("{other:?}"),
    }
    let many = client
        .measure(&query("cutover_requests_total"), &context)
        .await;
    assert!(
        matches!(many, MeasurementResult::Error(ref e) if e.contains("series")),
        "{many:?}"
    );
    let bad = client.measure(&query("sum(rate(x[5m]"), &context).await;
    assert!(
        matches!(bad, MeasurementResult::Error(ref e) if e.contains("rejected")),
        "{bad:?}"
    );

    prometheus.stop();
    let gone = client.measure(&query(ERROR_RATE), &context).await;
    assert!(
        matches!(gone, MeasurementResult::Error(ref e) if e.contains("cannot be reached")),
        "{gone:?}"
    );
}

/// The proxy's counters and `_bucket` histogram read back from Prometheus per version
/// (`increase()` over the interval) are evidence the judge tests: the candidate failing
/// every 5th request is shown worse than stable by more than 5 points.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_gives_the_proxys_counts_and_buckets_as_evidence() {
    let proxy = support::proxy_over_two_versions().await;
    let Some(prometheus) = Prometheus::start(free_port(), proxy.admin_addr().port()) else {
        return;
    };
    let context = Context {
        release: "shop",
        stable: "v1",
        candidate: "v2",
        interval: Duration::from_secs(10),
    };
    let client = PrometheusClient::new(Some(prometheus.url()));
    let started = Instant::now();
    let measurement = loop {
        support::load(&proxy, 200).await;
        if let MeasurementResult::Value(m) = client
            .measure(&proxy_metric(BuiltinMetric::LatencyP99), &context)
            .await
            && m.candidate_evidence
                .as_ref()
                .is_some_and(|e| e.requests >= 100.0)
            && m.stable_evidence
                .as_ref()
                .is_some_and(|e| e.requests >= 100.0)
        {
            break m;
        }
        assert!(
            started.elapsed() < StdDuration::from_secs(40),
            "no evidence from Prometheus after 40 s"
        );
    };
    let (Some(candidate), Some(stable)) = (
        measurement.candidate_evidence.clone(),
        measurement.stable_evidence.clone(),
    ) else {
        unreachable!("checked above")
    };
    let share = candidate.errors / candidate.requests;
    assert!(
        (share - 0.2).abs() < 0.05,
        "every 5th request fails: {candidate:?}"
    );
    assert_eq!(stable.errors, 0.0, "{stable:?}");
    // The buckets hold every request that got an answer, up to increase()'s extrapolation.
    let binned = candidate.latency.total();
    assert!(
        (binned - candidate.requests).abs() <= 0.05 * candidate.requests,
        "{binned} latencies for {} requests",
        candidate.requests
    );
    assert!(
        measurement
            .candidate
            .is_some_and(|p99| p99 > 0.0 && p99 < 1.0)
    );

    // Judged on that evidence: 20 % errors against none, beyond a 5-point tolerance.
    let spec = MetricSpec {
        name: "errors".into(),
        provider: Provider::Prometheus(proxy_metric(BuiltinMetric::ErrorRate)),
        min: None,
        max: None,
        compare: Some(Comparison {
            max_increase: Some(0.05),
            ..Comparison::default()
        }),
        interval: Duration::from_secs(10),
        count: 1,
        initial_delay: Duration::ZERO,
        failure_limit: 0,
        inconclusive_limit: 0,
        consecutive_error_limit: 4,
        min_requests: 20,
        confidence: 0.98,
        max_count: None,
    };
    let errors = client
        .measure(&proxy_metric(BuiltinMetric::ErrorRate), &context)
        .await;
    let mut judge = MetricJudge::new(&spec);
    let assessment = judge.record(&errors).cloned();
    assert!(
        matches!(assessment, Some(Assessment::Fail { ref reason }) if reason.contains("beyond maxIncrease")),
        "{assessment:?}"
    );
    assert_eq!(judge.verdict(), Some(Verdict::Failure));

    // A release name that tries to close the label's string matches nothing: no error,
    // no data.
    let hostile = Context {
        release: "shop\"} or vector(1) #",
        ..context
    };
    match client
        .measure(&proxy_metric(BuiltinMetric::ErrorRate), &hostile)
        .await
    {
        MeasurementResult::Value(m) => {
            assert_eq!(m.candidate_evidence.map(|e| e.requests), Some(0.0));
            assert_eq!(m.candidate, None);
        }
        other => panic!("{other:?}"),
    }
}
