"""What the operator commands print: pure functions, documents in, text out.

``cloud-cni status`` reads the daemon's introspection (ipamd/introspection.py) and renders it:

    GET /v1/pool         {"total", "assigned", "available", "cooling", "quarantined", "max",
                          "growth_paused_until": epoch | null,
                          "growth_hold": str | null, "growth_blocked": str,      (newer daemons)
                          "interfaces": [{"id", "device_index", "primary", "subnet_id",
                                          "subnet_cidr", "ips": [str], "prefixes": [str]}]}
    GET /v1/assignments  [{"network", "container_id", "ifname", "ip", "interface_id",
                           "pod": {"namespace", "name", "uid"}, "netns", "assigned_at": epoch,
                           "orphaned": bool, "pod_known": bool | null, "pod_state": "known" |
                           "absent" | "replaced" | "unknown", "pod_absent_since": epoch | null}]
                                                           (the pod_* fields: newer daemons)
    GET /v1/k8s          {"integration", "node", "api": {"host", "reachable", "last_error"},
                          "watches": {name: {"synced", "resource_version", "relists", "restarts",
                                             "last_error"}},
                          "startup_taint": {"taint", "state"}, "events": {"sent", "dropped", "queued"},
                          "pods_on_node", "node_capacity_pods", "pod_gone": {"grace_seconds", "released"}}
                                                           (404 on older daemons: ``None`` here)

A document of another shape raises ``DocumentError`` naming the field, so the command prints one
line instead of a traceback. Fields newer daemons add are optional; the text says what is unknown.

``cloud-cni config check`` renders ``Settings.public()`` as ``NAME=value`` lines marked by where
each value came from, and reads ``--env-file`` files (``parse_env_file``).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from ipamd.config import VARIABLES, Settings

DEFAULT_INTROSPECTION = "127.0.0.1:61679"


class DocumentError(ValueError):
    """A document from the daemon is not the shape this command reads; the message names the field."""


# --- reading untyped JSON ----------------------------------------------------------------------

_ABSENT = object()


def _type_name(value: object) -> str:
    if value is None:
        return "null"
    return {bool: "a boolean", int: "a number", float: "a number", str: "a string", list: "a list"}.get(
        type(value), "an object" if isinstance(value, dict) else type(value).__name__
    )


def _raw(doc: Mapping[str, object], key: str, where: str, required: bool) -> object:
    value = doc.get(key, _ABSENT)
    if value is _ABSENT and required:
        raise DocumentError(f"{where}: {key!r} is missing")
    return value


def _bad(where: str, key: str, expected: str, value: object) -> DocumentError:
    return DocumentError(f"{where}.{key}: expected {expected}, got {_type_name(value)}")


def _obj(value: object, where: str) -> Mapping[str, object]:
    if not isinstance(value, dict):
        raise DocumentError(f"{where}: expected an object, got {_type_name(value)}")
    return value


def _list(value: object, where: str) -> list[object]:
    if not isinstance(value, list):
        raise DocumentError(f"{where}: expected a list, got {_type_name(value)}")
    return value


def _int(doc: Mapping[str, object], key: str, where: str) -> int:
    value = _raw(doc, key, where, required=True)
    if isinstance(value, bool) or not isinstance(value, int):
        raise _bad(where, key, "an integer", value)
    return value


def _opt_int(doc: Mapping[str, object], key: str, where: str) -> int | None:
    value = _raw(doc, key, where, required=False)
    if value is _ABSENT or value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise _bad(where, key, "an integer or null", value)
    return value


def _opt_num(doc: Mapping[str, object], key: str, where: str) -> float | None:
    value = _raw(doc, key, where, required=False)
    if value is _ABSENT or value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise _bad(where, key, "a finite number or null", value)
    return float(value)


def _str(doc: Mapping[str, object], key: str, where: str) -> str:
    value = _raw(doc, key, where, required=True)
    if not isinstance(value, str):
        raise _bad(where, key, "a string", value)
    return value


def _opt_str(doc: Mapping[str, object], key: str, where: str) -> str | None:
    value = _raw(doc, key, where, required=False)
    if value is _ABSENT or value is None:
        return None
    if not isinstance(value, str):
        raise _bad(where, key, "a string or null", value)
    return value


def _opt_bool(doc: Mapping[str, object], key: str, where: str) -> bool | None:
    value = _raw(doc, key, where, required=False)
    if value is _ABSENT or value is None:
        return None
    if not isinstance(value, bool):
        raise _bad(where, key, "true, false or null", value)
    return value


def _strs(doc: Mapping[str, object], key: str, where: str) -> list[str]:
    items = _list(doc.get(key, []), f"{where}.{key}")
    if not all(isinstance(item, str) for item in items):
        raise DocumentError(f"{where}.{key}: expected a list of strings")
    return [str(item) for item in items]


# --- small text helpers --------------------------------------------------------------------------


def table(headers: Sequence[str], rows: Sequence[Sequence[str]], right: Sequence[int] = ()) -> list[str]:
    """Aligned columns two spaces apart; columns in ``right`` are right-aligned (numbers). The last
    column is not padded, so a long value there (a pod name) never pushes the others out of line."""
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]
    last = len(headers) - 1
    out = []
    for row in [list(headers), *rows]:
        cells = []
        for i, cell in enumerate(row):
            if i == last:
                cells.append(cell.rjust(widths[i]) if i in right else cell)
            else:
                cells.append(cell.rjust(widths[i]) if i in right else cell.ljust(widths[i]))
        out.append("  ".join(cells).rstrip())
    return out


def format_age(seconds: float) -> str:
    """``42s``, ``3m12s``, ``2h5m``, ``3d4h`` (as kubectl prints ages); negative (skew) is ``0s``."""
    s = max(0, int(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60}s"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60}m"
    return f"{s // 86400}d{s % 86400 // 3600}h"


def short_id(resource_id: str) -> str:
    """An Azure resource id by its names (``vnet/subnet``, ``nic-0``); other ids as they are.

    ARM ids run to 150 characters; a table keeps the part an operator recognises. ``--json``
    has the full id.
    """
    head, sep, tail = resource_id.partition("/providers/")
    if not sep or not head.lower().startswith("/subscriptions/"):
        return resource_id
    parts = tail.split("/")[1:]  # drop the provider namespace: type/name/type/name...
    names = parts[1::2]
    return "/".join(names) if names else resource_id


def _utc(epoch: float) -> str:
    try:
        return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    except (OverflowError, OSError, ValueError):  # beyond what a calendar date can say
        return f"epoch {epoch:.0f}"


# --- cloud-cni status ----------------------------------------------------------------------------


def render_pool(pool: object, *, now: float) -> list[str]:
    doc = _obj(pool, "/v1/pool")
    where = "/v1/pool"
    counts = {k: _int(doc, k, where) for k in ("total", "assigned", "available", "cooling", "quarantined")}
    cap = _opt_int(doc, "max", where)
    lines = [
        f"Pool: {counts['total']} {'address' if counts['total'] == 1 else 'addresses'} held"
        + (f" (max {cap})" if cap is not None else "")
        + f": {counts['assigned']} assigned, {counts['available']} available, "
        f"{counts['cooling']} cooling, {counts['quarantined']} quarantined"
    ]
    lines += _growth_lines(doc, now=now)
    lines.append("")
    lines += _interface_lines(_list(_raw(doc, "interfaces", where, required=True), f"{where}.interfaces"))
    return lines


def _growth_lines(doc: Mapping[str, object], *, now: float) -> list[str]:
    where = "/v1/pool"
    hold = _opt_str(doc, "growth_hold", where)
    paused_until = _opt_num(doc, "growth_paused_until", where)
    blocked = _opt_str(doc, "growth_blocked", where)  # "" when the pool can grow; absent: not reported
    lines = []
    if hold:
        lines.append(f"Growth: held: {hold}")
    if paused_until is not None and paused_until > now:
        lines.append(
            f"Growth: paused until {_utc(paused_until)} ({format_age(paused_until - now)} from now): "
            "the cloud refused (subnet full, limit or permission)"
        )
    if not lines:
        if blocked:
            lines.append(f"Growth: blocked: {blocked}")
        elif blocked == "":
            lines.append("Growth: can grow")
        else:
            lines.append("Growth: not paused (this daemon does not report holds or limits)")
    return lines


def _interface_lines(interfaces: list[object]) -> list[str]:
    if not interfaces:
        return ["Interfaces: none"]
    rows: list[tuple[tuple[int, str], list[str]]] = []
    for n, item in enumerate(interfaces):
        where = f"/v1/pool.interfaces[{n}]"
        iface = _obj(item, where)
        iface_id = _str(iface, "id", where)
        index = _opt_int(iface, "device_index", where)
        primary = _opt_bool(iface, "primary", where)
        subnet = short_id(_opt_str(iface, "subnet_id", where) or "")
        cidr = _opt_str(iface, "subnet_cidr", where)
        ips = _strs(iface, "ips", where)
        prefixes = _strs(iface, "prefixes", where)
        shown = ", ".join(prefixes[:3]) + (f" (+{len(prefixes) - 3} more)" if len(prefixes) > 3 else "")
        row = [
            short_id(iface_id),
            "?" if index is None else str(index),
            {True: "yes", False: "no", None: "?"}[primary],
            " ".join(p for p in (subnet, cidr and f"({cidr})") if p) or "?",
            str(len(ips)),
            shown or "-",
        ]
        rows.append(((index if index is not None else 1 << 30, iface_id), row))
    rows.sort(key=lambda r: r[0])
    head = ["ID", "DEVICE", "PRIMARY", "SUBNET", "IPS", "PREFIXES"]
    return [f"Interfaces ({len(rows)})", *table(head, [r for _, r in rows], right=(1, 4))]


_POD_KNOWN = {True: "yes", False: "NO", None: "?"}


def _in_api(a: Mapping[str, object], where: str, *, now: float) -> str:
    """``yes``, ``NO`` or ``?``; a pod not known says why when the daemon tells: ``NO (replaced)``
    (another pod has the name now) or ``NO (3m12s)`` (absent from the watch this long)."""
    known = _opt_bool(a, "pod_known", where)
    text = _POD_KNOWN[known]
    if known is False:
        since = _opt_num(a, "pod_absent_since", where)
        if _opt_str(a, "pod_state", where) == "replaced":
            text += " (replaced)"
        elif since is not None:
            text += f" ({format_age(now - since)})"
    return text


def render_assignments(assignments: object, *, now: float) -> list[str]:
    """The assignments table. IN API (is the pod known to the API server) is shown when the daemon
    reports ``pod_known``; the pod is the last column, so a long name keeps the table aligned."""
    items = _list(assignments, "/v1/assignments")
    if not items:
        return ["Assignments: none"]
    reports_known = False
    rows: list[tuple[tuple[str, str, str, str], list[str]]] = []
    orphaned: list[str] = []
    for n, item in enumerate(items):
        where = f"/v1/assignments[{n}]"
        a = _obj(item, where)
        pod = _obj(a.get("pod") or {}, f"{where}.pod")
        namespace = _opt_str(pod, "namespace", f"{where}.pod") or ""
        name = _opt_str(pod, "name", f"{where}.pod") or ""
        pod_text = f"{namespace}/{name}" if namespace or name else "?"
        ifname = _opt_str(a, "ifname", where) or ""
        if ifname and ifname != "eth0":
            pod_text += f" ({ifname})"
        ip = _str(a, "ip", where)
        container = _opt_str(a, "container_id", where) or "?"
        assigned_at = _opt_num(a, "assigned_at", where)
        reports_known = reports_known or "pod_known" in a
        in_api = _in_api(a, where, now=now)
        if _opt_bool(a, "orphaned", where):
            orphaned.append(f"{pod_text} {ip}")
        row = [
            ip,
            short_id(_opt_str(a, "interface_id", where) or "?"),
            container[:12],
            "?" if assigned_at is None else format_age(now - assigned_at),
            in_api,
            pod_text,
        ]
        rows.append(((namespace, name, ifname, ip), row))
    rows.sort(key=lambda r: r[0])
    head = ["IP", "INTERFACE", "CONTAINER", "AGE", "IN API", "POD"]
    body = [r for _, r in rows]
    if not reports_known:
        head = [h for h in head if h != "IN API"]
        body = [[c for i, c in enumerate(r) if i != 4] for r in body]
    lines = [f"Assignments ({len(rows)})", *table(head, body, right=(3,))]
    if orphaned:
        lines.append(
            f"Orphaned ({len(orphaned)}): the cloud no longer holds these addresses: " + "; ".join(orphaned)
        )
    return lines


_WATCH_ORDER = ("node", "pods", "eniconfigs")
_TAINT_STATE = {"timed_out": "timed out (removed anyway)", "disabled": "disabled (STARTUP_TAINT is empty)"}


def render_kubernetes(k8s: object | None) -> list[str]:
    """The Kubernetes integration as the daemon reports it; ``None`` (404): not reported."""
    if k8s is None:
        return ["Kubernetes: not reported (this daemon has no /v1/k8s)"]
    where = "/v1/k8s"
    doc = _obj(k8s, where)
    integration = _opt_str(doc, "integration", where) or "?"
    if integration == "off":
        return ["Kubernetes: integration off"]
    node = _opt_str(doc, "node", where)
    lines = [f"Kubernetes: integration {integration}, node {node or '? (NODE_NAME unset)'}"]

    api = _obj(doc.get("api") or {}, f"{where}.api")
    reachable = _opt_bool(api, "reachable", f"{where}.api")
    last_error = _opt_str(api, "last_error", f"{where}.api")
    host = _opt_str(api, "host", f"{where}.api")
    state = {True: "reachable", False: "UNREACHABLE", None: "?"}[reachable]
    lines.append(
        f"  API: {state}"
        + (f" at {host}" if host else "")
        + (f" (last error: {last_error})" if last_error else "")
    )

    watches = _obj(doc.get("watches") or {}, f"{where}.watches")
    names = [n for n in _WATCH_ORDER if n in watches] + sorted(n for n in watches if n not in _WATCH_ORDER)
    if names:
        rows = []
        for name in names:
            w_where = f"{where}.watches.{name}"
            w = _obj(watches[name], w_where)
            synced = _opt_bool(w, "synced", w_where)
            relists = _opt_int(w, "relists", w_where)
            restarts = _opt_int(w, "restarts", w_where)
            rows.append(
                [
                    name,
                    {True: "yes", False: "NO", None: "?"}[synced],
                    _opt_str(w, "resource_version", w_where) or "-",
                    "?" if relists is None else str(relists),
                    "?" if restarts is None else str(restarts),
                    _opt_str(w, "last_error", w_where) or "",
                ]
            )
        head = ["WATCH", "SYNCED", "RESOURCE VERSION", "RELISTS", "RESTARTS", "LAST ERROR"]
        if not any(r[-1] for r in rows):
            head, rows = head[:-1], [r[:-1] for r in rows]
        lines += ["  " + line for line in table(head, rows, right=(3, 4))]

    if "startup_taint" in doc:
        taint = _obj(doc["startup_taint"], f"{where}.startup_taint")
        key = _opt_str(taint, "taint", f"{where}.startup_taint") or ""
        st = _opt_str(taint, "state", f"{where}.startup_taint") or "unknown"
        lines.append(f"  Startup taint: {(key + ' ') if key else ''}{_TAINT_STATE.get(st, st)}")
    if "events" in doc:
        ev = _obj(doc["events"], f"{where}.events")
        counts = [_opt_int(ev, k, f"{where}.events") for k in ("sent", "dropped", "queued")]
        sent, dropped, queued = ("?" if c is None else str(c) for c in counts)
        lines.append(f"  Events: {sent} sent, {dropped} dropped, {queued} queued")
    pods = _opt_int(doc, "pods_on_node", where)
    capacity = _opt_int(doc, "node_capacity_pods", where)
    lines.append(
        f"  Pods on node: {'unknown' if pods is None else pods}"
        + (f" (node capacity {capacity})" if capacity is not None else "")
    )
    if "pod_gone" in doc:
        gone = _obj(doc["pod_gone"], f"{where}.pod_gone")
        grace = _opt_num(gone, "grace_seconds", f"{where}.pod_gone")
        released = _opt_int(gone, "released", f"{where}.pod_gone")
        lines.append(
            f"  Pods gone: {'?' if released is None else released} released"
            + (f" (after {format_age(grace)} absent, netns gone)" if grace is not None else "")
        )
    return lines


def render_status(pool: object, assignments: object, k8s: object | None, *, now: float) -> str:
    """The whole ``cloud-cni status`` text; raises DocumentError for a document of another shape."""
    parts = [
        render_pool(pool, now=now),
        render_assignments(assignments, now=now),
        render_kubernetes(k8s),
    ]
    return "\n\n".join("\n".join(p) for p in parts) + "\n"


def parse_endpoint(text: str) -> tuple[str, int]:
    """``host:port`` or ``[v6]:port`` -> (host to connect to, port). A wildcard bind (``0.0.0.0``,
    ``[::]``) is reached on loopback."""
    host, sep, port = text.strip().rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"{text!r} is not HOST:PORT with a port 1-65535")
    return {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host), int(port)


# --- cloud-cni config check ----------------------------------------------------------------------


def env_text(value: Any) -> str:
    """A setting as its env var would spell it: ``true``, ``300``, ``a,b``, JSON, empty for unset."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() else repr(value)
    if isinstance(value, tuple | list):
        return ",".join(str(v) for v in value)
    if isinstance(value, dict):
        return json.dumps(value, separators=(",", ":"))
    return str(value)


def setting_source(
    name: str, value: Any, env: Mapping[str, str], aliases: Mapping[str, str] | None = None
) -> str:
    """Where a value came from: ``set`` (the environment), ``set as MY_NODE_NAME``, ``set as
    AWS_VPC_K8S_CNI_EXTERNALSNAT`` (aws-node's name, in ``aliases``: ours -> the alias that set it),
    ``azure default``, or ``""`` (the default)."""
    if (env.get(name) or "").strip():
        return "set"
    if name == "NODE_NAME" and (env.get("MY_NODE_NAME") or "").strip():
        return "set as MY_NODE_NAME"
    if aliases and name in aliases:
        return f"set as {aliases[name]}"
    var = next(v for v in VARIABLES if v.name == name)
    if var.azure_default is not None and var.default is not None and value != var.parse(var.default):
        return "azure default"
    return ""


def render_settings(settings: Settings, env: Mapping[str, str]) -> list[str]:
    """``NAME=value`` per variable in the table's order, marked ``(set)``, ``(set as <aws-node's
    name>)`` or ``(azure default)``; then a comment line per aws-node variable that sets nothing here
    (``# NAME=value  (inert: why)``, ``(ignored: why)``), as the daemon logs them at start."""
    aliases = {n.variable: n.name for n in settings.alias_notes if n.outcome == "applied" and n.variable}
    lines = []
    for name, value in settings.public().items():
        source = setting_source(name, value, env, aliases)
        lines.append(f"{name}={env_text(value)}" + (f"  ({source})" if source else ""))
    for note in settings.alias_notes:
        if note.variable is None:
            lines.append(f"# {note.name}={note.value}  ({note.outcome}: {note.reason})")
    return lines


class EnvFileError(ValueError):
    """A line of an env file is not ``KEY=VALUE``; the message names the line, never its value."""


_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_ESCAPES = {"\\": "\\", '"': '"', "n": "\n", "t": "\t", "$": "$"}


def parse_env_file(text: str) -> dict[str, str]:
    """``KEY=VALUE`` lines as a shell or a dotenv file writes them.

    Blank lines and ``#`` comments are skipped; ``export`` is allowed; ``'single'`` quotes are
    literal, ``"double"`` quotes take ``\\"``, ``\\\\``, ``\\n``, ``\\t``, ``\\$``; an unquoted value is
    stripped and loses a `` #comment``. A later line for the same key wins, as in a shell.
    """
    env: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if stripped.startswith("export ") or stripped.startswith("export\t"):
            stripped = stripped[len("export") :].lstrip()
        key, sep, rest = stripped.partition("=")
        key = key.rstrip()
        if not sep or not _KEY.fullmatch(key):
            raise EnvFileError(f"line {number}: expected KEY=VALUE")
        env[key] = _env_value(rest, number)
    return env


def _env_value(rest: str, number: int) -> str:
    rest = rest.strip()
    if rest[:1] == "'":
        end = rest.find("'", 1)
        if end < 0:
            raise EnvFileError(f"line {number}: unterminated ' quote")
        value, after = rest[1:end], rest[end + 1 :]
    elif rest[:1] == '"':
        out: list[str] = []
        i = 1
        while i < len(rest) and rest[i] != '"':
            if rest[i] == "\\" and i + 1 < len(rest) and rest[i + 1] in _ESCAPES:
                out.append(_ESCAPES[rest[i + 1]])
                i += 2
                continue
            out.append(rest[i])
            i += 1
        if i >= len(rest):
            raise EnvFileError(f'line {number}: unterminated " quote')
        value, after = "".join(out), rest[i + 1 :]
    else:
        return re.split(r"\s#", rest, maxsplit=1)[0].rstrip()
    after = after.strip()
    if after and not after.startswith("#"):
        raise EnvFileError(f"line {number}: text after the closing quote")
    return value
