"""The node count behind CLOUD_API_BUDGET (ipamd/k8s/nodecount.py) against a fake API object:
what it asks, how it reads the answer, what it keeps and how it backs off when the API fails."""

from __future__ import annotations

import random
from collections.abc import Mapping
from typing import Any

import pytest
import structlog

from ipamd.cloud.budget import ClusterBudget, next_poll_in
from ipamd.k8s.api import ApiError
from ipamd.k8s.nodecount import NODES_PATH, NodeCounter, changed_enough, node_count

BUDGET = {"assign": 4.0, "interface": 4.0, "attach": 4.0, "describe": 16.0}


def nodes_page(count: int) -> dict[str, Any]:
    """What kube-apiserver answers to GET /api/v1/nodes?limit=1 with ``count`` Nodes."""
    meta: dict[str, Any] = {"resourceVersion": "42"}
    if count > 1:
        meta.update({"continue": "token", "remainingItemCount": count - 1})
    return {"kind": "NodeList", "metadata": meta, "items": [{"metadata": {"name": "n0"}}][:count]}


class FakeApi:
    """Answers requests from a script: a body (dict) or an exception to raise, in turn."""

    def __init__(self, *answers: dict[str, Any] | Exception) -> None:
        self.answers = list(answers)
        self.requests: list[tuple[str, str, dict[str, str], str]] = []

    def request(
        self, method: str, path: str, *, query: Mapping[str, str] | None = None, verb: str = ""
    ) -> dict[str, Any]:
        self.requests.append((method, path, dict(query or {}), verb))
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer


class Clock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


def counter(
    api: FakeApi, *, assumed: int = 100, interval: float = 600.0
) -> tuple[NodeCounter, ClusterBudget]:
    budget = ClusterBudget(BUDGET, "aws", nodes=assumed)
    c = NodeCounter(api, budget, interval=interval, clock=Clock(), rng=random.Random(5))  # type: ignore[arg-type]
    return c, budget


# --- reading the answer ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        pytest.param(nodes_page(50), 50, id="one-item-plus-remaining"),
        pytest.param(nodes_page(1), 1, id="a-one-node-cluster-has-no-continue"),
        pytest.param({"metadata": {}, "items": []}, 0, id="empty"),
        pytest.param(
            {"metadata": {"remainingItemCount": 0, "continue": ""}, "items": [{}]}, 1, id="zero-remaining"
        ),
    ],
)
def test_node_count_is_items_plus_remaining(body: dict[str, Any], expected: int) -> None:
    assert node_count(body) == expected


@pytest.mark.parametrize(
    ("body", "says"),
    [
        pytest.param(
            {"metadata": {"continue": "x"}, "items": [{}]}, "remainingItemCount", id="count-withheld"
        ),
        pytest.param({"metadata": {"remainingItemCount": -1}, "items": []}, "not a count", id="negative"),
        pytest.param({"metadata": {"remainingItemCount": "9"}, "items": []}, "not a count", id="string"),
        pytest.param({"metadata": {"remainingItemCount": True}, "items": []}, "not a count", id="bool"),
        pytest.param({"items": []}, "without items or metadata", id="no-metadata"),
        pytest.param({"metadata": {}, "items": {}}, "without items or metadata", id="items-not-a-list"),
    ],
)
def test_node_count_refuses_an_answer_that_does_not_tell(body: dict[str, Any], says: str) -> None:
    with pytest.raises(ValueError, match=says):
        node_count(body)


# --- pacing ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("draw", [0.0, 0.5, 0.999])
def test_a_successful_poll_waits_the_interval_jittered_by_a_fifth(draw: float) -> None:
    assert 480.0 <= next_poll_in(600.0, 0, draw) < 720.0


def test_failed_polls_back_off_from_under_a_second_to_the_interval() -> None:
    delays = [next_poll_in(600.0, failures, 0.5) for failures in range(1, 14)]
    assert delays[0] == pytest.approx(0.8)
    assert delays == sorted(delays) and delays[-1] == 600.0
    assert next_poll_in(600.0, 1, 0.5, retry_after=30.0) == 30.0  # Retry-After honoured


@pytest.mark.parametrize(
    ("old", "new", "logged"),
    [
        pytest.param(None, 50, True, id="first"),
        pytest.param(50, 55, False, id="ten-percent"),
        pytest.param(50, 56, True, id="more-than-ten-up"),
        pytest.param(50, 44, True, id="more-than-ten-down"),
        pytest.param(50, 50, False, id="same"),
    ],
)
def test_a_change_of_more_than_ten_percent_is_logged(old: int | None, new: int, logged: bool) -> None:
    assert changed_enough(old, new) is logged


# --- polling ---------------------------------------------------------------------------------------


def test_a_poll_asks_for_one_node_consistently_and_shares_the_budget() -> None:
    api = FakeApi(nodes_page(50))
    c, budget = counter(api)
    assert budget.nodes == 100 and c.public()["source"] == "assumed"  # the assumed count until then
    delay = c.poll()
    assert api.requests == [("GET", NODES_PATH, {"limit": "1"}, "list")]  # no resourceVersion, no selector
    assert 480.0 <= delay < 720.0
    assert budget.nodes == 50
    assert {cls: s.rate for cls, s in budget.shares().items()} == pytest.approx(
        {"assign": 0.08, "interface": 0.08, "attach": 0.08, "describe": 0.32}
    )
    view = c.public()
    assert view["nodes"] == 50 and view["source"] == "api" and view["age_seconds"] == 0.0
    assert view["classes"]["describe"]["rate"] == pytest.approx(0.32)


def test_when_the_api_fails_the_last_count_is_kept_and_polls_back_off() -> None:
    api = FakeApi(
        nodes_page(50),
        ApiError(0, "Unreachable", "GET /api/v1/nodes: ConnectionRefusedError"),
        ApiError(503, "ServiceUnavailable", "etcd is down"),
        ApiError(429, "TooManyRequests", "slow down", retry_after=20.0),
        {"metadata": {"continue": "x"}, "items": [{}]},  # no remainingItemCount: no count either
        nodes_page(100),
    )
    c, budget = counter(api)
    c.poll()
    c._clock.now += 600.0  # type: ignore[attr-defined]
    delays = [c.poll() for _ in range(4)]
    assert budget.nodes == 50, "a failed poll never changes the shares"
    assert delays[0] < delays[1] < 600.0 and delays[2] >= 20.0 and delays[3] < 600.0
    view = c.public()
    assert view["source"] == "api" and view["failures_in_a_row"] == 4 and view["age_seconds"] == 600.0
    assert "remainingItemCount" in view["last_error"]
    assert c.poll() >= 480.0  # back to the interval
    assert budget.nodes == 100 and c.public()["failures_in_a_row"] == 0 and c.public()["last_error"] is None
    assert budget.shares()["assign"].rate == pytest.approx(0.04)


def test_an_api_that_never_answered_leaves_the_assumed_count() -> None:
    api = FakeApi(*(ApiError(0, "Unreachable", "refused") for _ in range(3)))
    c, budget = counter(api, assumed=250)
    for _ in range(3):
        c.poll()
    assert budget.nodes == 250 and c.public()["source"] == "assumed" and c.public()["counted_at"] is None


def test_an_empty_list_counts_this_node() -> None:
    c, budget = counter(FakeApi({"metadata": {}, "items": []}))
    c.poll()
    assert budget.nodes == 1


def test_log_lines_only_when_the_count_moves_more_than_ten_percent() -> None:
    api = FakeApi(nodes_page(50), nodes_page(54), nodes_page(56), nodes_page(61), nodes_page(30))
    c, _ = counter(api)
    with structlog.testing.capture_logs() as logs:
        for _ in range(5):
            c.poll()
    changes = [(e["previous"], e["nodes"]) for e in logs if e["event"] == "node_count_changed"]
    # 54 is within 10% of 50; 56 is not; 61 is within 10% of 56 (the last logged), 30 is not
    assert changes == [(100, 50), (50, 56), (56, 30)]
    assert all("rates" in e for e in logs if e["event"] == "node_count_changed")


def test_a_reconcile_interval_the_read_share_cannot_carry_is_warned_about() -> None:
    api = FakeApi(nodes_page(5000), nodes_page(50))
    budget = ClusterBudget(BUDGET, "aws", nodes=100)
    c = NodeCounter(api, budget, interval=600.0, reconcile_interval=60.0)  # type: ignore[arg-type]
    with structlog.testing.capture_logs() as logs:
        c.poll()  # 16 describes/s over 5,000 nodes: one every 312 s; reconciles every 60 s cannot fit
        c.poll()  # over 50 nodes: one every 3 s
    warnings = [e for e in logs if e["event"] == "cloud_api_budget_reconcile_too_frequent"]
    assert len(warnings) == 1
    assert warnings[0]["nodes"] == 5000 and warnings[0]["at_least"] == 625


class SleepClock(Clock):
    """A monotonic clock that the counter's sleeps advance; stops the run after ``stop_after`` sleeps."""

    def __init__(self, stop_after: int) -> None:
        super().__init__()
        self.slept: list[float] = []
        self.stop_after = stop_after

    def sleep(self, seconds: float) -> bool:
        assert seconds > 0
        self.slept.append(seconds)
        self.now += seconds
        return len(self.slept) >= self.stop_after


def running_counter(
    api: FakeApi, clock: SleepClock, *, busy_interval: float | None = None
) -> tuple[NodeCounter, ClusterBudget]:
    budget = ClusterBudget(BUDGET, "aws", nodes=100, clock=clock)
    c = NodeCounter(
        api,  # type: ignore[arg-type]
        budget,
        interval=60.0,
        busy_interval=busy_interval,
        clock=clock,
        monotonic=clock,
        rng=random.Random(1),
        sleep=clock.sleep,
    )
    return c, budget


def counted_once(
    *answers: dict[str, Any] | Exception, busy_interval: float | None = 30.0
) -> tuple[NodeCounter, ClusterBudget, SleepClock, FakeApi]:
    """A counter whose first poll read 3 nodes; ``answers`` for the polls after it."""
    api = FakeApi(nodes_page(3), *answers)
    clock = SleepClock(stop_after=10_000)
    c, budget = running_counter(api, clock, busy_interval=busy_interval)
    c.poll()
    return c, budget, clock, api


def test_run_polls_until_stopped_and_survives_a_bug() -> None:
    api = FakeApi(nodes_page(3), ApiError(0, "Unreachable", "refused"), RuntimeError("a bug"), nodes_page(4))
    clock = SleepClock(stop_after=4)
    c, budget = running_counter(api, clock)
    with structlog.testing.capture_logs() as logs:
        c.run()
    assert len(api.requests) == 4 and budget.nodes == 4
    slept = clock.slept
    assert 48.0 <= slept[0] < 72.0 and slept[1] < 2.0 and slept[2] == 60.0 and 48.0 <= slept[3] < 72.0
    assert [e["event"] for e in logs if e["log_level"] == "error"] == ["node_count_crashed"]


def test_a_busy_node_reads_the_count_again_once_it_is_the_busy_interval_old() -> None:
    """Callers waiting for the share (a bucket in debt) make the count be read 30 s after the last
    one, not after the interval: a scale-up is seen within 30 s. Looked at every second after that."""
    c, budget, clock, _ = counted_once(nodes_page(300))
    start = clock.now
    for _ in range(100):  # at 4/3 per second and 100/3 tokens held at most: callers wait 50 s or more
        budget.reserve("assign_ips")
    assert budget.busy()
    assert not c._wait(next_poll_in(60.0, 0, 0.5))  # due early: at 30 s, not at 60
    assert clock.now - start == pytest.approx(30.0) and clock.slept == [pytest.approx(30.0)]
    assert c.poll() and budget.nodes == 300 and c.busy_polls == 1
    assert c.public()["busy_polls"] == 1 and c.public()["busy_poll_interval_seconds"] == 30.0


def test_an_idle_node_waits_the_whole_interval_looking_every_second_after_the_busy_interval() -> None:
    c, budget, clock, api = counted_once()
    start = clock.now
    assert not budget.busy()
    assert not c._wait(60.0)
    assert clock.now - start == pytest.approx(60.0) and len(api.requests) == 1 and c.busy_polls == 0
    assert clock.slept[0] == pytest.approx(30.0) and all(s <= 1.0 + 1e-9 for s in clock.slept[1:])


def test_a_node_that_becomes_busy_later_polls_within_a_second() -> None:
    c, budget, clock, _ = counted_once()
    start = clock.now
    sleep = clock.sleep

    def sleep_then_spend(seconds: float) -> bool:
        if clock.now - start >= 40.0 and c.busy_polls == 0:
            while not budget.busy():  # spend what the bucket holds (up to 100/3 tokens), then owe
                budget.reserve("assign_ips")
            for _ in range(10):  # 10 tokens: 7.5 s of waiting
                budget.reserve("assign_ips")
        return sleep(seconds)

    c._sleep = sleep_then_spend
    assert not c._wait(600.0)
    assert 40.0 <= clock.now - start <= 41.0 + 1e-9 and c.busy_polls == 1


def test_no_busy_poll_while_polls_fail_the_backoff_rules() -> None:
    c, budget, clock, _ = counted_once(ApiError(503, "ServiceUnavailable", "down"))
    clock.now += 31.0
    for _ in range(100):
        budget.reserve("assign_ips")
    delay = c.poll()  # fails: the backoff's delay, under a second and a half
    assert c.failures == 1 and delay < 1.5
    assert not c._wait(delay) and c.busy_polls == 0 and clock.slept == [pytest.approx(delay)]


def test_without_a_busy_interval_only_the_interval_counts() -> None:
    c, budget, clock, _ = counted_once(busy_interval=None)
    for _ in range(200):
        budget.reserve("assign_ips")
    assert budget.busy() and not c._wait(60.0)
    assert clock.slept == [pytest.approx(60.0)] and c.busy_polls == 0
