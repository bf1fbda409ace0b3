//! A command's failure as a value: what to tell the person and the exit code. Commands
//! return it and `main` prints it, once, on standard error; nothing below `main` prints
//! an error and exits.

use std::fmt::Display;

/// What a command that could not do its job prints on standard error, and its exit code
/// (one of [`crate::exit`]).
#[derive(Debug)]
pub struct Failure {
    /// The lines to print, in order: `error: ...`, a release file's diagnostics, hints.
    lines: Vec<String>,
    /// The process's exit code.
    exit_code: u8,
}

/// What a command ends with: its exit code (0, or an outcome such as "rolled back" that
/// it has reported itself), or a failure for `main` to print.
pub type Outcome = Result<u8, Failure>;

impl Failure {
    /// `error: {message}`, exiting with `exit_code`.
    pub fn error(exit_code: u8, message: impl Display) -> Failure {
        Failure {
            lines: vec![format!("error: {message}")],
            exit_code,
        }
    }

    /// Lines printed as they are (a release file's diagnostics, each with its location and
    /// hint), exiting with `exit_code`.
    pub fn lines<T: Display>(exit_code: u8, lines: impl IntoIterator<Item = T>) -> Failure {
        Failure {
            lines: lines.into_iter().map(|l| l.to_string()).collect(),
            exit_code,
        }
    }

    /// The same failure with `line` printed after what it says already.
    #[must_use]
    pub fn then(mut self, line: impl Display) -> Failure {
        self.lines.push(line.to_string());
        self
    }

    /// The exit code.
    pub fn exit_code(&self) -> u8 {
        self.exit_code
    }

    /// Prints the failure on standard error: only `main` calls this.
    pub fn print(&self) {
        for line in &self.lines {
            eprintln!("{line}");
        }
    }
}
