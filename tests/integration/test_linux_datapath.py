"""The Linux datapath end to end: the daemon (DATAPATH=linux) inside the node namespace of a simulated
VPC (tests/fakes/vpc.py), pods wired through the CNI plugin, real TCP and UDP between pods, the node,
a VPC peer and hosts outside the VPC.

The pool holds 6 addresses from the start (MINIMUM_IP_TARGET=6, WARM_IP_TARGET=1 on a t3.small:
3 ENIs x 3 secondary IPs), so the secondary ENI is hot-plugged at start, pods 1-3 land on eth0,
pods 4-5 on eth1, and nothing grows while a test runs: before/after dumps compare cleanly.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.fakes import netns
from tests.fakes.vpc import (
    ECHO_PORT,
    EXCLUDED_PEER,
    GATEWAY,
    OUTSIDE_PEER,
    SUBNET,
    VPC_CIDR,
    VPC_PEER,
    EchoServer,
    Eni,
    Vpc,
    host_veth_name,
    links,
    netns_socket,
    read_sysctl,
    rp_filter_drops,
    rx_packets,
    snapshot,
    tcp_talk,
    udp_talk,
    vpc_topology,
)

from .conftest import DaemonProcess, daemon_env
from .test_shim_exec import Done, netconf, shim

pytestmark = [
    pytest.mark.integration,
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="network namespaces need root"),
]

POD_GATEWAY = "169.254.1.1"
STRAY_IP = "10.0.0.200"  # in the subnet, held by nobody


# --- helpers --------------------------------------------------------------------------------------


@dataclass
class Pod:
    ns: str
    cid: str
    ip: str
    eni: Eni
    result: dict[str, Any]

    @property
    def netns_path(self) -> str:
        return f"/var/run/netns/{self.ns}"

    @property
    def host_veth(self) -> str:
        return host_veth_name(self.cid)


def node_env(tmp: Path, vpc: Vpc, **overrides: str) -> dict[str, str]:
    """The daemon on the simulated VPC's node; ``overrides`` win over these defaults."""
    defaults = {
        "DATAPATH": "linux",
        "SIM_INSTANCE_TYPE": vpc.instance_type,
        "SIM_SUBNET_CIDR": SUBNET,
        "SIM_VPC_CIDR": VPC_CIDR,
        "SIM_STATE_PATH": str(vpc.state_path),
        "MINIMUM_IP_TARGET": "6",
        "WARM_IP_TARGET": "1",
        "EXCLUDE_SNAT_CIDRS": "192.0.2.0/24",
    }
    return daemon_env(tmp, **{**defaults, **overrides})


def fail(step: str, vpc: Vpc, daemon: DaemonProcess | None, *pods: str) -> str:
    """A failure message: the step, the daemon's log tail, and dumps of the node, router and pods."""
    logs = "\n".join(daemon.logs().splitlines()[-40:]) if daemon is not None else ""
    return f"{step}\n--- daemon log (tail)\n{logs}\n{vpc.dump(*pods)}"


def wait_for(what: str, predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.05)


def rules(ns: str) -> list[str]:
    return [" ".join(line.split()) for line in netns.ip(ns, "rule").splitlines() if line.strip()]


def routes(ns: str, table: str = "main") -> list[str]:
    """Routes of one table, whitespace normalised, without "proto static" (who added them)."""
    out = netns.ip(ns, "route", "show", "table", table)
    return [" ".join(line.replace(" proto static", "").split()) for line in out.splitlines()]


def start_node(vpc: Vpc, daemon: DaemonProcess, **overrides: str) -> DaemonProcess:
    """Start the daemon and wait until the secondary ENI (eth1) is set up on the node."""
    daemon.start(**overrides)
    wait_eth1(vpc, daemon)
    return daemon


def wait_eth1(vpc: Vpc, daemon: DaemonProcess) -> Eni:
    eni = vpc.wait_plugged(1, timeout=15)
    rule = f"32765: from {eni.primary_ip} lookup 2"
    try:
        wait_for(f"rule {rule!r}", lambda: rule in rules(vpc.node), timeout=15)
    except AssertionError as exc:
        raise AssertionError(fail(f"secondary ENI set-up: {exc}", vpc, daemon)) from None
    return eni


def add_pod(vpc: Vpc, daemon: DaemonProcess, cid: str | None = None, **conf: Any) -> Pod:
    ns = vpc.new_pod()
    cid = cid or f"ctr-{ns}"
    done = shim("ADD", netconf(daemon.socket, **conf), cid=cid, netns=f"/var/run/netns/{ns}")
    assert done.code == 0, fail(f"ADD {cid}: {done}", vpc, daemon, ns)
    ip = done.json["ips"][0]["address"].split("/")[0]
    return Pod(ns, cid, ip, vpc.eni_holding(ip), done.json)


def add_pods(vpc: Vpc, daemon: DaemonProcess, count: int) -> list[Pod]:
    pods = [add_pod(vpc, daemon) for _ in range(count)]
    placed = [p.eni.device_index for p in pods]
    assert placed == [0, 0, 0, 1, 1][:count], f"pods landed on ENIs {placed}"
    return pods


def cni(command: str, daemon: DaemonProcess, pod: Pod, netns_path: str | None = None) -> Done:
    conf = netconf(daemon.socket, prevResult=pod.result)
    return shim(command, conf, cid=pod.cid, netns=pod.netns_path if netns_path is None else netns_path)


def assert_cni_failure(done: Done) -> dict[str, Any]:
    assert done.code != 0, done
    err = done.json
    assert isinstance(err.get("code"), int) and err.get("msg"), err
    return dict(err)


def both(ns: str, dst: str) -> set[str]:
    """The source addresses the echo server at ``dst`` saw for one TCP and one UDP exchange from ``ns``."""
    return {tcp_talk(ns, dst), udp_talk(ns, dst)}


# --- fixtures -------------------------------------------------------------------------------------


@pytest.fixture
def vpc(tmp_path: Path) -> Iterator[Vpc]:
    with vpc_topology(tmp_path / "sim" / "state.json") as v:
        yield v
        assert v.agent is not None and not v.agent.errors, v.agent.errors


@pytest.fixture
def node(tmp_path: Path, vpc: Vpc) -> Iterator[DaemonProcess]:
    d = DaemonProcess(dir=tmp_path, env=node_env(tmp_path, vpc), netns=vpc.node)
    yield d
    if d.proc is not None and d.proc.poll() is None:
        d.kill()


@dataclass
class Wired:
    vpc: Vpc
    daemon: DaemonProcess
    pods: list[Pod]  # 3 on eth0, 2 on eth1

    def on(self, device_index: int, nth: int = 0) -> Pod:
        return [p for p in self.pods if p.eni.device_index == device_index][nth]


@pytest.fixture(scope="module")
def wired(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Wired]:
    """One node with 5 pods and echo servers on every pod and peer, for the tests that only send."""
    tmp = tmp_path_factory.mktemp("wired")
    with vpc_topology(tmp / "sim" / "state.json") as v:
        daemon = DaemonProcess(dir=tmp, env=node_env(tmp, v), netns=v.node)
        servers: list[EchoServer] = []
        try:
            start_node(v, daemon)
            pods = add_pods(v, daemon, 5)
            for ns in (v.vpc_peer, v.outside, v.excluded, *(p.ns for p in pods)):
                servers.append(EchoServer(ns))
            yield Wired(v, daemon, pods)
        finally:
            for s in servers:
                s.close()
            if daemon.proc is not None and daemon.proc.poll() is None:
                daemon.kill()


# --- the harness itself ---------------------------------------------------------------------------


def test_harness_fabric_without_daemon(vpc: Vpc) -> None:
    """The topology routes per /32 through the ENI holding an address and drops a wrong-ENI source."""
    from ipamd.cloud.sim import SimCloud

    with EchoServer(vpc.vpc_peer), EchoServer(vpc.outside), EchoServer(vpc.excluded):
        for peer in (VPC_PEER, OUTSIDE_PEER, EXCLUDED_PEER):
            assert both(vpc.node, peer) == {vpc.node_ip}, peer
        assert netns.ip(vpc.node, "-br", "link", "show", "eth0").split()[2] == vpc.enis()[0].mac
        # The hypervisor hot-plugs what the cloud attaches: eth1 with the ENI's MAC, down.
        sim = SimCloud(instance_type=vpc.instance_type, subnet_cidr=SUBNET, state_path=vpc.state_path)
        view = sim.attach_interface(2, 0)
        eni = vpc.wait_plugged(1)
        eth1 = links(vpc.node)["eth1"]
        assert eth1["address"] == view.mac and "UP" not in eth1["flags"]
        wait_for(
            "fabric routes",
            lambda: any(
                r.startswith(f"{view.ips[0]} via {eni.primary_ip} dev r-eth1 onlink")
                for r in routes(vpc.router)
            ),
        )
        # Set eth1 up as the datapath would; a socket bound to its address gets answers through it...
        n = vpc.node
        netns.ip(n, "link", "set", "eth1", "mtu", str(vpc.mtu), "up")
        netns.ip(n, "addr", "add", f"{eni.primary_ip}/24", "dev", "eth1", "noprefixroute")
        netns.ip(n, "route", "add", f"{GATEWAY}/32", "dev", "eth1", "scope", "link", "table", "2")
        netns.ip(n, "route", "add", "default", "via", GATEWAY, "dev", "eth1", "table", "2")
        netns.ip(n, "rule", "add", "from", eni.primary_ip, "lookup", "2", "prio", "32765")
        sock = netns_socket(n)
        with sock:
            sock.settimeout(3)
            sock.bind((eni.primary_ip, 0))
            sock.connect((VPC_PEER, ECHO_PORT))
        # ...and through eth0 the router's strict rp_filter drops it (the VPC's source check).
        netns.ip(n, "rule", "del", "from", eni.primary_ip, "lookup", "2", "prio", "32765")
        before = rp_filter_drops(vpc.router)
        sock = netns_socket(n)
        with sock, pytest.raises(TimeoutError):
            sock.settimeout(1.5)
            sock.bind((eni.primary_ip, 0))
            sock.connect((VPC_PEER, ECHO_PORT))
        assert rp_filter_drops(vpc.router) > before, "the router dropped the SYNs by rp_filter"
        # The fabric follows the cloud: a released address loses its route.
        sim.release_ips(view.id, [view.ips[0]])
        wait_for(
            "route removed", lambda: not any(r.startswith(f"{view.ips[0]} ") for r in routes(vpc.router))
        )


# --- 0. what ADD builds (inspected, before any traffic) -------------------------------------------


def test_node_and_pod_wiring(wired: Wired) -> None:
    v, d = wired.vpc, wired.daemon
    problems: list[str] = []

    def expect(ok: bool, what: str) -> None:
        if not ok:
            problems.append(what)

    expect(read_sysctl(v.node, "net.ipv4.ip_forward") == "1", "node ip_forward=1")
    for link in ("eth0", "eth1"):
        expect(read_sysctl(v.node, f"net.ipv4.conf.{link}.rp_filter") == "2", f"rp_filter=2 on {link}")
    node_rules = rules(v.node)
    expect("1024: from all fwmark 0x80/0x80 lookup main" in node_rules, "rule fwmark 0x80/0x80 prio 1024")
    nft = netns.run(v.node, "nft", "list", "table", "ip", "cloud-cni", check=False)
    expect(nft.returncode == 0, f"nftables table ip cloud-cni: {nft.stderr.strip()}")
    eth1 = wired.on(1).eni
    node_links = links(v.node)
    expect(node_links["eth1"]["mtu"] == v.mtu, f"eth1 MTU {node_links['eth1']['mtu']} == eth0's {v.mtu}")
    expect("UP" in node_links["eth1"]["flags"], "eth1 up")
    expect(f"{eth1.primary_ip}/24" in netns.ip(v.node, "-br", "addr", "show", "eth1"), "eth1 address /24")
    expect(
        not [r for r in routes(v.node) if "dev eth1" in r and "proto kernel" in r],
        "no connected subnet route via eth1 in main",
    )
    table2 = routes(v.node, "2")
    expect(
        f"default via {GATEWAY} dev eth1" in " ".join(table2), f"table 2 default via gw dev eth1: {table2}"
    )
    expect(any(r.startswith(f"{GATEWAY} dev eth1 scope link") for r in table2), f"table 2 gw/32: {table2}")
    for pod in wired.pods:
        veth = node_links.get(pod.host_veth)
        expect(veth is not None, f"{pod.cid}: host veth {pod.host_veth}")
        expect(f"{pod.ip} dev {pod.host_veth} scope link" in routes(v.node), f"{pod.ip}: host route")
        expect(f"512: from all to {pod.ip} lookup main" in node_rules, f"{pod.ip}: rule prio 512")
        from_rule = f"1536: from {pod.ip} lookup 2"
        if pod.eni.device_index == 1:
            expect(from_rule in node_rules, f"{pod.ip} on eth1: {from_rule!r}")
        else:
            expect(not [r for r in node_rules if r.startswith(f"1536: from {pod.ip} ")], f"{pod.ip}: no 1536")
        pod_links = links(pod.ns)
        expect("eth0" in pod_links, f"{pod.cid}: eth0 in the pod")
        expect(f"{pod.ip}/32" in netns.ip(pod.ns, "-br", "addr", "show", "eth0"), f"{pod.ip}/32 in the pod")
        pod_routes = routes(pod.ns)
        expect(f"default via {POD_GATEWAY} dev eth0" in pod_routes, f"{pod.cid}: default via 169.254.1.1")
        expect(
            any(r.startswith(f"{POD_GATEWAY} dev eth0 scope link") for r in pod_routes), f"{pod.cid}: gw/32"
        )
        neigh = " ".join(netns.ip(pod.ns, "neigh", "show", POD_GATEWAY).split())
        mac = veth["address"] if veth else "?"
        expect(f"lladdr {mac} PERMANENT" in neigh, f"{pod.cid}: permanent neighbour -> {mac}: {neigh!r}")
    assert not problems, fail("wiring: " + "; ".join(problems), v, d, wired.pods[0].ns, wired.on(1).ns)


# --- 1-4. traffic ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("src", "dst"),
    [((0, 0), (0, 1)), ((0, 0), (1, 0)), ((1, 0), (0, 0)), ((1, 0), (1, 1))],
    ids=["eth0-eth0", "eth0-eth1", "eth1-eth0", "eth1-eth1"],
)
def test_pod_to_pod_on_the_node(wired: Wired, src: tuple[int, int], dst: tuple[int, int]) -> None:
    a, b = wired.on(*src), wired.on(*dst)
    try:
        seen = both(a.ns, b.ip)
    except AssertionError as exc:
        raise AssertionError(fail(f"{a.ip} -> {b.ip}: {exc}", wired.vpc, wired.daemon, a.ns, b.ns)) from None
    assert seen == {a.ip}


@pytest.mark.parametrize("eni", [0, 1], ids=["eth0", "eth1"])
def test_vpc_peer_reaches_pod(wired: Wired, eni: int) -> None:
    pod = wired.on(eni)
    try:
        seen = both(wired.vpc.vpc_peer, pod.ip)
    except AssertionError as exc:
        raise AssertionError(
            fail(f"{VPC_PEER} -> {pod.ip}: {exc}", wired.vpc, wired.daemon, pod.ns)
        ) from None
    assert seen == {VPC_PEER}


@pytest.mark.parametrize("eni", [0, 1], ids=["eth0", "eth1"])
def test_pod_egresses_through_its_eni_with_its_own_address(wired: Wired, eni: int) -> None:
    pod = wired.on(eni)
    own, other = f"r-eth{eni}", f"r-eth{1 - eni}"
    before = {link: rx_packets(wired.vpc.router, link) for link in (own, other)}
    try:
        seen = {tcp_talk(pod.ns, VPC_PEER)} | {udp_talk(pod.ns, VPC_PEER) for _ in range(10)}
    except AssertionError as exc:
        raise AssertionError(
            fail(f"{pod.ip} -> {VPC_PEER}: {exc}", wired.vpc, wired.daemon, pod.ns)
        ) from None
    grew = {link: rx_packets(wired.vpc.router, link) - n for link, n in before.items()}
    assert seen == {pod.ip}
    assert grew[own] >= 14 and grew[other] < 4, grew


@pytest.mark.parametrize("eni", [0, 1], ids=["eth0", "eth1"])
def test_traffic_leaving_the_vpc_is_snatted_to_the_node(wired: Wired, eni: int) -> None:
    pod = wired.on(eni)
    try:
        seen = both(pod.ns, OUTSIDE_PEER)
    except AssertionError as exc:
        raise AssertionError(
            fail(f"{pod.ip} -> {OUTSIDE_PEER}: {exc}", wired.vpc, wired.daemon, pod.ns)
        ) from None
    assert seen == {wired.vpc.node_ip}


@pytest.mark.parametrize("eni", [0, 1], ids=["eth0", "eth1"])
def test_excluded_cidr_sees_the_pod_address(wired: Wired, eni: int) -> None:
    pod = wired.on(eni)
    try:
        seen = both(pod.ns, EXCLUDED_PEER)
    except AssertionError as exc:
        raise AssertionError(
            fail(f"{pod.ip} -> {EXCLUDED_PEER}: {exc}", wired.vpc, wired.daemon, pod.ns)
        ) from None
    assert seen == {pod.ip}


def test_external_snat_leaves_the_pod_address(vpc: Vpc, node: DaemonProcess) -> None:
    start_node(vpc, node, EXTERNAL_SNAT="true")
    pods = add_pods(vpc, node, 4)
    with EchoServer(vpc.outside):
        for pod in (pods[0], pods[3]):
            try:
                seen = both(pod.ns, OUTSIDE_PEER)
            except AssertionError as exc:
                raise AssertionError(fail(f"{pod.ip} -> {OUTSIDE_PEER}: {exc}", vpc, node, pod.ns)) from None
            assert seen == {pod.ip}, pod


# --- 5. MTU ---------------------------------------------------------------------------------------


def test_pod_mtu_defaults_to_the_primary_interface(wired: Wired) -> None:
    node_links = links(wired.vpc.node)
    for pod in wired.pods:
        assert links(pod.ns)["eth0"]["mtu"] == wired.vpc.mtu, pod
        assert node_links[pod.host_veth]["mtu"] == wired.vpc.mtu, pod


def test_pod_mtu_setting(vpc: Vpc, node: DaemonProcess) -> None:
    start_node(vpc, node, POD_MTU="1400")
    pod = add_pod(vpc, node)
    assert links(pod.ns)["eth0"]["mtu"] == 1400
    assert links(vpc.node)[pod.host_veth]["mtu"] == 1400
    with EchoServer(vpc.vpc_peer):
        assert tcp_talk(pod.ns, VPC_PEER) == pod.ip


# --- 6. DEL and CHECK -----------------------------------------------------------------------------


@pytest.mark.parametrize("eni", [0, 1], ids=["eth0", "eth1"])
def test_del_removes_veth_routes_and_rules(vpc: Vpc, node: DaemonProcess, eni: int) -> None:
    start_node(vpc, node)
    earlier = add_pods(vpc, node, 3 if eni else 0)
    before = snapshot(vpc.node)
    pod = add_pod(vpc, node)
    assert pod.eni.device_index == eni
    wired = snapshot(vpc.node)
    assert pod.host_veth in wired["links"] - before["links"]
    done = cni("DEL", node, pod)
    assert done.code == 0 and done.stdout == "", done
    assert_torn_down(vpc, node, before, pod.ns)
    assert links(pod.ns).keys() == {"lo"}, "the pod's eth0 went with its veth"
    again = cni("DEL", node, pod)
    assert again.code == 0, again
    assert node.get("/v1/pool")["assigned"] == len(earlier)


def test_del_after_the_netns_is_gone(vpc: Vpc, node: DaemonProcess) -> None:
    start_node(vpc, node)
    pods = add_pods(vpc, node, 4)
    before = snapshot(vpc.node)
    pod = add_pod(vpc, node)  # on eth1: a from-rule too
    assert pod.eni.device_index == 1
    netns.delete(pod.ns)
    done = cni("DEL", node, pod)
    assert done.code == 0 and done.stdout == "", fail(f"DEL: {done}", vpc, node)
    assert_torn_down(vpc, node, before)
    assert node.get("/v1/pool")["assigned"] == len(pods)


def test_check_passes_then_fails_when_a_route_is_gone(vpc: Vpc, node: DaemonProcess) -> None:
    start_node(vpc, node)
    pods = add_pods(vpc, node, 3)
    for pod in pods:
        done = cni("CHECK", node, pod)
        assert done.code == 0 and done.stdout == "", fail(f"CHECK {pod.cid}: {done}", vpc, node, pod.ns)
    damages = [
        ("pod default route", lambda p: netns.ip(p.ns, "route", "del", "default")),
        ("host /32 route", lambda p: netns.ip(vpc.node, "route", "del", f"{p.ip}/32", "dev", p.host_veth)),
        (
            "rule prio 512",
            lambda p: netns.ip(vpc.node, "rule", "del", "to", p.ip, "lookup", "main", "prio", "512"),
        ),
    ]
    passed = []
    for pod, (what, damage) in zip(pods, damages, strict=True):
        damage(pod)
        done = cni("CHECK", node, pod)
        if done.code == 0:
            passed.append(what)
        else:
            assert_cni_failure(done)
    assert not passed, fail(
        f"CHECK passed although {', '.join(passed)} was deleted", vpc, node, *(p.ns for p in pods)
    )


# --- 7. a failed ADD ------------------------------------------------------------------------------


@pytest.mark.parametrize("how", ["missing-netns", "not-a-netns", "ifname-taken", "default-route-taken"])
def test_failed_add_undoes_everything(vpc: Vpc, node: DaemonProcess, tmp_path: Path, how: str) -> None:
    start_node(vpc, node)
    before = snapshot(vpc.node)
    if how == "missing-netns":
        path = "/var/run/netns/cc-no-such-netns"
    elif how == "not-a-netns":
        path = str(tmp_path / "not-a-netns")
        Path(path).write_text("")
    elif how == "ifname-taken":
        ns = vpc.new_pod()
        netns.ip(ns, "link", "add", "eth0", "type", "veth", "peer", "name", "other0")
        path = f"/var/run/netns/{ns}"
    else:
        # The veth, its address and the pod's gateway route get made; its default route cannot be:
        # everything made so far has to be undone.
        ns = vpc.new_pod()
        netns.ip(ns, "link", "add", "other0", "type", "veth", "peer", "name", "other1")
        netns.ip(ns, "link", "set", "other0", "up")
        netns.ip(ns, "route", "add", "default", "dev", "other0")
        path = f"/var/run/netns/{ns}"
    done = shim("ADD", netconf(node.socket), cid="ctr-doomed", netns=path)
    assert_cni_failure(done)
    after = snapshot(vpc.node)
    assert after == before, fail(f"failed ADD left {_diff(before, after)}", vpc, node)
    assert node.get("/v1/pool")["assigned"] == 0
    assert not [a for a in node.get("/v1/assignments") if a["container_id"] == "ctr-doomed"]
    pod = add_pod(vpc, node)  # the node still wires pods
    assert pod.eni.device_index == 0


# --- 8. restart -----------------------------------------------------------------------------------


def test_restart_keeps_pods_and_removes_strays(vpc: Vpc, node: DaemonProcess) -> None:
    start_node(vpc, node)
    pods = add_pods(vpc, node, 4)
    a, b = pods[0], pods[3]  # eth0, eth1
    node.kill()
    stray_pod = vpc.new_pod()
    stray_veth = host_veth_name("ctr-nobody")
    netns.ip(vpc.node, "link", "add", stray_veth, "type", "veth", "peer", "name", "eth0", "netns", stray_pod)
    netns.ip(vpc.node, "link", "set", stray_veth, "up")
    netns.ip(vpc.node, "rule", "add", "to", STRAY_IP, "lookup", "main", "prio", "512")
    node.start()
    wait_eth1(vpc, node)

    def strays() -> list[str]:
        left = [stray_veth] if stray_veth in links(vpc.node) else []
        return left + [r for r in rules(vpc.node) if f"to {STRAY_IP} " in r + " "]

    try:
        wait_for("strays removed", lambda: not strays(), timeout=10)
    except AssertionError:
        raise AssertionError(fail(f"after restart, still there: {strays()}", vpc, node)) from None
    servers = [EchoServer(ns) for ns in (vpc.vpc_peer, vpc.outside, a.ns, b.ns)]
    try:
        assert both(a.ns, VPC_PEER) == {a.ip} and both(b.ns, VPC_PEER) == {b.ip}
        assert both(vpc.vpc_peer, a.ip) == {VPC_PEER} and both(vpc.vpc_peer, b.ip) == {VPC_PEER}
        assert both(a.ns, b.ip) == {a.ip}
        assert both(b.ns, OUTSIDE_PEER) == {vpc.node_ip}
    except AssertionError as exc:
        raise AssertionError(fail(f"after restart: {exc}", vpc, node, a.ns, b.ns)) from None
    finally:
        for s in servers:
            s.close()
    for pod in (a, b):
        assert cni("CHECK", node, pod).code == 0
    assert add_pod(vpc, node).eni.device_index == 1  # pods[1:3] still hold eth0's other two


def assert_torn_down(vpc: Vpc, node: DaemonProcess, before: dict[str, set[str]], *pods: str) -> None:
    """Routes and rules as before DEL when it answers; the host veth gone within 2 s (the datapath
    deletes it just after answering, and a deleted netns takes its veth pair down asynchronously)."""
    after = snapshot(vpc.node)
    assert after["routes"] == before["routes"] and after["rules"] == before["rules"], fail(
        f"DEL left {_diff(before, after)}", vpc, node, *pods
    )
    try:
        wait_for("the host veth to go", lambda: snapshot(vpc.node) == before, timeout=2)
    except AssertionError:
        raise AssertionError(
            fail(f"DEL left {_diff(before, snapshot(vpc.node))}", vpc, node, *pods)
        ) from None


def _diff(before: dict[str, set[str]], after: dict[str, set[str]]) -> str:
    out = []
    for key, was in before.items():
        for line in sorted(after[key] - was):
            out.append(f"+{key}: {line}")
        for line in sorted(was - after[key]):
            out.append(f"-{key}: {line}")
    return "; ".join(out) or "nothing"


def test_gc_removes_host_leftovers_no_assignment_owns(vpc: Vpc, node: DaemonProcess) -> None:
    """CNI GC: attachments the runtime no longer knows are torn down, and so are strays left while
    the daemon was running (a veth named like ours, a pod rule for an address nobody holds)."""
    start_node(vpc, node)
    kept, dropped = add_pod(vpc, node), add_pod(vpc, node)
    stray_pod = vpc.new_pod()
    stray_veth = host_veth_name("ctr-nobody")
    netns.ip(vpc.node, "link", "add", stray_veth, "type", "veth", "peer", "name", "eth0", "netns", stray_pod)
    netns.ip(vpc.node, "rule", "add", "to", STRAY_IP, "lookup", "main", "prio", "512")
    conf = netconf(node.socket, cniVersion="1.1.0")
    conf["cni.dev/valid-attachments"] = [{"containerID": kept.cid, "ifname": "eth0"}]
    done = shim("GC", conf, cid="", netns="")
    assert done.code == 0, done
    left = links(vpc.node)
    wait_for("the dropped pod's veth to go", lambda: dropped.host_veth not in links(vpc.node), timeout=5)
    assert stray_veth not in left
    assert not [r for r in rules(vpc.node) if f"to {STRAY_IP} " in r + " " or f"to {dropped.ip} " in r + " "]
    assert kept.host_veth in links(vpc.node)
    assert cni("CHECK", node, kept).code == 0


def test_gc_running_during_adds_never_takes_a_pod_being_wired_for_a_leftover(
    vpc: Vpc, node: DaemonProcess
) -> None:
    start_node(vpc, node)
    namespaces = [vpc.new_pod() for _ in range(5)]
    cids = [f"ctr-{ns}" for ns in namespaces]
    conf = netconf(node.socket, cniVersion="1.1.0")
    conf["cni.dev/valid-attachments"] = [{"containerID": c, "ifname": "eth0"} for c in cids]
    stop = threading.Event()
    gcs: list[int] = []

    def collect() -> None:
        while not stop.is_set():
            gcs.append(shim("GC", conf, cid="", netns="").code)

    collector = threading.Thread(target=collect)
    collector.start()
    try:
        with ThreadPoolExecutor(5) as pool:
            added = list(
                pool.map(
                    lambda i: shim(
                        "ADD", netconf(node.socket), cid=cids[i], netns=f"/var/run/netns/{namespaces[i]}"
                    ),
                    range(5),
                )
            )
    finally:
        stop.set()
        collector.join(30)
    assert [d.code for d in added] == [0] * 5, added
    assert gcs and set(gcs) == {0}, gcs
    for cid, ns, done in zip(cids, namespaces, added, strict=True):
        ip = done.json["ips"][0]["address"].split("/")[0]
        pod = Pod(ns, cid, ip, vpc.eni_holding(ip), done.json)
        assert pod.host_veth in links(vpc.node), fail(f"GC took {cid}'s veth", vpc, node, ns)
        assert cni("CHECK", node, pod).code == 0
