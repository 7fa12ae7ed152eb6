"""The pool manager loop on the real SimCloud, Datastore, policy and CloudCaller, in-process.

Time that the policy reads (release delay, growth pause, cool-down) is a FakeClock the test moves;
the loop's own sleeps are real but short, and a test that needs the running loop says how long it
may take.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import random
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from ipamd.checkpoint import GroupCommitter
from ipamd.cloud.sim import SimCloud
from ipamd.datapath.base import NoDatapath
from ipamd.errors import (
    CloudError,
    CloudPermissionError,
    LimitExceeded,
    PermanentCloudError,
    SubnetFull,
    TemporaryCloudError,
)
from ipamd.pool.datastore import AddressState
from ipamd.pool.model import InterfaceId, InterfaceView, WarmPoolTargets
from ipamd.requests import Call
from ipamd.service import IpamService
from tests.unit.pool_node import (
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

# --- growth ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("instance_type", "targets", "held"),
    [
        pytest.param("m5.large", WarmPoolTargets(), [9], id="warm-eni-1"),
        pytest.param("m5.large", WarmPoolTargets(warm_eni=2), [9, 9], id="warm-eni-2-fills-and-attaches"),
        pytest.param("m5.large", WarmPoolTargets(warm_ip=16), [9, 7], id="warm-ip-16"),
        pytest.param("m5.large", WarmPoolTargets(minimum_ip=2), [2], id="minimum-ip-2"),
        pytest.param(
            "t3.small",
            WarmPoolTargets(prefix_delegation=True, warm_prefix=1, max_pods=110),
            [16],
            id="prefix-delegation-warm-prefix-1",
        ),
    ],
)
def test_step_grows_a_fresh_node_to_its_warm_target_and_a_second_step_is_a_no_op(
    instance_type: str, targets: WarmPoolTargets, held: list[int]
) -> None:
    node = make_node(targets=targets, instance_type=instance_type)

    async def scenario() -> None:
        assert node.held() == [0]
        assert await node.manager.step() is True
        assert node.held() == held
        assert node.cloud_held() == held, "the datastore holds what the cloud holds"
        assert node.store.stats(now=node.clock()).available == sum(held)
        calls = node.mutations()
        assert await node.manager.step() is False
        assert node.mutations() == calls
        assert node.manager.batches == 1

    asyncio.run(scenario())


def test_wake_makes_the_running_loop_grow_at_once_rather_than_after_its_idle_sleep() -> None:
    # The clock is frozen, so an idle loop sleeps its full _MAX_IDLE (5 s): growth within half a
    # second can only be the wake's doing.
    node = make_node(targets=WarmPoolTargets(warm_ip=2))

    async def scenario() -> float:
        async with Running(node.manager):
            await eventually(lambda: node.manager.batches == 1)
            await asyncio.sleep(0.05)  # it planned again, found nothing to do, and sleeps
            assert node.store.stats(now=node.clock()).available == 2
            assign_pods(node, 2)  # two ADDs took the warm addresses
            await asyncio.sleep(0.2)
            assert node.manager.batches == 1, "the loop should be asleep until woken"
            node.manager.wake()
            return await eventually(lambda: node.store.stats(now=node.clock()).available == 2, timeout=4.0)

    took = asyncio.run(scenario())
    assert took < 1.0
    assert node.held() == [4]


# --- pacing: min_action_interval (POOL_MIN_ACTION_INTERVAL) ------------------------------------


def run_two_batches(
    node: Node, monkeypatch: pytest.MonkeyPatch, *, batch_seconds: float
) -> tuple[list[float], list[tuple[float, bool]]]:
    """Run the real loop on the node's FakeClock until it has made two batches.

    Each batch takes ``batch_seconds`` of fake time; right after the first, two ADDs take the warm
    addresses (and wake the loop), so the second batch is due at once. The loop's sleeps advance the
    fake clock instead of waiting. Returns the fake times the batches started and the sleeps
    (seconds, wakeable) the loop took between them.
    """
    clock = node.clock
    assert isinstance(clock, FakeClock)
    manager = node.manager
    stop = asyncio.Event()
    starts: list[float] = []
    sleeps: list[tuple[float, bool]] = []
    step = manager.step

    async def timed_step() -> bool:
        began = clock()
        acted = await step()
        if acted:
            starts.append(began)
            clock.advance(batch_seconds)
            if len(starts) == 1:
                assign_pods(node, 2)
                manager.wake()
            else:
                stop.set()
        return acted

    async def fake_sleep(timeout: float, _stop: asyncio.Event, *, wakeable: bool = True) -> None:
        if len(starts) < 2:
            sleeps.append((timeout, wakeable))
        clock.advance(timeout)
        await asyncio.sleep(0)

    monkeypatch.setattr(manager, "step", timed_step)
    monkeypatch.setattr(manager, "_sleep", fake_sleep)
    asyncio.run(asyncio.wait_for(manager.run(stop), 2.0))
    assert len(starts) == 2
    assert node.sim.calls["assign_ips"] == 2
    assert node.held() == [4]
    return starts, sleeps


def test_min_action_interval_keeps_two_consecutive_batches_at_least_that_far_apart(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    node = make_node(targets=WarmPoolTargets(warm_ip=2), clock=FakeClock(), min_action_interval=5.0)
    starts, sleeps = run_two_batches(node, monkeypatch, batch_seconds=2.0)
    assert starts == [T0, T0 + 5.0]
    assert starts[1] - starts[0] >= 5.0
    # The batch took 2 s, so the loop waited the other 3 s; an ADD's wake does not cut that short.
    assert sleeps == [(3.0, False)]


def test_min_action_interval_zero_starts_the_next_batch_as_soon_as_one_ends(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    node = make_node(targets=WarmPoolTargets(warm_ip=2), clock=FakeClock(), min_action_interval=0.0)
    starts, sleeps = run_two_batches(node, monkeypatch, batch_seconds=2.0)
    assert starts == [T0, T0 + 2.0], "the second batch starts when the first ends"
    assert sleeps == []


def test_min_action_interval_waits_at_most_the_interval_when_the_clock_steps_back(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The manager's clock is wall time (cool-down deadlines are epoch seconds): an NTP step back of
    # an hour during a batch must not hold the next batch back for an hour.
    node = make_node(targets=WarmPoolTargets(warm_ip=2), clock=FakeClock(), min_action_interval=5.0)
    _, sleeps = run_two_batches(node, monkeypatch, batch_seconds=-3600.0)
    assert sleeps == [(5.0, False)]


# --- hysteresis --------------------------------------------------------------------------------


def test_surplus_is_released_only_after_the_release_delay() -> None:
    clock = FakeClock()
    node = make_node(targets=WarmPoolTargets(warm_ip=2, cooldown=0.0, release_delay=30.0), clock=clock)

    async def scenario() -> None:
        await place_pods(node, 5)
        assert node.held() == [7]
        for i in range(5):
            node.store.unassign(key(f"pod{i}"), now=clock())  # 7 free, the target is 2
        for elapsed in (0.0, 10.0, 29.9):
            clock.now = T0 + elapsed
            assert await node.manager.step() is False, f"released {elapsed}s after growing"
        assert node.sim.calls["release_ips"] == 0
        clock.now = T0 + 30.0
        assert await node.manager.step() is True
        assert node.sim.calls["release_ips"] == 1
        assert node.held() == [2] == node.cloud_held()
        assert node.manager.last_decrease_at == T0 + 30.0
        assert await node.manager.step() is False, "a shrink is not followed by growth"

    asyncio.run(scenario())


# --- growth pauses -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("error", "reconcile_at_once"),
    [
        pytest.param(SubnetFull("assign_ips", "InsufficientFreeAddressesInSubnet"), False, id="subnet-full"),
        pytest.param(LimitExceeded("assign_ips", "PrivateIpAddressLimitExceeded"), True, id="limit-exceeded"),
        pytest.param(
            CloudPermissionError("assign_ips", "UnauthorizedOperation", "ec2:AssignPrivateIpAddresses"),
            False,
            id="permission",
        ),
    ],
)
def test_a_refused_growth_pauses_growth_for_growth_pause_then_growth_resumes(
    error: CloudError, reconcile_at_once: bool
) -> None:
    clock = FakeClock()
    node = make_node(targets=WarmPoolTargets(warm_ip=2), clock=clock, growth_pause=120.0)
    node.sim.inject("assign_ips", error)

    async def scenario() -> None:
        assert await node.manager.step() is True
        assert node.manager.growth_paused_until == T0 + 120.0
        assert node.manager.reconcile_pending is reconcile_at_once
        assert node.held() == [0]
        assert node.sample("cloudcni_pool_actions_total", action="AssignIps", result="error") == 1
        for elapsed in (0.0, 60.0, 119.9):
            clock.now = T0 + elapsed
            assert await node.manager.step() is False
            assert node.sample("cloudcni_pool_growth_paused") == 1
        assert node.sim.calls["assign_ips"] == 1, "no cloud call while paused"
        clock.now = T0 + 120.0
        assert await node.manager.step() is True
        assert node.sim.calls["assign_ips"] == 2
        assert node.held() == [2]
        assert node.sample("cloudcni_pool_growth_paused") == 0

    asyncio.run(scenario())


def test_a_full_subnet_pauses_growth_and_growth_is_tried_again_only_after_the_pause() -> None:
    # A /28 has 11 usable addresses; the primary interface's own address takes one.
    clock = FakeClock()
    node = make_node(subnet_cidr="10.0.0.0/28", clock=clock, growth_pause=30.0)

    async def scenario() -> None:
        assert await node.manager.step() is True
        assert node.held() == [9]
        assert node.sim.free_addresses() == 1
        assign_pods(node, 1)  # warm-ENI wants 9 free: attach an interface, which needs 10 addresses
        assert await node.manager.step() is True
        assert node.sim.calls["attach_interface"] == 1
        assert node.manager.growth_paused_until == T0 + 30.0
        assert len(node.store.interfaces()) == 1
        clock.advance(29.0)
        assert await node.manager.step() is False
        assert node.sim.calls["attach_interface"] == 1
        clock.advance(1.0)
        assert await node.manager.step() is True
        assert node.sim.calls["attach_interface"] == 2
        assert node.manager.growth_paused_until == T0 + 60.0, "still full: paused again"

    asyncio.run(scenario())


def test_limit_exceeded_makes_the_running_loop_reconcile_without_waiting_for_the_interval() -> None:
    node = make_node(targets=WarmPoolTargets(warm_ip=2), reconcile_interval=3600.0)
    node.sim.inject("assign_ips", LimitExceeded("assign_ips", "PrivateIpAddressLimitExceeded"))
    listed = node.sim.calls["list_interfaces"]

    async def scenario() -> None:
        async with Running(node.manager):
            await eventually(lambda: node.sim.calls["list_interfaces"] > listed, timeout=3.0)

    asyncio.run(scenario())
    assert node.manager.next_reconcile_at == T0 + 3600.0
    assert node.sim.calls["assign_ips"] == 1, "growth stayed paused"


# --- failed release ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("error", "times", "attempts"),
    [
        pytest.param(PermanentCloudError("release_ips", "UnauthorizedOperation"), 1, 1, id="permanent"),
        pytest.param(
            TemporaryCloudError("release_ips", "InternalError"), 3, 3, id="temporary-beyond-retries"
        ),
    ],
)
def test_a_failed_release_is_aborted_and_its_addresses_are_assignable_again(
    error: CloudError, times: int, attempts: int
) -> None:
    clock = FakeClock()
    node = make_node(targets=WarmPoolTargets(warm_ip=2, cooldown=0.0, release_delay=30.0), clock=clock)

    async def scenario() -> None:
        await place_pods(node, 5)
        for i in range(5):
            node.store.unassign(key(f"pod{i}"), now=clock())
        node.sim.inject("release_ips", error, times=times)
        clock.advance(30.0)
        assert await node.manager.step() is True
        assert node.sim.calls["release_ips"] == attempts
        assert len(node.backoffs) == attempts - 1
        assert node.sample("cloudcni_pool_actions_total", action="ReleaseIps", result="error") == 1
        assert node.held() == [7] == node.cloud_held()
        stats = node.store.stats(now=clock())
        assert (stats.total, stats.available) == (7, 7)
        assert {node.store.address_state(ip, now=clock()) for ip in node.primary().ips} == {AddressState.FREE}
        assert node.manager.busy == set()
        ips = assign_pods(node, 7, prefix="again")
        assert sorted(ips) == sorted(node.primary().ips)
        assert node.store.cooldown_overrides == 0

    asyncio.run(scenario())


# --- one operation per interface ---------------------------------------------------------------


class RecordingSim(SimCloud):
    """A SimCloud that notes how many operations are in flight at once on each interface
    (``<attach>`` for attaching, which names no interface yet) and whether a list overlapped one."""

    def __init__(self, *, hold: float = 0.001, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._hold = hold
        self._track = threading.Lock()
        self._in_flight: collections.Counter[str] = collections.Counter()
        self.most_in_flight: collections.Counter[str] = collections.Counter()
        self.operations: collections.Counter[str] = collections.Counter()
        self.lists_during_operations = 0

    @contextlib.contextmanager
    def _operation(self, target: str) -> Iterator[None]:
        with self._track:
            self._in_flight[target] += 1
            self.operations[target] += 1
            self.most_in_flight[target] = max(self.most_in_flight[target], self._in_flight[target])
        try:
            time.sleep(self._hold)
            yield
        finally:
            with self._track:
                self._in_flight[target] -= 1

    def list_interfaces(self) -> list[InterfaceView]:
        with self._track:
            if any(self._in_flight.values()):
                self.lists_during_operations += 1
        return super().list_interfaces()

    def attach_interface(self, ip_count: int, prefix_count: int) -> InterfaceView:
        with self._operation("<attach>"):
            return super().attach_interface(ip_count, prefix_count)

    def detach_interface(self, interface_id: InterfaceId) -> None:
        with self._operation(interface_id):
            super().detach_interface(interface_id)

    def assign_ips(self, interface_id: InterfaceId, count: int) -> list[str]:
        with self._operation(interface_id):
            return super().assign_ips(interface_id, count)

    def assign_prefixes(self, interface_id: InterfaceId, count: int) -> list[str]:
        with self._operation(interface_id):
            return super().assign_prefixes(interface_id, count)

    def release_ips(self, interface_id: InterfaceId, ips: list[str]) -> None:
        with self._operation(interface_id):
            super().release_ips(interface_id, ips)

    def release_prefixes(self, interface_id: InterfaceId, prefixes: list[str]) -> None:
        with self._operation(interface_id):
            super().release_prefixes(interface_id, prefixes)


def test_the_recording_sim_sees_two_operations_overlapping_on_one_interface() -> None:
    sim = RecordingSim(hold=0.05)
    (primary,) = sim.list_interfaces()
    threads = [threading.Thread(target=sim.assign_ips, args=(primary.id, 1)) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sim.most_in_flight[primary.id] == 2


def test_busy_churn_never_runs_two_operations_on_one_interface_at_once(tmp_path: Path) -> None:
    sim = RecordingSim(instance_type="m5.large", latency=0.003, seed=3)
    targets = WarmPoolTargets(warm_ip=3, cooldown=0.02, release_delay=0.05)
    node = make_node(targets=targets, sim=sim, clock=time.time, reconcile_interval=0.1)
    committer = GroupCommitter(tmp_path / "ipam.json", node.store.snapshot)
    service = IpamService(
        store=node.store,
        committer=committer,
        manager=node.manager,
        datapath=NoDatapath(),
        metrics=node.metrics,
        add_wait_timeout=3.0,
    )
    rng = random.Random(11)
    live: set[str] = set()

    async def pod_churn(worker: int) -> int:
        served = 0
        for n in range(12):
            name = f"w{worker}-{n}"
            call = Call(key(name), POD, f"/var/run/netns/{name}")
            ip = (await service.add(call)).assignment.ip
            assert ip not in live, f"{ip} handed to two live pods"
            live.add(ip)
            await asyncio.sleep(rng.uniform(0.0, 0.02))
            live.discard(ip)
            await service.delete(call, None)
            await asyncio.sleep(rng.uniform(0.0, 0.01))
            served += 1
        return served

    async def scenario() -> list[int]:
        async with Running(node.manager):
            served = await asyncio.gather(*(pod_churn(w) for w in range(8)))
            # Every pod is gone: the pool goes back to its warm target on the primary interface.
            await eventually(lambda: node.held() == [3], timeout=3.0)
        await committer.close()
        return served

    assert asyncio.run(scenario()) == [12] * 8
    assert sim.operations, "no cloud operation ran"
    assert max(sim.most_in_flight.values()) == 1, dict(sim.most_in_flight)
    assert sim.lists_during_operations == 0, "reconcile overlapped a pool operation"
    assert sim.calls["assign_ips"] >= 2 and sim.calls["release_ips"] >= 1
    assert sim.calls["attach_interface"] >= 1 and sim.calls["detach_interface"] >= 1
    assert node.cloud_held() == [3]
    assert node.sample("cloudcni_no_ip_available_total") == 0


# --- reconcile ---------------------------------------------------------------------------------


def test_reconcile_adopts_addresses_added_out_of_band_and_tells_waiting_adds() -> None:
    node = make_node(targets=WarmPoolTargets(warm_ip=2))

    async def scenario() -> None:
        await settle(node)
        extra = node.sim.assign_ips(node.primary().id, 3)  # someone went straight to the cloud
        waiter = asyncio.create_task(node.manager.wait_for_growth(2.0))
        await asyncio.sleep(0)
        await node.manager.reconcile()
        assert await asyncio.wait_for(waiter, 0.5) is True
        assert set(extra) <= set(node.primary().ips)
        assert node.store.stats(now=node.clock()).available == 5
        assert {node.store.address_state(ip, now=node.clock()) for ip in extra} == {AddressState.FREE}

    asyncio.run(scenario())


def test_reconcile_reports_an_assigned_address_removed_out_of_band_once() -> None:
    node = make_node(targets=WarmPoolTargets(warm_ip=2))

    async def scenario() -> None:
        await settle(node)
        (ip,) = assign_pods(node, 1)
        node.sim.release_ips(node.primary().id, [ip])
        assert node.sample("cloudcni_lost_assignments_total") == 0
        await node.manager.reconcile()
        assert node.sample("cloudcni_lost_assignments_total") == 1
        assert [a.ip for a in node.store.orphaned()] == [ip]
        assert ip not in node.primary().ips
        await node.manager.reconcile()
        assert node.sample("cloudcni_lost_assignments_total") == 1

    asyncio.run(scenario())


def test_reconcile_that_cannot_list_changes_nothing_and_tries_again_next_interval() -> None:
    clock = FakeClock()
    node = make_node(targets=WarmPoolTargets(warm_ip=2), clock=clock)

    async def scenario() -> None:
        await settle(node)
        node.sim.assign_ips(node.primary().id, 3)
        node.sim.inject("list_interfaces", PermanentCloudError("list_interfaces", "UnauthorizedOperation"))
        await node.manager.reconcile()
        assert node.held() == [2]
        assert node.manager.next_reconcile_at == T0 + 60.0
        await node.manager.reconcile()
        assert node.held() == [5]

    asyncio.run(scenario())


# --- waiting and sleeping ----------------------------------------------------------------------


def test_wait_for_growth_is_true_when_the_pool_grows() -> None:
    node = make_node(targets=WarmPoolTargets(warm_ip=2))

    async def scenario() -> None:
        waiter = asyncio.create_task(node.manager.wait_for_growth(2.0))
        await asyncio.sleep(0.01)
        assert not waiter.done()
        assert await node.manager.step() is True
        assert await asyncio.wait_for(waiter, 0.5) is True

    asyncio.run(scenario())


def test_wait_for_growth_is_false_after_its_timeout_when_nothing_grows() -> None:
    node = make_node(targets=WarmPoolTargets(warm_ip=2))

    async def scenario() -> float:
        loop = asyncio.get_running_loop()
        started = loop.time()
        assert await node.manager.wait_for_growth(0.05) is False
        return loop.time() - started

    assert 0.05 <= asyncio.run(scenario()) < 1.0
    assert node.held() == [0]


def _cooling_for(seconds: float) -> Callable[[Node], None]:
    def setup(node: Node) -> None:
        assign_pods(node, 1)
        node.store.unassign(key("pod0"), now=node.clock() - 30.0 + seconds)

    return setup


def _set(attribute: str, value: float) -> Callable[[Node], None]:
    return lambda node: setattr(node.manager, attribute, value)


def _both(*setups: Callable[[Node], None]) -> Callable[[Node], None]:
    def setup(node: Node) -> None:
        for one in setups:
            one(node)

    return setup


@pytest.mark.parametrize(
    ("setup", "expected"),
    [
        pytest.param(_both(), 5.0, id="nothing-pending-sleeps-max-idle"),
        pytest.param(_cooling_for(2.0), 2.0, id="a-cool-down-ends"),
        pytest.param(_cooling_for(-1.0), 5.0, id="an-ended-cool-down-is-ignored"),
        pytest.param(_set("last_decrease_at", T0 - 27.0), 3.0, id="release-delay"),
        pytest.param(_set("growth_paused_until", T0 + 1.5), 1.5, id="growth-pause"),
        pytest.param(_set("next_reconcile_at", T0 + 0.5), 0.5, id="reconcile"),
        pytest.param(_set("next_reconcile_at", T0 - 9.0), 0.0, id="reconcile-overdue"),
        pytest.param(
            _both(_cooling_for(2.0), _set("growth_paused_until", T0 + 4.0)), 2.0, id="earliest-wins"
        ),
    ],
)
def test_idle_timeout_is_the_next_moment_the_plan_can_change(
    setup: Callable[[Node], None], expected: float
) -> None:
    # Cool-down and release delay are 30 s; the pool last grew long ago.
    clock = FakeClock(T0 - 1000.0)
    node = make_node(targets=WarmPoolTargets(warm_ip=2, cooldown=30.0, release_delay=30.0), clock=clock)
    asyncio.run(settle(node))
    clock.now = T0
    node.manager.next_reconcile_at = T0 + 60.0
    setup(node)
    assert node.manager._idle_timeout(T0) == pytest.approx(expected)


@pytest.mark.parametrize(
    ("error", "reason", "named"),
    [
        pytest.param(SubnetFull("assign_ips", "InsufficientFreeAddressesInSubnet"), "SubnetExhausted",
                     "InsufficientFreeAddressesInSubnet", id="subnet-full"),
        pytest.param(LimitExceeded("assign_ips", "PrivateIpAddressLimitExceeded"), "InterfaceLimitReached",
                     "PrivateIpAddressLimitExceeded", id="limit-exceeded"),
        pytest.param(CloudPermissionError("assign_ips", "Unauthorized", "ec2:AssignPrivateIpAddresses"),
                     "MissingCloudPermission", "ec2:AssignPrivateIpAddresses", id="permission"),
    ],
)  # fmt: skip
def test_a_refused_growth_is_reported_on_the_node(error: CloudError, reason: str, named: str) -> None:
    from ipamd.events import Event, NodeReporter

    seen: list[Event] = []

    class Sink:
        def emit(self, event: Event) -> None:
            seen.append(event)

    node = make_node(targets=WarmPoolTargets(warm_ip=2), clock=FakeClock())
    node.manager.reporter = NodeReporter(Sink(), "node-1")
    node.sim.inject("assign_ips", error)
    asyncio.run(node.manager.step())
    assert [(e.reason, e.type, e.regarding.kind, e.regarding.name) for e in seen] == [
        (reason, "Warning", "Node", "node-1")
    ]
    assert named in seen[0].note and "paused for 120 s" in seen[0].note


def test_growth_goes_before_a_due_reconcile() -> None:
    """A reconcile can wait long for a read (CLOUD_API_BUDGET): with the pool short, the loop grows
    first and reconciles once there is nothing to do."""
    clock = FakeClock()
    node = make_node(targets=WarmPoolTargets(warm_ip=3), clock=clock)
    order: list[str] = []
    real_list, real_assign = node.sim.list_interfaces, node.sim.assign_ips

    def listing() -> Any:
        order.append("list_interfaces")
        return real_list()

    def assigning(iid: Any, count: int) -> Any:
        order.append("assign_ips")
        return real_assign(iid, count)

    node.sim.list_interfaces = listing  # type: ignore[method-assign]
    node.sim.assign_ips = assigning  # type: ignore[method-assign,assignment]
    node.manager.next_reconcile_at = T0 - 1.0  # overdue

    async def scenario() -> None:
        async with Running(node.manager):
            await eventually(lambda: "list_interfaces" in order)
        assert order[:2] == ["assign_ips", "list_interfaces"], order

    asyncio.run(scenario())
