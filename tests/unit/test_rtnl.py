"""``ipamd.datapath.linux.rtnl``: every message body decodes with pyroute2's own message classes to
the fields it was built from (hypothesis), bad names and addresses are refused before anything is
sent, and a reply is read as the kernel writes it (an ACK, an errno, another request's late reply,
a malformed length). The kernel's view of the same requests: tests/integration/test_rtnl.py."""

from __future__ import annotations

import ipaddress
import socket
import struct
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pyroute2.netlink.exceptions import NetlinkError
from pyroute2.netlink.rtnl.fibmsg import fibmsg
from pyroute2.netlink.rtnl.ifaddrmsg import ifaddrmsg
from pyroute2.netlink.rtnl.ifinfmsg import ifinfmsg
from pyroute2.netlink.rtnl.ndmsg import ndmsg
from pyroute2.netlink.rtnl.rtmsg import rtmsg

from ipamd.datapath.linux import rtnl

names = st.text(
    st.characters(min_codepoint=0x21, max_codepoint=0x7E, exclude_characters="/:"), min_size=1, max_size=15
)
macs = st.binary(min_size=6, max_size=6).map(lambda b: ":".join(f"{x:02x}" for x in b))
ips = st.integers(0, 2**32 - 1).map(lambda n: str(ipaddress.IPv4Address(n)))
indexes = st.integers(1, 2**31 - 1)
tables = st.integers(1, 2**32 - 1)


def decoded(cls: Any, kind: int, body: bytes) -> Any:
    message = cls(rtnl._HEADER.pack(rtnl._HEADER.size + len(body), kind, rtnl.CREATE, 1, 0) + body)
    message.decode()
    return message


@given(
    name=names, mac=macs, mtu=st.integers(68, 65535), peer=names, fd=st.integers(0, 2**31 - 1), peer_mac=macs
)
def test_veth_decodes_as_built(*, name: str, mac: str, mtu: int, peer: str, fd: int, peer_mac: str) -> None:
    body = rtnl.veth_body(name, mac, mtu, peer=peer, peer_netns_fd=fd, peer_address=peer_mac)
    m = decoded(ifinfmsg, rtnl.RTM_NEWLINK, body)
    assert (m["index"], m["flags"], m["change"]) == (0, rtnl.IFF_UP, rtnl.IFF_UP)
    assert (m.get_attr("IFLA_IFNAME"), m.get_attr("IFLA_ADDRESS"), m.get_attr("IFLA_MTU")) == (name, mac, mtu)
    info = m.get_attr("IFLA_LINKINFO")
    assert info.get_attr("IFLA_INFO_KIND") == "veth"
    p = info.get_attr("IFLA_INFO_DATA").get_attr("VETH_INFO_PEER")
    assert (p["flags"], p["change"]) == (0, 0)
    assert (p.get_attr("IFLA_IFNAME"), p.get_attr("IFLA_NET_NS_FD")) == (peer, fd)
    assert (p.get_attr("IFLA_ADDRESS"), p.get_attr("IFLA_MTU")) == (peer_mac, mtu)


@given(indexes, st.booleans())
def test_link_decodes_as_built(index: int, up: bool) -> None:
    m = decoded(ifinfmsg, rtnl.RTM_SETLINK, rtnl.link_body(index, up=up))
    assert (m["index"], m["flags"], m["change"]) == (index, int(up), int(up))


@given(indexes, ips, st.integers(0, 32))
def test_address_decodes_as_built(index: int, ip: str, prefixlen: int) -> None:
    m = decoded(ifaddrmsg, rtnl.RTM_NEWADDR, rtnl.address_body(index, ip, prefixlen))
    assert (m["family"], m["index"], m["prefixlen"], m["scope"]) == (2, index, prefixlen, 0)
    assert m.get_attr("IFA_LOCAL") == m.get_attr("IFA_ADDRESS") == ip


@given(
    dst=ips,
    dst_len=st.integers(0, 32),
    oif=indexes,
    scope=st.sampled_from([0, 253]),
    gateway=st.one_of(st.just(""), ips),
    table=tables,
)
def test_route_decodes_as_built(
    *, dst: str, dst_len: int, oif: int, scope: int, gateway: str, table: int
) -> None:
    body = rtnl.route_body(dst, dst_len, oif, scope=scope, gateway=gateway, table=table, proto=4)
    m = decoded(rtmsg, rtnl.RTM_NEWROUTE, body)
    assert (m["dst_len"], m["scope"], m["proto"], m["type"]) == (dst_len, scope, 4, 1)
    assert m["table"] == (table if table < 256 else 0)
    assert m.get_attr("RTA_TABLE") == table
    assert m.get_attr("RTA_OIF") == oif
    assert m.get_attr("RTA_DST") == (dst if dst_len else None)
    assert m.get_attr("RTA_GATEWAY") == (gateway or None)


@given(indexes, ips, macs, st.sampled_from([0x02, 0x80]))
def test_neighbour_decodes_as_built(index: int, ip: str, mac: str, nud: int) -> None:
    m = decoded(ndmsg, rtnl.RTM_NEWNEIGH, rtnl.neighbour_body(index, ip, mac, nud))
    assert (m["family"], m["ifindex"], m["state"]) == (2, index, nud)
    assert (m.get_attr("NDA_DST"), m.get_attr("NDA_LLADDR")) == (ip, mac)


@given(
    st.integers(0, 2**32 - 1),
    st.one_of(st.just(0), tables),
    st.one_of(st.just(""), ips),
    st.one_of(st.just(""), ips),
)
def test_rule_decodes_as_built(priority: int, table: int, src: str, dst: str) -> None:
    m = decoded(fibmsg, rtnl.RTM_NEWRULE, rtnl.rule_body(priority, table, src=src, dst=dst))
    assert (m["action"], m["src_len"], m["dst_len"]) == (
        rtnl.FR_ACT_TO_TBL,
        32 if src else 0,
        32 if dst else 0,
    )
    assert m["table"] == (table if table < 256 else 252)
    assert m.get_attr("FRA_TABLE") == (table or None)  # 0: no attribute, a delete matching any table
    assert m.get_attr("FRA_PRIORITY") == priority
    assert (m.get_attr("FRA_SRC"), m.get_attr("FRA_DST")) == (src or None, dst or None)


@pytest.mark.parametrize("name", ["", "a" * 16, "eth/0", "eth\0"])
def test_bad_interface_names_are_refused(name: str) -> None:
    with pytest.raises(ValueError, match="interface name"):
        rtnl.veth_body(
            name, "02:00:00:00:00:01", 1500, peer="eth0", peer_netns_fd=3, peer_address="02:00:00:00:00:02"
        )


@pytest.mark.parametrize("mac", ["02:00:00:00:00", "02:00:00:00:00:00:01", "zz:00:00:00:00:01"])
def test_bad_macs_are_refused(mac: str) -> None:
    with pytest.raises(ValueError):
        rtnl.neighbour_body(1, "169.254.1.1", mac, 0x80)


def test_bad_addresses_are_refused() -> None:
    with pytest.raises(ValueError):
        rtnl.address_body(1, "10.0.0.256", 32)
    with pytest.raises(ValueError):
        rtnl.rule_body(512, 254, dst="fd00::1")


# --- replies, from the other end of a datagram socketpair standing in for the kernel -------------


@pytest.fixture
def pair() -> Any:
    ours, kernel = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    rt = rtnl.Rtnl()
    rt._sock.close()
    rt._sock = ours
    yield rt, kernel
    rt.close()
    kernel.close()


def reply(seq: int, code: int, *, length: int | None = None, kind: int = rtnl.NLMSG_ERROR) -> bytes:
    body = struct.pack("=i", code) + b"\0" * 16  # errno, then (part of) the request's header
    size = rtnl._HEADER.size + len(body)
    return rtnl._HEADER.pack(size if length is None else length, kind, 0, seq, 0) + body


def answered(pair: Any, *replies: Any) -> None:
    rt, kernel = pair
    seq = rt._seq + 1
    for r in replies:
        kernel.send(r(seq))
    rt.set_up(3)
    sent = kernel.recv(4096)
    assert rtnl._HEADER.unpack_from(sent)[1:4] == (rtnl.RTM_SETLINK, rtnl.REQUEST, seq)


def test_an_ack_returns(pair: Any) -> None:
    answered(pair, lambda seq: reply(seq, 0))


def test_an_errno_is_a_netlink_error_with_its_code(pair: Any) -> None:
    with pytest.raises(NetlinkError) as caught:
        answered(pair, lambda seq: reply(seq, -17))
    assert caught.value.code == 17


def test_a_late_reply_to_another_request_is_skipped(pair: Any) -> None:
    answered(pair, lambda seq: reply(seq - 1, -2) + reply(seq, 0))


def test_a_malformed_length_is_an_error_not_a_hang(pair: Any) -> None:
    with pytest.raises(NetlinkError, match="malformed"):
        answered(pair, lambda seq: reply(seq, 0, length=4096))
    with pytest.raises(NetlinkError, match="malformed"):
        answered(pair, lambda seq: reply(seq, 0, length=8))


def test_a_truncated_error_message_is_an_error(pair: Any) -> None:
    with pytest.raises(NetlinkError, match="truncated"):
        answered(pair, lambda seq: rtnl._HEADER.pack(18, rtnl.NLMSG_ERROR, 0, seq, 0) + b"\0\0")


def test_a_kernel_that_never_answers_is_a_timeout_not_a_hang(pair: Any) -> None:
    with rtnl.Rtnl() as fresh:
        assert fresh._sock.gettimeout() == rtnl.TIMEOUT
    rt, kernel = pair
    rt._sock.settimeout(0.05)
    with pytest.raises(TimeoutError):
        rt.set_up(3)
    assert kernel.recv(4096)  # the request went out
