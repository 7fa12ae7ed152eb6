"""``cloud-cni demo``: the real daemon on the simulated cloud, driven through a node's day.

The daemon runs as its own process (``python -m ipamd``) on a temporary socket with DATAPATH=none and
the embedded ``sim`` cloud (m5.large limits, prefix delegation, 0.3 s per cloud call). Every pod is
set up and torn down by exec'ing the real CNI plugin (``cloud-cni-shim``) with CNI env and the
network config on stdin, as a container runtime does. The story: a burst scale-up of pods, churn,
then scale-down to idle. Pool size and demand are sampled from the
introspection endpoint; the table at the end is read from the daemon's own metrics, and the lines
after it explain the peak from the daemon's effective settings (``/v1/config``) and the pool it held.

``--datapath windows``: the daemon runs DATAPATH=windows against the in-package fake HCN
(HCN_BACKEND=fake); the demo makes each pod's HCN namespace as containerd on Windows would and passes
its GUID as CNI_NETNS, removes it after the DEL, and reports the HCN calls per ADD and per DEL.
"""

from __future__ import annotations

import ipaddress
import json
import math
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
import urllib.request
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

DEMO_ENV = {
    "CLOUD_PROVIDER": "sim",
    "DATAPATH": "none",
    "SIM_INSTANCE_TYPE": "m5.large",
    "SIM_API_LATENCY": "0.3",
    "ENABLE_PREFIX_DELEGATION": "true",
    "WARM_PREFIX_TARGET": "1",
    "MAX_PODS": "110",
    "IP_COOLDOWN_PERIOD": "4",
    "POOL_RELEASE_DELAY": "4",
    "LOG_LEVEL": "warning",
}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Sample:
    t: float
    total: int
    assigned: int
    cooling: int = 0
    prefixes: list[str] = field(default_factory=list)

    @classmethod
    def of(cls, t: float, pool: dict[str, Any]) -> Sample:
        prefixes = [p for i in pool.get("interfaces", []) for p in i.get("prefixes", [])]
        return cls(t, pool["total"], pool["assigned"], pool.get("cooling", 0), prefixes)


@dataclass
class Story:
    url: str
    shim: Path
    netconf: bytes
    start: float = field(default_factory=time.monotonic)
    samples: list[Sample] = field(default_factory=list)
    add_ms: list[float] = field(default_factory=list)
    failures: int = 0
    running: dict[str, str] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    counter: int = 0
    idle: Sample | None = None
    settings: dict[str, Any] = field(default_factory=dict)
    hcn: Any = None  # the fake HCN (--datapath windows): namespaces per pod, call counters
    namespaces: dict[str, str] = field(default_factory=dict)

    def say(self, msg: str) -> None:
        print(f"  [{time.monotonic() - self.start:5.1f}s] {msg}", flush=True)

    def pool(self) -> dict[str, Any]:
        with urllib.request.urlopen(self.url + "/v1/pool", timeout=5) as r:
            data: dict[str, Any] = json.loads(r.read())
            return data

    def sample_forever(self, stop: threading.Event) -> None:
        while not stop.is_set():
            try:
                p = self.pool()
                self.samples.append(Sample.of(time.monotonic() - self.start, p))
            except OSError:
                pass
            stop.wait(0.1)

    def _shim(self, command: str, cid: str, pod: str) -> subprocess.CompletedProcess[bytes]:
        """Exec the real CNI plugin as a container runtime does: CNI env + network config on stdin."""
        netns = f"/var/run/netns/{cid}" if command == "ADD" else ""
        if self.hcn is not None:  # containerd on Windows: the pod's HCN namespace, by GUID
            if command == "ADD":
                self.namespaces[cid] = self.hcn.add_namespace()
            netns = self.namespaces.get(cid, "")
        env = {
            "CNI_COMMAND": command,
            "CNI_CONTAINERID": cid,
            "CNI_NETNS": netns,
            "CNI_IFNAME": "eth0",
            "CNI_PATH": str(self.shim.parent),
            "CNI_ARGS": ";".join(
                (
                    "IgnoreUnknown=1",
                    "K8S_POD_NAMESPACE=demo",
                    f"K8S_POD_NAME={pod}",
                    f"K8S_POD_INFRA_CONTAINER_ID={cid}",
                )
            ),
        }
        return subprocess.run([str(self.shim)], input=self.netconf, env=env, capture_output=True, check=False)

    def add_pod(self) -> None:
        with self.lock:
            self.counter += 1
            cid = f"demo{self.counter:05d}"
        t0 = time.perf_counter()
        done = self._shim("ADD", cid, f"web-{self.counter}")
        if done.returncode != 0:
            self.failures += 1
            self.errors.append(done.stdout.decode(errors="replace").strip())
            return
        self.add_ms.append((time.perf_counter() - t0) * 1000)
        json.loads(done.stdout)  # a CNI result, or the story stops here
        with self.lock:
            self.running[cid] = f"web-{self.counter}"

    def del_pod(self) -> None:
        with self.lock:
            if not self.running:
                return
            cid = min(self.running)
            pod = self.running.pop(cid)
        done = self._shim("DEL", cid, pod)
        if done.returncode != 0:
            self.failures += 1
            self.errors.append(done.stdout.decode(errors="replace").strip())
        namespace = self.namespaces.pop(cid, None)
        if namespace is not None:
            self.hcn.remove_namespace(namespace)  # containerd removes the pod's namespace

    def config(self) -> dict[str, Any]:
        with urllib.request.urlopen(self.url + "/v1/config", timeout=5) as r:
            data: dict[str, Any] = json.loads(r.read())
            return data

    def wait_pool(self, predicate: Callable[[dict[str, Any]], bool], timeout: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        p = self.pool()
        while not predicate(p) and time.monotonic() < deadline:
            time.sleep(0.1)
            p = self.pool()
        return p


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def _cloud_calls(metrics_url: str) -> int:
    """Cloud API calls the daemon made, from its own Prometheus counter."""
    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(metrics_url, timeout=5) as r:
        text = r.read().decode()
    return int(
        sum(
            sample.value
            for family in text_string_to_metric_families(text)
            if family.name == "cloudcni_cloud_calls"
            for sample in family.samples
            if sample.name == "cloudcni_cloud_calls_total"
        )
    )


def main(pods: int = 30, plot: str | None = None, datapath: str = "none") -> int:
    with tempfile.TemporaryDirectory(prefix="cloud-cni-demo-") as tmp:
        port, metrics_port = _free_port(), _free_port()
        env = dict(os.environ)
        env.update(DEMO_ENV)
        env.update(
            IPAMD_SOCKET=f"{tmp}/run/ipamd.sock",
            CHECKPOINT_PATH=f"{tmp}/run/ipam.json",
            INTROSPECTION_BIND=f"127.0.0.1:{port}",
            METRICS_BIND=f"127.0.0.1:{metrics_port}",
            LOG_LEVEL="info",
        )
        if datapath == "windows":
            env.update(DATAPATH="windows", HCN_BACKEND="fake", HCN_FAKE_STATE=f"{tmp}/run/hcn-fake.json")
        log_path = Path(tmp) / "ipamd.log"
        kind = DEMO_ENV["SIM_INSTANCE_TYPE"]
        where = " on a Windows node (the fake HCN)" if datapath == "windows" else ""
        print(f"cloud-cni demo: the daemon on the simulated cloud ({kind} limits, prefix delegation){where}")
        with open(log_path, "wb") as log_file:
            proc = subprocess.Popen([sys.executable, "-m", "ipamd"], env=env, stderr=log_file)
        try:
            hcn = None
            if datapath == "windows":
                from ipamd.datapath.windows.fake import FakeHcn

                hcn = FakeHcn(env["HCN_FAKE_STATE"])
            story = _run_story(proc, f"http://127.0.0.1:{port}", env["IPAMD_SOCKET"], pods, log_path, hcn=hcn)
            if story is None:
                return 1
            return _report(story, f"http://127.0.0.1:{metrics_port}/metrics", plot)
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                proc.wait(20)


def _run_story(
    proc: subprocess.Popen[bytes], url: str, socket_path: str, pods: int, log_path: Path, *, hcn: Any = None
) -> Story | None:
    deadline = time.monotonic() + 30
    while True:
        if proc.poll() is not None:
            print(log_path.read_text(), file=sys.stderr)
            return None
        try:
            with urllib.request.urlopen(url + "/healthz", timeout=1):
                break
        except OSError:
            if time.monotonic() > deadline:
                print("daemon did not become ready", file=sys.stderr)
                return None
            time.sleep(0.05)
    shim = Path(sys.executable).parent / "cloud-cni-shim"
    netconf = json.dumps(
        {
            "cniVersion": "1.0.0",
            "name": "cloud-cni",
            "type": "cloud-cni",
            "ipamdSocket": socket_path,
            "logFile": str(log_path.parent / "shim.log"),
        }
    ).encode()
    story = Story(url=url, shim=shim, netconf=netconf, hcn=hcn)
    story.settings = story.config()
    stop = threading.Event()
    sampler = threading.Thread(target=story.sample_forever, args=(stop,), daemon=True)
    sampler.start()
    try:
        p = story.wait_pool(lambda p: p["available"] > 0, 15)
        story.say(f"pool warm: {p['total']} addresses on {len(p['interfaces'])} interfaces")
        with ThreadPoolExecutor(8) as workers:
            list(workers.map(lambda _: story.add_pod(), range(pods)))
        p = story.pool()
        story.say(f"burst: {len(story.running)}/{pods} pods running, pool {p['total']}")
        for _ in range(3):
            with ThreadPoolExecutor(4) as workers:
                list(workers.map(lambda _: story.del_pod(), range(pods // 3)))
                list(workers.map(lambda _: story.add_pod(), range(pods // 3)))
            time.sleep(0.5)
        p = story.pool()
        story.say(f"churn: {len(story.running)} pods running, pool {p['total']}")
        while story.running:
            story.del_pod()
        p = story.wait_pool(lambda p: p["assigned"] == 0 and p["cooling"] == 0 and p["total"] <= 16, 30)
        time.sleep(0.5)
        p = story.pool()
        story.idle = Sample.of(time.monotonic() - story.start, p)
        story.say(f"scale-down: pool idle at {p['total']} addresses")
    finally:
        stop.set()
        sampler.join(2)
    return story


def _report(story: Story, metrics_url: str, plot: str | None) -> int:
    peak = max(story.samples, key=lambda s: s.total, default=None)
    rows = [
        ("pods started", f"{len(story.add_ms)} ({story.failures} failed)"),
        ("ADD latency p50", f"{statistics.median(story.add_ms):.1f} ms" if story.add_ms else "-"),
        ("ADD latency p99", f"{_percentile(story.add_ms, 0.99):.1f} ms"),
        ("cloud API calls", str(_cloud_calls(metrics_url))),
        ("peak addresses held", str(peak.total if peak else 0)),
        ("idle addresses held", str(story.idle.total if story.idle else "-")),
    ]
    if story.hcn is not None:
        calls, held = story.hcn.counters(), story.hcn.snapshot()
        rows.append(("HCN calls", ", ".join(f"{k} {v}" for k, v in sorted(calls.items()))))
        rows.append(("HCN networks / endpoints left", f"{len(held['networks'])} / {len(held['endpoints'])}"))
    width = max(len(k) for k, _ in rows)
    print()
    for k, v in rows:
        print(f"  {k:<{width}}  {v}")
    if peak is not None:
        most_pods = max(s.assigned for s in story.samples)
        print()
        for line in explain(story.settings, peak, most_pods, story.idle):
            print(textwrap.fill(line, 100, initial_indent="  ", subsequent_indent="    "))
    if plot:
        _plot(story.samples, plot)
        print(f"\n  plot written to {plot}")
    for error in story.errors[:5]:
        print(f"  shim error: {error}")
    return 0 if story.failures == 0 else 1


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}es" if word.endswith(("s", "x")) else f"{n} {word}s"


def _prefix_size(sample: Sample) -> int | None:
    sizes = {ipaddress.ip_network(p, strict=False).num_addresses for p in sample.prefixes}
    return sizes.pop() if len(sizes) == 1 else None


def _held(sample: Sample) -> str:
    """``80 addresses = 5 prefixes of 16`` (plus any single secondary addresses)."""
    size = _prefix_size(sample)
    if size is None:
        return _plural(sample.total, "address")
    text = f"{_plural(sample.total, 'address')} = {_plural(len(sample.prefixes), 'prefix')} of {size}"
    single = sample.total - size * len(sample.prefixes)
    return text + (f" + {_plural(single, 'single address')}" if single > 0 else "")


def explain(settings: dict[str, Any], peak: Sample, most_pods: int, idle: Sample | None) -> list[str]:
    """Why the pool held what it held: the lines printed under the table, from the effective settings
    (``/v1/config``) and the pool samples, so they stay true when the settings change."""
    free = peak.total - peak.assigned - peak.cooling
    lines = [
        f"Why {peak.total} addresses for at most {most_pods} pods:",
        f"- at the peak ({peak.t:.1f} s) the pool held {_held(peak)}: {peak.assigned} assigned to pods, "
        f"{peak.cooling} cooling, {free} free.",
    ]
    if peak.prefixes:
        lines.append(
            "- prefix delegation (ENABLE_PREFIX_DELEGATION="
            f"{str(settings.get('ENABLE_PREFIX_DELEGATION')).lower()}): the cloud assigns whole prefixes, "
            "so the pool grows and shrinks a prefix at a time, never by one address."
        )
    cooldown = settings.get("IP_COOLDOWN_PERIOD")
    if cooldown is not None:
        lines.append(
            f"- a released address cools for IP_COOLDOWN_PERIOD={cooldown} s before reuse, and cooling "
            "addresses are not free: churn holds extra addresses."
        )
    warm_prefix, warm_ip = settings.get("WARM_PREFIX_TARGET"), settings.get("WARM_IP_TARGET")
    size = _prefix_size(peak)
    if size is not None and warm_prefix:
        warm = int(warm_prefix) * size
        lines.append(
            f"- WARM_PREFIX_TARGET={warm_prefix}: the daemon keeps {warm} addresses free on top of those, "
            "so the next pod never waits for the cloud."
        )
        wanted = peak.assigned + peak.cooling + warm
        if math.ceil(wanted / size) == len(peak.prefixes):
            lines.append(
                f"- so at the peak: {peak.assigned} + {peak.cooling} + {warm} = {wanted} addresses, "
                f"rounded up to whole prefixes: {len(peak.prefixes)} x {size} = {len(peak.prefixes) * size}."
            )
    elif warm_ip:
        lines.append(f"- WARM_IP_TARGET={warm_ip}: the daemon keeps that many addresses free on top.")
    if idle is not None:
        lines.append(f"- idle, with no pod left: {_held(idle)}.")
    return lines


def _plot(samples: list[Sample], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4))
    ax.step([s.t for s in samples], [s.total for s in samples], where="post", label="addresses held")
    ax.step([s.t for s in samples], [s.assigned for s in samples], where="post", label="pods (demand)")
    ax.set_xlabel("seconds")
    ax.set_ylabel("addresses")
    ax.set_title("cloud-cni warm pool on the simulated cloud")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
