"""The warm-pool policy against the reference scenarios of aws-vpc-cni, and its invariants.

``ToyNode`` is a pure stand-in for one node's interfaces: it applies the policy's actions as the cloud
would (a fresh interface gets exactly the addresses asked for), places pods on free addresses and
puts freed ones through cool-down. ``settle`` plans and applies until the plan is empty with nothing
cooling, advancing the clock past the release delay each round, so a scenario ends in the steady
state the policy keeps. Along the way it checks that every action is valid for the node and that a
shrink is never followed by a plan that grows the pool back.
"""

from __future__ import annotations

import dataclasses
import functools
import ipaddress
import math
import random
from collections.abc import Sequence
from dataclasses import dataclass, field

import pytest
from _pytest.mark import ParameterSet
from hypothesis import given, settings
from hypothesis import strategies as st

from ipamd.pool import policy
from ipamd.pool.model import (
    PREFIX_SIZE,
    Action,
    AssignIps,
    AssignPrefixes,
    AttachInterface,
    DetachInterface,
    InstanceLimits,
    InterfaceId,
    InterfaceUsage,
    PoolView,
    ReleaseIps,
    ReleasePrefixes,
    WarmPoolTargets,
)

M5_LARGE = InstanceLimits("m5.large", 3, 10)
M5_LARGE_PD = InstanceLimits("m5.large", 3, 10, prefix_delegation=True)
T3_MEDIUM = InstanceLimits("t3.medium", 3, 6)
T3_SMALL = InstanceLimits("t3.small", 3, 4)
T3_SMALL_PD = InstanceLimits("t3.small", 3, 4, prefix_delegation=True)
P3DN = InstanceLimits("p3dn.24xlarge", 15, 50)
# An Azure VM with one NIC: 256 ipConfigurations, not detachable, AKS's 250-pod ceiling.
AZURE = InstanceLimits("Standard_D4s_v3", 1, 256, detachable_interfaces=False, max_pods=250)

GROWTH = (AssignIps, AssignPrefixes, AttachInterface)
SHRINK = (ReleaseIps, ReleasePrefixes, DetachInterface)
NOW = 1_000_000.0


# --- the toy node ----------------------------------------------------------------------------------


@dataclass
class ToyInterface:
    id: InterfaceId
    device_index: int
    ips: list[str] = field(default_factory=list)
    prefixes: list[str] = field(default_factory=list)
    issued_ips: int = 0
    issued_prefixes: int = 0

    def add_ips(self, n: int) -> None:
        base = int(ipaddress.IPv4Address(f"10.{self.device_index}.0.0"))
        for _ in range(n):
            self.issued_ips += 1
            self.ips.append(str(ipaddress.IPv4Address(base + self.issued_ips)))

    def add_prefixes(self, n: int) -> None:
        base = int(ipaddress.IPv4Address(f"10.{self.device_index}.128.0"))
        for _ in range(n):
            self.prefixes.append(f"{ipaddress.IPv4Address(base + PREFIX_SIZE * self.issued_prefixes)}/28")
            self.issued_prefixes += 1

    def addresses(self) -> list[str]:
        out = list(self.ips)
        for p in self.prefixes:
            out += [str(a) for a in ipaddress.IPv4Network(p)]
        return out


class ToyNode:
    def __init__(self, limits: InstanceLimits, targets: WarmPoolTargets) -> None:
        self.limits = limits
        self.targets = targets
        self.interfaces: list[ToyInterface] = [ToyInterface(InterfaceId("eni-0"), 0)]
        self.pods: list[str] = []  # assigned addresses, oldest first
        self.wanted = 0
        self.cooling: dict[str, float] = {}
        self.last_increase_at: float | None = None
        self.last_decrease_at: float | None = None
        self.plans: list[list[Action]] = []

    @property
    def total(self) -> int:
        return sum(len(i.addresses()) for i in self.interfaces)

    @property
    def max_interfaces(self) -> int:
        max_eni = self.targets.max_eni
        return min(self.limits.max_interfaces, max_eni) if max_eni else self.limits.max_interfaces

    def set_pods(self, wanted: int, now: float) -> None:
        self.wanted = wanted
        while len(self.pods) > wanted:
            self.cooling[self.pods.pop()] = now + self.targets.cooldown

    def tick(self, now: float) -> None:
        self.cooling = {a: t for a, t in self.cooling.items() if t > now}
        taken = set(self.pods) | set(self.cooling)
        # as the datastore: no new pod on the primary interface without primary_interface_pods
        usable = [i for i in self.interfaces if self.targets.primary_interface_pods or i.device_index != 0]
        free = [a for i in usable for a in i.addresses() if a not in taken]
        while len(self.pods) < self.wanted and free:
            self.pods.append(free.pop(0))

    def view(self) -> PoolView:
        assigned, cooling = set(self.pods), set(self.cooling)
        taken = assigned | cooling
        usages = []
        for i in self.interfaces:
            addrs = i.addresses()
            usages.append(
                InterfaceUsage(
                    id=i.id,
                    device_index=i.device_index,
                    primary=i.device_index == 0,
                    ip_slots=len(i.ips),
                    prefix_slots=len(i.prefixes),
                    assigned=sum(a in assigned for a in addrs),
                    cooling=sum(a in cooling for a in addrs),
                    free=sum(a not in taken for a in addrs),
                    quarantined=0,
                    releasing=0,
                    releasable_ips=tuple(a for a in i.ips if a not in taken),
                    releasable_prefixes=tuple(
                        p for p in i.prefixes if not any(str(a) in taken for a in ipaddress.IPv4Network(p))
                    ),
                )
            )
        return PoolView(
            interfaces=tuple(usages),
            last_increase_at=self.last_increase_at,
            last_decrease_at=self.last_decrease_at,
        )

    def apply(self, actions: list[Action], now: float) -> None:
        """Carry the actions out as the cloud would, refusing any the cloud or the pool would refuse."""
        slots = self.limits.secondary_per_interface
        by_id = {i.id: i for i in self.interfaces}
        taken = set(self.pods) | set(self.cooling)
        touched = [a.interface_id for a in actions if not isinstance(a, AttachInterface)]
        assert len(touched) == len(set(touched)), f"two actions on one interface: {actions}"
        assert sum(isinstance(a, AttachInterface) for a in actions) <= 1
        if not self.targets.primary_interface_pods:
            assert all(by_id[iid].device_index != 0 for iid in touched), f"on the primary: {actions}"
        for action in actions:
            match action:
                case AssignIps(interface_id=iid, count=n) | AssignPrefixes(interface_id=iid, count=n):
                    i = by_id[iid]
                    assert 1 <= n <= slots - len(i.ips) - len(i.prefixes), action
                    (i.add_ips if isinstance(action, AssignIps) else i.add_prefixes)(n)
                    self.last_increase_at = now
                case AttachInterface(ip_count=ips, prefix_count=prefixes):
                    assert len(self.interfaces) < self.max_interfaces, action
                    assert 1 <= ips + prefixes <= slots and 0 in (ips, prefixes), action
                    index = min(
                        set(range(len(self.interfaces) + 1)) - {i.device_index for i in self.interfaces}
                    )
                    new = ToyInterface(InterfaceId(f"eni-{index}"), index)
                    new.add_ips(ips)
                    new.add_prefixes(prefixes)
                    self.interfaces.append(new)
                    self.interfaces.sort(key=lambda i: i.device_index)
                    self.last_increase_at = now
                case ReleaseIps(interface_id=iid, ips=ips):
                    i = by_id[iid]
                    assert set(ips) <= set(i.ips) - taken, action
                    i.ips = [a for a in i.ips if a not in ips]
                    self.last_decrease_at = now
                case ReleasePrefixes(interface_id=iid, prefixes=prefixes):
                    i = by_id[iid]
                    assert set(prefixes) <= set(i.prefixes), action
                    assert not any(str(a) in taken for p in prefixes for a in ipaddress.IPv4Network(p))
                    i.prefixes = [p for p in i.prefixes if p not in prefixes]
                    self.last_decrease_at = now
                case DetachInterface(interface_id=iid):
                    i = by_id[iid]
                    assert i.device_index != 0 and not set(i.addresses()) & taken, action
                    self.interfaces.remove(i)
                    self.last_decrease_at = now

    def plan(self, now: float) -> list[Action]:
        return policy.plan(self.view(), self.targets, self.limits, now=now)

    def settle(self, now: float) -> float:
        """Plan and apply until nothing is left to do and nothing is cooling; returns the clock."""
        step = max(self.targets.release_delay, self.targets.cooldown) + 1
        for _ in range(200):
            self.tick(now)
            actions = self.plan(now)
            if not actions and not self.cooling:
                return now
            if actions:
                self.plans.append(actions)
                self.apply(actions, now)
                if any(isinstance(a, SHRINK) for a in actions):
                    # A fixed point: what was just given back is not asked for again.
                    again = self.plan(now)
                    assert not [a for a in again if isinstance(a, GROWTH)], (actions, again)
            now += step
        pytest.fail(f"no steady state after 200 rounds: {self.plans[-3:]}")


def run(limits: InstanceLimits, targets: WarmPoolTargets, *pods: int) -> ToyNode:
    """A fresh node (primary interface, no secondary addresses) taken through the pod counts in turn."""
    node = ToyNode(limits, targets)
    now = NOW
    for count in (0, *pods):
        node.set_pods(count, now)
        now = node.settle(now)
    return node


# --- reference scenarios ---------------------------------------------------------------------------

WARM_ENI_1 = WarmPoolTargets()


t = WarmPoolTargets
pd = functools.partial(WarmPoolTargets, prefix_delegation=True, max_pods=110)  # a prefix-mode node: 110 pods


def case(
    name: str, limits: InstanceLimits, targets: WarmPoolTargets, pods: int, expected: tuple[int, int]
) -> ParameterSet:
    """``expected`` is (interfaces, addresses held) in the steady state."""
    return pytest.param(limits, targets, pods, *expected, id=name)


# (limits, targets, pods) -> (interfaces, addresses held) in the steady state. The numbers are those
# the reference documents (docs/eni-and-ip-target.md and docs/prefix-and-ip-target.md in aws-vpc-cni)
# or that its formulas give for the instance; docs/pool-policy.md carries the same table.
SCENARIOS = [
    case("m5.large-warm_eni1-0pods", M5_LARGE, WARM_ENI_1, 0, (1, 9)),
    case("m5.large-warm_eni1-5pods", M5_LARGE, WARM_ENI_1, 5, (2, 18)),
    case("m5.large-warm_eni1-20pods", M5_LARGE, WARM_ENI_1, 20, (3, 27)),
    case("m5.large-warm_eni1-29pods-limit", M5_LARGE, WARM_ENI_1, 29, (3, 27)),
    case("m5.large-warm_eni0-0pods", M5_LARGE, t(warm_eni=0), 0, (1, 9)),
    case("m5.large-warm_eni0-9pods", M5_LARGE, t(warm_eni=0), 9, (2, 18)),
    case("m5.large-warm_eni2-0pods", M5_LARGE, t(warm_eni=2), 0, (2, 18)),
    case("m5.large-warm_eni2-5pods", M5_LARGE, t(warm_eni=2), 5, (3, 27)),
    case("m5.large-warm_eni3-0pods", M5_LARGE, t(warm_eni=3), 0, (3, 27)),
    case("m5.large-warm_eni3-max_eni2-0pods", M5_LARGE, t(warm_eni=3, max_eni=2), 0, (2, 18)),
    case("m5.large-warm_eni3-max_eni2-5pods", M5_LARGE, t(warm_eni=3, max_eni=2), 5, (2, 18)),
    case("m5.large-warm_eni3-max_eni2-20pods", M5_LARGE, t(warm_eni=3, max_eni=2), 20, (2, 18)),
    case("t3.medium-warm_eni1-0pods", T3_MEDIUM, WARM_ENI_1, 0, (1, 5)),
    case("t3.medium-warm_eni1-3pods", T3_MEDIUM, WARM_ENI_1, 3, (2, 10)),
    case("t3.medium-warm_eni1-8pods", T3_MEDIUM, WARM_ENI_1, 8, (3, 15)),
    case("t3.medium-warm_eni1-17pods-limit", T3_MEDIUM, WARM_ENI_1, 17, (3, 15)),
    case("t3.small-warm_eni1-0pods", T3_SMALL, WARM_ENI_1, 0, (1, 3)),
    case("t3.small-warm_eni1-5pods", T3_SMALL, WARM_ENI_1, 5, (3, 9)),
    case("t3.small-warm_eni1-9pods", T3_SMALL, WARM_ENI_1, 9, (3, 9)),
    case("p3dn-warm_eni1-0pods", P3DN, WARM_ENI_1, 0, (1, 49)),
    case("p3dn-warm_eni1-3pods", P3DN, WARM_ENI_1, 3, (2, 98)),
    case("p3dn-warm_eni1-95pods", P3DN, WARM_ENI_1, 95, (3, 147)),
    case("m5.large-warm_ip2-0pods", M5_LARGE, t(warm_ip=2), 0, (1, 2)),
    case("m5.large-warm_ip2-5pods", M5_LARGE, t(warm_ip=2), 5, (1, 7)),
    case("m5.large-warm_ip2-10pods", M5_LARGE, t(warm_ip=2), 10, (2, 12)),
    case("m5.large-warm_ip2-29pods-limit", M5_LARGE, t(warm_ip=2), 29, (3, 27)),
    case("m5.large-warm_ip16-0pods", M5_LARGE, t(warm_ip=16), 0, (2, 16)),
    case("m5.large-warm_ip16-5pods", M5_LARGE, t(warm_ip=16), 5, (3, 21)),
    case("m5.large-warm_ip16-12pods-limit", M5_LARGE, t(warm_ip=16), 12, (3, 27)),
    case("m5.large-min_ip2-0pods", M5_LARGE, t(minimum_ip=2), 0, (1, 2)),
    case("m5.large-min_ip2-5pods-capped", M5_LARGE, t(minimum_ip=2), 5, (1, 2)),
    case("m5.large-min_ip16-0pods", M5_LARGE, t(minimum_ip=16), 0, (2, 16)),
    case("m5.large-min_ip16-10pods", M5_LARGE, t(minimum_ip=16), 10, (2, 16)),
    case("m5.large-min_ip16-20pods-capped", M5_LARGE, t(minimum_ip=16), 20, (2, 16)),
    case("m5.large-min6-warm10-0pods", M5_LARGE, t(warm_ip=10, minimum_ip=6), 0, (2, 10)),
    case("m5.large-min6-warm10-5pods", M5_LARGE, t(warm_ip=10, minimum_ip=6), 5, (2, 15)),
    case("m5.large-min6-warm10-20pods", M5_LARGE, t(warm_ip=10, minimum_ip=6), 20, (3, 27)),
    case("t3.small-warm1-min1-0pods", T3_SMALL, t(warm_ip=1, minimum_ip=1), 0, (1, 1)),
    case("t3.small-warm1-min1-5pods", T3_SMALL, t(warm_ip=1, minimum_ip=1), 5, (2, 6)),
    case("t3.small-warm1-min1-9pods", T3_SMALL, t(warm_ip=1, minimum_ip=1), 9, (3, 9)),
    case("t3.small-warm2-min5-0pods", T3_SMALL, t(warm_ip=2, minimum_ip=5), 0, (2, 5)),
    case("t3.small-warm2-min5-5pods", T3_SMALL, t(warm_ip=2, minimum_ip=5), 5, (3, 7)),
    case("t3.small-warm2-min5-9pods", T3_SMALL, t(warm_ip=2, minimum_ip=5), 9, (3, 9)),
    case("p3dn-warm5-min10-0pods", P3DN, t(warm_ip=5, minimum_ip=10), 0, (1, 10)),
    case("p3dn-warm5-min10-7pods", P3DN, t(warm_ip=5, minimum_ip=10), 7, (1, 12)),
    case("p3dn-warm5-min10-15pods", P3DN, t(warm_ip=5, minimum_ip=10), 15, (1, 20)),
    case("p3dn-warm5-min10-45pods", P3DN, t(warm_ip=5, minimum_ip=10), 45, (2, 50)),
    # max pods caps growth (held addresses never pass it); the instance limits stay the hard cap
    case("m5.large-warm_eni1-max_pods12-0pods", M5_LARGE, t(max_pods=12), 0, (1, 9)),
    case("m5.large-warm_eni1-max_pods12-5pods", M5_LARGE, t(max_pods=12), 5, (2, 12)),
    case("m5.large-warm_eni1-max_pods12-12pods", M5_LARGE, t(max_pods=12), 12, (2, 12)),
    case("m5.large-warm_ip16-max_pods12-0pods", M5_LARGE, t(warm_ip=16, max_pods=12), 0, (2, 12)),
    # prefix delegation: 16 addresses a prefix, secondary_per_interface prefixes an interface
    case("t3.small-pd-warm_prefix1-0pods", T3_SMALL_PD, pd(warm_prefix=1), 0, (1, 16)),
    case("t3.small-pd-warm_prefix1-5pods", T3_SMALL_PD, pd(warm_prefix=1), 5, (1, 32)),
    case("t3.small-pd-warm_prefix1-16pods", T3_SMALL_PD, pd(warm_prefix=1), 16, (1, 32)),
    case("t3.small-pd-warm_prefix1-17pods", T3_SMALL_PD, pd(warm_prefix=1), 17, (1, 48)),
    case("t3.small-pd-warm_prefix1-58pods", T3_SMALL_PD, pd(warm_prefix=1), 58, (2, 80)),
    case("t3.small-pd-warm1-min1-0pods", T3_SMALL_PD, pd(warm_ip=1, minimum_ip=1), 0, (1, 16)),
    case("t3.small-pd-warm1-min1-5pods", T3_SMALL_PD, pd(warm_ip=1, minimum_ip=1), 5, (1, 16)),
    case("t3.small-pd-warm1-min1-17pods", T3_SMALL_PD, pd(warm_ip=1, minimum_ip=1), 17, (1, 32)),
    case("t3.small-pd-warm1-min1-58pods", T3_SMALL_PD, pd(warm_ip=1, minimum_ip=1), 58, (2, 64)),
    case("t3.small-pd-warm7-min20-0pods", T3_SMALL_PD, pd(warm_ip=7, minimum_ip=20), 0, (1, 32)),
    case("t3.small-pd-warm7-min20-17pods", T3_SMALL_PD, pd(warm_ip=7, minimum_ip=20), 17, (1, 32)),
    case("t3.small-pd-warm7-min20-58pods", T3_SMALL_PD, pd(warm_ip=7, minimum_ip=20), 58, (2, 80)),
    case("m5.large-pd-min_ip20-0pods", M5_LARGE_PD, pd(minimum_ip=20), 0, (1, 32)),
    case("m5.large-pd-min_ip20-40pods-capped", M5_LARGE_PD, pd(minimum_ip=20), 40, (1, 32)),
    case("m5.large-pd-warm_ip16-0pods", M5_LARGE_PD, pd(warm_ip=16), 0, (1, 16)),
    case("m5.large-pd-warm_ip16-20pods", M5_LARGE_PD, pd(warm_ip=16), 20, (1, 48)),
    case("m5.large-pd-warm_prefix1-100pods-max_pods", M5_LARGE_PD, pd(warm_prefix=1), 100, (1, 112)),
    case("t3.small-pd-warm_eni1-0pods", T3_SMALL_PD, pd(), 0, (1, 48)),
    case("t3.small-pd-warm_eni1-5pods", T3_SMALL_PD, pd(), 5, (2, 96)),
    # Azure defaults (WARM_IP 8, MINIMUM_IP 16, batch 16 = CNS batch 16 at 50%/150%): held addresses
    # move in batches and free ones stay in 8..23
    case("azure-defaults-0pods", AZURE, t(warm_ip=8, minimum_ip=16, ip_batch=16), 0, (1, 16)),
    case("azure-defaults-5pods", AZURE, t(warm_ip=8, minimum_ip=16, ip_batch=16), 5, (1, 16)),
    case("azure-defaults-8pods", AZURE, t(warm_ip=8, minimum_ip=16, ip_batch=16), 8, (1, 16)),
    case("azure-defaults-9pods", AZURE, t(warm_ip=8, minimum_ip=16, ip_batch=16), 9, (1, 32)),
    case("azure-defaults-30pods", AZURE, t(warm_ip=8, minimum_ip=16, ip_batch=16), 30, (1, 48)),
    case("azure-defaults-240pods-max_pods", AZURE, t(warm_ip=8, minimum_ip=16, ip_batch=16), 240, (1, 250)),
    case("azure-warm_ip5-batch10-12pods", AZURE, t(warm_ip=5, ip_batch=10), 12, (1, 20)),
    case(
        "azure-max_pods30-30pods", AZURE, t(warm_ip=8, minimum_ip=16, ip_batch=16, max_pods=30), 30, (1, 30)
    ),
    # a batch changes nothing in prefix mode (a prefix is already a batch)
    case(
        "t3.small-pd-warm1-min1-batch16-17pods",
        T3_SMALL_PD,
        pd(warm_ip=1, minimum_ip=1, ip_batch=16),
        17,
        (1, 32),
    ),
    # prefix delegation asked for on an instance without it: planned in secondary-IP mode
    case("m5.large-pd-unsupported-5pods", M5_LARGE, pd(warm_prefix=1), 5, (2, 18)),
]


@pytest.mark.parametrize(("limits", "targets", "pods", "interfaces", "addresses"), SCENARIOS)
def test_steady_state_from_a_fresh_node(
    limits: InstanceLimits, targets: WarmPoolTargets, pods: int, interfaces: int, addresses: int
) -> None:
    node = run(limits, targets, pods)
    assert (len(node.interfaces), node.total) == (interfaces, addresses)
    assert len(node.pods) == min(pods, addresses)
    assert node.plan(NOW + 10**6) == []  # the steady state is a fixed point, however late we look


@pytest.mark.parametrize(("limits", "targets", "pods", "interfaces", "addresses"), SCENARIOS)
def test_steady_state_after_a_burst(
    limits: InstanceLimits, targets: WarmPoolTargets, pods: int, interfaces: int, addresses: int
) -> None:
    """Up to many pods and back down (newest pods leave first) ends where a fresh node ends."""
    node = run(limits, targets, limits.default_max_pods + 40, pods)
    assert (len(node.interfaces), node.total) == (interfaces, addresses)


@pytest.mark.parametrize(("limits", "targets", "pods", "interfaces", "addresses"), SCENARIOS)
def test_growth_never_flaps_into_release(
    limits: InstanceLimits, targets: WarmPoolTargets, pods: int, interfaces: int, addresses: int
) -> None:
    """Going up from 0 pods to ``pods`` the pool only ever grows: nothing is released on the way."""
    node = run(limits, targets, pods)
    assert not [a for p in node.plans for a in p if isinstance(a, SHRINK)]


# --- single plans ----------------------------------------------------------------------------------


def usage(
    device_index: int,
    *,
    ips: int = 0,
    prefixes: int = 0,
    assigned: int = 0,
    cooling: int = 0,
    quarantined: int = 0,
    releasing: int = 0,
    busy: bool = False,
) -> InterfaceUsage:
    """An interface whose addresses not assigned, cooling, quarantined or releasing are free (and
    releasable, highest first being the last ones issued)."""
    held = ips + PREFIX_SIZE * prefixes
    used = assigned + cooling + quarantined + releasing
    ip_names = [f"10.{device_index}.0.{n}" for n in range(1, ips + 1)]
    prefix_names = [f"10.{device_index}.{n}.0/28" for n in range(1, prefixes + 1)]
    used_ips = min(used, ips)
    used_prefixes = math.ceil((used - used_ips) / PREFIX_SIZE)
    return InterfaceUsage(
        id=InterfaceId(f"eni-{device_index}"),
        device_index=device_index,
        primary=device_index == 0,
        ip_slots=ips,
        prefix_slots=prefixes,
        assigned=assigned,
        cooling=cooling,
        free=held - used,
        quarantined=quarantined,
        releasing=releasing,
        releasable_ips=tuple(ip_names[used_ips:]),
        releasable_prefixes=tuple(prefix_names[used_prefixes:]),
        busy=busy,
    )


def pool(
    *interfaces: InterfaceUsage,
    last_increase_at: float | None = None,
    last_decrease_at: float | None = None,
    growth_paused_until: float | None = None,
) -> PoolView:
    return PoolView(interfaces, last_increase_at, last_decrease_at, growth_paused_until)


def test_no_interfaces_no_plan() -> None:
    assert policy.plan(pool(), WarmPoolTargets(warm_ip=5), M5_LARGE, now=NOW) == []


@pytest.mark.parametrize(
    ("last_increase_at", "last_decrease_at", "released"),
    [
        pytest.param(None, None, True, id="never-changed"),
        pytest.param(NOW - 10, None, False, id="grew-10s-ago"),
        pytest.param(None, NOW - 10, False, id="shrank-10s-ago"),
        pytest.param(NOW - 30, NOW - 30, True, id="both-exactly-release_delay-ago"),
        pytest.param(NOW - 31, NOW - 29.9, False, id="shrank-just-inside-release_delay"),
    ],
)
def test_release_waits_for_release_delay_since_last_change(
    last_increase_at: float | None, last_decrease_at: float | None, released: bool
) -> None:
    view = pool(
        usage(0, ips=9, assigned=2), last_increase_at=last_increase_at, last_decrease_at=last_decrease_at
    )
    expected = [
        ReleaseIps(InterfaceId("eni-0"), ("10.0.0.9", "10.0.0.8", "10.0.0.7", "10.0.0.6", "10.0.0.5"))
    ]
    plan = policy.plan(view, WarmPoolTargets(warm_ip=2, release_delay=30.0), M5_LARGE, now=NOW)
    assert plan == (expected if released else [])


def test_growth_is_never_delayed_by_release_delay() -> None:
    view = pool(usage(0, ips=3, assigned=3), last_increase_at=NOW - 1, last_decrease_at=NOW - 1)
    plan = policy.plan(view, WarmPoolTargets(warm_ip=2), M5_LARGE, now=NOW)
    assert plan == [AssignIps(InterfaceId("eni-0"), 2)]


@pytest.mark.parametrize(
    ("paused_until", "grows"),
    [
        pytest.param(NOW + 5, False, id="paused"),
        pytest.param(NOW, True, id="pause-ends-now"),
        pytest.param(NOW - 5, True, id="pause-over"),
        pytest.param(None, True, id="never-paused"),
    ],
)
def test_growth_pause(paused_until: float | None, grows: bool) -> None:
    view = pool(usage(0, ips=9, assigned=9), growth_paused_until=paused_until)
    plan = policy.plan(view, WARM_ENI_1, M5_LARGE, now=NOW)
    assert plan == ([AttachInterface(ip_count=9)] if grows else [])


def test_growth_pause_does_not_stop_release() -> None:
    view = pool(usage(0, ips=9), growth_paused_until=NOW + 60)
    plan = policy.plan(view, WarmPoolTargets(warm_ip=2), M5_LARGE, now=NOW)
    assert plan == [ReleaseIps(InterfaceId("eni-0"), tuple(f"10.0.0.{n}" for n in range(9, 2, -1)))]


def test_cooling_addresses_do_not_count_as_available() -> None:
    """Every free address is cooling: the reference would count them and let the next pod fail."""
    view = pool(usage(0, ips=9, assigned=3, cooling=6))
    assert policy.plan(view, WarmPoolTargets(warm_ip=2), M5_LARGE, now=NOW) == [AttachInterface(ip_count=2)]
    assert policy.plan(view, WARM_ENI_1, M5_LARGE, now=NOW) == [AttachInterface(ip_count=9)]


def test_quarantined_and_releasing_addresses_do_not_count_as_available() -> None:
    view = pool(usage(0, ips=9, assigned=5, quarantined=2, releasing=2))
    assert policy.targets_summary(view, WarmPoolTargets(warm_ip=2), M5_LARGE, now=NOW).available == 0


def test_fills_the_lowest_interface_then_attaches_one() -> None:
    view = pool(usage(0, ips=9, assigned=9), usage(1, ips=4, assigned=4))
    plan = policy.plan(view, WarmPoolTargets(warm_ip=8), M5_LARGE, now=NOW)
    assert plan == [AssignIps(InterfaceId("eni-1"), 5), AttachInterface(ip_count=3)]


def test_warm_eni_fills_whole_interfaces() -> None:
    view = pool(usage(0, ips=9, assigned=9), usage(1, ips=2))
    assert policy.plan(view, WARM_ENI_1, M5_LARGE, now=NOW) == [AssignIps(InterfaceId("eni-1"), 7)]
    view = pool(usage(0, ips=9, assigned=9), usage(1, ips=2, assigned=1))  # full, eni-1 has 8 free
    assert policy.plan(view, WARM_ENI_1, M5_LARGE, now=NOW) == [
        AssignIps(InterfaceId("eni-1"), 7),
        AttachInterface(ip_count=9),
    ]


def test_at_most_one_attach_per_plan() -> None:
    view = pool(usage(0, ips=9, assigned=9))
    plan = policy.plan(view, WarmPoolTargets(warm_ip=20), M5_LARGE, now=NOW)
    assert plan == [AttachInterface(ip_count=9)]
    plan = policy.plan(view, WarmPoolTargets(warm_eni=3), M5_LARGE, now=NOW)
    assert plan == [AttachInterface(ip_count=9)]


def test_max_eni_stops_attaching() -> None:
    view = pool(usage(0, ips=9, assigned=9))
    assert policy.plan(view, WarmPoolTargets(max_eni=1), M5_LARGE, now=NOW) == []
    assert policy.plan(view, WarmPoolTargets(max_eni=5), M5_LARGE, now=NOW) == [AttachInterface(ip_count=9)]


def test_busy_interface_gets_no_action() -> None:
    full_busy = usage(0, ips=9, assigned=9, busy=True)
    view = pool(full_busy, usage(1, ips=3, assigned=3))
    assert policy.plan(view, WarmPoolTargets(warm_ip=2), M5_LARGE, now=NOW) == [
        AssignIps(InterfaceId("eni-1"), 2)
    ]
    view = pool(usage(0, ips=9, assigned=1), usage(1, ips=5, busy=True))
    assert policy.plan(view, WarmPoolTargets(warm_ip=2), M5_LARGE, now=NOW) == [
        ReleaseIps(InterfaceId("eni-0"), tuple(f"10.0.0.{n}" for n in range(9, 1, -1)))
    ]


def test_growth_waits_while_an_interface_with_room_is_busy() -> None:
    """The busy interface may be receiving addresses: growing too would cover the shortfall twice."""
    view = pool(usage(0, ips=9, assigned=9), usage(1, ips=2, assigned=2, busy=True))
    assert policy.plan(view, WarmPoolTargets(warm_ip=4), M5_LARGE, now=NOW) == []


def test_no_attach_while_a_release_frees_room() -> None:
    view = pool(usage(0, ips=9, assigned=9), usage(1, ips=6, assigned=2, releasing=4, busy=True))
    assert policy.plan(view, WarmPoolTargets(warm_ip=4), M5_LARGE, now=NOW) == []


def test_releases_highest_interface_and_highest_addresses_first() -> None:
    view = pool(usage(0, ips=12, assigned=1), usage(1, ips=3, assigned=1))
    plan = policy.plan(view, WarmPoolTargets(warm_ip=2), InstanceLimits("big", 3, 20), now=NOW)
    assert plan == [
        ReleaseIps(InterfaceId("eni-1"), ("10.1.0.3", "10.1.0.2")),
        ReleaseIps(InterfaceId("eni-0"), tuple(f"10.0.0.{n}" for n in range(12, 3, -1))),
    ]


def test_warm_ip_detaches_a_free_interface_rather_than_releasing_its_addresses() -> None:
    view = pool(usage(0, ips=9), usage(1, ips=3))
    plan = policy.plan(view, WarmPoolTargets(warm_ip=2), M5_LARGE, now=NOW)
    assert plan == [
        DetachInterface(InterfaceId("eni-1")),
        ReleaseIps(InterfaceId("eni-0"), tuple(f"10.0.0.{n}" for n in range(9, 2, -1))),
    ]


def test_minimum_ip_keeps_an_interface_it_needs() -> None:
    view = pool(usage(0, ips=9), usage(1, ips=7))
    assert policy.plan(view, WarmPoolTargets(minimum_ip=16), M5_LARGE, now=NOW) == []


FREE0, FREE1, FULL0 = usage(0, ips=9), usage(1, ips=9), usage(0, ips=9, assigned=9)


@pytest.mark.parametrize(
    ("interfaces", "detached"),
    [
        pytest.param((FREE0, FREE1, usage(2, ips=9)), "eni-2", id="highest-first"),
        pytest.param((FREE0, FREE1, usage(2, ips=9, cooling=1)), "eni-1", id="skip-cooling"),
        pytest.param((FREE0, FREE1, usage(2, ips=9, busy=True)), "eni-1", id="skip-busy"),
        pytest.param((FREE0, usage(1, ips=9, quarantined=1)), None, id="skip-quarantined"),
        pytest.param((FREE0, usage(1, ips=9, assigned=9)), None, id="primary-never"),
        pytest.param((FULL0, FREE1, usage(2, ips=9)), "eni-2", id="keep-target"),
        pytest.param((FULL0, usage(1, ips=9, assigned=1), usage(2, ips=9)), None, id="needed-for-target"),
    ],
)
def test_warm_eni_detaches_one_free_interface_and_releases_nothing_else(
    interfaces: tuple[InterfaceUsage, ...], detached: str | None
) -> None:
    plan = policy.plan(pool(*interfaces), WARM_ENI_1, M5_LARGE, now=NOW)
    assert plan == ([DetachInterface(InterfaceId(detached))] if detached else [])


def test_warm_prefix_releases_whole_free_prefixes_down_to_target() -> None:
    targets = WarmPoolTargets(prefix_delegation=True, warm_prefix=1, max_pods=110)
    view = pool(usage(0, prefixes=4, assigned=17))
    assert policy.plan(view, targets, M5_LARGE_PD, now=NOW) == [
        ReleasePrefixes(InterfaceId("eni-0"), ("10.0.4.0/28",))
    ]


def test_prefix_mode_grows_in_prefixes() -> None:
    targets = WarmPoolTargets(prefix_delegation=True, warm_ip=20, max_pods=250)
    view = pool(usage(0, prefixes=1, assigned=10))
    assert policy.plan(view, targets, M5_LARGE_PD, now=NOW) == [AssignPrefixes(InterfaceId("eni-0"), 1)]
    view = pool(usage(0, prefixes=9, assigned=140))
    assert policy.plan(view, targets, M5_LARGE_PD, now=NOW) == [AttachInterface(prefix_count=1)]


def test_prefix_delegation_unsupported_plans_secondary_ips() -> None:
    targets = WarmPoolTargets(prefix_delegation=True, warm_ip=3)
    view = pool(usage(0))
    assert policy.plan(view, targets, M5_LARGE, now=NOW) == [AssignIps(InterfaceId("eni-0"), 3)]
    assert not policy.targets_summary(view, targets, M5_LARGE, now=NOW).prefix_delegation


def test_max_pods_caps_growth() -> None:
    view = pool(usage(0, ips=9, assigned=9), usage(1, ips=2, assigned=1))
    assert policy.plan(view, WarmPoolTargets(warm_ip=5, max_pods=13), M5_LARGE, now=NOW) == [
        AssignIps(InterfaceId("eni-1"), 2)
    ]
    assert policy.plan(view, WarmPoolTargets(warm_ip=5, max_pods=11), M5_LARGE, now=NOW) == []


def test_targets_summary_describes_the_pool() -> None:
    view = pool(usage(0, ips=9, assigned=4, cooling=2), last_increase_at=NOW - 5)
    state = policy.targets_summary(view, WarmPoolTargets(warm_ip=5, minimum_ip=12), M5_LARGE, now=NOW)
    assert state == policy.PoolTargetState(
        mode="warm_ip",
        prefix_delegation=False,
        slots_per_interface=9,
        addresses_per_slot=1,
        max_interfaces=3,
        max_pods=29,
        interfaces=1,
        held=9,
        assigned=4,
        available=3,
        cooling=2,
        target_available=5,
        target_held=12,
        short=3,
        over=0,
        headroom=20,
        growth_paused=False,
        release_allowed=False,
    )
    assert state.low
    assert state.interface_addresses == 9


@pytest.mark.parametrize(
    ("targets", "limits", "mode"),
    [
        pytest.param(t(), M5_LARGE, "warm_eni", id="default"),
        pytest.param(t(minimum_ip=1), M5_LARGE, "warm_ip", id="min_ip"),
        pytest.param(pd(warm_prefix=1), M5_LARGE_PD, "warm_prefix", id="pd"),
        pytest.param(pd(warm_prefix=1, warm_ip=1), M5_LARGE_PD, "warm_ip", id="pd-warm_ip-wins"),
        pytest.param(pd(), M5_LARGE_PD, "warm_eni", id="pd-warm_eni"),
        pytest.param(pd(warm_prefix=1), M5_LARGE, "warm_eni", id="pd-unsupported"),
    ],
)
def test_mode(targets: WarmPoolTargets, limits: InstanceLimits, mode: str) -> None:
    assert policy.targets_summary(pool(usage(0)), targets, limits, now=NOW).mode == mode


# --- properties over arbitrary views ---------------------------------------------------------------


@st.composite
def interface_usages(draw: st.DrawFn, device_index: int, slots: int) -> InterfaceUsage:
    ip_slots = draw(st.integers(0, slots + 1))  # one over: views may be odder than the limits
    prefix_slots = draw(st.integers(0, 2))
    free_prefixes = draw(st.integers(0, prefix_slots))
    free_ips = draw(st.integers(0, ip_slots))
    # free addresses inside prefixes that are partly in use (each keeps at least one address)
    partial_free = draw(st.integers(0, 15 * (prefix_slots - free_prefixes)))
    in_use = ip_slots - free_ips + PREFIX_SIZE * (prefix_slots - free_prefixes) - partial_free
    assigned = draw(st.integers(0, in_use))
    cooling = draw(st.integers(0, in_use - assigned))
    quarantined = draw(st.integers(0, in_use - assigned - cooling))
    releasing = in_use - assigned - cooling - quarantined
    hosts = draw(st.lists(st.integers(1, 254), min_size=free_ips, max_size=free_ips, unique=True))
    return InterfaceUsage(
        id=InterfaceId(f"eni-{device_index}"),
        device_index=device_index,
        primary=device_index == 0,
        ip_slots=ip_slots,
        prefix_slots=prefix_slots,
        assigned=assigned,
        cooling=cooling,
        free=free_ips + PREFIX_SIZE * free_prefixes + partial_free,
        quarantined=quarantined,
        releasing=releasing,
        releasable_ips=tuple(f"10.{device_index}.0.{h}" for h in hosts),
        releasable_prefixes=tuple(f"10.{device_index}.{n + 1}.0/28" for n in range(free_prefixes)),
        busy=draw(st.integers(0, 4)) == 0,
    )


@st.composite
def situations(draw: st.DrawFn) -> tuple[PoolView, WarmPoolTargets, InstanceLimits]:
    limits = InstanceLimits("any", draw(st.integers(1, 5)), draw(st.integers(1, 12)), draw(st.booleans()))
    warm_ip_mode = draw(st.booleans())
    targets = WarmPoolTargets(
        warm_eni=draw(st.integers(0, 3)),
        warm_ip=draw(st.integers(0, 40)) if warm_ip_mode else 0,
        minimum_ip=draw(st.integers(0, 60)) if warm_ip_mode else 0,
        warm_prefix=draw(st.integers(0, 3)),
        prefix_delegation=draw(st.booleans()),
        max_eni=draw(st.none() | st.integers(0, 6)),
        max_pods=draw(st.none() | st.integers(0, 120)),
        release_delay=draw(st.sampled_from([0.0, 30.0])),
        primary_interface_pods=draw(st.booleans()),
    )
    n = draw(st.integers(1, 5))  # no interfaces at all: test_no_interfaces_no_plan
    slots = limits.secondary_per_interface
    interfaces = [draw(interface_usages(d, slots)) for d in range(n)]
    interfaces = draw(st.permutations(interfaces))
    moment = st.none() | st.floats(NOW - 60, NOW + 5)
    view = PoolView(
        interfaces=tuple(interfaces),
        last_increase_at=draw(moment),
        last_decrease_at=draw(moment),
        growth_paused_until=draw(moment),
    )
    return view, targets, limits


def completed(view: PoolView, actions: Sequence[Action], *, in_flight: bool) -> PoolView:
    """The view after a shrink plan: finished, or with its addresses still releasing."""
    detached = {a.interface_id for a in actions if isinstance(a, DetachInterface)}
    out = []
    for i in view.interfaces:
        if i.id in detached:
            continue
        ips = next((a.ips for a in actions if isinstance(a, ReleaseIps) and a.interface_id == i.id), ())
        prefixes = next(
            (a.prefixes for a in actions if isinstance(a, ReleasePrefixes) and a.interface_id == i.id), ()
        )
        gone = len(ips) + PREFIX_SIZE * len(prefixes)
        u = dataclasses.replace(
            i,
            free=i.free - gone,
            releasable_ips=tuple(x for x in i.releasable_ips if x not in ips),
            releasable_prefixes=tuple(x for x in i.releasable_prefixes if x not in prefixes),
        )
        if in_flight and gone:
            u = dataclasses.replace(u, releasing=u.releasing + gone, busy=True)
        elif gone:
            u = dataclasses.replace(
                u, ip_slots=u.ip_slots - len(ips), prefix_slots=u.prefix_slots - len(prefixes)
            )
        out.append(u)
    return dataclasses.replace(view, interfaces=tuple(out), last_decrease_at=NOW)


@settings(max_examples=300, deadline=None)
@given(situations(), st.randoms(use_true_random=False))
def test_plan_invariants(
    situation: tuple[PoolView, WarmPoolTargets, InstanceLimits], rnd: random.Random
) -> None:
    view, targets, limits = situation
    actions = policy.plan(view, targets, limits, now=NOW)
    state = policy.targets_summary(view, targets, limits, now=NOW)
    by_id = {i.id: i for i in view.interfaces}
    slots = limits.secondary_per_interface

    # deterministic, whatever the order of the interfaces in the view
    assert policy.plan(view, targets, limits, now=NOW) == actions
    shuffled = list(view.interfaces)
    rnd.shuffle(shuffled)
    assert (
        policy.plan(dataclasses.replace(view, interfaces=tuple(shuffled)), targets, limits, now=NOW)
        == actions
    )

    growth = [a for a in actions if isinstance(a, GROWTH)]
    shrink = [a for a in actions if isinstance(a, SHRINK)]
    assert not (growth and shrink)
    touched = [a.interface_id for a in actions if not isinstance(a, AttachInterface)]
    assert len(touched) == len(set(touched))
    assert all(not by_id[iid].busy for iid in touched)
    if not targets.primary_interface_pods:  # custom networking: nothing is done to the primary
        assert not [iid for iid in touched if by_id[iid].primary], actions

    attaches = [a for a in actions if isinstance(a, AttachInterface)]
    assert len(attaches) <= 1
    if attaches:
        assert len(view.interfaces) < state.max_interfaces <= limits.max_interfaces
        assert 1 <= attaches[0].ip_count + attaches[0].prefix_count <= slots
        assert (attaches[0].prefix_count > 0) == state.prefix_delegation
    if growth:
        assert state.low and not state.growth_paused
        assert state.held < state.max_pods
        added = 0
        for g in growth:
            if isinstance(g, AssignIps | AssignPrefixes):
                assert 1 <= g.count <= slots - by_id[g.interface_id].used_slots
                assert isinstance(g, AssignPrefixes) == state.prefix_delegation
                added += g.count
            else:
                added += g.ip_count + g.prefix_count
        aps = state.addresses_per_slot
        assert added * aps < state.headroom + aps  # past max pods by less than one prefix
        if state.mode != "warm_eni":
            assert added <= math.ceil(state.short / aps)  # no more than the shortfall
    if shrink:
        assert state.release_allowed and not state.low
        assert sum(isinstance(a, DetachInterface) for a in shrink) <= 1
        for r in shrink:
            i = by_id[r.interface_id]
            match r:
                case DetachInterface():
                    assert not i.primary and i.total == i.free
                case ReleaseIps(ips=ips):
                    assert ips and len(set(ips)) == len(ips) and set(ips) <= set(i.releasable_ips)
                    assert state.mode == "warm_ip"
                case ReleasePrefixes(prefixes=prefixes):
                    assert prefixes and len(set(prefixes)) == len(prefixes)
                    assert set(prefixes) <= set(i.releasable_prefixes)
        # no flapping: once the shrink is done (or while it is in flight) nothing is grown back
        for in_flight in (False, True):
            after = policy.plan(completed(view, shrink, in_flight=in_flight), targets, limits, now=NOW)
            assert not [a for a in after if isinstance(a, GROWTH)], (in_flight, after)


@settings(max_examples=60, deadline=None)
@given(
    limits=st.builds(InstanceLimits, st.just("any"), st.integers(1, 4), st.integers(2, 12), st.booleans()),
    targets=st.builds(
        WarmPoolTargets,
        warm_eni=st.integers(0, 3),
        warm_ip=st.integers(0, 20),
        minimum_ip=st.integers(0, 40),
        warm_prefix=st.integers(0, 3),
        prefix_delegation=st.booleans(),
        max_eni=st.none() | st.integers(1, 4),
        max_pods=st.none() | st.integers(1, 120),
        primary_interface_pods=st.booleans(),
    ),
    pods=st.lists(st.integers(0, 80), min_size=1, max_size=4),
)
def test_any_history_settles_without_flapping(
    limits: InstanceLimits, targets: WarmPoolTargets, pods: list[int]
) -> None:
    """Random targets and pod counts: the toy node always reaches a steady state, every action on the
    way is valid, and no shrink is followed by growth (both checked inside ``settle``)."""
    node = run(limits, targets, *pods)
    assert node.plan(NOW + 10**7) == []
    assert len(node.interfaces) <= min(limits.max_interfaces, targets.max_eni or limits.max_interfaces)


# --- batches and fixed interfaces ------------------------------------------------------------------

AZURE_DEFAULTS = WarmPoolTargets(warm_ip=8, minimum_ip=16, ip_batch=16)


@pytest.mark.parametrize(
    ("held", "assigned", "grows_by"),
    [(16, 9, 16), (16, 16, 16), (0, 0, 16), (32, 31, 16), (16, 15, 16), (10, 10, 22), (248, 248, 2)],
)
def test_batch_growth_lands_on_a_multiple_of_the_batch(held: int, assigned: int, grows_by: int) -> None:
    actions = policy.plan(pool(usage(0, ips=held, assigned=assigned)), AZURE_DEFAULTS, AZURE, now=NOW)
    assert actions == [AssignIps(InterfaceId("eni-0"), grows_by)]


@pytest.mark.parametrize(
    ("held", "assigned", "released"),
    [(32, 9, 0), (32, 8, 16), (48, 30, 0), (48, 24, 16), (64, 5, 48), (26, 5, 10), (16, 0, 0), (250, 0, 234)],
)
def test_batch_release_keeps_the_smallest_batch_multiple_that_leaves_warm_free(
    held: int, assigned: int, released: int
) -> None:
    actions = policy.plan(pool(usage(0, ips=held, assigned=assigned)), AZURE_DEFAULTS, AZURE, now=NOW)
    assert sum(len(a.ips) for a in actions if isinstance(a, ReleaseIps)) == released
    assert not [a for a in actions if isinstance(a, GROWTH)]


@given(
    held=st.integers(0, 250),
    assigned=st.integers(0, 250),
    warm=st.integers(0, 20),
    minimum=st.integers(0, 40),
    batch=st.integers(1, 32),
)
@settings(max_examples=300, deadline=None)
def test_batch_plans_never_flap(held: int, assigned: int, warm: int, minimum: int, batch: int) -> None:
    """After a shrink the next plan never grows, and after a growth the next plan never shrinks."""
    assigned = min(assigned, held)
    targets = WarmPoolTargets(warm_ip=warm, minimum_ip=minimum, ip_batch=batch, release_delay=0)
    actions = policy.plan(pool(usage(0, ips=held, assigned=assigned)), targets, AZURE, now=NOW)
    released = sum(len(a.ips) for a in actions if isinstance(a, ReleaseIps))
    grown = sum(a.count for a in actions if isinstance(a, AssignIps))
    after = held - released + grown
    again = policy.plan(pool(usage(0, ips=after, assigned=assigned)), targets, AZURE, now=NOW)
    if released:
        assert not [a for a in again if isinstance(a, GROWTH)]
    if grown:
        assert not [a for a in again if isinstance(a, SHRINK)] or after >= AZURE.default_max_pods
        assert after - assigned >= warm or after == AZURE.default_max_pods


@pytest.mark.parametrize(
    ("cooling", "released"),
    [
        (14, 0),  # once the 14 are free, 32 can go back: wait and do it in one write
        (0, 32),
        (4, 32),  # the 4 do not change what can go back: release now
    ],
)
def test_batch_release_waits_for_cooling_addresses_that_would_enlarge_it(cooling: int, released: int) -> None:
    view = pool(usage(0, ips=48, cooling=cooling))
    actions = policy.plan(view, AZURE_DEFAULTS, AZURE, now=NOW)
    assert sum(len(a.ips) for a in actions if isinstance(a, ReleaseIps)) == released
    assert not [a for a in actions if isinstance(a, GROWTH)]


def test_interfaces_that_are_part_of_the_machine_are_never_detached() -> None:
    view = pool(usage(0, ips=20, assigned=4), usage(1, ips=0))
    limits = InstanceLimits("Standard_D8s_v3", 2, 256, detachable_interfaces=False, max_pods=250)
    assert policy.plan(view, WarmPoolTargets(warm_ip=8), limits, now=NOW) == [
        ReleaseIps(InterfaceId("eni-0"), tuple(f"10.0.0.{n}" for n in range(20, 12, -1)))
    ]
    detachable = dataclasses.replace(limits, detachable_interfaces=True)
    assert DetachInterface(InterfaceId("eni-1")) in policy.plan(
        view, WarmPoolTargets(warm_ip=8), detachable, now=NOW
    )


@pytest.mark.parametrize(
    ("waiting", "expected"),
    [
        pytest.param(0, [AssignIps(InterfaceId("eni-0"), 2)], id="none-waiting"),
        pytest.param(3, [AssignIps(InterfaceId("eni-0"), 5)], id="three-waiting"),
        pytest.param(10, [AssignIps(InterfaceId("eni-0"), 6), AttachInterface(ip_count=6)], id="ten-waiting"),
        pytest.param(40, [AssignIps(InterfaceId("eni-0"), 6), AttachInterface(ip_count=9)], id="past-room"),
    ],
)
def test_growth_fetches_what_waiting_adds_need_on_top_of_the_target(
    waiting: int, expected: list[AssignIps | AttachInterface]
) -> None:
    """ADDs waiting are owed their addresses: one batch brings them and the target, instead of a warm
    target's worth per round trip (what stretches a scale-up)."""
    view = dataclasses.replace(pool(usage(0, ips=3, assigned=3)), waiting=waiting)
    assert policy.plan(view, WarmPoolTargets(warm_ip=2), M5_LARGE, now=NOW) == expected


@given(st.integers(min_value=0, max_value=200), st.integers(min_value=0, max_value=9))
def test_waiting_adds_never_take_growth_past_max_pods(waiting: int, assigned: int) -> None:
    view = dataclasses.replace(
        pool(usage(0, ips=9, assigned=9), usage(1, ips=assigned, assigned=assigned)), waiting=waiting
    )
    targets = WarmPoolTargets(warm_ip=2, max_pods=20)
    added = 0
    for action in policy.plan(view, targets, M5_LARGE, now=NOW):
        added += (
            action.count
            if isinstance(action, AssignIps)
            else (action.ip_count if isinstance(action, AttachInterface) else 0)
        )
    assert 9 + assigned + added <= max(20, 9 + assigned)


# --- the order releases are chosen in ------------------------------------------------------------


def _reference_key(text: str) -> tuple[int, int, str]:
    try:
        net = ipaddress.ip_network(text, strict=False)
    except ValueError:
        return (0, 0, text)
    return (net.version, int(net.network_address), text)


_OCTETISH = st.one_of(
    st.integers(0, 300).map(str),
    st.sampled_from(["", "00", "01", "007", "256", "1000", "-1", "+1", " 1", "1 ", "²", "٣", "0x1", "a"]),
)


@given(
    parts=st.lists(_OCTETISH, min_size=3, max_size=5),
    prefix=st.one_of(
        st.none(),
        st.integers(0, 40).map(str),
        st.sampled_from(["", "08", "032", "255.255.255.0", "0.0.0.255", "x", "33", "-1"]),
    ),
)
@settings(max_examples=2000, deadline=None)
def test_the_release_order_key_reads_ipv4_as_ipaddress_does(parts: list[str], prefix: str | None) -> None:
    """The dotted-quad fast path gives ipaddress's key for every string, canonical or not."""
    text = ".".join(parts) + ("" if prefix is None else "/" + prefix)
    assert policy._address_key(text) == _reference_key(text)


@pytest.mark.parametrize(
    "text",
    [
        "10.0.0.9",
        "10.0.0.10",
        "10.0.0.16/28",
        "10.0.0.17/28",
        "0.0.0.0/0",
        "255.255.255.255",
        "fd00::5",
        "fd00::/80",
        "10.0.0.1/32",
        "garbage",
        "",
        "1.2.3.4/",
        "1.2.3.4/255.255.0.0",
    ],
)
def test_the_release_order_key_on_known_forms(text: str) -> None:
    assert policy._address_key(text) == _reference_key(text)
