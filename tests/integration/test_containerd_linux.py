"""End to end as kubelet does it, with the pod network wired: containerd's CRI (RunPodSandbox,
StopPodSandbox, RemovePodSandbox) execs the installed plugin from a 1.0.0 conflist, the daemon
(DATAPATH=linux, CLOUD_PROVIDER=sim) wires the pod in the node netns of a simulated VPC
(tests/fakes/vpc.py), and real traffic flows between the pod, the node and a VPC peer.

containerd and the daemon both run in the VPC's node netns, which has no link to the host's real
interfaces; the pods' namespaces are containerd's own.
"""

from __future__ import annotations

import os
import secrets
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from tests.fakes import netns
from tests.fakes.containerd import Containerd, node
from tests.fakes.vpc import VPC_PEER, EchoServer, Vpc, host_veth_name, vpc_topology

from .conftest import DaemonProcess
from .test_linux_datapath import node_env, rules, wait_for

pytestmark = [
    pytest.mark.integration,
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="network namespaces and containerd need root"),
]

TCP_CLIENT = (
    "import socket,sys; s=socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=5);"
    "s.sendall(b'ping\\n'); print(s.recv(200).decode())"
)


class Node:
    def __init__(self, vpc: Vpc, daemon: DaemonProcess, runtime: Containerd) -> None:
        self.vpc, self.daemon, self.runtime = vpc, daemon, runtime

    def assignments(self) -> list[dict[str, Any]]:
        body = self.daemon.get("/v1/assignments")
        return list(body["assignments"] if isinstance(body, dict) else body)

    def pod_rules(self) -> list[str]:
        return [r for r in rules(self.vpc.node) if r.startswith(("512:", "1536:"))]

    def host_veths(self) -> list[str]:
        names = (
            line.split()[0].split("@")[0] for line in netns.ip(self.vpc.node, "-br", "link").splitlines()
        )
        return [n for n in names if n.startswith("ccni")]


@pytest.fixture
def cluster_node(tmp_path: Path, pause_image: Path) -> Iterator[Node]:
    with vpc_topology(tmp_path / "sim" / "state.json", instance_type="m5.large") as vpc:
        daemon = DaemonProcess(
            dir=tmp_path / "d",
            env=node_env(tmp_path / "d", vpc),
            netns=vpc.node,
        )
        (tmp_path / "d").mkdir(exist_ok=True)
        daemon.start(MINIMUM_IP_TARGET="22", WARM_IP_TARGET="2")
        try:
            with node(tmp_path / f"ctrd-{secrets.token_hex(2)}", pause_image, node_netns=vpc.node) as runtime:
                runtime.install_cloud_cni("install-shim")
                runtime.write_conflist(
                    {
                        "cniVersion": "1.0.0",
                        "name": "cloud-cni",
                        "plugins": [{"type": "cloud-cni", "ipamdSocket": daemon.socket}],
                    }
                )
                yield Node(vpc, daemon, runtime)
                assert runtime.forced == [], f"teardown had to force: {runtime.forced}"
        finally:
            if daemon.proc is not None and daemon.proc.poll() is None:
                daemon.stop()
        assert vpc.agent is not None and not vpc.agent.errors, vpc.agent.errors


def test_a_pod_gets_a_pool_ip_and_connectivity_and_stop_remove_release_it(cluster_node: Node) -> None:
    n = cluster_node
    pod = n.runtime.run_pod("web-0")
    held = {a["ip"]: a for a in n.assignments()}
    assert pod.ip in held and held[pod.ip]["container_id"] == pod.sandbox_id
    veth = host_veth_name(pod.sandbox_id)
    assert veth in n.host_veths()
    assert f"512: from all to {pod.ip} lookup main" in rules(n.vpc.node)

    # Real traffic: the VPC peer's echo server sees the pod's own address; the pod answers ICMP
    # from the node and from the VPC peer.
    with EchoServer(n.vpc.vpc_peer):
        done = n.runtime.exec_in_pod_netns(pod, [sys.executable, "-c", TCP_CLIENT, VPC_PEER, "5007"])
    assert done.stdout.split()[0] == pod.ip
    n.runtime.exec_in_node(["ping", "-c", "1", "-W", "2", pod.ip])
    netns.run(n.vpc.vpc_peer, "ping", "-c", "1", "-W", "2", pod.ip)

    n.runtime.stop_pod(pod)  # DEL with the netns
    assert pod.ip not in {a["ip"] for a in n.assignments()}
    assert not [r for r in n.pod_rules() if pod.ip in r]
    wait_for("the host veth to go", lambda: veth not in n.host_veths(), timeout=5)
    n.runtime.remove_pod(pod)  # DEL again, empty netns: succeeds, nothing changes
    assert n.runtime.sandboxes() == []
    assert n.assignments() == []


def test_twenty_pods_in_parallel_leave_nothing_behind(cluster_node: Node) -> None:
    n = cluster_node
    wait_for("the pool to hold 22", lambda: n.daemon.get("/v1/pool")["total"] >= 22, timeout=30)
    with ThreadPoolExecutor(8) as pool:
        pods = list(pool.map(lambda i: n.runtime.run_pod(f"web-{i}"), range(20)))
    ips = [p.ip for p in pods]
    assert len(set(ips)) == 20
    assert {a["ip"] for a in n.assignments()} == set(ips)
    assert len(n.host_veths()) == 20
    enis = {n.vpc.eni_holding(ip).device_index for ip in ips}
    assert len(enis) >= 2, f"20 pods on an m5.large use more than one ENI: {enis}"
    for pod in pods[::5]:  # a sample, on every ENI they landed on
        netns.run(n.vpc.vpc_peer, "ping", "-c", "1", "-W", "2", pod.ip)

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda p: (n.runtime.stop_pod(p), n.runtime.remove_pod(p)), pods))
    assert n.runtime.sandboxes() == []
    assert n.assignments() == []
    assert n.pod_rules() == []
    wait_for("every host veth to go", lambda: n.host_veths() == [], timeout=10)
    assert n.runtime.pod_netns_mounts() == []
    time.sleep(0.2)
    assert n.daemon.get("/v1/pool")["assigned"] == 0
