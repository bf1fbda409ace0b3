//! Field paths and sets, the currency of field ownership (`managedFields`).
//!
//! A path is a list of `FieldsV1` elements: `f:spec` for a map key and `k:{"name":"web"}` for
//! an item of a list of maps keyed by `name`. Every other list is atomic: one leaf.

use std::collections::BTreeSet;

use serde_json::{Map, Value};

/// A path of `FieldsV1` elements from the object's root.
pub(crate) type Path = Vec<String>;
/// A set of leaf paths.
pub(crate) type FieldSet = BTreeSet<Path>;

/// Whether a list merges by item `name` (containers, ports, env) rather than as one value.
pub(crate) fn is_keyed_list(items: &[Value]) -> bool {
    !items.is_empty()
        && items
            .iter()
            .all(|item| item.get("name").is_some_and(Value::is_string))
}

fn item_key(item: &Value) -> String {
    let name = item.get("name").and_then(Value::as_str).unwrap_or("");
    format!("k:{}", serde_json::json!({ "name": name }))
}

fn key_name(element: &str) -> Option<String> {
    let json = element.strip_prefix("k:")?;
    let value: Value = serde_json::from_str(json).ok()?;
    value
        .get("name")
        .and_then(Value::as_str)
        .map(str::to_string)
}

/// The leaf paths of a value: maps recurse, keyed lists recurse by name, the rest are leaves.
/// Nulls are skipped (in an applied object they mean "not set").
pub(crate) fn leaves(value: &Value) -> FieldSet {
    let mut out = FieldSet::new();
    collect(value, &mut Vec::new(), &mut out);
    out
}

fn collect(value: &Value, prefix: &mut Path, out: &mut FieldSet) {
    match value {
        Value::Null => {}
        Value::Object(map) if !map.is_empty() => {
            for (key, child) in map {
                prefix.push(format!("f:{key}"));
                match child {
                    Value::Array(items) if is_keyed_list(items) => {
                        for item in items {
                            prefix.push(item_key(item));
                            collect(item, prefix, out);
                            prefix.pop();
                        }
                    }
                    _ => collect(child, prefix, out),
                }
                prefix.pop();
            }
        }
        _ => {
            if !prefix.is_empty() {
                out.insert(prefix.clone());
            }
        }
    }
}

/// The value at `path`, if present.
pub(crate) fn get<'a>(value: &'a Value, path: &[String]) -> Option<&'a Value> {
    let mut current = value;
    for element in path {
        current = if let Some(key) = element.strip_prefix("f:") {
            current.as_object()?.get(key)?
        } else {
            let name = key_name(element)?;
            current
                .as_array()?
                .iter()
                .find(|item| item.get("name").and_then(Value::as_str) == Some(name.as_str()))?
        };
    }
    Some(current)
}

/// Removes the value at `path` and every map, list item or list left empty by it.
pub(crate) fn remove(value: &mut Value, path: &[String]) {
    let Some((first, rest)) = path.split_first() else {
        return;
    };
    if let Some(key) = first.strip_prefix("f:") {
        let Some(map) = value.as_object_mut() else {
            return;
        };
        if rest.is_empty() {
            map.remove(key);
            return;
        }
        if let Some(child) = map.get_mut(key) {
            remove(child, rest);
            if is_empty_container(child) {
                map.remove(key);
            }
        }
    } else if let (Some(name), Some(items)) = (key_name(first), value.as_array_mut())
        && let Some(index) = items
            .iter()
            .position(|item| item.get("name").and_then(Value::as_str) == Some(name.as_str()))
    {
        if rest.is_empty() {
            items.remove(index);
            return;
        }
        remove(&mut items[index], rest);
        if is_empty_container(&items[index]) {
            items.remove(index);
        }
    }
}

fn is_empty_container(value: &Value) -> bool {
    match value {
        Value::Object(map) => map.is_empty(),
        Value::Array(items) => items.is_empty(),
        _ => false,
    }
}

/// The `FieldsV1` tree of a set: `{"f:spec":{"f:replicas":{}}}`.
pub(crate) fn to_fields_v1(set: &FieldSet) -> Value {
    let mut root = Map::new();
    for path in set {
        let mut node = &mut root;
        for element in path {
            let entry = node
                .entry(element.clone())
                .or_insert_with(|| Value::Object(Map::new()));
            if !entry.is_object() {
                *entry = Value::Object(Map::new());
            }
            let Some(next) = entry.as_object_mut() else {
                break;
            };
            node = next;
        }
    }
    Value::Object(root)
}

/// The set a `FieldsV1` tree describes (its leaves; `.` entries are ignored).
pub(crate) fn from_fields_v1(tree: &Value) -> FieldSet {
    let mut out = FieldSet::new();
    walk_fields_v1(tree, &mut Vec::new(), &mut out);
    out
}

fn walk_fields_v1(tree: &Value, prefix: &mut Path, out: &mut FieldSet) {
    let children: Vec<(&String, &Value)> = tree
        .as_object()
        .into_iter()
        .flatten()
        .filter(|(k, _)| k.as_str() != ".")
        .collect();
    if children.is_empty() {
        if !prefix.is_empty() {
            out.insert(prefix.clone());
        }
        return;
    }
    for (key, child) in children {
        prefix.push(key.clone());
        walk_fields_v1(child, prefix, out);
        prefix.pop();
    }
}

/// `.spec.template.spec.containers[name="web"].image`, as conflict messages write paths.
pub(crate) fn display(path: &[String]) -> String {
    let mut out = String::new();
    for element in path {
        if let Some(key) = element.strip_prefix("f:") {
            out.push('.');
            out.push_str(key);
        } else if let Some(name) = key_name(element) {
            out.push_str(&format!("[name=\"{name}\"]"));
        }
    }
    out
}

/// The part of an object whose fields are owned: for the main resource everything except
/// `apiVersion`, `kind`, `status` and system metadata (labels and annotations count); for the
/// status subresource only `status`.
pub(crate) fn tracked(object: &Value, status_only: bool) -> Value {
    let mut out = Map::new();
    let Some(map) = object.as_object() else {
        return Value::Object(out);
    };
    for (key, value) in map {
        match key.as_str() {
            "status" if status_only => {
                out.insert(key.clone(), value.clone());
            }
            _ if status_only => {}
            "apiVersion" | "kind" | "status" => {}
            "metadata" => {
                let mut meta = Map::new();
                for field in ["labels", "annotations", "finalizers", "ownerReferences"] {
                    if let Some(v) = value.get(field) {
                        meta.insert(field.to_string(), v.clone());
                    }
                }
                if !meta.is_empty() {
                    out.insert(key.clone(), Value::Object(meta));
                }
            }
            _ => {
                out.insert(key.clone(), value.clone());
            }
        }
    }
    Value::Object(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn keyed_lists_have_item_paths() {
        let v = json!({"spec": {"containers": [{"name": "web", "image": "a"}], "args": ["x"]}});
        let set = leaves(&v);
        let paths: Vec<String> = set.iter().map(|p| display(p)).collect();
        assert_eq!(
            paths,
            vec![
                ".spec.args",
                ".spec.containers[name=\"web\"].image",
                ".spec.containers[name=\"web\"].name",
            ]
        );
        assert_eq!(from_fields_v1(&to_fields_v1(&set)), set);
    }

    #[test]
    fn remove_prunes_empty_parents() {
        let mut v = json!({"spec": {"containers": [{"name": "web"}], "x": 1}});
        remove(
            &mut v,
            &[
                "f:spec".into(),
                "f:containers".into(),
                "k:{\"name\":\"web\"}".into(),
                "f:name".into(),
            ],
        );
        assert_eq!(v, json!({"spec": {"x": 1}}));
    }
}
