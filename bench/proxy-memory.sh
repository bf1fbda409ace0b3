#!/usr/bin/env bash
# Memory per idle keep-alive client connection of cutover's proxy beside nginx and HAProxy,
# in one run: ../shared/bench/proxy-memory-anchors.sh with cutover's proxy as the project's.
# Each proxy holds N idle HTTP/1.1 keep-alive connections that have each sent one request.
# Needs nginx-light, haproxy and python3.
#
#   bash bench/proxy-memory.sh     # N (default 9000), WORKERS (default 1) pass through;
#                                  # CUTOVER_BIN=path skips the release build
#                                  # PROTOCOLS=1 adds h2c and TLS (proxy-memory-protocols.py)
set -euo pipefail
cd "$(dirname "$0")/.."
anchors=${ANCHORS:-../shared/bench/proxy-memory-anchors.sh}
[ -f "$anchors" ] || { echo "missing $anchors (the shared anchors script)"; exit 2; }
bin=${CUTOVER_BIN:-}
if [ -z "$bin" ]; then
  cargo build --release --locked -q -p cutover-cli
  bin=target/release/cutover
fi
WORKERS=${WORKERS:-1}
echo "# $(date -u +%Y-%m-%dT%H:%MZ) $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
WORKERS=$WORKERS PROXY_CMD="env WORKERS=$WORKERS CUTOVER_LOG=warn $bin proxy --config bench/proxy.yaml" \
  bash "$anchors"

# ---- optional, PROTOCOLS=1: the same measure over h2c, TLS + HTTP/1.1 and TLS + h2 ----
# cutover's proxy, nginx and HAProxy on free ports of their own, PROTOCOLS_N idle connections
# each (default 5000); see bench/proxy-memory-protocols.py.
if [ "${PROTOCOLS:-0}" = 1 ]; then
  python3 bench/proxy-memory-protocols.py --bin "$bin" --workers "$WORKERS" --n "${PROTOCOLS_N:-5000}"
fi
