"""The daemon's exception tree. Third-party exceptions are translated once, at the boundary.

CloudCniError
├── ConfigError                 bad env var or config value (daemon refuses to start)
├── CheckpointError             checkpoint unreadable / unwritable
├── PoolError
│   ├── NoAddressAvailable      pool empty and cannot grow now (CNI 11: try again later)
│   ├── AllocationNotFound      no assignment for that key (DEL/GC swallow it)
│   └── AttachmentChanged       a concurrent DEL (or an ADD's rollback) changed the attachment while
│                               an ADD was storing it (CNI 11: try again later)
├── RequestError                a gRPC request failed validation (CNI 7 / 4)
├── InstallError                `cloud-cni install-shim` cannot put a working plugin on the node
├── DatapathError               the pod network cannot be wired, checked or torn down (CNI 999)
│   ├── InterfaceExists         CNI_IFNAME already exists in the pod netns
│   └── NetnsNotFound           CNI_NETNS does not exist (CNI 4); never created
└── CloudError                  anything a provider raises
    ├── TemporaryCloudError     retry with backoff (5xx, timeouts); ``retry_after`` hint
    │   └── ThrottledError      the cloud said slow down (RequestLimitExceeded, 429)
    └── PermanentCloudError     retrying will not help
        ├── LimitExceeded       instance/interface limit reached (ENI count, IPs per ENI)
        ├── SubnetFull          the subnet has no free addresses (pause growth for a cool-off)
        ├── CloudPermissionError  missing IAM/RBAC permission; ``action`` names it
        ├── InterfaceNotFound   the interface is gone (already-gone: reconcile swallows it)
        └── NoPlacement         custom networking without a placement yet (no valid ENIConfig):
                                no interface is created, nothing is sent
"""

from __future__ import annotations


class CloudCniError(Exception):
    """Base of every error this project raises on purpose."""


class ConfigError(CloudCniError):
    def __init__(self, variable: str, value: str, allowed: str) -> None:
        super().__init__(f"{variable}={value!r} is invalid: {allowed}")
        self.variable = variable
        self.value = value
        self.allowed = allowed


class CheckpointError(CloudCniError):
    pass


class PoolError(CloudCniError):
    pass


class NoAddressAvailable(PoolError):
    pass


class AllocationNotFound(PoolError):
    pass


class AttachmentChanged(PoolError):
    """The attachment an ADD was making durable changed meanwhile (a concurrent DEL for the same key,
    or the rollback of a concurrent ADD, won the race). Nothing is wrong with the cloud or the pool:
    the runtime retries the ADD (CNI 11)."""


class RequestError(CloudCniError):
    """A request from the shim failed validation. ``field`` names what was wrong."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


class InstallError(CloudCniError):
    """The plugin cannot be installed as asked; nothing the node runs was changed."""


class DatapathError(CloudCniError):
    """The pod network could not be wired, checked or torn down as asked."""


class InterfaceExists(DatapathError):
    """CNI_IFNAME already exists in the pod's netns."""


class NetnsNotFound(DatapathError):
    """The network namespace the runtime named does not exist (it is never created)."""


class CloudError(CloudCniError):
    def __init__(self, operation: str, message: str) -> None:
        super().__init__(f"{operation}: {message}")
        self.operation = operation


class TemporaryCloudError(CloudError):
    def __init__(self, operation: str, message: str, retry_after: float | None = None) -> None:
        super().__init__(operation, message)
        self.retry_after = retry_after


class ThrottledError(TemporaryCloudError):
    pass


class PermanentCloudError(CloudError):
    pass


class LimitExceeded(PermanentCloudError):
    pass


class SubnetFull(PermanentCloudError):
    pass


class CloudPermissionError(PermanentCloudError):
    def __init__(self, operation: str, message: str, action: str) -> None:
        super().__init__(operation, message)
        self.action = action


class InterfaceNotFound(PermanentCloudError):
    pass


class NoPlacement(PermanentCloudError):
    """A new interface needs a placement (custom networking: an ENIConfig) and none is set."""
