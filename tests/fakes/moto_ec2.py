"""moto in server mode as the EC2 API, started by a fixture, and a node (instance) inside it.

The SDK under test talks real HTTP to 127.0.0.1; nothing reaches AWS. moto does not enforce ENI/IP
limits, prefix delegation or subnet exhaustion (reference/lab-facts.md): the provider enforces limits
itself and the tests cover what moto cannot.

moto also picks every ENI address at random from the subnet without looking at what is taken, so one
address can end up on two ENIs, or twice on one (30 addresses on a /20: 15 nodes in 100). EC2 never
does that, and the daemon rightly refuses such a report, so ``moto_server()`` replaces moto's picker
with one that never hands out an address twice until the next ``reset()``.
"""

from __future__ import annotations

import ipaddress
import logging
import random
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import boto3
import moto.ec2.models.elastic_network_interfaces as moto_enis
import pytest
from moto.server import ThreadedMotoServer

REGION = "us-east-1"
AZ = "us-east-1a"
CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class MotoEc2:
    endpoint: str
    server: ThreadedMotoServer

    def client(self) -> Any:
        return boto3.client(
            "ec2",
            region_name=REGION,
            endpoint_url=self.endpoint,
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
            aws_session_token="testing",
        )

    def reset(self) -> None:
        import urllib.request

        req = urllib.request.Request(self.endpoint + "/moto-api/reset", method="POST")
        urllib.request.urlopen(req, timeout=10).close()
        with _issued_lock:
            _issued.clear()


_moto_random_private_ip = moto_enis.random_private_ip
_issued: set[tuple[str, str]] = set()  # (subnet CIDR, address) handed out since the last reset
_issued_lock = threading.Lock()


def _unique_private_ip(cidr: str | None = None, ipv6: bool = False) -> str:
    """moto's ENI address picker, without repeats: a random address of the subnet's upper half not
    handed out since the last reset (instances take theirs from the bottom of the subnet, in order)."""
    if ipv6 or not cidr:
        return str(_moto_random_private_ip(cidr, ipv6))
    net = ipaddress.IPv4Network(cidr)
    half = net.num_addresses // 2
    with _issued_lock:
        for _ in range(10 * half):
            ip = str(net.network_address + half + random.randrange(half - 1))  # never the broadcast
            if (cidr, ip) not in _issued:
                _issued.add((cidr, ip))
                return ip
    raise RuntimeError(f"fake EC2: no address left in the upper half of {cidr}")


@dataclass
class Node:
    """One EC2 instance in its own VPC/subnet, as the daemon's node."""

    moto: MotoEc2
    instance_id: str
    instance_type: str
    vpc_id: str
    vpc_cidr: str
    subnet_id: str
    subnet_cidr: str
    security_group_id: str
    primary_eni: str
    primary_ip: str
    mac: str

    def interfaces(self) -> list[dict[str, Any]]:
        ec2 = self.moto.client()
        found = ec2.describe_network_interfaces(
            Filters=[{"Name": "attachment.instance-id", "Values": [self.instance_id]}]
        )["NetworkInterfaces"]
        return sorted(found, key=lambda n: n["Attachment"]["DeviceIndex"])

    def available_enis(self) -> list[dict[str, Any]]:
        ec2 = self.moto.client()
        return list(
            ec2.describe_network_interfaces(Filters=[{"Name": "status", "Values": ["available"]}])[
                "NetworkInterfaces"
            ]
        )


_lock = threading.Lock()
_server: MotoEc2 | None = None


def moto_server() -> MotoEc2:
    """One moto server per test session (its first call costs ~1 s); reset between tests."""
    global _server
    with _lock:
        if _server is None:
            port = free_port()
            logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one line per request otherwise
            moto_enis.random_private_ip = _unique_private_ip
            server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
            server.start()
            _server = MotoEc2(endpoint=f"http://127.0.0.1:{port}", server=server)
            _server.client().describe_regions()
        return _server


def make_node(moto: MotoEc2, instance_type: str = "m5.large", subnet_cidr: str = "10.0.0.0/20") -> Node:
    ec2 = moto.client()
    vpc = ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]
    subnet = ec2.create_subnet(VpcId=vpc["VpcId"], CidrBlock=subnet_cidr, AvailabilityZone=AZ)["Subnet"]
    sg = ec2.create_security_group(GroupName="node", Description="node", VpcId=vpc["VpcId"])["GroupId"]
    reservation = ec2.run_instances(
        ImageId="ami-12c6146b",
        MinCount=1,
        MaxCount=1,
        InstanceType=instance_type,
        SubnetId=subnet["SubnetId"],
        SecurityGroupIds=[sg],
        Placement={"AvailabilityZone": AZ},
    )
    instance = reservation["Instances"][0]
    eni = instance["NetworkInterfaces"][0]
    return Node(
        moto=moto,
        instance_id=instance["InstanceId"],
        instance_type=instance_type,
        vpc_id=vpc["VpcId"],
        vpc_cidr=vpc["CidrBlock"],
        subnet_id=subnet["SubnetId"],
        subnet_cidr=subnet["CidrBlock"],
        security_group_id=sg,
        primary_eni=eni["NetworkInterfaceId"],
        primary_ip=eni["PrivateIpAddress"],
        mac=eni["MacAddress"],
    )


@pytest.fixture
def moto_ec2(monkeypatch: pytest.MonkeyPatch) -> Iterator[MotoEc2]:
    server = moto_server()
    server.reset()
    for key, value in CREDENTIALS.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    yield server


@pytest.fixture
def ec2_node(moto_ec2: MotoEc2) -> Node:
    return make_node(moto_ec2)
