"""The node count behind CLOUD_API_BUDGET: how many nodes share the cloud account's buckets.

Query: ``GET /api/v1/nodes?limit=1``, no ``resourceVersion``, no selector. N = ``len(items)`` +
``metadata.remainingItemCount``. Why this one:

- Without ``resourceVersion`` the list is a consistent read. With ``limit`` set kube-apiserver hands it
  to etcd (the cacher's ``shouldDelegateList``: ``hasLimit := pred.Limit > 0 && resourceVersion !=
  "0"``), which reads one key and counts the others (etcd3 store: ``remainingItemCount =
  getResp.Count - pred.Limit``). Newer servers may serve it from the watch cache instead
  (ConsistentListFromCache, 1.31+). Either way one Node is serialised.
- ``resourceVersion=0`` is served from the watch cache whatever the limit (kubernetes#70735 "Use
  watch cache when rv=0 even when limit is set"), and the cache's ``GetList`` (cacher.go, checked at
  1.30/1.31) returns every matching object, with neither ``continue`` nor ``remainingItemCount``: at
  5,000 nodes, megabytes per poll instead of one Node, and no count to read.
- A label or field selector makes etcd leave ``remainingItemCount`` unset (it would count objects
  the selector drops), so none is used: every Node of the cluster counts, Ready or not, those that run
  no cloud-cni pod included. Counting more nodes than spend is the safe error.

A body with ``continue`` set but no ``remainingItemCount`` (servers before 1.15, the RemainingItemCount
gate off) says nothing about N: the poll counts as failed and the last count stays.

Cost: one request per node every ``CLOUD_API_BUDGET_POLL_INTERVAL`` (10 minutes, jittered +-20% so
nodes started together drift apart): 5,000 nodes make about 8.3 requests per second cluster-wide,
each reading one Node.

A count that old is wrong exactly when it matters: in a scale-up the nodes already there keep the
share of the smaller cluster while the new ones spend theirs, and together they overdraw the account
until the old nodes' next poll (the simulated 1,000-node scale-up: 761 throttled calls, 237 of them
delaying a pod, with the 10-minute poll alone; none when busy nodes re-read). So while callers wait
for this node's share (``ClusterBudget.busy``) the count is read again once it is
``CLOUD_API_BUDGET_BUSY_POLL_INTERVAL`` old (30 s), looked at every second: only nodes spending their
share pay for a fresh count, at most one request per node per 30 s (a 1,000-node scale-up: about 50
requests per second while it lasts; an idle cluster: none).

The first count is taken at once, before the daemon's first cloud calls; until
it arrives (or while the API never answers) the budget is shared as if the cluster had
``CLOUD_API_BUDGET_ASSUMED_NODES`` nodes. A failed poll keeps the last count (never an unbounded
rate) and retries after a jittered backoff from 0.8 s, doubling up to the interval.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import structlog

from ipamd.cloud.budget import ClusterBudget, next_poll_in, reconcile_floor
from ipamd.errors import ConfigError
from ipamd.k8s.api import ApiError, KubeApi

if TYPE_CHECKING:
    from ipamd.config import Settings
    from ipamd.k8s.integration import KubeIntegration
    from ipamd.metrics import Metrics

log = structlog.get_logger("ipamd.k8s.nodecount")

NODES_PATH = "/api/v1/nodes"
COUNT_QUERY: Mapping[str, str] = {"limit": "1"}
CHANGE_LOGGED = 0.10  # a count more than 10% away from the last one logged is logged
BUSY_CHECK = 1.0  # seconds between looks at the budget once a busy node's count may be read again


def node_count(body: Mapping[str, Any]) -> int:
    """N from the answer to ``GET /api/v1/nodes?limit=1``; ValueError when it does not tell."""
    items = body.get("items")
    meta = body.get("metadata")
    if not isinstance(items, list) or not isinstance(meta, dict):
        raise ValueError("a node list without items or metadata")
    remaining = meta.get("remainingItemCount")
    if remaining is None:
        if meta.get("continue"):
            raise ValueError("the API server did not report remainingItemCount: the node count is unknown")
        return len(items)
    if isinstance(remaining, bool) or not isinstance(remaining, int) or remaining < 0:
        raise ValueError(f"remainingItemCount {remaining!r} is not a count")
    return len(items) + remaining


def changed_enough(old: int | None, new: int) -> bool:
    """Whether ``new`` is worth a log line after ``old`` (None: never logged)."""
    return old is None or abs(new - old) > CHANGE_LOGGED * old


class NodeCounter:
    """Polls the node count in its own thread and shares ``budget`` among that many nodes."""

    def __init__(
        self,
        api: KubeApi,
        budget: ClusterBudget,
        *,
        interval: float,
        busy_interval: float | None = None,
        reconcile_interval: float | None = None,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
        sleep: Callable[[float], bool] | None = None,
    ) -> None:
        self.api = api
        self.budget = budget
        self.interval = interval
        self.busy_interval = busy_interval  # None: only every ``interval``
        self.reconcile_interval = reconcile_interval  # RECONCILE_INTERVAL: warned about when too short
        self.assumed = budget.nodes
        self._clock = clock  # counted_at, as shown
        self._monotonic = monotonic  # when to poll
        self._counted_mono: float | None = None
        self._rng = rng or random.Random()
        self._stop = threading.Event()
        self._sleep = sleep or self._stop.wait
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self.nodes: int | None = None  # the last count the API gave; None: never counted
        self.counted_at: float | None = None
        self.polls = 0
        self.busy_polls = 0  # polls made early because callers waited for the share
        self.failures = 0  # in a row
        self.last_error: str | None = None
        self._logged: int | None = None

    # --- life cycle ----------------------------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self.run, name="k8s-node-count", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def join(self, timeout: float) -> None:
        if self._thread is not None:
            self._thread.join(timeout)

    def run(self) -> None:
        while not self._stop.is_set():
            try:
                delay = self.poll()
            except Exception:  # a bug must not end the counting for good: the shares stay as they are
                log.exception("node_count_crashed")
                delay = self.interval
            if self._wait(delay):
                return

    def _wait(self, delay: float) -> bool:
        """Sleep until the next poll: ``delay`` from now, or sooner once the count is
        ``busy_interval`` old while callers wait for the share (not while polls fail: the backoff
        rules). True when stopped."""
        due = self._monotonic() + delay
        while True:
            now = self._monotonic()
            if now >= due:
                return False
            with self._lock:
                early = None
                if self.busy_interval is not None and self.failures == 0 and self._counted_mono is not None:
                    early = self._counted_mono + self.busy_interval
            if early is not None and now >= early and self.budget.busy():
                with self._lock:
                    self.busy_polls += 1
                return False
            until = due if early is None else min(due, max(early, now + BUSY_CHECK))
            if self._sleep(until - now):
                return True

    # --- one poll ------------------------------------------------------------------------------

    def poll(self) -> float:
        """Count the nodes once and share the budget accordingly; the seconds to the next poll."""
        try:
            body = self.api.request("GET", NODES_PATH, query=COUNT_QUERY, verb="list")
            count = node_count(body)
        except (ApiError, ValueError) as exc:
            with self._lock:
                self.polls += 1
                self.failures += 1
                self.last_error = str(exc)[:300]
                failures = self.failures
            retry_after = exc.retry_after if isinstance(exc, ApiError) else None
            delay = next_poll_in(self.interval, failures, self._rng.random(), retry_after)
            log.warning(
                "node_count_failed",
                error=self.last_error,
                nodes=self.budget.nodes,
                kept="last count" if self.nodes is not None else "assumed",
                retry_in=round(delay, 2),
            )
            return delay
        nodes = max(1, count)  # this node is one: an empty answer is a race with its registration
        shares = self.budget.set_nodes(nodes)
        with self._lock:
            self.polls += 1
            self.failures = 0
            self.last_error = None
            self.nodes = nodes
            self.counted_at = self._clock()
            self._counted_mono = self._monotonic()
        if changed_enough(self._logged, nodes):
            log.info(
                "node_count_changed",
                nodes=nodes,
                previous=self._logged if self._logged is not None else self.assumed,
                rates={cls: round(share.rate, 6) for cls, share in shares.items()},
            )
            self._logged = nodes
            floor = reconcile_floor(shares, self.budget.provider)
            if self.reconcile_interval is not None and floor is not None and self.reconcile_interval < floor:
                log.warning(
                    "cloud_api_budget_reconcile_too_frequent",
                    nodes=nodes,
                    reconcile_interval=self.reconcile_interval,
                    at_least=round(floor),
                    note="reconciles would take more than half of this node's share of reads, and the pool "
                    "waits behind them: raise RECONCILE_INTERVAL or the read class of CLOUD_API_BUDGET",
                )
        return next_poll_in(self.interval, 0, self._rng.random())

    # --- introspection -------------------------------------------------------------------------

    def public(self) -> dict[str, Any]:
        with self._lock:
            nodes, counted_at = self.nodes, self.counted_at
            polls, failures, last_error = self.polls, self.failures, self.last_error
            busy_polls = self.busy_polls
        return {
            "nodes": self.budget.nodes,
            "source": "api" if nodes is not None else "assumed",
            "counted_at": counted_at,
            "age_seconds": None if counted_at is None else round(max(0.0, self._clock() - counted_at), 3),
            "assumed_nodes": self.assumed,
            "poll_interval_seconds": self.interval,
            "busy_poll_interval_seconds": self.busy_interval,
            "busy": self.budget.busy(),
            "polls": polls,
            "busy_polls": busy_polls,
            "failures_in_a_row": failures,
            "last_error": last_error,
            "classes": self.budget.public(),
        }


def share_budget(
    settings: Settings, kube: KubeIntegration | None, metrics: Metrics | None = None
) -> tuple[ClusterBudget, NodeCounter]:
    """CLOUD_API_BUDGET's ``ClusterBudget`` for the ``CloudCaller``, and its node counter, started.

    ``ConfigError`` when the Kubernetes integration is off (KUBERNETES_INTEGRATION=auto found no
    config): without the API there is no node count to share the budget by.
    """
    assert settings.cloud_api_budget is not None
    if kube is None:
        raise ConfigError(
            "CLOUD_API_BUDGET",
            ",".join(f"{cls}={rate:g}" for cls, rate in settings.cloud_api_budget.items()),
            "set only with the Kubernetes integration, and no in-cluster or KUBECONFIG config was found "
            "(KUBERNETES_INTEGRATION=auto): the node count comes from the API",
        )
    budget = ClusterBudget(
        settings.cloud_api_budget, settings.cloud_provider, nodes=settings.cloud_api_budget_assumed_nodes
    )
    if metrics is not None:
        metrics.watch_budget(budget)
    counter = kube.count_nodes(
        budget,
        interval=settings.cloud_api_budget_poll_interval,
        busy_interval=settings.cloud_api_budget_busy_poll_interval,
        reconcile_interval=settings.reconcile_interval,
    )
    return budget, counter
