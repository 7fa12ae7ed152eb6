"""aws-vpc-cni's checkpoint (/var/run/aws-node/ipam.json, ``vpc-cni-ipam/1``) as tests write it.

The format is aws-vpc-cni's (pkg/ipamd/datastore: ``CheckpointData``, ``CheckpointEntry``; the metadata
fields are omitempty); ``ipamd/migrate/awsvpc.py`` reads it.
"""

from __future__ import annotations

import json
from typing import Any

VERSION = "vpc-cni-ipam/1"
STAMP = 1_700_000_000_000_000_000  # allocationTimestamp: nanoseconds since the epoch


def row(
    ip: str,
    container: str,
    *,
    network: str = "aws-cni",
    ifname: str = "eth0",
    namespace: str = "default",
    name: str = "web-0",
    stamp: int | None = STAMP,
    count: int | None = 1,
) -> dict[str, Any]:
    """One allocation as current aws-vpc-cni writes it; an empty or None field is left out."""
    doc: dict[str, Any] = {"networkName": network, "containerID": container, "ifName": ifname, "ipv4": ip}
    if stamp is not None:
        doc["allocationTimestamp"] = stamp
    meta: dict[str, Any] = {}
    if namespace:
        meta["k8sPodNamespace"] = namespace
    if name:
        meta["k8sPodName"] = name
    if count is not None:
        meta["interfacesCount"] = count
    doc["metadata"] = meta
    return doc


def document(*rows: dict[str, Any]) -> dict[str, Any]:
    return {"version": VERSION, "allocations": list(rows)}


def checkpoint_json(*rows: dict[str, Any]) -> str:
    """The file's text, as aws-vpc-cni writes it (``json.dumps`` spacing aside)."""
    return json.dumps(document(*rows))
