"""What the node knows about itself from the instance metadata service (IMDSv2).

IMDS is only eventually consistent with the EC2 API (a new ENI or IP can take seconds to appear):
the provider reconciles against EC2 (DescribeNetworkInterfaces), and uses IMDS for the node's
identity and its primary interface only.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class ImdsInterface:
    """One entry of network/interfaces/macs/<mac>/."""

    mac: str
    interface_id: str
    device_number: int
    network_card: int
    subnet_id: str
    subnet_cidr: str
    vpc_id: str
    vpc_cidrs: tuple[str, ...]
    security_group_ids: tuple[str, ...]
    local_ipv4s: tuple[str, ...]  # the interface's primary address first
    ipv4_prefixes: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class NodeMetadata:
    instance_id: str
    instance_type: str
    availability_zone: str
    region: str
    primary_ip: str
    primary_mac: str
    interfaces: tuple[ImdsInterface, ...]

    @property
    def primary_interface(self) -> ImdsInterface:
        for iface in self.interfaces:
            if iface.mac == self.primary_mac:
                return iface
        return min(self.interfaces, key=lambda i: i.device_number)
