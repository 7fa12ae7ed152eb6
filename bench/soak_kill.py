"""SIGKILL under churn: the real daemon (sim cloud, DATAPATH=none, a short IP_COOLDOWN_PERIOD) killed
at random moments while client workers run ADD/DEL churn through ``ipamd.rpc.client.IpamClient``,
and restarted each time on the same checkpoint and the same sim cloud state.

Workers behave as a runtime does: a call that gets no answer (the daemon died under it) is retried,
the same call, until the restarted daemon answers it. A kill lands at a random moment of the churn
(a fifth of them during a start-up instead). After each restart the workers pause (finishing their
retries), and these are checked:

* no IP assigned to two attachments (/v1/assignments);
* no answered ADD lost: every attachment whose ADD was answered, and not DEL'd since, is held with
  the same IP;
* no answered DEL resurrected: an attachment whose last answered call was a DEL is not held;
* no address leaked: the sim cloud's addresses (its state file) equal the pool's (/v1/pool), once
  the manager is quiet;

and, over the whole run, the cool-down of answered DELs: an IP whose DEL was first sent at t must
not come back in an ADD answered before t + IP_COOLDOWN_PERIOD. Such an early hand-out is a
*cool-down override*. The daemon's documented exception (docs/pool-policy.md, docs/design.md)
allows one only when the pool cannot grow, or after the ADD waited COOLDOWN_OVERRIDE_WAIT (when the
daemon has that setting). Overrides are counted; one that happened while the pool could grow
(/v1/pool's ``growth_blocked`` empty in every sample around the ADD) and sooner than
COOLDOWN_OVERRIDE_WAIT is a violation. The checks are conservative: an event counts only when the
timestamps prove it (ADD answered before the earliest moment the address could have been freed).

Usage: PYTHONPATH=. .venv/bin/python bench/soak_kill.py [--kills 100] [--seed 1] [--workers 4]
"""

from __future__ import annotations

import argparse
import bisect
import collections
import http.client
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc

sys.path.insert(0, str(Path(__file__).resolve().parent))
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from _daemon import Daemon, load_average  # noqa: E402

from ipamd.rpc.client import CniFailure, IpamClient, attachment  # noqa: E402

COOLDOWN = 2.0
DAEMON_ENV = {
    # Room to grow (15 interfaces x 49): a cool-down override here is never forced by the node's limits.
    "SIM_INSTANCE_TYPE": "c5.18xlarge",
    "WARM_IP_TARGET": "4",
    "MINIMUM_IP_TARGET": "8",
    "IP_COOLDOWN_PERIOD": str(COOLDOWN),
    "POOL_RELEASE_DELAY": "1",  # the pool shrinks too: releases to the cloud are under the kills
    "SIM_API_LATENCY": "0.02",
    "RECONCILE_INTERVAL": "5",
}
RETRYABLE = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.UNKNOWN}


@dataclass
class Handout:
    """An answered ADD that gave ``key`` an address it did not hold before."""

    key: str
    ip: str
    first_sent: float
    answered: float


@dataclass
class Release:
    """An answered DEL: ``ip`` was freed at some moment in [first_sent, answered]."""

    key: str
    ip: str
    first_sent: float
    answered: float


@dataclass
class Report:
    kills: int = 0
    kills_in_startup: int = 0
    restarts: int = 0
    checks: int = 0
    calls: collections.Counter[str] = field(default_factory=collections.Counter)
    retries: int = 0
    overrides: int = 0
    overrides_pool_blocked: int = 0
    overrides_after_wait: int = 0
    violations: list[str] = field(default_factory=list)
    seconds: float = 0.0
    restart_seconds: list[float] = field(default_factory=list)
    override_wait: float | None = None

    def violation(self, text: str) -> None:
        if len(self.violations) < 1000:
            self.violations.append(text)


class KillableDaemon(Daemon):
    """bench/_daemon.Daemon that can be SIGKILLed and restarted on its own directory."""

    def spawn(self) -> None:
        with open(self.log_path, "ab") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "ipamd"], env=self.env, stdout=subprocess.DEVNULL, stderr=err, cwd=ROOT
            )

    def __enter__(self) -> KillableDaemon:
        self.spawn()
        self.wait_ready()
        return self

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    @property
    def sim_state(self) -> Path:
        return Path(self.env["SIM_STATE_PATH"])


class Tracker:
    """What the clients know: answered calls, in order, with their timestamps."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.live: dict[str, str] = {}  # key -> ip, answered ADD not followed by an answered DEL
        self.handouts: list[Handout] = []
        self.releases: dict[str, list[Release]] = collections.defaultdict(list)  # ip -> releases

    def added(self, key: str, ip: str, first_sent: float, answered: float, report: Report) -> None:
        with self.lock:
            report.calls["ADD"] += 1
            before = self.live.get(key)
            if before is not None and before != ip:
                report.violation(f"{key}: ADD again gave {ip}, it held {before}")
            self.live[key] = ip
            if before is None:
                self.handouts.append(Handout(key, ip, first_sent, answered))

    def deleted(self, key: str, first_sent: float, answered: float, report: Report) -> None:
        with self.lock:
            report.calls["DEL"] += 1
            ip = self.live.pop(key, None)
            if ip is not None:
                self.releases[ip].append(Release(key, ip, first_sent, answered))


class PoolMonitor(threading.Thread):
    """Samples /v1/pool: when could the pool grow? (``growth_blocked`` empty.)"""

    def __init__(self, daemon: KillableDaemon, interval: float = 0.1) -> None:
        super().__init__(daemon=True)
        self.d = daemon
        self.interval = interval
        self.samples: list[tuple[float, bool]] = []  # (time, could grow)
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                pool = self.d.get("/v1/pool")
                self.samples.append((time.time(), not pool.get("growth_blocked")))
            except (OSError, ValueError, http.client.HTTPException):
                pass  # the daemon is down, starting, or was killed mid-answer
            self.stop.wait(self.interval)

    def could_grow(self, start: float, end: float) -> bool:
        """True when every sample in [start - interval, end + interval] says the pool could grow, and
        there is at least one (no sample: unknown, counted as blocked)."""
        times = [t for t, _ in self.samples]
        lo = bisect.bisect_left(times, start - self.interval)
        hi = bisect.bisect_right(times, end + self.interval)
        window = self.samples[lo:hi]
        return bool(window) and all(grow for _, grow in window)


class Worker(threading.Thread):
    """ADD/DEL churn over its own containers; an unanswered call is retried until answered."""

    def __init__(self, n: int, d: KillableDaemon, tracker: Tracker, report: Report, seed: int) -> None:
        super().__init__(daemon=True)
        self.n = n
        self.d = d
        self.tracker = tracker
        self.report = report
        self.rng = random.Random(f"{seed}-worker-{n}")
        self.slots = [f"kill-w{n}-c{i}" for i in range(5)]
        self.live: set[str] = set()
        self.run_flag = threading.Event()  # cleared: pause at the next call boundary
        self.idle = threading.Event()
        self.done = threading.Event()
        self.client = IpamClient(d.socket, timeout=15)
        self.generation = 0  # containers get a fresh id after each DEL: a new pod, as on a node

    def _fresh_client(self) -> None:
        self.client.close()
        self.client = IpamClient(self.d.socket, timeout=15)

    def _call(self, fn: Any) -> Any:
        while True:
            try:
                return fn()
            except CniFailure as exc:
                if exc.status in RETRYABLE or exc.cni_code == 11:
                    with self.tracker.lock:
                        self.report.retries += 1
                    self._fresh_client()  # grpc's reconnect backoff grows to seconds: start over
                    time.sleep(0.05)
                    continue
                raise

    def run(self) -> None:
        names = {s: s for s in self.slots}
        while not self.done.is_set():
            if not self.run_flag.is_set():
                self.idle.set()
                self.run_flag.wait(0.2)
                continue
            self.idle.clear()
            slot = self.rng.choice(self.slots)
            cid = names[slot]
            att = attachment(cid)
            first = time.time()
            try:
                if cid in self.live:
                    self._call(lambda att=att: self.client.delete(att))
                    self.tracker.deleted(cid, first, time.time(), self.report)
                    self.live.discard(cid)
                    self.generation += 1
                    names[slot] = f"{slot}-g{self.generation}"
                else:
                    reply = self._call(lambda att=att: self.client.add(att))
                    self.tracker.added(cid, reply.ip, first, time.time(), self.report)
                    self.live.add(cid)
            except CniFailure as exc:
                self.report.violation(f"{cid}: unexpected error {exc}")
        self.client.close()


def parse_ips(doc: dict[str, Any]) -> set[str]:
    """Every pod-assignable address of a sim state file or a /v1/pool document (prefixes as /28s)."""
    out: set[str] = set()
    for iface in doc["interfaces"]:
        out.update(iface["ips"])
        out.update(iface["prefixes"])
    return out


def check_state(d: KillableDaemon, tracker: Tracker, report: Report, where: str) -> None:
    """Workers paused, nothing in flight: the daemon's state against what the clients were told."""
    report.checks += 1
    held = {a["container_id"]: a["ip"] for a in d.get("/v1/assignments")}
    by_ip = collections.Counter(held.values())
    for ip, n in by_ip.items():
        if n > 1:
            owners = sorted(k for k, v in held.items() if v == ip)
            report.violation(f"{where}: {ip} assigned to {n} attachments: {owners}")
    with tracker.lock:
        live = dict(tracker.live)
    for key, ip in live.items():
        if held.get(key) != ip:
            report.violation(f"{where}: answered ADD lost: {key} had {ip}, the daemon holds {held.get(key)}")
    for key in set(held) - set(live):
        report.violation(f"{where}: answered DEL resurrected (or unknown attachment): {key} -> {held[key]}")
    # Leak: the cloud's addresses == the pool's, once the manager is quiet (it may be mid-call).
    deadline = time.monotonic() + 15
    cloud: set[str] = set()
    pool: set[str] = set()
    while time.monotonic() < deadline:
        try:
            cloud = parse_ips(json.loads(d.sim_state.read_text()))
        except (OSError, ValueError):
            cloud = set()
        pool = parse_ips(d.get("/v1/pool"))
        if cloud == pool:
            return
        time.sleep(0.1)
    report.violation(
        f"{where}: cloud and pool differ after 15 s: only in the cloud {sorted(cloud - pool)}, "
        f"only in the pool {sorted(pool - cloud)}"
    )


def check_cooldown(tracker: Tracker, monitor: PoolMonitor, report: Report) -> None:
    """An IP released by an answered DEL must not be handed out before release + cool-down."""
    for h in tracker.handouts:
        earlier = [r for r in tracker.releases.get(h.ip, ()) if r.first_sent < h.answered and r.key != h.key]
        if not earlier:
            continue
        last = max(earlier, key=lambda r: r.first_sent)
        if h.answered >= last.first_sent + COOLDOWN:
            continue  # it may have cooled long enough: not provably early
        report.overrides += 1
        if not monitor.could_grow(h.first_sent, h.answered):
            report.overrides_pool_blocked += 1
        elif report.override_wait is not None and h.answered - h.first_sent >= report.override_wait:
            report.overrides_after_wait += 1
        else:
            report.violation(
                f"cool-down: {h.ip} released by {last.key} (DEL sent {last.first_sent:.3f}) handed to "
                f"{h.key} by an ADD sent {h.first_sent:.3f}, answered {h.answered:.3f} "
                f"({h.answered - last.first_sent:.3f} s < {COOLDOWN} s) while the pool could grow"
            )


def soak(
    d: KillableDaemon, kills: int, seed: int, workers: int = 4, max_churn: float = 0.8
) -> tuple[Report, Tracker]:
    rng = random.Random(f"{seed}-kills")
    report = Report()
    config = d.get("/v1/config")
    wait = config.get("COOLDOWN_OVERRIDE_WAIT")
    report.override_wait = None if wait in (None, "") else float(str(wait).rstrip("s"))
    tracker = Tracker()
    monitor = PoolMonitor(d)
    monitor.start()
    crew = [Worker(n, d, tracker, report, seed) for n in range(workers)]
    for w in crew:
        w.start()
    started = time.perf_counter()

    def pause() -> None:
        for w in crew:
            w.run_flag.clear()
        for w in crew:
            w.idle.wait(120)

    def resume() -> None:
        for w in crew:
            w.idle.clear()
            w.run_flag.set()

    try:
        for n in range(kills):
            resume()
            time.sleep(rng.uniform(0.05, max_churn))
            d.kill()
            report.kills += 1
            if rng.random() < 0.2:  # a kill during start-up (checkpoint load, reconcile, spool drain)
                d.spawn()
                time.sleep(rng.uniform(0.0, 0.8))
                d.kill()
                report.kills += 1
                report.kills_in_startup += 1
            t0 = time.perf_counter()
            d.spawn()
            d.wait_ready(timeout=60)
            report.restart_seconds.append(time.perf_counter() - t0)
            report.restarts += 1
            pause()  # the workers' retries get their answers from the restarted daemon
            check_state(d, tracker, report, f"after kill {n + 1}")
        resume()
        time.sleep(max_churn)
        pause()
        check_state(d, tracker, report, "at the end")
    finally:
        for w in crew:
            w.done.set()
            w.run_flag.set()
        for w in crew:
            w.join(30)
        monitor.stop.set()
        monitor.join(5)
    report.seconds = time.perf_counter() - started
    check_cooldown(tracker, monitor, report)
    if d.proc is None or d.proc.poll() is not None:
        report.violation("the daemon is not running at the end")
    return report, tracker


def make_daemon(**env: str) -> KillableDaemon:
    d = KillableDaemon(**{**DAEMON_ENV, **env})
    d.env["SIM_STATE_PATH"] = str(d.dir / "run" / "sim-state.json")
    return d


def print_report(report: Report, seed: int, workers: int, d: KillableDaemon) -> None:
    restart = sorted(report.restart_seconds) or [0.0]
    print(f"soak_kill: seed {seed}, {workers} workers, cool-down {COOLDOWN} s, {d.describe()}")
    print(f"settings: {DAEMON_ENV}; load {load_average()}")
    wait = (
        "not set (daemon has no COOLDOWN_OVERRIDE_WAIT)"
        if report.override_wait is None
        else report.override_wait
    )
    print(f"COOLDOWN_OVERRIDE_WAIT: {wait}")
    print(
        f"kills: {report.kills} ({report.kills_in_startup} during start-up), restarts {report.restarts}, "
        f"restart to ready p50 {restart[len(restart) // 2]:.2f} s, max {restart[-1]:.2f} s"
    )
    total = sum(report.calls.values())
    print(
        f"answered calls: {total} (ADD {report.calls['ADD']}, DEL {report.calls['DEL']}), "
        f"retried attempts {report.retries}, {report.seconds:.1f} s"
    )
    print(f"state checks: {report.checks} (two owners, lost ADD, resurrected DEL, cloud == pool)")
    print(
        f"cool-down overrides seen by clients: {report.overrides} "
        f"(pool could not grow: {report.overrides_pool_blocked}, "
        f"after the wait: {report.overrides_after_wait})"
    )
    print(f"violations: {len(report.violations)}")
    for text in report.violations[:20]:
        print("  " + text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kills", type=int, default=100)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--workers", type=int, default=4)
    args = parser.parse_args(argv)
    os.environ.pop("GRPC_VERBOSITY", None)
    with make_daemon() as d:
        d.wait_available(4)
        report, _ = soak(d, args.kills, args.seed, args.workers)
        print_report(report, args.seed, args.workers, d)
    return 1 if report.violations else 0


if __name__ == "__main__":
    sys.exit(main())
