"""Start-up validation, SIGTERM, SIGKILL during a stream of ADD/DEL, and a damaged checkpoint."""

from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from ipamd.rpc.client import CniFailure, IpamClient, attachment

from .conftest import ROOT, DaemonProcess, daemon_env

pytestmark = pytest.mark.integration


@pytest.mark.parametrize(
    ("var", "value", "allowed"),
    [
        ("CLOUD_PROVIDER", "", "required"),
        ("CLOUD_PROVIDER", "gcp", "aws, azure, sim"),
        ("WARM_IP_TARGET", "-1", "integer >= 0"),
        ("WARM_ENI_TARGET", "lots", "integer >= 0"),
        ("MAX_ENI", "0", "integer >= 1"),
        ("IP_COOLDOWN_PERIOD", "soon", "seconds"),
        ("ENABLE_PREFIX_DELEGATION", "maybe", "true or false"),
        ("METRICS_BIND", "61678", "host:port"),
        ("IPAMD_SOCKET", "relative.sock", "absolute path"),
        ("SIM_INSTANCE_TYPE", "m9.huge", "m5.large"),
    ],
    ids=lambda v: str(v)[:20],
)
def test_bad_env_stops_daemon_with_one_line(tmp_path: Path, var: str, value: str, allowed: str) -> None:
    env = daemon_env(tmp_path)
    env[var] = value
    done = subprocess.run(
        [sys.executable, "-m", "ipamd"], env=env, capture_output=True, text=True, timeout=30, cwd=ROOT
    )
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert var in lines[0] and allowed in lines[0]
    assert "Traceback" not in done.stderr
    assert not Path(env["IPAMD_SOCKET"]).exists()


def test_sigterm_flushes_checkpoint_and_removes_socket(daemon: DaemonProcess) -> None:
    daemon.start()
    ip = daemon.client().add(attachment("term0001")).ip
    assert daemon.stop(signal.SIGTERM) == 0
    assert not Path(daemon.socket).exists()
    state = json.loads(daemon.checkpoint.read_text())
    assert [a["ip"] for a in state["assignments"]] == [ip]
    assert any(e.get("event") == "daemon_stopped" for e in daemon.events())


def test_second_daemon_on_the_same_socket_refuses(daemon: DaemonProcess, tmp_path: Path) -> None:
    daemon.start()
    env = daemon_env(tmp_path / "other", IPAMD_SOCKET=daemon.socket)
    done = subprocess.run(
        [sys.executable, "-m", "ipamd"], env=env, capture_output=True, text=True, timeout=30, cwd=ROOT
    )
    assert done.returncode == 2 and "IPAMD_SOCKET" in done.stderr
    assert daemon.client().status().ready, "the first daemon still serves"


class _Stream:
    """Clients doing ADD/DEL on their own keys, recording what was answered and what was in flight."""

    def __init__(self, socket: str, workers: int, keys_per_worker: int, seed: int) -> None:
        self.socket = socket
        self.answered: dict[str, str | None] = {}  # key -> IP after last answered op (None: deleted)
        self.in_flight: set[str] = set()
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.threads = [
            threading.Thread(target=self._run, args=(w, keys_per_worker, seed + w), daemon=True)
            for w in range(workers)
        ]

    def _run(self, worker: int, nkeys: int, seed: int) -> None:
        rng = random.Random(seed)
        keys = [f"w{worker:02d}k{k:03d}" for k in range(nkeys)]
        client = IpamClient(self.socket, timeout=5)
        try:
            while not self.stop.is_set():
                key = rng.choice(keys)
                adding = self.answered.get(key) is None
                with self.lock:
                    self.in_flight.add(key)
                try:
                    if adding:
                        ip: str | None = client.add(attachment(key)).ip
                    else:
                        client.delete(attachment(key))
                        ip = None
                except CniFailure:
                    return  # the daemon died under us: the key stays in flight
                with self.lock:
                    self.answered[key] = ip
                    self.in_flight.discard(key)
        finally:
            client.close()

    def __enter__(self) -> _Stream:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(10)


def test_sigkill_during_add_del_stream_loses_and_duplicates_nothing(daemon: DaemonProcess) -> None:
    env = {
        "WARM_IP_TARGET": "8",
        "MINIMUM_IP_TARGET": "20",
        "IP_COOLDOWN_PERIOD": "30",
        "SIM_INSTANCE_TYPE": "c5.18xlarge",
    }
    daemon.start(**env)
    daemon.wait_pool(lambda p: p["available"] >= 8)
    expected: dict[str, str | None] = {}
    for round_no in range(3):
        with _Stream(daemon.socket, workers=6, keys_per_worker=3, seed=round_no * 100) as stream:
            time.sleep(0.8)
            daemon.kill()
        with stream.lock:
            answered = dict(stream.answered)
            in_flight = set(stream.in_flight)
        assert answered, "the stream made progress before the kill"
        daemon.start(**env)
        assignments = daemon.get("/v1/assignments")
        by_key = {a["container_id"]: a["ip"] for a in assignments}
        ips = [a["ip"] for a in assignments]
        assert len(ips) == len(set(ips)), "an IP is assigned twice after restart"
        for key, ip in {**expected, **answered}.items():
            if key in in_flight:
                continue
            assert by_key.get(key) == ip, f"{key}: answered {ip}, restored {by_key.get(key)}"
        # Keys in flight resolve either way; carry the restored truth into the next round.
        expected = {key: by_key.get(key) for key in {*expected, *answered, *in_flight}}
        pool = daemon.get("/v1/pool")
        assert pool["assigned"] == len(assignments)
        assert pool["total"] == pool["assigned"] + pool["available"] + pool["cooling"] + pool["quarantined"]
    # Cool-downs survived the restarts: IPs released in the last 30 s are not handed out again while
    # others are free.
    checkpoint = json.loads(daemon.checkpoint.read_text())
    cooling = {c["ip"] for c in checkpoint["cooling"] if c["until"] > time.time() + 1}
    assert cooling, "released IPs are cooling"
    daemon.wait_pool(lambda p: p["available"] >= 3)
    client = daemon.client()
    fresh = [client.add(attachment(f"fresh{i:03d}")).ip for i in range(3)]
    assert not cooling & set(fresh)


@pytest.mark.parametrize("damage", ["truncate", "garbage", "bad-checksum"])
def test_damaged_checkpoint_never_hands_an_ip_to_two_pods(daemon: DaemonProcess, damage: str) -> None:
    env = {"WARM_IP_TARGET": "4", "MINIMUM_IP_TARGET": "12"}
    daemon.start(**env)
    daemon.wait_pool(lambda p: p["total"] >= 12)
    client = daemon.client()
    held = {client.add(attachment(f"old{i:03d}")).ip for i in range(5)}
    assert daemon.stop() == 0
    # The previous generation lacks the last answered ADDs; damage the current one too.
    prev = daemon.checkpoint.with_name(daemon.checkpoint.name + ".prev")
    prev.unlink(missing_ok=True)
    data = daemon.checkpoint.read_bytes()
    if damage == "truncate":
        daemon.checkpoint.write_bytes(data[: len(data) // 2])
    elif damage == "garbage":
        daemon.checkpoint.write_bytes(b"\x00\xff not json")
    else:
        daemon.checkpoint.write_bytes(data.replace(b'"old000"', b'"old999"'))
    daemon.start(**env)
    assert any(e.get("event") == "checkpoint_recovered_with_quarantine" for e in daemon.events())
    assert list(daemon.checkpoint.parent.glob("ipam.json.corrupt-*")), (
        "the damaged file is kept for the operator"
    )
    client = daemon.client()
    new = {client.add(attachment(f"new{i:03d}")).ip for i in range(10)}
    assert not held & new, "an IP of a pod the daemon forgot was handed out again"
    pool = daemon.get("/v1/pool")
    assert pool["quarantined"] >= len(held)
    assert "cloudcni_pool_ips_quarantined" in daemon.metrics()
    # CNI GC naming exactly what the daemon knows proves the quarantined owners gone.
    valid = [(f"new{i:03d}", "eth0") for i in range(10)]
    client.gc("cloud-cni", valid)
    assert daemon.get("/v1/pool")["quarantined"] == 0
