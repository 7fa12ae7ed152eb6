"""Settings: every variable parsed in one table; bad values name the variable, value and what is allowed."""

from __future__ import annotations

from pathlib import Path

import pytest

from ipamd.config import VARIABLES, Settings, markdown_table
from ipamd.errors import ConfigError
from ipamd.pool.model import WarmPoolTargets

ROOT = Path(__file__).resolve().parents[2]
BASE = {"CLOUD_PROVIDER": "sim"}


def test_defaults_match_the_design_table() -> None:
    s = Settings.from_env(BASE)
    assert s.cloud_provider == "sim"
    assert s.ipamd_socket == "/var/run/cloud-cni/ipamd.sock"
    assert s.checkpoint_path == "/var/run/cloud-cni/ipam.json"
    assert s.metrics_bind == "0.0.0.0:61678"
    assert s.introspection_bind == "127.0.0.1:61679"
    assert s.targets() == WarmPoolTargets(warm_eni=1, cooldown=30.0, release_delay=30.0)
    assert s.effective_sim_state_path == "/var/run/cloud-cni/sim-cloud.json"


@pytest.mark.parametrize(
    ("env", "field", "value"),
    [
        ({"WARM_IP_TARGET": "5"}, "warm_ip_target", 5),
        ({"WARM_IP_TARGET": " 7 "}, "warm_ip_target", 7),
        ({"MINIMUM_IP_TARGET": "0"}, "minimum_ip_target", 0),
        ({"WARM_ENI_TARGET": "0"}, "warm_eni_target", 0),
        ({"ENABLE_PREFIX_DELEGATION": "TRUE"}, "enable_prefix_delegation", True),
        ({"ENABLE_PREFIX_DELEGATION": "0"}, "enable_prefix_delegation", False),
        ({"MAX_ENI": "2"}, "max_eni", 2),
        ({"MAX_ENI": ""}, "max_eni", None),
        ({"IP_COOLDOWN_PERIOD": "0.5"}, "ip_cooldown_period", 0.5),
        ({"METRICS_BIND": "off"}, "metrics_bind", None),
        ({"METRICS_BIND": "[::1]:9100"}, "metrics_bind", "[::1]:9100"),
        ({"INTROSPECTION_BIND": "localhost:1"}, "introspection_bind", "localhost:1"),
        ({"CLOUD_PROVIDER": "AWS"}, "cloud_provider", "aws"),
        ({"DATAPATH": "none"}, "datapath", "none"),
        ({"POD_MTU": "9001"}, "pod_mtu", 9001),
        (
            {"EXCLUDE_SNAT_CIDRS": " 192.0.2.0/24 ,198.51.100.0/24,"},
            "exclude_snat_cidrs",
            ("192.0.2.0/24", "198.51.100.0/24"),
        ),
        ({"EXTERNAL_SNAT": "true"}, "external_snat", True),
        ({"VETH_PREFIX": "eni"}, "veth_prefix", "eni"),
        ({}, "aws_vpc_cni_checkpoint", "/var/run/aws-node/ipam.json"),
        ({"AWS_VPC_CNI_CHECKPOINT": " Off "}, "aws_vpc_cni_checkpoint", None),
        ({"AWS_VPC_CNI_CHECKPOINT": "/host/run/ipam.json"}, "aws_vpc_cni_checkpoint", "/host/run/ipam.json"),
        ({}, "cni_network_name", "cloud-cni"),
        ({"CNI_NETWORK_NAME": "k8s-pod-network"}, "cni_network_name", "k8s-pod-network"),
        ({}, "aws_vpc_cni_veth_prefix", "eni"),
        ({"AWS_VPC_CNI_VETH_PREFIX": "ENI9"}, "aws_vpc_cni_veth_prefix", "ENI9"),
        ({"CLUSTER_NAME": "prod-eu.1"}, "cluster_name", "prod-eu.1"),
        ({"SIM_SUBNET_CIDR": "10.1.0.0/28"}, "sim_subnet_cidr", "10.1.0.0/28"),
        ({"SIM_THROTTLE_RATE": "2.5"}, "sim_throttle_rate", 2.5),
        ({"LOG_LEVEL": "Debug"}, "log_level", "debug"),
        ({"POOL_MODE": " Adaptive "}, "pool_mode", "adaptive"),
        ({}, "pool_mode", "static"),
        ({"ADAPTIVE_WINDOW": "1h"}, "adaptive_window", 3600.0),
        ({"ADAPTIVE_WINDOW": "90"}, "adaptive_window", 90.0),
        ({}, "adaptive_window", 1800.0),
    ],
    ids=lambda v: str(v)[:40],
)
def test_valid_values_parse(env: dict[str, str], field: str, value: object) -> None:
    assert getattr(Settings.from_env({**BASE, **env}), field) == value


@pytest.mark.parametrize(
    ("var", "value", "allowed"),
    [
        ("CLOUD_PROVIDER", "gcp", "one of aws, azure, sim"),
        ("DATAPATH", "ebpf", "one of linux, windows, none"),
        ("WARM_ENI_TARGET", "-1", "integer >= 0"),
        ("WARM_ENI_TARGET", "1.5", "integer >= 0"),
        ("WARM_IP_TARGET", "ten", "integer >= 0"),
        ("MINIMUM_IP_TARGET", "-3", "integer >= 0"),
        ("WARM_PREFIX_TARGET", "x", "integer >= 0"),
        ("MAX_ENI", "0", "integer >= 1"),
        ("MAX_PODS", "-1", "integer >= 1"),
        ("IP_COOLDOWN_PERIOD", "-1", "seconds >= 0"),
        ("IP_COOLDOWN_PERIOD", "nan", "seconds >= 0"),
        ("IP_COOLDOWN_PERIOD", "inf", "seconds >= 0"),
        ("ENABLE_PREFIX_DELEGATION", "maybe", "true or false"),
        ("IPAMD_SOCKET", "run/ipamd.sock", "absolute path"),
        ("CHECKPOINT_PATH", "ipam.json", "absolute path"),
        ("METRICS_BIND", "61678", "host:port"),
        ("METRICS_BIND", "0.0.0.0:70000", "host:port"),
        ("INTROSPECTION_BIND", "example.com:80", "IP address or localhost"),
        ("CLUSTER_NAME", "has space", "letters, digits"),
        ("CLOUD_API_RATE", "0", "number > 0"),
        ("CLOUD_API_BURST", "0", "integer >= 1"),
        ("SIM_SUBNET_CIDR", "10.0.0.1/24", "IPv4 CIDR"),
        ("SIM_SUBNET_CIDR", "10.0.0.0/30", "/28 or larger"),
        ("SIM_INSTANCE_TYPE", "m9.huge", "one of"),
        ("LOG_LEVEL", "trace", "debug, info, warning, error"),
        ("POD_MTU", "9500", "MTU from 576 to 9001"),
        ("POD_MTU", "jumbo", "MTU from 576 to 9001"),
        ("VETH_PREFIX", "toolong", "1 to 4 lowercase"),
        ("VETH_PREFIX", "9ab", "starting with a letter"),
        ("AWS_VPC_CNI_CHECKPOINT", "ipam.json", "an absolute path, or off"),
        ("CNI_NETWORK_NAME", "-cloud-cni", "a CNI network name"),
        ("CNI_NETWORK_NAME", "cloud cni", "a CNI network name"),
        ("AWS_VPC_CNI_VETH_PREFIX", "eni-x", "1 to 4 letters or digits"),
        ("EXTERNAL_SNAT", "sometimes", "true or false"),
        ("EXCLUDE_SNAT_CIDRS", "192.0.2.0/24,10.1.2.3/8", "'10.1.2.3/8' is not"),
        ("SNAT_BACKEND", "ebtables", "one of auto, nftables, iptables, iptables-legacy, iptables-nft"),
        ("SIM_VPC_CIDR", "10.0.0.0/29", "/28 or larger"),
        ("ENABLE_NETWORK_POLICY", "yes please", "true or false"),
        ("NETWORK_POLICY_ENFORCING_MODE", "paranoid", "one of standard, strict"),
        ("POOL_MODE", "smart", "one of static, adaptive"),
        ("ADAPTIVE_WINDOW", "30s", "a duration of at least 1m"),
        ("ADAPTIVE_WINDOW", "soon", "a duration of at least 1m"),
    ],
    ids=lambda v: str(v)[:24],
)
def test_bad_values_name_variable_value_and_allowed(var: str, value: str, allowed: str) -> None:
    with pytest.raises(ConfigError) as err:
        Settings.from_env({**BASE, var: value})
    message = str(err.value)
    assert err.value.variable == var
    assert var in message and repr(value) in message and allowed in message
    assert "\n" not in message


def test_cloud_provider_is_required_never_guessed() -> None:
    for env in ({}, {"CLOUD_PROVIDER": ""}, {"CLOUD_PROVIDER": "  "}):
        with pytest.raises(ConfigError) as err:
            Settings.from_env(env)
        assert err.value.variable == "CLOUD_PROVIDER" and "required" in str(err.value)


def test_every_variable_has_a_field_and_a_parseable_default() -> None:
    fields = set(Settings.__dataclass_fields__)
    names = [v.name for v in VARIABLES]
    assert len(names) == len(set(names))
    for var in VARIABLES:
        assert var.field in fields, var.name
        if var.default is not None:
            var.parse(var.default)
    public = Settings.from_env(BASE).public()
    assert list(public) == names


def test_configuration_doc_carries_the_generated_table() -> None:
    doc = (ROOT / "docs" / "configuration.md").read_text()
    assert markdown_table() in doc, "docs/configuration.md is stale: python -m ipamd.config > table"


# --- azure defaults ------------------------------------------------------------------------------


def test_azure_defaults_batch_like_cns() -> None:
    s = Settings.from_env({"CLOUD_PROVIDER": "azure"})
    assert s.targets() == WarmPoolTargets(warm_ip=8, minimum_ip=16, ip_batch=16, warm_eni=1)
    assert (s.add_wait_timeout, s.cloud_api_rate, s.cloud_api_burst) == (30.0, 1.0, 10)
    assert s.azure_arm_endpoint == "https://management.azure.com"
    assert s.azure_imds_endpoint == "http://169.254.169.254"
    aws = Settings.from_env({"CLOUD_PROVIDER": "aws"})
    assert (aws.warm_ip_target, aws.minimum_ip_target, aws.ip_batch_size, aws.cloud_api_rate) == (
        0,
        0,
        1,
        5.0,
    )


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"WARM_ENI_TARGET": "1"}, (1, 0, 0, 16)),  # warm-ENI asked for: no azure warm-IP defaults
        ({"WARM_IP_TARGET": "4"}, (1, 4, 0, 16)),  # one target set: the other is not defaulted
        ({"MINIMUM_IP_TARGET": "30"}, (1, 0, 30, 16)),
        ({"WARM_IP_TARGET": "4", "IP_BATCH_SIZE": "1"}, (1, 4, 0, 1)),
        ({"IP_BATCH_SIZE": "8"}, (1, 8, 16, 8)),
        ({"WARM_IP_TARGET": " "}, (1, 8, 16, 16)),  # blank counts as unset
        ({"POOL_MODE": "adaptive"}, (1, 0, 0, 16)),  # adaptive chooses the warm target: no warm-IP floors
        ({"POOL_MODE": "adaptive", "WARM_IP_TARGET": "3"}, (1, 3, 0, 16)),
        ({"POOL_MODE": "static"}, (1, 8, 16, 16)),
    ],
)
def test_an_operator_pool_target_switches_the_azure_pool_defaults_off(
    env: dict[str, str], expected: tuple[int, int, int, int]
) -> None:
    s = Settings.from_env({"CLOUD_PROVIDER": "azure", **env})
    assert (s.warm_eni_target, s.warm_ip_target, s.minimum_ip_target, s.ip_batch_size) == expected


@pytest.mark.parametrize(
    ("var", "value", "allowed"),
    [
        ("AZURE_ARM_ENDPOINT", "http://management.azure.com", "https://"),
        ("AZURE_ARM_ENDPOINT", "management.azure.com", "URL"),
        ("AZURE_IMDS_ENDPOINT", "169.254.169.254", "URL"),
        ("AZURE_CLIENT_ID", "not-a-guid", "GUID"),
        ("AZURE_ARM_CA_BUNDLE", "relative.pem", "absolute"),
        ("IP_BATCH_SIZE", "0", ">= 1"),
        ("ENABLE_PREFIX_DELEGATION", "true", "false on azure"),
    ],
)
def test_bad_azure_values_name_the_variable(var: str, value: str, allowed: str) -> None:
    with pytest.raises(ConfigError) as err:
        Settings.from_env({"CLOUD_PROVIDER": "azure", var: value})
    assert var in str(err.value) and allowed in str(err.value)


def test_azure_client_id_is_normalised() -> None:
    s = Settings.from_env(
        {"CLOUD_PROVIDER": "azure", "AZURE_CLIENT_ID": "0F0E0D0C-0000-4000-8000-00000000ABCD"}
    )
    assert s.azure_client_id == "0f0e0d0c-0000-4000-8000-00000000abcd"


@pytest.mark.parametrize(
    ("extra", "allowed"),
    [
        ({"DATAPATH": "none"}, "only with DATAPATH=linux"),
        ({"DATAPATH": "linux", "KUBERNETES_INTEGRATION": "off"}, "needs the Kubernetes integration"),
    ],
)
def test_network_policy_needs_the_linux_datapath_and_the_api(extra: dict[str, str], allowed: str) -> None:
    with pytest.raises(ConfigError) as err:
        Settings.from_env({**BASE, "ENABLE_NETWORK_POLICY": "true", **extra})
    assert err.value.variable == "ENABLE_NETWORK_POLICY" and allowed in str(err.value)
    s = Settings.from_env({**BASE, "ENABLE_NETWORK_POLICY": "true", "DATAPATH": "linux"})
    assert s.enable_network_policy and s.network_policy_enforcing_mode == "standard"
