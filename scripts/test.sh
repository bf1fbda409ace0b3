#!/usr/bin/env bash
# cutover's whole test suite: formatting, lints, and every unit, property, simulation and
# CLI test. This is the README's test command, and all that CI runs.
#
# Needs only the Rust toolchain (cargo with rustfmt and clippy). CARGO_TARGET_DIR may point
# at a shared target directory to reuse an earlier build; a cold run works too.
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== cargo fmt --check"
cargo fmt --all --check

echo "== cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings

echo "== cargo test"
cargo test --workspace --locked
