#!/usr/bin/env bash
# Where the whole machine's CPU goes per request, for each proxy in front of the same two
# nginx backends: the proxy's own time, the backends', and wrk's. wrk, the backends and
# the proxy share the cores, so throughput follows the sum, not the proxy's part alone: a
# proxy that costs its backends more per request serves fewer requests with the same CPU
# of its own. Four proxies run in turn, interleaved over the rounds, in the reverse order
# every other round (so that a drift of the machine's speed does not favour one): nginx and
# HAProxy as the anchors script configures them (no forwarding fields), nginx adding the
# forwarding fields cutover adds (X-Forwarded-For/-Proto/-Host and Forwarded), and cutover.
# Prints every round, then per proxy the median round by req/s (the lower of the middle
# two with an even number of rounds), with µs of CPU per request for each process group,
# the backends' epoll_wait calls per request (how often they ran out of work and slept) and
# how often per 1,000 requests the proxy's threads were preempted (involuntary context
# switches: another thread took the CPU; counted from /proc, so a thread that exits during
# a run takes its count with it). Last, cutover against each anchor, paired by round: the
# geometric mean of cutover's figure over the anchor's with its 95 % confidence interval,
# and in how many rounds cutover was strictly ahead (more req/s, less CPU). One run's
# "cutover ÷ the better anchor" is biased against cutover (the better of two noisy figures
# is on average above the better true figure); the paired interval says whether a
# difference is larger than the rounds' spread. An even number of rounds runs each order
# as often as the other. Needs nginx (nginx-light), haproxy, wrk, curl, python3, and perf
# (linux-perf) for the epoll count.
#
#   CUTOVER_BIN=path bash bench/proxy-system-cpu.sh    # WORKERS (1), ROUNDS (6), DUR (5)
set -euo pipefail
cd "$(dirname "$0")/.."
for t in nginx haproxy wrk curl python3; do command -v $t >/dev/null || { echo "missing $t (apt-get install nginx-light haproxy wrk curl python3)"; exit 2; }; done
workers=${WORKERS:-1} rounds=${ROUNDS:-6} dur=${DUR:-5}
. bench/backends.sh
bin=$(cutover_bin)
bench_work
nginx_proxy n 19100 on
nginx_proxy f 19110 on 'proxy_set_header Host $http_host;
    proxy_set_header X-Forwarded-For $remote_addr; proxy_set_header X-Forwarded-Proto $scheme;
    proxy_set_header X-Forwarded-Host $http_host;
    proxy_set_header Forwarded "for=$remote_addr;host=$http_host;proto=$scheme";'
haproxy_proxy h 19200
start_backends "$work" && nginx -c "$work/n.conf" && nginx -c "$work/f.conf" && haproxy -D -f "$work/h.cfg"
$OWN_SESSION env WORKERS="$workers" CUTOVER_LOG=warn "$bin" proxy --config bench/proxy.yaml > "$work/proxy.log" 2>&1 &
proxy=$!
wait_up 19100 19110 19200 19300 || { tail -20 "$work/proxy.log"; exit 2; }
hz=$(getconf CLK_TCK)
backends=$(pgrep -P "$(cat "$work/b.pid")" | xargs)
pids_of() { case $1 in
  nginx) pgrep -P "$(cat "$work/n.pid")" | xargs;; nginx-fwd) pgrep -P "$(cat "$work/f.pid")" | xargs;;
  haproxy) cat "$work/h.pid";; cutover) echo "$proxy";; esac; }
port_of() { case $1 in nginx) echo 19100;; nginx-fwd) echo 19110;; haproxy) echo 19200;; cutover) echo 19300;; esac; }
have_perf=$(command -v perf >/dev/null && echo 1 || echo 0)
preemptions() { # PID...: involuntary context switches of every thread of the processes
  cat $(printf '/proc/%s/task/*/status ' "$@") 2>/dev/null | awk '/^nonvoluntary_ctxt_switches/{n += $2} END{print n + 0}'
}
one() { # NAME: one measured run; prints "rps proxy_us backend_us wrk_us epoll_per_req preempted_per_1k"
  local name=$1 port pids b0 p0 s0 b1 p1 s1 n rps wrk_us epolls=0
  port=$(port_of "$name"); pids=$(pids_of "$name")
  wrk -t1 -c64 -d1s "http://127.0.0.1:$port/" > /dev/null 2>&1
  b0=$(cpu_ticks $backends); p0=$(cpu_ticks $pids); s0=$(preemptions $pids)
  if [ "$have_perf" = 1 ]; then
    perf stat -x, -e syscalls:sys_enter_epoll_wait -p "$(echo $backends | tr ' ' ,)" -o "$work/epoll.txt" -- sleep $((dur + 1)) &
    local perf_pid=$!
  fi
  /usr/bin/time -f "%U %S" -o "$work/wrk.time" wrk -t1 -c64 -d"${dur}s" "http://127.0.0.1:$port/" > "$work/wrk.out" 2>&1
  b1=$(cpu_ticks $backends); p1=$(cpu_ticks $pids); s1=$(preemptions $pids)
  if [ "$have_perf" = 1 ]; then wait "$perf_pid" || true; epolls=$(awk -F, '/epoll_wait/{print $1}' "$work/epoll.txt"); fi
  n=$(awk '/ requests in /{print $1}' "$work/wrk.out")
  rps=$(awk '/Requests\/sec/{printf "%d", $2}' "$work/wrk.out")
  wrk_us=$(awk -v n="$n" '{printf "%.2f", ($1 + $2) * 1000000 / n}' "$work/wrk.time")
  awk -v n="$n" -v rps="$rps" -v p=$((p1 - p0)) -v b=$((b1 - b0)) -v hz="$hz" -v w="$wrk_us" -v e="${epolls:-0}" \
    -v s=$((s1 - s0)) 'BEGIN{printf "%d %.2f %.2f %s %.2f %.1f\n", rps, p * 1000000 / hz / n, b * 1000000 / hz / n, w, e / n, s * 1000 / n}'
}
echo "# $(date -u +%Y-%m-%dT%H:%MZ) $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
echo "# workers=$workers dur=${dur}s rounds=$rounds conn=64 (median round by req/s; CPU in µs per request)"
names="nginx haproxy nginx-fwd cutover"
declare -A runs
printf "%-6s %-10s %8s %8s %8s %8s %8s %14s %11s\n" round proxy req/s proxy backends wrk sum backend_epolls preempt/1k
for round in $(seq 1 "$rounds"); do
  order=$names
  if [ $((round % 2)) = 0 ]; then order=$(echo $names | tr ' ' '\n' | tac | xargs); fi
  for name in $order; do
    row=$(one "$name")
    runs[$name]+="$row
"
    echo "$round $name $row" | awk '{printf "%-6s %-10s %8d %8.2f %8.2f %8.2f %8.2f %14.2f %11.1f\n", $1, $2, $3, $4, $5, $6, $4 + $5 + $6, $7, $8}'
    echo "$round $name $row" >> "$work/rounds"
  done
done
echo "# median round by req/s"
printf "%-10s %8s %8s %8s %8s %8s %14s %11s\n" proxy req/s proxy backends wrk sum backend_epolls preempt/1k
for name in $names; do
  printf "%s" "${runs[$name]}" | sed '/^$/d' | sort -n | awk -v name="$name" -v r="$rounds" \
    'NR == int((r + 1) / 2) {printf "%-10s %8d %8.2f %8.2f %8.2f %8.2f %14.2f %11.1f\n", name, $1, $2, $3, $4, $2 + $3 + $4, $5, $6}'
done
python3 - "$work/rounds" <<'PY'
import math, statistics, sys
# Two-sided 95 % quantiles of Student's t, by degrees of freedom 1 to 29; past 29, the
# last (2.05, slightly wide of the limit 1.96).
T = [12.71, 4.30, 3.18, 2.78, 2.57, 2.45, 2.36, 2.31, 2.26, 2.23, 2.20, 2.18, 2.16, 2.14,
     2.13, 2.12, 2.11, 2.10, 2.09, 2.09, 2.08, 2.07, 2.07, 2.06, 2.06, 2.06, 2.05, 2.05, 2.05]
rows = {}
for line in open(sys.argv[1]):
    r, name, rps, proxy, backends, wrk = line.split()[:6]
    rows.setdefault(name, {})[r] = (float(rps), float(proxy), float(proxy) + float(backends) + float(wrk))
print("# cutover against each anchor, paired by round: geometric mean of cutover/anchor"
      " [95 % CI], rounds cutover strictly ahead; summed CPU is proxy + backends + wrk")
for anchor in ("nginx", "haproxy"):
    cells = []
    for what, i, ahead in (("req/s", 0, lambda c, a: c > a), ("proxy CPU", 1, lambda c, a: c < a),
                           ("summed CPU", 2, lambda c, a: c < a)):
        pairs = [(rows["cutover"][r][i], rows[anchor][r][i]) for r in rows["cutover"]
                 if r in rows[anchor] and rows["cutover"][r][i] > 0 and rows[anchor][r][i] > 0]
        logs = [math.log(c / a) for c, a in pairs]
        n = len(logs)
        mean = statistics.fmean(logs) if n else 0.0
        half = T[min(n - 2, len(T) - 1)] * statistics.stdev(logs) / math.sqrt(n) if n > 1 else math.inf
        wins = sum(1 for c, a in pairs if ahead(c, a))
        low, high = (math.exp(mean - half), math.exp(mean + half)) if half < math.inf else (0.0, math.inf)
        cells.append(f"{what} {math.exp(mean):.3f} [{low:.3f}, {high:.3f}] {wins}/{n}")
    print(f"vs {anchor:8s} " + "   ".join(cells))
PY
