//! The verbs that end or reverse a release, end to end on the local backend (a real
//! `cutover serve`, `cutover demo-app` instances, traffic through the proxy): `undo`,
//! `delete`, `logs`, and `abort` answering once the rollout has rolled back.

use std::io::{BufRead, BufReader};
use std::time::{Duration, Instant};

use cutover_test_kit::kube::KubeTest;
use cutover_test_kit::{Serve, cutover_bin, instances, release, sample};

/// Half the traffic, a second's pause, promoted; the old version gone a second later.
const QUICK: &str = "  strategy:
    canary:
      scaleDownDelay: 1s
      steps:
        - setWeight: 50
        - pause: {duration: 1s}
";

/// Half the traffic, then a pause long enough that only a person ends the rollout.
const HELD: &str = "  strategy:
    canary:
      steps:
        - setWeight: 50
        - pause: {duration: 5m}
";

fn text(output: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// `GET /v1/releases/vb-logs/logs?QUERY` with the token: a follow's status line and
/// headers (its stream left open), or a whole short answer, and the connection.
fn logs_request(api: u16, token: &str, query: &str) -> (String, std::net::TcpStream) {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", api)).expect("connects");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout set");
    write!(
        stream,
        "GET /v1/releases/vb-logs/logs?{query} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\n\r\n"
    )
    .expect("sent");
    let mut answer = Vec::new();
    let mut byte = [0u8; 1];
    // The head, then (for an answer with a length) its body.
    while !answer.ends_with(b"\r\n\r\n") && stream.read(&mut byte).expect("reads") == 1 {
        answer.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&answer).to_string();
    let length = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-length: ")
                .map(str::to_string)
        })
        .and_then(|n| n.trim().parse::<usize>().ok());
    if let Some(length) = length {
        let mut body = vec![0u8; length];
        stream.read_exact(&mut body).expect("the body");
        answer.extend(body);
    }
    (String::from_utf8_lossy(&answer).to_string(), stream)
}

fn alive(pid: u32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}

#[test]
fn undo_after_a_promotion_brings_the_previous_version_back() {
    let mut serve = Serve::start("undo", &[]);
    serve.owns("vb-undo");
    let file = serve.release_file(
        "vb-undo",
        &release("vb-undo", ("v1", &[]), ("v2", &[]), QUICK),
    );
    let path = file.to_str().expect("path");
    let run = serve.cli(&["run", path, "--wait", "--timeout", "60s"]);
    assert_eq!(run.status.code(), Some(0), "{}", text(&run));
    serve.wait_for("vb-undo", Duration::from_secs(20), |_| {
        instances("vb-undo").len() == 1
    });
    assert_eq!(sample(serve.proxy(), 10).answered("v2"), 10);

    // Abort after the promotion says what is true, and names undo.
    let abort = serve.cli(&["abort", "vb-undo"]);
    assert_eq!(abort.status.code(), Some(2), "{}", text(&abort));
    assert!(
        text(&abort).contains("v2 was promoted") && text(&abort).contains("cutover undo vb-undo"),
        "{}",
        text(&abort)
    );

    // Through the release's own strategy: v1 comes back and serves everything.
    let undo = serve.cli(&["undo", "vb-undo", "--wait", "--timeout", "60s"]);
    assert_eq!(undo.status.code(), Some(0), "{}", text(&undo));
    assert!(text(&undo).contains("v2 -> v1"), "{}", text(&undo));
    assert!(text(&undo).contains("v1 serves again"), "{}", text(&undo));
    serve.wait_for("vb-undo", Duration::from_secs(20), |_| {
        instances("vb-undo").len() == 1
    });
    assert_eq!(sample(serve.proxy(), 20).answered("v1"), 20);

    // And `--full` switches straight back to v2 (no steps).
    let full = serve.cli(&["undo", "vb-undo", "--full", "--wait", "--timeout", "60s"]);
    assert_eq!(full.status.code(), Some(0), "{}", text(&full));
    assert!(text(&full).contains("straight switch"), "{}", text(&full));
    assert_eq!(sample(serve.proxy(), 20).answered("v2"), 20);
    let history = serve.cli(&["history", "vb-undo", "--output", "json"]);
    let history: serde_json::Value = serde_json::from_slice(&history.stdout).expect("json");
    let outcomes: Vec<String> = history["earlier"]
        .as_array()
        .expect("earlier")
        .iter()
        .map(|r| {
            format!(
                "{}->{}",
                r["stableVersion"].as_str().unwrap_or("?"),
                r["candidateVersion"].as_str().unwrap_or("?")
            )
        })
        .collect();
    assert_eq!(outcomes, ["v1->v2", "v2->v1"], "{history}");
}

/// Half the traffic, then a pause that only `cutover promote` ends.
const WAITS_FOR_PROMOTE: &str = "  strategy:
    canary:
      scaleDownDelay: 1s
      steps:
        - setWeight: 50
        - pause: {}
";

/// Regression: `undo --wait` had its own copy of the follow loop, which printed bare
/// phase lines, never said which command moves a waiting rollout on, and said nothing on
/// Ctrl-C. It now follows as `run --wait` does: timed lines and, at a pause that waits for
/// a person, `cutover promote NAME`.
#[test]
fn undo_wait_names_promote_when_the_rollout_back_waits_for_a_person() {
    let mut serve = Serve::start("undo-wait", &[]);
    serve.owns("vb-undo-wait");
    let file = serve.release_file(
        "vb-undo-wait",
        &release("vb-undo-wait", ("v1", &[]), ("v2", &[]), WAITS_FOR_PROMOTE),
    );
    let run = serve.cli(&["run", file.to_str().expect("path")]);
    assert_eq!(run.status.code(), Some(0), "{}", text(&run));
    serve.wait_for("vb-undo-wait", Duration::from_secs(20), |s| {
        s["waitingForPerson"] == true
    });
    let promote = serve.cli(&["promote", "vb-undo-wait"]);
    assert_eq!(promote.status.code(), Some(0), "{}", text(&promote));
    serve.wait_done("vb-undo-wait", Duration::from_secs(20));

    let mut undo = serve.cli_background(&["undo", "vb-undo-wait", "--wait", "--timeout", "60s"]);
    let stderr = undo.stderr.take().expect("stderr");
    let (lines, received) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if lines.send(line).is_err() {
                return;
            }
        }
    });
    let started = Instant::now();
    let mut seen = Vec::new();
    while !seen
        .iter()
        .any(|l: &String| l.contains("`cutover promote vb-undo-wait` goes on"))
    {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "undo --wait never named promote: {seen:#?}"
        );
        if let Ok(line) = received.recv_timeout(Duration::from_millis(200)) {
            seen.push(line);
        }
    }
    assert!(
        seen.iter()
            .any(|l| l.starts_with('[') && l.contains("vb-undo-wait: at step 1")),
        "progress lines as run --wait prints them: {seen:#?}"
    );
    let promote = serve.cli(&["promote", "vb-undo-wait"]);
    assert_eq!(promote.status.code(), Some(0), "{}", text(&promote));
    let output = undo.wait_with_output().expect("undo ends");
    assert_eq!(output.status.code(), Some(0), "{output:?} {seen:#?}");
    assert!(
        String::from_utf8_lossy(&output.stdout).contains("v1 serves again"),
        "{output:?}"
    );
}

#[test]
fn undo_with_nothing_to_undo_refuses_and_says_why() {
    let mut serve = Serve::start("undo-none", &[]);
    serve.owns("vb-undo-none");
    let unknown = serve.cli(&["undo", "vb-undo-none"]);
    assert_eq!(unknown.status.code(), Some(2), "{}", text(&unknown));
    assert!(
        text(&unknown).contains("cutover list"),
        "{}",
        text(&unknown)
    );

    let file = serve.release_file(
        "vb-undo-none",
        &release("vb-undo-none", ("v1", &[]), ("v2", &[]), HELD),
    );
    let run = serve.cli(&["run", file.to_str().expect("path")]);
    assert_eq!(run.status.code(), Some(0), "{}", text(&run));
    serve.wait_for("vb-undo-none", Duration::from_secs(20), |s| {
        s["weight"] == 50
    });
    let under_way = serve.cli(&["undo", "vb-undo-none"]);
    assert_eq!(under_way.status.code(), Some(2), "{}", text(&under_way));
    assert!(
        text(&under_way).contains("under way")
            && text(&under_way).contains("cutover abort vb-undo-none"),
        "{}",
        text(&under_way)
    );
    let abort = serve.cli(&["abort", "vb-undo-none"]);
    assert_eq!(abort.status.code(), Some(0), "{}", text(&abort));
    let never_promoted = serve.cli(&["undo", "vb-undo-none"]);
    assert_eq!(
        never_promoted.status.code(),
        Some(2),
        "{}",
        text(&never_promoted)
    );
    assert!(
        text(&never_promoted).contains("nothing to undo")
            && text(&never_promoted).contains("aborted")
            && text(&never_promoted).contains("v1 still serves"),
        "{}",
        text(&never_promoted)
    );
}

#[test]
fn abort_answers_once_rolled_back_so_a_run_right_after_is_accepted() {
    let mut serve = Serve::start("abort-acted", &[]);
    serve.owns("vb-abort");
    let file = serve.release_file(
        "vb-abort",
        &release("vb-abort", ("v1", &[]), ("v2", &[]), HELD),
    );
    let path = file.to_str().expect("path");
    let run = serve.cli(&["run", path]);
    assert_eq!(run.status.code(), Some(0), "{}", text(&run));
    serve.wait_for("vb-abort", Duration::from_secs(20), |s| s["weight"] == 50);
    let abort = serve.cli(&["abort", "vb-abort"]);
    assert_eq!(abort.status.code(), Some(0), "{}", text(&abort));
    assert!(
        text(&abort).contains("aborted; v1 serves all traffic and the candidate is gone"),
        "{}",
        text(&abort)
    );
    // The abort answered after the rollback: the status says so, the candidate is gone.
    let status = serve.status("vb-abort").expect("status");
    assert_eq!(status["outcome"], "aborted", "{status}");
    assert_eq!(instances("vb-abort").len(), 1, "only v1 runs");

    // Again: said as it is, not "already promoted".
    let again = serve.cli(&["abort", "vb-abort"]);
    assert_eq!(again.status.code(), Some(0), "{}", text(&again));
    assert!(
        text(&again).contains("already aborted") && !text(&again).contains("promoted"),
        "{}",
        text(&again)
    );

    // A run right after is accepted.
    let rerun = serve.cli(&["run", path]);
    assert_eq!(rerun.status.code(), Some(0), "{}", text(&rerun));
    serve.wait_for("vb-abort", Duration::from_secs(20), |s| s["weight"] == 50);
    let no_wait = serve.cli(&["abort", "vb-abort", "--no-wait"]);
    assert_eq!(no_wait.status.code(), Some(0), "{}", text(&no_wait));
}

#[test]
fn delete_refuses_while_a_rollout_runs_and_force_aborts_stops_and_forgets() {
    let mut serve = Serve::start("delete", &[]);
    serve.owns("vb-delete");
    let file = serve.release_file(
        "vb-delete",
        &release("vb-delete", ("v1", &[]), ("v2", &[]), HELD),
    );
    let path = file.to_str().expect("path");
    assert_eq!(serve.cli(&["run", path]).status.code(), Some(0));
    serve.wait_for("vb-delete", Duration::from_secs(20), |s| s["weight"] == 50);
    let pids: Vec<u32> = instances("vb-delete").into_iter().map(|(p, _)| p).collect();
    assert_eq!(pids.len(), 2, "stable and candidate run");

    let refused = serve.cli(&["delete", "vb-delete"]);
    assert_eq!(refused.status.code(), Some(2), "{}", text(&refused));
    assert!(
        text(&refused).contains("under way") && text(&refused).contains("--force"),
        "{}",
        text(&refused)
    );
    assert!(pids.iter().all(|p| alive(*p)), "nothing was stopped");

    let forced = serve.cli(&["delete", "vb-delete", "--force"]);
    assert_eq!(forced.status.code(), Some(0), "{}", text(&forced));
    assert!(
        text(&forced).contains("deleted vb-delete"),
        "{}",
        text(&forced)
    );
    assert!(
        pids.iter().all(|p| !alive(*p)),
        "every instance stopped: {pids:?}"
    );
    assert!(instances("vb-delete").is_empty());
    let state = serve.scratch.path.join("state");
    for gone in [
        "releases/vb-delete.json",
        "slots/vb-delete.json",
        "logs/vb-delete",
    ] {
        assert!(!state.join(gone).exists(), "{gone} is removed");
    }
    let list = serve.cli(&["list"]);
    assert!(!text(&list).contains("vb-delete"), "{}", text(&list));
    assert_eq!(serve.cli(&["status", "vb-delete"]).status.code(), Some(2));
    assert_eq!(
        sample(serve.proxy(), 5).answered("v1"),
        0,
        "no route is left"
    );

    // A new run of the same name starts afresh: no earlier rollouts.
    assert_eq!(serve.cli(&["run", path]).status.code(), Some(0));
    serve.wait_for("vb-delete", Duration::from_secs(20), |s| s["weight"] == 50);
    let history = serve.cli(&["history", "vb-delete", "--output", "json"]);
    let history: serde_json::Value = serde_json::from_slice(&history.stdout).expect("json");
    assert_eq!(history["earlier"], serde_json::json!([]), "{history}");

    // Once done, a plain delete goes through.
    assert_eq!(serve.cli(&["abort", "vb-delete"]).status.code(), Some(0));
    let deleted = serve.cli(&["delete", "vb-delete"]);
    assert_eq!(deleted.status.code(), Some(0), "{}", text(&deleted));
    assert!(instances("vb-delete").is_empty());
    let again = serve.cli(&["delete", "vb-delete"]);
    assert_eq!(again.status.code(), Some(2), "{}", text(&again));
    assert!(
        text(&again).contains("no release named"),
        "{}",
        text(&again)
    );
}

#[test]
fn logs_print_an_instances_output_and_follow_new_lines() {
    let mut serve = Serve::start("logs", &[]);
    serve.owns("vb-logs");
    // The stable version ticks once every 200 ms besides serving.
    let ticking = format!(
        "[\"sh\", \"-c\", \"(n=0; while :; do n=$$((n+1)); echo tick $$n; sleep 0.2; done) & exec {} demo-app --app-version v1 --port {{{{port}}}}\"]",
        cutover_bin()
    );
    let yaml = release("vb-logs", ("v1", &[]), ("v2", &[]), HELD);
    let stable_line = yaml
        .lines()
        .find(|l| l.contains("--app-version, v1,"))
        .expect("the stable command")
        .to_string();
    let yaml = yaml.replace(&stable_line, &format!("        command: {ticking}"));
    let file = serve.release_file("vb-logs", &yaml);
    assert_eq!(
        serve
            .cli(&["run", file.to_str().expect("path")])
            .status
            .code(),
        Some(0)
    );
    serve.wait_for("vb-logs", Duration::from_secs(20), |s| s["weight"] == 50);

    let stable = serve.cli(&["logs", "vb-logs", "--stable", "--tail", "1000"]);
    assert_eq!(stable.status.code(), Some(0), "{}", text(&stable));
    let out = String::from_utf8_lossy(&stable.stdout).to_string();
    assert!(out.contains("listening on 127.0.0.1:"), "{out}");
    assert!(out.contains("tick 1\n"), "{out}");
    let candidate = serve.cli(&["logs", "vb-logs", "--version", "v2"]);
    let out = String::from_utf8_lossy(&candidate.stdout).to_string();
    assert!(
        out.contains("listening on") && !out.contains("tick"),
        "{out}"
    );
    let both = serve.cli(&["logs", "vb-logs"]);
    let out = String::from_utf8_lossy(&both.stdout).to_string();
    assert!(
        out.contains("[v1 stable#0] ") && out.contains("[v2 candidate#0] "),
        "{out}"
    );
    let tail = serve.cli(&["logs", "vb-logs", "--stable", "--tail", "2"]);
    assert_eq!(String::from_utf8_lossy(&tail.stdout).lines().count(), 2);
    let missing = serve.cli(&["logs", "vb-logs", "--version", "v9"]);
    assert_eq!(missing.status.code(), Some(2), "{}", text(&missing));
    assert!(text(&missing).contains("v1 (stable)"), "{}", text(&missing));

    // Follow: lines written after the command started arrive.
    let mut follow = serve
        .command(&["logs", "vb-logs", "--stable", "--follow", "--tail", "1"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("logs --follow runs");
    let stdout = follow.stdout.take().expect("stdout");
    let (lines, received) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if lines.send(line).is_err() {
                return;
            }
        }
    });
    let started = Instant::now();
    let mut ticks = Vec::new();
    while ticks.len() < 4 && started.elapsed() < Duration::from_secs(15) {
        if let Ok(line) = received.recv_timeout(Duration::from_millis(200))
            && let Some(n) = line.strip_prefix("tick ")
        {
            ticks.push(n.parse::<u64>().expect("a tick number"));
        }
    }
    let _ = follow.kill();
    let _ = follow.wait();
    assert_eq!(ticks.len(), 4, "new lines stream: {ticks:?}");
    assert!(
        ticks.windows(2).all(|w| w[1] == w[0] + 1),
        "in order, none lost or repeated: {ticks:?}"
    );

    // A version is sent as it is: one outside the version set is refused before asking,
    // and the server refuses an encoded one rather than matching nothing.
    let odd = serve.cli(&["logs", "vb-logs", "--version", "v 2"]);
    assert_eq!(odd.status.code(), Some(2), "{}", text(&odd));
    assert!(text(&odd).contains("not a version name"), "{}", text(&odd));
    let token =
        std::fs::read_to_string(serve.scratch.path.join("state").join("token")).expect("the token");
    let (encoded, _) = logs_request(serve.api, token.trim(), "version=v%202");
    assert!(
        encoded.starts_with("HTTP/1.1 400") && encoded.contains("not a version name"),
        "{encoded}"
    );

    // Followed logs hold a connection each: four of one release at once, the fifth is
    // refused saying so, and closing one frees its slot.
    let mut open: Vec<_> = (0..4)
        .map(|_| {
            let (head, stream) = logs_request(serve.api, token.trim(), "follow=true&tail=1");
            assert!(head.starts_with("HTTP/1.1 200"), "{head}");
            stream
        })
        .collect();
    let (refused, _) = logs_request(serve.api, token.trim(), "follow=true&tail=1");
    assert!(refused.starts_with("HTTP/1.1 429"), "{refused}");
    assert!(
        refused.contains("4 followed logs of 'vb-logs' are open")
            && refused.contains("limit per release is 4"),
        "{refused}"
    );
    drop(open.pop());
    let freed = Instant::now();
    loop {
        let (head, stream) = logs_request(serve.api, token.trim(), "follow=true&tail=1");
        if head.starts_with("HTTP/1.1 200") {
            open.push(stream);
            break;
        }
        assert!(head.starts_with("HTTP/1.1 429"), "{head}");
        assert!(
            freed.elapsed() < Duration::from_secs(10),
            "a closed follow frees its slot: {head}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    drop(open);

    // Reading logs needs the token: instance output may hold what it was given.
    let anonymous = std::process::Command::new(cutover_bin())
        .args(["logs", "vb-logs"])
        .env_clear()
        .env(
            "CUTOVER_CONTROLLER",
            format!("http://127.0.0.1:{}", serve.api),
        )
        .current_dir(&serve.scratch.path)
        .output()
        .expect("runs");
    assert_eq!(anonymous.status.code(), Some(2), "{}", text(&anonymous));
    assert!(text(&anonymous).contains("token"), "{}", text(&anonymous));
}

#[test]
fn logs_and_delete_on_kubernetes_refuse_with_where_to_do_it() {
    let test = KubeTest::start("vb-kube");
    let serve = test.controller("vb-kube", &[]);
    let logs = serve.cli(&["logs", "web"]);
    assert_eq!(logs.status.code(), Some(2), "{}", text(&logs));
    assert!(
        text(&logs).contains("kubectl logs -l cutover.dev/release=web"),
        "{}",
        text(&logs)
    );
    let delete = serve.cli(&["delete", "web"]);
    assert_eq!(delete.status.code(), Some(2), "{}", text(&delete));
    assert!(
        text(&delete).contains("cannot delete")
            && text(&delete).contains("kubectl get deployments"),
        "{}",
        text(&delete)
    );
}

#[test]
fn undo_on_kubernetes_needs_the_previous_image_and_with_it_brings_that_version_back() {
    let test = KubeTest::start("vb-kube-undo");
    test.web(1, serde_json::json!({}));
    let serve = test.controller("vb-kube-undo", &[]);
    let v2 = serve.release_file(
        "web-v2",
        &cutover_test_kit::kube::release("web", "demo:v2", QUICK),
    );
    let run = serve.cli(&[
        "run",
        v2.to_str().expect("path"),
        "--wait",
        "--timeout",
        "90s",
    ]);
    assert_eq!(run.status.code(), Some(0), "{}", text(&run));
    // The first version ran before cutover adopted the Deployment: its image is unknown.
    let refused = serve.cli(&["undo", "web"]);
    assert_eq!(refused.status.code(), Some(2), "{}", text(&refused));
    assert!(
        text(&refused).contains("is not known") && text(&refused).contains("cutover run"),
        "{}",
        text(&refused)
    );
    let v4 = serve.release_file(
        "web-v4",
        &cutover_test_kit::kube::release("web", "demo:v4", QUICK),
    );
    let run = serve.cli(&[
        "run",
        v4.to_str().expect("path"),
        "--wait",
        "--timeout",
        "90s",
    ]);
    assert_eq!(run.status.code(), Some(0), "{}", text(&run));
    assert_eq!(sample(serve.proxy(), 10).answered("v4"), 10);
    // v2 was deployed by cutover: undo rolls demo:v2 out again.
    let undo = serve.cli(&["undo", "web", "--full", "--wait", "--timeout", "90s"]);
    assert_eq!(undo.status.code(), Some(0), "{}", text(&undo));
    assert!(text(&undo).contains("v4 -> v2"), "{}", text(&undo));
    assert_eq!(sample(serve.proxy(), 20).answered("v2"), 20);
}
