//! TOML text to a [`Node`] tree, through the `toml` crate's span-keeping parser.

use std::sync::Arc;

use toml::de::{DeTable, DeValue};

use super::budget::{self, Exceeded, LIMITS, Tally};
use super::node::{Entry, Node, Value};
use crate::diagnostic::{Code, Diagnostic, FieldPath, Origin};

/// Parses a TOML document. The parser recovers from errors, so every syntax error in the
/// file is reported. The text is held to the same budgets as YAML: its size before it is
/// parsed, then its values, bytes of text and depth as the tree is built (TOML has no
/// aliases, so nothing expands; the toml crate itself stops nesting at 80 levels).
pub fn parse(source: &Arc<str>, text: &str) -> Result<Node, Vec<Diagnostic>> {
    budget::check_file_size(source, text, &LIMITS).map_err(|d| vec![d])?;
    let lines = LineIndex::new(text);
    let (table, errors) = DeTable::parse_recoverable(text);
    if !errors.is_empty() {
        return Err(errors
            .into_iter()
            .map(|e| {
                let offset = e.span().map(|s| s.start).unwrap_or(0);
                let message = e.message().trim().replace('\n', " ");
                Diagnostic::error(
                    Code::Syntax,
                    FieldPath::root(),
                    lines.origin(source, offset),
                    format!("invalid TOML: {message}"),
                )
            })
            .collect());
    }
    let span = table.span();
    let mut builder = Builder {
        source,
        lines: &lines,
        tally: Tally::default(),
    };
    let origin = lines.origin(source, span.start);
    let value = builder
        .table_value(table.get_ref(), 1, &origin)
        .map_err(|(exceeded, origin)| vec![exceeded.diagnostic(&LIMITS, origin)])?;
    Ok(Node::new(value, origin))
}

/// Builds the tree and counts it against the budgets as it goes.
struct Builder<'a> {
    source: &'a Arc<str>,
    lines: &'a LineIndex<'a>,
    tally: Tally,
}

/// A budget passed, and where.
type OverBudget = (Exceeded, Origin);

impl Builder<'_> {
    fn count(&mut self, bytes: usize, depth: usize, origin: &Origin) -> Result<(), OverBudget> {
        self.tally
            .enter(depth, &LIMITS)
            .and_then(|()| self.tally.add(1, bytes, &LIMITS))
            .map_err(|e| (e, origin.clone()))
    }

    fn table_value(
        &mut self,
        table: &DeTable<'_>,
        depth: usize,
        origin: &Origin,
    ) -> Result<Value, OverBudget> {
        self.count(0, depth, origin)?;
        let mut entries = Vec::with_capacity(table.len());
        for (key, value) in table.iter() {
            let key_origin = self.lines.origin(self.source, key.span().start);
            self.count(key.get_ref().len(), depth, &key_origin)?;
            let value_origin = self.lines.origin(self.source, value.span().start);
            let converted = self.convert(value.get_ref(), depth, &value_origin)?;
            entries.push(Entry {
                key: key.get_ref().to_string(),
                key_origin,
                value: Node::new(converted, value_origin),
            });
        }
        Ok(Value::Map(entries))
    }

    /// `value`, written at `origin` inside a list or map `depth` deep.
    fn convert(
        &mut self,
        value: &DeValue<'_>,
        depth: usize,
        origin: &Origin,
    ) -> Result<Value, OverBudget> {
        Ok(match value {
            DeValue::Array(items) => {
                self.count(0, depth + 1, origin)?;
                let mut nodes = Vec::with_capacity(items.len());
                for item in items.iter() {
                    let item_origin = self.lines.origin(self.source, item.span().start);
                    let converted = self.convert(item.get_ref(), depth + 1, &item_origin)?;
                    nodes.push(Node::new(converted, item_origin));
                }
                Value::Seq(nodes)
            }
            DeValue::Table(table) => self.table_value(table, depth + 1, origin)?,
            scalar => {
                let value = scalar_value(scalar);
                let bytes = match &value {
                    Value::Str(s) => s.len(),
                    _ => 0,
                };
                self.count(bytes, depth, origin)?;
                value
            }
        })
    }
}

/// A TOML scalar as a value (lists and tables are built by [`Builder`]).
fn scalar_value(value: &DeValue<'_>) -> Value {
    match value {
        DeValue::String(s) => Value::Str(s.to_string()),
        DeValue::Integer(i) => {
            let digits = i.as_str().replace('_', "");
            let digits = digits
                .trim_start_matches("0x")
                .trim_start_matches("0o")
                .trim_start_matches("0b");
            i64::from_str_radix(digits, i.radix())
                .map(Value::Int)
                .unwrap_or_else(|_| Value::Str(i.as_str().to_string()))
        }
        DeValue::Float(f) => {
            let text = f.as_str().replace('_', "");
            let parsed = match text.as_str() {
                "inf" | "+inf" => Some(f64::INFINITY),
                "-inf" => Some(f64::NEG_INFINITY),
                "nan" | "+nan" | "-nan" => Some(f64::NAN),
                other => other.parse().ok(),
            };
            parsed
                .map(Value::Float)
                .unwrap_or_else(|| Value::Str(f.as_str().to_string()))
        }
        DeValue::Boolean(b) => Value::Bool(*b),
        DeValue::Datetime(d) => Value::Str(d.to_string()),
        DeValue::Array(_) | DeValue::Table(_) => Value::Null,
    }
}

/// Byte offsets to 1-based line and column (in characters).
struct LineIndex<'a> {
    text: &'a str,
    starts: Vec<usize>,
}

impl<'a> LineIndex<'a> {
    fn new(text: &'a str) -> Self {
        let starts = std::iter::once(0)
            .chain(text.match_indices('\n').map(|(i, _)| i + 1))
            .collect();
        LineIndex { text, starts }
    }

    fn origin(&self, source: &Arc<str>, offset: usize) -> Origin {
        let line = self.starts.partition_point(|&s| s <= offset).max(1);
        let start = self.starts[line - 1];
        let column = self
            .text
            .get(start..offset.min(self.text.len()))
            .map(|s| s.chars().count())
            .unwrap_or(0)
            + 1;
        Origin::File {
            source: source.clone(),
            line: u32::try_from(line).unwrap_or(u32::MAX),
            column: u32::try_from(column).unwrap_or(u32::MAX),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_positions_and_types() {
        let source: Arc<str> = "r.toml".into();
        let node = parse(&source, "a = 1\n[b]\nc = 'x'\nd = [1.5, true]\n").expect("valid");
        assert_eq!(node.get("a").map(|n| &n.value), Some(&Value::Int(1)));
        let b = node.get("b").expect("b");
        let c = b.entry("c").expect("c");
        assert_eq!(
            c.key_origin,
            Origin::File {
                source: source.clone(),
                line: 3,
                column: 1
            }
        );
        assert_eq!(c.value.value, Value::Str("x".into()));
        let d = b.get("d").expect("d");
        assert!(matches!(&d.value, Value::Seq(items) if items.len() == 2));
    }

    #[test]
    fn reports_every_syntax_error() {
        let source: Arc<str> = "r.toml".into();
        let errors = parse(&source, "a = \nb = [1,\n").expect_err("invalid");
        assert!(!errors.is_empty());
        assert!(errors.iter().all(|e| e.code == Code::Syntax));
    }
}
