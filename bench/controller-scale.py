#!/usr/bin/env python3
"""One controller driving many concurrent rollouts on the local backend (address slots):
CPU, peak RSS, and step latency p99 (from an input, an observation or a due timer, to its
actions persisted and dispatched: `cutover_step_latency_seconds`).

Every release has its own host in the embedded proxy and moves through three weights with
a 5 s pause after each, then promotes; all of them start within the first seconds. Two
`cutover demo-app` processes serve as every release's stable and candidate addresses.

    python3 bench/controller-scale.py --cutover target/release/cutover [--rollouts 1000]
"""

import argparse
import concurrent.futures
import os
import re
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402


def release(i, stable, candidate):
    return f"""apiVersion: cutover.dev/v1
kind: Release
metadata:
  name: scale-{i}
spec:
  backend:
    local:
      stable:
        addresses: ["127.0.0.1:{stable}"]
      candidate:
        addresses: ["127.0.0.1:{candidate}"]
      readinessPath: /healthz
  version: v2
  stableVersion: v1
  port: 8080
  traffic:
    host: r{i}.bench
  strategy:
    canary:
      scaleDownDelay: 1s
      steps:
        - setWeight: 10
        - pause: {{duration: 5s}}
        - setWeight: 50
        - pause: {{duration: 5s}}
        - setWeight: 90
        - pause: {{duration: 5s}}
"""


def quantile_from_histogram(text, name, q):
    buckets = []
    for m in re.finditer(rf'^{name}_bucket{{le="([^"]+)"}} (\d+)$', text, re.M):
        bound = float("inf") if m.group(1) == "+Inf" else float(m.group(1))
        buckets.append((bound, int(m.group(2))))
    if not buckets or buckets[-1][1] == 0:
        return None
    total = buckets[-1][1]
    rank = q * total
    for bound, count in buckets:
        if count >= rank:
            return bound
    return None


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--cutover", default="target/release/cutover")
    parser.add_argument("--rollouts", type=int, default=1000)
    args = parser.parse_args()
    cutover = os.path.abspath(args.cutover)
    ports = [harness.free_port(), harness.free_port()]
    apps = [subprocess.Popen([cutover, "demo-app", "--app-version", v, "--port", str(p)],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            for v, p in zip(["v1", "v2"], ports)]
    serve = harness.Serve(cutover)
    try:
        for p in ports:
            while harness.http_get(p, "/healthz") is None:
                time.sleep(0.05)
        cpu_before = serve.cpu_seconds()
        started = time.time()
        with concurrent.futures.ThreadPoolExecutor(max_workers=16) as pool:
            list(pool.map(lambda i: serve.submit(release(i, *ports), f"scale-{i}.yaml"),
                          range(args.rollouts)))
        submitted = time.time() - started
        done = 0
        while time.time() - started < 600:
            releases = serve.releases()
            done = sum(1 for r in releases if r["done"])
            if done == args.rollouts:
                break
            time.sleep(1)
        wall = time.time() - started
        cpu = serve.cpu_seconds() - cpu_before
        metrics = harness.http_get(serve.api, "/metrics", timeout=30) or ""
        promoted = sum(1 for r in serve.releases() if r["outcome"] == "promoted")
        p50 = quantile_from_histogram(metrics, "cutover_step_latency_seconds", 0.5)
        p99 = quantile_from_histogram(metrics, "cutover_step_latency_seconds", 0.99)
        steps = re.search(r"^cutover_step_latency_seconds_count (\d+)$", metrics, re.M)
        print(f"machine: {harness.machine()}")
        print(f"rollouts: {args.rollouts} (3 weights, 5 s pauses), submitted in {submitted:.1f} s")
        print()
        print("| rollouts | promoted | wall time | controller CPU (avg cores) | peak RSS | steps handled | step latency p50 | step latency p99 |")
        print("|---|---|---|---|---|---|---|---|")
        fmt = lambda v: "n/a" if v is None else f"≤ {v * 1000:g} ms"  # noqa: E731
        print(f"| {args.rollouts} | {promoted} | {wall:.1f} s | {cpu / wall:.2f} | "
              f"{serve.peak_rss_mib():.0f} MiB | {steps.group(1) if steps else '?'} | "
              f"{fmt(p50)} | {fmt(p99)} |")
    finally:
        # `cutover delete` of every release, then the controller.
        serve.delete_all(workers=16)
        serve.stop()
        for app in apps:
            app.kill()
            app.wait()


if __name__ == "__main__":
    main()
