"""Windows datapath (DATAPATH=windows) against the fake HCN at zero latency: HCN calls per pod ADD and
per DEL, and the daemon-side ADD and DEL times, p50 and p99.

Runs ``WindowsDatapath.add_pod`` / ``del_pod`` (the code the daemon runs for every ADD and DEL) with
``FakeHcn`` (``HCN_BACKEND=fake``: its state in a file, as the daemon uses it) on a node with a primary
and a secondary interface, pods alternating between them, each in its own HCN namespace. The networks
are made by a first ADD on each interface (not timed, not counted). Goals (issue: Windows datapath):
2 HCN calls per ADD and 2 per DEL; ADD p50 <= 2 ms. The fake's own cost (a locked JSON state file) is
included in the times (it re-reads and rewrites its whole state file on every call, so it grows
with the endpoints it holds); the script also prints the ADD time outside the fake's calls.

    PYTHONPATH=. .venv/bin/python bench/bench_windows.py [--pods 110] [--rounds 3] [--dir DIR]

``--dir /dev/shm`` puts the fake's state on a tmpfs, as the daemon's default puts it (beside
CHECKPOINT_PATH, under /var/run, a tmpfs on nodes).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ipamd.datapath.windows.datapath import WindowsDatapath
from ipamd.datapath.windows.fake import FakeHcn
from ipamd.pool.model import (
    Assignment,
    AttachmentKey,
    ContainerID,
    IfName,
    InterfaceId,
    InterfaceView,
    PodRef,
)

NET = "10.0.0.0/20"
GOAL_CALLS = 2
GOAL_ADD_P50_MS = 2.0
PRIMARY = InterfaceView(
    InterfaceId("eni-0"), 0, True, "s", NET, "10.0.0.10", ("10.0.0.20",), (), "02:00:00:00:00:01"
)
SECONDARY = InterfaceView(
    InterfaceId("eni-1"), 1, False, "s", NET, "10.0.0.11", ("10.0.0.21",), (), "02:00:00:00:00:02"
)


class TimedFake(FakeHcn):
    """The fake, with the time spent inside its protocol calls summed (its locked state file)."""

    inside = 0.0

    def _call(self, method: str, apply: Any) -> Any:
        start = time.perf_counter()
        try:
            return super()._call(method, apply)
        finally:
            self.inside += time.perf_counter() - start


def _filesystem(path: str) -> str:
    """The file system type holding ``path`` (/proc/mounts, longest mount point prefix)."""
    best, kind = "", "?"
    with open("/proc/mounts") as mounts:
        for line in mounts:
            fields = line.split()
            if len(fields) > 2 and path.startswith(fields[1]) and len(fields[1]) > len(best):
                best, kind = fields[1], fields[2]
    return kind


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


async def one_round(pods: int, directory: str) -> dict[str, list[float]]:
    state = os.path.join(directory, f"hcn-{time.monotonic_ns()}.json")
    hcn = TimedFake(state)
    dp = WindowsDatapath(hcn)
    await dp.start(lambda: [PRIMARY, SECONDARY], ("10.0.0.0/16",), ())

    def assignment(i: int, ns: str) -> Assignment:
        key = AttachmentKey("cloud-cni", ContainerID(f"bench{i:05d}"), IfName("eth0"))
        view = PRIMARY if i % 2 == 0 else SECONDARY
        return Assignment(
            key, f"10.0.{1 + i // 250}.{1 + i % 250}", view.id, PodRef("b", f"p{i}", f"u{i}"), 0.0, ns
        )

    warm = [assignment(900 + i, hcn.add_namespace()) for i in range(2)]  # one per interface
    for a in warm:
        await dp.add_pod(a)
    batch = [assignment(i, hcn.add_namespace()) for i in range(pods)]
    out: dict[str, list[float]] = {"add": [], "del": [], "add_calls": [], "del_calls": [], "add_own": []}
    hcn.reset_counters()
    for a in batch:
        t, inside = time.perf_counter(), hcn.inside
        await dp.add_pod(a)
        elapsed = (time.perf_counter() - t) * 1000
        out["add"].append(elapsed)
        out["add_own"].append(elapsed - (hcn.inside - inside) * 1000)
    out["add_calls"] = [sum(hcn.counters().values()) / pods]
    hcn.reset_counters()
    for a in batch:
        t = time.perf_counter()
        await dp.del_pod(a)
        out["del"].append((time.perf_counter() - t) * 1000)
    out["del_calls"] = [sum(hcn.counters().values()) / pods]
    for a in warm:
        await dp.del_pod(a)
    dp.close()
    return out


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--pods", type=int, default=110)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--dir", default=None, help="where the fake keeps its state file (default: the temp directory)"
    )
    args = parser.parse_args()
    print(f"{args.pods} pods x {args.rounds} rounds; fake HCN, zero latency; load {os.getloadavg()[0]:.2f}")
    merged: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory(dir=args.dir) as directory:
        print(f"the fake's state file in {directory} ({_filesystem(directory)})")
        for r in range(args.rounds):
            result = asyncio.run(one_round(args.pods, directory))
            for key, values in result.items():
                merged.setdefault(key, []).extend(values)
            print(
                f"  round {r + 1}: ADD p50 {statistics.median(result['add']):.2f} ms, "
                f"DEL p50 {statistics.median(result['del']):.2f} ms, HCN calls per ADD "
                f"{result['add_calls'][0]:.2f}, per DEL {result['del_calls'][0]:.2f}"
            )
    add_calls, del_calls = max(merged["add_calls"]), max(merged["del_calls"])
    add50, add99 = statistics.median(merged["add"]), pct(merged["add"], 99)
    del50, del99 = statistics.median(merged["del"]), pct(merged["del"], 99)
    print()
    rows = [
        (
            "HCN calls per ADD (most of any round)",
            f"{add_calls:.2f}",
            str(GOAL_CALLS),
            add_calls / GOAL_CALLS,
        ),
        (
            "HCN calls per DEL (most of any round)",
            f"{del_calls:.2f}",
            str(GOAL_CALLS),
            del_calls / GOAL_CALLS,
        ),
        (
            "daemon-side ADD p50 / p99",
            f"{add50:.2f} / {add99:.2f} ms",
            f"p50 <= {GOAL_ADD_P50_MS} ms",
            add50 / GOAL_ADD_P50_MS,
        ),
    ]
    print("| figure | value | goal | value / goal |")
    print("|---|---|---|---|")
    for label, value, goal, ratio in rows:
        print(f"| {label} | {value} | {goal} | {ratio:.2f} |")
    print(f"| daemon-side DEL p50 / p99 | {del50:.2f} / {del99:.2f} ms | | |")
    own50, own99 = statistics.median(merged["add_own"]), pct(merged["add_own"], 99)
    print(
        f"| ADD outside the fake's calls (the datapath's own) p50 / p99 | {own50:.2f} / {own99:.2f} ms "
        f"| p50 <= {GOAL_ADD_P50_MS} ms | {own50 / GOAL_ADD_P50_MS:.2f} |"
    )
    print(f"\nload average at the end {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
