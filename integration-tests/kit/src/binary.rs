//! The `cutover` binary the suites run.
//!
//! Cargo tells a test where a binary is (`CARGO_BIN_EXE_*`) only inside the package that
//! builds it, and these suites live in packages of their own. So the first call in a test
//! process asks cargo to build what `cargo test --workspace` builds
//! (`cargo build --workspace --tests`, the same features, hence nothing to do after that
//! command and well under a second otherwise idle) and takes the binary's path from cargo's
//! JSON messages: the binary run is always the one built from the sources in the tree, never
//! a stale one, whichever way the test was started (`cargo test -p cutover-e2e`, a single
//! `--test`, or the whole workspace). `CUTOVER_BIN` names another binary instead, for a
//! build made elsewhere (a release or a static build).

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::OnceLock;

/// The path of the `cutover` binary, built (if it is not current) on the first call. A
/// build that failed fails every later call with the same words, without building again.
pub fn cutover_bin() -> &'static str {
    static PATH: OnceLock<Result<String, String>> = OnceLock::new();
    match PATH.get_or_init(locate) {
        Ok(path) => path,
        Err(e) => panic!("the cutover binary: {e}"),
    }
}

fn locate() -> Result<String, String> {
    if let Some(path) = std::env::var_os("CUTOVER_BIN") {
        let path = path
            .into_string()
            .map_err(|p| format!("CUTOVER_BIN is not UTF-8: {p:?}"))?;
        return Path::new(&path)
            .is_file()
            .then_some(path.clone())
            .ok_or_else(|| format!("CUTOVER_BIN names no file: {path}"));
    }
    // Cargo sets CARGO for the tests it runs; built with cargo, this crate knows it too.
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| env!("CARGO").into());
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let mut build = Command::new(&cargo);
    build
        .args([
            "build",
            "--locked",
            "--workspace",
            "--tests",
            "--message-format=json-render-diagnostics",
        ])
        .current_dir(&workspace);
    // What cargo set for this test process describes this package, not the build: build
    // scripts that watch such variables (ring's watch CARGO_PKG_NAME and OUT_DIR) would
    // otherwise run again, and their dependents be built again, on every call.
    for (name, _) in std::env::vars_os() {
        let name = name.to_string_lossy().into_owned();
        if set_by_cargo_for_a_test(&name) {
            build.env_remove(name);
        }
    }
    let output = build
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .map_err(|e| format!("{} cannot run: {e}", Path::new(&cargo).display()))?;
    if !output.status.success() {
        return Err(format!("cargo build failed ({})", output.status));
    }
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .find(|message| {
            message["reason"] == "compiler-artifact"
                && message["target"]["name"] == "cutover"
                && message["profile"]["test"] == false
                && message["target"]["kind"]
                    .as_array()
                    .is_some_and(|kinds| kinds.iter().any(|k| k == "bin"))
        })
        .and_then(|message| message["executable"].as_str().map(str::to_string))
        .ok_or_else(|| "cargo built no `cutover` binary (is cutover-cli a member?)".to_string())
}

/// Whether cargo sets the variable `name` for the test it runs (rather than the person
/// who ran cargo setting it for the build).
fn set_by_cargo_for_a_test(name: &str) -> bool {
    ["CARGO_PKG_", "CARGO_MANIFEST_", "CARGO_CFG_"]
        .iter()
        .any(|prefix| name.starts_with(prefix))
        || [
            "CARGO_CRATE_NAME",
            "CARGO_BIN_NAME",
            "CARGO_PRIMARY_PACKAGE",
            "CARGO_TARGET_TMPDIR",
            "CARGO_RUSTC_CURRENT_DIR",
            "OUT_DIR",
        ]
        .contains(&name)
}
