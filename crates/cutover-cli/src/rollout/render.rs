//! A rollout's status, history and the release list as text for people.

use super::Value;

/// The command that moves a rollout on, said once per wait: `cutover promote NAME` at a
/// pause that waits for a person, `cutover resume NAME` under a manual pause.
#[derive(Default)]
pub(super) struct NextStepHint {
    said: Option<String>,
}

impl NextStepHint {
    /// The hint to print now, if this wait has not had it yet.
    pub(super) fn next(&mut self, status: &Value) -> Option<String> {
        let hint = waiting_hint(status)?;
        let key = format!("{}/{hint}", status["step"]);
        if self.said.as_deref() == Some(key.as_str()) {
            return None;
        }
        self.said = Some(key);
        Some(hint)
    }
}

/// What a person has to do for a rollout that waits for one, or `None`.
fn waiting_hint(status: &Value) -> Option<String> {
    let name = status["name"].as_str().unwrap_or("NAME");
    if status["done"].as_bool() == Some(true) {
        return None;
    }
    if status["paused"].as_bool() == Some(true) {
        return Some(format!(
            "paused by hand: `cutover resume {name}` lifts the pause (`cutover abort {name}` rolls back)"
        ));
    }
    if status["waitingForPerson"].as_bool() != Some(true) {
        return None;
    }
    let description = status["description"].as_str().unwrap_or("");
    Some(if description.contains("inconclusive") {
        format!(
            "waiting for a person: `cutover resume {name}` runs the analysis again, `cutover promote {name}` accepts it, `cutover abort {name}` rolls back"
        )
    } else {
        format!(
            "waiting for promote: `cutover promote {name}` goes on (`cutover abort {name}` rolls back)"
        )
    })
}

/// One line: phase, weight, and each metric's last value against its limit.
pub(super) fn summary_line(status: &Value) -> String {
    let mut line = format!(
        "{}: {}, weight {}%",
        status["name"].as_str().unwrap_or("?"),
        status["description"].as_str().unwrap_or("?"),
        status["weight"]
    );
    if status["paused"].as_bool() == Some(true) {
        line = format!(
            "{}: paused {}, weight {}%",
            status["name"].as_str().unwrap_or("?"),
            status["description"].as_str().unwrap_or("?"),
            status["weight"]
        );
    }
    if status["done"].as_bool() != Some(true)
        && let Some(metrics) = status["analysis"]["metrics"].as_array()
    {
        for m in metrics {
            line.push_str(&format!(" | {}", metric_text(m)));
        }
    }
    line
}

fn metric_text(m: &Value) -> String {
    let value = m["lastValue"]
        .as_f64()
        .map_or("-".to_string(), |v| format!("{v:.4}"));
    let limit = match (m["min"].as_f64(), m["max"].as_f64()) {
        (Some(min), Some(max)) => format!(" in [{min}, {max}]"),
        (None, Some(max)) => format!(" (max {max})"),
        (Some(min), None) => format!(" (min {min})"),
        (None, None) if m["compares"].as_bool() == Some(true) => " (vs stable)".to_string(),
        (None, None) => String::new(),
    };
    let name = m["name"].as_str().unwrap_or("?");
    // Decided: the verdict. On evidence and undecided: what a decision still needs.
    // Otherwise how far the measurements have got.
    let state = match (
        m["verdict"].as_str(),
        m["needs"]["candidateRequests"].as_u64(),
    ) {
        (Some("success"), _) => "passed".to_string(),
        (Some("failure"), _) => "failed".to_string(),
        (Some(verdict), _) => verdict.to_string(),
        (None, Some(requests)) => {
            let time = m["needs"]["seconds"]
                .as_u64()
                .map(|s| format!(", about {}", cutover_core::Duration::from_secs(s)))
                .unwrap_or_default();
            format!("needs about {requests} more candidate requests{time}")
        }
        (None, None) => format!("{}/{} measured", m["measurements"], m["count"]),
    };
    format!("{name} {value}{limit}: {state}")
}

/// The phase in words: paused said first, and the step's kind.
fn phase_text(status: &Value) -> String {
    let description = status["description"].as_str().unwrap_or("?");
    if status["paused"].as_bool() == Some(true) {
        format!("paused, {description}")
    } else {
        description.to_string()
    }
}

/// The status as a block of text.
pub(super) fn status_block(status: &Value) -> String {
    let mut out = format!(
        "{}  {}\n  phase      {}\n",
        status["name"].as_str().unwrap_or("?"),
        status["strategy"].as_str().unwrap_or(""),
        phase_text(status),
    );
    if let Some(hint) = waiting_hint(status) {
        out.push_str(&format!("  next       {hint}\n"));
    }
    out.push_str(&format!("  weight     {}%\n", status["weight"]));
    let endpoints = |slot: &str| -> String {
        let list: Vec<&str> = status[slot]["endpoints"]
            .as_array()
            .map(|a| a.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        list.join(", ")
    };
    let stable = status["stable"]["version"].as_str().unwrap_or("?");
    let candidate = status["candidate"]["version"].as_str().unwrap_or("?");
    let previous = status["previousVersion"].as_str();
    let outcome = status["outcome"].as_str();
    // Once the candidate is stable, the stable slot is the promoted version and the
    // candidate slot is empty: say so rather than `candidate v2 (not running)`.
    let promoted =
        matches!(status["phase"].as_str(), Some("scalingDown" | "promoted")) && stable == candidate;
    let stable_line = match (endpoints("stable"), promoted, previous) {
        (e, true, Some(previous)) if previous != stable => {
            format!("{stable} {} (promoted, was {previous})", or_none(&e))
        }
        (e, _, _) => format!("{stable} {}", or_none(&e)),
    };
    out.push_str(&format!("  {:<10} {stable_line}\n", "stable"));
    let candidate_line = match endpoints("candidate") {
        _ if promoted => format!("- ({candidate} is stable now)"),
        e if e.is_empty() && outcome.is_some() => format!("{candidate} (removed)"),
        e if e.is_empty() => format!("{candidate} (not running)"),
        e => format!("{candidate} {e}"),
    };
    out.push_str(&format!("  {:<10} {candidate_line}\n", "candidate"));
    if let (Some(started), Some(updated)) =
        (status["startedAt"].as_u64(), status["updatedAt"].as_u64())
    {
        out.push_str(&format!(
            "  started    {}\n  updated    {}\n",
            rfc3339(started),
            rfc3339(updated)
        ));
    }
    if let Some(plan) = status["plan"].as_array() {
        let current = status["step"].as_u64();
        for (i, step) in plan.iter().enumerate() {
            let marker = match current {
                Some(c) if c as usize == i => ">",
                Some(c) if (c as usize) > i => "x",
                _ if status["outcome"].as_str() == Some("promoted") => "x",
                _ => " ",
            };
            out.push_str(&format!(
                "  {marker} {i:>2}. {}\n",
                step.as_str().unwrap_or("?")
            ));
        }
    }
    if let Some(metrics) = status["analysis"]["metrics"].as_array() {
        out.push_str(&format!("  analysis run {}:\n", status["analysis"]["run"]));
        for m in metrics {
            out.push_str(&format!("    {}\n", metric_text(m)));
            if let Some(reason) = m["lastReason"].as_str() {
                out.push_str(&format!("      {reason}\n"));
            }
        }
    }
    if let Some(reason) = status["reason"].as_str() {
        out.push_str(&format!("  reason     {reason}\n"));
    }
    if let Some(problem) = status["problem"].as_str() {
        out.push_str(&format!("  problem    {problem}\n"));
    }
    if let Some(event) = status["lastEvent"].as_str() {
        out.push_str(&format!("  last event {event}\n"));
    }
    if let Some(failures) = status["notifications"].as_array() {
        // The last notification each service did not get; never its URL.
        for f in failures {
            out.push_str(&format!(
                "  notify     {} did not get {}: {}\n",
                f["service"].as_str().unwrap_or("?"),
                f["trigger"].as_str().unwrap_or("?"),
                f["error"].as_str().unwrap_or("?")
            ));
        }
    }
    out
}

/// The releases as a table whose columns are as wide as their widest cell.
pub(super) fn list_table(v: &Value) -> String {
    let header = [
        "NAME",
        "STABLE",
        "CANDIDATE",
        "PHASE",
        "WEIGHT",
        "UPDATED",
        "DETAIL",
    ];
    let mut rows: Vec<[String; 7]> = vec![header.map(str::to_string)];
    for r in v["releases"].as_array().into_iter().flatten() {
        let name = r["name"].as_str().unwrap_or("?");
        let detail = match waiting_hint(r) {
            Some(_) if r["paused"].as_bool() == Some(true) => format!("`cutover resume {name}`"),
            Some(_) => format!("`cutover promote {name}`"),
            None => r["reason"]
                .as_str()
                .or_else(|| r["description"].as_str())
                .unwrap_or("")
                .to_string(),
        };
        rows.push([
            name.to_string(),
            r["stable"]["version"].as_str().unwrap_or("?").to_string(),
            r["candidate"]["version"]
                .as_str()
                .unwrap_or("?")
                .to_string(),
            list_phase(r),
            format!("{}%", r["weight"]),
            r["updatedAt"].as_u64().map_or("-".to_string(), rfc3339),
            detail,
        ]);
    }
    for q in v["quarantined"].as_array().into_iter().flatten() {
        rows.push([
            q["name"].as_str().unwrap_or("?").to_string(),
            "-".into(),
            "-".into(),
            "quarantined".into(),
            "-".into(),
            "-".into(),
            q["reason"].as_str().unwrap_or("").to_string(),
        ]);
    }
    let mut widths = [0usize; 7];
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in &rows {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            let pad = widths[i].saturating_sub(cell.chars().count());
            match i {
                // WEIGHT is a number: right-aligned.
                4 => line.push_str(&format!("{}{cell}", " ".repeat(pad))),
                6 => line.push_str(cell),
                _ => line.push_str(&format!("{cell}{}", " ".repeat(pad))),
            }
            if i < 6 {
                line.push_str("  ");
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// The PHASE column: what the rollout is doing in a few words (`step 3/7 analysis`,
/// `paused at 2/7`, `promoted`); steps are numbered from 0, as in `plan` and `status`.
fn list_phase(r: &Value) -> String {
    let phase = r["phase"].as_str().unwrap_or("?");
    let steps = r["steps"].as_u64().unwrap_or(0);
    match r["step"].as_u64() {
        Some(step) if r["paused"].as_bool() == Some(true) => format!("paused at {step}/{steps}"),
        Some(step) => {
            let kind = r["plan"][step as usize]
                .as_str()
                .and_then(|p| p.split([' ', '(']).next())
                .unwrap_or("");
            let waiting = if r["waitingForPerson"].as_bool() == Some(true) {
                " (waiting)"
            } else {
                ""
            };
            format!("step {step}/{steps} {kind}{waiting}")
                .trim_end()
                .to_string()
        }
        None if r["paused"].as_bool() == Some(true) => format!("paused ({phase})"),
        None => phase.to_string(),
    }
}

/// A millisecond timestamp as RFC 3339 in UTC, or a dash when there is none.
pub(super) fn time_of(ms: &Value) -> String {
    ms.as_u64().map_or_else(|| "-".to_string(), rfc3339)
}

/// "(not running)" for an empty endpoint list.
fn or_none(endpoints: &str) -> &str {
    if endpoints.is_empty() {
        "(not running)"
    } else {
        endpoints
    }
}

/// Milliseconds since the epoch as RFC 3339 in UTC, to the second:
/// `2026-12-06T12:20:05Z`. The date is the proleptic Gregorian calendar's, from the day
/// count by Howard Hinnant's `civil_from_days`.
pub(super) fn rfc3339(ms: u64) -> String {
    let secs = ms / 1000;
    let days = (secs / 86_400) as i64;
    let of_day = secs % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        of_day / 3600,
        (of_day / 60) % 60,
        of_day % 60
    )
}
