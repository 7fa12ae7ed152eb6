"""HCN documents for the Windows datapath, built by pure functions: values in, plain dicts out.

Each document is the JSON object hcsshim's Go package ``hcn`` marshals for the same request:
``HostComputeNetwork`` (hcn/hcnnetwork.go), ``HostComputeEndpoint`` (hcn/hcnendpoint.go), the policy
settings structs (hcn/hcnpolicy.go), ``ModifyNamespaceSettingRequest`` (hcn/hcnnamespace.go) and
``HostComputeQuery`` (hcn/hcn.go). HCN ignores an unknown or miscased key without a word, so a wrong
key is a silent bug on a real node: tests/fakes/hcn_schema.py holds those structs as a table, json
tag by json tag, and tests/unit/test_hcn_documents.py checks every builder's output against it.

Two ways these differ from what Go would write byte for byte, neither visible to HCN:

- Go writes every struct-typed field even when empty (``omitempty`` does not apply to structs), so
  hcsshim sends ``"Dns": {}``, ``"MacPool": {}``, ``"Health": {"Extra": {}}``. We leave out what we
  do not set; an absent object and an empty one are the same defaults to HCN.
- Zero-valued ``omitempty`` fields are left out as Go leaves them out: a query carries no
  ``"Flags": 0`` (hcsshim's ``defaultQuery`` sets ``HostComputeQueryFlagsNone``, which ``omitempty``
  drops), an empty exception list gives ``"Settings": {}``, a /0 prefix no ``PrefixLength``.

Invalid input raises ValueError whose message starts with the argument's name (``"gateway: ..."``).
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Final

from ipamd.datapath.windows.hcn import Document

# hcn/hcn.go V2SchemaVersion(): the only schema this datapath speaks. Copied into each document, so a
# caller that edits one document cannot change the next.
SCHEMA_VERSION: Final[dict[str, int]] = {"Major": 2, "Minor": 0}
# hcn/hcnnetwork.go NetworkFlags EnableNonPersistent: HNS forgets the network at reboot / HNS restart
# instead of restoring it; the daemon recreates it from its own state, as Azure CNI does.
FLAG_ENABLE_NON_PERSISTENT: Final = 8

NETWORK_PREFIX: Final = "cloud-cni-"
ENDPOINT_PREFIX: Final = "cloud-cni-"

DEFAULT_ROUTE: Final = "0.0.0.0/0"

# Enum values, as hcsshim spells them.
NETWORK_TYPE_L2BRIDGE: Final = "L2Bridge"  # hcn/hcnnetwork.go NetworkType L2Bridge
IPAM_TYPE_STATIC: Final = "Static"  # hcn/hcnnetwork.go Ipam.Type ("Ex: Static, DHCP")
POLICY_NET_ADAPTER_NAME: Final = "NetAdapterName"  # hcn/hcnpolicy.go NetworkPolicyType
POLICY_OUTBOUND_NAT: Final = "OutBoundNAT"  # hcn/hcnpolicy.go EndpointPolicyType
POLICY_SDN_ROUTE: Final = "SDNRoute"  # hcn/hcnpolicy.go EndpointPolicyType
RESOURCE_ENDPOINT: Final = "Endpoint"  # hcn/hcnnamespace.go NamespaceResourceTypeEndpoint
REQUEST_ADD: Final = "Add"  # hcn/hcn.go RequestTypeAdd
REQUEST_REMOVE: Final = "Remove"  # hcn/hcn.go RequestTypeRemove

# CNI's ValidateContainerID (containernetworking/plugins pkg/utils).
_CONTAINER_ID = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9_.\-]*")
# go-winio guid.FromString takes exactly the 36-character form: no braces.
_GUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
_LABEL = r"(?!-)[A-Za-z0-9_-]{1,63}(?<!-)"
_DOMAIN = re.compile(rf"{_LABEL}(?:\.{_LABEL})*\.?", re.ASCII)


def is_guid(text: object) -> bool:
    """``text`` is a GUID in the form HCN and containerd use: 8-4-4-4-12 hex digits, either case, no
    braces. On Windows containerd passes the pod's HCN namespace ID as CNI_NETNS in this form."""
    return isinstance(text, str) and _GUID.fullmatch(text) is not None


def network_name(interface_id: str) -> str:
    """The HCN network for one cloud interface (ENI / NIC): ``cloud-cni-<interface id>``."""
    if not isinstance(interface_id, str) or not interface_id or interface_id != interface_id.strip():
        raise ValueError(f"interface_id: a non-empty name without surrounding spaces (got {interface_id!r})")
    return NETWORK_PREFIX + interface_id


def endpoint_name(container_id: str, ifname: str) -> str:
    """The HCN endpoint of one pod interface: ``cloud-cni-<container id>_<ifname>``.

    The ifname may not contain ``_``: the container ID may, and ``parse_endpoint_name`` splits at the
    last underscore, so this is what makes the name read back as the same pair."""
    _check_container_id(container_id)
    problem = _ifname_problem(ifname)
    if problem:
        raise ValueError(f"ifname: {problem} (got {ifname!r})")
    return f"{ENDPOINT_PREFIX}{container_id}_{ifname}"


def parse_endpoint_name(name: str) -> tuple[str, str] | None:
    """``(container_id, ifname)`` from a name ``endpoint_name`` made; None for any other name (an
    endpoint another CNI plugin or HNS itself created). Networks share the prefix but are listed
    apart from endpoints, so only endpoint names are given here."""
    if not isinstance(name, str) or not name.startswith(ENDPOINT_PREFIX):
        return None
    container_id, sep, ifname = name[len(ENDPOINT_PREFIX) :].rpartition("_")
    if not sep or _CONTAINER_ID.fullmatch(container_id) is None or _ifname_problem(ifname):
        return None
    return container_id, ifname


def network_doc(*, name: str, subnet_cidr: str, gateway: str, adapter_name: str) -> Document:
    """A ``HostComputeNetwork``: an L2Bridge network on the host adapter ``adapter_name`` (the cloud
    interface), whose pods take addresses in ``subnet_cidr`` and route everything via ``gateway``, the
    subnet's own gateway in the cloud (VPC router / Azure's .1)."""
    _check_name("name", name)
    subnet = _ipv4_network("subnet_cidr", subnet_cidr)
    gw = _ipv4_address("gateway", gateway)
    if gw not in subnet:
        raise ValueError(f"gateway: {gw} is not inside subnet_cidr {subnet}")
    if subnet.prefixlen < 31 and gw in (subnet.network_address, subnet.broadcast_address):
        raise ValueError(f"gateway: {gw} is the network or broadcast address of {subnet}")
    if not isinstance(adapter_name, str) or not adapter_name.strip():
        raise ValueError(f"adapter_name: the host adapter's name, non-empty (got {adapter_name!r})")
    return {
        "Name": name,
        "Type": NETWORK_TYPE_L2BRIDGE,
        "Policies": [{"Type": POLICY_NET_ADAPTER_NAME, "Settings": {"NetworkAdapterName": adapter_name}}],
        "Ipams": [
            {
                "Type": IPAM_TYPE_STATIC,
                "Subnets": [
                    {
                        "IpAddressPrefix": str(subnet),
                        # hcsshim's Network.Create refuses a subnet without a default route.
                        "Routes": [{"NextHop": str(gw), "DestinationPrefix": DEFAULT_ROUTE}],
                    }
                ],
            }
        ],
        "Flags": FLAG_ENABLE_NON_PERSISTENT,
        "SchemaVersion": dict(SCHEMA_VERSION),
    }


def endpoint_doc(
    *,
    name: str,
    network_id: str,
    ip: str,
    prefix_length: int,
    gateway: str,
    node_ip: str,
    outbound_nat_exceptions: Sequence[str] | None,
    dns_servers: Sequence[str] = (),
    dns_search: Sequence[str] = (),
) -> Document:
    """A ``HostComputeEndpoint`` for one pod on the L2Bridge network ``network_id``.

    Policies, in the Azure CNI / Calico l2bridge pattern:

    - ``OutBoundNAT`` with ``Exceptions``: traffic to those CIDRs (the VPC / VNet, the cluster) leaves
      with the pod's own address, everything else is SNATed to the node's. ``None`` means no
      OutBoundNAT policy at all (EXTERNAL_SNAT: something outside the node translates).
    - ``SDNRoute`` to ``node_ip``/32 with ``NeedEncap``: an L2Bridge pod's packets to its own host
      would otherwise go out to the cloud's gateway and never come back; this sends them to the
      host's vNIC instead (kubelet probes, host-network pods).

    ``HostComputeNamespace`` is left out: HCN treats it as read-only (hcsshim refuses to create an
    endpoint with it set); the endpoint joins the pod's namespace through ``attach_request``.
    """
    _check_name("name", name)
    if not is_guid(network_id):
        raise ValueError(f"network_id: the network's GUID, 8-4-4-4-12 hex digits (got {network_id!r})")
    address = _ipv4_address("ip", ip)
    if isinstance(prefix_length, bool) or not isinstance(prefix_length, int) or not 0 <= prefix_length <= 32:
        raise ValueError(f"prefix_length: an integer 0-32 (got {prefix_length!r})")
    gw = _ipv4_address("gateway", gateway)
    on_link = ipaddress.IPv4Network((address, prefix_length), strict=False)
    if gw not in on_link:
        raise ValueError(f"gateway: {gw} is not inside {on_link}, the network of ip/prefix_length")
    if gw == address:
        raise ValueError(f"ip: {address} is the gateway's own address")
    node = _ipv4_address("node_ip", node_ip)

    ip_config: dict[str, Any] = {"IpAddress": str(address)}
    if prefix_length:  # IpConfig.PrefixLength is uint8 `omitempty`: hcsshim leaves a 0 out
        ip_config["PrefixLength"] = prefix_length

    policies: list[dict[str, Any]] = []
    if outbound_nat_exceptions is not None:
        exceptions = _cidr_list("outbound_nat_exceptions", outbound_nat_exceptions)
        policies.append(
            {"Type": POLICY_OUTBOUND_NAT, "Settings": {"Exceptions": exceptions} if exceptions else {}}
        )
    policies.append(
        {"Type": POLICY_SDN_ROUTE, "Settings": {"DestinationPrefix": f"{node}/32", "NeedEncap": True}}
    )

    doc: Document = {
        "Name": name,
        "HostComputeNetwork": network_id,
        "Policies": policies,
        "IpConfigurations": [ip_config],
    }
    servers = _address_list("dns_servers", dns_servers)
    search = _domain_list("dns_search", dns_search)
    if servers or search:
        dns: dict[str, Any] = {}
        if search:
            dns["Search"] = search
        if servers:
            dns["ServerList"] = servers
        doc["Dns"] = dns
    doc["Routes"] = [{"NextHop": str(gw), "DestinationPrefix": DEFAULT_ROUTE}]
    doc["SchemaVersion"] = dict(SCHEMA_VERSION)
    return doc


def attach_request(endpoint_id: str) -> Document:
    """A ``ModifyNamespaceSettingRequest`` that adds the endpoint to a namespace: what hcsshim's
    ``AddNamespaceEndpoint`` sends. ``Settings`` is a ``json.RawMessage`` holding the marshalled map
    ``{"EndpointId": id}``, so on the wire it is a JSON object, not a string."""
    return _namespace_request(REQUEST_ADD, endpoint_id)


def detach_request(endpoint_id: str) -> Document:
    """The ``ModifyNamespaceSettingRequest`` of hcsshim's ``RemoveNamespaceEndpoint``."""
    return _namespace_request(REQUEST_REMOVE, endpoint_id)


def query(filter: Mapping[str, str] | None = None) -> Document:
    """A ``HostComputeQuery`` for the HcnEnumerate* calls, e.g. ``query({"Name": name})``.

    ``Filter`` is a JSON *string* (a Go ``string`` field holding ``json.Marshal(map[string]string)``),
    written as Go writes it: keys sorted, no spaces. No filter, no ``Filter`` key: every object."""
    doc: Document = {"SchemaVersion": dict(SCHEMA_VERSION)}
    if filter is not None:
        if not isinstance(filter, Mapping) or not all(
            isinstance(key, str) and isinstance(value, str) for key, value in filter.items()
        ):
            raise ValueError(f"filter: a map of strings to strings (got {filter!r})")
        doc["Filter"] = json.dumps(dict(filter), sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return doc


def namespace_resources(namespace_doc: Mapping[str, Any]) -> list[str]:
    """The IDs of the endpoints attached to a namespace, from HCN's ``HostComputeNamespace``
    properties: each ``Resources`` entry of ``Type`` "Endpoint" has ``Data`` {"ID": ...}
    (``NamespaceResourceEndpoint``). Container entries are skipped, as hcsshim's
    ``GetNamespaceEndpointIds`` skips them; keys are matched as Go's json.Unmarshal matches them
    (exact spelling first, then case-insensitively). A malformed endpoint entry raises ValueError."""
    if not isinstance(namespace_doc, Mapping):
        raise ValueError(f"namespace_doc: a HostComputeNamespace object (got {type(namespace_doc).__name__})")
    resources = _go_get(namespace_doc, "Resources")
    if resources is None:
        return []
    if not isinstance(resources, list):
        raise ValueError(f"namespace_doc: Resources is not a list (got {resources!r})")
    ids: list[str] = []
    for index, resource in enumerate(resources):
        if not isinstance(resource, Mapping):
            raise ValueError(f"namespace_doc: Resources[{index}] is not an object (got {resource!r})")
        if _go_get(resource, "Type") != RESOURCE_ENDPOINT:
            continue
        data = _go_get(resource, "Data")  # a RawMessage: an object on the wire, as hcsshim reads it
        endpoint_id = _go_get(data, "ID") if isinstance(data, Mapping) else None
        if not isinstance(endpoint_id, str):
            raise ValueError(f"namespace_doc: Resources[{index}].Data has no endpoint ID (got {data!r})")
        ids.append(endpoint_id)
    return ids


# --- helpers -----------------------------------------------------------------------------------------


def _namespace_request(request_type: str, endpoint_id: str) -> Document:
    if not is_guid(endpoint_id):
        raise ValueError(f"endpoint_id: the endpoint's GUID, 8-4-4-4-12 hex digits (got {endpoint_id!r})")
    return {
        "ResourceType": RESOURCE_ENDPOINT,
        "RequestType": request_type,
        "Settings": {"EndpointId": endpoint_id},
    }


def _go_get(obj: Mapping[str, Any], key: str) -> Any:
    """``obj[key]`` as Go's encoding/json finds a struct field: the exact key, else any key equal to
    it case-insensitively."""
    if key in obj:
        return obj[key]
    folded = key.casefold()
    for other, value in obj.items():
        if isinstance(other, str) and other.casefold() == folded:
            return value
    return None


def _check_name(field: str, name: object) -> None:
    if not isinstance(name, str) or not name:
        raise ValueError(f"{field}: a non-empty string (got {name!r})")


def _check_container_id(container_id: object) -> None:
    if not isinstance(container_id, str) or _CONTAINER_ID.fullmatch(container_id) is None:
        raise ValueError(
            "container_id: letters, digits, '_', '.', '-', starting with a letter or digit "
            f"(got {container_id!r})"
        )


def _ifname_problem(ifname: object) -> str | None:
    if not isinstance(ifname, str) or not ifname:
        return "a non-empty interface name"
    if "/" in ifname:
        return "may not contain '/'"
    if "_" in ifname:
        return "may not contain '_' (the endpoint name splits at its last '_')"
    return None


def _ipv4_address(field: str, text: object) -> ipaddress.IPv4Address:
    try:
        if not isinstance(text, str):
            raise ValueError
        return ipaddress.IPv4Address(text)
    except ValueError:
        raise ValueError(f"{field}: an IPv4 address (got {text!r})") from None


def _ipv4_network(field: str, text: object) -> ipaddress.IPv4Network:
    """A CIDR written with its prefix length and no host bits: ``10.0.0.0/24``, not ``10.0.0.5/24``."""
    try:
        if not isinstance(text, str) or "/" not in text:
            raise ValueError
        return ipaddress.IPv4Network(text, strict=True)
    except ValueError:
        raise ValueError(
            f"{field}: an IPv4 CIDR such as 10.0.0.0/16, without host bits (got {text!r})"
        ) from None


def _strings(field: str, values: object) -> Iterable[object]:
    if isinstance(values, (str, bytes)) or not isinstance(values, Iterable):
        raise ValueError(f"{field}: a list of strings, not {type(values).__name__} (got {values!r})")
    return values


def _unique(items: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(items))


def _cidr_list(field: str, values: object) -> list[str]:
    """Canonical CIDRs, duplicates dropped, first occurrence's order kept."""
    return _unique(str(_ipv4_network(field, value)) for value in _strings(field, values))


def _address_list(field: str, values: object) -> list[str]:
    addresses: list[str] = []
    for value in _strings(field, values):
        try:
            if not isinstance(value, str):
                raise ValueError
            addresses.append(str(ipaddress.ip_address(value)))
        except ValueError:
            raise ValueError(f"{field}: IP addresses (got {value!r})") from None
    return _unique(addresses)


def _domain_list(field: str, values: object) -> list[str]:
    domains: list[str] = []
    for value in _strings(field, values):
        if not isinstance(value, str) or len(value) > 253 or _DOMAIN.fullmatch(value) is None:
            raise ValueError(f"{field}: DNS domain names such as svc.cluster.local (got {value!r})")
        domains.append(value)
    return _unique(domains)


__all__ = [
    "ENDPOINT_PREFIX",
    "FLAG_ENABLE_NON_PERSISTENT",
    "NETWORK_PREFIX",
    "SCHEMA_VERSION",
    "attach_request",
    "detach_request",
    "endpoint_doc",
    "endpoint_name",
    "is_guid",
    "namespace_resources",
    "network_doc",
    "network_name",
    "parse_endpoint_name",
    "query",
]
