//! What a newcomer types (issue 19): a release whose `${VERSION}` is unset, a version set
//! on the command line with `--set`, a misspelt `--set` key, and a section with three
//! mistakes, through `lint`, `plan`, `run` and the controller's API.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::Duration;

use cutover_test_kit::{Scratch, Serve, cutover_bin, demo_app, instances};

/// A local release whose version and candidate command come from `VERSION`, as CI
/// pipelines write it.
fn from_ci(name: &str) -> String {
    format!(
        "apiVersion: cutover.dev/v1\nkind: Release\nmetadata:\n  name: {name}\nspec:\n  backend:\n    local:\n      stable:\n        command: {}\n      candidate:\n        command: [{:?}, demo-app, --app-version, \"${{VERSION}}\", --port, \"{{{{port}}}}\"]\n      readinessPath: /healthz\n  stableVersion: v1\n  version: ${{VERSION}}\n  port: 8080\n  strategy:\n    canary:\n      steps:\n        - setWeight: 20\n        - pause: {{}}\n        - setWeight: 100\n",
        demo_app("v1", &[]),
        cutover_bin(),
    )
}

/// `cutover ARGS` with nothing from this machine's environment (so `VERSION` is unset).
fn cutover(args: &[&str]) -> Output {
    Command::new(cutover_bin())
        .args(args)
        .env_clear()
        .output()
        .expect("cutover runs")
}

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

fn file(scratch: &Scratch, name: &str, yaml: &str) -> PathBuf {
    let path = scratch.path.join(name);
    std::fs::write(&path, yaml).expect("release file");
    path
}

/// Regression (issue 19): with `VERSION` unset, lint said `ok, 2 warnings`.
#[test]
fn lint_refuses_an_unset_version_variable_naming_it_the_place_and_the_fix() {
    let scratch = Scratch::new("unset-lint");
    let path = file(&scratch, "hello.yaml", &from_ci("unset-lint"));
    let path = path.to_str().expect("utf-8 path");
    let output = cutover(&["lint", path]);
    let out = text(&output);
    assert_eq!(output.status.code(), Some(2), "{out}");
    assert!(
        out.contains(&format!(
            "error: variable 'VERSION' is not set at spec.version ({path}:14:12); set VERSION, write ${{VERSION:-default}}, or pass --set version=..."
        )),
        "{out}"
    );
    assert!(
        out.contains(
            "error: variable 'VERSION' is not set at spec.backend.local.candidate.command[3]"
        ),
        "{out}"
    );
    assert!(out.contains("invalid, 2 errors"), "{out}");

    // An empty version written as such is refused too, not replaced by a made-up name.
    let empty = from_ci("unset-lint")
        .replace("version: ${VERSION}", "version: \"\"")
        .replace("\"${VERSION}\"", "v2");
    let empty = file(&scratch, "empty.yaml", &empty);
    let output = cutover(&["lint", empty.to_str().expect("utf-8 path")]);
    let out = text(&output);
    assert_eq!(output.status.code(), Some(2), "{out}");
    assert!(
        out.contains("error: version is empty at spec.version"),
        "{out}"
    );
}

/// Regression (issue 19): `run` promoted a version the controller named
/// `candidate-f69b7d02`, started with `--app-version ""`.
#[test]
fn run_refuses_an_unset_version_variable_and_starts_nothing() {
    let serve = Serve::start("unset-run", &[]);
    let path = serve.release_file("unset-run", &from_ci("unset-run"));
    let output = serve.cli(&["run", path.to_str().expect("utf-8 path"), "--wait"]);
    let out = text(&output);
    assert_eq!(output.status.code(), Some(2), "{out}");
    assert!(out.contains("variable 'VERSION' is not set"), "{out}");
    assert!(out.contains("--set version=..."), "{out}");
    assert!(!out.contains("started"), "{out}");
    // Nothing reached the controller, and no instance runs.
    assert!(serve.status("unset-run").is_none());
    assert!(instances("unset-run").is_empty());
}

/// `POST path` with `token` and `body`; the status code and the answer's body.
fn post(port: u16, path: &str, token: &str, filename: &str, body: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connects");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let request = format!(
        "POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\nX-Cutover-Filename: {filename}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).expect("sends");
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    let code = answer
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no status in {answer:?}"));
    (code, answer)
}

/// The API takes releases resolved by `run`, and from anything else that speaks HTTP: an
/// empty version, or a `${VERSION}` nobody resolved, is refused there too.
#[test]
fn the_api_refuses_an_empty_or_unresolved_version() {
    let serve = Serve::start("unset-api", &[]);
    let token = std::fs::read_to_string(serve.scratch.path.join("state").join("token"))
        .expect("token file");
    let token = token.trim();
    let json = r#"{"apiVersion": "cutover.dev/v1", "kind": "Release", "metadata": {"name": "unset-api"}, "spec": {"backend": {"local": {"stable": {"addresses": ["127.0.0.1:1"]}, "candidate": {"addresses": ["127.0.0.1:2"]}}}, "version": "", "port": 8080, "strategy": {"canary": {"steps": [{"setWeight": 50}]}}}}"#;
    let (code, answer) = post(serve.api, "/v1/releases", token, "hello.yaml.json", json);
    assert_eq!(code, 400, "{answer}");
    assert!(answer.contains("version is empty"), "{answer}");
    // The file as written, sent without `run` resolving it.
    let (code, answer) = post(
        serve.api,
        "/v1/releases",
        token,
        "hello.yaml",
        &from_ci("unset-api"),
    );
    assert_eq!(code, 400, "{answer}");
    assert!(answer.contains("is not a valid version"), "{answer}");
    assert!(serve.status("unset-api").is_none());
}

#[test]
fn set_version_is_what_plan_shows_and_run_rolls_out() {
    let mut serve = Serve::start("set-version", &[]);
    serve.owns("set-version");
    let path = serve.release_file("set-version", &from_ci("set-version"));
    let path = path.to_str().expect("utf-8 path");
    let sets = [
        "--set",
        "version=v5",
        "--set",
        "spec.backend.local.candidate.command[3]=v5",
    ];

    let mut args = vec!["plan", path];
    args.extend(sets);
    let output = serve.cli(&args);
    let out = text(&output);
    assert_eq!(output.status.code(), Some(0), "{out}");
    assert!(
        out.contains("starts: deploy the candidate v5 (1 replica)"),
        "{out}"
    );

    let mut args = vec!["run", path];
    args.extend(sets);
    let output = serve.cli(&args);
    let out = text(&output);
    assert_eq!(output.status.code(), Some(0), "{out}");
    assert!(out.contains("started set-version: v1 -> v5"), "{out}");
    // At the pause: the candidate named v5 is deployed and ready.
    let status = serve.wait_for("set-version", Duration::from_secs(30), |s| {
        s["waitingForPerson"].as_bool() == Some(true)
    });
    assert_eq!(status["candidate"]["version"], "v5", "{status}");
    let output = serve.cli(&["abort", "set-version"]);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
}

#[test]
fn an_unknown_set_key_suggests_the_field() {
    let scratch = Scratch::new("set-typo");
    let path = file(&scratch, "hello.yaml", &from_ci("set-typo"));
    let path = path.to_str().expect("utf-8 path");
    let output = cutover(&["lint", path, "--set", "verison=v5"]);
    let out = text(&output);
    assert_eq!(output.status.code(), Some(2), "{out}");
    assert!(
        out.contains(
            "error: unknown field 'verison' at spec (--set verison=v5); did you mean 'version'?"
        ),
        "{out}"
    );
    let output = cutover(&["plan", path, "--set", "version"]);
    let out = text(&output);
    assert_eq!(output.status.code(), Some(2), "{out}");
    assert!(out.contains("is not KEY=VALUE"), "{out}");
}

/// Regression (issue 19): a bad duration in `spec.strategy` hid the weight of 150 and the
/// undefined metric beside it.
#[test]
fn lint_reports_three_mistakes_of_one_section_in_one_run() {
    let scratch = Scratch::new("three");
    let release = "apiVersion: cutover.dev/v1\nkind: Release\nmetadata:\n  name: three\nspec:\n  backend:\n    local:\n      stable: {addresses: [\"127.0.0.1:1\"]}\n      candidate: {addresses: [\"127.0.0.1:2\"]}\n  version: v2\n  port: 8080\n  strategy:\n    canary:\n      steps:\n        - setWeight: 20\n        - pause: {duration: 10}\n        - setWeight: 150\n        - analysis: {metrics: [erors]}\n  analysis:\n    metrics:\n      - name: errors\n        provider: {builtin: error_rate}\n        max: 0.01\n";
    let path = file(&scratch, "three.yaml", release);
    let path = path.to_str().expect("utf-8 path");
    let output = cutover(&["lint", path]);
    let out = text(&output);
    assert_eq!(output.status.code(), Some(2), "{out}");
    for expected in [
        format!(
            "'10' has no unit; write '10s' for seconds or '10m' for minutes at spec.strategy.canary.steps[1].pause.duration ({path}:16:29)"
        ),
        format!(
            "weight 150 is above 100 at spec.strategy.canary.steps[2].setWeight ({path}:17:11)"
        ),
        format!(
            "no metric named 'erors' in spec.analysis.metrics at spec.strategy.canary.steps[3].analysis.metrics[0] ({path}:18:32); did you mean 'errors'?"
        ),
    ] {
        assert!(out.contains(&expected), "{expected}\n{out}");
    }
    assert!(out.contains("invalid, 3 errors, 0 warnings"), "{out}");
}
