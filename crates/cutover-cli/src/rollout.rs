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
pub(crate) fn session(
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
    /// The version serving before the rollout (after a promotion too).
    stable_version: Option<String>,
    /// The version being rolled out.
    candidate_version: Option<String>,
    /// The version serving when the command ended: the candidate once promoted, the
    /// stable version after a rollback.
    serving_version: Option<String>,
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
    sets: &[load::Set],
) -> u8 {
    let input = match InputFile::read_or_report(file) {
        Ok(input) => input,
        Err(code) => return code,
    };
    // Interpolation and overrides happen here, with this environment (CI's) and the
    // `--set` arguments, and every problem (an unset `${VERSION}`, say) is reported
    // against the file as written, before anything starts.
    let release = match load::load_release_with(input.source(), env, sets) {
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
    let file_versions = (
        release.spec.stable_version.clone(),
        release.spec.version.clone(),
    );
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
                    let report = refused_report(&client, &name, &e, code, &file_versions).await;
                    print_report(&RunReport {
                        duration_seconds: started.elapsed().as_secs_f64(),
                        ..report
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
                print_report(&report_of(
                    &name,
                    "started",
                    exit::OK,
                    &status,
                    started,
                    &client,
                ));
            }
            return exit::OK;
        }
        let end = wait_for_end(&client, &name, timeout, output == Output::Text).await;
        print_run_end(&name, &end, output, started, &client);
        end.code
    })
}

/// How waiting for a rollout to finish ended: `promoted`, `rolledBack`, `aborted`
/// (exit 1 unless promoted), `timedOut` (3), `unreachable` (4) or `interrupted` (130),
/// and the last status seen.
pub(crate) struct WaitEnd {
    /// The outcome, in the words of `run --output json`.
    pub outcome: String,
    /// The exit code it means.
    pub code: u8,
    /// The last status seen (`null` if none).
    pub last: Value,
}

/// Follows the rollout of `name` until it is done, at most `timeout`, showing its
/// progress when `text`; says when the controller is lost and regained, and on Ctrl-C
/// that the rollout goes on. One wait for `run --wait` and `undo --wait`.
pub(crate) async fn wait_for_end(
    client: &ApiClient,
    name: &str,
    timeout: Option<cutover_core::Duration>,
    text: bool,
) -> WaitEnd {
    let mut progress = Progress::new(text);
    let mut lost = LostController::new(client.base(), name);
    let mut show = |status: &Value| progress.show(status);
    let waited = follow_until_done(client, name, &mut lost, &mut show);
    let limit = timeout.map_or(Duration::MAX, |t| Duration::from_millis(t.as_millis()));
    let result = tokio::select! {
        waited = tokio::time::timeout(limit, waited) => waited.unwrap_or(Err(Waited::TimedOut)),
        _ = tokio::signal::ctrl_c() => Err(Waited::Interrupted),
    };
    progress.finish();
    let (outcome, code, last) = match result {
        Ok(last) => {
            let outcome = last["outcome"].as_str().unwrap_or("rolledBack").to_string();
            let code = if outcome == "promoted" {
                exit::OK
            } else {
                exit::FAILED
            };
            (outcome, code, Some(last))
        }
        Err(Waited::TimedOut) => (
            "timedOut".to_string(),
            exit::TIMED_OUT,
            progress.last.clone(),
        ),
        Err(Waited::Unreachable(e)) => {
            eprintln!("error: {e}");
            (
                "unreachable".to_string(),
                exit::UNAVAILABLE,
                progress.last.clone(),
            )
        }
        Err(Waited::Interrupted) => {
            eprintln!("{}", interrupted_text(name));
            (
                "interrupted".to_string(),
                exit::INTERRUPTED,
                progress.last.clone(),
            )
        }
    };
    WaitEnd {
        outcome,
        code,
        last: last.unwrap_or(Value::Null),
    }
}

/// `run --output json`'s report for a release the controller turned down or could not
/// be asked about: what is known of the versions, what serves now (the stable version of
/// a next rollout), else the file's, which names it on a first one.
async fn refused_report(
    client: &ApiClient,
    name: &str,
    error: &ClientError,
    code: u8,
    file_versions: &(Option<String>, Option<String>),
) -> RunReport {
    let current = match error {
        ClientError::Unreachable(_) => None,
        _ => client.get(&format!("/v1/releases/{name}")).await.ok(),
    };
    let serving = current
        .as_ref()
        .and_then(|s| s["stable"]["version"].as_str().map(str::to_string));
    RunReport {
        release: name.to_string(),
        outcome: if code == exit::UNAVAILABLE {
            "unreachable".into()
        } else {
            "refused".into()
        },
        exit_code: code,
        reason: Some(error.to_string()),
        stable_version: serving.clone().or_else(|| file_versions.0.clone()),
        candidate_version: file_versions.1.clone(),
        serving_version: serving,
        duration_seconds: 0.0,
        controller: client.base().to_string(),
        status: None,
    }
}

/// How `run --wait` ends: the JSON report, or one line saying the outcome.
fn print_run_end(name: &str, end: &WaitEnd, output: Output, started: Instant, client: &ApiClient) {
    let (outcome, code, last_status) = (&end.outcome, end.code, &end.last);
    match output {
        Output::Json => {
            print_report(&report_of(
                name,
                outcome,
                code,
                last_status,
                started,
                client,
            ));
        }
        Output::Text => {
            let reason = last_status["reason"].as_str().map(|r| format!(": {r}"));
            let line = match outcome.as_str() {
                "timedOut" => format!(
                    "{name}: still {} after the timeout; it goes on without this command (`cutover status {name}`)",
                    last_status["description"].as_str().unwrap_or("running")
                ),
                "unreachable" => format!("{name}: lost the controller"),
                "interrupted" => format!(
                    "{name}: interrupted while {}",
                    last_status["description"].as_str().unwrap_or("running")
                ),
                other => format!(
                    "{name}: {other}{} after {:.1}s",
                    reason.unwrap_or_default(),
                    started.elapsed().as_secs_f64()
                ),
            };
            emit(&format!("{line}\n"));
        }
    }
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
        // `previousVersion` is what served before this rollout, whatever happened since;
        // a controller without it (older) is read from the stable slot.
        stable_version: status["previousVersion"]
            .as_str()
            .or_else(|| status["stable"]["version"].as_str())
            .map(str::to_string),
        candidate_version: status["candidate"]["version"].as_str().map(str::to_string),
        serving_version: status["stable"]["version"].as_str().map(str::to_string),
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
    Interrupted,
}

/// What Ctrl-C on `run --wait` or `status --watch` says: only this command stops.
fn interrupted_text(name: &str) -> String {
    format!(
        "interrupted: the rollout goes on; follow it with `cutover status {name} --watch`, abort it with `cutover abort {name}`"
    )
}

/// Says, one line each, when the controller is lost, when it answers again and when the
/// rollout is seen moving again; not a line per retry.
struct LostController {
    base: String,
    name: String,
    /// Since when the controller has been gone, and the rollout's `updatedAt` then.
    lost: Option<(Instant, Option<u64>)>,
    /// Regained, waiting to see the rollout move: its `updatedAt` before the loss.
    resuming: Option<Option<u64>>,
}

impl LostController {
    fn new(base: &str, name: &str) -> LostController {
        LostController {
            base: base.to_string(),
            name: name.to_string(),
            lost: None,
            resuming: None,
        }
    }

    /// The stream broke or could not be opened; `last` is the last status seen. Gives the
    /// error to stop with once the controller has been gone for [`RECONNECT_FOR`].
    fn lost(&mut self, why: &str, last: Option<&Value>) -> Result<(), String> {
        match self.lost {
            None => {
                eprintln!(
                    "lost the controller at {} ({why}); trying again for {}s, the rollout goes on without it",
                    self.base,
                    RECONNECT_FOR.as_secs()
                );
                let updated = last.and_then(|s| s["updatedAt"].as_u64());
                self.lost = Some((Instant::now(), updated));
                self.resuming = None;
                Ok(())
            }
            Some((since, _)) if since.elapsed() > RECONNECT_FOR => Err(format!(
                "{why}; the controller at {} has been gone for more than {}s; the rollout goes on without this command (`cutover status {}`)",
                self.base,
                RECONNECT_FOR.as_secs(),
                self.name
            )),
            Some(_) => Ok(()),
        }
    }

    /// A status arrived: after a loss, says the controller is back, then that the rollout
    /// resumed once it moves (or at once if it is done or waits for a person).
    fn seen(&mut self, status: &Value) {
        if let Some((_, updated)) = self.lost.take() {
            eprintln!("regained the controller at {}", self.base);
            self.resuming = Some(updated);
        }
        let Some(before) = self.resuming else {
            return;
        };
        let moved = status["updatedAt"].as_u64() != before;
        let still = status["done"].as_bool() == Some(true)
            || status["waitingForPerson"].as_bool() == Some(true);
        if moved || still {
            eprintln!(
                "{}: the rollout resumed: {}",
                self.name,
                status["description"].as_str().unwrap_or("?")
            );
            self.resuming = None;
        }
    }
}

/// Follows the release's events until it is done, reconnecting while the controller
/// restarts (a stream that ends before the rollout does means the controller went away);
/// gives up after [`RECONNECT_FOR`] without one.
async fn follow_until_done(
    client: &ApiClient,
    name: &str,
    lost: &mut LostController,
    show: &mut dyn FnMut(&Value),
) -> Result<Value, Waited> {
    let mut last: Option<Value> = None;
    loop {
        let mut done = None;
        let followed = client
            .follow(&format!("/v1/releases/{name}/events"), &mut |status| {
                lost.seen(&status);
                show(&status);
                let finished = status["done"].as_bool() == Some(true);
                if finished {
                    done = Some(status);
                    return false;
                }
                last = Some(status);
                true
            })
            .await;
        if let Some(status) = done {
            return Ok(status);
        }
        let why = match followed {
            Ok(_) => "the event stream ended".to_string(),
            Err(ClientError::Unreachable(e)) => short_cause(&e),
            Err(e) => return Err(Waited::Unreachable(e.to_string())),
        };
        lost.lost(&why, last.as_ref())
            .map_err(Waited::Unreachable)?;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// The cause of an unreachable controller without the hint: the lost line has its own.
fn short_cause(message: &str) -> String {
    let cause = message.split("; ").next().unwrap_or(message);
    cause
        .rsplit_once(": ")
        .map_or(cause, |(_, c)| c)
        .to_string()
}

/// Progress output: a redrawn line on a terminal, a line per change in CI.
struct Progress {
    enabled: bool,
    terminal: bool,
    started: Instant,
    last_line: String,
    last: Option<Value>,
    hints: NextStepHint,
}

impl Progress {
    fn new(enabled: bool) -> Progress {
        Progress {
            enabled,
            terminal: std::io::stderr().is_terminal(),
            started: Instant::now(),
            last_line: String::new(),
            last: None,
            hints: NextStepHint::default(),
        }
    }

    fn show(&mut self, status: &Value) {
        self.last = Some(status.clone());
        if !self.enabled {
            return;
        }
        let line = summary_line(status);
        if line != self.last_line {
            if self.terminal {
                let filled = bar_filled(status, 20);
                eprint!(
                    "\r\x1b[2K[{}{}] {line}",
                    "#".repeat(filled),
                    "-".repeat(20 - filled)
                );
            } else {
                eprintln!("[{:>6.1}s] {line}", self.started.elapsed().as_secs_f64());
            }
            self.last_line = line;
        }
        if let Some(hint) = self.hints.next(status) {
            if self.terminal {
                eprintln!();
            }
            eprintln!("{hint}");
        }
    }

    fn finish(&self) {
        if self.enabled && self.terminal && !self.last_line.is_empty() {
            eprintln!();
        }
    }
}

/// How much of a `width`-wide progress bar is filled: the steps done so far, all of it
/// from the moment the candidate is being promoted (and once it is promoted), none
/// after a rollback.
fn bar_filled(status: &Value, width: usize) -> usize {
    let steps = status["steps"].as_u64().unwrap_or(0).max(1) as usize;
    let done = match (status["phase"].as_str(), status["step"].as_u64()) {
        (Some("promoting" | "scalingDown" | "promoted"), _) => steps,
        (_, Some(step)) => (step as usize).min(steps),
        _ => 0,
    };
    (done * width / steps).min(width)
}

/// The command that moves a rollout on, said once per wait: `cutover promote NAME` at a
/// pause that waits for a person, `cutover resume NAME` under a manual pause.
#[derive(Default)]
struct NextStepHint {
    said: Option<String>,
}

impl NextStepHint {
    /// The hint to print now, if this wait has not had it yet.
    fn next(&mut self, status: &Value) -> Option<String> {
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
fn summary_line(status: &Value) -> String {
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
fn status_block(status: &Value) -> String {
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
        let mut hints = NextStepHint::default();
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
                if let Some(hint) = hints.next(status) {
                    emit(&format!("{hint}\n"));
                }
            }
        };
        let mut lost = LostController::new(client.base(), name);
        let followed = tokio::select! {
            followed = follow_until_done(&client, name, &mut lost, &mut show) => followed,
            _ = tokio::signal::ctrl_c() => Err(Waited::Interrupted),
        };
        match followed {
            Ok(_) => exit::OK,
            Err(Waited::Interrupted) => {
                eprintln!("{}", interrupted_text(name));
                exit::INTERRUPTED
            }
            Err(Waited::Unreachable(e)) => {
                eprintln!("error: {e}");
                exit::UNAVAILABLE
            }
            Err(Waited::TimedOut) => exit::TIMED_OUT,
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
    get_and_print("/v1/releases", output, connection, env, list_table)
}

/// The releases as a table whose columns are as wide as their widest cell.
fn list_table(v: &Value) -> String {
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

/// A millisecond timestamp as RFC 3339 in UTC, or a dash when there is none.
fn time_of(ms: &Value) -> String {
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
fn rfc3339(ms: u64) -> String {
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn history_times_are_rfc3339_with_date_and_zone() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        // 2026-12-06T12:20:05.123Z
        assert_eq!(rfc3339(1_796_559_605_123), "2026-12-06T12:20:05Z");
        assert_eq!(rfc3339(951_782_400_000), "2000-02-29T00:00:00Z");
        assert_eq!(time_of(&Value::Null), "-");
    }

    #[test]
    fn the_progress_bar_is_full_from_promotion_on_and_empty_after_a_rollback() {
        let at = |phase: &str, step: Value| json!({"phase": phase, "step": step, "steps": 4});
        assert_eq!(bar_filled(&at("step", json!(2)), 20), 10);
        assert_eq!(bar_filled(&at("promoting", Value::Null), 20), 20);
        assert_eq!(bar_filled(&at("scalingDown", Value::Null), 20), 20);
        assert_eq!(bar_filled(&at("promoted", Value::Null), 20), 20);
        assert_eq!(bar_filled(&at("rolledBack", Value::Null), 20), 0);
    }

    #[test]
    fn the_promote_hint_is_said_once_per_wait() {
        let waiting = json!({"name": "shop", "step": 3, "waitingForPerson": true,
            "paused": false, "done": false, "description": "at step 3 (waiting for promote)"});
        let mut hints = NextStepHint::default();
        let first = hints.next(&waiting).expect("a hint");
        assert!(first.contains("`cutover promote shop`"), "{first}");
        assert_eq!(hints.next(&waiting), None);
    }

    #[test]
    fn a_promoted_release_shows_the_promoted_version_as_stable() {
        let status = json!({"name": "shop", "strategy": "canary", "phase": "promoted",
            "description": "promoted", "weight": 0, "done": true, "outcome": "promoted",
            "previousVersion": "v1",
            "stable": {"version": "v2", "endpoints": ["127.0.0.1:4000"]},
            "candidate": {"version": "v2", "endpoints": []}});
        let block = status_block(&status);
        assert!(
            block.contains("stable     v2 127.0.0.1:4000 (promoted, was v1)"),
            "{block}"
        );
        assert!(!block.contains("not running"), "{block}");
    }
}
