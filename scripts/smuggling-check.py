#!/usr/bin/env python3
"""Sends a request-smuggling suite to a running cutover proxy over raw sockets.

Usage: scripts/smuggling-check.py HOST:PORT [--host NAME] [--timeout SECONDS]
       scripts/smuggling-check.py --serve-upstream HOST:PORT
       scripts/smuggling-check.py --slowloris HOST:PORT [PATH]
       scripts/smuggling-check.py --client-faults HOST:PORT [PATH]

The second form runs a small upstream to route the proxy to: it reads every request body
in full (by Content-Length or chunked) before answering `200 read N bytes at PATH`, as a
real application would, so that a body the proxy forwards is also consumed.

The third form holds four slow connections (two that sent `P`, one a partial request head,
one nothing), then sends a normal GET for PATH on a fifth, and prints when that request was
answered and when (and whether) the proxy closed each slow connection. Against a listener
with `maxConnections: 4`, the GET is answered only once the proxy closes a slow connection.

The fourth form repeats the finding of issue 12: 60 POSTs to PATH (default `/upload`), of
which 36 carry a malformed chunk size (`zz`, `5g`, overflowing) and 24 are cut off mid-body,
and prints the answers. Then read the proxy's `/metrics`, `/events` and `/routes`: none of
it may count against the upstream or move the candidate's weight.

Each case goes on a fresh connection. The script prints, per case, every status line the
proxy answered with, how many answers came back, and whether the proxy closed the
connection (within the timeout). Cases that carry a second request hidden in the body
(`GET /smuggled`) show a second answer if that request was taken as a request of its own.

Python 3 standard library only, so it runs on any machine that can reach the proxy.
"""

import argparse
import http.server
import socket
import socketserver
import sys
import time

SMUGGLED = b"GET /smuggled HTTP/1.1\r\nHost: {host}\r\n\r\n"


def cases(host):
    """(name, raw bytes) for every case, in the order they are sent."""
    h = host.encode()
    smuggled = SMUGGLED.replace(b"{host}", h)

    def post(headers, body=b""):
        head = b"POST /upload HTTP/1.1\r\nHost: " + h + b"\r\n" + headers + b"\r\n"
        return head + body

    chunked_end = b"0\r\n\r\n"
    return [
        ("baseline GET", b"GET / HTTP/1.1\r\nHost: " + h + b"\r\n\r\n"),
        ("baseline chunked POST",
         post(b"Transfer-Encoding: chunked\r\n", b"5\r\nhello\r\n" + chunked_end)),
        ("CL+TE (CL first)",
         post(b"Content-Length: 4\r\nTransfer-Encoding: chunked\r\n",
              chunked_end + smuggled)),
        ("TE+CL (TE first)",
         post(b"Transfer-Encoding: chunked\r\nContent-Length: 40\r\n",
              chunked_end + smuggled)),
        ("two Content-Length, different",
         post(b"Content-Length: 5\r\nContent-Length: 44\r\n", b"hello" + smuggled)),
        ("two Content-Length, equal",
         post(b"Content-Length: 5\r\nContent-Length: 5\r\n", b"hello")),
        ("Content-Length list '5, 5'", post(b"Content-Length: 5, 5\r\n", b"hello")),
        ("Content-Length '+5'", post(b"Content-Length: +5\r\n", b"hello")),
        ("obs-fold in an ordinary header",
         b"GET / HTTP/1.1\r\nHost: " + h + b"\r\nX-Folded: a\r\n b\r\n\r\n"),
        ("obs-fold hiding Transfer-Encoding",
         post(b"Content-Length: 4\r\nX-Folded: a\r\n Transfer-Encoding: chunked\r\n",
              chunked_end + smuggled)),
        ("obs-fold Transfer-Encoding value",
         post(b"Transfer-Encoding:\r\n chunked\r\n", b"5\r\nhello\r\n" + chunked_end)),
        ("chunk size 'zz'",
         post(b"Transfer-Encoding: chunked\r\n", b"zz\r\nhello\r\n" + chunked_end)),
        ("chunk size '5g'",
         post(b"Transfer-Encoding: chunked\r\n", b"5g\r\nhello\r\n" + chunked_end)),
        ("chunk size overflowing 64 bits",
         post(b"Transfer-Encoding: chunked\r\n",
              b"10000000000000005\r\nhello\r\n" + chunked_end)),
        ("chunk size '-1'",
         post(b"Transfer-Encoding: chunked\r\n", b"-1\r\nhello\r\n" + chunked_end)),
        ("bare LF line endings in the head",
         b"GET / HTTP/1.1\nHost: " + h + b"\n\n"),
        ("bare LF in chunked framing",
         post(b"Transfer-Encoding: chunked\r\n", b"5\nhello\n0\n\n")),
        ("bare CR in a header",
         b"GET / HTTP/1.1\r\nHost: " + h + b"\r\nX-A: a\rX-B: b\r\n\r\n"),
        ("TE 'chunked, identity'",
         post(b"Transfer-Encoding: chunked, identity\r\n", b"5\r\nhello\r\n" + chunked_end)),
        ("TE 'identity, chunked'",
         post(b"Transfer-Encoding: identity, chunked\r\n", b"5\r\nhello\r\n" + chunked_end)),
        ("TE 'xchunked'",
         post(b"Transfer-Encoding: xchunked\r\n", b"5\r\nhello\r\n" + chunked_end)),
        ("TE ' chunked' (space before the colon)",
         post(b"Transfer-Encoding : chunked\r\n", b"5\r\nhello\r\n" + chunked_end)),
        ("TE '\\tchunked' (tab value)",
         post(b"Transfer-Encoding:\tchunked\r\n", b"5\r\nhello\r\n" + chunked_end)),
        ("TE 'CHUNKED' (uppercase)",
         post(b"Transfer-Encoding: CHUNKED\r\n", b"5\r\nhello\r\n" + chunked_end)),
        ("TE duplicated (chunked twice)",
         post(b"Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n",
              b"5\r\nhello\r\n" + chunked_end)),
        ("TE duplicated (chunked, then identity)",
         post(b"Transfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\n",
              b"5\r\nhello\r\n" + chunked_end)),
        ("TE on HTTP/1.0",
         b"POST /upload HTTP/1.0\r\nHost: " + h +
         b"\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n" + chunked_end),
    ]


def run(address, data, timeout):
    """Sends `data`, reads until close or `timeout`; returns (status lines, closed)."""
    host, port = address.rsplit(":", 1)
    sock = socket.create_connection((host.strip("[]"), int(port)), timeout=timeout)
    received = b""
    closed = False
    try:
        sock.sendall(data)
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            sock.settimeout(left)
            try:
                chunk = sock.recv(65536)
            except socket.timeout:
                break
            except ConnectionResetError:
                closed = True
                break
            if not chunk:
                closed = True
                break
            received += chunk
    finally:
        sock.close()
    statuses = [
        line.decode("latin-1").split(" ", 2)[1]
        for line in received.split(b"\r\n")
        if line.startswith(b"HTTP/1.") and len(line.split(b" ")) >= 2
    ]
    return statuses, closed


class BodyReader(http.server.BaseHTTPRequestHandler):
    """An upstream that reads each request body in full before it answers."""

    protocol_version = "HTTP/1.1"

    def read_body(self):
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            total = 0
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return total
                total += len(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length", "0") or "0")
        return len(self.rfile.read(length))

    def answer(self):
        try:
            n = self.read_body()
        except ValueError:
            self.send_error(400)
            return
        body = "read {} bytes at {}\n".format(n, self.path).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = do_PUT = answer

    def log_message(self, *args):
        pass


def serve_upstream(address):
    host, port = address.rsplit(":", 1)
    server = socketserver.ThreadingTCPServer((host.strip("[]"), int(port)), BodyReader)
    server.daemon_threads = True
    print("upstream reading bodies on " + address, flush=True)
    server.serve_forever()


def slowloris(address, path):
    host, port = address.rsplit(":", 1)
    target = (host.strip("[]"), int(port))
    held = []
    for payload in [b"P", b"P", b"GET / HTTP/1.1\r\nHost: sh", b""]:
        sock = socket.create_connection(target, timeout=30)
        sock.sendall(payload)
        held.append(sock)
    started = time.monotonic()
    probe = socket.create_connection(target, timeout=30)
    probe.sendall("GET {} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n"
                  .format(path, host).encode())
    try:
        answer = probe.recv(4096).split(b"\r\n", 1)[0].decode("latin-1")
    except socket.timeout:
        answer = "no answer in 30 s"
    answered = time.monotonic() - started
    probe.close()
    outcomes = []
    for sock in held:
        try:
            closed = sock.recv(1) == b""
        except ConnectionResetError:
            closed = True
        except socket.timeout:
            closed = False
        outcomes.append("{} at {:.2f}s".format("closed" if closed else "open",
                                               time.monotonic() - started))
        sock.close()
    print("{}: '{}' after {:.2f}s; slow connections: {}".format(
        address, answer, answered, ", ".join(outcomes)))


def client_faults(address, path):
    host, port = address.rsplit(":", 1)
    target = (host.strip("[]"), int(port))
    head = ("POST {} HTTP/1.1\r\nHost: {}\r\n".format(path, host)).encode()
    bodies = [b"zz\r\nhello\r\n0\r\n\r\n", b"5g\r\nhello\r\n0\r\n\r\n",
              b"fffffffffffffffffffff\r\nhello\r\n0\r\n\r\n"]
    answers = {}
    for i in range(60):
        sock = socket.create_connection(target, timeout=5)
        kind = i % 5
        if kind < 3:
            sock.sendall(head + b"Transfer-Encoding: chunked\r\n\r\n" + bodies[kind])
            try:
                status = sock.recv(4096).split(b" ")[1].decode("latin-1")
            except (socket.timeout, IndexError, ConnectionResetError):
                status = "none"
            answers[status] = answers.get(status, 0) + 1
        elif kind == 3:
            sock.sendall(head + b"Transfer-Encoding: chunked\r\n\r\na\r\nhel")
        else:
            sock.sendall(head + b"Content-Length: 100\r\n\r\n0123456789")
        sock.close()
    print("malformed chunk sizes (36): answers {}; cut off mid-body: 24".format(
        ", ".join("{} x{}".format(k, v) for k, v in sorted(answers.items()))))


def main():
    if len(sys.argv) in (3, 4) and sys.argv[1] == "--client-faults":
        client_faults(sys.argv[2], sys.argv[3] if len(sys.argv) == 4 else "/upload")
        return 0
    if len(sys.argv) in (3, 4) and sys.argv[1] == "--slowloris":
        slowloris(sys.argv[2], sys.argv[3] if len(sys.argv) == 4 else "/")
        return 0
    if len(sys.argv) == 3 and sys.argv[1] == "--serve-upstream":
        serve_upstream(sys.argv[2])
        return 0
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("address", help="the proxy's HOST:PORT")
    parser.add_argument("--host", default="smuggling.test", help="Host header to send")
    parser.add_argument("--timeout", type=float, default=3.0,
                        help="seconds to wait for answers and the close (default 3)")
    args = parser.parse_args()
    rows = []
    for name, data in cases(args.host):
        try:
            statuses, closed = run(args.address, data, args.timeout)
            rows.append((name, ",".join(statuses) or "-", str(len(statuses)),
                         "closed" if closed else "open"))
        except OSError as e:
            rows.append((name, "error: " + str(e), "0", "-"))
    widths = [max(len(r[i]) for r in rows + [("case", "status", "answers", "connection")])
              for i in range(4)]
    header = ("case", "status", "answers", "connection")
    print("| " + " | ".join(h.ljust(w) for h, w in zip(header, widths)) + " |")
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for row in rows:
        print("| " + " | ".join(c.ljust(w) for c, w in zip(row, widths)) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
