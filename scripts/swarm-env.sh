#!/usr/bin/env bash
# Prepares a Docker Swarm for cutover's Swarm tests, benchmark and examples, and builds their
# images, FROM scratch, since no registry can be reached:
#
#   - installs Debian's docker.io when dockerd is missing, and Debian's prometheus when it is
#     missing (as root, with apt-get);
#   - starts dockerd when no engine answers (its log: $TMPDIR/cutover-dockerd.log);
#   - makes the engine a single-node Swarm manager (`docker swarm init --advertise-addr
#     127.0.0.1`) when it is in no swarm;
#   - builds, around a static cutover binary (built in $CARGO_TARGET_DIR/static, so the
#     ordinary build keeps its cache):
#       localhost/cutover:test           the cutover binary (proxy, controller)
#       localhost/cutover-demo:v1 .. v4  `cutover demo-app` of that version; v3 fails 20 %
#   - and, around Debian's prometheus binary and the libraries it links:
#       localhost/cutover-prometheus:<Debian version, + as ->  and  localhost/cutover-prometheus:debian
#     (the Swarm stack's default), running as nobody (65534) with its data in /prometheus.
#
# Each image carries the label dev.cutover.inputs: a hash of everything it is built from (the
# sources of the cutover binary, the toolchain and this script; or the prometheus binary, its
# libraries and its files). An image whose label matches is current and is not built again,
# and when every cutover image is current, cargo does not run either. A changed source file
# changes the hash, so a stale image is always rebuilt.
#
# Usage: swarm-env.sh [--rebuild]    --rebuild builds the binary and every image regardless
#
# Idempotent: run it as often as you like. Prints what it does.
set -euo pipefail
cd "$(dirname "$0")/.."

rebuild=false
for arg in "$@"; do
  case "$arg" in
    --rebuild) rebuild=true ;;
    -h | --help)
      sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'
      exit 0
      ;;
    *)
      echo "swarm-env.sh: unknown argument '$arg' (usage: swarm-env.sh [--rebuild])" >&2
      exit 2
      ;;
  esac
done

log() { echo "== swarm-env: $*"; }

apt_install() { # package: installs a Debian package, as root only
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    log "installing $1 (Debian package)"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$1" >/dev/null
  else
    return 1
  fi
}

if ! command -v dockerd >/dev/null 2>&1; then
  apt_install docker.io || {
    log "dockerd is missing and cannot be installed here (needs root and apt-get)" >&2
    exit 1
  }
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

context="$(mktemp -d)"
trap 'rm -rf "$context"' EXIT

inputs_label=dev.cutover.inputs

# Whether image $1 exists and carries the inputs hash $2 (never, with --rebuild).
current() {
  [ "$rebuild" = false ] &&
    [ "$(docker image inspect --format "{{index .Config.Labels \"$inputs_label\"}}" "$1" 2>/dev/null)" = "$2" ]
}

# Builds the image $1, labelled with the inputs hash $2, from the directory $3, whose
# Dockerfile is the remaining arguments, one line each.
build_image() {
  local name=$1 hash=$2 dir=$3
  shift 3
  printf '%s\n' "$@" >"$dir/Dockerfile"
  DOCKER_BUILDKIT=0 docker build --quiet --label "$inputs_label=$hash" --tag "$name" "$dir" \
    >/dev/null 2>"$context/build.log" || { cat "$context/build.log" >&2; exit 1; }
}

# The hash of an image's inputs: the hash of what it is built from, then its recipe.
recipe_hash() {
  printf '%s\n' "$@" | sha256sum | cut -c1-64
}

# --- cutover and the demo app ------------------------------------------------------------

triple="$(rustc -vV | sed -n 's/^host: //p')"
static_rustflags='-C target-feature=+crt-static'
# What the static binary is built from: the workspace's manifests and sources (the members
# cutover-cli builds with), the toolchain, the flags, and this script; not the tests/ nor
# the sources of the test-only crates under integration-tests/ (their manifests count, as
# the workspace reads them), which the binary does not contain. Relative paths, sorted, so
# two clones of the same commit agree.
sources_hash="$(
  {
    rustc -vV
    echo "RUSTFLAGS=$static_rustflags target=$triple"
    find Cargo.toml Cargo.lock crates examples/demo-app integration-tests scripts/swarm-env.sh \
      -type f ! -path '*/target/*' ! -path '*/tests/*' ! -path 'integration-tests/*/src/*' -print0 | LC_ALL=C sort -z | xargs -0 sha256sum
  } | sha256sum | cut -c1-64
)"

names=(localhost/cutover:test)
recipes=('ENTRYPOINT ["/cutover"]')
for version in v1 v2 v3 v4; do
  extra=""
  [ "$version" = v3 ] && extra=', "--error-rate", "0.2"'
  names+=("localhost/cutover-demo:$version")
  recipes+=("ENTRYPOINT [\"/cutover\", \"demo-app\"]
CMD [\"--app-version\", \"$version\", \"--bind\", \"0.0.0.0\", \"--port\", \"8080\"$extra]")
done

stale=()
for i in "${!names[@]}"; do
  current "${names[$i]}" "$(recipe_hash "$sources_hash" "${recipes[$i]}")" || stale+=("$i")
done

if [ "${#stale[@]}" = 0 ]; then
  log "cutover images current (inputs ${sources_hash:0:12}): no build"
else
  target_dir="${CARGO_TARGET_DIR:-$PWD/target}/static"
  log "building a static cutover ($triple, in $target_dir)"
  RUSTFLAGS="$static_rustflags" CARGO_TARGET_DIR="$target_dir" \
    cargo build --release --locked --quiet -p cutover-cli --target "$triple"
  mkdir "$context/cutover"
  cp "$target_dir/$triple/release/cutover" "$context/cutover/cutover"
  for i in "${stale[@]}"; do
    log "building ${names[$i]}"
    build_image "${names[$i]}" "$(recipe_hash "$sources_hash" "${recipes[$i]}")" "$context/cutover" \
      "FROM scratch" "COPY cutover /cutover" "${recipes[$i]}"
  done
fi

# --- Prometheus --------------------------------------------------------------------------

if ! command -v prometheus >/dev/null 2>&1; then
  apt_install prometheus || log "prometheus is missing and cannot be installed here (needs root and apt-get): no localhost/cutover-prometheus image" >&2
fi

if command -v prometheus >/dev/null 2>&1; then
  prometheus_binary="$(readlink -f "$(command -v prometheus)")"
  version="$(dpkg-query -W -f '${Version}' prometheus 2>/dev/null ||
    "$prometheus_binary" --version 2>&1 | sed -n '1s/^prometheus, version \([^ ]*\).*/\1/p')"
  # A tag allows letters, digits, '_', '.' and '-': 2.42.0+ds-5+deb12u1 is 2.42.0-ds-5-deb12u1.
  tag="$(printf '%s' "$version" | tr -c 'A-Za-z0-9_.-' '-')"
  root="$context/prometheus/rootfs"
  mkdir -p "$root/bin" "$root/etc/prometheus" "$context/prometheus/data"
  cp "$prometheus_binary" "$root/bin/prometheus"
  # Debian builds it with cgo: it needs the C library and the loader (ldd names both).
  for lib in $(ldd "$prometheus_binary" 2>/dev/null | grep -o '/[^ ]*'); do
    mkdir -p "$root$(dirname "$lib")"
    cp -L "$lib" "$root$lib"
  done
  # CA certificates, for https targets and remote endpoints.
  if [ -f /etc/ssl/certs/ca-certificates.crt ]; then
    mkdir -p "$root/etc/ssl/certs"
    cp /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/"
  fi
  # A config of its own, so the image runs alone (the stack mounts its own over it).
  cat >"$root/etc/prometheus/prometheus.yml" <<'EOF'
# localhost/cutover-prometheus's default: it scrapes itself. Mount your own here.
global:
  scrape_interval: 15s
scrape_configs:
  - job_name: prometheus
    static_configs:
      - targets: [localhost:9090]
EOF
  recipe=(
    "FROM scratch"
    "COPY rootfs/ /"
    "COPY --chown=65534:65534 data/ /prometheus/"
    "USER 65534:65534"
    "WORKDIR /prometheus"
    "EXPOSE 9090"
    'ENTRYPOINT ["/bin/prometheus"]'
    'CMD ["--config.file=/etc/prometheus/prometheus.yml", "--storage.tsdb.path=/prometheus"]'
  )
  prometheus_hash="$(
    {
      printf '%s\n' "${recipe[@]}"
      (cd "$context/prometheus" && find . -type f -print0 | LC_ALL=C sort -z | xargs -0 sha256sum)
    } | sha256sum | cut -c1-64
  )"
  if current "localhost/cutover-prometheus:$tag" "$prometheus_hash" &&
    current localhost/cutover-prometheus:debian "$prometheus_hash"; then
    log "localhost/cutover-prometheus:$tag current: no build"
  else
    log "building localhost/cutover-prometheus:$tag (Debian's prometheus $version)"
    build_image "localhost/cutover-prometheus:$tag" "$prometheus_hash" "$context/prometheus" "${recipe[@]}"
    docker tag "localhost/cutover-prometheus:$tag" localhost/cutover-prometheus:debian
  fi
fi

log "ready: $(docker info --format 'Docker {{.ServerVersion}}, swarm {{.Swarm.LocalNodeState}}')"
