//! `${VAR}` interpolation in values, with the syntax of Compose files.
//!
//! | written            | becomes                                             |
//! |--------------------|-----------------------------------------------------|
//! | `${VAR}`, `$VAR`   | the value of VAR; unset: empty, with a warning      |
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

use std::collections::BTreeMap;

use super::node::{Node, Value};
use crate::diagnostic::{Code, Diagnostic, FieldPath};

/// Interpolates every string value under `node` in place, appending problems to `out`.
pub fn interpolate(
    node: &mut Node,
    path: &FieldPath,
    env: &BTreeMap<String, String>,
    out: &mut Vec<Diagnostic>,
) {
    match &mut node.value {
        Value::Str(text) if text.contains('$') => {
            let whole = is_single_substitution(text);
            match expand(text, env) {
                Ok(expanded) => {
                    for var in expanded.unset {
                        out.push(
                            Diagnostic::warning(
                                Code::Interpolation,
                                path.clone(),
                                node.origin.clone(),
                                format!("variable '{var}' is not set; it reads as empty"),
                            )
                            .with_hint(format!("set it, or give a default: ${{{var}:-value}}")),
                        );
                    }
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
                interpolate(item, &path.index(i), env, out);
            }
        }
        Value::Map(entries) => {
            for entry in entries {
                let child = path.key(&entry.key);
                interpolate(&mut entry.value, &child, env, out);
            }
        }
        _ => {}
    }
}

/// The result of expanding one string.
#[derive(Debug, PartialEq)]
pub struct Expanded {
    /// The text with every substitution made.
    pub text: String,
    /// Variables that were used without a value or a default.
    pub unset: Vec<String>,
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
        interpolate(&mut node, &FieldPath::root(), &env(), &mut out);
        assert_eq!(node.value, Value::Substituted("3".into()));
        let mut node = Node::new(
            Value::Str("x${N}".into()),
            crate::diagnostic::Origin::Default,
        );
        interpolate(&mut node, &FieldPath::root(), &env(), &mut out);
        assert_eq!(node.value, Value::Str("x3".into()));
        assert!(out.is_empty());
    }
}
