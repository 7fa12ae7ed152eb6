"""The simulated cloud's API: account-wide token buckets per action class, the API calls behind each
pool operation, and how long they take.

Why account-wide: EC2 meters every caller of an account and Region with one token bucket per action
class, and ARM one per subscription and operation type, so at 5,000 nodes the nodes' own limiters
cannot see each other and the account's bucket is what throttles. The action classes and the
buckets' capacities are the daemon's (``ipamd.cloud.budget``: ``CLASSES``, ``ACCOUNT_CAPACITY``, the
same facts CLOUD_API_BUDGET shares out); the refill rates are the published ones
(../shared/reference/scale-and-latency.md, §1-2); latencies are uniform between the bounds the
sources give (§3), a simplification stated in docs/simulation.md.

A pool operation (what ``ipamd.cloud.base.CloudProvider`` offers and the manager calls) is a short
sequence of API calls, as the providers make them and as ``ipamd.cloud.budget.operation_cost``
counts them per class (a test keeps the two in step): ``attach_interface`` on AWS is a Describe (a free
device index), CreateNetworkInterface, AttachNetworkInterface, ModifyNetworkInterfaceAttribute
(DeleteOnTermination) and a Describe that waits for the attachment. An attempt charges its calls to
the account's buckets in order; the first whose bucket is empty throttles the attempt (the calls
before it were made; an interface created but not attached is deleted again, one more call).
Throttling is decided before the request is looked at, as the clouds do; a throttled attempt
answers quickly. ARM's answer carries Retry-After (the seconds until its bucket has a token), which
the daemon's retry honours; EC2's carries none.

The account's buckets are the cloud's, not the daemon's: a small token bucket in simulated time
(``AccountBucket``), as cheap as it can be, because at 5,000 nodes a throttling storm asks it millions
of times an hour. The nodes' own limiters are the daemon's classes (``ipamd.sim.node``).
"""

from __future__ import annotations

import math
import random
from collections import Counter
from dataclasses import dataclass

from ipamd.cloud.budget import ACCOUNT_CAPACITY
from ipamd.cloud.budget import CLASSES as BUDGET_CLASSES

__all__ = ["CLASSES", "OPERATIONS", "REFILL", "AccountBucket", "CloudApi", "Operation"]

CLASSES = {provider: BUDGET_CLASSES[provider] for provider in ("aws", "azure")}
# Refill per second of the account's bucket of each class. EC2 per account and Region: Assign/
# UnassignPrivateIpAddresses 5; Create/Delete/ModifyNetworkInterface(Attribute) 5; Attach/Detach are
# not listed, so EC2's default mutating bucket, 5; filtered (the providers filter by instance)
# Describe* 20. ARM per subscription and principal: writes 10, reads 25.
REFILL = {"assign": 5.0, "interface": 5.0, "attach": 5.0, "describe": 20.0, "write": 10.0, "read": 25.0}


class AccountBucket:
    """The cloud's bucket of one class: ``capacity`` tokens, ``rate`` per second; starts full."""

    __slots__ = ("capacity", "last", "rate", "tokens")

    def __init__(self, capacity: float, rate: float) -> None:
        self.capacity = capacity
        self.rate = rate
        self.tokens = capacity
        self.last = 0.0

    def take(self, now: float) -> bool:
        """A token if one is there at ``now``; False (throttled) otherwise. Never goes into debt."""
        tokens = self.tokens
        if now > self.last:
            tokens = min(self.capacity, tokens + (now - self.last) * self.rate)
            self.last = now
        if tokens >= 1.0:
            self.tokens = tokens - 1.0
            return True
        self.tokens = tokens
        return False

    def next_token_in(self, now: float) -> float:
        """Seconds until a token is there (0.0: now). Takes nothing."""
        tokens = self.tokens
        if now > self.last:
            tokens = min(self.capacity, tokens + (now - self.last) * self.rate)
        return 0.0 if tokens >= 1.0 else (1.0 - tokens) / self.rate


@dataclass(frozen=True, slots=True)
class Operation:
    """One pool operation: its API calls ``(name, class)`` in order, and its latency bounds."""

    calls: tuple[tuple[str, str], ...]
    latency: tuple[float, float]  # seconds, uniform between the bounds, for the whole operation
    cleanup: tuple[str, str] | None = None  # made when throttled after the first call (a created ENI)
    decisive: int = -1  # the call the cloud refuses (SubnetFull, a limit) on; none after it is made

    def cost(self) -> dict[str, int]:
        """Tokens per class one attempt takes when nothing throttles it."""
        out: dict[str, int] = {}
        for _, cls in self.calls:
            out[cls] = out.get(cls, 0) + 1
        return out


_CREATE, _DELETE = ("CreateNetworkInterface", "interface"), ("DeleteNetworkInterface", "interface")
_DESCRIBE = ("DescribeNetworkInterfaces", "describe")
_ASSIGN, _UNASSIGN = ("AssignPrivateIpAddresses", "assign"), ("UnassignPrivateIpAddresses", "assign")
_NIC_GET, _NIC_PUT = ("NetworkInterfaces.Get", "read"), ("NetworkInterfaces.CreateOrUpdate", "write")

OPERATIONS: dict[str, dict[str, Operation]] = {
    "aws": {
        # ENI create + attach: "can take up to 10 seconds" (EKS best practices, aws-vpc-cni docs)
        "attach_interface": Operation(
            (_DESCRIBE, _CREATE, ("AttachNetworkInterface", "attach"),
             ("ModifyNetworkInterfaceAttribute", "interface"), _DESCRIBE),
            (2.0, 10.0),
            cleanup=_DELETE,
            decisive=1,
        ),
        "detach_interface": Operation(
            (_DESCRIBE, ("DetachNetworkInterface", "attach"), _DESCRIBE, _DELETE), (1.0, 5.0)
        ),
        "assign_ips": Operation((_DESCRIBE, _ASSIGN), (0.5, 1.8)),  # 510 ms sampled; ~1.8 s aws-vpc-cni #1872
        "assign_prefixes": Operation((_DESCRIBE, _ASSIGN), (0.3, 0.9)),  # "typically under a second"
        "release_ips": Operation((_UNASSIGN,), (0.3, 1.0)),
        "release_prefixes": Operation((_UNASSIGN,), (0.3, 1.0)),
        "list_interfaces": Operation((_DESCRIBE,), (0.1, 0.5)),
    },
    "azure": {
        # a NIC PUT: "the request<->response loop for IP allocations may take several seconds" (CNS)
        "assign_ips": Operation((_NIC_GET, _NIC_PUT), (2.0, 6.0)),
        "release_ips": Operation((_NIC_GET, _NIC_PUT), (2.0, 6.0)),
        "list_interfaces": Operation((_NIC_GET,), (0.1, 0.5)),
    },
}  # fmt: skip

THROTTLED_LATENCY = (0.02, 0.1)  # a throttled request is refused before it is worked on
REFUSED_LATENCY = (0.1, 0.4)  # SubnetFull, LimitExceeded: the request is looked at, then refused


class CloudApi:
    """The account's buckets and what was asked of them: calls and throttled calls by API name."""

    def __init__(self, provider: str, *, rng: random.Random) -> None:
        if provider not in CLASSES:
            raise ValueError(f"no simulated cloud {provider!r}: one of {', '.join(CLASSES)}")
        self.provider = provider
        self.rng = rng
        self.buckets = {cls: AccountBucket(ACCOUNT_CAPACITY[cls], REFILL[cls]) for cls in CLASSES[provider]}
        self.operations = OPERATIONS[provider]
        self.calls: Counter[str] = Counter()
        self.throttled: Counter[str] = Counter()

    def admit(self, operation: Operation, now: float) -> tuple[bool, float | None]:
        """Charge one attempt's calls now: (True, None) if every bucket had a token, else (False,
        retry_after): ARM's Retry-After (whole seconds until its bucket has a token), EC2's None."""
        buckets, calls = self.buckets, self.calls
        for index, (name, cls) in enumerate(operation.calls):
            calls[name] += 1
            bucket = buckets[cls]
            if bucket.take(now):
                continue
            self.throttled[name] += 1
            if index and operation.cleanup is not None:
                cleanup, cleanup_cls = operation.cleanup
                calls[cleanup] += 1
                if not buckets[cleanup_cls].take(now):
                    self.throttled[cleanup] += 1
            retry_after = float(math.ceil(bucket.next_token_in(now))) if self.provider == "azure" else None
            return False, retry_after
        return True, None

    def refused(self, operation: Operation, now: float) -> None:
        """The request was refused at its decisive call: the calls after it were never made (their
        count and their tokens go back)."""
        if operation.decisive < 0:
            return
        for name, cls in operation.calls[operation.decisive + 1 :]:
            self.calls[name] -= 1
            bucket = self.buckets[cls]
            bucket.tokens = min(bucket.capacity, bucket.tokens + 1.0)

    def latency(self, bounds: tuple[float, float]) -> float:
        return self.rng.uniform(*bounds)
