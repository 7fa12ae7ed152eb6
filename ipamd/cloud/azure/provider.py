"""AzureProvider: secondary ipConfigurations on the NICs of one Azure VM or scale-set instance.

An interface of the pool is a NIC; a pod address is a secondary ipConfiguration on it. NICs are part
of the VM (Azure attaches them only to a stopped VM), so the pool never attaches or detaches one:
``instance_limits`` reports the NICs the VM has and ``detachable_interfaces=False``.

Writes follow ARM's rules (reference/azure-and-windows.md):

* a change is a GET, a modification and a PUT of the whole resource with ``If-Match: <etag>``, so a
  concurrent writer is never overwritten: on 412 the resource is read again and the change redone
  (up to ``etag_retries`` times);
* changes that wait at the same time for the same resource are coalesced into one write: the first
  caller writes for every change queued when it reads, the others wait for its outcome;
* ipConfigurations cannot be tagged: the daemon's own are named ``cloudcni-<8 hex>`` and only those
  are ever listed as pool addresses or removed. Other secondary ipConfigurations are left alone;
* an add is idempotent by name: the names of an add whose outcome is unknown (time-out, 5xx after
  the PUT was sent) are reused by the next add on that NIC, so a retry never adds twice;
* new addresses are taken from the final resource (after the long-running operation), never from
  the first PUT answer, which has none yet;
* the provider enforces the limits itself: 256 ipConfigurations per NIC and 256 private IPs per VM.

Pod subnet (``AZURE_POD_SUBNET_ID``, or a placement from the Node label through
``set_interface_placement``): Azure keeps every ipConfiguration of a NIC in one subnet (ARM refuses
others with ``IpConfigurationsOnSameNicCannotUseDifferentSubnets``: "IPConfigurations on a Nic cannot
belong to different subnets", Azure/azure-sdk-for-java#1865) and every NIC of a VM in one VNet. So a
pod subnet is honoured by putting pod addresses only on the VM's NIC(s) in that subnet: it must be a
subnet of the node's VNet with a NIC of this VM in it, else the placement is refused (no write). When
that NIC is not the primary, ``primary_interface_pods`` is False and the pool leaves the primary NIC
alone (``WarmPoolTargets.primary_interface_pods``). ``assign_ips`` on a NIC in another subnet is
refused before any call; ipConfigurations already there are untouched. New ones copy the application
security groups of their own NIC's primary ipConfiguration, so they stay within that NIC's VNet.

Where the write goes: a standalone VM (or a Flexible scale-set member) writes the NIC
(Microsoft.Network/networkInterfaces/write). A Uniform scale-set instance cannot PUT its NICs (they
belong to the scale set's model): it updates the instance's ``networkProfileConfiguration`` through
the Compute API (Microsoft.Compute/virtualMachineScaleSets/virtualMachines/write), one write for all
its NICs, and reads the result back from the NICs.
"""

from __future__ import annotations

import contextlib
import copy
import ipaddress
import re
import secrets
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import structlog

from ipamd.cloud.azure.client import Arm, EtagMismatch, ResourceId, translate
from ipamd.cloud.azure.imds import AzureNode
from ipamd.cloud.base import Placement
from ipamd.errors import (
    CloudError,
    InterfaceNotFound,
    LimitExceeded,
    PermanentCloudError,
)
from ipamd.pool.model import InstanceLimits, InterfaceId, InterfaceView

NAME_PREFIX = "cloudcni-"
MAX_IPCONFIGS_PER_NIC = 256
MAX_IPS_PER_VM = 256
MAX_PODS_CAP = 250  # AKS's maxPods ceiling (and CNS's DefaultMaxIPs)
ETAG_RETRIES = 5

NIC_WRITE = "Microsoft.Network/networkInterfaces/write"
SUBNET_JOIN = "Microsoft.Network/virtualNetworks/subnets/join/action"
VMSS_VM_WRITE = "Microsoft.Compute/virtualMachineScaleSets/virtualMachines/write"
NIC_READ = "Microsoft.Network/networkInterfaces/read"
VM_READ = "Microsoft.Compute/virtualMachines/read"
VMSS_VM_READ = "Microsoft.Compute/virtualMachineScaleSets/virtualMachines/read"
VMSS_NIC_READ = "Microsoft.Compute/virtualMachineScaleSets/virtualMachines/networkInterfaces/read"
SUBNET_READ = "Microsoft.Network/virtualNetworks/subnets/read"
VNET_READ = "Microsoft.Network/virtualNetworks/read"

_SUBNET_ID = re.compile(
    r"^/subscriptions/[^/]+/resourceGroups/[^/]+/providers/Microsoft\.Network/virtualNetworks/[^/]+"
    r"/subnets/[^/]+$",
    re.IGNORECASE,
)
DIFFERENT_SUBNETS = "IpConfigurationsOnSameNicCannotUseDifferentSubnets"

_log = structlog.get_logger(__name__)

if TYPE_CHECKING:
    from ipamd.cloud.base import CloudProvider, PlacementAware


@contextlib.contextmanager
def _translated(operation: str, action: str = "") -> Iterator[None]:
    try:
        yield
    except CloudError:
        raise
    except Exception as exc:
        raise translate(operation, exc, action=action) from exc


def _key(resource_id: str) -> str:
    return resource_id.lower()  # ARM ids are case-insensitive


def new_name() -> str:
    return NAME_PREFIX + secrets.token_hex(4)


@dataclass
class _Change:
    """One caller's wish for one NIC, waiting in the write queue of its resource."""

    nic: str  # NIC id key
    add: tuple[str, ...] = ()  # ipConfiguration names to add
    remove: frozenset[str] = frozenset()  # addresses to remove (ours only)
    done: threading.Event = field(default_factory=threading.Event)
    result: dict[str, dict[str, Any]] | None = None  # NIC key -> NIC after the write
    error: BaseException | None = None


@dataclass
class _Queue:
    pending: list[_Change] = field(default_factory=list)
    writing: bool = False


class AzureProvider:
    """The ``azure`` ``CloudProvider`` for the node ``node``, through ``arm``.

    ``pod_subnet_id`` (AZURE_POD_SUBNET_ID): pod addresses only on the NIC(s) in that subnet
    (module docstring); ``PermanentCloudError`` when no NIC of the VM is in it.
    """

    name: str = "azure"

    def __init__(
        self,
        arm: Arm,
        node: AzureNode,
        *,
        etag_retries: int = ETAG_RETRIES,
        pod_subnet_id: str | None = None,
    ) -> None:
        self._arm = arm
        self._node = node
        self._etag_retries = etag_retries
        self._lock = threading.Lock()
        self._queues: dict[str, _Queue] = {}
        self._unconfirmed: dict[str, list[str]] = {}  # NIC key -> names of adds with unknown outcome
        self._subnet_cidrs: dict[str, str] = {}
        self._nic_ids: list[str] = []  # device order: the primary NIC first
        self._nic_subnets: dict[str, str] = {}  # NIC key -> its primary ipConfiguration's subnet id
        self._vnet_id = ""
        self._vnet_cidrs: tuple[str, ...] = ()
        self._default_placement: Placement | None = None
        self._placement: Placement | None = None
        self.discover()
        if pod_subnet_id:
            self.set_pod_subnet(pod_subnet_id)

    # --- discovery --------------------------------------------------------------------------------

    def discover(self) -> None:
        """Find this node's NICs (and the VNet's address space) from ARM."""
        node = self._node
        if node.uniform_scale_set:
            with _translated("list_interfaces", VMSS_NIC_READ):
                nics = self._arm.list_vmss_nics(node.resource_group, node.scale_set, node.instance_id)
            ordered = sorted(nics, key=lambda n: (not _props(n).get("primary", False), str(n.get("name"))))
            ids = [str(n["id"]) for n in ordered]
        else:
            with _translated("discover", VM_READ):
                vm = self._arm.get_vm(node.resource_group, node.name)
            refs = _props(vm).get("networkProfile", {}).get("networkInterfaces") or []
            refs = sorted(refs, key=lambda r: not (r.get("properties") or {}).get("primary", len(refs) == 1))
            ids = [str(r["id"]) for r in refs if isinstance(r, dict) and r.get("id")]
        if not ids:
            raise PermanentCloudError("discover", f"ARM lists no NIC for {node.resource_id}")
        self._nic_ids = ids
        by_key = self._read_nics()
        subnets = {key: _subnet_id(_primary_config(nic)) for key, nic in by_key.items()}
        subnet_id = subnets[_key(ids[0])]
        vnet_id = subnet_id.rsplit("/subnets/", 1)[0]
        with _translated("discover", VNET_READ):
            vnet = self._arm.get_vnet(vnet_id)
        prefixes = _props(vnet).get("addressSpace", {}).get("addressPrefixes") or []
        with self._lock:
            self._nic_subnets = subnets
            self._vnet_id = vnet_id
            self._vnet_cidrs = tuple(str(ipaddress.ip_network(p, strict=False)) for p in prefixes)

    # --- pod subnet (placement) -------------------------------------------------------------------

    @property
    def instance_ref(self) -> str:
        """This VM (or scale-set instance) as the Node's ``spec.providerID`` names it: its resource id."""
        return self._node.resource_id

    @property
    def vnet_id(self) -> str:
        """The resource id of the VNet every NIC of this VM is in (for a pod-subnet label's value)."""
        return self._vnet_id

    @property
    def pod_subnet_id(self) -> str | None:
        """The subnet pod addresses go to; None: each NIC's own (pods on every NIC)."""
        with self._lock:
            return self._placement.subnet_id if self._placement else None

    @property
    def primary_interface_pods(self) -> bool:
        """False when the pod subnet is not the primary NIC's: the pool must leave the primary alone."""
        with self._lock:
            placement, primary = self._placement, self._nic_subnets.get(_key(self._nic_ids[0]), "")
        return placement is None or _key(placement.subnet_id) == _key(primary)

    def set_pod_subnet(self, subnet_id: str | None) -> None:
        """AZURE_POD_SUBNET_ID: the default placement (what ``set_interface_placement(None)`` returns
        to), in force at once. Raises as ``set_interface_placement``."""
        default = None
        if subnet_id:
            default = Placement(subnet_id=subnet_id, security_group_ids=None, source="AZURE_POD_SUBNET_ID")
            self._check_placement(default)
        self._default_placement = default
        self.set_interface_placement(default)

    def set_interface_placement(self, placement: Placement | None) -> None:
        """Put new pod ipConfigurations in ``placement.subnet_id`` (``PlacementAware``); None returns to
        AZURE_POD_SUBNET_ID, else each NIC's own subnet. ``ValueError`` for a malformed value,
        ``PermanentCloudError`` when no NIC of this VM is in that subnet (Azure would refuse the
        write); the previous placement then stays. No ARM call: the NICs' subnets are known."""
        if placement is None:
            placement = self._default_placement
        else:
            self._check_placement(placement)
        with self._lock:
            old, self._placement = self._placement, placement
        if placement != old:
            _log.info(
                "interface_placement_set",
                subnet_id=placement.subnet_id if placement else None,
                source=placement.source if placement else None,
                primary_interface_pods=self.primary_interface_pods,
            )

    def _check_placement(self, placement: Placement) -> None:
        if placement.security_group_ids is not None:
            raise ValueError(
                f"{placement.source}: security groups are an EC2 notion; on Azure new ipConfigurations "
                "copy the application security groups of their NIC's primary ipConfiguration"
            )
        subnet = placement.subnet_id
        if not _SUBNET_ID.match(subnet):
            raise ValueError(
                f"{placement.source}: {subnet[:300]!r} is not a subnet resource id: allowed /subscriptions/S/"
                "resourceGroups/G/providers/Microsoft.Network/virtualNetworks/V/subnets/N"
            )
        vnet = subnet.rsplit("/subnets/", 1)[0]
        if _key(vnet) != _key(self._vnet_id):
            raise PermanentCloudError(
                "set_interface_placement",
                f"{placement.source}: subnet {subnet} is not in the node's VNet {self._vnet_id} "
                "(all NICs of a VM, and so all their ipConfigurations, are in one VNet)",
            )
        with self._lock:
            in_subnet = [nic for nic, sub in self._nic_subnets.items() if _key(sub) == _key(subnet)]
        if not in_subnet:
            raise PermanentCloudError(
                "set_interface_placement",
                f"{placement.source}: no NIC of this VM is in subnet {subnet.rsplit('/', 1)[-1]}; "
                f"Azure keeps every ipConfiguration of a NIC in the NIC's subnet ({DIFFERENT_SUBNETS}), "
                "so pod addresses from that subnet need a NIC of the VM in it",
            )

    def _check_nic_takes_pods(self, op: str, nic: str) -> None:
        """Refuse, before any call, to add pod addresses to a NIC outside the pod subnet."""
        with self._lock:
            placement, subnet = self._placement, self._nic_subnets.get(nic, "")
        if placement is not None and _key(subnet) != _key(placement.subnet_id):
            raise PermanentCloudError(
                op,
                f"{nic.rsplit('/', 1)[-1]} is in subnet {subnet.rsplit('/', 1)[-1]} and pod addresses go to "
                f"{placement.subnet_id.rsplit('/', 1)[-1]} ({placement.source}): Azure keeps a NIC's "
                f"ipConfigurations in the NIC's subnet ({DIFFERENT_SUBNETS})",
            )

    @property
    def network_cidrs(self) -> tuple[str, ...]:
        """The VNet's address space: what the datapath reaches without SNAT."""
        return self._vnet_cidrs

    @property
    def node(self) -> AzureNode:
        return self._node

    # --- CloudProvider --------------------------------------------------------------------------

    def instance_limits(self) -> InstanceLimits:
        nics = len(self._nic_ids)
        return InstanceLimits(
            instance_type=self._node.vm_size or "azure-vm",
            max_interfaces=nics,
            ipv4_per_interface=MAX_IPCONFIGS_PER_NIC,
            prefix_delegation=False,
            detachable_interfaces=False,
            max_pods=min(MAX_PODS_CAP, MAX_IPS_PER_VM - nics),
        )

    def list_interfaces(self) -> list[InterfaceView]:
        nics = self._read_nics()
        return [self._view(nics[_key(i)], index) for index, i in enumerate(self._nic_ids)]

    def attach_interface(self, ip_count: int, prefix_count: int) -> InterfaceView:
        raise LimitExceeded(
            "attach_interface", "Azure attaches NICs only to a stopped VM: the pool uses the NICs the VM has"
        )

    def detach_interface(self, interface_id: InterfaceId) -> None:
        raise PermanentCloudError("detach_interface", "Azure NICs are part of the VM and are not detached")

    def assign_ips(self, interface_id: InterfaceId, count: int) -> list[str]:
        if isinstance(count, bool) or not isinstance(count, int) or count < 1:
            raise ValueError(f"count must be an int >= 1, got {count!r}")
        nic = self._own(interface_id)
        self._check_nic_takes_pods("assign_ips", nic)
        with self._lock:
            pending = self._unconfirmed.pop(nic, [])
            names = pending[:count]
            if pending[count:]:  # kept for a later add; a reconcile adopts them meanwhile if they landed
                self._unconfirmed[nic] = pending[count:]
        names += [new_name() for _ in range(count - len(names))]
        try:
            after = self._submit(_Change(nic=nic, add=tuple(names)))
        except BaseException:
            with self._lock:  # the outcome is unknown: the next add on this NIC reuses these names
                self._unconfirmed.setdefault(nic, [])[:0] = names
            raise
        by_name = {c.get("name"): _address_of(c) for c in _configs(after[nic])}
        return [ip for ip in (by_name.get(n) for n in names) if ip]

    def assign_prefixes(self, interface_id: InterfaceId, count: int) -> list[str]:
        raise LimitExceeded("assign_prefixes", "Azure NICs take secondary ipConfigurations, not /28 prefixes")

    def release_ips(self, interface_id: InterfaceId, ips: list[str]) -> None:
        nic = self._own(interface_id)
        if ips:
            self._submit(_Change(nic=nic, remove=frozenset(ips)))

    def release_prefixes(self, interface_id: InterfaceId, prefixes: list[str]) -> None:
        if prefixes:
            raise PermanentCloudError("release_prefixes", "Azure NICs hold no prefixes")

    # --- the write queue ------------------------------------------------------------------------

    def _target(self, nic: str) -> str:
        """The resource a change to ``nic`` is written to: the NIC, or the scale-set instance."""
        return "vmss-instance" if self._node.uniform_scale_set else nic

    def _submit(self, change: _Change) -> dict[str, dict[str, Any]]:
        target = self._target(change.nic)
        with self._lock:
            queue = self._queues.setdefault(target, _Queue())
            queue.pending.append(change)
            lead = not queue.writing
            if lead:
                queue.writing = True
        if lead:
            self._lead(target, queue)
        change.done.wait()
        if change.error is not None:
            raise change.error
        assert change.result is not None
        return change.result

    def _lead(self, target: str, queue: _Queue) -> None:
        """Write for every change queued, batch after batch, until the queue is empty."""
        while True:
            with self._lock:
                batch, queue.pending = queue.pending, []
                if not batch:
                    queue.writing = False
                    return
            try:
                result = self._write(batch)
            except BaseException as exc:
                for change in batch:
                    change.error = exc
            else:
                for change in batch:
                    change.result = result
            finally:
                for change in batch:
                    change.done.set()
            if len(batch) > 1:
                _log.info("azure_writes_coalesced", changes=len(batch), target=target)

    def _write(self, batch: list[_Change]) -> dict[str, dict[str, Any]]:
        """GET, apply ``batch``, PUT with If-Match; on 412 read again and redo, a few times."""
        for attempt in range(1, self._etag_retries + 1):
            try:
                if self._node.uniform_scale_set:
                    return self._write_vmss(batch)
                (nic,) = {c.nic for c in batch}
                return {nic: self._write_nic(nic, batch)}
            except EtagMismatch:
                if attempt == self._etag_retries:
                    raise
                _log.info("azure_etag_mismatch_retry", attempt=attempt)
        raise AssertionError("unreachable")

    def _write_nic(self, nic: str, batch: list[_Change]) -> dict[str, Any]:
        op = _operation(batch)
        current = self._get_nic(op, nic)
        body = copy.deepcopy(current)
        configs = _configs(body)
        primary = _primary_config(body)
        subnet = {"id": _subnet_id(primary)}
        # Security rules that name the primary's application security groups cover pods too (as Cilium).
        asgs = (primary.get("properties") or {}).get("applicationSecurityGroups")
        changed = self._apply(op, nic, configs, batch, lambda name: _nic_ipconfig(name, subnet, asgs))
        if not changed:
            return current
        self._check_vm_total(op, {nic: len(configs)})
        with _translated(op, f"{NIC_WRITE} and {SUBNET_JOIN}"):
            return self._arm.put_nic(body, str(current.get("etag") or "*"))

    def _write_vmss(self, batch: list[_Change]) -> dict[str, dict[str, Any]]:
        node, op = self._node, _operation(batch)
        with _translated(op, VMSS_VM_READ):
            vm = self._arm.get_vmss_vm(node.resource_group, node.scale_set, node.instance_id)
        nics = self._read_nics()
        body = copy.deepcopy(vm)
        profile = _props(body).get("networkProfileConfiguration") or {}
        by_name = {
            str(c.get("name", "")).lower(): c for c in profile.get("networkInterfaceConfigurations") or []
        }
        changed, totals = False, {}
        for nic in {c.nic for c in batch}:
            current = nics[nic]
            conf = by_name.get(str(current.get("name", "")).lower())
            if conf is None:
                raise PermanentCloudError(
                    op, f"the scale-set model has no NIC configuration {current.get('name')!r}"
                )
            configs = conf.setdefault("properties", {}).setdefault("ipConfigurations", [])
            # Remove by name: the model has no addresses; the NIC maps our addresses to names.
            address_names = {_address_of(c): c.get("name") for c in _configs(current) if _ours(c)}
            mine = [c for c in batch if c.nic == nic]
            remove = {address_names[a] for c in mine for a in c.remove if a in address_names}
            present = {str(c.get("name")) for c in configs}
            add = [n for c in mine for n in c.add if n not in present]
            if remove or add:
                subnet_id = _subnet_id(_primary_config(current))
                configs[:] = [c for c in configs if c.get("name") not in remove]
                configs.extend(_vmss_ipconfig(n, subnet_id) for n in add)
                self._check_nic_slots(op, nic, len(configs))
                totals[nic] = len(configs)
                changed = True
        if changed:
            self._check_vm_total(op, totals)
            with _translated(op, VMSS_VM_WRITE):
                self._arm.put_vmss_vm(
                    node.resource_group, node.scale_set, node.instance_id, body, str(vm.get("etag") or "*")
                )
            nics = self._read_nics()
        return nics

    def _apply(
        self,
        op: str,
        nic: str,
        configs: list[dict[str, Any]],
        batch: list[_Change],
        make: Callable[[str], dict[str, Any]],
    ) -> bool:
        remove = set().union(*(c.remove for c in batch))
        present = {str(c.get("name")) for c in configs}
        add = [n for c in batch for n in c.add if n not in present]
        before = len(configs)
        configs[:] = [c for c in configs if not (_ours(c) and _address_of(c) in remove)]
        removed = before - len(configs)
        configs.extend(make(n) for n in add)
        self._check_nic_slots(op, nic, len(configs))
        return bool(add or removed)

    def _check_nic_slots(self, op: str, nic: str, count: int) -> None:
        if count > MAX_IPCONFIGS_PER_NIC:
            raise LimitExceeded(
                op,
                f"{nic.rsplit('/', 1)[-1]} would have {count} ipConfigurations"
                f" (Azure allows {MAX_IPCONFIGS_PER_NIC})",
            )

    def _check_vm_total(self, op: str, changed: dict[str, int]) -> None:
        """256 private IPs per VM across its NICs (the counts of the other NICs from the last read)."""
        if len(self._nic_ids) == 1:
            total = sum(changed.values())
        else:
            nics = self._read_nics()
            total = sum(changed.get(k, len(_configs(n))) for k, n in nics.items())
        if total > MAX_IPS_PER_VM:
            raise LimitExceeded(op, f"the VM would hold {total} private IPs (Azure allows {MAX_IPS_PER_VM})")

    # --- reads ----------------------------------------------------------------------------------

    def _own(self, interface_id: str) -> str:
        nic = _key(interface_id)
        if nic not in {_key(i) for i in self._nic_ids}:
            raise InterfaceNotFound("azure", f"{interface_id} is not a NIC of this node")
        return nic

    def _get_nic(self, op: str, nic: str) -> dict[str, Any]:
        with _translated(op, NIC_READ):
            return _checked_nic(self._arm.get_nic(nic))

    def _read_nics(self) -> dict[str, dict[str, Any]]:
        node = self._node
        if node.uniform_scale_set:
            with _translated("list_interfaces", VMSS_NIC_READ):
                nics = self._arm.list_vmss_nics(node.resource_group, node.scale_set, node.instance_id)
            found = {_key(str(n.get("id"))): _checked_nic(n) for n in nics}
        else:
            found = {_key(i): self._get_nic("list_interfaces", _key(i)) for i in self._nic_ids}
        missing = [i for i in self._nic_ids if _key(i) not in found]
        if missing:
            raise InterfaceNotFound("list_interfaces", f"NIC {missing[0]} is gone")
        return found

    def _subnet_cidr(self, subnet_id: str) -> str:
        key = _key(subnet_id)
        if key not in self._subnet_cidrs:
            with _translated("list_interfaces", SUBNET_READ):
                subnet = self._arm.get_subnet(subnet_id)
            props = _props(subnet)
            prefix = props.get("addressPrefix") or (props.get("addressPrefixes") or [None])[0]
            try:
                self._subnet_cidrs[key] = str(ipaddress.IPv4Network(str(prefix), strict=True))
            except ValueError:
                raise PermanentCloudError(
                    "list_interfaces", f"subnet {subnet_id} has no IPv4 prefix: {prefix!r}"
                ) from None
        return self._subnet_cidrs[key]

    def _view(self, nic: dict[str, Any], index: int) -> InterfaceView:
        primary_config = _primary_config(nic)
        primary_ip = _address_of(primary_config)
        if not primary_ip:
            raise PermanentCloudError("list_interfaces", f"NIC {nic.get('name')} has no primary address")
        ours = sorted(
            (ip for c in _configs(nic) if _ours(c) and (ip := _address_of(c))),
            key=lambda a: int(ipaddress.IPv4Address(a)),
        )
        mac = str(_props(nic).get("macAddress") or "").replace("-", ":").lower()
        subnet_id = _subnet_id(primary_config)
        with self._lock:
            self._nic_subnets[_key(str(nic["id"]))] = subnet_id
        return InterfaceView(
            id=InterfaceId(str(nic["id"])),
            device_index=index,
            primary=index == 0,
            subnet_id=subnet_id,
            subnet_cidr=self._subnet_cidr(subnet_id),
            primary_ip=primary_ip,
            ips=tuple(ours),
            mac=mac,
        )


# --- ARM JSON helpers ----------------------------------------------------------------------------


def _operation(batch: list[_Change]) -> str:
    return "assign_ips" if any(c.add for c in batch) else "release_ips"


def _props(resource: dict[str, Any]) -> dict[str, Any]:
    props = resource.get("properties")
    return props if isinstance(props, dict) else {}


def _configs(nic: dict[str, Any]) -> list[dict[str, Any]]:
    props = nic.setdefault("properties", {})
    configs = props.get("ipConfigurations")
    if not isinstance(configs, list):
        raise PermanentCloudError("azure", f"NIC {nic.get('name')} has no ipConfigurations list")
    return configs


def _checked_nic(nic: dict[str, Any]) -> dict[str, Any]:
    if not isinstance(nic.get("id"), str) or not isinstance(nic.get("name"), str):
        raise PermanentCloudError("azure", "ARM answered a NIC without id or name")
    ResourceId.parse(nic["id"])
    for c in _configs(nic):
        if not isinstance(c, dict) or not isinstance(c.get("name"), str):
            raise PermanentCloudError("azure", f"NIC {nic['name']} has an ipConfiguration without a name")
    return nic


def _primary_config(nic: dict[str, Any]) -> dict[str, Any]:
    configs = _configs(nic)
    for c in configs:
        if (c.get("properties") or {}).get("primary"):
            return c
    if not configs:
        raise PermanentCloudError("azure", f"NIC {nic.get('name')} has no ipConfiguration")
    return configs[0]


def _subnet_id(config: dict[str, Any]) -> str:
    subnet = (config.get("properties") or {}).get("subnet") or {}
    value = subnet.get("id") if isinstance(subnet, dict) else None
    if not isinstance(value, str) or "/subnets/" not in value.lower():
        raise PermanentCloudError("azure", f"ipConfiguration {config.get('name')} has no subnet id")
    return value


def _address_of(config: dict[str, Any]) -> str:
    """The ipConfiguration's IPv4 address once ARM has allocated it, else ""."""
    props = config.get("properties") or {}
    value = props.get("privateIPAddress")
    if not isinstance(value, str) or not value:
        return ""
    if str(props.get("privateIPAddressVersion") or "IPv4") != "IPv4":
        return ""
    try:
        return str(ipaddress.IPv4Address(value))
    except ValueError:
        raise PermanentCloudError(
            "azure", f"ipConfiguration {config.get('name')} has a bad address {value[:50]!r}"
        ) from None


def _ours(config: dict[str, Any]) -> bool:
    props = config.get("properties") or {}
    return str(config.get("name", "")).startswith(NAME_PREFIX) and not props.get("primary", False)


def _nic_ipconfig(name: str, subnet: dict[str, Any], asgs: Any = None) -> dict[str, Any]:
    props: dict[str, Any] = {
        "privateIPAllocationMethod": "Dynamic",
        "privateIPAddressVersion": "IPv4",
        "primary": False,
        "subnet": dict(subnet),
    }
    if isinstance(asgs, list) and asgs:
        props["applicationSecurityGroups"] = [
            {"id": a["id"]} for a in asgs if isinstance(a, dict) and "id" in a
        ]
    return {"name": name, "properties": props}


def _vmss_ipconfig(name: str, subnet_id: str) -> dict[str, Any]:
    return {
        "name": name,
        "properties": {"primary": False, "privateIPAddressVersion": "IPv4", "subnet": {"id": subnet_id}},
    }


if TYPE_CHECKING:
    _conforms: type[CloudProvider] = AzureProvider
    _places: type[PlacementAware] = AzureProvider

__all__ = ["NAME_PREFIX", "AzureProvider", "new_name"]
