"""aws-vpc-cni's state on a node, read so that cloud-cni takes the node over without a drain.

Public surface (docs/adoption-aws-vpc-cni.md says when the daemon calls it)::

    load(path) -> AwsCheckpoint              read and validate /var/run/aws-node/ipam.json
    parse(data) -> AwsCheckpoint             validate bytes; AwsCheckpointError names the field
    adopt(checkpoint, interfaces, *, network, cool_until, host_links) -> Adoption
                                             one Assignment per live pod, for Datastore.restore
    host_side(allocation, interfaces, *, veth_prefix) -> HostSide
                                             the host veth, route and rules aws-vpc-cni made for it
    legacy_veth_name(namespace, name, *, prefix, index) -> str

Pure: no I/O but ``load``'s one read. Errors are ``AwsCheckpointError`` (a ``CheckpointError``), whose
message names the field path and what is allowed there, e.g.
``allocations[3].ipv4: '10.0.0.x' is not an IPv4 address in dotted-quad form ...``.

What this relies on, from aws/amazon-vpc-cni-k8s (reference/aws-vpc-cni.md, lines 32 and 38, read at
v1.23.1; the paths below are in that repository):

- pkg/ipamd/datastore/data_store.go: ``CheckpointData{version, allocations}``, version
  "vpc-cni-ipam/1" (ReadBackingStore refuses any other); each ``CheckpointEntry`` is the IPAMKey
  (networkName, containerID, ifName) inlined, ``ipv4``/``ipv6`` (omitempty, one of them),
  ``allocationTimestamp`` (``AssignedTime.UnixNano()``) and ``metadata`` (k8sPodNamespace,
  k8sPodName, interfacesCount, all omitempty). Rows of older releases (v1.7's entries held the key
  and ipv4 only) have no timestamp and no metadata, under the same version; rows backfilled from the
  CRI in v1.7 carry the network "_migrated-from-cri" and the ifName "unknown" (their DEL looks them
  up by container ID alone).
  Only assigned addresses are written; a nil list is written as ``null``.
- pkg/networkutils/names.go ``GeneratePodHostVethName``: prefix (AWS_VPC_K8S_CNI_VETHPREFIX, default
  "eni") + the first 11 hex digits of sha1("<namespace>.<name>"); for a pod's interface index > 0 the
  name is "<name>.<index>". names_test.go has the examples the tests here repeat.
- cmd/routed-eni-cni-plugin/driver/driver.go ``setupIPBasedContainerRouteRules``: route
  ``<ip>/32 dev <host veth> scope link`` in main; rule ``to <ip> lookup main`` at 512
  (ToContainerRulePriority); when the route table is > 1, rule ``from <ip> lookup <table>`` at 1536
  (FromPodRulePriority). pkg/ipamd/rpc_handler.go: table = networkCard * maxENI + deviceNumber + 1,
  so on network card 0 (the only one this checkpoint covers) deviceNumber + 1, and main for the
  primary ENI (device 0). These are cloud-cni's own priorities and tables (ipamd.datapath.linux).
"""

from __future__ import annotations

import hashlib
import ipaddress
import re
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

from ipamd import strictjson
from ipamd.errors import CheckpointError
from ipamd.pool.model import (
    PREFIX_SIZE,
    Assignment,
    AttachmentKey,
    ContainerID,
    IfName,
    InterfaceId,
    InterfaceView,
    PodRef,
    PoolSnapshot,
)

__all__ = [
    "ANY_TABLE",
    "DEFAULT_PATH",
    "DEFAULT_VETH_PREFIX",
    "MAIN_TABLE",
    "PRIO_FROM_POD",
    "PRIO_TO_POD",
    "UNKNOWN_INTERFACE",
    "VERSION",
    "AdoptedPod",
    "Adoption",
    "AwsAllocation",
    "AwsCheckpoint",
    "AwsCheckpointError",
    "AwsCheckpointNotFound",
    "HostSide",
    "Route",
    "Rule",
    "adopt",
    "host_side",
    "legacy_veth_name",
    "load",
    "parse",
]

VERSION = "vpc-cni-ipam/1"
DEFAULT_PATH = Path("/var/run/aws-node/ipam.json")
DEFAULT_VETH_PREFIX = "eni"
MAX_SIZE = 16 << 20  # bytes; a full node's checkpoint is well under 1 MiB

PRIO_TO_POD = 512
PRIO_FROM_POD = 1536
MAIN_TABLE = 254
ANY_TABLE = 0  # a rule's table when unknown: deleting by priority and source with table 0 matches any

# The interface of an adopted address no listed interface holds: the datastore keeps such an
# assignment as an orphan, and cloud-cni's checkpoint needs a non-empty interface there.
UNKNOWN_INTERFACE = InterfaceId("unknown")

_BACKFILL_NETWORK = "_migrated-from-cri"
_BACKFILL_IFNAME = "unknown"
_POD_IFNAME = IfName("eth0")  # what kubelet's runtimes (containerd, CRI-O) pass as CNI_IFNAME

_TOP_FIELDS = ("version", "allocations")
_ALLOCATION_FIELDS = (
    "networkName",
    "containerID",
    "ifName",
    "ipv4",
    "ipv6",
    "allocationTimestamp",
    "metadata",
)
_METADATA_FIELDS = ("k8sPodNamespace", "k8sPodName", "interfacesCount")

# The rules ipamd/rpc/validate.py applies to the same values in a live CNI call: an adopted key must
# be one a DEL can carry (tests/unit/test_migrate_awsvpc.py checks the two agree).
_ID = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9_.\-]*")
_MAX_ID = 1024
_NAMESPACE = re.compile(r"[a-z0-9](?:[-a-z0-9]{0,61}[a-z0-9])?")  # DNS-1123 label
_LABEL = r"[a-z0-9](?:[-a-z0-9]*[a-z0-9])?"
_POD_NAME = re.compile(rf"{_LABEL}(?:\.{_LABEL})*")  # DNS-1123 subdomain, <= 253
_VETH_PREFIX = re.compile(r"[A-Za-z0-9]{1,4}")  # + 11 hex: a link name of at most 15 characters
_INT64 = (-(1 << 63), (1 << 63) - 1)
_MAX_INTERFACES = 64

_ID_ALLOWED = "a string matching [a-zA-Z0-9][a-zA-Z0-9_.-]* of at most 1024 characters"
_IFNAME_ALLOWED = "an interface name: 1 to 15 characters, no '/', ':', whitespace, not '.' or '..'"
_IPV4_ALLOWED = (
    "an IPv4 address in dotted-quad form, e.g. '10.0.1.23' "
    "(a pod's VPC address: not unspecified, loopback, link-local, multicast or reserved)"
)
_TIME_ALLOWED = "an integer: nanoseconds since the epoch, as Go's time.UnixNano() writes it (int64)"


class AwsCheckpointError(CheckpointError):
    """aws-vpc-cni's checkpoint cannot be adopted; the message names the field and what is allowed."""


class AwsCheckpointNotFound(AwsCheckpointError):
    """No checkpoint at the path: nothing to adopt (/var/run is a tmpfs: none survives a reboot)."""


@dataclass(frozen=True, slots=True)
class AwsAllocation:
    """One validated row of aws-vpc-cni's checkpoint: one pod's address on network card 0."""

    index: int  # position in ``allocations``, for messages
    network: str  # networkName as aws-vpc-cni's conflist named it (normally "aws-cni")
    container_id: str
    ifname: str
    ipv4: str  # canonical dotted quad
    allocated_at: float  # seconds since the epoch; 0.0 when the row has no timestamp
    pod_namespace: str = ""  # "" with pod_name "": the row does not name its pod
    pod_name: str = ""
    interfaces_count: int = 1  # > 1: a multi-NIC pod, whose other interfaces are on other cards

    @property
    def backfilled(self) -> bool:
        """Written by aws-vpc-cni v1.7's migration from the CRI, with placeholder network and ifName."""
        return self.network == _BACKFILL_NETWORK and self.ifname == _BACKFILL_IFNAME

    @property
    def pod(self) -> str:
        return f"{self.pod_namespace}/{self.pod_name}" if self.pod_name else f"container {self.container_id}"


@dataclass(frozen=True, slots=True)
class AwsCheckpoint:
    allocations: tuple[AwsAllocation, ...] = ()


@dataclass(frozen=True, slots=True)
class AdoptedPod:
    assignment: Assignment  # as the datastore holds it after restore (keyed by cloud-cni's network)
    source: AwsAllocation
    held: bool  # an interface the cloud lists holds the address; False: restore makes an orphan


@dataclass(frozen=True, slots=True)
class Adoption:
    """What ``Datastore.restore`` takes (``snapshot``), each pod with its row, and what to report.

    Every allocation is in ``pods`` or in ``gone``, once. Each of ``pods`` is in ``snapshot`` once,
    unheld ones included: the datastore keeps those as orphans (reported by restore, found by DEL,
    their address never handed out), as it does for its own checkpoint. ``gone``: rows whose pod's
    host veth no longer exists (deleted while no daemon ran); not adopted. ``snapshot.cooling``: every
    other address the interfaces hold, when ``adopt`` was given ``cool_until``. ``notes``: one line
    per thing an operator should know.
    """

    snapshot: PoolSnapshot
    pods: tuple[AdoptedPod, ...]
    gone: tuple[AwsAllocation, ...] = ()
    notes: tuple[str, ...] = ()

    @property
    def held(self) -> tuple[AdoptedPod, ...]:
        return tuple(p for p in self.pods if p.held)

    @property
    def unheld(self) -> tuple[AdoptedPod, ...]:
        return tuple(p for p in self.pods if not p.held)


@dataclass(frozen=True, slots=True)
class Route:
    dst: str  # "<ip>/32"
    device: str  # the host veth; "" when the row does not name its pod
    table: int = MAIN_TABLE
    scope: str = "link"


@dataclass(frozen=True, slots=True)
class Rule:
    priority: int
    table: int  # MAIN_TABLE, an interface's table, or ANY_TABLE when unknown
    src: str = ""  # "<ip>/32" or ""
    dst: str = ""


@dataclass(frozen=True, slots=True)
class HostSide:
    """What aws-vpc-cni's plugin made in the node's netns for one pod (the pod's own netns is left
    as it is: address /32, 169.254.1.1 as gateway with a permanent neighbour on the host veth's MAC).

    ``rules`` lists every rule that may exist: with the interface unknown, rule 1536 is listed with
    ``ANY_TABLE``. ``other_veths``: host veths of a multi-NIC pod's other interfaces, whose
    addresses are in another network card's checkpoint and are not adopted.
    """

    ip: str
    host_veth: str  # "" when the row does not name its pod (an older aws-vpc-cni)
    route: Route
    rules: tuple[Rule, ...]
    interface_id: InterfaceId | None  # the interface holding the address; None: none listed does
    table: int | None  # rule 1536's table; None: none (primary interface) or unknown (no interface)
    other_veths: tuple[str, ...] = ()


# --- reading ------------------------------------------------------------------------------------


def load(path: Path = DEFAULT_PATH) -> AwsCheckpoint:
    """Read and validate the checkpoint at ``path``. AwsCheckpointNotFound when there is none;
    AwsCheckpointError, its message starting with the path, when it cannot be read or adopted."""
    try:
        with path.open("rb") as f:
            data = f.read(MAX_SIZE + 1)
    except FileNotFoundError:
        raise AwsCheckpointNotFound(
            f"{path}: no such file; aws-vpc-cni has not written a checkpoint there since the node booted"
        ) from None
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise AwsCheckpointError(
            f"{path}: cannot be read ({reason}); expected aws-vpc-cni's checkpoint, a readable file"
        ) from None
    if len(data) > MAX_SIZE:
        raise AwsCheckpointError(
            f"{path}: larger than {MAX_SIZE} bytes; expected aws-vpc-cni's checkpoint (well under 1 MiB)"
        )
    try:
        return parse(data)
    except AwsCheckpointError as exc:
        raise AwsCheckpointError(f"{path}: {exc}") from None


def parse(data: bytes) -> AwsCheckpoint:
    """Validate every field; AwsCheckpointError names the first bad one. The version decides the
    schema, so it is read first; then every allocation; then no address and no attachment twice."""
    top = _json(data)
    if not isinstance(top, strictjson.JsonObject):
        _reject("checkpoint", top, "a JSON object {version, allocations}")
    version = top.get("version", _MISSING)
    if version != VERSION:
        _reject("version", version, f"{VERSION!r}, the one version aws-vpc-cni writes and this daemon reads")
    strictjson.check_fields(AwsCheckpointError, top, "checkpoint", _TOP_FIELDS)
    raw = top.get("allocations", _MISSING)
    if raw is None:  # Go writes a nil slice as null
        raw = []
    if not isinstance(raw, list):
        _reject("allocations", raw, "a list of allocation objects (or null)")
    allocations = tuple(_allocation(value, i) for i, value in enumerate(raw))
    _check_unique(allocations)
    return AwsCheckpoint(allocations)


_MISSING = strictjson.MISSING


def _json(data: bytes) -> object:
    try:
        return strictjson.loads(data, expected="a JSON object {version, allocations}")
    except strictjson.StrictJsonError as exc:
        raise AwsCheckpointError(f"checkpoint: {exc}") from None


def _reject(path: str, value: object, allowed: str) -> NoReturn:
    strictjson.reject(AwsCheckpointError, path, value, allowed)


def _object(value: object, path: str, fields: tuple[str, ...]) -> strictjson.JsonObject:
    return strictjson.fields_object(AwsCheckpointError, value, path, fields)


def _identifier(value: object, path: str) -> str:
    if not isinstance(value, str) or len(value) > _MAX_ID or not _ID.fullmatch(value):
        _reject(path, value, _ID_ALLOWED)
    return value


def _ifname(value: object, path: str) -> str:
    if (
        not isinstance(value, str)
        or not 0 < len(value) <= 15
        or value in (".", "..")
        or any(c in "/:\0" or c.isspace() for c in value)
    ):
        _reject(path, value, _IFNAME_ALLOWED)
    return value


def _ipv4(value: object, path: str) -> str:
    if isinstance(value, str):
        try:
            address = ipaddress.IPv4Address(value)
        except ValueError:
            address = None
        if (
            address is not None
            and str(address) == value
            and not (
                address.is_unspecified
                or address.is_loopback
                or address.is_link_local
                or address.is_multicast
                or address.is_reserved
            )
        ):
            return value
    _reject(path, value, _IPV4_ALLOWED)


def _nanoseconds(value: object, path: str) -> float:
    if not isinstance(value, int) or isinstance(value, bool) or not _INT64[0] <= value <= _INT64[1]:
        _reject(path, value, _TIME_ALLOWED)
    return value / 1e9


def _k8s_name(value: object, path: str, pattern: re.Pattern[str], limit: int, what: str) -> str:
    if value is _MISSING:
        return ""
    if not isinstance(value, str) or (value and (len(value) > limit or not pattern.fullmatch(value))):
        _reject(path, value, what)
    return value


def _metadata(value: object, path: str) -> tuple[str, str, int]:
    doc = _object(value, path, _METADATA_FIELDS)
    namespace = _k8s_name(
        doc.get("k8sPodNamespace", _MISSING),
        f"{path}.k8sPodNamespace",
        _NAMESPACE,
        63,
        "a Kubernetes namespace (a DNS-1123 label: lowercase letters, digits, '-', at most 63)",
    )
    name = _k8s_name(
        doc.get("k8sPodName", _MISSING),
        f"{path}.k8sPodName",
        _POD_NAME,
        253,
        "a Kubernetes pod name (a DNS-1123 subdomain: lowercase letters, digits, '-', '.', at most 253)",
    )
    if bool(namespace) != bool(name):
        missing = "k8sPodName" if namespace else "k8sPodNamespace"
        raise AwsCheckpointError(
            f"{path}.{missing}: missing while {'k8sPodNamespace' if namespace else 'k8sPodName'} is set; "
            "expected both (the pod) or neither (a row of an older aws-vpc-cni)"
        )
    count = doc.get("interfacesCount", _MISSING)
    if count is _MISSING:
        return namespace, name, 1
    if not isinstance(count, int) or isinstance(count, bool) or not 1 <= count <= _MAX_INTERFACES:
        _reject(f"{path}.interfacesCount", count, f"an integer from 1 to {_MAX_INTERFACES}")
    return namespace, name, count


def _allocation(value: object, index: int) -> AwsAllocation:
    path = f"allocations[{index}]"
    doc = _object(value, path, _ALLOCATION_FIELDS)
    network = doc.get("networkName", _MISSING)
    if network != _BACKFILL_NETWORK:  # the one name aws-vpc-cni wrote that no CNI call can carry
        network = _identifier(network, f"{path}.networkName")
    container_id = _identifier(doc.get("containerID", _MISSING), f"{path}.containerID")
    ifname = _ifname(doc.get("ifName", _MISSING), f"{path}.ifName")
    ipv6 = doc.get("ipv6", _MISSING)
    if ipv6 is not _MISSING and ipv6 != "":
        if not isinstance(ipv6, str):
            _reject(f"{path}.ipv6", ipv6, "a string")
        raise AwsCheckpointError(
            f"{path}.ipv6: {ipv6[:60]!r}: an IPv6 pod; this daemon pools IPv4 addresses and adopts IPv4 "
            "pods only (drain an IPv6 node instead)"
        )
    ipv4 = _ipv4(doc.get("ipv4", _MISSING), f"{path}.ipv4")
    stamp = doc.get("allocationTimestamp", _MISSING)
    allocated_at = 0.0 if stamp is _MISSING else _nanoseconds(stamp, f"{path}.allocationTimestamp")
    metadata = doc.get("metadata", _MISSING)
    namespace, name, count = ("", "", 1) if metadata is _MISSING else _metadata(metadata, f"{path}.metadata")
    return AwsAllocation(
        index=index,
        network=str(network),
        container_id=container_id,
        ifname=ifname,
        ipv4=ipv4,
        allocated_at=allocated_at,
        pod_namespace=namespace,
        pod_name=name,
        interfaces_count=count,
    )


def _check_unique(allocations: Sequence[AwsAllocation]) -> None:
    """One row per address, one row per attachment key; the message names both rows."""
    by_ip: dict[str, int] = {}
    by_key: dict[tuple[str, str, str], int] = {}
    for row in allocations:
        first = by_ip.setdefault(row.ipv4, row.index)
        if first != row.index:
            raise AwsCheckpointError(
                f"allocations[{row.index}].ipv4: {row.ipv4!r} is already at allocations[{first}].ipv4; "
                "an address belongs to one pod"
            )
        first = by_key.setdefault((row.network, row.container_id, row.ifname), row.index)
        if first != row.index:
            raise AwsCheckpointError(
                f"allocations[{row.index}]: (networkName={row.network!r}, containerID={row.container_id!r}, "
                f"ifName={row.ifname!r}) is already at allocations[{first}]; an attachment holds one address"
            )


# --- adopting -----------------------------------------------------------------------------------


class _Holders:
    """Which listed interface holds an address as pod-assignable (a secondary IP or in a prefix)."""

    def __init__(self, interfaces: Iterable[InterfaceView]) -> None:
        self._ips: dict[int, InterfaceView] = {}
        self._prefixes: dict[int, InterfaceView] = {}
        for view in interfaces:
            for ip in view.ips:
                self._ips[int(ipaddress.IPv4Address(ip))] = view
            for prefix in view.prefixes:
                net = ipaddress.IPv4Network(prefix, strict=False)
                self._prefixes[int(net.network_address)] = view

    def find(self, ip: str) -> InterfaceView | None:
        value = int(ipaddress.IPv4Address(ip))
        return self._ips.get(value) or self._prefixes.get(value - value % PREFIX_SIZE)

    def addresses(self) -> list[int]:
        """Every pod-assignable address held, as integers."""
        found = list(self._ips)
        for base in self._prefixes:
            found.extend(range(base, base + PREFIX_SIZE))
        return found


def _check_network(network: str) -> None:
    if len(network) > _MAX_ID or not _ID.fullmatch(network):
        raise ValueError(f"network {network!r} is not a CNI network name ({_ID_ALLOWED})")


def _veth_gone(row: AwsAllocation, host_links: Collection[str] | None) -> bool:
    """aws-vpc-cni's own test at restart (normalizeCheckpointDataByPodVethExistence in
    pkg/ipamd/datastore/data_store.go): a row naming its pod whose veth suffix ends no link's name
    belongs to a pod deleted while ipamd was down. Rows naming no pod are kept, as there."""
    if host_links is None or not row.pod_name:
        return False
    suffix = _veth_suffix(row.pod_namespace, row.pod_name)
    return not any(link.endswith(suffix) for link in host_links)


def adopt(
    checkpoint: AwsCheckpoint,
    interfaces: Sequence[InterfaceView],
    *,
    network: str,
    cool_until: float | None = None,
    host_links: Collection[str] | None = None,
) -> Adoption:
    """Every allocation as cloud-cni's assignment, keyed as the runtime's DEL will key it.

    ``network`` is the "name" of cloud-cni's conflist: after the switch the runtime calls DEL and GC
    with it, whatever aws-vpc-cni's conflist was named, so each row's networkName is replaced by it.
    A row backfilled from the CRI (ifName "unknown") is keyed by ifName "eth0", the name the runtimes
    pass. ``interfaces``: what the cloud lists now (``Datastore.interfaces()`` after
    ``sync_interfaces``); an address none of them holds is adopted as an orphan and noted.
    ``cool_until``: every held address no adopted pod has cools until then (aws-vpc-cni keeps no
    cool-downs, so any of them may have been freed a moment ago). ``host_links``: the names of the
    node's links, to leave out the rows whose pod is gone (None: keep every row).
    AwsCheckpointError when two rows end up with one key (rows of two networks, same container).
    """
    _check_network(network)
    holders = _Holders(interfaces)
    pods: list[AdoptedPod] = []
    gone: list[AwsAllocation] = []
    notes: list[str] = []
    keys: dict[AttachmentKey, AwsAllocation] = {}
    for row in checkpoint.allocations:
        path = f"allocations[{row.index}]"
        ifname = _POD_IFNAME if row.backfilled else IfName(row.ifname)
        key = AttachmentKey(network, ContainerID(row.container_id), ifname)
        first = keys.setdefault(key, row)
        if first is not row:
            raise AwsCheckpointError(
                f"{path}: adopted as (network={network!r}, containerID={row.container_id!r}, "
                f"ifName={ifname!r}) like allocations[{first.index}] (networkName {first.network!r}); "
                "two rows cannot become one attachment"
            )
        if _veth_gone(row, host_links):
            gone.append(row)
            notes.append(
                f"{path}: {row.ipv4} ({row.pod}): the pod's host veth is gone (deleted while no daemon "
                "ran): not adopted, its address not assigned"
            )
            continue
        view = holders.find(row.ipv4)
        assignment = Assignment(
            key=key,
            ip=row.ipv4,
            interface_id=view.id if view is not None else UNKNOWN_INTERFACE,
            pod=PodRef(namespace=row.pod_namespace, name=row.pod_name),
            assigned_at=row.allocated_at,
        )
        pods.append(AdoptedPod(assignment=assignment, source=row, held=view is not None))
        if view is None:
            notes.append(
                f"{path}: {row.ipv4} ({row.pod}) is on no interface the cloud lists for this node: "
                "adopted as an orphaned assignment (its DEL finds it; no other pod gets the address)"
            )
        if row.backfilled:
            notes.append(
                f"{path}: a row aws-vpc-cni backfilled from the CRI (networkName {_BACKFILL_NETWORK!r}, "
                f"ifName {_BACKFILL_IFNAME!r}): adopted with ifName {_POD_IFNAME!r}"
            )
        if row.interfaces_count > 1:
            notes.append(
                f"{path}: {row.pod} has {row.interfaces_count} interfaces (multi-NIC); only this one, on "
                "network card 0, is adopted: the others stay as aws-vpc-cni left them"
            )
        if not row.pod_name:
            notes.append(
                f"{path}: {row.ipv4} names no pod (written by an older aws-vpc-cni): its host veth "
                "cannot be named, its route and rules are found by address"
            )
    cooling: tuple[tuple[str, float], ...] = ()
    if cool_until is not None:
        taken = {int(ipaddress.IPv4Address(p.assignment.ip)) for p in pods}
        cooling = tuple(
            (str(ipaddress.IPv4Address(value)), cool_until)
            for value in sorted(set(holders.addresses()) - taken)
        )
    snapshot = PoolSnapshot(
        assignments=tuple(sorted((p.assignment for p in pods), key=lambda a: a.key)),
        cooling=cooling,
    )
    return Adoption(snapshot=snapshot, pods=tuple(pods), gone=tuple(gone), notes=tuple(notes))


# --- the host side ------------------------------------------------------------------------------


def legacy_veth_name(namespace: str, name: str, *, prefix: str = DEFAULT_VETH_PREFIX, index: int = 0) -> str:
    """aws-vpc-cni's host veth name for a pod's interface ``index`` (GeneratePodHostVethName in
    aws/amazon-vpc-cni-k8s pkg/networkutils/names.go): prefix + sha1("<ns>.<name>")[:11], the
    name being "<name>.<index>" for index > 0."""
    if not _VETH_PREFIX.fullmatch(prefix):
        raise ValueError(f"veth prefix {prefix!r} is not 1 to 4 letters or digits")
    if index < 0:
        raise ValueError(f"interface index {index} is negative")
    return prefix + _veth_suffix(namespace, f"{name}.{index}" if index > 0 else name)


def _veth_suffix(namespace: str, name: str) -> str:
    """GeneratePodHostVethNameSuffix (pkg/networkutils/names.go): sha1("<ns>.<name>"), 11 hex digits."""
    return hashlib.sha1(f"{namespace}.{name}".encode(), usedforsecurity=False).hexdigest()[:11]


def _table(view: InterfaceView) -> int | None:
    """aws-vpc-cni's table on network card 0: device number + 1; 1 (the primary ENI) means main."""
    table = view.device_index + 1
    return table if table > 1 else None


def host_side(
    allocation: AwsAllocation,
    interfaces: Sequence[InterfaceView],
    *,
    veth_prefix: str = DEFAULT_VETH_PREFIX,
) -> HostSide:
    """The host-side objects aws-vpc-cni's plugin made for ``allocation``, so that the datapath can
    take them over or replace them and a DEL can remove them. ``veth_prefix``: aws-node's
    AWS_VPC_K8S_CNI_VETHPREFIX."""
    ip = allocation.ipv4
    named = bool(allocation.pod_namespace and allocation.pod_name)
    veth = (
        legacy_veth_name(allocation.pod_namespace, allocation.pod_name, prefix=veth_prefix) if named else ""
    )
    dst = f"{ip}/32"
    view = _Holders(interfaces).find(ip)
    rules = [Rule(PRIO_TO_POD, MAIN_TABLE, dst=dst)]
    table = None if view is None else _table(view)
    if view is None:  # on whichever interface held it then: rule 1536 may exist, in a table unknown now
        rules.append(Rule(PRIO_FROM_POD, ANY_TABLE, src=dst))
    elif table is not None:
        rules.append(Rule(PRIO_FROM_POD, table, src=dst))
    others = (
        tuple(
            legacy_veth_name(allocation.pod_namespace, allocation.pod_name, prefix=veth_prefix, index=i)
            for i in range(1, allocation.interfaces_count)
        )
        if named
        else ()
    )
    return HostSide(
        ip=ip,
        host_veth=veth,
        route=Route(dst=dst, device=veth),
        rules=tuple(rules),
        interface_id=None if view is None else view.id,
        table=table,
        other_veths=others,
    )
