#!/usr/bin/env bash
# System calls per request of nginx and of cutover as proxies, each under the same wrk load
# (one thread, 64 connections, 2 s warm-up then 5 s counted) in front of the two nginx
# backends of bench/proxy.sh, with WORKERS workers each (nginx's worker_processes). Counts
# the proxy processes' system call entries with `perf stat` tracepoints, by call, and
# divides by the requests wrk completed. A `write` on cutover's side that is no response
# (responses go out with `sendto`) is a runtime waking itself through its eventfd. Needs
# nginx (nginx-light), wrk, curl and perf (linux-perf), run as root.
#
#   CUTOVER_BIN=path [WORKERS=2] bash bench/proxy-syscalls.sh
set -euo pipefail
cd "$(dirname "$0")/.."
for t in nginx wrk curl perf; do command -v $t >/dev/null || { echo "missing $t (apt-get install nginx-light wrk curl linux-perf)"; exit 2; }; done
workers=${WORKERS:-1}
. bench/backends.sh
bin=$(cutover_bin)
bench_work
start_backends "$work"
nginx_proxy p 19100 on
nginx -c "$work/p.conf"
$OWN_SESSION env WORKERS="$workers" CUTOVER_LOG=warn "$bin" proxy --config bench/proxy.yaml > "$work/proxy.log" 2>&1 &
proxy=$!
wait_up 19100 19300 || { tail -20 "$work/proxy.log" "$work/p.err"; exit 2; }
events=raw_syscalls:sys_enter
for call in epoll_wait recvfrom sendto writev write read; do events+=",syscalls:sys_enter_$call"; done
echo "# $(date -u +%Y-%m-%dT%H:%MZ) workers=$workers $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
for target in nginx:19100 cutover:19300; do
  name=${target%%:*} port=${target##*:}
  if [ "$name" = nginx ]; then
    pids=$(pgrep -P "$(cat "$work/p.pid")" | paste -sd,)
  else
    pids=$proxy
  fi
  wrk -t1 -c64 -d2s "http://127.0.0.1:$port/" > /dev/null
  perf stat -x, -e "$events" -p "$pids" -o "$work/perf.out" -- sleep 5 &
  counting=$!
  wrk -t1 -c64 -d5s "http://127.0.0.1:$port/" > "$work/wrk.out"
  wait "$counting"
  requests=$(awk '/ requests in /{print $1}' "$work/wrk.out")
  [ "${requests:-0}" -gt 0 ] || { echo "wrk completed no request through $name"; exit 2; }
  echo "== $name ($requests requests)"
  awk -F, -v n="$requests" '/sys_enter/{sub(/^(raw_)?syscalls:sys_enter_?/, "", $3); printf "  %-12s %.3f per request\n", ($3 == "" ? "all" : $3), $1 / n}' "$work/perf.out"
done
