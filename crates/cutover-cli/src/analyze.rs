//! `cutover analyze`: a release's analysis replayed on recorded samples, decided by the same
//! schedule and judge a live rollout uses ([`cutover_core::judge::AnalysisRun`]), so
//! thresholds can be backtested before a release depends on them.
//!
//! The recording is read by [`cutover_core::recording`]: evidence per second and version
//! (what `cutover record` writes: request and error counts and latency buckets), judged
//! exactly as the live analysis judges the proxy's windows; or, in the older form,
//! timestamped summary values per metric and version, each measurement averaging the values
//! of its window (with a warning: a comparison of averaged summaries of unequal samples is
//! only as good as those summaries). A window without candidate data is no data, which is
//! never a pass.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use cutover_core::judge::{
    AnalysisRun, Assessment, Evidence, Measurement, MeasurementResult, Verdict,
};
use cutover_core::load;
use cutover_core::recording::{self, Recording, Side, SummaryRow};
use cutover_core::rollout::Timestamp;
use cutover_core::spec::{BuiltinMetric, EvidenceKind, MetricSpec, Provider, Release};
use serde::Serialize;

use crate::failure::{Failure, Outcome};
use crate::{InputFile, Output, emit, exit};

/// Exit code when the analysis fails.
const FAILED: u8 = 1;
/// Exit code when the analysis is inconclusive, errs, or runs out of samples undecided.
const UNDECIDED: u8 = 3;
/// Most measurements one backtest takes: a bound on time and memory whatever the file.
const MAX_MEASUREMENTS: usize = 1_000_000;

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Row {
    number: u32,
    from_seconds: f64,
    to_seconds: f64,
    candidate: Option<f64>,
    stable: Option<f64>,
    requests: Option<u64>,
    assessment: Option<Assessment>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct MetricReport {
    name: String,
    verdict: Option<Verdict>,
    reason: Option<String>,
    measurements: Vec<Row>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Report {
    release: String,
    start_seconds: f64,
    last_sample_seconds: f64,
    verdict: Option<Verdict>,
    metrics: Vec<MetricReport>,
}

/// Replays the samples through the release's analysis and prints the verdicts.
pub fn run(
    release_path: &Path,
    samples_path: &Path,
    only: &[String],
    start: Option<f64>,
    output: Output,
    env: &BTreeMap<String, String>,
) -> Outcome {
    let (release, recording) = read_inputs(release_path, samples_path, env)?;
    let metrics = chosen_metrics(&release, only)?;
    let (start_seconds, last_seconds) = replay_window(&recording, start, samples_path)?;
    warn_about(&recording, &metrics);
    let report = replay(&release, &metrics, &recording, start_seconds, last_seconds)?;
    let code = match report.verdict {
        Some(Verdict::Success) => exit::OK,
        Some(Verdict::Failure) => FAILED,
        _ => UNDECIDED,
    };
    match output {
        Output::Json => {
            let text = serde_json::to_string_pretty(&report)
                .map_err(|e| Failure::error(code, format!("cannot print the report: {e}")))?;
            emit(&format!("{text}\n"));
        }
        Output::Text => emit(&render(&report)),
    }
    Ok(code)
}

/// The release file and the recording, read and parsed.
fn read_inputs(
    release_path: &Path,
    samples_path: &Path,
    env: &BTreeMap<String, String>,
) -> Result<(Release, Recording), Failure> {
    let input = InputFile::open(release_path)?;
    let release = match load::load_release(input.source(), env) {
        Ok((release, _)) => release,
        Err(diagnostics) => return Err(Failure::lines(exit::INVALID_INPUT, diagnostics)),
    };
    let input = InputFile::open(samples_path)?;
    let recording = recording::parse(&input.text).map_err(|e| {
        // `file.csv:3: ...` for a line, `file.json: row 3: ...` otherwise.
        let separator = if e.place.bytes().all(|b| b.is_ascii_digit()) {
            ":"
        } else {
            ": "
        };
        Failure::error(
            exit::INVALID_INPUT,
            format!("{}{separator}{}: {}", input.name, e.place, e.problem),
        )
    })?;
    Ok((release, recording))
}

/// The metrics to replay: `--metric`'s, each of which must exist, or all.
fn chosen_metrics<'r>(
    release: &'r Release,
    only: &[String],
) -> Result<Vec<&'r MetricSpec>, Failure> {
    let metrics: Vec<_> = release
        .spec
        .analysis
        .metrics
        .iter()
        .filter(|m| only.is_empty() || only.contains(&m.name))
        .collect();
    if let Some(unknown) = only
        .iter()
        .find(|name| !metrics.iter().any(|m| &m.name == *name))
    {
        return Err(Failure::error(
            exit::INVALID_INPUT,
            format!("the release has no metric named '{unknown}'"),
        ));
    }
    if metrics.is_empty() {
        return Err(Failure::error(
            exit::INVALID_INPUT,
            "the release defines no analysis metrics (spec.analysis.metrics)",
        ));
    }
    Ok(metrics)
}

/// When the replayed analysis starts and the last sample's time, in the samples' seconds.
fn replay_window(
    recording: &Recording,
    start: Option<f64>,
    samples_path: &Path,
) -> Result<(f64, f64), Failure> {
    if start.is_some_and(|s| !s.is_finite() || s < 0.0) {
        return Err(Failure::error(
            exit::INVALID_INPUT,
            "--start must be a time of 0 seconds or more",
        ));
    }
    let times = recording
        .seconds
        .iter()
        .map(|r| r.time)
        .chain(recording.summaries.iter().map(|r| r.time));
    let (Some(first), Some(last)) = (
        times.clone().min_by(f64::total_cmp),
        times.max_by(f64::total_cmp),
    ) else {
        return Err(Failure::error(
            exit::INVALID_INPUT,
            format!("{} holds no samples", samples_path.display()),
        ));
    };
    // On evidence the analysis starts with the candidate's first second of traffic, as a
    // live analysis starts once the candidate is routed.
    let first_candidate = recording
        .seconds
        .iter()
        .find(|r| r.side == Side::Candidate)
        .map(|r| (r.time - 1.0).max(0.0));
    let start_seconds = start.or(first_candidate).unwrap_or(first);
    Ok((start_seconds, last))
}

/// Runs the analysis over the recording, measurement by measurement, as a rollout would.
fn replay(
    release: &Release,
    metrics: &[&MetricSpec],
    recording: &Recording,
    start_seconds: f64,
    last_seconds: f64,
) -> Result<Report, Failure> {
    let millis = |seconds: f64| Timestamp((seconds * 1000.0).round() as u64);
    let end = millis(last_seconds);
    let mut analysis = AnalysisRun::new(metrics.iter().copied(), millis(start_seconds));
    let mut rows: BTreeMap<String, Vec<Row>> = BTreeMap::new();
    let mut measured = 0usize;
    while let Some(next) = analysis.next_due().filter(|t| *t <= end) {
        for due in analysis.due(next) {
            measured += 1;
            if measured > MAX_MEASUREMENTS {
                return Err(Failure::error(
                    exit::INVALID_INPUT,
                    format!(
                        "more than {MAX_MEASUREMENTS} measurements; narrow the samples or --start"
                    ),
                ));
            }
            let Some(metric) = metrics.iter().find(|m| m.name == due.metric) else {
                continue;
            };
            let (from, to) = (due.from.0 as f64 / 1000.0, due.to.0 as f64 / 1000.0);
            let measurement = measure(metric, recording, from, to);
            let row = Row {
                number: due.number,
                from_seconds: from,
                to_seconds: to,
                candidate: measurement.candidate,
                stable: measurement.stable,
                requests: measurement.candidate_requests,
                assessment: None,
            };
            // `None`: the run decided on another metric's measurement of the same moment.
            if let Ok(Some(assessment)) =
                analysis.record(&due.metric, &MeasurementResult::Value(measurement))
            {
                rows.entry(due.metric.clone()).or_default().push(Row {
                    assessment: Some(assessment),
                    ..row
                });
            }
        }
    }
    Ok(Report {
        release: release.metadata.name.clone(),
        start_seconds,
        last_sample_seconds: last_seconds,
        verdict: analysis.verdict(),
        metrics: analysis
            .judge()
            .metrics()
            .iter()
            .map(|m| MetricReport {
                name: m.name().to_string(),
                verdict: m.verdict(),
                reason: m.reason().map(str::to_string),
                measurements: rows.remove(m.name()).unwrap_or_default(),
            })
            .collect(),
    })
}

/// Says what the recording cannot judge exactly.
fn warn_about(recording: &Recording, metrics: &[&MetricSpec]) {
    for metric in metrics {
        let on_evidence = metric.evidence_kind().is_some() && !recording.seconds.is_empty();
        let summaries = recording.summaries.iter().any(|s| s.metric == metric.name);
        let rate_from_evidence = is_request_rate(metric) && !recording.seconds.is_empty();
        if !on_evidence && !summaries && !rate_from_evidence {
            eprintln!(
                "warning: the recording has nothing for '{}': its measurements are no data",
                metric.name
            );
        } else if metric.evidence_kind().is_some() && !on_evidence {
            eprintln!(
                "warning: '{}' is judged on recorded summaries only: averaged per-window values of unequal samples are only as good as those summaries; record evidence with `cutover record`",
                metric.name
            );
        }
        if !on_evidence
            && summaries
            && metric.min_requests > 1
            && !recording
                .summaries
                .iter()
                .any(|s| s.metric == metric.name && s.requests.is_some())
        {
            eprintln!(
                "warning: the samples of '{}' carry no request counts, so its minRequests {} is not checked",
                metric.name, metric.min_requests
            );
        }
    }
    let mut names: Vec<&str> = recording
        .summaries
        .iter()
        .map(|s| s.metric.as_str())
        .filter(|name| !metrics.iter().any(|m| m.name == *name))
        .collect();
    names.sort_unstable();
    names.dedup();
    for name in names {
        eprintln!(
            "warning: the samples of '{name}' are ignored: the release has no metric of that name"
        );
    }
}

fn is_request_rate(metric: &MetricSpec) -> bool {
    matches!(
        metric.provider,
        Provider::Builtin(BuiltinMetric::RequestRate)
    )
}

/// The measurement of `metric` over the window after `from` up to `to` (seconds): on
/// evidence where the recording has it and the metric is judged on it, else on summaries.
fn measure(metric: &MetricSpec, recording: &Recording, from: f64, to: f64) -> Measurement {
    if !recording.seconds.is_empty() {
        let candidate = recording::window(&recording.seconds, Side::Candidate, from, to);
        let stable = recording::window(&recording.seconds, Side::Stable, from, to);
        if let Some(kind) = metric.evidence_kind() {
            return Measurement {
                candidate: summary(kind, &candidate),
                stable: summary(kind, &stable),
                ..Measurement::default()
            }
            .with_requests(candidate.requests.round() as u64)
            .with_evidence(candidate, (stable.requests > 0.0).then_some(stable));
        }
        if is_request_rate(metric) {
            let rate = |e: &Evidence| e.rate();
            return Measurement {
                candidate: rate(&candidate),
                stable: rate(&stable),
                ..Measurement::default()
            }
            .with_requests(candidate.requests.round() as u64);
        }
    }
    summaries_measurement(metric, &recording.summaries, from, to)
}

/// The displayed value of evidence: the error rate or the metric's quantile.
fn summary(kind: EvidenceKind, evidence: &Evidence) -> Option<f64> {
    match kind {
        EvidenceKind::ErrorRate => evidence.error_rate(),
        EvidenceKind::Latency { quantile } => evidence.latency.quantile(quantile),
    }
}

/// The older way: the mean of each version's summary values in the window, their raw
/// values for the Mann-Whitney test.
fn summaries_measurement(
    metric: &MetricSpec,
    rows: &[SummaryRow],
    from: f64,
    to: f64,
) -> Measurement {
    let lo = rows.partition_point(|s| s.time <= from);
    let hi = rows.partition_point(|s| s.time <= to);
    let window: Vec<&SummaryRow> = rows[lo..hi]
        .iter()
        .filter(|s| s.metric == metric.name)
        .collect();
    let values = |side: Side| -> Vec<f64> {
        window
            .iter()
            .filter(|s| s.side == side)
            .map(|s| s.value)
            .collect()
    };
    let mean = |values: &[f64]| {
        (!values.is_empty()).then(|| values.iter().sum::<f64>() / values.len() as f64)
    };
    let (candidate, stable) = (values(Side::Candidate), values(Side::Stable));
    let requests = window
        .iter()
        .filter(|s| s.side == Side::Candidate)
        .filter_map(|s| s.requests)
        .reduce(u64::saturating_add);
    Measurement {
        candidate: mean(&candidate),
        stable: mean(&stable),
        candidate_requests: requests,
        candidate_samples: candidate,
        stable_samples: stable,
        ..Measurement::default()
    }
}

fn describe(verdict: Option<Verdict>) -> &'static str {
    match verdict {
        Some(Verdict::Success) => "success",
        Some(Verdict::Failure) => "failure",
        Some(Verdict::Inconclusive) => "inconclusive",
        Some(Verdict::Error) => "error",
        None => "undecided (the samples end first)",
    }
}

fn render(report: &Report) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "analysis of release {}: samples from {}s to {}s",
        report.release, report.start_seconds, report.last_sample_seconds
    );
    for metric in &report.metrics {
        let _ = writeln!(out, "\n{}", metric.name);
        for row in &metric.measurements {
            let value = |v: Option<f64>| v.map_or("no data".to_string(), |v| format!("{v:.4}"));
            let assessment = match &row.assessment {
                Some(Assessment::Pass) => "pass".to_string(),
                Some(Assessment::Fail { reason }) => format!("fail: {reason}"),
                Some(Assessment::Inconclusive { reason, .. }) => format!("inconclusive: {reason}"),
                Some(Assessment::Error { reason }) => format!("error: {reason}"),
                None => String::new(),
            };
            let requests = row
                .requests
                .map(|r| format!(" ({r} requests)"))
                .unwrap_or_default();
            let window = format!("{}s-{}s", row.from_seconds, row.to_seconds);
            let _ = writeln!(
                out,
                "  #{:<3} {window:<14} candidate {}{requests}, stable {}: {assessment}",
                row.number,
                value(row.candidate),
                value(row.stable)
            );
        }
        let reason = metric
            .reason
            .as_deref()
            .map(|r| format!(": {r}"))
            .unwrap_or_default();
        let verdict = match (metric.verdict, report.verdict) {
            (None, Some(_)) => "not needed: the run was decided by another metric",
            (verdict, _) => describe(verdict),
        };
        let _ = writeln!(out, "  => {verdict}{reason}");
    }
    let _ = writeln!(out, "\nrun: {}", describe(report.verdict));
    out
}
