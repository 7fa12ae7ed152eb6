"""deploy/admission-policy.yaml evaluated as kube-apiserver's ValidatingAdmissionPolicy plugin does.

Every matchCondition, variable, validation and messageExpression of the policy is compiled with celpy
(cel-python) and evaluated against an admission request:

* ``object`` and ``oldObject`` are the patched and the stored object as JSON (the API server converts
  both to unstructured maps), ``request`` the AdmissionRequest as JSON (userInfo.extra: a map of string
  lists, absent when empty), ``params`` and ``namespaceObject`` null (no paramKind; Nodes are
  cluster-scoped).
* matchConstraints, then matchConditions (any false: the policy does not apply; an error: denied, as
  failurePolicy is Fail), then every validation; a false one denies with its messageExpression, or its
  message when that is not a non-empty single line.
* ``variables``: Kubernetes evaluates each variable lazily, on first use, with access to the earlier
  ones. celpy has no lazily evaluated variables, so ``admit`` evaluates them in order up front and binds
  ``variables`` as a map of the values so far. The result is the same for side-effect-free expressions,
  except that an error in a variable no validation uses would deny here and not in Kubernetes: every
  variable of this policy is used by a validation, so that difference cannot arise.

``Admission`` plugs the policy into the fake API server (tests/fakes/kube_apiserver.py ``admission``):
every UPDATE (PUT or PATCH) is admitted or denied as the API server would, with the userInfo of the
fake's one token, so a daemon's real requests meet the policy. tests/unit/test_admission_policy.py
checks the policy itself against a table of requests.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import celpy
import yaml
from celpy import celtypes

ROOT = Path(__file__).resolve().parents[2]
POLICY_FILE = ROOT / "deploy" / "admission-policy.yaml"
SERVICE_ACCOUNT = "system:serviceaccount:kube-system:cloud-cni"
NODE_NAME_KEY = "authentication.kubernetes.io/node-name"

Json = dict[str, Any]


@dataclass
class Compiled:
    policy: Json
    binding: Json
    match_conditions: list[tuple[str, celpy.Runner]] = field(default_factory=list)
    variables: list[tuple[str, celpy.Runner]] = field(default_factory=list)
    # (validation as written, its expression, its messageExpression or None)
    validations: list[tuple[Json, celpy.Runner, celpy.Runner | None]] = field(default_factory=list)


ENV = celpy.Environment()


def compile_cel(expression: str) -> celpy.Runner:
    return ENV.program(ENV.compile(expression))


def load_policy() -> tuple[Json, Json]:
    docs = [d for d in yaml.safe_load_all(POLICY_FILE.read_text()) if d]
    kinds = sorted(d["kind"] for d in docs)
    assert kinds == ["ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding"], kinds
    policy = next(d for d in docs if d["kind"] == "ValidatingAdmissionPolicy")
    binding = next(d for d in docs if d["kind"] == "ValidatingAdmissionPolicyBinding")
    return policy, binding


@functools.cache
def compile_policy() -> Compiled:
    policy, binding = load_policy()
    spec = policy["spec"]
    c = Compiled(policy, binding)
    c.match_conditions = [(m["name"], compile_cel(m["expression"])) for m in spec["matchConditions"]]
    c.variables = [(v["name"], compile_cel(v["expression"])) for v in spec.get("variables", [])]
    for v in spec["validations"]:
        message = compile_cel(v["messageExpression"]) if "messageExpression" in v else None
        c.validations.append((v, compile_cel(v["expression"]), message))
    return c


@dataclass(frozen=True)
class Verdict:
    matched: bool
    denials: tuple[str, ...] = ()

    @property
    def allowed(self) -> bool:
        return not self.denials


def rule_matches(rule: Json, request: Json) -> bool:
    resource = request["resource"]
    name = resource["resource"] + (f"/{request['subResource']}" if request.get("subResource") else "")
    return (
        request["operation"] in rule["operations"]
        and resource["group"] in rule["apiGroups"]
        and resource["version"] in rule["apiVersions"]
        and name in rule["resources"]
    )


def is_true(value: Any, what: str) -> bool:
    assert isinstance(value, celtypes.BoolType), f"{what} evaluated to {value!r}, not a bool"
    return bool(value)


def admit(c: Compiled, request: Json, old: Json | None, new: Json | None) -> Verdict:
    spec = c.policy["spec"]
    if not any(rule_matches(r, request) for r in spec["matchConstraints"]["resourceRules"]):
        return Verdict(matched=False)
    activation: dict[str, Any] = {
        "object": celpy.json_to_cel(new),
        "oldObject": celpy.json_to_cel(old),
        "request": celpy.json_to_cel(request),
        "params": None,
        "namespaceObject": None,
    }
    try:
        for name, runner in c.match_conditions:
            if not is_true(runner.evaluate(activation), f"matchCondition {name}"):
                return Verdict(matched=False)
        values: dict[str, Any] = {}
        for name, runner in c.variables:  # in order, each seeing the earlier ones (module docstring)
            values[name] = runner.evaluate({**activation, "variables": celpy.json_to_cel(values)})
    except celpy.CELEvalError as e:  # failurePolicy Fail
        return Verdict(matched=True, denials=(f"expression error: {e}",))
    activation["variables"] = celtypes.MapType({celtypes.StringType(k): v for k, v in values.items()})
    denials = []
    for validation, runner, message_runner in c.validations:
        try:
            if is_true(runner.evaluate(activation), validation["expression"]):
                continue
        except celpy.CELEvalError as e:  # failurePolicy Fail
            denials.append(f"expression error: {e}")
            continue
        message = str(message_runner.evaluate(activation)) if message_runner else ""
        if not message.strip() or "\n" in message:
            message = validation.get("message") or f"failed expression: {validation['expression']}"
        denials.append(message)
    return Verdict(matched=True, denials=tuple(denials))


def pod_token_user(node: str | None, username: str = SERVICE_ACCOUNT, *, extra: bool = True) -> Json:
    """The userInfo of a pod-bound service account token issued on ``node`` (kubelet's projected
    token, as the DaemonSet's pod gets it); ``node`` None: a token without the node name;
    ``extra=False``: no extra at all, as for a legacy Secret token."""
    user: Json = {
        "username": username,
        "uid": "9b2d7c4e-0f3a-4e5b-8c6d-1a2b3c4d5e6f",
        "groups": ["system:serviceaccounts", "system:serviceaccounts:kube-system", "system:authenticated"],
    }
    if extra:
        user["extra"] = {
            "authentication.kubernetes.io/credential-id": ["JTI=5e2f0c1a-7b3d-4e8f-9a6b-0c1d2e3f4a5b"],
            "authentication.kubernetes.io/pod-name": ["cloud-cni-x7k2p"],
            "authentication.kubernetes.io/pod-uid": ["0d1e2f3a-4b5c-6d7e-8f90-a1b2c3d4e5f6"],
        }
        if node is not None:
            user["extra"][NODE_NAME_KEY] = [node]
            user["extra"]["authentication.kubernetes.io/node-uid"] = ["3f1c9a52-5b7e-4c1d-9a0e-2d6f8b4c7e10"]
    return user


def update_request(
    name: str,
    user: Json,
    *,
    gvk: tuple[str, str, str] = ("", "v1", "Node"),
    resource: str = "nodes",
    namespace: str = "",
    patch: bool = True,
    dry_run: bool = False,
    uid: str = "c0ffee00-1111-2222-3333-444455556666",
) -> Json:
    """The AdmissionRequest of an UPDATE (a PATCH, or with ``patch=False`` a PUT) of ``name`` by
    ``user``, as the API server hands it to admission."""
    group, version, kind = gvk
    kinds = {"group": group, "version": version, "kind": kind}
    resources = {"group": group, "version": version, "resource": resource}
    request: Json = {
        "uid": uid,
        "kind": kinds,
        "resource": resources,
        "requestKind": kinds,
        "requestResource": resources,
        "name": name,
        "operation": "UPDATE",  # a PATCH is admitted as an UPDATE
        "userInfo": user,
        "dryRun": dry_run,
        "options": {"kind": "PatchOptions" if patch else "UpdateOptions", "apiVersion": "meta.k8s.io/v1"},
    }
    if namespace:
        request["namespace"] = namespace
    return request


class Admission:
    """The policy as the fake API server's admission hook: ``(request, old, new)`` -> the denial
    messages (empty: admitted). Every decision is kept in ``decisions`` (request name, operation,
    matched, denials) so a test can see that the policy did apply."""

    def __init__(self) -> None:
        self.compiled = compile_policy()
        self.decisions: list[tuple[str, str, Verdict]] = []

    @property
    def policy_name(self) -> str:
        return str(self.compiled.policy["metadata"]["name"])

    @property
    def binding_name(self) -> str:
        return str(self.compiled.binding["metadata"]["name"])

    def __call__(self, request: Json, old: Json | None, new: Json | None) -> tuple[str, ...]:
        verdict = admit(self.compiled, request, old, new)
        self.decisions.append((str(request.get("name", "")), str(request["operation"]), verdict))
        return verdict.denials
