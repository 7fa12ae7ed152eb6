"""The daemon as a process on the sim provider, driven through its real gRPC socket."""

from __future__ import annotations

import json
import os
import stat
from concurrent.futures import ThreadPoolExecutor

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from ipamd.rpc.client import CniFailure, attachment

from .conftest import DaemonProcess

pytestmark = pytest.mark.integration


def test_add_del_check_gc_status_round_trip(daemon: DaemonProcess) -> None:
    daemon.start()
    client = daemon.client()
    att = attachment("c0ffee01", pod="web-1", uid="uid-1")
    reply = client.add(att)
    assert reply.prefix_length == 32
    assert reply.interface_id.startswith("eni-")
    again = client.add(att)
    assert again.ip == reply.ip, "ADD for an existing key returns the same IP"
    prev = json.dumps({"cniVersion": "1.0.0", "ips": [{"address": f"{reply.ip}/32"}]})
    client.check(att, prev)
    with pytest.raises(CniFailure) as wrong:
        client.check(att, json.dumps({"ips": [{"address": "10.9.9.9/32"}]}))
    assert wrong.value.cni_code == 3
    status = client.status()
    assert status.ready and status.assigned == 1
    client.delete(att)
    client.delete(att)  # DEL twice succeeds
    with pytest.raises(CniFailure) as gone:
        client.check(att, prev)
    assert gone.value.cni_code == 3
    pool = daemon.get("/v1/pool")
    assert pool["assigned"] == 0 and pool["cooling"] == 1
    assert pool["total"] == pool["assigned"] + pool["available"] + pool["cooling"] + pool["quarantined"]


def test_gc_releases_attachments_not_listed(daemon: DaemonProcess) -> None:
    daemon.start()
    client = daemon.client()
    keep, drop = attachment("keep0001"), attachment("drop0001")
    client.add(keep)
    client.add(drop)
    assert client.gc("cloud-cni", [("keep0001", "eth0")]) == 1
    assert client.gc("other-net", []) == 0, "GC of another network touches nothing of ours"
    assigned = {a["container_id"] for a in daemon.get("/v1/assignments")}
    assert assigned == {"keep0001"}


def test_concurrent_adds_get_distinct_ips(daemon: DaemonProcess) -> None:
    daemon.start(WARM_IP_TARGET="5", MINIMUM_IP_TARGET="10")
    client = daemon.client()
    with ThreadPoolExecutor(16) as pool:
        replies = list(pool.map(lambda i: client.add(attachment(f"pod{i:04d}")), range(24)))
    ips = [r.ip for r in replies]
    assert len(set(ips)) == 24
    pool_state = daemon.get("/v1/pool")
    held = {ip for iface in pool_state["interfaces"] for ip in iface["ips"]}
    assert set(ips) <= held
    primary_ips = {i["id"] for i in pool_state["interfaces"] if i["primary"]}
    assert primary_ips, "the primary interface is listed"


@pytest.mark.parametrize(
    ("field", "value", "code", "needle"),
    [
        ("container_id", "", 4, "CNI_CONTAINERID"),
        ("container_id", "-bad", 4, "CNI_CONTAINERID"),
        ("ifname", "a" * 16, 4, "CNI_IFNAME"),
        ("ifname", "eth/0", 4, "CNI_IFNAME"),
        ("netns", "relative/path", 4, "CNI_NETNS"),
        ("network_name", "bad name", 7, "name"),
    ],
    ids=["empty-id", "id-dash", "ifname-long", "ifname-slash", "netns-relative", "network-space"],
)
def test_invalid_requests_name_the_field(
    daemon: DaemonProcess, field: str, value: str, code: int, needle: str
) -> None:
    daemon.start()
    client = daemon.client()
    att = attachment("valid001")
    setattr(att, field, value)
    with pytest.raises(CniFailure) as err:
        client.add(att)
    assert err.value.cni_code == code
    assert needle in err.value.message
    assert daemon.get("/v1/pool")["assigned"] == 0


def test_socket_permissions_health_metrics_and_introspection(daemon: DaemonProcess) -> None:
    daemon.start()
    sock = os.stat(daemon.socket)
    assert stat.S_ISSOCK(sock.st_mode) and stat.S_IMODE(sock.st_mode) == 0o600
    assert stat.S_IMODE(os.stat(os.path.dirname(daemon.socket)).st_mode) == 0o700
    with grpc.insecure_channel(f"unix:{daemon.socket}") as ch:
        stub = health_pb2_grpc.HealthStub(ch)
        for service in ("", "cloudcni.v1.IpamBackend"):
            reply = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
    daemon.client().add(attachment("metric01"))
    text = daemon.metrics()
    for name in (
        "cloudcni_pool_ips_total",
        "cloudcni_pool_ips_assigned 1.0",
        "cloudcni_pool_ips_available",
        "cloudcni_pool_ips_cooling",
        "cloudcni_pool_ips_max",
        "cloudcni_pool_interfaces",
        'cloudcni_rpc_requests_total{method="add",result="ok"} 1.0',
        "cloudcni_rpc_duration_seconds_bucket",
        'cloudcni_cloud_calls_total{operation="list_interfaces",outcome="ok"}',
        "cloudcni_cloud_call_duration_seconds_bucket",
        "cloudcni_no_ip_available_total",
        'cloudcni_checkpoint_writes_total{result="ok"} 2.0',  # the start-up write and the ADD's
        "cloudcni_checkpoint_write_seconds_count 2.0",
        'cloudcni_checkpoint_batch_size_bucket{le="1.0"} 2.0',
    ):
        assert name in text, name
    pool = daemon.get("/v1/pool")
    assert {"total", "assigned", "available", "cooling", "interfaces"} <= set(pool)
    for iface in pool["interfaces"]:
        assert {"id", "primary", "ips", "prefixes"} <= set(iface)
    config = daemon.get("/v1/config")
    assert config["CLOUD_PROVIDER"] == "sim" and config["WARM_ENI_TARGET"] == 1


def test_pool_warms_at_start_and_grows_on_demand_without_polling_delay(daemon: DaemonProcess) -> None:
    # m5.large: 9 secondary IPs per interface. WARM_ENI_TARGET=1 keeps one interface's worth free.
    daemon.start(SIM_API_LATENCY="0.05")
    pool = daemon.wait_pool(lambda p: p["available"] >= 9)
    assert pool["total"] == 9 and len(pool["interfaces"]) == 1
    client = daemon.client()
    client.add(attachment("grow0001"))
    pool = daemon.wait_pool(lambda p: len(p["interfaces"]) == 2 and p["available"] >= 9, timeout=3)
    assert pool["total"] == 18
    assert "cloudcni_pool_actions_total" in daemon.metrics()
