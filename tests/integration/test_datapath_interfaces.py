"""Secondary interfaces come and go: ``LinuxDatapath.sync_interfaces`` sets one up when the pool
attaches it (waiting for its link, as for a hot-plugged NIC) and removes its rule and table when the
pool detaches it. Run in a node namespace the test creates, by a helper process inside it."""

from __future__ import annotations

import json
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
ROOT = Path(__file__).resolve().parents[2]

SCRIPT = r"""
import asyncio, json, subprocess, sys, threading, time
from ipamd.datapath.linux.datapath import LinuxDatapath
from ipamd.errors import DatapathError
from ipamd.pool.model import InterfaceId, InterfaceView

router = sys.argv[1]
NET = "10.0.0.0/24"
v0 = InterfaceView(InterfaceId("eni-0"), 0, True, "s", NET, "10.0.0.10", (), (), "02:00:00:00:00:01")
v1 = InterfaceView(InterfaceId("eni-1"), 1, False, "s", NET, "10.0.0.11", (), (), "02:00:00:00:00:02")
v2 = InterfaceView(InterfaceId("eni-2"), 2, False, "s", NET, "10.0.0.12", (), (), "02:00:00:00:00:03")

def ip(*args):
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=True).stdout

def plug_later(name, mac, delay):
    def plug():
        time.sleep(delay)
        subprocess.run(["ip", "link", "add", name, "address", mac, "type", "veth", "peer", "name",
                        "r-" + name, "netns", router], check=True)
    threading.Thread(target=plug).start()

async def main():
    out = {}
    dp = LinuxDatapath(external_snat=True, link_timeout=3)
    current = [v0]
    dp._views = lambda: current
    plug_later("eth1", v1.mac, 0.5)  # the link appears after the attach, as a hot-plugged NIC
    current = [v0, v1]
    await dp.sync_interfaces(current)
    out["after_attach"] = {"rules": ip("rule"), "table2": ip("route", "show", "table", "2"),
                           "main": ip("route", "show", "table", "main"),
                           "eth1": ip("-br", "addr", "show", "eth1"), "eth1_link": ip("link", "show", "eth1")}
    current = [v0, v1, v2]  # eth2's link never appears: logged, not fatal; the next sync tries again
    await dp.sync_interfaces(current)
    out["missing_link_rules"] = ip("rule")
    current = [v0]  # both detached
    await dp.sync_interfaces(current)
    out["after_detach"] = {"rules": ip("rule"), "table2": ip("route", "show", "table", "2")}
    dp.close()
    print(json.dumps(out))

asyncio.run(main())
"""


def test_secondary_interfaces_are_set_up_when_their_link_appears_and_torn_down_on_detach() -> None:
    with netns.namespaces("inode", "irouter") as (node, router):
        netns.ip(node, "link", "add", "eth0", "address", "02:00:00:00:00:01", "type", "veth", "peer", "name",
                 "r-eth0", "netns", router)  # fmt: skip
        netns.ip(node, "link", "set", "eth0", "up")
        netns.ip(node, "addr", "add", "10.0.0.10/24", "dev", "eth0")
        done = subprocess.run(
            ["ip", "netns", "exec", node, sys.executable, "-c", SCRIPT, router],
            capture_output=True,
            text=True,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            timeout=60,
        )
        assert done.returncode == 0, done.stderr[-3000:]
        out = json.loads(done.stdout.strip().splitlines()[-1])

    attached = out["after_attach"]
    assert "32765:\tfrom 10.0.0.11 lookup 2" in attached["rules"]
    assert "default via 10.0.0.1 dev eth1" in attached["table2"]
    assert "10.0.0.1 dev eth1" in attached["table2"]
    assert "dev eth1" not in attached["main"], "the kernel's connected route left the main table"
    assert "10.0.0.11/24" in attached["eth1"]
    flags = attached["eth1_link"].split("<", 1)[1].split(">", 1)[0].split(",")
    assert "UP" in flags, attached["eth1_link"]
    assert "from 10.0.0.12" not in out["missing_link_rules"]
    detached = out["after_detach"]
    assert "from 10.0.0.11" not in detached["rules"]
    assert detached["table2"].strip() == ""
