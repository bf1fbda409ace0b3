//! The release-file loader (`cutover_core::load`), on the same text read as YAML and as
//! TOML: what `cutover lint` runs on untrusted pull requests and the controller's API
//! runs on every submitted release. Besides not crashing, it must keep its promises: a
//! document only without errors, every file diagnostic at a real line and column, and
//! no input let past the budgets.
#![no_main]

use std::collections::BTreeMap;

use cutover_core::diagnostic::Origin;
use cutover_core::load::{self, Format, Source};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let env: BTreeMap<String, String> =
        [("TAG", "v2"), ("EMPTY", ""), ("CUTOVER_SPEC_PORT", "9090")]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
    for format in [Format::Yaml, Format::Toml] {
        let source = Source {
            name: "fuzz",
            text,
            format,
        };
        let loaded = load::load(source, &env);
        assert!(!(loaded.document.is_some() && loaded.has_errors()));
        for d in &loaded.diagnostics {
            if let Origin::File { line, column, .. } = d.origin {
                assert!(line >= 1 && column >= 1, "{d}");
            }
        }
        let _ = load::load_release_resolved(source);
    }
});
