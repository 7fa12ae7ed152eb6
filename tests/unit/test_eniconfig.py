"""ipamd.eniconfig: the ENIConfig name a Node uses, ENIConfig objects into placements, and the Azure
pod-subnet label into a subnet resource id. Pure functions against tables.

The lookup order is aws-vpc-cni's pkg/eniconfig/eniconfig.go ``GetNodeSpecificENIConfigName``.
"""

from __future__ import annotations

from typing import Any

import pytest

from ipamd.cloud.base import Placement
from ipamd.eniconfig import azure_subnet_from_label, eniconfig_name, parse_eniconfig

DEF = "k8s.amazonaws.com/eniConfig"
EXTERNAL = "vpc.amazonaws.com/externalEniConfig"
CUSTOM_LABEL = "topology.kubernetes.io/zone"
VNET = (
    "/subscriptions/5f0c7d3e-8a41-4b2f-9c6e-1d2a3b4c5e6f/resourceGroups/rg-net/providers/"
    "Microsoft.Network/virtualNetworks/vnet"
)


@pytest.mark.parametrize(
    ("labels", "annotations", "label_key", "expected"),
    [
        pytest.param({}, {}, DEF, "default", id="nothing-default"),
        pytest.param({DEF: "from-label"}, {}, DEF, "from-label", id="label"),
        pytest.param({}, {DEF: "from-annotation"}, DEF, "from-annotation", id="annotation"),
        pytest.param(
            {DEF: "from-label"}, {DEF: "from-annotation"}, DEF, "from-annotation", id="annotation-beats-label"
        ),
        pytest.param(
            {EXTERNAL: "external", DEF: "from-label"},
            {DEF: "from-annotation"},
            DEF,
            "external",
            id="external-first",
        ),
        pytest.param(
            {CUSTOM_LABEL: "us-east-1a", DEF: "x"}, {}, CUSTOM_LABEL, "us-east-1a", id="ENI_CONFIG_LABEL_DEF"
        ),
        pytest.param({DEF: "x"}, {}, CUSTOM_LABEL, "default", id="other-label-key-ignored"),
        pytest.param({DEF: ""}, {}, DEF, "", id="present-but-empty-wins-as-in-go"),
        pytest.param({EXTERNAL: "ext"}, {}, CUSTOM_LABEL, "ext", id="external-whatever-the-keys"),
    ],
)
def test_eniconfig_name_lookup_order(
    labels: dict[str, str], annotations: dict[str, str], label_key: str, expected: str
) -> None:
    assert eniconfig_name(labels, annotations, label_key=label_key, annotation_key=DEF) == expected


def test_annotation_key_is_configurable() -> None:
    annotations = {"example.com/eni": "a", DEF: "b"}
    assert eniconfig_name({}, annotations, label_key=DEF, annotation_key="example.com/eni") == "a"


def eniconfig(spec: Any, name: str = "us-east-1a") -> dict[str, Any]:
    return {
        "apiVersion": "crd.k8s.amazonaws.com/v1alpha1",
        "kind": "ENIConfig",
        "metadata": {"name": name, "resourceVersion": "42"},
        "spec": spec,
    }


@pytest.mark.parametrize(
    ("obj", "expected"),
    [
        pytest.param(
            eniconfig({"subnet": "subnet-0123456789abcdef0", "securityGroups": ["sg-0a", "sg-0b"]}),
            Placement("subnet-0123456789abcdef0", ("sg-0a", "sg-0b"), "ENIConfig us-east-1a"),
            id="subnet-and-groups",
        ),
        pytest.param(
            eniconfig({"subnet": "subnet-0abc"}),
            Placement("subnet-0abc", None, "ENIConfig us-east-1a"),
            id="no-groups-means-the-primary-enis",
        ),
        pytest.param(
            eniconfig({"subnet": "subnet-0abc", "securityGroups": []}),
            Placement("subnet-0abc", None, "ENIConfig us-east-1a"),
            id="empty-groups-means-the-primary-enis",
        ),
        pytest.param(
            eniconfig({"subnet": "subnet-0abc", "securityGroups": ["sg-1", "sg-2", "sg-1"]}),
            Placement("subnet-0abc", ("sg-1", "sg-2"), "ENIConfig us-east-1a"),
            id="a-group-twice-is-one",
        ),
        pytest.param(
            {"metadata": {"name": "default"}, "spec": {"subnet": "subnet-1"}},
            Placement("subnet-1", None, "ENIConfig default"),
            id="kind-absent",
        ),
        pytest.param(
            eniconfig({"subnet": "subnet-1", "securityGroups": [f"sg-{n:x}" for n in range(16)]}),
            Placement("subnet-1", tuple(f"sg-{n:x}" for n in range(16)), "ENIConfig us-east-1a"),
            id="sixteen-groups",
        ),
    ],
)
def test_parse_eniconfig(obj: dict[str, Any], expected: Placement) -> None:
    assert parse_eniconfig(obj) == expected


@pytest.mark.parametrize(
    ("obj", "message"),
    [
        pytest.param(eniconfig(None), r"^ENIConfig us-east-1a: spec is missing", id="no-spec"),
        pytest.param(
            eniconfig({}), r"^ENIConfig us-east-1a: spec.subnet None .*subnet-<hex>", id="no-subnet"
        ),
        pytest.param(
            eniconfig({"subnet": "sg-0abc"}), r"spec.subnet 'sg-0abc' .*subnet-<hex>", id="not-a-subnet"
        ),
        pytest.param(eniconfig({"subnet": "subnet-XYZ"}), r"spec.subnet 'subnet-XYZ'", id="not-hex"),
        pytest.param(eniconfig({"subnet": "subnet-"}), r"spec.subnet 'subnet-'", id="empty-hex"),
        pytest.param(eniconfig({"subnet": 7}), r"spec.subnet 7", id="not-a-string"),
        pytest.param(
            eniconfig({"subnet": "subnet-1", "securityGroups": "sg-1"}),
            r"spec.securityGroups is str: allowed a list of sg-<hex>",
            id="groups-not-a-list",
        ),
        pytest.param(
            eniconfig({"subnet": "subnet-1", "securityGroups": ["sg-1", "subnet-2"]}),
            r"spec.securityGroups has 'subnet-2': allowed sg-<hex>",
            id="bad-group",
        ),
        pytest.param(
            eniconfig({"subnet": "subnet-1", "securityGroups": [f"sg-{n:x}" for n in range(17)]}),
            r"spec.securityGroups has 17 groups: allowed at most 16",
            id="seventeen-groups",
        ),
        pytest.param(
            {"kind": "Node", "metadata": {"name": "n"}, "spec": {"subnet": "subnet-1"}},
            r"^ENIConfig n: kind is 'Node'",
            id="wrong-kind",
        ),
        pytest.param(
            {"spec": {"subnet": "x"}}, r"^ENIConfig \(no metadata.name\): spec.subnet", id="no-name"
        ),
    ],
)
def test_parse_eniconfig_refuses(obj: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_eniconfig(obj)


@pytest.mark.parametrize(
    ("value", "vnet", "expected"),
    [
        ("pods", VNET, VNET + "/subnets/pods"),
        ("pod-subnet_1.a", VNET, VNET + "/subnets/pod-subnet_1.a"),
        ("x", VNET + "/", VNET + "/subnets/x"),
        ("a" * 63, VNET, VNET + "/subnets/" + "a" * 63),
        ("pods", VNET.lower(), VNET.lower() + "/subnets/pods"),  # ARM ids are case-insensitive
    ],
)
def test_azure_subnet_from_label(value: str, vnet: str, expected: str) -> None:
    assert azure_subnet_from_label(value, vnet) == expected


@pytest.mark.parametrize(
    ("value", "vnet", "message"),
    [
        ("", VNET, "subnet name '' is not valid"),
        ("-pods", VNET, "starting with a letter or digit"),
        ("pods-", VNET, "ending with a letter, digit or '_'"),
        ("po/ds", VNET, "is not valid"),
        ("a" * 81, VNET, "1-80"),
        ("pods", VNET + "/subnets/nodes", "is not a VNet resource id"),
        ("pods", "vnet", "is not a VNet resource id"),
    ],
)
def test_azure_subnet_from_label_refuses(value: str, vnet: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        azure_subnet_from_label(value, vnet)
