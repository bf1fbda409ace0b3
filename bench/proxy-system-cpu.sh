#!/usr/bin/env bash
# Where the whole machine's CPU goes per request, for each proxy in front of the same two
# nginx backends: the proxy's own time, the backends', and wrk's. wrk, the backends and
# the proxy share the cores, so throughput follows the sum, not the proxy's part alone: a
# proxy that costs its backends more per request serves fewer requests with the same CPU
# of its own. Three proxies run in turn, interleaved over the rounds: nginx as the anchors
# script configures it (no forwarding fields), nginx adding the forwarding fields cutover
# adds (X-Forwarded-For/-Proto/-Host and Forwarded), and cutover. Prints, per proxy, the
# median round by req/s, with µs of CPU per request for each process group and the
# backends' epoll_wait calls per request (how often they ran out of work and slept).
# Needs nginx (nginx-light), wrk, curl and perf (linux-perf) for the epoll count.
#
#   CUTOVER_BIN=path bash bench/proxy-system-cpu.sh    # WORKERS (1), ROUNDS (3), DUR (5)
set -euo pipefail
cd "$(dirname "$0")/.."
for t in nginx wrk curl; do command -v $t >/dev/null || { echo "missing $t (apt-get install nginx-light wrk curl)"; exit 2; }; done
workers=${WORKERS:-1} rounds=${ROUNDS:-3} dur=${DUR:-5}
. bench/backends.sh
bin=$(cutover_bin)
bench_work
nginx_proxy n 19100 on
nginx_proxy f 19110 on 'proxy_set_header Host $http_host;
    proxy_set_header X-Forwarded-For $remote_addr; proxy_set_header X-Forwarded-Proto $scheme;
    proxy_set_header X-Forwarded-Host $http_host;
    proxy_set_header Forwarded "for=$remote_addr;host=$http_host;proto=$scheme";'
start_backends "$work" && nginx -c "$work/n.conf" && nginx -c "$work/f.conf"
$OWN_SESSION env WORKERS="$workers" CUTOVER_LOG=warn "$bin" proxy --config bench/proxy.yaml > "$work/proxy.log" 2>&1 &
proxy=$!
wait_up 19100 19110 19300 || { tail -20 "$work/proxy.log"; exit 2; }
hz=$(getconf CLK_TCK)
backends=$(pgrep -P "$(cat "$work/b.pid")" | xargs)
pids_of() { case $1 in
  nginx) pgrep -P "$(cat "$work/n.pid")" | xargs;; nginx-fwd) pgrep -P "$(cat "$work/f.pid")" | xargs;;
  cutover) echo "$proxy";; esac; }
port_of() { case $1 in nginx) echo 19100;; nginx-fwd) echo 19110;; cutover) echo 19300;; esac; }
have_perf=$(command -v perf >/dev/null && echo 1 || echo 0)
one() { # NAME: one measured run; prints "rps proxy_us backend_us wrk_us epoll_per_req"
  local name=$1 port pids b0 p0 b1 p1 n rps wrk_us epolls=0
  port=$(port_of "$name"); pids=$(pids_of "$name")
  wrk -t1 -c64 -d1s "http://127.0.0.1:$port/" > /dev/null 2>&1
  b0=$(cpu_ticks $backends); p0=$(cpu_ticks $pids)
  if [ "$have_perf" = 1 ]; then
    perf stat -x, -e syscalls:sys_enter_epoll_wait -p "$(echo $backends | tr ' ' ,)" -o "$work/epoll.txt" -- sleep $((dur + 1)) &
    local perf_pid=$!
  fi
  /usr/bin/time -f "%U %S" -o "$work/wrk.time" wrk -t1 -c64 -d"${dur}s" "http://127.0.0.1:$port/" > "$work/wrk.out" 2>&1
  b1=$(cpu_ticks $backends); p1=$(cpu_ticks $pids)
  if [ "$have_perf" = 1 ]; then wait "$perf_pid" || true; epolls=$(awk -F, '/epoll_wait/{print $1}' "$work/epoll.txt"); fi
  n=$(awk '/ requests in /{print $1}' "$work/wrk.out")
  rps=$(awk '/Requests\/sec/{printf "%d", $2}' "$work/wrk.out")
  wrk_us=$(awk -v n="$n" '{printf "%.2f", ($1 + $2) * 1000000 / n}' "$work/wrk.time")
  awk -v n="$n" -v rps="$rps" -v p=$((p1 - p0)) -v b=$((b1 - b0)) -v hz="$hz" -v w="$wrk_us" -v e="${epolls:-0}" \
    'BEGIN{printf "%d %.2f %.2f %s %.2f\n", rps, p * 1000000 / hz / n, b * 1000000 / hz / n, w, e / n}'
}
echo "# $(date -u +%Y-%m-%dT%H:%MZ) $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
echo "# workers=$workers dur=${dur}s rounds=$rounds conn=64 (median round by req/s; CPU in µs per request)"
declare -A runs
for _ in $(seq 1 "$rounds"); do
  for name in nginx nginx-fwd cutover; do runs[$name]+="$(one "$name")
"; done
done
printf "%-10s %8s %8s %8s %8s %8s %14s\n" proxy req/s proxy backends wrk sum backend_epolls
for name in nginx nginx-fwd cutover; do
  printf "%s" "${runs[$name]}" | sed '/^$/d' | sort -n | awk -v name="$name" -v r="$rounds" \
    'NR == int((r + 1) / 2) {printf "%-10s %8d %8.2f %8.2f %8.2f %8.2f %14.2f\n", name, $1, $2, $3, $4, $2 + $3 + $4, $5}'
done
