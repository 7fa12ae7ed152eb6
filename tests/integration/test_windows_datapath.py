"""DATAPATH=windows end to end on Linux: the real daemon (sim cloud, HCN_BACKEND=fake) and the real
plugin, exec'd as containerd on Windows would (CNI_NETNS is an HCN namespace GUID). The fake HCN's
state is a file the test shares with the daemon: the test makes the namespaces containerd would
make, removes them as it would, injects faults, and reads what HCN holds. Every document the daemon
sent (HCN_TRACE) is checked against hcsshim's structs (tests/fakes/hcn_schema.py)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ipamd.datapath.windows import hcn
from ipamd.datapath.windows.fake import FakeHcn
from tests.fakes import hcn_schema

from .conftest import DaemonProcess, daemon_env
from .test_shim_exec import VERSIONS, Done, assert_cni_error, netconf, shim

pytestmark = pytest.mark.integration

POD_CIDR_PREFIX = 22  # SIM_SUBNET_CIDR's default 10.0.0.0/22


@pytest.fixture
def win(tmp_path: Path) -> Iterator[DaemonProcess]:
    env = daemon_env(
        tmp_path,
        DATAPATH="windows",
        HCN_BACKEND="fake",
        HCN_TRACE=str(tmp_path / "hcn-trace.jsonl"),
        SIM_INSTANCE_TYPE="m5.xlarge",  # 14 secondary addresses per interface
        WARM_ENI_TARGET="0",
        WARM_IP_TARGET="4",
        MINIMUM_IP_TARGET="4",
        EXCLUDE_SNAT_CIDRS="192.0.2.0/24",
        IP_COOLDOWN_PERIOD="1",
        POOL_RELEASE_DELAY="1",
        SERVICE_CIDRS="172.20.0.0/16",
    )
    d = DaemonProcess(dir=tmp_path, env=env)
    yield d
    if d.proc is not None and d.proc.poll() is None:
        d.kill()


def fake(d: DaemonProcess) -> FakeHcn:
    return FakeHcn(str(d.checkpoint.parent / "hcn-fake.json"))


def trace(d: DaemonProcess) -> list[dict[str, Any]]:
    path = Path(d.env["HCN_TRACE"])
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def assert_trace_follows_hcsshim(d: DaemonProcess) -> None:
    lines = trace(d)
    assert lines, "the daemon traced no HCN call"
    problems = [(line["method"], p) for line in lines for p in hcn_schema.check_trace_line(line)]
    assert problems == []


def add(d: DaemonProcess, cid: str, namespace: str, version: str = "1.0.0") -> Done:
    return shim("ADD", netconf(d.socket, version), cid=cid, netns=namespace)


def endpoints(f: FakeHcn) -> list[dict[str, Any]]:
    return list(f.snapshot()["endpoints"])


def networks(f: FakeHcn) -> list[dict[str, Any]]:
    return list(f.snapshot()["networks"])


@pytest.mark.parametrize("version", VERSIONS)
def test_add_check_del_in_each_version(win: DaemonProcess, version: str) -> None:
    win.start()
    f = fake(win)
    ns = f.add_namespace()
    cid = f"win{version.replace('.', '')}"
    done = add(win, cid, ns, version)
    assert done.code == 0, done
    result = done.json
    [ip] = result["ips"]
    address, prefix = ip["address"].split("/")
    assert int(prefix) == POD_CIDR_PREFIX  # an L2Bridge endpoint holds its subnet's prefix length
    assert ip["gateway"] == "10.0.0.1"
    [endpoint] = endpoints(f)
    assert endpoint["Name"] == f"cloud-cni-{cid}_eth0"
    assert endpoint["IpConfigurations"] == [{"IpAddress": address, "PrefixLength": POD_CIDR_PREFIX}]
    assert endpoint["HostComputeNamespace"].lower() == ns.lower()
    policies = {p["Type"]: p["Settings"] for p in endpoint["Policies"]}
    assert set(policies["OutBoundNAT"]["Exceptions"]) == {"10.0.0.0/16", "172.20.0.0/16", "192.0.2.0/24"}
    assert policies["SDNRoute"]["NeedEncap"] is True
    check = shim("CHECK", {**netconf(win.socket, version), "prevResult": result}, cid=cid, netns=ns)
    assert check.code == 0, check
    gone = shim("DEL", {**netconf(win.socket, version), "prevResult": result}, cid=cid, netns=ns)
    assert gone.code == 0, gone
    assert endpoints(f) == []
    assert win.get("/v1/pool")["assigned"] == 0
    assert_trace_follows_hcsshim(win)


def test_the_pods_dns_from_the_runtime_goes_on_its_endpoint(win: DaemonProcess) -> None:
    win.start()
    f = fake(win)
    ns = f.add_namespace()
    dns = {
        "servers": ["10.96.0.10"],
        "searches": ["default.svc.cluster.local", "svc.cluster.local", "cluster.local"],
        "options": ["ndots:5"],
    }
    config = netconf(win.socket, capabilities={"dns": True}, runtimeConfig={"dns": dns})
    done = shim("ADD", config, cid="dns1", netns=ns)
    assert done.code == 0, done
    assert done.json["dns"] == {}  # the result does not echo it: HCN, not the runtime, applies it
    [endpoint] = endpoints(f)
    assert endpoint["Dns"] == {"ServerList": dns["servers"], "Search": dns["searches"]}  # no Options
    assert add(win, "nodns", f.add_namespace()).code == 0  # no runtimeConfig.dns: no Dns
    assert "Dns" not in next(e for e in endpoints(f) if e["Name"] == "cloud-cni-nodns_eth0")
    assert_trace_follows_hcsshim(win)


def test_a_bad_dns_server_is_code_7_and_makes_nothing(win: DaemonProcess) -> None:
    win.start()
    f = fake(win)
    config = netconf(win.socket, runtimeConfig={"dns": {"servers": ["10.96.0.300"]}})
    done = shim("ADD", config, cid="dns2", netns=f.add_namespace())
    assert_cni_error(done, 7, "runtimeConfig.dns.servers")
    assert endpoints(f) == []


def test_two_hcn_calls_per_add_and_per_del(win: DaemonProcess) -> None:
    win.start()
    f = fake(win)
    namespaces = [f.add_namespace() for _ in range(3)]
    assert add(win, "warm0", namespaces[0]).code == 0  # the network is made (and cached) here
    counts = json.loads(json.dumps(f.counters()))
    f.reset_counters()
    assert add(win, "calls1", namespaces[1]).code == 0
    assert f.counters() == {"create_endpoint": 1, "modify_namespace": 1}, counts
    f.reset_counters()
    assert shim("DEL", netconf(win.socket), cid="calls1", netns=namespaces[1]).code == 0
    assert f.counters() == {"modify_namespace": 1, "delete_endpoint": 1}
    metrics = win.metrics()
    assert 'cloudcni_hcn_calls_total{method="HcnCreateEndpoint",result="ok"} 2.0' in metrics


def test_thirty_pods_across_interfaces(win: DaemonProcess) -> None:
    win.start()
    f = fake(win)
    namespaces = {f"pod{i:02d}": f.add_namespace() for i in range(30)}
    results = {}
    for i, (cid, ns) in enumerate(namespaces.items()):
        done = add(win, cid, ns)
        assert done.code == 0, done
        results[cid] = done.json["ips"][0]["address"]
        if i == 0:
            assert len(networks(f)) == 1  # the primary interface's, made for the first pod on it
    assert len(set(results.values())) == 30
    nets = networks(f)
    assert len(nets) == 3, "a network appears when each interface attaches: 14 + 14 + 2 pods"
    held = win.get("/v1/pool")["interfaces"]
    assert sorted(n["Name"] for n in nets) == sorted(f"cloud-cni-{i['id']}" for i in held)
    by_network: dict[str, int] = {}
    for endpoint in endpoints(f):
        by_network[endpoint["HostComputeNetwork"]] = by_network.get(endpoint["HostComputeNetwork"], 0) + 1
    assert sorted(by_network.values()) == [2, 14, 14]
    for cid, ns in namespaces.items():
        assert shim("DEL", netconf(win.socket), cid=cid, netns=ns).code == 0
    assert endpoints(f) == []
    # The pool shrinks back and detaches the interfaces it no longer needs: their networks go.
    pool = win.wait_pool(lambda p: len(p["interfaces"]) == 1, timeout=60)
    assert [n["Name"] for n in networks(f)] == [f"cloud-cni-{pool['interfaces'][0]['id']}"]
    assert_trace_follows_hcsshim(win)


def test_del_after_the_namespace_is_gone(win: DaemonProcess) -> None:
    win.start()
    f = fake(win)
    ns = f.add_namespace()
    assert add(win, "nsgone", ns).code == 0
    f.remove_namespace(ns)  # containerd removed the pod's namespace before the DEL
    assert shim("DEL", netconf(win.socket), cid="nsgone", netns=ns).code == 0
    assert endpoints(f) == []
    assert shim("DEL", netconf(win.socket), cid="nsgone", netns="").code == 0  # twice, without a netns


def test_restart_removes_strays_and_keeps_what_assignments_own(win: DaemonProcess) -> None:
    win.start()
    f = fake(win)
    kept, stray = f.add_namespace(), f.add_namespace()
    assert add(win, "kept", kept).code == 0
    assert add(win, "stray", stray).code == 0
    win.kill()  # SIGKILL: the next start reads the checkpoint and HCN as they were
    win.start()
    valid = [{"containerID": "kept", "ifname": "eth0"}]
    gc = shim("GC", {**netconf(win.socket, "1.1.0"), "cni.dev/valid-attachments": valid})
    assert gc.code == 0, gc  # the runtime no longer knows "stray": GC releases it and its endpoint
    names = sorted(e["Name"] for e in endpoints(f))
    assert names == ["cloud-cni-kept_eth0"]
    # An endpoint named like ours that no assignment owns (left by a crash between create and
    # checkpoint) goes at the next start.
    net = networks(f)[0]["ID"]
    f.create_endpoint(net, {"Name": "cloud-cni-orphan_eth0", "HostComputeNetwork": net,
                            "IpConfigurations": [{"IpAddress": "10.0.3.250", "PrefixLength": 22}],
                            "SchemaVersion": {"Major": 2, "Minor": 0}})  # fmt: skip
    f.create_endpoint(net, {"Name": "someone-else", "HostComputeNetwork": net,
                            "IpConfigurations": [{"IpAddress": "10.0.3.251", "PrefixLength": 22}],
                            "SchemaVersion": {"Major": 2, "Minor": 0}})  # fmt: skip
    win.stop()
    win.start()
    assert sorted(e["Name"] for e in endpoints(f)) == ["cloud-cni-kept_eth0", "someone-else"]
    f.reset_counters()
    assert shim("DEL", netconf(win.socket), cid="kept", netns=kept).code == 0
    assert f.counters() == {"modify_namespace": 1, "delete_endpoint": 1}, "the start-up listing remembered it"


def test_a_path_netns_is_refused_with_code_4(win: DaemonProcess) -> None:
    win.start()
    assert_cni_error(add(win, "docker", "/var/run/netns/docker"), 4, "not supported")
    assert endpoints(fake(win)) == []
    assert win.get("/v1/pool")["assigned"] == 0


def test_a_missing_namespace_is_code_4_and_leaves_nothing(win: DaemonProcess) -> None:
    win.start()
    f = fake(win)
    assert_cni_error(add(win, "nons", "11111111-2222-3333-4444-555555555555"), 4, "does not exist")
    assert endpoints(f) == []
    assert win.get("/v1/pool")["assigned"] == 0


FAULTS = [
    pytest.param("create_endpoint", hcn.HCN_E_INVALID_ENDPOINT, False, id="create refused"),
    pytest.param("create_endpoint", hcn.HCN_E_INVALID_ENDPOINT, True, id="create done, then an error"),
    pytest.param("modify_namespace", hcn.HCN_E_NAMESPACE_ATTACH_FAILED, False, id="attach refused"),
]


@pytest.mark.parametrize(("method", "hresult", "after"), FAULTS)
def test_a_failed_add_undoes_every_step(win: DaemonProcess, method: str, hresult: int, after: bool) -> None:
    win.start()
    f = fake(win)
    ns = f.add_namespace()
    f.inject(method, hresult, after=after)
    done = add(win, "faulty", ns)
    assert done.code != 0, done
    assert endpoints(f) == []
    assert win.get("/v1/pool")["assigned"] == 0
    assert add(win, "faulty", ns).code == 0  # the retried ADD goes through
    assert len(endpoints(f)) == 1


def test_transient_answers_are_retried(win: DaemonProcess) -> None:
    win.start()
    f = fake(win)
    ns = f.add_namespace()
    f.inject("create_endpoint", hcn.ERROR_NOT_FOUND, times=2)  # "Element not found" during churn
    f.inject("modify_namespace", hcn.ERROR_LOCK_VIOLATION, times=1)
    done = add(win, "churn", ns)
    assert done.code == 0, done
    assert len(endpoints(f)) == 1
    assert "hcn_retry" in win.logs()


def test_a_hung_call_times_out_and_is_undone(win: DaemonProcess) -> None:
    win.start(HCN_CALL_TIMEOUT="0.5")
    f = fake(win)
    ns = f.add_namespace()
    f.inject("modify_namespace", hcn.S_OK, delay=2.0)  # HCN hangs on the attach
    done = add(win, "hung", ns)
    assert done.code != 0, done
    assert "HcnModifyNamespace" in done.stdout
    # The endpoint the ADD created is removed (the hung attach may still land: the fake applies
    # nothing for a delayed call that fails, and an endpoint left attached would go at the next sweep).
    assert endpoints(f) == []
    assert win.get("/v1/pool")["assigned"] == 0
