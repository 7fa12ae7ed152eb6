"""AWS provider: EC2 API calls per 100 pod starts, and the time to fill an empty node, on moto.

Everything runs on 127.0.0.1: moto in server mode as EC2 (in this process), the fake IMDSv2 built
from moto's state (tests/fakes/imds.py) and the counting, delaying proxy (tests/fakes/ec2_proxy.py)
between the daemon and moto. The daemon is the real `python -m ipamd` with CLOUD_PROVIDER=aws and
DATAPATH=none on an m5.large node (3 ENIs x 9 pod IPs = 27 pod IPs); pods are ADDed and DELeted
through the real plugin (`cloud-cni-shim`), and an ADD answered with CNI code 11 ("try again later")
is retried after 1 s, as kubelet would.

(a) Calls per 100 pod starts, at WARM_ENI_TARGET=1 and at WARM_IP_TARGET=5: 10 rounds, one every
    --round-period seconds, of 10 ADDs then 10 DELs (one at a time). The node holds at most 27 pod
    IPs, hence churn. Time is scaled down tenfold so that a run takes ~40 s: IP_COOLDOWN_PERIOD 3 s,
    POOL_RELEASE_DELAY 3 s and RECONCILE_INTERVAL 6 s (defaults 30, 30, 60) with a round every 3 s
    stand for a round every 30 s at the defaults. The calls the proxy counted are printed by Action,
    for the start-up (daemon launch until the pool is idle at its target) and for the churn (the
    first ADD until the pool is idle at its target again, its scale-down included).
(b) Burst on an empty node: a fresh daemon (WARM_ENI_TARGET=1, other settings default), 27 pods
    ADDed 8 at a time from the moment the daemon is ready, the proxy adding 200 ms to every mutating
    call and 2.2 s (200 ms + 2 s) to AttachNetworkInterface. Event-driven (POOL_MIN_ACTION_INTERVAL=0)
    against the reference's pacing (POOL_MIN_ACTION_INTERVAL=5), alternated, --repeats times each.
    27 pods, not the 29 of the max-pods formula (3 x 9 + 2): the 2 are host-network pods (aws-node,
    kube-proxy) that take no pod IP.

No assertions: it prints figures (and a WARNING when, after start-up or at the end of a run, the ENIs
and IPs moto shows differ from the daemon's /v1/pool). CLOUD_API_RATE/BURST are 100/100, so the
client-side limiter is never the bottleneck.

    .venv/bin/python bench/bench_aws.py [--repeats 3] [--only calls|burst|rss]  # ~2.5 min
    .venv/bin/python bench/bench_aws.py --only calls --round-period 8 --interval 5
(--round-period: seconds between churn rounds; --interval: POOL_MIN_ACTION_INTERVAL for the churn.)
"""

from __future__ import annotations

import argparse
import collections
import sys
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _daemon import Daemon, load_average, median, percentile  # noqa: E402

from tests.fakes.ec2_proxy import MUTATING, Ec2Proxy  # noqa: E402
from tests.fakes.imds import start_fake_imds  # noqa: E402
from tests.fakes.moto_ec2 import CREDENTIALS, REGION, MotoEc2, Node, make_node, moto_server  # noqa: E402
from tests.integration.test_shim_exec import netconf, shim  # noqa: E402

TRY_AGAIN = 11  # CNI "try again later": the pool is empty and did not grow within ADD_WAIT_TIMEOUT
RETRY_AFTER = 1.0  # seconds before a retried ADD, as kubelet
NODE_PODS = 27  # m5.large: 3 ENIs x 9 secondary IPs


# --- one node: moto instance + fake IMDS + proxy + daemon ----------------------------------------


@dataclass
class Run:
    node: Node
    proxy: Ec2Proxy
    daemon: Daemon
    launched: float  # monotonic time of the daemon's launch
    ready: float  # monotonic time /healthz first answered
    conf: dict[str, Any] = field(default_factory=dict)

    def calls(self) -> collections.Counter[str]:
        with self.proxy.lock:
            return collections.Counter(self.proxy.calls)

    def add(self, cid: str) -> tuple[float, float, int]:
        """ADD until it succeeds, retrying code 11 after 1 s: (first attempt, success, code-11s)."""
        started = time.monotonic()
        retries = 0
        deadline = started + 60.0
        while True:
            done = shim("ADD", self.conf, cid=cid)
            if done.code == 0:
                return started, time.monotonic(), retries
            err = done.json
            if err.get("code") != TRY_AGAIN or time.monotonic() > deadline:
                raise SystemExit(f"ADD {cid} failed: {err}\n{self.daemon.log_path.read_text()[-3000:]}")
            retries += 1
            time.sleep(RETRY_AFTER)

    def delete(self, cid: str) -> None:
        done = shim("DEL", self.conf, cid=cid)
        if done.code != 0:
            raise SystemExit(f"DEL {cid} failed: {done.stdout}")

    def check_consistent(self, what: str) -> None:
        """Say so when EC2 (moto) and the daemon disagree on the node's ENIs and their IPs."""
        cloud = {
            e["NetworkInterfaceId"]: sorted(
                a["PrivateIpAddress"] for a in e["PrivateIpAddresses"] if not a["Primary"]
            )
            for e in self.node.interfaces()
        }
        daemon = {i["id"]: sorted(i["ips"]) for i in self.daemon.get("/v1/pool")["interfaces"]}
        if cloud != daemon:
            print(f"    WARNING {what}: EC2 shows {cloud}, the daemon {daemon}")

    def wait_idle(self, interfaces: int, total: int, timeout: float = 60.0, quiet: float = 1.0) -> float:
        """Until the pool holds ``total`` addresses on ``interfaces``, none assigned or cooling, and
        the proxy has seen no mutating call for ``quiet`` s; returns the monotonic time it got there."""
        deadline = time.monotonic() + timeout
        pool: dict[str, Any] = {}
        while time.monotonic() < deadline:
            pool = self.daemon.get("/v1/pool")
            at_target = (
                len(pool["interfaces"]) == interfaces
                and pool["total"] == total
                and pool["assigned"] == 0
                and pool["cooling"] == 0
            )
            if at_target:
                with self.proxy.lock:
                    last = max((t for t, a, _ in self.proxy.log if a in MUTATING), default=0.0)
                if time.monotonic() - last >= quiet:
                    return last if last else time.monotonic()
            time.sleep(0.1)
        summary = {k: v for k, v in pool.items() if k != "interfaces"}
        raise SystemExit(
            f"pool not idle at ({interfaces} ENIs, {total} IPs) after {timeout}s: {summary}, "
            f"{len(pool.get('interfaces', []))} ENIs"
        )


@contextmanager
def node_run(moto: MotoEc2, delays: dict[str, float], **env: str) -> Iterator[Run]:
    moto.reset()
    node = make_node(moto, "m5.large")
    proxy = Ec2Proxy(upstream=moto.endpoint).start()
    proxy.delays.update(delays)
    imds = start_fake_imds(moto, node)
    settings = {
        "CLOUD_PROVIDER": "aws",
        "DATAPATH": "none",
        "AWS_ENDPOINT_URL": proxy.url,
        "AWS_EC2_METADATA_SERVICE_ENDPOINT": imds.url,
        "AWS_REGION": REGION,
        "CLUSTER_NAME": "bench-cluster",
        "CLOUD_API_RATE": "100",
        "CLOUD_API_BURST": "100",
        **CREDENTIALS,
        **env,
    }
    try:
        daemon = Daemon(None, **settings)
        launched = time.monotonic()
        with daemon:
            run = Run(node, proxy, daemon, launched, time.monotonic())
            run.conf = netconf(daemon.socket)
            yield run
    finally:
        proxy.stop()
        imds.stop()


# --- (a) calls per 100 pod starts ------------------------------------------------------------------


@dataclass
class ChurnResult:
    name: str
    startup: collections.Counter[str]
    churn: collections.Counter[str]
    startup_seconds: float
    churn_seconds: float
    retries: int
    late_rounds: int
    add_ms: list[float]


def churn(
    moto: MotoEc2, name: str, env: dict[str, str], idle: tuple[int, int], args: argparse.Namespace
) -> ChurnResult:
    scaled = {
        "IP_COOLDOWN_PERIOD": f"{args.cooldown:g}",
        "POOL_RELEASE_DELAY": f"{args.release_delay:g}",
        "RECONCILE_INTERVAL": f"{args.reconcile:g}",
        "POOL_MIN_ACTION_INTERVAL": f"{args.interval:g}",
    }
    with node_run(moto, {}, **scaled, **env) as run:
        run.wait_idle(*idle)
        run.check_consistent(f"{name} after start-up")
        startup = run.calls()
        startup_seconds = time.monotonic() - run.launched
        retries = late = 0
        add_ms: list[float] = []
        first = time.monotonic()
        for r in range(args.rounds):
            due = first + r * args.round_period
            if time.monotonic() > due + 0.05:
                late += 1
            time.sleep(max(0.0, due - time.monotonic()))
            cids = [f"churn{r:02d}{i:02d}" for i in range(args.pods_per_round)]
            for cid in cids:
                began, ended, again = run.add(cid)
                add_ms.append((ended - began) * 1000)
                retries += again
            for cid in cids:
                run.delete(cid)
        settled = run.wait_idle(*idle)
        total = run.calls()
        run.check_consistent(f"{name} after the churn")
        return ChurnResult(
            name=name,
            startup=startup,
            churn=total - startup,
            startup_seconds=startup_seconds,
            churn_seconds=settled - first,
            retries=retries,
            late_rounds=late,
            add_ms=add_ms,
        )


def mutating(calls: collections.Counter[str]) -> int:
    return sum(n for action, n in calls.items() if action in MUTATING)


def report_churn(results: list[ChurnResult], starts: int) -> None:
    actions = sorted(
        {a for r in results for a in (*r.startup, *r.churn)}, key=lambda a: (a not in MUTATING, a)
    )
    head = "".join(f" | {r.name + ' start-up':>27} {r.name + ' churn':>20}" for r in results)
    print(f"  {'EC2 Action (* mutating)':<36}{head}")
    for action in actions:
        label = action + (" *" if action in MUTATING else "")
        row = "".join(f" | {r.startup[action]:>27} {r.churn[action]:>20}" for r in results)
        print(f"  {label:<36}{row}")
    for label, fn in (("total", lambda c: sum(c.values())), ("mutating", mutating)):
        row = "".join(f" | {fn(r.startup):>27} {fn(r.churn):>20}" for r in results)
        print(f"  {label:<36}{row}")
    for r in results:
        total, mut = sum(r.churn.values()), mutating(r.churn)
        per = 100 / starts
        print(
            f"  {r.name}: per 100 pod starts {total * per:.0f} calls, {mut * per:.0f} mutating; start-up "
            f"{sum(r.startup.values())} calls ({mutating(r.startup)} mutating) in {r.startup_seconds:.1f} s; "
            f"churn + scale-down {r.churn_seconds:.1f} s; ADD p50 {median(r.add_ms):.0f} ms "
            f"p99 {percentile(r.add_ms, 0.99):.0f} ms; code-11 retries {r.retries}; "
            f"late rounds {r.late_rounds}"
        )


# --- (b) burst of 27 pods on an empty node ---------------------------------------------------------


@dataclass
class BurstResult:
    name: str
    fill_s: float  # ready -> last pod running
    ready_s: float  # launch -> ready
    add_s: list[float]  # per pod: first attempt -> success
    retries: int
    calls: collections.Counter[str]  # launch -> last pod running
    actions: float  # pool actions the daemon carried out (cloudcni_pool_actions_total)


BURST_DELAYS = {"mutating": 0.2, "AttachNetworkInterface": 2.2}


def burst(moto: MotoEc2, name: str, interval: float, concurrency: int) -> BurstResult:
    with node_run(moto, BURST_DELAYS, POOL_MIN_ACTION_INTERVAL=f"{interval:g}") as run:
        t0 = time.monotonic()
        # kubelet's parallel sandbox starts; a SystemExit from run.add is re-raised here
        with ThreadPoolExecutor(concurrency, thread_name_prefix="kubelet") as pool:
            results = list(pool.map(run.add, [f"burst{i:04d}" for i in range(NODE_PODS)]))
        done = max(ended for _, ended, _ in results)
        calls = run.calls()
        run.check_consistent(f"{name} after the burst")
        actions = sum(
            v for k, v in run.daemon.metrics().items() if k.startswith("cloudcni_pool_actions_total{")
        )
        return BurstResult(
            name=name,
            fill_s=done - t0,
            ready_s=run.ready - run.launched,
            add_s=[ended - began for began, ended, _ in results],
            retries=sum(r for _, _, r in results),
            calls=calls,
            actions=actions,
        )


def report_burst(results: dict[str, list[BurstResult]]) -> dict[str, float]:
    fills: dict[str, float] = {}
    for name, runs in results.items():
        fill = median([r.fill_s for r in runs])
        fills[name] = fill
        p50 = median([median(r.add_s) for r in runs])
        p99 = median([percentile(r.add_s, 0.99) for r in runs])
        total = median([sum(r.calls.values()) for r in runs])
        mut = median([mutating(r.calls) for r in runs])
        print(
            f"  {name:<30} fill {fill:5.2f} s (runs {', '.join(f'{r.fill_s:.2f}' for r in runs)}); "
            f"ADD p50 {p50:5.2f} s p99 {p99:5.2f} s; EC2 calls {total:.0f} ({mut:.0f} mutating); "
            f"pool actions {median([r.actions for r in runs]):.0f}; code-11 retries "
            f"{median([float(r.retries) for r in runs]):.0f}; "
            f"launch->ready {median([r.ready_s for r in runs]):.2f} s"
        )
        by_action: collections.Counter[str] = collections.Counter()
        for r in runs:
            by_action.update(r.calls)
        print(
            "    calls by Action (summed over runs): "
            + ", ".join(f"{a} {n}" for a, n in sorted(by_action.items()))
        )
    return fills


def rss(moto: MotoEc2, repeats: int) -> None:
    """(c) VmRSS once idle at WARM_IP_TARGET=5 after start-up: aws, aws with the Kubernetes integration
    on (a fake kube-apiserver, node and pod watches open), sim; alternated."""
    from tests.fakes.kube_apiserver import KubeApiServer

    samples: dict[str, list[float]] = {"aws": [], "aws, Kubernetes integration on": [], "sim": []}
    for _ in range(repeats):
        with node_run(moto, {}, WARM_IP_TARGET="5") as run:
            run.wait_idle(1, 5)
            time.sleep(1.0)
            samples["aws"].append(run.daemon.rss_mb())
        with KubeApiServer() as api, tempfile.TemporaryDirectory() as tmp:
            api.add_node("bench-node")
            k8s = {"NODE_NAME": "bench-node", "KUBECONFIG": api.kubeconfig(Path(tmp) / "kubeconfig")}
            with node_run(moto, {}, WARM_IP_TARGET="5", **k8s) as run:
                run.wait_idle(1, 5)
                api.wait_for_watches(2)
                time.sleep(1.0)
                samples["aws, Kubernetes integration on"].append(run.daemon.rss_mb())
        with Daemon(None, CLOUD_PROVIDER="sim", SIM_API_LATENCY="0.01", WARM_IP_TARGET="5") as daemon:
            daemon.wait_available(5)
            time.sleep(1.0)
            samples["sim"].append(daemon.rss_mb())
    print(f"\n(c) RSS once idle at WARM_IP_TARGET=5 after start-up; {repeats} runs each, alternated")
    for name, values in samples.items():
        print(
            f"  {name:<33} VmRSS {median(values):6.1f} MiB "
            f"(runs {', '.join(f'{v:.1f}' for v in values)}); target <= 80: ratio {median(values) / 80:.2f}"
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--only", choices=("calls", "burst", "rss"), default=None)
    parser.add_argument("--repeats", type=int, default=3, help="burst runs per configuration (default 3)")
    parser.add_argument("--concurrency", type=int, default=8, help="burst ADDs in flight (default 8)")
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--pods-per-round", type=int, default=10)
    parser.add_argument("--round-period", type=float, default=3.0, help="seconds between churn rounds")
    parser.add_argument("--cooldown", type=float, default=3.0, help="IP_COOLDOWN_PERIOD for the churn")
    parser.add_argument("--release-delay", type=float, default=3.0, help="POOL_RELEASE_DELAY for the churn")
    parser.add_argument("--reconcile", type=float, default=6.0, help="RECONCILE_INTERVAL for the churn")
    parser.add_argument("--interval", type=float, default=0.0, help="POOL_MIN_ACTION_INTERVAL for the churn")
    args = parser.parse_args()
    began = time.monotonic()
    moto = moto_server()
    print(f"moto {moto.endpoint}; m5.large; load average (1 min) at start: {load_average()}")

    if args.only in (None, "calls"):
        starts = args.rounds * args.pods_per_round
        print(
            f"\n(a) EC2 calls: {args.rounds} rounds every {args.round_period:g} s of "
            f"{args.pods_per_round} ADDs then {args.pods_per_round} DELs ({starts} pod starts); "
            f"IP_COOLDOWN_PERIOD={args.cooldown:g} POOL_RELEASE_DELAY={args.release_delay:g} "
            f"RECONCILE_INTERVAL={args.reconcile:g} POOL_MIN_ACTION_INTERVAL={args.interval:g}"
        )
        results = [
            churn(moto, "WARM_ENI_TARGET=1", {"WARM_ENI_TARGET": "1"}, (1, 9), args),
            churn(moto, "WARM_IP_TARGET=5", {"WARM_IP_TARGET": "5"}, (1, 5), args),
        ]
        report_churn(results, starts)

    if args.only in (None, "burst"):
        print(
            f"\n(b) burst: {NODE_PODS} pods, {args.concurrency} at a time, from daemon ready; proxy delays "
            f"{BURST_DELAYS}; {args.repeats} runs each, alternated"
        )
        configs = {"event-driven (interval 0)": 0.0, "paced (POOL_MIN_ACTION_INTERVAL=5)": 5.0}
        runs: dict[str, list[BurstResult]] = {name: [] for name in configs}
        for _ in range(args.repeats):
            for name, interval in configs.items():
                result = burst(moto, name, interval, args.concurrency)
                runs[name].append(result)
                print(f"    run: {name}: fill {result.fill_s:.2f} s, {sum(result.calls.values())} calls")
        fills = report_burst(runs)
        event, paced = fills.values()
        print(f"  fill time paced / event-driven: {paced / event:.2f}")

    if args.only in (None, "rss"):
        rss(moto, args.repeats)

    print(f"\nwall time {time.monotonic() - began:.0f} s; load average (1 min) at the end: {load_average()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
