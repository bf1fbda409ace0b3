//! A document as a tree of values that remember where they were written.
//!
//! YAML, TOML and environment overrides all become [`Node`] trees, so interpolation,
//! presets, overrides, deserialization and validation work on one shape and every
//! diagnostic can point at a line and column, whichever format the user wrote.

use crate::diagnostic::{FieldPath, Origin, Segment};

/// A value and where it came from.
#[derive(Clone, Debug, PartialEq)]
pub struct Node {
    /// The value.
    pub value: Value,
    /// Where the value starts.
    pub origin: Origin,
}

/// A map entry: the key keeps its own origin so an unknown key can be pointed at.
#[derive(Clone, Debug, PartialEq)]
pub struct Entry {
    /// The key as written.
    pub key: String,
    /// Where the key was written.
    pub key_origin: Origin,
    /// The value.
    pub value: Node,
}

/// The value of a [`Node`].
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    /// `null`, `~` or an empty value.
    Null,
    /// `true` or `false`.
    Bool(bool),
    /// An integer.
    Int(i64),
    /// A floating-point number.
    Float(f64),
    /// A string.
    Str(String),
    /// Text that came from a whole-value `${VAR}` substitution or an environment
    /// override: it reads as a number, a boolean or null where the field wants one, and
    /// as the exact text where the field wants text (so `${TAG}` = `1.10` stays `1.10` in
    /// an image name, and `${REPLICAS}` = `3` is a number).
    Substituted(String),
    /// A list.
    Seq(Vec<Node>),
    /// A map, in document order.
    Map(Vec<Entry>),
    /// A value the loader set aside after reporting an error in it, so the rest of the
    /// document can still be checked; deserialization treats it as absent.
    Removed,
}

impl Value {
    /// A short name of the value's type for messages: "a string", "a list", ...
    pub fn describe(&self) -> &'static str {
        match self {
            Value::Null | Value::Removed => "nothing",
            Value::Bool(_) => "a boolean",
            Value::Int(_) => "an integer",
            Value::Float(_) => "a number",
            Value::Str(_) | Value::Substituted(_) => "a string",
            Value::Seq(_) => "a list",
            Value::Map(_) => "a map",
        }
    }

    /// The scalar as text, the way a string field reads it: `8080` for the integer 8080.
    pub fn scalar_text(&self) -> Option<String> {
        match self {
            Value::Bool(b) => Some(b.to_string()),
            Value::Int(i) => Some(i.to_string()),
            Value::Float(f) => Some(f.to_string()),
            Value::Str(s) | Value::Substituted(s) => Some(s.clone()),
            _ => None,
        }
    }
}

impl Node {
    /// A node.
    pub fn new(value: Value, origin: Origin) -> Self {
        Node { value, origin }
    }

    /// The entry with this key, if this is a map.
    pub fn entry(&self, key: &str) -> Option<&Entry> {
        match &self.value {
            Value::Map(entries) => entries
                .iter()
                .find(|e| e.key == key && e.value.value != Value::Removed),
            _ => None,
        }
    }

    /// The value of the entry with this key, if this is a map.
    pub fn get(&self, key: &str) -> Option<&Node> {
        self.entry(key).map(|e| &e.value)
    }

    /// A mutable reference to the value under `key`, if this is a map.
    pub fn get_mut(&mut self, key: &str) -> Option<&mut Node> {
        match &mut self.value {
            Value::Map(entries) => entries
                .iter_mut()
                .find(|e| e.key == key)
                .map(|e| &mut e.value),
            _ => None,
        }
    }

    /// The node at `path`, if it exists.
    pub fn at(&self, path: &FieldPath) -> Option<&Node> {
        path.0.iter().try_fold(self, |node, segment| match segment {
            Segment::Key(k) => node.get(k),
            Segment::Index(i) => match &node.value {
                Value::Seq(items) => items.get(*i),
                _ => None,
            },
        })
    }

    /// Where the field at `path` was written: the key's position for a map entry (what a
    /// person looks for), else the value's; for a path that does not exist, the nearest
    /// ancestor that does.
    pub fn origin_of(&self, path: &FieldPath) -> Origin {
        let mut node = self;
        let mut origin = self.origin.clone();
        for segment in &path.0 {
            let next = match segment {
                Segment::Key(k) => node.entry(k).map(|e| (&e.value, e.key_origin.clone())),
                Segment::Index(i) => match &node.value {
                    Value::Seq(items) => items.get(*i).map(|n| (n, n.origin.clone())),
                    _ => None,
                },
            };
            match next {
                Some((n, o)) => {
                    node = n;
                    origin = o;
                }
                None => break,
            }
        }
        origin
    }

    /// Marks the node at `path` as [`Value::Removed`]. Returns whether it existed.
    pub fn remove(&mut self, path: &FieldPath) -> bool {
        let Some((last, parents)) = path.0.split_last() else {
            return false;
        };
        let mut node = self;
        for segment in parents {
            let next = match (segment, &mut node.value) {
                (Segment::Key(k), Value::Map(entries)) => entries
                    .iter_mut()
                    .find(|e| &e.key == k)
                    .map(|e| &mut e.value),
                (Segment::Index(i), Value::Seq(items)) => items.get_mut(*i),
                _ => None,
            };
            match next {
                Some(n) => node = n,
                None => return false,
            }
        }
        let target = match (last, &mut node.value) {
            (Segment::Key(k), Value::Map(entries)) => entries
                .iter_mut()
                .find(|e| &e.key == k)
                .map(|e| &mut e.value),
            (Segment::Index(i), Value::Seq(items)) => items.get_mut(*i),
            _ => None,
        };
        match target {
            Some(n) if n.value != Value::Removed => {
                n.value = Value::Removed;
                true
            }
            _ => false,
        }
    }

    /// Overlays `over` onto `self`: maps merge key by key (recursively), anything else in
    /// `over` replaces what `self` had. This is how a preset meets the fields written
    /// beside `use:`.
    pub fn merge(&mut self, over: Node) {
        match (&mut self.value, over.value) {
            (Value::Map(base), Value::Map(over_entries)) => {
                for entry in over_entries {
                    match base.iter_mut().find(|e| e.key == entry.key) {
                        Some(existing) => existing.value.merge(entry.value),
                        None => base.push(entry),
                    }
                }
            }
            (_, value) => {
                self.value = value;
                self.origin = over.origin;
            }
        }
    }
}

/// Resolves a plain scalar's type as YAML 1.2's core schema does: `null`, `true`, `42`,
/// `0x2a`, `1.5`, `.inf`; anything else stays a string. Used for values that arrive as
/// text: environment variables and whole-value `${VAR}` substitutions.
pub fn resolve_plain_scalar(text: &str) -> Value {
    match text {
        "" | "~" | "null" | "Null" | "NULL" => return Value::Null,
        "true" | "True" | "TRUE" => return Value::Bool(true),
        "false" | "False" | "FALSE" => return Value::Bool(false),
        ".inf" | ".Inf" | ".INF" | "+.inf" | "+.Inf" | "+.INF" => {
            return Value::Float(f64::INFINITY);
        }
        "-.inf" | "-.Inf" | "-.INF" => return Value::Float(f64::NEG_INFINITY),
        ".nan" | ".NaN" | ".NAN" => return Value::Float(f64::NAN),
        _ => {}
    }
    let digits = text.strip_prefix(['+', '-']).unwrap_or(text);
    if !digits.is_empty()
        && digits.bytes().all(|b| b.is_ascii_digit())
        && let Ok(i) = text.parse::<i64>()
    {
        return Value::Int(i);
    }
    if let Some(hex) = text.strip_prefix("0x")
        && let Ok(i) = i64::from_str_radix(hex, 16)
    {
        return Value::Int(i);
    }
    if let Some(oct) = text.strip_prefix("0o")
        && let Ok(i) = i64::from_str_radix(oct, 8)
    {
        return Value::Int(i);
    }
    let looks_numeric = digits
        .bytes()
        .all(|b| b.is_ascii_digit() || matches!(b, b'.' | b'e' | b'E' | b'+' | b'-'))
        && digits.bytes().any(|b| b.is_ascii_digit());
    if looks_numeric && let Ok(f) = text.parse::<f64>() {
        return Value::Float(f);
    }
    Value::Str(text.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_scalars_resolve_like_yaml_core_schema() {
        assert_eq!(resolve_plain_scalar("3"), Value::Int(3));
        assert_eq!(resolve_plain_scalar("-7"), Value::Int(-7));
        assert_eq!(resolve_plain_scalar("0x10"), Value::Int(16));
        assert_eq!(resolve_plain_scalar("1.5"), Value::Float(1.5));
        assert_eq!(resolve_plain_scalar("true"), Value::Bool(true));
        assert_eq!(resolve_plain_scalar(""), Value::Null);
        assert_eq!(resolve_plain_scalar("v1.2"), Value::Str("v1.2".into()));
        assert_eq!(resolve_plain_scalar("30s"), Value::Str("30s".into()));
        assert_eq!(resolve_plain_scalar("e"), Value::Str("e".into()));
    }
}
