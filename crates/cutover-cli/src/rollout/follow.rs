//! Following a rollout to its end: `run --wait`, `undo --wait` and `status --watch`, with
//! the progress shown, a controller lost and regained, and Ctrl-C that leaves it running.

use std::io::IsTerminal as _;

use crate::failure::{Failure, Outcome};

use super::{
    ApiClient, ClientError, Duration, Instant, NextStepHint, RECONNECT_FOR, Value, exit,
    summary_line,
};

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
    /// What to tell the person besides the outcome, for `main` to print: the controller
    /// lost for good, or Ctrl-C leaving the rollout running.
    pub failure: Option<Failure>,
}

impl WaitEnd {
    /// The command's end: its exit code, or the failure that says why it stopped.
    pub fn into_outcome(self) -> Outcome {
        match self.failure {
            Some(failure) => Err(failure),
            None => Ok(self.code),
        }
    }
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
    let mut failure = None;
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
            failure = Some(Failure::error(exit::UNAVAILABLE, e));
            (
                "unreachable".to_string(),
                exit::UNAVAILABLE,
                progress.last.clone(),
            )
        }
        Err(Waited::Interrupted) => {
            failure = Some(Failure::lines(exit::INTERRUPTED, [interrupted_text(name)]));
            (
                "interrupted".to_string(),
                exit::INTERRUPTED,
                progress.last.clone(),
            )
        }
    };
    WaitEnd {
        failure,
        outcome,
        code,
        last: last.unwrap_or(Value::Null),
    }
}

pub(super) enum Waited {
    TimedOut,
    Unreachable(String),
    Interrupted,
}

/// What Ctrl-C on `run --wait` or `status --watch` says: only this command stops.
pub(super) fn interrupted_text(name: &str) -> String {
    format!(
        "interrupted: the rollout goes on; follow it with `cutover status {name} --watch`, abort it with `cutover abort {name}`"
    )
}

/// Says, one line each, when the controller is lost, when it answers again and when the
/// rollout is seen moving again; not a line per retry.
pub(super) struct LostController {
    base: String,
    name: String,
    /// Since when the controller has been gone, and the rollout's `updatedAt` then.
    lost: Option<(Instant, Option<u64>)>,
    /// Regained, waiting to see the rollout move: its `updatedAt` before the loss.
    resuming: Option<Option<u64>>,
}

impl LostController {
    pub(super) fn new(base: &str, name: &str) -> LostController {
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
pub(super) async fn follow_until_done(
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
pub(super) fn bar_filled(status: &Value, width: usize) -> usize {
    let steps = status["steps"].as_u64().unwrap_or(0).max(1) as usize;
    let done = match (status["phase"].as_str(), status["step"].as_u64()) {
        (Some("promoting" | "scalingDown" | "promoted"), _) => steps,
        (_, Some(step)) => (step as usize).min(steps),
        _ => 0,
    };
    (done * width / steps).min(width)
}
