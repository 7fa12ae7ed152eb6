"""Netlink operations of the Linux datapath, with pyroute2: pod veths, host routes and rules, the
node's secondary interfaces. Blocking calls: ``ipamd.datapath.linux.datapath`` runs them in its own
worker threads, never on the event loop.

The design is aws-vpc-cni's routed /32 model (reference/aws-vpc-cni.md):

    pod netns:  <ifname> <pod ip>/32; 169.254.1.1/32 scope link; default via 169.254.1.1;
                neighbour 169.254.1.1 -> host veth MAC (permanent: no ARP for the gateway)
    node:       <pod ip>/32 dev <host veth> scope link (main)
                rule 512:  to <pod ip> lookup main          (replies and VPC traffic reach the pod)
                rule 1024: fwmark 0x80/0x80 lookup main     (SNATed traffic leaves by the primary)
                rule 1536: from <pod ip> lookup <table>     (pods on a secondary interface egress by it)
                rule 32765: from <interface ip> lookup <table>
                table N = device index + 1: <gw>/32 scope link dev ethN; default via <gw> dev ethN

Namespaces: the pod end of the veth is created directly in the pod's netns (``net_ns_fd`` of the
veth peer): moving a link between namespaces costs 20-40 ms in the kernel, creating it there ~1 ms.
The pod side is then configured from inside: the worker thread enters the pod netns with setns(2)
(per thread, on an fd opened read-only, so a missing netns is an error and is never created) and
always returns to its own netns before it does anything else.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import ipaddress
import os
import re
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError
from pyroute2.netns import setns

from ipamd.datapath.linux.rtnl import Rtnl
from ipamd.errors import DatapathError, InterfaceExists, NetnsNotFound

LINK_GATEWAY = "169.254.1.1"
PRIO_TO_POD = 512
PRIO_FWMARK = 1024
PRIO_FROM_POD = 1536
PRIO_FROM_INTERFACE = 32765
SNAT_MARK = 0x80
MAIN = 254
SCOPE_LINK = 253
NUD_PERMANENT = 0x80
AF_INET = 2
RTPROT_KERNEL = 2
NS_GET_NSTYPE = 0xB703  # ioctl on an nsfs fd: the namespace's CLONE_NEW* type
CLONE_NEWNET = 0x40000000


@dataclass(frozen=True, slots=True)
class PodSpec:
    ip: str
    netns: str  # a path: /var/run/netns/<name> or /proc/<pid>/ns/net
    ifname: str
    host_veth: str
    mtu: int
    table: int | None  # None: the pod's address is on the primary interface (main table)


@dataclass(frozen=True, slots=True)
class Wired:
    host_mac: str
    pod_mac: str
    mtu: int


@dataclass(frozen=True, slots=True)
class InterfaceSpec:
    mac: str
    ip: str
    prefixlen: int
    gateway: str
    table: int
    mtu: int


# --- namespaces ----------------------------------------------------------------------------------

_local = threading.local()


def _host() -> Any:
    """This worker thread's netlink handle on the node's netns (made once, outside any pod netns).

    A netlink socket stays bound to the netns it was opened in, so the handle keeps talking to the
    node while the thread visits pod namespaces; opening one costs a few ms, paid once per thread.
    """
    ipr = getattr(_local, "ipr", None)
    if ipr is None:
        ipr = _local.ipr = IPRoute()
    return ipr


@contextlib.contextmanager
def _hosted() -> Iterator[Any]:
    """The node handle for a block; a socket-level failure drops it so the next block opens anew."""
    try:
        yield _host()
    except NetlinkError:
        raise
    except OSError:
        ipr = getattr(_local, "ipr", None)
        _local.ipr = None
        if ipr is not None:
            with contextlib.suppress(Exception):
                ipr.close()
        raise


def _rtnl() -> Rtnl:
    """This worker thread's hand-encoded rtnetlink socket on the node's netns (the per-pod path)."""
    rt = getattr(_local, "rtnl", None)
    if rt is None:
        rt = _local.rtnl = Rtnl()
    return rt


@contextlib.contextmanager
def _node_rtnl() -> Iterator[Rtnl]:
    """The node's Rtnl for a block; a socket-level failure drops it so the next block opens anew."""
    try:
        yield _rtnl()
    except NetlinkError:
        raise
    except OSError:
        rt = getattr(_local, "rtnl", None)
        _local.rtnl = None
        if rt is not None:
            rt.close()
        raise


def open_netns(path: str) -> int:
    """An fd on the netns at ``path`` (never created: a missing one raises NetnsNotFound)."""
    if not path:
        raise NetnsNotFound("CNI_NETNS is empty")
    if not path.startswith("/"):  # an HCN namespace GUID means a Windows runtime: not ours
        raise NetnsNotFound(f"CNI_NETNS {path!r} is not a network namespace path (DATAPATH=linux)")
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise NetnsNotFound(f"network namespace {path} does not exist") from None
    except OSError as exc:
        raise NetnsNotFound(f"network namespace {path} cannot be opened: {exc.strerror}") from None
    try:
        kind = fcntl.ioctl(fd, NS_GET_NSTYPE)
    except OSError:
        kind = 0
    if kind != CLONE_NEWNET:
        os.close(fd)
        raise NetnsNotFound(f"{path} is not a network namespace")
    return fd


@contextlib.contextmanager
def entered(netns_fd: int) -> Iterator[None]:
    """Run the block with this thread in the netns ``netns_fd``; always come back."""
    home = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        setns(netns_fd, flags=0)
        try:
            yield
        finally:
            setns(home, flags=0)  # a failure here leaves the thread in the pod netns: let it raise
    finally:
        os.close(home)


# --- pods ----------------------------------------------------------------------------------------


def wire_pod(spec: PodSpec) -> Wired:
    """Build the pod's veth, addresses, routes, neighbour and rules. All or nothing.

    Eleven rtnetlink requests on a fresh ADD, encoded by ``rtnl`` (pyroute2 costs 0.2-0.3 ms of CPU
    per request, most of an ADD's CPU in a burst of pod starts): the veth pair is created with both
    MACs, both MTUs and the host end up, so neither end is read back; indexes come from
    if_nametoindex(3), an ioctl, not a netlink link request. Setting the MACs also keeps udev's
    MACAddressPolicy from rewriting them after the pod's neighbour entry was written (it leaves an
    address set by the link's creator alone).
    """
    fd = open_netns(spec.netns)
    host_mac, pod_mac = random_mac(), random_mac()
    try:
        with _node_rtnl() as rt:
            _remove_pod_host_side(rt, spec.ip, spec.host_veth)  # a retried ADD starts clean
            try:
                rt.add_veth(
                    spec.host_veth,
                    host_mac,
                    spec.mtu,
                    peer=spec.ifname,
                    peer_netns_fd=fd,
                    peer_address=pod_mac,
                )
            except NetlinkError as exc:
                if exc.code == errno.EEXIST:
                    raise InterfaceExists(
                        f"cannot create {spec.host_veth}: {spec.ifname} already exists in {spec.netns}"
                    ) from None
                raise _error("create veth", exc) from None
            try:
                index = _index(spec.host_veth)
                _wire_pod_side(fd, spec, host_mac)
                rt.add_route(spec.ip, 32, index, scope=SCOPE_LINK)
                rt.add_rule(PRIO_TO_POD, MAIN, dst=spec.ip)
                if spec.table is not None:
                    rt.add_rule(PRIO_FROM_POD, spec.table, src=spec.ip)
            except BaseException:
                _remove_pod_host_side(rt, spec.ip, spec.host_veth)  # the peer goes with it
                raise
        return Wired(host_mac=host_mac, pod_mac=pod_mac, mtu=spec.mtu)
    except NetlinkError as exc:
        raise _error("wire pod", exc) from None
    finally:
        os.close(fd)


def random_mac() -> str:
    """A random unicast, locally administered MAC, as the kernel's eth_random_addr() makes."""
    octets = bytearray(os.urandom(6))
    octets[0] = (octets[0] & 0xFE) | 0x02
    return ":".join(f"{b:02x}" for b in octets)


def _wire_pod_side(fd: int, spec: PodSpec, host_mac: str) -> None:
    with entered(fd):  # the socket and the index belong to the pod's netns
        pod = Rtnl()
        index = _index(spec.ifname)
    with pod:
        steps: list[tuple[str, Any]] = [
            (f"{spec.ifname} up", lambda: pod.set_up(index)),
            (f"address {spec.ip}/32", lambda: pod.add_address(index, spec.ip, 32)),
            (f"route {LINK_GATEWAY}/32", lambda: pod.add_route(LINK_GATEWAY, 32, index, scope=SCOPE_LINK)),
            (
                f"default route via {LINK_GATEWAY}",
                lambda: pod.add_route("0.0.0.0", 0, index, scope=0, gateway=LINK_GATEWAY),
            ),
            (
                f"neighbour {LINK_GATEWAY}",
                lambda: pod.add_neighbour(index, LINK_GATEWAY, host_mac, NUD_PERMANENT),
            ),
        ]
        for what, step in steps:
            try:
                step()
            except NetlinkError as exc:
                raise DatapathError(f"pod {spec.netns}: {what}: {os.strerror(exc.code)}") from None


def unwire_pod(ip: str, host_veth: str) -> None:
    """Remove the host side (the pod side goes with the veth, or went with its netns). Idempotent."""
    index = detach_pod(ip, host_veth)
    if index is not None:
        delete_link(index)


def detach_pod(ip: str, host_veth: str) -> int | None:
    """Take the pod out of routing now: its rules and host route. Returns the host veth's index
    (None when it is gone) for ``delete_link``, which may run later: deleting a veth costs the
    kernel 15-30 ms, and nothing reaches the pod once its rules and route are gone."""
    try:
        with _node_rtnl() as rt:
            if ip:
                _delete_pod_rules(rt, ip)
            index = _index_or_none(host_veth)
            if index is None:
                return None
            if ip:
                _ignore_gone(lambda: rt.delete_route(ip, 32, index, scope=SCOPE_LINK))
            return index
    except NetlinkError as exc:
        raise _error("unwire pod", exc) from None


def delete_link(index: int) -> None:
    """Delete a link by index (an index is not reused soon, unlike a name a new ADD may take)."""
    try:
        with _node_rtnl() as rt:
            _ignore_gone(lambda: rt.delete_link(index))
    except NetlinkError as exc:
        raise _error("delete link", exc) from None


def _remove_pod_host_side(rt: Rtnl, ip: str, host_veth: str) -> None:
    """Delete the host veth ``host_veth`` and the pod rules of ``ip`` (either may be "")."""
    index = _index_or_none(host_veth)
    if index is not None:
        _ignore_gone(lambda: rt.delete_link(index))
    if ip:
        _delete_pod_rules(rt, ip)


def _delete_pod_rules(rt: Rtnl, ip: str) -> None:
    """Rules 512 and 1536 of ``ip``, deleted by key (no dump: its cost grows with the pods on the
    node); table 0 matches any table. A rule added twice is deleted twice."""
    for priority, table, src, dst in ((PRIO_TO_POD, MAIN, "", ip), (PRIO_FROM_POD, 0, ip, "")):
        for _ in range(4):
            try:
                rt.delete_rule(priority, table, src=src, dst=dst)
            except NetlinkError as exc:
                if exc.code in (errno.ENOENT, errno.ESRCH):
                    break
                raise


def check_pod(spec: PodSpec) -> None:
    """Raise DatapathError naming the first thing that is not as ``wire_pod`` left it."""
    try:
        with _hosted() as ipr:
            indexes = ipr.link_lookup(ifname=spec.host_veth)
            if not indexes:
                raise DatapathError(f"host veth {spec.host_veth} is missing")
            index = indexes[0]
            if not ipr.get_links(index)[0].get("flags", 0) & 1:
                raise DatapathError(f"host veth {spec.host_veth} is down")
            routes = ipr.get_routes(family=AF_INET, table=MAIN, dst=spec.ip, dst_len=32)
            if not any(r.get("oif") == index for r in routes):
                raise DatapathError(f"no route to {spec.ip}/32 via {spec.host_veth}")
            rules = _rules(ipr)
            if not any(_rule_matches(r, PRIO_TO_POD, dst=spec.ip) for r in rules):
                raise DatapathError(f"no rule 'to {spec.ip} lookup main' at priority {PRIO_TO_POD}")
            if spec.table is not None and not any(
                _rule_matches(r, PRIO_FROM_POD, src=spec.ip, table=spec.table) for r in rules
            ):
                raise DatapathError(
                    f"no rule 'from {spec.ip} lookup {spec.table}' at priority {PRIO_FROM_POD}"
                )
        fd = open_netns(spec.netns)
        try:
            with entered(fd), IPRoute() as pod:
                indexes = pod.link_lookup(ifname=spec.ifname)
                if not indexes:
                    raise DatapathError(f"{spec.ifname} is missing in {spec.netns}")
                addresses = {a.get("address") for a in pod.get_addr(family=AF_INET, index=indexes[0])}
                if spec.ip not in addresses:
                    raise DatapathError(f"{spec.ifname} in {spec.netns} does not hold {spec.ip}")
                defaults = [r for r in pod.get_routes(family=AF_INET, table=MAIN) if r.get("dst_len") == 0]
                if not any(r.get("gateway") == LINK_GATEWAY for r in defaults):
                    raise DatapathError(f"the pod's default route is not via {LINK_GATEWAY}")
        finally:
            os.close(fd)
    except NetlinkError as exc:
        raise _error("check pod", exc) from None


def host_veths(prefix: str) -> list[str]:
    """Names of the host veths of this datapath (``prefix`` + 11 hex) present on the node."""
    pattern = re.compile(re.escape(prefix) + r"[0-9a-f]{11}")
    with _hosted() as ipr:
        names = [str(link.get("ifname")) for link in ipr.get_links()]
    return [n for n in names if pattern.fullmatch(n)]


def pod_rule_ips() -> set[str]:
    """Pod addresses named by rules at the pod priorities (512 to, 1536 from)."""
    with _hosted() as ipr:
        found = set()
        for rule in _rules(ipr):
            if rule.get("priority") == PRIO_TO_POD and rule.get("dst_len") == 32:
                found.add(str(rule.get("dst")))
            elif rule.get("priority") == PRIO_FROM_POD and rule.get("src_len") == 32:
                found.add(str(rule.get("src")))
    return found


# --- pods aws-vpc-cni wired (docs/adoption-aws-vpc-cni.md) ------------------------------------------


def link_exists(name: str) -> bool:
    return _index_or_none(name) is not None


def pod_routes() -> dict[str, str]:
    """``<ip>`` -> the device of each ``<ip>/32 scope link`` route in main: where the node sends a
    pod's traffic, whoever wired the pod (aws-vpc-cni's routes are ours)."""
    with _hosted() as ipr:
        names = {link.get("index"): str(link.get("ifname")) for link in ipr.get_links()}
        found: dict[str, str] = {}
        for route in ipr.get_routes(family=AF_INET, table=MAIN):
            oif, dst = route.get("oif"), route.get("dst")
            if route.get("dst_len") == 32 and route.get("scope") == SCOPE_LINK and dst and oif in names:
                found[str(dst)] = names[oif]
    return found


def rename_veth(old: str, new: str, ip: str) -> None:
    """Make aws-vpc-cni's host veth ``old`` ours: down (a link must be down to be renamed), renamed
    ``new``, up, and ``<ip>/32 dev <new> scope link`` back in main (going down dropped it). The veth
    keeps its MAC, so the pod's permanent neighbour entry for 169.254.1.1 stays valid; the pod's
    rules (512, 1536) do not name the link and stay as they are."""
    try:
        with _hosted() as ipr:
            index = _index(old)
            ipr.link("set", index=index, state="down")
            ipr.link("set", index=index, ifname=new)
            ipr.link("set", index=index, state="up")
            ipr.route("replace", dst=ip, dst_len=32, oif=index, scope=SCOPE_LINK, table=MAIN)
    except NetlinkError as exc:
        raise _error(f"take over {old} as {new}", exc) from None


# --- the node ------------------------------------------------------------------------------------


def link_by_mac(mac: str, timeout: float = 0.0) -> tuple[str, int, int] | None:
    """(name, index, mtu) of the link with ``mac``, waiting up to ``timeout`` for it to appear."""
    deadline = time.monotonic() + timeout
    want = mac.lower()
    while True:
        with _hosted() as ipr:
            for link in ipr.get_links():
                if str(link.get("address") or "").lower() == want and link.get("kind") != "veth-peer":
                    return str(link.get("ifname")), int(link["index"]), int(link.get("mtu") or 1500)
        if time.monotonic() >= deadline:
            return None
        time.sleep(0.1)


def setup_interface(spec: InterfaceSpec, timeout: float) -> str:
    """Bring a secondary interface into service; idempotent. Returns its name."""
    found = link_by_mac(spec.mac, timeout)
    if found is None:
        raise DatapathError(f"no link with MAC {spec.mac} appeared within {timeout:g} s")
    name, index, _mtu = found
    net = ipaddress.IPv4Interface(f"{spec.ip}/{spec.prefixlen}").network
    try:
        with _hosted() as ipr:
            ipr.link("set", index=index, mtu=spec.mtu, state="up")
            held = {a.get("address") for a in ipr.get_addr(family=AF_INET, index=index)}
            if spec.ip not in held:
                ipr.addr("add", index=index, address=spec.ip, prefixlen=spec.prefixlen)
            # The kernel's connected route would send the subnet's traffic out of this interface
            # from the main table; the interface's own table has what it needs.
            _ignore_gone(
                lambda: ipr.route(
                    "del", dst=str(net), oif=index, table=MAIN, scope=SCOPE_LINK, proto=RTPROT_KERNEL
                )
            )
            ipr.route("replace", dst=f"{spec.gateway}/32", oif=index, scope=SCOPE_LINK, table=spec.table)
            ipr.route("replace", dst="0.0.0.0/0", gateway=spec.gateway, oif=index, table=spec.table)
            rules = _rules(ipr)
            if not any(_rule_matches(r, PRIO_FROM_INTERFACE, src=spec.ip, table=spec.table) for r in rules):
                ipr.rule("add", src=spec.ip, src_len=32, table=spec.table, priority=PRIO_FROM_INTERFACE)
    except NetlinkError as exc:
        raise _error(f"set up {name}", exc) from None
    set_sysctl(f"net/ipv4/conf/{name}/rp_filter", "2")
    return name


def teardown_interface(ip: str, table: int) -> None:
    """Remove what ``setup_interface`` added on the node (the link itself leaves with the detach)."""
    try:
        with _hosted() as ipr:
            for rule in _rules(ipr):
                if rule.get("priority") == PRIO_FROM_INTERFACE and rule.get("src") == ip:
                    _del_rule(ipr, rule)
            for route in ipr.get_routes(family=AF_INET, table=table):
                _ignore_gone(lambda route=route: ipr.route("del", **_route_key(route, table)))
    except NetlinkError as exc:
        raise _error("tear down interface", exc) from None


def interface_rules() -> dict[str, int]:
    """``from <ip> lookup <table>`` rules at the interface priority: ip -> table."""
    with _hosted() as ipr:
        return {
            str(r.get("src")): int(r.get("table") or 0)
            for r in _rules(ipr)
            if r.get("priority") == PRIO_FROM_INTERFACE and r.get("src_len") == 32
        }


def ensure_fwmark_rule(present: bool) -> None:
    """The rule that routes SNATed pod traffic by the main table (out of the primary interface)."""
    with _hosted() as ipr:
        rules = [r for r in _rules(ipr) if r.get("priority") == PRIO_FWMARK and r.get("fwmark") == SNAT_MARK]
        if present and not rules:
            ipr.rule("add", fwmark=SNAT_MARK, fwmask=SNAT_MARK, table=MAIN, priority=PRIO_FWMARK)
        if not present:
            for rule in rules:
                _del_rule(ipr, rule)


def set_sysctl(key: str, value: str) -> None:
    path = f"/proc/sys/{key}"
    try:
        with open(path) as f:
            if f.read().strip() == value:
                return
        with open(path, "w") as f:
            f.write(value)
    except OSError as exc:
        raise DatapathError(
            f"cannot set {key.replace('/', '.')}={value}: {exc.strerror}"
            " (run `cloud-cni node-init` as root first: the DaemonSet's node-init init container does)"
        ) from None


# --- helpers -------------------------------------------------------------------------------------


def _index(name: str) -> int:
    """The index of link ``name`` in this thread's netns."""
    index = _index_or_none(name)
    if index is None:
        raise DatapathError(f"link {name} is missing")
    return index


def _index_or_none(name: str) -> int | None:
    """if_nametoindex(3): one ioctl (~5 us) where a netlink link request costs ~0.3 ms to decode."""
    if not name:
        return None
    try:
        return socket.if_nametoindex(name)
    except OSError:
        return None


def _rules(ipr: Any) -> list[Any]:
    return list(ipr.get_rules(family=AF_INET))


def _rule_matches(rule: Any, priority: int, *, src: str = "", dst: str = "", table: int = MAIN) -> bool:
    if rule.get("priority") != priority or int(rule.get("table") or 0) != table:
        return False
    if src and (rule.get("src") != src or rule.get("src_len") != 32):
        return False
    return not dst or bool(rule.get("dst") == dst and rule.get("dst_len") == 32)


def _del_rule(ipr: Any, rule: Any) -> None:
    spec: dict[str, Any] = {"priority": rule.get("priority"), "table": int(rule.get("table") or 0)}
    for key in ("src", "dst"):
        if rule.get(key):
            spec[key] = rule.get(key)
            spec[f"{key}_len"] = rule.get(f"{key}_len")
    if rule.get("fwmark") is not None:
        spec["fwmark"] = rule.get("fwmark")
        spec["fwmask"] = rule.get("fwmask")
    _ignore_gone(lambda: ipr.rule("del", **spec))


def _route_key(route: Any, table: int) -> dict[str, Any]:
    key: dict[str, Any] = {"table": table, "dst_len": route.get("dst_len", 0), "scope": route.get("scope", 0)}
    if route.get("dst"):
        key["dst"] = route.get("dst")
    if route.get("oif") is not None:
        key["oif"] = route.get("oif")
    if route.get("gateway"):
        key["gateway"] = route.get("gateway")
    return key


def _ignore_gone(fn: Any) -> None:
    try:
        fn()
    except NetlinkError as exc:
        if exc.code not in (errno.ENOENT, errno.ENODEV, errno.ESRCH, errno.EADDRNOTAVAIL):
            raise


def _error(what: str, exc: NetlinkError) -> DatapathError:
    return DatapathError(f"{what}: {os.strerror(exc.code) if exc.code else exc}")


__all__ = [
    "LINK_GATEWAY",
    "InterfaceSpec",
    "PodSpec",
    "Wired",
    "check_pod",
    "ensure_fwmark_rule",
    "host_veths",
    "interface_rules",
    "link_by_mac",
    "open_netns",
    "pod_rule_ips",
    "set_sysctl",
    "setup_interface",
    "teardown_interface",
    "unwire_pod",
    "wire_pod",
]
