"""A simulated VPC around one node, built from network namespaces, for the Linux datapath tests.

    pods ==veth== node eth0 (primary ENI) ========== r-eth0 router r-vpc  ===== vpc peer  10.0.8.10/24
                       eth1, eth2 (hot-plugged) ==== r-eth1 ...   r-out  ===== outside   198.51.100.10/24
                                                                  r-excl ===== excluded  192.0.2.10/24

Every box is a namespace from ``tests.fakes.netns``; none has a link to the host's interfaces.

* The node is set up as cloud-init would leave it: ``eth0`` carries the primary ENI's MAC and
  address (subnet prefix length), default route via the subnet's first host; ip_forward off and
  strict rp_filter, so that whatever the datapath needs it has to set itself.
* The router is the VPC fabric: the gateway 10.0.0.1/32 on every ``r-eth*`` link and no connected
  subnet, so each address is reached through one /32 route via the ENI that holds it, as the VPC
  delivers to the ENI that owns an address. Strict rp_filter drops a packet whose source address
  belongs to another ENI's link (the VPC's source/destination check), so "egresses through that
  interface" is observable as "gets an answer".
* ``CloudAgent`` plays the hypervisor and the fabric's control plane: it watches the sim's state
  file, hot-plugs a veth carrying the MAC of every interface the sim attaches (``ethN`` in the node,
  ``r-ethN`` in the router, N the device index), unplugs detached ones, and keeps one router route
  per address the sim holds on an interface.

Traffic helpers create sockets inside a namespace from a throw-away thread that enters it
(``netns_socket``): a socket stays in the namespace it was created in, the thread ends right away,
and no other thread of the test process ever changes namespace.
"""

from __future__ import annotations

import ctypes
import hashlib
import http.client
import ipaddress
import json
import os
import socket
import subprocess
import threading
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.fakes import netns

GATEWAY = "10.0.0.1"
SUBNET = "10.0.0.0/24"
VPC_CIDR = "10.0.0.0/16"
VPC_PEER = "10.0.8.10"
OUTSIDE_PEER = "198.51.100.10"
EXCLUDED_PEER = "192.0.2.10"
ECHO_PORT = 5007
# (role, router link, router address, peer address) of the hosts the router reaches besides the node.
PEERS = (
    ("vpcpeer", "r-vpc", "10.0.8.1/24", f"{VPC_PEER}/24"),
    ("outside", "r-out", "198.51.100.1/24", f"{OUTSIDE_PEER}/24"),
    ("excluded", "r-excl", "192.0.2.1/24", f"{EXCLUDED_PEER}/24"),
)

_CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)


# --- the sim's state file -------------------------------------------------------------------------


@dataclass(frozen=True)
class Eni:
    id: str
    device_index: int
    primary: bool
    mac: str
    primary_ip: str
    ips: tuple[str, ...]
    prefixes: tuple[str, ...]

    @property
    def node_link(self) -> str:
        return f"eth{self.device_index}"

    @property
    def router_link(self) -> str:
        return f"r-eth{self.device_index}"

    @property
    def table(self) -> int:
        return self.device_index + 1


def read_state(path: Path) -> list[Eni]:
    """The interfaces in the sim's state file (``ipamd/cloud/sim.py`` writes it atomically)."""
    doc = json.loads(path.read_text())
    return [
        Eni(
            id=i["id"],
            device_index=i["device_index"],
            primary=i["primary"],
            mac=i["mac"],
            primary_ip=i["primary_ip"],
            ips=tuple(i["ips"]),
            prefixes=tuple(i.get("prefixes", ())),
        )
        for i in sorted(doc["interfaces"], key=lambda i: i["device_index"])
    ]


def seed_state(path: Path, *, instance_type: str, subnet_cidr: str, seed: int = 0) -> Eni:
    """Create the sim's state file (the node's primary interface) before the daemon starts."""
    from ipamd.cloud.sim import SimCloud

    SimCloud(instance_type=instance_type, subnet_cidr=subnet_cidr, state_path=path, seed=seed)
    [primary] = [e for e in read_state(path) if e.primary]
    return primary


# --- namespaces, sockets, dumps --------------------------------------------------------------------


def netns_socket(ns: str, family: int = socket.AF_INET, kind: int = socket.SOCK_STREAM) -> socket.socket:
    """A socket created inside ``ns``, by a thread that enters it and ends."""
    out: dict[str, Any] = {}

    def enter_and_create() -> None:
        try:
            fd = os.open(f"/var/run/netns/{ns}", os.O_RDONLY)
            try:
                if _libc.setns(fd, _CLONE_NEWNET) != 0:
                    err = ctypes.get_errno()
                    raise OSError(err, f"setns {ns}: {os.strerror(err)}")
            finally:
                os.close(fd)
            out["sock"] = socket.socket(family, kind)
        except BaseException as exc:
            out["error"] = exc

    t = threading.Thread(target=enter_and_create, name=f"setns-{ns}")
    t.start()
    t.join()
    if "error" in out:
        raise out["error"]
    sock: socket.socket = out["sock"]
    return sock


class _NetnsHTTPConnection(http.client.HTTPConnection):
    ns = ""

    def connect(self) -> None:
        self.sock = netns_socket(self.ns)
        self.sock.settimeout(self.timeout)  # type: ignore[arg-type]
        self.sock.connect((self.host, self.port))


class _NetnsHTTPHandler(urllib.request.HTTPHandler):
    def __init__(self, ns: str) -> None:
        super().__init__()
        self.ns = ns

    def http_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
        ns = self.ns

        def connection(host: str, **kwargs: Any) -> http.client.HTTPConnection:
            conn = _NetnsHTTPConnection(host, **kwargs)
            conn.ns = ns
            return conn

        return self.do_open(connection, req)  # type: ignore[arg-type]


def netns_urlopen(ns: str, url: str, timeout: float = 5.0) -> http.client.HTTPResponse:
    """``urllib.request.urlopen`` from inside ``ns`` (e.g. the daemon's introspection on 127.0.0.1)."""
    opener = urllib.request.OpenerDirector()
    # HTTPDefaultErrorHandler: a 503 (the daemon's /healthz while it starts) raises HTTPError, an
    # OSError that callers retry on, instead of a KeyError from an opener without error handlers.
    handlers = (
        _NetnsHTTPHandler(ns),
        urllib.request.HTTPErrorProcessor(),
        urllib.request.HTTPDefaultErrorHandler(),
    )
    for handler in handlers:
        opener.add_handler(handler)
    response: http.client.HTTPResponse = opener.open(url, timeout=timeout)
    return response


def sysctl(ns: str, values: dict[str, str | int]) -> None:
    netns.run(ns, "sysctl", "-qw", *(f"{key}={value}" for key, value in values.items()))


def read_sysctl(ns: str, key: str) -> str:
    return netns.run(ns, "sysctl", "-n", key).stdout.strip()


def dump(ns: str, *, nft: bool = False) -> str:
    """Addresses, links, every routing table, rules and neighbours of ``ns``, for a failure message."""
    parts = []
    cmds: list[tuple[str, ...]] = [
        ("ip", "-br", "link"),
        ("ip", "-br", "addr"),
        ("ip", "route", "show", "table", "all"),
        ("ip", "rule"),
        ("ip", "neigh"),
    ]
    if nft:
        cmds.append(("nft", "list", "ruleset"))
    for cmd in cmds:
        done = netns.run(ns, *cmd, check=False)
        parts.append(f"--- [{ns}] {' '.join(cmd)}\n{done.stdout}{done.stderr}")
    return "".join(parts)


def host_veth_name(container_id: str, ifname: str = "eth0", prefix: str = "ccni") -> str:
    return prefix + hashlib.sha1(f"{container_id}/{ifname}".encode()).hexdigest()[:11]


def links(ns: str) -> dict[str, dict[str, Any]]:
    """Links by name, from ``ip -j -s link`` (``mtu``, ``address``, ``stats64`` ...)."""
    return {link["ifname"]: link for link in json.loads(netns.ip(ns, "-j", "-s", "link"))}


def rx_packets(ns: str, link: str) -> int:
    return int(links(ns)[link]["stats64"]["rx"]["packets"])


def rp_filter_drops(ns: str) -> int:
    """Packets ``ns`` dropped by reverse-path filtering (TcpExt IPReversePathFilter)."""
    lines = [line.split() for line in netns.run(ns, "cat", "/proc/net/netstat").stdout.splitlines()]
    for names, values in zip(lines[::2], lines[1::2], strict=True):
        if names[0] == "TcpExt:":
            return int(dict(zip(names, values, strict=True)).get("IPReversePathFilter", 0))
    return 0


def snapshot(ns: str) -> dict[str, set[str]]:
    """Links, routes of every table (cache and kernel local/broadcast routes aside) and rules of ``ns``."""
    routes = {
        line.strip()
        for line in netns.ip(ns, "route", "show", "table", "all").splitlines()
        if line.strip() and not line.startswith(("local ", "broadcast ", "multicast ", "cache"))
    }
    return {
        "links": set(links(ns)),
        "routes": routes,
        "rules": {line.strip() for line in netns.ip(ns, "rule").splitlines() if line.strip()},
    }


# --- traffic ------------------------------------------------------------------------------------------


class EchoServer:
    """TCP and UDP on ``ECHO_PORT`` in ``ns``: answers ``<source address the server saw> <data>``."""

    def __init__(self, ns: str, port: int = ECHO_PORT) -> None:
        self.ns = ns
        self.port = port
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._tcp = netns_socket(ns, socket.AF_INET, socket.SOCK_STREAM)
        self._udp = netns_socket(ns, socket.AF_INET, socket.SOCK_DGRAM)
        try:
            self._tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self._tcp.bind(("0.0.0.0", port))
            self._tcp.listen(16)
            self._tcp.settimeout(0.1)
            self._udp.bind(("0.0.0.0", port))
            self._udp.settimeout(0.1)
        except OSError:
            self._tcp.close()
            self._udp.close()
            raise
        self.seen: list[tuple[str, str]] = []  # (proto, source address)
        for target in (self._serve_tcp, self._serve_udp):
            t = threading.Thread(target=target, daemon=True, name=f"echo-{ns}")
            t.start()
            self._threads.append(t)

    def _serve_tcp(self) -> None:
        while not self._stop.is_set():
            try:
                conn, (peer, _) = self._tcp.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            threading.Thread(target=self._answer_tcp, args=(conn, peer), daemon=True).start()

    def _answer_tcp(self, conn: socket.socket, peer: str) -> None:
        self.seen.append(("tcp", peer))
        with conn:
            conn.settimeout(10)
            data = b""
            try:
                while not data.endswith(b"\n"):
                    chunk = conn.recv(65536)
                    if not chunk:
                        return
                    data += chunk
                conn.sendall(peer.encode() + b" " + data)
            except OSError:
                return

    def _serve_udp(self) -> None:
        while not self._stop.is_set():
            try:
                data, (peer, port) = self._udp.recvfrom(65536)
            except TimeoutError:
                continue
            except OSError:
                return
            self.seen.append(("udp", peer))
            try:
                self._udp.sendto(peer.encode() + b" " + data, (peer, port))
            except OSError:
                continue

    def close(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(2)
        self._tcp.close()
        self._udp.close()

    def __enter__(self) -> EchoServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class TrafficError(AssertionError):
    pass


def _payload(size: int) -> bytes:
    return (os.urandom(size // 2 + 1).hex()[: size - 1] + "\n").encode()


def tcp_talk(ns: str, dst: str, *, port: int = ECHO_PORT, size: int = 32768, timeout: float = 5.0) -> str:
    """Connect from ``ns`` to an EchoServer at ``dst``, send ``size`` bytes, check the echo.

    Returns the source address the server saw. ``size`` is larger than any MTU so that full-sized
    segments cross both ways.
    """
    data = _payload(size)
    sock = netns_socket(ns, socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.settimeout(timeout)
        try:
            sock.connect((dst, port))
            sock.sendall(data)
            answer = b""
            while True:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                answer += chunk
        except OSError as exc:
            raise TrafficError(f"tcp {ns} -> {dst}:{port}: {exc!r}") from None
    finally:
        sock.close()
    seen, _, echoed = answer.partition(b" ")
    if echoed != data:
        raise TrafficError(f"tcp {ns} -> {dst}: {len(echoed)} bytes echoed of {len(data)}")
    return seen.decode()


def udp_talk(
    ns: str, dst: str, *, port: int = ECHO_PORT, size: int = 1200, timeout: float = 5.0, tries: int = 5
) -> str:
    """One datagram from ``ns`` to an EchoServer at ``dst`` and its echo; the source the server saw."""
    data = _payload(size)
    sock = netns_socket(ns, socket.AF_INET, socket.SOCK_DGRAM)
    try:
        sock.settimeout(timeout / tries)
        for _ in range(tries):
            try:
                sock.sendto(data, (dst, port))
                answer, _ = sock.recvfrom(65536)
            except TimeoutError:
                continue
            except OSError as exc:
                raise TrafficError(f"udp {ns} -> {dst}:{port}: {exc!r}") from None
            seen, _, echoed = answer.partition(b" ")
            if echoed == data:
                return seen.decode()
        raise TrafficError(f"udp {ns} -> {dst}:{port}: no echo in {timeout}s")
    finally:
        sock.close()


# --- the VPC ------------------------------------------------------------------------------------------


@dataclass
class CloudAgent:
    """The hypervisor and fabric control plane: follows the sim's state file (polled every 20 ms)."""

    vpc: Vpc
    interval: float = 0.02
    plugged: dict[int, Eni] = field(default_factory=dict)
    routes: dict[str, str] = field(default_factory=dict)  # router route by destination
    actions: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    _last: bytes = b""

    def start(self) -> None:
        self.sync()
        self._thread = threading.Thread(target=self._run, daemon=True, name="cloud-agent")
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.sync()
            except Exception as exc:  # keep following the file; the test sees the error
                self.errors.append(f"sync: {exc!r}")

    def sync(self) -> None:
        try:
            raw = self.vpc.state_path.read_bytes()
        except FileNotFoundError:
            return
        if raw == self._last:
            return
        self._last = raw
        enis = {e.device_index: e for e in read_state(self.vpc.state_path)}
        for index, eni in sorted(enis.items()):
            if index not in self.plugged:
                self._plug(eni)
            self.plugged[index] = eni
        for index in sorted(set(self.plugged) - set(enis)):
            self._unplug(self.plugged.pop(index))
        self._route(enis.values())

    def _plug(self, eni: Eni) -> None:
        if eni.primary:
            return  # eth0 is cabled when the node is built
        # One netlink request creates both ends, the node's already carrying the ENI's MAC: the link
        # appears in the node as a hot-plugged NIC does, down and at the default MTU.
        netns.ip(
            self.vpc.node, "link", "add", eni.node_link, "address", eni.mac, "type", "veth",
            "peer", "name", eni.router_link, "netns", self.vpc.router,
        )  # fmt: skip
        self.vpc.cable_router_side(eni.router_link)
        self.actions.append(f"plug {eni.id} {eni.mac} as {eni.node_link}")

    def _unplug(self, eni: Eni) -> None:
        netns.ip(self.vpc.router, "link", "del", eni.router_link, check=False)
        self.routes = {dst: r for dst, r in self.routes.items() if f" dev {eni.router_link}" not in r}
        self.actions.append(f"unplug {eni.id} {eni.node_link}")

    def _route(self, enis: Any) -> None:
        wanted: dict[str, str] = {}
        for eni in enis:
            dev = eni.router_link
            wanted[f"{eni.primary_ip}/32"] = f"dev {dev}"
            for ip in eni.ips:
                wanted[f"{ip}/32"] = f"via {eni.primary_ip} dev {dev} onlink"
            for prefix in eni.prefixes:
                wanted[prefix] = f"via {eni.primary_ip} dev {dev} onlink"
        batch = [f"route del {dst}" for dst in self.routes if dst not in wanted]
        batch += [f"route replace {dst} {r}" for dst, r in wanted.items() if self.routes.get(dst) != r]
        if not batch:
            return
        done = subprocess.run(
            ["ip", "-n", self.vpc.router, "-force", "-batch", "-"],
            input="\n".join(batch) + "\n",
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode != 0:
            self.errors.append(f"router routes {batch}: {done.stderr.strip()}")
        self.routes = wanted
        self.actions.extend(batch)


@dataclass
class Vpc:
    """The topology around one node; ``build()`` creates it, ``close()`` deletes every namespace."""

    state_path: Path
    instance_type: str = "t3.small"
    subnet: str = SUBNET
    mtu: int = 9001
    seed: int = 0
    node: str = ""
    router: str = ""
    peers: dict[str, str] = field(default_factory=dict)  # role -> namespace
    pods: list[str] = field(default_factory=list)
    primary: Eni | None = None
    agent: CloudAgent | None = None
    _made: list[str] = field(default_factory=list)

    @property
    def prefixlen(self) -> int:
        return ipaddress.IPv4Network(self.subnet).prefixlen

    @property
    def node_ip(self) -> str:
        assert self.primary is not None
        return self.primary.primary_ip

    @property
    def vpc_peer(self) -> str:
        return self.peers["vpcpeer"]

    @property
    def outside(self) -> str:
        return self.peers["outside"]

    @property
    def excluded(self) -> str:
        return self.peers["excluded"]

    def _ns(self, role: str) -> str:
        name = netns.create(role)
        self._made.append(name)
        return name

    def build(self) -> Vpc:
        try:
            self._build()
        except BaseException:
            self.close()
            raise
        return self

    def _build(self) -> None:
        self.primary = seed_state(
            self.state_path, instance_type=self.instance_type, subnet_cidr=self.subnet, seed=self.seed
        )
        self.node = self._ns("node")
        self.router = self._ns("router")
        strict_rp_filter = {"net.ipv4.conf.all.rp_filter": 1, "net.ipv4.conf.default.rp_filter": 1}
        sysctl(self.router, {"net.ipv4.ip_forward": 1, **strict_rp_filter})
        # The node as a hardened image leaves it: no forwarding, strict reverse-path filtering.
        sysctl(self.node, {"net.ipv4.ip_forward": 0, **strict_rp_filter})
        eth0 = self.primary
        netns.ip(
            self.node, "link", "add", "eth0", "address", eth0.mac, "mtu", str(self.mtu), "type", "veth",
            "peer", "name", "r-eth0", "netns", self.router,
        )  # fmt: skip
        netns.ip(self.node, "addr", "add", f"{eth0.primary_ip}/{self.prefixlen}", "dev", "eth0")
        netns.ip(self.node, "link", "set", "eth0", "up")
        netns.ip(self.node, "route", "add", "default", "via", GATEWAY, "dev", "eth0")
        self.cable_router_side("r-eth0")
        for role, router_link, router_addr, peer_addr in PEERS:
            ns = self._ns(role)
            self.peers[role] = ns
            netns.veth(ns, "eth0", self.router, router_link)
            netns.ip(ns, "addr", "add", peer_addr, "dev", "eth0")
            netns.ip(ns, "route", "add", "default", "via", router_addr.split("/")[0])
            netns.ip(self.router, "addr", "add", router_addr, "dev", router_link)
        self.agent = CloudAgent(self)
        self.agent.start()

    def cable_router_side(self, link: str) -> None:
        # The gateway's address as a /32: no connected subnet, so every VPC address is routed per /32
        # through the ENI the sim says holds it.
        netns.ip(self.router, "link", "set", link, "mtu", str(self.mtu))
        netns.ip(self.router, "addr", "add", f"{GATEWAY}/32", "dev", link)
        netns.ip(self.router, "link", "set", link, "up")

    def close(self) -> None:
        if self.agent is not None:
            self.agent.stop()
        for name in [*self.pods, *reversed(self._made)]:
            netns.delete(name)
        self.pods.clear()
        self._made.clear()

    def new_pod(self) -> str:
        name = netns.create("pod")
        self.pods.append(name)
        return name

    def enis(self) -> list[Eni]:
        return read_state(self.state_path)

    def eni_holding(self, ip: str) -> Eni:
        for eni in self.enis():
            if ip in eni.ips or any(
                ipaddress.IPv4Address(ip) in ipaddress.IPv4Network(p) for p in eni.prefixes
            ):
                return eni
        raise AssertionError(f"no interface in the sim holds {ip}: {self.enis()}")

    def wait_plugged(self, device_index: int, timeout: float = 10.0) -> Eni:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.agent is not None
            if device_index in self.agent.plugged:
                return self.agent.plugged[device_index]
            time.sleep(0.02)
        raise AssertionError(f"eth{device_index} never plugged: {self.enis()}")

    def dump(self, *pods: str) -> str:
        """Node (with nftables), router and the given pods, for a failure message."""
        text = dump(self.node, nft=True) + dump(self.router)
        text += (
            f"--- rp_filter drops: node {rp_filter_drops(self.node)}, router {rp_filter_drops(self.router)}\n"
        )
        for pod in pods:
            text += dump(pod)
        if self.agent is not None and self.agent.errors:
            text += "--- cloud agent errors\n" + "\n".join(self.agent.errors) + "\n"
        return text


@contextmanager
def vpc_topology(state_path: Path, **kwargs: Any) -> Iterator[Vpc]:
    vpc = Vpc(state_path=state_path, **kwargs).build()
    try:
        yield vpc
    finally:
        vpc.close()
