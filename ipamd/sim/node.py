"""One simulated node: the daemon's pool manager loop and ADD path, event-driven, on a real ``Datastore``.

The state is the daemon's own: ``ipamd.pool.datastore.Datastore`` holds the addresses and
``ipamd.pool.policy.plan`` decides, called exactly as ``ipamd.manager.PoolManager`` calls them. What
is mirrored here, and must change when the manager or the ADD path does:

- ``PoolManager.run``: a step; after a batch, a pause of ``max(failure backoff,
  POOL_MIN_ACTION_INTERVAL pacing)`` during which a wake is lost, then the next step at once; after a
  step with nothing to do, the reconcile when it is due (a Describe call; the loop waits for it, then
  steps again), else a sleep until ``_idle_timeout`` (the next reconcile, a cool-down end, the release
  delay passing, the growth pause ending) or a wake (an ADD or a DEL). An action that found the view
  stale (LimitExceeded) makes the next loop reconcile first.
  The manager also wakes every 5 s (``_MAX_IDLE``); the simulator does not, because a plan made then
  returns ``[]`` as surely as the one before: ``plan`` reads time only through those same moments.
  A plan is skipped, not approximated, when nothing changed and none of them has passed.
- ``PoolManager.step`` / ``_dispatch`` / ``_on_failure``: one batch at a time, busy interfaces,
  ``last_increase_at`` after growth and ``last_decrease_at`` after a release or detach, two-phase
  releases (``begin_release`` / ``finish_release`` / ``abort_release``), growth paused for
  GROWTH_PAUSE after SubnetFull or LimitExceeded (and a reconcile first after LimitExceeded), the
  failure backoff (``ipamd.pool.policy.failure_backoff``, the manager's own).
- ``CloudCaller.call``: per attempt one token of the node's own ``TokenBucket`` (CLOUD_API_RATE,
  CLOUD_API_BURST) and, with CLOUD_API_BUDGET, the operation's cost from the node's ``ClusterBudget``
  (both the daemon's classes, on the simulated clock), waited for; then the account's buckets; a
  throttled attempt retries after the daemon's ``retry_delay`` or gives up. The loop is event-driven
  here, so its control flow is written again in :class:`_Call`: the one copy of it.
- The node count behind CLOUD_API_BUDGET (``ipamd.k8s.nodecount``): read when the daemon starts,
  before its first call, then every CLOUD_API_BUDGET_POLL_INTERVAL jittered as the daemon jitters it
  (``ipamd.cloud.budget.next_poll_in``), and again once the count is CLOUD_API_BUDGET_BUSY_POLL_INTERVAL
  old while a call waits for the node's share (the daemon looks every second; here, when a waiting
  call looks again); the poll's own latency and failures are not modelled; the count is every node
  of the cluster at that moment.
- ``IpamService._assign``: an ADD takes a free address at once; when none is free it may take a cooling
  one (``cannot_grow``: the pool is paused, at its maximum or not below its targets; ``wait_exceeded``:
  COOLDOWN_OVERRIDE_WAIT has passed), else it waits for growth. Waiters look again when the pool
  grows, when a DEL frees an address, and at their override deadline. After ADD_WAIT_TIMEOUT the real
  ADD fails (CNI error 11) and kubelet retries it later; here the ADD waits on (``_recheck`` says why),
  so a wait longer than ADD_WAIT_TIMEOUT is a lower bound of the real one.
- The startup taint (``ipamd.k8s.integration.ready_for_pods``): a new node takes pods once
  ``pool_settled``, or after STARTUP_TAINT_TIMEOUT.

Not mirrored: reconcile's sync (the simulated cloud and the datastore never disagree, so only its
call is made), checkpoints, the datapath, the Kubernetes API's own latency.
"""

from __future__ import annotations

import dataclasses
import math
import random
from collections import deque
from collections.abc import Sequence
from typing import Any, Protocol

from ipamd.cloud.budget import ClusterBudget, next_poll_in
from ipamd.cloud.limiter import FractionalBucket, TokenBucket, retry_delay
from ipamd.errors import (
    CloudError,
    LimitExceeded,
    NoAddressAvailable,
    PermanentCloudError,
    PoolError,
    SubnetFull,
    ThrottledError,
)
from ipamd.pool import policy
from ipamd.pool.datastore import Datastore
from ipamd.pool.model import (
    PREFIX_SIZE,
    Action,
    AssignIps,
    Assignment,
    AssignPrefixes,
    AttachInterface,
    AttachmentKey,
    DetachInterface,
    InstanceLimits,
    InterfaceId,
    InterfaceView,
    PodRef,
    ReleaseIps,
    ReleasePrefixes,
)
from ipamd.sim.cloud import REFUSED_LATENCY, THROTTLED_LATENCY, CloudApi
from ipamd.sim.settings import SimPolicy
from ipamd.sim.subnet import Subnet, SubnetExhausted, ip_text, prefix_text
from ipamd.sim.targets import TargetsProvider

__all__ = ["DELETED", "GONE", "PENDING", "RUNNING", "WAITING", "Host", "Pod", "Recorder", "SimNode"]

_INF = math.inf
_NO_POD = PodRef()

# node modes
WARMING, IDLE, BATCH, PACING, RECONCILE, GONE = range(6)
# pod states
PENDING, WAITING, RUNNING, DELETED = range(4)


class Pod:
    """A pod of the workload: created, maybe pending a node, waiting for an address, then running."""

    __slots__ = (
        "add_at",
        "created",
        "delayed",
        "epoch",
        "id",
        "ip",
        "key",
        "node",
        "override_at",
        "placements",
        "state",
    )

    def __init__(self, pod_id: int, created: float) -> None:
        self.id = pod_id
        self.created = created
        self.state = PENDING
        self.node: SimNode | None = None
        self.key: AttachmentKey | None = None
        self.add_at = 0.0  # when the ADD reached the node
        self.override_at = 0.0  # when the ADD may take a cooling address (COOLDOWN_OVERRIDE_WAIT)
        self.delayed = False  # a throttled cloud call of its node happened while it waited
        self.epoch = 0  # its node's count of throttled attempts when it began to wait
        self.ip = ""
        self.placements = 0


class Recorder(Protocol):
    """What a node reports (``ipamd.sim.metrics.Recorder``)."""

    def pod_started(self, pod: Pod, now: float) -> None: ...

    def call_throttled(self, operation: str, *, delayed: bool) -> None: ...

    def call_gave_up(self, operation: str) -> None: ...

    def action_started(self, kind: str) -> None: ...

    def action_failed(self, kind: str, error: str) -> None: ...

    def cooldown_override(self, reason: str) -> None: ...


class Host(Protocol):
    """What a node needs from the cluster around it."""

    @property
    def api(self) -> CloudApi: ...

    @property
    def rng(self) -> random.Random: ...

    @property
    def recorder(self) -> Recorder: ...

    def clock(self) -> float: ...

    def at(self, when: float, fn: Any, arg: Any = None) -> None: ...

    def node_ready(self, node: SimNode, now: float) -> None: ...

    def node_count_at(self, when: float) -> int: ...


class _Interface:
    """The cloud's side of one interface: what the subnet must get back when it goes."""

    __slots__ = ("device_index", "ips", "prefixes", "primary_ip")

    def __init__(self, device_index: int, primary_ip: int) -> None:
        self.device_index = device_index
        self.primary_ip = primary_ip
        self.ips: set[int] = set()
        self.prefixes: set[int] = set()  # base addresses


class SimNode:
    """A node's daemon, as far as the pool goes. Created by ``ipamd.sim.cluster.Cluster``."""

    def __init__(
        self,
        *,
        name: str,
        host: Host,
        limits: InstanceLimits,
        max_pods: int,
        capacity: int,
        subnet: Subnet,
        sim_policy: SimPolicy,
        now: float,
        warm: bool,
    ) -> None:
        s = sim_policy.settings
        self.name = name
        self.host = host
        self.limits = limits
        self.capacity = capacity  # pods with an address the scheduler places here at most
        self.subnet = subnet
        self.policy = sim_policy
        self.retry = sim_policy.retry
        base = sim_policy.targets
        if base.max_pods is None:  # MAX_PODS unset: the Node's capacity.pods (PoolManager.set_max_pods)
            base = dataclasses.replace(base, max_pods=max_pods)
        self.provider: TargetsProvider = sim_policy.targets_factory(base, limits, now)
        self.targets = self.provider.targets(now)
        self.operations = host.api.operations
        self.store = Datastore(cooldown=base.cooldown, primary_interface_pods=base.primary_interface_pods)
        self.growth_pause = s.growth_pause
        self.reconcile_interval = s.reconcile_interval
        self.min_action_interval = s.pool_min_action_interval
        self.add_wait_timeout = s.add_wait_timeout
        self.override_wait = min(s.cooldown_override_wait, s.add_wait_timeout)

        self.mode = WARMING if warm else IDLE
        self.gen = 0  # timer generation: a timer of an older generation is stale
        self.wake_at = _INF
        self.busy: set[InterfaceId] = set()
        self.last_increase_at: float | None = None
        self.last_decrease_at: float | None = None
        self.growth_paused_until: float | None = None
        self.failures = 0
        self.batch_left = 0
        self.batch_failed = False
        self.batch_started = 0.0
        self.dirty = True  # something the plan reads changed since the last plan
        self.stable_until = -_INF  # the last plan gives the same actions until then, if nothing changes
        self.last_actions: list[Action] = []
        self.next_reconcile_at = now + self.reconcile_interval
        self.reconcile_urgent = False  # an action found the view stale (LimitExceeded)
        self.waiting: deque[Pod] = deque()
        self.residents: dict[int, Pod] = {}  # pods placed here (waiting or running)
        self.backoff_until = -_INF  # a throttled call of this node waits to retry until then
        self.throttles = 0  # throttled attempts of this node so far
        self.ready = warm or not sim_policy.startup_taint
        self.sched_index = -1  # position in the cluster's list of schedulable nodes

        # client-side limits: the node's own bucket, and its share of a cluster-wide budget
        self.local = TokenBucket(s.cloud_api_rate, s.cloud_api_burst, clock=host.clock)
        self.budget: ClusterBudget | None = None
        self.poll_interval = s.cloud_api_budget_poll_interval
        self.next_count_poll = _INF
        self.busy_poll = s.cloud_api_budget_busy_poll_interval
        self.counted_at = -_INF  # the last count's time
        self.count_serial = 0  # the poll scheduled next (one superseded by a busy poll is skipped)
        if sim_policy.budget:
            self.budget = ClusterBudget(
                sim_policy.budget,
                sim_policy.provider,
                nodes=s.cloud_api_budget_assumed_nodes,
                clock=host.clock,
                rng=host.rng,
            )
            self._count_nodes(now)  # the first count is taken before the first cloud call

        # the cloud's side: interfaces and their addresses
        self.interfaces: dict[InterfaceId, _Interface] = {}
        self.interface_serial = 0
        self.store.add_interface(self._new_interface(primary=True, now=now), now=now)

    # --- the cluster's calls ----------------------------------------------------------------------

    def start(self, now: float, *, reconcile_at: float | None = None) -> None:
        """Start the loop (a new node: its daemon starts now; a warm one: after ``settle``)."""
        if reconcile_at is not None:
            self.next_reconcile_at = reconcile_at
        self.mode = IDLE
        for pod in self.waiting:  # left waiting by ``settle``: the pool could not hold them
            pod.override_at = now
        self._loop(now)

    def add_pod(self, pod: Pod, now: float) -> None:
        """A pod's ADD (``IpamService._assign``): an address at once if one may be taken, else wait."""
        pod.node = self
        pod.add_at = now
        pod.override_at = now + self.override_wait
        pod.delayed = False
        pod.epoch = self.throttles
        pod.state = WAITING
        self.residents[pod.id] = pod
        self.provider.on_pod_start(now)
        self.dirty = True
        if self.mode == WARMING:
            self.waiting.append(pod)
            return
        if not self._try_assign(pod, now, waited_out=now >= pod.override_at):
            self.waiting.append(pod)
            pod.delayed = now < self.backoff_until
            if pod.override_at > now:
                self.host.at(pod.override_at, self._recheck, pod)
        self.wake(now)

    def delete_pod(self, pod: Pod, now: float) -> None:
        """A pod's DEL: its address cools down; a waiting ADD is dropped."""
        self.residents.pop(pod.id, None)
        self.dirty = True
        freed = pod.state == RUNNING
        if freed:
            self.provider.on_pod_stop(now)  # the daemon counts a stop when an assignment is given back
        if pod.state == WAITING:
            self.waiting.remove(pod)
        elif freed and pod.key is not None:
            self.store.unassign(pod.key, now=now)
        pod.node = None
        if self.mode == WARMING:
            return
        self.wake(now)
        if freed:
            self._serve_waiters(now)  # addresses_freed: a waiter on a node that cannot grow may take it

    def wake(self, now: float) -> None:
        """``PoolManager.wake``: re-plan now, if the loop is asleep (a wake during a batch is lost)."""
        if self.mode == IDLE and self.wake_at > now:
            self._schedule_loop(now)

    def settle(self, now: float) -> None:
        """Bring a warm node's pool to its targets for its pods at once, as a cluster that has been
        running would be: the plan's actions are carried out instantly, with no call, bucket or wait."""
        for _ in range(1000):
            while self.waiting:
                pod = self.waiting[0]
                assignment = self._take(pod, now, allow_cooling=False)
                if assignment is None:
                    break
                self.waiting.popleft()
                self._running(pod, assignment)
            actions = self._plan(now)
            if not actions:
                break
            for action in actions:
                try:
                    payload = self._acquire(action, now)
                except PermanentCloudError:
                    return  # the subnet or a limit: what the real node would have found too
                self._begin(action, now)
                self._complete(action, payload, now)

    def terminate(self, now: float) -> None:
        """The node is gone (drained and terminated): its interfaces and their addresses are deleted."""
        self.mode = GONE
        self.gen += 1
        if self.budget is not None:
            self.budget.close()
        for pod in self.residents.values():
            pod.node = None
        self.residents.clear()
        self.waiting.clear()
        for iface in self.interfaces.values():
            self.subnet.give_ips([iface.primary_ip, *iface.ips])
            self.subnet.give_prefixes(list(iface.prefixes))
        self.interfaces.clear()

    @property
    def pods(self) -> int:
        return len(self.residents)

    def idle_addresses(self, now: float) -> int:
        """Pod-assignable addresses held and not assigned (free, cooling, quarantined, releasing)."""
        stats = self.store.stats(now=now)
        return stats.total - stats.assigned

    # --- the loop (PoolManager.run) -------------------------------------------------------------

    def _schedule_loop(self, when: float) -> None:
        self.gen += 1
        self.wake_at = when
        self.host.at(when, self._on_timer, self.gen)

    def _on_timer(self, now: float, gen: int) -> None:
        if gen != self.gen:
            return  # superseded by a later wake, or the node is gone
        self.wake_at = _INF
        self._loop(now)

    def _loop(self, now: float) -> None:
        if self.reconcile_urgent:  # an action found the view stale: reconcile before planning again
            self.reconcile_urgent = False
            self._reconcile(now)
            return
        self._step(now)

    def _reconcile(self, now: float) -> None:
        self.mode = RECONCILE
        self.next_reconcile_at = now + self.reconcile_interval
        _Call(self, None, "list_interfaces", now).attempt(now)

    def _step(self, now: float) -> None:
        targets = self.provider.targets(now)
        if targets is not self.targets and targets != self.targets:
            self.targets = targets
            self.dirty = True
        if not self.dirty and now < self.stable_until:
            actions = self.last_actions  # nothing the plan reads has changed: the same plan again
        else:
            actions = self.last_actions = self._plan(now)
            self.stable_until = self._stable_until(now)
            self.dirty = False
        if not actions:
            if not self.ready and self._settled(now):
                self.ready = True
                self.host.node_ready(self, now)
            if now >= self.next_reconcile_at:
                self._reconcile(now)  # only when there is nothing to grow or shrink
                return
            self._idle(now)
            return
        self.mode = BATCH
        self.batch_started = now
        self.batch_left = len(actions)
        self.batch_failed = False
        for action in actions:
            self._execute(action, now)

    def _plan(self, now: float) -> list[Action]:
        """``PoolManager.plan``."""
        paused = self.growth_paused_until
        if paused is not None and paused <= now:
            paused = None
        view = self.store.view(
            now=now,
            busy=frozenset(self.busy),
            last_increase_at=self.last_increase_at,
            last_decrease_at=self.last_decrease_at,
            growth_paused_until=paused,
            waiting=len(self.waiting),
        )
        return policy.plan(view, self.targets, self.limits, now=now)

    def _idle(self, now: float) -> None:
        self.mode = IDLE
        # a reconcile that outlasted its interval (throttled) is due again at once, as in _idle_timeout
        self._schedule_loop(max(now, min(self.stable_until, self.next_reconcile_at)))

    def _stable_until(self, now: float) -> float:
        """``PoolManager._idle_timeout``'s moments but the 5 s poll and the reconcile, and the targets
        provider's next change: ``plan`` reads time only through them, so until the first of them an
        unchanged pool plans what it planned at ``now`` (``[]`` when idle; the same actions again after
        a batch whose every call failed without changing anything, throttled out)."""
        moments = [_INF]
        if self.growth_paused_until is not None and self.growth_paused_until > now:
            moments.append(self.growth_paused_until)
        delay = self.targets.release_delay
        for last in (self.last_increase_at, self.last_decrease_at):
            if last is not None and last + delay > now:
                moments.append(last + delay)
        deadline = self.store.next_cooldown_deadline(now=now)
        if deadline is not None:
            moments.append(deadline)
        change = self.provider.next_change(now)
        if change is not None and change > now:
            moments.append(change)
        return min(moments)

    def _summary(self, now: float) -> policy.PoolTargetState:
        targets = self.provider.targets(now)  # PoolManager.effective_targets
        return policy.targets_summary(self.store.view(now=now), targets, self.limits, now=now)

    def _paused(self, now: float) -> bool:
        return self.growth_paused_until is not None and self.growth_paused_until > now

    def _settled(self, now: float) -> bool:
        """``PoolManager.pool_settled``."""
        if self._paused(now):
            return False
        state = self._summary(now)
        return not state.low or state.headroom <= 0 or state.full

    def _batch_done(self, now: float) -> None:
        self.failures = self.failures + 1 if self.batch_failed else 0
        paced = min(self.min_action_interval, self.batch_started + self.min_action_interval - now)
        delay = max(policy.failure_backoff(self.failures), paced)
        if delay > 0:
            self.mode = PACING  # not wakeable
            self._schedule_loop(now + delay)
        else:
            self._loop(now)

    def reconciled(self, now: float) -> None:
        """The reconcile call came back (or gave up): the loop goes on to a step."""
        if self.mode == GONE:
            return
        self._step(now)

    # --- actions (PoolManager._dispatch) ----------------------------------------------------------

    def _execute(self, action: Action, now: float) -> None:
        kind = type(action).__name__
        self.host.recorder.action_started(kind)
        try:
            self._begin(action, now)
        except PoolError as exc:  # the datastore refused: the manager logs and re-plans
            self.dirty = True
            self.action_failed(action, exc, now)
            return
        _Call(self, action, _OPERATION[type(action)], now).attempt(now)

    def _begin(self, action: Action, now: float) -> None:
        """What the manager does before the call: mark the interface busy, begin a release."""
        if isinstance(action, AttachInterface):
            return
        self.busy.add(action.interface_id)
        try:
            if isinstance(action, ReleaseIps):
                self.store.begin_release(action.interface_id, ips=action.ips)
            elif isinstance(action, ReleasePrefixes):
                self.store.begin_release(action.interface_id, prefixes=action.prefixes)
            elif isinstance(action, DetachInterface):
                self.store.begin_detach(action.interface_id)
        except PoolError:
            self.busy.discard(action.interface_id)
            raise

    def action_done(self, action: Action, payload: Any, now: float) -> None:
        if self.mode == GONE:
            self._give_back(action, payload)
            return
        self._complete(action, payload, now)
        self.dirty = True
        if isinstance(action, AttachInterface | AssignIps | AssignPrefixes):
            self.last_increase_at = now  # _grown
            self._serve_waiters(now)
        else:
            self.last_decrease_at = now
        self._finished(now, failed=False)

    def action_failed(self, action: Action, exc: CloudError | PoolError, now: float) -> None:
        if self.mode == GONE:
            return
        kind = type(action).__name__
        if not isinstance(action, AttachInterface):
            iid = action.interface_id
            if isinstance(action, ReleaseIps) and isinstance(exc, CloudError):
                self.store.abort_release(iid, ips=action.ips)
            elif isinstance(action, ReleasePrefixes) and isinstance(exc, CloudError):
                self.store.abort_release(iid, prefixes=action.prefixes)
            elif isinstance(action, DetachInterface) and isinstance(exc, CloudError):
                self.store.abort_detach(iid)
            self.busy.discard(iid)
            if self.waiting and isinstance(action, ReleaseIps | ReleasePrefixes | DetachInterface):
                # free again: the daemon's waiters find them at kubelet's next retry, these at once
                self._serve_waiters(now)
        self.host.recorder.action_failed(kind, type(exc).__name__)
        if isinstance(exc, SubnetFull | LimitExceeded):  # PoolManager._on_failure
            self.growth_paused_until = now + self.growth_pause
            self.dirty = True
            if isinstance(exc, LimitExceeded):
                self.reconcile_urgent = True  # our view of the interface may be stale
        self._finished(now, failed=True)

    def _finished(self, now: float, *, failed: bool) -> None:
        self.batch_failed |= failed
        self.batch_left -= 1
        if self.batch_left == 0:
            self._batch_done(now)

    # --- the cloud's side of an action ------------------------------------------------------------

    def _acquire(self, action: Action, now: float) -> Any:
        """What the cloud does when it accepts the request: check limits, take addresses from the
        subnet (all or nothing). Raises LimitExceeded or SubnetFull as the cloud would."""
        limits, subnet = self.limits, self.subnet
        slots = limits.secondary_per_interface
        try:
            if isinstance(action, AttachInterface):
                if len(self.interfaces) >= limits.max_interfaces:
                    raise LimitExceeded("attach_interface", f"{limits.max_interfaces} interfaces attached")
                if action.ip_count + action.prefix_count > slots:
                    raise LimitExceeded("attach_interface", f"more than {slots} slots per interface")
                if action.prefix_count and not limits.prefix_delegation:
                    raise LimitExceeded("attach_interface", f"{limits.instance_type}: no prefix delegation")
                if (
                    action.prefix_count > subnet.free_blocks
                    or action.prefix_count * PREFIX_SIZE + 1 > subnet.free
                ):
                    raise SubnetExhausted(f"{subnet.cidr}: no room for {action.prefix_count} prefixes")
                ips = subnet.take_ips(1 + action.ip_count, now)
                return ips, subnet.take_prefixes(action.prefix_count, now)
            if isinstance(action, AssignIps | AssignPrefixes):
                iface = self.interfaces[action.interface_id]
                if len(iface.ips) + len(iface.prefixes) + action.count > slots:
                    raise LimitExceeded(_OPERATION[type(action)], f"more than {slots} slots per interface")
                if isinstance(action, AssignIps):
                    return subnet.take_ips(action.count, now)
                if not limits.prefix_delegation:
                    raise LimitExceeded("assign_prefixes", f"{limits.instance_type}: no prefix delegation")
                return subnet.take_prefixes(action.count, now)
        except SubnetExhausted as exc:
            raise SubnetFull(_OPERATION[type(action)], str(exc)) from None
        return None  # releases and detaches take nothing

    def _complete(self, action: Action, payload: Any, now: float) -> None:
        """The call succeeded: the cloud's side changes, and the datastore learns it (``_dispatch``)."""
        store = self.store
        if isinstance(action, AttachInterface):
            ips, prefixes = payload
            view = self._new_interface(primary=False, now=now, addresses=(ips, prefixes))
            store.add_interface(view, now=now)
            return
        iid = action.interface_id
        iface = self.interfaces[iid]
        if isinstance(action, AssignIps):
            iface.ips.update(payload)
            store.add_ips(iid, [ip_text(v) for v in payload])
        elif isinstance(action, AssignPrefixes):
            iface.prefixes.update(payload)
            store.add_prefixes(iid, [prefix_text(v) for v in payload])
        elif isinstance(action, ReleaseIps):
            store.finish_release(iid, ips=action.ips)
            values = [_ip_value(ip) for ip in action.ips]
            iface.ips.difference_update(values)
            self.subnet.give_ips(values)
        elif isinstance(action, ReleasePrefixes):
            store.finish_release(iid, prefixes=action.prefixes)
            bases = [_ip_value(p.partition("/")[0]) for p in action.prefixes]
            iface.prefixes.difference_update(bases)
            self.subnet.give_prefixes(bases)
        elif isinstance(action, DetachInterface):
            store.finish_detach(iid)
            gone = self.interfaces.pop(iid)
            self.subnet.give_ips([gone.primary_ip, *gone.ips])
            self.subnet.give_prefixes(list(gone.prefixes))
        self.busy.discard(iid)

    def _give_back(self, action: Action, payload: Any) -> None:
        """A call that took addresses came back to a node that is gone: the cloud deletes them."""
        if isinstance(action, AttachInterface):
            ips, prefixes = payload
            self.subnet.give_ips(ips)
            self.subnet.give_prefixes(prefixes)
        elif isinstance(action, AssignIps):
            self.subnet.give_ips(payload)
        elif isinstance(action, AssignPrefixes):
            self.subnet.give_prefixes(payload)

    def _new_interface(
        self, *, primary: bool, now: float, addresses: tuple[Sequence[int], Sequence[int]] = ((), ())
    ) -> InterfaceView:
        ips, prefixes = addresses
        if primary:
            primary_ip = self.subnet.take_ips(1, now)[0]
        else:
            primary_ip, ips = ips[0], ips[1:]
        used = {i.device_index for i in self.interfaces.values()}
        device_index = next(i for i in range(len(used) + 1) if i not in used)
        iid = InterfaceId(f"{self.name}/if{self.interface_serial}")
        self.interface_serial += 1
        iface = self.interfaces[iid] = _Interface(device_index, primary_ip)
        iface.ips.update(ips)
        iface.prefixes.update(prefixes)
        return InterfaceView(
            id=iid,
            device_index=device_index,
            primary=primary,
            subnet_id=self.subnet.id,
            subnet_cidr=self.subnet.cidr,
            primary_ip=ip_text(primary_ip),
            ips=tuple(ip_text(v) for v in ips),
            prefixes=tuple(prefix_text(v) for v in prefixes),
        )

    # --- the ADD path (IpamService._assign) -------------------------------------------------------

    def _take(self, pod: Pod, now: float, *, allow_cooling: bool) -> Assignment | None:
        assert pod.key is not None
        try:
            return self.store.assign(pod.key, _NO_POD, netns="", now=now, allow_cooling=allow_cooling)
        except NoAddressAvailable:
            return None

    def _try_assign(self, pod: Pod, now: float, *, waited_out: bool) -> bool:
        assignment = self._take(pod, now, allow_cooling=False)
        if assignment is None and self.store.stats(now=now).cooling:
            reason = self._override_reason(now, waited_out)
            if reason:
                assignment = self._take(pod, now, allow_cooling=True)
                if assignment is not None:
                    self.host.recorder.cooldown_override(reason)
        if assignment is None:
            return False
        self._running(pod, assignment)
        if self.throttles != pod.epoch:
            pod.delayed = True
        self.host.recorder.pod_started(pod, now)
        return True

    def _running(self, pod: Pod, assignment: Assignment) -> None:
        pod.state = RUNNING
        pod.ip = assignment.ip

    def _override_reason(self, now: float, waited_out: bool) -> str:
        """``IpamService._override_reason``: growth blocked or the pool settled -> cannot_grow; the
        override wait over -> wait_exceeded; else "" (wait for growth)."""
        if self._paused(now):
            return "cannot_grow"
        state = self._summary(now)
        if state.headroom <= 0 or state.full or not state.low:
            return "cannot_grow"
        return "wait_exceeded" if waited_out else ""

    def _serve_waiters(self, now: float) -> None:
        """The pool grew or an address was freed: waiting ADDs look again, oldest first. Waiters are
        in ADD order, so their override deadlines are too: once one finds nothing, later ones would."""
        waiting = self.waiting
        while waiting:
            pod = waiting[0]
            if not self._try_assign(pod, now, waited_out=now >= pod.override_at):
                return
            waiting.popleft()

    def _recheck(self, now: float, pod: Pod) -> None:
        """A waiting ADD's COOLDOWN_OVERRIDE_WAIT is over: it looks again, and may take a cooling address.

        After that, it is served when the pool grows or a DEL frees an address (``_serve_waiters``):
        nothing else makes an address it may take appear (a cooling address becoming free was
        already one it could take), so kubelet's retries of the failed ADD every ADD_WAIT_TIMEOUT
        would find nothing and are not simulated (they would be events by the million in a scale-up).
        """
        if pod.state != WAITING or pod.node is not self or self.mode == GONE:
            return
        if self._try_assign(pod, now, waited_out=True):
            self.waiting.remove(pod)

    # --- client-side limits (CloudCaller._take_tokens) ---------------------------------------------

    def token_wait(self, ready: float, tickets: list[tuple[FractionalBucket, float]], now: float) -> float:
        """Seconds until the attempt's tokens are there (0.0: now), at the budget's current rates."""
        remaining = ready - now
        if self.budget is not None and tickets:
            remaining = max(remaining, ClusterBudget.wait_for(tickets))
        return max(remaining, 0.0)

    def _count_nodes(self, now: float, serial: Any = None) -> None:
        """``NodeCounter``: the cluster's node count now, then the next poll, interval x [0.8, 1.2)."""
        if self.mode == GONE or self.budget is None:
            return
        if serial is not None and serial != self.count_serial:
            return
        self.count_serial += 1
        self.counted_at = now
        count = self.host.node_count_at(now)
        if count != self.budget.nodes:
            self.budget.set_nodes(count)
        draw = self.host.rng.random()
        self.next_count_poll = now + next_poll_in(self.poll_interval, 0, draw)
        self.host.at(self.next_count_poll, self._count_nodes, self.count_serial)


_OPERATION: dict[type, str] = {
    AttachInterface: "attach_interface",
    AssignIps: "assign_ips",
    AssignPrefixes: "assign_prefixes",
    ReleaseIps: "release_ips",
    ReleasePrefixes: "release_prefixes",
    DetachInterface: "detach_interface",
}


def _ip_value(text: str) -> int:
    """The value of a dotted quad the datastore gave back (it only ever holds canonical ones)."""
    a, b, c, d = text.split(".")
    return (int(a) << 24) | (int(b) << 16) | (int(c) << 8) | int(d)


class _Call:
    """One ``CloudCaller.call`` of one node, as events: tokens, attempt, backoff, retry or give up.

    The daemon's loop (``ipamd.cloud.limiter.CloudCaller.call``) written event by event; the tokens are
    the daemon's buckets and the retry decision is the daemon's ``retry_delay``. Only throttling is a
    temporary error here.
    """

    __slots__ = ("action", "attempts", "name", "node", "operation", "ready", "started", "tickets")

    def __init__(self, node: SimNode, action: Action | None, name: str, now: float) -> None:
        self.node = node
        self.action = action
        self.name = name
        self.operation = node.operations.get(name)
        self.started = now
        self.attempts = 0
        self.ready = now
        self.tickets: list[tuple[FractionalBucket, float]] = []

    def attempt(self, now: float, _: Any = None) -> None:
        """The top of ``CloudCaller.call``'s loop: take the attempt's tokens, wait for them if need be."""
        node = self.node
        if node.mode == GONE:
            return
        if self.operation is None:  # the cloud has no such operation (an Azure NIC is not attached)
            node.host.at(
                now, self._failed, LimitExceeded(self.name, f"not offered by {node.policy.provider}")
            )
            return
        self.attempts += 1
        wait = node.local.reserve()
        if node.budget is not None:
            self.ready = now + wait
            self.tickets = node.budget.reserve(self.name)
            self._go(now)
        elif wait > 0:
            node.host.at(now + wait, self._send)
        else:
            self._send(now)

    def _go(self, now: float, _: Any = None) -> None:
        """With a budget: wait until the node's token and the budget's tickets are both there."""
        node = self.node
        if node.mode == GONE:
            return
        wait = node.token_wait(self.ready, self.tickets, now)
        if wait > 0 and now >= node.counted_at + node.busy_poll:  # NodeCounter._wait: busy, count old
            node._count_nodes(now)
            wait = node.token_wait(self.ready, self.tickets, now)
        if now + wait > now:  # (a wait below the clock's resolution is none)
            # The daemon looks again every second, so a new node count re-times the wait: look again at
            # the next count at the latest (at the same moment, the count, scheduled earlier, goes first),
            # or when the count is old enough for a busy node to read it again.
            again = min(now + wait, node.next_count_poll, node.counted_at + node.busy_poll)
            node.host.at(max(again, now), self._go)
            return
        self._send(now)

    def _send(self, now: float, _: Any = None) -> None:
        node = self.node
        if node.mode == GONE:
            return
        host = node.host
        operation = self.operation
        assert operation is not None
        admitted, retry_after = host.api.admit(operation, now)
        if not admitted:
            self._throttled(now, retry_after)
            return
        payload = None
        if self.action is not None:
            try:
                payload = node._acquire(self.action, now)
            except PermanentCloudError as exc:
                host.api.refused(operation, now)
                host.at(now + host.api.latency(REFUSED_LATENCY), self._failed, exc)
                return
        host.at(now + host.api.latency(operation.latency), self._done, payload)

    def _throttled(self, now: float, retry_after: float | None) -> None:
        """The attempt is refused: its answer comes back after a short latency, and then the daemon
        retries after ``retry_delay`` or gives up. Decided now, with the elapsed time at the answer
        (one event fewer per throttled attempt; the draw is the same one). The hottest path of a
        throttling storm: kept to plain arithmetic."""
        node = self.node
        host = node.host
        node.throttles += 1  # a pod waiting now is delayed by it (see _try_assign)
        host.recorder.call_throttled(self.name, delayed=bool(node.waiting))
        rng = host.rng
        low, high = THROTTLED_LATENCY
        answered = now + low + (high - low) * rng.random()  # random.uniform's own formula
        retry = node.retry
        attempts = self.attempts
        draw = rng.random() if attempts < retry.max_attempts else 0.0
        delay = retry_delay(retry, attempts, answered - self.started, draw, retry_after)
        if delay is None:
            host.recorder.call_gave_up(self.name)
            node.backoff_until = max(node.backoff_until, answered)
            host.at(answered, self._failed, ThrottledError(self.name, "RequestLimitExceeded: gave up"))
            return
        answered += delay
        node.backoff_until = max(node.backoff_until, answered)
        host.at(answered, self.attempt)

    def _done(self, now: float, payload: Any) -> None:
        if self.action is None:
            self.node.reconciled(now)
        else:
            self.node.action_done(self.action, payload, now)

    def _failed(self, now: float, exc: CloudError) -> None:
        if self.action is None:
            self.node.reconciled(now)
        else:
            self.node.action_failed(self.action, exc, now)
