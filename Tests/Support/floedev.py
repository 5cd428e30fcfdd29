"""`floe dev` for Python test scripts: free ports, starting, readiness through cluster.json, stopping."""
import json
import os
import signal
import socket
import subprocess
import time
import urllib.request

# Offsets of the first port of each block in floe dev's port plan (brokers, controllers,
# WAL writers, zone routers, compactor, and their admin ports).
PLAN_OFFSETS = (0, 98, 118, 128, 138, 198, 218, 228, 238, 300)


def free_base_port(start=10200, stop=32000, span=10):
    """A base port whose floe dev port blocks (each `span` ports from every plan offset) are free.

    Below the kernel's ephemeral range (32768 and up), so an outgoing connection cannot take one of
    the ports between this check and floe dev's bind."""
    for base in range(start, stop, 400):
        sockets = []
        try:
            for offset in PLAN_OFFSETS:
                for port in range(base + offset, base + offset + span):
                    s = socket.socket()
                    s.bind(("127.0.0.1", port))
                    sockets.append(s)
            return base
        except OSError:
            continue
        finally:
            for s in sockets:
                s.close()
    raise RuntimeError("no free port range for floe dev")


def ready(service):
    """Whether a service answers /readyz with 200."""
    try:
        with urllib.request.urlopen(f"http://{service['admin']}/readyz", timeout=1) as answer:
            return answer.status == 200
    except Exception:
        return False


class FloeDev:
    """`floe dev up` in the background on `data_dir`, probed through its cluster.json."""

    def __init__(self, floe, data_dir, base_port, arguments=(), environment=None):
        os.makedirs(data_dir, exist_ok=True)
        self.file = os.path.join(data_dir, "cluster.json")
        self.log = open(os.path.join(data_dir, f"floe-dev-{time.time():.0f}.out"), "w")
        self.process = subprocess.Popen(
            [floe, "dev", "up", "--data-dir", data_dir, "--base-port", str(base_port), *arguments],
            stdout=self.log, stderr=subprocess.STDOUT, env=environment)

    def services(self):
        try:
            with open(self.file) as handle:
                return json.load(handle)["services"]
        except (OSError, ValueError, KeyError):
            return []

    @property
    def bootstrap(self):
        with open(self.file) as handle:
            return json.load(handle)["bootstrap"]

    def wait_all_ready(self, timeout):
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"floe dev exited with {self.process.returncode}")
            services = self.services()
            if services and all(s.get("pid") and ready(s) for s in services):
                return services
            time.sleep(0.2)
        waiting = [f"{s['kind']}-{s['node_id']}" for s in self.services() if not (s.get("pid") and ready(s))]
        raise RuntimeError(f"services not ready after {timeout} s: {waiting}")

    def stop(self, timeout=60):
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.log.close()
