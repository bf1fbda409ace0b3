//! The `cutover` binary as CI and people use it: exit codes, output, files on disk.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn cutover(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_cutover"))
        .args(args)
        .current_dir(repo())
        // Nothing from the machine's environment: no CUTOVER_ overrides, no variables the
        // examples interpolate.
        .env_clear()
        .output()
        .expect("the binary runs")
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn files_in(dir: &str) -> Vec<String> {
    let mut files: Vec<String> = std::fs::read_dir(repo().join(dir))
        .expect("directory exists")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            matches!(
                p.extension().and_then(|e| e.to_str()),
                Some("yaml" | "toml")
            )
        })
        .map(|p| {
            format!(
                "{dir}/{}",
                p.file_name().and_then(|n| n.to_str()).unwrap_or_default()
            )
        })
        .collect();
    files.sort();
    files
}

#[test]
fn lint_passes_every_example_and_preset() {
    let mut args = vec!["lint".to_string()];
    args.extend(files_in("examples"));
    for dir in ["examples/swarm", "examples/kubernetes", "examples/compose"] {
        args.extend(
            files_in(dir)
                .into_iter()
                .filter(|f| f.contains("/release-")),
        );
    }
    args.extend(files_in("strategies"));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let output = cutover(&args);
    assert_eq!(output.status.code(), Some(0), "{}", stdout(&output));
    assert!(stdout(&output).contains("examples/canary-local.yaml: ok"));
    assert!(stdout(&output).contains("examples/swarm/release-canary.yaml: ok"));
    assert!(stdout(&output).contains("examples/kubernetes/release-canary.yaml: ok"));
    assert!(stdout(&output).contains("examples/compose/release-canary.yaml: ok"));
}

#[test]
fn lint_reports_all_three_mistakes_and_exits_2() {
    let dir = std::env::temp_dir().join(format!("cutover-cli-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let file = dir.join("release.yaml");
    std::fs::write(
        &file,
        r#"apiVersion: cutover.dev/v1
kind: Release
metadata:
  name: shop
spec:
  backend:
    swarm: {service: shop, network: shop-net}
  image: shop:v2
  port: 8080
  strategy:
    canary:
      steps:
        - setWeight: 20
        - setWieght: 50
        - setWeight: 150
        - analysis: {metrics: [erors]}
  analysis:
    metrics:
      - {name: errors, provider: {builtin: error_rate}, max: 0.01}
"#,
    )
    .expect("written");
    let path = file.display().to_string();
    let output = cutover(&["lint", &path]);
    let text = stdout(&output);
    assert_eq!(output.status.code(), Some(2), "{text}");
    assert!(text.contains(&format!("unknown key 'setWieght', expected one of: setWeight, pause, analysis, setHeaderRoute, mirror at spec.strategy.canary.steps[1] ({path}:14:11); did you mean 'setWeight'?")), "{text}");
    let output = cutover(&["lint", "--output", "json", &path]);
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).expect("json");
    assert_eq!(report[0]["valid"], false);
    assert_eq!(
        report[0]["errors"], 3,
        "steps with a structural error are checked on what deserialized, at their own lines"
    );
    assert!(
        text.contains(&format!(
            "weight 150 is above 100 at spec.strategy.canary.steps[2].setWeight ({path}:15:11)"
        )),
        "{text}"
    );
    std::fs::write(
        &file,
        std::fs::read_to_string(&file)
            .expect("read")
            .replace("setWieght", "setWeight"),
    )
    .expect("written");
    let output = cutover(&["lint", &path]);
    let text = stdout(&output);
    assert_eq!(output.status.code(), Some(2));
    assert!(
        text.contains(&format!(
            "weight 150 is above 100 at spec.strategy.canary.steps[2].setWeight ({path}:15:11)"
        )),
        "{text}"
    );
    assert!(text.contains(&format!("no metric named 'erors' in spec.analysis.metrics at spec.strategy.canary.steps[3].analysis.metrics[0] ({path}:16:32); did you mean 'errors'?")), "{text}");
    assert!(text.contains("invalid, 2 errors"), "{text}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn lint_of_a_missing_file_is_invalid_input() {
    let output = cutover(&["lint", "no/such/release.yaml"]);
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("cannot read no/such/release.yaml"));
}

#[test]
fn plan_prints_the_timeline() {
    let output = cutover(&["plan", "examples/canary-local.yaml"]);
    let text = stdout(&output);
    assert_eq!(output.status.code(), Some(0), "{text}");
    assert!(text.contains("release shop-api (local backend): canary from preset canary-progressive, progress deadline 30m"), "{text}");
    let rows: Vec<&str> = text
        .lines()
        .filter(|l| l.trim_start().starts_with(|c: char| c.is_ascii_digit()))
        .collect();
    assert_eq!(rows.len(), 9, "{text}");
    assert!(
        rows[1].contains("analysis: error-rate, latency-p99") && rows[1].contains("(>= 2m)"),
        "{}",
        rows[1]
    );
    assert!(
        rows[8].contains("100%") && rows[8].trim_end().ends_with("+8m"),
        "{}",
        rows[8]
    );
    assert!(text.contains("fastest possible: 8m"));

    let output = cutover(&[
        "plan",
        "--output",
        "json",
        "examples/blue-green-kubernetes.yaml",
    ]);
    let plan: serde_json::Value = serde_json::from_slice(&output.stdout).expect("json");
    assert_eq!(plan["plan"]["kind"], "blueGreen");
    assert_eq!(plan["timeline"].as_array().map(Vec::len), Some(6));
}

#[test]
fn schema_prints_the_committed_schema() {
    let output = cutover(&["schema"]);
    assert_eq!(output.status.code(), Some(0));
    let committed =
        std::fs::read_to_string(repo().join("docs/release.schema.json")).expect("committed");
    assert_eq!(stdout(&output), committed);
}

#[test]
fn version_and_help() {
    let output = cutover(&["--version"]);
    assert!(stdout(&output).starts_with("cutover "));
    let output = cutover(&["--help"]);
    let text = stdout(&output);
    for command in ["lint", "plan", "schema"] {
        assert!(text.contains(command), "{text}");
    }
}

#[test]
fn proxy_reports_a_bad_config_with_its_position_and_drains_on_sigterm() {
    let dir = std::env::temp_dir().join(format!("cutover-cli-proxy-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let bad = dir.join("bad.yaml");
    std::fs::write(&bad, "listeners:\n  - address: 127.0.0.1:0\n    tsl: {}\n").expect("written");
    let output = cutover(&["proxy", "--config", &bad.display().to_string()]);
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("unknown field 'tsl' at listeners[0]")
            && stderr.contains("bad.yaml:3:5")
            && stderr.contains("did you mean 'tls'?"),
        "{stderr}"
    );

    let good = dir.join("good.yaml");
    std::fs::write(
        &good,
        "listeners:\n  - address: 127.0.0.1:0\nadmin:\n  address: 127.0.0.1:0\n",
    )
    .expect("written");
    let mut child = Command::new(env!("CARGO_BIN_EXE_cutover"))
        .args(["proxy", "--config", &good.display().to_string()])
        .env_clear()
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("starts");
    let mut stderr = std::io::BufReader::new(child.stderr.take().expect("stderr"));
    let mut line = String::new();
    while !line.contains("listening on") {
        line.clear();
        assert!(
            std::io::BufRead::read_line(&mut stderr, &mut line).expect("read") > 0,
            "exited early"
        );
    }
    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(killed.success());
    assert_eq!(
        child.wait().expect("exits").code(),
        Some(0),
        "a drained shutdown exits 0"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn analyze_backtests_recorded_samples_as_a_rollout_would() {
    let output = cutover(&[
        "analyze",
        "examples/canary-local.yaml",
        "--samples",
        "examples/analysis/healthy.csv",
    ]);
    let text = stdout(&output);
    assert_eq!(output.status.code(), Some(0), "{text}");
    assert!(text.contains("run: success"), "{text}");
    let warnings = String::from_utf8_lossy(&output.stderr);
    assert!(
        warnings.contains("judged on recorded summaries only"),
        "a summary recording is said to be one: {warnings}"
    );
    assert_eq!(
        text.matches(": pass").count(),
        8,
        "4 measurements of 2 metrics: {text}"
    );

    let output = cutover(&[
        "analyze",
        "examples/canary-local.yaml",
        "--samples",
        "examples/analysis/regression.csv",
        "--output",
        "json",
    ]);
    assert_eq!(output.status.code(), Some(1));
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).expect("json");
    assert_eq!(report["verdict"], "failure");
    let errors = &report["metrics"][0];
    assert_eq!(errors["name"], "error-rate");
    assert_eq!(
        errors["measurements"].as_array().map(Vec::len),
        Some(3),
        "decided at the third measurement"
    );
    assert_eq!(errors["measurements"][2]["assessment"]["result"], "fail");
    assert_eq!(errors["measurements"][2]["fromSeconds"], 61.0);

    let output = cutover(&[
        "analyze",
        "examples/canary-local.yaml",
        "--samples",
        "examples/analysis/regression.csv",
        "--metric",
        "latency-p99",
    ]);
    assert_eq!(output.status.code(), Some(1));
    assert!(
        stdout(&output).contains("Mann-Whitney p ="),
        "the statistical test caught the latency regression"
    );

    let output = cutover(&[
        "analyze",
        "examples/canary-local.yaml",
        "--samples",
        "examples/analysis/healthy.csv",
        "--metric",
        "nope",
    ]);
    assert_eq!(output.status.code(), Some(2));
}

#[test]
fn analyze_names_the_line_of_a_bad_sample_and_never_passes_without_data() {
    let dir = std::env::temp_dir().join(format!("cutover-cli-analyze-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let bad = dir.join("bad.csv");
    std::fs::write(
        &bad,
        "time,metric,version,value\n1,error-rate,candidate,0.1\n2,error-rate,canary,0.1\n",
    )
    .expect("written");
    let output = cutover(&[
        "analyze",
        "examples/canary-local.yaml",
        "--samples",
        &bad.display().to_string(),
    ]);
    assert_eq!(output.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&output.stderr)
            .contains("bad.csv:3: version 'canary' must be 'candidate' or 'stable'")
    );

    for (name, text, problem) in [
        (
            "negative.csv",
            "time,metric,version,value\n-5,error-rate,candidate,0.5\n",
            "time -5 must be a number of seconds",
        ),
        (
            "infinite.csv",
            "time,metric,version,value\n5,error-rate,candidate,-inf\n",
            "value -inf must be a finite number",
        ),
    ] {
        let file = dir.join(name);
        std::fs::write(&file, text).expect("written");
        let output = cutover(&[
            "analyze",
            "examples/canary-local.yaml",
            "--samples",
            &file.display().to_string(),
        ]);
        assert_eq!(output.status.code(), Some(2), "{name}");
        assert!(
            String::from_utf8_lossy(&output.stderr).contains(problem),
            "{name}"
        );
    }

    let only_stable = dir.join("stable.csv");
    let lines: String = (1..=200)
        .map(|t| format!("{t},error-rate,stable,0.001,10\n"))
        .collect();
    std::fs::write(
        &only_stable,
        format!("time,metric,version,value,requests\n{lines}"),
    )
    .expect("written");
    let output = cutover(&[
        "analyze",
        "examples/canary-local.yaml",
        "--samples",
        &only_stable.display().to_string(),
        "--metric",
        "error-rate",
    ]);
    assert_eq!(output.status.code(), Some(3), "{}", stdout(&output));
    assert!(
        stdout(&output).contains("run: inconclusive"),
        "{}",
        stdout(&output)
    );
    let _ = std::fs::remove_dir_all(&dir);
}
