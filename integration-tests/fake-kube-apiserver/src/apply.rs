//! Server-side apply, simplified: ownership by leaf field path, conflicts when another
//! manager owns a field the applied object sets to a different value, removal of fields the
//! manager stopped applying. Maps recurse, lists of maps with a `name` merge by name, other
//! lists are atomic. No schema: unions, `x-kubernetes-list-map-keys` other than `name`, and
//! defaulting interplay are not modelled.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use crate::fields::{self, FieldSet, Path};
use crate::managed::{self, Entry, Operation};
use crate::ops::{self, Ownership};
use crate::patch;
use crate::resources::ResourceType;
use crate::status::Status;
use crate::store::Store;
use crate::util;

/// One apply request.
#[derive(Debug)]
pub(crate) struct ApplyRequest<'a> {
    pub rt: &'static ResourceType,
    pub namespace: &'a str,
    pub name: &'a str,
    pub manager: &'a str,
    pub force: bool,
    pub status_only: bool,
}

/// Applies `applied` (the parsed body) and returns the stored object.
pub(crate) fn apply(
    store: &mut Store,
    req: &ApplyRequest<'_>,
    mut applied: Value,
) -> Result<Value, Status> {
    let rt = req.rt;
    if !applied.is_object() {
        return Err(Status::bad_request(
            "the applied configuration must be a JSON (or YAML) object",
        ));
    }
    for (field, pointer) in [("apiVersion", "/apiVersion"), ("kind", "/kind")] {
        if util::str_at(&applied, pointer).is_none_or(str::is_empty) {
            return Err(Status::bad_request(format!(
                "{field} must be set in an applied configuration"
            )));
        }
    }
    match util::str_at(&applied, "/metadata/name") {
        Some(name) if name != req.name => {
            return Err(Status::bad_request(format!(
                "the name of the object ({name}) does not match the name on the URL ({})",
                req.name
            )));
        }
        Some(_) => {}
        None => {
            if let Some(meta) = applied
                .as_object_mut()
                .map(|o| o.entry("metadata").or_insert_with(|| json!({})))
                .and_then(Value::as_object_mut)
            {
                meta.insert("name".into(), Value::String(req.name.to_string()));
            }
        }
    }
    let precondition = util::str_at(&applied, "/metadata/resourceVersion").map(str::to_string);
    let Some(current) = store.get(rt, req.namespace, req.name).cloned() else {
        if req.status_only {
            return Err(Status::not_found(rt, req.name));
        }
        if precondition.is_some_and(|rv| !rv.is_empty()) {
            return Err(Status::conflict(rt, req.name));
        }
        return ops::create(
            store,
            rt,
            req.namespace,
            applied,
            req.manager,
            Operation::Apply,
        );
    };
    ops::check_precondition(rt, req.name, &current, precondition.as_deref())?;

    let applied_tracked = fields::tracked(&applied, req.status_only);
    let new_paths = fields::leaves(&applied_tracked);
    let subresource = req.status_only.then_some("status");
    let mut entries = managed::parse(&current);

    // Conflicts: fields another manager owns that this apply sets to another value.
    let mut conflicts: BTreeMap<(String, String), Vec<Path>> = BTreeMap::new();
    for entry in &entries {
        if entry.same_owner(req.manager, Operation::Apply, subresource) {
            continue;
        }
        for path in entry.fields.intersection(&new_paths) {
            if fields::get(&current, path) != fields::get(&applied_tracked, path) {
                conflicts
                    .entry((entry.manager.clone(), entry.api_version.clone()))
                    .or_default()
                    .push(path.clone());
            }
        }
    }
    if !conflicts.is_empty() {
        if !req.force {
            return Err(conflict_status(rt, req.name, &conflicts));
        }
        let taken: FieldSet = conflicts.values().flatten().cloned().collect();
        for entry in entries.iter_mut() {
            if !entry.same_owner(req.manager, Operation::Apply, subresource) {
                entry.fields.retain(|p| !taken.contains(p));
            }
        }
    }

    // Fields this manager applied before and no longer applies, owned by no one else.
    let previous: FieldSet = entries
        .iter()
        .find(|e| e.same_owner(req.manager, Operation::Apply, subresource))
        .map(|e| e.fields.clone())
        .unwrap_or_default();
    let mut result = current.clone();
    for path in previous.difference(&new_paths) {
        let shared = entries.iter().any(|e| {
            !e.same_owner(req.manager, Operation::Apply, subresource) && e.fields.contains(path)
        });
        if !shared {
            fields::remove(&mut result, path);
        }
    }
    patch::apply_merge(&mut result, &applied_tracked);

    entries.retain(|e| !e.same_owner(req.manager, Operation::Apply, subresource));
    if !new_paths.is_empty() {
        entries.push(Entry {
            manager: req.manager.to_string(),
            operation: Operation::Apply,
            subresource: subresource.map(str::to_string),
            api_version: util::str_at(&applied, "/apiVersion")
                .unwrap_or("")
                .to_string(),
            time: util::now_rfc3339(),
            fields: new_paths,
        });
    }
    ops::commit(
        store,
        rt,
        req.namespace,
        req.name,
        &current,
        result,
        req.status_only,
        Ownership::Explicit(entries),
    )
}

/// `Apply failed with 1 conflict: conflict with "kubectl" using apps/v1: .spec.replicas`.
fn conflict_status(
    rt: &ResourceType,
    name: &str,
    conflicts: &BTreeMap<(String, String), Vec<Path>>,
) -> Status {
    let total: usize = conflicts.values().map(Vec::len).sum();
    let mut causes = Vec::new();
    let mut parts = Vec::new();
    for ((manager, api_version), paths) in conflicts {
        for path in paths {
            causes.push(json!({
                "reason": "FieldManagerConflict",
                "message": format!("conflict with \"{manager}\" using {api_version}"),
                "field": fields::display(path),
            }));
        }
        if total == 1 {
            parts.push(format!(
                "conflict with \"{manager}\" using {api_version}: {}",
                fields::display(&paths[0])
            ));
        } else {
            let list: Vec<String> = paths
                .iter()
                .map(|p| format!("- {}", fields::display(p)))
                .collect();
            parts.push(format!(
                "conflicts with \"{manager}\" using {api_version}:\n{}",
                list.join("\n")
            ));
        }
    }
    let noun = if total == 1 { "conflict" } else { "conflicts" };
    Status::new(
        409,
        "Conflict",
        format!("Apply failed with {total} {noun}: {}", parts.join("\n")),
    )
    .with_details(json!({"name": name, "group": rt.group, "kind": rt.plural, "causes": causes}))
}
