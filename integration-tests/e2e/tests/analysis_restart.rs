//! An analysis under way survives a controller restart: a real `cutover serve` (local
//! backend, the proxy's own counters as the metric) is killed mid-analysis and started
//! again on the same state directory, and the analysis goes on where it was.

use std::time::{Duration, Instant};

use cutover_test_kit::{Load, Serve, history, release};
use serde_json::Value;

/// Each "measured" line of the controller's log as (run, metric, measurement number).
fn measured(log: &str) -> Vec<(u32, String, u32)> {
    let field = |line: &str, name: &str| -> Option<String> {
        let start = line.find(&format!(" {name}="))? + name.len() + 2;
        let rest = &line[start..];
        let end = rest.find(' ').unwrap_or(rest.len());
        Some(rest[..end].trim_matches('"').to_string())
    };
    log.lines()
        .filter(|l| l.contains(" measured "))
        .filter_map(|l| {
            Some((
                field(l, "run")?.parse().ok()?,
                field(l, "metric")?,
                field(l, "measurement")?.parse().ok()?,
            ))
        })
        .collect()
}

/// K of the restarted controller's history line "analysis run 1 resumed with K
/// measurements kept", waiting up to `limit` for it.
fn kept_after_restart(serve: &Serve, limit: Duration) -> u32 {
    let started = Instant::now();
    loop {
        let lines = history(serve, "e2e-analysis");
        let kept = lines.iter().find_map(|l| {
            l.strip_prefix("analysis run 1 resumed with ")?
                .strip_suffix(" measurements kept")?
                .parse()
                .ok()
        });
        if let Some(kept) = kept {
            return kept;
        }
        assert!(
            started.elapsed() < limit,
            "no \"resumed with K measurements kept\" line: {lines:#?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn measurements_in(status: &Value) -> u64 {
    status["analysis"]["metrics"][0]["measurements"]
        .as_u64()
        .unwrap_or(0)
}

/// The analysis waits 30 s, then measures every 5 s, four times, on pooled evidence. The
/// interval leaves room on a loaded machine: a measurement between reading the status and
/// the kill cannot make the test wrong (what was kept is read from the restarted
/// controller), and a restart well within the interval still shows the delay not waited.
const INITIAL_DELAY: Duration = Duration::from_secs(30);
const INTERVAL: Duration = Duration::from_secs(5);
const COUNT: u32 = 4;
const SECTIONS: &str = "  strategy:
    progressDeadline: 3m
    canary:
      scaleDownDelay: 1s
      steps:
        - setWeight: 50
        - analysis: {}
  analysis:
    metrics:
      - name: error-rate
        provider:
          builtin: error_rate
        max: 0.1
        initialDelay: 30s
        interval: 5s
        count: 4
        minRequests: 5
";

#[test]
fn an_analysis_killed_mid_way_resumes_with_its_measurements_and_no_initial_delay() {
    let mut serve = Serve::start("analysis-restart", &[]);
    serve.owns("e2e-analysis");
    let file = serve.release_file(
        "e2e-analysis",
        &release("e2e-analysis", ("v1", &[]), ("v2", &[]), SECTIONS),
    );
    let submitted = serve.cli(&["run", file.to_str().expect("path")]);
    assert_eq!(submitted.status.code(), Some(0), "{submitted:?}");
    serve.wait_routed("e2e-analysis");
    let load = Load::start(serve.proxy(), 60);

    // Two measurements in, the verdict still open: kill the controller. More may be
    // taken before the kill lands; what counts is what the restarted controller kept.
    serve.wait_for("e2e-analysis", Duration::from_secs(120), |s| {
        s["step"] == 1 && measurements_in(s) >= 2 && s["analysis"]["verdict"].is_null()
    });
    serve.kill();
    let taken_before = measured(&serve.log());
    serve.restart();
    let restarted = Instant::now();

    // The restarted controller says how many it kept, shows them, and goes on from there.
    let kept = kept_after_restart(&serve, Duration::from_secs(30));
    assert!((2..COUNT).contains(&kept), "kept {kept}");
    assert_eq!(
        taken_before.len(),
        kept as usize,
        "every measurement logged before the kill was kept, and only those: {taken_before:?}"
    );
    let resumed = serve.wait_for("e2e-analysis", Duration::from_secs(30), |s| {
        s["analysis"]["metrics"][0]["name"] == "error-rate"
    });
    assert!(
        measurements_in(&resumed) >= u64::from(kept),
        "the earlier measurements are shown: {resumed}"
    );
    let next = serve.wait_for("e2e-analysis", Duration::from_secs(90), |s| {
        measurements_in(s) > u64::from(kept) || s["done"] == true
    });
    let waited = restarted.elapsed();
    assert!(
        waited < INITIAL_DELAY - 2 * INTERVAL,
        "the next measurement came {waited:?} after the restart: initialDelay was waited again ({next})"
    );

    let status = serve.wait_done("e2e-analysis", Duration::from_secs(90));
    let counts = load.finish();
    assert_eq!(status["outcome"], "promoted", "{status}");
    assert!(counts.answered("v2") > 20, "{counts:?}");

    // No measurement taken twice, none skipped: run 1 measured 1..=4 once each, the
    // first `kept` before the kill.
    let log = serve.log();
    let all = measured(&log);
    let numbers: Vec<u32> = all.iter().map(|(_, _, n)| *n).collect();
    assert_eq!(numbers, (1..=COUNT).collect::<Vec<_>>(), "{all:?}");
    assert!(
        all.iter()
            .all(|(run, metric, _)| *run == 1 && metric == "error-rate")
    );
    assert_eq!(
        measurements_in(&status),
        u64::from(COUNT),
        "the status counts the same four: {status}"
    );
    assert!(
        log.contains("analysis resumed with its measurements so far"),
        "{log}"
    );
    // One analysis run, started once, resumed once, passed.
    let lines = history(&serve, "e2e-analysis");
    let started: Vec<&String> = lines
        .iter()
        .filter(|l| l.contains(": analysis run "))
        .collect();
    assert_eq!(started.len(), 1, "{lines:#?}");
    assert!(
        lines.iter().any(|l| l == "analysis run 1 passed"),
        "{lines:#?}"
    );
    assert_eq!(
        lines
            .iter()
            .filter(|l| l.contains("resumed after a restart"))
            .count(),
        1,
        "{lines:#?}"
    );
}
