"""shim.pb against the generated classes: the same bytes out, the same fields in, the same rejections."""

from __future__ import annotations

from typing import Any

import pytest
from google.protobuf.message import DecodeError
from hypothesis import given, settings
from hypothesis import strategies as st

from ipamd.rpc.pb import ipamd_pb2 as gen
from shim import pb
from shim.cni import Invocation

INT32 = st.integers(-(2**31), 2**31 - 1)
# Any Unicode that UTF-8 can carry (no lone surrogates), empty included; some long enough for a
# two-byte length prefix.
TEXT = st.one_of(st.text(max_size=20), st.text(min_size=120, max_size=300))


def _call(**fields: Any) -> Invocation:
    return Invocation("ADD", **fields)


calls = st.builds(
    _call,
    container_id=TEXT,
    ifname=TEXT,
    netns=TEXT,
    network_name=TEXT,
    pod_namespace=TEXT,
    pod_name=TEXT,
    pod_uid=TEXT,
    pod_infra_container_id=TEXT,
    cni_version=TEXT,
    prev_result_json=TEXT,
    valid_attachments=st.lists(st.tuples(TEXT, TEXT), max_size=4),
    dns=st.one_of(
        st.none(),
        st.fixed_dictionaries(
            {key: st.lists(TEXT, max_size=3) for key in ("servers", "searches", "options")}
        ),
    ),
)


def _attachment(call: Invocation) -> gen.Attachment:
    return gen.Attachment(
        container_id=call.container_id,
        ifname=call.ifname,
        netns=call.netns,
        network_name=call.network_name,
        pod=gen.PodInfo(
            namespace=call.pod_namespace,
            name=call.pod_name,
            uid=call.pod_uid,
            infra_container_id=call.pod_infra_container_id,
        ),
    )


def _same(ours: bytes, theirs: Any) -> None:
    assert ours == theirs.SerializeToString(deterministic=True)
    assert type(theirs).FromString(ours) == theirs


# ---- encoding --------------------------------------------------------------------------------


@settings(max_examples=300)
@given(call=calls)
def test_add_request_bytes_equal_generated(call: Invocation) -> None:
    _same(
        pb.encode_add_request(call),
        gen.AddRequest(
            attachment=_attachment(call),
            cni_version=call.cni_version,
            dns=None if call.dns is None else gen.Dns(**call.dns),
        ),
    )


@settings(max_examples=200)
@given(call=calls, reason=TEXT)
def test_del_request_bytes_equal_generated(call: Invocation, reason: str) -> None:
    expected = gen.DelRequest(attachment=_attachment(call), prev_result=call.prev_result_json, reason=reason)
    _same(pb.encode_del_request(call, reason=reason), expected)


@settings(max_examples=200)
@given(call=calls)
def test_check_request_bytes_equal_generated(call: Invocation) -> None:
    expected = gen.CheckRequest(attachment=_attachment(call), prev_result=call.prev_result_json)
    _same(pb.encode_check_request(call), expected)


@settings(max_examples=200)
@given(call=calls)
def test_gc_request_bytes_equal_generated(call: Invocation) -> None:
    refs = [gen.AttachmentRef(container_id=c, ifname=i) for c, i in call.valid_attachments or ()]
    _same(pb.encode_gc_request(call), gen.GcRequest(network_name=call.network_name, valid_attachments=refs))


@settings(max_examples=100)
@given(call=calls)
def test_status_request_bytes_equal_generated(call: Invocation) -> None:
    _same(pb.encode_status_request(call), gen.StatusRequest(network_name=call.network_name))


def test_empty_call_still_carries_the_attachment_and_pod() -> None:
    call = _call(cni_version="")
    assert pb.encode_add_request(call) == b"\x0a\x02\x2a\x00"
    _same(pb.encode_add_request(call), gen.AddRequest(attachment=gen.Attachment(pod=gen.PodInfo())))


def test_dns_is_sent_when_the_runtime_sent_it_even_empty() -> None:
    empty: dict[str, list[str]] = {"servers": [], "searches": [], "options": []}
    request = gen.AddRequest.FromString(pb.encode_add_request(_call(dns=empty)))
    assert request.HasField("dns")
    assert not gen.AddRequest.FromString(pb.encode_add_request(_call())).HasField("dns")
    dns = {"servers": ["10.96.0.10"], "searches": ["svc.cluster.local"], "options": ["ndots:5"]}
    request = gen.AddRequest.FromString(pb.encode_add_request(_call(dns=dns)))
    assert {key: list(getattr(request.dns, key)) for key in dns} == dns


def test_gc_without_valid_attachments_encodes_an_empty_list() -> None:
    call = Invocation("GC", network_name="net", valid_attachments=None)
    assert pb.encode_gc_request(call) == gen.GcRequest(network_name="net").SerializeToString()
    refs = [("c1", "eth0"), ("", "")]
    expected = gen.GcRequest(
        valid_attachments=[gen.AttachmentRef(container_id="c1", ifname="eth0"), gen.AttachmentRef()]
    )
    assert pb.encode_gc("", refs) == expected.SerializeToString()


def test_lone_surrogate_cannot_be_encoded() -> None:
    with pytest.raises(ValueError):
        pb.encode_add_request(_call(container_id="\udcff"))


# ---- decoding --------------------------------------------------------------------------------

routes = st.lists(st.builds(gen.Route, dst=TEXT, gw=TEXT), max_size=4)
add_replies = st.builds(
    gen.AddReply,
    ip=TEXT,
    prefix_length=INT32,
    gateway=TEXT,
    host_ifname=TEXT,
    host_mac=TEXT,
    sandbox_mac=TEXT,
    mtu=INT32,
    routes=routes,
    interface_id=TEXT,
    device_index=INT32,
)
status_replies = st.builds(
    gen.StatusReply, ready=st.booleans(), available=INT32, assigned=INT32, total=INT32, message=TEXT
)
gc_replies = st.builds(gen.GcReply, released=INT32)


def _fields(msg: Any) -> dict[str, Any]:
    """Every field of a generated message, defaults included, sub-messages as dicts."""
    out: dict[str, Any] = {}
    for field in msg.DESCRIPTOR.fields:
        value = getattr(msg, field.name)
        if field.message_type is not None:
            value = [_fields(v) for v in value]
        out[field.name] = value
    return out


DECODERS = {
    "AddReply": pb.decode_add_reply,
    "DelReply": pb.decode_del_reply,
    "CheckReply": pb.decode_check_reply,
    "GcReply": pb.decode_gc_reply,
    "StatusReply": pb.decode_status_reply,
}


def _decode(name: str, data: bytes) -> dict[str, Any]:
    return dict(DECODERS[name](data))


@settings(max_examples=300)
@given(reply=add_replies)
def test_add_reply_decodes_to_its_fields(reply: gen.AddReply) -> None:
    assert _decode("AddReply", reply.SerializeToString()) == _fields(reply)


@settings(max_examples=200)
@given(reply=status_replies)
def test_status_reply_decodes_to_its_fields(reply: gen.StatusReply) -> None:
    assert _decode("StatusReply", reply.SerializeToString()) == _fields(reply)


@settings(max_examples=100)
@given(reply=gc_replies)
def test_gc_reply_decodes_to_its_fields(reply: gen.GcReply) -> None:
    assert _decode("GcReply", reply.SerializeToString()) == _fields(reply)


def test_empty_replies_decode_to_defaults() -> None:
    assert _decode("DelReply", b"") == {}
    assert _decode("CheckReply", b"") == {}
    assert _decode("GcReply", b"") == {"released": 0}
    assert _decode("StatusReply", b"") == {
        "ready": False,
        "available": 0,
        "assigned": 0,
        "total": 0,
        "message": "",
    }
    assert pb.decode_add_reply(b"")["routes"] == []


def _key(number: int, wire_type: int) -> bytes:
    out = bytearray()
    pb._varint(out, number << 3 | wire_type)
    return bytes(out)


def _unknown_field(number: int, wire_type: int, payload: bytes) -> bytes:
    key = _key(number, wire_type)
    if wire_type == pb.VARINT:
        return key + b"\x96\x01"
    if wire_type == pb.FIXED64:
        return key + payload.ljust(8, b"\0")[:8]
    if wire_type == pb.FIXED32:
        return key + payload.ljust(4, b"\0")[:4]
    if wire_type == pb.LEN:
        return key + bytes([len(payload)]) + payload
    # a group holding one varint field and one nested group
    inner = _key(1, pb.VARINT) + b"\x01" + _key(7, pb.START_GROUP) + _key(7, pb.END_GROUP)
    return key + inner + _key(number, pb.END_GROUP)


unknown_fields = st.lists(
    st.builds(
        _unknown_field,
        # numbers the replies do not use, and known numbers sent with a wire type they do not have
        st.one_of(st.integers(11, 2**29 - 1), st.integers(1, 10)),
        st.sampled_from([pb.VARINT, pb.FIXED64, pb.LEN, pb.START_GROUP, pb.FIXED32]),
        st.binary(max_size=20),
    ),
    max_size=5,
)


@settings(max_examples=400)
@given(reply=add_replies, unknown=unknown_fields, split=st.integers(0, 5))
def test_unknown_fields_are_skipped_as_the_generated_parser_skips_them(
    reply: gen.AddReply, unknown: list[bytes], split: int
) -> None:
    data = b"".join(unknown[:split]) + reply.SerializeToString() + b"".join(unknown[split:])
    _agree("AddReply", data)


@settings(max_examples=200)
@given(reply=status_replies, unknown=unknown_fields)
def test_unknown_fields_in_status_reply(reply: gen.StatusReply, unknown: list[bytes]) -> None:
    _agree("StatusReply", b"".join(unknown) + reply.SerializeToString())


def _agree(name: str, data: bytes) -> None:
    """Ours decodes exactly when the generated parser does, to the same fields.

    One known difference: for a message with no fields (DelReply, CheckReply) upb keeps a field
    numbered 0 as an unknown field, while it rejects one in any other message; field number 0 is
    invalid in the protobuf encoding, and shim.pb always rejects it.
    """
    try:
        expected = _fields(getattr(gen, name).FromString(data))
    except DecodeError:
        with pytest.raises(ValueError):
            _decode(name, data)
        return
    try:
        ours = _decode(name, data)
    except ValueError as exc:
        assert not expected and "invalid field number 0" in str(exc), exc
        return
    assert ours == expected


def test_field_number_zero_is_rejected_even_where_upb_keeps_it() -> None:
    assert gen.CheckReply.FromString(b"\x00\x00").ListFields() == []  # upb keeps it as an unknown field
    with pytest.raises(ValueError, match="field number 0"):
        pb.decode_check_reply(b"\x00\x00")


@settings(max_examples=500)
@given(name=st.sampled_from(sorted(DECODERS)), data=st.binary(max_size=40))
def test_random_bytes_decode_as_the_generated_parser_decodes_them(name: str, data: bytes) -> None:
    _agree(name, data)


@settings(max_examples=300)
@given(reply=add_replies, data=st.data())
def test_mutated_replies_decode_as_the_generated_parser_decodes_them(
    reply: gen.AddReply, data: st.DataObject
) -> None:
    raw = bytearray(reply.SerializeToString())
    for _ in range(data.draw(st.integers(1, 3))):
        if not raw:
            break
        i = data.draw(st.integers(0, len(raw) - 1))
        raw[i] = data.draw(st.integers(0, 255))
    _agree("AddReply", bytes(raw))


def test_every_truncation_agrees_and_cuts_mid_field_raise() -> None:
    reply = gen.AddReply(
        ip="10.0.1.7",
        prefix_length=32,
        gateway="169.254.1.1",
        host_ifname="cni1234",
        mtu=9001,
        routes=[gen.Route(dst="0.0.0.0/0", gw="169.254.1.1")],
        device_index=-1,
    )
    data = reply.SerializeToString()
    raised = 0
    for cut in range(len(data)):
        _agree("AddReply", data[:cut])
        try:
            pb.decode_add_reply(data[:cut])
        except ValueError:
            raised += 1
    assert raised > len(data) // 2


@pytest.mark.parametrize(
    ("data", "needle"),
    [
        (b"\x0a\x05abc", "past the end"),  # string longer than what is left
        (b"\x10", "truncated varint"),  # int32 with no value
        (b"\x10\xff\xff", "truncated varint"),
        (b"\x10" + b"\xff" * 10 + b"\x01", "longer than 10 bytes"),
        (b"\x00\x01", "field number 0"),
        (b"\x0e", "wire type 6"),
        (b"\x0f", "wire type 7"),
        (b"\x5c", "wire type 4"),  # end of a group never started
        (b"\x5b\x08\x01", "truncated"),  # group never closed
        (b"\x5b\x64", "closed by end of group 12"),
        (b"\x59\x00\x00", "past the end"),  # fixed64 cut short
        (b"\x5d\x00", "past the end"),  # fixed32 cut short
        (b"\x0a\x01\xff", "not valid UTF-8"),
        (b"\x42\x03\x0a\x05a", "past the end"),  # a route whose dst overruns the route
        (b"\x42\x02\x0a\x01\xc3", "past the end"),
        (b"\xff\xff\xff\xff\x7f\x00", "invalid field number"),  # tag beyond 32 bits
    ],
    ids=[
        "string-overrun",
        "varint-missing",
        "varint-cut",
        "varint-11-bytes",
        "field-0",
        "wire-type-6",
        "wire-type-7",
        "stray-end-group",
        "open-group",
        "mismatched-group",
        "fixed64-cut",
        "fixed32-cut",
        "bad-utf8",
        "route-overrun",
        "route-cut",
        "tag-too-big",
    ],
)
def test_malformed_replies_raise_value_error(data: bytes, needle: str) -> None:
    with pytest.raises(ValueError, match=needle):
        pb.decode_add_reply(data)
    with pytest.raises(DecodeError):
        gen.AddReply.FromString(data)


def test_scalars_last_wins_routes_append_and_int32_wraps() -> None:
    data = (
        b"\x0a\x01a\x0a\x01b"  # ip twice: the last wins
        + b"\x10"
        + b"\xff" * 9
        + b"\x01"  # prefix_length = -1 as a 10-byte varint
        + b"\x38\x80\x80\x80\x80\x10"  # mtu = 2**32: truncated to int32 -> 0
        + b"\x42\x00\x42\x03\x0a\x01x"  # two routes
    )
    reply = pb.decode_add_reply(data)
    assert (reply["ip"], reply["prefix_length"], reply["mtu"]) == ("b", -1, 0)
    assert reply["routes"] == [{"dst": "", "gw": ""}, {"dst": "x", "gw": ""}]
    _agree("AddReply", data)
    assert pb.decode_status_reply(b"\x08\x80\x80\x80\x80\x80\x01")["ready"] is True  # any non-zero varint
