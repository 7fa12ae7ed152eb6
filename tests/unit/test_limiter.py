"""The token bucket, the retry policy and CloudCaller, on a fake clock: nothing here really sleeps."""

from __future__ import annotations

import math
import random
import threading
from collections.abc import Callable

import pytest

from ipamd.cloud.limiter import CloudCaller, RetryPolicy, TokenBucket, outcome_of
from ipamd.errors import (
    CloudError,
    CloudPermissionError,
    InterfaceNotFound,
    LimitExceeded,
    PermanentCloudError,
    SubnetFull,
    TemporaryCloudError,
    ThrottledError,
)


class FakeClock:
    """A clock that only moves when someone sleeps on it (or a test advances it)."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        assert seconds >= 0
        self.sleeps.append(seconds)
        self.now += seconds

    def advance(self, seconds: float) -> None:
        self.now += seconds


class RecordingObserver:
    def __init__(self) -> None:
        self.calls: list[tuple[str, str, float]] = []
        self.backoffs: list[tuple[str, float]] = []

    def on_call(self, operation: str, outcome: str, seconds: float) -> None:
        self.calls.append((operation, outcome, seconds))

    def on_backoff(self, operation: str, delay: float) -> None:
        self.backoffs.append((operation, delay))


def failing(errors: list[BaseException], result: str = "done", clock: FakeClock | None = None,
            takes: float = 0.0) -> Callable[[], str]:  # fmt: skip
    """A call that raises ``errors`` in turn, then returns ``result``; each attempt takes ``takes``."""
    pending = list(errors)

    def fn() -> str:
        if clock is not None:
            clock.advance(takes)
        if pending:
            raise pending.pop(0)
        return result

    return fn


def make_caller(
    clock: FakeClock,
    policy: RetryPolicy | None = None,
    *,
    rate: float = 1000.0,
    burst: int = 1000,
    observer: RecordingObserver | None = None,
    seed: int = 7,
) -> CloudCaller:
    return CloudCaller(
        TokenBucket(rate, burst, clock=clock),
        policy or RetryPolicy(),
        clock=clock,
        sleep=clock.sleep,
        rng=random.Random(seed),
        observer=observer,
    )


# --- TokenBucket --------------------------------------------------------------------------------


def test_bucket_starts_full_and_then_refuses() -> None:
    clock = FakeClock()
    bucket = TokenBucket(5, 3, clock=clock)
    assert [bucket.try_acquire() for _ in range(4)] == [True, True, True, False]


@pytest.mark.parametrize(
    ("rate", "burst", "advance", "expected"),
    [
        pytest.param(5.0, 10, 0.0, 0, id="no-time-no-tokens"),
        pytest.param(5.0, 10, 0.2, 1, id="one-token-after-1/rate"),
        pytest.param(5.0, 10, 0.19, 0, id="not-quite-one"),
        pytest.param(5.0, 10, 1.0, 5, id="rate-per-second"),
        pytest.param(5.0, 10, 100.0, 10, id="capped-at-burst"),
        pytest.param(0.5, 2, 3.0, 1, id="slow-rate"),
    ],
)
def test_bucket_refill(rate: float, burst: int, advance: float, expected: int) -> None:
    clock = FakeClock()
    bucket = TokenBucket(rate, burst, clock=clock)
    while bucket.try_acquire():
        pass
    clock.advance(advance)
    got = 0
    while bucket.try_acquire():
        got += 1
    assert got == expected


def test_reserve_queues_waiters_in_order() -> None:
    clock = FakeClock()
    bucket = TokenBucket(2, 1, clock=clock)
    assert bucket.reserve() == 0.0
    assert bucket.reserve() == pytest.approx(0.5)
    assert bucket.reserve() == pytest.approx(1.0)  # in debt: behind the previous reservation
    clock.advance(1.0)
    assert bucket.reserve() == pytest.approx(0.5)
    assert not bucket.try_acquire()  # try_acquire never goes into debt


def test_next_token_in_takes_nothing() -> None:
    clock = FakeClock()
    bucket = TokenBucket(4, 1, clock=clock)
    assert bucket.next_token_in() == 0.0
    assert bucket.try_acquire()
    assert bucket.next_token_in() == pytest.approx(0.25)
    clock.advance(0.1)
    assert bucket.next_token_in() == pytest.approx(0.15)
    clock.advance(0.15)
    assert bucket.next_token_in() == 0.0
    assert bucket.try_acquire()


def test_bucket_ignores_a_clock_going_backwards() -> None:
    clock = FakeClock()
    bucket = TokenBucket(1, 1, clock=clock)
    assert bucket.try_acquire()
    clock.advance(-10)
    assert not bucket.try_acquire()
    clock.advance(11)
    assert bucket.try_acquire()


@pytest.mark.parametrize(
    ("rate", "burst", "param"),
    [
        pytest.param(0, 1, "rate", id="rate-zero"),
        pytest.param(-1, 1, "rate", id="rate-negative"),
        pytest.param(float("inf"), 1, "rate", id="rate-inf"),
        pytest.param(float("nan"), 1, "rate", id="rate-nan"),
        pytest.param(1, 0, "burst", id="burst-zero"),
        pytest.param(1, 1.5, "burst", id="burst-float"),
        pytest.param(1, True, "burst", id="burst-bool"),
    ],
)
def test_bucket_rejects_bad_arguments(rate: float, burst: int, param: str) -> None:
    with pytest.raises(ValueError, match=param):
        TokenBucket(rate, burst)


def test_bucket_is_thread_safe() -> None:
    clock = FakeClock()  # frozen: no refill, so exactly ``burst`` acquisitions can succeed
    bucket = TokenBucket(1, 500, clock=clock)
    wins: list[bool] = []
    lock = threading.Lock()

    def grab() -> None:
        mine = [bucket.try_acquire() for _ in range(200)]
        with lock:
            wins.extend(mine)

    threads = [threading.Thread(target=grab) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(wins) == 500


# --- RetryPolicy --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("retry", "cap"),
    [
        pytest.param(1, 0.2, id="first"),
        pytest.param(2, 0.4, id="second"),
        pytest.param(5, 3.2, id="fifth"),
        pytest.param(7, 12.8, id="seventh"),
        pytest.param(8, 20.0, id="capped"),
        pytest.param(10_000, 20.0, id="huge-no-overflow"),
    ],
)
def test_backoff_cap_doubles_up_to_max_delay(retry: int, cap: float) -> None:
    assert RetryPolicy().backoff_cap(retry) == pytest.approx(cap)


def test_backoff_is_full_jitter_within_cap() -> None:
    policy = RetryPolicy(base_delay=1.0, max_delay=8.0)
    rng = random.Random(3)
    for retry in range(1, 8):
        delays = [policy.backoff(retry, rng) for _ in range(200)]
        cap = policy.backoff_cap(retry)
        assert all(0.0 <= d <= cap for d in delays)
        assert max(delays) > cap * 0.8  # spread over the whole range: full jitter, not "cap +- x"
        assert min(delays) < cap * 0.2


@pytest.mark.parametrize(
    ("retry_after", "at_least"),
    [
        pytest.param(None, 0.0, id="no-hint"),
        pytest.param(5.0, 5.0, id="hint-above-cap"),
        pytest.param(100.0, 100.0, id="hint-above-max-delay"),
        pytest.param(float("nan"), 0.0, id="nan-hint-ignored"),
    ],
)
def test_backoff_honours_retry_after_as_lower_bound(retry_after: float | None, at_least: float) -> None:
    policy = RetryPolicy()
    delay = policy.backoff(1, random.Random(0), retry_after)
    assert delay >= at_least
    if retry_after is None or math.isnan(retry_after):
        assert delay <= policy.backoff_cap(1)


@pytest.mark.parametrize(
    ("kwargs", "param"),
    [
        pytest.param({"max_attempts": 0}, "max_attempts", id="no-attempts"),
        pytest.param({"max_attempts": 2.5}, "max_attempts", id="float-attempts"),
        pytest.param({"base_delay": -1}, "base_delay", id="negative-base"),
        pytest.param({"base_delay": 5, "max_delay": 1}, "max_delay", id="max-below-base"),
        pytest.param({"max_delay": float("inf")}, "max_delay", id="infinite-max"),
        pytest.param({"deadline": 0}, "deadline", id="zero-deadline"),
    ],
)
def test_policy_rejects_bad_values(kwargs: dict[str, float], param: str) -> None:
    with pytest.raises(ValueError, match=param):
        RetryPolicy(**kwargs)  # type: ignore[arg-type]


def test_backoff_cap_rejects_retry_zero() -> None:
    with pytest.raises(ValueError, match="retry"):
        RetryPolicy().backoff_cap(0)


# --- CloudCaller --------------------------------------------------------------------------------


def test_success_first_time_does_not_sleep() -> None:
    clock = FakeClock()
    observer = RecordingObserver()
    caller = make_caller(clock, observer=observer)
    assert caller.call("assign_ips", failing([], clock=clock, takes=0.25)) == "done"
    assert clock.sleeps == []
    assert observer.calls == [("assign_ips", "ok", 0.25)]
    assert observer.backoffs == []


def test_temporary_errors_are_retried_with_growing_backoff() -> None:
    clock = FakeClock()
    observer = RecordingObserver()
    policy = RetryPolicy(base_delay=1.0, max_delay=100.0)
    caller = make_caller(clock, policy, observer=observer)
    errors: list[BaseException] = [
        TemporaryCloudError("assign_ips", "503"),
        ThrottledError("assign_ips", "RequestLimitExceeded"),
        TemporaryCloudError("assign_ips", "timeout"),
    ]
    assert caller.call("assign_ips", failing(errors)) == "done"
    assert [outcome for _, outcome, _ in observer.calls] == [
        "error:TemporaryCloudError",
        "throttled",
        "error:TemporaryCloudError",
        "ok",
    ]
    assert len(clock.sleeps) == 3
    for retry, slept in enumerate(clock.sleeps, start=1):
        assert 0.0 <= slept <= policy.backoff_cap(retry)
    assert [delay for _, delay in observer.backoffs] == clock.sleeps


def test_backoff_never_exceeds_max_delay() -> None:
    clock = FakeClock()
    policy = RetryPolicy(max_attempts=30, base_delay=1.0, max_delay=3.0, deadline=10_000.0)
    caller = make_caller(clock, policy)
    err = TemporaryCloudError("attach_interface", "503")
    with pytest.raises(TemporaryCloudError):
        caller.call("attach_interface", failing([err] * 30))
    assert len(clock.sleeps) == 29
    assert max(clock.sleeps) <= 3.0


def test_retry_after_is_honoured_even_above_max_delay() -> None:
    clock = FakeClock()
    caller = make_caller(clock, RetryPolicy(max_delay=1.0))
    err = ThrottledError("assign_ips", "RequestLimitExceeded", retry_after=7.5)
    assert caller.call("assign_ips", failing([err])) == "done"
    assert clock.sleeps == [7.5]


@pytest.mark.parametrize("max_attempts", [1, 2, 5], ids=lambda n: f"attempts-{n}")
def test_max_attempts_then_the_last_error_is_raised(max_attempts: int) -> None:
    clock = FakeClock()
    observer = RecordingObserver()
    caller = make_caller(clock, RetryPolicy(max_attempts=max_attempts), observer=observer)
    errors = [TemporaryCloudError("assign_ips", f"503 #{n}") for n in range(10)]
    with pytest.raises(TemporaryCloudError) as info:
        caller.call("assign_ips", failing(list(errors)))
    assert info.value is errors[max_attempts - 1]
    assert len(observer.calls) == max_attempts
    assert len(clock.sleeps) == max_attempts - 1


def test_deadline_stops_retrying_before_it_passes() -> None:
    clock = FakeClock()
    start = clock.now
    policy = RetryPolicy(max_attempts=1000, base_delay=1.0, max_delay=4.0, deadline=30.0)
    observer = RecordingObserver()
    caller = make_caller(clock, policy, observer=observer)
    err = TemporaryCloudError("attach_interface", "503")
    with pytest.raises(TemporaryCloudError):
        caller.call("attach_interface", failing([err] * 1000, clock=clock, takes=1.0))
    assert clock.now - start < 30.0 + 1.0  # the last attempt started before the deadline
    assert 3 < len(observer.calls) < 30


def test_retry_after_beyond_the_deadline_gives_up_at_once() -> None:
    clock = FakeClock()
    caller = make_caller(clock, RetryPolicy(deadline=60.0))
    err = ThrottledError("assign_ips", "RequestLimitExceeded", retry_after=120.0)
    with pytest.raises(ThrottledError):
        caller.call("assign_ips", failing([err]))
    assert clock.sleeps == []


@pytest.mark.parametrize(
    "error",
    [
        pytest.param(PermanentCloudError("assign_ips", "bad"), id="permanent"),
        pytest.param(LimitExceeded("assign_ips", "too many"), id="limit"),
        pytest.param(SubnetFull("assign_ips", "full"), id="subnet-full"),
        pytest.param(InterfaceNotFound("assign_ips", "gone"), id="not-found"),
        pytest.param(CloudPermissionError("assign_ips", "denied", "ec2:AssignPrivateIpAddresses"), id="iam"),
        pytest.param(CloudError("assign_ips", "unclassified"), id="bare-cloud-error"),
    ],
)
def test_non_temporary_cloud_errors_raise_at_once(error: CloudError) -> None:
    clock = FakeClock()
    observer = RecordingObserver()
    caller = make_caller(clock, observer=observer)
    with pytest.raises(type(error)) as info:
        caller.call("assign_ips", failing([error]))
    assert info.value is error
    assert clock.sleeps == []
    assert observer.calls == [("assign_ips", f"error:{type(error).__name__}", 0.0)]


@pytest.mark.parametrize("error", [ValueError("bug"), KeyError("bug")], ids=["value-error", "key-error"])
def test_a_non_cloud_exception_is_a_bug_and_propagates(error: Exception) -> None:
    clock = FakeClock()
    observer = RecordingObserver()
    caller = make_caller(clock, observer=observer)
    with pytest.raises(type(error)):
        caller.call("list_interfaces", failing([error]))
    assert clock.sleeps == []
    assert [outcome for _, outcome, _ in observer.calls] == [f"error:{type(error).__name__}"]


def test_calls_wait_for_a_token_and_waits_are_not_call_latency() -> None:
    clock = FakeClock()
    observer = RecordingObserver()
    caller = make_caller(clock, rate=2.0, burst=1, observer=observer)
    for _ in range(3):
        caller.call("assign_ips", failing([], clock=clock, takes=0.1))
    # the first token was there; later ones arrive 0.5 s apart, minus the 0.1 s each call took
    assert clock.sleeps == pytest.approx([0.4, 0.4])
    assert [seconds for _, _, seconds in observer.calls] == pytest.approx([0.1, 0.1, 0.1])


def test_retries_also_take_tokens() -> None:
    clock = FakeClock()
    caller = make_caller(clock, RetryPolicy(base_delay=0.0, max_delay=0.0), rate=1.0, burst=1)
    err = TemporaryCloudError("assign_ips", "503")
    caller.call("assign_ips", failing([err, err]))
    assert clock.sleeps == pytest.approx([1.0, 1.0])  # no backoff, but each retry waits for a token


def test_same_seed_same_backoff() -> None:
    def run() -> list[float]:
        clock = FakeClock()
        caller = make_caller(clock, RetryPolicy(max_attempts=6), seed=42)
        with pytest.raises(TemporaryCloudError):
            caller.call("assign_ips", failing([TemporaryCloudError("assign_ips", "503")] * 6))
        return clock.sleeps

    assert run() == run()


@pytest.mark.parametrize(
    ("exc", "outcome"),
    [
        pytest.param(None, "ok", id="ok"),
        pytest.param(ThrottledError("x", "y", retry_after=1), "throttled", id="throttled"),
        pytest.param(TemporaryCloudError("x", "y"), "error:TemporaryCloudError", id="temporary"),
        pytest.param(SubnetFull("x", "y"), "error:SubnetFull", id="subnet-full"),
        pytest.param(RuntimeError("bug"), "error:RuntimeError", id="bug"),
    ],
)
def test_outcome_labels(exc: BaseException | None, outcome: str) -> None:
    assert outcome_of(exc) == outcome
