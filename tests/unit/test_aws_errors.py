"""botocore exceptions -> our CloudError tree (ipamd.cloud.aws.client.translate), and the EC2 client's
configuration. Nothing here sends a request: errors are constructed or come from botocore's Stubber."""

from __future__ import annotations

import email.utils
import time
from collections.abc import Iterator
from typing import Any

import pytest
from botocore.exceptions import (
    ClientError,
    ConnectionClosedError,
    ConnectTimeoutError,
    EndpointConnectionError,
    NoCredentialsError,
    ParamValidationError,
    ReadTimeoutError,
    SSLError,
)
from botocore.stub import Stubber

from ipamd.cloud.aws.client import make_ec2_client, translate
from ipamd.errors import (
    CloudError,
    CloudPermissionError,
    InterfaceNotFound,
    LimitExceeded,
    PermanentCloudError,
    SubnetFull,
    TemporaryCloudError,
    ThrottledError,
)

LOOPBACK = "http://127.0.0.1:9"  # never contacted: the Stubber answers first


@pytest.fixture(autouse=True)
def _credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.setenv(key, "testing")
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    monkeypatch.delenv("AWS_ENDPOINT_URL_EC2", raising=False)


@pytest.fixture
def stubbed() -> Iterator[tuple[Any, Stubber]]:
    ec2 = make_ec2_client("us-east-1", endpoint_url=LOOPBACK)
    with Stubber(ec2) as stub:
        yield ec2, stub
        stub.assert_no_pending_responses()


def client_error(
    code: str,
    status: int = 400,
    operation: str = "CreateNetworkInterface",
    headers: dict[str, str] | None = None,
    message: str = "something",
) -> ClientError:
    return ClientError(
        {
            "Error": {"Code": code, "Message": message},
            "ResponseMetadata": {"HTTPStatusCode": status, "HTTPHeaders": headers or {}},
        },
        operation,
    )


@pytest.mark.parametrize(
    ("code", "status", "expected"),
    [
        ("RequestLimitExceeded", 503, ThrottledError),
        ("Throttling", 400, ThrottledError),
        ("ThrottlingException", 400, ThrottledError),
        ("SlowDown", 429, ThrottledError),
        ("InternalError", 500, TemporaryCloudError),
        ("ServiceUnavailable", 503, TemporaryCloudError),
        ("Unavailable", 503, TemporaryCloudError),
        ("SomethingNew", 502, TemporaryCloudError),
        ("InsufficientFreeAddressesInSubnet", 400, SubnetFull),
        ("InsufficientCidrBlocks", 400, SubnetFull),
        ("InsufficientAddressCapacity", 400, SubnetFull),
        ("AttachmentLimitExceeded", 400, LimitExceeded),
        ("PrivateIpAddressLimitExceeded", 400, LimitExceeded),
        ("NetworkInterfaceLimitExceeded", 400, LimitExceeded),
        ("ResourceLimitExceeded", 400, LimitExceeded),
        ("UnauthorizedOperation", 403, CloudPermissionError),
        ("AccessDenied", 403, CloudPermissionError),
        ("AccessDeniedException", 403, CloudPermissionError),
        ("InvalidNetworkInterfaceID.NotFound", 400, InterfaceNotFound),
        ("InvalidNetworkInterfaceId.Malformed", 400, InterfaceNotFound),
        ("InvalidParameterValue", 400, PermanentCloudError),
        ("InvalidSubnetID.NotFound", 400, PermanentCloudError),
        ("AuthFailure", 401, PermanentCloudError),
    ],
    ids=lambda v: str(v) if isinstance(v, str) else None,
)
def test_client_error_codes(code: str, status: int, expected: type[CloudError]) -> None:
    err = translate("attach_interface", client_error(code, status))
    assert type(err) is expected
    assert err.operation == "attach_interface"
    if status < 500 and status != 429:
        assert code in str(err)


def test_permission_error_names_the_ec2_action() -> None:
    err = translate("attach_interface", client_error("UnauthorizedOperation", 403, "AttachNetworkInterface"))
    assert isinstance(err, CloudPermissionError)
    assert err.action == "ec2:AttachNetworkInterface"
    assert "ec2:AttachNetworkInterface" in str(err)


def test_throttled_error_carries_retry_after_seconds() -> None:
    err = translate(
        "list_interfaces", client_error("RequestLimitExceeded", 503, headers={"retry-after": "7"})
    )
    assert isinstance(err, ThrottledError)
    assert err.retry_after == 7.0


def test_retry_after_as_http_date() -> None:
    when = email.utils.formatdate(time.time() + 30, usegmt=True)
    err = translate("list_interfaces", client_error("Throttling", 400, headers={"Retry-After": when}))
    assert isinstance(err, ThrottledError)
    assert err.retry_after is not None
    assert 25 <= err.retry_after <= 31


@pytest.mark.parametrize("value", ["", "soon", "nan", "-3"], ids=["empty", "word", "nan", "negative"])
def test_unusable_retry_after(value: str) -> None:
    err = translate(
        "list_interfaces", client_error("RequestLimitExceeded", 503, headers={"retry-after": value})
    )
    assert isinstance(err, ThrottledError)
    assert err.retry_after in (None, 0.0)


def test_no_retry_after_header() -> None:
    err = translate("list_interfaces", client_error("InternalError", 500))
    assert isinstance(err, TemporaryCloudError)
    assert err.retry_after is None


@pytest.mark.parametrize(
    "exc",
    [
        EndpointConnectionError(endpoint_url=LOOPBACK),
        ConnectTimeoutError(endpoint_url=LOOPBACK),
        ReadTimeoutError(endpoint_url=LOOPBACK),
        ConnectionClosedError(endpoint_url=LOOPBACK),
    ],
    ids=lambda e: type(e).__name__,
)
def test_network_errors_are_temporary(exc: Exception) -> None:
    err = translate("assign_ips", exc)
    assert type(err) is TemporaryCloudError
    assert type(exc).__name__ in str(err)


@pytest.mark.parametrize(
    "exc",
    [
        NoCredentialsError(),
        SSLError(endpoint_url=LOOPBACK, error="bad certificate"),
        ParamValidationError(report="missing SubnetId"),
        ValueError("odd"),
    ],
    ids=lambda e: type(e).__name__,
)
def test_everything_else_is_permanent(exc: Exception) -> None:
    assert type(translate("assign_ips", exc)) is PermanentCloudError


def test_cloud_errors_pass_through() -> None:
    original = SubnetFull("assign_ips", "full")
    assert translate("other", original) is original


def test_stubbed_client_error_translates(stubbed: tuple[Any, Stubber]) -> None:
    ec2, stub = stubbed
    stub.add_client_error(
        "create_network_interface",
        service_error_code="UnauthorizedOperation",
        service_message="You are not authorized to perform this operation.",
        http_status_code=403,
    )
    with pytest.raises(ClientError) as caught:
        ec2.create_network_interface(SubnetId="subnet-1")
    err = translate("attach_interface", caught.value)
    assert isinstance(err, CloudPermissionError)
    assert err.action == "ec2:CreateNetworkInterface"


def test_stubbed_subnet_full(stubbed: tuple[Any, Stubber]) -> None:
    ec2, stub = stubbed
    stub.add_client_error(
        "assign_private_ip_addresses",
        service_error_code="InsufficientFreeAddressesInSubnet",
        http_status_code=400,
    )
    with pytest.raises(ClientError) as caught:
        ec2.assign_private_ip_addresses(NetworkInterfaceId="eni-1", SecondaryPrivateIpAddressCount=1)
    assert isinstance(translate("assign_ips", caught.value), SubnetFull)


def test_client_makes_one_attempt_and_says_who_it_is() -> None:
    ec2 = make_ec2_client("eu-west-1", endpoint_url=LOOPBACK, timeout=3)
    config = ec2.meta.config
    assert config.retries["total_max_attempts"] == 1
    assert config.connect_timeout == 3
    assert config.read_timeout == 3
    assert "cloud-cni" in config.user_agent_extra
    assert ec2.meta.region_name == "eu-west-1"
    assert ec2.meta.endpoint_url == LOOPBACK


def test_client_endpoint_from_aws_endpoint_url(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:4566")
    assert make_ec2_client("us-east-1").meta.endpoint_url == "http://127.0.0.1:4566"
    assert make_ec2_client("us-east-1", endpoint_url=LOOPBACK).meta.endpoint_url == LOOPBACK


def test_long_messages_are_capped() -> None:
    err = translate("attach_interface", client_error("UnauthorizedOperation", 403, message="x" * 5000))
    assert len(str(err)) < 700
