"""proto/ipamd.proto by hand: the shim's requests encoded, the daemon's replies decoded.

The protobuf runtime and a generated module cost ~60 ms per exec (typing, re, threading); the
messages are flat, so a few functions do. Encoding is byte-for-byte what the generated classes'
``SerializeToString()`` gives (fields in number order, proto3 defaults left out, sub-messages always
present); a test holds the two equal on random messages.

Decoding follows the proto3 wire rules the daemon's runtime (upb) follows: the last value of a
scalar wins, repeated messages append, strings must be valid UTF-8, a known field number arriving
with another wire type is skipped as unknown, and unknown fields of every wire type (groups too)
are skipped. Truncated or malformed input raises ``ValueError``.

Requests take the parsed CNI call (``shim.cni.Invocation`` or anything with the same attributes);
replies come back as plain dicts whose keys are the proto field names.
"""

from __future__ import annotations

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (~10 ms); mypy knows the name

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence
    from typing import Protocol, TypedDict

    class Call(Protocol):
        """What a request is built from: the CNI call as ``shim.cni.parse`` returns it."""

        @property
        def container_id(self) -> str: ...
        @property
        def ifname(self) -> str: ...
        @property
        def netns(self) -> str: ...
        @property
        def network_name(self) -> str: ...
        @property
        def pod_namespace(self) -> str: ...
        @property
        def pod_name(self) -> str: ...
        @property
        def pod_uid(self) -> str: ...
        @property
        def pod_infra_container_id(self) -> str: ...
        @property
        def cni_version(self) -> str: ...
        @property
        def prev_result_json(self) -> str: ...
        @property
        def valid_attachments(self) -> list[tuple[str, str]] | None: ...
        @property
        def dns(self) -> Mapping[str, Sequence[str]] | None: ...

    class Route(TypedDict):
        dst: str
        gw: str

    class AddReply(TypedDict):
        ip: str
        prefix_length: int
        gateway: str
        host_ifname: str
        host_mac: str
        sandbox_mac: str
        mtu: int
        routes: list[Route]
        interface_id: str
        device_index: int

    class DelReply(TypedDict):
        pass

    class CheckReply(TypedDict):
        pass

    class GcReply(TypedDict):
        released: int

    class StatusReply(TypedDict):
        ready: bool
        available: int
        assigned: int
        total: int
        message: str


# Wire types.
VARINT, FIXED64, LEN, START_GROUP, END_GROUP, FIXED32 = 0, 1, 2, 3, 4, 5
_MAX_DEPTH = 100  # nesting of groups and messages, as upb's default decode depth limit
_U64 = (1 << 64) - 1


# ---- encoding ---------------------------------------------------------------------------------


def _varint(out: bytearray, value: int) -> None:
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)


def _len_field(out: bytearray, number: int, payload: bytes | bytearray) -> None:
    _varint(out, number << 3 | LEN)
    _varint(out, len(payload))
    out += payload


def _string(out: bytearray, number: int, value: str) -> None:
    """A proto3 string field; the default (empty) is left out. Lone surrogates raise ValueError."""
    if value:
        _len_field(out, number, value.encode("utf-8"))


def _attachment(call: Call) -> bytearray:
    pod = bytearray()
    _string(pod, 1, call.pod_namespace)
    _string(pod, 2, call.pod_name)
    _string(pod, 3, call.pod_uid)
    _string(pod, 4, call.pod_infra_container_id)
    out = bytearray()
    _string(out, 1, call.container_id)
    _string(out, 2, call.ifname)
    _string(out, 3, call.netns)
    _string(out, 4, call.network_name)
    _len_field(out, 5, pod)
    return out


def encode_add_request(call: Call) -> bytes:
    out = bytearray()
    _len_field(out, 1, _attachment(call))
    _string(out, 2, call.cni_version)
    if call.dns is not None:  # present, even empty, when the runtime sent runtimeConfig.dns
        dns = bytearray()
        for number, key in ((1, "servers"), (2, "searches"), (3, "options")):
            for value in call.dns.get(key, ()):
                _len_field(dns, number, value.encode("utf-8"))  # repeated: empty strings are kept
        _len_field(out, 3, dns)
    return bytes(out)


def encode_del_request(call: Call, reason: str = "cni-del") -> bytes:
    out = bytearray()
    _len_field(out, 1, _attachment(call))
    _string(out, 2, call.prev_result_json)
    _string(out, 3, reason)
    return bytes(out)


def encode_check_request(call: Call) -> bytes:
    out = bytearray()
    _len_field(out, 1, _attachment(call))
    _string(out, 2, call.prev_result_json)
    return bytes(out)


def encode_gc_request(call: Call) -> bytes:
    """GcRequest; ``valid_attachments`` None (the caller should not send one then) encodes as []."""
    return encode_gc(call.network_name, call.valid_attachments or ())


def encode_gc(network_name: str, valid_attachments: Sequence[tuple[str, str]]) -> bytes:
    out = bytearray()
    _string(out, 1, network_name)
    for container_id, ifname in valid_attachments:
        ref = bytearray()
        _string(ref, 1, container_id)
        _string(ref, 2, ifname)
        _len_field(out, 2, ref)
    return bytes(out)


def encode_status_request(call: Call) -> bytes:
    out = bytearray()
    _string(out, 1, call.network_name)
    return bytes(out)


# ---- decoding ---------------------------------------------------------------------------------

# A schema maps a field number to (name, kind); kind is "string", "int32", "bool", or a nested schema
# for a repeated message field. Defaults come from _DEFAULTS.
_Schema = dict[int, tuple[str, object]]

_ROUTE: _Schema = {1: ("dst", "string"), 2: ("gw", "string")}
_ADD_REPLY: _Schema = {
    1: ("ip", "string"),
    2: ("prefix_length", "int32"),
    3: ("gateway", "string"),
    4: ("host_ifname", "string"),
    5: ("host_mac", "string"),
    6: ("sandbox_mac", "string"),
    7: ("mtu", "int32"),
    8: ("routes", _ROUTE),
    9: ("interface_id", "string"),
    10: ("device_index", "int32"),
}
_EMPTY: _Schema = {}
_GC_REPLY: _Schema = {1: ("released", "int32")}
_STATUS_REPLY: _Schema = {
    1: ("ready", "bool"),
    2: ("available", "int32"),
    3: ("assigned", "int32"),
    4: ("total", "int32"),
    5: ("message", "string"),
}
_DEFAULTS: dict[str, object] = {"string": "", "int32": 0, "bool": False}


def _read_varint(data: bytes, pos: int, end: int) -> tuple[int, int]:
    result = 0
    shift = 0
    while True:
        if pos >= end:
            raise ValueError(f"protobuf: truncated varint at byte {pos}")
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result & _U64, pos
        shift += 7
        if shift >= 70:
            raise ValueError(f"protobuf: varint longer than 10 bytes at byte {pos - 10}")


def _read_tag(data: bytes, pos: int, end: int) -> tuple[int, int, int]:
    start = pos
    tag, pos = _read_varint(data, pos, end)
    number, wire_type = tag >> 3, tag & 7
    if tag > 0xFFFFFFFF or number == 0:
        raise ValueError(f"protobuf: invalid field number {number} at byte {start}")
    return number, wire_type, pos


def _skip(data: bytes, pos: int, end: int, number: int, wire_type: int, *, depth: int) -> int:
    """Skip one field's value (its tag already read); returns the position after it."""
    if wire_type == VARINT:
        return _read_varint(data, pos, end)[1]
    if wire_type == FIXED64:
        pos += 8
    elif wire_type == FIXED32:
        pos += 4
    elif wire_type == LEN:
        size, pos = _read_varint(data, pos, end)
        pos += size
    elif wire_type == START_GROUP:
        if depth >= _MAX_DEPTH:
            raise ValueError("protobuf: groups nested too deeply")
        while True:
            inner, inner_type, pos = _read_tag(data, pos, end)
            if inner_type == END_GROUP:
                if inner != number:
                    raise ValueError(f"protobuf: group {number} closed by end of group {inner}")
                return pos
            pos = _skip(data, pos, end, inner, inner_type, depth=depth + 1)
    else:  # END_GROUP without a start, or the invalid wire types 6 and 7
        raise ValueError(f"protobuf: unexpected wire type {wire_type} for field {number}")
    if pos > end:
        raise ValueError(f"protobuf: field {number} runs past the end of its message")
    return pos


def _decode(data: bytes, pos: int, end: int, schema: _Schema, depth: int) -> dict[str, object]:
    if depth > _MAX_DEPTH:
        raise ValueError("protobuf: messages nested too deeply")
    out: dict[str, object] = {}
    for name, kind in schema.values():
        out[name] = _DEFAULTS[kind] if isinstance(kind, str) else []
    while pos < end:
        number, wire_type, pos = _read_tag(data, pos, end)
        field = schema.get(number)
        if field is not None:
            name, kind = field
            if kind in ("int32", "bool"):
                if wire_type == VARINT:
                    value, pos = _read_varint(data, pos, end)
                    if kind == "bool":
                        out[name] = value != 0
                    else:
                        value &= 0xFFFFFFFF
                        out[name] = value - (1 << 32) if value >= 1 << 31 else value
                    continue
            elif wire_type == LEN:
                size, pos = _read_varint(data, pos, end)
                stop = pos + size
                if stop > end:
                    raise ValueError(f"protobuf: field {number} runs past the end of its message")
                if isinstance(kind, dict):
                    routes = out[name]
                    assert isinstance(routes, list)
                    routes.append(_decode(data, pos, stop, kind, depth + 1))
                else:
                    try:
                        out[name] = data[pos:stop].decode("utf-8")
                    except UnicodeDecodeError:
                        raise ValueError(f"protobuf: field {number} is not valid UTF-8") from None
                pos = stop
                continue
            # a known number with another wire type: skipped as an unknown field, as upb does
        pos = _skip(data, pos, end, number, wire_type, depth=depth)
    return out


def _decode_message(data: bytes, schema: _Schema) -> dict[str, object]:
    data = bytes(data)
    return _decode(data, 0, len(data), schema, 0)


def decode_add_reply(data: bytes) -> AddReply:
    """AddReply: ip, prefix_length, gateway, host_ifname, host_mac, sandbox_mac, mtu,
    routes ([{dst, gw}]), interface_id, device_index."""
    return _decode_message(data, _ADD_REPLY)  # type: ignore[return-value]


def decode_del_reply(data: bytes) -> DelReply:
    return _decode_message(data, _EMPTY)  # type: ignore[return-value]


def decode_check_reply(data: bytes) -> CheckReply:
    return _decode_message(data, _EMPTY)  # type: ignore[return-value]


def decode_gc_reply(data: bytes) -> GcReply:
    """GcReply: released."""
    return _decode_message(data, _GC_REPLY)  # type: ignore[return-value]


def decode_status_reply(data: bytes) -> StatusReply:
    """StatusReply: ready, available, assigned, total, message."""
    return _decode_message(data, _STATUS_REPLY)  # type: ignore[return-value]
