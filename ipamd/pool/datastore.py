"""The node's address book: which interface holds which pod-assignable address, and which pod has it.

Pure state, no I/O: the cloud's word comes in through ``sync_interfaces`` and the ``add_*``/``*_release``
calls the manager makes after a cloud operation; time comes in as an epoch float (an injected clock).

Address states. Every address an interface holds (a secondary IP, or one of the 16 addresses of a /28
prefix) is in exactly one of these states::

    free         assignable now
    assigned     handed to one attachment (network, container ID, ifname)
    cooling      freed by a DEL less than ``cooldown`` seconds ago; not reused yet, so that a new pod does
                 not receive packets (conntrack entries, stale ARP, other nodes' caches) meant for the old
                 one. A deadline in the past means free: expiry is lazy, done by the next call that passes
                 ``now``.
    quarantined  possibly in use by a pod we have no record of (the checkpoint was lost); held back until
                 CNI GC proves its owner gone (``gc``) or an operator releases it (``release_quarantined``)
    releasing    on its way back to the cloud (``begin_release`` / ``begin_detach``); never assignable

An *orphaned* assignment is one whose address no interface holds any more (the cloud dropped it while a
pod had it, or a restored checkpoint names an address we do not hold, or a second pod claims an address
another restored assignment already has). It is not an address state: the assignment is kept so that DEL
still finds it and frees nothing, it is never counted in the totals, and its address is never handed to
another pod. When the address is held and unclaimed again, the orphan takes it back.

Choice order for ADD: a free address on the interface with the lowest device index that has one; within
that interface, an individual secondary IP before a prefix address, then the prefix with the most
assigned addresses (packing leaves whole prefixes, and then whole interfaces, free to give back), then the
lowest address. If every address that is not in use is cooling, the one whose cool-down ends first (the
one cooling longest) is handed out anyway and ``cooldown_overrides`` counts it: a pod must never fail
only because of cool-down. ``assign(..., allow_cooling=False)`` refuses that last resort (it raises
NoAddressAvailable instead), so that the caller decides when an override is warranted: the daemon
overrides only when the pool cannot grow, or after a bounded wait for growth (``ipamd.service``).

Without pods on the primary interface (``primary_interface_pods=False``: custom networking, or a pod
subnet other than the primary NIC's), ADD never picks an address of a primary interface, not even a
cooling one. An address of the primary that is already assigned stays with its assignment (and an
orphan, a restored checkpoint entry or GC keep treating it as before): those pods keep running where
they are, only new pods go elsewhere. Its free addresses stay held (the pool neither grows nor shrinks
the primary) and are not counted as available to the policy (``ipamd.pool.policy``).

Indexes keep ADD and DEL off a scan of every address: per interface a sorted list of free individual IPs
and, per count of assigned addresses, a sorted list of prefixes with a free address (each prefix keeps a
16-bit mask of its free addresses); cooling deadlines sit in a heap with lazy deletion.

Addresses are IPv4 in dotted-quad form; prefixes are /28 (``PREFIX_SIZE`` addresses).
"""

from __future__ import annotations

import bisect
import dataclasses
import enum
import heapq
import ipaddress
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass

from ipamd.errors import NoAddressAvailable, PoolError
from ipamd.pool.model import (
    PREFIX_SIZE,
    Assignment,
    AttachmentKey,
    ContainerID,
    IfName,
    InterfaceId,
    InterfaceUsage,
    InterfaceView,
    PodRef,
    PoolSnapshot,
    PoolStats,
    PoolView,
    canonical_ipv4,
)

__all__ = ["AddressState", "Datastore", "RestoreReport", "SyncReport"]


class AddressState(enum.Enum):
    FREE = "free"
    ASSIGNED = "assigned"
    COOLING = "cooling"
    QUARANTINED = "quarantined"
    RELEASING = "releasing"

    # Members are singletons compared by identity: hash them so too (Enum hashes the name, a Python call
    # on every dict lookup of the datastore's per-state counts).
    __hash__ = object.__hash__


FREE = AddressState.FREE
ASSIGNED = AddressState.ASSIGNED
COOLING = AddressState.COOLING
QUARANTINED = AddressState.QUARANTINED
RELEASING = AddressState.RELEASING

# States an orphan or a restored assignment may take an address from: nobody we know of is using it.
_UNCLAIMED = frozenset({FREE, COOLING, QUARANTINED})
_FULL_MASK = (1 << PREFIX_SIZE) - 1

# ip -> (state, cool-down deadline) of addresses dropped during one sync, in case they reappear elsewhere
_Carried = dict[str, tuple[AddressState, float]]


@dataclass(frozen=True, slots=True)
class SyncReport:
    added_interfaces: tuple[InterfaceId, ...] = ()
    removed_interfaces: tuple[InterfaceId, ...] = ()
    added_ips: tuple[str, ...] = ()  # addresses adopted (IPs and prefix addresses)
    removed_ips: tuple[str, ...] = ()  # addresses the cloud no longer reports
    lost_assigned: tuple[Assignment, ...] = ()  # assignments whose address disappeared: now orphaned


@dataclass(frozen=True, slots=True)
class RestoreReport:
    restored: int
    orphaned: tuple[Assignment, ...]  # address not held, or held by an earlier assignment of the snapshot
    cooling: int
    quarantined: int


class _Address:
    __slots__ = ("deadline", "iface", "ip", "key", "offset", "prefix", "state", "value")

    def __init__(self, ip: str, value: int, iface: _Interface, prefix: _Prefix | None, offset: int) -> None:
        self.ip = ip
        self.value = value
        self.iface = iface
        self.prefix = prefix
        self.offset = offset  # position inside its prefix
        self.state = FREE
        self.deadline = 0.0  # end of cool-down; meaningful only while cooling
        self.key: AttachmentKey | None = None  # the holder; only while assigned


class _Prefix:
    __slots__ = ("addresses", "assigned", "base", "cidr", "free_mask")

    def __init__(self, cidr: str, base: int) -> None:
        self.cidr = cidr
        self.base = base
        self.addresses: list[_Address] = []
        self.assigned = 0
        self.free_mask = 0  # bit i set: addresses[i] is free


class _Interface:
    __slots__ = ("buckets", "counts", "detaching", "free_ips", "ip_by_value", "ips", "prefixes", "view")

    def __init__(self, view: InterfaceView) -> None:
        self.view = view.with_addresses((), ())  # metadata only; addresses live below
        self.ips: dict[str, _Address] = {}  # individual secondary IPs
        self.ip_by_value: dict[int, _Address] = {}
        self.free_ips: list[int] = []  # sorted values of free individual IPs
        self.prefixes: dict[int, _Prefix] = {}  # by base address
        # buckets[n]: sorted bases of prefixes with n assigned addresses and at least one free one
        self.buckets: list[list[int]] = [[] for _ in range(PREFIX_SIZE + 1)]
        self.counts = dict.fromkeys(AddressState, 0)
        self.detaching = False

    @property
    def id(self) -> InterfaceId:
        return self.view.id

    def order(self) -> tuple[int, str]:
        return (self.view.device_index, self.view.id)


class Datastore:
    """Holdings, assignments, cool-downs and quarantine of one node. Not thread-safe: one owner."""

    def __init__(self, *, cooldown: float, primary_interface_pods: bool = True) -> None:
        if cooldown < 0:
            raise ValueError(f"cooldown must be >= 0, got {cooldown}")
        self._cooldown = cooldown
        self.primary_interface_pods = primary_interface_pods  # False: ADD never picks the primary's
        self.cooldown_overrides = 0
        self._interfaces: dict[InterfaceId, _Interface] = {}
        self._order: list[_Interface] = []  # by (device_index, id)
        self._addresses: dict[str, _Address] = {}
        self._counts = dict.fromkeys(AddressState, 0)
        self._cooling: dict[str, _Address] = {}
        self._quarantined: dict[str, _Address] = {}
        self._cooling_heap: list[tuple[float, int, str]] = []  # (deadline, value, ip); stale entries skipped
        self._assigned: dict[AttachmentKey, Assignment] = {}
        self._orphans: dict[AttachmentKey, Assignment] = {}
        self._orphans_by_ip: dict[str, list[Assignment]] = {}

    # --- cloud truth ----------------------------------------------------------------------------

    def sync_interfaces(self, views: Sequence[InterfaceView], *, now: float) -> SyncReport:
        """Make the holdings equal the cloud's report. Raises PoolError, changing nothing, if it is
        inconsistent (an address twice, a prefix overlapping an IP, an interface's primary address)."""
        self._expire(now)
        plans = _plan(views)
        carried: _Carried = {}
        dropped: list[str] = []
        newly_orphaned: list[AttachmentKey] = []
        wanted = {plan.view.id: plan for plan in plans}

        removed_interfaces = sorted(iid for iid in self._interfaces if iid not in wanted)
        for iid in removed_interfaces:
            self._drop_all(self._interfaces.pop(iid), carried, dropped, newly_orphaned)
        for plan in plans:
            held = self._interfaces.get(plan.view.id)
            if held is None:
                continue
            keep_ips = {ip for ip, _ in plan.ips}
            keep_prefixes = {base for _, base in plan.prefixes}
            for addr in [a for ip, a in held.ips.items() if ip not in keep_ips]:
                self._drop(addr, carried, dropped, newly_orphaned)
            for prefix in [p for base, p in held.prefixes.items() if base not in keep_prefixes]:
                self._drop_prefix(held, prefix, carried, dropped, newly_orphaned)

        added_interfaces: list[InterfaceId] = []
        adopted: list[str] = []
        for plan in plans:
            iface = self._interfaces.get(plan.view.id)
            if iface is None:
                iface = self._interfaces[plan.view.id] = _Interface(plan.view)
                added_interfaces.append(plan.view.id)
            else:
                iface.view = plan.view.with_addresses((), ())
            self._adopt(iface, plan, carried, now, adopted)
        self._reorder()

        gone = set(dropped) - set(adopted)
        came = set(adopted) - set(dropped)
        return SyncReport(
            added_interfaces=tuple(sorted(added_interfaces)),
            removed_interfaces=tuple(removed_interfaces),
            added_ips=_sorted_ips(came),
            removed_ips=_sorted_ips(gone),
            lost_assigned=tuple(
                sorted((self._orphans[k] for k in newly_orphaned if k in self._orphans), key=_by_key)
            ),
        )

    def add_interface(self, view: InterfaceView, *, now: float) -> None:
        """A newly attached interface; its addresses are adopted free."""
        self._expire(now)
        if view.id in self._interfaces:
            raise PoolError(f"interface {view.id} is already held")
        (plan,) = _plan([view])
        self._check_unheld(plan)
        iface = self._interfaces[view.id] = _Interface(view)
        self._adopt(iface, plan, {}, now, [])
        self._reorder()

    def add_ips(self, interface_id: InterfaceId, ips: Sequence[str]) -> None:
        """Secondary IPs the cloud just assigned to an interface; adopted free. Already held here: no-op."""
        iface = self._interface(interface_id)
        plan = _plan([iface.view.with_addresses(tuple(ips), ())])[0]
        plan = dataclasses.replace(plan, ips=tuple((ip, v) for ip, v in plan.ips if ip not in iface.ips))
        self._check_unheld(plan)
        self._adopt(iface, plan, {}, None, [])

    def add_prefixes(self, interface_id: InterfaceId, prefixes: Sequence[str]) -> None:
        """Prefixes the cloud just delegated to an interface; all their addresses adopted free."""
        iface = self._interface(interface_id)
        plan = _plan([iface.view.with_addresses((), tuple(prefixes))])[0]
        plan = dataclasses.replace(
            plan, prefixes=tuple((c, b) for c, b in plan.prefixes if b not in iface.prefixes)
        )
        self._check_unheld(plan)
        self._adopt(iface, plan, {}, None, [])

    def begin_release(
        self,
        interface_id: InterfaceId,
        *,
        ips: Sequence[str] = (),
        prefixes: Sequence[str] = (),
        now: float | None = None,
    ) -> None:
        """Mark free addresses releasing before asking the cloud to take them back. All or nothing:
        PoolError if any is not free (``now``, if given, first ends cool-downs that are over)."""
        if now is not None:
            self._expire(now)
        iface = self._interface(interface_id)
        targets = self._release_targets(iface, ips, prefixes, strict=True)
        busy = [a.ip for a in targets if a.state is not FREE]
        if busy:
            raise PoolError(f"cannot release from {interface_id}: not free: {', '.join(_sorted_ips(busy))}")
        for addr in targets:
            self._set_state(addr, RELEASING)

    def finish_release(
        self, interface_id: InterfaceId, *, ips: Sequence[str] = (), prefixes: Sequence[str] = ()
    ) -> None:
        """The cloud took them back: drop them. Already gone is not an error."""
        iface = self._interfaces.get(interface_id)
        if iface is None:
            return
        targets = self._release_targets(iface, ips, prefixes, strict=False)
        wrong = [a.ip for a in targets if a.state is not RELEASING]
        if wrong:
            raise PoolError(
                f"finish_release on {interface_id}: not releasing: {', '.join(_sorted_ips(wrong))}"
            )
        sink: list[str] = []
        for ip in {_canonical_ip(ip) for ip in ips}:
            addr = iface.ips.get(ip)
            if addr is not None:
                self._drop(addr, {}, sink, [])
        for base in {_parse_prefix(p)[1] for p in prefixes}:
            prefix = iface.prefixes.get(base)
            if prefix is not None:
                self._drop_prefix(iface, prefix, {}, sink, [])

    def abort_release(
        self, interface_id: InterfaceId, *, ips: Sequence[str] = (), prefixes: Sequence[str] = ()
    ) -> None:
        """The cloud refused: releasing addresses named here become free again; others are left alone."""
        iface = self._interfaces.get(interface_id)
        if iface is None:
            return
        for addr in self._release_targets(iface, ips, prefixes, strict=False):
            if addr.state is RELEASING:
                self._settle(addr, FREE, 0.0)

    def begin_detach(self, interface_id: InterfaceId, *, now: float | None = None) -> None:
        """Mark a whole interface releasing before detaching it. PoolError unless it is a secondary
        interface whose every address is free and no orphaned assignment names it."""
        if now is not None:
            self._expire(now)
        iface = self._interface(interface_id)
        if iface.view.primary:
            raise PoolError(f"cannot detach {interface_id}: it is the primary interface")
        if iface.detaching:
            raise PoolError(f"cannot detach {interface_id}: already detaching")
        in_use = {s.value: n for s, n in iface.counts.items() if s is not FREE and n}
        orphans = sum(1 for a in self._orphans.values() if a.interface_id == interface_id)
        if orphans:
            in_use["orphaned"] = orphans
        if in_use:
            detail = ", ".join(f"{n} {s}" for s, n in sorted(in_use.items()))
            raise PoolError(f"cannot detach {interface_id}: {detail}")
        iface.detaching = True
        for addr in list(_addresses_of(iface)):
            self._set_state(addr, RELEASING)

    def finish_detach(self, interface_id: InterfaceId) -> None:
        """The interface is gone from the cloud: forget it. Unknown interface: no-op."""
        iface = self._interfaces.get(interface_id)
        if iface is None:
            return
        if not iface.detaching:
            raise PoolError(f"finish_detach on {interface_id}: begin_detach was not called")
        self._drop_all(iface, {}, [], [])
        del self._interfaces[interface_id]
        self._reorder()

    def abort_detach(self, interface_id: InterfaceId) -> None:
        """The detach failed: the interface's addresses are free again. Unknown or not detaching: no-op."""
        iface = self._interfaces.get(interface_id)
        if iface is None or not iface.detaching:
            return
        iface.detaching = False
        for addr in list(_addresses_of(iface)):
            if addr.state is RELEASING:
                self._settle(addr, FREE, 0.0)

    # --- pods -----------------------------------------------------------------------------------

    def assign(
        self, key: AttachmentKey, pod: PodRef, *, netns: str, now: float, allow_cooling: bool = True
    ) -> Assignment:
        """Give ``key`` an address (see the choice order above). Idempotent: a known key gets its
        existing assignment back, unchanged. NoAddressAvailable when nothing is free or cooling, or,
        with ``allow_cooling=False``, when nothing is free (a cooling address is never handed out)."""
        existing = self._assigned.get(key) or self._orphans.get(key)
        if existing is not None:
            return existing
        self._expire(now)
        addr = self._pick_free()
        if addr is None:
            addr = self._earliest_cooling() if allow_cooling else None
            if addr is None:
                refused = "" if allow_cooling else " (cooling addresses not allowed)"
                raise NoAddressAvailable(f"no free address for {key.container_id}/{key.ifname}{refused}")
            self.cooldown_overrides += 1
        assignment = Assignment(
            key=key, ip=addr.ip, interface_id=addr.iface.id, pod=pod, assigned_at=now, netns=netns
        )
        self._give(addr, assignment)
        return assignment

    def unassign(self, key: AttachmentKey, *, now: float, cool: bool = True) -> Assignment | None:
        """Take ``key``'s address back; it cools until ``now + cooldown`` (``cool=False``: free at
        once, for an address no pod ever used, e.g. its wiring failed). Unknown key: None.
        An orphaned assignment is just forgotten: we hold no address for it."""
        assignment = self._assigned.pop(key, None)
        if assignment is None:
            orphan = self._orphans.get(key)
            if orphan is not None:
                self._forget_orphan(orphan)
            return orphan
        self._expire(now)
        addr = self._addresses[assignment.ip]
        addr.key = None
        if cool:
            self._cool_down(addr, now)
        else:
            self._settle(addr, FREE, 0.0)
        return assignment

    def get(self, key: AttachmentKey) -> Assignment | None:
        return self._assigned.get(key) or self._orphans.get(key)

    def assignments(self) -> list[Assignment]:
        """Every assignment, orphaned ones included, sorted by key."""
        return sorted([*self._assigned.values(), *self._orphans.values()], key=_by_key)

    def orphaned(self) -> list[Assignment]:
        """Assignments whose address this node does not hold for them, sorted by key."""
        return sorted(self._orphans.values(), key=_by_key)

    def find_by_ip(self, ip: str) -> Assignment | None:
        """The attachment holding ``ip``; failing that, the earliest orphan claiming it."""
        ip = _canonical_ip(ip)
        addr = self._addresses.get(ip)
        if addr is not None and addr.key is not None:
            return self._assigned[addr.key]
        claims = self._orphans_by_ip.get(ip)
        return min(claims, key=_by_age) if claims else None

    def address_state(self, ip: str, *, now: float) -> AddressState | None:
        """State of a held address (None if no interface holds it)."""
        self._expire(now)
        addr = self._addresses.get(_canonical_ip(ip))
        return None if addr is None else addr.state

    # --- garbage collection (CNI GC) --------------------------------------------------------------

    def gc(
        self, valid: Collection[tuple[str, str]], *, network: str, started_at: float, now: float
    ) -> list[Assignment]:
        """Free every assignment of ``network`` made before ``started_at`` whose (container ID, ifname)
        the runtime no longer lists. Returns them, sorted by key. If afterwards every valid attachment of
        the network is one we know, nothing unknown can own a quarantined address: they start cooling."""
        self._expire(now)
        alive = set(valid)

        def stale(a: Assignment) -> bool:
            k = a.key
            return (
                k.network == network
                and a.assigned_at < started_at
                and (k.container_id, k.ifname) not in alive
            )

        # orphans first, so that a freed address is not handed to an orphan about to be collected
        dead_orphans = [a for a in self._orphans.values() if stale(a)]
        for orphan in dead_orphans:
            self._forget_orphan(orphan)
        dead = [a for a in self._assigned.values() if stale(a)]
        for assignment in dead:
            self.unassign(assignment.key, now=now)

        if self._quarantined and all(
            self.get(AttachmentKey(network, ContainerID(cid), IfName(ifname))) is not None
            for cid, ifname in alive
        ):
            for addr in list(self._quarantined.values()):
                self._cool_down(addr, now)
        return sorted([*dead_orphans, *dead], key=_by_key)

    # --- crash recovery ---------------------------------------------------------------------------

    def quarantine_unassigned(self, *, now: float) -> int:
        """The checkpoint was lost: any address not assigned may belong to a running pod. Quarantine
        every free or cooling one; returns how many. Releasing addresses are going away anyway."""
        self._expire(now)
        victims = [a for a in self._addresses.values() if a.state is FREE or a.state is COOLING]
        for addr in victims:
            self._set_state(addr, QUARANTINED)
        return len(victims)

    def release_quarantined(self, ip: str, *, now: float) -> bool:
        """Let one quarantined address go: it cools like a freshly freed one. False if not quarantined."""
        self._expire(now)
        addr = self._quarantined.get(_canonical_ip(ip))
        if addr is None:
            return False
        self._cool_down(addr, now)
        return True

    def snapshot(self, *, now: float | None = None) -> PoolSnapshot:
        """What the checkpoint keeps: assignments by key, cooling by address, quarantined by address.

        With ``now``, cool-downs already over are left out (without it, those not yet expired by a call
        that passed ``now`` may be included: harmless, restore drops them). Every address appears once:
        of several orphans claiming one address only the one that would get it back is kept."""
        cooling = sorted(
            (a.value, a.ip, a.deadline) for a in self._cooling.values() if now is None or a.deadline > now
        )
        held = {a.ip for a in self._assigned.values()}
        # One assignment per address (the checkpoint refuses two): the holder, else the earliest orphan.
        # Later orphans naming the same address are not kept across a restart; their DEL then finds
        # nothing and frees nothing, which is what it would do anyway.
        orphans = [min(claims, key=_by_age) for ip, claims in self._orphans_by_ip.items() if ip not in held]
        return PoolSnapshot(
            assignments=tuple(sorted([*self._assigned.values(), *orphans], key=_by_key)),
            cooling=tuple((ip, deadline) for _, ip, deadline in cooling),
            quarantined=_sorted_ips(self._quarantined),
        )

    def next_cooldown_deadline(self, *, now: float) -> float | None:
        """When the next cool-down ends (after ``now``), so that a caller can wake up then; None if none."""
        self._expire(now)
        addr = self._earliest_cooling()
        return None if addr is None else addr.deadline

    def restore(self, snapshot: PoolSnapshot, *, now: float) -> RestoreReport:
        """Re-apply a checkpoint after ``sync_interfaces``. Assignments whose key is already known are
        skipped. Of several assignments naming one address the earliest (``assigned_at``, then key) gets
        it; the others, and those naming an address not held, become orphans and are reported."""
        self._expire(now)
        restored = 0
        orphaned: list[Assignment] = []
        for saved in sorted(snapshot.assignments, key=_by_age):
            if saved.key in self._assigned or saved.key in self._orphans:
                continue
            addr = self._addresses.get(saved.ip)
            if addr is None or addr.state not in _UNCLAIMED:
                self._add_orphan(saved)
                orphaned.append(saved)
                continue
            self._give(addr, _moved(saved, addr.iface.id))
            restored += 1
        cooling = 0
        for ip, deadline in snapshot.cooling:
            addr = self._addresses.get(ip)
            if addr is None or deadline <= now:
                continue
            if addr.state is FREE or (addr.state is COOLING and addr.deadline < deadline):
                self._settle(addr, COOLING, deadline)
                cooling += 1
        quarantined = 0
        for ip in snapshot.quarantined:
            addr = self._addresses.get(ip)
            if addr is not None and (addr.state is FREE or addr.state is COOLING):
                self._set_state(addr, QUARANTINED)
                quarantined += 1
        return RestoreReport(
            restored=restored,
            orphaned=tuple(sorted(orphaned, key=_by_key)),
            cooling=cooling,
            quarantined=quarantined,
        )

    # --- reading ----------------------------------------------------------------------------------

    def stats(self, *, now: float) -> PoolStats:
        """Counts of held pod-assignable addresses (orphans are not held), from counters."""
        self._expire(now)
        c = self._counts
        return PoolStats(
            total=sum(c.values()),
            assigned=c[ASSIGNED],
            available=c[FREE],
            cooling=c[COOLING],
            quarantined=c[QUARANTINED],
            interfaces=len(self._interfaces),
        )

    def view(
        self,
        *,
        now: float,
        busy: Collection[InterfaceId] = (),
        last_increase_at: float | None = None,
        last_decrease_at: float | None = None,
        growth_paused_until: float | None = None,
        waiting: int = 0,
    ) -> PoolView:
        """What the warm-pool policy sees, interfaces by device index; ``waiting``: ADDs waiting now."""
        self._expire(now)
        usages = []
        for iface in self._order:
            c = iface.counts
            untouched = (iface.prefixes[base] for base in iface.buckets[0])
            releasable_prefixes = tuple(p.cidr for p in untouched if p.free_mask == _FULL_MASK)
            usages.append(
                InterfaceUsage(
                    id=iface.id,
                    device_index=iface.view.device_index,
                    primary=iface.view.primary,
                    ip_slots=len(iface.ips),
                    prefix_slots=len(iface.prefixes),
                    assigned=c[ASSIGNED],
                    cooling=c[COOLING],
                    free=c[FREE],
                    quarantined=c[QUARANTINED],
                    releasing=c[RELEASING],
                    releasable_ips=tuple(iface.ip_by_value[v].ip for v in iface.free_ips),
                    releasable_prefixes=releasable_prefixes,
                    busy=iface.id in busy,
                )
            )
        return PoolView(
            interfaces=tuple(usages),
            last_increase_at=last_increase_at,
            last_decrease_at=last_decrease_at,
            growth_paused_until=growth_paused_until,
            waiting=waiting,
        )

    def interfaces(self) -> list[InterfaceView]:
        """Current holdings, by device index: ``ips`` are individual secondary IPs, then prefixes."""
        return [_view_of(iface) for iface in self._order]

    def interface(self, interface_id: InterfaceId) -> InterfaceView | None:
        iface = self._interfaces.get(interface_id)
        return None if iface is None else _view_of(iface)

    def device_index(self, interface_id: InterfaceId) -> int | None:
        """The interface's device index, without building its view (the ADD path asks for it)."""
        iface = self._interfaces.get(interface_id)
        return None if iface is None else iface.view.device_index

    # --- internals: state transitions and indexes -------------------------------------------------

    def _interface(self, interface_id: InterfaceId) -> _Interface:
        iface = self._interfaces.get(interface_id)
        if iface is None:
            raise PoolError(f"unknown interface {interface_id}")
        return iface

    def _reorder(self) -> None:
        self._order = sorted(self._interfaces.values(), key=_Interface.order)

    def _enter(self, addr: _Address) -> None:
        """Count and index ``addr`` under its current state."""
        state = addr.state
        iface = addr.iface
        iface.counts[state] += 1
        self._counts[state] += 1
        if state is COOLING:
            self._cooling[addr.ip] = addr
        elif state is QUARANTINED:
            self._quarantined[addr.ip] = addr
        prefix = addr.prefix
        if prefix is None:
            if state is FREE:
                bisect.insort(iface.free_ips, addr.value)
            return
        _unbucket(iface, prefix)
        if state is FREE:
            prefix.free_mask |= 1 << addr.offset
        elif state is ASSIGNED:
            prefix.assigned += 1
        _bucket(iface, prefix)

    def _leave(self, addr: _Address) -> None:
        """Undo ``_enter``."""
        state = addr.state
        iface = addr.iface
        iface.counts[state] -= 1
        self._counts[state] -= 1
        if state is COOLING:
            del self._cooling[addr.ip]
        elif state is QUARANTINED:
            del self._quarantined[addr.ip]
        prefix = addr.prefix
        if prefix is None:
            if state is FREE:
                _remove_sorted(iface.free_ips, addr.value)
            return
        _unbucket(iface, prefix)
        if state is FREE:
            prefix.free_mask &= ~(1 << addr.offset)
        elif state is ASSIGNED:
            prefix.assigned -= 1
        _bucket(iface, prefix)

    def _set_state(self, addr: _Address, state: AddressState) -> None:
        self._leave(addr)
        addr.state = state
        self._enter(addr)

    def _settle(self, addr: _Address, state: AddressState, deadline: float) -> None:
        """Put an address nobody holds into ``state`` (FREE, COOLING until ``deadline``, QUARANTINED),
        unless an orphan claims it: then the orphan gets it back."""
        claims = self._orphans_by_ip.get(addr.ip)
        if claims:
            orphan = min(claims, key=_by_age)
            self._forget_orphan(orphan)
            self._give(addr, _moved(orphan, addr.iface.id))
            return
        if state is COOLING:
            addr.deadline = deadline
            heapq.heappush(self._cooling_heap, (deadline, addr.value, addr.ip))
        self._set_state(addr, state)

    def _cool_down(self, addr: _Address, now: float) -> None:
        """``addr`` was just freed: it cools until ``now + cooldown`` (no cool-down: free at once)."""
        if self._cooldown > 0:
            self._settle(addr, COOLING, now + self._cooldown)
        else:
            self._settle(addr, FREE, 0.0)

    def _give(self, addr: _Address, assignment: Assignment) -> None:
        self._set_state(addr, ASSIGNED)
        addr.key = assignment.key
        self._assigned[assignment.key] = assignment

    def _add_orphan(self, assignment: Assignment) -> None:
        self._orphans[assignment.key] = assignment
        self._orphans_by_ip.setdefault(assignment.ip, []).append(assignment)

    def _forget_orphan(self, assignment: Assignment) -> None:
        del self._orphans[assignment.key]
        claims = self._orphans_by_ip[assignment.ip]
        claims.remove(assignment)
        if not claims:
            del self._orphans_by_ip[assignment.ip]

    def _expire(self, now: float) -> None:
        """End every cool-down whose deadline is <= now."""
        heap = self._cooling_heap
        while heap and heap[0][0] <= now:
            deadline, _, ip = heapq.heappop(heap)
            addr = self._cooling.get(ip)
            if addr is not None and addr.deadline == deadline:
                self._set_state(addr, FREE)

    def _pick_free(self) -> _Address | None:
        for iface in self._order:
            if not iface.counts[FREE] or not self._takes_pods(iface):
                continue
            if iface.free_ips:
                return iface.ip_by_value[iface.free_ips[0]]
            for assigned in range(PREFIX_SIZE - 1, -1, -1):
                bases = iface.buckets[assigned]
                if bases:
                    prefix = iface.prefixes[bases[0]]
                    mask = prefix.free_mask
                    return prefix.addresses[(mask & -mask).bit_length() - 1]
        return None

    def _earliest_cooling(self) -> _Address | None:
        heap = self._cooling_heap
        while heap:
            deadline, _, ip = heap[0]
            addr = self._cooling.get(ip)
            if addr is not None and addr.deadline == deadline:
                break
            heapq.heappop(heap)
        else:
            return None
        if self.primary_interface_pods:
            return addr
        # Rare path (nothing free anywhere): the heap's order is (deadline, value); skip the primary's.
        eligible = [a for a in self._cooling.values() if self._takes_pods(a.iface)]
        return min(eligible, key=lambda a: (a.deadline, a.value), default=None)

    def _takes_pods(self, iface: _Interface) -> bool:
        return self.primary_interface_pods or not iface.view.primary

    # --- internals: adoption and dropping ---------------------------------------------------------

    def _check_unheld(self, plan: _Plan) -> None:
        taken = [ip for ip, _ in plan.ips if ip in self._addresses]
        for _, base in plan.prefixes:
            taken.extend(a for a in _prefix_ips(base) if a in self._addresses)
        if taken:
            raise PoolError(f"already held: {', '.join(_sorted_ips(taken))}")

    def _adopt(
        self, iface: _Interface, plan: _Plan, carried: _Carried, now: float | None, adopted: list[str]
    ) -> None:
        """Hold the plan's addresses that ``iface`` does not hold yet."""
        fresh: list[_Address] = []
        for ip, value in plan.ips:
            if ip in iface.ips:
                continue
            addr = _Address(ip, value, iface, None, 0)
            iface.ips[ip] = addr
            iface.ip_by_value[value] = addr
            fresh.append(addr)
        for cidr, base in plan.prefixes:
            if base in iface.prefixes:
                continue
            prefix = iface.prefixes[base] = _Prefix(cidr, base)
            for offset, ip in enumerate(_prefix_ips(base)):
                addr = _Address(ip, base + offset, iface, prefix, offset)
                prefix.addresses.append(addr)
                fresh.append(addr)
        for addr in fresh:
            self._addresses[addr.ip] = addr
            adopted.append(addr.ip)
            if iface.detaching:
                addr.state = RELEASING
                self._enter(addr)
                continue
            # an address that moved (between interfaces, or into a prefix) keeps its cool-down/quarantine
            state, deadline = carried.get(addr.ip, (FREE, 0.0))
            still_cooling = state is COOLING and now is not None and deadline > now
            if not still_cooling and state is not QUARANTINED:
                state = FREE
            addr.state = FREE
            self._enter(addr)
            if state is not FREE or addr.ip in self._orphans_by_ip:
                self._settle(addr, state, deadline)

    def _drop(
        self, addr: _Address, carried: _Carried, dropped: list[str], orphaned: list[AttachmentKey]
    ) -> None:
        """Stop holding ``addr``; an assignment on it becomes orphaned."""
        self._leave(addr)
        del self._addresses[addr.ip]
        iface = addr.iface
        if addr.prefix is None:
            del iface.ips[addr.ip]
            del iface.ip_by_value[addr.value]
        carried[addr.ip] = (addr.state, addr.deadline)
        dropped.append(addr.ip)
        if addr.key is not None:
            assignment = self._assigned.pop(addr.key)
            self._add_orphan(assignment)
            orphaned.append(assignment.key)
            addr.key = None

    def _drop_prefix(
        self,
        iface: _Interface,
        prefix: _Prefix,
        carried: _Carried,
        dropped: list[str],
        orphaned: list[AttachmentKey],
    ) -> None:
        for addr in prefix.addresses:
            self._drop(addr, carried, dropped, orphaned)
        del iface.prefixes[prefix.base]

    def _drop_all(
        self, iface: _Interface, carried: _Carried, dropped: list[str], orphaned: list[AttachmentKey]
    ) -> None:
        for prefix in list(iface.prefixes.values()):
            self._drop_prefix(iface, prefix, carried, dropped, orphaned)
        for addr in list(iface.ips.values()):
            self._drop(addr, carried, dropped, orphaned)

    def _release_targets(
        self, iface: _Interface, ips: Sequence[str], prefixes: Sequence[str], *, strict: bool
    ) -> list[_Address]:
        """The held addresses named by ``ips`` (individual IPs of ``iface``) and ``prefixes`` (of
        ``iface``). ``strict``: PoolError if one is not held there; else it is skipped."""
        targets: dict[str, _Address] = {}
        missing: list[str] = []
        for text in ips:
            addr = iface.ips.get(_canonical_ip(text))
            if addr is None:
                missing.append(text)
            else:
                targets[addr.ip] = addr
        for text in prefixes:
            prefix = iface.prefixes.get(_parse_prefix(text)[1])
            if prefix is None:
                missing.append(text)
            else:
                targets.update((a.ip, a) for a in prefix.addresses)
        if strict and missing:
            raise PoolError(f"{iface.id} does not hold {', '.join(missing)}")
        return list(targets.values())


# --- helpers ----------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Plan:
    """One interface's addresses as reported, parsed and canonical: (ip, value) and (cidr, base)."""

    view: InterfaceView
    ips: tuple[tuple[str, int], ...]
    prefixes: tuple[tuple[str, int], ...]


def _plan(views: Iterable[InterfaceView]) -> list[_Plan]:
    """Parse views and check them for consistency: every address once, no prefix overlapping an IP,
    no interface's primary address among the pod-assignable ones."""
    plans: list[_Plan] = []
    ids: set[InterfaceId] = set()
    ip_values: dict[int, str] = {}
    bases: dict[int, str] = {}
    primaries: dict[int, str] = {}
    for view in views:
        if view.id in ids:
            raise PoolError(f"interface {view.id} reported twice")
        ids.add(view.id)
        ips = tuple(_parse_ip(ip) for ip in view.ips)
        prefixes = tuple(_parse_prefix(p) for p in view.prefixes)
        for ip, value in ips:
            if value in ip_values:
                raise PoolError(f"{ip} reported twice ({ip_values[value]}, {view.id})")
            ip_values[value] = view.id
        for cidr, base in prefixes:
            if base in bases:
                raise PoolError(f"prefix {cidr} reported twice ({bases[base]}, {view.id})")
            bases[base] = view.id
        if view.primary_ip:
            primaries[_parse_ip(view.primary_ip)[1]] = view.id
        plans.append(_Plan(view, ips, prefixes))
    for value, owner in ip_values.items():
        if value - value % PREFIX_SIZE in bases:
            raise PoolError(f"{ipaddress.IPv4Address(value)} ({owner}) lies inside a prefix")
    for value, owner in primaries.items():
        if value in ip_values or value - value % PREFIX_SIZE in bases:
            raise PoolError(
                f"primary address {ipaddress.IPv4Address(value)} of {owner} reported as assignable"
            )
    return plans


def _parse_ip(text: str) -> tuple[str, int]:
    value = canonical_ipv4(text)
    if value is not None:
        return text, value
    try:
        addr = ipaddress.IPv4Address(text)
    except ValueError as exc:
        raise PoolError(f"not an IPv4 address: {text!r}") from exc
    return str(addr), int(addr)


def _canonical_ip(text: str) -> str:
    if canonical_ipv4(text) is not None:
        return text
    try:
        return str(ipaddress.IPv4Address(text))
    except ValueError:
        return text


def _parse_prefix(text: str) -> tuple[str, int]:
    try:
        net = ipaddress.IPv4Network(text)
    except ValueError as exc:
        raise PoolError(f"not an IPv4 prefix: {text!r}") from exc
    if net.num_addresses != PREFIX_SIZE:
        raise PoolError(f"prefix {text} does not hold {PREFIX_SIZE} addresses")
    return str(net), int(net.network_address)


def _prefix_ips(base: int) -> list[str]:
    return [str(ipaddress.IPv4Address(base + offset)) for offset in range(PREFIX_SIZE)]


def _sorted_ips(ips: Iterable[str]) -> tuple[str, ...]:
    return tuple(sorted(ips, key=lambda ip: int(ipaddress.IPv4Address(ip))))


def _moved(assignment: Assignment, interface_id: InterfaceId) -> Assignment:
    """``assignment`` as held by ``interface_id`` (an address may come back on another interface)."""
    if assignment.interface_id == interface_id:
        return assignment
    return dataclasses.replace(assignment, interface_id=interface_id)


def _by_key(assignment: Assignment) -> AttachmentKey:
    return assignment.key


def _by_age(assignment: Assignment) -> tuple[float, AttachmentKey]:
    return (assignment.assigned_at, assignment.key)


def _addresses_of(iface: _Interface) -> Iterable[_Address]:
    yield from iface.ips.values()
    for prefix in iface.prefixes.values():
        yield from prefix.addresses


def _view_of(iface: _Interface) -> InterfaceView:
    ips = tuple(iface.ips[ip].ip for ip in sorted(iface.ips, key=lambda ip: iface.ips[ip].value))
    prefixes = tuple(iface.prefixes[base].cidr for base in sorted(iface.prefixes))
    return iface.view.with_addresses(ips, prefixes)


def _bucket(iface: _Interface, prefix: _Prefix) -> None:
    if prefix.free_mask:
        bisect.insort(iface.buckets[prefix.assigned], prefix.base)


def _unbucket(iface: _Interface, prefix: _Prefix) -> None:
    if prefix.free_mask:
        _remove_sorted(iface.buckets[prefix.assigned], prefix.base)


def _remove_sorted(values: list[int], value: int) -> None:
    del values[bisect.bisect_left(values, value)]
