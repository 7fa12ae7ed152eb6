"""POOL_MODE=adaptive, the pure part: DemandTracker and adaptive_targets on an injected clock.

The manager and the service running it are tested in test_adaptive_manager.py.
"""

from __future__ import annotations

import dataclasses
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ipamd.cloud.sim import INSTANCE_TYPES
from ipamd.pool import adaptive
from ipamd.pool.adaptive import (
    DEFAULT_FLOOR,
    HISTORY_BUCKETS,
    MAX_RECENT,
    RELEASE_SECONDS,
    Demand,
    DemandTracker,
    adaptive_change_at,
    adaptive_targets,
    targets_now,
)
from ipamd.pool.model import PREFIX_SIZE, InstanceLimits, WarmPoolTargets
from ipamd.pool.policy import effective_max_pods

M5_LARGE = INSTANCE_TYPES["m5.large"]  # 9 slots per interface: half an interface is 5
M5_XLARGE = INSTANCE_TYPES["m5.xlarge"]  # 14 slots: half an interface is 7
C5_18XLARGE = INSTANCE_TYPES["c5.18xlarge"]  # 49 slots: half an interface is 25
WINDOW = 600.0  # 10 min of history in 30 slices of 20 s
BORN = 0.0
LEARNED = BORN + 2 * WINDOW / HISTORY_BUCKETS  # the learning prior is over


def tracker() -> DemandTracker:
    return DemandTracker(WINDOW, now=BORN)


def burst(t: DemandTracker, at: float, pods: int, spacing: float = 0.1) -> None:
    for i in range(pods):
        t.pod_started(at + i * spacing)


def demand(**fields: object) -> Demand:
    base = Demand(
        at=1000.0,
        window=WINDOW,
        refill=2.5,
        rate_seconds=120.0,
        rate=0.0,
        stop_rate=0.0,
        burst=0,
        quantile=0.99,
        peak=0,
        peak_at=None,
        starts=0,
        recent=0,
        learning=False,
        changes_at=None,
    )
    return dataclasses.replace(base, **fields)  # type: ignore[arg-type]


# --- the tracker ---------------------------------------------------------------------------------


def test_a_burst_is_the_starts_within_the_refill_window_ending_at_each_start() -> None:
    t = tracker()
    burst(t, 100.0, 6, spacing=0.2)  # 6 within 1 s
    t.pod_started(200.0)  # alone
    d = t.snapshot(201.0)
    assert (d.peak, d.starts, d.recent) == (6, 7, 1)
    # the starts' bursts are 1, 2, 3, 4, 5, 6 and 1: 99% of the 7 stayed within 6
    assert d.burst == 6
    assert d.rate == pytest.approx(sum(math.exp(-(201.0 - s) / 120.0) for s in (100, 100.2, 100.4,
                                    100.6, 100.8, 101.0, 200.0)) / 120.0)  # fmt: skip


def test_the_burst_of_99_percent_of_starts_ignores_a_rare_coincidence() -> None:
    t = tracker()
    for i in range(300):  # a steady start every 2 s: each start's burst is 2 (itself and the one before)
        t.pod_started(20.0 + 2.0 * i)
    burst(t, 700.0, 4, spacing=0.0)  # one coincidence of 4, under 1% of the starts
    d = t.snapshot(701.0)
    assert d.peak == 4
    assert d.burst == 2


def test_a_burst_is_forgotten_when_its_slice_leaves_the_window_and_changes_at_says_when() -> None:
    t = tracker()
    burst(t, 105.0, 8)
    d = t.snapshot(300.0)
    assert d.burst == 8
    slice_ = WINDOW / HISTORY_BUCKETS
    assert d.changes_at == pytest.approx((math.floor(105.0 / slice_) + HISTORY_BUCKETS) * slice_)
    assert d.changes_at is not None
    assert t.snapshot(d.changes_at - 0.001).burst == 8
    assert t.snapshot(d.changes_at).burst == 0
    assert t.snapshot(d.changes_at).changes_at is None


def test_stops_are_a_decayed_rate_of_their_own() -> None:
    t = tracker()
    for s in (10.0, 11.0, 12.0):
        t.pod_stopped(s)
    d = t.snapshot(12.0)
    assert d.stop_rate == pytest.approx((math.exp(-2 / 120) + math.exp(-1 / 120) + 1) / 120)
    assert (d.rate, d.starts, d.burst) == (0.0, 0, 0)
    assert d.public()["stops_per_second"] == round(d.stop_rate, 4)


def test_a_tracker_without_birth_time_is_born_at_its_first_use() -> None:
    t = DemandTracker(WINDOW)
    assert t.snapshot(500.0).learning
    assert t.born == 500.0
    assert not t.snapshot(500.0 + LEARNED).learning


@pytest.mark.parametrize(
    ("kwargs", "named"),
    [
        pytest.param({"window": 0.0}, "window", id="window-zero"),
        pytest.param({"window": math.inf}, "window", id="window-infinite"),
        pytest.param({"window": 60.0, "refill": -1.0}, "refill", id="refill-negative"),
        pytest.param({"window": 60.0, "rate_seconds": math.nan}, "rate_seconds", id="rate-nan"),
        pytest.param({"window": 60.0, "quantile": 0.0}, "quantile", id="quantile-zero"),
    ],
)
def test_a_tracker_refuses_a_meaningless_parameter_by_name(kwargs: dict[str, float], named: str) -> None:
    with pytest.raises(ValueError, match=named):
        DemandTracker(**kwargs)


_events = st.lists(
    st.tuples(
        st.sampled_from(["start", "stop", "burst", "read"]),
        st.floats(min_value=-30.0, max_value=400.0, allow_nan=False),  # negative: the clock stepped back
        st.integers(min_value=1, max_value=1500),
    ),
    max_size=120,
)


@settings(max_examples=200, deadline=None)
@given(_events, st.floats(min_value=60.0, max_value=7200.0))
def test_any_sequence_of_starts_keeps_memory_bounded_and_the_demand_sane(
    events: list[tuple[str, float, int]], window: float
) -> None:
    t = DemandTracker(window, now=0.0)
    now = 0.0
    levels = 32 + 5  # per slice: 1..32 exact, then 64, 128, 256, 512, 1024
    for kind, step, count in events:
        now += step
        if kind == "start":
            t.pod_started(now)
        elif kind == "stop":
            t.pod_stopped(now)
        elif kind == "burst":
            for _ in range(count):
                t.pod_started(now)
        assert t.memory() <= MAX_RECENT + (HISTORY_BUCKETS + 1) * levels + HISTORY_BUCKETS
        d = t.snapshot(now)
        assert d.rate >= 0 and d.stop_rate >= 0
        assert math.isfinite(d.rate) and math.isfinite(d.stop_rate)
        assert 0 <= d.burst <= max(d.peak, 1024) and d.burst <= 2 * MAX_RECENT
        assert 0 <= d.recent <= MAX_RECENT and d.starts >= 0
        assert (d.starts == 0) == (d.burst == 0)
        assert d.changes_at is None or d.changes_at > now


# --- the targets ---------------------------------------------------------------------------------


def test_an_idle_node_keeps_the_floor_and_the_base_settings() -> None:
    base = WarmPoolTargets(minimum_ip=3, max_pods=20, cooldown=12.0)
    targets, why = adaptive_targets(base, demand(), M5_LARGE, now=1000.0)
    assert targets == dataclasses.replace(
        base, warm_eni=0, warm_ip=DEFAULT_FLOOR, ip_batch=1, release_delay=RELEASE_SECONDS
    )
    assert targets.warm_ip_mode
    assert why == "keeping 2 free: the floor of 2; no pod started in the last 10 min"


def test_a_learned_burst_is_kept_free_with_the_flow_and_explained_with_its_numbers() -> None:
    d = demand(burst=12, peak=14, peak_at=760.0, starts=60, rate=0.4)
    targets, why = adaptive_targets(WarmPoolTargets(), d, C5_18XLARGE, now=1000.0)
    # 12 + ceil(2 x 0.4 x 2.5) = 14 free; one cloud call fetches a burst: batches of 12
    assert (targets.warm_ip, targets.ip_batch) == (14, 12)
    assert why == (
        "keeping 14 free: burst 12 + 2 for 0.40 starts/s (2 x rate x 2.5 s refill) = 14; 99% of the 60 "
        "pod starts in the last 10 min came at most 12 within 2.5 s (largest 14, 4 min ago); growing and "
        "releasing 12 at a time (a burst per cloud call)"
    )


def test_prewarm_is_capped_at_half_an_interface_and_the_batch_at_a_quarter() -> None:
    d = demand(burst=40, peak=40, starts=600, rate=1.0)
    targets, why = adaptive_targets(WarmPoolTargets(), d, M5_LARGE, now=1000.0)
    assert (targets.warm_ip, targets.ip_batch) == (5, 3)  # ceil(9 / 2), ceil(9 / 4)
    assert "= 45, capped at half an interface (5)" in why
    assert why.endswith(
        "growing and releasing 3 at a time (a burst per cloud call, at most a quarter interface)"
    )


def test_operator_targets_are_floors() -> None:
    base = WarmPoolTargets(warm_ip=9, ip_batch=4, release_delay=300.0)
    targets, why = adaptive_targets(base, demand(burst=3, starts=3), M5_XLARGE, now=1000.0)
    assert (targets.warm_ip, targets.ip_batch, targets.release_delay) == (9, 4, 300.0)
    assert why.startswith("keeping 9 free: the floor of 9 set;")


def test_a_new_node_assumes_a_burst_of_half_an_interface_until_it_has_learned() -> None:
    t = tracker()
    learning, why = adaptive_targets(WarmPoolTargets(), t, M5_XLARGE, now=BORN + 1.0)
    assert learning.warm_ip == 7
    assert "learning, under 40 s of history: assuming a burst of half an interface (7)" in why
    assert adaptive_targets(WarmPoolTargets(), t, M5_XLARGE, now=LEARNED)[0].warm_ip == DEFAULT_FLOOR


def test_prefix_delegation_counts_addresses_and_leaves_batches_to_prefixes() -> None:
    base = WarmPoolTargets(prefix_delegation=True, warm_prefix=1, max_pods=110, ip_batch=8)
    targets, why = adaptive_targets(base, demand(burst=20, starts=200, rate=0.1), M5_XLARGE, now=1000.0)
    # a floor of one prefix (16), the demand 20 + 1; plan grows whole /28s to keep 21 free
    assert (targets.warm_ip, targets.ip_batch, targets.warm_prefix) == (21, 1, 0)
    assert why.endswith(f"in whole /28 prefixes of {PREFIX_SIZE}")


def test_instance_without_prefixes_plans_secondary_ips_even_when_asked_for_prefixes() -> None:
    t2 = INSTANCE_TYPES["t2.medium"]  # no prefix delegation: 5 slots, batches apply
    base = WarmPoolTargets(prefix_delegation=True)
    targets, _ = adaptive_targets(base, demand(burst=4, starts=20), t2, now=1000.0)
    assert (targets.warm_ip, targets.ip_batch) == (3, 2)  # capped at ceil(5 / 2) and ceil(5 / 4)


_limits = st.sampled_from(sorted(INSTANCE_TYPES.values(), key=lambda limits: limits.instance_type))
_bases = st.builds(
    WarmPoolTargets,
    warm_eni=st.integers(0, 3),
    warm_ip=st.integers(0, 40),
    minimum_ip=st.integers(0, 60),
    warm_prefix=st.integers(0, 3),
    prefix_delegation=st.booleans(),
    max_eni=st.none() | st.integers(1, 16),
    max_pods=st.none() | st.integers(1, 300),
    release_delay=st.floats(0.0, 600.0),
    ip_batch=st.integers(1, 32),
    primary_interface_pods=st.booleans(),
)
_demands = st.builds(
    demand,
    rate=st.floats(0.0, 500.0),
    burst=st.integers(0, 4096),
    starts=st.integers(0, 100_000),
    recent=st.integers(0, 1024),
    learning=st.booleans(),
)


@settings(max_examples=500, deadline=None)
@given(_bases, _demands, _limits)
def test_targets_for_any_demand_stay_within_the_floors_max_pods_and_the_instance(
    base: WarmPoolTargets, d: Demand, limits: InstanceLimits
) -> None:
    targets, why = adaptive_targets(base, d, limits, now=d.at)
    pd = base.prefix_delegation and limits.prefix_delegation
    interfaces = min(limits.max_interfaces, base.max_eni or limits.max_interfaces)
    interfaces -= 0 if base.primary_interface_pods else 1
    carried = max(interfaces, 0) * limits.secondary_per_interface * (PREFIX_SIZE if pd else 1)
    capacity = min(effective_max_pods(base, limits), carried)
    floor = max(base.warm_ip, PREFIX_SIZE * base.warm_prefix if pd else 0) or DEFAULT_FLOOR
    assert targets.warm_ip_mode and targets.warm_ip >= 1
    assert targets.warm_ip <= max(capacity, 1), "never more free than the node can hold"
    assert targets.warm_ip >= min(floor, capacity), "the operator's floor holds where the node allows"
    assert targets.minimum_ip == base.minimum_ip
    assert targets.ip_batch >= (1 if pd else base.ip_batch)
    assert targets.release_delay >= base.release_delay
    same = ("prefix_delegation", "max_eni", "max_pods", "cooldown", "primary_interface_pods", "minimum_ip")
    assert all(getattr(targets, f) == getattr(base, f) for f in same)
    assert (targets.warm_eni, targets.warm_prefix) == (0, 0)
    assert "\n" not in why and why.startswith(f"keeping {targets.warm_ip} free: ")


# --- pre-warm and hysteresis ---------------------------------------------------------------------


def test_a_learned_burst_is_prewarmed_before_it_repeats_and_released_once_forgotten() -> None:
    t = tracker()
    base = WarmPoolTargets()
    assert adaptive_targets(base, t, M5_XLARGE, now=LEARNED)[0].warm_ip == DEFAULT_FLOOR
    burst(t, 100.0, 6)
    # quiet for four minutes: the next burst like it is expected, so its addresses stay free
    before_repeat, why = adaptive_targets(base, t, M5_XLARGE, now=340.0)
    assert before_repeat.warm_ip >= 6
    assert "came at most 6 within 2.5 s" in why
    # Walk the moments the targets change with no pod event: the decayed rate's share may go
    # earlier, the burst's only when its slice leaves the window, and then down to the floor.
    walked, steps = 340.0, []
    while (step := adaptive_change_at(base, t, M5_XLARGE, now=walked)) is not None:
        walked = step
        steps.append((step, adaptive_targets(base, t, M5_XLARGE, now=step)[0].warm_ip))
    slice_ = WINDOW / HISTORY_BUCKETS
    assert steps, "the burst is never forgotten"
    assert all(warm >= 6 for at, warm in steps if at < 100.0 + WINDOW - slice_)
    assert steps[-1][1] == DEFAULT_FLOOR
    assert 100.0 + WINDOW - slice_ <= steps[-1][0] <= 100.0 + WINDOW + slice_


def test_alternating_bursts_and_quiet_do_not_flap_the_targets() -> None:
    t = tracker()
    base = WarmPoolTargets()
    seen = []
    for cycle in range(12):  # a burst of 5 every 4 minutes for 48 minutes, sampled every 10 s
        start = LEARNED + cycle * 240.0
        burst(t, start, 5)
        for k in range(24):
            targets, _ = adaptive_targets(base, t, M5_XLARGE, now=start + 1.0 + 10.0 * k)
            seen.append((targets.warm_ip, targets.ip_batch))
    settled = seen[len(seen) // 4 :]  # once a window of history is there
    assert len(set(settled)) == 1, f"the targets changed while demand repeated: {sorted(set(settled))}"
    assert settled[0][0] >= 5


def test_change_at_is_the_first_moment_the_targets_differ() -> None:
    t = tracker()
    base = WarmPoolTargets()
    for i in range(40):  # a fast ramp: the decayed rate adds a flow term that decays later
        t.pod_started(100.0 + 0.5 * i)
    now = 130.0
    current = adaptive_targets(base, t, C5_18XLARGE, now=now)[0]
    change = adaptive_change_at(base, t, C5_18XLARGE, now=now)
    assert change is not None and change > now
    for probe in (now + (change - now) * f for f in (0.25, 0.5, 0.9, 0.999)):
        assert adaptive_targets(base, t, C5_18XLARGE, now=probe)[0] == current
    assert adaptive_targets(base, t, C5_18XLARGE, now=change)[0] != current


@settings(max_examples=40, deadline=None)
@given(
    st.lists(st.tuples(st.floats(0.0, 40.0), st.sampled_from([1, 1, 1, 2, 4, 9])), min_size=1, max_size=40),
    st.floats(0.0, 120.0),
    st.sampled_from([M5_LARGE, M5_XLARGE, C5_18XLARGE]),
)
def test_change_at_agrees_with_scanning_the_targets_second_by_second(
    starts: list[tuple[float, int]], wait: float, limits: InstanceLimits
) -> None:
    t = tracker()
    now = BORN
    for gap, pods in starts:
        now += gap
        burst(t, now, pods, spacing=0.0)
    now += wait
    base = WarmPoolTargets()
    change = adaptive_change_at(base, t, limits, now=now)
    current = targets_now(base, t, limits, now=now)
    scanned = None
    probe = now
    while probe < now + WINDOW + 2 * WINDOW / HISTORY_BUCKETS and scanned is None:
        probe += 0.5
        if targets_now(base, t, limits, now=probe) != current:
            scanned = probe
    if scanned is None:
        assert change is None
    else:
        assert change is not None and scanned - 0.5 <= change <= scanned + 1e-5


def test_targets_now_is_the_same_object_while_the_targets_do_not_change() -> None:
    t = tracker()
    burst(t, 100.0, 4)
    first = targets_now(WarmPoolTargets(), t, M5_XLARGE, now=110.0)
    assert targets_now(WarmPoolTargets(), t, M5_XLARGE, now=111.0) is first
    assert adaptive_targets(WarmPoolTargets(), t, M5_XLARGE, now=112.0)[0] is first


def test_change_at_is_none_for_a_tracker_that_has_nothing_left_to_forget() -> None:
    t = tracker()
    assert adaptive_change_at(WarmPoolTargets(), t, M5_LARGE, now=BORN + 1.0) == LEARNED
    assert adaptive_change_at(WarmPoolTargets(), t, M5_LARGE, now=LEARNED + 1.0) is None


def test_steady_churn_keeps_a_small_band_not_the_largest_coincidence() -> None:
    t = DemandTracker(now=BORN)  # the default window, 30 min
    for i in range(600):  # a start every 3 s, none within 2.5 s of another: each start's burst is 1
        t.pod_started(LEARNED + 3.0 * i)
    burst(t, LEARNED + 1801.0, 5, spacing=0.0)  # one coincidence of 5: 4 starts above 1, under 1%
    targets, why = adaptive_targets(WarmPoolTargets(), t, C5_18XLARGE, now=LEARNED + 1811.0)
    # burst 1 + ceil(2 x rate x 2.5) with a rate of about 1/3 per s: 1 + 2 free; a band of one
    assert (targets.warm_ip, targets.ip_batch) == (3, 1)
    assert "came at most 1 within 2.5 s (largest 5, 10 s ago)" in why


def test_public_is_plain_json_values() -> None:
    import json

    t = tracker()
    burst(t, 50.0, 3)
    public = t.snapshot(60.0).public()
    assert json.loads(json.dumps(public)) == public
    assert {"starts_per_second", "burst", "peak_burst", "learning", "history_changes_at"} <= set(public)


def test_module_has_no_clock_or_io() -> None:
    import inspect

    source = inspect.getsource(adaptive)
    for forbidden in ("import time", "import os", "import asyncio", "open(", "datetime"):
        assert forbidden not in source
