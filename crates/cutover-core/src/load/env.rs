//! `CUTOVER_`-prefixed environment variables that override fields of a release file.
//!
//! `CUTOVER_SPEC__REPLICAS=3` sets `spec.replicas`; `__` separates path segments, and a
//! segment matches a field whatever its case or underscores (`PROGRESS_DEADLINE` is
//! `progressDeadline`). A numeric segment indexes a list that exists
//! (`CUTOVER_SPEC__STRATEGY__CANARY__STEPS__0__SETWEIGHT=5`). Values are read as YAML
//! scalars or flow collections, so `3` is a number and `[a, b]` a list. Only variables
//! whose first segment is a top-level key of the document (`SPEC`, `METADATA`, ...) are
//! overrides; `CUTOVER_ADDR` and friends are left to the CLI.

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

/// Applies the overrides of `pass` in `env` to `root`, in the variables' sorted order.
pub fn apply_overrides(
    root: &mut Node,
    env: &BTreeMap<String, String>,
    pass: Pass,
) -> Vec<Diagnostic> {
    let mut diagnostics = Vec::new();
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
        let normalized: Vec<String> = segments.iter().map(|s| normalize_key(s)).collect();
        let chooses_preset = normalized == ["spec", "strategy", "use"];
        if chooses_preset != (pass == Pass::PresetChoice) {
            continue;
        }
        let origin = Origin::Env {
            var: Arc::from(var.as_str()),
        };
        // A list or map (`[a, b]`, `{header: X}`) is read as YAML; anything else is text
        // that reads as a number or boolean where the field wants one, taken literally
        // (no YAML tags, anchors or comments).
        let trimmed = text.trim_start();
        let value = if trimmed.starts_with('[') || trimmed.starts_with('{') {
            match super::yaml::parse(&Arc::from(var.as_str()), text) {
                Ok(node) => relocate(node, &origin),
                Err(_) => Node::new(Value::Substituted(text.clone()), origin.clone()),
            }
        } else {
            Node::new(Value::Substituted(text.clone()), origin.clone())
        };
        if let Err(d) = set_path(root, &segments, value, &origin) {
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
                entries.push(Entry {
                    key: segment.to_lowercase(),
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
        assert!(apply_overrides(&mut root, &env, Pass::Rest).is_empty());
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
        let diagnostics = apply_overrides(&mut root, &env, Pass::Rest);
        assert_eq!(diagnostics.len(), 1);
    }
}
