"""From the cluster state to the nftables objects of one table (what should be in the kernel).

The table (``inet cloud-cni-netpol``), as docs/network-policy.md draws it::

    chain postrouting  (filter, hook postrouting, priority srcnat - 5; policy accept)
        ct state established,related accept      replies of allowed connections
        ip saddr @pending-ips drop               strict mode: a new pod not yet programmed
        ip saddr vmap @egress                    a local pod's egress chain (return = allowed)
        fib saddr type local accept              the node itself (kubelet probes), hostNetwork pods
        oifname @pending-veths drop
        oifname vmap @ingress                    a local pod's ingress chain, by its host veth

Why postrouting: it is the one hook every packet toward or from a pod passes after DNAT, with
kube-proxy in iptables mode (DNAT in prerouting / output) and in IPVS mode (IPVS rewrites in
LOCAL_IN and sends through LOCAL_OUT: it never traverses FORWARD), and before SNAT (srcnat, 100), so
the pod's own source address is still there. In postrouting the input interface is not known, so
egress is found by the pod's source address (the datapath's strict reverse-path filter on the host
veth keeps a pod from using another's); ingress by the output interface, the pod's host veth.

And one rule in a prerouting chain (priority raw) keeps each local pod to its own source address
(``iifname @local-veths iifname . ip saddr != @local-sources drop``): the kernel's reverse-path
filter drops such packets on an address-less veth only while rp_filter is on (1 or 2); with it off
(some nodes run so) a pod could send with another local pod's address and be judged by that pod's
egress.

Per local pod isolated in a direction, one chain: ``i-<veth>`` (rules ``... accept``) or
``e-<veth>`` (rules ``... return``: egress allowed, go on to the destination's ingress), each ending
in ``counter drop``. Peers chosen by selectors are named sets (``p-<hash>``, one per distinct
selection, shared by every rule naming it); an egress named port is a set of ``ip . proto . port``
(``n-<hash>``) over the peer's pods that have that port. A pod starting or stopping changes elements.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ipamd.netpol.cluster import ALL_PODS, ClusterState, NamedPortKey, PeerKey
from ipamd.netpol.model import EGRESS, INGRESS, IpBlock, Pod, Policy, PortRule, Rule

TABLE = "cloud-cni-netpol"
FAMILY = "inet"
HOOK_PRIORITY = "srcnat - 5"
SET_IPV4 = "ipv4_addr"
SET_NAMED_PORT = "ipv4_addr . inet_proto . inet_service"
BASE_RULES = (
    "ct state established,related accept",
    "ip saddr @pending-ips drop",
    "ip saddr vmap @egress",
    "fib saddr type local accept",
    "oifname @pending-veths drop",
    "oifname vmap @ingress",
)
# Before anything else, a packet from a local pod's veth must carry that pod's address: egress is
# judged by source address (postrouting has no input interface), so a pod must not borrow another's.
PREROUTING_RULES = ("iifname @local-veths iifname . ip saddr != @local-sources drop",)
PREROUTING_PRIORITY = "raw"
# Sets and maps the base chains name: always present, contents diffed like any other.
FIXED_SETS = {
    "pending-ips": SET_IPV4,
    "pending-veths": "ifname",
    "local-veths": "ifname",
    "local-sources": "ifname . ipv4_addr",
}
FIXED_MAPS = {"egress": "ipv4_addr : verdict", "ingress": "ifname : verdict"}


@dataclass(frozen=True, slots=True)
class LocalPod:
    """A pod this node wired: from the daemon's assignments (the CNI ADD's view)."""

    namespace: str
    name: str
    ip: str
    veth: str


@dataclass
class Ruleset:
    """What the table holds, apart from its fixed skeleton: set name -> (type, elements); chain name
    -> rules; the two dispatch maps (key -> verdict)."""

    sets: dict[str, tuple[str, frozenset[str]]] = field(default_factory=dict)
    chains: dict[str, tuple[str, ...]] = field(default_factory=dict)
    ingress: dict[str, str] = field(default_factory=dict)
    egress: dict[str, str] = field(default_factory=dict)
    pending_ips: frozenset[str] = frozenset()
    pending_veths: frozenset[str] = frozenset()
    local_veths: frozenset[str] = frozenset()
    local_sources: frozenset[str] = frozenset()  # '"veth" . ip'
    # Per local pod (namespace/name): the policies selecting it, by direction (introspection).
    selected_by: dict[str, dict[str, list[str]]] = field(default_factory=dict)
    unseen: frozenset[str] = frozenset()  # local pods (namespace/name) the watch has not seen

    def objects(self) -> dict[str, int]:
        return {
            "chains": len(self.chains) + 2,
            "rules": sum(len(r) for r in self.chains.values()) + len(BASE_RULES) + len(PREROUTING_RULES),
            "sets": len(self.sets) + len(FIXED_SETS) + len(FIXED_MAPS),
            "set_elements": sum(len(e) for _, e in self.sets.values())
            + len(self.pending_ips)
            + len(self.pending_veths)
            + len(self.local_veths)
            + len(self.local_sources)
            + len(self.ingress)
            + len(self.egress),
        }


class Compiler:
    """Keeps each peer set's elements between compiles: only the peers the state marks dirty are
    recomputed; the rest are handed on as the same objects (the programmer skips them by identity)."""

    def __init__(self) -> None:
        self._peer_cache: dict[PeerKey, frozenset[str]] = {}
        self._named_cache: dict[NamedPortKey, frozenset[str]] = {}

    def invalidate(self) -> None:
        self._peer_cache.clear()
        self._named_cache.clear()

    def compile(self, state: ClusterState, local: list[LocalPod], *, strict: bool) -> Ruleset:
        for peer in state.dirty_peers:
            self._peer_cache.pop(peer, None)
            for key in [k for k in self._named_cache if k.peer == peer]:
                del self._named_cache[key]
        state.dirty_peers.clear()
        state.local_dirty = False
        out = Ruleset()
        pending_ips: set[str] = set()
        pending_veths: set[str] = set()
        unseen: set[str] = set()
        for lp in sorted(local, key=lambda p: p.veth):
            pod = state.pods.get((lp.namespace, lp.name))
            if pod is None or pod.host_network:
                if pod is None:
                    unseen.add(f"{lp.namespace}/{lp.name}")
                if strict and pod is None:
                    pending_ips.add(lp.ip)
                    pending_veths.add(lp.veth)
                continue
            if not pod.ip or pod.ip != lp.ip:
                pod = Pod(pod.namespace, pod.name, lp.ip, pod.labels, pod.ports, pod.host_network, pod.node)
            selected: dict[str, list[str]] = {}
            for direction in (INGRESS, EGRESS):
                policies = state.selecting(pod, direction)
                if not policies:
                    continue
                selected[direction] = [p.name for p in policies]
                rules = self._chain(state, out, pod, policies, direction)
                if direction == INGRESS:
                    name = f"i-{lp.veth}"
                    out.ingress[lp.veth] = f"jump {name}"
                else:
                    name = f"e-{lp.veth}"
                    out.egress[lp.ip] = f"jump {name}"
                out.chains[name] = rules
            out.selected_by[f"{lp.namespace}/{lp.name}"] = selected
        out.pending_ips = frozenset(pending_ips)
        out.pending_veths = frozenset(pending_veths)
        out.unseen = frozenset(unseen)
        out.local_veths = frozenset(lp.veth for lp in local)
        out.local_sources = frozenset(f'"{lp.veth}" . {lp.ip}' for lp in local)
        return out

    # --- chains ------------------------------------------------------------------------------

    def _chain(
        self, state: ClusterState, out: Ruleset, pod: Pod, policies: list[Policy], direction: str
    ) -> tuple[str, ...]:
        verdict = "accept" if direction == INGRESS else "return"
        lines: dict[str, None] = {}  # ordered, without duplicates
        for policy in policies:
            for rule in policy.ingress if direction == INGRESS else policy.egress:
                for match in self._rule(state, out, policy, rule, pod=pod, direction=direction):
                    lines[f"{match} {verdict}".strip()] = None
        lines["counter drop"] = None
        return tuple(lines)

    def _rule(
        self, state: ClusterState, out: Ruleset, policy: Policy, rule: Rule, *, pod: Pod, direction: str
    ) -> list[str]:
        addr = "saddr" if direction == INGRESS else "daddr"
        peers: list[tuple[str, PeerKey | None]] = []  # (match, the pods it selects or None)
        if not rule.peers:
            peers.append(("", None))
        for peer in rule.peers:
            if peer.ip_block is not None:
                peers.append((_ip_block(peer.ip_block, addr), None))
            else:
                selection = PeerKey.of(policy, peer)
                name = self._peer_set(state, out, selection)
                peers.append((f"ip {addr} @{name}", selection))
        if not rule.ports:
            return [p for p, _ in peers]
        lines: list[str] = []
        for match, selects in peers:
            for port in rule.ports:
                proto = port.protocol.lower()
                if not isinstance(port.port, str):
                    lines.append(f"{match} {_port_match(port)}".strip())
                elif direction == INGRESS:
                    numbers = sorted(
                        {c.port for c in pod.ports if c.name == port.port and c.protocol == port.protocol}
                    )
                    if numbers:  # resolved on this (the destination) pod; none: the rule matches nothing
                        dport = (
                            str(numbers[0])
                            if len(numbers) == 1
                            else "{ " + ", ".join(map(str, numbers)) + " }"
                        )
                        lines.append(f"{match} meta l4proto {proto} th dport {dport}".strip())
                elif match.startswith("ip6 "):
                    continue  # a named port resolves on pods, which are IPv4 here
                else:
                    named = NamedPortKey(selects or ALL_PODS, port.port, port.protocol)
                    name = self._named_set(state, out, named)
                    lines.append(
                        f"{match} meta l4proto {proto} ip daddr . meta l4proto . th dport @{name}".strip()
                    )
        return lines

    def _peer_set(self, state: ClusterState, out: Ruleset, key: PeerKey) -> str:
        return _cached_set(out, key.set_name, SET_IPV4, self._peer_cache, key=key, compute=state.member_ips)

    def _named_set(self, state: ClusterState, out: Ruleset, key: NamedPortKey) -> str:
        return _cached_set(
            out, key.set_name, SET_NAMED_PORT, self._named_cache, key=key, compute=state.named_port_elements
        )


def _cached_set(
    out: Ruleset,
    name: str,
    kind: str,
    cache: dict[Any, frozenset[str]],
    *,
    key: Any,
    compute: Callable[[Any], frozenset[str]],
) -> str:
    """The set ``name`` in ``out``, its elements from ``cache`` (computed once while the key is clean)."""
    if name not in out.sets:
        elements = cache.get(key)
        if elements is None:
            elements = cache[key] = compute(key)
        out.sets[name] = (kind, elements)
    return name


def _ip_block(block: IpBlock, addr: str) -> str:
    family = "ip" if block.cidr.version == 4 else "ip6"
    match = f"{family} {addr} {block.cidr}"
    if block.excepts:
        excepts = ipaddress.collapse_addresses(block.excepts)  # type: ignore[type-var]
        match += f" {family} {addr} != {{ {', '.join(str(e) for e in excepts)} }}"
    return match


def _port_match(port: PortRule) -> str:
    proto = port.protocol.lower()
    if port.port is None:
        return f"meta l4proto {proto}"
    if port.end_port is not None and port.end_port != port.port:
        return f"meta l4proto {proto} th dport {port.port}-{port.end_port}"
    return f"meta l4proto {proto} th dport {port.port}"


__all__ = [
    "BASE_RULES",
    "FAMILY",
    "HOOK_PRIORITY",
    "PREROUTING_PRIORITY",
    "PREROUTING_RULES",
    "TABLE",
    "Compiler",
    "LocalPod",
    "Ruleset",
]
