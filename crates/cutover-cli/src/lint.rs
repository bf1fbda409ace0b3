//! `cutover lint`.

use std::collections::BTreeMap;
use std::path::PathBuf;

use cutover_core::Diagnostic;
use cutover_core::diagnostic::{Code, FieldPath, Origin};
use cutover_core::load;
use serde::Serialize;

use std::fmt::Write as _;

use crate::failure::{Failure, Outcome};
use crate::{InputFile, Output, emit, exit};

#[derive(Serialize)]
struct FileReport {
    file: String,
    valid: bool,
    errors: usize,
    warnings: usize,
    diagnostics: Vec<Diagnostic>,
}

/// Lints every file, prints every problem, and returns the exit code.
pub fn run(
    files: &[PathBuf],
    output: Output,
    env: &BTreeMap<String, String>,
    sets: &[load::Set],
) -> Outcome {
    let mut reports = Vec::with_capacity(files.len());
    for path in files {
        let name = path.display().to_string();
        let diagnostics = match InputFile::read(path) {
            Ok(input) => load::load_with(input.source(), env, sets).diagnostics,
            Err(message) => {
                let unreadable = Diagnostic::error(
                    Code::Unreadable,
                    FieldPath::root(),
                    Origin::File {
                        source: name.as_str().into(),
                        line: 1,
                        column: 1,
                    },
                    message.trim_start_matches("error: "),
                );
                if output == Output::Text {
                    eprintln!("{message}");
                }
                reports.push(FileReport {
                    file: name,
                    valid: false,
                    errors: 1,
                    warnings: 0,
                    diagnostics: if output == Output::Json {
                        vec![unreadable]
                    } else {
                        Vec::new()
                    },
                });
                continue;
            }
        };
        let errors = diagnostics.iter().filter(|d| d.is_error()).count();
        reports.push(FileReport {
            valid: errors == 0,
            errors,
            warnings: diagnostics.len() - errors,
            file: name,
            diagnostics,
        });
    }
    let code = if reports.iter().all(|r| r.valid) {
        exit::OK
    } else {
        exit::INVALID_INPUT
    };
    let mut text = String::new();
    match output {
        Output::Text => {
            for report in &reports {
                for d in &report.diagnostics {
                    let _ = writeln!(text, "{d}");
                }
                let _ = match (report.errors, report.warnings) {
                    (0, 0) => writeln!(text, "{}: ok", report.file),
                    (0, w) => writeln!(text, "{}: ok, {w} warning{}", report.file, plural(w)),
                    (e, w) => writeln!(
                        text,
                        "{}: invalid, {e} error{}, {w} warning{}",
                        report.file,
                        plural(e),
                        plural(w)
                    ),
                };
            }
        }
        Output::Json => {
            text = serde_json::to_string_pretty(&reports)
                .map_err(|e| Failure::error(code, format!("cannot print the report: {e}")))?;
            text.push('\n');
        }
    }
    emit(&text);
    Ok(code)
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}
