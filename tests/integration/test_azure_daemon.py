"""The daemon with CLOUD_PROVIDER=azure against the fake ARM and IMDS, pods through the real plugin.

Each node is a VM (or a Uniform scale-set instance) in ``tests.fakes.azure_arm.FakeArm`` with its own
``FakeImds``; the daemon subprocess finds itself through IMDS, takes a managed-identity token from the
fake and writes the NICs' ipConfigurations over HTTPS. What a test checks is what ARM holds once the
pool has settled: the daemon's own ipConfigurations (named ``cloudcni-<8 hex>``) on the node's NICs,
and that the daemon's pool (``/v1/pool``) holds exactly those addresses. Every endpoint is 127.0.0.1.

The scenario table walks each row's pod counts upwards in one daemon, and runs the rows' daemons side
by side (``ScenarioWalks``), so that their settle waits overlap; each row still reports on its own.
"""

from __future__ import annotations

import ipaddress
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from ipamd.config import VARIABLES
from tests.fakes.azure_arm import FakeArm, FakeImds, Vm
from tests.fakes.azure_tls import TlsFiles
from tests.fakes.kube_apiserver import KubeApiServer

from .conftest import ROOT, DaemonProcess, daemon_env
from .test_shim_exec import netconf, shim

pytestmark = pytest.mark.integration

OURS = "cloudcni-"
NIC_WRITE = "Microsoft.Network/networkInterfaces/write"

# Variables that would send azure-identity, the SDK or urllib somewhere else than the fakes.
_FOREIGN_ENV = frozenset(
    {
        "IDENTITY_ENDPOINT",
        "IDENTITY_HEADER",
        "IDENTITY_SERVER_THUMBPRINT",
        "IMDS_ENDPOINT",
        "MSI_ENDPOINT",
        "MSI_SECRET",
        "AZURE_FEDERATED_TOKEN_FILE",
        "AZURE_CLIENT_ID",
        "AZURE_TENANT_ID",
        "AZURE_CLIENT_SECRET",
        "AZURE_CLIENT_CERTIFICATE_PATH",
        "AZURE_USERNAME",
        "AZURE_PASSWORD",
        "AZURE_AUTHORITY_HOST",
        "REQUESTS_CA_BUNDLE",
        "CURL_CA_BUNDLE",
        "SSL_CERT_FILE",
        "SSL_CERT_DIR",
    }
)
# What daemon_env itself sets: every other daemon setting inherited from the runner's environment
# (IP_BATCH_SIZE, CLOUD_API_RATE, ...) is dropped, so the Azure defaults under test are the daemon's.
_DAEMON_ENV_OWN = frozenset(
    {"CLOUD_PROVIDER", "DATAPATH", "IPAMD_SOCKET", "CHECKPOINT_PATH", "METRICS_BIND", "INTROSPECTION_BIND"}
)
_SETTINGS = frozenset(v.name for v in VARIABLES)


@pytest.fixture(autouse=True)
def _loopback_only(azure_loopback_only: None) -> None:
    """Nothing this process opens leaves loopback, and urllib (introspection) uses no proxy."""


def azure_env(tmp: Path, arm: FakeArm, imds: FakeImds, **overrides: str) -> dict[str, str]:
    """daemon_env for an azure node of ``arm``: only the fakes are reachable, the pool's defaults are
    the daemon's own unless ``overrides`` set them."""
    ours = {
        "CLOUD_PROVIDER": "azure",
        **arm.client_env(imds),
        "POOL_RELEASE_DELAY": "1",
        "IP_COOLDOWN_PERIOD": "1",
        "CLOUD_API_RATE": "50",
        "CLOUD_API_BURST": "50",
        "ADD_WAIT_TIMEOUT": "10",
        **overrides,
    }
    env = daemon_env(tmp, **ours)
    for name in list(env):
        if name in ours or name in _DAEMON_ENV_OWN:
            continue
        if name in _FOREIGN_ENV or name.upper().endswith("_PROXY") or name in _SETTINGS:
            del env[name]
    env["NO_PROXY"] = env["no_proxy"] = "127.0.0.1,localhost"
    return env


def _address(config: dict[str, Any]) -> str:
    return str((config.get("properties") or {}).get("privateIPAddress") or "")


class AzureNode:
    def __init__(self, arm: FakeArm, vm: Vm, tmp: Path, **env: str) -> None:
        tmp.mkdir(parents=True, exist_ok=True)
        self.arm = arm
        self.vm = vm
        self.imds = arm.imds_for(vm)
        self.daemon = DaemonProcess(dir=tmp, env=azure_env(tmp, arm, self.imds, **env))

    # --- what ARM holds ---------------------------------------------------------------------------

    def configs(self, nic: int = 0) -> list[dict[str, Any]]:
        """Every ipConfiguration of the node's ``nic``-th NIC, as a GET shows it."""
        return list(self.arm.nic(self.vm.nics[nic])["properties"]["ipConfigurations"])

    def ours(self) -> dict[str, list[str]]:
        """NIC id (lower case) -> addresses of the daemon's ipConfigurations on it ("" while pending)."""
        return {
            nic.lower(): [_address(c) for c in self.configs(i) if c["name"].startswith(OURS)]
            for i, nic in enumerate(self.vm.nics)
        }

    def counts(self) -> tuple[int, int]:
        """(NICs, the daemon's ipConfigurations on them) as ARM reports."""
        return len(self.vm.nics), sum(len(v) for v in self.ours().values())

    # --- what the daemon holds --------------------------------------------------------------------

    def pool(self) -> dict[str, Any]:
        return dict(self.daemon.get("/v1/pool"))

    def pool_ips(self) -> dict[str, list[str]]:
        return {str(i["id"]).lower(): list(i["ips"]) for i in self.pool()["interfaces"]}

    def settle(self, expect: tuple[int, int], timeout: float = 30.0) -> None:
        """ARM and the pool agree on ``expect`` and stay there for 1.5 s."""
        deadline = time.monotonic() + timeout
        seen = self.counts()
        while time.monotonic() < deadline:
            seen = self.counts()
            if seen == expect and self.pool()["total"] == expect[1]:
                time.sleep(1.5)  # and it stays there: no flapping
                if self.counts() == expect and self.pool()["total"] == expect[1]:
                    return
            time.sleep(0.1)
        raise AssertionError(f"ARM shows {seen} (NICs, ipconfigs), expected {expect}; pool {self.pool()}")

    def assert_consistent(self) -> None:
        """The pool holds exactly the daemon's ipConfigurations, each address once, on the right NIC."""
        ours, held = self.ours(), self.pool_ips()
        for nic, addresses in ours.items():
            assert "" not in addresses, f"an ipConfiguration of ours is still pending on {nic}"
            assert len(set(addresses)) == len(addresses), f"duplicate addresses on {nic}: {addresses}"
            assert sorted(held.get(nic, []), key=ipaddress.IPv4Address) == sorted(
                addresses, key=ipaddress.IPv4Address
            ), f"{nic}: ARM has {addresses}, the pool holds {held.get(nic)}"
        everything = [a for v in held.values() for a in v]
        assert len(set(everything)) == len(everything), f"an address held twice: {held}"
        assigned = [a["ip"] for a in self.daemon.get("/v1/assignments")]
        assert len(set(assigned)) == len(assigned), f"an address given to two pods: {assigned}"
        assert set(assigned) <= set(everything), "a pod holds an address the pool does not"

    # --- pods -------------------------------------------------------------------------------------

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
            ips.append(done.json["ips"][0]["address"].split("/")[0])
        return ips

    def del_pods(self, n: int, start: int = 0) -> None:
        conf = netconf(self.daemon.socket)
        for i in range(start, start + n):
            assert shim("DEL", conf, cid=f"pod{i:04d}").code == 0

    def events(self, name: str) -> list[dict[str, Any]]:
        return [e for e in self.daemon.events() if e.get("event") == name]

    def wait_event(self, name: str, timeout: float = 20.0) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = self.events(name)
            if found:
                return found
            time.sleep(0.1)
        raise AssertionError(f"no {name} event in {timeout}s:\n{self.daemon.logs()}")

    def close(self) -> None:
        if self.daemon.proc is not None and self.daemon.proc.poll() is None:
            self.daemon.kill()


def start_all(*nodes: AzureNode) -> None:
    """Start the daemons side by side (each pays the SDK's import time once, in parallel)."""
    for node in nodes:
        node.daemon.start(wait=False)
    for node in nodes:
        node.daemon.wait_ready()


@pytest.fixture
def azure(azure_cloud: FakeArm, tmp_path: Path) -> Iterator[Callable[..., AzureNode]]:
    """``azure(nics=1, vmss=False, subnet="nodes", start=True, **env)``: a node of the fake cloud
    with its daemon (started unless ``start=False``)."""
    made: list[AzureNode] = []

    def make(
        *, nics: int = 1, vmss: bool = False, subnet: str = "nodes", start: bool = True, **env: str
    ) -> AzureNode:
        index = len(made)
        if vmss:
            vm = azure_cloud.add_vmss_instance("pool", index, nics=nics, subnet=subnet)
        else:
            vm = azure_cloud.add_vm(f"node-{index}", nics=nics, subnet=subnet)
        node = AzureNode(azure_cloud, vm, tmp_path / f"n{index}", **env)
        made.append(node)
        if start:
            node.daemon.start()
        return node

    yield make
    for node in made:
        node.close()
    assert not azure_cloud.errors, azure_cloud.errors


# --- 1. the pool policy on Azure, in NIC ipConfigurations ----------------------------------------

# (env, [(pods, (NICs, our ipconfigs)), ...]) on a one-NIC VM, walked upwards in one daemon. Each
# expectation is the steady state tests/unit/test_policy.py's ToyNode reaches for the same targets,
# from a fresh node and along the same walk (the AZURE cases there hold the defaults' rows).
SCENARIOS: list[tuple[dict[str, str], list[tuple[int, tuple[int, int]]]]] = [
    ({}, [(0, (1, 16)), (5, (1, 16)), (9, (1, 32)), (30, (1, 48))]),
    ({"WARM_IP_TARGET": "2", "IP_BATCH_SIZE": "1"}, [(0, (1, 2)), (10, (1, 12))]),
    ({"MINIMUM_IP_TARGET": "16"}, [(0, (1, 16)), (10, (1, 16))]),
    (
        {"MINIMUM_IP_TARGET": "6", "WARM_IP_TARGET": "10", "IP_BATCH_SIZE": "1"},
        [(0, (1, 10)), (5, (1, 15))],
    ),
    # Warm-ENI on Azure: a NIC's worth is all its slots, so the one NIC fills up to max pods (250).
    ({"WARM_ENI_TARGET": "1"}, [(0, (1, 250))]),
]


def _scenario_id(env: dict[str, str], steps: list[tuple[int, tuple[int, int]]]) -> str:
    short = {"WARM_IP_TARGET": "warm_ip", "MINIMUM_IP_TARGET": "min_ip", "IP_BATCH_SIZE": "batch"}
    name = "-".join(short.get(k, k.lower()) + v for k, v in env.items()) or "azure_defaults"
    return name + "-" + "-".join(str(p) for p, _ in steps) + "pods"


def _walk(node: AzureNode, env: dict[str, str], steps: list[tuple[int, tuple[int, int]]]) -> None:
    config = node.daemon.get("/v1/config")
    assert {k: str(config[k]) for k in env} == env
    pods = 0
    ips: list[str] = []
    for wanted, expect in steps:
        ips += node.add_pods(wanted - pods, start=pods)
        pods = wanted
        try:
            node.settle(expect)
        except AssertionError as exc:
            raise AssertionError(f"with {pods} pods: {exc}") from None
        node.assert_consistent()
    assert len(set(ips)) == pods
    first = node.configs()[0]
    assert first["name"] == "ipconfig1" and first["properties"]["primary"], "the primary ipconfig was kept"


class ScenarioWalks:
    """Every scenario's daemon, each on its own VM and subnet of one fake ARM, walked side by side the
    first time a result is asked for (the settle waits overlap); a result is the walk's exception."""

    def __init__(self, arm: FakeArm, base: Path) -> None:
        self.arm = arm
        self.base = base
        self.nodes: list[AzureNode] = []
        self._results: list[BaseException | None] | None = None

    def result(self, index: int) -> BaseException | None:
        if self._results is None:
            try:
                self._results = self._run()
            except Exception as exc:  # the nodes could not even start: every row fails with it
                self._results = [exc] * len(SCENARIOS)
        return self._results[index]

    def _run(self) -> list[BaseException | None]:
        for i, (env, _) in enumerate(SCENARIOS):
            # Its own /24 (251 usable): room for the 250 of warm-ENI mode next to the primary.
            self.arm.add_vnet(f"vnet-s{i}", [f"10.{100 + i}.0.0/16"], {f"nodes-s{i}": f"10.{100 + i}.0.0/24"})
            vm = self.arm.add_vm(f"scenario-{i}", subnet=f"nodes-s{i}")
            self.nodes.append(AzureNode(self.arm, vm, self.base / f"s{i}", **env))
        start_all(*self.nodes)
        with ThreadPoolExecutor(len(self.nodes)) as pool:
            runs = [pool.submit(_walk, n, *row) for n, row in zip(self.nodes, SCENARIOS, strict=True)]
        return [r.exception() for r in runs]

    def close(self) -> None:
        for node in self.nodes:
            node.close()


@pytest.fixture(scope="module")
def scenario_walks(azure_tls: TlsFiles, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ScenarioWalks]:
    arm = FakeArm(tls=azure_tls).start()
    walks = ScenarioWalks(arm, tmp_path_factory.mktemp("azure-scenarios"))
    try:
        yield walks
    finally:
        walks.close()
        arm.stop()
    assert not arm.errors, arm.errors


@pytest.mark.parametrize(
    ("index", "env", "steps"),
    [(i, e, s) for i, (e, s) in enumerate(SCENARIOS)],
    ids=[_scenario_id(e, s) for e, s in SCENARIOS],
)
def test_scenario_settles_to_the_expected_ipconfigs(
    scenario_walks: ScenarioWalks, index: int, env: dict[str, str], steps: list[tuple[int, tuple[int, int]]]
) -> None:
    error = scenario_walks.result(index)
    if error is not None:
        raise error


def test_scale_up_in_batches_and_back_to_the_minimum(azure: Callable[..., AzureNode]) -> None:
    node = azure()
    config = node.daemon.get("/v1/config")
    defaults = {"WARM_IP_TARGET": 8, "MINIMUM_IP_TARGET": 16, "IP_BATCH_SIZE": 16, "CLOUD_PROVIDER": "azure"}
    assert {k: config[k] for k in defaults} == defaults, "the daemon runs on its own azure defaults"
    node.settle((1, 16))
    before = node.arm.writes
    ips = node.add_pods(40, retry_for=20)
    assert len(set(ips)) == 40
    node.settle((1, 48))
    climb = node.arm.writes - before
    # 16 -> 32 -> 48: a write moves a batch of 16, so the climb is a couple of writes, not one per pod.
    assert 1 <= climb <= 40 // 16 + 2, f"{climb} NIC writes to add 32 addresses"
    node.assert_consistent()
    node.del_pods(40)
    node.settle((1, 16), timeout=40)
    node.assert_consistent()
    assert node.pool()["assigned"] == 0


# --- 2. several NICs, scale sets -----------------------------------------------------------------


def test_two_nic_vm_grows_on_the_primary_nic_only(azure: Callable[..., AzureNode]) -> None:
    node = azure(nics=2)
    node.settle((2, 16))
    node.add_pods(9)
    node.settle((2, 32))
    ours = node.ours()
    assert len(ours[node.vm.nics[0].lower()]) == 32
    assert ours[node.vm.nics[1].lower()] == []
    second = node.vm.nics[1].rsplit("/", 1)[-1]
    assert node.arm.count("PUT", f"/networkInterfaces/{second}") == 0, "the second NIC was written"
    assert [c["name"] for c in node.configs(1)] == ["ipconfig1"]
    pool = node.pool()
    assert [len(i["ips"]) for i in sorted(pool["interfaces"], key=lambda i: i["device_index"])] == [32, 0]
    node.assert_consistent()


def test_uniform_scale_set_instance_writes_through_the_compute_api(azure: Callable[..., AzureNode]) -> None:
    node = azure(vmss=True)
    node.settle((1, 16))
    node.add_pods(9)
    node.settle((1, 32))
    node.assert_consistent()
    instance = f"/virtualMachineScaleSets/pool/virtualMachines/{node.vm.instance_id}".lower()
    puts = [p.lower() for m, p, status, _ in node.arm.requests if m == "PUT"]
    assert puts and all(p.endswith(instance) for p in puts), puts
    assert not any("networkinterfaces" in p for p in puts), puts
    assert node.arm.writes == len(puts) == 2, "one compute write per batch of 16"


# --- 4. faults converge --------------------------------------------------------------------------


def _external_config(node: AzureNode, name: str) -> Callable[[dict[str, Any]], None]:
    subnet = node.configs()[0]["properties"]["subnet"]["id"]

    def mutate(body: dict[str, Any]) -> None:
        body["properties"]["ipConfigurations"].append(
            {
                "name": name,
                "properties": {"privateIPAllocationMethod": "Dynamic", "subnet": {"id": subnet}},
            }
        )

    return mutate


def test_throttling_errors_and_a_racing_writer_converge(azure: Callable[..., AzureNode]) -> None:
    node = azure(start=False)
    arm_nic = "networkInterfaces/" + node.vm.nics[0].rsplit("/", 1)[-1]
    # Throttled twice (Retry-After), then a 500: the first growth still lands, once.
    node.arm.fail("PUT", arm_nic, 429, code="TooManyRequests", headers={"Retry-After": "1"}, times=2)
    node.arm.fail("PUT", arm_nic, 500, times=1)
    node.daemon.start()
    node.settle((1, 16))
    node.assert_consistent()
    statuses = [s for m, p, s, _ in node.arm.requests if m == "PUT"]
    assert statuses[:4] == [429, 429, 500, 200], statuses
    assert node.arm.writes == 1

    # Another writer changes the NIC between the daemon's GET and PUT: 412, read again, redo.
    with node.arm.hold_writes():
        node.add_pods(9)
        node.arm.wait_for_held(1, timeout=10)
        node.arm.external_write(node.vm.nics[0], _external_config(node, "other-team"))
    node.settle((1, 32))
    node.assert_consistent()
    assert 412 in [s for m, p, s, _ in node.arm.requests if m == "PUT"]
    assert any(e.get("event") == "azure_etag_mismatch_retry" for e in node.daemon.events())
    [external] = [c for c in node.configs() if c["name"] == "other-team"]
    external_ip = _address(external)
    assert external_ip and external_ip not in {a for v in node.pool_ips().values() for a in v}

    # A write ARM applied whose answer was lost (500): the retry reuses the names, nothing doubles.
    node.arm.fail("PUT", arm_nic, 500, apply_first=True, times=1)
    node.add_pods(16, start=9)
    node.settle((1, 48))
    node.assert_consistent()
    statuses = [s for m, p, s, _ in node.arm.requests if m == "PUT"]
    assert statuses.count(500) == 2, statuses  # the injected 500 was met, and the growth landed once

    node.del_pods(25)
    node.settle((1, 16), timeout=40)
    node.assert_consistent()
    [after] = [c for c in node.configs() if c["name"] == "other-team"]
    assert _address(after) == external_ip, "the other writer's ipConfiguration was changed"
    assert len(node.configs()) == 1 + 16 + 1


# --- 5. a crash between the PUT and the checkpoint -----------------------------------------------


def test_crash_after_the_put_before_the_checkpoint_adopts_the_addresses(
    azure: Callable[..., AzureNode],
) -> None:
    node = azure()
    node.settle((1, 16))
    with node.arm.hold_writes():
        ips = node.add_pods(9)
        node.arm.wait_for_held(1, timeout=10)
        assert node.counts() == (1, 16)
        node.daemon.kill()
    # Released: the daemon's PUT completes in ARM after the daemon is gone.
    deadline = time.monotonic() + 10
    while node.counts() != (1, 32) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert node.counts() == (1, 32)
    node.daemon.start()
    pool = node.pool()
    on_nic = {a for v in node.ours().values() for a in v}
    held = {a for v in node.pool_ips().values() for a in v}
    assert on_nic == held, f"ipConfigurations the restarted daemon does not hold: {on_nic - held}"
    assert pool["quarantined"] == 0, pool
    assigned = {a["container_id"]: a["ip"] for a in node.daemon.get("/v1/assignments")}
    assert assigned == {f"pod{i:04d}": ip for i, ip in enumerate(ips)}
    node.settle((1, 32))
    node.assert_consistent()
    node.add_pods(1, start=9)  # the adopted addresses are usable
    node.assert_consistent()


# --- 6. long-running operations ------------------------------------------------------------------


def test_async_completion_is_followed_to_the_end(azure: Callable[..., AzureNode]) -> None:
    node = azure(start=False)
    node.arm.async_polls = 2
    node.arm.retry_after = "0"
    node.daemon.start()
    node.settle((1, 16))
    node.assert_consistent()
    assert node.arm.count("GET", "/asyncops/") >= 2
    assert 201 in [s for m, _, s, _ in node.arm.requests if m == "PUT"]


# --- 7. and 8. growth pauses ---------------------------------------------------------------------


def test_missing_permission_pauses_growth_and_names_the_action(azure: Callable[..., AzureNode]) -> None:
    node = azure(start=False)
    node.arm.fail("PUT", "networkInterfaces", 403, code="AuthorizationFailed", times=1000)
    node.daemon.start()
    [paused, *_] = node.wait_event("pool_growth_paused")
    assert NIC_WRITE in paused.get("missing_permission", ""), paused
    deadline = time.monotonic() + 10
    while "cloudcni_pool_growth_paused 1.0" not in node.daemon.metrics() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert "cloudcni_pool_growth_paused 1.0" in node.daemon.metrics()
    time.sleep(1.0)
    assert node.arm.count("PUT") == 1, "a refused write is not retried while growth is paused"
    assert node.pool()["total"] == 0 and node.pool()["growth_paused_until"]
    assert node.daemon.proc is not None and node.daemon.proc.poll() is None


def test_subnet_exhaustion_pauses_growth_and_keeps_what_it_got(
    azure_cloud: FakeArm, azure: Callable[..., AzureNode]
) -> None:
    # /28: 16 - 5 reserved = 11 usable, one for the primary: a batch of 16 cannot fit at all.
    # /27: 27 usable, 26 left: the first batch fits, the second does not.
    azure_cloud.add_vnet("tiny", ["10.225.0.0/16"], {"tiny28": "10.225.0.0/28", "tiny27": "10.225.1.0/27"})
    empty = azure(subnet="tiny28", start=False)
    partial = azure(subnet="tiny27", start=False)
    start_all(empty, partial)
    partial.settle((1, 16))
    partial.add_pods(9)
    for node in (empty, partial):
        [paused, *_] = node.wait_event("pool_growth_paused")
        assert "SubnetIsFull" in paused["error"], paused
    empty.settle((1, 0))
    partial.settle((1, 16))
    for node in (empty, partial):
        node.assert_consistent()
        assert node.daemon.proc is not None and node.daemon.proc.poll() is None
        assert "cloudcni_pool_growth_paused 1.0" in node.daemon.metrics()
    partial.add_pods(7, start=9)  # what the pool holds is still handed out
    assert partial.pool()["assigned"] == 16


# --- 9. start-up ---------------------------------------------------------------------------------


def test_prefix_delegation_is_refused_on_azure(azure_cloud: FakeArm, tmp_path: Path) -> None:
    vm = azure_cloud.add_vm("node-pd")
    env = azure_env(tmp_path, azure_cloud, azure_cloud.imds_for(vm), ENABLE_PREFIX_DELEGATION="true")
    done = subprocess.run(
        [sys.executable, "-m", "ipamd"], env=env, cwd=ROOT, capture_output=True, timeout=60, check=False
    )
    assert done.returncode == 2, done
    assert b"ENABLE_PREFIX_DELEGATION" in done.stderr, done.stderr
    assert not azure_cloud.requests, "the daemon talked to ARM before refusing its settings"


def test_the_daemon_environment_reaches_only_the_fakes(
    azure_cloud: FakeArm, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in (
        "IDENTITY_ENDPOINT",
        "MSI_ENDPOINT",
        "AZURE_FEDERATED_TOKEN_FILE",
        "HTTPS_PROXY",
        "https_proxy",
    ):
        monkeypatch.setenv(name, "http://192.0.2.1:3128")
    monkeypatch.setenv("IP_BATCH_SIZE", "3")
    vm = azure_cloud.add_vm("node-env")
    env = azure_env(tmp_path, azure_cloud, azure_cloud.imds_for(vm))
    assert not {"IDENTITY_ENDPOINT", "MSI_ENDPOINT", "AZURE_FEDERATED_TOKEN_FILE", "IP_BATCH_SIZE"} & set(env)
    assert not [k for k in env if k.upper().endswith("_PROXY") and k.upper() != "NO_PROXY"]
    assert env["NO_PROXY"] == "127.0.0.1,localhost"
    assert env["AZURE_ARM_ENDPOINT"] == azure_cloud.arm_url
    assert env["AZURE_POD_IDENTITY_AUTHORITY_HOST"] == env["AZURE_IMDS_ENDPOINT"]


# --- the pod subnet named by a Node label (the Kubernetes integration) ----------------------------


def test_a_node_label_names_the_pod_subnet(
    azure: Callable[..., AzureNode], azure_cloud: FakeArm, kube_apiserver: KubeApiServer, tmp_path: Path
) -> None:
    """AZURE_POD_SUBNET_ID unset: the label names a subnet of the VM's VNet; pod addresses go on the
    NIC in it and the primary NIC is left alone; the providerID names this VM and passes the check."""
    azure_cloud.add_subnet("vnet", "pods", "10.224.8.0/22")
    node_name = "aks-pods-0"
    node = azure(nics=2, subnet=["nodes", "pods"], start=False)
    kube_apiserver.add_node(
        node_name, labels={"cloud-cni.io/pod-subnet": "pods"}, provider_id="azure://" + node.vm.id
    )
    node.daemon.start(
        KUBECONFIG=kube_apiserver.kubeconfig(tmp_path / "kubeconfig"),
        NODE_NAME=node_name,
        KUBERNETES_INTEGRATION="on",
        WARM_IP_TARGET="4",
        MINIMUM_IP_TARGET="4",
        IP_BATCH_SIZE="1",
    )
    ours = node.ours()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and len(ours[node.vm.nics[1].lower()]) < 4:
        time.sleep(0.2)
        ours = node.ours()
    assert ours[node.vm.nics[0].lower()] == []
    assert len(ours[node.vm.nics[1].lower()]) == 4
    assert all(
        ipaddress.IPv4Address(a) in ipaddress.IPv4Network("10.224.8.0/22")
        for a in ours[node.vm.nics[1].lower()]
    )
    ips = node.add_pods(2)
    assert all(ipaddress.IPv4Address(ip) in ipaddress.IPv4Network("10.224.8.0/22") for ip in ips)
    assert node.daemon.get("/v1/k8s")["api"]["reachable"] is True
    assert not [e for e in kube_apiserver.events() if e["reason"] == "PodSubnetInvalid"]
