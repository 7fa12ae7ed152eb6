"""Where pod interfaces go, from Kubernetes objects handed in as plain values: pure, no I/O.

The Kubernetes layer (``ipamd.k8s``) watches the Node and the ENIConfig objects and calls these with
what it read; the result goes to the provider's ``set_interface_placement``
(``ipamd.cloud.base.PlacementAware``).

AWS custom networking (``AWS_VPC_K8S_CNI_CUSTOM_NETWORK_CFG``): the Node names an ENIConfig; its
``spec.subnet`` and ``spec.securityGroups`` are where new ENIs are created. The name is looked up as
aws-vpc-cni does it, read in pkg/eniconfig/eniconfig.go (``GetNodeSpecificENIConfigName``, called by
``MyENIConfig``): the label ``vpc.amazonaws.com/externalEniConfig`` ("the source of truth" when an
external tool manages the choice), else the annotation ``ENI_CONFIG_ANNOTATION_DEF``, else the label
``ENI_CONFIG_LABEL_DEF`` (both default ``k8s.amazonaws.com/eniConfig``), else ``"default"``. A key
that is present wins even with an empty value, as there (Go's ``value, ok := map[key]``).

An ENIConfig without ``securityGroups`` (or with an empty list) gives ENIs the node's primary ENI's
groups: aws-vpc-cni's pkg/awsutils/awsutils.go ``createENIUsingCustomCfg`` keeps ``input.Groups`` (the
primary ENI's) when ``len(sg) == 0``, with the warning "No custom networking security group found".
Here that is ``Placement.security_group_ids is None``.

Azure pod subnet: the Node label ``AZURE_POD_SUBNET_LABEL`` names a subnet of the node's VNet.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from ipamd.cloud.base import Placement

__all__ = [
    "DEFAULT_ENI_CONFIG",
    "EXTERNAL_ENI_CONFIG_LABEL",
    "MAX_SECURITY_GROUPS",
    "azure_subnet_from_label",
    "eniconfig_name",
    "parse_eniconfig",
]

EXTERNAL_ENI_CONFIG_LABEL = "vpc.amazonaws.com/externalEniConfig"
DEFAULT_ENI_CONFIG = "default"
MAX_SECURITY_GROUPS = 16  # EC2's most security groups on one ENI (the default quota is 5)

_SUBNET = re.compile(r"^subnet-[0-9a-f]+$")
_SECURITY_GROUP = re.compile(r"^sg-[0-9a-f]+$")
# Azure subnet names: 1-80 characters, alphanumerics, '_', '.', '-'; start alphanumeric, end
# alphanumeric or '_' (Azure's resource naming rules for Microsoft.Network/virtualNetworks/subnets).
_AZURE_SUBNET_NAME = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9_.\-]{0,78}[A-Za-z0-9_])?$")
_AZURE_VNET_ID = re.compile(
    r"^/subscriptions/[^/]+/resourceGroups/[^/]+/providers/Microsoft\.Network/virtualNetworks/[^/]+$",
    re.IGNORECASE,
)


def eniconfig_name(
    labels: Mapping[str, str], annotations: Mapping[str, str], *, label_key: str, annotation_key: str
) -> str:
    """The ENIConfig this Node uses, in aws-vpc-cni's order (module docstring)."""
    if EXTERNAL_ENI_CONFIG_LABEL in labels:
        return labels[EXTERNAL_ENI_CONFIG_LABEL]
    if annotation_key in annotations:
        return annotations[annotation_key]
    if label_key in labels:
        return labels[label_key]
    return DEFAULT_ENI_CONFIG


def parse_eniconfig(obj: Mapping[str, Any]) -> Placement:
    """Validate an ENIConfig as the API returns it (a dict) into a ``Placement``.

    ``ValueError`` names the ENIConfig, the field and what is allowed.
    """
    metadata = obj.get("metadata")
    name = metadata.get("name") if isinstance(metadata, Mapping) else None
    label = f"ENIConfig {name}" if isinstance(name, str) and name else "ENIConfig (no metadata.name)"
    kind = obj.get("kind")
    if kind is not None and kind != "ENIConfig":
        raise ValueError(f"{label}: kind is {kind!r}, not ENIConfig")
    spec = obj.get("spec")
    if not isinstance(spec, Mapping):
        raise ValueError(f"{label}: spec is missing: allowed an object with subnet and securityGroups")

    subnet = spec.get("subnet")
    if not isinstance(subnet, str) or not _SUBNET.match(subnet):
        raise ValueError(
            f"{label}: spec.subnet {_shown(subnet)} is not a subnet id: allowed subnet-<hex>, "
            "e.g. subnet-0123456789abcdef0"
        )

    groups = spec.get("securityGroups")
    security_group_ids: tuple[str, ...] | None
    if groups is None or groups == []:
        security_group_ids = None  # the primary ENI's groups, as aws-vpc-cni
    elif not isinstance(groups, list):
        raise ValueError(
            f"{label}: spec.securityGroups is {type(groups).__name__}: allowed a list of sg-<hex> ids"
        )
    else:
        bad = [g for g in groups if not isinstance(g, str) or not _SECURITY_GROUP.match(g)]
        if bad:
            raise ValueError(
                f"{label}: spec.securityGroups has {_shown(bad[0])}: allowed sg-<hex> ids, "
                "e.g. sg-0123456789abcdef0"
            )
        unique = tuple(dict.fromkeys(groups))  # a group named twice is one group
        if len(unique) > MAX_SECURITY_GROUPS:
            raise ValueError(
                f"{label}: spec.securityGroups has {len(unique)} groups: allowed at most "
                f"{MAX_SECURITY_GROUPS} (EC2's limit per ENI)"
            )
        security_group_ids = unique
    return Placement(subnet_id=subnet, security_group_ids=security_group_ids, source=label)


def azure_subnet_from_label(value: str, vnet_id: str) -> str:
    """The resource id of subnet ``value`` (a Node label's value) in the VNet ``vnet_id``.

    ``ValueError`` when ``value`` is not an Azure subnet name or ``vnet_id`` not a VNet resource id.
    Whether the subnet exists, and whether the VM has a NIC in it, is the provider's to check.
    """
    if not _AZURE_SUBNET_NAME.match(value):
        raise ValueError(
            f"subnet name {value[:100]!r} is not valid: allowed 1-80 letters, digits, '_', '.', '-', "
            "starting with a letter or digit and ending with a letter, digit or '_'"
        )
    vnet = vnet_id.rstrip("/")
    if not _AZURE_VNET_ID.match(vnet):
        raise ValueError(
            f"{vnet_id[:300]!r} is not a VNet resource id: allowed /subscriptions/S/resourceGroups/G/"
            "providers/Microsoft.Network/virtualNetworks/V"
        )
    return f"{vnet}/subnets/{value}"


def _shown(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."
