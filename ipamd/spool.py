"""Drain the shim's durable DEL queue (shim/spool.py writes it) into the service.

Run once before the socket serves anything (so no ADD can take an address whose pod was deleted
while the daemon was down), then every few seconds (a DEL queued while the daemon was starting).
No entry ever blocks the queue or the daemon's start:

* a malformed entry (not JSON, wrong version, a field that fails validation) is moved aside to
  ``*.bad`` in the spool directory;
* an entry whose DEL raises when applied (or that breaks the parser in a way validation does not
  foresee) is moved into ``del-spool/failed/``, kept as it was queued, so that an operator can
  look at it and put it back once the cause is fixed.

Either way the entry is logged (``spooled_del_invalid``, ``spooled_del_failed``) and counted in
``cloudcni_spooled_dels_set_aside_total{reason}``; the other entries are applied.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Protocol

import structlog

from ipamd import durable
from ipamd.errors import CloudCniError
from ipamd.metrics import Metrics
from ipamd.requests import Call
from ipamd.rpc import validate
from ipamd.rpc.pb import ipamd_pb2 as pb

log = structlog.get_logger("ipamd.spool")

SPOOL_DIRNAME = "del-spool"
SPOOL_VERSION = "cloud-cni-del/1"
FAILED_DIRNAME = "failed"


class DelApplier(Protocol):
    """What the drain needs of ``IpamService``: its DEL."""

    async def delete(self, call: Call, prev_result: dict[str, Any] | None) -> None: ...


def spool_dir(socket_path: str) -> Path:
    return Path(socket_path).parent / SPOOL_DIRNAME


def _attachment(entry: dict[str, Any]) -> pb.Attachment:
    def text(field: str) -> str:
        value = entry.get(field, "")
        if not isinstance(value, str):
            raise ValueError(f"{field} must be a string")
        return value

    if entry.get("version") != SPOOL_VERSION:
        raise ValueError(f"version must be {SPOOL_VERSION!r}")
    return pb.Attachment(
        container_id=text("containerID"),
        ifname=text("ifName"),
        netns=text("netns"),
        network_name=text("network"),
        pod=pb.PodInfo(namespace=text("podNamespace"), name=text("podName"), uid=text("podUID")),
    )


def _parse(path: Path) -> tuple[Call, dict[str, Any] | None]:
    entry = json.loads(path.read_bytes())
    if not isinstance(entry, dict):
        raise ValueError("not a JSON object")
    call = validate.attachment(_attachment(entry), netns_required=False)
    prev_text = entry.get("prevResult") or ""
    prev = validate.prev_result(prev_text if isinstance(prev_text, str) else "", required=False)
    return call, prev


def _set_aside(path: Path, target: Path, reason: str, metrics: Metrics | None) -> None:
    try:
        if target.parent != path.parent:
            target.parent.mkdir(mode=0o700, exist_ok=True)
        os.replace(path, target)
    except OSError as exc:  # it stays queued: the next drain tries it again
        log.error("spooled_del_set_aside_failed", path=str(path), target=str(target), error=str(exc))
        return
    log.warning("spooled_del_set_aside", path=str(path), moved_to=str(target), reason=reason)
    if metrics is not None:
        metrics.spooled_dels_set_aside.labels(reason).inc()


async def drain(service: DelApplier, socket_path: str, *, metrics: Metrics | None = None) -> int:
    """Apply every queued DEL; returns how many were applied. Raises only if cancelled."""
    directory = spool_dir(socket_path)
    try:
        entries = sorted(p for p in directory.iterdir() if p.suffix == ".json" and not p.name.startswith("."))
    except FileNotFoundError:
        return 0
    except OSError as exc:  # e.g. not a directory: nothing can have been queued there
        log.error("del_spool_unreadable", path=str(directory), error=str(exc))
        return 0
    applied = 0
    for path in entries:
        try:
            call, prev = _parse(path)
        except (ValueError, CloudCniError, OSError) as exc:
            log.error("spooled_del_invalid", path=str(path), error=str(exc))
            _set_aside(path, path.with_suffix(".bad"), "invalid", metrics)
            continue
        except Exception as exc:  # e.g. RecursionError from a prevResult nested too deep
            log.error("spooled_del_failed", path=str(path), error=str(exc), kind=type(exc).__name__)
            _set_aside(path, directory / FAILED_DIRNAME / path.name, "failed", metrics)
            continue
        try:
            await service.delete(call, prev)
        except Exception as exc:
            log.error(
                "spooled_del_failed",
                path=str(path),
                container_id=call.key.container_id,
                ifname=call.key.ifname,
                error=str(exc),
                kind=type(exc).__name__,
            )
            _set_aside(path, directory / FAILED_DIRNAME / path.name, "failed", metrics)
            continue
        path.unlink(missing_ok=True)
        applied += 1
        log.info("spooled_del_applied", container_id=call.key.container_id, ifname=call.key.ifname)
    if applied:
        durable.fsync_directory(directory)  # a no-op where directories cannot be fsynced (Windows)
    return applied
