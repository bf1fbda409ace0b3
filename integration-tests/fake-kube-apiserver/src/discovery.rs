//! `/version`, `/api`, `/apis` and the per group-version resource lists: minimal but valid.

use serde_json::{Value, json};

use crate::resources::{self, ResourceType};

/// `/version`.
pub(crate) fn version() -> Value {
    json!({
        "major": "1",
        "minor": "33",
        "gitVersion": "v1.33.0-fake",
        "gitCommit": "0000000000000000000000000000000000000000",
        "gitTreeState": "clean",
        "buildDate": "2025-04-23T00:00:00Z",
        "goVersion": "go1.24.2",
        "compiler": "gc",
        "platform": "linux/amd64",
    })
}

/// `/api`.
pub(crate) fn core_versions(port: u16) -> Value {
    json!({
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": format!("127.0.0.1:{port}")}],
    })
}

fn group_names() -> Vec<&'static str> {
    let mut names: Vec<&'static str> = resources::ALL
        .iter()
        .map(|rt| rt.group)
        .filter(|g| !g.is_empty())
        .collect();
    names.dedup();
    names.sort();
    names.dedup();
    names
}

fn group_document(name: &str) -> Value {
    let version = json!({"groupVersion": format!("{name}/v1"), "version": "v1"});
    json!({
        "kind": "APIGroup",
        "apiVersion": "v1",
        "name": name,
        "versions": [version.clone()],
        "preferredVersion": version,
    })
}

/// `/apis`.
pub(crate) fn groups() -> Value {
    let groups: Vec<Value> = group_names()
        .into_iter()
        .map(|name| {
            let mut group = group_document(name);
            if let Some(map) = group.as_object_mut() {
                map.remove("kind");
                map.remove("apiVersion");
            }
            group
        })
        .collect();
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
}

/// `/apis/{group}`.
pub(crate) fn group(name: &str) -> Option<Value> {
    group_names().contains(&name).then(|| group_document(name))
}

/// `/api/v1` or `/apis/{group}/{version}`.
pub(crate) fn resource_list(group: &str, version: &str) -> Option<Value> {
    let types: Vec<&ResourceType> = resources::ALL
        .iter()
        .filter(|rt| rt.group == group && rt.version == version)
        .collect();
    if types.is_empty() {
        return None;
    }
    let mut list = Vec::new();
    for rt in types {
        list.push(json!({
            "name": rt.plural,
            "singularName": rt.singular,
            "namespaced": rt.namespaced,
            "kind": rt.kind,
            "verbs": resources::verbs(),
            "shortNames": rt.short_names,
        }));
        for sub in rt.subresources {
            let mut entry = json!({
                "name": format!("{}/{sub}", rt.plural),
                "singularName": "",
                "namespaced": rt.namespaced,
                "kind": rt.kind,
                "verbs": ["get", "patch", "update"],
            });
            if *sub == "scale"
                && let Some(map) = entry.as_object_mut()
            {
                map.insert("group".into(), json!("autoscaling"));
                map.insert("version".into(), json!("v1"));
                map.insert("kind".into(), json!("Scale"));
            }
            list.push(entry);
        }
    }
    let group_version = if group.is_empty() {
        version.to_string()
    } else {
        format!("{group}/{version}")
    };
    Some(json!({
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": group_version,
        "resources": list,
    }))
}
