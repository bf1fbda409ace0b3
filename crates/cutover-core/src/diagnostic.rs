//! Diagnostics: what is wrong with a release file, where, and how to fix it.
//!
//! Every problem the loader and the validator find becomes one [`Diagnostic`] carrying the
//! field path, the place in the file (or the environment variable) it came from, and a hint
//! where one exists. They are collected, never thrown: a file with three mistakes reports
//! three diagnostics.

use std::fmt;
use std::sync::Arc;

use serde::Serialize;

/// How bad a diagnostic is. Errors make a file invalid; warnings do not.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// The file cannot be used as written.
    Error,
    /// The file works, but probably not as meant.
    Warning,
}

/// Where a value came from.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Origin {
    /// A position in a file: 1-based line and column.
    File {
        /// The file's name as given by the user (or an embedded preset's name).
        source: Arc<str>,
        /// 1-based line.
        line: u32,
        /// 1-based column.
        column: u32,
    },
    /// A `CUTOVER_*` environment variable overriding the file.
    Env {
        /// The variable's name.
        var: Arc<str>,
    },
    /// A `--set KEY=VALUE` argument on the command line overriding the file.
    Flag {
        /// The argument as the user gave it, `--set version=v5`.
        arg: Arc<str>,
    },
    /// A built-in default; no position to show.
    Default,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::File {
                source,
                line,
                column,
            } => write!(f, "{source}:{line}:{column}"),
            Origin::Env { var } => write!(f, "environment variable {var}"),
            Origin::Flag { arg } => f.write_str(arg),
            Origin::Default => f.write_str("default"),
        }
    }
}

impl Serialize for Origin {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = serializer.serialize_map(None)?;
        match self {
            Origin::File {
                source,
                line,
                column,
            } => {
                map.serialize_entry("file", &**source)?;
                map.serialize_entry("line", line)?;
                map.serialize_entry("column", column)?;
            }
            Origin::Env { var } => map.serialize_entry("env", &**var)?,
            Origin::Flag { arg } => map.serialize_entry("flag", &**arg)?,
            Origin::Default => map.serialize_entry("default", &true)?,
        }
        map.end()
    }
}

/// One step of a [`FieldPath`].
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Segment {
    /// A map key or struct field.
    Key(String),
    /// A list index.
    Index(usize),
}

/// A path into a document, displayed as `spec.strategy.canary.steps[2]`.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FieldPath(pub Vec<Segment>);

impl FieldPath {
    /// The document's root.
    pub fn root() -> Self {
        FieldPath(Vec::new())
    }

    /// Builds a path from dotted keys, for tests and validators: `FieldPath::of(&["spec", "port"])`.
    pub fn of(keys: &[&str]) -> Self {
        FieldPath(
            keys.iter()
                .map(|k| Segment::Key((*k).to_string()))
                .collect(),
        )
    }

    /// This path extended by a key.
    pub fn key(&self, key: &str) -> Self {
        let mut next = self.clone();
        next.0.push(Segment::Key(key.to_string()));
        next
    }

    /// This path extended by an index.
    pub fn index(&self, index: usize) -> Self {
        let mut next = self.clone();
        next.0.push(Segment::Index(index));
        next
    }

    /// Whether this is the root.
    pub fn is_root(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether `self` is `other` or lies under it.
    pub fn starts_with(&self, other: &FieldPath) -> bool {
        self.0.starts_with(&other.0)
    }
}

impl fmt::Display for FieldPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            return f.write_str("the document root");
        }
        for (i, segment) in self.0.iter().enumerate() {
            match segment {
                Segment::Key(k) if i == 0 => f.write_str(k)?,
                Segment::Key(k) => write!(f, ".{k}")?,
                Segment::Index(n) => write!(f, "[{n}]")?,
            }
        }
        Ok(())
    }
}

impl Serialize for FieldPath {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

/// The kinds of problem, stable across releases so scripts and tests can match on them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Code {
    /// The file cannot be read at all.
    Unreadable,
    /// The text is not valid YAML or TOML.
    Syntax,
    /// A key the format does not have.
    UnknownField,
    /// A required key is absent.
    MissingField,
    /// A value of the wrong type or form.
    InvalidValue,
    /// `${VAR}` interpolation failed or fell back to an empty string.
    Interpolation,
    /// `strategy.use` names no preset.
    UnknownPreset,
    /// A number outside its allowed range.
    OutOfRange,
    /// Canary weights that go down.
    DecreasingWeight,
    /// An analysis step names a metric that is not defined.
    UndefinedMetric,
    /// Two metrics or guardrails share a name.
    DuplicateName,
    /// A metric is missing a part it needs (a query, a threshold).
    IncompleteMetric,
    /// Settings that contradict each other.
    Conflict,
    /// The steps cannot finish within the progress deadline.
    DeadlineTooShort,
    /// A pause with no duration, or manual promotion: a CI run would block.
    ManualGate,
    /// A setting that has no effect.
    Ignored,
    /// A credential written inline (a header value, a URL's userinfo or key parameter):
    /// it is stored with the release; a `valueFrom` reference keeps it out.
    InlineCredential,
}

/// One problem found in a document.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Diagnostic {
    /// Error or warning.
    pub severity: Severity,
    /// The kind of problem.
    pub code: Code,
    /// What is wrong, lowercase, without the location.
    pub message: String,
    /// The field the problem is about.
    pub path: FieldPath,
    /// Where that field was written.
    pub origin: Origin,
    /// How to fix it, where we can tell.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
}

impl Diagnostic {
    /// An error.
    pub fn error(code: Code, path: FieldPath, origin: Origin, message: impl Into<String>) -> Self {
        Diagnostic {
            severity: Severity::Error,
            code,
            message: message.into(),
            path,
            origin,
            hint: None,
        }
    }

    /// A warning.
    pub fn warning(
        code: Code,
        path: FieldPath,
        origin: Origin,
        message: impl Into<String>,
    ) -> Self {
        Diagnostic {
            severity: Severity::Warning,
            ..Diagnostic::error(code, path, origin, message)
        }
    }

    /// Adds a hint.
    pub fn with_hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    /// Whether this is an error.
    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }
}

impl fmt::Display for Diagnostic {
    /// `error: unknown field 'wieght' at spec.strategy.canary.steps[2] (release.yaml:14:9); did you mean 'weight'?`
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let severity = match self.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        if self.code == Code::Syntax && self.path.is_root() {
            // The parser knows the place, not the field.
            write!(f, "{severity}: {} ({})", self.message, self.origin)?;
        } else {
            write!(
                f,
                "{severity}: {} at {} ({})",
                self.message, self.path, self.origin
            )?;
        }
        if let Some(hint) = &self.hint {
            write!(f, "; {hint}")?;
        }
        Ok(())
    }
}

/// The closest of `candidates` to `word`, if one is close enough to be a likely typo.
///
/// Case is ignored, and a candidate the word is a prefix of counts as close, so `canry`
/// suggests `canary` and `prom` suggests `prometheus`.
pub fn closest<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let lower = word.to_lowercase();
    candidates
        .into_iter()
        .filter_map(|c| {
            let candidate = c.to_lowercase();
            let similarity = strsim::jaro_winkler(&lower, &candidate);
            // Short words are judged by edits: `tsl` is one transposition from `tls`.
            let edits = strsim::damerau_levenshtein(&lower, &candidate);
            let close = similarity >= 0.8 || (edits <= 1 && lower.len() >= 2);
            close.then_some((c, edits, similarity))
        })
        .min_by(|a, b| a.1.cmp(&b.1).then(b.2.total_cmp(&a.2)))
        .map(|(c, _, _)| c)
}

/// `did you mean 'x'?` for the closest candidate, if any.
pub fn did_you_mean<'a>(
    word: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<String> {
    closest(word, candidates).map(|c| format!("did you mean '{c}'?"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_names_path_place_and_hint() {
        let d = Diagnostic::error(
            Code::UnknownField,
            FieldPath::of(&["spec", "strategy", "canary", "steps"]).index(2),
            Origin::File {
                source: "release.yaml".into(),
                line: 14,
                column: 9,
            },
            "unknown field 'wieght'",
        )
        .with_hint("did you mean 'weight'?");
        assert_eq!(
            d.to_string(),
            "error: unknown field 'wieght' at spec.strategy.canary.steps[2] (release.yaml:14:9); did you mean 'weight'?"
        );
    }

    #[test]
    fn suggestions_catch_typos_and_ignore_strangers() {
        assert_eq!(closest("wieght", ["weight", "pause"]), Some("weight"));
        assert_eq!(closest("canry", ["canary", "blueGreen"]), Some("canary"));
        assert_eq!(
            closest("setweight", ["setWeight", "pause"]),
            Some("setWeight")
        );
        assert_eq!(closest("zzz", ["canary", "blueGreen"]), None);
        assert_eq!(closest("tsl", ["address", "tls"]), Some("tls"));
        assert_eq!(closest("x", ["y", "tls"]), None);
    }
}
