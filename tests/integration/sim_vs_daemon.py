"""One node, one workload, one policy: the real daemon on the sim cloud, and the simulator.

The simulator's claim is that its node behaves as the daemon's: the same cloud operations for the same
pod starts, the same addresses held. This module runs both on a CSV of pod events for one node
(``time,event,pod,node``) and reports, for each, the pool's cloud operations per 100 pod starts and
the peak of addresses the node holds in the subnet (pod addresses and the interfaces' own).

- The daemon: ``python -m ipamd`` (CLOUD_PROVIDER=sim, DATAPATH=none, the instance type's limits,
  SIM_API_LATENCY) with the policy's settings; once its pool has settled, the events are replayed in
  real time through the gRPC client (each ADD on its own thread: an ADD may wait for the pool), the
  pool sampled every 50 ms (``/v1/pool``), the operations read from ``cloudcni_pool_actions_total``
  HORIZON seconds after the last event (the simulator runs exactly as long).
- The simulator: ``cloud-cni simulate --events`` with the same settings, its cloud's latencies set to
  the sim cloud's (SIM_API_LATENCY, jittered +-25%, Describe-type calls a quarter of it), so that the
  two differ by the model, not by the cloud they talk to. Its node starts with the pool settled, as
  the daemon's has when the replay starts.
Reconciles are pushed out of the window (RECONCILE_INTERVAL=3600) on both sides: they are reads, and
the daemon's first one would land at an arbitrary point of the replay.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import re
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from ipamd.rpc.client import IpamClient, attachment

from .conftest import DaemonProcess, daemon_env

MUTATING = (
    "attach_interface",
    "detach_interface",
    "assign_ips",
    "release_ips",
    "assign_prefixes",
    "release_prefixes",
)
_ACTION_OPERATION = {
    "AttachInterface": "attach_interface",
    "DetachInterface": "detach_interface",
    "AssignIps": "assign_ips",
    "ReleaseIps": "release_ips",
    "AssignPrefixes": "assign_prefixes",
    "ReleasePrefixes": "release_prefixes",
}


@dataclass(frozen=True)
class Observed:
    pod_starts: int
    operations: dict[str, int]
    peak_addresses: int

    @property
    def operations_per_100_starts(self) -> float:
        return (
            100.0
            * sum(self.operations[op] for op in MUTATING if op in self.operations)
            / max(self.pod_starts, 1)
        )


def waves(*, seconds: float, seed: int = 0) -> list[tuple[float, str, str]]:
    """A node's day in small: waves of pod starts (a rollout, a CronJob) and deletions, never more pods
    than an m5.large takes (29), with quiet gaps long enough for the pool to shrink."""
    import random

    rng = random.Random(seed)
    events: list[tuple[float, str, str]] = []
    live: list[str] = []
    serial = 0
    t = 2.0
    while t < seconds:
        wave = rng.randint(3, 10)
        for _ in range(min(wave, 27 - len(live))):
            serial += 1
            name = f"p{serial}"
            live.append(name)
            events.append((round(t, 3), "create", name))
            t += rng.uniform(0.05, 0.4)
        t += rng.uniform(2.0, 5.0)
        for _ in range(rng.randint(len(live) // 3, max(len(live) // 3, len(live) - 2))):
            name = live.pop(rng.randrange(len(live)))
            events.append((round(t, 3), "delete", name))
            t += rng.uniform(0.05, 0.3)
        t += rng.uniform(2.0, 8.0)
    return [e for e in events if e[0] < seconds]


def write_csv(events: list[tuple[float, str, str]], path: Path, node: str = "node-0") -> Path:
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["time", "event", "pod", "node"])
        for t, kind, pod in events:
            w.writerow([t, kind, pod, node if kind == "create" else ""])
    return path


def policy_env(policy: str) -> dict[str, str]:
    return dict(item.split("=", 1) for item in policy.split(","))


HORIZON = 15.0  # seconds after the last event: the cool-down (5), the release delay (5) and a release
COMMON = {
    "IP_COOLDOWN_PERIOD": "5",
    "POOL_RELEASE_DELAY": "5",
    "RECONCILE_INTERVAL": "3600",
}


# --- the daemon -------------------------------------------------------------------------------------


def run_daemon(
    tmp: Path, events: list[tuple[float, str, str]], *, policy: str, instance_type: str, latency: float
) -> Observed:
    env = daemon_env(
        tmp,
        SIM_INSTANCE_TYPE=instance_type,
        SIM_API_LATENCY=str(latency),
        **COMMON,
        **policy_env(policy),
    )
    daemon = DaemonProcess(dir=tmp, env=env)
    daemon.start()
    try:
        settled(daemon)
        before = operations(daemon.metrics())
        peak = [subnet_addresses(daemon.get("/v1/pool"))]
        stop = threading.Event()

        def sample() -> None:
            while not stop.is_set():
                with contextlib.suppress(OSError):
                    peak.append(subnet_addresses(daemon.get("/v1/pool")))
                stop.wait(0.05)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        client = IpamClient(daemon.socket, timeout=60)
        threads: list[threading.Thread] = []
        errors: list[str] = []
        started_at = time.monotonic()
        for t, kind, pod in events:
            delay = started_at + t - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            call = attachment(f"ctr-{pod}", netns=f"/var/run/netns/{pod}", namespace="sim", pod=pod)
            if kind == "create":
                th = threading.Thread(target=_add, args=(client, call, errors), daemon=True)
                th.start()
                threads.append(th)
            else:
                client.delete(call)
        for th in threads:
            th.join(60)
        # the same window as the simulator's: until HORIZON seconds after the last event
        end = started_at + events[-1][0] + HORIZON
        time.sleep(max(0.0, end - time.monotonic()))
        stop.set()
        sampler.join(5)
        after = operations(daemon.metrics())
        client.close()
        if errors:
            raise AssertionError(f"ADDs failed: {errors[:3]}")
    finally:
        daemon.kill()
    starts = sum(1 for _, kind, _ in events if kind == "create")
    return Observed(starts, {op: after.get(op, 0) - before.get(op, 0) for op in MUTATING}, max(peak))


def _add(client: IpamClient, call: Any, errors: list[str]) -> None:
    try:
        client.add(call)
    except Exception as exc:
        errors.append(str(exc))


def settled(daemon: DaemonProcess, quiet: float = 1.5, timeout: float = 60.0) -> None:
    """Wait until the pool's holdings have not changed for ``quiet`` seconds."""
    deadline = time.monotonic() + timeout
    last, since = None, time.monotonic()
    while time.monotonic() < deadline:
        pool = daemon.get("/v1/pool")
        now = (pool["total"], len(pool["interfaces"]), pool["cooling"])
        if now != last:
            last, since = now, time.monotonic()
        elif time.monotonic() - since >= quiet and pool["cooling"] == 0:
            return
        time.sleep(0.05)
    raise AssertionError(f"the pool never settled: {last}")


def subnet_addresses(pool: dict[str, Any]) -> int:
    """Addresses the node holds in the subnet: its pod addresses and each interface's own."""
    held = sum(len(i["ips"]) + 16 * len(i["prefixes"]) for i in pool["interfaces"])
    return held + len(pool["interfaces"])


def operations(metrics: str) -> dict[str, int]:
    out: dict[str, int] = {}
    for action, result, value in re.findall(
        r'cloudcni_pool_actions_total\{action="(\w+)",result="(\w+)"\} ([0-9.e+]+)', metrics
    ):
        if result == "ok" and action in _ACTION_OPERATION:
            out[_ACTION_OPERATION[action]] = out.get(_ACTION_OPERATION[action], 0) + int(float(value))
    return out


# --- the simulator ----------------------------------------------------------------------------------


@contextlib.contextmanager
def sim_cloud_latency(latency: float) -> Iterator[None]:
    """The simulator's cloud answers as the daemon's sim cloud does (for the comparison only)."""
    from ipamd.sim import cloud

    saved = {p: dict(ops) for p, ops in cloud.OPERATIONS.items()}
    try:
        for ops in cloud.OPERATIONS.values():
            for name, op in list(ops.items()):
                base = latency / 4 if name == "list_interfaces" else latency
                ops[name] = replace(op, latency=(0.75 * base, 1.25 * base))
        yield
    finally:
        for p, ops in saved.items():
            cloud.OPERATIONS[p].clear()
            cloud.OPERATIONS[p].update(ops)


def run_sim(
    csv_path: Path, events: list[tuple[float, str, str]], *, policy: str, instance_type: str, latency: float
) -> Observed:
    from ipamd.cli import main

    settings = ",".join(f"{k}={v}" for k, v in {**COMMON, **policy_env(policy)}.items())
    out = io.StringIO()
    with sim_cloud_latency(latency), contextlib.redirect_stdout(out):
        rc = main(
            [
                "simulate",
                "--events",
                str(csv_path),
                "--instance-type",
                instance_type,
                "--policy",
                settings,
                "--json",
                "--quiet",
                "--sample-interval",
                "1",
                # the daemon's window: until HORIZON seconds after the last event
                "--hours",
                str((events[-1][0] + HORIZON) / 3600.0),
            ]
        )
    if rc != 0:
        raise AssertionError(f"simulate exited {rc}: {out.getvalue()[-2000:]}")
    [result] = json.loads(out.getvalue())["policies"]
    starts = sum(1 for _, kind, _ in events if kind == "create")
    return Observed(
        starts,
        {_ACTION_OPERATION.get(k, k): v for k, v in result["pool_actions"].items()},
        int(result["subnet_peak_used"]),
    )
