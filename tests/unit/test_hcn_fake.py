"""FakeHcn: each rule HCN enforces (tables: document or call -> HRESULT), the shared state file (two
objects, subprocesses, a restart, a damaged file), filters, faults, adapters, and random sequences of
calls against HCN's invariants.

The base network is an L2Bridge on adapter ``ADAPTER`` (MAC ``MAC``) with subnet 10.0.0.0/24 and
gateway 10.0.0.1; the base endpoint takes 10.0.0.10. A table case patches the base document at the
given paths (``DELETE`` removes the key; an index one past a list's end appends).
"""

from __future__ import annotations

import copy
import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from pathlib import Path
from typing import Any, cast

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from ipamd.datapath.windows import documents
from ipamd.datapath.windows.fake import FAULTABLE, HCN_CALLS, CorruptState, FakeHcn
from ipamd.datapath.windows.hcn import (
    E_INVALIDARG,
    ERROR_NOT_FOUND,
    ERROR_TIMEOUT,
    HCN_E_ADAPTER_NOT_FOUND,
    HCN_E_ENDPOINT_ALREADY_ATTACHED,
    HCN_E_ENDPOINT_NAMESPACE_ALREADY_EXISTS,
    HCN_E_ENDPOINT_NOT_ATTACHED,
    HCN_E_ENDPOINT_NOT_FOUND,
    HCN_E_ENTITY_HAS_REFERENCES,
    HCN_E_INVALID_ENDPOINT,
    HCN_E_INVALID_IP,
    HCN_E_INVALID_JSON,
    HCN_E_INVALID_NETWORK,
    HCN_E_INVALID_POLICY,
    HCN_E_MANAGER_STOPPED,
    HCN_E_NETWORK_ALREADY_EXISTS,
    HCN_E_NETWORK_NOT_FOUND,
    HCN_E_PORT_ALREADY_EXISTS,
    RPC_E_DISCONNECTED,
    S_OK,
    Document,
    HcnError,
)

ROOT = Path(__file__).resolve().parents[2]
MAC = "02-AB-CD-00-00-01"
ADAPTER = "Ethernet 2"
SUBNET = "10.0.0.0/24"
GATEWAY = "10.0.0.1"
V2 = {"Major": 2, "Minor": 0}
GUID = re.compile(r"[0-9A-F]{8}-[0-9A-F]{4}-[0-9A-F]{4}-[0-9A-F]{4}-[0-9A-F]{12}")
DELETE = object()
SUBNET0 = ("Ipams", 0, "Subnets", 0)
IPC0 = ("IpConfigurations", 0)
UNKNOWN = "6B1D3B5A-0000-4000-8000-000000000001"  # a GUID no object ever gets


def network_doc(
    name: str = "cloud-cni-eni-1", *, subnet: str = SUBNET, gateway: str = GATEWAY, adapter: str = ADAPTER
) -> Document:
    return {
        "Name": name,
        "Type": "L2Bridge",
        "Policies": [{"Type": "NetAdapterName", "Settings": {"NetworkAdapterName": adapter}}],
        "Ipams": [
            {
                "Type": "Static",
                "Subnets": [
                    {
                        "IpAddressPrefix": subnet,
                        "Routes": [{"NextHop": gateway, "DestinationPrefix": "0.0.0.0/0"}],
                    }
                ],
            }
        ],
        "SchemaVersion": dict(V2),
    }


def endpoint_doc(ip: str = "10.0.0.10", name: str | None = None) -> Document:
    doc: Document = {
        "IpConfigurations": [{"IpAddress": ip}],
        "Policies": [{"Type": "OutBoundNAT", "Settings": {"Exceptions": ["10.0.0.0/16"]}}],
        "SchemaVersion": dict(V2),
    }
    if name is not None:
        doc["Name"] = name
    return doc


def request(kind: str, endpoint_id: str) -> Document:
    return {"ResourceType": "Endpoint", "RequestType": kind, "Settings": {"EndpointId": endpoint_id}}


def query(**filter: str) -> Document:
    doc: Document = {"SchemaVersion": dict(V2)}
    if filter:
        doc["Filter"] = json.dumps(filter)
    return doc


def patched(doc: Document, changes: Mapping[tuple[str | int, ...], Any]) -> Any:
    result: Any = copy.deepcopy(doc)
    for path, value in changes.items():
        if not path:
            result = value
            continue
        parent = result
        for step in path[:-1]:
            parent = parent[step]
        last = path[-1]
        if value is DELETE:
            del parent[last]
        elif isinstance(parent, list) and last == len(parent):
            parent.append(value)
        else:
            parent[last] = value
    return result


def refused(hresult: int, call: Callable[[], object]) -> HcnError:
    with pytest.raises(HcnError) as info:
        call()
    assert info.value.hresult == hresult, f"0x{info.value.hresult:08X}, not 0x{hresult:08X}: {info.value}"
    return info.value


def unchanged_but_counters(before: bytes, path: Path) -> bool:
    """The state file is byte for byte ``before`` once the call counters (which count refused calls
    too) are put back as they were."""
    after = json.loads(path.read_bytes())
    after["counters"] = json.loads(before)["counters"]
    return (json.dumps(after, separators=(",", ":")) + "\n").encode() == before


@pytest.fixture(autouse=True)
def _no_leaked_threads() -> Iterator[None]:
    """A test that leaves a thread running (a hung call nobody waited for) fails."""
    before = threading.active_count()
    yield
    assert threading.active_count() <= before


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "hcn.json"


@pytest.fixture
def hcn(path: Path) -> FakeHcn:
    fake = FakeHcn(path)
    fake.add_adapter(MAC, ADAPTER)
    return fake


@pytest.fixture
def network(hcn: FakeHcn) -> str:
    return str(hcn.create_network(network_doc())["ID"])


@pytest.fixture
def endpoint(hcn: FakeHcn, network: str) -> str:
    return str(hcn.create_endpoint(network, endpoint_doc())["ID"])


# --- networks --------------------------------------------------------------------------------------------

NETWORK_REFUSALS: list[tuple[str, dict[tuple[str | int, ...], Any], int]] = [
    ("not-an-object", {(): [network_doc()]}, HCN_E_INVALID_JSON),
    ("unknown-key", {("Nmae",): "x"}, HCN_E_INVALID_JSON),
    ("miscased-key", {("Name",): DELETE, ("name",): "cloud-cni-eni-1"}, HCN_E_INVALID_JSON),
    ("name-not-a-string", {("Name",): 7}, HCN_E_INVALID_JSON),
    ("flags-negative", {("Flags",): -1}, HCN_E_INVALID_JSON),
    ("flags-boolean", {("Flags",): True}, HCN_E_INVALID_JSON),
    ("flags-nan", {("Flags",): float("nan")}, HCN_E_INVALID_JSON),
    ("ipams-not-an-array", {("Ipams",): {}}, HCN_E_INVALID_JSON),
    ("schema-v1", {("SchemaVersion",): {"Major": 1, "Minor": 0}}, HCN_E_INVALID_JSON),
    ("route-metric-a-string", {(*SUBNET0, "Routes", 0, "Metric"): "1"}, HCN_E_INVALID_JSON),
    ("policy-settings-a-string", {("Policies", 0, "Settings"): ADAPTER}, HCN_E_INVALID_JSON),
    ("policy-without-type", {("Policies", 0, "Type"): DELETE}, HCN_E_INVALID_JSON),
    ("policy-type-unknown", {("Policies", 0, "Type"): "NetAdapter"}, HCN_E_INVALID_POLICY),
    ("adapter-policy-without-name", {("Policies", 0, "Settings"): {}}, HCN_E_INVALID_POLICY),
    (
        "adapter-policy-unknown-setting",
        {("Policies", 0, "Settings", "AdapterName"): "x"},
        HCN_E_INVALID_POLICY,
    ),
    ("subnet-policy-unknown", {(*SUBNET0, "Policies"): [{"Type": "VLANX"}]}, HCN_E_INVALID_POLICY),
    ("no-name", {("Name",): DELETE}, HCN_E_INVALID_NETWORK),
    ("empty-name", {("Name",): ""}, HCN_E_INVALID_NETWORK),
    ("no-type", {("Type",): DELETE}, HCN_E_INVALID_NETWORK),
    ("unknown-type", {("Type",): "Bridge"}, HCN_E_INVALID_NETWORK),
    ("no-ipams", {("Ipams",): DELETE}, HCN_E_INVALID_NETWORK),
    ("no-subnets", {("Ipams", 0, "Subnets"): []}, HCN_E_INVALID_NETWORK),
    ("ipam-type-unknown", {("Ipams", 0, "Type"): "Magic"}, HCN_E_INVALID_NETWORK),
    ("prefix-missing", {(*SUBNET0, "IpAddressPrefix"): DELETE}, HCN_E_INVALID_NETWORK),
    ("prefix-without-length", {(*SUBNET0, "IpAddressPrefix"): "10.0.0.0"}, HCN_E_INVALID_NETWORK),
    ("prefix-too-long", {(*SUBNET0, "IpAddressPrefix"): "10.0.0.0/33"}, HCN_E_INVALID_NETWORK),
    ("prefix-host-bits", {(*SUBNET0, "IpAddressPrefix"): "10.0.0.5/24"}, HCN_E_INVALID_NETWORK),
    ("prefix-ipv6", {(*SUBNET0, "IpAddressPrefix"): "fd00::/64"}, HCN_E_INVALID_NETWORK),
    (
        "subnets-overlap",
        {("Ipams", 0, "Subnets", 1): {"IpAddressPrefix": "10.0.0.128/25"}},
        HCN_E_INVALID_NETWORK,
    ),
    ("gateway-outside-subnet", {(*SUBNET0, "Routes", 0, "NextHop"): "10.0.1.1"}, HCN_E_INVALID_NETWORK),
    ("gateway-network-address", {(*SUBNET0, "Routes", 0, "NextHop"): "10.0.0.0"}, HCN_E_INVALID_NETWORK),
    ("gateway-not-an-address", {(*SUBNET0, "Routes", 0, "NextHop"): "gw"}, HCN_E_INVALID_NETWORK),
    ("l2bridge-without-adapter", {("Policies",): []}, HCN_E_INVALID_NETWORK),
    (
        "two-adapter-policies",
        {("Policies", 1): {"Type": "NetAdapterName", "Settings": {"NetworkAdapterName": ADAPTER}}},
        HCN_E_INVALID_NETWORK,
    ),
    (
        "adapter-missing",
        {("Policies", 0, "Settings", "NetworkAdapterName"): "Ethernet 9"},
        HCN_E_ADAPTER_NOT_FOUND,
    ),
]


@pytest.mark.parametrize(
    ("changes", "hresult"), [c[1:] for c in NETWORK_REFUSALS], ids=[c[0] for c in NETWORK_REFUSALS]
)
def test_create_network_refuses(
    hcn: FakeHcn, path: Path, changes: dict[tuple[str | int, ...], Any], hresult: int
) -> None:
    before = path.read_bytes()
    refused(hresult, lambda: hcn.create_network(patched(network_doc(), changes)))
    assert unchanged_but_counters(before, path)
    assert hcn.snapshot()["networks"] == []


NETWORK_ACCEPTED: list[tuple[str, dict[tuple[str | int, ...], Any]]] = [
    ("as-built", {}),
    ("nat-without-adapter", {("Type",): "NAT", ("Policies",): []}),
    ("adapter-name-in-another-case", {("Policies", 0, "Settings", "NetworkAdapterName"): "ETHERNET 2"}),
    ("two-subnets", {("Ipams", 0, "Subnets", 1): {"IpAddressPrefix": "10.0.1.0/24"}}),
    ("no-gateway-route", {(*SUBNET0, "Routes"): []}),
    ("flags-non-persistent", {("Flags",): 8}),
    ("no-schema-version", {("SchemaVersion",): DELETE}),
    ("vlan-subnet-policy", {(*SUBNET0, "Policies"): [{"Type": "VLAN", "Settings": {"IsolationId": 7}}]}),
]


@pytest.mark.parametrize("changes", [c[1] for c in NETWORK_ACCEPTED], ids=[c[0] for c in NETWORK_ACCEPTED])
def test_create_network_accepts(hcn: FakeHcn, changes: dict[tuple[str | int, ...], Any]) -> None:
    doc = patched(network_doc(), changes)
    created = hcn.create_network(doc)
    assert GUID.fullmatch(created["ID"])
    assert created == {"Flags": 0, "SchemaVersion": V2, **doc, "ID": created["ID"]}
    assert hcn.list_networks(query()) == [created]


def test_network_name_is_unique_case_insensitively(hcn: FakeHcn, network: str) -> None:
    refused(HCN_E_NETWORK_ALREADY_EXISTS, lambda: hcn.create_network(network_doc("CLOUD-CNI-ENI-1")))
    hcn.delete_network(network)
    hcn.create_network(network_doc("CLOUD-CNI-ENI-1"))


def test_delete_network_with_endpoints_is_refused(hcn: FakeHcn, network: str, endpoint: str) -> None:
    refused(HCN_E_ENTITY_HAS_REFERENCES, lambda: hcn.delete_network(network))
    hcn.delete_endpoint(endpoint)
    hcn.delete_network(network)
    assert hcn.snapshot()["networks"] == []


# --- endpoints -------------------------------------------------------------------------------------------

ENDPOINT_REFUSALS: list[tuple[str, dict[tuple[str | int, ...], Any], int]] = [
    ("not-an-object", {(): "10.0.0.10"}, HCN_E_INVALID_JSON),
    ("unknown-key", {("IPConfigurations",): []}, HCN_E_INVALID_JSON),
    ("ip-configurations-an-object", {("IpConfigurations",): {"IpAddress": "10.0.0.10"}}, HCN_E_INVALID_JSON),
    ("prefix-length-a-string", {(*IPC0, "PrefixLength"): "24"}, HCN_E_INVALID_JSON),
    ("ip-address-a-number", {(*IPC0, "IpAddress"): 167772170}, HCN_E_INVALID_JSON),
    ("dns-servers-a-string", {("Dns",): {"ServerList": "10.0.0.2"}}, HCN_E_INVALID_JSON),
    ("policy-type-miscased", {("Policies", 0, "Type"): "OutboundNAT"}, HCN_E_INVALID_POLICY),
    (
        "nat-exceptions-a-string",
        {("Policies", 0, "Settings", "Exceptions"): "10.0.0.0/16"},
        HCN_E_INVALID_POLICY,
    ),
    (
        "nat-exception-not-a-cidr",
        {("Policies", 0, "Settings", "Exceptions", 0): "10.0.0.0/99"},
        HCN_E_INVALID_POLICY,
    ),
    ("nat-unknown-setting", {("Policies", 0, "Settings", "Exception"): []}, HCN_E_INVALID_POLICY),
    (
        "acl-without-action",
        {("Policies", 1): {"Type": "ACL", "Settings": {"Direction": "In"}}},
        HCN_E_INVALID_POLICY,
    ),
    (
        "acl-direction-unknown",
        {("Policies", 1): {"Type": "ACL", "Settings": {"Action": "Allow", "Direction": "Up"}}},
        HCN_E_INVALID_POLICY,
    ),
    (
        "sdn-route-next-hop-not-an-ip",
        {("Policies", 0): {"Type": "SDNRoute", "Settings": {"NextHop": "x"}}},
        HCN_E_INVALID_POLICY,
    ),
    ("no-ip-configurations", {("IpConfigurations",): DELETE}, HCN_E_INVALID_ENDPOINT),
    ("empty-ip-configurations", {("IpConfigurations",): []}, HCN_E_INVALID_ENDPOINT),
    ("ip-configuration-without-address", {IPC0: {"PrefixLength": 24}}, HCN_E_INVALID_ENDPOINT),
    ("prefix-length-over-32", {(*IPC0, "PrefixLength"): 33}, HCN_E_INVALID_ENDPOINT),
    ("another-network", {("HostComputeNetwork",): UNKNOWN}, HCN_E_INVALID_ENDPOINT),
    ("namespace-set", {("HostComputeNamespace",): UNKNOWN}, HCN_E_INVALID_ENDPOINT),
    ("mac-malformed", {("MacAddress",): "00-15-5D-00-00"}, HCN_E_INVALID_ENDPOINT),
    (
        "route-next-hop-not-an-ip",
        {("Routes",): [{"NextHop": "gw", "DestinationPrefix": "0.0.0.0/0"}]},
        HCN_E_INVALID_ENDPOINT,
    ),
    ("ip-not-an-address", {(*IPC0, "IpAddress"): "10.0.0.300"}, HCN_E_INVALID_IP),
    ("ip-v6", {(*IPC0, "IpAddress"): "fd00::10"}, HCN_E_INVALID_IP),
    ("ip-outside-the-subnet", {(*IPC0, "IpAddress"): "10.0.1.10"}, HCN_E_INVALID_IP),
    ("ip-network-address", {(*IPC0, "IpAddress"): "10.0.0.0"}, HCN_E_INVALID_IP),
    ("ip-broadcast-address", {(*IPC0, "IpAddress"): "10.0.0.255"}, HCN_E_INVALID_IP),
    ("ip-gateway", {(*IPC0, "IpAddress"): GATEWAY}, HCN_E_INVALID_IP),
    ("ip-listed-twice", {("IpConfigurations", 1): {"IpAddress": "10.0.0.10"}}, HCN_E_INVALID_IP),
]


@pytest.mark.parametrize(
    ("changes", "hresult"), [c[1:] for c in ENDPOINT_REFUSALS], ids=[c[0] for c in ENDPOINT_REFUSALS]
)
def test_create_endpoint_refuses(
    hcn: FakeHcn, path: Path, network: str, changes: dict[tuple[str | int, ...], Any], hresult: int
) -> None:
    before = path.read_bytes()
    refused(hresult, lambda: hcn.create_endpoint(network, patched(endpoint_doc(), changes)))
    assert unchanged_but_counters(before, path)


@pytest.mark.parametrize(
    ("network_id", "hresult"),
    [(UNKNOWN, HCN_E_NETWORK_NOT_FOUND), ("cloud-cni-eni-1", E_INVALIDARG)],
    ids=["missing", "not-a-guid"],
)
def test_create_endpoint_needs_the_network(hcn: FakeHcn, network: str, network_id: str, hresult: int) -> None:
    refused(hresult, lambda: hcn.create_endpoint(network_id, endpoint_doc()))


def test_created_endpoint_is_what_hcn_returns(hcn: FakeHcn, network: str) -> None:
    doc = endpoint_doc(name="cloud-cni-abc_eth0")
    doc["HostComputeNetwork"] = network.lower()  # documents.endpoint_doc sends it; any case
    created = hcn.create_endpoint(network, doc)
    assert GUID.fullmatch(created["ID"])
    assert created["HostComputeNetwork"] == network
    assert re.fullmatch(r"00-15-5D-[0-9A-F]{2}-[0-9A-F]{2}-[0-9A-F]{2}", created["MacAddress"])
    assert created["IpConfigurations"] == [{"IpAddress": "10.0.0.10", "PrefixLength": 24}]  # filled in
    assert "HostComputeNamespace" not in created
    assert created["Policies"] == doc["Policies"]
    assert hcn.get_endpoint(created["ID"]) == created
    other = hcn.create_endpoint(network, endpoint_doc("10.0.0.11"))
    assert other["MacAddress"] != created["MacAddress"]
    given = hcn.create_endpoint(network, {**endpoint_doc("10.0.0.12"), "MacAddress": "02:aa:bb:cc:dd:ee"})
    assert given["MacAddress"] == "02-AA-BB-CC-DD-EE"


def test_returned_documents_are_copies(hcn: FakeHcn, network: str) -> None:
    doc = endpoint_doc()
    created = hcn.create_endpoint(network, doc)
    doc["IpConfigurations"][0]["IpAddress"] = "10.0.0.99"
    created["IpConfigurations"][0]["IpAddress"] = "10.0.0.98"
    created["Policies"].clear()
    stored = hcn.get_endpoint(created["ID"])
    assert stored["IpConfigurations"][0]["IpAddress"] == "10.0.0.10"
    assert stored["Policies"] == endpoint_doc()["Policies"]


def test_one_endpoint_per_ip_per_network(hcn: FakeHcn, network: str, endpoint: str) -> None:
    error = refused(HCN_E_INVALID_IP, lambda: hcn.create_endpoint(network, endpoint_doc("10.0.0.10")))
    assert "held by another endpoint" in error.message
    hcn.add_adapter("02-AB-CD-00-00-02", "Ethernet 3")
    second = hcn.create_network(network_doc("cloud-cni-eni-2", adapter="Ethernet 3"))
    hcn.create_endpoint(second["ID"], endpoint_doc("10.0.0.10"))  # another network, its own addresses
    hcn.delete_endpoint(endpoint)
    hcn.create_endpoint(network, endpoint_doc("10.0.0.10"))  # free again


def test_endpoint_name_is_unique_case_insensitively(hcn: FakeHcn, network: str) -> None:
    hcn.create_endpoint(network, endpoint_doc("10.0.0.10", name="cloud-cni-abc_eth0"))
    refused(
        HCN_E_PORT_ALREADY_EXISTS,
        lambda: hcn.create_endpoint(network, endpoint_doc("10.0.0.11", "CLOUD-CNI-ABC_ETH0")),
    )
    hcn.create_endpoint(network, endpoint_doc("10.0.0.12"))  # nameless endpoints never clash
    hcn.create_endpoint(network, endpoint_doc("10.0.0.13"))


def test_the_datapaths_documents_are_accepted(hcn: FakeHcn) -> None:
    """documents.py's builders, as the datapath sends them, pass every check."""
    net = hcn.create_network(
        documents.network_doc(
            name="cloud-cni-eni-1", subnet_cidr=SUBNET, gateway=GATEWAY, adapter_name=ADAPTER
        )
    )
    ep = hcn.create_endpoint(
        net["ID"],
        documents.endpoint_doc(
            name=documents.endpoint_name("abc", "eth0"),
            network_id=net["ID"].lower(),
            ip="10.0.0.10",
            prefix_length=24,
            gateway=GATEWAY,
            node_ip="10.0.0.4",
            outbound_nat_exceptions=["10.0.0.0/16"],
            dns_servers=["10.0.0.2"],
            dns_search=["svc.cluster.local"],
        ),
    )
    namespace = hcn.add_namespace()
    hcn.modify_namespace(namespace, documents.attach_request(ep["ID"].lower()))
    assert documents.namespace_resources(hcn.get_namespace(namespace)) == [ep["ID"]]
    assert hcn.list_endpoints(documents.query({"Name": ep["Name"]})) == [hcn.get_endpoint(ep["ID"])]
    hcn.modify_namespace(namespace, documents.detach_request(ep["ID"]))
    hcn.delete_endpoint(ep["ID"])


# --- namespaces: attach, detach, delete ------------------------------------------------------------------


def test_attach_and_detach(hcn: FakeHcn, endpoint: str) -> None:
    namespace = hcn.add_namespace()
    assert GUID.fullmatch(namespace)
    assert hcn.get_namespace(namespace) == {
        "ID": namespace,
        "NamespaceId": 2,
        "Type": "HostDefault",
        "Resources": [],
        "SchemaVersion": V2,
    }
    hcn.modify_namespace(namespace, request("Add", endpoint))
    assert hcn.get_namespace(namespace)["Resources"] == [{"Type": "Endpoint", "Data": {"ID": endpoint}}]
    assert hcn.get_endpoint(endpoint)["HostComputeNamespace"] == namespace
    hcn.modify_namespace(namespace, request("Remove", endpoint))
    assert hcn.get_namespace(namespace)["Resources"] == []
    assert "HostComputeNamespace" not in hcn.get_endpoint(endpoint)


def test_attach_refusals(hcn: FakeHcn, network: str, endpoint: str) -> None:
    here, there = hcn.add_namespace(), hcn.add_namespace()
    refused(ERROR_NOT_FOUND, lambda: hcn.modify_namespace(UNKNOWN, request("Add", endpoint)))
    refused(HCN_E_ENDPOINT_NOT_FOUND, lambda: hcn.modify_namespace(here, request("Add", UNKNOWN)))
    refused(HCN_E_ENDPOINT_NOT_ATTACHED, lambda: hcn.modify_namespace(here, request("Remove", endpoint)))
    hcn.modify_namespace(here, request("Add", endpoint))
    refused(HCN_E_ENDPOINT_ALREADY_ATTACHED, lambda: hcn.modify_namespace(here, request("Add", endpoint)))
    refused(
        HCN_E_ENDPOINT_NAMESPACE_ALREADY_EXISTS, lambda: hcn.modify_namespace(there, request("Add", endpoint))
    )
    refused(HCN_E_ENDPOINT_NOT_ATTACHED, lambda: hcn.modify_namespace(there, request("Remove", endpoint)))
    assert hcn.get_namespace(there)["Resources"] == []
    assert hcn.get_endpoint(endpoint)["HostComputeNamespace"] == here


MODIFY_REFUSALS: list[tuple[str, dict[tuple[str | int, ...], Any], int]] = [
    ("not-an-object", {(): []}, HCN_E_INVALID_JSON),
    ("unknown-key", {("Resource",): "Endpoint"}, HCN_E_INVALID_JSON),
    ("container-resource", {("ResourceType",): "Container"}, HCN_E_INVALID_JSON),
    ("update-request", {("RequestType",): "Update"}, HCN_E_INVALID_JSON),
    ("no-settings", {("Settings",): DELETE}, HCN_E_INVALID_JSON),
    ("settings-a-string", {("Settings",): '{"EndpointId": "x"}'}, HCN_E_INVALID_JSON),
    ("settings-id-key", {("Settings",): {"ID": UNKNOWN}}, HCN_E_INVALID_JSON),
    ("endpoint-id-not-a-guid", {("Settings", "EndpointId"): "ep-1"}, HCN_E_INVALID_JSON),
]


@pytest.mark.parametrize(
    ("changes", "hresult"), [c[1:] for c in MODIFY_REFUSALS], ids=[c[0] for c in MODIFY_REFUSALS]
)
def test_modify_namespace_refuses(
    hcn: FakeHcn, endpoint: str, changes: dict[tuple[str | int, ...], Any], hresult: int
) -> None:
    namespace = hcn.add_namespace()
    refused(hresult, lambda: hcn.modify_namespace(namespace, patched(request("Add", endpoint), changes)))
    assert "HostComputeNamespace" not in hcn.get_endpoint(endpoint)


def test_attached_endpoint_is_deleted_only_once_its_namespace_is_gone(hcn: FakeHcn, endpoint: str) -> None:
    namespace = hcn.add_namespace()
    hcn.modify_namespace(namespace, request("Add", endpoint))
    refused(HCN_E_ENTITY_HAS_REFERENCES, lambda: hcn.delete_endpoint(endpoint))
    hcn.remove_namespace(namespace)  # containerd deletes the pod
    assert "HostComputeNamespace" not in hcn.get_endpoint(endpoint)
    assert refused(
        ERROR_NOT_FOUND, lambda: hcn.modify_namespace(namespace, request("Remove", endpoint))
    ).not_found
    hcn.delete_endpoint(endpoint)
    assert hcn.snapshot()["endpoints"] == []


def test_namespace_helpers(hcn: FakeHcn) -> None:
    given = str(uuid.uuid4())
    assert hcn.add_namespace(given, namespace_type="Guest") == given.upper()
    assert hcn.get_namespace(given)["Type"] == "Guest"
    with pytest.raises(ValueError, match="already exists"):
        hcn.add_namespace(given.upper())
    with pytest.raises(ValueError, match="not a GUID"):
        hcn.add_namespace("pod-1")
    with pytest.raises(ValueError, match="namespace_type"):
        hcn.add_namespace(namespace_type="Pod")
    hcn.remove_namespace(given)
    with pytest.raises(ValueError, match="no namespace"):
        hcn.remove_namespace(given)


# --- lookups -----------------------------------------------------------------------------------------------

MISSING: list[tuple[str, Callable[[FakeHcn], object], int]] = [
    ("get_endpoint", lambda h: h.get_endpoint(UNKNOWN), HCN_E_ENDPOINT_NOT_FOUND),
    ("delete_endpoint", lambda h: h.delete_endpoint(UNKNOWN), HCN_E_ENDPOINT_NOT_FOUND),
    ("delete_network", lambda h: h.delete_network(UNKNOWN), HCN_E_NETWORK_NOT_FOUND),
    ("get_namespace", lambda h: h.get_namespace(UNKNOWN), ERROR_NOT_FOUND),
    ("modify_namespace", lambda h: h.modify_namespace(UNKNOWN, request("Remove", UNKNOWN)), ERROR_NOT_FOUND),
]


@pytest.mark.parametrize(("call", "hresult"), [c[1:] for c in MISSING], ids=[c[0] for c in MISSING])
def test_missing_objects_are_not_found(hcn: FakeHcn, call: Callable[[FakeHcn], object], hresult: int) -> None:
    assert refused(hresult, lambda: call(hcn)).not_found


NOT_GUIDS: list[tuple[str, Callable[[FakeHcn], object]]] = [
    ("get_endpoint", lambda h: h.get_endpoint("ep-1")),
    ("delete_endpoint", lambda h: h.delete_endpoint("")),
    ("delete_network", lambda h: h.delete_network("cloud-cni-eni-1")),
    ("get_namespace", lambda h: h.get_namespace(cast(Any, None))),
    ("modify_namespace", lambda h: h.modify_namespace("ns", request("Add", UNKNOWN))),
    ("create_endpoint", lambda h: h.create_endpoint("net", endpoint_doc())),
]


@pytest.mark.parametrize("call", [c[1] for c in NOT_GUIDS], ids=[c[0] for c in NOT_GUIDS])
def test_id_arguments_must_be_guids(hcn: FakeHcn, call: Callable[[FakeHcn], object]) -> None:
    refused(E_INVALIDARG, lambda: call(hcn))


def test_ids_compare_case_insensitively(hcn: FakeHcn, network: str, endpoint: str) -> None:
    namespace = hcn.add_namespace()
    hcn.modify_namespace(namespace.lower(), request("Add", endpoint.lower()))
    assert hcn.get_endpoint(endpoint.lower())["HostComputeNamespace"] == namespace
    assert hcn.get_namespace("{" + namespace.lower() + "}")["ID"] == namespace
    hcn.modify_namespace(namespace, request("Remove", endpoint))
    hcn.delete_endpoint(endpoint.lower())
    hcn.delete_network(network.lower())


# --- filters -----------------------------------------------------------------------------------------------


@pytest.fixture
def two_networks(hcn: FakeHcn) -> dict[str, str]:
    """Networks alpha (L2Bridge, endpoints a1 a2) and beta (NAT, endpoint b1): name -> ID."""
    ids = {
        "alpha": hcn.create_network(network_doc("alpha"))["ID"],
        "beta": hcn.create_network(
            {**network_doc("beta", subnet="10.0.1.0/24", gateway="10.0.1.1"), "Type": "NAT"}
        )["ID"],
    }
    for name, network_name, ip in (
        ("a1", "alpha", "10.0.0.10"),
        ("a2", "alpha", "10.0.0.11"),
        ("b1", "beta", "10.0.1.10"),
    ):
        ids[name] = hcn.create_endpoint(ids[network_name], endpoint_doc(ip, name))["ID"]
    return ids


NETWORK_FILTERS: list[tuple[str, Callable[[dict[str, str]], dict[str, str]], list[str]]] = [
    ("none", lambda ids: {}, ["alpha", "beta"]),
    ("name", lambda ids: {"Name": "alpha"}, ["alpha"]),
    ("name-in-another-case", lambda ids: {"Name": "ALPHA"}, ["alpha"]),
    ("name-unknown", lambda ids: {"Name": "gamma"}, []),
    ("id-lower-case", lambda ids: {"ID": ids["beta"].lower()}, ["beta"]),
    ("id-not-a-guid", lambda ids: {"ID": "beta"}, []),
    ("type", lambda ids: {"Type": "NAT"}, ["beta"]),
    ("name-and-id-disagree", lambda ids: {"Name": "alpha", "ID": ids["beta"]}, []),
]


@pytest.mark.parametrize(
    ("make", "expected"), [c[1:] for c in NETWORK_FILTERS], ids=[c[0] for c in NETWORK_FILTERS]
)
def test_list_networks_filter(
    hcn: FakeHcn,
    two_networks: dict[str, str],
    make: Callable[[dict[str, str]], dict[str, str]],
    expected: list[str],
) -> None:
    found = hcn.list_networks(query(**make(two_networks)))
    assert sorted(n["Name"] for n in found) == expected


ENDPOINT_FILTERS: list[tuple[str, Callable[[dict[str, str]], dict[str, str]], list[str]]] = [
    ("none", lambda ids: {}, ["a1", "a2", "b1"]),
    ("host-compute-network", lambda ids: {"HostComputeNetwork": ids["alpha"]}, ["a1", "a2"]),
    ("virtual-network-lower-case", lambda ids: {"VirtualNetwork": ids["alpha"].lower()}, ["a1", "a2"]),
    ("name", lambda ids: {"Name": "b1"}, ["b1"]),
    ("id", lambda ids: {"ID": ids["a2"]}, ["a2"]),
    ("name-on-another-network", lambda ids: {"Name": "a1", "VirtualNetwork": ids["beta"]}, []),
    ("namespace-none-attached", lambda ids: {"HostComputeNamespace": UNKNOWN}, []),
]


@pytest.mark.parametrize(
    ("make", "expected"), [c[1:] for c in ENDPOINT_FILTERS], ids=[c[0] for c in ENDPOINT_FILTERS]
)
def test_list_endpoints_filter(
    hcn: FakeHcn,
    two_networks: dict[str, str],
    make: Callable[[dict[str, str]], dict[str, str]],
    expected: list[str],
) -> None:
    found = hcn.list_endpoints(query(**make(two_networks)))
    assert sorted(e["Name"] for e in found) == expected


def test_list_endpoints_by_namespace(hcn: FakeHcn, two_networks: dict[str, str]) -> None:
    namespace = hcn.add_namespace()
    hcn.modify_namespace(namespace, request("Add", two_networks["b1"]))
    assert [e["Name"] for e in hcn.list_endpoints(query(HostComputeNamespace=namespace.lower()))] == ["b1"]


QUERY_REFUSALS: list[tuple[str, Any, int]] = [
    ("not-an-object", "Name=alpha", HCN_E_INVALID_JSON),
    ("no-schema-version", {"Filter": '{"Name": "alpha"}'}, HCN_E_INVALID_JSON),
    ("flags-a-string", {"SchemaVersion": V2, "Flags": "1"}, HCN_E_INVALID_JSON),
    ("unknown-key", {"SchemaVersion": V2, "Filters": "{}"}, HCN_E_INVALID_JSON),
    ("filter-an-object", {"SchemaVersion": V2, "Filter": {"Name": "alpha"}}, HCN_E_INVALID_JSON),
    ("filter-not-json", {"SchemaVersion": V2, "Filter": "Name=alpha"}, HCN_E_INVALID_JSON),
    ("filter-a-list", {"SchemaVersion": V2, "Filter": '["alpha"]'}, HCN_E_INVALID_JSON),
    ("filter-value-a-number", {"SchemaVersion": V2, "Filter": '{"Name": 1}'}, HCN_E_INVALID_JSON),
    (
        "filter-key-not-modelled",
        {"SchemaVersion": V2, "Filter": '{"MacAddress": "00-15-5D-00-00-01"}'},
        E_INVALIDARG,
    ),
]


@pytest.mark.parametrize(
    ("doc", "hresult"), [c[1:] for c in QUERY_REFUSALS], ids=[c[0] for c in QUERY_REFUSALS]
)
def test_list_refuses_bad_queries(hcn: FakeHcn, doc: Any, hresult: int) -> None:
    refused(hresult, lambda: hcn.list_endpoints(doc))
    if hresult != E_INVALIDARG:  # MacAddress is an endpoint field only
        refused(hresult, lambda: hcn.list_networks(doc))


def test_list_accepts_flags_and_an_empty_filter(hcn: FakeHcn, network: str) -> None:
    assert len(hcn.list_networks({"SchemaVersion": V2, "Flags": 1, "Filter": ""})) == 1
    assert len(hcn.list_networks({"SchemaVersion": V2, "Filter": "{}"})) == 1


# --- adapters ----------------------------------------------------------------------------------------------


def test_adapter_by_mac(hcn: FakeHcn) -> None:
    assert hcn.adapter_by_mac(MAC) == ADAPTER
    assert hcn.adapter_by_mac(MAC.lower().replace("-", ":")) == ADAPTER
    refused(E_INVALIDARG, lambda: hcn.adapter_by_mac("02-AB-CD"))
    hcn.remove_adapter(MAC)
    # auto_adapters (the default): stable invented names, in Windows' order.
    assert hcn.adapter_by_mac("02:00:00:00:00:0a") == "Ethernet"
    assert hcn.adapter_by_mac("02:00:00:00:00:0b") == "Ethernet 2"
    assert hcn.adapter_by_mac("02-00-00-00-00-0A") == "Ethernet"
    assert FakeHcn(hcn.path).adapter_by_mac("02:00:00:00:00:0b") == "Ethernet 2"
    hcn.create_network(network_doc(adapter="Ethernet 2"))
    assert "create_network" in hcn.counters() and "adapter_by_mac" not in hcn.counters()


def test_without_auto_adapters_an_unknown_mac_has_no_adapter(hcn: FakeHcn) -> None:
    assert hcn.auto_adapters is True
    hcn.auto_adapters = False
    assert FakeHcn(hcn.path).auto_adapters is False  # kept in the state
    assert hcn.adapter_by_mac("02:00:00:00:00:0a") is None
    assert hcn.adapter_by_mac(MAC) == ADAPTER
    assert hcn.snapshot()["adapters"] == {MAC: ADAPTER}


def test_adapter_helpers(hcn: FakeHcn) -> None:
    hcn.add_adapter(MAC, "Uplink")  # re-adding a MAC renames it
    assert hcn.adapter_by_mac(MAC) == "Uplink"
    with pytest.raises(ValueError, match="already named"):
        hcn.add_adapter("02-AB-CD-00-00-02", "UPLINK")
    with pytest.raises(ValueError, match="not a MAC"):
        hcn.add_adapter("eth0", "Uplink 2")
    with pytest.raises(ValueError, match="no adapter"):
        hcn.remove_adapter("02-AB-CD-00-00-09")


# --- shared state ------------------------------------------------------------------------------------------


def test_two_objects_on_one_file_see_each_others_changes(hcn: FakeHcn, network: str) -> None:
    other = FakeHcn(hcn.path)
    assert [n["ID"] for n in other.list_networks(query())] == [network]
    endpoint = other.create_endpoint(network, endpoint_doc())["ID"]
    namespace = hcn.add_namespace()
    other.modify_namespace(namespace, request("Add", endpoint))
    assert hcn.get_endpoint(endpoint)["HostComputeNamespace"] == namespace
    other.inject("get_endpoint", HCN_E_MANAGER_STOPPED)
    refused(HCN_E_MANAGER_STOPPED, lambda: hcn.get_endpoint(endpoint))
    assert hcn.counters() == other.counters()
    assert hcn.counters()["get_endpoint"] == 2


def test_state_survives_a_restart(hcn: FakeHcn, network: str, endpoint: str) -> None:
    namespace = hcn.add_namespace()
    hcn.modify_namespace(namespace, request("Add", endpoint))
    hcn.inject("get_endpoint", ERROR_TIMEOUT)
    before, counters = hcn.snapshot(), hcn.counters()
    hcn.close()
    restarted = FakeHcn(hcn.path)
    assert restarted.snapshot() == before
    assert restarted.counters() == counters
    refused(ERROR_TIMEOUT, lambda: restarted.get_endpoint(endpoint))
    restarted.modify_namespace(namespace, request("Remove", endpoint))
    restarted.delete_endpoint(endpoint)


def test_a_missing_file_is_an_empty_hcn(tmp_path: Path) -> None:
    path = tmp_path / "run" / "hcn.json"  # the daemon's run directory may not exist yet either
    fake = FakeHcn(path)
    assert not path.exists()  # nothing written until something changes
    assert fake.snapshot() == {
        "networks": [],
        "endpoints": [],
        "namespaces": [],
        "adapters": {},
        "auto_adapters": True,
        "faults": [],
    }
    assert fake.list_networks(query()) == []
    assert path.exists()  # the call counter


def run_python(code: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-c", code, *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_a_subprocess_changes_what_the_test_sees(hcn: FakeHcn, network: str) -> None:
    code = """
import sys
from ipamd.datapath.windows.fake import FakeHcn
fake = FakeHcn(sys.argv[1])
endpoint = fake.create_endpoint(sys.argv[2], {"IpConfigurations": [{"IpAddress": "10.0.0.20"}]})
namespace = fake.add_namespace()
fake.modify_namespace(namespace, {"ResourceType": "Endpoint", "RequestType": "Add",
                                  "Settings": {"EndpointId": endpoint["ID"]}})
print(endpoint["ID"], namespace)
"""
    done = run_python(code, str(hcn.path), network)
    assert done.returncode == 0, done.stderr
    endpoint, namespace = done.stdout.split()
    assert hcn.get_endpoint(endpoint)["HostComputeNamespace"] == namespace
    assert hcn.counters()["create_endpoint"] == 1


def test_concurrent_processes_and_threads_lose_no_update(hcn: FakeHcn, network: str) -> None:
    code = """
import sys
from ipamd.datapath.windows.fake import FakeHcn
fake = FakeHcn(sys.argv[1])
for n in range(20):
    fake.create_endpoint(sys.argv[2], {"IpConfigurations": [{"IpAddress": f"10.0.0.{int(sys.argv[3]) + n}"}]})
"""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    children = [
        subprocess.Popen([sys.executable, "-c", code, str(hcn.path), network, str(base)], cwd=ROOT, env=env)
        for base in (10, 40)
    ]

    def create(base: int) -> None:
        fake = FakeHcn(hcn.path)
        for n in range(20):
            fake.create_endpoint(network, endpoint_doc(f"10.0.0.{base + n}"))

    threads = [threading.Thread(target=create, args=(base,)) for base in (70, 100)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert [child.wait(timeout=60) for child in children] == [0, 0]
    ips = [e["IpConfigurations"][0]["IpAddress"] for e in hcn.snapshot()["endpoints"]]
    assert sorted(ips) == sorted(f"10.0.0.{base + n}" for base in (10, 40, 70, 100) for n in range(20))
    assert hcn.counters()["create_endpoint"] == 80


def test_one_address_two_racing_creates(hcn: FakeHcn, network: str) -> None:
    results: list[str] = []

    def create() -> None:
        try:
            FakeHcn(hcn.path).create_endpoint(network, endpoint_doc("10.0.0.50"))
            results.append("created")
        except HcnError as exc:
            results.append(f"0x{exc.hresult:08X}")

    threads = [threading.Thread(target=create) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert sorted(results) == ["0x803B001E"] * 7 + ["created"]


def test_the_module_imports_without_fcntl(tmp_path: Path) -> None:
    """On Windows the datapath's factory imports the module; only using the fake needs fcntl."""
    code = """
import sys
sys.modules["fcntl"] = None  # as on Windows: import fcntl raises ImportError
from ipamd.datapath.windows.fake import FakeHcn
try:
    FakeHcn(sys.argv[1])
except RuntimeError as exc:
    print(exc)
"""
    done = run_python(code, str(tmp_path / "hcn.json"))
    assert done.returncode == 0, done.stderr
    assert "fcntl" in done.stdout


# --- damaged state -----------------------------------------------------------------------------------------


def _valid_state(path: Path) -> dict[str, Any]:
    fake = FakeHcn(path)
    fake.add_adapter(MAC, ADAPTER)
    network = fake.create_network(network_doc())["ID"]
    endpoint = fake.create_endpoint(network, endpoint_doc())["ID"]
    fake.modify_namespace(fake.add_namespace(), request("Add", endpoint))
    fake.inject("get_endpoint", ERROR_TIMEOUT)
    return cast(dict[str, Any], json.loads(path.read_bytes()))


def _first(objects: dict[str, Any]) -> Any:
    return next(iter(objects.values()))


DAMAGE: list[tuple[str, Callable[[dict[str, Any]], Any]]] = [
    ("empty", lambda s: b""),
    ("not-json", lambda s: b'{"format": '),
    ("a-list", lambda s: []),
    ("another-format", lambda s: {**s, "format": "sim-cloud"}),
    ("a-key-missing", lambda s: {k: v for k, v in s.items() if k != "adapters"}),
    ("network-filed-under-another-id", lambda s: {**s, "networks": {UNKNOWN: _first(s["networks"])}}),
    ("network-ipams-a-string", lambda s: _first(s["networks"]).update(Ipams="10.0.0.0/24")),
    ("network-type-unknown", lambda s: _first(s["networks"]).update(Type="Bridge")),
    ("endpoint-on-a-missing-network", lambda s: _first(s["endpoints"]).update(HostComputeNetwork=UNKNOWN)),
    (
        "endpoint-outside-its-subnet",
        lambda s: _first(s["endpoints"])["IpConfigurations"][0].update(IpAddress="10.9.0.1"),
    ),
    (
        "endpoint-in-a-missing-namespace",
        lambda s: _first(s["endpoints"]).update(HostComputeNamespace=UNKNOWN),
    ),
    (
        "namespace-lists-a-missing-endpoint",
        lambda s: _first(s["namespaces"])["Resources"][0]["Data"].update(ID=UNKNOWN),
    ),
    ("namespace-type-unknown", lambda s: _first(s["namespaces"]).update(Type="Pod")),
    (
        "two-endpoints-one-address",
        lambda s: s["endpoints"].update({UNKNOWN: {**_first(s["endpoints"]), "ID": UNKNOWN}}),
    ),
    ("adapter-mac-not-canonical", lambda s: s.update(adapters={"02:ab:cd:00:00:01": ADAPTER})),
    ("counter-negative", lambda s: s["counters"].update(create_network=-1)),
    ("counter-of-no-call", lambda s: s["counters"].update(snapshot=1)),
    ("fault-for-no-method", lambda s: s["faults"][0].update(method="reboot")),
    ("fault-without-hresult", lambda s: s["faults"][0].pop("hresult")),
    ("next-mac-a-string", lambda s: s.update(next_mac="1")),
]


@pytest.mark.parametrize("damage", [c[1] for c in DAMAGE], ids=[c[0] for c in DAMAGE])
def test_a_damaged_state_file_is_a_clear_error(path: Path, damage: Callable[[dict[str, Any]], Any]) -> None:
    state = _valid_state(path)
    running = FakeHcn(path)  # a daemon that started before the damage
    replaced = damage(state)  # a new document, or None / anything else when it edited ``state``
    content = replaced if isinstance(replaced, bytes | list | dict) else state
    path.write_bytes(content if isinstance(content, bytes) else json.dumps(content).encode())
    with pytest.raises(CorruptState, match=re.escape(str(path))):
        FakeHcn(path)
    with pytest.raises(CorruptState, match=re.escape(str(path))):
        running.list_networks(query())


def test_the_undamaged_state_loads(path: Path) -> None:
    state = _valid_state(path)
    path.write_bytes(json.dumps(state).encode())  # rewritten differently: validated afresh
    snapshot = FakeHcn(path).snapshot()
    assert [len(snapshot[k]) for k in ("networks", "endpoints", "namespaces")] == [1, 1, 1]


# --- faults and latency ------------------------------------------------------------------------------------


class Sleeps:
    def __init__(self) -> None:
        self.seconds: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.seconds.append(seconds)


def test_a_fault_fails_the_next_times_calls(hcn: FakeHcn, network: str) -> None:
    hcn.inject("list_networks", RPC_E_DISCONNECTED, times=2)
    assert refused(RPC_E_DISCONNECTED, lambda: hcn.list_networks(query())).transient
    refused(RPC_E_DISCONNECTED, lambda: hcn.list_networks(query()))
    assert len(hcn.list_networks(query())) == 1
    assert hcn.counters()["list_networks"] == 3


def test_a_fault_instead_of_the_call_changes_nothing(hcn: FakeHcn, network: str) -> None:
    hcn.inject("create_endpoint", HCN_E_MANAGER_STOPPED)
    error = refused(HCN_E_MANAGER_STOPPED, lambda: hcn.create_endpoint(network, endpoint_doc()))
    assert "injected" in error.message
    assert hcn.snapshot()["endpoints"] == []
    hcn.create_endpoint(network, endpoint_doc())


def test_a_fault_after_the_call_reports_an_error_for_what_was_done(hcn: FakeHcn, network: str) -> None:
    hcn.inject("create_endpoint", ERROR_TIMEOUT, after=True)
    refused(ERROR_TIMEOUT, lambda: hcn.create_endpoint(network, endpoint_doc(name="cloud-cni-abc_eth0")))
    (created,) = hcn.list_endpoints(query(Name="cloud-cni-abc_eth0"))  # HCN made it all the same
    hcn.inject("delete_endpoint", ERROR_TIMEOUT, after=True)
    refused(ERROR_TIMEOUT, lambda: hcn.delete_endpoint(created["ID"]))
    assert hcn.snapshot()["endpoints"] == []


def test_a_fault_after_a_refused_call_reports_the_refusal(hcn: FakeHcn, network: str) -> None:
    hcn.inject("create_endpoint", ERROR_TIMEOUT, after=True)
    refused(HCN_E_INVALID_IP, lambda: hcn.create_endpoint(network, endpoint_doc(GATEWAY)))
    assert hcn.snapshot()["faults"] == []  # used up


@pytest.mark.parametrize(
    ("after", "attached_during_the_wait"), [(False, False), (True, True)], ids=["late", "answer-late"]
)
def test_a_slow_call_succeeds(
    hcn: FakeHcn, endpoint: str, after: bool, attached_during_the_wait: bool
) -> None:
    """S_OK with a delay: HCN hangs, then does it (``after=False``), or did it and answers late."""
    seen: list[bool] = []
    slow = FakeHcn(
        hcn.path, sleep=lambda _: seen.append("HostComputeNamespace" in hcn.get_endpoint(endpoint))
    )
    namespace = hcn.add_namespace()
    hcn.inject("modify_namespace", S_OK, delay=2.0, after=after)
    slow.modify_namespace(namespace, request("Add", endpoint))
    assert seen == [attached_during_the_wait]
    assert hcn.get_endpoint(endpoint)["HostComputeNamespace"] == namespace
    assert hcn.counters()["modify_namespace"] == 1


def test_a_slow_call_that_is_refused_when_it_lands(hcn: FakeHcn, endpoint: str) -> None:
    """The caller gave up and deleted the endpoint while the attach hung: the attach then fails."""
    slow = FakeHcn(hcn.path, sleep=lambda _: hcn.delete_endpoint(endpoint))
    namespace = hcn.add_namespace()
    hcn.inject("modify_namespace", S_OK, delay=2.0)
    refused(HCN_E_ENDPOINT_NOT_FOUND, lambda: slow.modify_namespace(namespace, request("Add", endpoint)))
    assert hcn.get_namespace(namespace)["Resources"] == []


def test_faults_queue_per_method_and_clear(hcn: FakeHcn) -> None:
    hcn.inject("get_namespace", RPC_E_DISCONNECTED)
    hcn.inject("get_namespace", ERROR_TIMEOUT)
    hcn.inject("delete_network", ERROR_TIMEOUT, times=5)
    refused(RPC_E_DISCONNECTED, lambda: hcn.get_namespace(UNKNOWN))
    refused(ERROR_TIMEOUT, lambda: hcn.get_namespace(UNKNOWN))
    refused(ERROR_NOT_FOUND, lambda: hcn.get_namespace(UNKNOWN))
    hcn.clear_faults()
    refused(HCN_E_NETWORK_NOT_FOUND, lambda: hcn.delete_network(UNKNOWN))


def test_a_fault_with_a_signed_hresult(hcn: FakeHcn) -> None:
    hcn.inject("adapter_by_mac", HCN_E_MANAGER_STOPPED - (1 << 32))  # as ctypes' HRESULT (a c_long) holds it
    refused(HCN_E_MANAGER_STOPPED, lambda: hcn.adapter_by_mac(MAC))


@pytest.mark.parametrize(
    "kwargs",
    [
        {"method": "snapshot", "hresult": ERROR_TIMEOUT},
        {"method": "get_endpoint", "hresult": 0},  # S_OK: a slow call, needs a delay
        {"method": "get_endpoint", "hresult": 1 << 32},
        {"method": "get_endpoint", "hresult": ERROR_TIMEOUT, "times": 0},
        {"method": "get_endpoint", "hresult": ERROR_TIMEOUT, "delay": -1.0},
        {"method": "get_endpoint", "hresult": ERROR_TIMEOUT, "delay": float("inf")},
    ],
    ids=[
        "unknown-method",
        "s-ok-without-delay",
        "not-an-hresult",
        "no-times",
        "negative-delay",
        "endless-delay",
    ],
)
def test_inject_refuses_nonsense(hcn: FakeHcn, kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        hcn.inject(**kwargs)
    assert hcn.snapshot()["faults"] == []


def test_latency_and_delay_are_slept_outside_the_lock(path: Path) -> None:
    import fcntl

    lock_path = path.with_name(path.name + ".lock")
    slept: list[float] = []

    def sleep(seconds: float) -> None:
        fd = os.open(lock_path, os.O_RDWR)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # BlockingIOError if the call held the lock
        finally:
            os.close(fd)
        slept.append(seconds)

    fake = FakeHcn(path, latency=0.25, sleep=sleep)
    assert fake.lock_path == lock_path
    fake.inject("get_namespace", ERROR_TIMEOUT, delay=30.0)
    refused(ERROR_TIMEOUT, lambda: fake.get_namespace(UNKNOWN))
    fake.list_networks(query())
    assert slept == [0.25, 30.0, 0.25]


def test_a_hung_call_is_caught_by_the_callers_deadline_and_blocks_no_one(hcn: FakeHcn, network: str) -> None:
    hcn.inject("create_endpoint", ERROR_TIMEOUT, delay=0.5, after=True)
    with ThreadPoolExecutor(max_workers=1) as pool:
        started = time.monotonic()
        future = pool.submit(hcn.create_endpoint, network, endpoint_doc())
        with pytest.raises(FutureTimeout):
            future.result(timeout=0.05)  # the datapath's deadline
        assert len(FakeHcn(hcn.path).snapshot()["endpoints"]) == 1  # done, not yet answered
        with pytest.raises(HcnError):
            future.result(timeout=5)
        assert time.monotonic() - started >= 0.5


def test_counters_count_every_call_and_reset(hcn: FakeHcn, network: str) -> None:
    refused(HCN_E_ENDPOINT_NOT_FOUND, lambda: hcn.get_endpoint(UNKNOWN))
    hcn.get_namespace(hcn.add_namespace())
    hcn.adapter_by_mac(MAC)
    assert hcn.counters() == {"create_network": 1, "get_endpoint": 1, "get_namespace": 1}
    hcn.reset_counters()
    assert hcn.counters() == {}
    assert set(HCN_CALLS) < set(FAULTABLE)


# --- random sequences --------------------------------------------------------------------------------------

SUBNETS = ("10.0.0.0/29", "10.0.1.0/29")  # .1 the gateway, .0 and .7 reserved
# Weights, by repetition (hypothesis favours the ends of an integer range): .2-.6 assignable twice as
# often as the refused .0, .1, .7 and .8; a live object four times in five.
HOSTS = (2, 3, 4, 5, 6, 2, 3, 4, 5, 6, 0, 1, 7, 8)
LIVE_FOUR_IN_FIVE = (True, True, True, True, False)


class HcnMachine(RuleBasedStateMachine):
    """Random creates, attaches, detaches, deletes and namespace removals. After every step: no
    address held twice in a network, no endpoint on a missing network or in a missing namespace, the
    namespaces and endpoints agree, and a fresh FakeHcn validates the file; every refused call left
    the state as it was but for its counter, which went up by one."""

    def __init__(self) -> None:
        super().__init__()
        self.tmp = tempfile.TemporaryDirectory()
        self.path = Path(self.tmp.name) / "hcn.json"
        self.hcn = FakeHcn(self.path)
        self.hcn.add_adapter(MAC, ADAPTER)
        self.seen: dict[str, list[str]] = {"networks": [], "endpoints": [], "namespaces": []}

    def teardown(self) -> None:
        self.tmp.cleanup()

    @initialize()
    def start(self) -> None:
        """Rules are switched off at random per example (swarm testing): every run starts with a
        network, a namespace and two endpoints, one of them attached."""
        network = self.hcn.create_network(network_doc("a", subnet=SUBNETS[0], gateway="10.0.0.1"))["ID"]
        namespace = self.hcn.add_namespace()
        endpoints = [
            self.hcn.create_endpoint(network, endpoint_doc(ip))["ID"] for ip in ("10.0.0.2", "10.0.0.3")
        ]
        self.hcn.modify_namespace(namespace, request("Add", endpoints[0]))
        self.seen = {"networks": [network], "endpoints": endpoints, "namespaces": [namespace]}

    def choose(self, data: st.DataObject, kind: str) -> str:
        """A live object four times in five; else one deleted, or one that never existed."""
        exists = {o["ID"] for o in self.hcn.snapshot()[kind]}
        live = [i for i in self.seen[kind] if i in exists]  # in creation order: IDs are random
        if live and data.draw(st.sampled_from(LIVE_FOUR_IN_FIVE)):
            return str(data.draw(st.sampled_from(live)))
        return str(data.draw(st.sampled_from([UNKNOWN, *self.seen[kind]])))

    def attempt(self, method: str, call: Callable[[], Any]) -> Any:
        before = self.path.read_bytes()
        count = self.hcn.counters().get(method, 0)
        try:
            return call()
        except HcnError:
            assert unchanged_but_counters(before, self.path)
            return None
        finally:
            assert self.hcn.counters()[method] == count + 1

    @rule(name=st.sampled_from(["a", "b", "A"]), subnet=st.sampled_from(SUBNETS))
    def create_network(self, name: str, subnet: str) -> None:
        doc = network_doc(name, subnet=subnet, gateway=subnet.replace(".0/29", ".1"))
        created = self.attempt("create_network", lambda: self.hcn.create_network(doc))
        if created:
            self.seen["networks"].append(created["ID"])

    @rule(data=st.data(), host=st.sampled_from(HOSTS), name=st.sampled_from([None, None, "e1", "E1", "e2"]))
    def create_endpoint(self, data: st.DataObject, host: int, name: str | None) -> None:
        """An address in the network's /29: .2-.6 assignable, .0/.7 network/broadcast, .1 the
        gateway, .8 outside the subnet."""
        network_id = self.choose(data, "networks")
        subnets = {
            n["ID"]: n["Ipams"][0]["Subnets"][0]["IpAddressPrefix"] for n in self.hcn.snapshot()["networks"]
        }
        ip = subnets.get(network_id, SUBNETS[0]).replace(".0/29", f".{host}")
        created = self.attempt(
            "create_endpoint", lambda: self.hcn.create_endpoint(network_id, endpoint_doc(ip, name))
        )
        if created:
            self.seen["endpoints"].append(created["ID"])

    @rule(data=st.data(), kind=st.sampled_from(["Add", "Remove"]))
    def modify_namespace(self, data: st.DataObject, kind: str) -> None:
        endpoint_id, namespace_id = self.choose(data, "endpoints"), self.choose(data, "namespaces")
        self.attempt(
            "modify_namespace", lambda: self.hcn.modify_namespace(namespace_id, request(kind, endpoint_id))
        )

    @rule(data=st.data())
    def delete_endpoint(self, data: st.DataObject) -> None:
        endpoint_id = self.choose(data, "endpoints")
        self.attempt("delete_endpoint", lambda: self.hcn.delete_endpoint(endpoint_id))

    @rule(data=st.data())
    def delete_network(self, data: st.DataObject) -> None:
        network_id = self.choose(data, "networks")
        self.attempt("delete_network", lambda: self.hcn.delete_network(network_id))

    @rule()
    def add_namespace(self) -> None:
        self.seen["namespaces"].append(self.hcn.add_namespace())

    @rule(data=st.data())
    def remove_namespace(self, data: st.DataObject) -> None:
        namespace_id = self.choose(data, "namespaces")
        existed = any(n["ID"] == namespace_id for n in self.hcn.snapshot()["namespaces"])
        try:
            self.hcn.remove_namespace(namespace_id)
        except ValueError:
            assert not existed
        else:
            assert existed

    @invariant()
    def hcn_invariants(self) -> None:
        snapshot = FakeHcn(self.path).snapshot()  # a new object validates the whole file
        networks = {n["ID"] for n in snapshot["networks"]}
        namespaces = {n["ID"]: n for n in snapshot["namespaces"]}
        held: set[tuple[str, str]] = set()
        for endpoint in snapshot["endpoints"]:
            assert endpoint["HostComputeNetwork"] in networks
            for config in endpoint["IpConfigurations"]:
                key = (endpoint["HostComputeNetwork"], config["IpAddress"])
                assert key not in held
                held.add(key)
            if "HostComputeNamespace" in endpoint:
                namespace = namespaces[endpoint["HostComputeNamespace"]]
                assert {"Type": "Endpoint", "Data": {"ID": endpoint["ID"]}} in namespace["Resources"]
        attached = sum(len(n["Resources"]) for n in namespaces.values())
        assert attached == sum("HostComputeNamespace" in e for e in snapshot["endpoints"])


TestHcnMachine = HcnMachine.TestCase
TestHcnMachine.settings = settings(max_examples=100, stateful_step_count=40, deadline=None)
