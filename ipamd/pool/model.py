"""Pool domain model: plain values shared by the datastore, the policy, the checkpoint and providers.

Nothing here does I/O or imports a cloud SDK. Time is always a wall-clock epoch float passed in by
the caller (an injected clock), because cool-down deadlines must survive a restart.

Words: an *interface* is an ENI (AWS) or a NIC (Azure). A *secondary IP* is a pod-assignable address
held by an interface; a *prefix* is a /28 delegated to an interface whose 16 addresses are all
pod-assignable. An interface's own primary address is never pod-assignable and never counted.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import NewType

from ipamd.pool.maxpods import max_pods

ContainerID = NewType("ContainerID", str)
IfName = NewType("IfName", str)
InterfaceId = NewType("InterfaceId", str)

PREFIX_SIZE = 16  # addresses in a delegated /28


@dataclass(frozen=True, slots=True, order=True)
class AttachmentKey:
    """What a CNI attachment is keyed by: (network name, container ID, ifname)."""

    network: str
    container_id: ContainerID
    ifname: IfName


@dataclass(frozen=True, slots=True)
class PodRef:
    namespace: str = ""
    name: str = ""
    uid: str = ""


@dataclass(frozen=True, slots=True)
class Assignment:
    """One IP handed to one attachment."""

    key: AttachmentKey
    ip: str
    interface_id: InterfaceId
    pod: PodRef
    assigned_at: float
    netns: str = ""


@dataclass(frozen=True, slots=True)
class InstanceLimits:
    """What the instance type allows. ``ipv4_per_interface`` counts the interface's primary address."""

    instance_type: str
    max_interfaces: int
    ipv4_per_interface: int
    prefix_delegation: bool = False
    # False where interfaces are part of the machine (Azure NICs): the pool never detaches one.
    detachable_interfaces: bool = True
    max_pods: int | None = None  # the platform's own pod limit, when the formula does not apply

    @property
    def secondary_per_interface(self) -> int:
        """Secondary IP (or prefix) slots per interface: every IPv4 slot but the primary."""
        return self.ipv4_per_interface - 1

    @property
    def default_max_pods(self) -> int:
        """``max_pods`` when the platform sets one, else aws-vpc-cni's: ENIs x (IPv4 per ENI - 1) + 2
        (secondary IPs, pods on every interface; ``ipamd.pool.maxpods`` has the other modes)."""
        return max_pods(self, prefix_delegation=False, custom_networking=False)


@dataclass(frozen=True, slots=True)
class InterfaceView:
    """An interface as the cloud reports it. ``ips`` are secondary IPs outside any prefix."""

    id: InterfaceId
    device_index: int
    primary: bool
    subnet_id: str
    subnet_cidr: str
    primary_ip: str
    ips: tuple[str, ...] = ()
    prefixes: tuple[str, ...] = ()
    mac: str = ""

    def with_addresses(self, ips: tuple[str, ...], prefixes: tuple[str, ...]) -> InterfaceView:
        return dataclasses.replace(self, ips=ips, prefixes=prefixes)


@dataclass(frozen=True, slots=True)
class WarmPoolTargets:
    """The warm-pool knobs, with aws-vpc-cni's names and meaning (docs/configuration.md).

    ``max_eni`` and ``max_pods`` are None when unset. ``release_delay`` is the hysteresis: the pool
    shrinks only when it has neither grown nor shrunk for that long.

    ``primary_interface_pods`` False (custom networking, a pod subnet other than the primary NIC's):
    new pods never get an address of the primary interface, the policy never adds to or releases
    from it, growth goes to secondary interfaces, and the default max pods leaves the primary out.
    """

    warm_eni: int = 1
    warm_ip: int = 0
    minimum_ip: int = 0
    warm_prefix: int = 0
    prefix_delegation: bool = False
    max_eni: int | None = None
    max_pods: int | None = None
    cooldown: float = 30.0
    release_delay: float = 30.0
    ip_batch: int = 1  # warm-IP mode without prefixes: grow and shrink in multiples of this
    primary_interface_pods: bool = True  # False: pods only on secondary interfaces

    @property
    def warm_ip_mode(self) -> bool:
        """WARM_IP_TARGET or MINIMUM_IP_TARGET set: they replace WARM_ENI/WARM_PREFIX."""
        return self.warm_ip > 0 or self.minimum_ip > 0


@dataclass(frozen=True, slots=True)
class InterfaceUsage:
    """What the policy sees of one interface (counts are of pod-assignable addresses)."""

    id: InterfaceId
    device_index: int
    primary: bool
    ip_slots: int  # secondary IPs held outside prefixes
    prefix_slots: int  # prefixes held
    assigned: int
    cooling: int
    free: int  # assignable now: not assigned, not cooling, not quarantined, not releasing
    quarantined: int
    releasing: int
    releasable_ips: tuple[str, ...]  # free secondary IPs outside prefixes
    releasable_prefixes: tuple[str, ...]  # prefixes whose 16 addresses are all free
    busy: bool = False  # a cloud operation on this interface is in flight

    @property
    def total(self) -> int:
        return self.assigned + self.cooling + self.free + self.quarantined + self.releasing

    @property
    def used_slots(self) -> int:
        return self.ip_slots + self.prefix_slots


@dataclass(frozen=True, slots=True)
class PoolView:
    """A read-only summary of the datastore for the policy."""

    interfaces: tuple[InterfaceUsage, ...]
    last_increase_at: float | None = None
    last_decrease_at: float | None = None
    growth_paused_until: float | None = None  # set after SubnetFull/LimitExceeded: do not grow before
    waiting: int = 0  # ADDs waiting for an address now (pods the pool already owes)

    @property
    def total(self) -> int:
        return sum(i.total for i in self.interfaces)

    @property
    def assigned(self) -> int:
        return sum(i.assigned for i in self.interfaces)

    @property
    def available(self) -> int:
        """Free now. Cooling, quarantined and releasing addresses do not count (docs/design.md)."""
        return sum(i.free for i in self.interfaces)

    @property
    def cooling(self) -> int:
        return sum(i.cooling for i in self.interfaces)


@dataclass(frozen=True, slots=True)
class PoolStats:
    total: int
    assigned: int
    available: int
    cooling: int
    quarantined: int
    interfaces: int


@dataclass(frozen=True, slots=True)
class PoolSnapshot:
    """What the checkpoint keeps: every assignment, every cool-down deadline, every quarantined IP.

    Equality is order-insensitive by construction: the datastore emits sorted tuples.
    """

    assignments: tuple[Assignment, ...] = ()
    cooling: tuple[tuple[str, float], ...] = ()  # (ip, epoch deadline)
    quarantined: tuple[str, ...] = ()


# --- actions the policy returns and the manager carries out ------------------------------------


@dataclass(frozen=True, slots=True)
class AssignIps:
    interface_id: InterfaceId
    count: int


@dataclass(frozen=True, slots=True)
class AssignPrefixes:
    interface_id: InterfaceId
    count: int


@dataclass(frozen=True, slots=True)
class AttachInterface:
    ip_count: int = 0
    prefix_count: int = 0


@dataclass(frozen=True, slots=True)
class ReleaseIps:
    interface_id: InterfaceId
    ips: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class ReleasePrefixes:
    interface_id: InterfaceId
    prefixes: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class DetachInterface:
    interface_id: InterfaceId


Action = AssignIps | AssignPrefixes | AttachInterface | ReleaseIps | ReleasePrefixes | DetachInterface


def canonical_number(part: str, top: int) -> int | None:
    """``part`` as a number when written as one (1-3 ASCII digits, no leading zero), up to ``top``."""
    if not 0 < len(part) <= 3 or not (part.isascii() and part.isdigit()):
        return None
    if part[0] == "0" and part != "0":
        return None
    value = int(part)
    return value if value <= top else None


def canonical_ipv4(text: str) -> int | None:
    """The value of ``text`` when it is an IPv4 address in canonical dotted-quad form (what
    ``str(ipaddress.IPv4Address(...))`` writes), else None (the caller asks ``ipaddress``, which also
    reads the forms this refuses, or says why not). Hot paths (the datastore, the policy's release
    order) read addresses by the hundred thousand in the simulator; ``ipaddress`` costs ~5 us each."""
    parts = text.split(".")
    if len(parts) != 4:
        return None
    value = 0
    for part in parts:
        octet = canonical_number(part, 255)
        if octet is None:
            return None
        value = (value << 8) | octet
    return value
