//! YAML text to a [`Node`] tree, through saphyr (a maintained YAML 1.2 parser that keeps
//! every node's position).

use std::sync::Arc;

use saphyr::{LoadableYamlNode, MarkedYaml, Scalar, YamlData};

use super::budget::{self, LIMITS};
use super::node::{Entry, Node, Value};
use crate::diagnostic::{Code, Diagnostic, FieldPath, Origin};

/// Parses one YAML document. The text is measured against the budgets first
/// ([`budget::measure_yaml`]): no tree is built for a document that is too large, too deep
/// or expands to too much through anchors and aliases. A syntax error is one diagnostic (a
/// YAML parser cannot go on past one); an empty file or several documents are reported
/// too.
pub fn parse(source: &Arc<str>, text: &str) -> Result<Node, Diagnostic> {
    budget::check_file_size(source, text, &LIMITS)?;
    budget::measure_yaml(source, text, &LIMITS).map_err(|over| over.diagnostic)?;
    let docs = MarkedYaml::load_from_str(text).map_err(|e| {
        let marker = e.marker();
        Diagnostic::error(
            Code::Syntax,
            FieldPath::root(),
            file_origin(source, marker.line(), marker.col()),
            format!("invalid YAML: {}", e.info()),
        )
    })?;
    let mut docs = docs.into_iter();
    let Some(doc) = docs.next() else {
        return Err(Diagnostic::error(
            Code::Syntax,
            FieldPath::root(),
            file_origin(source, 1, 0),
            "the file is empty",
        )
        .with_hint("a release starts with 'apiVersion: cutover.dev/v1' and 'kind: Release'"));
    };
    if let Some(extra) = docs.next() {
        return Err(Diagnostic::error(
            Code::Syntax,
            FieldPath::root(),
            file_origin(source, extra.span.start.line(), extra.span.start.col()),
            "the file holds more than one YAML document",
        )
        .with_hint("put each release in its own file"));
    }
    convert(source, &doc, 0)
}

fn file_origin(source: &Arc<str>, line: usize, col: usize) -> Origin {
    budget::yaml_origin(source, line, col)
}

fn convert(source: &Arc<str>, yaml: &MarkedYaml<'_>, depth: usize) -> Result<Node, Diagnostic> {
    let origin = file_origin(source, yaml.span.start.line(), yaml.span.start.col());
    // Measured already; kept so the recursion below is bounded whatever the measurement
    // counted (a tagged value is one level more here).
    if depth > 2 * LIMITS.depth + 2 {
        return Err(budget::Exceeded::Depth.diagnostic(&LIMITS, origin));
    }
    let value = match &yaml.data {
        YamlData::Value(scalar) => scalar_value(scalar),
        YamlData::Representation(text, _, _) => Value::Str(text.to_string()),
        YamlData::Sequence(items) => Value::Seq(
            items
                .iter()
                .map(|item| convert(source, item, depth + 1))
                .collect::<Result<_, _>>()?,
        ),
        YamlData::Mapping(map) => {
            let mut entries = Vec::with_capacity(map.len());
            for (key, value) in map {
                let key_node = convert(source, key, depth + 1)?;
                let Some(key_text) = key_node.value.scalar_text() else {
                    return Err(Diagnostic::error(
                        Code::Syntax,
                        FieldPath::root(),
                        key_node.origin,
                        format!(
                            "a map key must be text, found {}",
                            key_node.value.describe()
                        ),
                    ));
                };
                if key_text == "<<" {
                    return Err(Diagnostic::error(
                        Code::Syntax,
                        FieldPath::root(),
                        key_node.origin,
                        "YAML merge keys ('<<') are not supported",
                    )
                    .with_hint("write the fields out, or use a strategy preset with 'use:'"));
                }
                entries.push(Entry {
                    key: key_text,
                    key_origin: key_node.origin,
                    value: convert(source, value, depth + 1)?,
                });
            }
            Value::Map(entries)
        }
        YamlData::Tagged(_, inner) => return convert(source, inner, depth + 1),
        YamlData::Alias(_) | YamlData::BadValue => {
            return Err(Diagnostic::error(
                Code::Syntax,
                FieldPath::root(),
                origin,
                "this YAML value cannot be read (an unresolved alias or a bad value)",
            ));
        }
    };
    Ok(Node::new(value, origin))
}

fn scalar_value(scalar: &Scalar<'_>) -> Value {
    match scalar {
        Scalar::Null => Value::Null,
        Scalar::Boolean(b) => Value::Bool(*b),
        Scalar::Integer(i) => Value::Int(*i),
        Scalar::FloatingPoint(f) => Value::Float(f.into_inner()),
        Scalar::String(s) => Value::Str(s.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_lines_and_columns_of_keys_and_values() {
        let source: Arc<str> = "r.yaml".into();
        let node = parse(&source, "a:\n  b: 1\n  c: [x, 'y']\n").expect("valid");
        let a = node.entry("a").expect("a");
        assert_eq!(
            a.key_origin,
            Origin::File {
                source: source.clone(),
                line: 1,
                column: 1
            }
        );
        let b = a.value.entry("b").expect("b");
        assert_eq!(
            b.key_origin,
            Origin::File {
                source: source.clone(),
                line: 2,
                column: 3
            }
        );
        assert_eq!(b.value.value, Value::Int(1));
        assert_eq!(
            b.value.origin,
            Origin::File {
                source: source.clone(),
                line: 2,
                column: 6
            }
        );
    }

    #[test]
    fn syntax_errors_and_duplicate_keys_are_located() {
        let source: Arc<str> = "r.yaml".into();
        let err = parse(&source, "a: 1\na: 2\n").expect_err("duplicate key");
        assert_eq!(err.code, Code::Syntax);
        let err = parse(&source, "a: [1, 2\nb: 3\n").expect_err("unclosed");
        assert!(matches!(err.origin, Origin::File { .. }));
        assert!(parse(&source, "").is_err());
        assert!(parse(&source, "a: 1\n---\nb: 2\n").is_err());
    }
}
