"""`cloud-cni node-init` in a network namespace the test creates: it sets exactly what the Linux
datapath needs, and a second run changes nothing."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.fakes import netns

pytestmark = [
    pytest.mark.integration,
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="network namespaces need root"),
]
CLI = str(Path(sys.executable).with_name("cloud-cni"))


def sysctl(ns: str, key: str) -> str:
    return netns.run(ns, "sysctl", "-n", key).stdout.strip()


def test_node_init_sets_forwarding_and_loose_rp_filter() -> None:
    with netns.namespaces("ninit") as (ns,):
        netns.ip(ns, "link", "add", "eth0", "type", "veth", "peer", "name", "eth1")
        for key, value in [
            ("net.ipv4.ip_forward", "0"),
            ("net.ipv4.conf.default.rp_filter", "1"),
            ("net.ipv4.conf.eth0.rp_filter", "1"),
            ("net.ipv4.conf.eth1.rp_filter", "0"),  # off stays off: loose is not asked of it
        ]:
            netns.run(ns, "sysctl", "-qw", f"{key}={value}")
        first = netns.run(ns, CLI, "node-init")
        assert first.stdout.splitlines() == [
            "cloud-cni node-init: net.ipv4.ip_forward: 0 -> 1",
            "cloud-cni node-init: net.ipv4.conf.default.rp_filter: 1 -> 2",
            "cloud-cni node-init: net.ipv4.conf.eth0.rp_filter: 1 -> 2",
        ]
        assert sysctl(ns, "net.ipv4.ip_forward") == "1"
        assert sysctl(ns, "net.ipv4.conf.eth0.rp_filter") == "2"
        assert sysctl(ns, "net.ipv4.conf.eth1.rp_filter") == "0"
        netns.ip(ns, "link", "add", "eth2", "type", "veth", "peer", "name", "eth3")
        assert sysctl(ns, "net.ipv4.conf.eth2.rp_filter") == "2", "a later interface inherits default"
        again = netns.run(ns, CLI, "node-init")
        assert again.stdout.strip() == "cloud-cni node-init: nothing to change"


def test_node_init_reports_a_read_only_proc_sys() -> None:
    """Without the privilege to write /proc/sys (a read-only bind here), it fails naming the key."""
    with netns.namespaces("ninit") as (ns,):
        netns.run(ns, "sysctl", "-qw", "net.ipv4.ip_forward=0")
        done = subprocess.run(
            ["ip", "netns", "exec", ns, "unshare", "--mount", "sh", "-c",
             f"mount -o bind,ro /proc/sys /proc/sys && exec {CLI} node-init"],
            capture_output=True,
            text=True,
        )  # fmt: skip
        assert done.returncode == 1
        assert "cannot set net.ipv4.ip_forward=1" in done.stderr
