"""``cloud-cni simulate`` and ``cloud-cni plan``: parsers and handlers, added to ``ipamd.cli``.

Only argparse is imported at module level: ``ipamd.cli`` imports this module to build its parser on
every command, and the simulator (pydantic, PyYAML, the pool) loads only when one of these runs.
A setting, workload or argument that cannot be used is one line on stderr and exit 2, as for the
daemon; the progress bar (tqdm) is on stderr, only on a terminal and without ``--quiet``.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ipamd.sim.metrics import RunResult
    from ipamd.sim.settings import SimPolicy
    from ipamd.sim.sources import WorkloadEvent

__all__ = ["add_parsers", "run"]

_EXAMPLE_POLICY = "WARM_IP_TARGET=5,MINIMUM_IP_TARGET=10"


def _positive(kind: type[int] | type[float]) -> Callable[[str], Any]:
    def parse(raw: str) -> Any:
        try:
            value = kind(raw)
        except ValueError:
            raise argparse.ArgumentTypeError(f"a number > 0, got {raw!r}") from None
        if not value > 0:
            raise argparse.ArgumentTypeError(f"a number > 0, got {raw!r}")
        return value

    return parse


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--workload",
        default="default",
        metavar="NAME|FILE",
        help="a shipped workload (default, steady-churn, rollout-bursts, cronjob-waves, scale-up-1000, "
        "node-drain) or a .yaml/.json file (docs/simulation.md has the schema)",
    )
    parser.add_argument(
        "--events",
        metavar="FILE.csv",
        help="replay a CSV of pod events (time,event,pod,node) instead of a workload",
    )
    parser.add_argument("--nodes", type=_positive(int), help="initial nodes (the workload's groups scaled)")
    parser.add_argument("--hours", type=_positive(float), help="simulated hours (default: the workload's)")
    parser.add_argument("--seed", type=int, default=1, help="random seed: same seed, same result (default 1)")
    parser.add_argument(
        "--instance-type", help="every node group's instance type (ipamd.cloud.sim.INSTANCE_TYPES)"
    )
    parser.add_argument("--json", action="store_true", help="print the results as one JSON document")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def add_parsers(sub: Any) -> None:
    """Add ``simulate`` and ``plan`` to ``cloud-cni``'s subcommands."""
    simulate = sub.add_parser(
        "simulate",
        help="compare warm-pool policies on a simulated cluster (the daemon's own pool code)",
        description="Run N simulated nodes (the daemon's datastore and policy) against a simulated cloud "
        "(account-wide API buckets, latencies, subnets) in simulated time, once per policy on the same "
        "workload and seed, and compare: CNI waits, idle addresses, subnet use, cloud calls, throttling.",
    )
    _common(simulate)
    simulate.add_argument(
        "--policy",
        action="append",
        metavar="NAME=VALUE,...",
        help=f"a policy as daemon settings, e.g. {_EXAMPLE_POLICY!r}; repeat to compare several "
        "(default: WARM_ENI_TARGET=1, WARM_IP_TARGET=5, MINIMUM_IP_TARGET=10+WARM_IP_TARGET=2, prefix "
        "delegation with WARM_PREFIX_TARGET=1, Azure with batches of 16)",
    )
    simulate.add_argument(
        "--subnet-cidr",
        action="append",
        metavar="CIDR",
        help="replace every node group's subnets with these (repeatable)",
    )
    simulate.add_argument("--plot", metavar="DIR", help="write idle.png, waits.png and subnet.png into DIR")
    simulate.add_argument(
        "--sample-interval",
        type=_positive(float),
        default=60.0,
        metavar="SECONDS",
        help="seconds between samples of idle addresses (default 60)",
    )
    plan = sub.add_parser(
        "plan",
        help="capacity planning: the subnet a cluster needs at its peak under a policy",
        description="Simulate N nodes of an instance type under one policy and workload in one subnet "
        "too large to fill; print the addresses in use at the peak, the smallest subnet that holds them "
        "(with the cloud's 5 reserved addresses) and the headroom of --subnet-cidr.",
    )
    _common(plan)
    plan.add_argument(
        "--policy",
        default="WARM_ENI_TARGET=1",
        metavar="NAME=VALUE,...",
        help="one policy (default WARM_ENI_TARGET=1)",
    )
    plan.add_argument("--subnet-cidr", metavar="CIDR", help="the subnet to check the peak against")


def run(args: argparse.Namespace) -> int:
    """The handler of both commands."""
    from ipamd.errors import ConfigError
    from ipamd.sim.workload import WorkloadError

    prog = f"cloud-cni {args.command}"
    try:
        if args.command == "plan":
            return _plan(args)
        return _simulate(args)
    except (ConfigError, WorkloadError) as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        return 2


class _Setup:
    """The workload and its events as both commands take them from the arguments."""

    def __init__(
        self, args: argparse.Namespace, *, subnets: list[str] | None, sample_interval: float = 60.0
    ) -> None:
        from ipamd.sim import sources
        from ipamd.sim.workload import (
            NodeGroup,
            Workload,
            WorkloadError,
            load_workload,
            scaled,
            with_group_fields,
        )

        self.seed = args.seed
        self.replay = args.events
        self.sample_interval = sample_interval
        overrides: dict[str, Any] = {}
        if args.instance_type is not None:
            from ipamd.cloud.sim import INSTANCE_TYPES

            if args.instance_type not in INSTANCE_TYPES:
                raise WorkloadError(f"--instance-type: one of {', '.join(sorted(INSTANCE_TYPES))}")
            overrides["instance_type"] = overrides["azure_instance_type"] = args.instance_type
        if subnets:
            overrides["subnets"] = subnets
        flags = " / ".join(
            flag
            for flag, key in (("--instance-type", "instance_type"), ("--subnet-cidr", "subnets"))
            if key in overrides
        )
        if self.replay:
            if args.nodes is not None:
                raise WorkloadError("--nodes does not apply to --events: the file names its nodes")
            names, last = sources.replay_span(self.replay)
            group = NodeGroup(name=sources.REPLAY_GROUP, count=0)
            workload = Workload(name=self.replay, duration=max(last, 1.0), nodes=[group])
            self.nodes = len(names)
        else:
            workload = load_workload(args.workload)
            if args.nodes is not None:
                workload = scaled(workload, args.nodes)
            self.nodes = workload.initial_nodes
        self.workload = with_group_fields(workload, overrides, source=flags) if overrides else workload
        self.seconds = args.hours * 3600 if args.hours is not None else self.workload.duration

    def stream(self) -> Iterator[WorkloadEvent]:
        from ipamd.sim import sources

        if self.replay:
            return sources.replay(self.replay, until=self.seconds)
        return sources.events(self.workload, seed=self.seed, until=self.seconds)

    def run(self, policy: SimPolicy, progress: Callable[[float], None] | None) -> RunResult:
        from ipamd.sim.cluster import simulate

        return simulate(
            self.workload,
            policy,
            stream=self.stream(),
            seconds=self.seconds,
            seed=self.seed,
            nodes=self.nodes,
            sample_interval=self.sample_interval,
            progress=progress,
        )


class _Progress:
    """A tqdm bar over simulated seconds of every run, on stderr; nothing when off."""

    def __init__(self, *, total: float, enabled: bool) -> None:
        self._bar: Any = None
        self._done = 0.0
        self._base = 0.0
        if enabled:
            from tqdm import tqdm

            self._bar = tqdm(
                total=round(total), unit="sim s", file=sys.stderr, dynamic_ncols=True, leave=False
            )

    def start(self, label: str) -> Callable[[float], None] | None:
        if self._bar is None:
            return None
        self._base = self._done
        self._bar.set_description(label[:40])
        return self._update

    def _update(self, now: float) -> None:
        target = self._base + now
        if target > self._done:
            self._bar.update(round(target) - round(self._done))
            self._done = target

    def finish_run(self, seconds: float) -> None:
        if self._bar is not None:
            self._update(seconds)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


def _policies(texts: list[str]) -> list[SimPolicy]:
    from ipamd.sim.settings import parse_policy

    return [parse_policy(text) for text in texts]


def _simulate(args: argparse.Namespace) -> int:
    import json

    from ipamd.sim import report
    from ipamd.sim.settings import DEFAULT_POLICIES

    policies = _policies(args.policy or list(DEFAULT_POLICIES))
    setup = _Setup(args, subnets=args.subnet_cidr, sample_interval=args.sample_interval)
    started = time.perf_counter()
    bar = _Progress(total=setup.seconds * len(policies), enabled=not args.quiet and sys.stderr.isatty())
    results = []
    try:
        for policy in policies:
            results.append(setup.run(policy, bar.start(policy.name)))
            bar.finish_run(setup.seconds)
    finally:
        bar.close()
    wall = time.perf_counter() - started
    hours = setup.seconds / 3600
    title = f"{setup.workload.name}: {setup.nodes:,} nodes, {hours:g} h simulated, seed {setup.seed}"
    if args.plot:
        try:
            report.plot(results, args.plot, title=title)
        except ImportError:
            print(
                "cloud-cni simulate: --plot needs matplotlib (pip install 'cloud-cni[sim]')", file=sys.stderr
            )
            return 2
    if args.json:
        doc = report.document(results, nodes=setup.nodes, sim_seconds=setup.seconds, wall_seconds=wall)
        print(json.dumps(doc, indent=2))
    else:
        print(report.table(results, title=title + f" ({wall:.1f} s)"), end="")
    return 0


def _plan(args: argparse.Namespace) -> int:
    import ipaddress
    import json

    from ipamd.errors import ConfigError
    from ipamd.sim import planner

    if args.subnet_cidr is not None:
        try:
            ipaddress.IPv4Network(args.subnet_cidr, strict=True)
        except ValueError:
            raise ConfigError("--subnet-cidr", args.subnet_cidr, "an IPv4 CIDR such as 10.0.0.0/19") from None
    (policy,) = _policies([args.policy])
    setup = _Setup(args, subnets=[planner.PLANNING_SUBNET])
    bar = _Progress(total=setup.seconds, enabled=not args.quiet and sys.stderr.isatty())
    try:
        result = setup.run(policy, bar.start(policy.name))
    finally:
        bar.close()
    plan = planner.plan_subnet(
        peak_used=result.subnet_peak_used,
        peak_at=result.subnet_peak_at,
        peak_blocks=result.subnet_peak_blocks,
        cidr=args.subnet_cidr,
    )
    types = sorted(
        {
            g.azure_instance_type if policy.provider == "azure" else g.instance_type
            for g in setup.workload.nodes
        }
    )
    if args.json:
        doc = {
            "nodes": setup.nodes,
            "instance_types": types,
            "workload": setup.workload.name,
            "policy": policy.name,
            "sim_seconds": setup.seconds,
            "wall_seconds": round(result.wall_seconds, 3),
            "pods_started": result.pods_started,
            **plan.document(),
        }
        print(json.dumps(doc, indent=2))
        return 0
    at = time.strftime("%H:%M:%S", time.gmtime(plan.peak_at))
    lines = [
        f"cloud-cni plan: {setup.nodes:,} nodes of {', '.join(types)}, workload {setup.workload.name}, "
        f"policy {policy.name}, {setup.seconds / 3600:g} h simulated (seed {setup.seed})",
        f"addresses in use at the peak: {plan.peak_used:,} at {at} (pods' and the interfaces' own), "
        f"in {plan.peak_blocks:,} /28 blocks",
        f"smallest subnet for the peak: /{plan.prefix_length} ({plan.needed_addresses:,} addresses, "
        f"{plan.needed_addresses - 5:,} usable after the 5 reserved)",
    ]
    if plan.cidr is not None:
        verdict = (
            f"{plan.headroom:,} addresses to spare at the peak ({100 * plan.headroom / plan.usable:.1f}%)"
            if plan.fits
            else f"short by {-plan.headroom:,} at the peak: needs /{plan.prefix_length} or larger"
        )
        lines.append(f"{plan.cidr}: {plan.usable:,} usable; {verdict}")
    print("\n".join(lines))
    return 0
