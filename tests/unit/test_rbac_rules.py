"""The RBAC checker (tests/fakes/rbac.py) against deploy/rbac.yaml: every call the daemon makes is
allowed, and nothing else; plus Kubernetes' matching rules (wildcards, subresources, resourceNames)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.fakes.rbac import Rule, allowed, assert_allowed, load_rules

RBAC = Path(__file__).resolve().parents[2] / "deploy" / "rbac.yaml"
NODE = "ip-10-0-1-17.ec2.internal"


@dataclass(frozen=True)
class Call:
    verb: str
    api_group: str
    resource: str
    subresource: str = ""
    namespace: str = ""
    name: str = ""


# Every call the daemon makes (docs/kubernetes.md, RBAC). ``name`` is what the API server's request info
# holds: the object's name, or for list/watch the metadata.name of the field selector.
DAEMON_CALLS = [
    pytest.param(Call("get", "", "nodes", name=NODE), id="get-own-node"),
    pytest.param(Call("list", "", "nodes", name=NODE), id="list-own-node-by-field-selector"),
    pytest.param(Call("watch", "", "nodes", name=NODE), id="watch-own-node-by-field-selector"),
    pytest.param(Call("list", "", "nodes"), id="budget-count-all-nodes-limit-1"),
    pytest.param(Call("patch", "", "nodes", name=NODE), id="patch-own-node-taints"),
    pytest.param(Call("list", "", "pods"), id="list-pods-all-namespaces"),
    pytest.param(Call("watch", "", "pods"), id="watch-pods-all-namespaces"),
    pytest.param(Call("get", "", "pods", namespace="team-a", name="web-0"), id="get-one-pod"),
    pytest.param(Call("create", "events.k8s.io", "events", namespace="default"), id="create-node-event"),
    pytest.param(Call("create", "events.k8s.io", "events", namespace="team-a"), id="create-pod-event"),
    pytest.param(
        Call("patch", "events.k8s.io", "events", namespace="default", name="n.17f"), id="patch-event-series"
    ),
    pytest.param(Call("get", "crd.k8s.amazonaws.com", "eniconfigs", name="us-east-1a"), id="get-eniconfig"),
    pytest.param(Call("list", "crd.k8s.amazonaws.com", "eniconfigs"), id="list-eniconfigs"),
    pytest.param(Call("watch", "crd.k8s.amazonaws.com", "eniconfigs"), id="watch-eniconfigs"),
    pytest.param(Call("list", "", "namespaces"), id="netpol-list-namespaces"),
    pytest.param(Call("watch", "", "namespaces"), id="netpol-watch-namespaces"),
    pytest.param(Call("list", "networking.k8s.io", "networkpolicies"), id="netpol-list-networkpolicies"),
    pytest.param(Call("watch", "networking.k8s.io", "networkpolicies"), id="netpol-watch-networkpolicies"),
]

FORBIDDEN_CALLS = [
    pytest.param(Call("create", "", "events", namespace="default"), id="core-events-create"),
    pytest.param(Call("patch", "", "events", namespace="default", name="n.17f"), id="core-events-patch"),
    pytest.param(Call("get", "", "secrets", namespace="kube-system", name="x"), id="secrets-get"),
    pytest.param(Call("list", "", "secrets"), id="secrets-list"),
    pytest.param(Call("delete", "", "nodes", name=NODE), id="nodes-delete"),
    pytest.param(Call("update", "", "nodes", name=NODE), id="nodes-update"),
    pytest.param(Call("create", "", "nodes", name=NODE), id="nodes-create"),
    pytest.param(Call("patch", "", "nodes", "status", name=NODE), id="nodes-status-patch"),
    pytest.param(Call("patch", "", "pods", namespace="team-a", name="web-0"), id="pods-patch"),
    pytest.param(Call("delete", "", "pods", namespace="team-a", name="web-0"), id="pods-delete"),
    pytest.param(Call("create", "", "pods", "eviction", "team-a", "web-0"), id="pods-eviction"),
    pytest.param(Call("get", "", "pods", "log", "team-a", "web-0"), id="pods-log"),
    pytest.param(Call("get", "", "configmaps", namespace="kube-system", name="c"), id="configmaps-get"),
    pytest.param(Call("list", "", "configmaps"), id="configmaps-list"),
    pytest.param(Call("patch", "crd.k8s.amazonaws.com", "eniconfigs", name="a"), id="eniconfigs-patch"),
    pytest.param(Call("get", "events.k8s.io", "events", namespace="default", name="n"), id="events-get"),
    pytest.param(Call("get", "apps", "nodes", name=NODE), id="nodes-in-another-group"),
    pytest.param(Call("get", "crd.k8s.amazonaws.com", "nodes", name=NODE), id="nodes-in-the-crd-group"),
]


def check(rules: list[Rule], call: Call) -> bool:
    return allowed(
        rules, call.verb, call.api_group, call.resource, call.subresource, call.namespace, call.name
    )


@pytest.fixture(scope="module")
def rules() -> list[Rule]:
    return load_rules(RBAC)


@pytest.mark.parametrize("call", DAEMON_CALLS)
def test_every_daemon_call_is_allowed(rules: list[Rule], call: Call) -> None:
    assert check(rules, call)


@pytest.mark.parametrize("call", FORBIDDEN_CALLS)
def test_anything_else_is_denied(rules: list[Rule], call: Call) -> None:
    assert not check(rules, call)


def test_assert_allowed_passes_the_daemons_calls_and_lists_every_forbidden_one(rules: list[Rule]) -> None:
    daemon = [p.values[0] for p in DAEMON_CALLS]
    assert_allowed(rules, daemon)
    with pytest.raises(AssertionError) as info:
        assert_allowed(
            rules,
            [
                *daemon,
                Call("create", "", "events", namespace="default"),
                Call("patch", "", "nodes", "status", name=NODE),
                Call("get", "", "secrets", namespace="kube-system", name="aws-creds"),
            ],
        )
    message = str(info.value)
    assert "3 request(s)" in message
    assert "create core events in namespace default" in message
    assert f"patch core nodes/status {NODE}" in message
    assert "get core secrets aws-creds in namespace kube-system" in message
    assert "pods" not in message


# --- the matching rules themselves (k8s.io/component-helpers/auth/rbac/validation) ---------------

WILDCARD = Rule(verbs=("*",), api_groups=("*",), resources=("*",))
STATUS_ANYWHERE = Rule(verbs=("patch",), api_groups=("",), resources=("*/status",))
NAMED = Rule(verbs=("get", "create"), api_groups=("",), resources=("configmaps",), resource_names=("a",))
SUBRESOURCE = Rule(verbs=("get",), api_groups=("",), resources=("pods/log",))
NON_RESOURCE = Rule(verbs=("get",))  # a nonResourceURLs rule: no groups, no resources


@pytest.mark.parametrize(
    ("rule", "call", "want"),
    [
        pytest.param(WILDCARD, Call("delete", "apps", "deployments", name="x"), True, id="all-wildcards"),
        pytest.param(WILDCARD, Call("patch", "", "nodes", "status", name="n"), True, id="wildcard-sub"),
        pytest.param(STATUS_ANYWHERE, Call("patch", "", "nodes", "status"), True, id="star-slash-status"),
        pytest.param(STATUS_ANYWHERE, Call("patch", "", "nodes"), False, id="star-slash-status-not-main"),
        pytest.param(STATUS_ANYWHERE, Call("patch", "", "pods", "log"), False, id="star-slash-other-sub"),
        pytest.param(SUBRESOURCE, Call("get", "", "pods", "log"), True, id="res-slash-sub"),
        pytest.param(SUBRESOURCE, Call("get", "", "pods"), False, id="res-slash-sub-not-main"),
        pytest.param(NAMED, Call("get", "", "configmaps", name="a"), True, id="resource-name"),
        pytest.param(NAMED, Call("get", "", "configmaps", name="b"), False, id="other-resource-name"),
        pytest.param(NAMED, Call("create", "", "configmaps"), False, id="resource-names-deny-unnamed"),
        pytest.param(NON_RESOURCE, Call("get", "", "pods"), False, id="non-resource-rule"),
    ],
)
def test_kubernetes_matching(rule: Rule, call: Call, want: bool) -> None:
    assert check([rule], call) is want


def test_load_rules_needs_the_role_bound_cluster_wide(tmp_path: Path) -> None:
    unbound = tmp_path / "rbac.yaml"
    text = RBAC.read_text()
    unbound.write_text(text.replace("kind: ClusterRoleBinding", "kind: RoleBinding"))
    with pytest.raises(ValueError, match="no ClusterRoleBinding"):
        load_rules(unbound)
    with pytest.raises(ValueError, match="expected one ClusterRole"):
        load_rules(RBAC, role="someone-else")
