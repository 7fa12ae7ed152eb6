"""Pods on this node, and when an assignment's pod is gone for good.

An address is released as ``pod-gone`` only when every one of these holds (any doubt keeps it):
- the pod watch is synced, and has been continuously since the pod was first seen absent;
- no pod of that namespace and name is on the node, whatever its uid (a pod recreated with the same
  name is a doubt: the runtime's DEL for the old sandbox may still come);
- that has been so for ``grace`` seconds (Calico's IPAM GC waits 15 minutes);
- the assignment names its pod (CNI_ARGS carried K8S_POD_NAMESPACE and K8S_POD_NAME) and its
  network namespace path, and that path no longer exists on the node;
- just before the release, all of it again, plus a live GET of the pod answering 404.
The duplicate-IP incidents this must not repeat (antrea#8239, aws-vpc-cni#711) came from trusting
an API view that was late or rebuilt; here the API can only delay a release, never cause one alone.

The index is fed by the reflector's thread and read by the event loop: it is guarded by a lock.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal

import structlog

from ipamd.pool.model import Assignment, AttachmentKey

log = structlog.get_logger("ipamd.k8s.pods")

PodState = Literal["known", "absent", "replaced", "unknown"]


@dataclass(frozen=True, slots=True)
class PodObject:
    namespace: str
    name: str
    uid: str


def parse_pod(obj: dict[str, Any], node_name: str) -> PodObject | None:
    """The identity of a pod object, or None when it is malformed or not on ``node_name``."""
    meta = obj.get("metadata")
    spec = obj.get("spec")
    if not isinstance(meta, dict) or not isinstance(spec, dict):
        return None
    namespace, name, uid = meta.get("namespace"), meta.get("name"), meta.get("uid")
    if not all(isinstance(v, str) and v and len(v) <= 253 for v in (namespace, name, uid)):
        return None
    if spec.get("nodeName") != node_name:
        return None
    return PodObject(str(namespace), str(name), str(uid))


class PodIndex:
    """namespace/name -> uid of the pods on this node, as the watch last said."""

    def __init__(self, node_name: str) -> None:
        self.node_name = node_name
        self._pods: dict[tuple[str, str], str] = {}
        self._lock = threading.Lock()
        self.malformed = 0

    def replace(self, items: list[dict[str, Any]]) -> None:
        pods: dict[tuple[str, str], str] = {}
        for item in items:
            pod = parse_pod(item, self.node_name)
            if pod is None:
                self.malformed += 1
                continue
            pods[(pod.namespace, pod.name)] = pod.uid
        with self._lock:
            self._pods = pods

    def apply(self, kind: str, obj: dict[str, Any]) -> None:
        meta = obj.get("metadata")
        if not isinstance(meta, dict):
            self.malformed += 1
            return
        key = (str(meta.get("namespace", "")), str(meta.get("name", "")))
        with self._lock:
            if kind == "DELETED":
                if self._pods.get(key) in (meta.get("uid"), None) or not meta.get("uid"):
                    self._pods.pop(key, None)  # not a newer pod of the same name
                return
            pod = parse_pod(obj, self.node_name)
            if pod is not None:
                self._pods[key] = pod.uid
            elif _on_other_node(obj, self.node_name):
                self._pods.pop(key, None)
            else:
                self.malformed += 1  # keep what we knew: a bad object proves nothing

    def lookup(self, namespace: str, name: str) -> str | None:
        with self._lock:
            return self._pods.get((namespace, name))

    def __len__(self) -> int:
        with self._lock:
            return len(self._pods)


def _on_other_node(obj: dict[str, Any], node_name: str) -> bool:
    spec = obj.get("spec")
    return isinstance(spec, dict) and isinstance(spec.get("nodeName"), str) and spec["nodeName"] != node_name


def pod_state(assignment: Assignment, index: PodIndex, synced: bool) -> PodState:
    pod = assignment.pod
    if not synced or not pod.namespace or not pod.name:
        return "unknown"
    uid = index.lookup(pod.namespace, pod.name)
    if uid is None:
        return "absent"
    if pod.uid and uid != pod.uid:
        return "replaced"
    return "known"


class PodGoneTracker:
    """Counts how long each assignment's pod has been absent from a synced watch."""

    def __init__(self, grace: float) -> None:
        self.grace = grace
        self.absent_since: dict[AttachmentKey, float] = {}

    def reset(self) -> None:
        """The watch lost sync: absence seen before proves nothing any more."""
        self.absent_since.clear()

    def observe(
        self, assignments: Iterable[Assignment], index: PodIndex, synced: bool, now: float
    ) -> list[Assignment]:
        """Update the clocks; the assignments whose pod has been absent for the whole grace."""
        if not synced:
            self.reset()
            return []
        due: list[Assignment] = []
        live: set[AttachmentKey] = set()
        for a in assignments:
            live.add(a.key)
            if pod_state(a, index, synced) != "absent":
                self.absent_since.pop(a.key, None)
                continue
            since = self.absent_since.setdefault(a.key, now)
            if now - since >= self.grace:
                due.append(a)
        for key in list(self.absent_since):
            if key not in live:  # released by a DEL or GC meanwhile
                del self.absent_since[key]
        return due
