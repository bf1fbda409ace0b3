#!/usr/bin/env bash
# Throughput and latency of cutover's proxy beside nginx and HAProxy, in one run, at 1 and
# 2 worker threads, each proxy splitting 90/10 between two nginx backends on loopback.
# Needs nginx-light, haproxy and wrk (apt-get install nginx-light haproxy wrk).
#
#   bash bench/proxy.sh            # DUR, ROUNDS, CONN pass through to the anchors script;
#                                  # CUTOVER_BIN=path skips the release build
#
# Results go into docs/benchmarks.md by hand, with the machine they ran on.
set -euo pipefail
cd "$(dirname "$0")/.."
# cutover in a session of its own, as the anchors put themselves (bench/backends.sh says why).
. bench/backends.sh
anchors=${ANCHORS:-../shared/bench/proxy-anchors.sh}
[ -f "$anchors" ] || { echo "missing $anchors (the shared anchors script)"; exit 2; }
bin=$(cutover_bin)
echo "# $(date -u +%Y-%m-%dT%H:%MZ) $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
for workers in 1 2; do
  WORKERS=$workers PROXY_CMD="$OWN_SESSION env WORKERS=$workers CUTOVER_LOG=warn $bin proxy --config bench/proxy.yaml" \
    bash "$anchors"
done
