"""Azure Instance Metadata Service: who this node is (subscription, resource group, VM or scale-set
instance) and its NICs, validated into an ``AzureNode``.

One ``GET /metadata/instance?api-version=2021-02-01`` with ``Metadata: true`` (IMDS refuses requests
without it, which keeps it from being reached through a forwarding proxy). http.client, not urllib:
urllib honours HTTP_PROXY, and a request for a link-local address must never leave through a proxy.
IMDS throttles at about 5 requests per second and answers 429 or 5xx while it starts: those and
connection errors are retried a few times with backoff. Every value is validated; a missing or bad
one raises ``PermanentCloudError`` naming the field.
"""

from __future__ import annotations

import http.client
import ipaddress
import json
import re
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ipamd.errors import PermanentCloudError, TemporaryCloudError

API_VERSION = "2021-02-01"
_OP = "azure_imds"
_GUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
_NAME = re.compile(r"^[A-Za-z0-9_.()\-]{1,90}$")
_MAC = re.compile(r"^[0-9A-Fa-f]{12}$")
_RETRIES = 5
_MAX_BODY = 1 << 20


@dataclass(frozen=True, slots=True)
class ImdsInterface:
    mac: str  # aa:bb:cc:dd:ee:ff
    addresses: tuple[str, ...]  # primary first
    subnet_cidr: str


@dataclass(frozen=True, slots=True)
class AzureNode:
    subscription_id: str
    resource_group: str
    name: str
    vm_id: str
    resource_id: str
    location: str
    vm_size: str
    scale_set: str  # "" for a standalone VM (or a Flexible scale-set member)
    instance_id: str  # the Uniform scale-set instance id, else ""
    interfaces: tuple[ImdsInterface, ...]

    @property
    def uniform_scale_set(self) -> bool:
        """A Uniform scale-set instance: its NICs are written through the Compute API."""
        return bool(self.instance_id)

    @property
    def primary_ip(self) -> str:
        return self.interfaces[0].addresses[0]


def _field(doc: dict[str, Any], key: str, where: str) -> Any:
    if not isinstance(doc, dict) or key not in doc:
        raise PermanentCloudError(_OP, f"instance metadata has no {where}.{key}")
    return doc[key]


def _string(doc: dict[str, Any], key: str, where: str, pattern: re.Pattern[str] | None = None) -> str:
    value = _field(doc, key, where)
    if not isinstance(value, str) or (pattern is not None and not pattern.match(value)):
        raise PermanentCloudError(_OP, f"instance metadata {where}.{key} is not valid: {str(value)[:100]!r}")
    return value


def parse_instance(doc: Any) -> AzureNode:
    """Validate the JSON of ``/metadata/instance`` into an ``AzureNode``."""
    if not isinstance(doc, dict):
        raise PermanentCloudError(_OP, "instance metadata is not a JSON object")
    compute = _field(doc, "compute", "instance")
    network = _field(doc, "network", "instance")
    subscription = _string(compute, "subscriptionId", "compute", _GUID).lower()
    group = _string(compute, "resourceGroupName", "compute", _NAME)
    name = _string(compute, "name", "compute", _NAME)
    resource_id = _string(compute, "resourceId", "compute")
    scale_set = str(compute.get("vmScaleSetName") or "")
    if scale_set and not _NAME.match(scale_set):
        raise PermanentCloudError(
            _OP, f"instance metadata compute.vmScaleSetName is not valid: {scale_set!r}"
        )
    instance_id = ""
    parts = resource_id.strip("/").split("/")
    lowered = [p.lower() for p in parts]
    if (
        len(parts) < 8
        or lowered[0] != "subscriptions"
        or lowered[1] != subscription
        or lowered[2] != "resourcegroups"
        or lowered[4] != "providers"
        or lowered[5] != "microsoft.compute"
    ):
        raise PermanentCloudError(
            _OP, f"instance metadata compute.resourceId is not a VM id: {resource_id!r}"
        )
    if lowered[6] == "virtualmachinescalesets" and len(parts) == 10 and lowered[8] == "virtualmachines":
        instance_id = parts[9]
        if not instance_id.isdigit():
            raise PermanentCloudError(_OP, f"scale-set instance id is not a number: {instance_id!r}")
    elif not (lowered[6] == "virtualmachines" and len(parts) == 8):
        raise PermanentCloudError(
            _OP, f"instance metadata compute.resourceId is not a VM id: {resource_id!r}"
        )
    interfaces = []
    raw_interfaces = _field(network, "interface", "network")
    if not isinstance(raw_interfaces, list) or not raw_interfaces:
        raise PermanentCloudError(_OP, "instance metadata network.interface lists no NIC")
    for n, nic in enumerate(raw_interfaces):
        where = f"network.interface[{n}]"
        mac = _string(nic, "macAddress", where, _MAC).lower()
        ipv4 = _field(nic, "ipv4", where)
        addresses = []
        for item in _field(ipv4, "ipAddress", where + ".ipv4") or []:
            addresses.append(_address(_string(item, "privateIpAddress", where + ".ipv4.ipAddress")))
        subnets = _field(ipv4, "subnet", where + ".ipv4") or []
        if not addresses or not subnets:
            raise PermanentCloudError(_OP, f"instance metadata {where} has no IPv4 address or subnet")
        address = _string(subnets[0], "address", where + ".ipv4.subnet")
        prefix = _string(subnets[0], "prefix", where + ".ipv4.subnet")
        try:
            cidr = str(ipaddress.IPv4Network(f"{address}/{prefix}", strict=True))
        except ValueError:
            raise PermanentCloudError(
                _OP, f"instance metadata {where} subnet {address}/{prefix} is not a CIDR"
            ) from None
        interfaces.append(
            ImdsInterface(
                mac=":".join(mac[i : i + 2] for i in range(0, 12, 2)),
                addresses=tuple(addresses),
                subnet_cidr=cidr,
            )
        )
    return AzureNode(
        subscription_id=subscription,
        resource_group=group,
        name=name,
        vm_id=str(compute.get("vmId") or ""),
        resource_id=resource_id,
        location=str(compute.get("location") or ""),
        vm_size=str(compute.get("vmSize") or ""),
        scale_set=scale_set if instance_id else "",
        instance_id=instance_id,
        interfaces=tuple(interfaces),
    )


def _address(value: str) -> str:
    try:
        return str(ipaddress.IPv4Address(value))
    except ValueError:
        raise PermanentCloudError(_OP, f"instance metadata address is not IPv4: {value[:50]!r}") from None


class AzureImdsClient:
    """Reads ``/metadata/instance`` from ``endpoint`` (default the link-local IMDS)."""

    def __init__(
        self,
        endpoint: str = "http://169.254.169.254",
        *,
        timeout: float = 2.0,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        url = urllib.parse.urlsplit(endpoint)
        if url.scheme != "http" or not url.hostname:
            raise ValueError(f"AZURE_IMDS_ENDPOINT must be an http:// URL, got {endpoint!r}")
        self._host = url.hostname
        self._port = url.port or 80
        self._timeout = timeout
        self._sleep = sleep

    def node(self) -> AzureNode:
        return parse_instance(self.get_json(f"/metadata/instance?api-version={API_VERSION}"))

    def get_json(self, path: str) -> Any:
        delay = 0.2
        for attempt in range(1, _RETRIES + 1):
            try:
                status, body = self._get(path)
            except (OSError, http.client.HTTPException) as exc:
                error: Exception = TemporaryCloudError(_OP, f"{type(exc).__name__}: {exc}")
            else:
                if status == 200:
                    try:
                        return json.loads(body)
                    except ValueError:
                        raise PermanentCloudError(_OP, f"{path} did not answer JSON") from None
                if status != 429 and status < 500:
                    raise PermanentCloudError(_OP, f"{path} answered HTTP {status}: {body[:200]!r}")
                error = TemporaryCloudError(_OP, f"{path} answered HTTP {status}")
            if attempt == _RETRIES:
                raise error
            self._sleep(delay)
            delay = min(delay * 2, 2.0)
        raise AssertionError("unreachable")

    def _get(self, path: str) -> tuple[int, bytes]:
        conn = http.client.HTTPConnection(self._host, self._port, timeout=self._timeout)
        try:
            conn.request("GET", path, headers={"Metadata": "true"})
            response = conn.getresponse()
            return response.status, response.read(_MAX_BODY)
        finally:
            conn.close()


__all__ = ["AzureImdsClient", "AzureNode", "ImdsInterface", "parse_instance"]
