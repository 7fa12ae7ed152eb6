"""ENI limits of EC2 instance types: DescribeInstanceTypes first, a shipped table when that fails.

``max_interfaces`` is what the default network card takes (``NetworkCards[DefaultNetworkCardIndex]``):
the provider attaches every ENI on card 0, so the other cards of multi-card types (p4d.24xlarge:
4 x 15) are not ours to count. Prefix delegation needs the Nitro system: hypervisor ``nitro`` or
bare metal, as aws-vpc-cni decides it.

Answers are cached for the life of the process: an instance never changes type while running.
"""

from __future__ import annotations

import threading
from typing import Any

import structlog
from botocore.exceptions import BotoCoreError, ClientError

from ipamd.cloud.aws.client import error_code
from ipamd.errors import PermanentCloudError
from ipamd.pool.model import InstanceLimits

_Sizes = dict[str, tuple[int, int, int]]


def _family(prefix_delegation: bool, sizes: _Sizes, family: str) -> dict[str, tuple[InstanceLimits, int]]:
    return {
        f"{family}.{size}": (InstanceLimits(f"{family}.{size}", enis, ips, prefix_delegation), vcpus)
        for size, (enis, ips, vcpus) in sizes.items()
    }


# (max ENIs, IPv4 addresses per ENI, default vCPUs) from DescribeInstanceTypes / the EC2 user guide.
_M5_SIZES: _Sizes = {
    "large": (3, 10, 2),
    "xlarge": (4, 15, 4),
    "2xlarge": (4, 15, 8),
    "4xlarge": (8, 30, 16),
    "8xlarge": (8, 30, 32),
    "12xlarge": (8, 30, 48),
    "16xlarge": (15, 50, 64),
    "24xlarge": (15, 50, 96),
}
_C5_SIZES: _Sizes = {
    "large": (3, 10, 2),
    "xlarge": (4, 15, 4),
    "2xlarge": (4, 15, 8),
    "4xlarge": (8, 30, 16),
    "9xlarge": (8, 30, 36),
    "12xlarge": (8, 30, 48),
    "18xlarge": (15, 50, 72),
    "24xlarge": (15, 50, 96),
}
_T3_SIZES: _Sizes = {
    "nano": (2, 2, 2),
    "micro": (2, 2, 2),
    "small": (3, 4, 2),
    "medium": (3, 6, 2),
    "large": (3, 12, 2),
    "xlarge": (4, 15, 4),
    "2xlarge": (4, 15, 8),
}
_T2_SIZES: _Sizes = {
    "nano": (2, 2, 1),
    "micro": (2, 2, 1),
    "small": (3, 4, 1),
    "medium": (3, 6, 2),
    "large": (3, 12, 2),
    "xlarge": (3, 15, 4),
    "2xlarge": (3, 15, 8),
}

_KNOWN: dict[str, tuple[InstanceLimits, int]] = {
    **_family(False, _T2_SIZES, "t2"),  # Xen: no prefix delegation
    **_family(True, _T3_SIZES, "t3"),
    **_family(False, {"large": (2, 10, 2), "xlarge": (4, 15, 4), "2xlarge": (4, 15, 8)}, "m4"),
    **_family(True, _M5_SIZES, "m5"),
    **_family(True, {"metal": (15, 50, 96)}, "m5"),
    **_family(True, _M5_SIZES, "r5"),
    **_family(True, {**_M5_SIZES, "32xlarge": (15, 50, 128)}, "m6i"),
    **_family(True, _C5_SIZES, "c5"),
    **_family(False, {"2xlarge": (4, 15, 8), "8xlarge": (8, 30, 32), "16xlarge": (8, 30, 64)}, "p3"),  # Xen
    **_family(True, {"24xlarge": (15, 50, 96)}, "p3dn"),
}
KNOWN_LIMITS: dict[str, InstanceLimits] = {name: limits for name, (limits, _) in _KNOWN.items()}
# vCPUs of the shipped types: the max-pods calculator's recommendation depends on them (110 / 250).
KNOWN_VCPUS: dict[str, int] = {name: vcpus for name, (_, vcpus) in _KNOWN.items()}

_log = structlog.get_logger(__name__)
_cache: dict[str, InstanceLimits] = {}
_cache_lock = threading.Lock()


def instance_limits(ec2: Any, instance_type: str) -> InstanceLimits:
    """The limits of ``instance_type``, asked of DescribeInstanceTypes once per process.

    When the call fails (no ec2:DescribeInstanceTypes permission, throttled, unknown to the endpoint)
    the shipped table answers and an ``instance_limits_fallback`` event is logged. A type neither
    source knows raises ``PermanentCloudError`` naming it: guessing limits would make the pool
    over-ask and fail later, far from the cause.
    """
    with _cache_lock:
        cached = _cache.get(instance_type)
    if cached is not None:
        return cached
    try:
        limits = _describe(ec2, instance_type)
    except (ClientError, BotoCoreError, LookupError, TypeError, ValueError) as exc:
        known = KNOWN_LIMITS.get(instance_type)
        _log.warning(
            "instance_limits_fallback",
            instance_type=instance_type,
            error=error_code(exc) or type(exc).__name__,
            known=known is not None,
        )
        if known is None:
            raise PermanentCloudError(
                "instance_limits",
                f"limits of instance type {instance_type!r} are unknown: DescribeInstanceTypes failed "
                f"({error_code(exc) or type(exc).__name__}) and the shipped table does not list it",
            ) from exc
        limits = known
    with _cache_lock:
        _cache[instance_type] = limits
    return limits


def _describe(ec2: Any, instance_type: str) -> InstanceLimits:
    found = ec2.describe_instance_types(InstanceTypes=[instance_type])["InstanceTypes"]
    matching = [t for t in found if t.get("InstanceType") == instance_type]
    if not matching:
        raise LookupError(instance_type)
    return limits_from_instance_type(matching[0])


def limits_from_instance_type(info: dict[str, Any]) -> InstanceLimits:
    """``InstanceLimits`` from one DescribeInstanceTypes ``InstanceTypes`` entry."""
    network = info["NetworkInfo"]
    max_interfaces = int(network["MaximumNetworkInterfaces"])
    default_card = network.get("DefaultNetworkCardIndex", 0)
    for card in network.get("NetworkCards") or ():
        if card.get("NetworkCardIndex") == default_card and "MaximumNetworkInterfaces" in card:
            max_interfaces = int(card["MaximumNetworkInterfaces"])
    ipv4 = int(network["Ipv4AddressesPerInterface"])
    if max_interfaces < 1 or ipv4 < 1:
        raise ValueError(f"{info.get('InstanceType')}: {max_interfaces} interfaces x {ipv4} IPv4")
    nitro = info.get("Hypervisor") == "nitro" or info.get("BareMetal") is True
    return InstanceLimits(
        instance_type=str(info["InstanceType"]),
        max_interfaces=max_interfaces,
        ipv4_per_interface=ipv4,
        prefix_delegation=nitro,
    )


def clear_cache() -> None:
    """Forget every cached answer (tests)."""
    with _cache_lock:
        _cache.clear()


__all__ = ["KNOWN_LIMITS", "KNOWN_VCPUS", "clear_cache", "instance_limits", "limits_from_instance_type"]
