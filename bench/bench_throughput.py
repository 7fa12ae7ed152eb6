"""Sustained ADD+DEL throughput of the real daemon with 32 concurrent callers, durable checkpoint on.

    PYTHONPATH=. .venv/bin/python bench/bench_throughput.py [--callers 32] [--procs 1] [--seconds 10]

Starts `python -m ipamd` as bench_rpc.py does (sim provider, c5.18xlarge, warm pool of >= 300,
IP_COOLDOWN_PERIOD=0, checkpoint on the normal disk so each write is fsync'd). The load: --callers
grpc.aio callers, each with its own channel (its own HTTP/2 connection to the socket), each looping
ADD then DEL of a new container ID, spread over --procs client processes (default 1: all callers on
one asyncio loop, the cheapest client per call). The client runs on the same 2 cores as the daemon,
so the CPU each side used is printed. After --warmup seconds, ADDs completed during --seconds are
counted; a reply is only sent after its checkpoint write is durable, so ADD/s is durable ADD/s.
Checkpoint writes are read from /metrics (cloudcni_checkpoint_writes_total, and the batch-size
histogram) before and after the window: writes per second and callers per write show group commit.
Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import resource
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _daemon import WARM_POOL_ENV, Daemon, load_average, median, percentile, ratio_line

TARGET_ADDS_PER_SECOND = 1000.0
_WRITES = 'cloudcni_checkpoint_writes_total{result="ok"}'
_BATCH_SUM = "cloudcni_checkpoint_batch_size_sum"
_BATCH_COUNT = "cloudcni_checkpoint_batch_size_count"
_WRITE_SUM = "cloudcni_checkpoint_write_seconds_sum"
_WRITE_COUNT = "cloudcni_checkpoint_write_seconds_count"


async def _caller(socket_path: str, name: str, until: float, done: list[tuple[float, float]]) -> None:
    import grpc

    from ipamd.rpc.client import attachment
    from ipamd.rpc.pb import ipamd_pb2 as pb
    from ipamd.rpc.pb import ipamd_pb2_grpc as pb_grpc

    async with grpc.aio.insecure_channel(f"unix:{socket_path}") as channel:
        stub = pb_grpc.IpamBackendStub(channel)
        i = 0
        while time.monotonic() < until:
            att = attachment(os.urandom(32).hex(), pod=f"{name}-{i}", uid=os.urandom(16).hex())
            t0 = time.monotonic()
            await stub.Add(pb.AddRequest(attachment=att, cni_version="1.0.0"), timeout=10)
            t1 = time.monotonic()
            await stub.Del(pb.DelRequest(attachment=att, reason="cni-del"), timeout=10)
            done.append((t1, t1 - t0))  # (when the ADD was answered, its latency)
            i += 1


def _client_process(socket_path: str, callers: int, tag: int, until: float, out: Any) -> None:
    done: list[tuple[float, float]] = []

    async def run() -> None:
        await asyncio.gather(*(_caller(socket_path, f"p{tag}c{c}", until, done) for c in range(callers)))

    asyncio.run(run())
    usage = resource.getrusage(resource.RUSAGE_SELF)
    out.put((done, usage.ru_utime + usage.ru_stime))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--callers", type=int, default=32, help="concurrent callers in all (default 32)")
    parser.add_argument("--procs", type=int, default=1, help="client processes sharing them (default 1)")
    parser.add_argument("--warmup", type=float, default=3.0, help="seconds of load before counting")
    parser.add_argument("--seconds", type=float, default=10.0, help="seconds counted (default 10)")
    parser.add_argument("--dir", type=Path, default=None, help="parent of the daemon's directory")
    args = parser.parse_args()

    with Daemon(args.dir, **WARM_POOL_ENV) as daemon:
        pool = daemon.wait_available(300)
        print(daemon.describe())
        print(f"warm pool: total {pool['total']}, available {pool['available']}")
        print(
            f"load: {args.callers} grpc.aio callers (one channel each) in {args.procs} client process(es), "
            f"ADD then DEL in a loop; {args.warmup:g} s warm-up, {args.seconds:g} s counted"
        )
        ctx = multiprocessing.get_context("fork")
        queue = ctx.Queue()
        start = time.monotonic() + 0.5
        window_start = start + args.warmup
        window_end = window_start + args.seconds
        share = [
            args.callers // args.procs + (1 if p < args.callers % args.procs else 0)
            for p in range(args.procs)
        ]
        procs = [
            ctx.Process(target=_client_process, args=(daemon.socket, n, p, window_end, queue))
            for p, n in enumerate(share)
        ]
        for p in procs:
            p.start()
        time.sleep(max(0.0, window_start - time.monotonic()))
        m0, cpu0 = daemon.metrics(), daemon.cpu_seconds()
        time.sleep(max(0.0, window_end - time.monotonic()))
        m1, cpu1 = daemon.metrics(), daemon.cpu_seconds()
        results = [queue.get(timeout=30) for _ in procs]
        for p in procs:
            p.join(10)

    done = [d for r, _ in results for d in r]
    client_cpu = sum(c for _, c in results)
    window = [lat for when, lat in done if window_start <= when < window_end]
    adds_per_second = len(window) / args.seconds
    writes = m1.get(_WRITES, 0.0) - m0.get(_WRITES, 0.0)
    batches = m1.get(_BATCH_COUNT, 0.0) - m0.get(_BATCH_COUNT, 0.0)
    batched = m1.get(_BATCH_SUM, 0.0) - m0.get(_BATCH_SUM, 0.0)
    write_seconds = m1.get(_WRITE_SUM, 0.0) - m0.get(_WRITE_SUM, 0.0)
    timed_writes = m1.get(_WRITE_COUNT, 0.0) - m0.get(_WRITE_COUNT, 0.0)
    daemon_cpu = cpu1 - cpu0
    print(f"ADDs answered in the window: {len(window)} (+ as many DELs)")
    p50, p99 = median(window) * 1e3, percentile(window, 0.99) * 1e3
    print(f"ADD latency under load: median {p50:.2f} ms, p99 {p99:.2f} ms")
    print(
        f"CPU: daemon {daemon_cpu / args.seconds:.2f} cores during the window "
        f"({daemon_cpu / max(1, 2 * len(window)) * 1e3:.3f} ms per call); "
        f"client {client_cpu / (args.warmup + args.seconds):.2f} cores over its whole run "
        f"({client_cpu / max(1, 2 * len(done)) * 1e3:.3f} ms per call)"
    )
    if writes:
        per_write = f"{batched / batches:.1f} callers per write" if batches else "batch sizes not exported"
        print(
            f"checkpoint writes in the window: {writes:.0f} ({writes / args.seconds:.0f}/s) for "
            f"{2 * len(window)} ADD+DEL calls: {per_write} (cloudcni_checkpoint_batch_size)"
        )
        if timed_writes:
            mean_ms = write_seconds / timed_writes * 1e3
            steps = "encode, tmp + fsync, link, rename, fsync dir; writer thread"
            print(f"mean checkpoint write ({steps}): {mean_ms:.2f} ms")
    else:
        print("checkpoint writes: cloudcni_checkpoint_writes_total not exported by this daemon")
    print(f"load average (1 min) at the end: {load_average()}")
    print()
    figure = f"sustained durable ADD/s ({args.callers} callers)"
    print(ratio_line(figure, adds_per_second, TARGET_ADDS_PER_SECOND, "ADD/s", higher_is_better=True))


if __name__ == "__main__":
    main()
