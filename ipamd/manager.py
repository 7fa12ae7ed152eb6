"""The pool manager loop: plans with ``ipamd.pool.policy.plan`` and carries the actions out.

- Event driven: an ADD or DEL wakes the loop at once (no polling delay); when idle it sleeps until
  the next moment the plan can change (a cool-down ends, the release delay passes, a growth pause
  ends, the next reconcile), at most ``_MAX_IDLE`` seconds.
- One batch at a time: the actions of one plan run concurrently, at most one per interface (the
  policy never returns two for one interface), and the next plan is made only when the batch is
  done, so two operations on one interface never overlap and a plan never double-counts growth
  that is still in flight. Reconcile runs between batches, never during one, and only when there is
  nothing to grow or shrink (a pod never waits for the pool behind a reconcile's read), except right
  after an action found the view stale.
- Every cloud call runs in a worker thread through the one ``CloudCaller`` (rate limiter, backoff).
- Releases are two-phase in the datastore (begin/finish/abort), so an address being released is
  never handed to a pod, and a failed release puts it back.
- Growth pauses for GROWTH_PAUSE after the subnet is full or a limit is hit, so a full subnet is not
  hammered (the reference's insufficient-CIDR cool-off).
- ``POOL_MODE=adaptive``: the manager holds the node's ``DemandTracker`` (the service reports every
  pod start and stop) and plans with ``ipamd.pool.adaptive.adaptive_targets`` of the configured
  targets instead of those targets themselves; it also wakes when those targets would change with
  no pod event (a burst forgotten, a decayed rate), and logs each change with the reason.
"""

from __future__ import annotations

import asyncio
import dataclasses
import math
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import structlog

from ipamd import errors
from ipamd.cloud.base import CloudProvider
from ipamd.cloud.limiter import CloudCaller
from ipamd.events import (
    INTERFACE_LIMIT_REACHED,
    MISSING_CLOUD_PERMISSION,
    SUBNET_EXHAUSTED,
    NodeReporter,
)
from ipamd.metrics import Metrics
from ipamd.pool import adaptive, policy
from ipamd.pool.datastore import Datastore
from ipamd.pool.model import (
    Action,
    AssignIps,
    AssignPrefixes,
    AttachInterface,
    DetachInterface,
    InstanceLimits,
    InterfaceId,
    InterfaceView,
    ReleaseIps,
    ReleasePrefixes,
    WarmPoolTargets,
)

T = TypeVar("T")
log = structlog.get_logger("ipamd.manager")

_MAX_IDLE = 5.0


class PoolManager:
    def __init__(
        self,
        *,
        store: Datastore,
        provider: CloudProvider,
        caller: CloudCaller,
        targets: WarmPoolTargets,
        limits: InstanceLimits,
        clock: Callable[[], float] = time.time,
        growth_pause: float = 120.0,
        reconcile_interval: float = 60.0,
        metrics: Metrics | None = None,
        min_action_interval: float = 0.0,
        on_interfaces_changed: Callable[[list[InterfaceView]], Awaitable[None]] | None = None,
        reporter: NodeReporter | None = None,
        demand: adaptive.DemandTracker | None = None,
    ) -> None:
        self.store = store
        # The datastore follows the targets: no new pod on the primary when the policy leaves it alone.
        store.primary_interface_pods = targets.primary_interface_pods
        self.reporter = reporter
        self._holds: dict[str, str] = {}  # source -> why growth is held from outside the cloud
        self.on_interfaces_changed = on_interfaces_changed
        self.min_action_interval = min_action_interval
        self.provider = provider
        self.caller = caller
        self.targets = targets
        self.limits = limits
        self.clock = clock
        self.growth_pause = growth_pause
        self.reconcile_interval = reconcile_interval
        self.metrics = metrics
        self.busy: set[InterfaceId] = set()
        self.last_increase_at: float | None = None
        self.last_decrease_at: float | None = None
        self.growth_paused_until: float | None = None
        self.next_reconcile_at = clock() + reconcile_interval
        self._reconcile_urgent = False  # reconcile before the next plan, not when the pool is idle
        self.waiting = 0  # ADDs in wait_for_growth now: plan() grows for them on top of the target
        self._wake = asyncio.Event()
        self._grew = asyncio.Condition()
        self._failures = 0
        self.batches = 0
        # POOL_MODE=adaptive: the node's demand; ``targets`` stays the configured (base) targets.
        self.demand = demand
        self._adaptive_last: WarmPoolTargets | None = None

    # --- called by the rpc layer ---------------------------------------------------------------

    @property
    def reconcile_pending(self) -> bool:
        """An action found the view stale: the loop reconciles before it plans again."""
        return self._reconcile_urgent

    def wake(self) -> None:
        """Re-plan now (an ADD or DEL changed demand)."""
        self._wake.set()

    def pod_started(self, now: float) -> None:
        """A new ADD arrived (not an idempotent repeat): demand, whether or not an address is free."""
        if self.demand is not None:
            self.demand.pod_started(now)

    def pod_stopped(self, now: float) -> None:
        """An assignment was given back (DEL, a pod proven gone, GC)."""
        if self.demand is not None:
            self.demand.pod_stopped(now)

    @property
    def pool_mode(self) -> str:
        return "static" if self.demand is None else "adaptive"

    def effective_targets(self, now: float) -> WarmPoolTargets:
        """The targets the policy plans with now: the configured ones, or in adaptive mode those
        ``adaptive_targets`` derives from them and the node's demand (logged when they change)."""
        if self.demand is None:
            return self.targets
        targets = adaptive.targets_now(self.targets, self.demand, self.limits, now=now)
        last = self._adaptive_last
        if last is None or targets != last:
            _, why = adaptive.adaptive_targets(self.targets, self.demand, self.limits, now=now)
            log.info(
                "pool_adaptive_targets_changed",
                warm_ip=targets.warm_ip,
                ip_batch=targets.ip_batch,
                release_delay=targets.release_delay,
                previous_warm_ip=None if last is None else last.warm_ip,
                previous_ip_batch=None if last is None else last.ip_batch,
                why=why,
            )
            self._adaptive_last = targets
        return targets

    def adaptive_public(self, now: float) -> dict[str, Any] | None:
        """What introspection shows of adaptive mode (GET /v1/pool): the demand, the targets it gives
        and why, and when they next change with no pod event; None in static mode."""
        if self.demand is None:
            return None
        targets, why = adaptive.adaptive_targets(self.targets, self.demand, self.limits, now=now)
        return {
            "demand": self.demand.snapshot(now).public(),
            "targets": {
                "warm_ip": targets.warm_ip,
                "minimum_ip": targets.minimum_ip,
                "ip_batch": targets.ip_batch,
                "release_delay": targets.release_delay,
                "prefix_delegation": targets.prefix_delegation and self.limits.prefix_delegation,
            },
            "why": why,
            "changes_at": adaptive.adaptive_change_at(self.targets, self.demand, self.limits, now=now),
        }

    async def wait_for_growth(self, timeout: float) -> bool:
        """Wait until the pool gains addresses or gets some back (or ``timeout``); True if it did."""
        self.waiting += 1  # the next plan grows for it too
        self.wake()
        try:
            async with self._grew:
                try:
                    await asyncio.wait_for(self._grew.wait(), timeout)
                except TimeoutError:
                    return False
            return True
        finally:
            self.waiting -= 1

    async def addresses_freed(self) -> None:
        """Addresses came back to the pool outside the manager (a DEL, GC, a quarantine release).

        An ADD waiting in ``wait_for_growth`` looks again: on a node that cannot grow, a cooling
        address is its only chance, and it must not wait out ADD_WAIT_TIMEOUT for it.
        """
        async with self._grew:
            self._grew.notify_all()

    def hold_growth(self, reason: str | None, source: str = "default") -> None:
        """Hold growth for a reason outside the cloud (``None`` lifts that source's hold); re-plan.

        Sources are independent (custom networking without an ENIConfig, the Node not read yet):
        growth resumes when none holds it.
        """
        current = self._holds.get(source)
        if reason and reason != current:
            log.warning("pool_growth_held", source=source, reason=reason)
            self._holds[source] = reason
        elif reason is None and current is not None:
            log.info("pool_growth_hold_lifted", source=source)
            del self._holds[source]
        self.wake()

    @property
    def growth_hold(self) -> str | None:
        """Why growth is held from outside the cloud (every source's reason), or None."""
        return "; ".join(self._holds.values()) or None

    def set_max_pods(self, max_pods: int | None) -> None:
        """The cap on held addresses changed (the Node's capacity.pods, when MAX_PODS is unset)."""
        if max_pods != self.targets.max_pods:
            log.info("pool_max_pods_changed", old=self.targets.max_pods, new=max_pods)
            self.targets = dataclasses.replace(self.targets, max_pods=max_pods)
            self.wake()

    def set_primary_interface_pods(self, allowed: bool) -> None:
        """Whether new pods may take the primary interface's addresses (False: custom networking, or
        an Azure pod subnet on another NIC). The policy and the datastore follow at once; pods already
        on the primary keep their addresses."""
        if allowed != self.targets.primary_interface_pods or allowed != self.store.primary_interface_pods:
            log.info("pool_primary_interface_pods_changed", allowed=allowed)
            self.targets = dataclasses.replace(self.targets, primary_interface_pods=allowed)
            self.store.primary_interface_pods = allowed
            self.wake()

    def pool_settled(self, now: float) -> bool:
        """The pool is at the size it settles at for its current pods: nothing more to grow, or no
        room left to grow into (max pods, every slot in use). Growth held or paused is not settled."""
        if self.growth_hold or (self.growth_paused_until is not None and self.growth_paused_until > now):
            return False
        state = policy.targets_summary(
            self.store.view(now=now), self.effective_targets(now), self.limits, now=now
        )
        return not state.low or self._at_capacity(now)

    def _at_capacity(self, now: float) -> bool:
        state = policy.targets_summary(
            self.store.view(now=now), self.effective_targets(now), self.limits, now=now
        )
        return state.headroom <= 0 or state.full

    @property
    def max_ips(self) -> int:
        return policy.effective_max_pods(self.targets, self.limits)

    def growth_blocked(self, now: float) -> str:
        """Why the pool cannot grow now, as one sentence for STATUS; "" when it can.

        The same conditions the policy applies: growth paused, held addresses at max pods, or every
        slot of the most interfaces the node may have in use. (An interface busy receiving
        addresses is growth in flight, not a block.)
        """
        if self.growth_hold:
            return f"pool growth is held: {self.growth_hold}"
        if self.growth_paused_until is not None and self.growth_paused_until > now:
            return "pool growth is paused (the cloud refused: subnet full, limit or permission)"
        if self._at_capacity(now):
            view = self.store.view(now=now)
            state = policy.targets_summary(view, self.effective_targets(now), self.limits, now=now)
            slots = state.slots_per_interface
            return (
                f"the pool holds its maximum: {state.held} addresses (max pods {state.max_pods}, "
                f"{state.max_interfaces} interfaces of {slots} slots)"
            )
        return ""

    # --- the loop ------------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            if self._reconcile_urgent:  # an action found our view stale: fix it before planning again
                self._reconcile_urgent = False
                await self.reconcile()
            started = self.clock()
            acted = await self.step()
            if acted:
                # Back off after failures; and never start batches closer than min_action_interval.
                # Clamped to the interval: the clock is wall time, and a step back during the batch
                # must not stall the pool for as long as the step.
                paced = min(self.min_action_interval, started + self.min_action_interval - self.clock())
                delay = max(self._failure_delay(), paced)
                if delay > 0:
                    await self._sleep(delay, stop, wakeable=False)
                continue
            if self.clock() >= self.next_reconcile_at:
                # Between batches, and only when there is nothing to grow or shrink: a reconcile can
                # wait long for a read (with CLOUD_API_BUDGET, this node's share of the cluster's
                # reads), and a pod must never wait for the pool behind it.
                await self.reconcile()
                continue
            await self._sleep(self._idle_timeout(self.clock()), stop)

    async def _sleep(self, timeout: float, stop: asyncio.Event, *, wakeable: bool = True) -> None:
        self._wake.clear()
        waiters = [asyncio.ensure_future(stop.wait())]
        if wakeable:
            waiters.append(asyncio.ensure_future(self._wake.wait()))
        try:
            await asyncio.wait(waiters, timeout=max(timeout, 0.0), return_when=asyncio.FIRST_COMPLETED)
        finally:
            for w in waiters:
                w.cancel()

    def _failure_delay(self) -> float:
        return policy.failure_backoff(self._failures)

    def _idle_timeout(self, now: float) -> float:
        moments = [self.next_reconcile_at, now + _MAX_IDLE]
        if self.growth_paused_until is not None and self.growth_paused_until > now:
            moments.append(self.growth_paused_until)
        release_delay = self.effective_targets(now).release_delay
        for last in (self.last_increase_at, self.last_decrease_at):
            if last is not None and last + release_delay > now:
                moments.append(last + release_delay)
        if self.demand is not None:
            # When the adaptive targets change with no pod event (a burst forgotten, the rate decayed
            # a step); never sooner than adaptive.WAKE_MIN, so a change point cannot make the loop spin.
            change = adaptive.adaptive_change_at(self.targets, self.demand, self.limits, now=now)
            if change is not None:
                moments.append(max(change, now + adaptive.WAKE_MIN))
        deadline = self.store.next_cooldown_deadline(now=now)
        if deadline is not None:
            moments.append(deadline)
        return max(0.0, min(moments) - now)

    def plan(self) -> list[Action]:
        now = self.clock()
        paused = (
            self.growth_paused_until if self.growth_paused_until and self.growth_paused_until > now else None
        )
        if self.growth_hold:
            paused = math.inf  # held from outside until lifted
        if self.metrics:
            self.metrics.growth_paused.set(1 if paused else 0)
        view = self.store.view(
            now=now,
            busy=frozenset(self.busy),
            last_increase_at=self.last_increase_at,
            last_decrease_at=self.last_decrease_at,
            growth_paused_until=paused,
            waiting=self.waiting,
        )
        return policy.plan(view, self.effective_targets(now), self.limits, now=now)

    async def step(self) -> bool:
        """Plan once and carry the plan out; False when there was nothing to do."""
        actions = self.plan()
        if not actions:
            return False
        self.batches += 1
        results = await asyncio.gather(*(self._execute(a) for a in actions), return_exceptions=True)
        failed = False
        for action, result in zip(actions, results, strict=True):
            if isinstance(result, BaseException):
                failed = True
                self._on_failure(action, result)
        self._failures = self._failures + 1 if failed else 0
        return True

    # --- actions -------------------------------------------------------------------------------

    async def _cloud(self, operation: str, fn: Callable[[], T]) -> T:
        return await asyncio.to_thread(self.caller.call, operation, fn)

    async def _execute(self, action: Action) -> None:
        kind = type(action).__name__
        try:
            await self._dispatch(action)
        except BaseException:
            if self.metrics:
                self.metrics.pool_actions.labels(kind, "error").inc()
            raise
        if self.metrics:
            self.metrics.pool_actions.labels(kind, "ok").inc()

    async def _dispatch(self, action: Action) -> None:
        p = self.provider
        match action:
            case AttachInterface(ip_count=ip_count, prefix_count=prefix_count):
                view = await self._cloud(
                    "attach_interface", lambda: p.attach_interface(ip_count, prefix_count)
                )
                self.store.add_interface(view, now=self.clock())
                log.info(
                    "interface_attached", interface=view.id, ips=len(view.ips), prefixes=len(view.prefixes)
                )
                await self._interfaces_changed()
                await self._grown()
            case AssignIps(interface_id=iid, count=ip_count):
                with self._busy(iid):
                    new = await self._cloud("assign_ips", lambda: p.assign_ips(iid, ip_count))
                    self.store.add_ips(iid, new)
                log.info("ips_assigned", interface=iid, count=len(new))
                await self._grown()
            case AssignPrefixes(interface_id=iid, count=prefix_count):
                with self._busy(iid):
                    new = await self._cloud("assign_prefixes", lambda: p.assign_prefixes(iid, prefix_count))
                    self.store.add_prefixes(iid, new)
                log.info("prefixes_assigned", interface=iid, prefixes=new)
                await self._grown()
            case ReleaseIps(interface_id=iid, ips=ips):
                with self._busy(iid):
                    self.store.begin_release(iid, ips=ips)
                    try:
                        await self._cloud("release_ips", lambda: p.release_ips(iid, list(ips)))
                    except BaseException:
                        self.store.abort_release(iid, ips=ips)
                        raise
                    self.store.finish_release(iid, ips=ips)
                self.last_decrease_at = self.clock()
                log.info("ips_released", interface=iid, count=len(ips))
            case ReleasePrefixes(interface_id=iid, prefixes=prefixes):
                with self._busy(iid):
                    self.store.begin_release(iid, prefixes=prefixes)
                    try:
                        await self._cloud("release_prefixes", lambda: p.release_prefixes(iid, list(prefixes)))
                    except BaseException:
                        self.store.abort_release(iid, prefixes=prefixes)
                        raise
                    self.store.finish_release(iid, prefixes=prefixes)
                self.last_decrease_at = self.clock()
                log.info("prefixes_released", interface=iid, prefixes=list(prefixes))
            case DetachInterface(interface_id=iid):
                with self._busy(iid):
                    self.store.begin_detach(iid)
                    try:
                        await self._cloud("detach_interface", lambda: p.detach_interface(iid))
                    except BaseException:
                        self.store.abort_detach(iid)
                        raise
                    self.store.finish_detach(iid)
                self.last_decrease_at = self.clock()
                log.info("interface_detached", interface=iid)
                await self._interfaces_changed()

    async def _grown(self) -> None:
        self.last_increase_at = self.clock()
        async with self._grew:
            self._grew.notify_all()

    def _busy(self, iid: InterfaceId) -> _BusyMark:
        return _BusyMark(self.busy, iid)

    def _on_failure(self, action: Action, exc: BaseException) -> None:
        name = type(action).__name__
        now = self.clock()
        if isinstance(exc, errors.SubnetFull | errors.LimitExceeded | errors.CloudPermissionError):
            self.growth_paused_until = now + self.growth_pause
            fields: dict[str, Any] = {"action": name, "error": str(exc), "pause_seconds": self.growth_pause}
            if isinstance(exc, errors.CloudPermissionError):
                fields["missing_permission"] = exc.action
            log.warning("pool_growth_paused", **fields)
            self._report_pause(exc)
            if isinstance(exc, errors.LimitExceeded):
                self._reconcile_urgent = True  # our view of the interface may be stale
        elif isinstance(exc, errors.InterfaceNotFound):
            log.warning("pool_action_interface_gone", action=name, error=str(exc))
            self._reconcile_urgent = True
        elif isinstance(exc, errors.CloudError):
            log.warning("pool_action_failed", action=name, error=str(exc), failures=self._failures + 1)
        elif isinstance(exc, errors.PoolError):
            # The datastore refused (e.g. an address was taken between plan and release): re-plan.
            log.info("pool_action_skipped", action=name, reason=str(exc))
        else:
            raise exc

    def _report_pause(self, exc: BaseException) -> None:
        if self.reporter is None:
            return
        pause = f"pool growth paused for {self.growth_pause:.0f} s"
        if isinstance(exc, errors.CloudPermissionError):
            self.reporter.node(
                MISSING_CLOUD_PERMISSION,
                f"the cloud refused {exc.operation}: missing permission {exc.action}; {pause}",
                action="GrowPool",
            )
        elif isinstance(exc, errors.SubnetFull):
            self.reporter.node(SUBNET_EXHAUSTED, f"{exc}; {pause}", action="GrowPool")
        elif isinstance(exc, errors.LimitExceeded):
            self.reporter.node(INTERFACE_LIMIT_REACHED, f"{exc}; {pause}", action="GrowPool")

    # --- reconcile -----------------------------------------------------------------------------

    async def reconcile(self) -> None:
        """Make the datastore's holdings equal what the cloud reports."""
        self.next_reconcile_at = self.clock() + self.reconcile_interval
        try:
            views = await self._cloud("list_interfaces", self.provider.list_interfaces)
        except errors.CloudError as exc:
            log.warning("reconcile_failed", error=str(exc))
            return
        try:
            report = self.store.sync_interfaces(views, now=self.clock())
        except errors.PoolError as exc:
            log.error("reconcile_refused_inconsistent_cloud_report", error=str(exc))
            return
        for lost in report.lost_assigned:
            log.error(
                "assigned_ip_vanished",
                ip=lost.ip,
                interface=lost.interface_id,
                container_id=lost.key.container_id,
                pod=f"{lost.pod.namespace}/{lost.pod.name}",
            )
            if self.metrics:
                self.metrics.lost_assignments.inc()
        if report.added_ips or report.removed_ips or report.added_interfaces or report.removed_interfaces:
            log.info(
                "reconciled",
                added_interfaces=list(report.added_interfaces),
                removed_interfaces=list(report.removed_interfaces),
                added_ips=len(report.added_ips),
                removed_ips=len(report.removed_ips),
            )
            if report.added_ips:
                await self._grown()
            if report.added_interfaces or report.removed_interfaces:
                await self._interfaces_changed()

    async def _interfaces_changed(self) -> None:
        """Tell the datapath (set up new secondary interfaces, tear down removed ones)."""
        if self.on_interfaces_changed is None:
            return
        try:
            await self.on_interfaces_changed(self.store.interfaces())
        except Exception as exc:  # the datapath retries on the next change or the first ADD
            log.error("datapath_interface_sync_failed", error=str(exc))


class _BusyMark:
    def __init__(self, busy: set[InterfaceId], iid: InterfaceId) -> None:
        self._busy = busy
        self._iid = iid

    def __enter__(self) -> None:
        self._busy.add(self._iid)

    def __exit__(self, *exc: object) -> None:
        self._busy.discard(self._iid)
