"""Wall time and peak memory of one simulated policy run, against the goals of issue 14.

Goals, on the shipped default workload: 5,000 nodes x 1 simulated hour in <= 60 s wall and <= 2 GB
(per policy run, 2 cores); 1,000 nodes x 1 hour in <= 10 s. Every run is a fresh process, so its peak
RSS is its own (``ru_maxrss``); the figures are medians over ``--repeats`` runs, with the ratio of the
wall time to the goal (below 1.0 meets it). The run is one thread: its CPU seconds (imports excluded)
are what the wall time would be on an idle core, worth reading on a shared machine. Nothing here
asserts: it prints.

    PYTHONPATH=. .venv/bin/python bench/bench_sim.py                      # 1,000 and 5,000 nodes
    PYTHONPATH=. .venv/bin/python bench/bench_sim.py --sizes 1000 --repeats 3
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time

from ipamd.sim.settings import DEFAULT_POLICIES

GOAL_SECONDS = {1000: 10.0, 5000: 60.0}
GOAL_RSS_MB = 2048.0


def child(nodes: int, hours: float, policy: str, workload: str, seed: int) -> None:
    """One run in this process; prints one JSON line."""
    started = time.perf_counter()
    cpu = time.process_time()
    from ipamd.sim.cluster import simulate
    from ipamd.sim.settings import parse_policy
    from ipamd.sim.sources import events
    from ipamd.sim.workload import load_workload, scaled

    imported = time.perf_counter() - started
    w = scaled(load_workload(workload), nodes)
    seconds = hours * 3600
    result = simulate(
        w, parse_policy(policy), stream=events(w, seed=seed, until=seconds), seconds=seconds, seed=seed
    )
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    cpu = time.process_time() - cpu - imported
    print(
        json.dumps(
            {
                "wall": result.wall_seconds,
                "cpu": cpu,
                "imports": imported,
                "rss_mb": rss_mb,
                "events": result.events,
                "pods_started": result.pods_started,
                "cloud_calls": sum(result.calls.values()),
                "throttled": sum(result.throttled.values()),
            }
        )
    )


def run_one(nodes: int, hours: float, policy: str, workload: str, seed: int) -> dict[str, float]:
    cmd = [sys.executable, __file__, "--child", str(nodes), str(hours), policy, workload, str(seed)]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, env={**os.environ})
    return json.loads(out.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 5000])
    parser.add_argument("--hours", type=float, default=1.0)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--workload", default="default")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--policy", action="append", help="default: the five default policies")
    args = parser.parse_args()
    policies = args.policy or list(DEFAULT_POLICIES)
    print(
        f"cloud-cni simulate benchmark: workload {args.workload}, {args.hours:g} h, seed {args.seed}, "
        f"{args.repeats} run(s) each; {platform.python_implementation()} {platform.python_version()}, "
        f"{os.cpu_count()} CPUs"
    )
    print(f"{'nodes':>6}  {'policy':<56} {'wall s':>7} {'cpu s':>6} {'goal':>5} {'ratio':>6} {'RSS MB':>7} "
          f"{'ratio':>6} {'events':>10} {'calls':>10} {'throttled':>10}")  # fmt: skip
    for nodes in args.sizes:
        for policy in policies:
            runs = [run_one(nodes, args.hours, policy, args.workload, args.seed) for _ in range(args.repeats)]
            wall = statistics.median(r["wall"] for r in runs)
            cpu = statistics.median(r["cpu"] for r in runs)
            rss = max(r["rss_mb"] for r in runs)
            goal = GOAL_SECONDS.get(nodes)
            ratio = f"{wall / goal:6.2f}" if goal else "     -"
            print(
                f"{nodes:>6}  {policy:<56} {wall:7.1f} {cpu:6.1f} {goal or 0:5.0f} {ratio} {rss:7.0f} "
                f"{rss / GOAL_RSS_MB:6.2f} {runs[0]['events']:>10,.0f} {runs[0]['cloud_calls']:>10,.0f} "
                f"{runs[0]['throttled']:>10,.0f}",
                flush=True,
            )


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        n, h, p, w, s = sys.argv[2:7]
        child(int(n), float(h), p, w, int(s))
    else:
        main()
