"""``ipamd.daemon.supervise``: restarts with backoff, gives up after the limit, counts per task.

Time is faked: the sleep records the backoff and advances the clock, so nothing here waits.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest

from ipamd.daemon import MAX_RESTARTS, TaskGaveUp, supervise
from ipamd.metrics import Metrics


class FakeTime:
    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, delay: float) -> None:
        self.sleeps.append(delay)
        self.now += delay


class Flaky:
    """A task that crashes ``crashes`` times (each run taking ``runs_for`` seconds), then returns."""

    def __init__(self, time: FakeTime, crashes: int, runs_for: float = 0.0) -> None:
        self.time = time
        self.crashes = crashes
        self.runs_for = runs_for
        self.runs = 0

    async def __call__(self) -> None:
        self.runs += 1
        self.time.now += self.runs_for
        if self.runs <= self.crashes:
            raise RuntimeError(f"crash {self.runs}")


def restarts(metrics: Metrics, task: str) -> float:
    value = metrics.registry.get_sample_value("cloudcni_task_restarts_total", {"task": task})
    assert value is not None, f"no series for task {task}"
    return value


def run_supervised(
    name: str, task: Callable[[], Awaitable[object]], stop: asyncio.Event, metrics: Metrics, time: FakeTime
) -> Awaitable[None]:
    return supervise(name, task, stop, metrics, clock=time.clock, sleep=time.sleep)


def test_task_that_crashes_twice_then_runs_is_restarted_twice() -> None:
    time, metrics = FakeTime(), Metrics()
    task = Flaky(time, crashes=2)

    async def main() -> asyncio.Event:
        stop = asyncio.Event()
        await run_supervised("pool_manager", task, stop, metrics, time)
        return stop

    stop = asyncio.run(main())
    assert task.runs == 3
    assert time.sleeps == [2.0, 4.0], "backoff doubles"
    assert restarts(metrics, "pool_manager") == 2
    assert not stop.is_set(), "a task that recovered does not stop the daemon"


def test_task_that_keeps_crashing_stops_the_daemon_after_the_limit() -> None:
    time, metrics = FakeTime(), Metrics()
    task = Flaky(time, crashes=1_000)

    async def main() -> asyncio.Event:
        stop = asyncio.Event()
        with pytest.raises(TaskGaveUp) as caught:
            await run_supervised("leak_sweep", task, stop, metrics, time)
        assert caught.value.task == "leak_sweep" and caught.value.crashes == MAX_RESTARTS + 1
        return stop

    stop = asyncio.run(main())
    assert stop.is_set(), "giving up stops the daemon"
    assert task.runs == MAX_RESTARTS + 1
    assert restarts(metrics, "leak_sweep") == MAX_RESTARTS
    assert time.sleeps == [2.0, 4.0, 8.0, 16.0, 30.0], "backoff is capped at 30 s"


def test_restarts_are_counted_per_task() -> None:
    time, metrics = FakeTime(), Metrics()
    # Together they crash more often than the limit allows one task: each has its own count.
    manager, sweep = Flaky(time, crashes=2), Flaky(time, crashes=3)

    async def main() -> asyncio.Event:
        stop = asyncio.Event()
        await asyncio.gather(
            supervise(
                "pool_manager", manager, stop, metrics, max_restarts=3, clock=time.clock, sleep=time.sleep
            ),
            supervise("leak_sweep", sweep, stop, metrics, max_restarts=3, clock=time.clock, sleep=time.sleep),
            supervise("del_spool", Flaky(time, crashes=0), stop, metrics, clock=time.clock, sleep=time.sleep),
        )
        return stop

    stop = asyncio.run(main())
    assert not stop.is_set()
    assert restarts(metrics, "pool_manager") == 2
    assert restarts(metrics, "leak_sweep") == 3
    assert restarts(metrics, "del_spool") == 0, "a supervised task's series exists before any crash"


def test_a_task_that_ran_long_before_crashing_starts_counting_afresh() -> None:
    time, metrics = FakeTime(), Metrics()
    task = Flaky(time, crashes=3 * MAX_RESTARTS, runs_for=600.0)  # crashes once every 10 minutes

    async def main() -> asyncio.Event:
        stop = asyncio.Event()
        await supervise(
            "leak_sweep", task, stop, metrics, stable_after=300.0, clock=time.clock, sleep=time.sleep
        )
        return stop

    stop = asyncio.run(main())
    assert not stop.is_set()
    assert restarts(metrics, "leak_sweep") == 3 * MAX_RESTARTS
    assert set(time.sleeps) == {2.0}, "each crash is the first of a series"


def test_stop_during_backoff_ends_supervision_without_another_run() -> None:
    metrics = Metrics()
    runs = 0

    async def crash() -> None:
        nonlocal runs
        runs += 1
        raise RuntimeError("boom")

    async def main() -> None:
        stop = asyncio.Event()
        supervised = asyncio.create_task(supervise("del_spool", crash, stop, metrics))  # real 2 s backoff
        await asyncio.sleep(0.05)
        stop.set()
        await asyncio.wait_for(supervised, 1.0)

    asyncio.run(main())
    assert runs == 1
    assert restarts(metrics, "del_spool") == 1


def test_cancellation_is_not_a_crash() -> None:
    metrics = Metrics()

    async def forever() -> None:
        await asyncio.Event().wait()

    async def main() -> None:
        supervised = asyncio.create_task(supervise("pool_manager", forever, asyncio.Event(), metrics))
        await asyncio.sleep(0.01)
        supervised.cancel()
        with pytest.raises(asyncio.CancelledError):
            await supervised

    asyncio.run(main())
    assert restarts(metrics, "pool_manager") == 0
