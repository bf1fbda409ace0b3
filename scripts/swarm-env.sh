#!/usr/bin/env bash
# Prepares a Docker Swarm for cutover's Swarm tests and benchmark, and builds their images.
#
#   - installs Debian's docker.io when dockerd is missing (as root, with apt-get);
#   - starts dockerd when no engine answers (its log: $TMPDIR/cutover-dockerd.log);
#   - makes the engine a single-node Swarm manager (`docker swarm init --advertise-addr
#     127.0.0.1`) when it is in no swarm;
#   - builds a static cutover binary (in $CARGO_TARGET_DIR/static, so the ordinary build
#     keeps its cache) and, FROM scratch around it, since no registry can be reached:
#       localhost/cutover:test           the cutover binary (proxy, controller)
#       localhost/cutover-demo:v1 .. v4  `cutover demo-app` of that version; v3 fails 20 %
#
# Idempotent: run it as often as you like. Prints what it does.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { echo "== swarm-env: $*"; }

if ! command -v dockerd >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    log "installing docker.io (Debian package)"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends docker.io >/dev/null
  else
    log "dockerd is missing and cannot be installed here (needs root and apt-get)" >&2
    exit 1
  fi
fi

if ! docker info >/dev/null 2>&1; then
  log "starting dockerd"
  nohup dockerd >"${TMPDIR:-/tmp}/cutover-dockerd.log" 2>&1 &
  for _ in $(seq 1 60); do
    docker info >/dev/null 2>&1 && break
    sleep 0.5
  done
  docker info >/dev/null 2>&1 || { log "dockerd did not start; see ${TMPDIR:-/tmp}/cutover-dockerd.log" >&2; exit 1; }
fi

if [ "$(docker info --format '{{.Swarm.LocalNodeState}}')" != active ]; then
  log "docker swarm init"
  docker swarm init --advertise-addr 127.0.0.1 >/dev/null
fi

target_dir="${CARGO_TARGET_DIR:-$PWD/target}/static"
triple="$(rustc -vV | sed -n 's/^host: //p')"
log "building a static cutover ($triple, in $target_dir)"
RUSTFLAGS='-C target-feature=+crt-static' CARGO_TARGET_DIR="$target_dir" \
  cargo build --release --locked --quiet -p cutover-cli --target "$triple"
binary="$target_dir/$triple/release/cutover"

context="$(mktemp -d)"
trap 'rm -rf "$context"' EXIT
cp "$binary" "$context/cutover"

image() { # name, then the Dockerfile's lines
  local name=$1
  shift
  printf '%s\n' "FROM scratch" "COPY cutover /cutover" "$@" >"$context/Dockerfile"
  DOCKER_BUILDKIT=0 docker build --quiet --tag "$name" "$context" >/dev/null 2>"$context/build.log" ||
    { cat "$context/build.log" >&2; exit 1; }
}

log "building images"
image localhost/cutover:test 'ENTRYPOINT ["/cutover"]'
for version in v1 v2 v3 v4; do
  extra=""
  [ "$version" = v3 ] && extra=', "--error-rate", "0.2"'
  image "localhost/cutover-demo:$version" \
    'ENTRYPOINT ["/cutover", "demo-app"]' \
    "CMD [\"--app-version\", \"$version\", \"--bind\", \"0.0.0.0\", \"--port\", \"8080\"$extra]"
done
log "ready: $(docker info --format 'Docker {{.ServerVersion}}, swarm {{.Swarm.LocalNodeState}}')"
