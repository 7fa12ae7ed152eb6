"""The real shim against the real daemon on loopback TCP with its token (the Windows transport,
docs/shim.md "On Windows"), run here on Linux: the same `cloud-cni-shim` exec as
test_shim_exec.py, with ``ipamdSocket: tcp://127.0.0.1:PORT`` and ``ipamdTokenFile``.
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from ipamd.rpc.client import CniFailure, IpamClient, attachment

from .conftest import ROOT, DaemonProcess, daemon_env, free_port
from .test_shim_exec import VERSIONS, assert_cni_error, netconf, shim

pytestmark = pytest.mark.integration


class TcpDaemon(DaemonProcess):
    @property
    def token_file(self) -> Path:
        return self.checkpoint.parent / "ipamd.token"  # IPAMD_TOKEN_FILE's default

    def conf(self, version: str = "1.1.0", **extra: Any) -> dict[str, Any]:
        keys: dict[str, Any] = {"ipamdTokenFile": str(self.token_file), "logFile": str(self.dir / "shim.log")}
        return netconf(self.socket, version, **{**keys, **extra})

    def client(self) -> IpamClient:
        c = IpamClient(self.socket, timeout=20, token_file=str(self.token_file))
        self.clients.append(c)
        return c


@pytest.fixture
def tcp_daemon(tmp_path: Path) -> Iterator[TcpDaemon]:
    d = TcpDaemon(dir=tmp_path, env=daemon_env(tmp_path, IPAMD_SOCKET=f"tcp://127.0.0.1:{free_port()}"))
    d.start()
    yield d
    if d.proc is not None and d.proc.poll() is None:
        d.kill()


@pytest.mark.parametrize("version", VERSIONS)
def test_add_check_del_through_tcp(tcp_daemon: TcpDaemon, version: str) -> None:
    conf = tcp_daemon.conf(version)
    cid = f"tcp{version.replace('.', '')}"
    add = shim("ADD", conf, cid=cid)
    assert add.code == 0 and add.stderr == "", add
    result = add.json
    assert result["cniVersion"] == version and result["ips"][0]["address"].endswith("/32")
    assert [a["container_id"] for a in tcp_daemon.get("/v1/assignments")] == [cid]
    check = shim("CHECK", {**conf, "prevResult": result}, cid=cid)
    assert (check.code, check.stdout) == (0, ""), check
    done = shim("DEL", {**conf, "prevResult": result}, cid=cid)
    assert (done.code, done.stdout) == (0, ""), done
    assert tcp_daemon.get("/v1/pool")["assigned"] == 0
    assert_cni_error(shim("CHECK", {**conf, "prevResult": result}, cid=cid), 3)


def test_gc_and_status_through_tcp(tcp_daemon: TcpDaemon) -> None:
    conf = tcp_daemon.conf()
    for cid in ("keep01", "stale01"):
        assert shim("ADD", conf, cid=cid).code == 0
    done = shim("GC", {**conf, "cni.dev/valid-attachments": [{"containerID": "keep01", "ifname": "eth0"}]})
    assert (done.code, done.stdout) == (0, ""), done
    assert [a["container_id"] for a in tcp_daemon.get("/v1/assignments")] == ["keep01"]
    tcp_daemon.wait_pool(lambda p: p["available"] > 0)
    status = shim("STATUS", conf)
    assert (status.code, status.stdout) == (0, ""), status


def test_the_grpcio_client_with_the_token_file(tcp_daemon: TcpDaemon, tmp_path: Path) -> None:
    reply = tcp_daemon.client().add(attachment("grpcio01"))
    assert [a["ip"] for a in tcp_daemon.get("/v1/assignments")] == [reply.ip]
    wrong = tmp_path / "wrong.token"
    wrong.write_text("0" * 64)
    with (
        IpamClient(tcp_daemon.socket, timeout=5, token_file=str(wrong)) as client,
        pytest.raises(CniFailure) as err,
    ):
        client.add(attachment("grpcio02"))
    assert err.value.status == grpc.StatusCode.UNAUTHENTICATED
    with pytest.raises(ValueError, match="token file"):
        IpamClient(tcp_daemon.socket)


def test_a_wrong_token_is_cni_error_7_naming_ipamd_token_file(tcp_daemon: TcpDaemon, tmp_path: Path) -> None:
    wrong = tmp_path / "wrong.token"
    wrong.write_text("0" * 64)
    done = shim("ADD", tcp_daemon.conf(ipamdTokenFile=str(wrong)), cid="wrong01")
    err = assert_cni_error(done, 7, "ipamdTokenFile")
    assert str(wrong) in err["msg"] and str(tcp_daemon.token_file) in err["msg"], "both files are named"
    assert tcp_daemon.token_file.read_text() not in done.stdout
    assert_cni_error(shim("DEL", tcp_daemon.conf(ipamdTokenFile=str(wrong)), cid="wrong01"), 7)
    assert not (tmp_path / "del-spool").exists(), "a config error is not queued"
    assert tcp_daemon.get("/v1/pool")["assigned"] == 0
    assert any(e.get("event") == "rpc_unauthenticated" for e in tcp_daemon.events())
    assert tcp_daemon.token_file.read_text() not in tcp_daemon.logs()


def test_a_stale_token_is_refused_after_a_restart_and_the_shim_rereads_the_file(
    tcp_daemon: TcpDaemon, tmp_path: Path
) -> None:
    conf = tcp_daemon.conf()
    assert shim("ADD", conf, cid="before01").code == 0
    stale = tmp_path / "stale.token"
    stale.write_text(tcp_daemon.token_file.read_text())
    assert tcp_daemon.stop() == 0
    tcp_daemon.start()
    assert tcp_daemon.token_file.read_text() != stale.read_text(), "a new token at every start"
    assert_cni_error(shim("ADD", tcp_daemon.conf(ipamdTokenFile=str(stale)), cid="after01"), 7)
    # the same conflist as before the restart: the shim reads the (rewritten) file on every exec
    add = shim("ADD", conf, cid="after01")
    assert add.code == 0, add
    assert sorted(a["container_id"] for a in tcp_daemon.get("/v1/assignments")) == ["after01", "before01"]


def test_del_with_the_daemon_down_is_queued_beside_the_token_file_and_drained(tcp_daemon: TcpDaemon) -> None:
    conf = tcp_daemon.conf()
    for cid in ("spool01", "spool02", "spool03"):
        assert shim("ADD", conf, cid=cid).code == 0
    assert tcp_daemon.stop() == 0
    for cid in ("spool01", "spool02"):
        done = shim("DEL", conf, cid=cid)
        assert (done.code, done.stdout) == (0, ""), "DEL never blocks pod termination"
    spool = tcp_daemon.token_file.parent / "del-spool"
    assert sorted(p.name for p in spool.iterdir()) == [
        "cloud-cni.spool01.eth0.json",
        "cloud-cni.spool02.eth0.json",
    ]
    assert_cni_error(shim("ADD", conf, cid="down01"), 11, "ECONNREFUSED")
    tcp_daemon.start()
    assert [a["container_id"] for a in tcp_daemon.get("/v1/assignments")] == ["spool03"]
    assert not list(spool.glob("*.json"))
    assert any(e.get("event") == "spooled_dels_drained" for e in tcp_daemon.events())


def test_del_succeeds_when_the_token_files_directory_does_not_exist(tmp_path: Path) -> None:
    conf = netconf(
        f"tcp://127.0.0.1:{free_port()}",
        "1.0.0",
        ipamdTokenFile=str(tmp_path / "never" / "ipamd.token"),
        logFile=str(tmp_path / "shim.log"),
    )
    done = shim("DEL", conf)
    assert (done.code, done.stdout) == (0, "")
    assert not (tmp_path / "never").exists()


# /proc/net/tcp{,6} addresses (hex, in host byte order per 32-bit word): 127.0.0.1; the same as an
# IPv4-mapped IPv6 address (grpc binds 127.0.0.1 on a dual-stack socket); ::1.
V4_LOOPBACK = "0100007F"
V4_MAPPED_LOOPBACK = "0000000000000000FFFF00000100007F"
V6_LOOPBACK = "00000000000000000000000001000000"
LOOPBACK = {V4_LOOPBACK, V4_MAPPED_LOOPBACK, V6_LOOPBACK}


def _listeners(pid: int) -> list[tuple[str, int]]:
    """(local address as hex, port) of every listening TCP socket the process holds."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    found = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            local, state, inode = fields[1], fields[3], fields[9]
            if state == "0A" and inode in inodes:  # 0A: LISTEN
                address, _, port = local.partition(":")
                found.append((address, int(port, 16)))
    return found


def test_nothing_listens_on_a_non_loopback_address(tcp_daemon: TcpDaemon) -> None:
    assert tcp_daemon.proc is not None
    port = int(tcp_daemon.socket.rpartition(":")[2])
    listeners = _listeners(tcp_daemon.proc.pid)
    rpc = [address for address, p in listeners if p == port]
    assert len(rpc) == 1 and rpc[0] in (V4_LOOPBACK, V4_MAPPED_LOOPBACK), listeners
    assert len(listeners) == 3, listeners  # RPC, metrics, introspection
    assert all(address in LOOPBACK for address, _ in listeners), listeners


def test_ipv6_loopback(tmp_path: Path) -> None:
    if "00000000000000000000000000000001" not in Path("/proc/net/if_inet6").read_text():
        pytest.skip("no ::1 on this machine")
    d = TcpDaemon(dir=tmp_path, env=daemon_env(tmp_path, IPAMD_SOCKET=f"tcp://[::1]:{free_port()}"))
    try:
        d.start()
        add = shim("ADD", d.conf(), cid="six01")
        assert add.code == 0, add
        assert d.proc is not None
        port = int(d.socket.rpartition(":")[2])
        assert (V6_LOOPBACK, port) in _listeners(d.proc.pid)
    finally:
        if d.proc is not None and d.proc.poll() is None:
            d.kill()


def test_a_non_loopback_ipamd_socket_stops_the_daemon(tmp_path: Path) -> None:
    env = daemon_env(tmp_path, IPAMD_SOCKET=f"tcp://0.0.0.0:{free_port()}")
    done = subprocess.run(
        [sys.executable, "-m", "ipamd"], env=env, capture_output=True, text=True, timeout=60, cwd=ROOT
    )
    assert done.returncode == 2 and "IPAMD_SOCKET" in done.stderr and "loopback only" in done.stderr
    assert not (tmp_path / "run" / "ipamd.token").exists()


def test_the_shim_over_tcp_imports_nothing_heavy(tcp_daemon: TcpDaemon) -> None:
    """The whole ADD over TCP (token file read, AF_INET socket), not only the import of the shim."""
    stdin = json.dumps(tcp_daemon.conf()).encode()
    probe = (
        "import sys\n"
        f"sys.path.insert(0, {str(ROOT)!r})\n"
        f"stdin = {stdin!r}\n"
        "before = set(sys.modules)\n"
        "from shim import main\n"
        "env = {'CNI_COMMAND': 'ADD', 'CNI_CONTAINERID': 'imports01', 'CNI_IFNAME': 'eth0',\n"
        "       'CNI_NETNS': '/var/run/netns/imports01', 'CNI_PATH': '/opt/cni/bin'}\n"
        "code, out = main.run(env, stdin)\n"
        "assert code == 0, out\n"
        "print(sorted(set(sys.modules) - before))\n"
    )
    out = subprocess.run(
        [sys.executable, "-I", "-S", "-c", probe],
        capture_output=True,
        text=True,
        check=True,
        env={k: v for k, v in os.environ.items() if not k.startswith("PYTHON")},
    ).stdout
    loaded = set(ast.literal_eval(out))
    for heavy in (
        "grpc",
        "google",
        "json",
        "re",
        "socket",
        "ipamd",
        "typing",
        "dataclasses",
        "logging",
        "ssl",
    ):
        assert heavy not in loaded, heavy
    assert "_socket" in loaded
