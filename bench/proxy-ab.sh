#!/usr/bin/env bash
# Two (or more) builds of cutover's proxy against each other, interleaved: for each round,
# each binary in turn serves wrk (the proxy with one worker or $WORKERS, wrk with one
# thread and 64 connections, 2 s warm-up then 5 s measured) in front of the same two nginx
# backends as bench/proxy.sh. Prints req/s, the proxy process's CPU (user + system) per
# request, and p99 for every run. On a machine whose speed drifts, rounds of one build
# next to rounds of another tell a change of a few per cent that separate runs of
# bench/proxy.sh cannot; instruction counts (callgrind) cannot tell memory costs. Needs
# nginx (nginx-light) and wrk.
#
#   bash bench/proxy-ab.sh ROUNDS BIN_A BIN_B...
#   WORKERS=2 bash bench/proxy-ab.sh ROUNDS BIN_A BIN_B...
set -euo pipefail
cd "$(dirname "$0")/.."
[ $# -ge 2 ] || { echo "usage: bash bench/proxy-ab.sh ROUNDS BIN..."; exit 2; }
for t in nginx wrk curl; do command -v $t >/dev/null || { echo "missing $t (apt-get install nginx-light wrk curl)"; exit 2; }; done
rounds=$1; shift
. bench/backends.sh
bench_work
start_backends "$work"
hz=$(getconf CLK_TCK)
echo "# $(date -u +%Y-%m-%dT%H:%MZ) workers=${WORKERS:-1} $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
for round in $(seq 1 "$rounds"); do
  for bin in "$@"; do
    $OWN_SESSION env WORKERS="${WORKERS:-1}" CUTOVER_LOG=warn "$bin" proxy --config bench/proxy.yaml > "$work/proxy.log" 2>&1 &
    proxy=$!
    wait_up 19300 || { tail -20 "$work/proxy.log"; exit 2; }
    wrk -t1 -c64 -d2s http://127.0.0.1:19300/ > /dev/null 2>&1
    before=$(cpu_ticks "$proxy")
    wrk -t1 -c64 -d5s --latency http://127.0.0.1:19300/ > "$work/wrk.out" 2>&1
    after=$(cpu_ticks "$proxy")
    kill "$proxy"; wait "$proxy" 2>/dev/null || true; proxy=
    awk -v cpu=$(( (after - before) * 1000000 / hz )) -v bin="$bin" -v round="$round" '
      /Requests\/sec/{rps=$2} / requests in /{n=$1} /^ +99%/{p99=$2} /Non-2xx|Socket errors/{errors=1}
      END{printf "round %d  %-40s req/s %8d  cpu_us/req %6.2f  p99 %s%s\n", round, bin, rps, (n > 0 ? cpu / n : 0), p99, (errors ? "  ERRORS" : "")}' "$work/wrk.out"
  done
done
