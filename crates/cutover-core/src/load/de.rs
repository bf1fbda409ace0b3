//! A serde deserializer over [`Node`] trees that reports every error, not just the first.
//!
//! serde stops at the first error it meets. To report them all, [`deserialize_all`] runs
//! the deserialization, records the error with the path and position where it arose, sets
//! the offending value aside ([`Value::Removed`]) and runs again, until the document goes
//! through or nothing is left to remove. Unknown keys never stop it at all: the struct
//! deserializer knows the field names serde asks for, reports a misspelt key with the
//! closest valid one, and carries on without it.

use std::cell::RefCell;
use std::fmt;

use serde::de::{self, DeserializeOwned, IntoDeserializer, Visitor};

use super::node::{Entry, Node, Value, resolve_plain_scalar};
use crate::diagnostic::{Code, Diagnostic, FieldPath, Origin, Segment, did_you_mean};

/// Deserializes `root` into `T`, collecting every problem. Returns the value if one could
/// be built, every diagnostic, and the paths that were set aside because of errors (so
/// later checks can stay quiet about them).
pub fn deserialize_all<T: DeserializeOwned>(root: &Node) -> Outcome<T> {
    deserialize_all_at(root.clone(), &FieldPath::root())
}

/// What [`deserialize_all`] found.
pub struct Outcome<T> {
    /// The value, if one could be built.
    pub value: Option<T>,
    /// Every problem, in the order found.
    pub diagnostics: Vec<Diagnostic>,
    /// Paths where an error was reported (and the value set aside). Values under them
    /// cannot be trusted for further checks.
    pub removed: Vec<FieldPath>,
    /// Every path set aside to go on, reported or not. A list item among them is missing
    /// from the value, so the items after it moved up one: checks use this to map an
    /// index in the value back to the index as written.
    pub set_aside: Vec<FieldPath>,
}

/// As [`deserialize_all`], for the part of `tree` at `base` (paths in diagnostics stay
/// relative to the document root).
pub fn deserialize_all_at<T: DeserializeOwned>(mut tree: Node, base: &FieldPath) -> Outcome<T> {
    let mut diagnostics: Vec<Diagnostic> = Vec::new();
    // Every path set aside, and those set aside because of an error reported there.
    let mut removed: Vec<FieldPath> = Vec::new();
    let mut reported: Vec<FieldPath> = Vec::new();
    // Each round removes one node, so this ends; the bound keeps a file of thousands of
    // mistakes from taking long.
    for _ in 0..MAX_ROUNDS + 1 {
        let sink = Sink::default();
        let Some(start) = tree.at(base) else {
            break;
        };
        let result = T::deserialize(NodeDe {
            node: start,
            path: base.clone(),
            sink: &sink,
        });
        for d in sink.0.into_inner() {
            if !diagnostics.contains(&d) {
                diagnostics.push(d);
            }
        }
        let error = match result {
            Ok(value) => {
                return Outcome {
                    value: Some(value),
                    diagnostics,
                    removed: reported,
                    set_aside: removed,
                };
            }
            Err(error) => error,
        };
        let (path, origin) = error
            .at
            .clone()
            .unwrap_or_else(|| (base.clone(), start.origin.clone()));
        let consequence = error.consequence
            || error
                .missing_field
                .is_some_and(|field| removed.contains(&path.key(field)));
        if !consequence {
            // A missing field taints only itself: the struct around it is set aside to
            // go on, but what it holds is sound and still worth checking.
            reported.push(match error.missing_field {
                Some(field) => path.key(field),
                None => path.clone(),
            });
            let inner = *error.0;
            let mut diagnostic = Diagnostic::error(inner.code, path.clone(), origin, inner.message);
            diagnostic.hint = inner.hint;
            if !diagnostics.contains(&diagnostic) {
                diagnostics.push(diagnostic);
            }
        }
        if path == *base || !tree.remove(&path) {
            break;
        }
        removed.push(path);
        if removed.len() == MAX_ROUNDS {
            diagnostics.push(Diagnostic::error(
                Code::Syntax,
                base.clone(),
                start_origin(&tree, base),
                format!("stopped after {MAX_ROUNDS} errors; fix these and run again"),
            ));
            break;
        }
    }
    Outcome {
        value: None,
        diagnostics,
        removed: reported,
        set_aside: removed,
    }
}

/// Errors reported for one document at most.
const MAX_ROUNDS: usize = 512;

fn start_origin(tree: &Node, base: &FieldPath) -> Origin {
    tree.at(base)
        .map_or_else(|| tree.origin.clone(), |n| n.origin.clone())
}

/// Diagnostics that do not stop deserialization (unknown keys).
#[derive(Default)]
struct Sink(RefCell<Vec<Diagnostic>>);

/// An error raised while deserializing, located at the innermost node that saw it.
/// Boxed: errors are rare and `Result`s carrying them are everywhere.
#[derive(Debug)]
pub struct DeError(Box<DeErrorInner>);

#[derive(Debug)]
pub struct DeErrorInner {
    code: Code,
    message: String,
    hint: Option<String>,
    missing_field: Option<&'static str>,
    /// The error only follows from a value set aside earlier: counted, not reported.
    consequence: bool,
    at: Option<(FieldPath, Origin)>,
}

impl std::ops::Deref for DeError {
    type Target = DeErrorInner;
    fn deref(&self) -> &DeErrorInner {
        &self.0
    }
}

impl std::ops::DerefMut for DeError {
    fn deref_mut(&mut self) -> &mut DeErrorInner {
        &mut self.0
    }
}

impl DeError {
    fn new(code: Code, message: String) -> Self {
        DeError(Box::new(DeErrorInner {
            code,
            message,
            hint: None,
            missing_field: None,
            consequence: false,
            at: None,
        }))
    }

    fn located(mut self, path: &FieldPath, origin: &Origin) -> Self {
        if self.at.is_none() {
            self.at = Some((path.clone(), origin.clone()));
        }
        self
    }
}

impl fmt::Display for DeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for DeError {}

impl de::Error for DeError {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        DeError::new(Code::InvalidValue, msg.to_string().replace('`', "'"))
    }

    fn invalid_type(unexpected: de::Unexpected<'_>, expected: &dyn de::Expected) -> Self {
        DeError::new(
            Code::InvalidValue,
            format!(
                "expected {}, found {}",
                describe_expected(expected),
                describe_unexpected(&unexpected)
            ),
        )
    }

    fn invalid_value(unexpected: de::Unexpected<'_>, expected: &dyn de::Expected) -> Self {
        let code = match unexpected {
            de::Unexpected::Signed(_) | de::Unexpected::Unsigned(_) => Code::OutOfRange,
            _ => Code::InvalidValue,
        };
        DeError::new(
            code,
            format!(
                "expected {}, found {}",
                describe_expected(expected),
                describe_unexpected(&unexpected)
            ),
        )
    }

    fn unknown_variant(variant: &str, expected: &'static [&'static str]) -> Self {
        let mut error = DeError::new(
            Code::InvalidValue,
            format!(
                "unknown value '{variant}', expected one of: {}",
                expected.join(", ")
            ),
        );
        error.hint = did_you_mean(variant, expected.iter().copied());
        error
    }

    fn unknown_field(field: &str, expected: &'static [&'static str]) -> Self {
        let mut error = DeError::new(Code::UnknownField, format!("unknown field '{field}'"));
        error.hint = did_you_mean(field, expected.iter().copied());
        error
    }

    fn missing_field(field: &'static str) -> Self {
        let mut error = DeError::new(Code::MissingField, format!("missing field '{field}'"));
        error.missing_field = Some(field);
        error
    }
}

/// serde names primitive types the Rust way (`u16`); say what a person would write.
fn describe_expected(expected: &dyn de::Expected) -> String {
    let text = expected.to_string();
    match text.as_str() {
        "u8" => "a whole number from 0 to 255".to_string(),
        "u16" => "a whole number from 0 to 65535".to_string(),
        "u32" => "a whole number from 0 to 4294967295".to_string(),
        "u64" => "a whole number of 0 or more".to_string(),
        "i64" | "i32" => "a whole number".to_string(),
        "f64" | "f32" => "a number".to_string(),
        "a boolean" | "bool" => "true or false".to_string(),
        "a string" => "text".to_string(),
        _ => text.replace("a sequence", "a list"),
    }
}

fn describe_unexpected(unexpected: &de::Unexpected<'_>) -> String {
    match unexpected {
        de::Unexpected::Str(s) => format!("the string '{s}'"),
        de::Unexpected::Signed(i) => format!("{i}"),
        de::Unexpected::Unsigned(u) => format!("{u}"),
        de::Unexpected::Float(f) if f.fract() == 0.0 && f.abs() < 1e15 => format!("{f:.1}"),
        de::Unexpected::Float(f) => format!("{f}"),
        de::Unexpected::Bool(b) => format!("{b}"),
        de::Unexpected::Unit => "nothing".to_string(),
        de::Unexpected::Seq => "a list".to_string(),
        de::Unexpected::Map => "a map".to_string(),
        other => other.to_string(),
    }
}

/// Normalises a key for matching environment overrides to fields: `PROGRESS_DEADLINE`,
/// `progressdeadline` and `progressDeadline` are the same key.
pub fn normalize_key(key: &str) -> String {
    key.chars()
        .filter(|c| *c != '_' && *c != '-')
        .flat_map(char::to_lowercase)
        .collect()
}

struct NodeDe<'a> {
    node: &'a Node,
    path: FieldPath,
    sink: &'a Sink,
}

impl<'a> NodeDe<'a> {
    fn child(&self, node: &'a Node, path: FieldPath) -> NodeDe<'a> {
        NodeDe {
            node,
            path,
            sink: self.sink,
        }
    }

    fn locate<T>(&self, result: Result<T, DeError>) -> Result<T, DeError> {
        result.map_err(|e| e.located(&self.path, &self.node.origin))
    }

    fn type_error(&self, expected: &str) -> DeError {
        DeError::new(
            Code::InvalidValue,
            format!("expected {expected}, found {}", self.node.value.describe()),
        )
        .located(&self.path, &self.node.origin)
    }

    fn live_entries(&self) -> impl Iterator<Item = &'a Entry> {
        let entries: &'a [Entry] = match &self.node.value {
            Value::Map(entries) => entries,
            _ => &[],
        };
        entries.iter().filter(|e| e.value.value != Value::Removed)
    }
}

impl<'de, 'a> de::Deserializer<'de> for NodeDe<'a> {
    type Error = DeError;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        let result = match &self.node.value {
            Value::Null | Value::Removed => visitor.visit_unit(),
            Value::Bool(b) => visitor.visit_bool(*b),
            Value::Int(i) => visitor.visit_i64(*i),
            Value::Float(f) => visitor.visit_f64(*f),
            Value::Str(s) => visitor.visit_str(s),
            Value::Substituted(text) => match resolve_plain_scalar(text) {
                Value::Null => visitor.visit_unit(),
                Value::Bool(b) => visitor.visit_bool(b),
                Value::Int(i) => visitor.visit_i64(i),
                Value::Float(f) => visitor.visit_f64(f),
                _ => visitor.visit_str(text),
            },
            Value::Seq(items) => visitor.visit_seq(SeqAccess {
                de: &self,
                items: items.iter().enumerate(),
            }),
            Value::Map(_) => visitor.visit_map(MapAccess {
                de: &self,
                entries: self.live_entries().map(|e| (e.key.as_str(), e)).collect(),
                next: 0,
            }),
        };
        self.locate(result)
    }

    fn deserialize_str<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        match self.node.value.scalar_text() {
            Some(text) => self.locate(visitor.visit_string(text)),
            None => Err(self.type_error("text")),
        }
    }

    fn deserialize_string<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        self.deserialize_str(visitor)
    }

    fn deserialize_identifier<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        self.deserialize_str(visitor)
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        match &self.node.value {
            Value::Null | Value::Removed => self.locate(visitor.visit_none()),
            // `image: ${TAG}` with TAG unset or empty is no image, not an empty one.
            Value::Substituted(text) if resolve_plain_scalar(text) == Value::Null => {
                self.locate(visitor.visit_none())
            }
            _ => visitor.visit_some(self),
        }
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, DeError> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        match &self.node.value {
            Value::Seq(_) => self.deserialize_any(visitor),
            _ => Err(self.type_error("a list")),
        }
    }

    fn deserialize_map<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        match &self.node.value {
            Value::Map(_) => self.deserialize_any(visitor),
            Value::Null => self.locate(visitor.visit_map(MapAccess {
                de: &self,
                entries: Vec::new(),
                next: 0,
            })),
            _ => Err(self.type_error("a map")),
        }
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, DeError> {
        // `pause:` with nothing after it means `pause: {}`.
        if !matches!(self.node.value, Value::Map(_) | Value::Null) {
            return Err(self.type_error(&format!("a map with the fields {}", fields.join(", "))));
        }
        let mut entries = Vec::new();
        for entry in self.live_entries() {
            let canonical = if fields.contains(&entry.key.as_str()) {
                Some(fields.iter().copied().find(|f| *f == entry.key))
            } else if matches!(entry.key_origin, Origin::Env { .. } | Origin::Flag { .. }) {
                let wanted = normalize_key(&entry.key);
                Some(fields.iter().copied().find(|f| normalize_key(f) == wanted))
            } else {
                None
            }
            .flatten();
            match canonical {
                Some(field) => entries.push((field, entry)),
                None => {
                    let mut d = Diagnostic::error(
                        Code::UnknownField,
                        self.path.clone(),
                        entry.key_origin.clone(),
                        format!("unknown field '{}'", entry.key),
                    );
                    d.hint = did_you_mean(&entry.key, fields.iter().copied())
                        .or_else(|| Some(format!("valid fields here: {}", fields.join(", "))));
                    self.sink.0.borrow_mut().push(d);
                }
            }
        }
        let result = visitor.visit_map(MapAccess {
            de: &self,
            entries,
            next: 0,
        });
        self.locate(result)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, DeError> {
        match &self.node.value {
            Value::Str(tag) | Value::Substituted(tag) => {
                self.locate(visitor.visit_enum(EnumAccess {
                    de: &self,
                    tag,
                    tag_origin: &self.node.origin,
                    value: None,
                    tag_is_key: false,
                }))
            }
            Value::Map(_) => {
                let live: Vec<&Entry> = self.live_entries().collect();
                match live.as_slice() {
                    [entry] => {
                        let result = visitor.visit_enum(EnumAccess {
                            de: &self,
                            tag: &entry.key,
                            tag_origin: &entry.key_origin,
                            value: Some(&entry.value),
                            tag_is_key: true,
                        });
                        self.locate(result)
                    }
                    _ => {
                        let found: Vec<&str> = live.iter().map(|e| e.key.as_str()).collect();
                        let mut error = DeError::new(
                            Code::InvalidValue,
                            format!(
                                "expected exactly one of the keys {}, found {}",
                                variants.join(", "),
                                if found.is_empty() {
                                    "none".to_string()
                                } else {
                                    found.join(", ")
                                }
                            ),
                        );
                        if found.len() > 1 {
                            let in_list = matches!(self.path.0.last(), Some(Segment::Index(_)));
                            error.hint = Some(if in_list {
                                "split them into separate items of the list".to_string()
                            } else {
                                "keep only one of them".to_string()
                            });
                        }
                        // Emptied by an error reported inside it: say nothing more.
                        error.consequence = found.is_empty()
                            && matches!(&self.node.value, Value::Map(all) if !all.is_empty());
                        Err(error.located(&self.path, &self.node.origin))
                    }
                }
            }
            _ => Err(self.type_error(&format!("one of {}", variants.join(", ")))),
        }
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        visitor.visit_unit()
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char
        bytes byte_buf unit unit_struct tuple tuple_struct
    }
}

struct SeqAccess<'s, 'a, I> {
    de: &'s NodeDe<'a>,
    items: I,
}

impl<'de, 'a, I> de::SeqAccess<'de> for SeqAccess<'_, 'a, I>
where
    I: Iterator<Item = (usize, &'a Node)>,
{
    type Error = DeError;

    fn next_element_seed<T: de::DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, DeError> {
        for (index, node) in self.items.by_ref() {
            if node.value == Value::Removed {
                continue;
            }
            let child = self.de.child(node, self.de.path.index(index));
            return seed.deserialize(child).map(Some);
        }
        Ok(None)
    }
}

struct MapAccess<'s, 'a> {
    de: &'s NodeDe<'a>,
    entries: Vec<(&'a str, &'a Entry)>,
    next: usize,
}

impl<'de> de::MapAccess<'de> for MapAccess<'_, '_> {
    type Error = DeError;

    fn next_key_seed<K: de::DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, DeError> {
        let Some((key, entry)) = self.entries.get(self.next) else {
            return Ok(None);
        };
        let key_de: de::value::StrDeserializer<'_, DeError> = key.into_deserializer();
        seed.deserialize(key_de)
            .map(Some)
            .map_err(|e| e.located(&self.de.path.key(key), &entry.key_origin))
    }

    fn next_value_seed<V: de::DeserializeSeed<'de>>(
        &mut self,
        seed: V,
    ) -> Result<V::Value, DeError> {
        let Some((key, entry)) = self.entries.get(self.next) else {
            return Err(DeError::new(
                Code::Syntax,
                "value without a key".to_string(),
            ));
        };
        self.next += 1;
        seed.deserialize(self.de.child(&entry.value, self.de.path.key(key)))
    }
}

struct EnumAccess<'s, 'a> {
    de: &'s NodeDe<'a>,
    tag: &'a str,
    tag_origin: &'a Origin,
    value: Option<&'a Node>,
    /// Whether the tag is a map key (`setWeight: 5`) rather than a string value.
    tag_is_key: bool,
}

impl<'de, 's, 'a> de::EnumAccess<'de> for EnumAccess<'s, 'a> {
    type Error = DeError;
    type Variant = VariantAccess<'s, 'a>;

    fn variant_seed<V: de::DeserializeSeed<'de>>(
        self,
        seed: V,
    ) -> Result<(V::Value, Self::Variant), DeError> {
        let tag_de: de::value::StrDeserializer<'_, DeError> = self.tag.into_deserializer();
        let tag_is_key = self.tag_is_key;
        let variant = seed.deserialize(tag_de).map_err(|mut e| {
            if tag_is_key && e.message.starts_with("unknown value") {
                e.message = e.message.replacen("unknown value", "unknown key", 1);
                e.code = Code::UnknownField;
            }
            e.located(&self.de.path, self.tag_origin)
        })?;
        Ok((
            variant,
            VariantAccess {
                de: self.de,
                tag: self.tag,
                value: self.value,
            },
        ))
    }
}

struct VariantAccess<'s, 'a> {
    de: &'s NodeDe<'a>,
    tag: &'a str,
    value: Option<&'a Node>,
}

impl<'a> VariantAccess<'_, 'a> {
    fn value_de(&self) -> Result<NodeDe<'a>, DeError> {
        match self.value {
            Some(node) => Ok(self.de.child(node, self.de.path.key(self.tag))),
            None => Err(DeError::new(
                Code::InvalidValue,
                format!("'{}' needs a value, written '{}: ...'", self.tag, self.tag),
            )
            .located(&self.de.path, &self.de.node.origin)),
        }
    }
}

impl<'de> de::VariantAccess<'de> for VariantAccess<'_, '_> {
    type Error = DeError;

    fn unit_variant(self) -> Result<(), DeError> {
        match self.value {
            None => Ok(()),
            Some(node) if node.value == Value::Null => Ok(()),
            Some(node) => Err(DeError::new(
                Code::InvalidValue,
                format!("'{}' takes no value", self.tag),
            )
            .located(&self.de.path.key(self.tag), &node.origin)),
        }
    }

    fn newtype_variant_seed<T: de::DeserializeSeed<'de>>(
        self,
        seed: T,
    ) -> Result<T::Value, DeError> {
        seed.deserialize(self.value_de()?)
    }

    fn tuple_variant<V: Visitor<'de>>(self, _len: usize, visitor: V) -> Result<V::Value, DeError> {
        de::Deserializer::deserialize_seq(self.value_de()?, visitor)
    }

    fn struct_variant<V: Visitor<'de>>(
        self,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, DeError> {
        de::Deserializer::deserialize_struct(self.value_de()?, "", fields, visitor)
    }
}
