"""The fake Azure (tests/fakes/azure_arm.py) driven by the real SDK clients and azure-identity.

These tests pin the fake to what the real clients send and accept, so the daemon's Azure provider can
be tested against it. Nothing may leave loopback: the autouse guard refuses non-loopback connects and
clears the environment variables that would send azure-identity or requests elsewhere.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from azure.core import MatchConditions
from azure.core.credentials import AccessToken
from azure.core.exceptions import (
    ClientAuthenticationError,
    HttpResponseError,
    ResourceModifiedError,
    ResourceNotFoundError,
    ServiceRequestError,
    ServiceResponseError,
)
from azure.identity import CredentialUnavailableError, ManagedIdentityCredential
from azure.mgmt.compute import ComputeManagementClient
from azure.mgmt.compute import models as cm
from azure.mgmt.network import NetworkManagementClient
from azure.mgmt.network.models import (
    NetworkInterface,
    NetworkInterfaceIPConfiguration,
    NetworkInterfaceIPConfigurationPropertiesFormat,
    Subnet,
)

from tests.fakes.azure_arm import ArmError, FakeArm, FakeImds, Vm

pytestmark = pytest.mark.integration

ARM_SCOPE = "https://management.azure.com/.default"


@pytest.fixture(autouse=True)
def _loopback_only(azure_loopback_only: None) -> None:
    """Every test here: nothing leaves loopback (tests/fakes/azure_arm.py)."""


@pytest.fixture
def node(azure_cloud: FakeArm) -> Vm:
    return azure_cloud.add_vm("node-1")


@pytest.fixture
def imds(azure_cloud: FakeArm, node: Vm, monkeypatch: pytest.MonkeyPatch) -> FakeImds:
    fake = azure_cloud.imds_for(node)
    monkeypatch.setenv("AZURE_POD_IDENTITY_AUTHORITY_HOST", fake.url)
    return fake


@pytest.fixture
def credential(imds: FakeImds) -> Iterator[ManagedIdentityCredential]:
    cred = ManagedIdentityCredential()
    yield cred
    cred.close()


@pytest.fixture
def network(azure_cloud: FakeArm, credential: ManagedIdentityCredential) -> Iterator[NetworkManagementClient]:
    """The network client as a daemon would build it; retry_total=0 so that errors surface at once."""
    client = NetworkManagementClient(
        credential,
        azure_cloud.subscription,
        base_url=azure_cloud.arm_url,
        connection_verify=azure_cloud.ca_path,
        polling_interval=0.01,
        retry_total=0,
    )
    yield client
    client.close()


@pytest.fixture
def compute(azure_cloud: FakeArm, credential: ManagedIdentityCredential) -> Iterator[ComputeManagementClient]:
    client = ComputeManagementClient(
        credential,
        azure_cloud.subscription,
        base_url=azure_cloud.arm_url,
        connection_verify=azure_cloud.ca_path,
        polling_interval=0.01,
        retry_total=0,
    )
    yield client
    client.close()


def add_ipconfigs(arm: FakeArm, nic: NetworkInterface, names: list[str], subnet: str = "nodes") -> None:
    assert nic.ip_configurations is not None
    for name in names:
        nic.ip_configurations.append(
            NetworkInterfaceIPConfiguration(
                name=name,
                properties=NetworkInterfaceIPConfigurationPropertiesFormat(
                    private_ip_allocation_method="Dynamic",
                    subnet=Subnet(id=arm.subnet_id(subnet)),
                    primary=False,
                ),
            )
        )


def addresses(nic: NetworkInterface) -> dict[str, str | None]:
    return {ic.name or "": ic.private_ip_address for ic in nic.ip_configurations or []}


def error_code(err: HttpResponseError) -> str | None:
    return err.error.code if err.error is not None else None


def imds_get(url: str, *, metadata: bool = True) -> tuple[int, Any]:
    req = urllib.request.Request(url, headers={"Metadata": "true"} if metadata else {})
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        with err:
            return err.code, json.loads(err.read())


def arm_raw(
    arm: FakeArm, method: str, path: str, *, token: str | None = None, body: Any = None
) -> tuple[int, Any]:
    """One request to the fake ARM without the SDK (checks what the SDK never sends)."""
    headers = {"Content-Type": "application/json"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(arm.arm_url + path, data=data, headers=headers, method=method)
    try:
        with urllib.request.urlopen(req, timeout=5, context=arm.tls.client_context()) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        with err:
            return err.code, json.loads(err.read())


class StaticCredential:
    def __init__(self, token: str) -> None:
        self.token = token

    def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        return AccessToken(self.token, int(time.time()) + 3600)


def test_get_nic_has_the_arm_shape(azure_cloud: FakeArm, node: Vm, network: NetworkManagementClient) -> None:
    nic = network.network_interfaces.get(azure_cloud.resource_group, "node-1-nic0")

    assert nic.id == node.nics[0]
    assert nic.etag is not None and nic.etag.startswith('W/"')
    assert nic.provisioning_state == "Succeeded"
    assert nic.primary is True
    assert nic.mac_address is not None and len(nic.mac_address.split("-")) == 6
    assert nic.virtual_machine is not None and nic.virtual_machine.id == node.id
    [ipconfig] = nic.ip_configurations or []
    assert ipconfig.name == "ipconfig1" and ipconfig.primary is True
    assert ipconfig.private_ip_address == "10.224.0.4"  # .0-.3 are Azure's
    assert ipconfig.private_ip_allocation_method == "Dynamic"
    assert ipconfig.subnet is not None and ipconfig.subnet.id == azure_cloud.subnet_id("nodes")
    assert ipconfig.etag == nic.etag
    method, path, status, api_version = azure_cloud.requests[-1]
    assert (method, status, api_version) == ("GET", 200, "2026-03-01")
    assert path == node.nics[0]

    with pytest.raises(ResourceNotFoundError):
        network.network_interfaces.get(azure_cloud.resource_group, "nope")
    vnet = network.virtual_networks.get(azure_cloud.resource_group, "vnet")
    assert vnet.address_space is not None and vnet.address_space.address_prefixes == ["10.224.0.0/16"]
    subnet = network.subnets.get(azure_cloud.resource_group, "vnet", "nodes")
    assert subnet.address_prefix == "10.224.0.0/24"
    assert [ref.id for ref in subnet.ip_configurations or []] == [
        f"{node.nics[0]}/ipConfigurations/ipconfig1"
    ]
    assert azure_cloud.errors == []


def test_vm_lists_its_nics_primary_first(azure_cloud: FakeArm, compute: ComputeManagementClient) -> None:
    vm = azure_cloud.add_vm("multi", nics=2, vm_size="Standard_D8s_v3")

    got = compute.virtual_machines.get(azure_cloud.resource_group, "multi")

    assert got.properties is not None and got.properties.network_profile is not None
    refs = got.properties.network_profile.network_interfaces or []
    assert [(r.id, r.properties.primary if r.properties else None) for r in refs] == [
        (vm.nics[0], True),
        (vm.nics[1], False),
    ]
    assert got.properties.hardware_profile is not None
    assert got.properties.hardware_profile.vm_size == "Standard_D8s_v3"


def test_adding_and_removing_ipconfigs(
    azure_cloud: FakeArm, node: Vm, network: NetworkManagementClient
) -> None:
    rg = azure_cloud.resource_group
    nic = network.network_interfaces.get(rg, "node-1-nic0")
    first_etag = nic.etag
    add_ipconfigs(azure_cloud, nic, ["cni-0", "cni-1", "cni-2"])

    result = network.network_interfaces.begin_create_or_update(rg, "node-1-nic0", nic).result()

    assert addresses(result) == {
        "ipconfig1": "10.224.0.4",
        "cni-0": "10.224.0.5",
        "cni-1": "10.224.0.6",
        "cni-2": "10.224.0.7",
    }
    assert result.etag != first_etag
    assert azure_cloud.ips_of("node-1-nic0") == ["10.224.0.5", "10.224.0.6", "10.224.0.7"]
    assert azure_cloud.writes == 1
    sent = azure_cloud.calls[-1]
    assert sent.method == "PUT" and "etag" not in sent.body  # the SDK drops read-only fields

    nic = network.network_interfaces.get(rg, "node-1-nic0")
    nic.ip_configurations = [ic for ic in nic.ip_configurations or [] if ic.name != "cni-1"]
    network.network_interfaces.begin_create_or_update(rg, "node-1-nic0", nic).result()
    assert azure_cloud.ips_of("node-1-nic0") == ["10.224.0.5", "10.224.0.7"]
    assert "10.224.0.6" not in azure_cloud.subnet_used("nodes")

    nic = network.network_interfaces.get(rg, "node-1-nic0")
    add_ipconfigs(azure_cloud, nic, ["cni-3"])
    result = network.network_interfaces.begin_create_or_update(rg, "node-1-nic0", nic).result()
    assert addresses(result)["cni-3"] == "10.224.0.6"  # lowest free again
    assert azure_cloud.writes == 3

    network.network_interfaces.begin_create_or_update(rg, "node-1-nic0", result).result()
    assert azure_cloud.writes == 3  # a PUT that changes nothing is no write
    assert azure_cloud.errors == []


def test_stale_if_match_is_refused(azure_cloud: FakeArm, node: Vm, network: NetworkManagementClient) -> None:
    rg = azure_cloud.resource_group
    nic = network.network_interfaces.get(rg, "node-1-nic0")

    def other_writer(body: dict[str, Any]) -> None:
        body["properties"]["ipConfigurations"].append(
            {"name": "theirs", "properties": {"subnet": {"id": azure_cloud.subnet_id()}}}
        )

    azure_cloud.external_write("node-1-nic0", other_writer)
    add_ipconfigs(azure_cloud, nic, ["mine"])

    with pytest.raises(HttpResponseError) as err:
        network.network_interfaces.begin_create_or_update(
            rg, "node-1-nic0", nic, headers={"If-Match": nic.etag}
        )
    assert err.value.status_code == 412 and error_code(err.value) == "PreconditionFailed"
    assert azure_cloud.ips_of("node-1-nic0") == ["10.224.0.5"]

    fresh = network.network_interfaces.get(rg, "node-1-nic0")
    add_ipconfigs(azure_cloud, fresh, ["mine"])
    result = network.network_interfaces.begin_create_or_update(
        rg, "node-1-nic0", fresh, headers={"If-Match": fresh.etag}
    ).result()
    assert addresses(result) == {"ipconfig1": "10.224.0.4", "theirs": "10.224.0.5", "mine": "10.224.0.6"}
    assert azure_cloud.external_writes == 1 and azure_cloud.writes == 1


def test_async_completion_is_polled(azure_cloud: FakeArm, node: Vm, network: NetworkManagementClient) -> None:
    rg = azure_cloud.resource_group
    azure_cloud.async_polls = 2
    nic = network.network_interfaces.get(rg, "node-1-nic0")
    add_ipconfigs(azure_cloud, nic, ["cni-0"])

    poller = network.network_interfaces.begin_create_or_update(rg, "node-1-nic0", nic)

    # The PUT was answered 201 Updating; the new ipconfig has no address yet (but it is reserved). The
    # poller's thread may already have polled once (InProgress): the PUT is the last write, not always
    # the last request.
    writes = [r for r in azure_cloud.requests if r[0] == "PUT"]
    assert writes[-1][:3] == ("PUT", node.nics[0], 201)
    during = azure_cloud.nic("node-1-nic0")
    assert during["properties"]["provisioningState"] == "Updating"
    assert "privateIPAddress" not in during["properties"]["ipConfigurations"][1]["properties"]
    assert azure_cloud.ips_of("node-1-nic0") == []
    assert "10.224.0.5" in azure_cloud.subnet_used("nodes")

    again = network.network_interfaces.get(rg, "node-1-nic0")
    with pytest.raises(HttpResponseError) as err:
        network.network_interfaces.begin_create_or_update(rg, "node-1-nic0", again)
    assert err.value.status_code == 429 and error_code(err.value) == "RetryableErrorDueToAnotherOperation"
    assert getattr(err.value.response, "headers", {}).get("Retry-After") == "1"

    result = poller.result()

    assert addresses(result)["cni-0"] == "10.224.0.5"
    assert result.provisioning_state == "Succeeded"
    polls = [r for r in azure_cloud.requests if r[1].startswith("/asyncops/")]
    assert [r[2] for r in polls] == [200, 200, 200]  # InProgress, InProgress, Succeeded
    assert azure_cloud.requests[-1][:3] == ("GET", node.nics[0], 200)  # the final GET
    assert azure_cloud.ips_of("node-1-nic0") == ["10.224.0.5"]


def test_ipconfig_limits(azure_cloud: FakeArm, network: NetworkManagementClient) -> None:
    rg = azure_cloud.resource_group
    azure_cloud.add_vnet("big", ["10.10.0.0/16"], {"pods": "10.10.0.0/20"})
    azure_cloud.add_vm("wide", nics=2, subnet="pods")
    nic = network.network_interfaces.get(rg, "wide-nic0")
    add_ipconfigs(azure_cloud, nic, [f"p{i}" for i in range(254)], subnet="pods")
    result = network.network_interfaces.begin_create_or_update(rg, "wide-nic0", nic).result()
    assert len(result.ip_configurations or []) == 255  # + the other NIC's primary = 256 on the VM

    other = network.network_interfaces.get(rg, "wide-nic1")
    add_ipconfigs(azure_cloud, other, ["one-too-many"], subnet="pods")
    with pytest.raises(HttpResponseError) as err:
        network.network_interfaces.begin_create_or_update(rg, "wide-nic1", other)
    assert err.value.status_code == 400 and error_code(err.value) == "QuotaExceeded"

    azure_cloud.add_vm("solo", subnet="pods")
    solo = network.network_interfaces.get(rg, "solo-nic0")
    add_ipconfigs(azure_cloud, solo, [f"p{i}" for i in range(256)], subnet="pods")  # 257 on one NIC
    with pytest.raises(HttpResponseError) as err:
        network.network_interfaces.begin_create_or_update(rg, "solo-nic0", solo)
    assert err.value.status_code == 400 and error_code(err.value) == "QuotaExceeded"
    assert azure_cloud.ips_of("solo-nic0") == []


def test_a_vm_with_nics_in_two_subnets_of_its_vnet(
    azure_cloud: FakeArm, network: NetworkManagementClient
) -> None:
    """NICs of one VM may sit in different subnets of one VNet; each NIC keeps its ipconfigs in its own."""
    rg = azure_cloud.resource_group
    azure_cloud.add_subnet("vnet", "pods", "10.224.8.0/22")
    azure_cloud.add_vm("split", nics=2, subnet=["nodes", "pods"])
    pods_nic = network.network_interfaces.get(rg, "split-nic1")
    assert addresses(pods_nic)["ipconfig1"] == "10.224.8.4"  # Azure keeps .0-.3: the first free one
    add_ipconfigs(azure_cloud, pods_nic, ["p0", "p1"], subnet="pods")
    result = network.network_interfaces.begin_create_or_update(rg, "split-nic1", pods_nic).result()
    assert addresses(result)["p0"] == "10.224.8.5" and addresses(result)["p1"] == "10.224.8.6"

    nodes_nic = network.network_interfaces.get(rg, "split-nic0")
    add_ipconfigs(azure_cloud, nodes_nic, ["far"], subnet="pods")
    with pytest.raises(HttpResponseError) as err:
        network.network_interfaces.begin_create_or_update(rg, "split-nic0", nodes_nic)
    assert error_code(err.value) == "IpConfigurationsOnSameNicCannotUseDifferentSubnets"
    assert azure_cloud.ips_of("split-nic0") == []

    azure_cloud.add_vnet("other", ["10.60.0.0/16"], {"elsewhere": "10.60.0.0/24"})
    with pytest.raises(ValueError, match="same VNet"):
        azure_cloud.add_vm("straddle", nics=2, subnet=["nodes", "elsewhere"])
    with pytest.raises(ValueError, match="overlaps"):
        azure_cloud.add_subnet("vnet", "clash", "10.224.8.0/24")
    with pytest.raises(ValueError, match="inside"):
        azure_cloud.add_subnet("vnet", "outside", "10.99.0.0/24")


def test_subnet_full_changes_nothing(azure_cloud: FakeArm, network: NetworkManagementClient) -> None:
    rg = azure_cloud.resource_group
    azure_cloud.add_vnet("small", ["10.50.0.0/24"], {"tiny": "10.50.0.0/29"})  # 3 usable: .4 .5 .6
    azure_cloud.add_vm("tiny-vm", subnet="tiny")
    nic = network.network_interfaces.get(rg, "tiny-vm-nic0")
    add_ipconfigs(azure_cloud, nic, ["a", "b", "c"], subnet="tiny")

    with pytest.raises(HttpResponseError) as err:
        network.network_interfaces.begin_create_or_update(rg, "tiny-vm-nic0", nic)
    assert err.value.status_code == 400 and error_code(err.value) == "SubnetIsFull"
    assert azure_cloud.subnet_used("tiny") == ["10.50.0.4"]
    assert azure_cloud.writes == 0

    nic.ip_configurations = (nic.ip_configurations or [])[:3]
    result = network.network_interfaces.begin_create_or_update(rg, "tiny-vm-nic0", nic).result()
    assert addresses(result) == {"ipconfig1": "10.50.0.4", "a": "10.50.0.5", "b": "10.50.0.6"}


def test_write_validation(azure_cloud: FakeArm, node: Vm, network: NetworkManagementClient) -> None:
    rg = azure_cloud.resource_group
    azure_cloud.add_vm("node-2")  # holds 10.224.0.5
    azure_cloud.add_vnet("other", ["10.60.0.0/16"], {"elsewhere": "10.60.0.0/24"})
    subnet_id = azure_cloud.subnet_id()

    def attempt(mutate: Callable[[NetworkInterface], None]) -> str | None:
        nic = network.network_interfaces.get(rg, "node-1-nic0")
        mutate(nic)
        with pytest.raises(HttpResponseError) as err:
            network.network_interfaces.begin_create_or_update(rg, "node-1-nic0", nic)
        assert err.value.status_code == 400
        return error_code(err.value)

    def static(address: str) -> Callable[[NetworkInterface], None]:
        def mutate(nic: NetworkInterface) -> None:
            (nic.ip_configurations or []).append(
                NetworkInterfaceIPConfiguration(
                    name="fixed",
                    properties=NetworkInterfaceIPConfigurationPropertiesFormat(
                        private_ip_allocation_method="Static",
                        private_ip_address=address,
                        subnet=Subnet(id=subnet_id),
                    ),
                )
            )

        return mutate

    def drop_primary(nic: NetworkInterface) -> None:
        nic.ip_configurations = []
        add_ipconfigs(azure_cloud, nic, ["x"])
        (nic.ip_configurations or [])[0].primary = True

    def duplicate(nic: NetworkInterface) -> None:
        add_ipconfigs(azure_cloud, nic, ["dup", "dup"])

    def missing_subnet(nic: NetworkInterface) -> None:
        add_ipconfigs(azure_cloud, nic, ["lost"])
        (nic.ip_configurations or [])[-1].subnet = Subnet(id=subnet_id.replace("/nodes", "/gone"))

    def two_subnets(nic: NetworkInterface) -> None:
        add_ipconfigs(azure_cloud, nic, ["far"], subnet="elsewhere")

    assert attempt(static("10.224.0.5")) == "PrivateIPAddressIsAllocated"
    assert attempt(static("10.224.0.2")) == "PrivateIPAddressInReservedRange"
    assert attempt(static("10.224.0.255")) == "PrivateIPAddressInReservedRange"
    assert attempt(static("10.224.1.9")) == "PrivateIPAddressNotInSubnet"
    assert attempt(drop_primary) == "InvalidPrimaryIpConfiguration"
    assert attempt(duplicate) == "DuplicateResourceName"
    assert attempt(missing_subnet) == "InvalidResourceReference"
    assert attempt(two_subnets) == "IpConfigurationsOnSameNicCannotUseDifferentSubnets"
    assert azure_cloud.writes == 0 and azure_cloud.ips_of("node-1-nic0") == []

    nic = network.network_interfaces.get(rg, "node-1-nic0")
    static("10.224.0.77")(nic)
    result = network.network_interfaces.begin_create_or_update(rg, "node-1-nic0", nic).result()
    assert addresses(result)["fixed"] == "10.224.0.77"
    with pytest.raises(ArmError, match="PrivateIPAddressIsAllocated"):
        azure_cloud.external_write(
            "node-2-nic0",
            lambda body: body["properties"]["ipConfigurations"].append(
                {
                    "name": "steal",
                    "properties": {
                        "privateIPAllocationMethod": "Static",
                        "privateIPAddress": "10.224.0.77",
                        "subnet": {"id": subnet_id},
                    },
                }
            ),
        )


def test_vmss_instance_nics(
    azure_cloud: FakeArm, network: NetworkManagementClient, compute: ComputeManagementClient
) -> None:
    rg = azure_cloud.resource_group
    first = azure_cloud.add_vmss_instance("pool", 0)
    second = azure_cloud.add_vmss_instance("pool", 1)

    nic = network.network_interfaces.get_virtual_machine_scale_set_network_interface(
        rg, "pool", "0", "pool-nic0"
    )
    assert nic.id == first.nics[0]
    add_ipconfigs(azure_cloud, nic, ["direct"])
    with pytest.raises(HttpResponseError) as err:
        network.network_interfaces.begin_create_or_update(rg, "pool-nic0", nic)
    assert err.value.status_code == 400 and error_code(err.value) == "OperationNotAllowed"
    status, body = arm_raw(
        azure_cloud,
        "PUT",
        first.nics[0] + "?api-version=2018-10-01",
        token=azure_cloud.issue_token(),
        body={},
    )
    assert status == 400 and body["error"]["code"] == "OperationNotAllowed"

    vm = compute.virtual_machine_scale_set_vms.get(rg, "pool", "0")
    assert vm.name == "pool_0" and vm.instance_id == "0" and vm.etag == '"1"'
    assert vm.properties is not None and vm.properties.network_profile_configuration is not None
    [cfg] = vm.properties.network_profile_configuration.network_interface_configurations or []
    assert cfg.name == "pool-nic0" and cfg.properties is not None
    cfg.properties.ip_configurations.append(
        cm.VirtualMachineScaleSetIPConfiguration(
            name="cni-0",
            properties=cm.VirtualMachineScaleSetIPConfigurationProperties(
                subnet=cm.ApiEntityReference(id=azure_cloud.subnet_id()), primary=False
            ),
        )
    )

    # etag= alone sends no If-Match: the SDK needs match_condition too.
    updated = compute.virtual_machine_scale_set_vms.begin_update(
        rg, "pool", "0", vm, etag=vm.etag, match_condition=MatchConditions.IfNotModified
    ).result()

    assert updated.etag == '"2"'
    sent = azure_cloud.calls[-1]
    assert sent.method == "PUT" and sent.headers["if-match"] == '"1"'
    assert "networkProfileConfiguration" in sent.body["properties"] and "instanceId" not in sent.body
    listed = list(
        network.network_interfaces.list_virtual_machine_scale_set_vm_network_interfaces(rg, "pool", "0")
    )
    # .4 is node-1's, .5 instance 0's and .6 instance 1's primary address
    assert [addresses(n) for n in listed] == [{"ipconfig1": "10.224.0.5", "cni-0": "10.224.0.7"}]
    assert azure_cloud.ips_of(second.nics[0]) == []

    with pytest.raises(ResourceModifiedError) as stale:  # stale etag
        compute.virtual_machine_scale_set_vms.begin_update(
            rg, "pool", "0", vm, etag=vm.etag, match_condition=MatchConditions.IfNotModified
        )
    assert stale.value.status_code == 412
    compute.virtual_machine_scale_set_vms.begin_update(rg, "pool", "0", vm, etag=vm.etag).result()
    assert "if-match" not in azure_cloud.calls[-1].headers

    azure_cloud.async_polls = 1
    vm = compute.virtual_machine_scale_set_vms.get(rg, "pool", "1")
    assert vm.properties is not None and vm.properties.network_profile_configuration is not None
    [cfg] = vm.properties.network_profile_configuration.network_interface_configurations or []
    assert cfg.properties is not None
    cfg.properties.ip_configurations.append(
        cm.VirtualMachineScaleSetIPConfiguration(
            name="cni-0",
            properties=cm.VirtualMachineScaleSetIPConfigurationProperties(
                subnet=cm.ApiEntityReference(id=azure_cloud.subnet_id())
            ),
        )
    )
    result = compute.virtual_machine_scale_set_vms.begin_update(rg, "pool", "1", vm).result()
    assert result.properties is not None and result.properties.provisioning_state == "Succeeded"
    assert azure_cloud.ips_of(second.nics[0]) == ["10.224.0.8"]
    assert azure_cloud.errors == []


def test_imds_instance_metadata(azure_cloud: FakeArm, node: Vm, imds: FakeImds) -> None:
    status, body = imds_get(f"{imds.url}/metadata/instance?api-version=2021-02-01", metadata=False)
    assert status == 400 and "metadata header" in body["error"]
    status, body = imds_get(f"{imds.url}/metadata/instance")
    assert status == 400 and "api-version" in body["error"]

    status, body = imds_get(f"{imds.url}/metadata/instance?api-version=2021-02-01")
    assert status == 200
    compute = body["compute"]
    assert compute["subscriptionId"] == azure_cloud.subscription
    assert compute["resourceGroupName"] == "rg-nodes"
    assert (compute["name"], compute["vmScaleSetName"], compute["resourceId"]) == ("node-1", "", node.id)
    assert compute["vmSize"] == "Standard_D4s_v3" and compute["vmId"] == node.vm_id
    [interface] = body["network"]["interface"]
    assert interface["macAddress"] == azure_cloud.nic("node-1-nic0")["properties"]["macAddress"].replace(
        "-", ""
    )
    assert len(interface["macAddress"]) == 12 and interface["macAddress"].isupper()
    assert interface["ipv4"]["ipAddress"] == [{"privateIpAddress": "10.224.0.4", "publicIpAddress": ""}]
    assert interface["ipv4"]["subnet"] == [{"address": "10.224.0.0", "prefix": "24"}]

    azure_cloud.external_write(
        "node-1-nic0",
        lambda b: b["properties"]["ipConfigurations"].append(
            {"name": "pod", "properties": {"subnet": {"id": azure_cloud.subnet_id()}}}
        ),
    )
    status, network = imds_get(f"{imds.url}/metadata/instance/network?api-version=2021-02-01")
    assert status == 200
    assert [a["privateIpAddress"] for a in network["interface"][0]["ipv4"]["ipAddress"]] == [
        "10.224.0.4",
        "10.224.0.5",
    ]

    vmss_vm = azure_cloud.add_vmss_instance("pool", 3, nics=2)
    vmss_imds = azure_cloud.imds_for(vmss_vm)
    status, compute = imds_get(f"{vmss_imds.url}/metadata/instance/compute?api-version=2021-02-01")
    assert status == 200
    assert (compute["name"], compute["vmScaleSetName"], compute["resourceId"]) == (
        "pool_3",
        "pool",
        vmss_vm.id,
    )
    assert vmss_vm.id.endswith("/virtualMachineScaleSets/pool/virtualMachines/3")
    status, network = imds_get(f"{vmss_imds.url}/metadata/instance/network?api-version=2021-02-01")
    assert len(network["interface"]) == 2


def test_managed_identity_token(azure_cloud: FakeArm, node: Vm, imds: FakeImds) -> None:
    with ManagedIdentityCredential() as credential:
        token = credential.get_token(ARM_SCOPE)
    assert token.expires_on > time.time() + 3600
    [asked] = imds.token_requests
    assert asked == {"api-version": "2018-02-01", "resource": "https://management.azure.com"}
    status, nic = arm_raw(azure_cloud, "GET", node.nics[0] + "?api-version=2026-03-01", token=token.token)
    assert status == 200 and nic["name"] == "node-1-nic0"

    imds.token_fail(500)
    with ManagedIdentityCredential(client_id="c0ffee") as credential:
        credential.get_token(ARM_SCOPE)  # azure-identity retries IMDS 5xx
    assert [r.get("client_id") for r in imds.token_requests[1:]] == ["c0ffee", "c0ffee"]

    imds.token_fail(400)
    with ManagedIdentityCredential() as credential, pytest.raises(CredentialUnavailableError):
        credential.get_token(ARM_SCOPE)
    status, _ = imds_get(
        f"{imds.url}/metadata/identity/oauth2/token?api-version=2018-02-01&resource=x", metadata=False
    )
    assert status == 400


def test_arm_authentication_and_paths(azure_cloud: FakeArm, node: Vm) -> None:
    nic_path = node.nics[0] + "?api-version=2026-03-01"
    status, body = arm_raw(azure_cloud, "GET", nic_path)
    assert status == 401 and body["error"]["code"] == "AuthenticationFailed"
    status, body = arm_raw(azure_cloud, "GET", nic_path, token="made-up")
    assert status == 401 and body["error"]["code"] == "InvalidAuthenticationToken"
    status, body = arm_raw(azure_cloud, "GET", nic_path, token=azure_cloud.issue_token(ttl=-1))
    assert status == 401 and body["error"]["code"] == "ExpiredAuthenticationToken"
    status, body = arm_raw(
        azure_cloud, "GET", nic_path, token=azure_cloud.issue_token("https://vault.azure.net")
    )
    assert status == 401 and body["error"]["code"] == "InvalidAuthenticationTokenAudience"

    token = azure_cloud.issue_token()
    status, body = arm_raw(azure_cloud, "GET", node.nics[0], token=token)
    assert status == 400 and body["error"]["code"] == "MissingApiVersionParameter"
    status, body = arm_raw(azure_cloud, "GET", nic_path.lower().replace("node-1", "NODE-1"), token=token)
    assert status == 200 and body["id"] == node.nics[0]  # case-insensitive like ARM
    assert azure_cloud.requests[-1][3] == "2026-03-01"

    with (
        NetworkManagementClient(
            StaticCredential("made-up"),
            azure_cloud.subscription,
            base_url=azure_cloud.arm_url,
            connection_verify=azure_cloud.ca_path,
            retry_total=0,
        ) as client,
        pytest.raises(ClientAuthenticationError),
    ):
        client.network_interfaces.get(azure_cloud.resource_group, "node-1-nic0")


def test_fault_injection(azure_cloud: FakeArm, node: Vm, network: NetworkManagementClient) -> None:
    rg = azure_cloud.resource_group
    azure_cloud.fail("GET", "networkInterfaces/node-1-nic0", 503, code="ServiceUnavailable")
    with pytest.raises(HttpResponseError) as err:
        network.network_interfaces.get(rg, "node-1-nic0")
    assert err.value.status_code == 503 and error_code(err.value) == "ServiceUnavailable"
    nic = network.network_interfaces.get(rg, "node-1-nic0")  # times=1: the next one passes

    add_ipconfigs(azure_cloud, nic, ["a"])
    azure_cloud.fail("PUT", "node-1-nic0", 500, apply_first=True)
    with pytest.raises(HttpResponseError) as err:
        network.network_interfaces.begin_create_or_update(rg, "node-1-nic0", nic)
    assert err.value.status_code == 500
    assert azure_cloud.ips_of("node-1-nic0") == ["10.224.0.5"] and azure_cloud.writes == 1  # applied anyway

    nic = network.network_interfaces.get(rg, "node-1-nic0")
    add_ipconfigs(azure_cloud, nic, ["b"])
    azure_cloud.fail("PUT", "node-1-nic0", 0, apply_first=True)
    with pytest.raises(ServiceResponseError):
        network.network_interfaces.begin_create_or_update(rg, "node-1-nic0", nic)
    assert azure_cloud.ips_of("node-1-nic0") == ["10.224.0.5", "10.224.0.6"]

    azure_cloud.fail("*", "node-1-nic0", 0)
    with pytest.raises((ServiceRequestError, ServiceResponseError)):
        network.network_interfaces.get(rg, "node-1-nic0")

    # The SDK's default retry policy (not retry_total=0) retries a 429 by itself, sleeping Retry-After;
    # "Retry-After: 0" counts as absent and falls back to its backoff (0 s, then 1.6 s, 3.2 s, ...).
    azure_cloud.fail("GET", "node-1-nic0", 429, headers={"Retry-After": "0.01"}, times=2)
    with NetworkManagementClient(
        StaticCredential(azure_cloud.issue_token()),
        azure_cloud.subscription,
        base_url=azure_cloud.arm_url,
        connection_verify=azure_cloud.ca_path,
    ) as client:
        assert client.network_interfaces.get(rg, "node-1-nic0").name == "node-1-nic0"
    assert [r[2] for r in azure_cloud.requests[-3:]] == [429, 429, 200]


def test_held_writes_race_on_etag(azure_cloud: FakeArm, node: Vm, network: NetworkManagementClient) -> None:
    rg = azure_cloud.resource_group
    outcomes: dict[str, object] = {}

    def writer(name: str, nic: NetworkInterface) -> None:
        try:
            network.network_interfaces.begin_create_or_update(
                rg, "node-1-nic0", nic, headers={"If-Match": nic.etag}
            ).result()
            outcomes[name] = "ok"
        except HttpResponseError as err:
            outcomes[name] = err.status_code

    nics = {name: network.network_interfaces.get(rg, "node-1-nic0") for name in ("a", "b")}
    for name, nic in nics.items():
        add_ipconfigs(azure_cloud, nic, [f"from-{name}"])
    with azure_cloud.hold_writes():
        threads = [threading.Thread(target=writer, args=item) for item in nics.items()]
        for t in threads:
            t.start()
        azure_cloud.wait_for_held(2)
    for t in threads:
        t.join(5)

    assert sorted(map(str, outcomes.values())) == ["412", "ok"]
    assert len(azure_cloud.ips_of("node-1-nic0")) == 1


def test_delays(azure_cloud: FakeArm, node: Vm, network: NetworkManagementClient) -> None:
    rg = azure_cloud.resource_group
    nic = network.network_interfaces.get(rg, "node-1-nic0")
    azure_cloud.write_delay = 0.2
    start = time.monotonic()
    network.network_interfaces.begin_create_or_update(rg, "node-1-nic0", nic).result()
    assert time.monotonic() - start >= 0.2
    azure_cloud.write_delay = 0.0
    azure_cloud.delay = 0.1
    start = time.monotonic()
    network.network_interfaces.get(rg, "node-1-nic0")
    assert time.monotonic() - start >= 0.1


def test_client_env(azure_cloud: FakeArm, imds: FakeImds) -> None:
    env = azure_cloud.client_env(imds)
    assert env["AZURE_ARM_ENDPOINT"] == azure_cloud.arm_url and azure_cloud.arm_url.startswith(
        "https://127.0.0.1:"
    )
    assert env["AZURE_IMDS_ENDPOINT"] == env["AZURE_POD_IDENTITY_AUTHORITY_HOST"] == imds.url
    assert env["AZURE_ARM_CA_BUNDLE"] == azure_cloud.ca_path
