"""Pods as a kubelet makes them: a real containerd (CRI) runs the CNI plugins of a 1.0.0 conflist.

Each test gets its own containerd in its own node netns (tests/fakes/containerd.py): RunPodSandbox,
PodSandboxStatus, StopPodSandbox, RemovePodSandbox over the CRI socket, as kubelet calls them. The
stock ``bridge`` + ``host-local`` plugins are the baseline that validates the harness (and that
bench/bench_cri.py compares against); ``cloud-cni`` runs the same scenario against a sim daemon.
"""

from __future__ import annotations

import ipaddress
import json
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from tests.fakes import cri

from .conftest import DaemonProcess

if TYPE_CHECKING:  # imported by pytest_plugins below: an earlier import would skip assert rewriting
    from tests.fakes.containerd import Containerd, Pod

pytestmark = [pytest.mark.integration, pytest.mark.root]
pytest_plugins = ["tests.fakes.containerd"]  # containerd_node, pause_image

SUBNET = ipaddress.ip_network("10.88.0.0/24")


def bridge_conflist(data_dir: Path, subnet: str = str(SUBNET)) -> dict[str, Any]:
    """The stock bridge + host-local; no masquerade (it needs iptables, and there is nowhere to go)."""
    ipam = {"type": "host-local", "ranges": [[{"subnet": subnet}]], "dataDir": str(data_dir)}
    bridge = {"type": "bridge", "bridge": "cni0", "isGateway": True, "ipMasq": False, "ipam": ipam}
    return {"cniVersion": "1.0.0", "name": "bridge-baseline", "plugins": [bridge]}


def cloud_cni_conflist(socket: str, log_file: Path) -> dict[str, Any]:
    plugin = {"type": "cloud-cni", "ipamdSocket": socket, "logFile": str(log_file)}
    return {"cniVersion": "1.0.0", "name": "cloud-cni", "plugins": [plugin]}


def host_local_leases(data_dir: Path) -> list[str]:
    """host-local keeps one file per leased address, named by the address."""
    return sorted(p.name for p in data_dir.rglob("*") if p.is_file() and p.name[:1].isdigit())


@dataclass
class Lifecycle:
    pod: Pod
    status: dict[str, Any]  # PodSandboxStatus while the pod ran (verbose, info decoded)
    calls: list[tuple[str, bool]]  # (CNI_COMMAND, netns given) of the recorded plugin, in order


def pod_lifecycle(runtime: Containerd, conflist: dict[str, Any], name: str = "web-0") -> Lifecycle:
    """The scenario every plugin must pass, with any conflist whose main plugin was installed with
    ``record=True``: run a pod, read its status, stop it, remove it; nothing may be left after."""
    runtime.write_conflist(conflist)
    pod = runtime.run_pod(name)
    status = runtime.status(pod.sandbox_id)
    assert status["status"]["state"] == "SANDBOX_READY"
    assert status["status"]["metadata"]["name"] == name
    assert pod.netns_path in runtime.pod_netns_mounts()

    runtime.stop_pod(pod)
    assert runtime.status(pod.sandbox_id)["status"]["state"] == "SANDBOX_NOTREADY"
    assert pod.netns_path not in runtime.pod_netns_mounts(), "Stop closes the pod's netns"
    runtime.remove_pod(pod)
    with pytest.raises(cri.CriError, match="NOT_FOUND"):
        runtime.status(pod.sandbox_id)
    assert runtime.sandboxes() == []
    calls = [(c.command, bool(c.netns)) for c in runtime.cni_calls() if c.container_id == pod.sandbox_id]
    return Lifecycle(pod, status, calls)


# --- the harness itself --------------------------------------------------------------------------


def test_vendored_cri_subset_matches_the_containerd_under_test() -> None:
    """Every message, field (name, number, type) and method of tests/fakes/cri/runtime_v1.proto is
    the one the containerd binary registered: the subset can omit, never differ."""
    ours, theirs = cri.file_descriptor(), cri.embedded_descriptor()
    assert ours.package == theirs.package == "runtime.v1"

    def fields(proto: Any) -> dict[str, dict[str, tuple[int, int, int, str]]]:
        out = {}
        for m in proto.message_type:
            out[m.name] = {f.name: (f.number, f.type, f.label, f.type_name) for f in m.field}
            for nested in m.nested_type:  # map entries
                out[f"{m.name}.{nested.name}"] = {
                    f.name: (f.number, f.type, f.label, f.type_name) for f in nested.field
                }
        return out

    mine, real = fields(ours), fields(theirs)
    for message, by_name in mine.items():
        assert message in real, message
        for field, spec in by_name.items():
            assert real[message].get(field) == spec, (
                f"{message}.{field}: {spec} != {real[message].get(field)}"
            )
    enums = {e.name: {v.name: v.number for v in e.value} for e in theirs.enum_type}
    for enum in ours.enum_type:
        assert {v.name: v.number for v in enum.value}.items() <= enums[enum.name].items(), enum.name
    methods = {(s.name, m.name): (m.input_type, m.output_type) for s in theirs.service for m in s.method}
    for service in ours.service:
        for m in service.method:
            assert methods[(service.name, m.name)] == (m.input_type, m.output_type), m.name


# --- baseline: bridge + host-local ---------------------------------------------------------------


def test_bridge_pod_gets_an_address_of_the_range_and_answers_ping(
    containerd_node: Containerd, tmp_path: Path
) -> None:
    runtime = containerd_node
    runtime.install_plugins("bridge", "host-local")
    runtime.write_conflist(bridge_conflist(tmp_path / "host-local"))
    pod = runtime.run_pod("ping-0", namespace="team-a")

    assert ipaddress.ip_address(pod.ip) in SUBNET, pod
    assert pod.ip != str(SUBNET[1]), "the first address is the bridge's (isGateway)"
    eth0 = json.loads(runtime.exec_in_pod_netns(pod, ["ip", "-j", "addr", "show", "eth0"]).stdout)
    assert [a["local"] for a in eth0[0]["addr_info"] if a["family"] == "inet"] == [pod.ip]
    ping = runtime.exec_in_node(["ping", "-c", "1", "-W", "2", pod.ip], check=False)
    assert ping.returncode == 0, ping.stdout + ping.stderr
    routes = [r.strip() for r in runtime.exec_in_node(["ip", "-4", "route"]).stdout.splitlines()]
    assert routes == [f"{SUBNET} dev cni0 proto kernel scope link src {SUBNET[1]}"], "and nothing else"
    assert host_local_leases(tmp_path / "host-local") == [pod.ip]

    runtime.stop_pod(pod)
    runtime.remove_pod(pod)
    assert host_local_leases(tmp_path / "host-local") == []


def test_bridge_stop_and_remove_clean_up_and_del_runs_twice(
    containerd_node: Containerd, tmp_path: Path
) -> None:
    runtime = containerd_node
    runtime.install_plugins("bridge", record=True)
    runtime.install_plugins("host-local")
    done = pod_lifecycle(runtime, bridge_conflist(tmp_path / "host-local"))

    assert ipaddress.ip_address(done.pod.ip) in SUBNET
    # Stop: DEL with the pod's netns; Remove: DEL again, the netns already gone (lab-facts).
    assert done.calls == [("ADD", True), ("DEL", True), ("DEL", False)]
    assert runtime.node_links() == ["lo", "cni0"], "the host end of the veth went with the pod"
    assert host_local_leases(tmp_path / "host-local") == []


def test_twenty_pods_in_parallel_then_removed_leave_nothing(
    containerd_node: Containerd, tmp_path: Path
) -> None:
    runtime = containerd_node
    runtime.install_plugins("bridge", "host-local")
    runtime.write_conflist(bridge_conflist(tmp_path / "host-local"))

    with ThreadPoolExecutor(20) as pool:
        pods = list(pool.map(lambda i: runtime.run_pod(f"par-{i:02d}"), range(20)))
    ips = {p.ip for p in pods}
    assert len(ips) == 20 and all(ipaddress.ip_address(ip) in SUBNET for ip in ips), ips
    assert len({p.netns_path for p in pods}) == 20
    assert len([link for link in runtime.node_links() if link.startswith("veth")]) == 20
    assert sorted(host_local_leases(tmp_path / "host-local")) == sorted(ips)

    def stop_and_remove(pod: Pod) -> None:
        runtime.stop_pod(pod)
        runtime.remove_pod(pod)

    with ThreadPoolExecutor(20) as pool:
        list(pool.map(stop_and_remove, pods))
    assert runtime.sandboxes() == []
    assert runtime.pod_netns_mounts() == []
    assert runtime.node_links() == ["lo", "cni0"]
    assert host_local_leases(tmp_path / "host-local") == []


# --- cloud-cni -----------------------------------------------------------------------------------


@pytest.mark.parametrize("how", ["install-shim", "venv"])
def test_cloud_cni_without_datapath_assigns_and_releases_through_cri(
    containerd_node: Containerd, daemon: DaemonProcess, tmp_path: Path, how: str
) -> None:
    """DATAPATH=none: the daemon assigns an address and wires nothing; CRI reports the address.
    The plugin as `cloud-cni install-shim` lays it down, and as the venv's script."""
    daemon.start()
    runtime = containerd_node
    runtime.install_cloud_cni(how, record=True)
    conflist = cloud_cni_conflist(daemon.socket, tmp_path / "shim.log")
    runtime.write_conflist(conflist)

    pod = runtime.run_pod("api-0", namespace="team-b")
    links = runtime.exec_in_pod_netns(pod, ["ip", "-o", "link", "show"]).stdout
    assert [line.split(":")[1].strip() for line in links.splitlines()] == ["lo"], "no datapath: no eth0"
    [assigned] = daemon.get("/v1/assignments")
    assert assigned["container_id"] == pod.sandbox_id
    assert assigned["ip"] == pod.ip and pod.ip, (assigned, pod)
    runtime.stop_pod(pod)
    assert daemon.get("/v1/assignments") == [], "the first DEL (Stop) releases the address"
    runtime.remove_pod(pod)
    assert daemon.get("/v1/assignments") == []
    calls = [(c.command, bool(c.netns)) for c in runtime.cni_calls()]
    assert calls == [("ADD", True), ("DEL", True), ("DEL", False)]

    # The same scenario, through the helper any conflist goes through.
    done = pod_lifecycle(runtime, conflist, name="api-1")
    assert done.calls == [("ADD", True), ("DEL", True), ("DEL", False)]
    assert daemon.get("/v1/assignments") == []
    assert daemon.get("/v1/pool")["assigned"] == 0
