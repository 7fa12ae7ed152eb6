"""The daemon's Kubernetes side: its Node, the startup taint, events, pods, ENIConfig.

Nothing here is on the CNI path. Watches run in threads (the client blocks) and hand what they see
to the event loop; the loop's tasks decide. With the API server slow, failing or absent the daemon
serves exactly as it does with the integration off, and catches up when the API comes back.

Start: ``start()`` after the daemon serves. Tasks:
- node watch (fieldSelector metadata.name=NODE_NAME): providerID check, capacity.pods as max pods
  (when MAX_PODS is unset), labels and annotations for custom networking, the startup taint;
- pod watch (fieldSelector spec.nodeName=NODE_NAME): which pods exist, for the pod-gone release;
- ENIConfig watch (custom networking only);
- the startup taint: removed once the daemon can serve a pod, or at STARTUP_TAINT_TIMEOUT with a
  Warning event; never added;
- the pod-gone sweep (``ipamd.k8s.pods``);
- with CLOUD_API_BUDGET, the node count (``ipamd.k8s.nodecount``): started by ``count_nodes`` as soon
  as the budget exists, before the daemon's first cloud call, and stopped by ``stop()``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any

import structlog

from ipamd import events as ev
from ipamd.errors import ConfigError
from ipamd.k8s.api import ApiError, ConfigSource, KubeApi, find_config, missing_config_message
from ipamd.k8s.node import NodeCache, NodeInfo, TaintSpec, provider_id_mismatch, remove_taint
from ipamd.k8s.pods import PodGoneTracker, PodIndex, pod_state
from ipamd.k8s.recorder import EventRecorder
from ipamd.k8s.reflector import Reflector
from ipamd.pool.model import Assignment

if TYPE_CHECKING:
    from ipamd.cloud.budget import ClusterBudget
    from ipamd.k8s.nodecount import NodeCounter

log = structlog.get_logger("ipamd.k8s")

ENICONFIG_PATH = "/apis/crd.k8s.amazonaws.com/v1alpha1/eniconfigs"
_TAINT_TICK = 2.0
NODE_WAIT = 5.0  # at most this long at start, growth waits for the Node's capacity.pods


def decide(
    env: Mapping[str, str], mode: str, kubeconfig: str | None, node_name: str | None
) -> ConfigSource | None:
    """The config to use, or None with the integration off. ``ConfigError`` when ``on`` cannot be."""
    if mode == "off":
        return None
    source = find_config(env, kubeconfig)
    if source is None:
        if mode == "on":
            raise ConfigError("KUBERNETES_INTEGRATION", mode, missing_config_message(env, kubeconfig))
        return None
    if not node_name:
        raise ConfigError(
            "NODE_NAME",
            "",
            f"this node's name (downward API spec.nodeName) when the Kubernetes integration is on "
            f"(config: {source.kind} {source.detail}); or KUBERNETES_INTEGRATION=off",
        )
    return source


class KubeIntegration:
    def __init__(
        self,
        *,
        api: KubeApi,
        node_name: str,
        recorder: EventRecorder,
        reporter: ev.NodeReporter,
        cloud: str,
        instance_ref: str | None,
        startup_taint: str,
        startup_taint_timeout: float,
        pod_gone_grace: float,
        max_pods_set: bool,
        custom_networking: bool = False,
        eniconfig_keys: tuple[str, str] = ("", ""),
        pod_subnet_label: str | None = None,
        clock: Callable[[], float] = time.time,
        netns_exists: Callable[[str], bool] = os.path.exists,
    ) -> None:
        self.api = api
        self.node_name = node_name
        self.recorder = recorder
        self.reporter = reporter
        self.cloud = cloud
        self.instance_ref = instance_ref
        self.taint = TaintSpec.parse(startup_taint) if startup_taint else None
        self.taint_timeout = startup_taint_timeout
        self.max_pods_set = max_pods_set
        self.custom_networking = custom_networking
        self.eniconfig_keys = eniconfig_keys
        self.pod_subnet_label = pod_subnet_label  # azure, AZURE_POD_SUBNET_ID unset: the label names it
        self._pod_subnet_value: str | None = None
        self.clock = clock
        self.netns_exists = netns_exists
        self.nodes = NodeCache(node_name)
        self.pods = PodIndex(node_name)
        self.tracker = PodGoneTracker(pod_gone_grace)
        self.eniconfigs: dict[str, dict[str, Any]] = {}
        self.taint_state = "disabled" if self.taint is None else "unknown"
        self.fatal: str | None = None
        self.released = 0
        self._reflectors: list[Reflector] = []
        self.node_counter: NodeCounter | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._node_seen = False
        self._taint_wake = asyncio.Event()
        self._placement: Any = None
        self._eniconfigs_listed = False
        self._eniconfig_problem = ""
        self._started_at = clock()
        # Set by ``attach``.
        self._manager: Any = None
        self._store: Any = None
        self._provider: Any = None
        self._release: Callable[[Assignment], Awaitable[bool]] | None = None
        self._serving: Callable[[], bool] = lambda: False
        self._stop: asyncio.Event | None = None

    def attach(
        self,
        *,
        manager: Any,
        store: Any,
        provider: Any,
        release: Callable[[Assignment], Awaitable[bool]],
        serving: Callable[[], bool],
        stop: asyncio.Event,
    ) -> None:
        self._manager = manager
        self._store = store
        self._provider = provider
        self._release = release
        self._serving = serving
        self._stop = stop
        if self.custom_networking:
            manager.hold_growth(
                "custom networking: the node's ENIConfig has not been read from the API yet", "eniconfig"
            )
        if not self.max_pods_set:
            # The Node's capacity.pods caps the pool: at first start, do not grow past it before it is
            # read. Bounded: the first failed request, or NODE_WAIT without an answer, lifts the hold
            # (the API is never waited for when it is down).
            manager.hold_growth(f"waiting up to {NODE_WAIT:.0f} s for the Node's capacity.pods", "node")

    # --- life cycle ----------------------------------------------------------------------------

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._started_at = self.clock()

        def on_loop(fn: Callable[..., None]) -> Callable[..., None]:
            def call(*args: Any) -> None:
                loop.call_soon_threadsafe(fn, *args)

            return call

        node = Reflector(
            self.api,
            "node",
            "/api/v1/nodes",
            query={"fieldSelector": f"metadata.name={self.node_name}"},
            replace=lambda items: self._node_event(loop, self.nodes.replace, items),
            apply=lambda kind, obj: self._node_event(loop, self.nodes.apply, kind, obj),
            on_error=on_loop(self._stop_waiting_for_node),
        )
        pods = Reflector(
            self.api,
            "pods",
            "/api/v1/pods",
            query={"fieldSelector": f"spec.nodeName={self.node_name}"},
            replace=self.pods.replace,
            apply=self.pods.apply,
            on_sync_change=on_loop(self._pods_sync_changed),
        )
        self._reflectors = [node, pods]
        if self.custom_networking:
            self._reflectors.append(
                Reflector(
                    self.api,
                    "eniconfigs",
                    ENICONFIG_PATH,
                    replace=lambda items: self._eniconfigs_replace(items, loop),
                    apply=lambda kind, obj: self._eniconfigs_apply(kind, obj, loop),
                )
            )
        for r in self._reflectors:
            r.start()
        self.recorder.start()
        if not self.max_pods_set:
            loop.call_later(NODE_WAIT, self._stop_waiting_for_node)
        self._tasks = [
            asyncio.create_task(self._taint_loop(), name="startup-taint"),
            asyncio.create_task(self._pod_gone_loop(), name="pod-gone"),
        ]

    async def stop(self) -> None:
        for r in self._reflectors:
            r.stop()
        self.stop_counting_nodes()
        self.api.close_all()
        for task in self._tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await asyncio.to_thread(self.recorder.stop)
        for r in self._reflectors:
            await asyncio.to_thread(r.join, 2.0)
        if self.node_counter is not None:
            await asyncio.to_thread(self.node_counter.join, 2.0)

    def count_nodes(
        self,
        budget: ClusterBudget,
        *,
        interval: float,
        busy_interval: float | None = None,
        reconcile_interval: float | None = None,
    ) -> NodeCounter:
        """Start polling the node count that shares ``budget`` (CLOUD_API_BUDGET) at once: the first
        count should be there before the daemon's first cloud calls. Nothing waits for it."""
        from ipamd.k8s.nodecount import NodeCounter

        self.node_counter = NodeCounter(
            self.api,
            budget,
            interval=interval,
            busy_interval=busy_interval,
            reconcile_interval=reconcile_interval,
            clock=self.clock,
        )
        self.node_counter.start()
        return self.node_counter

    def stop_counting_nodes(self) -> None:
        if self.node_counter is not None:
            self.node_counter.stop()

    def reflector(self, name: str) -> Reflector | None:
        return next((r for r in self._reflectors if r.name == name), None)

    # --- the Node ------------------------------------------------------------------------------

    def _stop_waiting_for_node(self) -> None:
        """The Node was read, the API failed, or NODE_WAIT passed: growth no longer waits for it."""
        if self._manager is not None:
            self._manager.hold_growth(None, "node")

    def _node_event(self, loop: asyncio.AbstractEventLoop, update: Callable[..., None], *args: Any) -> None:
        """On the reflector's thread: update the cache, then let the loop act on it."""
        update(*args)
        loop.call_soon_threadsafe(self._node_changed)

    def _node_changed(self) -> None:
        node = self.nodes.node
        if node is None:
            return
        if not self._node_seen:
            self._node_seen = True
            log.info(
                "node_found", node=node.name, provider_id=node.provider_id, capacity_pods=node.capacity_pods
            )
        why = provider_id_mismatch(node.provider_id, self.cloud, self.instance_ref)
        if why and self.fatal is None:
            self.fatal = why
            log.error("node_provider_id_mismatch", node=node.name, error=why)
            if self._stop is not None:
                self._stop.set()
            return
        if not self.max_pods_set and self._manager is not None:
            if node.capacity_pods is not None:
                self._manager.set_max_pods(node.capacity_pods)
            self._stop_waiting_for_node()
        if self.custom_networking:
            self._update_placement(node)
        if self.pod_subnet_label:
            self._update_pod_subnet(node)
        self._taint_wake.set()

    # --- custom networking ---------------------------------------------------------------------

    def _eniconfigs_replace(self, items: list[dict[str, Any]], loop: asyncio.AbstractEventLoop) -> None:
        configs = {str((i.get("metadata") or {}).get("name")): i for i in items}
        loop.call_soon_threadsafe(self._set_eniconfigs, configs)

    def _eniconfigs_apply(self, kind: str, obj: dict[str, Any], loop: asyncio.AbstractEventLoop) -> None:
        name = str((obj.get("metadata") or {}).get("name"))
        loop.call_soon_threadsafe(self._set_eniconfig, name, None if kind == "DELETED" else obj)

    def _set_eniconfigs(self, configs: dict[str, dict[str, Any]]) -> None:
        self.eniconfigs = configs
        self._eniconfigs_listed = True
        node = self.nodes.node
        if node is not None:
            self._update_placement(node)

    def _set_eniconfig(self, name: str, obj: dict[str, Any] | None) -> None:
        if obj is None:
            self.eniconfigs.pop(name, None)
        else:
            self.eniconfigs[name] = obj
        node = self.nodes.node
        if node is not None:
            self._update_placement(node)

    def _update_placement(self, node: NodeInfo) -> None:
        from ipamd.eniconfig import eniconfig_name, parse_eniconfig

        if not self._eniconfigs_listed:
            return  # the hold set at attach stays until both are known
        label_key, annotation_key = self.eniconfig_keys
        name = eniconfig_name(
            node.labels, node.annotations, label_key=label_key, annotation_key=annotation_key
        )
        obj = self.eniconfigs.get(name)
        problem = ""
        placement = None
        if obj is None:
            problem = f"ENIConfig {name!r} (selected for node {node.name}) does not exist"
        else:
            try:
                placement = parse_eniconfig(obj)
            except ValueError as exc:
                problem = str(exc)
        if problem:
            reason = f"custom networking: {problem}; new interfaces wait for a valid ENIConfig"
            if reason != self._eniconfig_problem:
                self.reporter.node(ev.ENI_CONFIG_INVALID, reason, action="SelectENIConfig")
            self._eniconfig_problem = reason
            self._manager.hold_growth(reason, "eniconfig")
            if self._placement is not None:  # no new ENI in a subnet the node no longer selects
                self._provider.set_interface_placement(None)
                self._placement = None
            return
        if placement != self._placement:
            log.info("eniconfig_selected", name=name, placement=str(placement))
            self._provider.set_interface_placement(placement)
            self._placement = placement
        self._eniconfig_problem = ""
        self._manager.hold_growth(None, "eniconfig")

    def _update_pod_subnet(self, node: NodeInfo) -> None:
        """Azure: the Node label names a subnet of the VM's VNet for pod addresses."""
        from ipamd.cloud.base import Placement
        from ipamd.eniconfig import azure_subnet_from_label
        from ipamd.errors import PermanentCloudError

        assert self.pod_subnet_label is not None
        value = node.labels.get(self.pod_subnet_label)
        if value == self._pod_subnet_value:
            return
        self._pod_subnet_value = value
        try:
            if value is None:
                self._provider.set_interface_placement(None)
            else:
                subnet_id = azure_subnet_from_label(value, self._provider.vnet_id)
                source = f"label {self.pod_subnet_label}={value}"
                self._provider.set_interface_placement(Placement(subnet_id, None, source))
        except (ValueError, PermanentCloudError) as exc:
            note = f"pod subnet label {self.pod_subnet_label}={value!r} not used: {exc}"
            log.warning("pod_subnet_label_invalid", note=note)
            self.reporter.node(ev.POD_SUBNET_INVALID, note, action="SelectPodSubnet")
            return
        self._manager.set_primary_interface_pods(self._provider.primary_interface_pods)

    # --- the startup taint ---------------------------------------------------------------------

    def ready_for_pods(self, now: float) -> bool:
        return bool(self._serving()) and self._manager is not None and self._manager.pool_settled(now)

    async def _taint_loop(self) -> None:
        spec = self.taint
        if spec is None:
            return
        timeout_reported = False
        failures = 0
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(
                    self._taint_wake.wait(), _TAINT_TICK if not failures else min(30, 2**failures)
                )
            self._taint_wake.clear()
            node = self.nodes.node
            if node is None:
                continue
            if not node.has_taint(spec):
                if self.taint_state in ("unknown", "present"):
                    self.taint_state = "absent"
                continue
            self.taint_state = "present"  # (again, if something re-added it after a removal)
            now = self.clock()
            ready = self.ready_for_pods(now)
            timed_out = now - self._started_at >= self.taint_timeout
            if not ready and not timed_out:
                continue
            if not ready and not timeout_reported:
                timeout_reported = True
                why = self._manager.growth_blocked(now) if self._manager is not None else ""
                note = (
                    f"removing {spec} after STARTUP_TAINT_TIMEOUT ({self.taint_timeout:.0f} s) although the "
                    f"pool has not settled: {why or 'the pool is still below its warm target'}"
                )
                self.reporter.node(ev.STARTUP_TAINT_TIMEOUT, note, action="RemoveStartupTaint")
                log.warning("startup_taint_timeout", note=note)
            try:
                removed = await asyncio.to_thread(remove_taint, self.api, self.node_name, spec)
            except Exception as exc:  # ApiError, a malformed Node (ValueError); retried with backoff
                failures += 1
                log.warning("startup_taint_removal_failed", error=str(exc), failures=failures)
                continue
            failures = 0
            self.taint_state = "timed_out" if not ready else "removed"
            if removed:
                log.info(
                    "startup_taint_removed",
                    taint=str(spec),
                    ready=ready,
                    after=round(now - self._started_at, 2),
                )
                if ready:
                    self.reporter.node(
                        ev.STARTUP_TAINT_REMOVED,
                        f"removed {spec}: the daemon serves pods and the pool has settled",
                        action="RemoveStartupTaint",
                        type="Normal",
                    )

    # --- pods ----------------------------------------------------------------------------------

    def _pods_sync_changed(self, synced: bool) -> None:
        if not synced:
            self.tracker.reset()

    def pod_view(self, assignment: Assignment) -> dict[str, Any]:
        pods = self.reflector("pods")
        synced = bool(pods and pods.state.synced)
        return {
            "pod_known": None if not synced else pod_state(assignment, self.pods, synced) == "known",
            "pod_state": pod_state(assignment, self.pods, synced),
            "pod_absent_since": self.tracker.absent_since.get(assignment.key),
        }

    async def _pod_gone_loop(self) -> None:
        interval = max(0.5, min(60.0, self.tracker.grace / 10))
        while True:
            await asyncio.sleep(interval)
            try:
                await self.sweep_pods_gone()
            except Exception:  # a bug here must not end the sweeps; nothing is released on doubt
                log.exception("pod_gone_sweep_failed")

    async def sweep_pods_gone(self) -> int:
        pods = self.reflector("pods")
        synced = bool(pods and pods.state.synced)
        due = self.tracker.observe(self._store.assignments(), self.pods, synced, self.clock())
        released = 0
        for a in due:
            if await self._confirm_gone(a):
                assert self._release is not None
                if await self._release(a):
                    released += 1
                    self.tracker.absent_since.pop(a.key, None)
        self.released += released
        return released

    async def _confirm_gone(self, a: Assignment) -> bool:
        """The re-check right before a release: every condition again, and a live GET of the pod."""
        pods = self.reflector("pods")
        if not a.netns or self.netns_exists(a.netns):
            return False
        if not (pods and pods.state.synced) or pod_state(a, self.pods, True) != "absent":
            return False
        path = f"/api/v1/namespaces/{a.pod.namespace}/pods/{a.pod.name}"
        try:
            await asyncio.to_thread(self.api.request, "GET", path, verb="get")
        except ApiError as exc:
            if not exc.not_found:
                log.info(
                    "pod_gone_recheck_inconclusive", pod=f"{a.pod.namespace}/{a.pod.name}", error=str(exc)
                )
                return False
        else:
            log.info("pod_gone_recheck_found_pod", pod=f"{a.pod.namespace}/{a.pod.name}")
            return False
        return not self.netns_exists(a.netns) and self._store.get(a.key) == a

    # --- introspection -------------------------------------------------------------------------

    def public(self) -> dict[str, Any]:
        node = self.nodes.node
        api_error = next((r.state.last_error for r in self._reflectors if r.state.last_error), None)
        taint_state = self.taint_state
        if self.taint is not None and node is not None and taint_state == "unknown":
            taint_state = "present" if node.has_taint(self.taint) else "absent"
        pods = self.reflector("pods")
        return {
            "integration": "on",
            "node": self.node_name,
            "api": {
                "host": self.api.host,
                "reachable": api_error is None and self._node_seen,
                "last_error": api_error,
            },
            "watches": {r.name: r.state.public() for r in self._reflectors},
            "startup_taint": {"taint": str(self.taint or ""), "state": taint_state},
            "events": self.recorder.stats.public(self.recorder.queued()),
            "pods_on_node": len(self.pods) if pods and pods.state.synced else None,
            "pod_gone": {"grace_seconds": self.tracker.grace, "released": self.released},
            "node_capacity_pods": node.capacity_pods if node else None,
            "cloud_api_budget": self.node_counter.public() if self.node_counter is not None else None,
        }
