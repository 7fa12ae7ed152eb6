"""The pool without pods on the primary interface (custom networking: ``primary_interface_pods=False``).

aws-vpc-cni skips the primary ENI when it looks for an ENI that needs addresses
(``GetENINeedsIP(maxIPperENI, skipPrimary=useCustomNetworking)``) and its max-pods calculator counts
one ENI fewer. Here: every mode on the toy node of test_policy.py (whose ``tick`` never places a new
pod on the primary without primary_interface_pods, as the datastore does), single plans for the
primary's own addresses, and a property over random pod histories run through the real datastore
and policy together: nothing is ever done to the primary and no new pod ever gets its address.
"""

from __future__ import annotations

import functools
import ipaddress

import pytest
from _pytest.mark import ParameterSet
from hypothesis import given, settings
from hypothesis import strategies as st

from ipamd.errors import NoAddressAvailable
from ipamd.pool import policy
from ipamd.pool.datastore import Datastore
from ipamd.pool.model import (
    PREFIX_SIZE,
    Action,
    AssignIps,
    AssignPrefixes,
    AttachInterface,
    AttachmentKey,
    ContainerID,
    DetachInterface,
    IfName,
    InstanceLimits,
    InterfaceId,
    InterfaceView,
    PodRef,
    ReleaseIps,
    ReleasePrefixes,
    WarmPoolTargets,
)
from tests.unit.test_policy import (
    M5_LARGE,
    M5_LARGE_PD,
    NOW,
    SHRINK,
    T3_MEDIUM,
    T3_SMALL_PD,
    pool,
    run,
    usage,
)

cn = functools.partial(WarmPoolTargets, primary_interface_pods=False)
cn_pd = functools.partial(WarmPoolTargets, primary_interface_pods=False, prefix_delegation=True)
ENI0, ENI1, ENI2 = InterfaceId("eni-0"), InterfaceId("eni-1"), InterfaceId("eni-2")


def case(
    name: str, limits: InstanceLimits, targets: WarmPoolTargets, pods: int, expected: tuple[int, list[int]]
) -> ParameterSet:
    """``expected``: (pods running, addresses held per interface by device index) in the steady state."""
    return pytest.param(limits, targets, pods, *expected, id=name)


# m5.large: 3 ENIs x 9 slots, max pods (3 - 1) x 9 + 2 = 20; t3.medium 3 x 5, max pods 12; under
# prefix delegation t3.small (3 x 3 prefixes) holds at most 2 x 48 on its secondaries.
SCENARIOS = [
    case("m5.large-warm_eni1-0pods", M5_LARGE, cn(), 0, (0, [0, 9])),
    case("m5.large-warm_eni1-5pods", M5_LARGE, cn(), 5, (5, [0, 9, 9])),
    case("m5.large-warm_eni1-9pods", M5_LARGE, cn(), 9, (9, [0, 9, 9])),
    case("m5.large-warm_eni1-20pods-limit", M5_LARGE, cn(), 20, (18, [0, 9, 9])),
    case("m5.large-warm_eni0-0pods", M5_LARGE, cn(warm_eni=0), 0, (0, [0, 9])),
    case("m5.large-warm_eni0-9pods", M5_LARGE, cn(warm_eni=0), 9, (9, [0, 9, 9])),
    case("m5.large-warm_eni2-0pods", M5_LARGE, cn(warm_eni=2), 0, (0, [0, 9, 9])),
    case("m5.large-warm_eni3-max_eni2-20pods", M5_LARGE, cn(warm_eni=3, max_eni=2), 20, (9, [0, 9])),
    case("t3.medium-warm_eni1-3pods", T3_MEDIUM, cn(), 3, (3, [0, 5, 5])),
    case("t3.medium-warm_eni1-12pods-limit", T3_MEDIUM, cn(), 12, (10, [0, 5, 5])),
    case("m5.large-warm_ip2-0pods", M5_LARGE, cn(warm_ip=2), 0, (0, [0, 2])),
    case("m5.large-warm_ip2-5pods", M5_LARGE, cn(warm_ip=2), 5, (5, [0, 7])),
    case("m5.large-warm_ip2-10pods", M5_LARGE, cn(warm_ip=2), 10, (10, [0, 9, 3])),
    case("m5.large-warm_ip2-20pods-limit", M5_LARGE, cn(warm_ip=2), 20, (18, [0, 9, 9])),
    case("m5.large-warm_ip16-0pods", M5_LARGE, cn(warm_ip=16), 0, (0, [0, 9, 7])),
    case("m5.large-min_ip16-20pods-capped", M5_LARGE, cn(minimum_ip=16), 20, (16, [0, 9, 7])),
    case("m5.large-warm10-min6-5pods", M5_LARGE, cn(warm_ip=10, minimum_ip=6), 5, (5, [0, 9, 6])),
    case("m5.large-max_pods12-12pods", M5_LARGE, cn(max_pods=12), 12, (12, [0, 9, 3])),
    case(
        "m5.large-batch16-warm8-min16-9pods",
        M5_LARGE,
        cn(warm_ip=8, minimum_ip=16, ip_batch=16),
        9,
        (9, [0, 9, 9]),
    ),
    case("t3.small-pd-warm_prefix1-0pods", T3_SMALL_PD, cn_pd(warm_prefix=1), 0, (0, [0, 16])),
    case(
        "t3.small-pd-warm_prefix1-17pods", T3_SMALL_PD, cn_pd(warm_prefix=1, max_pods=110), 17, (17, [0, 48])
    ),
    case(
        "t3.small-pd-warm_prefix1-40pods",
        T3_SMALL_PD,
        cn_pd(warm_prefix=1, max_pods=110),
        40,
        (40, [0, 48, 16]),
    ),
    case(
        "t3.small-pd-warm1-min1-17pods",
        T3_SMALL_PD,
        cn_pd(warm_ip=1, minimum_ip=1, max_pods=110),
        17,
        (17, [0, 32]),
    ),
    case("t3.small-pd-warm_eni1-5pods", T3_SMALL_PD, cn_pd(max_pods=110), 5, (5, [0, 48, 48])),
    case(
        "m5.large-pd-warm_prefix1-100pods",
        M5_LARGE_PD,
        cn_pd(warm_prefix=1, max_pods=110),
        100,
        (100, [0, 112]),
    ),
    # with max pods 300 (the Node's capacity): 288 fit on the two secondary ENIs
    case(
        "m5.large-pd-warm_prefix1-300pods-limit",
        M5_LARGE_PD,
        cn_pd(warm_prefix=1, max_pods=300),
        300,
        (288, [0, 144, 144]),
    ),
    # without it, prefix delegation does not raise the default: (3 - 1) x 9 + 2 = 20, within a prefix
    case("m5.large-pd-warm_prefix1-default-max", M5_LARGE_PD, cn_pd(warm_prefix=1), 300, (32, [0, 32])),
]


@pytest.mark.parametrize(("limits", "targets", "pods", "running", "held"), SCENARIOS)
def test_steady_state_from_a_fresh_node(
    limits: InstanceLimits, targets: WarmPoolTargets, pods: int, running: int, held: list[int]
) -> None:
    node = run(limits, targets, pods)  # every action on the way is checked: none on the primary
    assert [len(i.addresses()) for i in node.interfaces] == held
    assert len(node.pods) == running
    assert node.plan(NOW + 10**6) == []


@pytest.mark.parametrize(("limits", "targets", "pods", "running", "held"), SCENARIOS)
def test_steady_state_after_a_burst(
    limits: InstanceLimits, targets: WarmPoolTargets, pods: int, running: int, held: list[int]
) -> None:
    """Up to more pods than fit and back down ends where a fresh node ends."""
    node = run(limits, targets, 400, pods)
    assert [len(i.addresses()) for i in node.interfaces] == held
    assert not [a for p in run(limits, targets, pods).plans for a in p if isinstance(a, SHRINK)]


def test_the_same_targets_with_pods_on_the_primary_use_it() -> None:
    """The flag is what moves the pods: the default keeps filling the primary first."""
    assert [len(i.addresses()) for i in run(M5_LARGE, WarmPoolTargets(), 5).interfaces] == [9, 9]
    assert [len(i.addresses()) for i in run(M5_LARGE, cn(), 5).interfaces] == [0, 9, 9]


# --- single plans ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("targets", "expected"),
    [
        pytest.param(cn(), AttachInterface(ip_count=9), id="warm_eni"),
        pytest.param(cn(warm_ip=3), AttachInterface(ip_count=3), id="warm_ip"),
        pytest.param(cn(minimum_ip=12), AttachInterface(ip_count=9), id="min_ip"),
        pytest.param(cn_pd(warm_prefix=2), AttachInterface(prefix_count=2), id="warm_prefix"),
        pytest.param(cn_pd(max_pods=200), AttachInterface(prefix_count=9), id="pd-warm_eni"),
        # default max pods 20 (prefix delegation does not raise it): two prefixes reach it
        pytest.param(cn_pd(), AttachInterface(prefix_count=2), id="pd-warm_eni-default-max"),
    ],
)
def test_a_node_with_only_its_primary_attaches_the_first_pod_interface(
    targets: WarmPoolTargets, expected: Action
) -> None:
    limits = M5_LARGE_PD if targets.prefix_delegation else M5_LARGE
    assert policy.plan(pool(usage(0)), targets, limits, now=NOW) == [expected]


def test_free_addresses_on_the_primary_are_not_available_and_never_released() -> None:
    view = pool(usage(0, ips=9), usage(1, ips=5))
    state = policy.targets_summary(view, cn(warm_ip=2), M5_LARGE, now=NOW)
    assert (state.available, state.held) == (5, 5)
    # warm-IP over target: released from eni-1 only, the primary's 9 free ones stay where they are
    assert policy.plan(view, cn(warm_ip=2), M5_LARGE, now=NOW) == [
        ReleaseIps(ENI1, ("10.1.0.5", "10.1.0.4", "10.1.0.3"))
    ]
    # with pods on the primary the same view is far over target: the primary gives back too
    with_primary = policy.plan(view, WarmPoolTargets(warm_ip=2), M5_LARGE, now=NOW)
    assert ENI0 in {a.interface_id for a in with_primary if isinstance(a, ReleaseIps)}


def test_pods_already_on_the_primary_count_against_max_pods() -> None:
    """Pods placed before custom networking was turned on keep their addresses and count as held."""
    view = pool(usage(0, ips=9, assigned=6), usage(1, ips=9, assigned=9))
    state = policy.targets_summary(view, cn(), M5_LARGE, now=NOW)
    assert (state.held, state.available, state.assigned, state.max_pods) == (15, 0, 15, 20)
    # 5 addresses of headroom left: the new ENI is asked for 5, not a full 9
    assert policy.plan(view, cn(), M5_LARGE, now=NOW) == [AttachInterface(ip_count=5)]


def test_a_full_secondary_grows_onto_the_next_secondary_not_the_primary() -> None:
    view = pool(usage(0), usage(1, ips=9, assigned=9), usage(2, ips=2))
    assert policy.plan(view, cn(warm_ip=4), M5_LARGE, now=NOW) == [AssignIps(ENI2, 2)]  # 2 free + 2


def test_a_busy_primary_does_not_hold_growth_back() -> None:
    view = pool(usage(0, busy=True), usage(1, ips=9, assigned=9))
    assert policy.plan(view, cn(warm_ip=1), M5_LARGE, now=NOW) == [AttachInterface(ip_count=1)]


def test_full_means_every_pod_interface_full() -> None:
    """The manager's "no room to grow" ignores the primary's empty slots under custom networking."""
    view = pool(usage(0), usage(1, ips=9, assigned=9), usage(2, ips=9, assigned=9))
    assert policy.targets_summary(view, cn(), M5_LARGE, now=NOW).full
    assert not policy.targets_summary(view, WarmPoolTargets(), M5_LARGE, now=NOW).full


@pytest.mark.parametrize(
    ("targets", "limits", "expected"),
    [
        pytest.param(cn(), M5_LARGE, 20, id="m5.large"),
        pytest.param(WarmPoolTargets(), M5_LARGE, 29, id="m5.large-pods-on-primary"),
        pytest.param(cn(), T3_MEDIUM, 12, id="t3.medium"),
        pytest.param(cn_pd(), M5_LARGE_PD, 20, id="m5.large-pd"),  # not raised by prefixes: kubelet's is
        pytest.param(cn_pd(), M5_LARGE, 20, id="pd-unsupported"),
        pytest.param(cn(max_pods=50), M5_LARGE, 50, id="max_pods-wins"),
    ],
)
def test_default_max_pods_is_the_secondary_ip_calculation(
    targets: WarmPoolTargets, limits: InstanceLimits, expected: int
) -> None:
    assert policy.effective_max_pods(targets, limits) == expected
    assert policy.targets_summary(pool(usage(0)), targets, limits, now=NOW).max_pods == expected


# --- property: the real datastore and policy over random pod histories ------------------------------


class Cloud:
    """The interfaces as the cloud holds them; actions applied as the cloud would, and as the
    manager records them in the datastore."""

    def __init__(self, store: Datastore, *, legacy_ips: int) -> None:
        self.store = store
        self.views: dict[InterfaceId, InterfaceView] = {}
        self.issued: dict[InterfaceId, int] = {}
        primary = self.view(0)
        self.views[primary.id] = primary.with_addresses(tuple(self.fresh_ips(primary.id, legacy_ips)), ())

    def view(self, index: int) -> InterfaceView:
        iid = InterfaceId(f"eni-{index}")
        self.issued.setdefault(iid, 0)
        return InterfaceView(iid, index, index == 0, "subnet-1", "10.0.0.0/8", f"10.{index}.255.254")

    def fresh_ips(self, iid: InterfaceId, n: int) -> list[str]:
        index = int(iid.split("-")[1])
        out = []
        for _ in range(n):
            self.issued[iid] += 1
            out.append(str(ipaddress.IPv4Address(f"10.{index}.0.0") + self.issued[iid]))
        return out

    def fresh_prefixes(self, iid: InterfaceId, n: int) -> list[str]:
        index = int(iid.split("-")[1])
        out = []
        for _ in range(n):
            self.issued[iid] += 1
            base = ipaddress.IPv4Address(f"10.{index}.128.0") + PREFIX_SIZE * self.issued[iid]
            out.append(f"{base}/28")
        return out

    def apply(self, action: Action, now: float) -> None:
        store = self.store
        match action:
            case AssignIps(interface_id=iid, count=n):
                ips = self.fresh_ips(iid, n)
                v = self.views[iid]
                self.views[iid] = v.with_addresses((*v.ips, *ips), v.prefixes)
                store.add_ips(iid, ips)
            case AssignPrefixes(interface_id=iid, count=n):
                prefixes = self.fresh_prefixes(iid, n)
                v = self.views[iid]
                self.views[iid] = v.with_addresses(v.ips, (*v.prefixes, *prefixes))
                store.add_prefixes(iid, prefixes)
            case AttachInterface(ip_count=ips, prefix_count=prefixes):
                index = min(set(range(8)) - {v.device_index for v in self.views.values()})
                new = self.view(index)
                new = new.with_addresses(
                    tuple(self.fresh_ips(new.id, ips)), tuple(self.fresh_prefixes(new.id, prefixes))
                )
                self.views[new.id] = new
                store.add_interface(new, now=now)
            case ReleaseIps(interface_id=iid, ips=ips):
                store.begin_release(iid, ips=ips, now=now)
                v = self.views[iid]
                self.views[iid] = v.with_addresses(tuple(i for i in v.ips if i not in ips), v.prefixes)
                store.finish_release(iid, ips=ips)
            case ReleasePrefixes(interface_id=iid, prefixes=prefixes):
                store.begin_release(iid, prefixes=prefixes, now=now)
                v = self.views[iid]
                self.views[iid] = v.with_addresses(v.ips, tuple(p for p in v.prefixes if p not in prefixes))
                store.finish_release(iid, prefixes=prefixes)
            case DetachInterface(interface_id=iid):
                store.begin_detach(iid, now=now)
                del self.views[iid]
                store.finish_detach(iid)


def _key(n: int) -> AttachmentKey:
    return AttachmentKey("net", ContainerID(f"c{n}"), IfName("eth0"))


@settings(max_examples=150, deadline=None)
@given(
    limits=st.builds(InstanceLimits, st.just("any"), st.integers(1, 4), st.integers(2, 10), st.booleans()),
    targets=st.builds(
        WarmPoolTargets,
        warm_eni=st.integers(0, 2),
        warm_ip=st.integers(0, 12),
        minimum_ip=st.integers(0, 20),
        warm_prefix=st.integers(0, 2),
        prefix_delegation=st.booleans(),
        max_eni=st.none() | st.integers(1, 4),
        max_pods=st.none() | st.integers(1, 60),
        cooldown=st.sampled_from([0.0, 30.0]),
        release_delay=st.sampled_from([0.0, 30.0]),
        ip_batch=st.sampled_from([1, 4]),
        primary_interface_pods=st.just(False),
    ),
    legacy=st.integers(0, 3),
    steps=st.lists(
        st.tuples(st.sampled_from(["add", "del", "plan", "wait"]), st.integers(0, 40)), max_size=60
    ),
)
def test_no_action_on_the_primary_and_no_new_pod_on_its_addresses(
    limits: InstanceLimits, targets: WarmPoolTargets, legacy: int, steps: list[tuple[str, int]]
) -> None:
    now = NOW
    store = Datastore(cooldown=targets.cooldown)  # pods were on the primary before: some still are
    cloud = Cloud(store, legacy_ips=max(legacy, 1))
    store.sync_interfaces(list(cloud.views.values()), now=now)
    primary_ips = set(cloud.views[ENI0].ips)
    old = {_key(1000 + n) for n in range(legacy)}
    for k in sorted(old):
        store.assign(k, PodRef(), netns="ns", now=now)
    store.primary_interface_pods = False  # custom networking turned on

    for op, n in steps:
        if op == "add":
            try:
                got = store.assign(_key(n), PodRef(), netns="ns", now=now)
            except NoAddressAvailable:
                continue
            assert got.ip not in primary_ips or got.key in old
            assert got.interface_id != ENI0 or got.key in old
        elif op == "del":
            store.unassign(_key(n), now=now)
            old.discard(_key(n))
        elif op == "plan":
            actions = policy.plan(store.view(now=now), targets, limits, now=now)
            touched = {a.interface_id for a in actions if not isinstance(a, AttachInterface)}
            assert ENI0 not in touched, actions
            for action in actions:
                cloud.apply(action, now)
        else:
            now += 31.0
        # the primary keeps exactly what it had: nothing added, nothing taken away
        assert set(cloud.views[ENI0].ips) == primary_ips and cloud.views[ENI0].prefixes == ()
    for a in store.assignments():
        assert a.interface_id != ENI0 or a.key in old


# --- settings ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("value", "primary_pods"), [("true", False), ("false", True), (None, True)])
def test_custom_networking_setting_takes_pods_off_the_primary(value: str | None, primary_pods: bool) -> None:
    from ipamd.config import Settings

    env = {"CLOUD_PROVIDER": "aws"}
    if value is not None:
        env["AWS_VPC_K8S_CNI_CUSTOM_NETWORK_CFG"] = value
    assert Settings.from_env(env).targets().primary_interface_pods is primary_pods
