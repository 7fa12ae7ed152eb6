"""The CNI verbs as IpamService serves them, on a real node (SimCloud, Datastore, policy, manager)
and a real GroupCommitter writing the checkpoint in tmp_path; failures come from an injected write."""

from __future__ import annotations

import asyncio
import errno
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from ipamd.checkpoint import GroupCommitter, decode, write_atomic
from ipamd.cloud.sim import SimCloud
from ipamd.datapath.base import NoDatapath
from ipamd.errors import AllocationNotFound, CheckpointError, DatapathError, NoAddressAvailable
from ipamd.pool.datastore import AddressState
from ipamd.pool.model import AttachmentKey, ContainerID, IfName, PodRef, PoolSnapshot, WarmPoolTargets
from ipamd.requests import Call
from ipamd.service import IpamService
from tests.unit.pool_node import (
    NETWORK,
    POD,
    T0,
    FakeClock,
    Node,
    Running,
    assign_pods,
    eventually,
    key,
    make_node,
    place_pods,
    settle,
)


class FlakyWrite:
    """The checkpoint's durable write, failing (as a full disk does) while ``failing`` is set."""

    def __init__(self) -> None:
        self.failing = False
        self.attempts = 0

    def __call__(self, path: Path, data: bytes) -> None:
        self.attempts += 1
        if self.failing:
            raise OSError(errno.ENOSPC, "No space left on device")
        write_atomic(path, data)


@dataclass
class Served:
    node: Node
    service: IpamService
    committer: GroupCommitter
    path: Path
    write: FlakyWrite = field(default_factory=FlakyWrite)

    def saved(self) -> PoolSnapshot:
        return decode(self.path.read_bytes()).snapshot

    def state(self, ip: str) -> AddressState | None:
        return self.node.store.address_state(ip, now=self.node.clock())


class FailingWiring(NoDatapath):
    """A datapath whose wiring fails (the netns vanished, say) and that records leftover sweeps."""

    def __init__(self) -> None:
        self.sweeps: list[tuple[int, int]] = []

    async def add_pod(self, assignment: Any, *, dns: Any = None) -> Any:
        raise DatapathError("the netns is gone")

    async def remove_leftovers(self, assignments: Any, views: Any) -> None:
        self.sweeps.append((len(assignments()), len(views())))


def serve(
    tmp_path: Path, *, add_wait_timeout: float = 0.2, datapath: NoDatapath | None = None, **node_args: Any
) -> Served:
    node = make_node(**node_args)
    write = FlakyWrite()
    path = tmp_path / "ipam.json"
    committer = GroupCommitter(path, node.store.snapshot, clock=node.clock, write=write)
    service = IpamService(
        store=node.store,
        committer=committer,
        manager=node.manager,
        datapath=datapath or NoDatapath(),
        metrics=node.metrics,
        clock=node.clock,
        add_wait_timeout=add_wait_timeout,
    )
    return Served(node, service, committer, path, write)


def call(container: str, ifname: str = "eth0") -> Call:
    return Call(key(container, ifname), POD, f"/var/run/netns/{container}")


def prev_result(*ips: str) -> dict[str, Any]:
    return {"cniVersion": "1.1.0", "ips": [{"address": f"{ip}/22"} for ip in ips]}


# --- ADD ---------------------------------------------------------------------------------------


def test_a_failed_wiring_frees_the_address_at_once_no_cool_down(tmp_path: Path) -> None:
    """No pod ever ran with it, so no connection can outlive it: it is free for the next ADD."""
    s = serve(tmp_path, targets=WarmPoolTargets(warm_ip=2), datapath=FailingWiring())

    async def scenario() -> None:
        await settle(s.node)
        with pytest.raises(DatapathError, match="the netns is gone"):
            await s.service.add(call("c1"))

    asyncio.run(scenario())
    assert s.node.store.get(key("c1")) is None
    stats = s.node.store.stats(now=T0)
    assert (stats.assigned, stats.cooling) == (0, 0)
    assert key("c1") not in {a.key for a in s.saved().assignments}


def test_gc_sweeps_datapath_leftovers_after_releasing(tmp_path: Path) -> None:
    wiring = FailingWiring()
    s = serve(tmp_path, targets=WarmPoolTargets(warm_ip=2), datapath=wiring)

    async def scenario() -> None:
        await settle(s.node)
        await s.service.gc("cloud-cni", [])

    asyncio.run(scenario())
    assert wiring.sweeps == [(0, len(s.node.store.interfaces()))]


def test_add_is_idempotent_one_attachment_one_address(tmp_path: Path) -> None:
    s = serve(tmp_path, targets=WarmPoolTargets(warm_ip=2))

    async def scenario() -> None:
        await settle(s.node)
        first = await s.service.add(call("c1"))
        again = await s.service.add(call("c1"))
        assert again.assignment == first.assignment
        other = await s.service.add(call("c1", "eth1"))  # another interface of the pod: its own address
        assert other.assignment.ip != first.assignment.ip

    asyncio.run(scenario())
    assert s.node.store.stats(now=T0).assigned == 2
    saved = {a.key: a.ip for a in s.saved().assignments}
    assert len(saved) == 2
    assert saved[key("c1")] == s.node.store.get(key("c1")).ip


def test_add_on_an_empty_pool_waits_for_the_running_manager_to_grow_it(tmp_path: Path) -> None:
    sim = SimCloud(latency=0.05)
    s = serve(tmp_path, targets=WarmPoolTargets(warm_ip=2), sim=sim, add_wait_timeout=3.0)
    assert s.node.store.stats(now=T0).total == 0

    async def scenario() -> float:
        loop = asyncio.get_running_loop()
        async with Running(s.node.manager):
            started = loop.time()
            result = await s.service.add(call("c1"))
            took = loop.time() - started
        (primary,) = sim.list_interfaces()
        assert result.assignment.ip in primary.ips
        return took

    took = asyncio.run(scenario())
    assert took >= 0.03, "it did not wait for the cloud"
    assert s.node.sample("cloudcni_no_ip_available_total") == 0
    assert [a.key for a in s.saved().assignments] == [key("c1")]


def test_add_wakes_the_manager_which_tops_the_pool_up_at_once(tmp_path: Path) -> None:
    s = serve(tmp_path, targets=WarmPoolTargets(warm_ip=2))

    async def scenario() -> float:
        async with Running(s.node.manager):
            await eventually(lambda: s.node.manager.batches == 1)
            await asyncio.sleep(0.05)  # idle: the frozen clock makes it sleep 5 s unless woken
            await s.service.add(call("c1"))
            return await eventually(lambda: s.node.store.stats(now=T0).available == 2, timeout=4.0)

    assert asyncio.run(scenario()) < 1.0


def test_add_on_a_full_node_answers_no_address_available_after_the_wait(tmp_path: Path) -> None:
    # t3.small: 3 interfaces x 3 secondary slots, all assigned.
    s = serve(tmp_path, instance_type="t3.small", add_wait_timeout=0.2)

    async def scenario() -> float:
        await place_pods(s.node, 9)
        assert s.node.held() == [3, 3, 3]
        loop = asyncio.get_running_loop()
        async with Running(s.node.manager):
            started = loop.time()
            with pytest.raises(NoAddressAvailable, match="try again later"):
                await s.service.add(call("c1"))
            return loop.time() - started

    took = asyncio.run(scenario())
    assert 0.2 <= took < 1.5
    assert s.node.sample("cloudcni_no_ip_available_total") == 1
    assert s.node.store.get(key("c1")) is None


def test_a_del_on_a_full_node_lets_a_waiting_add_through_at_once(tmp_path: Path) -> None:
    s = serve(tmp_path, instance_type="t3.small", add_wait_timeout=3.0)

    async def scenario() -> tuple[str, str, float]:
        ips = await place_pods(s.node, 9)
        loop = asyncio.get_running_loop()
        async with Running(s.node.manager):
            adding = asyncio.create_task(s.service.add(call("new")))
            await asyncio.sleep(0.1)
            assert not adding.done(), "the node is full: the ADD waits"
            started = loop.time()
            await s.service.delete(call("pod4"), None)
            result = await asyncio.wait_for(adding, 2.0)
            return result.assignment.ip, ips[4], loop.time() - started

    ip, freed, took = asyncio.run(scenario())
    assert ip == freed, "the only address to be had is the one the DEL freed, still cooling"
    assert took < 1.0
    assert s.node.sample("cloudcni_cooldown_overrides_total", reason="cannot_grow") == 1
    assert s.node.sample("cloudcni_no_ip_available_total") == 0


def test_add_when_every_unassigned_address_is_cooling_takes_the_one_cooling_longest(
    tmp_path: Path,
) -> None:
    clock = FakeClock()
    s = serve(tmp_path, targets=WarmPoolTargets(warm_ip=2, cooldown=30.0), clock=clock)

    async def scenario() -> None:
        await settle(s.node)  # 2 addresses; the manager does not run, so nothing grows
        first = (await s.service.add(call("c1"))).assignment.ip
        second = (await s.service.add(call("c2"))).assignment.ip
        await s.service.delete(call("c1"), None)
        clock.advance(1.0)
        await s.service.delete(call("c2"), None)
        assert s.node.store.stats(now=clock()).available == 0
        assert s.node.sample("cloudcni_cooldown_overrides_total", reason="wait_exceeded") == 0
        result = await s.service.add(call("c3"))  # nothing grows it (no manager): after the wait
        assert result.assignment.ip == first
        assert s.state(second) is AddressState.COOLING

    asyncio.run(scenario())
    assert s.node.sample("cloudcni_cooldown_overrides_total", reason="wait_exceeded") == 1
    assert s.node.sample("cloudcni_no_ip_available_total") == 0


def test_a_checkpoint_write_failure_on_add_rolls_the_assignment_back(tmp_path: Path) -> None:
    clock = FakeClock()
    s = serve(tmp_path, targets=WarmPoolTargets(warm_ip=2, cooldown=30.0), clock=clock)

    async def scenario() -> None:
        await settle(s.node)
        lowest = s.node.primary().ips[0]
        s.write.failing = True
        with pytest.raises(CheckpointError, match="No space left"):
            await s.service.add(call("c1"))
        assert s.node.store.get(key("c1")) is None
        assert s.node.store.stats(now=clock()).assigned == 0
        assert s.state(lowest) is AddressState.COOLING, "never handed out, yet it may have been seen"
        s.write.failing = False
        clock.advance(30.0)
        assert s.state(lowest) is AddressState.FREE
        again = await s.service.add(call("c2"))
        assert again.assignment.ip == lowest

    asyncio.run(scenario())
    assert s.node.store.stats(now=clock()).total == 2, "no address was lost"
    assert [a.key for a in s.saved().assignments] == [key("c2")]


# --- DEL ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "prev",
    [
        pytest.param(None, id="no-prev-result"),
        pytest.param(prev_result("10.0.0.200"), id="prev-result-naming-an-address-not-held"),
        pytest.param({"cniVersion": "1.1.0"}, id="prev-result-without-ips"),
    ],
)
def test_del_of_an_unknown_attachment_succeeds_and_changes_nothing(
    tmp_path: Path, prev: dict[str, Any] | None
) -> None:
    s = serve(tmp_path, targets=WarmPoolTargets(warm_ip=2))

    async def scenario() -> None:
        await settle(s.node)
        await s.service.add(call("c1"))
        writes = s.committer.writes
        before = s.node.store.snapshot()
        await s.service.delete(call("unknown"), prev)
        assert s.node.store.snapshot() == before
        assert s.committer.writes == writes

    asyncio.run(scenario())


def test_del_with_a_prev_result_naming_a_quarantined_address_releases_it(tmp_path: Path) -> None:
    s = serve(tmp_path, targets=WarmPoolTargets(warm_ip=2))

    async def scenario() -> None:
        await settle(s.node)
        held, other = s.node.primary().ips
        assert s.node.store.quarantine_unassigned(now=T0) == 2  # as after a lost checkpoint
        await s.service.delete(call("gone"), prev_result(held))
        assert s.state(held) is AddressState.COOLING
        assert s.state(other) is AddressState.QUARANTINED
        saved = s.saved()
        assert saved.quarantined == (other,)
        assert [ip for ip, _ in saved.cooling] == [held]

    asyncio.run(scenario())


def test_del_frees_the_address_to_cool_and_makes_it_durable(tmp_path: Path) -> None:
    s = serve(tmp_path, targets=WarmPoolTargets(warm_ip=2, cooldown=30.0))

    async def scenario() -> None:
        await settle(s.node)
        ip = (await s.service.add(call("c1"))).assignment.ip
        await s.service.delete(call("c1"), prev_result(ip))
        assert s.node.store.get(key("c1")) is None
        assert s.state(ip) is AddressState.COOLING

    asyncio.run(scenario())
    saved = s.saved()
    assert saved.assignments == ()
    assert [ip for ip, until in saved.cooling if until == T0 + 30.0] == [s.node.primary().ips[0]]


# --- CHECK -------------------------------------------------------------------------------------


def _no_prev_result(ip: str) -> None:
    return None


def _another_address(ip: str) -> dict[str, Any]:
    return prev_result("10.0.0.200")


@pytest.mark.parametrize(
    ("container", "prev", "error"),
    [
        pytest.param("c1", prev_result, None, id="matching-prev-result"),
        pytest.param("c1", _no_prev_result, None, id="no-prev-result"),
        pytest.param("unknown", prev_result, "no address is assigned", id="unknown-attachment"),
        pytest.param("c1", _another_address, "prevResult lists", id="mismatching-ip"),
    ],
)
def test_check(
    tmp_path: Path, container: str, prev: Callable[[str], dict[str, Any] | None], error: str | None
) -> None:
    s = serve(tmp_path, targets=WarmPoolTargets(warm_ip=2))

    async def scenario() -> None:
        await settle(s.node)
        ip = (await s.service.add(call("c1"))).assignment.ip
        if error is None:
            await s.service.check(call(container), prev(ip))
        else:
            with pytest.raises(AllocationNotFound, match=error):
                await s.service.check(call(container), prev(ip))

    asyncio.run(scenario())


class CheckedNetns(NoDatapath):
    """Records the netns each CHECK is asked to inspect; a CHECK with none fails as the real one does."""

    def __init__(self) -> None:
        self.checked: list[str] = []

    async def check_pod(self, assignment: Any) -> None:
        if not assignment.netns:
            raise DatapathError("CNI_NETNS is empty")
        self.checked.append(assignment.netns)


@pytest.mark.parametrize(
    ("recorded", "expected"),
    [
        pytest.param("", "/var/run/netns/c1", id="adopted-no-netns-uses-the-calls"),
        pytest.param("/var/run/netns/own", "/var/run/netns/own", id="recorded-netns-wins"),
    ],
)
def test_check_of_an_assignment_without_netns_uses_the_calls(
    tmp_path: Path, recorded: str, expected: str
) -> None:
    """aws-vpc-cni records no netns: an adopted pod's CHECK inspects the netns the runtime passes."""
    wiring = CheckedNetns()
    s = serve(tmp_path, targets=WarmPoolTargets(warm_ip=2), datapath=wiring)

    async def scenario() -> None:
        await settle(s.node)
        s.node.store.assign(key("c1"), POD, netns=recorded, now=s.node.clock())
        await s.service.check(call("c1"), None)

    asyncio.run(scenario())
    assert wiring.checked == [expected]
    assert s.node.store.get(key("c1")).netns == recorded  # type: ignore[union-attr]


# --- GC ----------------------------------------------------------------------------------------


def test_gc_releases_stale_attachments_and_keeps_valid_ones(tmp_path: Path) -> None:
    clock = FakeClock()
    s = serve(tmp_path, targets=WarmPoolTargets(warm_ip=4), clock=clock)
    elsewhere = AttachmentKey("other-net", ContainerID("c9"), IfName("eth0"))

    async def scenario() -> int:
        await settle(s.node)
        for c in ("c0", "c1", "c2"):
            await s.service.add(call(c))
        s.node.store.assign(elsewhere, PodRef(), netns="", now=clock())
        clock.advance(1.0)
        return await s.service.gc(NETWORK, [("c1", "eth0")])

    assert asyncio.run(scenario()) == 2
    store = s.node.store
    assert store.get(key("c0")) is None and store.get(key("c2")) is None
    assert store.get(key("c1")) is not None
    assert store.get(elsewhere) is not None, "GC of one network leaves another alone"
    assert store.stats(now=clock()).cooling == 2
    assert sorted(a.key for a in s.saved().assignments) == sorted([key("c1"), elsewhere])


# --- STATUS ------------------------------------------------------------------------------------


async def _all_assigned(s: Served) -> None:
    await settle(s.node)
    assign_pods(s.node, s.node.store.stats(now=s.node.clock()).available)


async def _paused_and_empty(s: Served) -> None:
    await _all_assigned(s)
    s.node.manager.growth_paused_until = T0 + 10.0


async def _paused_with_one_cooling(s: Served) -> None:
    await _paused_and_empty(s)
    s.node.store.unassign(key("pod0"), now=T0)


async def _instance_full(s: Served) -> None:
    await place_pods(s.node, 9)


async def _quarantined_up_to_max_pods(s: Served) -> None:
    await settle(s.node)
    assign_pods(s.node, 2)
    s.node.store.quarantine_unassigned(now=T0)


async def _nothing(s: Served) -> None:
    return None


async def _settled(s: Served) -> None:
    await settle(s.node)


WARM_2 = {"targets": WarmPoolTargets(warm_ip=2)}
MAX_PODS_4 = {"targets": WarmPoolTargets(warm_ip=4, max_pods=4)}


@pytest.mark.parametrize(
    ("node_args", "setup", "ready", "message"),
    [
        pytest.param(WARM_2, _settled, True, "", id="free"),
        pytest.param(WARM_2, _nothing, True, "", id="empty-can-grow"),
        pytest.param(WARM_2, _all_assigned, True, "", id="all-assigned-can-grow"),
        pytest.param(WARM_2, _paused_and_empty, False, "paused", id="paused"),
        pytest.param(WARM_2, _paused_with_one_cooling, True, "", id="paused-but-cooling"),
        pytest.param({"instance_type": "t3.small"}, _instance_full, False, "maximum", id="instance-full"),
        pytest.param(MAX_PODS_4, _all_assigned, False, "maximum", id="max-pods"),
        pytest.param(
            MAX_PODS_4,
            _quarantined_up_to_max_pods,
            False,
            "maximum",
            id="quarantined-up-to-max-pods",
        ),
    ],
)
def test_status(
    tmp_path: Path,
    node_args: dict[str, Any],
    setup: Callable[[Served], Any],
    ready: bool,
    message: str,
) -> None:
    s = serve(tmp_path, **node_args)
    asyncio.run(setup(s))
    status = s.service.status()
    stats = s.node.store.stats(now=T0)
    assert (status.available, status.assigned, status.total) == (stats.available, stats.assigned, stats.total)
    assert status.ready is ready, status.message
    assert message in status.message
    assert bool(status.message) is not ready
