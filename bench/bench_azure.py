"""Azure provider: ARM writes per 100 pod starts, time to fill an empty node, and the daemon's RSS.

Everything runs on 127.0.0.1: the fake Azure (tests/fakes/azure_arm.py: ARM over HTTPS with a
throw-away CA, plus the node's instance metadata and managed-identity token endpoint) in this
process, and the real `python -m ipamd` with CLOUD_PROVIDER=azure and DATAPATH=none on one
Standard_D4s_v3 VM with one NIC in a /24 subnet. Pod addresses are secondary ipConfigurations of the
NIC; every change is a GET and a PUT of the NIC (If-Match). Pods are ADDed and DELeted through the
real plugin (`cloud-cni-shim`); an ADD answered with CNI code 11 ("try again later") is retried after
1 s, as kubelet would. The daemon gets no environment variable of the host that could send it
elsewhere or change its settings (proxies, IDENTITY_/MSI_ endpoints, AZURE_*, CA bundles, any
daemon setting); MAX_PODS is unset (the platform cap, 250).

"batched" is the Azure defaults: WARM_IP_TARGET=8, MINIMUM_IP_TARGET=16, IP_BATCH_SIZE=16 (held
addresses move in multiples of 16). "baseline" is the same targets with the batch off
(IP_BATCH_SIZE=1), so the ratio baseline / batched is what batching buys. A "write" is a PUT that
changed the NIC (the fake's count); a PUT that changed nothing or was refused is counted apart.

(a) ARM requests per 100 pod starts, time scaled down tenfold: IP_COOLDOWN_PERIOD 3 s,
    POOL_RELEASE_DELAY 3 s, RECONCILE_INTERVAL 6 s and CLOUD_API_RATE 10/s (defaults 30, 30, 60 and
    1/s; the bucket stays at 10) with a round every 3 s stand for a round every 30 s at the defaults.
    Start-up is the daemon's launch until the pool is idle at its target (16 held, none assigned).
    Churn, a rolling replacement on a node of up to 30 pods: 10 rounds, one every --round-period s;
    each round starts 10 new pods (ADDed --concurrency at a time, as kubelet starts the pods of a
    rollout in parallel), then stops the 10 started two rounds before, so the node runs 10, 20, then
    30 pods at each round's peak and 20 between rounds (each pod lives two rounds, ~60 s at full
    scale). After the last round the 20 left are stopped. The churn counts from the first ADD until
    the pool is idle at its target again (16 held), its scale-down included: 100 pod starts.
    Worst pattern: pods arriving one at a time, each ADD only once the previous one's write (if any)
    has landed (the pool is back at its warm target and no PUT came for 0.2 s), so concurrent pod
    starts never share a write: 30 pods up one by one, then all stopped, until idle again; printed
    for the whole cycle and for the ramp alone (the scale-down's writes weigh on only 30 starts).
    For every run the pool's moves are listed from the daemon's log (+n assigned, -n released). One
    run per configuration by default (~110 s for all four); --churn-repeats N prints medians.
(b) Fill an empty node: a fresh daemon at the Azure defaults (real time, CLOUD_API_RATE 1/s, burst
    10), the fake sleeping 1 s before every PUT; 30 pods ADDed --concurrency at a time from the
    moment /healthz answers. Wall time from ready to the 30th pod running, ADD latency p50/p99 (first
    attempt to success) and the writes used by then; batched and baseline alternated, --repeats times
    each, medians printed.
(c) Resident memory (VmRSS from /proc/<pid>/status, and its peak VmHWM) once the daemon is idle at its
    target after start-up: CLOUD_PROVIDER=azure against CLOUD_PROVIDER=sim (same pool targets),
    alternated, --repeats times each.

No assertions: figures only, and a WARNING when the NIC's addresses on the fake differ from the
daemon's /v1/pool, when the daemon's write actions and the fake's writes disagree, or when the fake
recorded an internal error.

    .venv/bin/python bench/bench_azure.py [--repeats 3] [--only a|b|c] [--churn-repeats 1]   # ~3 min
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _daemon import Daemon, load_average, median, percentile  # noqa: E402

from ipamd.config import VARIABLES  # noqa: E402
from tests.fakes.azure_arm import FakeArm, FakeImds, Vm  # noqa: E402
from tests.integration.test_shim_exec import netconf, shim  # noqa: E402

TRY_AGAIN = 11  # CNI "try again later": the pool is empty and did not grow within ADD_WAIT_TIMEOUT
RETRY_AFTER = 1.0  # seconds before a retried ADD, as kubelet
NODE_PODS = 30
WARM, MINIMUM, BATCH = 8, 16, 16  # the Azure defaults
VM_NAME = "node-1"
NIC_NAME = f"{VM_NAME}-nic0"

BATCHED: dict[str, str] = {}  # the Azure defaults: set nothing
BASELINE = {"IP_BATCH_SIZE": "1", "WARM_IP_TARGET": str(WARM), "MINIMUM_IP_TARGET": str(MINIMUM)}
CONFIGS = {"batched": (BATCHED, BATCH), "baseline": (BASELINE, 1)}

# What the daemon keeps from the bench's own Daemon() environment; the rest is set here.
_DAEMON_OWN = ("IPAMD_SOCKET", "CHECKPOINT_PATH", "METRICS_BIND", "INTROSPECTION_BIND", "PYTHONPATH")
_SETTINGS = {v.name for v in VARIABLES}
_FOREIGN_PREFIXES = ("AZURE_", "AWS_", "SIM_", "IDENTITY_", "MSI_", "IMDS_", "MSAL_")
_FOREIGN = {"REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "SSL_CERT_FILE", "SSL_CERT_DIR", "PYTHONPATH"}


def host_env() -> dict[str, str]:
    """The host's environment without anything that could steer the daemon or its HTTP clients."""
    return {
        k: v
        for k, v in os.environ.items()
        if k not in _SETTINGS
        and k.upper() not in _FOREIGN
        and not k.upper().startswith(_FOREIGN_PREFIXES)
        and not k.upper().endswith("_PROXY")
    }


def make_daemon(**settings: str) -> Daemon:
    daemon = Daemon(None)
    own = {k: daemon.env[k] for k in _DAEMON_OWN}
    daemon.env = {**host_env(), **own, "DATAPATH": "none", "LOG_LEVEL": "info", **settings}
    return daemon


def ideal_held(assigned: int, batch: int) -> int:
    """Where the pool settles with ``assigned`` pods and nothing cooling (ipamd/pool/policy.py)."""
    need = max(assigned + WARM, MINIMUM)
    return batch * -(-need // batch)


# --- one node: fake ARM VM + its IMDS + the daemon -----------------------------------------------


@dataclass
class Counts:
    """ARM requests seen by the fake, and what the daemon says it did."""

    gets: int = 0
    puts: int = 0
    puts_refused: int = 0  # PUTs answered with an error
    writes: int = 0  # PUTs that changed the NIC
    actions: int = 0  # the daemon's AssignIps/ReleaseIps carried out (cloudcni_pool_actions_total)

    def __sub__(self, other: Counts) -> Counts:
        return Counts(
            self.gets - other.gets,
            self.puts - other.puts,
            self.puts_refused - other.puts_refused,
            self.writes - other.writes,
            self.actions - other.actions,
        )


@dataclass
class Node:
    arm: FakeArm
    vm: Vm
    imds: FakeImds
    daemon: Daemon
    launched: float  # monotonic time of the daemon's launch
    ready: float  # monotonic time /healthz first answered
    conf: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    def counts(self, *, actions: bool = True) -> Counts:
        with self.arm._lock:  # the fake appends under this lock
            requests = list(self.arm.requests)
            writes = self.arm.writes
        return Counts(
            gets=sum(1 for m, *_ in requests if m == "GET"),
            puts=sum(1 for m, *_ in requests if m == "PUT"),
            puts_refused=sum(1 for m, _, s, _ in requests if m == "PUT" and s >= 400),
            writes=writes,
            actions=self.write_actions() if actions else 0,
        )

    def write_actions(self) -> int:
        return int(
            sum(
                v
                for k, v in self.daemon.metrics().items()
                if k.startswith("cloudcni_pool_actions_total{")
                and ('action="AssignIps"' in k or 'action="ReleaseIps"' in k)
                and 'result="ok"' in k
            )
        )

    def add(self, cid: str) -> tuple[float, float, int]:
        """ADD until it succeeds, retrying code 11 after 1 s: (first attempt, success, code-11s)."""
        started = time.monotonic()
        retries = 0
        deadline = started + 90.0
        while True:
            done = shim("ADD", self.conf, cid=cid)
            if done.code == 0:
                return started, time.monotonic(), retries
            err = done.json if done.stdout.strip() else {"stderr": done.stderr}
            if err.get("code") != TRY_AGAIN or time.monotonic() > deadline:
                raise SystemExit(f"ADD {cid} failed: {err}\n{self.daemon.log_path.read_text()[-3000:]}")
            retries += 1
            time.sleep(RETRY_AFTER)

    def add_many(self, cids: list[str], concurrency: int) -> list[tuple[float, float, int]]:
        """ADD ``cids`` with ``concurrency`` in flight (kubelet's parallel sandbox starts)."""
        # a SystemExit from add is re-raised here
        with ThreadPoolExecutor(concurrency, thread_name_prefix="kubelet") as pool:
            results = list(pool.map(self.add, cids))
        return results

    def delete(self, cid: str) -> None:
        done = shim("DEL", self.conf, cid=cid)
        if done.code != 0:
            raise SystemExit(f"DEL {cid} failed: {done.stdout} {done.stderr}")

    def pool(self) -> dict[str, Any]:
        return dict(self.daemon.get("/v1/pool"))

    def check(self, what: str) -> None:
        """Record a warning when the fake's NIC and the daemon's pool differ, or the fake erred."""
        cloud = sorted(self.arm.ips_of(NIC_NAME))
        ours = sorted(ip for i in self.pool()["interfaces"] for ip in i["ips"])
        if cloud != ours:
            self.warnings.append(
                f"{what}: the fake's NIC holds {len(cloud)} secondary addresses, the daemon's pool "
                f"{len(ours)}; only on the fake {sorted(set(cloud) - set(ours))}, "
                f"only in the daemon {sorted(set(ours) - set(cloud))}"
            )
        if self.arm.errors:
            self.warnings.append(f"{what}: the fake recorded errors {self.arm.errors!r}")

    def wait_idle(self, total: int, assigned: int, *, quiet: float = 1.0, timeout: float = 60.0) -> float:
        """Until the pool holds ``total`` addresses, ``assigned`` of them assigned and none cooling,
        and no PUT came for ``quiet`` s; returns the monotonic time of the last PUT (or now)."""
        deadline = time.monotonic() + timeout
        puts, changed = self.arm.count("PUT"), time.monotonic()
        pool: dict[str, Any] = {}
        while time.monotonic() < deadline:
            now_puts = self.arm.count("PUT")
            if now_puts != puts:
                puts, changed = now_puts, time.monotonic()
            pool = self.pool()
            at_target = pool["total"] == total and pool["assigned"] == assigned and pool["cooling"] == 0
            if at_target and time.monotonic() - changed >= quiet:
                return changed
            time.sleep(0.05)
        summary = {k: v for k, v in pool.items() if k != "interfaces"}
        raise SystemExit(f"pool not idle at {total} held, {assigned} assigned after {timeout}s: {summary}")

    def wait_settled(self, warm: int, quiet: float = 0.2, timeout: float = 30.0) -> None:
        """Until ``warm`` addresses are free and no PUT came for ``quiet`` s (the last write landed)."""
        deadline = time.monotonic() + timeout
        puts, changed = self.arm.count("PUT"), time.monotonic()
        while time.monotonic() < deadline:
            now_puts = self.arm.count("PUT")
            if now_puts != puts:
                puts, changed = now_puts, time.monotonic()
            if self.pool()["available"] >= warm and time.monotonic() - changed >= quiet:
                return
            time.sleep(0.02)
        raise SystemExit(f"pool never settled at {warm} free: {self.pool()}")

    def log_events(self, event: str) -> int:
        return len(re.findall(rf'"event": "{event}"', self.daemon.log_path.read_text()))

    def pool_moves(self) -> list[int]:
        """The daemon's pool changes in order from its log: +n per ips_assigned, -n per ips_released."""
        moves = []
        for line in self.daemon.log_path.read_text().splitlines():
            if '"event": "ips_assigned"' in line or '"event": "ips_released"' in line:
                count = int(json.loads(line)["count"])
                moves.append(count if "ips_assigned" in line else -count)
        return moves


@contextmanager
def azure_node(arm: FakeArm, env: dict[str, str], write_delay: float = 0.0) -> Iterator[Node]:
    arm.reset()
    vm = arm.add_vm(VM_NAME)
    imds = arm.imds_for(vm)
    arm.write_delay = write_delay
    daemon = make_daemon(CLOUD_PROVIDER="azure", **arm.client_env(imds), **env)
    try:
        launched = time.monotonic()
        with daemon:
            node = Node(arm, vm, imds, daemon, launched, time.monotonic())
            node.conf = netconf(daemon.socket)
            yield node
    finally:
        imds.stop()


# --- (a) ARM requests per 100 pod starts ---------------------------------------------------------


@dataclass
class ChurnResult:
    name: str
    startup: Counts
    churn: Counts
    starts: int
    startup_s: float
    churn_s: float
    add_ms: list[float]
    retries: int
    late_rounds: int = 0
    ramp: Counts | None = None  # one at a time: the ramp alone (first ADD until the 30th pod settled)
    moves: list[int] = field(default_factory=list)  # pool changes after start-up, from the daemon's log
    imds: int = 0  # instance metadata requests (token requests included) during start-up
    coalesced: int = 0
    etag_retries: int = 0
    warnings: list[str] = field(default_factory=list)


def scaled_env(args: argparse.Namespace) -> dict[str, str]:
    return {
        "IP_COOLDOWN_PERIOD": f"{args.cooldown:g}",
        "POOL_RELEASE_DELAY": f"{args.release_delay:g}",
        "RECONCILE_INTERVAL": f"{args.reconcile:g}",
        "CLOUD_API_RATE": f"{args.api_rate:g}",
    }


def startup_phase(node: Node) -> tuple[Counts, float, int, int]:
    """Counts, seconds, IMDS requests and pool moves from launch until idle at the target."""
    node.wait_idle(MINIMUM, 0)
    node.check("after start-up")
    return node.counts(), time.monotonic() - node.launched, len(node.imds.requests), len(node.pool_moves())


def churn(arm: FakeArm, name: str, env: dict[str, str], args: argparse.Namespace) -> ChurnResult:
    with azure_node(arm, {**scaled_env(args), **env}) as node:
        startup, startup_s, imds, skip = startup_phase(node)
        retries = late = 0
        add_ms: list[float] = []
        rounds: list[list[str]] = []
        first = time.monotonic()
        for r in range(args.rounds):
            due = first + r * args.round_period
            if time.monotonic() > due + 0.05:
                late += 1
            time.sleep(max(0.0, due - time.monotonic()))
            cids = [f"churn{r:02d}{i:02d}" for i in range(args.pods_per_round)]
            rounds.append(cids)
            for began, ended, again in node.add_many(cids, args.concurrency):
                add_ms.append((ended - began) * 1000)
                retries += again
            if r >= args.lifetime:
                for cid in rounds[r - args.lifetime]:
                    node.delete(cid)
        for cids in rounds[max(0, args.rounds - args.lifetime) :]:
            for cid in cids:
                node.delete(cid)
        settled = node.wait_idle(MINIMUM, 0)
        node.check("after the churn")
        return ChurnResult(
            name=name,
            startup=startup,
            churn=node.counts() - startup,
            starts=args.rounds * args.pods_per_round,
            startup_s=startup_s,
            churn_s=settled - first,
            add_ms=add_ms,
            retries=retries,
            late_rounds=late,
            moves=node.pool_moves()[skip:],
            imds=imds,
            coalesced=node.log_events("azure_writes_coalesced"),
            etag_retries=node.log_events("azure_etag_mismatch_retry"),
            warnings=node.warnings,
        )


def one_at_a_time(arm: FakeArm, name: str, env: dict[str, str], args: argparse.Namespace) -> ChurnResult:
    with azure_node(arm, {**scaled_env(args), **env}) as node:
        startup, startup_s, imds, skip = startup_phase(node)
        add_ms: list[float] = []
        retries = 0
        first = time.monotonic()
        cids = [f"single{i:02d}" for i in range(NODE_PODS)]
        for cid in cids:
            began, ended, again = node.add(cid)
            add_ms.append((ended - began) * 1000)
            retries += again
            node.wait_settled(WARM)
        ramp = node.counts() - startup
        node.check("after the one-at-a-time ramp")
        for cid in cids:
            node.delete(cid)
        settled = node.wait_idle(MINIMUM, 0)
        node.check("after the one-at-a-time scale-down")
        return ChurnResult(
            name=name,
            startup=startup,
            churn=node.counts() - startup,
            starts=NODE_PODS,
            startup_s=startup_s,
            churn_s=settled - first,
            add_ms=add_ms,
            retries=retries,
            ramp=ramp,
            moves=node.pool_moves()[skip:],
            imds=imds,
            coalesced=node.log_events("azure_writes_coalesced"),
            etag_retries=node.log_events("azure_etag_mismatch_retry"),
            warnings=node.warnings,
        )


def report_requests(title: str, results: list[ChurnResult]) -> None:
    print(f"  {title}")
    head = "".join(f" | {r.name + ' start-up':>18} {r.name + ' churn':>15}" for r in results)
    print(f"    {'ARM requests':<34}{head}")
    rows: tuple[tuple[str, Callable[[Counts], int]], ...] = (
        ("GET (reads)", lambda c: c.gets),
        ("PUT", lambda c: c.puts),
        ("  of which refused (4xx/5xx)", lambda c: c.puts_refused),
        ("writes (PUTs that changed the NIC)", lambda c: c.writes),
        ("daemon AssignIps/ReleaseIps done", lambda c: c.actions),
    )
    for label, fn in rows:
        cells = "".join(f" | {fn(r.startup):>18} {fn(r.churn):>15}" for r in results)
        print(f"    {label:<34}{cells}")
    for r in results:
        per = 100 / r.starts
        print(
            f"    {r.name}: per 100 pod starts {r.churn.writes * per:.1f} writes, {r.churn.puts * per:.1f} "
            f"PUTs, {r.churn.gets * per:.1f} GETs ({r.starts} starts); start-up {r.startup_s:.1f} s, "
            f"churn + scale-down {r.churn_s:.1f} s; ADD p50 {median(r.add_ms):.0f} ms p99 "
            f"{percentile(r.add_ms, 0.99):.0f} ms; code-11 retries {r.retries}; late rounds "
            f"{r.late_rounds}; coalesced writes {r.coalesced}; etag retries {r.etag_retries}; "
            f"start-up IMDS requests {r.imds}"
        )
        print(f"      pool moves after start-up (daemon log): {' '.join(f'{m:+d}' for m in r.moves)}")
        if r.ramp is not None:
            print(
                f"      of which the ramp 0 -> {r.starts} pods: {r.ramp.writes} writes "
                f"({r.ramp.writes * per:.1f} per 100 pod starts), {r.ramp.gets} GETs; the scale-down "
                f"{r.churn.writes - r.ramp.writes} writes"
            )
        for c, phase in ((r.startup, "start-up"), (r.churn, "churn")):
            if c.actions != c.writes:
                print(
                    f"    WARNING {r.name} {phase}: the daemon carried out {c.actions} AssignIps/ReleaseIps, "
                    f"the fake counted {c.writes} writes"
                )
        for w in r.warnings:
            print(f"    WARNING {r.name} {w}")


# --- (b) fill an empty node to 30 pods with 1 s per write ------------------------------------------


@dataclass
class FillResult:
    name: str
    fill_s: float  # ready -> 30th pod running
    ready_s: float  # launch -> ready
    add_s: list[float]
    retries: int
    at_fill: Counts  # launch -> 30th pod running
    at_idle: Counts  # launch -> idle at 30 pods
    held_at_idle: int
    warnings: list[str]


def fill(arm: FakeArm, name: str, env: dict[str, str], batch: int, args: argparse.Namespace) -> FillResult:
    with azure_node(arm, env, write_delay=args.write_delay) as node:
        t0 = node.ready
        results = node.add_many([f"fill{i:02d}" for i in range(NODE_PODS)], args.concurrency)
        done = max(ended for _, ended, _ in results)
        at_fill = node.counts()
        held = ideal_held(NODE_PODS, batch)
        node.wait_idle(held, NODE_PODS, quiet=args.write_delay + 0.5)
        node.check("after the fill")
        return FillResult(
            name=name,
            fill_s=done - t0,
            ready_s=node.ready - node.launched,
            add_s=[ended - began for began, ended, _ in results],
            retries=sum(r for _, _, r in results),
            at_fill=at_fill,
            at_idle=node.counts(),
            held_at_idle=held,
            warnings=node.warnings,
        )


def report_fill(runs: dict[str, list[FillResult]]) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    for name, rs in runs.items():
        figures = {
            "fill": median([r.fill_s for r in rs]),
            "p50": median([median(r.add_s) for r in rs]),
            "p99": median([percentile(r.add_s, 0.99) for r in rs]),
            "writes": median([float(r.at_fill.writes) for r in rs]),
            "writes_idle": median([float(r.at_idle.writes) for r in rs]),
        }
        out[name] = figures
        print(
            f"  {name:<9} fill {figures['fill']:5.2f} s (runs {', '.join(f'{r.fill_s:.2f}' for r in rs)}); "
            f"ADD p50 {figures['p50']:5.2f} s p99 {figures['p99']:5.2f} s; writes by the 30th pod "
            f"{figures['writes']:.0f} (GETs {median([float(r.at_fill.gets) for r in rs]):.0f}, "
            f"PUTs {median([float(r.at_fill.puts) for r in rs]):.0f}), until idle at "
            f"{rs[0].held_at_idle} held {figures['writes_idle']:.0f}; code-11 retries "
            f"{median([float(r.retries) for r in rs]):.0f}; launch->ready "
            f"{median([r.ready_s for r in rs]):.2f} s"
        )
        for r in rs:
            c = r.at_idle
            if c.actions != c.writes:
                print(
                    f"    WARNING {name}: the daemon carried out {c.actions} AssignIps/ReleaseIps, "
                    f"the fake counted {c.writes} writes"
                )
            for w in r.warnings:
                print(f"    WARNING {name} {w}")
    return out


# --- (c) RSS ---------------------------------------------------------------------------------------


def rss(arm: FakeArm, provider: str) -> tuple[float, float]:
    """(VmRSS, VmHWM) in MiB once the daemon is idle at its target after start-up."""
    targets = {"WARM_IP_TARGET": str(WARM), "MINIMUM_IP_TARGET": str(MINIMUM), "IP_BATCH_SIZE": str(BATCH)}
    if provider == "azure":
        with azure_node(arm, {}) as node:
            node.wait_idle(MINIMUM, 0)
            time.sleep(1.0)
            return node.daemon.rss_mb(), _hwm_mb(node.daemon.pid)
    with make_daemon(CLOUD_PROVIDER="sim", SIM_API_LATENCY="0.01", **targets) as daemon:
        deadline = time.monotonic() + 30
        while daemon.get("/v1/pool")["total"] < MINIMUM and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(1.0)
        return daemon.rss_mb(), _hwm_mb(daemon.pid)


def _hwm_mb(pid: int) -> float:
    match = re.search(r"^VmHWM:\s+(\d+) kB", Path(f"/proc/{pid}/status").read_text(), re.M)
    return int(match.group(1)) / 1024 if match else float("nan")


# --- main --------------------------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--only", choices=("a", "b", "c"), default=None)
    parser.add_argument("--repeats", type=int, default=3, help="(b) and (c) runs per configuration")
    parser.add_argument(
        "--churn-repeats",
        type=int,
        default=1,
        help="(a) repetitions, medians printed (default 1; ~110 s each)",
    )
    parser.add_argument("--concurrency", type=int, default=8, help="ADDs in flight (default 8)")
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--pods-per-round", type=int, default=10)
    parser.add_argument("--lifetime", type=int, default=2, help="rounds a churn pod lives (default 2)")
    parser.add_argument("--round-period", type=float, default=3.0, help="seconds between churn rounds")
    parser.add_argument("--cooldown", type=float, default=3.0, help="(a) IP_COOLDOWN_PERIOD")
    parser.add_argument("--release-delay", type=float, default=3.0, help="(a) POOL_RELEASE_DELAY")
    parser.add_argument("--reconcile", type=float, default=6.0, help="(a) RECONCILE_INTERVAL")
    parser.add_argument("--api-rate", type=float, default=10.0, help="(a) CLOUD_API_RATE")
    parser.add_argument("--write-delay", type=float, default=1.0, help="(b) seconds the fake adds per PUT")
    args = parser.parse_args()
    began = time.monotonic()
    # This process talks to 127.0.0.1 only (the daemon's HTTP endpoints, the fake): no proxy either.
    for name in [k for k in os.environ if k.upper().endswith("_PROXY")]:
        del os.environ[name]
    os.environ["NO_PROXY"] = os.environ["no_proxy"] = "127.0.0.1,localhost"
    arm = FakeArm().start()
    print(
        f"fake ARM {arm.arm_url}; VM {VM_NAME} (1 NIC, subnet /24); python {sys.version.split()[0]}; "
        f"load average (1 min) at start: {load_average()}"
    )
    table: list[str] = []
    memory: list[str] = []
    try:
        if args.only in (None, "a"):
            starts = args.rounds * args.pods_per_round
            print(
                f"\n(a) ARM requests: {args.rounds} rounds every {args.round_period:g} s, each "
                f"{args.pods_per_round} ADDs ({args.concurrency} in flight) then the DELs of the round "
                f"{args.lifetime} before "
                f"({starts} pod starts, <= {args.pods_per_round * (args.lifetime + 1)} pods); "
                f"IP_COOLDOWN_PERIOD={args.cooldown:g} POOL_RELEASE_DELAY={args.release_delay:g} "
                f"RECONCILE_INTERVAL={args.reconcile:g} CLOUD_API_RATE={args.api_rate:g}"
            )
            rolling: list[list[ChurnResult]] = []  # per repetition: [batched, baseline]
            singles: list[list[ChurnResult]] = []
            for n in range(args.churn_repeats):
                suffix = f" (run {n + 1} of {args.churn_repeats})" if args.churn_repeats > 1 else ""
                rolling.append([churn(arm, name, env, args) for name, (env, _) in CONFIGS.items()])
                report_requests("rolling churn" + suffix, rolling[-1])
                singles.append([one_at_a_time(arm, name, env, args) for name, (env, _) in CONFIGS.items()])
                report_requests(
                    f"worst pattern: {NODE_PODS} pods one at a time, then all stopped" + suffix, singles[-1]
                )

            def per100(runs: list[list[ChurnResult]], index: int, *, reads: bool, ramp: bool) -> float:
                """Median over the repetitions of the writes (or GETs) per 100 pod starts."""
                values = []
                for pair in runs:
                    r = pair[index]
                    c = r.ramp if ramp and r.ramp is not None else r.churn
                    values.append((c.gets if reads else c.writes) * 100 / r.starts)
                return median(values)

            peak = args.pods_per_round * (args.lifetime + 1)
            rows = (
                (f"rolling churn ({args.rounds} x {args.pods_per_round} pods, <= {peak})", rolling, False),
                (f"one at a time, 0 -> {NODE_PODS} -> 0 pods", singles, False),
                (f"one at a time, ramp 0 -> {NODE_PODS} only", singles, True),
            )
            for title, runs_a, ramp in rows:
                wb, wbase = (per100(runs_a, k, reads=False, ramp=ramp) for k in (0, 1))
                rb, rbase = (per100(runs_a, k, reads=True, ramp=ramp) for k in (0, 1))
                table.append(
                    f"| ARM writes per 100 pod starts, {title} | {wb:.1f} "
                    f"({'met' if wb <= 12.5 else 'MISSED'}) | {wbase:.1f} | "
                    f"{wbase / wb if wb else float('inf'):.1f}x fewer |"
                )
                table.append(
                    f"| ARM reads (GET) per 100 pod starts, {title} | {rb:.1f} | {rbase:.1f} | "
                    f"{rbase / rb if rb else float('inf'):.1f}x fewer |"
                )
            b0, base0 = rolling[0]
            table.append(
                f"| start-up (launch -> 16 held): ARM writes / reads | {b0.startup.writes} / "
                f"{b0.startup.gets} | {base0.startup.writes} / {base0.startup.gets} | |"
            )

        if args.only in (None, "b"):
            print(
                f"\n(b) fill an empty node: {NODE_PODS} pods, {args.concurrency} at a time, from daemon "
                f"ready; the fake adds {args.write_delay:g} s to every PUT; Azure defaults otherwise; "
                f"{args.repeats} runs each, alternated"
            )
            runs: dict[str, list[FillResult]] = {name: [] for name in CONFIGS}
            for _ in range(args.repeats):
                for name, (env, batch) in CONFIGS.items():
                    one = fill(arm, name, env, batch, args)
                    runs[name].append(one)
                    print(f"    run: {name}: fill {one.fill_s:.2f} s, {one.at_fill.writes} writes")
            figs = report_fill(runs)
            fb, fbase = figs["batched"], figs["baseline"]
            print(
                f"  baseline / batched: fill time {fbase['fill'] / fb['fill']:.2f}, ADD p99 "
                f"{fbase['p99'] / fb['p99']:.2f}, writes {fbase['writes'] / max(fb['writes'], 1):.2f}"
            )
            table.append(
                f"| fill 0 -> {NODE_PODS} pods, 1 s per write: wall time | {fb['fill']:.1f} s | "
                f"{fbase['fill']:.1f} s | {fbase['fill'] / fb['fill']:.1f}x faster |"
            )
            table.append(
                f"| fill: ADD p50 / p99 | {fb['p50']:.2f} / {fb['p99']:.2f} s | {fbase['p50']:.2f} / "
                f"{fbase['p99']:.2f} s | |"
            )
            table.append(
                f"| fill: writes by the {NODE_PODS}th pod | {fb['writes']:.0f} | {fbase['writes']:.0f} | "
                f"{fbase['writes'] / max(fb['writes'], 1):.1f}x fewer |"
            )

        if args.only in (None, "c"):
            print(f"\n(c) RSS once idle after start-up; {args.repeats} runs each, alternated")
            mem: dict[str, list[tuple[float, float]]] = {"azure": [], "sim": []}
            for _ in range(args.repeats):
                for provider, samples in mem.items():
                    samples.append(rss(arm, provider))
            for provider, samples in mem.items():
                print(
                    f"  CLOUD_PROVIDER={provider:<5} VmRSS {median([s[0] for s in samples]):6.1f} MiB "
                    f"(runs {', '.join(f'{s[0]:.1f}' for s in samples)}); VmHWM "
                    f"{median([s[1] for s in samples]):6.1f} MiB"
                )
            az, sim = (median([s[0] for s in mem[p]]) for p in ("azure", "sim"))
            print(f"  azure / sim: {az / sim:.2f} (+{az - sim:.1f} MiB)")
            memory = [
                f"| CLOUD_PROVIDER={p} | {median([s[0] for s in mem[p]]):.0f} MiB | "
                f"{median([s[1] for s in mem[p]]):.0f} MiB |"
                for p in mem
            ]
    finally:
        arm.stop()

    if table:
        print("\n(a), (b): the write target is <= 12.5 ARM writes per 100 pod starts (one per 8)")
        print("| figure | batched (Azure defaults) | baseline (IP_BATCH_SIZE=1) | batched vs baseline |")
        print("|---|---|---|---|")
        for row in table:
            print(row)
    if memory:
        print("\n(c) daemon memory, idle after start-up (median)")
        print("| provider | VmRSS | VmHWM (peak) |")
        print("|---|---|---|")
        for row in memory:
            print(row)
    print(f"\nwall time {time.monotonic() - began:.0f} s; load average (1 min) at the end: {load_average()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
