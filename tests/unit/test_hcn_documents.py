"""ipamd.datapath.windows.documents: the HCN documents, field by field, against hcsshim's structs
(tests/fakes/hcn_schema.py); the schema checker shown to fail where it should; the validation tables;
and hypothesis properties over random valid inputs."""

from __future__ import annotations

import copy
import ipaddress
import json
from collections.abc import Callable, Mapping
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ipamd.datapath.windows import documents
from ipamd.datapath.windows.documents import (
    attach_request,
    detach_request,
    endpoint_doc,
    endpoint_name,
    is_guid,
    namespace_resources,
    network_doc,
    network_name,
    parse_endpoint_name,
    query,
)
from tests.fakes import hcn_schema
from tests.fakes.hcn_schema import check, check_struct, check_trace_line

NETWORK_ID = "3f2504e0-4f89-11d3-9a0c-0305e82c3301"
ENDPOINT_ID = "B7C1E0A4-2D3F-4E5A-8B6C-7D8E9F0A1B2C"
CONTAINER_ID = "4a1f0c2e9b7d" * 5 + "abcd"
V2 = {"Major": 2, "Minor": 0}

NETWORK_ARGS: dict[str, Any] = {
    "name": "cloud-cni-eni-0a1b2c3d4e5f60718",
    "subnet_cidr": "10.0.32.0/19",
    "gateway": "10.0.32.1",
    "adapter_name": "Ethernet 2",
}
ENDPOINT_ARGS: dict[str, Any] = {
    "name": f"cloud-cni-{CONTAINER_ID}_eth0",
    "network_id": NETWORK_ID,
    "ip": "10.0.33.17",
    "prefix_length": 19,
    "gateway": "10.0.32.1",
    "node_ip": "10.0.32.10",
    "outbound_nat_exceptions": ["10.0.0.0/16", "172.20.0.0/16"],
    "dns_servers": ["172.20.0.10"],
    "dns_search": ["default.svc.cluster.local", "svc.cluster.local", "cluster.local"],
}


def _network(**overrides: Any) -> dict[str, Any]:
    return network_doc(**{**NETWORK_ARGS, **overrides})


def _endpoint(**overrides: Any) -> dict[str, Any]:
    return endpoint_doc(**{**ENDPOINT_ARGS, **overrides})


def _round_trips(doc: Mapping[str, Any]) -> bool:
    return bool(json.loads(json.dumps(doc)) == doc)


# --- the builders, field by field ----------------------------------------------------------------------


def test_constants_are_hcsshims() -> None:
    assert documents.SCHEMA_VERSION == V2  # hcn.go V2SchemaVersion()
    assert documents.FLAG_ENABLE_NON_PERSISTENT == 8  # hcnnetwork.go NetworkFlags EnableNonPersistent
    assert documents.NETWORK_PREFIX == documents.ENDPOINT_PREFIX == "cloud-cni-"


def test_network_doc_field_by_field() -> None:
    doc = _network()
    assert check("network", doc) == []
    assert doc == {
        "Name": "cloud-cni-eni-0a1b2c3d4e5f60718",
        "Type": "L2Bridge",
        "Policies": [{"Type": "NetAdapterName", "Settings": {"NetworkAdapterName": "Ethernet 2"}}],
        "Ipams": [
            {
                "Type": "Static",
                "Subnets": [
                    {
                        "IpAddressPrefix": "10.0.32.0/19",
                        "Routes": [{"NextHop": "10.0.32.1", "DestinationPrefix": "0.0.0.0/0"}],
                    }
                ],
            }
        ],
        "Flags": 8,
        "SchemaVersion": {"Major": 2, "Minor": 0},
    }


def test_endpoint_doc_field_by_field() -> None:
    doc = _endpoint()
    assert check("endpoint", doc) == []
    assert doc == {
        "Name": f"cloud-cni-{CONTAINER_ID}_eth0",
        "HostComputeNetwork": NETWORK_ID,
        "Policies": [
            {"Type": "OutBoundNAT", "Settings": {"Exceptions": ["10.0.0.0/16", "172.20.0.0/16"]}},
            {"Type": "SDNRoute", "Settings": {"DestinationPrefix": "10.0.32.10/32", "NeedEncap": True}},
        ],
        "IpConfigurations": [{"IpAddress": "10.0.33.17", "PrefixLength": 19}],
        "Dns": {
            "Search": ["default.svc.cluster.local", "svc.cluster.local", "cluster.local"],
            "ServerList": ["172.20.0.10"],
        },
        "Routes": [{"NextHop": "10.0.32.1", "DestinationPrefix": "0.0.0.0/0"}],
        "SchemaVersion": {"Major": 2, "Minor": 0},
    }
    # HCN treats HostComputeNamespace as read-only: the endpoint joins the namespace by attach_request.
    assert "HostComputeNamespace" not in doc


def test_endpoint_without_outbound_nat_for_external_snat() -> None:
    doc = _endpoint(outbound_nat_exceptions=None)
    assert check("endpoint", doc) == []
    assert [policy["Type"] for policy in doc["Policies"]] == ["SDNRoute"]


def test_endpoint_with_no_exceptions_still_nats_everything() -> None:
    doc = _endpoint(outbound_nat_exceptions=[])
    assert check("endpoint", doc) == []
    # Go marshals OutboundNatPolicySetting{} as {}: Exceptions is omitempty.
    assert doc["Policies"][0] == {"Type": "OutBoundNAT", "Settings": {}}


def test_endpoint_exceptions_deduplicated_in_order_and_canonical() -> None:
    exceptions = ["172.20.0.0/16", "10.0.0.0/16", "172.20.0.0/16", "10.0.0.0/16", "192.168.0.0/24"]
    doc = _endpoint(outbound_nat_exceptions=tuple(exceptions))
    assert doc["Policies"][0]["Settings"]["Exceptions"] == ["172.20.0.0/16", "10.0.0.0/16", "192.168.0.0/24"]


@pytest.mark.parametrize(
    ("servers", "search", "dns"),
    [
        pytest.param((), (), None, id="none-no-Dns-key"),
        pytest.param(["172.20.0.10"], (), {"ServerList": ["172.20.0.10"]}, id="servers-only"),
        pytest.param((), ["cluster.local"], {"Search": ["cluster.local"]}, id="search-only"),
        pytest.param(
            ["172.20.0.10", "172.20.0.10", "fd00::a"],
            ["a.local", "a.local"],
            {"Search": ["a.local"], "ServerList": ["172.20.0.10", "fd00::a"]},
            id="duplicates-dropped",
        ),
    ],
)
def test_endpoint_dns_only_when_given(
    servers: list[str], search: list[str], dns: dict[str, list[str]] | None
) -> None:
    doc = _endpoint(dns_servers=servers, dns_search=search)
    assert check("endpoint", doc) == []
    assert doc.get("Dns") == dns


def test_endpoint_prefix_length_zero_is_left_out_as_go_omitempty_does() -> None:
    doc = _endpoint(prefix_length=0)
    assert check("endpoint", doc) == []
    assert doc["IpConfigurations"] == [{"IpAddress": "10.0.33.17"}]


def test_endpoint_accepts_an_uppercase_network_guid_as_hcn_returns_it() -> None:
    doc = _endpoint(network_id=NETWORK_ID.upper())
    assert doc["HostComputeNetwork"] == NETWORK_ID.upper()


@pytest.mark.parametrize(
    ("build", "request_type"),
    [pytest.param(attach_request, "Add", id="attach"), pytest.param(detach_request, "Remove", id="detach")],
)
def test_namespace_requests_are_what_add_and_remove_namespace_endpoint_send(
    build: Callable[[str], dict[str, Any]], request_type: str
) -> None:
    doc = build(ENDPOINT_ID)
    assert check("namespace_request", doc) == []
    # Settings is a json.RawMessage of map[string]string{"EndpointId": id}: an object, not a string.
    assert doc == {
        "ResourceType": "Endpoint",
        "RequestType": request_type,
        "Settings": {"EndpointId": ENDPOINT_ID},
    }


def test_query_without_filter_is_hcsshims_default_query() -> None:
    doc = query()
    assert check("query", doc) == []
    # defaultQuery() sets Flags HostComputeQueryFlagsNone (0), which `omitempty` leaves out.
    assert doc == {"SchemaVersion": {"Major": 2, "Minor": 0}}


def test_query_filter_is_a_json_string_as_go_marshals_the_map() -> None:
    doc = query({"Name": "cloud-cni-eni-1", "ID": NETWORK_ID})
    assert check("query", doc) == []
    assert isinstance(doc["Filter"], str)
    assert doc["Filter"] == '{"ID":"' + NETWORK_ID + '","Name":"cloud-cni-eni-1"}'  # sorted keys, compact


def test_each_document_is_a_fresh_object() -> None:
    first = _network()
    first["SchemaVersion"]["Major"] = 1
    assert _network()["SchemaVersion"] == V2
    assert documents.SCHEMA_VERSION == V2


# --- names -------------------------------------------------------------------------------------------


def test_names() -> None:
    assert network_name("eni-0a1b2c3d4e5f60718") == "cloud-cni-eni-0a1b2c3d4e5f60718"
    assert endpoint_name(CONTAINER_ID, "eth0") == f"cloud-cni-{CONTAINER_ID}_eth0"
    assert parse_endpoint_name(f"cloud-cni-{CONTAINER_ID}_eth0") == (CONTAINER_ID, "eth0")


@pytest.mark.parametrize(
    ("name", "parsed"),
    [
        pytest.param("cloud-cni-abc_eth0", ("abc", "eth0"), id="plain"),
        pytest.param("cloud-cni-my_pod_1_eth0", ("my_pod_1", "eth0"), id="ifname-after-last-underscore"),
        pytest.param("cloud-cni-a.b-c_net1", ("a.b-c", "net1"), id="dots-dashes"),
        pytest.param("cloud-cni-abc", None, id="no-underscore"),
        pytest.param("cloud-cni-abc_", None, id="empty-ifname"),
        pytest.param("cloud-cni-_eth0", None, id="empty-container-id"),
        pytest.param("cloud-cni--abc_eth0", None, id="container-id-starts-with-dash"),
        pytest.param("cloud-cni-a/b_eth0", None, id="slash-in-container-id"),
        pytest.param("cloud-cni-abc_eth/0", None, id="slash-in-ifname"),
        pytest.param("Ethernet", None, id="not-ours"),
        pytest.param("calico-abc_eth0", None, id="other-plugin"),
        pytest.param("CLOUD-CNI-abc_eth0", None, id="prefix-case-matters"),
        pytest.param("", None, id="empty"),
    ],
)
def test_parse_endpoint_name(name: str, parsed: tuple[str, str] | None) -> None:
    assert parse_endpoint_name(name) == parsed


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param(NETWORK_ID, True, id="lower"),
        pytest.param(NETWORK_ID.upper(), True, id="upper"),
        pytest.param("3F2504e0-4f89-11D3-9a0c-0305E82C3301", True, id="mixed"),
        pytest.param("{" + NETWORK_ID + "}", False, id="braces"),
        pytest.param(NETWORK_ID.replace("-", ""), False, id="no-dashes"),
        pytest.param(NETWORK_ID[:-1], False, id="short"),
        pytest.param(NETWORK_ID + "0", False, id="long"),
        pytest.param(NETWORK_ID.replace("3f", "3g", 1), False, id="not-hex"),
        pytest.param(NETWORK_ID + "\n", False, id="trailing-newline"),
        pytest.param("/var/run/netns/cni-1234", False, id="linux-netns-path"),
        pytest.param("", False, id="empty"),
        pytest.param(None, False, id="none"),
    ],
)
def test_is_guid(text: object, expected: bool) -> None:
    assert is_guid(text) is expected


# --- namespace properties --------------------------------------------------------------------------------

NAMESPACE = {
    "ID": "0e3e6a0c-46b1-4c3a-9d4f-0a8b7c6d5e4f",
    "NamespaceId": 12,
    "Type": "Host",
    "Resources": [
        {"Type": "Container", "Data": {"ID": "c0ffee00-0000-4000-8000-000000000001"}},
        {"Type": "Endpoint", "Data": {"ID": ENDPOINT_ID}},
        {"Type": "Endpoint", "Data": {"ID": NETWORK_ID}},
    ],
    "SchemaVersion": {"Major": 2, "Minor": 0},
}


def test_namespace_resources_lists_attached_endpoints() -> None:
    assert check_struct("HostComputeNamespace", NAMESPACE) == []
    assert namespace_resources(NAMESPACE) == [ENDPOINT_ID, NETWORK_ID]


@pytest.mark.parametrize(
    ("doc", "ids"),
    [
        pytest.param({"ID": NETWORK_ID}, [], id="no-resources"),
        pytest.param({"Resources": []}, [], id="empty"),
        pytest.param({"Resources": None}, [], id="null"),
        pytest.param({"Resources": [{"Type": "Container", "Data": {"ID": "x"}}]}, [], id="containers-only"),
        # Go's json.Unmarshal matches field names case-insensitively, as hcsshim reads them.
        pytest.param(
            {"resources": [{"type": "Endpoint", "data": {"id": ENDPOINT_ID}}]}, [ENDPOINT_ID], id="casefold"
        ),
    ],
)
def test_namespace_resources_cases(doc: dict[str, Any], ids: list[str]) -> None:
    assert namespace_resources(doc) == ids


@pytest.mark.parametrize(
    "doc",
    [
        pytest.param({"Resources": {"Type": "Endpoint"}}, id="resources-not-a-list"),
        pytest.param({"Resources": ["Endpoint"]}, id="resource-not-an-object"),
        pytest.param({"Resources": [{"Type": "Endpoint"}]}, id="no-data"),
        pytest.param({"Resources": [{"Type": "Endpoint", "Data": {}}]}, id="no-id"),
        pytest.param({"Resources": [{"Type": "Endpoint", "Data": {"ID": 7}}]}, id="id-not-a-string"),
        pytest.param(
            {"Resources": [{"Type": "Endpoint", "Data": json.dumps({"ID": "x"})}]}, id="data-quoted"
        ),
    ],
)
def test_namespace_resources_refuses_a_malformed_endpoint_entry(doc: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match=r"^namespace_doc:"):
        namespace_resources(doc)


# --- the schema checker can fail -------------------------------------------------------------------------


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    """A mutation setting ``value`` at a dotted path (list indexes as numbers)."""

    def mutate(doc: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        target: Any = doc
        for part in parents:
            target = target[int(part)] if isinstance(target, list) else target[part]
        target[last] = value

    return mutate


def _rename(path: str, new: str) -> Callable[[dict[str, Any]], None]:
    def mutate(doc: dict[str, Any]) -> None:
        *parents, old = path.split(".")
        target: Any = doc
        for part in parents:
            target = target[int(part)] if isinstance(target, list) else target[part]
        target[new] = target.pop(old)

    return mutate


def _delete(path: str) -> Callable[[dict[str, Any]], None]:
    def mutate(doc: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        target: Any = doc
        for part in parents:
            target = target[int(part)] if isinstance(target, list) else target[part]
        del target[last]

    return mutate


BUILT: dict[str, Callable[[], dict[str, Any]]] = {
    "network": _network,
    "endpoint": _endpoint,
    "namespace_request": lambda: attach_request(ENDPOINT_ID),
    "query": lambda: query({"Name": "cloud-cni-eni-1"}),
}


@pytest.mark.parametrize(
    ("kind", "mutate", "expected"),
    [
        # miscased keys, each named with hcsshim's spelling
        ("endpoint", _rename("IpConfigurations.0.IpAddress", "IPAddress"), "miscased key 'IPAddress'"),
        ("endpoint", _rename("IpConfigurations", "Ipconfigurations"), "spells it 'IpConfigurations'"),
        ("endpoint", _rename("Dns.ServerList", "Serverlist"), "spells it 'ServerList'"),
        (
            "endpoint",
            _rename("HostComputeNetwork", "HostComputeNetworkId"),
            "unknown key 'HostComputeNetworkId'",
        ),
        (
            "network",
            _rename("Ipams.0.Subnets.0.IpAddressPrefix", "IPAddressPrefix"),
            "spells it 'IpAddressPrefix'",
        ),
        ("network", _rename("Name", "name"), "spells it 'Name'"),
        ("namespace_request", _rename("Settings.EndpointId", "EndpointID"), "spells it 'EndpointId'"),
        ("query", _rename("SchemaVersion.Major", "major"), "spells it 'Major'"),
        # unknown keys
        ("network", _set("NetworkAdapterName", "Ethernet 2"), "unknown key 'NetworkAdapterName'"),
        ("endpoint", _set("Routes.0.Gateway", "10.0.32.1"), "unknown key 'Gateway'"),
        (
            "endpoint",
            _set("Dns.Suffix", "cluster.local"),
            "unknown key 'Suffix'",
        ),  # hcsshim renamed it Domain
        # wrong JSON types
        ("endpoint", _set("IpConfigurations.0.PrefixLength", "19"), "expected an integer (uint8)"),
        ("endpoint", _set("IpConfigurations.0.PrefixLength", 256), "out of range for uint8"),
        ("endpoint", _set("IpConfigurations.0.PrefixLength", 19.0), "expected an integer (uint8)"),
        ("endpoint", _set("Policies.1.Settings.NeedEncap", "true"), "expected a boolean"),
        ("endpoint", _set("Policies.0.Settings.Exceptions", "10.0.0.0/16"), "expected an array ([]string)"),
        ("endpoint", _set("Dns.ServerList", "172.20.0.10"), "expected an array ([]string)"),
        ("endpoint", _set("IpConfigurations", {"IpAddress": "10.0.33.17"}), "expected an array ([]IpConfig)"),
        ("network", _set("Flags", "8"), "expected an integer (uint32)"),
        ("network", _set("Flags", -1), "out of range for uint32"),
        ("network", _set("Flags", True), "expected an integer (uint32)"),
        ("query", _set("Filter", {"Name": "x"}), "expected a string"),
        ("query", _set("Flags", "0"), "expected an integer (uint32)"),
        # enum values
        ("network", _set("Type", "l2bridge"), "'l2bridge' is miscased: hcsshim spells it 'L2Bridge'"),
        ("network", _set("Type", "Bridge"), "'Bridge' is not a NetworkType"),
        ("namespace_request", _set("RequestType", "add"), "hcsshim spells it 'Add'"),
        ("namespace_request", _set("ResourceType", "Endpoints"), "is not a NamespaceResourceType"),
        # unknown policy types
        ("endpoint", _set("Policies.1.Type", "Route"), "'Route' is not a EndpointPolicyType"),
        ("endpoint", _set("Policies.0.Type", "OutboundNAT"), "hcsshim spells it 'OutBoundNAT'"),
        ("network", _set("Policies.0.Type", "NetworkAdapterName"), "is not a NetworkPolicyType"),
        # Settings against the policy Type's settings struct
        ("endpoint", _set("Policies.1.Type", "OutBoundNAT"), "unknown key 'DestinationPrefix'"),
        (
            "endpoint",
            _set("Policies.0.Settings", {"ExceptionList": ["10.0.0.0/16"]}),
            "unknown key 'ExceptionList'",
        ),
        ("network", _set("Policies.0.Settings", {"AdapterName": "Ethernet 2"}), "unknown key 'AdapterName'"),
        (
            "endpoint",
            _set("Policies.1.Settings", json.dumps({"NeedEncap": True})),
            "a json.RawMessage is embedded",
        ),
        ("namespace_request", _set("Settings", json.dumps({"EndpointId": ENDPOINT_ID})), "not quoted"),
        ("namespace_request", _delete("Settings"), "missing Settings for ResourceType 'Endpoint'"),
        ("namespace_request", _set("Settings", {}), "missing key 'EndpointId'"),
        # keys hcsshim always writes; the schema version HCN reads
        ("endpoint", _delete("Policies.0.Type"), "missing key 'Type'"),
        ("query", _delete("SchemaVersion"), "missing key 'SchemaVersion'"),
        ("network", _delete("SchemaVersion"), "missing key 'SchemaVersion'"),
        ("endpoint", _set("SchemaVersion", {"Major": 1, "Minor": 0}), "is not {'Major': 2, 'Minor': 0}"),
        ("network", _set("SchemaVersion", {"Major": 2}), "missing key 'Minor'"),
    ],
    ids=lambda value: value if isinstance(value, str) else "",
)
def test_checker_catches(kind: str, mutate: Callable[[dict[str, Any]], None], expected: str) -> None:
    doc = copy.deepcopy(BUILT[kind]())
    assert check(kind, doc) == []
    mutate(doc)
    problems = check(kind, doc)
    assert any(expected in problem for problem in problems), problems


def test_checker_names_the_path_of_a_problem() -> None:
    doc = _endpoint()
    doc["IpConfigurations"][0]["IPAddress"] = doc["IpConfigurations"][0].pop("IpAddress")
    assert check("endpoint", doc) == [
        "HostComputeEndpoint.IpConfigurations[0]: miscased key 'IPAddress': "
        "hcsshim's IpConfig spells it 'IpAddress'"
    ]


def test_checker_refuses_a_document_that_is_not_an_object() -> None:
    assert check("network", [NETWORK_ARGS]) != []
    with pytest.raises(ValueError, match=r"^kind:"):
        check("namespace", {})


# --- trace lines -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "clean"),
    [
        pytest.param({"method": "create_network", "kind": "network", "doc": _network()}, True, id="network"),
        pytest.param(
            {"method": "create_endpoint", "kind": "endpoint", "doc": _endpoint()}, True, id="endpoint"
        ),
        pytest.param(
            {"method": "modify_namespace", "kind": "namespace", "doc": attach_request(ENDPOINT_ID)},
            True,
            id="namespace",
        ),
        pytest.param(
            {"method": "list_networks", "kind": "network", "doc": query()}, True, id="list-is-a-query"
        ),
        pytest.param({"method": "delete_endpoint", "kind": "endpoint", "doc": None}, True, id="no-doc"),
        pytest.param({"method": "delete_network", "kind": "network"}, True, id="doc-absent"),
        pytest.param(
            {"method": "create_endpoint", "kind": "endpoint", "doc": _network()}, False, id="wrong-kind"
        ),
        pytest.param({"method": "create_x", "kind": "loadbalancer", "doc": {}}, False, id="unknown-kind"),
        pytest.param(
            {"method": "modify_namespace", "kind": "namespace", "doc": {"ResourceType": "endpoint"}},
            False,
            id="bad-namespace-request",
        ),
        pytest.param(
            {"method": "list_endpoints", "kind": "endpoint", "doc": {"Filter": 1}}, False, id="bad-query"
        ),
        pytest.param(["not", "an", "object"], False, id="not-an-object"),
    ],
)
def test_check_trace_line(line: Any, clean: bool) -> None:
    assert (check_trace_line(json.loads(json.dumps(line))) == []) is clean


# --- the table itself ------------------------------------------------------------------------------------


def _referenced_types(type_name: str) -> str:
    return type_name.rstrip("!").removeprefix("[]")


def test_every_type_in_the_table_resolves() -> None:
    known = set(hcn_schema.STRUCTS) | set(hcn_schema.ENUMS) | {"any", "string", "bool"}
    known |= {"uint8", "uint16", "uint32", "uint64", "int"}
    for struct, fields in hcn_schema.STRUCTS.items():
        for key, type_name in fields.items():
            assert _referenced_types(type_name) in known, (struct, key, type_name)


def test_every_policy_type_has_a_settings_entry_and_every_entry_a_struct() -> None:
    tables = {
        "EndpointPolicyType": hcn_schema.ENDPOINT_POLICY_SETTINGS,
        "NetworkPolicyType": hcn_schema.NETWORK_POLICY_SETTINGS,
        "SubnetPolicyType": hcn_schema.SUBNET_POLICY_SETTINGS,
        "NamespaceResourceType": hcn_schema.NAMESPACE_REQUEST_SETTINGS,
    }
    for enum, table in tables.items():
        assert set(table) == hcn_schema.ENUMS[enum], enum
        assert all(target is None or target in hcn_schema.STRUCTS for target in table.values())
    for struct, (key, raw_key, _, _) in hcn_schema.DISCRIMINATED.items():
        assert {key, raw_key} <= set(hcn_schema.STRUCTS[struct]), struct


# --- validation: each error names its field --------------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"name": ""}, "name"),
        ({"name": None}, "name"),
        ({"subnet_cidr": "10.0.33.0/19"}, "subnet_cidr"),  # host bits set
        ({"subnet_cidr": "10.0.32.0"}, "subnet_cidr"),
        ({"subnet_cidr": "10.0.32.0/33"}, "subnet_cidr"),
        ({"subnet_cidr": "fd00::/64"}, "subnet_cidr"),
        ({"subnet_cidr": "subnet-0a1b2c"}, "subnet_cidr"),
        ({"subnet_cidr": 24}, "subnet_cidr"),
        ({"gateway": "10.0.64.1"}, "gateway"),
        ({"gateway": "10.0.32.0"}, "gateway"),
        ({"gateway": "10.0.63.255"}, "gateway"),
        ({"gateway": "fd00::1"}, "gateway"),
        ({"gateway": "10.0.32.1/19"}, "gateway"),
        ({"adapter_name": ""}, "adapter_name"),
        ({"adapter_name": "   "}, "adapter_name"),
    ],
    ids=lambda value: json.dumps(value) if isinstance(value, dict) else str(value),
)
def test_network_doc_validation(overrides: dict[str, Any], field: str) -> None:
    with pytest.raises(ValueError, match=rf"^{field}: "):
        _network(**overrides)


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"name": ""}, "name"),
        ({"network_id": "cloud-cni-eni-1"}, "network_id"),
        ({"network_id": "{" + NETWORK_ID + "}"}, "network_id"),
        ({"network_id": NETWORK_ID.replace("-", "")}, "network_id"),
        ({"network_id": ""}, "network_id"),
        ({"ip": "10.0.33"}, "ip"),
        ({"ip": "10.0.33.256"}, "ip"),
        ({"ip": "fd00::17"}, "ip"),
        ({"ip": "10.0.32.1"}, "ip"),  # the gateway's own address
        ({"prefix_length": -1}, "prefix_length"),
        ({"prefix_length": 33}, "prefix_length"),
        ({"prefix_length": "19"}, "prefix_length"),
        ({"prefix_length": 19.0}, "prefix_length"),
        ({"prefix_length": True}, "prefix_length"),
        ({"gateway": "10.0.64.1"}, "gateway"),  # outside 10.0.32.0/19
        ({"prefix_length": 24}, "gateway"),  # 10.0.33.0/24 does not hold 10.0.32.1
        ({"gateway": "gw"}, "gateway"),
        ({"node_ip": ""}, "node_ip"),
        ({"node_ip": "fd00::10"}, "node_ip"),
        ({"outbound_nat_exceptions": "10.0.0.0/16"}, "outbound_nat_exceptions"),  # a string, not a list
        ({"outbound_nat_exceptions": ["10.0.0.5/16"]}, "outbound_nat_exceptions"),
        ({"outbound_nat_exceptions": ["10.0.0.0"]}, "outbound_nat_exceptions"),
        ({"outbound_nat_exceptions": ["fd00::/8"]}, "outbound_nat_exceptions"),
        ({"outbound_nat_exceptions": [None]}, "outbound_nat_exceptions"),
        ({"dns_servers": "172.20.0.10"}, "dns_servers"),
        ({"dns_servers": ["172.20.0.300"]}, "dns_servers"),
        ({"dns_servers": [""]}, "dns_servers"),
        ({"dns_search": "cluster.local"}, "dns_search"),
        ({"dns_search": ["cluster local"]}, "dns_search"),
        ({"dns_search": ["-cluster.local"]}, "dns_search"),
        ({"dns_search": ["cluster..local"]}, "dns_search"),
        ({"dns_search": [""]}, "dns_search"),
        ({"dns_search": ["a" * 64 + ".local"]}, "dns_search"),
    ],
    ids=lambda value: json.dumps(value) if isinstance(value, dict) else str(value),
)
def test_endpoint_doc_validation(overrides: dict[str, Any], field: str) -> None:
    with pytest.raises(ValueError, match=rf"^{field}: "):
        _endpoint(**overrides)


@pytest.mark.parametrize(
    ("call", "field"),
    [
        pytest.param(lambda: network_name(""), "interface_id", id="network_name-empty"),
        pytest.param(lambda: network_name(" eni-1"), "interface_id", id="network_name-spaces"),
        pytest.param(lambda: endpoint_name("", "eth0"), "container_id", id="container_id-empty"),
        pytest.param(lambda: endpoint_name("-abc", "eth0"), "container_id", id="container_id-dash-first"),
        pytest.param(lambda: endpoint_name("a/b", "eth0"), "container_id", id="container_id-slash"),
        pytest.param(lambda: endpoint_name("a b", "eth0"), "container_id", id="container_id-space"),
        pytest.param(lambda: endpoint_name("abc\n", "eth0"), "container_id", id="container_id-newline"),
        pytest.param(lambda: endpoint_name("abc", ""), "ifname", id="ifname-empty"),
        pytest.param(lambda: endpoint_name("abc", "eth/0"), "ifname", id="ifname-slash"),
        pytest.param(lambda: endpoint_name("abc", "eth_0"), "ifname", id="ifname-underscore"),
        pytest.param(lambda: attach_request("not-a-guid"), "endpoint_id", id="attach"),
        pytest.param(lambda: detach_request("{" + ENDPOINT_ID + "}"), "endpoint_id", id="detach"),
        pytest.param(lambda: query({"Name": 1}), "filter", id="filter-value"),  # type: ignore[dict-item]
        pytest.param(lambda: namespace_resources([]), "namespace_doc", id="namespace-doc"),  # type: ignore[arg-type]
    ],
)
def test_name_and_request_validation(call: Callable[[], object], field: str) -> None:
    with pytest.raises(ValueError, match=rf"^{field}: "):
        call()


# --- properties ------------------------------------------------------------------------------------------

_container_ids = st.from_regex(r"[a-zA-Z0-9][a-zA-Z0-9_.\-]{0,80}", fullmatch=True)
_ifnames = st.text(min_size=1, max_size=20).filter(lambda name: "/" not in name and "_" not in name)
_guids = st.tuples(st.uuids(), st.booleans()).map(
    lambda pair: str(pair[0]).upper() if pair[1] else str(pair[0])
)
_label = st.from_regex(r"[a-z0-9]([a-z0-9-]{0,20}[a-z0-9])?", fullmatch=True)
_domains = st.lists(_label, min_size=1, max_size=4).map(".".join)
_cidrs = st.builds(
    lambda address, prefix: str(ipaddress.IPv4Network((address, prefix), strict=False)),
    st.ip_addresses(v=4),
    st.integers(0, 32),
)


@st.composite
def _subnets(draw: st.DrawFn) -> tuple[ipaddress.IPv4Network, ipaddress.IPv4Address]:
    """A subnet and a gateway on it that is neither its network nor its broadcast address."""
    subnet = ipaddress.IPv4Network((draw(st.ip_addresses(v=4)), draw(st.integers(0, 30))), strict=False)
    return subnet, subnet.network_address + draw(st.integers(1, subnet.num_addresses - 2))


@st.composite
def _endpoint_args(draw: st.DrawFn) -> dict[str, Any]:
    prefix = draw(st.integers(0, 31))
    on_link = ipaddress.IPv4Network((draw(st.ip_addresses(v=4)), prefix), strict=False)
    ip_at, gateway_at = draw(
        st.lists(st.integers(0, on_link.num_addresses - 1), min_size=2, max_size=2, unique=True)
    )
    return {
        "name": endpoint_name(draw(_container_ids), draw(_ifnames)),
        "network_id": draw(_guids),
        "ip": str(on_link.network_address + ip_at),
        "prefix_length": prefix,
        "gateway": str(on_link.network_address + gateway_at),
        "node_ip": str(draw(st.ip_addresses(v=4))),
        "outbound_nat_exceptions": draw(st.none() | st.lists(_cidrs, max_size=6)),
        "dns_servers": draw(st.lists(st.ip_addresses().map(str), max_size=3)),
        "dns_search": draw(st.lists(_domains, max_size=6)),
    }


@settings(max_examples=200, deadline=None)
@given(
    subnet=_subnets(),
    adapter=st.text(min_size=1).filter(str.strip),
    interface=st.text(min_size=1).filter(lambda t: t == t.strip()),
)
def test_any_valid_network_doc_checks_clean_and_round_trips(
    subnet: tuple[ipaddress.IPv4Network, ipaddress.IPv4Address], adapter: str, interface: str
) -> None:
    network, gateway = subnet
    doc = network_doc(
        name=network_name(interface), subnet_cidr=str(network), gateway=str(gateway), adapter_name=adapter
    )
    assert check("network", doc) == []
    assert _round_trips(doc)
    assert doc["Ipams"][0]["Subnets"][0]["IpAddressPrefix"] == str(network)
    assert doc["Policies"][0]["Settings"]["NetworkAdapterName"] == adapter


@settings(max_examples=300, deadline=None)
@given(args=_endpoint_args())
def test_any_valid_endpoint_doc_checks_clean_and_round_trips(args: dict[str, Any]) -> None:
    doc = endpoint_doc(**args)
    assert check("endpoint", doc) == []
    assert _round_trips(doc)
    assert doc["IpConfigurations"][0]["IpAddress"] == args["ip"]
    assert doc["IpConfigurations"][0].get("PrefixLength", 0) == args["prefix_length"]
    assert doc["Routes"] == [{"NextHop": args["gateway"], "DestinationPrefix": "0.0.0.0/0"}]
    by_type = {policy["Type"]: policy["Settings"] for policy in doc["Policies"]}
    assert by_type["SDNRoute"] == {"DestinationPrefix": args["node_ip"] + "/32", "NeedEncap": True}
    if args["outbound_nat_exceptions"] is None:
        assert "OutBoundNAT" not in by_type
    else:
        assert by_type["OutBoundNAT"].get("Exceptions", []) == list(
            dict.fromkeys(args["outbound_nat_exceptions"])
        )


@settings(max_examples=100, deadline=None)
@given(endpoint_id=_guids, filter=st.none() | st.dictionaries(st.text(), st.text(), max_size=4))
def test_any_request_and_query_checks_clean_and_round_trips(
    endpoint_id: str, filter: dict[str, str] | None
) -> None:
    for kind, doc in [
        ("namespace_request", attach_request(endpoint_id)),
        ("namespace_request", detach_request(endpoint_id)),
        ("query", query(filter)),
    ]:
        assert check(kind, doc) == []
        assert _round_trips(doc)
    if filter is not None:
        assert json.loads(query(filter)["Filter"]) == filter


@settings(max_examples=300, deadline=None)
@given(container_id=_container_ids, ifname=_ifnames)
def test_parse_endpoint_name_inverts_endpoint_name(container_id: str, ifname: str) -> None:
    assert parse_endpoint_name(endpoint_name(container_id, ifname)) == (container_id, ifname)
