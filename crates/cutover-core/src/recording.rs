//! Recordings of traffic for `cutover analyze`: text in, rows out, with a budget on size.
//!
//! Two forms are read:
//!
//! * **Evidence** (what `cutover record` writes, and what an analysis is judged on): a JSON
//!   object `{"recording": "cutover/v1", "release": NAME, "seconds": [ROW, ...]}`, one row
//!   per version and second: `{"time": T, "version": "candidate" | "stable", "requests": N,
//!   "errors": N, "le": [[BOUND, COUNT], ...]}`. `time` is the end of the second, in
//!   seconds; `le` is the second's latency histogram as cumulative counts at upper bounds
//!   in seconds, Prometheus-style (`"+Inf"` for the last); a bound with the count below it
//!   marks where a bucket starts, so the proxy's fine buckets survive the round trip.
//! * **Summaries** (the format before evidence, still read): per metric and version,
//!   timestamped values, as CSV `time,metric,version,value[,requests]` (a header line
//!   first) or a JSON list of `{"time", "metric", "version", "value", "requests"}`. A
//!   comparison on summaries is only as good as the summaries: see `docs/analysis.md`.
//!
//! Every form is held to [`MAX_BYTES`] of text and [`MAX_ROWS`] rows, and a histogram
//! to [`MAX_BOUNDS`] bounds, so a hostile file costs bounded memory and time.

use serde::Deserialize;

use crate::judge::{Bin, Evidence, Histogram};

/// The largest recording read, in bytes.
pub const MAX_BYTES: usize = 256 * 1024 * 1024;
/// The most rows of either form.
pub const MAX_ROWS: usize = 2_000_000;
/// The most `le` bounds in one row's histogram.
pub const MAX_BOUNDS: usize = 4_096;
/// The tag of the evidence form.
pub const FORMAT: &str = "cutover/v1";

/// Which version a row is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Side {
    /// The new version.
    Candidate,
    /// The version serving before the release.
    Stable,
}

impl Side {
    fn parse(text: &str) -> Result<Side, String> {
        match text {
            "candidate" => Ok(Side::Candidate),
            "stable" => Ok(Side::Stable),
            other => Err(format!("version '{other}' must be 'candidate' or 'stable'")),
        }
    }

    /// The name as written in recordings.
    pub fn as_str(self) -> &'static str {
        match self {
            Side::Candidate => "candidate",
            Side::Stable => "stable",
        }
    }
}

/// One second of one version's traffic.
#[derive(Clone, Debug, PartialEq)]
pub struct SecondRow {
    /// The end of the second, in seconds.
    pub time: f64,
    /// Which version.
    pub side: Side,
    /// Its evidence.
    pub evidence: Evidence,
}

/// One recorded summary value of one metric.
#[derive(Clone, Debug, PartialEq)]
pub struct SummaryRow {
    /// Seconds.
    pub time: f64,
    /// The metric's name.
    pub metric: String,
    /// Which version.
    pub side: Side,
    /// The value.
    pub value: f64,
    /// How many requests it stands for, when known.
    pub requests: Option<u64>,
}

/// A recording: evidence rows, summary rows, or (rarely) both.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Recording {
    /// The release named by an evidence recording.
    pub release: Option<String>,
    /// Evidence per second and version, in time order.
    pub seconds: Vec<SecondRow>,
    /// Summary values, in time order.
    pub summaries: Vec<SummaryRow>,
}

/// Why a recording cannot be read: where, and what is wrong.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{place}: {problem}")]
pub struct RecordingError {
    /// A line number (CSV), `row N` or `sample N` (JSON), `line N` of a JSON syntax error,
    /// or `file`.
    pub place: String,
    /// What is wrong, and what would be right.
    pub problem: String,
}

fn at(place: impl Into<String>, problem: impl Into<String>) -> RecordingError {
    RecordingError {
        place: place.into(),
        problem: problem.into(),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EvidenceDocument {
    recording: String,
    #[serde(default)]
    release: Option<String>,
    seconds: Vec<EvidenceRow>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EvidenceRow {
    time: f64,
    version: String,
    requests: f64,
    #[serde(default)]
    errors: f64,
    #[serde(default)]
    le: Vec<(Bound, f64)>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Bound {
    Number(f64),
    Text(String),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SummaryJson {
    time: f64,
    metric: String,
    version: String,
    value: f64,
    #[serde(default)]
    requests: Option<u64>,
}

/// Reads a recording in either form; rows come back sorted by time.
pub fn parse(text: &str) -> Result<Recording, RecordingError> {
    if text.len() > MAX_BYTES {
        return Err(at(
            "file",
            format!(
                "{} bytes is more than the {MAX_BYTES} a recording may have; record a shorter span",
                text.len()
            ),
        ));
    }
    let trimmed = text.trim_start();
    let mut recording = if trimmed.starts_with('{') {
        parse_evidence(text)?
    } else if trimmed.starts_with('[') {
        parse_summary_json(text)?
    } else {
        parse_summary_csv(text)?
    };
    recording
        .seconds
        .sort_by(|a, b| a.time.total_cmp(&b.time).then(a.side.cmp(&b.side)));
    recording
        .summaries
        .sort_by(|a, b| a.time.total_cmp(&b.time));
    Ok(recording)
}

fn check_time(time: f64) -> Result<(), String> {
    if time.is_finite() && time >= 0.0 {
        Ok(())
    } else {
        Err(format!(
            "time {time} must be a number of seconds, 0 or more"
        ))
    }
}

/// The largest count a row may give: far above any real second's traffic, and low enough
/// that sums over a recording stay finite.
const MAX_COUNT: f64 = 1e12;

fn check_count(what: &str, value: f64) -> Result<(), String> {
    if value.is_finite() && (0.0..=MAX_COUNT).contains(&value) {
        Ok(())
    } else {
        Err(format!(
            "{what} {value} must be a count from 0 to {MAX_COUNT}"
        ))
    }
}

fn parse_evidence(text: &str) -> Result<Recording, RecordingError> {
    let document: EvidenceDocument = serde_json::from_str(text).map_err(|e| {
        at(
            format!("line {}", e.line()),
            format!("not a recording: {e}"),
        )
    })?;
    if document.recording != FORMAT {
        return Err(at(
            "file",
            format!(
                "recording '{}' is not a format this version reads ('{FORMAT}')",
                document.recording
            ),
        ));
    }
    if document.seconds.len() > MAX_ROWS {
        return Err(at(
            "file",
            format!("more than {MAX_ROWS} rows; record a shorter span"),
        ));
    }
    let mut seconds = Vec::with_capacity(document.seconds.len());
    for (i, row) in document.seconds.into_iter().enumerate() {
        let place = || format!("row {}", i + 1);
        let side = Side::parse(&row.version).map_err(|p| at(place(), p))?;
        check_time(row.time).map_err(|p| at(place(), p))?;
        check_count("requests", row.requests).map_err(|p| at(place(), p))?;
        check_count("errors", row.errors).map_err(|p| at(place(), p))?;
        if row.errors > row.requests {
            return Err(at(
                place(),
                format!(
                    "errors {} are more than requests {}",
                    row.errors, row.requests
                ),
            ));
        }
        let latency = histogram(&row.le).map_err(|p| at(place(), p))?;
        seconds.push(SecondRow {
            time: row.time,
            side,
            evidence: Evidence {
                requests: row.requests,
                errors: row.errors,
                latency,
                seconds: 1.0,
            },
        });
    }
    Ok(Recording {
        release: document.release,
        seconds,
        summaries: Vec::new(),
    })
}

/// Cumulative `le` pairs to a histogram; bounds must rise and counts must not fall.
fn histogram(le: &[(Bound, f64)]) -> Result<Histogram, String> {
    if le.len() > MAX_BOUNDS {
        return Err(format!(
            "{} latency bounds, more than the {MAX_BOUNDS} a row may have",
            le.len()
        ));
    }
    let mut cumulative = Vec::with_capacity(le.len());
    let (mut last_bound, mut last_count) = (f64::NEG_INFINITY, 0.0_f64);
    for (bound, count) in le {
        let bound = match bound {
            Bound::Number(n) if n.is_finite() && *n >= 0.0 => *n,
            Bound::Text(t) if t == "+Inf" => f64::INFINITY,
            Bound::Number(n) => return Err(format!("le bound {n} must be 0 or more")),
            Bound::Text(t) => {
                return Err(format!(
                    "le bound '{t}' must be a number of seconds or \"+Inf\""
                ));
            }
        };
        check_count("le count", *count)?;
        if bound <= last_bound {
            return Err(format!(
                "le bounds must rise: {bound} comes after {last_bound}"
            ));
        }
        if *count < last_count {
            return Err(format!(
                "le counts are cumulative and cannot fall: {count} at {bound} after {last_count}"
            ));
        }
        cumulative.push((bound, *count));
        last_bound = bound;
        last_count = *count;
    }
    Ok(Histogram::from_cumulative(cumulative))
}

/// A histogram as cumulative `le` pairs that [`parse`] reads back to the same buckets:
/// each bucket's lower bound (with the count below it) and its upper bound; a bucket with
/// no upper bound (the `+Inf` one) as an infinite bound, written `"+Inf"`.
pub fn cumulative_bounds(histogram: &Histogram) -> Vec<(f64, f64)> {
    let mut out: Vec<(f64, f64)> = Vec::with_capacity(histogram.bins().len() * 2 + 1);
    let mut below = 0.0;
    let mut unbounded = false;
    for Bin {
        lower,
        upper,
        count,
    } in histogram.bins().iter().copied()
    {
        if out.last().is_none_or(|(bound, _)| *bound < lower) {
            out.push((lower, below));
        }
        below += count;
        if upper > lower {
            out.push((upper, below));
        } else {
            unbounded = true;
        }
    }
    if unbounded {
        out.push((f64::INFINITY, below));
    }
    out
}

fn parse_summary_json(text: &str) -> Result<Recording, RecordingError> {
    let rows: Vec<SummaryJson> = serde_json::from_str(text).map_err(|e| {
        at(
            format!("line {}", e.line()),
            format!("not a list of samples: {e}"),
        )
    })?;
    if rows.len() > MAX_ROWS {
        return Err(at("file", format!("more than {MAX_ROWS} samples")));
    }
    let mut summaries = Vec::with_capacity(rows.len());
    for (i, row) in rows.into_iter().enumerate() {
        let place = || format!("sample {}", i + 1);
        summaries.push(
            summary(row.time, row.metric, &row.version, row.value, row.requests)
                .map_err(|p| at(place(), p))?,
        );
    }
    Ok(Recording {
        summaries,
        ..Recording::default()
    })
}

fn summary(
    time: f64,
    metric: String,
    version: &str,
    value: f64,
    requests: Option<u64>,
) -> Result<SummaryRow, String> {
    let side = Side::parse(version)?;
    check_time(time)?;
    if !value.is_finite() {
        return Err(format!("value {value} must be a finite number"));
    }
    Ok(SummaryRow {
        time,
        metric,
        side,
        value,
        requests,
    })
}

fn parse_summary_csv(text: &str) -> Result<Recording, RecordingError> {
    let mut lines = text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty() && !l.starts_with('#'));
    let Some((_, header)) = lines.next() else {
        return Ok(Recording::default());
    };
    let columns: Vec<&str> = header.split(',').map(str::trim).collect();
    let position = |name: &str| columns.iter().position(|c| *c == name);
    let (Some(time), Some(metric), Some(version), Some(value)) = (
        position("time"),
        position("metric"),
        position("version"),
        position("value"),
    ) else {
        return Err(at(
            "1",
            format!(
                "the header must name the columns time, metric, version, value (and optionally requests); found '{header}'"
            ),
        ));
    };
    let requests = position("requests");
    let mut summaries = Vec::new();
    for (index, line) in lines {
        if summaries.len() >= MAX_ROWS {
            return Err(at("file", format!("more than {MAX_ROWS} samples")));
        }
        let place = || format!("{}", index + 1);
        let fields: Vec<&str> = line.split(',').map(str::trim).collect();
        let field = |i: usize| fields.get(i).copied().unwrap_or("");
        let number = |i: usize, what: &str| {
            field(i)
                .parse::<f64>()
                .map_err(|_| at(place(), format!("{what} '{}' is not a number", field(i))))
        };
        let count = match requests.map(field).filter(|r| !r.is_empty()) {
            Some(r) => Some(
                r.parse()
                    .map_err(|_| at(place(), format!("requests '{r}' is not a whole number")))?,
            ),
            None => None,
        };
        summaries.push(
            summary(
                number(time, "time")?,
                field(metric).to_string(),
                field(version),
                number(value, "value")?,
                count,
            )
            .map_err(|p| at(place(), p))?,
        );
    }
    Ok(Recording {
        summaries,
        ..Recording::default()
    })
}

/// The evidence of `side` in the window after `from` up to and including `to` (seconds).
pub fn window(rows: &[SecondRow], side: Side, from: f64, to: f64) -> Evidence {
    let start = rows.partition_point(|r| r.time <= from);
    let end = rows.partition_point(|r| r.time <= to);
    // Counts added up and buckets gathered once: merging histogram by histogram would
    // sort everything gathered so far again for every row.
    let mut evidence = Evidence::default();
    let mut bins = Vec::new();
    for row in rows[start..end].iter().filter(|r| r.side == side) {
        evidence.requests += row.evidence.requests;
        evidence.errors += row.evidence.errors;
        bins.extend_from_slice(row.evidence.latency.bins());
    }
    evidence.latency = Histogram::from_bins(bins);
    evidence.seconds = (to - from).max(0.0);
    evidence
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn evidence_round_trips_through_cumulative_bounds() {
        let histogram = Histogram::from_log_linear([(700, 3.0), (900, 2.0), (901, 1.0)]);
        let histogram = Histogram::from_bins(histogram.bins().iter().copied().chain([Bin {
            lower: 9.0,
            upper: 9.0,
            count: 4.0,
        }]));
        let le: Vec<(Bound, f64)> = cumulative_bounds(&histogram)
            .into_iter()
            .map(|(b, c)| {
                if b.is_finite() {
                    (Bound::Number(b), c)
                } else {
                    (Bound::Text("+Inf".into()), c)
                }
            })
            .collect();
        assert_eq!(super::histogram(&le), Ok(histogram.clone()));
    }

    #[test]
    fn an_evidence_recording_is_read_and_windows_add_up() {
        let text = r#"{"recording": "cutover/v1", "release": "shop", "seconds": [
            {"time": 2, "version": "stable", "requests": 10, "errors": 1, "le": [[0.1, 0], [0.2, 10], ["+Inf", 10]]},
            {"time": 1, "version": "candidate", "requests": 2, "errors": 0, "le": [[0.1, 2], ["+Inf", 2]]},
            {"time": 2, "version": "candidate", "requests": 3, "errors": 1}
        ]}"#;
        let recording = parse(text).expect("valid");
        assert_eq!(recording.release.as_deref(), Some("shop"));
        assert_eq!(recording.seconds.len(), 3);
        let candidate = window(&recording.seconds, Side::Candidate, 0.0, 2.0);
        assert_eq!((candidate.requests, candidate.errors), (5.0, 1.0));
        let stable = window(&recording.seconds, Side::Stable, 1.0, 2.0);
        assert_eq!(stable.latency.total(), 10.0);
        assert_eq!(
            window(&recording.seconds, Side::Stable, 2.0, 3.0).requests,
            0.0
        );
    }

    #[test]
    fn bad_rows_are_named() {
        let bad = |row: &str| {
            parse(&format!(
                r#"{{"recording": "cutover/v1", "seconds": [{row}]}}"#
            ))
            .expect_err("invalid")
            .to_string()
        };
        assert!(
            bad(r#"{"time": 1, "version": "canary", "requests": 1}"#)
                .contains("'candidate' or 'stable'")
        );
        assert!(bad(r#"{"time": -1, "version": "stable", "requests": 1}"#).contains("0 or more"));
        assert!(
            bad(r#"{"time": 1, "version": "stable", "requests": 1, "errors": 2}"#)
                .contains("more than requests")
        );
        assert!(
            bad(r#"{"time": 1, "version": "stable", "requests": 1, "le": [[0.2, 1], [0.1, 1]]}"#)
                .contains("must rise")
        );
        assert!(
            bad(r#"{"time": 1, "version": "stable", "requests": 2, "le": [[0.1, 2], [0.2, 1]]}"#)
                .contains("cannot fall")
        );
        let wrong =
            parse(r#"{"recording": "cutover/v9", "seconds": []}"#).expect_err("unknown format");
        assert!(wrong.to_string().contains("cutover/v1"));
    }

    #[test]
    fn summaries_are_still_read_from_csv_and_json() {
        let csv = "time,metric,version,value,requests\n1,p99,candidate,0.2,10\n0,p99,stable,0.1,\n";
        let recording = parse(csv).expect("valid");
        assert_eq!(recording.summaries.len(), 2);
        assert_eq!(recording.summaries[0].side, Side::Stable);
        assert_eq!(recording.summaries[1].requests, Some(10));
        let json = r#"[{"time": 1, "metric": "p99", "version": "stable", "value": 0.1}]"#;
        assert_eq!(parse(json).expect("valid").summaries.len(), 1);
        let bad = parse("time,metric,version,value\n1,p99,stable,abc\n").expect_err("bad value");
        assert_eq!(bad.place, "2");
    }
}
