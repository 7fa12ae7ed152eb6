"""The client-side rate limiter and retry policy that every cloud call passes through.

Cloud APIs meter callers with token buckets shared by every node of an account (EC2: 5 mutating
calls per second after a burst of 100; ARM: 10 writes per second after 200). A node daemon that
retries eagerly makes the throttling worse for the whole fleet, so each call here

1. takes a token from a local ``TokenBucket`` (waiting for one if the bucket is empty),
2. runs once,
3. on a ``TemporaryCloudError`` (a ``ThrottledError`` included) sleeps an exponential backoff with
   full jitter, never shorter than the cloud's ``retry_after`` hint, and tries again until
   ``RetryPolicy.max_attempts`` or ``RetryPolicy.deadline`` is reached, then re-raises the last error.

A ``PermanentCloudError`` is raised at once: retrying will not help. Any exception that is not a
``CloudError`` is a bug in the provider (it must translate SDK errors) and propagates untouched.

Everything is synchronous: providers block, and the manager runs them in worker threads. Time is
injected (``clock``, ``sleep``, ``rng``) so tests exercise backoff without sleeping.
"""

from __future__ import annotations

import email.utils
import math
import random
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

import structlog

from ipamd.errors import TemporaryCloudError, ThrottledError

T = TypeVar("T")

_log = structlog.get_logger(__name__)

# 2**64 x base_delay is beyond any sane max_delay; capping the exponent keeps the float finite.
_MAX_EXPONENT = 64


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
        delay = rng.uniform(0.0, self.backoff_cap(retry))
        if retry_after is not None and math.isfinite(retry_after) and retry_after > delay:
            delay = retry_after
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
    """Runs cloud calls through one token bucket and one retry policy. Safe to share between threads."""

    def __init__(
        self,
        bucket: TokenBucket,
        policy: RetryPolicy,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        rng: random.Random | None = None,
        observer: CallObserver | None = None,
    ) -> None:
        self._bucket = bucket
        self._policy = policy
        self._clock = clock
        self._sleep = sleep
        self._rng = rng if rng is not None else random.Random()
        self._rng_lock = threading.Lock()
        self._observer = observer

    @property
    def policy(self) -> RetryPolicy:
        return self._policy

    @property
    def bucket(self) -> TokenBucket:
        return self._bucket

    def call(self, operation: str, fn: Callable[[], T]) -> T:
        """Call ``fn`` under the rate limit, retrying temporary cloud errors; return its result."""
        policy = self._policy
        started = self._clock()
        attempt = 0
        while True:
            attempt += 1
            wait = self._bucket.reserve()
            if wait > 0:
                self._sleep(wait)
            attempt_started = self._clock()
            try:
                result = fn()
            except TemporaryCloudError as exc:
                self._observe(operation, exc, attempt_started)
                delay = math.inf
                if attempt < policy.max_attempts:
                    with self._rng_lock:
                        delay = policy.backoff(attempt, self._rng, exc.retry_after)
                elapsed = self._clock() - started
                if elapsed + delay >= policy.deadline:  # out of attempts, or the retry would be too late
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


__all__ = ["CallObserver", "CloudCaller", "RetryPolicy", "TokenBucket", "outcome_of", "retry_after_seconds"]
