"""Resident memory of the real daemon: idle after start, then holding 250 assignments.

    PYTHONPATH=. .venv/bin/python bench/bench_memory.py [--pods 250] [--dir DIR]

Starts `python -m ipamd` as bench_rpc.py does (sim provider, c5.18xlarge, warm pool of >= 300,
checkpoint on the normal disk). RSS is VmRSS from /proc/<pid>/status: once the pool is warm and
the daemon idle, then after --pods ADDs (kept assigned) from one client, after one scrape of
/metrics and one read of /v1/pool and /v1/assignments, so the serving paths are loaded too.
Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _daemon import WARM_POOL_ENV, Daemon, ratio_line

from ipamd.rpc.client import IpamClient, attachment

TARGET_MB = 80.0


def _peak_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--pods", type=int, default=250, help="assignments to hold (default 250)")
    parser.add_argument("--dir", type=Path, default=None, help="parent of the daemon's directory")
    args = parser.parse_args()

    with Daemon(args.dir, **WARM_POOL_ENV) as daemon:
        pool = daemon.wait_available(300)
        print(daemon.describe())
        time.sleep(1.0)
        idle = daemon.rss_mb()
        print(
            f"idle after start: pool total {pool['total']}, available {pool['available']}: RSS {idle:.1f} MB"
        )
        with IpamClient(daemon.socket, timeout=20) as client:
            for i in range(args.pods):
                client.add(
                    attachment(
                        os.urandom(32).hex(),
                        namespace="team-a",
                        pod=f"web-7f9c8d6b5-{i:05d}",
                        uid=os.urandom(16).hex(),
                        netns=f"/var/run/netns/cni-{os.urandom(16).hex()}",
                    )
                )
            daemon.metrics()
            pool = daemon.get("/v1/pool")
            held = len(daemon.get("/v1/assignments"))
            time.sleep(1.0)  # let the manager's top-up settle
            loaded = daemon.rss_mb()
            peak = _peak_mb(daemon.pid)
        print(
            f"with {held} assignments: pool total {pool['total']}, assigned {pool['assigned']}: "
            f"RSS {loaded:.1f} MB (peak VmHWM {peak:.1f} MB)"
        )
    print()
    print(ratio_line("RSS idle after start", idle, TARGET_MB, "MB", higher_is_better=False))
    print(ratio_line(f"RSS with {held} assignments", loaded, TARGET_MB, "MB", higher_is_better=False))


if __name__ == "__main__":
    main()
