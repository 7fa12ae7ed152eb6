"""Issue 11: a cooling address is handed out only when the pool cannot grow, or after waiting
COOLDOWN_OVERRIDE_WAIT for it to grow; and a datastore race on ADD is its own error (CNI 11).

The datastore part is pure (tables and a hypothesis property, time passed in). The service part runs
a real node (SimCloud, Datastore, policy, PoolManager, GroupCommitter) on an injected clock that only
the test moves, so "the override wait is over" is decided by the test, not by the machine's speed.
"""

from __future__ import annotations

import asyncio
import ipaddress
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from structlog.testing import capture_logs

from ipamd import errors
from ipamd.checkpoint import GroupCommitter
from ipamd.cloud.sim import SimCloud
from ipamd.datapath.base import NoDatapath
from ipamd.metrics import COOLDOWN_OVERRIDE_REASONS, OVERRIDE_CANNOT_GROW, OVERRIDE_WAIT_EXCEEDED
from ipamd.pool.datastore import AddressState, Datastore
from ipamd.pool.model import (
    AttachmentKey,
    ContainerID,
    IfName,
    InterfaceId,
    InterfaceView,
    WarmPoolTargets,
)
from ipamd.requests import Call
from ipamd.rpc.errors import CNI_TRY_AGAIN_LATER, to_rpc_failure
from ipamd.service import IpamService
from tests.unit.pool_node import (
    POD,
    FakeClock,
    Node,
    Running,
    assign_pods,
    key,
    make_node,
    place_pods,
    settle,
)

T0 = 1_700_000_000.0
COOLDOWN = 5.0
FREE, ASSIGNED, COOLING = AddressState.FREE, AddressState.ASSIGNED, AddressState.COOLING


# --- the datastore: assign(..., allow_cooling=False) ---------------------------------------------------


def _store(ips: tuple[str, ...] = ("10.0.0.1", "10.0.0.2", "10.0.0.3")) -> Datastore:
    ds = Datastore(cooldown=COOLDOWN)
    view = InterfaceView(
        id=InterfaceId("eni-0"),
        device_index=0,
        primary=True,
        subnet_id="subnet-1",
        subnet_cidr="10.0.0.0/24",
        primary_ip="10.0.0.10",
        ips=ips,
    )
    ds.sync_interfaces([view], now=T0)
    return ds


def _k(name: str) -> AttachmentKey:
    return AttachmentKey("net", ContainerID(name), IfName("eth0"))


def _add(ds: Datastore, name: str, *, now: float = T0, allow_cooling: bool = True) -> str:
    return ds.assign(_k(name), POD, netns="ns", now=now, allow_cooling=allow_cooling).ip


def _all_cooling(ds: Datastore) -> None:
    """Every address assigned, then released: 10.0.0.2 at T0+1, 10.0.0.1 at T0+2, 10.0.0.3 at T0+3."""
    for name in ("a", "b", "c"):
        _add(ds, name)
    for when, name in ((1, "b"), (2, "a"), (3, "c")):
        ds.unassign(_k(name), now=T0 + when)


@pytest.mark.parametrize(
    ("now", "allow_cooling", "expected_ip", "overrides"),
    [
        pytest.param(T0 + 3, False, None, 0, id="all-cooling-refused"),
        pytest.param(T0 + 3, True, "10.0.0.2", 1, id="all-cooling-allowed-takes-the-one-cooling-longest"),
        pytest.param(T0 + 1 + COOLDOWN, False, "10.0.0.2", 0, id="its-cool-down-ended-it-is-free"),
        pytest.param(T0 + 1 + COOLDOWN - 0.001, False, None, 0, id="a-millisecond-before-it-ends"),
        pytest.param(T0 + 2 + COOLDOWN, False, "10.0.0.1", 0, id="two-ended-the-lowest-free-one"),
    ],
)
def test_assign_without_cooling_addresses(
    now: float, allow_cooling: bool, expected_ip: str | None, overrides: int
) -> None:
    ds = _store()
    _all_cooling(ds)
    if expected_ip is None:
        with pytest.raises(errors.NoAddressAvailable, match="cooling addresses not allowed"):
            _add(ds, "new", now=now, allow_cooling=allow_cooling)
        assert ds.stats(now=now).cooling == 3, "a refused ADD changes nothing"
    else:
        assert _add(ds, "new", now=now, allow_cooling=allow_cooling) == expected_ip
    assert ds.cooldown_overrides == overrides


def test_assign_without_cooling_takes_a_free_address_before_anything_else() -> None:
    ds = _store()
    _add(ds, "a")
    ds.unassign(_k("a"), now=T0)  # 10.0.0.1 cools, 10.0.0.2 and 10.0.0.3 are free
    assert _add(ds, "b", now=T0 + 1, allow_cooling=False) == "10.0.0.2"
    assert ds.cooldown_overrides == 0


def test_assign_without_cooling_is_idempotent_for_a_known_key() -> None:
    ds = _store(("10.0.0.1",))
    first = ds.assign(_k("a"), POD, netns="ns", now=T0)
    again = ds.assign(_k("a"), POD, netns="ns", now=T0 + 1, allow_cooling=False)
    assert again is first


_OPS = st.lists(
    st.one_of(
        st.tuples(st.just("assign"), st.integers(0, 5), st.booleans()),
        st.tuples(st.just("unassign"), st.integers(0, 5), st.just(False)),
        st.tuples(st.just("advance"), st.sampled_from([0.5, 1.0, 4.9, 5.0, 7.0]), st.just(False)),
    ),
    max_size=40,
)


@settings(max_examples=200, deadline=None)
@given(ops=_OPS)
def test_property_no_cooling_address_without_allow_cooling(ops: list[tuple[str, float, bool]]) -> None:
    """Over any history: allow_cooling=False never hands out a cooling address nor counts an override;
    allow_cooling=True takes a cooling address only when nothing is free, and then the one whose
    cool-down ends first (lowest address on a tie)."""
    ds = _store()
    now = T0
    for op, arg, allow_cooling in ops:
        if op == "advance":
            now += arg
            continue
        k = _k(f"c{int(arg)}")
        if op == "unassign":
            ds.unassign(k, now=now)
            continue
        known = ds.get(k)
        snapshot = ds.snapshot(now=now)
        cooling = sorted(snapshot.cooling, key=lambda c: (c[1], int(ipaddress.IPv4Address(c[0]))))
        free = ds.stats(now=now).available
        overrides = ds.cooldown_overrides
        if known is None and not free and not (allow_cooling and cooling):
            with pytest.raises(errors.NoAddressAvailable):
                ds.assign(k, POD, netns="ns", now=now, allow_cooling=allow_cooling)
            assert ds.cooldown_overrides == overrides
            continue
        got = ds.assign(k, POD, netns="ns", now=now, allow_cooling=allow_cooling)
        if known is not None:
            assert got is known
        elif free:
            assert got.ip not in {ip for ip, _ in cooling}
        else:
            assert allow_cooling
            assert got.ip == cooling[0][0]
        assert ds.cooldown_overrides == overrides + (known is None and not free)
        assert ds.address_state(got.ip, now=now) is ASSIGNED


# --- the service: when an ADD may take a cooling address -------------------------------------------


def _serve(
    tmp_path: Path, *, add_wait_timeout: float = 30.0, cooldown_override_wait: float = 30.0, **node: Any
) -> tuple[Node, IpamService]:
    n = make_node(**node)
    committer = GroupCommitter(tmp_path / "ipam.json", n.store.snapshot, clock=n.clock)
    service = IpamService(
        store=n.store,
        committer=committer,
        manager=n.manager,
        datapath=NoDatapath(),
        metrics=n.metrics,
        clock=n.clock,
        add_wait_timeout=add_wait_timeout,
        cooldown_override_wait=cooldown_override_wait,
    )
    return n, service


def _call(container: str) -> Call:
    return Call(key(container), POD, f"/var/run/netns/{container}")


def _overrides(node: Node) -> dict[str, float]:
    return {r: node.sample("cloudcni_cooldown_overrides_total", reason=r) for r in COOLDOWN_OVERRIDE_REASONS}


def _none() -> dict[str, float]:
    return dict.fromkeys(COOLDOWN_OVERRIDE_REASONS, 0.0)


def _one(reason: str) -> dict[str, float]:
    return {**_none(), reason: 1.0}


async def _every_free_address_cooling(node: Node, service: IpamService) -> set[str]:
    """Settle a warm pool, give each free address to a pod and DEL them all: every unassigned
    address is cooling. Returns those addresses."""
    await settle(node)
    free = node.store.stats(now=node.clock()).available
    ips = {(await service.add(_call(f"old{i}"))).assignment.ip for i in range(free)}
    for i in range(free):
        await service.delete(_call(f"old{i}"), None)
    stats = node.store.stats(now=node.clock())
    assert (stats.available, stats.cooling) == (0, len(ips))
    return ips


def test_pool_can_grow_the_add_waits_and_gets_a_fresh_address(tmp_path: Path) -> None:
    """The issue's case: nothing free, addresses cooling, the pool can grow in the next 50 ms."""
    clock = FakeClock()
    node, service = _serve(
        tmp_path,
        targets=WarmPoolTargets(warm_ip=2, cooldown=COOLDOWN),
        clock=clock,
        sim=SimCloud(latency=0.05),
    )

    async def scenario() -> tuple[set[str], str, float]:
        cooling = await _every_free_address_cooling(node, service)
        loop = asyncio.get_running_loop()
        async with Running(node.manager):
            started = loop.time()
            got = (await service.add(_call("new"))).assignment.ip
            return cooling, got, loop.time() - started

    cooling, got, took = asyncio.run(scenario())
    assert got not in cooling, "a fresh address, not one still cooling"
    assert node.store.address_state(got, now=clock()) is ASSIGNED
    assert all(node.store.address_state(ip, now=clock()) is COOLING for ip in cooling)
    assert took >= 0.03, "it waited for the cloud"
    assert _overrides(node) == _none()
    assert node.sample("cloudcni_no_ip_available_total") == 0


def _at_its_limit(node: Node) -> None:
    """Nothing to add: the pods placed hold every address the node may have."""


def _paused(node: Node) -> None:
    node.manager.growth_paused_until = node.clock() + 60.0


def _held(node: Node) -> None:
    node.manager.hold_growth("no ENIConfig for this node yet", source="test")


@pytest.mark.parametrize(
    ("instance_type", "targets", "pods", "block", "why"),
    [
        pytest.param("t3.small", WarmPoolTargets(cooldown=COOLDOWN), 9, _at_its_limit, "holds its maximum",
                     id="every-slot-in-use"),
        pytest.param("m5.large", WarmPoolTargets(warm_ip=2, max_pods=3, cooldown=COOLDOWN), 3, _at_its_limit,
                     "max pods 3", id="max-pods"),
        pytest.param("m5.large", WarmPoolTargets(warm_ip=2, cooldown=COOLDOWN), 4, _paused, "paused",
                     id="growth-paused"),
        pytest.param("m5.large", WarmPoolTargets(warm_ip=2, cooldown=COOLDOWN), 4, _held, "held",
                     id="growth-held"),
        pytest.param("m5.large", WarmPoolTargets(minimum_ip=3, cooldown=COOLDOWN), 3, _at_its_limit,
                     "not below its targets", id="minimum-ip-only-will-not-grow"),
    ],
)  # fmt: skip
def test_pool_cannot_grow_the_cooling_longest_address_is_served_at_once(  # noqa: PLR0917 (a table)
    tmp_path: Path,
    instance_type: str,
    targets: WarmPoolTargets,
    pods: int,
    block: Callable[[Node], None],
    why: str,
) -> None:
    clock = FakeClock()
    node, service = _serve(tmp_path, instance_type=instance_type, targets=targets, clock=clock)

    async def scenario() -> tuple[str, str, float]:
        await place_pods(node, pods)
        assign_pods(node, node.store.stats(now=clock()).available, prefix="extra")  # nothing free
        held = node.store.stats(now=clock()).total
        pod0 = node.store.get(key("pod0"))
        assert pod0 is not None
        first = pod0.ip
        await service.delete(_call("pod0"), None)
        clock.advance(1.0)
        await service.delete(_call("pod1"), None)
        block(node)
        loop = asyncio.get_running_loop()
        async with Running(node.manager):
            started = loop.time()
            got = (await service.add(_call("new"))).assignment.ip
            took = loop.time() - started
        assert node.store.stats(now=clock()).total == held, "the pool did not grow"
        return first, got, took

    with capture_logs() as logs:
        first, got, took = asyncio.run(scenario())
    assert got == first, "the address cooling longest"
    assert took < 1.0, "served at once (both waits are 30 s)"
    assert _overrides(node) == _one(OVERRIDE_CANNOT_GROW)
    assert node.sample("cloudcni_no_ip_available_total") == 0
    (logged,) = [e for e in logs if e["event"] == "ip_cooldown_overridden"]
    assert (logged["reason"], logged["ip"]) == ("cannot_grow", first)
    assert why in logged["why"]


@pytest.mark.parametrize(
    ("add_wait_timeout", "cooldown_override_wait"),
    [
        pytest.param(30.0, 2.0, id="override-wait-ends-first"),
        pytest.param(2.0, 30.0, id="add-wait-ends-first-still-no-failure"),
    ],
)
def test_pool_does_not_grow_in_time_the_override_comes_when_the_wait_is_over(
    tmp_path: Path, add_wait_timeout: float, cooldown_override_wait: float
) -> None:
    """The pool could grow but does not (the manager is not running: a stuck cloud). The ADD waits;
    once the injected clock passes the shorter of the two waits, the next look takes the address
    cooling longest."""
    clock = FakeClock()
    node, service = _serve(
        tmp_path,
        targets=WarmPoolTargets(warm_ip=2, cooldown=COOLDOWN),
        clock=clock,
        add_wait_timeout=add_wait_timeout,
        cooldown_override_wait=cooldown_override_wait,
    )

    async def scenario() -> tuple[str, str]:
        await settle(node)
        first = (await service.add(_call("c1"))).assignment.ip
        await service.add(_call("c2"))
        await service.delete(_call("c1"), None)
        clock.advance(0.5)
        await service.delete(_call("c2"), None)
        adding = asyncio.create_task(service.add(_call("new")))
        await asyncio.sleep(0.05)  # it started (at T0 + 0.5) and waits
        clock.advance(1.8)
        await node.manager.addresses_freed()  # any wake-up: it looks again
        await asyncio.sleep(0.05)
        assert not adding.done(), "the pool can grow: the ADD waits"
        assert _overrides(node) == _none()
        clock.advance(0.3)  # 2.1 s since the ADD started
        await node.manager.addresses_freed()
        got = (await asyncio.wait_for(adding, 1.0)).assignment.ip
        return first, got

    with capture_logs() as logs:
        first, got = asyncio.run(scenario())
    assert got == first
    assert _overrides(node) == _one(OVERRIDE_WAIT_EXCEEDED)
    assert node.sample("cloudcni_no_ip_available_total") == 0
    assert [e["reason"] for e in logs if e["event"] == "ip_cooldown_overridden"] == ["wait_exceeded"]


def test_override_wait_runs_out_in_real_time_without_any_wake_up(tmp_path: Path) -> None:
    """Nobody wakes the waiting ADD (the clock is frozen, nothing grows): the bounded wait for
    growth itself ends it."""
    node, service = _serve(
        tmp_path, targets=WarmPoolTargets(warm_ip=1, cooldown=COOLDOWN), cooldown_override_wait=0.2
    )

    async def scenario() -> tuple[str, str, float]:
        await settle(node)
        first = (await service.add(_call("c1"))).assignment.ip
        await service.delete(_call("c1"), None)
        loop = asyncio.get_running_loop()
        started = loop.time()
        got = (await service.add(_call("c2"))).assignment.ip
        return first, got, loop.time() - started

    first, got, took = asyncio.run(scenario())
    assert got == first
    assert 0.2 <= took < 2.0
    assert _overrides(node) == _one(OVERRIDE_WAIT_EXCEEDED)


# --- item 6: a datastore race on ADD ---------------------------------------------------------------


class _DelDuringCommit(GroupCommitter):
    """The first commit lets a concurrent DEL of the same attachment win (as an interleaved RPC does)."""

    store: Datastore

    async def commit(self) -> int:
        if not getattr(self, "raced", False):
            self.raced = True
            self.store.unassign(key("c1"), now=T0)
        return await super().commit()


def test_an_attachment_changed_while_stored_is_its_own_error_and_cni_11(tmp_path: Path) -> None:
    node = make_node(targets=WarmPoolTargets(warm_ip=2))
    committer = _DelDuringCommit(tmp_path / "ipam.json", node.store.snapshot, clock=node.clock)
    committer.store = node.store
    service = IpamService(
        store=node.store, committer=committer, manager=node.manager, datapath=NoDatapath(), clock=node.clock
    )

    async def scenario() -> None:
        await settle(node)
        with pytest.raises(errors.AttachmentChanged, match="changed while it was being stored") as raised:
            await service.add(_call("c1"))
        assert isinstance(raised.value, errors.PoolError)
        assert not isinstance(raised.value, errors.CloudError), "not the cloud's fault"
        failure = to_rpc_failure(raised.value)
        assert (failure.status, failure.cni_code) == (grpc.StatusCode.ABORTED, CNI_TRY_AGAIN_LATER)

    asyncio.run(scenario())
    assert node.store.get(key("c1")) is None
