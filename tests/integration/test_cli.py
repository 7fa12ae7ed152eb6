"""The operator commands as processes against the real daemon (sim provider, DATAPATH=none)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from ipamd.rpc.client import attachment

from .conftest import ROOT, DaemonProcess

pytestmark = pytest.mark.integration


def cloud_cni(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ipamd.cli", *args],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_status_names_the_pods_the_daemon_serves(daemon: DaemonProcess) -> None:
    daemon.start(KUBERNETES_INTEGRATION="off")
    client = daemon.client()
    pods = {"web-0": "shop", "web-1": "shop", "coredns-5d78c9869d-x7k2p": "kube-system"}
    ips = {}
    for n, (name, namespace) in enumerate(pods.items()):
        reply = client.add(attachment(f"{n:02d}c0ffee" + "ab" * 28, pod=name, namespace=namespace))
        ips[name] = reply.ip
    client.delete(attachment("01c0ffee" + "ab" * 28, pod="web-1", namespace="shop"))
    del ips["web-1"]
    env = {**daemon.env}

    done = cloud_cni("status", env=env)
    assert (done.returncode, done.stderr) == (0, "")
    out = done.stdout
    pool = daemon.get("/v1/pool")
    assert out.startswith(f"Pool: {pool['total']} addresses held (max {pool['max']}): 2 assigned, ")
    assert "1 cooling" in out
    for iface in pool["interfaces"]:
        assert iface["id"] in out
    rows = {line.split()[-1]: line.split() for line in out.splitlines() if line.startswith("10.")}
    assert set(rows) == {"shop/web-0", "kube-system/coredns-5d78c9869d-x7k2p"}, out
    for name, ip in ips.items():
        row = rows[f"{pods[name]}/{name}"]
        assert row[0] == ip
    assert rows["shop/web-0"][2] == "00c0ffeeabab", "the container id, short"
    assert rows["shop/web-0"][4] == "?", "IN API: unknown without the Kubernetes integration"
    assert "shop/web-1" not in out, "a deleted pod is not listed"
    assert out.endswith("\n\nKubernetes: integration off\n")

    done = cloud_cni("status", "--json", env=env)
    assert done.returncode == 0, done.stderr
    doc = json.loads(done.stdout)
    assert set(doc) == {"pool", "assignments", "kubernetes"}
    assert doc["kubernetes"] == daemon.get("/v1/k8s")
    assert doc["assignments"] == daemon.get("/v1/assignments")
    assert {a["pod"]["name"]: a["ip"] for a in doc["assignments"]} == ips
    assert doc["pool"]["interfaces"] == daemon.get("/v1/pool")["interfaces"]

    bind = env.pop("INTROSPECTION_BIND")
    done = cloud_cni("status", "--introspection", bind, env=env)
    assert done.returncode == 0 and ips["web-0"] in done.stdout

    assert daemon.stop() == 0
    done = cloud_cni("status", "--introspection", bind, env=env)
    assert (done.returncode, done.stdout) == (1, "")
    assert done.stderr == (
        f"cloud-cni status: cannot reach the daemon's introspection at {bind} (connection refused); "
        "is INTROSPECTION_BIND off or elsewhere?\n"
    )


def test_config_check_sees_what_the_daemon_sees(daemon: DaemonProcess) -> None:
    daemon.start(WARM_IP_TARGET="3", MINIMUM_IP_TARGET="4")
    done = cloud_cni("config", "check", "--json", env=daemon.env)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == daemon.get("/v1/config")

    done = cloud_cni("config", "check", env=daemon.env)
    assert done.returncode == 0
    lines = done.stdout.splitlines()
    assert lines[0] == "CLOUD_PROVIDER=sim  (set)"
    assert "WARM_IP_TARGET=3  (set)" in lines and "WARM_ENI_TARGET=1" in lines


@pytest.mark.parametrize(
    ("overrides", "line"),
    [
        ({"CLOUD_PROVIDER": "gcp"}, "CLOUD_PROVIDER='gcp' is invalid: allowed: one of aws, azure, sim"),
        (
            {"IP_COOLDOWN_PERIOD": "-1"},
            "IP_COOLDOWN_PERIOD='-1' is invalid: allowed: a number of seconds >= 0",
        ),
    ],
    ids=["provider", "cooldown"],
)
def test_config_check_refuses_what_the_daemon_refuses(
    daemon: DaemonProcess, overrides: dict[str, str], line: str
) -> None:
    env = {**daemon.env, **overrides}
    done = cloud_cni("config", "check", env=env)
    assert (done.returncode, done.stdout, done.stderr) == (2, "", f"cloud-cni config check: {line}\n")
    started = subprocess.run(
        [sys.executable, "-m", "ipamd"], env=env, cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert (started.returncode, started.stderr) == (2, f"cloud-cni ipamd: {line}\n"), "the daemon's own line"
