"""The NetworkPolicy reference model against the upstream e2e suite's cases (test/e2e/network/netpol:
namespaces x, y, z x pods a, b, c labelled ``pod=<name>``, servers ``serve-<port>-<proto>`` on 80
and 81), each as a full 9 x 9 reachability matrix; the validation of malformed policies; and
hypothesis properties of the semantics (additivity, isolation, ports)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ipamd.netpol.model import Cluster, ContainerPort, Pod, PolicyError, allowed, parse_policies, parse_policy

NAMESPACES = ("x", "y", "z")
PODS = ("a", "b", "c")
NODE_IP = "192.0.2.10"


def pod(ns: str, name: str, **labels: str) -> Pod:
    index = NAMESPACES.index(ns) * 3 + PODS.index(name)
    ports = tuple(
        ContainerPort(p, proto, f"serve-{p}-{proto.lower()}")
        for p in (80, 81)
        for proto in ("TCP", "UDP", "SCTP")
    )
    return Pod(ns, name, f"10.0.0.{10 + index}", {"pod": name, **labels}, ports, node="n1")


def cluster(
    policies: Iterable[dict[str, Any]],
    *,
    ns_labels: dict[str, dict[str, str]] | None = None,
    pod_labels: dict[str, dict[str, str]] | None = None,
) -> Cluster:
    labels = {ns: {"kubernetes.io/metadata.name": ns, **(ns_labels or {}).get(ns, {})} for ns in NAMESPACES}
    pods = [pod(ns, p, **(pod_labels or {}).get(f"{ns}/{p}", {})) for ns in NAMESPACES for p in PODS]
    return Cluster(labels, pods, parse_policies(policies), {"n1": frozenset({NODE_IP})})


def matrix(c: Cluster, port: int = 80, protocol: str = "TCP") -> dict[tuple[str, str], bool]:
    by = {f"{p.namespace}/{p.name}": p for p in c.pods}
    return {(s, d): allowed(c, by[s], by[d], port, protocol) for s in by for d in by if s != d}


def expect(rule: Callable[[str, str], bool]) -> dict[tuple[str, str], bool]:
    """The expected matrix: ``rule(src, dst)`` says allowed, for every pair but loopback."""
    names = [f"{ns}/{p}" for ns in NAMESPACES for p in PODS]
    return {(s, d): rule(s, d) for s in names for d in names if s != d}


def policy(name: str, spec: dict[str, Any], ns: str = "x") -> dict[str, Any]:
    return {"metadata": {"namespace": ns, "name": name}, "spec": spec}


ALL = {}  # podSelector {}: every pod of the namespace


# --- upstream cases (network_policy.go), by name ----------------------------------------------------


def test_deny_all_ingress_in_x() -> None:
    c = cluster([policy("deny-ingress", {"podSelector": ALL, "policyTypes": ["Ingress"]})])
    assert matrix(c) == expect(lambda s, d: not d.startswith("x/"))


def test_deny_all_egress_from_x() -> None:
    c = cluster([policy("deny-egress", {"podSelector": ALL, "policyTypes": ["Egress"]})])
    assert matrix(c) == expect(lambda s, d: not s.startswith("x/"))


def test_deny_all_ingress_and_egress() -> None:
    c = cluster([policy("deny-all", {"podSelector": ALL, "policyTypes": ["Ingress", "Egress"]})])
    assert matrix(c) == expect(lambda s, d: not s.startswith("x/") and not d.startswith("x/"))


def test_allow_from_a_pod_label_in_the_same_namespace() -> None:
    spec = {
        "podSelector": {"matchLabels": {"pod": "a"}},
        "ingress": [{"from": [{"podSelector": {"matchLabels": {"pod": "b"}}}]}],
    }
    c = cluster([policy("allow-b-to-a", spec)])
    assert matrix(c) == expect(lambda s, d: d != "x/a" or s == "x/b")


def test_allow_from_a_namespace() -> None:
    spec = {
        "podSelector": {"matchLabels": {"pod": "a"}},
        "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "y"}}}]}],
    }
    c = cluster([policy("allow-y", spec)])
    assert matrix(c) == expect(lambda s, d: d != "x/a" or s.startswith("y/"))


def test_namespace_and_pod_in_one_peer_is_and() -> None:
    peer = {"namespaceSelector": {"matchLabels": {"ns": "y"}}, "podSelector": {"matchLabels": {"pod": "b"}}}
    spec = {"podSelector": {"matchLabels": {"pod": "a"}}, "ingress": [{"from": [peer]}]}
    c = cluster([policy("and", spec)], ns_labels={"y": {"ns": "y"}})
    assert matrix(c) == expect(lambda s, d: d != "x/a" or s == "y/b")


def test_namespace_and_pod_in_separate_peers_is_or() -> None:
    peers = [
        {"namespaceSelector": {"matchLabels": {"ns": "y"}}},
        {"podSelector": {"matchLabels": {"pod": "b"}}},
    ]
    spec = {"podSelector": {"matchLabels": {"pod": "a"}}, "ingress": [{"from": peers}]}
    c = cluster([policy("or", spec)], ns_labels={"y": {"ns": "y"}})
    assert matrix(c) == expect(lambda s, d: d != "x/a" or s.startswith("y/") or s == "x/b")


def test_match_expressions_not_in() -> None:
    expr = {"key": "kubernetes.io/metadata.name", "operator": "NotIn", "values": ["y"]}
    spec = {
        "podSelector": {"matchLabels": {"pod": "a"}},
        "ingress": [{"from": [{"namespaceSelector": {"matchExpressions": [expr]}}]}],
    }
    c = cluster([policy("not-y", spec)])
    assert matrix(c) == expect(lambda s, d: d != "x/a" or not s.startswith("y/"))


def test_named_port_resolves_on_the_destination_pod() -> None:
    spec = {"podSelector": {"matchLabels": {"pod": "a"}}, "ingress": [{"ports": [{"port": "serve-80-tcp"}]}]}
    c = cluster([policy("named", spec)])
    assert matrix(c, 80) == expect(lambda s, d: True)
    assert matrix(c, 81) == expect(lambda s, d: d != "x/a")


def test_named_port_with_the_wrong_protocol_matches_nothing() -> None:
    spec = {
        "podSelector": {"matchLabels": {"pod": "a"}},
        "ingress": [{"ports": [{"port": "serve-80-udp", "protocol": "TCP"}]}],
    }
    c = cluster([policy("named-wrong", spec)])
    assert matrix(c, 80) == expect(lambda s, d: d != "x/a")


def test_numbered_port_and_end_port() -> None:
    spec = {"podSelector": ALL, "ingress": [{"ports": [{"port": 79, "endPort": 80}]}]}
    c = cluster([policy("range", spec)])
    assert matrix(c, 80) == expect(lambda s, d: True)
    assert matrix(c, 81) == expect(lambda s, d: not d.startswith("x/"))


def test_an_sctp_or_udp_rule_never_opens_tcp() -> None:
    spec = {
        "podSelector": ALL,
        "ingress": [{"ports": [{"port": 80, "protocol": "SCTP"}, {"port": 80, "protocol": "UDP"}]}],
    }
    c = cluster([policy("not-tcp", spec)])
    assert matrix(c, 80, "TCP") == expect(lambda s, d: not d.startswith("x/"))
    assert matrix(c, 80, "UDP") == expect(lambda s, d: True)
    assert matrix(c, 80, "SCTP") == expect(lambda s, d: True)


def test_ip_block_with_except() -> None:
    a_ip = pod("x", "a").ip  # 10.0.0.10: x/a; the except takes out y/b (10.0.0.14)
    spec = {
        "podSelector": {"matchLabels": {"pod": "a"}},
        "ingress": [{"from": [{"ipBlock": {"cidr": "10.0.0.0/24", "except": ["10.0.0.14/32"]}}]}],
    }
    c = cluster([policy("ipblock", spec)])
    assert a_ip == "10.0.0.10"
    assert matrix(c) == expect(lambda s, d: d != "x/a" or s != "y/b")


def test_egress_to_a_namespace_only() -> None:
    spec = {
        "podSelector": {"matchLabels": {"pod": "a"}},
        "policyTypes": ["Egress"],
        "egress": [{"to": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "y"}}}]}],
    }
    c = cluster([policy("egress-y", spec)])
    assert matrix(c) == expect(lambda s, d: s != "x/a" or d.startswith("y/"))


def test_multiple_policies_are_additive() -> None:
    only_b = {
        "podSelector": {"matchLabels": {"pod": "a"}},
        "ingress": [{"from": [{"podSelector": {"matchLabels": {"pod": "b"}}}]}],
    }
    only_c = {
        "podSelector": {"matchLabels": {"pod": "a"}},
        "ingress": [{"from": [{"podSelector": {"matchLabels": {"pod": "c"}}}]}],
    }
    c = cluster([policy("b", only_b), policy("c", only_c)])
    assert matrix(c) == expect(lambda s, d: d != "x/a" or s in ("x/b", "x/c"))


def test_policy_types_inferred_from_an_egress_section() -> None:
    spec = {"podSelector": ALL, "egress": []}  # no policyTypes: Ingress and Egress, both denying
    p = parse_policy(policy("inferred", spec))
    assert p.types == {"Ingress", "Egress"}
    c = cluster([policy("inferred", spec)])
    assert matrix(c) == expect(lambda s, d: not s.startswith("x/") and not d.startswith("x/"))


def test_a_pod_label_change_moves_it_in_and_out_of_a_policy() -> None:
    spec = {
        "podSelector": {"matchLabels": {"pod": "a"}},
        "ingress": [{"from": [{"podSelector": {"matchLabels": {"role": "client"}}}]}],
    }
    before = cluster([policy("clients", spec)])
    after = cluster([policy("clients", spec)], pod_labels={"x/c": {"role": "client"}})
    assert matrix(before) == expect(lambda s, d: d != "x/a")
    assert matrix(after) == expect(lambda s, d: d != "x/a" or s == "x/c")


def test_the_node_reaches_its_pods_and_host_network_pods_are_not_selected() -> None:
    c = cluster([policy("deny", {"podSelector": ALL, "policyTypes": ["Ingress"]})])
    a = next(p for p in c.pods if (p.namespace, p.name) == ("x", "a"))
    assert allowed(c, NODE_IP, a, 80)  # kubelet probes
    egress = cluster([policy("deny", {"podSelector": ALL, "policyTypes": ["Egress"]})])
    ea = next(p for p in egress.pods if (p.namespace, p.name) == ("x", "a"))
    assert allowed(egress, ea, NODE_IP, 10250)  # to its own node: not judged
    assert not allowed(egress, ea, "192.0.2.99", 80)  # another node is
    assert not allowed(c, "198.51.100.7", a, 80)
    host = Pod("x", "h", NODE_IP, {"pod": "a"}, host_network=True, node="n1")
    assert c.selecting(host, "Ingress") == []


# --- validation ------------------------------------------------------------------------------------

BAD = [
    ({"podSelector": ALL, "policyTypes": ["Inbound"]}, "spec.policyTypes[0]"),
    ({"podSelector": {"matchLabels": {"a": 1}}}, "spec.podSelector.matchLabels['a']"),
    (
        {"podSelector": {"matchExpressions": [{"key": "a", "operator": "Near"}]}},
        "spec.podSelector.matchExpressions[0].operator",
    ),
    (
        {"podSelector": {"matchExpressions": [{"key": "a", "operator": "In", "values": []}]}},
        "spec.podSelector.matchExpressions[0].values",
    ),
    (
        {"podSelector": {"matchExpressions": [{"key": "a", "operator": "Exists", "values": ["x"]}]}},
        "spec.podSelector.matchExpressions[0].values",
    ),
    ({"podSelector": ALL, "ingress": [{"from": [{}]}]}, "spec.ingress[0].from[0]"),
    (
        {"podSelector": ALL, "ingress": [{"from": [{"ipBlock": {"cidr": "10.0.0.0/8"}, "podSelector": {}}]}]},
        "spec.ingress[0].from[0]",
    ),
    (
        {"podSelector": ALL, "ingress": [{"from": [{"ipBlock": {"cidr": "10.0.0.1/8"}}]}]},
        "spec.ingress[0].from[0].ipBlock.cidr",
    ),
    (
        {
            "podSelector": ALL,
            "ingress": [{"from": [{"ipBlock": {"cidr": "10.0.0.0/16", "except": ["10.1.0.0/24"]}}]}],
        },
        "spec.ingress[0].from[0].ipBlock.except[0]",
    ),
    ({"podSelector": ALL, "egress": [{"ports": [{"protocol": "ICMP"}]}]}, "spec.egress[0].ports[0].protocol"),
    ({"podSelector": ALL, "egress": [{"ports": [{"port": 0}]}]}, "spec.egress[0].ports[0].port"),
    ({"podSelector": ALL, "egress": [{"ports": [{"port": "Not_A_Name"}]}]}, "spec.egress[0].ports[0].port"),
    (
        {"podSelector": ALL, "egress": [{"ports": [{"port": "http", "endPort": 90}]}]},
        "spec.egress[0].ports[0].endPort",
    ),
    (
        {"podSelector": ALL, "egress": [{"ports": [{"port": 90, "endPort": 80}]}]},
        "spec.egress[0].ports[0].endPort",
    ),
    ({"podSelector": ALL, "ingress": {"from": []}}, "spec.ingress"),
]


@pytest.mark.parametrize(("spec", "where"), BAD, ids=[w for _, w in BAD])
def test_a_malformed_policy_names_its_field(spec: dict[str, Any], where: str) -> None:
    with pytest.raises(PolicyError) as caught:
        parse_policy(policy("bad", spec))
    assert caught.value.field == where


def test_metadata_is_required() -> None:
    with pytest.raises(PolicyError, match=r"metadata\.namespace"):
        parse_policy({"metadata": {"name": "p"}, "spec": {}})


# --- properties ------------------------------------------------------------------------------------

labels = st.sampled_from(["a", "b", "c"])
selectors = st.one_of(st.just({}), labels.map(lambda v: {"matchLabels": {"pod": v}}))
ns_selectors = st.one_of(
    st.just({}),
    st.sampled_from(NAMESPACES).map(lambda n: {"matchLabels": {"kubernetes.io/metadata.name": n}}),
)
peers = st.one_of(
    selectors.map(lambda s: {"podSelector": s}),
    ns_selectors.map(lambda s: {"namespaceSelector": s}),
    st.tuples(selectors, ns_selectors).map(lambda t: {"podSelector": t[0], "namespaceSelector": t[1]}),
)
ports = st.lists(st.fixed_dictionaries({"port": st.sampled_from([80, 81, "serve-80-tcp"])}), max_size=2)
rules = st.fixed_dictionaries({"from": st.lists(peers, max_size=2), "ports": ports})
specs = st.fixed_dictionaries({"podSelector": selectors, "ingress": st.lists(rules, max_size=2)})


@given(st.lists(specs, max_size=3), specs, st.sampled_from(NAMESPACES))
def test_adding_a_policy_never_takes_an_allowed_flow_from_an_isolated_pod(
    existing: list[dict[str, Any]], extra: dict[str, Any], ns: str
) -> None:
    """Policies are additive: for pods already isolated, another policy only adds allowed flows."""
    base = [policy(f"p{i}", s, ns) for i, s in enumerate(existing)]
    before = cluster(base)
    after = cluster([*base, policy("extra", extra, ns)])
    now, later = matrix(before), matrix(after)
    by = {f"{p.namespace}/{p.name}": p for p in before.pods}
    for (s, d), ok in now.items():
        if ok and before.selecting(by[d], "Ingress"):
            assert later[(s, d)], (s, d)


@given(st.lists(specs, max_size=3), st.sampled_from(NAMESPACES))
def test_pods_no_policy_selects_are_open(specs_: list[dict[str, Any]], ns: str) -> None:
    c = cluster([policy(f"p{i}", s, ns) for i, s in enumerate(specs_)])
    for (_, d), ok in matrix(c).items():
        dst = next(p for p in c.pods if f"{p.namespace}/{p.name}" == d)
        if not c.selecting(dst, "Ingress"):
            assert ok


def test_a_named_port_resolves_per_destination_pod_not_on_the_source() -> None:
    """Egress to port "web": only pods whose own containerPorts name it are reachable, on its number."""
    spec = {
        "podSelector": {"matchLabels": {"pod": "a"}},
        "policyTypes": ["Egress"],
        "egress": [{"ports": [{"port": "web"}]}],
    }
    base = cluster([policy("web", spec)])
    pods = [
        Pod(
            p.namespace,
            p.name,
            p.ip,
            p.labels,
            (ContainerPort(8080, "TCP", "web"),) if p.name == "b" else (),
            node="n1",
        )
        if (p.namespace, p.name) != ("x", "a")
        else Pod(p.namespace, p.name, p.ip, p.labels, (ContainerPort(9090, "TCP", "web"),), node="n1")
        for p in base.pods
    ]
    c = Cluster(base.namespaces, pods, base.policies, base.node_ips)
    by = {f"{p.namespace}/{p.name}": p for p in pods}
    assert allowed(c, by["x/a"], by["x/b"], 8080)
    assert not allowed(c, by["x/a"], by["x/c"], 8080)  # x/c names no port "web"
    assert not allowed(c, by["x/a"], by["x/b"], 9090)  # the source's own "web" is not the one


def test_an_ingress_named_port_resolves_on_the_selected_pod() -> None:
    spec = {"podSelector": {"matchLabels": {"pod": "a"}}, "ingress": [{"ports": [{"port": "web"}]}]}
    base = cluster([policy("web-in", spec)])
    web = {"a": 8080, "b": 9090}
    pods = [
        Pod(
            p.namespace,
            p.name,
            p.ip,
            p.labels,
            (ContainerPort(web[p.name], "TCP", "web"),) if p.name in web else (),
            node="n1",
        )
        for p in base.pods
    ]
    c = Cluster(base.namespaces, pods, base.policies, base.node_ips)
    by = {f"{p.namespace}/{p.name}": p for p in pods}
    assert allowed(c, by["x/b"], by["x/a"], 8080)
    assert not allowed(c, by["x/b"], by["x/a"], 9090)  # the source's "web"
