"""Workload files: the schema (YAML or JSON), loading with errors that name the field, and scaling.

A workload says which nodes the cluster starts with and where pods come from; the simulator turns it
into a lazy stream of events (``ipamd.sim.sources``). docs/simulation.md documents every field; the
shipped workloads in ``ipamd/sim/workloads/`` are examples of each source. pydantic validates, so a
typo is an error (``extra="forbid"``) and every error names its field (``sources.1.lifetime.mean``).

Durations are seconds, as a number or as ``90s``, ``5m``, ``1h30m``. A distribution is a number (a
fixed value) or ``{dist: fixed|uniform|exponential|lognormal, ...}``.
"""

from __future__ import annotations

import ipaddress
import itertools
import json
import math
import random
import re
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, model_validator

from ipamd.cloud.sim import INSTANCE_TYPES

__all__ = [
    "Dist",
    "NodeGroup",
    "Workload",
    "WorkloadError",
    "load_workload",
    "parse_duration",
    "scaled",
    "shipped_workloads",
    "with_group_fields",
]

DEFAULT_WORKLOAD = "default"
_DURATION = re.compile(r"^(?:(\d+(?:\.\d+)?)h)?(?:(\d+(?:\.\d+)?)m)?(?:(\d+(?:\.\d+)?)s)?$")


class WorkloadError(ValueError):
    """A workload (or events) file cannot be used; the message names the file and the field."""


def parse_duration(value: object) -> float:
    """Seconds from a number or a string such as ``90``, ``90s``, ``5m``, ``1h30m``."""
    if isinstance(value, bool):
        raise ValueError("a duration: seconds, or a string such as 90s, 5m, 1h30m")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str):
        text = value.strip()
        try:
            seconds = float(text)
        except ValueError:
            match = _DURATION.match(text)
            if not text or match is None or not any(match.groups()):
                raise ValueError("a duration: seconds, or a string such as 90s, 5m, 1h30m") from None
            h, m, s = (float(g) if g else 0.0 for g in match.groups())
            seconds = h * 3600 + m * 60 + s
    else:
        raise ValueError("a duration: seconds, or a string such as 90s, 5m, 1h30m")
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError("a duration >= 0")
    return seconds


Duration = Annotated[float, BeforeValidator(parse_duration)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Fixed(_Model):
    dist: Literal["fixed"] = "fixed"
    value: Duration

    @property
    def mean(self) -> float:
        return self.value

    def sample(self, rng: random.Random) -> float:
        return self.value


class Uniform(_Model):
    dist: Literal["uniform"]
    low: Duration
    high: Duration

    @model_validator(mode="after")
    def _ordered(self) -> Uniform:
        if self.high < self.low:
            raise ValueError("high must be >= low")
        return self

    @property
    def mean(self) -> float:
        return (self.low + self.high) / 2

    def sample(self, rng: random.Random) -> float:
        return rng.uniform(self.low, self.high)


class Exponential(_Model):
    dist: Literal["exponential"]
    mean_: Duration = Field(alias="mean", gt=0)

    @property
    def mean(self) -> float:
        return self.mean_

    def sample(self, rng: random.Random) -> float:
        return rng.expovariate(1.0 / self.mean_)


class LogNormal(_Model):
    dist: Literal["lognormal"]
    median: Duration = Field(gt=0)
    sigma: float = Field(ge=0)

    @property
    def mean(self) -> float:
        return self.median * math.exp(self.sigma**2 / 2)

    def sample(self, rng: random.Random) -> float:
        return rng.lognormvariate(math.log(self.median), self.sigma)


def _fixed_shorthand(value: object) -> object:
    if isinstance(value, int | float | str) and not isinstance(value, bool):
        return {"dist": "fixed", "value": value}
    return value


Dist = Annotated[
    Fixed | Uniform | Exponential | LogNormal,
    Field(discriminator="dist"),
    BeforeValidator(_fixed_shorthand),
]


def count_of(dist: Fixed | Uniform | Exponential | LogNormal, rng: random.Random, *, least: int = 0) -> int:
    """A whole number drawn from ``dist`` (replicas, pods), at least ``least``."""
    return max(least, round(dist.sample(rng)))


def _cidr(value: object) -> str:
    try:
        net = ipaddress.IPv4Network(str(value), strict=True)
    except ValueError:
        raise ValueError("an IPv4 CIDR such as 10.0.0.0/16 (host bits zero)") from None
    if net.prefixlen > 28:
        raise ValueError("a /28 or larger")
    return str(net)


Cidr = Annotated[str, BeforeValidator(_cidr)]


def _instance_type(value: object) -> str:
    if value not in INSTANCE_TYPES:
        raise ValueError("one of " + ", ".join(sorted(INSTANCE_TYPES)))
    return str(value)


InstanceType = Annotated[str, BeforeValidator(_instance_type)]


class NodeGroup(_Model):
    """Nodes alike: the cluster's initial ones (``count``), and those sources add to the group."""

    name: str = Field(pattern=r"^[a-z0-9]([a-z0-9-]{0,40}[a-z0-9])?$")
    count: int = Field(ge=0)
    instance_type: InstanceType = "m5.large"
    azure_instance_type: InstanceType = "azure-nic-256"  # the same node when the policy is azure's
    max_pods: int | None = Field(default=None, ge=1)  # kubelet's; unset: the instance's default
    host_network_pods: int = Field(default=2, ge=0)  # of max_pods: kube-proxy, the CNI's own; no address
    subnets: list[Cidr] = Field(default_factory=lambda: ["10.0.0.0/16"], min_length=1)
    pods_per_node: Dist = Field(default_factory=lambda: Fixed(value=0))  # long-running, from the start


class Churn(_Model):
    """Pods created at a steady (Poisson) rate, each living a drawn lifetime."""

    kind: Literal["churn"]
    per_node_per_hour: float = Field(ge=0)
    lifetime: Dist
    initial: bool = True  # start with the steady-state population (rate x mean lifetime)


class Rollouts(_Model):
    """Deployments rolled in bursts (a release train): waves of max_surge new pods, each wave's old
    pods deleted when the new ones are ready (wave_interval later)."""

    kind: Literal["rollouts"]
    deployments_per_1000_nodes: float = Field(gt=0)
    replicas: Dist
    bursts_every: Dist
    share_per_burst: float = Field(gt=0, le=1)
    spread: Dist = Field(default_factory=lambda: Uniform(dist="uniform", low=0, high=60))
    max_surge: float = Field(default=0.25, gt=0, le=1)
    wave_interval: Dist = Field(default_factory=lambda: Fixed(value=20))


class CronJobs(_Model):
    """Jobs started on a schedule, all at once: waves of short-lived pods."""

    kind: Literal["cronjobs"]
    every: Duration = Field(gt=0)
    offset: Duration = 0.0
    jobs_per_1000_nodes: float = Field(gt=0)
    parallelism: Dist
    duration: Dist
    start_jitter: Dist = Field(default_factory=lambda: Uniform(dist="uniform", low=0, high=10))


class ScaleUp(_Model):
    """Nodes added at once (a cluster autoscaler answering pending pods), the pods created with them."""

    kind: Literal["scale_up"]
    at: Duration
    nodes: int = Field(ge=1)
    group: str
    boot: Dist = Field(default_factory=lambda: Uniform(dist="uniform", low=40, high=90))
    pods_per_node: float = Field(ge=0)
    pod_lifetime: Dist | None = None


class Drain(_Model):
    """Nodes drained one after another (pods evicted and rescheduled), optionally replaced."""

    kind: Literal["drain"]
    at: Duration
    nodes: int = Field(ge=1)
    every: Duration = 30.0
    group: str
    replace: bool = True
    boot: Dist = Field(default_factory=lambda: Uniform(dist="uniform", low=40, high=90))


Source = Annotated[Churn | Rollouts | CronJobs | ScaleUp | Drain, Field(discriminator="kind")]


class Workload(_Model):
    name: str
    description: str = ""
    duration: Duration = Field(default=3600.0, gt=0)
    nodes: list[NodeGroup] = Field(min_length=1)
    sources: list[Source] = Field(default_factory=list)

    @model_validator(mode="after")
    def _consistent(self) -> Workload:
        names = [g.name for g in self.nodes]
        if len(set(names)) != len(names):
            raise ValueError(f"nodes: group names must be unique, got {names}")
        for index, source in enumerate(self.sources):
            group = getattr(source, "group", None)
            if group is not None and group not in names:
                raise ValueError(f"sources.{index}.group: {group!r} is not a node group ({', '.join(names)})")
        nets = sorted({ipaddress.IPv4Network(c) for g in self.nodes for c in g.subnets})
        for a, b in itertools.pairwise(nets):
            if a.overlaps(b):
                raise ValueError(f"nodes: subnets {a} and {b} overlap (give the same CIDR to share one)")
        for index, group in enumerate(self.nodes):
            if group.max_pods is not None and group.max_pods <= group.host_network_pods:
                raise ValueError(f"nodes.{index}.max_pods: must be above host_network_pods")
        return self

    @property
    def initial_nodes(self) -> int:
        return sum(g.count for g in self.nodes)


def shipped_workloads() -> list[str]:
    """Names of the workloads shipped in ipamd/sim/workloads/."""
    folder = resources.files("ipamd.sim") / "workloads"
    return sorted(p.name.rsplit(".", 1)[0] for p in folder.iterdir() if p.name.endswith(".yaml"))


def load_workload(spec: str) -> Workload:
    """A shipped workload by name, or a .yaml/.yml/.json file; WorkloadError naming what is wrong."""
    if "/" not in spec and "." not in spec.rsplit("/", 1)[-1]:
        if spec not in shipped_workloads():
            raise WorkloadError(
                f"no workload {spec!r}: shipped ones are {', '.join(shipped_workloads())}, "
                "or give a .yaml or .json file"
            )
        text = (resources.files("ipamd.sim") / "workloads" / f"{spec}.yaml").read_text(encoding="utf-8")
        return parse_workload(text, source=f"workload {spec}", json_text=False)
    path = Path(spec)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise WorkloadError(f"{spec}: cannot read: {reason}") from None
    return parse_workload(text, source=spec, json_text=path.suffix.lower() == ".json")


def parse_workload(text: str, *, source: str, json_text: bool) -> Workload:
    try:
        doc: Any = json.loads(text) if json_text else yaml.safe_load(text)
    except (ValueError, yaml.YAMLError) as exc:
        raise WorkloadError(f"{source}: not valid {'JSON' if json_text else 'YAML'}: {exc}") from None
    if not isinstance(doc, dict):
        raise WorkloadError(f"{source}: a workload is a mapping with name, nodes and sources")
    try:
        return Workload.model_validate(doc)
    except ValidationError as exc:
        raise _error(exc, source) from None


def _error(exc: ValidationError, source: str) -> WorkloadError:
    """One line per error, each naming the source and the field's path."""
    lines = []
    for error in exc.errors(include_url=False):
        where = ".".join(str(part) for part in error["loc"]) or "(top level)"
        lines.append(f"{source}: {where}: {error['msg']}")
    return WorkloadError("\n".join(lines))


def with_group_fields(workload: Workload, fields: dict[str, Any], *, source: str) -> Workload:
    """The workload with ``fields`` set in every node group (``--instance-type``, ``--subnet-cidr``)."""
    try:
        groups = [NodeGroup.model_validate({**g.model_dump(), **fields}) for g in workload.nodes]
        return Workload.model_validate({**workload.model_dump(by_alias=True), "nodes": groups})
    except ValidationError as exc:
        raise _error(exc, source) from None


def scaled(workload: Workload, nodes: int) -> Workload:
    """The workload with ``nodes`` initial nodes, shared out over the groups in proportion (largest
    remainders). Rates per node or per 1,000 nodes follow; absolute counts (a scale-up's nodes) do not."""
    total = workload.initial_nodes
    if nodes < 1:
        raise WorkloadError("--nodes must be at least 1")
    if total == 0:
        raise WorkloadError(f"workload {workload.name}: starts with no node, so --nodes cannot scale it")
    shares = [g.count * nodes / total for g in workload.nodes]
    counts = [math.floor(s) for s in shares]
    by_remainder = sorted(range(len(shares)), key=lambda i: (counts[i] - shares[i], i))
    for i in by_remainder[: nodes - sum(counts)]:
        counts[i] += 1
    groups = [g.model_copy(update={"count": c}) for g, c in zip(workload.nodes, counts, strict=True)]
    return workload.model_copy(update={"nodes": groups})
