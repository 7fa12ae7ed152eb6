"""The datastore: every method against tables of cases, then random sequences against its invariants.

Time is an epoch float passed in (``T0`` onwards); cool-downs are ``COOLDOWN`` seconds unless a case
says otherwise. Interface ``eni-n`` has device index n and the primary address 10.1.0.n (never among
its pod-assignable addresses).
"""

from __future__ import annotations

import dataclasses
import ipaddress
from collections.abc import Callable, Sequence

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from ipamd.errors import NoAddressAvailable, PoolError
from ipamd.pool.datastore import AddressState, Datastore, RestoreReport, SyncReport
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
    PoolStats,
)

T0 = 1_700_000_000.0
COOLDOWN = 30.0
POD = PodRef("default", "web", "uid-1")
FREE = AddressState.FREE
ASSIGNED = AddressState.ASSIGNED
COOLING = AddressState.COOLING
QUARANTINED = AddressState.QUARANTINED
RELEASING = AddressState.RELEASING


def iface(
    n: int,
    ips: Sequence[str] = (),
    prefixes: Sequence[str] = (),
    *,
    device_index: int | None = None,
    primary: bool | None = None,
) -> InterfaceView:
    return InterfaceView(
        id=InterfaceId(f"eni-{n}"),
        device_index=n if device_index is None else device_index,
        primary=n == 0 if primary is None else primary,
        subnet_id="subnet-1",
        subnet_cidr="10.0.0.0/8",
        primary_ip=f"10.1.0.{n}",
        ips=tuple(ips),
        prefixes=tuple(prefixes),
        mac=f"02:00:00:00:00:{n:02x}",
    )


def eni(n: int) -> InterfaceId:
    return InterfaceId(f"eni-{n}")


def key(container: str, *, network: str = "net", ifname: str = "eth0") -> AttachmentKey:
    return AttachmentKey(network, ContainerID(container), IfName(ifname))


def store(*views: InterfaceView, cooldown: float = COOLDOWN) -> Datastore:
    ds = Datastore(cooldown=cooldown)
    ds.sync_interfaces(views, now=T0)
    return ds


def add(ds: Datastore, container: str, *, now: float = T0, network: str = "net") -> Assignment:
    return ds.assign(key(container, network=network), POD, netns=f"/var/run/netns/{container}", now=now)


def ips(base: str, count: int) -> list[str]:
    start = ipaddress.IPv4Address(base)
    return [str(start + n) for n in range(count)]


def state(ds: Datastore, ip: str, now: float = T0) -> AddressState | None:
    return ds.address_state(ip, now=now)


# --- construction -----------------------------------------------------------------------------------


def test_negative_cooldown_is_refused() -> None:
    with pytest.raises(ValueError, match="cooldown"):
        Datastore(cooldown=-1)


def test_empty_datastore_reads_empty() -> None:
    ds = Datastore(cooldown=COOLDOWN)
    assert ds.stats(now=T0) == PoolStats(0, 0, 0, 0, 0, 0)
    assert ds.view(now=T0).interfaces == ()
    assert ds.interfaces() == []
    assert ds.assignments() == []
    assert ds.snapshot() == PoolSnapshot()


# --- assign: choice order -----------------------------------------------------------------------------


def _fill_then_free(ds: Datastore, fill: int, free: int) -> None:
    """Assign c0..c{fill-1}, then unassign c0..c{free-1} at T0."""
    for n in range(fill):
        add(ds, f"c{n}")
    for n in range(free):
        ds.unassign(key(f"c{n}"), now=T0)


CHOICE_CASES = [
    pytest.param(
        [iface(1, ["10.0.1.5"]), iface(0, ["10.0.0.9"])], None, "10.0.0.9", id="lowest-device-index"
    ),
    pytest.param(
        [iface(0, ["10.0.0.9"], device_index=1), iface(1, ["10.0.1.5"], device_index=0, primary=True)],
        None,
        "10.0.1.5",
        id="device-index-not-interface-id",
    ),
    pytest.param([iface(0, ["10.0.0.10", "10.0.0.9"])], None, "10.0.0.9", id="numeric-not-text-order"),
    pytest.param(
        [iface(0, ["10.0.0.200"], ["10.0.0.0/28"])], None, "10.0.0.200", id="individual-ip-before-prefix"
    ),
    pytest.param(
        [iface(0, [], ["10.0.0.16/28", "10.0.0.0/28"])], None, "10.0.0.0", id="prefixes-tied-lowest-address"
    ),
    pytest.param(
        [iface(0, [], ["10.0.0.0/28", "10.0.0.16/28"])],
        lambda ds: _fill_then_free(ds, 17, 16),
        "10.0.0.17",
        id="packing-prefers-most-assigned-prefix",
    ),
    pytest.param(
        [iface(0, [], ["10.0.0.0/28", "10.0.0.16/28"])],
        lambda ds: _fill_then_free(ds, 17, 15),
        "10.0.0.0",
        id="packing-tie-lowest-address",
    ),
    pytest.param(
        [iface(0, ["10.0.0.1"]), iface(1, ["10.0.1.1"])],
        lambda ds: add(ds, "first"),
        "10.0.1.1",
        id="next-interface-when-lower-is-full",
    ),
    pytest.param(
        [iface(0, ["10.0.0.1", "10.0.0.2"])],
        lambda ds: ds.begin_release(eni(0), ips=["10.0.0.1"]),
        "10.0.0.2",
        id="never-releasing",
    ),
    pytest.param(
        [iface(0, ["10.0.0.1"]), iface(1, ["10.0.1.1"])],
        lambda ds: (ds.quarantine_unassigned(now=T0), ds.release_quarantined("10.0.1.1", now=T0 - COOLDOWN)),
        "10.0.1.1",
        id="never-quarantined",
    ),
    pytest.param(
        [iface(0, ["10.0.0.1", "10.0.0.2"]), iface(1, ["10.0.1.1"])],
        lambda ds: (
            add(ds, "a"),
            ds.sync_interfaces([iface(0, ["10.0.0.2"]), iface(1, ["10.0.1.1"])], now=T0),
        ),
        "10.0.0.2",
        id="address-of-an-orphan-gone",
    ),
]


@pytest.mark.parametrize(("views", "setup", "expected"), CHOICE_CASES)
def test_assign_choice_order(
    views: list[InterfaceView], setup: Callable[[Datastore], object] | None, expected: str
) -> None:
    ds = store(*views, cooldown=0)
    if setup is not None:
        setup(ds)
    assert add(ds, "new").ip == expected


def test_device_index_of_the_assigned_interface() -> None:
    ds = store(iface(0), iface(2, ips("10.0.2.1", 2), device_index=5))
    a = add(ds, "c1")
    assert a.interface_id == eni(2)
    assert ds.device_index(a.interface_id) == 5
    assert ds.device_index(InterfaceId("eni-missing")) is None


def test_assign_skips_cooling_address() -> None:
    ds = store(iface(0, ["10.0.0.1", "10.0.0.2"]))
    add(ds, "a")
    ds.unassign(key("a"), now=T0)
    assert add(ds, "b", now=T0 + 1).ip == "10.0.0.2"
    assert ds.cooldown_overrides == 0


def test_assign_records_everything() -> None:
    ds = store(iface(0, ["10.0.0.1"]))
    got = ds.assign(key("c1", network="k8s"), POD, netns="/var/run/netns/cni-1", now=T0 + 5)
    assert got == Assignment(
        key("c1", network="k8s"), "10.0.0.1", eni(0), POD, T0 + 5, "/var/run/netns/cni-1"
    )
    assert ds.get(key("c1", network="k8s")) == got
    assert state(ds, "10.0.0.1") is ASSIGNED


def test_assign_is_idempotent() -> None:
    ds = store(iface(0, ["10.0.0.1", "10.0.0.2"]))
    first = add(ds, "a")
    again = ds.assign(key("a"), PodRef("other", "pod", "x"), netns="/elsewhere", now=T0 + 100)
    assert again is first
    assert ds.stats(now=T0).assigned == 1


def test_assign_is_idempotent_for_an_orphan() -> None:
    ds = store(iface(0, ["10.0.0.1", "10.0.0.2"]))
    first = add(ds, "a")
    ds.sync_interfaces([iface(0, ["10.0.0.2"])], now=T0)
    assert add(ds, "a", now=T0 + 1) is first
    assert ds.stats(now=T0 + 1).assigned == 0
    assert state(ds, "10.0.0.2") is FREE


@pytest.mark.parametrize(
    "setup",
    [
        pytest.param(lambda ds: None, id="no-interfaces"),
        pytest.param(lambda ds: ds.sync_interfaces([iface(0)], now=T0), id="interface-without-addresses"),
        pytest.param(
            lambda ds: (ds.sync_interfaces([iface(0, ["10.0.0.1"])], now=T0), add(ds, "a")), id="all-assigned"
        ),
        pytest.param(
            lambda ds: (
                ds.sync_interfaces([iface(0, ["10.0.0.1"])], now=T0),
                ds.quarantine_unassigned(now=T0),
            ),
            id="all-quarantined",
        ),
        pytest.param(
            lambda ds: (
                ds.sync_interfaces([iface(0, ["10.0.0.1"])], now=T0),
                ds.begin_release(eni(0), ips=["10.0.0.1"]),
            ),
            id="all-releasing",
        ),
        pytest.param(
            lambda ds: (
                ds.sync_interfaces([iface(0), iface(1, ["10.0.1.1"])], now=T0),
                ds.begin_detach(eni(1)),
            ),
            id="all-detaching",
        ),
    ],
)
def test_assign_raises_when_nothing_is_assignable(setup: Callable[[Datastore], object]) -> None:
    ds = Datastore(cooldown=COOLDOWN)
    setup(ds)
    with pytest.raises(NoAddressAvailable):
        add(ds, "new")
    assert ds.get(key("new")) is None
    assert ds.cooldown_overrides == 0


# --- cool-down ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("elapsed", "expected"),
    [
        pytest.param(0.0, COOLING, id="just-freed"),
        pytest.param(COOLDOWN - 0.001, COOLING, id="just-before-deadline"),
        pytest.param(COOLDOWN, FREE, id="at-deadline"),
        pytest.param(COOLDOWN + 100, FREE, id="long-after"),
    ],
)
def test_cooldown_expires_with_injected_clock(elapsed: float, expected: AddressState) -> None:
    ds = store(iface(0, ["10.0.0.1"]))
    add(ds, "a")
    ds.unassign(key("a"), now=T0)
    assert state(ds, "10.0.0.1", T0 + elapsed) is expected
    s = ds.stats(now=T0 + elapsed)
    assert (s.cooling, s.available) == ((1, 0) if expected is COOLING else (0, 1))


def test_cooldown_expired_address_is_handed_out_without_override() -> None:
    ds = store(iface(0, ["10.0.0.1"]))
    add(ds, "a")
    ds.unassign(key("a"), now=T0)
    assert add(ds, "b", now=T0 + COOLDOWN).ip == "10.0.0.1"
    assert ds.cooldown_overrides == 0


def test_cooling_fallback_takes_earliest_deadline_and_counts() -> None:
    ds = store(iface(0, ["10.0.0.1", "10.0.0.2", "10.0.0.3"]))
    for c in ("a", "b", "c"):
        add(ds, c)
    ds.unassign(key("b"), now=T0 + 1)  # 10.0.0.2 cools until T0+31
    ds.unassign(key("a"), now=T0 + 2)  # 10.0.0.1 cools until T0+32
    assert add(ds, "d", now=T0 + 3).ip == "10.0.0.2"
    assert ds.cooldown_overrides == 1
    assert add(ds, "e", now=T0 + 3).ip == "10.0.0.1"
    assert ds.cooldown_overrides == 2
    with pytest.raises(NoAddressAvailable):
        add(ds, "f", now=T0 + 3)
    assert ds.cooldown_overrides == 2


def test_cooling_fallback_is_not_used_while_a_free_address_exists() -> None:
    ds = store(iface(0, ["10.0.0.1"]), iface(5, ["10.0.5.1"]))
    add(ds, "a")
    ds.unassign(key("a"), now=T0)
    assert add(ds, "b", now=T0 + 1).ip == "10.0.5.1"
    assert ds.cooldown_overrides == 0


# --- assign without pods on the primary interface (custom networking) ---------------------------------


def _no_primary_pods(*views: InterfaceView, cooldown: float = COOLDOWN) -> Datastore:
    ds = Datastore(cooldown=cooldown, primary_interface_pods=False)
    ds.sync_interfaces(views, now=T0)
    return ds


def test_without_primary_pods_assign_skips_the_primary() -> None:
    ds = _no_primary_pods(iface(0, ["10.0.0.1"], ["10.0.0.16/28"]), iface(1, ["10.0.1.7"]))
    got = add(ds, "a")
    assert (got.ip, got.interface_id) == ("10.0.1.7", eni(1))
    with pytest.raises(NoAddressAvailable):
        add(ds, "b")  # 17 free addresses on the primary, none for a new pod
    assert state(ds, "10.0.0.1") is FREE


def test_without_primary_pods_the_cooling_fallback_skips_the_primary() -> None:
    ds = _no_primary_pods(iface(0, ["10.0.0.1"]), iface(1, ["10.0.1.1"]))
    ds.primary_interface_pods = True
    add(ds, "on-primary")  # placed before custom networking was turned on
    add(ds, "on-secondary")
    ds.primary_interface_pods = False
    ds.unassign(key("on-primary"), now=T0)  # cools until T0+30: the earliest deadline
    ds.unassign(key("on-secondary"), now=T0 + 5)  # cools until T0+35
    assert add(ds, "new", now=T0 + 6).ip == "10.0.1.1"
    assert ds.cooldown_overrides == 1
    with pytest.raises(NoAddressAvailable):
        add(ds, "newer", now=T0 + 6)
    assert ds.next_cooldown_deadline(now=T0 + 6) is None  # the primary's ending changes nothing for pods


def test_without_primary_pods_an_address_already_assigned_there_stays_with_its_pod() -> None:
    ds = store(iface(0, ["10.0.0.1", "10.0.0.2"]), iface(1, ["10.0.1.1"]))
    old = add(ds, "old")
    snap = ds.snapshot(now=T0)
    fresh = _no_primary_pods(*ds.interfaces())
    assert fresh.restore(snap, now=T0).restored == 1  # a restart keeps the pod where it is
    assert add(fresh, "old") == old and old.interface_id == eni(0)  # ADD again: the same answer
    assert add(fresh, "new").interface_id == eni(1)
    fresh.unassign(key("old"), now=T0)
    with pytest.raises(NoAddressAvailable):
        add(fresh, "newer", now=T0 + COOLDOWN)  # its address went back to the primary's free ones
    assert state(fresh, "10.0.0.1", now=T0 + COOLDOWN) is FREE


def test_zero_cooldown_frees_at_once() -> None:
    ds = store(iface(0, ["10.0.0.1"]), cooldown=0)
    add(ds, "a")
    ds.unassign(key("a"), now=T0)
    assert state(ds, "10.0.0.1") is FREE
    assert ds.snapshot().cooling == ()


def test_next_cooldown_deadline() -> None:
    ds = store(iface(0, ["10.0.0.1", "10.0.0.2"]))
    assert ds.next_cooldown_deadline(now=T0) is None
    add(ds, "a")
    add(ds, "b")
    ds.unassign(key("b"), now=T0 + 5)
    ds.unassign(key("a"), now=T0 + 1)
    assert ds.next_cooldown_deadline(now=T0 + 6) == T0 + 1 + COOLDOWN
    assert ds.next_cooldown_deadline(now=T0 + 1 + COOLDOWN) == T0 + 5 + COOLDOWN
    assert ds.next_cooldown_deadline(now=T0 + 5 + COOLDOWN) is None


# --- unassign, get, assignments, find_by_ip -----------------------------------------------------------


def test_unassign_returns_the_assignment_and_cools_its_address() -> None:
    ds = store(iface(0, ["10.0.0.1"]))
    got = add(ds, "a")
    assert ds.unassign(key("a"), now=T0 + 2) == got
    assert ds.get(key("a")) is None
    assert ds.snapshot().cooling == (("10.0.0.1", T0 + 2 + COOLDOWN),)


@pytest.mark.parametrize(
    "setup",
    [
        pytest.param(lambda ds: None, id="never-assigned"),
        pytest.param(lambda ds: (add(ds, "a"), ds.unassign(key("a"), now=T0)), id="already-deleted"),
        pytest.param(lambda ds: add(ds, "a", network="other"), id="same-container-other-network"),
    ],
)
def test_unassign_unknown_key_returns_none(setup: Callable[[Datastore], object]) -> None:
    ds = store(iface(0, ["10.0.0.1", "10.0.0.2"]))
    setup(ds)
    before = ds.snapshot()
    assert ds.unassign(key("a"), now=T0 + 1) is None
    assert ds.snapshot() == before


def test_unassign_orphan_just_drops_it() -> None:
    ds = store(iface(0, ["10.0.0.1", "10.0.0.2"]))
    got = add(ds, "a")
    ds.sync_interfaces([iface(0, ["10.0.0.2"])], now=T0)
    assert ds.get(key("a")) == got
    assert ds.unassign(key("a"), now=T0) == got
    assert ds.get(key("a")) is None
    assert ds.orphaned() == []
    assert ds.stats(now=T0) == PoolStats(1, 0, 1, 0, 0, 1)


def test_assignments_sorted_by_key_orphans_included() -> None:
    ds = store(iface(0, ["10.0.0.1", "10.0.0.2", "10.0.0.3"]))
    for c, net in (("b", "net"), ("a", "z-net"), ("a", "net")):
        add(ds, c, network=net)
    ds.sync_interfaces([iface(0, ["10.0.0.2", "10.0.0.3"])], now=T0)  # "b" on 10.0.0.1 is orphaned
    assert [a.key for a in ds.assignments()] == [key("a"), key("b"), key("a", network="z-net")]
    assert [a.key for a in ds.orphaned()] == [key("b")]


def test_find_by_ip() -> None:
    ds = store(iface(0, ["10.0.0.1", "10.0.0.2"]))
    a = add(ds, "a")
    b = add(ds, "b")
    ds.sync_interfaces([iface(0, ["10.0.0.1"])], now=T0)
    assert ds.find_by_ip("10.0.0.1") == a
    assert ds.find_by_ip("10.0.0.2") == b  # orphaned: still found
    assert ds.find_by_ip("10.0.0.3") is None
    assert ds.find_by_ip("not-an-ip") is None


# --- sync_interfaces ----------------------------------------------------------------------------------


def test_sync_adopts_interfaces_ips_and_prefixes_free() -> None:
    ds = Datastore(cooldown=COOLDOWN)
    report = ds.sync_interfaces([iface(1, ["10.0.1.1"], ["10.0.2.0/28"]), iface(0, ["10.0.0.1"])], now=T0)
    assert report.added_interfaces == (eni(0), eni(1))
    assert report.removed_interfaces == ()
    assert report.added_ips == ("10.0.0.1", "10.0.1.1", *ips("10.0.2.0", 16))
    assert report.lost_assigned == ()
    assert ds.stats(now=T0) == PoolStats(18, 0, 18, 0, 0, 2)
    assert [v.id for v in ds.interfaces()] == [eni(0), eni(1)]


def test_sync_with_the_same_views_changes_nothing() -> None:
    views = [iface(0, ["10.0.0.1", "10.0.0.2"]), iface(1, [], ["10.0.1.0/28"])]
    ds = store(*views)
    add(ds, "a")
    add(ds, "b")
    ds.unassign(key("b"), now=T0)
    ds.begin_release(eni(1), prefixes=["10.0.1.0/28"])
    before = (ds.snapshot(), ds.view(now=T0))
    assert ds.sync_interfaces(views, now=T0) == SyncReport()
    assert (ds.snapshot(), ds.view(now=T0)) == before


def test_sync_removes_what_the_cloud_no_longer_reports() -> None:
    ds = store(iface(0, ["10.0.0.1", "10.0.0.2"]), iface(1, ["10.0.1.1"], ["10.0.2.0/28"]))
    report = ds.sync_interfaces([iface(0, ["10.0.0.2"])], now=T0)
    assert report.removed_interfaces == (eni(1),)
    assert report.removed_ips == ("10.0.0.1", "10.0.1.1", *ips("10.0.2.0", 16))
    assert report.added_ips == ()
    assert ds.stats(now=T0) == PoolStats(1, 0, 1, 0, 0, 1)
    assert ds.interface(eni(1)) is None


def test_sync_orphans_an_assigned_address_that_disappears() -> None:
    ds = store(iface(0, ["10.0.0.1", "10.0.0.2"]))
    got = add(ds, "a")
    report = ds.sync_interfaces([iface(0, ["10.0.0.2"])], now=T0)
    assert report.lost_assigned == (got,)
    assert report.removed_ips == ("10.0.0.1",)
    assert ds.get(key("a")) == got
    assert ds.stats(now=T0) == PoolStats(1, 0, 1, 0, 0, 1)
    assert add(ds, "b").ip == "10.0.0.2"


def test_sync_orphans_assignments_of_a_removed_interface() -> None:
    ds = store(iface(0), iface(1, ["10.0.1.1"]))
    got = add(ds, "a")
    report = ds.sync_interfaces([iface(0)], now=T0)
    assert report.lost_assigned == (got,)
    assert ds.orphaned() == [got]


def test_sync_reassigns_a_reappearing_address_to_its_orphan() -> None:
    ds = store(iface(0, ["10.0.0.1"]))
    got = add(ds, "a")
    ds.sync_interfaces([iface(0)], now=T0)
    report = ds.sync_interfaces([iface(0, ["10.0.0.1"])], now=T0 + 10)
    assert report.added_ips == ("10.0.0.1",)
    assert ds.get(key("a")) == got
    assert ds.orphaned() == []
    assert state(ds, "10.0.0.1") is ASSIGNED
    assert ds.stats(now=T0 + 10).assigned == 1


def test_sync_reassigns_an_orphan_on_the_interface_that_now_holds_it() -> None:
    ds = store(iface(0, ["10.0.0.1"]), iface(1))
    got = add(ds, "a")
    ds.sync_interfaces([iface(0), iface(1)], now=T0)
    ds.sync_interfaces([iface(0), iface(1, ["10.0.0.1"])], now=T0)
    assert ds.get(key("a")) == dataclasses.replace(got, interface_id=eni(1))


def test_sync_moves_an_assigned_address_between_interfaces_without_losing_it() -> None:
    ds = store(iface(0, ["10.0.0.1"]), iface(1))
    got = add(ds, "a")
    report = ds.sync_interfaces([iface(0), iface(1, ["10.0.0.1"])], now=T0)
    assert report == SyncReport()
    assert ds.get(key("a")) == dataclasses.replace(got, interface_id=eni(1))
    assert ds.orphaned() == []


@pytest.mark.parametrize(
    ("setup", "expected"),
    [
        pytest.param(lambda ds: (add(ds, "a"), ds.unassign(key("a"), now=T0)), COOLING, id="cooling"),
        pytest.param(lambda ds: ds.quarantine_unassigned(now=T0), QUARANTINED, id="quarantined"),
        pytest.param(lambda ds: ds.begin_release(eni(0), ips=["10.0.0.1"]), RELEASING, id="releasing"),
    ],
)
def test_sync_keeps_the_state_of_addresses_that_remain(
    setup: Callable[[Datastore], object], expected: AddressState
) -> None:
    ds = store(iface(0, ["10.0.0.1"]))
    setup(ds)
    ds.sync_interfaces([iface(0, ["10.0.0.1", "10.0.0.2"])], now=T0 + 1)
    assert state(ds, "10.0.0.1", T0 + 1) is expected
    assert state(ds, "10.0.0.2", T0 + 1) is FREE


@pytest.mark.parametrize(
    ("setup", "expected"),
    [
        pytest.param(lambda ds: (add(ds, "a"), ds.unassign(key("a"), now=T0)), COOLING, id="cooling"),
        pytest.param(lambda ds: ds.quarantine_unassigned(now=T0), QUARANTINED, id="quarantined"),
    ],
)
def test_sync_keeps_the_state_of_an_address_that_moves(
    setup: Callable[[Datastore], object], expected: AddressState
) -> None:
    ds = store(iface(0, ["10.0.0.1"]), iface(1))
    setup(ds)
    ds.sync_interfaces([iface(0), iface(1, ["10.0.0.1"])], now=T0 + 1)
    assert state(ds, "10.0.0.1", T0 + 1) is expected
    assert ds.interface(eni(1)) == iface(1, ["10.0.0.1"])


def test_sync_updates_interface_metadata_and_choice_order() -> None:
    ds = store(iface(0, ["10.0.0.1"]), iface(1, ["10.0.1.1"]))
    renumbered = [
        iface(0, ["10.0.0.1"], device_index=3),
        dataclasses.replace(iface(1, ["10.0.1.1"]), mac="m"),
    ]
    assert ds.sync_interfaces(renumbered, now=T0) == SyncReport()
    assert ds.interfaces() == [renumbered[1], renumbered[0]]
    assert add(ds, "a").ip == "10.0.1.1"


def test_sync_adopts_onto_a_detaching_interface_as_releasing() -> None:
    ds = store(iface(0), iface(1, ["10.0.1.1"]))
    ds.begin_detach(eni(1))
    ds.sync_interfaces([iface(0), iface(1, ["10.0.1.1", "10.0.1.2"])], now=T0)
    assert state(ds, "10.0.1.2") is RELEASING
    ds.finish_detach(eni(1))
    assert ds.interfaces() == [iface(0)]


@pytest.mark.parametrize(
    "views",
    [
        pytest.param([iface(0, ["10.0.0.1"]), iface(1, ["10.0.0.1"])], id="ip-on-two-interfaces"),
        pytest.param([iface(0, ["10.0.0.1", "10.0.0.1"])], id="ip-twice"),
        pytest.param([iface(0, [], ["10.0.0.0/28"]), iface(1, [], ["10.0.0.0/28"])], id="prefix-twice"),
        pytest.param([iface(0, ["10.0.0.5"], ["10.0.0.0/28"])], id="ip-inside-prefix"),
        pytest.param([iface(0), iface(0)], id="interface-twice"),
        pytest.param([iface(0, ["10.1.0.0"])], id="primary-address-as-ip"),
        pytest.param([iface(0, [], ["10.1.0.0/28"])], id="primary-address-inside-prefix"),
        pytest.param([iface(0, [], ["10.0.0.0/24"])], id="prefix-not-a-28"),
        pytest.param([iface(0, [], ["10.0.0.1/28"])], id="prefix-host-bits-set"),
        pytest.param([iface(0, ["10.0.0.300"])], id="not-an-ip"),
        pytest.param([iface(0, ["fd00::1"])], id="ipv6"),
    ],
)
def test_sync_refuses_an_inconsistent_report_and_changes_nothing(views: list[InterfaceView]) -> None:
    ds = store(iface(0, ["10.0.0.9"]), iface(1, ["10.0.1.9"]))
    add(ds, "a")
    before = (ds.snapshot(), ds.interfaces())
    with pytest.raises(PoolError):
        ds.sync_interfaces(views, now=T0)
    assert (ds.snapshot(), ds.interfaces()) == before


# --- add_interface, add_ips, add_prefixes --------------------------------------------------------------


def test_add_interface_adopts_its_addresses_free() -> None:
    ds = store(iface(0))
    ds.add_interface(iface(1, ["10.0.1.1"], ["10.0.1.16/28"]), now=T0)
    assert ds.interface(eni(1)) == iface(1, ["10.0.1.1"], ["10.0.1.16/28"])
    assert ds.stats(now=T0) == PoolStats(17, 0, 17, 0, 0, 2)


@pytest.mark.parametrize(
    "view",
    [
        pytest.param(iface(0), id="interface-already-held"),
        pytest.param(iface(1, ["10.0.0.1"]), id="ip-held-elsewhere"),
        pytest.param(iface(1, [], ["10.0.0.0/28"]), id="prefix-overlaps-held-ip"),
    ],
)
def test_add_interface_refuses(view: InterfaceView) -> None:
    ds = store(iface(0, ["10.0.0.1"]))
    with pytest.raises(PoolError):
        ds.add_interface(view, now=T0)
    assert ds.interfaces() == [iface(0, ["10.0.0.1"])]


def test_add_ips_and_prefixes() -> None:
    ds = store(iface(0, ["10.0.0.1"]))
    ds.add_ips(eni(0), ["10.0.0.3", "10.0.0.2", "10.0.0.1"])  # 10.0.0.1: already held here, no-op
    ds.add_prefixes(eni(0), ["10.0.0.32/28"])
    ds.add_prefixes(eni(0), ["10.0.0.32/28"])
    assert ds.interface(eni(0)) == iface(0, ["10.0.0.1", "10.0.0.2", "10.0.0.3"], ["10.0.0.32/28"])
    assert ds.stats(now=T0).available == 3 + PREFIX_SIZE


@pytest.mark.parametrize(
    ("call", "error"),
    [
        pytest.param(
            lambda ds: ds.add_ips(eni(9), ["10.0.9.1"]), "unknown interface", id="ips-unknown-interface"
        ),
        pytest.param(lambda ds: ds.add_ips(eni(0), ["10.0.1.1"]), "already held", id="ip-held-elsewhere"),
        pytest.param(lambda ds: ds.add_ips(eni(0), ["10.0.2.5"]), "already held", id="ip-inside-held-prefix"),
        pytest.param(lambda ds: ds.add_ips(eni(0), ["nope"]), "not an IPv4", id="bad-ip"),
        pytest.param(
            lambda ds: ds.add_prefixes(eni(9), ["10.0.9.0/28"]),
            "unknown interface",
            id="prefix-unknown-interface",
        ),
        pytest.param(
            lambda ds: ds.add_prefixes(eni(0), ["10.0.2.0/28"]), "already held", id="prefix-held-elsewhere"
        ),
        pytest.param(
            lambda ds: ds.add_prefixes(eni(0), ["10.0.1.0/28"]), "already held", id="prefix-covers-held-ip"
        ),
    ],
)
def test_add_addresses_refuses_and_changes_nothing(call: Callable[[Datastore], None], error: str) -> None:
    ds = store(iface(0, ["10.0.0.1"]), iface(1, ["10.0.1.1"], ["10.0.2.0/28"]))
    before = ds.interfaces()
    with pytest.raises(PoolError, match=error):
        call(ds)
    assert ds.interfaces() == before


def test_added_address_goes_to_a_waiting_orphan() -> None:
    ds = store(iface(0, ["10.0.0.1"]))
    got = add(ds, "a")
    ds.sync_interfaces([iface(0)], now=T0)
    ds.add_ips(eni(0), ["10.0.0.1"])
    assert ds.get(key("a")) == got
    assert ds.orphaned() == []


# --- release (begin / finish / abort) ---------------------------------------------------------------------

RELEASE_VIEWS = (iface(0, ["10.0.0.1", "10.0.0.2", "10.0.0.3"], ["10.0.0.16/28", "10.0.0.32/28"]), iface(1))


@pytest.mark.parametrize(
    ("setup", "ips_", "prefixes", "error"),
    [
        pytest.param(
            lambda ds: add(ds, "a"), ["10.0.0.2", "10.0.0.1"], [], "not free: 10.0.0.1", id="assigned"
        ),
        pytest.param(
            lambda ds: (add(ds, "a"), ds.unassign(key("a"), now=T0)),
            ["10.0.0.1", "10.0.0.2"],
            [],
            "not free: 10.0.0.1",
            id="cooling",
        ),
        pytest.param(
            lambda ds: ds.quarantine_unassigned(now=T0),
            ["10.0.0.2"],
            [],
            "not free: 10.0.0.2",
            id="quarantined",
        ),
        pytest.param(
            lambda ds: ds.begin_release(eni(0), ips=["10.0.0.3"]),
            ["10.0.0.2", "10.0.0.3"],
            [],
            "not free: 10.0.0.3",
            id="already-releasing",
        ),
        pytest.param(
            lambda ds: None, ["10.0.0.2", "10.0.0.9"], [], "does not hold 10.0.0.9", id="ip-not-held"
        ),
        pytest.param(
            lambda ds: None, ["10.0.0.17"], [], "does not hold 10.0.0.17", id="address-inside-prefix"
        ),
        pytest.param(
            lambda ds: None,
            ["10.0.0.2"],
            ["10.0.0.48/28"],
            "does not hold 10.0.0.48/28",
            id="prefix-not-held",
        ),
        pytest.param(
            lambda ds: _fill_then_free(ds, 4, 0),  # 10.0.0.1-3 and 10.0.0.16 assigned
            [],
            ["10.0.0.32/28", "10.0.0.16/28"],
            "not free: 10.0.0.16",
            id="prefix-with-one-assigned",
        ),
    ],
)
def test_begin_release_is_all_or_nothing(
    setup: Callable[[Datastore], object], ips_: list[str], prefixes: list[str], error: str
) -> None:
    ds = store(*RELEASE_VIEWS)
    setup(ds)
    before = (ds.snapshot(), ds.view(now=T0))
    with pytest.raises(PoolError, match=error):
        ds.begin_release(eni(0), ips=ips_, prefixes=prefixes)
    assert (ds.snapshot(), ds.view(now=T0)) == before


def test_begin_release_unknown_interface() -> None:
    ds = store(*RELEASE_VIEWS)
    with pytest.raises(PoolError, match="unknown interface"):
        ds.begin_release(eni(9), ips=["10.0.0.1"])


def test_begin_release_with_now_ends_finished_cooldowns_first() -> None:
    ds = store(*RELEASE_VIEWS)
    add(ds, "a")
    ds.unassign(key("a"), now=T0)
    ds.begin_release(eni(0), ips=["10.0.0.1"], now=T0 + COOLDOWN)
    assert state(ds, "10.0.0.1", T0 + COOLDOWN) is RELEASING


def test_release_lifecycle_finish() -> None:
    ds = store(*RELEASE_VIEWS)
    ds.begin_release(eni(0), ips=["10.0.0.2"], prefixes=["10.0.0.16/28"])
    usage = ds.view(now=T0).interfaces[0]
    assert (usage.releasing, usage.free) == (17, 18)
    assert usage.releasable_ips == ("10.0.0.1", "10.0.0.3")
    assert usage.releasable_prefixes == ("10.0.0.32/28",)
    assert ds.stats(now=T0) == PoolStats(35, 0, 18, 0, 0, 2)
    ds.finish_release(eni(0), ips=["10.0.0.2"], prefixes=["10.0.0.16/28"])
    assert ds.interface(eni(0)) == iface(0, ["10.0.0.1", "10.0.0.3"], ["10.0.0.32/28"])
    assert ds.stats(now=T0) == PoolStats(18, 0, 18, 0, 0, 2)


def test_release_lifecycle_abort() -> None:
    ds = store(*RELEASE_VIEWS)
    before = ds.view(now=T0)
    ds.begin_release(eni(0), ips=["10.0.0.2"], prefixes=["10.0.0.16/28"])
    ds.abort_release(eni(0), ips=["10.0.0.2"], prefixes=["10.0.0.16/28"])
    assert ds.view(now=T0) == before


def test_finish_release_refuses_addresses_not_releasing() -> None:
    ds = store(*RELEASE_VIEWS)
    ds.begin_release(eni(0), ips=["10.0.0.2"])
    with pytest.raises(PoolError, match=r"not releasing: 10\.0\.0\.1"):
        ds.finish_release(eni(0), ips=["10.0.0.2", "10.0.0.1"])
    assert state(ds, "10.0.0.2") is RELEASING


@pytest.mark.parametrize(
    "call",
    [
        pytest.param(lambda ds: ds.finish_release(eni(9), ips=["10.0.0.2"]), id="finish-unknown-interface"),
        pytest.param(lambda ds: ds.finish_release(eni(0), ips=["10.0.0.9"]), id="finish-already-gone"),
        pytest.param(lambda ds: ds.abort_release(eni(9), ips=["10.0.0.2"]), id="abort-unknown-interface"),
        pytest.param(lambda ds: ds.abort_release(eni(0), ips=["10.0.0.9"]), id="abort-already-gone"),
        pytest.param(lambda ds: ds.abort_release(eni(0), ips=["10.0.0.1"]), id="abort-not-releasing"),
    ],
)
def test_finish_and_abort_release_tolerate_what_is_gone(call: Callable[[Datastore], None]) -> None:
    ds = store(*RELEASE_VIEWS)
    ds.begin_release(eni(0), ips=["10.0.0.2"])
    before = (ds.snapshot(), ds.view(now=T0))
    call(ds)
    assert (ds.snapshot(), ds.view(now=T0)) == before


def test_release_after_the_cloud_already_dropped_it() -> None:
    ds = store(*RELEASE_VIEWS)
    ds.begin_release(eni(0), ips=["10.0.0.2"])
    ds.sync_interfaces(
        [iface(0, ["10.0.0.1", "10.0.0.3"], ["10.0.0.16/28", "10.0.0.32/28"]), iface(1)], now=T0
    )
    ds.finish_release(eni(0), ips=["10.0.0.2"])
    assert ds.interface(eni(0)) == iface(0, ["10.0.0.1", "10.0.0.3"], ["10.0.0.16/28", "10.0.0.32/28"])


# --- detach ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("target", "setup", "error"),
    [
        pytest.param(eni(0), lambda ds: None, "primary", id="primary"),
        pytest.param(eni(9), lambda ds: None, "unknown interface", id="unknown"),
        pytest.param(eni(1), lambda ds: add(ds, "a"), "1 assigned", id="assigned"),
        pytest.param(
            eni(1), lambda ds: (add(ds, "a"), ds.unassign(key("a"), now=T0)), "1 cooling", id="cooling"
        ),
        pytest.param(eni(1), lambda ds: ds.quarantine_unassigned(now=T0), "17 quarantined", id="quarantined"),
        pytest.param(
            eni(1),
            lambda ds: ds.begin_release(eni(1), ips=["10.0.1.1"]),
            "1 releasing",
            id="release-in-flight",
        ),
        pytest.param(
            eni(1),
            lambda ds: (add(ds, "a"), ds.sync_interfaces([iface(0), iface(1, [], ["10.0.1.16/28"])], now=T0)),
            "1 orphaned",
            id="orphaned",
        ),
        pytest.param(eni(1), lambda ds: ds.begin_detach(eni(1)), "already detaching", id="already-detaching"),
    ],
)
def test_begin_detach_refuses(target: InterfaceId, setup: Callable[[Datastore], object], error: str) -> None:
    ds = store(iface(0), iface(1, ["10.0.1.1"], ["10.0.1.16/28"]))
    setup(ds)
    before = (ds.snapshot(), ds.view(now=T0))
    with pytest.raises(PoolError, match=error):
        ds.begin_detach(target)
    assert (ds.snapshot(), ds.view(now=T0)) == before


def test_detach_lifecycle_finish() -> None:
    ds = store(iface(0, ["10.0.0.1"]), iface(1, ["10.0.1.1"], ["10.0.1.16/28"]))
    ds.begin_detach(eni(1))
    usage = ds.view(now=T0).interfaces[1]
    assert (usage.releasing, usage.free, usage.releasable_ips, usage.releasable_prefixes) == (17, 0, (), ())
    assert add(ds, "a").ip == "10.0.0.1"
    ds.finish_detach(eni(1))
    assert ds.interfaces() == [iface(0, ["10.0.0.1"])]
    assert ds.stats(now=T0) == PoolStats(1, 1, 0, 0, 0, 1)
    ds.finish_detach(eni(1))  # already gone: no-op


def test_detach_lifecycle_abort() -> None:
    ds = store(iface(0), iface(1, ["10.0.1.1"], ["10.0.1.16/28"]))
    before = ds.view(now=T0)
    ds.begin_detach(eni(1))
    ds.abort_detach(eni(1))
    assert ds.view(now=T0) == before
    ds.abort_detach(eni(1))  # not detaching: no-op
    ds.abort_detach(eni(9))  # unknown: no-op
    assert ds.view(now=T0) == before


def test_finish_detach_without_begin_is_refused() -> None:
    ds = store(iface(0), iface(1, ["10.0.1.1"]))
    with pytest.raises(PoolError, match="begin_detach"):
        ds.finish_detach(eni(1))


def test_begin_detach_with_now_ends_finished_cooldowns_first() -> None:
    ds = store(iface(0), iface(1, ["10.0.1.1"]))
    add(ds, "a")
    ds.unassign(key("a"), now=T0)
    ds.begin_detach(eni(1), now=T0 + COOLDOWN)
    assert state(ds, "10.0.1.1", T0 + COOLDOWN) is RELEASING


# --- gc -------------------------------------------------------------------------------------------------


def _gc_store() -> Datastore:
    """net: old-1, old-2 at T0, new-1 at T0+10; other: old-1 at T0. old-2's address is orphaned."""
    ds = store(iface(0, ips("10.0.0.1", 5)))
    add(ds, "old-1")
    add(ds, "old-2")
    add(ds, "new-1", now=T0 + 10)
    add(ds, "old-1", network="other")
    ds.sync_interfaces([iface(0, ["10.0.0.1", "10.0.0.3", "10.0.0.4", "10.0.0.5"])], now=T0 + 10)
    return ds


@pytest.mark.parametrize(
    ("valid", "started_at", "removed"),
    [
        pytest.param({("old-1", "eth0"), ("old-2", "eth0"), ("new-1", "eth0")}, T0 + 20, [], id="all-valid"),
        pytest.param({("old-1", "eth0")}, T0 + 20, ["new-1", "old-2"], id="stale-removed-orphan-too"),
        pytest.param(set(), T0 + 5, ["old-1", "old-2"], id="newer-than-started-at-kept"),
        pytest.param(set(), T0, [], id="assigned-at-started-at-kept"),
        pytest.param({("old-1", "eth1")}, T0 + 5, ["old-1", "old-2"], id="ifname-must-match"),
    ],
)
def test_gc(valid: set[tuple[str, str]], started_at: float, removed: list[str]) -> None:
    ds = _gc_store()
    before = {a.key: a for a in ds.assignments()}
    got = ds.gc(valid, network="net", started_at=started_at, now=T0 + 20)
    assert got == [before[key(c)] for c in removed]
    assert {a.key for a in ds.assignments()} == set(before) - {key(c) for c in removed}
    assert ds.get(key("old-1", network="other")) is not None
    for a in got:
        assert state(ds, a.ip, T0 + 20) in (COOLING, None)  # None: it was orphaned


def test_gc_cools_what_it_frees() -> None:
    ds = _gc_store()
    ds.gc(set(), network="net", started_at=T0 + 20, now=T0 + 20)
    assert ds.snapshot().cooling == tuple((ip, T0 + 20 + COOLDOWN) for ip in ("10.0.0.1", "10.0.0.3"))


@pytest.mark.parametrize(
    ("valid", "network", "released"),
    [
        pytest.param({("a", "eth0")}, "net", True, id="every-valid-known"),
        pytest.param(set(), "net", True, id="nothing-valid"),
        pytest.param({("a", "eth0"), ("stranger", "eth0")}, "net", False, id="unknown-valid-attachment"),
        pytest.param({("a", "eth0")}, "other", False, id="valid-of-another-network"),
    ],
)
def test_gc_releases_quarantine_only_when_every_valid_attachment_is_known(
    valid: set[tuple[str, str]], network: str, released: bool
) -> None:
    ds = store(iface(0, ["10.0.0.1", "10.0.0.2", "10.0.0.3"]))
    add(ds, "a")
    assert ds.quarantine_unassigned(now=T0) == 2
    ds.gc(valid, network=network, started_at=T0 - 1, now=T0 + 1)
    s = ds.stats(now=T0 + 1)
    assert (s.quarantined, s.cooling) == ((0, 2) if released else (2, 0))
    assert ds.get(key("a")) is not None


# --- quarantine -------------------------------------------------------------------------------------------


def test_quarantine_unassigned_holds_back_free_and_cooling() -> None:
    ds = store(iface(0, ["10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.0.4"]))
    add(ds, "a")
    add(ds, "b")
    ds.unassign(key("b"), now=T0)
    ds.begin_release(eni(0), ips=["10.0.0.4"])
    assert ds.quarantine_unassigned(now=T0) == 2
    assert [state(ds, ip) for ip in ips("10.0.0.1", 4)] == [ASSIGNED, QUARANTINED, QUARANTINED, RELEASING]
    assert ds.stats(now=T0) == PoolStats(4, 1, 0, 0, 2, 1)
    assert ds.quarantine_unassigned(now=T0) == 0
    with pytest.raises(NoAddressAvailable):
        add(ds, "c")


@pytest.mark.parametrize(
    ("ip", "released"),
    [
        pytest.param("10.0.0.2", True, id="quarantined"),
        pytest.param("10.0.0.1", False, id="assigned"),
        pytest.param("10.0.0.9", False, id="not-held"),
        pytest.param("garbage", False, id="not-an-ip"),
    ],
)
def test_release_quarantined(ip: str, released: bool) -> None:
    ds = store(iface(0, ["10.0.0.1", "10.0.0.2"]))
    add(ds, "a")
    ds.quarantine_unassigned(now=T0)
    assert ds.release_quarantined(ip, now=T0 + 1) is released
    if released:
        assert state(ds, ip, T0 + 1) is COOLING
        assert ds.snapshot().cooling == ((ip, T0 + 1 + COOLDOWN),)
    assert ds.release_quarantined(ip, now=T0 + 1) is False


# --- snapshot and restore -------------------------------------------------------------------------------


def test_snapshot_is_sorted() -> None:
    ds = store(iface(0, ["10.0.0.10", "10.0.0.9", "10.0.0.100", "10.0.0.2", "10.0.0.3"]))
    for c in ("c", "b", "a", "d"):
        add(ds, c)  # c: 10.0.0.2, b: 10.0.0.3, a: 10.0.0.9, d: 10.0.0.10
    ds.unassign(key("d"), now=T0)
    ds.unassign(key("a"), now=T0)
    ds.quarantine_unassigned(now=T0 + 1)  # 10.0.0.9, 10.0.0.10, 10.0.0.100
    ds.release_quarantined("10.0.0.10", now=T0 + 2)
    ds.release_quarantined("10.0.0.9", now=T0 + 2)
    snap = ds.snapshot()
    assert [a.key for a in snap.assignments] == [key("b"), key("c")]
    assert snap.cooling == (("10.0.0.9", T0 + 2 + COOLDOWN), ("10.0.0.10", T0 + 2 + COOLDOWN))
    assert snap.quarantined == ("10.0.0.100",)


def test_snapshot_with_now_leaves_out_finished_cooldowns() -> None:
    ds = store(iface(0, ["10.0.0.1", "10.0.0.2"]))
    add(ds, "a")
    add(ds, "b")
    ds.unassign(key("a"), now=T0)
    ds.unassign(key("b"), now=T0 + 10)
    assert len(ds.snapshot().cooling) == 2
    assert ds.snapshot(now=T0 + COOLDOWN).cooling == (("10.0.0.2", T0 + 10 + COOLDOWN),)


def _saved(container: str, ip: str, at: float, interface: int = 0) -> Assignment:
    return Assignment(key(container), ip, eni(interface), POD, at, f"/var/run/netns/{container}")


def test_restore_reapplies_assignments_cooling_and_quarantine() -> None:
    ds = store(iface(0, ["10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.0.4"]))
    snap = PoolSnapshot(
        assignments=(_saved("a", "10.0.0.1", T0 - 50),),
        cooling=(("10.0.0.2", T0 + 10), ("10.0.0.3", T0 - 1), ("10.0.0.9", T0 + 10)),
        quarantined=("10.0.0.4", "10.0.0.8"),
    )
    report = ds.restore(snap, now=T0)
    assert report == RestoreReport(restored=1, orphaned=(), cooling=1, quarantined=1)
    assert [state(ds, ip) for ip in ips("10.0.0.1", 4)] == [ASSIGNED, COOLING, FREE, QUARANTINED]
    assert ds.get(key("a")) == snap.assignments[0]
    assert ds.snapshot() == dataclasses.replace(
        snap, cooling=(("10.0.0.2", T0 + 10),), quarantined=("10.0.0.4",)
    )


def test_restore_orphans_assignments_whose_address_is_not_held() -> None:
    ds = store(iface(0, ["10.0.0.1"]))
    lost = _saved("a", "10.0.0.7", T0 - 5)
    report = ds.restore(PoolSnapshot(assignments=(lost,)), now=T0)
    assert report == RestoreReport(restored=0, orphaned=(lost,), cooling=0, quarantined=0)
    assert ds.get(key("a")) == lost
    assert ds.stats(now=T0) == PoolStats(1, 0, 1, 0, 0, 1)
    assert add(ds, "b").ip == "10.0.0.1"


def test_restore_corrects_the_interface_of_an_assignment() -> None:
    ds = store(iface(0), iface(1, ["10.0.0.1"]))
    ds.restore(PoolSnapshot(assignments=(_saved("a", "10.0.0.1", T0, interface=0),)), now=T0)
    assert ds.get(key("a")) == _saved("a", "10.0.0.1", T0, interface=1)


@pytest.mark.parametrize(
    ("saved", "winner"),
    [
        pytest.param(
            (
                _saved("a", "10.0.0.1", T0 - 1),
                _saved("b", "10.0.0.1", T0 - 9),
                _saved("c", "10.0.0.1", T0 - 5),
            ),
            "b",
            id="earliest-assigned-at-wins",
        ),
        pytest.param(
            (_saved("z", "10.0.0.1", T0 - 1), _saved("y", "10.0.0.1", T0 - 1)), "y", id="tie-broken-by-key"
        ),
    ],
)
def test_restore_never_puts_two_pods_on_one_address(saved: tuple[Assignment, ...], winner: str) -> None:
    ds = store(iface(0, ["10.0.0.1", "10.0.0.2"]))
    report = ds.restore(PoolSnapshot(assignments=saved), now=T0)
    assert report.restored == 1
    assert {a.key for a in report.orphaned} == {a.key for a in saved} - {key(winner)}
    assert ds.find_by_ip("10.0.0.1") == next(a for a in saved if a.key == key(winner))
    assert ds.stats(now=T0).assigned == 1
    assert add(ds, "new").ip == "10.0.0.2"
    snap = ds.snapshot()  # one assignment per address, as the checkpoint requires
    assert [a.key for a in snap.assignments if a.ip == "10.0.0.1"] == [key(winner)]


def test_losing_duplicate_takes_the_address_when_the_winner_leaves() -> None:
    ds = store(iface(0, ["10.0.0.1"]))
    first, second = _saved("a", "10.0.0.1", T0 - 9), _saved("b", "10.0.0.1", T0 - 1)
    ds.restore(PoolSnapshot(assignments=(first, second)), now=T0)
    ds.unassign(key("a"), now=T0)
    assert ds.find_by_ip("10.0.0.1") == second
    assert ds.orphaned() == []
    assert ds.snapshot().cooling == ()


def test_restore_skips_keys_already_known() -> None:
    ds = store(iface(0, ["10.0.0.1", "10.0.0.2"]))
    live = add(ds, "a")
    report = ds.restore(PoolSnapshot(assignments=(_saved("a", "10.0.0.2", T0 - 1),)), now=T0)
    assert report == RestoreReport(restored=0, orphaned=(), cooling=0, quarantined=0)
    assert ds.get(key("a")) == live


def test_restore_does_not_cool_or_quarantine_an_assigned_address() -> None:
    ds = store(iface(0, ["10.0.0.1"]))
    snap = PoolSnapshot(
        assignments=(_saved("a", "10.0.0.1", T0),), cooling=(("10.0.0.1", T0 + 5),), quarantined=("10.0.0.1",)
    )
    assert ds.restore(snap, now=T0) == RestoreReport(restored=1, orphaned=(), cooling=0, quarantined=0)
    assert state(ds, "10.0.0.1") is ASSIGNED


# --- reading: stats, view, interfaces -------------------------------------------------------------------


def test_stats_and_view_count_every_state() -> None:
    ds = store(
        iface(0, ["10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.0.4", "10.0.0.5", "10.0.0.6"]),
        iface(1, [], ["10.0.1.0/28", "10.0.1.16/28"]),
    )
    for c in ("a", "b", "c"):
        add(ds, c)  # 10.0.0.1-3
    ds.unassign(key("b"), now=T0)  # 10.0.0.2 cooling
    ds.sync_interfaces(
        [
            iface(0, ["10.0.0.2", "10.0.0.3", "10.0.0.4", "10.0.0.5", "10.0.0.6"]),
            iface(1, [], ["10.0.1.0/28", "10.0.1.16/28"]),
        ],
        now=T0,
    )  # "a" orphaned: not counted
    ds.begin_release(eni(0), ips=["10.0.0.6"])
    ds.begin_release(eni(1), prefixes=["10.0.1.16/28"])
    ds.quarantine_unassigned(now=T0)  # 10.0.0.2, 10.0.0.4, 10.0.0.5 and 10.0.1.0/28
    ds.release_quarantined("10.0.0.5", now=T0 - COOLDOWN)  # cool-down already over: free
    assert ds.stats(now=T0) == PoolStats(
        total=37, assigned=1, available=1, cooling=0, quarantined=18, interfaces=2
    )
    view = ds.view(now=T0, busy={eni(1)}, last_increase_at=1.0, last_decrease_at=2.0, growth_paused_until=3.0)
    assert (view.last_increase_at, view.last_decrease_at, view.growth_paused_until) == (1.0, 2.0, 3.0)
    first, second = view.interfaces
    assert (first.id, first.busy, second.id, second.busy) == (eni(0), False, eni(1), True)
    assert (first.ip_slots, first.prefix_slots, second.ip_slots, second.prefix_slots) == (5, 0, 0, 2)
    assert (first.assigned, first.cooling, first.free, first.quarantined, first.releasing) == (1, 0, 1, 2, 1)
    assert (second.assigned, second.free, second.quarantined, second.releasing) == (0, 0, 16, 16)
    assert first.releasable_ips == ("10.0.0.5",)
    assert (view.total, view.assigned, view.available, view.cooling) == (37, 1, 1, 0)


def test_view_releasable_prefixes_are_wholly_free_and_not_cooling() -> None:
    ds = store(iface(0, [], ["10.0.0.0/28", "10.0.0.16/28", "10.0.0.32/28"]))
    _fill_then_free(ds, 17, 0)  # 10.0.0.0/28 full, 10.0.0.16 assigned
    for n in range(16):
        ds.unassign(key(f"c{n}"), now=T0)  # 10.0.0.0/28 cooling
    usage = ds.view(now=T0).interfaces[0]
    assert usage.releasable_prefixes == ("10.0.0.32/28",)
    assert usage.releasable_ips == ()
    later = ds.view(now=T0 + COOLDOWN).interfaces[0]
    assert later.releasable_prefixes == ("10.0.0.0/28", "10.0.0.32/28")


def test_view_releasable_ips_numeric_order() -> None:
    ds = store(iface(0, ["10.0.0.100", "10.0.0.20", "10.0.0.3"], ["10.0.1.0/28"]))
    assert ds.view(now=T0).interfaces[0].releasable_ips == ("10.0.0.3", "10.0.0.20", "10.0.0.100")


def test_interfaces_round_trip_views() -> None:
    views = [iface(1, ["10.0.1.10", "10.0.1.9"], ["10.0.2.16/28", "10.0.2.0/28"]), iface(0)]
    ds = store(*views)
    assert ds.interfaces() == [iface(0), iface(1, ["10.0.1.9", "10.0.1.10"], ["10.0.2.0/28", "10.0.2.16/28"])]
    assert ds.interface(eni(0)) == iface(0)
    assert ds.interface(eni(7)) is None


# --- random sequences against the invariants ---------------------------------------------------------------

UNIVERSE_IPS = ips("10.0.0.1", 12)
UNIVERSE_PREFIXES = ["10.0.1.0/28", "10.0.1.16/28", "10.0.1.32/28"]
KEYS = [key(f"c{n}", network=net) for n in range(8) for net in ("net", "other")]
INTERFACES = [eni(0), eni(1), eni(2)]


def _prefix_addresses(prefix: str) -> list[str]:
    return [str(a) for a in ipaddress.IPv4Network(prefix)]


class DatastoreMachine(RuleBasedStateMachine):
    """A datastore next to a model of the cloud (the interfaces and their addresses) and of the keys
    that must be known; every rule is an operation the daemon performs."""

    PRIMARY_PODS = True  # False: custom networking, no new pod on the primary interface

    def __init__(self) -> None:
        super().__init__()
        self.now = T0
        self.ds = Datastore(cooldown=COOLDOWN, primary_interface_pods=self.PRIMARY_PODS)
        self.cloud: dict[InterfaceId, InterfaceView] = {
            eni(0): iface(0, UNIVERSE_IPS[:3]),
            eni(1): iface(1, [], UNIVERSE_PREFIXES[:2]),
            eni(2): iface(2, UNIVERSE_IPS[3:5]),
        }
        self.ds.sync_interfaces(list(self.cloud.values()), now=self.now)
        self.keys: set[AttachmentKey] = set()
        self.pending_release: tuple[InterfaceId, tuple[str, ...], tuple[str, ...]] | None = None
        self.pending_detach: InterfaceId | None = None

    # helpers

    def sync(self) -> SyncReport:
        return self.ds.sync_interfaces(sorted(self.cloud.values(), key=lambda v: v.id), now=self.now)

    def holder_of(self, ip: str) -> tuple[InterfaceId, str | None] | None:
        for view in self.cloud.values():
            if ip in view.ips:
                return view.id, None
            for prefix in view.prefixes:
                if ip in _prefix_addresses(prefix):
                    return view.id, prefix
        return None

    def expected_choice(self) -> str | None:
        """The address assign must pick, worked out from the public reading methods alone."""
        for usage in self.ds.view(now=self.now).interfaces:
            if not usage.free or (usage.primary and not self.PRIMARY_PODS):
                continue
            if usage.releasable_ips:
                return usage.releasable_ips[0]
            best: tuple[int, int, str] | None = None
            for prefix in self.cloud[usage.id].prefixes:
                members = _prefix_addresses(prefix)
                states = [self.ds.address_state(ip, now=self.now) for ip in members]
                assigned = states.count(ASSIGNED)
                for ip, s in zip(members, states, strict=True):
                    if s is FREE:
                        candidate = (-assigned, int(ipaddress.IPv4Address(ip)), ip)
                        best = candidate if best is None or candidate < best else best
            assert best is not None
            return best[2]
        return None

    # rules: pods

    def on_primary(self, ip: str) -> bool:
        holder = self.holder_of(ip)
        return holder is not None and self.cloud[holder[0]].primary

    @rule(k=st.sampled_from(KEYS))
    def assign(self, k: AttachmentKey) -> None:
        existing = self.ds.get(k)
        expected = self.expected_choice()
        cooling = sorted(
            self.ds.snapshot(now=self.now).cooling, key=lambda c: (c[1], int(ipaddress.IPv4Address(c[0])))
        )
        if not self.PRIMARY_PODS:
            cooling = [c for c in cooling if not self.on_primary(c[0])]
        overrides = self.ds.cooldown_overrides
        if existing is None and expected is None and not cooling:
            with pytest.raises(NoAddressAvailable):
                self.ds.assign(k, POD, netns="ns", now=self.now)
            return
        got = self.ds.assign(k, POD, netns="ns", now=self.now)
        self.keys.add(k)
        if existing is None and not self.PRIMARY_PODS:  # the property: never a new pod on the primary
            assert not self.on_primary(got.ip) and got.interface_id != eni(0)
        if existing is not None:
            assert got is existing
            assert self.ds.cooldown_overrides == overrides
        elif expected is not None:
            assert got.ip == expected
            assert self.ds.cooldown_overrides == overrides
        else:
            assert got.ip == cooling[0][0]
            assert self.ds.cooldown_overrides == overrides + 1

    @rule(k=st.sampled_from(KEYS))
    def unassign(self, k: AttachmentKey) -> None:
        existing = self.ds.get(k)
        orphan = existing in self.ds.orphaned()
        assert self.ds.unassign(k, now=self.now) == existing
        self.keys.discard(k)
        if existing is not None and not orphan:
            assert self.ds.address_state(existing.ip, now=self.now) in (COOLING, ASSIGNED)

    @rule(seconds=st.sampled_from([0.5, 5.0, 29.0, 30.0, 31.0, 100.0]))
    def advance_clock(self, seconds: float) -> None:
        self.now += seconds

    @rule(
        network=st.sampled_from(["net", "other"]),
        valid=st.sets(st.sampled_from([f"c{n}" for n in range(9)])),
        age=st.sampled_from([0.0, 10.0, 1000.0]),
    )
    def gc(self, network: str, valid: set[str], age: float) -> None:
        started_at = self.now - age
        removed = self.ds.gc(
            {(c, "eth0") for c in valid}, network=network, started_at=started_at, now=self.now
        )
        for a in removed:
            assert a.key.network == network
            assert a.key.container_id not in valid
            assert a.assigned_at < started_at
            self.keys.discard(a.key)

    # rules: the cloud changes under us

    @rule(ip=st.sampled_from(UNIVERSE_IPS), interface=st.sampled_from(INTERFACES))
    def cloud_assigns_or_moves_ip(self, ip: str, interface: InterfaceId) -> None:
        if interface not in self.cloud or self.pending_release or self.pending_detach:
            return
        holder = self.holder_of(ip)
        if holder is not None:
            source = self.cloud[holder[0]]
            self.cloud[source.id] = source.with_addresses(
                tuple(i for i in source.ips if i != ip), source.prefixes
            )
        view = self.cloud[interface]
        self.cloud[interface] = view.with_addresses((*view.ips, ip), view.prefixes)
        self.sync()

    @rule(data=st.data())
    def cloud_drops_address(self, data: st.DataObject) -> None:
        held: list[tuple[InterfaceId, str | None, str | None]]
        held = [(v.id, ip, None) for v in self.cloud.values() for ip in v.ips]
        held += [(v.id, None, p) for v in self.cloud.values() for p in v.prefixes]
        if not held:
            return
        iid, ip, prefix = data.draw(st.sampled_from(held))
        view = self.cloud[iid]
        self.cloud[iid] = view.with_addresses(
            tuple(i for i in view.ips if i != ip), tuple(p for p in view.prefixes if p != prefix)
        )
        report = self.sync()
        for a in report.lost_assigned:
            assert a in self.ds.orphaned()

    @rule(interface=st.sampled_from(INTERFACES[1:]))
    def cloud_loses_interface(self, interface: InterfaceId) -> None:
        """Someone deleted the interface behind our back: its pods' assignments become orphans."""
        if interface not in self.cloud or self.pending_release or self.pending_detach:
            return
        had = {a.key for a in self.ds.assignments() if a.interface_id == interface} - {
            a.key for a in self.ds.orphaned()
        }
        del self.cloud[interface]
        report = self.sync()
        assert report.removed_interfaces == (interface,)
        assert {a.key for a in report.lost_assigned} == had

    @rule(interface=st.sampled_from(INTERFACES[1:]))
    def cloud_renumbers(self, interface: InterfaceId) -> None:
        if interface in self.cloud:
            view = self.cloud[interface]
            self.cloud[interface] = dataclasses.replace(view, device_index=5 - view.device_index)
            self.sync()

    # rules: the manager grows and shrinks the pool

    @rule(interface=st.sampled_from(INTERFACES), ip=st.sampled_from(UNIVERSE_IPS))
    def add_ip(self, interface: InterfaceId, ip: str) -> None:
        # the manager never grows an interface it is detaching
        if interface not in self.cloud or interface == self.pending_detach or self.holder_of(ip) is not None:
            return
        view = self.cloud[interface]
        self.cloud[interface] = view.with_addresses((*view.ips, ip), view.prefixes)
        self.ds.add_ips(interface, [ip])

    @rule(interface=st.sampled_from(INTERFACES), prefix=st.sampled_from(UNIVERSE_PREFIXES))
    def add_prefix(self, interface: InterfaceId, prefix: str) -> None:
        if interface not in self.cloud or interface == self.pending_detach:
            return
        if any(prefix in v.prefixes for v in self.cloud.values()):
            return
        view = self.cloud[interface]
        self.cloud[interface] = view.with_addresses(view.ips, (*view.prefixes, prefix))
        self.ds.add_prefixes(interface, [prefix])

    @rule(interface=st.sampled_from(INTERFACES[1:]), n=st.integers(0, 2))
    def attach_interface(self, interface: InterfaceId, n: int) -> None:
        free = [ip for ip in UNIVERSE_IPS if self.holder_of(ip) is None][:n]
        if interface in self.cloud:
            return
        view = iface(int(interface[-1]), free)
        self.cloud[interface] = view
        self.ds.add_interface(view, now=self.now)

    @precondition(lambda self: self.pending_release is None and self.pending_detach is None)
    @rule(interface=st.sampled_from(INTERFACES), data=st.data())
    def begin_release(self, interface: InterfaceId, data: st.DataObject) -> None:
        if interface not in self.cloud:
            return
        view = self.cloud[interface]
        chosen_ips = (
            tuple(data.draw(st.lists(st.sampled_from(view.ips), max_size=3, unique=True))) if view.ips else ()
        )
        chosen_prefixes = (
            tuple(data.draw(st.lists(st.sampled_from(view.prefixes), max_size=1))) if view.prefixes else ()
        )
        if not chosen_ips and not chosen_prefixes:
            return
        addresses = [*chosen_ips, *(a for p in chosen_prefixes for a in _prefix_addresses(p))]
        all_free = all(self.ds.address_state(a, now=self.now) is FREE for a in addresses)
        before = (self.ds.snapshot(), self.ds.view(now=self.now))
        if not all_free:
            with pytest.raises(PoolError):
                self.ds.begin_release(interface, ips=chosen_ips, prefixes=chosen_prefixes)
            assert (self.ds.snapshot(), self.ds.view(now=self.now)) == before
            return
        self.ds.begin_release(interface, ips=chosen_ips, prefixes=chosen_prefixes)
        self.pending_release = (interface, chosen_ips, chosen_prefixes)

    @precondition(lambda self: self.pending_release is not None)
    @rule(succeeded=st.booleans())
    def end_release(self, succeeded: bool) -> None:
        assert self.pending_release is not None
        interface, chosen_ips, chosen_prefixes = self.pending_release
        self.pending_release = None
        if not succeeded:
            self.ds.abort_release(interface, ips=chosen_ips, prefixes=chosen_prefixes)
            return
        view = self.cloud[interface]
        self.cloud[interface] = view.with_addresses(
            tuple(i for i in view.ips if i not in chosen_ips),
            tuple(p for p in view.prefixes if p not in chosen_prefixes),
        )
        self.ds.finish_release(interface, ips=chosen_ips, prefixes=chosen_prefixes)

    @precondition(lambda self: self.pending_release is None and self.pending_detach is None)
    @rule(interface=st.sampled_from(INTERFACES))
    def begin_detach(self, interface: InterfaceId) -> None:
        if interface not in self.cloud:
            return
        usage = next(u for u in self.ds.view(now=self.now).interfaces if u.id == interface)
        orphans = [a for a in self.ds.orphaned() if a.interface_id == interface]
        if usage.primary or usage.free != usage.total or orphans:
            with pytest.raises(PoolError):
                self.ds.begin_detach(interface)
            return
        self.ds.begin_detach(interface)
        self.pending_detach = interface

    @precondition(lambda self: self.pending_detach is not None)
    @rule(succeeded=st.booleans())
    def end_detach(self, succeeded: bool) -> None:
        assert self.pending_detach is not None
        interface, self.pending_detach = self.pending_detach, None
        if succeeded:
            del self.cloud[interface]
            self.ds.finish_detach(interface)
        else:
            self.ds.abort_detach(interface)

    # rules: crash recovery

    @rule()
    def quarantine_unassigned(self) -> None:
        before = self.ds.stats(now=self.now)
        count = self.ds.quarantine_unassigned(now=self.now)
        assert count == before.available + before.cooling
        assert self.ds.stats(now=self.now).quarantined == before.quarantined + count

    @rule(ip=st.sampled_from([*UNIVERSE_IPS, "10.0.1.5"]))
    def release_quarantined(self, ip: str) -> None:
        was = self.ds.address_state(ip, now=self.now)
        assert self.ds.release_quarantined(ip, now=self.now) is (was is QUARANTINED)
        if was is QUARANTINED:
            assert self.ds.address_state(ip, now=self.now) is COOLING

    @rule(replace=st.booleans())
    def restart(self, replace: bool) -> None:
        """Snapshot, then restore into a fresh datastore synced with the same interfaces."""
        snap = self.ds.snapshot(now=self.now)
        stats = self.ds.stats(now=self.now)
        releasing = sum(u.releasing for u in self.ds.view(now=self.now).interfaces)
        fresh = Datastore(cooldown=COOLDOWN, primary_interface_pods=self.PRIMARY_PODS)
        fresh.sync_interfaces(self.ds.interfaces(), now=self.now)
        report = fresh.restore(snap, now=self.now)
        assert report.restored == stats.assigned
        assert fresh.snapshot(now=self.now) == snap
        # addresses releasing here are just free there: the release was in flight when we "crashed"
        assert fresh.stats(now=self.now) == dataclasses.replace(stats, available=stats.available + releasing)
        if replace:
            self.ds = fresh
            self.pending_release = None
            self.pending_detach = None
            self.keys = {a.key for a in snap.assignments}

    # invariants

    @invariant()
    def one_key_per_address(self) -> None:
        held = [a for a in self.ds.assignments() if a not in self.ds.orphaned()]
        assert len({a.ip for a in held}) == len(held)
        snap = self.ds.snapshot()
        placed = [a.ip for a in snap.assignments] + [ip for ip, _ in snap.cooling] + list(snap.quarantined)
        assert len(set(placed)) == len(placed)

    @invariant()
    def counts_add_up(self) -> None:
        s = self.ds.stats(now=self.now)
        view = self.ds.view(now=self.now)
        releasing = sum(u.releasing for u in view.interfaces)
        assert s.assigned + s.available + s.cooling + s.quarantined + releasing == s.total
        assert (view.total, view.assigned, view.available, view.cooling) == (
            s.total,
            s.assigned,
            s.available,
            s.cooling,
        )
        assert s.quarantined == sum(u.quarantined for u in view.interfaces)
        held = sum(len(v.ips) + PREFIX_SIZE * len(v.prefixes) for v in self.ds.interfaces())
        assert held == s.total

    @invariant()
    def assignments_sit_on_their_interface_unless_orphaned(self) -> None:
        orphaned = self.ds.orphaned()
        for a in self.ds.assignments():
            holder = self.holder_of(a.ip)
            if a in orphaned:
                state_now = self.ds.address_state(a.ip, now=self.now)
                assert holder is None or state_now in (ASSIGNED, RELEASING)
                continue
            assert holder is not None
            assert holder[0] == a.interface_id
            assert self.ds.address_state(a.ip, now=self.now) is ASSIGNED
            assert self.ds.find_by_ip(a.ip) == a

    @invariant()
    def holdings_equal_the_cloud(self) -> None:
        assert self.ds.interfaces() == [
            v.with_addresses(
                tuple(sorted(v.ips, key=lambda ip: int(ipaddress.IPv4Address(ip)))),
                tuple(sorted(v.prefixes, key=lambda p: int(ipaddress.IPv4Network(p).network_address))),
            )
            for v in sorted(self.cloud.values(), key=lambda v: (v.device_index, v.id))
        ]

    @invariant()
    def known_keys(self) -> None:
        assert {a.key for a in self.ds.assignments()} == self.keys


TestDatastoreMachine = DatastoreMachine.TestCase
TestDatastoreMachine.settings = settings(max_examples=200, stateful_step_count=40, deadline=None)


class NoPrimaryPodsMachine(DatastoreMachine):
    """The same operations without pods on the primary (custom networking): a new assignment never
    lands on the primary, even when only the primary has free or cooling addresses; assignments
    already there (moved by the cloud, restored from a checkpoint) stay with their pods."""

    PRIMARY_PODS = False


TestNoPrimaryPodsMachine = NoPrimaryPodsMachine.TestCase
TestNoPrimaryPodsMachine.settings = settings(max_examples=150, stateful_step_count=40, deadline=None)
