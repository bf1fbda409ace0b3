//! Values that name what runs and must never be empty: the version, the image and the
//! words of a local command or address list.
//!
//! An empty one is never meant. `version: ${VERSION}` with `VERSION` unset used to read as
//! "no version", so the controller made a name up (`candidate-1a2b3c4d`) and shipped
//! something nobody named; `--app-version ${VERSION}` started the program with an empty
//! argument. An unset `${VAR}` is an error anywhere in a release (see
//! [`super::interpolate`]); these fields are also refused when a variable that is set,
//! a default, an override or the file itself leaves them empty.

use super::node::{Node, Value};
use crate::diagnostic::{Code, Diagnostic, FieldPath, Segment};

/// Whether the value at `path` of a release must not come out of interpolation empty.
pub fn names_what_runs(path: &FieldPath) -> bool {
    let keys: Vec<&str> = path
        .0
        .iter()
        .map(|s| match s {
            Segment::Key(k) => k.as_str(),
            Segment::Index(_) => "[]",
        })
        .collect();
    matches!(
        keys.as_slice(),
        ["spec", "version" | "stableVersion" | "image"]
            | [
                "spec",
                "backend",
                "local",
                "stable" | "candidate",
                "command" | "addresses",
                "[]"
            ]
    )
}

/// The `--set` key that sets the value at `path`: `version` for `spec.version`, else the
/// path as written (`spec.image`, `spec.backend.local.candidate.command[3]`).
pub fn set_key(path: &FieldPath) -> String {
    match path.0.as_slice() {
        [Segment::Key(spec), Segment::Key(field)] if spec == "spec" && field == "version" => {
            "version".to_string()
        }
        _ => path.to_string(),
    }
}

/// An error for each of `spec.version` and `spec.stableVersion` written but empty
/// (`version: ""`, `version:` with nothing after it, `--set version=`), whatever layer put
/// it there. Leaving the field out is different: the version is then named from the image
/// tag (or, on the local backend, a hash of the candidate), as documented.
pub fn empty_versions(root: &Node, already: &[Diagnostic]) -> Vec<Diagnostic> {
    let mut out = Vec::new();
    for field in ["version", "stableVersion"] {
        let path = FieldPath::of(&["spec", field]);
        let Some(node) = root.at(&path) else {
            continue;
        };
        let empty = match &node.value {
            Value::Null => true,
            Value::Str(text) | Value::Substituted(text) => text.trim().is_empty(),
            _ => false,
        };
        // An interpolation that left it empty was reported where it happened.
        if !empty || already.iter().any(|d| d.path == path && d.is_error()) {
            continue;
        }
        out.push(
            Diagnostic::error(
                Code::InvalidValue,
                path.clone(),
                node.origin.clone(),
                format!("{field} is empty"),
            )
            .with_hint(if field == "version" {
                "write a name such as 'v2', pass --set version=v2, or leave the line out to name the version from the image tag".to_string()
            } else {
                "write a name such as 'v1', or leave the line out".to_string()
            }),
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fields_that_name_what_runs() {
        assert!(names_what_runs(&FieldPath::of(&["spec", "version"])));
        assert!(names_what_runs(&FieldPath::of(&["spec", "image"])));
        assert!(names_what_runs(
            &FieldPath::of(&["spec", "backend", "local", "candidate", "command"]).index(3)
        ));
        assert!(!names_what_runs(&FieldPath::of(&["spec", "replicas"])));
        assert!(!names_what_runs(&FieldPath::of(&[
            "metadata", "labels", "version"
        ])));
    }

    #[test]
    fn set_keys_use_the_version_shorthand() {
        assert_eq!(set_key(&FieldPath::of(&["spec", "version"])), "version");
        assert_eq!(set_key(&FieldPath::of(&["spec", "image"])), "spec.image");
    }
}
