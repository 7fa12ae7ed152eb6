"""ipamd.adoption: when a start adopts aws-vpc-cni's checkpoint, the read, and the rename after it.
The daemon's use of it runs in tests/integration/test_adoption_daemon.py."""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path

import pytest

from ipamd import adoption
from ipamd.config import Settings
from ipamd.migrate.awsvpc import AwsCheckpointError
from ipamd.pool.model import InterfaceId, InterfaceView
from tests.fakes.awsvpc import checkpoint_json, row

BASE = Settings(cloud_provider="aws", datapath="linux", aws_vpc_cni_checkpoint="/run/aws-node/ipam.json")
VIEW = InterfaceView(
    id=InterfaceId("eni-0"),
    device_index=0,
    primary=True,
    subnet_id="subnet-1",
    subnet_cidr="10.0.0.0/16",
    primary_ip="10.0.0.10",
    ips=("10.0.0.11", "10.0.0.12", "10.0.0.13"),
    prefixes=(),
    mac="02:00:00:00:00:00",
)


def aws_checkpoint(*rows: tuple[str, str, str, str]) -> bytes:
    """aws-vpc-cni's ipam.json with one row per (container, ip, namespace, pod)."""
    return checkpoint_json(
        *(row(ip, c, namespace=ns, name=pod, count=None) for c, ip, ns, pod in rows)
    ).encode()


@pytest.mark.parametrize(
    ("source", "changes", "adopts"),
    [
        pytest.param("none", {}, True, id="aws-linux-no-checkpoint-of-ours"),
        pytest.param("none", {"datapath": "none"}, True, id="datapath-none"),
        pytest.param("none", {"cloud_provider": "sim"}, True, id="sim-cloud"),
        pytest.param("current", {}, False, id="our-checkpoint-exists"),
        pytest.param("previous", {}, False, id="our-previous-generation"),
        pytest.param("lost", {}, False, id="our-checkpoint-quarantined"),
        pytest.param("none", {"aws_vpc_cni_checkpoint": None}, False, id="off"),
        pytest.param("none", {"cloud_provider": "azure"}, False, id="azure"),
        pytest.param("none", {"datapath": "windows"}, False, id="windows"),
    ],
)
def test_a_start_adopts_only_with_no_state_of_its_own_on_aws(
    source: str, changes: dict[str, object], adopts: bool
) -> None:
    s = dataclasses.replace(BASE, **changes)  # type: ignore[arg-type]
    expected = Path("/run/aws-node/ipam.json") if adopts else None
    assert adoption.path_to_adopt(s, source) == expected


def test_the_settings_default_to_aws_nodes_path_and_our_conflist() -> None:
    s = Settings.from_env({"CLOUD_PROVIDER": "aws"})
    assert s.aws_vpc_cni_checkpoint == "/var/run/aws-node/ipam.json"
    assert (s.cni_network_name, s.aws_vpc_cni_veth_prefix) == ("cloud-cni", "eni")
    assert (
        Settings.from_env({"CLOUD_PROVIDER": "aws", "AWS_VPC_CNI_CHECKPOINT": "OFF"}).aws_vpc_cni_checkpoint
        is None
    )
    assert adoption.path_to_adopt(s, "none") == Path("/var/run/aws-node/ipam.json")


def test_no_file_is_a_fresh_node(tmp_path: Path) -> None:
    found = asyncio.run(
        adoption.take_over(tmp_path / "ipam.json", [VIEW], network="cloud-cni", cool_until=50.0, wired=False)
    )
    assert found is None


def test_an_unusable_file_stops_the_start_naming_it(tmp_path: Path) -> None:
    path = tmp_path / "ipam.json"
    path.write_text('{"version": "vpc-cni-ipam/2", "allocations": []}')
    with pytest.raises(AwsCheckpointError, match=rf"^{path}: version: "):
        asyncio.run(adoption.take_over(path, [VIEW], network="cloud-cni", cool_until=50.0, wired=False))
    assert path.exists(), "an unadopted file is left where it is"


def test_the_rows_are_keyed_by_our_network_and_the_file_set_aside(tmp_path: Path) -> None:
    path = tmp_path / "ipam.json"
    path.write_bytes(
        aws_checkpoint(("c1", "10.0.0.11", "default", "web"), ("c2", "10.9.9.9", "kube-system", "dns"))
    )
    found = asyncio.run(
        adoption.take_over(path, [VIEW], network="k8s-pod-network", cool_until=50.0, wired=False)
    )
    assert found is not None
    snapshot = found.adoption.snapshot
    assert {(a.key.network, a.key.container_id, a.ip) for a in snapshot.assignments} == {
        ("k8s-pod-network", "c1", "10.0.0.11"),
        ("k8s-pod-network", "c2", "10.9.9.9"),
    }
    assert dict(snapshot.cooling) == {"10.0.0.12": 50.0, "10.0.0.13": 50.0}
    view = found.public()
    assert (view["adopted"], view["pods"], view["held"], view["orphaned"], view["gone"]) == (True, 2, 1, 1, 0)
    assert view["renamed_to"] is None and len(view["notes"]) == 1

    renamed = asyncio.run(adoption.set_aside(found))
    assert not path.exists()
    assert renamed.renamed_to == tmp_path / "ipam.json.adopted-by-cloud-cni"
    assert renamed.renamed_to.read_bytes().startswith(b'{"version": "vpc-cni-ipam/1"')
    assert renamed.public()["renamed_to"] == str(renamed.renamed_to)


def test_with_a_wired_datapath_a_pod_whose_veth_is_gone_is_left_out(tmp_path: Path) -> None:
    """The links of this netns are listed: no veth named after a pod "gone" exists on the test host."""
    path = tmp_path / "ipam.json"
    path.write_bytes(aws_checkpoint(("c1", "10.0.0.11", "default", "gone-pod-zz9")))
    found = asyncio.run(adoption.take_over(path, [VIEW], network="cloud-cni", cool_until=50.0, wired=True))
    assert found is not None
    assert (len(found.adoption.pods), len(found.adoption.gone)) == (0, 1)
    assert found.adoption.snapshot.assignments == ()
