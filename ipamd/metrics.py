"""Prometheus metrics (prometheus-client) on METRICS_BIND.

Pool gauges are read at scrape time from the datastore, on the event loop thread that owns it
(``LoopReader``), so a scrape always sees one consistent state and the hot path pays nothing for
them. Counters and histograms are updated where things happen.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, TypeVar

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import MetricsHandler
from prometheus_client.registry import Collector

from ipamd.httpserve import serve_in_thread
from ipamd.pool.model import PoolStats

if TYPE_CHECKING:
    from ipamd.cloud.budget import ClusterBudget

T = TypeVar("T")

_RPC_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
_CLOUD_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)

# Why an ADD was given an address still cooling (``ipamd.service``): the label values of
# cloudcni_cooldown_overrides_total.
OVERRIDE_CANNOT_GROW = "cannot_grow"
OVERRIDE_WAIT_EXCEEDED = "wait_exceeded"
COOLDOWN_OVERRIDE_REASONS = (OVERRIDE_CANNOT_GROW, OVERRIDE_WAIT_EXCEEDED)


class LoopReader:
    """Run a function on the event loop's thread from another thread (an HTTP handler)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, timeout: float = 5.0) -> None:
        self._loop = loop
        self._timeout = timeout

    def read(self, fn: Callable[[], T], timeout: float | None = None) -> T:
        async def call() -> T:
            return fn()

        return asyncio.run_coroutine_threadsafe(call(), self._loop).result(timeout or self._timeout)


class _PoolCollector(Collector):
    def __init__(self, stats: Callable[[], PoolStats], max_ips: Callable[[], int]) -> None:
        self._stats = stats
        self._max_ips = max_ips

    def collect(self) -> Iterator[Metric]:
        stats = self._stats()
        for name, doc, value in (
            ("cloudcni_pool_interfaces", "Interfaces (ENIs/NICs) the pool holds", stats.interfaces),
            ("cloudcni_pool_ips_total", "Pod-assignable addresses held", stats.total),
            ("cloudcni_pool_ips_assigned", "Addresses assigned to pods", stats.assigned),
            ("cloudcni_pool_ips_available", "Addresses free now (not cooling)", stats.available),
            ("cloudcni_pool_ips_cooling", "Released addresses in their cool-down", stats.cooling),
            (
                "cloudcni_pool_ips_quarantined",
                "Addresses held back after a lost checkpoint",
                stats.quarantined,
            ),
            ("cloudcni_pool_ips_max", "Most addresses the pool may hold (max pods cap)", self._max_ips()),
        ):
            family = GaugeMetricFamily(name, doc)
            family.add_metric([], value)
            yield family

    def describe(self) -> Iterator[Metric]:
        return iter(())


class _BudgetCollector(Collector):
    """CLOUD_API_BUDGET: the node count the budget is shared by and this node's rate per class."""

    def __init__(self, budget: ClusterBudget) -> None:
        self._budget = budget

    def collect(self) -> Iterator[Metric]:
        nodes = GaugeMetricFamily(
            "cloudcni_cloud_api_budget_nodes",
            "Nodes the cluster-wide cloud API budget is shared by (the API's count, or the assumed one)",
        )
        nodes.add_metric([], self._budget.nodes)
        yield nodes
        rate = GaugeMetricFamily(
            "cloudcni_cloud_api_budget_rate",
            "This node's share of the cluster-wide cloud API budget, calls per second, by action class",
            labels=["class"],
        )
        for cls, share in sorted(self._budget.shares().items()):
            rate.add_metric([cls], share.rate)
        yield rate

    def describe(self) -> Iterator[Metric]:
        return iter(())


class RpcRecorder:
    """Counts and times the calls of one rpc method."""

    __slots__ = ("_duration", "_error", "_ok")

    def __init__(self, ok: Counter, error: Counter, duration: Histogram) -> None:
        self._ok = ok
        self._error = error
        self._duration = duration

    def served(self, *, ok: bool, seconds: float) -> None:
        (self._ok if ok else self._error).inc()
        self._duration.observe(seconds)


class Metrics:
    """Every metric the daemon exports, on its own registry (tests make as many as they like)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.rpc_requests = Counter(
            "cloudcni_rpc_requests",
            "CNI calls served, by method and result",
            ["method", "result"],
            registry=r,
        )
        self.rpc_duration = Histogram(
            "cloudcni_rpc_duration_seconds",
            "Time to serve a CNI call",
            ["method"],
            buckets=_RPC_BUCKETS,
            registry=r,
        )
        self.no_ip_available = Counter(
            "cloudcni_no_ip_available",
            "ADDs answered 'try again later' because no address was free",
            registry=r,
        )
        self.cooldown_overrides = Counter(
            "cloudcni_cooldown_overrides",
            "ADDs served from a cooling address because nothing else was free, by reason: "
            "cannot_grow (the pool cannot grow now) or wait_exceeded (it did not grow within "
            "COOLDOWN_OVERRIDE_WAIT)",
            ["reason"],
            registry=r,
        )
        for reason in COOLDOWN_OVERRIDE_REASONS:
            self.cooldown_overrides.labels(reason)  # exported at 0 before the first override
        self.cloud_calls = Counter(
            "cloudcni_cloud_calls",
            "Cloud API calls by operation and outcome",
            ["operation", "outcome"],
            registry=r,
        )
        self.cloud_duration = Histogram(
            "cloudcni_cloud_call_duration_seconds",
            "Cloud API call latency by operation",
            ["operation"],
            buckets=_CLOUD_BUCKETS,
            registry=r,
        )
        self.cloud_backoff = Counter(
            "cloudcni_cloud_backoff_seconds",
            "Seconds spent backing off, by operation",
            ["operation"],
            registry=r,
        )
        self.pool_actions = Counter(
            "cloudcni_pool_actions",
            "Pool actions carried out, by kind and result",
            ["action", "result"],
            registry=r,
        )
        self.growth_paused = Gauge(
            "cloudcni_pool_growth_paused", "1 while growth is paused (subnet full, limit hit)", registry=r
        )
        self.lost_assignments = Counter(
            "cloudcni_lost_assignments", "Assigned addresses that vanished from the cloud", registry=r
        )
        self.checkpoint_writes = Counter(
            "cloudcni_checkpoint_writes", "Checkpoint writes by result", ["result"], registry=r
        )
        self.checkpoint_duration = Histogram(
            "cloudcni_checkpoint_write_seconds",
            "Durable checkpoint write time",
            buckets=_RPC_BUCKETS,
            registry=r,
        )
        self.checkpoint_batch_size = Histogram(
            "cloudcni_checkpoint_batch_size",
            "Callers answered by one checkpoint write (group commit)",
            buckets=_BATCH_BUCKETS,
            registry=r,
        )
        self.checkpoint_recoveries = Counter(
            "cloudcni_checkpoint_recoveries",
            "Starts that found the checkpoint unusable, by source used",
            ["source"],
            registry=r,
        )
        self.leaked_interfaces_deleted = Counter(
            "cloudcni_leaked_interfaces_deleted",
            "Leaked interfaces of this cluster found and deleted",
            registry=r,
        )
        self.pod_gone_released = Counter(
            "cloudcni_pod_gone_released",
            "Assignments released because their pod was gone from the API and its netns from the node",
            registry=r,
        )
        self.k8s_requests = Counter(
            "cloudcni_k8s_requests",
            "Kubernetes API requests by verb, resource and HTTP status (0: no answer)",
            ["verb", "resource", "code"],
            registry=r,
        )
        self.k8s_events_dropped = Counter(
            "cloudcni_k8s_events_dropped",
            "Kubernetes events not written: queue full, over budget, or failed",
            ["why"],
            registry=r,
        )
        self.task_restarts = Counter(
            "cloudcni_task_restarts",
            "Crashes of a long-lived daemon task (pool_manager, leak_sweep, del_spool) that were restarted",
            ["task"],
            registry=r,
        )
        self.hcn_calls = Counter(
            "cloudcni_hcn_calls",
            "HCN calls of the Windows datapath by HCN function and result (ok, error, not_found, timeout)",
            ["method", "result"],
            registry=r,
        )
        self.spooled_dels_set_aside = Counter(
            "cloudcni_spooled_dels_set_aside",
            "Queued DELs set aside instead of applied: invalid (*.bad) or failed (del-spool/failed/)",
            ["reason"],
            registry=r,
        )
        for reason in ("invalid", "failed"):
            self.spooled_dels_set_aside.labels(reason)
        self.netpol_programming = Histogram(
            "cloudcni_netpol_programming_seconds",
            "NetworkPolicy: from a watch event's arrival to its rules committed in the kernel",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
            registry=r,
        )
        self.netpol_transactions = Counter(
            "cloudcni_netpol_transactions",
            "NetworkPolicy nft transactions: full (the table rebuilt), delta, or error (refused: nothing "
            "applied)",
            ["result"],
            registry=r,
        )
        for result in ("full", "delta", "error"):
            self.netpol_transactions.labels(result)
        self.netpol_objects = Gauge(
            "cloudcni_netpol_objects",
            "NetworkPolicy objects in the kernel's table: chains, rules, sets, set_elements",
            ["kind"],
            registry=r,
        )

    def watch_pool(self, stats: Callable[[], PoolStats], max_ips: Callable[[], int]) -> None:
        self.registry.register(_PoolCollector(stats, max_ips))

    def watch_budget(self, budget: ClusterBudget) -> None:
        self.registry.register(_BudgetCollector(budget))

    # CallObserver (ipamd.cloud.limiter): one sample per attempt.
    def on_call(self, operation: str, outcome: str, seconds: float) -> None:
        self.cloud_calls.labels(operation, outcome).inc()
        self.cloud_duration.labels(operation).observe(seconds)

    def on_backoff(self, operation: str, delay: float) -> None:
        self.cloud_backoff.labels(operation).inc(delay)

    def on_hcn_call(self, method: str, result: str) -> None:
        self.hcn_calls.labels(method, result).inc()

    def on_k8s_request(self, verb: str, resource: str, status: int) -> None:
        self.k8s_requests.labels(verb, resource, str(status)).inc()

    # WriteObserver (ipamd.checkpoint): one sample per write attempt.
    def on_checkpoint_write(self, *, ok: bool, seconds: float, batch: int) -> None:
        self.checkpoint_writes.labels("ok" if ok else "error").inc()
        if ok:
            self.checkpoint_duration.observe(seconds)
        self.checkpoint_batch_size.observe(batch)

    def rpc_recorder(self, method: str) -> RpcRecorder:
        """The children of the rpc metrics for ``method``, looked up once instead of on every call."""
        return RpcRecorder(
            self.rpc_requests.labels(method, "ok"),
            self.rpc_requests.labels(method, "error"),
            self.rpc_duration.labels(method),
        )

    def serve(self, bind: str) -> Callable[[], None]:
        """Serve /metrics on ``host:port``; returns a function that stops the server."""
        return serve_in_thread(bind, MetricsHandler.factory(self.registry), "metrics")
