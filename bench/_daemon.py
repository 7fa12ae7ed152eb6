"""Shared by the daemon benchmarks: run the real daemon (`python -m ipamd`) on the sim provider.

The same approach as tests/integration/conftest.py: a subprocess with CLOUD_PROVIDER=sim and
DATAPATH=none, socket and checkpoint in a fresh directory, metrics and introspection on free
127.0.0.1 ports. The directory is created on the normal disk (not a tmpfs), so every checkpoint
write pays a real fsync; its filesystem type is printed so a reader can tell.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]

# A big instance with a deep warm pool: ADDs are served from free addresses, never wait for the cloud.
WARM_POOL_ENV = {
    "SIM_INSTANCE_TYPE": "c5.18xlarge",
    "WARM_IP_TARGET": "64",
    "MINIMUM_IP_TARGET": "300",
    "IP_COOLDOWN_PERIOD": "0",
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def filesystem_of(path: Path) -> str:
    """The type of the filesystem holding ``path`` (longest mount point prefix in /proc/mounts)."""
    best, kind = "", "unknown"
    try:
        mounts = Path("/proc/mounts").read_text().splitlines()
    except OSError:
        return kind
    resolved = str(path.resolve())
    for line in mounts:
        fields = line.split()
        if len(fields) < 3:
            continue
        mount = fields[1]
        inside = resolved == mount or resolved.startswith(mount.rstrip("/") + "/")
        if inside and len(mount) > len(best):
            best, kind = mount, fields[2]
    return kind


def default_dir() -> Path:
    """A temp dir parent that is not a tmpfs: $TMPDIR, /var/tmp, or the repository."""
    for candidate in (Path(tempfile.gettempdir()), Path("/var/tmp"), ROOT):
        if candidate.is_dir() and filesystem_of(candidate) not in ("tmpfs", "ramfs"):
            return candidate
    return ROOT


class Daemon:
    """One daemon process in its own directory; ``with Daemon(...) as d:`` starts and stops it."""

    def __init__(self, parent: Path | None = None, **env: str) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="bench-ipamd-", dir=parent or default_dir()))
        base = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("AWS_", "AZURE_", "SIM_", "WARM_", "MINIMUM_", "IP_COOLDOWN"))
        }
        base.update(
            CLOUD_PROVIDER="sim",
            DATAPATH="none",
            IPAMD_SOCKET=str(self.dir / "run" / "ipamd.sock"),
            CHECKPOINT_PATH=str(self.dir / "run" / "ipam.json"),
            METRICS_BIND=f"127.0.0.1:{free_port()}",
            INTROSPECTION_BIND=f"127.0.0.1:{free_port()}",
            SIM_API_LATENCY="0.01",
            LOG_LEVEL="info",
            PYTHONPATH=str(ROOT),
        )
        base.update(env)
        self.env = base
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = self.dir / "ipamd.log"

    @property
    def socket(self) -> str:
        return self.env["IPAMD_SOCKET"]

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def describe(self) -> str:
        return f"daemon dir {self.dir} ({filesystem_of(self.dir)}), pid {self.pid}"

    def __enter__(self) -> Daemon:
        with open(self.log_path, "wb") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "ipamd"],
                env=self.env,
                stdout=subprocess.DEVNULL,
                stderr=err,
                cwd=ROOT,
            )
        self.wait_ready()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        shutil.rmtree(self.dir, ignore_errors=True)

    def _url(self, bind_var: str, path: str) -> str:
        return f"http://{self.env[bind_var]}{path}"

    def wait_ready(self, timeout: float = 30.0) -> None:
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise SystemExit(f"daemon exited {self.proc.returncode}:\n{self.log_path.read_text()}")
            try:
                with urllib.request.urlopen(self._url("INTROSPECTION_BIND", "/healthz"), timeout=1) as r:
                    if r.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.05)
        raise SystemExit(f"daemon not ready after {timeout}s:\n{self.log_path.read_text()}")

    def get(self, path: str) -> Any:
        with urllib.request.urlopen(self._url("INTROSPECTION_BIND", path), timeout=5) as r:
            return json.loads(r.read())

    def wait_available(self, count: int, timeout: float = 30.0) -> dict[str, Any]:
        """Wait until the warm pool has at least ``count`` free addresses and the manager is idle."""
        deadline = time.monotonic() + timeout
        pool: dict[str, Any] = {}
        while time.monotonic() < deadline:
            pool = self.get("/v1/pool")
            if pool["available"] >= count:
                time.sleep(0.5)  # let the growth batch in flight land; then the pool is quiet
                return dict(self.get("/v1/pool"))
            time.sleep(0.1)
        raise SystemExit(f"pool never reached {count} available: {pool}")

    def metrics(self) -> dict[str, float]:
        """Every sample of /metrics by its full name with labels, e.g. 'x_total{result="ok"}'."""
        with urllib.request.urlopen(self._url("METRICS_BIND", "/metrics"), timeout=5) as r:
            text = r.read().decode()
        samples: dict[str, float] = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                name, _, value = line.rpartition(" ")
                samples[name] = float(value)
        return samples

    def rss_mb(self) -> float:
        status = Path(f"/proc/{self.pid}/status").read_text()
        match = re.search(r"^VmRSS:\s+(\d+) kB", status, re.M)
        assert match is not None
        return int(match.group(1)) / 1024

    def cpu_seconds(self) -> float:
        """User + system CPU time of the daemon process (all its threads), from /proc/<pid>/stat."""
        fields = Path(f"/proc/{self.pid}/stat").read_text().rpartition(")")[2].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def load_average() -> str:
    """The 1-minute load average: these machines are shared, so a figure says how busy they were."""
    try:
        return Path("/proc/loadavg").read_text().split()[0]
    except OSError:
        return "unknown"


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))]


def median(samples: list[float]) -> float:
    return statistics.median(samples)


def ratio_line(figure: str, measured: float, target: float, unit: str, *, higher_is_better: bool) -> str:
    """'figure: measured unit (target <= x unit): ratio r, met' — ratio is measured / target."""
    ratio = measured / target
    met = ratio >= 1.0 if higher_is_better else ratio <= 1.0
    sign = ">=" if higher_is_better else "<="
    return (
        f"{figure:<36} {measured:9.2f} {unit:<5} target {sign} {target:g} {unit:<5} "
        f"ratio {ratio:5.2f}  {'met' if met else 'MISSED'}"
    )
