"""The simulated cluster: nodes, pods, a scheduler, the cloud; and ``simulate``, one policy's run.

The scheduler places a pod on the less loaded of two nodes drawn at random among those that are ready
and below their max pods ("power of two choices": close to kube-scheduler's least-allocated spread at
a constant cost per pod); a pod no node has room for is Pending until one has. A node is ready at once
when the run starts and, when it joins later, once its daemon would lift the startup taint
(``ipamd.sim.node``). A drained node's pods are evicted (created again elsewhere by their
controllers, so the same pod goes back to the scheduler) and its addresses go back to the subnet.

A run starts from the cluster as it was at time 0 (its nodes, their pods, each pool settled at its
targets, made instantly) and then runs the workload with the cloud's buckets and latencies.
"""

from __future__ import annotations

import bisect
import gc
import random
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from ipamd.cloud.sim import INSTANCE_TYPES
from ipamd.pool.model import AttachmentKey, ContainerID, IfName, InstanceLimits
from ipamd.sim.cloud import CloudApi
from ipamd.sim.engine import Engine
from ipamd.sim.metrics import Recorder, RunResult, Sample
from ipamd.sim.node import DELETED, GONE, PENDING, RUNNING, WAITING, Pod, SimNode
from ipamd.sim.settings import SimPolicy
from ipamd.sim.sources import CREATE, DELETE, NODE_ADD, NODE_REMOVE, WorkloadEvent
from ipamd.sim.subnet import Subnet, Usage
from ipamd.sim.workload import Workload

__all__ = ["Cluster", "NodeGroupSpec", "simulate"]

_NETWORK = "sim"
_ETH0 = IfName("eth0")


@dataclass(frozen=True)
class NodeGroupSpec:
    """A node group as one policy runs it: the instance's limits on that policy's cloud."""

    name: str
    limits: InstanceLimits
    max_pods: int  # kubelet's: the Node's capacity.pods, which the daemon takes when MAX_PODS is unset
    capacity: int  # pods with an address the scheduler places: max pods less the host-network ones
    subnets: tuple[Subnet, ...]


def node_groups(workload: Workload, sim_policy: SimPolicy, usage: Usage) -> dict[str, NodeGroupSpec]:
    """The workload's groups for this policy's cloud, each with its subnets (one object per CIDR)."""
    subnets: dict[str, Subnet] = {}
    out = {}
    for group in workload.nodes:
        itype = group.azure_instance_type if sim_policy.provider == "azure" else group.instance_type
        limits = INSTANCE_TYPES[itype]
        max_pods = group.max_pods if group.max_pods is not None else limits.default_max_pods
        capacity = max(max_pods - group.host_network_pods, 1)
        for cidr in group.subnets:
            if cidr not in subnets:
                subnets[cidr] = Subnet(cidr, f"subnet-{len(subnets)}", usage=usage)
        out[group.name] = NodeGroupSpec(
            group.name, limits, max_pods, capacity, tuple(subnets[c] for c in group.subnets)
        )
    return out


class Cluster:
    """Runs workload events against nodes; the ``Host`` of every node."""

    def __init__(
        self,
        *,
        groups: dict[str, NodeGroupSpec],
        sim_policy: SimPolicy,
        seed: int,
        stream: Iterator[WorkloadEvent],
        sample_interval: float,
        usage: Usage,
    ) -> None:
        self.groups = groups
        self.usage = usage
        self.policy = sim_policy
        self.rng = random.Random(f"{seed}:cluster")
        self._scheduler_rng = random.Random(f"{seed}:scheduler")
        self.engine: Engine[WorkloadEvent] = Engine(stream, self._handle)  # first: the buckets read its clock
        self.at = self.engine.at  # Host.at: the nodes schedule straight onto the engine
        self.api = CloudApi(sim_policy.provider, rng=random.Random(f"{seed}:cloud"))
        self.recorder = Recorder(add_wait_timeout=sim_policy.settings.add_wait_timeout)
        self.nodes: dict[str, SimNode] = {}
        self.pods: dict[int, Pod] = {}
        self.pending: deque[Pod] = deque()
        self.pending_count = 0
        self.schedulable: list[SimNode] = []
        self.sample_interval = sample_interval
        self._history_t: list[float] = [0.0]  # node count changes, for nodes reading it late
        self._history_n: list[int] = [0]
        self._warm = True
        self._subnet_turn: dict[str, int] = {}

    # --- Host -------------------------------------------------------------------------------------

    def clock(self) -> float:
        return self.engine.now

    def node_ready(self, node: SimNode, now: float) -> None:
        self._update_schedulable(node)
        self._place_pending(now)

    def node_count_at(self, when: float) -> int:
        return self._history_n[bisect.bisect_right(self._history_t, when) - 1]

    # --- running ----------------------------------------------------------------------------------

    def warm_up(self) -> None:
        """The cluster at time 0: its nodes and pods, each pool settled instantly; then the loops start
        (each node's reconcile at a random phase, as nodes do not start together)."""
        self.engine.run(0.0)
        for node in self.nodes.values():
            node.settle(0.0)
        self._warm = False
        interval = self.policy.settings.reconcile_interval
        for node in self.nodes.values():
            node.start(0.0, reconcile_at=self.rng.uniform(0.0, interval))
        if self.sample_interval > 0:
            self.engine.at(0.0, self._sample)

    def run(self, until: float, progress: Callable[[float], None] | None = None) -> None:
        self.engine.run(until, progress)

    def _handle(self, event: WorkloadEvent) -> None:
        now = event.t
        kind = event.kind
        if kind == CREATE:
            pod = Pod(event.pod, now)
            self.pods[pod.id] = pod
            if event.lifetime is not None:
                self.engine.at(now + event.lifetime, self._delete, pod.id)
            if event.node:
                node = self.nodes.get(event.node)
                if node is None:
                    raise ValueError(
                        f"pod {event.pod} is created on node {event.node!r}, which does not exist"
                    )
                self._place(pod, node, now)
            else:
                self._schedule(pod, now)
        elif kind == DELETE:
            self._delete(now, event.pod)
        elif kind == NODE_ADD:
            self._add_node(event.node, event.group, now)
        elif kind == NODE_REMOVE:
            self._remove_node(event.node, now)

    # --- pods -------------------------------------------------------------------------------------

    def _schedule(self, pod: Pod, now: float) -> None:
        node = self._pick()
        if node is None:
            pod.state = PENDING
            self.pending.append(pod)
            self.pending_count += 1
        else:
            self._place(pod, node, now)

    def _pick(self) -> SimNode | None:
        nodes = self.schedulable
        if not nodes:
            return None
        if len(nodes) == 1:
            return nodes[0]
        rng = self._scheduler_rng
        a, b = nodes[int(rng.random() * len(nodes))], nodes[int(rng.random() * len(nodes))]
        return b if b.pods < a.pods else a

    def _place(self, pod: Pod, node: SimNode, now: float) -> None:
        pod.placements += 1
        pod.key = AttachmentKey(_NETWORK, ContainerID(f"{pod.id}.{pod.placements}"), _ETH0)
        node.add_pod(pod, now)
        self._update_schedulable(node)

    def _place_pending(self, now: float) -> None:
        while self.pending and self.schedulable:
            pod = self.pending.popleft()
            if pod.state == DELETED:
                continue
            self.pending_count -= 1
            node = self._pick()
            assert node is not None
            self._place(pod, node, now)

    def _delete(self, now: float, pod_id: int) -> None:
        pod = self.pods.pop(pod_id, None)
        if pod is None:
            return  # deleted already (a rollout and a lifetime may both ask)
        if pod.state in (WAITING, PENDING):
            self.recorder.deleted_before_start += 1
        if pod.state == PENDING:
            self.pending_count -= 1
        node = pod.node
        if node is not None:
            node.delete_pod(pod, now)
            self._update_schedulable(node)
            self._place_pending(now)
        pod.state = DELETED

    # --- nodes ------------------------------------------------------------------------------------

    def _add_node(self, name: str, group_name: str, now: float) -> None:
        if name in self.nodes:
            raise ValueError(f"node {name!r} is added twice")
        group = self.groups[group_name]
        turn = self._subnet_turn.get(group_name, 0)
        self._subnet_turn[group_name] = turn + 1
        self._count_change(now, +1)
        node = SimNode(
            name=name,
            host=self,
            limits=group.limits,
            max_pods=group.max_pods,
            capacity=group.capacity,
            subnet=group.subnets[turn % len(group.subnets)],
            sim_policy=self.policy,
            now=now,
            warm=self._warm,
        )
        self.nodes[name] = node
        if not self._warm:
            node.start(now)
            if not node.ready:
                self.engine.at(now + self.policy.settings.startup_taint_timeout, self._taint_timeout, node)
        self._update_schedulable(node)
        self._place_pending(now)

    def _taint_timeout(self, now: float, node: SimNode) -> None:
        if not node.ready and self.nodes.get(node.name) is node:
            node.ready = True
            self.node_ready(node, now)

    def _remove_node(self, name: str, now: float) -> None:
        node = self.nodes.pop(name, None)
        if node is None:
            return
        node.ready = False
        self._update_schedulable(node)
        evicted = list(node.residents.values())
        node.terminate(now)
        self._count_change(now, -1)
        for pod in evicted:  # its controller creates it again: a new pod, as far as timing goes
            self.recorder.evicted += 1
            pod.state = PENDING
            pod.created = now
            self._schedule(pod, now)

    def _count_change(self, now: float, delta: int) -> None:
        count = self._history_n[-1] + delta
        if self._history_t[-1] == now:
            self._history_n[-1] = count
        else:
            self._history_t.append(now)
            self._history_n.append(count)

    def _update_schedulable(self, node: SimNode) -> None:
        """Keep ``schedulable`` = ready nodes below their max pods (swap-remove: O(1))."""
        want = (
            node.ready
            and node.mode != GONE
            and node.pods < node.capacity
            and self.nodes.get(node.name) is node
        )
        nodes = self.schedulable
        if want and node.sched_index < 0:
            node.sched_index = len(nodes)
            nodes.append(node)
        elif not want and node.sched_index >= 0:
            last = nodes.pop()
            if last is not node:
                nodes[node.sched_index] = last
                last.sched_index = node.sched_index
            node.sched_index = -1

    # --- measuring --------------------------------------------------------------------------------

    def _sample(self, now: float, _: Any = None) -> None:
        idle = [node.idle_addresses(now) for node in self.nodes.values()]
        waiting = sum(len(node.waiting) for node in self.nodes.values())
        self.recorder.sample(
            Sample(
                t=now,
                nodes=len(idle),
                idle_mean=sum(idle) / len(idle) if idle else 0.0,
                idle_total=sum(idle),
                subnet_used=self.usage.used,
                waiting=waiting,
                pending=self.pending_count,
            ),
            idle,
        )
        self.engine.at(now + self.sample_interval, self._sample)

    def unstarted(self) -> int:
        return self.pending_count + sum(len(node.waiting) for node in self.nodes.values())

    def running_ips(self) -> dict[str, int]:
        """Every running pod's address -> its pod id (tests check that none is given twice)."""
        out: dict[str, int] = {}
        for pod in self.pods.values():
            if pod.state == RUNNING:
                if pod.ip in out:
                    raise AssertionError(f"{pod.ip} assigned to pods {out[pod.ip]} and {pod.id}")
                out[pod.ip] = pod.id
        return out


def simulate(
    workload: Workload,
    sim_policy: SimPolicy,
    *,
    stream: Iterator[WorkloadEvent],
    seconds: float,
    seed: int,
    nodes: int | None = None,
    sample_interval: float = 60.0,
    progress: Callable[[float], None] | None = None,
) -> RunResult:
    """Run ``sim_policy`` on ``workload``'s nodes and ``stream`` of events for ``seconds``. ``nodes``
    is what the result reports as the cluster's size (default: the workload's initial nodes)."""
    started = time.perf_counter()
    usage = Usage()
    groups = node_groups(workload, sim_policy, usage)
    cluster = Cluster(
        groups=groups,
        sim_policy=sim_policy,
        seed=seed,
        stream=stream,
        sample_interval=sample_interval,
        usage=usage,
    )
    cluster.warm_up()
    # The run allocates millions of short-lived tuples; the cluster built at time 0 lives to the end.
    # Freezing it keeps the collector from walking it again and again, and a larger first threshold
    # collects less often (about 10% of the run's time); both are undone afterwards.
    threshold = gc.get_threshold()
    gc.freeze()
    gc.set_threshold(max(threshold[0], 100_000), *threshold[1:])
    try:
        cluster.run(seconds, progress)
    finally:
        gc.set_threshold(*threshold)
        gc.unfreeze()
    subnets = {id(s): s for g in groups.values() for s in g.subnets}
    return RunResult.build(
        cluster.recorder,
        name=sim_policy.name,
        nodes=workload.initial_nodes if nodes is None else nodes,
        sim_seconds=seconds,
        wall_seconds=time.perf_counter() - started,
        events=cluster.engine.events,
        unstarted=cluster.unstarted(),
        subnets=[
            {
                "cidr": s.cidr,
                "capacity": s.capacity,
                "peak_used": s.peak_used,
                "peak_used_at_s": round(s.peak_used_at, 3),
                "peak_blocks": s.peak_blocks,
            }
            for s in subnets.values()
        ],
        peak_used=usage.peak,
        peak_at=usage.peak_at,
        calls=dict(+cluster.api.calls),  # + drops the APIs never called (all refused)
        throttled=dict(cluster.api.throttled),
    )
