"""The rtnetlink requests of the per-pod path (wire on ADD, detach on DEL), encoded by hand.

pyroute2 spends 0.2-0.3 ms of Python per request building, encoding and routing a message through
its asyncio core; a pod's ADD makes eleven, which was most of the daemon's CPU per pod start in a
burst (docs/datapath.md, "CPU per pod"). These requests have a fixed shape (a header, a few
attributes, one ACK to read), so they are packed here with ``struct`` in a few microseconds and sent
on a plain NETLINK_ROUTE socket. Everything else (dumps, checks, the node's interfaces, start-up)
stays on pyroute2; ``tests/integration/test_rtnl.py`` makes every request here and the same one
through pyroute2 in two namespaces and compares what the kernel then holds.

Errors are pyroute2's ``NetlinkError`` with the kernel's errno, so callers handle both alike.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import struct

from pyroute2.netlink.exceptions import NetlinkError

NETLINK_ROUTE = 0
NLMSG_ERROR = 2
NLM_F_REQUEST = 0x1
NLM_F_ACK = 0x4
NLM_F_EXCL = 0x200
NLM_F_CREATE = 0x400
CREATE = NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL
REQUEST = NLM_F_REQUEST | NLM_F_ACK

RTM_NEWLINK, RTM_DELLINK, RTM_SETLINK = 16, 17, 19
RTM_NEWADDR = 20
RTM_NEWROUTE, RTM_DELROUTE = 24, 25
RTM_NEWNEIGH = 28
RTM_NEWRULE, RTM_DELRULE = 32, 33

IFF_UP = 0x1
IFLA_ADDRESS, IFLA_IFNAME, IFLA_MTU, IFLA_LINKINFO, IFLA_NET_NS_FD = 1, 3, 4, 18, 28
IFLA_INFO_KIND, IFLA_INFO_DATA = 1, 2
VETH_INFO_PEER = 1
IFA_ADDRESS, IFA_LOCAL = 1, 2
RTA_DST, RTA_OIF, RTA_GATEWAY, RTA_TABLE = 1, 4, 5, 15
NDA_DST, NDA_LLADDR = 1, 2
FRA_DST, FRA_SRC, FRA_PRIORITY, FRA_TABLE = 1, 2, 6, 15

AF_UNSPEC, AF_INET = 0, 2
RTPROT_STATIC = 4  # what pyroute2 gives a route nobody named a protocol for (`ip route add`: boot)
RTN_UNICAST = 1
RT_SCOPE_UNIVERSE = 0
RT_TABLE_UNSPEC = 0
RT_TABLE_COMPAT = 252
MAIN = 254
FR_ACT_TO_TBL = 1
IFNAMSIZ = 16
TIMEOUT = 30.0  # seconds for one request's ACK (TimeoutError, an OSError: the caller drops the socket)

_HEADER = struct.Struct("=IHHII")  # nlmsghdr: length, type, flags, sequence, port
_ATTR = struct.Struct("=HH")  # rtattr: length, type
_IFINFO = struct.Struct("=BxHiII")  # ifinfomsg: family, type, index, flags, change
_IFADDR = struct.Struct("=BBBBI")  # ifaddrmsg: family, prefixlen, flags, scope, index
# rtmsg: family, dst_len, src_len, tos, table, protocol, scope, type, flags
_RTMSG = struct.Struct("=BBBBBBBBI")
_NDMSG = struct.Struct("=BxxxiHBB")  # ndmsg: family, ifindex, state, flags, type
# fib_rule_hdr: family, dst_len, src_len, tos, table, res1, res2, action, flags
_RULE = struct.Struct("=BBBBBBBBI")
_U32 = struct.Struct("=I")
_ERRNO = struct.Struct("=i")


def attr(kind: int, payload: bytes) -> bytes:
    """One rtattr, padded to 4 bytes."""
    size = _ATTR.size + len(payload)
    return _ATTR.pack(size, kind) + payload + b"\0" * (-size % 4)


def u32(kind: int, value: int) -> bytes:
    return attr(kind, _U32.pack(value))


def ifname(kind: int, name: str) -> bytes:
    raw = name.encode()
    if not raw or len(raw) >= IFNAMSIZ or b"\0" in raw or b"/" in raw:
        raise ValueError(f"interface name {name!r}: 1-15 bytes, no '/' or NUL")
    return attr(kind, raw + b"\0")


def ipv4(value: str) -> bytes:
    return ipaddress.IPv4Address(value).packed


def mac(value: str) -> bytes:
    octets = bytes.fromhex(value.replace(":", ""))
    if len(octets) != 6:
        raise ValueError(f"MAC {value!r}: six octets")
    return octets


class Rtnl:
    """A NETLINK_ROUTE socket bound in the netns of the thread that opened it (it stays bound there
    whatever the thread does next). One request at a time, each answered by its ACK."""

    def __init__(self) -> None:
        self._sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, NETLINK_ROUTE)
        try:
            self._sock.bind((0, 0))  # the kernel picks the port; no multicast groups
        except BaseException:
            self._sock.close()
            raise
        self._sock.settimeout(TIMEOUT)  # the kernel always answers; a socket that stops is dropped
        self._seq = int.from_bytes(os.urandom(3), "little")

    def close(self) -> None:
        self._sock.close()

    def __enter__(self) -> Rtnl:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def request(self, kind: int, flags: int, body: bytes) -> None:
        """Send one request; return on its ACK, raise NetlinkError(errno) on its error."""
        self._seq = (self._seq + 1) & 0xFFFFFFFF
        seq = self._seq
        self._sock.send(_HEADER.pack(_HEADER.size + len(body), kind, flags, seq, 0) + body)
        while True:
            data = self._sock.recv(65536)
            offset = 0
            while offset + _HEADER.size <= len(data):
                length, mtype, _flags, mseq, _port = _HEADER.unpack_from(data, offset)
                if length < _HEADER.size or offset + length > len(data):
                    raise NetlinkError(0, f"malformed netlink reply (length {length})")
                if mseq == seq and mtype == NLMSG_ERROR:
                    if length < _HEADER.size + _ERRNO.size:
                        raise NetlinkError(0, "truncated netlink error message")
                    (code,) = _ERRNO.unpack_from(data, offset + _HEADER.size)
                    if code:
                        raise NetlinkError(-code, os.strerror(-code))
                    return
                offset += (length + 3) & ~3  # anything else (an older request's late reply) is skipped

    # --- requests ---------------------------------------------------------------------------------

    def add_veth(
        self, name: str, address: str, mtu: int, *, peer: str, peer_netns_fd: int, peer_address: str
    ) -> None:
        """A veth pair, this end up; the peer (down, same MTU) created in the netns of ``peer_netns_fd``."""
        body = veth_body(
            name, address, mtu, peer=peer, peer_netns_fd=peer_netns_fd, peer_address=peer_address
        )
        self.request(RTM_NEWLINK, CREATE, body)

    def set_up(self, index: int) -> None:
        self.request(RTM_SETLINK, REQUEST, link_body(index, up=True))

    def delete_link(self, index: int) -> None:
        self.request(RTM_DELLINK, REQUEST, link_body(index, up=False))

    def add_address(self, index: int, address: str, prefixlen: int) -> None:
        self.request(RTM_NEWADDR, CREATE, address_body(index, address, prefixlen))

    def add_route(
        self, dst: str, dst_len: int, oif: int, *, scope: int, gateway: str = "", table: int = MAIN
    ) -> None:
        body = route_body(dst, dst_len, oif, scope=scope, gateway=gateway, table=table, proto=RTPROT_STATIC)
        self.request(RTM_NEWROUTE, CREATE, body)

    def delete_route(self, dst: str, dst_len: int, oif: int, *, scope: int, table: int = MAIN) -> None:
        body = route_body(dst, dst_len, oif, scope=scope, gateway="", table=table, proto=0)
        self.request(RTM_DELROUTE, REQUEST, body)

    def add_neighbour(self, index: int, address: str, lladdr: str, state: int) -> None:
        self.request(RTM_NEWNEIGH, CREATE, neighbour_body(index, address, lladdr, state))

    def add_rule(self, priority: int, table: int, *, src: str = "", dst: str = "") -> None:
        self.request(RTM_NEWRULE, CREATE, rule_body(priority, table, src=src, dst=dst))

    def delete_rule(self, priority: int, table: int, *, src: str = "", dst: str = "") -> None:
        """Delete one rule matching these fields; ``table`` 0 matches any table."""
        self.request(RTM_DELRULE, REQUEST, rule_body(priority, table, src=src, dst=dst))


# --- message bodies (after the nlmsghdr) ----------------------------------------------------------


def veth_body(
    name: str, address: str, mtu: int, *, peer: str, peer_netns_fd: int, peer_address: str
) -> bytes:
    peer_info = (
        _IFINFO.pack(AF_UNSPEC, 0, 0, 0, 0)
        + ifname(IFLA_IFNAME, peer)
        + u32(IFLA_NET_NS_FD, peer_netns_fd)
        + attr(IFLA_ADDRESS, mac(peer_address))
        + u32(IFLA_MTU, mtu)
    )
    linkinfo = attr(IFLA_INFO_KIND, b"veth\0") + attr(IFLA_INFO_DATA, attr(VETH_INFO_PEER, peer_info))
    return (
        _IFINFO.pack(AF_UNSPEC, 0, 0, IFF_UP, IFF_UP)
        + ifname(IFLA_IFNAME, name)
        + attr(IFLA_ADDRESS, mac(address))
        + u32(IFLA_MTU, mtu)
        + attr(IFLA_LINKINFO, linkinfo)
    )


def link_body(index: int, *, up: bool) -> bytes:
    """An ifinfomsg naming a link by index; ``up`` sets IFF_UP (a SETLINK), else changes nothing."""
    return _IFINFO.pack(AF_UNSPEC, 0, index, IFF_UP if up else 0, IFF_UP if up else 0)


def address_body(index: int, address: str, prefixlen: int) -> bytes:
    packed = ipv4(address)
    header = _IFADDR.pack(AF_INET, prefixlen, 0, RT_SCOPE_UNIVERSE, index)
    return header + attr(IFA_LOCAL, packed) + attr(IFA_ADDRESS, packed)


def route_body(
    dst: str, dst_len: int, oif: int, *, scope: int, gateway: str, table: int, proto: int
) -> bytes:
    header = _RTMSG.pack(
        AF_INET, dst_len, 0, 0, table if table < 256 else RT_TABLE_UNSPEC, proto, scope, RTN_UNICAST, 0
    )
    attrs = u32(RTA_TABLE, table)
    if dst_len:
        attrs += attr(RTA_DST, ipv4(dst))
    if gateway:
        attrs += attr(RTA_GATEWAY, ipv4(gateway))
    return header + attrs + u32(RTA_OIF, oif)


def neighbour_body(index: int, address: str, lladdr: str, state: int) -> bytes:
    return (
        _NDMSG.pack(AF_INET, index, state, 0, 0)
        + attr(NDA_DST, ipv4(address))
        + attr(NDA_LLADDR, mac(lladdr))
    )


def rule_body(priority: int, table: int, *, src: str = "", dst: str = "") -> bytes:
    header = _RULE.pack(
        AF_INET,
        32 if dst else 0,
        32 if src else 0,
        0,
        table if table < 256 else RT_TABLE_COMPAT,
        0,
        0,
        FR_ACT_TO_TBL,
        0,
    )
    attrs = u32(FRA_PRIORITY, priority)
    if table:
        attrs += u32(FRA_TABLE, table)
    if src:
        attrs += attr(FRA_SRC, ipv4(src))
    if dst:
        attrs += attr(FRA_DST, ipv4(dst))
    return header + attrs


__all__ = ["Rtnl"]
