"""An events.k8s.io/v1 recorder: the Python client has none.

- ``emit`` never blocks: events go into a bounded queue; a full queue drops the event and counts it.
- Repeats of one condition (same object, type, reason, action) within ``SERIES_WINDOW`` become one
  Event whose ``series`` (count, lastObservedTime) is updated, not a new Event each time; the update
  is written at most every ``SERIES_FLUSH`` seconds, so a storm of repeats costs a write a minute.
  The note stays the first occurrence's: the API server refuses to change an event's note.
- A budget modelled on client-go's spam filter guards the API server: per (object, type), a token
  bucket of ``BURST`` writes refilled at one per ``REFILL`` seconds (25, then one per 5 min). A write
  with no token is not made: a new event is dropped (counted), a series update waits for a token.
- Writes retry a 429 after its Retry-After and a failure with backoff, a few times, then drop.

One worker thread does the writes; ``pump`` does one round of its work (tests drive it with a
simulated clock and no thread).
"""

from __future__ import annotations

import contextlib
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import structlog

from ipamd.events import Event, Regarding
from ipamd.k8s.api import ApiError, KubeApi

log = structlog.get_logger("ipamd.k8s.events")

CONTROLLER = "cloud-cni.io/ipamd"
BURST = 25
REFILL = 300.0
SERIES_WINDOW = 1800.0  # client-go's isomorphic window: a repeat after this starts a new Event
SERIES_FLUSH = 60.0
QUEUE_SIZE = 512
_TRIES = 3
_NOTE_MAX = 1024


@dataclass
class _Bucket:
    tokens: float
    at: float

    def take(self, now: float) -> bool:
        self.tokens = min(BURST, self.tokens + (now - self.at) / REFILL)
        self.at = now
        if self.tokens >= 1:
            self.tokens -= 1
            return True
        return False


@dataclass
class _Series:
    name: str
    namespace: str
    count: int
    first: float
    last: float
    written_count: int
    written_at: float

    @property
    def dirty(self) -> bool:
        return self.count != self.written_count


@dataclass
class RecorderStats:
    emitted: int = 0
    sent: int = 0  # API writes that succeeded
    dropped_queue: int = 0
    dropped_budget: int = 0
    dropped_failed: int = 0
    aggregated: int = 0

    def public(self, queued: int) -> dict[str, Any]:
        return {
            "sent": self.sent,
            "dropped": self.dropped_queue + self.dropped_budget + self.dropped_failed,
            "queued": queued,
            "aggregated": self.aggregated,
        }


Key = tuple[Regarding, str, str, str]  # object, type, reason, action


class EventRecorder:
    def __init__(
        self,
        api: KubeApi,
        instance: str,
        *,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
        queue_size: int = QUEUE_SIZE,
        on_drop: Callable[[str], None] | None = None,
    ) -> None:
        self.api = api
        self.instance = instance[:128]
        self.clock = clock
        self.sleep = sleep
        self.stats = RecorderStats()
        self._queue: queue.Queue[Event | None] = queue.Queue(maxsize=queue_size)
        self._buckets: dict[tuple[Regarding, str], _Bucket] = {}
        self._series: dict[Key, _Series] = {}
        self._on_drop = on_drop
        self._thread: threading.Thread | None = None
        self._closed = threading.Event()
        self._seq = 0

    # --- EventSink -----------------------------------------------------------------------------

    def emit(self, event: Event) -> None:
        self.stats.emitted += 1
        try:
            self._queue.put_nowait(event)
        except queue.Full:
            self._drop("queue", event)

    # --- the worker ----------------------------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="k8s-events", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 2.0) -> None:
        self._closed.set()
        with contextlib.suppress(queue.Full):
            self._queue.put_nowait(None)  # wakes the worker now rather than at its next tick
        if self._thread is not None:
            self._thread.join(timeout)

    def queued(self) -> int:
        return self._queue.qsize()

    def _run(self) -> None:
        while not self._closed.is_set():
            try:
                event = self._queue.get(timeout=SERIES_FLUSH / 4)
            except queue.Empty:
                event = None
                self.flush()
                continue
            if event is None:
                return
            try:
                self.record(event)
            except Exception:  # the recorder must never die: an event is information
                log.exception("event_record_failed", reason=event.reason)

    def pump(self) -> int:
        """Record everything queued now and flush due series updates; returns events taken."""
        taken = 0
        while True:
            try:
                event = self._queue.get_nowait()
            except queue.Empty:
                break
            if event is not None:
                self.record(event)
                taken += 1
        self.flush()
        return taken

    def record(self, event: Event) -> None:
        now = self.clock()
        key: Key = (event.regarding, event.type, event.reason, event.action)
        series = self._series.get(key)
        if series is not None and now - series.last < SERIES_WINDOW:
            series.count += 1
            series.last = now
            self.stats.aggregated += 1
            self._maybe_flush(key, series, now)
            return
        if not self._take(event.regarding, event.type, now):
            self._drop("budget", event)
            return
        created = self._create(event, now)
        if created is not None:
            self._series[key] = created
        self._prune(now)

    def flush(self) -> None:
        now = self.clock()
        for key, series in list(self._series.items()):
            self._maybe_flush(key, series, now)

    # --- writes --------------------------------------------------------------------------------

    def _maybe_flush(self, key: Key, series: _Series, now: float) -> None:
        if not series.dirty or now - series.written_at < SERIES_FLUSH:
            return
        if not self._take(key[0], key[1], now):
            return  # stays dirty: written when the budget allows
        # Only the series: an event's note (like its other fields) is immutable once created.
        body = {"series": {"count": series.count, "lastObservedTime": _micro(series.last)}}
        path = f"/apis/events.k8s.io/v1/namespaces/{series.namespace}/events/{series.name}"
        try:
            self._write("PATCH", path, body, "application/merge-patch+json", "patch")
        except ApiError as exc:
            if exc.not_found:  # expired (events live an hour) or deleted: the next repeat starts anew
                del self._series[key]
                return
            log.warning("event_series_update_failed", name=series.name, error=str(exc))
            series.written_at = now  # try again after the next interval, not in a loop
            return
        series.written_count = series.count
        series.written_at = now

    def _create(self, event: Event, now: float) -> _Series | None:
        r = event.regarding
        namespace = r.namespace if r.kind == "Pod" else "default"  # Node events live in default
        self._seq += 1  # two events in one clock tick (a coarse or simulated clock) need two names
        name = f"{r.name}.{int(now * 1e9) + self._seq:x}"
        regarding: dict[str, Any] = {"apiVersion": "v1", "kind": r.kind, "name": r.name}
        if r.namespace:
            regarding["namespace"] = r.namespace
        if r.uid:
            regarding["uid"] = r.uid
        note = event.note.encode()[:_NOTE_MAX].decode(errors="ignore")
        body = {
            "apiVersion": "events.k8s.io/v1",
            "kind": "Event",
            "metadata": {"name": name, "namespace": namespace},
            "eventTime": _micro(now),
            "reportingController": CONTROLLER,
            "reportingInstance": self.instance,
            "action": event.action[:128],
            "reason": event.reason[:128],
            "regarding": regarding,
            "note": note,
            "type": event.type,
        }
        path = f"/apis/events.k8s.io/v1/namespaces/{namespace}/events"
        try:
            self._write("POST", path, body, None, "create")
        except ApiError as exc:
            if exc.status == 409:  # a name taken in the same nanosecond: the series is the same event
                log.info("event_name_taken", name=name)
            else:
                self._drop("failed", event, str(exc))
            return None
        return _Series(name, namespace, 1, now, now, 1, now)

    def _write(self, method: str, path: str, body: Any, content_type: str | None, verb: str) -> None:
        for attempt in range(1, _TRIES + 1):
            try:
                self.api.request(method, path, body=body, content_type=content_type, verb=verb)
            except ApiError as exc:
                retryable = exc.status in (0, 429) or exc.status >= 500
                if not retryable or attempt == _TRIES:
                    raise
                self.sleep(exc.retry_after if exc.retry_after is not None else 0.5 * 2**attempt)
                continue
            self.stats.sent += 1
            return

    # --- budget --------------------------------------------------------------------------------

    def _take(self, regarding: Regarding, type_: str, now: float) -> bool:
        bucket = self._buckets.get((regarding, type_))
        if bucket is None:
            bucket = self._buckets[(regarding, type_)] = _Bucket(float(BURST), now)
        return bucket.take(now)

    def _drop(self, why: str, event: Event, detail: str = "") -> None:
        if why == "queue":
            self.stats.dropped_queue += 1
        elif why == "budget":
            self.stats.dropped_budget += 1
        else:
            self.stats.dropped_failed += 1
        if self._on_drop is not None:
            self._on_drop(why)
        log.info("event_dropped", why=why, reason=event.reason, detail=detail[:200])

    def _prune(self, now: float) -> None:
        """Forget series and buckets nobody used for a window: a node's pods come and go."""
        if len(self._series) < 256 and len(self._buckets) < 256:
            return
        self._series = {k: s for k, s in self._series.items() if now - s.last < SERIES_WINDOW}
        self._buckets = {
            k: b for k, b in self._buckets.items() if b.tokens < BURST - 1 or now - b.at < REFILL * BURST
        }


def _micro(epoch: float) -> str:
    """A MicroTime as the API server writes it: RFC 3339 with microseconds, UTC."""
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
