"""Start-up failures end in one line and release what the daemon took; directories are not chmod-ed.

Each case starts the real daemon (``python -m ipamd``) on the sim cloud. A read-only directory is
a path under /proc or /sys: as root a chmod would not stop the daemon, those are never writable.
"""

from __future__ import annotations

import asyncio
import fcntl
import json
import os
import socket
import stat
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from ipamd import spool
from ipamd.config import Settings
from ipamd.daemon import Daemon, StartFailed, _path_failure
from ipamd.errors import ConfigError
from ipamd.rpc.client import attachment

from .conftest import ROOT, DaemonProcess, daemon_env

pytestmark = pytest.mark.integration

as_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (chown to another user)")


@pytest.fixture
def listening() -> Iterator[str]:
    """A 127.0.0.1 address some other process already listens on."""
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        yield f"127.0.0.1:{held.getsockname()[1]}"


def start_and_fail(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    env = {**env, "LOG_LEVEL": "error"}  # nothing is logged at error on these paths: stderr is the line
    return subprocess.run(
        [sys.executable, "-m", "ipamd"], env=env, capture_output=True, text=True, timeout=60, cwd=ROOT
    )


def assert_one_line(done: subprocess.CompletedProcess[str], code: int, *names: str) -> str:
    assert "Traceback" not in done.stderr, done.stderr
    assert "Event loop is closed" not in done.stderr, done.stderr
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("cloud-cni ipamd: "), lines[0]
    for name in names:
        assert name in lines[0], (name, lines[0])
    assert done.returncode == code, done.stderr
    return lines[0]


def _garbage(tmp: Path) -> str:
    path = tmp / "garbage.json"
    path.write_bytes(b"\x00\xffnot json")
    return str(path)


def _directory(tmp: Path) -> str:
    (tmp / "a-directory").mkdir()
    return str(tmp / "a-directory")


UNUSABLE_PATHS: dict[str, tuple[str, Callable[[Path], str]]] = {
    "socket-under-proc": ("IPAMD_SOCKET", lambda _: "/proc/cloud-cni-test/ipamd.sock"),
    "socket-under-sys": ("IPAMD_SOCKET", lambda _: "/sys/cloud-cni-test/ipamd.sock"),
    "checkpoint-under-proc": ("CHECKPOINT_PATH", lambda _: "/proc/cloud-cni-test/ipam.json"),
    "checkpoint-under-sys": ("CHECKPOINT_PATH", lambda _: "/sys/cloud-cni-test/ipam.json"),
    "checkpoint-in-proc": ("CHECKPOINT_PATH", lambda _: "/proc/ipam.json"),
    "sim-state-under-sys": ("SIM_STATE_PATH", lambda _: "/sys/cloud-cni-test/sim.json"),
    "sim-state-garbage": ("SIM_STATE_PATH", _garbage),
    "sim-state-a-directory": ("SIM_STATE_PATH", _directory),
    "sim-state-unreadable": ("SIM_STATE_PATH", lambda _: "/proc/self/mem"),
}


@pytest.mark.parametrize("case", list(UNUSABLE_PATHS))
def test_unusable_path_stops_the_start_with_one_line(tmp_path: Path, case: str) -> None:
    var, make = UNUSABLE_PATHS[case]
    value = make(tmp_path)
    env = daemon_env(tmp_path, **{var: value})
    done = start_and_fail(env)
    assert_one_line(done, 2, f"{var}={value!r}")
    assert not Path(env["IPAMD_SOCKET"]).exists()


@pytest.mark.parametrize("var", ["METRICS_BIND", "INTROSPECTION_BIND"])
def test_port_in_use_stops_the_start_with_one_line(tmp_path: Path, listening: str, var: str) -> None:
    env = daemon_env(tmp_path, **{var: listening})
    done = start_and_fail(env)
    line = assert_one_line(done, 2, f"{var}={listening!r}")
    assert "in use" in line
    assert not Path(env["IPAMD_SOCKET"]).exists(), "no socket is left behind"


def test_a_failed_start_releases_the_checkpoint_lock_and_the_socket(tmp_path: Path, listening: str) -> None:
    # In this process: the kernel drops a lock when a process exits, not when a daemon forgets it.
    stale = tmp_path / "run" / "ipamd.sock"
    stale.parent.mkdir(mode=0o700)
    with socket.socket(socket.AF_UNIX) as old:  # a socket file nobody listens on: a crashed daemon's
        old.bind(str(stale))
    settings = Settings.from_env(daemon_env(tmp_path, INTROSPECTION_BIND=listening))
    with pytest.raises(ConfigError, match="INTROSPECTION_BIND"):
        asyncio.run(Daemon(settings).run())
    assert not stale.exists()
    fd = os.open(f"{settings.checkpoint_path}.lock", os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # raises BlockingIOError if still held
    finally:
        os.close(fd)
    # and a daemon can start on the same paths right away
    settings = Settings.from_env(daemon_env(tmp_path, METRICS_BIND="off", INTROSPECTION_BIND=listening))
    with pytest.raises(ConfigError, match="INTROSPECTION_BIND"):
        asyncio.run(Daemon(settings).run())


def test_a_start_failure_that_is_not_configuration_exits_1() -> None:
    full = OSError(28, "No space left on device")
    assert isinstance(_path_failure("CHECKPOINT_PATH", "/x/ipam.json", "cannot create /x", full), StartFailed)
    read_only = OSError(30, "Read-only file system")
    assert isinstance(
        _path_failure("CHECKPOINT_PATH", "/x/ipam.json", "cannot create /x", read_only), ConfigError
    )


# --- the directories of the socket and the checkpoint ---------------------------------------------


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_an_existing_sticky_world_writable_directory_is_used_and_left_alone(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o1777)  # as /tmp
    env = daemon_env(
        tmp_path, IPAMD_SOCKET=str(shared / "ipamd.sock"), CHECKPOINT_PATH=str(shared / "ipam.json")
    )
    daemon = DaemonProcess(dir=tmp_path, env=env).start()
    try:
        assert mode(shared) == 0o1777
        assert stat.S_IMODE(os.stat(daemon.socket).st_mode) == 0o600
        assert daemon.client().status().ready
        metrics = daemon.metrics()
        for task in ("pool_manager", "leak_sweep", "del_spool"):  # each long-lived task is supervised
            assert f'cloudcni_task_restarts_total{{task="{task}"}} 0.0' in metrics
    finally:
        assert daemon.stop() == 0
    assert mode(shared) == 0o1777
    assert not Path(daemon.socket).exists()


def test_directories_the_daemon_creates_are_0700(tmp_path: Path) -> None:
    sock = tmp_path / "made" / "sock-dir" / "ipamd.sock"
    ckpt = tmp_path / "made" / "state" / "ipam.json"
    daemon = DaemonProcess(
        dir=tmp_path, env=daemon_env(tmp_path, IPAMD_SOCKET=str(sock), CHECKPOINT_PATH=str(ckpt))
    ).start()
    try:
        for directory in (tmp_path / "made", sock.parent, ckpt.parent):
            assert mode(directory) == 0o700, directory
    finally:
        assert daemon.stop() == 0


@pytest.mark.parametrize("var", ["IPAMD_SOCKET", "CHECKPOINT_PATH"])
def test_a_world_writable_directory_without_sticky_bit_is_refused(tmp_path: Path, var: str) -> None:
    open_dir = tmp_path / "open"
    open_dir.mkdir()
    open_dir.chmod(0o777)
    value = str(open_dir / ("ipamd.sock" if var == "IPAMD_SOCKET" else "ipam.json"))
    done = start_and_fail(daemon_env(tmp_path, **{var: value}))
    line = assert_one_line(done, 2, f"{var}={value!r}")
    assert "sticky" in line
    assert mode(open_dir) == 0o777, "refused, not changed"
    assert list(open_dir.iterdir()) == []


@as_root
def test_a_directory_owned_by_another_user_is_refused(tmp_path: Path) -> None:
    theirs = tmp_path / "theirs"
    theirs.mkdir(mode=0o755)
    os.chown(theirs, 65534, 65534)
    value = str(theirs / "ipam.json")
    done = start_and_fail(daemon_env(tmp_path, CHECKPOINT_PATH=value))
    assert "uid 65534" in assert_one_line(done, 2, f"CHECKPOINT_PATH={value!r}")


# --- the DEL spool at start -------------------------------------------------------------------


def test_a_queued_del_that_raises_is_set_aside_and_the_daemon_starts(daemon: DaemonProcess) -> None:
    daemon.start()
    for cid in ("spool01", "spool02", "spool03"):
        daemon.client().add(attachment(cid))
    assert daemon.stop() == 0
    spool_dir = Path(daemon.socket).parent / spool.SPOOL_DIRNAME
    spool_dir.mkdir(mode=0o700)
    deep = "[" * 100_000 + "]" * 100_000  # makes the DEL raise RecursionError, not a validation error
    for cid, prev in (("spool01", ""), ("spool02", deep), ("spool03", "")):
        entry = {
            "version": spool.SPOOL_VERSION,
            "network": "cloud-cni",
            "containerID": cid,
            "ifName": "eth0",
            "netns": "",
            "podNamespace": "default",
            "podName": cid,
            "podUID": "",
            "prevResult": prev,
            "queuedAt": 0.0,
        }
        (spool_dir / f"cloud-cni.{cid}.eth0.json").write_text(json.dumps(entry))

    daemon.start()

    assert [a["container_id"] for a in daemon.get("/v1/assignments")] == ["spool02"]
    assert sorted(p.name for p in spool_dir.iterdir()) == [spool.FAILED_DIRNAME]
    assert [p.name for p in (spool_dir / spool.FAILED_DIRNAME).iterdir()] == ["cloud-cni.spool02.eth0.json"]
    assert 'cloudcni_spooled_dels_set_aside_total{reason="failed"} 1.0' in daemon.metrics()
    assert any(e.get("event") == "spooled_del_failed" for e in daemon.events())
    assert daemon.stop() == 0
