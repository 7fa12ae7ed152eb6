"""The cluster-wide cloud API budget (CLOUD_API_BUDGET): the fractional bucket, each node's share,
the operation costs, per-class limiting in CloudCaller, the setting, and the pure retry functions.

Everything runs on a fake clock: nothing sleeps.
"""

from __future__ import annotations

import math
import random
import re
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ipamd.cloud.budget import (
    ACCOUNT_CAPACITY,
    ARM_CLASSES,
    CLASSES,
    EC2_CLASSES,
    OPERATION_COSTS,
    ClusterBudget,
    node_share,
    operation_cost,
    reconcile_floor,
)
from ipamd.cloud.limiter import (
    CloudCaller,
    FractionalBucket,
    RetryPolicy,
    TokenBucket,
    backoff_delay,
    retry_delay,
)
from ipamd.cloud.sim import OPERATIONS as SIM_OPERATIONS
from ipamd.config import Settings
from ipamd.errors import ConfigError, TemporaryCloudError, ThrottledError
from ipamd.k8s.nodecount import share_budget
from tests.unit.test_limiter import FakeClock

ROOT = Path(__file__).resolve().parents[2]
BUDGET = {"assign": 4.0, "interface": 4.0, "attach": 4.0, "describe": 16.0}


def budget_caller(
    clock: FakeClock, budget: ClusterBudget, *, rate: float = 1000.0, burst: int = 1000
) -> CloudCaller:
    return CloudCaller(
        TokenBucket(rate, burst, clock=clock),
        RetryPolicy(),
        clock=clock,
        sleep=clock.sleep,
        rng=random.Random(3),
        budget=budget,
    )


# --- FractionalBucket ------------------------------------------------------------------------------


class FirstDraws(random.Random):
    """An rng whose ``random()`` answers ``values`` in turn (then 0.0): phases a test chooses."""

    def __init__(self, *values: float) -> None:
        super().__init__(0)
        self.values = list(values)

    def random(self) -> float:
        return self.values.pop(0) if self.values else 0.0


def test_a_share_below_one_token_earns_its_token_before_calling() -> None:
    clock = FakeClock()
    # describe at 5,000 nodes: 16 / 5000 calls per second, 100 / 5000 tokens of burst; half a token in
    bucket = FractionalBucket(16 / 5000, 100 / 5000, clock=clock, fill=0.5)
    ticket = bucket.reserve()
    assert bucket.wait_for(ticket) == pytest.approx(0.5 / (16 / 5000))
    clock.now += 0.5 / (16 / 5000)
    assert bucket.wait_for(ticket) == 0.0
    assert bucket.tokens() == pytest.approx(0.0)
    assert bucket.wait_for(bucket.reserve()) == pytest.approx(5000 / 16)  # then one per period


def test_an_idle_share_keeps_its_phase_instead_of_filling_up() -> None:
    clock = FakeClock()
    bucket = FractionalBucket(1.0, 0.02, clock=clock, fill=0.25)  # 0.75 of a token at start
    clock.now += 10.5  # the token came at 0.25 s, expired unused at 1.25 s, 2.25 s, ...
    assert bucket.tokens() == pytest.approx(0.25)
    assert bucket.wait_for(bucket.reserve()) == pytest.approx(0.75)


def test_tickets_are_served_in_order_and_the_bucket_never_holds_more_than_its_capacity() -> None:
    clock = FakeClock()
    bucket = FractionalBucket(2.0, 1.5, clock=clock)
    tickets = [bucket.reserve() for _ in range(4)]
    assert [bucket.wait_for(t) for t in tickets] == pytest.approx([0.0, 0.25, 0.75, 1.25])
    for _ in range(40):
        clock.now += 2.37
        assert 0.5 < bucket.tokens() <= 1.5


def test_set_rate_retimes_queued_tickets_and_loses_none() -> None:
    clock = FakeClock()
    bucket = FractionalBucket(1.0, 1.0, clock=clock)
    tickets = [bucket.reserve() for _ in range(3)]  # 1 there, 2 owed
    assert [bucket.wait_for(t) for t in tickets] == pytest.approx([0.0, 1.0, 2.0])
    clock.now += 0.5  # half a token earned at the old rate
    bucket.set_rate(0.5, 0.5)  # twice as many nodes: half the rate
    assert [bucket.wait_for(t) for t in tickets] == pytest.approx([0.0, 1.0, 3.0])
    bucket.set_rate(4.0, 2.0)  # nodes gone: faster
    assert [bucket.wait_for(t) for t in tickets] == pytest.approx([0.0, 0.125, 0.375])
    clock.now += 0.375
    assert [bucket.wait_for(t) for t in tickets] == [0.0, 0.0, 0.0]


def test_a_lower_capacity_drops_what_the_bucket_holds_above_it() -> None:
    clock = FakeClock()
    bucket = FractionalBucket(1.0, 50.0, clock=clock)
    bucket.set_rate(0.04, 0.5)  # 100 nodes instead of 1: at most one whole token
    assert bucket.tokens() == pytest.approx(1.0)
    assert bucket.wait_for(bucket.reserve()) == 0.0
    assert bucket.wait_for(bucket.reserve()) == pytest.approx(25.0)


@pytest.mark.parametrize(
    ("rate", "capacity", "fill"),
    [
        pytest.param(0.0, 1.0, 0.0, id="zero-rate"),
        pytest.param(-1.0, 1.0, 0.0, id="negative-rate"),
        pytest.param(math.inf, 1.0, 0.0, id="infinite-rate"),
        pytest.param(math.nan, 1.0, 0.0, id="nan-rate"),
        pytest.param(1.0, 0.0, 0.0, id="zero-capacity"),
        pytest.param(1.0, math.inf, 0.0, id="infinite-capacity"),
        pytest.param(1.0, 1.0, 1.0, id="fill-a-whole-token"),
        pytest.param(1.0, 1.0, -0.1, id="negative-fill"),
    ],
)
def test_bucket_refuses_what_is_not_a_rate_a_capacity_or_a_phase(
    rate: float, capacity: float, fill: float
) -> None:
    with pytest.raises(ValueError):
        FractionalBucket(rate, capacity, fill=fill)


@pytest.mark.parametrize(("rate", "capacity"), [(0.0, 1.0), (1.0, -2.0), (math.nan, 1.0)])
def test_set_rate_refuses_what_is_not_a_rate_or_a_capacity(rate: float, capacity: float) -> None:
    with pytest.raises(ValueError):
        FractionalBucket(1.0, 1.0).set_rate(rate, capacity)


def test_bucket_refuses_a_negative_cost() -> None:
    with pytest.raises(ValueError, match="cost"):
        FractionalBucket(1.0, 1.0).reserve(-1.0)


def _let_through(
    rate: float, capacity: float, fill: float, arrivals: list[tuple[float, int]]
) -> list[tuple[float, int]]:
    """(when the tokens were there, how many) for callers arriving after ``gap`` wanting ``cost``."""
    clock = FakeClock(0.0)
    bucket = FractionalBucket(rate, capacity, clock=clock, fill=fill)
    granted = []
    for gap, cost in arrivals:
        clock.now += gap
        ticket = bucket.reserve(cost)
        granted.append((clock.now + bucket.wait_for(ticket), cost))
    times = [t for t, _ in granted]
    assert times == sorted(times), "tickets are served in the order they were reserved"
    return granted


def _most_in_a_window(granted: list[tuple[float, int]], rate: float) -> float:
    """The largest excess of tokens let through in a window over ``rate`` x its length."""
    worst = -math.inf
    for i, (start, _) in enumerate(granted):
        for end, _ in granted[i:]:
            through = sum(cost for when, cost in granted if start <= when <= end)
            worst = max(worst, through - rate * (end - start))
    return worst


ARRIVALS = st.lists(st.tuples(st.floats(0.0, 30.0), st.integers(1, 3)), min_size=1, max_size=40)


@settings(max_examples=200, deadline=None)
@given(
    rate=st.floats(0.001, 50.0), capacity=st.floats(3.0, 100.0), fill=st.floats(0.0, 0.999), arrivals=ARRIVALS
)
def test_over_any_interval_what_is_let_through_is_at_most_rate_times_t_plus_capacity(
    rate: float, capacity: float, fill: float, arrivals: list[tuple[float, int]]
) -> None:
    # capacity of at least the largest cost (3): the bound is the classic one
    assert _most_in_a_window(_let_through(rate, capacity, fill, arrivals), rate) <= capacity + 1e-6


@settings(max_examples=200, deadline=None)
@given(
    rate=st.floats(0.001, 50.0), capacity=st.floats(0.001, 3.0), fill=st.floats(0.0, 0.999), arrivals=ARRIVALS
)
def test_a_share_below_a_call_lets_through_at_most_rate_times_t_plus_one_call(
    rate: float, capacity: float, fill: float, arrivals: list[tuple[float, int]]
) -> None:
    # a call cannot be split: below its cost, the bound is the call itself
    most = max(capacity, 1.0, *(cost for _, cost in arrivals))
    assert _most_in_a_window(_let_through(rate, capacity, fill, arrivals), rate) <= most + 1e-6


def test_idle_nodes_that_all_need_a_call_at_once_are_let_through_at_the_budget_rate() -> None:
    # 1,000 new nodes of a 2,000-node cluster with attach=4: 0.002 calls/s and 0.025 tokens each
    rng = random.Random(7)
    clock = FakeClock(0.0)
    buckets = [FractionalBucket(4 / 2000, 50 / 2000, clock=clock, fill=rng.random()) for _ in range(1000)]
    clock.now = 10_000.0  # idle a long while, then all at once
    released = sorted(clock.now + b.wait_for(b.reserve()) for b in buckets)
    period = 2000 / 4
    assert released[-1] - clock.now < period
    for tenth in range(10):  # ~100 per tenth of the period: 2 per second, as budgeted
        lo, hi = clock.now + tenth * period / 10, clock.now + (tenth + 1) * period / 10
        assert 65 <= sum(lo <= t < hi for t in released) <= 135, tenth


# --- each node's share -----------------------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(
    budget=st.dictionaries(st.sampled_from(EC2_CLASSES), st.floats(0.01, 1000.0), min_size=1),
    nodes=st.integers(1, 20_000),
)
def test_the_shares_of_n_nodes_add_up_to_the_budget_and_the_account_capacity(
    budget: dict[str, float], nodes: int
) -> None:
    shares = node_share(budget, nodes)
    assert set(shares) == set(budget)
    for cls, share in shares.items():
        assert math.fsum([share.rate] * nodes) == pytest.approx(budget[cls], rel=1e-9)
        assert math.fsum([share.capacity] * nodes) == pytest.approx(ACCOUNT_CAPACITY[cls], rel=1e-9)


@pytest.mark.parametrize("nodes", [0, -1, True, 2.5])
def test_node_share_needs_at_least_one_node(nodes: object) -> None:
    with pytest.raises(ValueError, match="nodes"):
        node_share(BUDGET, nodes)  # type: ignore[arg-type]


def test_cluster_budget_shares_by_the_node_count_and_follows_it() -> None:
    budget = ClusterBudget(BUDGET, "aws", nodes=50, clock=FakeClock(), rng=FirstDraws(0.5, 0.5, 0.5, 0.5))
    assert {cls: s.rate for cls, s in budget.shares().items()} == pytest.approx(
        {"assign": 0.08, "interface": 0.08, "attach": 0.08, "describe": 0.32}
    )
    assert budget.shares()["attach"].capacity == pytest.approx(1.0)
    budget.set_nodes(100)
    assert budget.nodes == 100
    assert budget.shares()["describe"].rate == pytest.approx(0.16)
    assert budget.public()["assign"] == {"budget": 4.0, "rate": 0.04, "capacity": 1.0, "tokens": 0.5}


@pytest.mark.parametrize(
    ("budget", "provider", "nodes", "floor"),
    [
        pytest.param({"describe": 16.0}, "aws", 5000, 625.0, id="aws-5000-nodes"),
        pytest.param({"describe": 16.0}, "aws", 50, 6.25, id="aws-50-nodes"),
        pytest.param({"read": 20.0}, "azure", 1000, 100.0, id="azure-reads"),
        pytest.param({"assign": 4.0}, "aws", 5000, None, id="reads-not-budgeted"),
    ],
)
def test_reconcile_floor_leaves_half_the_read_share_to_the_pool(
    budget: dict[str, float], provider: str, nodes: int, floor: float | None
) -> None:
    got = reconcile_floor(node_share(budget, nodes), provider)
    assert got == (None if floor is None else pytest.approx(floor))


def test_cluster_budget_refuses_classes_of_another_cloud() -> None:
    with pytest.raises(ValueError, match="write, read"):
        ClusterBudget({"assign": 4.0}, "azure", nodes=1)


# --- operation costs -------------------------------------------------------------------------------


def _operations_called() -> set[str]:
    """Every operation name the daemon passes to CloudCaller.call (manager, leaks, daemon)."""
    names: set[str] = set()
    for path in (ROOT / "ipamd").rglob("*.py"):
        text = path.read_text()
        names.update(re.findall(r"_cloud\(\s*\"(\w+)\"", text))
        names.update(re.findall(r"caller\.call,\s*\"(\w+)\"", text))
    return names


def test_every_operation_the_daemon_calls_has_a_cost_on_every_provider() -> None:
    called = _operations_called()
    assert {"attach_interface", "assign_ips", "list_interfaces", "delete_leaked"} <= called
    assert set(OPERATION_COSTS["sim"]) >= SIM_OPERATIONS
    for provider in ("aws", "sim"):
        assert called <= set(OPERATION_COSTS[provider]), provider
    # Azure has no leak sweep (the provider has no leaked_interfaces): the rest is costed.
    assert called - {"leaked_interfaces", "delete_leaked"} <= set(OPERATION_COSTS["azure"])
    for provider, table in OPERATION_COSTS.items():
        for operation, cost in table.items():
            assert set(cost) <= set(CLASSES[provider]), (provider, operation)
            assert all(n >= 1 for n in cost.values()), (provider, operation)


@pytest.mark.parametrize(
    ("provider", "operation", "cost"),
    [
        pytest.param("aws", "assign_ips", {"describe": 1, "assign": 1}, id="aws-assign"),
        pytest.param("aws", "release_prefixes", {"assign": 1}, id="aws-unassign"),
        pytest.param(
            "aws", "attach_interface", {"describe": 2, "interface": 2, "attach": 1}, id="aws-attach"
        ),
        pytest.param("azure", "assign_ips", {"read": 1, "write": 1}, id="azure-nic-put"),
        pytest.param("azure", "attach_interface", {}, id="azure-no-call"),
        pytest.param("aws", "something_new", dict.fromkeys(EC2_CLASSES, 1), id="aws-unknown-costs-all"),
        pytest.param("azure", "something_new", dict.fromkeys(ARM_CLASSES, 1), id="azure-unknown-costs-all"),
    ],
)
def test_operation_cost(provider: str, operation: str, cost: dict[str, int]) -> None:
    assert dict(operation_cost(provider, operation)) == cost


# --- CloudCaller with a budget ---------------------------------------------------------------------


def test_calls_wait_for_their_class_tokens() -> None:
    clock = FakeClock(0.0)
    # 100 nodes: assign 0.04/s with 1 token of burst; describe 0.16/s with 1 token
    caller = budget_caller(clock, ClusterBudget(BUDGET, "aws", nodes=100, clock=clock, rng=FirstDraws()))
    ran: list[float] = []
    for _ in range(3):
        caller.call("release_ips", lambda: ran.append(clock.now))
    assert ran == pytest.approx([0.0, 25.0, 50.0])
    assert max(clock.sleeps) <= 1.0  # waits are sliced: a new node count is seen within a second


def test_an_operation_takes_every_class_it_costs() -> None:
    clock = FakeClock(0.0)
    caller = budget_caller(
        clock, ClusterBudget({"describe": 16.0}, "aws", nodes=100, clock=clock, rng=FirstDraws())
    )
    ran: list[float] = []
    for _ in range(2):
        caller.call("assign_ips", lambda: ran.append(clock.now))  # assign is not budgeted: describe is
    assert ran == pytest.approx([0.0, 6.25])


def test_a_call_takes_a_token_from_the_node_bucket_too() -> None:
    clock = FakeClock(0.0)
    generous = ClusterBudget({"assign": 1000.0}, "aws", nodes=1, clock=clock)
    caller = budget_caller(clock, generous, rate=2.0, burst=1)
    ran: list[float] = []
    for _ in range(3):
        caller.call("release_ips", lambda: ran.append(clock.now))
    assert ran == pytest.approx([0.0, 0.5, 1.0])  # CLOUD_API_RATE=2 still applies


def test_a_new_node_count_releases_a_waiting_call_early() -> None:
    clock = FakeClock(0.0)
    budget = ClusterBudget(BUDGET, "aws", nodes=100, clock=clock, rng=FirstDraws())
    caller = budget_caller(clock, budget)
    caller.call("release_ips", lambda: None)
    sleep = clock.sleep

    def sleep_then_count(seconds: float) -> None:
        sleep(seconds)
        if budget.nodes == 100:
            budget.set_nodes(1)  # the first count arrives: 4 assign calls per second, not 0.04

    caller._sleep = sleep_then_count
    started = clock.now
    caller.call("release_ips", lambda: None)
    assert clock.now - started < 1.5  # not the 25 s the assumed count implied


def test_a_closed_budget_ends_the_waits_within_a_second() -> None:
    clock = FakeClock(0.0)
    budget = ClusterBudget({"assign": 4.0}, "aws", nodes=5000, clock=clock, rng=FirstDraws(0.5))
    caller = budget_caller(clock, budget)
    sleep = clock.sleep

    def sleep_then_stop(seconds: float) -> None:
        sleep(seconds)
        if clock.now >= 3.0:
            budget.close()  # SIGTERM: the daemon does not wait ~10 minutes for this node's share

    caller._sleep = sleep_then_stop
    with pytest.raises(TemporaryCloudError, match="stopping"):
        caller.call("release_ips", lambda: pytest.fail("made after close"))
    assert clock.now <= 4.0


def test_retries_take_the_budget_again() -> None:
    clock = FakeClock(0.0)
    caller = budget_caller(
        clock, ClusterBudget({"assign": 4.0}, "aws", nodes=100, clock=clock, rng=FirstDraws())
    )
    attempts: list[float] = []

    def throttled_once() -> None:
        attempts.append(clock.now)
        if len(attempts) == 1:
            raise ThrottledError("release_ips", "RequestLimitExceeded", retry_after=0.0)

    caller.call("release_ips", throttled_once)
    assert attempts[1] - attempts[0] >= 25.0 - 1e-6


@settings(max_examples=60, deadline=None)
@given(
    nodes=st.integers(1, 400),
    gaps=st.lists(st.floats(0.0, 20.0), min_size=1, max_size=30),
)
def test_caller_lets_through_at_most_rate_times_t_plus_capacity_or_one_call(
    nodes: int, gaps: list[float]
) -> None:
    clock = FakeClock(0.0)
    budget = ClusterBudget(BUDGET, "aws", nodes=nodes, clock=clock, rng=random.Random(nodes))
    caller = budget_caller(clock, budget)
    share = budget.shares()["assign"]
    ran: list[tuple[float, int]] = []
    for gap in gaps:
        clock.now += gap
        caller.call("release_ips", lambda: ran.append((clock.now, 1)))
    assert _most_in_a_window(ran, share.rate) <= max(share.capacity, 1.0) + 1e-6


# --- the pure retry functions ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("retry", "draw", "retry_after", "expected"),
    [
        pytest.param(1, 0.5, None, 0.1, id="half-of-base"),
        pytest.param(3, 1.0 - 1e-12, None, 0.8, id="cap-doubles"),
        pytest.param(20, 0.5, None, 10.0, id="capped-at-max-delay"),
        pytest.param(1, 0.0, 7.5, 7.5, id="retry-after-wins"),
        pytest.param(1, 0.5, math.inf, 0.1, id="infinite-hint-ignored"),
    ],
)
def test_backoff_delay_is_pure(retry: int, draw: float, retry_after: float | None, expected: float) -> None:
    policy = RetryPolicy()
    assert backoff_delay(policy, retry, draw, retry_after) == pytest.approx(expected)
    assert backoff_delay(policy, retry, draw, retry_after) == backoff_delay(policy, retry, draw, retry_after)


def test_policy_backoff_is_backoff_delay_with_the_rng_draw() -> None:
    policy = RetryPolicy()
    a, b = random.Random(11), random.Random(11)
    for retry in range(1, 10):
        assert policy.backoff(retry, a, 0.05) == backoff_delay(policy, retry, b.random(), 0.05)


@pytest.mark.parametrize(
    ("attempt", "elapsed", "expected"),
    [
        pytest.param(1, 0.0, 0.1, id="retry"),
        pytest.param(8, 0.0, None, id="out-of-attempts"),
        pytest.param(2, 119.9, None, id="past-the-deadline"),
        pytest.param(2, 119.0, 0.2, id="just-in-time"),
    ],
)
def test_retry_delay_decides_retry_or_give_up(attempt: int, elapsed: float, expected: float | None) -> None:
    assert retry_delay(RetryPolicy(), attempt, elapsed, 0.5) == (
        None if expected is None else pytest.approx(expected)
    )


# --- the settings ----------------------------------------------------------------------------------

BASE_ENV = {"CLOUD_PROVIDER": "aws", "KUBERNETES_INTEGRATION": "auto"}


def test_budget_setting_parses_classes_and_rates() -> None:
    s = Settings.from_env({**BASE_ENV, "CLOUD_API_BUDGET": " Assign=4, interface=4,attach=4, describe=16.5 "})
    assert s.cloud_api_budget == {"assign": 4.0, "interface": 4.0, "attach": 4.0, "describe": 16.5}
    assert s.cloud_api_budget_poll_interval == 600.0 and s.cloud_api_budget_assumed_nodes == 100
    unset = Settings.from_env(BASE_ENV)
    assert unset.cloud_api_budget is None  # today's per-node CLOUD_API_RATE / BURST only


@pytest.mark.parametrize(
    ("env", "variable", "says"),
    [
        pytest.param({"CLOUD_API_BUDGET": "assign=0"}, "CLOUD_API_BUDGET", "rates > 0", id="zero"),
        pytest.param({"CLOUD_API_BUDGET": "assign=-1"}, "CLOUD_API_BUDGET", "rates > 0", id="negative"),
        pytest.param({"CLOUD_API_BUDGET": "assign=inf"}, "CLOUD_API_BUDGET", "rates > 0", id="infinite"),
        pytest.param({"CLOUD_API_BUDGET": "assign"}, "CLOUD_API_BUDGET", "class=calls", id="no-rate"),
        pytest.param(
            {"CLOUD_API_BUDGET": "mutate=4"}, "CLOUD_API_BUDGET", "assign, interface, attach, describe",
            id="unknown-class-lists-the-allowed",
        ),
        pytest.param({"CLOUD_API_BUDGET": "assign=1,assign=2"}, "CLOUD_API_BUDGET", "class=", id="twice"),
        pytest.param({"CLOUD_API_BUDGET": "assign=1,"}, "CLOUD_API_BUDGET", "class=", id="empty-item"),
        pytest.param(
            {"CLOUD_API_BUDGET": "write=10"}, "CLOUD_API_BUDGET", "CLOUD_PROVIDER=aws: assign, interface",
            id="arm-class-on-aws",
        ),
        pytest.param(
            {"CLOUD_PROVIDER": "azure", "CLOUD_API_BUDGET": "assign=4"}, "CLOUD_API_BUDGET",
            "CLOUD_PROVIDER=azure: write, read", id="ec2-class-on-azure",
        ),
        pytest.param(
            {"CLOUD_API_BUDGET": "assign=4", "KUBERNETES_INTEGRATION": "off"}, "CLOUD_API_BUDGET",
            "Kubernetes integration", id="needs-the-integration",
        ),
        pytest.param(
            {"CLOUD_API_BUDGET_POLL_INTERVAL": "0"}, "CLOUD_API_BUDGET_POLL_INTERVAL", "> 0", id="poll-0"
        ),
        pytest.param(
            {"CLOUD_API_BUDGET_ASSUMED_NODES": "0"}, "CLOUD_API_BUDGET_ASSUMED_NODES", ">= 1", id="assumed-0"
        ),
    ],
)  # fmt: skip
def test_budget_setting_errors_name_the_variable(env: dict[str, str], variable: str, says: str) -> None:
    with pytest.raises(ConfigError) as err:
        Settings.from_env({**BASE_ENV, **env})
    assert err.value.variable == variable
    assert says in str(err.value)


def test_azure_budget_and_a_short_poll_interval() -> None:
    s = Settings.from_env(
        {
            "CLOUD_PROVIDER": "azure",
            "CLOUD_API_BUDGET": "write=8,read=20",
            "CLOUD_API_BUDGET_POLL_INTERVAL": "2s",
        }
    )
    assert s.cloud_api_budget == {"write": 8.0, "read": 20.0}
    assert s.cloud_api_budget_poll_interval == 2.0


def test_share_budget_without_the_integration_names_the_variable() -> None:
    s = Settings.from_env({**BASE_ENV, "CLOUD_API_BUDGET": "assign=4"})
    with pytest.raises(ConfigError) as err:
        share_budget(s, None)
    assert err.value.variable == "CLOUD_API_BUDGET" and "KUBECONFIG" in str(err.value)
