"""deploy/admission-policy.yaml: the ValidatingAdmissionPolicy that narrows the cloud-cni service
account's cluster-wide ``patch nodes`` to "remove the startup taint from your own node".

The policy is compiled and evaluated as the API server's ValidatingAdmissionPolicy plugin evaluates it
by tests/fakes/admission.py (celpy; its docstring says how), here against a table of admission
requests. The fake API server runs the same evaluation on every update it serves, so the daemons'
real requests meet the policy too (tests/integration/test_image_cri.py).

The CEL stays in the subset both evaluators share (has(), ternaries, filter/all, size, in, ==, string +):
celpy has no heterogeneous equality and no optional types, so the policy uses neither.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import kubernetes.client.models as k8s_models
import pytest

from tests.fakes.admission import (
    SERVICE_ACCOUNT,
    Compiled,
    Verdict,
    admit,
    compile_cel,
    compile_policy,
    load_policy,
    pod_token_user,
    update_request,
)
from tests.unit.test_deploy import daemon_settings

NODE = "ip-10-0-1-17.ec2.internal"
OTHER_NODE = "ip-10-0-2-33.ec2.internal"
STARTUP_KEY = "node.cloud-cni.io/agent-not-ready"

STARTUP = {"key": STARTUP_KEY, "effect": "NoSchedule"}
STARTUP_NO_EXECUTE = {"key": STARTUP_KEY, "effect": "NoExecute"}
DEDICATED = {"key": "dedicated", "value": "gpu", "effect": "NoSchedule"}
NOT_READY = {
    "key": "node.kubernetes.io/not-ready",
    "effect": "NoExecute",
    "timeAdded": "2025-01-01T00:00:00Z",
}

Json = dict[str, Any]


@pytest.fixture(scope="module")
def compiled() -> Compiled:
    return compile_policy()


# --- requests ------------------------------------------------------------------------------------


def node(name: str = NODE, taints: list[Json] | None = None) -> Json:
    """A Node as the API server stores it (and converts it for CEL)."""
    spec: Json = {
        "podCIDR": "10.0.1.0/24",
        "podCIDRs": ["10.0.1.0/24"],
        "providerID": "aws:///us-east-1a/i-0123456789abcdef0",
    }
    if taints:
        spec["taints"] = copy.deepcopy(taints)
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "uid": "3f1c9a52-5b7e-4c1d-9a0e-2d6f8b4c7e10",
            "resourceVersion": "48213",
            "creationTimestamp": "2025-01-01T00:00:00Z",
            "labels": {
                "kubernetes.io/hostname": name,
                "kubernetes.io/os": "linux",
                "topology.kubernetes.io/zone": "us-east-1a",
            },
            "annotations": {"node.alpha.kubernetes.io/ttl": "0"},
        },
        "spec": spec,
        "status": {"capacity": {"pods": "29"}, "conditions": [{"type": "Ready", "status": "False"}]},
    }


def admission_request(
    username: str = SERVICE_ACCOUNT, token_node: str | None = NODE, extra: bool = True, name: str = NODE
) -> Json:
    """The AdmissionRequest of a PATCH of Node ``name``, by ``username`` holding a pod-bound token issued
    on ``token_node`` (None: a token without the node name; ``extra=False``: no extra at all, as for a
    legacy Secret token)."""
    return update_request(name, pod_token_user(token_node, username, extra=extra))


def taints_to(taints: list[Json] | None) -> Callable[[Json], None]:
    def change(n: Json) -> None:
        if taints is None:
            n["spec"].pop("taints", None)
        else:
            n["spec"]["taints"] = copy.deepcopy(taints)

    return change


def set_path(*path: str, value: Any) -> Callable[[Json], None]:
    def change(n: Json) -> None:
        target = n
        for key in path[:-1]:
            target = target.setdefault(key, {})
        target[path[-1]] = value

    return change


def both(*changes: Callable[[Json], None]) -> Callable[[Json], None]:
    def change(n: Json) -> None:
        for c in changes:
            c(n)

    return change


@dataclass(frozen=True)
class Case:
    old_taints: list[Json] | None
    change: Callable[[Json], None]
    want: str  # "allowed", "not matched", or the one denial message expected (a substring of it)
    username: str = SERVICE_ACCOUNT
    token_node: str | None = NODE
    extra: bool = True
    name: str = NODE


ALLOWED = "allowed"
NOT_MATCHED = "not matched"
OWN_NODE_ONLY = "may write only the Node its own pod runs on"
OTHER_TAINTS = f"may not add, remove, change or reorder any taint but {STARTUP_KEY}"
ONLY_REMOVE = f"may only remove {STARTUP_KEY}, never add or change it"
LABELS = "cloud-cni may not change a Node's labels"
ANNOTATIONS = "cloud-cni may not change a Node's annotations"
OWNERSHIP = "cloud-cni may not change a Node's finalizers or ownerReferences"
SPEC = "cloud-cni may not change a Node's spec except to remove its startup taint"

CASES = [
    # allowed: the daemon's own removal, and nothing else
    pytest.param(
        Case([DEDICATED, STARTUP, NOT_READY], taints_to([DEDICATED, NOT_READY]), ALLOWED),
        id="removes-startup-taint-keeps-others-in-order",
    ),
    pytest.param(Case([STARTUP], taints_to([]), ALLOWED), id="removes-the-only-taint-empty-list"),
    pytest.param(Case([STARTUP], taints_to(None), ALLOWED), id="removes-the-only-taint-no-list"),
    pytest.param(Case(None, taints_to(None), ALLOWED), id="no-taints-unchanged"),
    pytest.param(
        Case([STARTUP, STARTUP_NO_EXECUTE], taints_to([STARTUP_NO_EXECUTE]), ALLOWED),
        id="startup-key-with-two-effects-removes-one",
    ),
    # denied: whose node
    pytest.param(
        Case([STARTUP], taints_to([]), f"cloud-cni on node {OTHER_NODE} may not write node {NODE}",
             token_node=OTHER_NODE),
        id="another-nodes-token",
    ),
    pytest.param(
        Case([STARTUP], taints_to([]), "this token names no node", token_node=None),
        id="token-without-node-name",
    ),
    pytest.param(
        Case([STARTUP], taints_to([]), "this token names no node", extra=False),
        id="token-without-extra",
    ),
    # denied: which taints
    pytest.param(Case([DEDICATED, STARTUP], taints_to([]), OTHER_TAINTS), id="removes-another-taint-too"),
    pytest.param(
        Case([DEDICATED, STARTUP], taints_to([STARTUP]), OTHER_TAINTS), id="removes-another-taint-only"
    ),
    pytest.param(
        Case([DEDICATED, STARTUP], taints_to([DEDICATED, STARTUP, {"key": "x", "effect": "NoSchedule"}]),
             OTHER_TAINTS),
        id="adds-a-taint",
    ),
    pytest.param(
        Case([DEDICATED, STARTUP, NOT_READY], taints_to([NOT_READY, DEDICATED]), OTHER_TAINTS),
        id="reorders-other-taints",
    ),
    pytest.param(
        Case([DEDICATED, STARTUP], taints_to([{**DEDICATED, "value": "cpu"}]), OTHER_TAINTS),
        id="changes-another-taint",
    ),
    pytest.param(Case(None, taints_to([STARTUP]), ONLY_REMOVE), id="adds-the-startup-taint"),
    pytest.param(
        Case([STARTUP], taints_to([STARTUP, STARTUP_NO_EXECUTE]), ONLY_REMOVE), id="adds-a-startup-effect"
    ),
    pytest.param(
        Case([STARTUP], taints_to([STARTUP_NO_EXECUTE]), ONLY_REMOVE), id="changes-startup-taint-effect"
    ),
    # denied: anything but taints
    pytest.param(
        Case([STARTUP], set_path("metadata", "labels", "kubernetes.io/os", value="windows"), LABELS),
        id="changes-a-label",
    ),
    pytest.param(
        Case(None, set_path("metadata", "labels", "k8s.amazonaws.com/eniConfig", value="evil"), LABELS),
        id="adds-a-label",
    ),
    pytest.param(Case(None, set_path("metadata", "labels", value={}), LABELS), id="removes-all-labels"),
    pytest.param(
        Case(None, set_path("metadata", "annotations", "node.alpha.kubernetes.io/ttl", value="30"),
             ANNOTATIONS),
        id="changes-an-annotation",
    ),
    pytest.param(
        Case(None, set_path("metadata", "finalizers", value=["example.com/hold"]), OWNERSHIP),
        id="adds-a-finalizer",
    ),
    pytest.param(
        Case(None, set_path("metadata", "ownerReferences",
                            value=[{"apiVersion": "v1", "kind": "ConfigMap", "name": "x", "uid": "1"}]),
             OWNERSHIP),
        id="adds-an-owner-reference",
    ),
    pytest.param(Case(None, set_path("spec", "unschedulable", value=True), SPEC), id="cordons"),
    pytest.param(
        Case(None, set_path("spec", "providerID", value="aws:///us-east-1a/i-0fffffffffffffff0"), SPEC),
        id="changes-provider-id",
    ),
    pytest.param(
        Case(None, set_path("spec", "podCIDR", value="10.9.0.0/24"), SPEC), id="changes-pod-cidr"
    ),
    pytest.param(
        Case(None, set_path("spec", "podCIDRs", value=["10.0.1.0/24", "fd00::/64"]), SPEC),
        id="changes-pod-cidrs",
    ),
    pytest.param(
        Case([STARTUP], both(taints_to([]), set_path("metadata", "labels", "role", value="x")), LABELS),
        id="removes-startup-taint-and-changes-a-label",
    ),
    pytest.param(
        Case([STARTUP], both(taints_to([]), set_path("spec", "unschedulable", value=True)), SPEC),
        id="removes-startup-taint-and-cordons",
    ),
    # not matched: everyone else is left to RBAC
    pytest.param(
        Case([DEDICATED, STARTUP], set_path("metadata", "labels", "role", value="x"), NOT_MATCHED,
             username=f"system:node:{NODE}", extra=False),
        id="kubelet-changes-a-label",
    ),
    pytest.param(
        Case([DEDICATED, STARTUP], taints_to([]), NOT_MATCHED, username="kubernetes-admin", extra=False),
        id="admin-removes-every-taint",
    ),
    pytest.param(
        Case([STARTUP], set_path("spec", "unschedulable", value=True), NOT_MATCHED,
             username="system:serviceaccount:kube-system:cloud-cni-evil"),
        id="look-alike-service-account",
    ),
    pytest.param(
        Case([STARTUP], set_path("spec", "unschedulable", value=True), NOT_MATCHED,
             username="system:serviceaccount:default:cloud-cni"),
        id="same-name-other-namespace",
    ),
]  # fmt: skip


@pytest.mark.parametrize("case", CASES)
def test_admission(compiled: Compiled, case: Case) -> None:
    old = node(case.name, case.old_taints)
    new = copy.deepcopy(old)
    case.change(new)
    request = admission_request(case.username, case.token_node, case.extra, case.name)
    verdict = admit(compiled, request, old, new)
    if case.want == NOT_MATCHED:
        assert not verdict.matched
        return
    assert verdict.matched, "the policy must apply to the daemon's node updates"
    if case.want == ALLOWED:
        assert verdict.denials == ()
    else:
        assert len(verdict.denials) == 1 and case.want in verdict.denials[0], verdict.denials


def test_the_daemons_own_patch_request_is_matched_and_other_requests_are_not(compiled: Compiled) -> None:
    old = node(taints=[STARTUP])
    new = node()
    assert admit(compiled, admission_request(), old, new) == Verdict(matched=True)
    for operation in ("CREATE", "DELETE", "CONNECT"):
        request = {**admission_request(), "operation": operation}
        assert not admit(compiled, request, old, new).matched, operation
    status = {**admission_request(), "subResource": "status"}
    assert not admit(compiled, status, old, new).matched, "nodes/status: RBAC grants none"


# --- the policy as a whole -----------------------------------------------------------------------


def test_policy_is_enforced_and_fails_closed(compiled: Compiled) -> None:
    spec = compiled.policy["spec"]
    assert spec["failurePolicy"] == "Fail", "an expression error must deny, not admit"
    assert spec["matchConstraints"]["resourceRules"] == [
        {"apiGroups": [""], "apiVersions": ["v1"], "operations": ["UPDATE"], "resources": ["nodes"]}
    ]
    assert "paramKind" not in spec
    binding = compiled.binding["spec"]
    assert binding["policyName"] == compiled.policy["metadata"]["name"]
    assert binding["validationActions"] == ["Deny"]
    assert "paramRef" not in binding and "matchResources" not in binding


def test_every_validation_has_a_single_line_message_and_a_reason() -> None:
    policy, _ = load_policy()
    for v in policy["spec"]["validations"]:
        assert v.get("message") and "\n" not in v["message"], v["expression"]
        assert v.get("reason") == "Forbidden", v["expression"]


def test_the_startup_taint_key_is_the_daemons(compiled: Compiled) -> None:
    """The policy's key and the daemon's STARTUP_TAINT (key[=value]:Effect), as deploy/ runs it."""
    keys = [v for v in compiled.policy["spec"]["variables"] if v["name"] == "startupTaintKey"]
    assert len(keys) == 1, "the key lives in one place: the startupTaintKey variable"
    key = str(compile_cel(keys[0]["expression"]).evaluate({}))
    startup_taint = daemon_settings().startup_taint
    assert startup_taint, "the deployed daemon removes a startup taint"
    assert key == startup_taint.rpartition(":")[0].partition("=")[0] == STARTUP_KEY
    spec = compiled.policy["spec"]
    expressions = [
        e.get(k, "")
        for part in ("matchConditions", "variables", "validations")
        for e in spec.get(part, [])
        for k in ("expression", "messageExpression")
    ]
    assert sum(e.count(STARTUP_KEY) for e in expressions) == 1, "the key is written nowhere else"


def test_every_node_spec_field_but_taints_is_compared() -> None:
    """A NodeSpec field the policy does not compare could be changed by the daemon's token: the list
    follows the Kubernetes API's NodeSpec (the kubernetes client's model)."""
    policy, _ = load_policy()
    spec_rule = next(v for v in policy["spec"]["validations"] if "object.spec.providerID" in v["expression"])
    compared = set(re.findall(r"\bobject\.spec\.(\w+)", spec_rule["expression"]))
    assert compared == set(re.findall(r"\boldObject\.spec\.(\w+)", spec_rule["expression"]))
    fields = set(k8s_models.V1NodeSpec.attribute_map.values())
    assert compared == fields - {"taints"}
    for f in compared:
        has_both = f"has(object.spec.{f}) == has(oldObject.spec.{f})"
        equal = f"object.spec.{f} == oldObject.spec.{f}"
        assert has_both in spec_rule["expression"] and equal in spec_rule["expression"], f


# A value of the right type for every NodeSpec field but taints, unlike what node() holds. A field the
# Kubernetes API gains fails the test below until it is added here and compared by the policy.
OTHER_SPEC_VALUES = {
    "podCIDR": "10.9.0.0/24",
    "podCIDRs": ["10.9.0.0/24"],
    "providerID": "aws:///us-east-1b/i-0fffffffffffffff0",
    "unschedulable": True,
    "configSource": {"configMap": {"name": "c", "namespace": "kube-system", "kubeletConfigKey": "k"}},
    "externalID": "i-0fffffffffffffff0",
    "podPreemptionPolicy": {"disableResizePreemption": ["x"]},
}


@pytest.mark.parametrize("spec_field", sorted(set(k8s_models.V1NodeSpec.attribute_map.values()) - {"taints"}))
@pytest.mark.parametrize("remove_startup_taint", [False, True], ids=["alone", "with-the-taint-removal"])
def test_a_change_to_any_other_spec_field_is_denied(
    compiled: Compiled, spec_field: str, remove_startup_taint: bool
) -> None:
    spec_denied = Verdict(matched=True, denials=(SPEC,))
    old = node(taints=[STARTUP])
    new = node(taints=None if remove_startup_taint else [STARTUP])
    new["spec"][spec_field] = OTHER_SPEC_VALUES[spec_field]
    assert admit(compiled, admission_request(), old, new) == spec_denied
    # and back: the field set to what it was, or removed
    old, new = copy.deepcopy(new), node(taints=new["spec"].get("taints"))
    assert admit(compiled, admission_request(), old, new) == spec_denied
