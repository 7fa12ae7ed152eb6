"""AwsProvider: ENIs, secondary IPs and /28 prefixes of one EC2 instance, through a boto3 EC2 client.

Behaviour follows aws-vpc-cni's ipamd (reference/aws-vpc-cni.md):

* every ENI it creates carries ``node.k8s.amazonaws.com/instance_id``, ``node.k8s.amazonaws.com/
  createdAt`` (RFC 3339, UTC), ``cluster.k8s.amazonaws.com/name`` (with a cluster name),
  ``cloud-cni/managed=true`` and the description ``cloud-cni: <instance-id>``, so that a leak can be
  found and reclaimed by any node of the cluster (``leaked_interfaces``/``delete_leaked``);
* ENIs tagged ``node.k8s.amazonaws.com/no_manage=true`` are never listed, assigned to or detached;
* only ENIs on network card 0 are managed (they are what ``InstanceLimits.max_interfaces`` counts);
* limits are enforced here before any call (the emulator does not enforce them, and EC2's refusal
  would cost a mutating call from the account's shared bucket): ``LimitExceeded``;
* placement (custom networking, ``set_interface_placement``): new ENIs go into the placement's
  subnet with its security groups (none given: the primary ENI's, as aws-vpc-cni); ENIs already
  attached keep theirs. The subnet must be in the node's VPC and Availability Zone (checked with
  DescribeSubnets before anything is created: EC2 attaches an ENI only in the instance's AZ). With
  ``custom_networking`` and no placement, ``attach_interface`` raises ``NoPlacement`` and creates
  nothing (aws-vpc-cni does not allocate an ENI without an ENIConfig).

Errors are translated once by ``ipamd.cloud.aws.client.translate``. Calls are made once: retrying is
the caller's job (``ipamd.cloud.limiter.CloudCaller``). The one exception is the clean-up of a
half-made ENI in ``attach_interface``, whose delete is retried a few times here, because a leaked ENI
costs a subnet address and an ENI quota slot until the leak sweeper finds it.

Concurrency: methods may run in several worker threads; attaches are serialised (they pick a device
index). Operations on one interface are expected not to overlap (the manager marks it busy), since
``assign_*`` finds the new addresses by comparing the interface before and after the call.
"""

from __future__ import annotations

import contextlib
import ipaddress
import re
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import structlog

from ipamd.cloud.aws import limits as aws_limits
from ipamd.cloud.aws.client import error_code, translate
from ipamd.cloud.aws.metadata import NodeMetadata
from ipamd.cloud.base import Placement
from ipamd.errors import (
    CloudError,
    CloudPermissionError,
    InterfaceNotFound,
    LimitExceeded,
    NoPlacement,
    PermanentCloudError,
    TemporaryCloudError,
)
from ipamd.pool.model import InstanceLimits, InterfaceId, InterfaceView

if TYPE_CHECKING:
    from ipamd.cloud.base import CloudProvider, LeakSweeping, PlacementAware

TAG_INSTANCE_ID = "node.k8s.amazonaws.com/instance_id"
TAG_CREATED_AT = "node.k8s.amazonaws.com/createdAt"
TAG_CLUSTER = "cluster.k8s.amazonaws.com/name"
TAG_NO_MANAGE = "node.k8s.amazonaws.com/no_manage"
TAG_MANAGED = "cloud-cni/managed"
RESERVED_TAGS = frozenset({TAG_INSTANCE_ID, TAG_CREATED_AT, TAG_CLUSTER, TAG_NO_MANAGE, TAG_MANAGED})
DESCRIPTION_PREFIX = "cloud-cni: "

# Polling an attachment: first look at once, then 0.2 s doubling up to 2 s between looks.
_POLL_FIRST = 0.2
_POLL_MAX = 2.0
# Deleting a half-made ENI: up to 8 tries, 0.5 s doubling up to 4 s between them (~20 s in all).
_CLEANUP_ATTEMPTS = 8
_CLEANUP_FIRST = 0.5
_CLEANUP_MAX = 4.0

_IN_USE = "InvalidNetworkInterface.InUse"
_ATTACHMENT_GONE = "InvalidAttachmentID.NotFound"
_INVALID_PARAMETER = "InvalidParameterValue"

_SUBNET_ID = re.compile(r"^subnet-[0-9a-f]+$")
_GROUP_ID = re.compile(r"^sg-[0-9a-f]+$")
_MAX_GROUPS = 16

_log = structlog.get_logger(__name__)


@contextlib.contextmanager
def _translated(operation: str) -> Iterator[None]:
    """Turn whatever the EC2 client raises inside the block into our ``CloudError`` tree."""
    try:
        yield
    except CloudError:
        raise
    except Exception as exc:
        raise translate(operation, exc) from exc


def _code(err: BaseException) -> str:
    """The EC2 error code behind a translated error ("" when it did not come from a ClientError)."""
    return error_code(err.__cause__) if err.__cause__ is not None else ""


class AwsProvider:
    """The ``aws`` provider of ``ipamd.cloud.base.CloudProvider`` for the node described by ``node``.

    ``ec2`` is a boto3 EC2 client (``ipamd.cloud.aws.client.make_ec2_client``). New ENIs go into
    ``subnet_id`` with ``security_group_ids`` (default: those of the node's primary ENI), or where
    ``set_interface_placement`` says; with ``custom_networking`` only there. ``limits``
    overrides the instance type's limits (else DescribeInstanceTypes, else the shipped table).
    ``attach_timeout`` bounds the wait for an attachment (and for a detachment) to complete.
    ``clock`` is wall-clock epoch seconds (``createdAt`` tags are compared with it).
    """

    name: str = "aws"

    def __init__(
        self,
        ec2: Any,
        node: NodeMetadata,
        *,
        cluster_name: str = "",
        subnet_id: str | None = None,
        security_group_ids: tuple[str, ...] | None = None,
        extra_tags: dict[str, str] | None = None,
        limits: InstanceLimits | None = None,
        attach_timeout: float = 30.0,
        custom_networking: bool = False,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        extra = dict(extra_tags or {})
        clash = sorted(RESERVED_TAGS & extra.keys())
        if clash:
            raise ValueError(f"extra_tags must not set the tags cloud-cni owns: {', '.join(clash)}")
        if not attach_timeout > 0:
            raise ValueError(f"attach_timeout must be > 0 seconds, got {attach_timeout!r}")
        primary = node.primary_interface
        self._ec2 = ec2
        self._node = node
        self._cluster_name = cluster_name
        self._subnet_id = subnet_id or primary.subnet_id
        self._security_group_ids = (
            tuple(security_group_ids) if security_group_ids is not None else primary.security_group_ids
        )
        self._primary_security_group_ids = tuple(primary.security_group_ids)
        self._custom_networking = custom_networking
        self._placement: Placement | None = None
        self._vpc_id = primary.vpc_id
        self._extra_tags = extra
        self._limits = limits
        self._attach_timeout = float(attach_timeout)
        self._clock = clock
        self._sleep = sleep
        self._attach_lock = threading.Lock()
        self._lock = threading.Lock()
        # IMDS already knows the CIDR of the node's own subnets: no DescribeSubnets for them.
        self._subnet_cidrs: dict[str, str] = {
            i.subnet_id: i.subnet_cidr for i in node.interfaces if i.subnet_id and i.subnet_cidr
        }
        self._primary_ips: dict[str, str] = {}  # interface id -> its own primary address, as seen

    # --- placement (custom networking) -----------------------------------------------------------

    def set_interface_placement(self, placement: Placement | None) -> None:
        """Where the next ENIs go (``PlacementAware``). Thread-safe; ENIs already attached keep their
        subnet and groups. Only the form is checked here (no EC2 call): the subnet's VPC and AZ are
        checked by the next ``attach_interface``, before it creates anything."""
        if placement is not None:
            _check_placement(placement)
        with self._lock:
            old, self._placement = self._placement, placement
        if placement != old:
            _log.info(
                "interface_placement_set",
                subnet_id=placement.subnet_id if placement else None,
                security_groups=list(placement.security_group_ids or ()) if placement else None,
                source=placement.source if placement else None,
            )

    @property
    def placement(self) -> Placement | None:
        with self._lock:
            return self._placement

    @property
    def custom_networking(self) -> bool:
        return self._custom_networking

    @property
    def primary_interface_pods(self) -> bool:
        """False with custom networking: the primary ENI carries no pod addresses."""
        return not self._custom_networking

    @property
    def instance_ref(self) -> str:
        """This instance as the Node's ``spec.providerID`` names it (its last path element)."""
        return self._node.instance_id

    # --- the CloudProvider protocol -------------------------------------------------------------

    @property
    def network_cidrs(self) -> tuple[str, ...]:
        """The VPC's CIDRs (from IMDS): what the datapath reaches without SNAT."""
        return tuple(self._node.primary_interface.vpc_cidrs)

    def instance_limits(self) -> InstanceLimits:
        if self._limits is None:
            self._limits = aws_limits.instance_limits(self._ec2, self._node.instance_type)
        return self._limits

    def list_interfaces(self) -> list[InterfaceView]:
        op = "list_interfaces"
        views = [
            self._view(op, eni)
            for eni in self._attached_enis(op)
            if not _no_manage(eni) and _attachment(eni).get("Status") == "attached"
        ]
        return sorted(views, key=lambda v: v.device_index)

    def attach_interface(self, ip_count: int, prefix_count: int) -> InterfaceView:
        op = "attach_interface"
        _check_count(op, "ip_count", ip_count)
        _check_count(op, "prefix_count", prefix_count)
        with self._lock:
            placement = self._placement  # one placement for the whole attach, whatever changes meanwhile
        if placement is None and self._custom_networking:
            raise NoPlacement(
                op,
                "custom networking (AWS_VPC_K8S_CNI_CUSTOM_NETWORK_CFG) is on and no ENIConfig placement "
                "is set: no ENI is created until the Node's ENIConfig is found and valid",
            )
        if placement is None:
            subnet_id, groups = self._subnet_id, self._security_group_ids
        else:
            subnet_id = placement.subnet_id
            groups = placement.security_group_ids or self._primary_security_group_ids
        limits = self.instance_limits()
        if prefix_count and not limits.prefix_delegation:
            raise LimitExceeded(op, f"{limits.instance_type} does not support prefix delegation")
        if ip_count + prefix_count > limits.secondary_per_interface:
            raise LimitExceeded(
                op,
                f"PrivateIpAddressLimitExceeded: {ip_count} IPs + {prefix_count} prefixes exceed "
                f"{limits.secondary_per_interface} slots per interface on {limits.instance_type}",
            )
        # fails before anything is created (a placement's subnet: also when not in the VPC and AZ)
        subnet_cidr = self._subnet_cidr(op, subnet_id, placement=placement)
        with self._attach_lock:
            device_index = self._free_device_index(op, limits)
            created = self._create(op, ip_count, prefix_count, subnet_id, groups)
            eni_id = created["NetworkInterfaceId"]
            attachment_id: str | None = None
            try:
                if len(_prefixes(created)) < prefix_count:
                    raise PermanentCloudError(op, "the EC2 endpoint did not delegate a prefix")
                with _translated(op):
                    attachment_id = self._ec2.attach_network_interface(
                        NetworkInterfaceId=eni_id, InstanceId=self._node.instance_id, DeviceIndex=device_index
                    )["AttachmentId"]
                    # Without this an ENI outlives its terminated instance: the first source of leaks.
                    self._ec2.modify_network_interface_attribute(
                        NetworkInterfaceId=eni_id,
                        Attachment={"AttachmentId": attachment_id, "DeleteOnTermination": True},
                    )
                eni = self._wait_attached(op, eni_id)
                view = self._view(op, eni, subnet_cidr=subnet_cidr)
            except BaseException as exc:
                _log.warning(
                    "interface_attach_failed",
                    interface_id=eni_id,
                    device_index=device_index,
                    error=type(exc).__name__,
                    code=_code(exc),
                )
                self._discard(op, eni_id, attachment_id)
                raise
        _log.info(
            "interface_attached",
            interface_id=eni_id,
            device_index=device_index,
            ips=len(view.ips),
            prefixes=len(view.prefixes),
        )
        return view

    def detach_interface(self, interface_id: InterfaceId) -> None:
        op = "detach_interface"
        eni = self._describe_one(op, interface_id)
        if eni is None:
            return  # already gone
        attachment = _attachment(eni)
        mine = attachment.get("InstanceId") == self._node.instance_id
        if interface_id == self._node.primary_interface.interface_id or (
            mine and attachment.get("DeviceIndex") == 0
        ):
            raise PermanentCloudError(op, f"{interface_id} is the primary interface and is never detached")
        if _no_manage(eni):
            raise PermanentCloudError(op, f"{interface_id} is tagged {TAG_NO_MANAGE}=true: not detached")
        if attachment and not mine:
            raise PermanentCloudError(op, f"{interface_id} is attached to another instance")
        if not attachment and _tags(eni).get(TAG_INSTANCE_ID) != self._node.instance_id:
            return  # detached already, and not made by this node: nothing of ours to delete
        if attachment.get("Status") in ("attaching", "attached"):
            try:
                with _translated(op):
                    self._ec2.detach_network_interface(AttachmentId=attachment["AttachmentId"], Force=False)
            except InterfaceNotFound:
                return
            except PermanentCloudError as err:
                if _code(err) != _ATTACHMENT_GONE:
                    raise
        if attachment and self._wait(op, interface_id, _detached, "detached") is None:
            return
        try:
            with _translated(op):
                self._ec2.delete_network_interface(NetworkInterfaceId=interface_id)
        except InterfaceNotFound:
            pass
        except PermanentCloudError as err:
            if _code(err) == _IN_USE:  # EC2 has not caught up with the detachment yet
                raise TemporaryCloudError(op, str(err)) from err
            raise
        with self._lock:
            self._primary_ips.pop(interface_id, None)
        _log.info("interface_detached", interface_id=interface_id)

    def assign_ips(self, interface_id: InterfaceId, count: int) -> list[str]:
        op = "assign_ips"
        _check_count(op, "count", count)
        if count == 0:
            return []
        eni = self._own_interface(op, interface_id)
        self._check_slots(op, eni, count)
        before = set(_all_ips(eni))
        with _translated(op):
            response = self._ec2.assign_private_ip_addresses(
                NetworkInterfaceId=interface_id, SecondaryPrivateIpAddressCount=count
            )
        # EC2 answers with the new addresses only; moto with all of them: keep what was not there.
        after = [a["PrivateIpAddress"] for a in response.get("AssignedPrivateIpAddresses") or ()]
        if not after:
            after = _all_ips(self._require(op, interface_id))
        new = _new_items(before, after)
        if len(new) != count:
            _log.warning("assign_ips_count_mismatch", interface_id=interface_id, asked=count, got=len(new))
        return new

    def assign_prefixes(self, interface_id: InterfaceId, count: int) -> list[str]:
        op = "assign_prefixes"
        _check_count(op, "count", count)
        if count == 0:
            return []
        limits = self.instance_limits()
        if not limits.prefix_delegation:
            raise LimitExceeded(op, f"{limits.instance_type} does not support prefix delegation")
        eni = self._own_interface(op, interface_id)
        self._check_slots(op, eni, count)
        before = set(_prefixes(eni))
        with _translated(op):
            response = self._ec2.assign_private_ip_addresses(
                NetworkInterfaceId=interface_id, Ipv4PrefixCount=count
            )
        after = [p["Ipv4Prefix"] for p in response.get("AssignedIpv4Prefixes") or ()]
        if not after:
            after = _prefixes(self._require(op, interface_id))
        new = _new_items(before, after)
        if not new:
            # moto ignores Ipv4PrefixCount and answers 200: say so rather than report an empty success.
            raise PermanentCloudError(op, "the EC2 endpoint did not delegate a prefix")
        if len(new) != count:
            _log.warning(
                "assign_prefixes_count_mismatch", interface_id=interface_id, asked=count, got=len(new)
            )
        return new

    def release_ips(self, interface_id: InterfaceId, ips: list[str]) -> None:
        op = "release_ips"
        if not ips:
            return
        with self._lock:
            primary_ip = self._primary_ips.get(interface_id)
        if primary_ip is not None and primary_ip in ips:
            raise PermanentCloudError(op, f"{primary_ip} is the primary address of {interface_id}")
        self._unassign(op, interface_id, "PrivateIpAddresses", list(ips), _secondary_ips)

    def release_prefixes(self, interface_id: InterfaceId, prefixes: list[str]) -> None:
        if prefixes:
            self._unassign("release_prefixes", interface_id, "Ipv4Prefixes", list(prefixes), _prefixes)

    # --- leaked ENIs ---------------------------------------------------------------------------

    def leaked_interfaces(self, *, older_than: float, own_only: bool = False) -> list[str]:
        """Ids of this cluster's ENIs, made by any node, left available for at least ``older_than`` s.

        An ENI is leaked when it is ``available`` (attached to nothing), carries ``cloud-cni/managed``
        (and this cluster's name when there is one), its description starts with ``cloud-cni: ``, its
        ``createdAt`` tag is at least ``older_than`` seconds old, and it is not ``no_manage``. The age
        covers the moments between Create and Attach, and between Detach and Delete, when an ENI of a
        live node is available too: ``older_than`` must exceed them (aws-vpc-cni uses 5 minutes).
        ``own_only`` keeps only ENIs this node created (for the start-up sweep, with ``older_than=0``).
        """
        op = "leaked_interfaces"
        filters = [
            {"Name": "status", "Values": ["available"]},
            {"Name": "tag-key", "Values": [TAG_MANAGED]},
            {"Name": "description", "Values": [DESCRIPTION_PREFIX + "*"]},
        ]
        if self._vpc_id:
            filters.append({"Name": "vpc-id", "Values": [self._vpc_id]})
        if self._cluster_name:
            filters.append({"Name": f"tag:{TAG_CLUSTER}", "Values": [self._cluster_name]})
        if own_only:
            # This node's own ENIs: at start-up nothing of this node is between Create and Attach,
            # so an available one is leaked whatever its age (a crash between the two).
            filters.append({"Name": f"tag:{TAG_INSTANCE_ID}", "Values": [self._node.instance_id]})
        now = self._clock()
        leaked = []
        for eni in self._describe_all(op, filters):
            if not self._is_ours_and_available(eni):
                continue
            created = _parse_created_at(_tags(eni).get(TAG_CREATED_AT, ""))
            if created is None:
                _log.warning("leaked_interface_undated", interface_id=eni["NetworkInterfaceId"])
                continue
            if now - created >= older_than:
                leaked.append(eni["NetworkInterfaceId"])
        return sorted(leaked)

    def delete_leaked(self, interface_ids: list[str]) -> int:
        """Delete the ENIs among ``interface_ids`` that are still leaked; returns how many were deleted.

        Each one is described again first, so an ENI that was attached in the meantime, or is not
        ours, is left alone. Already gone is not an error. A temporary or permission error stops the
        sweep and is raised (the ones deleted so far are logged); any other error is logged and the
        sweep goes on with the next ENI.
        """
        op = "delete_leaked"
        if not interface_ids:
            return 0
        wanted = sorted(set(interface_ids))
        current = self._describe_all(op, [{"Name": "network-interface-id", "Values": wanted}])
        deleted = 0
        for eni in current:
            eni_id = eni["NetworkInterfaceId"]
            if not self._is_ours_and_available(eni):
                _log.info("leaked_interface_skipped", interface_id=eni_id, status=eni.get("Status"))
                continue
            try:
                with _translated(op):
                    self._ec2.delete_network_interface(NetworkInterfaceId=eni_id)
            except InterfaceNotFound:
                continue
            except (TemporaryCloudError, CloudPermissionError):
                raise
            except CloudError as err:
                _log.warning("leaked_interface_delete_failed", interface_id=eni_id, code=_code(err))
                continue
            deleted += 1
            _log.info("leaked_interface_deleted", interface_id=eni_id, origin=_tags(eni).get(TAG_INSTANCE_ID))
        return deleted

    # --- EC2 reads ------------------------------------------------------------------------------

    def _describe_all(self, op: str, filters: list[dict[str, Any]]) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = []
        with _translated(op):
            paginator = self._ec2.get_paginator("describe_network_interfaces")
            for page in paginator.paginate(Filters=filters):
                found.extend(page.get("NetworkInterfaces") or ())
        return found

    def _attached_enis(self, op: str) -> list[dict[str, Any]]:
        """Every ENI attached (or attaching, or detaching) to this node on network card 0."""
        filters = [{"Name": "attachment.instance-id", "Values": [self._node.instance_id]}]
        return [
            eni
            for eni in self._describe_all(op, filters)
            if _attachment(eni).get("InstanceId") == self._node.instance_id
            and _attachment(eni).get("NetworkCardIndex", 0) == 0
        ]

    def _describe_one(self, op: str, interface_id: str) -> dict[str, Any] | None:
        """The ENI, or None when EC2 says it does not exist."""
        try:
            with _translated(op):
                found = self._ec2.describe_network_interfaces(NetworkInterfaceIds=[interface_id])
        except InterfaceNotFound:
            return None
        for eni in found.get("NetworkInterfaces") or ():
            if eni.get("NetworkInterfaceId") == interface_id:
                return dict(eni)
        return None

    def _require(self, op: str, interface_id: str) -> dict[str, Any]:
        eni = self._describe_one(op, interface_id)
        if eni is None:
            raise InterfaceNotFound(op, f"{interface_id} does not exist")
        return eni

    def _own_interface(self, op: str, interface_id: str) -> dict[str, Any]:
        """The ENI, which must be attached to this node and managed."""
        eni = self._require(op, interface_id)
        if _attachment(eni).get("InstanceId") != self._node.instance_id:
            raise PermanentCloudError(op, f"{interface_id} is not attached to {self._node.instance_id}")
        if _no_manage(eni):
            raise PermanentCloudError(op, f"{interface_id} is tagged {TAG_NO_MANAGE}=true: not changed")
        return eni

    def _subnet_cidr(self, op: str, subnet_id: str, *, placement: Placement | None = None) -> str:
        """The subnet's CIDR (IMDS knows the node's own; else DescribeSubnets, cached). For a
        ``placement``'s subnet not seen yet, also checks that it is in the node's VPC and AZ."""
        with self._lock:
            cached = self._subnet_cidrs.get(subnet_id)
        if cached is not None:
            return cached
        with _translated(op):
            subnets = self._ec2.describe_subnets(SubnetIds=[subnet_id])["Subnets"]
        if placement is not None:
            self._check_placement_subnet(op, placement, subnets[0] if subnets else None)
        cidr = str(subnets[0]["CidrBlock"]) if subnets else ""
        if cidr:
            with self._lock:
                self._subnet_cidrs[subnet_id] = cidr
        return cidr

    def _check_placement_subnet(self, op: str, placement: Placement, subnet: dict[str, Any] | None) -> None:
        where = f"{placement.source}: subnet {placement.subnet_id}"
        if subnet is None:
            raise PermanentCloudError(op, f"{where} does not exist")
        vpc, zone = subnet.get("VpcId"), subnet.get("AvailabilityZone")
        if self._vpc_id and vpc and vpc != self._vpc_id:
            raise PermanentCloudError(op, f"{where} is in {vpc}, not in the node's VPC {self._vpc_id}")
        node_zone = self._node.availability_zone
        if node_zone and zone and zone != node_zone:
            raise PermanentCloudError(
                op,
                f"{where} is in {zone}, not in the node's Availability Zone {node_zone} "
                "(EC2 attaches an ENI only in its instance's zone: name one ENIConfig per zone)",
            )

    def _view(self, op: str, eni: dict[str, Any], subnet_cidr: str | None = None) -> InterfaceView:
        eni_id = eni["NetworkInterfaceId"]
        primary_ip = str(eni.get("PrivateIpAddress", ""))
        with self._lock:
            self._primary_ips[eni_id] = primary_ip
        device_index = int(_attachment(eni).get("DeviceIndex", -1))
        return InterfaceView(
            id=InterfaceId(eni_id),
            device_index=device_index,
            primary=device_index == 0,
            subnet_id=str(eni.get("SubnetId", "")),
            subnet_cidr=subnet_cidr or self._subnet_cidr(op, str(eni.get("SubnetId", ""))),
            primary_ip=primary_ip,
            ips=tuple(_secondary_ips(eni)),
            prefixes=tuple(_prefixes(eni)),
            mac=str(eni.get("MacAddress", "")),
        )

    def _is_ours_and_available(self, eni: dict[str, Any]) -> bool:
        tags = _tags(eni)
        return (
            eni.get("Status") == "available"
            and not _attachment(eni)
            and tags.get(TAG_MANAGED) == "true"
            and not _no_manage(eni)
            and str(eni.get("Description", "")).startswith(DESCRIPTION_PREFIX)
            and (not self._cluster_name or tags.get(TAG_CLUSTER) == self._cluster_name)
        )

    # --- steps of attach/detach -----------------------------------------------------------------

    def _free_device_index(self, op: str, limits: InstanceLimits) -> int:
        attached = self._attached_enis(op)
        if len(attached) >= limits.max_interfaces:
            raise LimitExceeded(
                op,
                f"AttachmentLimitExceeded: {limits.instance_type} takes at most "
                f"{limits.max_interfaces} interfaces and has {len(attached)}",
            )
        taken = {int(_attachment(eni).get("DeviceIndex", -1)) for eni in attached}
        for index in range(1, limits.max_interfaces):
            if index not in taken:
                return index
        raise LimitExceeded(
            op, f"AttachmentLimitExceeded: no free device index below {limits.max_interfaces}"
        )

    def _create(
        self, op: str, ip_count: int, prefix_count: int, subnet_id: str, groups: tuple[str, ...]
    ) -> dict[str, Any]:
        instance_id = self._node.instance_id
        tags = {
            **self._extra_tags,
            TAG_INSTANCE_ID: instance_id,
            TAG_CREATED_AT: datetime.fromtimestamp(self._clock(), UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            TAG_MANAGED: "true",
        }
        if self._cluster_name:
            tags[TAG_CLUSTER] = self._cluster_name
        params: dict[str, Any] = {
            "SubnetId": subnet_id,
            "Groups": list(groups),
            "Description": DESCRIPTION_PREFIX + instance_id,
            "TagSpecifications": [
                {
                    "ResourceType": "network-interface",
                    "Tags": [{"Key": k, "Value": v} for k, v in sorted(tags.items())],
                }
            ],
        }
        if ip_count:
            params["SecondaryPrivateIpAddressCount"] = ip_count
        if prefix_count:
            params["Ipv4PrefixCount"] = prefix_count
        with _translated(op):
            created: dict[str, Any] = self._ec2.create_network_interface(**params)["NetworkInterface"]
        _log.info("interface_created", interface_id=created["NetworkInterfaceId"], subnet_id=subnet_id)
        return created

    def _wait_attached(self, op: str, interface_id: str) -> dict[str, Any]:
        eni = self._wait(op, interface_id, self._attached_here, "attached")
        if eni is None:  # deleted under our feet
            raise InterfaceNotFound(op, f"{interface_id} disappeared while attaching")
        return eni

    def _attached_here(self, eni: dict[str, Any] | None) -> bool:
        if eni is None:
            return False  # a new ENI may not be visible to Describe yet: look again
        attachment = _attachment(eni)
        return (
            attachment.get("Status") == "attached" and attachment.get("InstanceId") == self._node.instance_id
        )

    def _wait(
        self,
        op: str,
        interface_id: str,
        done: Callable[[dict[str, Any] | None], bool],
        what: str,
    ) -> dict[str, Any] | None:
        """Poll the ENI until ``done(eni)`` (``eni`` None once EC2 no longer knows it).

        Looks at once, then with a doubling pause, for ``attach_timeout`` seconds; returns the last
        description, or raises ``TemporaryCloudError`` when the time is up. A temporary error of one
        look counts as one look that saw nothing new.
        """
        started = self._clock()
        pause = _POLL_FIRST
        status = "unknown"
        while True:
            try:
                eni = self._describe_one(op, interface_id)
            except TemporaryCloudError:
                status = "describe-failed"
            else:
                if done(eni):
                    return eni
                status = _attachment(eni).get("Status", "none") if eni is not None else "not-found"
            elapsed = self._clock() - started
            if elapsed >= self._attach_timeout:
                raise TemporaryCloudError(
                    op,
                    f"{interface_id} not {what} after {self._attach_timeout:g} s (attachment: {status})",
                )
            self._sleep(min(pause, self._attach_timeout - elapsed))
            pause = min(pause * 2, _POLL_MAX)

    def _discard(self, op: str, interface_id: str, attachment_id: str | None) -> None:
        """Detach (if attached) and delete a half-made ENI. Never raises: a failure is logged."""
        try:
            eni = self._describe_one(op, interface_id)
        except CloudError:
            # Describe failed: act on what this call knows.
            known = {"AttachmentId": attachment_id, "Status": "attached"} if attachment_id else None
            eni = {"Attachment": known}
        if eni is None:
            return
        attachment = _attachment(eni)
        # The Attach response may have been lost although EC2 attached it: trust Describe.
        if attachment.get("AttachmentId") and attachment.get("Status") in ("attaching", "attached"):
            try:
                with _translated(op):
                    self._ec2.detach_network_interface(AttachmentId=attachment["AttachmentId"], Force=False)
            except CloudError as err:
                _log.warning("interface_cleanup_detach_failed", interface_id=interface_id, code=_code(err))
        pause = _CLEANUP_FIRST
        for attempt in range(1, _CLEANUP_ATTEMPTS + 1):
            try:
                with _translated(op):
                    self._ec2.delete_network_interface(NetworkInterfaceId=interface_id)
            except InterfaceNotFound:
                return
            except CloudError as err:
                code = _code(err)
                retryable = isinstance(err, TemporaryCloudError) or code == _IN_USE
                if not retryable or attempt == _CLEANUP_ATTEMPTS:
                    _log.error(
                        "interface_leaked",
                        interface_id=interface_id,
                        attempts=attempt,
                        error=type(err).__name__,
                        code=code,
                    )
                    return
                self._sleep(pause)
                pause = min(pause * 2, _CLEANUP_MAX)
            else:
                _log.info("interface_cleaned_up", interface_id=interface_id, attempts=attempt)
                return

    def _check_slots(self, op: str, eni: dict[str, Any], count: int) -> None:
        limits = self.instance_limits()
        used = len(_secondary_ips(eni)) + len(_prefixes(eni))
        if used + count > limits.secondary_per_interface:
            raise LimitExceeded(
                op,
                f"PrivateIpAddressLimitExceeded: {eni['NetworkInterfaceId']} holds {used} of "
                f"{limits.secondary_per_interface} slots, cannot add {count}",
            )

    def _unassign(
        self,
        op: str,
        interface_id: str,
        parameter: str,
        items: list[str],
        held: Callable[[dict[str, Any]], list[str]],
    ) -> None:
        """UnassignPrivateIpAddresses; addresses already gone count as released.

        EC2 refuses the whole call with InvalidParameterValue when one address is not on the ENI:
        then the ENI is described, and the call made once more with the addresses it still holds.
        """
        attempt_items = items
        for _ in range(2):
            try:
                with _translated(op):
                    self._ec2.unassign_private_ip_addresses(
                        NetworkInterfaceId=interface_id, **{parameter: attempt_items}
                    )
                return
            except InterfaceNotFound:
                return  # the interface, and so its addresses, are gone
            except PermanentCloudError as err:
                if _code(err) != _INVALID_PARAMETER or attempt_items is not items:
                    raise
                eni = self._describe_one(op, interface_id)
                if eni is None:
                    return
                if eni.get("PrivateIpAddress") in items:
                    raise PermanentCloudError(
                        op, f"{eni['PrivateIpAddress']} is the primary address of {interface_id}"
                    ) from err
                still = set(held(eni))
                remaining = [item for item in items if item in still]
                if not remaining:
                    return
                if len(remaining) == len(items):
                    raise
                attempt_items = remaining


# --- helpers on EC2 NetworkInterface dicts ------------------------------------------------------


def _attachment(eni: dict[str, Any] | None) -> dict[str, Any]:
    if not eni:
        return {}
    return dict(eni.get("Attachment") or {})


def _tags(eni: dict[str, Any]) -> dict[str, str]:
    return {str(t.get("Key")): str(t.get("Value", "")) for t in eni.get("TagSet") or ()}


def _no_manage(eni: dict[str, Any]) -> bool:
    return _tags(eni).get(TAG_NO_MANAGE, "").lower() == "true"


def _detached(eni: dict[str, Any] | None) -> bool:
    if eni is None:
        return True
    attachment = _attachment(eni)
    return not attachment or attachment.get("Status") == "detached" or eni.get("Status") == "available"


def _prefixes(eni: dict[str, Any]) -> list[str]:
    return [str(p["Ipv4Prefix"]) for p in eni.get("Ipv4Prefixes") or () if p.get("Ipv4Prefix")]


def _all_ips(eni: dict[str, Any]) -> list[str]:
    entries = eni.get("PrivateIpAddresses") or ()
    return [str(a["PrivateIpAddress"]) for a in entries if a.get("PrivateIpAddress")]


def _secondary_ips(eni: dict[str, Any]) -> list[str]:
    """Secondary addresses outside any delegated prefix; never the ENI's own primary address."""
    primary = eni.get("PrivateIpAddress")
    networks = [ipaddress.IPv4Network(p, strict=False) for p in _prefixes(eni)]
    out = []
    for entry in eni.get("PrivateIpAddresses") or ():
        ip = entry.get("PrivateIpAddress")
        if not ip or entry.get("Primary") or ip == primary:
            continue
        if any(ipaddress.IPv4Address(ip) in net for net in networks):
            continue
        out.append(str(ip))
    return out


def _new_items(before: set[str], after: list[str]) -> list[str]:
    seen = set(before)
    new = []
    for item in after:
        if item not in seen:
            seen.add(item)
            new.append(item)
    return new


def _check_placement(placement: Placement) -> None:
    """The form of an EC2 placement (``ValueError``): a subnet id and at most 16 group ids."""
    if not _SUBNET_ID.match(placement.subnet_id):
        raise ValueError(
            f"{placement.source}: {placement.subnet_id!r} is not an EC2 subnet id (subnet-<hex>)"
        )
    groups = placement.security_group_ids
    if groups is not None:
        bad = [g for g in groups if not _GROUP_ID.match(g)]
        if bad or not groups or len(groups) > _MAX_GROUPS:
            raise ValueError(
                f"{placement.source}: security groups must be 1 to {_MAX_GROUPS} ids like sg-0123abcd "
                f"(or None for the primary ENI's), got {list(groups)!r}"
            )


def _check_count(operation: str, name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise PermanentCloudError(
            operation, f"InvalidParameterValue: {name} must be an integer >= 0, got {value!r}"
        )


def _parse_created_at(value: str) -> float | None:
    """Epoch seconds of a createdAt tag (RFC 3339, as aws-vpc-cni writes it); None if unreadable."""
    if not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.timestamp()


if TYPE_CHECKING:
    _conforms: type[CloudProvider] = AwsProvider
    _sweeps: type[LeakSweeping] = AwsProvider
    _places: type[PlacementAware] = AwsProvider

__all__ = [
    "DESCRIPTION_PREFIX",
    "TAG_CLUSTER",
    "TAG_CREATED_AT",
    "TAG_INSTANCE_ID",
    "TAG_MANAGED",
    "TAG_NO_MANAGE",
    "AwsProvider",
]
