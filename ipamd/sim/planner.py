"""Capacity planning: the subnet a simulated peak needs, and the headroom a given subnet leaves.

The run (``cloud-cni plan``) puts every node in one subnet too large to fill, so that the peak is what
the policy asks for and not what a small subnet allowed. A subnet holding that peak needs the peak's
addresses plus the cloud's reserved ones (5 on AWS and on Azure: the network address, three more at
the start, the broadcast address) and, with prefix delegation, enough whole /28 blocks: the peak's
blocks are counted as the allocator packed them, the best case (a real subnet fragments more).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Any

from ipamd.sim.subnet import BLOCK, RESERVED_ADDRESSES

__all__ = ["PLANNING_SUBNET", "SubnetPlan", "plan_subnet"]

PLANNING_SUBNET = "10.0.0.0/8"  # large enough that no simulated cluster fills it


@dataclass(frozen=True)
class SubnetPlan:
    peak_used: int
    peak_at: float
    peak_blocks: int
    prefix_length: int  # the smallest subnet that holds the peak: /prefix_length
    cidr: str | None = None  # the subnet asked about, if any
    usable: int = 0  # its addresses less the reserved ones
    usable_blocks: int = 0

    @property
    def needed_addresses(self) -> int:
        return 1 << (32 - self.prefix_length)

    @property
    def headroom(self) -> int:
        """Addresses to spare at the peak in the subnet asked about (< 0: short)."""
        return min(self.usable - self.peak_used, BLOCK * (self.usable_blocks - self.peak_blocks))

    @property
    def fits(self) -> bool:
        return self.cidr is not None and self.headroom >= 0

    def document(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "peak_used": self.peak_used,
            "peak_at_s": round(self.peak_at, 3),
            "peak_blocks": self.peak_blocks,
            "needed_prefix_length": self.prefix_length,
            "needed_addresses": self.needed_addresses,
            "subnet": None,
        }
        if self.cidr is not None:
            out["subnet"] = {
                "cidr": self.cidr,
                "usable": self.usable,
                "headroom": self.headroom,
                "headroom_percent": round(100 * self.headroom / self.usable, 1) if self.usable else 0.0,
                "fits": self.fits,
            }
        return out


def smallest_prefix(peak_used: int, peak_blocks: int) -> int:
    """The longest prefix length (smallest subnet) holding ``peak_used`` addresses in ``peak_blocks``
    /28 blocks besides the reserved addresses."""
    for length in range(28, 0, -1):
        size = 1 << (32 - length)
        if size - RESERVED_ADDRESSES >= peak_used and size // BLOCK >= peak_blocks:
            return length
    return 0


def plan_subnet(*, peak_used: int, peak_at: float, peak_blocks: int, cidr: str | None) -> SubnetPlan:
    """The plan for a simulated peak; with ``cidr``, how it fits there."""
    plan = SubnetPlan(peak_used, peak_at, peak_blocks, smallest_prefix(peak_used, peak_blocks))
    if cidr is None:
        return plan
    net = ipaddress.IPv4Network(cidr, strict=True)
    return SubnetPlan(
        peak_used,
        peak_at,
        peak_blocks,
        plan.prefix_length,
        cidr=str(net),
        usable=net.num_addresses - RESERVED_ADDRESSES,
        usable_blocks=max(net.num_addresses // BLOCK, 1),
    )
