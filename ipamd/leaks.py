"""The leaked-interface sweep: a jittered periodic job that deletes this cluster's lost interfaces.

An interface is leaked when the daemon (on this or another node) created it and lost track of it:
a crash between create and attach, or an instance terminated before its interfaces were deleted.
The provider finds them by tag and age (older than ``min_age``, so an interface another daemon is
attaching right now is never taken); the sweep runs every LEAKED_ENI_CLEANUP_INTERVAL seconds with
up to 10% jitter, so a fleet of nodes does not sweep in step.
"""

from __future__ import annotations

import asyncio
import random
from typing import Any

import structlog

from ipamd.cloud.limiter import CloudCaller
from ipamd.errors import CloudError
from ipamd.metrics import Metrics

log = structlog.get_logger("ipamd.leaks")

MIN_AGE = 300.0  # seconds: never touch an interface younger than this


async def sweep_once(
    provider: Any,
    caller: CloudCaller,
    *,
    min_age: float = MIN_AGE,
    own_only: bool = False,
    metrics: Metrics | None = None,
) -> int:
    """One sweep. ``own_only`` with ``min_age=0`` is the start-up sweep of this node's own
    interfaces: before the pool manager runs, none of them is between create and attach."""
    if not hasattr(provider, "leaked_interfaces"):
        return 0
    leaked: list[str] = await asyncio.to_thread(
        caller.call,
        "leaked_interfaces",
        lambda: provider.leaked_interfaces(older_than=min_age, own_only=own_only),
    )
    if not leaked:
        return 0
    deleted: int = await asyncio.to_thread(
        caller.call, "delete_leaked", lambda: provider.delete_leaked(leaked)
    )
    log.warning("leaked_interfaces_deleted", found=leaked, deleted=deleted)
    if metrics:
        metrics.leaked_interfaces_deleted.inc(deleted)
    return deleted


async def sweep_forever(
    provider: Any,
    caller: CloudCaller,
    *,
    interval: float,
    stop: asyncio.Event,
    metrics: Metrics | None = None,
    rng: random.Random | None = None,
) -> None:
    if interval <= 0 or not hasattr(provider, "leaked_interfaces"):
        return
    rng = rng or random.Random()
    while not stop.is_set():
        delay = interval + rng.uniform(0, interval / 10)
        try:
            await asyncio.wait_for(stop.wait(), delay)
            return
        except TimeoutError:
            pass
        try:
            await sweep_once(provider, caller, metrics=metrics)
        except CloudError as exc:
            log.warning("leaked_interface_sweep_failed", error=str(exc))
