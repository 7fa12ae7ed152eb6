"""ARM errors -> the CloudError tree (ipamd/cloud/azure/client.py's table), one row per case."""

from __future__ import annotations

import json
from typing import Any

import pytest
from azure.core.exceptions import (
    ClientAuthenticationError,
    HttpResponseError,
    ServiceRequestError,
    ServiceResponseError,
)
from azure.identity import CredentialUnavailableError
from azure.mgmt.core.exceptions import ARMErrorFormat

from ipamd.cloud.azure.client import EtagMismatch, ResourceId, translate
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


class _Response:
    """What HttpResponseError reads from a transport response."""

    def __init__(self, status: int, code: str, headers: dict[str, str] | None = None) -> None:
        self.status_code = status
        self.reason = "reason"
        self.headers = headers or {}
        self.request = None
        self._body = json.dumps({"error": {"code": code, "message": f"{code} happened"}}) if code else ""

    def text(self, encoding: str | None = None) -> str:
        return self._body

    def json(self) -> Any:
        return json.loads(self._body)


def http_error(status: int, code: str = "", headers: dict[str, str] | None = None) -> HttpResponseError:
    return HttpResponseError(response=_Response(status, code, headers), error_format=ARMErrorFormat)


@pytest.mark.parametrize(
    ("status", "code", "headers", "kind", "retry_after"),
    [
        (412, "PreconditionFailed", None, EtagMismatch, None),
        (429, "TooManyRequests", {"Retry-After": "7"}, ThrottledError, 7.0),
        (429, "", None, ThrottledError, None),
        (409, "RetryableErrorDueToAnotherOperation", {"Retry-After": "1"}, ThrottledError, 1.0),
        (409, "AnotherOperationInProgress", None, ThrottledError, None),
        (409, "Conflict", {"Retry-After": "2"}, ThrottledError, 2.0),
        (409, "Conflict", None, TemporaryCloudError, None),
        (500, "InternalServerError", None, TemporaryCloudError, None),
        (503, "ServiceUnavailable", {"Retry-After": "4"}, TemporaryCloudError, 4.0),
        (408, "RequestTimeout", None, TemporaryCloudError, None),
        (400, "SubnetIsFull", None, SubnetFull, None),
        (400, "PrivateIPAddressSpaceExhausted", None, SubnetFull, None),
        (400, "QuotaExceeded", None, LimitExceeded, None),
        (400, "NetworkInterfaceIpConfigurationLimitExceeded", None, LimitExceeded, None),
        (403, "AuthorizationFailed", None, CloudPermissionError, None),
        (403, "LinkedAuthorizationFailed", None, CloudPermissionError, None),
        (401, "InvalidAuthenticationToken", None, CloudPermissionError, None),
        (404, "ResourceNotFound", None, InterfaceNotFound, None),
        (400, "InvalidRequestFormat", None, PermanentCloudError, None),
    ],
)
def test_http_errors(
    status: int, code: str, headers: dict[str, str] | None, kind: type[CloudError], retry_after: float | None
) -> None:
    err = translate("assign_ips", http_error(status, code, headers), action="Microsoft.Network/x/write")
    assert type(err) is kind
    assert err.operation == "assign_ips"
    assert str(status) in str(err) and code in str(err)
    if isinstance(err, TemporaryCloudError):
        assert err.retry_after == retry_after
    if isinstance(err, CloudPermissionError):
        assert err.action == "Microsoft.Network/x/write" and "needs Microsoft.Network/x/write" in str(err)


@pytest.mark.parametrize(
    ("exc", "kind"),
    [
        (ServiceRequestError("connection refused"), TemporaryCloudError),
        (ServiceResponseError("read timed out"), TemporaryCloudError),
        (ClientAuthenticationError("token endpoint answered 500"), TemporaryCloudError),
        (CredentialUnavailableError("no identity"), PermanentCloudError),
        (ValueError("odd"), PermanentCloudError),
    ],
)
def test_transport_and_identity_errors(exc: Exception, kind: type[CloudError]) -> None:
    assert type(translate("list_interfaces", exc)) is kind


def test_a_cloud_error_passes_through() -> None:
    err = LimitExceeded("x", "y")
    assert translate("op", err) is err


def test_messages_are_capped() -> None:
    exc = ServiceRequestError("x" * 10_000)
    assert len(str(translate("op", exc))) < 600


@pytest.mark.parametrize(
    ("value", "parsed"),
    [
        (
            "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Network/networkInterfaces/nic0",
            ResourceId("s", "rg", "nic0"),
        ),
        (
            "/SUBSCRIPTIONS/s/RESOURCEGROUPS/rg/providers/Microsoft.Compute/virtualMachineScaleSets/v/"
            "virtualMachines/3/networkInterfaces/n",
            ResourceId("s", "rg", "n"),
        ),
    ],
)
def test_resource_ids(value: str, parsed: ResourceId) -> None:
    assert ResourceId.parse(value) == parsed


@pytest.mark.parametrize(
    "value", ["", "/subscriptions/s", "nic0", "/foo/s/resourceGroups/rg/providers/a/b/c"]
)
def test_bad_resource_ids(value: str) -> None:
    with pytest.raises(PermanentCloudError):
        ResourceId.parse(value)
