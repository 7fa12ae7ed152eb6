"""The request model the service layer works with: a validated CNI call and what a prevResult lists.

The rpc layer (``ipamd.rpc.validate``) builds these from the shim's protobuf messages; the service,
the manager and the DEL spool use them without depending on gRPC or protobuf.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ipamd.datapath.base import NO_DNS, PodDns
from ipamd.pool.model import AttachmentKey, PodRef

__all__ = ["NO_DNS", "Call", "PodDns", "prev_result_ips"]


@dataclass(frozen=True, slots=True)
class Call:
    """A validated CNI call: the attachment key, the pod, the netns path; on ADD the pod's DNS
    (``runtimeConfig.dns``), empty otherwise."""

    key: AttachmentKey
    pod: PodRef
    netns: str
    dns: PodDns = NO_DNS


def prev_result_ips(result: dict[str, Any] | None) -> list[str]:
    """The addresses (without prefix length) listed in a prevResult's ``ips``."""
    if not result:
        return []
    ips = result.get("ips")
    if not isinstance(ips, list):
        return []
    found = []
    for entry in ips:
        if isinstance(entry, dict) and isinstance(entry.get("address"), str):
            found.append(entry["address"].split("/", 1)[0])
    return found
