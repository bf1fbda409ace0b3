#!/usr/bin/env bash
# Runs cutover's fuzz targets (fuzz/, cargo-fuzz layout) for a bounded time each.
#
#   scripts/fuzz.sh [TARGET|all] [SECONDS]      default: all targets, 60 seconds each
#
# Targets: load_release (the YAML/TOML release loader), read_recording (the recording
# reader of `cutover analyze`), route_request (the proxy's route
# table and request routing), forward_headers (the proxy's smuggling check and hop-by-hop
# header removal). Works on the stable toolchain: `--sanitizer none` needs no nightly
# (libFuzzer's coverage guidance stays; a crash is a panic, an assertion, a timeout of a
# single input or memory past the limit below). Installs cargo-fuzz when it is missing.
#
# Each run starts from the committed corpus (fuzz/corpus/TARGET) and writes new inputs to
# a scratch directory, so the committed corpus changes only by hand. A crash fails the
# script; the input is saved under fuzz/artifacts/TARGET/ and the output says how to
# reproduce it. Add a fixed crash to fuzz/corpus/TARGET so `cargo test` replays it.
set -euo pipefail
cd "$(dirname "$0")/.."

which="${1:-all}"
seconds="${2:-60}"
all=(load_release read_recording route_request forward_headers)
case "$which" in
  all) targets=("${all[@]}") ;;
  load_release | read_recording | route_request | forward_headers) targets=("$which") ;;
  *)
    echo "unknown fuzz target '$which': one of ${all[*]} or all" >&2
    exit 2
    ;;
esac
if ! [[ "$seconds" =~ ^[0-9]+$ ]] || [ "$seconds" -lt 1 ]; then
  echo "SECONDS must be a whole number of seconds, got '$seconds'" >&2
  exit 2
fi

if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "== installing cargo-fuzz (cargo install cargo-fuzz --locked)"
  cargo install cargo-fuzz --locked
fi

# A target directory of its own under a shared one: the fuzz build uses other flags.
if [ -n "${CARGO_TARGET_DIR:-}" ]; then
  export CARGO_TARGET_DIR="$CARGO_TARGET_DIR/fuzz"
fi

for target in "${targets[@]}"; do
  # The proxy's targets need the `proxy` feature; the loader's alone builds without it
  # (scripts/test.sh). Running all, every target gets it, so the features do not change
  # between targets and the shared dependencies build once.
  features=()
  case "$which:$target" in
    all:* | *:route_request | *:forward_headers) features=(--features proxy) ;;
  esac
  scratch="$(mktemp -d)"
  trap 'rm -rf "$scratch"' EXIT
  echo "== cargo fuzz run $target for ${seconds}s"
  # -rss_limit_mb: the loader's budgets keep a hostile file to tens of megabytes; more
  # than this is a finding. -timeout: one input taking this long is a finding too.
  cargo fuzz run --sanitizer none -O "${features[@]}" "$target" \
    "$scratch" "fuzz/corpus/$target" -- \
    -max_total_time="$seconds" -rss_limit_mb=512 -timeout=10 -print_final_stats=1
  rm -rf "$scratch"
  trap - EXIT
done
echo "== fuzzing: no crash in ${targets[*]} (${seconds}s each)"
