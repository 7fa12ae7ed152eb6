"""Where a simulated node gets its warm-pool targets: static, or ``POOL_MODE=adaptive``.

The daemon's static mode uses one ``WarmPoolTargets`` for the node's whole life. Adaptive mode learns
the node's demand and asks ``plan`` for other targets at other times; the simulator must then feed it
every pod start and stop, ask it before each plan, and know when its answer changes with no pod
event (so that an idle node is woken then, as the daemon's manager is, instead of being polled).
``TargetsProvider`` is that contract; ``targets_factory`` picks one per policy. ``AdaptiveTargets``
does what ``PoolManager`` does in adaptive mode (``effective_targets``, ``pod_started``,
``pod_stopped``, the adaptive moment of ``_idle_timeout``), with the daemon's ``ipamd.pool.adaptive``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from ipamd.config import Settings
from ipamd.pool.adaptive import WAKE_MIN, DemandTracker, adaptive_change_at, targets_now
from ipamd.pool.model import InstanceLimits, WarmPoolTargets

__all__ = ["AdaptiveTargets", "StaticTargets", "TargetsFactory", "TargetsProvider", "targets_factory"]


class TargetsProvider(Protocol):
    """One node's targets over time. ``base`` (the settings' targets, with the node's max pods) is
    what the provider was made with; ``targets(now)`` is what ``plan`` is called with."""

    def on_pod_start(self, now: float) -> None:
        """A pod's ADD reached the node (demand arrived), whether or not an address was free."""

    def on_pod_stop(self, now: float) -> None:
        """A pod's DEL reached the node (or a pod waiting for an address was deleted)."""

    def targets(self, now: float) -> WarmPoolTargets:
        """The targets to plan with at ``now``. Return the same object while they do not change:
        the node re-plans only when they do (or when its pool changed)."""
        ...

    def next_change(self, now: float) -> float | None:
        """The next moment after ``now`` at which ``targets`` may differ without a pod event
        (a decaying rate estimate, say); None when it only changes on pod events."""
        ...


TargetsFactory = Callable[[WarmPoolTargets, InstanceLimits, float], TargetsProvider]
"""(base targets, the instance's limits, when the node's daemon starts) -> the node's provider."""


class StaticTargets:
    """The daemon's static mode: the base targets, always."""

    __slots__ = ("_targets",)

    def __init__(self, base: WarmPoolTargets, limits: InstanceLimits, now: float) -> None:
        self._targets = base

    def on_pod_start(self, now: float) -> None:
        return None

    def on_pod_stop(self, now: float) -> None:
        return None

    def targets(self, now: float) -> WarmPoolTargets:
        return self._targets

    def next_change(self, now: float) -> float | None:
        return None


class AdaptiveTargets:
    """``POOL_MODE=adaptive``: the node's ``DemandTracker`` and ``adaptive_targets`` of the base."""

    __slots__ = ("_base", "_cached", "_limits", "_tracker")

    def __init__(self, base: WarmPoolTargets, limits: InstanceLimits, now: float, *, window: float) -> None:
        self._base = base
        self._limits = limits
        self._tracker = DemandTracker(window, now=now)
        # (tracker version, from, until, targets): the targets hold from ``from`` until the next start
        # or ``until`` (adaptive_change_at; None: until the next start). The node asks at every step.
        self._cached: tuple[int, float, float | None, WarmPoolTargets] | None = None

    def on_pod_start(self, now: float) -> None:
        self._tracker.pod_started(now)

    def on_pod_stop(self, now: float) -> None:
        self._tracker.pod_stopped(now)

    def targets(self, now: float) -> WarmPoolTargets:
        # the manager's effective_targets without its explanation (what introspection shows); the same
        # object while unchanged (targets_now's cache): the node compares by identity first
        tracker = self._tracker
        cached = self._cached
        if (
            cached is not None
            and cached[0] == tracker.version
            and cached[1] <= now
            and (cached[2] is None or now < cached[2])
        ):
            return cached[3]
        targets = targets_now(self._base, tracker, self._limits, now=now)
        until = adaptive_change_at(self._base, tracker, self._limits, now=now)
        self._cached = (tracker.version, now, until, targets)
        return targets

    def next_change(self, now: float) -> float | None:
        change = adaptive_change_at(self._base, self._tracker, self._limits, now=now)
        return None if change is None else max(change, now + WAKE_MIN)


def targets_factory(settings: Settings) -> TargetsFactory:
    """The provider a node of this policy runs, by POOL_MODE."""
    if settings.pool_mode == "adaptive":
        window = settings.adaptive_window

        def adaptive(base: WarmPoolTargets, limits: InstanceLimits, now: float) -> TargetsProvider:
            return AdaptiveTargets(base, limits, now, window=window)

        return adaptive
    return StaticTargets
