#!/usr/bin/env python3
"""How fast a new version takes traffic on Docker Swarm: cutover against `docker service
update --update-order start-first` making the same change (a 2-replica service, image
v1 -> v2, and back, alternating).

cutover (controller on this host, `--backend swarm --no-proxy`; its proxy a Swarm service
on the overlay network, long-polling the controller for routes, load through its host-mode
port):

- run -> first weighted request: from `POST /v1/releases` (what `cutover run` sends) to
  the first answer from the new version through the proxy (canary, first step
  `setWeight: 20`, then an indefinite pause);
- promote -> 100 %: from `POST .../promote?full` to the last answer from the old version;
- run -> 100 % (blue/green): from submit to the last answer from the old version, with
  `autoPromotion` and no pauses: the whole switch.

`docker service update` (on a twin service, the same image change; no proxy involved: the
engine's own view, polled every 20 ms):

- update -> first new task running;
- update -> completed (`UpdateStatus.State == completed`: every task replaced), with the
  default `--update-monitor 5s` and with `--update-monitor 0s`.

Requests are sent one after another, about one every 10 ms, so a time measured through
the proxy is exact to about 10 ms.

    bash scripts/swarm-env.sh   # as root: engine, swarm, images
    cargo build --release -p cutover-cli
    python3 bench/swarm-switch.py --cutover target/release/cutover [--runs 5]
"""

import argparse
import http.client
import json
import os
import statistics
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402

PREFIX = "bench-swarm"
LABEL = f"dev.cutover.bench={PREFIX}"
DEMO = "localhost/cutover-demo:{}"
PROXY_IMAGE = "localhost/cutover:test"


def docker(*args, check=True):
    result = subprocess.run(["docker", *args], capture_output=True, text=True)
    if check and result.returncode != 0:
        raise RuntimeError(f"docker {' '.join(args)}: {result.stderr.strip()}")
    return result.stdout.strip()


def cleanup():
    for kind in ("service", "config"):
        ids = docker(kind, "ls", "--quiet", "--filter", f"label={LABEL}", check=False).split()
        if ids:
            docker(kind, "rm", *ids, check=False)
    deadline = time.time() + 60
    while time.time() < deadline:
        nets = docker("network", "ls", "--quiet", "--filter", f"label={LABEL}", check=False).split()
        if not nets:
            return
        for net in nets:
            docker("network", "rm", net, check=False)
        time.sleep(0.5)


def wait_running(service, timeout=60):
    deadline = time.time() + timeout
    while time.time() < deadline:
        line = docker("service", "ls", "--filter", f"name={service}", "--format",
                      "{{.Name}} {{.Replicas}}", check=False)
        for row in line.splitlines():
            name, replicas = row.split(" ", 1)
            running, wanted = replicas.split(" ")[0].split("/")
            if name == service and running == wanted and running != "0":
                return
        time.sleep(0.1)
    raise RuntimeError(f"{service} did not start")


def service(name, image, extra=(), args=()):
    docker("service", "create", "--detach", "--name", name, "--label", LABEL,
           "--network", f"{PREFIX}-net", "--endpoint-mode", "dnsrr", *extra, image, *args)
    wait_running(name)


class Sampler:
    """Sequential requests through the proxy; remembers when each version last and first
    answered."""

    def __init__(self, port):
        self.port = port
        self.stop = False
        self.lock = threading.Lock()
        self.first = {}
        self.last = {}
        self.failed = 0
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self):
        while not self.stop:
            try:
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=2)
                conn.request("GET", "/")
                response = conn.getresponse()
                response.read()
                now = time.monotonic()
                version = response.getheader("x-demo-version")
                with self.lock:
                    if response.status >= 500 or version is None:
                        self.failed += 1
                    else:
                        self.first.setdefault(version, now)
                        self.last[version] = now
                conn.close()
            except OSError:
                with self.lock:
                    self.failed += 1
            time.sleep(0.01)

    def reset(self):
        with self.lock:
            self.first.clear()
            self.last.clear()

    def first_of(self, version):
        with self.lock:
            return self.first.get(version)

    def last_of(self, version):
        with self.lock:
            return self.last.get(version)

    def close(self):
        self.stop = True
        self.thread.join()


def post(serve, path):
    conn = http.client.HTTPConnection("127.0.0.1", serve.api, timeout=60)
    conn.request("POST", path, headers={"Authorization": f"Bearer {serve.token}"})
    response = conn.getresponse()
    body = response.read().decode()
    if response.status >= 300:
        raise RuntimeError(f"POST {path}: {response.status} {body}")


def release(name, web, version, strategy):
    return f"""apiVersion: cutover.dev/v1
kind: Release
metadata:
  name: {name}
spec:
  backend:
    swarm:
      service: {web}
      network: {PREFIX}-net
  image: {DEMO.format(version)}
  replicas: 2
  port: 8080
{strategy}"""


CANARY = """  strategy:
    canary:
      scaleDownDelay: 0s
      steps:
        - setWeight: 20
        - pause: {}
"""
BLUE_GREEN = """  strategy:
    blueGreen:
      scaleDownDelay: 0s
"""


def wait(predicate, timeout, what):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.005)
    raise RuntimeError(f"timed out waiting for {what}")


def wait_done(serve, name):
    wait(lambda: (serve.status(name) or {}).get("done"), 120, f"{name} to finish")


def settled_on(sampler, old, new, since):
    """The moment the old version answered for the last time, once the new one has
    answered alone for a second."""
    def check():
        last_new = sampler.last_of(new)
        last_old = sampler.last_of(old)
        if last_new is None or last_new < since:
            return None
        if last_old is not None and last_old >= last_new:
            return None
        if time.monotonic() - max(last_old or since, since) < 1.0:
            return None
        return max(last_old or since, since)
    return wait(check, 120, f"all traffic on {new}")


def cutover_runs(cutover, runs, gateway):
    results = {"run_to_first": [], "promote_to_all": [], "bluegreen_to_all": []}
    serve = harness.Serve(cutover, ["--backend", "swarm", "--no-proxy", "--name", PREFIX],
                          api_host="0.0.0.0")
    try:
        listen, admin = harness.free_port(), harness.free_port()
        config_file = os.path.join(serve.dir, "proxy.yaml")
        with open(config_file, "w") as f:
            f.write("listeners:\n  - address: 0.0.0.0:8080\nadmin:\n  address: 0.0.0.0:9901\n")
        docker("config", "create", "--label", LABEL, f"{PREFIX}-proxy", config_file)
        service(f"{PREFIX}-proxy", PROXY_IMAGE,
                ["--config", f"source={PREFIX}-proxy,target=/etc/cutover/proxy.yaml",
                 "--publish", f"mode=host,target=8080,published={listen}",
                 "--publish", f"mode=host,target=9901,published={admin}"],
                ["proxy", "--config", "/etc/cutover/proxy.yaml",
                 "--routes-from", f"http://{gateway}:{serve.api}"])
        for kind, strategy in (("canary", CANARY), ("bluegreen", BLUE_GREEN)):
            web = service_name = f"{PREFIX}-{kind}"
            service(service_name, DEMO.format("v1"), ["--replicas", "2"])
            name = f"{PREFIX}-{kind}"
            current = "v1"
            # A first release adopts the service; the proxy needs the route before timing.
            sampler = None
            for run in range(runs + 1):
                new = "v2" if current == "v1" else "v1"
                if sampler is None:
                    serve.submit(release(name, web, new, strategy))
                    wait(lambda: harness.http_get(admin, "/routes") and name in harness.http_get(admin, "/routes"), 30, "the proxy's route")
                    sampler = Sampler(listen)
                    if kind == "canary":
                        wait(lambda: (serve.status(name) or {}).get("waitingForPerson"), 60, "the pause")
                        post(serve, f"/v1/releases/{name}/promote?full")
                    wait_done(serve, name)
                    settled_on(sampler, current, new, time.monotonic() - 60)
                    current = new
                    continue
                sampler.reset()
                started = time.monotonic()
                serve.submit(release(name, web, new, strategy))
                if kind == "canary":
                    first = wait(lambda: sampler.first_of(new), 60, f"a first answer from {new}")
                    results["run_to_first"].append(first - started)
                    wait(lambda: (serve.status(name) or {}).get("waitingForPerson"), 60, "the pause")
                    promoted = time.monotonic()
                    post(serve, f"/v1/releases/{name}/promote?full")
                    done = settled_on(sampler, current, new, promoted)
                    results["promote_to_all"].append(done - promoted)
                else:
                    done = settled_on(sampler, current, new, started)
                    results["bluegreen_to_all"].append(done - started)
                wait_done(serve, name)
                print(f"  cutover {kind} run {run}: {current} -> {new}", file=sys.stderr)
                current = new
            failed = sampler.failed
            sampler.close()
            results.setdefault("failed_requests", 0)
            results["failed_requests"] += failed
    finally:
        serve.stop()
    return results


def swarm_update_runs(runs):
    results = {"update_to_first_task": [], "update_to_completed_monitor5s": [],
               "update_to_completed_monitor0s": []}
    plain = f"{PREFIX}-plain"
    service(plain, DEMO.format("v1"), ["--replicas", "2"])
    current = "v1"
    for monitor in ("5s", "0s"):
        for run in range(runs):
            new = "v2" if current == "v1" else "v1"
            image = DEMO.format(new)
            started = time.monotonic()
            docker("service", "update", "--detach", "--image", image, "--update-order",
                   "start-first", "--update-parallelism", "1", "--update-delay", "0s",
                   "--update-monitor", monitor, plain)
            first = None
            while True:
                now = time.monotonic()
                info = json.loads(docker("service", "inspect", plain))[0]
                state = (info.get("UpdateStatus") or {}).get("State")
                if first is None:
                    tasks = docker("service", "ps", plain, "--filter", "desired-state=running",
                                   "--format", "{{.Image}} {{.CurrentState}}")
                    if any(line.startswith(image + " Running") for line in tasks.splitlines()):
                        first = now
                if state == "completed":
                    break
                if now - started > 120:
                    raise RuntimeError("docker service update did not complete")
                time.sleep(0.02)
            if monitor == "5s":
                results["update_to_first_task"].append(first - started)
            results[f"update_to_completed_monitor{monitor}"].append(now - started)
            print(f"  docker service update (monitor {monitor}) run {run}: {current} -> {new}",
                  file=sys.stderr)
            current = new
    return results


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cutover", default="target/release/cutover")
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    if docker("info", "--format", "{{.Swarm.LocalNodeState}}", check=False) != "active":
        sys.exit("needs a Swarm manager and the test images: bash scripts/swarm-env.sh")
    gateway = docker("network", "inspect", "docker_gwbridge", "--format",
                     "{{(index .IPAM.Config 0).Gateway}}")
    cleanup()
    docker("network", "create", "--driver", "overlay", "--attachable", "--label", LABEL,
           f"{PREFIX}-net")
    try:
        results = cutover_runs(args.cutover, args.runs, gateway)
        results.update(swarm_update_runs(args.runs))
    finally:
        cleanup()
    print(f"machine: {harness.machine()}; Docker {docker('version', '--format', '{{.Server.Version}}')}")
    print(f"runs: {args.runs} each; failed requests through cutover's proxy: {results.pop('failed_requests', 0)}")
    for key, values in results.items():
        ms = sorted(v * 1000 for v in values)
        print(f"{key:34} median {statistics.median(ms):7.0f} ms   min {ms[0]:7.0f}   max {ms[-1]:7.0f}")


if __name__ == "__main__":
    main()
