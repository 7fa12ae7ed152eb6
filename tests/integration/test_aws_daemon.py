"""The daemon with CLOUD_PROVIDER=aws against moto (EC2) and a fake IMDSv2, pods through the shim.

Each reference scenario starts the daemon, runs pods through the real plugin, and checks the ENI and
IP counts that EC2 (moto) reports once the pool has settled. Faults are injected at the HTTP
boundary by a proxy between the daemon and moto. Every endpoint is on 127.0.0.1.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.fakes.ec2_proxy import Ec2Proxy
from tests.fakes.imds import start_fake_imds
from tests.fakes.moto_ec2 import CREDENTIALS, REGION, MotoEc2, Node, make_node

from .conftest import DaemonProcess, daemon_env
from .test_shim_exec import netconf, shim

pytestmark = pytest.mark.integration


class AwsNode:
    def __init__(self, moto: MotoEc2, node: Node, tmp: Path) -> None:
        tmp.mkdir(parents=True, exist_ok=True)
        self.moto = moto
        self.node = node
        self.proxy = Ec2Proxy(upstream=moto.endpoint).start()
        self.imds = start_fake_imds(moto, node)
        self.daemon = DaemonProcess(
            dir=tmp,
            env=daemon_env(
                tmp,
                CLOUD_PROVIDER="aws",
                AWS_ENDPOINT_URL=self.proxy.url,
                AWS_EC2_METADATA_SERVICE_ENDPOINT=self.imds.url,
                AWS_REGION=REGION,
                CLUSTER_NAME="test-cluster",
                POOL_RELEASE_DELAY="1",
                IP_COOLDOWN_PERIOD="1",
                CLOUD_API_RATE="50",
                CLOUD_API_BURST="50",
                ADD_WAIT_TIMEOUT="10",
                **CREDENTIALS,
            ),
        )

    def enis(self) -> list[dict[str, Any]]:
        return self.node.interfaces()

    def counts(self) -> tuple[int, int]:
        """(ENIs attached, secondary IPs on them) as EC2 reports."""
        enis = self.enis()
        ips = sum(sum(1 for a in e["PrivateIpAddresses"] if not a["Primary"]) for e in enis)
        return len(enis), ips

    def settle(self, expect: tuple[int, int], timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        seen = self.counts()
        while time.monotonic() < deadline:
            seen = self.counts()
            pool = self.daemon.get("/v1/pool")
            if seen == expect and pool["total"] == expect[1]:
                time.sleep(1.5)  # and it stays there: no flapping
                if self.counts() == expect:
                    return
            time.sleep(0.2)
        raise AssertionError(
            f"EC2 shows {seen} (ENIs, IPs), expected {expect}; pool {self.daemon.get('/v1/pool')}"
        )

    def add_pods(self, n: int, start: int = 0, *, retry_for: float = 0.0) -> list[str]:
        """ADD through the plugin; with ``retry_for``, retry "try again later" as kubelet does."""
        conf = netconf(self.daemon.socket)
        ips = []
        for i in range(start, start + n):
            deadline = time.monotonic() + retry_for
            done = shim("ADD", conf, cid=f"pod{i:04d}")
            while done.code != 0 and done.json["code"] == 11 and time.monotonic() < deadline:
                time.sleep(0.5)
                done = shim("ADD", conf, cid=f"pod{i:04d}")
            assert done.code == 0, done
            ips.append(done.json["ips"][0]["address"])
        return ips

    def del_pods(self, n: int, start: int = 0) -> None:
        conf = netconf(self.daemon.socket)
        for i in range(start, start + n):
            assert shim("DEL", conf, cid=f"pod{i:04d}").code == 0

    def close(self) -> None:
        if self.daemon.proc is not None and self.daemon.proc.poll() is None:
            self.daemon.kill()
        self.proxy.stop()
        self.imds.stop()


@pytest.fixture
def aws(moto_ec2: MotoEc2, tmp_path: Path) -> Iterator[Callable[..., AwsNode]]:
    made: list[AwsNode] = []

    def make(instance_type: str = "m5.large", **env: str) -> AwsNode:
        node = AwsNode(moto_ec2, make_node(moto_ec2, instance_type), tmp_path / f"n{len(made)}")
        made.append(node)
        node.daemon.start(**env)
        return node

    yield make
    for node in made:
        node.close()


# m5.large: 3 ENIs x 10 IPv4 (9 secondary each). Steady states from docs/pool-policy.md.
SCENARIOS = [
    ({"WARM_ENI_TARGET": "1"}, 0, (1, 9)),
    ({"WARM_ENI_TARGET": "1"}, 5, (2, 18)),
    ({"WARM_ENI_TARGET": "2"}, 0, (2, 18)),
    ({"WARM_ENI_TARGET": "2"}, 5, (3, 27)),
    ({"WARM_ENI_TARGET": "3"}, 0, (3, 27)),
    ({"WARM_ENI_TARGET": "3", "MAX_ENI": "2"}, 5, (2, 18)),
    ({"WARM_IP_TARGET": "2"}, 0, (1, 2)),
    ({"WARM_IP_TARGET": "2"}, 10, (2, 12)),
    ({"WARM_IP_TARGET": "16"}, 5, (3, 21)),
    ({"MINIMUM_IP_TARGET": "2"}, 2, (1, 2)),
    ({"MINIMUM_IP_TARGET": "16"}, 0, (2, 16)),
    ({"MINIMUM_IP_TARGET": "6", "WARM_IP_TARGET": "10"}, 0, (2, 10)),
    ({"MINIMUM_IP_TARGET": "6", "WARM_IP_TARGET": "10"}, 5, (2, 15)),
]


@pytest.mark.parametrize(
    ("env", "pods", "expect"),
    SCENARIOS,
    ids=["-".join(k.split("_")[0] + v for k, v in e.items()) + f"-{p}pods" for e, p, _ in SCENARIOS],
)
def test_reference_scenario_settles_to_the_expected_enis_and_ips(
    aws: Callable[..., AwsNode], env: dict[str, str], pods: int, expect: tuple[int, int]
) -> None:
    node = aws(**env)
    ips = node.add_pods(pods)
    assert len(set(ips)) == pods
    node.settle(expect)
    assert not node.node.available_enis(), "no ENI left unattached"
    eni_ids = {e["NetworkInterfaceId"] for e in node.enis()}
    for eni in node.enis():
        if eni["NetworkInterfaceId"] == node.node.primary_eni:
            continue
        tags = {t["Key"]: t["Value"] for t in eni.get("TagSet", [])}
        assert tags["node.k8s.amazonaws.com/instance_id"] == node.node.instance_id
        assert tags["cluster.k8s.amazonaws.com/name"] == "test-cluster"
    assert node.node.primary_eni in eni_ids


def test_scale_to_max_pods_and_back_returns_cloud_to_baseline(aws: Callable[..., AwsNode]) -> None:
    node = aws(WARM_ENI_TARGET="1")
    node.settle((1, 9))
    ips = node.add_pods(27, retry_for=60)
    assert len(set(ips)) == 27
    node.settle((3, 27))
    node.del_pods(27)
    node.settle((1, 9), timeout=40)
    assert not node.node.available_enis(), "scale-down leaked an ENI"


def test_throttling_storm_and_5xx_converge(aws: Callable[..., AwsNode]) -> None:
    node = aws(WARM_IP_TARGET="5")
    node.settle((1, 5))
    node.proxy.fail("*", "RequestLimitExceeded", times=12)
    node.proxy.fail("AssignPrivateIpAddresses", "InternalError", times=3)
    node.add_pods(12, retry_for=60)
    node.settle((2, 17), timeout=60)
    assert node.proxy.calls["AssignPrivateIpAddresses"] > 0
    metrics = node.daemon.metrics()
    assert 'outcome="throttled"' in metrics
    assert not node.node.available_enis()


def test_attach_failing_after_it_happened_leaks_no_eni(aws: Callable[..., AwsNode]) -> None:
    node = aws(WARM_ENI_TARGET="1")
    node.settle((1, 9))
    # EC2 attaches, but the daemon sees a 500: it must clean up, then try again and converge.
    node.proxy.fail("AttachNetworkInterface", "InternalError", times=1, after_forward=True)
    node.add_pods(1)
    node.settle((2, 18), timeout=60)
    assert not node.node.available_enis()


def test_crash_between_create_and_attach_leaks_no_eni(aws: Callable[..., AwsNode]) -> None:
    node = aws(WARM_ENI_TARGET="1")
    node.settle((1, 9))
    node.proxy.delays["AttachNetworkInterface"] = 3.0
    node.add_pods(1)
    deadline = time.monotonic() + 20
    while node.proxy.calls["AttachNetworkInterface"] == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert node.proxy.calls["CreateNetworkInterface"] >= 1
    node.daemon.stop(signal.SIGKILL)
    node.proxy.clear()
    time.sleep(3.5)  # let the delayed attach reach moto: the ENI may end attached or available
    node.daemon.start()
    node.settle((2, 18), timeout=60)
    assert not node.node.available_enis(), "the ENI created before the crash leaked"
    assert [a["container_id"] for a in node.daemon.get("/v1/assignments")] == ["pod0000"]


def test_missing_permission_pauses_growth_and_names_the_action(aws: Callable[..., AwsNode]) -> None:
    node = aws(WARM_IP_TARGET="2")
    node.settle((1, 2))
    node.proxy.fail("AssignPrivateIpAddresses", "UnauthorizedOperation", times=-1)
    conf = netconf(node.daemon.socket)
    for cid in ("perm0001", "perm0002", "perm0003"):
        shim("ADD", conf, cid=cid)
    deadline = time.monotonic() + 20
    events: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        events = [e for e in node.daemon.events() if e.get("event") == "pool_growth_paused"]
        if events:
            break
        time.sleep(0.2)
    assert events and events[0].get("missing_permission") == "ec2:AssignPrivateIpAddresses", events
    assert "cloudcni_pool_growth_paused 1.0" in node.daemon.metrics()


def test_reconcile_adopts_and_flags_out_of_band_changes(aws: Callable[..., AwsNode]) -> None:
    node = aws(WARM_IP_TARGET="2", RECONCILE_INTERVAL="1")
    node.settle((1, 2))
    [pod_ip] = node.add_pods(1)
    node.settle((1, 3))
    ec2 = node.moto.client()
    # Someone removes the pod's address behind the daemon's back, and adds two others.
    ec2.unassign_private_ip_addresses(
        NetworkInterfaceId=node.node.primary_eni, PrivateIpAddresses=[pod_ip.split("/")[0]]
    )
    ec2.assign_private_ip_addresses(
        NetworkInterfaceId=node.node.primary_eni, SecondaryPrivateIpAddressCount=2
    )
    deadline = time.monotonic() + 20
    flagged: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        flagged = [a for a in node.daemon.get("/v1/assignments") if a["orphaned"]]
        if flagged:
            break
        time.sleep(0.2)
    assert [a["container_id"] for a in flagged] == ["pod0000"]
    assert "cloudcni_lost_assignments_total 1.0" in node.daemon.metrics()
    assert any(e.get("event") == "assigned_ip_vanished" for e in node.daemon.events())
    pool = node.daemon.get("/v1/pool")
    held = {ip for iface in pool["interfaces"] for ip in iface["ips"]}
    assert pod_ip.split("/")[0] not in held, "the vanished address left the pool"
    ec2_ips = {
        a["PrivateIpAddress"] for e in node.enis() for a in e["PrivateIpAddresses"] if not a["Primary"]
    }
    assert ec2_ips <= held, "addresses added out of band were adopted"
