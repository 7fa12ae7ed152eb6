"""What the Kubernetes integration costs: ADD latency, API requests at steady state, memory.

    PYTHONPATH=. .venv/bin/python bench/bench_k8s.py [--pairs N] [--rounds R] [--steady S] [--pods P]

Four real daemons (`python -m ipamd`, sim cloud, c5.18xlarge, warm pool >= 300, checkpoint on the
normal disk) run side by side, each with its own fake kube-apiserver over HTTPS
(tests/fakes/kube_apiserver.py, a Node with the startup taint and ``capacity.pods`` 737, c5.18xlarge's):

  off       KUBERNETES_INTEGRATION=off (the baseline)
  on        the API answers at once
  slow      the API answers every request after 5 s
  refused   the API refuses connections (its port is closed)

1. ADD latency: R rounds; in each, every daemon in turn serves N ADD+DEL pairs from one persistent
   gRPC client; each ADD is timed. Prints p50 / p99 per mode and the ratio to ``off`` (target <= 1.05).
2. Requests at steady state: after ``on`` has removed its startup taint and both watches are open,
   the fake's request log is cleared and read again S seconds later; requests besides watches are
   extrapolated to an hour (target <= 12). Then P other pods come and go on the node (the watch
   sees them; the daemon must not call the API for them) and the count is read again.
3. Memory: ``on`` holds P assignments whose pods exist in the API (both watches open): VmRSS
   (target <= 80 MB), next to ``off`` holding the same.
Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _daemon import WARM_POOL_ENV, Daemon, load_average, median, percentile

from ipamd.k8s.reflector import WATCH_TIMEOUT_MIN
from ipamd.rpc.client import IpamClient, attachment
from tests.fakes.kube_apiserver import KubeApiServer

NODE = "bench-node-1"
MODES = ("off", "on", "slow", "refused")
TAINT = {"key": "node.cloud-cni.io/agent-not-ready", "effect": "NoSchedule"}


def make_api() -> KubeApiServer:
    api = KubeApiServer().start()
    api.add_node(NODE, taints=[TAINT])
    api.patch_node_direct(NODE, lambda n: n.setdefault("status", {}).update(capacity={"pods": "737"}))
    return api


def taint_gone(api: KubeApiServer) -> bool:
    node = api.get("nodes", None, NODE) or {}
    return not any(t.get("key") == TAINT["key"] for t in node.get("spec", {}).get("taints") or [])


def wait(predicate: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return
        time.sleep(0.1)
    raise SystemExit(f"{what}: not reached within {timeout} s")


def add_pairs(client: IpamClient, n: int, tag: str) -> list[float]:
    took = []
    for i in range(n):
        att = attachment(os.urandom(32).hex(), pod=f"{tag}-{i}", uid=os.urandom(16).hex())
        t0 = time.perf_counter()
        client.add(att)
        took.append((time.perf_counter() - t0) * 1000)
        client.delete(att)
    return took


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--pairs", type=int, default=100, help="ADD+DEL pairs per mode per round")
    parser.add_argument("--rounds", type=int, default=10, help="interleaved rounds (default 10)")
    parser.add_argument("--steady", type=float, default=120.0, help="seconds of steady state to count")
    parser.add_argument("--pods", type=int, default=110, help="pods on the node for the memory figure")
    args = parser.parse_args()

    apis = {mode: make_api() for mode in MODES if mode != "off"}
    apis["slow"].latency = 5.0
    apis["refused"].refuse()
    work = Path(tempfile.mkdtemp(prefix="bench-k8s-"))
    daemons: dict[str, Daemon] = {}
    try:
        for mode in MODES:
            env = dict(WARM_POOL_ENV, NODE_NAME=NODE, KUBERNETES_INTEGRATION="off" if mode == "off" else "on")
            if mode != "off":
                env["KUBECONFIG"] = apis[mode].kubeconfig(work / f"kubeconfig-{mode}")
            daemons[mode] = Daemon(None, **env).__enter__()
        for d in daemons.values():
            d.wait_available(300, timeout=60)
        wait(lambda: taint_gone(apis["on"]), 60, "startup taint removed by 'on'")
        print(
            f"load average {load_average()}; daemons up: "
            + ", ".join(f"{m} pid {d.pid}" for m, d in daemons.items())
        )

        # 1. ADD latency, interleaved.
        samples: dict[str, list[float]] = {m: [] for m in MODES}
        with (
            IpamClient(daemons["off"].socket) as c_off,
            IpamClient(daemons["on"].socket) as c_on,
            IpamClient(daemons["slow"].socket) as c_slow,
            IpamClient(daemons["refused"].socket) as c_ref,
        ):
            clients = {"off": c_off, "on": c_on, "slow": c_slow, "refused": c_ref}
            for mode, client in clients.items():
                add_pairs(client, 20, f"warm-{mode}")
            for r in range(args.rounds):
                for mode, client in clients.items():
                    samples[mode].extend(add_pairs(client, args.pairs, f"r{r}-{mode}"))
        print()
        print(f"ADD latency, {args.rounds} x {args.pairs} per mode, interleaved (ms):")
        base = median(samples["off"])
        base99 = percentile(samples["off"], 0.99)
        for mode in MODES:
            p50, p99 = median(samples[mode]), percentile(samples[mode], 0.99)
            print(
                f"  {mode:<8} p50 {p50:6.2f}  p99 {p99:6.2f}   ratio to off: p50 {p50 / base:4.2f}  "
                f"p99 {p99 / base99:4.2f}   (target <= 1.05)"
            )

        # 2. Requests at steady state.
        _on, api = daemons["on"], apis["on"]
        wait(lambda: api.open_watches >= 2, 30, "two watches open")
        api.clear_requests()
        time.sleep(args.steady)
        quiet = [r for r in api.requests if r.verb != "watch"]
        watches = [r for r in api.requests if r.verb == "watch"]
        per_hour = len(quiet) * 3600 / args.steady
        print()
        print(f"API requests at steady state over {args.steady:.0f} s (node + pod watches open):")
        print(f"  besides watches: {len(quiet)} -> {per_hour:.1f} per hour (target <= 12)")
        print(
            f"  watch re-opens seen: {len(watches)}; by design each watch asks for {WATCH_TIMEOUT_MIN}-"
            f"{2 * WATCH_TIMEOUT_MIN} s: {2 * 3600 / (1.5 * WATCH_TIMEOUT_MIN):.2f} re-opens an hour for both"
        )
        api.clear_requests()
        t0 = time.monotonic()
        for i in range(args.pods):
            api.add_pod("churn", f"other-{i}", NODE)
        for i in range(args.pods):
            api.delete_pod("churn", f"other-{i}")
        time.sleep(2.0)
        churn = [r for r in api.requests if r.verb != "watch"]
        print(
            f"  {args.pods} pods created and deleted on the node in {time.monotonic() - t0:.1f} s: "
            f"{len(churn)} requests besides watches"
        )

        # 3. Memory with pods on the node.
        held: dict[str, int] = {}
        for mode in ("off", "on"):
            with IpamClient(daemons[mode].socket) as client:
                for i in range(args.pods):
                    uid = os.urandom(16).hex()
                    name = f"web-7f9c8d6b5-{i:05d}"
                    if mode == "on":
                        api.add_pod("team-a", name, NODE, uid=uid)
                    client.add(attachment(os.urandom(32).hex(), namespace="team-a", pod=name, uid=uid))
            held[mode] = len(daemons[mode].get("/v1/assignments"))
        wait(lambda: daemons["on"].get("/v1/k8s")["pods_on_node"] == args.pods, 30, "pods seen by the watch")
        daemons["on"].metrics()
        daemons["on"].get("/v1/k8s")
        time.sleep(2.0)
        print()
        print(f"RSS with {args.pods} assignments (pods in the API, watches open for 'on'):")
        for mode in ("off", "on"):
            rss = daemons[mode].rss_mb()
            print(
                f"  {mode:<8} {rss:6.1f} MB  holding {held[mode]}   (target <= 80 MB: ratio {rss / 80:4.2f})"
            )
    finally:
        for d in daemons.values():
            d.__exit__(None, None, None)
        for a in apis.values():
            a.stop()


if __name__ == "__main__":
    main()
