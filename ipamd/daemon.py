"""The daemon: start-up order, supervision, and shutdown.

Start-up (nothing is served before the pool state is known to be safe):
  1. settings (a bad env var stops here with one line), provider, instance limits;
  2. checkpoint load (current, else previous generation + quarantine, else quarantine all);
  3. the cloud's view of the interfaces -> datastore; checkpoint restored on top; the reconciled
     state is made durable before the first request;
  4. gRPC socket, metrics, introspection; the pool manager loop under a supervisor.
SIGTERM/SIGINT: health goes NOT_SERVING, the server stops accepting and lets in-flight calls
finish (SHUTDOWN_TIMEOUT), the manager stops, the checkpoint is flushed, the socket removed.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import structlog

from ipamd import checkpoint, leaks, spool
from ipamd import events as ev
from ipamd.cloud.base import CloudProvider
from ipamd.cloud.factory import make_provider
from ipamd.cloud.limiter import CloudCaller, RetryPolicy, TokenBucket
from ipamd.config import Settings, check_datapath
from ipamd.datapath.base import Datapath, NoDatapath
from ipamd.errors import CloudCniError, CloudError, ConfigError
from ipamd.k8s import integration as k8s
from ipamd.manager import PoolManager
from ipamd.metrics import LoopReader, Metrics
from ipamd.pool.datastore import Datastore
from ipamd.rpc.server import RpcServer
from ipamd.service import IpamService

log = structlog.get_logger("ipamd")

_MANAGER_MAX_RESTARTS = 5


def make_datapath(settings: Settings) -> Datapath:
    check_datapath(settings)
    if settings.datapath == "none":
        return NoDatapath()
    from ipamd.datapath.linux.datapath import LinuxDatapath

    return LinuxDatapath(
        veth_prefix=settings.veth_prefix,
        pod_mtu=settings.pod_mtu,
        external_snat=settings.external_snat,
        exclude_snat_cidrs=settings.exclude_snat_cidrs,
        snat_backend=settings.snat_backend,
        link_timeout=settings.interface_link_timeout,
    )


async def supervise(name: str, run: Callable[[], Any], stop: asyncio.Event, metrics: Metrics | None) -> None:
    """Run a loop; log and restart it when it crashes; stop the daemon if it keeps crashing."""
    restarts = 0
    while not stop.is_set():
        try:
            await run()
            return
        except asyncio.CancelledError:
            raise
        except Exception:
            restarts += 1
            log.exception("task_crashed", task=name, restarts=restarts)
            if metrics:
                metrics.manager_restarts.inc()
            if restarts > _MANAGER_MAX_RESTARTS:
                log.error("task_gave_up_stopping_daemon", task=name)
                stop.set()
                return
            await asyncio.sleep(min(2.0**restarts, 30.0))


_SPOOL_INTERVAL = 5.0


async def drain_forever(service: IpamService, socket_path: str, stop: asyncio.Event) -> None:
    """A DEL the shim queued while the daemon was starting is applied within a few seconds."""
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), _SPOOL_INTERVAL)
        if not stop.is_set():
            await spool.drain(service, socket_path)


class NodeMismatch(CloudCniError):
    """The Node named by NODE_NAME is not this machine (its providerID names another instance)."""


class Daemon:
    def __init__(
        self,
        settings: Settings,
        *,
        provider: CloudProvider | None = None,
        clock: Callable[[], float] = time.time,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.settings = settings
        self.clock = clock
        self.provider = provider
        self.env = os.environ if env is None else env
        self.metrics = Metrics()
        self.stop_event = asyncio.Event()
        self.serving = False
        self.kube: k8s.KubeIntegration | None = None

    def _kubernetes(self) -> tuple[k8s.KubeIntegration | None, ev.NodeReporter]:
        """The integration (None when off) and the reporter everything else reports through.

        Only configuration is read here, no request is made: the API is never waited for at start.
        """
        s = self.settings
        source = k8s.decide(self.env, s.kubernetes_integration, s.kubeconfig, s.node_name)
        if source is None:
            log.info("kubernetes_integration_off", mode=s.kubernetes_integration)
            return None, ev.NodeReporter(ev.NullSink(), s.node_name)
        from ipamd.k8s.api import KubeApi
        from ipamd.k8s.recorder import EventRecorder

        assert s.node_name is not None  # decide() refuses an integration without it
        api = KubeApi.from_source(source, observe=self.metrics.on_k8s_request)
        recorder = EventRecorder(
            api,
            instance=f"ipamd-{s.node_name}",
            on_drop=lambda why: self.metrics.k8s_events_dropped.labels(why).inc(),
        )
        reporter = ev.NodeReporter(recorder, s.node_name)
        log.info("kubernetes_integration_on", config=source.kind, host=api.host, node=s.node_name)
        integration = k8s.KubeIntegration(
            api=api,
            node_name=s.node_name,
            recorder=recorder,
            reporter=reporter,
            cloud=s.cloud_provider,
            instance_ref=None,
            startup_taint=s.startup_taint,
            startup_taint_timeout=s.startup_taint_timeout,
            pod_gone_grace=s.pod_gone_grace,
            max_pods_set=s.max_pods is not None,
            custom_networking=s.custom_network_cfg,
            eniconfig_keys=(s.eni_config_label_def, s.eni_config_annotation_def),
            pod_subnet_label=(
                s.azure_pod_subnet_label
                if s.cloud_provider == "azure" and not s.azure_pod_subnet_id
                else None
            ),
            clock=self.clock,
        )
        return integration, reporter

    def healthy(self, reader: LoopReader) -> bool:
        """Serving, and the event loop answers (a wedged loop fails the liveness probe)."""
        if not self.serving:
            return False
        try:
            return reader.read(lambda: self.serving, timeout=2.0)
        except Exception:
            return False

    async def run(self) -> int:
        s = self.settings
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stop_event.set)
        datapath = make_datapath(s)
        kube, reporter = self._kubernetes()
        self.kube = kube
        provider = self.provider if self.provider is not None else await asyncio.to_thread(make_provider, s)
        if kube is not None:
            kube.instance_ref = getattr(provider, "instance_ref", None)
        throttle = ev.ThrottleWatch(
            self.metrics, lambda note: reporter.node(ev.CLOUD_THROTTLED, note, action="CallCloudAPI")
        )
        caller = CloudCaller(
            TokenBucket(s.cloud_api_rate, s.cloud_api_burst), RetryPolicy(), observer=throttle
        )
        limits = await asyncio.to_thread(caller.call, "instance_limits", provider.instance_limits)
        targets = s.targets()
        if targets.prefix_delegation and not limits.prefix_delegation:
            log.warning("prefix_delegation_unsupported", instance_type=limits.instance_type)
        log.info(
            "daemon_starting",
            provider=provider.name,
            datapath=datapath.name,
            limits=str(limits),
            settings=s.public(),
        )

        store = Datastore(cooldown=s.ip_cooldown_period)
        path = Path(s.checkpoint_path)
        self._lock = hold_lock(path)
        rpc = RpcServer(None, s.ipamd_socket, self.metrics)
        rpc.claim()  # before any state is touched: refuse if another daemon serves this socket
        loaded = checkpoint.load(path, now=self.clock())
        for problem in loaded.problems:
            log.error("checkpoint_problem", path=str(path), problem=problem)
        try:  # interfaces this node created and lost in a crash between create and attach
            await leaks.sweep_once(provider, caller, min_age=0, own_only=True, metrics=self.metrics)
        except CloudError as exc:
            log.warning("startup_leak_sweep_failed", error=str(exc))
        views = await asyncio.to_thread(caller.call, "list_interfaces", provider.list_interfaces)
        sync = store.sync_interfaces(views, now=self.clock())
        report = store.restore(loaded.snapshot, now=self.clock())
        quarantined = 0
        if loaded.needs_quarantine:
            quarantined = store.quarantine_unassigned(now=self.clock())
            self.metrics.checkpoint_recoveries.labels(loaded.source).inc()
            log.error(
                "checkpoint_recovered_with_quarantine",
                source=loaded.source,
                quarantined=quarantined,
                hint="quarantined addresses return to the pool when CNI GC or DEL accounts for their pods",
            )
            reporter.node(
                ev.CHECKPOINT_RECOVERED,
                f"the checkpoint was unusable ({'; '.join(loaded.problems)[:400] or 'missing'}); "
                f"restored from {loaded.source} with {quarantined} addresses quarantined until "
                "CNI GC or DEL accounts for them",
                action="RestoreCheckpoint",
            )
        for orphan in report.orphaned:
            log.error("assignment_without_address", ip=orphan.ip, container_id=orphan.key.container_id)
        log.info(
            "pool_restored",
            source=loaded.source,
            generation=loaded.generation,
            interfaces=len(views),
            addresses=len(sync.added_ips),
            assignments=report.restored,
            cooling=report.cooling,
            quarantined=quarantined,
        )
        await datapath.start(store.interfaces, tuple(provider.network_cidrs), store.assignments())
        committer = checkpoint.GroupCommitter(
            path,
            store.snapshot,
            clock=self.clock,
            initial_generation=loaded.generation,
            observer=self.metrics,
        )
        await committer.commit()

        manager = PoolManager(
            store=store,
            provider=provider,
            caller=caller,
            targets=targets,
            limits=limits,
            clock=self.clock,
            growth_pause=s.growth_pause,
            reconcile_interval=s.reconcile_interval,
            metrics=self.metrics,
            min_action_interval=s.pool_min_action_interval,
            on_interfaces_changed=datapath.sync_interfaces,
            reporter=reporter,
        )
        service = IpamService(
            store=store,
            committer=committer,
            manager=manager,
            datapath=datapath,
            metrics=self.metrics,
            clock=self.clock,
            add_wait_timeout=s.add_wait_timeout,
            reporter=reporter,
        )
        self.service = service
        pods_on_primary = getattr(provider, "primary_interface_pods", None)
        if isinstance(pods_on_primary, bool):  # an Azure pod subnet on another NIC leaves the primary alone
            manager.set_primary_interface_pods(pods_on_primary and targets.primary_interface_pods)
        if kube is not None:
            kube.attach(
                manager=manager,
                store=store,
                provider=provider,
                release=service.release_gone,
                serving=lambda: self.serving,
                stop=self.stop_event,
            )
        reader = LoopReader(loop)
        self.metrics.watch_pool(
            lambda: reader.read(lambda: store.stats(now=self.clock())), lambda: manager.max_ips
        )
        drained = await spool.drain(service, s.ipamd_socket)  # before any ADD is served
        if drained:
            log.info("spooled_dels_drained", count=drained)
        stops: list[Callable[[], None]] = []
        rpc.serve(service)
        try:
            await rpc.start()
            if s.metrics_bind:
                stops.append(self.metrics.serve(s.metrics_bind))
            if s.introspection_bind:
                from ipamd import introspection

                routes = introspection_routes(service, manager, s, reader, kube)
                stops.append(introspection.serve(s.introspection_bind, routes, lambda: self.healthy(reader)))
            self.serving = True
            log.info("daemon_ready", socket=s.ipamd_socket)
            if kube is not None:
                kube.start()  # after serving: the API is never waited for
            manager_task = asyncio.create_task(
                supervise("pool_manager", lambda: manager.run(self.stop_event), self.stop_event, self.metrics)
            )
            sweep_task = asyncio.create_task(
                leaks.sweep_forever(
                    provider,
                    caller,
                    interval=s.leaked_eni_cleanup_interval,
                    stop=self.stop_event,
                    metrics=self.metrics,
                )
            )
            spool_task = asyncio.create_task(
                supervise(
                    "del_spool",
                    lambda: drain_forever(service, s.ipamd_socket, self.stop_event),
                    self.stop_event,
                    None,
                )
            )
            await self.stop_event.wait()
            log.info("daemon_stopping", grace_seconds=s.shutdown_timeout)
            self.serving = False
            await rpc.stop(s.shutdown_timeout)
            if kube is not None:
                await kube.stop()
            for task in (manager_task, spool_task, sweep_task):
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        finally:
            self.serving = False
            for stop in stops:
                with contextlib.suppress(Exception):
                    stop()
            await committer.close()
            rpc.remove_socket()
            datapath.close()
        log.info("daemon_stopped")
        if kube is not None and kube.fatal:
            raise NodeMismatch(kube.fatal)
        return 0


def hold_lock(checkpoint_path: Path) -> int:
    """Hold an exclusive lock next to the checkpoint for the daemon's life: one writer only."""
    import fcntl
    import os

    checkpoint_path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(f"{checkpoint_path}.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        allowed = "a checkpoint no other running daemon holds (it is locked)"
        raise ConfigError("CHECKPOINT_PATH", str(checkpoint_path), allowed) from None
    return fd


def introspection_routes(
    service: IpamService,
    manager: PoolManager,
    settings: Settings,
    reader: LoopReader,
    kube: k8s.KubeIntegration | None = None,
) -> dict[str, Callable[[], Any]]:
    store = service.store

    def pool() -> dict[str, Any]:
        now = service.clock()
        s = store.stats(now=now)
        return {
            "total": s.total,
            "assigned": s.assigned,
            "available": s.available,
            "cooling": s.cooling,
            "quarantined": s.quarantined,
            "max": manager.max_ips,
            "growth_paused_until": manager.growth_paused_until,
            "growth_hold": manager.growth_hold,
            "growth_blocked": manager.growth_blocked(now),
            "interfaces": [
                {
                    "id": v.id,
                    "device_index": v.device_index,
                    "primary": v.primary,
                    "subnet_id": v.subnet_id,
                    "subnet_cidr": v.subnet_cidr,
                    "ips": list(v.ips),
                    "prefixes": list(v.prefixes),
                }
                for v in store.interfaces()
            ],
        }

    def assignments() -> list[dict[str, Any]]:
        orphaned = {a.key for a in store.orphaned()}  # the address vanished from the cloud
        return [
            {
                "network": a.key.network,
                "container_id": a.key.container_id,
                "ifname": a.key.ifname,
                "ip": a.ip,
                "interface_id": a.interface_id,
                "pod": {"namespace": a.pod.namespace, "name": a.pod.name, "uid": a.pod.uid},
                "netns": a.netns,
                "assigned_at": a.assigned_at,
                "orphaned": a.key in orphaned,
                **(kube.pod_view(a) if kube is not None else {"pod_known": None, "pod_state": "unknown"}),
            }
            for a in store.assignments()
        ]

    def kubernetes() -> dict[str, Any]:
        if kube is None:
            return {"integration": "off", "node": settings.node_name}
        return kube.public()

    return {
        "/v1/pool": lambda: reader.read(pool),
        "/v1/assignments": lambda: reader.read(assignments),
        "/v1/config": settings.public,
        "/v1/k8s": lambda: reader.read(kubernetes),
    }
