"""What the daemon tells the cluster: Kubernetes events as plain values, and the sink they go to.

The pool, the manager and the service report through an ``EventSink`` and never wait for it: the
Kubernetes recorder (``ipamd.k8s.recorder``) queues, aggregates and rate-limits; with the
integration off the sink is ``NullSink``. Reasons are stable (docs/kubernetes.md lists them) so that
alerts and ``kubectl get events --field-selector reason=...`` can rely on them.
"""

from __future__ import annotations

import collections
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, Protocol

from ipamd.pool.model import PodRef

EventType = Literal["Normal", "Warning"]

# On the Node
MISSING_CLOUD_PERMISSION = "MissingCloudPermission"
SUBNET_EXHAUSTED = "SubnetExhausted"
INTERFACE_LIMIT_REACHED = "InterfaceLimitReached"
CLOUD_THROTTLED = "CloudThrottled"
CHECKPOINT_RECOVERED = "CheckpointRecovered"
STARTUP_TAINT_TIMEOUT = "StartupTaintTimeout"
STARTUP_TAINT_REMOVED = "StartupTaintRemoved"
ENI_CONFIG_INVALID = "ENIConfigInvalid"
POD_SUBNET_INVALID = "PodSubnetInvalid"
# On a Pod
IP_ALLOCATION_DELAYED = "IPAllocationDelayed"


@dataclass(frozen=True, slots=True)
class Regarding:
    """The object an event is about: the Node (cluster-scoped) or a Pod."""

    kind: Literal["Node", "Pod"]
    name: str
    namespace: str = ""
    uid: str = ""


@dataclass(frozen=True, slots=True)
class Event:
    regarding: Regarding
    type: EventType
    reason: str
    action: str
    note: str


class EventSink(Protocol):
    def emit(self, event: Event) -> None:
        """Queue an event; never blocks, never raises."""
        ...


class NullSink:
    """The integration is off: events go to the log only (the caller logs them already)."""

    def emit(self, event: Event) -> None:
        return None


class NodeReporter:
    """Builds events about this node and its pods and hands them to a sink."""

    def __init__(self, sink: EventSink, node_name: str | None) -> None:
        self.sink = sink
        self.node_name = node_name

    def node(self, reason: str, note: str, *, action: str, type: EventType = "Warning") -> None:
        if self.node_name:
            self.sink.emit(Event(Regarding("Node", self.node_name), type, reason, action, note))

    def pod(self, pod: PodRef, reason: str, note: str, *, action: str, type: EventType = "Warning") -> None:
        if pod.name and pod.namespace:
            regarding = Regarding("Pod", pod.name, pod.namespace, pod.uid)
            self.sink.emit(Event(regarding, type, reason, action, note))


class ThrottleWatch:
    """A cloud-call observer that reports sustained throttling: ``threshold`` throttled answers within
    ``window`` seconds make one ``CloudThrottled`` event (the recorder aggregates repeats).

    It forwards every observation to ``inner`` (the metrics), so it can stand in for it.
    """

    def __init__(
        self,
        inner: object,
        report: Callable[[str], None],
        *,
        threshold: int = 5,
        window: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._inner = inner
        self._report = report
        self._threshold = threshold
        self._window = window
        self._clock = clock
        self._seen: collections.deque[float] = collections.deque()
        self._lock = threading.Lock()

    def on_call(self, operation: str, outcome: str, seconds: float) -> None:
        on_call = getattr(self._inner, "on_call", None)
        if on_call is not None:
            on_call(operation, outcome, seconds)
        if outcome != "throttled":
            return
        now = self._clock()
        with self._lock:
            self._seen.append(now)
            while self._seen and self._seen[0] < now - self._window:
                self._seen.popleft()
            sustained = len(self._seen) >= self._threshold
            if sustained:
                self._seen.clear()
        if sustained:
            self._report(
                f"the cloud API throttled {self._threshold} calls within {self._window:.0f} s "
                f"(last: {operation}); pool changes are slowed down"
            )

    def on_backoff(self, operation: str, delay: float) -> None:
        on_backoff = getattr(self._inner, "on_backoff", None)
        if on_backoff is not None:
            on_backoff(operation, delay)
