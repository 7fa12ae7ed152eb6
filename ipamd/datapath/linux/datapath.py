"""DATAPATH=linux: the daemon wires pod networks itself (routed /32 veths, policy rules, SNAT).

The netlink work (``ipamd.datapath.linux.netlink``) is blocking and enters pod namespaces per
thread, so it runs in this datapath's own small thread pool, never on the event loop and never in
the shared ``asyncio.to_thread`` pool.

Life cycle:

* ``start`` (daemon start, before any CNI call is served): ip_forward, rp_filter, the primary
  interface's MTU as the pod MTU unless POD_MTU, every secondary interface set up, SNAT (nftables
  or iptables) and its fwmark rule, the host veths of pods adopted from aws-vpc-cni renamed to ours,
  and the host-side leftovers no assignment owns removed (veths named like ours, pod rules,
  interface rules of interfaces no longer held).
* ``sync_interfaces`` (after the pool attached, detached or reconciled interfaces): new secondary
  interfaces set up (waiting up to ``link_timeout`` for the link to appear, as a hot-plugged NIC
  does), the rules and table of removed ones torn down. ``add_pod`` also sets up its interface first
  if the sync has not yet, so no pod is wired onto an interface that is not in service.
* ``add_pod`` / ``del_pod`` / ``check_pod``: see ``netlink``. DEL works from the allocation record
  alone (the host veth name is derived from the attachment key), so it succeeds when the pod's netns
  is already gone.
"""

from __future__ import annotations

import asyncio
import hashlib
import ipaddress
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, TypeVar

import structlog

from ipamd.datapath.base import NO_DNS, PodDns, PodWiring, SweepGate
from ipamd.datapath.linux import netlink
from ipamd.errors import DatapathError, InterfaceExists
from ipamd.migrate import awsvpc
from ipamd.pool.model import Assignment, AttachmentKey, InterfaceId, InterfaceView

T = TypeVar("T")
log = structlog.get_logger("ipamd.datapath")

DEFAULT_MTU = 1500


def host_veth_name(prefix: str, key: AttachmentKey) -> str:
    """``prefix`` + 11 hex of sha1(container id / ifname): <= 15 characters, stable across restarts."""
    digest = hashlib.sha1(f"{key.container_id}/{key.ifname}".encode(), usedforsecurity=False).hexdigest()
    return prefix + digest[:11]


def table_of(view: InterfaceView) -> int | None:
    """The route table of an interface: none (main) for the primary, device index + 1 otherwise."""
    return None if view.primary or view.device_index == 0 else view.device_index + 1


def gateway_of(view: InterfaceView) -> str:
    """The subnet's router: its first host address (AWS and Azure both put it there)."""
    net = ipaddress.IPv4Network(view.subnet_cidr, strict=False)
    return str(net.network_address + 1)


class LinuxDatapath:
    name = "linux"

    def __init__(
        self,
        *,
        veth_prefix: str = "ccni",
        pod_mtu: int | None = None,
        external_snat: bool = False,
        node_port_support: bool = True,
        exclude_snat_cidrs: Sequence[str] = (),
        snat_backend: str = "auto",
        link_timeout: float = 10.0,
        workers: int = 4,
        legacy_veth_prefix: str = awsvpc.DEFAULT_VETH_PREFIX,
    ) -> None:
        self.veth_prefix = veth_prefix
        self.legacy_veth_prefix = legacy_veth_prefix  # aws-node's, for the pods adopted from it
        self.pod_mtu = pod_mtu
        self.external_snat = external_snat
        self.node_port_support = node_port_support
        self.exclude_snat_cidrs = tuple(exclude_snat_cidrs)
        self.snat_backend = snat_backend
        self.link_timeout = link_timeout
        self._mtu = pod_mtu or DEFAULT_MTU
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="datapath")
        self._views: Callable[[], Iterable[InterfaceView]] = list
        self._ready: dict[InterfaceId, str] = {}  # secondary interfaces in service -> link name
        self._locks: dict[InterfaceId, asyncio.Lock] = {}
        self.snat: Any = None
        self._deleting: set[Future[None]] = set()
        self._gate = SweepGate()

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)

    # --- start-up ---------------------------------------------------------------------------------

    async def start(
        self,
        views: Callable[[], Iterable[InterfaceView]],
        network_cidrs: Sequence[str],
        assignments: Sequence[Assignment],
    ) -> None:
        self._views = views
        current = list(views())
        primary = next((v for v in current if v.primary), None)
        if primary is None:
            raise DatapathError("the pool holds no primary interface")
        found = await self._run(netlink.link_by_mac, primary.mac, self.link_timeout)
        if found is None:
            raise DatapathError(f"no link on this node has the primary interface's MAC {primary.mac}")
        primary_link, _index, primary_mtu = found
        self._mtu = self.pod_mtu or primary_mtu
        await self._run(netlink.set_sysctl, "net/ipv4/ip_forward", "1")
        await self._run(netlink.set_sysctl, f"net/ipv4/conf/{primary_link}/rp_filter", "2")
        await self._apply_snat(primary.primary_ip, network_cidrs, primary_link)
        await self._take_over_adopted(assignments)  # before the sweep: their veths are ours after it
        await self.remove_leftovers(lambda: assignments, lambda: current)
        await self.sync_interfaces(current)
        log.info(
            "datapath_started",
            primary=primary_link,
            mtu=self._mtu,
            snat="external" if self.external_snat else getattr(self.snat, "backend", "off"),
            node_port_support=self.node_port_support,
            network_cidrs=list(network_cidrs),
        )

    async def _take_over_adopted(self, assignments: Sequence[Assignment]) -> None:
        """Rename the host veths of pods adopted from aws-vpc-cni to ours (docs/adoption-aws-vpc-cni.md).

        Adopted assignments are those with no netns (aws-vpc-cni records none; every ADD of ours
        does). At every start, idempotent: a pod whose veth has our name already is left alone.
        aws-vpc-cni's veth is the device of the pod's ``<ip>/32`` route, which must be the name
        aws-vpc-cni gives that pod (``legacy_veth_prefix`` + sha1("<ns>.<pod>")); with no route, a
        link of that name. A pod found by neither is left for its DEL; one that fails is logged and
        left as it is (its CHECK then fails): the start goes on for the others."""
        adopted = [a for a in assignments if not a.netns]
        if not adopted:
            return
        routes = await self._run(netlink.pod_routes)
        for assignment in adopted:
            ours = host_veth_name(self.veth_prefix, assignment.key)
            if await self._run(netlink.link_exists, ours):
                continue
            pod = assignment.pod
            legacy = (
                awsvpc.legacy_veth_name(pod.namespace, pod.name, prefix=self.legacy_veth_prefix)
                if pod.namespace and pod.name
                else ""
            )
            device = routes.get(assignment.ip)
            if device is None and legacy and await self._run(netlink.link_exists, legacy):
                device = legacy
            plog = log.bind(ip=assignment.ip, container_id=assignment.key.container_id, veth=ours)
            if device is None:
                plog.warning("adopted_pod_veth_missing", expected=legacy or None)
                continue
            # a row naming no pod (an older aws-vpc-cni): the route alone finds it, on a veth of aws-node's
            if not (device == legacy if legacy else device.startswith(self.legacy_veth_prefix)):
                expected = legacy or f"{self.legacy_veth_prefix}*"
                plog.error("adopted_pod_route_elsewhere", device=device, expected=expected)
                continue
            try:
                await self._run(netlink.rename_veth, device, ours, assignment.ip)
            except DatapathError as exc:
                plog.error("adopted_pod_veth_not_renamed", device=device, error=str(exc))
                continue
            plog.info("adopted_pod_veth_renamed", device=device)

    async def _apply_snat(self, primary_ip: str, network_cidrs: Sequence[str], primary_link: str) -> None:
        """SNAT and the NodePort marking (snat.py) and the fwmark rule both route marked packets by."""
        from ipamd.datapath.linux.snat import Snat, SnatConfig, SnatError

        try:
            config = SnatConfig(
                primary_ip=primary_ip,
                no_snat_cidrs=tuple(network_cidrs) + self.exclude_snat_cidrs,
                veth_prefix=self.veth_prefix,
                external_snat=self.external_snat,
                node_port_if=primary_link if self.node_port_support else "",
            )
            self.snat = Snat(self.snat_backend)
            await self._run(self.snat.apply, config)  # removes ours when it installs nothing
        except SnatError as exc:
            raise DatapathError(f"SNAT: {exc}") from None
        await self._run(netlink.ensure_fwmark_rule, config.installs)

    async def remove_leftovers(
        self,
        assignments: Callable[[], Sequence[Assignment]],
        views: Callable[[], Sequence[InterfaceView]],
    ) -> None:
        """Veths named like ours, pod rules and interface rules that nothing held owns (start, GC).

        No ADD wires while the sweep runs (new ones wait, running ones finish first), and what is
        owned is read from the pool after that: a pod being wired is never taken for a leftover."""
        async with self._gate.sweep():
            await self._sweep(assignments(), views())

    async def _sweep(self, assignments: Sequence[Assignment], views: Sequence[InterfaceView]) -> None:
        owned = {host_veth_name(self.veth_prefix, a.key) for a in assignments}
        owned_ips = {a.ip for a in assignments}
        stray_veths = [n for n in await self._run(netlink.host_veths, self.veth_prefix) if n not in owned]
        stray_ips = (await self._run(netlink.pod_rule_ips)) - owned_ips
        for name in stray_veths:
            await self._run(netlink.unwire_pod, "", name)
        for ip in stray_ips:
            await self._run(netlink.unwire_pod, ip, "")
        held = {v.primary_ip for v in views if table_of(v) is not None}
        stale = {ip: t for ip, t in (await self._run(netlink.interface_rules)).items() if ip not in held}
        for ip, table in stale.items():
            await self._run(netlink.teardown_interface, ip, table)
        if stray_veths or stray_ips or stale:
            log.warning(
                "datapath_leftovers_removed",
                veths=stray_veths,
                pod_rules=sorted(stray_ips),
                interface_rules=sorted(stale),
            )

    # --- interfaces -------------------------------------------------------------------------------

    async def sync_interfaces(self, views: Iterable[InterfaceView]) -> None:
        current = {v.id: v for v in views if table_of(v) is not None}
        for view in current.values():
            try:
                await self._ensure_interface(view)
            except DatapathError as exc:  # the next sync or the first ADD on it tries again
                log.error("interface_setup_failed", interface=view.id, mac=view.mac, error=str(exc))
        for iid in [i for i in self._ready if i not in current]:
            name = self._ready.pop(iid)
            log.info("interface_removed", interface=iid, link=name)
        held = {v.primary_ip for v in current.values()}
        stale = {ip: t for ip, t in (await self._run(netlink.interface_rules)).items() if ip not in held}
        for ip, table in stale.items():
            await self._run(netlink.teardown_interface, ip, table)

    async def _ensure_interface(self, view: InterfaceView) -> None:
        table = table_of(view)
        if table is None or view.id in self._ready:
            return
        lock = self._locks.setdefault(view.id, asyncio.Lock())
        async with lock:
            if view.id in self._ready:
                return
            prefixlen = ipaddress.IPv4Network(view.subnet_cidr, strict=False).prefixlen
            spec = netlink.InterfaceSpec(
                mac=view.mac,
                ip=view.primary_ip,
                prefixlen=prefixlen,
                gateway=gateway_of(view),
                table=table,
                mtu=self._mtu,
            )
            name = await self._run(netlink.setup_interface, spec, self.link_timeout)
            self._ready[view.id] = name
            log.info("interface_ready", interface=view.id, link=name, table=table, ip=view.primary_ip)

    def _view(self, interface_id: InterfaceId) -> InterfaceView:
        for view in self._views():
            if view.id == interface_id:
                return view
        raise DatapathError(f"interface {interface_id} is not held by the pool")

    # --- pods -------------------------------------------------------------------------------------

    def _spec(self, assignment: Assignment, view: InterfaceView) -> netlink.PodSpec:
        return netlink.PodSpec(
            ip=assignment.ip,
            netns=assignment.netns,
            ifname=assignment.key.ifname,
            host_veth=host_veth_name(self.veth_prefix, assignment.key),
            mtu=self._mtu,
            table=table_of(view),
        )

    async def add_pod(self, assignment: Assignment, *, dns: PodDns = NO_DNS) -> PodWiring:
        # ``dns`` is not used: on Linux the runtime writes the pod's resolv.conf itself.
        view = self._view(assignment.interface_id)
        await self._ensure_interface(view)
        spec = self._spec(assignment, view)
        async with self._gate.wiring():
            try:
                wired = await self._run(netlink.wire_pod, spec)
            except InterfaceExists:
                if not self._deleting:
                    raise
                await self.settle()  # a veth of this netns deleted just before is still going away
                wired = await self._run(netlink.wire_pod, spec)
        return PodWiring(
            gateway=netlink.LINK_GATEWAY,
            host_ifname=spec.host_veth,
            host_mac=wired.host_mac,
            sandbox_mac=wired.pod_mac,
            mtu=wired.mtu,
            routes=(("0.0.0.0/0", netlink.LINK_GATEWAY),),
        )

    async def del_pod(self, assignment: Assignment) -> None:
        """Out of routing before the answer; the veth itself is deleted just after (15-30 ms of kernel
        time no pod termination needs to wait for). A crash in between leaves a veth that the next
        start removes as a leftover."""
        name = host_veth_name(self.veth_prefix, assignment.key)
        index = await self._run(netlink.detach_pod, assignment.ip, name)
        if index is not None:
            future = self._pool.submit(netlink.delete_link, index)
            self._deleting.add(future)
            future.add_done_callback(self._deleted)

    def _deleted(self, future: Future[None]) -> None:
        self._deleting.discard(future)
        if not future.cancelled() and future.exception() is not None:
            log.warning("veth_delete_failed", error=str(future.exception()))

    async def settle(self) -> None:
        """Wait until deferred veth deletions are done (tests, shutdown)."""
        pending = [asyncio.wrap_future(f) for f in list(self._deleting)]
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)

    async def check_pod(self, assignment: Assignment) -> None:
        view = self._view(assignment.interface_id)
        await self._run(netlink.check_pod, self._spec(assignment, view))

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=False)  # deferred veth deletions finish


__all__ = ["LinuxDatapath", "gateway_of", "host_veth_name", "table_of"]
