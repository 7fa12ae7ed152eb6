"""Adaptive warm pool (``POOL_MODE=adaptive``): learn a node's pod starts, choose the pool's targets.

Pure: no I/O, no clock (``now`` is passed in), bounded memory. The daemon's manager, the cluster
simulator and the tests run the same two pieces:

- :class:`DemandTracker` is told every pod start and stop. It keeps a *start rate* (exponentially
  decayed, time constant ``RATE_SECONDS``) and, for every start, its *burst*: how many pods started
  within the ``REFILL_SECONDS`` ending at it (the time one cloud call takes to grow the pool). The
  bursts of the last ``window`` seconds (``ADAPTIVE_WINDOW``) are kept as one small histogram per
  1/``HISTORY_BUCKETS`` of the window; :meth:`DemandTracker.snapshot` gives a :class:`Demand`.
- :func:`adaptive_targets` turns a :class:`Demand` into the :class:`WarmPoolTargets` that
  ``ipamd.pool.policy.plan`` then honours: adaptive mode only chooses targets, it is not a second
  planner. With U a full interface's worth of addresses::

      burst     = the burst of 99% of the starts in the window (for the tracker's first two minutes at
                  least U / 2: a prior for a node that has just started)
      flow      = ceil(2 x start rate x REFILL_SECONDS)       (0 below one start per window)
      warm_ip   = max(floor, min(burst + flow, ceil(U / 2)))   at most what max pods allow
      ip_batch  = max(IP_BATCH_SIZE, min(burst, ceil(U / 4)))
      release_delay = max(POOL_RELEASE_DELAY, RELEASE_SECONDS)

  ``floor`` is WARM_IP_TARGET (with prefix delegation, or 16 x WARM_PREFIX_TARGET if more), or
  ``DEFAULT_FLOOR`` when unset; MINIMUM_IP_TARGET is kept as is. Free addresses then stay between
  ``warm_ip`` and ``warm_ip + ip_batch - 1`` (``plan``'s batch band): one cloud call fetches a
  burst's worth, and a band of a burst absorbs churn without calls. The burst, hence the batch and
  most of ``warm_ip``, comes from the window's history, so it drops only when the slices that saw
  the demand leave the window: the pool shrinks only after demand stayed low for that long
  (hysteresis); the decayed rate adds to the target while starts come faster. With prefix
  delegation ``plan`` rounds ``warm_ip`` to whole prefixes and ``ip_batch`` does not apply.

docs/pool-policy.md ("Adaptive mode") has the reasoning, the knobs and the limitations.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Iterator
from dataclasses import dataclass

from ipamd.pool.model import PREFIX_SIZE, InstanceLimits, WarmPoolTargets
from ipamd.pool.policy import effective_max_pods

__all__ = [
    "BATCH_SHARE",
    "BURST_QUANTILE",
    "DEFAULT_FLOOR",
    "DEFAULT_WINDOW",
    "HISTORY_BUCKETS",
    "LEARNING_SLICES",
    "MAX_RECENT",
    "RATE_SECONDS",
    "REFILL_SECONDS",
    "RELEASE_SECONDS",
    "WAKE_MIN",
    "Demand",
    "DemandTracker",
    "adaptive_change_at",
    "adaptive_targets",
    "targets_now",
]

WAKE_MIN = 1.0  # a pool loop never wakes for a change of the adaptive targets sooner than this
REFILL_SECONDS = 2.5  # one Assign call (0.5-1.8 s) and the plan that asks for it
RATE_SECONDS = 120.0  # time constant of the decayed start and stop rates
BATCH_SHARE = 0.25  # a growth batch (a burst) is at most this share of an interface's worth
RELEASE_SECONDS = 60.0  # least release delay in adaptive mode: surplus stays at least a minute
BURST_QUANTILE = 0.99  # the burst planned for: the one 99% of the starts in the window stayed within
HISTORY_BUCKETS = 30  # slices of the window; a burst is forgotten a slice at a time
LEARNING_SLICES = 2  # a new tracker assumes a burst of half an interface for this many slices
DEFAULT_WINDOW = 1800.0  # ADAPTIVE_WINDOW's default: bursts are remembered for 30 minutes
DEFAULT_FLOOR = 2  # free addresses an idle node keeps when WARM_IP_TARGET is unset
MAX_RECENT = 1024  # start times kept for the burst in progress; a larger burst counts as this many
_EXACT_LEVELS = 32  # bursts up to this are counted exactly; larger ones round up to a power of two


@dataclass(frozen=True, slots=True)
class Demand:
    """A node's recent pod starts as of ``at``: the input of :func:`adaptive_targets`.

    ``burst`` is the burst (starts within ``refill`` seconds up to and including a start) that
    ``quantile`` of the ``starts`` in the last ``window`` seconds stayed within; 0 when none started.
    ``peak`` is the largest burst in the window, seen at ``peak_at``. ``learning`` is True until the
    tracker is ``LEARNING_SLICES`` slices old (``adaptive_targets`` then assumes a burst of half an
    interface). ``changes_at`` is the next moment the oldest slice of history leaves the window (the
    burst or ``starts`` may drop then), None without history. ``rate`` and ``stop_rate`` are starts
    and stops per second, decayed with time constant ``rate_seconds``; never negative.
    """

    at: float
    window: float
    refill: float
    rate_seconds: float
    rate: float
    stop_rate: float
    burst: int
    quantile: float
    peak: int
    peak_at: float | None
    starts: int
    recent: int  # starts within the last ``refill`` seconds
    learning: bool
    changes_at: float | None

    def public(self) -> dict[str, object]:
        """For introspection (GET /v1/pool) and the simulator's reports."""
        return {
            "starts_per_second": round(self.rate, 4),
            "stops_per_second": round(self.stop_rate, 4),
            "burst": self.burst,
            "burst_quantile": self.quantile,
            "peak_burst": self.peak,
            "peak_seconds_ago": None if self.peak_at is None else round(self.at - self.peak_at, 1),
            "starts_in_window": self.starts,
            "recent_starts": self.recent,
            "learning": self.learning,
            "window_seconds": self.window,
            "refill_seconds": self.refill,
            "history_changes_at": self.changes_at,
        }


class DemandTracker:
    """A node's pod-start demand with memory bounded whatever the number of pods: at most
    ``MAX_RECENT`` start times (those within the last ``refill`` seconds) and, for each of
    ``HISTORY_BUCKETS`` slices of the window, a histogram of at most ``_EXACT_LEVELS + 5`` burst
    levels and the slice's peak.

    ``now`` (optional) is when the node started; otherwise the first call's time is. Time always
    comes from the caller. A clock that steps back is tolerated: nothing decays backwards, and a
    slice stamped ahead of the clock stays until it leaves the window.
    """

    def __init__(
        self,
        window: float = DEFAULT_WINDOW,
        *,
        now: float | None = None,
        refill: float = REFILL_SECONDS,
        rate_seconds: float = RATE_SECONDS,
        quantile: float = BURST_QUANTILE,
    ) -> None:
        for name, value in (("window", window), ("refill", refill), ("rate_seconds", rate_seconds)):
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a number of seconds > 0, got {value!r}")
        if not 0 < quantile <= 1:
            raise ValueError(f"quantile must be in (0, 1], got {quantile!r}")
        self.window = float(window)
        self.refill = float(refill)
        self.rate_seconds = float(rate_seconds)
        self.quantile = quantile
        self.born: float | None = now
        self._slice = self.window / HISTORY_BUCKETS
        self._recent: list[float] = []  # start times within ``refill`` of the latest, ascending
        self._levels: dict[int, dict[int, int]] = {}  # slice index -> {burst level: starts}
        self._merged: dict[int, int] = {}  # the sum of every slice in _levels: {burst level: starts}
        self._peaks: dict[int, tuple[int, float]] = {}  # slice index -> (largest burst, when)
        self._rate = 0.0
        self._rate_at: float | None = None
        self._stop_rate = 0.0
        self._stop_at: float | None = None
        self._version = 0  # bumped by every start: what is derived from the history is cached per version
        self._summary: tuple[int, int, _Summary] | None = None  # (version, slice index, summary)
        # adaptive_change_at's last answer: (version, base, limits, asked at, answer)
        self._next_change: tuple[int, WarmPoolTargets, InstanceLimits, float, float | None] | None = None

    # --- events ---------------------------------------------------------------------------------

    def pod_started(self, now: float) -> None:
        """A new ADD arrived (not an idempotent repeat): demand, whether or not an address is free."""
        self._version += 1
        self._birth(now)
        self._rate, self._rate_at = self._bump(self._rate, self._rate_at, now)
        recent = [t for t in self._recent if t > now - self.refill]
        recent.append(now)
        recent.sort()
        self._recent = recent[-MAX_RECENT:]
        burst = sum(1 for t in self._recent if t <= now)  # this start and those just before it
        index = self._index(now)
        levels = self._levels.setdefault(index, {})
        level = _level(burst)
        levels[level] = levels.get(level, 0) + 1
        self._merged[level] = self._merged.get(level, 0) + 1
        peak = self._peaks.get(index)
        if peak is None or burst >= peak[0]:
            self._peaks[index] = (burst, now)
        self._forget(index)

    def pod_stopped(self, now: float) -> None:
        """A pod gave its address back (a DEL, a GC, a pod proven gone)."""
        self._birth(now)
        self._stop_rate, self._stop_at = self._bump(self._stop_rate, self._stop_at, now)

    # --- reading --------------------------------------------------------------------------------

    def snapshot(self, now: float) -> Demand:
        """The demand as of ``now``. Reading changes nothing but the birth time, set on first use."""
        self._birth(now)
        burst, peak, peak_at, starts, changes_at = self._summarize(self._index(now))
        if changes_at is not None and changes_at <= now:  # a slice boundary that rounding put at ``now``
            changes_at = math.nextafter(now, math.inf)
        return Demand(
            at=now,
            window=self.window,
            refill=self.refill,
            rate_seconds=self.rate_seconds,
            rate=self._decayed(self._rate, self._rate_at, now),
            stop_rate=self._decayed(self._stop_rate, self._stop_at, now),
            burst=burst,
            quantile=self.quantile,
            peak=peak,
            peak_at=peak_at,
            starts=starts,
            recent=sum(1 for t in self._recent if now - self.refill < t <= now),
            learning=self.learning_until > now,
            changes_at=changes_at,
        )

    @property
    def version(self) -> int:
        """Bumped by every start: what derives from the history (the targets among it) can only change
        with it or with time (``adaptive_change_at`` says when)."""
        return self._version

    @property
    def learning_until(self) -> float:
        """Until when the tracker is too young to have seen a node's first pods: its birth plus
        ``LEARNING_SLICES`` slices of the window (2 minutes by default)."""
        return -math.inf if self.born is None else self.born + LEARNING_SLICES * self._slice

    def memory(self) -> int:
        """Entries held: at most MAX_RECENT + (HISTORY_BUCKETS + 1) x levels + HISTORY_BUCKETS (the
        slices' histograms, their sum and their peaks), whatever happened."""
        return (
            len(self._recent)
            + sum(len(h) for h in self._levels.values())
            + len(self._merged)
            + len(self._peaks)
        )

    # --- internals ------------------------------------------------------------------------------

    def _summarize(self, current: int) -> _Summary:
        """(burst, peak, peak_at, starts, changes_at) of the slices live in slice ``current``; the
        history changes only with a start or a slice boundary, so it is computed once for each."""
        cached = self._summary
        if cached is not None and cached[0] == self._version and cached[1] == current:
            return cached[2]
        live, merged = self._live(current)
        peak, peak_at = 0, None
        for i in live:
            p, at = self._peaks[i]
            if p > peak or (p == peak and peak_at is not None and at > peak_at):
                peak, peak_at = p, at
        changes_at = max(live[0] + HISTORY_BUCKETS, current + 1) * self._slice if live else None
        summary = (self._burst(merged), peak, peak_at, sum(merged.values()), changes_at)
        self._summary = (self._version, current, summary)
        return summary

    def _burst_drops(self, now: float) -> Iterator[tuple[float, int]]:
        """With no further start, the moments the burst changes as slices leave the window, each with
        the burst from then on, in time order (lazily: a caller stops at the first that matters)."""
        current = self._index(now)
        live, merged = self._live(current)
        levels = sorted(merged)  # only shrinks from here: sorted once
        total = sum(merged.values())
        burst = _quantile(levels, merged, total, self.quantile)
        for i in live:  # the oldest slice leaves first
            for level, n in self._levels[i].items():
                merged[level] -= n
                total -= n
            after = _quantile(levels, merged, total, self.quantile)
            if after != burst:
                yield max(i + HISTORY_BUCKETS, current + 1) * self._slice, after
                burst = after

    def _birth(self, now: float) -> None:
        if self.born is None:
            self.born = now

    def _index(self, now: float) -> int:
        return math.floor(now / self._slice)

    def _decayed(self, value: float, at: float | None, now: float) -> float:
        if at is None or now <= at:
            return value
        return value * math.exp(-(now - at) / self.rate_seconds)

    def _bump(self, value: float, at: float | None, now: float) -> tuple[float, float]:
        """One more event on a decayed rate; its time never moves back with the clock."""
        return self._decayed(value, at, now) + 1.0 / self.rate_seconds, now if at is None else max(now, at)

    def _burst(self, histogram: dict[int, int]) -> int:
        """The burst level ``quantile`` of the starts in this histogram stayed within (0: none)."""
        return _quantile(sorted(histogram), histogram, sum(histogram.values()), self.quantile)

    def _forget(self, current: int) -> None:
        gone = [i for i in self._levels if i <= current - HISTORY_BUCKETS]
        while len(self._levels) - len(gone) > HISTORY_BUCKETS:  # slices ahead of a clock that stepped back
            gone.append(min(i for i in self._levels if i not in gone))
        for index in gone:
            for level, n in self._levels.pop(index).items():
                self._merged[level] -= n
                if not self._merged[level]:
                    del self._merged[level]
            del self._peaks[index]

    def _live(self, current: int) -> tuple[list[int], dict[int, int]]:
        """The slices of the window at slice ``current``, oldest first, and their merged histogram."""
        live = sorted(i for i in self._levels if i > current - HISTORY_BUCKETS)
        merged = dict(self._merged)
        for i in self._levels:
            if i <= current - HISTORY_BUCKETS:  # left the window since the last start
                for level, n in self._levels[i].items():
                    merged[level] -= n
        return live, merged


_Summary = tuple[int, int, float | None, int, float | None]


def _quantile(levels: list[int], histogram: dict[int, int], total: int, quantile: float) -> int:
    """The level that ``quantile`` of the ``total`` counts in ``histogram`` stay within (0: none);
    ``levels`` are its keys in ascending order (a level emptied by a subtraction counts 0)."""
    rank = math.ceil(quantile * total)  # the rank-th smallest
    seen = 0
    for level in levels:
        seen += histogram[level]
        if seen >= rank > 0:
            return level
    return 0


def _level(burst: int) -> int:
    """A burst's histogram level: exact up to _EXACT_LEVELS, then rounded up to a power of two, so a
    slice's histogram stays small and a large burst is over- rather than underestimated."""
    if burst <= _EXACT_LEVELS:
        return burst
    return 1 << (burst - 1).bit_length()


# --- targets ---------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=1024)
def _addresses(base: WarmPoolTargets, limits: InstanceLimits) -> tuple[int, int]:
    """(a full interface's worth of addresses U, the most addresses the node can hold for pods)."""
    pd = base.prefix_delegation and limits.prefix_delegation
    unit = max(limits.secondary_per_interface, 0) * (PREFIX_SIZE if pd else 1)
    interfaces = limits.max_interfaces
    if base.max_eni is not None and base.max_eni >= 1:
        interfaces = min(interfaces, base.max_eni)
    if not base.primary_interface_pods:
        interfaces -= 1
    return unit, max(min(effective_max_pods(base, limits), max(interfaces, 0) * unit), 0)


def _floor(base: WarmPoolTargets, limits: InstanceLimits) -> int:
    """Free addresses kept whatever the demand: WARM_IP_TARGET, and with prefix delegation
    16 x WARM_PREFIX_TARGET, whichever is more; ``DEFAULT_FLOOR`` when neither is set."""
    pd = base.prefix_delegation and limits.prefix_delegation
    floor = max(base.warm_ip, PREFIX_SIZE * base.warm_prefix if pd else 0)
    return floor if floor > 0 else DEFAULT_FLOOR


def _flow(rate: float, window: float, refill: float) -> int:
    """Starts expected over two refills at ``rate``; below one start per window, none."""
    if rate * window < 1.0:
        return 0
    return math.ceil(2.0 * rate * refill)


def _sizes(
    base: WarmPoolTargets, limits: InstanceLimits, burst: int, learning: bool, flow: int
) -> tuple[int, int]:
    """(warm_ip, ip_batch): the formula of the module docstring."""
    pd = base.prefix_delegation and limits.prefix_delegation
    unit, capacity = _addresses(base, limits)
    cap = math.ceil(unit / 2)
    if learning:
        burst = max(burst, cap)
    warm = max(min(max(_floor(base, limits), min(burst + flow, cap)), capacity), 1)
    batch = 1 if pd else max(base.ip_batch, min(burst, math.ceil(unit * BATCH_SHARE)), 1)
    return warm, batch


@functools.lru_cache(maxsize=4096)
def _with_sizes(base: WarmPoolTargets, warm: int, batch: int) -> WarmPoolTargets:
    """``base`` in warm-IP mode with these sizes; the same object for the same arguments, so a caller
    can tell a change by identity (the simulator re-plans only then)."""
    return dataclasses.replace(
        base,
        warm_eni=0,
        warm_prefix=0,
        warm_ip=warm,
        ip_batch=batch,
        release_delay=max(base.release_delay, RELEASE_SECONDS),
    )


def targets_now(
    base: WarmPoolTargets, demand: Demand | DemandTracker, limits: InstanceLimits, *, now: float
) -> WarmPoolTargets:
    """:func:`adaptive_targets` without the explanation, for hot paths (every plan, the simulator)."""
    d = demand.snapshot(now) if isinstance(demand, DemandTracker) else demand
    warm, batch = _sizes(base, limits, d.burst, d.learning, _flow(d.rate, d.window, d.refill))
    return _with_sizes(base, warm, batch)


def adaptive_targets(
    base: WarmPoolTargets,
    demand: Demand | DemandTracker,
    limits: InstanceLimits,
    *,
    now: float,
) -> tuple[WarmPoolTargets, str]:
    """The targets :func:`ipamd.pool.policy.plan` should use now, and one line saying why.

    ``base`` holds the operator's settings: WARM_IP_TARGET (and with prefix delegation 16 x
    WARM_PREFIX_TARGET), MINIMUM_IP_TARGET, IP_BATCH_SIZE and POOL_RELEASE_DELAY are floors; max
    pods, MAX_ENI and the rest are kept; WARM_ENI_TARGET is not used (the result is always warm-IP
    mode, ``warm_ip >= 1``). Total: any demand gives targets within max pods and what the node's
    interfaces can hold.
    """
    d = demand.snapshot(now) if isinstance(demand, DemandTracker) else demand
    targets = targets_now(base, d, limits, now=now)
    pd = base.prefix_delegation and limits.prefix_delegation
    unit, capacity = _addresses(base, limits)
    floor = _floor(base, limits)
    cap = math.ceil(unit / 2)
    burst = max(d.burst, cap) if d.learning else d.burst
    flow = _flow(d.rate, d.window, d.refill)
    why = f"keeping {targets.warm_ip} free: " + _explain(
        d, burst=burst, flow=flow, floor=floor, cap=cap, capacity=capacity, floor_set=floor != DEFAULT_FLOOR
    )
    if pd:
        why += f"; in whole /28 prefixes of {PREFIX_SIZE}"
    elif targets.ip_batch > 1:
        why += f"; growing and releasing {targets.ip_batch} at a time"
        if targets.ip_batch > base.ip_batch:
            quarter = burst > targets.ip_batch
            why += " (a burst per cloud call" + (", at most a quarter interface)" if quarter else ")")
    return targets, why


def _explain(
    d: Demand, *, burst: int, flow: int, floor: int, cap: int, capacity: int, floor_set: bool
) -> str:
    """How ``warm_ip`` was reached, then the evidence, e.g. "burst 12 + 1 = 13, capped at half an
    interface (7); 99% of the 60 pod starts in the last 30 min came at most 12 within 2.5 s ..."."""
    want = burst + flow
    floor_name = f"the floor of {floor}" + (" set" if floor_set else "")
    sum_text = f"burst {burst}"
    if flow:
        sum_text += f" + {flow} for {d.rate:.2f} starts/s (2 x rate x {d.refill:g} s refill) = {want}"
    if want > cap:
        sum_text += f", capped at half an interface ({cap})"
    if want <= floor:
        how = floor_name  # demand asks for no more than the floor
    elif min(want, cap) < floor:
        how = f"{floor_name} ({sum_text})"
    else:
        how = sum_text
    if max(floor, min(want, cap)) > capacity:
        how += f", at most {capacity} (max pods and the interfaces)"
    if d.learning:
        young = _duration(LEARNING_SLICES * d.window / HISTORY_BUCKETS)
        evidence = f"learning, under {young} of history: assuming a burst of half an interface ({cap})"
    elif d.starts == 0:
        evidence = f"no pod started in the last {_duration(d.window)}"
    else:
        ago = "" if d.peak_at is None else f", {_duration(d.at - d.peak_at)} ago"
        starts = f"{d.starts} pod start{'s' if d.starts != 1 else ''}"
        evidence = (
            f"{d.quantile:.0%} of the {starts} in the last {_duration(d.window)} came at most {d.burst} "
            f"within {d.refill:g} s (largest {d.peak}{ago})"
        )
    return f"{how}; {evidence}"


def _duration(seconds: float) -> str:
    if seconds >= 120:
        return f"{seconds / 60:.0f} min"
    return f"{seconds:.0f} s"


def adaptive_change_at(
    base: WarmPoolTargets, tracker: DemandTracker, limits: InstanceLimits, *, now: float
) -> float | None:
    """The next moment after ``now`` at which the adaptive targets change if no pod starts meanwhile
    (the learning prior ends, a burst leaves the window, the decayed rate falls far enough to lower
    ``warm_ip``); None: never. The manager wakes then, so a lower target is acted on without
    polling. Remembered per tracker until the next start (stops do not change the targets)."""
    cached = tracker._next_change
    if (
        cached is not None
        and cached[0] == tracker._version
        and cached[1] == base
        and cached[2] == limits
        and cached[3] <= now
        and (cached[4] is None or now < cached[4])
    ):
        return cached[4]
    answer = _change_at(base, tracker, limits, now)
    tracker._next_change = (tracker._version, base, limits, now, answer)
    return answer


def _change_at(
    base: WarmPoolTargets, tracker: DemandTracker, limits: InstanceLimits, now: float
) -> float | None:
    d = tracker.snapshot(now)
    burst, learning = d.burst, d.learning
    current = _sizes(base, limits, burst, learning, _flow(d.rate, d.window, d.refill))
    drops = tracker._burst_drops(now)
    next_drop = next(drops, None)
    prior_ends = tracker.learning_until if learning else math.inf
    moment = now
    for _ in range(
        HISTORY_BUCKETS + 2 * _addresses(base, limits)[0] + 8
    ):  # each pass: a drop, the prior or a rate step
        rate = d.rate * math.exp(-(moment - now) / d.rate_seconds)
        step = _rate_step(base, limits, burst, learning, rate=rate, d=d)
        by_rate = moment + d.rate_seconds * math.log(rate / step) + 1e-6 if step is not None else math.inf
        moment = min(by_rate, prior_ends, math.inf if next_drop is None else next_drop[0])
        if moment == math.inf:
            return None
        if moment >= prior_ends:
            learning, prior_ends = False, math.inf
        while next_drop is not None and next_drop[0] <= moment:
            burst = next_drop[1]
            next_drop = next(drops, None)
        rate = d.rate * math.exp(-(moment - now) / d.rate_seconds)
        if _sizes(base, limits, burst, learning, _flow(rate, d.window, d.refill)) != current:
            return moment
    return moment


def _rate_step(
    base: WarmPoolTargets, limits: InstanceLimits, burst: int, learning: bool, *, rate: float, d: Demand
) -> float | None:
    """The start rate below ``rate`` at which the rate's share of ``warm_ip`` (the flow) drops by
    one; None when the rate no longer matters."""
    cap = math.ceil(_addresses(base, limits)[0] / 2)
    if learning:
        burst = max(burst, cap)
    flow = min(_flow(rate, d.window, d.refill), max(cap - burst, 0))  # the part of the flow that counts
    if flow == 0 or burst + flow <= _floor(base, limits):
        return None
    step = (flow - 1) / (2.0 * d.refill) if flow > 1 else 1.0 / d.window
    return step if 0 < step < rate else None
