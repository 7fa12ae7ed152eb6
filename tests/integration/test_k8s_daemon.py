"""The daemon's Kubernetes integration, end to end: the real daemon (sim cloud) with the real
``kubernetes`` client against the fake kube-apiserver over HTTPS (tests/fakes/kube_apiserver.py).

Network namespace paths are stand-in files in the test's directory: the daemon only asks whether the
path exists (DATAPATH=none). Every request the daemon makes in these tests is checked against
deploy/rbac.yaml at the end of each test.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from ipamd.rpc.client import CniFailure, IpamClient, attachment
from tests.fakes.ec2_proxy import Ec2Proxy
from tests.fakes.imds import start_fake_imds
from tests.fakes.kube_apiserver import KubeApiServer
from tests.fakes.moto_ec2 import AZ, CREDENTIALS, REGION, MotoEc2, Node, make_node
from tests.fakes.rbac import assert_allowed, load_rules

from .conftest import ROOT, DaemonProcess, daemon_env

pytestmark = pytest.mark.integration

NODE = "ip-10-0-0-10.ec2.internal"
TAINT_KEY = "node.cloud-cni.io/agent-not-ready"
STARTUP_TAINT = {"key": TAINT_KEY, "effect": "NoSchedule"}
OTHER_TAINT = {"key": "example.com/gpu", "value": "true", "effect": "NoSchedule"}
RULES = load_rules(ROOT / "deploy" / "rbac.yaml")


def wait_for(predicate: Callable[[], Any], timeout: float = 20.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"{what} not reached within {timeout} s")


class Cluster:
    """One fake API server, one Node, one daemon process pointed at them."""

    def __init__(self, api: KubeApiServer, tmp: Path) -> None:
        self.api = api
        self.tmp = tmp
        self.kubeconfig = api.kubeconfig(tmp / "kubeconfig")
        self.daemon = DaemonProcess(
            dir=tmp,
            env=daemon_env(
                tmp,
                KUBECONFIG=self.kubeconfig,
                NODE_NAME=NODE,
                KUBERNETES_INTEGRATION="on",
                IP_COOLDOWN_PERIOD="0",
            ),
        )
        self.netns_dir = tmp / "netns"
        self.netns_dir.mkdir()
        self._client: IpamClient | None = None
        self.proxy: Ec2Proxy | None = None  # aws_cluster: the fault-injecting proxy in front of moto

    def add_node(self, *, taints: list[dict[str, Any]] | None = None, capacity: int | None = 110) -> None:
        self.api.add_node(NODE, taints=taints)
        if capacity is not None:

            def set_capacity(node: dict[str, Any]) -> None:
                node.setdefault("status", {})["capacity"] = {"pods": str(capacity), "cpu": "2"}

            self.api.patch_node_direct(NODE, set_capacity)

    def taints(self) -> list[dict[str, Any]]:
        node = self.api.get("nodes", None, NODE)
        assert node is not None
        return list(node.get("spec", {}).get("taints") or [])

    def has_startup_taint(self) -> bool:
        return any(t.get("key") == TAINT_KEY for t in self.taints())

    def client(self) -> IpamClient:
        if self._client is None:
            self._client = self.daemon.client()
        return self._client

    def netns(self, name: str) -> Path:
        path = self.netns_dir / name
        path.touch()
        return path

    def add(self, pod: str, uid: str, *, netns: Path | None = None, namespace: str = "default") -> str:
        path = netns or self.netns(pod)
        reply = self.client().add(
            attachment(f"c-{pod}-{uid}", netns=str(path), namespace=namespace, pod=pod, uid=uid)
        )
        return str(reply.ip) if hasattr(reply, "ip") else str(reply)

    def assignments(self) -> dict[str, dict[str, Any]]:
        return {a["pod"]["name"]: a for a in self.daemon.get("/v1/assignments")}

    def events(self, reason: str | None = None) -> list[dict[str, Any]]:
        return [e for e in self.api.events() if reason is None or e.get("reason") == reason]

    def k8s(self) -> dict[str, Any]:
        return dict(self.daemon.get("/v1/k8s"))


@pytest.fixture
def cluster(kube_apiserver: KubeApiServer, tmp_path: Path) -> Iterator[Cluster]:
    c = Cluster(kube_apiserver, tmp_path)
    yield c
    if c.daemon.proc is not None and c.daemon.proc.poll() is None:
        c.daemon.kill()
    assert_allowed(RULES, kube_apiserver.requests)


# --- the startup taint ---------------------------------------------------------------------------


def test_startup_taint_removed_once_the_pool_has_settled(cluster: Cluster) -> None:
    cluster.add_node(taints=[STARTUP_TAINT, OTHER_TAINT])
    # m5.large, WARM_ENI_TARGET=1: settled at 9 free addresses; each cloud call takes ~1 s.
    cluster.daemon.start(SIM_API_LATENCY="1.0")
    assert cluster.has_startup_taint(), "removed before the pool had filled"
    seen_total = []

    def removed() -> bool:
        gone = not cluster.has_startup_taint()
        if gone:
            seen_total.append(cluster.daemon.get("/v1/pool")["total"])
        return gone

    wait_for(removed, timeout=30, what="taint removal")
    assert seen_total[0] >= 9, f"removed with only {seen_total[0]} addresses held"
    assert cluster.taints() == [OTHER_TAINT]  # the other taint untouched
    patches = [r for r in cluster.api.requests if r.verb == "patch" and r.resource == "nodes"]
    assert patches and all(r.content_type.startswith("application/json-patch+json") for r in patches)
    wait_for(lambda: cluster.events("StartupTaintRemoved"), what="StartupTaintRemoved event")
    assert cluster.k8s()["startup_taint"]["state"] == "removed"
    # Never re-added by the daemon; a re-add by someone else (Karpenter at registration) is removed again.
    cluster.api.patch_node_direct(NODE, lambda n: n["spec"].update(taints=[OTHER_TAINT, STARTUP_TAINT]))
    wait_for(lambda: not cluster.has_startup_taint(), what="second removal")
    assert cluster.taints() == [OTHER_TAINT]


def test_taint_stays_while_the_pool_cannot_fill_then_times_out_with_a_warning(cluster: Cluster) -> None:
    cluster.add_node(taints=[STARTUP_TAINT])
    # A /27 holds 27 usable addresses: MINIMUM_IP_TARGET=40 can never be reached (SubnetFull).
    cluster.daemon.start(
        SIM_SUBNET_CIDR="10.0.0.0/27", MINIMUM_IP_TARGET="40", STARTUP_TAINT_TIMEOUT="4s", GROWTH_PAUSE="1"
    )
    started = time.monotonic()
    time.sleep(2.5)
    assert cluster.has_startup_taint(), "removed early on a pool that cannot fill"
    wait_for(lambda: not cluster.has_startup_taint(), timeout=15, what="removal at the timeout")
    assert time.monotonic() - started >= 3.0
    events = wait_for(lambda: cluster.events("StartupTaintTimeout"), what="StartupTaintTimeout event")
    assert events[0]["type"] == "Warning"
    assert "STARTUP_TAINT_TIMEOUT" in events[0]["note"]
    assert cluster.k8s()["startup_taint"]["state"] == "timed_out"
    assert cluster.events("SubnetExhausted"), "the full subnet is reported on the Node"


def test_api_down_at_start_serves_pods_and_removes_the_taint_when_it_returns(cluster: Cluster) -> None:
    cluster.add_node(taints=[STARTUP_TAINT])
    cluster.api.refuse()
    cluster.daemon.start()
    t0 = time.perf_counter()
    cluster.add("early", "u-early")  # a pod is served without the API
    assert time.perf_counter() - t0 < 2.0
    state = cluster.k8s()
    assert state["api"]["reachable"] is False and state["watches"]["pods"]["synced"] is False
    time.sleep(1.0)
    assert cluster.has_startup_taint()
    cluster.api.accept()
    wait_for(lambda: not cluster.has_startup_taint(), timeout=40, what="removal once the API is back")
    wait_for(lambda: cluster.k8s()["watches"]["pods"]["synced"], what="pod watch synced")


def test_startup_taint_disabled_touches_nothing(cluster: Cluster) -> None:
    cluster.add_node(taints=[STARTUP_TAINT])
    cluster.daemon.start(STARTUP_TAINT="")
    wait_for(lambda: cluster.k8s()["watches"]["node"]["synced"], what="node watch")
    time.sleep(1.0)
    assert cluster.has_startup_taint()
    assert not [r for r in cluster.api.requests if r.verb == "patch"]
    assert cluster.k8s()["startup_taint"]["state"] == "disabled"


# --- the Node --------------------------------------------------------------------------------------


def test_node_capacity_caps_the_pool_and_lists_come_from_the_cache(cluster: Cluster) -> None:
    cluster.add_node(capacity=12)
    # The pool may fill before the Node is read (the API is never waited for); it then gives back
    # what lies above the Node's capacity.
    cluster.daemon.start(SIM_INSTANCE_TYPE="c5.18xlarge", WARM_IP_TARGET="50", POOL_RELEASE_DELAY="1")
    pool = cluster.daemon.wait_pool(lambda p: p["max"] == 12 and p["total"] == 12)
    assert pool["total"] == 12
    cluster.api.patch_node_direct(NODE, lambda n: n["status"]["capacity"].update(pods="20"))
    cluster.daemon.wait_pool(lambda p: p["max"] == 20 and p["total"] == 20)
    lists = [r for r in cluster.api.requests if r.verb == "list"]
    assert lists and all(r.query.get("resourceVersion") == "0" for r in lists)
    watches = [r for r in cluster.api.requests if r.verb == "watch"]
    assert watches and all(r.query.get("allowWatchBookmarks") == "true" for r in watches)
    assert {r.query.get("fieldSelector") for r in watches} == {
        f"metadata.name={NODE}",
        f"spec.nodeName={NODE}",
    }


def test_max_pods_setting_wins_over_node_capacity(cluster: Cluster) -> None:
    cluster.add_node(capacity=12)
    cluster.daemon.start(SIM_INSTANCE_TYPE="c5.18xlarge", WARM_IP_TARGET="50", MAX_PODS="30")
    cluster.daemon.wait_pool(lambda p: p["total"] == 30)
    assert cluster.daemon.get("/v1/pool")["max"] == 30


def test_integration_off_makes_no_request(cluster: Cluster) -> None:
    cluster.add_node(taints=[STARTUP_TAINT])
    cluster.daemon.start(KUBERNETES_INTEGRATION="off")
    cluster.add("p", "u1")
    time.sleep(0.5)
    assert cluster.api.requests == []
    assert cluster.k8s()["integration"] == "off"


def test_integration_on_without_a_config_refuses_to_start(tmp_path: Path) -> None:
    d = DaemonProcess(dir=tmp_path, env=daemon_env(tmp_path, KUBERNETES_INTEGRATION="on", NODE_NAME=NODE))
    d.env.pop("KUBECONFIG", None)
    d.env.pop("KUBERNETES_SERVICE_HOST", None)
    d.start(wait=False)
    assert d.proc is not None
    assert d.proc.wait(20) == 2
    lines = d.logs().strip().splitlines()
    assert len(lines) == 1 and "KUBERNETES_INTEGRATION" in lines[0] and "KUBECONFIG is unset" in lines[0]


# --- events ----------------------------------------------------------------------------------------


def test_pod_gets_ip_allocation_delayed_when_its_add_waits(cluster: Cluster) -> None:
    cluster.add_node()
    cluster.daemon.start(WARM_IP_TARGET="1", SIM_API_LATENCY="1.5")  # waits >= 1 s: worth an event
    cluster.daemon.wait_pool(lambda p: p["available"] == 1)
    cluster.api.add_pod("default", "a", NODE, uid="ua")
    cluster.api.add_pod("team", "b", NODE, uid="ub")
    cluster.add("a", "ua")
    cluster.add("b", "ub", namespace="team")  # the pool is empty now: this one waits for growth
    events = wait_for(lambda: cluster.events("IPAllocationDelayed"), what="IPAllocationDelayed")
    assert len(events) == 1
    e = events[0]
    assert e["regarding"]["kind"] == "Pod" and e["regarding"]["name"] == "b"
    assert e["metadata"]["namespace"] == "team"
    assert e["reportingController"] == "cloud-cni.io/ipamd" and e["reportingInstance"] == f"ipamd-{NODE}"
    assert e["eventTime"] and e["action"] == "AssignIP"


def test_checkpoint_recovered_is_an_event_on_the_node(cluster: Cluster) -> None:
    cluster.add_node()
    cluster.daemon.start()
    cluster.add("p", "u1")
    cluster.daemon.stop()
    checkpoint = cluster.daemon.checkpoint
    checkpoint.write_text(checkpoint.read_text()[:-20] + "garbage")
    cluster.daemon.start()
    events = wait_for(lambda: cluster.events("CheckpointRecovered"), what="CheckpointRecovered")
    assert events[0]["regarding"] == {"apiVersion": "v1", "kind": "Node", "name": NODE}
    assert events[0]["metadata"]["namespace"] == "default" and events[0]["type"] == "Warning"


# --- pod-gone -------------------------------------------------------------------------------------


def test_pod_gone_releases_only_when_absent_and_netns_gone(cluster: Cluster) -> None:
    cluster.add_node()
    cluster.daemon.start(POD_GONE_GRACE="1s", WARM_IP_TARGET="8")
    cluster.api.add_pod("default", "live", NODE, uid="u-live")
    cluster.api.add_pod("default", "deleted", NODE, uid="u-del")
    cluster.add("live", "u-live")
    ghost_ns = cluster.netns("ghost")
    cluster.add("ghost", "u-ghost", netns=ghost_ns)  # never in the API, its netns still there
    deleted_ns = cluster.netns("deleted")
    cluster.add("deleted", "u-del", netns=deleted_ns)
    wait_for(lambda: cluster.k8s()["watches"]["pods"]["synced"], what="pod watch")
    cluster.api.delete_pod("default", "deleted")
    deleted_ns.unlink()
    wait_for(lambda: "deleted" not in cluster.assignments(), timeout=15, what="release of the deleted pod")
    time.sleep(2.0)  # twice the grace: the others stay
    held = cluster.assignments()
    assert set(held) == {"live", "ghost"}
    assert held["live"]["pod_known"] is True and held["live"]["pod_state"] == "known"
    assert held["ghost"]["pod_known"] is False and held["ghost"]["pod_state"] == "absent"
    assert "cloudcni_pod_gone_released_total 1.0" in cluster.daemon.metrics()
    ghost_ns.unlink()
    wait_for(lambda: "ghost" not in cluster.assignments(), timeout=15, what="release once the netns is gone")
    gets = [r for r in cluster.api.requests if r.verb == "get" and r.resource == "pods"]
    assert {r.name for r in gets} >= {"deleted", "ghost"}  # each release re-checked with a live GET


def test_pod_gone_releases_nothing_while_the_api_is_down(cluster: Cluster) -> None:
    cluster.add_node()
    cluster.daemon.start(POD_GONE_GRACE="1s", WARM_IP_TARGET="8")
    wait_for(lambda: cluster.k8s()["watches"]["pods"]["synced"], what="pod watch")
    cluster.api.refuse()
    wait_for(lambda: not cluster.k8s()["watches"]["pods"]["synced"], what="pod watch lost")
    ns = cluster.netns("orphan")
    cluster.add("orphan", "u-o", netns=ns)
    ns.unlink()
    time.sleep(4.0)
    assert "orphan" in cluster.assignments()
    assert cluster.assignments()["orphan"]["pod_known"] is None
    cluster.api.accept()
    wait_for(lambda: "orphan" not in cluster.assignments(), timeout=40, what="release after the API is back")


def test_pod_gone_clock_restarts_after_a_relist(cluster: Cluster) -> None:
    cluster.add_node()
    cluster.daemon.start(POD_GONE_GRACE="60s", WARM_IP_TARGET="8")
    wait_for(lambda: cluster.k8s()["watches"]["pods"]["synced"], what="pod watch")
    cluster.add("absent", "u-a")  # netns present: never released here; its absence clock is what we watch
    first = wait_for(lambda: cluster.assignments()["absent"]["pod_absent_since"], what="absence noticed")
    relists = cluster.k8s()["watches"]["pods"]["relists"]
    time.sleep(0.2)
    cluster.api.fail_next(1, 410, path_contains="/api/v1/pods", verb="watch")
    cluster.api.drop_watches()  # the resumed watch is answered 410 Gone: re-list
    wait_for(lambda: cluster.k8s()["watches"]["pods"]["relists"] > relists, what="re-list after 410")
    again = wait_for(lambda: cluster.assignments()["absent"]["pod_absent_since"], what="absence seen again")
    assert again > first


def test_pod_recreated_with_the_same_name_keeps_the_old_assignment(cluster: Cluster) -> None:
    cluster.add_node()
    cluster.daemon.start(POD_GONE_GRACE="1s", WARM_IP_TARGET="8")
    cluster.api.add_pod("default", "web-0", NODE, uid="old")
    old_ns = cluster.netns("web-0-old")
    cluster.add("web-0", "old", netns=old_ns)
    wait_for(lambda: cluster.k8s()["watches"]["pods"]["synced"], what="pod watch")
    cluster.api.delete_pod("default", "web-0")
    cluster.api.add_pod("default", "web-0", NODE, uid="new")
    old_ns.unlink()
    wait_for(lambda: cluster.assignments()["web-0"]["pod_state"] == "replaced", what="replaced seen")
    time.sleep(3.0)
    assert cluster.assignments()["web-0"]["pod"]["uid"] == "old"  # a doubt: kept


def test_status_and_metrics_show_the_integration(cluster: Cluster) -> None:
    cluster.add_node(taints=[STARTUP_TAINT])
    cluster.daemon.start()
    wait_for(lambda: not cluster.has_startup_taint(), what="taint removal")
    state = cluster.k8s()
    assert state["integration"] == "on" and state["node"] == NODE
    assert state["api"]["reachable"] is True
    assert state["node_capacity_pods"] == 110
    # the taint's event goes out from the recorder's thread, after the removal: wait for it
    state = wait_for(lambda: (s := cluster.k8s())["events"]["sent"] >= 1 and s, what="the event sent")
    metrics = cluster.daemon.metrics()
    assert 'cloudcni_k8s_requests_total{code="200",resource="nodes",verb="patch"}' in metrics
    logs = [json.loads(line) for line in cluster.daemon.logs().splitlines() if line.startswith("{")]
    assert any(e.get("event") == "kubernetes_integration_on" for e in logs)


# --- AWS: ENIConfig custom networking and the providerID check, on moto --------------------------


@pytest.fixture
def aws_cluster(
    kube_apiserver: KubeApiServer, moto_ec2: MotoEc2, tmp_path: Path
) -> Iterator[tuple[Cluster, Node]]:
    node = make_node(moto_ec2, "m5.large")
    proxy = Ec2Proxy(upstream=moto_ec2.endpoint).start()
    imds = start_fake_imds(moto_ec2, node)
    c = Cluster(kube_apiserver, tmp_path)
    c.proxy = proxy
    c.daemon.env.update(
        CLOUD_PROVIDER="aws",
        AWS_ENDPOINT_URL=proxy.url,
        AWS_EC2_METADATA_SERVICE_ENDPOINT=imds.url,
        AWS_REGION=REGION,
        CLUSTER_NAME="test-cluster",
        CLOUD_API_RATE="50",
        CLOUD_API_BURST="50",
        **CREDENTIALS,
    )
    yield c, node
    if c.daemon.proc is not None and c.daemon.proc.poll() is None:
        c.daemon.kill()
    proxy.stop()
    imds.stop()
    assert_allowed(RULES, kube_apiserver.requests)


def pod_subnet(node: Node, cidr: str) -> tuple[str, str]:
    ec2 = node.moto.client()
    subnet = ec2.create_subnet(VpcId=node.vpc_id, CidrBlock=cidr, AvailabilityZone=AZ)["Subnet"]["SubnetId"]
    group = ec2.create_security_group(GroupName=f"pods-{cidr[5:7]}", Description="pods", VpcId=node.vpc_id)
    return subnet, group["GroupId"]


def test_eniconfig_places_pod_enis_and_a_label_change_affects_only_new_ones(
    aws_cluster: tuple[Cluster, Node],
) -> None:
    cluster, node = aws_cluster
    subnet_a, sg_a = pod_subnet(node, "10.0.64.0/20")
    subnet_b, sg_b = pod_subnet(node, "10.0.80.0/20")
    cluster.api.put_eniconfig("pods-a", {"subnet": subnet_a, "securityGroups": [sg_a]})
    cluster.api.put_eniconfig("pods-b", {"subnet": subnet_b, "securityGroups": [sg_b]})
    cluster.api.add_node(
        NODE,
        labels={"k8s.amazonaws.com/eniConfig": "pods-a"},
        provider_id=f"aws:///{AZ}/{node.instance_id}",
    )
    # WARM_ENI_TARGET=1 on m5.large: one secondary ENI of 9 addresses, none on the primary.
    cluster.daemon.start(AWS_VPC_K8S_CNI_CUSTOM_NETWORK_CFG="true", POOL_RELEASE_DELAY="300")

    def secondaries() -> list[dict[str, Any]]:
        return [e for e in node.interfaces() if e["Attachment"]["DeviceIndex"] > 0]

    wait_for(lambda: len(secondaries()) == 1, timeout=30, what="the first pod ENI")
    (first,) = secondaries()
    assert first["SubnetId"] == subnet_a
    pool = cluster.daemon.get("/v1/pool")
    assert pool["max"] == 20  # (3 - 1) x 9 + 2
    primary = next(i for i in pool["interfaces"] if i["primary"])
    assert primary["ips"] == []
    # The label now names pods-b: the next ENI goes there; the first stays where it is.
    cluster.api.patch_node_direct(
        NODE, lambda n: n["metadata"]["labels"].update({"k8s.amazonaws.com/eniConfig": "pods-b"})
    )
    time.sleep(1.0)
    for i in range(9):  # fill the first ENI: WARM_ENI_TARGET=1 attaches the second
        cluster.add(f"p{i}", f"u{i}")
    wait_for(lambda: len(secondaries()) == 2, timeout=30, what="the second pod ENI")
    by_index = {e["Attachment"]["DeviceIndex"]: e for e in secondaries()}
    assert by_index[1]["NetworkInterfaceId"] == first["NetworkInterfaceId"]
    assert by_index[1]["SubnetId"] == subnet_a
    assert by_index[2]["SubnetId"] == subnet_b
    groups = {i: {g["GroupId"] for g in e["Groups"]} for i, e in by_index.items()}
    assert sg_a in groups[1] and sg_b not in groups[1]
    assert sg_b in groups[2] and sg_a not in groups[2]


def test_a_missing_eniconfig_holds_growth_with_an_event(aws_cluster: tuple[Cluster, Node]) -> None:
    cluster, node = aws_cluster
    cluster.api.add_node(NODE, labels={"k8s.amazonaws.com/eniConfig": "nope"})
    cluster.daemon.start(AWS_VPC_K8S_CNI_CUSTOM_NETWORK_CFG="true")
    events = wait_for(lambda: cluster.events("ENIConfigInvalid"), what="ENIConfigInvalid event")
    assert "'nope'" in events[0]["note"] and "does not exist" in events[0]["note"]
    pool = cluster.daemon.get("/v1/pool")
    assert "ENIConfig" in (pool["growth_hold"] or "")
    assert len(node.interfaces()) == 1  # nothing created
    subnet, sg = pod_subnet(node, "10.0.96.0/20")
    cluster.api.put_eniconfig("nope", {"subnet": subnet, "securityGroups": [sg]})
    wait_for(lambda: len(node.interfaces()) == 2, timeout=30, what="growth once the ENIConfig exists")
    assert cluster.daemon.get("/v1/pool")["growth_hold"] is None


def test_a_node_that_names_another_instance_stops_the_daemon(aws_cluster: tuple[Cluster, Node]) -> None:
    cluster, node = aws_cluster
    cluster.api.add_node(NODE, provider_id=f"aws:///{AZ}/i-0123456789abcdef0")
    cluster.daemon.start(wait=False)
    proc = cluster.daemon.proc
    assert proc is not None
    assert proc.wait(30) == 1
    last = [line for line in cluster.daemon.logs().splitlines() if not line.startswith("{")]
    assert len(last) == 1
    assert "i-0123456789abcdef0" in last[0] and node.instance_id in last[0] and "NODE_NAME" in last[0]


def test_sustained_throttling_is_one_cloud_throttled_event(aws_cluster: tuple[Cluster, Node]) -> None:
    cluster, node = aws_cluster
    assert cluster.proxy is not None
    cluster.api.add_node(NODE, provider_id=f"aws:///{AZ}/{node.instance_id}")
    cluster.proxy.fail("AssignPrivateIpAddresses", "RequestLimitExceeded", times=12)
    cluster.daemon.start(WARM_IP_TARGET="5")
    events = wait_for(lambda: cluster.events("CloudThrottled"), timeout=40, what="CloudThrottled event")
    assert events[0]["type"] == "Warning" and "throttled 5 calls" in events[0]["note"]
    wait_for(lambda: cluster.daemon.get("/v1/pool")["total"] >= 5, timeout=60, what="growth after the storm")
    assert len(cluster.events("CloudThrottled")) == 1  # repeats are one event's series


def test_pods_waiting_at_the_nodes_limit_are_reported(cluster: Cluster) -> None:
    cluster.add_node()
    cluster.daemon.start(MAX_PODS="3", WARM_IP_TARGET="3", ADD_WAIT_TIMEOUT="1")
    cluster.daemon.wait_pool(lambda p: p["total"] == 3)
    for i in range(3):
        cluster.api.add_pod("default", f"p{i}", NODE, uid=f"u{i}")
        cluster.add(f"p{i}", f"u{i}")
    cluster.api.add_pod("default", "p3", NODE, uid="u3")
    with pytest.raises(CniFailure) as failed:
        cluster.add("p3", "u3")
    assert failed.value.cni_code == 11  # try again later
    limit = wait_for(lambda: cluster.events("InterfaceLimitReached"), what="InterfaceLimitReached")
    assert "p3" in limit[0]["note"] and "max pods 3" in limit[0]["note"]
    delayed = wait_for(lambda: cluster.events("IPAllocationDelayed"), what="IPAllocationDelayed")
    assert delayed[0]["regarding"]["name"] == "p3" and delayed[0]["type"] == "Warning"


def test_a_taint_written_by_someone_else_during_the_removal_is_kept(cluster: Cluster) -> None:
    """The JSON patch tests the list it read: a concurrent writer's change makes it fail (422, as the
    API server answers a failed test op); the daemon re-reads and removes only its taint."""
    cluster.add_node(taints=[STARTUP_TAINT])
    late = {"key": "example.com/late", "effect": "NoExecute"}
    raced: list[bool] = []

    def race(request: Any) -> float:
        if request.verb == "patch" and not raced:
            raced.append(True)  # another controller writes the taints between our GET and PATCH
            cluster.api.patch_node_direct(NODE, lambda n: n["spec"]["taints"].append(dict(late)))
        return 0.0

    cluster.api.latency = race
    cluster.daemon.start()
    wait_for(lambda: not cluster.has_startup_taint(), what="taint removal")
    assert cluster.taints() == [late]
    patches = [r for r in cluster.api.requests if r.verb == "patch" and r.resource == "nodes"]
    assert [r.status for r in patches] == [422, 200]
