//! `cutover`: lint, plan, run and steer blue/green and canary releases.

mod analyze;
mod client;
mod demo;
mod failure;
mod lint;
mod plan;
mod proxy;
mod record;
mod release_objects;
mod rollout;
mod serve;
mod verbs;

/// mimalloc, not the system's allocator: its per-thread free lists serve the proxy's
/// per-request allocations (the request path's future is over 2 KiB, past glibc's
/// per-thread cache) without a lock or a bin search. Together with the request's futures
/// built in their boxes, the proxy's CPU per request fell 2.5 % (`bench/proxy-ab.sh`;
/// `docs/benchmarks.md`, eighth pass); mimalloc's own share measured between 0.3 % and
/// 4.9 % in separate runs. It does not ask for transparent huge pages (`no_thp`, in the
/// workspace's `Cargo.toml`): with them an idle proxy held about 7 MiB more.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use failure::{Failure, Outcome};

/// Exit codes shared by every command, so CI can tell outcomes apart.
pub mod exit {
    /// Success: valid, promoted.
    pub const OK: u8 = 0;
    /// The rollout was rolled back or aborted.
    pub const FAILED: u8 = 1;
    /// `run --wait` gave up waiting (`--timeout`); the rollout goes on.
    pub const TIMED_OUT: u8 = 3;
    /// Invalid input: a release file with errors, a file that cannot be read.
    pub const INVALID_INPUT: u8 = 2;
    /// A service could not start or be reached (a port in use, a backend down).
    pub const UNAVAILABLE: u8 = 4;
    /// Ctrl-C (SIGINT) stopped `run --wait` or `status --watch`; the rollout goes on
    /// (128 + SIGINT, as shells report it).
    pub const INTERRUPTED: u8 = 130;
}

/// cutover: progressive delivery (canary and blue/green) with its own traffic-splitting
/// proxy, for Docker Swarm, Kubernetes and plain processes.
#[derive(Parser, Debug)]
#[command(name = "cutover", version, about, long_about = None, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Check release files (and strategy presets) for mistakes; exit 0 valid, 2 invalid.
    ///
    /// Every problem in every file is reported with file:line:column, the field path and a
    /// suggestion. Warnings (a pause that waits for a person, a setting with no effect) do
    /// not make a file invalid.
    Lint {
        /// Release or strategy files, YAML or TOML (by extension).
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// Output format.
        #[arg(long, value_enum, default_value_t = Output::Text)]
        output: Output,
        /// Set a field over the file, as `run --set` does (repeatable).
        #[arg(long = "set", value_name = "KEY=VALUE")]
        set: Vec<cutover_core::load::Set>,
    },
    /// Print the steps a release will go through: weight, gate, earliest time.
    Plan {
        /// The release file.
        file: PathBuf,
        /// Output format.
        #[arg(long, value_enum, default_value_t = Output::Text)]
        output: Output,
        /// Set a field over the file, as `run --set` does (repeatable).
        #[arg(long = "set", value_name = "KEY=VALUE")]
        set: Vec<cutover_core::load::Set>,
    },
    /// Backtest a release's analysis on recorded samples: each metric's verdict and the
    /// run's, decided exactly as a rollout would. Exit 0 success, 1 failure, 3 inconclusive
    /// or undecided, 2 invalid input.
    Analyze {
        /// The release file whose `spec.analysis.metrics` to run.
        release: PathBuf,
        /// A recording: evidence from `cutover record` (JSON), or summary samples, CSV
        /// (`time,metric,version,value[,requests]`) or JSON.
        #[arg(long)]
        samples: PathBuf,
        /// Only these metrics (by name; repeat or separate with commas). Default: all.
        #[arg(long, value_delimiter = ',')]
        metric: Vec<String>,
        /// When the analysis starts, in the samples' seconds. Default: the first sample.
        #[arg(long)]
        start: Option<f64>,
        /// Output format.
        #[arg(long, value_enum, default_value_t = Output::Text)]
        output: Output,
    },
    /// Record a live proxy's evidence of a release (request and error counts and latency
    /// buckets per second and version) for `cutover analyze --samples`.
    Record {
        /// The proxy's admin listener, e.g. `http://127.0.0.1:9901` (`cutover serve --admin`).
        #[arg(long)]
        proxy: String,
        /// The release.
        #[arg(long)]
        release: String,
        /// The candidate version's name.
        #[arg(long)]
        candidate: String,
        /// The stable version's name.
        #[arg(long)]
        stable: String,
        /// How many past seconds to take (at most what the proxy keeps, `metricsWindow`).
        #[arg(long, default_value_t = 300)]
        seconds: u64,
        /// Keep recording this long (e.g. `10m`), beyond what the proxy keeps.
        #[arg(long = "for")]
        follow: Option<cutover_core::Duration>,
        /// Write the recording here instead of to standard output.
        #[arg(long, short)]
        output: Option<PathBuf>,
    },
    /// Print the JSON Schema of release files (for editors and CI validators).
    Schema,
    /// Print the Kubernetes CustomResourceDefinition of the `Release` resource (YAML), so
    /// releases can be applied as objects: `cutover crd | kubectl apply -f -`.
    Crd,
    /// Run the traffic-splitting proxy on its own, with the route table from FILE (and
    /// later ones from the controller or `PUT /routes` on the admin listener).
    Proxy {
        /// The proxy's configuration (YAML or TOML): listeners, admin, routes, limits.
        #[arg(long)]
        config: PathBuf,
        /// Pull the route table from this controller (`GET /v1/routes`, long-polled),
        /// e.g. `http://10.0.0.5:9900` or `https://...`, for a controller run with
        /// `--no-proxy`.
        #[arg(long)]
        routes_from: Option<String>,
        /// With `--routes-from`: the file holding the controller's edge token (its state
        /// directory's `edge-token`), with which guardrail trips are reported; it allows
        /// nothing else [env: CUTOVER_TOKEN_FILE, or the token in CUTOVER_TOKEN].
        #[arg(long, requires = "routes_from")]
        token_file: Option<PathBuf>,
        /// With an `https://` `--routes-from`: trust only the CA certificates in this PEM
        /// file [env: CUTOVER_CA_FILE].
        #[arg(long, requires = "routes_from")]
        ca_file: Option<PathBuf>,
    },
    /// Run the controller (with the proxy embedded, by default) until SIGINT or SIGTERM.
    Serve(Box<serve::ServeArgs>),
    /// Start a rollout of a release; with --wait, block until it ends. Exit 0 promoted,
    /// 1 rolled back or aborted, 2 invalid input, 3 timed out, 4 controller or backend
    /// unreachable, 130 interrupted by Ctrl-C (the rollout goes on).
    Run {
        /// The release file.
        file: PathBuf,
        /// Wait until the rollout is promoted or rolled back.
        #[arg(long)]
        wait: bool,
        /// Give up waiting after this long (e.g. `15m`); the rollout goes on. Exit 3.
        #[arg(long, requires = "wait")]
        timeout: Option<cutover_core::Duration>,
        /// Output format (`json`: one document at the end, see docs/cli.md).
        #[arg(long, value_enum, default_value_t = Output::Text)]
        output: Output,
        /// Set a field of the release over the file and the environment, by path:
        /// `version=v5` (the release's `spec.version`), `spec.replicas=3`,
        /// `spec.strategy.canary.steps[0].setWeight=5`. Repeatable.
        #[arg(long = "set", value_name = "KEY=VALUE")]
        set: Vec<cutover_core::load::Set>,
        #[command(flatten)]
        connection: client::ConnectionArgs,
    },
    /// Show a release's rollout: phase, weights, steps, each metric against its limit.
    Status {
        /// The release's name.
        name: String,
        /// Follow it live until it ends (Ctrl-C stops following, exit 130; the rollout
        /// goes on).
        #[arg(long)]
        watch: bool,
        /// Output format (`json` with --watch: one document per line per change).
        #[arg(long, value_enum, default_value_t = Output::Text)]
        output: Output,
        #[command(flatten)]
        connection: client::ConnectionArgs,
    },
    /// Finish the current step now: end a pause (timed or waiting for promote, and a
    /// manual pause with it), accept an inconclusive analysis, override a prePromotion
    /// gate that holds. Refused while an analysis is running: wait for its verdict, or use
    /// --full, which promotes at once, skipping every remaining step, analyses included.
    Promote {
        /// The release's name.
        name: String,
        /// Skip every remaining step.
        #[arg(long)]
        full: bool,
        /// Output format.
        #[arg(long, value_enum, default_value_t = Output::Text)]
        output: Output,
        #[command(flatten)]
        connection: client::ConnectionArgs,
    },
    /// Roll back now: all traffic to stable, the candidate removed. Answers once rolled
    /// back (exit 0), or after --timeout says it is still rolling back (exit 3); on a
    /// release already aborted or rolled back it says so (exit 0).
    Abort(verbs::AbortArgs),
    /// Hold the rollout at its current step (failures still roll back).
    Pause(VerbArgs),
    /// Lift a pause; after an inconclusive analysis, run it again.
    Resume(VerbArgs),
    /// Start a rolled-back or aborted release again from the beginning.
    Retry(VerbArgs),
    /// A release's events and earlier rollouts.
    History(VerbArgs),
    /// After a promotion, roll out the version that served before it again, through the
    /// release's strategy (or --full: at once). Exit codes as `run`; exit 2 when there is
    /// nothing to undo.
    Undo(verbs::UndoArgs),
    /// Stop a release's instances and forget it (state, route, logs), so a new `run` of
    /// that name starts afresh. Refused while a rollout runs, unless --force (abort, wait
    /// for the rollback, delete).
    Delete(verbs::DeleteArgs),
    /// Print the output of a release's instances (local backend): the last --tail lines,
    /// or --follow new ones.
    #[command(disable_version_flag = true)]
    Logs(verbs::LogsArgs),
    /// Every release the controller knows, with its phase.
    List {
        /// Output format.
        #[arg(long, value_enum, default_value_t = Output::Text)]
        output: Output,
        #[command(flatten)]
        connection: client::ConnectionArgs,
    },
    /// The whole story in one command, nothing to install: v1 -> v2 promoted by canary
    /// analysis, then v2 -> v3 (5 % errors, slower) rolled back. Under two minutes.
    Demo {
        /// Requests per second of the built-in load generator.
        #[arg(long, default_value_t = 200)]
        rate: u32,
    },
    /// The demo's service (same as `examples/demo-app`).
    #[command(hide = true)]
    DemoApp(demo_app::Args),
}

/// A release name, an output format and where the controller is.
#[derive(clap::Args, Debug)]
struct VerbArgs {
    /// The release's name.
    name: String,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Output::Text)]
    output: Output,
    #[command(flatten)]
    connection: client::ConnectionArgs,
}

/// How results are printed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Output {
    /// For people.
    Text,
    /// For programs: one JSON document on stdout.
    Json,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // The one place a command's failure is printed.
    let outcome = match cli.command {
        // The demo's service answers with its own exit code.
        Command::DemoApp(args) => runtime().map(|runtime| runtime.block_on(demo_app::run(args))),
        command => dispatch(command).map(ExitCode::from),
    };
    match outcome {
        Ok(code) => code,
        Err(failure) => {
            failure.print();
            ExitCode::from(failure.exit_code())
        }
    }
}

/// Runs the command: each parses and checks its arguments into plain values first, then
/// acts, and returns its exit code or its failure.
fn dispatch(command: Command) -> Outcome {
    match command {
        Command::Lint { files, output, set } => lint::run(&files, output, &environment(), &set),
        Command::Plan { file, output, set } => plan::run(&file, output, &environment(), &set),
        Command::Analyze {
            release,
            samples,
            metric,
            start,
            output,
        } => analyze::run(&release, &samples, &metric, start, output, &environment()),
        Command::Record {
            proxy,
            release,
            candidate,
            stable,
            seconds,
            follow,
            output,
        } => record::run(&record::RecordArgs {
            proxy: &proxy,
            release: &release,
            candidate: &candidate,
            stable: &stable,
            seconds,
            follow: follow.map(Into::into),
            output: output.as_deref(),
        }),
        Command::Schema => {
            emit(&cutover_core::schema::release_schema_json());
            Ok(exit::OK)
        }
        Command::Crd => {
            emit(&cutover_kube::crd::release_crd_yaml());
            Ok(exit::OK)
        }
        Command::Proxy {
            config,
            routes_from,
            token_file,
            ca_file,
        } => {
            let routes_from = routes_from.map(|controller| client::ConnectionArgs {
                controller: Some(controller),
                token_file,
                ca_file,
                config: None,
            });
            proxy::run(&config, routes_from.as_ref(), &environment())
        }
        Command::Serve(args) => serve::run(*args, &environment()),
        Command::Run {
            file,
            wait,
            timeout,
            output,
            set,
            connection,
        } => rollout::run(
            &file,
            wait,
            timeout,
            output,
            &connection,
            &environment(),
            &set,
        ),
        Command::Status {
            name,
            watch,
            output,
            connection,
        } => rollout::status(&name, watch, output, &connection, &environment()),
        Command::Promote {
            name,
            full,
            output,
            connection,
        } => rollout::command(
            &name,
            rollout::Verb::Promote { full },
            output,
            &connection,
            &environment(),
        ),
        Command::Abort(args) => verbs::abort(&args, &environment()),
        Command::Pause(v) => verb(v, rollout::Verb::Pause),
        Command::Resume(v) => verb(v, rollout::Verb::Resume),
        Command::Retry(v) => verb(v, rollout::Verb::Retry),
        Command::History(v) => rollout::history(&v.name, v.output, &v.connection, &environment()),
        Command::Undo(args) => verbs::undo(&args, &environment()),
        Command::Delete(args) => verbs::delete(&args, &environment()),
        Command::Logs(args) => verbs::logs(&args, &environment()),
        Command::List { output, connection } => rollout::list(output, &connection, &environment()),
        Command::Demo { rate } => demo::run(rate, &environment()),
        Command::DemoApp(_) => unreachable!("main runs the demo's service itself"),
    }
}

/// A runtime for a command's network work, or why there is none.
pub(crate) fn runtime() -> Result<tokio::runtime::Runtime, Failure> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure::error(exit::UNAVAILABLE, format!("cannot start the runtime: {e}")))
}

fn verb(args: VerbArgs, verb: rollout::Verb) -> Outcome {
    rollout::command(
        &args.name,
        verb,
        args.output,
        &args.connection,
        &environment(),
    )
}

/// The process environment, for `${VAR}` interpolation and `CUTOVER_` overrides.
fn environment() -> BTreeMap<String, String> {
    std::env::vars_os()
        .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
        .collect()
}

/// A file the user named, read whole.
pub struct InputFile {
    /// The path as given, for messages.
    pub name: String,
    /// The text.
    pub text: String,
    /// YAML or TOML, by extension.
    pub format: cutover_core::load::Format,
}

impl InputFile {
    /// Reads `path`; the error names the file and is ready to print.
    pub fn read(path: &Path) -> Result<InputFile, String> {
        let name = path.display().to_string();
        let text =
            std::fs::read_to_string(path).map_err(|e| format!("error: cannot read {name}: {e}"))?;
        Ok(InputFile {
            name,
            text,
            format: cutover_core::load::Format::from_path(path),
        })
    }

    /// As [`InputFile::read`], the error a failure of invalid input.
    pub fn open(path: &Path) -> Result<InputFile, Failure> {
        InputFile::read(path).map_err(|message| Failure::lines(exit::INVALID_INPUT, [message]))
    }

    /// The file as the loader takes it.
    pub fn source(&self) -> cutover_core::load::Source<'_> {
        cutover_core::load::Source {
            name: &self.name,
            text: &self.text,
            format: self.format,
        }
    }
}

/// Writes `text` to stdout. A closed pipe (`cutover plan x | head`) is not an error: the
/// reader has what it wanted.
fn emit(text: &str) {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    if let Err(e) = out.write_all(text.as_bytes()).and_then(|()| out.flush())
        && e.kind() != std::io::ErrorKind::BrokenPipe
    {
        eprintln!("error: cannot write to stdout: {e}");
    }
}
