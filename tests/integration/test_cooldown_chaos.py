"""Issue 11 on the real daemon: kubelet-like churn must not reuse an address before its cool-down ends
while the pool can grow, and every early reuse there is must be an override the daemon counted.

The daemon runs on the sim cloud as a c5.18xlarge (15 interfaces x 50 addresses: room for 700), with
WARM_IP_TARGET=5 and IP_COOLDOWN_PERIOD=5. Eight workers ADD and DEL through the gRPC client for a
few seconds each. Release times are taken on the client side: an address is released somewhere
between the start and the end of the DEL that freed it, and assigned somewhere between the start and
the end of the ADD that got it, so

    definitely early:  ADD end   - DEL start < IP_COOLDOWN_PERIOD
    possibly early:    ADD start - DEL end   < IP_COOLDOWN_PERIOD

and the overrides the daemon counts lie between the two counts.
"""

from __future__ import annotations

import re
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from ipamd.rpc.client import CniFailure, attachment
from tests.integration.conftest import DaemonProcess, daemon_env

COOLDOWN = 5.0
WORKERS = 8


@dataclass
class Churn:
    """What the workers saw, shared under one lock."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    released: dict[str, tuple[float, float]] = field(default_factory=dict)  # ip -> DEL (start, end)
    releasing: dict[str, float] = field(default_factory=dict)  # ip -> start of a DEL not yet recorded
    adds: int = 0
    definitely_early: list[tuple[str, float]] = field(default_factory=list)
    possibly_early: list[tuple[str, float]] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)  # seconds per successful ADD


def _worker(d: DaemonProcess, churn: Churn, hold: float, stop_at: float) -> None:
    client = d.client()
    while time.monotonic() < stop_at:
        att = attachment(uuid.uuid4().hex)
        add_start = time.monotonic()
        try:
            reply = client.add(att)
        except CniFailure as exc:
            with churn.lock:
                churn.failures.append(str(exc))
            continue
        add_end = time.monotonic()
        ip = reply.ip.split("/")[0]
        with churn.lock:
            churn.adds += 1
            churn.latencies.append(add_end - add_start)
            previous = churn.released.get(ip)
            pending = churn.releasing.get(ip)
            if pending is not None:
                # Another worker's DEL freed it and has not recorded its end yet: the daemon released
                # it after that DEL started, so this reuse is early by both counts.
                churn.definitely_early.append((ip, add_end - pending))
                churn.possibly_early.append((ip, add_start - pending))
            elif previous is not None:
                del_start, del_end = previous
                if add_end - del_start < COOLDOWN:
                    churn.definitely_early.append((ip, add_end - del_start))
                if add_start - del_end < COOLDOWN:
                    churn.possibly_early.append((ip, add_start - del_end))
        time.sleep(hold)
        del_start = time.monotonic()
        with churn.lock:
            churn.releasing[ip] = del_start
        client.delete(att)
        with churn.lock:
            churn.released[ip] = (del_start, time.monotonic())
            if churn.releasing.get(ip) == del_start:  # not yet another worker's DEL of it since
                del churn.releasing[ip]


def _run_churn(d: DaemonProcess, *, seconds: float, hold: float) -> Churn:
    churn = Churn()
    stop_at = time.monotonic() + seconds
    threads = [
        threading.Thread(target=_worker, args=(d, churn, hold, stop_at), daemon=True) for _ in range(WORKERS)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(seconds + 30)
        assert not t.is_alive(), "a worker hung"
    return churn


def _quantile(values: list[float], q: float) -> float:
    ordered = sorted(values) or [0.0]
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _overrides(d: DaemonProcess) -> dict[str, float]:
    found = re.findall(r'^cloudcni_cooldown_overrides_total\{reason="(\w+)"\} (\S+)$', d.metrics(), re.M)
    return {reason: float(value) for reason, value in found}


@pytest.mark.parametrize(
    ("env", "seconds", "can_grow"),
    [
        pytest.param({}, 8.0, True, id="room-for-700-the-pool-grows"),
        pytest.param({"MAX_PODS": "6"}, 3.0, False, id="max-pods-6-it-cannot-grow"),
    ],
)
def test_churn_reuses_no_cooling_address_while_the_pool_can_grow(
    tmp_path: Path, env: dict[str, str], seconds: float, can_grow: bool
) -> None:
    d = DaemonProcess(
        dir=tmp_path,
        env=daemon_env(
            tmp_path,
            SIM_INSTANCE_TYPE="c5.18xlarge",
            WARM_IP_TARGET="5",
            IP_COOLDOWN_PERIOD=str(int(COOLDOWN)),
            SIM_API_LATENCY="0.02",
            **env,
        ),
    )
    try:
        d.start()
        d.wait_pool(lambda p: p["available"] >= 5)
        churn = _run_churn(d, seconds=seconds, hold=0.02)
        overrides = _overrides(d)
        pool = d.get("/v1/pool")
    finally:
        d.stop()

    counted = sum(overrides.values())
    summary = (
        f"{churn.adds} ADDs, {len(churn.definitely_early)} definitely and {len(churn.possibly_early)} "
        f"possibly early, overrides {overrides}, pool {pool['total']} held, ADD latency p50 "
        f"{_quantile(churn.latencies, 0.5):.3f} s p99 {_quantile(churn.latencies, 0.99):.3f} s"
    )
    print(summary)
    assert set(overrides) == {"cannot_grow", "wait_exceeded"}, overrides
    assert churn.failures == [], "a pod failed: " + "; ".join(churn.failures[:3])
    assert churn.adds >= 100, summary
    # Every early reuse is an override the daemon counted, and it counted no other.
    assert len(churn.definitely_early) <= counted <= len(churn.possibly_early), summary
    if can_grow:
        assert churn.definitely_early == [], summary
        assert overrides == {"cannot_grow": 0.0, "wait_exceeded": 0.0}
        assert pool["total"] > 5 + WORKERS, "the pool grew instead"
    else:
        assert pool["total"] == 6
        assert churn.definitely_early, "at max pods the cooling addresses are the only ones: " + summary
        assert overrides["wait_exceeded"] == 0, "served at once, never after the wait"
