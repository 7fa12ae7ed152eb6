"""One simulated node for the manager and service tests: the real SimCloud, Datastore, policy,
CloudCaller and PoolManager wired as the daemon wires them, on a clock the test controls.

Not a test module: test_manager.py and test_service.py import it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ipamd.cloud.limiter import CloudCaller, RetryPolicy, TokenBucket
from ipamd.cloud.sim import INSTANCE_TYPES, SimCloud
from ipamd.manager import PoolManager
from ipamd.metrics import Metrics
from ipamd.pool.datastore import Datastore
from ipamd.pool.model import (
    AttachmentKey,
    ContainerID,
    IfName,
    InterfaceView,
    PodRef,
    WarmPoolTargets,
)

T0 = 1_700_000_000.0
NETWORK = "cloud-cni"
POD = PodRef("default", "web", "uid-1")
MUTATING = (
    "attach_interface",
    "detach_interface",
    "assign_ips",
    "assign_prefixes",
    "release_ips",
    "release_prefixes",
)


class FakeClock:
    """Epoch seconds that move only when the test says so."""

    def __init__(self, start: float = T0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclass
class Node:
    sim: SimCloud
    store: Datastore
    manager: PoolManager
    metrics: Metrics
    clock: Callable[[], float]
    backoffs: list[float] = field(default_factory=list)  # what the CloudCaller would have slept

    def sample(self, name: str, **labels: str) -> float:
        value = self.metrics.registry.get_sample_value(name, labels)
        return 0.0 if value is None else value

    def mutations(self) -> int:
        return sum(self.sim.calls[op] for op in MUTATING)

    def primary(self) -> InterfaceView:
        (view,) = [v for v in self.store.interfaces() if v.primary]
        return view

    def held(self) -> list[int]:
        """Addresses held per interface, by device index, as the datastore sees them."""
        return [len(v.ips) + 16 * len(v.prefixes) for v in self.store.interfaces()]

    def cloud_held(self) -> list[int]:
        """Addresses held per interface as the cloud reports them (a prefix counts 16)."""
        return [len(v.ips) + 16 * len(v.prefixes) for v in self.sim.list_interfaces()]


def make_node(
    *,
    targets: WarmPoolTargets | None = None,
    instance_type: str = "m5.large",
    subnet_cidr: str = "10.0.0.0/22",
    clock: Callable[[], float] | None = None,
    sim: SimCloud | None = None,
    retry: RetryPolicy | None = None,
    growth_pause: float = 120.0,
    reconcile_interval: float = 60.0,
    min_action_interval: float = 0.0,
) -> Node:
    """A node as the daemon starts it: the cloud's interfaces synced into an empty datastore."""
    targets = targets or WarmPoolTargets()
    clock = clock or FakeClock()
    sim = sim or SimCloud(instance_type=instance_type, subnet_cidr=subnet_cidr)
    metrics = Metrics()
    backoffs: list[float] = []
    caller = CloudCaller(
        TokenBucket(1000.0, 1000),
        retry or RetryPolicy(max_attempts=3, base_delay=0.01, max_delay=0.01),
        sleep=backoffs.append,  # backoff is recorded, not slept
        observer=metrics,
    )
    store = Datastore(cooldown=targets.cooldown)
    store.sync_interfaces(sim.list_interfaces(), now=clock())
    manager = PoolManager(
        store=store,
        provider=sim,
        caller=caller,
        targets=targets,
        limits=INSTANCE_TYPES[instance_type],
        clock=clock,
        growth_pause=growth_pause,
        reconcile_interval=reconcile_interval,
        metrics=metrics,
        min_action_interval=min_action_interval,
    )
    return Node(sim, store, manager, metrics, clock, backoffs)


def key(container: str, ifname: str = "eth0") -> AttachmentKey:
    return AttachmentKey(NETWORK, ContainerID(container), IfName(ifname))


def assign_pods(node: Node, count: int, *, prefix: str = "pod", start: int = 0) -> list[str]:
    """Give pods ``<prefix><start>``... an address straight from the datastore; returns their IPs."""
    names = [f"{prefix}{i}" for i in range(start, start + count)]
    return [node.store.assign(key(n), POD, netns=f"/var/run/netns/{n}", now=node.clock()).ip for n in names]


async def settle(node: Node, *, max_steps: int = 20) -> int:
    """Step the manager until its plan is empty; returns the steps that acted."""
    for acted in range(max_steps):
        if not await node.manager.step():
            return acted
    raise AssertionError(f"the pool did not settle in {max_steps} steps")


async def place_pods(node: Node, count: int, *, prefix: str = "pod") -> list[str]:
    """Place pods one at a time, letting the manager top the pool up after each; returns their IPs."""
    await settle(node)
    ips = []
    for i in range(count):
        (ip,) = assign_pods(node, 1, prefix=prefix, start=i)
        ips.append(ip)
        await settle(node)
    return ips


async def eventually(predicate: Callable[[], bool], *, timeout: float = 2.0) -> float:
    """Poll ``predicate`` on the event loop; returns the seconds it took, fails after ``timeout``."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    while not predicate():
        if loop.time() - started > timeout:
            raise AssertionError(f"condition not met within {timeout}s")
        await asyncio.sleep(0.002)
    return loop.time() - started


class Running:
    """``async with Running(manager):`` runs ``manager.run`` as a task and stops it on exit,
    failing the test if the loop crashed or does not stop promptly."""

    def __init__(self, manager: PoolManager) -> None:
        self.manager = manager
        self.stop = asyncio.Event()
        self.task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Running:
        self.task = asyncio.create_task(self.manager.run(self.stop))
        return self

    async def __aexit__(self, *exc: Any) -> None:
        assert self.task is not None
        if self.task.done():
            self.task.result()  # re-raise a crash of the loop
        self.stop.set()
        await asyncio.wait_for(self.task, 2.0)
