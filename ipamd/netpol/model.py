"""networking.k8s.io/v1 NetworkPolicy semantics as a pure reference model: parse and validate the
API's objects, and decide whether one connection is allowed.

This is the oracle the enforcement (nftables, later) and its tests are checked against: the
reachability matrix the upstream e2e suite probes is ``allowed`` over every (source, destination,
port, protocol). The rules honoured (docs/network-policy.md; ../shared/reference/network-policy.md §6):

* a pod is isolated in a direction when any policy with that policyType selects it; an isolated
  pod's allowed traffic is the union of the rules of those policies (additive, order-free); a pod no
  policy of a direction selects is open in that direction;
* policyTypes absent: Ingress always, Egress only when the spec has an egress section;
* empty podSelector: every pod of the policy's namespace; a peer's podSelector alone: the policy's
  namespace; namespaceSelector alone: every pod of the matching namespaces; both in one peer: AND;
  separate peers: OR; ipBlock: its cidr minus its excepts (which must lie inside it), matched on the
  pod IP (after DNAT);
* ports absent: every port and protocol; protocol defaults to TCP; a named port resolves against the
  destination pod's containerPorts (name and protocol), per pod, and matches nothing when that pod
  has no such port; endPort makes an inclusive range from a numeric port;
* traffic between a pod and its own node passes both ways (kubelet probes); hostNetwork
  pods are never selected and never peers by selector (an ipBlock may match their node address);
  a connection between a pod and itself is not judged.

Pure: no I/O, no Kubernetes client. Values in are the API's JSON (``dict``); anything malformed
raises ``PolicyError`` naming the field and what is allowed.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

PROTOCOLS = ("TCP", "UDP", "SCTP")
INGRESS, EGRESS = "Ingress", "Egress"
OPERATORS = ("In", "NotIn", "Exists", "DoesNotExist")


class PolicyError(ValueError):
    """A NetworkPolicy (or pod, namespace) field that is not valid; ``field`` names it."""

    def __init__(self, where: str, message: str) -> None:
        super().__init__(f"{where}: {message}")
        self.field = where


# --- selectors -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Requirement:
    key: str
    operator: str
    values: frozenset[str] = frozenset()

    def matches(self, labels: Mapping[str, str]) -> bool:
        if self.operator == "In":
            return self.key in labels and labels[self.key] in self.values
        if self.operator == "NotIn":
            return self.key not in labels or labels[self.key] not in self.values
        if self.operator == "Exists":
            return self.key in labels
        return self.key not in labels  # DoesNotExist


@dataclass(frozen=True, slots=True)
class Selector:
    """A LabelSelector: every requirement must hold; no requirement matches everything."""

    requirements: tuple[Requirement, ...] = ()

    def matches(self, labels: Mapping[str, str]) -> bool:
        return all(r.matches(labels) for r in self.requirements)


EVERYTHING = Selector()


def parse_selector(raw: Any, where: str) -> Selector:
    if raw is None:
        return EVERYTHING
    _expect(raw, dict, where)
    unknown = set(raw) - {"matchLabels", "matchExpressions"}
    if unknown:
        raise PolicyError(
            where, f"unknown field {sorted(unknown)[0]!r}; allowed: matchLabels, matchExpressions"
        )
    reqs: list[Requirement] = []
    for key, value in (_expect(raw.get("matchLabels") or {}, dict, f"{where}.matchLabels")).items():
        _label(key, value, f"{where}.matchLabels[{key!r}]")
        reqs.append(Requirement(key, "In", frozenset({value})))
    for i, expr in enumerate(_expect(raw.get("matchExpressions") or [], list, f"{where}.matchExpressions")):
        at = f"{where}.matchExpressions[{i}]"
        _expect(expr, dict, at)
        key, op, values = expr.get("key"), expr.get("operator"), expr.get("values")
        if not isinstance(key, str) or not key:
            raise PolicyError(f"{at}.key", "a label key is required")
        if op not in OPERATORS:
            raise PolicyError(f"{at}.operator", f"{op!r}; allowed: {', '.join(OPERATORS)}")
        if op in ("In", "NotIn"):
            if not isinstance(values, list) or not values or not all(isinstance(v, str) for v in values):
                raise PolicyError(f"{at}.values", f"a non-empty list of strings for {op}")
        elif values:
            raise PolicyError(f"{at}.values", f"must be empty for {op}")
        reqs.append(Requirement(key, op, frozenset(values or ())))
    return Selector(tuple(reqs))


# --- policies ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class IpBlock:
    cidr: ipaddress.IPv4Network | ipaddress.IPv6Network
    excepts: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()

    def matches(self, ip: str) -> bool:
        address = ipaddress.ip_address(ip)
        if address.version != self.cidr.version or address not in self.cidr:
            return False
        return not any(address in e for e in self.excepts)


@dataclass(frozen=True, slots=True)
class Peer:
    """One ``from`` / ``to`` entry: selectors (``None`` = field absent) or an ipBlock."""

    pod_selector: Selector | None = None
    namespace_selector: Selector | None = None
    ip_block: IpBlock | None = None


@dataclass(frozen=True, slots=True)
class PortRule:
    protocol: str = "TCP"
    port: int | str | None = None  # None: every port of the protocol; str: a named port
    end_port: int | None = None


@dataclass(frozen=True, slots=True)
class Rule:
    """One ingress or egress rule. ``peers`` empty (the field absent or []) = every peer;
    ``ports`` empty = every port."""

    peers: tuple[Peer, ...] = ()
    ports: tuple[PortRule, ...] = ()


@dataclass(frozen=True, slots=True)
class Policy:
    namespace: str
    name: str
    pod_selector: Selector
    types: frozenset[str]
    ingress: tuple[Rule, ...] = ()
    egress: tuple[Rule, ...] = ()


def parse_policy(obj: Mapping[str, Any]) -> Policy:
    """A networking.k8s.io/v1 NetworkPolicy object as the API returns it."""
    meta = _expect(obj.get("metadata"), dict, "metadata")
    namespace, name = meta.get("namespace"), meta.get("name")
    if not isinstance(namespace, str) or not namespace:
        raise PolicyError("metadata.namespace", "required")
    if not isinstance(name, str) or not name:
        raise PolicyError("metadata.name", "required")
    spec = _expect(obj.get("spec") or {}, dict, "spec")
    selector = parse_selector(spec.get("podSelector") or {}, "spec.podSelector")
    raw_types = spec.get("policyTypes")
    if raw_types is None:
        types = {INGRESS} | ({EGRESS} if "egress" in spec else set())
    else:
        _expect(raw_types, list, "spec.policyTypes")
        for i, t in enumerate(raw_types):
            if t not in (INGRESS, EGRESS):
                raise PolicyError(f"spec.policyTypes[{i}]", f"{t!r}; allowed: Ingress, Egress")
        types = set(raw_types)
    ingress = tuple(
        _rule(r, f"spec.ingress[{i}]", "from")
        for i, r in enumerate(_expect(spec.get("ingress") or [], list, "spec.ingress"))
    )
    egress = tuple(
        _rule(r, f"spec.egress[{i}]", "to")
        for i, r in enumerate(_expect(spec.get("egress") or [], list, "spec.egress"))
    )
    return Policy(namespace, name, selector, frozenset(types), ingress, egress)


def _rule(raw: Any, where: str, peers_key: str) -> Rule:
    _expect(raw, dict, where)
    peers = tuple(
        _peer(p, f"{where}.{peers_key}[{i}]")
        for i, p in enumerate(_expect(raw.get(peers_key) or [], list, f"{where}.{peers_key}"))
    )
    ports = tuple(
        _port(p, f"{where}.ports[{i}]")
        for i, p in enumerate(_expect(raw.get("ports") or [], list, f"{where}.ports"))
    )
    return Rule(peers, ports)


def _peer(raw: Any, where: str) -> Peer:
    _expect(raw, dict, where)
    has = {k for k in ("podSelector", "namespaceSelector", "ipBlock") if raw.get(k) is not None}
    if not has:
        raise PolicyError(where, "one of podSelector, namespaceSelector, ipBlock is required")
    if "ipBlock" in has:
        if len(has) > 1:
            raise PolicyError(where, "ipBlock cannot be combined with podSelector or namespaceSelector")
        return Peer(ip_block=_ip_block(raw["ipBlock"], f"{where}.ipBlock"))
    pods = parse_selector(raw["podSelector"], f"{where}.podSelector") if "podSelector" in has else None
    spaces = (
        parse_selector(raw["namespaceSelector"], f"{where}.namespaceSelector")
        if "namespaceSelector" in has
        else None
    )
    return Peer(pod_selector=pods, namespace_selector=spaces)


def _ip_block(raw: Any, where: str) -> IpBlock:
    _expect(raw, dict, where)
    try:
        cidr = ipaddress.ip_network(raw.get("cidr"), strict=True)
    except (TypeError, ValueError):
        raise PolicyError(
            f"{where}.cidr", f"{raw.get('cidr')!r}; allowed: a CIDR without host bits"
        ) from None
    excepts = []
    for i, e in enumerate(_expect(raw.get("except") or [], list, f"{where}.except")):
        try:
            net = ipaddress.ip_network(e, strict=True)
        except (TypeError, ValueError):
            raise PolicyError(f"{where}.except[{i}]", f"{e!r}; allowed: a CIDR without host bits") from None
        if net.version != cidr.version or not net.subnet_of(cidr):  # type: ignore[arg-type]
            raise PolicyError(f"{where}.except[{i}]", f"{e} must lie inside {cidr}")
        excepts.append(net)
    return IpBlock(cidr, tuple(excepts))


def _port(raw: Any, where: str) -> PortRule:
    _expect(raw, dict, where)
    protocol = raw.get("protocol") or "TCP"
    if protocol not in PROTOCOLS:
        raise PolicyError(f"{where}.protocol", f"{protocol!r}; allowed: {', '.join(PROTOCOLS)}")
    port = raw.get("port")
    end = raw.get("endPort")
    if port is not None:
        if isinstance(port, bool) or not isinstance(port, int | str):
            raise PolicyError(f"{where}.port", "a number 1-65535 or a port name")
        if isinstance(port, int) and not 1 <= port <= 65535:
            raise PolicyError(f"{where}.port", f"{port}; allowed: 1-65535")
        if isinstance(port, str) and not _port_name(port):
            raise PolicyError(
                f"{where}.port", f"{port!r}; allowed: an IANA_SVC_NAME (1-15 lowercase a-z0-9-)"
            )
    if end is not None:
        if not isinstance(port, int):
            raise PolicyError(f"{where}.endPort", "needs a numeric port")
        if isinstance(end, bool) or not isinstance(end, int) or not port <= end <= 65535:
            raise PolicyError(f"{where}.endPort", f"{end!r}; allowed: port ({port}) to 65535")
    return PortRule(protocol, port, end)


def _port_name(name: str) -> bool:
    ok = set("abcdefghijklmnopqrstuvwxyz0123456789-")
    return (
        0 < len(name) <= 15
        and set(name) <= ok
        and any(c.isalpha() for c in name)
        and not name.startswith("-")
        and not name.endswith("-")
        and "--" not in name
    )


# --- the cluster as policies see it ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ContainerPort:
    port: int
    protocol: str = "TCP"
    name: str = ""


@dataclass(frozen=True, slots=True)
class Pod:
    namespace: str
    name: str
    ip: str
    labels: Mapping[str, str] = field(default_factory=dict)
    ports: tuple[ContainerPort, ...] = ()
    host_network: bool = False
    node: str = ""


@dataclass(frozen=True, slots=True)
class Cluster:
    """What policies are judged against: namespaces' labels, pods, policies, and each node's
    addresses (traffic from a pod's own node is allowed in ingress)."""

    namespaces: Mapping[str, Mapping[str, str]]
    pods: Sequence[Pod]
    policies: Sequence[Policy]
    node_ips: Mapping[str, frozenset[str]] = field(default_factory=dict)

    def selecting(self, pod: Pod, direction: str) -> list[Policy]:
        """The policies of ``direction`` that select ``pod`` (none for a hostNetwork pod)."""
        if pod.host_network:
            return []
        return [
            p
            for p in self.policies
            if direction in p.types and p.namespace == pod.namespace and p.pod_selector.matches(pod.labels)
        ]


def allowed(cluster: Cluster, src: Pod | str, dst: Pod | str, port: int, protocol: str = "TCP") -> bool:
    """Whether a new connection from ``src`` to ``dst`` on ``port``/``protocol`` is allowed: by the
    source's egress and the destination's ingress. A ``str`` is an address outside the pods (a
    node, the internet), which policies judge only through ipBlocks."""
    if protocol not in PROTOCOLS:
        raise PolicyError("protocol", f"{protocol!r}; allowed: {', '.join(PROTOCOLS)}")
    if isinstance(src, Pod) and isinstance(dst, Pod) and src == dst:
        return True  # loopback is not judged
    if (
        isinstance(src, Pod)
        and not isinstance(dst, Pod)
        and dst in cluster.node_ips.get(src.node, frozenset())
    ):
        return True  # a pod to its own node: never judged (the packet is the node's, not forwarded)
    if isinstance(src, Pod) and not _allowed_one_way(cluster, src, dst, port, protocol, direction=EGRESS):
        return False
    if isinstance(dst, Pod):
        if not isinstance(src, Pod) and src in cluster.node_ips.get(dst.node, frozenset()):
            return True  # the pod's own node (kubelet probes)
        return _allowed_one_way(cluster, dst, src, port, protocol, direction=INGRESS)
    return True


def _allowed_one_way(
    cluster: Cluster, subject: Pod, other: Pod | str, port: int, protocol: str, *, direction: str
) -> bool:
    policies = cluster.selecting(subject, direction)
    if not policies:
        return True  # not isolated in this direction
    destination = subject if direction == INGRESS else other  # named ports resolve on it
    for policy in policies:
        for rule in policy.ingress if direction == INGRESS else policy.egress:
            if _peer_matches(cluster, policy, rule, other) and _port_matches(
                rule, destination, port, protocol
            ):
                return True
    return False


def _peer_matches(cluster: Cluster, policy: Policy, rule: Rule, other: Pod | str) -> bool:
    if not rule.peers:
        return True
    for peer in rule.peers:
        if peer.ip_block is not None:
            ip = other.ip if isinstance(other, Pod) else other
            if peer.ip_block.matches(ip):
                return True
            continue
        if not isinstance(other, Pod) or other.host_network:
            continue  # selectors only ever match pods (not hostNetwork ones)
        if peer.namespace_selector is None:
            in_namespace = other.namespace == policy.namespace
        else:
            labels = cluster.namespaces.get(other.namespace, {})
            in_namespace = peer.namespace_selector.matches(labels)
        if in_namespace and (peer.pod_selector is None or peer.pod_selector.matches(other.labels)):
            return True
    return False


def _port_matches(rule: Rule, destination: Pod | str, port: int, protocol: str) -> bool:
    if not rule.ports:
        return True
    for spec in rule.ports:
        if spec.protocol != protocol:
            continue
        if spec.port is None:
            return True
        if isinstance(spec.port, str):
            if isinstance(destination, Pod) and any(
                c.name == spec.port and c.protocol == protocol and c.port == port for c in destination.ports
            ):
                return True
            continue
        if spec.port <= port <= (spec.end_port if spec.end_port is not None else spec.port):
            return True
    return False


def parse_policies(objs: Iterable[Mapping[str, Any]]) -> list[Policy]:
    return [parse_policy(o) for o in objs]


def _expect(value: Any, kind: type, where: str) -> Any:
    if not isinstance(value, kind):
        raise PolicyError(where, f"must be {'an object' if kind is dict else 'a list'}")
    return value


def _label(key: Any, value: Any, where: str) -> None:
    if not isinstance(key, str) or not key or not isinstance(value, str):
        raise PolicyError(where, "label keys and values are strings")


__all__ = [
    "EGRESS",
    "EVERYTHING",
    "INGRESS",
    "Cluster",
    "ContainerPort",
    "IpBlock",
    "Peer",
    "Pod",
    "Policy",
    "PolicyError",
    "PortRule",
    "Rule",
    "Selector",
    "allowed",
    "parse_policies",
    "parse_policy",
    "parse_selector",
]
