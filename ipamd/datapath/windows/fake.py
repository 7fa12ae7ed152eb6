"""``FakeHcn``: the ``Hcn`` protocol on any OS (``HCN_BACKEND=fake``), enforcing what HCN enforces with
HCN's HRESULTs, so that the Windows datapath runs on Linux in tests and in the demo.

State is one JSON file, shared by every FakeHcn on that path (a daemon and a test in two processes)
and kept across a daemon restart as HCN keeps its own. Every call takes an exclusive ``flock`` on
``<path>.lock``, loads and validates the file, applies the call and writes the file back atomically
(a temporary file renamed over it; no fsync: it is a fake, and every call writes at least its call
counter). A missing file is an empty HCN; a damaged one raises ``CorruptState`` naming the path.

Refusals (HcnError, ``message`` an ErrorRecord JSON). A refused call changes nothing but its call
counter (and uses up a pending ``after`` fault):

    every call with an ID argument
      E_INVALIDARG                     the ID is not a GUID (as hcn_ctypes answers: no GUID, no call)
    create_network
      HCN_E_INVALID_JSON               not a JSON object of HostComputeNetwork's keys; a value of the
                                       wrong JSON type; SchemaVersion other than 2.x
      HCN_E_INVALID_POLICY             a policy of an unknown Type, or Settings its struct lacks
      HCN_E_INVALID_NETWORK            no Name; a Type HCN does not have; no Ipams subnet; a subnet
                                       that is not an IPv4 prefix; overlapping subnets; a gateway
                                       outside its subnet; L2Bridge without one NetAdapterName policy
      HCN_E_NETWORK_ALREADY_EXISTS     another network has the Name
      HCN_E_ADAPTER_NOT_FOUND          no host adapter has the NetAdapterName
    create_endpoint
      HCN_E_NETWORK_NOT_FOUND          no network with that ID
      HCN_E_INVALID_JSON, _POLICY      as for networks
      HCN_E_INVALID_ENDPOINT           no IpConfigurations, one without IpAddress, a PrefixLength over
                                       32; HostComputeNetwork naming another network; the read-only
                                       HostComputeNamespace set; a bad MacAddress or route
      HCN_E_INVALID_IP                 an IP that is not IPv4, is outside every subnet ("not part of
                                       any configured subnet"), is a subnet's network, broadcast or
                                       gateway address, is listed twice, or is held by another
                                       endpoint of the network
      HCN_E_PORT_ALREADY_EXISTS        another endpoint has the Name (an endpoint is a switch port)
    get_endpoint, delete_endpoint, modify_namespace
      HCN_E_ENDPOINT_NOT_FOUND         no endpoint with that ID
    delete_endpoint
      HCN_E_ENTITY_HAS_REFERENCES      it is attached to a namespace (gone with the namespace)
    delete_network
      HCN_E_NETWORK_NOT_FOUND          no network with that ID
      HCN_E_ENTITY_HAS_REFERENCES      endpoints remain on it
    get_namespace, modify_namespace
      ERROR_NOT_FOUND                  no namespace with that ID: "Element not found", HNS's answer
                                       for an object it does not hold (GCN_E_NETCOMPARTMENT_NOT_FOUND
                                       is about the OS compartment behind a namespace)
    modify_namespace
      HCN_E_INVALID_JSON               not a ModifyNamespaceSettingRequest that adds or removes an
                                       endpoint (Settings {"EndpointId": GUID})
      HCN_E_ENDPOINT_ALREADY_ATTACHED  Add of an endpoint already in this namespace
      HCN_E_ENDPOINT_NAMESPACE_ALREADY_EXISTS   Add of an endpoint in another namespace
      HCN_E_ENDPOINT_NOT_ATTACHED      Remove of an endpoint not in this namespace
    list_networks, list_endpoints
      HCN_E_INVALID_JSON               not a HostComputeQuery (SchemaVersion required); a Filter that
                                       is not a JSON object of strings
      E_INVALIDARG                     a Filter key the fake does not model (networks: ID, Name, Type;
                                       endpoints: ID, Name, HostComputeNetwork or VirtualNetwork,
                                       HostComputeNamespace); an ID filter that is no GUID matches
                                       nothing

One way the fake is stricter than HCN, on purpose: HCN ignores an unknown or miscased key without a
word (so a typo is a silent bug on a real node); the fake refuses it with HCN_E_INVALID_JSON. IDs are
upper-case GUIDs, as HNS prints them, and are compared case-insensitively; names, network types in
filters and adapter names are compared case-insensitively too, as Windows compares object names.
Only IPv4 is modelled.

Namespaces and host adapters are made by others in real life (containerd, the host): ``add_namespace``,
``remove_namespace`` (containerd deleting the pod: endpoints in it become unattached), ``add_adapter``,
``remove_adapter``, and ``auto_adapters`` (stored in the state, default on): ``adapter_by_mac`` then
invents and records a stable "Ethernet N" name for an unknown MAC, so a sim-cloud daemon needs no
registration. Faults: ``inject(method, hresult, times=, delay=, after=)``, kept in the state so that a
test can inject into a running daemon's fake (an error, an error after the call took effect, or with
S_OK a slow call that succeeds); ``latency`` is slept before every call. Sleeps happen outside the
lock: a "hung" call does not stop other callers, only the one whose deadline must catch it.
"""

from __future__ import annotations

import contextlib
import copy
import ipaddress
import json
import math
import os
import re
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from ipamd.datapath.windows.hcn import (
    E_INVALIDARG,
    ERROR_NOT_FOUND,
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
    HCN_E_NETWORK_ALREADY_EXISTS,
    HCN_E_NETWORK_NOT_FOUND,
    HCN_E_PORT_ALREADY_EXISTS,
    S_OK,
    Document,
    HcnError,
)

if TYPE_CHECKING:
    from ipamd.datapath.windows.hcn import Hcn

__all__ = ["FAULTABLE", "HCN_CALLS", "CorruptState", "FakeHcn"]

# The protocol's HCN calls: counted by ``counters()``, and what ``inject`` takes (with adapter_by_mac,
# which is not an HCN call and is not counted).
HCN_CALLS = (
    "list_networks",
    "create_network",
    "delete_network",
    "list_endpoints",
    "create_endpoint",
    "get_endpoint",
    "delete_endpoint",
    "get_namespace",
    "modify_namespace",
)
FAULTABLE = (*HCN_CALLS, "adapter_by_mac")

_FORMAT = "cloud-cni-fake-hcn"
_VERSION = 1
_SCHEMA_VERSION = {"Major": 2, "Minor": 0}

NETWORK_TYPES = frozenset({"NAT", "ICS", "Transparent", "L2Bridge", "L2Tunnel", "Private", "Overlay"})
_NEEDS_ADAPTER = frozenset({"L2Bridge"})
NAMESPACE_TYPES = frozenset({"Host", "HostDefault", "Guest", "GuestDefault"})
_IPAM_TYPES = frozenset({"Static", "DHCP"})
_DEFAULT_ROUTE = ipaddress.IPv4Network("0.0.0.0/0")
_HYPER_V_OUI = "00-15-5D"
_MAC = re.compile(r"[0-9A-Fa-f]{2}([-:])(?:[0-9A-Fa-f]{2}\1){4}[0-9A-Fa-f]{2}")


class CorruptState(ValueError):
    """The state file is not one this module wrote: the message names the file and what is wrong."""


class _Refused(Exception):
    """A call HCN would refuse; ``_call`` turns it into HcnError(method, hresult, ErrorRecord)."""

    def __init__(self, hresult: int, message: str) -> None:
        super().__init__(message)
        self.hresult = hresult
        self.message = message


# --- document shapes --------------------------------------------------------------------------------
# A check is called with a value and where it sits ("endpoint.IpConfigurations[0]"); it raises _Refused.

_Check = Callable[[Any, str], None]


def _kind(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    return "an array" if isinstance(value, list) else "an object"


def _string(value: Any, where: str) -> None:
    if not isinstance(value, str):
        raise _Refused(HCN_E_INVALID_JSON, f"{where} must be a string, not {_kind(value)}")


def _boolean(value: Any, where: str) -> None:
    if not isinstance(value, bool):
        raise _Refused(HCN_E_INVALID_JSON, f"{where} must be a boolean, not {_kind(value)}")


def _unsigned(bits: int) -> _Check:
    top = (1 << bits) - 1

    def check(value: Any, where: str) -> None:
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= top:
            raise _Refused(HCN_E_INVALID_JSON, f"{where} must be an integer 0..{top}, not {value!r}")

    return check


_U8, _U16, _U32, _U64 = _unsigned(8), _unsigned(16), _unsigned(32), _unsigned(64)


def _array(item: _Check) -> _Check:
    def check(value: Any, where: str) -> None:
        if not isinstance(value, list):
            raise _Refused(HCN_E_INVALID_JSON, f"{where} must be an array, not {_kind(value)}")
        for index, element in enumerate(value):
            item(element, f"{where}[{index}]")

    return check


def _object(fields: Mapping[str, _Check], required: Iterable[str] = ()) -> _Check:
    """A JSON object with only these keys (spelt exactly), ``required`` ones present."""
    needed = tuple(required)

    def check(value: Any, where: str) -> None:
        if not isinstance(value, dict):
            raise _Refused(HCN_E_INVALID_JSON, f"{where} must be an object, not {_kind(value)}")
        for key, element in value.items():
            if key not in fields:
                raise _Refused(HCN_E_INVALID_JSON, f"{where} has no key {key!r} (keys: {', '.join(fields)})")
            fields[key](element, f"{where}.{key}")
        for key in needed:
            if key not in value:
                raise _Refused(HCN_E_INVALID_JSON, f"{where} needs {key!r}")

    return check


def _any_object(value: Any, where: str) -> None:
    if not isinstance(value, dict):
        raise _Refused(HCN_E_INVALID_JSON, f"{where} must be an object, not {_kind(value)}")


def _one_of(*allowed: str) -> _Check:
    def check(value: Any, where: str) -> None:
        if value not in allowed:
            raise _Refused(HCN_E_INVALID_JSON, f"{where} must be one of {', '.join(allowed)}, not {value!r}")

    return check


def _ipv4_text(value: Any, where: str) -> None:
    if _parse_ipv4(value) is None:
        raise _Refused(HCN_E_INVALID_JSON, f"{where} must be an IPv4 address, not {value!r}")


def _ipv4_prefix_text(value: Any, where: str) -> None:
    if _parse_prefix(value, strict=False) is None:
        raise _Refused(HCN_E_INVALID_JSON, f"{where} must be an IPv4 prefix, not {value!r}")


def _policies(kinds: Mapping[str, _Check | None], what: str) -> _Check:
    """An array of {Type, Settings}: an unknown Type, or Settings its struct does not have (where the
    fake knows the struct: ``None`` takes any object), is HCN_E_INVALID_POLICY."""
    shape = _array(_object({"Type": _string, "Settings": _any_object}, required=("Type",)))

    def check(value: Any, where: str) -> None:
        shape(value, where)
        for index, policy in enumerate(value):
            here = f"{where}[{index}]"
            if policy["Type"] not in kinds:
                raise _Refused(HCN_E_INVALID_POLICY, f"{here}.Type {policy['Type']!r} is not a {what} policy")
            settings = kinds[policy["Type"]]
            if settings is not None:
                try:
                    settings(policy.get("Settings", {}), f"{here}.Settings")
                except _Refused as exc:
                    raise _Refused(HCN_E_INVALID_POLICY, exc.message) from None

    return check


# hcsshim hcn/hcnpolicy.go: the policy types and the settings structs the fake checks.
_NETWORK_POLICIES: dict[str, _Check | None] = {
    "SourceMacAddress": _object({"SourceMacAddress": _string}),
    "NetAdapterName": _object({"NetworkAdapterName": _string}, required=("NetworkAdapterName",)),
    "VSwitchExtension": _object({"ExtensionID": _string, "Enable": _boolean}),
    "DrMacAddress": _object({"Address": _string}),
    "AutomaticDNS": _object({"Enable": _boolean}),
    "InterfaceConstraint": None,
    "ProviderAddress": _object({"ProviderAddress": _string}),
    "RemoteSubnetRoute": _object(
        {
            "DestinationPrefix": _ipv4_prefix_text,
            "IsolationId": _U16,
            "ProviderAddress": _string,
            "DistributedRouterMacAddress": _string,
        }
    ),
    "VxlanPort": _object({"Port": _U16}),
    "HostRoute": None,
    "SetPolicy": None,
    "L4Proxy": None,
    "LayerConstraint": _object({"LayerId": _string}),
    "NetworkACL": None,
}
_ACL = _object(
    {
        "Id": _string,
        "Protocols": _string,
        "Action": _one_of("Allow", "Block", "Pass"),
        "Direction": _one_of("In", "Out"),
        "LocalAddresses": _string,
        "RemoteAddresses": _string,
        "LocalPorts": _string,
        "RemotePorts": _string,
        "RuleType": _one_of("Host", "Switch"),
        "Priority": _U16,
    },
    required=("Action", "Direction"),
)
_ENDPOINT_POLICIES: dict[str, _Check | None] = {
    "PortMapping": _object(
        {"Protocol": _U32, "InternalPort": _U16, "ExternalPort": _U16, "VIP": _string, "Flags": _U32}
    ),
    "ACL": _ACL,
    "QOS": _object({"MaximumOutgoingBandwidthInBytes": _U64}),
    "L2Driver": None,
    "OutBoundNAT": _object(
        {
            "VirtualIP": _ipv4_text,
            "Exceptions": _array(_ipv4_prefix_text),
            "Destinations": _array(_ipv4_prefix_text),
            "Flags": _U32,
            "MaxPortPoolUsage": _U16,
        }
    ),
    "SDNRoute": _object(
        {"DestinationPrefix": _ipv4_prefix_text, "NextHop": _ipv4_text, "NeedEncap": _boolean}
    ),
    "L4Proxy": None,
    "L4WFPPROXY": None,
    "PortName": _object({"Name": _string}),
    "EncapOverhead": _object({"Overhead": _U16}),
    "Iov": None,
    "ProviderAddress": _object({"ProviderAddress": _string}),
    "InterfaceConstraint": None,
    "TierAcl": None,
}
_SUBNET_POLICIES: dict[str, _Check | None] = {
    "VLAN": _object({"IsolationId": _U32}, required=("IsolationId",)),
    "VSID": _object({"IsolationId": _U32}, required=("IsolationId",)),
}

_SCHEMA = _object({"Major": _U32, "Minor": _U32}, required=("Major", "Minor"))
_ROUTE = _object({"NextHop": _string, "DestinationPrefix": _string, "Metric": _U16})
_DNS = _object(
    {
        "Domain": _string,
        "Suffix": _string,
        "Search": _array(_string),
        "ServerList": _array(_string),
        "Options": _array(_string),
    }
)
_SUBNET = _object(
    {"IpAddressPrefix": _string, "Policies": _policies(_SUBNET_POLICIES, "subnet"), "Routes": _array(_ROUTE)}
)
_MAC_POOL = _object({"Ranges": _array(_object({"StartMacAddress": _string, "EndMacAddress": _string}))})
_NETWORK = _object(
    {
        "ID": _string,
        "Name": _string,
        "Type": _string,
        "Policies": _policies(_NETWORK_POLICIES, "network"),
        "MacPool": _MAC_POOL,
        "Dns": _DNS,
        "Ipams": _array(_object({"Type": _string, "Subnets": _array(_SUBNET)})),
        "Flags": _U32,
        "SchemaVersion": _SCHEMA,
    }
)
_ENDPOINT = _object(
    {
        "ID": _string,
        "Name": _string,
        "HostComputeNetwork": _string,
        "HostComputeNamespace": _string,
        "Policies": _policies(_ENDPOINT_POLICIES, "endpoint"),
        "IpConfigurations": _array(_object({"IpAddress": _string, "PrefixLength": _U8})),
        "Dns": _DNS,
        "Routes": _array(_ROUTE),
        "MacAddress": _string,
        "Flags": _U32,
        "SchemaVersion": _SCHEMA,
    }
)
_NAMESPACE = _object(
    {
        "ID": _string,
        "NamespaceId": _U32,
        "Type": _string,
        "Resources": _array(
            _object(
                {"Type": _one_of("Endpoint"), "Data": _object({"ID": _string}, required=("ID",))},
                required=("Type", "Data"),
            )
        ),
        "SchemaVersion": _SCHEMA,
    },
    required=("ID", "NamespaceId", "Type", "Resources", "SchemaVersion"),
)
_QUERY = _object({"SchemaVersion": _SCHEMA, "Flags": _U32, "Filter": _string}, required=("SchemaVersion",))
_MODIFY = _object(
    {"ResourceType": _string, "RequestType": _string, "Settings": _any_object},
    required=("ResourceType", "RequestType", "Settings"),
)
_ENDPOINT_REF = _object({"EndpointId": _string}, required=("EndpointId",))

# Filter keys: (the document's key, compared as GUIDs or as names).
_NETWORK_FILTER = {"ID": ("ID", True), "Name": ("Name", False), "Type": ("Type", False)}
_ENDPOINT_FILTER = {
    "ID": ("ID", True),
    "Name": ("Name", False),
    "HostComputeNetwork": ("HostComputeNetwork", True),
    "VirtualNetwork": ("HostComputeNetwork", True),  # the HNS v1 name hcsshim still filters on
    "HostComputeNamespace": ("HostComputeNamespace", True),
}


# --- values ------------------------------------------------------------------------------------------


def _guid(value: object) -> str | None:
    """The canonical (upper-case, 8-4-4-4-12) form of a GUID, or None."""
    if not isinstance(value, str):
        return None
    try:
        return str(uuid.UUID(value)).upper()
    except ValueError:
        return None


def _guid_arg(value: object, what: str) -> str:
    canonical = _guid(value)
    if canonical is None:
        raise _Refused(E_INVALIDARG, f"{what} is not a GUID: {value!r}")
    return canonical


def _new_guid() -> str:
    return str(uuid.uuid4()).upper()


def _mac(value: object) -> str | None:
    """The canonical (upper-case, dash-separated, as Windows prints it) form of a MAC, or None."""
    if not isinstance(value, str) or _MAC.fullmatch(value) is None:
        return None
    return value.replace(":", "-").upper()


def _parse_ipv4(value: object) -> ipaddress.IPv4Address | None:
    if not isinstance(value, str):
        return None
    try:
        return ipaddress.IPv4Address(value)
    except ValueError:
        return None


def _parse_prefix(value: object, *, strict: bool) -> ipaddress.IPv4Network | None:
    if not isinstance(value, str) or "/" not in value:
        return None
    try:
        return ipaddress.IPv4Network(value, strict=strict)
    except ValueError:
        return None


def _same_name(a: object, b: object) -> bool:
    return isinstance(a, str) and isinstance(b, str) and a.casefold() == b.casefold()


def _json_copy(value: object, what: str) -> Any:
    """A deep copy through JSON, as the binding sends it: anything JSON cannot carry is refused."""
    try:
        return json.loads(json.dumps(value, allow_nan=False))
    except (TypeError, ValueError) as exc:
        raise _Refused(HCN_E_INVALID_JSON, f"{what} is not JSON: {exc}") from None


def _check_schema_version(doc: Document, what: str) -> None:
    version = doc.get("SchemaVersion")
    if version is not None and version["Major"] != 2:
        raise _Refused(HCN_E_INVALID_JSON, f"{what}.SchemaVersion {version} is not 2.x")


@dataclass(frozen=True)
class _Subnet:
    prefix: ipaddress.IPv4Network
    gateways: frozenset[ipaddress.IPv4Address]

    def reserved(self, ip: ipaddress.IPv4Address) -> str | None:
        if ip in self.gateways:
            return f"the gateway of {self.prefix}"
        if self.prefix.prefixlen < 31 and ip in (self.prefix.network_address, self.prefix.broadcast_address):
            return f"the network or broadcast address of {self.prefix}"
        return None


def _subnets(network: Document) -> list[_Subnet]:
    """A network's subnets, each with its gateways (the NextHop of its 0.0.0.0/0 routes)."""
    found: list[_Subnet] = []
    for i, ipam in enumerate(network.get("Ipams", [])):
        if ipam.get("Type", "Static") not in _IPAM_TYPES:
            raise _Refused(
                HCN_E_INVALID_NETWORK, f"network.Ipams[{i}].Type {ipam['Type']!r} is not Static or DHCP"
            )
        for j, subnet in enumerate(ipam.get("Subnets", [])):
            where = f"network.Ipams[{i}].Subnets[{j}]"
            prefix = _parse_prefix(subnet.get("IpAddressPrefix"), strict=True)
            if prefix is None:
                raise _Refused(
                    HCN_E_INVALID_NETWORK,
                    f"{where}.IpAddressPrefix must be an IPv4 prefix without host bits, "
                    f"not {subnet.get('IpAddressPrefix')!r}",
                )
            gateways: set[ipaddress.IPv4Address] = set()
            for k, route in enumerate(subnet.get("Routes", [])):
                hop, destination = _route(route, HCN_E_INVALID_NETWORK, f"{where}.Routes[{k}]")
                if destination == _DEFAULT_ROUTE and hop is not None:
                    if hop not in prefix or _Subnet(prefix, frozenset()).reserved(hop):
                        raise _Refused(
                            HCN_E_INVALID_NETWORK, f"{where}: gateway {hop} is not a host of {prefix}"
                        )
                    gateways.add(hop)
            for other in found:
                if other.prefix.overlaps(prefix):
                    raise _Refused(HCN_E_INVALID_NETWORK, f"{where}: {prefix} overlaps {other.prefix}")
            found.append(_Subnet(prefix, frozenset(gateways)))
    if not found:
        raise _Refused(HCN_E_INVALID_NETWORK, "network needs at least one Ipams subnet")
    return found


def _route(
    route: Document, hresult: int, where: str
) -> tuple[ipaddress.IPv4Address | None, ipaddress.IPv4Network | None]:
    hop = destination = None
    if "NextHop" in route:
        hop = _parse_ipv4(route["NextHop"])
        if hop is None:
            raise _Refused(hresult, f"{where}.NextHop must be an IPv4 address, not {route['NextHop']!r}")
    if "DestinationPrefix" in route:
        destination = _parse_prefix(route["DestinationPrefix"], strict=False)
        if destination is None:
            raise _Refused(
                hresult,
                f"{where}.DestinationPrefix must be an IPv4 prefix, not {route['DestinationPrefix']!r}",
            )
    return hop, destination


def _adapter_policy(network: Document) -> str | None:
    names = [
        p.get("Settings", {}).get("NetworkAdapterName")
        for p in network.get("Policies", [])
        if p["Type"] == "NetAdapterName"
    ]
    if len(names) > 1:
        raise _Refused(HCN_E_INVALID_NETWORK, "network has more than one NetAdapterName policy")
    if names and not names[0]:
        raise _Refused(HCN_E_INVALID_NETWORK, "network's NetAdapterName policy names no adapter")
    return names[0] if names else None


def _endpoint_ips(endpoint: Document) -> list[str]:
    return [config["IpAddress"] for config in endpoint.get("IpConfigurations", [])]


# --- state -------------------------------------------------------------------------------------------


@dataclass
class _Fault:
    method: str
    hresult: int
    times: int
    delay: float
    after: bool


@dataclass
class _State:
    networks: dict[str, Document] = field(default_factory=dict)
    endpoints: dict[str, Document] = field(default_factory=dict)
    namespaces: dict[str, Document] = field(default_factory=dict)
    adapters: dict[str, str] = field(default_factory=dict)  # canonical MAC -> adapter name
    auto_adapters: bool = True
    faults: list[_Fault] = field(default_factory=list)
    counters: dict[str, int] = field(default_factory=dict)
    next_mac: int = 1
    next_compartment: int = 2  # compartment 1 is the host's

    def dump(self) -> bytes:
        doc = {
            "format": _FORMAT,
            "version": _VERSION,
            "networks": self.networks,
            "endpoints": self.endpoints,
            "namespaces": self.namespaces,
            "adapters": self.adapters,
            "auto_adapters": self.auto_adapters,
            "faults": [asdict(fault) for fault in self.faults],
            "counters": self.counters,
            "next_mac": self.next_mac,
            "next_compartment": self.next_compartment,
        }
        # One line through json's C encoder (indent would take the pure-Python one: 5x slower per call).
        return (json.dumps(doc, separators=(",", ":")) + "\n").encode()

    def take_fault(self, method: str) -> _Fault | None:
        for index, fault in enumerate(self.faults):
            if fault.method == method:
                fault.times -= 1
                if fault.times == 0:
                    del self.faults[index]
                return _Fault(fault.method, fault.hresult, 1, fault.delay, fault.after)
        return None


def _load(raw: bytes, path: Path, *, check: bool = True) -> _State:
    """The state in ``raw``; ``check=False`` skips validation, for bytes that passed it before."""
    try:
        doc = json.loads(raw)
    except ValueError as exc:
        raise CorruptState(f"fake HCN state file {path} is not JSON: {exc}") from None
    try:
        return _parse_state(doc, check=check)
    except (_Refused, _Damaged) as exc:
        raise CorruptState(f"fake HCN state file {path} is damaged: {exc}") from None


class _Damaged(Exception):
    pass


def _expect(value: Any, kind: type[Any], what: str) -> Any:
    if not isinstance(value, kind) or (kind is not bool and isinstance(value, bool)):
        raise _Damaged(f"{what} must be {kind.__name__}, not {_kind(value)}")
    return value


def _counter(value: Any, what: str) -> int:
    number: int = _expect(value, int, what)
    if number < 0:
        raise _Damaged(f"{what} is negative")
    return number


def _objects(doc: dict[str, Any], key: str, shape: _Check, check: bool) -> dict[str, Document]:
    objects: dict[str, Document] = _expect(doc[key], dict, key)
    for object_id, obj in objects.items() if check else ():
        shape(obj, f"{key}[{object_id}]")
        if _guid(object_id) != object_id or obj["ID"] != object_id:
            raise _Damaged(f"{key}[{object_id}] is not filed under its upper-case GUID ID")
    return objects


def _parse_state(doc: Any, *, check: bool) -> _State:
    """The state document, checked against HCN's own invariants: every stored document is one HCN
    would have accepted, every reference resolves both ways, no address is held twice in a network."""
    _expect(doc, dict, "the document")
    keys = set(_State.__dataclass_fields__) | {"format", "version"}
    if doc.get("format") != _FORMAT or doc.get("version") != _VERSION:
        raise _Damaged(f"not a {_FORMAT} version {_VERSION} document")
    if set(doc) != keys:
        raise _Damaged(f"keys {sorted(doc)} are not {sorted(keys)}")
    state = _State(
        networks=_objects(doc, "networks", _NETWORK, check),
        endpoints=_objects(doc, "endpoints", _ENDPOINT, check),
        namespaces=_objects(doc, "namespaces", _NAMESPACE, check),
        adapters=_expect(doc["adapters"], dict, "adapters"),
        auto_adapters=_expect(doc["auto_adapters"], bool, "auto_adapters"),
        counters=_expect(doc["counters"], dict, "counters"),
        next_mac=_counter(doc["next_mac"], "next_mac"),
        next_compartment=_counter(doc["next_compartment"], "next_compartment"),
    )
    for index, item in enumerate(_expect(doc["faults"], list, "faults")):
        entry = _expect(item, dict, f"faults[{index}]")
        try:
            fault = _Fault(**entry)
            _check_fault(fault)
        except (TypeError, ValueError) as exc:
            raise _Damaged(f"faults[{index}]: {exc}") from None
        state.faults.append(fault)
    if check:
        _check_state(state)
    return state


def _check_state(state: _State) -> None:
    for mac, name in state.adapters.items():
        if _mac(mac) != mac or not isinstance(name, str) or not name:
            raise _Damaged(f"adapters[{mac!r}] is not a canonical MAC with a name")
    for method, count in state.counters.items():
        if method not in HCN_CALLS:
            raise _Damaged(f"counters has {method!r}, not an HCN call")
        _counter(count, f"counters[{method}]")
    subnets: dict[str, list[_Subnet]] = {}
    for network_id, network in state.networks.items():
        if not network.get("Name") or network.get("Type") not in NETWORK_TYPES:
            raise _Damaged(f"network {network_id} has no Name or an unknown Type")
        subnets[network_id] = _subnets(network)
    held: set[tuple[str, str]] = set()
    for endpoint_id, endpoint in state.endpoints.items():
        network_id = endpoint.get("HostComputeNetwork", "")
        if network_id not in state.networks:
            raise _Damaged(f"endpoint {endpoint_id} is on network {network_id}, which does not exist")
        for ip in _endpoint_ips(endpoint):
            address = _parse_ipv4(ip)
            if address is None or not any(address in s.prefix for s in subnets[network_id]):
                raise _Damaged(f"endpoint {endpoint_id} holds {ip!r}, not an address of its network")
            if (network_id, ip) in held:
                raise _Damaged(f"{ip} is held by two endpoints of network {network_id}")
            held.add((network_id, ip))
        namespace_id = endpoint.get("HostComputeNamespace")
        if namespace_id is not None and endpoint_id not in _attached(state.namespaces.get(namespace_id)):
            raise _Damaged(f"endpoint {endpoint_id} is attached to {namespace_id}, which does not list it")
    for namespace_id, namespace in state.namespaces.items():
        if namespace["Type"] not in NAMESPACE_TYPES:
            raise _Damaged(f"namespace {namespace_id} has Type {namespace['Type']!r}")
        for endpoint_id in _attached(namespace):
            member = state.endpoints.get(endpoint_id)
            if member is None or member.get("HostComputeNamespace") != namespace_id:
                raise _Damaged(f"namespace {namespace_id} lists endpoint {endpoint_id}, which is not in it")


def _attached(namespace: Document | None) -> list[str]:
    if namespace is None:
        return []
    return [resource["Data"]["ID"] for resource in namespace["Resources"] if resource["Type"] == "Endpoint"]


def _check_fault(fault: _Fault) -> None:
    if fault.method not in FAULTABLE:
        raise ValueError(f"method must be one of {', '.join(FAULTABLE)}, not {fault.method!r}")
    if (
        isinstance(fault.hresult, bool)
        or not isinstance(fault.hresult, int)
        or not 0 <= fault.hresult <= 0xFFFFFFFF
    ):
        raise ValueError(f"hresult must be an HRESULT (0..0xFFFFFFFF), not {fault.hresult!r}")
    if fault.hresult == S_OK and not fault.delay:
        raise ValueError("an S_OK fault (a slow call that succeeds) needs a delay")
    if isinstance(fault.times, bool) or not isinstance(fault.times, int) or fault.times < 1:
        raise ValueError(f"times must be an integer >= 1, not {fault.times!r}")
    if (
        isinstance(fault.delay, bool)
        or not isinstance(fault.delay, int | float)
        or not math.isfinite(fault.delay)
        or fault.delay < 0
    ):
        raise ValueError(f"delay must be a number of seconds >= 0, not {fault.delay!r}")
    if not isinstance(fault.after, bool):
        raise ValueError(f"after must be a boolean, not {fault.after!r}")


def _flock(fd: int) -> None:
    try:
        import fcntl  # POSIX only: imported here so that the module imports on Windows
    except ImportError as exc:
        raise RuntimeError("FakeHcn needs fcntl.flock: it runs on Linux (HCN_BACKEND=fake)") from exc
    fcntl.flock(fd, fcntl.LOCK_EX)


@dataclass
class _Transaction:
    raw: bytes | None
    path: Path
    state: _State

    def reload(self) -> None:
        """Back to the state as read, dropping whatever the call changed."""
        self.state = _load(self.raw, self.path, check=False) if self.raw is not None else _State()


# --- the fake ----------------------------------------------------------------------------------------

_T = TypeVar("_T")


class FakeHcn:
    """HCN in one JSON file (see the module docstring). ``sleep`` is how latency and injected delays
    pass (tests hand in a recorder)."""

    name = "fake"

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        latency: float = 0.0,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if isinstance(latency, bool) or not isinstance(latency, int | float) or not latency >= 0:
            raise ValueError(f"latency must be a number of seconds >= 0, not {latency!r}")
        self.path = Path(path)
        self.lock_path = self.path.with_name(self.path.name + ".lock")
        self.latency = float(latency)
        self._sleep = sleep
        self._valid: bytes | None = None  # the last file content that passed validation
        self._cached: tuple[bytes, _State] | None = None  # the file as this object left it, parsed
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)  # no directory: an empty HCN too
        with self._transaction(write=False):
            pass  # a damaged file is reported now, at start, not at the first pod

    # --- the Hcn protocol ----------------------------------------------------------------------------

    def list_networks(self, query: Document) -> list[Document]:
        return self._call("list_networks", lambda s: _listed(s.networks, query, _NETWORK_FILTER))

    def create_network(self, doc: Document) -> Document:
        return self._call("create_network", lambda s: _create_network(s, doc))

    def delete_network(self, network_id: str) -> None:
        self._call("delete_network", lambda s: _delete_network(s, network_id))

    def list_endpoints(self, query: Document) -> list[Document]:
        return self._call("list_endpoints", lambda s: _listed(s.endpoints, query, _ENDPOINT_FILTER))

    def create_endpoint(self, network_id: str, doc: Document) -> Document:
        return self._call("create_endpoint", lambda s: _create_endpoint(s, network_id, doc))

    def get_endpoint(self, endpoint_id: str) -> Document:
        return self._call("get_endpoint", lambda s: _endpoint(s, endpoint_id))

    def delete_endpoint(self, endpoint_id: str) -> None:
        self._call("delete_endpoint", lambda s: _delete_endpoint(s, endpoint_id))

    def get_namespace(self, namespace_id: str) -> Document:
        return self._call("get_namespace", lambda s: _namespace(s, namespace_id))

    def modify_namespace(self, namespace_id: str, request: Document) -> None:
        self._call("modify_namespace", lambda s: _modify_namespace(s, namespace_id, request))

    def adapter_by_mac(self, mac: str) -> str | None:
        """The host adapter with this MAC (any case, ``:`` or ``-``); with ``auto_adapters`` an
        unknown MAC gets a new "Ethernet N" name, recorded, else None. Not an HCN call: not counted."""
        return self._call("adapter_by_mac", lambda s: _adapter_by_mac(s, mac))

    def close(self) -> None:
        """Nothing held between calls."""

    # --- what containerd and the host do --------------------------------------------------------------

    def add_namespace(self, namespace_id: str | None = None, *, namespace_type: str = "HostDefault") -> str:
        """A pod's namespace, as containerd creates it (a new GUID unless given); returns its ID."""
        if namespace_type not in NAMESPACE_TYPES:
            raise ValueError(
                f"namespace_type must be one of {sorted(NAMESPACE_TYPES)}, not {namespace_type!r}"
            )
        canonical = _new_guid() if namespace_id is None else _guid(namespace_id)
        if canonical is None:
            raise ValueError(f"namespace_id is not a GUID: {namespace_id!r}")
        with self._transaction() as tx:
            if canonical in tx.state.namespaces:
                raise ValueError(f"namespace {canonical} already exists")
            tx.state.namespaces[canonical] = {
                "ID": canonical,
                "NamespaceId": tx.state.next_compartment,
                "Type": namespace_type,
                "Resources": [],
                "SchemaVersion": dict(_SCHEMA_VERSION),
            }
            tx.state.next_compartment += 1
        return canonical

    def remove_namespace(self, namespace_id: str) -> None:
        """containerd deleting the pod: the namespace goes; its endpoints stay, no longer attached."""
        canonical = _guid(namespace_id)
        with self._transaction() as tx:
            namespace = tx.state.namespaces.pop(canonical or "", None)
            if namespace is None:
                raise ValueError(f"no namespace {namespace_id!r}")
            for endpoint_id in _attached(namespace):
                tx.state.endpoints[endpoint_id].pop("HostComputeNamespace", None)

    def add_adapter(self, mac: str, name: str) -> None:
        """A host adapter (re-adding a MAC renames it)."""
        canonical = _mac(mac)
        if canonical is None:
            raise ValueError(f"not a MAC address: {mac!r}")
        if not isinstance(name, str) or not name.strip():
            raise ValueError(f"an adapter needs a name, not {name!r}")
        with self._transaction() as tx:
            for other_mac, other in tx.state.adapters.items():
                if other_mac != canonical and _same_name(other, name):
                    raise ValueError(f"adapter {other_mac} is already named {other!r}")
            tx.state.adapters[canonical] = name

    def remove_adapter(self, mac: str) -> None:
        canonical = _mac(mac)
        with self._transaction() as tx:
            if tx.state.adapters.pop(canonical or "", None) is None:
                raise ValueError(f"no adapter with MAC {mac!r}")

    @property
    def auto_adapters(self) -> bool:
        with self._transaction(write=False) as tx:
            return tx.state.auto_adapters

    @auto_adapters.setter
    def auto_adapters(self, enabled: bool) -> None:
        if not isinstance(enabled, bool):
            raise ValueError(f"auto_adapters is a boolean, not {enabled!r}")
        with self._transaction() as tx:
            tx.state.auto_adapters = enabled

    # --- faults and introspection ----------------------------------------------------------------------

    def inject(
        self, method: str, hresult: int, *, times: int = 1, delay: float = 0.0, after: bool = False
    ) -> None:
        """The next ``times`` calls of ``method`` sleep ``delay`` seconds, then fail with ``hresult``;
        with ``after`` the call takes effect first (HCN created the endpoint, then reported an error),
        unless HCN would have refused it anyway, which is then the error. ``hresult`` S_OK (with a
        delay) is a slow call that succeeds: it takes effect once the delay is over, or with ``after``
        at once, only the answer being late. Faults queue in order."""
        fault = _Fault(
            method, hresult & 0xFFFFFFFF if isinstance(hresult, int) else hresult, times, delay, after
        )
        _check_fault(fault)
        with self._transaction() as tx:
            tx.state.faults.append(fault)

    def clear_faults(self) -> None:
        with self._transaction() as tx:
            tx.state.faults.clear()

    def snapshot(self) -> dict[str, Any]:
        """Everything HCN and the host hold: networks, endpoints, namespaces (lists in ID order, as
        the calls return them), adapters (MAC -> name), auto_adapters, pending faults."""
        with self._transaction(write=False) as tx:
            state = tx.state
            return {
                "networks": list(state.networks.values()),
                "endpoints": list(state.endpoints.values()),
                "namespaces": list(state.namespaces.values()),
                "adapters": dict(state.adapters),
                "auto_adapters": state.auto_adapters,
                "faults": [asdict(fault) for fault in state.faults],
            }

    def counters(self) -> dict[str, int]:
        """Calls per HCN method since the last reset, refused and faulted calls included."""
        with self._transaction(write=False) as tx:
            return dict(tx.state.counters)

    def reset_counters(self) -> None:
        with self._transaction() as tx:
            tx.state.counters.clear()

    # --- machinery -----------------------------------------------------------------------------------

    def _call(self, method: str, apply: Callable[[_State], _T]) -> _T:
        if self.latency:
            self._sleep(self.latency)
        refusal: HcnError | None = None
        result: _T | None = None
        with self._transaction() as tx:
            fault = _bookkeeping(tx.state, method)
            if fault is None or fault.after:
                try:
                    result = apply(tx.state)
                except _Refused as exc:
                    refusal = _error(method, exc.hresult, exc.message)
                    tx.reload()
                    _bookkeeping(tx.state, method)
        if fault is not None and fault.delay:
            self._sleep(fault.delay)
        if fault is not None and fault.hresult == S_OK and not fault.after:
            with self._transaction() as tx:  # a slow call: it takes effect now, counted already
                try:
                    result = apply(tx.state)
                except _Refused as exc:
                    refusal = _error(method, exc.hresult, exc.message)
                    tx.reload()
        if refusal is not None:
            raise refusal
        if fault is not None and fault.hresult != S_OK:
            when = "after the call took effect" if fault.after else "instead of the call"
            raise _error(method, fault.hresult, f"injected fault ({when})")
        # A copy: what the caller gets is never the state kept for the next call.
        return copy.deepcopy(result)  # type: ignore[return-value]  # None where the method returns None

    @contextlib.contextmanager
    def _transaction(self, *, write: bool = True) -> Iterator[_Transaction]:
        """The state under the lock; written back (if changed) unless the body raises."""
        fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o600)
        try:
            _flock(fd)
            try:
                raw: bytes | None = self.path.read_bytes()
            except FileNotFoundError:
                raw = None
            # The state this object left in the file is kept parsed: while nobody else has written
            # the file since, it is used as it is instead of being parsed again (the parse is most
            # of a call's cost once HCN holds a hundred endpoints). Taken, not shared: a body that
            # raises leaves no cached state behind.
            cached, self._cached = self._cached, None
            if raw is None:
                state = _State()
            elif cached is not None and cached[0] == raw:
                state = cached[1]
            else:
                state = _load(raw, self.path, check=raw != self._valid)
                self._valid = raw
            tx = _Transaction(raw, self.path, state)
            yield tx
            data = raw
            if write:
                data = tx.state.dump()
                if data != raw:
                    tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
                    tmp.write_bytes(data)
                    os.replace(tmp, self.path)
                    self._valid = data  # written from a validated state by the rules
            if data is not None:
                self._cached = (data, tx.state)
        finally:
            os.close(fd)  # releases the flock


def _bookkeeping(state: _State, method: str) -> _Fault | None:
    if method in HCN_CALLS:
        state.counters[method] = state.counters.get(method, 0) + 1
    return state.take_fault(method)


def _error(method: str, hresult: int, text: str) -> HcnError:
    """HcnError with HCN's ErrorRecord as the message, as the binding passes it on."""
    return HcnError(method, hresult, json.dumps({"Success": False, "Error": text, "ErrorCode": hresult}))


# --- the calls, on a loaded state: check everything, then change it -----------------------------------


def _listed(
    objects: dict[str, Document], query: Document, keys: Mapping[str, tuple[str, bool]]
) -> list[Document]:
    query = _json_copy(query, "query")
    _QUERY(query, "query")
    _check_schema_version(query, "query")
    text = query.get("Filter", "")
    wanted: Any = {}
    if text:
        try:
            wanted = json.loads(text)
        except ValueError:
            raise _Refused(HCN_E_INVALID_JSON, f"query.Filter is not JSON: {text!r}") from None
    if not isinstance(wanted, dict) or not all(isinstance(v, str) for v in wanted.values()):
        raise _Refused(HCN_E_INVALID_JSON, f"query.Filter must be a JSON object of strings: {text!r}")
    for key in wanted:
        if key not in keys:
            raise _Refused(
                E_INVALIDARG, f"query.Filter key {key!r} is not one the fake models ({', '.join(keys)})"
            )

    def matches(doc: Document) -> bool:
        for key, value in wanted.items():
            field_name, is_guid = keys[key]
            have = doc.get(field_name)
            if is_guid:
                if have is None or _guid(value) != have:
                    return False
            elif not _same_name(have, value):
                return False
        return True

    return [doc for doc in objects.values() if matches(doc)]


def _create_network(state: _State, doc: Document) -> Document:
    network: Document = _json_copy(doc, "network")
    _NETWORK(network, "network")
    _check_schema_version(network, "network")
    name = network.get("Name")
    if not name:
        raise _Refused(HCN_E_INVALID_NETWORK, "network needs a Name")
    if network.get("Type") not in NETWORK_TYPES:
        raise _Refused(
            HCN_E_INVALID_NETWORK,
            f"network.Type {network.get('Type')!r} is not one of {sorted(NETWORK_TYPES)}",
        )
    _subnets(network)
    adapter = _adapter_policy(network)
    if adapter is None and network["Type"] in _NEEDS_ADAPTER:
        raise _Refused(HCN_E_INVALID_NETWORK, f"a {network['Type']} network needs a NetAdapterName policy")
    for other in state.networks.values():
        if _same_name(other["Name"], name):
            raise _Refused(
                HCN_E_NETWORK_ALREADY_EXISTS, f"network {other['ID']} is already named {other['Name']!r}"
            )
    if adapter is not None and not any(_same_name(adapter, known) for known in state.adapters.values()):
        raise _Refused(HCN_E_ADAPTER_NOT_FOUND, f"no host adapter is named {adapter!r}")
    network["ID"] = _new_guid()  # HCN's own GUID: hcsshim passes the zero GUID and reads this back
    network.setdefault("Flags", 0)
    network.setdefault("SchemaVersion", dict(_SCHEMA_VERSION))
    state.networks[network["ID"]] = network
    return network


def _delete_network(state: _State, network_id: str) -> None:
    key = _guid_arg(network_id, "network ID")
    if key not in state.networks:
        raise _Refused(HCN_E_NETWORK_NOT_FOUND, f"no network {key}")
    users = [e["ID"] for e in state.endpoints.values() if e["HostComputeNetwork"] == key]
    if users:
        raise _Refused(HCN_E_ENTITY_HAS_REFERENCES, f"network {key} still has endpoints {', '.join(users)}")
    del state.networks[key]


def _create_endpoint(state: _State, network_id: str, doc: Document) -> Document:
    key = _guid_arg(network_id, "network ID")
    network = state.networks.get(key)
    if network is None:
        raise _Refused(HCN_E_NETWORK_NOT_FOUND, f"no network {key}")
    endpoint: Document = _json_copy(doc, "endpoint")
    _ENDPOINT(endpoint, "endpoint")
    _check_schema_version(endpoint, "endpoint")
    if "HostComputeNetwork" in endpoint and _guid(endpoint["HostComputeNetwork"]) != key:
        raise _Refused(
            HCN_E_INVALID_ENDPOINT,
            f"endpoint.HostComputeNetwork {endpoint['HostComputeNetwork']!r} is not {key}",
        )
    if endpoint.get("HostComputeNamespace"):
        raise _Refused(
            HCN_E_INVALID_ENDPOINT, "endpoint.HostComputeNamespace is set by attaching, not on create"
        )
    configs = endpoint.get("IpConfigurations", [])
    if not configs:
        raise _Refused(HCN_E_INVALID_ENDPOINT, "endpoint needs IpConfigurations")
    mac = endpoint.get("MacAddress")
    if mac is not None and _mac(mac) is None:
        raise _Refused(HCN_E_INVALID_ENDPOINT, f"endpoint.MacAddress {mac!r} is not a MAC address")
    for index, route in enumerate(endpoint.get("Routes", [])):
        _route(route, HCN_E_INVALID_ENDPOINT, f"endpoint.Routes[{index}]")
    subnets = _subnets(network)
    held = {
        ip
        for other in state.endpoints.values()
        if other["HostComputeNetwork"] == key
        for ip in _endpoint_ips(other)
    }
    mine: set[ipaddress.IPv4Address] = set()
    prefix_lengths: list[int] = []
    for index, config in enumerate(configs):
        where = f"endpoint.IpConfigurations[{index}]"
        if "IpAddress" not in config:
            raise _Refused(HCN_E_INVALID_ENDPOINT, f"{where} needs IpAddress")
        if config.get("PrefixLength", 0) > 32:
            raise _Refused(
                HCN_E_INVALID_ENDPOINT, f"{where}.PrefixLength {config['PrefixLength']} is over 32"
            )
        ip = _parse_ipv4(config["IpAddress"])
        if ip is None:
            raise _Refused(
                HCN_E_INVALID_IP, f"{where}.IpAddress {config['IpAddress']!r} is not an IPv4 address"
            )
        subnet = next((s for s in subnets if ip in s.prefix), None)
        if subnet is None:
            raise _Refused(HCN_E_INVALID_IP, f"{ip} is not part of any subnet of network {key}")
        reason = subnet.reserved(ip)
        if reason:
            raise _Refused(HCN_E_INVALID_IP, f"{ip} is {reason}")
        if ip in mine:
            raise _Refused(HCN_E_INVALID_IP, f"{ip} is listed twice")
        if str(ip) in held:
            raise _Refused(HCN_E_INVALID_IP, f"{ip} is held by another endpoint of network {key}")
        mine.add(ip)
        prefix_lengths.append(subnet.prefix.prefixlen)
    name = endpoint.get("Name")
    for other in state.endpoints.values():
        if name and _same_name(other.get("Name"), name):
            raise _Refused(
                HCN_E_PORT_ALREADY_EXISTS, f"endpoint {other['ID']} is already named {other['Name']!r}"
            )
    # Accepted: what HCN fills in.
    endpoint["ID"] = _new_guid()
    endpoint["HostComputeNetwork"] = key
    for config, prefix_length in zip(configs, prefix_lengths, strict=True):
        config["IpAddress"] = str(ipaddress.IPv4Address(config["IpAddress"]))
        config.setdefault("PrefixLength", prefix_length)
    if mac is None:
        n = state.next_mac
        state.next_mac += 1
        mac = f"{_HYPER_V_OUI}-{n >> 16 & 0xFF:02X}-{n >> 8 & 0xFF:02X}-{n & 0xFF:02X}"
    endpoint["MacAddress"] = _mac(mac)
    endpoint.setdefault("Flags", 0)
    endpoint.setdefault("SchemaVersion", dict(_SCHEMA_VERSION))
    state.endpoints[endpoint["ID"]] = endpoint
    return endpoint


def _endpoint(state: _State, endpoint_id: str) -> Document:
    key = _guid_arg(endpoint_id, "endpoint ID")
    endpoint = state.endpoints.get(key)
    if endpoint is None:
        raise _Refused(HCN_E_ENDPOINT_NOT_FOUND, f"no endpoint {key}")
    return endpoint


def _delete_endpoint(state: _State, endpoint_id: str) -> None:
    endpoint = _endpoint(state, endpoint_id)
    if "HostComputeNamespace" in endpoint:
        raise _Refused(
            HCN_E_ENTITY_HAS_REFERENCES,
            f"endpoint {endpoint['ID']} is attached to namespace {endpoint['HostComputeNamespace']}",
        )
    del state.endpoints[endpoint["ID"]]


def _namespace(state: _State, namespace_id: str) -> Document:
    key = _guid_arg(namespace_id, "namespace ID")
    namespace = state.namespaces.get(key)
    if namespace is None:
        raise _Refused(ERROR_NOT_FOUND, f"Element not found: no namespace {key}")
    return namespace


def _modify_namespace(state: _State, namespace_id: str, request: Document) -> None:
    namespace = _namespace(state, namespace_id)  # HcnOpenNamespace comes before the request is read
    request = _json_copy(request, "request")
    _MODIFY(request, "request")
    if request["ResourceType"] != "Endpoint":
        raise _Refused(
            HCN_E_INVALID_JSON, f"request.ResourceType {request['ResourceType']!r}: the fake models Endpoint"
        )
    if request["RequestType"] not in ("Add", "Remove"):
        raise _Refused(
            HCN_E_INVALID_JSON, f"request.RequestType {request['RequestType']!r}: the fake models Add, Remove"
        )
    _ENDPOINT_REF(request["Settings"], "request.Settings")
    endpoint_key = _guid(request["Settings"]["EndpointId"])
    if endpoint_key is None:
        raise _Refused(
            HCN_E_INVALID_JSON,
            f"request.Settings.EndpointId {request['Settings']['EndpointId']!r} is not a GUID",
        )
    endpoint = state.endpoints.get(endpoint_key)
    if endpoint is None:
        raise _Refused(HCN_E_ENDPOINT_NOT_FOUND, f"no endpoint {endpoint_key}")
    current = endpoint.get("HostComputeNamespace")
    if request["RequestType"] == "Add":
        if current == namespace["ID"]:
            raise _Refused(
                HCN_E_ENDPOINT_ALREADY_ATTACHED, f"endpoint {endpoint_key} is already in {current}"
            )
        if current is not None:
            raise _Refused(
                HCN_E_ENDPOINT_NAMESPACE_ALREADY_EXISTS, f"endpoint {endpoint_key} is in namespace {current}"
            )
        endpoint["HostComputeNamespace"] = namespace["ID"]
        namespace["Resources"].append({"Type": "Endpoint", "Data": {"ID": endpoint_key}})
    else:
        if current != namespace["ID"]:
            raise _Refused(
                HCN_E_ENDPOINT_NOT_ATTACHED, f"endpoint {endpoint_key} is not in namespace {namespace['ID']}"
            )
        del endpoint["HostComputeNamespace"]
        namespace["Resources"] = [
            r
            for r in namespace["Resources"]
            if not (r["Type"] == "Endpoint" and r["Data"]["ID"] == endpoint_key)
        ]


def _adapter_by_mac(state: _State, mac: str) -> str | None:
    canonical = _mac(mac)
    if canonical is None:
        raise _Refused(E_INVALIDARG, f"not a MAC address: {mac!r}")
    name = state.adapters.get(canonical)
    if name is None and state.auto_adapters:
        # Windows' own naming: the first adapter is "Ethernet", the next "Ethernet 2", ...
        taken = {known.casefold() for known in state.adapters.values()}
        n = 1
        while (candidate := "Ethernet" if n == 1 else f"Ethernet {n}").casefold() in taken:
            n += 1
        name = state.adapters[canonical] = candidate
    return name


if TYPE_CHECKING:
    _conforms: type[Hcn] = FakeHcn
