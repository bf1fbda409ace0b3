"""Shared pieces of the controller benchmarks: a `cutover serve` on ephemeral ports,
its API, a steady HTTP load, Prometheus, and cleanup of every process they start.

Standard library only, so the benchmarks run wherever the tests do."""

import concurrent.futures
import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_get(port, path, timeout=5):
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=timeout) as r:
            return r.read().decode()
    except Exception:
        return None


class Serve:
    """A `cutover serve` process with its own state directory and ports."""

    def __init__(self, cutover, extra=(), api_host="127.0.0.1"):
        self.cutover = cutover
        extra = list(extra)
        # Only the local backend's instances are cutover's to stop (`cutover delete`).
        self.local = "--backend" not in extra or extra[extra.index("--backend") + 1] == "local"
        self.dir = tempfile.mkdtemp(prefix="cutover-bench-")
        self.api, self.listen, self.admin = free_port(), free_port(), free_port()
        self.log = open(os.path.join(self.dir, "serve.log"), "w")
        env = dict(os.environ, CUTOVER_LOG=os.environ.get("BENCH_LOG", "warn"))
        self.process = subprocess.Popen(
            [cutover, "serve", "--state-dir", os.path.join(self.dir, "state"),
             "--api", f"{api_host}:{self.api}", "--listen", f"127.0.0.1:{self.listen}",
             "--admin", f"127.0.0.1:{self.admin}", *extra],
            stdout=subprocess.DEVNULL, stderr=self.log, env=env)
        deadline = time.time() + 20
        while http_get(self.api, "/healthz") is None:
            if time.time() > deadline:
                raise RuntimeError("cutover serve did not start")
            time.sleep(0.05)
        with open(os.path.join(self.dir, "state", "token")) as f:
            self.token = f.read().strip()

    def submit(self, release_yaml, name="release.yaml"):
        conn = http.client.HTTPConnection("127.0.0.1", self.api, timeout=60)
        conn.request("POST", "/v1/releases", body=release_yaml.encode(),
                     headers={"Authorization": f"Bearer {self.token}",
                              "X-Cutover-Filename": name})
        response = conn.getresponse()
        body = response.read().decode()
        conn.close()
        if response.status != 201:
            raise RuntimeError(f"submit failed: {response.status} {body}")
        return json.loads(body)

    def delete(self, name, force=True):
        """`cutover delete NAME [--force]` through the API: stops the release's instances
        (they outlive the controller by design) and forgets it. An unknown release is
        already gone."""
        conn = http.client.HTTPConnection("127.0.0.1", self.api, timeout=180)
        path = f"/v1/releases/{name}/delete" + ("?force=true" if force else "")
        conn.request("POST", path, headers={"Authorization": f"Bearer {self.token}"})
        response = conn.getresponse()
        body = response.read().decode()
        conn.close()
        if response.status not in (200, 404):
            raise RuntimeError(f"delete {name} failed: {response.status} {body}")

    def delete_all(self, workers=8):
        """Deletes every release the controller knows."""
        names = [r["name"] for r in self.releases()]
        with concurrent.futures.ThreadPoolExecutor(max_workers=workers) as pool:
            list(pool.map(self.delete, names))

    def status(self, name):
        body = http_get(self.api, f"/v1/releases/{name}")
        return json.loads(body) if body else None

    def releases(self):
        body = http_get(self.api, "/v1/releases", timeout=30)
        return json.loads(body)["releases"] if body else []

    def routes(self):
        body = http_get(self.admin, "/routes", timeout=2)
        return json.loads(body)["routes"] if body else None

    def cpu_seconds(self):
        with open(f"/proc/{self.process.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        ticks = os.sysconf("SC_CLK_TCK")
        return (int(fields[11]) + int(fields[12])) / ticks

    def peak_rss_mib(self):
        with open(f"/proc/{self.process.pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
        return 0.0

    def stop(self):
        """Deletes every release (stopping their instances) on the local backend, then
        kills the controller."""
        if self.local and self.process.poll() is None:
            try:
                self.delete_all()
            except (OSError, RuntimeError) as e:
                print(f"warning: cannot delete the releases: {e}", file=sys.stderr)
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()
        stop_instances(self.dir)
        shutil.rmtree(self.dir, ignore_errors=True)


def stop_instances(marker):
    """Stops every process whose CUTOVER_INSTANCE tag or command line mentions `marker`
    (the local backend's instances outlive the controller by design)."""
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmdline = f.read().decode(errors="replace")
            with open(f"/proc/{pid}/environ", "rb") as f:
                environ = f.read().decode(errors="replace")
        except OSError:
            continue
        if marker in cmdline or (marker in environ and "CUTOVER_INSTANCE=" in environ):
            try:
                os.kill(int(pid), signal.SIGKILL)
            except OSError:
                pass


class Load:
    """`rate` requests per second through the proxy from a few keep-alive connections."""

    def __init__(self, port, rate, host="bench", connections=8):
        self.stop_flag = threading.Event()
        self.answered = 0
        self.failed = 0
        self.lock = threading.Lock()
        per = rate / connections
        self.threads = [threading.Thread(target=self.run, args=(port, per, host), daemon=True)
                        for _ in range(connections)]
        for t in self.threads:
            t.start()

    def run(self, port, rate, host):
        gap = 1.0 / rate
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        next_at = time.time()
        while not self.stop_flag.is_set():
            try:
                conn.request("GET", "/", headers={"Host": host})
                response = conn.getresponse()
                response.read()
                with self.lock:
                    self.answered += 1
                    self.failed += response.status >= 500
            except Exception:
                with self.lock:
                    self.failed += 1
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            next_at += gap
            delay = next_at - time.time()
            if delay > 0:
                time.sleep(delay)

    def stop(self):
        self.stop_flag.set()
        for t in self.threads:
            t.join(timeout=10)


class Prometheus:
    """Debian's Prometheus scraping `target` every second."""

    def __init__(self, target_port, port=None):
        self.port = port or free_port()
        self.dir = tempfile.mkdtemp(prefix="cutover-bench-prometheus-")
        config = os.path.join(self.dir, "prometheus.yml")
        with open(config, "w") as f:
            f.write("global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
                    "scrape_configs:\n  - job_name: cutover-proxy\n    static_configs:\n"
                    f"      - targets: ['127.0.0.1:{target_port}']\n")
        self.process = subprocess.Popen(
            ["prometheus", f"--config.file={config}",
             f"--storage.tsdb.path={os.path.join(self.dir, 'data')}",
             f"--web.listen-address=127.0.0.1:{self.port}"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 30
        while '"1"]' not in (http_get(self.port, "/api/v1/query?query=up") or ""):
            if time.time() > deadline:
                raise RuntimeError("prometheus did not start scraping")
            time.sleep(0.2)

    def address(self):
        return f"http://127.0.0.1:{self.port}"

    def stop(self):
        self.process.kill()
        self.process.wait()
        shutil.rmtree(self.dir, ignore_errors=True)


def machine():
    """One line about this machine, for the results."""
    cpu = "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return f"{os.cpu_count()} vCPU ({cpu}), {os.uname().sysname} {os.uname().release}"
