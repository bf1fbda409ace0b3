//! The JSON Schema of release files, generated from the [`crate::spec`] types.
//!
//! Committed at `docs/release.schema.json` (a test fails when it is stale) so editors can
//! validate release files as people type.

use crate::spec::Release;

/// The JSON Schema of a release document, pretty-printed, with a trailing newline.
pub fn release_schema_json() -> String {
    let schema = schemars::schema_for!(Release);
    let mut text = serde_json::to_string_pretty(&schema).unwrap_or_default();
    text.push('\n');
    text
}
