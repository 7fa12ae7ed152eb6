"""``cloud-cni max-pods INSTANCE_TYPE``: the EKS max-pods calculator, from the shipped limits table.

No cloud call: the limits (ENIs, IPv4 per ENI, Nitro) and vCPUs come from
``ipamd.cloud.aws.limits`` and the arithmetic from ``ipamd.pool.maxpods`` (the function the daemon's
pool uses). Prints one number: by default the calculator's recommendation (capped at 110, or 250
above 30 vCPUs); ``--max-allowed`` the uncapped maximum; ``--explain`` adds the formula.

Wiring into ``ipamd/cli.py``: ``add_max_pods_parser(sub)`` next to the other subparsers, and
``if args.command == "max-pods": return run_max_pods(args)``.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from ipamd.pool.maxpods import CEILING_HIGH_CPU, CEILING_LOW_CPU, HIGH_CPU_ABOVE, MaxPods, explain_max_pods

__all__ = ["add_max_pods_parser", "run_max_pods"]

PROG = "cloud-cni max-pods"


def _positive(raw: str) -> int:
    try:
        value = int(raw, 10)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{raw!r} is not an integer >= 1") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{raw!r} is not an integer >= 1")
    return value


def _configure(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument("instance_type", nargs="?", metavar="INSTANCE_TYPE", help="e.g. m5.large")
    parser.add_argument(
        "--prefix-delegation",
        action="store_true",
        help="ENABLE_PREFIX_DELEGATION: /28 prefixes (applies on Nitro instance types only)",
    )
    parser.add_argument(
        "--custom-networking",
        action="store_true",
        help="AWS_VPC_K8S_CNI_CUSTOM_NETWORK_CFG: the primary ENI carries no pod addresses",
    )
    parser.add_argument(
        "--cpu-count",
        type=_positive,
        metavar="N",
        help="vCPUs for the recommendation (default: the instance type's, from the shipped table)",
    )
    parser.add_argument("--max-pods-cap", type=_positive, metavar="N", help="never answer more than N")
    parser.add_argument(
        "--max-allowed",
        action="store_true",
        help="the maximum the interfaces allow, without the 110/250 recommendation (the daemon's default)",
    )
    parser.add_argument("--explain", action="store_true", help="also print how the number is made")
    parser.add_argument("--list", action="store_true", help="list the instance types the table knows")
    return parser


def add_max_pods_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> argparse.ArgumentParser:
    """Register ``max-pods`` on the ``cloud-cni`` subparsers."""
    parser = sub.add_parser(
        "max-pods",
        help="max pods of an AWS instance type, as the EKS max-pods calculator computes it (no cloud call)",
        description="Print the max pods of INSTANCE_TYPE from the shipped limits table, as "
        "max-pods-calculator.sh computes it: ENIs x (IPv4 per ENI - 1) + 2, x16 per slot with prefix "
        f"delegation, one ENI fewer with custom networking, then at most {CEILING_LOW_CPU} "
        f"({CEILING_HIGH_CPU} above {HIGH_CPU_ABOVE} vCPUs) unless --max-allowed.",
    )
    return _configure(parser)


def make_parser() -> argparse.ArgumentParser:
    return _configure(
        argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0] if __doc__ else None)
    )


def run_max_pods(args: argparse.Namespace | Sequence[str] | None = None) -> int:
    """Run the command on parsed ``args`` (from ``cloud-cni``'s parser) or on an argv list."""
    if args is None or not isinstance(args, argparse.Namespace):
        args = make_parser().parse_args(None if args is None else list(args))
    from ipamd.cloud.aws.limits import KNOWN_LIMITS, KNOWN_VCPUS

    if args.list:
        lines = []
        for known in sorted(KNOWN_LIMITS, key=_type_order):
            entry = KNOWN_LIMITS[known]
            nitro = "nitro" if entry.prefix_delegation else "xen"
            lines.append(
                f"{known}\t{entry.max_interfaces} ENIs x {entry.ipv4_per_interface} IPv4\t"
                f"{KNOWN_VCPUS[known]} vCPUs\t{nitro}"
            )
        _emit(lines)
        return 0
    name = args.instance_type
    if not name:
        print(f"{PROG}: INSTANCE_TYPE is required (`{PROG} --list` lists the known types)", file=sys.stderr)
        return 2
    limits = KNOWN_LIMITS.get(name)
    if limits is None:
        print(
            f"{PROG}: unknown instance type {name!r}: not in the shipped table "
            f"(`{PROG} --list` lists the {len(KNOWN_LIMITS)} known types)",
            file=sys.stderr,
        )
        return 2
    cpu_count = None if args.max_allowed else (args.cpu_count or KNOWN_VCPUS[name])
    result = explain_max_pods(
        limits,
        prefix_delegation=args.prefix_delegation,
        custom_networking=args.custom_networking,
        cpu_count=cpu_count,
        cap=args.max_pods_cap,
    )
    lines = [str(result.value)]
    if args.explain:
        lines += _explain(name, args, result, cpu_count)
    _emit(lines)
    return 0


def _emit(lines: list[str]) -> None:
    """Print; a reader that went away (``| head``) is not an error worth a traceback."""
    try:
        sys.stdout.write("".join(line + "\n" for line in lines))
        sys.stdout.flush()
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # quiet the exit-time flush


def _explain(name: str, args: argparse.Namespace, r: MaxPods, cpu_count: int | None) -> list[str]:
    from ipamd.cloud.aws.limits import KNOWN_LIMITS

    limits = KNOWN_LIMITS[name]
    lines = [f"{name}: {limits.max_interfaces} ENIs x {limits.ipv4_per_interface} IPv4 addresses per ENI"]
    enis = f"{limits.max_interfaces}"
    if r.custom_networking:
        enis = f"({limits.max_interfaces} - 1)"
        lines.append("custom networking: the primary ENI carries no pod addresses (one ENI fewer)")
    slots = f"({limits.ipv4_per_interface} - 1)"
    if r.prefix_delegation:
        slots += " x 16"
        lines.append("prefix delegation: every secondary slot holds a /28 prefix of 16 addresses")
    elif args.prefix_delegation:
        lines.append(f"prefix delegation asked for, but {name} is not a Nitro type: secondary IPs")
    lines.append(f"allowed = {enis} x {slots} + 2 = {r.allowed}")
    if r.ceiling is not None:
        lines.append(
            f"recommended: at most {r.ceiling} ({cpu_count} vCPUs; "
            f"{CEILING_HIGH_CPU} above {HIGH_CPU_ABOVE}, else {CEILING_LOW_CPU})"
        )
    if r.cap is not None:
        lines.append(f"capped at {r.cap} (--max-pods-cap)")
    lines.append(f"max pods = {r.value}")
    return lines


def _type_order(name: str) -> tuple[str, int, str]:
    family, _, size = name.partition(".")
    order = ["nano", "micro", "small", "medium", "large", "xlarge"]
    if size in order:
        rank = order.index(size)
    elif size.endswith("xlarge") and size[:-6].isdigit():
        rank = 5 + int(size[:-6])
    else:
        rank = 1000
    return (family, rank, size)


if __name__ == "__main__":
    raise SystemExit(run_max_pods(sys.argv[1:]))
