"""DATAPATH=windows: HCN L2Bridge networks, one per cloud interface, and one endpoint per pod.

The Azure CNI / Calico for Windows model (docs/windows.md):

* a network per interface that holds pod addresses, named ``cloud-cni-<interface id>``: L2Bridge,
  schema 2.0, a static IPAM subnet (the interface's subnet, default route via its gateway), bound to
  the host adapter whose MAC is the interface's (NetAdapterName), non-persistent. Looked up by name
  before it is created, so a restart finds its own; created when the interface is in service,
  deleted once it is detached and no endpoint is left on it;
* an endpoint per pod, named ``cloud-cni-<container id>_<ifname>``: the pod's address with the
  subnet's prefix length, default route via the gateway, OutBoundNAT whose exceptions are the
  VPC/VNet CIDRs, CLUSTER_CIDRS, SERVICE_CIDRS and EXCLUDE_SNAT_CIDRS (none with EXTERNAL_SNAT), an
  SDNRoute to the node's own address for host <-> pod traffic; attached to the pod's HCN namespace,
  the GUID containerd passes as CNI_NETNS (namespace v2 attach; a path is Docker's v1 attach, which
  is refused).

Two HCN calls per ADD (create the endpoint, attach it) and two per DEL (detach, delete): network IDs
are cached, endpoint IDs are remembered from the ADD or the start-up listing. Every call runs in this
datapath's threads under a deadline (HCN can hang), and only HCN's documented transient answers
("Element not found" during churn, lock and RPC timeouts, the service restarting) are retried, with
backoff. A failed ADD undoes what it did; DEL works from the allocation record with the namespace
already gone. HCN_TRACE appends every call as a JSON line for checking against hcsshim's schema.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import os
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import structlog

from ipamd.datapath.base import NO_DNS, PodDns, PodWiring, SweepGate
from ipamd.datapath.windows import documents
from ipamd.datapath.windows.hcn import HCN_E_NETWORK_NOT_FOUND, Document, Hcn, HcnError, HcnTimeout
from ipamd.errors import DatapathError, NetnsNotFound
from ipamd.pool.model import Assignment, AttachmentKey, InterfaceId, InterfaceView

T = TypeVar("T")
log = structlog.get_logger("ipamd.datapath")

# The HCN function behind each protocol method, and the kind of object its document describes.
CALLS: dict[str, tuple[str, str]] = {
    "list_networks": ("HcnEnumerateNetworks", "network"),
    "create_network": ("HcnCreateNetwork", "network"),
    "delete_network": ("HcnDeleteNetwork", "network"),
    "list_endpoints": ("HcnEnumerateEndpoints", "endpoint"),
    "create_endpoint": ("HcnCreateEndpoint", "endpoint"),
    "get_endpoint": ("HcnQueryEndpointProperties", "endpoint"),
    "delete_endpoint": ("HcnDeleteEndpoint", "endpoint"),
    "get_namespace": ("HcnQueryNamespaceProperties", "namespace"),
    "modify_namespace": ("HcnModifyNamespace", "namespace"),
}
RETRY_DELAYS = (0.05, 0.1, 0.2, 0.4, 0.8)  # seconds before each retry of a transient answer


def gateway_of(view: InterfaceView) -> str:
    net = ipaddress.IPv4Network(view.subnet_cidr, strict=False)
    return str(net.network_address + 1)


class HcnClient:
    """The datapath's way to HCN: a deadline on every call, retries of transient answers, the call
    counter and the trace. Blocking: run in the datapath's threads."""

    def __init__(
        self,
        hcn: Hcn,
        *,
        timeout: float,
        trace_path: str | None = None,
        on_call: Callable[[str, str], None] | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.hcn = hcn
        self.timeout = timeout
        self.trace_path = trace_path
        self.on_call = on_call
        self.sleep = sleep
        self._hung = ThreadPoolExecutor(max_workers=8, thread_name_prefix="hcn-call")
        self._trace_lock = threading.Lock()

    def call(
        self,
        method: str,
        *args: Any,
        doc: Document | None = None,
        gone: Callable[[], bool] | None = None,
    ) -> Any:
        """One HCN call under the deadline; transient answers retried with backoff. "Element not
        found" is transient for a create or an attach (HNS during churn) and for a listing (an object
        went between the enumeration and its query), but final for a get, a detach or a delete (the
        object is gone, which is what they want or report). ``gone``, asked after a not-found
        answer, says whether what the call needs is really gone (then no retry: the answer stands)."""
        delays = iter(RETRY_DELAYS)
        final_not_found = method.startswith(("get", "delete")) or _detaching(doc)
        while True:
            try:
                return self._once(method, *args, doc=doc)
            except HcnError as exc:
                retry = exc.transient and not isinstance(exc, HcnTimeout)
                if method.startswith("list") and exc.not_found:
                    retry = True  # an object went between HCN's enumeration and its query: list again
                elif exc.not_found and (final_not_found or (gone is not None and gone())):
                    retry = False
                delay = next(delays, None) if retry else None
                if delay is None:
                    raise
                log.info("hcn_retry", method=CALLS[method][0], hresult=f"0x{exc.hresult:08X}", delay=delay)
                self.sleep(delay)

    def _once(self, method: str, *args: Any, doc: Document | None) -> Any:
        self._trace(method, doc)
        fn = getattr(self.hcn, method)
        future = self._hung.submit(fn, *args)
        try:
            result = future.result(timeout=self.timeout)
        except TimeoutError:
            self._count(method, "timeout")
            raise HcnTimeout(CALLS[method][0], self.timeout) from None
        except HcnError as exc:
            self._count(method, "not_found" if exc.not_found else "error")
            raise
        self._count(method, "ok")
        return result

    def _count(self, method: str, result: str) -> None:
        if self.on_call is not None:
            self.on_call(CALLS[method][0], result)

    def _trace(self, method: str, doc: Document | None) -> None:
        if not self.trace_path:
            return
        name, kind = CALLS[method]
        line = json.dumps({"method": name, "kind": kind, "doc": doc}, separators=(",", ":")) + "\n"
        with self._trace_lock:
            fd = os.open(self.trace_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
            try:
                os.write(fd, line.encode())
            finally:
                os.close(fd)

    def close(self) -> None:
        self._hung.shutdown(wait=False, cancel_futures=True)  # a hung HCN call is not waited for


class WindowsDatapath:
    name = "windows"

    def __init__(
        self,
        hcn: Hcn,
        *,
        external_snat: bool = False,
        exclude_snat_cidrs: Sequence[str] = (),
        cluster_cidrs: Sequence[str] = (),
        service_cidrs: Sequence[str] = (),
        call_timeout: float = 30.0,
        trace_path: str | None = None,
        on_call: Callable[[str, str], None] | None = None,
        workers: int = 4,
    ) -> None:
        self.client = HcnClient(hcn, timeout=call_timeout, trace_path=trace_path, on_call=on_call)
        self.external_snat = external_snat
        self.extra_exceptions = (*cluster_cidrs, *service_cidrs, *exclude_snat_cidrs)
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="datapath")
        self._views: Callable[[], Iterable[InterfaceView]] = list
        self._network_cidrs: tuple[str, ...] = ()
        self._networks: dict[InterfaceId, str] = {}  # interface -> HCN network ID
        self._endpoints: dict[AttachmentKey, str] = {}  # attachment -> HCN endpoint ID
        self._unwanted: dict[InterfaceId, str] = {}  # networks of detached interfaces not yet deleted
        self._network_lock = asyncio.Lock()
        self._gate = SweepGate()

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)

    # --- life cycle ------------------------------------------------------------------------------

    async def start(
        self,
        views: Callable[[], Iterable[InterfaceView]],
        network_cidrs: Sequence[str],
        assignments: Sequence[Assignment],
    ) -> None:
        self._views = views
        self._network_cidrs = tuple(network_cidrs)
        await self.sync_interfaces(views())
        await self._sweep(assignments, list(views()))

    async def sync_interfaces(self, views: Iterable[InterfaceView]) -> None:
        held = list(views)
        for view in held:
            if self._pod_interface(view):
                await self._network(view)
        await self._remove_networks(held)

    async def remove_leftovers(
        self,
        assignments: Callable[[], Sequence[Assignment]],
        views: Callable[[], Sequence[InterfaceView]],
    ) -> None:
        async with self._gate.sweep():  # an ADD in flight may own an endpoint the listing shows
            await self._sweep(assignments(), views())

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=False)
        self.client.close()

    # --- pods ------------------------------------------------------------------------------------

    async def add_pod(self, assignment: Assignment, *, dns: PodDns = NO_DNS) -> PodWiring:
        namespace = _namespace_id(assignment.netns)
        view = self._view(assignment.interface_id)
        network_id = await self._network(view)
        net = ipaddress.IPv4Network(view.subnet_cidr, strict=False)
        gateway = gateway_of(view)
        nat = None if self.external_snat else _unique((*self._network_cidrs, *self.extra_exceptions))
        try:
            name = documents.endpoint_name(assignment.key.container_id, assignment.key.ifname)
            doc = documents.endpoint_doc(
                name=name,
                network_id=network_id,
                ip=assignment.ip,
                prefix_length=net.prefixlen,
                gateway=gateway,
                node_ip=self._node_ip(),
                outbound_nat_exceptions=nat,
                # The endpoint's Dns takes the servers and search domains. dns.options are
                # resolv.conf options (ndots:5, timeout:1), not part of what HCN applies to a pod's
                # resolver: they are not sent (hcsshim's Dns.Options stays empty).
                dns_servers=dns.servers,
                dns_search=dns.searches,
            )
        except ValueError as exc:  # nothing was sent: an address or name HCN would refuse
            raise DatapathError(f"HCN endpoint for {assignment.ip}: {exc}") from None
        async with self._gate.wiring():
            try:
                endpoint = await self._run(self._create_and_attach, network_id, name, doc, namespace)
            except _NetworkGone:  # HNS lost it (restarted): make it again, once
                if self._networks.get(view.id) == network_id:
                    del self._networks[view.id]
                network_id = await self._network(view)
                doc = {**doc, "HostComputeNetwork": network_id}
                endpoint = await self._run(self._create_and_attach, network_id, name, doc, namespace)
        self._endpoints[assignment.key] = str(endpoint["ID"])
        return PodWiring(
            gateway=gateway,
            sandbox_mac=str(endpoint.get("MacAddress") or ""),
            routes=(("0.0.0.0/0", gateway),),
            prefix_length=net.prefixlen,
        )

    def _create_and_attach(self, network_id: str, name: str, doc: Document, namespace: str) -> Document:
        try:
            endpoint = self._create_endpoint(network_id, name, doc)
        except HcnError as exc:
            if exc.hresult == HCN_E_NETWORK_NOT_FOUND:
                raise _NetworkGone(network_id) from None
            self._remove_by_name(name)  # a create that timed out or errored may still have made it
            raise _error("create endpoint", exc) from None
        endpoint_id = str(endpoint["ID"])
        try:
            request = documents.attach_request(endpoint_id)
            missing = lambda: self._no_namespace(namespace)  # noqa: E731
            self.client.call("modify_namespace", namespace, request, doc=request, gone=missing)
        except HcnError as exc:
            self._remove_endpoint(endpoint_id, namespace)
            if exc.hresult in _NAMESPACE_MISSING:
                raise NetnsNotFound(f"HCN namespace {namespace} does not exist") from None
            raise _error("attach endpoint", exc) from None
        return endpoint

    def _no_namespace(self, namespace: str) -> bool:
        """Whether the namespace an attach was refused for is really missing (then its "Element not
        found" is the answer, not HNS's churn): one query, made only on that failure path."""
        try:
            self.client.call("get_namespace", namespace, doc=None)
        except HcnError as exc:
            return exc.not_found
        return False

    def _create_endpoint(self, network_id: str, name: str, doc: Document) -> Document:
        try:
            created: Document = self.client.call("create_endpoint", network_id, doc, doc=doc)
            return created
        except HcnError as exc:
            if not _exists(exc):
                raise
        # A retried ADD (or a leftover of one that crashed): the name is taken. Start clean, once.
        self._remove_by_name(name)
        again: Document = self.client.call("create_endpoint", network_id, doc, doc=doc)
        return again

    async def del_pod(self, assignment: Assignment) -> None:
        endpoint_id = self._endpoints.pop(assignment.key, None)
        namespace = assignment.netns if documents.is_guid(assignment.netns) else ""
        await self._run(self._delete, assignment.key, endpoint_id, namespace)

    def _delete(self, key: AttachmentKey, endpoint_id: str | None, namespace: str) -> None:
        try:
            if endpoint_id is None:  # not seen since start: find it by its name
                found = self.client.call(
                    "list_endpoints",
                    documents.query({"Name": documents.endpoint_name(key.container_id, key.ifname)}),
                    doc=documents.query({"Name": documents.endpoint_name(key.container_id, key.ifname)}),
                )
                if not found:
                    return
                endpoint_id = str(found[0]["ID"])
                namespace = namespace or str(found[0].get("HostComputeNamespace") or "")
            self._remove_endpoint(endpoint_id, namespace, strict=True)
        except HcnError as exc:
            raise _error("delete endpoint", exc) from None

    def _remove_endpoint(self, endpoint_id: str, namespace: str, *, strict: bool = False) -> None:
        """Detach (when attached) and delete; "not found" is done. ``strict``: raise other errors."""
        try:
            if namespace:
                request = documents.detach_request(endpoint_id)
                try:
                    self.client.call("modify_namespace", namespace, request, doc=request)
                except HcnError as exc:
                    if not (exc.not_found or exc.hresult in _NOT_ATTACHED):
                        raise
            try:
                self.client.call("delete_endpoint", endpoint_id, doc=None)
            except HcnError as exc:
                if not exc.not_found:
                    raise
        except HcnError as exc:
            if strict:
                raise
            log.warning("hcn_endpoint_cleanup_failed", endpoint=endpoint_id, error=str(exc))

    def _remove_by_name(self, name: str) -> None:
        try:
            found = self.client.call("list_endpoints", documents.query({"Name": name}),
                                     doc=documents.query({"Name": name}))  # fmt: skip
        except HcnError as exc:
            log.warning("hcn_endpoint_lookup_failed", name=name, error=str(exc))
            return
        for endpoint in found:
            self._remove_endpoint(str(endpoint["ID"]), str(endpoint.get("HostComputeNamespace") or ""))

    async def check_pod(self, assignment: Assignment) -> None:
        await self._run(self._check, assignment)

    def _check(self, assignment: Assignment) -> None:
        name = documents.endpoint_name(assignment.key.container_id, assignment.key.ifname)
        query = documents.query({"Name": name})
        try:
            found = self.client.call("list_endpoints", query, doc=query)
            if not found:
                raise DatapathError(f"HCN endpoint {name} is missing")
            endpoint = found[0]
            addresses = [c.get("IpAddress") for c in endpoint.get("IpConfigurations") or ()]
            if assignment.ip not in addresses:
                raise DatapathError(f"HCN endpoint {name} does not hold {assignment.ip}")
            namespace = _namespace_id(assignment.netns)
            attached = documents.namespace_resources(self.client.call("get_namespace", namespace, doc=None))
            if str(endpoint["ID"]).lower() not in {e.lower() for e in attached}:
                raise DatapathError(f"HCN endpoint {name} is not attached to namespace {namespace}")
        except HcnError as exc:
            if exc.hresult in _NAMESPACE_MISSING:
                raise NetnsNotFound(f"HCN namespace {assignment.netns} does not exist") from None
            raise _error("check endpoint", exc) from None

    # --- networks --------------------------------------------------------------------------------

    @staticmethod
    def _pod_interface(view: InterfaceView) -> bool:
        return bool(view.ips or view.prefixes or not view.primary)

    def _view(self, interface_id: InterfaceId) -> InterfaceView:
        for view in self._views():
            if view.id == interface_id:
                return view
        raise DatapathError(f"interface {interface_id} is not held by the node")

    def _node_ip(self) -> str:
        for view in self._views():
            if view.primary:
                return view.primary_ip
        raise DatapathError("the node's primary interface is not known")

    async def _network(self, view: InterfaceView) -> str:
        cached = self._networks.get(view.id)
        if cached is not None:
            return cached
        async with self._network_lock:
            if (cached := self._networks.get(view.id)) is not None:
                return cached
            network_id = await self._run(self._ensure_network, view)
            self._networks[view.id] = network_id
            return network_id

    def _ensure_network(self, view: InterfaceView) -> str:
        name = documents.network_name(view.id)
        query = documents.query({"Name": name})
        try:
            found = self.client.call("list_networks", query, doc=query)
            if found:
                return str(found[0]["ID"])
            adapter = self.client.hcn.adapter_by_mac(view.mac) if view.mac else None
            if adapter is None:
                raise DatapathError(f"no host adapter has the MAC {view.mac or '(unknown)'} of {view.id}")
            doc = documents.network_doc(
                name=name, subnet_cidr=view.subnet_cidr, gateway=gateway_of(view), adapter_name=adapter
            )
            created = self.client.call("create_network", doc, doc=doc)
            log.info("hcn_network_created", network=name, id=created["ID"], adapter=adapter)
            return str(created["ID"])
        except HcnError as exc:
            raise _error(f"network {name}", exc) from None

    async def _remove_networks(self, held: Sequence[InterfaceView]) -> None:
        """Networks of interfaces no longer held go once no endpoint is left on them; one HCN refuses
        to delete (an endpoint still on it) is tried again at the next sync."""
        keep = {documents.network_name(v.id) for v in held}
        for interface_id in [i for i in self._networks if documents.network_name(i) not in keep]:
            self._unwanted[interface_id] = self._networks.pop(interface_id)
        for interface_id, network_id in list(self._unwanted.items()):
            if documents.network_name(interface_id) in keep:  # attached again meanwhile
                del self._unwanted[interface_id]
                continue
            if await self._run(self._delete_network, network_id, documents.network_name(interface_id)):
                del self._unwanted[interface_id]

    def _delete_network(self, network_id: str, name: str) -> bool:
        """Delete a network; True once it is gone."""
        try:
            self.client.call("delete_network", network_id, doc=None)
            log.info("hcn_network_deleted", network=name, id=network_id)
            return True
        except HcnError as exc:
            if exc.not_found:
                return True
            log.warning("hcn_network_delete_failed", network=name, error=str(exc))
            return False

    # --- leftovers -------------------------------------------------------------------------------

    async def _sweep(self, assignments: Sequence[Assignment], views: Sequence[InterfaceView]) -> None:
        """Endpoints named like ours that no assignment owns go; the others are remembered (so a DEL
        costs two calls after a restart too). Networks of interfaces no longer held go when empty."""
        owned = {documents.endpoint_name(a.key.container_id, a.key.ifname): a.key for a in assignments}
        query = documents.query()
        try:
            endpoints: list[Document] = await self._run(
                lambda: self.client.call("list_endpoints", query, doc=query)
            )
            networks: list[Document] = await self._run(
                lambda: self.client.call("list_networks", query, doc=query)
            )
        except HcnError as exc:
            log.warning("hcn_sweep_failed", error=str(exc))
            return
        removed = 0
        for endpoint in endpoints:
            name = str(endpoint.get("Name") or "")
            if documents.parse_endpoint_name(name) is None:
                continue  # not ours
            if name in owned:
                self._endpoints.setdefault(owned[name], str(endpoint["ID"]))
                continue
            namespace = str(endpoint.get("HostComputeNamespace") or "")
            await self._run(self._remove_endpoint, str(endpoint["ID"]), namespace)
            removed += 1
        held = {documents.network_name(v.id) for v in views}
        for network in networks:
            name = str(network.get("Name") or "")
            if name.startswith(documents.NETWORK_PREFIX) and name not in held:
                await self._run(self._delete_network, str(network["ID"]), name)
        if removed:
            log.info("hcn_leftover_endpoints_removed", count=removed)


_NAMESPACE_MISSING = frozenset({0x803B0027, 0x80070490})  # GCN_E_NETCOMPARTMENT_NOT_FOUND, Element not found
_NOT_ATTACHED = frozenset({0x803B0034})  # HCN_E_ENDPOINT_NOT_ATTACHED
_NAME_TAKEN = frozenset({0x803B0013, 0x803B0010})  # HCN_E_PORT_ALREADY_EXISTS, _NETWORK_ALREADY_EXISTS


class _NetworkGone(Exception):
    """The cached network is no longer in HCN (HNS restarted, or someone deleted it)."""


def _detaching(doc: Document | None) -> bool:
    return doc is not None and doc.get("RequestType") == "Remove"


def _exists(exc: HcnError) -> bool:
    return exc.hresult in _NAME_TAKEN


def _namespace_id(netns: str) -> str:
    if documents.is_guid(netns):
        return netns
    raise NetnsNotFound(
        f"CNI_NETNS {netns!r} is not an HCN namespace GUID: the Windows datapath attaches endpoints to "
        "the namespace containerd creates (HCN v2); Docker's v1 attach by container is not supported"
    )


def _unique(items: Iterable[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(i for i in items if i))


def _error(what: str, exc: HcnError) -> DatapathError:
    return DatapathError(f"{what}: {exc}")


__all__ = ["CALLS", "HcnClient", "WindowsDatapath"]
