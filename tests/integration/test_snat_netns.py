"""SNAT with real packets, for each backend (nftables, iptables-legacy, iptables-nft).

Topology, all in namespaces made here (nothing reaches the host's interfaces)::

    pod   eth0 10.0.0.20/32, default via 169.254.1.1 (a permanent neighbour: the host veth's MAC)
      |
    node  ccni0123456789a; eth0 10.0.0.10/24 (primary); eth1 10.0.0.11/24 (secondary, the pod's)
      |  eth0 -- r0 10.0.0.1/24, eth1 -- r1 10.0.0.1/32
    router (the VPC)  r2 198.51.100.1/24, 10.0.8.1/24, 192.0.2.1/24
      |
    peer  eth0 198.51.100.10 (outside), 10.0.8.10 (in the VPC), 192.0.2.10 (excluded)

The node routes as the Linux datapath does: ``to 10.0.0.20 lookup main`` (512), ``fwmark 0x80/0x80
lookup main`` (1024), ``from 10.0.0.20 lookup 2`` (1536; table 2: default via eth1). The router
has strict rp_filter and reaches 10.0.0.20 only by r1, which models the VPC's source/destination
check: a packet with the pod's address leaving by the primary interface, or with the node's primary
address leaving by the secondary one, is dropped. A probe therefore succeeds only if the mark
steered the connection's very first packet and the SNAT matched it.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from ipamd.datapath.linux.snat import MARK, TABLE, Snat, SnatConfig, choose_backend
from tests.fakes import netns

pytestmark = [
    pytest.mark.integration,
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root for network namespaces"),
]

BACKENDS = ["nftables", "iptables-legacy", "iptables-nft"]
PRIMARY = "10.0.0.10"
SECONDARY = "10.0.0.11"
POD = "10.0.0.20"
OUTSIDE = "198.51.100.10"
VPC_PEER = "10.0.8.10"
EXCLUDED = "192.0.2.10"
HOST_VETH = "ccni0123456789a"
HOST_MAC = "02:cc:00:00:00:01"
PORT = 7000
CFG = SnatConfig(PRIMARY, ("10.0.0.0/16", "192.0.2.0/24"))

SERVER = r"""
import selectors, socket, sys
sel = selectors.DefaultSelector()
for addr in sys.argv[2:]:
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    u.bind((addr, int(sys.argv[1])))
    sel.register(u, selectors.EVENT_READ, "udp")
    t = socket.socket()
    t.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    t.bind((addr, int(sys.argv[1])))
    t.listen(16)
    sel.register(t, selectors.EVENT_READ, "tcp")
print("ready", flush=True)
while True:
    for key, _ in sel.select():
        if key.data == "udp":
            data, peer = key.fileobj.recvfrom(512)
            key.fileobj.sendto(peer[0].encode(), peer)
        else:
            conn, peer = key.fileobj.accept()
            conn.sendall(peer[0].encode())
            conn.close()
"""

CLIENT = r"""
import json, socket, sys
out = []
for probe in sys.argv[2:]:
    proto, host = probe.split(":")
    try:
        if proto == "udp":
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.settimeout(1.0)
            s.sendto(b"hi", (host, int(sys.argv[1])))
            seen = s.recvfrom(512)[0].decode()
        else:
            s = socket.create_connection((host, int(sys.argv[1])), timeout=1.0)
            seen = s.recv(512).decode()
        s.close()
    except OSError as exc:
        seen = "failed: " + type(exc).__name__
    out.append(seen)
print(json.dumps(out))
"""


@dataclass
class Net:
    node: str
    pod: str
    router: str
    peer: str

    def probe(self, *probes: str) -> list[str]:
        """From the pod, for each "udp:<ip>" / "tcp:<ip>": the source address the peer saw."""
        out = netns.run(self.pod, sys.executable, "-I", "-c", CLIENT, str(PORT), *probes).stdout
        return list(json.loads(out))


def _sysctl(ns: str, *settings: str) -> None:
    netns.run(ns, "sysctl", "-q", "-w", *settings)


@pytest.fixture
def net() -> Iterator[Net]:
    with netns.namespaces("snode", "spod", "srouter", "speer") as (node, pod, router, peer):
        ip = netns.ip
        netns.veth(node, HOST_VETH, pod, "eth0", a_mac=HOST_MAC)
        netns.veth(node, "eth0", router, "r0")
        netns.veth(node, "eth1", router, "r1")
        netns.veth(router, "r2", peer, "eth0")
        # pod: the routed /32 of the datapath; a permanent neighbour for the link-local gateway
        ip(pod, "addr", "add", f"{POD}/32", "dev", "eth0")
        ip(pod, "route", "add", "169.254.1.1", "dev", "eth0", "scope", "link")
        ip(pod, "route", "add", "default", "via", "169.254.1.1", "dev", "eth0")
        ip(pod, "neigh", "add", "169.254.1.1", "lladdr", HOST_MAC, "dev", "eth0", "nud", "permanent")
        # node: primary eth0 (main table), secondary eth1 (table 2, the pod's interface)
        ip(node, "addr", "add", f"{PRIMARY}/24", "dev", "eth0")
        ip(node, "addr", "add", f"{SECONDARY}/24", "dev", "eth1", "noprefixroute")
        ip(node, "route", "add", "default", "via", "10.0.0.1", "dev", "eth0")
        ip(node, "route", "add", f"{POD}/32", "dev", HOST_VETH, "scope", "link")
        ip(node, "route", "add", "10.0.0.1", "dev", "eth1", "scope", "link", "table", "2")
        ip(node, "route", "add", "default", "via", "10.0.0.1", "dev", "eth1", "table", "2")
        ip(node, "rule", "add", "to", POD, "lookup", "main", "priority", "512")
        ip(node, "rule", "add", "fwmark", f"{MARK:#x}/{MARK:#x}", "lookup", "main", "priority", "1024")
        ip(node, "rule", "add", "from", POD, "lookup", "2", "priority", "1536")
        _sysctl(
            node, "net.ipv4.ip_forward=1", "net.ipv4.conf.all.rp_filter=0", "net.ipv4.conf.eth0.rp_filter=2"
        )
        # router: the VPC. 10.0.0.20 lives behind the secondary interface; strict rp_filter drops
        # what a VPC's source/destination check drops.
        ip(router, "addr", "add", "10.0.0.1/24", "dev", "r0")
        ip(router, "addr", "add", "10.0.0.1/32", "dev", "r1")
        ip(router, "route", "add", f"{SECONDARY}/32", "dev", "r1")
        ip(router, "route", "add", f"{POD}/32", "via", SECONDARY, "dev", "r1")
        for cidr in ("198.51.100.1/24", "10.0.8.1/24", "192.0.2.1/24"):
            ip(router, "addr", "add", cidr, "dev", "r2")
        _sysctl(router, "net.ipv4.ip_forward=1", "net.ipv4.conf.all.rp_filter=1")
        # peer: outside the VPC, in the VPC, and in an excluded range, on one link
        for cidr in (f"{OUTSIDE}/24", f"{VPC_PEER}/24", f"{EXCLUDED}/24"):
            ip(peer, "addr", "add", cidr, "dev", "eth0")
        ip(peer, "route", "add", "default", "via", "198.51.100.1")
        server = subprocess.Popen(
            [
                "ip",
                "netns",
                "exec",
                peer,
                sys.executable,
                "-I",
                "-c",
                SERVER,
                str(PORT),
                OUTSIDE,
                VPC_PEER,
                EXCLUDED,
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert server.stdout is not None
        try:
            assert server.stdout.readline().strip() == "ready"
            yield Net(node, pod, router, peer)
        finally:
            server.kill()
            server.wait()
            server.stdout.close()
    assert not {node, pod, router, peer} & set(netns.existing())


def _ruleset(ns: str) -> str:
    """Every table of every framework, without counters and timestamps: what 'unchanged' compares.

    Empty base chains are left out: iptables-nft creates a table's built-in chains on first use and
    never deletes them, and an empty chain with policy accept changes nothing.
    """
    nft = netns.run(ns, "nft", "list", "ruleset").stdout
    parts = [re.sub(r"\tchain \S+ \{\n\t\ttype [^\n]*policy accept;\n\t\}\n\n?", "", nft)]
    for variant in ("iptables-legacy", "iptables-nft"):
        parts.append(netns.run(ns, f"{variant}-save").stdout)
    text = "\n".join(parts)
    text = re.sub(r"\[\d+:\d+\]", "[0:0]", text)
    text = re.sub(r"counter packets \d+ bytes \d+", "counter", text)
    return "\n".join(line for line in text.splitlines() if line.strip() and not line.startswith("#"))


def _add_user_rules(ns: str) -> None:
    """Rules of someone else, in the tables and chains our rules share: they must survive."""
    netns.run(
        ns, "nft", "add table ip user; add chain ip user post { type nat hook postrouting priority 50; }"
    )
    netns.run(ns, "nft", "add rule ip user post ip daddr 203.0.113.0/24 counter")
    user = "*nat\n-A POSTROUTING -d 203.0.113.0/24 -j RETURN\nCOMMIT\n"
    user += "*mangle\n-A PREROUTING -i lo -j RETURN\nCOMMIT\n"
    for variant in ("iptables-legacy", "iptables-nft"):
        subprocess.run(
            ["ip", "netns", "exec", ns, f"{variant}-restore", "--noflush"], input=user, text=True, check=True
        )


@pytest.mark.parametrize("backend", BACKENDS)
def test_pod_traffic_leaves_snated_to_the_primary_ip(net: Net, backend: str) -> None:
    # Without our rules the pod egresses by its own (secondary) interface with its own address.
    assert net.probe(f"udp:{OUTSIDE}", f"tcp:{OUTSIDE}") == [POD, POD]

    snat = Snat(backend, netns=net.node)
    snat.apply(CFG)
    assert net.probe(
        f"udp:{OUTSIDE}",
        f"tcp:{OUTSIDE}",
        f"udp:{VPC_PEER}",
        f"tcp:{VPC_PEER}",
        f"udp:{EXCLUDED}",
        f"tcp:{EXCLUDED}",
    ) == [PRIMARY, PRIMARY, POD, POD, POD, POD]

    snat.apply(SnatConfig(PRIMARY, CFG.no_snat_cidrs, external_snat=True))
    assert net.probe(f"udp:{OUTSIDE}", f"tcp:{OUTSIDE}", f"udp:{VPC_PEER}") == [POD, POD, POD]

    # Without the exclusion, 192.0.2.0/24 is outside the VPC as well.
    snat.apply(SnatConfig(PRIMARY, ("10.0.0.0/16",)))
    assert net.probe(f"udp:{EXCLUDED}", f"tcp:{EXCLUDED}", f"udp:{VPC_PEER}") == [PRIMARY, PRIMARY, POD]
    snat.remove()


SERVICE_VPC = "172.20.0.10"  # a ClusterIP whose endpoint is in the VPC
SERVICE_OUT = "172.20.0.11"  # a ClusterIP whose endpoint is outside


@pytest.mark.parametrize("backend", BACKENDS)
def test_service_connections_are_judged_after_dnat(net: Net, backend: str) -> None:
    # kube-proxy's DNAT, in the framework kube-proxy would use alongside each backend, inserted
    # first in nat PREROUTING as kube-proxy does (after our jump was appended).
    Snat(backend, netns=net.node).apply(CFG)
    if backend == "nftables":
        netns.run(
            net.node,
            "nft",
            "add table ip kp; add chain ip kp pre { type nat hook prerouting priority dstnat; }",
        )
        for service, endpoint in ((SERVICE_VPC, VPC_PEER), (SERVICE_OUT, OUTSIDE)):
            netns.run(net.node, "nft", f"add rule ip kp pre ip daddr {service} dnat to {endpoint}")
    else:
        for service, endpoint in ((SERVICE_VPC, VPC_PEER), (SERVICE_OUT, OUTSIDE)):
            dnat = ("-d", service, "-j", "DNAT", "--to-destination", endpoint)
            netns.run(net.node, backend, "-t", "nat", "-I", "PREROUTING", "1", *dnat)
    seen = net.probe(f"udp:{SERVICE_VPC}", f"tcp:{SERVICE_VPC}", f"udp:{SERVICE_OUT}", f"tcp:{SERVICE_OUT}")
    # A Service backed in the VPC keeps the pod's address (its ClusterIP is not in the VPC CIDRs).
    assert seen[:2] == [POD, POD]
    if backend == "nftables":
        # judged by the endpoint kube-proxy chose: outside, so SNATed and out of the primary interface
        assert seen[2:] == [PRIMARY, PRIMARY]
    else:
        # iptables has no hook between DNAT and routing: a DNATed connection is never marked
        assert seen[2:] == [POD, POD]


@pytest.mark.parametrize("backend", BACKENDS)
def test_not_random_fully_and_other_prefix(net: Net, backend: str) -> None:
    snat = Snat(backend, netns=net.node)
    snat.apply(SnatConfig(PRIMARY, CFG.no_snat_cidrs, random_fully=False))
    assert net.probe(f"udp:{OUTSIDE}") == [PRIMARY]
    snat.apply(SnatConfig(PRIMARY, CFG.no_snat_cidrs, veth_prefix="eni"))  # not our pod's veth
    assert net.probe(f"udp:{OUTSIDE}") == [POD]
    snat.remove()


@pytest.mark.parametrize("backend", BACKENDS)
def test_apply_is_idempotent_and_remove_leaves_others_alone(backend: str) -> None:
    with netns.namespaces("snat") as (ns,):
        _add_user_rules(ns)
        before = _ruleset(ns)
        snat = Snat(backend, netns=ns)
        assert snat.matches(SnatConfig(PRIMARY, (), external_snat=True))
        assert not snat.matches(CFG)

        snat.apply(CFG)
        once = _ruleset(ns)
        snat.apply(CFG)
        assert _ruleset(ns) == once
        assert snat.matches(CFG)
        assert not snat.matches(SnatConfig("10.0.0.99", CFG.no_snat_cidrs))
        assert not snat.matches(SnatConfig(PRIMARY, ("10.0.0.0/16",)))
        assert not snat.matches(SnatConfig(PRIMARY, CFG.no_snat_cidrs, veth_prefix="eni"))
        assert not snat.matches(SnatConfig(PRIMARY, CFG.no_snat_cidrs, random_fully=False))
        assert not snat.matches(SnatConfig(PRIMARY, CFG.no_snat_cidrs, external_snat=True))
        assert "203.0.113.0/24" in once and "-i lo -j RETURN" in once

        # Reconfigured in place: overlapping, adjacent and /32 exclusions collapse into one form.
        cidrs = ("10.0.0.0/16", "10.0.3.0/24", "10.3.1.0/24", "10.3.2.0/24", "10.9.9.9/32", "172.16.0.0/12")
        snat.apply(SnatConfig(PRIMARY, cidrs, veth_prefix="eni"))
        assert snat.matches(SnatConfig(PRIMARY, cidrs, veth_prefix="eni"))

        snat.remove()
        snat.remove()
        assert snat.matches(SnatConfig(PRIMARY, (), external_snat=True))
        assert _ruleset(ns) == before


@pytest.mark.parametrize("backend", ["iptables-legacy", "iptables-nft"])
def test_iptables_jumps_are_repaired(backend: str) -> None:
    with netns.namespaces("snat") as (ns,):
        snat = Snat(backend, netns=ns)
        snat.apply(CFG)
        # a duplicate jump, and a chain of ours from an older version with its jump
        stray = "*nat\n-A POSTROUTING -j CLOUD-CNI-SNAT\n:CLOUD-CNI-OLD - [0:0]\n"
        stray += "-A PREROUTING -j CLOUD-CNI-OLD\nCOMMIT\n"
        subprocess.run(
            ["ip", "netns", "exec", ns, f"{backend}-restore", "--noflush"], input=stray, text=True, check=True
        )
        assert not snat.matches(CFG)
        snat.apply(CFG)
        assert snat.matches(CFG)
        save = netns.run(ns, f"{backend}-save", "-t", "nat").stdout
        assert save.count("-j CLOUD-CNI-SNAT") == 1
        assert "CLOUD-CNI-OLD" not in save
        # Someone deletes a rule of ours: not a match any more; apply puts it back.
        netns.run(ns, backend, "-t", "mangle", "-F", "CLOUD-CNI-RESTORE")
        assert not snat.matches(CFG)
        snat.apply(CFG)
        assert snat.matches(CFG)
        snat.remove()


def test_nft_table_is_repaired() -> None:
    with netns.namespaces("snat") as (ns,):
        snat = Snat("nftables", netns=ns)
        snat.apply(CFG)
        netns.run(ns, "nft", f"flush chain ip {TABLE} postrouting")
        assert not snat.matches(CFG)
        snat.apply(CFG)
        assert snat.matches(CFG)
        snat.remove()
        assert netns.run(ns, "nft", "list", "tables").stdout == ""


def test_auto_follows_the_node_and_moves_our_rules() -> None:
    with netns.namespaces("snat") as (ns,):
        assert choose_backend("auto", netns=ns) == "nftables"
        assert choose_backend("iptables", netns=ns) == "iptables-nft"
        first = Snat("auto", netns=ns)
        assert (first.backend, first.variant) == ("nftables", "nftables")
        first.apply(CFG)

        # kube-proxy (iptables-legacy) started after us: the next start follows it, and moves ours.
        netns.run(
            ns, "iptables-legacy", "-t", "nat", "-A", "POSTROUTING", "-d", "203.0.113.0/24", "-j", "RETURN"
        )
        assert choose_backend("auto", netns=ns) == "iptables-legacy"
        assert choose_backend("iptables", netns=ns) == "iptables-legacy"
        second = Snat("auto", netns=ns)
        assert (second.backend, second.variant) == ("iptables", "iptables-legacy")
        second.apply(CFG)
        assert second.matches(CFG)
        assert netns.run(ns, "nft", "list", "tables").stdout == ""
        assert not first.matches(CFG)

        # remove() clears every backend, whichever put rules there.
        Snat("nftables", netns=ns).apply(CFG)
        second.remove()
        assert "CLOUD-CNI" not in netns.run(ns, "iptables-legacy-save").stdout
        assert netns.run(ns, "nft", "list", "tables").stdout == ""


NODE_PORT = 30080


@pytest.mark.parametrize("backend", BACKENDS)
def test_node_port_replies_leave_by_the_primary_interface(net: Net, backend: str) -> None:
    """A NodePort whose pod is on the secondary interface, not masqueraded (externalTrafficPolicy:
    Local): kube-proxy's DNAT to the pod, a client outside the VPC. Without the NodePort marking the
    pod's reply leaves by the secondary interface with the node's primary address (kube-proxy's
    reverse NAT), which the VPC's source/destination check drops; with it, by the primary interface.
    The same with EXTERNAL_SNAT, which installs the NodePort marking alone."""
    if backend == "nftables":
        netns.run(
            net.node,
            "nft",
            "add table ip kp; add chain ip kp pre { type nat hook prerouting priority dstnat; }",
        )
        for proto in ("tcp", "udp"):
            rule = f"ip daddr {PRIMARY} {proto} dport {NODE_PORT} dnat to {POD}:{PORT}"
            netns.run(net.node, "nft", f"add rule ip kp pre {rule}")
    else:
        for proto in ("tcp", "udp"):
            dnat = ("-d", PRIMARY, "-p", proto, "--dport", str(NODE_PORT), "-j", "DNAT")
            netns.run(
                net.node,
                backend,
                "-t",
                "nat",
                "-I",
                "PREROUTING",
                "1",
                *dnat,
                "--to-destination",
                f"{POD}:{PORT}",
            )
    server = subprocess.Popen(
        ["ip", "netns", "exec", net.pod, sys.executable, "-I", "-c", SERVER, str(PORT), POD],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert server.stdout is not None

    def from_outside() -> list[str]:
        argv = [sys.executable, "-I", "-c", CLIENT, str(NODE_PORT), f"tcp:{PRIMARY}", f"udp:{PRIMARY}"]
        return list(json.loads(netns.run(net.peer, *argv).stdout))

    try:
        assert server.stdout.readline().strip() == "ready"
        snat = Snat(backend, netns=net.node)
        snat.apply(CFG)  # SNAT alone: the reply is dropped
        assert from_outside() == ["failed: TimeoutError", "failed: TimeoutError"]
        # The dropped replies left the node's ARP entry for the gateway on eth1 failed (the router's
        # strict rp_filter also refuses an ARP request sent from the primary address by eth1, which
        # the VPC's router would answer): forget it, as it would be retried later anyway.
        netns.ip(net.node, "neigh", "flush", "dev", "eth1")
        with_node_port = SnatConfig(PRIMARY, CFG.no_snat_cidrs, node_port_if="eth0")
        snat.apply(with_node_port)
        assert snat.matches(with_node_port) and not snat.matches(CFG)
        assert from_outside() == [OUTSIDE, OUTSIDE]  # the pod saw the client's own address
        assert net.probe(f"tcp:{OUTSIDE}", f"tcp:{VPC_PEER}") == [PRIMARY, POD]  # SNAT as before
        node_port_only = SnatConfig(PRIMARY, CFG.no_snat_cidrs, external_snat=True, node_port_if="eth0")
        snat.apply(node_port_only)
        assert snat.matches(node_port_only)
        assert from_outside() == [OUTSIDE, OUTSIDE]
        assert net.probe(f"tcp:{OUTSIDE}") == [POD]  # no SNAT
        snat.apply(SnatConfig(PRIMARY, CFG.no_snat_cidrs, external_snat=True))  # nothing of ours
        assert from_outside() == ["failed: TimeoutError", "failed: TimeoutError"]
        snat.remove()
    finally:
        server.kill()
        server.wait()
        server.stdout.close()
