//! What a newcomer meets at the edges (issue 19): every error ends with the next thing to
//! do, the docs, `--help` and the program agree, waits say which command moves them on,
//! Ctrl-C and a lost controller are said in words. Each test runs the real `cutover`
//! binary (and a real `cutover serve` where one is needed) and checks the exit code and
//! the key words of the text.

use std::io::Read;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cutover_test_kit::{Serve, cutover_bin, free_port, release, wait_healthz};
use serde_json::Value;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// The CLI with only the given environment, run in `dir` (so that no `.cutover/token`
/// of the working directory is picked up).
fn cli_in(dir: &Path, args: &[&str], env: &[(&str, String)]) -> Output {
    Command::new(cutover_bin())
        .args(args)
        .current_dir(dir)
        .env_clear()
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .output()
        .expect("cutover runs")
}

/// A release that waits for a person at step 1: `setWeight 20`, then `pause: {}`.
const WAIT_FOR_PROMOTE: &str = "  strategy:
    canary:
      scaleDownDelay: 1s
      steps:
        - setWeight: 20
        - pause: {}
";

/// A release that promotes by itself after a short timed pause.
fn timed(seconds: u32) -> String {
    format!(
        "  strategy:
    canary:
      scaleDownDelay: 1s
      steps:
        - setWeight: 20
        - pause: {{duration: {seconds}s}}
"
    )
}

/// Waits until `child` exits, at most `limit`; kills it and fails otherwise.
fn wait_exit(mut child: Child, limit: Duration) -> Output {
    let started = Instant::now();
    while child.try_wait().expect("try_wait").is_none() {
        if started.elapsed() > limit {
            let _ = child.kill();
            let output = child.wait_with_output().expect("output");
            panic!("did not end within {limit:?}: {}", stderr(&output));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    child.wait_with_output().expect("output")
}

/// What a child wrote to one of its pipes so far.
type Collected = Arc<Mutex<Vec<u8>>>;

/// A background CLI whose output is read as it comes, so that a test can wait for a line
/// that says it is set up (its Ctrl-C handler in place, its event stream open) rather
/// than sleeping and hoping.
struct Watched {
    child: Child,
    out: Arc<Mutex<Vec<u8>>>,
    err: Arc<Mutex<Vec<u8>>>,
    readers: Vec<std::thread::JoinHandle<()>>,
}

impl Watched {
    fn start(mut child: Child) -> Watched {
        let out = Arc::new(Mutex::new(Vec::new()));
        let err = Arc::new(Mutex::new(Vec::new()));
        let mut readers = Vec::new();
        let pipes: [(Box<dyn Read + Send>, &Collected); 2] = [
            (Box::new(child.stdout.take().expect("stdout piped")), &out),
            (Box::new(child.stderr.take().expect("stderr piped")), &err),
        ];
        for (mut pipe, into) in pipes {
            let into = into.clone();
            readers.push(std::thread::spawn(move || {
                let mut chunk = [0u8; 4096];
                while let Ok(n @ 1..) = pipe.read(&mut chunk) {
                    into.lock().expect("output").extend_from_slice(&chunk[..n]);
                }
            }));
        }
        Watched {
            child,
            out,
            err,
            readers,
        }
    }

    /// Waits until the child has written `lines` whole lines (stdout and stderr together).
    fn wait_lines(&self, lines: usize, limit: Duration) {
        let started = Instant::now();
        loop {
            let written = |b: &Arc<Mutex<Vec<u8>>>| {
                b.lock()
                    .expect("output")
                    .iter()
                    .filter(|c| **c == b'\n')
                    .count()
            };
            if written(&self.out) + written(&self.err) >= lines {
                return;
            }
            assert!(
                started.elapsed() < limit,
                "no {lines} lines within {limit:?}: {}",
                String::from_utf8_lossy(&self.err.lock().expect("output"))
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn sigint(&self) {
        sigint(&self.child);
    }

    /// Its exit and everything it wrote; killed (and the test failed) after `limit`.
    fn finish(mut self, limit: Duration) -> Output {
        let started = Instant::now();
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                break status;
            }
            if started.elapsed() > limit {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!(
                    "did not end within {limit:?}: {}",
                    String::from_utf8_lossy(&self.err.lock().expect("output"))
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        };
        for reader in self.readers.drain(..) {
            let _ = reader.join();
        }
        let take = |b: &Arc<Mutex<Vec<u8>>>| std::mem::take(&mut *b.lock().expect("output"));
        Output {
            status,
            stdout: take(&self.out),
            stderr: take(&self.err),
        }
    }
}

fn sigint(child: &Child) {
    let sent = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(sent.success());
}

fn waiting_for_person(serve: &Serve, name: &str) -> Value {
    serve.wait_for(name, Duration::from_secs(30), |s| {
        s["waitingForPerson"].as_bool() == Some(true)
    })
}

#[test]
fn an_unreachable_controller_says_to_start_cutover_serve() {
    let dir = std::env::temp_dir();
    let port = free_port();
    let address = format!("http://127.0.0.1:{port}");
    let output = cli_in(
        &dir,
        &["status", "shop"],
        &[("CUTOVER_CONTROLLER", address.clone())],
    );
    assert_eq!(output.status.code(), Some(4), "{output:?}");
    let text = stderr(&output);
    assert!(
        text.contains(&format!(
            "cannot reach the controller at {address}: connection refused"
        )),
        "{text}"
    );
    assert!(text.contains("start it with `cutover serve`"), "{text}");
    assert!(text.contains("--controller"), "{text}");
    assert!(text.contains("CUTOVER_CONTROLLER"), "{text}");
    assert!(!text.contains("os error"), "no raw socket error: {text}");
}

#[test]
fn a_missing_and_a_wrong_token_are_told_apart_and_both_say_where_the_token_is() {
    let serve = Serve::start("tokens", &[]);
    let controller = format!("http://127.0.0.1:{}", serve.api);
    // `pause` writes at once; `abort` reads the release first and would answer that it
    // does not exist before any token is asked for.
    let missing = cli_in(
        &serve.scratch.path,
        &["pause", "shop"],
        &[("CUTOVER_CONTROLLER", controller.clone())],
    );
    assert_eq!(missing.status.code(), Some(2), "{missing:?}");
    let missing = stderr(&missing);
    assert!(missing.contains("no token"), "{missing}");
    assert!(missing.contains("<state-dir>/token"), "{missing}");
    assert!(missing.contains("--token-file"), "{missing}");

    let wrong = cli_in(
        &serve.scratch.path,
        &["pause", "shop"],
        &[
            ("CUTOVER_CONTROLLER", controller),
            ("CUTOVER_TOKEN", "not-the-token".into()),
        ],
    );
    assert_eq!(wrong.status.code(), Some(2), "{wrong:?}");
    let wrong = stderr(&wrong);
    assert!(wrong.contains("wrong token"), "{wrong}");
    assert!(wrong.contains("from CUTOVER_TOKEN"), "{wrong}");
    assert!(wrong.contains("<state-dir>/token"), "{wrong}");
    assert_ne!(missing, wrong);
    for text in [&missing, &wrong] {
        assert!(!text.contains("   "), "one line, no runs of spaces: {text}");
    }
}

/// `cutover serve` on `state_dir` with the three addresses given; returns its output.
fn serve_once(state_dir: &Path, api: u16, listen: u16, admin: u16) -> Output {
    let output = Command::new(cutover_bin())
        .args(["serve", "--state-dir"])
        .arg(state_dir)
        .args(["--api", &format!("127.0.0.1:{api}")])
        .args(["--listen", &format!("127.0.0.1:{listen}")])
        .args(["--admin", &format!("127.0.0.1:{admin}")])
        .env_clear()
        .stdin(Stdio::null())
        .output()
        .expect("cutover serve runs");
    assert_ne!(output.status.code(), Some(0), "serve must fail: {output:?}");
    output
}

#[test]
fn a_port_in_use_names_its_flag_and_a_failed_start_leaves_no_state_dir_behind() {
    let scratch = cutover_test_kit::Scratch::new("port-in-use");
    let held = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = held.local_addr().expect("address").port();
    for flag in ["--api", "--listen", "--admin"] {
        let state_dir = scratch.path.join(format!("new{flag}")).join(".cutover");
        let ports = match flag {
            "--api" => (port, free_port(), free_port()),
            "--listen" => (free_port(), port, free_port()),
            _ => (free_port(), free_port(), port),
        };
        let output = serve_once(&state_dir, ports.0, ports.1, ports.2);
        assert_eq!(output.status.code(), Some(4), "{output:?}");
        let text = stderr(&output);
        assert!(
            text.contains(&format!("{flag} 127.0.0.1:{port} is in use")),
            "{flag}: {text}"
        );
        assert!(text.contains(&format!("with {flag} ADDRESS")), "{text}");
        assert!(
            !state_dir.parent().expect("parent").exists(),
            "{flag}: the failed start left {} behind",
            state_dir.display()
        );
    }
    // A state directory that was there before stays, with what it held.
    let existing = scratch.path.join("existing");
    std::fs::create_dir_all(&existing).expect("dir");
    std::fs::write(existing.join("keep"), "mine").expect("file");
    let output = serve_once(&existing, port, free_port(), free_port());
    assert_eq!(output.status.code(), Some(4), "{output:?}");
    assert_eq!(
        std::fs::read_to_string(existing.join("keep"))
            .ok()
            .as_deref(),
        Some("mine")
    );
}

#[test]
fn a_second_serve_on_the_same_state_dir_names_the_holder() {
    let scratch = cutover_test_kit::Scratch::new("second-serve");
    let state_dir = scratch.path.join("state");
    let api = free_port();
    let mut first = Command::new(cutover_bin())
        .args(["serve", "--state-dir"])
        .arg(&state_dir)
        .args(["--api", &format!("127.0.0.1:{api}")])
        .args(["--listen", &format!("127.0.0.1:{}", free_port())])
        .args(["--admin", &format!("127.0.0.1:{}", free_port())])
        .env_clear()
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("serve starts");
    wait_healthz(api);
    let output = serve_once(&state_dir, free_port(), free_port(), free_port());
    let _ = first.kill();
    let _ = first.wait();
    assert_eq!(output.status.code(), Some(4), "{output:?}");
    let text = stderr(&output);
    assert!(text.contains("another controller"), "{text}");
    assert!(text.contains(&format!("pid {}", first.id())), "{text}");
    assert!(
        text.contains(&format!("API on http://127.0.0.1:{api}")),
        "{text}"
    );
    assert!(text.contains("--state-dir"), "{text}");
}

#[test]
fn an_https_address_to_a_plain_controller_says_the_real_fix() {
    let serve = Serve::start("https-plain", &[]);
    let output = cli_in(
        &serve.scratch.path,
        &["list"],
        &[(
            "CUTOVER_CONTROLLER",
            format!("https://127.0.0.1:{}", serve.api),
        )],
    );
    assert_eq!(output.status.code(), Some(4), "{output:?}");
    let text = stderr(&output);
    assert!(text.contains("use an http:// address"), "{text}");
    assert!(text.contains("--tls-cert"), "{text}");
    assert!(!text.contains("in front of it"), "{text}");
}

#[test]
fn promote_during_a_running_analysis_is_refused_with_what_to_do_as_docs_and_help_say() {
    let mut serve = Serve::start("promote-analysis", &[]);
    serve.owns("nm-analysis");
    // No traffic: the analysis keeps measuring (nothing to judge) for its 30 measurements.
    let sections = "  strategy:
    canary:
      scaleDownDelay: 1s
      steps:
        - setWeight: 20
        - analysis: {}
  analysis:
    metrics:
      - name: error-rate
        provider:
          builtin: error_rate
        max: 0.1
        interval: 1s
        count: 30
        minRequests: 5
";
    let file = serve.release_file(
        "nm-analysis",
        &release("nm-analysis", ("v1", &[]), ("v2", &[]), sections),
    );
    let started = serve.cli(&["run", file.to_str().expect("path")]);
    assert_eq!(started.status.code(), Some(0), "{started:?}");
    serve.wait_for("nm-analysis", Duration::from_secs(30), |s| {
        s["description"]
            .as_str()
            .is_some_and(|d| d.contains("analyzing"))
    });
    let refused = serve.cli(&["promote", "nm-analysis"]);
    assert_eq!(refused.status.code(), Some(2), "{refused:?}");
    let text = stderr(&refused);
    assert!(text.contains("an analysis is running"), "{text}");
    assert!(text.contains("wait for its verdict"), "{text}");
    assert!(text.contains("promote --full"), "{text}");
    // --help and docs/cli.md say the same.
    let help = stdout(&serve.cli(&["promote", "--help"]))
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    assert!(
        help.contains("Refused while an analysis is running"),
        "{help}"
    );
    assert!(!help.contains("accept an analysis"), "{help}");
    let docs = std::fs::read_to_string(repo().join("docs/cli.md"))
        .expect("docs/cli.md")
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    assert!(
        docs.contains("refused while an analysis is running"),
        "docs/cli.md must say it"
    );
    assert!(
        !docs.contains("accepts a running"),
        "docs/cli.md still says it"
    );
    let full = serve.cli(&["promote", "nm-analysis", "--full"]);
    assert_eq!(full.status.code(), Some(0), "{full:?}");
    let done = serve.wait_done("nm-analysis", Duration::from_secs(30));
    assert_eq!(done["outcome"], "promoted", "{done}");
}

/// The jq one-liner of docs/ci.md, as documented.
fn documented_jq_filter() -> String {
    let ci = std::fs::read_to_string(repo().join("docs/ci.md")).expect("docs/ci.md");
    let line = ci
        .lines()
        .find(|l| l.starts_with("jq -r '\"\\(.release): \\(.outcome)"))
        .expect("the jq one-liner in docs/ci.md");
    let filter = line
        .strip_prefix("jq -r '")
        .and_then(|l| l.strip_suffix("' rollout.json"))
        .expect("jq -r '...' rollout.json");
    filter.to_string()
}

fn jq(filter: &str, report: &[u8]) -> String {
    let path = std::env::temp_dir().join(format!("cutover-nm-report-{}.json", free_port()));
    std::fs::write(&path, report).expect("report");
    let output = Command::new("jq")
        .args(["-r", filter])
        .arg(&path)
        .output()
        .expect("jq runs");
    let _ = std::fs::remove_file(&path);
    assert!(output.status.success(), "{output:?}");
    stdout(&output).trim().to_string()
}

#[test]
fn the_json_report_keeps_the_version_before_the_rollout_and_the_documented_jq_prints_v4_to_v5() {
    let mut serve = Serve::start("report", &[]);
    serve.owns("nm-report");
    let file = serve.release_file(
        "nm-report",
        &release("nm-report", ("v4", &[]), ("v5", &[]), &timed(1)),
    );
    let path = file.to_str().expect("path");
    let output = serve.cli(&["run", path, "--wait", "--output", "json"]);
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    let report: Value = serde_json::from_slice(&output.stdout).expect("JSON report");
    assert_eq!(report["stableVersion"], "v4", "{report}");
    assert_eq!(report["candidateVersion"], "v5", "{report}");
    assert_eq!(report["servingVersion"], "v5", "{report}");
    let filter = documented_jq_filter();
    assert_eq!(
        jq(&filter, &output.stdout),
        "nm-report: promoted (v4 -> v5)"
    );

    // The same file again: refused (v5 already serves), and the versions are still known:
    // v5 would have been the stable version of this rollout.
    let refused = serve.cli(&["run", path, "--wait", "--output", "json"]);
    assert_eq!(refused.status.code(), Some(2), "{refused:?}");
    let report: Value = serde_json::from_slice(&refused.stdout).expect("JSON report");
    assert_eq!(report["outcome"], "refused", "{report}");
    assert_eq!(report["stableVersion"], "v5", "{report}");
    assert_eq!(report["candidateVersion"], "v5", "{report}");
    assert_eq!(report["servingVersion"], "v5", "{report}");
    let line = jq(&filter, &refused.stdout);
    assert!(line.starts_with("nm-report: refused (v5 -> v5)"), "{line}");
    assert!(!line.contains("null"), "{line}");
    // A release's first rollout refused (a wrong token): the file's versions.
    let first = serve.release_file(
        "nm-report-first",
        &release("nm-report-first", ("v1", &[]), ("v2", &[]), &timed(1)),
    );
    let refused = cli_in(
        &serve.scratch.path,
        &["run", first.to_str().expect("path"), "--output", "json"],
        &[
            (
                "CUTOVER_CONTROLLER",
                format!("http://127.0.0.1:{}", serve.api),
            ),
            ("CUTOVER_TOKEN", "not-the-token".into()),
        ],
    );
    assert_eq!(refused.status.code(), Some(2), "{refused:?}");
    let line = jq(&filter, &refused.stdout);
    assert!(
        line.starts_with("nm-report-first: refused (v1 -> v2)"),
        "{line}"
    );
}

#[test]
fn waiting_paused_and_promoted_are_said_plainly_in_run_status_list_and_history() {
    let mut serve = Serve::start("plain-states", &[]);
    serve.owns("nm-states");
    let file = serve.release_file(
        "nm-states",
        &release("nm-states", ("v1", &[]), ("v2", &[]), WAIT_FOR_PROMOTE),
    );
    let run = serve.cli_background(&["run", file.to_str().expect("path"), "--wait"]);
    waiting_for_person(&serve, "nm-states");

    let status = stdout(&serve.cli(&["status", "nm-states"]));
    assert!(status.contains("waiting for promote"), "{status}");
    assert!(status.contains("`cutover promote nm-states`"), "{status}");
    let list = stdout(&serve.cli(&["list"]));
    assert!(list.contains("step 1/2 pause (waiting)"), "{list}");
    assert!(list.contains("`cutover promote nm-states`"), "{list}");
    // Columns line up: WEIGHT's right edge is at the same place on every line.
    let lines: Vec<&str> = list.lines().collect();
    let weight_end = |l: &str, w: &str| l.find(w).map(|i| i + w.len());
    assert_eq!(
        weight_end(lines[0], "WEIGHT"),
        weight_end(lines[1], "20%"),
        "{list}"
    );
    // A date and a zone: 20xx-xx-xxTxx:xx:xxZ.
    assert!(list.contains("T") && list.contains("Z  "), "{list}");

    let paused = serve.cli(&["pause", "nm-states"]);
    assert_eq!(paused.status.code(), Some(0), "{paused:?}");
    let status = stdout(&serve.cli(&["status", "nm-states"]));
    let phase = status
        .lines()
        .find(|l| l.trim_start().starts_with("phase"))
        .unwrap_or_default();
    assert!(phase.contains("paused"), "{status}");
    assert!(status.contains("`cutover resume nm-states`"), "{status}");
    assert!(
        stdout(&serve.cli(&["list"])).contains("paused at 1/2"),
        "list says paused"
    );

    let promoted = serve.cli(&["promote", "nm-states"]);
    assert_eq!(promoted.status.code(), Some(0), "{promoted:?}");
    let run = wait_exit(run, Duration::from_secs(60));
    assert_eq!(run.status.code(), Some(0), "{run:?}");
    let progress = stderr(&run);
    assert_eq!(
        progress.matches("`cutover promote nm-states`").count(),
        1,
        "said once: {progress}"
    );

    let status = stdout(&serve.cli(&["status", "nm-states"]));
    assert!(status.contains("(promoted, was v1)"), "{status}");
    assert!(!status.contains("not running"), "{status}");
    let list = stdout(&serve.cli(&["list"]));
    assert!(list.contains("promoted"), "{list}");
    let history = stdout(&serve.cli(&["history", "nm-states"]));
    let first = history.lines().next().unwrap_or_default();
    let stamp = first.split_whitespace().next().unwrap_or_default();
    assert!(
        stamp.len() == 20 && stamp.as_bytes()[10] == b'T' && stamp.ends_with('Z'),
        "RFC 3339 with zone: {history}"
    );
}

#[test]
fn ctrl_c_on_run_wait_and_status_watch_says_the_rollout_goes_on_and_exits_130() {
    let mut serve = Serve::start("ctrl-c", &[]);
    serve.owns("nm-ctrl-c");
    let file = serve.release_file(
        "nm-ctrl-c",
        &release("nm-ctrl-c", ("v1", &[]), ("v2", &[]), WAIT_FOR_PROMOTE),
    );
    let run =
        Watched::start(serve.cli_background(&["run", file.to_str().expect("path"), "--wait"]));
    waiting_for_person(&serve, "nm-ctrl-c");
    let watch = Watched::start(serve.cli_background(&["status", "nm-ctrl-c", "--watch"]));
    // Following once they printed a status: `run` its "started" line and then one of
    // progress, `status --watch` the first status.
    run.wait_lines(2, Duration::from_secs(30));
    watch.wait_lines(1, Duration::from_secs(30));
    for child in [Some(run), Some(watch), None] {
        // Last, `undo --wait` is the same wait: promoted, then undone through the same
        // strategy, which waits for a person again.
        let child = match child {
            Some(child) => child,
            None => {
                let promoted = serve.cli(&["promote", "nm-ctrl-c", "--full"]);
                assert_eq!(promoted.status.code(), Some(0), "{promoted:?}");
                serve.wait_done("nm-ctrl-c", Duration::from_secs(60));
                let child = Watched::start(serve.cli_background(&["undo", "nm-ctrl-c", "--wait"]));
                child.wait_lines(2, Duration::from_secs(30));
                child
            }
        };
        child.sigint();
        let output = child.finish(Duration::from_secs(10));
        assert_eq!(output.status.code(), Some(130), "{output:?}");
        let text = stderr(&output);
        assert!(text.contains("the rollout goes on"), "{text}");
        assert!(
            text.contains("`cutover status nm-ctrl-c --watch`"),
            "{text}"
        );
        assert!(text.contains("`cutover abort nm-ctrl-c`"), "{text}");
    }
    let status = serve.status("nm-ctrl-c").expect("status");
    assert_eq!(status["done"], false, "the undo went on: {status}");
    let help = stdout(&serve.cli(&["run", "--help"]));
    assert!(help.contains("130"), "{help}");
    let docs = std::fs::read_to_string(repo().join("docs/cli.md")).expect("docs/cli.md");
    assert!(docs.contains("| 130 |"), "the exit-code table has 130");
}

#[test]
fn run_wait_and_status_watch_say_when_the_controller_is_lost_regained_and_the_rollout_resumed() {
    let mut serve = Serve::start("lost", &[]);
    serve.owns("nm-lost");
    let file = serve.release_file(
        "nm-lost",
        &release("nm-lost", ("v1", &[]), ("v2", &[]), &timed(8)),
    );
    let run =
        Watched::start(serve.cli_background(&["run", file.to_str().expect("path"), "--wait"]));
    serve.wait_for("nm-lost", Duration::from_secs(30), |s| {
        s["description"]
            .as_str()
            .is_some_and(|d| d.contains("pausing"))
    });
    let watch = Watched::start(serve.cli_background(&["status", "nm-lost", "--watch"]));
    // Both are following before the controller goes: each printed a status from the
    // event stream (`run` after its "started" line).
    run.wait_lines(2, Duration::from_secs(30));
    watch.wait_lines(1, Duration::from_secs(30));
    serve.kill();
    // Several retries fail meanwhile: still one line.
    std::thread::sleep(Duration::from_secs(3));
    serve.restart();
    let run = run.finish(Duration::from_secs(60));
    let watch = watch.finish(Duration::from_secs(30));
    for output in [&run, &watch] {
        assert_eq!(output.status.code(), Some(0), "{output:?}");
        let text = stderr(output);
        assert_eq!(text.matches("lost the controller at").count(), 1, "{text}");
        assert_eq!(
            text.matches("regained the controller at").count(),
            1,
            "{text}"
        );
        assert_eq!(text.matches("the rollout resumed").count(), 1, "{text}");
        let lost = text.find("lost the controller").unwrap_or(usize::MAX);
        let regained = text.find("regained the controller").unwrap_or(0);
        let resumed = text.find("the rollout resumed").unwrap_or(0);
        assert!(lost < regained && regained <= resumed, "in order: {text}");
    }
    assert!(stdout(&run).contains("nm-lost: promoted"), "{run:?}");
}
