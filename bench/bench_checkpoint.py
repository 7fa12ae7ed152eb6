"""Checkpoint cost on this machine: encode, decode, write_atomic of a 250-assignment snapshot, fsync.

    PYTHONPATH=. .venv/bin/python bench/bench_checkpoint.py [--dir DIR] [--rounds N]

DIR defaults to a fresh temporary directory; point it at the filesystem that will hold
CHECKPOINT_PATH (on a node, /var/run is a tmpfs, where fsync costs nearly nothing). Prints figures
only; nothing here asserts.
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from ipamd import checkpoint
from ipamd.pool.model import (
    Assignment,
    AttachmentKey,
    ContainerID,
    IfName,
    InterfaceId,
    PodRef,
    PoolSnapshot,
)

NOW = 1_700_000_000.0


def snapshot(assigned: int = 250, cooling: int = 16) -> PoolSnapshot:
    """A busy node: realistic field sizes (64-hex container IDs, UUIDs, netns paths)."""
    base = int(ipaddress.IPv4Address("10.0.0.0"))
    assignments = tuple(
        Assignment(
            key=AttachmentKey("aws-cni", ContainerID(os.urandom(32).hex()), IfName("eth0")),
            ip=str(ipaddress.IPv4Address(base + 16 + i)),
            interface_id=InterfaceId(f"eni-{i // 50:017x}"),
            pod=PodRef("team-a", f"web-7f9c8d6b5-{i:05d}", f"{os.urandom(16).hex()}"),
            assigned_at=NOW + i * 0.731,
            netns=f"/var/run/netns/cni-{os.urandom(16).hex()}",
        )
        for i in range(assigned)
    )
    cooling_ips = tuple((str(ipaddress.IPv4Address(base + 4096 + i)), NOW + 30 + i) for i in range(cooling))
    return PoolSnapshot(assignments, cooling_ips, ())


def timings(fn: Callable[[], object], rounds: int) -> list[float]:
    samples = []
    for _ in range(rounds):
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    return samples


def report(name: str, samples: list[float]) -> None:
    ordered = sorted(samples)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    print(f"{name:<44} median {statistics.median(ordered) * 1e3:7.3f} ms   p99 {p99 * 1e3:7.3f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--dir", type=Path, default=None, help="directory on the disk to measure")
    parser.add_argument("--rounds", type=int, default=1000)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(dir=args.dir, prefix="bench-checkpoint-") as tmp:
        directory = Path(tmp)
        snap = snapshot()
        data = checkpoint.encode(snap, generation=1, written_at=NOW)
        files = f"{len(snap.assignments)} assignments, {len(snap.cooling)} cooling"
        print(f"snapshot: {files}; file {len(data)} bytes; directory {directory}; rounds {args.rounds}")

        def cold() -> None:
            checkpoint._assignment_json.cache_clear()  # as on the first write after a start
            checkpoint.encode(snap, generation=2, written_at=NOW)

        report("encode, cold (first write after start)", timings(cold, max(50, args.rounds // 10)))
        report(
            "encode, warm (the usual write)",
            timings(lambda: checkpoint.encode(snap, generation=2, written_at=NOW), args.rounds),
        )
        report("decode (start-up only)", timings(lambda: checkpoint.decode(data), max(50, args.rounds // 10)))

        path = directory / "ipam.json"
        checkpoint.write_atomic(path, data)
        report(
            "write_atomic (2 fsyncs, link, 2 renames)",
            timings(lambda: checkpoint.write_atomic(path, data), args.rounds),
        )

        probe = directory / "fsync.probe"
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT, 0o600)
        try:

            def write_and_fsync() -> None:
                os.pwrite(fd, data, 0)
                os.fsync(fd)

            report("fsync of the file after rewriting it", timings(write_and_fsync, args.rounds))
        finally:
            os.close(fd)
        dir_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
        try:
            report("fsync of the directory alone", timings(lambda: os.fsync(dir_fd), args.rounds))
        finally:
            os.close(dir_fd)


if __name__ == "__main__":
    main()
