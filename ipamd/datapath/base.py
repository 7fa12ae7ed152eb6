"""The datapath protocol the daemon calls around an assignment, and the IPAM-only datapath.

ADD: the address is assigned and durable first, then ``add_pod`` wires it; a failure there undoes the
wiring it started and the assignment is released. DEL: ``del_pod`` tears down from the allocation
record (not from what is left in the kernel) before the address is released; "already gone" is not
an error there.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from ipamd.pool.model import Assignment, InterfaceView


@dataclass(frozen=True, slots=True)
class PodDns:
    """The pod's DNS configuration from the runtime (CNI ``runtimeConfig.dns``), validated by the rpc
    layer; empty when the runtime sent none. Linux ignores it (the runtime writes the pod's
    resolv.conf); Windows puts servers and searches on the HCN endpoint."""

    servers: tuple[str, ...] = ()  # IP addresses
    searches: tuple[str, ...] = ()  # search domains
    options: tuple[str, ...] = ()  # resolver options ("ndots:5")


NO_DNS = PodDns()


@dataclass(frozen=True, slots=True)
class PodWiring:
    """What the datapath built, reported back in the CNI result (empty for DATAPATH=none)."""

    gateway: str = ""
    host_ifname: str = ""
    host_mac: str = ""
    sandbox_mac: str = ""
    mtu: int = 0
    routes: tuple[tuple[str, str], ...] = field(default=())  # (dst CIDR, gateway or "")
    prefix_length: int = 32  # of the pod's address: 32 routed (linux), the subnet's on an L2 bridge


class SweepGate:
    """Keeps a leftover sweep and ADDs apart: while a sweep runs no ADD starts wiring, and a sweep
    starts only once the ADDs wiring have finished, so what it reads as owned afterwards includes
    every pod being wired and a pod in flight is never taken for a leftover."""

    def __init__(self) -> None:
        self._sweeping = asyncio.Lock()
        self._wiring = 0
        self._no_wiring = asyncio.Event()
        self._no_wiring.set()

    @contextlib.asynccontextmanager
    async def wiring(self) -> AsyncIterator[None]:
        async with self._sweeping:  # not while a sweep runs
            self._wiring += 1
            self._no_wiring.clear()
        try:
            yield
        finally:
            self._wiring -= 1
            if self._wiring == 0:
                self._no_wiring.set()

    @contextlib.asynccontextmanager
    async def sweep(self) -> AsyncIterator[None]:
        async with self._sweeping:
            await self._no_wiring.wait()
            yield


class Datapath(Protocol):
    name: str

    async def start(
        self,
        views: Callable[[], Iterable[InterfaceView]],
        network_cidrs: Sequence[str],
        assignments: Sequence[Assignment],
    ) -> None:
        """Before the first CNI call: node settings, interfaces, SNAT, leftovers no assignment owns."""
        ...

    async def sync_interfaces(self, views: Iterable[InterfaceView]) -> None:
        """After the pool attached, detached or reconciled interfaces."""
        ...

    async def remove_leftovers(
        self,
        assignments: Callable[[], Sequence[Assignment]],
        views: Callable[[], Sequence[InterfaceView]],
    ) -> None:
        """Remove host-side state (veths, routes, rules) that no assignment or held interface owns;
        what is owned is read through the callables once the sweep can no longer race an ADD."""
        ...

    def close(self) -> None: ...

    async def add_pod(self, assignment: Assignment, *, dns: PodDns = NO_DNS) -> PodWiring: ...

    async def del_pod(self, assignment: Assignment) -> None: ...

    async def check_pod(self, assignment: Assignment) -> None: ...


class NoDatapath:
    """DATAPATH=none: IPAM only; the runtime or a chained plugin wires the pod."""

    name = "none"

    async def start(
        self,
        views: Callable[[], Iterable[InterfaceView]],
        network_cidrs: Sequence[str],
        assignments: Sequence[Assignment],
    ) -> None:
        return None

    async def sync_interfaces(self, views: Iterable[InterfaceView]) -> None:
        return None

    async def remove_leftovers(
        self,
        assignments: Callable[[], Sequence[Assignment]],
        views: Callable[[], Sequence[InterfaceView]],
    ) -> None:
        return None

    def close(self) -> None:
        return None

    async def add_pod(self, assignment: Assignment, *, dns: PodDns = NO_DNS) -> PodWiring:
        return PodWiring()

    async def del_pod(self, assignment: Assignment) -> None:
        return None

    async def check_pod(self, assignment: Assignment) -> None:
        return None
