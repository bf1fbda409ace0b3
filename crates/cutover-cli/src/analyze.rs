//! `cutover analyze`: a release's analysis replayed on recorded samples, decided by the same
//! schedule and judge a live rollout uses ([`cutover_core::judge::AnalysisRun`]), so
//! thresholds can be backtested before a release depends on them.
//!
//! Samples are timestamped values per metric and version, in CSV
//! (`time,metric,version,value[,requests]`, a header line first) or JSON (a list of
//! `{"time", "metric", "version", "value", "requests"}`); `time` is in seconds, `version` is
//! `candidate` or `stable`. Each measurement averages the samples of its window (their raw
//! values also feed the Mann-Whitney test); a window without candidate samples is no data,
//! which is never a pass.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use cutover_core::judge::{AnalysisRun, Assessment, Measurement, MeasurementResult, Verdict};
use cutover_core::load;
use cutover_core::rollout::Timestamp;
use serde::{Deserialize, Serialize};

use crate::{InputFile, Output, emit, exit};

/// Exit code when the analysis fails.
const FAILED: u8 = 1;
/// Exit code when the analysis is inconclusive, errs, or runs out of samples undecided.
const UNDECIDED: u8 = 3;
/// Most measurements one backtest takes: a bound on time and memory whatever the file.
const MAX_MEASUREMENTS: usize = 1_000_000;

/// One recorded value.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
struct Sample {
    /// Seconds.
    time: f64,
    metric: String,
    version: String,
    value: f64,
    #[serde(default)]
    requests: Option<u64>,
}

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
) -> u8 {
    let release =
        match InputFile::read(release_path).map(|input| load::load_release(input.source(), env)) {
            Ok(Ok((release, _))) => release,
            Ok(Err(diagnostics)) => {
                for d in diagnostics {
                    eprintln!("{d}");
                }
                return exit::INVALID_INPUT;
            }
            Err(message) => {
                eprintln!("{message}");
                return exit::INVALID_INPUT;
            }
        };
    let mut samples = match InputFile::read(samples_path).and_then(|input| parse_samples(&input)) {
        Ok(samples) => samples,
        Err(message) => {
            eprintln!("{message}");
            return exit::INVALID_INPUT;
        }
    };
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
        eprintln!("error: the release has no metric named '{unknown}'");
        return exit::INVALID_INPUT;
    }
    if metrics.is_empty() {
        eprintln!("error: the release defines no analysis metrics (spec.analysis.metrics)");
        return exit::INVALID_INPUT;
    }
    if start.is_some_and(|s| !s.is_finite() || s < 0.0) {
        eprintln!("error: --start must be a time of 0 seconds or more");
        return exit::INVALID_INPUT;
    }
    samples.sort_by(|a, b| a.time.total_cmp(&b.time));
    let (Some(first), Some(last)) = (samples.first(), samples.last()) else {
        eprintln!("error: {} holds no samples", samples_path.display());
        return exit::INVALID_INPUT;
    };
    let start_seconds = start.unwrap_or(first.time);
    let last_seconds = last.time;
    let millis = |seconds: f64| Timestamp((seconds * 1000.0).round() as u64);
    let end = millis(last_seconds);
    for name in samples
        .iter()
        .map(|s| s.metric.as_str())
        .collect::<std::collections::BTreeSet<_>>()
    {
        if !metrics.iter().any(|m| m.name == name) {
            eprintln!(
                "warning: the samples of '{name}' are ignored: the release has no metric of that name"
            );
        }
    }
    for metric in &metrics {
        let mut own = samples
            .iter()
            .filter(|s| s.metric == metric.name)
            .peekable();
        let present = own.peek().is_some();
        let counted = own.any(|s| s.requests.is_some());
        if metric.min_requests > 1 && present && !counted {
            eprintln!(
                "warning: the samples of '{}' carry no request counts, so its minRequests {} is not checked",
                metric.name, metric.min_requests
            );
        }
    }
    // Each metric's samples per version, in time order, found by binary search per window.
    let mut series: BTreeMap<(&str, &str), Vec<&Sample>> = BTreeMap::new();
    for sample in &samples {
        series
            .entry((sample.metric.as_str(), sample.version.as_str()))
            .or_default()
            .push(sample);
    }
    let window = |metric: &str, version: &str, from: Timestamp, to: Timestamp| -> Vec<&Sample> {
        let Some(all) = series.get(&(metric, version)) else {
            return Vec::new();
        };
        let lo = all.partition_point(|s| millis(s.time) <= from);
        let hi = all.partition_point(|s| millis(s.time) <= to);
        all[lo..hi].to_vec()
    };

    let mut analysis = AnalysisRun::new(metrics.iter().copied(), millis(start_seconds));
    let mut rows: BTreeMap<String, Vec<Row>> = BTreeMap::new();
    let mut measured = 0usize;
    while let Some(next) = analysis.next_due().filter(|t| *t <= end) {
        for due in analysis.due(next) {
            measured += 1;
            if measured > MAX_MEASUREMENTS {
                eprintln!(
                    "error: more than {MAX_MEASUREMENTS} measurements; narrow the samples or --start"
                );
                return exit::INVALID_INPUT;
            }
            let candidate = window(&due.metric, "candidate", due.from, due.to);
            let stable = window(&due.metric, "stable", due.from, due.to);
            let mean = |values: &[&Sample]| {
                (!values.is_empty())
                    .then(|| values.iter().map(|s| s.value).sum::<f64>() / values.len() as f64)
            };
            let requests = candidate
                .iter()
                .filter_map(|s| s.requests)
                .reduce(u64::saturating_add);
            let measurement = Measurement {
                candidate: mean(&candidate),
                stable: mean(&stable),
                candidate_requests: requests,
                candidate_samples: candidate.iter().map(|s| s.value).collect(),
                stable_samples: stable.iter().map(|s| s.value).collect(),
            };
            let row = Row {
                number: due.number,
                from_seconds: due.from.0 as f64 / 1000.0,
                to_seconds: due.to.0 as f64 / 1000.0,
                candidate: measurement.candidate,
                stable: measurement.stable,
                requests,
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
    let report = Report {
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
    };
    match output {
        Output::Json => match serde_json::to_string_pretty(&report) {
            Ok(text) => emit(&format!("{text}\n")),
            Err(e) => eprintln!("error: cannot print the report: {e}"),
        },
        Output::Text => emit(&render(&report)),
    }
    match report.verdict {
        Some(Verdict::Success) => exit::OK,
        Some(Verdict::Failure) => FAILED,
        _ => UNDECIDED,
    }
}

fn parse_samples(input: &InputFile) -> Result<Vec<Sample>, String> {
    if input.name.ends_with(".json") || input.text.trim_start().starts_with('[') {
        let samples: Vec<Sample> =
            serde_json::from_str(&input.text).map_err(|e| format!("error: {}: {e}", input.name))?;
        for (i, sample) in samples.iter().enumerate() {
            check(sample)
                .map_err(|problem| format!("error: {}: sample {}: {problem}", input.name, i + 1))?;
        }
        return Ok(samples);
    }
    let mut lines = input
        .text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty() && !l.starts_with('#'));
    let Some((_, header)) = lines.next() else {
        return Ok(Vec::new());
    };
    let columns: Vec<&str> = header.split(',').map(str::trim).collect();
    let position = |name: &str| columns.iter().position(|c| *c == name);
    let (Some(time), Some(metric), Some(version), Some(value)) = (
        position("time"),
        position("metric"),
        position("version"),
        position("value"),
    ) else {
        return Err(format!(
            "error: {}:1: the header must name the columns time, metric, version, value (and optionally requests); found '{header}'",
            input.name
        ));
    };
    let requests = position("requests");
    let mut samples = Vec::new();
    for (index, line) in lines {
        let fields: Vec<&str> = line.split(',').map(str::trim).collect();
        let at = |i: usize| fields.get(i).copied().unwrap_or("");
        let number = |i: usize, what: &str| {
            at(i).parse::<f64>().map_err(|_| {
                format!(
                    "error: {}:{}: {what} '{}' is not a number",
                    input.name,
                    index + 1,
                    at(i)
                )
            })
        };
        let version_name = at(version);
        let sample = Sample {
            time: number(time, "time")?,
            metric: at(metric).to_string(),
            version: version_name.to_string(),
            value: number(value, "value")?,
            requests: match requests.map(at).filter(|r| !r.is_empty()) {
                Some(r) => Some(r.parse().map_err(|_| {
                    format!(
                        "error: {}:{}: requests '{r}' is not a whole number",
                        input.name,
                        index + 1
                    )
                })?),
                None => None,
            },
        };
        check(&sample)
            .map_err(|problem| format!("error: {}:{}: {problem}", input.name, index + 1))?;
        samples.push(sample);
    }
    Ok(samples)
}

/// What makes a sample unusable, in words.
fn check(sample: &Sample) -> Result<(), String> {
    if sample.version != "candidate" && sample.version != "stable" {
        return Err(format!(
            "version '{}' must be 'candidate' or 'stable'",
            sample.version
        ));
    }
    if !sample.time.is_finite() || sample.time < 0.0 {
        return Err(format!(
            "time {} must be a number of seconds, 0 or more",
            sample.time
        ));
    }
    if !sample.value.is_finite() {
        return Err(format!("value {} must be a finite number", sample.value));
    }
    Ok(())
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
                Some(Assessment::Inconclusive { reason }) => format!("inconclusive: {reason}"),
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
