//! Loading release files: text in, a typed [`Release`] and every diagnostic out.
//!
//! The layers, lowest first: the types' defaults, the preset named by
//! `strategy: {use: PRESET}`, the file (YAML or TOML) with its `${VAR}` interpolated,
//! then `CUTOVER_`-prefixed environment variables and `--set KEY=VALUE` arguments (in that
//! order), which may override anything, including what a preset brought in. Override
//! values are taken literally, not interpolated.
//! Every layer works on [`node::Node`] trees that remember where each value was written,
//! which is what lets a problem anywhere be reported as `file:line:column`.
//!
//! Pure: the caller passes the text and the environment in; nothing here reads a file or
//! the process environment.

pub mod budget;
mod de;
mod env;
mod interpolate;
pub mod node;
mod preset;
mod required;
mod set;
mod toml;
mod yaml;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use serde::de::DeserializeOwned;

pub use env::PREFIX as ENV_PREFIX;
pub use interpolate::{Expanded, expand};
pub use preset::{PRESETS, preset_names, preset_text};
pub use set::{Set, SetError};

use crate::diagnostic::{Code, Diagnostic, FieldPath, Origin, did_you_mean};
use crate::spec::{
    AnalysisSpec, GuardrailSpec, HooksSpec, NotificationDefaults, NotificationSpec, Release,
    StrategyDocument, StrategySpec, TrafficSpec,
};
use node::{Node, Value};

/// The text formats a release file may be written in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// YAML 1.2.
    Yaml,
    /// TOML 1.0.
    Toml,
}

impl Format {
    /// The format a file name implies: `.toml` is TOML, anything else YAML.
    pub fn from_path(path: &Path) -> Format {
        match path.extension().and_then(|e| e.to_str()) {
            Some(ext) if ext.eq_ignore_ascii_case("toml") => Format::Toml,
            _ => Format::Yaml,
        }
    }
}

/// A document's text and the name to show in messages.
#[derive(Clone, Copy, Debug)]
pub struct Source<'a> {
    /// The file name as the user gave it.
    pub name: &'a str,
    /// The whole text.
    pub text: &'a str,
    /// How to read it.
    pub format: Format,
}

/// The two kinds of document cutover reads.
#[derive(Clone, Debug, PartialEq)]
pub enum Document {
    /// A release (`kind: Release`).
    Release(Box<Release>),
    /// A strategy preset (`kind: Strategy`).
    Strategy(Box<StrategyDocument>),
}

/// What loading produced: the document if it could be built without errors, and every
/// diagnostic (errors and warnings), in file order.
#[derive(Clone, Debug)]
pub struct Loaded {
    /// The document; `None` when any diagnostic is an error.
    pub document: Option<Document>,
    /// Every problem found.
    pub diagnostics: Vec<Diagnostic>,
}

impl Loaded {
    /// Whether any diagnostic is an error.
    pub fn has_errors(&self) -> bool {
        self.diagnostics.iter().any(Diagnostic::is_error)
    }
}

/// Loads a release or strategy document, reporting every problem.
///
/// `env` is the process environment (or any map standing for it): it feeds both `${VAR}`
/// interpolation and `CUTOVER_` overrides.
pub fn load(source: Source<'_>, env: &BTreeMap<String, String>) -> Loaded {
    load_with(source, env, &[])
}

/// As [`load`], with `--set KEY=VALUE` arguments applied last (over the file, the preset
/// and `CUTOVER_` variables).
pub fn load_with(source: Source<'_>, env: &BTreeMap<String, String>, sets: &[Set]) -> Loaded {
    let mut overrides = env::from_env(env);
    overrides.extend(sets.iter().map(Set::to_override));
    load_document(source, env, &overrides, true)
}

/// Loads a release that was resolved already (interpolated and overridden where it was
/// read, as `cutover run` sends it to the controller): the same checks as [`load`], with
/// no `${VAR}` interpolation and no `CUTOVER_` overrides, so `$` in a value stays `$`.
pub fn load_release_resolved(
    source: Source<'_>,
) -> Result<(Release, Vec<Diagnostic>), Vec<Diagnostic>> {
    release_of(source, load_document(source, &BTreeMap::new(), &[], false))
}

fn load_document(
    source: Source<'_>,
    env: &BTreeMap<String, String>,
    overrides: &[env::Override],
    interpolate: bool,
) -> Loaded {
    let name: Arc<str> = source.name.into();
    let parsed = match source.format {
        Format::Yaml => yaml::parse(&name, source.text).map_err(|d| vec![d]),
        Format::Toml => toml::parse(&name, source.text),
    };
    let mut root = match parsed {
        Ok(root) => root,
        Err(mut diagnostics) => {
            diagnostics.sort_by_key(|d| order(&d.origin));
            return Loaded {
                document: None,
                diagnostics,
            };
        }
    };
    let mut diagnostics = Vec::new();
    if interpolate {
        interpolate::interpolate(
            &mut root,
            &FieldPath::root(),
            env,
            interpolate::Unset::Error,
            &mut diagnostics,
        );
    }
    let mut removed = Vec::new();
    let mut set_aside = Vec::new();

    let document = match document_kind(&root) {
        Err(d) => {
            diagnostics.push(d);
            None
        }
        Ok(Kind::Release) => {
            diagnostics.extend(env::apply_overrides(
                &mut root,
                overrides,
                env::Pass::PresetChoice,
            ));
            if let Err(d) = preset::resolve(&mut root) {
                diagnostics.push(d);
                removed.push(FieldPath::of(&["spec", "strategy"]));
            }
            // Last, so an override can change what a preset brought in.
            diagnostics.extend(env::apply_overrides(&mut root, overrides, env::Pass::Rest));
            // `--set version=v5` answers "variable 'VERSION' is not set": a value an
            // override replaced is not used, nor are its interpolation's problems.
            diagnostics.retain(|d| {
                d.code != Code::Interpolation
                    || root
                        .at(&d.path)
                        .is_some_and(|n| matches!(n.origin, Origin::File { .. }))
            });
            let empty = required::empty_versions(&root, &diagnostics);
            diagnostics.extend(empty);
            let outcome = de::deserialize_all::<Release>(&root);
            diagnostics.extend(outcome.diagnostics);
            removed.extend(outcome.removed);
            set_aside.extend(outcome.set_aside);
            match outcome.value {
                Some(release) => {
                    let locator = crate::validate::Locator::new(&root, &removed, &set_aside);
                    diagnostics.extend(crate::validate::release(&release, &locator));
                    Some(Document::Release(Box::new(release)))
                }
                None => {
                    // The release as a whole could not be built (a required field is
                    // broken), but its sections may still be checked on their own.
                    let sections = PartialSections::read(&root, &mut set_aside);
                    let locator = crate::validate::Locator::new(&root, &removed, &set_aside);
                    diagnostics.extend(crate::validate::sections(&sections.borrow(), &locator));
                    None
                }
            }
        }
        Ok(Kind::Strategy) => {
            diagnostics.extend(env::apply_overrides(
                &mut root,
                overrides,
                env::Pass::PresetChoice,
            ));
            diagnostics.extend(env::apply_overrides(&mut root, overrides, env::Pass::Rest));
            let outcome = de::deserialize_all::<StrategyDocument>(&root);
            diagnostics.extend(outcome.diagnostics);
            removed.extend(outcome.removed);
            set_aside.extend(outcome.set_aside);
            outcome.value.map(|doc| {
                let locator = crate::validate::Locator::new(&root, &removed, &set_aside);
                diagnostics.extend(crate::validate::strategy_document(&doc, &locator));
                Document::Strategy(Box::new(doc))
            })
        }
    };
    diagnostics.sort_by_key(|d| order(&d.origin));
    let has_errors = diagnostics.iter().any(Diagnostic::is_error);
    Loaded {
        document: if has_errors { None } else { document },
        diagnostics,
    }
}

/// Loads a document that must be a release. On success, the release and its warnings.
pub fn load_release(
    source: Source<'_>,
    env: &BTreeMap<String, String>,
) -> Result<(Release, Vec<Diagnostic>), Vec<Diagnostic>> {
    release_of(source, load(source, env))
}

/// As [`load_release`], with `--set KEY=VALUE` arguments applied last.
pub fn load_release_with(
    source: Source<'_>,
    env: &BTreeMap<String, String>,
    sets: &[Set],
) -> Result<(Release, Vec<Diagnostic>), Vec<Diagnostic>> {
    release_of(source, load_with(source, env, sets))
}

/// The release of what was loaded, or every problem (a strategy preset is one).
fn release_of(
    source: Source<'_>,
    loaded: Loaded,
) -> Result<(Release, Vec<Diagnostic>), Vec<Diagnostic>> {
    match loaded.document {
        Some(Document::Release(release)) => Ok((*release, loaded.diagnostics)),
        Some(Document::Strategy(_)) => Err(vec![
            Diagnostic::error(
                Code::InvalidValue,
                FieldPath::of(&["kind"]),
                Origin::File {
                    source: source.name.into(),
                    line: 1,
                    column: 1,
                },
                "this is a strategy preset, not a release",
            )
            .with_hint("refer to it from a release with 'strategy: {use: NAME}'"),
        ]),
        None => Err(loaded.diagnostics),
    }
}

/// Loads any settings document (the proxy's configuration, say) with the same machinery
/// as release files: YAML or TOML, `${VAR}` interpolation, every error with its position
/// and the closest field name. No `CUTOVER_` overrides (those address release fields) and
/// no semantic checks: the caller validates what it loaded.
pub fn load_as<T: DeserializeOwned>(
    source: Source<'_>,
    env: &BTreeMap<String, String>,
) -> Result<(T, Vec<Diagnostic>), Vec<Diagnostic>> {
    let (root, mut diagnostics) = parse_interpolated(source, env)?;
    let outcome = de::deserialize_all::<T>(&root);
    diagnostics.extend(outcome.diagnostics);
    diagnostics.sort_by_key(|d| order(&d.origin));
    match outcome.value {
        Some(value) if !diagnostics.iter().any(Diagnostic::is_error) => Ok((value, diagnostics)),
        _ => Err(diagnostics),
    }
}

/// Loads the controller's notification defaults (`cutover serve --notifications FILE`):
/// as [`load_as`], then the checks a release's `spec.notifications` gets, located in
/// this file.
pub fn load_notification_defaults(
    source: Source<'_>,
    env: &BTreeMap<String, String>,
) -> Result<(NotificationDefaults, Vec<Diagnostic>), Vec<Diagnostic>> {
    let (root, mut diagnostics) = parse_interpolated(source, env)?;
    let outcome = de::deserialize_all::<NotificationDefaults>(&root);
    diagnostics.extend(outcome.diagnostics);
    if let Some(defaults) = &outcome.value {
        let at = crate::validate::Locator::new(&root, &[], &outcome.set_aside);
        diagnostics.extend(crate::validate::notifications(
            &defaults.notifications,
            &FieldPath::of(&["notifications"]),
            &at,
        ));
    }
    diagnostics.sort_by_key(|d| order(&d.origin));
    match outcome.value {
        Some(value) if !diagnostics.iter().any(Diagnostic::is_error) => Ok((value, diagnostics)),
        _ => Err(diagnostics),
    }
}

/// A document's tree, with `${VAR}` interpolated (an unset variable warns).
fn parse_interpolated(
    source: Source<'_>,
    env: &BTreeMap<String, String>,
) -> Result<(Node, Vec<Diagnostic>), Vec<Diagnostic>> {
    let name: Arc<str> = source.name.into();
    let parsed = match source.format {
        Format::Yaml => yaml::parse(&name, source.text).map_err(|d| vec![d]),
        Format::Toml => toml::parse(&name, source.text),
    };
    let mut root = parsed?;
    let mut diagnostics = Vec::new();
    interpolate::interpolate(
        &mut root,
        &FieldPath::root(),
        env,
        interpolate::Unset::Warn,
        &mut diagnostics,
    );
    Ok((root, diagnostics))
}

enum Kind {
    Release,
    Strategy,
}

fn document_kind(root: &Node) -> Result<Kind, Diagnostic> {
    const KINDS: [&str; 2] = ["Release", "Strategy"];
    if !matches!(root.value, Value::Map(_)) {
        return Err(Diagnostic::error(
            Code::InvalidValue,
            FieldPath::root(),
            root.origin.clone(),
            format!(
                "expected a map with apiVersion, kind, metadata and spec, found {}",
                root.value.describe()
            ),
        ));
    }
    let Some(entry) = root.entry("kind") else {
        return Err(Diagnostic::error(
            Code::MissingField,
            FieldPath::root(),
            root.origin.clone(),
            "missing field 'kind'",
        )
        .with_hint("add 'kind: Release' under 'apiVersion'"));
    };
    match entry.value.value.scalar_text().as_deref() {
        Some("Release") => Ok(Kind::Release),
        Some("Strategy") => Ok(Kind::Strategy),
        other => {
            let found = other.unwrap_or_default();
            let mut d = Diagnostic::error(
                Code::InvalidValue,
                FieldPath::of(&["kind"]),
                entry.value.origin.clone(),
                format!("unknown kind '{found}', expected Release or Strategy"),
            );
            d.hint = did_you_mean(found, KINDS);
            Err(d)
        }
    }
}

/// The sections of a release that could be read on their own from a tree whose whole
/// could not.
struct PartialSections {
    traffic: Option<TrafficSpec>,
    strategy: Option<StrategySpec>,
    analysis: Option<AnalysisSpec>,
    guardrails: Option<Vec<GuardrailSpec>>,
    hooks: Option<HooksSpec>,
    notifications: Option<Vec<NotificationSpec>>,
}

impl PartialSections {
    /// Reads each section on its own, adding what was set aside in them to `set_aside`.
    fn read(tree: &Node, set_aside: &mut Vec<FieldPath>) -> Self {
        let spec = FieldPath::of(&["spec"]);
        PartialSections {
            traffic: section(tree, &spec.key("traffic"), set_aside),
            strategy: section(tree, &spec.key("strategy"), set_aside),
            analysis: section(tree, &spec.key("analysis"), set_aside),
            guardrails: section(tree, &spec.key("guardrails"), set_aside),
            hooks: section(tree, &spec.key("hooks"), set_aside),
            notifications: section(tree, &spec.key("notifications"), set_aside),
        }
    }

    fn borrow(&self) -> crate::validate::Sections<'_> {
        crate::validate::Sections {
            traffic: self.traffic.as_ref(),
            strategy: self.strategy.as_ref(),
            analysis: self.analysis.as_ref(),
            guardrails: self.guardrails.as_deref(),
            hooks: self.hooks.as_ref(),
            notifications: self.notifications.as_deref(),
        }
    }
}

/// The part of `tree` at `path` as a `T`, built from what deserializes in it (its problems
/// were reported by the whole document's pass); what was set aside to build it is added to
/// `set_aside`, so checks can keep list indices as written.
fn section<T: DeserializeOwned>(
    tree: &Node,
    path: &FieldPath,
    set_aside: &mut Vec<FieldPath>,
) -> Option<T> {
    tree.at(path)?;
    let outcome = de::deserialize_all_at::<T>(tree.clone(), path);
    for p in outcome.set_aside {
        if !set_aside.contains(&p) {
            set_aside.push(p);
        }
    }
    outcome.value
}

/// Sort key putting file positions first, in order, then environment variables.
fn order(origin: &Origin) -> (u8, Arc<str>, u32, u32) {
    match origin {
        Origin::File {
            source,
            line,
            column,
        } => (0, source.clone(), *line, *column),
        Origin::Env { var } => (1, var.clone(), 0, 0),
        Origin::Flag { arg } => (2, arg.clone(), 0, 0),
        Origin::Default => (3, "".into(), 0, 0),
    }
}
