#!/usr/bin/env bash
# Where each proxy's CPU per request goes: user space or the kernel. Runs the shared
# anchors script (as bench/proxy.sh does) twice at one worker, once counting only user
# time and once only system time in its cpu_us_per_req column (/proc/PID/stat fields 14
# and 15 instead of their sum); everything else about the runs is the anchors script's.
# The two runs are separate, so the halves of one proxy come from different rounds:
# compare proxies within a run, and the sum only roughly with bench/proxy.sh.
#
#   CUTOVER_BIN=path bash bench/proxy-cpu-split.sh    # WORKERS, DUR, ROUNDS pass through
set -euo pipefail
cd "$(dirname "$0")/.."
anchors=${ANCHORS:-../shared/bench/proxy-anchors.sh}
[ -f "$anchors" ] || { echo "missing $anchors (the shared anchors script)"; exit 2; }
grep -q 'print \$14+\$15' "$anchors" || { echo "$anchors no longer sums fields 14 and 15"; exit 2; }
. bench/backends.sh
bin=$(cutover_bin)
workers=${WORKERS:-1}
bench_work
echo "# $(date -u +%Y-%m-%dT%H:%MZ) $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
for part in user:14 system:15; do
  name=${part%%:*} field=${part##*:}
  sed "s/print \$14+\$15/print \$$field/" "$anchors" > "$work/anchors-$name.sh"
  echo "# cpu_us_per_req below counts $name time only"
  WORKERS=$workers PROXY_CMD="$OWN_SESSION env WORKERS=$workers CUTOVER_LOG=warn $bin proxy --config bench/proxy.yaml" \
    bash "$work/anchors-$name.sh"
done
