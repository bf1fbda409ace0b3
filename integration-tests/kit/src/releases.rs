//! Release files for the end-to-end suites: demo-app versions run by the local backend,
//! the strategies they share, and `cutover record` / `cutover analyze` around a rollout.

use std::path::Path;
use std::process::{Child, Output};

use serde_json::Value;

use crate::binary::cutover_bin;
use crate::net::http_get;
use crate::serve::Serve;

/// The command line of a demo-app instance of `version`, for a release file.
pub fn demo_app(version: &str, flags: &[&str]) -> String {
    let mut argv = vec![
        format!("{:?}", cutover_bin()),
        "demo-app".into(),
        "--app-version".into(),
        version.into(),
        "--port".into(),
        "\"{{port}}\"".into(),
    ];
    argv.extend(flags.iter().map(|f| format!("{f:?}")));
    format!("[{}]", argv.join(", "))
}

/// A release of `name` from `stable` to `candidate` (demo-app versions and flags) with
/// the given `strategy`, `analysis` and other spec sections (YAML, indented by 2).
pub fn release(
    name: &str,
    stable: (&str, &[&str]),
    candidate: (&str, &[&str]),
    sections: &str,
) -> String {
    format!(
        "apiVersion: cutover.dev/v1\nkind: Release\nmetadata:\n  name: {name}\nspec:\n  backend:\n    local:\n      stable:\n        command: {}\n      candidate:\n        command: {}\n      readinessPath: /healthz\n  version: {}\n  stableVersion: {}\n  port: 8080\n{sections}",
        demo_app(stable.0, stable.1),
        demo_app(candidate.0, candidate.1),
        candidate.0,
        stable.0,
    )
}

/// The history lines of a release.
pub fn history(serve: &Serve, name: &str) -> Vec<String> {
    let body = http_get(serve.api, &format!("/v1/releases/{name}/history")).unwrap_or_default();
    let value: Value = serde_json::from_str(&body).unwrap_or_default();
    value["events"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| e["message"].as_str().map(str::to_string))
        .collect()
}

/// A canary with two analysed steps, judged by the proxy's own counters: the error rate's
/// upper confidence bound must be within `metric_max` to pass, its lower bound beyond it to
/// fail; each analysis measures every second until the evidence decides (up to 40).
pub fn canary(metric_max: f64) -> String {
    format!(
        "  strategy:
    progressDeadline: 2m
    canary:
      scaleDownDelay: 1s
      steps:
        - setWeight: 20
        - analysis: {{}}
        - setWeight: 60
        - analysis: {{}}
  analysis:
    metrics:
      - name: error-rate
        provider:
          builtin: error_rate
        max: {metric_max}
        interval: 1s
        count: 2
        maxCount: 40
        minRequests: 5
"
    )
}

/// `cutover record` in the background: the proxy's evidence of `release` (candidate
/// `candidate`, stable `stable`) for `seconds`, written to `path`.
pub fn record(
    serve: &Serve,
    release: &str,
    candidate: &str,
    stable: &str,
    seconds: u64,
    path: &Path,
) -> Child {
    let proxy = format!("http://127.0.0.1:{}", serve.admin);
    let span = format!("{seconds}s");
    serve.cli_background(&[
        "record",
        "--proxy",
        &proxy,
        "--release",
        release,
        "--candidate",
        candidate,
        "--stable",
        stable,
        "--seconds",
        "10",
        "--for",
        &span,
        "--output",
        path.to_str().expect("path"),
    ])
}

/// Waits for a `record` started by [`record`], then replays the recording through
/// `cutover analyze` with the release file; returns analyze's output.
pub fn replay(serve: &Serve, recorder: Child, release_file: &Path, recording: &Path) -> Output {
    let recorded = recorder.wait_with_output().expect("record ends");
    assert_eq!(recorded.status.code(), Some(0), "record: {recorded:?}");
    serve.cli(&[
        "analyze",
        release_file.to_str().expect("path"),
        "--samples",
        recording.to_str().expect("path"),
    ])
}
