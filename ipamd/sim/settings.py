"""A simulated policy: env-style settings, parsed by the daemon's own ``Settings.from_env``.

``--policy "WARM_IP_TARGET=5,MINIMUM_IP_TARGET=10"`` means exactly what those variables mean to the
daemon: the same parser, the same defaults (Azure's included), the same ``ConfigError`` naming the
variable for a bad value. On top of that the simulator refuses, with a ``ConfigError`` as well, a name
that is no cloud-cni setting (a typo must not silently simulate the default) and a setting it does
not model (custom networking, say), so that every result is of the policy as written.

Splitting ``NAME=VALUE,NAME=VALUE``: an item that does not start with an upper-case ``NAME=`` continues
the previous value, so ``CLOUD_API_BUDGET=assign=4,interface=2`` is one setting.

``POOL_MODE=adaptive`` and ``CLOUD_API_BUDGET`` (with its node-count poll) are the daemon's settings
too; ``ipamd.sim.targets`` and ``ipamd.sim.node`` run the daemon's code for them.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

from ipamd.cloud.limiter import RetryPolicy
from ipamd.config import VARIABLES, Settings
from ipamd.errors import ConfigError
from ipamd.pool.model import WarmPoolTargets
from ipamd.sim.cloud import CLASSES
from ipamd.sim.targets import TargetsFactory, targets_factory

__all__ = ["BASE_ENV", "DEFAULT_POLICIES", "SIMULATED", "SimPolicy", "parse_policy", "split_settings"]

# What the reference default and the common alternatives are, compared by ``cloud-cni simulate``.
DEFAULT_POLICIES = (
    "WARM_ENI_TARGET=1",
    "WARM_IP_TARGET=5",
    "MINIMUM_IP_TARGET=10,WARM_IP_TARGET=2",
    "ENABLE_PREFIX_DELEGATION=true,WARM_PREFIX_TARGET=1",
    "CLOUD_PROVIDER=azure,WARM_IP_TARGET=8,IP_BATCH_SIZE=16",
    "POOL_MODE=adaptive",
)

BASE_ENV: Mapping[str, str] = MappingProxyType({"CLOUD_PROVIDER": "aws", "DATAPATH": "none"})

# The settings the simulated node honours. Every other daemon setting is refused: it would change
# nothing here and a result must not pretend otherwise.
SIMULATED = frozenset(
    {
        "CLOUD_PROVIDER",
        "WARM_ENI_TARGET",
        "WARM_IP_TARGET",
        "MINIMUM_IP_TARGET",
        "WARM_PREFIX_TARGET",
        "ENABLE_PREFIX_DELEGATION",
        "IP_BATCH_SIZE",
        "MAX_ENI",
        "MAX_PODS",
        "IP_COOLDOWN_PERIOD",
        "POOL_RELEASE_DELAY",
        "POOL_MIN_ACTION_INTERVAL",
        "ADD_WAIT_TIMEOUT",
        "COOLDOWN_OVERRIDE_WAIT",
        "CLOUD_API_RATE",
        "CLOUD_API_BURST",
        "GROWTH_PAUSE",
        "RECONCILE_INTERVAL",
        "STARTUP_TAINT",
        "STARTUP_TAINT_TIMEOUT",
        "CLOUD_API_BUDGET",
        "CLOUD_API_BUDGET_POLL_INTERVAL",
        "CLOUD_API_BUDGET_BUSY_POLL_INTERVAL",
        "CLOUD_API_BUDGET_ASSUMED_NODES",
        "POOL_MODE",
        "ADAPTIVE_WINDOW",
    }
)
_NAME = re.compile(r"^[A-Z][A-Z0-9_]*=")


@dataclass(frozen=True)
class SimPolicy:
    """One policy to simulate: ``name`` as written, the parsed settings and what the node needs."""

    name: str
    env: Mapping[str, str]  # the settings as given, on top of BASE_ENV
    settings: Settings
    targets: WarmPoolTargets  # the settings' targets; a node adds its own max pods
    retry: RetryPolicy
    budget: Mapping[str, float]  # CLOUD_API_BUDGET: class -> cluster-wide calls per second; empty: none
    targets_factory: TargetsFactory

    @property
    def provider(self) -> str:
        return self.settings.cloud_provider

    @property
    def startup_taint(self) -> bool:
        return bool(self.settings.startup_taint)


def split_settings(text: str) -> dict[str, str]:
    """``NAME=VALUE,NAME=VALUE`` as a dict, in order; ConfigError for an item that is not NAME=VALUE."""
    items: list[list[str]] = []
    for raw in text.split(","):
        item = raw.strip()
        if _NAME.match(item):
            name, _, value = item.partition("=")
            items.append([name, value])
        elif items and item:
            items[-1][1] += "," + item
        elif item or not items:
            raise ConfigError("--policy", text, "NAME=VALUE[,NAME=VALUE...] with daemon setting names")
    out: dict[str, str] = {}
    for name, value in items:
        if name in out:
            raise ConfigError(name, value, f"given once per policy (also {name}={out[name]!r})")
        out[name] = value.strip()
    return out


def parse_policy(text: str) -> SimPolicy:
    """The policy written as ``NAME=VALUE,...``; ConfigError naming the variable when it is not valid."""
    given = split_settings(text)
    known = {v.name for v in VARIABLES} | {"MY_NODE_NAME"}
    for name, value in given.items():
        if name not in known:
            raise ConfigError(name, value, "not a cloud-cni setting (docs/configuration.md lists them)")
        if name not in SIMULATED:
            modelled = ", ".join(sorted(SIMULATED))
            raise ConfigError(name, value, f"not modelled by the simulator, which models: {modelled}")
    env = {**BASE_ENV, **given}
    settings = Settings.from_env(env)  # the daemon's parser, defaults and checks
    if settings.cloud_provider not in CLASSES:
        raise ConfigError("CLOUD_PROVIDER", settings.cloud_provider, "aws or azure in a simulation")
    budget = settings.cloud_api_budget or {}
    return SimPolicy(
        name=text.strip(),
        env=MappingProxyType(given),
        settings=settings,
        targets=settings.targets(),
        retry=RetryPolicy(),  # the daemon's (ipamd.daemon builds its CloudCaller with the defaults)
        budget=MappingProxyType(budget),
        targets_factory=targets_factory(settings),
    )
