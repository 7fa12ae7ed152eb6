"""``WindowsDatapath`` in process against the fake HCN: the network life cycle, the call budget, the
retry rules of ``HcnClient`` (which answers are retried, which are final) and the deadline."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from ipamd.datapath.base import PodDns
from ipamd.datapath.windows import hcn
from ipamd.datapath.windows.datapath import HcnClient, WindowsDatapath
from ipamd.datapath.windows.fake import FakeHcn
from ipamd.errors import DatapathError, NetnsNotFound
from ipamd.pool.model import (
    Assignment,
    AttachmentKey,
    ContainerID,
    IfName,
    InterfaceId,
    InterfaceView,
    PodRef,
)

NET = "10.0.0.0/20"
ETH0 = InterfaceView(
    InterfaceId("eni-0"), 0, True, "s", NET, "10.0.0.10", ("10.0.0.20",), (), "02:00:00:00:00:01"
)
ETH1 = InterfaceView(
    InterfaceId("eni-1"), 1, False, "s", NET, "10.0.0.11", ("10.0.0.21",), (), "02:00:00:00:00:02"
)


def pod(i: int, view: InterfaceView, namespace: str) -> Assignment:
    key = AttachmentKey("cloud-cni", ContainerID(f"c{i}"), IfName("eth0"))
    return Assignment(key, f"10.0.1.{i}", view.id, PodRef("ns", f"p{i}", f"u{i}"), 0.0, namespace)


def test_a_detached_interfaces_network_goes_once_its_last_endpoint_is_gone(tmp_path: Path) -> None:
    async def run() -> None:
        fake = FakeHcn(tmp_path / "hcn.json")
        held = [ETH0, ETH1]
        dp = WindowsDatapath(fake)
        await dp.start(lambda: held, ("10.0.0.0/16",), ())
        names = lambda: sorted(n["Name"] for n in fake.snapshot()["networks"])  # noqa: E731
        assert names() == ["cloud-cni-eni-0", "cloud-cni-eni-1"]  # each interface holding addresses
        a = pod(5, ETH1, fake.add_namespace())
        await dp.add_pod(a)
        held = [ETH0]
        await dp.sync_interfaces(held)  # HCN refuses: an endpoint is still on the network
        assert names() == ["cloud-cni-eni-0", "cloud-cni-eni-1"]
        await dp.del_pod(a)
        await dp.sync_interfaces(held)  # tried again, and gone
        assert names() == ["cloud-cni-eni-0"]
        dp.close()

    asyncio.run(run())


def test_the_second_add_on_an_interface_makes_two_hcn_calls(tmp_path: Path) -> None:
    async def run() -> None:
        fake = FakeHcn(tmp_path / "hcn.json")
        dp = WindowsDatapath(fake)
        await dp.start(lambda: [ETH0, ETH1], ("10.0.0.0/16",), ())
        await dp.add_pod(pod(1, ETH0, fake.add_namespace()))
        fake.reset_counters()
        b = pod(2, ETH0, fake.add_namespace())
        wiring = await dp.add_pod(b)
        assert fake.counters() == {"create_endpoint": 1, "modify_namespace": 1}
        assert wiring.prefix_length == 20 and wiring.gateway == "10.0.0.1"
        fake.reset_counters()
        await dp.del_pod(b)
        assert fake.counters() == {"modify_namespace": 1, "delete_endpoint": 1}
        dp.close()

    asyncio.run(run())


def test_the_pods_dns_goes_on_its_endpoint_without_the_options(tmp_path: Path) -> None:
    async def run() -> None:
        fake = FakeHcn(tmp_path / "hcn.json")
        dp = WindowsDatapath(fake)
        await dp.start(lambda: [ETH0], ("10.0.0.0/16",), ())
        dns = PodDns(("10.96.0.10",), ("default.svc.cluster.local", "svc.cluster.local"), ("ndots:5",))
        await dp.add_pod(pod(1, ETH0, fake.add_namespace()), dns=dns)
        await dp.add_pod(pod(2, ETH0, fake.add_namespace()))
        endpoints = {e["Name"]: e for e in fake.snapshot()["endpoints"]}
        assert endpoints["cloud-cni-c1_eth0"]["Dns"] == {
            "Search": ["default.svc.cluster.local", "svc.cluster.local"],
            "ServerList": ["10.96.0.10"],
        }
        assert "Dns" not in endpoints["cloud-cni-c2_eth0"]
        dp.close()

    asyncio.run(run())


def test_a_network_hns_lost_is_made_again_by_the_next_add(tmp_path: Path) -> None:
    async def run() -> None:
        fake = FakeHcn(tmp_path / "hcn.json")
        dp = WindowsDatapath(fake)
        await dp.start(lambda: [ETH0], ("10.0.0.0/16",), ())
        [network] = fake.snapshot()["networks"]
        fake.delete_network(network["ID"])  # HNS restarted: non-persistent networks are gone
        await dp.add_pod(pod(3, ETH0, fake.add_namespace()))
        [again] = fake.snapshot()["networks"]
        assert again["Name"] == "cloud-cni-eni-0" and again["ID"] != network["ID"]
        assert len(fake.snapshot()["endpoints"]) == 1
        dp.close()

    asyncio.run(run())


def test_an_address_hcn_would_refuse_is_a_datapath_error_before_any_call(tmp_path: Path) -> None:
    async def run() -> None:
        fake = FakeHcn(tmp_path / "hcn.json")
        dp = WindowsDatapath(fake)
        await dp.start(lambda: [ETH0], ("10.0.0.0/16",), ())
        bad = pod(1, ETH0, fake.add_namespace())
        bad = Assignment(bad.key, "10.0.0.1", bad.interface_id, bad.pod, 0.0, bad.netns)  # the gateway
        fake.reset_counters()
        with pytest.raises(DatapathError, match="gateway"):
            await dp.add_pod(bad)
        assert fake.counters().get("create_endpoint", 0) == 0
        dp.close()

    asyncio.run(run())


class Flaky:
    """An HCN whose list_endpoints answers the HRESULTs given, then succeeds."""

    name = "flaky"

    def __init__(self, *hresults: int) -> None:
        self.answers = list(hresults)
        self.calls = 0

    def list_endpoints(self, query: object) -> list[object]:
        self.calls += 1
        if self.answers:
            raise hcn.HcnError("HcnEnumerateEndpoints", self.answers.pop(0))
        return []

    def delete_endpoint(self, endpoint_id: str) -> None:
        self.calls += 1
        if self.answers:
            raise hcn.HcnError("HcnDeleteEndpoint", self.answers.pop(0))

    def modify_namespace(self, namespace_id: str, request: object) -> None:
        self.calls += 1
        if self.answers:
            raise hcn.HcnError("HcnModifyNamespace", self.answers.pop(0))


@pytest.mark.parametrize(
    ("method", "args", "answers", "calls", "raises"),
    [
        ("list_endpoints", ({},), [hcn.ERROR_LOCK_VIOLATION, hcn.ERROR_NOT_FOUND], 3, None),
        ("list_endpoints", ({},), [hcn.HCN_E_ENDPOINT_NOT_FOUND], 2, None),  # went between enum and query
        ("list_endpoints", ({},), [hcn.HCN_E_INVALID_JSON], 1, hcn.HCN_E_INVALID_JSON),
        ("delete_endpoint", ("id",), [hcn.ERROR_NOT_FOUND], 1, hcn.ERROR_NOT_FOUND),  # gone: final
        ("modify_namespace", ("ns", {"RequestType": "Add"}), [hcn.ERROR_NOT_FOUND], 2, None),  # churn
        (
            "modify_namespace",
            ("ns", {"RequestType": "Remove"}),
            [hcn.ERROR_NOT_FOUND],
            1,
            hcn.ERROR_NOT_FOUND,
        ),
        ("list_endpoints", ({},), [hcn.ERROR_TIMEOUT] * 6, 6, hcn.ERROR_TIMEOUT),  # 5 retries, then up
    ],
)
def test_which_answers_are_retried(
    method: str, args: tuple[object, ...], answers: list[int], calls: int, raises: int | None
) -> None:
    flaky = Flaky(*answers)
    slept: list[float] = []
    client = HcnClient(flaky, timeout=5, sleep=slept.append)  # type: ignore[arg-type]
    doc = args[-1] if method == "modify_namespace" else None
    try:
        if raises is None:
            client.call(method, *args, doc=doc)  # type: ignore[arg-type]
        else:
            with pytest.raises(hcn.HcnError) as caught:
                client.call(method, *args, doc=doc)  # type: ignore[arg-type]
            assert caught.value.hresult == raises
        assert flaky.calls == calls
        assert slept == sorted(slept) and len(slept) == calls - 1
    finally:
        client.close()


def test_a_hung_call_is_given_up_at_the_deadline_and_not_retried() -> None:
    class Hung:
        name = "hung"
        calls = 0

        def list_networks(self, query: object) -> list[object]:
            self.calls += 1
            import time

            time.sleep(1.0)
            return []

    hung = Hung()
    counted: list[tuple[str, str]] = []
    client = HcnClient(hung, timeout=0.1, on_call=lambda m, r: counted.append((m, r)))  # type: ignore[arg-type]
    with pytest.raises(hcn.HcnTimeout):
        client.call("list_networks", {})
    assert hung.calls == 1
    assert counted == [("HcnEnumerateNetworks", "timeout")]
    client.close()


def test_an_attach_to_a_missing_namespace_is_not_retried_as_churn(tmp_path: Path) -> None:
    async def run() -> None:
        fake = FakeHcn(tmp_path / "hcn.json")
        dp = WindowsDatapath(fake)
        await dp.start(lambda: [ETH0], ("10.0.0.0/16",), ())
        fake.reset_counters()
        with pytest.raises(NetnsNotFound):
            await dp.add_pod(pod(4, ETH0, "11111111-2222-3333-4444-555555555555"))
        # create, one attach (no retries), the query that shows the namespace missing, then the
        # rollback: its detach (refused: not attached) and the delete
        assert fake.counters() == {
            "create_endpoint": 1,
            "modify_namespace": 2,
            "get_namespace": 1,
            "delete_endpoint": 1,
        }
        assert fake.snapshot()["endpoints"] == []
        dp.close()

    asyncio.run(run())


def test_an_attach_refused_during_churn_is_retried_when_the_namespace_is_there(tmp_path: Path) -> None:
    async def run() -> None:
        fake = FakeHcn(tmp_path / "hcn.json")
        dp = WindowsDatapath(fake)
        await dp.start(lambda: [ETH0], ("10.0.0.0/16",), ())
        fake.inject("modify_namespace", hcn.ERROR_NOT_FOUND, times=2)
        await dp.add_pod(pod(6, ETH0, fake.add_namespace()))
        assert len(fake.snapshot()["endpoints"]) == 1
        dp.close()

    asyncio.run(run())
