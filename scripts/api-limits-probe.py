#!/usr/bin/env python3
"""Probes the controller API's connection limits from outside, as docs/security.md records.

    scripts/api-limits-probe.py PORT [tls]      silent, one-byte and 1 byte/s clients
    scripts/api-limits-probe.py PORT cap N      N idle connections held, then a request

Loopback only; each probe ends within 40 s.
"""
import socket
import sys
import threading
import time

HOST = "127.0.0.1"


def until_closed(sock, limit=40):
    """Seconds until the server closes `sock`, or None after `limit`."""
    start = time.time()
    sock.settimeout(limit)
    try:
        while sock.recv(4096):
            pass
        return round(time.time() - start, 2)
    except socket.timeout:
        return None
    except OSError:
        return round(time.time() - start, 2)


def slow_clients(port):
    results = {}

    def silent():
        results["silent connection closed after (s)"] = until_closed(
            socket.create_connection((HOST, port)))

    def one_byte():
        s = socket.create_connection((HOST, port))
        s.send(b"P")
        results["one byte 'P': closed after (s)"] = until_closed(s)

    def trickle():
        s = socket.create_connection((HOST, port))
        start, sent = time.time(), 0
        try:
            for b in b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-A: 1234567890\r\n":
                s.send(bytes([b]))
                sent += 1
                time.sleep(1)
        except OSError:
            pass
        results["1 byte/s head: cut after (s), bytes sent"] = (round(time.time() - start, 1), sent)

    threads = [threading.Thread(target=f) for f in (silent, one_byte, trickle)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for k, v in sorted(results.items()):
        print(f"{k}: {v}")


def cap(port, n):
    hogs = [socket.create_connection((HOST, port)) for _ in range(n)]
    time.sleep(0.5)
    start = time.time()
    s = socket.create_connection((HOST, port))
    s.settimeout(30)
    s.send(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    data = b""
    while True:
        d = s.recv(4096)
        if not d:
            break
        data += d
    status = data.split(b" ")[1].decode() if data else "nothing"
    print(f"{n} idle connections held; /healthz answered {status} after {time.time() - start:.2f} s")
    del hogs


if __name__ == "__main__":
    port = int(sys.argv[1])
    if len(sys.argv) > 3 and sys.argv[2] == "cap":
        cap(port, int(sys.argv[3]))
    else:
        slow_clients(port)
