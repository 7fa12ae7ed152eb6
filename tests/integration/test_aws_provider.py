"""AwsProvider through the real boto3 client: against the moto server, and against botocore's Stubber
for what moto does not emulate (prefix delegation, subnet exhaustion, EC2's own refusals).

Faults are injected at the client's event system (a ``before-send`` handler answering an EC2 error
document, an ``after-call`` handler rewriting a Describe answer): the SDK parses them as it would
parse EC2. Every endpoint is the local moto server or a loopback address the Stubber never contacts.
"""

from __future__ import annotations

import ipaddress
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from botocore.awsrequest import AWSResponse
from botocore.stub import ANY, Stubber

from ipamd.cloud.aws import limits as aws_limits
from ipamd.cloud.aws.client import make_ec2_client
from ipamd.cloud.aws.metadata import ImdsInterface, NodeMetadata
from ipamd.cloud.aws.provider import (
    TAG_CLUSTER,
    TAG_CREATED_AT,
    TAG_INSTANCE_ID,
    TAG_MANAGED,
    TAG_NO_MANAGE,
    AwsProvider,
)
from ipamd.cloud.base import Placement
from ipamd.errors import (
    CloudPermissionError,
    InterfaceNotFound,
    LimitExceeded,
    NoPlacement,
    PermanentCloudError,
    SubnetFull,
    TemporaryCloudError,
    ThrottledError,
)
from ipamd.pool.model import InstanceLimits, InterfaceId
from tests.fakes.moto_ec2 import AZ, REGION, MotoEc2, Node

pytestmark = pytest.mark.integration

CLUSTER = "test-cluster"


class FakeClock:
    """Wall-clock time that moves only when the provider sleeps."""

    def __init__(self) -> None:
        self.now = time.time()
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        assert seconds >= 0
        self.sleeps.append(seconds)
        self.now += seconds


def node_metadata(node: Node) -> NodeMetadata:
    primary = ImdsInterface(
        mac=node.mac,
        interface_id=node.primary_eni,
        device_number=0,
        network_card=0,
        subnet_id=node.subnet_id,
        subnet_cidr=node.subnet_cidr,
        vpc_id=node.vpc_id,
        vpc_cidrs=(node.vpc_cidr,),
        security_group_ids=(node.security_group_id,),
        local_ipv4s=(node.primary_ip,),
        ipv4_prefixes=(),
    )
    return NodeMetadata(
        instance_id=node.instance_id,
        instance_type=node.instance_type,
        availability_zone="us-east-1a",
        region=REGION,
        primary_ip=node.primary_ip,
        primary_mac=node.mac,
        interfaces=(primary,),
    )


@pytest.fixture(autouse=True)
def _fresh_limits_cache() -> Iterator[None]:
    aws_limits.clear_cache()
    yield
    aws_limits.clear_cache()


@pytest.fixture
def ec2(moto_ec2: MotoEc2) -> Any:
    return make_ec2_client(REGION, endpoint_url=moto_ec2.endpoint)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def make_provider(ec2: Any, ec2_node: Node, clock: FakeClock) -> Callable[..., AwsProvider]:
    def make(**overrides: Any) -> AwsProvider:
        kwargs: dict[str, Any] = {
            "cluster_name": CLUSTER,
            "extra_tags": {"team": "net"},
            "clock": clock,
            "sleep": clock.sleep,
        }
        kwargs.update(overrides)
        return AwsProvider(ec2, node_metadata(ec2_node), **kwargs)

    return make


@pytest.fixture
def provider(make_provider: Callable[..., AwsProvider]) -> AwsProvider:
    return make_provider()


# --- helpers ------------------------------------------------------------------------------------


class _Body:
    def __init__(self, data: bytes) -> None:
        self._data = data

    def stream(self, **_: Any) -> Iterator[bytes]:
        yield self._data


def answer_error(
    ec2: Any, operation: str, code: str, status: int, headers: dict[str, str] | None = None
) -> list[str]:
    """Make every ``operation`` call get an EC2 error document instead of reaching moto.

    Returns a list that grows by one entry per intercepted request (so retries would show)."""
    seen: list[str] = []
    body = (
        '<?xml version="1.0" encoding="UTF-8"?>\n<Response><Errors><Error>'
        f"<Code>{code}</Code><Message>injected {code}</Message>"
        "</Error></Errors><RequestID>injected</RequestID></Response>"
    ).encode()

    def handler(request: Any, **_: Any) -> AWSResponse:
        seen.append(request.url)
        return AWSResponse(request.url, status, {"Content-Type": "text/xml", **(headers or {})}, _Body(body))

    ec2.meta.events.register(f"before-send.ec2.{operation}", handler)
    return seen


def record_params(ec2: Any, operation: str) -> list[dict[str, Any]]:
    calls: list[dict[str, Any]] = []

    def handler(params: dict[str, Any], **_: Any) -> None:
        calls.append(dict(params))

    ec2.meta.events.register(f"provide-client-params.ec2.{operation}", handler)
    return calls


def all_enis(moto: MotoEc2) -> dict[str, dict[str, Any]]:
    found = moto.client().describe_network_interfaces()["NetworkInterfaces"]
    return {eni["NetworkInterfaceId"]: eni for eni in found}


def tags_of(eni: dict[str, Any]) -> dict[str, str]:
    return {t["Key"]: t["Value"] for t in eni.get("TagSet", [])}


def iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# --- against moto -------------------------------------------------------------------------------


def test_fresh_node_lists_its_primary_interface_only(provider: AwsProvider, ec2_node: Node) -> None:
    (view,) = provider.list_interfaces()
    assert view.id == ec2_node.primary_eni
    assert view.primary and view.device_index == 0
    assert view.primary_ip == ec2_node.primary_ip
    assert view.mac == ec2_node.mac
    assert (view.subnet_id, view.subnet_cidr) == (ec2_node.subnet_id, ec2_node.subnet_cidr)
    assert view.ips == () and view.prefixes == ()


def test_instance_limits_from_describe_instance_types(provider: AwsProvider) -> None:
    assert provider.instance_limits() == InstanceLimits("m5.large", 3, 10, True)


def test_attach_tags_describes_and_takes_the_next_device_index(
    provider: AwsProvider, ec2: Any, ec2_node: Node, moto_ec2: MotoEc2, clock: FakeClock
) -> None:
    modified = record_params(ec2, "ModifyNetworkInterfaceAttribute")
    first = provider.attach_interface(ip_count=3, prefix_count=0)
    second = provider.attach_interface(ip_count=1, prefix_count=0)

    assert (first.device_index, second.device_index) == (1, 2)
    assert not first.primary and len(first.ips) == 3 and first.primary_ip not in first.ips
    assert len(second.ips) == 1
    assert first.subnet_id == ec2_node.subnet_id and first.subnet_cidr == ec2_node.subnet_cidr

    enis = all_enis(moto_ec2)
    for view in (first, second):
        eni = enis[view.id]
        assert eni["Description"] == f"cloud-cni: {ec2_node.instance_id}"
        assert [g["GroupId"] for g in eni["Groups"]] == [ec2_node.security_group_id]
        tags = tags_of(eni)
        assert tags[TAG_INSTANCE_ID] == ec2_node.instance_id
        assert tags[TAG_CLUSTER] == CLUSTER
        assert tags[TAG_MANAGED] == "true"
        assert tags["team"] == "net"
        assert tags[TAG_CREATED_AT] == iso(clock.now)
        assert eni["Attachment"]["InstanceId"] == ec2_node.instance_id
        assert sorted(a["PrivateIpAddress"] for a in eni["PrivateIpAddresses"] if not a["Primary"]) == sorted(
            view.ips
        )
    # moto ignores DeleteOnTermination: check that it was asked for, for each attachment.
    assert [m["Attachment"]["DeleteOnTermination"] for m in modified] == [True, True]
    attachment_ids = {enis[v.id]["Attachment"]["AttachmentId"] for v in (first, second)}
    assert {m["Attachment"]["AttachmentId"] for m in modified} == attachment_ids

    listed = provider.list_interfaces()
    assert [v.device_index for v in listed] == [0, 1, 2]
    assert listed[1] == first and listed[2] == second


def test_assign_returns_only_the_new_ips_and_release_removes_them(
    provider: AwsProvider, moto_ec2: MotoEc2
) -> None:
    view = provider.attach_interface(ip_count=2, prefix_count=0)
    new = provider.assign_ips(view.id, 3)
    assert len(new) == 3 and not set(new) & set(view.ips) and view.primary_ip not in new

    def held() -> set[str]:
        eni = all_enis(moto_ec2)[view.id]
        return {a["PrivateIpAddress"] for a in eni["PrivateIpAddresses"] if not a["Primary"]}

    assert held() == set(view.ips) | set(new)
    provider.release_ips(view.id, [new[0], view.ips[0]])
    assert held() == set(view.ips[1:]) | set(new[1:])
    provider.release_ips(view.id, [new[0]])  # already gone: fine
    provider.release_ips(view.id, [])
    assert provider.assign_ips(view.id, 0) == []
    (listed,) = [v for v in provider.list_interfaces() if v.id == view.id]
    assert set(listed.ips) == held()


def test_release_of_the_primary_address_is_refused(provider: AwsProvider) -> None:
    view = provider.attach_interface(ip_count=1, prefix_count=0)
    with pytest.raises(PermanentCloudError, match="primary address"):
        provider.release_ips(view.id, [view.primary_ip])


def test_fourth_eni_on_m5_large_is_refused_before_any_create(provider: AwsProvider, ec2: Any) -> None:
    provider.attach_interface(ip_count=1, prefix_count=0)
    provider.attach_interface(ip_count=1, prefix_count=0)
    creates = record_params(ec2, "CreateNetworkInterface")
    with pytest.raises(LimitExceeded, match="AttachmentLimitExceeded"):
        provider.attach_interface(ip_count=1, prefix_count=0)
    assert creates == []
    assert len(provider.list_interfaces()) == 3


def test_ip_slots_per_eni_are_enforced(provider: AwsProvider, ec2: Any, moto_ec2: MotoEc2) -> None:
    creates = record_params(ec2, "CreateNetworkInterface")
    with pytest.raises(LimitExceeded):
        provider.attach_interface(ip_count=10, prefix_count=0)  # m5.large: 9 secondary slots
    assert creates == []
    view = provider.attach_interface(ip_count=5, prefix_count=0)
    assert len(provider.assign_ips(view.id, 4)) == 4
    assigns = record_params(ec2, "AssignPrivateIpAddresses")
    with pytest.raises(LimitExceeded, match="PrivateIpAddressLimitExceeded"):
        provider.assign_ips(view.id, 1)  # the 10th
    assert assigns == []
    eni = all_enis(moto_ec2)[view.id]
    assert len(eni["PrivateIpAddresses"]) == 10  # primary + 9


def test_detach_deletes_the_eni(provider: AwsProvider, ec2_node: Node, moto_ec2: MotoEc2) -> None:
    view = provider.attach_interface(ip_count=2, prefix_count=0)
    provider.detach_interface(view.id)
    assert view.id not in all_enis(moto_ec2)
    assert ec2_node.available_enis() == []
    assert [v.id for v in provider.list_interfaces()] == [ec2_node.primary_eni]
    provider.detach_interface(view.id)  # already gone: fine


def test_primary_interface_is_never_detached(provider: AwsProvider, ec2_node: Node) -> None:
    with pytest.raises(PermanentCloudError, match="primary"):
        provider.detach_interface(InterfaceId(ec2_node.primary_eni))
    assert [e["NetworkInterfaceId"] for e in ec2_node.interfaces()] == [ec2_node.primary_eni]


@pytest.mark.parametrize(
    "operation", ["AttachNetworkInterface", "ModifyNetworkInterfaceAttribute"], ids=["attach", "modify"]
)
def test_failure_after_create_deletes_the_eni(
    provider: AwsProvider, ec2: Any, ec2_node: Node, moto_ec2: MotoEc2, operation: str
) -> None:
    answer_error(ec2, operation, "InternalError", 500)
    with pytest.raises(TemporaryCloudError):
        provider.attach_interface(ip_count=2, prefix_count=0)
    assert list(all_enis(moto_ec2)) == [ec2_node.primary_eni]


def test_attach_that_never_completes_times_out_and_deletes_the_eni(
    make_provider: Callable[..., AwsProvider], ec2: Any, ec2_node: Node, moto_ec2: MotoEc2, clock: FakeClock
) -> None:
    def attaching_forever(parsed: dict[str, Any], **_: Any) -> None:
        for eni in parsed.get("NetworkInterfaces", []):
            attachment = eni.get("Attachment")
            if attachment and attachment.get("DeviceIndex") != 0:
                attachment["Status"] = "attaching"

    ec2.meta.events.register("after-call.ec2.DescribeNetworkInterfaces", attaching_forever)
    provider = make_provider(attach_timeout=5.0)
    started = clock.now
    with pytest.raises(TemporaryCloudError, match="not attached after 5 s"):
        provider.attach_interface(ip_count=1, prefix_count=0)
    assert clock.now - started == pytest.approx(5.0)
    assert clock.sleeps[:3] == [0.2, 0.4, 0.8]  # backoff between looks
    assert list(all_enis(moto_ec2)) == [ec2_node.primary_eni]


def test_prefixes_the_endpoint_does_not_delegate_are_an_error(
    provider: AwsProvider, ec2_node: Node, moto_ec2: MotoEc2
) -> None:
    # moto ignores Ipv4PrefixCount: the provider must say so, and leave nothing behind.
    with pytest.raises(PermanentCloudError, match="did not delegate a prefix"):
        provider.attach_interface(ip_count=0, prefix_count=1)
    assert list(all_enis(moto_ec2)) == [ec2_node.primary_eni]
    view = provider.attach_interface(ip_count=1, prefix_count=0)
    with pytest.raises(PermanentCloudError, match="did not delegate a prefix"):
        provider.assign_prefixes(view.id, 1)


def test_prefixes_need_prefix_delegation(make_provider: Callable[..., AwsProvider], ec2: Any) -> None:
    provider = make_provider(limits=InstanceLimits("t2.medium", 3, 6, prefix_delegation=False))
    creates = record_params(ec2, "CreateNetworkInterface")
    with pytest.raises(LimitExceeded, match="prefix delegation"):
        provider.attach_interface(ip_count=0, prefix_count=1)
    view = provider.attach_interface(ip_count=1, prefix_count=0)
    with pytest.raises(LimitExceeded, match="prefix delegation"):
        provider.assign_prefixes(view.id, 1)
    assert len(creates) == 1


def test_no_manage_enis_are_left_alone(provider: AwsProvider, ec2_node: Node, moto_ec2: MotoEc2) -> None:
    raw = moto_ec2.client()
    eni = raw.create_network_interface(
        SubnetId=ec2_node.subnet_id,
        TagSpecifications=[
            {"ResourceType": "network-interface", "Tags": [{"Key": TAG_NO_MANAGE, "Value": "true"}]}
        ],
    )["NetworkInterface"]["NetworkInterfaceId"]
    raw.attach_network_interface(NetworkInterfaceId=eni, InstanceId=ec2_node.instance_id, DeviceIndex=1)

    assert [v.id for v in provider.list_interfaces()] == [ec2_node.primary_eni]
    with pytest.raises(PermanentCloudError, match="no_manage"):
        provider.detach_interface(InterfaceId(eni))
    with pytest.raises(PermanentCloudError, match="no_manage"):
        provider.assign_ips(InterfaceId(eni), 1)
    assert all_enis(moto_ec2)[eni]["Attachment"]["InstanceId"] == ec2_node.instance_id
    # It still takes a device index and a slot of the instance's three.
    assert provider.attach_interface(ip_count=1, prefix_count=0).device_index == 2
    with pytest.raises(LimitExceeded):
        provider.attach_interface(ip_count=1, prefix_count=0)


def test_leaked_interfaces_are_found_and_deleted(
    provider: AwsProvider, ec2_node: Node, moto_ec2: MotoEc2, clock: FakeClock
) -> None:
    raw = moto_ec2.client()
    hour_ago = iso(clock.now - 3600)

    def eni(description: str, **tags: str) -> str:
        return str(
            raw.create_network_interface(
                SubnetId=ec2_node.subnet_id,
                Description=description,
                TagSpecifications=[
                    {
                        "ResourceType": "network-interface",
                        "Tags": [{"Key": k.replace("__", "/"), "Value": v} for k, v in tags.items()],
                    }
                ],
            )["NetworkInterface"]["NetworkInterfaceId"]
        )

    def ours(created_at: str, **more: str) -> dict[str, str]:
        return {
            TAG_MANAGED: "true",
            TAG_CLUSTER: CLUSTER,
            TAG_INSTANCE_ID: "i-gone",
            TAG_CREATED_AT: created_at,
            **more,
        }

    old = eni("cloud-cni: i-gone", **ours(hour_ago))
    fresh = eni("cloud-cni: i-gone", **ours(iso(clock.now - 10)))
    untagged = eni("cloud-cni: i-gone")
    unmanaged = eni("cloud-cni: i-gone", **ours(hour_ago, **{TAG_NO_MANAGE: "true"}))
    other_cluster = eni("cloud-cni: i-gone", **ours(hour_ago, **{TAG_CLUSTER: "other"}))
    foreign = eni("someone else", **ours(hour_ago))
    attached = provider.attach_interface(ip_count=1, prefix_count=0)

    assert provider.leaked_interfaces(older_than=300) == [old]
    assert sorted(provider.leaked_interfaces(older_than=5)) == sorted([old, fresh])
    # delete_leaked checks again: an attached ENI or the primary is never deleted.
    assert provider.delete_leaked([old, attached.id, ec2_node.primary_eni, "eni-0123456789abcdef0"]) == 1
    left = all_enis(moto_ec2)
    assert old not in left
    kept = {fresh, untagged, unmanaged, other_cluster, foreign, attached.id, ec2_node.primary_eni}
    assert kept <= set(left)
    assert provider.delete_leaked([]) == 0


def test_missing_permission_names_the_action(
    provider: AwsProvider, ec2: Any, ec2_node: Node, moto_ec2: MotoEc2
) -> None:
    answer_error(ec2, "CreateNetworkInterface", "UnauthorizedOperation", 403)
    with pytest.raises(CloudPermissionError) as caught:
        provider.attach_interface(ip_count=1, prefix_count=0)
    assert caught.value.action == "ec2:CreateNetworkInterface"
    assert list(all_enis(moto_ec2)) == [ec2_node.primary_eni]


def test_throttling_is_raised_once_with_its_retry_after(provider: AwsProvider, ec2: Any) -> None:
    seen = answer_error(ec2, "DescribeNetworkInterfaces", "RequestLimitExceeded", 503, {"Retry-After": "3"})
    with pytest.raises(ThrottledError) as caught:
        provider.list_interfaces()
    assert caught.value.retry_after == 3.0
    assert len(seen) == 1  # botocore did not retry: CloudCaller owns retries


def test_unknown_interface(provider: AwsProvider) -> None:
    with pytest.raises(InterfaceNotFound):
        provider.assign_ips(InterfaceId("eni-0123456789abcdef0"), 1)
    provider.release_ips(InterfaceId("eni-0123456789abcdef0"), ["10.0.0.9"])
    provider.release_prefixes(InterfaceId("eni-0123456789abcdef0"), ["10.0.0.16/28"])


# --- against botocore's Stubber: what moto cannot do ---------------------------------------------

INSTANCE = "i-0123456789abcdef0"
PRIMARY_ENI = "eni-00000000000000000"
ENI = "eni-11111111111111111"
SUBNET = "subnet-0123456789abcdef0"


def stub_node() -> NodeMetadata:
    primary = ImdsInterface(
        mac="02:00:00:00:00:01",
        interface_id=PRIMARY_ENI,
        device_number=0,
        network_card=0,
        subnet_id=SUBNET,
        subnet_cidr="10.1.0.0/20",
        vpc_id="vpc-1",
        vpc_cidrs=("10.1.0.0/16",),
        security_group_ids=("sg-1",),
        local_ipv4s=("10.1.0.10",),
        ipv4_prefixes=(),
    )
    return NodeMetadata(INSTANCE, "m5.large", "us-east-1a", REGION, "10.1.0.10", primary.mac, (primary,))


def eni_doc(
    eni_id: str = ENI,
    device_index: int = 1,
    ips: tuple[str, ...] = (),
    prefixes: tuple[str, ...] = (),
    status: str = "attached",
) -> dict[str, Any]:
    primary_ip = "10.1.0.20"
    return {
        "NetworkInterfaceId": eni_id,
        "SubnetId": SUBNET,
        "MacAddress": "02:00:00:00:00:02",
        "PrivateIpAddress": primary_ip,
        "PrivateIpAddresses": [{"PrivateIpAddress": primary_ip, "Primary": True}]
        + [{"PrivateIpAddress": ip, "Primary": False} for ip in ips],
        "Ipv4Prefixes": [{"Ipv4Prefix": p} for p in prefixes],
        "Status": "in-use",
        "TagSet": [],
        "Attachment": {
            "AttachmentId": "eni-attach-1",
            "InstanceId": INSTANCE,
            "DeviceIndex": device_index,
            "NetworkCardIndex": 0,
            "Status": status,
        },
    }


@pytest.fixture
def stubbed(monkeypatch: pytest.MonkeyPatch, clock: FakeClock) -> Iterator[tuple[AwsProvider, Stubber]]:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    ec2 = make_ec2_client(REGION, endpoint_url="http://127.0.0.1:9")
    provider = AwsProvider(
        ec2,
        stub_node(),
        limits=InstanceLimits("m5.large", 3, 10, prefix_delegation=True),
        clock=clock,
        sleep=clock.sleep,
    )
    with Stubber(ec2) as stub:
        yield provider, stub
        stub.assert_no_pending_responses()


def expect_eni(stub: Stubber, doc: dict[str, Any]) -> None:
    stub.add_response(
        "describe_network_interfaces",
        {"NetworkInterfaces": [doc]},
        {"NetworkInterfaceIds": [doc["NetworkInterfaceId"]]},
    )


def test_assign_prefixes_returns_the_delegated_ones(stubbed: tuple[AwsProvider, Stubber]) -> None:
    provider, stub = stubbed
    expect_eni(stub, eni_doc(ips=("10.1.0.21",), prefixes=("10.1.2.0/28",)))
    stub.add_response(
        "assign_private_ip_addresses",
        {"NetworkInterfaceId": ENI, "AssignedIpv4Prefixes": [{"Ipv4Prefix": "10.1.3.0/28"}]},
        {"NetworkInterfaceId": ENI, "Ipv4PrefixCount": 1},
    )
    assert provider.assign_prefixes(InterfaceId(ENI), 1) == ["10.1.3.0/28"]


def test_assign_prefixes_respects_the_slots(stubbed: tuple[AwsProvider, Stubber]) -> None:
    provider, stub = stubbed
    expect_eni(stub, eni_doc(ips=tuple(f"10.1.0.{30 + i}" for i in range(7)), prefixes=("10.1.2.0/28",)))
    with pytest.raises(LimitExceeded):
        provider.assign_prefixes(InterfaceId(ENI), 2)  # 8 used of 9


def test_list_keeps_prefix_addresses_out_of_ips(stubbed: tuple[AwsProvider, Stubber]) -> None:
    provider, stub = stubbed
    primary = eni_doc(PRIMARY_ENI, device_index=0)
    secondary = eni_doc(ips=("10.1.0.21", "10.1.3.5"), prefixes=("10.1.3.0/28",))
    stub.add_response(
        "describe_network_interfaces",
        {"NetworkInterfaces": [secondary, primary]},
        {"Filters": [{"Name": "attachment.instance-id", "Values": [INSTANCE]}]},
    )
    first, second = provider.list_interfaces()
    assert first.id == PRIMARY_ENI and first.primary
    assert second.ips == ("10.1.0.21",) and second.prefixes == ("10.1.3.0/28",)
    assert second.subnet_cidr == "10.1.0.0/20"  # from IMDS: no DescribeSubnets


def test_attach_with_a_prefix(stubbed: tuple[AwsProvider, Stubber]) -> None:
    provider, stub = stubbed
    stub.add_response(
        "describe_network_interfaces",
        {"NetworkInterfaces": [eni_doc(PRIMARY_ENI, device_index=0)]},
        {"Filters": [{"Name": "attachment.instance-id", "Values": [INSTANCE]}]},
    )
    created = eni_doc(prefixes=("10.1.4.0/28",))
    del created["Attachment"]
    stub.add_response(
        "create_network_interface",
        {"NetworkInterface": created},
        {
            "SubnetId": SUBNET,
            "Groups": ["sg-1"],
            "Description": f"cloud-cni: {INSTANCE}",
            "TagSpecifications": ANY,
            "Ipv4PrefixCount": 1,
        },
    )
    stub.add_response(
        "attach_network_interface",
        {"AttachmentId": "eni-attach-1"},
        {"NetworkInterfaceId": ENI, "InstanceId": INSTANCE, "DeviceIndex": 1},
    )
    stub.add_response(
        "modify_network_interface_attribute",
        {},
        {
            "NetworkInterfaceId": ENI,
            "Attachment": {"AttachmentId": "eni-attach-1", "DeleteOnTermination": True},
        },
    )
    expect_eni(stub, eni_doc(prefixes=("10.1.4.0/28",)))
    view = provider.attach_interface(ip_count=0, prefix_count=1)
    assert view.prefixes == ("10.1.4.0/28",) and view.ips == () and view.device_index == 1


def test_subnet_exhaustion_is_subnet_full_and_nothing_is_left(stubbed: tuple[AwsProvider, Stubber]) -> None:
    provider, stub = stubbed
    stub.add_response(
        "describe_network_interfaces",
        {"NetworkInterfaces": [eni_doc(PRIMARY_ENI, device_index=0)]},
    )
    stub.add_client_error(
        "create_network_interface",
        service_error_code="InsufficientFreeAddressesInSubnet",
        http_status_code=400,
    )
    with pytest.raises(SubnetFull):
        provider.attach_interface(ip_count=3, prefix_count=0)
    # assign on an existing ENI: the same error, the same class
    expect_eni(stub, eni_doc())
    stub.add_client_error(
        "assign_private_ip_addresses", service_error_code="InsufficientCidrBlocks", http_status_code=400
    )
    with pytest.raises(SubnetFull):
        provider.assign_prefixes(InterfaceId(ENI), 1)


def test_release_of_addresses_already_gone_is_done(stubbed: tuple[AwsProvider, Stubber]) -> None:
    provider, stub = stubbed
    stub.add_client_error(
        "unassign_private_ip_addresses", service_error_code="InvalidParameterValue", http_status_code=400
    )
    expect_eni(stub, eni_doc(ips=("10.1.0.99",)))
    provider.release_ips(InterfaceId(ENI), ["10.1.0.21", "10.1.0.22"])


def test_release_of_partly_gone_addresses_releases_the_rest(stubbed: tuple[AwsProvider, Stubber]) -> None:
    provider, stub = stubbed
    stub.add_client_error(
        "unassign_private_ip_addresses", service_error_code="InvalidParameterValue", http_status_code=400
    )
    expect_eni(stub, eni_doc(prefixes=("10.1.3.0/28",)))
    stub.add_response(
        "unassign_private_ip_addresses",
        {},
        {"NetworkInterfaceId": ENI, "Ipv4Prefixes": ["10.1.3.0/28"]},
    )
    provider.release_prefixes(InterfaceId(ENI), ["10.1.2.0/28", "10.1.3.0/28"])


def test_release_refused_for_another_reason_is_raised(stubbed: tuple[AwsProvider, Stubber]) -> None:
    provider, stub = stubbed
    stub.add_client_error(
        "unassign_private_ip_addresses", service_error_code="InvalidParameterValue", http_status_code=400
    )
    expect_eni(stub, eni_doc(ips=("10.1.0.21",)))
    with pytest.raises(PermanentCloudError, match="InvalidParameterValue"):
        provider.release_ips(InterfaceId(ENI), ["10.1.0.21"])


def test_lost_attach_response_is_detached_and_the_delete_retried(
    stubbed: tuple[AwsProvider, Stubber], clock: FakeClock
) -> None:
    provider, stub = stubbed
    stub.add_response("describe_network_interfaces", {"NetworkInterfaces": [eni_doc(PRIMARY_ENI, 0)]})
    created = eni_doc(ips=("10.1.0.21",))
    del created["Attachment"]
    stub.add_response("create_network_interface", {"NetworkInterface": created})
    stub.add_client_error(
        "attach_network_interface", service_error_code="InternalError", http_status_code=500
    )
    # ... yet EC2 did attach it: the clean-up trusts Describe, detaches, and waits out InUse.
    expect_eni(stub, eni_doc(ips=("10.1.0.21",), status="attaching"))
    stub.add_response("detach_network_interface", {}, {"AttachmentId": "eni-attach-1", "Force": False})
    stub.add_client_error(
        "delete_network_interface", service_error_code="InvalidNetworkInterface.InUse", http_status_code=400
    )
    stub.add_response("delete_network_interface", {}, {"NetworkInterfaceId": ENI})
    with pytest.raises(TemporaryCloudError, match="InternalError"):
        provider.attach_interface(ip_count=1, prefix_count=0)
    assert clock.sleeps == [0.5]


def test_detach_waits_for_available_before_deleting(
    stubbed: tuple[AwsProvider, Stubber], clock: FakeClock
) -> None:
    provider, stub = stubbed
    expect_eni(stub, eni_doc())
    stub.add_response("detach_network_interface", {}, {"AttachmentId": "eni-attach-1", "Force": False})
    expect_eni(stub, eni_doc(status="detaching"))
    available = eni_doc()
    del available["Attachment"]
    available["Status"] = "available"
    expect_eni(stub, available)
    stub.add_response("delete_network_interface", {}, {"NetworkInterfaceId": ENI})
    provider.detach_interface(InterfaceId(ENI))
    assert clock.sleeps == [0.2]


# --- placement (custom networking), against moto ------------------------------------------------


def pod_subnet(moto: MotoEc2, node: Node, cidr: str = "10.0.64.0/20", zone: str = AZ) -> tuple[str, str]:
    """A second subnet of the node's VPC (as an ENIConfig names one) and a security group for pods."""
    ec2 = moto.client()
    subnet = ec2.create_subnet(VpcId=node.vpc_id, CidrBlock=cidr, AvailabilityZone=zone)["Subnet"]["SubnetId"]
    group = ec2.create_security_group(GroupName=f"pods-{cidr}", Description="pods", VpcId=node.vpc_id)[
        "GroupId"
    ]
    return subnet, group


def groups_of(eni: dict[str, Any]) -> list[str]:
    """An ENI's groups as moto reports them. moto adds the instance's groups to an attached ENI's
    (its NetworkInterface.group_set); EC2 does not: the groups EC2 is asked for are checked too."""
    return sorted(g["GroupId"] for g in eni["Groups"])


def test_after_a_placement_new_enis_go_to_its_subnet_with_its_groups(
    provider: AwsProvider, ec2: Any, ec2_node: Node, moto_ec2: MotoEc2
) -> None:
    before = provider.attach_interface(ip_count=2, prefix_count=0)
    subnet, group = pod_subnet(moto_ec2, ec2_node)
    created = record_params(ec2, "CreateNetworkInterface")

    provider.set_interface_placement(Placement(subnet, (group,), "ENIConfig us-east-1a"))
    after = provider.attach_interface(ip_count=3, prefix_count=0)

    assert [(c["SubnetId"], c["Groups"]) for c in created] == [(subnet, [group])]
    assert (after.subnet_id, after.subnet_cidr, after.device_index) == (subnet, "10.0.64.0/20", 2)
    assert all(ipaddress.IPv4Address(ip) in ipaddress.IPv4Network("10.0.64.0/20") for ip in after.ips)
    enis = all_enis(moto_ec2)
    assert enis[after.id]["SubnetId"] == subnet and group in groups_of(enis[after.id])
    # the ENI attached before keeps its subnet and groups, and so does the primary
    assert (enis[before.id]["SubnetId"], groups_of(enis[before.id])) == (
        ec2_node.subnet_id,
        [ec2_node.security_group_id],
    )
    assert enis[ec2_node.primary_eni]["SubnetId"] == ec2_node.subnet_id
    listed = {v.id: v for v in provider.list_interfaces()}
    assert listed[before.id] == before and listed[after.id].subnet_id == subnet
    (added,) = provider.assign_ips(before.id, 1)  # an ENI attached before grows in its own subnet
    assert ipaddress.IPv4Address(added) in ipaddress.IPv4Network(ec2_node.subnet_cidr)


def test_a_placement_without_groups_takes_the_primary_enis_groups(
    make_provider: Callable[..., AwsProvider], ec2: Any, ec2_node: Node, moto_ec2: MotoEc2
) -> None:
    subnet, group = pod_subnet(moto_ec2, ec2_node)
    # ENI_SECURITY_GROUPS is for new ENIs without a placement; an ENIConfig without securityGroups
    # gives the primary ENI's, as aws-vpc-cni does
    provider = make_provider(custom_networking=True, security_group_ids=(group,))
    created = record_params(ec2, "CreateNetworkInterface")
    provider.set_interface_placement(Placement(subnet, None, "ENIConfig default"))
    view = provider.attach_interface(ip_count=1, prefix_count=0)
    assert [(c["SubnetId"], c["Groups"]) for c in created] == [(subnet, [ec2_node.security_group_id])]
    eni = all_enis(moto_ec2)[view.id]
    assert (eni["SubnetId"], groups_of(eni)) == (subnet, [ec2_node.security_group_id])


def test_custom_networking_without_a_placement_creates_nothing(
    make_provider: Callable[..., AwsProvider], ec2: Any, ec2_node: Node, moto_ec2: MotoEc2
) -> None:
    provider = make_provider(custom_networking=True)
    assert not provider.primary_interface_pods and make_provider().primary_interface_pods
    created = record_params(ec2, "CreateNetworkInterface")
    with pytest.raises(NoPlacement, match="no ENIConfig placement is set: no ENI is created"):
        provider.attach_interface(ip_count=1, prefix_count=0)
    assert created == [] and list(all_enis(moto_ec2)) == [ec2_node.primary_eni]

    subnet, _ = pod_subnet(moto_ec2, ec2_node)
    provider.set_interface_placement(Placement(subnet, None, "ENIConfig default"))
    view = provider.attach_interface(ip_count=1, prefix_count=0)
    assert view.subnet_id == subnet and len(created) == 1

    provider.set_interface_placement(None)  # the ENIConfig went away: no new ENI again
    with pytest.raises(NoPlacement):
        provider.attach_interface(ip_count=1, prefix_count=0)
    assert len(created) == 1
    assert provider.assign_ips(view.id, 2)  # an attached ENI still takes addresses


@pytest.mark.parametrize("where", ["other-zone", "other-vpc"])
def test_a_placement_subnet_outside_the_nodes_zone_or_vpc_is_refused_before_any_create(
    provider: AwsProvider, ec2: Any, ec2_node: Node, moto_ec2: MotoEc2, where: str
) -> None:
    client = moto_ec2.client()
    if where == "other-zone":
        subnet, _ = pod_subnet(moto_ec2, ec2_node, zone="us-east-1b")
        match = "in us-east-1b, not in the node's Availability Zone us-east-1a"
    else:
        vpc = client.create_vpc(CidrBlock="10.9.0.0/16")["Vpc"]["VpcId"]
        subnet = client.create_subnet(VpcId=vpc, CidrBlock="10.9.0.0/20", AvailabilityZone=AZ)["Subnet"][
            "SubnetId"
        ]
        match = f"in {vpc}, not in the node's VPC {ec2_node.vpc_id}"
    created = record_params(ec2, "CreateNetworkInterface")
    provider.set_interface_placement(Placement(subnet, None, "ENIConfig elsewhere"))
    with pytest.raises(PermanentCloudError, match=f"ENIConfig elsewhere: subnet {subnet} is {match}"):
        provider.attach_interface(ip_count=1, prefix_count=0)
    assert created == [] and list(all_enis(moto_ec2)) == [ec2_node.primary_eni]


@pytest.mark.parametrize(
    "placement",
    [
        Placement("sg-0abc", None, "ENIConfig x"),
        Placement("subnet-0abc", (), "ENIConfig x"),
        Placement("subnet-0abc", ("subnet-0def",), "ENIConfig x"),
        Placement("subnet-0abc", tuple(f"sg-{n:x}" for n in range(17)), "ENIConfig x"),
    ],
)
def test_a_malformed_placement_is_refused_and_the_previous_one_kept(
    provider: AwsProvider, placement: Placement
) -> None:
    good = Placement("subnet-0123", ("sg-1",), "ENIConfig good")
    provider.set_interface_placement(good)
    with pytest.raises(ValueError, match="ENIConfig x"):
        provider.set_interface_placement(placement)
    assert provider.placement == good
