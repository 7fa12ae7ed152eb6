"""Workload sources as lazy event streams, and the replay of a CSV of pod events.

Each source of a workload is a generator of ``WorkloadEvent`` in time order, holding only what it
must (a rollout's pods, the waves in flight); ``events`` merges them. A run of 5,000 nodes for an
hour so never holds its events in memory, only the live pods. Every source draws from its own random
generator, seeded from the run's seed and the source's position: the workload is the same for every
policy compared on it, whatever the policy does.

A pod's deletion after its lifetime is not an event of the stream: the cluster schedules it when the
pod is created (one entry per live pod). Rollouts delete named pods (the old ReplicaSet's) and emit
those deletions themselves.

Events at time 0 are the cluster as it was when the run starts: its nodes and the pods they run.
"""

from __future__ import annotations

import csv
import heapq
import itertools
import math
import random
from collections.abc import Iterator
from operator import attrgetter
from pathlib import Path
from typing import NamedTuple

from ipamd.sim.workload import (
    Churn,
    CronJobs,
    Drain,
    Rollouts,
    ScaleUp,
    Workload,
    WorkloadError,
    count_of,
)

__all__ = [
    "CREATE",
    "DELETE",
    "NODE_ADD",
    "NODE_REMOVE",
    "WorkloadEvent",
    "events",
    "replay",
    "replay_span",
]

CREATE, DELETE, NODE_ADD, NODE_REMOVE = range(4)
REPLAY_GROUP = "replay"


class WorkloadEvent(NamedTuple):
    t: float
    kind: int  # CREATE, DELETE, NODE_ADD, NODE_REMOVE
    pod: int = -1
    lifetime: float | None = None  # CREATE: deleted this long after creation; None: by an event
    node: str = ""  # NODE_ADD / NODE_REMOVE: the node; CREATE: a node to place it on (replay)
    group: str = ""  # NODE_ADD: its node group


class _Names:
    """Node names per group (``group-0``, ``group-1``, ...), shared by the sources that add nodes."""

    def __init__(self, workload: Workload) -> None:
        self._next = {g.name: g.count for g in workload.nodes}

    def new(self, group: str) -> str:
        index = self._next[group]
        self._next[group] = index + 1
        return f"{group}-{index}"


def events(workload: Workload, *, seed: int, until: float) -> Iterator[WorkloadEvent]:
    """Every event of the workload up to ``until``, in time order (ties: in source order)."""
    ids = itertools.count()
    names = _Names(workload)
    initial = workload.initial_nodes

    def rng(index: int, kind: str) -> random.Random:
        return random.Random(f"{seed}:{index}:{kind}")

    streams: list[Iterator[WorkloadEvent]] = [_initial(workload, ids, rng(-1, "initial"))]
    for index, source in enumerate(workload.sources):
        r = rng(index, source.kind)
        if isinstance(source, Churn):
            streams.append(_churn(source, initial, ids, r, until))
        elif isinstance(source, Rollouts):
            streams.append(_rollouts(source, initial, ids, r, until))
        elif isinstance(source, CronJobs):
            streams.append(_cronjobs(source, initial, ids, r, until))
        elif isinstance(source, ScaleUp):
            streams.append(_scale_up(source, names, ids, r))
        elif isinstance(source, Drain):
            group = next(g for g in workload.nodes if g.name == source.group)
            streams.append(_drain(source, group.count, names, r))
    merged = heapq.merge(*streams, key=attrgetter("t"))
    return itertools.takewhile(lambda e: e.t <= until, merged)


def _initial(workload: Workload, ids: Iterator[int], rng: random.Random) -> Iterator[WorkloadEvent]:
    for group in workload.nodes:
        for index in range(group.count):
            yield WorkloadEvent(0.0, NODE_ADD, node=f"{group.name}-{index}", group=group.name)
    for group in workload.nodes:
        for _ in range(group.count):
            for _ in range(count_of(group.pods_per_node, rng)):
                yield WorkloadEvent(0.0, CREATE, next(ids))


def _churn(
    source: Churn, nodes: int, ids: Iterator[int], rng: random.Random, until: float
) -> Iterator[WorkloadEvent]:
    rate = source.per_node_per_hour * nodes / 3600.0
    if rate <= 0:
        return
    if source.initial:  # the steady state: rate x mean lifetime pods, memoryless lifetimes
        for _ in range(round(rate * source.lifetime.mean)):
            yield WorkloadEvent(0.0, CREATE, next(ids), source.lifetime.sample(rng))
    t = 0.0
    while True:
        t += rng.expovariate(rate)
        if t > until:
            return
        yield WorkloadEvent(t, CREATE, next(ids), source.lifetime.sample(rng))


def _rollouts(
    source: Rollouts, nodes: int, ids: Iterator[int], rng: random.Random, until: float
) -> Iterator[WorkloadEvent]:
    count = max(1, round(source.deployments_per_1000_nodes * nodes / 1000))
    replicas = [count_of(source.replicas, rng, least=1) for _ in range(count)]
    current: list[list[int]] = []
    for r in replicas:  # every deployment runs its replicas from the start
        pods = [next(ids) for _ in range(r)]
        current.append(pods)
        for pod in pods:
            yield WorkloadEvent(0.0, CREATE, pod)
    busy_until = [0.0] * count
    queue: list[tuple[float, int, WorkloadEvent]] = []
    serial = itertools.count()
    burst = source.bursts_every.sample(rng)
    while burst <= until or queue:
        while queue and (queue[0][0] <= burst or burst > until):
            yield heapq.heappop(queue)[2]
        if burst > until:
            break
        share = max(1, round(source.share_per_burst * count))
        for d in sorted(rng.sample(range(count), min(share, count))):
            start = burst + source.spread.sample(rng)
            if start < busy_until[d]:
                continue  # still rolling from the last burst
            old = current[d]
            new: list[int] = []
            surge = max(1, math.ceil(source.max_surge * replicas[d]))
            t = start
            while len(new) < replicas[d]:
                ready = t + source.wave_interval.sample(rng)
                for _ in range(min(surge, replicas[d] - len(new))):
                    pod = next(ids)
                    new.append(pod)
                    heapq.heappush(queue, (t, next(serial), WorkloadEvent(t, CREATE, pod)))
                    if old:
                        gone = old.pop()
                        heapq.heappush(queue, (ready, next(serial), WorkloadEvent(ready, DELETE, gone)))
                t = ready
            for gone in old:  # replicas never shrink here; left over only if it did
                heapq.heappush(queue, (t, next(serial), WorkloadEvent(t, DELETE, gone)))
            current[d] = new
            busy_until[d] = t
        burst += max(source.bursts_every.sample(rng), 1.0)


def _cronjobs(
    source: CronJobs, nodes: int, ids: Iterator[int], rng: random.Random, until: float
) -> Iterator[WorkloadEvent]:
    jobs = max(1, round(source.jobs_per_1000_nodes * nodes / 1000))
    wave = source.offset if source.offset > 0 else source.every
    while wave <= until:
        batch: list[tuple[float, float]] = []
        for _ in range(jobs):
            start = wave + source.start_jitter.sample(rng)
            run = source.duration.sample(rng)
            batch.extend((start, run) for _ in range(count_of(source.parallelism, rng, least=1)))
        batch.sort(key=lambda item: item[0])
        for start, run in batch:
            yield WorkloadEvent(start, CREATE, next(ids), run)
        wave += source.every


def _scale_up(
    source: ScaleUp, names: _Names, ids: Iterator[int], rng: random.Random
) -> Iterator[WorkloadEvent]:
    boots = sorted(source.at + source.boot.sample(rng) for _ in range(source.nodes))
    for _ in range(round(source.nodes * source.pods_per_node)):
        lifetime = source.pod_lifetime.sample(rng) if source.pod_lifetime is not None else None
        yield WorkloadEvent(source.at, CREATE, next(ids), lifetime)
    for t in boots:
        yield WorkloadEvent(t, NODE_ADD, node=names.new(source.group), group=source.group)


def _drain(source: Drain, count: int, names: _Names, rng: random.Random) -> Iterator[WorkloadEvent]:
    victims = rng.sample(range(count), min(source.nodes, count))
    queue: list[tuple[float, int, WorkloadEvent]] = []
    serial = itertools.count()
    for i, index in enumerate(victims):
        t = source.at + i * source.every
        while queue and queue[0][0] <= t:
            yield heapq.heappop(queue)[2]
        yield WorkloadEvent(t, NODE_REMOVE, node=f"{source.group}-{index}")
        if source.replace:
            boot = t + source.boot.sample(rng)
            event = WorkloadEvent(boot, NODE_ADD, node=names.new(source.group), group=source.group)
            heapq.heappush(queue, (boot, next(serial), event))
    while queue:
        yield heapq.heappop(queue)[2]


# --- replay ---------------------------------------------------------------------------------------

_COLUMNS = ("time", "event", "pod", "node")


def replay_span(path: str) -> tuple[list[str], float]:
    """The node names a CSV of pod events places pods on (in order of first appearance), and the
    time of its last event. Reads the whole file once, checking every row."""
    seen: dict[str, None] = {}
    last = 0.0
    for _, row in _rows(path):
        last = float(row["time"])
        if row["event"] == "create":
            seen.setdefault(row["node"], None)
    return list(seen), last


def replay(path: str, *, until: float) -> Iterator[WorkloadEvent]:
    """The CSV's events (``time,event,pod,node``: seconds from the start, ``create`` or ``delete``,
    the pod's name, the node it runs on), after the nodes it names, all present from the start."""
    for node in replay_span(path)[0]:
        yield WorkloadEvent(0.0, NODE_ADD, node=node, group=REPLAY_GROUP)
    ids: dict[str, int] = {}
    serial = itertools.count()
    for _, row in _rows(path):
        t = float(row["time"])
        if t > until:
            return
        if row["event"] == "create":
            ids[row["pod"]] = pod = next(serial)
            yield WorkloadEvent(t, CREATE, pod, node=row["node"])
        else:
            pod = ids.pop(row["pod"], -1)
            if pod >= 0:
                yield WorkloadEvent(t, DELETE, pod)


def _rows(path: str) -> Iterator[tuple[int, dict[str, str]]]:
    """Checked rows: a header naming the columns, times that never go back, known events."""
    try:
        with Path(path).open(newline="", encoding="utf-8") as handle:
            yield from _checked(path, csv.DictReader(handle))
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise WorkloadError(f"{path}: cannot read: {reason}") from None


def _checked(path: str, reader: csv.DictReader[str]) -> Iterator[tuple[int, dict[str, str]]]:
    missing = [c for c in _COLUMNS[:3] if c not in (reader.fieldnames or ())]
    if missing:
        raise WorkloadError(
            f"{path}:1: the header must name the columns {','.join(_COLUMNS)}; missing {missing}"
        )
    last = 0.0
    live: set[str] = set()
    for row in reader:
        line = reader.line_num
        where = f"{path}:{line}"
        try:
            t = float(row["time"])
        except (TypeError, ValueError):
            raise WorkloadError(f"{where}: time: seconds from the start, got {row['time']!r}") from None
        if not math.isfinite(t) or t < 0:
            raise WorkloadError(f"{where}: time: a number of seconds >= 0, got {row['time']!r}")
        if t < last:
            raise WorkloadError(f"{where}: time: {t} is before the previous row's {last}: sort the file")
        last = t
        event, pod, node = row["event"], (row["pod"] or "").strip(), (row.get("node") or "").strip()
        if event not in ("create", "delete"):
            raise WorkloadError(f"{where}: event: create or delete, got {event!r}")
        if not pod:
            raise WorkloadError(f"{where}: pod: a pod name is needed")
        if event == "create":
            if not node:
                raise WorkloadError(f"{where}: node: a create names the node the pod runs on")
            if pod in live:
                raise WorkloadError(f"{where}: pod: {pod!r} is created twice without a delete")
            live.add(pod)
        else:
            live.discard(pod)
        yield line, {"time": row["time"], "event": event, "pod": pod, "node": node}
