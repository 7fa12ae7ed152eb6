"""parse_instance: the JSON of Azure IMDS /metadata/instance validated into an AzureNode."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from ipamd.cloud.azure.imds import AzureNode, ImdsInterface, parse_instance
from ipamd.errors import PermanentCloudError

SUB = "0f0e0d0c-0000-4000-8000-00000000abcd"
VM_ID = f"/subscriptions/{SUB}/resourceGroups/rg-nodes/providers/Microsoft.Compute/virtualMachines/node-1"
VMSS_ID = (
    f"/subscriptions/{SUB}/resourceGroups/MC_rg_aks_westeurope/providers/Microsoft.Compute/"
    "virtualMachineScaleSets/aks-nodepool1-vmss/virtualMachines/3"
)


def doc(resource_id: str = VM_ID, name: str = "node-1", scale_set: str = "") -> dict[str, Any]:
    return {
        "compute": {
            "subscriptionId": SUB.upper(),
            "resourceGroupName": resource_id.split("/")[4],
            "name": name,
            "vmScaleSetName": scale_set,
            "resourceId": resource_id,
            "vmId": "a1b2",
            "location": "westeurope",
            "vmSize": "Standard_D4s_v3",
        },
        "network": {
            "interface": [
                {
                    "macAddress": "000D3A1B2C3D",
                    "ipv4": {
                        "ipAddress": [
                            {"privateIpAddress": "10.224.0.4", "publicIpAddress": ""},
                            {"privateIpAddress": "10.224.0.5", "publicIpAddress": ""},
                        ],
                        "subnet": [{"address": "10.224.0.0", "prefix": "16"}],
                    },
                }
            ]
        },
    }


def test_a_standalone_vm() -> None:
    node = parse_instance(doc())
    assert node == AzureNode(
        subscription_id=SUB,
        resource_group="rg-nodes",
        name="node-1",
        vm_id="a1b2",
        resource_id=VM_ID,
        location="westeurope",
        vm_size="Standard_D4s_v3",
        scale_set="",
        instance_id="",
        interfaces=(ImdsInterface("00:0d:3a:1b:2c:3d", ("10.224.0.4", "10.224.0.5"), "10.224.0.0/16"),),
    )
    assert not node.uniform_scale_set and node.primary_ip == "10.224.0.4"


def test_a_uniform_scale_set_instance() -> None:
    node = parse_instance(doc(VMSS_ID, "aks-nodepool1-vmss_3", "aks-nodepool1-vmss"))
    assert (node.scale_set, node.instance_id, node.uniform_scale_set) == ("aks-nodepool1-vmss", "3", True)
    assert node.resource_group == "MC_rg_aks_westeurope"


def test_a_flexible_scale_set_member_is_a_vm() -> None:
    node = parse_instance(doc(VM_ID, "node-1", "flex-vmss"))
    assert (node.scale_set, node.instance_id, node.uniform_scale_set) == ("", "", False)


def _set(path: str, value: Any) -> dict[str, Any]:
    d = doc()
    target: Any = d
    keys = path.split(".")
    for k in keys[:-1]:
        target = target[int(k)] if isinstance(target, list) else target[k]
    if value is KeyError:
        del target[keys[-1]]
    else:
        target[keys[-1]] = value
    return d


@pytest.mark.parametrize(
    ("path", "value", "names"),
    [
        ("compute", KeyError, "compute"),
        ("network", KeyError, "network"),
        ("compute.subscriptionId", "not-a-guid", "subscriptionId"),
        ("compute.resourceGroupName", "rg/../x", "resourceGroupName"),
        ("compute.name", "", "name"),
        ("compute.resourceId", "/subscriptions/x", "resourceId"),
        ("compute.resourceId", VM_ID.replace(SUB, "0" * 8 + SUB[8:]), "resourceId"),
        ("compute.resourceId", VM_ID.replace("Microsoft.Compute", "Microsoft.Network"), "resourceId"),
        ("compute.resourceId", VMSS_ID.replace("/3", "/x3"), "instance id"),
        ("compute.vmScaleSetName", "bad name!", "vmScaleSetName"),
        ("network.interface", [], "no NIC"),
        ("network.interface.0.macAddress", "00-0D-3A-1B-2C-3D", "macAddress"),
        ("network.interface.0.ipv4.ipAddress", [], "no IPv4"),
        ("network.interface.0.ipv4.ipAddress.0.privateIpAddress", "10.224.0.400", "not IPv4"),
        ("network.interface.0.ipv4.subnet.0.prefix", "33", "CIDR"),
        ("network.interface.0.ipv4.subnet.0.address", "10.224.0.4", "CIDR"),
    ],
)
def test_bad_metadata_names_the_field(path: str, value: Any, names: str) -> None:
    d = _set(path, value)
    if path == "compute.resourceId" and "x3" in str(value):
        d["compute"]["resourceGroupName"] = "MC_rg_aks_westeurope"
    with pytest.raises(PermanentCloudError) as err:
        parse_instance(d)
    assert names in str(err.value)


@pytest.mark.parametrize("value", [None, [], "text", 3])
def test_not_an_object(value: Any) -> None:
    with pytest.raises(PermanentCloudError):
        parse_instance(value)


def test_parsing_does_not_change_the_input() -> None:
    d = doc()
    before = copy.deepcopy(d)
    parse_instance(d)
    assert d == before
