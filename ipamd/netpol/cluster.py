"""The cluster as NetworkPolicy enforcement sees it, kept from watch events: pods, namespaces'
labels, policies, and, for every distinct peer selector a policy uses, the pods it selects.

Incremental (Calico's label index, in small): a pod event re-checks that pod against each selector
(O(selectors)); a namespace's label change re-checks that namespace's pods; a new selector scans the
pods once. What changed since the programmer last looked is kept as ``dirty_peers`` and
``local_dirty``, so a pod starting or stopping costs set elements, not a recompile of every set.

Kubernetes objects are validated here (``parse_pod_object``, ``parse_namespace_object``,
``parse_policy_object``): a malformed pod or namespace is skipped and counted (what was known of it
is kept: a bad object proves nothing); a malformed policy isolates the pods its podSelector selects
in the directions it names, with no rule (fail closed on what it was meant to protect), and is
reported. Pure: no I/O; the caller serialises access (``ipamd.netpol.enforcer`` holds a lock).
"""

from __future__ import annotations

import hashlib
import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ipamd.netpol.model import (
    EGRESS,
    EVERYTHING,
    INGRESS,
    PROTOCOLS,
    ContainerPort,
    Peer,
    Pod,
    Policy,
    PolicyError,
    Requirement,
    Selector,
    parse_policy,
    parse_selector,
)

PodKey = tuple[str, str]  # (namespace, name)
TERMINAL_PHASES = ("Succeeded", "Failed")  # their addresses are released: never in a set


# --- peers -----------------------------------------------------------------------------------------


def canonical(selector: Selector | None) -> Selector | None:
    """The same selector whatever order its requirements came in (so equal selectors share a set)."""
    if selector is None:
        return None
    reqs = sorted(set(selector.requirements), key=lambda r: (r.key, r.operator, sorted(r.values)))
    return Selector(tuple(reqs))


@dataclass(frozen=True, slots=True)
class PeerKey:
    """One distinct pod selection: ``namespace`` fixed (a peer podSelector alone selects in the
    policy's namespace) or chosen by ``namespace_selector``; pods chosen by ``pod_selector`` (None:
    every pod of those namespaces)."""

    namespace: str | None
    namespace_selector: Selector | None
    pod_selector: Selector | None

    @classmethod
    def of(cls, policy: Policy, peer: Peer) -> PeerKey:
        if peer.namespace_selector is None:
            return cls(policy.namespace, None, canonical(peer.pod_selector or EVERYTHING))
        return cls(None, canonical(peer.namespace_selector), canonical(peer.pod_selector))

    def matches(self, pod: Pod, namespace_labels: Mapping[str, str]) -> bool:
        if pod.host_network:
            return False  # hostNetwork pods are never peers by selector
        if self.namespace is not None:
            if pod.namespace != self.namespace:
                return False
        elif self.namespace_selector is not None and not self.namespace_selector.matches(namespace_labels):
            return False
        return self.pod_selector is None or self.pod_selector.matches(pod.labels)

    @property
    def set_name(self) -> str:
        return "p-" + _digest(repr(self))

    def describe(self) -> str:
        where = (
            f"namespace {self.namespace}"
            if self.namespace is not None
            else (f"namespaces {_show(self.namespace_selector)}")
        )
        return f"pods {_show(self.pod_selector)} in {where}"


# Every pod of every namespace: the destinations a named port may resolve on when the rule's peer is
# an ipBlock or absent.
ALL_PODS = PeerKey(None, EVERYTHING, None)


@dataclass(frozen=True, slots=True)
class NamedPortKey:
    """Members of ``peer`` with a containerPort named ``name`` for ``protocol``: ip . proto . port."""

    peer: PeerKey
    name: str
    protocol: str

    @property
    def set_name(self) -> str:
        return "n-" + _digest(repr(self))


def _digest(text: str) -> str:
    return hashlib.sha1(text.encode(), usedforsecurity=False).hexdigest()[:12]


def _show(selector: Selector | None) -> str:
    if selector is None or not selector.requirements:
        return "{}"
    parts = []
    for r in selector.requirements:
        if r.operator == "In" and len(r.values) == 1:
            parts.append(f"{r.key}={next(iter(r.values))}")
        elif r.operator in ("Exists", "DoesNotExist"):
            parts.append(("" if r.operator == "Exists" else "!") + r.key)
        else:
            parts.append(f"{r.key} {r.operator.lower()} ({','.join(sorted(r.values))})")
    return "{" + ",".join(parts) + "}"


# --- objects ---------------------------------------------------------------------------------------


def _meta(obj: Any, where: str) -> tuple[str, str, dict[str, str]]:
    if not isinstance(obj, dict):
        raise PolicyError(where, "must be an object")
    meta = obj.get("metadata")
    if not isinstance(meta, dict):
        raise PolicyError(f"{where}.metadata", "must be an object")
    namespace, name = meta.get("namespace", ""), meta.get("name")
    if not isinstance(name, str) or not name or len(name) > 253:
        raise PolicyError(f"{where}.metadata.name", "required, at most 253 characters")
    if not isinstance(namespace, str) or len(namespace) > 63:
        raise PolicyError(f"{where}.metadata.namespace", "a string of at most 63 characters")
    labels = meta.get("labels") or {}
    if not isinstance(labels, dict) or not all(
        isinstance(k, str) and k and isinstance(v, str) for k, v in labels.items()
    ):
        raise PolicyError(f"{where}.metadata.labels", "a map of non-empty string keys to strings")
    return namespace, name, labels


def parse_pod_object(obj: Any) -> Pod:
    """A core/v1 Pod as the API returns it: identity, labels, node, IPv4 address (none while it has
    none or once it has ended), hostNetwork, and its containers' named ports."""
    namespace, name, labels = _meta(obj, "pod")
    if not namespace:
        raise PolicyError("pod.metadata.namespace", "required")
    spec = obj.get("spec") or {}
    status = obj.get("status") or {}
    if not isinstance(spec, dict) or not isinstance(status, dict):
        raise PolicyError("pod.spec", "spec and status must be objects")
    node = spec.get("nodeName") or ""
    if not isinstance(node, str):
        raise PolicyError("pod.spec.nodeName", "a string")
    host_network = spec.get("hostNetwork") is True
    ports: list[ContainerPort] = []
    containers = spec.get("containers") or []
    if not isinstance(containers, list):
        raise PolicyError("pod.spec.containers", "a list")
    for i, c in enumerate(containers):
        raw_ports = c.get("ports") if isinstance(c, dict) else None
        if raw_ports is None:
            continue
        if not isinstance(raw_ports, list):
            raise PolicyError(f"pod.spec.containers[{i}].ports", "a list")
        for j, p in enumerate(raw_ports):
            at = f"pod.spec.containers[{i}].ports[{j}]"
            if not isinstance(p, dict):
                raise PolicyError(at, "must be an object")
            number, proto, port_name = p.get("containerPort"), p.get("protocol") or "TCP", p.get("name") or ""
            if isinstance(number, bool) or not isinstance(number, int) or not 1 <= number <= 65535:
                raise PolicyError(f"{at}.containerPort", f"{number!r}; allowed: 1-65535")
            if proto not in PROTOCOLS:
                raise PolicyError(f"{at}.protocol", f"{proto!r}; allowed: {', '.join(PROTOCOLS)}")
            if not isinstance(port_name, str):
                raise PolicyError(f"{at}.name", "a string")
            ports.append(ContainerPort(number, proto, port_name))
    ip = ""
    if status.get("phase") not in TERMINAL_PHASES and not host_network:
        ip = _pod_ipv4(status)
    return Pod(namespace, name, ip, labels, tuple(ports), host_network, node)


def _pod_ipv4(status: Mapping[str, Any]) -> str:
    candidates = [status.get("podIP")]
    raw = status.get("podIPs")
    if isinstance(raw, list):
        candidates += [p.get("ip") for p in raw if isinstance(p, dict)]
    for c in candidates:
        if isinstance(c, str) and c:
            try:
                address = ipaddress.ip_address(c)
            except ValueError:
                raise PolicyError("pod.status.podIP", f"{c!r}; allowed: an IP address") from None
            if address.version == 4:
                return str(address)
    return ""


def parse_namespace_object(obj: Any) -> tuple[str, dict[str, str]]:
    _, name, labels = _meta(obj, "namespace")
    return name, labels


@dataclass(frozen=True, slots=True)
class BrokenPolicy:
    namespace: str
    name: str
    error: str


def parse_policy_object(obj: Any) -> tuple[Policy, BrokenPolicy | None]:
    """The policy, or, when it is malformed, a policy with its podSelector and types and no rule
    (the pods it selects are isolated: closed, not opened, by a policy we cannot read) and why.
    ``PolicyError`` when not even its name, namespace or podSelector can be read."""
    try:
        return parse_policy(obj), None
    except PolicyError as exc:
        error = str(exc)
    namespace, name, _ = _meta(obj, "networkpolicy")
    if not namespace:
        raise PolicyError("networkpolicy.metadata.namespace", "required")
    spec = obj.get("spec") if isinstance(obj.get("spec"), dict) else {}
    selector = parse_selector(spec.get("podSelector") or {}, "spec.podSelector")
    raw_types = spec.get("policyTypes")
    types = {t for t in raw_types if t in (INGRESS, EGRESS)} if isinstance(raw_types, list) else set()
    if not types:
        types = {INGRESS} | ({EGRESS} if "egress" in spec else set())
    return Policy(namespace, name, selector, frozenset(types)), BrokenPolicy(namespace, name, error)


# --- the state -------------------------------------------------------------------------------------


@dataclass
class ClusterState:
    node_name: str
    pods: dict[PodKey, Pod] = field(default_factory=dict)
    by_namespace: dict[str, set[PodKey]] = field(default_factory=dict)
    namespaces: dict[str, dict[str, str]] = field(default_factory=dict)
    policies: dict[PodKey, Policy] = field(default_factory=dict)
    broken: dict[PodKey, BrokenPolicy] = field(default_factory=dict)
    members: dict[PeerKey, set[PodKey]] = field(default_factory=dict)
    peer_refs: dict[PeerKey, int] = field(default_factory=dict)
    dirty_peers: set[PeerKey] = field(default_factory=set)
    local_dirty: bool = True
    malformed: dict[str, int] = field(default_factory=lambda: {"pods": 0, "namespaces": 0, "policies": 0})
    # Local pods' addresses as the CNI ADD gave them, before the API's status.podIP says so.
    local_ips: dict[PodKey, str] = field(default_factory=dict)

    # --- pods --------------------------------------------------------------------------------

    def replace_pods(self, objs: Iterable[Any]) -> None:
        pods: dict[PodKey, Pod] = {}
        for obj in objs:
            try:
                pod = parse_pod_object(obj)
            except PolicyError:
                self.malformed["pods"] += 1
                continue
            pods[(pod.namespace, pod.name)] = self._with_local_ip(pod)
        self.pods = pods
        self.by_namespace = {}
        for key in pods:
            self.by_namespace.setdefault(key[0], set()).add(key)
        self._rescan_all()

    def apply_pod(self, kind: str, obj: Any) -> None:
        if kind == "DELETED":
            meta = obj.get("metadata") if isinstance(obj, dict) else None
            if not isinstance(meta, dict):
                self.malformed["pods"] += 1
                return
            self.remove_pod((str(meta.get("namespace", "")), str(meta.get("name", ""))))
            return
        try:
            pod = parse_pod_object(obj)
        except PolicyError:
            self.malformed["pods"] += 1
            return
        self.put_pod(pod)

    def put_pod(self, pod: Pod) -> None:
        key = (pod.namespace, pod.name)
        pod = self._with_local_ip(pod)
        old = self.pods.get(key)
        if old == pod:
            return
        self.pods[key] = pod
        self.by_namespace.setdefault(pod.namespace, set()).add(key)
        self._recheck(key, pod, changed=old is None or old.ip != pod.ip or old.ports != pod.ports)
        if pod.node == self.node_name or key in self.local_ips:
            self.local_dirty = True

    def remove_pod(self, key: PodKey) -> None:
        pod = self.pods.pop(key, None)
        if pod is None:
            return
        self.by_namespace.get(key[0], set()).discard(key)
        for peer, members in self.members.items():
            if key in members:
                members.discard(key)
                self.dirty_peers.add(peer)
        if pod.node == self.node_name or key in self.local_ips:
            self.local_dirty = True

    def _with_local_ip(self, pod: Pod) -> Pod:
        ip = self.local_ips.get((pod.namespace, pod.name))
        if ip and not pod.ip and not pod.host_network:
            return Pod(pod.namespace, pod.name, ip, pod.labels, pod.ports, pod.host_network, pod.node)
        return pod

    def set_local_ip(self, key: PodKey, ip: str | None) -> None:
        """The CNI ADD gave this pod ``ip`` (None: its DEL): in sets before the API reports it."""
        if ip is None:
            self.local_ips.pop(key, None)
        else:
            self.local_ips[key] = ip
        self.local_dirty = True
        pod = self.pods.get(key)
        if pod is not None and ip is not None and not pod.ip and not pod.host_network:
            self.put_pod(pod)

    # --- namespaces --------------------------------------------------------------------------

    def replace_namespaces(self, objs: Iterable[Any]) -> None:
        namespaces: dict[str, dict[str, str]] = {}
        for obj in objs:
            try:
                name, labels = parse_namespace_object(obj)
            except PolicyError:
                self.malformed["namespaces"] += 1
                continue
            namespaces[name] = labels
        self.namespaces = namespaces
        self._rescan_all()

    def apply_namespace(self, kind: str, obj: Any) -> None:
        try:
            name, labels = parse_namespace_object(obj)
        except PolicyError:
            self.malformed["namespaces"] += 1
            return
        if kind == "DELETED":
            labels = {}
            self.namespaces.pop(name, None)
        elif self.namespaces.get(name) == labels:
            return
        else:
            self.namespaces[name] = labels
        for key in self.by_namespace.get(name, set()):
            self._recheck(key, self.pods[key], changed=False, namespace_only=True)

    # --- policies ----------------------------------------------------------------------------

    def replace_policies(self, objs: Iterable[Any]) -> None:
        self.policies = {}
        self.broken = {}
        for obj in objs:
            self._put_policy_object(obj)
        self._recount_peers()
        self.local_dirty = True

    def apply_policy(self, kind: str, obj: Any) -> None:
        if kind == "DELETED":
            meta = obj.get("metadata") if isinstance(obj, dict) else None
            if not isinstance(meta, dict):
                self.malformed["policies"] += 1
                return
            key = (str(meta.get("namespace", "")), str(meta.get("name", "")))
            self.policies.pop(key, None)
            self.broken.pop(key, None)
        else:
            self._put_policy_object(obj)
        self._recount_peers()
        self.local_dirty = True

    def _put_policy_object(self, obj: Any) -> None:
        try:
            policy, broken = parse_policy_object(obj)
        except PolicyError:
            self.malformed["policies"] += 1
            return
        key = (policy.namespace, policy.name)
        self.policies[key] = policy
        if broken is None:
            self.broken.pop(key, None)
        else:
            self.broken[key] = broken
            self.malformed["policies"] += 1

    def _recount_peers(self) -> None:
        refs: dict[PeerKey, int] = {}
        for policy in self.policies.values():
            for peer in policy_peers(policy):
                refs[peer] = refs.get(peer, 0) + 1
        for gone in set(self.members) - set(refs):
            del self.members[gone]
            self.dirty_peers.discard(gone)
        for new in set(refs) - set(self.members):
            self.members[new] = {
                key for key, pod in self.pods.items() if new.matches(pod, self.namespaces.get(key[0], {}))
            }
            self.dirty_peers.add(new)
        self.peer_refs = refs

    # --- index -------------------------------------------------------------------------------

    def _recheck(self, key: PodKey, pod: Pod, *, changed: bool, namespace_only: bool = False) -> None:
        labels = self.namespaces.get(key[0], {})
        for peer, members in self.members.items():
            if namespace_only and peer.namespace_selector is None:
                continue
            inside = peer.matches(pod, labels)
            if inside != (key in members):
                if inside:
                    members.add(key)
                else:
                    members.discard(key)
                self.dirty_peers.add(peer)
            elif inside and changed:
                self.dirty_peers.add(peer)

    def _rescan_all(self) -> None:
        for peer in self.members:
            self.members[peer] = {
                key for key, pod in self.pods.items() if peer.matches(pod, self.namespaces.get(key[0], {}))
            }
        self.dirty_peers = set(self.members)
        self.local_dirty = True

    def member_ips(self, peer: PeerKey) -> frozenset[str]:
        return frozenset(ip for key in self.members.get(peer, ()) if (ip := self.pods[key].ip))

    def named_port_elements(self, key: NamedPortKey) -> frozenset[str]:
        proto = key.protocol.lower()
        out = set()
        for pod_key in self.members.get(key.peer, ()):
            pod = self.pods[pod_key]
            if not pod.ip:
                continue
            for c in pod.ports:
                if c.name == key.name and c.protocol == key.protocol:
                    out.add(f"{pod.ip} . {proto} . {c.port}")
        return frozenset(out)

    def selecting(self, pod: Pod, direction: str) -> list[Policy]:
        if pod.host_network:
            return []
        return sorted(
            (
                p
                for p in self.policies.values()
                if direction in p.types
                and p.namespace == pod.namespace
                and p.pod_selector.matches(pod.labels)
            ),
            key=lambda p: p.name,
        )


def policy_peers(policy: Policy) -> set[PeerKey]:
    """Every pod selection a policy's rules name (ALL_PODS too when an egress rule has a named port:
    its destinations resolve the name)."""
    out: set[PeerKey] = set()
    for rule in policy.ingress:
        out.update(PeerKey.of(policy, p) for p in rule.peers if p.ip_block is None)
    for rule in policy.egress:
        out.update(PeerKey.of(policy, p) for p in rule.peers if p.ip_block is None)
        if any(isinstance(port.port, str) for port in rule.ports) and (
            not rule.peers or any(p.ip_block is not None for p in rule.peers)
        ):
            out.add(ALL_PODS)
    return out


__all__ = [
    "ALL_PODS",
    "BrokenPolicy",
    "ClusterState",
    "NamedPortKey",
    "PeerKey",
    "PodKey",
    "Requirement",
    "canonical",
    "parse_namespace_object",
    "parse_pod_object",
    "parse_policy_object",
    "policy_peers",
]
