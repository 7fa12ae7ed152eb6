"""LinuxDatapath's coordination, with the netlink layer replaced by recorders: a leftover sweep (CNI
GC) never takes a pod being wired for a leftover, and pure helpers (names, tables, gateways)."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest

from ipamd.datapath.linux import datapath as dp_module
from ipamd.datapath.linux import netlink
from ipamd.datapath.linux.datapath import LinuxDatapath, gateway_of, host_veth_name, table_of
from ipamd.pool.model import (
    Assignment,
    AttachmentKey,
    ContainerID,
    IfName,
    InterfaceId,
    InterfaceView,
    PodRef,
)

V0 = InterfaceView(
    InterfaceId("eni-0"), 0, True, "s", "10.0.0.0/24", "10.0.0.10", (), (), "02:00:00:00:00:01"
)
V1 = InterfaceView(
    InterfaceId("eni-1"), 1, False, "s", "10.0.4.0/22", "10.0.4.9", (), (), "02:00:00:00:00:02"
)


def assignment(cid: str, ip: str) -> Assignment:
    return Assignment(
        AttachmentKey("cloud-cni", ContainerID(cid), IfName("eth0")),
        ip,
        V0.id,
        PodRef("d", "p", "u"),
        0.0,
        "/x",
    )


def test_host_veth_names_are_short_stable_and_distinct() -> None:
    a, b = assignment("c1", "10.0.0.20").key, assignment("c2", "10.0.0.21").key
    assert host_veth_name("ccni", a) == host_veth_name("ccni", a)
    assert host_veth_name("ccni", a) != host_veth_name("ccni", b)
    assert len(host_veth_name("ccni", a)) == 15 and host_veth_name("eni", a).startswith("eni")


@pytest.mark.parametrize(("view", "table", "gateway"), [(V0, None, "10.0.0.1"), (V1, 2, "10.0.4.1")])
def test_tables_and_gateways(view: InterfaceView, table: int | None, gateway: str) -> None:
    assert (table_of(view), gateway_of(view)) == (table, gateway)


def test_a_sweep_never_takes_a_pod_being_wired_for_a_leftover(monkeypatch: pytest.MonkeyPatch) -> None:
    """The sweep reads what is owned, then lists veths; an ADD that assigned after the read must not
    get its veth in before the listing (it would look like a leftover): it waits for the sweep."""
    created: set[str] = set()
    deleted: list[tuple[str, str]] = []
    wired = threading.Event()

    def wire_pod(spec: netlink.PodSpec) -> netlink.Wired:
        created.add(spec.host_veth)
        wired.set()
        return netlink.Wired("aa:aa:aa:aa:aa:aa", "bb:bb:bb:bb:bb:bb", 1500)

    def host_veths(prefix: str) -> list[str]:
        wired.wait(0.5)  # give a racing ADD every chance to wire before the listing
        return sorted(created)

    def unwire_pod(ip: str, name: str) -> None:
        deleted.append((ip, name))
        created.discard(name)

    for name, fn in {
        "wire_pod": wire_pod,
        "host_veths": host_veths,
        "pod_rule_ips": set,
        "unwire_pod": unwire_pod,
        "interface_rules": lambda: {},
    }.items():
        monkeypatch.setattr(dp_module.netlink, name, fn)

    owned: list[Assignment] = []
    a = assignment("c1", "10.0.0.20")

    async def scenario() -> Any:
        dp = LinuxDatapath(external_snat=True)
        dp._views = lambda: [V0]
        sweep = asyncio.create_task(dp.remove_leftovers(lambda: list(owned), lambda: [V0]))
        await asyncio.sleep(0.05)  # the sweep has read what is owned (nothing yet) and is listing
        owned.append(a)  # the ADD's assignment, then its wiring
        wiring = await dp.add_pod(a)
        await sweep
        dp.close()
        return wiring

    wiring = asyncio.run(scenario())
    assert deleted == [], "the sweep took the pod being wired for a leftover"
    assert wiring.host_ifname in created
