"""The ``Hcn`` protocol on Windows' computenetwork.dll, through ctypes: the one module that imports
ctypes for HCN.

Each method makes the calls hcsshim's ``hcn`` package makes for the same operation (hcnnetwork.go,
hcnendpoint.go, hcnnamespace.go; prototypes as in its zsyscall_windows.go and the SDK's
computenetwork.h), with two differences: every handle is closed on every path (hcsshim leaks it
when a call after the open fails), and ``modify_namespace`` does not query the namespace afterwards
(the protocol returns nothing).

* Creates pass the zero GUID, as hcsshim does (``guid.GUID{}``): HCN assigns the object's ID, read
  back from the properties it returns.
* Errors: a failed HRESULT, or a non-empty ``ErrorRecord`` string with S_OK (hcsshim's
  ``checkForErrors`` treats both as failures), raise ``HcnError(function, hresult, text)``;
  E_FAIL stands in for the HRESULT in the second case.
* Every string HCN returns (``ErrorRecord``, enumerations, properties) is CoTaskMemAlloc'd: it is
  read, then freed with ole32's CoTaskMemFree exactly once, on success and failure alike.

Importable on any OS (the prototype table is checked against the headers by
tests/unit/test_hcn_ctypes.py on Linux); the DLLs are loaded only when ``ComputeNetwork`` is
created without injected libraries, which raises RuntimeError off Windows.
"""

from __future__ import annotations

import ctypes
import json
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from ipamd.datapath.windows.hcn import E_INVALIDARG, Document, HcnError

E_FAIL = 0x80004005  # a non-empty ErrorRecord came back with S_OK
E_UNEXPECTED = 0x8000FFFF  # HCN answered with something that is not the JSON it documents
ERROR_BUFFER_OVERFLOW = 111
ERROR_NO_DATA = 232
AF_UNSPEC = 0
GAA_FLAG_SKIP_UNICAST = 0x0001
GAA_FLAG_SKIP_ANYCAST = 0x0002
GAA_FLAG_SKIP_MULTICAST = 0x0004
GAA_FLAG_SKIP_DNS_SERVER = 0x0008
MAX_ADAPTER_ADDRESS_LENGTH = 8

# hcsshim's defaultQuery(): schema 2.0, no flags (omitted when zero), no filter.
DEFAULT_QUERY = json.dumps({"SchemaVersion": {"Major": 2, "Minor": 0}}, separators=(",", ":"))


class GUID(ctypes.Structure):
    """guiddef.h's GUID. Built field by field, so the layout does not depend on the host's byte
    order; printed lowercase without braces (as go-winio's ``guid.GUID.String``)."""

    _fields_ = [
        ("Data1", ctypes.c_uint32),
        ("Data2", ctypes.c_uint16),
        ("Data3", ctypes.c_uint16),
        ("Data4", ctypes.c_uint8 * 8),
    ]

    @classmethod
    def from_string(cls, text: str) -> GUID:
        """``"3a8e…-…"`` (any case, braces allowed) -> GUID. ValueError for anything else."""
        value = uuid.UUID(text)
        data1, data2, data3 = value.fields[:3]
        return cls(data1, data2, data3, (ctypes.c_uint8 * 8)(*value.bytes[8:]))

    def __str__(self) -> str:
        number = (self.Data1 << 96) | (self.Data2 << 80) | (self.Data3 << 64)
        return str(uuid.UUID(int=number | int.from_bytes(bytes(self.Data4), "big")))


class IP_ADAPTER_ADDRESSES(ctypes.Structure):  # iptypes.h's name
    """iptypes.h's IP_ADAPTER_ADDRESSES_LH up to PhysicalAddressLength: only ever read through a
    pointer into the buffer GetAdaptersAddresses fills, never allocated, so a prefix is enough. The
    leading union (ULONGLONG Alignment / ULONG Length, IfIndex) is 8 bytes either way."""


IP_ADAPTER_ADDRESSES._fields_ = [
    ("Length", ctypes.c_uint32),
    ("IfIndex", ctypes.c_uint32),
    ("Next", ctypes.POINTER(IP_ADAPTER_ADDRESSES)),
    ("AdapterName", ctypes.c_void_p),
    ("FirstUnicastAddress", ctypes.c_void_p),
    ("FirstAnycastAddress", ctypes.c_void_p),
    ("FirstMulticastAddress", ctypes.c_void_p),
    ("FirstDnsServerAddress", ctypes.c_void_p),
    ("DnsSuffix", ctypes.c_wchar_p),
    ("Description", ctypes.c_wchar_p),
    ("FriendlyName", ctypes.c_wchar_p),
    ("PhysicalAddress", ctypes.c_uint8 * MAX_ADAPTER_ADDRESS_LENGTH),
    ("PhysicalAddressLength", ctypes.c_uint32),
]

# C type names as the headers spell them -> ctypes. HRESULT is a plain 32-bit int, not
# ctypes.HRESULT (Windows only, and its errcheck raises OSError without the ErrorRecord); ULONG is
# 32 bits on Windows, which c_ulong is not on Linux. Handles are opaque void*.
CTYPES: dict[str, Any] = {
    "void": None,
    "HRESULT": ctypes.c_int32,
    "ULONG": ctypes.c_uint32,
    "PULONG": ctypes.POINTER(ctypes.c_uint32),
    "PVOID": ctypes.c_void_p,
    "LPVOID": ctypes.c_void_p,
    "GUID*": ctypes.POINTER(GUID),
    "PCWSTR": ctypes.c_wchar_p,
    "PWSTR*": ctypes.POINTER(ctypes.c_wchar_p),
    "HCN_NETWORK": ctypes.c_void_p,
    "HCN_NETWORK*": ctypes.POINTER(ctypes.c_void_p),
    "HCN_ENDPOINT": ctypes.c_void_p,
    "HCN_ENDPOINT*": ctypes.POINTER(ctypes.c_void_p),
    "HCN_NAMESPACE": ctypes.c_void_p,
    "HCN_NAMESPACE*": ctypes.POINTER(ctypes.c_void_p),
    "IP_ADAPTER_ADDRESSES*": ctypes.POINTER(IP_ADAPTER_ADDRESSES),
}

Prototype = tuple[str, tuple[str, ...]]  # (return type, argument types), C names from CTYPES

# Every function this binding calls, by DLL: name -> (restype, argtypes). Checked against
# computenetwork.h, combaseapi.h and iphlpapi.h by tests/unit/test_hcn_ctypes.py.
PROTOTYPES: dict[str, dict[str, Prototype]] = {
    "computenetwork.dll": {
        "HcnEnumerateNetworks": ("HRESULT", ("PCWSTR", "PWSTR*", "PWSTR*")),
        "HcnCreateNetwork": ("HRESULT", ("GUID*", "PCWSTR", "HCN_NETWORK*", "PWSTR*")),
        "HcnOpenNetwork": ("HRESULT", ("GUID*", "HCN_NETWORK*", "PWSTR*")),
        "HcnQueryNetworkProperties": ("HRESULT", ("HCN_NETWORK", "PCWSTR", "PWSTR*", "PWSTR*")),
        "HcnDeleteNetwork": ("HRESULT", ("GUID*", "PWSTR*")),
        "HcnCloseNetwork": ("HRESULT", ("HCN_NETWORK",)),
        "HcnEnumerateEndpoints": ("HRESULT", ("PCWSTR", "PWSTR*", "PWSTR*")),
        "HcnCreateEndpoint": ("HRESULT", ("HCN_NETWORK", "GUID*", "PCWSTR", "HCN_ENDPOINT*", "PWSTR*")),
        "HcnOpenEndpoint": ("HRESULT", ("GUID*", "HCN_ENDPOINT*", "PWSTR*")),
        "HcnQueryEndpointProperties": ("HRESULT", ("HCN_ENDPOINT", "PCWSTR", "PWSTR*", "PWSTR*")),
        "HcnDeleteEndpoint": ("HRESULT", ("GUID*", "PWSTR*")),
        "HcnCloseEndpoint": ("HRESULT", ("HCN_ENDPOINT",)),
        "HcnOpenNamespace": ("HRESULT", ("GUID*", "HCN_NAMESPACE*", "PWSTR*")),
        "HcnQueryNamespaceProperties": ("HRESULT", ("HCN_NAMESPACE", "PCWSTR", "PWSTR*", "PWSTR*")),
        "HcnModifyNamespace": ("HRESULT", ("HCN_NAMESPACE", "PCWSTR", "PWSTR*")),
        "HcnCloseNamespace": ("HRESULT", ("HCN_NAMESPACE",)),
    },
    "ole32.dll": {
        "CoTaskMemFree": ("void", ("LPVOID",)),
    },
    "iphlpapi.dll": {
        "GetAdaptersAddresses": ("ULONG", ("ULONG", "ULONG", "PVOID", "IP_ADAPTER_ADDRESSES*", "PULONG")),
    },
}


@dataclass(frozen=True)
class Libraries:
    """The three DLLs, or stand-ins with the same function attributes (tests)."""

    computenetwork: Any
    ole32: Any
    iphlpapi: Any


def load_libraries() -> Libraries:
    """computenetwork.dll, ole32.dll and iphlpapi.dll with PROTOTYPES applied. Windows only."""
    if sys.platform != "win32":
        raise RuntimeError(
            f"the computenetwork.dll HCN binding needs Windows (this is {sys.platform}); "
            "use HCN_BACKEND=fake elsewhere"
        )
    loaded = {}
    for dll, functions in PROTOTYPES.items():
        library = ctypes.WinDLL(dll)  # WINAPI (stdcall on x86; one convention on x64/arm64)
        for name, (restype, argtypes) in functions.items():
            function = getattr(library, name)
            function.restype = CTYPES[restype]
            function.argtypes = [CTYPES[t] for t in argtypes]
        loaded[dll] = library
    return Libraries(loaded["computenetwork.dll"], loaded["ole32.dll"], loaded["iphlpapi.dll"])


@dataclass(frozen=True)
class _Kind:
    open: str
    query: str
    close: str


_NETWORK = _Kind("HcnOpenNetwork", "HcnQueryNetworkProperties", "HcnCloseNetwork")
_ENDPOINT = _Kind("HcnOpenEndpoint", "HcnQueryEndpointProperties", "HcnCloseEndpoint")
_NAMESPACE = _Kind("HcnOpenNamespace", "HcnQueryNamespaceProperties", "HcnCloseNamespace")


def _failed(hresult: int) -> bool:
    return bool(hresult & 0x80000000)


class ComputeNetwork:
    """``Hcn`` on computenetwork.dll. Blocking; safe to call from several threads (no shared
    state but the DLL's)."""

    name = "computenetwork.dll"

    def __init__(self, libraries: Libraries | None = None) -> None:
        libs = libraries if libraries is not None else load_libraries()
        by_dll = {
            "computenetwork.dll": libs.computenetwork,
            "ole32.dll": libs.ole32,
            "iphlpapi.dll": libs.iphlpapi,
        }
        self._fn: dict[str, Any] = {
            name: getattr(by_dll[dll], name) for dll, functions in PROTOTYPES.items() for name in functions
        }

    # -- the protocol ---------------------------------------------------------------------------

    def list_networks(self, query: Document) -> list[Document]:
        text = _dumps(query)
        ids = self._enumerate("HcnEnumerateNetworks", text)
        return [self._get(_NETWORK, network_id, text) for network_id in ids]

    def create_network(self, doc: Document) -> Document:
        with self._handle("HcnCloseNetwork") as network:
            self._call("HcnCreateNetwork", ctypes.pointer(GUID()), _dumps(doc), ctypes.pointer(network))
            return self._properties("HcnQueryNetworkProperties", network, DEFAULT_QUERY)

    def delete_network(self, network_id: str) -> None:
        self._call("HcnDeleteNetwork", ctypes.pointer(_guid(network_id)))

    def list_endpoints(self, query: Document) -> list[Document]:
        text = _dumps(query)
        ids = self._enumerate("HcnEnumerateEndpoints", text)
        return [self._get(_ENDPOINT, endpoint_id, text) for endpoint_id in ids]

    def create_endpoint(self, network_id: str, doc: Document) -> Document:
        network_guid = _guid(network_id)
        with self._handle("HcnCloseNetwork") as network:
            self._call("HcnOpenNetwork", ctypes.pointer(network_guid), ctypes.pointer(network))
            with self._handle("HcnCloseEndpoint") as endpoint:
                self._call(
                    "HcnCreateEndpoint",
                    network.value,
                    ctypes.pointer(GUID()),
                    _dumps(doc),
                    ctypes.pointer(endpoint),
                )
                return self._properties("HcnQueryEndpointProperties", endpoint, DEFAULT_QUERY)

    def get_endpoint(self, endpoint_id: str) -> Document:
        return self._get(_ENDPOINT, endpoint_id, DEFAULT_QUERY)

    def delete_endpoint(self, endpoint_id: str) -> None:
        self._call("HcnDeleteEndpoint", ctypes.pointer(_guid(endpoint_id)))

    def get_namespace(self, namespace_id: str) -> Document:
        return self._get(_NAMESPACE, namespace_id, DEFAULT_QUERY)

    def modify_namespace(self, namespace_id: str, request: Document) -> None:
        namespace_guid = _guid(namespace_id)
        with self._handle("HcnCloseNamespace") as namespace:
            self._call("HcnOpenNamespace", ctypes.pointer(namespace_guid), ctypes.pointer(namespace))
            self._call("HcnModifyNamespace", namespace.value, _dumps(request))

    def adapter_by_mac(self, mac: str) -> str | None:
        """The friendly name of the host adapter whose MAC is ``mac`` (``aa:bb:…``, ``AA-BB-…``),
        or None; ValueError for a malformed MAC. When a physical NIC is bound to a Hyper-V switch,
        its host vNIC ("vEthernet (…)") has the same MAC: the other adapter wins, since a network's
        NetAdapterName is the NIC."""
        wanted = bytes.fromhex(mac.replace(":", "").replace("-", ""))
        matches = [name for name, address in self._adapters() if address and address == wanted]
        for name in matches:
            if not name.startswith("vEthernet ("):
                return name
        return matches[0] if matches else None

    def close(self) -> None:
        """Nothing to release: no handle outlives a call, and the DLLs stay loaded."""

    # -- calls, handles and strings -------------------------------------------------------------

    def _call(self, function: str, *args: Any, returns_text: bool = False) -> str:
        """``function(*args, [PWSTR* out,] PWSTR* ErrorRecord)``: both strings read and freed
        whatever happens; HcnError for a failed HRESULT or a non-empty ErrorRecord. Returns the
        out string ("" without ``returns_text``)."""
        record = ctypes.c_wchar_p()
        out = ctypes.c_wchar_p()
        outs = (ctypes.pointer(out), ctypes.pointer(record)) if returns_text else (ctypes.pointer(record),)
        try:
            hresult = int(self._fn[function](*args, *outs)) & 0xFFFFFFFF
        finally:
            try:
                text = self._take(out)
            finally:
                error = self._take(record)
        if _failed(hresult) or error:
            raise HcnError(function, hresult if _failed(hresult) else E_FAIL, error)
        return text

    def _take(self, buffer: ctypes.c_wchar_p) -> str:
        """The string HCN returned in ``buffer`` (CoTaskMemAlloc'd), freed once; "" for NULL."""
        address = ctypes.cast(buffer, ctypes.c_void_p).value
        if not address:
            return ""
        try:
            return buffer.value or ""
        finally:
            buffer.value = None
            self._fn["CoTaskMemFree"](address)

    @contextmanager
    def _handle(self, close: str) -> Iterator[ctypes.c_void_p]:
        """A handle slot for an Open/Create call, closed on the way out if it was filled. A failed
        close is raised only when nothing else is: the first error is the one worth reporting."""
        handle = ctypes.c_void_p()
        try:
            yield handle
        except BaseException:
            if handle.value:
                self._fn[close](handle.value)
            raise
        if handle.value:
            hresult = int(self._fn[close](handle.value)) & 0xFFFFFFFF
            if _failed(hresult):
                raise HcnError(close, hresult)

    def _properties(self, function: str, handle: ctypes.c_void_p, query: str) -> Document:
        text = self._call(function, handle.value, query, returns_text=True)
        document = _loads(function, text)
        if not isinstance(document, dict):
            raise HcnError(function, E_UNEXPECTED, f"properties are not a JSON object: {text[:200]}")
        return document

    def _enumerate(self, function: str, query: str) -> list[str]:
        text = self._call(function, query, returns_text=True)
        ids = _loads(function, text or "[]") or []
        if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
            raise HcnError(function, E_UNEXPECTED, f"not a JSON list of GUIDs: {text[:200]}")
        return ids

    def _get(self, kind: _Kind, object_id: str, query: str) -> Document:
        object_guid = _guid(object_id)
        with self._handle(kind.close) as handle:
            self._call(kind.open, ctypes.pointer(object_guid), ctypes.pointer(handle))
            return self._properties(kind.query, handle, query)

    def _adapters(self) -> Iterator[tuple[str, bytes]]:
        """(friendly name, MAC) of every host adapter, from GetAdaptersAddresses."""
        flags = (
            GAA_FLAG_SKIP_UNICAST | GAA_FLAG_SKIP_ANYCAST | GAA_FLAG_SKIP_MULTICAST | GAA_FLAG_SKIP_DNS_SERVER
        )
        size = ctypes.c_uint32(15000)  # Microsoft's suggested first try; the call says if it needs more
        for _ in range(4):  # adapters can appear between a call that sized the buffer and the next
            buffer = (ctypes.c_uint64 * ((size.value + 7) // 8))()  # 8-byte aligned, as the structs need
            first = ctypes.cast(buffer, ctypes.POINTER(IP_ADAPTER_ADDRESSES))
            status = self._fn["GetAdaptersAddresses"](AF_UNSPEC, flags, None, first, ctypes.pointer(size))
            if status == ERROR_BUFFER_OVERFLOW:
                continue
            if status == ERROR_NO_DATA:
                return
            if status != 0:
                raise HcnError("GetAdaptersAddresses", 0x80070000 | (status & 0xFFFF))
            node = first
            while node:
                adapter = node.contents
                length = min(adapter.PhysicalAddressLength, MAX_ADAPTER_ADDRESS_LENGTH)
                yield adapter.FriendlyName or "", bytes(adapter.PhysicalAddress[:length])
                node = adapter.Next
            return
        raise HcnError(
            "GetAdaptersAddresses", 0x80070000 | ERROR_BUFFER_OVERFLOW, "the adapter list kept growing"
        )


def _guid(text: str) -> GUID:
    try:
        return GUID.from_string(text)
    except ValueError as exc:
        raise HcnError("GUID", E_INVALIDARG, f"not a GUID: {text!r}") from exc


def _dumps(document: Document) -> str:
    return json.dumps(document, separators=(",", ":"))


def _loads(function: str, text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError as exc:
        raise HcnError(function, E_UNEXPECTED, f"not JSON: {text[:200]}") from exc


__all__ = ["CTYPES", "GUID", "PROTOTYPES", "ComputeNetwork", "Libraries", "load_libraries"]
