"""The NetworkPolicy compiler and the programmer's scripts, without a kernel.

The compiled table is run by a small interpreter of exactly the rule forms the compiler writes (an
unknown form fails the test), packet by packet, as the postrouting hook of each node would: the
source node judges the source pod's egress, the destination node its ingress. Its verdicts are
compared with the reference model (``ipamd.netpol.model.allowed``) for the upstream suite's cluster
and for hypothesis-made clusters and policies spread over two nodes. The real-kernel check of the
same table is tests/integration/test_netpol_e2e.py.
"""

# ruff: noqa: E501  (policies are tables here: one policy per line reads better than a wrapped tree)
from __future__ import annotations

import ipaddress
import re
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ipamd.netpol.cluster import ClusterState, PeerKey, parse_pod_object, parse_policy_object
from ipamd.netpol.compile import Compiler, LocalPod, Ruleset
from ipamd.netpol.model import Cluster, PolicyError, allowed, parse_selector
from ipamd.netpol.nft import full_script, script

NAMESPACES = ("x", "y", "z")
PODS = ("a", "b", "c")
NODE_IPS = {"n1": "192.0.2.1", "n2": "192.0.2.2"}
PORTS = ((80, "TCP"), (81, "TCP"), (80, "UDP"), (81, "UDP"), (80, "SCTP"))


def pod_obj(ns: str, name: str, ip: str, node: str, labels: dict[str, str] | None = None) -> dict[str, Any]:
    containers = [
        {
            "name": f"cont-{p}-{proto.lower()}",
            "ports": [{"name": f"serve-{p}-{proto.lower()}", "containerPort": p, "protocol": proto}],
        }
        for p in (80, 81)
        for proto in ("TCP", "UDP", "SCTP")
    ]
    return {
        "metadata": {"namespace": ns, "name": name, "labels": {"pod": name, **(labels or {})}},
        "spec": {"nodeName": node, "containers": containers},
        "status": {"phase": "Running", "podIP": ip},
    }


def ns_obj(ns: str, extra: dict[str, str] | None = None) -> dict[str, Any]:
    return {"metadata": {"name": ns, "labels": {"kubernetes.io/metadata.name": ns, **(extra or {})}}}


def policy(name: str, spec: dict[str, Any], ns: str = "x") -> dict[str, Any]:
    return {"metadata": {"namespace": ns, "name": name}, "spec": spec}


# --- an interpreter of the compiled table --------------------------------------------------------

_PROTO = {"tcp", "udp", "sctp"}


class Packet:
    def __init__(self, src: str, dst: str, port: int, proto: str) -> None:
        self.src, self.dst, self.port, self.proto = src, dst, port, proto.lower()


def _in(addr: str, cidr: str) -> bool:
    a = ipaddress.ip_address(addr)
    n = ipaddress.ip_network(cidr)
    return a.version == n.version and a in n


def _dport(spec: str, port: int) -> bool:
    if spec.startswith("{"):
        return port in {int(v) for v in spec.strip("{} ").split(",")}
    if "-" in spec:
        lo, hi = spec.split("-")
        return int(lo) <= port <= int(hi)
    return port == int(spec)


def rule_matches(rule: str, pkt: Packet, sets: dict[str, tuple[str, frozenset[str]]]) -> bool:
    """One compiled rule (without its verdict) against a packet; every form the compiler writes."""
    rest = rule
    while rest:
        if m := re.match(r"(ip6?) (saddr|daddr) @(\S+)\s*", rest):
            addr = pkt.src if m[2] == "saddr" else pkt.dst
            if m[1] == "ip6" or addr not in sets[m[3]][1]:
                return False
        elif m := re.match(r"(ip6?) (saddr|daddr) != \{ ([^}]*) \}\s*", rest):
            addr = pkt.src if m[2] == "saddr" else pkt.dst
            if any(_in(addr, c.strip()) for c in m[3].split(",")):
                return False
        elif m := re.match(r"(ip6?) (saddr|daddr) ([0-9a-f.:]+/\d+)\s*", rest):
            addr = pkt.src if m[2] == "saddr" else pkt.dst
            if not _in(addr, m[3]):
                return False
        elif m := re.match(r"meta l4proto (\w+)\s*", rest):
            assert m[1] in _PROTO, rule
            if pkt.proto != m[1]:
                return False
        elif m := re.match(r"th dport (\{[^}]*\}|\d+-\d+|\d+)\s*", rest):
            if not _dport(m[1], pkt.port):
                return False
        elif m := re.match(r"ip daddr \. meta l4proto \. th dport @(\S+)\s*", rest):
            if f"{pkt.dst} . {pkt.proto} . {pkt.port}" not in sets[m[1]][1]:
                return False
        else:
            raise AssertionError(f"a rule form the interpreter does not know: {rule!r} at {rest!r}")
        rest = rest[m.end() :]
    return True


def run_chain(rules: tuple[str, ...], pkt: Packet, sets: dict[str, tuple[str, frozenset[str]]]) -> str:
    for rule in rules:
        if rule == "counter drop":
            return "drop"
        body, _, verdict = rule.rpartition(" ")
        if rule_matches(body, pkt, sets):
            return verdict
    raise AssertionError(f"a chain without its final drop: {rules}")


def postrouting(rs: Ruleset, pkt: Packet, *, oif: str, local_source: bool) -> bool:
    """The base chain of compile.BASE_RULES, for a new connection's first packet."""
    if pkt.src in rs.pending_ips:
        return False
    if (jump := rs.egress.get(pkt.src)) is not None and (
        jump == "drop" or run_chain(rs.chains[jump.removeprefix("jump ")], pkt, rs.sets) == "drop"
    ):
        return False
    if local_source:
        return True
    if oif in rs.pending_veths:
        return False
    if (jump := rs.ingress.get(oif)) is not None:
        return jump != "drop" and run_chain(rs.chains[jump.removeprefix("jump ")], pkt, rs.sets) == "accept"
    return True


class Nodes:
    """Pods spread over nodes; each node's table compiled from the same watched state."""

    def __init__(
        self, pods: list[dict[str, Any]], namespaces: list[dict[str, Any]], policies: list[Any]
    ) -> None:
        self.states: dict[str, ClusterState] = {}
        self.tables: dict[str, Ruleset] = {}
        self.pods = [parse_pod_object(p) for p in pods]
        for node in NODE_IPS:
            state = ClusterState(node)
            state.replace_pods(pods)
            state.replace_namespaces(namespaces)
            state.replace_policies(policies)
            local = [LocalPod(p.namespace, p.name, p.ip, veth(p.ip)) for p in self.pods if p.node == node]
            self.states[node] = state
            self.tables[node] = Compiler().compile(state, local, strict=False)
        self.model = Cluster(
            {n["metadata"]["name"]: n["metadata"]["labels"] for n in namespaces},
            self.pods,
            [parse_policy_object(p)[0] for p in policies],
            {n: frozenset({ip}) for n, ip in NODE_IPS.items()},
        )

    def send(self, src: Any, dst: Any, port: int, proto: str) -> bool:
        src_ip = src.ip if hasattr(src, "ip") else src
        dst_ip = dst.ip if hasattr(dst, "ip") else dst
        pkt = Packet(src_ip, dst_ip, port, proto)
        src_node = (
            src.node if hasattr(src, "node") else next((n for n, ip in NODE_IPS.items() if ip == src), "")
        )
        dst_node = dst.node if hasattr(dst, "node") else ""
        if src_node and hasattr(src, "node"):
            if dst_node != src_node and dst_ip == NODE_IPS.get(src_node):
                return True  # to its own node: INPUT, never postrouting
            oif = veth(dst_ip) if dst_node == src_node else "eth0"
            if not postrouting(self.tables[src_node], pkt, oif=oif, local_source=False):
                return False
            if dst_node == src_node:
                return True
        if dst_node:
            local = src_node == dst_node and not hasattr(src, "node")
            return postrouting(self.tables[dst_node], pkt, oif=veth(dst_ip), local_source=local)
        return True

    def compare(self) -> list[str]:
        wrong = []
        for s in self.pods:
            for d in self.pods:
                if s == d:
                    continue
                for port, proto in PORTS:
                    want = allowed(self.model, s, d, port, proto)
                    got = self.send(s, d, port, proto)
                    if want != got:
                        wrong.append(
                            f"{s.namespace}/{s.name} -> {d.namespace}/{d.name} {proto}/{port}: {got}"
                        )
        return wrong


def veth(ip: str) -> str:
    return "ccni" + ip.replace(".", "")[-11:].rjust(11, "0")


def upstream_pods(nodes: tuple[str, ...] = ("n1",)) -> list[dict[str, Any]]:
    out = []
    for i, (ns, name) in enumerate((ns, name) for ns in NAMESPACES for name in PODS):
        out.append(pod_obj(ns, name, f"10.0.0.{10 + i}", nodes[i % len(nodes)]))
    return out


# --- upstream cases ------------------------------------------------------------------------------

X_ONLY = {"matchLabels": {"kubernetes.io/metadata.name": "x"}}
CASES: dict[str, list[dict[str, Any]]] = {
    "deny-ingress": [policy("d", {"podSelector": {}, "policyTypes": ["Ingress"]})],
    "deny-egress": [policy("d", {"podSelector": {}, "policyTypes": ["Egress"]})],
    "deny-both": [policy("d", {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]})],
    "allow-from-pod": [
        policy("p", {"podSelector": {"matchLabels": {"pod": "a"}}, "ingress": [{"from": [{"podSelector": {"matchLabels": {"pod": "b"}}}]}]})
    ],
    "allow-from-namespace": [
        policy("p", {"podSelector": {"matchLabels": {"pod": "a"}}, "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "y"}}}]}]})
    ],
    "and-peer": [
        policy("p", {"podSelector": {"matchLabels": {"pod": "a"}}, "ingress": [{"from": [{"namespaceSelector": {"matchExpressions": [{"key": "kubernetes.io/metadata.name", "operator": "NotIn", "values": ["x"]}]}, "podSelector": {"matchLabels": {"pod": "b"}}}]}]})
    ],
    "or-peers": [
        policy("p", {"podSelector": {"matchLabels": {"pod": "a"}}, "ingress": [{"from": [{"namespaceSelector": X_ONLY}, {"podSelector": {"matchLabels": {"pod": "b"}}}]}]})
    ],
    "named-port": [
        policy("p", {"podSelector": {"matchLabels": {"pod": "a"}}, "ingress": [{"ports": [{"port": "serve-81-tcp"}]}]})
    ],
    "named-port-wrong-protocol": [
        policy("p", {"podSelector": {}, "ingress": [{"ports": [{"port": "serve-80-tcp", "protocol": "UDP"}]}]})
    ],
    "end-port": [
        policy("p", {"podSelector": {}, "ingress": [{"ports": [{"port": 79, "endPort": 80, "protocol": "TCP"}]}]})
    ],
    "sctp-only": [
        policy("p", {"podSelector": {}, "ingress": [{"ports": [{"port": 80, "protocol": "SCTP"}]}]})
    ],
    "ip-block-except": [
        policy("p", {"podSelector": {"matchLabels": {"pod": "a"}}, "ingress": [{"from": [{"ipBlock": {"cidr": "10.0.0.0/24", "except": ["10.0.0.12/30"]}}]}]})
    ],
    "egress-to-namespace": [
        policy("p", {"podSelector": {"matchLabels": {"pod": "a"}}, "policyTypes": ["Egress"], "egress": [{"to": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "y"}}}]}]})
    ],
    "egress-named-port-to-any": [
        policy("p", {"podSelector": {}, "policyTypes": ["Egress"], "egress": [{"ports": [{"port": "serve-81-udp", "protocol": "UDP"}]}]})
    ],
    "egress-named-port-ip-block": [
        policy("p", {"podSelector": {}, "policyTypes": ["Egress"], "egress": [{"to": [{"ipBlock": {"cidr": "10.0.0.0/28"}}], "ports": [{"port": "serve-80-tcp"}]}]})
    ],
    "multiple": [
        policy("p1", {"podSelector": {"matchLabels": {"pod": "a"}}, "ingress": [{"from": [{"podSelector": {"matchLabels": {"pod": "b"}}}]}]}),
        policy("p2", {"podSelector": {"matchLabels": {"pod": "a"}}, "ingress": [{"from": [{"podSelector": {"matchLabels": {"pod": "c"}}}], "ports": [{"port": 81}]}]}),
        policy("p3", {"podSelector": {}, "policyTypes": ["Egress"], "egress": [{"to": [{"namespaceSelector": {}}]}]}, ns="y"),
    ],
}  # fmt: skip


@pytest.mark.parametrize("nodes", [("n1",), ("n1", "n2")], ids=["one-node", "two-nodes"])
@pytest.mark.parametrize("case", sorted(CASES))
def test_the_compiled_table_decides_as_the_model(case: str, nodes: tuple[str, ...]) -> None:
    c = Nodes(upstream_pods(nodes), [ns_obj(n) for n in NAMESPACES], CASES[case])
    assert c.compare() == []


def test_the_interpreter_is_not_trivially_agreeing() -> None:
    """A table that allows everything disagrees with the model on a deny case: the comparison bites."""
    c = Nodes(upstream_pods(), [ns_obj(n) for n in NAMESPACES], CASES["deny-ingress"])
    c.tables["n1"] = Ruleset()
    assert len(c.compare()) == 3 * 8 * 5  # every flow into the 3 pods of x from the 8 others, 5 ports


def test_the_node_reaches_isolated_pods_and_they_reach_it() -> None:
    c = Nodes(upstream_pods(), [ns_obj(n) for n in NAMESPACES], CASES["deny-both"])
    xa = c.pods[0]
    assert c.send(NODE_IPS["n1"], xa, 80, "TCP")
    assert c.send(xa, NODE_IPS["n1"], 10250, "TCP")
    assert not c.send(xa, "198.51.100.1", 80, "TCP")
    assert not c.send("198.51.100.1", xa, 80, "TCP")


# --- properties ----------------------------------------------------------------------------------

label = st.sampled_from(["a", "b", "c"])
selector: st.SearchStrategy[dict[str, Any]] = st.one_of(
    st.just({}),
    label.map(lambda v: {"matchLabels": {"pod": v}}),
    st.lists(label, min_size=1, max_size=2).map(
        lambda vs: {"matchExpressions": [{"key": "pod", "operator": "NotIn", "values": vs}]}
    ),
    st.just({"matchExpressions": [{"key": "tier", "operator": "Exists"}]}),
)
ns_selector: st.SearchStrategy[dict[str, Any]] = st.one_of(
    st.just({}),
    st.sampled_from(NAMESPACES).map(lambda n: {"matchLabels": {"kubernetes.io/metadata.name": n}}),
    st.just({"matchLabels": {"team": "blue"}}),
)
ip_block = st.one_of(
    st.just({"cidr": "10.0.0.0/24"}),
    st.just({"cidr": "10.0.0.0/24", "except": ["10.0.0.12/30", "10.0.0.16/29"]}),
    st.just({"cidr": "192.0.2.0/24"}),
    st.just({"cidr": "2001:db8::/32"}),
)
peer = st.one_of(
    selector.map(lambda s: {"podSelector": s}),
    ns_selector.map(lambda s: {"namespaceSelector": s}),
    st.tuples(selector, ns_selector).map(lambda t: {"podSelector": t[0], "namespaceSelector": t[1]}),
    ip_block.map(lambda b: {"ipBlock": b}),
)
port = st.one_of(
    st.fixed_dictionaries({"port": st.sampled_from([80, 81])}),
    st.fixed_dictionaries(
        {"port": st.sampled_from([80, 81]), "protocol": st.sampled_from(["TCP", "UDP", "SCTP"])}
    ),
    st.fixed_dictionaries(
        {
            "port": st.sampled_from(["serve-80-tcp", "serve-81-udp", "serve-80-sctp", "nope"]),
            "protocol": st.sampled_from(["TCP", "UDP", "SCTP"]),
        }
    ),
    st.just({"port": 79, "endPort": 80}),
    st.just({"protocol": "UDP"}),
)
rule_in = st.fixed_dictionaries(
    {}, optional={"from": st.lists(peer, max_size=2), "ports": st.lists(port, max_size=2)}
)
rule_out = st.fixed_dictionaries(
    {}, optional={"to": st.lists(peer, max_size=2), "ports": st.lists(port, max_size=2)}
)
spec = st.fixed_dictionaries(
    {"podSelector": selector},
    optional={
        "ingress": st.lists(rule_in, max_size=2),
        "egress": st.lists(rule_out, max_size=2),
        "policyTypes": st.sampled_from([["Ingress"], ["Egress"], ["Ingress", "Egress"]]),
    },
)  # fmt: skip
pod_extra = st.dictionaries(
    st.sampled_from(["x/a", "x/b", "y/a", "z/c"]), st.just({"tier": "web"}), max_size=2
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(st.tuples(st.sampled_from(NAMESPACES), spec), max_size=3),
    pod_extra,
    st.sampled_from(NAMESPACES),
    st.booleans(),
)
def test_any_policies_compile_to_what_the_model_decides(
    specs: list[tuple[str, dict[str, Any]]], extra: dict[str, dict[str, str]], blue: str, host_net: bool
) -> None:
    pods = [
        pod_obj(ns, name, f"10.0.0.{10 + i}", ("n1", "n2")[i % 2], extra.get(f"{ns}/{name}"))
        for i, (ns, name) in enumerate((ns, name) for ns in NAMESPACES for name in PODS)
    ]
    if host_net:  # a hostNetwork pod (the node's address) is never a selector peer
        pods.append({**pod_obj("x", "h", "192.0.2.1", "n1"), "spec": {"nodeName": "n1", "hostNetwork": True}})
    namespaces = [ns_obj(n, {"team": "blue"} if n == blue else None) for n in NAMESPACES]
    policies = [policy(f"p{i}", s, ns) for i, (ns, s) in enumerate(specs)]
    try:
        for p in policies:
            from ipamd.netpol.model import parse_policy

            parse_policy(p)
    except PolicyError:
        return  # the API server would have refused it (e.g. endPort with a named port)
    c = Nodes(pods, namespaces, policies)
    c.pods = [p for p in c.pods if not p.host_network]
    assert c.compare() == []


# --- state updates are incremental and exact ------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.one_of(
            st.tuples(st.just("label"), st.sampled_from(range(9)), st.sampled_from(["a", "b", "c", "d"])),
            st.tuples(st.just("ns"), st.sampled_from(NAMESPACES), st.sampled_from(["blue", "red"])),
            st.tuples(st.just("delete"), st.sampled_from(range(9)), st.just("")),
            st.tuples(st.just("policy"), st.sampled_from(NAMESPACES), st.sampled_from(["a", "b"])),
        ),
        max_size=12,
    )
)
def test_incremental_updates_equal_a_fresh_build(steps: list[tuple[str, Any, str]]) -> None:
    """Whatever events arrive, the index and the compiled table equal those built from scratch."""
    pods = upstream_pods(("n1", "n2"))
    namespaces = [ns_obj(n) for n in NAMESPACES]
    policies = [
        policy("base", {"podSelector": {}, "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"team": "blue"}}}, {"podSelector": {"matchLabels": {"pod": "a"}}}]}]}),
    ]  # fmt: skip
    state = ClusterState("n1")
    state.replace_pods(pods)
    state.replace_namespaces(namespaces)
    state.replace_policies(policies)
    compiler = Compiler()
    local = [LocalPod(p["metadata"]["namespace"], p["metadata"]["name"], p["status"]["podIP"], veth(p["status"]["podIP"])) for p in pods if p["spec"]["nodeName"] == "n1"]  # fmt: skip
    compiler.compile(state, local, strict=False)
    for kind, target, value in steps:
        if kind == "label":
            pods[target] = {
                **pods[target],
                "metadata": {**pods[target]["metadata"], "labels": {"pod": value}},
            }
            state.apply_pod("MODIFIED", pods[target])
        elif kind == "ns":
            i = NAMESPACES.index(target)
            namespaces[i] = ns_obj(target, {"team": value})
            state.apply_namespace("MODIFIED", namespaces[i])
        elif kind == "delete":
            state.apply_pod("DELETED", pods[target])
            pods[target] = pod_obj("gone", f"g{target}", f"10.1.0.{target}", "n2")
            state.apply_pod("ADDED", pods[target])
        else:
            p = policy(f"p-{target}-{value}", {"podSelector": {"matchLabels": {"pod": value}}, "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"team": "red"}}, "podSelector": {}}]}]}, ns=target)  # fmt: skip
            policies.append(p)
            state.apply_policy("ADDED", p)
        if len(steps) % 3 == 0:
            compiler.compile(state, local, strict=False)  # some steps compiled in between, some not
    fresh = ClusterState("n1")
    fresh.replace_pods(pods)
    fresh.replace_namespaces(namespaces)
    fresh.replace_policies(policies)
    assert state.members == fresh.members
    got = compiler.compile(state, local, strict=False)
    want = Compiler().compile(fresh, local, strict=False)
    assert (got.sets, got.chains, got.ingress, got.egress) == (
        want.sets,
        want.chains,
        want.ingress,
        want.egress,
    )


# --- scripts -------------------------------------------------------------------------------------


def test_a_delta_script_touches_only_what_changed() -> None:
    pods = upstream_pods()
    state = ClusterState("n1")
    state.replace_pods(pods)
    state.replace_namespaces([ns_obj(n) for n in NAMESPACES])
    state.replace_policies(CASES["allow-from-pod"])
    local = [LocalPod("x", "a", "10.0.0.10", "ccniaaaaaaaaaaa")]
    compiler = Compiler()
    before = compiler.compile(state, local, strict=False)
    assert script(before, compiler.compile(state, local, strict=False)) == ""
    # another pod labelled b: one element, no rule
    state.apply_pod("ADDED", pod_obj("x", "b2", "10.0.0.99", "n2", {"pod": "b"}))
    after = compiler.compile(state, local, strict=False)
    text = script(before, after)
    assert text.splitlines() == [f"add element inet cloud-cni-netpol {PeerKey('x', None, parse_selector({'matchLabels': {'pod': 'b'}}, 'p')).set_name} {{ 10.0.0.99 }}"]  # fmt: skip
    # the policy goes: the chain's map entry first, then the chain, then the set
    state.apply_policy("DELETED", CASES["allow-from-pod"][0])
    gone = compiler.compile(state, local, strict=False)
    lines = script(after, gone).splitlines()
    assert [line.split()[0:2] for line in lines] == [
        ["delete", "element"],
        ["delete", "chain"],
        ["delete", "set"],
    ]


def test_strict_mode_denies_a_pod_the_watch_has_not_seen() -> None:
    state = ClusterState("n1")
    state.replace_pods([])
    state.replace_namespaces([])
    state.replace_policies([])
    local = [LocalPod("x", "new", "10.0.0.50", "ccni00000000050")]
    strict = Compiler().compile(state, local, strict=True)
    assert strict.pending_ips == {"10.0.0.50"} and strict.pending_veths == {"ccni00000000050"}
    assert Compiler().compile(state, local, strict=False).pending_ips == frozenset()
    state.apply_pod("ADDED", pod_obj("x", "new", "10.0.0.50", "n1"))
    assert Compiler().compile(state, local, strict=True).pending_ips == frozenset()


def test_the_full_script_replaces_the_table_in_one_transaction() -> None:
    text = full_script(Ruleset())
    lines = text.splitlines()
    assert lines[:2] == ["add table inet cloud-cni-netpol", "delete table inet cloud-cni-netpol"]
    assert (
        "priority srcnat - 5" in text
        and "add rule inet cloud-cni-netpol postrouting oifname vmap @ingress" in lines
    )
    assert (
        lines[-1]
        == "add rule inet cloud-cni-netpol prerouting iifname @local-veths iifname . ip saddr != @local-sources drop"
    )


def test_every_local_pod_is_kept_to_its_own_source_address() -> None:
    state = ClusterState("n1")
    state.replace_pods([pod_obj("x", "a", "10.0.0.10", "n1")])
    state.replace_namespaces([ns_obj("x")])
    state.replace_policies([])
    local = [
        LocalPod("x", "a", "10.0.0.10", "ccni0000000000a"),
        LocalPod("y", "new", "10.0.0.11", "ccni0000000000b"),
    ]
    rs = Compiler().compile(state, local, strict=False)
    assert rs.local_veths == {"ccni0000000000a", "ccni0000000000b"}  # open or not, known or not
    assert rs.local_sources == {'"ccni0000000000a" . 10.0.0.10', '"ccni0000000000b" . 10.0.0.11'}
    gone = Compiler().compile(state, local[:1], strict=False)
    assert script(rs, gone).splitlines() == [
        'delete element inet cloud-cni-netpol local-veths { "ccni0000000000b" }',
        'delete element inet cloud-cni-netpol local-sources { "ccni0000000000b" . 10.0.0.11 }',
    ]


# --- validation of watched objects ---------------------------------------------------------------

BAD_PODS = [
    ({"metadata": {"name": "p"}, "spec": {}}, "pod.metadata.namespace"),
    ({"metadata": {"namespace": "x", "name": "p", "labels": {"a": 1}}}, "pod.metadata.labels"),
    ({"metadata": {"namespace": "x", "name": "p"}, "spec": {"containers": [{"ports": [{"containerPort": 0}]}]}}, "pod.spec.containers[0].ports[0].containerPort"),
    ({"metadata": {"namespace": "x", "name": "p"}, "spec": {"containers": [{"ports": [{"containerPort": 80, "protocol": "ICMP"}]}]}}, "pod.spec.containers[0].ports[0].protocol"),
    ({"metadata": {"namespace": "x", "name": "p"}, "spec": {}, "status": {"podIP": "10.0.0.300"}}, "pod.status.podIP"),
]  # fmt: skip


@pytest.mark.parametrize(("obj", "where"), BAD_PODS, ids=[w for _, w in BAD_PODS])
def test_a_malformed_pod_names_its_field(obj: dict[str, Any], where: str) -> None:
    with pytest.raises(PolicyError) as err:
        parse_pod_object(obj)
    assert err.value.field == where


def test_a_malformed_pod_event_keeps_what_was_known() -> None:
    state = ClusterState("n1")
    state.replace_pods([pod_obj("x", "a", "10.0.0.10", "n1")])
    state.apply_pod("MODIFIED", {"metadata": {"namespace": "x", "name": "a", "labels": {"pod": 7}}})
    assert state.pods[("x", "a")].ip == "10.0.0.10" and state.malformed["pods"] == 1


def test_an_ended_pod_leaves_the_sets() -> None:
    ended = pod_obj("x", "a", "10.0.0.10", "n1")
    ended["status"]["phase"] = "Succeeded"
    assert parse_pod_object(ended).ip == ""


def test_a_malformed_policy_isolates_what_it_selects_and_is_reported() -> None:
    bad = policy("bad", {"podSelector": {"matchLabels": {"pod": "a"}}, "ingress": [{"from": [{}]}]})
    parsed, broken = parse_policy_object(bad)
    assert broken is not None and "spec.ingress[0].from[0]" in broken.error
    assert parsed.types == {"Ingress"} and parsed.ingress == ()
    c = Nodes(upstream_pods(), [ns_obj(n) for n in NAMESPACES], [bad])
    xa, xb = c.pods[0], c.pods[1]
    assert not c.send(xb, xa, 80, "TCP")  # closed, not opened
    assert c.send(xa, xb, 80, "TCP")
