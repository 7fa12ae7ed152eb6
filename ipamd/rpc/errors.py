"""The one place daemon errors become gRPC statuses and CNI error codes.

The shim reads the CNI code from the trailing metadata key ``cni-code`` (CNI spec error codes: 3
container unknown, 4 invalid env var, 5 I/O failure, 7 invalid network config, 11 try again later,
999 internal) and prints it with the status details as the CNI error message.
"""

from __future__ import annotations

from dataclasses import dataclass

import grpc

from ipamd import errors

CNI_CODE_KEY = "cni-code"

# CNI spec error codes used by the daemon.
CNI_CONTAINER_UNKNOWN = 3
CNI_INVALID_ENV = 4
CNI_IO_FAILURE = 5
CNI_INVALID_CONFIG = 7
CNI_TRY_AGAIN_LATER = 11
CNI_NOT_AVAILABLE = 50
CNI_INTERNAL = 999


@dataclass(frozen=True, slots=True)
class RpcFailure:
    status: grpc.StatusCode
    cni_code: int
    message: str


# Most specific first: the first isinstance match wins.
_TABLE: tuple[tuple[type[BaseException], grpc.StatusCode, int], ...] = (
    (errors.RequestError, grpc.StatusCode.INVALID_ARGUMENT, CNI_INVALID_CONFIG),
    (errors.AllocationNotFound, grpc.StatusCode.NOT_FOUND, CNI_CONTAINER_UNKNOWN),
    (errors.NoAddressAvailable, grpc.StatusCode.RESOURCE_EXHAUSTED, CNI_TRY_AGAIN_LATER),
    (errors.AttachmentChanged, grpc.StatusCode.ABORTED, CNI_TRY_AGAIN_LATER),
    (errors.CheckpointError, grpc.StatusCode.UNAVAILABLE, CNI_IO_FAILURE),
    (errors.NetnsNotFound, grpc.StatusCode.FAILED_PRECONDITION, CNI_INVALID_ENV),
    (errors.TemporaryCloudError, grpc.StatusCode.UNAVAILABLE, CNI_TRY_AGAIN_LATER),
    (errors.CloudError, grpc.StatusCode.FAILED_PRECONDITION, CNI_TRY_AGAIN_LATER),
    (errors.CloudCniError, grpc.StatusCode.INTERNAL, CNI_INTERNAL),
)


def to_rpc_failure(exc: BaseException) -> RpcFailure:
    """Translate any exception raised while serving a call."""
    for kind, status, code in _TABLE:
        if isinstance(exc, kind):
            if isinstance(exc, errors.RequestError) and exc.field.startswith("CNI_"):
                return RpcFailure(status, CNI_INVALID_ENV, str(exc))
            return RpcFailure(status, code, str(exc))
    return RpcFailure(grpc.StatusCode.INTERNAL, CNI_INTERNAL, f"internal error: {type(exc).__name__}: {exc}")
