"""Instance limits: DescribeInstanceTypes (botocore Stubber), the process cache, the shipped table."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from botocore.stub import Stubber
from structlog.testing import capture_logs

from ipamd.cloud.aws import limits
from ipamd.cloud.aws.client import make_ec2_client
from ipamd.errors import PermanentCloudError
from ipamd.pool.model import InstanceLimits


@pytest.fixture(autouse=True)
def _fresh_cache(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.setenv(key, "testing")
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    limits.clear_cache()
    yield
    limits.clear_cache()


@pytest.fixture
def stubbed() -> Iterator[tuple[Any, Stubber]]:
    ec2 = make_ec2_client("us-east-1", endpoint_url="http://127.0.0.1:9")
    with Stubber(ec2) as stub:
        yield ec2, stub
        stub.assert_no_pending_responses()


def instance_type(
    name: str,
    enis: int,
    ipv4: int,
    *,
    hypervisor: str | None = "nitro",
    bare_metal: bool = False,
    cards: list[int] | None = None,
) -> dict[str, Any]:
    network: dict[str, Any] = {"MaximumNetworkInterfaces": enis, "Ipv4AddressesPerInterface": ipv4}
    if cards is not None:
        network["DefaultNetworkCardIndex"] = 0
        network["NetworkCards"] = [
            {"NetworkCardIndex": i, "MaximumNetworkInterfaces": n} for i, n in enumerate(cards)
        ]
    info: dict[str, Any] = {"InstanceType": name, "BareMetal": bare_metal, "NetworkInfo": network}
    if hypervisor is not None:
        info["Hypervisor"] = hypervisor
    return info


def expect_describe(stub: Stubber, name: str, *infos: dict[str, Any]) -> None:
    stub.add_response(
        "describe_instance_types", {"InstanceTypes": list(infos)}, expected_params={"InstanceTypes": [name]}
    )


@pytest.mark.parametrize(
    ("info", "expected"),
    [
        (instance_type("m5.large", 3, 10), InstanceLimits("m5.large", 3, 10, True)),
        (instance_type("t2.medium", 3, 6, hypervisor="xen"), InstanceLimits("t2.medium", 3, 6, False)),
        (
            instance_type("m5.metal", 15, 50, hypervisor=None, bare_metal=True),
            InstanceLimits("m5.metal", 15, 50, True),
        ),
        (
            instance_type("p4d.24xlarge", 60, 50, cards=[15, 15, 15, 15]),
            InstanceLimits("p4d.24xlarge", 15, 50, True),
        ),
    ],
    ids=["nitro", "xen", "bare-metal", "multi-card"],
)
def test_from_describe_instance_types(
    stubbed: tuple[Any, Stubber], info: dict[str, Any], expected: InstanceLimits
) -> None:
    ec2, stub = stubbed
    expect_describe(stub, expected.instance_type, info)
    assert limits.instance_limits(ec2, expected.instance_type) == expected


def test_cached_per_process(stubbed: tuple[Any, Stubber]) -> None:
    ec2, stub = stubbed
    expect_describe(stub, "c5.large", instance_type("c5.large", 3, 10))
    first = limits.instance_limits(ec2, "c5.large")
    # A second API call would find no stubbed response and raise.
    assert limits.instance_limits(ec2, "c5.large") is first


@pytest.mark.parametrize(
    "code", ["UnauthorizedOperation", "RequestLimitExceeded", "InvalidInstanceType"], ids=str
)
def test_falls_back_to_the_table_with_a_log_event(stubbed: tuple[Any, Stubber], code: str) -> None:
    ec2, stub = stubbed
    stub.add_client_error("describe_instance_types", service_error_code=code, http_status_code=400)
    with capture_logs() as logs:
        got = limits.instance_limits(ec2, "m5.xlarge")
    assert got == InstanceLimits("m5.xlarge", 4, 15, True)
    events = [e for e in logs if e["event"] == "instance_limits_fallback"]
    assert events and events[0]["instance_type"] == "m5.xlarge" and events[0]["error"] == code


def test_empty_answer_falls_back(stubbed: tuple[Any, Stubber]) -> None:
    ec2, stub = stubbed
    expect_describe(stub, "t3.small")
    assert limits.instance_limits(ec2, "t3.small") == InstanceLimits("t3.small", 3, 4, True)


def test_unknown_type_and_api_failure_is_permanent(stubbed: tuple[Any, Stubber]) -> None:
    ec2, stub = stubbed
    stub.add_client_error("describe_instance_types", service_error_code="InternalError", http_status_code=500)
    with pytest.raises(PermanentCloudError, match=r"x9\.mega"):
        limits.instance_limits(ec2, "x9.mega")


def test_unknown_type_known_to_the_api(stubbed: tuple[Any, Stubber]) -> None:
    ec2, stub = stubbed
    expect_describe(stub, "x9.mega", instance_type("x9.mega", 7, 20))
    assert limits.instance_limits(ec2, "x9.mega") == InstanceLimits("x9.mega", 7, 20, True)


@pytest.mark.parametrize(
    ("name", "enis", "ipv4", "pd"),
    [
        ("t3.small", 3, 4, True),
        ("t3.medium", 3, 6, True),
        ("t3.large", 3, 12, True),
        ("m5.large", 3, 10, True),
        ("m5.xlarge", 4, 15, True),
        ("m5.2xlarge", 4, 15, True),
        ("m5.4xlarge", 8, 30, True),
        ("c5.large", 3, 10, True),
        ("c5.xlarge", 4, 15, True),
        ("c5.18xlarge", 15, 50, True),
        ("r5.large", 3, 10, True),
        ("m6i.large", 3, 10, True),
        ("p3dn.24xlarge", 15, 50, True),
        ("t2.medium", 3, 6, False),
        ("t2.large", 3, 12, False),
    ],
    ids=lambda v: v if isinstance(v, str) else None,
)
def test_shipped_table(name: str, enis: int, ipv4: int, pd: bool) -> None:
    assert limits.KNOWN_LIMITS[name] == InstanceLimits(name, enis, ipv4, pd)


def test_table_max_pods_match_aws_vpc_cni() -> None:
    assert limits.KNOWN_LIMITS["m5.large"].default_max_pods == 29
    assert limits.KNOWN_LIMITS["t3.medium"].default_max_pods == 17
    assert not any(v.prefix_delegation for k, v in limits.KNOWN_LIMITS.items() if k.startswith("t2."))
