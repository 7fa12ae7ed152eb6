"""Kubernetes RBAC rule matching, for checking what the daemon calls against deploy/rbac.yaml.

``load_rules`` reads the ClusterRole of deploy/rbac.yaml; ``allowed`` decides one request as the API
server's RBAC authorizer does (k8s.io/component-helpers/auth/rbac/validation: VerbMatches,
APIGroupMatches, ResourceMatches, ResourceNameMatches); ``assert_allowed`` checks a whole request log,
as the daemon's integration tests record it against the fake API server.

The role is bound by a ClusterRoleBinding, so it grants in every namespace and on cluster-scoped
resources alike: the namespace of a request never changes the answer (``load_rules`` checks the binding).
A request's ``name`` is what the API server's request info carries: the object's name for get, patch,
update and delete; empty for create; for list and watch, the name of a ``metadata.name=`` field selector,
else empty. A non-resource request (empty ``resource``: /api, /version, ...) is never allowed here: the
ClusterRole grants none (a real cluster's system:discovery role would; the daemon needs no discovery).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import yaml

ALL = "*"  # rbacv1.VerbAll, APIGroupAll, ResourceAll


@dataclass(frozen=True)
class Rule:
    """One PolicyRule of a (Cluster)Role. Rules with only nonResourceURLs have no resources and so
    match no resource request."""

    verbs: tuple[str, ...]
    api_groups: tuple[str, ...] = ()
    resources: tuple[str, ...] = ()
    resource_names: tuple[str, ...] = ()

    @classmethod
    def from_manifest(cls, rule: dict[str, Any]) -> Rule:
        return cls(
            verbs=tuple(rule.get("verbs", ())),
            api_groups=tuple(rule.get("apiGroups", ())),
            resources=tuple(rule.get("resources", ())),
            resource_names=tuple(rule.get("resourceNames", ())),
        )


class Request(Protocol):
    """What the integration tests' request log records per API call."""

    verb: str
    api_group: str
    resource: str
    subresource: str
    namespace: str
    name: str


def load_rules(path: Path | str, role: str = "cloud-cni") -> list[Rule]:
    """The rules of ClusterRole ``role`` in the manifest file ``path``, which must also bind it with a
    ClusterRoleBinding (a RoleBinding would confine it to one namespace, which ``allowed`` ignores)."""
    docs = [d for d in yaml.safe_load_all(Path(path).read_text()) if d]
    roles = [d for d in docs if d["kind"] == "ClusterRole" and d["metadata"]["name"] == role]
    if len(roles) != 1:
        raise ValueError(f"{path}: expected one ClusterRole {role}, found {len(roles)}")
    bindings = [
        d
        for d in docs
        if d["kind"] == "ClusterRoleBinding"
        and d["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role}
    ]
    if not bindings:
        raise ValueError(f"{path}: no ClusterRoleBinding binds ClusterRole {role}")
    return [Rule.from_manifest(r) for r in roles[0].get("rules") or []]


def _verb_matches(rule: Rule, verb: str) -> bool:
    return any(v in (ALL, verb) for v in rule.verbs)


def _api_group_matches(rule: Rule, api_group: str) -> bool:
    return any(g in (ALL, api_group) for g in rule.api_groups)


def _resource_matches(rule: Rule, resource: str, subresource: str) -> bool:
    combined = f"{resource}/{subresource}" if subresource else resource
    for r in rule.resources:
        if r in (ALL, combined):
            return True
        # "*/status" matches the status subresource of every resource; "nodes" matches no subresource.
        if subresource and r == f"*/{subresource}":
            return True
    return False


def _resource_name_matches(rule: Rule, name: str) -> bool:
    # No resourceNames: every name. With resourceNames, a request without a name (create, a list or
    # watch without a metadata.name field selector) is denied.
    return not rule.resource_names or name in rule.resource_names


def allowed(  # noqa: PLR0917 - the request's attributes, in the order the request log holds them
    rules: Iterable[Rule],
    verb: str,
    api_group: str,
    resource: str,
    subresource: str = "",
    namespace: str = "",
    name: str = "",
) -> bool:
    """Whether ``rules`` (bound cluster-wide) allow this resource request. ``api_group`` is "" for the
    core group. ``namespace`` is accepted for the request's sake and does not affect the answer."""
    del namespace  # a ClusterRoleBinding grants in every namespace
    return any(
        _verb_matches(rule, verb)
        and _api_group_matches(rule, api_group)
        and _resource_matches(rule, resource, subresource)
        and _resource_name_matches(rule, name)
        for rule in rules
    )


def describe(request: Request) -> str:
    group = request.api_group or "core"
    resource = f"{request.resource}/{request.subresource}" if request.subresource else request.resource
    where = f" in namespace {request.namespace}" if request.namespace else ""
    named = f" {request.name}" if request.name else ""
    return f"{request.verb} {group} {resource}{named}{where}"


def assert_allowed(rules: Iterable[Rule], request_log: Iterable[Request]) -> None:
    """Raise AssertionError listing every request in ``request_log`` that ``rules`` forbid."""
    rules = list(rules)
    forbidden = [
        describe(r)
        for r in request_log
        if not allowed(rules, r.verb, r.api_group, r.resource, r.subresource, r.namespace, r.name)
    ]
    if forbidden:
        raise AssertionError(
            f"{len(forbidden)} request(s) the ClusterRole does not allow:\n  " + "\n  ".join(forbidden)
        )
