"""A fake Kubernetes API server (kube-apiserver over HTTPS) on 127.0.0.1, for what a node daemon uses.

The real ``kubernetes`` client (``config.load_kube_config`` / ``new_client_from_config`` with the file
``KubeApiServer.kubeconfig(path)`` writes: server URL, ``certificate-authority`` file, bearer token)
talks to it over real TLS with a throw-away CA (tests/fakes/azure_tls.py). JSON only. Nothing here
imports the daemon, so the fake checks the client.

Faithful to kube-apiserver (read from its source and the client's):

- Authentication: every request needs ``Authorization: Bearer <token>``, the scheme in any case (the
  apiserver's bearertoken authenticator: ``strings.Fields``, ``strings.ToLower(parts[0]) ==
  "bearer"``; the client's in-cluster loader sends ``bearer``); else 401 with the Status
  ``{"message": "Unauthorized", "reason": "Unauthorized"}``.
- Errors are ``Status`` objects shaped as apimachinery's ``errors.New*`` make them: NotFound
  (``nodes "x" not found``, ``details {name, group, kind=<resource>}``), AlreadyExists, Conflict
  (``Operation cannot be fulfilled on ...``), Invalid (422, ``Kind.group "name" is invalid: [f: ..]``
  with ``details.causes`` ``{reason: FieldValueRequired|..., message, field}``), Expired (410),
  BadRequest, MethodNotAllowed, UnsupportedMediaType; unknown paths are 404 "the server could not find
  the requested resource".
- One resourceVersion counter (etcd's revision), a string integer stamped on every write and on every
  List's ``metadata.resourceVersion``. A write that changes nothing (a no-op PATCH/PUT) does not bump
  it and sends no watch event. Objects get ``metadata.uid`` and ``creationTimestamp`` on create; both
  are kept by updates (a different uid in an update is a 409 "Precondition failed: UID in
  precondition").
- Lists: ``resourceVersion`` absent is a consistent read, ``0`` is "any" (served from the cache);
  both are counted separately (``list_reads()``). ``N`` > 0 is "not older than N" (N in the future:
  504 "Too large resource version" after ``too_large_rv_wait``). ``limit``/``continue`` page a
  snapshot taken at the first page (the token dies on ``compact()``: 410); ``remainingItemCount`` only
  without a label or field selector (etcd would count objects the selector drops). ``limit`` with
  ``resourceVersion=0`` is ignored: the watch cache serves the whole list, with neither ``continue`` nor
  ``remainingItemCount`` (kube-apiserver's cacher.go, checked at 1.30/1.31).
  Items of built-in lists carry no ``kind``/``apiVersion`` (custom-resource lists do), sorted by
  namespace/name. ``fieldSelector`` (``=``, ``==``, ``!=``; unsupported label: 400 "field label not
  supported: X"): ``metadata.name`` everywhere, ``metadata.namespace`` on namespaced resources,
  pods ``spec.nodeName``, ``spec.hostNetwork``, ``spec.schedulerName``, ``spec.serviceAccountName``,
  ``spec.restartPolicy``, ``status.phase``, ``status.podIP``, ``status.nominatedNodeName``, nodes
  ``spec.unschedulable``, namespaces ``status.phase``. ``labelSelector`` (every resource): ``k=v``,
  ``k==v``, ``k!=v``, ``k``, ``!k``, ``k in (a,b)``, ``k notin (a,b)``.
- Watches (``watch=true|1``): a chunked stream of ``{"type", "object"}`` lines. ``resourceVersion``
  absent or ``0``: synthetic ADDED events for the current objects, then live. ``N``: every event after
  N from the history; N older than the history (``compact()``, ``max_history``): one ERROR event
  holding a 410 ``Expired`` Status ("too old resource version: N (M)") in a 200 stream, then the end
  (what the watch cache does). ``allowWatchBookmarks=true``: BOOKMARK events (object: ``kind``,
  ``apiVersion``, ``metadata.resourceVersion`` only) every ``bookmark_interval`` seconds and on
  ``send_bookmarks()``, always after every event they cover; never without the flag.
  ``timeoutSeconds``: the stream ends cleanly (terminating chunk) after that long. Selectors apply to
  events as the cacher applies them: an object that starts matching is ADDED, one that stops matching
  is DELETED (its previous content, the new resourceVersion). DELETED events carry the last state
  stamped with the deletion's resourceVersion. A watch on a named object is a watch filtered on
  ``metadata.name``.
- PATCH (``application/json-patch+json``: RFC 6902 add/remove/replace/move/copy/test, a failed op is
  422 ``Invalid`` "the server rejected our request due to an error in our request" with empty
  details, as ``NewGenericServerResponse`` makes it, and nothing changes; ``application/merge-patch+json``:
  RFC 7386; ``application/strategic-merge-patch+json``: maps merge, ``null`` deletes, lists without a
  patch strategy are atomic and replaced whole (``spec.taints``), the lists kube merges by key are
  merged (``status.conditions``/``status.addresses`` by type, ``metadata.ownerReferences`` by uid,
  ``spec.containers``/``initContainers``/``volumes`` by name, ``metadata.finalizers`` and
  ``spec.podCIDRs`` as sets), ``$patch: replace|delete`` and ``$deleteFromPrimitiveList/`` honoured;
  strategic merge on a custom resource: 415). A patch or PUT whose ``metadata.resourceVersion`` is not
  the current one: 409 Conflict; PUT without one is unconditional. Writes through the main resource
  keep the old ``status`` of nodes and pods (their status subresource owns it).
- Validation (422 naming the fields, ``field.Error`` texts): object names (DNS subdomain), labels
  (qualified-name keys, label values), annotation keys and total size (256 KiB); node taints (key,
  value, effect ``NoSchedule|PreferNoSchedule|NoExecute``, unique key+effect); events.k8s.io/v1 as
  ``ValidateEventCreate``/``ValidateEventUpdate`` with their quirks: the error paths are the
  *internal* field names (``message`` for ``note``, ``involvedObject.namespace`` for
  ``regarding.namespace``, ``firstTimestamp``/``lastTimestamp``/``count``/``source`` for the
  ``deprecated*`` fields); with ``eventTime`` unset only ``eventTime``/``type``/namespace errors
  appear (the reporting fields are checked only when it is set); ``reportingController`` is a
  qualified name (name part <= 63, not 128); ``reportingInstance``/``action``/``reason`` <= 128 bytes
  and required; ``note`` <= 1024 bytes; ``type`` Normal|Warning; ``series.count`` >= 2 and
  ``series.lastObservedTime`` required; an event about a cluster-scoped object (``regarding`` without
  a namespace) may only live in ``default`` or ``kube-system``; on update every field but ``series``
  (and metadata) is immutable. MicroTime fields (``eventTime``, ``series.lastObservedTime``) must have
  exactly six fractional digits and a zone (Go's ``2006-01-02T15:04:05.000000Z07:00``): anything else
  is a 400 decode error on POST/PUT ("cannot be handled as a Event: parsing time ...") and a 422
  ``patch`` error on PATCH; stored times come back in UTC ``...Z``. Creating in a namespace that does
  not exist: 404 ``namespaces "x" not found`` (``add_namespace``; default, kube-system, kube-public,
  kube-node-lease exist, and ``add_pod`` creates its namespace). A create carrying a numeric
  resourceVersion: 500 "resourceVersion should not be set on objects to be created".
- Namespaces are stored objects like any other (the four defaults are created with the server, so
  they are in the watch history): ``metadata.labels`` always holds ``kubernetes.io/metadata.name:
  <name>`` (the namespace strategy sets it on create and resets it on update: it cannot be removed or
  changed), ``spec.finalizers: [kubernetes]``, ``status.phase: Active``. Deleting one is what the API
  and the namespace controller do together: MODIFIED (``deletionTimestamp``, phase ``Terminating``),
  DELETED for everything in it (pods, events, NetworkPolicies), then DELETED for the namespace with
  its finalizer gone; default, kube-system and kube-public cannot be deleted (NamespaceLifecycle).
- Defaulting as the API's SetDefaults functions do: container ports get ``protocol: TCP`` (and, on a
  hostNetwork pod, ``hostPort`` = ``containerPort``); a NetworkPolicy spec gets ``podSelector: {}``
  when absent, ``protocol: TCP`` on rule ports, and ``policyTypes`` ``[Ingress]`` (plus ``Egress``
  when it has egress rules) when it has none. NetworkPolicy ``metadata.generation`` starts at 1 and
  goes up with each spec change.
- 429s are what API Priority and Fairness / max-in-flight send: ``text/plain`` "Too many requests,
  please try again later." with ``Retry-After`` (``fail_next(..., body="status")`` sends a
  ``TooManyRequests`` Status with ``details.retryAfterSeconds`` instead).

Routes: core/v1 ``nodes`` (cluster; get, list, watch, update, patch), core/v1 ``namespaces`` (cluster;
get, list, watch: ``/api/v1/namespaces[/x]``, a request the log records, as RequestInfo does, in
namespace x), core/v1 ``pods`` (get, list, watch; all namespaces at ``/api/v1/pods``),
events.k8s.io/v1 ``events`` (create, get, list, watch, update, patch, delete), networking.k8s.io/v1
``networkpolicies`` (get, list, watch; all namespaces at ``/apis/networking.k8s.io/v1/networkpolicies``,
one at ``/apis/networking.k8s.io/v1/namespaces/<ns>/networkpolicies``), crd.k8s.amazonaws.com/v1alpha1
``eniconfigs`` (cluster; get, list, watch), and ``/version``, ``/healthz``, ``/readyz``, ``/livez``.

The fake's choices (where it is not kube-apiserver):

- Other verbs on these resources are 405 MethodNotAllowed (kube would allow them, RBAC permitting);
  subresources (``/status``, ...), other resources and discovery (``/api``, ``/apis``) are 404.
  Server-side apply (``application/apply-patch+yaml``), YAML, protobuf and CBOR bodies are 415.
  ``sendInitialEvents`` is 400. ``fieldValidation``, ``fieldManager`` and ``managedFields`` are
  ignored; ``dryRun=All`` is honoured.
- ``resourceVersionMatch=Exact`` for anything but the current resourceVersion is a 410 (as if
  compacted: the fake keeps no old snapshots).
- Bookmarks default to every second (kube: about a minute); a watch never times out unless asked
  (kube: 30-60 min); an RV ahead of the server waits ``too_large_rv_wait`` (default 0.2 s; kube 3 s).
- Events are not garbage-collected (kube: 1 h TTL). No RBAC (use the request log). Admission only as
  given: ``admission`` validates every UPDATE (tests/fakes/admission.py runs deploy/admission-policy.yaml),
  with ``user_info`` as the token's user; none by default.
- A namespace is deleted at once, in the order above, without the controller's intermediate writes
  (the ``finalize`` update, ``status.conditions``); its pods go without a graceful phase. A
  NetworkPolicy spec is defaulted but not validated.
- ``add_pod``, ``set_pod_labels`` and the namespace and NetworkPolicy model methods refuse (ValueError)
  the names and labels the API would refuse with a 422, so a test cannot set up a cluster
  kube-apiserver would not hold (an invalid label would just match nothing).

Knobs (thread-safe): ``latency`` (seconds, or a function of the ``KubeRequest`` being served, slept
after the request is read), ``fail_next(n, status, retry_after=None, path_contains=None, *,
verb=None, body=None)`` (the next n matching requests, after authentication), ``expire_next_watches(n)``
(the next n watches are answered HTTP 410 before streaming), ``drop_connections_next(n,
path_contains=None)`` (read the request, close the TCP connection unanswered), ``refuse()`` /
``accept()`` (close the listening socket and every open connection, so connects are refused; reopen
on the same port), ``drop_watches()`` (cut every open watch mid-stream: no terminating chunk),
``send_bookmarks()``, ``compact()``, ``max_history``, ``bookmark_interval``, ``token``.

Inspection: ``requests`` (``KubeRequest`` per request: verb as RBAC names it - get, list, watch,
create, update, patch, delete, deletecollection; for non-resource URLs the lower-case HTTP method -,
api_group, version, resource, subresource, namespace, name - for list/watch the name a
``metadata.name`` field selector names, as RequestInfo does -, query, content_type, status - 0 when
dropped -, plus t (time.monotonic() at arrival), method, path, user_agent), ``requests_between(t0,
t1)``, ``clear_requests()``, ``list_reads(resource)`` / ``stats``, ``open_watches``,
``wait_for_watches(n)``, ``resource_version``, ``latest_rv(kind)`` (the last change of one kind),
``get(kind, namespace, name)``, ``objects(kind)``,
``events()``, ``errors`` (exceptions inside the fake: a test should find it empty),
``last_patch_error`` (the JSON-patch failure kube does not send back).

Model (writes bump the resourceVersion and reach watches like API writes; the ``set_*`` methods and
``put_network_policy`` with nothing to change write nothing, as a no-op update): ``put_node(dict)``,
``add_node(name, ...)``, ``patch_node_direct(name, fn)``, ``add_pod(namespace, name, node_name, uid=None,
*, labels, annotations, phase, pod_ip, host_network, containers)`` (``containers``: full container
dicts, ``ports`` included; default one pause container), ``update_pod(namespace, name, fn)`` (any
edit), ``set_pod_labels(namespace, name, labels)``, ``delete_pod(namespace, name, graceful=False)``,
``add_namespace(name, *, labels=None)`` (idempotent: an existing one changes only when ``labels`` are
given), ``set_namespace_labels(name, labels)`` (the user labels, replaced), ``delete_namespace(name)``,
``put_network_policy(namespace, name, spec, *, labels=None)`` (create or replace; the namespace must
exist, else KeyError), ``delete_network_policy(namespace, name)``, ``put_eniconfig(name, spec)``,
``delete_eniconfig(name)``. Missing objects: the ``delete_*`` methods return None, the others raise
KeyError.

Fixtures: ``kube_tls`` (session: certificate files), ``kube_apiserver`` (a started fake per test).
"""

from __future__ import annotations

import base64
import contextlib
import copy
import dataclasses
import datetime
import json
import queue
import re
import secrets
import select
import socket
import socketserver
import threading
import time
import uuid
from collections import Counter, deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import pytest

from tests.fakes.admission import update_request
from tests.fakes.azure_tls import TlsFiles, make_tls_files, shared_tls_files
from tests.fakes.http_handler import FakeHandler

DEFAULT_NAMESPACES = ("default", "kube-system", "kube-public", "kube-node-lease")
# NamespaceLifecycle admission refuses to delete these ("this namespace may not be deleted").
IMMORTAL_NAMESPACES = ("default", "kube-system", "kube-public")
# Set by the namespace strategy on every create and update, to the namespace's name (since 1.21), so
# that NetworkPolicy namespaceSelectors can pick a namespace by name; a user cannot remove or change it.
NAMESPACE_NAME_LABEL = "kubernetes.io/metadata.name"
# Path parts after /namespaces/<name> that are subresources of that namespace, not a resource in it.
_NAMESPACE_SUBRESOURCES = ("status", "finalize")
NETWORKING_GROUP = "networking.k8s.io"
ENICONFIG_GROUP = "crd.k8s.amazonaws.com"
ENICONFIG_VERSION = "v1alpha1"
JSON_PATCH = "application/json-patch+json"
MERGE_PATCH = "application/merge-patch+json"
STRATEGIC_MERGE_PATCH = "application/strategic-merge-patch+json"
APPLY_PATCH = "application/apply-patch+yaml"
TAINT_EFFECTS = ("NoSchedule", "PreferNoSchedule", "NoExecute")
MAX_ANNOTATIONS_BYTES = 256 * 1024
VERSION_INFO = {
    "major": "1",
    "minor": "33",
    "gitVersion": "v1.33.0-fake",
    "gitCommit": "0000000000000000000000000000000000000000",
    "gitTreeState": "clean",
    "buildDate": "2025-01-01T00:00:00Z",
    "goVersion": "go1.24.0",
    "compiler": "gc",
    "platform": "linux/amd64",
}
_GENERIC_422 = "the server rejected our request due to an error in our request"
_MODIFIED_SINCE = (
    "the object has been modified; please apply your changes to the latest version and try again"
)
_NAME_SUFFIX_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"  # apiserver's generateName alphabet

# --- Status objects -----------------------------------------------------------------------------


def status_body(
    code: int, reason: str, message: str, details: dict[str, Any] | None = None
) -> dict[str, Any]:
    """A failure ``Status`` as kube-apiserver serialises it (field order included)."""
    body: dict[str, Any] = {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
    }
    if reason:
        body["reason"] = reason
    if details is not None:
        body["details"] = details
    body["code"] = code
    return body


def _bearer_token(header: str | None) -> str | None:
    """The token of an ``Authorization`` header, as kube-apiserver's bearer token authenticator reads
    it (k8s.io/apiserver/pkg/authentication/request/bearertoken): whitespace-separated fields, the
    first ``bearer`` in any case, the token the second; None when it is not a bearer header."""
    parts = (header or "").split()
    if len(parts) < 2 or parts[0].lower() != "bearer":
        return None
    return parts[1]


class KubeError(Exception):
    """An API error: the HTTP status, the Status body (or text) and extra headers."""

    def __init__(
        self,
        code: int,
        reason: str,
        message: str,
        details: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.body: dict[str, Any] | str = status_body(code, reason, message, details)
        self.headers = headers or {}


@dataclass(frozen=True)
class _Resource:
    group: str
    version: str
    plural: str
    kind: str
    namespaced: bool
    verbs: frozenset[str]
    fields: dict[str, Callable[[dict[str, Any]], str]]
    builtin: bool  # strategic merge allowed; list items without kind/apiVersion
    status_subresource: bool  # writes to the main resource keep the old status

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def qualified(self) -> str:
        """GroupResource.String(): ``nodes``, ``events.events.k8s.io``."""
        return f"{self.plural}.{self.group}" if self.group else self.plural

    @property
    def group_kind(self) -> str:
        """GroupKind.String(): ``Node``, ``Event.events.k8s.io``."""
        return f"{self.kind}.{self.group}" if self.group else self.kind


def _details(res: _Resource | None, name: str = "") -> dict[str, Any]:
    details: dict[str, Any] = {}
    if name:
        details["name"] = name
    if res is not None:
        if res.group:
            details["group"] = res.group
        details["kind"] = res.plural
    return details


def _not_found(res: _Resource, name: str) -> KubeError:
    return KubeError(404, "NotFound", f'{res.qualified} "{name}" not found', _details(res, name))


def _namespace_not_found(namespace: str) -> KubeError:
    return KubeError(
        404, "NotFound", f'namespaces "{namespace}" not found', {"name": namespace, "kind": "namespaces"}
    )


def _already_exists(res: _Resource, name: str) -> KubeError:
    return KubeError(409, "AlreadyExists", f'{res.qualified} "{name}" already exists', _details(res, name))


def _conflict(res: _Resource, name: str, why: str = _MODIFIED_SINCE) -> KubeError:
    return KubeError(
        409,
        "Conflict",
        f'Operation cannot be fulfilled on {res.qualified} "{name}": {why}',
        _details(res, name),
    )


def _path_not_found() -> KubeError:
    return KubeError(404, "NotFound", "the server could not find the requested resource", {})


def _bad_request(message: str) -> KubeError:
    return KubeError(400, "BadRequest", message)


def _expired(message: str) -> KubeError:
    return KubeError(410, "Expired", message)


def _method_not_supported(res: _Resource, verb: str) -> KubeError:
    details: dict[str, Any] = {"group": res.group, "kind": res.plural} if res.group else {"kind": res.plural}
    return KubeError(
        405, "MethodNotAllowed", f'{verb} is not supported on resources of kind "{res.qualified}"', details
    )


def _unsupported_media(accepted: str) -> KubeError:
    return KubeError(
        415,
        "UnsupportedMediaType",
        f"the body of the request was in an unknown format - accepted media types include: {accepted}",
    )


def _too_large_rv(requested: int, current: int) -> dict[str, Any]:
    return status_body(
        504,
        "Timeout",
        f"Too large resource version: {requested}, current: {current}",
        {
            "causes": [{"reason": "ResourceVersionTooLarge", "message": "Too large resource version"}],
            "retryAfterSeconds": 1,
        },
    )


# --- field validation (apimachinery's field.Error and validation helpers) -----------------------

_ERROR_TEXT = {
    "FieldValueRequired": "Required value",
    "FieldValueInvalid": "Invalid value",
    "FieldValueNotSupported": "Unsupported value",
    "FieldValueDuplicate": "Duplicate value",
    "FieldValueForbidden": "Forbidden",
    "FieldValueTooLong": "Too long",
}


class _GoRepr(str):
    """A value field.Error prints verbatim (Go's %#v of a struct)."""


@dataclass(frozen=True)
class FieldError:
    type: str
    field: str
    value: Any = ""
    detail: str = ""

    def body(self) -> str:
        text = _ERROR_TEXT[self.type]
        if self.type not in ("FieldValueRequired", "FieldValueForbidden", "FieldValueTooLong"):
            text = f"{text}: {_go_value(self.value)}"
        if self.detail:
            text += f": {self.detail}"
        return text

    def __str__(self) -> str:
        return f"{self.field}: {self.body()}"


def _go_value(value: Any) -> str:
    if isinstance(value, _GoRepr):
        return str(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    if value is None:
        return "null"
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def _required(path: str, detail: str = "") -> FieldError:
    return FieldError("FieldValueRequired", path, "", detail)


def _invalid_field(path: str, value: Any, detail: str) -> FieldError:
    return FieldError("FieldValueInvalid", path, value, detail)


def _invalid(res: _Resource, name: str, errs: list[FieldError]) -> KubeError:
    messages = list(dict.fromkeys(str(err) for err in errs))
    aggregate = messages[0] if len(messages) == 1 else "[" + ", ".join(messages) + "]"
    details: dict[str, Any] = {}
    if name:
        details["name"] = name
    if res.group:
        details["group"] = res.group
    if res.kind:
        details["kind"] = res.kind
    details["causes"] = [{"reason": e.type, "message": e.body(), "field": e.field} for e in errs]
    return KubeError(422, "Invalid", f'{res.group_kind} "{name}" is invalid: {aggregate}', details)


def _generic_invalid() -> KubeError:
    """What a failed JSON patch becomes: NewGenericServerResponse(422, ...) without causes."""
    return KubeError(422, "Invalid", _GENERIC_422, {})


_QNAME_FMT = "([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]"
_QNAME_MSG = (
    "must consist of alphanumeric characters, '-', '_' or '.', "
    "and must start and end with an alphanumeric character"
)
_DNS1123_SUBDOMAIN_FMT = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*"
_LABEL_VALUE_FMT = r"(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?"


def _blen(value: str) -> int:
    """Go's len(): bytes."""
    return len(value.encode())


def _regex_error(message: str, fmt: str, *examples: str) -> str:
    if not examples:
        return f"{message} (regex used for validation is '{fmt}')"
    text = message + " (e.g. "
    for i, example in enumerate(examples):
        if i:
            text += " or "
        text += f"'{example}', "
    return text + f"regex used for validation is '{fmt}')"


def is_dns1123_subdomain(value: str) -> list[str]:
    errs = []
    if _blen(value) > 253:
        errs.append("must be no more than 253 characters")
    if not re.fullmatch(_DNS1123_SUBDOMAIN_FMT, value):
        errs.append(
            _regex_error(
                "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or "
                "'.', and must start and end with an alphanumeric character",
                _DNS1123_SUBDOMAIN_FMT,
                "example.com",
            )
        )
    return errs


def is_qualified_name(value: str) -> list[str]:
    parts = value.split("/")
    errs: list[str] = []
    if len(parts) == 1:
        name = parts[0]
    elif len(parts) == 2:
        prefix, name = parts
        if not prefix:
            errs.append("prefix part must be non-empty")
        else:
            errs.extend("prefix part " + msg for msg in is_dns1123_subdomain(prefix))
    else:
        return [
            "a qualified name "
            + _regex_error(_QNAME_MSG, _QNAME_FMT, "MyName", "my.name", "123-abc")
            + " with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')"
        ]
    if not name:
        errs.append("name part must be non-empty")
    elif _blen(name) > 63:
        errs.append("name part must be no more than 63 characters")
    if not re.fullmatch(_QNAME_FMT, name):
        errs.append("name part " + _regex_error(_QNAME_MSG, _QNAME_FMT, "MyName", "my.name", "123-abc"))
    return errs


def is_valid_label_value(value: str) -> list[str]:
    errs = []
    if _blen(value) > 63:
        errs.append("must be no more than 63 characters")
    if not re.fullmatch(_LABEL_VALUE_FMT, value):
        errs.append(
            _regex_error(
                "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or "
                "'.', and must start and end with an alphanumeric character",
                _LABEL_VALUE_FMT,
                "MyValue",
                "my_value",
                "12345",
            )
        )
    return errs


def _validate_meta(meta: dict[str, Any], *, create: bool) -> list[FieldError]:
    errs: list[FieldError] = []
    name = meta.get("name") or ""
    if create and not name and not meta.get("generateName"):
        errs.append(_required("metadata.name", "name or generateName is required"))
    if name:
        errs.extend(_invalid_field("metadata.name", name, msg) for msg in is_dns1123_subdomain(name))
    for key, value in (meta.get("labels") or {}).items():
        errs.extend(_invalid_field("metadata.labels", key, msg) for msg in is_qualified_name(key))
        errs.extend(_invalid_field("metadata.labels", value, msg) for msg in is_valid_label_value(value))
    total = 0
    for key, value in (meta.get("annotations") or {}).items():
        errs.extend(
            _invalid_field("metadata.annotations", key, msg) for msg in is_qualified_name(key.lower())
        )
        total += _blen(key) + _blen(value)
    if total > MAX_ANNOTATIONS_BYTES:
        errs.append(
            FieldError(
                "FieldValueTooLong",
                "metadata.annotations",
                "",
                f"must have at most {MAX_ANNOTATIONS_BYTES} bytes",
            )
        )
    return errs


def _validate_node(node: dict[str, Any]) -> list[FieldError]:
    errs: list[FieldError] = []
    seen: dict[str, set[str]] = {}
    for i, taint in enumerate((node.get("spec") or {}).get("taints") or []):
        path = f"spec.taints[{i}]"
        key, value, effect = taint.get("key") or "", taint.get("value") or "", taint.get("effect") or ""
        errs.extend(_invalid_field(f"{path}.key", key, msg) for msg in is_qualified_name(key))
        value_errs = is_valid_label_value(value)
        if value_errs:
            errs.append(_invalid_field(f"{path}.value", value, ";".join(value_errs)))
        if not effect:
            errs.append(_required(f"{path}.effect"))
        elif effect not in TAINT_EFFECTS:
            supported = ", ".join(json.dumps(e) for e in TAINT_EFFECTS)
            errs.append(
                FieldError(
                    "FieldValueNotSupported", f"{path}.effect", effect, f"supported values: {supported}"
                )
            )
        if key in seen.get(effect, set()):
            repr_ = f'core.Taint{{Key:"{key}", Value:"{value}", Effect:"{effect}", TimeAdded:<nil>}}'
            errs.append(
                FieldError(
                    "FieldValueDuplicate",
                    path,
                    _GoRepr(repr_),
                    "taints must be unique by key and effect pair",
                )
            )
            continue
        seen.setdefault(effect, set()).add(key)
    return errs


# events.k8s.io/v1 field -> the internal (core.Event) name validation reports.
_EVENT_IMMUTABLE = (
    ("regarding", "involvedObject"),
    ("reason", "reason"),
    ("note", "message"),
    ("deprecatedSource", "source"),
    ("deprecatedFirstTimestamp", "firstTimestamp"),
    ("deprecatedLastTimestamp", "lastTimestamp"),
    ("deprecatedCount", "count"),
    ("type", "type"),
    ("eventTime", "eventTime"),
    ("action", "action"),
    ("related", "related"),
    ("reportingController", "reportingController"),
    ("reportingInstance", "reportingInstance"),
)


def _validate_event(event: dict[str, Any], *, old: dict[str, Any] | None) -> list[FieldError]:
    """ValidateEventCreate / ValidateEventUpdate for requests to events.k8s.io/v1."""
    errs: list[FieldError] = []
    meta = event.get("metadata") or {}
    namespace = meta.get("namespace") or ""
    regarding_ns = (event.get("regarding") or {}).get("namespace") or ""
    event_time = event.get("eventTime")
    # legacyValidateEvent
    if not event_time:
        if not regarding_ns:
            if namespace not in ("", "default"):
                errs.append(
                    _invalid_field("involvedObject.namespace", regarding_ns, "does not match event.namespace")
                )
        elif namespace != regarding_ns:
            errs.append(
                _invalid_field("involvedObject.namespace", regarding_ns, "does not match event.namespace")
            )
    else:
        if not regarding_ns and namespace not in ("default", "kube-system"):
            errs.append(
                _invalid_field("involvedObject.namespace", regarding_ns, "does not match event.namespace")
            )
        controller = event.get("reportingController") or ""
        if not controller:
            errs.append(_required("reportingController"))
        errs.extend(
            _invalid_field("reportingController", controller, msg) for msg in is_qualified_name(controller)
        )
        for name in ("reportingInstance", "action", "reason"):
            value = event.get(name) or ""
            if not value:
                errs.append(_required(name))
            if _blen(value) > 128:
                errs.append(_invalid_field(name, "", "can have at most 128 characters"))
        if _blen(event.get("note") or "") > 1024:
            errs.append(_invalid_field("message", "", "can have at most 1024 characters"))
    if old is None:
        errs.extend(_validate_meta(meta, create=True))
        errs.extend(_validate_series(event))
        if not event_time:
            errs.append(_required("eventTime"))
        if event.get("type") not in ("Normal", "Warning"):
            errs.append(_invalid_field("type", "", f"has invalid value: {event.get('type') or ''}"))
        if event.get("deprecatedFirstTimestamp"):
            errs.append(_invalid_field("firstTimestamp", "", "needs to be unset"))
        if event.get("deprecatedLastTimestamp"):
            errs.append(_invalid_field("lastTimestamp", "", "needs to be unset"))
        if event.get("deprecatedCount"):
            errs.append(_invalid_field("count", "", "needs to be unset"))
        source = event.get("deprecatedSource") or {}
        if source.get("component") or source.get("host"):
            errs.append(_invalid_field("source", "", "needs to be unset"))
        return errs
    errs.extend(_validate_meta(meta, create=False))
    if event.get("series") != old.get("series"):
        errs.extend(_validate_series(event))
    for v1_name, internal in _EVENT_IMMUTABLE:
        if (event.get(v1_name) or None) != (old.get(v1_name) or None):
            errs.append(_invalid_field(internal, event.get(v1_name), "field is immutable"))
    return errs


def _validate_series(event: dict[str, Any]) -> list[FieldError]:
    series = event.get("series")
    if series is None:
        return []
    errs = []
    if (series.get("count") or 0) < 2:
        errs.append(_invalid_field("series.count", "", "should be at least 2"))
    if not series.get("lastObservedTime"):
        errs.append(_required("series.lastObservedTime"))
    return errs


# --- decoding (what the apiserver's JSON decoder rejects before validation) ---------------------


class _DecodeError(Exception):
    pass


_MICRO_RE = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}(Z|[+-]\d{2}:\d{2})")
_TIME_RE = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})")


def _parse_micro_time(value: str) -> str:
    """metav1.MicroTime: exactly RFC3339Micro; stored and returned in UTC."""
    if not _MICRO_RE.fullmatch(value):
        if re.match(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}", value):
            rest, layout = value[19:], ".000000"
        else:
            rest, layout = value, "2006"
        raise _DecodeError(
            f'parsing time "{value}" as "2006-01-02T15:04:05.000000Z07:00": '
            f'cannot parse "{rest}" as "{layout}"'
        )
    parsed = datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))
    return parsed.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _parse_time(value: str) -> str:
    """metav1.Time: RFC3339, stored with second precision in UTC."""
    if not _TIME_RE.fullmatch(value):
        raise _DecodeError(
            f'parsing time "{value}" as "2006-01-02T15:04:05Z07:00": cannot parse "{value}" as "2006"'
        )
    parsed = datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))
    return parsed.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _json_type(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return "null"


def _expect(value: Any, kind: str, where: str, go_type: str) -> None:
    if value is None:
        return
    ok = {
        "string": isinstance(value, str),
        "int": isinstance(value, int) and not isinstance(value, bool),
        "object": isinstance(value, dict),
        "array": isinstance(value, list),
    }[kind]
    if not ok:
        raise _DecodeError(
            f"json: cannot unmarshal {_json_type(value)} into Go struct field {where} of type {go_type}"
        )


def _decode(res: _Resource, obj: Any) -> dict[str, Any]:
    """Type checks and normalisation of a body (or a patch result) the way decoding into Go does."""
    if not isinstance(obj, dict):
        raise _DecodeError(f"json: cannot unmarshal {_json_type(obj)} into Go value of type struct")
    obj = copy.deepcopy(obj)
    meta = obj.get("metadata")
    _expect(meta, "object", f"{res.kind}.metadata", "v1.ObjectMeta")
    meta = obj.setdefault("metadata", {}) if meta is None else meta
    for name in ("name", "namespace", "generateName", "resourceVersion", "uid"):
        _expect(meta.get(name), "string", f"ObjectMeta.metadata.{name}", "string")
    for name in ("labels", "annotations"):
        mapping = meta.get(name)
        _expect(mapping, "object", f"ObjectMeta.metadata.{name}", "map[string]string")
        for value in (mapping or {}).values():
            _expect(value, "string", f"ObjectMeta.metadata.{name}", "string")
    for name in ("creationTimestamp", "deletionTimestamp"):
        if isinstance(meta.get(name), str):
            meta[name] = _parse_time(meta[name])
    if res.plural == "events":
        for name in ("action", "note", "reason", "reportingController", "reportingInstance", "type"):
            _expect(obj.get(name), "string", f"Event.{name}", "string")
        _expect(obj.get("deprecatedCount"), "int", "Event.deprecatedCount", "int32")
        if obj.get("eventTime") is not None:
            _expect(obj["eventTime"], "string", "Event.eventTime", "v1.MicroTime")
            obj["eventTime"] = _parse_micro_time(obj["eventTime"])
        for name in ("deprecatedFirstTimestamp", "deprecatedLastTimestamp"):
            if obj.get(name) is not None:
                _expect(obj[name], "string", f"Event.{name}", "v1.Time")
                obj[name] = _parse_time(obj[name])
        series = obj.get("series")
        _expect(series, "object", "Event.series", "v1.EventSeries")
        if series:
            _expect(series.get("count"), "int", "EventSeries.series.count", "int32")
            if series.get("lastObservedTime") is not None:
                _expect(
                    series["lastObservedTime"],
                    "string",
                    "EventSeries.series.lastObservedTime",
                    "v1.MicroTime",
                )
                series["lastObservedTime"] = _parse_micro_time(series["lastObservedTime"])
    if res.plural == "nodes":
        spec = obj.get("spec")
        _expect(spec, "object", "Node.spec", "v1.NodeSpec")
        taints = (spec or {}).get("taints")
        _expect(taints, "array", "NodeSpec.spec.taints", "[]v1.Taint")
        for taint in taints or []:
            _expect(taint, "object", "NodeSpec.spec.taints", "v1.Taint")
            for name in ("key", "value", "effect"):
                _expect(taint.get(name), "string", f"Taint.spec.taints.{name}", "string")
    return dict(obj)


# --- patches ------------------------------------------------------------------------------------


class _PatchError(Exception):
    pass


def _json_equal(a: Any, b: Any) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, int | float) and isinstance(b, int | float):
        return a == b
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_json_equal(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(_json_equal(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


def _pointer(path: Any) -> list[str]:
    if not isinstance(path, str):
        raise _PatchError(f"invalid path: {path!r}")
    if path == "":
        return []
    if not path.startswith("/"):
        raise _PatchError(f"JSON pointer must be empty or start with a '/': {path}")
    return [part.replace("~1", "/").replace("~0", "~") for part in path[1:].split("/")]


def _index(token: str, length: int, *, allow_end: bool) -> int:
    if token == "-" and allow_end:
        return length
    if not token.isdigit():
        raise _PatchError(f"invalid array index: {token}")
    idx = int(token)
    if idx > length or (idx == length and not allow_end):
        raise _PatchError(f"array index out of bounds: {idx}")
    return idx


def _parent(doc: Any, tokens: list[str], op: str, path: str) -> Any:
    cur = doc
    for token in tokens[:-1]:
        if isinstance(cur, dict) and token in cur:
            cur = cur[token]
        elif isinstance(cur, list) and token.isdigit() and int(token) < len(cur):
            cur = cur[int(token)]
        else:
            raise _PatchError(f"{op} operation does not apply: doc is missing path: {path}: missing value")
    return cur


def _get(doc: Any, tokens: list[str], op: str, path: str) -> Any:
    if not tokens:
        return doc
    parent = _parent(doc, tokens, op, path)
    key = tokens[-1]
    if isinstance(parent, dict) and key in parent:
        return parent[key]
    if isinstance(parent, list) and key.isdigit() and int(key) < len(parent):
        return parent[int(key)]
    raise _PatchError(f"{op} operation does not apply: doc is missing key: {path}: missing value")


def _add(doc: Any, tokens: list[str], value: Any, path: str) -> Any:
    if not tokens:
        return value
    parent = _parent(doc, tokens, "add", path)
    key = tokens[-1]
    if isinstance(parent, dict):
        parent[key] = value
    elif isinstance(parent, list):
        parent.insert(_index(key, len(parent), allow_end=True), value)
    else:
        raise _PatchError(f"add operation does not apply: doc is missing path: {path}: missing value")
    return doc


def _remove(doc: Any, tokens: list[str], path: str, op: str = "remove") -> Any:
    if not tokens:
        raise _PatchError(f"{op} operation does not apply: cannot remove the whole document")
    parent = _parent(doc, tokens, op, path)
    key = tokens[-1]
    if isinstance(parent, dict) and key in parent:
        del parent[key]
    elif isinstance(parent, list) and key.isdigit() and int(key) < len(parent):
        del parent[int(key)]
    else:
        raise _PatchError(f"Unable to remove nonexistent key: {key}: missing value")
    return doc


def apply_json_patch(doc: Any, patch: Any) -> Any:
    """RFC 6902 on a copy of ``doc``; a failed operation raises and changes nothing."""
    if not isinstance(patch, list) or not all(isinstance(op, dict) for op in patch):
        raise ValueError("json: cannot unmarshal object into Go value of type jsonpatch.Patch")
    doc = copy.deepcopy(doc)
    for op in patch:
        kind = op.get("op")
        path = op.get("path")
        tokens = _pointer(path)
        if kind == "add":
            doc = _add(doc, tokens, copy.deepcopy(op.get("value")), path)
        elif kind == "remove":
            doc = _remove(doc, tokens, path)
        elif kind == "replace":
            _get(doc, tokens, "replace", path)
            if tokens:
                _remove(doc, tokens, path, "replace")
            doc = _add(doc, tokens, copy.deepcopy(op.get("value")), path)
        elif kind in ("move", "copy"):
            source = op.get("from")
            from_tokens = _pointer(source)
            value = copy.deepcopy(_get(doc, from_tokens, kind, source))
            if kind == "move":
                doc = _remove(doc, from_tokens, source, "move")
            doc = _add(doc, tokens, value, path)
        elif kind == "test":
            try:
                current = _get(doc, tokens, "test", path)
            except _PatchError:
                if "value" in op and op["value"] is None:
                    continue
                raise _PatchError(f"testing value {path} failed: test failed") from None
            if not _json_equal(current, op.get("value")):
                raise _PatchError(f"testing value {path} failed: test failed")
        else:
            raise _PatchError(f"Unexpected kind: {kind}")
    return doc


def apply_merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = apply_merge_patch(result.get(key), value)
    return result


# Lists kube merges in a strategic merge patch (patchStrategy "merge"): merge key, or None for a set
# of primitives. Every other list is atomic (replaced whole) - spec.taints among them.
_SMP_LISTS: dict[tuple[str, ...], str | None] = {
    ("metadata", "finalizers"): None,
    ("metadata", "ownerReferences"): "uid",
    ("status", "conditions"): "type",
    ("status", "addresses"): "type",
    ("spec", "podCIDRs"): None,
    ("spec", "containers"): "name",
    ("spec", "initContainers"): "name",
    ("spec", "volumes"): "name",
}
_DELETE = object()


def _strip_directives(value: Any) -> Any:
    if isinstance(value, dict):
        return {
            k: _strip_directives(v)
            for k, v in value.items()
            if not (
                k in {"$patch", "$retainKeys"}
                or k.startswith(("$setElementOrder/", "$deleteFromPrimitiveList/"))
            )
        }
    if isinstance(value, list):
        return [_strip_directives(v) for v in value]
    return value


def _smp_list(orig: list[Any], patch: list[Any], key: str | None, path: tuple[str, ...]) -> list[Any]:
    if any(isinstance(el, dict) and el.get("$patch") == "replace" for el in patch):
        return [
            _strip_directives(el)
            for el in patch
            if not (isinstance(el, dict) and el.get("$patch") == "replace")
        ]
    result = copy.deepcopy(orig)
    if key is None:
        return result + [copy.deepcopy(el) for el in patch if el not in result]
    for el in patch:
        if not isinstance(el, dict) or key not in el:
            raise _PatchError(f"map: {el} does not contain declared merge key: {key}")
        idx = next(
            (i for i, cur in enumerate(result) if isinstance(cur, dict) and cur.get(key) == el[key]), None
        )
        if el.get("$patch") == "delete":
            result = [cur for cur in result if not (isinstance(cur, dict) and cur.get(key) == el[key])]
        elif idx is None:
            result.append(_strip_directives(el))
        else:
            result[idx] = _smp_map(result[idx], el, path)
    return result


def _smp_map(orig: Any, patch: dict[str, Any], path: tuple[str, ...]) -> Any:
    directive = patch.get("$patch")
    if directive == "replace":
        return _strip_directives(patch)
    if directive == "delete":
        return _DELETE
    result = dict(orig) if isinstance(orig, dict) else {}
    deletes: list[tuple[str, Any]] = []
    for key, value in patch.items():
        if key in ("$patch", "$retainKeys") or key.startswith("$setElementOrder/"):
            continue
        if key.startswith("$deleteFromPrimitiveList/"):
            deletes.append((key.split("/", 1)[1], value))
            continue
        sub = (*path, key)
        if value is None:
            result.pop(key, None)
        elif isinstance(value, dict):
            merged = _smp_map(result.get(key), value, sub)
            if merged is _DELETE:
                result.pop(key, None)
            else:
                result[key] = merged
        elif isinstance(value, list) and sub in _SMP_LISTS and isinstance(result.get(key), list):
            result[key] = _smp_list(result[key], value, _SMP_LISTS[sub], sub)
        else:
            result[key] = _strip_directives(copy.deepcopy(value))
    for key, values in deletes:
        if isinstance(result.get(key), list) and isinstance(values, list):
            result[key] = [v for v in result[key] if v not in values]
    return result


def apply_strategic_merge_patch(doc: dict[str, Any], patch: Any) -> dict[str, Any]:
    """The subset of strategic merge patch described in the module docstring."""
    if not isinstance(patch, dict):
        raise ValueError("json: cannot unmarshal array into Go value of type map[string]interface {}")
    merged = _smp_map(copy.deepcopy(doc), patch, ())
    if merged is _DELETE:
        raise _PatchError("the patch deletes the whole object")
    return dict(merged)


# --- selectors ----------------------------------------------------------------------------------


def _field_getter(*path: str, default: str = "") -> Callable[[dict[str, Any]], str]:
    def get(obj: dict[str, Any]) -> str:
        cur: Any = obj
        for part in path:
            cur = cur.get(part) if isinstance(cur, dict) else None
        if cur is None:
            return default
        if isinstance(cur, bool):
            return "true" if cur else "false"
        return str(cur)

    return get


def _parse_field_selector(text: str, res: _Resource) -> list[tuple[str, str, str]]:
    terms = []
    for raw in text.split(","):
        term = raw.strip()
        if not term:
            continue
        for op in ("!=", "==", "="):
            if op in term:
                key, value = term.split(op, 1)
                break
        else:
            raise _bad_request(f"invalid selector: '{text}'; can't understand '{term}'")
        key = key.strip()
        if key not in res.fields:
            raise _bad_request(f"field label not supported: {key}")
        terms.append((key, "!=" if op == "!=" else "=", value.strip()))
    return terms


@dataclass(frozen=True)
class _LabelReq:
    key: str
    op: str  # =, !=, in, notin, exists, !exists
    values: tuple[str, ...] = ()

    def matches(self, labels: dict[str, str]) -> bool:
        present = self.key in labels
        value = labels.get(self.key)
        if self.op == "=":
            return present and value == self.values[0]
        if self.op == "!=":
            return not present or value != self.values[0]
        if self.op == "in":
            return present and value in self.values
        if self.op == "notin":
            return not present or value not in self.values
        if self.op == "exists":
            return present
        return not present


def _split_outside_parens(text: str) -> list[str]:
    parts, depth, cur = [], 0, ""
    for ch in text:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append(cur)
            cur = ""
        else:
            cur += ch
    parts.append(cur)
    return parts


def _parse_label_selector(text: str) -> list[_LabelReq]:
    reqs = []
    for raw in _split_outside_parens(text):
        term = raw.strip()
        if not term:
            continue
        set_based = re.fullmatch(r"(\S+)\s+(in|notin)\s*\((.*)\)", term)
        if set_based:
            values = tuple(v.strip() for v in set_based.group(3).split(",") if v.strip())
            key, op = set_based.group(1), set_based.group(2)
        elif term.startswith("!"):
            key, op, values = term[1:].strip(), "!exists", ()
        elif "!=" in term:
            key, value = term.split("!=", 1)
            op, values = "!=", (value.strip(),)
        elif "==" in term or "=" in term:
            key, value = term.split("==", 1) if "==" in term else term.split("=", 1)
            op, values = "=", (value.strip(),)
        else:
            key, op, values = term, "exists", ()
        key = key.strip()
        if is_qualified_name(key):
            raise _bad_request(f"unable to parse requirement: {'; '.join(is_qualified_name(key))}")
        reqs.append(_LabelReq(key, op, values))
    return reqs


# --- resources ----------------------------------------------------------------------------------

_META_NAME = {"metadata.name": _field_getter("metadata", "name")}
_META_NS = {**_META_NAME, "metadata.namespace": _field_getter("metadata", "namespace")}

NODES = _Resource(
    group="",
    version="v1",
    plural="nodes",
    kind="Node",
    namespaced=False,
    verbs=frozenset({"get", "list", "watch", "update", "patch"}),
    fields={**_META_NAME, "spec.unschedulable": _field_getter("spec", "unschedulable", default="false")},
    builtin=True,
    status_subresource=True,
)
PODS = _Resource(
    group="",
    version="v1",
    plural="pods",
    kind="Pod",
    namespaced=True,
    verbs=frozenset({"get", "list", "watch"}),
    fields={
        **_META_NS,
        "spec.nodeName": _field_getter("spec", "nodeName"),
        "spec.restartPolicy": _field_getter("spec", "restartPolicy"),
        "spec.schedulerName": _field_getter("spec", "schedulerName"),
        "spec.serviceAccountName": _field_getter("spec", "serviceAccountName"),
        "spec.hostNetwork": _field_getter("spec", "hostNetwork", default="false"),
        "status.phase": _field_getter("status", "phase"),
        "status.podIP": _field_getter("status", "podIP"),
        "status.nominatedNodeName": _field_getter("status", "nominatedNodeName"),
    },
    builtin=True,
    status_subresource=True,
)
EVENTS = _Resource(
    group="events.k8s.io",
    version="v1",
    plural="events",
    kind="Event",
    namespaced=True,
    verbs=frozenset({"create", "get", "list", "watch", "update", "patch", "delete"}),
    fields={
        **_META_NS,
        "reason": _field_getter("reason"),
        "type": _field_getter("type"),
        "reportingController": _field_getter("reportingController"),
        "regarding.kind": _field_getter("regarding", "kind"),
        "regarding.name": _field_getter("regarding", "name"),
        "regarding.namespace": _field_getter("regarding", "namespace"),
        "regarding.uid": _field_getter("regarding", "uid"),
    },
    builtin=True,
    status_subresource=False,
)
NAMESPACES = _Resource(
    group="",
    version="v1",
    plural="namespaces",
    kind="Namespace",
    namespaced=False,
    verbs=frozenset({"get", "list", "watch"}),
    fields={**_META_NAME, "status.phase": _field_getter("status", "phase")},
    builtin=True,
    status_subresource=True,
)
NETWORK_POLICIES = _Resource(
    group=NETWORKING_GROUP,
    version="v1",
    plural="networkpolicies",
    kind="NetworkPolicy",
    namespaced=True,
    verbs=frozenset({"get", "list", "watch"}),
    fields=dict(_META_NS),
    builtin=True,
    status_subresource=False,
)
ENICONFIGS = _Resource(
    group=ENICONFIG_GROUP,
    version=ENICONFIG_VERSION,
    plural="eniconfigs",
    kind="ENIConfig",
    namespaced=False,
    verbs=frozenset({"get", "list", "watch"}),
    fields=dict(_META_NAME),
    builtin=False,
    status_subresource=False,
)
_ALL_RESOURCES = (NODES, PODS, NAMESPACES, EVENTS, NETWORK_POLICIES, ENICONFIGS)
_RESOURCES = {(r.group, r.version, r.plural): r for r in _ALL_RESOURCES}
_BY_KIND = {
    alias.lower(): r
    for r in _ALL_RESOURCES
    for alias in (r.plural, r.kind, r.plural.rstrip("s"), r.qualified)
}


def _resource(kind: str) -> _Resource:
    try:
        return _BY_KIND[kind.lower()]
    except KeyError:
        known = ", ".join(r.plural for r in _ALL_RESOURCES)
        raise KeyError(f"unknown kind {kind!r}: one of {known}") from None


def _check_model_meta(res: _Resource, meta: dict[str, Any]) -> None:
    """What the API would refuse in a model write's name and labels (ValueError), so that a test
    cannot build a cluster kube-apiserver would not hold - a bad label would just match nothing."""
    errs = _validate_meta(meta, create=True)
    if errs:
        listed = ", ".join(str(err) for err in errs)
        raise ValueError(f'{res.group_kind} "{meta.get("name") or ""}" is invalid: [{listed}]')


def _namespace_labels(name: str, labels: dict[str, str]) -> dict[str, str]:
    """A namespace's labels as the strategy leaves them (sorted, as Go writes a map)."""
    return dict(sorted({**labels, NAMESPACE_NAME_LABEL: name}.items()))


def _default_ports(ports: list[dict[str, Any]], *, host_network: bool) -> None:
    for port in ports:
        if port.get("protocol") is None:
            port["protocol"] = "TCP"
        if host_network and not port.get("hostPort") and port.get("containerPort"):
            port["hostPort"] = port["containerPort"]


def _default_containers(containers: list[dict[str, Any]], *, host_network: bool) -> list[dict[str, Any]]:
    """SetDefaults_ContainerPort and (hostNetwork) defaultHostNetworkPorts on a copy."""
    out = copy.deepcopy(containers)
    for container in out:
        _default_ports(container.get("ports") or [], host_network=host_network)
    return out


def _default_network_policy_spec(spec: dict[str, Any]) -> dict[str, Any]:
    """networking/v1 defaulting on a copy: ``podSelector`` is always serialised, a port without a
    protocol is TCP, and no ``policyTypes`` means Ingress, plus Egress when egress rules are given."""
    out = copy.deepcopy(spec)
    out.setdefault("podSelector", {})
    for direction in ("ingress", "egress"):
        for rule in out.get(direction) or []:
            for port in rule.get("ports") or []:
                if port.get("protocol") is None:
                    port["protocol"] = "TCP"
    if not out.get("policyTypes"):
        out["policyTypes"] = ["Ingress"] + (["Egress"] if out.get("egress") else [])
    return out


def _truthy(value: str | None) -> bool:
    return (value or "").lower() in ("1", "t", "true")


def _now_time() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _key(obj: dict[str, Any]) -> tuple[str, str]:
    meta = obj.get("metadata") or {}
    return (meta.get("namespace") or "", meta.get("name") or "")


def _strip_rv(obj: dict[str, Any]) -> dict[str, Any]:
    out = dict(obj)
    out["metadata"] = {k: v for k, v in (obj.get("metadata") or {}).items() if k != "resourceVersion"}
    return out


# --- records ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class KubeRequest:
    """One request as the fake saw it; ``verb`` is the RBAC verb."""

    verb: str
    api_group: str
    version: str
    resource: str
    subresource: str
    namespace: str
    name: str
    query: dict[str, str]
    content_type: str
    status: int  # 0: dropped unanswered (or not answered yet, for a latency function)
    t: float = 0.0  # time.monotonic() when the request arrived
    method: str = ""
    path: str = ""
    user_agent: str = ""


@dataclass(frozen=True)
class _Target:
    verb: str
    group: str = ""
    version: str = ""
    resource: str = ""
    subresource: str = ""
    namespace: str = ""
    name: str = ""
    res: _Resource | None = None
    nonresource: bool = False

    @property
    def scope(self) -> str:
        """The namespace objects are stored under: RequestInfo names a namespace's own path
        (``/api/v1/namespaces/x``) namespace x, but a cluster-scoped object has none."""
        return self.namespace if self.res is not None and self.res.namespaced else ""


def _target(method: str, path: str, query: dict[str, str]) -> _Target:
    parts = [unquote(p) for p in path.split("/") if p]
    if not parts or parts[0] not in ("api", "apis"):
        return _Target(verb=method.lower(), nonresource=True)
    group, rest = ("", parts[1:]) if parts[0] == "api" else ((parts[1] if len(parts) > 1 else ""), parts[2:])
    if len(rest) < 2:
        return _Target(verb=method.lower(), nonresource=True)  # discovery
    version, rest = rest[0], rest[1:]
    namespace = ""
    if rest[0] == "namespaces" and len(rest) >= 2:
        # As RequestInfo: /namespaces/x (and its status, finalize) is namespace x in namespace x.
        namespace = rest[1]
        if len(rest) >= 3 and rest[2] not in _NAMESPACE_SUBRESOURCES:
            rest = rest[2:]
    resource = rest[0]
    name = rest[1] if len(rest) > 1 else ""
    subresource = "/".join(rest[2:])
    if method == "GET":
        verb = "watch" if _truthy(query.get("watch")) else ("get" if name else "list")
    elif method == "DELETE":
        verb = "delete" if name else "deletecollection"
    else:
        verb = {"POST": "create", "PUT": "update", "PATCH": "patch"}.get(method, method.lower())
    res = _RESOURCES.get((group, version, resource))
    if res is not None:
        all_namespaces = not name and verb in ("list", "watch")  # /api/v1/pods
        in_namespace = bool(namespace) and res is not NAMESPACES
        if (res.namespaced and not namespace and not all_namespaces) or (not res.namespaced and in_namespace):
            res = None
    return _Target(verb, group, version, resource, subresource, namespace, name, res)


# --- watches ------------------------------------------------------------------------------------

_DROP = object()
_END = object()


@dataclass
class _Change:
    rv: int
    plural: str
    type: str
    obj: dict[str, Any]
    prev: dict[str, Any] | None


class _Watcher:
    def __init__(
        self,
        res: _Resource,
        namespace: str,
        fields: list[tuple[str, str, str]],
        labels: list[_LabelReq],
        bookmarks: bool,
    ) -> None:
        self.res = res
        self.namespace = namespace
        self.fields = fields
        self.labels = labels
        self.bookmarks = bookmarks
        self.q: queue.SimpleQueue[Any] = queue.SimpleQueue()

    def matches(self, obj: dict[str, Any] | None) -> bool:
        return obj is not None and _matches(self.res, obj, self.namespace, self.fields, self.labels)

    def translate(self, change: _Change) -> dict[str, Any] | None:
        """The event this watcher sees for a change (the cacher's convertToWatchEvent)."""
        if change.type == "ADDED":
            return {"type": "ADDED", "object": change.obj} if self.matches(change.obj) else None
        if change.type == "DELETED":
            return {"type": "DELETED", "object": change.obj} if self.matches(change.obj) else None
        cur, old = self.matches(change.obj), self.matches(change.prev)
        if cur and old:
            return {"type": "MODIFIED", "object": change.obj}
        if cur:
            return {"type": "ADDED", "object": change.obj}
        if old and change.prev is not None:
            gone = copy.deepcopy(change.prev)
            gone["metadata"]["resourceVersion"] = str(change.rv)
            return {"type": "DELETED", "object": gone}
        return None


def _matches(
    res: _Resource,
    obj: dict[str, Any],
    namespace: str,
    fields: list[tuple[str, str, str]],
    labels: list[_LabelReq],
) -> bool:
    meta = obj.get("metadata") or {}
    if namespace and meta.get("namespace") != namespace:
        return False
    for key, op, value in fields:
        actual = res.fields[key](obj)
        if (actual == value) != (op == "="):
            return False
    obj_labels = meta.get("labels") or {}
    return all(req.matches(obj_labels) for req in labels)


@dataclass
class _FailRule:
    remaining: int
    status: int
    retry_after: str | None
    path_contains: str | None
    verb: str | None
    body: str | None


@dataclass
class _DropRule:
    remaining: int
    path_contains: str | None


# --- the server ---------------------------------------------------------------------------------


class _KubeHandler(FakeHandler):
    timeout = 60

    def setup(self) -> None:
        super().setup()
        self.server.fake._track(self.connection, True)  # type: ignore[attr-defined]

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.fake._track(self.connection, False)  # type: ignore[attr-defined]


class _KubeTlsServer(ThreadingHTTPServer):
    """ThreadingHTTPServer with TLS (handshake on the handler thread), no reverse lookup, quiet."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(
        self, address: tuple[str, int], tls: TlsFiles, fake: KubeApiServer, *, netns: str | None = None
    ) -> None:
        super().__init__(address, _KubeHandler, bind_and_activate=False)
        if netns is not None:  # the listening socket made inside the namespace: only it can connect
            from tests.fakes.vpc import netns_socket

            self.socket.close()
            self.socket = netns_socket(netns)
        try:
            self.server_bind()
            self.server_activate()
        except BaseException:
            self.server_close()
            raise
        self.ssl_context = tls.server_context()
        self.fake = fake

    def server_bind(self) -> None:
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name = str(host)
        self.server_port = int(port)

    def get_request(self) -> tuple[Any, Any]:
        sock, addr = self.socket.accept()
        return self.ssl_context.wrap_socket(sock, server_side=True, do_handshake_on_connect=False), addr

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Quiet: clients that hang up, fail the handshake or are cut off are part of the tests."""


def _raw_shutdown(conn: socket.socket) -> None:
    """Cut a (TLS) connection at the TCP level: FIN, no close_notify; safe from another thread."""
    with contextlib.suppress(OSError):
        socket.socket.shutdown(conn, socket.SHUT_RDWR)


class KubeApiServer:
    """kube-apiserver for one node daemon; see the module docstring for routes, knobs and records."""

    def __init__(
        self,
        *,
        tls: TlsFiles | None = None,
        token: str | None = None,
        bookmark_interval: float = 1.0,
        max_history: int | None = None,
        netns: str | None = None,
        admission: Callable[[dict[str, Any], dict[str, Any] | None, dict[str, Any] | None], Sequence[str]]
        | None = None,
        user_info: dict[str, Any] | None = None,
    ) -> None:
        self.tls = tls or shared_tls_files()
        # Validating admission of every UPDATE (PUT and PATCH): (AdmissionRequest, old, new) -> denial
        # messages, as a ValidatingAdmissionPolicy (tests/fakes/admission.py); ``user_info`` is the
        # token's user the request carries.
        self.admission = admission
        self.user_info = user_info or {"username": "kubernetes-admin", "groups": ["system:masters"]}
        self.netns = netns  # listen on 127.0.0.1 inside this named network namespace (a test's node)
        self.token = token or secrets.token_urlsafe(24)
        self.bookmark_interval = bookmark_interval
        self.max_history = max_history
        self.too_large_rv_wait = 0.2
        self.latency: float | Callable[[KubeRequest], float] = 0.0
        self.errors: list[BaseException] = []
        self.last_patch_error: str | None = None
        self._lock = threading.RLock()
        self._server_lock = threading.Lock()
        self._rv = 1
        self._latest: dict[str, int] = {}  # plural -> the rv of its last change
        self._floor = 1  # the history holds every change with rv > _floor
        self._store: dict[str, dict[tuple[str, str], dict[str, Any]]] = {
            r.plural: {} for r in _RESOURCES.values()
        }
        self._history: deque[_Change] = deque()
        self._watchers: list[_Watcher] = []
        self._requests: list[KubeRequest] = []
        self._list_reads: Counter[tuple[str, str]] = Counter()
        self._watch_count = 0
        self._snapshots: dict[str, tuple[str, list[dict[str, Any]], int]] = {}
        self._fail_rules: list[_FailRule] = []
        self._drop_rules: list[_DropRule] = []
        self._expire_watches = 0
        self._conns: set[socket.socket] = set()
        self._stopping = False
        for namespace in DEFAULT_NAMESPACES:  # what a new cluster has (in the watch history too)
            self.add_namespace(namespace)
        self._server: _KubeTlsServer | None = _KubeTlsServer(("127.0.0.1", 0), self.tls, self, netns=netns)
        self._port = int(self._server.server_address[1])
        self._thread: threading.Thread | None = None

    # -- life cycle ---------------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self._port}"

    @property
    def port(self) -> int:
        return self._port

    @property
    def ca_path(self) -> str:
        return self.tls.ca_path

    def start(self) -> KubeApiServer:
        with self._server_lock:
            assert self._server is not None and self._thread is None, "start() once"
            self._thread = self._serve(self._server)
        return self

    def stop(self) -> None:
        """End open watches cleanly (terminating chunk), refuse anything new, close every connection."""
        self._stopping = True  # requests on kept-alive connections are dropped from now on
        self._close_listener()
        with self._lock:
            for watcher in self._watchers:
                watcher.q.put(_END)
        self.wait_for_watches(0, timeout=2)
        self._abort_all()

    def __enter__(self) -> KubeApiServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def kubeconfig(self, path: str | Path) -> str:
        """Write a kubeconfig (server URL, CA file, bearer token) to ``path``; returns the path."""
        text = "\n".join(
            [
                "apiVersion: v1",
                "kind: Config",
                "clusters:",
                "- name: fake",
                "  cluster:",
                f"    server: {json.dumps(self.url)}",
                f"    certificate-authority: {json.dumps(str(Path(self.ca_path).resolve()))}",
                "users:",
                "- name: fake-node",
                "  user:",
                f"    token: {json.dumps(self.token)}",
                "contexts:",
                "- name: fake",
                "  context:",
                "    cluster: fake",
                "    user: fake-node",
                "current-context: fake",
                "",
            ]
        )
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
        target.chmod(0o600)
        return str(target)

    def refuse(self) -> None:
        """Stop accepting: close the listening socket (connects are refused) and every open connection."""
        self._close_listener()
        self.drop_watches()
        self._abort_all()

    def accept(self) -> None:
        """Listen again on the same port."""
        with self._server_lock:
            if self._server is not None:
                return
            deadline = time.monotonic() + 5
            while True:
                try:
                    self._server = _KubeTlsServer(("127.0.0.1", self._port), self.tls, self, netns=self.netns)
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.05)
            self._thread = self._serve(self._server)

    @property
    def refusing(self) -> bool:
        return self._server is None

    def _serve(self, server: _KubeTlsServer) -> threading.Thread:
        thread = threading.Thread(
            target=server.serve_forever, args=(0.01,), name=f"fake-kube-apiserver-{self._port}", daemon=True
        )
        thread.start()
        return thread

    def _close_listener(self) -> None:
        with self._server_lock:
            server, thread = self._server, self._thread
            self._server, self._thread = None, None
        if server is None:
            return
        if thread is not None:
            server.shutdown()
            thread.join(timeout=5)
        server.server_close()

    def _track(self, conn: socket.socket, add: bool) -> None:
        with self._lock:
            if add:
                self._conns.add(conn)
            else:
                self._conns.discard(conn)

    def _abort_all(self) -> None:
        with self._lock:
            conns = list(self._conns)
        for conn in conns:
            _raw_shutdown(conn)

    # -- knobs --------------------------------------------------------------------------------

    def fail_next(
        self,
        n: int,
        status: int,
        retry_after: int | float | str | None = None,
        path_contains: str | None = None,
        *,
        verb: str | None = None,
        body: str | None = None,
    ) -> None:
        """Answer the next ``n`` matching requests (after authentication) with ``status``.

        429 is text/plain as APF sends it (``body="status"``: a TooManyRequests Status), with
        ``Retry-After`` (default "1"); other statuses get a Status (500 InternalError, 503
        ServiceUnavailable, 504 Timeout, 410 Expired, ...). ``retry_after`` adds the header to any.
        """
        with self._lock:
            self._fail_rules.append(
                _FailRule(
                    n, status, None if retry_after is None else str(retry_after), path_contains, verb, body
                )
            )

    def drop_connections_next(self, n: int, path_contains: str | None = None) -> None:
        """Read the next ``n`` matching requests and close their TCP connection without answering."""
        with self._lock:
            self._drop_rules.append(_DropRule(n, path_contains))

    def expire_next_watches(self, n: int = 1) -> None:
        """Answer the next ``n`` watch requests with HTTP 410 Expired instead of a stream."""
        with self._lock:
            self._expire_watches += n

    def drop_watches(self) -> int:
        """Cut every open watch mid-stream (no terminating chunk); returns how many."""
        with self._lock:
            for watcher in self._watchers:
                watcher.q.put(_DROP)
            return len(self._watchers)

    def send_bookmarks(self) -> int:
        """A BOOKMARK now on every open watch that allowed them; returns how many."""
        with self._lock:
            sent = 0
            for watcher in self._watchers:
                if watcher.bookmarks:
                    watcher.q.put(self._bookmark(watcher.res))
                    sent += 1
            return sent

    def compact(self) -> None:
        """Forget the watch history (and list continue tokens): older RVs answer 410 Expired."""
        with self._lock:
            self._history.clear()
            self._floor = self._rv
            self._snapshots.clear()

    # -- inspection ---------------------------------------------------------------------------

    @property
    def resource_version(self) -> str:
        with self._lock:
            return str(self._rv)

    @property
    def requests(self) -> list[KubeRequest]:
        with self._lock:
            return list(self._requests)

    def requests_between(self, t0: float, t1: float) -> list[KubeRequest]:
        with self._lock:
            return [r for r in self._requests if t0 <= r.t <= t1]

    def latest_rv(self, kind: str) -> int:
        """The resourceVersion of the last change (created, modified or deleted) of ``kind``; 0: none."""
        with self._lock:
            return self._latest.get(_resource(kind).plural, 0)

    def clear_requests(self) -> None:
        with self._lock:
            self._requests.clear()

    def list_reads(self, resource: str | None = None) -> dict[str, int]:
        """LISTs by resourceVersion: ``rv0`` (from cache), ``consistent`` (no RV), ``exact`` (RV=N)."""
        plural = _resource(resource).plural if resource else None
        out = {"rv0": 0, "consistent": 0, "exact": 0}
        with self._lock:
            for (res, kind), n in self._list_reads.items():
                if plural is None or res == plural:
                    out[kind] += n
        return out

    @property
    def stats(self) -> dict[str, int]:
        reads = self.list_reads()
        with self._lock:
            return {
                "list_rv0": reads["rv0"],
                "list_consistent": reads["consistent"],
                "list_exact": reads["exact"],
                "watches": self._watch_count,
                "open_watches": len(self._watchers),
                "requests": len(self._requests),
            }

    @property
    def open_watches(self) -> int:
        with self._lock:
            return len(self._watchers)

    def wait_for_watches(self, n: int, timeout: float = 5.0) -> bool:
        """Wait until exactly ``n`` watches are open."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.open_watches == n:
                return True
            time.sleep(0.005)
        return self.open_watches == n

    def get(self, kind: str, namespace: str | None, name: str) -> dict[str, Any] | None:
        res = _resource(kind)
        with self._lock:
            obj = self._store[res.plural].get(((namespace or "") if res.namespaced else "", name))
            return copy.deepcopy(obj) if obj is not None else None

    def objects(self, kind: str, namespace: str | None = None) -> list[dict[str, Any]]:
        res = _resource(kind)
        with self._lock:
            return [
                copy.deepcopy(o)
                for k, o in sorted(self._store[res.plural].items())
                if namespace is None or k[0] == namespace
            ]

    def events(self) -> list[dict[str, Any]]:
        """Every events.k8s.io Event stored."""
        return self.objects("events")

    # -- model (direct writes: bump the RV and reach watches) ---------------------------------

    def add_namespace(self, name: str, *, labels: dict[str, str] | None = None) -> dict[str, Any]:
        """A Namespace (ADDED), as the API creates it: the ``kubernetes.io/metadata.name`` label,
        ``spec.finalizers: [kubernetes]``, ``status.phase: Active``. Idempotent, so tests can ensure
        one exists: an existing namespace is left unchanged unless ``labels`` are given, which then
        replace its user labels as ``set_namespace_labels`` does."""
        with self._lock:
            cur = self._store[NAMESPACES.plural].get(("", name))
            if cur is not None:
                return copy.deepcopy(cur) if labels is None else self.set_namespace_labels(name, labels)
            ns: dict[str, Any] = {
                "metadata": {"name": name, "labels": _namespace_labels(name, labels or {})},
                "spec": {"finalizers": ["kubernetes"]},
                "status": {"phase": "Active"},
            }
            _check_model_meta(NAMESPACES, ns["metadata"])
            return self._put(NAMESPACES, ns)

    def set_namespace_labels(self, name: str, labels: dict[str, str]) -> dict[str, Any]:
        """Replace a namespace's user labels (MODIFIED); ``kubernetes.io/metadata.name`` stays the
        namespace's name whatever ``labels`` say, as the namespace strategy resets it on every update.
        Unchanged labels: no write, no event (a no-op update)."""
        with self._lock:
            cur = self._store[NAMESPACES.plural].get(("", name))
            if cur is None:
                raise KeyError(f'namespaces "{name}" not found')
            want = _namespace_labels(name, labels)
            _check_model_meta(NAMESPACES, {"name": name, "labels": want})
            if cur["metadata"].get("labels") == want:
                return copy.deepcopy(cur)
            return self._mutate(NAMESPACES, "", name, lambda ns: ns["metadata"].update(labels=want))

    def delete_namespace(self, name: str) -> dict[str, Any] | None:
        """Delete a namespace and everything in it, as the API and the namespace controller do, at once:
        MODIFIED (``deletionTimestamp``, ``status.phase: Terminating``), then DELETED for every pod,
        event and NetworkPolicy in it, then DELETED for the namespace (its ``kubernetes`` finalizer
        removed). Returns that last state, or None when there is no such namespace. default,
        kube-system and kube-public cannot be deleted (ValueError), as NamespaceLifecycle refuses."""
        if name in IMMORTAL_NAMESPACES:
            raise ValueError(f'namespaces "{name}" is forbidden: this namespace may not be deleted')
        with self._lock:
            if ("", name) not in self._store[NAMESPACES.plural]:
                return None

            def terminate(ns: dict[str, Any]) -> None:
                ns["metadata"]["deletionTimestamp"] = _now_time()
                ns["status"] = {"phase": "Terminating"}

            self._mutate(NAMESPACES, "", name, terminate)
            for res in _ALL_RESOURCES:
                if res.namespaced:
                    for key, obj in sorted(self._store[res.plural].items()):
                        if key[0] == name:
                            self._commit(res, copy.deepcopy(obj), "DELETED", obj)
            last = self._store[NAMESPACES.plural][("", name)]
            gone = copy.deepcopy(last)
            gone["spec"].pop("finalizers", None)
            return self._commit(NAMESPACES, gone, "DELETED", last)

    def put_node(self, node: dict[str, Any]) -> dict[str, Any]:
        """Create or replace a node as given (uid and creationTimestamp kept or made)."""
        return self._put(NODES, node)

    def add_node(
        self,
        name: str,
        *,
        labels: dict[str, str] | None = None,
        annotations: dict[str, str] | None = None,
        taints: list[dict[str, Any]] | None = None,
        provider_id: str | None = None,
        internal_ip: str = "10.0.0.10",
    ) -> dict[str, Any]:
        node: dict[str, Any] = {
            "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name, **(labels or {})}},
            "spec": {},
            "status": {
                "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady"}],
                "addresses": [
                    {"type": "InternalIP", "address": internal_ip},
                    {"type": "Hostname", "address": name},
                ],
            },
        }
        if annotations:
            node["metadata"]["annotations"] = dict(annotations)
        if taints:
            node["spec"]["taints"] = copy.deepcopy(taints)
        if provider_id:
            node["spec"]["providerID"] = provider_id
        return self.put_node(node)

    def patch_node_direct(
        self, name: str, fn: Callable[[dict[str, Any]], dict[str, Any] | None]
    ) -> dict[str, Any]:
        """``fn`` edits a copy of the node in place (or returns a new one); always a new RV."""
        return self._mutate(NODES, "", name, fn)

    def add_pod(
        self,
        namespace: str,
        name: str,
        node_name: str | None,
        uid: str | None = None,
        *,
        labels: dict[str, str] | None = None,
        annotations: dict[str, str] | None = None,
        phase: str = "Running",
        pod_ip: str | None = None,
        host_network: bool = False,
        containers: list[dict[str, Any]] | None = None,
    ) -> dict[str, Any]:
        """A pod (bound to ``node_name``, or pending when None); creates the namespace if needed.

        ``containers`` are stored as given (default: one pause container named ``app``) after the
        API's defaulting of their ``ports``: ``protocol`` TCP, and with ``host_network`` a
        ``hostPort`` equal to the ``containerPort``; NetworkPolicy named ports resolve through them."""
        pod: dict[str, Any] = {
            "metadata": {"name": name, "namespace": namespace, "uid": uid or str(uuid.uuid4())},
            "spec": {
                "containers": _default_containers(
                    containers or [{"name": "app", "image": "registry.k8s.io/pause:3.10"}],
                    host_network=host_network,
                ),
                "restartPolicy": "Always",
                "schedulerName": "default-scheduler",
                "serviceAccountName": "default",
            },
            "status": {"phase": phase},
        }
        if labels:
            pod["metadata"]["labels"] = dict(labels)
        if annotations:
            pod["metadata"]["annotations"] = dict(annotations)
        if node_name:
            pod["spec"]["nodeName"] = node_name
        if host_network:
            pod["spec"]["hostNetwork"] = True
        if pod_ip:
            pod["status"]["podIP"] = pod_ip
            pod["status"]["podIPs"] = [{"ip": pod_ip}]
        _check_model_meta(PODS, pod["metadata"])
        with self._lock:
            if (namespace, name) in self._store["pods"]:
                raise KeyError(f"pod {namespace}/{name} exists")
            self.add_namespace(namespace)
            return self._put(PODS, pod)

    def update_pod(
        self, namespace: str, name: str, fn: Callable[[dict[str, Any]], dict[str, Any] | None]
    ) -> dict[str, Any]:
        """``fn`` edits a copy of the pod in place (or returns a new one): any field, status
        included; always MODIFIED with a new RV."""
        return self._mutate(PODS, namespace, name, fn)

    def set_pod_labels(self, namespace: str, name: str, labels: dict[str, str]) -> dict[str, Any]:
        """Replace a pod's labels (MODIFIED); unchanged labels: no write, no event."""
        with self._lock:
            cur = self._store[PODS.plural].get((namespace, name))
            if cur is None:
                raise KeyError(f"pods {namespace}/{name} not found")
            _check_model_meta(PODS, {"name": name, "labels": labels})
            if (cur["metadata"].get("labels") or {}) == labels:
                return copy.deepcopy(cur)

            def relabel(pod: dict[str, Any]) -> None:
                if labels:
                    pod["metadata"]["labels"] = dict(labels)
                else:
                    pod["metadata"].pop("labels", None)

            return self._mutate(PODS, namespace, name, relabel)

    def delete_pod(self, namespace: str, name: str, *, graceful: bool = False) -> dict[str, Any] | None:
        """Remove a pod (DELETED); ``graceful``: mark deletionTimestamp (MODIFIED) first, as the API."""
        with self._lock:
            cur = self._store["pods"].get((namespace, name))
            if cur is None:
                return None
            if graceful:

                def mark(pod: dict[str, Any]) -> None:
                    pod["metadata"]["deletionTimestamp"] = _now_time()
                    pod["metadata"]["deletionGracePeriodSeconds"] = 30

                return self._mutate(PODS, namespace, name, mark)
            return self._commit(PODS, copy.deepcopy(cur), "DELETED", cur)

    def put_eniconfig(self, name: str, spec: dict[str, Any]) -> dict[str, Any]:
        obj = {"metadata": {"name": name}, "spec": copy.deepcopy(spec)}
        with self._lock:
            cur = self._store["eniconfigs"].get(("", name))
            generation = (
                1 if cur is None else cur["metadata"].get("generation", 1) + (cur.get("spec") != spec)
            )
            obj["metadata"]["generation"] = generation
            return self._put(ENICONFIGS, obj)

    def delete_eniconfig(self, name: str) -> dict[str, Any] | None:
        with self._lock:
            cur = self._store["eniconfigs"].get(("", name))
            if cur is None:
                return None
            return self._commit(ENICONFIGS, copy.deepcopy(cur), "DELETED", cur)

    def put_network_policy(
        self, namespace: str, name: str, spec: dict[str, Any], *, labels: dict[str, str] | None = None
    ) -> dict[str, Any]:
        """Create (ADDED) or replace (MODIFIED) a NetworkPolicy. The spec gets the API's defaults
        (``podSelector: {}``, port ``protocol`` TCP, ``policyTypes`` Ingress plus Egress when there are
        egress rules) and is not otherwise validated; ``metadata.generation`` goes up when the spec
        changes. Replacing with the same spec and labels is a no-op (no event). The namespace must
        exist (KeyError: kube-apiserver would answer 404), so a test states its namespaces' labels."""
        spec = _default_network_policy_spec(spec)
        meta: dict[str, Any] = {"name": name, "namespace": namespace}
        if labels:
            meta["labels"] = dict(labels)
        _check_model_meta(NETWORK_POLICIES, meta)
        with self._lock:
            if ("", namespace) not in self._store[NAMESPACES.plural]:
                raise KeyError(f'namespaces "{namespace}" not found: add_namespace() it first')
            cur = self._store[NETWORK_POLICIES.plural].get((namespace, name))
            if cur is not None and (cur["spec"], cur["metadata"].get("labels")) == (spec, meta.get("labels")):
                return copy.deepcopy(cur)
            meta["generation"] = 1 if cur is None else cur["metadata"]["generation"] + (cur["spec"] != spec)
            return self._put(NETWORK_POLICIES, {"metadata": meta, "spec": spec})

    def delete_network_policy(self, namespace: str, name: str) -> dict[str, Any] | None:
        with self._lock:
            cur = self._store[NETWORK_POLICIES.plural].get((namespace, name))
            if cur is None:
                return None
            return self._commit(NETWORK_POLICIES, copy.deepcopy(cur), "DELETED", cur)

    def _put(self, res: _Resource, obj: dict[str, Any]) -> dict[str, Any]:
        obj = {"kind": res.kind, "apiVersion": res.api_version, **copy.deepcopy(obj)}
        obj["kind"], obj["apiVersion"] = res.kind, res.api_version
        meta = obj.setdefault("metadata", {})
        with self._lock:
            cur = self._store[res.plural].get(_key(obj))
            meta.setdefault("uid", cur["metadata"]["uid"] if cur else str(uuid.uuid4()))
            meta.setdefault("creationTimestamp", cur["metadata"]["creationTimestamp"] if cur else _now_time())
            return self._commit(res, obj, "MODIFIED" if cur else "ADDED", cur)

    def _mutate(
        self, res: _Resource, namespace: str, name: str, fn: Callable[[dict[str, Any]], dict[str, Any] | None]
    ) -> dict[str, Any]:
        with self._lock:
            cur = self._store[res.plural].get((namespace, name))
            if cur is None:
                raise KeyError(f"{res.plural} {namespace}/{name} not found")
            new = copy.deepcopy(cur)
            replaced = fn(new)
            if replaced is not None:
                new = replaced
            return self._commit(res, new, "MODIFIED", cur)

    def _commit(
        self, res: _Resource, obj: dict[str, Any], etype: str, prev: dict[str, Any] | None
    ) -> dict[str, Any]:
        """Store a change under a new RV, record it and hand it to the watches; returns a copy."""
        with self._lock:
            self._rv += 1
            obj["metadata"]["resourceVersion"] = str(self._rv)
            store = self._store[res.plural]
            if etype == "DELETED":
                store.pop(_key(obj), None)
            else:
                store[_key(obj)] = obj
            self._latest[res.plural] = self._rv
            change = _Change(self._rv, res.plural, etype, obj, prev)
            self._history.append(change)
            while self.max_history is not None and len(self._history) > max(self.max_history, 0):
                self._floor = self._history.popleft().rv
            for watcher in self._watchers:
                if watcher.res is res:
                    event = watcher.translate(change)
                    if event is not None:
                        watcher.q.put(event)
            return copy.deepcopy(obj)

    def _bookmark(self, res: _Resource) -> dict[str, Any]:
        return {
            "type": "BOOKMARK",
            "object": {
                "kind": res.kind,
                "apiVersion": res.api_version,
                "metadata": {"resourceVersion": str(self._rv)},
            },
        }

    # -- serving ------------------------------------------------------------------------------

    def handle(self, handler: _KubeHandler, method: str) -> None:
        t0 = time.monotonic()
        split = urlsplit(handler.path)
        query = {k: v[-1] for k, v in parse_qs(split.query, keep_blank_values=True).items()}
        length = int(handler.headers.get("Content-Length") or 0)
        raw = handler.rfile.read(length) if length else b""
        content_type = handler.headers.get("Content-Type") or ""
        target = _target(method, split.path, query)
        name = target.name
        if not name and target.verb in ("list", "watch"):
            name = _selected_name(query.get("fieldSelector") or "")
        record = KubeRequest(
            verb=target.verb,
            api_group=target.group,
            version=target.version,
            resource=target.resource,
            subresource=target.subresource,
            namespace=target.namespace,
            name=name,
            query=query,
            content_type=content_type,
            status=0,
            t=t0,
            method=method,
            path=split.path,
            user_agent=handler.headers.get("User-Agent") or "",
        )
        if self._stopping or self._take_drop(split.path):
            self._log(record, 0)
            handler.close_connection = True
            _raw_shutdown(handler.connection)
            return
        latency = self.latency
        delay = latency(record) if callable(latency) else float(latency)
        if delay > 0:
            time.sleep(delay)
        if _bearer_token(handler.headers.get("Authorization")) != self.token:
            self._send(handler, record, 401, status_body(401, "Unauthorized", "Unauthorized"), {})
            return
        rule = self._take_rule(split.path, target.verb)
        if rule is not None:
            status, payload, headers = self._rule_answer(rule)
            self._send(handler, record, status, payload, headers)
            return
        headers = {}
        try:
            if target.verb == "watch" and target.res is not None and not target.subresource:
                self._serve_watch(handler, record, target, query)
                return
            status, payload = self._dispatch(
                method, split.path, target, query, content_type=content_type, raw=raw
            )
        except KubeError as err:
            status, payload, headers = err.code, err.body, err.headers
        except Exception as exc:  # a bug in the fake: a 500, recorded for the test to see
            with self._lock:
                self.errors.append(exc)
            status = 500
            payload = status_body(
                500,
                "InternalError",
                f"Internal error occurred: {exc!r}",
                {"causes": [{"message": repr(exc)}]},
            )
        self._send(handler, record, status, payload, headers)

    def _log(self, record: KubeRequest, status: int) -> None:
        with self._lock:
            self._requests.append(dataclasses.replace(record, status=status))

    def _send(
        self,
        handler: _KubeHandler,
        record: KubeRequest,
        status: int,
        payload: Any,
        headers: dict[str, str],
    ) -> None:
        self._log(record, status)
        if isinstance(payload, str):
            data, ctype = payload.encode(), "text/plain; charset=utf-8"
        else:
            data, ctype = json.dumps(payload, separators=(",", ":")).encode(), "application/json"
        try:
            handler.send_response(status)
            self._common_headers(handler)
            handler.send_header("Content-Type", ctype)
            if isinstance(payload, str):
                handler.send_header("X-Content-Type-Options", "nosniff")
            handler.send_header("Content-Length", str(len(data)))
            for key, value in headers.items():
                handler.send_header(key, value)
            handler.end_headers()
            handler.wfile.write(data)
        except OSError:
            handler.close_connection = True

    @staticmethod
    def _common_headers(handler: _KubeHandler) -> None:
        handler.send_header("Audit-Id", str(uuid.uuid4()))
        handler.send_header("Cache-Control", "no-cache, private")

    def _take_drop(self, path: str) -> bool:
        with self._lock:
            for rule in self._drop_rules:
                if rule.remaining > 0 and (rule.path_contains is None or rule.path_contains in path):
                    rule.remaining -= 1
                    return True
            return False

    def _take_rule(self, path: str, verb: str) -> _FailRule | None:
        with self._lock:
            for rule in self._fail_rules:
                if (
                    rule.remaining > 0
                    and (rule.path_contains is None or rule.path_contains in path)
                    and (rule.verb is None or rule.verb == verb)
                ):
                    rule.remaining -= 1
                    return rule
            return None

    @staticmethod
    def _rule_answer(rule: _FailRule) -> tuple[int, Any, dict[str, str]]:
        headers: dict[str, str] = {}
        if rule.retry_after is not None:
            headers["Retry-After"] = rule.retry_after
        if rule.status == 429:
            headers.setdefault("Retry-After", "1")
            if rule.body != "status":
                return 429, "Too many requests, please try again later.\n", headers
            seconds = int(float(headers["Retry-After"]))
            return (
                429,
                status_body(
                    429,
                    "TooManyRequests",
                    "Too many requests, please try again later.",
                    {"retryAfterSeconds": seconds},
                ),
                headers,
            )
        reasons = {
            400: ("BadRequest", "the server rejected our request for an unknown reason"),
            401: ("Unauthorized", "Unauthorized"),
            403: ("Forbidden", "forbidden: injected by the fake"),
            404: ("NotFound", "the server could not find the requested resource"),
            409: ("Conflict", "the server reported a conflict"),
            410: ("Expired", "too old resource version"),
            500: ("InternalError", "Internal error occurred: injected by the fake"),
            502: ("", "the server responded with the status code 502 but did not return more information"),
            503: ("ServiceUnavailable", "the server is currently unable to handle the request"),
            504: ("Timeout", "the server was unable to return a response in the time allotted"),
        }
        reason, message = reasons.get(rule.status, ("", f"injected status {rule.status}"))
        return rule.status, status_body(rule.status, reason, message), headers

    # -- routes -------------------------------------------------------------------------------

    def _dispatch(
        self, method: str, path: str, target: _Target, query: dict[str, str], *, content_type: str, raw: bytes
    ) -> tuple[int, Any]:
        if target.nonresource:
            if method == "GET" and path.rstrip("/") == "/version":
                return 200, dict(VERSION_INFO)
            if method == "GET" and path.rstrip("/") in ("/healthz", "/readyz", "/livez"):
                return 200, "ok"
            raise _path_not_found()
        res = target.res
        if res is None or target.subresource:
            raise _path_not_found()
        if target.verb not in res.verbs:
            raise _method_not_supported(res, target.verb)
        dry_run = query.get("dryRun")
        if dry_run not in (None, "All"):
            raise _bad_request(f'unsupported dry run value "{dry_run}"')
        if target.verb == "get":
            return 200, self._get_http(res, target.scope, target.name)
        if target.verb == "list":
            return 200, self._list(res, target.scope, query)
        if target.verb == "create":
            return 201, self._create(
                res, target.scope, self._json_body(res, content_type, raw), dry_run is not None
            )
        if target.verb == "update":
            body = self._json_body(res, content_type, raw)
            return 200, self._update(res, target.scope, target.name, body, dry_run is not None)
        if target.verb == "patch":
            return 200, self._patch(
                res,
                target.scope,
                target.name,
                content_type=content_type,
                raw=raw,
                dry_run=dry_run is not None,
            )
        if target.verb == "delete":
            return 200, self._delete(res, target.scope, target.name, dry_run is not None)
        raise _method_not_supported(res, target.verb)

    def _get_http(self, res: _Resource, namespace: str, name: str) -> dict[str, Any]:
        with self._lock:
            obj = self._store[res.plural].get((namespace, name))
            if obj is None:
                raise _not_found(res, name)
            return copy.deepcopy(obj)

    def _selectors(
        self, res: _Resource, query: dict[str, str]
    ) -> tuple[list[tuple[str, str, str]], list[_LabelReq]]:
        return (
            _parse_field_selector(query.get("fieldSelector") or "", res),
            _parse_label_selector(query.get("labelSelector") or ""),
        )

    def _wait_for_rv(self, rv: int) -> None:
        deadline = time.monotonic() + self.too_large_rv_wait
        while time.monotonic() < deadline:
            with self._lock:
                if self._rv >= rv:
                    return
            time.sleep(0.01)

    def _list(self, res: _Resource, namespace: str, query: dict[str, str]) -> dict[str, Any]:
        fields, labels = self._selectors(res, query)
        rv_param = query.get("resourceVersion")
        match = query.get("resourceVersionMatch") or ""
        cont = query.get("continue") or ""
        try:
            limit = int(query.get("limit") or 0)
        except ValueError:
            raise _bad_request(f"invalid limit: {query.get('limit')}") from None
        if cont and rv_param:
            raise _bad_request("specifying resource version is not allowed when using continue")
        if rv_param == "0":
            limit = 0  # the cacher serves rv=0 from the watch cache, which does not page
        requested: int | None = None
        if rv_param and rv_param != "0":
            try:
                requested = int(rv_param)
            except ValueError:
                raise _bad_request(f"invalid resource version: {rv_param}") from None
            self._wait_for_rv(requested)
        with self._lock:
            kind = "consistent" if not rv_param else ("rv0" if rv_param == "0" else "exact")
            self._list_reads[(res.plural, kind)] += 1
            if requested is not None and requested > self._rv:
                raise KubeError(**_status_kwargs(_too_large_rv(requested, self._rv)))
            if match == "Exact" and requested != self._rv:
                raise _expired("The resourceVersion for the provided list is too old.")
            if cont:
                snap_id, offset = _decode_continue(cont)
                snapshot = self._snapshots.get(snap_id)
                if snapshot is None or snapshot[0] != res.plural:
                    raise _expired(
                        "The provided continue parameter is too old to display a consistent list result. You "
                        "can start a new list without the continue parameter."
                    )
                items, rv = snapshot[1], snapshot[2]
            else:
                items = [
                    obj
                    for _, obj in sorted(self._store[res.plural].items())
                    if _matches(res, obj, namespace, fields, labels)
                ]
                rv, offset, snap_id = self._rv, 0, ""
            meta: dict[str, Any] = {"resourceVersion": str(rv)}
            page = items[offset:]
            if limit > 0 and len(page) > limit:
                if not snap_id:
                    snap_id = uuid.uuid4().hex
                    self._snapshots[snap_id] = (res.plural, items, rv)
                    while len(self._snapshots) > 64:
                        self._snapshots.pop(next(iter(self._snapshots)))
                meta["continue"] = _encode_continue(snap_id, offset + limit, rv)
                if not fields and not labels:
                    meta["remainingItemCount"] = len(page) - limit
                page = page[:limit]
            out_items = [
                {k: v for k, v in obj.items() if k not in ("kind", "apiVersion")} if res.builtin else obj
                for obj in page
            ]
            return {
                "kind": f"{res.kind}List",
                "apiVersion": res.api_version,
                "metadata": meta,
                "items": copy.deepcopy(out_items),
            }

    def _json_body(self, res: _Resource, content_type: str, raw: bytes) -> Any:
        base = content_type.split(";", maxsplit=1)[0].strip().lower()
        if base not in ("", "application/json"):
            raise _unsupported_media(
                "application/json, application/yaml, application/vnd.kubernetes.protobuf, application/cbor"
            )
        try:
            return json.loads(raw or b"null")
        except ValueError as err:
            raise _bad_request(
                f'{res.kind} in version "{res.version}" cannot be handled as a {res.kind}: {err}'
            ) from None

    def _decode_body(self, res: _Resource, body: Any) -> dict[str, Any]:
        try:
            obj = _decode(res, body)
        except _DecodeError as err:
            raise _bad_request(
                f'{res.kind} in version "{res.version}" cannot be handled as a {res.kind}: {err}'
            ) from None
        api_version, kind = obj.get("apiVersion"), obj.get("kind")
        if api_version and api_version != res.api_version:
            raise _bad_request(
                f"the API version in the data ({api_version}) does not match the expected API version "
                f"({res.api_version})"
            )
        if kind and kind != res.kind:
            raise _bad_request(f"the kind in the data ({kind}) does not match the expected kind ({res.kind})")
        obj["kind"], obj["apiVersion"] = res.kind, res.api_version
        return obj

    def _validate(self, res: _Resource, obj: dict[str, Any], old: dict[str, Any] | None) -> None:
        if res is EVENTS:
            errs = _validate_event(obj, old=old)
        else:
            errs = _validate_meta(obj["metadata"], create=old is None)
            if res is NODES:
                errs.extend(_validate_node(obj))
        if errs:
            raise _invalid(res, obj["metadata"].get("name") or "", errs)

    def _check_namespace(self, res: _Resource, obj: dict[str, Any], namespace: str) -> None:
        meta = obj["metadata"]
        if not res.namespaced:
            meta.pop("namespace", None)
            return
        if meta.get("namespace") and meta["namespace"] != namespace:
            raise _bad_request(
                "the namespace of the provided object does not match the namespace sent on the request"
            )
        meta["namespace"] = namespace

    def _create(self, res: _Resource, namespace: str, body: Any, dry_run: bool) -> dict[str, Any]:
        obj = self._decode_body(res, body)
        meta = obj["metadata"]
        self._check_namespace(res, obj, namespace)
        with self._lock:
            if res.namespaced and ("", namespace) not in self._store[NAMESPACES.plural]:
                raise _namespace_not_found(namespace)
        if not meta.get("name") and meta.get("generateName"):
            meta["name"] = meta["generateName"] + "".join(
                secrets.choice(_NAME_SUFFIX_ALPHABET) for _ in range(5)
            )
        rv = meta.get("resourceVersion")
        if rv and rv.isdigit() and int(rv) != 0:
            raise KubeError(500, "", "resourceVersion should not be set on objects to be created")
        meta.pop("resourceVersion", None)
        self._validate(res, obj, None)
        with self._lock:
            if _key(obj) in self._store[res.plural]:
                raise _already_exists(res, meta["name"])
            meta["uid"] = str(uuid.uuid4())
            meta["creationTimestamp"] = _now_time()
            if dry_run:
                return copy.deepcopy(obj)
            return self._commit(res, obj, "ADDED", None)

    def _apply_update(
        self,
        res: _Resource,
        namespace: str,
        name: str,
        new: dict[str, Any],
        cur: dict[str, Any],
        *,
        dry_run: bool,
        patch: bool = False,
    ) -> dict[str, Any]:
        """The common tail of PUT and PATCH, under the lock: preconditions, system fields, validation,
        admission."""
        meta = new["metadata"]
        if meta.get("name") and meta["name"] != name:
            raise _bad_request(
                f"the name of the object ({meta['name']}) does not match the name on the URL ({name})"
            )
        meta["name"] = name
        self._check_namespace(res, new, namespace)
        cur_meta = cur["metadata"]
        if meta.get("resourceVersion") and meta["resourceVersion"] != cur_meta["resourceVersion"]:
            raise _conflict(res, name)
        if meta.get("uid") and meta["uid"] != cur_meta["uid"]:
            raise _conflict(
                res,
                name,
                f"Precondition failed: UID in precondition: {cur_meta['uid']}, "
                f"UID in object meta: {meta['uid']}",
            )
        meta["uid"] = cur_meta["uid"]
        meta["creationTimestamp"] = cur_meta["creationTimestamp"]
        for kept in ("generation", "deletionTimestamp", "deletionGracePeriodSeconds"):
            if kept in cur_meta:
                meta[kept] = cur_meta[kept]
            else:
                meta.pop(kept, None)
        if res.status_subresource:
            if "status" in cur:
                new["status"] = copy.deepcopy(cur["status"])
            else:
                new.pop("status", None)
        self._validate(res, new, cur)
        self._admit(res, name, namespace, cur, new, dry_run=dry_run, patch=patch)
        meta["resourceVersion"] = cur_meta["resourceVersion"]
        if _strip_rv(new) == _strip_rv(cur) or dry_run:
            return copy.deepcopy(new if dry_run else cur)
        return self._commit(res, new, "MODIFIED", cur)

    def _admit(
        self,
        res: _Resource,
        name: str,
        namespace: str,
        old: dict[str, Any],
        new: dict[str, Any],
        *,
        dry_run: bool,
        patch: bool,
    ) -> None:
        """Validating admission of an UPDATE, after the object's validation, as the API server orders
        them; a denial is the 403 a ValidatingAdmissionPolicy's (reason Forbidden) makes."""
        if self.admission is None:
            return
        request = update_request(
            name,
            copy.deepcopy(self.user_info),
            gvk=(res.group, res.version, res.kind),
            resource=res.plural,
            namespace=namespace,
            patch=patch,
            dry_run=dry_run,
            uid=str(uuid.uuid4()),
        )
        denials = list(self.admission(request, copy.deepcopy(old), copy.deepcopy(new)))
        if denials:
            policy = getattr(self.admission, "policy_name", "policy")
            binding = getattr(self.admission, "binding_name", "binding")
            message = (
                f"{res.qualified} \"{name}\" is forbidden: ValidatingAdmissionPolicy '{policy}' with binding "
                f"'{binding}' denied request: {denials[0]}"
            )
            raise KubeError(403, "Forbidden", message, _details(res, name))

    def _update(self, res: _Resource, namespace: str, name: str, body: Any, dry_run: bool) -> dict[str, Any]:
        new = self._decode_body(res, body)
        with self._lock:
            cur = self._store[res.plural].get((namespace, name))
            if cur is None:
                raise _not_found(res, name)
            return self._apply_update(res, namespace, name, new, cur, dry_run=dry_run)

    def _patch(
        self, res: _Resource, namespace: str, name: str, *, content_type: str, raw: bytes, dry_run: bool
    ) -> dict[str, Any]:
        base = content_type.split(";", maxsplit=1)[0].strip().lower()
        accepted = [JSON_PATCH, MERGE_PATCH, APPLY_PATCH] + ([STRATEGIC_MERGE_PATCH] if res.builtin else [])
        if base not in (JSON_PATCH, MERGE_PATCH) and not (base == STRATEGIC_MERGE_PATCH and res.builtin):
            raise _unsupported_media(", ".join(accepted))
        try:
            patch = json.loads(raw or b"null")
        except ValueError as err:
            raise _bad_request(str(err)) from None
        with self._lock:
            cur = self._store[res.plural].get((namespace, name))
            if cur is None:
                raise _not_found(res, name)
            try:
                if base == JSON_PATCH:
                    patched = apply_json_patch(cur, patch)
                elif base == MERGE_PATCH:
                    if not isinstance(patch, dict):
                        raise _bad_request("invalid JSON document")
                    patched = apply_merge_patch(cur, patch)
                else:
                    patched = apply_strategic_merge_patch(cur, patch)
            except _PatchError as err:
                self.last_patch_error = str(err)
                raise _generic_invalid() from None
            except ValueError as err:
                raise _bad_request(str(err)) from None
            try:
                new = _decode(res, patched)
            except _DecodeError as err:
                raise _invalid(
                    _PATCH_PSEUDO,
                    "",
                    [_invalid_field("patch", json.dumps(patched, separators=(",", ":")), str(err))],
                ) from None
            new["kind"], new["apiVersion"] = res.kind, res.api_version
            return self._apply_update(res, namespace, name, new, cur, dry_run=dry_run, patch=True)

    def _delete(self, res: _Resource, namespace: str, name: str, dry_run: bool) -> dict[str, Any]:
        with self._lock:
            cur = self._store[res.plural].get((namespace, name))
            if cur is None:
                raise _not_found(res, name)
            if not dry_run:
                self._commit(res, copy.deepcopy(cur), "DELETED", cur)
        details = {**_details(res, name), "uid": cur["metadata"]["uid"]}
        return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "details": details}

    # -- watch --------------------------------------------------------------------------------

    def _serve_watch(
        self, handler: _KubeHandler, record: KubeRequest, target: _Target, query: dict[str, str]
    ) -> None:
        res = target.res
        assert res is not None
        fields, labels = self._selectors(res, query)
        if target.name:
            fields.append(("metadata.name", "=", target.name))
        if _truthy(query.get("sendInitialEvents")):
            raise _bad_request("fake kube-apiserver: sendInitialEvents is not supported")
        try:
            timeout = int(query["timeoutSeconds"]) if query.get("timeoutSeconds") else 0
        except ValueError:
            raise _bad_request(f"invalid timeoutSeconds: {query['timeoutSeconds']}") from None
        rv_param = query.get("resourceVersion") or ""
        requested: int | None = None
        if rv_param not in ("", "0"):
            try:
                requested = int(rv_param)
            except ValueError:
                raise _bad_request(f"invalid resource version: {rv_param}") from None
            self._wait_for_rv(requested)
        watcher = _Watcher(res, target.scope, fields, labels, _truthy(query.get("allowWatchBookmarks")))
        error: dict[str, Any] | None = None
        with self._lock:
            if self._expire_watches > 0:
                self._expire_watches -= 1
                raise _expired(f"too old resource version: {rv_param or self._rv} ({self._floor})")
            self._watch_count += 1
            if requested is None:
                for _, obj in sorted(self._store[res.plural].items()):
                    if watcher.matches(obj):
                        watcher.q.put({"type": "ADDED", "object": obj})
                self._watchers.append(watcher)
            elif requested < self._floor:
                error = status_body(410, "Expired", f"too old resource version: {requested} ({self._floor})")
            elif requested > self._rv:
                error = _too_large_rv(requested, self._rv)
            else:
                for change in self._history:
                    if change.rv > requested and change.plural == res.plural:
                        event = watcher.translate(change)
                        if event is not None:
                            watcher.q.put(event)
                self._watchers.append(watcher)
        self._log(record, 200)
        try:
            handler.send_response(200)
            self._common_headers(handler)
            handler.send_header("Content-Type", "application/json")
            handler.send_header("Transfer-Encoding", "chunked")
            handler.end_headers()
            if error is not None:
                _write_chunk(handler, {"type": "ERROR", "object": error})
                handler.wfile.write(b"0\r\n\r\n")
                return
            self._pump(handler, watcher, timeout)
        except OSError:
            handler.close_connection = True
        finally:
            with self._lock:
                if watcher in self._watchers:
                    self._watchers.remove(watcher)

    def _pump(self, handler: _KubeHandler, watcher: _Watcher, timeout: int) -> None:
        start = time.monotonic()
        deadline = start + timeout if timeout > 0 else None
        next_bookmark = start + self.bookmark_interval if watcher.bookmarks else None
        while True:
            now = time.monotonic()
            if deadline is not None and now >= deadline:
                handler.wfile.write(b"0\r\n\r\n")
                return
            if next_bookmark is not None and now >= next_bookmark:
                with self._lock:  # queued after every event it covers
                    watcher.q.put(self._bookmark(watcher.res))
                next_bookmark = now + self.bookmark_interval
            wait = 0.05
            for due in (deadline, next_bookmark):
                if due is not None:
                    wait = min(wait, max(due - now, 0.001))
            try:
                item = watcher.q.get(timeout=wait)
            except queue.Empty:
                if _client_gone(handler.connection):
                    handler.close_connection = True
                    return
                continue
            if item is _DROP:
                handler.close_connection = True
                _raw_shutdown(handler.connection)
                return
            if item is _END:
                handler.wfile.write(b"0\r\n\r\n")
                return
            _write_chunk(handler, item)


# A stand-in for "no kind" in the 422 a patch result that cannot be decoded gets (GroupKind{}).
_PATCH_PSEUDO = _Resource("", "", "", "", False, frozenset(), {}, False, False)


def _status_kwargs(body: dict[str, Any]) -> dict[str, Any]:
    return {
        "code": body["code"],
        "reason": body.get("reason", ""),
        "message": body["message"],
        "details": body.get("details"),
    }


def _write_chunk(handler: _KubeHandler, event: dict[str, Any]) -> None:
    data = json.dumps(event, separators=(",", ":")).encode() + b"\n"
    handler.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))


def _client_gone(conn: socket.socket) -> bool:
    """True when the peer closed the TCP connection (peek at the raw socket, below TLS)."""
    try:
        readable, _, _ = select.select([conn], [], [], 0)
        if not readable:
            return False
        return socket.socket.recv(conn, 1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b""
    except BlockingIOError:
        return False
    except (OSError, ValueError):
        return True


def _selected_name(field_selector: str) -> str:
    for term in field_selector.split(","):
        for op in ("==", "="):
            key, sep, value = term.partition(op)
            if sep and key.strip() == "metadata.name" and not key.endswith("!"):
                return value.strip()
    return ""


def _encode_continue(snapshot: str, offset: int, rv: int) -> str:
    raw = json.dumps({"v": "meta.k8s.io/v1", "rv": rv, "start": f"{snapshot}:{offset}"})
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def _decode_continue(token: str) -> tuple[str, int]:
    try:
        raw = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
        snapshot, offset = raw["start"].rsplit(":", 1)
        return snapshot, int(offset)
    except (ValueError, KeyError, TypeError, AttributeError):
        raise _bad_request(f"continue key is not valid: {token}") from None


# --- fixtures -----------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def kube_tls(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    """A CA and a 127.0.0.1/localhost server certificate for the fake kube-apiserver."""
    return make_tls_files(tmp_path_factory.mktemp("kube-tls"))


@pytest.fixture
def kube_apiserver(kube_tls: TlsFiles) -> Iterator[KubeApiServer]:
    """A started fake kube-apiserver for this test (bookmarks every second); stopped at teardown."""
    server = KubeApiServer(tls=kube_tls).start()
    try:
        yield server
    finally:
        server.stop()


__all__ = [
    "ENICONFIGS",
    "EVENTS",
    "NAMESPACES",
    "NAMESPACE_NAME_LABEL",
    "NETWORK_POLICIES",
    "NODES",
    "PODS",
    "FieldError",
    "KubeApiServer",
    "KubeError",
    "KubeRequest",
    "apply_json_patch",
    "apply_merge_patch",
    "apply_strategic_merge_patch",
    "status_body",
]
