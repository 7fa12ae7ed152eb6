"""List + watch, as client-go's reflector does it, with its state visible.

- The first list asks for ``resourceVersion=0``: served from the API server's watch cache, not a
  consistent read from etcd (a per-node DaemonSet listing consistently is what melts etcd at scale).
- The watch starts from the list's resourceVersion with bookmarks on (the Python client sets neither
  by itself) and resumes from the last resourceVersion seen (an event's or a bookmark's) when the
  server ends it (``timeoutSeconds``) or the connection drops: nothing is missed, nothing re-listed.
- 410 Gone (the resourceVersion left the server's history), as an HTTP answer or an ERROR event,
  makes the reflector re-list: first "not older than" the last version seen, then from the cache.
- Every failure waits a jittered, growing backoff (0.8 s .. 30 s, client-go's figures); the API
  server being slow, failing or absent never reaches the daemon's CNI path.
- ``synced`` is true from the end of a list until the next failure: decisions that rest on "absent
  from the API" (a pod gone) read it, and any doubt counts as not synced.

Runs in its own thread (the client is blocking); ``replace`` and ``apply`` are called from it.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import structlog

from ipamd.k8s.api import ApiError, KubeApi

log = structlog.get_logger("ipamd.k8s.reflector")

BACKOFF_MIN = 0.8
BACKOFF_MAX = 30.0
WATCH_TIMEOUT_MIN = 1800  # seconds the server keeps a watch open (kube-apiserver's own default range)
READ_IDLE_TIMEOUT = 150.0  # no byte for this long (bookmarks come about every minute): reconnect


@dataclass
class ReflectorState:
    synced: bool = False
    resource_version: str | None = None
    relists: int = 0
    restarts: int = 0
    last_error: str | None = None

    def public(self) -> dict[str, Any]:
        return {
            "synced": self.synced,
            "resource_version": self.resource_version,
            "relists": self.relists,
            "restarts": self.restarts,
            "last_error": self.last_error,
        }


class Reflector:
    """Keeps ``replace`` / ``apply`` fed with one collection.

    ``replace(items)`` gets every object of a list; ``apply(type, obj)`` each watch event
    (ADDED, MODIFIED, DELETED). ``on_sync_change(synced)`` is told when ``synced`` flips;
    ``on_listed(resourceVersion)`` after each list has been handed to ``replace``.
    """

    def __init__(
        self,
        api: KubeApi,
        name: str,
        path: str,
        *,
        replace: Callable[[list[dict[str, Any]]], None],
        apply: Callable[[str, dict[str, Any]], None],
        query: Mapping[str, str] | None = None,
        on_sync_change: Callable[[bool], None] | None = None,
        on_error: Callable[[], None] | None = None,
        on_listed: Callable[[str], None] | None = None,
        rng: random.Random | None = None,
        sleep: Callable[[float], bool] | None = None,
        watch_timeout_min: int = WATCH_TIMEOUT_MIN,
        read_idle_timeout: float = READ_IDLE_TIMEOUT,
    ) -> None:
        self.api = api
        self.name = name
        self.path = path
        self.query = dict(query or {})
        self.state = ReflectorState()
        self._replace = replace
        self._apply = apply
        self._on_sync_change = on_sync_change
        self._on_error = on_error
        self._on_listed = on_listed
        self._rng = rng or random.Random()
        self._stop = threading.Event()
        self._sleep = sleep or self._stop.wait
        self._watch_timeout_min = watch_timeout_min
        self._read_idle_timeout = read_idle_timeout
        self._failures = 0
        self._thread: threading.Thread | None = None

    # --- life cycle ----------------------------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self.run, name=f"k8s-{self.name}", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def join(self, timeout: float) -> None:
        if self._thread is not None:
            self._thread.join(timeout)

    def run(self) -> None:
        relist_from: str | None = None
        while not self._stop.is_set():
            try:
                if self.state.resource_version is None:
                    self._list(relist_from)
                    relist_from = None
                self._watch()
                self._failures = 0  # a clean end (the server's timeout): resume at once
            except ApiError as exc:
                if self._stop.is_set():
                    return
                if exc.gone:
                    relist_from = self.state.resource_version
                    self._expire(str(exc))
                    continue
                self._fail(exc)
            except Exception as exc:  # a handler bug must not end the watch for good
                if self._stop.is_set():
                    return
                log.exception("reflector_handler_failed", reflector=self.name)
                self.state.resource_version = None  # re-list: the handler's view may be partial
                self._fail(exc)

    # --- steps ---------------------------------------------------------------------------------

    def _list(self, not_older_than: str | None) -> None:
        query = dict(self.query)
        if not_older_than is not None:
            query.update(resourceVersion=not_older_than, resourceVersionMatch="NotOlderThan")
        else:
            query["resourceVersion"] = "0"
        try:
            body = self.api.request("GET", self.path, query=query, verb="list")
        except ApiError as exc:
            if exc.gone and not_older_than is not None:
                body = self.api.request(
                    "GET", self.path, query={**self.query, "resourceVersion": "0"}, verb="list"
                )
            else:
                raise
        items = body.get("items")
        version = _resource_version(body)
        if not isinstance(items, list) or version is None:
            raise ApiError(200, "BadBody", f"list {self.path}: no items or no metadata.resourceVersion")
        self._replace([i for i in items if isinstance(i, dict)])
        self.state.resource_version = version
        if self._on_listed is not None:
            self._on_listed(version)
        self._set_synced(True)
        log.info("reflector_listed", reflector=self.name, items=len(items), resource_version=version)

    def _watch(self) -> None:
        version = self.state.resource_version
        assert version is not None
        timeout = self._watch_timeout_min + self._rng.randrange(self._watch_timeout_min or 1)
        query = {
            **self.query,
            "resourceVersion": version,
            "allowWatchBookmarks": "true",
            "timeoutSeconds": str(timeout),
        }
        events = self.api.watch(self.path, query, timeout=self._read_idle_timeout)
        self._set_synced(True)  # the stream replays whatever happened since ``version``
        for event in events:
            if self._stop.is_set():
                return
            self._failures = 0  # the stream works: a later cut starts the backoff from its bottom
            kind = event.get("type")
            obj = event.get("object")
            if not isinstance(obj, dict):
                raise ApiError(200, "BadBody", f"watch {self.path}: an event without an object")
            if kind == "ERROR":
                code = obj.get("code")
                raise ApiError(
                    code if isinstance(code, int) else 500,
                    str(obj.get("reason") or "Error"),
                    f"watch {self.path}: {obj.get('message') or 'error event'}",
                )
            new_version = _resource_version(obj)
            if kind in ("ADDED", "MODIFIED", "DELETED"):
                self._apply(kind, obj)
            elif kind != "BOOKMARK":
                log.warning("reflector_unknown_event", reflector=self.name, type=str(kind)[:32])
            if new_version is not None:
                self.state.resource_version = new_version

    def _expire(self, why: str) -> None:
        log.warning("reflector_relist", reflector=self.name, reason=why)
        self.state.relists += 1
        self.state.resource_version = None
        self._set_synced(False)

    def _fail(self, exc: BaseException) -> None:
        self.state.restarts += 1
        self.state.last_error = str(exc)[:300]
        if self._on_error is not None:
            self._on_error()
        self._set_synced(False)
        self._failures += 1
        delay = min(BACKOFF_MAX, BACKOFF_MIN * 2 ** min(self._failures - 1, 8))
        delay *= 0.5 + self._rng.random()  # jitter: 5,000 nodes must not reconnect in step
        retry_after = getattr(exc, "retry_after", None)
        if retry_after:
            delay = max(delay, retry_after)
        log.warning(
            "reflector_failed", reflector=self.name, error=self.state.last_error, retry_in=round(delay, 2)
        )
        self._sleep(delay)

    def _set_synced(self, synced: bool) -> None:
        if synced != self.state.synced:
            self.state.synced = synced
            if synced:
                self.state.last_error = None
            if self._on_sync_change is not None:
                self._on_sync_change(synced)


def _resource_version(obj: Mapping[str, Any]) -> str | None:
    meta = obj.get("metadata")
    version = meta.get("resourceVersion") if isinstance(meta, dict) else None
    return version if isinstance(version, str) and version else None
