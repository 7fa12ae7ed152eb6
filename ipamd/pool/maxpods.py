"""Max pods of an instance: the one place the formula lives (policy, manager and ``cloud-cni max-pods``).

It follows the EKS max-pods calculator, ``max-pods-calculator.sh`` (awslabs/amazon-eks-ami,
files/max-pods-calculator.sh), which aws-vpc-cni's documentation points operators to:

* interfaces for pods = the instance's ENIs (``--cni-max-eni`` is not modelled), minus one with
  custom networking (``enis_for_pods - 1``: the primary ENI carries no pod addresses);
* secondary IPs: ``interfaces x (IPv4 per ENI - 1) + 2``; with prefix delegation on a Nitro instance:
  ``interfaces x ((IPv4 per ENI - 1) x 16) + 2`` (the +2 are host-network pods such as kube-proxy and
  the CNI's own, which need no address);
* that is the *maximum allowed* (``--show-max-allowed``). The calculator's default answer is a
  *recommendation* capped by the vCPU count: 110 up to 30 vCPUs, 250 above.

The daemon's default max pods is the maximum allowed (no vCPU count is passed): it is what the
instance can hold, as aws-vpc-cni's ``eni-max-pods.txt`` lists it for secondary IPs (m5.large 29).
A Node's ``capacity.pods`` or ``MAX_PODS`` replaces it. Platforms with their own pod limit
(``InstanceLimits.max_pods``: Azure's 250) use that limit instead of the formula.

Pure: no I/O, values in, values out.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ipamd.pool.model import InstanceLimits

__all__ = [
    "CEILING_HIGH_CPU",
    "CEILING_LOW_CPU",
    "HIGH_CPU_ABOVE",
    "MaxPods",
    "explain_max_pods",
    "max_pods",
]

ADDRESSES_PER_PREFIX = 16  # a delegated /28
HOST_NETWORK_PODS = 2  # the calculator's "+ 2"
CEILING_LOW_CPU = 110  # MAX_POD_CEILING_FOR_LOW_CPU
CEILING_HIGH_CPU = 250  # MAX_POD_CEILING_FOR_HIGH_CPU
HIGH_CPU_ABOVE = 30  # more vCPUs than this: the high ceiling


@dataclass(frozen=True, slots=True)
class MaxPods:
    """Every term of the calculation, so that a caller can show its work (``--explain``)."""

    value: int  # the answer: min(allowed, ceiling, cap)
    allowed: int  # the formula's maximum
    interfaces: int  # interfaces whose addresses pods may take
    addresses_per_interface: int  # pod addresses one interface holds
    prefix_delegation: bool  # effective: asked for and supported by the instance
    custom_networking: bool
    ceiling: int | None  # the vCPU-based recommendation, when a vCPU count was given
    cap: int | None  # an explicit cap, when given
    platform_limit: int | None  # the platform's own pod limit (replaces the formula)


def explain_max_pods(
    limits: InstanceLimits,
    *,
    prefix_delegation: bool,
    custom_networking: bool,
    cpu_count: int | None = None,
    cap: int | None = None,
) -> MaxPods:
    """``max_pods`` with its terms. ``prefix_delegation`` applies only if ``limits.prefix_delegation``
    (Nitro); ``cpu_count`` adds the calculator's recommendation ceiling; ``cap`` caps the answer."""
    if cpu_count is not None and cpu_count < 1:
        raise ValueError(f"cpu_count must be >= 1, got {cpu_count}")
    if cap is not None and cap < 1:
        raise ValueError(f"cap must be >= 1, got {cap}")
    pd = prefix_delegation and limits.prefix_delegation
    interfaces = max(limits.max_interfaces - (1 if custom_networking else 0), 0)
    per_interface = max(limits.ipv4_per_interface - 1, 0) * (ADDRESSES_PER_PREFIX if pd else 1)
    if limits.max_pods is not None:
        allowed = limits.max_pods
    else:
        allowed = interfaces * per_interface + HOST_NETWORK_PODS
    ceiling = None
    if cpu_count is not None:
        ceiling = CEILING_HIGH_CPU if cpu_count > HIGH_CPU_ABOVE else CEILING_LOW_CPU
    value = min(v for v in (allowed, ceiling, cap) if v is not None)
    return MaxPods(
        value=value,
        allowed=allowed,
        interfaces=interfaces,
        addresses_per_interface=per_interface,
        prefix_delegation=pd,
        custom_networking=custom_networking,
        ceiling=ceiling,
        cap=cap,
        platform_limit=limits.max_pods,
    )


def max_pods(
    limits: InstanceLimits,
    *,
    prefix_delegation: bool,
    custom_networking: bool,
    cpu_count: int | None = None,
    cap: int | None = None,
) -> int:
    """The calculator's answer for ``limits``: the maximum allowed, or with ``cpu_count`` the
    recommendation (at most 110, or 250 above 30 vCPUs); never more than ``cap``."""
    return explain_max_pods(
        limits,
        prefix_delegation=prefix_delegation,
        custom_networking=custom_networking,
        cpu_count=cpu_count,
        cap=cap,
    ).value
