# ruff: noqa: E501  (a table printout)
"""The simulator against the real daemon on one node: cloud operations per 100 pod starts and peak
addresses, for several policies and seeds (issue: cluster scale, item 8; the short version is
tests/integration/test_sim_vs_daemon.py).

    PYTHONPATH=. .venv/bin/python bench/bench_sim_vs_daemon.py [--seconds 120] [--seeds 1,2]
        [--policy WARM_IP_TARGET=5 ...] [--instance-type m5.large] [--latency 0.05]

Each row: one seed's workload of waves of pod starts and deletions on one node (see
``tests.integration.sim_vs_daemon.waves``), replayed in real time against ``python -m ipamd`` (sim
cloud, SIM_API_LATENCY) and simulated by ``cloud-cni simulate --events`` with the same settings and the
same cloud latency. Prints both sides and the ratio simulator / daemon (goal: within 10%, 0.90-1.10).
Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.integration.sim_vs_daemon import run_daemon, run_sim, waves, write_csv  # noqa: E402

DEFAULT_POLICIES = [
    "WARM_IP_TARGET=5",
    "WARM_ENI_TARGET=1",
    "MINIMUM_IP_TARGET=10,WARM_IP_TARGET=2",
    "POOL_MODE=adaptive",
]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=120.0)
    parser.add_argument("--seeds", default="1,2")
    parser.add_argument("--policy", action="append")
    parser.add_argument("--instance-type", default="m5.large")
    parser.add_argument("--latency", type=float, default=0.05)
    args = parser.parse_args()
    policies = args.policy or DEFAULT_POLICIES
    print(
        f"bench_sim_vs_daemon {time.strftime('%Y-%m-%d %H:%M:%S')} {args.instance_type} latency {args.latency} s"
    )
    print(
        f"{'policy':<40} {'seed':>4} {'starts':>6} {'ops/100 daemon':>14} {'sim':>6} {'ratio':>6} "
        f"{'peak daemon':>11} {'sim':>4} {'ratio':>6}"
    )
    for policy in policies:
        for seed in (int(s) for s in args.seeds.split(",")):
            events = waves(seconds=args.seconds, seed=seed)
            with tempfile.TemporaryDirectory(prefix="sim-vs-daemon-") as d:
                tmp = Path(d)
                csv_path = write_csv(events, tmp / "events.csv")
                daemon = run_daemon(
                    tmp, events, policy=policy, instance_type=args.instance_type, latency=args.latency
                )
                sim = run_sim(
                    csv_path, events, policy=policy, instance_type=args.instance_type, latency=args.latency
                )
            ops = sim.operations_per_100_starts / max(daemon.operations_per_100_starts, 1e-9)
            peak = sim.peak_addresses / max(daemon.peak_addresses, 1)
            print(
                f"{policy:<40} {seed:>4} {daemon.pod_starts:>6} {daemon.operations_per_100_starts:14.1f} "
                f"{sim.operations_per_100_starts:6.1f} {ops:6.2f} {daemon.peak_addresses:>11} "
                f"{sim.peak_addresses:>4} {peak:6.2f}"
            )


if __name__ == "__main__":
    main()
