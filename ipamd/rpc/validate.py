"""Validation of requests from the shim: every field checked, errors name the field.

Fields that come from CNI environment variables are named by the variable (CNI_CONTAINERID,
CNI_IFNAME, CNI_NETNS) so that the CNI error the shim prints (code 4) names what to fix.
"""

from __future__ import annotations

import ipaddress
import json
import re
from typing import Any

from ipamd.errors import RequestError
from ipamd.pool.model import AttachmentKey, ContainerID, IfName, PodRef
from ipamd.requests import NO_DNS, Call, PodDns
from ipamd.rpc.pb import ipamd_pb2 as pb

# Call lives in ipamd.requests, below this layer: the service may not import ipamd.rpc.
__all__ = [
    "Call",
    "attachment",
    "container_id",
    "dns",
    "ifname",
    "netns",
    "network_name",
    "pod",
    "prev_result",
]

_ID = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.\-]*$")
_MAX_ID = 1024
_MAX_POD_FIELD = 253
_MAX_PREV_RESULT = 1 << 20
# runtimeConfig.dns: at most 32 entries per list (Kubernetes' MaxDNSSearchPaths, the largest of its
# DNS limits), options of at most 255 characters; the shim applies the same limits (shim/cni.py).
MAX_DNS_ENTRIES = 32
_MAX_DNS_NAME = 253
_MAX_DNS_OPTION = 255
# A search domain: dot-separated labels of letters, digits, "_" and "-" (not at a label's ends), an
# optional trailing dot: what the Windows datapath's endpoint builder accepts (documents._DOMAIN).
_LABEL = r"(?!-)[A-Za-z0-9_-]{1,63}(?<!-)"
_DOMAIN = re.compile(rf"{_LABEL}(?:\.{_LABEL})*\.?", re.ASCII)


def container_id(value: str) -> ContainerID:
    if not value:
        raise RequestError("CNI_CONTAINERID", "required, must not be empty")
    if len(value) > _MAX_ID or not _ID.fullmatch(value):
        raise RequestError("CNI_CONTAINERID", f"{value[:80]!r} must match [a-zA-Z0-9][a-zA-Z0-9_.-]*")
    return ContainerID(value)


def ifname(value: str) -> IfName:
    if not value:
        raise RequestError("CNI_IFNAME", "required, must not be empty")
    if len(value) > 15:
        raise RequestError("CNI_IFNAME", f"{value!r} is longer than 15 characters")
    if value in (".", ".."):
        raise RequestError("CNI_IFNAME", f"{value!r} is not allowed")
    if any(c in value for c in "/:") or any(c.isspace() for c in value) or "\0" in value:
        raise RequestError("CNI_IFNAME", f"{value!r} must not contain '/', ':' or whitespace")
    return IfName(value)


def network_name(value: str) -> str:
    if not value:
        raise RequestError("name", "the network name (conflist 'name') is required")
    if len(value) > _MAX_ID or not _ID.fullmatch(value):
        raise RequestError("name", f"network name {value[:80]!r} must match [a-zA-Z0-9][a-zA-Z0-9_.-]*")
    return value


_GUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")


def netns(value: str, *, required: bool) -> str:
    if not value:
        if required:
            raise RequestError("CNI_NETNS", "required, must not be empty")
        return ""
    if _GUID.fullmatch(value):  # an HCN namespace, as containerd on Windows passes it
        return value
    if not value.startswith("/") or "\0" in value or len(value) > 4096:
        raise RequestError("CNI_NETNS", f"{value[:80]!r} must be an absolute path or an HCN namespace GUID")
    return value


def pod(info: pb.PodInfo) -> PodRef:
    for field in ("namespace", "name", "uid"):
        value = getattr(info, field)
        if len(value) > _MAX_POD_FIELD or any(c.isspace() or c in ";=" for c in value):
            raise RequestError(
                f"CNI_ARGS K8S_POD_{field.upper()}", f"{value[:80]!r} is not a valid Kubernetes {field}"
            )
    return PodRef(namespace=info.namespace, name=info.name, uid=info.uid)


def attachment(msg: pb.Attachment, *, netns_required: bool, dns: PodDns = NO_DNS) -> Call:
    key = AttachmentKey(
        network=network_name(msg.network_name),
        container_id=container_id(msg.container_id),
        ifname=ifname(msg.ifname),
    )
    return Call(key=key, pod=pod(msg.pod), netns=netns(msg.netns, required=netns_required), dns=dns)


def dns(msg: pb.Dns) -> PodDns:
    """The pod's DNS (CNI ``runtimeConfig.dns``); errors name ``runtimeConfig.dns.<field>``."""
    for field in ("servers", "searches", "options"):
        if len(getattr(msg, field)) > MAX_DNS_ENTRIES:
            raise RequestError(f"runtimeConfig.dns.{field}", f"more than {MAX_DNS_ENTRIES} entries")
    servers = []
    for value in msg.servers:
        try:
            if "%" in value:  # a scoped IPv6 address: not a resolver a pod can use, and HCN takes none
                raise ValueError
            servers.append(str(ipaddress.ip_address(value)))
        except ValueError:
            raise RequestError("runtimeConfig.dns.servers", f"{value[:80]!r} is not an IP address") from None
    for value in msg.searches:
        if len(value) > _MAX_DNS_NAME or not _DOMAIN.fullmatch(value):
            raise RequestError("runtimeConfig.dns.searches", f"{value[:80]!r} is not a DNS domain name")
    for value in msg.options:
        if not 0 < len(value) <= _MAX_DNS_OPTION or not value.isprintable() or " " in value:
            raise RequestError(
                "runtimeConfig.dns.options",
                f"{value[:80]!r} is not a resolver option: 1-{_MAX_DNS_OPTION} characters, no spaces",
            )
    return PodDns(servers=tuple(servers), searches=tuple(msg.searches), options=tuple(msg.options))


def prev_result(text: str, *, required: bool) -> dict[str, Any] | None:
    """Parse the CNI prevResult JSON text carried by DEL and CHECK."""
    if not text:
        if required:
            raise RequestError("prevResult", "required for CHECK")
        return None
    if len(text) > _MAX_PREV_RESULT:
        raise RequestError("prevResult", "larger than 1 MiB")
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise RequestError("prevResult", f"not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise RequestError("prevResult", "must be a JSON object")
    return value
