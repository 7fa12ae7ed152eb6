"""The Host Compute Network (HCN) service as the Windows datapath sees it: one small protocol, its
errors, and which of them are worth a retry.

Two implementations: ``ipamd.datapath.windows.hcn_ctypes`` (computenetwork.dll, Windows only; the one
module that imports ctypes for HCN) and ``ipamd.datapath.windows.fake`` (in-process, any OS, enforcing
HCN's rules; ``HCN_BACKEND=fake``). Each protocol method is one HCN call as this datapath counts them
(``cloudcni_hcn_calls_total``): the Open/Query/Close handles around a call are the binding's business.

Documents are plain ``dict`` objects shaped as hcsshim's ``hcn`` package marshals its structs
(``HostComputeNetwork``, ``HostComputeEndpoint``, ``ModifyNamespaceSettingRequest``,
``HostComputeQuery``); they are built by ``ipamd.datapath.windows.documents``. What HCN returns is
the same shape with ``ID`` filled in.
"""

from __future__ import annotations

from typing import Any, Protocol

Document = dict[str, Any]

# HRESULTs (computenetwork.h, winerror.h; docs: "HCN Error Code").
S_OK = 0x00000000
E_INVALIDARG = 0x80070057
ERROR_NOT_FOUND = 0x80070490  # "Element not found.": HNS during churn, and for a vanished object
ERROR_TIMEOUT = 0x800705B4  # "This operation returned because the timeout period expired."
ERROR_LOCK_VIOLATION = 0x80070021
RPC_E_DISCONNECTED = 0x80010108
HCN_E_NETWORK_NOT_FOUND = 0x803B0001
HCN_E_ENDPOINT_NOT_FOUND = 0x803B0002
HCN_E_SUBNET_NOT_FOUND = 0x803B0005
HCN_E_ADAPTER_NOT_FOUND = 0x803B0006
HCN_E_INVALID_NETWORK = 0x803B000A
HCN_E_INVALID_ENDPOINT = 0x803B000C
HCN_E_INVALID_POLICY = 0x803B000D
HCN_E_NETWORK_ALREADY_EXISTS = 0x803B0010
HCN_E_PORT_ALREADY_EXISTS = 0x803B0013
HCN_E_ENDPOINT_ALREADY_ATTACHED = 0x803B0014
HCN_E_INVALID_JSON = 0x803B001B
HCN_E_INVALID_IP = 0x803B001E
HCN_E_MANAGER_STOPPED = 0x803B0020
GCN_E_NETCOMPARTMENT_NOT_FOUND = 0x803B0027
HCN_E_ENDPOINT_NAMESPACE_ALREADY_EXISTS = 0x803B002B
HCN_E_ENTITY_HAS_REFERENCES = 0x803B002C
HCN_E_NAMESPACE_ATTACH_FAILED = 0x803B002E
HCN_E_ENDPOINT_NOT_ATTACHED = 0x803B0034

NOT_FOUND = frozenset(
    {ERROR_NOT_FOUND, HCN_E_NETWORK_NOT_FOUND, HCN_E_ENDPOINT_NOT_FOUND, GCN_E_NETCOMPARTMENT_NOT_FOUND}
)
# Worth a retry with backoff: HNS answers these while it is busy or restarting, and "Element not
# found" during churn (an object HNS is still committing). Nothing else is retried.
TRANSIENT = frozenset(
    {ERROR_NOT_FOUND, ERROR_TIMEOUT, ERROR_LOCK_VIOLATION, RPC_E_DISCONNECTED, HCN_E_MANAGER_STOPPED}
)


class HcnError(Exception):
    """An HCN call failed: its HRESULT, and the error text HCN returned (``ErrorRecord`` JSON or a
    message), which the binding passes on as it came."""

    def __init__(self, method: str, hresult: int, message: str = "") -> None:
        self.method = method
        self.hresult = hresult & 0xFFFFFFFF
        self.message = message
        super().__init__(f"{method}: HRESULT 0x{self.hresult:08X}{': ' + message if message else ''}")

    @property
    def not_found(self) -> bool:
        return self.hresult in NOT_FOUND

    @property
    def transient(self) -> bool:
        return self.hresult in TRANSIENT


class HcnTimeout(HcnError):
    """The call did not return within the datapath's deadline (HCN can hang); the datapath gave up
    on it. What it did, if anything, is found out by the next lookup."""

    def __init__(self, method: str, seconds: float) -> None:
        super().__init__(method, ERROR_TIMEOUT, f"no answer within {seconds:g} s")


class Hcn(Protocol):
    """What the Windows datapath asks of HCN. Blocking calls: the datapath runs them in its threads,
    each under a deadline. Every method raises HcnError with the HRESULT HCN gave."""

    name: str  # "computenetwork.dll" or "fake"

    def list_networks(self, query: Document) -> list[Document]:
        """HcnEnumerateNetworks + a HcnQueryNetworkProperties per match. ``query`` is a
        HostComputeQuery (``documents.query``), e.g. a ``Filter`` on ``Name``."""
        ...

    def create_network(self, doc: Document) -> Document:
        """HcnCreateNetwork (a zero GUID: HCN picks the ID); returns the network's properties (with
        ``ID``)."""
        ...

    def delete_network(self, network_id: str) -> None:
        """HcnDeleteNetwork. Refused (HCN_E_ENTITY_HAS_REFERENCES) while endpoints remain on it."""
        ...

    def list_endpoints(self, query: Document) -> list[Document]:
        """HcnEnumerateEndpoints + a HcnQueryEndpointProperties per match."""
        ...

    def create_endpoint(self, network_id: str, doc: Document) -> Document:
        """HcnOpenNetwork + HcnCreateEndpoint; returns the endpoint's properties (with ``ID``)."""
        ...

    def get_endpoint(self, endpoint_id: str) -> Document:
        """HcnOpenEndpoint + HcnQueryEndpointProperties."""
        ...

    def delete_endpoint(self, endpoint_id: str) -> None:
        """HcnDeleteEndpoint."""
        ...

    def get_namespace(self, namespace_id: str) -> Document:
        """HcnOpenNamespace + HcnQueryNamespaceProperties (``Resources`` lists attached endpoints)."""
        ...

    def modify_namespace(self, namespace_id: str, request: Document) -> None:
        """HcnOpenNamespace + HcnModifyNamespace with a ModifyNamespaceSettingRequest (endpoint
        Add / Remove)."""
        ...

    def adapter_by_mac(self, mac: str) -> str | None:
        """The host network adapter's name whose MAC is ``mac`` (the cloud interface's), for the
        network's NetAdapterName policy; None when the node has none (not attached yet). A host
        query, not an HCN call."""
        ...

    def close(self) -> None: ...


__all__ = [
    "NOT_FOUND",
    "TRANSIENT",
    "Document",
    "Hcn",
    "HcnError",
    "HcnTimeout",
]
