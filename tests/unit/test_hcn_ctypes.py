"""``ipamd.datapath.windows.hcn_ctypes`` on Linux: its prototype table against the real headers
(mingw-w64's computenetwork.h, combaseapi.h, iphlpapi.h, iptypes.h; Debian package
mingw-w64-common, installed by ./dev), the GUID layout, and the call discipline (every handle
closed, every returned string freed once, errors raised with HCN's HRESULT and text) against a
stand-in for the DLLs: plain Python functions that write through the same ctypes out-pointers.
Windows itself is not available here; the stand-in is a fake of the OS library, nothing is patched.
"""

from __future__ import annotations

import ctypes
import json
import os
import re
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ipamd.datapath.windows import hcn_ctypes
from ipamd.datapath.windows.hcn import (
    E_INVALIDARG,
    HCN_E_ENDPOINT_NOT_FOUND,
    HCN_E_INVALID_IP,
    HCN_E_NETWORK_NOT_FOUND,
    Document,
    Hcn,
    HcnError,
)
from ipamd.datapath.windows.hcn_ctypes import (
    GUID,
    IP_ADAPTER_ADDRESSES,
    PROTOTYPES,
    ComputeNetwork,
    Libraries,
)

Prototype = tuple[str, tuple[str, ...]]

# ---------------------------------------------------------------------------------------------
# The headers, and a small parser for the declarations the binding uses
# ---------------------------------------------------------------------------------------------

INCLUDE = Path("/usr/share/mingw-w64/include")
HEADERS = {  # DLL -> (the header declaring its functions, headers with typedefs they use)
    "computenetwork.dll": ("computenetwork.h", ()),
    "ole32.dll": ("combaseapi.h", ()),
    "iphlpapi.dll": ("iphlpapi.h", ("iptypes.h",)),
}
# Windows base types (winnt.h, winnt.h's strings, guiddef.h), too tangled with #ifdefs to parse:
# the documented meaning ("Windows Data Types"), const dropped (it does not change the ABI).
BASE_TYPES = {
    "REFGUID": "GUID*",  # guiddef.h, C: #define REFGUID const GUID *__MIDL_CONST
    "PCWSTR": "WCHAR*",
    "LPCWSTR": "WCHAR*",
    "PWSTR": "WCHAR*",
    "LPWSTR": "WCHAR*",
    "wchar_t": "WCHAR",
    "PVOID": "void*",
    "LPVOID": "void*",
    "HANDLE": "void*",
    "VOID": "void",
    "PULONG": "ULONG*",
}
QUALIFIERS = {"const", "__MIDL_CONST", "volatile", "struct"}

COMMENT = re.compile(r"/\*.*?\*/|//[^\n]*", re.S)
# SAL annotations (_In_, _Outptr_opt_, _Out_writes_bytes_(n), ...): the SDK's headers have them,
# mingw-w64's do not.
SAL = re.compile(r"\b_[A-Z]\w*_\b(?:\s*\([^()]*\))?")
DECLARATION = re.compile(
    r"^[ \t]*(?P<ret>WINOLEAPI_\s*\(\s*\w+\s*\)|\w+)\s+(?:WINAPI\s+)?"
    r"(?P<name>\w+)\s*\((?P<args>[^;{}()]*)\)\s*;",
    re.M,
)
TYPEDEF = re.compile(r"\btypedef\s+(?P<source>\w+(?:\s*\*)*)\s*(?P<name>\w+)\s*;")


def parse_declarations(text: str) -> dict[str, Prototype]:
    """``HRESULT WINAPI HcnOpenNetwork (REFGUID Id, PHCN_NETWORK Network, PWSTR *ErrorRecord);``
    -> {"HcnOpenNetwork": ("HRESULT", ("REFGUID", "PHCN_NETWORK", "PWSTR*"))}."""
    text = SAL.sub(" ", COMMENT.sub(" ", text))
    found: dict[str, Prototype] = {}
    for match in DECLARATION.finditer(text):
        ret = re.sub(r"WINOLEAPI_\s*\(\s*(\w+)\s*\)", r"\1", match["ret"])
        ret = "HRESULT" if ret == "WINOLEAPI" else ret
        if ret == "typedef":
            continue
        args = tuple(_argument_type(a) for a in match["args"].split(","))
        found.setdefault(match["name"], (ret, () if args in {("void",), ("VOID",), ("",)} else args))
    return found


def _argument_type(argument: str) -> str:
    """``const GUID *Id`` -> ``const GUID*``; an unnamed argument is all type."""
    tokens = re.findall(r"\w+|\*", argument)
    words = [t for t in tokens if t != "*" and t not in QUALIFIERS]
    if len(words) >= 2 and tokens[-1] != "*":
        tokens = tokens[:-1]  # the parameter's name
    return " ".join(t for t in tokens if t != "*") + "*" * tokens.count("*")


def parse_typedefs(text: str) -> dict[str, str]:
    """``typedef HCN_NETWORK* PHCN_NETWORK;`` -> {"PHCN_NETWORK": "HCN_NETWORK*"}; the first
    definition wins (iptypes.h's Vista-and-later IP_ADAPTER_ADDRESSES_LH comes before _XP)."""
    found: dict[str, str] = {}
    for match in TYPEDEF.finditer(COMMENT.sub(" ", text)):
        source = match["source"]
        found.setdefault(match["name"], source.replace("*", "").strip() + "*" * source.count("*"))
    return found


def canonical(c_type: str, typedefs: dict[str, str]) -> str:
    """A C type with typedefs and base types resolved and qualifiers dropped: ``PHCN_NETWORK`` ->
    ``void**``, ``REFGUID`` -> ``GUID*``, ``PWSTR *`` -> ``WCHAR**``."""
    words = [w for w in re.findall(r"\w+", c_type) if w not in QUALIFIERS]
    stars = c_type.count("*")
    base = " ".join(words)
    for _ in range(20):
        resolved = typedefs.get(base, BASE_TYPES.get(base))
        if resolved is None:
            break
        stars += resolved.count("*")
        base = resolved.replace("*", "").strip()
    return base + "*" * stars


def mismatches(
    table: dict[str, Prototype], header: dict[str, Prototype], typedefs: dict[str, str]
) -> list[str]:
    """How ``table`` (the binding's prototypes) differs from ``header``'s declarations."""
    problems = []
    for name, (ret, args) in table.items():
        if name not in header:
            problems.append(f"{name}: not declared in the header")
            continue
        header_ret, header_args = header[name]
        if canonical(ret, typedefs) != canonical(header_ret, typedefs):
            problems.append(f"{name}: returns {ret}, the header says {header_ret}")
        if len(args) != len(header_args):
            problems.append(f"{name}: {len(args)} arguments, the header has {len(header_args)}")
            continue
        for position, (ours, theirs) in enumerate(zip(args, header_args, strict=True), start=1):
            if canonical(ours, typedefs) != canonical(theirs, typedefs):
                problems.append(
                    f"{name} argument {position}: {ours} ({canonical(ours, typedefs)}), "
                    f"the header has {theirs} ({canonical(theirs, typedefs)})"
                )
    return problems


def read_header(name: str) -> str:
    path = INCLUDE / name
    if not path.is_file():
        message = f"{path} is missing: install mingw-w64-common (./dev setup does)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return path.read_text(encoding="utf-8", errors="replace")


def header_for(dll: str) -> tuple[dict[str, Prototype], dict[str, str]]:
    declaring, extra = HEADERS[dll]
    text = read_header(declaring)
    typedefs = parse_typedefs(text + "".join(read_header(h) for h in extra))
    return parse_declarations(text), typedefs


# ---------------------------------------------------------------------------------------------
# The prototype table against the headers
# ---------------------------------------------------------------------------------------------

HCN_FUNCTIONS = {
    "HcnEnumerateNetworks",
    "HcnCreateNetwork",
    "HcnOpenNetwork",
    "HcnQueryNetworkProperties",
    "HcnDeleteNetwork",
    "HcnCloseNetwork",
    "HcnEnumerateEndpoints",
    "HcnCreateEndpoint",
    "HcnOpenEndpoint",
    "HcnQueryEndpointProperties",
    "HcnDeleteEndpoint",
    "HcnCloseEndpoint",
    "HcnOpenNamespace",
    "HcnQueryNamespaceProperties",
    "HcnModifyNamespace",
    "HcnCloseNamespace",
}


def test_the_table_binds_the_functions_the_datapath_needs() -> None:
    assert set(PROTOTYPES["computenetwork.dll"]) == HCN_FUNCTIONS
    assert set(PROTOTYPES["ole32.dll"]) == {"CoTaskMemFree"}
    assert set(PROTOTYPES["iphlpapi.dll"]) == {"GetAdaptersAddresses"}
    assert {r for r, _ in PROTOTYPES["computenetwork.dll"].values()} == {"HRESULT"}


@pytest.mark.parametrize("dll", sorted(PROTOTYPES))
def test_prototypes_match_the_header(dll: str) -> None:
    header, typedefs = header_for(dll)
    assert mismatches(PROTOTYPES[dll], header, typedefs) == []


WRONG = {  # name -> (a wrong prototype, what the comparator must say)
    "arguments swapped": (
        "HcnCreateEndpoint",
        ("HRESULT", ("GUID*", "HCN_NETWORK", "PCWSTR", "HCN_ENDPOINT*", "PWSTR*")),
        "argument 1: GUID* (GUID*), the header has HCN_NETWORK (void*)",
    ),
    "error record missing": (
        "HcnOpenNetwork",
        ("HRESULT", ("GUID*", "HCN_NETWORK*")),
        "2 arguments, the header has 3",
    ),
    "handle by value, not by pointer": (
        "HcnOpenEndpoint",
        ("HRESULT", ("GUID*", "HCN_ENDPOINT", "PWSTR*")),
        "argument 2: HCN_ENDPOINT (void*), the header has PHCN_ENDPOINT (void**)",
    ),
    "string, not a string's address": (
        "HcnQueryNetworkProperties",
        ("HRESULT", ("HCN_NETWORK", "PCWSTR", "PCWSTR", "PWSTR*")),
        "argument 3: PCWSTR (WCHAR*), the header has PWSTR* (WCHAR**)",
    ),
    "GUID by value": ("HcnDeleteNetwork", ("HRESULT", ("GUID", "PWSTR*")), "argument 1: GUID (GUID)"),
    "wrong return type": (
        "HcnCloseNamespace",
        ("void", ("HCN_NAMESPACE",)),
        "returns void, the header says HRESULT",
    ),
    "not in the header": ("HcnAttachEndpoint", ("HRESULT", ("HCN_ENDPOINT",)), "not declared in the header"),
}


@pytest.mark.parametrize(("name", "prototype", "expected"), list(WRONG.values()), ids=list(WRONG))
def test_a_wrong_prototype_is_caught(name: str, prototype: Prototype, expected: str) -> None:
    header, typedefs = header_for("computenetwork.dll")
    problems = mismatches({name: prototype}, header, typedefs)
    assert any(expected in problem for problem in problems), problems


SDK_STYLE = """
typedef void* HCN_ENDPOINT;
typedef HCN_ENDPOINT* PHCN_ENDPOINT;
typedef void* HCN_NETWORK;

/// Creates an endpoint on a network.
HRESULT
WINAPI
HcnCreateEndpoint(
    _In_ HCN_NETWORK Network,
    _In_ REFGUID Id,
    _In_ PCWSTR Settings,
    _Out_ PHCN_ENDPOINT Endpoint,
    _Outptr_opt_ PWSTR* ErrorRecord
    );

HRESULT
WINAPI
HcnCloseEndpoint(
    _In_ HCN_ENDPOINT Endpoint
    );

WINOLEAPI_(void) CoTaskMemFree(_Frees_ptr_opt_ LPVOID pv);
ULONG WINAPI GetAdaptersAddresses(_In_ ULONG Family, _In_ ULONG Flags, _Reserved_ PVOID Reserved,
    _Out_writes_bytes_opt_(*SizePointer) PIP_ADAPTER_ADDRESSES AdapterAddresses, _Inout_ PULONG SizePointer);
"""


def test_the_parser_reads_sdk_style_declarations_with_sal() -> None:
    header = parse_declarations(SDK_STYLE)
    assert header["HcnCreateEndpoint"] == (
        "HRESULT",
        ("HCN_NETWORK", "REFGUID", "PCWSTR", "PHCN_ENDPOINT", "PWSTR*"),
    )
    assert header["CoTaskMemFree"] == ("void", ("LPVOID",))
    assert header["GetAdaptersAddresses"][1][3] == "PIP_ADAPTER_ADDRESSES"
    typedefs = parse_typedefs(SDK_STYLE)
    table = {n: PROTOTYPES["computenetwork.dll"][n] for n in ("HcnCreateEndpoint", "HcnCloseEndpoint")}
    assert mismatches(table, header, typedefs) == []


def test_each_c_type_maps_to_a_ctype_of_its_shape() -> None:
    """What each C name in the table resolves to (through the headers' typedefs) decides the ctype:
    a handle is a void*, its slot a void**, a returned string a WCHAR**."""
    _, typedefs = header_for("computenetwork.dll")
    typedefs |= header_for("iphlpapi.dll")[1]
    shapes: dict[str, Any] = {
        "void": None,
        "HRESULT": ctypes.c_int32,  # LONG: signed 32 bits, failure when negative
        "ULONG": ctypes.c_uint32,
        "ULONG*": ctypes.POINTER(ctypes.c_uint32),
        "void*": ctypes.c_void_p,
        "void**": ctypes.POINTER(ctypes.c_void_p),
        "WCHAR*": ctypes.c_wchar_p,
        "WCHAR**": ctypes.POINTER(ctypes.c_wchar_p),
        "GUID*": ctypes.POINTER(GUID),
        "IP_ADAPTER_ADDRESSES_LH*": ctypes.POINTER(IP_ADAPTER_ADDRESSES),
    }
    used = {t for functions in PROTOTYPES.values() for r, args in functions.values() for t in (r, *args)}
    assert used <= set(hcn_ctypes.CTYPES)
    assert {t: hcn_ctypes.CTYPES[t] for t in used} == {t: shapes[canonical(t, typedefs)] for t in used}


def test_the_adapter_struct_is_the_headers_prefix() -> None:
    """Member names and sizes in order, up to PhysicalAddressLength: the fields read (Next,
    FriendlyName, PhysicalAddress, PhysicalAddressLength) then sit where Windows writes them."""
    text = COMMENT.sub(" ", read_header("iptypes.h"))
    defines = {k: int(v) for k, v in re.findall(r"#define (\w+) (\d+)\b", text)}
    start = text.index("typedef struct _IP_ADAPTER_ADDRESSES_LH {")
    body = text[
        text.index("{", start) + 1 : text.index("PhysicalAddressLength;", start)
        + len("PhysicalAddressLength;")
    ]
    sizes = {"ULONG": 4, "IF_INDEX": 4, "BYTE": 1}
    expected = []
    for kind, star, name, length in re.findall(r"(\w+)\s*(\*?)\s*(\w+)\s*(?:\[(\w+)\])?\s*;", body):
        if name == "Alignment":
            continue  # the union's ULONGLONG: it only makes the struct 8-byte aligned
        pointer = star or kind.startswith("P")  # PCHAR, PWCHAR, PIP_ADAPTER_UNICAST_ADDRESS_LH, ...
        size = ctypes.sizeof(ctypes.c_void_p) if pointer else sizes[kind] * defines.get(length, 1)
        expected.append((name, size))
    ours = [(field[0], ctypes.sizeof(field[1])) for field in IP_ADAPTER_ADDRESSES._fields_]
    assert ours == expected
    assert defines["MAX_ADAPTER_ADDRESS_LENGTH"] == hcn_ctypes.MAX_ADAPTER_ADDRESS_LENGTH


# ---------------------------------------------------------------------------------------------
# GUIDs
# ---------------------------------------------------------------------------------------------


def test_guid_fields_follow_the_string() -> None:
    value = GUID.from_string("6B29FC40-CA47-1067-B31D-00DD010662DA")
    assert (value.Data1, value.Data2, value.Data3) == (0x6B29FC40, 0xCA47, 0x1067)
    assert bytes(value.Data4) == bytes.fromhex("B31D00DD010662DA")
    assert ctypes.sizeof(GUID) == 16
    assert str(value) == "6b29fc40-ca47-1067-b31d-00dd010662da"


@pytest.mark.parametrize(
    ("text", "printed"),
    [
        ("00000000-0000-0000-0000-000000000000", "00000000-0000-0000-0000-000000000000"),
        ("{C0A80101-0000-4000-8000-FFFFFFFFFFFF}", "c0a80101-0000-4000-8000-ffffffffffff"),
        ("c0a80101-0000-4000-8000-ffffffffffff", "c0a80101-0000-4000-8000-ffffffffffff"),
    ],
    ids=["zero", "braces-uppercase", "lowercase"],
)
def test_guid_round_trips(text: str, printed: str) -> None:
    assert str(GUID.from_string(text)) == printed


def test_the_zero_guid_is_the_default() -> None:
    assert str(GUID()) == "00000000-0000-0000-0000-000000000000"


@given(st.uuids())
def test_any_uuid_round_trips(value: uuid.UUID) -> None:
    assert str(GUID.from_string(str(value).upper())) == str(value)
    # the memory layout is Windows' (little-endian Data1..3 on this little-endian host)
    if sys.byteorder == "little":
        assert bytes(GUID.from_string(str(value))) == value.bytes_le


@pytest.mark.parametrize(
    "text", ["", "not-a-guid", "6B29FC40-CA47-1067-B31D-00DD010662"], ids=["empty", "word", "short"]
)
def test_a_bad_guid_is_refused(text: str) -> None:
    with pytest.raises(ValueError):
        GUID.from_string(text)


# ---------------------------------------------------------------------------------------------
# The calls, against a stand-in for the DLLs
# ---------------------------------------------------------------------------------------------

E_HANDLE = 0x80070006


def signed(hresult: int) -> int:
    """An HRESULT as a c_int32 restype hands it to Python."""
    return hresult - (1 << 32) if hresult & 0x80000000 else hresult


class FakeDlls:
    """computenetwork.dll, ole32.dll and iphlpapi.dll as Python functions over a dict of networks,
    endpoints and namespaces. Writes through the out-pointers it is given, as the DLL does; hands
    out strings in buffers it owns (CoTaskMemAlloc) and zeroes them on CoTaskMemFree, which refuses
    an address it did not hand out or has freed. ``failures`` scripts a function's answer."""

    def __init__(self) -> None:
        self.objects: dict[str, dict[str, Document]] = {"Network": {}, "Endpoint": {}, "Namespace": {}}
        self.handles: dict[int, tuple[str, str]] = {}  # open handle -> (kind, ID)
        self.strings: dict[int, ctypes.Array[ctypes.c_wchar]] = {}  # not yet freed
        self.failures: dict[str, tuple[int, str]] = {}  # function -> (HRESULT, ErrorRecord)
        self.calls: list[str] = []
        self.closed: list[str] = []
        self.frees = 0
        self.create_guids: list[str] = []
        self.adapters: list[tuple[str, bytes]] = []
        self.adapter_sizes: list[int] = []  # the buffer size of each GetAdaptersAddresses call
        self.adapter_bytes_needed = 0
        self.adapter_status: int | None = None
        self._next_handle = 0x1000
        self._keep: list[Any] = []

    def libraries(self) -> Libraries:
        return Libraries(computenetwork=self, ole32=self, iphlpapi=self)

    # -- ole32 --------------------------------------------------------------------------------

    def CoTaskMemFree(self, address: int) -> None:
        assert address in self.strings, f"CoTaskMemFree({address:#x}): freed twice or never handed out"
        buffer = self.strings.pop(address)
        ctypes.memset(buffer, 0, ctypes.sizeof(buffer))  # a read after the free would see ""
        self.frees += 1

    # -- plumbing -----------------------------------------------------------------------------

    def _give(self, slot: Any, text: str) -> None:
        buffer = ctypes.create_unicode_buffer(text)
        self.strings[ctypes.addressof(buffer)] = buffer
        ctypes.cast(slot, ctypes.POINTER(ctypes.c_void_p))[0] = ctypes.addressof(buffer)

    def _begin(self, function: str, record: Any) -> int | None:
        """Record the call; a scripted answer (its ErrorRecord handed out) or None to go on."""
        self.calls.append(function)
        if function not in self.failures:
            return None
        hresult, text = self.failures[function]
        if text:
            self._give(record, text)
        return signed(hresult)

    def _handle(self, slot: Any, kind: str, object_id: str) -> None:
        self._next_handle += 0x10
        self.handles[self._next_handle] = (kind, object_id)
        slot[0] = self._next_handle

    def _missing(self, kind: str, record: Any) -> int:
        self._give(record, json.dumps({"Success": False, "Error": f"{kind} not found"}))
        return signed(
            {"Network": HCN_E_NETWORK_NOT_FOUND, "Endpoint": HCN_E_ENDPOINT_NOT_FOUND}.get(kind, 0x80070490)
        )

    def _enumerate(self, kind: str, query: str, out: Any, record: Any) -> int:
        if (scripted := self._begin(f"HcnEnumerate{kind}s", record)) is not None:
            return scripted
        wanted = json.loads(json.loads(query).get("Filter") or "{}")
        ids = [i for i, d in self.objects[kind].items() if all(d.get(k) == v for k, v in wanted.items())]
        self._give(out, json.dumps(ids))
        return 0

    def _create(self, kind: str, guid: Any, settings: str, slot: Any, record: Any, **extra: str) -> int:
        self.create_guids.append(str(guid.contents))
        if (scripted := self._begin(f"HcnCreate{kind}", record)) is not None:
            return scripted
        object_id = str(uuid.uuid4()).upper()  # HCN assigns the ID for a zero GUID
        self.objects[kind][object_id] = {**json.loads(settings), **extra, "ID": object_id}
        self._handle(slot, kind, object_id)
        return 0

    def _open(self, kind: str, guid: Any, slot: Any, record: Any) -> int:
        if (scripted := self._begin(f"HcnOpen{kind}", record)) is not None:
            return scripted
        object_id = str(guid.contents).upper()
        if object_id not in self.objects[kind]:
            return self._missing(kind, record)
        self._handle(slot, kind, object_id)
        return 0

    def _query(self, kind: str, handle: int, query: str, out: Any, record: Any) -> int:
        if (scripted := self._begin(f"HcnQuery{kind}Properties", record)) is not None:
            return scripted
        assert self.handles[handle][0] == kind and json.loads(query)["SchemaVersion"] == {
            "Major": 2,
            "Minor": 0,
        }
        self._give(out, json.dumps(self.objects[kind][self.handles[handle][1]]))
        return 0

    def _delete(self, kind: str, guid: Any, record: Any) -> int:
        if (scripted := self._begin(f"HcnDelete{kind}", record)) is not None:
            return scripted
        if self.objects[kind].pop(str(guid.contents).upper(), None) is None:
            return self._missing(kind, record)
        return 0

    def _close(self, kind: str, handle: int) -> int:
        self.calls.append(f"HcnClose{kind}")
        if f"HcnClose{kind}" in self.failures:
            return signed(self.failures[f"HcnClose{kind}"][0])
        if self.handles.get(handle, ("", ""))[0] != kind:
            return signed(E_HANDLE)
        del self.handles[handle]
        self.closed.append(f"HcnClose{kind}")
        return 0

    # -- computenetwork.dll -------------------------------------------------------------------

    def HcnEnumerateNetworks(self, query: str, out: Any, record: Any) -> int:
        return self._enumerate("Network", query, out, record)

    def HcnCreateNetwork(self, guid: Any, settings: str, slot: Any, record: Any) -> int:
        return self._create("Network", guid, settings, slot, record)

    def HcnOpenNetwork(self, guid: Any, slot: Any, record: Any) -> int:
        return self._open("Network", guid, slot, record)

    def HcnQueryNetworkProperties(self, handle: int, query: str, out: Any, record: Any) -> int:
        return self._query("Network", handle, query, out, record)

    def HcnDeleteNetwork(self, guid: Any, record: Any) -> int:
        return self._delete("Network", guid, record)

    def HcnCloseNetwork(self, handle: int) -> int:
        return self._close("Network", handle)

    def HcnEnumerateEndpoints(self, query: str, out: Any, record: Any) -> int:
        return self._enumerate("Endpoint", query, out, record)

    def HcnCreateEndpoint(self, network: int, guid: Any, settings: str, slot: Any, record: Any) -> int:
        assert self.handles[network][0] == "Network", "HcnCreateEndpoint needs an open network"
        return self._create(
            "Endpoint", guid, settings, slot, record, HostComputeNetwork=self.handles[network][1]
        )

    def HcnOpenEndpoint(self, guid: Any, slot: Any, record: Any) -> int:
        return self._open("Endpoint", guid, slot, record)

    def HcnQueryEndpointProperties(self, handle: int, query: str, out: Any, record: Any) -> int:
        return self._query("Endpoint", handle, query, out, record)

    def HcnDeleteEndpoint(self, guid: Any, record: Any) -> int:
        return self._delete("Endpoint", guid, record)

    def HcnCloseEndpoint(self, handle: int) -> int:
        return self._close("Endpoint", handle)

    def HcnOpenNamespace(self, guid: Any, slot: Any, record: Any) -> int:
        return self._open("Namespace", guid, slot, record)

    def HcnQueryNamespaceProperties(self, handle: int, query: str, out: Any, record: Any) -> int:
        return self._query("Namespace", handle, query, out, record)

    def HcnModifyNamespace(self, handle: int, settings: str, record: Any) -> int:
        if (scripted := self._begin("HcnModifyNamespace", record)) is not None:
            return scripted
        request = json.loads(settings)
        namespace = self.objects["Namespace"][self.handles[handle][1]]
        resource = {"Type": "Endpoint", "Data": {"ID": request["Settings"]["EndpointId"]}}
        if request["RequestType"] == "Add":
            namespace.setdefault("Resources", []).append(resource)
        else:
            namespace["Resources"].remove(resource)
        return 0

    def HcnCloseNamespace(self, handle: int) -> int:
        return self._close("Namespace", handle)

    # -- iphlpapi.dll -------------------------------------------------------------------------

    def GetAdaptersAddresses(self, family: int, flags: int, reserved: None, first: Any, size: Any) -> int:
        assert (family, reserved) == (hcn_ctypes.AF_UNSPEC, None) and flags & hcn_ctypes.GAA_FLAG_SKIP_ANYCAST
        self.adapter_sizes.append(size[0])
        if self.adapter_status is not None:
            return self.adapter_status
        if not self.adapters:
            return hcn_ctypes.ERROR_NO_DATA
        step = ctypes.sizeof(IP_ADAPTER_ADDRESSES)
        needed = max(self.adapter_bytes_needed, step * len(self.adapters))
        if size[0] < needed:
            size[0] = needed
            return hcn_ctypes.ERROR_BUFFER_OVERFLOW
        base = ctypes.addressof(first.contents)
        for index, (name, mac) in enumerate(self.adapters):
            entry = IP_ADAPTER_ADDRESSES.from_address(base + index * step)
            ctypes.memset(base + index * step, 0, step)
            entry.Length = step
            if index + 1 < len(self.adapters):
                ctypes.c_void_p.from_address(base + IP_ADAPTER_ADDRESSES.Next.offset + index * step).value = (
                    base + (index + 1) * step
                )
            friendly = ctypes.create_unicode_buffer(name)
            self._keep.append(friendly)
            offset = base + index * step + IP_ADAPTER_ADDRESSES.FriendlyName.offset
            ctypes.c_void_p.from_address(offset).value = ctypes.addressof(friendly)
            ctypes.memmove(base + index * step + IP_ADAPTER_ADDRESSES.PhysicalAddress.offset, mac, len(mac))
            entry.PhysicalAddressLength = len(mac)
        return 0


@pytest.fixture
def dlls() -> FakeDlls:
    return FakeDlls()


@pytest.fixture
def hcn(dlls: FakeDlls) -> ComputeNetwork:
    return ComputeNetwork(dlls.libraries())


def settled(dlls: FakeDlls) -> None:
    """Nothing left open, nothing left unfreed."""
    assert dlls.handles == {}
    assert dlls.strings == {}


def test_it_is_the_hcn_protocol(hcn: ComputeNetwork) -> None:
    protocol: Hcn = hcn  # mypy checks the shape
    assert protocol.name == "computenetwork.dll"


@pytest.mark.skipif(sys.platform == "win32", reason="loads the real DLLs there")
def test_off_windows_it_refuses_to_start() -> None:
    with pytest.raises(RuntimeError, match="needs Windows"):
        ComputeNetwork()


NETWORK = {"Name": "cloud-cni-eni-1", "Type": "L2Bridge", "SchemaVersion": {"Major": 2, "Minor": 0}}


def test_create_network_passes_the_zero_guid_and_returns_what_hcn_assigned(
    hcn: ComputeNetwork, dlls: FakeDlls
) -> None:
    created = hcn.create_network(NETWORK)
    assert created == {**NETWORK, "ID": created["ID"]}
    assert dlls.create_guids == ["00000000-0000-0000-0000-000000000000"]
    assert dlls.calls == ["HcnCreateNetwork", "HcnQueryNetworkProperties", "HcnCloseNetwork"]
    assert dlls.frees == 1  # the properties; no ErrorRecord came back
    settled(dlls)


def test_create_endpoint_opens_the_network_and_closes_both(hcn: ComputeNetwork, dlls: FakeDlls) -> None:
    network = hcn.create_network(NETWORK)
    dlls.calls.clear()
    endpoint = hcn.create_endpoint(
        network["ID"], {"Name": "ep", "IpConfigurations": [{"IpAddress": "10.0.0.5"}]}
    )
    assert endpoint["HostComputeNetwork"] == network["ID"] and endpoint["Name"] == "ep"
    assert dlls.calls == [
        "HcnOpenNetwork",
        "HcnCreateEndpoint",
        "HcnQueryEndpointProperties",
        "HcnCloseEndpoint",
        "HcnCloseNetwork",
    ]
    assert dlls.create_guids[-1] == "00000000-0000-0000-0000-000000000000"
    settled(dlls)


def test_a_failing_create_endpoint_frees_its_error_once_and_closes_the_network(
    hcn: ComputeNetwork, dlls: FakeDlls
) -> None:
    network = hcn.create_network(NETWORK)
    frees, record = dlls.frees, '{"Success":false,"Error":"Invalid IP address","ErrorCode":2151350302}'
    dlls.failures["HcnCreateEndpoint"] = (HCN_E_INVALID_IP, record)
    dlls.calls.clear()
    with pytest.raises(HcnError) as caught:
        hcn.create_endpoint(network["ID"], {"Name": "ep"})
    assert (caught.value.method, caught.value.hresult, caught.value.message) == (
        "HcnCreateEndpoint",
        HCN_E_INVALID_IP,
        record,
    )
    assert dlls.frees == frees + 1
    assert dlls.calls == ["HcnOpenNetwork", "HcnCreateEndpoint", "HcnCloseNetwork"]
    assert dlls.objects["Endpoint"] == {}
    settled(dlls)


def test_an_error_record_with_s_ok_is_a_failure(hcn: ComputeNetwork, dlls: FakeDlls) -> None:
    dlls.failures["HcnCreateNetwork"] = (0, "something went wrong")
    with pytest.raises(HcnError) as caught:
        hcn.create_network(NETWORK)
    assert (caught.value.hresult, caught.value.message) == (hcn_ctypes.E_FAIL, "something went wrong")
    settled(dlls)


def test_a_failed_query_after_create_closes_the_handles(hcn: ComputeNetwork, dlls: FakeDlls) -> None:
    network = hcn.create_network(NETWORK)
    dlls.failures["HcnQueryEndpointProperties"] = (0x80070005, "")  # E_ACCESSDENIED, no record
    with pytest.raises(HcnError) as caught:
        hcn.create_endpoint(network["ID"], {"Name": "ep"})
    assert (caught.value.method, caught.value.hresult, caught.value.message) == (
        "HcnQueryEndpointProperties",
        0x80070005,
        "",
    )
    assert dlls.closed[-2:] == ["HcnCloseEndpoint", "HcnCloseNetwork"]
    settled(dlls)


def test_opening_a_missing_network_is_not_found(hcn: ComputeNetwork, dlls: FakeDlls) -> None:
    with pytest.raises(HcnError) as caught:
        hcn.create_endpoint(str(uuid.uuid4()), {"Name": "ep"})
    assert caught.value.not_found and caught.value.method == "HcnOpenNetwork"
    assert "not found" in caught.value.message
    assert dlls.calls == ["HcnOpenNetwork"]
    settled(dlls)


def test_list_endpoints_opens_queries_and_closes_each(hcn: ComputeNetwork, dlls: FakeDlls) -> None:
    network = hcn.create_network(NETWORK)
    made = [hcn.create_endpoint(network["ID"], {"Name": f"ep{i}"}) for i in range(3)]
    dlls.calls.clear()
    query = {"SchemaVersion": {"Major": 2, "Minor": 0}, "Filter": json.dumps({"Name": "ep1"})}
    assert hcn.list_endpoints(query) == [made[1]]
    everything = hcn.list_endpoints({"SchemaVersion": {"Major": 2, "Minor": 0}})
    assert sorted(e["Name"] for e in everything) == ["ep0", "ep1", "ep2"]
    assert dlls.calls[:4] == [
        "HcnEnumerateEndpoints",
        "HcnOpenEndpoint",
        "HcnQueryEndpointProperties",
        "HcnCloseEndpoint",
    ]
    assert dlls.calls.count("HcnCloseEndpoint") == 4
    settled(dlls)


def test_list_networks_with_none_found(hcn: ComputeNetwork, dlls: FakeDlls) -> None:
    assert hcn.list_networks({"SchemaVersion": {"Major": 2, "Minor": 0}, "Filter": '{"Name":"x"}'}) == []
    assert dlls.calls == ["HcnEnumerateNetworks"]
    settled(dlls)


def test_get_and_delete_endpoint(hcn: ComputeNetwork, dlls: FakeDlls) -> None:
    network = hcn.create_network(NETWORK)
    endpoint = hcn.create_endpoint(network["ID"], {"Name": "ep"})
    assert hcn.get_endpoint(endpoint["ID"].lower()) == endpoint
    hcn.delete_endpoint(endpoint["ID"])
    with pytest.raises(HcnError) as caught:
        hcn.delete_endpoint(endpoint["ID"])
    assert caught.value.not_found and caught.value.method == "HcnDeleteEndpoint"
    hcn.delete_network(network["ID"])
    assert dlls.objects["Network"] == {}
    settled(dlls)


def test_modify_namespace_opens_modifies_and_closes(hcn: ComputeNetwork, dlls: FakeDlls) -> None:
    namespace_id = str(uuid.uuid4()).upper()
    dlls.objects["Namespace"][namespace_id] = {"ID": namespace_id, "Type": "HostDefault"}
    request = {"ResourceType": "Endpoint", "RequestType": "Add", "Settings": {"EndpointId": "e1"}}
    hcn.modify_namespace(namespace_id, request)
    assert dlls.calls == ["HcnOpenNamespace", "HcnModifyNamespace", "HcnCloseNamespace"]
    assert hcn.get_namespace(namespace_id)["Resources"] == [{"Type": "Endpoint", "Data": {"ID": "e1"}}]
    dlls.failures["HcnModifyNamespace"] = (0x803B002E, "attach failed")  # HCN_E_NAMESPACE_ATTACH_FAILED
    with pytest.raises(HcnError, match="attach failed"):
        hcn.modify_namespace(namespace_id, request)
    assert dlls.calls[-1] == "HcnCloseNamespace"
    settled(dlls)


def test_a_failed_close_is_raised_when_nothing_else_failed(hcn: ComputeNetwork, dlls: FakeDlls) -> None:
    network = hcn.create_network(NETWORK)
    endpoint = hcn.create_endpoint(network["ID"], {"Name": "ep"})
    dlls.failures["HcnCloseEndpoint"] = (E_HANDLE, "")
    with pytest.raises(HcnError) as caught:
        hcn.get_endpoint(endpoint["ID"])
    assert (caught.value.method, caught.value.hresult) == ("HcnCloseEndpoint", E_HANDLE)
    dlls.failures["HcnQueryEndpointProperties"] = (0x80070005, "denied")
    with pytest.raises(HcnError) as caught:
        hcn.get_endpoint(endpoint["ID"])
    assert caught.value.method == "HcnQueryEndpointProperties"  # the first error, not the close's
    assert dlls.strings == {}


def test_an_unparseable_reply_is_an_hcn_error_and_is_still_freed(hcn: ComputeNetwork, dlls: FakeDlls) -> None:
    def garbage(query: str, out: Any, record: Any) -> int:
        dlls._give(out, "[not json")
        return 0

    dlls.HcnEnumerateNetworks = garbage  # type: ignore[method-assign]
    with pytest.raises(HcnError) as caught:
        ComputeNetwork(dlls.libraries()).list_networks({})
    assert (caught.value.method, caught.value.hresult) == ("HcnEnumerateNetworks", hcn_ctypes.E_UNEXPECTED)
    settled(dlls)


def test_a_bad_id_is_refused_before_any_call(hcn: ComputeNetwork, dlls: FakeDlls) -> None:
    with pytest.raises(HcnError) as caught:
        hcn.get_namespace("/var/run/netns/cni-1234")
    assert caught.value.hresult == E_INVALIDARG
    assert dlls.calls == []


# ---------------------------------------------------------------------------------------------
# The host adapter by MAC
# ---------------------------------------------------------------------------------------------

ETHERNET_2 = ("Ethernet 2", bytes.fromhex("0a1b2c3d4e5f"))


def test_adapter_by_mac_retries_with_the_size_asked_for(hcn: ComputeNetwork, dlls: FakeDlls) -> None:
    dlls.adapters = [("Ethernet", bytes.fromhex("000d3a000001")), ETHERNET_2, ("Loopback", b"")]
    dlls.adapter_bytes_needed = 20000
    assert hcn.adapter_by_mac("0a:1b:2c:3d:4e:5f") == "Ethernet 2"
    assert dlls.adapter_sizes == [15000, 20000]
    assert hcn.adapter_by_mac("0A-1B-2C-3D-4E-5F") == "Ethernet 2"
    assert hcn.adapter_by_mac("00:0d:3a:00:00:01") == "Ethernet"
    assert hcn.adapter_by_mac("00:0d:3a:00:00:02") is None


def test_adapter_by_mac_prefers_the_nic_to_its_hyper_v_vnic(hcn: ComputeNetwork, dlls: FakeDlls) -> None:
    dlls.adapters = [("vEthernet (Ethernet 2)", ETHERNET_2[1]), ETHERNET_2]
    assert hcn.adapter_by_mac("0a:1b:2c:3d:4e:5f") == "Ethernet 2"
    dlls.adapters = [("vEthernet (Ethernet 2)", ETHERNET_2[1])]
    assert hcn.adapter_by_mac("0a:1b:2c:3d:4e:5f") == "vEthernet (Ethernet 2)"


def test_adapter_by_mac_without_adapters_or_with_an_error(hcn: ComputeNetwork, dlls: FakeDlls) -> None:
    assert hcn.adapter_by_mac("0a:1b:2c:3d:4e:5f") is None  # ERROR_NO_DATA
    dlls.adapter_status = 87  # ERROR_INVALID_PARAMETER
    with pytest.raises(HcnError) as caught:
        hcn.adapter_by_mac("0a:1b:2c:3d:4e:5f")
    assert (caught.value.method, caught.value.hresult) == ("GetAdaptersAddresses", 0x80070057)
    dlls.adapter_status = hcn_ctypes.ERROR_BUFFER_OVERFLOW  # the list grows on every call
    with pytest.raises(HcnError, match="kept growing"):
        hcn.adapter_by_mac("0a:1b:2c:3d:4e:5f")
