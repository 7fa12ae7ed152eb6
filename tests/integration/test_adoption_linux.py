"""A node switched in place from aws-vpc-cni, DATAPATH=linux (docs/adoption-aws-vpc-cni.md): the test
builds aws-vpc-cni's layout for two running pods in the simulated VPC's node namespace (host veth
``eni`` + sha1("<ns>.<pod>")[:11], its /32 route, rules 512 and, on the secondary ENI, 1536) and its
ipam.json; the daemon starts with no checkpoint of its own, adopts them, renames their veths to its own
names, and the pods keep talking; CHECK and DEL then work on them through the CNI plugin."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.fakes import netns
from tests.fakes.awsvpc import checkpoint_json, row
from tests.fakes.vpc import EchoServer, Vpc, host_veth_name, links, tcp_talk, udp_talk, vpc_topology

from .conftest import DaemonProcess
from .test_linux_datapath import fail, node_env, routes, rules, start_node
from .test_shim_exec import netconf, shim

pytestmark = [
    pytest.mark.integration,
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="network namespaces need root"),
]

POD_GATEWAY = "169.254.1.1"


@dataclass
class LegacyPod:
    """A pod as aws-vpc-cni wired it."""

    ns: str
    cid: str
    namespace: str
    name: str
    ip: str
    table: int | None  # rule 1536's table: None on the primary ENI
    prefix: str = "ccni"  # our VETH_PREFIX

    @property
    def legacy_veth(self) -> str:
        return "eni" + hashlib.sha1(f"{self.namespace}.{self.name}".encode()).hexdigest()[:11]

    @property
    def our_veth(self) -> str:
        return host_veth_name(self.cid, prefix=self.prefix)


def wire_like_aws_vpc_cni(vpc: Vpc, pod: LegacyPod) -> None:
    """cmd/routed-eni-cni-plugin/driver/driver.go's layout, with ip(8)."""
    node = vpc.node
    netns.ip(node, "link", "add", pod.legacy_veth, "type", "veth", "peer", "name", "eth0", "netns", pod.ns)
    netns.ip(node, "link", "set", pod.legacy_veth, "up")
    host_mac = links(node)[pod.legacy_veth]["address"]
    netns.ip(pod.ns, "link", "set", "eth0", "up")
    netns.ip(pod.ns, "addr", "add", f"{pod.ip}/32", "dev", "eth0")
    netns.ip(pod.ns, "route", "add", f"{POD_GATEWAY}/32", "dev", "eth0", "scope", "link")
    netns.ip(pod.ns, "route", "add", "default", "via", POD_GATEWAY, "dev", "eth0")
    netns.ip(pod.ns, "neigh", "add", POD_GATEWAY, "lladdr", host_mac, "dev", "eth0", "nud", "permanent")
    netns.ip(node, "route", "add", f"{pod.ip}/32", "dev", pod.legacy_veth, "scope", "link")
    netns.ip(node, "rule", "add", "to", pod.ip, "lookup", "main", "prio", "512")
    if pod.table is not None:
        netns.ip(node, "rule", "add", "from", pod.ip, "lookup", str(pod.table), "prio", "1536")


def aws_checkpoint(pods: list[LegacyPod]) -> str:
    return checkpoint_json(*(row(p.ip, p.cid, namespace=p.namespace, name=p.name) for p in pods))


def cni(command: str, daemon: DaemonProcess, pod: LegacyPod) -> tuple[int, str]:
    prev = {"cniVersion": "1.0.0", "ips": [{"address": f"{pod.ip}/32", "gateway": POD_GATEWAY}]}
    done = shim(
        command, netconf(daemon.socket, prevResult=prev), cid=pod.cid, netns=f"/var/run/netns/{pod.ns}"
    )
    return done.code, f"{done}"


@pytest.fixture(params=["ccni", "eni"], ids=["our-prefix", "aws-nodes-prefix-kept"])
def legacy_node(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Vpc, DaemonProcess, Path]]:
    """VETH_PREFIX=eni (aws-node's AWS_VPC_K8S_CNI_VETHPREFIX kept): aws-node's veths look like ours to
    the leftover sweep, so the renaming must come first."""
    with vpc_topology(tmp_path / "sim" / "state.json") as v:
        legacy = tmp_path / "aws-node" / "ipam.json"
        env = node_env(tmp_path, v, AWS_VPC_CNI_CHECKPOINT=str(legacy), VETH_PREFIX=request.param)
        d = DaemonProcess(dir=tmp_path, env=env, netns=v.node)
        try:
            yield v, d, legacy
        finally:
            if d.proc is not None and d.proc.poll() is None:
                d.kill()
        assert v.agent is not None and not v.agent.errors, v.agent.errors


def test_aws_vpc_cni_pods_are_adopted_renamed_and_keep_talking(
    legacy_node: tuple[Vpc, DaemonProcess, Path],
) -> None:
    vpc, node, legacy = legacy_node
    # A first start on the fresh node brings up eth1 and the pool; its addresses are what aws-node held.
    start_node(vpc, node)
    assert node.stop() == 0
    for path in node.checkpoint.parent.glob(node.checkpoint.name + "*"):
        if not path.name.endswith(".lock"):
            path.unlink()
    by_device = {e.device_index: e for e in vpc.enis()}
    prefix = node.env["VETH_PREFIX"]
    pods = [
        LegacyPod(vpc.new_pod(), "aaaa0001", "default", "web-0", by_device[0].ips[0], None, prefix),
        LegacyPod(vpc.new_pod(), "aaaa0002", "shop", "cart-7d9f", by_device[1].ips[0], 2, prefix),
    ]
    for pod in pods:
        wire_like_aws_vpc_cni(vpc, pod)
    # deleted while no daemon ran: its row stays in ipam.json, its veth is gone
    deleted = LegacyPod("", "aaaa0003", "default", "deleted-1", by_device[0].ips[1], None, prefix)
    legacy.parent.mkdir()
    legacy.write_text(aws_checkpoint([*pods, deleted]))
    servers = [EchoServer(p.ns) for p in pods]
    try:
        a, b = pods
        assert {tcp_talk(a.ns, b.ip), udp_talk(a.ns, b.ip)} == {a.ip}, "aws-vpc-cni's layout works before"

        start_node(vpc, node)
        view = node.get("/v1/adoption")
        assert (view["adopted"], view["pods"], view["held"], view["gone"]) == (True, 2, 2, 1), view
        assert deleted.ip not in {r["ip"] for r in node.get("/v1/assignments")}, "a gone pod is not adopted"
        assert legacy.with_name("ipam.json.adopted-by-cloud-cni").exists() and not legacy.exists()
        names = links(vpc.node)
        main = routes(vpc.node)
        for pod in pods:
            assert pod.our_veth in names and pod.legacy_veth not in names, fail(
                "veth renamed", vpc, node, pod.ns
            )
            assert f"{pod.ip} dev {pod.our_veth} scope link" in main, fail("route", vpc, node, pod.ns)
            assert f"512: from all to {pod.ip} lookup main" in rules(vpc.node)
        assert f"1536: from {b.ip} lookup 2" in rules(vpc.node)
        renamed = [e for e in node.events() if e.get("event") == "adopted_pod_veth_renamed"]
        assert sorted(e["device"] for e in renamed) == sorted(p.legacy_veth for p in pods)

        for src, dst in ((a, b), (b, a)):
            seen = {tcp_talk(src.ns, dst.ip), udp_talk(src.ns, dst.ip)}
            assert seen == {src.ip}, fail(f"{src.ip} -> {dst.ip}", vpc, node, src.ns, dst.ns)

        for pod in pods:
            code, out = cni("CHECK", node, pod)
            assert code == 0, fail(f"CHECK {pod.cid}: {out}", vpc, node, pod.ns)

        # a restart: nothing to adopt or rename again, the pods stay wired
        assert node.stop() == 0
        start_node(vpc, node)
        assert node.get("/v1/adoption") == {"adopted": False}
        assert not [e for e in node.events() if e.get("event") == "adopted_pod_veth_renamed"]
        assert {tcp_talk(a.ns, b.ip)} == {a.ip}

        for pod in pods:
            code, out = cni("DEL", node, pod)
            assert code == 0, fail(f"DEL {pod.cid}: {out}", vpc, node, pod.ns)
        names = links(vpc.node)
        assert not {p.our_veth for p in pods} & set(names)
        assert not [r for r in rules(vpc.node) if any(p.ip in r for p in pods)]
        assert node.get("/v1/assignments") == []
    finally:
        for s in servers:
            s.close()
