"""Build the configured provider (it may call the cloud: run it off the event loop).

SDK-backed providers are imported only when selected, so a node running one cloud never pays the
import time or memory of the other's SDK."""

from __future__ import annotations

from ipamd.cloud.base import CloudProvider
from ipamd.config import Settings
from ipamd.errors import ConfigError


def make_provider(settings: Settings) -> CloudProvider:
    if settings.cloud_provider == "sim":
        from ipamd.cloud.sim import SimCloud

        try:
            return SimCloud(
                instance_type=settings.sim_instance_type,
                subnet_cidr=settings.sim_subnet_cidr,
                vpc_cidr=settings.sim_vpc_cidr,
                state_path=settings.effective_sim_state_path,
                seed=settings.sim_seed,
                latency=settings.sim_api_latency,
                throttle_rate=settings.sim_throttle_rate,
            )
        except ValueError as exc:
            raise ConfigError("SIM_STATE_PATH", settings.effective_sim_state_path, str(exc)) from None
    if settings.cloud_provider == "aws":
        from ipamd.cloud.aws import factory as aws

        return aws.make(settings)
    if settings.cloud_provider == "azure":
        from ipamd.cloud.azure import factory as azure

        return azure.make(settings)
    raise ConfigError("CLOUD_PROVIDER", settings.cloud_provider, "aws, azure or sim")
