"""Linux datapath: daemon-side wire (ADD) and teardown (DEL) times, p50 and p99.

Runs ``LinuxDatapath.add_pod`` / ``del_pod`` (the code the daemon runs for every ADD and DEL) in a
node network namespace this script creates, against pod namespaces it creates, one per pod: the
primary interface and one secondary interface (veths to a router namespace, with the MACs the
datapath looks for), pods alternating between them. Times are the awaited calls, as the daemon's
gRPC handler sees them. A second phase measures the same with 8 ADDs or DELs in flight (the daemon
serves concurrent CNI calls). Targets (issue: Linux datapath): wire <= 15 ms, teardown <= 15 ms; the
ratio printed is the figure over its target. It also times the kernel's veth deletion, which DEL
leaves to run after the answer.

    sudo .venv/bin/python bench/bench_datapath.py [--pods 200] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.fakes import netns  # noqa: E402

INNER = r"""
import asyncio, json, sys, time
from ipamd.datapath.linux.datapath import LinuxDatapath
from ipamd.datapath.linux import netlink
from ipamd.pool.model import (Assignment, AttachmentKey, ContainerID, IfName, InterfaceId,
    InterfaceView, PodRef)

pods, concurrency = json.loads(sys.argv[1])
NET = "10.0.0.0/20"
v0 = InterfaceView(InterfaceId("eni-0"), 0, True, "s", NET, "10.0.0.10", (), (), "02:00:00:00:00:01")
v1 = InterfaceView(InterfaceId("eni-1"), 1, False, "s", NET, "10.0.0.11", (), (), "02:00:00:00:00:02")

def assignment(i):
    return Assignment(AttachmentKey("cloud-cni", ContainerID(f"bench{i:05d}"), IfName("eth0")),
        f"10.0.{1 + i // 250}.{1 + i % 250}", v0.id if i % 2 == 0 else v1.id,
        PodRef("bench", f"p{i}", f"u{i}"), 0.0, pods[i])

async def timed(coro):
    t = time.perf_counter(); await coro; return (time.perf_counter() - t) * 1000

async def main():
    dp = LinuxDatapath(external_snat=True)
    dp._views = lambda: [v0, v1]
    await dp.sync_interfaces([v0, v1])
    n = len(pods)
    out = {"wire": [], "teardown": [], "wire_c": [], "teardown_c": [], "veth_delete": []}
    cpu = time.process_time()
    for i in range(n):  # one at a time
        out["wire"].append(await timed(dp.add_pod(assignment(i))))
    out["wire_cpu"] = [(time.process_time() - cpu) * 1000 / n]
    cpu = time.process_time()
    for i in range(n):
        out["teardown"].append(await timed(dp.del_pod(assignment(i))))
        out["veth_delete"].append(await timed(dp.settle()))
    out["teardown_cpu"] = [(time.process_time() - cpu) * 1000 / n]
    sem = asyncio.Semaphore(concurrency)
    async def bounded(coro):
        async with sem:
            return await timed(coro)
    t = time.perf_counter()
    out["wire_c"] = list(await asyncio.gather(*(bounded(dp.add_pod(assignment(i))) for i in range(n))))
    out["wire_rate"] = [n / (time.perf_counter() - t)]
    t = time.perf_counter()
    out["teardown_c"] = list(await asyncio.gather(*(bounded(dp.del_pod(assignment(i))) for i in range(n))))
    await dp.settle()
    out["teardown_rate"] = [n / (time.perf_counter() - t)]
    dp.close()
    print(json.dumps(out))

asyncio.run(main())
"""


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def one_round(pods: int, concurrency: int) -> dict[str, list[float]]:
    node, router = netns.create("bnode"), netns.create("brouter")
    pod_names: list[str] = []
    try:
        netns.veth(node, "eth0", router, "r-eth0", a_mac="02:00:00:00:00:01")
        netns.veth(node, "eth1", router, "r-eth1", a_mac="02:00:00:00:00:02")
        netns.ip(node, "addr", "add", "10.0.0.10/20", "dev", "eth0")
        pod_names = [netns.create(f"bp{i}") for i in range(pods)]
        paths = [f"/var/run/netns/{p}" for p in pod_names]
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        done = subprocess.run(
            [
                "ip",
                "netns",
                "exec",
                node,
                sys.executable,
                "-c",
                INNER,
                __import__("json").dumps([paths, concurrency]),
            ],
            capture_output=True,
            text=True,
            env=env,
            timeout=600,
        )
        if done.returncode != 0:
            raise SystemExit(done.stderr[-3000:])
        result: dict[str, list[float]] = json.loads(done.stdout.strip().splitlines()[-1])
        return result
    finally:
        for name in [*pod_names, node, router]:
            netns.delete(name)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--pods", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=8)
    args = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("needs root (network namespaces)")
    load = os.getloadavg()[0]
    print(
        f"{args.pods} pods x {args.rounds} rounds; python {sys.version.split()[0]}; load average {load:.2f}"
    )
    merged: dict[str, list[float]] = {}
    for r in range(args.rounds):
        result = one_round(args.pods, args.concurrency)
        for key, values in result.items():
            merged.setdefault(key, []).extend(values)
        print(
            f"  round {r + 1}: wire p50 {statistics.median(result['wire']):.1f} ms, "
            f"teardown p50 {statistics.median(result['teardown']):.1f} ms; CPU per pod (the daemon "
            f"process, user + system): wire {result['wire_cpu'][0]:.2f} ms, teardown with veth deletion "
            f"{result['teardown_cpu'][0]:.2f} ms"
        )
    target = 15.0
    print()
    print("| figure | p50 ms | p99 ms | p50 / target | p99 / target |")
    print("|---|---|---|---|---|")
    labels = {
        "wire": "wire (ADD), one at a time",
        "teardown": "teardown (DEL), one at a time",
        "wire_c": f"wire, {args.concurrency} in flight",
        "teardown_c": f"teardown, {args.concurrency} in flight",
        "veth_delete": "veth deletion after DEL (not waited for)",
    }
    for key, label in labels.items():
        values = merged[key]
        if key.endswith("_c"):
            rate = statistics.median(merged[key.replace("_c", "_rate")])
            print(
                f"| {label} (queueing included; {rate:.0f} per second) | {statistics.median(values):.1f} "
                f"| {pct(values, 99):.1f} | - | - |"
            )
            continue
        p50, p99 = statistics.median(values), pct(values, 99)
        ratio = f"{p50 / target:.2f} | {p99 / target:.2f}" if key != "veth_delete" else "- | -"
        print(f"| {label} | {p50:.1f} | {p99:.1f} | {ratio} |")
    print(
        f"\nCPU per pod, median of rounds: wire {statistics.median(merged['wire_cpu']):.2f} ms, "
        f"teardown with veth deletion {statistics.median(merged['teardown_cpu']):.2f} ms"
    )
    print(f"\nload average at the end {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
