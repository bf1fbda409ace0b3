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
    CLUSTER
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
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
    assert!(
        distinct.len() >= 2,
        "the candidate ran on {candidate_nodes:?}"
    );
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
    assert!(
        failed <= bound,
        "{failed} failed requests, bound {bound}: {counts:?}"
    );
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

/// Counts the hooks the controller calls, by path: a tiny HTTP server on the host's bridge
/// address, which the nodes' containers reach.
struct Hooks {
    port: u16,
    calls: std::sync::Arc<Mutex<Vec<String>>>,
}

impl Hooks {
    fn start() -> Hooks {
        use std::io::{BufRead, BufReader, Read, Write};
        let listener = std::net::TcpListener::bind("10.213.0.1:0").expect("the cluster's bridge");
        let port = listener.local_addr().expect("address").port();
        let calls = std::sync::Arc::new(Mutex::new(Vec::new()));
        let seen = calls.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
                let mut reader = BufReader::new(stream);
                let mut line = String::new();
                if reader.read_line(&mut line).is_err() {
                    continue;
                }
                let mut length = 0usize;
                loop {
                    let mut header = String::new();
                    if reader.read_line(&mut header).is_err() || header.trim().is_empty() {
                        break;
                    }
                    if let Some((k, v)) = header.split_once(':')
                        && k.eq_ignore_ascii_case("content-length")
                    {
                        length = v.trim().parse().unwrap_or(0).min(1 << 20);
                    }
                }
                let mut body = vec![0; length];
                let _ = reader.read_exact(&mut body);
                if let Some(path) = line.split(' ').nth(1) {
                    seen.lock().expect("calls").push(path.to_string());
                }
                let _ = reader.get_mut().write_all(
                    b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                );
            }
        });
        Hooks { port, calls }
    }

    /// The release file's `hooks` section: a hook at each of the four points.
    fn section(&self) -> String {
        let url = |p: &str| {
            format!(
                "[{{url: \"http://10.213.0.1:{}/{p}\", retries: 0}}]",
                self.port
            )
        };
        format!(
            "  hooks:\n    preRollout: {}\n    prePromotion: {}\n    postPromotion: {}\n    onRollback: {}\n",
            url("preRollout"),
            url("prePromotion"),
            url("postPromotion"),
            url("onRollback")
        )
    }

    fn calls(&self) -> Vec<String> {
        self.calls.lock().expect("calls").clone()
    }
}

/// Every step of a promoted rollout recorded once, every analysis run passed once, every
/// hook but `onRollback` called once.
fn assert_each_step_once(history: &[String], hooks: &Hooks) {
    for step in ["step 0: weight 30%", "step 2: weight 70%"] {
        let times = history.iter().filter(|l| l.contains(step)).count();
        assert_eq!(times, 1, "'{step}' {times} times: {history:#?}");
    }
    let passed = history
        .iter()
        .filter(|l| l.contains("analysis run") && l.contains("passed"))
        .count();
    assert_eq!(passed, 2, "analysis runs passed: {history:#?}");
    let mut calls = hooks.calls();
    calls.sort();
    assert_eq!(
        calls,
        ["/postPromotion", "/prePromotion", "/preRollout"],
        "{history:#?}"
    );
}

/// The step the rollout is at, from any node's controller.
fn at_step(stage: &Stage, controller: &str, name: &str, step: u64) -> bool {
    stage
        .cluster
        .task_nodes(controller)
        .into_iter()
        .filter_map(|n| stage.status(n, name))
        .any(|s| s["step"] == step)
}

#[test]
fn the_controllers_node_lost_resumes_elsewhere_with_every_step_once() {
    let _serial = serial();
    let Some(cluster) = Cluster::connect() else {
        return;
    };
    cluster.restore();
    let stage = Stage::new(&cluster, "ctlloss");
    // Prometheus on node1, the controller on node2 or node3.
    let deployed = stage.deploy("node1", "node.hostname!=node1");
    let controller = stage.controller_node(&deployed.controller, Duration::from_secs(60));
    let hooks = Hooks::start();
    let name = stage.name("shop");
    let sections = format!("{LONG_ANALYSIS}{}", hooks.section());
    let file = stage.release_file(&name, &deployed.web, "v2", &sections);
    submit(&stage, controller, &name, &file);
    let load = Spread::start(&stage.proxies_except(&[controller]), 30);
    wait_until_some(Duration::from_secs(60), || {
        at_step(&stage, &deployed.controller, &name, 1).then_some(())
    });
    std::thread::sleep(Duration::from_secs(4));
    let lost_at = Instant::now();
    cluster.kill_node(controller);
    let moved = stage.controller_node(&deployed.controller, Duration::from_secs(90));
    let resumed = lost_at.elapsed();
    assert_ne!(moved, controller, "the controller did not move");
    let status = wait_status(
        &stage,
        &deployed.controller,
        &name,
        Duration::from_secs(180),
        |s| s["done"] == true,
    );
    let counts = load.finish();
    let history = stage.history(moved, &name);
    eprintln!(
        "FIGURE controller's node lost: controller on node{moved} answering {:.1} s after node{controller} died, outcome {}, {} of {} requests failed, hooks {:?}",
        resumed.as_secs_f64(),
        status["outcome"],
        counts.failures_except(&[]),
        counts.by_version.values().map(|(n, _)| n).sum::<u64>() + counts.unanswered,
        hooks.calls()
    );
    assert_eq!(status["outcome"], "promoted", "{status}");
    assert_each_step_once(&history, &hooks);
    cluster.start_node(controller);
}

#[test]
fn a_partitioned_manager_for_30_s_drives_nothing_twice_and_converges() {
    let _serial = serial();
    let Some(cluster) = Cluster::connect() else {
        return;
    };
    cluster.restore();
    let stage = Stage::new(&cluster, "partition");
    let deployed = stage.deploy("node1", "node.hostname!=node1");
    let controller = stage.controller_node(&deployed.controller, Duration::from_secs(60));
    let hooks = Hooks::start();
    let name = stage.name("shop");
    let sections = format!("{LONG_ANALYSIS}{}", hooks.section());
    let file = stage.release_file(&name, &deployed.web, "v2", &sections);
    submit(&stage, controller, &name, &file);
    let load = Spread::start(&stage.proxies_except(&[controller]), 30);
    wait_until_some(Duration::from_secs(60), || {
        at_step(&stage, &deployed.controller, &name, 1).then_some(())
    });
    // The controller's own manager is cut off: it and its controller are in the minority.
    let cut_at = Instant::now();
    cluster.partition(controller);
    std::thread::sleep(Duration::from_secs(30));
    cluster.heal(controller);
    let status = wait_status(
        &stage,
        &deployed.controller,
        &name,
        Duration::from_secs(180),
        |s| s["done"] == true,
    );
    let converged = cut_at.elapsed();
    // One controller task runs once the partition healed.
    wait_until_some(Duration::from_secs(60), || {
        (cluster.task_nodes(&deployed.controller).len() == 1).then_some(())
    });
    let counts = load.finish();
    let now = stage.controller_node(&deployed.controller, Duration::from_secs(60));
    let history = stage.history(now, &name);
    eprintln!(
        "FIGURE partition of node{controller} (the controller's) for 30 s: controller now on node{now}, outcome {} {:.1} s after the cut, {} of {} requests failed, hooks {:?}",
        status["outcome"],
        converged.as_secs_f64(),
        counts.failures_except(&[]),
        counts.by_version.values().map(|(n, _)| n).sum::<u64>() + counts.unanswered,
        hooks.calls()
    );
    assert_eq!(status["outcome"], "promoted", "{status}");
    assert_each_step_once(&history, &hooks);
    // The state the labels hold is the promoted one: no older write landed after it.
    let stable = stage
        .services()
        .into_iter()
        .find(|s| stage.labels(s)["dev.cutover.role"] == "stable")
        .expect("a stable service");
    assert_eq!(stage.labels(&stable)["dev.cutover.version"], "v2");
    assert!(
        candidate(&stage).is_none(),
        "a candidate is left: {:?}",
        stage.services()
    );
}

#[test]
fn quorum_lost_holds_the_rollout_and_it_ends_whole_once_quorum_is_back() {
    let _serial = serial();
    let Some(cluster) = Cluster::connect() else {
        return;
    };
    cluster.restore();
    let stage = Stage::new(&cluster, "quorum");
    let deployed = stage.deploy("node1", "node.hostname==node1");
    let controller = stage.controller_node(&deployed.controller, Duration::from_secs(60));
    let hooks = Hooks::start();
    let name = stage.name("shop");
    let sections = format!("{LONG_ANALYSIS}{}", hooks.section());
    let file = stage.release_file(&name, &deployed.web, "v2", &sections);
    submit(&stage, controller, &name, &file);
    let load = Spread::start(&stage.proxies_except(&[2, 3]), 30);
    wait_until_some(Duration::from_secs(60), || {
        at_step(&stage, &deployed.controller, &name, 1).then_some(())
    });
    let lost_at = Instant::now();
    cluster.kill_node(2);
    cluster.kill_node(3);
    // Without quorum the controller holds: 40 s later the rollout is neither done nor
    // rolled back, and it has not moved past what it could persist.
    let mut seen = Vec::new();
    while lost_at.elapsed() < Duration::from_secs(40) {
        if let Some(status) = stage.status(controller, &name) {
            assert_ne!(status["done"], true, "finished without quorum: {status}");
            seen.push(status["step"].clone());
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    let restored_at = Instant::now();
    cluster.start_node(2);
    cluster.start_node(3);
    let status = wait_status(
        &stage,
        &deployed.controller,
        &name,
        Duration::from_secs(180),
        |s| s["done"] == true,
    );
    let completed = restored_at.elapsed();
    let counts = load.finish();
    let history = stage.history(controller, &name);
    seen.dedup();
    eprintln!(
        "FIGURE quorum lost for 40 s: steps seen while lost {seen:?}, outcome {} {:.1} s after quorum came back, {} of {} requests through node1 failed, hooks {:?}",
        status["outcome"],
        completed.as_secs_f64(),
        counts.failures_except(&[]),
        counts.by_version.values().map(|(n, _)| n).sum::<u64>() + counts.unanswered,
        hooks.calls()
    );
    // The analysis decides, on what Prometheus saw through node1's proxy, which kept the
    // endpoints of the dead nodes' tasks while no manager could list tasks: requests to
    // them failed and counted against both versions. Either way, once quorum is back the
    // rollout ends whole: each step and hook once, and one stable service of the version
    // the outcome names, no candidate left.
    let outcome = status["outcome"].as_str().unwrap_or_default().to_string();
    let mut calls = hooks.calls();
    calls.sort();
    let step_once = history
        .iter()
        .filter(|l| l.contains("step 0: weight 30%"))
        .count();
    assert_eq!(step_once, 1, "{history:#?}");
    let version = match outcome.as_str() {
        "promoted" => {
            assert_each_step_once(&history, &hooks);
            "v2"
        }
        "rolledBack" => {
            assert!(
                status["reason"]
                    .as_str()
                    .is_some_and(|r| r.starts_with("analysis at step")),
                "{status}"
            );
            assert_eq!(calls, ["/onRollback", "/preRollout"], "{history:#?}");
            "v1"
        }
        _ => panic!("an outcome neither promoted nor rolled back: {status}"),
    };
    wait_until_some(Duration::from_secs(60), || {
        candidate(&stage).is_none().then_some(())
    });
    let stable: Vec<String> = stage
        .services()
        .into_iter()
        .filter(|s| stage.labels(s)["dev.cutover.role"] == "stable")
        .collect();
    assert_eq!(stable.len(), 1, "{:?}", stage.services());
    assert_eq!(stage.labels(&stable[0])["dev.cutover.version"], version);
}
