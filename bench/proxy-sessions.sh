#!/usr/bin/env bash
# What a proxy's session does to its figures under the kernel's autogroup scheduling
# (bench/backends.sh says why the proxy benchmarks start cutover in a session of its own).
# Four proxies in front of the same two nginx backends, each serving wrk in turn for ROUNDS
# rounds (one thread, 64 connections, 2 s warm-up then 5 s measured), with $WORKERS
# workers each:
#
#   nginx          daemonized, as the anchors script starts it: a session of its own
#   nginx-here     `daemon off`, in this script's session, beside wrk
#   cutover-here   in this script's session, as bench/proxy.sh started it before
#   cutover        in a session of its own ($OWN_SESSION), as the benchmarks start it now
#
# Prints req/s, CPU (user + system) per request and p99 for every round, then the medians.
# Needs nginx (nginx-light), wrk and curl.
#
#   CUTOVER_BIN=path [WORKERS=2] bash bench/proxy-sessions.sh [ROUNDS]
set -euo pipefail
cd "$(dirname "$0")/.."
for t in nginx wrk curl setsid; do command -v $t >/dev/null || { echo "missing $t (apt-get install nginx-light wrk curl)"; exit 2; }; done
rounds=${1:-3}
workers=${WORKERS:-1}
. bench/backends.sh
bin=$(cutover_bin)
bench_work
start_backends "$work"
nginx_proxy nginx 19100 on
nginx_proxy nginx-here 19110 off
nginx -c "$work/nginx.conf"
nginx -c "$work/nginx-here.conf" &
sed 's/19300/19310/; s/19301/19311/' bench/proxy.yaml > "$work/cutover-here.yaml"
env WORKERS="$workers" CUTOVER_LOG=warn "$bin" proxy --config "$work/cutover-here.yaml" > "$work/cutover-here.log" 2>&1 &
echo $! > "$work/cutover-here.pid"
$OWN_SESSION env WORKERS="$workers" CUTOVER_LOG=warn "$bin" proxy --config bench/proxy.yaml > "$work/cutover.log" 2>&1 &
echo $! > "$work/cutover.pid"
ports="nginx:19100 nginx-here:19110 cutover-here:19310 cutover:19300"
# shellcheck disable=SC2046 # one port per word
wait_up $(for target in $ports; do echo "${target##*:}"; done) || { tail -5 "$work"/*.log "$work"/*.err; exit 2; }
pids_of() { case $1 in nginx*) pgrep -P "$(cat "$work/$1.pid")" | paste -sd' ';; *) cat "$work/$1.pid";; esac; }
hz=$(getconf CLK_TCK)
echo "# $(date -u +%Y-%m-%dT%H:%MZ) workers=$workers $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), autogroup=$(cat /proc/sys/kernel/sched_autogroup_enabled 2>/dev/null || echo absent)"
for round in $(seq 1 "$rounds"); do
  for target in $ports; do
    name=${target%%:*} port=${target##*:}
    # shellcheck disable=SC2046 # one pid per word
    set -- $(pids_of "$name")
    [ $# -gt 0 ] || { echo "no process of $name found"; exit 2; }
    wrk -t1 -c64 -d2s "http://127.0.0.1:$port/" > /dev/null 2>&1
    before=$(cpu_ticks "$@")
    wrk -t1 -c64 -d5s --latency "http://127.0.0.1:$port/" > "$work/wrk.out" 2>&1
    after=$(cpu_ticks "$@")
    awk -v cpu=$(( (after - before) * 1000000 / hz )) -v name="$name" -v round="$round" '
      function us(v){ if (v ~ /us$/) return v+0; if (v ~ /ms$/) return (v+0)*1000; return (v+0)*1000000 }
      /Requests\/sec/{rps=$2} / requests in /{n=$1} /^ +99%/{p99=us($2)} /Non-2xx|Socket errors/{errors=1}
      END{printf "round %d  %-13s req/s %8d  cpu_us/req %6.2f  p99_us %6d%s\n", round, name, rps, (n > 0 ? cpu / n : 0), p99, (errors ? "  ERRORS" : "")}' "$work/wrk.out" | tee -a "$work/rounds"
  done
done
echo "# medians"
for target in $ports; do
  name=${target%%:*}
  awk -v name="$name" '$3 == name {print $5, $7, $9}' "$work/rounds" | sort -n | awk -v name="$name" '
    {rps[NR]=$1; cpu[NR]=$2; p99[NR]=$3}
    END{m=int((NR+1)/2); printf "%-13s req/s %8d  cpu_us/req %6.2f  p99_us %6d  (median round by req/s)\n", name, rps[m], cpu[m], p99[m]}'
done
