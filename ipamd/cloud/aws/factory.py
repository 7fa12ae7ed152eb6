"""Build the AWS provider from the settings: node facts from IMDSv2, an EC2 client for its Region."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ipamd.cloud.aws.client import make_ec2_client
from ipamd.cloud.aws.imds import ImdsClient
from ipamd.cloud.aws.limits import instance_limits
from ipamd.cloud.aws.provider import AwsProvider

if TYPE_CHECKING:
    from ipamd.config import Settings


def make(settings: Settings) -> AwsProvider:
    node = ImdsClient(settings.aws_imds_endpoint).node()
    ec2 = make_ec2_client(settings.aws_region or node.region, endpoint_url=settings.aws_endpoint_url)
    return AwsProvider(
        ec2,
        node,
        cluster_name=settings.cluster_name,
        subnet_id=settings.eni_subnet_id,
        security_group_ids=settings.eni_security_groups,
        extra_tags=settings.additional_eni_tags,
        limits=instance_limits(ec2, node.instance_type),
        attach_timeout=settings.eni_attach_timeout,
        custom_networking=settings.custom_network_cfg,
    )
