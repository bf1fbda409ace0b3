//! End to end on the local backend: a real `cutover serve` (controller and embedded proxy),
//! `cutover demo-app` processes as the versions, real HTTP traffic through the proxy, and
//! the `cutover` CLI as CI and people use it.

use std::time::{Duration, Instant};

use cutover_test_kit::{Load, Serve, canary, history, instances, record, release, replay, sample};
use serde_json::Value;

fn json(output: &std::process::Output) -> Value {
    serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
        panic!(
            "not JSON ({e}): {}\nstderr: {}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        )
    })
}

/// Half the traffic to the candidate, then a minute's pause: long enough that only a
/// guardrail trip can end the rollout in the tests' time.
const GUARDRAIL_CANARY: &str = "  strategy:
    canary:
      steps:
        - setWeight: 50
        - pause: {duration: 60s}
  guardrails:
    - name: candidate-5xx
      metric: error_rate
      max: 0.5
      window: 5s
      minRequests: 10
";

#[test]
fn a_healthy_candidate_is_promoted_with_no_failed_request() {
    let mut serve = Serve::start("promote", &[]);
    serve.owns("e2e-promote");
    let file = serve.release_file(
        "e2e-promote",
        &release("e2e-promote", ("v1", &[]), ("v2", &[]), &canary(0.1)),
    );
    // The first request would meet no route before the release exists.
    let submitted = serve.cli(&["run", file.to_str().expect("path")]);
    assert_eq!(submitted.status.code(), Some(0), "{submitted:?}");
    serve.wait_routed("e2e-promote");
    let recording = file.with_extension("recording.json");
    let recorder = record(&serve, "e2e-promote", "v2", "v1", 15, &recording);
    std::thread::sleep(Duration::from_millis(300));
    let load = Load::start(serve.proxy(), 100);
    let status = serve.wait_done("e2e-promote", Duration::from_secs(60));
    std::thread::sleep(Duration::from_secs(2));
    let counts = load.finish();
    assert_eq!(status["outcome"], "promoted", "{status}");
    assert_eq!(counts.failures_except(&[]), 0, "{counts:?}");
    assert!(counts.answered("v2") > 50, "{counts:?}");
    // After the scale-down only v2 runs, and it takes all traffic.
    let after = sample(serve.proxy(), 30);
    assert_eq!(after.answered("v2"), 30, "{after:?}");
    let running = instances("e2e-promote");
    assert_eq!(running.len(), 1, "only v2's instance is left: {running:?}");
    let steps: Vec<String> = history(&serve, "e2e-promote")
        .into_iter()
        .filter(|l| l.starts_with("step "))
        .collect();
    assert_eq!(steps.len(), 4, "every step exactly once: {steps:?}");
    // The same traffic, recorded and replayed offline, passes the analysis too.
    let replayed = replay(&serve, recorder, &file, &recording);
    assert_eq!(replayed.status.code(), Some(0), "analyze: {replayed:?}");
}

#[test]
fn a_candidate_answering_20_percent_5xx_is_rolled_back_by_the_builtin_analysis() {
    let mut serve = Serve::start("errors", &[]);
    serve.owns("e2e-errors");
    let file = serve.release_file(
        "e2e-errors",
        &release(
            "e2e-errors",
            ("v1", &[]),
            ("v2", &["--error-rate", "0.2"]),
            &canary(0.05),
        ),
    );
    let load_after_route = |serve: &Serve| {
        serve.wait_routed("e2e-errors");
        std::thread::sleep(Duration::from_millis(300));
        Load::start(serve.proxy(), 100)
    };
    let mut run = serve.cli_background(&[
        "run",
        file.to_str().expect("path"),
        "--wait",
        "--output",
        "json",
    ]);
    let load = load_after_route(&serve);
    let recording = file.with_extension("recording.json");
    let recorder = record(&serve, "e2e-errors", "v2", "v1", 12, &recording);
    let started = Instant::now();
    while run.try_wait().expect("wait").is_none() {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "run --wait never returned"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let output = run.wait_with_output().expect("output");
    let counts = load.finish();
    assert_eq!(
        output.status.code(),
        Some(1),
        "rolled back is exit 1: {output:?}"
    );
    let report = json(&output);
    assert_eq!(report["outcome"], "rolledBack");
    assert_eq!(report["exitCode"], 1);
    assert_eq!(report["candidateVersion"], "v2");
    let reason = report["reason"].as_str().expect("a reason");
    assert!(reason.contains("error-rate"), "{reason}");
    assert_eq!(counts.failures_except(&["v2"]), 0, "{counts:?}");
    let after = sample(serve.proxy(), 30);
    assert_eq!(
        after.answered("v1"),
        30,
        "all traffic back on stable: {after:?}"
    );
    assert_eq!(instances("e2e-errors").len(), 1, "the candidate is gone");
    // The same traffic, recorded and replayed offline, fails the analysis too.
    let replayed = replay(&serve, recorder, &file, &recording);
    assert_eq!(replayed.status.code(), Some(1), "analyze: {replayed:?}");
    let text = String::from_utf8_lossy(&replayed.stdout);
    assert!(text.contains("run: failure"), "{text}");
}

#[test]
fn a_candidate_failing_hard_is_cut_off_by_the_guardrail() {
    let mut serve = Serve::start("guardrail", &[]);
    serve.owns("e2e-guardrail");
    let file = serve.release_file(
        "e2e-guardrail",
        &release(
            "e2e-guardrail",
            ("v1", &[]),
            ("v2", &["--error-rate", "1"]),
            GUARDRAIL_CANARY,
        ),
    );
    let submitted = serve.cli(&["run", file.to_str().expect("path")]);
    assert_eq!(submitted.status.code(), Some(0), "{submitted:?}");
    serve.wait_routed("e2e-guardrail");
    let load = Load::start(serve.proxy(), 100);
    let status = serve.wait_done("e2e-guardrail", Duration::from_secs(20));
    let counts = load.finish();
    assert_eq!(status["outcome"], "rolledBack", "{status}");
    let reason = status["reason"].as_str().expect("reason");
    assert!(reason.contains("guardrail 'candidate-5xx'"), "{reason}");
    // At 50 req/s to the candidate, a cut within a second lets about 50 through; allow
    // for a loaded machine but not for the 60 s pause.
    assert!(counts.answered("v2") < 150, "{counts:?}");
    assert_eq!(counts.failures_except(&["v2"]), 0, "{counts:?}");
    assert_eq!(sample(serve.proxy(), 20).answered("v1"), 20);
}

#[test]
fn a_manual_pause_waits_for_promote() {
    let mut serve = Serve::start("pause", &[]);
    serve.owns("e2e-pause");
    let paused = "  strategy:
    canary:
      scaleDownDelay: 1s
      steps:
        - setWeight: 30
        - pause: {}
        - setWeight: 100
";
    let file = serve.release_file(
        "e2e-pause",
        &release("e2e-pause", ("v1", &[]), ("v2", &[]), paused),
    );
    assert_eq!(
        serve
            .cli(&["run", file.to_str().expect("path")])
            .status
            .code(),
        Some(0)
    );
    serve.wait_routed("e2e-pause");
    let load = Load::start(serve.proxy(), 100);
    let waiting = serve.wait_for("e2e-pause", Duration::from_secs(20), |s| {
        s["waitingForPerson"].as_bool() == Some(true)
    });
    assert_eq!(waiting["weight"], 30);
    std::thread::sleep(Duration::from_secs(2));
    let still = serve.status("e2e-pause").expect("status");
    assert_eq!(
        still["step"], 1,
        "an indefinite pause does not move on its own: {still}"
    );
    let promoted = serve.cli(&["promote", "e2e-pause"]);
    assert_eq!(promoted.status.code(), Some(0), "{promoted:?}");
    let done = serve.wait_done("e2e-pause", Duration::from_secs(20));
    assert_eq!(done["outcome"], "promoted");
    std::thread::sleep(Duration::from_secs(2));
    let counts = load.finish();
    assert_eq!(counts.failures_except(&[]), 0, "{counts:?}");
    assert!(
        counts.answered("v2") > 0 && counts.answered("v1") > 0,
        "{counts:?}"
    );
    assert_eq!(sample(serve.proxy(), 20).answered("v2"), 20);
}

#[test]
fn abort_mid_rollout_returns_all_traffic_to_stable() {
    let mut serve = Serve::start("abort", &[]);
    serve.owns("e2e-abort");
    let aborting = "  strategy:
    canary:
      steps:
        - setWeight: 50
        - pause: {duration: 5m}
";
    let file = serve.release_file(
        "e2e-abort",
        &release("e2e-abort", ("v1", &[]), ("v2", &[]), aborting),
    );
    let run = serve.cli_background(&["run", file.to_str().expect("path"), "--wait"]);
    serve.wait_routed("e2e-abort");
    let load = Load::start(serve.proxy(), 100);
    serve.wait_for("e2e-abort", Duration::from_secs(20), |s| s["weight"] == 50);
    std::thread::sleep(Duration::from_secs(1));
    let aborted = serve.cli(&["abort", "e2e-abort"]);
    assert_eq!(aborted.status.code(), Some(0), "{aborted:?}");
    let output = run.wait_with_output().expect("run");
    assert_eq!(
        output.status.code(),
        Some(1),
        "aborted is exit 1: {output:?}"
    );
    let status = serve.wait_done("e2e-abort", Duration::from_secs(20));
    assert_eq!(status["outcome"], "aborted");
    std::thread::sleep(Duration::from_millis(500));
    let counts = load.finish();
    assert_eq!(counts.failures_except(&[]), 0, "{counts:?}");
    assert!(
        counts.answered("v2") > 0,
        "the candidate served before the abort: {counts:?}"
    );
    assert_eq!(sample(serve.proxy(), 20).answered("v1"), 20);
    assert_eq!(instances("e2e-abort").len(), 1, "the candidate is gone");
    // A command that does not fit is refused with a message, exit 2.
    let refused = serve.cli(&["promote", "e2e-abort"]);
    assert_eq!(refused.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("cannot promote"),
        "{refused:?}"
    );
}

#[test]
fn run_wait_exit_codes_cover_invalid_input_timeouts_and_an_unreachable_controller() {
    let mut serve = Serve::start("codes", &[]);
    serve.owns("e2e-codes");
    // 2: an invalid file never reaches the controller.
    let bad = serve.release_file(
        "bad",
        "apiVersion: cutover.dev/v1\nkind: Release\nmetadata: {name: x}\nspec: {port: 1}\n",
    );
    let output = serve.cli(&["run", bad.to_str().expect("path"), "--wait"]);
    assert_eq!(output.status.code(), Some(2), "{output:?}");
    assert!(String::from_utf8_lossy(&output.stderr).contains("bad.yaml:"));
    // 3: waiting longer than --timeout; the rollout goes on.
    let paused = "  strategy:
    canary:
      steps:
        - setWeight: 10
        - pause: {}
";
    let file = serve.release_file(
        "e2e-codes",
        &release("e2e-codes", ("v1", &[]), ("v2", &[]), paused),
    );
    let output = serve.cli(&[
        "run",
        file.to_str().expect("path"),
        "--wait",
        "--timeout",
        "3s",
        "--output",
        "json",
    ]);
    assert_eq!(output.status.code(), Some(3), "{output:?}");
    assert_eq!(json(&output)["outcome"], "timedOut");
    // 2 again: a second rollout of a release that has one under way is refused.
    let output = serve.cli(&["run", file.to_str().expect("path")]);
    assert_eq!(output.status.code(), Some(2), "{output:?}");
    assert!(String::from_utf8_lossy(&output.stderr).contains("under way"));
    // The token guards writes.
    let output = std::process::Command::new(cutover_test_kit::cutover_bin())
        .args(["abort", "e2e-codes"])
        .env_clear()
        .env(
            "CUTOVER_CONTROLLER",
            format!("http://127.0.0.1:{}", serve.api),
        )
        .env("CUTOVER_TOKEN", "wrong")
        .output()
        .expect("cli");
    assert_eq!(output.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("token"),
        "{output:?}"
    );
    assert_eq!(serve.cli(&["abort", "e2e-codes"]).status.code(), Some(0));
    serve.wait_done("e2e-codes", Duration::from_secs(20));
    // 4: no controller.
    serve.kill();
    let output = serve.cli(&[
        "run",
        file.to_str().expect("path"),
        "--wait",
        "--output",
        "json",
    ]);
    assert_eq!(output.status.code(), Some(4), "{output:?}");
    assert_eq!(json(&output)["outcome"], "unreachable");
    let output = serve.cli(&["status", "e2e-codes"]);
    assert_eq!(output.status.code(), Some(4), "{output:?}");
}

#[test]
fn a_controller_killed_at_any_point_resumes_without_repeating_or_skipping_a_step() {
    let mut serve = Serve::start("restart", &[]);
    serve.owns("e2e-restart");
    let hooks = support_hooks::HookServer::start();
    let sections = format!(
        "  strategy:
    progressDeadline: 3m
    canary:
      scaleDownDelay: 2s
      steps:
        - setWeight: 20
        - pause: {{duration: 2s}}
        - setWeight: 50
        - analysis: {{}}
        - setWeight: 80
        - pause: {{duration: 1s}}
  analysis:
    metrics:
      - name: error-rate
        provider:
          builtin: error_rate
        max: 0.05
        interval: 1s
        count: 3
        minRequests: 3
        # The proxy restarts with the controller, empty: the first window after a
        # restart may hold too little to judge.
        inconclusiveLimit: 1
  hooks:
    preRollout:
      - url: http://{0}/preRollout
    postPromotion:
      - url: http://{0}/postPromotion
",
        hooks.address
    );
    let file = serve.release_file(
        "e2e-restart",
        &release("e2e-restart", ("v1", &[]), ("v2", &[]), &sections),
    );
    assert_eq!(
        serve
            .cli(&["run", file.to_str().expect("path")])
            .status
            .code(),
        Some(0)
    );
    // Kill points: while deploying or right after, in a timed pause, mid-analysis, and
    // during the scale-down after promotion.
    type Reached = fn(&Value) -> bool;
    let kill_when: [(&str, Reached); 4] = [
        ("deploying", |s| s["phase"] != "preRollout"),
        ("pausing", |s| s["step"] == 1),
        ("analyzing", |s| s["step"] == 3),
        ("scaling down", |s| {
            s["phase"] == "scalingDown" || s["done"] == true
        }),
    ];
    let load = Load::start(serve.proxy(), 60);
    for (label, reached) in kill_when {
        serve.wait_for("e2e-restart", Duration::from_secs(60), reached);
        serve.restart();
        eprintln!("killed and restarted the controller while {label}");
    }
    let status = serve.wait_done("e2e-restart", Duration::from_secs(60));
    std::thread::sleep(Duration::from_secs(3));
    let counts = load.finish();
    assert_eq!(status["outcome"], "promoted", "{status}");
    let lines = history(&serve, "e2e-restart");
    let steps: Vec<&String> = lines.iter().filter(|l| l.starts_with("step ")).collect();
    let indexes: Vec<u32> = steps
        .iter()
        .filter_map(|l| l["step ".len()..].split(':').next()?.parse().ok())
        .collect();
    assert_eq!(
        indexes,
        vec![0, 1, 2, 3, 4, 5],
        "each step once, in order: {lines:#?}"
    );
    assert!(
        lines
            .iter()
            .filter(|l| l.contains("resumed after a restart"))
            .count()
            >= 3
    );
    // postPromotion is at most once; preRollout at least once (documented idempotent).
    assert!(hooks.calls("/postPromotion") <= 1, "{:?}", hooks.all());
    assert!(hooks.calls("/preRollout") >= 1);
    // Nothing left behind: only the promoted version's instance runs.
    std::thread::sleep(Duration::from_secs(1));
    let running = instances("e2e-restart");
    assert_eq!(running.len(), 1, "{running:?}");
    assert_eq!(sample(serve.proxy(), 20).answered("v2"), 20);
    // Requests in flight when the embedded proxy dies with the controller fail; no
    // other request may.
    assert!(
        counts.answered("v1") + counts.answered("v2") > 100,
        "{counts:?}"
    );
}

/// A tiny HTTP server counting hook calls by path.
mod support_hooks {
    use std::collections::BTreeMap;
    use std::io::{Read, Write};
    use std::net::TcpListener;
    use std::sync::{Arc, Mutex};

    pub struct HookServer {
        pub address: std::net::SocketAddr,
        calls: Arc<Mutex<BTreeMap<String, u32>>>,
    }

    impl HookServer {
        pub fn start() -> HookServer {
            let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
            let address = listener.local_addr().expect("addr");
            let calls = Arc::new(Mutex::new(BTreeMap::new()));
            let counted = calls.clone();
            std::thread::spawn(move || {
                for stream in listener.incoming() {
                    let Ok(mut stream) = stream else { continue };
                    let mut buffer = [0u8; 8192];
                    let n = stream.read(&mut buffer).unwrap_or(0);
                    let text = String::from_utf8_lossy(&buffer[..n]);
                    let path = text.split(' ').nth(1).unwrap_or("").to_string();
                    *counted.lock().expect("calls").entry(path).or_insert(0) += 1;
                    let _ = stream.write_all(
                        b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
                    );
                }
            });
            HookServer { address, calls }
        }

        pub fn calls(&self, path: &str) -> u32 {
            self.calls
                .lock()
                .expect("calls")
                .get(path)
                .copied()
                .unwrap_or(0)
        }

        pub fn all(&self) -> BTreeMap<String, u32> {
            self.calls.lock().expect("calls").clone()
        }
    }
}

/// `cutover proxy --routes-from` the controller, with its edge token (for guardrail
/// reports: the write token is not needed for them); the process and its listener's port.
fn pulling_proxy(serve: &Serve) -> (std::process::Child, u16) {
    let (listen, admin) = (cutover_test_kit::free_port(), cutover_test_kit::free_port());
    let config = serve.scratch.path.join("proxy.yaml");
    std::fs::write(
        &config,
        format!(
            "listeners:\n  - address: 127.0.0.1:{listen}\nadmin:\n  address: 127.0.0.1:{admin}\n"
        ),
    )
    .expect("proxy config");
    let proxy = std::process::Command::new(cutover_test_kit::cutover_bin())
        .args(["proxy", "--config"])
        .arg(&config)
        .args(["--routes-from", &format!("http://127.0.0.1:{}", serve.api)])
        .arg("--token-file")
        .arg(serve.scratch.path.join("state").join("edge-token"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("cutover proxy");
    (proxy, listen)
}

#[test]
fn a_controller_without_a_proxy_drives_a_proxy_that_pulls_its_routes() {
    let mut serve = Serve::start("pull", &["--no-proxy"]);
    serve.owns("e2e-pull");
    let (mut proxy, listen) = pulling_proxy(&serve);
    let sections = "  strategy:
    canary:
      scaleDownDelay: 1s
      steps:
        - setWeight: 50
        - pause: {duration: 2s}
";
    let file = serve.release_file(
        "e2e-pull",
        &release("e2e-pull", ("v1", &[]), ("v2", &[]), sections),
    );
    let proxy_addr = std::net::SocketAddr::from(([127, 0, 0, 1], listen));
    let run = serve.cli_background(&["run", file.to_str().expect("path"), "--wait"]);
    // Mid-rollout the pulling proxy splits the traffic.
    serve.wait_for("e2e-pull", Duration::from_secs(20), |s| s["weight"] == 50);
    let started = Instant::now();
    let mut split = sample(proxy_addr, 40);
    while split.answered("v2") == 0 && started.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(200));
        split = sample(proxy_addr, 40);
    }
    assert!(
        split.answered("v1") > 0 && split.answered("v2") > 0,
        "{split:?}"
    );
    let output = run.wait_with_output().expect("run");
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    // Within a pull interval the proxy has the promoted table.
    let started = Instant::now();
    loop {
        let after = sample(proxy_addr, 20);
        if after.answered("v2") == 20 {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(5), "{after:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
    let _ = proxy.kill();
    let _ = proxy.wait();
}

#[test]
fn a_pulling_proxy_reports_its_guardrail_trips_and_the_controller_rolls_back() {
    let mut serve = Serve::start("pull-trip", &["--no-proxy"]);
    serve.owns("e2e-pull-trip");
    let (mut proxy, listen) = pulling_proxy(&serve);
    let file = serve.release_file(
        "e2e-pull-trip",
        &release(
            "e2e-pull-trip",
            ("v1", &[]),
            ("v2", &["--error-rate", "1"]),
            GUARDRAIL_CANARY,
        ),
    );
    let submitted = serve.cli(&["run", file.to_str().expect("path")]);
    assert_eq!(submitted.status.code(), Some(0), "{submitted:?}");
    serve.wait_routed("e2e-pull-trip");
    let load = Load::start(std::net::SocketAddr::from(([127, 0, 0, 1], listen)), 100);
    // The proxy cuts the candidate off and tells the controller, which rolls back rather
    // than going on to the next weight.
    let status = serve.wait_done("e2e-pull-trip", Duration::from_secs(30));
    let counts = load.finish();
    let _ = proxy.kill();
    let _ = proxy.wait();
    assert_eq!(status["outcome"], "rolledBack", "{status}");
    let reason = status["reason"].as_str().expect("reason");
    assert!(reason.contains("guardrail 'candidate-5xx'"), "{reason}");
    assert!(counts.answered("v1") > 0, "{counts:?}");
}
