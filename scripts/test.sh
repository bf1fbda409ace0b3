#!/usr/bin/env bash
# cutover's whole test suite: formatting, lints, and every unit, property, simulation and
# CLI test, and the end-to-end suites of integration-tests/e2e (which share the harnesses of
# integration-tests/kit with the crates' own tests). This is the README's test command, and
# all that CI runs. Under CI (CI set) no suite skips: a missing Prometheus or Swarm fails it.
#
# Needs the Rust toolchain (cargo with rustfmt and clippy) and, for the tests with real parts,
# Debian's prometheus and docker.io packages, which this script installs when run as root
# (scripts/swarm-env.sh also starts dockerd, makes it a Swarm manager and builds the images
# the Swarm tests run, the registry-free Prometheus image among them; an image is built again
# whenever a hash of its inputs changes, so the tests never run an old binary).
# CARGO_TARGET_DIR may point at a shared target directory to reuse an earlier build; a cold
# run works too.
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== cargo fmt --check"
cargo fmt --all --check

echo "== cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings

# Real parts: the Prometheus provider is tested against Debian's Prometheus. Installed
# here when missing (CI runs as root); elsewhere its test skips, saying so, unless CI is set.
if ! command -v prometheus >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "== installing prometheus (Debian package)"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null
  else
    echo "== prometheus is not installed and cannot be installed here: its test will skip (fail under CI=true)"
  fi
fi

# Real parts: the web dashboard is tested in a real browser, Debian's headless Chromium
# driven by chromedriver over WebDriver (integration-tests/e2e/tests/dashboard.rs).
# Installed here when missing (CI runs as root); elsewhere its tests skip, saying so, unless
# CI is set. CUTOVER_SCREENSHOTS=1 makes the test save its screenshots in docs/dashboard/
# (off by default, so a run never dirties the tree).
if ! command -v chromium >/dev/null 2>&1 || ! command -v chromedriver >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "== installing chromium and chromium-driver (Debian packages)"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium chromium-driver >/dev/null
  else
    echo "== chromium is not installed and cannot be installed here: the dashboard's browser tests will skip (fail under CI=true)"
  fi
fi

# Real parts: the proxy's HTTP/2 is checked by h2load (Debian's nghttp2-client) over h2c
# and TLS. Installed here when missing (CI runs as root); elsewhere its test skips, saying
# so, unless CI is set.
if ! command -v h2load >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "== installing h2load (Debian package nghttp2-client)"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends nghttp2-client >/dev/null
  else
    echo "== h2load is not installed and cannot be installed here: its test will skip (fail under CI=true)"
  fi
fi

# Real parts: the Swarm backend is tested on a real single-node Swarm.
if [ "$(id -u)" = 0 ] || docker info >/dev/null 2>&1; then
  echo "== preparing Docker Swarm (scripts/swarm-env.sh)"
  bash scripts/swarm-env.sh
else
  echo "== Docker Swarm cannot be prepared here (needs root): the Swarm tests will skip (fail under CI=true)"
fi

# --- Docker backend: Compose and Podman (integration-tests/e2e/tests/docker.rs) -------------
# The Docker backend's end-to-end tests drive Compose projects on the Docker engine above
# (Debian's docker-compose 1.29) and, when it runs here, on Podman 4.3's Docker-compatible
# API (`podman system service` on unix:///run/podman/podman.sock), which this block starts
# for the tests and stops after them. Podman's API ignores containers.conf's default
# ulimits (its containers then fail to start: this machine's hard nofile is lower than
# Podman's default), so the tests' Compose services declare theirs; containers.conf gets
# the same defaults for `podman run`. CUTOVER_TEST_PODMAN tells the tests Podman answers.
podman_pid=""
stop_podman() {
  if [ -n "$podman_pid" ]; then
    kill "$podman_pid" 2>/dev/null || true
    wait "$podman_pid" 2>/dev/null || true
    podman_pid=""
  fi
}
trap stop_podman EXIT
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  missing=()
  command -v docker-compose >/dev/null 2>&1 || missing+=(docker-compose)
  command -v podman >/dev/null 2>&1 || missing+=(podman)
  if [ "${#missing[@]}" -gt 0 ]; then
    echo "== installing ${missing[*]} (Debian packages)"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
fi
podman_socket=/run/podman/podman.sock
if command -v podman >/dev/null 2>&1 && [ "$(id -u)" = 0 ] && docker info >/dev/null 2>&1; then
  if ! grep -qs '^default_ulimits' /etc/containers/containers.conf; then
    mkdir -p /etc/containers
    ulimits='default_ulimits = ["nofile=1024:4096", "nproc=1024:1024"]'
    if grep -qs '^\[containers\]' /etc/containers/containers.conf; then
      # Into the existing table: a second [containers] header would make the file invalid.
      sed -i "/^\[containers\]/a $ulimits" /etc/containers/containers.conf
    else
      printf '%s\n' "[containers]" "$ulimits" >>/etc/containers/containers.conf
    fi
  fi
  if ! curl -fsS --max-time 2 --unix-socket "$podman_socket" http://podman/_ping >/dev/null 2>&1; then
    echo "== starting podman system service ($podman_socket)"
    mkdir -p "$(dirname "$podman_socket")"
    podman system service --time=0 "unix://$podman_socket" >"${TMPDIR:-/tmp}/cutover-podman.log" 2>&1 &
    podman_pid=$!
    for _ in $(seq 1 40); do
      curl -fsS --max-time 2 --unix-socket "$podman_socket" http://podman/_ping >/dev/null 2>&1 && break
      sleep 0.25
    done
  fi
  if curl -fsS --max-time 2 --unix-socket "$podman_socket" http://podman/_ping >/dev/null 2>&1; then
    # Podman keeps its own images: the demo app's, copied from Docker when they differ.
    for version in v1 v2 v3 v4; do
      image="localhost/cutover-demo:$version"
      want="$(docker image inspect --format '{{.Id}}' "$image" 2>/dev/null || true)"
      have="$(podman image inspect --format '{{.Id}}' "$image" 2>/dev/null || true)"
      if [ -n "$want" ] && [ "${want#sha256:}" != "${have#sha256:}" ]; then
        docker save "$image" | podman load -q >/dev/null
      fi
    done
    export CUTOVER_TEST_PODMAN="unix://$podman_socket"
    echo "== podman answers on $podman_socket: the Docker backend's core tests run on it too"
  else
    echo "== podman system service did not answer (see ${TMPDIR:-/tmp}/cutover-podman.log): the Docker backend's tests run on Docker only" >&2
    stop_podman
  fi
else
  echo "== podman is not available here: the Docker backend's tests run on Docker only"
fi
# --- end of the Docker backend block ------------------------------------------------------

# Every member's tests: the crates' own, then integration-tests/e2e (package cutover-e2e),
# whose suites build and run the `cutover` binary through cargo (cutover-test-kit's
# `binary` module: already built by this command, so nothing is rebuilt).
echo "== cargo test"
cargo test --workspace --locked

# The Swarm tests remove everything they create, also when they fail: check.
if docker info >/dev/null 2>&1; then
  left="$(docker service ls --quiet --filter label=dev.cutover.test)"
  if [ -n "$left" ]; then
    echo "== the tests left Swarm services behind:" >&2
    docker service ls --filter label=dev.cutover.test >&2
    exit 1
  fi
  echo "== docker service ls: nothing left by the tests"
fi

# --- Docker backend: nothing left on either engine ---------------------------------------
# The Docker backend's tests remove the containers, networks and volumes they create (all
# labelled dev.cutover.test), also when they fail: check, on Docker and on Podman.
left_behind() { # engine name, then the environment for `docker`
  local name=$1 kind found=""
  shift
  for kind in "container ls --all" "network ls" "volume ls"; do
    # shellcheck disable=SC2086 # $kind is a subcommand and its flags
    if ! found="$(env "$@" docker $kind --quiet --filter label=dev.cutover.test)"; then
      echo "== cannot list what the tests left on $name (docker $kind failed)" >&2
      return 1
    fi
    if [ -n "$found" ]; then
      echo "== the tests left these behind on $name:" >&2
      # shellcheck disable=SC2086
      env "$@" docker $kind --filter label=dev.cutover.test >&2
      return 1
    fi
  done
  echo "== $name: no container, network or volume left by the tests"
}
if docker info >/dev/null 2>&1; then
  left_behind Docker DOCKER_HOST="${DOCKER_HOST:-unix:///var/run/docker.sock}"
fi
if [ -n "${CUTOVER_TEST_PODMAN:-}" ]; then
  left_behind Podman DOCKER_HOST="$CUTOVER_TEST_PODMAN"
fi
stop_podman
# --- end of the Docker backend's check ----------------------------------------------------

# The release loader's fuzz target, briefly: what `cutover lint` runs on untrusted pull
# requests. Starts from the committed corpus; a crash fails the run (scripts/fuzz.sh runs
# every target for longer). Installs cargo-fuzz when missing; builds without the proxy.
echo "== fuzzing the release loader (scripts/fuzz.sh load_release 30)"
bash scripts/fuzz.sh load_release 30

# --- multi-node Swarm (scripts/swarm-cluster.sh; issue 18) -------------------------------
# Three Docker engines in network namespaces on one bridge form a three-manager Swarm; the
# suite swarm_cluster runs its scenarios (node loss, controller's node loss, partition,
# quorum loss) on it. The cluster is taken down after the suite, passed or failed, and the
# script checks that nothing of it remains (no namespace, bridge, rule, process, directory).
if [ "$(id -u)" = 0 ] && command -v dockerd >/dev/null 2>&1; then
  echo "== multi-node Swarm: scripts/swarm-cluster.sh up 3"
  trap 'bash scripts/swarm-cluster.sh down' EXIT
  bash scripts/swarm-cluster.sh up 3
  cluster_started=$SECONDS
  # --workspace, as the run above: `-p cutover-e2e` alone resolves features differently and
  # would build half the workspace again.
  CUTOVER_CLUSTER=1 cargo test --workspace --locked --test swarm_cluster -- --test-threads=1
  echo "== multi-node Swarm suite: $((SECONDS - cluster_started)) s"
  bash scripts/swarm-cluster.sh down
  trap - EXIT
  bash scripts/swarm-cluster.sh check-clean
else
  echo "== the multi-node Swarm needs root and dockerd: its suite skips (fails under CI=true)"
  if [ -n "${CI:-}" ]; then
    exit 1
  fi
  cargo test --workspace --locked --test swarm_cluster
fi
