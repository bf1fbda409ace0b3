//! `metadata.managedFields`: who owns which fields.

use serde_json::{Value, json};

use crate::fields::{self, FieldSet};

/// How a manager last wrote its fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Operation {
    /// Server-side apply.
    Apply,
    /// Create, replace or patch.
    Update,
}

impl Operation {
    fn as_str(self) -> &'static str {
        match self {
            Operation::Apply => "Apply",
            Operation::Update => "Update",
        }
    }
}

/// One `managedFields` entry.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Entry {
    pub manager: String,
    pub operation: Operation,
    /// `Some("status")` for writes to the status subresource.
    pub subresource: Option<String>,
    pub api_version: String,
    pub time: String,
    pub fields: FieldSet,
}

impl Entry {
    /// Whether this entry belongs to the same manager, operation and subresource.
    pub(crate) fn same_owner(
        &self,
        manager: &str,
        operation: Operation,
        subresource: Option<&str>,
    ) -> bool {
        self.manager == manager
            && self.operation == operation
            && self.subresource.as_deref() == subresource
    }
}

/// The entries recorded in an object.
pub(crate) fn parse(object: &Value) -> Vec<Entry> {
    object
        .pointer("/metadata/managedFields")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|e| Entry {
            manager: e
                .get("manager")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string(),
            operation: if e.get("operation").and_then(Value::as_str) == Some("Apply") {
                Operation::Apply
            } else {
                Operation::Update
            },
            subresource: e
                .get("subresource")
                .and_then(Value::as_str)
                .map(str::to_string),
            api_version: e
                .get("apiVersion")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string(),
            time: e
                .get("time")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string(),
            fields: e
                .get("fieldsV1")
                .map(fields::from_fields_v1)
                .unwrap_or_default(),
        })
        .collect()
}

/// The entries as `managedFields` JSON.
pub(crate) fn render(entries: &[Entry]) -> Value {
    Value::Array(
        entries
            .iter()
            .map(|e| {
                let mut v = json!({
                    "manager": e.manager,
                    "operation": e.operation.as_str(),
                    "apiVersion": e.api_version,
                    "time": e.time,
                    "fieldsType": "FieldsV1",
                    "fieldsV1": fields::to_fields_v1(&e.fields),
                });
                if let (Some(sub), Some(map)) = (&e.subresource, v.as_object_mut()) {
                    map.insert("subresource".into(), Value::String(sub.clone()));
                }
                v
            })
            .collect(),
    )
}

/// Gives `changed` to the owner (creating its entry), takes it from every other entry, drops
/// paths no longer present in `object` and entries left empty.
pub(crate) fn record_update(
    entries: &mut Vec<Entry>,
    owner: Entry,
    changed: &FieldSet,
    object: &Value,
) {
    for entry in entries.iter_mut() {
        if !entry.same_owner(
            &owner.manager,
            owner.operation,
            owner.subresource.as_deref(),
        ) {
            entry.fields.retain(|p| !changed.contains(p));
        }
    }
    match entries.iter_mut().find(|e| {
        e.same_owner(
            &owner.manager,
            owner.operation,
            owner.subresource.as_deref(),
        )
    }) {
        Some(entry) => {
            entry.fields.extend(changed.iter().cloned());
            entry.time = owner.time;
            entry.api_version = owner.api_version;
        }
        None if !changed.is_empty() => entries.push(Entry {
            fields: changed.clone(),
            ..owner
        }),
        None => {}
    }
    prune(entries, object);
}

/// Drops paths no longer present in `object`, and entries left empty.
pub(crate) fn prune(entries: &mut Vec<Entry>, object: &Value) {
    for entry in entries.iter_mut() {
        entry.fields.retain(|p| fields::get(object, p).is_some());
    }
    entries.retain(|e| !e.fields.is_empty());
}

/// Whether two entry lists give the same fields to the same owners (times aside).
pub(crate) fn same_ownership(a: &[Entry], b: &[Entry]) -> bool {
    a.len() == b.len()
        && a.iter().zip(b).all(|(x, y)| {
            x.same_owner(&y.manager, y.operation, y.subresource.as_deref()) && x.fields == y.fields
        })
}
