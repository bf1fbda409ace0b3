//! The verbs that talk to the controller: `run`, `status`, `promote`, `abort`, `pause`,
//! `resume`, `retry`, `history`, `list`.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::path::Path;
use std::time::{Duration, Instant};

use cutover_core::load;
use serde::Serialize;
use serde_json::Value;

use crate::client::{ApiClient, ClientError, ConnectionArgs};
use crate::{InputFile, Output, emit, exit};

/// How long `run --wait` and `status --watch` keep trying a controller that went away
/// before giving up with exit 4.
const RECONNECT_FOR: Duration = Duration::from_secs(30);

/// The manual verbs.
#[derive(Clone, Copy, Debug)]
pub enum Verb {
    /// `promote`, or `promote --full` when `full`.
    Promote {
        /// Skip every remaining step.
        full: bool,
    },
    /// `pause`.
    Pause,
    /// `resume`.
    Resume,
    /// `retry`.
    Retry,
}

impl Verb {
    fn path(self, name: &str) -> String {
        match self {
            Verb::Promote { full: true } => format!("/v1/releases/{name}/promote?full=true"),
            Verb::Promote { full: false } => format!("/v1/releases/{name}/promote"),
            Verb::Pause => format!("/v1/releases/{name}/pause"),
            Verb::Resume => format!("/v1/releases/{name}/resume"),
            Verb::Retry => format!("/v1/releases/{name}/retry"),
        }
    }
}

fn runtime() -> Result<tokio::runtime::Runtime, u8> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| {
            eprintln!("error: cannot start the runtime: {e}");
            exit::UNAVAILABLE
        })
}

/// The API client and a runtime to drive it, or the exit code after saying why not.
fn session(
    connection: &ConnectionArgs,
    env: &BTreeMap<String, String>,
) -> Result<(ApiClient, tokio::runtime::Runtime), u8> {
    let client = ApiClient::from_settings(connection, env).map_err(|e| report(&e))?;
    Ok((client, runtime()?))
}

/// Prints a client error (with a release file's diagnostics) and gives its exit code.
fn report(error: &ClientError) -> u8 {
    eprintln!("error: {error}");
    if let ClientError::Api { diagnostics, .. } = error {
        for d in diagnostics {
            let message = d["message"].as_str().unwrap_or_default();
            let at = &d["origin"];
            eprintln!(
                "  {}:{}:{}: {}: {message}",
                at["file"].as_str().unwrap_or("release"),
                at["line"],
                at["column"],
                d["path"].as_str().unwrap_or_default()
            );
            if let Some(hint) = d["hint"].as_str() {
                eprintln!("    hint: {hint}");
            }
        }
    }
    error.exit_code()
}

/// What `run --output json` prints: stable, documented in `docs/cli.md`.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct RunReport {
    release: String,
    /// `promoted`, `rolledBack`, `aborted`, `timedOut`, `unreachable`, `refused` (the
    /// controller turned the release down), or `started` (without `--wait`).
    outcome: String,
    exit_code: u8,
    reason: Option<String>,
    stable_version: Option<String>,
    candidate_version: Option<String>,
    duration_seconds: f64,
    controller: String,
    status: Option<Value>,
}

/// `cutover run FILE`.
pub fn run(
    file: &Path,
    wait: bool,
    timeout: Option<cutover_core::Duration>,
    output: Output,
    connection: &ConnectionArgs,
    env: &BTreeMap<String, String>,
) -> u8 {
    let input = match InputFile::read_or_report(file) {
        Ok(input) => input,
        Err(code) => return code,
    };
    // Interpolation and overrides happen here, with this environment (CI's), and every
    // problem is reported against the file as written.
    let release = match load::load_release(input.source(), env) {
        Ok((release, warnings)) => {
            for w in warnings {
                eprintln!("{w}");
            }
            release
        }
        Err(diagnostics) => {
            for d in diagnostics {
                eprintln!("{d}");
            }
            return exit::INVALID_INPUT;
        }
    };
    let name = release.metadata.name.clone();
    let body = match serde_json::to_vec(&release) {
        Ok(body) => body,
        Err(e) => {
            eprintln!("error: cannot encode the release: {e}");
            return exit::INVALID_INPUT;
        }
    };
    let (client, runtime) = match session(connection, env) {
        Ok(session) => session,
        Err(code) => return code,
    };
    let started = Instant::now();
    runtime.block_on(async {
        let submitted = client
            .post(
                "/v1/releases",
                body,
                &[
                    ("content-type", "application/json".to_string()),
                    ("x-cutover-filename", format!("{}.json", input.name)),
                ],
            )
            .await;
        let status = match submitted {
            Ok(status) => status,
            Err(e) => {
                let code = report(&e);
                if output == Output::Json {
                    print_report(&RunReport {
                        release: name,
                        outcome: if code == exit::UNAVAILABLE {
                            "unreachable".into()
                        } else {
                            "refused".into()
                        },
                        exit_code: code,
                        reason: Some(e.to_string()),
                        stable_version: None,
                        candidate_version: None,
                        duration_seconds: started.elapsed().as_secs_f64(),
                        controller: client.base().to_string(),
                        status: None,
                    });
                }
                return code;
            }
        };
        if output == Output::Text {
            eprintln!(
                "started {name}: {} -> {} on {} ({} steps)",
                status["stable"]["version"].as_str().unwrap_or("?"),
                status["candidate"]["version"].as_str().unwrap_or("?"),
                client.base(),
                status["steps"]
            );
        }
        if !wait {
            if output == Output::Json {
                print_report(&report_of(&name, "started", exit::OK, &status, started, &client));
            }
            return exit::OK;
        }
        let mut progress = Progress::new(output == Output::Text);
        let waited = follow_until_done(&client, &name, &mut progress);
        let result = match timeout {
            Some(limit) => tokio::time::timeout(Duration::from_millis(limit.as_millis()), waited)
                .await
                .unwrap_or(Err(Waited::TimedOut)),
            None => waited.await,
        };
        progress.finish();
        let (outcome, code, last) = match result {
            Ok(last) => {
                let outcome = last["outcome"].as_str().unwrap_or("rolledBack").to_string();
                let code = if outcome == "promoted" { exit::OK } else { exit::FAILED };
                (outcome, code, Some(last))
            }
            Err(Waited::TimedOut) => ("timedOut".to_string(), exit::TIMED_OUT, progress.last.clone()),
            Err(Waited::Unreachable(e)) => {
                eprintln!("error: {e}");
                ("unreachable".to_string(), exit::UNAVAILABLE, progress.last.clone())
            }
        };
        let last_status = last.clone().unwrap_or(Value::Null);
        match output {
            Output::Json => {
                print_report(&report_of(&name, &outcome, code, &last_status, started, &client));
            }
            Output::Text => {
                let reason = last_status["reason"].as_str().map(|r| format!(": {r}"));
                let line = match outcome.as_str() {
                    "timedOut" => format!(
                        "{name}: still {} after the timeout; it goes on without this command (`cutover status {name}`)",
                        last_status["description"].as_str().unwrap_or("running")
                    ),
                    "unreachable" => format!("{name}: lost the controller"),
                    other => format!(
                        "{name}: {other}{} after {:.1}s",
                        reason.unwrap_or_default(),
                        started.elapsed().as_secs_f64()
                    ),
                };
                emit(&format!("{line}\n"));
            }
        }
        code
    })
}

fn report_of(
    name: &str,
    outcome: &str,
    code: u8,
    status: &Value,
    started: Instant,
    client: &ApiClient,
) -> RunReport {
    RunReport {
        release: name.to_string(),
        outcome: outcome.to_string(),
        exit_code: code,
        reason: status["reason"].as_str().map(str::to_string),
        stable_version: status["stable"]["version"].as_str().map(str::to_string),
        candidate_version: status["candidate"]["version"].as_str().map(str::to_string),
        duration_seconds: started.elapsed().as_secs_f64(),
        controller: client.base().to_string(),
        status: (!status.is_null()).then(|| status.clone()),
    }
}

fn print_report(report: &RunReport) {
    emit(&format!(
        "{}\n",
        serde_json::to_string_pretty(report).unwrap_or_default()
    ));
}

enum Waited {
    TimedOut,
    Unreachable(String),
}

/// Follows the release's events until it is done, reconnecting while the controller
/// restarts; gives up after [`RECONNECT_FOR`] without one.
async fn follow_until_done(
    client: &ApiClient,
    name: &str,
    progress: &mut Progress,
) -> Result<Value, Waited> {
    let mut lost_since: Option<Instant> = None;
    loop {
        let mut done = None;
        let followed = client
            .follow(&format!("/v1/releases/{name}/events"), &mut |status| {
                progress.show(&status);
                if status["done"].as_bool() == Some(true) {
                    done = Some(status);
                    return false;
                }
                true
            })
            .await;
        if let Some(status) = done {
            return Ok(status);
        }
        match followed {
            Ok(_) => lost_since = None,
            Err(ClientError::Unreachable(e)) => {
                let since = *lost_since.get_or_insert_with(Instant::now);
                if since.elapsed() > RECONNECT_FOR {
                    return Err(Waited::Unreachable(e));
                }
            }
            Err(e) => return Err(Waited::Unreachable(e.to_string())),
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Progress output: a redrawn line on a terminal, a line per change in CI.
struct Progress {
    enabled: bool,
    terminal: bool,
    started: Instant,
    last_line: String,
    last: Option<Value>,
}

impl Progress {
    fn new(enabled: bool) -> Progress {
        Progress {
            enabled,
            terminal: std::io::stderr().is_terminal(),
            started: Instant::now(),
            last_line: String::new(),
            last: None,
        }
    }

    fn show(&mut self, status: &Value) {
        self.last = Some(status.clone());
        if !self.enabled {
            return;
        }
        let line = summary_line(status);
        if line == self.last_line {
            return;
        }
        if self.terminal {
            let steps = status["steps"].as_u64().unwrap_or(0).max(1);
            let step = status["step"].as_u64().map_or(
                if status["done"].as_bool() == Some(true) {
                    steps
                } else {
                    0
                },
                |s| s + 1,
            );
            let filled = (step * 20 / steps) as usize;
            eprint!(
                "\r\x1b[2K[{}{}] {line}",
                "#".repeat(filled.min(20)),
                "-".repeat(20 - filled.min(20))
            );
        } else {
            eprintln!("[{:>6.1}s] {line}", self.started.elapsed().as_secs_f64());
        }
        self.last_line = line;
    }

    fn finish(&self) {
        if self.enabled && self.terminal && !self.last_line.is_empty() {
            eprintln!();
        }
    }
}

/// One line: phase, weight, and each metric's last value against its limit.
fn summary_line(status: &Value) -> String {
    let mut line = format!(
        "{}: {}, weight {}%",
        status["name"].as_str().unwrap_or("?"),
        status["description"].as_str().unwrap_or("?"),
        status["weight"]
    );
    if status["paused"].as_bool() == Some(true) {
        line.push_str(", paused");
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

/// The status as a block of text.
fn status_block(status: &Value) -> String {
    let mut out = format!(
        "{}  {}\n  phase      {}\n  weight     {}%\n",
        status["name"].as_str().unwrap_or("?"),
        status["strategy"].as_str().unwrap_or(""),
        status["description"].as_str().unwrap_or("?"),
        status["weight"]
    );
    for slot in ["stable", "candidate"] {
        let endpoints: Vec<&str> = status[slot]["endpoints"]
            .as_array()
            .map(|a| a.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        out.push_str(&format!(
            "  {slot:<10} {} {}\n",
            status[slot]["version"].as_str().unwrap_or("?"),
            if endpoints.is_empty() {
                "(not running)".to_string()
            } else {
                endpoints.join(", ")
            }
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
    out
}

/// `cutover status NAME [--watch]`.
pub fn status(
    name: &str,
    watch: bool,
    output: Output,
    connection: &ConnectionArgs,
    env: &BTreeMap<String, String>,
) -> u8 {
    if !watch {
        let path = format!("/v1/releases/{name}");
        return get_and_print(&path, output, connection, env, status_block);
    }
    let (client, runtime) = match session(connection, env) {
        Ok(session) => session,
        Err(code) => return code,
    };
    runtime.block_on(async {
        let terminal = std::io::stdout().is_terminal() && output == Output::Text;
        let mut last_line = String::new();
        let mut show = |status: &Value| match output {
            Output::Json => emit(&format!(
                "{}\n",
                serde_json::to_string(status).unwrap_or_default()
            )),
            Output::Text if terminal => {
                // Redraw the block in place.
                emit(&format!("\x1b[H\x1b[2J{}", status_block(status)));
            }
            Output::Text => {
                let line = summary_line(status);
                if line != last_line {
                    emit(&format!("{line}\n"));
                    last_line = line;
                }
            }
        };
        let mut lost_since: Option<Instant> = None;
        loop {
            let mut done = false;
            let followed = client
                .follow(&format!("/v1/releases/{name}/events"), &mut |status| {
                    show(&status);
                    done = status["done"].as_bool() == Some(true);
                    !done
                })
                .await;
            if done {
                return exit::OK;
            }
            match followed {
                Ok(_) => lost_since = None,
                Err(ClientError::Unreachable(e)) => {
                    if lost_since.get_or_insert_with(Instant::now).elapsed() > RECONNECT_FOR {
                        eprintln!("error: {e}");
                        return exit::UNAVAILABLE;
                    }
                }
                Err(e) => return report(&e),
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    })
}

/// `cutover promote|abort|pause|resume|retry NAME`.
pub fn command(
    name: &str,
    verb: Verb,
    output: Output,
    connection: &ConnectionArgs,
    env: &BTreeMap<String, String>,
) -> u8 {
    let (client, runtime) = match session(connection, env) {
        Ok(session) => session,
        Err(code) => return code,
    };
    runtime.block_on(async {
        match client.post(&verb.path(name), Vec::new(), &[]).await {
            Ok(status) => {
                print(output, &status, |s| format!("{}\n", summary_line(s)));
                exit::OK
            }
            Err(e) => report(&e),
        }
    })
}

/// `cutover history NAME`.
pub fn history(
    name: &str,
    output: Output,
    connection: &ConnectionArgs,
    env: &BTreeMap<String, String>,
) -> u8 {
    get_and_print(
        &format!("/v1/releases/{name}/history"),
        output,
        connection,
        env,
        |h| {
            let mut out = String::new();
            if let Some(earlier) = h["earlier"].as_array() {
                for r in earlier {
                    out.push_str(&format!(
                        "{}  {} -> {}  {}{}\n",
                        time_of(&r["startedAt"]),
                        r["stableVersion"].as_str().unwrap_or("?"),
                        r["candidateVersion"].as_str().unwrap_or("?"),
                        r["outcome"].as_str().unwrap_or("?"),
                        r["reason"]
                            .as_str()
                            .map(|x| format!(": {x}"))
                            .unwrap_or_default()
                    ));
                }
                if !earlier.is_empty() {
                    out.push_str("current rollout:\n");
                }
            }
            for e in h["events"].as_array().into_iter().flatten() {
                out.push_str(&format!(
                    "{}  {}\n",
                    time_of(&e["at"]),
                    e["message"].as_str().unwrap_or("")
                ));
            }
            out
        },
    )
}

/// `cutover list`.
pub fn list(output: Output, connection: &ConnectionArgs, env: &BTreeMap<String, String>) -> u8 {
    get_and_print("/v1/releases", output, connection, env, |v| {
        let mut out = format!(
            "{:<24} {:<14} {:<14} {:<12} {:>6}  {}\n",
            "NAME", "STABLE", "CANDIDATE", "PHASE", "WEIGHT", "DETAIL"
        );
        for r in v["releases"].as_array().into_iter().flatten() {
            out.push_str(&format!(
                "{:<24} {:<14} {:<14} {:<12} {:>5}%  {}\n",
                r["name"].as_str().unwrap_or("?"),
                r["stable"]["version"].as_str().unwrap_or("?"),
                r["candidate"]["version"].as_str().unwrap_or("?"),
                r["phase"].as_str().unwrap_or("?"),
                r["weight"],
                r["description"].as_str().unwrap_or("")
            ));
        }
        for q in v["quarantined"].as_array().into_iter().flatten() {
            out.push_str(&format!(
                "{:<24} {:<14} {:<14} {:<12} {:>6}  {}\n",
                q["name"].as_str().unwrap_or("?"),
                "-",
                "-",
                "quarantined",
                "-",
                q["reason"].as_str().unwrap_or("")
            ));
        }
        out
    })
}

fn get_and_print(
    path: &str,
    output: Output,
    connection: &ConnectionArgs,
    env: &BTreeMap<String, String>,
    text: impl Fn(&Value) -> String,
) -> u8 {
    let (client, runtime) = match session(connection, env) {
        Ok(session) => session,
        Err(code) => return code,
    };
    runtime.block_on(async {
        match client.get(path).await {
            Ok(value) => {
                print(output, &value, text);
                exit::OK
            }
            Err(e) => report(&e),
        }
    })
}

/// Prints an API answer: pretty JSON, or `text` of it.
fn print(output: Output, value: &Value, text: impl Fn(&Value) -> String) {
    match output {
        Output::Json => emit(&format!(
            "{}\n",
            serde_json::to_string_pretty(value).unwrap_or_default()
        )),
        Output::Text => emit(&text(value)),
    }
}

/// A millisecond timestamp as UTC `HH:MM:SS` (the date is in `--output json`).
fn time_of(ms: &Value) -> String {
    let Some(ms) = ms.as_u64() else {
        return "--:--:--".into();
    };
    let secs = ms / 1000;
    format!(
        "{:02}:{:02}:{:02}",
        (secs / 3600) % 24,
        (secs / 60) % 60,
        secs % 60
    )
}
