#!/usr/bin/env python3
"""The version switch of a Compose service under load, two ways, same load:

- cutover: `cutover serve --backend docker` on this host, its proxy in front of the
  service (the host reaches the containers' bridge addresses); a blue/green release from
  v1 to v2 with automatic promotion and no pauses (the whole switch at once, the old
  containers stopped after `scaleDownDelay`);
- the recipe wowu/docker-rollout automates, behind nginx: write the new tag to `.env`,
  `docker-compose up -d --scale web=<2n> --no-recreate web`, wait until the new containers
  are ready (the demo image has no healthcheck: until each answers on its address, as a
  healthcheck would), `docker stop` and `docker rm` the old ones. nginx (Debian's, on this
  host, default proxy settings) has its upstream list rewritten and is reloaded on every
  container start and die event, as nginx-proxy's docker-gen does.

Load: `--rate` requests per second from 8 keep-alive connections, each answer counted by the
version that gave it (demo-app's `x-demo-version`). A request that meets a kept-alive
connection the server has just closed (nginx closes its idle client connections on every
reload) is sent again once, as browsers do, and counted as `retried`. Reported per run:
failed requests (5xx, resets after a retry, timeouts), retried ones, and the time to switch, from the start of the switch (submission,
or the `.env` edit) to the last answer from v1.

Everything it creates is labelled dev.cutover.bench=bench-docker and removed at the end.

    bash scripts/swarm-env.sh   # as root: engine and the demo images
    cargo build --release -p cutover-cli
    python3 bench/docker-switch.py --cutover target/release/cutover [--runs 3] [--rate 100]
"""

import argparse
import http.client
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402

PROJECT = "benchdock"
LABEL = "dev.cutover.bench=bench-docker"
ULIMITS = "    ulimits:\n      nofile: {soft: 1024, hard: 4096}\n      nproc: 1024\n"


def docker(*args, check=True):
    result = subprocess.run(["docker", *args], capture_output=True, text=True)
    if check and result.returncode != 0:
        raise RuntimeError(f"docker {' '.join(args)}: {result.stderr.strip()}")
    return result.stdout.strip()


class Project:
    """The Compose project: `web` of the demo app, `replicas` containers, no ports."""

    def __init__(self, replicas):
        self.replicas = replicas
        self.dir = tempfile.mkdtemp(prefix="cutover-bench-docker-")
        with open(os.path.join(self.dir, "compose.yaml"), "w") as f:
            f.write(
                "services:\n  web:\n    image: localhost/cutover-demo:${WEB_TAG}\n"
                f"    scale: {replicas}\n    labels:\n      - {LABEL}\n{ULIMITS}"
                f"networks:\n  default:\n    labels:\n      - {LABEL}\n")
        self.tag("v1")

    def tag(self, version):
        with open(os.path.join(self.dir, ".env"), "w") as f:
            f.write(f"WEB_TAG={version}\n")

    def compose(self, *args):
        result = subprocess.run(["docker-compose", "--project-name", PROJECT, *args],
                                cwd=self.dir, capture_output=True, text=True)
        if result.returncode != 0:
            raise RuntimeError(f"docker-compose {' '.join(args)}: {result.stderr.strip()}")
        return result.stdout + result.stderr

    def containers(self):
        return docker("ps", "--quiet", "--filter", f"label=com.docker.compose.project={PROJECT}",
                      "--filter", "label=com.docker.compose.service=web").split()

    def addresses(self, ids=None):
        ids = self.containers() if ids is None else ids
        if not ids:
            return []
        out = docker("inspect", "--format",
                     "{{range .NetworkSettings.Networks}}{{.IPAddress}} {{end}}", *ids,
                     check=False)
        return [line.split()[0] for line in out.splitlines() if line.split()]

    def down(self):
        subprocess.run(["docker-compose", "--project-name", PROJECT, "down", "--timeout", "2"],
                       cwd=self.dir, capture_output=True)
        ids = docker("ps", "--all", "--quiet", "--filter", f"label={LABEL}", check=False).split()
        if ids:
            docker("rm", "--force", *ids, check=False)
        for net in docker("network", "ls", "--quiet", "--filter", f"label={LABEL}",
                          check=False).split():
            docker("network", "rm", net, check=False)
        shutil.rmtree(self.dir, ignore_errors=True)


class VersionLoad:
    """`rate` requests per second from `connections` keep-alive connections; every answer
    recorded with its time and version."""

    def __init__(self, port, rate, connections=8, retry=True):
        self.retry = retry
        self.stop_flag = threading.Event()
        self.lock = threading.Lock()
        self.answers = []  # (time, version or None, ok, status)
        self.retried = 0
        self.threads = [threading.Thread(target=self.run, args=(port, rate / connections),
                                         daemon=True) for _ in range(connections)]
        for t in self.threads:
            t.start()

    def run(self, port, rate):
        gap = 1.0 / rate
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        next_at = time.time()
        while not self.stop_flag.is_set():
            # As browsers do, a request that meets a kept-alive connection the server has
            # just closed (no byte of an answer) is sent again once on a new connection;
            # counted in `retried`, not as a failure.
            for attempt in (1, 2):
                try:
                    conn.request("GET", "/")
                    response = conn.getresponse()
                    response.read()
                    answer = (time.time(), response.getheader("x-demo-version"),
                              response.status < 500, response.status)
                    break
                except (http.client.RemoteDisconnected, ConnectionResetError,
                        BrokenPipeError) as e:
                    conn.close()
                    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
                    answer = (time.time(), None, False, type(e).__name__)
                    if attempt == 1 and self.retry:
                        with self.lock:
                            self.retried += 1
                    else:
                        break
                except Exception as e:
                    conn.close()
                    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
                    answer = (time.time(), None, False, type(e).__name__)
                    break
            with self.lock:
                self.answers.append(answer)
            next_at += gap
            delay = next_at - time.time()
            if delay > 0:
                time.sleep(delay)

    def stop(self):
        self.stop_flag.set()
        for t in self.threads:
            t.join(timeout=10)
        return self.answers


def summary(answers, t0):
    failed = sum(1 for _, _, ok, _ in answers if not ok)
    kinds = {}
    for _, _, ok, status in answers:
        if not ok:
            kinds[str(status)] = kinds.get(str(status), 0) + 1
    last_old = max((t for t, v, ok, _ in answers if v == "v1" and ok), default=t0)
    first_new = min((t for t, v, ok, _ in answers if v == "v2" and ok), default=None)
    return {
        "requests": len(answers),
        "failed": failed,
        "failures": kinds,
        "first_v2_s": round(first_new - t0, 3) if first_new else None,
        "last_v1_s": round(last_old - t0, 3),
    }


def answers_on(address):
    try:
        conn = http.client.HTTPConnection(address, 8080, timeout=1)
        conn.request("GET", "/")
        ok = conn.getresponse().status == 200
        conn.close()
        return ok
    except OSError:
        return False


# --- the docker-rollout recipe behind nginx --------------------------------------------------

class Nginx:
    """Debian's nginx on this host; its upstream list is the service's running containers,
    rewritten and reloaded on every container start and die (docker-gen's way)."""

    def __init__(self, project):
        self.project = project
        self.dir = tempfile.mkdtemp(prefix="cutover-bench-nginx-")
        self.port = harness.free_port()
        self.conf = os.path.join(self.dir, "nginx.conf")
        d = self.dir
        with open(self.conf, "w") as f:
            f.write(f"""worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/error.log;
events {{ worker_connections 1024; }}
http {{
  access_log off;
  client_body_temp_path {d}/body; proxy_temp_path {d}/proxy;
  fastcgi_temp_path {d}/fastcgi; uwsgi_temp_path {d}/uwsgi; scgi_temp_path {d}/scgi;
  include {d}/upstream.conf;
  server {{
    listen 127.0.0.1:{self.port};
    location / {{
      proxy_pass http://web;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
    }}
  }}
}}
""")
        self.write_upstream()
        self.process = subprocess.Popen(["nginx", "-c", self.conf, "-p", d, "-g", "daemon off;"],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 10
        while harness.http_get(self.port, "/") is None:
            if time.time() > deadline:
                raise RuntimeError("nginx did not start: see " + d)
            time.sleep(0.1)
        self.events = subprocess.Popen(
            ["docker", "events", "--filter", f"label=com.docker.compose.project={PROJECT}",
             "--filter", "type=container", "--filter", "event=start", "--filter", "event=die",
             "--format", "{{.Action}}"], stdout=subprocess.PIPE, text=True)
        self.watcher = threading.Thread(target=self.watch, daemon=True)
        self.watcher.start()

    def write_upstream(self):
        servers = "".join(f"  server {a}:8080;\n" for a in self.project.addresses())
        with open(os.path.join(self.dir, "upstream.conf"), "w") as f:
            f.write(f"upstream web {{\n{servers or '  server 127.0.0.1:9;'}\n  keepalive 16;\n}}\n")

    def watch(self):
        for _ in self.events.stdout:
            self.write_upstream()
            subprocess.run(["nginx", "-c", self.conf, "-p", self.dir, "-s", "reload"],
                           capture_output=True)

    def stop(self):
        self.events.kill()
        self.events.wait()
        self.process.send_signal(signal.SIGQUIT)
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
        shutil.rmtree(self.dir, ignore_errors=True)


RETRY = True


def recipe_run(replicas, rate):
    project = Project(replicas)
    nginx = None
    try:
        project.compose("up", "-d")
        nginx = Nginx(project)
        load = VersionLoad(nginx.port, rate, retry=RETRY)
        time.sleep(3)
        old = project.containers()
        t0 = time.time()
        project.tag("v2")
        project.compose("up", "-d", "--scale", f"web={2 * replicas}", "--no-recreate", "web")
        new = [c for c in project.containers() if c not in old]
        deadline = time.time() + 60
        while not all(answers_on(a) for a in project.addresses(new)):
            if time.time() > deadline:
                raise RuntimeError("the new containers never answered")
            time.sleep(0.05)
        docker("stop", *old)
        docker("rm", *old)
        done = time.time() - t0
        time.sleep(3)
        result = summary(load.stop(), t0)
        result["retried"] = load.retried
        result["recipe_s"] = round(done, 3)
        return result
    finally:
        if nginx:
            nginx.stop()
        project.down()


# --- cutover --------------------------------------------------------------------------------

RELEASE = """apiVersion: cutover.dev/v1
kind: Release
metadata:
  name: bench-docker
spec:
  backend:
    docker:
      project: {project}
      service: web
      network: {project}_default
  image: localhost/cutover-demo:v2
  port: 8080
  strategy:
    blueGreen:
      scaleDownDelay: 5s
"""


def cutover_run(cutover, replicas, rate):
    project = Project(replicas)
    serve = None
    try:
        project.compose("up", "-d")
        serve = harness.Serve(cutover, ["--backend", "docker", "--name", "bench-docker"])
        # The proxy routes the release once it exists: submit, and measure from there.
        load = None
        t0 = time.time()
        serve.submit(RELEASE.format(project=PROJECT))
        while not (serve.status("bench-docker") or {}).get("stable", {}).get("endpoints"):
            time.sleep(0.01)
        routed = time.time() - t0
        load = VersionLoad(serve.listen, rate, retry=RETRY)
        deadline = time.time() + 120
        while True:
            status = serve.status("bench-docker") or {}
            if status.get("done"):
                break
            if time.time() > deadline:
                raise RuntimeError(f"the release did not finish: {json.dumps(status)}")
            time.sleep(0.05)
        done = time.time() - t0
        # Until the old containers are gone (scaleDownDelay), then 3 s more.
        old_gone = time.time() + 30
        while len(project.containers()) > replicas and time.time() < old_gone:
            time.sleep(0.2)
        time.sleep(3)
        result = summary(load.stop(), t0)
        result["retried"] = load.retried
        result.update({"outcome": status.get("outcome"), "routed_s": round(routed, 3),
                       "done_s": round(done, 3)})
        return result
    finally:
        if serve:
            serve.stop()
        project.down()


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cutover", help="the cutover binary (skip cutover's runs without)")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--rate", type=int, default=100)
    parser.add_argument("--replicas", type=int, default=2)
    parser.add_argument("--only", choices=["cutover", "recipe"])
    parser.add_argument("--no-retry", action="store_true",
                        help="count a request that meets a closed kept-alive connection as failed")
    args = parser.parse_args()
    global RETRY
    RETRY = not args.no_retry
    print(f"# {harness.machine()}; {args.rate} req/s, {args.replicas} replicas, "
          f"{args.runs} runs each", flush=True)
    results = {"cutover": [], "recipe": []}
    for i in range(args.runs):
        if args.cutover and args.only != "recipe":
            r = cutover_run(args.cutover, args.replicas, args.rate)
            results["cutover"].append(r)
            print(f"cutover run {i + 1}: {json.dumps(r)}", flush=True)
        if args.only != "cutover":
            r = recipe_run(args.replicas, args.rate)
            results["recipe"].append(r)
            print(f"recipe  run {i + 1}: {json.dumps(r)}", flush=True)
    for way, runs in results.items():
        if runs:
            failed = [r["failed"] for r in runs]
            switch = [r["last_v1_s"] for r in runs]
            print(f"{way}: failed requests {failed} (total {sum(failed)} of "
                  f"{sum(r['requests'] for r in runs)}); time to switch (to the last v1 answer) "
                  f"median {statistics.median(switch):.2f} s, runs {switch}")


if __name__ == "__main__":
    main()
