"""``ipamd.datapath.linux.rtnl`` against pyroute2 in the kernel: the same requests made through each,
in two node namespaces with a pod namespace each, must leave the kernel holding the same links,
addresses, routes, neighbours and rules; then the same deletions must leave the same again. Also
the errno each answers with, which the datapath acts on (EEXIST, ENOENT)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.fakes import netns

pytestmark = [
    pytest.mark.integration,
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="network namespaces need root"),
]

ROOT = Path(__file__).resolve().parents[2]
HOST_MAC, POD_MAC = "02:aa:00:00:00:01", "02:aa:00:00:00:02"

# Runs inside a node netns: the requests of a pod's wiring, through pyroute2 (as the datapath made
# them before rtnl) or through rtnl, then the deletions, one phase per argv[3].
SCRIPT = r"""
import errno, json, os, sys
from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError
from ipamd.datapath.linux import netlink, rtnl

mode, pod_netns, phase = sys.argv[1:4]
fd = netlink.open_netns(pod_netns)
HOST, POD, IP, IP2 = "enitest0000a", "eth0", "10.0.1.5", "10.0.1.6"
HOST_MAC, POD_MAC = "02:aa:00:00:00:01", "02:aa:00:00:00:02"
errors = {}

def code(fn):
    try:
        fn()
        return 0
    except NetlinkError as exc:
        return exc.code

if mode == "pyroute2":
    node = IPRoute()
    if phase == "wire":
        node.link("add", ifname=HOST, kind="veth", address=HOST_MAC, mtu=9001, state="up",
                  peer={"ifname": POD, "net_ns_fd": fd, "address": POD_MAC, "mtu": 9001})
        index = node.link_lookup(ifname=HOST)[0]
        with netlink.entered(fd), IPRoute() as pod:
            i = pod.link_lookup(ifname=POD)[0]
            pod.link("set", index=i, state="up")
            pod.addr("add", index=i, address=IP, prefixlen=32)
            pod.route("add", dst="169.254.1.1/32", oif=i, scope=253)
            pod.route("add", dst="0.0.0.0/0", gateway="169.254.1.1", oif=i)
            pod.neigh("add", dst="169.254.1.1", lladdr=HOST_MAC, ifindex=i, state=0x80)
        node.route("add", dst=f"{IP}/32", oif=index, scope=253)
        node.route("add", dst=f"{IP2}/32", oif=index, scope=253, table=300)
        node.rule("add", dst=IP, dst_len=32, table=254, priority=512)
        node.rule("add", src=IP, src_len=32, table=2, priority=1536)
        node.rule("add", src=IP2, src_len=32, table=300, priority=1536)
        errors["veth again"] = code(lambda: node.link("add", ifname=HOST, kind="veth",
                                    peer={"ifname": "eth9", "net_ns_fd": fd}))
        errors["rule again"] = code(lambda: node.rule("add", dst=IP, dst_len=32, table=254, priority=512))
    elif phase == "detach":
        index = node.link_lookup(ifname=HOST)[0]
        node.rule("del", src=IP, src_len=32, table=0, priority=1536)
        node.rule("del", dst=IP, dst_len=32, table=254, priority=512)
        node.route("del", dst=f"{IP}/32", oif=index, scope=253)
        node.route("del", dst=f"{IP2}/32", oif=index, scope=253, table=300)
        errors["rule gone"] = code(lambda: node.rule("del", src=IP, src_len=32, table=0, priority=1536))
        errors["route gone"] = code(lambda: node.route("del", dst=f"{IP}/32", oif=index, scope=253))
    else:
        index = node.link_lookup(ifname=HOST)[0]
        node.link("del", index=index)
        errors["link gone"] = code(lambda: node.link("del", index=index))
else:
    node = rtnl.Rtnl()
    if phase == "wire":
        node.add_veth(HOST, HOST_MAC, 9001, peer=POD, peer_netns_fd=fd, peer_address=POD_MAC)
        index = netlink._index(HOST)
        with netlink.entered(fd):
            pod = rtnl.Rtnl()
            i = netlink._index(POD)
        pod.set_up(i)
        pod.add_address(i, IP, 32)
        pod.add_route("169.254.1.1", 32, i, scope=253)
        pod.add_route("0.0.0.0", 0, i, scope=0, gateway="169.254.1.1")
        pod.add_neighbour(i, "169.254.1.1", HOST_MAC, 0x80)
        node.add_route(IP, 32, index, scope=253)
        node.add_route(IP2, 32, index, scope=253, table=300)
        node.add_rule(512, 254, dst=IP)
        node.add_rule(1536, 2, src=IP)
        node.add_rule(1536, 300, src=IP2)
        errors["veth again"] = code(lambda: node.add_veth(HOST, HOST_MAC, 1500, peer="eth9",
                                    peer_netns_fd=fd, peer_address=POD_MAC))
        errors["rule again"] = code(lambda: node.add_rule(512, 254, dst=IP))
    elif phase == "detach":
        index = netlink._index(HOST)
        node.delete_rule(1536, 0, src=IP)
        node.delete_rule(512, 254, dst=IP)
        node.delete_route(IP, 32, index, scope=253)
        node.delete_route(IP2, 32, index, scope=253, table=300)
        errors["rule gone"] = code(lambda: node.delete_rule(1536, 0, src=IP))
        errors["route gone"] = code(lambda: node.delete_route(IP, 32, index, scope=253))
    else:
        index = netlink._index(HOST)
        node.delete_link(index)
        errors["link gone"] = code(lambda: node.delete_link(index))
print(json.dumps(errors))
"""

VOLATILE = {
    "ifindex", "link_index", "link_netnsid", "stats", "stats64", "valid_life_time",
    "preferred_life_time", "operstate", "inet6_addr_gen_mode", "linkmode", "group", "qdisc",
    "txqlen", "num_tx_queues", "num_rx_queues", "gso_max_size", "gso_max_segs", "gro_max_size",
    "tso_max_size", "tso_max_segs", "gso_ipv4_max_size", "gro_ipv4_max_size", "parentbus",
    "parentdev", "link", "used", "confirmed", "updated", "probes", "refcnt",
}  # fmt: skip


def scrub(value: Any) -> Any:
    if isinstance(value, dict):
        if isinstance(value.get("flags"), list):  # carrier follows the peer asynchronously
            value = {**value, "flags": [f for f in value["flags"] if f not in ("NO-CARRIER", "LOWER_UP")]}
        return {k: scrub(v) for k, v in sorted(value.items()) if k not in VOLATILE}
    if isinstance(value, list):
        return sorted((scrub(v) for v in value), key=lambda v: json.dumps(v, sort_keys=True))
    return value


def state(ns: str) -> dict[str, Any]:
    def dump(*args: str) -> Any:
        return scrub(json.loads(netns.ip(ns, "-j", "-d", *args) or "[]"))

    return {
        "links": dump("link", "show"),
        "addresses": dump("-4", "addr", "show"),
        "routes": dump("-4", "route", "show", "table", "all"),
        "rules": dump("-4", "rule", "show"),
        "neighbours": dump("-4", "neigh", "show", "nud", "permanent"),
    }


def run(node: str, mode: str, pod: str, phase: str) -> dict[str, int]:
    done = subprocess.run(
        ["ip", "netns", "exec", node, sys.executable, "-c", SCRIPT, mode, f"/var/run/netns/{pod}", phase],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    result: dict[str, int] = json.loads(done.stdout)
    return result


def test_rtnl_leaves_the_kernel_as_pyroute2_does() -> None:
    with netns.namespaces("rtnode", "rtpod", "rtnode", "rtpod") as (node_a, pod_a, node_b, pod_b):
        for phase in ("wire", "detach", "delete"):
            errors_a = run(node_a, "pyroute2", pod_a, phase)
            errors_b = run(node_b, "rtnl", pod_b, phase)
            assert errors_b == errors_a, phase
            assert state(node_b) == state(node_a), phase
            assert state(pod_b) == state(pod_a), phase
            if phase == "wire":
                assert errors_b == {"veth again": 17, "rule again": 17}
                links = {link["ifname"]: link for link in state(node_b)["links"]}
                assert links["enitest0000a"]["address"] == HOST_MAC
                assert links["enitest0000a"]["mtu"] == 9001
                pod_links = {link["ifname"]: link for link in state(pod_b)["links"]}
                assert pod_links["eth0"]["address"] == POD_MAC
                assert {r.get("table") for r in state(node_b)["rules"]} >= {"2", "300"}
            elif phase == "detach":
                assert errors_b == {"rule gone": 2, "route gone": 3}
            else:
                assert errors_b == {"link gone": 19}
                assert "eth0" not in str(state(pod_b)["links"])  # the peer went with it
