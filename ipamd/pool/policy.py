"""Warm-pool policy: one pure function from (pool view, targets, limits, clock) to cloud actions.

The daemon's manager loop, the simulator and the tests all call :func:`plan`; nothing else decides
when the pool grows or shrinks. The semantics follow the reference behaviour of aws-vpc-cni's ipamd
(WARM_ENI_TARGET, WARM_IP_TARGET, MINIMUM_IP_TARGET, WARM_PREFIX_TARGET, MAX_ENI, max pods), with
the differences written down in docs/pool-policy.md. Summary:

- Three modes. *Warm-IP* (WARM_IP_TARGET or MINIMUM_IP_TARGET set): keep ``warm_ip`` addresses free
  and at least ``minimum_ip`` held. *Warm-prefix* (prefix delegation, WARM_PREFIX_TARGET > 0): keep
  ``16 * warm_prefix`` addresses free. *Warm-ENI* (otherwise): keep ``warm_eni`` interfaces' worth of
  addresses free, an interface's worth being its slots x 1 address (secondary IPs) or x 16 (prefixes).
- *available* counts addresses free now; cooling, quarantined and releasing ones do not count.
- Growth fills existing interfaces first (lowest device index), then attaches at most one new
  interface per plan; with ADDs waiting (``PoolView.waiting``) it fetches what they need on top of
  the target in the same batch; it never takes the held addresses past max pods (prefix mode: by less than one
  prefix) and never runs while growth is paused.
- Shrinking waits until the pool has neither grown nor shrunk for ``release_delay``; it detaches at
  most one entirely free, non-primary interface and releases whole free prefixes or free secondary
  IPs (never in warm-ENI mode), highest interface and highest address first. A shrink never leaves
  the pool short, so the next plan never grows back what was just released.
- Growth and shrink never share a plan; busy interfaces get no action; no interface gets two.
- Batches (IP_BATCH_SIZE, warm-IP mode with secondary IPs): growth adds the shortfall rounded up to
  a multiple of the batch; shrink releases down to the smallest multiple of the batch that still
  leaves WARM_IP_TARGET free (and MINIMUM_IP_TARGET held). Free addresses so stay between
  WARM_IP_TARGET and WARM_IP_TARGET + batch - 1 (Azure CNS's minFree/maxFree band), and one cloud
  write serves a batch of pod starts. A shrink that cooling addresses would enlarge once free waits
  for them, so a scale-down is one write.
- Interfaces that are part of the machine (``InstanceLimits.detachable_interfaces`` False: Azure
  NICs) are never detached.
- Custom networking (``WarmPoolTargets.primary_interface_pods`` False, aws-vpc-cni's
  ``GetENINeedsIP(maxIPperENI, skipPrimary=useCustomNetworking)``): the primary interface gets no
  action at all and its free addresses are not available to pods; growth fills secondary interfaces
  and attaches the first one when there is none. Pods already on the primary still count as held.
"""

from __future__ import annotations

import ipaddress
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from ipamd.pool.maxpods import max_pods as calculated_max_pods
from ipamd.pool.model import (
    PREFIX_SIZE,
    Action,
    AssignIps,
    AssignPrefixes,
    AttachInterface,
    DetachInterface,
    InstanceLimits,
    InterfaceUsage,
    PoolView,
    ReleaseIps,
    ReleasePrefixes,
    WarmPoolTargets,
    canonical_ipv4,
    canonical_number,
)

__all__ = [
    "FAILURE_BACKOFF_MAX",
    "PoolMode",
    "PoolTargetState",
    "effective_max_pods",
    "failure_backoff",
    "plan",
    "pod_interfaces",
    "targets_summary",
]

PoolMode = Literal["warm_ip", "warm_prefix", "warm_eni"]


@dataclass(frozen=True, slots=True)
class PoolTargetState:
    """Where the pool stands against its targets: what :func:`plan` decides from, for logs and metrics.

    Counts are addresses. ``short`` > 0 means the pool is low (growth wanted); ``over`` is what lies
    above the target (in warm-ENI mode only whole interfaces are ever given back, so ``over`` there is
    informative, not a release order).
    """

    mode: PoolMode
    prefix_delegation: bool  # effective: requested and supported by the instance
    slots_per_interface: int  # secondary IPs, or prefixes, one interface can hold
    addresses_per_slot: int  # 1, or 16 for a prefix
    max_interfaces: int
    max_pods: int
    interfaces: int
    held: int  # assigned + free + cooling + quarantined (releasing addresses are leaving)
    assigned: int
    available: int  # free now
    cooling: int
    target_available: int  # free addresses the mode asks for (WARM_IP, 16 x WARM_PREFIX, unit x WARM_ENI)
    target_held: int  # held addresses the mode asks for (MINIMUM_IP in warm-IP mode, else 0)
    short: int
    over: int
    headroom: int  # addresses growth may still add before the held ones reach max pods
    growth_paused: bool
    release_allowed: bool  # release_delay has passed since the last increase and the last decrease
    batch: int = 1  # addresses growth and release move in multiples of (warm-IP mode, secondary IPs)
    detachable: bool = True  # interfaces may be detached when entirely free
    primary_interface_pods: bool = True  # False: the primary interface is left out (custom networking)
    full: bool = False  # no room to grow: every pod interface's slots used, and no interface to attach

    @property
    def low(self) -> bool:
        return self.short > 0

    @property
    def interface_addresses(self) -> int:
        """A full interface's worth of addresses: the warm-ENI unit."""
        return self.slots_per_interface * self.addresses_per_slot


def effective_max_pods(targets: WarmPoolTargets, limits: InstanceLimits) -> int:
    """``MAX_PODS`` (or the Node's capacity, set into the targets), else the instance's secondary-IP
    max pods (aws-vpc-cni's ``eni-max-pods.txt``: m5.large 29), less the primary with custom networking.

    Prefix delegation does not raise this fallback: kubelet's max pods (the Node's capacity) is what
    lets a prefix-delegation node run more pods, and it arrives as ``targets.max_pods``. Taking the
    calculator's prefix maximum here (m5.large: 434) would make an idle node hold a whole interface
    of prefixes for pods kubelet will never admit.
    """
    if targets.max_pods is not None:
        return targets.max_pods
    return calculated_max_pods(
        limits,
        prefix_delegation=False,
        custom_networking=not targets.primary_interface_pods,
    )


def pod_interfaces(
    interfaces: Sequence[InterfaceUsage], targets: WarmPoolTargets | PoolTargetState
) -> list[InterfaceUsage]:
    """The interfaces new pods may get addresses of: all, or all but the primary (custom networking)."""
    return [i for i in interfaces if targets.primary_interface_pods or not i.primary]


def targets_summary(
    view: PoolView, targets: WarmPoolTargets, limits: InstanceLimits, *, now: float
) -> PoolTargetState:
    """The pool's position against its targets, computed exactly as :func:`plan` computes it.

    Without pods on the primary interface (custom networking), its addresses are neither available
    nor held, except those assigned: pods already there still count against max pods.
    """
    pd = targets.prefix_delegation and limits.prefix_delegation
    aps = PREFIX_SIZE if pd else 1
    slots = max(limits.secondary_per_interface, 0)
    max_interfaces = limits.max_interfaces
    if targets.max_eni is not None and targets.max_eni >= 1:
        max_interfaces = min(max_interfaces, targets.max_eni)
    max_pods = effective_max_pods(targets, limits)

    counted = pod_interfaces(view.interfaces, targets)
    left_out = [i for i in view.interfaces if i.primary and not targets.primary_interface_pods]
    available = sum(i.free for i in counted)
    assigned = view.assigned
    held = sum(i.total - i.releasing for i in counted) + sum(i.assigned for i in left_out)
    cooling = sum(i.cooling for i in counted)
    full = len(view.interfaces) >= max_interfaces and all(i.used_slots >= slots for i in counted)
    warm_ip, minimum_ip = max(targets.warm_ip, 0), max(targets.minimum_ip, 0)

    mode: PoolMode
    batch = 1
    if targets.warm_ip_mode:
        mode, want, floor = "warm_ip", warm_ip, minimum_ip
        batch = 1 if pd else max(targets.ip_batch, 1)
    elif pd and targets.warm_prefix > 0:
        mode, want, floor = "warm_prefix", PREFIX_SIZE * targets.warm_prefix, 0
    else:
        mode, want, floor = "warm_eni", slots * aps * max(targets.warm_eni, 0), 0

    return PoolTargetState(
        mode=mode,
        prefix_delegation=pd,
        slots_per_interface=slots,
        addresses_per_slot=aps,
        max_interfaces=max_interfaces,
        max_pods=max_pods,
        interfaces=len(view.interfaces),
        held=held,
        assigned=assigned,
        available=available,
        cooling=cooling,
        target_available=want,
        target_held=floor,
        short=_owed(_short(mode, available, held, want, floor), view.waiting, available, want),
        over=max(min(available - want, held - floor), 0),
        headroom=max(max_pods - held, 0),
        growth_paused=view.growth_paused_until is not None and now < view.growth_paused_until,
        release_allowed=all(
            last is None or now - last >= targets.release_delay
            for last in (view.last_increase_at, view.last_decrease_at)
        ),
        batch=batch,
        detachable=limits.detachable_interfaces,
        primary_interface_pods=targets.primary_interface_pods,
        full=full,
    )


def _owed(short: int, waiting: int, available: int, want: int) -> int:
    """With ADDs waiting, the pool owes them their addresses on top of its target: growth fetches
    ``waiting + want - available`` in one go (one cloud call for a burst, not one per warm target's
    worth: what makes a 1,000-node scale-up finish), within ``plan``'s usual limits."""
    if waiting <= 0:
        return short
    return max(short, waiting + want - available)


def _short(mode: PoolMode, available: int, held: int, want: int, floor: int) -> int:
    """Addresses the pool lacks to be at target; > 0 means low.

    Warm-IP: max(WARM_IP - available, MINIMUM_IP - held, 0). Otherwise ``want - available`` when
    positive, and 1 when the target is 0 and nothing is free (the reference's ``warm == 0 &&
    available == 0``).
    """
    if mode == "warm_ip":
        return max(want - available, floor - held, 0)
    if available < want:
        return want - available
    return 1 if want == 0 and available == 0 else 0


def plan(view: PoolView, targets: WarmPoolTargets, limits: InstanceLimits, *, now: float) -> list[Action]:
    """The actions that bring the pool towards its targets now; ``[]`` when there is nothing to do.

    Deterministic and total: the same arguments always give the same list (interface order in the
    view does not matter), and every view, however odd, gives a valid one.
    """
    if not view.interfaces:
        return []  # a real node always has its primary interface: nothing to plan on
    state = targets_summary(view, targets, limits, now=now)
    interfaces = sorted(view.interfaces, key=lambda i: (i.device_index, i.id))
    if state.low:
        return _grow(interfaces, state)
    if state.release_allowed:
        return _shrink(interfaces, state)
    return []


# Growth and shrink below act on ``pod_interfaces(...)`` only: with custom networking the primary
# interface is never given, nor relieved of, addresses. ``len(interfaces)`` still counts it against
# the instance's interface limit: it occupies a device index either way.


# --- growth ----------------------------------------------------------------------------------------


def _room(i: InterfaceUsage, state: PoolTargetState) -> int:
    return max(state.slots_per_interface - i.used_slots, 0)


def _grow(interfaces: Sequence[InterfaceUsage], state: PoolTargetState) -> list[Action]:
    if state.growth_paused or state.headroom <= 0:
        return []
    attached = len(interfaces)
    interfaces = pod_interfaces(interfaces, state)
    # A busy interface that still has room and is not releasing may be receiving addresses right
    # now: growing as well would cover the same shortfall twice. The next plan sees its result.
    if any(i.busy and i.releasing == 0 and _room(i, state) > 0 for i in interfaces):
        return []
    aps = state.addresses_per_slot
    whole = state.mode == "warm_eni"  # the reference adds a full interface's worth in warm-ENI mode
    shortfall = state.short
    if state.batch > 1:  # grow onto the batch grid
        shortfall = max(shortfall, _batch_keep(state, state.held, state.available) - state.held)
    budget = math.ceil(state.headroom / aps)  # slots that keep the held addresses within max pods

    def amount(room: int) -> int:
        return min(room, budget) if whole else min(room, budget, math.ceil(shortfall / aps))

    actions: list[Action] = []
    for i in interfaces:
        if shortfall <= 0 or budget <= 0:
            break
        room = _room(i, state)
        if i.busy or room == 0:
            continue
        n = amount(room)
        actions.append(AssignPrefixes(i.id, n) if state.prefix_delegation else AssignIps(i.id, n))
        shortfall -= n * aps
        budget -= n
    if (
        shortfall > 0
        and budget > 0
        and attached < state.max_interfaces
        and not any(_room(i, state) > 0 for i in interfaces if i.busy)  # a release is in flight there
    ):
        n = amount(state.slots_per_interface)
        if n > 0:
            actions.append(
                AttachInterface(prefix_count=n) if state.prefix_delegation else AttachInterface(ip_count=n)
            )
    return actions


# --- shrink ----------------------------------------------------------------------------------------


def _entirely_free(i: InterfaceUsage) -> bool:
    return i.assigned == 0 and i.cooling == 0 and i.quarantined == 0 and i.releasing == 0


def _shrink(interfaces: Sequence[InterfaceUsage], state: PoolTargetState) -> list[Action]:
    want, floor = state.target_available, state.target_held

    def still_at_target(available: int, held: int) -> bool:
        return _short(state.mode, available, held, want, floor) == 0

    actions: list[Action] = []
    available, held = state.available, state.held
    detached: InterfaceUsage | None = None
    for i in reversed(interfaces):  # highest device index first: low interfaces stay packed
        if not state.detachable or i.primary or i.busy or not _entirely_free(i):
            continue
        if still_at_target(available - i.free, held - i.total):
            detached = i
            actions.append(DetachInterface(i.id))
            available, held = available - i.free, held - i.total
            break

    if state.mode == "warm_eni":
        return actions  # the reference never releases single addresses to hold a warm-ENI target
    candidates = pod_interfaces(interfaces, state)
    rest = [i for i in reversed(candidates) if i is not detached and not i.busy]
    if state.mode == "warm_ip":
        over = max(min(available - want, held - floor), 0)
        if state.batch > 1:
            keep = _batch_keep(state, held, available)
            if state.cooling and _batch_keep(state, held, available + state.cooling) < keep:
                # Once the cooling addresses are free more can go back: wait, and release it all in
                # one write (a cloud write is what batches save) rather than one now and one later.
                return actions
            over = min(over, max(held - keep, 0))
        if state.prefix_delegation:
            actions += _release_prefixes(rest, over // PREFIX_SIZE)
        else:
            actions += _release_ips(rest, over)
    else:  # warm_prefix: keep warm_prefix entirely free prefixes, give back the rest
        free_prefixes = sum(len(i.releasable_prefixes) for i in candidates if i is not detached)
        actions += _release_prefixes(rest, free_prefixes - want // PREFIX_SIZE)
    return actions


def _batch_keep(state: PoolTargetState, held: int, available: int) -> int:
    """The smallest multiple of the batch that leaves the warm target free and the minimum held."""
    need = max(held - available + state.target_available, state.target_held)
    return state.batch * math.ceil(need / state.batch)


def _release_ips(interfaces: Sequence[InterfaceUsage], count: int) -> list[Action]:
    actions: list[Action] = []
    for i in interfaces:
        if count <= 0:
            break
        ips = tuple(sorted(set(i.releasable_ips), key=_address_key, reverse=True)[:count])
        if ips:
            actions.append(ReleaseIps(i.id, ips))
            count -= len(ips)
    return actions


def _release_prefixes(interfaces: Sequence[InterfaceUsage], count: int) -> list[Action]:
    actions: list[Action] = []
    for i in interfaces:
        if count <= 0:
            break
        prefixes = tuple(sorted(set(i.releasable_prefixes), key=_address_key, reverse=True)[:count])
        if prefixes:
            actions.append(ReleasePrefixes(i.id, prefixes))
            count -= len(prefixes)
    return actions


def _address_key(text: str) -> tuple[int, int, str]:
    """Numeric order for addresses and CIDRs (so .10 sorts above .9); anything unparsable sorts low.

    The key is ``ipaddress.ip_network(text, strict=False)``'s (version, network address); a canonical
    dotted quad, with or without a canonical prefix length, is read without ``ipaddress`` (every plan
    that releases sorts the releasable addresses: the simulator makes hundreds of thousands of plans).
    """
    fast = _quad_key(text)
    if fast is not None:
        return fast
    try:
        net = ipaddress.ip_network(text, strict=False)
    except ValueError:
        return (0, 0, text)
    return (net.version, int(net.network_address), text)


def _quad_key(text: str) -> tuple[int, int, str] | None:
    """``_address_key`` of a canonical IPv4 address or CIDR ("10.0.0.5", "10.0.0.16/28"); None for
    anything else, which ``ipaddress`` then reads."""
    head, slash, tail = text.partition("/")
    value = canonical_ipv4(head)
    if value is None:
        return None
    if slash:
        length = canonical_number(tail, 32)
        if length is None:
            return None
        value &= (0xFFFFFFFF << (32 - length)) & 0xFFFFFFFF
    return (4, value, text)


FAILURE_BACKOFF_MAX = 30.0


def failure_backoff(failures: int) -> float:
    """Seconds the pool waits before the next batch after ``failures`` failed batches in a row:
    0.5 s doubling, at most FAILURE_BACKOFF_MAX (the manager's pacing, and the simulator's)."""
    if failures <= 0:
        return 0.0
    return float(min(FAILURE_BACKOFF_MAX, 0.5 * 2 ** min(failures - 1, 10)))
