"""SimCloud: an in-process cloud for one node, the ``sim`` provider of demos, simulations and tests.

It is a real implementation of ``CloudProvider``, not a stub, and it behaves like the clouds in the
ways that matter to a warm pool:

* instance limits: at most ``max_interfaces`` interfaces, and ``ipv4_per_interface - 1`` secondary
  slots (secondary IPs and /28 prefixes together) per interface; prefixes only on types with prefix
  delegation. Breaking a limit raises ``LimitExceeded``;
* one subnet shared by every interface, with AWS's reserved addresses (network, .1 router, .2 DNS,
  .3 reserved, broadcast). Addresses are handed out lowest first, prefixes on aligned /28 blocks that
  hold no other address; a request that cannot be met in full raises ``SubnetFull`` and changes
  nothing. No address ever has two holders;
* API latency (jittered +-25%, Describe-type calls a quarter of it) slept outside the state lock so
  that concurrent calls overlap, and optional throttling by a token bucket that answers
  ``ThrottledError("RequestLimitExceeded", retry_after=...)`` like EC2;
* fault injection (``inject``) and per-operation call counts (``calls``) for tests;
* persistence: with ``state_path`` the whole cloud is written atomically after every change and read
  back at start, so a restarted daemon finds the same interfaces and addresses, as it would on AWS.

Ids, MACs and addresses depend only on the seed and the sequence of calls. Ids come from a hash
of (seed, counter) rather than a stateful generator, so the state file only has to keep the counter.
"""

from __future__ import annotations

import collections
import hashlib
import ipaddress
import json
import math
import os
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ipamd import durable
from ipamd.cloud.limiter import TokenBucket
from ipamd.errors import (
    CloudError,
    InterfaceNotFound,
    LimitExceeded,
    PermanentCloudError,
    SubnetFull,
    ThrottledError,
)
from ipamd.pool.model import PREFIX_SIZE, InstanceLimits, InterfaceId, InterfaceView

if TYPE_CHECKING:
    from ipamd.cloud.base import CloudProvider

INSTANCE_TYPES: dict[str, InstanceLimits] = {
    limits.instance_type: limits
    for limits in (
        # AWS figures from DescribeInstanceTypes (NetworkInfo); every Nitro type delegates prefixes.
        InstanceLimits("t3.small", max_interfaces=3, ipv4_per_interface=4, prefix_delegation=True),
        InstanceLimits("t3.medium", max_interfaces=3, ipv4_per_interface=6, prefix_delegation=True),
        InstanceLimits("t2.medium", max_interfaces=3, ipv4_per_interface=6, prefix_delegation=False),
        InstanceLimits("m5.large", max_interfaces=3, ipv4_per_interface=10, prefix_delegation=True),
        InstanceLimits("m5.xlarge", max_interfaces=4, ipv4_per_interface=15, prefix_delegation=True),
        InstanceLimits("c5.18xlarge", max_interfaces=15, ipv4_per_interface=50, prefix_delegation=True),
        # Azure: one NIC holding up to 256 ipconfigs, the primary one included; no prefixes.
        InstanceLimits("azure-nic-256", max_interfaces=1, ipv4_per_interface=256, prefix_delegation=False),
    )
}

OPERATIONS = frozenset(
    {
        "instance_limits",
        "list_interfaces",
        "attach_interface",
        "detach_interface",
        "assign_ips",
        "assign_prefixes",
        "release_ips",
        "release_prefixes",
    }
)
_DESCRIBE_OPERATIONS = frozenset({"instance_limits", "list_interfaces"})

SUBNET_ID = "subnet-sim"
_STATE_FORMAT = "cloud-cni-sim-state"
_STATE_VERSION = 1
_RESERVED_LOW = 4  # .0 network, .1 router, .2 DNS, .3 reserved (and the last address: broadcast)


@dataclass(frozen=True, slots=True)
class _Interface:
    """One interface as the sim holds it: addresses are offsets into the subnet, prefixes /28 blocks."""

    id: str
    device_index: int
    primary: bool
    mac: str
    primary_ip: int
    ips: frozenset[int] = frozenset()
    prefixes: frozenset[int] = frozenset()

    @property
    def used_slots(self) -> int:
        return len(self.ips) + len(self.prefixes)


class _CorruptState(Exception):
    """Raised while reading a state file; turned into a ValueError that names the file."""


class SimCloud:
    """A simulated cloud holding one node; implements ``ipamd.cloud.base.CloudProvider``.

    ``latency`` is the seconds a mutating call takes (Describe-type calls a quarter of it), jittered
    +-25% by an rng seeded with ``seed`` and slept with ``sleep``. ``throttle_rate``/``throttle_burst``
    size the cloud's own token bucket (on ``clock``); None means no throttling. With ``state_path``
    the cloud lives in that file: when it exists it is loaded (and must have been written for the
    same ``instance_type`` and ``subnet_cidr``), and the seed stored in it keeps governing ids, so a
    restart continues the same id sequence whatever ``seed`` is passed. Bad arguments and bad files
    raise ValueError naming the parameter or the file.

    Methods are safe to call from several threads. Cloud-side errors are the ``CloudError`` tree,
    as from a real provider; a failed state-file write raises the OSError and changes nothing.
    """

    name: str = "sim"

    def __init__(
        self,
        *,
        instance_type: str = "m5.large",
        subnet_cidr: str = "10.0.0.0/22",
        vpc_cidr: str = "10.0.0.0/16",
        state_path: str | os.PathLike[str] | None = None,
        seed: int = 0,
        latency: float = 0.0,
        throttle_rate: float | None = None,
        throttle_burst: int = 100,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if instance_type not in INSTANCE_TYPES:
            raise ValueError(
                f"instance_type must be one of {', '.join(sorted(INSTANCE_TYPES))}, got {instance_type!r}"
            )
        try:
            if not isinstance(subnet_cidr, str):
                raise TypeError(subnet_cidr)
            subnet = ipaddress.IPv4Network(subnet_cidr, strict=True)
        except (ValueError, TypeError):
            raise ValueError(
                f"subnet_cidr must be an IPv4 CIDR such as 10.0.0.0/22, got {subnet_cidr!r}"
            ) from None
        if subnet.prefixlen > 28:
            raise ValueError(f"subnet_cidr must be a /28 or larger, got {subnet_cidr!r}")
        try:
            vpc = ipaddress.IPv4Network(vpc_cidr, strict=True)
        except (ValueError, TypeError):
            raise ValueError(f"vpc_cidr must be an IPv4 CIDR such as 10.0.0.0/16, got {vpc_cidr!r}") from None
        # The "VPC": its CIDR, and the subnet's when it lies outside it.
        self.network_cidrs: tuple[str, ...] = (
            (str(vpc),) if subnet.subnet_of(vpc) else (str(vpc), str(subnet))
        )
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise ValueError(f"seed must be an integer, got {seed!r}")
        if not _is_number(latency) or not math.isfinite(latency) or latency < 0:
            raise ValueError(f"latency must be a finite number of seconds >= 0, got {latency!r}")
        if throttle_rate is not None and (
            not _is_number(throttle_rate) or not math.isfinite(throttle_rate) or throttle_rate <= 0
        ):
            raise ValueError(f"throttle_rate must be a finite number > 0 or None, got {throttle_rate!r}")
        if isinstance(throttle_burst, bool) or not isinstance(throttle_burst, int) or throttle_burst < 1:
            raise ValueError(f"throttle_burst must be an integer >= 1, got {throttle_burst!r}")

        self._limits = INSTANCE_TYPES[instance_type]
        self._subnet = subnet
        self._size = subnet.num_addresses
        self._blocks = self._size // PREFIX_SIZE
        self._state_path = Path(state_path) if state_path is not None else None
        self._latency = float(latency)
        self._sleep = sleep
        self._jitter = random.Random(seed)
        self._bucket = (
            TokenBucket(throttle_rate, throttle_burst, clock=clock) if throttle_rate is not None else None
        )
        self._lock = threading.Lock()
        self._faults: dict[str, collections.deque[CloudError]] = {}
        self.calls: collections.Counter[str] = collections.Counter()

        # State. ``_ip_owner`` and ``_prefix_owner`` index who holds what; both are derived from
        # ``_interfaces`` and kept in step with it by ``_commit``.
        self._seed = seed
        self._next_id = 0
        self._interfaces: dict[str, _Interface] = {}
        self._ip_owner: dict[int, str] = {}
        self._prefix_owner: dict[int, str] = {}
        self._ips_per_block: collections.Counter[int] = collections.Counter()

        if self._state_path is not None and self._state_path.exists():
            self._load(self._state_path)
        else:
            new_id, mac, next_id = self._identity()
            (primary_ip,) = self._pick_ips("create_node", 1, frozenset())
            primary = _Interface(id=new_id, device_index=0, primary=True, mac=mac, primary_ip=primary_ip)
            self._commit({new_id: primary}, next_id)

    # --- the CloudProvider protocol -------------------------------------------------------------

    def instance_limits(self) -> InstanceLimits:
        self._begin("instance_limits")
        with self._lock:
            self._raise_injected("instance_limits")
            return self._limits

    def list_interfaces(self) -> list[InterfaceView]:
        self._begin("list_interfaces")
        with self._lock:
            self._raise_injected("list_interfaces")
            ifaces = sorted(self._interfaces.values(), key=lambda i: i.device_index)
            return [self._view(i) for i in ifaces]

    def attach_interface(self, ip_count: int, prefix_count: int) -> InterfaceView:
        op = "attach_interface"
        self._begin(op)
        with self._lock:
            self._raise_injected(op)
            _check_count(op, "ip_count", ip_count)
            _check_count(op, "prefix_count", prefix_count)
            if prefix_count and not self._limits.prefix_delegation:
                raise LimitExceeded(op, f"{self._limits.instance_type} does not support prefix delegation")
            if ip_count + prefix_count > self._limits.secondary_per_interface:
                raise LimitExceeded(
                    op,
                    f"PrivateIpAddressLimitExceeded: {ip_count} IPs + {prefix_count} prefixes exceed "
                    f"{self._limits.secondary_per_interface} slots per interface",
                )
            taken = {i.device_index for i in self._interfaces.values()}
            free = [d for d in range(self._limits.max_interfaces) if d not in taken]
            if not free:
                raise LimitExceeded(
                    op,
                    f"AttachmentLimitExceeded: {self._limits.instance_type} takes at most "
                    f"{self._limits.max_interfaces} interfaces",
                )
            blocks = self._pick_blocks(op, prefix_count)
            picked = self._pick_ips(op, 1 + ip_count, frozenset(blocks))
            new_id, mac, next_id = self._identity()
            iface = _Interface(
                id=new_id,
                device_index=free[0],
                primary=False,
                mac=mac,
                primary_ip=picked[0],
                ips=frozenset(picked[1:]),
                prefixes=frozenset(blocks),
            )
            self._commit({new_id: iface}, next_id)
            return self._view(iface)

    def detach_interface(self, interface_id: InterfaceId) -> None:
        op = "detach_interface"
        self._begin(op)
        with self._lock:
            self._raise_injected(op)
            iface = self._interfaces.get(interface_id)
            if iface is None:
                return  # already gone
            if iface.primary:
                raise PermanentCloudError(
                    op,
                    f"OperationNotPermitted: {interface_id} is the primary interface and cannot be detached",
                )
            self._commit({interface_id: None}, self._next_id)

    def assign_ips(self, interface_id: InterfaceId, count: int) -> list[str]:
        op = "assign_ips"
        self._begin(op)
        with self._lock:
            self._raise_injected(op)
            _check_count(op, "count", count)
            iface = self._existing(op, interface_id)
            self._check_slots(op, iface, count)
            if count == 0:
                return []
            picked = self._pick_ips(op, count, frozenset())
            self._commit({iface.id: replace(iface, ips=iface.ips | set(picked))}, self._next_id)
            return [self._address(off) for off in picked]

    def assign_prefixes(self, interface_id: InterfaceId, count: int) -> list[str]:
        op = "assign_prefixes"
        self._begin(op)
        with self._lock:
            self._raise_injected(op)
            _check_count(op, "count", count)
            iface = self._existing(op, interface_id)
            if count and not self._limits.prefix_delegation:
                raise LimitExceeded(op, f"{self._limits.instance_type} does not support prefix delegation")
            self._check_slots(op, iface, count)
            if count == 0:
                return []
            blocks = self._pick_blocks(op, count)
            self._commit({iface.id: replace(iface, prefixes=iface.prefixes | set(blocks))}, self._next_id)
            return [self._prefix(block) for block in blocks]

    def release_ips(self, interface_id: InterfaceId, ips: list[str]) -> None:
        op = "release_ips"
        self._begin(op)
        with self._lock:
            self._raise_injected(op)
            offsets = {self._parse_ip(op, ip) for ip in ips}
            iface = self._interfaces.get(interface_id)
            if iface is None:
                return  # the interface, and so its addresses, are already gone
            if iface.primary_ip in offsets:
                raise PermanentCloudError(
                    op, f"InvalidParameterValue: {self._address(iface.primary_ip)} is the primary address"
                )
            drop = iface.ips & offsets
            if drop:
                self._commit({iface.id: replace(iface, ips=iface.ips - drop)}, self._next_id)

    def release_prefixes(self, interface_id: InterfaceId, prefixes: list[str]) -> None:
        op = "release_prefixes"
        self._begin(op)
        with self._lock:
            self._raise_injected(op)
            blocks = {self._parse_prefix(op, prefix) for prefix in prefixes}
            iface = self._interfaces.get(interface_id)
            if iface is None:
                return
            drop = iface.prefixes & blocks
            if drop:
                self._commit({iface.id: replace(iface, prefixes=iface.prefixes - drop)}, self._next_id)

    # --- test and simulation helpers -----------------------------------------------------------

    def inject(self, operation: str, error: CloudError, times: int = 1) -> None:
        """Make the next ``times`` calls of ``operation`` that pass throttling raise ``error``.

        The failing calls change nothing. Injections for one operation queue up in order.
        """
        if operation not in OPERATIONS:
            raise ValueError(f"operation must be one of {', '.join(sorted(OPERATIONS))}, got {operation!r}")
        if not isinstance(error, CloudError):
            raise ValueError(f"error must be a CloudError, got {type(error).__name__}")
        if isinstance(times, bool) or not isinstance(times, int) or times < 1:
            raise ValueError(f"times must be an integer >= 1, got {times!r}")
        with self._lock:
            self._faults.setdefault(operation, collections.deque()).extend([error] * times)

    def free_addresses(self) -> int:
        """Addresses of the subnet nobody holds (a prefix holds 16). Not a cloud call: not counted."""
        with self._lock:
            usable = self._size - _RESERVED_LOW - 1
            return usable - len(self._ip_owner) - PREFIX_SIZE * len(self._prefix_owner)

    # --- call plumbing ------------------------------------------------------------------------

    def _begin(self, operation: str) -> None:
        """Count the call, apply throttling, then sleep the latency outside the lock."""
        with self._lock:
            self.calls[operation] += 1
            if self._bucket is not None and not self._bucket.try_acquire():
                raise ThrottledError(
                    operation, "RequestLimitExceeded", retry_after=self._bucket.next_token_in()
                )
            delay = 0.0
            if self._latency > 0:
                base = self._latency / 4 if operation in _DESCRIBE_OPERATIONS else self._latency
                delay = base * self._jitter.uniform(0.75, 1.25)
        if delay > 0:
            self._sleep(delay)

    def _raise_injected(self, operation: str) -> None:
        """Raise the next injected fault for ``operation``, if any. Call with the lock held."""
        queue = self._faults.get(operation)
        if queue:
            raise queue.popleft()

    def _existing(self, operation: str, interface_id: str) -> _Interface:
        iface = self._interfaces.get(interface_id)
        if iface is None:
            raise InterfaceNotFound(operation, f"InvalidNetworkInterfaceID.NotFound: {interface_id}")
        return iface

    def _check_slots(self, operation: str, iface: _Interface, count: int) -> None:
        room = self._limits.secondary_per_interface - iface.used_slots
        if count > room:
            raise LimitExceeded(
                operation,
                f"PrivateIpAddressLimitExceeded: {iface.id} has {room} free slots, {count} requested",
            )

    # --- address allocation (call with the lock held; nothing here changes state) ---------------

    def _pick_ips(self, operation: str, count: int, exclude_blocks: frozenset[int]) -> list[int]:
        """The ``count`` lowest free addresses outside ``exclude_blocks``; SubnetFull if fewer."""
        picked: list[int] = []
        offset = _RESERVED_LOW
        while len(picked) < count and offset < self._size - 1:
            block = offset // PREFIX_SIZE
            if block in self._prefix_owner or block in exclude_blocks:
                offset = (block + 1) * PREFIX_SIZE  # skip the whole delegated block
                continue
            if offset not in self._ip_owner:
                picked.append(offset)
            offset += 1
        if len(picked) < count:
            raise SubnetFull(
                operation,
                f"InsufficientFreeAddressesInSubnet: {self._subnet} cannot supply {count} addresses",
            )
        return picked

    def _pick_blocks(self, operation: str, count: int) -> list[int]:
        """The ``count`` lowest aligned /28 blocks holding no address; SubnetFull if fewer."""
        picked: list[int] = []
        # Block 0 holds the reserved .0-.3 and the last block the broadcast: neither can be delegated.
        for block in range(1, self._blocks - 1):
            if len(picked) == count:
                break
            if block not in self._prefix_owner and self._ips_per_block[block] == 0:
                picked.append(block)
        if len(picked) < count:
            raise SubnetFull(
                operation,
                f"InsufficientCidrBlocks: {self._subnet} has no {count} free aligned /28 blocks",
            )
        return picked

    def _identity(self) -> tuple[str, str, int]:
        """A new (interface id, mac, next counter) derived from the seed; changes nothing."""
        counter = self._next_id
        while True:
            digest = hashlib.blake2b(f"sim:{self._seed}:{counter}".encode(), digest_size=16).digest()
            counter += 1
            new_id = "eni-" + digest[:6].hex()
            if new_id not in self._interfaces:
                mac = "02:" + ":".join(f"{b:02x}" for b in digest[6:11])  # locally administered
                return new_id, mac, counter

    # --- state changes ------------------------------------------------------------------------

    def _commit(self, changes: dict[str, _Interface | None], next_id: int) -> None:
        """Apply ``changes`` (None: remove), persisting first so that a failed write changes nothing."""
        interfaces = dict(self._interfaces)
        for iface_id, iface in changes.items():
            if iface is None:
                interfaces.pop(iface_id, None)
            else:
                interfaces[iface_id] = iface
        if self._state_path is not None:
            durable.write_atomic(self._state_path, self._serialize(interfaces, next_id), make_parent=True)
        for iface_id, iface in changes.items():
            old = self._interfaces.get(iface_id)
            if old is not None:
                self._unindex(old)
            if iface is not None:
                self._index(iface)
        self._interfaces = interfaces
        self._next_id = next_id

    def _index(self, iface: _Interface) -> None:
        for offset in (iface.primary_ip, *iface.ips):
            if offset in self._ip_owner or offset // PREFIX_SIZE in self._prefix_owner:
                raise _CorruptState(f"address {self._address(offset)} has two holders")
            self._ip_owner[offset] = iface.id
            self._ips_per_block[offset // PREFIX_SIZE] += 1
        for block in iface.prefixes:
            if block in self._prefix_owner or self._ips_per_block[block]:
                raise _CorruptState(f"prefix {self._prefix(block)} overlaps another holder")
            self._prefix_owner[block] = iface.id

    def _unindex(self, iface: _Interface) -> None:
        for offset in (iface.primary_ip, *iface.ips):
            del self._ip_owner[offset]
            self._ips_per_block[offset // PREFIX_SIZE] -= 1
            if not self._ips_per_block[offset // PREFIX_SIZE]:
                del self._ips_per_block[offset // PREFIX_SIZE]
        for block in iface.prefixes:
            del self._prefix_owner[block]

    # --- addresses as text --------------------------------------------------------------------

    def _address(self, offset: int) -> str:
        return str(self._subnet.network_address + offset)

    def _prefix(self, block: int) -> str:
        return f"{self._subnet.network_address + block * PREFIX_SIZE}/28"

    def _view(self, iface: _Interface) -> InterfaceView:
        return InterfaceView(
            id=InterfaceId(iface.id),
            device_index=iface.device_index,
            primary=iface.primary,
            subnet_id=SUBNET_ID,
            subnet_cidr=str(self._subnet),
            primary_ip=self._address(iface.primary_ip),
            ips=tuple(self._address(off) for off in sorted(iface.ips)),
            prefixes=tuple(self._prefix(block) for block in sorted(iface.prefixes)),
            mac=iface.mac,
        )

    def _parse_ip(self, operation: str, text: object) -> int:
        """An address as an offset into the subnet, or -1 when it lies outside (so nobody holds it)."""
        try:
            address = ipaddress.IPv4Address(text) if isinstance(text, str) else None
        except ValueError:
            address = None
        if address is None:
            raise PermanentCloudError(operation, f"InvalidParameterValue: {text!r} is not an IPv4 address")
        if address not in self._subnet:
            return -1
        return int(address) - int(self._subnet.network_address)

    def _parse_prefix(self, operation: str, text: object) -> int:
        """A /28 as a block number of the subnet, or -1 when it lies outside."""
        try:
            prefix = ipaddress.IPv4Network(text, strict=True) if isinstance(text, str) else None
        except ValueError:
            prefix = None
        if prefix is None or prefix.prefixlen != 28:
            raise PermanentCloudError(
                operation, f"InvalidParameterValue: {text!r} is not an aligned /28 prefix"
            )
        if not prefix.subnet_of(self._subnet):
            return -1
        return (int(prefix.network_address) - int(self._subnet.network_address)) // PREFIX_SIZE

    # --- persistence --------------------------------------------------------------------------

    def _serialize(self, interfaces: dict[str, _Interface], next_id: int) -> bytes:
        ordered = sorted(interfaces.values(), key=lambda i: i.device_index)
        doc = {
            "format": _STATE_FORMAT,
            "version": _STATE_VERSION,
            "instance_type": self._limits.instance_type,
            "subnet_cidr": str(self._subnet),
            "seed": self._seed,
            "next_id": next_id,
            "interfaces": [
                {
                    "id": i.id,
                    "device_index": i.device_index,
                    "primary": i.primary,
                    "mac": i.mac,
                    "primary_ip": self._address(i.primary_ip),
                    "ips": [self._address(off) for off in sorted(i.ips)],
                    "prefixes": [self._prefix(block) for block in sorted(i.prefixes)],
                }
                for i in ordered
            ],
        }
        return (json.dumps(doc, indent=1, sort_keys=True) + "\n").encode()

    def _load(self, path: Path) -> None:
        try:
            raw = json.loads(path.read_bytes())
        except (OSError, ValueError) as exc:
            raise ValueError(f"sim state file {path} is unreadable: {exc}") from None
        try:
            doc = _expect(raw, dict, "the document")
            if doc.get("format") != _STATE_FORMAT or doc.get("version") != _STATE_VERSION:
                raise _CorruptState(f"not a {_STATE_FORMAT} version {_STATE_VERSION} document")
            for key, mine in (
                ("instance_type", self._limits.instance_type),
                ("subnet_cidr", str(self._subnet)),
            ):
                theirs = doc.get(key)
                if theirs != mine:
                    raise ValueError(f"sim state file {path} was written for {key}={theirs!r}, not {mine!r}")
            seed = _expect_int(doc.get("seed"), "seed")
            next_id = _expect_int(doc.get("next_id"), "next_id")
            if next_id < 0:
                raise _CorruptState("next_id is negative")
            self._seed = seed
            items = _expect(doc.get("interfaces"), list, "interfaces")
            interfaces = [self._parse_interface(item) for item in items]
            self._check_interfaces(interfaces)
            for iface in interfaces:
                self._index(iface)
        except _CorruptState as exc:
            raise ValueError(f"sim state file {path} is corrupt: {exc}") from None
        self._interfaces = {i.id: i for i in interfaces}
        self._next_id = next_id

    def _parse_interface(self, item: object) -> _Interface:
        entry = _expect(item, dict, "an interface")
        iface_id = _expect(entry.get("id"), str, "interface id")
        primary = _expect(entry.get("primary"), bool, f"{iface_id} primary")
        mac = _expect(entry.get("mac"), str, f"{iface_id} mac")
        device_index = _expect_int(entry.get("device_index"), f"{iface_id} device_index")
        primary_ip = self._stored_ip(entry.get("primary_ip"), iface_id)
        ips = [self._stored_ip(ip, iface_id) for ip in _expect(entry.get("ips"), list, f"{iface_id} ips")]
        prefixes = [
            self._stored_prefix(p, iface_id)
            for p in _expect(entry.get("prefixes"), list, f"{iface_id} prefixes")
        ]
        if len(set(ips)) != len(ips) or len(set(prefixes)) != len(prefixes) or primary_ip in ips:
            raise _CorruptState(f"{iface_id} lists an address twice")
        return _Interface(
            id=iface_id,
            device_index=device_index,
            primary=primary,
            mac=mac,
            primary_ip=primary_ip,
            ips=frozenset(ips),
            prefixes=frozenset(prefixes),
        )

    def _check_interfaces(self, interfaces: list[_Interface]) -> None:
        limits = self._limits
        if len({i.id for i in interfaces}) != len(interfaces):
            raise _CorruptState("an interface id appears twice")
        if len({i.device_index for i in interfaces}) != len(interfaces):
            raise _CorruptState("a device index appears twice")
        if [i.device_index for i in interfaces if i.primary] != [0]:
            raise _CorruptState("there must be exactly one primary interface, at device index 0")
        for iface in interfaces:
            if not 0 <= iface.device_index < limits.max_interfaces:
                raise _CorruptState(f"{iface.id} device_index {iface.device_index} is out of range")
            if iface.used_slots > limits.secondary_per_interface:
                raise _CorruptState(f"{iface.id} holds more addresses than {limits.instance_type} allows")
            if iface.prefixes and not limits.prefix_delegation:
                raise _CorruptState(f"{iface.id} holds prefixes but {limits.instance_type} has none")

    def _stored_ip(self, value: object, iface_id: str) -> int:
        text = _expect(value, str, f"{iface_id} address")
        try:
            address = ipaddress.IPv4Address(text)
        except ValueError:
            raise _CorruptState(f"{iface_id} address {text!r} is not an IPv4 address") from None
        offset = int(address) - int(self._subnet.network_address)
        if address not in self._subnet or not _RESERVED_LOW <= offset < self._size - 1:
            raise _CorruptState(f"{iface_id} address {text} is not assignable in {self._subnet}")
        return offset

    def _stored_prefix(self, value: object, iface_id: str) -> int:
        text = _expect(value, str, f"{iface_id} prefix")
        try:
            prefix = ipaddress.IPv4Network(text, strict=True)
        except ValueError:
            raise _CorruptState(f"{iface_id} prefix {text!r} is not an aligned IPv4 prefix") from None
        block = (int(prefix.network_address) - int(self._subnet.network_address)) // PREFIX_SIZE
        if prefix.prefixlen != 28 or not prefix.subnet_of(self._subnet) or not 0 < block < self._blocks - 1:
            raise _CorruptState(f"{iface_id} prefix {text} is not a delegable /28 of {self._subnet}")
        return block


def _check_count(operation: str, name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise PermanentCloudError(
            operation, f"InvalidParameterValue: {name} must be an integer >= 0, got {value!r}"
        )


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _expect(value: Any, kind: type[Any], what: str) -> Any:
    if not isinstance(value, kind) or (kind is not bool and isinstance(value, bool)):
        raise _CorruptState(f"{what} must be a {kind.__name__}, got {type(value).__name__}")
    return value


def _expect_int(value: object, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise _CorruptState(f"{what} must be an integer, got {type(value).__name__}")
    return value


if TYPE_CHECKING:
    _conforms: type[CloudProvider] = SimCloud
