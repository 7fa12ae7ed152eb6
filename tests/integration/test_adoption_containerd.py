"""A node switched in place from aws-vpc-cni under containerd (docs/adoption-aws-vpc-cni.md), no drain.

Before: the test's containerd (CRI, in a simulated VPC's node netns) runs pods through a conflist named
like aws-vpc-cni's (``10-aws.conflist``, network ``aws-cni``) whose plugin is a script written here
standing for aws-vpc-cni's: on ADD it makes aws-vpc-cni's documented layout (host veth ``eni`` +
sha1("<ns>.<pod>")[:11], the pod's /32 and its 169.254.1.1 gateway with a permanent neighbour entry,
the /32 route in main, rule 512 and, on a secondary ENI, rule 1536) with addresses the sim cloud holds
on the node's ENIs, and appends the pod's row to an ipam.json in the vpc-cni-ipam/1 format.

The switch: 10-aws.conflist goes, ours comes (the plugin as ``cloud-cni install-shim`` lays it down),
our daemon starts (DATAPATH=linux, AWS_VPC_CNI_CHECKPOINT at that ipam.json) and adopts the pods.

After: CHECK through the installed plugin passes for each pod, traffic flows (pod to pod, node to pod,
pod to a VPC peer), a new pod gets another address, and StopPodSandbox/RemovePodSandbox (DEL through
our plugin, with our network name) remove each adopted pod's veth, route and rules and free its address.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from ipamd.migrate.awsvpc import legacy_veth_name
from tests.fakes.containerd import ENV, Containerd, Pod, node
from tests.fakes.vpc import VPC_PEER, EchoServer, Vpc, host_veth_name, links, vpc_topology

from .conftest import DaemonProcess
from .test_containerd_linux import TCP_CLIENT
from .test_linux_datapath import fail, node_env, routes, rules, start_node, wait_for

pytestmark = [
    pytest.mark.integration,
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="network namespaces and containerd need root"),
]

POD_GATEWAY = "169.254.1.1"
AWS_CONFLIST = "10-aws.conflist"
OUR_CONFLIST = "10-cloud-cni.conflist"

# aws-vpc-cni's plugin as far as the layout goes (cmd/routed-eni-cni-plugin/driver/driver.go), with
# ip(8); the address of each pod is chosen by the test (conf "addresses", by "<namespace>/<name>").
AWS_PLUGIN = r"""
import hashlib, json, os, subprocess, sys, time

def ip(*args, netns=None):
    argv = ["ip", *args] if netns is None else ["nsenter", "--net=" + netns, "--", "ip", *args]
    done = subprocess.run(argv, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(" ".join(argv) + ": " + done.stderr.strip())
    return done.stdout

def main():
    command = os.environ["CNI_COMMAND"]
    conf = json.load(sys.stdin)
    if command == "VERSION":
        print(json.dumps({"cniVersion": conf.get("cniVersion", "1.0.0"),
                          "supportedVersions": ["0.4.0", "1.0.0"]}))
        return
    args = dict(kv.split("=", 1) for kv in os.environ.get("CNI_ARGS", "").split(";") if "=" in kv)
    namespace, name = args["K8S_POD_NAMESPACE"], args["K8S_POD_NAME"]
    cid, ifname, pod_netns = os.environ["CNI_CONTAINERID"], os.environ["CNI_IFNAME"], os.environ["CNI_NETNS"]
    veth = conf["vethPrefix"] + hashlib.sha1(f"{namespace}.{name}".encode()).hexdigest()[:11]
    if command != "ADD":  # this stand-in is replaced before any DEL reaches it
        return
    pick = conf["addresses"][f"{namespace}/{name}"]
    addr, table = pick["ip"], pick["table"]
    ip("link", "add", veth, "type", "veth", "peer", "name", ifname, "netns", pod_netns)
    ip("link", "set", veth, "up")
    host_mac = json.loads(ip("-j", "link", "show", veth))[0]["address"]
    ip("link", "set", ifname, "up", netns=pod_netns)
    ip("addr", "add", f"{addr}/32", "dev", ifname, netns=pod_netns)
    ip("route", "add", f"{conf['gateway']}/32", "dev", ifname, "scope", "link", netns=pod_netns)
    ip("route", "add", "default", "via", conf["gateway"], "dev", ifname, netns=pod_netns)
    gateway = conf["gateway"]
    ip("neigh", "add", gateway, "lladdr", host_mac, "dev", ifname, "nud", "permanent", netns=pod_netns)
    pod_mac = json.loads(ip("-j", "link", "show", ifname, netns=pod_netns))[0]["address"]
    ip("route", "add", f"{addr}/32", "dev", veth, "scope", "link")
    ip("rule", "add", "to", addr, "lookup", "main", "prio", "512")
    if table is not None:
        ip("rule", "add", "from", addr, "lookup", str(table), "prio", "1536")
    path = conf["checkpoint"]
    try:
        with open(path) as f:
            doc = json.load(f)
    except FileNotFoundError:
        doc = {"version": "vpc-cni-ipam/1", "allocations": []}
    doc["allocations"].append({
        "networkName": conf["name"], "containerID": cid, "ifName": ifname, "ipv4": addr,
        "allocationTimestamp": time.time_ns(),
        "metadata": {"k8sPodNamespace": namespace, "k8sPodName": name, "interfacesCount": 1},
    })
    with open(path + ".tmp", "w") as f:
        json.dump(doc, f)
    os.replace(path + ".tmp", path)
    print(json.dumps({
        "cniVersion": conf["cniVersion"],
        "interfaces": [{"name": veth, "mac": host_mac},
                       {"name": ifname, "mac": pod_mac, "sandbox": pod_netns}],
        "ips": [{"address": f"{addr}/32", "gateway": conf["gateway"], "interface": 1}],
    }))

try:
    main()
except Exception as exc:
    print(json.dumps({"cniVersion": "1.0.0", "code": 999, "msg": "aws-cni stand-in: " + str(exc)}))
    sys.exit(1)
"""


@dataclass
class Legacy:
    """A pod aws-vpc-cni's stand-in wired, as CRI started it."""

    pod: Pod
    table: int | None  # rule 1536's table: None on the primary ENI

    @property
    def legacy_veth(self) -> str:
        return legacy_veth_name(self.pod.namespace, self.pod.name)

    @property
    def our_veth(self) -> str:
        return host_veth_name(self.pod.sandbox_id)


def install_conflist(runtime: Containerd, filename: str, conf: dict[str, Any], timeout: float = 20.0) -> None:
    """Replace every conflist by ``filename`` (written in place: CRI ignores a file moved in) and wait
    until CRI has loaded exactly it."""
    for other in runtime.conf_dir.iterdir():
        other.unlink()
    with open(runtime.conf_dir / filename, "w") as f:
        f.write(json.dumps(conf, indent=2))

    def loaded() -> bool:
        info = runtime.cri.call("Status", {"verbose": True}).get("info", {})
        networks = json.loads(info.get("cniconfig", "{}")).get("Networks") or []
        sources = [json.loads(n["Config"]["Source"]) for n in networks if n["Config"].get("Source")]
        return [s for s in sources if s.get("name") != "cni-loopback"] == [conf]

    wait_for(f"CRI to load {filename}", loaded, timeout)


def install_aws_stand_in(runtime: Containerd) -> None:
    """bin dir / aws-cni, run with this venv's interpreter, behind the recorder (one line per exec)."""
    plugin = runtime.bin_dir / "aws-cni.real"
    plugin.write_text(f"#!{sys.executable}\n{AWS_PLUGIN}")
    plugin.chmod(0o755)
    runtime.install_recorder("aws-cni", plugin)


def cni_check(runtime: Containerd, conf: dict[str, Any], legacy: Legacy) -> subprocess.CompletedProcess[str]:
    """CHECK as the runtime sends it: the installed plugin, in the node netns, the network's config with
    the pod's last result as prevResult."""
    pod = legacy.pod
    plugin = conf["plugins"][0]
    prev = {"cniVersion": "1.0.0", "ips": [{"address": f"{pod.ip}/32", "gateway": POD_GATEWAY}]}
    stdin = {"cniVersion": conf["cniVersion"], "name": conf["name"], **plugin, "prevResult": prev}
    env = {
        **ENV,
        "CNI_COMMAND": "CHECK",
        "CNI_CONTAINERID": pod.sandbox_id,
        "CNI_NETNS": pod.netns_path,
        "CNI_IFNAME": "eth0",
        "CNI_PATH": str(runtime.bin_dir),
        "CNI_ARGS": f"IgnoreUnknown=1;K8S_POD_NAMESPACE={pod.namespace};K8S_POD_NAME={pod.name}",
    }
    argv = ["nsenter", f"--net={runtime.node_netns_path}", "--", str(runtime.bin_dir / "cloud-cni")]
    return subprocess.run(argv, input=json.dumps(stdin), env=env, capture_output=True, text=True, timeout=60)


def veth_gone(vpc: Vpc, name: str) -> Callable[[], bool]:
    return lambda: name not in links(vpc.node)


def assigned(daemon: DaemonProcess) -> dict[str, dict[str, Any]]:
    body = daemon.get("/v1/assignments")
    return {a["ip"]: a for a in (body["assignments"] if isinstance(body, dict) else body)}


def ping(runtime: Containerd, src: Pod | None, dst: str) -> subprocess.CompletedProcess[str]:
    argv = ["ping", "-c", "1", "-W", "2", dst]
    return (
        runtime.exec_in_node(argv, check=False)
        if src is None
        else runtime.exec_in_pod_netns(src, argv, False)
    )


def talk_to_peer(runtime: Containerd, pod: Pod) -> str:
    done = runtime.exec_in_pod_netns(pod, [sys.executable, "-c", TCP_CLIENT, VPC_PEER, "5007"], check=False)
    return done.stdout.split()[0] if done.returncode == 0 and done.stdout.split() else done.stderr


@pytest.fixture
def switched_node(tmp_path: Path, pause_image: Path) -> Iterator[tuple[Vpc, DaemonProcess, Containerd, Path]]:
    with vpc_topology(tmp_path / "sim" / "state.json") as vpc:
        legacy = tmp_path / "aws-node" / "ipam.json"
        legacy.parent.mkdir()
        (tmp_path / "d").mkdir()
        env = node_env(tmp_path / "d", vpc, AWS_VPC_CNI_CHECKPOINT=str(legacy))
        daemon = DaemonProcess(dir=tmp_path / "d", env=env, netns=vpc.node)
        try:
            with node(tmp_path / f"ctrd-{secrets.token_hex(2)}", pause_image, node_netns=vpc.node) as runtime:
                yield vpc, daemon, runtime, legacy
                assert runtime.forced == [], f"teardown had to force: {runtime.forced}"
        finally:
            if daemon.proc is not None and daemon.proc.poll() is None:
                daemon.stop()
        assert vpc.agent is not None and not vpc.agent.errors, vpc.agent.errors


def test_pods_started_by_aws_vpc_cni_under_containerd_are_adopted_and_deleted_by_cloud_cni(
    switched_node: tuple[Vpc, DaemonProcess, Containerd, Path],
) -> None:
    started = time.monotonic()
    vpc, daemon, runtime, legacy = switched_node
    # The addresses aws-node held: a first start of ours on the fresh node attaches eth1 and fills the
    # pool in the sim cloud; then it stops and its checkpoint goes, as on a node that never ran it.
    start_node(vpc, daemon)
    assert daemon.stop() == 0
    for path in daemon.checkpoint.parent.glob(daemon.checkpoint.name + "*"):
        if not path.name.endswith(".lock"):
            path.unlink()
    by_device = {e.device_index: e for e in vpc.enis()}
    wanted: dict[str, dict[str, Any]] = {
        "default/web-0": {"ip": by_device[0].ips[0], "table": None},
        "shop/cart-7d9f": {"ip": by_device[1].ips[0], "table": by_device[1].device_index + 1},
        "default/api-1": {"ip": by_device[0].ips[1], "table": None},
    }

    # --- before: aws-vpc-cni's conflist and plugin, pods through CRI
    install_aws_stand_in(runtime)
    aws_plugin = {
        "type": "aws-cni",
        "vethPrefix": "eni",
        "gateway": POD_GATEWAY,
        "checkpoint": str(legacy),
        "addresses": wanted,
    }
    install_conflist(
        runtime, AWS_CONFLIST, {"cniVersion": "1.0.0", "name": "aws-cni", "plugins": [aws_plugin]}
    )
    pods = []
    for key in wanted:
        namespace, name = key.split("/")
        pod = runtime.run_pod(name, namespace=namespace)
        pods.append(Legacy(pod, wanted[key]["table"]))
    assert [p.pod.ip for p in pods] == [w["ip"] for w in wanted.values()], "CRI reports the stand-in's result"
    rows = json.loads(legacy.read_text())
    assert rows["version"] == "vpc-cni-ipam/1"
    assert [(r["containerID"], r["networkName"], r["ipv4"]) for r in rows["allocations"]] == [
        (p.pod.sandbox_id, "aws-cni", p.pod.ip) for p in pods
    ]
    names = links(vpc.node)
    before = rules(vpc.node)
    for p in pods:
        assert p.legacy_veth in names, fail(f"aws-vpc-cni's veth for {p.pod.name}", vpc, None)
        assert f"{p.pod.ip} dev {p.legacy_veth} scope link" in routes(vpc.node)
        assert f"512: from all to {p.pod.ip} lookup main" in before
        has_1536 = f"1536: from {p.pod.ip} lookup {p.table}" in before
        assert has_1536 == (p.table is not None), before
    web, cart, api = (p.pod for p in pods)
    assert ping(runtime, web, cart.ip).returncode == 0, fail("aws-vpc-cni's layout works before", vpc, None)

    # --- the switch: aws-node's conflist goes, ours comes, our daemon starts and adopts
    runtime.install_cloud_cni("install-shim", record=True)
    ours = {
        "cniVersion": "1.0.0",
        "name": "cloud-cni",
        "plugins": [{"type": "cloud-cni", "ipamdSocket": daemon.socket}],
    }
    install_conflist(runtime, OUR_CONFLIST, ours)
    assert sorted(p.name for p in runtime.conf_dir.iterdir()) == [OUR_CONFLIST]
    start_node(vpc, daemon)
    view = daemon.get("/v1/adoption")
    assert (view["adopted"], view["pods"], view["held"], view["gone"]) == (True, 3, 3, 0), view
    assert legacy.with_name("ipam.json.adopted-by-cloud-cni").exists() and not legacy.exists()
    held = assigned(daemon)
    for p in pods:
        assert held[p.pod.ip]["container_id"] == p.pod.sandbox_id, held
    names = links(vpc.node)
    main = routes(vpc.node)
    for p in pods:
        assert p.our_veth in names and p.legacy_veth not in names, fail("veth renamed", vpc, daemon)
        assert f"{p.pod.ip} dev {p.our_veth} scope link" in main, fail("route", vpc, daemon)
        assert f"512: from all to {p.pod.ip} lookup main" in rules(vpc.node)
    assert f"1536: from {cart.ip} lookup {pods[1].table}" in rules(vpc.node)

    # --- after: CHECK, traffic, a new pod, DEL
    for p in pods:
        done = cni_check(runtime, ours, p)
        assert done.returncode == 0, fail(f"CHECK {p.pod.name}: {done.stdout} {done.stderr}", vpc, daemon)
    for src, dst in ((web, cart), (cart, web), (api, cart), (web, api)):
        assert ping(runtime, src, dst.ip).returncode == 0, fail(f"{src.ip} -> {dst.ip}", vpc, daemon)
    for p in pods:
        assert ping(runtime, None, p.pod.ip).returncode == 0, fail(f"node -> {p.pod.ip}", vpc, daemon)
    with EchoServer(vpc.vpc_peer):
        for p in pods:
            assert talk_to_peer(runtime, p.pod) == p.pod.ip, fail(f"{p.pod.ip} -> VPC peer", vpc, daemon)

    new = runtime.run_pod("new-0")
    assert new.ip and new.ip not in {p.pod.ip for p in pods}, new
    assert assigned(daemon)[new.ip]["container_id"] == new.sandbox_id
    assert ping(runtime, new, web.ip).returncode == 0, fail(f"{new.ip} -> {web.ip}", vpc, daemon)

    for p in [*pods, Legacy(new, None)]:
        runtime.stop_pod(p.pod)  # DEL through our plugin, network "cloud-cni", with the netns
        assert p.pod.ip not in assigned(daemon), f"{p.pod.name}: DEL frees {p.pod.ip}"
        assert not [r for r in rules(vpc.node) if f" {p.pod.ip} " in f"{r} "], rules(vpc.node)
        assert not [r for r in routes(vpc.node) if r.startswith(f"{p.pod.ip} ")], routes(vpc.node)
        wait_for(f"{p.our_veth} to go", veth_gone(vpc, p.our_veth), timeout=5)
        runtime.remove_pod(p.pod)  # DEL again, no netns
    assert runtime.sandboxes() == []
    assert assigned(daemon) == {}
    assert daemon.get("/v1/pool")["assigned"] == 0
    assert not [n for n in links(vpc.node) if n.startswith(("eni", "ccni"))], links(vpc.node)
    calls = [(c.plugin, c.command, c.container_id, bool(c.netns)) for c in runtime.cni_calls()]
    expected = [("aws-cni", "ADD", p.pod.sandbox_id, True) for p in pods]
    expected += [("cloud-cni", "CHECK", p.pod.sandbox_id, True) for p in pods]  # the test's own CHECKs
    expected += [("cloud-cni", "ADD", new.sandbox_id, True)]
    for p in [*pods, Legacy(new, None)]:
        expected += [
            ("cloud-cni", "DEL", p.pod.sandbox_id, True),
            ("cloud-cni", "DEL", p.pod.sandbox_id, False),
        ]
    assert calls == expected, "aws-cni only ADDs; every DEL, adopted or not, goes through our plugin"
    print(f"adoption under containerd: {time.monotonic() - started:.1f}s")
