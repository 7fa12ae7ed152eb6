"""POOL_MODE=adaptive in the daemon: the manager planning with adaptive targets on the real SimCloud,
Datastore, policy and CloudCaller; the service telling it about ADDs and DELs; introspection.

Time is a FakeClock the test moves; the manager is stepped (``settle``), not run, so every plan is
the test's doing. The pure tracker and targets are tested in test_adaptive.py.
"""

from __future__ import annotations

import asyncio
import json
import math
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from ipamd.checkpoint import GroupCommitter
from ipamd.config import Settings
from ipamd.datapath.base import NoDatapath
from ipamd.errors import NoAddressAvailable
from ipamd.manager import PoolManager
from ipamd.metrics import LoopReader
from ipamd.pool.adaptive import DEFAULT_FLOOR, HISTORY_BUCKETS, DemandTracker, adaptive_change_at
from ipamd.pool.model import WarmPoolTargets
from ipamd.requests import Call
from ipamd.service import IpamService
from tests.unit.pool_node import POD, T0, FakeClock, Node, key, make_node, settle

WINDOW = 600.0  # 10 min of history: slices of 20 s, a learning prior of 40 s
LEARNED = T0 + 2 * WINDOW / HISTORY_BUCKETS


def adaptive_node(
    *, targets: WarmPoolTargets | None = None, instance_type: str = "m5.xlarge", window: float = WINDOW
) -> Node:
    """A node whose manager runs POOL_MODE=adaptive, born at T0 (m5.xlarge: 14 slots per interface,
    so at most 7 free for a burst and batches of at most 4)."""
    targets = targets or WarmPoolTargets()
    clock = FakeClock()
    node = make_node(targets=targets, instance_type=instance_type, clock=clock)
    node.manager = PoolManager(
        store=node.store,
        provider=node.sim,
        caller=node.manager.caller,
        targets=targets,
        limits=node.manager.limits,
        clock=clock,
        metrics=node.metrics,
        demand=DemandTracker(window, now=clock()),
    )
    return node


def clock_of(node: Node) -> FakeClock:
    assert isinstance(node.clock, FakeClock)
    return node.clock


def arrive(node: Node, names: list[str]) -> list[str]:
    """ADDs arrive (as the service reports them) and take a free address if there is one; returns
    the names that found none (they wait for growth)."""
    waiting = []
    for name in names:
        node.manager.pod_started(node.clock())
        try:
            node.store.assign(
                key(name), POD, netns=f"/var/run/netns/{name}", now=node.clock(), allow_cooling=False
            )
        except NoAddressAvailable:
            waiting.append(name)
    return waiting


def leave(node: Node, names: list[str]) -> None:
    for name in names:
        node.store.unassign(key(name), now=node.clock())
        node.manager.pod_stopped(node.clock())


async def quiet(node: Node, seconds: float, *, tick: float = 10.0) -> None:
    """Let time pass with the manager planning every ``tick`` seconds, as its loop would."""
    clock = clock_of(node)
    end = clock() + seconds
    while clock() < end:
        clock.advance(min(tick, end - clock()))
        await settle(node)


def free(node: Node) -> int:
    return node.store.stats(now=node.clock()).available


def test_the_pool_grows_ahead_of_a_repeated_burst_and_shrinks_after_quiet() -> None:
    node = adaptive_node()
    burst = [f"a{i}" for i in range(6)]
    again = [f"b{i}" for i in range(6)]

    async def scenario() -> None:
        await settle(node)
        assert 7 <= free(node) < 7 + 4, "a new node assumes a burst of half an interface (batches of 4)"
        await quiet(node, 120.0)
        assert free(node) == DEFAULT_FLOOR, "learned nothing: back to the floor"

        waiting = arrive(node, burst)  # the first burst of 6: nothing learned, 4 wait
        assert len(waiting) == 4
        batches = node.manager.batches
        await settle(node)
        assert arrive(node, waiting) == [], "the growth served the burst"
        await settle(node)
        # two plans: the burst's batch, then the refill behind it (filling the primary interface and
        # attaching the next in one plan); not one per pod
        assert node.manager.batches - batches == 2

        await quiet(node, 60.0)
        leave(node, burst)
        await quiet(node, 170.0)  # quiet: cool-downs and release delays pass, yet the pool stays warm
        assert free(node) >= len(again), "the learned burst is pre-warmed before it repeats"

        assert arrive(node, again) == [], "the repeated burst waits for nothing"
        await settle(node)
        leave(node, again)
        calls = node.mutations()
        await quiet(node, WINDOW + 120.0)  # demand stays low for a whole window: the bursts are forgotten
        assert free(node) == DEFAULT_FLOOR
        assert node.store.stats(now=node.clock()).total == DEFAULT_FLOOR
        assert node.mutations() - calls <= 3, "the shrink is a few calls, not one per address"

    asyncio.run(scenario())


def test_alternating_bursts_and_quiet_cost_the_same_few_calls_each_time_and_no_wait() -> None:
    node = adaptive_node()

    async def scenario() -> list[tuple[int, int, int]]:
        await quiet(node, 60.0)
        cycles = []
        for cycle in range(8):  # 4 pods every 3 minutes, each living a minute
            names = [f"c{cycle}p{i}" for i in range(4)]
            calls = node.mutations()
            waiting = arrive(node, names)
            await settle(node)
            arrive(node, waiting)
            await quiet(node, 60.0)
            leave(node, names)
            await quiet(node, 120.0)
            cycles.append(
                (len(waiting), node.mutations() - calls, node.manager.effective_targets(node.clock()).warm_ip)
            )
        return cycles

    cycles = asyncio.run(scenario())
    learned = cycles[1:]
    assert all(waited == 0 for waited, _, _ in learned), cycles
    # A wave's growth is one call and its release, once the addresses are back from cool-down,
    # another: a band of one burst, never a call per pod, and the target itself does not move.
    assert all(calls <= 2 for _, calls, _ in learned), cycles
    assert len({warm for _, _, warm in learned}) == 1, cycles


def test_idle_timeout_wakes_when_the_adaptive_targets_change_and_never_spins() -> None:
    node = adaptive_node()
    clock = clock_of(node)

    async def scenario() -> None:
        await quiet(node, 60.0)
        arrive(node, [f"p{i}" for i in range(5)])
        await settle(node)
        leave(node, [f"p{i}" for i in range(5)])
        await quiet(node, 120.0)

    asyncio.run(scenario())
    manager = node.manager
    manager.next_reconcile_at = clock() + 3600.0
    assert manager.demand is not None
    change = adaptive_change_at(manager.targets, manager.demand, manager.limits, now=clock())
    assert change is not None
    clock.now = change - 2.5
    assert manager._idle_timeout(clock()) == pytest.approx(2.5)
    clock.now = change - 0.01
    assert manager._idle_timeout(clock()) == pytest.approx(1.0), "a change point is never a busy loop"


def test_a_change_of_the_adaptive_targets_is_logged_once_with_the_reason() -> None:
    node = adaptive_node()
    clock = clock_of(node)
    with capture_logs() as logs:
        for _ in range(3):
            node.manager.plan()
        clock.now = LEARNED + 1.0
        for _ in range(3):
            node.manager.plan()
    changes = [e for e in logs if e["event"] == "pool_adaptive_targets_changed"]
    assert [(e["previous_warm_ip"], e["warm_ip"]) for e in changes] == [(None, 7), (7, DEFAULT_FLOOR)]
    assert changes[1]["why"] == "keeping 2 free: the floor of 2; no pod started in the last 10 min"


def test_static_mode_has_no_tracker_and_plans_with_the_configured_targets() -> None:
    targets = WarmPoolTargets(warm_ip=3)
    node = make_node(targets=targets)
    manager = node.manager
    manager.pod_started(T0)
    manager.pod_stopped(T0)
    assert (manager.pool_mode, manager.demand, manager.adaptive_public(T0)) == ("static", None, None)
    assert manager.effective_targets(T0) is targets


def test_adaptive_mode_keeps_max_pods_from_the_node() -> None:
    node = adaptive_node(targets=WarmPoolTargets(max_pods=4))

    async def scenario() -> None:
        await settle(node)

    asyncio.run(scenario())
    assert node.store.stats(now=node.clock()).total == 4, "the learning prior of 7 is capped at max pods"
    node.manager.set_max_pods(3)
    assert node.manager.effective_targets(node.clock()).max_pods == 3


# --- the service tells the manager; introspection shows why -------------------------------------


def served(node: Node, tmp_path: Path) -> IpamService:
    committer = GroupCommitter(tmp_path / "ipam.json", node.store.snapshot, clock=node.clock)
    return IpamService(
        store=node.store,
        committer=committer,
        manager=node.manager,
        datapath=NoDatapath(),
        clock=node.clock,
        add_wait_timeout=0.2,
    )


def call(name: str) -> Call:
    return Call(key(name), POD, f"/var/run/netns/{name}")


def test_the_service_reports_new_adds_and_given_back_addresses_not_repeats(tmp_path: Path) -> None:
    node = adaptive_node()
    service = served(node, tmp_path)
    demand = node.manager.demand
    assert demand is not None

    async def scenario() -> None:
        await settle(node)
        await service.add(call("c1"))
        await service.add(call("c1"))  # an idempotent repeat: no new demand
        await service.add(call("c2"))
        await service.delete(call("c1"), None)
        await service.delete(call("c1"), None)  # already gone: nothing given back
        clock_of(node).advance(1.0)  # GC spares what was assigned since it started
        assert await service.gc("cloud-cni", []) == 1  # c2, not listed: given back

    asyncio.run(scenario())
    d = demand.snapshot(node.clock())
    assert d.starts == 2
    assert d.stop_rate == pytest.approx((1 + math.exp(-1 / demand.rate_seconds)) / demand.rate_seconds)


def test_introspection_shows_the_mode_the_demand_the_targets_and_why(tmp_path: Path) -> None:
    from ipamd.daemon import introspection_routes

    node = adaptive_node()
    service = served(node, tmp_path)
    adaptive_settings = Settings.from_env({"CLOUD_PROVIDER": "sim", "POOL_MODE": "adaptive"})

    async def scenario() -> dict[str, object]:
        await settle(node)
        arrive(node, ["p0", "p1", "p2"])
        routes = introspection_routes(
            service, node.manager, adaptive_settings, LoopReader(asyncio.get_running_loop())
        )
        pool = await asyncio.to_thread(routes["/v1/pool"])
        assert isinstance(pool, dict)
        return pool

    pool = asyncio.run(scenario())
    assert json.loads(json.dumps(pool)) == pool
    assert pool["pool_mode"] == "adaptive"
    shown = pool["adaptive"]
    assert isinstance(shown, dict)
    assert shown["targets"]["warm_ip"] == node.manager.effective_targets(node.clock()).warm_ip
    assert shown["demand"]["starts_in_window"] == 3 and shown["demand"]["learning"] is True
    assert shown["why"].startswith(f"keeping {shown['targets']['warm_ip']} free: ")
    assert shown["changes_at"] == pytest.approx(LEARNED)


def test_introspection_in_static_mode_says_so(tmp_path: Path) -> None:
    from ipamd.daemon import introspection_routes

    node = make_node(targets=WarmPoolTargets(warm_ip=2))
    service = served(node, tmp_path)

    async def scenario() -> object:
        routes = introspection_routes(
            service,
            node.manager,
            Settings.from_env({"CLOUD_PROVIDER": "sim"}),
            LoopReader(asyncio.get_running_loop()),
        )
        return await asyncio.to_thread(routes["/v1/pool"])

    pool = asyncio.run(scenario())
    assert isinstance(pool, dict)
    assert (pool["pool_mode"], pool["adaptive"]) == ("static", None)
