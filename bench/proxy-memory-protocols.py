#!/usr/bin/env python3
"""Memory per idle client connection over HTTP/1.1, h2c, TLS + HTTP/1.1 and TLS + h2.

The HTTP/1.1 figure of issue 15 comes from ../shared/bench/proxy-memory-anchors.sh; this
script states the other protocols beside it, in one run, for cutover's proxy, nginx and
HAProxy, each configured the same way: one worker, a 90/10 split between two nginx
backends that answer `return 200`, idle client timeouts of 300 s.

For each proxy and protocol a fresh proxy process is started; one connection makes one
request and closes (warm-up), then the idle RSS is read; then N connections each complete
one request and stay open, idle (HTTP/2 PINGs are answered, as a browser would); the RSS is
read again. Before closing them, every connection is checked with a non-blocking recv: one
the proxy closed (EOF, reset or GOAWAY) counts as `closed`, never as idle. After closing them
all the RSS is read a third time (`after_close_kib`): memory that does not come back; and
the proxy's open file descriptors are counted against the idle count (`extra_fds`): above a
few (pooled upstream connections), client connections the proxy still holds.

    python3 bench/proxy-memory-protocols.py --bin /work/notes/cutover-r24-before --n 5000

Output: one table, `proxy protocol idle_kib with_n_kib per_conn_bytes open closed failed
after_close_kib extra_fds` (RSS of all the proxy's processes, KiB). A proxy that cannot speak a
protocol prints `n/a` and why. Ports are picked free at start, so other benchmarks running
on the machine (19001, 19100, 19300...) are not disturbed. Needs nginx (with http_v2 and
ssl), haproxy, openssl and python3 only; every process and the temp dir are removed on exit,
also on failure or timeout.
"""

import argparse
import os
import resource
import selectors
import shutil
import signal
import socket
import ssl
import struct
import subprocess
import sys
import tempfile
import time

PROTOCOLS = ("h1", "h2c", "tls-h1", "tls-h2")
PROXIES = ("cutover", "nginx", "haproxy")


class Timeout(Exception):
    """The whole run took longer than --timeout."""


class Unsupported(Exception):
    """A proxy cannot speak a protocol (printed as n/a with the reason)."""


# ---------------------------------------------------------------- environment


def free_ports(count):
    """Ports nobody listens on right now (bound once to port 0 and released)."""
    socks, ports = [], []
    for _ in range(count):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        socks.append(s)
        ports.append(s.getsockname()[1])
    for s in socks:
        s.close()
    return ports


def raise_fd_limit():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


def rss_kib(pids):
    total = 0
    for pid in pids:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
    return total


def fd_count(pids):
    return sum(len(os.listdir(f"/proc/{pid}/fd")) for pid in pids)


def children(pid):
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


def wait_listening(port, proc, deadline=10.0):
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before listening on {port}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {port} after {deadline:.0f} s")


class Processes:
    """Every process this script started, each in a session of its own; all stopped on exit."""

    def __init__(self):
        self.procs = []

    def start(self, argv, log):
        with open(log, "ab") as out:
            proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, start_new_session=True)
        self.procs.append(proc)
        return proc

    def stop(self, proc):
        if proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                proc.wait(timeout=5)
        # nginx workers may outlive a master killed by SIGKILL: the group goes too.
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        if proc in self.procs:
            self.procs.remove(proc)

    def stop_all(self):
        for proc in list(self.procs):
            try:
                self.stop(proc)
            except Exception as e:  # keep stopping the others
                print(f"# cleanup: {e}", file=sys.stderr)


# ---------------------------------------------------------------- configs


def make_cert(tmp):
    cert, key = os.path.join(tmp, "cert.pem"), os.path.join(tmp, "key.pem")
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-keyout", key, "-out", cert, "-days", "2", "-subj", "/CN=localhost",
         "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"],
        check=True, capture_output=True, timeout=30)
    os.chmod(key, 0o600)
    both = os.path.join(tmp, "haproxy.pem")
    with open(both, "w") as f:
        f.write(open(cert).read() + open(key).read())
    os.chmod(both, 0o600)
    return cert, key, both


def backend_conf(tmp, b1, b2):
    return f"""worker_processes 1; pid {tmp}/backend.pid; error_log {tmp}/backend.err; daemon off;
events {{ worker_connections 4096; }}
http {{ access_log off; keepalive_requests 100000;
  client_body_temp_path {tmp}/b-body; proxy_temp_path {tmp}/b-proxy;
  fastcgi_temp_path {tmp}/b-fcgi; uwsgi_temp_path {tmp}/b-uwsgi; scgi_temp_path {tmp}/b-scgi;
  server {{ listen 127.0.0.1:{b1}; location / {{ return 200 "v1\\n"; }} }}
  server {{ listen 127.0.0.1:{b2}; location / {{ return 200 "v2\\n"; }} }} }}
"""


def nginx_conf(tmp, a, ports, cert, key):
    conns = a.n + 1000
    return f"""worker_processes {a.workers}; pid {tmp}/nginx.pid; error_log {tmp}/nginx.err;
daemon off; worker_rlimit_nofile {a.fd_limit};
events {{ worker_connections {conns}; }}
http {{ access_log off; keepalive_timeout 300s; keepalive_requests 100000;
  client_body_temp_path {tmp}/n-body; proxy_temp_path {tmp}/n-proxy;
  fastcgi_temp_path {tmp}/n-fcgi; uwsgi_temp_path {tmp}/n-uwsgi; scgi_temp_path {tmp}/n-scgi;
  upstream app {{ server 127.0.0.1:{ports['b1']} weight=90; server 127.0.0.1:{ports['b2']} weight=10;
                 keepalive 256; }}
  server {{
    listen 127.0.0.1:{ports['nginx-h1']};
    listen 127.0.0.1:{ports['nginx-h2c']} http2;
    listen 127.0.0.1:{ports['nginx-tls']} ssl http2;
    ssl_certificate {cert}; ssl_certificate_key {key};
    location / {{ proxy_pass http://app; proxy_http_version 1.1; proxy_set_header Connection ""; }}
  }} }}
"""


def haproxy_conf(tmp, a, ports, pem):
    maxconn = a.n + 500
    return f"""global
  nbthread {a.workers}
  maxconn {maxconn}
  pidfile {tmp}/haproxy.pid
defaults
  mode http
  maxconn {maxconn}
  timeout connect 2s
  timeout client 300s
  timeout server 30s
  timeout http-keep-alive 300s
frontend f
  bind 127.0.0.1:{ports['haproxy-h1']}
  bind 127.0.0.1:{ports['haproxy-h2c']} proto h2
  bind 127.0.0.1:{ports['haproxy-tls']} ssl crt {pem} alpn h2,http/1.1
  default_backend b
backend b
  balance roundrobin
  http-reuse always
  server s1 127.0.0.1:{ports['b1']} weight 90
  server s2 127.0.0.1:{ports['b2']} weight 10
"""


def cutover_conf(a, ports, cert, key):
    # bench/proxy.yaml's shape on free ports, a TLS listener beside the plain one (which also
    # serves h2c), and the same 300 s idle time the anchors get.
    return f"""listeners:
  - address: 127.0.0.1:{ports['cutover-plain']}
  - address: 127.0.0.1:{ports['cutover-tls']}
    tls: {{certFile: {cert}, keyFile: {key}}}
admin:
  address: 127.0.0.1:{ports['cutover-admin']}
workers: {a.workers}
timeouts:
  keepAliveIdle: 300s
routes:
  - release: bench
    stable: {{name: v1, endpoints: ["127.0.0.1:{ports['b1']}"]}}
    candidate: {{name: v2, endpoints: ["127.0.0.1:{ports['b2']}"]}}
    weight: 10
"""


def port_of(proxy, protocol, ports):
    if proxy == "cutover":
        return ports["cutover-tls" if protocol.startswith("tls") else "cutover-plain"]
    kind = {"h1": "h1", "h2c": "h2c"}.get(protocol, "tls")
    return ports[f"{proxy}-{kind}"]


# ---------------------------------------------------------------- clients

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
DATA, HEADERS, RST_STREAM, SETTINGS, PING, GOAWAY = 0x0, 0x1, 0x3, 0x4, 0x6, 0x7
END_STREAM, ACK = 0x1, 0x1


def frame(kind, flags, stream, payload=b""):
    return struct.pack(">I", len(payload))[1:] + bytes([kind, flags]) + struct.pack(">I", stream) + payload


def h2_request(authority):
    # HPACK by hand: :method GET (0x82), :path / (0x84), :scheme (0x86 http / 0x87 https),
    # :authority as a literal without indexing on static name index 1.
    raw = authority.encode()
    return b"\x82\x84" + b"\x01" + bytes([len(raw)]) + raw


class H2Reader:
    """Splits received bytes into frames and answers what an idle client must answer."""

    def __init__(self):
        self.buf = b""
        self.done = False  # END_STREAM seen on stream 1
        self.goaway = False
        self.status_ok = False

    def feed(self, sock, data):
        self.buf += data
        while len(self.buf) >= 9:
            length = int.from_bytes(self.buf[:3], "big")
            if len(self.buf) < 9 + length:
                break
            kind, flags = self.buf[3], self.buf[4]
            stream = int.from_bytes(self.buf[5:9], "big") & 0x7FFFFFFF
            payload = self.buf[9:9 + length]
            self.buf = self.buf[9 + length:]
            if kind == SETTINGS and not flags & ACK:
                sock.sendall(frame(SETTINGS, ACK, 0))
            elif kind == PING and not flags & ACK:
                sock.sendall(frame(PING, ACK, 0, payload))
            elif kind == GOAWAY:
                self.goaway = True
            elif kind == RST_STREAM and stream == 1:
                raise RuntimeError("the proxy reset stream 1")
            if kind == HEADERS and stream == 1 and not self.status_ok:
                # :status 200 is static index 8 (0x88); a literal would carry "200" early on.
                # A HEADERS frame with PADDED or PRIORITY flags is not expected from these proxies.
                if not (payload[:1] == b"\x88" or b"200" in payload[:8]):
                    raise RuntimeError(f"response status not 200: {payload[:16].hex()}")
                self.status_ok = True
            if kind in (DATA, HEADERS) and stream == 1 and flags & END_STREAM:
                self.done = True


def read_h1_response(sock):
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(4096)
        if not chunk:
            raise RuntimeError("closed before the response head")
        data += chunk
    head, body = data.split(b"\r\n\r\n", 1)
    status = head.split(b" ", 2)[1]
    if status != b"200":
        raise RuntimeError(f"status {status.decode()}")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value.strip())
    while len(body) < length:
        chunk = sock.recv(4096)
        if not chunk:
            raise RuntimeError("closed mid-body")
        body += chunk


class Client:
    """Opens one connection of a protocol, makes one request, and keeps it idle."""

    def __init__(self, protocol, port, cafile):
        self.protocol, self.port = protocol, port
        self.ctx = None
        if protocol.startswith("tls"):
            self.ctx = ssl.create_default_context(cafile=cafile)
            self.ctx.set_alpn_protocols(["h2" if protocol == "tls-h2" else "http/1.1"])

    def open(self):
        sock = socket.create_connection(("127.0.0.1", self.port), timeout=10)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            if self.ctx is not None:
                sock = self.ctx.wrap_socket(sock, server_hostname="localhost")
                want = "h2" if self.protocol == "tls-h2" else "http/1.1"
                got = sock.selected_alpn_protocol()
                if got != want and not (want == "http/1.1" and got is None):
                    raise Unsupported(f"ALPN {want} asked, {got!r} chosen")
            reader = None
            if self.protocol in ("h2c", "tls-h2"):
                reader = H2Reader()
                hpack = h2_request("localhost")
                scheme = b"\x87" if self.protocol == "tls-h2" else b"\x86"
                hpack = hpack[:2] + scheme + hpack[2:]
                sock.sendall(PREFACE + frame(SETTINGS, 0, 0) + frame(HEADERS, 0x5, 1, hpack))
                while not reader.done:
                    data = sock.recv(16384)
                    if not data:
                        raise RuntimeError("closed before END_STREAM")
                    reader.feed(sock, data)
                    if reader.goaway and not reader.done:
                        raise RuntimeError("GOAWAY before the response")
            else:
                sock.sendall(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
                read_h1_response(sock)
        except BaseException:
            sock.close()
            raise
        sock.setblocking(False)
        return Conn(sock, reader)


class Conn:
    def __init__(self, sock, reader):
        self.sock, self.reader = sock, reader
        self.closed = False

    def service(self):
        """Reads what arrived without blocking; answers PINGs; notes EOF, reset and GOAWAY."""
        if self.closed:
            return
        try:
            while True:
                data = self.sock.recv(16384)
                if not data:
                    self.closed = True
                    return
                if self.reader is not None:
                    self.reader.feed(self.sock, data)
                    if self.reader.goaway:
                        self.closed = True
                        return
        except (BlockingIOError, ssl.SSLWantReadError, ssl.SSLWantWriteError):
            return
        except (OSError, ssl.SSLError):
            self.closed = True


class Idle:
    """The idle connections, serviced often enough that HTTP/2 PINGs are answered."""

    def __init__(self):
        self.conns = []
        self.sel = selectors.DefaultSelector()
        self.last = time.monotonic()

    def add(self, conn):
        self.conns.append(conn)
        self.sel.register(conn.sock, selectors.EVENT_READ, conn)

    def service(self, force=False):
        if not force and time.monotonic() - self.last < 0.5:
            return
        self.last = time.monotonic()
        for key, _ in self.sel.select(timeout=0):
            conn = key.data
            conn.service()
            if conn.closed:
                self.sel.unregister(conn.sock)
        # TLS may hold decrypted bytes the kernel no longer reports as readable
        for conn in self.conns:
            if not conn.closed and isinstance(conn.sock, ssl.SSLSocket) and conn.sock.pending():
                conn.service()

    def settle(self, seconds):
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            self.service(force=True)
            time.sleep(0.1)

    def check_all(self):
        """Every connection probed by a non-blocking recv: (open, closed)."""
        for conn in self.conns:
            conn.service()
        closed = sum(c.closed for c in self.conns)
        return len(self.conns) - closed, closed

    def close(self):
        self.sel.close()
        for conn in self.conns:
            try:
                conn.sock.close()
            except OSError:
                pass
        self.conns = []


# ---------------------------------------------------------------- one measurement


def measure(proxy, protocol, a, ports, procs, tmp, files):
    cert, key, pem = files
    log = os.path.join(tmp, f"{proxy}.log")
    if proxy == "cutover":
        path = os.path.join(tmp, "cutover.yaml")
        with open(path, "w") as f:
            f.write(cutover_conf(a, ports, cert, key))
        env_bin = ["env", "CUTOVER_LOG=warn", a.bin, "proxy", "--config", path]
        proc = procs.start(env_bin, log)
    elif proxy == "nginx":
        path = os.path.join(tmp, "nginx.conf")
        with open(path, "w") as f:
            f.write(nginx_conf(tmp, a, ports, cert, key))
        proc = procs.start(["nginx", "-e", os.path.join(tmp, "nginx.err"), "-c", path], log)
    else:
        path = os.path.join(tmp, "haproxy.cfg")
        with open(path, "w") as f:
            f.write(haproxy_conf(tmp, a, ports, pem))
        proc = procs.start(["haproxy", "-db", "-f", path], log)
    idle = None
    try:
        port = port_of(proxy, protocol, ports)
        wait_listening(port, proc)
        time.sleep(0.3)

        def pids():
            # "env" execs the proxy, so the pid is the proxy's; nginx: master and workers
            return [proc.pid] + children(proc.pid)

        client = Client(protocol, port, cert)
        client.open().sock.close()  # warm-up: one request, then closed
        time.sleep(0.5)
        idle_kib, idle_fds = rss_kib(pids()), fd_count(pids())
        idle = Idle()
        failed, first_error = 0, None
        for _ in range(a.n):
            try:
                idle.add(client.open())
            except Unsupported:
                raise
            except (OSError, RuntimeError, ssl.SSLError) as e:
                failed += 1
                first_error = first_error or f"{type(e).__name__}: {e}"
                if failed > max(50, a.n // 20):
                    raise RuntimeError(f"{failed} connections failed, first: {first_error}")
            idle.service()
        idle.settle(1.0)
        with_n_kib = rss_kib(pids())
        opened = len(idle.conns)
        is_open, closed = idle.check_all()
        idle.close()
        time.sleep(2.0)
        after_kib, extra_fds = rss_kib(pids()), fd_count(pids()) - idle_fds
        per_conn = int((with_n_kib - idle_kib) * 1024 / opened) if opened else 0
        note = f"  # first failure: {first_error}" if first_error else ""
        return (f"{proxy} {protocol} {idle_kib} {with_n_kib} {per_conn} {is_open} {closed} "
                f"{failed} {after_kib} {extra_fds}{note}")
    finally:
        if idle is not None:
            idle.close()
        procs.stop(proc)


def support(proxy, protocol, tools):
    """Why a proxy cannot do a protocol here, or None."""
    if proxy == "nginx":
        if protocol in ("h2c", "tls-h2") and "http_v2_module" not in tools["nginx"]:
            return "nginx built without http_v2_module"
        if protocol.startswith("tls") and "http_ssl_module" not in tools["nginx"]:
            return "nginx built without http_ssl_module"
    if proxy == "haproxy" and protocol.startswith("tls") and "USE_OPENSSL=1" not in tools["haproxy"]:
        return "haproxy built without OpenSSL"
    return None


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=5000, help="idle connections per proxy and protocol")
    p.add_argument("--bin", default=os.environ.get("CUTOVER_BIN", "target/release/cutover"),
                   help="cutover binary (default $CUTOVER_BIN or target/release/cutover)")
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--proxies", default=",".join(PROXIES))
    p.add_argument("--protocols", default=",".join(PROTOCOLS))
    p.add_argument("--timeout", type=int, default=1200, help="seconds for the whole run")
    a = p.parse_args()
    proxies = [x for x in a.proxies.split(",") if x]
    protocols = [x for x in a.protocols.split(",") if x]
    for x in proxies:
        if x not in PROXIES:
            p.error(f"unknown proxy {x} (one of {', '.join(PROXIES)})")
    for x in protocols:
        if x not in PROTOCOLS:
            p.error(f"unknown protocol {x} (one of {', '.join(PROTOCOLS)})")
    for tool in ["nginx", "openssl"] + (["haproxy"] if "haproxy" in proxies else []):
        if shutil.which(tool) is None:
            sys.exit(f"missing {tool}")
    if "cutover" in proxies and not os.access(a.bin, os.X_OK):
        sys.exit(f"missing cutover binary {a.bin} (build it, or pass --bin / CUTOVER_BIN)")
    a.bin = os.path.abspath(a.bin)
    a.fd_limit = raise_fd_limit()
    need = a.n + 200
    if a.fd_limit < need:
        sys.exit(f"fd limit {a.fd_limit} is below {need} (--n {a.n}): lower --n or raise the hard limit")

    tools = {
        "nginx": subprocess.run(["nginx", "-V"], capture_output=True, text=True).stderr,
        "haproxy": subprocess.run(["haproxy", "-vv"], capture_output=True, text=True).stdout
        if shutil.which("haproxy") else "",
    }

    def on_alarm(*_):
        raise Timeout(f"the run took longer than {a.timeout} s")

    def on_term(signum, _):
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGALRM, on_alarm)
    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGHUP, on_term)
    signal.alarm(a.timeout)

    procs, tmp, status = Processes(), tempfile.mkdtemp(prefix="cutover-memproto-"), 0
    try:
        names = ["b1", "b2", "cutover-plain", "cutover-tls", "cutover-admin", "nginx-h1",
                 "nginx-h2c", "nginx-tls", "haproxy-h1", "haproxy-h2c", "haproxy-tls"]
        ports = dict(zip(names, free_ports(len(names))))
        files = make_cert(tmp)
        bconf = os.path.join(tmp, "backend.conf")
        with open(bconf, "w") as f:
            f.write(backend_conf(tmp, ports["b1"], ports["b2"]))
        backend = procs.start(["nginx", "-e", os.path.join(tmp, "backend.err"), "-c", bconf],
                              os.path.join(tmp, "backend.log"))
        wait_listening(ports["b1"], backend)
        wait_listening(ports["b2"], backend)
        cpu = ""
        with open("/proc/cpuinfo") as f:
            cpu = next((l.split(":", 1)[1].strip() for l in f if l.startswith("model name")), "")
        print(f"# {time.strftime('%Y-%m-%dT%H:%MZ', time.gmtime())} {os.cpu_count()} cores, {cpu}")
        print(f"# N={a.n} workers={a.workers} cutover={a.bin}")
        print("proxy protocol idle_kib with_n_kib per_conn_bytes open closed failed after_close_kib"
              " extra_fds")
        sys.stdout.flush()
        for protocol in protocols:
            for proxy in proxies:
                why = support(proxy, protocol, tools)
                if why:
                    print(f"{proxy} {protocol} n/a n/a n/a  # {why}")
                    continue
                try:
                    print(measure(proxy, protocol, a, ports, procs, tmp, files))
                except Unsupported as e:
                    print(f"{proxy} {protocol} n/a n/a n/a  # {e}")
                except (OSError, RuntimeError, ssl.SSLError) as e:
                    status = 1
                    print(f"{proxy} {protocol} error error error  # {type(e).__name__}: {e}")
                    tail = os.path.join(tmp, f"{proxy}.log")
                    if os.path.exists(tail):
                        for line in open(tail, errors="replace").read().splitlines()[-5:]:
                            print(f"#   {proxy} log: {line}")
                sys.stdout.flush()
    except Timeout as e:
        print(f"# stopped: {e}")
        status = 3
    finally:
        signal.alarm(0)
        procs.stop_all()
        shutil.rmtree(tmp, ignore_errors=True)
    return status


if __name__ == "__main__":
    sys.exit(main())
