//! `${VAR}` interpolation in values, with the syntax of Compose files.
//!
//! | written            | becomes                                             |
//! |--------------------|-----------------------------------------------------|
//! | `${VAR}`, `$VAR`   | the value of VAR; unset: an error in a release      |
//! | `${VAR:-default}`  | `default` when VAR is unset or empty                |
//! | `${VAR-default}`   | `default` when VAR is unset                         |
//! | `${VAR:?message}`  | an error with `message` when VAR is unset or empty  |
//! | `${VAR?message}`   | an error with `message` when VAR is unset           |
//! | `$$`               | a literal `$`                                       |
//!
//! Defaults may themselves contain `${...}` (up to 16 deep). Only values are interpolated,
//! never keys. A value that is exactly one substitution (`replicas: ${REPLICAS}`) becomes
//! [`Value::Substituted`]: a number where the field wants a number (`3`), the exact text
//! where it wants text (`1.10` stays `1.10`), and absent where it is optional and empty.
//!
//! In a release, a plain `${VAR}` whose variable is unset is an error naming the variable:
//! an unset `VERSION` once named nothing and the rollout shipped it anyway. Write
//! `${VAR:-default}` (or `${VAR-default}`) where an unset variable is fine. The fields that
//! name what runs (the version, the image, a local command's words) are also refused when a
//! set-but-empty variable or an empty default leaves them empty ([`super::required`]).
//! Other documents (the proxy's configuration) keep the lenient reading: a warning, and
//! the value reads as empty.

use std::collections::BTreeMap;

use super::node::{Node, Value};
use crate::diagnostic::{Code, Diagnostic, FieldPath, Origin};

/// What an unset plain `${VAR}` is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unset {
    /// An error, and the fields that name what runs may not come out empty (releases).
    Error,
    /// A warning; the variable reads as empty (other settings documents).
    Warn,
}

/// Interpolates every string value under `node` in place, appending problems to `out`.
pub fn interpolate(
    node: &mut Node,
    path: &FieldPath,
    env: &BTreeMap<String, String>,
    unset: Unset,
    out: &mut Vec<Diagnostic>,
) {
    match &mut node.value {
        Value::Str(text) if text.contains('$') => {
            let whole = is_single_substitution(text);
            match expand(text, env) {
                Ok(expanded) => {
                    report(path, &node.origin, &expanded, unset, out);
                    node.value = if whole {
                        Value::Substituted(expanded.text)
                    } else {
                        Value::Str(expanded.text)
                    };
                }
                Err(message) => out.push(Diagnostic::error(
                    Code::Interpolation,
                    path.clone(),
                    node.origin.clone(),
                    message,
                )),
            }
        }
        Value::Seq(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                interpolate(item, &path.index(i), env, unset, out);
            }
        }
        Value::Map(entries) => {
            for entry in entries {
                let child = path.key(&entry.key);
                interpolate(&mut entry.value, &child, env, unset, out);
            }
        }
        _ => {}
    }
}

/// The diagnostics of one expanded value: unset variables, and (releases) a field that
/// names what runs left empty.
fn report(
    path: &FieldPath,
    origin: &Origin,
    expanded: &Expanded,
    unset: Unset,
    out: &mut Vec<Diagnostic>,
) {
    let fix = |var: &str| {
        format!(
            "set {var}, write ${{{var}:-default}}, or pass --set {}=...",
            super::required::set_key(path)
        )
    };
    for var in &expanded.unset {
        out.push(match unset {
            Unset::Error => Diagnostic::error(
                Code::Interpolation,
                path.clone(),
                origin.clone(),
                format!("variable '{var}' is not set"),
            )
            .with_hint(fix(var)),
            Unset::Warn => Diagnostic::warning(
                Code::Interpolation,
                path.clone(),
                origin.clone(),
                format!("variable '{var}' is not set; it reads as empty"),
            )
            .with_hint(format!("set it, or give a default: ${{{var}:-value}}")),
        });
    }
    if unset == Unset::Warn || !super::required::names_what_runs(path) {
        return;
    }
    for var in &expanded.empty {
        out.push(
            Diagnostic::error(
                Code::Interpolation,
                path.clone(),
                origin.clone(),
                format!("variable '{var}' is set but empty"),
            )
            .with_hint(fix(var)),
        );
    }
    if expanded.text.trim().is_empty() && expanded.unset.is_empty() && expanded.empty.is_empty() {
        out.push(
            Diagnostic::error(
                Code::Interpolation,
                path.clone(),
                origin.clone(),
                "this value is empty after interpolation",
            )
            .with_hint(format!(
                "give the default a value, or pass --set {}=...",
                super::required::set_key(path)
            )),
        );
    }
}

/// The result of expanding one string.
#[derive(Debug, PartialEq)]
pub struct Expanded {
    /// The text with every substitution made.
    pub text: String,
    /// Variables that were used without a value or a default.
    pub unset: Vec<String>,
    /// Plain `${VAR}`s whose variable is set but empty.
    pub empty: Vec<String>,
}

/// Expands the substitutions in `text`. An error is a message naming the problem.
pub fn expand(text: &str, env: &BTreeMap<String, String>) -> Result<Expanded, String> {
    expand_at(text, env, 0)
}

/// Defaults nest (`${A:-${B:-x}}`); deeper than this is an error, not a stack overflow.
const MAX_NESTING: usize = 16;

fn expand_at(text: &str, env: &BTreeMap<String, String>, depth: usize) -> Result<Expanded, String> {
    if depth > MAX_NESTING {
        return Err(format!(
            "'${{...}}' defaults nest more than {MAX_NESTING} deep"
        ));
    }
    let mut out = Expanded {
        text: String::with_capacity(text.len()),
        unset: Vec::new(),
        empty: Vec::new(),
    };
    let mut rest = text;
    while let Some(dollar) = rest.find('$') {
        out.text.push_str(&rest[..dollar]);
        let after = &rest[dollar + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.text.push('$');
            rest = tail;
        } else if let Some(body_and_tail) = after.strip_prefix('{') {
            let close = matching_brace(body_and_tail)
                .ok_or_else(|| format!("unclosed '${{' in '{text}'"))?;
            substitute(&body_and_tail[..close], env, &mut out, depth)?;
            rest = &body_and_tail[close + 1..];
        } else {
            let name_len = after
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(after.len());
            if name_len == 0 || after.starts_with(|c: char| c.is_ascii_digit()) {
                // A lone `$` (say, in a regex) stays as written.
                out.text.push('$');
                rest = after;
            } else {
                substitute(&after[..name_len], env, &mut out, depth)?;
                rest = &after[name_len..];
            }
        }
    }
    out.text.push_str(rest);
    Ok(out)
}

/// The index of the `}` closing an expression whose `{` came just before `text`.
fn matching_brace(text: &str) -> Option<usize> {
    let mut depth = 0usize;
    for (i, c) in text.char_indices() {
        match c {
            '{' => depth += 1,
            '}' if depth == 0 => return Some(i),
            '}' => depth -= 1,
            _ => {}
        }
    }
    None
}

fn substitute(
    body: &str,
    env: &BTreeMap<String, String>,
    out: &mut Expanded,
    depth: usize,
) -> Result<(), String> {
    let name_len = body
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .unwrap_or(body.len());
    let (name, operator) = body.split_at(name_len);
    if name.is_empty() || name.starts_with(|c: char| c.is_ascii_digit()) {
        return Err(format!("'${{{body}}}' does not start with a variable name"));
    }
    let value = env.get(name);
    let empty = value.is_none_or(|v| v.is_empty());
    let (kind, argument) = if let Some(arg) = operator.strip_prefix(":-") {
        ("default-if-empty", arg)
    } else if let Some(arg) = operator.strip_prefix('-') {
        ("default-if-unset", arg)
    } else if let Some(arg) = operator.strip_prefix(":?") {
        ("required-non-empty", arg)
    } else if let Some(arg) = operator.strip_prefix('?') {
        ("required", arg)
    } else if operator.is_empty() {
        ("plain", "")
    } else {
        return Err(format!(
            "'${{{body}}}' is not a substitution; use ${{{name}}}, ${{{name}:-default}} or ${{{name}:?message}}"
        ));
    };
    match (kind, value) {
        ("default-if-empty", _) if empty => expand_into(argument, env, out, depth)?,
        ("default-if-unset", None) => expand_into(argument, env, out, depth)?,
        ("required-non-empty", _) if empty => return Err(required_message(name, argument)),
        ("required", None) => return Err(required_message(name, argument)),
        ("plain", None) => out.unset.push(name.to_string()),
        ("plain", Some(v)) if v.is_empty() => out.empty.push(name.to_string()),
        (_, Some(v)) => out.text.push_str(v),
        (_, None) => {}
    }
    Ok(())
}

fn expand_into(
    text: &str,
    env: &BTreeMap<String, String>,
    out: &mut Expanded,
    depth: usize,
) -> Result<(), String> {
    let inner = expand_at(text, env, depth + 1)?;
    out.text.push_str(&inner.text);
    out.unset.extend(inner.unset);
    out.empty.extend(inner.empty);
    Ok(())
}

fn required_message(name: &str, message: &str) -> String {
    if message.is_empty() {
        format!("required variable '{name}' is not set")
    } else {
        format!("required variable '{name}' is not set: {message}")
    }
}

/// Whether `text` is exactly one `${...}` or `$NAME`, so the result takes a type.
fn is_single_substitution(text: &str) -> bool {
    if let Some(body) = text.strip_prefix("${") {
        return matching_brace(body) == Some(body.len() - 1);
    }
    text.strip_prefix('$').is_some_and(|name| {
        !name.is_empty()
            && !name.starts_with(|c: char| c.is_ascii_digit())
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env() -> BTreeMap<String, String> {
        [("TAG", "v2"), ("EMPTY", ""), ("N", "3")]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[track_caller]
    fn check(input: &str, expected: &str) {
        assert_eq!(
            expand(input, &env()).map(|e| e.text),
            Ok(expected.to_string()),
            "{input}"
        );
    }

    #[test]
    fn compose_forms_expand() {
        check("shop:${TAG}", "shop:v2");
        check("shop:$TAG", "shop:v2");
        check("${MISSING:-v1}", "v1");
        check("${EMPTY:-v1}", "v1");
        check("${EMPTY-v1}", "");
        check("${MISSING-v1}", "v1");
        check("${MISSING:-${TAG}}", "v2");
        check("cost: $$5", "cost: $5");
        check("^/api$", "^/api$");
        check("no variables", "no variables");
    }

    #[test]
    fn unset_plain_variables_are_reported() {
        let e = expand("a${MISSING}b", &env()).expect("expands");
        assert_eq!(e.text, "ab");
        assert_eq!(e.unset, vec!["MISSING".to_string()]);
    }

    #[test]
    fn required_and_malformed_forms_are_errors() {
        assert_eq!(
            expand("${MISSING:?set the image tag}", &env()),
            Err("required variable 'MISSING' is not set: set the image tag".into())
        );
        assert!(expand("${EMPTY:?}", &env()).is_err());
        assert!(expand("${EMPTY?}", &env()).is_ok());
        assert!(expand("${TAG", &env()).is_err());
        assert!(expand("${TAG:+x}", &env()).is_err());
        assert!(expand("${}", &env()).is_err());
    }

    #[test]
    fn whole_value_substitutions_take_a_type() {
        let mut node = Node::new(
            Value::Str("${N}".into()),
            crate::diagnostic::Origin::Default,
        );
        let mut out = Vec::new();
        interpolate(
            &mut node,
            &FieldPath::root(),
            &env(),
            Unset::Error,
            &mut out,
        );
        assert_eq!(node.value, Value::Substituted("3".into()));
        let mut node = Node::new(
            Value::Str("x${N}".into()),
            crate::diagnostic::Origin::Default,
        );
        interpolate(
            &mut node,
            &FieldPath::root(),
            &env(),
            Unset::Error,
            &mut out,
        );
        assert_eq!(node.value, Value::Str("x3".into()));
        assert!(out.is_empty());
    }

    fn interpolated(path: &FieldPath, text: &str, unset: Unset) -> (Value, Vec<Diagnostic>) {
        let mut node = Node::new(Value::Str(text.into()), Origin::Default);
        let mut out = Vec::new();
        interpolate(&mut node, path, &env(), unset, &mut out);
        (node.value, out)
    }

    /// Regression (issue 19): `version: ${VERSION}` with VERSION unset read as no version,
    /// and the rollout shipped a version nobody named.
    #[test]
    fn an_unset_variable_is_an_error_naming_it_and_the_fix() {
        let version = FieldPath::of(&["spec", "version"]);
        let (_, out) = interpolated(&version, "${VERSION}", Unset::Error);
        assert_eq!(out.len(), 1, "{out:#?}");
        assert!(out[0].is_error());
        assert_eq!(out[0].message, "variable 'VERSION' is not set");
        assert_eq!(
            out[0].hint.as_deref(),
            Some("set VERSION, write ${VERSION:-default}, or pass --set version=...")
        );
        // Anywhere in a release, not only where a version goes.
        let labels = FieldPath::of(&["metadata", "labels", "team"]);
        let (_, out) = interpolated(&labels, "team-${TEAM}", Unset::Error);
        assert!(
            out[0].is_error() && out[0].message.contains("'TEAM'"),
            "{out:#?}"
        );
        // The lenient reading of other documents stays a warning.
        let (value, out) = interpolated(&labels, "${TEAM}", Unset::Warn);
        assert_eq!(value, Value::Substituted(String::new()));
        assert!(!out[0].is_error());
    }

    #[test]
    fn defaults_and_required_forms_keep_working() {
        let image = FieldPath::of(&["spec", "image"]);
        let (value, out) = interpolated(&image, "app:${MISSING:-v1}", Unset::Error);
        assert_eq!((value, out), (Value::Str("app:v1".into()), Vec::new()));
        let (value, out) = interpolated(&image, "app:${MISSING-v1}", Unset::Error);
        assert_eq!((value, out), (Value::Str("app:v1".into()), Vec::new()));
        let (_, out) = interpolated(&image, "app:${MISSING:?set the tag}", Unset::Error);
        assert_eq!(
            out[0].message,
            "required variable 'MISSING' is not set: set the tag"
        );
    }

    #[test]
    fn what_names_what_runs_cannot_come_out_empty() {
        let version = FieldPath::of(&["spec", "version"]);
        let (_, out) = interpolated(&version, "${EMPTY}", Unset::Error);
        assert_eq!(out[0].message, "variable 'EMPTY' is set but empty");
        let (_, out) = interpolated(&version, "${MISSING:-}", Unset::Error);
        assert_eq!(out[0].message, "this value is empty after interpolation");
        let argument =
            FieldPath::of(&["spec", "backend", "local", "candidate", "command"]).index(3);
        let (_, out) = interpolated(&argument, "--app-version=${EMPTY}", Unset::Error);
        assert!(out[0].is_error(), "{out:#?}");
        assert!(
            out[0]
                .hint
                .as_deref()
                .is_some_and(|h| h.contains("--set spec.backend.local.candidate.command[3]=...")),
            "{out:#?}"
        );
        // Elsewhere an empty value is absent, as documented.
        let replicas = FieldPath::of(&["spec", "replicas"]);
        let (value, out) = interpolated(&replicas, "${EMPTY}", Unset::Error);
        assert_eq!(
            (value, out),
            (Value::Substituted(String::new()), Vec::new())
        );
    }
}
