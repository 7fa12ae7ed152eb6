"""Fixtures that run the real daemon (`python -m ipamd`) as a subprocess on the sim provider.

Every endpoint is local: a Unix socket and checkpoint in tmp_path, metrics and introspection on
127.0.0.1 ports picked free. Nothing reaches a non-loopback address.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from ipamd.rpc.client import IpamClient

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class DaemonProcess:
    dir: Path
    env: dict[str, str]
    proc: subprocess.Popen[bytes] | None = None
    stderr_path: Path = field(default_factory=Path)
    clients: list[IpamClient] = field(default_factory=list)
    # Run in this named netns (nsenter --net: the mount namespace stays the host's, as a hostNetwork
    # pod's bind mounts of pod namespaces reach the daemon; `ip netns exec` would make a private one).
    netns: str | None = None

    @property
    def socket(self) -> str:
        return self.env["IPAMD_SOCKET"]

    @property
    def checkpoint(self) -> Path:
        return Path(self.env["CHECKPOINT_PATH"])

    @property
    def introspection(self) -> str:
        return "http://" + self.env["INTROSPECTION_BIND"]

    @property
    def metrics_url(self) -> str:
        return "http://" + self.env["METRICS_BIND"] + "/metrics"

    def start(self, wait: bool = True, **overrides: str) -> DaemonProcess:
        self.env.update(overrides)
        self.stderr_path = self.dir / f"ipamd-{time.monotonic_ns()}.log"
        argv = [sys.executable, "-m", "ipamd"]
        if self.netns is not None:
            argv = ["nsenter", f"--net=/var/run/netns/{self.netns}", *argv]  # execs: proc.pid is the daemon
        with open(self.stderr_path, "wb") as err:
            self.proc = subprocess.Popen(argv, env=self.env, stdout=subprocess.DEVNULL, stderr=err, cwd=ROOT)
        if wait:
            self.wait_ready()
        return self

    def wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        assert self.proc is not None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"daemon exited {self.proc.returncode}:\n{self.logs()}")
            try:
                with self._urlopen(self.introspection + "/healthz", timeout=1) as r:
                    if r.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.05)
        raise AssertionError(f"daemon not ready after {timeout}s:\n{self.logs()}")

    def client(self) -> IpamClient:
        c = IpamClient(self.socket, timeout=20)
        self.clients.append(c)
        return c

    def _urlopen(self, url: str, timeout: float) -> Any:
        if self.netns is None:
            return urllib.request.urlopen(url, timeout=timeout)
        from tests.fakes.vpc import netns_urlopen

        return netns_urlopen(self.netns, url, timeout=timeout)

    def get(self, path: str) -> Any:
        with self._urlopen(self.introspection + path, timeout=5) as r:
            return json.loads(r.read())

    def metrics(self) -> str:
        with self._urlopen(self.metrics_url, timeout=5) as r:
            return str(r.read().decode())

    def logs(self) -> str:
        return self.stderr_path.read_text() if self.stderr_path.exists() else ""

    def events(self) -> list[dict[str, Any]]:
        out = []
        for line in self.logs().splitlines():
            try:
                out.append(json.loads(line))
            except ValueError:
                continue
        return out

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20.0) -> int:
        for c in self.clients:
            c.close()
        self.clients.clear()
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        return self.proc.wait(timeout)

    def kill(self) -> None:
        self.stop(signal.SIGKILL)

    def wait_pool(self, predicate: Any, timeout: float = 20.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        pool: dict[str, Any] = {}
        while time.monotonic() < deadline:
            pool = self.get("/v1/pool")
            if predicate(pool):
                return pool
            time.sleep(0.05)
        raise AssertionError(f"pool never reached the expected state: {pool}")


def daemon_env(tmp: Path, **overrides: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("AWS_", "AZURE_", "SIM_", "WARM_", "MINIMUM_"))
    }
    env.update(
        CLOUD_PROVIDER="sim",
        DATAPATH="none",
        IPAMD_SOCKET=str(tmp / "run" / "ipamd.sock"),
        CHECKPOINT_PATH=str(tmp / "run" / "ipam.json"),
        METRICS_BIND=f"127.0.0.1:{free_port()}",
        INTROSPECTION_BIND=f"127.0.0.1:{free_port()}",
        SIM_API_LATENCY="0.01",
        LOG_LEVEL="info",
        PYTHONPATH=str(ROOT),
    )
    env.update(overrides)
    return env


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[DaemonProcess]:
    d = DaemonProcess(dir=tmp_path, env=daemon_env(tmp_path))
    yield d
    if d.proc is not None and d.proc.poll() is None:
        d.kill()
