//! Patches: JSON merge patch (RFC 7386), strategic merge patch (the subset that matters: lists
//! of maps merge by `name`), and JSON patch (RFC 6902).

use serde_json::{Map, Value};

use crate::fields::is_keyed_list;
use crate::status::Status;

/// RFC 7386: maps merge recursively, `null` deletes, anything else replaces.
pub(crate) fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(patch_map) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    let Some(target_map) = target.as_object_mut() else {
        return;
    };
    for (key, value) in patch_map {
        if value.is_null() {
            target_map.remove(key);
        } else {
            merge_patch(target_map.entry(key.clone()).or_insert(Value::Null), value);
        }
    }
}

/// A strategic merge patch: like a merge patch, but lists of maps that have a `name` merge by
/// name, and `{"$patch": "delete"}` in such an item deletes it. Other `$` directives are
/// dropped.
pub(crate) fn strategic_merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(patch_map) = patch else {
        *target = patch.clone();
        return;
    };
    if patch_map.get("$patch").and_then(Value::as_str) == Some("replace") {
        let mut replaced = patch.clone();
        strip_directives(&mut replaced);
        *target = replaced;
        return;
    }
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    let Some(target_map) = target.as_object_mut() else {
        return;
    };
    for (key, value) in patch_map {
        if key.starts_with('$') {
            continue;
        }
        match value {
            Value::Null => {
                target_map.remove(key);
            }
            Value::Array(items)
                if items
                    .iter()
                    .all(|i| i.get("name").is_some_and(Value::is_string))
                    && !items.is_empty() =>
            {
                let existing = target_map
                    .entry(key.clone())
                    .or_insert(Value::Array(Vec::new()));
                if !existing
                    .as_array()
                    .is_some_and(|a| a.is_empty() || is_keyed_list(a))
                {
                    *existing = Value::Array(Vec::new());
                }
                if let Some(list) = existing.as_array_mut() {
                    merge_keyed_list(list, items);
                }
            }
            _ => strategic_merge_patch(target_map.entry(key.clone()).or_insert(Value::Null), value),
        }
    }
}

fn merge_keyed_list(list: &mut Vec<Value>, patch_items: &[Value]) {
    for item in patch_items {
        let name = item.get("name").and_then(Value::as_str).unwrap_or("");
        let position = list
            .iter()
            .position(|x| x.get("name").and_then(Value::as_str) == Some(name));
        let delete = item.get("$patch").and_then(Value::as_str) == Some("delete");
        match (position, delete) {
            (Some(i), true) => {
                list.remove(i);
            }
            (None, true) => {}
            (Some(i), false) => strategic_merge_patch(&mut list[i], item),
            (None, false) => {
                let mut new = item.clone();
                strip_directives(&mut new);
                list.push(new);
            }
        }
    }
}

fn strip_directives(value: &mut Value) {
    match value {
        Value::Object(map) => {
            map.retain(|k, _| !k.starts_with('$'));
            map.values_mut().for_each(strip_directives);
        }
        Value::Array(items) => items.iter_mut().for_each(strip_directives),
        _ => {}
    }
}

/// SSA's merge of an applied configuration: maps recurse, keyed lists merge by name, `null`
/// is ignored, anything else replaces.
pub(crate) fn apply_merge(target: &mut Value, applied: &Value) {
    match applied {
        Value::Null => {}
        Value::Object(map) => {
            if !target.is_object() {
                *target = Value::Object(Map::new());
            }
            let Some(target_map) = target.as_object_mut() else {
                return;
            };
            for (key, value) in map {
                if value.is_null() {
                    continue;
                }
                match value {
                    Value::Array(items) if is_keyed_list(items) => {
                        let existing = target_map
                            .entry(key.clone())
                            .or_insert(Value::Array(Vec::new()));
                        if !existing
                            .as_array()
                            .is_some_and(|a| a.is_empty() || is_keyed_list(a))
                        {
                            *existing = Value::Array(Vec::new());
                        }
                        if let Some(list) = existing.as_array_mut() {
                            for item in items {
                                let name = item.get("name").and_then(Value::as_str);
                                match list
                                    .iter()
                                    .position(|x| x.get("name").and_then(Value::as_str) == name)
                                {
                                    Some(i) => apply_merge(&mut list[i], item),
                                    None => list.push(item.clone()),
                                }
                            }
                        }
                    }
                    _ => apply_merge(target_map.entry(key.clone()).or_insert(Value::Null), value),
                }
            }
        }
        other => *target = other.clone(),
    }
}

/// RFC 6902: `add`, `remove`, `replace`, `move`, `copy`, `test`.
pub(crate) fn json_patch(target: &mut Value, patch: &Value) -> Result<(), Status> {
    let ops = patch
        .as_array()
        .ok_or_else(|| Status::bad_request("json patch must be an array of operations"))?;
    for op in ops {
        let kind = op.get("op").and_then(Value::as_str).unwrap_or("");
        let path = op
            .get("path")
            .and_then(Value::as_str)
            .ok_or_else(|| Status::bad_request("json patch operation without a path"))?;
        let value = op.get("value").cloned();
        match kind {
            "add" => add(target, path, value.unwrap_or(Value::Null))?,
            "remove" => {
                take(target, path)?;
            }
            "replace" => {
                take(target, path)?;
                add(target, path, value.unwrap_or(Value::Null))?;
            }
            "move" | "copy" => {
                let from = op
                    .get("from")
                    .and_then(Value::as_str)
                    .ok_or_else(|| Status::bad_request("json patch move/copy without from"))?;
                let moved = if kind == "move" {
                    take(target, from)?
                } else {
                    target.pointer(from).cloned().ok_or_else(|| missing(from))?
                };
                add(target, path, moved)?;
            }
            "test" => {
                if target.pointer(path) != value.as_ref() {
                    return Err(Status::new(
                        422,
                        "Invalid",
                        format!(
                            "the server rejected our request due to an error in our request: testing value {path} failed"
                        ),
                    ));
                }
            }
            other => {
                return Err(Status::bad_request(format!(
                    "unexpected json patch operation {other:?}"
                )));
            }
        }
    }
    Ok(())
}

fn missing(path: &str) -> Status {
    Status::new(
        422,
        "Invalid",
        format!(
            "the server rejected our request due to an error in our request: path {path} does not exist"
        ),
    )
}

fn split_pointer(path: &str) -> Result<(&str, String), Status> {
    let (parent, last) = path
        .rsplit_once('/')
        .ok_or_else(|| Status::bad_request(format!("invalid json pointer {path:?}")))?;
    Ok((parent, last.replace("~1", "/").replace("~0", "~")))
}

fn add(target: &mut Value, path: &str, value: Value) -> Result<(), Status> {
    if path.is_empty() {
        *target = value;
        return Ok(());
    }
    let (parent, last) = split_pointer(path)?;
    match target.pointer_mut(parent).ok_or_else(|| missing(parent))? {
        Value::Object(map) => {
            map.insert(last, value);
        }
        Value::Array(items) => {
            if last == "-" {
                items.push(value);
            } else {
                let index: usize = last.parse().map_err(|_| missing(path))?;
                if index > items.len() {
                    return Err(missing(path));
                }
                items.insert(index, value);
            }
        }
        _ => return Err(missing(path)),
    }
    Ok(())
}

fn take(target: &mut Value, path: &str) -> Result<Value, Status> {
    let (parent, last) = split_pointer(path)?;
    match target.pointer_mut(parent).ok_or_else(|| missing(parent))? {
        Value::Object(map) => map.remove(&last).ok_or_else(|| missing(path)),
        Value::Array(items) => {
            let index: usize = last.parse().map_err(|_| missing(path))?;
            if index >= items.len() {
                return Err(missing(path));
            }
            Ok(items.remove(index))
        }
        _ => Err(missing(path)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn merge_patch_follows_rfc_7386() {
        let mut v = json!({"a": "b", "c": {"d": "e", "f": "g"}});
        merge_patch(&mut v, &json!({"a": "z", "c": {"f": null}}));
        assert_eq!(v, json!({"a": "z", "c": {"d": "e"}}));
    }

    #[test]
    fn strategic_merge_merges_containers_by_name() {
        let mut v =
            json!({"containers": [{"name": "a", "image": "1"}, {"name": "b", "image": "2"}]});
        strategic_merge_patch(
            &mut v,
            &json!({"containers": [{"name": "b", "image": "3"}]}),
        );
        assert_eq!(
            v,
            json!({"containers": [{"name": "a", "image": "1"}, {"name": "b", "image": "3"}]})
        );
        strategic_merge_patch(
            &mut v,
            &json!({"containers": [{"name": "a", "$patch": "delete"}]}),
        );
        assert_eq!(v, json!({"containers": [{"name": "b", "image": "3"}]}));
    }

    #[test]
    fn json_patch_applies_in_order() {
        let mut v = json!({"spec": {"replicas": 1, "l": [1, 2]}});
        let patch = json!([
            {"op": "test", "path": "/spec/replicas", "value": 1},
            {"op": "replace", "path": "/spec/replicas", "value": 3},
            {"op": "add", "path": "/spec/l/-", "value": 3},
            {"op": "remove", "path": "/spec/l/0"},
        ]);
        assert!(json_patch(&mut v, &patch).is_ok());
        assert_eq!(v, json!({"spec": {"replicas": 3, "l": [2, 3]}}));
        assert!(
            json_patch(
                &mut v,
                &json!([{"op": "test", "path": "/spec/replicas", "value": 1}])
            )
            .is_err()
        );
    }
}
