"""The Kubernetes layer's pure parts: Node parsing, the taint, providerID, the pod index and the
pod-gone clock, the integration decision, the new settings."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ipamd.config import Settings, _duration, _taint
from ipamd.errors import ConfigError
from ipamd.events import ThrottleWatch
from ipamd.k8s.integration import decide
from ipamd.k8s.node import NodeCache, TaintSpec, parse_node, provider_id_mismatch
from ipamd.k8s.pods import PodGoneTracker, PodIndex, parse_pod, pod_state
from ipamd.pool.model import Assignment, AttachmentKey, ContainerID, IfName, InterfaceId, PodRef

NODE = "ip-10-0-0-1.ec2.internal"
VM1 = "/subscriptions/S/resourceGroups/RG/providers/Microsoft.Compute/virtualMachines/vm1"
STARTUP = TaintSpec.parse("node.cloud-cni.io/agent-not-ready:NoSchedule")


def node_obj(**over: Any) -> dict[str, Any]:
    obj: dict[str, Any] = {
        "metadata": {"name": NODE, "resourceVersion": "7", "labels": {"a": "b"}, "annotations": {}},
        "spec": {
            "providerID": "aws:///us-east-1a/i-0123456789abcdef0",
            "taints": [
                {"key": "node.cloud-cni.io/agent-not-ready", "effect": "NoSchedule"},
                {"key": "other", "value": "x", "effect": "NoExecute"},
            ],
        },
        "status": {"capacity": {"pods": "58"}},
    }
    for path, value in over.items():
        section, key = path.split("__")
        obj[section][key] = value
    return obj


def pod(ns: str, name: str, uid: str, node: str = NODE) -> dict[str, Any]:
    return {"metadata": {"namespace": ns, "name": name, "uid": uid}, "spec": {"nodeName": node}}


def assignment(
    name: str, uid: str = "u1", netns: str = "/var/run/netns/cni-1", ns: str = "default"
) -> Assignment:
    key = AttachmentKey("cloud-cni", ContainerID(f"c-{name}"), IfName("eth0"))
    return Assignment(key, "10.0.0.5", InterfaceId("eni-1"), PodRef(ns, name, uid), 0.0, netns)


# --- Node ------------------------------------------------------------------------------------------


def test_parse_node_reads_the_fields_used() -> None:
    info = parse_node(node_obj())
    assert info.capacity_pods == 58
    assert info.provider_id.endswith("i-0123456789abcdef0")
    assert info.has_taint(STARTUP)
    assert info.labels == {"a": "b"}


@pytest.mark.parametrize(
    ("over", "field"),
    [
        pytest.param({"spec__taints": "x"}, "spec.taints", id="taints-not-list"),
        pytest.param({"spec__taints": ["x"]}, "spec.taints", id="taint-not-object"),
        pytest.param({"spec__providerID": 5}, "spec.providerID", id="provider-id-not-string"),
        pytest.param({"metadata__labels": {"a": 1}}, "metadata.labels", id="label-not-string"),
        pytest.param({"metadata__name": ""}, "metadata.name", id="no-name"),
    ],
)
def test_parse_node_names_the_bad_field(over: dict[str, Any], field: str) -> None:
    with pytest.raises(ValueError, match=field):
        parse_node(node_obj(**over))


@pytest.mark.parametrize(
    ("pods", "expected"),
    [("110", 110), ("0", None), ("-3", None), ("1k", None), ("99999", None), (None, None)],
)
def test_capacity_pods_validated(pods: str | None, expected: int | None) -> None:
    assert parse_node(node_obj(status__capacity={"pods": pods})).capacity_pods == expected


def test_node_cache_keeps_the_last_good_object() -> None:
    cache = NodeCache(NODE)
    cache.replace([node_obj()])
    assert cache.node is not None
    cache.apply("MODIFIED", node_obj(spec__taints="broken"))
    assert cache.node is not None and cache.invalid == 1
    cache.apply("MODIFIED", {"metadata": {"name": "someone-else"}})
    assert cache.node is not None
    cache.apply("DELETED", node_obj())
    assert cache.node is None


@pytest.mark.parametrize(
    ("taint", "spec", "matches"),
    [
        ({"key": "k", "effect": "NoSchedule"}, "k:NoSchedule", True),
        ({"key": "k", "value": "v", "effect": "NoSchedule"}, "k:NoSchedule", True),
        ({"key": "k", "value": "v", "effect": "NoSchedule"}, "k=v:NoSchedule", True),
        ({"key": "k", "value": "w", "effect": "NoSchedule"}, "k=v:NoSchedule", False),
        ({"key": "k", "effect": "NoExecute"}, "k:NoSchedule", False),
        ({"key": "other", "effect": "NoSchedule"}, "k:NoSchedule", False),
        ("k:NoSchedule", "k:NoSchedule", False),
    ],
)
def test_taint_matching(taint: Any, spec: str, matches: bool) -> None:
    assert TaintSpec.parse(spec).matches(taint) is matches


@pytest.mark.parametrize(
    ("provider_id", "cloud", "ref", "mismatch"),
    [
        ("aws:///us-east-1a/i-0123", "aws", "i-0123", False),
        ("aws:///us-east-1a/i-0123", "aws", "i-0999", True),
        ("gce://p/z/i-0123", "aws", "i-0123", True),
        ("", "aws", "i-0123", False),  # no providerID yet (cloud controller not done): not checkable
        ("aws:///us-east-1a/i-0123", "aws", None, False),
        ("aws:///us-east-1a/i-0123", "sim", "anything", False),
        ("azure://" + VM1, "azure", VM1.lower().replace("virtualmachines/vm1", "virtualMachines/VM1"), False),
        ("azure://" + VM1, "azure", VM1.replace("vm1", "vm2"), True),
    ],
)  # fmt: skip
def test_provider_id_check(provider_id: str, cloud: str, ref: str | None, mismatch: bool) -> None:
    why = provider_id_mismatch(provider_id, cloud, ref)
    assert bool(why) is mismatch
    if mismatch:
        assert provider_id in why and str(ref) in why


# --- pods ------------------------------------------------------------------------------------------


def test_parse_pod_rejects_other_nodes_and_malformed() -> None:
    assert parse_pod(pod("ns", "a", "u"), NODE) is not None
    assert parse_pod(pod("ns", "a", "u", node="other"), NODE) is None
    assert parse_pod({"metadata": {"name": "a"}, "spec": {"nodeName": NODE}}, NODE) is None
    assert parse_pod({"metadata": "x"}, NODE) is None


def test_pod_index_follows_events() -> None:
    index = PodIndex(NODE)
    index.replace([pod("ns", "a", "u1"), pod("ns", "b", "u2"), {"bad": 1}])
    assert index.lookup("ns", "a") == "u1" and len(index) == 2 and index.malformed == 1
    index.apply("ADDED", pod("ns", "c", "u3"))
    index.apply("MODIFIED", pod("ns", "a", "u1b"))  # recreated with the same name
    assert index.lookup("ns", "a") == "u1b"
    index.apply("DELETED", pod("ns", "a", "u1"))  # a late delete of the old uid keeps the new pod
    assert index.lookup("ns", "a") == "u1b"
    index.apply("DELETED", pod("ns", "a", "u1b"))
    assert index.lookup("ns", "a") is None
    index.apply("MODIFIED", {"metadata": {"namespace": "ns", "name": "b"}, "spec": {}})  # malformed
    assert index.lookup("ns", "b") == "u2"


@pytest.mark.parametrize(
    ("present", "a", "synced", "state"),
    [
        ({("default", "p"): "u1"}, assignment("p", "u1"), True, "known"),
        ({("default", "p"): "u2"}, assignment("p", "u1"), True, "replaced"),
        ({("default", "p"): "u2"}, assignment("p", ""), True, "known"),
        ({}, assignment("p", "u1"), True, "absent"),
        ({}, assignment("p", "u1"), False, "unknown"),
        ({}, assignment("", ""), True, "unknown"),  # no pod name in CNI_ARGS
    ],
)
def test_pod_state(present: dict[tuple[str, str], str], a: Assignment, synced: bool, state: str) -> None:
    index = PodIndex(NODE)
    index.replace([pod(ns, name, uid) for (ns, name), uid in present.items()])
    assert pod_state(a, index, synced) == state


def test_tracker_needs_the_whole_grace_while_synced() -> None:
    index = PodIndex(NODE)
    index.replace([])
    tracker = PodGoneTracker(grace=900)
    gone = assignment("p")
    assert tracker.observe([gone], index, True, now=1000) == []
    assert tracker.observe([gone], index, True, now=1899) == []
    assert tracker.observe([gone], index, False, now=1900) == []  # lost sync: the clock starts over
    assert tracker.observe([gone], index, True, now=1901) == []
    assert tracker.observe([gone], index, True, now=2800) == []
    assert tracker.observe([gone], index, True, now=2801) == [gone]
    index.apply("ADDED", pod("default", "p", "u9"))  # same name, new uid: a doubt, kept
    assert tracker.observe([gone], index, True, now=5000) == []
    assert gone.key not in tracker.absent_since


@given(
    events=st.lists(
        st.tuples(st.sampled_from(["present", "absent", "unsynced"]), st.floats(0, 400)), max_size=40
    ),
    grace=st.floats(1, 1000),
)
def test_tracker_never_releases_before_a_synced_grace(events: list[tuple[str, float]], grace: float) -> None:
    """Whatever the sequence, an assignment is due only after ``grace`` seconds of synced absence."""
    index = PodIndex(NODE)
    tracker = PodGoneTracker(grace=grace)
    a = assignment("p")
    now = 0.0
    absent_from: float | None = None
    for kind, step in events:
        now += step
        index.replace([pod("default", "p", "u1")] if kind == "present" else [])
        synced = kind != "unsynced"
        due = tracker.observe([a], index, synced, now)
        absent_from = (now if absent_from is None else absent_from) if kind == "absent" else None
        if due:
            assert absent_from is not None and now - absent_from >= grace


# --- the integration decision and settings -------------------------------------------------------


def test_decide(tmp_path: Path) -> None:
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text("apiVersion: v1\n")
    assert decide({}, "off", str(kubeconfig), NODE) is None
    assert decide({}, "auto", None, NODE) is None
    assert decide({}, "auto", str(tmp_path / "missing"), NODE) is None
    source = decide({}, "auto", str(kubeconfig), NODE)
    assert source is not None and source.kind == "kubeconfig"
    with pytest.raises(
        ConfigError, match=r"KUBERNETES_INTEGRATION.*KUBERNETES_SERVICE_HOST is unset.*KUBECONFIG"
    ):
        decide({}, "on", None, NODE)
    with pytest.raises(ConfigError, match="NODE_NAME"):
        decide({}, "auto", str(kubeconfig), None)


@pytest.mark.parametrize(
    ("raw", "seconds"),
    [("300", 300), ("5m", 300), ("1h30m", 5400), ("90s", 90), ("1m30s", 90), ("0", 0), ("2.5m", 150)],
)
def test_durations(raw: str, seconds: float) -> None:
    assert _duration(raw) == seconds


@pytest.mark.parametrize("raw", ["5x", "m", "-5m", "1h1h", "5ms", "inf"])
def test_bad_durations(raw: str) -> None:
    with pytest.raises(ValueError, match="duration"):
        _duration(raw)


@pytest.mark.parametrize(
    ("raw", "ok"),
    [
        ("node.cloud-cni.io/agent-not-ready:NoSchedule", True),
        ("k=v:NoExecute", True),
        ("k:PreferNoSchedule", True),
        ("", True),
        ("k:NoSchedul", False),
        ("k", False),
        ("bad key:NoSchedule", False),
        ("k=bad value:NoSchedule", False),
        ("/k:NoSchedule", False),
    ],
)
def test_startup_taint_setting(raw: str, ok: bool) -> None:
    if ok:
        assert _taint(raw) == raw
    else:
        with pytest.raises(ValueError, match="Effect"):
            _taint(raw)


def test_settings_errors_name_the_variable() -> None:
    base = {"CLOUD_PROVIDER": "sim"}
    for name, value in [
        ("NODE_NAME", "Not_A_Node"),
        ("STARTUP_TAINT_TIMEOUT", "soon"),
        ("POD_GONE_GRACE", "-1"),
        ("KUBERNETES_INTEGRATION", "maybe"),
        ("ENI_CONFIG_LABEL_DEF", "not a key"),
        ("AZURE_POD_SUBNET_ID", "subnet-1"),
    ]:
        with pytest.raises(ConfigError, match=name):
            Settings.from_env({**base, name: value})
    with pytest.raises(ConfigError, match="AWS_VPC_K8S_CNI_CUSTOM_NETWORK_CFG"):
        Settings.from_env({**base, "AWS_VPC_K8S_CNI_CUSTOM_NETWORK_CFG": "true"})
    assert Settings.from_env({**base, "MY_NODE_NAME": NODE}).node_name == NODE
    assert Settings.from_env({**base, "STARTUP_TAINT": ""}).startup_taint == ""  # set empty: off
    assert Settings.from_env(base).startup_taint.startswith("node.cloud-cni.io/")
    assert Settings.from_env({**base, "MY_NODE_NAME": "a", "NODE_NAME": NODE}).node_name == NODE


# --- sustained throttling ----------------------------------------------------------------------


def test_throttle_watch_reports_only_sustained_throttling() -> None:
    now = [0.0]
    reports: list[str] = []
    seen: list[str] = []

    class Inner:
        def on_call(self, operation: str, outcome: str, seconds: float) -> None:
            seen.append(outcome)

    watch = ThrottleWatch(Inner(), reports.append, threshold=5, window=60, clock=lambda: now[0])
    for _ in range(4):
        watch.on_call("assign_ips", "throttled", 0.1)
        now[0] += 20  # 4 within 60 s never: spread out
    assert reports == []
    for _ in range(5):
        watch.on_call("assign_ips", "throttled", 0.1)
    assert len(reports) == 1 and "assign_ips" in reports[0]
    assert len(seen) == 9
