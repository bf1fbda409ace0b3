#!/usr/bin/env python3
"""Rollback reaction time: from the moment a candidate starts failing every request to the
moment the proxy sends it nothing (100 % of traffic on stable), on two paths:

- guardrail: the proxy's own check (error rate > 50 % over a 1 s or 5 s window, at least
  10 requests), every 250 ms, cutting the candidate off by itself. The window dilutes: with
  5 s of healthy history, the share of errors passes 50 % only after about 2.5 s of
  failures, so the reaction time is the window's to choose;
- prometheus: a PromQL error-rate analysis (Prometheus scraping the proxy every 1 s, the
  analysis measuring every 2 s), the controller rolling back.

The candidate is `cutover demo-app --fail-after 6s`, which prints the millisecond it starts
failing; this script polls the proxy's route table every 5 ms for the cut.

    python3 bench/rollback-reaction.py --cutover target/release/cutover [--runs 5]
"""

import argparse
import glob
import os
import re
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402

FAIL_AFTER_S = 6
RATE = 200


def release(cutover, name, path):
    app = lambda version, extra="": (  # noqa: E731
        f'["{cutover}", demo-app, --app-version, {version}, --port, "{{{{port}}}}"{extra}]')
    if path.startswith("guardrail"):
        window = path.split("-", 1)[1]
        judge = """  strategy:
    canary:
      steps:
        - setWeight: 50
        - pause: {duration: 10m}
  guardrails:
    - name: candidate-5xx
      metric: error_rate
      max: 0.5
      window: WINDOW
      minRequests: 10
""".replace("WINDOW", window)
    else:
        judge = """  strategy:
    canary:
      steps:
        - setWeight: 50
        - analysis: {}
  analysis:
    metrics:
      - name: error-rate
        provider:
          prometheus:
            query: >-
              sum(rate(cutover_requests_total{release="{{release}}",version="{{candidate}}",code_class="5xx"}[5s]))
              / sum(rate(cutover_requests_total{release="{{release}}",version="{{candidate}}"}[5s]))
        max: 0.05
        interval: 2s
        count: 300
        inconclusiveLimit: 300
"""
    return f"""apiVersion: cutover.dev/v1
kind: Release
metadata:
  name: {name}
spec:
  backend:
    local:
      stable:
        command: {app("v1")}
      candidate:
        command: {app("v2", f', --fail-after, {FAIL_AFTER_S}s')}
      readinessPath: /healthz
  version: v2
  stableVersion: v1
  port: 8080
  traffic:
    host: bench
{judge}"""


def failing_since(serve, name):
    for log in glob.glob(os.path.join(serve.dir, "state", "logs", name, "v2-*.log")):
        with open(log) as f:
            m = re.search(r"failing from now \(unix ms (\d+)\)", f.read())
            if m:
                return int(m.group(1)) / 1000
    return None


def one_run(cutover, path, run):
    prometheus = None
    serve = None
    load = None
    name = f"bench-{path}-{run}"
    try:
        if path == "prometheus":
            port = harness.free_port()
            serve = harness.Serve(cutover, ["--prometheus", f"http://127.0.0.1:{port}"])
            prometheus = harness.Prometheus(serve.admin, port)
        else:
            serve = harness.Serve(cutover)
        serve.submit(release(cutover, name, path))
        while not (serve.routes() or []):
            time.sleep(0.01)
        load = harness.Load(serve.listen, RATE)
        cut = None
        started = time.time()
        while time.time() - started < 60:
            routes = serve.routes() or []
            route = next((r for r in routes if r["release"] == name), None)
            since = failing_since(serve, name)
            if route and since and time.time() > since:
                candidate_off = route.get("candidate") is None or (
                    route.get("weight", 0) == 0 and not route.get("match"))
                if candidate_off:
                    cut = time.time()
                    break
            time.sleep(0.005)
        since = failing_since(serve, name)
        if cut is None or since is None:
            raise RuntimeError(f"{path} run {run}: no cut within 60 s")
        status = None
        while time.time() - started < 90:
            status = serve.status(name)
            if status and status["done"]:
                break
            time.sleep(0.05)
        return cut - since, status["reason"] if status else "?"
    finally:
        if load:
            load.stop()
        if serve:
            try:
                # `cutover delete`: the run's instances (stable and candidate) stop with it.
                serve.delete(name)
            finally:
                serve.stop()
        if prometheus:
            prometheus.stop()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--cutover", default="target/release/cutover")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--paths", default="guardrail-1s,guardrail-5s,prometheus")
    args = parser.parse_args()
    cutover = os.path.abspath(args.cutover)
    print(f"machine: {harness.machine()}")
    print(f"load: {RATE} req/s through the proxy, candidate at 50 %, failing from {FAIL_AFTER_S}s")
    print()
    print("| path | runs | min | median | max | rolled back because |")
    print("|---|---|---|---|---|---|")
    for path in args.paths.split(","):
        times = []
        reason = ""
        for run in range(args.runs):
            took, reason = one_run(cutover, path, run)
            times.append(took)
        ms = lambda t: f"{t * 1000:.0f} ms"  # noqa: E731
        print(f"| {path} | {len(times)} | {ms(min(times))} | {ms(statistics.median(times))} "
              f"| {ms(max(times))} | {reason} |")


if __name__ == "__main__":
    main()
