"""The EC2 client and the one place botocore exceptions become ``ipamd.errors.CloudError``.

Translation table (first match wins)::

    already a CloudError                                   -> itself
    ClientError code RequestLimitExceeded, Throttling,
        ThrottlingException, or HTTP 429                   -> ThrottledError (retry_after from Retry-After)
    code InternalError, InternalFailure, ServiceUnavailable,
        Unavailable, or HTTP 5xx                           -> TemporaryCloudError (retry_after likewise)
    code InsufficientFreeAddressesInSubnet,
        InsufficientCidrBlocks, InsufficientAddressCapacity -> SubnetFull
    code *LimitExceeded (AttachmentLimitExceeded,
        PrivateIpAddressLimitExceeded, ...)                -> LimitExceeded
    code UnauthorizedOperation, AccessDenied*              -> CloudPermissionError(action="ec2:<Operation>")
    code InvalidNetworkInterfaceID.NotFound,
        InvalidNetworkInterfaceId.Malformed                -> InterfaceNotFound
    any other ClientError                                  -> PermanentCloudError
    EndpointConnectionError, ConnectTimeoutError,
        ReadTimeoutError, ConnectionClosedError (and any
        other HTTPClientError)                             -> TemporaryCloudError
    anything else (NoCredentialsError, SSLError,
        ParamValidationError, ...)                         -> PermanentCloudError

Messages carry the EC2 error code and message, never the request or the response payload.
"""

from __future__ import annotations

import functools
import threading
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import (
    ClientError,
    ConnectTimeoutError,
    EndpointConnectionError,
    HTTPClientError,
)

from ipamd.cloud.limiter import retry_after_seconds as _retry_after
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

USER_AGENT_EXTRA = "cloud-cni"

THROTTLING_CODES = frozenset({"RequestLimitExceeded", "Throttling", "ThrottlingException"})
TEMPORARY_CODES = frozenset({"InternalError", "InternalFailure", "ServiceUnavailable", "Unavailable"})
SUBNET_FULL_CODES = frozenset(
    {"InsufficientFreeAddressesInSubnet", "InsufficientCidrBlocks", "InsufficientAddressCapacity"}
)
LIMIT_CODES = frozenset(
    {
        "AttachmentLimitExceeded",
        "PrivateIpAddressLimitExceeded",
        "NetworkInterfaceLimitExceeded",
        "ResourceLimitExceeded",
        "AddressLimitExceeded",
    }
)
PERMISSION_CODES = frozenset({"UnauthorizedOperation"})
NOT_FOUND_CODES = frozenset({"InvalidNetworkInterfaceID.NotFound", "InvalidNetworkInterfaceId.Malformed"})

# One session per process: it loads the service model once (~0.2 s) and resolves credentials once;
# the environment (AWS_ENDPOINT_URL, AWS_REGION) is still read at each client's creation.
_session_lock = threading.Lock()
_MAX_MESSAGE = 512


def make_ec2_client(region: str, *, endpoint_url: str | None = None, timeout: float = 10) -> Any:
    """A boto3 EC2 client that tries every call exactly once.

    botocore's own retries are off (``total_max_attempts=1``): every retry belongs to
    ``ipamd.cloud.limiter.CloudCaller``, so that each attempt, first or retried, takes a token from
    the one client-side bucket shared by every cloud call of the daemon and honours Retry-After.
    Retries hidden inside the SDK would bypass that bucket and hit EC2's shared per-account
    buckets harder exactly when they are empty.

    ``endpoint_url`` overrides the endpoint; when None, boto3 applies its own conventions
    (``AWS_ENDPOINT_URL_EC2``, ``AWS_ENDPOINT_URL``, config files), which is how tests point the
    daemon at a local moto server. ``timeout`` bounds connecting and each read, in seconds.
    """
    config = Config(
        retries={"total_max_attempts": 1, "mode": "standard"},
        connect_timeout=timeout,
        read_timeout=timeout,
        user_agent_extra=USER_AGENT_EXTRA,
    )
    with _session_lock:  # a boto3 Session is not thread-safe; the clients it makes are
        session = _shared_session()
        if endpoint_url is None:
            return session.client("ec2", region_name=region, config=config)
        return session.client("ec2", region_name=region, endpoint_url=endpoint_url, config=config)


@functools.cache
def _shared_session() -> Any:
    import botocore.session

    from ipamd.cloud.aws.service_model import DATA_DIR

    core = botocore.session.get_session()
    # The trimmed EC2 model first: the full one costs ~32 MB (ipamd/cloud/aws/service_model.py).
    core.get_component("data_loader").search_paths.insert(0, str(DATA_DIR))
    return boto3.session.Session(botocore_session=core)


def error_code(exc: BaseException) -> str:
    """The EC2 error code of a ClientError ("" for anything else)."""
    if isinstance(exc, ClientError):
        return str(exc.response.get("Error", {}).get("Code", "") or "")
    return ""


def translate(operation: str, exc: Exception) -> CloudError:
    """The ``CloudError`` for an exception raised by an EC2 call made on behalf of ``operation``.

    Callers raise the result ``from exc``. See the module docstring for the table.
    """
    if isinstance(exc, CloudError):
        return exc
    if isinstance(exc, ClientError):
        return _translate_client_error(operation, exc)
    if isinstance(exc, EndpointConnectionError | ConnectTimeoutError | HTTPClientError):
        return TemporaryCloudError(operation, f"{type(exc).__name__}: {exc}")
    return PermanentCloudError(operation, f"{type(exc).__name__}: {exc}")


def _translate_client_error(operation: str, exc: ClientError) -> CloudError:
    response: dict[str, Any] = exc.response or {}
    error = response.get("Error", {}) or {}
    code = str(error.get("Code", "") or "")
    # UnauthorizedOperation carries an encoded authorization blob of a kilobyte or more: cap it.
    message = f"{code}: {error.get('Message', '') or ''}".rstrip(": ")[:_MAX_MESSAGE]
    metadata = response.get("ResponseMetadata", {}) or {}
    status = _int(metadata.get("HTTPStatusCode"))
    headers = metadata.get("HTTPHeaders", {}) or {}
    api = getattr(exc, "operation_name", "") or "Unknown"

    if code in THROTTLING_CODES or status == 429:
        return ThrottledError(operation, message or "throttled", retry_after=_retry_after(headers))
    if code in TEMPORARY_CODES or (status is not None and 500 <= status <= 599):
        return TemporaryCloudError(operation, message or f"HTTP {status}", retry_after=_retry_after(headers))
    if code in SUBNET_FULL_CODES:
        return SubnetFull(operation, message)
    if code in LIMIT_CODES or code.endswith("LimitExceeded"):
        return LimitExceeded(operation, message)
    if code in PERMISSION_CODES or code.startswith("AccessDenied"):
        action = f"ec2:{api}"
        return CloudPermissionError(operation, f"{message} (needs {action})", action=action)
    if code in NOT_FOUND_CODES:
        return InterfaceNotFound(operation, message)
    return PermanentCloudError(operation, message or f"HTTP {status}")


def _int(value: object) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int | str):
        return None
    try:
        return int(value)
    except ValueError:
        return None


__all__ = ["error_code", "make_ec2_client", "translate"]
