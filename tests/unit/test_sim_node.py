"""A simulated node does what the daemon's manager and ADD path do, on hand-checked scenarios; the
cluster's budget, determinism, and (hypothesis) no address ever held twice and no pod ever lost."""

from __future__ import annotations

import itertools
from collections.abc import Iterable

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ipamd.cloud.sim import INSTANCE_TYPES
from ipamd.sim.cluster import Cluster, NodeGroupSpec
from ipamd.sim.node import RUNNING, WAITING
from ipamd.sim.settings import parse_policy
from ipamd.sim.sources import CREATE, DELETE, NODE_ADD, WorkloadEvent
from ipamd.sim.subnet import Subnet, Usage

QUIET = "RECONCILE_INTERVAL=1000000"  # no reconcile calls: the scenarios count every call


def cluster_of(
    events: Iterable[WorkloadEvent],
    policy: str,
    *,
    nodes: int = 1,
    subnet: str = "10.0.0.0/22",
    instance: str = "m5.large",
    max_pods: int = 29,
    seed: int = 1,
) -> Cluster:
    usage = Usage()
    group = NodeGroupSpec(
        "n", INSTANCE_TYPES[instance], max_pods, max_pods - 2, (Subnet(subnet, usage=usage),)
    )
    start = [WorkloadEvent(0.0, NODE_ADD, node=f"n-{i}", group="n") for i in range(nodes)]
    stream = iter(sorted([*start, *events], key=lambda e: e.t))
    cluster = Cluster(
        groups={"n": group},
        sim_policy=parse_policy(policy),
        seed=seed,
        stream=stream,
        sample_interval=0,
        usage=usage,
    )
    cluster.warm_up()
    return cluster


def creates(t: float, count: int, *, first: int = 0, node: str = "n-0") -> list[WorkloadEvent]:
    return [WorkloadEvent(t, CREATE, first + i, node=node) for i in range(count)]


def stats(cluster: Cluster, node: str = "n-0") -> tuple[int, int, int]:
    s = cluster.nodes[node].store.stats(now=cluster.engine.now)
    return s.total, s.assigned, s.available


def test_warm_node_starts_at_its_targets_without_a_call() -> None:
    cluster = cluster_of([], f"WARM_IP_TARGET=5,{QUIET}")
    assert stats(cluster) == (5, 0, 5)
    assert cluster.api.calls == {}
    eni = cluster_of([], f"WARM_ENI_TARGET=1,{QUIET}")
    assert stats(eni) == (9, 0, 9)  # m5.large: one interface's worth, 9 secondary IPs


def test_pods_within_the_warm_pool_wait_for_nothing_and_the_pool_refills() -> None:
    # WARM_IP_TARGET=5, 5 free: 3 ADDs take addresses at once; the plan after them asks for 3 more,
    # one AssignIps (a Describe and an AssignPrivateIpAddresses), and the pool is back at 5 free.
    cluster = cluster_of(creates(10.0, 3), f"WARM_IP_TARGET=5,{QUIET}")
    cluster.run(30.0)
    assert stats(cluster) == (8, 3, 5)
    assert cluster.recorder.pods_waited == 0 and list(cluster.recorder.waits) == [0.0, 0.0, 0.0]
    assert cluster.api.calls == {"DescribeNetworkInterfaces": 1, "AssignPrivateIpAddresses": 1}
    assert cluster.recorder.actions == {"AssignIps": 1}


def test_pods_beyond_the_pool_wait_for_one_batch_of_growth() -> None:
    # 8 ADDs, 5 free: 5 at once, 3 wait. One plan owes the 3 waiters and the target of 5: 8. The
    # primary has 4 slots left (m5.large: 9), so AssignIps(4) there and AttachInterface(ip_count=4) for
    # the rest, in one batch. The assign lands first (0.5-1.8 s against 2-10 s) and serves the 3
    # waiters, in ADD order.
    cluster = cluster_of(creates(10.0, 8), f"WARM_IP_TARGET=5,{QUIET}")
    cluster.run(10.0)
    rec = cluster.recorder
    assert rec.actions == {"AssignIps": 1, "AttachInterface": 1}  # one plan for the 8 ADDs of one instant
    cluster.run(11.9)
    assert rec.pods_waited == 3
    waits = sorted(rec.waits)
    assert waits[:5] == [0.0] * 5 and 0.5 <= waits[5] == waits[7] <= 1.8
    # When the attach is done too (2-10 s: 4 addresses), the batch is over: 5 free, the target: no
    # second AssignIps (without the waiters counted, it took one more call to make up 3).
    cluster.run(60.0)
    assert rec.actions == {"AssignIps": 1, "AttachInterface": 1}
    assert stats(cluster) == (5 + 4 + 4, 8, 5)
    assert len(cluster.nodes["n-0"].interfaces) == 2
    assert cluster.api.calls == {
        "DescribeNetworkInterfaces": 3,  # one for the assign, two for the attach
        "AssignPrivateIpAddresses": 1,
        "CreateNetworkInterface": 1,
        "AttachNetworkInterface": 1,
        "ModifyNetworkInterfaceAttribute": 1,
    }


def test_deleted_pods_cool_down_then_the_surplus_goes_back_after_the_release_delay() -> None:
    events = [*creates(10.0, 3), *(WorkloadEvent(100.0, DELETE, i) for i in range(3))]
    cluster = cluster_of(events, f"WARM_IP_TARGET=5,{QUIET}")
    cluster.run(100.0)
    assert stats(cluster) == (8, 0, 5)  # 3 cooling: not available
    cluster.run(129.0)
    assert cluster.recorder.actions.get("ReleaseIps", 0) == 0  # cool-down (30 s) not over
    cluster.run(140.0)
    assert cluster.recorder.actions["ReleaseIps"] == 1  # then one release of the 3 surplus
    cluster.run(200.0)
    assert stats(cluster) == (5, 0, 5)
    assert cluster.api.calls["UnassignPrivateIpAddresses"] == 1


def test_a_cooling_address_is_taken_when_the_pool_cannot_grow() -> None:
    # MAX_PODS=6: the pool holds 6 at most. 6 pods run; one is deleted and another created at once:
    # nothing is free, the pool cannot grow (held = max pods), so the ADD takes the cooling address
    # (IpamService: cannot_grow) with no wait.
    events = [*creates(10.0, 6), WorkloadEvent(50.0, DELETE, 0), *creates(50.0, 1, first=6)]
    cluster = cluster_of(events, f"WARM_IP_TARGET=5,MAX_PODS=6,{QUIET}")
    cluster.run(60.0)
    assert cluster.recorder.overrides == {"cannot_grow": 1}
    assert cluster.pods[6].state == RUNNING and cluster.recorder.waits[-1] == 0.0


def test_subnet_full_pauses_growth_for_growth_pause() -> None:
    # A /28 holds 11 addresses: the primary interface's own, 5 warm, then 4 more by AssignIps; the
    # AttachInterface of the same batch needs 2 (its own and one) with 1 left: SubnetFull, and growth
    # pauses 120 s (GROWTH_PAUSE) before the next attempt, which fails the same way.
    cluster = cluster_of(creates(10.0, 10), f"WARM_IP_TARGET=5,{QUIET}", subnet="10.0.0.0/28")
    cluster.run(100.0)
    rec = cluster.recorder
    assert rec.failures == {"AttachInterface:SubnetFull": 1}
    assert rec.actions == {"AssignIps": 1, "AttachInterface": 1}
    assert cluster.pods[9].state == WAITING  # 9 addresses held, the tenth pod waits
    node = cluster.nodes["n-0"]
    assert node.growth_paused_until is not None and 130.0 < node.growth_paused_until < 132.0
    cluster.run(node.growth_paused_until - 0.01)
    assert rec.actions["AttachInterface"] == 1
    cluster.run(200.0)
    assert rec.actions["AttachInterface"] == 2 and rec.failures == {"AttachInterface:SubnetFull": 2}
    # the subnet had 1 address left: each attach was refused at its CreateNetworkInterface, so no
    # AttachNetworkInterface was ever made
    assert cluster.usage.used == 1 + 5 + 4
    assert (
        cluster.api.calls["CreateNetworkInterface"] == 2 and cluster.api.calls["AttachNetworkInterface"] == 0
    )


def test_throttled_calls_retry_with_backoff_then_give_up() -> None:
    # The account's assign bucket empty and (nearly) never refilled: the AssignIps is throttled on each
    # of its 8 attempts (RetryPolicy.max_attempts), backing off between them, and gives up. The pod
    # that waited meanwhile is served by the batch's AttachInterface, delayed by the throttling.
    cluster = cluster_of(creates(10.0, 6), f"WARM_IP_TARGET=5,{QUIET}")
    bucket = cluster.api.buckets["assign"]
    bucket.tokens, bucket.rate = 0.0, 1e-9
    rec = cluster.recorder
    now = 10.0
    while not rec.gave_up:
        now += 0.05
        cluster.run(now)
    assert rec.throttled_attempts == {"assign_ips": 8} and now < 10.0 + 8 * 0.1 + 25.4 + 0.1
    cluster.run(now + 0.2)  # the last answer comes back
    assert rec.failures == {"AssignIps:ThrottledError": 1}
    cluster.run(300.0)
    assert cluster.pods[5].state == RUNNING and rec.pods_waited == 1 and rec.pods_delayed == 1
    assert 1 <= rec.delayed_by_throttling < sum(rec.throttled_attempts.values())


def test_a_throttled_retry_is_backed_off_within_the_daemons_bounds() -> None:
    cluster = cluster_of(creates(10.0, 6), f"WARM_IP_TARGET=5,{QUIET}")
    bucket = cluster.api.buckets["assign"]
    bucket.tokens, bucket.rate = 0.0, 1e-9
    seen: list[float] = []
    for step in range(1, 60_000):
        now = 10.0 + step * 0.001
        cluster.run(now)
        if len(seen) < cluster.api.throttled["AssignPrivateIpAddresses"]:
            seen.append(now)
        if len(seen) == 8:
            break
    gaps = [b - a for a, b in itertools.pairwise(seen)]
    # retry n waits U(0, min(20, 0.2 * 2**(n-1))) after the throttled answer (20-100 ms)
    for n, gap in enumerate(gaps, start=1):
        assert 0.0 <= gap <= 0.2 * 2 ** (n - 1) + 0.1 + 0.002, (n, gaps)


def test_the_cluster_budget_keeps_a_scale_up_out_of_throttling() -> None:
    # 150 nodes join at once and each fills its pool from zero: 150 assigns against a bucket of 100.
    joins = [WorkloadEvent(5.0, NODE_ADD, node=f"new-{i}", group="n") for i in range(150)]
    policy = "WARM_IP_TARGET=5,STARTUP_TAINT="
    free = cluster_of(joins, f"{policy},{QUIET}", subnet="10.0.0.0/20")
    free.run(300.0)
    assert free.api.throttled["AssignPrivateIpAddresses"] > 0
    budget = "CLOUD_API_BUDGET=assign=5,interface=5,attach=5,describe=20"
    shared = cluster_of(joins, f"{policy},{budget},{QUIET}", subnet="10.0.0.0/20")
    shared.run(300.0)
    assert sum(shared.api.throttled.values()) == 0
    counts = [shared.nodes[f"new-{i}"].budget.nodes for i in (0, 149)]  # type: ignore[union-attr]
    assert counts == [2, 151]  # each counted the nodes there when its daemon started


def test_a_node_whose_calls_wait_reads_the_node_count_again_after_the_busy_interval() -> None:
    """NodeCounter's busy poll: n-0 is spending a tiny share (its assigns wait ~100 s) when 150 nodes
    join at 10 s; it sees them once its count is 30 s old, not at its next 10-minute poll."""
    joins = [WorkloadEvent(10.0, NODE_ADD, node=f"new-{i}", group="n") for i in range(150)]
    policy = f"WARM_IP_TARGET=5,STARTUP_TAINT=,CLOUD_API_BUDGET=assign=0.01,{QUIET}"
    counts = {}
    for busy in ("30", "600"):
        cluster = cluster_of(
            [*creates(1.0, 20), *joins],
            f"{policy},CLOUD_API_BUDGET_BUSY_POLL_INTERVAL={busy}",
            subnet="10.0.0.0/20",
        )
        cluster.run(45.0)
        node = cluster.nodes["n-0"]
        assert node.budget is not None and node.waiting  # still waiting for its share: busy
        counts[busy] = node.budget.nodes
    assert counts == {"30": 151, "600": 1}


def test_adaptive_mode_runs_the_daemons_demand_tracker() -> None:
    cluster = cluster_of(creates(10.0, 12), f"POOL_MODE=adaptive,{QUIET}")
    cluster.run(120.0)
    node = cluster.nodes["n-0"]
    assert node.targets.warm_ip >= 1 and node.targets.warm_ip_mode
    assert all(cluster.pods[i].state == RUNNING for i in range(12))


def test_same_seed_same_result() -> None:
    from ipamd.sim.cluster import simulate
    from ipamd.sim.sources import events
    from ipamd.sim.workload import load_workload, scaled

    workload = scaled(load_workload("default"), 20)

    def once(seed: int) -> dict[str, object]:
        result = simulate(
            workload,
            parse_policy("WARM_IP_TARGET=5"),
            stream=events(workload, seed=seed, until=900),
            seconds=900,
            seed=seed,
        )
        summary = result.summary()
        summary.pop("wall_seconds")
        return summary

    first = once(7)
    assert first == once(7)
    assert first["pods_started"] > 0 and first != once(8)


# --- properties -----------------------------------------------------------------------------------

pod_events = st.lists(
    st.tuples(
        st.floats(min_value=0.0, max_value=300.0, allow_nan=False),
        st.integers(min_value=0, max_value=1),  # node
        st.one_of(st.none(), st.floats(min_value=0.1, max_value=200.0)),  # lifetime
    ),
    max_size=40,
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    events=pod_events,
    policy=st.sampled_from(
        [
            "WARM_IP_TARGET=2",
            "WARM_ENI_TARGET=1",
            "MINIMUM_IP_TARGET=4,WARM_IP_TARGET=1,IP_COOLDOWN_PERIOD=5",
            "ENABLE_PREFIX_DELEGATION=true,WARM_PREFIX_TARGET=1",
            "CLOUD_PROVIDER=azure,WARM_IP_TARGET=2,IP_BATCH_SIZE=4",
            "POOL_MODE=adaptive",
        ]
    ),
)
def test_no_address_twice_and_no_pod_lost(events: list[tuple[float, int, float | None]], policy: str) -> None:
    stream = sorted(
        (
            WorkloadEvent(t, CREATE, i, lifetime, node=f"n-{node}")
            for i, (t, node, lifetime) in enumerate(events)
        ),
        key=lambda e: e.t,
    )
    cluster = cluster_of(stream, policy, nodes=2, subnet="10.0.0.0/24")
    for until in range(0, 1200, 25):
        cluster.run(float(until))
        ips = cluster.running_ips()  # raises if an address is held by two pods
        for name, node in cluster.nodes.items():
            running = sum(1 for p in node.residents.values() if p.state == RUNNING)
            assert node.store.stats(now=cluster.engine.now).assigned == running, name
            assert all(
                cluster.pods[pod].node is node for pod in ips.values() if cluster.pods[pod].node is node
            )
    created = len(events)
    deleted = sum(1 for _, _, lifetime in events if lifetime is not None)
    running = sum(1 for p in cluster.pods.values() if p.state == RUNNING)
    assert running == created - deleted  # every pod alive got an address; none is waiting or lost
    assert cluster.unstarted() == 0
