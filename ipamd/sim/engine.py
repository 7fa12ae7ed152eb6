"""The discrete-event core: a simulated clock, a heap of timestamped callbacks, and a lazy workload stream.

Nothing sleeps: time jumps from one event to the next. Two kinds of event meet here:

- callbacks the simulation schedules for itself (a cloud call completes, a node's manager wakes), in a
  heap ordered by (time, sequence number), so events at the same time run in the order they were
  scheduled and a run is deterministic;
- the workload, an iterator of events in time order (pods created and deleted, nodes added and
  removed) that is only read one event ahead, so a workload of millions of events never sits in
  memory at once.

At equal times the workload's events run first: what happens at one instant (a burst of pods created
together) is all there before anything reacts to it, as a daemon's loop woken by several ADDs at
once plans once for all of them.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Callable, Iterator
from typing import Any, Generic, Protocol, TypeVar

__all__ = ["Engine", "Timed"]


class Timed(Protocol):
    @property
    def t(self) -> float: ...


E = TypeVar("E", bound=Timed)
_PROGRESS_EVERY = 8192  # events between two progress reports


class Engine(Generic[E]):
    """Runs callbacks ``fn(now, arg)`` at their times, merged with ``stream`` handled by ``handle``."""

    __slots__ = ("_handle", "_heap", "_next", "_seq", "_stream", "events", "now")

    def __init__(self, stream: Iterator[E], handle: Callable[[E], None], *, start: float = 0.0) -> None:
        self._heap: list[tuple[float, int, Callable[[float, Any], None], Any]] = []
        self._seq = 0
        self._stream = stream
        self._handle = handle
        self._next: E | None = next(stream, None)
        self.now = start
        self.events = 0  # events run so far, of both kinds

    def at(self, when: float, fn: Callable[[float, Any], None], arg: Any = None) -> None:
        """Run ``fn(when, arg)`` at ``when`` (not before now: the clock never goes back)."""
        if when < self.now:
            raise ValueError(f"cannot schedule at {when}: the clock is at {self.now}")
        heapq.heappush(self._heap, (when, self._seq, fn, arg))
        self._seq += 1

    @property
    def pending(self) -> int:
        """Callbacks scheduled and not run yet."""
        return len(self._heap)

    def run(self, until: float, progress: Callable[[float], None] | None = None) -> None:
        """Run every event at or before ``until``; the clock then reads ``until``. May be called again
        with a later ``until`` to go on (tests look at the state in between)."""
        heap, pop, stream, handle = self._heap, heapq.heappop, self._stream, self._handle
        nxt = self._next
        count = 0
        report = _PROGRESS_EVERY
        try:
            while True:
                # the scheduled events before the next workload event (before it: at equal times the
                # workload goes first), then that event
                limit = nxt.t if nxt is not None else math.inf
                while heap:
                    when = heap[0][0]
                    if when >= limit or when > until:
                        break
                    _, _, fn, arg = pop(heap)
                    self.now = when
                    fn(when, arg)
                    count += 1
                if nxt is None or limit > until:
                    break
                if limit < self.now:
                    raise ValueError(f"workload events out of order: {limit} after {self.now}")
                self.now = limit
                event, nxt = nxt, None
                handle(event)
                nxt = next(stream, None)
                count += 1
                if progress is not None and count >= report:
                    report = count + _PROGRESS_EVERY
                    progress(self.now)
        finally:
            self._next = nxt
            self.events += count
        self.now = max(self.now, until)
