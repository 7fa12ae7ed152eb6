"""aws-node's variable names: aliases of ours (translated, checked against ours), aws-node variables with
no setting here (accepted with a log line, or refused), the start-up log lines, and
docs/migrate-from-aws-vpc-cni.md kept equal to the code."""

from __future__ import annotations

import asyncio
import dataclasses
import ipaddress
import re
from pathlib import Path
from typing import Any

import pytest
import structlog
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client.metrics import MetricWrapperBase
from structlog.testing import capture_logs

from ipamd.config import (
    ALIASES,
    AWS_NODE_ONLY,
    AWS_NODE_SAME_NAMES,
    VARIABLES,
    AliasNote,
    Settings,
    alias_markdown_table,
    aws_node_only_markdown_table,
)
from ipamd.daemon import Daemon
from ipamd.errors import ConfigError
from ipamd.metrics import Metrics
from ipamd.pool.model import PoolStats

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "migrate-from-aws-vpc-cni.md"
BASE = {"CLOUD_PROVIDER": "sim"}
ALIAS_NAMES = {a.name for a in ALIASES}
FALLBACKS = {a.name for a in ALIASES if a.fallback}


def settings(**env: str) -> Settings:
    return Settings.from_env({**BASE, **env})


def notes_for(s: Settings, name: str) -> list[AliasNote]:
    return [n for n in s.alias_notes if n.name == name]


# --- aliases: each value translated -----------------------------------------------------------------

TRANSLATIONS: list[tuple[str, str, str, object, str]] = [
    # alias, aws-node's value, our field, the value it gets, the note's outcome
    ("AWS_VPC_K8S_CNI_EXTERNALSNAT", "true", "external_snat", True, "applied"),
    ("AWS_VPC_K8S_CNI_EXTERNALSNAT", "false", "external_snat", False, "applied"),
    ("AWS_VPC_K8S_CNI_EXTERNALSNAT", "t", "external_snat", True, "applied"),  # Go's ParseBool
    ("AWS_VPC_K8S_CNI_EXTERNALSNAT", "F", "external_snat", False, "applied"),
    ("AWS_VPC_K8S_CNI_EXTERNALSNAT", "1", "external_snat", True, "applied"),
    ("AWS_VPC_K8S_CNI_EXTERNALSNAT", "FALSE", "external_snat", False, "applied"),
    ("AWS_VPC_CNI_NODE_PORT_SUPPORT", "true", "node_port_support", True, "applied"),
    ("AWS_VPC_CNI_NODE_PORT_SUPPORT", "false", "node_port_support", False, "applied"),
    ("AWS_VPC_CNI_NODE_PORT_SUPPORT", "0", "node_port_support", False, "applied"),
    (
        "AWS_VPC_K8S_CNI_EXCLUDE_SNAT_CIDRS",
        "10.1.2.3/16, 192.0.2.0/24,",
        "exclude_snat_cidrs",
        ("10.1.0.0/16", "192.0.2.0/24"),  # host bits cleared, as Go's net.ParseCIDR does
        "applied",
    ),
    (
        "AWS_VPC_K8S_CNI_EXCLUDE_SNAT_CIDRS",
        "198.51.100.0/24",
        "exclude_snat_cidrs",
        ("198.51.100.0/24",),
        "applied",
    ),
    ("AWS_VPC_K8S_CNI_VETHPREFIX", "eni", "veth_prefix", "eni", "applied"),
    ("AWS_VPC_K8S_CNI_VETHPREFIX", " ab12 ", "veth_prefix", "ab12", "applied"),
    ("AWS_VPC_ENI_MTU", "9001", "pod_mtu", 9001, "applied"),
    ("AWS_VPC_ENI_MTU", "1500", "pod_mtu", 1500, "applied"),
    ("AWS_VPC_ENI_MTU", "576", "pod_mtu", 576, "applied"),
    ("MY_NODE_NAME", "ip-10-0-0-1.ec2.internal", "node_name", "ip-10-0-0-1.ec2.internal", "applied"),
    ("DISABLE_METRICS", "true", "metrics_bind", None, "applied"),
    ("DISABLE_METRICS", "false", "metrics_bind", "0.0.0.0:61678", "default"),
    ("INTROSPECTION_BIND_ADDRESS", ":61679", "introspection_bind", "0.0.0.0:61679", "applied"),
    ("INTROSPECTION_BIND_ADDRESS", "127.0.0.1:7000", "introspection_bind", "127.0.0.1:7000", "applied"),
    ("DISABLE_INTROSPECTION", "T", "introspection_bind", None, "applied"),
    ("DISABLE_INTROSPECTION", "false", "introspection_bind", "127.0.0.1:61679", "default"),
    ("DISABLE_LEAKED_ENI_CLEANUP", "true", "leaked_eni_cleanup_interval", 0.0, "applied"),
    (
        "AWS_VPC_K8S_CNI_BACKING_STORE",
        "/var/run/aws-node/ipam.json",
        "aws_vpc_cni_checkpoint",
        "/var/run/aws-node/ipam.json",
        "applied",
    ),
    (
        "AWS_VPC_K8S_CNI_BACKING_STORE",
        " /host/run/ipam.json ",
        "aws_vpc_cni_checkpoint",
        "/host/run/ipam.json",
        "applied",
    ),
    ("DISABLE_LEAKED_ENI_CLEANUP", "0", "leaked_eni_cleanup_interval", 3600.0, "default"),
]


def test_every_alias_has_translation_cases() -> None:
    assert {case[0] for case in TRANSLATIONS} == ALIAS_NAMES


@pytest.mark.parametrize(
    ("alias", "raw", "field", "value", "outcome"), TRANSLATIONS, ids=lambda v: str(v)[:32]
)
def test_an_alias_sets_our_variable(alias: str, raw: str, field: str, value: object, outcome: str) -> None:
    s = settings(**{alias: raw})
    assert getattr(s, field) == value
    variable = next(a.variable for a in ALIASES if a.name == alias)
    assert s.alias_notes == (AliasNote(alias, raw, variable, outcome),)


# --- aliases: our name set too ------------------------------------------------------------------

SAME_MEANING: list[tuple[str, str, str, str, object]] = [
    # alias, its value, ours, our value meaning the same; the value that wins is ours
    ("AWS_VPC_K8S_CNI_EXTERNALSNAT", "t", "EXTERNAL_SNAT", "yes", True),
    ("AWS_VPC_CNI_NODE_PORT_SUPPORT", "F", "NODE_PORT_SUPPORT", "no", False),
    ("AWS_VPC_K8S_CNI_EXCLUDE_SNAT_CIDRS", "10.1.2.3/16,192.0.2.0/24", "EXCLUDE_SNAT_CIDRS",
     "192.0.2.0/24,10.1.0.0/16", ("192.0.2.0/24", "10.1.0.0/16")),
    ("AWS_VPC_K8S_CNI_VETHPREFIX", "eni", "VETH_PREFIX", "eni", "eni"),
    ("DISABLE_METRICS", "true", "METRICS_BIND", "off", None),
    ("INTROSPECTION_BIND_ADDRESS", ":61679", "INTROSPECTION_BIND", "0.0.0.0:61679", "0.0.0.0:61679"),
    ("DISABLE_INTROSPECTION", "1", "INTROSPECTION_BIND", "OFF", None),
    ("DISABLE_LEAKED_ENI_CLEANUP", "true", "LEAKED_ENI_CLEANUP_INTERVAL", "0", 0.0),
    ("AWS_VPC_K8S_CNI_BACKING_STORE", "/run/a.json", "AWS_VPC_CNI_CHECKPOINT", " /run/a.json", "/run/a.json"),
]  # fmt: skip

DIFFERENT_MEANING: list[tuple[str, str, str, str]] = [
    ("AWS_VPC_K8S_CNI_EXTERNALSNAT", "true", "EXTERNAL_SNAT", "false"),
    ("AWS_VPC_CNI_NODE_PORT_SUPPORT", "false", "NODE_PORT_SUPPORT", "true"),
    ("AWS_VPC_K8S_CNI_EXCLUDE_SNAT_CIDRS", "10.0.0.0/8", "EXCLUDE_SNAT_CIDRS", "10.0.0.0/8,192.0.2.0/24"),
    ("AWS_VPC_K8S_CNI_VETHPREFIX", "eni", "VETH_PREFIX", "ccni"),
    ("DISABLE_METRICS", "true", "METRICS_BIND", "0.0.0.0:61678"),
    ("INTROSPECTION_BIND_ADDRESS", "127.0.0.1:7000", "INTROSPECTION_BIND", "127.0.0.1:61679"),
    ("DISABLE_INTROSPECTION", "true", "INTROSPECTION_BIND", "127.0.0.1:61679"),
    ("DISABLE_LEAKED_ENI_CLEANUP", "true", "LEAKED_ENI_CLEANUP_INTERVAL", "600"),
    ("AWS_VPC_K8S_CNI_BACKING_STORE", "/run/a.json", "AWS_VPC_CNI_CHECKPOINT", "off"),
]

FALLBACK_CASES: list[tuple[str, str, str, str, object]] = [
    # a fallback alias: ours wins whatever both say (in aws-node ours only defaults to it)
    ("AWS_VPC_ENI_MTU", "9001", "POD_MTU", "1500", 1500),
    ("AWS_VPC_ENI_MTU", "1500", "POD_MTU", "1500", 1500),
    ("MY_NODE_NAME", "node-a", "NODE_NAME", "node-b", "node-b"),
]


def field_of(variable: str) -> str:
    return next(v.field for v in VARIABLES if v.name == variable)


def test_every_alias_has_both_set_cases() -> None:
    assert {c[0] for c in SAME_MEANING} == ALIAS_NAMES - FALLBACKS
    assert {c[0] for c in DIFFERENT_MEANING} == ALIAS_NAMES - FALLBACKS
    assert {c[0] for c in FALLBACK_CASES} == FALLBACKS


@pytest.mark.parametrize(
    ("alias", "raw", "ours", "ours_raw", "value"), SAME_MEANING, ids=lambda v: str(v)[:32]
)
def test_both_set_with_the_same_meaning_ours_wins(
    alias: str, raw: str, ours: str, ours_raw: str, value: object
) -> None:
    s = settings(**{alias: raw, ours: ours_raw})
    assert getattr(s, field_of(ours)) == value
    assert s.alias_notes == (AliasNote(alias, raw, ours, "agrees"),)


@pytest.mark.parametrize(("alias", "raw", "ours", "ours_raw"), DIFFERENT_MEANING, ids=lambda v: str(v)[:32])
def test_both_set_with_different_meanings_is_refused_naming_both(
    alias: str, raw: str, ours: str, ours_raw: str
) -> None:
    with pytest.raises(ConfigError) as err:
        settings(**{alias: raw, ours: ours_raw})
    message = str(err.value)
    assert err.value.variable == ours
    assert f"{ours}={ours_raw!r}" in message and f"{alias}={raw!r}" in message
    assert "\n" not in message


@pytest.mark.parametrize(
    ("alias", "raw", "ours", "ours_raw", "value"), FALLBACK_CASES, ids=lambda v: str(v)[:32]
)
def test_a_fallback_alias_gives_way_to_ours(
    alias: str, raw: str, ours: str, ours_raw: str, value: object
) -> None:
    s = settings(**{alias: raw, ours: ours_raw})
    assert getattr(s, field_of(ours)) == value
    assert s.alias_notes == (AliasNote(alias, raw, ours, "unused"),)


@pytest.mark.parametrize(
    ("alias", "ours", "ours_raw", "field", "value"),
    [
        ("DISABLE_METRICS", "METRICS_BIND", "off", "metrics_bind", None),
        ("DISABLE_METRICS", "METRICS_BIND", "127.0.0.1:9100", "metrics_bind", "127.0.0.1:9100"),
        ("DISABLE_INTROSPECTION", "INTROSPECTION_BIND", "off", "introspection_bind", None),
        (
            "DISABLE_LEAKED_ENI_CLEANUP",
            "LEAKED_ENI_CLEANUP_INTERVAL",
            "0",
            "leaked_eni_cleanup_interval",
            0.0,
        ),
    ],
)
def test_a_disable_switch_at_false_asks_for_nothing(
    alias: str, ours: str, ours_raw: str, field: str, value: object
) -> None:
    """aws-node's default manifest sets DISABLE_*=false: it never conflicts with ours."""
    s = settings(**{alias: "false", ours: ours_raw})
    assert getattr(s, field) == value
    assert s.alias_notes == (AliasNote(alias, "false", ours, "default"),)


def test_two_aliases_of_one_variable_must_agree() -> None:
    s = settings(INTROSPECTION_BIND_ADDRESS="127.0.0.1:7000", DISABLE_INTROSPECTION="false")
    assert s.introspection_bind == "127.0.0.1:7000"
    assert [n.outcome for n in s.alias_notes] == ["applied", "default"]
    s = settings(INTROSPECTION_BIND_ADDRESS="off", DISABLE_INTROSPECTION="true")
    assert s.introspection_bind is None
    assert [n.outcome for n in s.alias_notes] == ["applied", "agrees"]
    with pytest.raises(ConfigError) as err:
        settings(INTROSPECTION_BIND_ADDRESS="127.0.0.1:7000", DISABLE_INTROSPECTION="true")
    assert err.value.variable == "DISABLE_INTROSPECTION"
    assert "INTROSPECTION_BIND_ADDRESS='127.0.0.1:7000'" in str(err.value)


# --- aliases: bad values ---------------------------------------------------------------------------

BAD_VALUES: list[tuple[str, str, str]] = [
    ("AWS_VPC_K8S_CNI_EXTERNALSNAT", "maybe", "true or false"),
    ("AWS_VPC_CNI_NODE_PORT_SUPPORT", "perhaps", "true or false"),
    ("AWS_VPC_K8S_CNI_EXCLUDE_SNAT_CIDRS", "10.0.0.0/33", "IPv4 CIDRs"),
    ("AWS_VPC_K8S_CNI_EXCLUDE_SNAT_CIDRS", "10.0.0.0/8,2001:db8::/32", "is IPv6"),
    ("AWS_VPC_K8S_CNI_VETHPREFIX", "toolong", "1 to 4 lowercase"),
    ("AWS_VPC_K8S_CNI_VETHPREFIX", "ENI", "1 to 4 lowercase"),
    ("AWS_VPC_ENI_MTU", "9500", "MTU from 576 to 9001"),
    ("AWS_VPC_ENI_MTU", "jumbo", "MTU from 576 to 9001"),
    ("MY_NODE_NAME", "Not_A_Node", "a Node name"),
    ("DISABLE_METRICS", "sometimes", "true or false"),
    ("INTROSPECTION_BIND_ADDRESS", "unix:/run/aws-node/introspect.sock", "TCP only"),
    ("INTROSPECTION_BIND_ADDRESS", "example.com:80", "IP address or localhost"),
    ("DISABLE_INTROSPECTION", "2", "true or false"),
    ("DISABLE_LEAKED_ENI_CLEANUP", "yes please", "true or false"),
    ("AWS_VPC_K8S_CNI_BACKING_STORE", "ipam.json", "an absolute path"),
]


def test_every_alias_has_a_bad_value_case() -> None:
    assert {c[0] for c in BAD_VALUES} == ALIAS_NAMES


@pytest.mark.parametrize(("alias", "raw", "allowed"), BAD_VALUES, ids=lambda v: str(v)[:32])
def test_a_bad_alias_value_names_the_alias_and_what_is_allowed(alias: str, raw: str, allowed: str) -> None:
    ours = next(a.variable for a in ALIASES if a.name == alias)
    for env in ({alias: raw}, {alias: raw, ours: ""}):
        with pytest.raises(ConfigError) as err:
            settings(**env)
        message = str(err.value)
        assert err.value.variable == alias
        assert f"{alias}={raw!r}" in message and allowed in message
        assert f"aws-node's name for {ours}" in message
        assert "\n" not in message


def test_a_bad_fallback_value_is_refused_even_when_ours_is_set() -> None:
    with pytest.raises(ConfigError) as err:
        settings(AWS_VPC_ENI_MTU="99999", POD_MTU="1500")
    assert err.value.variable == "AWS_VPC_ENI_MTU"


def test_a_bad_value_of_ours_is_named_as_ours_when_an_alias_is_set() -> None:
    with pytest.raises(ConfigError) as err:
        settings(AWS_VPC_K8S_CNI_EXTERNALSNAT="true", EXTERNAL_SNAT="sometimes")
    assert err.value.variable == "EXTERNAL_SNAT" and "true or false" in str(err.value)


# --- aliases: properties -----------------------------------------------------------------------------

AWS_NODE_BOOLS = {"true": True, "false": False, "t": True, "f": False, "T": True, "F": False, "1": True,
                  "0": False, "TRUE": True, "False": False}  # fmt: skip
OUR_BOOLS = {
    "true": True,
    "false": False,
    "1": True,
    "0": False,
    "yes": True,
    "no": False,
    "on": True,
    "off": False,
}


@given(st.sampled_from(sorted(AWS_NODE_BOOLS)), st.sampled_from(sorted(OUR_BOOLS)))
def test_a_boolean_alias_against_ours(theirs: str, ours: str) -> None:
    env = {"AWS_VPC_K8S_CNI_EXTERNALSNAT": theirs, "EXTERNAL_SNAT": ours}
    if AWS_NODE_BOOLS[theirs] == OUR_BOOLS[ours]:
        assert settings(**env).external_snat is OUR_BOOLS[ours]
    else:
        with pytest.raises(ConfigError, match="AWS_VPC_K8S_CNI_EXTERNALSNAT"):
            settings(**env)


@given(st.integers(min_value=-100, max_value=20_000))
def test_the_eni_mtu_is_the_pod_mtu_within_our_range(mtu: int) -> None:
    if 576 <= mtu <= 9001:
        assert settings(AWS_VPC_ENI_MTU=str(mtu)).pod_mtu == mtu
    else:
        with pytest.raises(ConfigError) as err:
            settings(AWS_VPC_ENI_MTU=str(mtu))
        assert err.value.variable == "AWS_VPC_ENI_MTU"


cidrs = st.lists(
    st.tuples(st.integers(0, 2**32 - 1), st.integers(0, 32)).map(
        lambda t: f"{ipaddress.IPv4Address(t[0])}/{t[1]}"
    ),
    min_size=1,
    max_size=6,
)


@given(cidrs, st.randoms(use_true_random=False))
def test_exclude_snat_cidrs_clear_host_bits_and_compare_as_a_set(items: list[str], rnd: Any) -> None:
    expected = tuple(str(ipaddress.IPv4Network(c, strict=False)) for c in items)
    s = settings(AWS_VPC_K8S_CNI_EXCLUDE_SNAT_CIDRS=",".join(items))
    assert s.exclude_snat_cidrs == expected
    shuffled = list(expected)
    rnd.shuffle(shuffled)
    both = settings(AWS_VPC_K8S_CNI_EXCLUDE_SNAT_CIDRS=",".join(items), EXCLUDE_SNAT_CIDRS=",".join(shuffled))
    assert both.exclude_snat_cidrs == tuple(shuffled)
    assert both.alias_notes[0].outcome == "agrees"


def test_settings_compare_by_value_whichever_names_set_them() -> None:
    assert settings(AWS_VPC_K8S_CNI_EXTERNALSNAT="true") == settings(EXTERNAL_SNAT="true")
    assert settings(AWS_VPC_K8S_CNI_EXTERNALSNAT="true").alias_notes != ()


# --- aws-node variables with no setting here ---------------------------------------------------------

DECISIONS: list[tuple[str, str, str]] = [
    # variable, value, decision: inert (info), ignored (warning), refused, invalid (not aws-node's)
    ("AWS_VPC_K8S_CNI_RANDOMIZESNAT", "prng", "inert"),
    ("AWS_VPC_K8S_CNI_RANDOMIZESNAT", "hashrandom", "ignored"),
    ("AWS_VPC_K8S_CNI_RANDOMIZESNAT", "none", "refused"),
    ("AWS_VPC_K8S_CNI_RANDOMIZESNAT", "fully", "invalid"),
    ("AWS_VPC_K8S_CNI_CONNMARK", "0x80", "inert"),
    ("AWS_VPC_K8S_CNI_CONNMARK", "128", "inert"),
    ("AWS_VPC_K8S_CNI_CONNMARK", "0x4000", "refused"),
    ("AWS_VPC_K8S_CNI_CONNMARK", "0", "invalid"),
    ("AWS_VPC_K8S_CNI_CONNMARK", "mark", "invalid"),
    ("AWS_VPC_K8S_CNI_CONFIGURE_RPFILTER", "true", "inert"),
    ("AWS_VPC_K8S_CNI_CONFIGURE_RPFILTER", "false", "ignored"),
    ("DISABLE_NETWORK_RESOURCE_PROVISIONING", "false", "inert"),
    ("DISABLE_NETWORK_RESOURCE_PROVISIONING", "true", "refused"),
    ("ENABLE_IPv4", "true", "inert"),
    ("ENABLE_IPv4", "false", "refused"),
    ("ENABLE_IPv6", "false", "inert"),
    ("ENABLE_IPv6", "true", "refused"),
    ("ENABLE_POD_ENI", "false", "inert"),
    ("ENABLE_POD_ENI", "true", "refused"),
    ("POD_SECURITY_GROUP_ENFORCING_MODE", "strict", "inert"),
    ("POD_SECURITY_GROUP_ENFORCING_MODE", "standard", "inert"),
    ("POD_SECURITY_GROUP_ENFORCING_MODE", "loose", "invalid"),
    ("ENABLE_SUBNET_DISCOVERY", "true", "ignored"),
    ("ENABLE_SUBNET_DISCOVERY", "false", "inert"),
    ("ANNOTATE_POD_IP", "false", "inert"),
    ("ANNOTATE_POD_IP", "true", "ignored"),
    ("HTTP_TIMEOUT", "10", "ignored"),
    ("AWS_VPC_K8S_CNI_LOGLEVEL", "DEBUG", "ignored"),
    ("AWS_VPC_K8S_CNI_LOG_FILE", "/host/var/log/aws-routed-eni/ipamd.log", "ignored"),
    ("AWS_VPC_K8S_PLUGIN_LOG_FILE", "/var/log/aws-routed-eni/plugin.log", "ignored"),
    ("AWS_VPC_K8S_PLUGIN_LOG_LEVEL", "DEBUG", "ignored"),
    ("VPC_ID", "vpc-09d4ca72082a8bb94", "inert"),
    ("VPC_CNI_VERSION", "v1.18.1", "inert"),
    ("MY_POD_NAME", "aws-node-mbmjp", "inert"),
]


def test_every_aws_node_only_variable_has_its_decisions_tested() -> None:
    assert {c[0] for c in DECISIONS} == {e.name for e in AWS_NODE_ONLY}
    for entry in AWS_NODE_ONLY:  # every value of a closed set is decided by a case above
        for value in entry.domain or ():
            assert (entry.name, value) in {(c[0], c[1]) for c in DECISIONS}, (entry.name, value)


@pytest.mark.parametrize(("name", "raw", "decision"), DECISIONS, ids=lambda v: str(v)[:32])
def test_an_aws_node_only_variable_is_accepted_or_refused(name: str, raw: str, decision: str) -> None:
    if decision in ("inert", "ignored"):
        s = settings(**{name: raw})
        (note,) = s.alias_notes
        assert (note.name, note.value, note.variable, note.outcome) == (name, raw, None, decision)
        assert note.reason
        return
    with pytest.raises(ConfigError) as err:
        settings(**{name: raw})
    message = str(err.value)
    assert err.value.variable == name and f"{name}={raw!r}" in message and "\n" not in message
    if decision == "refused":
        assert "not supported by cloud-cni" in message and "Allowed:" in message
    else:
        assert "allowed:" in message


# --- aws-node's default environment --------------------------------------------------------------

# The aws-node container's env of the EKS add-on v1.18.1 (`kubectl get pod aws-node-... -o yaml`).
AWS_NODE_DEFAULT_ENV = {
    "ADDITIONAL_ENI_TAGS": "{}",
    "ANNOTATE_POD_IP": "false",
    "AWS_VPC_CNI_NODE_PORT_SUPPORT": "true",
    "AWS_VPC_ENI_MTU": "9001",
    "AWS_VPC_K8S_CNI_CUSTOM_NETWORK_CFG": "false",
    "AWS_VPC_K8S_CNI_EXTERNALSNAT": "false",
    "AWS_VPC_K8S_CNI_LOGLEVEL": "DEBUG",
    "AWS_VPC_K8S_CNI_LOG_FILE": "/host/var/log/aws-routed-eni/ipamd.log",
    "AWS_VPC_K8S_CNI_RANDOMIZESNAT": "prng",
    "AWS_VPC_K8S_CNI_VETHPREFIX": "eni",
    "AWS_VPC_K8S_PLUGIN_LOG_FILE": "/var/log/aws-routed-eni/plugin.log",
    "AWS_VPC_K8S_PLUGIN_LOG_LEVEL": "DEBUG",
    "CLUSTER_NAME": "annd2-mAE2VxaY",
    "DISABLE_INTROSPECTION": "false",
    "DISABLE_METRICS": "false",
    "DISABLE_NETWORK_RESOURCE_PROVISIONING": "false",
    "ENABLE_IPv4": "true",
    "ENABLE_IPv6": "false",
    "ENABLE_POD_ENI": "false",
    "ENABLE_PREFIX_DELEGATION": "false",
    "ENABLE_SUBNET_DISCOVERY": "true",
    "NETWORK_POLICY_ENFORCING_MODE": "standard",
    "VPC_CNI_VERSION": "v1.18.1",
    "VPC_ID": "vpc-09d4ca72082a8bb94",
    "WARM_ENI_TARGET": "1",
    "WARM_PREFIX_TARGET": "1",
    "MY_NODE_NAME": "ip-172-31-0-225.ap-southeast-2.compute.internal",
    "MY_POD_NAME": "aws-node-mbmjp",
}


def test_aws_nodes_default_environment_starts_with_its_settings() -> None:
    s = Settings.from_env({"CLOUD_PROVIDER": "aws", **AWS_NODE_DEFAULT_ENV})
    assert (s.external_snat, s.veth_prefix, s.pod_mtu, s.node_port_support) == (False, "eni", 9001, True)
    assert (s.metrics_bind, s.introspection_bind) == ("0.0.0.0:61678", "127.0.0.1:61679")
    assert s.node_name == "ip-172-31-0-225.ap-southeast-2.compute.internal"
    assert (s.warm_eni_target, s.warm_prefix_target, s.enable_prefix_delegation) == (1, 1, False)
    known = ALIAS_NAMES | {e.name for e in AWS_NODE_ONLY}
    assert [n.name for n in s.alias_notes] == [n for n in _in_note_order() if n in AWS_NODE_DEFAULT_ENV]
    assert {n.name for n in s.alias_notes} == known & set(AWS_NODE_DEFAULT_ENV)
    assert sorted(n.name for n in s.alias_notes if n.warning) == [
        "AWS_VPC_K8S_CNI_LOGLEVEL",
        "AWS_VPC_K8S_CNI_LOG_FILE",
        "AWS_VPC_K8S_PLUGIN_LOG_FILE",
        "AWS_VPC_K8S_PLUGIN_LOG_LEVEL",
        "ENABLE_SUBNET_DISCOVERY",
    ]


def _in_note_order() -> list[str]:
    """Alias notes come in VARIABLES' order (then ALIASES'), then AWS_NODE_ONLY's."""
    order = [a.name for v in VARIABLES for a in ALIASES if a.variable == v.name]
    return order + [e.name for e in AWS_NODE_ONLY]


# --- the start-up log lines ---------------------------------------------------------------------------

LOGGED = {
    "AWS_VPC_K8S_CNI_EXTERNALSNAT": "true",
    "DISABLE_METRICS": "false",
    "AWS_VPC_K8S_CNI_RANDOMIZESNAT": "hashrandom",
    "VPC_ID": "vpc-1",
}


def expected_lines() -> list[dict[str, Any]]:
    snat = "AWS_VPC_K8S_CNI_RANDOMIZESNAT"
    return [
        {"event": "aws_node_variable_alias", "log_level": "info", "alias": "DISABLE_METRICS",
         "variable": "METRICS_BIND", "value": "false", "outcome": "default"},
        {"event": "aws_node_variable_alias", "log_level": "info", "alias": "AWS_VPC_K8S_CNI_EXTERNALSNAT",
         "variable": "EXTERNAL_SNAT", "value": "true", "outcome": "applied"},
        {"event": "aws_node_variable_ignored", "log_level": "warning", "alias": snat, "value": "hashrandom",
         "reason": next(e.why for e in AWS_NODE_ONLY if e.name == snat)},
        {"event": "aws_node_variable_inert", "log_level": "info", "alias": "VPC_ID", "value": "vpc-1",
         "reason": "the VPC is read from the instance metadata."},
    ]  # fmt: skip


def test_each_aws_node_variable_is_one_log_line() -> None:
    s = settings(**LOGGED)
    with capture_logs() as logs:
        for note in s.alias_notes:
            note.log(structlog.get_logger("test"))
    assert logs == expected_lines()


def test_the_daemon_logs_the_lines_before_anything_else() -> None:
    s = dataclasses.replace(settings(**LOGGED), datapath="windows", hcn_backend="computenetwork")
    with capture_logs() as logs, pytest.raises(ConfigError, match="HCN_BACKEND"):  # stops at the datapath
        asyncio.run(Daemon(s).run())
    assert logs == expected_lines()


# --- docs/migrate-from-aws-vpc-cni.md ------------------------------------------------------------------


def test_the_migration_doc_carries_the_generated_tables() -> None:
    doc = DOC.read_text()
    stale = "docs/migrate-from-aws-vpc-cni.md is stale: paste ipamd.config's {}()"
    assert alias_markdown_table() in doc, stale.format("alias_markdown_table")
    assert aws_node_only_markdown_table() in doc, stale.format("aws_node_only_markdown_table")


def test_the_three_kinds_of_names_do_not_overlap() -> None:
    ours = {v.name for v in VARIABLES}
    only = {e.name for e in AWS_NODE_ONLY}
    same = {name for name, _ in AWS_NODE_SAME_NAMES}
    assert same <= ours
    assert {a.variable for a in ALIASES} <= ours
    assert not ALIAS_NAMES & ours and not only & ours and not ALIAS_NAMES & only
    assert len(ALIASES) == len(ALIAS_NAMES) and len(AWS_NODE_ONLY) == len(only)


# The awscni_* metrics /work/shared/reference/aws-vpc-cni.md lists (aws-vpc-cni v1.23.1).
REFERENCE_METRICS = (
    "awscni_add_ip_req_count", "awscni_del_ip_req_count", "awscni_no_available_ip_addresses",
    "awscni_force_removed_enis", "awscni_force_removed_ips", "awscni_ipamd_error_count",
    "awscni_reconcile_count", "awscni_aws_api_error_count", "awscni_ec2api_req_count", "awscni_eni_max",
    "awscni_ip_max", "awscni_eni_allocated", "awscni_total_ip_addresses", "awscni_assigned_ip_addresses",
    "awscni_total_ipv4_prefixes", "awscni_ipamd_action_inprogress", "awscni_assigned_ip_per_cidr",
    "awscni_aws_api_latency_ms", "awscni_ipamd_startup_duration_seconds",
    "awscni_ipamd_node_initialization_duration_seconds", "awscni_build_info",
)  # fmt: skip
ROW = re.compile(r"^\| `(awscni_\w+)(?:\{[^}]*\})?` \| (.*?) \| ?(.*?) ?\|$", re.MULTILINE)
SELECTOR = re.compile(r"(cloudcni_\w+)(?:\{([^}]*)\})?")


def metrics_rows() -> list[tuple[str, str, str]]:
    section = DOC.read_text().split("\n## Metrics\n", 1)[1].split("\n## ", 1)[0]
    return ROW.findall(section)


def exported() -> dict[str, set[str]]:
    """Family and sample names of every series ``Metrics`` exports -> their label names."""
    metrics = Metrics()
    stats = PoolStats(total=3, assigned=1, available=1, cooling=1, quarantined=0, interfaces=1)
    metrics.watch_pool(lambda: stats, lambda: 29)
    for collector in vars(metrics).values():  # a labelled metric has no series until a child exists
        if isinstance(collector, MetricWrapperBase) and collector._labelnames:
            collector.labels(*("x" for _ in collector._labelnames))
    series: dict[str, set[str]] = {}
    for family in metrics.registry.collect():
        for sample in family.samples:
            labels = set(sample.labels) - {"le"}
            series.setdefault(sample.name, set()).update(labels)
            series.setdefault(family.name, set()).update(labels)
    return series


def test_the_metrics_table_covers_the_reference_and_names_only_exported_metrics() -> None:
    rows = metrics_rows()
    theirs = [r[0] for r in rows]
    assert len(theirs) == len(set(theirs))
    assert set(REFERENCE_METRICS) <= set(theirs)
    series = exported()
    named = 0
    for name, ours, notes in rows:
        if ours == "none":
            assert notes, f"{name}: say why there is none"
            continue
        for metric, selector in SELECTOR.findall(ours + " " + notes):
            named += 1
            assert metric in series, f"{name}: {metric} is not exported by ipamd.metrics.Metrics"
            for label in re.findall(r"(\w+)\s*=~?", selector):
                assert label in series[metric], f"{name}: {metric} has no label {label}"
    assert named >= 15
