"""gRPC ADD+DEL round trip against the real daemon, from one persistent client.

    PYTHONPATH=. .venv/bin/python bench/bench_rpc.py [--pairs N] [--warmup N] [--dir DIR]

Starts `python -m ipamd` (CLOUD_PROVIDER=sim, DATAPATH=none, c5.18xlarge, WARM_IP_TARGET=64,
MINIMUM_IP_TARGET=300, IP_COOLDOWN_PERIOD=0, LOG_LEVEL=info) with its socket and checkpoint in a
fresh directory on the normal disk, so every ADD and DEL waits for a real fsync'd checkpoint write.
Waits until the warm pool holds >= 300 free addresses, then one `ipamd.rpc.client.IpamClient`
(one channel, reused) runs ADD then DEL for a new container ID each time, in sequence. Each pair is
timed from before the ADD to after the DEL reply. Prints median and p99 of each round trip (ADD,
DEL) and of the pair, with the ratio to the targets (p50 <= 2 ms, p99 <= 10 ms), and of 1,000
STATUS calls (which write nothing: the floor of a round trip); asserts nothing.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _daemon import WARM_POOL_ENV, Daemon, load_average, median, percentile, ratio_line

from ipamd.rpc.client import IpamClient, attachment

TARGET_P50_MS = 2.0
TARGET_P99_MS = 10.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--pairs", type=int, default=3000, help="timed ADD+DEL pairs (default 3000)")
    parser.add_argument("--warmup", type=int, default=300, help="untimed pairs first (default 300)")
    parser.add_argument("--dir", type=Path, default=None, help="parent of the daemon's directory")
    parser.add_argument("--budget", type=float, default=40.0, help="stop timing after this many seconds")
    args = parser.parse_args()

    with Daemon(args.dir, **WARM_POOL_ENV) as daemon:
        pool = daemon.wait_available(300)
        print(daemon.describe())
        print(f"warm pool: total {pool['total']}, available {pool['available']}")
        adds: list[float] = []
        dels: list[float] = []
        pairs: list[float] = []
        with IpamClient(daemon.socket, timeout=10) as client:
            for i in range(args.warmup):
                att = attachment(os.urandom(32).hex(), pod=f"warm-{i}")
                client.add(att)
                client.delete(att)
            cpu_before = daemon.cpu_seconds()
            stop_at = time.monotonic() + args.budget
            for i in range(args.pairs):
                att = attachment(os.urandom(32).hex(), pod=f"bench-{i}", uid=os.urandom(16).hex())
                t0 = time.perf_counter()
                client.add(att)
                t1 = time.perf_counter()
                client.delete(att)
                t2 = time.perf_counter()
                adds.append(t1 - t0)
                dels.append(t2 - t1)
                pairs.append(t2 - t0)
                if time.monotonic() > stop_at:
                    break
            cpu = daemon.cpu_seconds() - cpu_before
            # The floor of a round trip on this socket: STATUS changes nothing, so it writes nothing.
            floor: list[float] = []
            for _ in range(1000):
                t0 = time.perf_counter()
                client.status()
                floor.append(time.perf_counter() - t0)
        metrics = daemon.metrics()

    n = len(pairs)
    writes = metrics.get('cloudcni_checkpoint_writes_total{result="ok"}', float("nan"))
    write_sum = metrics.get("cloudcni_checkpoint_write_seconds_sum", float("nan"))
    write_count = metrics.get("cloudcni_checkpoint_write_seconds_count", float("nan"))
    print(f"timed pairs: {n} (after {args.warmup} warm-up pairs), sequential, one channel")
    for name, samples in (("ADD", adds), ("DEL", dels), ("ADD+DEL pair", pairs)):
        p50, p99 = median(samples) * 1e3, percentile(samples, 0.99) * 1e3
        print(f"  {name:<13} median {p50:6.3f} ms   p99 {p99:6.3f} ms   max {max(samples) * 1e3:6.2f} ms")
    print(
        f"  STATUS (no checkpoint write: the gRPC floor) median {median(floor) * 1e3:6.3f} ms   "
        f"p99 {percentile(floor, 0.99) * 1e3:6.3f} ms"
    )
    print(f"daemon CPU per pair: {cpu / n * 1e3:.3f} ms (user+sys, all threads)")
    print(
        f"checkpoint writes since start (ok): {writes:.0f}; mean write (encode + tmp, fsync, link, "
        f"rename, fsync dir; in the writer thread): {write_sum / write_count * 1e3:.3f} ms"
    )
    print(f"load average (1 min) at the end: {load_average()}")
    print()
    for name, samples in (("ADD round trip", adds), ("DEL round trip", dels), ("ADD+DEL pair", pairs)):
        p50, p99 = median(samples) * 1e3, percentile(samples, 0.99) * 1e3
        print(ratio_line(f"{name} p50", p50, TARGET_P50_MS, "ms", higher_is_better=False))
        print(ratio_line(f"{name} p99", p99, TARGET_P99_MS, "ms", higher_is_better=False))


if __name__ == "__main__":
    main()
