# Sourced by the proxy benchmarks that start their own backends: the two nginx backends of
# bench/proxy.yaml (127.0.0.1:19001 answers "v1", :19002 "v2"), as the shared anchors
# script starts them, in one nginx worker; the cutover binary they measure; and a work
# directory cleaned up on exit.
#
#   start_backends DIR    # config, pid and error log in DIR; stop with: kill "$(cat DIR/b.pid)"
#   bin=$(cutover_bin)    # $CUTOVER_BIN, or a release build of the workspace's
#   bench_work            # sets $work and an EXIT trap that stops $proxy (when set) and
#                         # every process with a pid file in $work, then removes it
#   nginx_proxy NAME PORT DAEMON [DIRECTIVES]
#                         # an nginx proxy on PORT as the anchors script configures it
#                         # ($workers workers, 90/10 over the backends, keep-alive upstream),
#                         # `daemon DAEMON`, with DIRECTIVES added to its location; config,
#                         # pid and error log in $work/NAME.{conf,pid,err}; start it with
#                         # nginx -c "$work/NAME.conf"
#   haproxy_proxy NAME PORT
#                         # HAProxy on PORT as the anchors script configures it ($workers
#                         # threads, 90/10 round robin, connections reused); config and pid in
#                         # $work/NAME.{cfg,pid}; start it with haproxy -D -f "$work/NAME.cfg"
#   wait_up PORT...       # until each port answers HTTP (5 s at most each); fails if not
#   cpu_ticks PID...      # the processes' CPU so far (user + system), in clock ticks
#   $OWN_SESSION cmd &    # starts cmd in a session of its own, keeping its pid ($!)
#
# Why a session of its own: nginx and HAProxy daemonize, and a daemon starts a session. With
# the kernel's autogroup scheduling (/proc/sys/kernel/sched_autogroup_enabled; on by default
# in kernels built with it, Debian's among them), tasks outside any CPU control group share
# CPU between sessions first and between the threads of one session after, so a proxy left
# in the benchmark's session shares its share with wrk while the anchors have their own.
# Measured with bench/proxy-sessions.sh at two workers: nginx 4-15 % and cutover 7-15 %
# slower in the benchmark's session than in one of their own; at one worker 1-2 % in the
# medians, inside the rounds' spread (docs/benchmarks.md, tenth pass). Without job control
# (a script's background job is no process group leader) `setsid` does not fork, so $! is
# the proxy's own pid; with it, setsid forks and $! is gone at once, hence the check.
OWN_SESSION=setsid
case $- in
  *m*) echo "run the benchmarks without job control (set +m): setsid would fork"; exit 2;;
esac
start_backends() {
  cat > "$1/backend.conf" <<CONF
worker_processes 1; pid $1/b.pid; error_log $1/b.err; daemon on;
events { worker_connections 8192; }
http { access_log off;
  server { listen 127.0.0.1:19001; location / { return 200 "v1\n"; } }
  server { listen 127.0.0.1:19002; location / { return 200 "v2\n"; } } }
CONF
  nginx -c "$1/backend.conf"
}

nginx_proxy() {
  cat > "$work/$1.conf" <<CONF
worker_processes $workers; pid $work/$1.pid; error_log $work/$1.err; daemon $3;
events { worker_connections 8192; }
http { access_log off;
  upstream app { server 127.0.0.1:19001 weight=90; server 127.0.0.1:19002 weight=10; keepalive 256; }
  server { listen 127.0.0.1:$2;
    location / { proxy_pass http://app; proxy_http_version 1.1; proxy_set_header Connection ""; ${4:-} } } }
CONF
}

haproxy_proxy() {
  cat > "$work/$1.cfg" <<CONF
global
  nbthread $workers
  pidfile $work/$1.pid
defaults
  mode http
  timeout connect 2s
  timeout client 30s
  timeout server 30s
frontend f
  bind 127.0.0.1:$2
  default_backend b
backend b
  balance roundrobin
  http-reuse always
  server s1 127.0.0.1:19001 weight 90
  server s2 127.0.0.1:19002 weight 10
CONF
}

wait_up() {
  local port
  for port in "$@"; do
    for _ in $(seq 1 50); do
      curl -s -o /dev/null "http://127.0.0.1:$port/" && continue 2
      sleep 0.1
    done
    echo "nothing answers on 127.0.0.1:$port"
    return 1
  done
}

cpu_ticks() {
  local t=0 p
  for p in "$@"; do
    if [ -r "/proc/$p/stat" ]; then t=$((t + $(awk '{print $14 + $15}' "/proc/$p/stat"))); fi
  done
  echo "$t"
}

cutover_bin() {
  if [ -n "${CUTOVER_BIN:-}" ]; then
    echo "$CUTOVER_BIN"
    return
  fi
  cargo build --release --locked -q -p cutover-cli >&2 || return 1
  echo target/release/cutover
}

bench_work() {
  work=$(mktemp -d)
  proxy=
  trap bench_cleanup EXIT
}

bench_cleanup() {
  if [ -n "${proxy:-}" ]; then kill "$proxy" 2>/dev/null || true; fi
  for pid in "$work"/*.pid; do
    if [ -f "$pid" ]; then kill "$(cat "$pid")" 2>/dev/null || true; fi
  done
  rm -rf "$work"
}
