"""What one simulated run measured, as plain values: the recorder the nodes report to, and its summary.

The CNI's share of a pod's start-up is the time from the ADD reaching the node to the pod having an
address (0 when the pool had one free). Idle addresses are pod-assignable addresses a node holds and
no pod has (free, cooling, being released); they are sampled on every node at a fixed interval, and
their mean and p99 are over all (node, sample) pairs. The subnet figures count every address the
nodes hold, interfaces' own primary addresses included, as the subnet sees them. Cloud calls count
every API request sent, throttled ones included; ``delayed_by_throttling`` counts throttled attempts
made by a node while one of its pods waited for an address.

Percentiles are nearest-rank over every started pod (memory: one float per pod start).
"""

from __future__ import annotations

import math
from array import array
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from ipamd.sim.node import Pod

__all__ = ["Recorder", "RunResult", "Sample", "percentile"]


@dataclass(frozen=True, slots=True)
class Sample:
    """The cluster at one sampling moment."""

    t: float
    nodes: int
    idle_mean: float  # idle addresses per node
    idle_total: int
    subnet_used: int  # addresses held by the nodes, primaries included
    waiting: int  # pods on a node waiting for an address
    pending: int  # pods no node has room for yet


class Recorder:
    """Collects a run's measurements as the nodes and the cluster report them."""

    def __init__(self, *, add_wait_timeout: float) -> None:
        self.add_wait_timeout = add_wait_timeout
        self.waits = array("d")  # ADD -> address, every started pod
        self.create_to_ip = array("d")  # creation -> address (includes Pending for want of a node)
        self.waited_at = array("d")  # when a pod that waited got its address (for plots)
        self.waited_for = array("d")  # ... and how long it waited
        self.pods_waited = 0
        self.pods_delayed = 0  # waited while a throttled call of its node was retried
        self.pods_over_timeout = 0  # waited longer than ADD_WAIT_TIMEOUT: the real ADD failed once
        self.last_ip_at = 0.0
        self.throttled_attempts: Counter[str] = Counter()
        self.delayed_by_throttling = 0
        self.gave_up: Counter[str] = Counter()
        self.actions: Counter[str] = Counter()
        self.failures: Counter[str] = Counter()  # "Kind:Error"
        self.overrides: Counter[str] = Counter()
        self.idle_histogram: Counter[int] = Counter()
        self.samples: list[Sample] = []
        self.evicted = 0
        self.deleted_before_start = 0

    # --- the node's reports (ipamd.sim.node.Recorder) -----------------------------------------------

    def pod_started(self, pod: Pod, now: float) -> None:
        wait = now - pod.add_at
        self.waits.append(wait)
        self.create_to_ip.append(now - pod.created)
        self.last_ip_at = now
        if wait > 0:
            self.pods_waited += 1
            self.waited_at.append(now)
            self.waited_for.append(wait)
            if pod.delayed:
                self.pods_delayed += 1
            if wait > self.add_wait_timeout:
                self.pods_over_timeout += 1

    def call_throttled(self, operation: str, *, delayed: bool) -> None:
        self.throttled_attempts[operation] += 1
        if delayed:
            self.delayed_by_throttling += 1

    def call_gave_up(self, operation: str) -> None:
        self.gave_up[operation] += 1

    def action_started(self, kind: str) -> None:
        self.actions[kind] += 1

    def action_failed(self, kind: str, error: str) -> None:
        self.failures[f"{kind}:{error}"] += 1

    def cooldown_override(self, reason: str) -> None:
        self.overrides[reason] += 1

    # --- the cluster's ----------------------------------------------------------------------------

    def sample(self, sample: Sample, idle: list[int]) -> None:
        self.samples.append(sample)
        self.idle_histogram.update(idle)


def percentile(sorted_values: Any, q: float) -> float:
    """Nearest-rank percentile ``q`` (0..1) of an ascending sequence; 0.0 when it is empty."""
    n = len(sorted_values)
    if not n:
        return 0.0
    return float(sorted_values[min(n - 1, max(0, math.ceil(q * n) - 1))])


def _histogram_percentile(histogram: Counter[int], q: float) -> float:
    total = sum(histogram.values())
    if not total:
        return 0.0
    rank = max(1, math.ceil(q * total))
    seen = 0
    for value in sorted(histogram):
        seen += histogram[value]
        if seen >= rank:
            return float(value)
    return float(max(histogram))


@dataclass
class RunResult:
    """One policy's run, summarised. ``summary()`` is its entry in ``--json``."""

    name: str
    nodes: int
    sim_seconds: float
    wall_seconds: float
    events: int
    cni_wait: tuple[float, float, float]  # p50, p99, max
    create_to_ip: tuple[float, float, float]
    pods_started: int
    pods_waited: int
    pods_delayed: int
    pods_over_timeout: int
    pods_unstarted: int  # waiting or pending at the end
    evicted: int
    idle_mean: float
    idle_p99: float
    subnet_peak_used: int
    subnet_peak_at: float
    subnet_peak_blocks: int
    subnets: list[dict[str, Any]]
    calls: dict[str, int]
    throttled: dict[str, int]
    delayed_by_throttling: int
    gave_up: dict[str, int]
    actions: dict[str, int]
    failures: dict[str, int]
    overrides: dict[str, int]
    last_ip_at: float
    samples: list[Sample] = field(default_factory=list)
    waited_at: array[float] = field(default_factory=lambda: array("d"))
    waited_for: array[float] = field(default_factory=lambda: array("d"))

    @classmethod
    def build(
        cls,
        recorder: Recorder,
        *,
        name: str,
        nodes: int,
        sim_seconds: float,
        wall_seconds: float,
        events: int,
        unstarted: int,
        subnets: list[dict[str, Any]],
        peak_used: int,
        peak_at: float,
        calls: dict[str, int],
        throttled: dict[str, int],
    ) -> RunResult:
        waits = sorted(recorder.waits)
        starts = sorted(recorder.create_to_ip)
        hist = recorder.idle_histogram
        samples = sum(hist.values())
        return cls(
            name=name,
            nodes=nodes,
            sim_seconds=sim_seconds,
            wall_seconds=wall_seconds,
            events=events,
            cni_wait=(percentile(waits, 0.5), percentile(waits, 0.99), waits[-1] if waits else 0.0),
            create_to_ip=(percentile(starts, 0.5), percentile(starts, 0.99), starts[-1] if starts else 0.0),
            pods_started=len(waits),
            pods_waited=recorder.pods_waited,
            pods_delayed=recorder.pods_delayed,
            pods_over_timeout=recorder.pods_over_timeout,
            pods_unstarted=unstarted,
            evicted=recorder.evicted,
            idle_mean=sum(v * n for v, n in hist.items()) / samples if samples else 0.0,
            idle_p99=_histogram_percentile(hist, 0.99),
            subnet_peak_used=peak_used,
            subnet_peak_at=peak_at,
            subnet_peak_blocks=sum(s["peak_blocks"] for s in subnets),
            subnets=subnets,
            calls=dict(sorted(calls.items())),
            throttled=dict(sorted(throttled.items())),
            delayed_by_throttling=recorder.delayed_by_throttling,
            gave_up=dict(sorted(recorder.gave_up.items())),
            actions=dict(sorted(recorder.actions.items())),
            failures=dict(sorted(recorder.failures.items())),
            overrides=dict(sorted(recorder.overrides.items())),
            last_ip_at=recorder.last_ip_at,
            samples=recorder.samples,
            waited_at=recorder.waited_at,
            waited_for=recorder.waited_for,
        )

    def summary(self) -> dict[str, Any]:
        """The JSON entry: the issue's keys first, then the rest."""
        return {
            "name": self.name,
            "cni_wait_p50_s": round(self.cni_wait[0], 4),
            "cni_wait_p99_s": round(self.cni_wait[1], 4),
            "cni_wait_max_s": round(self.cni_wait[2], 4),
            "pods_waited": self.pods_waited,
            "idle_per_node_mean": round(self.idle_mean, 3),
            "idle_per_node_p99": self.idle_p99,
            "cloud_calls": sum(self.calls.values()),
            "throttled_calls": sum(self.throttled.values()),
            "delayed_by_throttling": self.delayed_by_throttling,
            "pods_started": self.pods_started,
            "pods_delayed_by_throttling": self.pods_delayed,
            "pods_over_add_wait_timeout": self.pods_over_timeout,
            "pods_unstarted": self.pods_unstarted,
            "pods_evicted": self.evicted,
            "create_to_ip_p50_s": round(self.create_to_ip[0], 4),
            "create_to_ip_p99_s": round(self.create_to_ip[1], 4),
            "create_to_ip_max_s": round(self.create_to_ip[2], 4),
            "last_ip_at_s": round(self.last_ip_at, 3),
            "subnet_peak_used": self.subnet_peak_used,
            "subnet_peak_at_s": round(self.subnet_peak_at, 3),
            "subnets": self.subnets,
            "calls_by_api": self.calls,
            "throttled_by_api": self.throttled,
            "gave_up_by_operation": self.gave_up,
            "pool_actions": self.actions,
            "pool_action_failures": self.failures,
            "cooldown_overrides": self.overrides,
            "wall_seconds": round(self.wall_seconds, 3),
            "events": self.events,
        }
