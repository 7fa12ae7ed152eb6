"""The real daemon adopts aws-vpc-cni's checkpoint (docs/adoption-aws-vpc-cni.md) on the sim cloud,
DATAPATH=none: a first start learns the node's addresses, aws-node's ipam.json is written with two of
them, and a start with no checkpoint of ours adopts it; CHECK and DEL then work on the adopted pods."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from ipamd.rpc.client import attachment
from tests.fakes.awsvpc import checkpoint_json, row

from .conftest import ROOT, DaemonProcess

pytestmark = pytest.mark.integration

PODS = (("c0ffee01", "default", "web-0"), ("c0ffee02", "kube-system", "coredns-x1"))


def aws_checkpoint(rows: list[tuple[str, str, str, str]]) -> str:
    """aws-vpc-cni's ipam.json: one row per (container, ip, namespace, pod), as v1.23 writes it."""
    return checkpoint_json(*(row(ip, c, namespace=ns, name=pod) for c, ip, ns, pod in rows))


def learn_addresses(daemon: DaemonProcess, legacy: Path) -> list[str]:
    """Start once (no aws-node file: a fresh node), take two pod-assignable addresses, stop, and
    remove every checkpoint of ours so that the next start finds none (the sim cloud's state stays)."""
    daemon.start(AWS_VPC_CNI_CHECKPOINT=str(legacy), WARM_IP_TARGET="4")
    pool = daemon.wait_pool(lambda p: p["available"] >= 4)
    assert daemon.get("/v1/adoption") == {"adopted": False}
    assert daemon.stop() == 0
    for path in daemon.checkpoint.parent.glob(daemon.checkpoint.name + "*"):
        if not path.name.endswith(".lock"):
            path.unlink()
    ips = [ip for iface in pool["interfaces"] for ip in iface["ips"]]
    return ips[:2]


def adopted_rows(daemon: DaemonProcess) -> dict[str, dict[str, Any]]:
    return {a["ip"]: a for a in daemon.get("/v1/assignments")}


def prev_result(ip: str) -> str:
    return json.dumps({"cniVersion": "1.0.0", "ips": [{"address": f"{ip}/32"}]})


def test_a_start_without_state_adopts_aws_nodes_pods_once(daemon: DaemonProcess, tmp_path: Path) -> None:
    legacy = tmp_path / "aws-node" / "ipam.json"
    ips = learn_addresses(daemon, legacy)
    legacy.parent.mkdir()
    legacy.write_text(aws_checkpoint([(c, ip, ns, pod) for (c, ns, pod), ip in zip(PODS, ips, strict=True)]))

    daemon.start()
    view = daemon.get("/v1/adoption")
    renamed = legacy.with_name("ipam.json.adopted-by-cloud-cni")
    assert (view["adopted"], view["pods"], view["held"], view["orphaned"], view["gone"]) == (True, 2, 2, 0, 0)
    assert view["renamed_to"] == str(renamed)
    assert not legacy.exists() and renamed.exists()
    rows = adopted_rows(daemon)
    for (container, namespace, pod), ip in zip(PODS, ips, strict=True):
        row = rows[ip]
        assert (row["network"], row["container_id"], row["ifname"]) == ("cloud-cni", container, "eth0")
        assert (row["pod"]["namespace"], row["pod"]["name"], row["netns"]) == (namespace, pod, "")
        assert row["orphaned"] is False
    assert daemon.get("/v1/pool")["cooling"] >= 1, (
        "the other held addresses cool (none persisted by aws-node)"
    )
    events = [e for e in daemon.events() if e.get("event") == "aws_vpc_cni_adopted"]
    assert [(e["pods"], e["held"], e["orphaned"], e["gone"]) for e in events] == [(2, 2, 0, 0)]
    assert json.loads(daemon.checkpoint.read_text())["assignments"], "our checkpoint holds the adoption"

    client = daemon.client()
    for (container, namespace, pod), ip in zip(PODS, ips, strict=True):
        att = attachment(container, namespace=namespace, pod=pod, netns=f"/var/run/netns/{container}")
        client.check(att, prev_result(ip))  # no netns recorded: the call's is used
        client.delete(att, prev_result(ip))
    assert adopted_rows(daemon) == {}
    assert daemon.stop() == 0

    legacy.write_text(aws_checkpoint([("c0ffee03", ips[0], "default", "late")]))  # a stale file again
    daemon.start()
    assert daemon.get("/v1/adoption") == {"adopted": False}, "our checkpoint exists: never adopted twice"
    assert legacy.exists() and adopted_rows(daemon) == {}
    assert daemon.stop() == 0


def test_an_unusable_aws_node_checkpoint_stops_the_start_with_one_line(
    daemon: DaemonProcess, tmp_path: Path
) -> None:
    legacy = tmp_path / "ipam-aws.json"
    legacy.write_text(json.dumps({"version": "vpc-cni-ipam/1", "allocations": [{"containerID": "x"}]}))
    env = {**daemon.env, "AWS_VPC_CNI_CHECKPOINT": str(legacy)}
    done = subprocess.run(
        [sys.executable, "-m", "ipamd"], env=env, capture_output=True, text=True, timeout=30, cwd=ROOT
    )
    assert done.returncode == 1
    lines = [line for line in done.stderr.strip().splitlines() if not line.startswith("{")]  # not logs
    assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
    assert lines[0].startswith("cloud-cni ipamd: cannot start: AWS_VPC_CNI_CHECKPOINT: ")
    assert lines[0].count(str(legacy)) == 1 and "allocations[0].networkName: missing" in lines[0]
    assert legacy.exists()
