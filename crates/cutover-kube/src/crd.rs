//! The `Release` custom resource: the release file's schema as a Kubernetes
//! CustomResourceDefinition, so that GitOps tools can apply releases as objects.
//!
//! The schema is generated from [`ReleaseSpec`], the same types the release file is read
//! into (and `docs/release.schema.json` is generated from), made structural as the API
//! server requires (subschemas inlined, enums hoisted: kube's `StructuralSchemaRewriter`).
//! `examples/kubernetes/crd.yaml` is its output, and a test fails when it is stale.

use cutover_core::spec::ReleaseSpec;
use kube_core::schema::{OptionalEnum, StructuralSchemaRewriter};
use schemars::generate::SchemaSettings;
use schemars::transform::{Transform, transform_subschemas};
use serde_json::{Value, json};

/// The custom resource's API group: the same as a release file's `apiVersion`.
pub const GROUP: &str = "cutover.dev";
/// Its version.
pub const VERSION: &str = "v1";
/// Its plural, as in URLs and RBAC rules.
pub const PLURAL: &str = "releases";
/// Its kind.
pub const KIND: &str = "Release";

/// The CustomResourceDefinition, as JSON.
pub fn release_crd() -> Value {
    let generator = SchemaSettings::openapi3()
        .with(|s| {
            s.inline_subschemas = true;
            s.meta_schema = None;
        })
        .with_transform(MixedVariants)
        .with_transform(OptionalEnum)
        .with_transform(StructuralSchemaRewriter)
        .into_generator();
    let mut spec = generator.into_root_schema_for::<ReleaseSpec>().to_value();
    if let Some(object) = spec.as_object_mut() {
        object.remove("title");
        object.remove("$schema");
        object.remove("definitions");
        object.remove("$defs");
    }
    let column = |name: &str, path: &str, kind: &str| json!({ "name": name, "type": kind, "jsonPath": path });
    json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": { "name": format!("{PLURAL}.{GROUP}") },
        "spec": {
            "group": GROUP,
            "names": {
                "kind": KIND,
                "listKind": format!("{KIND}List"),
                "plural": PLURAL,
                "singular": "release",
            },
            "scope": "Namespaced",
            "versions": [{
                "name": VERSION,
                "served": true,
                "storage": true,
                "subresources": { "status": {} },
                "additionalPrinterColumns": [
                    column("Phase", ".status.phase", "string"),
                    column("Weight", ".status.weight", "integer"),
                    column("Stable", ".status.stableVersion", "string"),
                    column("Candidate", ".status.candidateVersion", "string"),
                    column("Outcome", ".status.outcome", "string"),
                    column("Age", ".metadata.creationTimestamp", "date"),
                ],
                "schema": { "openAPIV3Schema": {
                    "description": "A release of a Deployment by cutover: the same document as a \
                                    release file (cutover lint checks both).",
                    "type": "object",
                    "required": ["spec"],
                    "properties": {
                        "apiVersion": { "type": "string" },
                        "kind": { "type": "string" },
                        "metadata": { "type": "object" },
                        "spec": spec,
                        "status": {
                            "description": "What the controller last saw of the release's rollout.",
                            "type": "object",
                            "x-kubernetes-preserve-unknown-fields": true,
                        },
                    },
                }},
            }],
        },
    })
}

/// A field whose variants are of different JSON types (`sticky: clientIp` or
/// `sticky: {header: x-user}`) has no structural schema: the API server stores it as
/// given, and the controller checks it as it checks a release file, with every problem
/// reported in the resource's status. Also drops every `default`, which the controller
/// applies itself (after presets).
#[derive(Clone, Copy, Debug)]
struct MixedVariants;

impl Transform for MixedVariants {
    fn transform(&mut self, schema: &mut schemars::Schema) {
        transform_subschemas(self, schema);
        let Some(object) = schema.as_object_mut() else {
            return;
        };
        let kinds: std::collections::BTreeSet<String> = ["oneOf", "anyOf"]
            .iter()
            .filter_map(|k| object.get(*k).and_then(Value::as_array))
            .flatten()
            .map(|branch| {
                branch
                    .get("type")
                    .map(Value::to_string)
                    .or_else(|| branch.get("enum").map(|_| "\"string\"".to_string()))
                    .or_else(|| branch.get("properties").map(|_| "\"object\"".to_string()))
                    .unwrap_or_default()
            })
            .filter(|kind| kind != "\"null\"")
            .collect();
        // Defaults are the controller's to apply: one filled in by the API server would
        // stand beside a preset's `use:` and override the preset's own value.
        object.remove("default");
        if kinds.len() > 1 {
            let description = object.get("description").cloned();
            object.clear();
            if let Some(description) = description {
                object.insert("description".into(), description);
            }
            object.insert("x-kubernetes-preserve-unknown-fields".into(), true.into());
        }
    }
}

/// [`release_crd`] as YAML, with a header saying where it comes from.
pub fn release_crd_yaml() -> String {
    let mut out = String::from(
        "# The Release custom resource of cutover, generated from the release file's types:\n\
         # `cutover crd > examples/kubernetes/crd.yaml` (a test fails when this file is stale).\n",
    );
    yaml(&release_crd(), 0, &mut out);
    out
}

/// Block-style YAML of a JSON value. Strings are written as JSON strings, which YAML reads
/// as double-quoted scalars, so no value can be mistaken for another type.
fn yaml(value: &Value, indent: usize, out: &mut String) {
    let pad = " ".repeat(indent);
    match value {
        Value::Object(map) if !map.is_empty() => {
            for (key, v) in map {
                out.push_str(&pad);
                out.push_str(&yaml_key(key));
                out.push(':');
                nested(v, indent, out);
            }
        }
        Value::Array(items) if !items.is_empty() => {
            for item in items {
                out.push_str(&pad);
                out.push('-');
                match item {
                    Value::Object(map) if !map.is_empty() => {
                        // The first key on the dash's line, the rest below it.
                        let mut first = true;
                        for (key, v) in map {
                            if first {
                                out.push(' ');
                                first = false;
                            } else {
                                out.push_str(&" ".repeat(indent + 2));
                            }
                            out.push_str(&yaml_key(key));
                            out.push(':');
                            nested(v, indent + 2, out);
                        }
                    }
                    other => nested(other, indent, out),
                }
            }
        }
        scalar => {
            out.push_str(&pad);
            out.push_str(&scalar_text(scalar));
            out.push('\n');
        }
    }
}

/// After `key:` (or `-`): a scalar on the same line, a collection on the lines below.
fn nested(value: &Value, indent: usize, out: &mut String) {
    match value {
        Value::Object(map) if !map.is_empty() => {
            out.push('\n');
            yaml(value, indent + 2, out);
        }
        Value::Array(items) if !items.is_empty() => {
            out.push('\n');
            yaml(value, indent + 2, out);
        }
        scalar => {
            out.push(' ');
            out.push_str(&scalar_text(scalar));
            out.push('\n');
        }
    }
}

fn scalar_text(value: &Value) -> String {
    match value {
        Value::Object(_) => "{}".into(),
        Value::Array(_) => "[]".into(),
        other => other.to_string(),
    }
}

/// A key plain when it cannot be read as anything but a string, quoted otherwise.
fn yaml_key(key: &str) -> String {
    let plain = !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | '/' | '$'))
        && key
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '$')
        && !matches!(
            key.to_ascii_lowercase().as_str(),
            "y" | "n" | "yes" | "no" | "on" | "off" | "true" | "false" | "null"
        );
    if plain {
        key.to_string()
    } else {
        Value::String(key.to_string()).to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The rules of a structural schema that a generated one could break.
    fn check_structural(schema: &Value, path: &str, problems: &mut Vec<String>) {
        let Some(object) = schema.as_object() else {
            return;
        };
        for key in ["$ref", "$defs", "definitions", "$schema"] {
            if object.contains_key(key) {
                problems.push(format!("{path}: {key}"));
            }
        }
        let preserved = object.contains_key("x-kubernetes-preserve-unknown-fields")
            || object.contains_key("x-kubernetes-int-or-string");
        if !object.contains_key("type") && !preserved {
            problems.push(format!("{path}: no type"));
        }
        for (name, sub) in object
            .get("properties")
            .and_then(Value::as_object)
            .into_iter()
            .flatten()
        {
            check_structural(sub, &format!("{path}.{name}"), problems);
        }
        if let Some(items) = object.get("items") {
            check_structural(items, &format!("{path}[]"), problems);
        }
        if let Some(extra) = object.get("additionalProperties").filter(|a| a.is_object()) {
            check_structural(extra, &format!("{path}{{}}"), problems);
        }
        for combinator in ["oneOf", "anyOf", "allOf"] {
            for (i, branch) in object
                .get(combinator)
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .enumerate()
            {
                // Branches may only constrain; types and descriptions belong above them.
                for key in [
                    "type",
                    "description",
                    "default",
                    "nullable",
                    "additionalProperties",
                ] {
                    if branch.get(key).is_some() {
                        problems.push(format!("{path}.{combinator}[{i}]: {key}"));
                    }
                }
            }
        }
    }

    #[test]
    fn the_schema_is_structural() {
        let crd = release_crd();
        let schema = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"];
        let mut problems = Vec::new();
        check_structural(schema, "", &mut problems);
        assert!(problems.is_empty(), "{problems:#?}");
        let spec = &schema["properties"]["spec"];
        for field in [
            "backend",
            "strategy",
            "port",
            "image",
            "analysis",
            "guardrails",
        ] {
            assert!(spec["properties"].get(field).is_some(), "{field} missing");
        }
    }

    #[test]
    fn the_committed_crd_is_current() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../examples/kubernetes/crd.yaml"
        );
        let committed = std::fs::read_to_string(path).unwrap_or_default();
        assert!(
            committed == release_crd_yaml(),
            "examples/kubernetes/crd.yaml is stale: run `cargo run -p cutover-cli -- crd > \
             examples/kubernetes/crd.yaml`"
        );
    }

    #[test]
    fn yaml_reads_back_as_the_same_json() {
        let value = json!({
            "a": [1, "two", {"b": null, "c": [true, false], "d": {}}, []],
            "on": "yes", "e f": "x\ny", "k": { "nested": { "deep": 1.5 } },
        });
        let mut text = String::new();
        yaml(&value, 0, &mut text);
        let source = cutover_core::load::Source {
            name: "crd.yaml",
            text: &text,
            format: cutover_core::load::Format::Yaml,
        };
        let (parsed, _) = cutover_core::load::load_as::<Value>(source, &Default::default())
            .unwrap_or_else(|d| panic!("{d:?}\n{text}"));
        assert_eq!(parsed, value, "{text}");
    }
}
