"""The one protocol every cloud provider implements (aws, azure, sim).

Methods are blocking: the manager runs them in a worker thread through ``ipamd.cloud.limiter`` so
every call passes one client-side rate limiter with backoff. Providers raise only the
``ipamd.errors.CloudError`` tree; SDK exceptions are translated inside the provider.

Providers enforce the instance limits themselves (max interfaces, addresses per interface) and raise
``LimitExceeded`` rather than trusting the cloud (or its emulator) to refuse.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from ipamd.pool.model import InstanceLimits, InterfaceId, InterfaceView


@dataclass(frozen=True, slots=True)
class Placement:
    """Where new pod interfaces (or pod ipConfigurations) go: from an ENIConfig, or a pod subnet.

    ``subnet_id``: an EC2 subnet id (``subnet-...``) or an Azure subnet resource id.
    ``security_group_ids``: EC2 security groups for new ENIs; None means those of the node's primary
    ENI (aws-vpc-cni: an ENIConfig without securityGroups). Always None on Azure.
    ``source``: where it came from, for logs and events ("ENIConfig us-east-1a", "AZURE_POD_SUBNET_ID").
    """

    subnet_id: str
    security_group_ids: tuple[str, ...] | None
    source: str


class CloudProvider(Protocol):
    name: str

    @property
    def network_cidrs(self) -> tuple[str, ...]:
        """The VPC / VNet CIDRs: destinations pods reach with their own address (no SNAT)."""
        ...

    def instance_limits(self) -> InstanceLimits:
        """Limits of this node's instance type."""
        ...

    def list_interfaces(self) -> list[InterfaceView]:
        """Every managed interface attached to this node, with its secondary IPs and prefixes.

        The primary interface is included (``primary=True``). Unmanaged interfaces are left out.
        """
        ...

    def attach_interface(self, ip_count: int, prefix_count: int) -> InterfaceView:
        """Create and attach a new interface holding ``ip_count`` IPs or ``prefix_count`` prefixes.

        Either the interface ends attached and returned, or nothing is left behind.
        """
        ...

    def detach_interface(self, interface_id: InterfaceId) -> None:
        """Detach and delete a secondary interface. Already gone is not an error."""
        ...

    def assign_ips(self, interface_id: InterfaceId, count: int) -> list[str]:
        """Add ``count`` secondary IPs; returns the new ones only."""
        ...

    def assign_prefixes(self, interface_id: InterfaceId, count: int) -> list[str]:
        """Add ``count`` /28 prefixes; returns the new ones only."""
        ...

    def release_ips(self, interface_id: InterfaceId, ips: list[str]) -> None:
        """Remove secondary IPs. IPs already gone are not an error."""
        ...

    def release_prefixes(self, interface_id: InterfaceId, prefixes: list[str]) -> None:
        """Remove prefixes. Prefixes already gone are not an error."""
        ...


class LeakSweeping(Protocol):
    """A provider that can find interfaces it created and lost (a crash between create and attach,
    a node terminated without DeleteOnTermination): available, tagged for this cluster, old."""

    def leaked_interfaces(self, *, older_than: float, own_only: bool = False) -> list[str]: ...

    def delete_leaked(self, interface_ids: list[str]) -> int: ...


class PlacementAware(Protocol):
    """A provider whose new interfaces (AWS) or pod addresses (Azure) can be placed in another subnet.

    ``set_interface_placement`` is thread-safe and takes effect for the next interface created (or
    ipConfiguration added); what is already attached is untouched. ``None`` returns to the default
    (AWS custom networking: no placement, so no interface is created; Azure: AZURE_POD_SUBNET_ID,
    else each NIC's own subnet). Raises ``PermanentCloudError`` (or ``ValueError`` for a malformed
    value) when the placement cannot be honoured; the previous one then stays in force.
    """

    def set_interface_placement(self, placement: Placement | None) -> None: ...

    @property
    def primary_interface_pods(self) -> bool:
        """Whether pods may take the primary interface's addresses under the current placement
        (``WarmPoolTargets.primary_interface_pods``; ``PoolManager.set_primary_interface_pods``)."""
        ...
