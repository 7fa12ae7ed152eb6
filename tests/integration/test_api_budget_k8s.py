"""CLOUD_API_BUDGET end to end: the real daemon (sim cloud) with the real ``kubernetes`` client
against the fake kube-apiserver (tests/fakes/kube_apiserver.py) holding many Nodes.

The daemon counts the Nodes with ``GET /api/v1/nodes?limit=1`` and shares the budget among them:
/v1/k8s and /metrics show the count and each class's per-node rate, a new count re-shares it, and
the daemon's cloud calls stay within what the shares allow. Every request is checked against
deploy/rbac.yaml.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ipamd.cloud.budget import ACCOUNT_CAPACITY, operation_cost
from tests.fakes.kube_apiserver import KubeApiServer
from tests.fakes.rbac import assert_allowed, load_rules

from .conftest import ROOT, DaemonProcess, daemon_env
from .test_k8s_daemon import wait_for

pytestmark = pytest.mark.integration

NODE = "ip-10-0-0-10.ec2.internal"
RULES = load_rules(ROOT / "deploy" / "rbac.yaml")
BUDGET = {"assign": 4.0, "interface": 4.0, "attach": 4.0, "describe": 16.0}
BUDGET_ENV = ",".join(f"{cls}={rate:g}" for cls, rate in BUDGET.items())


def add_nodes(api: KubeApiServer, first: int, count: int) -> None:
    for i in range(first, first + count):
        api.add_node(
            f"ip-10-0-{i // 250}-{i % 250 + 20}.ec2.internal", internal_ip=f"10.0.{i // 250}.{i % 250}"
        )


@pytest.fixture
def daemon(kube_apiserver: KubeApiServer, tmp_path: Path) -> Iterator[DaemonProcess]:
    d = DaemonProcess(
        dir=tmp_path,
        env=daemon_env(
            tmp_path,
            KUBECONFIG=kube_apiserver.kubeconfig(tmp_path / "kubeconfig"),
            NODE_NAME=NODE,
            KUBERNETES_INTEGRATION="on",
            STARTUP_TAINT="",
        ),
    )
    yield d
    if d.proc is not None and d.proc.poll() is None:
        d.kill()
    assert_allowed(RULES, kube_apiserver.requests)


def budget_view(d: DaemonProcess) -> dict[str, Any]:
    view = d.get("/v1/k8s")["cloud_api_budget"]
    assert isinstance(view, dict)
    return view


def metric(text: str, name: str, labels: str = "") -> float:
    match = re.search(rf"^{name}{re.escape(labels)} (\S+)$", text, re.MULTILINE)
    assert match, f"{name}{labels} not exported"
    return float(match.group(1))


def calls_by_operation(text: str) -> dict[str, float]:
    calls: dict[str, float] = {}
    for op, value in re.findall(
        r'^cloudcni_cloud_calls_total\{operation="(\w+)",outcome="[^"]+"\} (\S+)$', text, re.M
    ):
        calls[op] = calls.get(op, 0.0) + float(value)
    return calls


def test_each_node_takes_budget_over_the_node_count_and_follows_the_count(
    kube_apiserver: KubeApiServer, daemon: DaemonProcess
) -> None:
    api = kube_apiserver
    api.add_node(NODE)
    add_nodes(api, 0, 49)  # 50 Nodes
    daemon.start(CLOUD_API_BUDGET=BUDGET_ENV, CLOUD_API_BUDGET_POLL_INTERVAL="1")

    view = wait_for(lambda: (v := budget_view(daemon))["source"] == "api" and v, what="the first count")
    assert view["nodes"] == 50 and view["assumed_nodes"] == 100 and view["poll_interval_seconds"] == 1.0
    assert view["age_seconds"] < 5.0 and view["last_error"] is None
    for cls, rate in BUDGET.items():
        share = view["classes"][cls]
        assert share["budget"] == rate
        assert share["rate"] == pytest.approx(rate / 50)
        assert share["capacity"] == pytest.approx(ACCOUNT_CAPACITY[cls] / 50)
    metrics = daemon.metrics()
    assert metric(metrics, "cloudcni_cloud_api_budget_nodes") == 50
    assert metric(metrics, "cloudcni_cloud_api_budget_rate", '{class="describe"}') == pytest.approx(0.32)
    config = daemon.get("/v1/config")
    assert config["CLOUD_API_BUDGET"] == BUDGET and config["CLOUD_API_BUDGET_POLL_INTERVAL"] == 1.0

    add_nodes(api, 49, 50)  # 100 Nodes: at the next poll every share halves
    view = wait_for(
        lambda: (v := budget_view(daemon))["nodes"] == 100 and v, timeout=10, what="the new count"
    )
    for cls, rate in BUDGET.items():
        assert view["classes"][cls]["rate"] == pytest.approx(rate / 100)
        assert view["classes"][cls]["capacity"] == pytest.approx(ACCOUNT_CAPACITY[cls] / 100)
    assert metric(daemon.metrics(), "cloudcni_cloud_api_budget_rate", '{class="assign"}') == pytest.approx(
        0.04
    )
    changes = [e for e in daemon.events() if e.get("event") == "node_count_changed"]
    assert [(e["previous"], e["nodes"]) for e in changes] == [(100, 50), (50, 100)]

    counts = [r for r in api.requests if r.verb == "list" and r.resource == "nodes" and "limit" in r.query]
    assert len(counts) >= 2
    assert all(r.query == {"limit": "1"} for r in counts), (
        "a consistent read: no resourceVersion, no selector"
    )
    daemon.stop()


def test_the_shares_pace_the_daemons_cloud_calls(
    kube_apiserver: KubeApiServer, daemon: DaemonProcess
) -> None:
    api = kube_apiserver
    api.add_node(NODE)
    add_nodes(api, 0, 49)  # 50 Nodes
    budget = {"assign": 25.0, "interface": 50.0, "attach": 25.0, "describe": 100.0}
    # This node's share: 0.5 attach calls per second, 1 of burst. 300 addresses on c5.18xlarge (49 per
    # ENI) take 6 new ENIs: one every 2 s here, where CLOUD_API_RATE alone (5/s) allows them at once.
    started = time.monotonic()
    daemon.start(
        CLOUD_API_BUDGET=",".join(f"{cls}={rate:g}" for cls, rate in budget.items()),
        SIM_INSTANCE_TYPE="c5.18xlarge",
        MINIMUM_IP_TARGET="300",
    )
    daemon.wait_pool(lambda p: p["total"] >= 300, timeout=60)
    elapsed = time.monotonic() - started
    calls = calls_by_operation(daemon.metrics())
    assert calls["attach_interface"] >= 6
    assert elapsed >= (calls["attach_interface"] - 1) / 0.5 - 1.0, "the attach share paced the ENIs"
    for cls, rate in budget.items():  # what each class's share allows, one whole call on top
        spent = sum(n * operation_cost("sim", op).get(cls, 0) for op, n in calls.items())
        share = rate / 50
        assert spent <= share * elapsed + max(ACCOUNT_CAPACITY[cls] / 50, 2.0), (cls, spent, elapsed, calls)
    daemon.stop()


def test_a_node_whose_calls_wait_reads_the_count_again_within_the_busy_interval(
    kube_apiserver: KubeApiServer, daemon: DaemonProcess
) -> None:
    """A scale-up seen by a busy node within CLOUD_API_BUDGET_BUSY_POLL_INTERVAL, not at the next
    CLOUD_API_BUDGET_POLL_INTERVAL (an hour here): its pool's growth waits for an assign share of
    0.02/50 calls per second, so its budget stays in debt."""
    api = kube_apiserver
    api.add_node(NODE)
    add_nodes(api, 0, 49)  # 50 Nodes
    daemon.start(
        CLOUD_API_BUDGET="assign=0.02",
        CLOUD_API_BUDGET_POLL_INTERVAL="1h",
        CLOUD_API_BUDGET_BUSY_POLL_INTERVAL="1",
        MINIMUM_IP_TARGET="60",
    )
    view = wait_for(lambda: (v := budget_view(daemon))["busy"] and v, what="calls waiting for the share")
    assert view["nodes"] == 50 and view["busy_poll_interval_seconds"] == 1.0
    add_nodes(api, 49, 50)  # 100 Nodes
    view = wait_for(lambda: (v := budget_view(daemon))["nodes"] == 100 and v, timeout=10, what="a busy poll")
    assert view["busy_polls"] >= 1 and view["classes"]["assign"]["rate"] == pytest.approx(0.0002)
    daemon.stop()


def test_an_idle_node_waits_for_the_poll_interval(
    kube_apiserver: KubeApiServer, daemon: DaemonProcess
) -> None:
    api = kube_apiserver
    api.add_node(NODE)
    add_nodes(api, 0, 49)
    daemon.start(
        CLOUD_API_BUDGET=BUDGET_ENV,
        CLOUD_API_BUDGET_POLL_INTERVAL="1h",
        CLOUD_API_BUDGET_BUSY_POLL_INTERVAL="1",
    )
    daemon.wait_pool(lambda p: p["total"] >= 1, timeout=30)
    settled = wait_for(
        lambda: not (v := budget_view(daemon))["busy"] and v, what="the pool settled, no call waiting"
    )
    add_nodes(api, 49, 50)
    time.sleep(3.0)  # three busy intervals: an idle node does not read the count again
    view = budget_view(daemon)
    assert not view["busy"], "a call waited: the test's premise (an idle node) did not hold"
    assert view["nodes"] == 50 and view["busy_polls"] == settled["busy_polls"]
    assert view["polls"] == settled["polls"]
    daemon.stop()


def test_the_count_is_kept_while_the_api_is_down(
    kube_apiserver: KubeApiServer, daemon: DaemonProcess
) -> None:
    api = kube_apiserver
    api.add_node(NODE)
    add_nodes(api, 0, 19)  # 20 Nodes
    daemon.start(CLOUD_API_BUDGET="assign=4", CLOUD_API_BUDGET_POLL_INTERVAL="1")
    wait_for(lambda: budget_view(daemon)["nodes"] == 20, what="the first count")
    api.refuse()
    view = wait_for(lambda: (v := budget_view(daemon))["failures_in_a_row"] >= 2 and v, what="failed polls")
    assert view["nodes"] == 20 and view["source"] == "api" and view["last_error"]
    assert view["classes"]["assign"]["rate"] == pytest.approx(0.2)
    api.accept()
    add_nodes(api, 19, 20)
    view = wait_for(lambda: (v := budget_view(daemon))["nodes"] == 40 and v, timeout=30, what="a count again")
    assert view["failures_in_a_row"] == 0 and view["classes"]["assign"]["rate"] == pytest.approx(0.1)
    daemon.stop()


def test_the_budget_needs_the_integration(tmp_path: Path) -> None:
    d = DaemonProcess(
        dir=tmp_path, env=daemon_env(tmp_path, CLOUD_API_BUDGET="assign=4", KUBERNETES_INTEGRATION="auto")
    )
    d.env.pop("KUBECONFIG", None)
    d.env.pop("KUBERNETES_SERVICE_HOST", None)
    d.start(wait=False)
    assert d.proc is not None
    assert d.proc.wait(20) == 2
    *logged, last = d.logs().strip().splitlines()
    assert [json.loads(line)["event"] for line in logged] == ["kubernetes_integration_off"]  # nothing touched
    assert last.startswith("cloud-cni ipamd: CLOUD_API_BUDGET=") and "Kubernetes integration" in last
