"""The cluster-wide cloud API budget (CLOUD_API_BUDGET): this node's share of each action class.

The cloud meters an account (EC2, per Region) or a subscription (ARM) with token buckets that every
node shares, one per action class. A per-node limiter cannot see the others: at 5,000 nodes, five
calls per second each is 25,000 against an account that refills five. ``CLOUD_API_BUDGET`` states
what the whole cluster may spend per class, and each node takes its share from the node count the
Kubernetes API reports (``ipamd.k8s.nodecount``), without talking to the other nodes:

    node rate     = class budget / N
    node capacity = the account bucket's capacity for the class / N

so that N nodes together refill no faster than the budget. A share below one token is allowed
(``FractionalBucket``): a node then earns each token before it calls, on a phase of its own drawn
at random, so that nodes that need a call at the same moment are let through spread over one
period (N / budget seconds) instead of together.

Action classes (docs/design.md, "The cluster-wide API budget", says which calls fall in which):

- EC2 (``aws``, and ``sim``, which models EC2): ``assign`` = Assign/UnassignPrivateIpAddresses (IPs and
  prefixes); ``interface`` = Create/DeleteNetworkInterface and ModifyNetworkInterfaceAttribute (one
  EC2 bucket); ``attach`` = Attach/DetachNetworkInterface (EC2's default mutating bucket);
  ``describe`` = Describe* reads.
- ARM (``azure``): ``write`` = PUT of a NIC or scale-set instance; ``read`` = GETs.

A daemon operation (the name passed to ``CloudCaller.call``) is one or more cloud calls: its cost is
the tokens it takes from each class per attempt (``operation_cost``). Polls that repeat a Describe
while an attachment settles are not counted one by one; the table counts the calls every attempt
makes. An operation missing from the table costs one token of every class (never free).

Pure apart from the buckets' clock: the simulator can use ``operation_cost`` and ``node_share``.
"""

from __future__ import annotations

import math
import random
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from ipamd.cloud.limiter import FractionalBucket

EC2_CLASSES = ("assign", "interface", "attach", "describe")
ARM_CLASSES = ("write", "read")
CLASSES: Mapping[str, tuple[str, ...]] = {"aws": EC2_CLASSES, "sim": EC2_CLASSES, "azure": ARM_CLASSES}

# The account's (subscription's) bucket capacity per class: reference/scale-and-latency.md §1-2.
# EC2 "Request throttling for the Amazon EC2 API": Assign/Unassign 100, Create/Delete/Modify
# NetworkInterface 100, the default mutating bucket 50, filtered or paginated Describe* 100 (the
# daemon's describes are filtered). ARM since 2024, per subscription and principal: writes 200,
# reads 250.
ACCOUNT_CAPACITY: Mapping[str, float] = {
    "assign": 100.0,
    "interface": 100.0,
    "attach": 50.0,
    "describe": 100.0,
    "write": 200.0,
    "read": 250.0,
}

# Tokens per attempt, by class, of each operation (ipamd/cloud/aws/provider.py).
_EC2_COSTS: Mapping[str, Mapping[str, int]] = {
    "instance_limits": {"describe": 1},  # DescribeInstanceTypes, once per process
    "list_interfaces": {"describe": 1},  # DescribeNetworkInterfaces (filtered, paginated)
    # Describe (free device index) + Create + Attach + Modify (DeleteOnTermination) + Describe (attached)
    "attach_interface": {"describe": 2, "interface": 2, "attach": 1},
    # Describe + Detach + Describe (detached) + Delete
    "detach_interface": {"describe": 2, "attach": 1, "interface": 1},
    "assign_ips": {"describe": 1, "assign": 1},  # Describe + AssignPrivateIpAddresses
    "assign_prefixes": {"describe": 1, "assign": 1},
    "release_ips": {"assign": 1},  # UnassignPrivateIpAddresses
    "release_prefixes": {"assign": 1},
    "leaked_interfaces": {"describe": 1},
    "delete_leaked": {"describe": 1, "interface": 1},  # one Delete per leaked ENI: at least one
}
# ipamd/cloud/azure/provider.py: NICs are never attached or detached, prefixes never held, the
# limits come from the NICs found at start; those operations make no call.
_ARM_COSTS: Mapping[str, Mapping[str, int]] = {
    "instance_limits": {},
    "list_interfaces": {"read": 1},  # GET of the NICs (one list for a scale-set instance)
    "attach_interface": {},
    "detach_interface": {},
    "assign_ips": {"read": 1, "write": 1},  # GET, then PUT with If-Match (coalesced per NIC)
    "release_ips": {"read": 1, "write": 1},
    "assign_prefixes": {},
    "release_prefixes": {},
}
OPERATION_COSTS: Mapping[str, Mapping[str, Mapping[str, int]]] = {
    "aws": _EC2_COSTS,
    "sim": _EC2_COSTS,
    "azure": _ARM_COSTS,
}


def operation_cost(provider: str, operation: str) -> Mapping[str, int]:
    """Tokens one attempt of ``operation`` takes per class on ``provider`` (aws, azure, sim).

    An operation the table does not know costs one token of every class of the provider.
    """
    cost = OPERATION_COSTS[provider].get(operation)
    if cost is None:
        return dict.fromkeys(CLASSES[provider], 1)
    return cost


@dataclass(frozen=True, slots=True)
class ClassShare:
    """One node's share of one class: calls per second, and the burst it may make."""

    rate: float
    capacity: float


def node_share(budget: Mapping[str, float], nodes: int) -> dict[str, ClassShare]:
    """Each budgeted class's share for one node of ``nodes``: budget / N, account capacity / N."""
    if isinstance(nodes, bool) or not isinstance(nodes, int) or nodes < 1:
        raise ValueError(f"nodes must be an integer >= 1, got {nodes!r}")
    return {cls: ClassShare(rate / nodes, ACCOUNT_CAPACITY[cls] / nodes) for cls, rate in budget.items()}


def reconcile_floor(shares: Mapping[str, ClassShare], provider: str) -> float | None:
    """The shortest RECONCILE_INTERVAL whose reconciles (``list_interfaces``) take at most half of
    this node's share of their class, leaving the rest to the pool's own calls; None when the class
    is not budgeted."""
    floors = [
        2.0 * tokens / shares[cls].rate
        for cls, tokens in operation_cost(provider, "list_interfaces").items()
        if cls in shares
    ]
    return max(floors, default=None)


def check_budget(budget: Mapping[str, float], provider: str) -> None:
    """ValueError naming what is allowed when a class is not ``provider``'s or a rate is not > 0."""
    allowed = CLASSES.get(provider)
    if allowed is None:
        raise ValueError(f"no action classes for provider {provider!r}")
    wrong = [cls for cls in budget if cls not in allowed]
    if wrong:
        raise ValueError(
            f"classes of CLOUD_PROVIDER={provider}: {', '.join(allowed)} (not {', '.join(wrong)})"
        )
    bad = [cls for cls, rate in budget.items() if not (math.isfinite(rate) and rate > 0)]
    if bad:
        raise ValueError(f"calls per second > 0 for every class ({', '.join(bad)})")


class ClusterBudget:
    """This node's share of the cluster-wide budget: one ``FractionalBucket`` per budgeted class.

    Thread-safe: ``CloudCaller`` reserves from worker threads, the node counter calls
    ``set_nodes`` from its own, introspection and metrics read ``public``.
    """

    def __init__(
        self,
        budget: Mapping[str, float],
        provider: str,
        *,
        nodes: int,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
    ) -> None:
        check_budget(budget, provider)
        self.provider = provider
        self.budget = dict(budget)
        self._lock = threading.Lock()
        self._nodes = nodes
        self._closed = threading.Event()
        draw = (rng or random.Random()).random
        self._buckets = {  # each class on a phase of its own: nodes started together call apart
            cls: FractionalBucket(share.rate, share.capacity, clock=clock, fill=draw())
            for cls, share in node_share(self.budget, nodes).items()
        }

    def close(self) -> None:
        """The daemon is stopping: callers waiting for tokens give up (``CloudCaller``)."""
        self._closed.set()

    @property
    def closed(self) -> bool:
        return self._closed.is_set()

    @property
    def nodes(self) -> int:
        """The node count the shares are computed from now."""
        with self._lock:
            return self._nodes

    def set_nodes(self, nodes: int) -> dict[str, ClassShare]:
        """Share the budget among ``nodes`` from now on; waiting callers keep their place."""
        shares = node_share(self.budget, nodes)
        with self._lock:
            self._nodes = nodes
            for cls, share in shares.items():
                self._buckets[cls].set_rate(share.rate, share.capacity)
        return shares

    def shares(self) -> dict[str, ClassShare]:
        with self._lock:
            return {cls: ClassShare(b.rate, b.capacity) for cls, b in self._buckets.items()}

    def busy(self) -> bool:
        """Whether callers wait for this node's share now (a class's bucket is in debt)."""
        with self._lock:
            buckets = list(self._buckets.values())
        return any(b.tokens() < 0 for b in buckets)

    def reserve(self, operation: str) -> list[tuple[FractionalBucket, float]]:
        """Take one attempt's tokens of ``operation`` from each budgeted class; the tickets."""
        cost = operation_cost(self.provider, operation)
        return [
            (self._buckets[cls], self._buckets[cls].reserve(n))
            for cls, n in cost.items()
            if cls in self._buckets
        ]

    @staticmethod
    def wait_for(tickets: list[tuple[FractionalBucket, float]]) -> float:
        """Seconds until every ticket's tokens are earned (0.0: now)."""
        return max((bucket.wait_for(ticket) for bucket, ticket in tickets), default=0.0)

    def public(self) -> dict[str, Any]:
        """Per class: the cluster budget, this node's rate and capacity, the tokens it holds now
        (negative: owed to callers waiting)."""
        with self._lock:
            buckets = dict(self._buckets)
        return {
            cls: {
                "budget": self.budget[cls],
                "rate": b.rate,
                "capacity": b.capacity,
                "tokens": round(b.tokens(), 4),
            }
            for cls, b in buckets.items()
        }


# The node count's poll (ipamd.k8s.nodecount; the simulator paces its nodes' polls with the same):
POLL_BACKOFF_MIN = 0.8
POLL_JITTER = 0.2  # a successful poll waits interval x [0.8, 1.2)


def next_poll_in(interval: float, failures: int, draw: float, retry_after: float | None = None) -> float:
    """Seconds to the next poll for a uniform ``draw`` in [0, 1).

    After a success (``failures`` 0): ``interval`` jittered +-20%. After ``failures`` failed polls in a
    row: ``0.8 * 2**(failures-1)`` jittered x[0.5, 1.5), at most ``interval``, at least ``retry_after``.
    """
    if failures == 0:
        return interval * (1.0 - POLL_JITTER + 2 * POLL_JITTER * draw)
    delay = min(interval, POLL_BACKOFF_MIN * 2.0 ** min(failures - 1, 32) * (0.5 + draw))
    if retry_after is not None and retry_after > delay:
        delay = retry_after
    return delay
