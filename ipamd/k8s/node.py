"""This node's Node object: parsed, checked, and the startup taint's removal.

Everything read from the API is validated here; a malformed field is ignored with a log line (the
daemon keeps its own view), never trusted and never fatal. The one fatal check is ``providerID``:
a Node that names another instance than the one the cloud reports means NODE_NAME is wrong, and a
daemon managing the wrong node's pods must not run.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

import structlog

from ipamd.k8s.api import ApiError, KubeApi

log = structlog.get_logger("ipamd.k8s.node")

TAINT_REMOVAL_TRIES = 5


@dataclass(frozen=True, slots=True)
class TaintSpec:
    key: str
    value: str
    effect: str

    @classmethod
    def parse(cls, text: str) -> TaintSpec:
        """``key[=value]:Effect`` (validated by the settings table)."""
        spec, _, effect = text.rpartition(":")
        key, _, value = spec.partition("=")
        return cls(key, value, effect)

    def matches(self, taint: Any) -> bool:
        """Same key and effect (and value, when one is given), as ``kubectl taint ... -`` matches."""
        if not isinstance(taint, dict):
            return False
        if taint.get("key") != self.key or taint.get("effect") != self.effect:
            return False
        return not self.value or taint.get("value", "") == self.value

    def __str__(self) -> str:
        return f"{self.key}{'=' + self.value if self.value else ''}:{self.effect}"


@dataclass(frozen=True, slots=True)
class NodeInfo:
    name: str
    provider_id: str
    capacity_pods: int | None
    labels: dict[str, str] = field(default_factory=dict)
    annotations: dict[str, str] = field(default_factory=dict)
    taints: tuple[dict[str, Any], ...] = ()
    resource_version: str = ""

    def has_taint(self, spec: TaintSpec) -> bool:
        return any(spec.matches(t) for t in self.taints)


def parse_node(obj: dict[str, Any]) -> NodeInfo:
    """The fields the daemon uses; ``ValueError`` naming the field when the object is unusable."""
    meta = obj.get("metadata")
    if not isinstance(meta, dict) or not isinstance(meta.get("name"), str) or not meta["name"]:
        raise ValueError("Node metadata.name: missing or not a string")
    spec = obj.get("spec") if isinstance(obj.get("spec"), dict) else {}
    status = obj.get("status") if isinstance(obj.get("status"), dict) else {}
    assert isinstance(spec, dict) and isinstance(status, dict)
    provider_id = spec.get("providerID", "")
    if not isinstance(provider_id, str):
        raise ValueError("Node spec.providerID: not a string")
    taints = spec.get("taints") or []
    if not isinstance(taints, list) or not all(isinstance(t, dict) for t in taints):
        raise ValueError("Node spec.taints: not a list of objects")
    return NodeInfo(
        name=meta["name"],
        provider_id=provider_id,
        capacity_pods=_capacity_pods(status),
        labels=_string_map(meta.get("labels"), "metadata.labels"),
        annotations=_string_map(meta.get("annotations"), "metadata.annotations"),
        taints=tuple(taints),
        resource_version=str(meta.get("resourceVersion") or ""),
    )


def _capacity_pods(status: dict[str, Any]) -> int | None:
    capacity = status.get("capacity")
    raw = capacity.get("pods") if isinstance(capacity, dict) else None
    if raw is None:
        return None
    try:
        value = int(str(raw), 10)  # a Quantity; pods is always a plain integer
    except ValueError:
        log.warning("node_capacity_pods_invalid", value=str(raw)[:64])
        return None
    if not 1 <= value <= 10_000:
        log.warning("node_capacity_pods_invalid", value=value)
        return None
    return value


def _string_map(value: Any, where: str) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        raise ValueError(f"Node {where}: not a map of strings")
    return dict(value)


def provider_id_mismatch(provider_id: str, cloud: str, instance_ref: str | None) -> str:
    """Why ``spec.providerID`` does not name this instance; "" when it does or cannot be checked.

    aws: ``aws:///<zone>/<instance id>``; azure: ``azure://<VM or scale-set VM resource id>``. The
    sim cloud has no instance to compare with.
    """
    if not provider_id or not instance_ref or cloud not in ("aws", "azure"):
        return ""
    if cloud == "aws":
        named = provider_id.rstrip("/").rsplit("/", 1)[-1] if provider_id.startswith("aws://") else ""
        ok = named == instance_ref
    else:
        named = provider_id.removeprefix("azure://") if provider_id.startswith("azure://") else ""
        ok = named.lower() == instance_ref.lower()
    if ok:
        return ""
    return (
        f"the Node's spec.providerID {provider_id!r} names {named or 'another cloud'!r}, but this machine "
        f"is {instance_ref!r} by the cloud's instance metadata: NODE_NAME names another node"
    )


class NodeCache:
    """The latest Node object, fed by the node reflector (its thread) and read by the event loop."""

    def __init__(self, node_name: str) -> None:
        self.node_name = node_name
        self._node: NodeInfo | None = None
        self._lock = threading.Lock()
        self.invalid = 0

    def replace(self, items: list[dict[str, Any]]) -> None:
        mine = [i for i in items if (i.get("metadata") or {}).get("name") == self.node_name]
        self._set(mine[0] if mine else None)

    def apply(self, kind: str, obj: dict[str, Any]) -> None:
        if (obj.get("metadata") or {}).get("name") != self.node_name:
            return
        self._set(None if kind == "DELETED" else obj)

    def _set(self, obj: dict[str, Any] | None) -> None:
        info: NodeInfo | None = None
        if obj is not None:
            try:
                info = parse_node(obj)
            except ValueError as exc:
                self.invalid += 1
                log.warning("node_object_invalid", error=str(exc))
                return
        with self._lock:
            self._node = info

    @property
    def node(self) -> NodeInfo | None:
        with self._lock:
            return self._node


def remove_taint(api: KubeApi, node_name: str, spec: TaintSpec) -> bool:
    """Remove ``spec`` from the Node's taints, touching no other taint; False if it was not there.

    ``spec.taints`` has no merge key: a merge or strategic-merge patch would overwrite a taint another
    writer added meanwhile. So, as Cilium does: read, then a JSON patch that ``test``s the list just
    read and ``replace``s it with that list minus ours; a test failure (422) or a conflict (409)
    means someone else wrote: read again and retry.
    """
    path = f"/api/v1/nodes/{node_name}"
    for _ in range(TAINT_REMOVAL_TRIES):
        node = parse_node(api.request("GET", path, verb="get"))
        if not node.has_taint(spec):
            return False
        kept = [t for t in node.taints if not spec.matches(t)]
        patch = [
            {"op": "test", "path": "/spec/taints", "value": list(node.taints)},
            {"op": "replace", "path": "/spec/taints", "value": kept},
        ]
        try:
            api.request("PATCH", path, body=patch, content_type="application/json-patch+json", verb="patch")
        except ApiError as exc:
            if exc.status in (409, 422):
                log.info("startup_taint_conflict_retry", status=exc.status)
                continue
            raise
        return True
    raise ApiError(
        409, "Conflict", f"the taints of {node_name} kept changing during {TAINT_REMOVAL_TRIES} tries"
    )
