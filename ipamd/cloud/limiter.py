"""The client-side rate limiter and retry policy that every cloud call passes through.

Cloud APIs meter callers with token buckets shared by every node of an account (EC2: 5 mutating
calls per second after a burst of 100; ARM: 10 writes per second after 200). A node daemon that
retries eagerly makes the throttling worse for the whole fleet, so each call here

1. takes a token from a local ``TokenBucket`` (waiting for one if the bucket is empty) and, with a
   cluster-wide budget (``CLOUD_API_BUDGET``, ``ipamd.cloud.budget``), the tokens its operation costs
   from this node's share of each action class (a ``FractionalBucket`` per class),
2. runs once,
3. on a ``TemporaryCloudError`` (a ``ThrottledError`` included) sleeps an exponential backoff with
   full jitter, never shorter than the cloud's ``retry_after`` hint, and tries again until
   ``RetryPolicy.max_attempts`` or ``RetryPolicy.deadline`` is reached, then re-raises the last error.

A ``PermanentCloudError`` is raised at once: retrying will not help. Any exception that is not a
``CloudError`` is a bug in the provider (it must translate SDK errors) and propagates untouched.

Everything is synchronous: providers block, and the manager runs them in worker threads. Time is
injected (``clock``, ``sleep``, ``rng``) so tests exercise backoff without sleeping. The retry
decision is one pure function, ``retry_delay`` (the simulator replays it with its own draws).
"""

from __future__ import annotations

import email.utils
import math
import random
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

import structlog

from ipamd.errors import TemporaryCloudError, ThrottledError

if TYPE_CHECKING:
    from ipamd.cloud.budget import ClusterBudget

T = TypeVar("T")

_log = structlog.get_logger(__name__)

# 2**64 x base_delay is beyond any sane max_delay; capping the exponent keeps the float finite.
_MAX_EXPONENT = 64
# A caller waiting for budget tokens looks again at least this often: a node count that changed the
# class rates meanwhile (a first count after the assumed one, nodes removed) takes effect within it.
_RATE_RECHECK = 1.0
# Float sums of refills and costs may miss a ticket by a rounding error: that close (relative to the
# ticket, which grows with every token taken) counts as earned.
_EPSILON = 1e-12


class TokenBucket:
    """A thread-safe token bucket: ``burst`` tokens at most, refilled at ``rate`` tokens per second.

    The bucket starts full. ``reserve`` always takes a token, going into debt when the bucket is
    empty, and returns how long the caller must wait before using it; concurrent callers therefore
    queue in the order they reserved. ``try_acquire`` takes a token only if one is there now.
    """

    def __init__(self, rate: float, burst: int, *, clock: Callable[[], float] = time.monotonic) -> None:
        if not _finite_at_least(rate, 0.0) or rate == 0:
            raise ValueError(f"rate must be a finite number > 0, got {rate!r}")
        if isinstance(burst, bool) or not isinstance(burst, int) or burst < 1:
            raise ValueError(f"burst must be an integer >= 1, got {burst!r}")
        self._rate = float(rate)
        self._burst = burst
        self._clock = clock
        self._lock = threading.Lock()
        self._tokens = float(burst)
        self._last = clock()

    @property
    def rate(self) -> float:
        return self._rate

    @property
    def burst(self) -> int:
        return self._burst

    def _refill(self) -> None:
        """Add the tokens earned since the last look. Call with the lock held."""
        now = self._clock()
        elapsed = now - self._last
        if elapsed > 0:
            self._tokens = min(float(self._burst), self._tokens + elapsed * self._rate)
            self._last = now

    def reserve(self) -> float:
        """Take a token and return the seconds to wait before using it (0.0 when one was there)."""
        with self._lock:
            self._refill()
            self._tokens -= 1.0
            if self._tokens >= 0:
                return 0.0
            return -self._tokens / self._rate

    def try_acquire(self) -> bool:
        """Take a token if one is available now; never waits and never goes into debt."""
        with self._lock:
            self._refill()
            if self._tokens >= 1.0:
                self._tokens -= 1.0
                return True
            return False

    def next_token_in(self) -> float:
        """Seconds until a token is available (0.0 if one is available now). Takes nothing."""
        with self._lock:
            self._refill()
            if self._tokens >= 1.0:
                return 0.0
            return (1.0 - self._tokens) / self._rate


class FractionalBucket:
    """A thread-safe token bucket for one node's share of a cluster-wide budget: its capacity may be
    below one token, its rate may change, and it keeps a phase.

    One node's share is small: 100 tokens of burst over 5,000 nodes is 0.02 of a token each, less
    than one call. Such a node must earn a whole token before it calls, and that must not happen on
    every node at the same moment: nodes that all sat idle at their capacity and all need a call at
    once (a scale-up, a rollout) would all have their token after the same wait, and call together,
    while the account's bucket cannot store what it refilled meanwhile. So the level never stops at
    the top: it keeps rising at ``rate`` and, on reaching ``top = max(capacity, 1)``, drops one whole
    unused token. An idle node's level thus cycles through (top - 1, top] with a phase of its own
    (``fill``, drawn at random per node), and simultaneous demand on many idle nodes is let through
    spread over one period (1 / rate) at about the budget's rate. With ``capacity`` >= 1 an idle node
    holds at least ``capacity - 1`` tokens and at most ``capacity``.

    ``reserve(cost)`` always takes ``cost`` tokens, going into debt, and returns a ticket;
    ``wait_for(ticket)`` is how long, at the current rate, until the ticket's tokens are earned (0.0
    once they are). Tickets are served in the order they were reserved. ``set_rate`` takes effect
    from now on: queued tickets keep their place and are re-timed at the new rate, none is lost.

    Bookkeeping: ``earned`` counts every token made available and kept (the initial level included),
    ``taken`` every token reserved; the level is ``earned - taken`` (negative: owed to waiters).
    Over any interval, the tokens let through are at most ``rate * t + max(top, cost)``.
    """

    def __init__(
        self,
        rate: float,
        capacity: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        fill: float = 0.0,
    ) -> None:
        _check_rate(rate, capacity)
        if not _finite_at_least(fill, 0.0) or fill >= 1:
            raise ValueError(f"fill must be a number in [0, 1), got {fill!r}")
        self._rate = float(rate)
        self._capacity = float(capacity)
        self._clock = clock
        self._lock = threading.Lock()
        self._earned = self._top() - fill  # ``fill``: how far below the top it starts (the phase)
        self._taken = 0.0
        self._last = clock()

    @property
    def rate(self) -> float:
        return self._rate

    @property
    def capacity(self) -> float:
        return self._capacity

    def _top(self) -> float:
        return max(self._capacity, 1.0)

    def tokens(self) -> float:
        """Tokens in the bucket now; negative when callers queue for that many."""
        with self._lock:
            self._refill()
            return self._earned - self._taken

    def _refill(self) -> None:
        """Add the tokens earned since the last look. Call with the lock held."""
        now = self._clock()
        elapsed = now - self._last
        if elapsed > 0:
            self._earned += elapsed * self._rate
            self._expire()
            self._last = now

    def _expire(self) -> None:
        """Drop the whole tokens above the top; the fraction left is the bucket's phase."""
        over = self._earned - self._taken - self._top()
        if over > 0:
            self._earned -= math.ceil(over)

    def set_rate(self, rate: float, capacity: float) -> None:
        """New refill rate and capacity from now on (what was earned so far is kept, up to the top)."""
        _check_rate(rate, capacity)
        with self._lock:
            self._refill()  # at the old rate, up to now
            self._rate = float(rate)
            self._capacity = float(capacity)
            self._expire()

    def reserve(self, cost: float = 1.0) -> float:
        """Take ``cost`` tokens; the ticket to pass to ``wait_for``."""
        if not _finite_at_least(cost, 0.0):
            raise ValueError(f"cost must be a finite number >= 0, got {cost!r}")
        with self._lock:
            self._refill()
            self._taken += cost
            return self._taken

    def wait_for(self, ticket: float) -> float:
        """Seconds until the tokens of ``ticket`` are earned at the current rate (0.0: now).

        While a ticket is owed the level is below zero, so no token expires before it is earned.
        """
        with self._lock:
            self._refill()
            owed = ticket - self._earned
            if owed <= _EPSILON * max(1.0, abs(ticket)):
                return 0.0
            return owed / self._rate


def _check_rate(rate: float, capacity: float) -> None:
    if not _finite_at_least(rate, 0.0) or rate == 0:
        raise ValueError(f"rate must be a finite number > 0, got {rate!r}")
    if not _finite_at_least(capacity, 0.0) or capacity == 0:
        raise ValueError(f"capacity must be a finite number > 0, got {capacity!r}")


@dataclass(frozen=True)
class RetryPolicy:
    """How long to keep retrying a temporary cloud failure.

    ``max_attempts`` counts the first call. ``deadline`` is measured from the first attempt: a retry
    whose backoff would end at or after it is not made. Backoff before retry *n* is drawn uniformly
    from ``[0, min(max_delay, base_delay * 2**(n-1))]`` ("full jitter", so that nodes throttled
    together do not retry together), then raised to the error's ``retry_after`` if that is longer.
    The deadline bounds retrying; waiting for a token of the local bucket is bounded by the bucket's
    own rate instead.
    """

    max_attempts: int = 8
    base_delay: float = 0.2
    max_delay: float = 20.0
    deadline: float = 120.0

    def __post_init__(self) -> None:
        if isinstance(self.max_attempts, bool) or not isinstance(self.max_attempts, int):
            raise ValueError(f"max_attempts must be an integer, got {self.max_attempts!r}")
        if self.max_attempts < 1:
            raise ValueError(f"max_attempts must be >= 1, got {self.max_attempts!r}")
        if not _finite_at_least(self.base_delay, 0.0):
            raise ValueError(f"base_delay must be a finite number >= 0, got {self.base_delay!r}")
        if not _finite_at_least(self.max_delay, self.base_delay):
            raise ValueError(f"max_delay must be a finite number >= base_delay, got {self.max_delay!r}")
        if not _finite_at_least(self.deadline, 0.0) or self.deadline == 0:
            raise ValueError(f"deadline must be a finite number > 0, got {self.deadline!r}")

    def backoff_cap(self, retry: int) -> float:
        """The upper bound of the jittered backoff before retry ``retry`` (1 = the first retry)."""
        if retry < 1:
            raise ValueError(f"retry must be >= 1, got {retry!r}")
        return min(self.max_delay, self.base_delay * 2.0 ** min(retry - 1, _MAX_EXPONENT))

    def backoff(self, retry: int, rng: random.Random, retry_after: float | None = None) -> float:
        """The delay before retry ``retry``: full jitter, never below a usable ``retry_after`` hint."""
        return backoff_delay(self, retry, rng.random(), retry_after)


def backoff_delay(policy: RetryPolicy, retry: int, draw: float, retry_after: float | None = None) -> float:
    """The delay before retry ``retry`` (1 = the first retry) for a uniform ``draw`` in [0, 1).

    ``draw * policy.backoff_cap(retry)`` ("full jitter"), raised to ``retry_after`` when that hint is
    finite and longer. Pure: the same arguments give the same delay.
    """
    delay = draw * policy.backoff_cap(retry)
    if retry_after is not None and math.isfinite(retry_after) and retry_after > delay:
        delay = retry_after
    return delay


def retry_delay(
    policy: RetryPolicy, attempt: int, elapsed: float, draw: float, retry_after: float | None = None
) -> float | None:
    """After attempt ``attempt`` (1 = the first call) failed with a temporary error ``elapsed``
    seconds after the first attempt began: the pause before the next attempt, or None to give up.

    None when ``attempt`` is the last ``policy.max_attempts`` allows, or when the pause would end at
    or after ``policy.deadline``. Pure; ``CloudCaller.call`` decides with it, and so can a simulator.
    """
    if attempt >= policy.max_attempts:
        return None
    delay = backoff_delay(policy, attempt, draw, retry_after)
    if elapsed + delay >= policy.deadline:
        return None
    return delay


def _finite_at_least(value: object, floor: float) -> bool:
    return (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        and math.isfinite(value)
        and value >= floor
    )


class CallObserver(Protocol):
    """Sees every attempt and every backoff; the metrics layer implements it.

    ``outcome`` is ``"ok"``, ``"throttled"`` or ``"error:<ClassName>"``; ``seconds`` is how long the
    attempt itself took (token waits and backoff sleeps excluded).
    """

    def on_call(self, operation: str, outcome: str, seconds: float) -> None: ...

    def on_backoff(self, operation: str, delay: float) -> None: ...


def outcome_of(exc: BaseException | None) -> str:
    """The observer's outcome label for an attempt that raised ``exc`` (None: it succeeded)."""
    if exc is None:
        return "ok"
    if isinstance(exc, ThrottledError):
        return "throttled"
    return f"error:{type(exc).__name__}"


class CloudCaller:
    """Runs cloud calls through one token bucket and one retry policy. Safe to share between threads.

    With a ``budget`` (CLOUD_API_BUDGET) every attempt also takes its operation's cost from this
    node's share of the cluster-wide budget, and waits until both have its tokens.
    """

    def __init__(
        self,
        bucket: TokenBucket,
        policy: RetryPolicy,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        rng: random.Random | None = None,
        observer: CallObserver | None = None,
        budget: ClusterBudget | None = None,
    ) -> None:
        self._bucket = bucket
        self._policy = policy
        self._clock = clock
        self._sleep = sleep
        self._rng = rng if rng is not None else random.Random()
        self._rng_lock = threading.Lock()
        self._observer = observer
        self._budget = budget

    @property
    def policy(self) -> RetryPolicy:
        return self._policy

    @property
    def bucket(self) -> TokenBucket:
        return self._bucket

    @property
    def budget(self) -> ClusterBudget | None:
        return self._budget

    def _take_tokens(self, operation: str) -> None:
        """Wait for this attempt's token of the node bucket and, with a budget, its class tokens."""
        wait = self._bucket.reserve()
        if self._budget is None:
            if wait > 0:
                self._sleep(wait)
            return
        node_ready = self._clock() + wait
        tickets = self._budget.reserve(operation)
        while True:
            remaining = max(node_ready - self._clock(), self._budget.wait_for(tickets))
            if remaining <= 0:
                return
            if self._budget.closed:  # a share's wait can last minutes: the daemon does not wait for it
                raise TemporaryCloudError(operation, "not made: the daemon is stopping")
            self._sleep(min(remaining, _RATE_RECHECK))

    def call(self, operation: str, fn: Callable[[], T]) -> T:
        """Call ``fn`` under the rate limit, retrying temporary cloud errors; return its result."""
        policy = self._policy
        started = self._clock()
        attempt = 0
        while True:
            attempt += 1
            self._take_tokens(operation)
            attempt_started = self._clock()
            try:
                result = fn()
            except TemporaryCloudError as exc:
                self._observe(operation, exc, attempt_started)
                draw = 0.0
                if attempt < policy.max_attempts:  # the last attempt draws nothing: same sequence as ever
                    with self._rng_lock:
                        draw = self._rng.random()
                elapsed = self._clock() - started
                delay = retry_delay(policy, attempt, elapsed, draw, exc.retry_after)
                if delay is None:  # out of attempts, or the retry would be too late
                    _log.warning(
                        "cloud_call_gave_up",
                        operation=operation,
                        attempts=attempt,
                        elapsed=round(elapsed, 3),
                        error=type(exc).__name__,
                    )
                    raise
                _log.info(
                    "cloud_call_retry",
                    operation=operation,
                    attempt=attempt,
                    delay=round(delay, 3),
                    error=type(exc).__name__,
                )
                if self._observer is not None:
                    self._observer.on_backoff(operation, delay)
                if delay > 0:
                    self._sleep(delay)
            except Exception as exc:
                # PermanentCloudError: retrying will not help. Anything else is a provider bug.
                self._observe(operation, exc, attempt_started)
                raise
            else:
                self._observe(operation, None, attempt_started)
                return result

    def _observe(self, operation: str, exc: BaseException | None, attempt_started: float) -> None:
        if self._observer is not None:
            seconds = max(0.0, self._clock() - attempt_started)
            self._observer.on_call(operation, outcome_of(exc), seconds)


def retry_after_seconds(headers: Mapping[str, Any]) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or an HTTP date); None when absent or bad."""
    raw = None
    for key, value in headers.items():
        if str(key).lower() == "retry-after":
            raw = str(value).strip()
            break
    if not raw:
        return None
    try:
        seconds = float(raw)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(raw)
        except (TypeError, ValueError, IndexError):
            return None
        seconds = when.timestamp() - time.time()
    if not math.isfinite(seconds):
        return None
    return max(0.0, seconds)


__all__ = [
    "CallObserver",
    "CloudCaller",
    "FractionalBucket",
    "RetryPolicy",
    "TokenBucket",
    "backoff_delay",
    "outcome_of",
    "retry_after_seconds",
    "retry_delay",
]
