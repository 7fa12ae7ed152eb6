"""Build the Azure provider from the settings: node facts from IMDS, ARM clients with managed identity."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ipamd.cloud.azure.client import Arm, make_credential
from ipamd.cloud.azure.imds import AzureImdsClient
from ipamd.cloud.azure.provider import AzureProvider
from ipamd.errors import ConfigError, PermanentCloudError

if TYPE_CHECKING:
    from ipamd.config import Settings


def make(settings: Settings) -> AzureProvider:
    node = AzureImdsClient(settings.azure_imds_endpoint).node()
    credential = make_credential(settings.azure_client_id, settings.azure_imds_endpoint)
    arm = Arm(
        credential,
        node.subscription_id,
        endpoint=settings.azure_arm_endpoint,
        ca_bundle=settings.azure_arm_ca_bundle,
    )
    provider = AzureProvider(arm, node)
    if settings.azure_pod_subnet_id:
        try:
            provider.set_pod_subnet(settings.azure_pod_subnet_id)
        except (ValueError, PermanentCloudError) as exc:
            raise ConfigError("AZURE_POD_SUBNET_ID", settings.azure_pod_subnet_id, str(exc)) from None
    return provider
