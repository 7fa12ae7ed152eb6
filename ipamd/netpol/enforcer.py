"""NetworkPolicy enforcement in the daemon: watches in, nftables out.

- Three watches on the Kubernetes integration's reflector (resourceVersion resume, re-list on 410,
  backoff): NetworkPolicies, Namespaces, and every Pod of the cluster (peers live on other nodes).
  They feed ``ClusterState`` under a lock, on their threads.
- One programmer thread gathers what arrived for ``min_interval`` (one transaction for a burst),
  compiles (``ipamd.netpol.compile``) and applies the difference with ``nft -f`` (``ipamd.netpol.nft``).
- Nothing is programmed until all three watches have listed once: a table left by the previous run
  stays as it was (no window where a denied flow passes), then is replaced atomically.
- An API outage keeps the last programmed state: a watch that fails delivers nothing; its re-list
  later replaces what it knew. A failed transaction changes nothing in the kernel; the next attempt
  rebuilds the whole table (backoff 0.5 s .. 30 s).
- The CNI path (``PolicyDatapath`` wraps the Linux datapath): in strict mode ADD returns only once
  the pod's rules are in the kernel, or it is in the pending sets (deny) when the watch has not seen
  the pod yet; in standard mode the pod is open until the programmer gets to it (one interval).
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import structlog

from ipamd.netpol.cluster import ClusterState
from ipamd.netpol.compile import TABLE, Compiler, LocalPod, Ruleset
from ipamd.netpol.nft import Nft, NftError, base_rules, full_script, script, skeleton
from ipamd.pool.model import Assignment, AttachmentKey

if TYPE_CHECKING:
    from ipamd.datapath.base import Datapath, PodDns, PodWiring
    from ipamd.k8s.api import KubeApi
    from ipamd.k8s.reflector import Reflector
    from ipamd.metrics import Metrics
    from ipamd.pool.model import InterfaceView

log = structlog.get_logger("ipamd.netpol")

WATCHES = {
    "networkpolicies": "/apis/networking.k8s.io/v1/networkpolicies",
    "namespaces": "/api/v1/namespaces",
    "netpol-pods": "/api/v1/pods",
}
BACKOFF_MIN, BACKOFF_MAX = 0.5, 30.0


@dataclass
class ProgramStats:
    transactions: int = 0
    full: int = 0
    failures: int = 0
    last_error: str | None = None
    last_programmed: float | None = None
    last_seconds: float = 0.0
    programmed_rv: dict[str, int] = field(default_factory=dict)


class Enforcer:
    def __init__(
        self,
        *,
        node_name: str,
        strict: bool,
        veth_name: Callable[[AttachmentKey], str],
        nft: Nft | None = None,
        metrics: Metrics | None = None,
        min_interval: float = 0.05,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.node_name = node_name
        self.strict = strict
        self.veth_name = veth_name
        self.nft = nft or Nft()
        self.metrics = metrics
        self.min_interval = min_interval
        self.clock = clock
        self.state = ClusterState(node_name)
        self.compiler = Compiler()
        self.current: Ruleset | None = None  # what the kernel holds; None: unknown, rebuild it all
        self.stats = ProgramStats()
        self._local: dict[AttachmentKey, LocalPod] = {}
        self._lock = threading.Lock()  # the state, the local pods, the pending events
        self._program_lock = threading.RLock()  # one transaction at a time, and ``current``
        self._wake = threading.Condition(self._lock)
        self._events: list[tuple[float, str, int]] = []  # (arrival, watch, resourceVersion)
        self._dirty = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._reflectors: list[Reflector] = []
        self._listed: set[str] = set()
        self._failures = 0
        self.programmed = threading.Condition(threading.Lock())  # notified after each transaction

    # --- life cycle ----------------------------------------------------------------------------

    def seed(self, assignments: Iterable[Assignment]) -> None:
        """The pods this node wired before the start (the checkpoint's assignments)."""
        with self._lock:
            for a in assignments:
                self._register(a)

    def prepare(self) -> None:
        """Before serving. Strict: make sure the table's skeleton exists, so a pending pod is denied
        even before the first full program (an existing table is left as it is)."""
        if self.strict and not self.nft.table_exists():
            self.nft.run("\n".join([*skeleton(), *base_rules()]) + "\n")
            log.info("netpol_skeleton_created", table=TABLE)

    def start(self, api: KubeApi, reflector_factory: Callable[..., Reflector] | None = None) -> None:
        if reflector_factory is None:
            from ipamd.k8s.reflector import Reflector

            reflector_factory = Reflector
        handlers = {
            "networkpolicies": (self.state.replace_policies, self.state.apply_policy),
            "namespaces": (self.state.replace_namespaces, self.state.apply_namespace),
            "netpol-pods": (self.state.replace_pods, self.state.apply_pod),
        }
        for name, path in WATCHES.items():
            replace, apply = handlers[name]
            self._reflectors.append(
                reflector_factory(
                    api,
                    name,
                    path,
                    replace=self._replacer(name, replace),
                    apply=self._applier(name, apply),
                    on_listed=self._lister(name),
                )
            )
        self._thread = threading.Thread(target=self._run, name="netpol-programmer", daemon=True)
        self._thread.start()
        for r in self._reflectors:
            r.start()

    def stop(self) -> None:
        self._stop.set()
        for r in self._reflectors:
            r.stop()
        with self._lock:
            self._wake.notify_all()

    def join(self, timeout: float) -> None:
        for r in self._reflectors:
            r.join(timeout)
        if self._thread is not None:
            self._thread.join(timeout)

    # --- watch callbacks (reflector threads) ---------------------------------------------------

    def _replacer(self, name: str, replace: Callable[[list[dict[str, Any]]], None]) -> Callable[..., None]:
        def call(items: list[dict[str, Any]]) -> None:
            with self._lock:
                replace(items)
                self._listed.add(name)
                self._note(name, None)

        return call

    def _lister(self, name: str) -> Callable[[str], None]:
        def call(version: str) -> None:
            with self._lock:  # the list's version: what was replaced is as new as that
                self._events.append((self.clock(), name, int(version) if version.isdigit() else -1))

        return call

    def _applier(self, name: str, apply: Callable[[str, dict[str, Any]], None]) -> Callable[..., None]:
        def call(kind: str, obj: dict[str, Any]) -> None:
            with self._lock:
                apply(kind, obj)
                self._note(name, obj)

        return call

    def _note(self, name: str, obj: dict[str, Any] | None) -> None:
        rv = -1
        meta = obj.get("metadata") if isinstance(obj, dict) else None
        raw = meta.get("resourceVersion") if isinstance(meta, dict) else None
        if isinstance(raw, str) and raw.isdigit():
            rv = int(raw)
        self._events.append((self.clock(), name, rv))
        self._dirty = True
        self._wake.notify()

    # --- the CNI path --------------------------------------------------------------------------

    def _register(self, a: Assignment) -> LocalPod | None:
        if not a.pod.namespace or not a.pod.name:
            return None  # no pod name in CNI_ARGS: nothing can select it
        lp = LocalPod(a.pod.namespace, a.pod.name, a.ip, self.veth_name(a.key))
        self._local[a.key] = lp
        self.state.set_local_ip((lp.namespace, lp.name), lp.ip)
        return lp

    def pod_added(self, a: Assignment) -> None:
        """A pod was wired. Strict: return once its rules (or its deny) are in the kernel."""
        with self._lock:
            lp = self._register(a)
            self._dirty = True
            self._wake.notify()
        if lp is None or not self.strict:
            return
        with self._program_lock:  # no full program may land between the check and the write
            if self.current is None and not self._all_listed():
                # Before the first full program: deny it directly in the existing table (which the
                # first full program replaces whole, from what the watches say).
                self.nft.run(
                    f"add element inet {TABLE} pending-ips {{ {lp.ip} }}\n"
                    f'add element inet {TABLE} pending-veths {{ "{lp.veth}" }}\n'
                    f'add element inet {TABLE} local-veths {{ "{lp.veth}" }}\n'
                    f'add element inet {TABLE} local-sources {{ "{lp.veth}" . {lp.ip} }}\n'
                )
                return
            self.program()

    def pod_removed(self, a: Assignment) -> None:
        with self._lock:
            lp = self._local.pop(a.key, None)
            if lp is not None and not any(
                (p.namespace, p.name) == (lp.namespace, lp.name) for p in self._local.values()
            ):
                self.state.set_local_ip((lp.namespace, lp.name), None)
            self._dirty = True
            self._wake.notify()

    # --- programming ---------------------------------------------------------------------------

    def _all_listed(self) -> bool:
        return len(self._listed) == len(WATCHES)

    def _run(self) -> None:
        while not self._stop.is_set():
            with self._lock:
                while not self._stop.is_set() and not (self._dirty and self._all_listed()):
                    self._wake.wait(1.0)
            if self._stop.is_set():
                return
            if self._stop.wait(self.min_interval):  # gather a burst into one transaction
                return
            try:
                self.program()
            except NftError:
                delay = min(BACKOFF_MAX, BACKOFF_MIN * 2 ** min(self._failures - 1, 8))
                self._stop.wait(delay)
            except Exception:  # a bug must not end enforcement; the kernel keeps its rules
                log.exception("netpol_program_failed")
                self._stop.wait(BACKOFF_MAX)

    def program(self) -> bool:
        """Compile and apply what changed; True when a transaction ran. Raises NftError."""
        with self._program_lock:
            with self._lock:
                if not self._all_listed():
                    return False
                self._dirty = False
                events, self._events = self._events, []
            started = self.clock()
            try:
                with self._lock:
                    desired = self.compiler.compile(
                        self.state, list(self._local.values()), strict=self.strict
                    )
                full = self.current is None
                text = full_script(desired) if full else script(self.current or Ruleset(), desired)
                if text:
                    self.nft.run(text)
            except Exception as exc:  # nft refused it, or a bug: nothing applied, nothing forgotten
                self._failed(exc, events)
                raise
            done = self.clock()
            self.current = desired
            self._failures = 0
            self._record(events, desired, full=full, ran=bool(text), started=started, done=done)
            return bool(text)

    def _failed(self, exc: Exception, events: list[tuple[float, str, int]]) -> None:
        self._failures += 1
        self.current = None  # rebuild it all next time
        if not isinstance(exc, NftError):
            self.compiler.invalidate()  # a compile that failed half way may have left its caches stale
        self.stats.failures += 1
        self.stats.last_error = str(exc)[:500]
        with self._lock:
            self._events = events + self._events
            self._dirty = True
        if self.metrics is not None:
            self.metrics.netpol_transactions.labels("error").inc()
        log.error("netpol_program_failed", error=self.stats.last_error, failures=self._failures)

    def _record(
        self,
        events: list[tuple[float, str, int]],
        desired: Ruleset,
        *,
        full: bool,
        ran: bool,
        started: float,
        done: float,
    ) -> None:
        stats = self.stats
        if ran:
            stats.transactions += 1
            stats.full += full
            stats.last_seconds = done - started
        stats.last_programmed = time.time()
        stats.last_error = None
        for _arrived, name, rv in events:
            if rv > stats.programmed_rv.get(name, -1):
                stats.programmed_rv[name] = rv
        if self.metrics is not None:
            if ran:
                self.metrics.netpol_transactions.labels("full" if full else "delta").inc()
            for arrived, _, _ in events:
                self.metrics.netpol_programming.observe(done - arrived)
            for kind, count in desired.objects().items():
                self.metrics.netpol_objects.labels(kind).set(count)
        if full:
            log.info("netpol_table_rebuilt", seconds=round(done - started, 4), **desired.objects())
        with self.programmed:
            self.programmed.notify_all()

    # --- introspection -------------------------------------------------------------------------

    def public(self) -> dict[str, Any]:
        current = self.current
        with self._lock:
            local = sorted(self._local.values(), key=lambda p: (p.namespace, p.name))
            policies = len(self.state.policies)
            broken = [
                {"namespace": b.namespace, "name": b.name, "error": b.error}
                for b in self.state.broken.values()
            ]
            malformed = dict(self.state.malformed)
        pods = [_pod_view(lp, current) for lp in local]
        return {
            "enabled": True,
            "mode": "strict" if self.strict else "standard",
            "table": f"inet {TABLE}",
            "programmed": current is not None,
            "watches": {r.name: r.state.public() for r in self._reflectors},
            "policies": policies,
            "broken_policies": broken,
            "malformed_objects": malformed,
            "transactions": {
                "total": self.stats.transactions,
                "full_rebuilds": self.stats.full,
                "failures": self.stats.failures,
                "last_error": self.stats.last_error,
                "last_seconds": round(self.stats.last_seconds, 6),
            },
            "objects": current.objects() if current is not None else None,
            # per watch, the newest resourceVersion whose effect is in the kernel
            "programmed_resource_versions": dict(self.stats.programmed_rv),
            "pods": pods,
        }


def _pod_view(lp: LocalPod, current: Ruleset | None) -> dict[str, Any]:
    view: dict[str, Any] = {"pod": f"{lp.namespace}/{lp.name}", "ip": lp.ip, "veth": lp.veth}
    if current is None:
        view["state"] = "not programmed yet"
        return view
    if lp.ip in current.pending_ips:
        view["state"] = "pending (strict: denied until the watch has seen it)"
        return view
    key = f"{lp.namespace}/{lp.name}"
    selected = current.selected_by.get(key, {})
    if key in current.unseen:
        view["state"] = "open (not seen in the API yet)"
        return view
    view["state"] = "isolated" if selected else "open (no policy selects it)"
    for direction, chain in (("Ingress", f"i-{lp.veth}"), ("Egress", f"e-{lp.veth}")):
        if direction not in selected:
            continue
        rules = current.chains.get(chain, ())
        sets = sorted({word[1:] for rule in rules for word in rule.split() if word.startswith("@")})
        view[direction.lower()] = {
            "policies": selected[direction],
            "chain": chain,
            "rules": len(rules),
            "set_elements": {name: len(current.sets[name][1]) for name in sets if name in current.sets},
        }
    return view


class PolicyDatapath:
    """The Linux datapath with enforcement around it: a pod's rules follow its wiring."""

    def __init__(self, inner: Datapath, enforcer: Enforcer) -> None:
        self.inner = inner
        self.enforcer = enforcer
        self.name = inner.name

    async def start(
        self,
        views: Callable[[], Iterable[InterfaceView]],
        network_cidrs: Sequence[str],
        assignments: Sequence[Assignment],
    ) -> None:
        import asyncio

        self.enforcer.seed(assignments)
        await asyncio.to_thread(self.enforcer.prepare)
        await self.inner.start(views, network_cidrs, assignments)

    async def sync_interfaces(self, views: Iterable[InterfaceView]) -> None:
        await self.inner.sync_interfaces(views)

    async def remove_leftovers(
        self,
        assignments: Callable[[], Sequence[Assignment]],
        views: Callable[[], Sequence[InterfaceView]],
    ) -> None:
        await self.inner.remove_leftovers(assignments, views)

    def close(self) -> None:
        self.inner.close()

    async def add_pod(self, assignment: Assignment, *, dns: PodDns | None = None) -> PodWiring:
        import asyncio

        from ipamd.datapath.base import NO_DNS

        wiring = await self.inner.add_pod(assignment, dns=dns or NO_DNS)
        added = asyncio.ensure_future(asyncio.to_thread(self.enforcer.pod_added, assignment))
        try:
            await asyncio.shield(added)
        except BaseException:
            # ADD fails whole: no wired pod without its rules. On cancellation the thread still
            # runs: let it finish first, so the pod cannot be registered after it is removed.
            with contextlib.suppress(BaseException):
                await added
            await self.inner.del_pod(assignment)
            self.enforcer.pod_removed(assignment)
            raise
        return wiring

    async def del_pod(self, assignment: Assignment) -> None:
        await self.inner.del_pod(assignment)
        self.enforcer.pod_removed(assignment)

    async def check_pod(self, assignment: Assignment) -> None:
        await self.inner.check_pod(assignment)


__all__ = ["WATCHES", "Enforcer", "PolicyDatapath"]
