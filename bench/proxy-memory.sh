#!/usr/bin/env bash
# Memory of cutover's proxy: resident set when idle, and with 10,000 idle keep-alive client
# connections open (each has sent one request through the proxy and waits).
#
#   bash bench/proxy-memory.sh     # CONNECTIONS (default 10000), WORKERS (default 2)
set -euo pipefail
cd "$(dirname "$0")/.."
CONNECTIONS=${CONNECTIONS:-10000}
WORKERS=${WORKERS:-2}
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
cargo build --release --locked -q -p cutover-cli
T=$(mktemp -d)
cleanup() { kill "${PROXY:-}" "${BACKEND:-}" 2>/dev/null || true; rm -rf "$T"; }
trap cleanup EXIT
cat > "$T/backend.conf" <<CONF
worker_processes 1; pid $T/b.pid; error_log $T/b.err; daemon off;
events { worker_connections 1024; }
http { access_log off; server { listen 127.0.0.1:19001; listen 127.0.0.1:19002; location / { return 200 "ok\n"; } } }
CONF
nginx -c "$T/backend.conf" & BACKEND=$!
env WORKERS="$WORKERS" CUTOVER_LOG=warn target/release/cutover proxy --config bench/proxy.yaml & PROXY=$!
for _ in $(seq 1 50); do curl -sf -o /dev/null http://127.0.0.1:19300/ && break; sleep 0.1; done
rss() { awk '/VmRSS/ {print $2}' "/proc/$PROXY/status"; }
curl -sf -o /dev/null http://127.0.0.1:19300/
echo "idle RSS after one request: $(( $(rss) / 1024 )) MiB (workers=$WORKERS)"
python3 - "$CONNECTIONS" "$PROXY" <<'PY'
import socket, sys, time
n, pid = int(sys.argv[1]), sys.argv[2]
conns = []
# One request at a time, each on a new connection left open: the idle connections pile
# up, while the upstream side sees one request at a time (no burst of upstream connections).
for i in range(n):
    s = socket.create_connection(("127.0.0.1", 19300))
    s.sendall(b"GET / HTTP/1.1\r\nHost: bench\r\n\r\n")
    s.settimeout(10)
    data = b""
    while b"\r\n\r\n" not in data:
        data += s.recv(4096)
    conns.append(s)
time.sleep(1)
rss = int([l.split()[1] for l in open(f"/proc/{pid}/status") if l.startswith("VmRSS")][0])
print(f"RSS with {n} idle keep-alive connections: {rss // 1024} MiB")
for s in conns:
    s.close()
PY
