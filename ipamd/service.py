"""The CNI verbs as the daemon serves them, behind the gRPC layer.

Every answer that changes an assignment is given only after that change is durable in the
checkpoint (group commit). An ADD never waits for the cloud when the pool has a free address; when
it has none it wakes the manager and waits up to ADD_WAIT_TIMEOUT for growth, then answers
"try again later".

Cool-down overrides. When every address not in use is cooling, an ADD takes one of them (the one
cooling longest) only when waiting cannot help or has lasted long enough:

- ``cannot_grow``: the pool cannot grow now (``PoolManager.growth_blocked``: held, paused, at its
  maximum; or ``pool_settled``: not below its targets, so the policy will not grow it). Served at
  once: a pod never fails only because of cool-down.
- ``wait_exceeded``: the pool could grow but gained no address within COOLDOWN_OVERRIDE_WAIT (at
  most ADD_WAIT_TIMEOUT) of the ADD's start (a slow or failing cloud).

Otherwise it waits for growth like an ADD on an empty pool, and gets a fresh address. Each override
is logged (``ip_cooldown_overridden``) and counted in ``cloudcni_cooldown_overrides_total{reason}``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection
from dataclasses import dataclass, replace
from typing import Any, NoReturn

import structlog

from ipamd import errors
from ipamd.checkpoint import GroupCommitter
from ipamd.datapath.base import Datapath, PodWiring
from ipamd.events import INTERFACE_LIMIT_REACHED, IP_ALLOCATION_DELAYED, NodeReporter
from ipamd.manager import PoolManager
from ipamd.metrics import OVERRIDE_CANNOT_GROW, OVERRIDE_WAIT_EXCEEDED, Metrics
from ipamd.pool.datastore import Datastore
from ipamd.pool.model import Assignment, AttachmentKey
from ipamd.requests import Call, prev_result_ips

log = structlog.get_logger("ipamd.service")

# An ADD that got its address after waiting at least this long for the pool tells its Pod (a Normal
# IPAllocationDelayed event); shorter waits, the common case under churn, make no API write.
DELAY_EVENT_AFTER = 1.0


@dataclass(frozen=True, slots=True)
class AddResult:
    assignment: Assignment
    wiring: PodWiring
    device_index: int


@dataclass(frozen=True, slots=True)
class StatusResult:
    ready: bool
    available: int
    assigned: int
    total: int
    message: str


class IpamService:
    def __init__(
        self,
        *,
        store: Datastore,
        committer: GroupCommitter,
        manager: PoolManager,
        datapath: Datapath,
        metrics: Metrics | None = None,
        clock: Callable[[], float] = time.time,
        add_wait_timeout: float = 5.0,
        cooldown_override_wait: float = 2.0,
        reporter: NodeReporter | None = None,
    ) -> None:
        self.reporter = reporter
        self.store = store
        self.committer = committer
        self.manager = manager
        self.datapath = datapath
        self.metrics = metrics
        self.clock = clock
        self.add_wait_timeout = add_wait_timeout
        self.cooldown_override_wait = cooldown_override_wait

    async def _durable(self) -> None:
        await self.committer.commit()

    async def add(self, call: Call) -> AddResult:
        existing = self.store.get(call.key)
        if existing is None:
            self.manager.pod_started(self.clock())  # demand (POOL_MODE=adaptive), before any wait
        assignment = existing or await self._assign(call)
        try:
            await self._durable()
        except errors.CheckpointError:
            if existing is None and self.store.get(call.key) == assignment:
                self.store.unassign(call.key, now=self.clock())
            raise
        if self.store.get(call.key) != assignment:
            # A concurrent DEL, or a rollback of a concurrent ADD for the same key, won the race.
            raise errors.AttachmentChanged(
                f"the attachment {call.key.container_id}/{call.key.ifname} changed while it was being "
                "stored (a concurrent DEL); try again later"
            )
        self.manager.wake()
        try:
            wiring = await self.datapath.add_pod(assignment, dns=call.dns)
        except BaseException:
            log.warning("add_wiring_failed_released", container_id=call.key.container_id, ip=assignment.ip)
            # No pod ever ran with it: free at once, no cool-down (there is no connection to outlive).
            self.store.unassign(call.key, now=self.clock(), cool=existing is not None)
            await self._durable()
            raise
        device_index = self.store.device_index(assignment.interface_id)
        return AddResult(assignment, wiring, device_index or 0)

    async def _assign(self, call: Call) -> Assignment:
        started = self.clock()
        deadline = started + self.add_wait_timeout
        override_at = started + min(self.cooldown_override_wait, self.add_wait_timeout)
        waited = False
        waited_out = False  # a wait for growth ran out: COOLDOWN_OVERRIDE_WAIT is over
        expired = False  # ... and so is ADD_WAIT_TIMEOUT
        while True:
            now = self.clock()
            overrides = self.store.cooldown_overrides
            assignment = self._take(call, now, allow_cooling=False)
            reason = why = ""
            if assignment is None:
                reason, why = self._override_reason(now, waited_out or now >= override_at)
                if reason:
                    assignment = self._take(call, now, allow_cooling=True)
            if assignment is not None:
                break
            if not waited:
                waited = True
                self._report_wait(call)
            remaining = deadline - now
            if expired or remaining <= 0:
                self._no_address(call, started)
            # Until COOLDOWN_OVERRIDE_WAIT is over, wake then to take a cooling address if nothing grew.
            timeout = remaining if waited_out or now >= override_at else min(remaining, override_at - now)
            if not await self.manager.wait_for_growth(timeout):
                waited_out = True
                expired = timeout >= remaining
        if waited and self.clock() - started >= DELAY_EVENT_AFTER:
            self._report_delay(
                call,
                f"the pool had no free address; waited {self.clock() - started:.1f} s "
                f"for it to grow, got {assignment.ip}",
                type_="Normal",
            )
        if self.store.cooldown_overrides != overrides:
            log.warning(
                "ip_cooldown_overridden",
                container_id=call.key.container_id,
                ifname=call.key.ifname,
                ip=assignment.ip,
                reason=reason,
                why=why,
                waited=round(self.clock() - started, 3),
            )
            if self.metrics:
                self.metrics.cooldown_overrides.labels(reason).inc()
        log.info(
            "ip_assigned",
            container_id=call.key.container_id,
            ifname=call.key.ifname,
            pod=f"{call.pod.namespace}/{call.pod.name}",
            ip=assignment.ip,
            interface=assignment.interface_id,
        )
        return assignment

    def _take(self, call: Call, now: float, *, allow_cooling: bool) -> Assignment | None:
        try:
            return self.store.assign(
                call.key, call.pod, netns=call.netns, now=now, allow_cooling=allow_cooling
            )
        except errors.NoAddressAvailable:
            return None

    def _override_reason(self, now: float, waited_out: bool) -> tuple[str, str]:
        """Whether an ADD that found nothing free may take a cooling address now: (reason, why), or
        ("", "") while waiting for growth is still worth it."""
        blocked = self.manager.growth_blocked(now)
        if blocked:
            return OVERRIDE_CANNOT_GROW, blocked
        if self.manager.pool_settled(now):
            return OVERRIDE_CANNOT_GROW, "the pool is not below its targets, so it will not grow"
        if waited_out:
            return OVERRIDE_WAIT_EXCEEDED, "the pool did not grow within COOLDOWN_OVERRIDE_WAIT"
        return "", ""

    def _no_address(self, call: Call, started: float) -> NoReturn:
        if self.metrics:
            self.metrics.no_ip_available.inc()
        self._report_delay(
            call,
            f"no address after waiting {self.clock() - started:.1f} s: the runtime will retry (CNI error 11)",
        )
        raise errors.NoAddressAvailable(
            "no free address on this node and the pool could not grow in time; try again later"
        )

    def _report_wait(self, call: Call) -> None:
        """An ADD found the pool empty: at the node's limit, that is worth an event on the Node."""
        if self.reporter is None:
            return
        blocked = self.manager.growth_blocked(self.clock())
        if blocked.startswith("the pool holds its maximum"):
            pod = f"{call.pod.namespace}/{call.pod.name}" if call.pod.name else call.key.container_id[:12]
            self.reporter.node(
                INTERFACE_LIMIT_REACHED, f"pod {pod} waits for an address: {blocked}", action="AssignIP"
            )

    def _report_delay(self, call: Call, note: str, type_: str = "Warning") -> None:
        if self.reporter is not None:
            self.reporter.pod(
                call.pod,
                IP_ALLOCATION_DELAYED,
                note,
                action="AssignIP",
                type="Normal" if type_ == "Normal" else "Warning",
            )

    async def release_gone(self, expected: Assignment) -> bool:
        """Release an assignment whose pod is gone for good (``ipamd.k8s.pods`` proved it).

        Only if the assignment is still exactly the one that was proven gone; torn down from the
        allocation record, cooled like a DEL (a late packet to the old pod must not reach a new one).
        """
        if self.store.get(expected.key) != expected:
            return False
        try:
            await self.datapath.del_pod(expected)
        except Exception as exc:  # its netns is gone; host-side leftovers go at the next sweep
            log.warning("pod_gone_teardown_failed", container_id=expected.key.container_id, error=str(exc))
        if self.store.get(expected.key) != expected:
            return False
        self.store.unassign(expected.key, now=self.clock())
        self.manager.pod_stopped(self.clock())
        await self._durable()
        log.warning(
            "ip_released_pod_gone",
            container_id=expected.key.container_id,
            pod=f"{expected.pod.namespace}/{expected.pod.name}",
            uid=expected.pod.uid,
            ip=expected.ip,
        )
        if self.metrics:
            self.metrics.pod_gone_released.inc()
        self.manager.wake()
        await self.manager.addresses_freed()
        return True

    async def delete(self, call: Call, prev_result: dict[str, Any] | None) -> None:
        assignment = self.store.get(call.key)
        if assignment is None:
            # Unknown attachment: DEL succeeds. If the checkpoint was lost, the prevResult tells us
            # which quarantined address this pod held, and it can come back to the pool.
            released = [
                ip
                for ip in prev_result_ips(prev_result)
                if self.store.release_quarantined(ip, now=self.clock())
            ]
            if released:
                log.info("quarantined_ip_released_by_del", container_id=call.key.container_id, ips=released)
                await self._durable()
                await self.manager.addresses_freed()
            return
        await self.datapath.del_pod(assignment)
        self.store.unassign(call.key, now=self.clock())
        self.manager.pod_stopped(self.clock())
        log.info("ip_released", container_id=call.key.container_id, ifname=call.key.ifname, ip=assignment.ip)
        await self._durable()
        self.manager.wake()
        await self.manager.addresses_freed()  # an ADD waiting on a node that cannot grow may take it

    async def check(self, call: Call, prev_result: dict[str, Any] | None) -> None:
        assignment = self.store.get(call.key)
        if assignment is None:
            raise errors.AllocationNotFound(
                f"no address is assigned to container {call.key.container_id} ifname {call.key.ifname}"
            )
        listed = prev_result_ips(prev_result)
        if listed and assignment.ip not in listed:
            raise errors.AllocationNotFound(
                f"prevResult lists {', '.join(listed)} but the daemon assigned {assignment.ip}"
            )
        if not assignment.netns and call.netns:  # adopted from aws-vpc-cni, which records no netns
            assignment = replace(assignment, netns=call.netns)
        await self.datapath.check_pod(assignment)

    async def gc(self, network: str, valid: Collection[tuple[str, str]]) -> int:
        now = self.clock()
        removed = self.store.gc(valid, network=network, started_at=now, now=now)
        for _ in removed:
            self.manager.pod_stopped(now)
        for assignment in removed:
            try:
                await self.datapath.del_pod(assignment)
            except Exception as exc:  # GC goes on past one failure
                log.warning("gc_teardown_failed", container_id=assignment.key.container_id, error=str(exc))
        try:  # host-side leftovers no assignment owns (a DEL lost while the daemon was down, a crash)
            await self.datapath.remove_leftovers(self.store.assignments, self.store.interfaces)
        except Exception as exc:
            log.warning("gc_leftovers_failed", error=str(exc))
        await self._durable()
        if removed:
            log.info("gc_released", network=network, count=len(removed))
            self.manager.wake()
        await self.manager.addresses_freed()  # freed, or quarantine lifted
        return len(removed)

    def status(self) -> StatusResult:
        now = self.clock()
        s = self.store.stats(now=now)
        message = ""
        ready = True
        if s.available == 0 and s.cooling == 0:  # an ADD would take a cooling address
            blocked = self.manager.growth_blocked(now)
            if blocked:
                ready = False
                message = f"no free address and {blocked}"
        return StatusResult(ready, s.available, s.assigned, s.total, message)

    def get(self, key: AttachmentKey) -> Assignment | None:
        return self.store.get(key)
