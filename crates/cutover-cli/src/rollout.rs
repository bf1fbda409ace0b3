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
use crate::failure::{Failure, Outcome};
use crate::{InputFile, Output, emit, exit, runtime};

mod follow;
use follow::{LostController, Waited, follow_until_done, interrupted_text};
pub(crate) use follow::{WaitEnd, wait_for_end};
mod render;
use render::{NextStepHint, list_table, status_block, summary_line, time_of};
#[cfg(test)]
mod tests;

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

/// The API client and a runtime to drive it, or why not.
pub(crate) fn session(
    connection: &ConnectionArgs,
    env: &BTreeMap<String, String>,
) -> Result<(ApiClient, tokio::runtime::Runtime), Failure> {
    let client = ApiClient::from_settings(connection, env).map_err(|e| report(&e))?;
    Ok((client, runtime()?))
}

/// A client error, with a release file's diagnostics as the API gave them.
fn report(error: &ClientError) -> Failure {
    let mut failure = Failure::error(error.exit_code(), error);
    if let ClientError::Api { diagnostics, .. } = error {
        for d in diagnostics {
            let message = d["message"].as_str().unwrap_or_default();
            let at = &d["origin"];
            failure = failure.then(format!(
                "  {}:{}:{}: {}: {message}",
                at["file"].as_str().unwrap_or("release"),
                at["line"],
                at["column"],
                d["path"].as_str().unwrap_or_default()
            ));
            if let Some(hint) = d["hint"].as_str() {
                failure = failure.then(format!("    hint: {hint}"));
            }
        }
    }
    failure
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

/// A release file read, loaded with this environment and `--set`, and encoded for the
/// API: everything `run` checks before it contacts the controller.
struct Submission {
    /// The file's name, for the controller's messages.
    file_name: String,
    /// The release's name.
    name: String,
    /// `spec.stableVersion` and `spec.version` as the file gives them.
    file_versions: (Option<String>, Option<String>),
    /// The release as JSON.
    body: Vec<u8>,
}

impl Submission {
    /// Reads and checks `file`. Interpolation and overrides happen here, with this
    /// environment (CI's) and the `--set` arguments, and every problem (an unset
    /// `${VERSION}`, say) is reported against the file as written, before anything starts.
    fn prepare(
        file: &Path,
        env: &BTreeMap<String, String>,
        sets: &[load::Set],
    ) -> Result<Submission, Failure> {
        let input = InputFile::open(file)?;
        let release = match load::load_release_with(input.source(), env, sets) {
            Ok((release, warnings)) => {
                for w in warnings {
                    eprintln!("{w}");
                }
                release
            }
            Err(diagnostics) => return Err(Failure::lines(exit::INVALID_INPUT, diagnostics)),
        };
        let body = serde_json::to_vec(&release).map_err(|e| {
            Failure::error(
                exit::INVALID_INPUT,
                format!("cannot encode the release: {e}"),
            )
        })?;
        Ok(Submission {
            file_name: input.name,
            name: release.metadata.name.clone(),
            file_versions: (
                release.spec.stable_version.clone(),
                release.spec.version.clone(),
            ),
            body,
        })
    }
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
) -> Outcome {
    let Submission {
        file_name,
        name,
        file_versions,
        body,
    } = Submission::prepare(file, env, sets)?;
    let (client, runtime) = session(connection, env)?;
    let started = Instant::now();
    runtime.block_on(async {
        let submitted = client
            .post(
                "/v1/releases",
                body,
                &[
                    ("content-type", "application/json".to_string()),
                    ("x-cutover-filename", format!("{file_name}.json")),
                ],
            )
            .await;
        let status = match submitted {
            Ok(status) => status,
            Err(e) => {
                let failure = report(&e);
                if output == Output::Json {
                    let code = failure.exit_code();
                    let report = refused_report(&client, &name, &e, code, &file_versions).await;
                    print_report(&RunReport {
                        duration_seconds: started.elapsed().as_secs_f64(),
                        ..report
                    });
                }
                return Err(failure);
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
            return Ok(exit::OK);
        }
        let end = wait_for_end(&client, &name, timeout, output == Output::Text).await;
        print_run_end(&name, &end, output, started, &client);
        end.into_outcome()
    })
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

/// `cutover status NAME [--watch]`.
pub fn status(
    name: &str,
    watch: bool,
    output: Output,
    connection: &ConnectionArgs,
    env: &BTreeMap<String, String>,
) -> Outcome {
    if !watch {
        let path = format!("/v1/releases/{name}");
        return get_and_print(&path, output, connection, env, status_block);
    }
    let (client, runtime) = session(connection, env)?;
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
            Ok(_) => Ok(exit::OK),
            Err(Waited::Interrupted) => {
                Err(Failure::lines(exit::INTERRUPTED, [interrupted_text(name)]))
            }
            Err(Waited::Unreachable(e)) => Err(Failure::error(exit::UNAVAILABLE, e)),
            Err(Waited::TimedOut) => Ok(exit::TIMED_OUT),
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
) -> Outcome {
    let (client, runtime) = session(connection, env)?;
    runtime.block_on(async {
        match client.post(&verb.path(name), Vec::new(), &[]).await {
            Ok(status) => {
                print(output, &status, |s| format!("{}\n", summary_line(s)));
                Ok(exit::OK)
            }
            Err(e) => Err(report(&e)),
        }
    })
}

/// `cutover history NAME`.
pub fn history(
    name: &str,
    output: Output,
    connection: &ConnectionArgs,
    env: &BTreeMap<String, String>,
) -> Outcome {
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
pub fn list(
    output: Output,
    connection: &ConnectionArgs,
    env: &BTreeMap<String, String>,
) -> Outcome {
    get_and_print("/v1/releases", output, connection, env, list_table)
}

fn get_and_print(
    path: &str,
    output: Output,
    connection: &ConnectionArgs,
    env: &BTreeMap<String, String>,
    text: impl Fn(&Value) -> String,
) -> Outcome {
    let (client, runtime) = session(connection, env)?;
    runtime.block_on(async {
        match client.get(path).await {
            Ok(value) => {
                print(output, &value, text);
                Ok(exit::OK)
            }
            Err(e) => Err(report(&e)),
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
