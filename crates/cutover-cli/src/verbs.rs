//! The verbs that end or reverse a release: `abort` (answers once rolled back), `undo`
//! (back to the version before the last promotion), `delete` (stop and forget a release),
//! and `logs` (a local-backend instance's output, through the controller's API).

use std::collections::BTreeMap;
use std::io::Write as _;
use std::time::{Duration, Instant};

use clap::Args;
use serde_json::Value;

use crate::client::{ClientError, ConnectionArgs};
use crate::failure::{Failure, Outcome};
use crate::rollout::session;
use crate::{Output, emit, exit};

/// How long `abort` waits for the rollback by default.
const ABORT_WAIT: Duration = Duration::from_secs(60);

/// The longest wait the controller grants one `abort` request.
const ABORT_WAIT_MAX: Duration = Duration::from_secs(60);

/// `cutover abort`.
#[derive(Args, Debug)]
pub struct AbortArgs {
    /// The release's name.
    pub name: String,
    /// Return as soon as the rollback has started, without waiting for it to finish.
    #[arg(long, conflicts_with = "timeout")]
    pub no_wait: bool,
    /// Wait at most this long for the rollback (default and most `60s`); exit 3 if it is
    /// still rolling back then.
    #[arg(long)]
    pub timeout: Option<cutover_core::Duration>,
    /// Output format (`json`: the release's status).
    #[arg(long, value_enum, default_value_t = Output::Text)]
    pub output: Output,
    #[command(flatten)]
    pub connection: ConnectionArgs,
}

/// `cutover undo`.
#[derive(Args, Debug)]
pub struct UndoArgs {
    /// The release's name.
    pub name: String,
    /// Switch all traffic to the previous version at once, skipping the strategy's steps
    /// and analyses (as `promote --full`).
    #[arg(long)]
    pub full: bool,
    /// Wait until the rollout back ends, as `run --wait` does: exit 0 when the previous
    /// version is promoted, 1 when the rollout back is rolled back, 130 on Ctrl-C (the
    /// rollout goes on).
    #[arg(long)]
    pub wait: bool,
    /// Give up waiting after this long (e.g. `15m`); the rollout goes on. Exit 3.
    #[arg(long, requires = "wait")]
    pub timeout: Option<cutover_core::Duration>,
    /// Output format (`json`: the rollout's status, the last one with --wait).
    #[arg(long, value_enum, default_value_t = Output::Text)]
    pub output: Output,
    #[command(flatten)]
    pub connection: ConnectionArgs,
}

/// `cutover delete`.
#[derive(Args, Debug)]
pub struct DeleteArgs {
    /// The release's name.
    pub name: String,
    /// Abort a rollout under way first, wait for its rollback, then delete.
    #[arg(long)]
    pub force: bool,
    #[command(flatten)]
    pub connection: ConnectionArgs,
}

/// `cutover logs`.
#[derive(Args, Debug)]
pub struct LogsArgs {
    /// The release's name.
    pub name: String,
    /// Keep printing new output as it comes (until Ctrl-C, or an hour).
    #[arg(long, short)]
    pub follow: bool,
    /// Only the instances running this version.
    #[arg(long, conflicts_with_all = ["candidate", "stable"])]
    pub version: Option<String>,
    /// Only the candidate's instances.
    #[arg(long, conflicts_with = "stable")]
    pub candidate: bool,
    /// Only the stable version's instances.
    #[arg(long)]
    pub stable: bool,
    /// Lines from the end of each instance's log (at most 10000).
    #[arg(long, default_value_t = 100)]
    pub tail: usize,
    #[command(flatten)]
    pub connection: ConnectionArgs,
}

fn report(error: &ClientError) -> Failure {
    Failure::error(error.exit_code(), error)
}

fn print_json(value: &Value) {
    emit(&format!(
        "{}\n",
        serde_json::to_string_pretty(value).unwrap_or_default()
    ));
}

/// `aborted` or `rolled back (reason)`, for a finished rollout that did not promote.
fn ended(status: &Value) -> String {
    match status["outcome"].as_str() {
        Some("aborted") => "aborted".to_string(),
        _ => format!(
            "rolled back{}",
            status["reason"]
                .as_str()
                .map(|r| format!(" ({r})"))
                .unwrap_or_default()
        ),
    }
}

/// `cutover abort NAME`: answers once the rollout has rolled back (all traffic on
/// stable, the candidate gone), or says it is still rolling back.
pub fn abort(args: &AbortArgs, env: &BTreeMap<String, String>) -> Outcome {
    let (client, runtime) = session(&args.connection, env)?;
    let name = &args.name;
    let limit = args
        .timeout
        .map_or(ABORT_WAIT, |t| Duration::from_millis(t.as_millis()))
        .min(ABORT_WAIT_MAX);
    runtime.block_on(async {
        // A finished rollout is said as it is, not as a refusal of something else.
        let before = match client.get(&format!("/v1/releases/{name}")).await {
            Ok(status) => status,
            Err(e) => return Err(report(&e)),
        };
        if before["done"].as_bool() == Some(true) && before["outcome"] != "promoted" {
            if args.output == Output::Json {
                print_json(&before);
            } else {
                emit(&format!(
                    "{name}: already {}; {} serves all traffic, nothing to abort\n",
                    ended(&before),
                    before["stable"]["version"].as_str().unwrap_or("stable")
                ));
            }
            return Ok(exit::OK);
        }
        let path = if args.no_wait {
            format!("/v1/releases/{name}/abort")
        } else {
            format!("/v1/releases/{name}/abort?wait={}", limit.as_secs().max(1))
        };
        let status = match client.post(&path, Vec::new(), &[]).await {
            Ok(status) => status,
            Err(e) => return Err(report(&e)),
        };
        let done = status["done"].as_bool() == Some(true);
        if args.output == Output::Json {
            print_json(&status);
        } else if done {
            emit(&format!(
                "{name}: {}; {} serves all traffic and the candidate is gone\n",
                ended(&status),
                status["stable"]["version"].as_str().unwrap_or("stable")
            ));
        } else {
            emit(&format!(
                "{name}: still rolling back ({}); `cutover status {name} --watch` follows it, `cutover abort {name}` waits for it\n",
                status["description"].as_str().unwrap_or("rolling back")
            ));
        }
        if done || args.no_wait {
            Ok(exit::OK)
        } else {
            Ok(exit::TIMED_OUT)
        }
    })
}

/// The API path of `verb` on release `name`, with `?flag=true` when a flag is set.
fn verb_path(name: &str, verb: &str, flag: Option<&str>) -> String {
    match flag {
        Some(flag) => format!("/v1/releases/{name}/{verb}?{flag}=true"),
        None => format!("/v1/releases/{name}/{verb}"),
    }
}

/// `cutover undo NAME`.
pub fn undo(args: &UndoArgs, env: &BTreeMap<String, String>) -> Outcome {
    let (client, runtime) = session(&args.connection, env)?;
    let name = &args.name;
    let path = verb_path(name, "undo", args.full.then_some("full"));
    runtime.block_on(async {
        let status = match client.post(&path, Vec::new(), &[]).await {
            Ok(status) => status,
            Err(e) => return Err(report(&e)),
        };
        if args.output == Output::Text {
            eprintln!(
                "undoing {name}: {} -> {} on {} ({})",
                status["stable"]["version"].as_str().unwrap_or("?"),
                status["candidate"]["version"].as_str().unwrap_or("?"),
                client.base(),
                if args.full {
                    "straight switch".to_string()
                } else {
                    format!("{} steps", status["steps"])
                }
            );
        }
        if !args.wait {
            if args.output == Output::Json {
                print_json(&status);
            }
            return Ok(exit::OK);
        }
        // The same wait as `run --wait`: progress, the controller lost and regained,
        // Ctrl-C saying the rollout goes on (130), and run's exit codes.
        let started = Instant::now();
        let end = crate::rollout::wait_for_end(
            &client,
            name,
            args.timeout,
            args.output == Output::Text,
        )
        .await;
        let last = &end.last;
        match end.outcome.as_str() {
            _ if args.output == Output::Json => print_json(last),
            "promoted" => emit(&format!(
                "{name}: undone, {} serves again after {:.1}s\n",
                last["stable"]["version"].as_str().unwrap_or("?"),
                started.elapsed().as_secs_f64()
            )),
            "timedOut" => emit(&format!(
                "{name}: still rolling back to the previous version after the timeout; it goes on (`cutover status {name} --watch`)\n"
            )),
            "unreachable" => emit(&format!("{name}: lost the controller\n")),
            "interrupted" => emit(&format!(
                "{name}: interrupted while {}\n",
                last["description"].as_str().unwrap_or("undoing")
            )),
            _ => emit(&format!(
                "{name}: the rollout back was {}; {} still serves\n",
                ended(last),
                last["stable"]["version"].as_str().unwrap_or("?")
            )),
        }
        end.into_outcome()
    })
}

/// `cutover delete NAME`.
pub fn delete(args: &DeleteArgs, env: &BTreeMap<String, String>) -> Outcome {
    let (client, runtime) = session(&args.connection, env)?;
    let name = &args.name;
    let path = verb_path(name, "delete", args.force.then_some("force"));
    runtime.block_on(async {
        match client.post(&path, Vec::new(), &[]).await {
            Ok(_) => {
                emit(&format!(
                    "deleted {name}: its instances are stopped, its route and state are gone\n"
                ));
                Ok(exit::OK)
            }
            Err(e) => Err(report(&e)),
        }
    })
}

/// `cutover logs NAME`.
pub fn logs(args: &LogsArgs, env: &BTreeMap<String, String>) -> Outcome {
    let mut path = format!("/v1/releases/{}/logs?tail={}", args.name, args.tail);
    if let Some(version) = &args.version {
        // A version name needs no encoding in a URL: one outside the set cannot exist.
        if !cutover_core::validate::is_version_name(version) {
            return Err(Failure::error(
                exit::INVALID_INPUT,
                format!(
                    "'{version}' is not a version name: versions are letters, digits, '_', '.' and '-' (an image tag's grammar); `cutover status {}` lists the versions",
                    args.name
                ),
            ));
        }
        path.push_str(&format!("&version={version}"));
    }
    if args.candidate {
        path.push_str("&slot=candidate");
    }
    if args.stable {
        path.push_str("&slot=stable");
    }
    if args.follow {
        path.push_str("&follow=true");
    }
    let (client, runtime) = session(&args.connection, env)?;
    runtime.block_on(async {
        let result = if args.follow {
            let mut out = std::io::stdout();
            let mut write = |chunk: &[u8]| out.write_all(chunk).and_then(|()| out.flush()).is_ok();
            client.get_text(&path, Some(&mut write)).await
        } else {
            client.get_text(&path, None).await
        };
        match result {
            Ok(text) => {
                emit(&text);
                Ok(exit::OK)
            }
            Err(e) => Err(report(&e)),
        }
    })
}
