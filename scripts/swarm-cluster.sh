#!/usr/bin/env bash
# A multi-node Docker Swarm on one machine, for cutover's cluster tests
# (integration-tests/e2e/tests/swarm_cluster.rs): N Docker engines, each in its own network
# namespace and UTS namespace (its own hostname), joined by veth pairs into one host bridge,
# forming one Swarm of N managers. The host reaches every node at its bridge address.
#
#   up [N]        N nodes (default 3, all managers, so quorum survives the loss of one);
#                 loads the images scripts/swarm-env.sh builds on the host engine (run it
#                 first) into every node by `docker save | docker load`. A cluster already up
#                 is taken down first.
#   down          removes every process, namespace, bridge, firewall rule, mount, cgroup and
#                 directory `up` made, also after a failed `up`; safe to run twice.
#   env           one line per node: `node<i> <socket> <address>`.
#   kill-node i   kills node i's engine, containerd and every container it ran (SIGKILL), as
#                 if the machine died.
#   start-node i  starts node i's engine again on its own data (it rejoins the Swarm).
#   partition i   cuts node i's link to the bridge (its processes keep running).
#   heal i        restores node i's link.
#   check-clean   exits 1, saying what is left, when anything of a cluster remains.
#
# Layout (fixed, so that `down` finds everything without any state of its own):
#   bridge cutoverbr0, 10.213.0.1/24 on the host; node i is 10.213.0.(10+i) in network
#   namespace cutover-node<i>, its veth pair cutover-v<i> (host side) / eth0 (node side);
#   its engine's socket /run/cutover-cluster/node<i>/docker.sock, which is also
#   /run/cutover-cluster/self/docker.sock for the node's containers; its data and exec roots under
#   /var/lib/cutover-cluster/node<i>, its containers in the cgroup cutover-node<i>;
#   one iptables rule in the host's FORWARD chain, commented cutover-cluster, lets bridged
#   traffic pass (Docker sets the FORWARD policy to DROP).
# Overlay networks of the cluster take their subnets from 10.214.0.0/16.
#
# Needs root, dockerd, iproute2, nsenter and unshare (util-linux) and iptables.
set -euo pipefail
cd "$(dirname "$0")/.."

bridge=cutoverbr0
subnet_prefix=10.213.0
root=/var/lib/cutover-cluster
run=/run/cutover-cluster
rule=(FORWARD -i "$bridge" -o "$bridge" -m comment --comment cutover-cluster -j ACCEPT)
images=(localhost/cutover:test localhost/cutover-demo:v1 localhost/cutover-demo:v2
  localhost/cutover-demo:v3 localhost/cutover-demo:v4 localhost/cutover-prometheus:debian)

log() { echo "== swarm-cluster: $*" >&2; }
die() {
  log "$*"
  exit 1
}

netns() { echo "cutover-node$1"; }
address() { echo "$subnet_prefix.$((10 + $1))"; }
socket() { echo "$run/node$1/docker.sock"; }
dkr() { # node, docker args...
  local node=$1
  shift
  docker -H "unix://$(socket "$node")" "$@"
}

# The node numbers that have a namespace or a data directory.
nodes() {
  {
    ip netns list 2>/dev/null | sed -n 's/^cutover-node\([0-9]*\).*/\1/p'
    find "$root" -mindepth 1 -maxdepth 1 -name 'node*' -printf '%f\n' 2>/dev/null | sed -n 's/^node\([0-9]*\)$/\1/p'
  } | sort -un
}

# Every process of node $1: those in its network namespace (dockerd, containerd, the
# shims) and all their descendants (the containers, in namespaces of their own).
node_pids() {
  local ns pids=() queue=() pid
  ns=$(netns "$1")
  [ -e "/run/netns/$ns" ] || return 0
  mapfile -t queue < <(ip netns pids "$ns" 2>/dev/null)
  while [ "${#queue[@]}" -gt 0 ]; do
    pid=${queue[0]}
    queue=("${queue[@]:1}")
    pids+=("$pid")
    mapfile -t -O "${#queue[@]}" queue < <(pgrep -P "$pid" || true)
  done
  # Containers whose shim is already gone still sit in the node's cgroup.
  for tasks in /sys/fs/cgroup/pids/cutover-node"$1"/*/tasks; do
    [ -f "$tasks" ] && mapfile -t -O "${#pids[@]}" pids <"$tasks"
  done
  [ "${#pids[@]}" -gt 0 ] && printf '%s\n' "${pids[@]}" | sort -un
  return 0
}

kill_node() {
  local pids
  mapfile -t pids < <(node_pids "$1")
  [ "${#pids[@]}" -eq 0 ] && return 0
  # Stop them all first, so that no parent restarts a child it sees dying.
  kill -STOP "${pids[@]}" 2>/dev/null || true
  kill -KILL "${pids[@]}" 2>/dev/null || true
  for _ in $(seq 1 50); do
    [ -z "$(node_pids "$1")" ] && return 0
    sleep 0.1
  done
  log "node $1: processes survive SIGKILL: $(node_pids "$1" | tr '\n' ' ')"
}

start_node() {
  local i=$1 ns dir
  ns=$(netns "$i")
  dir="$root/node$i"
  [ -e "/run/netns/$ns" ] || die "node $i has no namespace: run up first"
  mkdir -p "$dir/data" "$dir/exec" "$run/node$i" "$run/self"
  chmod 700 "$root" "$dir" "$run"
  # Its own hostname (UTS namespace), so that Swarm tells the nodes apart by name, and its
  # own mount namespace: its containers' mounts die with it, and in it $run/self is the
  # node's own socket directory, so that a service bind-mounting $run/self/docker.sock
  # (the controller) talks to the engine of the node it runs on, wherever that is.
  nsenter --net="/run/netns/$ns" unshare --uts --mount --propagation private sh -c "
    hostname node$i && mount --bind '$run/node$i' '$run/self' && exec dockerd \
    --data-root '$dir/data' --exec-root '$dir/exec' --pidfile '$dir/exec/dockerd.pid' \
    -H 'unix://$(socket "$i")' --cgroup-parent /cutover-node$i \
    --bridge none --log-level warn" \
    >>"$dir/dockerd.log" 2>&1 </dev/null &
  for _ in $(seq 1 150); do
    dkr "$i" info >/dev/null 2>&1 && return 0
    sleep 0.2
  done
  tail -n 20 "$dir/dockerd.log" >&2
  die "node $i: dockerd did not start (log: $dir/dockerd.log)"
}

host_link() { echo "cutover-v$1"; }

up() {
  local n=${1:-3} i ns token tar
  [ "$(id -u)" = 0 ] || die "needs root"
  [[ "$n" =~ ^[1-9]$ ]] || die "the node count must be 1 to 9, not '$n'"
  for image in "${images[@]}"; do
    docker image inspect "$image" >/dev/null 2>&1 || die "the host engine has no $image: run scripts/swarm-env.sh first"
  done
  [ -n "$(nodes)" ] || ip link show "$bridge" >/dev/null 2>&1 && down
  log "bridge $bridge ($subnet_prefix.1/24)"
  ip link add "$bridge" type bridge
  ip addr add "$subnet_prefix.1/24" dev "$bridge"
  ip link set "$bridge" up
  iptables -I "${rule[@]}"
  for i in $(seq 1 "$n"); do
    ns=$(netns "$i")
    ip netns add "$ns"
    ip link add "$(host_link "$i")" type veth peer name eth0 netns "$ns"
    ip link set "$(host_link "$i")" master "$bridge" up
    ip -n "$ns" addr add "$(address "$i")/24" dev eth0
    ip -n "$ns" link set eth0 up
    ip -n "$ns" link set lo up
    log "node $i: dockerd at $(address "$i")"
    start_node "$i"
  done
  tar="$root/images.tar"
  docker save "${images[@]}" -o "$tar"
  local loads=()
  for i in $(seq 1 "$n"); do
    dkr "$i" load -q -i "$tar" >/dev/null &
    loads+=($!)
  done
  # Not a bare `wait`: that would wait for the engines too.
  for pid in "${loads[@]}"; do
    wait "$pid" || die "docker load failed on a node"
  done
  rm -f "$tar"
  log "swarm init on node 1"
  # A 2 s heartbeat: a dead node is marked down (and its tasks rescheduled) in seconds.
  dkr 1 swarm init --advertise-addr "$(address 1)" --listen-addr "$(address 1):2377" \
    --default-addr-pool 10.214.0.0/16 --dispatcher-heartbeat 2s >/dev/null
  token=$(dkr 1 swarm join-token -q manager)
  for i in $(seq 2 "$n"); do
    log "node $i joins as a manager"
    dkr "$i" swarm join --token "$token" --advertise-addr "$(address "$i")" \
      --listen-addr "$(address "$i"):2377" "$(address 1):2377" >/dev/null
  done
  for _ in $(seq 1 100); do
    [ "$(dkr 1 node ls --format '{{.Status}} {{.ManagerStatus}}' | grep -c '^Ready \(Leader\|Reachable\)')" = "$n" ] && break
    sleep 0.2
  done
  dkr 1 node ls >&2
  env_lines
}

env_lines() {
  for i in $(nodes); do
    echo "node$i $(socket "$i") $(address "$i")"
  done
}

down() {
  local i mounts
  for i in $(nodes); do
    kill_node "$i"
  done
  # Mounts the engines left (overlay roots, network namespaces, shm), deepest first.
  mapfile -t mounts < <(awk -v r="$root" -v e="$run" '$2 ~ "^(" r "|" e ")" {print $2}' /proc/mounts | sort -r)
  for m in "${mounts[@]}"; do
    umount -l "$m" 2>/dev/null || true
  done
  for i in $(nodes); do
    ip netns del "$(netns "$i")" 2>/dev/null || true
  done
  for link in $(ip -o link show 2>/dev/null | sed -n 's/^[0-9]*: \(cutover-v[0-9]*\)@.*/\1/p'); do
    ip link del "$link" 2>/dev/null || true
  done
  ip link show "$bridge" >/dev/null 2>&1 && ip link del "$bridge"
  while iptables -C "${rule[@]}" 2>/dev/null; do
    iptables -D "${rule[@]}"
  done
  # The containers' cgroups, deepest first (empty once their processes are gone).
  find /sys/fs/cgroup/*/ -maxdepth 1 -name 'cutover-node*' -type d 2>/dev/null | while read -r group; do
    find "$group" -depth -type d -exec rmdir {} \; 2>/dev/null || true
  done
  rm -rf "$root" "$run"
  return 0
}

check_clean() {
  local left=()
  [ -n "$(ip netns list 2>/dev/null | grep '^cutover-node')" ] && left+=("network namespaces: $(ip netns list | grep '^cutover-node' | tr '\n' ' ')")
  ip link show "$bridge" >/dev/null 2>&1 && left+=("the bridge $bridge")
  [ -n "$(ip -o link show | grep 'cutover-v[0-9]')" ] && left+=("veth links")
  iptables -C "${rule[@]}" 2>/dev/null && left+=("the iptables rule")
  [ -e "$root" ] && left+=("$root")
  [ -e "$run" ] && left+=("$run")
  pgrep -f "dockerd --data-root $root" >/dev/null && left+=("dockerd processes")
  [ -n "$(find /sys/fs/cgroup/*/ -maxdepth 1 -name 'cutover-node*' 2>/dev/null)" ] && left+=("cgroups cutover-node*")
  grep -q " $root" /proc/mounts && left+=("mounts under $root")
  if [ "${#left[@]}" -gt 0 ]; then
    log "left behind: ${left[*]}"
    return 1
  fi
  log "nothing left"
}

need_node() {
  [[ "${1:-}" =~ ^[1-9]$ ]] || die "name a node: 1 to 9"
}

case "${1:-}" in
  up) up "${2:-3}" ;;
  down) down ;;
  env) env_lines ;;
  kill-node)
    need_node "${2:-}"
    kill_node "$2"
    ;;
  start-node)
    need_node "${2:-}"
    start_node "$2"
    ;;
  partition)
    need_node "${2:-}"
    ip link set "$(host_link "$2")" down
    ;;
  heal)
    need_node "${2:-}"
    ip link set "$(host_link "$2")" up
    ;;
  check-clean) check_clean ;;
  -h | --help | "")
    sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'
    ;;
  *) die "unknown command '$1' (up [N], down, env, kill-node i, start-node i, partition i, heal i, check-clean)" ;;
esac
