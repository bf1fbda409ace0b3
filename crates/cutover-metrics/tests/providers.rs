//! The providers against real servers: the builtin one reads a real proxy routing real
//! traffic; the web one asks a real HTTP server.

mod support;

use cutover_core::Duration;
use cutover_core::judge::{Assessment, MeasurementResult, assess};
use cutover_core::spec::{BuiltinMetric, MetricSpec, Provider, WebProvider};
use cutover_metrics::web::WebClient;
use cutover_metrics::{Context, builtin};
use http::StatusCode;

fn context(interval: u64) -> Context<'static> {
    Context {
        release: "shop",
        stable: "v1",
        candidate: "v2",
        interval: Duration::from_secs(interval),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn builtin_reads_what_the_proxy_routed_per_version() {
    let proxy = support::proxy_over_two_versions().await;
    support::load(&proxy, 400).await;
    // Evidence covers whole seconds: let the second of the load end.
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let MeasurementResult::Value(m) =
        builtin::measure(&proxy, BuiltinMetric::ErrorRate, &context(30))
    else {
        panic!("the builtin provider always answers");
    };
    let requests = m.candidate_requests.expect("counted");
    assert!(
        (195..=205).contains(&requests),
        "half of 400 at weight 50: {requests}"
    );
    let rate = m.candidate.expect("data");
    assert!(
        (rate - 0.2).abs() < 0.01,
        "every 5th candidate answer fails: {rate}"
    );
    assert_eq!(m.stable, Some(0.0));
    // The error rate comes with its evidence: counts, not per-second summaries.
    let evidence = m.candidate_evidence.clone().expect("evidence");
    assert!(
        evidence.requests > 0.0 && evidence.errors > 0.0,
        "{evidence:?}"
    );
    assert!(m.stable_evidence.as_ref().is_some_and(|e| e.errors == 0.0));
    assert!(
        m.candidate_samples.is_empty(),
        "no summaries where evidence is"
    );

    let spec = MetricSpec {
        name: "errors".into(),
        provider: Provider::Builtin(BuiltinMetric::ErrorRate),
        min: None,
        max: Some(0.05),
        compare: None,
        interval: Duration::from_secs(30),
        count: 1,
        initial_delay: Duration::ZERO,
        failure_limit: 0,
        inconclusive_limit: 0,
        consecutive_error_limit: 4,
        min_requests: 50,
        confidence: 0.98,
        max_count: None,
    };
    let result = MeasurementResult::Value(m);
    assert!(matches!(assess(&spec, &result), Assessment::Fail { .. }));
    // On evidence too: 20 % errors is shown above max 5 %.
    let mut judge = cutover_core::judge::MetricJudge::new(&spec);
    assert!(matches!(
        judge.record(&result),
        Some(Assessment::Fail { .. })
    ));

    let too_long = builtin::measure(&proxy, BuiltinMetric::ErrorRate, &context(600));
    assert!(
        matches!(too_long, MeasurementResult::Error(ref e) if e.contains("metricsWindow")),
        "an interval longer than the proxy keeps is not measured short: {too_long:?}"
    );

    let quiet = Context {
        candidate: "v9",
        ..context(30)
    };
    let result = builtin::measure(&proxy, BuiltinMetric::ErrorRate, &quiet);
    assert!(
        matches!(assess(&spec, &result), Assessment::Inconclusive { .. }),
        "no traffic is no data, never a pass"
    );
}

fn web(url: String, pointer: &str) -> WebProvider {
    WebProvider {
        url: cutover_core::spec::SecretValue::Inline(url),
        json_pointer: pointer.into(),
        headers: Default::default(),
        timeout: Duration::from_millis(500),
    }
}

#[tokio::test]
async fn web_reads_a_number_by_json_pointer_per_version() {
    let addr = support::server(|path, _| match path {
        "/stats/v1" => (StatusCode::OK, r#"{"data": {"errors": 0.01}}"#.into()),
        "/stats/v2" => (StatusCode::OK, r#"{"data": {"errors": "0.02"}}"#.into()),
        "/broken" => (StatusCode::SERVICE_UNAVAILABLE, "down".into()),
        "/html" => (StatusCode::OK, "<html>".into()),
        _ => (StatusCode::OK, "{}".into()),
    })
    .await;
    let client = WebClient::default();
    let ctx = context(30);
    let per_version = web(
        format!("http://{addr}/stats/{{{{version}}}}"),
        "/data/errors",
    );
    let MeasurementResult::Value(m) = client.measure(&per_version, &ctx).await else {
        panic!("measured");
    };
    assert_eq!((m.candidate, m.stable), (Some(0.02), Some(0.01)));
    let missing = web(format!("http://{addr}/stats/v2"), "/data/missing");
    let MeasurementResult::Value(m) = client.measure(&missing, &ctx).await else {
        panic!("measured");
    };
    assert_eq!(
        m.candidate, None,
        "a document without the number is no data"
    );
    for path in ["/broken", "/html"] {
        let result = client
            .measure(&web(format!("http://{addr}{path}"), "/x"), &ctx)
            .await;
        assert!(
            matches!(result, MeasurementResult::Error(_)),
            "{path}: {result:?}"
        );
    }
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr");
    let result = client
        .measure(&web(format!("http://{closed}/"), "/x"), &ctx)
        .await;
    assert!(
        matches!(result, MeasurementResult::Error(ref e) if e.contains(&closed.to_string())),
        "{result:?}"
    );
}
