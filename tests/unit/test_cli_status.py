"""`cloud-cni status` and `cloud-cni config check`: the pure renderers table-tested with documents
shaped as the daemon's introspection serves them, and the commands run against a local HTTP fake."""

from __future__ import annotations

import copy
import json
import re
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from ipamd import cli, status
from ipamd.config import VARIABLES, Settings
from ipamd.errors import ConfigError

NOW = 1_800_000_000.0
AT_MAX = "the pool holds its maximum: 29 addresses (max pods 29, 3 interfaces of 9 slots)"

# As GET /v1/pool and /v1/assignments answer on the sim provider (captured, addresses trimmed).
POOL: dict[str, Any] = {
    "assigned": 2,
    "available": 15,
    "cooling": 1,
    "growth_paused_until": None,
    "interfaces": [
        {
            "device_index": 1,
            "id": "eni-9978a2ebef37",
            "ips": [f"10.0.0.{n}" for n in range(15, 24)],
            "prefixes": [],
            "primary": False,
            "subnet_cidr": "10.0.0.0/22",
            "subnet_id": "subnet-sim",
        },
        {
            "device_index": 0,
            "id": "eni-26eb67b87691",
            "ips": [f"10.0.0.{n}" for n in range(5, 14)],
            "prefixes": [],
            "primary": True,
            "subnet_cidr": "10.0.0.0/22",
            "subnet_id": "subnet-sim",
        },
    ],
    "max": 29,
    "quarantined": 0,
    "total": 18,
}


def assignment(
    n: int, *, ns: str = "shop", name: str | None = None, age: float = 200.0, **extra: Any
) -> dict[str, Any]:
    cid = f"c0ffee{n:04d}" + "ab" * 28
    return {
        "assigned_at": NOW - age,
        "container_id": cid,
        "ifname": "eth0",
        "interface_id": "eni-26eb67b87691",
        "ip": f"10.0.{n // 250}.{n % 250 + 5}",
        "netns": f"/var/run/netns/{cid[:12]}",
        "network": "cloud-cni",
        "orphaned": False,
        "pod": {"name": name or f"web-{n}", "namespace": ns, "uid": f"uid-{n}"},
        **extra,
    }


K8S: dict[str, Any] = {
    "integration": "on",
    "node": "ip-10-0-0-4.ec2.internal",
    "api": {"reachable": True, "last_error": None},
    "watches": {
        "pods": {"synced": True, "resource_version": "48213", "relists": 1, "restarts": 0},
        "eniconfigs": {"synced": False, "resource_version": None, "relists": 0, "restarts": 3},
        "node": {"synced": True, "resource_version": "48190", "relists": 0, "restarts": 0},
    },
    "startup_taint": {"taint": "node.cloud-cni.io/agent-not-ready:NoSchedule", "state": "removed"},
    "events": {"sent": 4, "dropped": 0, "queued": 0},
    "pods_on_node": 17,
}


def test_status_of_a_running_sim_node() -> None:
    assignments = [assignment(2, age=3725), assignment(0, age=42)]
    text = status.render_status(POOL, assignments, K8S, now=NOW)
    assert text == (
        "Pool: 18 addresses held (max 29): 2 assigned, 15 available, 1 cooling, 0 quarantined\n"
        "Growth: not paused (this daemon does not report holds or limits)\n"
        "\n"
        "Interfaces (2)\n"
        "ID                DEVICE  PRIMARY  SUBNET                    IPS  PREFIXES\n"
        "eni-26eb67b87691       0  yes      subnet-sim (10.0.0.0/22)    9  -\n"
        "eni-9978a2ebef37       1  no       subnet-sim (10.0.0.0/22)    9  -\n"
        "\n"
        "Assignments (2)\n"
        "IP        INTERFACE         CONTAINER      AGE  POD\n"
        "10.0.0.5  eni-26eb67b87691  c0ffee0000ab   42s  shop/web-0\n"
        "10.0.0.7  eni-26eb67b87691  c0ffee0002ab  1h2m  shop/web-2\n"
        "\n"
        "Kubernetes: integration on, node ip-10-0-0-4.ec2.internal\n"
        "  API: reachable\n"
        "  WATCH       SYNCED  RESOURCE VERSION  RELISTS  RESTARTS\n"
        "  node        yes     48190                   0         0\n"
        "  pods        yes     48213                   1         0\n"
        "  eniconfigs  NO      -                       0         3\n"
        "  Startup taint: node.cloud-cni.io/agent-not-ready:NoSchedule removed\n"
        "  Events: 4 sent, 0 dropped, 0 queued\n"
        "  Pods on node: 17\n"
    )


def test_empty_pool_and_no_assignments() -> None:
    pool = {"total": 0, "assigned": 0, "available": 0, "cooling": 0, "quarantined": 0, "interfaces": []}
    text = status.render_status(pool, [], None, now=NOW)
    assert text == (
        "Pool: 0 addresses held: 0 assigned, 0 available, 0 cooling, 0 quarantined\n"
        "Growth: not paused (this daemon does not report holds or limits)\n"
        "\n"
        "Interfaces: none\n"
        "\n"
        "Assignments: none\n"
        "\n"
        "Kubernetes: not reported (this daemon has no /v1/k8s)\n"
    )


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({}, ["Growth: not paused (this daemon does not report holds or limits)"]),
        ({"growth_hold": None, "growth_blocked": ""}, ["Growth: can grow"]),
        (
            {"growth_hold": "no valid ENIConfig for this node", "growth_blocked": "pool growth is held: x"},
            ["Growth: held: no valid ENIConfig for this node"],
        ),
        (
            {"growth_paused_until": NOW + 100, "growth_blocked": "pool growth is paused (...)"},
            [
                "Growth: paused until 2027-01-15 08:01:40 UTC (1m40s from now): "
                "the cloud refused (subnet full, limit or permission)"
            ],
        ),
        (
            {"growth_paused_until": NOW - 1},
            ["Growth: not paused (this daemon does not report holds or limits)"],
        ),
        ({"growth_paused_until": NOW - 1, "growth_blocked": ""}, ["Growth: can grow"]),
        (
            {"growth_hold": "h", "growth_paused_until": NOW + 5},
            [
                "Growth: held: h",
                "Growth: paused until 2027-01-15 08:00:05 UTC (5s from now): "
                "the cloud refused (subnet full, limit or permission)",
            ],
        ),
        (
            {"growth_blocked": AT_MAX},
            ["Growth: blocked: " + AT_MAX],
        ),
        (
            {"growth_paused_until": 1e18},
            [
                f"Growth: paused until epoch 1000000000000000000 ({status.format_age(1e18 - NOW)} from now): "
                "the cloud refused (subnet full, limit or permission)"
            ],
        ),
    ],
    ids=[
        "older-daemon",
        "can-grow",
        "held",
        "paused",
        "pause-expired",
        "pause-expired-new",
        "held-and-paused",
        "at-max",
        "paused-beyond-calendar",
    ],
)
def test_growth_line(fields: dict[str, Any], expected: list[str]) -> None:
    pool = {k: v for k, v in POOL.items() if k != "growth_paused_until"} | fields
    lines = status.render_pool(pool, now=NOW)
    assert lines[1 : 1 + len(expected)] == expected
    assert lines[1 + len(expected)] == "", "nothing else about growth"


def test_interfaces_with_optional_fields_missing_and_prefixes() -> None:
    pool = copy.deepcopy(POOL)
    pool["interfaces"] = [
        {"id": "eni-0aaa", "ips": [], "prefixes": ["10.0.0.16/28", "10.0.0.32/28"]},
        {
            "id": "/subscriptions/s/resourceGroups/g/providers/Microsoft.Network/networkInterfaces/nic-1",
            "device_index": 1,
            "primary": False,
            "subnet_id": "/subscriptions/s/resourceGroups/g/providers/Microsoft.Network/virtualNetworks/"
            "vnet/subnets/pods",
            "ips": ["10.1.0.9"],
            "prefixes": [f"10.0.{n}.0/28" for n in range(5)],
        },
    ]
    lines = status.render_pool(pool, now=NOW)
    assert lines[3:] == [
        "Interfaces (2)",
        "ID        DEVICE  PRIMARY  SUBNET     IPS  PREFIXES",
        "nic-1          1  no       vnet/pods    1  10.0.0.0/28, 10.0.1.0/28, 10.0.2.0/28 (+2 more)",
        "eni-0aaa       ?  ?        ?            0  10.0.0.16/28, 10.0.0.32/28",
    ]


@pytest.mark.parametrize(
    ("known", "shown"),
    [(True, "yes"), (False, "NO"), (None, "?")],
    ids=["known", "gone", "unknown"],
)
def test_pod_known_column(known: bool | None, shown: str) -> None:
    rows = [assignment(0, pod_known=known), assignment(1)]  # the second row has no pod_known at all
    lines = status.render_assignments(rows, now=NOW)
    assert lines[1].split() == ["IP", "INTERFACE", "CONTAINER", "AGE", "IN", "API", "POD"]
    assert lines[2].split()[4] == shown
    assert lines[3].split()[4] == "?", "absent on one row: unknown"


def test_older_daemon_without_pod_known_has_no_in_api_column() -> None:
    lines = status.render_assignments([assignment(0)], now=NOW)
    assert "IN API" not in lines[1]
    assert lines[2].split() == ["10.0.0.5", "eni-26eb67b87691", "c0ffee0000ab", "3m20s", "shop/web-0"]


def test_orphaned_assignments_and_second_interfaces_are_named() -> None:
    rows = [assignment(0, orphaned=True), assignment(1, ifname="net1")]
    lines = status.render_assignments(rows, now=NOW)
    assert lines[2].endswith("shop/web-0")
    assert lines[3].endswith("shop/web-1 (net1)")
    assert lines[-1] == "Orphaned (1): the cloud no longer holds these addresses: shop/web-0 10.0.0.5"


def _column_starts(header: str) -> list[int]:
    return [m.start() for m in re.finditer(r"(?<!\S)(IP|INTERFACE|CONTAINER|IN API|POD)\b", header)]


def test_250_assignments_are_sorted_and_aligned() -> None:
    rows = [assignment(n, ns=("kube-system" if n % 7 == 0 else "shop"), age=n * 37.0) for n in range(250)]
    lines = status.render_assignments(list(reversed(rows)), now=NOW)
    assert lines[0] == "Assignments (250)"
    header, body = lines[1], lines[2:]
    assert len(body) == 250
    starts = _column_starts(header)
    assert len(starts) == 4  # IP, INTERFACE, CONTAINER, POD (no pod_known: no IN API)
    age_end = header.index("AGE") + len("AGE")
    for line in body:
        for start in starts[1:]:
            assert line[start - 2 : start] == "  " and line[start] != " ", (line, start)
        assert line[age_end - 1] != " " and line[age_end : age_end + 2] == "  ", "AGE right-aligned"
    pods = [line[starts[-1] :] for line in body]
    keys = [(p.split("/")[0], p) for p in pods]
    assert [k for k, _ in keys] == sorted(k for k, _ in keys), "grouped by namespace"
    assert pods[0] == "kube-system/web-0" and pods[-1].startswith("shop/")


def test_a_long_pod_name_does_not_push_other_columns() -> None:
    long_name = "zz-a-very-long-deployment-name-" + "x" * 200 + "-7d9f8c6b5-abcde"  # sorts last
    short = [assignment(0), assignment(1)]
    with_long = [*short, assignment(2, name=long_name, pod_known=True)]
    lines_short = status.render_assignments([{**a, "pod_known": True} for a in short], now=NOW)
    lines_long = status.render_assignments([{**a, "pod_known": True} for a in with_long], now=NOW)
    assert lines_long[1:4] == lines_short[1:4], "header and other rows unchanged"
    assert lines_long[4].endswith("shop/" + long_name), "the whole name, not truncated"


@pytest.mark.parametrize(
    ("doc", "expected"),
    [
        (None, ["Kubernetes: not reported (this daemon has no /v1/k8s)"]),
        ({**K8S, "integration": "off"}, ["Kubernetes: integration off"]),
        (
            {
                "integration": "on",
                "node": None,
                "api": {"reachable": False, "last_error": "connect: refused"},
            },
            [
                "Kubernetes: integration on, node ? (NODE_NAME unset)",
                "  API: UNREACHABLE (last error: connect: refused)",
                "  Pods on node: unknown",
            ],
        ),
        (
            {
                **K8S,
                "api": {"reachable": True, "last_error": "watch pods: 410 Gone"},
                "watches": {"pods": {"synced": False}},
                "startup_taint": {"taint": "", "state": "disabled"},
                "events": {"sent": 9, "dropped": 2, "queued": 1},
                "pods_on_node": None,
            },
            [
                "Kubernetes: integration on, node ip-10-0-0-4.ec2.internal",
                "  API: reachable (last error: watch pods: 410 Gone)",
                "  WATCH  SYNCED  RESOURCE VERSION  RELISTS  RESTARTS",
                "  pods   NO      -                       ?         ?",
                "  Startup taint: disabled (STARTUP_TAINT is empty)",
                "  Events: 9 sent, 2 dropped, 1 queued",
                "  Pods on node: unknown",
            ],
        ),
        (
            {**K8S, "watches": {}, "startup_taint": {"taint": "t:NoSchedule", "state": "timed_out"}},
            [
                "Kubernetes: integration on, node ip-10-0-0-4.ec2.internal",
                "  API: reachable",
                "  Startup taint: t:NoSchedule timed out (removed anyway)",
                "  Events: 4 sent, 0 dropped, 0 queued",
                "  Pods on node: 17",
            ],
        ),
    ],
    ids=["404", "off", "unreachable-minimal", "degraded", "taint-timed-out"],
)
def test_kubernetes_section(doc: dict[str, Any] | None, expected: list[str]) -> None:
    assert status.render_kubernetes(doc) == expected


def test_kubernetes_section_with_every_field_a_daemon_reports() -> None:
    doc = {
        **K8S,
        "api": {"host": "https://10.96.0.1:443", "reachable": False, "last_error": "pods: 503"},
        "watches": {
            "node": {**K8S["watches"]["node"], "last_error": None},
            "pods": {
                **K8S["watches"]["pods"],
                "synced": False,
                "last_error": "pods: 503 Service Unavailable",
            },
        },
        "events": {"sent": 4, "dropped": 0, "queued": 0, "aggregated": 2},
        "pod_gone": {"grace_seconds": 900.0, "released": 2},
        "node_capacity_pods": 110,
    }
    assert status.render_kubernetes(doc) == [
        "Kubernetes: integration on, node ip-10-0-0-4.ec2.internal",
        "  API: UNREACHABLE at https://10.96.0.1:443 (last error: pods: 503)",
        "  WATCH  SYNCED  RESOURCE VERSION  RELISTS  RESTARTS  LAST ERROR",
        "  node   yes     48190                   0         0",
        "  pods   NO      48213                   1         0  pods: 503 Service Unavailable",
        "  Startup taint: node.cloud-cni.io/agent-not-ready:NoSchedule removed",
        "  Events: 4 sent, 0 dropped, 0 queued",
        "  Pods on node: 17 (node capacity 110)",
        "  Pods gone: 2 released (after 15m0s absent, netns gone)",
    ]


@pytest.mark.parametrize(
    ("fields", "shown"),
    [
        ({"pod_known": False, "pod_state": "absent", "pod_absent_since": NOW - 75}, "NO (1m15s)"),
        ({"pod_known": False, "pod_state": "replaced", "pod_absent_since": None}, "NO (replaced)"),
        ({"pod_known": False, "pod_state": "absent", "pod_absent_since": None}, "NO"),
        ({"pod_known": None, "pod_state": "unknown", "pod_absent_since": None}, "?"),
        ({"pod_known": True, "pod_state": "known", "pod_absent_since": None}, "yes"),
    ],
    ids=["absent-for", "replaced", "absent", "unknown", "known"],
)
def test_in_api_says_why_a_pod_is_not_known(fields: dict[str, Any], shown: str) -> None:
    lines = status.render_assignments([assignment(0, **fields)], now=NOW)
    header, row = lines[1], lines[2]
    start = header.index("IN API")
    assert row[start:].split("  ")[0] == shown


@pytest.mark.parametrize(
    ("pool", "assignments", "k8s", "message"),
    [
        ({**POOL, "total": None}, [], None, "/v1/pool.total: expected an integer, got null"),
        ({**POOL, "assigned": True}, [], None, "/v1/pool.assigned: expected an integer, got a boolean"),
        ({k: v for k, v in POOL.items() if k != "cooling"}, [], None, "/v1/pool: 'cooling' is missing"),
        ({**POOL, "interfaces": {}}, [], None, "/v1/pool.interfaces: expected a list, got an object"),
        (
            {**POOL, "interfaces": [{"id": "e", "ips": [1]}]},
            [],
            None,
            "/v1/pool.interfaces[0].ips: expected a list of strings",
        ),
        (
            {**POOL, "growth_hold": 3},
            [],
            None,
            "/v1/pool.growth_hold: expected a string or null, got a number",
        ),
        (["not", "a", "pool"], [], None, "/v1/pool: expected an object, got a list"),
        (POOL, {"ip": "x"}, None, "/v1/assignments: expected a list, got an object"),
        (POOL, [{"pod": {}}], None, "/v1/assignments[0]: 'ip' is missing"),
        (
            POOL,
            [assignment(0, pod_known="yes")],
            None,
            "/v1/assignments[0].pod_known: expected true, false or null, got a string",
        ),
        (POOL, [], "on", "/v1/k8s: expected an object, got a string"),
        (
            {**POOL, "growth_paused_until": float("inf")},
            [],
            None,
            "/v1/pool.growth_paused_until: expected a finite",
        ),
        (
            POOL,
            [assignment(0, assigned_at=float("nan"))],
            None,
            "/v1/assignments[0].assigned_at: expected a finite",
        ),
        (POOL, [], {**K8S, "watches": {"pods": {"relists": "1"}}}, "/v1/k8s.watches.pods.relists: expected"),
    ],
    ids=[
        "null-count",
        "bool-count",
        "missing-count",
        "interfaces-object",
        "ip-number",
        "hold-number",
        "pool-list",
        "assignments-object",
        "no-ip",
        "pod-known-string",
        "k8s-string",
        "paused-inf",
        "assigned-nan",
        "relists-string",
    ],
)
def test_documents_of_another_shape_name_the_field(
    pool: Any, assignments: Any, k8s: Any, message: str
) -> None:
    with pytest.raises(status.DocumentError) as err:
        status.render_status(pool, assignments, k8s, now=NOW)
    assert str(err.value).startswith(message)


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (-5, "0s"),
        (0, "0s"),
        (59.9, "59s"),
        (60, "1m0s"),
        (3599, "59m59s"),
        (3600, "1h0m"),
        (86399, "23h59m"),
        (86400, "1d0h"),
        (90061, "1d1h"),
    ],
)
def test_format_age(seconds: float, text: str) -> None:
    assert status.format_age(seconds) == text


@pytest.mark.parametrize(
    ("resource_id", "short"),
    [
        ("eni-0123456789abcdef0", "eni-0123456789abcdef0"),
        ("subnet-sim", "subnet-sim"),
        ("/subscriptions/s/resourceGroups/rg/providers/Microsoft.Network/networkInterfaces/nic-0", "nic-0"),
        (
            "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Network/virtualNetworks/vn/subnets/sn",
            "vn/sn",
        ),
        ("/not/an/arm/id/providers/x", "/not/an/arm/id/providers/x"),
    ],
)
def test_short_id(resource_id: str, short: str) -> None:
    assert status.short_id(resource_id) == short


@pytest.mark.parametrize(
    ("text", "endpoint"),
    [
        ("127.0.0.1:61679", ("127.0.0.1", 61679)),
        ("0.0.0.0:9", ("127.0.0.1", 9)),
        ("[::1]:61679", ("::1", 61679)),
        ("[::]:61679", ("::1", 61679)),
        ("localhost:1", ("localhost", 1)),
    ],
)
def test_parse_endpoint(text: str, endpoint: tuple[str, int]) -> None:
    assert status.parse_endpoint(text) == endpoint


@pytest.mark.parametrize("text", ["61679", "host:", ":80", "h:0", "h:65536", "h:http", "off"])
def test_parse_endpoint_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="HOST:PORT"):
        status.parse_endpoint(text)


# --- config check --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (None, ""),
        (True, "true"),
        (False, "false"),
        (30.0, "30"),
        (0.05, "0.05"),
        (1234567.5, "1234567.5"),
        (8, "8"),
        (("sg-1", "sg-2"), "sg-1,sg-2"),
        ((), ""),
        ({"team": "net"}, '{"team":"net"}'),
        ("x", "x"),
    ],
)
def test_env_text(value: Any, text: str) -> None:
    assert status.env_text(value) == text


def test_settings_lines_follow_the_table_and_mark_their_source() -> None:
    env = {
        "CLOUD_PROVIDER": "azure",
        "DATAPATH": "none",
        "WARM_IP_TARGET": "8",  # the azure default, but set: it is the operator's choice
        "MY_NODE_NAME": "aks-node-1",
        "IP_COOLDOWN_PERIOD": " ",  # blank: the default, as the daemon reads it
    }
    settings = Settings.from_env(env)
    lines = status.render_settings(settings, env)
    assert [line.split("=", 1)[0] for line in lines] == [v.name for v in VARIABLES]
    marked = {line.split("=", 1)[0]: line.split("=", 1)[1] for line in lines if line.endswith(")")}
    assert marked == {
        "CLOUD_PROVIDER": "azure  (set)",
        "DATAPATH": "none  (set)",
        "WARM_IP_TARGET": "8  (set)",
        # WARM_IP_TARGET is set, so MINIMUM_IP_TARGET keeps the plain default (no azure default)
        "IP_BATCH_SIZE": "16  (azure default)",
        "ADD_WAIT_TIMEOUT": "30  (azure default)",
        "CLOUD_API_RATE": "1  (azure default)",
        "NODE_NAME": "aks-node-1  (set as MY_NODE_NAME)",
    }
    assert "IP_COOLDOWN_PERIOD=30" in lines and "MAX_ENI=" in lines


def test_aws_node_names_are_marked_and_what_they_leave_undone_is_listed() -> None:
    """A node switching from aws-vpc-cni: `config check` on aws-node's environment says which of our
    settings each of its variables set, and lists the ones that set nothing here with the reason, as
    the daemon logs them; the lines read back as the same settings."""
    env = {
        "CLOUD_PROVIDER": "aws",
        "DATAPATH": "none",
        "AWS_VPC_K8S_CNI_EXTERNALSNAT": "true",
        "AWS_VPC_ENI_MTU": "1500",
        "WARM_IP_TARGET": "3",
        "AWS_VPC_K8S_CNI_LOGLEVEL": "DEBUG",
    }
    settings = Settings.from_env(env)
    lines = status.render_settings(settings, env)
    assert "EXTERNAL_SNAT=true  (set as AWS_VPC_K8S_CNI_EXTERNALSNAT)" in lines
    assert "POD_MTU=1500  (set as AWS_VPC_ENI_MTU)" in lines
    assert "WARM_IP_TARGET=3  (set)" in lines
    [comment] = [line for line in lines if line.startswith("#")]
    assert comment.startswith("# AWS_VPC_K8S_CNI_LOGLEVEL=DEBUG  (ignored: the daemon logs JSON lines"), (
        comment
    )
    assert lines[-1] == comment  # after the table's variables
    text = "\n".join(line.split("  (", 1)[0] for line in lines)
    assert Settings.from_env(status.parse_env_file(text)) == settings


def test_azure_defaults_are_marked_when_nothing_is_set() -> None:
    env = {"CLOUD_PROVIDER": "azure", "DATAPATH": "none"}
    lines = status.render_settings(Settings.from_env(env), env)
    assert "WARM_IP_TARGET=8  (azure default)" in lines
    assert "MINIMUM_IP_TARGET=16  (azure default)" in lines


def test_settings_lines_read_back_as_the_same_settings() -> None:
    env = {
        "CLOUD_PROVIDER": "aws",
        "DATAPATH": "none",
        "ENI_SECURITY_GROUPS": "sg-01,sg-02",
        "ADDITIONAL_ENI_TAGS": '{"team":"net"}',
        "STARTUP_TAINT_TIMEOUT": "1h30m",
        "SIM_API_LATENCY": "0.25",
        "EXTERNAL_SNAT": "yes",
    }
    settings = Settings.from_env(env)
    text = "\n".join(line.split("  (", 1)[0] for line in status.render_settings(settings, env))
    assert Settings.from_env(status.parse_env_file(text)) == settings


def test_check_datapath_linux_needs_linux() -> None:
    from ipamd.config import check_datapath

    settings = Settings.from_env({"CLOUD_PROVIDER": "sim", "DATAPATH": "linux"})
    with pytest.raises(ConfigError, match="DATAPATH='linux' is invalid: linux only on Linux nodes"):
        check_datapath(settings, platform="win32")
    check_datapath(settings, platform="linux")
    with pytest.raises(ConfigError, match="windows"):
        check_datapath(Settings.from_env({"CLOUD_PROVIDER": "sim", "DATAPATH": "windows"}))


@pytest.mark.parametrize(
    ("text", "env"),
    [
        ("", {}),
        ("# a comment\n\n   \nA=1\n", {"A": "1"}),
        ("export A=1\nexport\tB = two \n", {"A": "1", "B": "two"}),
        ('A=\'x y # z\'\nB="q\\"uote\\\\ \\n"  # c\n', {"A": "x y # z", "B": 'q"uote\\ \n'}),
        ("A=v # inline\nB=v#not-a-comment\n", {"A": "v", "B": "v#not-a-comment"}),
        ("A=1\nA=2\n", {"A": "2"}),
        ("A=\nB=''\n", {"A": "", "B": ""}),
        ('TAGS={"team": "net"}\n', {"TAGS": '{"team": "net"}'}),
        ("A=x=y\r\n", {"A": "x=y"}),
    ],
    ids=["empty", "comments", "export", "quotes", "inline-comment", "last-wins", "blank", "json", "crlf"],
)
def test_parse_env_file(text: str, env: dict[str, str]) -> None:
    assert status.parse_env_file(text) == env


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("A=1\nSECRET_VALUE\n", "line 2: expected KEY=VALUE"),
        ("1A=x\n", "line 1: expected KEY=VALUE"),
        ("A B=x\n", "line 1: expected KEY=VALUE"),
        ("A='hunter2\n", "line 1: unterminated ' quote"),
        ('A="hunter2\n', 'line 1: unterminated " quote'),
        ("A='hunter2' tail\n", "line 1: text after the closing quote"),
    ],
)
def test_parse_env_file_errors_name_the_line_not_the_value(text: str, message: str) -> None:
    with pytest.raises(status.EnvFileError) as err:
        status.parse_env_file(text)
    assert str(err.value) == message
    assert "hunter2" not in str(err.value) and "SECRET" not in str(err.value)


# --- the commands ------------------------------------------------------------------------------


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = cli.main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def test_config_check_env_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    env_file = tmp_path / "env"
    env_file.write_text("export CLOUD_PROVIDER=sim\nDATAPATH='none'\nWARM_IP_TARGET=3 # warm\n")
    code, out, err = run(["config", "check", "--env-file", str(env_file)], capsys)
    assert (code, err) == (0, "")
    assert out.splitlines()[:2] == ["CLOUD_PROVIDER=sim  (set)", "DATAPATH=none  (set)"]
    assert "WARM_IP_TARGET=3  (set)" in out.splitlines()
    code, out, err = run(["config", "check", "--env-file", str(env_file), "--json"], capsys)
    assert code == 0
    assert json.loads(out) == json.loads(
        json.dumps(
            Settings.from_env({"CLOUD_PROVIDER": "sim", "DATAPATH": "none", "WARM_IP_TARGET": "3"}).public()
        )
    )


@pytest.mark.parametrize(
    ("content", "line"),
    [
        (
            "CLOUD_PROVIDER=gcp\n",
            "cloud-cni config check: CLOUD_PROVIDER='gcp' is invalid: allowed: one of aws, azure, sim",
        ),
        (
            "CLOUD_PROVIDER=sim\nDATAPATH=windows\n",
            "cloud-cni config check: HCN_BACKEND='computenetwork' is invalid: computenetwork only on "
            "Windows nodes; fake runs DATAPATH=windows anywhere (tests, demo)",
        ),
        (
            "CLOUD_PROVIDER=sim\nWARM_IP_TARGET=-1\n",
            "cloud-cni config check: WARM_IP_TARGET='-1' is invalid: allowed: an integer >= 0",
        ),
        ("CLOUD_PROVIDER=sim\noops\n", "cloud-cni config check: {file} line 2: expected KEY=VALUE"),
    ],
    ids=["provider", "datapath", "negative", "bad-line"],
)
def test_config_check_invalid_exits_2_with_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: str, line: str
) -> None:
    env_file = tmp_path / "env"
    env_file.write_text(content)
    code, out, err = run(["config", "check", "--env-file", str(env_file)], capsys)
    assert (code, out) == (2, "")
    assert err == line.format(file=env_file) + "\n"


def test_config_check_reads_the_process_environment(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("CLOUD_PROVIDER", "gcp")
    code, _, err = run(["config", "check"], capsys)
    assert code == 2 and "CLOUD_PROVIDER='gcp'" in err
    monkeypatch.setenv("CLOUD_PROVIDER", "sim")
    monkeypatch.setenv("DATAPATH", "none")
    code, out, _ = run(["config", "check"], capsys)
    assert code == 0 and "CLOUD_PROVIDER=sim  (set)" in out.splitlines()


def test_config_check_applies_the_kubernetes_decision(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    env_file = tmp_path / "env"
    env_file.write_text("CLOUD_PROVIDER=sim\nDATAPATH=none\nKUBERNETES_INTEGRATION=on\nNODE_NAME=n1\n")
    code, out, err = run(["config", "check", "--env-file", str(env_file)], capsys)
    assert (code, out) == (2, "")
    assert err.startswith(
        "cloud-cni config check: KUBERNETES_INTEGRATION='on' is invalid: a Kubernetes config"
    )
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text("apiVersion: v1\n")
    env_file.write_text(f"CLOUD_PROVIDER=sim\nDATAPATH=none\nKUBECONFIG={kubeconfig}\n")
    code, _, err = run(["config", "check", "--env-file", str(env_file)], capsys)
    assert code == 2 and "NODE_NAME" in err  # auto finds the config, so it needs the node's name


def test_config_check_missing_env_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(["config", "check", "--env-file", str(tmp_path / "nope")], capsys)
    assert (code, out) == (2, "")
    assert err == f"cloud-cni config check: cannot read {tmp_path / 'nope'}: No such file or directory\n"


class FakeIntrospection(BaseHTTPRequestHandler):
    """The daemon's introspection as a server: canned answers per path (status, body)."""

    answers: dict[str, tuple[int, bytes]] = {}
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        code, body = self.answers.get(self.path, (404, b'{"error": "no such path"}'))
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        return


@pytest.fixture
def fake_daemon() -> Iterator[tuple[str, dict[str, tuple[int, bytes]]]]:
    answers: dict[str, tuple[int, bytes]] = {
        "/v1/pool": (200, json.dumps(POOL).encode()),
        "/v1/assignments": (200, json.dumps([assignment(0, pod_known=False)]).encode()),
    }
    handler = type("Handler", (FakeIntrospection,), {"answers": answers})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"127.0.0.1:{server.server_address[1]}", answers
    server.shutdown()
    server.server_close()
    thread.join()


def test_status_against_an_older_daemon(
    fake_daemon: tuple[str, dict[str, tuple[int, bytes]]], capsys: pytest.CaptureFixture[str]
) -> None:
    endpoint, _ = fake_daemon
    code, out, err = run(["status", "--introspection", endpoint], capsys)
    assert (code, err) == (0, "")
    assert "Kubernetes: not reported (this daemon has no /v1/k8s)" in out
    assert re.search(r"^10\.0\.0\.5 +eni-26eb67b87691 +c0ffee0000ab +\S+ +NO +shop/web-0$", out, re.M)
    code, out, err = run(["status", "--introspection", endpoint, "--json"], capsys)
    assert code == 0
    assert json.loads(out) == {
        "pool": POOL,
        "assignments": [assignment(0, pod_known=False)],
        "kubernetes": None,
    }


def test_status_uses_introspection_bind(
    fake_daemon: tuple[str, dict[str, tuple[int, bytes]]],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    endpoint, answers = fake_daemon
    answers["/v1/k8s"] = (200, json.dumps(K8S).encode())
    monkeypatch.setenv("INTROSPECTION_BIND", endpoint.replace("127.0.0.1", "0.0.0.0"))
    code, out, _ = run(["status"], capsys)
    assert code == 0 and "  Pods on node: 17" in out
    monkeypatch.setenv("INTROSPECTION_BIND", "off")
    code, out, err = run(["status"], capsys)
    assert (code, out) == (1, "")
    assert err.startswith("cloud-cni status: INTROSPECTION_BIND is off")
    monkeypatch.setenv("INTROSPECTION_BIND", "nonsense")
    code, out, err = run(["status"], capsys)
    assert (code, out) == (2, "")
    assert err == "cloud-cni status: INTROSPECTION_BIND='nonsense' is not HOST:PORT with a port 1-65535\n"
    code, out, err = run(["status", "--introspection", "host:99999"], capsys)
    assert (code, out) == (2, "")
    assert err == "cloud-cni status: --introspection 'host:99999' is not HOST:PORT with a port 1-65535\n"


@pytest.mark.parametrize(
    ("path", "answer", "line"),
    [
        (
            "/v1/pool",
            (200, b"<html>proxy</html>"),
            "sent /v1/pool that is not JSON (Expecting value: line 1 column 1 (char 0))",
        ),
        ("/v1/assignments", (200, b'[{"ip": '), "sent /v1/assignments that is not JSON (Expecting value"),
        (
            "/v1/pool",
            (503, b'{"error": "the event loop did not answer in 2s"}'),
            'answered 503 Service Unavailable for /v1/pool: {"error": "the event loop did not answer in 2s"}',
        ),
        ("/v1/k8s", (500, b""), "answered 500 Internal Server Error for /v1/k8s"),
        (
            "/v1/pool",
            (200, b'{"total": "many"}'),
            "sent an unexpected document: /v1/pool.total: expected an integer, got a string",
        ),
    ],
    ids=["html", "truncated", "503", "k8s-500", "wrong-shape"],
)
def test_status_bad_answers_are_one_line(
    fake_daemon: tuple[str, dict[str, tuple[int, bytes]]],
    capsys: pytest.CaptureFixture[str],
    path: str,
    answer: tuple[int, bytes],
    line: str,
) -> None:
    endpoint, answers = fake_daemon
    answers[path] = answer
    code, out, err = run(["status", "--introspection", endpoint], capsys)
    assert (code, out) == (1, "")
    assert err.startswith(f"cloud-cni status: the daemon at {endpoint} ")
    assert line in err and err.count("\n") == 1, err


def test_status_daemon_not_running(capsys: pytest.CaptureFixture[str]) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))  # bound, never listening: refused
        endpoint = f"127.0.0.1:{s.getsockname()[1]}"
        code, out, err = run(["status", "--introspection", endpoint], capsys)
    assert (code, out) == (1, "")
    assert err == (
        f"cloud-cni status: cannot reach the daemon's introspection at {endpoint} (connection refused); "
        "is INTROSPECTION_BIND off or elsewhere?\n"
    )


# --- the parser ------------------------------------------------------------------------------------


def test_help_is_plain_text(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        cli.main(["--help"])
    out = capsys.readouterr().out
    assert "cloud-cni: the daemon and the operator's commands." in out
    assert "``" not in out


def test_docstring_lists_every_command() -> None:
    """The module docstring is the command list; a command added to the parser is added there too."""
    parser = cli.make_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    commands = set(sub.choices or ())
    assert cli.__doc__ is not None
    listed = {line.split()[1] for line in cli.__doc__.splitlines() if line.startswith("cloud-cni ")}
    assert listed == commands
    config = sub.choices["config"]  # type: ignore[index]
    config_sub = next(a for a in config._actions if a.dest == "config_command")
    assert set(config_sub.choices or ()) == {"check"}
    assert "cloud-cni config check " in cli.__doc__
