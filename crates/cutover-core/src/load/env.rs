//! `CUTOVER_`-prefixed environment variables that override fields of a release file.
//!
//! `CUTOVER_SPEC__REPLICAS=3` sets `spec.replicas`; `__` separates path segments, and a
//! segment matches a field whatever its case or underscores (`PROGRESS_DEADLINE` is
//! `progressDeadline`). A numeric segment indexes a list that exists
//! (`CUTOVER_SPEC__STRATEGY__CANARY__STEPS__0__SETWEIGHT=5`). Values are read as YAML
//! scalars or flow collections, so `3` is a number and `[a, b]` a list. Only variables
//! whose first segment is a top-level key of the document (`SPEC`, `METADATA`, ...) are
//! overrides; `CUTOVER_ADDR` and friends are left to the CLI.
//!
//! `--set KEY=VALUE` on the command line ([`super::set::Set`]) is the same machinery with a
//! dotted key, applied after the variables, so the command line wins.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::de::normalize_key;
use super::node::{Entry, Node, Value};
use crate::diagnostic::{Diagnostic, Origin};

/// The prefix of override variables.
pub const PREFIX: &str = "CUTOVER_";

const TOP_LEVEL_KEYS: [&str; 4] = ["apiVersion", "kind", "metadata", "spec"];

/// Which overrides to apply in one pass.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Pass {
    /// Only `CUTOVER_SPEC__STRATEGY__USE`: it must choose the preset before the preset is
    /// resolved.
    PresetChoice,
    /// Every other override, after the preset is resolved, so it can change what the
    /// preset brought in.
    Rest,
}

/// One value put at a path of the document, over what the file says: a `CUTOVER_`
/// variable or a `--set KEY=VALUE` argument.
#[derive(Clone, Debug, PartialEq)]
pub struct Override {
    /// The path's segments as written (`SPEC`, `REPLICAS`; `spec`, `steps`, `0`); a key
    /// matches a field whatever its case or underscores.
    pub segments: Vec<String>,
    /// The value as text, typed as the field wants (see the module's doc).
    pub text: String,
    /// Where it came from, for diagnostics.
    pub origin: Origin,
}

/// The `CUTOVER_` variables of `env` that address a field, in the variables' sorted order.
pub fn from_env(env: &BTreeMap<String, String>) -> Vec<Override> {
    let mut overrides = Vec::new();
    for (var, text) in env {
        let Some(rest) = var.strip_prefix(PREFIX) else {
            continue;
        };
        let segments: Vec<&str> = rest.split("__").collect();
        let is_override = segments.len() > 1
            && TOP_LEVEL_KEYS
                .iter()
                .any(|k| normalize_key(k) == normalize_key(segments[0]));
        if !is_override || segments.iter().any(|s| s.is_empty()) {
            continue;
        }
        overrides.push(Override {
            segments: segments.iter().map(|s| s.to_string()).collect(),
            text: text.clone(),
            origin: Origin::Env {
                var: Arc::from(var.as_str()),
            },
        });
    }
    overrides
}

/// Whether `first` is a top-level key of a document (`spec`, `metadata`, ...).
pub fn is_top_level_key(first: &str) -> bool {
    TOP_LEVEL_KEYS
        .iter()
        .any(|k| normalize_key(k) == normalize_key(first))
}

/// Applies the overrides of `pass` to `root`, in order (a later one wins).
pub fn apply_overrides(root: &mut Node, overrides: &[Override], pass: Pass) -> Vec<Diagnostic> {
    let mut diagnostics = Vec::new();
    for o in overrides {
        let normalized: Vec<String> = o.segments.iter().map(|s| normalize_key(s)).collect();
        let chooses_preset = normalized == ["spec", "strategy", "use"];
        if chooses_preset != (pass == Pass::PresetChoice) {
            continue;
        }
        let origin = &o.origin;
        let name: Arc<str> = Arc::from(origin.to_string().as_str());
        // A list or map (`[a, b]`, `{header: X}`) is read as YAML; anything else is text
        // that reads as a number or boolean where the field wants one, taken literally
        // (no YAML tags, anchors or comments).
        let trimmed = o.text.trim_start();
        let value = if trimmed.starts_with('[') || trimmed.starts_with('{') {
            match super::yaml::parse(&name, &o.text) {
                Ok(node) => relocate(node, origin),
                Err(_) => Node::new(Value::Substituted(o.text.clone()), origin.clone()),
            }
        } else {
            Node::new(Value::Substituted(o.text.clone()), origin.clone())
        };
        let segments: Vec<&str> = o.segments.iter().map(String::as_str).collect();
        if let Err(d) = set_path(root, &segments, value, origin) {
            diagnostics.push(d);
        }
    }
    diagnostics
}

/// Points every position in an override's value at the variable it came from.
fn relocate(mut node: Node, origin: &Origin) -> Node {
    node.origin = origin.clone();
    match &mut node.value {
        Value::Seq(items) => {
            for item in items.iter_mut() {
                *item = relocate(
                    std::mem::replace(item, Node::new(Value::Null, Origin::Default)),
                    origin,
                );
            }
        }
        Value::Map(entries) => {
            for entry in entries.iter_mut() {
                entry.key_origin = origin.clone();
                entry.value = relocate(
                    std::mem::replace(&mut entry.value, Node::new(Value::Null, Origin::Default)),
                    origin,
                );
            }
        }
        _ => {}
    }
    node
}

fn set_path(
    root: &mut Node,
    segments: &[&str],
    value: Node,
    origin: &Origin,
) -> Result<(), Diagnostic> {
    let mut node = root;
    let mut path = crate::diagnostic::FieldPath::root();
    for segment in segments {
        if matches!(node.value, Value::Seq(_)) {
            let Value::Seq(items) = &mut node.value else {
                unreachable!("checked just above");
            };
            let index: usize = segment.parse().map_err(|_| {
                Diagnostic::error(
                    crate::diagnostic::Code::InvalidValue,
                    path.clone(),
                    origin.clone(),
                    format!("'{segment}' must be a list index here"),
                )
            })?;
            let len = items.len();
            node = items.get_mut(index).ok_or_else(|| {
                Diagnostic::error(
                    crate::diagnostic::Code::OutOfRange,
                    path.clone(),
                    origin.clone(),
                    format!("index {index} is past the end of a list of {len}"),
                )
            })?;
            path = path.index(index);
            continue;
        }
        if !matches!(node.value, Value::Map(_)) {
            node.value = Value::Map(Vec::new());
            node.origin = origin.clone();
        }
        let Value::Map(entries) = &mut node.value else {
            unreachable!("made a map just above");
        };
        let wanted = normalize_key(segment);
        let position = match entries.iter().position(|e| normalize_key(&e.key) == wanted) {
            Some(p) => p,
            None => {
                let key = match origin {
                    Origin::Env { .. } => segment.to_lowercase(),
                    _ => (*segment).to_string(),
                };
                entries.push(Entry {
                    key,
                    key_origin: origin.clone(),
                    value: Node::new(Value::Null, origin.clone()),
                });
                entries.len() - 1
            }
        };
        path = path.key(&entries[position].key);
        node = &mut entries[position].value;
    }
    *node = value;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diagnostic::FieldPath;

    fn doc() -> Node {
        super::super::yaml::parse(
            &Arc::from("r.yaml"),
            "spec:\n  replicas: 1\n  strategy:\n    progressDeadline: 5m\n    canary:\n      steps:\n        - setWeight: 10\n",
        )
        .expect("valid")
    }

    #[test]
    fn overrides_match_fields_whatever_the_case() {
        let mut root = doc();
        let env: BTreeMap<String, String> = [
            ("CUTOVER_SPEC__REPLICAS", "3"),
            ("CUTOVER_SPEC__STRATEGY__PROGRESS_DEADLINE", "20m"),
            ("CUTOVER_SPEC__STRATEGY__CANARY__STEPS__0__SETWEIGHT", "5"),
            ("CUTOVER_ADDR", "http://127.0.0.1:9000"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        assert!(apply_overrides(&mut root, &from_env(&env), Pass::Rest).is_empty());
        let replicas = root
            .at(&FieldPath::of(&["spec", "replicas"]))
            .expect("replicas");
        assert_eq!(replicas.value, Value::Substituted("3".into()));
        assert_eq!(
            replicas.origin,
            Origin::Env {
                var: "CUTOVER_SPEC__REPLICAS".into()
            }
        );
        let deadline = root
            .at(&FieldPath::of(&["spec", "strategy", "progressDeadline"]))
            .expect("deadline");
        assert_eq!(deadline.value, Value::Substituted("20m".into()));
        let weight = root
            .at(&FieldPath::of(&["spec", "strategy", "canary", "steps"])
                .index(0)
                .key("setWeight"))
            .expect("weight");
        assert_eq!(weight.value, Value::Substituted("5".into()));
        assert!(root.get("addr").is_none());
    }

    #[test]
    fn an_index_past_the_end_is_reported() {
        let mut root = doc();
        let env: BTreeMap<String, String> = [(
            "CUTOVER_SPEC__STRATEGY__CANARY__STEPS__4__SETWEIGHT".to_string(),
            "5".to_string(),
        )]
        .into_iter()
        .collect();
        let diagnostics = apply_overrides(&mut root, &from_env(&env), Pass::Rest);
        assert_eq!(diagnostics.len(), 1);
    }
}
