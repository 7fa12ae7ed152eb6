"""The daemon: start-up order, supervision, and shutdown.

Start-up (nothing is served before the pool state is known to be safe):
  1. settings (a bad env var stops here with one line), datapath and Kubernetes configuration;
  2. the checkpoint directory and its lock, the socket directory and the socket path claimed
     (a directory the daemon creates is 0700; an existing one is checked, never chmod-ed);
  3. provider, instance limits; checkpoint load (current, else previous generation + quarantine,
     else quarantine all);
  4. the cloud's view of the interfaces -> datastore; checkpoint restored on top (with none of ours,
     aws-vpc-cni's adopted instead: ``ipamd.adoption``); the reconciled state is made durable, then
     the datapath starts; the DEL spool drained;
  5. metrics and introspection listen, then the gRPC socket; the long-lived tasks (pool manager,
     leak sweep, DEL spool drain) each run under ``supervise``.
A start that fails releases what it took (HTTP servers, socket file, checkpoint lock) and ends
with one line: ``ConfigError`` (exit 2) or ``StartFailed`` (exit 1), printed by ``ipamd.cli``.
SIGTERM/SIGINT: health goes NOT_SERVING, the server stops accepting and lets in-flight calls
finish (SHUTDOWN_TIMEOUT), the tasks stop, the checkpoint is flushed, the socket removed.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import functools
import os
import signal
import stat
import time
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

import structlog

from ipamd import adoption, checkpoint, leaks, spool
from ipamd import events as ev
from ipamd.cloud.base import CloudProvider
from ipamd.cloud.factory import make_provider
from ipamd.cloud.limiter import CloudCaller, RetryPolicy, TokenBucket
from ipamd.config import Settings, check_datapath
from ipamd.datapath.base import Datapath, NoDatapath
from ipamd.errors import CheckpointError, CloudCniError, ConfigError
from ipamd.k8s import integration as k8s
from ipamd.manager import PoolManager
from ipamd.metrics import LoopReader, Metrics
from ipamd.migrate.awsvpc import AwsCheckpointError
from ipamd.pool.adaptive import DemandTracker
from ipamd.pool.datastore import Datastore
from ipamd.rpc.server import RpcServer
from ipamd.service import IpamService

if TYPE_CHECKING:
    from ipamd.netpol.enforcer import Enforcer

log = structlog.get_logger("ipamd")


def make_datapath(settings: Settings, metrics: Metrics | None = None) -> Datapath:
    check_datapath(settings)
    if settings.datapath == "none":
        return NoDatapath()
    if settings.datapath == "windows":
        from ipamd.datapath.windows import make_windows_datapath

        return make_windows_datapath(settings, on_call=None if metrics is None else metrics.on_hcn_call)
    from ipamd.datapath.linux.datapath import LinuxDatapath

    return LinuxDatapath(
        veth_prefix=settings.veth_prefix,
        pod_mtu=settings.pod_mtu,
        external_snat=settings.external_snat,
        node_port_support=settings.node_port_support,
        exclude_snat_cidrs=settings.exclude_snat_cidrs,
        snat_backend=settings.snat_backend,
        link_timeout=settings.interface_link_timeout,
        legacy_veth_prefix=settings.aws_vpc_cni_veth_prefix,
    )


MAX_RESTARTS = 5  # crashes in a row a task may have; one more stops the daemon
STABLE_AFTER = 300.0  # seconds: a task that ran this long before it crashed starts counting afresh
_BACKOFF_MAX = 30.0


class TaskGaveUp(CloudCniError):
    """A supervised task kept crashing: the daemon stopped on purpose (exit 1, the pod restarts)."""

    def __init__(self, task: str, crashes: int) -> None:
        super().__init__(f"task {task} crashed {crashes} times in a row; the daemon stopped")
        self.task = task
        self.crashes = crashes


async def supervise(
    name: str,
    run: Callable[[], Awaitable[object]],
    stop: asyncio.Event,
    metrics: Metrics | None,
    *,
    max_restarts: int = MAX_RESTARTS,
    stable_after: float = STABLE_AFTER,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], Awaitable[object]] | None = None,
) -> None:
    """Run one long-lived task of the daemon; log and restart it when it crashes.

    Each task has its own count of crashes in a row (``cloudcni_task_restarts_total{task}`` counts
    the restarts); a run that lasted ``stable_after`` seconds before crashing resets it, so a task
    that fails once a day is not stopped for it. Restarts back off 2, 4, 8 ... 30 seconds. Crash
    number ``max_restarts + 1`` sets ``stop`` and raises ``TaskGaveUp``: a daemon whose pool loop
    cannot run is better restarted by the kubelet than left serving a pool that never grows.
    Returns when the task returns or ``stop`` is set; cancellation passes through.
    """
    restarts = metrics.task_restarts.labels(name) if metrics is not None else None
    crashes = 0
    while not stop.is_set():
        started = clock()
        try:
            await run()
            return
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            if clock() - started >= stable_after:
                crashes = 0
            crashes += 1
            if crashes > max_restarts:
                log.error("task_gave_up_stopping_daemon", task=name, crashes=crashes, error=str(exc))
                stop.set()
                raise TaskGaveUp(name, crashes) from exc
            delay = min(2.0**crashes, _BACKOFF_MAX)
            log.exception("task_crashed", task=name, crashes=crashes, restart_in=delay)
            if restarts is not None:
                restarts.inc()
        if sleep is not None:
            await sleep(delay)
        else:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), delay)


_SPOOL_INTERVAL = 5.0


async def drain_forever(
    service: IpamService, socket_path: str, stop: asyncio.Event, metrics: Metrics | None = None
) -> None:
    """A DEL the shim queued while the daemon was starting is applied within a few seconds."""
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), _SPOOL_INTERVAL)
        if not stop.is_set():
            await spool.drain(service, socket_path, metrics=metrics)


class StartFailed(CloudCniError):
    """Start-up could not complete for a reason other than the configuration (exit 1)."""


# A path the daemon cannot use for these reasons is a configuration problem: another value fixes it.
_PATH_ERRNOS = frozenset(
    {
        errno.EROFS,
        errno.EACCES,
        errno.EPERM,
        errno.ENOENT,
        errno.ENOTDIR,
        errno.EEXIST,
        errno.EISDIR,
        errno.ENAMETOOLONG,
        errno.ELOOP,
    }
)


def _path_failure(variable: str, value: str, problem: str, exc: OSError) -> CloudCniError:
    reason = exc.strerror or type(exc).__name__
    if exc.errno in _PATH_ERRNOS:
        return ConfigError(
            variable, value, f"{problem} ({reason}); allowed: a path on a writable file system"
        )
    return StartFailed(f"{variable}={value!r}: {problem} ({reason})")


def prepare_directory(variable: str, value: str, directory: Path) -> None:
    """Make sure the directory of a file the daemon owns (socket, checkpoint) is safe to use.

    Missing: created with its missing parents, each mode 0700 whatever the umask. Existing: its
    mode is left alone (it may be shared, as /tmp is) but it is checked: a directory, owned by root
    or the daemon's user, and not writable by group or others unless the sticky bit is set. In
    any other directory another user could remove the socket and listen in its place (the shim
    would then send pod identities to them and wire what they answer) or swap the checkpoint.
    """
    missing: list[Path] = []
    current = directory
    while True:
        try:
            st = os.stat(current)
        except FileNotFoundError:
            missing.append(current)
            if current.parent == current:
                break
            current = current.parent
            continue
        except OSError as exc:
            raise _path_failure(variable, value, f"cannot inspect {current}", exc) from None
        if not stat.S_ISDIR(st.st_mode):
            raise ConfigError(
                variable, value, f"{current} is not a directory; allowed: a path under a directory"
            )
        break
    if not missing:
        _check_directory(variable, value, directory, st)
        return
    for path in reversed(missing):
        try:
            os.mkdir(path, 0o700)
        except FileExistsError:
            if path == directory:  # made by someone else meanwhile: an existing directory
                _check_directory(variable, value, directory, os.stat(directory))
                return
            continue
        except OSError as exc:
            raise _path_failure(variable, value, f"cannot create the directory {path}", exc) from None
        os.chmod(path, 0o700)
        log.info("directory_created", path=str(path), mode="0700", variable=variable)


def _check_directory(variable: str, value: str, directory: Path, st: os.stat_result) -> None:
    if not stat.S_ISDIR(st.st_mode):
        raise ConfigError(
            variable, value, f"{directory} is not a directory; allowed: a path under a directory"
        )
    if not hasattr(os, "geteuid"):  # Windows: no POSIX owner or mode; the ACL is deploy/windows' business
        return
    if st.st_uid not in (0, os.geteuid()):
        raise ConfigError(
            variable,
            value,
            f"{directory} is owned by uid {st.st_uid}; "
            "allowed: a directory owned by root or the daemon's user",
        )
    writable_by_others = st.st_mode & (stat.S_IWGRP | stat.S_IWOTH)
    if writable_by_others and not st.st_mode & stat.S_ISVTX:
        raise ConfigError(
            variable,
            value,
            f"{directory} (mode {stat.S_IMODE(st.st_mode):04o}) lets group or others replace its files; "
            "allowed: a directory only its owner can write to, or one with the sticky bit (as /tmp)",
        )


def _listen(variable: str, bind: str, serve: Callable[[], Callable[[], None]]) -> Callable[[], None]:
    """Start an HTTP server; a bind that fails (in use, not this host's address) is a bad setting."""
    try:
        return serve()
    except OSError as exc:
        reason = exc.strerror or str(exc) or type(exc).__name__
        raise ConfigError(
            variable, bind, f"cannot listen there ({reason}); allowed: a free host:port, or off"
        ) from None


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
        self.enforcer: Enforcer | None = None
        self.adopted: adoption.Adopted | None = None  # aws-vpc-cni's node taken over at this start

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
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                loop.add_signal_handler(sig, self.stop_event.set)
            except NotImplementedError:  # Windows' event loops: a plain handler that wakes the loop
                signal.signal(sig, lambda *_: loop.call_soon_threadsafe(self.stop_event.set))
        self._started = False
        try:
            async with contextlib.AsyncExitStack() as held:  # released in reverse, also on a failed start
                gave_up = await self._run(loop, held)
        except OSError as exc:
            if self._started:
                raise
            # Not foreseen at its call site; still the environment, not a bug: one line, exit 1.
            raise StartFailed(str(exc)) from exc
        log.info("daemon_stopped")
        if gave_up is not None:
            raise gave_up
        kube = self.kube
        if kube is not None and kube.fatal:
            raise NodeMismatch(kube.fatal)
        return 0

    async def _run(
        self, loop: asyncio.AbstractEventLoop, held: contextlib.AsyncExitStack
    ) -> TaskGaveUp | None:
        """Start, serve until stopped, stop; what is taken is pushed on ``held``."""
        s = self.settings
        for note in s.alias_notes:  # aws-node's variables found in the environment: one line each
            note.log(log)
        gave_up: TaskGaveUp | None = None
        datapath = make_datapath(s, self.metrics)
        held.callback(datapath.close)
        kube, reporter = self._kubernetes()
        self.kube = kube
        self.enforcer = None
        if s.enable_network_policy:
            if kube is None:
                raise ConfigError(
                    "ENABLE_NETWORK_POLICY",
                    "true",
                    "true needs the Kubernetes integration, and no in-cluster or KUBECONFIG config was "
                    "found (KUBERNETES_INTEGRATION=auto)",
                )
            from ipamd.datapath.linux.datapath import host_veth_name
            from ipamd.netpol.enforcer import Enforcer, PolicyDatapath

            self.enforcer = Enforcer(
                node_name=kube.node_name,
                strict=s.network_policy_enforcing_mode == "strict",
                veth_name=functools.partial(host_veth_name, s.veth_prefix),
                metrics=self.metrics,
                min_interval=s.network_policy_min_interval,
            )
            datapath = PolicyDatapath(datapath, self.enforcer)
        elif s.datapath == "linux":
            await asyncio.to_thread(_remove_policy_table)
        budget = None
        if s.cloud_api_budget is not None:  # counted from now: the first count precedes the first cloud call
            from ipamd.k8s.nodecount import share_budget

            budget, counter = share_budget(s, kube, self.metrics)  # ConfigError without the integration
            held.callback(counter.stop)
            held.callback(budget.close)  # calls waiting for a share give up: shutdown never waits for them
        # Before the cloud or any state is touched: one daemon per checkpoint and per socket.
        path = Path(s.checkpoint_path)
        self._lock = hold_lock(path)
        held.callback(os.close, self._lock)
        rpc = RpcServer.from_settings(s, self.metrics)  # IPAMD_SOCKET: a Unix socket, or TCP + token file
        prepare_directory(rpc.local_variable, str(rpc.local_file), rpc.local_file.parent)
        rpc.claim()  # refuse if another daemon serves this socket
        held.push_async_callback(rpc.close)
        provider = self.provider if self.provider is not None else await self._make_provider()
        if kube is not None:
            kube.instance_ref = getattr(provider, "instance_ref", None)
        throttle = ev.ThrottleWatch(
            self.metrics, lambda note: reporter.node(ev.CLOUD_THROTTLED, note, action="CallCloudAPI")
        )
        caller = CloudCaller(
            TokenBucket(s.cloud_api_rate, s.cloud_api_burst), RetryPolicy(), observer=throttle, budget=budget
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
        loaded = checkpoint.load(path, now=self.clock())
        for problem in loaded.problems:
            log.error("checkpoint_problem", path=str(path), problem=problem)
        try:  # interfaces this node created and lost in a crash between create and attach
            await leaks.sweep_once(provider, caller, min_age=0, own_only=True, metrics=self.metrics)
        except Exception as exc:  # best effort: the periodic sweep tries again
            log.warning("startup_leak_sweep_failed", error=str(exc), kind=type(exc).__name__)
        views = await asyncio.to_thread(caller.call, "list_interfaces", provider.list_interfaces)
        sync = store.sync_interfaces(views, now=self.clock())
        adopted = await self._adopt(loaded.source, store)
        snapshot = loaded.snapshot if adopted is None else adopted.adoption.snapshot
        report = store.restore(snapshot, now=self.clock())
        if adopted is not None:
            _log_adoption(adopted, orphaned=len(report.orphaned))
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
        # Durable before the datapath touches anything: a crash after an adopted pod's veth was
        # renamed then finds our checkpoint, never aws-node's file a second time.
        committer = checkpoint.GroupCommitter(
            path,
            store.snapshot,
            clock=self.clock,
            initial_generation=loaded.generation,
            observer=self.metrics,
        )
        held.push_async_exit(_closing(committer))
        await committer.commit()
        if adopted is not None:
            self.adopted = adopted = await self._set_aside(adopted)
        await datapath.start(store.interfaces, tuple(provider.network_cidrs), store.assignments())

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
            demand=DemandTracker(s.adaptive_window, now=self.clock()) if s.pool_mode == "adaptive" else None,
        )
        service = IpamService(
            store=store,
            committer=committer,
            manager=manager,
            datapath=datapath,
            metrics=self.metrics,
            clock=self.clock,
            add_wait_timeout=s.add_wait_timeout,
            cooldown_override_wait=s.cooldown_override_wait,
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
        # before any ADD is served; an entry that fails is set aside, never a reason not to start
        drained = await spool.drain(service, str(rpc.local_file), metrics=self.metrics)
        if drained:
            log.info("spooled_dels_drained", count=drained)
        # The HTTP ports before the socket: a port in use stops the start before any pod is served.
        if (metrics_bind := s.metrics_bind) is not None:
            held.callback(_listen("METRICS_BIND", metrics_bind, lambda: self.metrics.serve(metrics_bind)))
        if (introspection_bind := s.introspection_bind) is not None:
            from ipamd import introspection

            routes = introspection_routes(
                service, manager, s, reader, kube, enforcer=self.enforcer, adopted=self.adopted
            )
            healthy = functools.partial(self.healthy, reader)
            serve = functools.partial(introspection.serve, introspection_bind, routes, healthy)
            held.callback(_listen("INTROSPECTION_BIND", introspection_bind, serve))
        rpc.serve(service)
        await rpc.start()
        self._started = True
        self.serving = True
        held.callback(setattr, self, "serving", False)
        log.info("daemon_ready", socket=s.ipamd_socket)
        if kube is not None:
            kube.start()  # after serving: the API is never waited for
            if self.enforcer is not None:
                self.enforcer.start(kube.api)
        tasks = [
            asyncio.create_task(
                supervise("pool_manager", lambda: manager.run(self.stop_event), self.stop_event, self.metrics)
            ),
            asyncio.create_task(
                supervise(
                    "leak_sweep",
                    lambda: leaks.sweep_forever(
                        provider,
                        caller,
                        interval=s.leaked_eni_cleanup_interval,
                        stop=self.stop_event,
                        metrics=self.metrics,
                    ),
                    self.stop_event,
                    self.metrics,
                )
            ),
            asyncio.create_task(
                supervise(
                    "del_spool",
                    lambda: drain_forever(service, str(rpc.local_file), self.stop_event, self.metrics),
                    self.stop_event,
                    self.metrics,
                )
            ),
        ]
        await self.stop_event.wait()
        log.info("daemon_stopping", grace_seconds=s.shutdown_timeout)
        self.serving = False
        await rpc.stop(s.shutdown_timeout)
        if self.enforcer is not None:
            self.enforcer.stop()
            await asyncio.to_thread(self.enforcer.join, 2.0)
        if kube is not None:
            await kube.stop()
        for task in tasks:
            task.cancel()
        for result in await asyncio.gather(*tasks, return_exceptions=True):
            if isinstance(result, TaskGaveUp):
                gave_up = gave_up or result
        return gave_up

    async def _adopt(self, source: str, store: Datastore) -> adoption.Adopted | None:
        """aws-vpc-cni's checkpoint keyed as ours, when this start adopts one
        (docs/adoption-aws-vpc-cni.md)."""
        s = self.settings
        legacy = adoption.path_to_adopt(s, source)
        if legacy is None:
            return None
        try:
            adopted = await adoption.take_over(
                legacy,
                store.interfaces(),
                network=s.cni_network_name,
                cool_until=self.clock() + s.ip_cooldown_period,
                wired=s.datapath == "linux",
            )
        except AwsCheckpointError as exc:
            raise StartFailed(f"AWS_VPC_CNI_CHECKPOINT: {exc}") from None
        if adopted is None:
            log.info("aws_vpc_cni_checkpoint_absent", path=str(legacy))
        self.adopted = adopted
        return adopted

    async def _set_aside(self, adopted: adoption.Adopted) -> adoption.Adopted:
        try:
            adopted = await adoption.set_aside(adopted)
        except OSError as exc:  # our checkpoint exists now: a later start does not adopt again anyway
            log.error("aws_vpc_cni_checkpoint_not_renamed", path=str(adopted.path), error=str(exc))
            return adopted
        log.info("aws_vpc_cni_checkpoint_renamed", path=str(adopted.path), to=str(adopted.renamed_to))
        return adopted

    async def _make_provider(self) -> CloudProvider:
        s = self.settings
        try:
            return await asyncio.to_thread(make_provider, s)
        except OSError as exc:
            if s.cloud_provider != "sim":
                raise
            # the sim cloud keeps its state in a file: one it cannot write is a bad SIM_STATE_PATH
            state = s.effective_sim_state_path
            raise _path_failure(
                "SIM_STATE_PATH", state, "cannot write the sim cloud's state there", exc
            ) from None


def _log_adoption(adopted: adoption.Adopted, *, orphaned: int) -> None:
    a = adopted.adoption
    log.warning(
        "aws_vpc_cni_adopted",
        path=str(adopted.path),
        pods=len(a.pods),
        held=len(a.held),
        orphaned=orphaned,
        gone=len(a.gone),
    )
    for note in a.notes:
        log.warning("aws_vpc_cni_adoption_note", note=note)


def _closing(
    committer: checkpoint.GroupCommitter,
) -> Callable[[type[BaseException] | None, BaseException | None, TracebackType | None], Awaitable[bool]]:
    """Flush the checkpoint on the way out. A failed flush is the error of a clean stop; on a failed
    start it is logged and the start's own error is the one reported."""

    async def close(
        exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> bool:
        try:
            await committer.close()
        except CheckpointError as error:
            if exc is None:
                raise
            log.error("checkpoint_flush_failed", error=str(error))
        return False

    return close


def hold_lock(checkpoint_path: Path) -> int:
    """Hold an exclusive lock next to the checkpoint for the daemon's life: one writer only.

    The lock file stays on disk (removing it would let two daemons lock two different files); the
    lock goes with the descriptor, which the daemon closes when it stops or fails to start.
    """
    value = str(checkpoint_path)
    prepare_directory("CHECKPOINT_PATH", value, checkpoint_path.parent)
    lock_path = f"{checkpoint_path}.lock"
    try:
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o600)
    except OSError as exc:
        raise _path_failure("CHECKPOINT_PATH", value, f"cannot open its lock file {lock_path}", exc) from None
    try:
        _lock_exclusive(fd)
    except OSError:
        os.close(fd)
        allowed = "a checkpoint no other running daemon holds (it is locked)"
        raise ConfigError("CHECKPOINT_PATH", value, allowed) from None
    return fd


def _lock_exclusive(fd: int) -> None:
    """Lock ``fd`` for this process or raise OSError at once: flock(2), or on Windows (no fcntl) a
    byte-range lock on the first byte, which the system also drops when the process ends."""
    try:
        import fcntl
    except ImportError:
        import msvcrt  # type: ignore[import-not-found,unused-ignore]

        msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)  # type: ignore[attr-defined,unused-ignore]
        return
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)


def introspection_routes(
    service: IpamService,
    manager: PoolManager,
    settings: Settings,
    reader: LoopReader,
    kube: k8s.KubeIntegration | None = None,
    *,
    enforcer: Enforcer | None = None,
    adopted: adoption.Adopted | None = None,
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
            "pool_mode": manager.pool_mode,
            "adaptive": manager.adaptive_public(now),  # None in static mode; "why" says why this size
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
        "/v1/policy": lambda: enforcer.public() if enforcer is not None else {"enabled": False},
        "/v1/adoption": lambda: adopted.public() if adopted is not None else {"adopted": False},
    }


def _remove_policy_table() -> None:
    """ENABLE_NETWORK_POLICY=false: a table an earlier run left goes (turning enforcement off is
    the operator's decision). Best effort: no nft on the node means there is no table either."""
    from ipamd.netpol.nft import Nft, NftError

    try:
        if Nft().delete_table():
            log.warning("netpol_table_removed", reason="ENABLE_NETWORK_POLICY=false")
    except (NftError, OSError) as exc:
        log.warning("netpol_table_check_failed", error=str(exc))
