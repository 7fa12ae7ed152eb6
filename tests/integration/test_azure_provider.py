"""AzureProvider through the real SDK over HTTPS against the fake ARM (tests/fakes/azure_arm.py).

Discovery from IMDS + ARM, ipConfiguration writes with If-Match, coalescing, idempotent adds, the
limits the provider enforces itself, the Uniform scale-set path through the Compute API, and ARM
errors translated into the CloudError tree. Everything on 127.0.0.1 (the ``azure_loopback_only``
guard fails any other connect).
"""

from __future__ import annotations

import dataclasses
import ipaddress
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from ipamd.cloud.azure import factory as azure_factory
from ipamd.cloud.azure.client import Arm, make_credential
from ipamd.cloud.azure.imds import AzureImdsClient
from ipamd.cloud.azure.provider import NAME_PREFIX, AzureProvider
from ipamd.cloud.base import Placement
from ipamd.config import Settings
from ipamd.eniconfig import azure_subnet_from_label
from ipamd.errors import (
    CloudPermissionError,
    ConfigError,
    InterfaceNotFound,
    LimitExceeded,
    PermanentCloudError,
    SubnetFull,
    TemporaryCloudError,
    ThrottledError,
)
from ipamd.pool.model import InterfaceId
from tests.fakes.azure_arm import FakeArm, Vm

pytestmark = pytest.mark.integration

NIC_PUT = "networkInterfaces"


@pytest.fixture(autouse=True)
def _loopback_only(azure_loopback_only: None) -> None:
    """Nothing leaves loopback."""


@pytest.fixture
def make(azure_cloud: FakeArm, monkeypatch: pytest.MonkeyPatch) -> Callable[..., AzureProvider]:
    def build(vm: Vm, **kwargs: Any) -> AzureProvider:
        imds = azure_cloud.imds_for(vm)
        monkeypatch.setenv("AZURE_POD_IDENTITY_AUTHORITY_HOST", imds.url)
        node = AzureImdsClient(imds.url).node()
        arm = Arm(
            make_credential(None, imds.url),
            node.subscription_id,
            endpoint=azure_cloud.arm_url,
            ca_bundle=azure_cloud.ca_path,
            polling_interval=0.01,
        )
        return AzureProvider(arm, node, **kwargs)

    return build


@pytest.fixture
def vm(azure_cloud: FakeArm) -> Vm:
    return azure_cloud.add_vm("node-1")


@pytest.fixture
def provider(make: Callable[[Vm], AzureProvider], vm: Vm) -> Iterator[AzureProvider]:
    yield make(vm)


def ours(cloud: FakeArm, nic: str) -> list[str]:
    """Our ipconfigs' addresses as ARM holds them."""
    return sorted(
        c["properties"]["privateIPAddress"]
        for c in cloud.nic(nic)["properties"]["ipConfigurations"]
        if c["name"].startswith(NAME_PREFIX)
    )


def nic_id(vm: Vm, n: int = 0) -> InterfaceId:
    return InterfaceId(vm.nics[n])


# --- discovery -------------------------------------------------------------------------------------


def test_discovery_of_a_vm(azure_cloud: FakeArm, provider: AzureProvider, vm: Vm) -> None:
    limits = provider.instance_limits()
    assert (limits.max_interfaces, limits.ipv4_per_interface, limits.default_max_pods) == (1, 256, 250)
    assert not limits.detachable_interfaces and not limits.prefix_delegation
    assert limits.instance_type == "Standard_D4s_v3"
    (view,) = provider.list_interfaces()
    assert view.id.lower() == vm.nics[0].lower() and view.primary and view.device_index == 0
    assert view.primary_ip == azure_cloud.primary_ip(vm) and view.ips == ()
    assert view.subnet_cidr == "10.224.0.0/24" and view.subnet_id == azure_cloud.subnet_id("nodes")
    assert view.mac.count(":") == 5 and view.mac == view.mac.lower()
    assert provider.network_cidrs == ("10.224.0.0/16",)


def test_a_vm_with_two_nics_lists_the_primary_first(
    azure_cloud: FakeArm, make: Callable[[Vm], AzureProvider]
) -> None:
    vm = azure_cloud.add_vm("node-2", nics=2)
    provider = make(vm)
    views = provider.list_interfaces()
    assert [v.device_index for v in views] == [0, 1] and [v.primary for v in views] == [True, False]
    assert provider.instance_limits().default_max_pods == 250
    assert provider.instance_limits().max_interfaces == 2


# --- add and remove ------------------------------------------------------------------------------


def test_assign_adds_named_ipconfigs_in_one_write(
    azure_cloud: FakeArm, provider: AzureProvider, vm: Vm
) -> None:
    writes = azure_cloud.writes
    ips = provider.assign_ips(nic_id(vm), 16)
    assert len(ips) == 16 == len(set(ips))
    assert sorted(ips) == ours(azure_cloud, vm.nics[0])
    assert azure_cloud.writes == writes + 1
    put = [c for c in azure_cloud.calls if c.method == "PUT"][-1]
    assert put.headers.get("if-match", "").startswith('W/"')  # conditional write
    (view,) = provider.list_interfaces()
    assert sorted(view.ips) == sorted(ips)


def test_release_removes_only_the_given_addresses(
    azure_cloud: FakeArm, provider: AzureProvider, vm: Vm
) -> None:
    ips = provider.assign_ips(nic_id(vm), 6)
    provider.release_ips(nic_id(vm), [*ips[:4], "10.224.0.250"])  # one not held: not an error
    assert ours(azure_cloud, vm.nics[0]) == sorted(ips[4:])
    writes = azure_cloud.writes
    provider.release_ips(nic_id(vm), ips[:4])  # already gone: no write
    assert azure_cloud.writes == writes


def test_other_secondary_ipconfigs_are_never_listed_or_removed(
    azure_cloud: FakeArm, provider: AzureProvider, vm: Vm
) -> None:
    def add_other(nic: dict[str, Any]) -> None:
        nic["properties"]["ipConfigurations"].append(
            {
                "name": "legacy-1",
                "properties": {
                    "privateIPAllocationMethod": "Dynamic",
                    "primary": False,
                    "subnet": {"id": azure_cloud.subnet_id("nodes")},
                },
            }
        )

    azure_cloud.external_write(vm.nics[0], add_other)
    other = [
        c for c in azure_cloud.nic(vm.nics[0])["properties"]["ipConfigurations"] if c["name"] == "legacy-1"
    ]
    address = other[0]["properties"]["privateIPAddress"]
    (view,) = provider.list_interfaces()
    assert address not in view.ips
    ips = provider.assign_ips(nic_id(vm), 2)
    provider.release_ips(nic_id(vm), [*ips, address])
    names = [c["name"] for c in azure_cloud.nic(vm.nics[0])["properties"]["ipConfigurations"]]
    assert names == ["ipconfig1", "legacy-1"]


def test_a_concurrent_writer_is_never_overwritten(
    azure_cloud: FakeArm, provider: AzureProvider, vm: Vm
) -> None:
    """Another writer changes the NIC between our GET and our PUT: 412, read again, redo."""
    azure_cloud.fail("PUT", NIC_PUT, 412, code="PreconditionFailed", times=2)
    ips = provider.assign_ips(nic_id(vm), 3)
    assert len(ips) == 3 and sorted(ips) == ours(azure_cloud, vm.nics[0])
    assert azure_cloud.count("PUT", NIC_PUT) >= 3


def test_a_real_race_with_an_external_writer_keeps_both_changes(
    azure_cloud: FakeArm, provider: AzureProvider, vm: Vm
) -> None:
    done: list[list[str]] = []
    with azure_cloud.hold_writes():
        t = threading.Thread(target=lambda: done.append(provider.assign_ips(nic_id(vm), 2)))
        t.start()
        azure_cloud.wait_for_held(1)

        def add_other(nic: dict[str, Any]) -> None:
            nic["properties"]["ipConfigurations"].append(
                {
                    "name": "other-writer",
                    "properties": {"primary": False, "subnet": {"id": azure_cloud.subnet_id()}},
                }
            )

        azure_cloud.external_write(vm.nics[0], add_other)  # changes the etag under the held PUT
    t.join(10)
    names = [c["name"] for c in azure_cloud.nic(vm.nics[0])["properties"]["ipConfigurations"]]
    assert "other-writer" in names
    assert len(done) == 1 and sorted(done[0]) == ours(azure_cloud, vm.nics[0])


def test_an_etag_storm_gives_up_as_a_temporary_error(
    azure_cloud: FakeArm, provider: AzureProvider, vm: Vm
) -> None:
    azure_cloud.fail("PUT", NIC_PUT, 412, code="PreconditionFailed", times=50)
    with pytest.raises(TemporaryCloudError):
        provider.assign_ips(nic_id(vm), 1)
    assert azure_cloud.count("PUT", NIC_PUT) == 5


def test_concurrent_needs_are_coalesced_into_one_write(
    azure_cloud: FakeArm, provider: AzureProvider, vm: Vm
) -> None:
    first = provider.assign_ips(nic_id(vm), 4)
    results: dict[str, Any] = {}
    with azure_cloud.hold_writes():
        lead = threading.Thread(target=lambda: results.setdefault("lead", provider.assign_ips(nic_id(vm), 1)))
        lead.start()
        azure_cloud.wait_for_held(1)  # the first write is in flight: the next ones queue behind it
        others = [
            threading.Thread(target=lambda: results.setdefault("add", provider.assign_ips(nic_id(vm), 3))),
            threading.Thread(
                target=lambda: results.setdefault("del", provider.release_ips(nic_id(vm), first[:2]))
            ),
            threading.Thread(target=lambda: results.setdefault("add2", provider.assign_ips(nic_id(vm), 2))),
        ]
        for t in others:
            t.start()
        time.sleep(0.3)
        writes = azure_cloud.writes
    for t in [lead, *others]:
        t.join(10)
    assert azure_cloud.writes == writes + 2  # the lead's write, then one for the three queued
    assert len(results["add"]) == 3 and len(results["add2"]) == 2
    expected = set(first[2:]) | set(results["lead"]) | set(results["add"]) | set(results["add2"])
    assert set(ours(azure_cloud, vm.nics[0])) == expected


def test_an_add_with_an_unknown_outcome_is_not_repeated(
    azure_cloud: FakeArm, provider: AzureProvider, vm: Vm
) -> None:
    """The PUT was applied but its answer lost: the retry reuses the same names, adds nothing more."""
    azure_cloud.fail("PUT", NIC_PUT, 500, code="InternalServerError", apply_first=True)
    with pytest.raises(TemporaryCloudError):
        provider.assign_ips(nic_id(vm), 4)
    assert len(ours(azure_cloud, vm.nics[0])) == 4  # it happened
    writes = azure_cloud.writes
    ips = provider.assign_ips(nic_id(vm), 4)  # the caller's retry
    assert sorted(ips) == ours(azure_cloud, vm.nics[0]) and len(ips) == 4
    assert azure_cloud.writes == writes  # nothing added twice, no write at all


def test_a_lost_connection_is_temporary_and_the_retry_converges(
    azure_cloud: FakeArm, provider: AzureProvider, vm: Vm
) -> None:
    azure_cloud.fail("PUT", NIC_PUT, 0, apply_first=True)
    with pytest.raises(TemporaryCloudError):
        provider.assign_ips(nic_id(vm), 2)
    assert len(provider.assign_ips(nic_id(vm), 3)) == 3
    assert len(ours(azure_cloud, vm.nics[0])) == 3


def test_long_running_operations_take_addresses_from_the_final_resource(
    azure_cloud: FakeArm, provider: AzureProvider, vm: Vm
) -> None:
    azure_cloud.async_polls = 2
    ips = provider.assign_ips(nic_id(vm), 5)
    assert len(ips) == 5 and sorted(ips) == ours(azure_cloud, vm.nics[0])
    assert azure_cloud.count("GET", "asyncops") >= 3


@pytest.mark.parametrize(
    ("status", "code", "headers", "kind"),
    [
        (429, "TooManyRequests", {"Retry-After": "3"}, ThrottledError),
        (429, "RetryableErrorDueToAnotherOperation", {"Retry-After": "1"}, ThrottledError),
        (503, "ServiceUnavailable", None, TemporaryCloudError),
        (403, "AuthorizationFailed", None, CloudPermissionError),
        (400, "SubnetIsFull", None, SubnetFull),
        (400, "QuotaExceeded", None, LimitExceeded),
    ],
)
def test_arm_errors_are_translated(  # noqa: PLR0917
    azure_cloud: FakeArm,
    provider: AzureProvider,
    vm: Vm,
    status: int,
    code: str,
    headers: dict[str, str] | None,
    kind: type[Exception],
) -> None:
    azure_cloud.fail("PUT", NIC_PUT, status, code=code, headers=headers)
    with pytest.raises(kind) as err:
        provider.assign_ips(nic_id(vm), 1)
    if headers:
        assert isinstance(err.value, TemporaryCloudError) and err.value.retry_after == float(
            headers["Retry-After"]
        )
    if isinstance(err.value, CloudPermissionError):
        assert "Microsoft.Network/networkInterfaces/write" in err.value.action
    assert ours(azure_cloud, vm.nics[0]) == []


# --- limits the provider enforces ----------------------------------------------------------------


def test_256_ipconfigs_per_nic_enforced_before_any_write(
    azure_cloud: FakeArm, make: Callable[[Vm], AzureProvider]
) -> None:
    azure_cloud.add_vnet("big", ["10.100.0.0/16"], {"pods": "10.100.0.0/20"})
    vm = azure_cloud.add_vm("big-node", subnet="pods")
    provider = make(vm)
    provider.assign_ips(nic_id(vm), 255)
    writes, puts = azure_cloud.writes, azure_cloud.count("PUT", NIC_PUT)
    with pytest.raises(LimitExceeded):
        provider.assign_ips(nic_id(vm), 1)
    assert azure_cloud.count("PUT", NIC_PUT) == puts and azure_cloud.writes == writes


def test_256_ips_per_vm_across_nics(azure_cloud: FakeArm, make: Callable[[Vm], AzureProvider]) -> None:
    azure_cloud.add_vnet("big", ["10.100.0.0/16"], {"pods": "10.100.0.0/20"})
    vm = azure_cloud.add_vm("wide", nics=2, subnet="pods")
    provider = make(vm)
    provider.assign_ips(nic_id(vm, 0), 200)
    puts = azure_cloud.count("PUT", NIC_PUT)
    with pytest.raises(LimitExceeded):  # 2 primaries + 200 + 60 > 256
        provider.assign_ips(nic_id(vm, 1), 60)
    assert azure_cloud.count("PUT", NIC_PUT) == puts
    assert len(provider.assign_ips(nic_id(vm, 1), 54)) == 54


def test_nics_are_never_attached_or_detached(provider: AzureProvider, vm: Vm) -> None:
    with pytest.raises(LimitExceeded):
        provider.attach_interface(1, 0)
    with pytest.raises(PermanentCloudError):
        provider.detach_interface(nic_id(vm))
    with pytest.raises(LimitExceeded):
        provider.assign_prefixes(nic_id(vm), 1)


def test_a_nic_of_another_node_is_refused(azure_cloud: FakeArm, provider: AzureProvider) -> None:
    other = azure_cloud.add_vm("node-9")
    with pytest.raises(InterfaceNotFound):
        provider.assign_ips(InterfaceId(other.nics[0]), 1)
    assert ours(azure_cloud, other.nics[0]) == []


def test_subnet_exhaustion(azure_cloud: FakeArm, make: Callable[[Vm], AzureProvider]) -> None:
    azure_cloud.add_vnet("tiny", ["10.50.0.0/24"], {"small": "10.50.0.0/28"})  # 11 usable, 1 primary
    vm = azure_cloud.add_vm("small-node", subnet="small")
    provider = make(vm)
    assert len(provider.assign_ips(nic_id(vm), 8)) == 8
    with pytest.raises(SubnetFull):
        provider.assign_ips(nic_id(vm), 5)
    assert len(ours(azure_cloud, vm.nics[0])) == 8  # a refused write changes nothing


# --- Uniform scale-set instances ----------------------------------------------------------------


def test_a_uniform_scale_set_instance_writes_through_the_compute_api(
    azure_cloud: FakeArm, make: Callable[[Vm], AzureProvider]
) -> None:
    vm = azure_cloud.add_vmss_instance("aks-nodepool1-vmss", "3")
    azure_cloud.add_vmss_instance("aks-nodepool1-vmss", "4")  # a neighbour with the same NIC names
    provider = make(vm)
    (view,) = provider.list_interfaces()
    ips = provider.assign_ips(view.id, 6)
    assert len(ips) == 6
    assert sorted(ips) == ours(azure_cloud, vm.nics[0])
    puts = [r for r in azure_cloud.requests if r[0] == "PUT"]
    assert puts and all("/virtualMachineScaleSets/aks-nodepool1-vmss/virtualMachines/3" in r[1] for r in puts)
    assert not [r for r in puts if "networkinterfaces" in r[1].lower()]
    provider.release_ips(view.id, ips[:2])
    assert ours(azure_cloud, vm.nics[0]) == sorted(ips[2:])
    (view,) = provider.list_interfaces()
    assert sorted(view.ips) == sorted(ips[2:])


def test_scale_set_writes_are_conditional(azure_cloud: FakeArm, make: Callable[[Vm], AzureProvider]) -> None:
    vm = azure_cloud.add_vmss_instance("aks-vmss", "0")
    provider = make(vm)
    azure_cloud.fail("PUT", "virtualMachines/0", 412, code="PreconditionFailed", times=1)
    assert len(provider.assign_ips(nic_id(vm), 2)) == 2
    put = [c for c in azure_cloud.calls if c.method == "PUT"][-1]
    assert put.headers.get("if-match") == '"1"'


def test_no_errors_inside_the_fake(azure_cloud: FakeArm, provider: AzureProvider, vm: Vm) -> None:
    provider.assign_ips(nic_id(vm), 3)
    assert azure_cloud.errors == []


# --- identity and instance metadata ----------------------------------------------------------------


def test_a_user_assigned_identity_asks_for_its_client_id(
    azure_cloud: FakeArm, vm: Vm, monkeypatch: pytest.MonkeyPatch
) -> None:
    imds = azure_cloud.imds_for(vm)
    monkeypatch.delenv("AZURE_POD_IDENTITY_AUTHORITY_HOST", raising=False)
    client_id = "0f0e0d0c-0000-4000-8000-00000000abcd"
    credential = make_credential(client_id, imds.url)  # the token endpoint follows AZURE_IMDS_ENDPOINT
    node = AzureImdsClient(imds.url).node()
    arm = Arm(credential, node.subscription_id, endpoint=azure_cloud.arm_url, ca_bundle=azure_cloud.ca_path)
    AzureProvider(arm, node)
    assert imds.token_requests and all(r.get("client_id") == client_id for r in imds.token_requests)


def test_no_token_no_start(azure_cloud: FakeArm, vm: Vm, monkeypatch: pytest.MonkeyPatch) -> None:
    imds = azure_cloud.imds_for(vm)
    monkeypatch.setenv("AZURE_POD_IDENTITY_AUTHORITY_HOST", imds.url)
    imds.token_fail(400, times=100)  # IMDS: "identity not found"
    node = AzureImdsClient(imds.url).node()
    arm = Arm(
        make_credential(None, imds.url),
        node.subscription_id,
        endpoint=azure_cloud.arm_url,
        ca_bundle=azure_cloud.ca_path,
    )
    with pytest.raises(TemporaryCloudError, match="token"):  # the daemon stops; the DaemonSet restarts it
        AzureProvider(arm, node)
    assert azure_cloud.count("GET", "virtualMachines") == 0  # nothing reached ARM without a token


def test_imds_is_retried_on_5xx_and_needs_the_metadata_header(azure_cloud: FakeArm, vm: Vm) -> None:
    imds = azure_cloud.imds_for(vm)
    imds.fail_next(2, 500)
    sleeps: list[float] = []
    node = AzureImdsClient(imds.url, sleep=sleeps.append).node()
    assert node.name == "node-1" and len(sleeps) == 2
    imds.fail_next(1, 404)
    with pytest.raises(PermanentCloudError):
        AzureImdsClient(imds.url, sleep=sleeps.append).node()


# --- pod subnet (AZURE_POD_SUBNET_ID, or a placement from the Node label) --------------------------
#
# Azure keeps all ipConfigurations of a NIC in one subnet (the fake refuses others as ARM does:
# IpConfigurationsOnSameNicCannotUseDifferentSubnets) and all NICs of a VM in one VNet. A pod subnet
# is therefore the subnet of one of the VM's NICs: pod addresses go on that NIC only.

PODS_CIDR = "10.224.8.0/22"


@pytest.fixture
def two_subnets(azure_cloud: FakeArm) -> Vm:
    """A VM whose primary NIC is in "nodes" and whose second NIC is in "pods"."""
    azure_cloud.add_subnet("vnet", "pods", PODS_CIDR)
    return azure_cloud.add_vm("node-pods", nics=2, subnet=["nodes", "pods"])


def in_pods(ip: str) -> bool:
    return ipaddress.IPv4Address(ip) in ipaddress.IPv4Network(PODS_CIDR)


def test_a_pod_subnet_puts_pod_addresses_on_the_nic_in_it(
    azure_cloud: FakeArm, make: Callable[..., AzureProvider], two_subnets: Vm
) -> None:
    vm = two_subnets
    provider = make(vm, pod_subnet_id=azure_cloud.subnet_id("pods"))
    assert provider.pod_subnet_id == azure_cloud.subnet_id("pods")
    assert not provider.primary_interface_pods
    views = provider.list_interfaces()
    assert [v.subnet_cidr for v in views] == ["10.224.0.0/24", PODS_CIDR]

    ips = provider.assign_ips(nic_id(vm, 1), 3)
    assert len(ips) == 3 and all(in_pods(ip) for ip in ips)
    assert ours(azure_cloud, vm.nics[1]) == sorted(ips)

    puts = azure_cloud.count("PUT")
    with pytest.raises(PermanentCloudError, match="IpConfigurationsOnSameNicCannotUseDifferentSubnets"):
        provider.assign_ips(nic_id(vm, 0), 1)
    assert azure_cloud.count("PUT") == puts and ours(azure_cloud, vm.nics[0]) == []
    assert azure_cloud.errors == []


def test_a_placement_leaves_existing_ipconfigs_alone_and_none_returns_to_the_default(
    azure_cloud: FakeArm, make: Callable[..., AzureProvider], two_subnets: Vm
) -> None:
    vm = two_subnets
    provider = make(vm)
    assert provider.pod_subnet_id is None and provider.primary_interface_pods
    before = provider.assign_ips(nic_id(vm, 0), 2)  # pods on the primary NIC, in "nodes"

    label = azure_subnet_from_label("pods", provider.vnet_id)
    provider.set_interface_placement(Placement(label, None, "label cloud-cni.io/pod-subnet=pods"))
    assert provider.pod_subnet_id == label and not provider.primary_interface_pods
    assert ours(azure_cloud, vm.nics[0]) == sorted(before)  # untouched
    assert all(in_pods(ip) for ip in provider.assign_ips(nic_id(vm, 1), 2))
    provider.release_ips(nic_id(vm, 0), before[:1])  # they may still be given back
    assert ours(azure_cloud, vm.nics[0]) == sorted(before[1:])

    provider.set_interface_placement(None)  # the label went away: each NIC's own subnet again
    assert provider.pod_subnet_id is None and provider.primary_interface_pods
    assert len(provider.assign_ips(nic_id(vm, 0), 1)) == 1


def test_a_pod_subnet_that_is_the_primary_nics_keeps_pods_on_the_primary(
    azure_cloud: FakeArm, make: Callable[..., AzureProvider], two_subnets: Vm
) -> None:
    provider = make(two_subnets, pod_subnet_id=azure_cloud.subnet_id("nodes"))
    assert provider.primary_interface_pods
    assert len(provider.assign_ips(nic_id(two_subnets, 0), 2)) == 2
    with pytest.raises(PermanentCloudError, match="pod addresses go to nodes"):
        provider.assign_ips(nic_id(two_subnets, 1), 1)


def test_a_pod_subnet_without_a_nic_of_the_vm_is_refused(
    azure_cloud: FakeArm, make: Callable[..., AzureProvider], vm: Vm
) -> None:
    azure_cloud.add_subnet("vnet", "pods", PODS_CIDR)
    pods = azure_cloud.subnet_id("pods")
    with pytest.raises(PermanentCloudError, match=r"no NIC of this VM is in subnet pods.*DifferentSubnets"):
        make(vm, pod_subnet_id=pods)
    provider = make(vm)
    with pytest.raises(PermanentCloudError, match="no NIC of this VM is in subnet pods"):
        provider.set_interface_placement(Placement(pods, None, "label"))
    assert provider.pod_subnet_id is None  # the previous placement stays
    assert azure_cloud.writes == 0


def test_a_subnet_of_another_vnet_is_refused(
    azure_cloud: FakeArm, make: Callable[..., AzureProvider], two_subnets: Vm
) -> None:
    azure_cloud.add_vnet("other", ["10.60.0.0/16"], {"elsewhere": "10.60.0.0/24"})
    provider = make(two_subnets)
    with pytest.raises(PermanentCloudError, match="is not in the node's VNet"):
        provider.set_interface_placement(Placement(azure_cloud.subnet_id("elsewhere"), None, "label"))


@pytest.mark.parametrize(
    ("subnet", "groups", "message"),
    [
        ("subnet-0abc", None, "is not a subnet resource id"),
        (None, ("sg-1",), "security groups are an EC2 notion"),
    ],
)
def test_a_malformed_azure_placement_is_refused(  # noqa: PLR0917 - fixtures and parameters
    azure_cloud: FakeArm,
    make: Callable[..., AzureProvider],
    two_subnets: Vm,
    subnet: str | None,
    groups: tuple[str, ...] | None,
    message: str,
) -> None:
    provider = make(two_subnets)
    with pytest.raises(ValueError, match=message):
        provider.set_interface_placement(Placement(subnet or azure_cloud.subnet_id("pods"), groups, "x"))


def test_a_scale_set_instance_with_a_pod_nic(
    azure_cloud: FakeArm, make: Callable[..., AzureProvider]
) -> None:
    azure_cloud.add_subnet("vnet", "pods", PODS_CIDR)
    vm = azure_cloud.add_vmss_instance("aks-pods", "0", nics=2, subnet=["nodes", "pods"])
    provider = make(vm, pod_subnet_id=azure_cloud.subnet_id("pods"))
    ips = provider.assign_ips(nic_id(vm, 1), 4)
    assert len(ips) == 4 and all(in_pods(ip) for ip in ips)
    assert ours(azure_cloud, vm.nics[1]) == sorted(ips)


def test_the_factory_reports_a_bad_pod_subnet_as_a_config_error(
    azure_cloud: FakeArm, vm: Vm, monkeypatch: pytest.MonkeyPatch
) -> None:
    azure_cloud.add_subnet("vnet", "pods", PODS_CIDR)
    imds = azure_cloud.imds_for(vm)
    monkeypatch.setenv("AZURE_POD_IDENTITY_AUTHORITY_HOST", imds.url)
    settings = Settings(
        cloud_provider="azure",
        azure_imds_endpoint=imds.url,
        azure_arm_endpoint=azure_cloud.arm_url,
        azure_arm_ca_bundle=azure_cloud.ca_path,
        azure_pod_subnet_id=azure_cloud.subnet_id("pods"),
    )
    with pytest.raises(ConfigError, match=r"AZURE_POD_SUBNET_ID=.*no NIC of this VM is in subnet pods"):
        azure_factory.make(settings)
    ok = azure_factory.make(dataclasses.replace(settings, azure_pod_subnet_id=azure_cloud.subnet_id("nodes")))
    assert ok.pod_subnet_id == azure_cloud.subnet_id("nodes") and ok.primary_interface_pods
