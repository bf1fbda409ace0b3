//! `cutover`: lint, plan and (in later releases) run blue/green and canary releases.

mod analyze;
mod lint;
mod plan;
mod proxy;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

/// Exit codes shared by every command, so CI can tell outcomes apart.
pub mod exit {
    /// Success: valid, promoted.
    pub const OK: u8 = 0;
    /// Invalid input: a release file with errors, a file that cannot be read.
    pub const INVALID_INPUT: u8 = 2;
    /// A service could not start or be reached (a port in use, a backend down).
    pub const UNAVAILABLE: u8 = 4;
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
    },
    /// Print the steps a release will go through: weight, gate, earliest time.
    Plan {
        /// The release file.
        file: PathBuf,
        /// Output format.
        #[arg(long, value_enum, default_value_t = Output::Text)]
        output: Output,
    },
    /// Backtest a release's analysis on recorded samples: each metric's verdict and the
    /// run's, decided exactly as a rollout would. Exit 0 success, 1 failure, 3 inconclusive
    /// or undecided, 2 invalid input.
    Analyze {
        /// The release file whose `spec.analysis.metrics` to run.
        release: PathBuf,
        /// Samples: CSV (`time,metric,version,value[,requests]`) or JSON.
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
    /// Print the JSON Schema of release files (for editors and CI validators).
    Schema,
    /// Run the traffic-splitting proxy on its own, with the route table from FILE (and
    /// later ones from the controller or `PUT /routes` on the admin listener).
    Proxy {
        /// The proxy's configuration (YAML or TOML): listeners, admin, routes, limits.
        #[arg(long)]
        config: PathBuf,
    },
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
    let code = match cli.command {
        Command::Lint { files, output } => lint::run(&files, output, &environment()),
        Command::Plan { file, output } => plan::run(&file, output, &environment()),
        Command::Analyze {
            release,
            samples,
            metric,
            start,
            output,
        } => analyze::run(&release, &samples, &metric, start, output, &environment()),
        Command::Schema => {
            emit(&cutover_core::schema::release_schema_json());
            exit::OK
        }
        Command::Proxy { config } => proxy::run(&config, &environment()),
    };
    ExitCode::from(code)
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

    /// As [`InputFile::read`], printing the error and giving the exit code for it.
    pub fn read_or_report(path: &Path) -> Result<InputFile, u8> {
        InputFile::read(path).map_err(|message| {
            eprintln!("{message}");
            exit::INVALID_INPUT
        })
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
