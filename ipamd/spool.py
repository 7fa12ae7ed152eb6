"""Drain the shim's durable DEL queue (shim/spool.py writes it) into the service.

Run once before the socket serves anything (so no ADD can take an address whose pod was deleted
while the daemon was down), then every few seconds (a DEL queued while the daemon was starting).
A malformed entry is moved aside to ``*.bad`` and logged; it never blocks the queue.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import structlog

from ipamd.errors import CloudCniError
from ipamd.rpc import validate
from ipamd.rpc.pb import ipamd_pb2 as pb
from ipamd.service import IpamService

log = structlog.get_logger("ipamd.spool")

SPOOL_DIRNAME = "del-spool"
SPOOL_VERSION = "cloud-cni-del/1"


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


async def drain(service: IpamService, socket_path: str) -> int:
    """Apply every queued DEL; returns how many were applied."""
    directory = spool_dir(socket_path)
    try:
        entries = sorted(p for p in directory.iterdir() if p.suffix == ".json" and not p.name.startswith("."))
    except FileNotFoundError:
        return 0
    applied = 0
    for path in entries:
        try:
            entry = json.loads(path.read_bytes())
            if not isinstance(entry, dict):
                raise ValueError("not a JSON object")
            call = validate.attachment(_attachment(entry), netns_required=False)
            prev_text = entry.get("prevResult") or ""
            prev = validate.prev_result(prev_text if isinstance(prev_text, str) else "", required=False)
        except (ValueError, CloudCniError, OSError) as exc:
            log.error("spooled_del_invalid", path=str(path), error=str(exc))
            os.replace(path, path.with_suffix(".bad"))
            continue
        await service.delete(call, prev)
        path.unlink()
        applied += 1
        log.info("spooled_del_applied", container_id=call.key.container_id, ifname=call.key.ifname)
    if applied:
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    return applied
