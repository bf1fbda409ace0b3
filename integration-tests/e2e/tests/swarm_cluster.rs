//! End to end on a real three-manager Swarm: three Docker engines, each in its own network
//! namespace on one host bridge (`scripts/swarm-cluster.sh`, which the test script brings
//! up before this suite and down after it). The controller runs as a Swarm service on a
//! manager, talking to its own node's engine; the proxy runs as a global service with
//! host-mode ports on every node, pulling its routes from the controller; Prometheus
//! scrapes every proxy and judges the canaries. Load comes from the host through the
//! proxies of the nodes, and every request's outcome is counted.
//!
//! The scenarios share the cluster, so they run one after another (a lock, besides
//! `--test-threads=1`), and each starts by restoring every node (started, linked, Ready).
//! Each prints its figures (`FIGURE ...`) for docs/swarm.md.

use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use cutover_test_kit::cluster::{ADMIN_PORT, Cluster, Spread, Stage, get};
use cutover_test_kit::prometheus::PROMQL_CANARY;
use cutover_test_kit::sample;
use serde_json::Value;

/// The scenarios take turns on the one cluster.
static CLUSTER: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    CLUSTER.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A canary judged by Prometheus with longer analyses (six measurements, two seconds
/// apart), so that a node can be lost in the middle of one.
const LONG_ANALYSIS: &str = "  strategy:
    progressDeadline: 4m
    canary:
      scaleDownDelay: 1s
      steps:
        - setWeight: 30
        - analysis: {}
        - setWeight: 70
        - analysis: {}
  analysis:
    metrics:
      - name: error-rate
        provider:
          prometheus:
            query: >-
              sum(rate(cutover_requests_total{release=\"{{release}}\",version=\"{{candidate}}\",code_class=\"5xx\"}[5s]))
              / sum(rate(cutover_requests_total{release=\"{{release}}\",version=\"{{candidate}}\"}[5s]))
            timeout: 2s
        max: 0.05
        initialDelay: 4s
        interval: 2s
        count: 6
        inconclusiveLimit: 2
        consecutiveErrorLimit: 3
";

/// Submits the release and waits until every node's proxy routes it.
fn submit(stage: &Stage, controller: usize, name: &str, file: &std::path::Path) {
    let answer = stage.submit(controller, file);
    assert!(
        answer.as_ref().is_some_and(|(status, _)| *status == 201),
        "{answer:?}"
    );
    for node in &stage.cluster.nodes {
        let admin = SocketAddr::from((node.address, ADMIN_PORT));
        let started = Instant::now();
        loop {
            let routes = get(admin, "/routes").map(|(_, b)| b).unwrap_or_default();
            if routes.contains(&format!("\"{name}\"")) && routes.contains("endpoints") {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "the proxy on {} never routed {name}: {routes}",
                node.name
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

/// Polls the controller (which may move between nodes) until `done(status)` holds.
fn wait_status(
    stage: &Stage,
    controller: &str,
    name: &str,
    limit: Duration,
    done: impl Fn(&Value) -> bool,
) -> Value {
    let started = Instant::now();
    let mut last = Value::Null;
    loop {
        for node in stage.cluster.task_nodes(controller) {
            if let Some(status) = stage.status(node, name) {
                if done(&status) {
                    return status;
                }
                last = status;
            }
        }
        assert!(
            started.elapsed() < limit,
            "{name}: not there within {limit:?}; last status: {last}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Samples `proxy` until every answer comes from `version`.
fn wait_all_on(proxy: SocketAddr, version: &str) {
    let started = Instant::now();
    loop {
        let counts = sample(proxy, 20);
        if counts.answered(version) == 20 {
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "not all traffic on {version} at {proxy}: {counts:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The stage's candidate service (labelled `dev.cutover.role=candidate`), if any.
fn candidate(stage: &Stage) -> Option<String> {
    stage
        .services()
        .into_iter()
        .find(|s| stage.labels(s)["dev.cutover.role"] == "candidate")
}

/// The overlay addresses of a service's running tasks on node `node`.
fn task_addresses_on(cluster: &Cluster, service: &str, node: usize) -> Vec<String> {
    let ids = cluster
        .docker(&[
            "service",
            "ps",
            "--quiet",
            "--filter",
            "desired-state=running",
            "--filter",
            &format!("node=node{node}"),
            service,
        ])
        .unwrap_or_default();
    ids.lines()
        .filter_map(|id| {
            cluster
                .docker(&[
                    "inspect",
                    "--type",
                    "task",
                    "--format",
                    "{{range .NetworksAttachments}}{{range .Addresses}}{{.}} {{end}}{{end}}",
                    id,
                ])
                .ok()
        })
        .flat_map(|text| {
            text.split_whitespace()
                .filter_map(|a| a.split('/').next().map(str::to_string))
                .collect::<Vec<_>>()
        })
        .collect()
}

#[test]
fn a_canary_across_nodes_is_promoted_without_a_failed_request() {
    let _serial = serial();
    let Some(cluster) = Cluster::connect() else {
        return;
    };
    cluster.restore();
    let started = Instant::now();
    let stage = Stage::new(&cluster, "canary");
    let deployed = stage.deploy("node1", "node.role==manager");
    let controller = stage.controller_node(&deployed.controller, Duration::from_secs(60));
    let name = stage.name("shop");
    let file = stage.release_file(&name, &deployed.web, "v2", PROMQL_CANARY);
    submit(&stage, controller, &name, &file);
    let proxies = stage.proxies_except(&[]);
    let load = Spread::start(&proxies, 30);
    // Both versions' tasks spread over the nodes.
    let candidate_nodes = wait_until_some(Duration::from_secs(60), || {
        let service = candidate(&stage)?;
        let nodes = cluster.task_nodes(&service);
        (nodes.len() == 3).then_some(nodes)
    });
    let mut distinct = candidate_nodes.clone();
    distinct.dedup();
    assert!(distinct.len() >= 2, "the candidate ran on {candidate_nodes:?}");
    let status = wait_status(
        &stage,
        &deployed.controller,
        &name,
        Duration::from_secs(150),
        |s| s["done"] == true,
    );
    assert_eq!(status["outcome"], "promoted", "{status}");
    for proxy in &proxies {
        wait_all_on(*proxy, "v2");
    }
    let counts = load.finish();
    eprintln!(
        "FIGURE canary across nodes: {} requests through 3 proxies, {} failed, candidate tasks on nodes {candidate_nodes:?}, {:.1} s",
        counts.by_version.values().map(|(n, _)| n).sum::<u64>() + counts.unanswered,
        counts.failures_except(&[]),
        started.elapsed().as_secs_f64()
    );
    assert_eq!(counts.failures_except(&[]), 0, "{counts:?}");
    assert!(
        counts.answered("v1") > 0 && counts.answered("v2") > 0,
        "{counts:?}"
    );
}

#[test]
fn a_node_lost_mid_analysis_costs_only_requests_in_flight_on_it() {
    let _serial = serial();
    let Some(cluster) = Cluster::connect() else {
        return;
    };
    cluster.restore();
    let stage = Stage::new(&cluster, "nodeloss");
    // The controller and Prometheus on node1; node3 is the one lost.
    let deployed = stage.deploy("node1", "node.hostname==node1");
    let controller = stage.controller_node(&deployed.controller, Duration::from_secs(60));
    let name = stage.name("shop");
    let file = stage.release_file(&name, &deployed.web, "v2", LONG_ANALYSIS);
    submit(&stage, controller, &name, &file);
    // Load through the proxies of the nodes that stay (a load balancer's health check takes
    // a dead node out of its pool; that is not cutover's to count).
    let rate = 40;
    let load = Spread::start(&stage.proxies_except(&[3]), rate);
    // Mid-analysis, with a candidate task on node3.
    let service = wait_until_some(Duration::from_secs(60), || {
        let status = stage.status(controller, &name)?;
        let service = candidate(&stage)?;
        (status["step"] == 1 && cluster.task_nodes(&service).contains(&3)).then_some(service)
    });
    std::thread::sleep(Duration::from_secs(3));
    let lost: Vec<String> = [&service, &deployed.web]
        .iter()
        .flat_map(|s| task_addresses_on(&cluster, s, 3))
        .collect();
    assert!(!lost.is_empty(), "no task addresses on node3");
    let lost_at = Instant::now();
    cluster.kill_node(3);
    // The proxies' endpoints follow: no lost address in node1's routes any more.
    let admin = SocketAddr::from((cluster.node(1).address, ADMIN_PORT));
    wait_until_some(Duration::from_secs(60), || {
        let routes = get(admin, "/routes")?.1;
        (!lost.iter().any(|a| routes.contains(&format!("{a}:")))).then_some(())
    });
    let followed = lost_at.elapsed();
    // Swarm reschedules the lost tasks on the nodes left.
    wait_until_some(Duration::from_secs(90), || {
        let nodes = cluster.task_nodes(&service);
        (nodes.len() == 3 && !nodes.contains(&3)).then_some(())
    });
    let rescheduled = lost_at.elapsed();
    let status = wait_status(
        &stage,
        &deployed.controller,
        &name,
        Duration::from_secs(180),
        |s| s["done"] == true,
    );
    let counts = load.finish();
    let failed = counts.failures_except(&[]);
    let sent = counts.by_version.values().map(|(n, _)| n).sum::<u64>() + counts.unanswered;
    // What went to node3's tasks between the loss and the proxies dropping them: a third
    // of the traffic (node3 held one of three tasks of each version) for that long.
    let bound = (f64::from(rate) * 2.0 * followed.as_secs_f64() / 3.0).ceil() as u64 + 5;
    eprintln!(
        "FIGURE node lost mid-analysis: outcome {}, endpoints followed in {:.1} s, tasks rescheduled in {:.1} s, {failed} of {sent} requests failed, bound {bound}",
        status["outcome"],
        followed.as_secs_f64(),
        rescheduled.as_secs_f64(),
    );
    // v2 is healthy: the analysis passes on the data of the tasks that stay.
    assert_eq!(status["outcome"], "promoted", "{status}");
    assert!(failed <= bound, "{failed} failed requests, bound {bound}: {counts:?}");
    cluster.start_node(3);
}

/// Polls `check` every 200 ms until it gives a value; panics after `limit`.
fn wait_until_some<T>(limit: Duration, mut check: impl FnMut() -> Option<T>) -> T {
    let started = Instant::now();
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(started.elapsed() < limit, "not within {limit:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
}
