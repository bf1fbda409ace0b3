//! The providers against real servers: the builtin one reads a real proxy routing real
//! traffic; the web one asks a real HTTP server.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use cutover_core::Duration;
use cutover_core::judge::{Assessment, MeasurementResult, assess};
use cutover_core::spec::{BuiltinMetric, MetricSpec, Provider, WebProvider};
use cutover_metrics::web::WebClient;
use cutover_metrics::{Context, builtin};
use cutover_proxy::Proxy;
use cutover_proxy::config::{
    AdminConfig, Limits, ListenerConfig, PassiveHealth, ProxyConfig, RouteConfig, Timeouts,
    VersionConfig,
};
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;

/// A real HTTP server answering with `answer(path, request number)`.
async fn server(
    answer: impl Fn(&str, u64) -> (StatusCode, String) + Send + Sync + 'static,
) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let answer = Arc::new(answer);
    let count = Arc::new(AtomicU64::new(0));
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let (answer, count) = (answer.clone(), count.clone());
            tokio::spawn(async move {
                let service = service_fn(move |req: Request<Incoming>| {
                    let n = count.fetch_add(1, Ordering::Relaxed) + 1;
                    let (status, body) = answer(req.uri().path(), n);
                    let mut response = Response::new(Full::new(Bytes::from(body)));
                    *response.status_mut() = status;
                    async move { Ok::<_, Infallible>(response) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    addr
}

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
    let stable = server(|_, _| (StatusCode::OK, "v1".into())).await;
    let candidate = server(|_, n| {
        if n % 5 == 0 {
            (StatusCode::INTERNAL_SERVER_ERROR, "oops".into())
        } else {
            (StatusCode::OK, "v2".into())
        }
    })
    .await;
    let proxy = Proxy::start(ProxyConfig {
        listeners: vec![ListenerConfig {
            address: "127.0.0.1:0".parse().expect("addr"),
            tls: None,
        }],
        admin: AdminConfig {
            address: "127.0.0.1:0".parse().expect("addr"),
            token_file: None,
        },
        routes: vec![RouteConfig {
            release: "shop".into(),
            host: None,
            path_prefix: None,
            stable: VersionConfig {
                name: "v1".into(),
                endpoints: vec![stable.to_string()],
            },
            candidate: Some(VersionConfig {
                name: "v2".into(),
                endpoints: vec![candidate.to_string()],
            }),
            weight: 50,
            match_rules: Vec::new(),
            sticky: None,
            mirror_percent: 0,
            guardrails: Vec::new(),
        }],
        limits: Limits::default(),
        timeouts: Timeouts::default(),
        health: PassiveHealth::default(),
        workers: None,
        metrics_window: Duration::from_secs(60),
    })
    .await
    .expect("proxy");
    let client: hyper_util::client::legacy::Client<_, Empty<Bytes>> =
        hyper_util::client::legacy::Client::builder(TokioExecutor::new()).build_http();
    for _ in 0..400 {
        let req = Request::get(format!("http://{}/", proxy.listen_addrs()[0]))
            .body(Empty::new())
            .expect("request");
        let response = client.request(req).await.expect("response");
        let _ = response.into_body().collect().await;
    }
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
    assert!(!m.candidate_samples.is_empty() && !m.stable_samples.is_empty());

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
    };
    assert!(matches!(
        assess(&spec, &MeasurementResult::Value(m)),
        Assessment::Fail { .. }
    ));

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
        url,
        json_pointer: pointer.into(),
        headers: Default::default(),
        timeout: Duration::from_millis(500),
    }
}

#[tokio::test]
async fn web_reads_a_number_by_json_pointer_per_version() {
    let addr = server(|path, _| match path {
        "/stats/v1" => (StatusCode::OK, r#"{"data": {"errors": 0.01}}"#.into()),
        "/stats/v2" => (StatusCode::OK, r#"{"data": {"errors": "0.02"}}"#.into()),
        "/broken" => (StatusCode::SERVICE_UNAVAILABLE, "down".into()),
        "/html" => (StatusCode::OK, "<html>".into()),
        _ => (StatusCode::OK, "{}".into()),
    })
    .await;
    let client = WebClient::default();
    let ctx = context(30);
    let MeasurementResult::Value(m) = client
        .measure(
            &web(
                format!("http://{addr}/stats/{{{{version}}}}"),
                "/data/errors",
            ),
            &ctx,
        )
        .await
    else {
        panic!("measured");
    };
    assert_eq!((m.candidate, m.stable), (Some(0.02), Some(0.01)));
    let MeasurementResult::Value(m) = client
        .measure(
            &web(format!("http://{addr}/stats/v2"), "/data/missing"),
            &ctx,
        )
        .await
    else {
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
