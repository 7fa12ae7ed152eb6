"""hcsshim's ``hcn`` structs as a table, and a checker for HCN JSON documents against it.

HCN (computenetwork.dll) ignores a key it does not know, and a miscased key is a key it does not
know, so a misspelt field costs nothing until a pod on a real node has no DNS or no NAT. This table is
the Go structs' json tags, transcribed field by field from microsoft/hcsshim's ``hcn`` package; each
struct names the file it is in. Where hcsshim changed a struct over time the newest shape is kept
(``Dns.Domain``, once ``Suffix``; ``OutboundNatPolicySetting.MaxPortPoolUsage``; ``Health``;
``SetPolicySetting``'s ``PolicyType`` tag).

How a Go field becomes a key: ``json:"ID,omitempty"`` is the key "ID"; ``json:",omitempty"``,
``json:","``, ``json:""`` and no tag at all are the Go field name. A type is written as:

- ``string``, ``bool``; ``uint8`` ``uint16`` ``uint32`` ``uint64`` ``int`` (a JSON integer in range;
  named integer types such as ``NetworkFlags``, ``NatFlags``, ``ProtocolType`` are their base type);
- ``any``: ``json.RawMessage`` / ``interface{}`` with no fixed shape;
- ``[]T``: a JSON array of T; a struct name: a JSON object checked against that struct; an enum name
  (``ENUMS``): a JSON string from that set;
- a trailing ``!``: the tag has no ``omitempty``, so hcsshim always writes the key.

A policy's ``Settings`` (a ``json.RawMessage``) is checked against the settings struct of the policy's
``Type`` (``DISCRIMINATED``), as is a namespace request's ``Settings`` against its ``ResourceType``.

``check(kind, doc)`` and ``check_trace_line(line)`` return problems as strings; none means the document
has the shape hcsshim would send. Used by the unit tests of ipamd/datapath/windows/documents.py and by
integration tests over every line of an HCN_TRACE file.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

STRUCTS: Final[dict[str, dict[str, str]]] = {
    # hcn/hcnglobals.go Version (hcn/hcn.go: `type SchemaVersion = Version`): `json:"Major"`, no omitempty.
    "Version": {"Major": "int!", "Minor": "int!"},
    # hcn/hcn.go HostComputeQuery. SchemaVersion is tagged `json:""`: always written.
    "HostComputeQuery": {"SchemaVersion": "Version!", "Flags": "uint32", "Filter": "string"},
    # hcn/hcn.go ExtraParams (Resources / SharedContainers: json.RawMessage, interface{} in older tags).
    "ExtraParams": {
        "Resources": "any",
        "SharedContainers": "any",
        "LayeredOn": "string",
        "SwitchGuid": "string",
        "UtilityVM": "string",
        "VirtualMachine": "string",
    },
    # hcn/hcn.go Health
    "Health": {"Data": "any", "Extra": "ExtraParams"},
    # hcn/hcnnetwork.go Route
    "Route": {"NextHop": "string", "DestinationPrefix": "string", "Metric": "uint16"},
    # hcn/hcnnetwork.go Subnet. Policies is []json.RawMessage in Go; its elements are SubnetPolicy
    # objects (hcn/hcnpolicy.go), which is how they are checked here.
    "Subnet": {"IpAddressPrefix": "string", "Policies": "[]SubnetPolicy", "Routes": "[]Route"},
    # hcn/hcnnetwork.go Ipam. Type is a plain Go string ("Ex: Static, DHCP"), not an enum.
    "Ipam": {"Type": "string", "Subnets": "[]Subnet"},
    # hcn/hcnnetwork.go MacRange, MacPool
    "MacRange": {"StartMacAddress": "string", "EndMacAddress": "string"},
    "MacPool": {"Ranges": "[]MacRange"},
    # hcn/hcnnetwork.go Dns. Search and ServerList are []string (HNS v1 took comma-separated strings).
    "Dns": {"Domain": "string", "Search": "[]string", "ServerList": "[]string", "Options": "[]string"},
    # hcn/hcnnetwork.go HostComputeNetwork (Flags: NetworkFlags uint32)
    "HostComputeNetwork": {
        "ID": "string",
        "Name": "string",
        "Type": "NetworkType",
        "Policies": "[]NetworkPolicy",
        "MacPool": "MacPool",
        "Dns": "Dns",
        "Ipams": "[]Ipam",
        "Flags": "uint32",
        "Health": "Health",
        "SchemaVersion": "Version",
    },
    # hcn/hcnnetwork.go ModifyNetworkSettingRequest
    "ModifyNetworkSettingRequest": {
        "ResourceType": "NetworkResourceType",
        "RequestType": "RequestType",
        "Settings": "any",
    },
    # hcn/hcnendpoint.go IpConfig
    "IpConfig": {"IpAddress": "string", "PrefixLength": "uint8"},
    # hcn/hcnendpoint.go HostComputeEndpoint (Flags: EndpointFlags uint32)
    "HostComputeEndpoint": {
        "ID": "string",
        "Name": "string",
        "HostComputeNetwork": "string",
        "HostComputeNamespace": "string",
        "Policies": "[]EndpointPolicy",
        "IpConfigurations": "[]IpConfig",
        "Dns": "Dns",
        "Routes": "[]Route",
        "MacAddress": "string",
        "Flags": "uint32",
        "Health": "Health",
        "SchemaVersion": "Version",
    },
    # hcn/hcnendpoint.go ModifyEndpointSettingRequest
    "ModifyEndpointSettingRequest": {
        "ResourceType": "EndpointResourceType",
        "RequestType": "RequestType",
        "Settings": "any",
    },
    # hcn/hcnpolicy.go EndpointPolicy, NetworkPolicy, SubnetPolicy: Type is tagged `json:""`.
    "EndpointPolicy": {"Type": "EndpointPolicyType!", "Settings": "any"},
    "NetworkPolicy": {"Type": "NetworkPolicyType!", "Settings": "any"},
    "SubnetPolicy": {"Type": "SubnetPolicyType!", "Settings": "any"},
    # hcn/hcnpolicy.go PortMappingPolicySetting (Flags: NatFlags uint32)
    "PortMappingPolicySetting": {
        "Protocol": "uint32",
        "InternalPort": "uint16",
        "ExternalPort": "uint16",
        "VIP": "string",
        "Flags": "uint32",
    },
    # hcn/hcnpolicy.go AclPolicySetting: Action and Direction are tagged `json:","`.
    "AclPolicySetting": {
        "Protocols": "string",
        "Action": "ActionType!",
        "Direction": "DirectionType!",
        "LocalAddresses": "string",
        "RemoteAddresses": "string",
        "LocalPorts": "string",
        "RemotePorts": "string",
        "RuleType": "RuleType",
        "Priority": "uint16",
    },
    # hcn/hcnpolicy.go QosPolicySetting: no tag.
    "QosPolicySetting": {"MaximumOutgoingBandwidthInBytes": "uint64!"},
    # hcn/hcnpolicy.go OutboundNatPolicySetting (Flags: NatFlags uint32)
    "OutboundNatPolicySetting": {
        "VirtualIP": "string",
        "Exceptions": "[]string",
        "Destinations": "[]string",
        "Flags": "uint32",
        "MaxPortPoolUsage": "uint16",
    },
    # hcn/hcnpolicy.go SDNRoutePolicySetting
    "SDNRoutePolicySetting": {"DestinationPrefix": "string", "NextHop": "string", "NeedEncap": "bool"},
    # hcn/hcnpolicy.go NetworkACLPolicySetting
    "NetworkACLPolicySetting": {
        "Protocols": "string",
        "Action": "ActionType!",
        "Direction": "DirectionType!",
        "LocalAddresses": "string",
        "RemoteAddresses": "string",
        "LocalPorts": "string",
        "RemotePorts": "string",
        "RuleType": "RuleType",
        "Priority": "uint16",
    },
    # hcn/hcnpolicy.go FiveTuple
    "FiveTuple": {
        "Protocols": "string",
        "LocalAddresses": "string",
        "RemoteAddresses": "string",
        "LocalPorts": "string",
        "RemotePorts": "string",
        "Priority": "uint16",
    },
    # hcn/hcnpolicy.go ProxyExceptions
    "ProxyExceptions": {"IpAddressExceptions": "[]string", "PortExceptions": "[]string"},
    # hcn/hcnpolicy.go L4WfpProxyPolicySetting
    "L4WfpProxyPolicySetting": {
        "InboundProxyPort": "string",
        "OutboundProxyPort": "string",
        "FilterTuple": "FiveTuple",
        "UserSID": "string",
        "InboundExceptions": "ProxyExceptions",
        "OutboundExceptions": "ProxyExceptions",
    },
    # hcn/hcnpolicy.go PortnameEndpointPolicySetting, EncapOverheadEndpointPolicySetting, IovPolicySetting
    "PortnameEndpointPolicySetting": {"Name": "string"},
    "EncapOverheadEndpointPolicySetting": {"Overhead": "uint16"},
    "IovPolicySetting": {
        "IovOffloadWeight": "uint32",
        "QueuePairsRequested": "uint32",
        "InterruptModeration": "uint32",
    },
    # hcn/hcnpolicy.go ProviderAddressEndpointPolicySetting (endpoint and network)
    "ProviderAddressEndpointPolicySetting": {"ProviderAddress": "string"},
    # hcn/hcnpolicy.go InterfaceConstraintPolicySetting (endpoint and network)
    "InterfaceConstraintPolicySetting": {
        "InterfaceGuid": "string",
        "InterfaceLuid": "uint64",
        "InterfaceIndex": "uint32",
        "InterfaceMediaType": "uint32",
        "InterfaceAlias": "string",
        "InterfaceDescription": "string",
    },
    # hcn/hcnpolicy.go network policy settings
    "SourceMacAddressNetworkPolicySetting": {"SourceMacAddress": "string"},
    "NetAdapterNameNetworkPolicySetting": {"NetworkAdapterName": "string"},
    "VSwitchExtensionNetworkPolicySetting": {"ExtensionID": "string", "Enable": "bool"},
    "DrMacAddressNetworkPolicySetting": {"Address": "string"},
    "AutomaticDNSNetworkPolicySetting": {"Enable": "bool"},
    "LayerConstraintNetworkPolicySetting": {"LayerId": "string"},
    # hcn/hcnpolicy.go VlanPolicySetting, VsidPolicySetting (subnet): `json:","`.
    "VlanPolicySetting": {"IsolationId": "uint32!"},
    "VsidPolicySetting": {"IsolationId": "uint32!"},
    # hcn/hcnpolicy.go RemoteSubnetRoutePolicySetting: no tags.
    "RemoteSubnetRoutePolicySetting": {
        "DestinationPrefix": "string!",
        "IsolationId": "uint16!",
        "ProviderAddress": "string!",
        "DistributedRouterMacAddress": "string!",
    },
    # hcn/hcnpolicy.go SetPolicySetting: no tags but Type, tagged `json:"PolicyType"`.
    "SetPolicySetting": {
        "Id": "string!",
        "Name": "string!",
        "PolicyType": "SetPolicyType!",
        "Values": "string!",
    },
    # hcn/hcnpolicy.go VxlanPortPolicySetting: no tag.
    "VxlanPortPolicySetting": {"Port": "uint16!"},
    # hcn/hcnpolicy.go L4ProxyPolicySetting (Protocol: ProtocolType uint32; Destination has no tag).
    "L4ProxyPolicySetting": {
        "IP": "string",
        "Port": "string",
        "Protocol": "uint32",
        "Exceptions": "[]string",
        "Destination": "string!",
        "OutboundNAT": "bool",
    },
    # hcn/hcnpolicy.go TierAclRule, TierAclPolicySetting
    "TierAclRule": {
        "Id": "string",
        "Protocols": "string",
        "TierAclRuleAction": "ActionType!",
        "LocalAddresses": "string",
        "RemoteAddresses": "string",
        "LocalPorts": "string",
        "RemotePorts": "string",
        "Priority": "uint16",
    },
    "TierAclPolicySetting": {
        "Name": "string!",
        "Direction": "DirectionType!",
        "Order": "uint16!",
        "TierAclRules": "[]TierAclRule",
    },
    # hcn/hcnnamespace.go NamespaceResourceEndpoint, NamespaceResourceContainer: `json:"ID,"`.
    "NamespaceResourceEndpoint": {"ID": "string!"},
    "NamespaceResourceContainer": {"ID": "string!"},
    # hcn/hcnnamespace.go NamespaceResource: both `json:","`.
    "NamespaceResource": {"Type": "NamespaceResourceType!", "Data": "any!"},
    # hcn/hcnnamespace.go HostComputeNamespace (NamespaceId uint32)
    "HostComputeNamespace": {
        "ID": "string",
        "NamespaceId": "uint32",
        "Type": "NamespaceType",
        "Resources": "[]NamespaceResource",
        "SchemaVersion": "Version",
        "ReadyOnCreate": "bool",
    },
    # hcn/hcnnamespace.go ModifyNamespaceSettingRequest
    "ModifyNamespaceSettingRequest": {
        "ResourceType": "NamespaceResourceType",
        "RequestType": "RequestType",
        "Settings": "any",
    },
    # hcn/hcnnamespace.go AddNamespaceEndpoint / RemoveNamespaceEndpoint: not a struct but the map
    # `map[string]string{"EndpointId": endpointID}` they marshal into the request's Settings.
    "NamespaceEndpointSettings": {"EndpointId": "string!"},
}

ENUMS: Final[dict[str, frozenset[str]]] = {
    # hcn/hcnnetwork.go NetworkType
    "NetworkType": frozenset({"NAT", "Transparent", "L2Bridge", "L2Tunnel", "ICS", "Private", "Overlay"}),
    # hcn/hcnnetwork.go NetworkResourceType
    "NetworkResourceType": frozenset({"Policy", "DNS", "Extension"}),
    # hcn/hcnendpoint.go EndpointResourceType
    "EndpointResourceType": frozenset({"Policy", "Port"}),
    # hcn/hcnpolicy.go EndpointPolicyType (IOV is spelt "Iov")
    "EndpointPolicyType": frozenset(
        {
            "PortMapping",
            "ACL",
            "QOS",
            "L2Driver",
            "OutBoundNAT",
            "SDNRoute",
            "L4Proxy",
            "L4WFPPROXY",
            "PortName",
            "EncapOverhead",
            "Iov",
            "ProviderAddress",
            "InterfaceConstraint",
            "TierAcl",
        }
    ),
    # hcn/hcnpolicy.go NetworkPolicyType
    "NetworkPolicyType": frozenset(
        {
            "SourceMacAddress",
            "NetAdapterName",
            "VSwitchExtension",
            "DrMacAddress",
            "AutomaticDNS",
            "InterfaceConstraint",
            "ProviderAddress",
            "RemoteSubnetRoute",
            "VxlanPort",
            "HostRoute",
            "SetPolicy",
            "L4Proxy",
            "LayerConstraint",
            "NetworkACL",
        }
    ),
    # hcn/hcnpolicy.go SubnetPolicyType
    "SubnetPolicyType": frozenset({"VLAN", "VSID"}),
    # hcn/hcnpolicy.go ActionType, DirectionType, RuleType, SetPolicyType
    "ActionType": frozenset({"Allow", "Block", "Pass"}),
    "DirectionType": frozenset({"In", "Out"}),
    "RuleType": frozenset({"Host", "Switch"}),
    "SetPolicyType": frozenset({"IPSET", "NESTEDIPSET"}),
    # hcn/hcn.go RequestType
    "RequestType": frozenset({"Add", "Remove", "Update", "Refresh"}),
    # hcn/hcnnamespace.go NamespaceResourceType, NamespaceType
    "NamespaceResourceType": frozenset({"Container", "Endpoint"}),
    "NamespaceType": frozenset({"Host", "HostDefault", "Guest", "GuestDefault"}),
}

# Each policy Type's settings struct (hcn/hcnpolicy.go). None: hcsshim has no settings struct for that
# type (L2Driver, HostRoute), so only "an object" is checked.
ENDPOINT_POLICY_SETTINGS: Final[dict[str, str | None]] = {
    "PortMapping": "PortMappingPolicySetting",
    "ACL": "AclPolicySetting",
    "QOS": "QosPolicySetting",
    "L2Driver": None,
    "OutBoundNAT": "OutboundNatPolicySetting",
    "SDNRoute": "SDNRoutePolicySetting",
    "L4Proxy": "L4ProxyPolicySetting",
    "L4WFPPROXY": "L4WfpProxyPolicySetting",
    "PortName": "PortnameEndpointPolicySetting",
    "EncapOverhead": "EncapOverheadEndpointPolicySetting",
    "Iov": "IovPolicySetting",
    "ProviderAddress": "ProviderAddressEndpointPolicySetting",
    "InterfaceConstraint": "InterfaceConstraintPolicySetting",
    "TierAcl": "TierAclPolicySetting",
}
NETWORK_POLICY_SETTINGS: Final[dict[str, str | None]] = {
    "SourceMacAddress": "SourceMacAddressNetworkPolicySetting",
    "NetAdapterName": "NetAdapterNameNetworkPolicySetting",
    "VSwitchExtension": "VSwitchExtensionNetworkPolicySetting",
    "DrMacAddress": "DrMacAddressNetworkPolicySetting",
    "AutomaticDNS": "AutomaticDNSNetworkPolicySetting",
    "InterfaceConstraint": "InterfaceConstraintPolicySetting",
    "ProviderAddress": "ProviderAddressEndpointPolicySetting",
    "RemoteSubnetRoute": "RemoteSubnetRoutePolicySetting",
    "VxlanPort": "VxlanPortPolicySetting",
    "HostRoute": None,
    "SetPolicy": "SetPolicySetting",
    "L4Proxy": "L4ProxyPolicySetting",
    "LayerConstraint": "LayerConstraintNetworkPolicySetting",
    "NetworkACL": "NetworkACLPolicySetting",
}
SUBNET_POLICY_SETTINGS: Final[dict[str, str | None]] = {
    "VLAN": "VlanPolicySetting",
    "VSID": "VsidPolicySetting",
}
# ModifyNamespaceSettingRequest.Settings by ResourceType; hcsshim sends no container request.
NAMESPACE_REQUEST_SETTINGS: Final[dict[str, str | None]] = {
    "Endpoint": "NamespaceEndpointSettings",
    "Container": None,
}
# NamespaceResource.Data by Type (hcn/hcnnamespace.go GetNamespaceEndpointIds / ...ContainerIds).
NAMESPACE_RESOURCE_DATA: Final[dict[str, str | None]] = {
    "Endpoint": "NamespaceResourceEndpoint",
    "Container": "NamespaceResourceContainer",
}

# struct -> (discriminating key, RawMessage key, value -> struct, RawMessage required when known)
DISCRIMINATED: Final[dict[str, tuple[str, str, dict[str, str | None], bool]]] = {
    "EndpointPolicy": ("Type", "Settings", ENDPOINT_POLICY_SETTINGS, False),
    "NetworkPolicy": ("Type", "Settings", NETWORK_POLICY_SETTINGS, False),
    "SubnetPolicy": ("Type", "Settings", SUBNET_POLICY_SETTINGS, False),
    "ModifyNamespaceSettingRequest": ("ResourceType", "Settings", NAMESPACE_REQUEST_SETTINGS, True),
    "NamespaceResource": ("Type", "Data", NAMESPACE_RESOURCE_DATA, True),
}

KINDS: Final[dict[str, str]] = {
    "network": "HostComputeNetwork",
    "endpoint": "HostComputeEndpoint",
    "namespace_request": "ModifyNamespaceSettingRequest",
    "query": "HostComputeQuery",
}
# Top-level documents HCN reads as schema 2.0: hcsshim's V2 callers set V2SchemaVersion() on each.
_V2_KINDS: Final = frozenset({"network", "endpoint", "query"})
_V2: Final = {"Major": 2, "Minor": 0}

# An HCN_TRACE line's kind -> check() kind. The Hcn methods that send a HostComputeQuery rather than
# an object document are told apart by method (ipamd/datapath/windows/hcn.py; the C API names too).
TRACE_KINDS: Final[dict[str, str]] = {
    "network": "network",
    "endpoint": "endpoint",
    "namespace": "namespace_request",
}
QUERY_METHODS: Final = frozenset(
    {"list_networks", "list_endpoints", "HcnEnumerateNetworks", "HcnEnumerateEndpoints"}
)

_INTS: Final[dict[str, tuple[int, int]]] = {
    "uint8": (0, 2**8 - 1),
    "uint16": (0, 2**16 - 1),
    "uint32": (0, 2**32 - 1),
    "uint64": (0, 2**64 - 1),
    "int": (-(2**63), 2**63 - 1),
}


def check(kind: str, doc: object) -> list[str]:
    """Problems with ``doc`` as the document of ``kind`` (network, endpoint, namespace_request, query)
    that hcsshim would send: unknown or miscased keys, wrong JSON types, enum values outside the set,
    a policy's Settings not matching its Type's settings struct, keys hcsshim always writes missing."""
    if kind not in KINDS:
        raise ValueError(f"kind: one of {', '.join(KINDS)} (got {kind!r})")
    problems: list[str] = []
    struct = KINDS[kind]
    _check_value(struct, doc, struct, problems)
    if kind in _V2_KINDS and isinstance(doc, Mapping):
        if "SchemaVersion" not in doc:
            if kind != "query":  # HostComputeQuery's own check reports it
                problems.append(
                    f"{struct}: missing key 'SchemaVersion' (HCN reads the document as V2: {_V2})"
                )
        elif doc["SchemaVersion"] != _V2:
            problems.append(
                f"{struct}.SchemaVersion: {doc['SchemaVersion']!r} is not {_V2} (HCN's V2 schema)"
            )
    return problems


def check_struct(struct: str, doc: object) -> list[str]:
    """Problems with ``doc`` as a JSON object of the hcsshim struct ``struct`` (any name in STRUCTS)."""
    if struct not in STRUCTS:
        raise ValueError(f"struct: not in the table (got {struct!r})")
    problems: list[str] = []
    _check_value(struct, doc, struct, problems)
    return problems


def check_trace_line(line: object) -> list[str]:
    """Problems with one HCN_TRACE line ``{"method", "kind": "network|endpoint|namespace", "doc"}``.
    A call that carries no document (a delete, a get) has ``doc`` absent or null: no problems."""
    if not isinstance(line, Mapping):
        return [f"trace line: not a JSON object (got {line!r})"]
    doc = line.get("doc")
    if doc is None:
        return []
    if line.get("method") in QUERY_METHODS:
        return check("query", doc)
    kind = line.get("kind")
    if kind not in TRACE_KINDS:
        return [f"trace line: kind {kind!r} is not one of {', '.join(TRACE_KINDS)}"]
    return check(TRACE_KINDS[kind], doc)


def _json_type(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, Mapping):
        return "object"
    return type(value).__name__


def _check_value(type_name: str, value: Any, path: str, problems: list[str]) -> None:
    type_name = type_name.rstrip("!")
    if type_name == "any":
        return
    if type_name.startswith("[]"):
        if not isinstance(value, list):
            problems.append(f"{path}: expected an array ({type_name}), got {_json_type(value)} {value!r}")
            return
        for index, item in enumerate(value):
            _check_value(type_name[2:], item, f"{path}[{index}]", problems)
    elif type_name == "string":
        if not isinstance(value, str):
            problems.append(f"{path}: expected a string, got {_json_type(value)} {value!r}")
    elif type_name == "bool":
        if not isinstance(value, bool):
            problems.append(f"{path}: expected a boolean, got {_json_type(value)} {value!r}")
    elif type_name in _INTS:
        low, high = _INTS[type_name]
        if isinstance(value, bool) or not isinstance(value, int):
            problems.append(f"{path}: expected an integer ({type_name}), got {_json_type(value)} {value!r}")
        elif not low <= value <= high:
            problems.append(f"{path}: {value} is out of range for {type_name} ({low}..{high})")
    elif type_name in ENUMS:
        _check_enum(type_name, value, path, problems)
    elif type_name in STRUCTS:
        if not isinstance(value, Mapping):
            problems.append(f"{path}: expected an object ({type_name}), got {_json_type(value)} {value!r}")
            return
        _check_struct(type_name, value, path, problems)
    else:
        raise KeyError(f"hcn_schema: type {type_name!r} at {path} is not in the table")


def _check_enum(enum: str, value: object, path: str, problems: list[str]) -> None:
    allowed = ENUMS[enum]
    if not isinstance(value, str):
        problems.append(f"{path}: expected a string ({enum}), got {_json_type(value)} {value!r}")
        return
    if value in allowed:
        return
    same_but_case = [item for item in allowed if item.casefold() == value.casefold()]
    if same_but_case:
        problems.append(f"{path}: {enum} {value!r} is miscased: hcsshim spells it {same_but_case[0]!r}")
    else:
        problems.append(f"{path}: {value!r} is not a {enum} (one of {', '.join(sorted(allowed))})")


def _check_struct(struct: str, doc: Mapping[str, Any], path: str, problems: list[str]) -> None:
    fields = STRUCTS[struct]
    folded = {key.casefold(): key for key in fields}
    discriminated = DISCRIMINATED.get(struct)
    raw_key = discriminated[1] if discriminated else None
    for key, value in doc.items():
        if key in fields:
            if key != raw_key:
                _check_value(fields[key], value, f"{path}.{key}", problems)
        elif isinstance(key, str) and key.casefold() in folded:
            problems.append(
                f"{path}: miscased key {key!r}: hcsshim's {struct} spells it {folded[key.casefold()]!r}"
            )
        else:
            problems.append(f"{path}: unknown key {key!r}: hcsshim's {struct} has {', '.join(fields)}")
    for key, type_name in fields.items():
        if type_name.endswith("!") and key not in doc:
            problems.append(
                f"{path}: missing key {key!r} (no omitempty on {struct}.{key}: hcsshim always writes it)"
            )
    if discriminated:
        _check_discriminated(doc, path, problems, discriminated)


def _check_discriminated(
    doc: Mapping[str, Any],
    path: str,
    problems: list[str],
    discriminated: tuple[str, str, dict[str, str | None], bool],
) -> None:
    """The RawMessage at ``raw_key`` against the struct that ``doc[key]`` selects. An unknown
    ``doc[key]`` is reported by the enum check; its RawMessage is not checked further."""
    key, raw_key, by_value, required = discriminated
    selector = doc.get(key)
    if not isinstance(selector, str) or selector not in by_value:
        return
    if raw_key not in doc:
        if required:
            problems.append(f"{path}: missing {raw_key} for {key} {selector!r}")
        return
    raw = doc[raw_key]
    where = f"{path}.{raw_key}"
    if not isinstance(raw, Mapping):
        # A json.RawMessage is embedded as JSON: a document whose Settings went through json.dumps
        # a second time arrives as a string, which HCN does not read as settings.
        problems.append(
            f"{where}: expected an object for {key} {selector!r} (a json.RawMessage is embedded, "
            f"not quoted), got {_json_type(raw)} {raw!r}"
        )
        return
    target = by_value[selector]
    if target is not None:
        _check_struct(target, raw, f"{where}<{target}>", problems)


__all__ = [
    "DISCRIMINATED",
    "ENDPOINT_POLICY_SETTINGS",
    "ENUMS",
    "KINDS",
    "NAMESPACE_REQUEST_SETTINGS",
    "NAMESPACE_RESOURCE_DATA",
    "NETWORK_POLICY_SETTINGS",
    "QUERY_METHODS",
    "STRUCTS",
    "SUBNET_POLICY_SETTINGS",
    "TRACE_KINDS",
    "check",
    "check_struct",
    "check_trace_line",
]
