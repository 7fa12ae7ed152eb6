"""Loopback TCP with a per-daemon token (docs/shim.md, "On Windows"): the IPAMD_SOCKET forms, the
token interceptor of a real ``RpcServer`` on a loopback port (called by grpcio and by the shim's own
client), the token file's life, and the shim's side of it (conflist keys, token file, spool).
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import stat
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import hpack
import pytest
import structlog
from grpc_health.v1 import health_pb2, health_pb2_grpc

from ipamd.config import Settings, tcp_endpoint
from ipamd.errors import ConfigError
from ipamd.rpc.server import RpcServer
from shim import cni, h2grpc
from shim import main as shim_main

BASE = {"CLOUD_PROVIDER": "sim"}
HEALTH_CHECK = "/grpc.health.v1.Health/Check"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# ---- IPAMD_SOCKET and IPAMD_TOKEN_FILE ------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "tcp"),
    [
        ("/var/run/cloud-cni/ipamd.sock", None),
        ("/tmp/x.sock", None),
        ("tcp://127.0.0.1:50051", ("127.0.0.1", 50051)),
        ("tcp://[::1]:1", ("::1", 1)),
        ("tcp://127.0.0.1:65535", ("127.0.0.1", 65535)),
        ("  tcp://127.0.0.1:7000 ", ("127.0.0.1", 7000)),
    ],
    ids=["default", "tmp", "v4", "v6", "port-max", "spaces"],
)
def test_ipamd_socket_accepted_forms(value: str, tcp: tuple[str, int] | None) -> None:
    settings = Settings.from_env({**BASE, "IPAMD_SOCKET": value})
    assert settings.ipamd_socket == value.strip()
    assert tcp_endpoint(settings.ipamd_socket) == tcp


@pytest.mark.parametrize(
    ("value", "why"),
    [
        ("tcp://0.0.0.0:50051", "host '0.0.0.0' is refused"),
        ("tcp://10.0.0.5:50051", "host '10.0.0.5' is refused"),
        ("tcp://192.168.1.1:50051", "host '192.168.1.1' is refused"),
        ("tcp://localhost:50051", "host 'localhost' is refused"),
        ("tcp://127.0.0.2:50051", "host '127.0.0.2' is refused"),
        ("tcp://[::]:50051", "host '[::]' is refused"),
        ("tcp://[fe80::1]:50051", "host '[fe80::1]' is refused"),
        ("tcp://::1:50051", "host '::1' is refused"),
        ("tcp://[127.0.0.1]:50051", "host '[127.0.0.1]' is refused"),
        ("tcp://127.0.0.1", "port 1-65535"),
        ("tcp://127.0.0.1:0", "port 1-65535"),
        ("tcp://127.0.0.1:65536", "port 1-65535"),
        ("tcp://127.0.0.1:5x", "port 1-65535"),
        ("tcp://127.0.0.1:50051/", "port 1-65535"),
        ("tcp://127.0.0.1:" + "9" * 5000, "port 1-65535"),
        ("http://127.0.0.1:50051", "an absolute path"),
        ("run/ipamd.sock", "an absolute path"),
    ],
    ids=lambda v: str(v)[:28],
)
def test_ipamd_socket_refused_forms_name_the_variable_and_what_is_allowed(value: str, why: str) -> None:
    with pytest.raises(ConfigError) as err:
        Settings.from_env({**BASE, "IPAMD_SOCKET": value})
    assert err.value.variable == "IPAMD_SOCKET"
    message = str(err.value)
    assert "tcp://127.0.0.1:PORT or tcp://[::1]:PORT (loopback only)" in message
    assert why in message


def test_token_file_setting() -> None:
    assert Settings.from_env(BASE).ipamd_token_file is None
    assert Settings.from_env({**BASE, "IPAMD_TOKEN_FILE": "/k/t"}).ipamd_token_file == "/k/t"
    with pytest.raises(ConfigError) as err:
        Settings.from_env({**BASE, "IPAMD_TOKEN_FILE": "ipamd.token"})
    assert err.value.variable == "IPAMD_TOKEN_FILE"


def test_the_token_file_defaults_to_beside_the_checkpoint(tmp_path: Path) -> None:
    settings = Settings.from_env(
        {**BASE, "IPAMD_SOCKET": "tcp://127.0.0.1:5000", "CHECKPOINT_PATH": str(tmp_path / "c" / "ipam.json")}
    )
    rpc = RpcServer.from_settings(settings)
    assert rpc.token_file == rpc.local_file == tmp_path / "c" / "ipamd.token"
    assert rpc.local_variable == "IPAMD_TOKEN_FILE"
    unix = RpcServer.from_settings(Settings.from_env({**BASE, "IPAMD_SOCKET": str(tmp_path / "s.sock")}))
    assert (unix.token_file, unix.local_file, unix.local_variable) == (
        None,
        tmp_path / "s.sock",
        "IPAMD_SOCKET",
    )


# ---- the daemon's side: a real RpcServer on a loopback port ---------------------------------------


class Served:
    """An ``RpcServer`` (health only: no IpamService) started on its own event loop in a thread."""

    def __init__(self, address: str, token_file: Path | None) -> None:
        self.rpc = RpcServer(None, address, token_file=None if token_file is None else str(token_file))
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    def __enter__(self) -> Served:
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self.rpc.start(), self.loop).result(10)
        return self

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self.rpc.stop(1.0), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


def health_check(target: str, metadata: tuple[tuple[str, str], ...] = ()) -> Any:
    with grpc.insecure_channel(target) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        return stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=5, metadata=metadata)


def rpc_error(fn: Any) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as caught:
        fn()
    return caught.value


@pytest.fixture
def tcp_server(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    port = free_port()
    token_file = tmp_path / "run" / "ipamd.token"
    token_file.parent.mkdir(mode=0o700)
    with Served(f"tcp://127.0.0.1:{port}", token_file):
        yield f"ipv4:127.0.0.1:{port}", token_file


def test_the_token_file_is_fresh_0600_and_the_right_token_is_served(tcp_server: tuple[str, Path]) -> None:
    target, token_file = tcp_server
    token = token_file.read_text()
    assert len(token) == 64 and int(token, 16) >= 0, "secrets.token_hex(32)"
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
    reply = health_check(target, (("authorization", f"Bearer {token}"),))
    assert reply.status == health_pb2.HealthCheckResponse.SERVING


@pytest.mark.parametrize(
    "authorization",
    [None, "Bearer ", "Bearer wrong", "bearer {token}", "{token}", "Bearer {token}x", "Basic {token}"],
    ids=["missing", "empty", "wrong", "scheme-case", "no-scheme", "longer", "basic"],
)
def test_a_missing_or_wrong_token_is_unauthenticated_naming_the_file_not_the_token(
    tcp_server: tuple[str, Path], authorization: str | None
) -> None:
    target, token_file = tcp_server
    token = token_file.read_text()
    metadata = () if authorization is None else (("authorization", authorization.format(token=token)),)
    with structlog.testing.capture_logs() as logs:
        err = rpc_error(lambda: health_check(target, metadata))
    assert isinstance(err, grpc.Call)
    assert err.code() == grpc.StatusCode.UNAUTHENTICATED
    assert str(token_file) in (err.details() or "") and token not in (err.details() or "")
    [event] = [e for e in logs if e["event"] == "rpc_unauthenticated"]
    assert event["token"] == ("missing" if authorization is None else "wrong")
    assert event["token_file"] == str(token_file) and event["method"] == HEALTH_CHECK
    assert token not in json.dumps(logs, default=str), "the token is never logged"


def test_unknown_and_streaming_methods_are_refused_before_anything_else(tcp_server: tuple[str, Path]) -> None:
    target, token_file = tcp_server
    auth = (("authorization", f"Bearer {token_file.read_text()}"),)
    with grpc.insecure_channel(target) as channel:
        unknown = channel.unary_unary("/cloudcni.v1.IpamBackend/Nope")
        err = rpc_error(lambda: unknown(b"", timeout=5))
        assert isinstance(err, grpc.Call) and err.code() == grpc.StatusCode.UNAUTHENTICATED
        err = rpc_error(lambda: unknown(b"", timeout=5, metadata=auth))
        assert isinstance(err, grpc.Call) and err.code() == grpc.StatusCode.UNIMPLEMENTED
        watch = health_pb2_grpc.HealthStub(channel).Watch(
            health_pb2.HealthCheckRequest(service=""), timeout=5
        )
        err = rpc_error(lambda: next(iter(watch)))
        assert isinstance(err, grpc.Call) and err.code() == grpc.StatusCode.UNAUTHENTICATED


def test_the_shim_client_sends_the_token_over_tcp(tcp_server: tuple[str, Path]) -> None:
    target, token_file = tcp_server
    port = int(target.rpartition(":")[2])
    request = health_pb2.HealthCheckRequest(service="").SerializeToString()
    auth = ((b"authorization", b"Bearer " + token_file.read_bytes()),)
    reply = h2grpc.unary_call(("127.0.0.1", port), HEALTH_CHECK, request, timeout=5, metadata=auth)
    assert health_pb2.HealthCheckResponse.FromString(reply).status == health_pb2.HealthCheckResponse.SERVING
    with pytest.raises(h2grpc.GrpcError) as caught:
        h2grpc.unary_call(("127.0.0.1", port), HEALTH_CHECK, request, timeout=5)
    assert caught.value.status == 16 and str(token_file) in caught.value.message


def test_a_restart_writes_a_new_token_and_the_old_one_is_refused(tmp_path: Path) -> None:
    port = free_port()
    token_file = tmp_path / "ipamd.token"
    with Served(f"tcp://127.0.0.1:{port}", token_file):
        first = token_file.read_text()
    assert token_file.read_text() == first, "left at stop: the next start replaces it"
    with Served(f"tcp://127.0.0.1:{port}", token_file):
        second = token_file.read_text()
        assert second != first and len(second) == 64
        assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
        target = f"ipv4:127.0.0.1:{port}"
        err = rpc_error(lambda: health_check(target, (("authorization", f"Bearer {first}"),)))
        assert isinstance(err, grpc.Call) and err.code() == grpc.StatusCode.UNAUTHENTICATED
        assert health_check(target, (("authorization", f"Bearer {second}"),)).status == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ipamd.token"], "no temporary file left"


def test_ipv6_loopback(tmp_path: Path) -> None:
    if (
        not socket.has_ipv6
        or "00000000000000000000000000000001" not in Path("/proc/net/if_inet6").read_text()
    ):
        pytest.skip("no ::1 on this machine")
    port = free_port()
    with Served(f"tcp://[::1]:{port}", tmp_path / "t"):
        token = (tmp_path / "t").read_text()
        assert health_check(f"ipv6:[::1]:{port}", (("authorization", f"Bearer {token}"),)).status == 1


def test_the_unix_socket_needs_no_token_and_writes_none(tmp_path: Path) -> None:
    path = tmp_path / "ipamd.sock"
    with Served(str(path), tmp_path / "ipamd.token"):
        assert health_check(f"unix:{path}").status == health_pb2.HealthCheckResponse.SERVING
    assert not (tmp_path / "ipamd.token").exists()


def test_a_port_someone_listens_on_is_refused_and_the_token_file_untouched(tmp_path: Path) -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        rpc = RpcServer(None, f"tcp://127.0.0.1:{port}", token_file=str(tmp_path / "ipamd.token"))
        with pytest.raises(ConfigError) as err:
            rpc.claim()
    assert err.value.variable == "IPAMD_SOCKET" and "nothing else listens" in str(err.value)
    assert not (tmp_path / "ipamd.token").exists()


def test_an_unwritable_token_file_is_a_config_error(tmp_path: Path) -> None:
    rpc = RpcServer(None, f"tcp://127.0.0.1:{free_port()}", token_file=str(tmp_path / "missing" / "t"))
    with pytest.raises(ConfigError) as err:
        asyncio.run(rpc.start())
    assert err.value.variable == "IPAMD_TOKEN_FILE"


def test_tcp_without_a_token_file_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="token file"):
        RpcServer(None, "tcp://127.0.0.1:5000")


# ---- the shim's side ----------------------------------------------------------------------------


def conf(**extra: object) -> bytes:
    base: dict[str, object] = {"cniVersion": "1.1.0", "name": "cloud-cni", "type": "cloud-cni"}
    return json.dumps({**base, **extra}).encode()


ADD_ENV = {
    "CNI_COMMAND": "ADD",
    "CNI_CONTAINERID": "ctr01",
    "CNI_IFNAME": "eth0",
    "CNI_NETNS": "/var/run/netns/ctr01",
    "CNI_PATH": "/opt/cni/bin",
}


@pytest.mark.parametrize(
    ("socket_value", "tcp"),
    [
        ("tcp://127.0.0.1:50051", ("127.0.0.1", 50051)),
        ("tcp://[::1]:50051", ("::1", 50051)),
        ("/run/c/ipamd.sock", None),
    ],
    ids=["v4", "v6", "unix"],
)
def test_conflist_ipamd_socket_forms(socket_value: str, tcp: tuple[str, int] | None) -> None:
    inv = cni.parse(ADD_ENV, conf(ipamdSocket=socket_value, ipamdTokenFile="/run/c/ipamd.token"))
    assert (inv.ipamd_socket, inv.ipamd_tcp, inv.ipamd_token_file) == (
        socket_value,
        tcp,
        "/run/c/ipamd.token",
    )


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        ({"ipamdSocket": "tcp://10.0.0.1:50051"}, "ipamdSocket: 'tcp://10.0.0.1:50051' is not"),
        ({"ipamdSocket": "tcp://0.0.0.0:50051"}, "loopback only"),
        ({"ipamdSocket": "tcp://localhost:50051"}, "loopback only"),
        ({"ipamdSocket": "tcp://127.0.0.1"}, "ipamdSocket"),
        ({"ipamdSocket": "tcp://127.0.0.1:0"}, "ipamdSocket"),
        ({"ipamdSocket": "tcp://127.0.0.1:65536"}, "ipamdSocket"),
        ({"ipamdSocket": "tcp://::1:50051"}, "ipamdSocket"),
        ({"ipamdSocket": "tcp://127.0.0.1:50051"}, "ipamdTokenFile: required with ipamdSocket"),
        ({"ipamdSocket": "tcp://127.0.0.1:50051", "ipamdTokenFile": None}, "ipamdTokenFile: required"),
        ({"ipamdSocket": "tcp://127.0.0.1:50051", "ipamdTokenFile": ""}, "ipamdTokenFile: '' must be an"),
        ({"ipamdSocket": "tcp://127.0.0.1:50051", "ipamdTokenFile": "t"}, "ipamdTokenFile: 't' must be an"),
        ({"ipamdSocket": "tcp://127.0.0.1:50051", "ipamdTokenFile": 7}, "ipamdTokenFile: must be a string"),
        ({"ipamdTokenFile": ["x"]}, "ipamdTokenFile: must be a string"),
    ],
    ids=lambda v: str(v)[:40],
)
def test_conflist_tcp_errors_are_code_7_naming_the_key(extra: dict[str, object], needle: str) -> None:
    config = {k: v for k, v in extra.items() if v is not None}
    with pytest.raises(cni.CniError) as caught:
        cni.parse(ADD_ENV, conf(**config))
    assert caught.value.code == cni.INVALID_CONFIG
    assert needle in caught.value.msg


def test_the_authorization_header_is_sent_never_indexed() -> None:
    """What the shim puts on the wire, read by the hpack library: the token as a never-indexed
    literal (RFC 7541 7.1.3), the other headers as before."""
    received = bytearray()
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()

        def peer() -> None:
            conn, _ = listener.accept()
            with conn:
                conn.settimeout(5)
                while len(received) < 24 + 9 or _headers_block(bytes(received)) is None:
                    chunk = conn.recv(65536)
                    if not chunk:
                        break
                    received.extend(chunk)

        thread = threading.Thread(target=peer)
        thread.start()
        with pytest.raises(h2grpc.Unavailable):
            h2grpc.unary_call(
                listener.getsockname(),
                HEALTH_CHECK,
                b"",
                timeout=5,
                metadata=((b"authorization", b"Bearer abc"), (b"x-extra", b"1")),
            )
        thread.join(5)
    block = _headers_block(bytes(received))
    assert block is not None
    headers = hpack.Decoder().decode(block, raw=True)
    by_name = {h[0]: h for h in headers}
    assert by_name[b"authorization"][1] == b"Bearer abc"
    assert isinstance(by_name[b"authorization"], hpack.NeverIndexedHeaderTuple)
    assert by_name[b"x-extra"][1] == b"1" and not isinstance(
        by_name[b"x-extra"], hpack.NeverIndexedHeaderTuple
    )


def _headers_block(wire: bytes) -> bytes | None:
    offset = 24  # the connection preface
    while offset + 9 <= len(wire):
        length = int.from_bytes(wire[offset : offset + 3], "big")
        if offset + 9 + length > len(wire):
            return None
        if wire[offset + 3] == 1:  # HEADERS (our block fits one frame)
            return wire[offset + 9 : offset + 9 + length]
        offset += 9 + length
    return None


@pytest.mark.parametrize(
    "metadata",
    [((b"authorization", b"Bearer a\r\nx: y"),), ((b"Authorization", b"x"),), ((b":path", b"/"),)],
    ids=["crlf", "upper-case", "pseudo"],
)
def test_metadata_that_could_break_the_header_block_is_refused(
    metadata: tuple[tuple[bytes, bytes], ...],
) -> None:
    with pytest.raises(ValueError):
        h2grpc.unary_call(("127.0.0.1", 1), HEALTH_CHECK, b"", timeout=1, metadata=metadata)


def _run_shim(env: dict[str, str], stdin: bytes) -> tuple[int, dict[str, Any] | None]:
    code, out = shim_main.run(env, stdin)
    return code, json.loads(out) if out else None


@pytest.fixture
def no_daemon(tmp_path: Path) -> tuple[Path, bytes]:
    """A loopback port nobody listens on and a token file path in an existing directory."""
    run = tmp_path / "run"
    run.mkdir(mode=0o700)
    token_file = run / "ipamd.token"
    stdin = conf(
        ipamdSocket=f"tcp://127.0.0.1:{free_port()}",
        ipamdTokenFile=str(token_file),
        logFile=str(tmp_path / "shim.log"),
    )
    return token_file, stdin


def test_shim_add_without_a_token_file_is_try_again_later_naming_it(no_daemon: tuple[Path, bytes]) -> None:
    token_file, stdin = no_daemon
    code, out = _run_shim(ADD_ENV, stdin)
    assert code == 1 and out is not None
    assert out["code"] == cni.TRY_AGAIN_LATER and str(token_file) in out["msg"]


@pytest.mark.parametrize("content", [b"", b"  \n", b"a b", "tökén".encode(), b"x" * 1025], ids=str)
def test_shim_a_token_file_without_a_token_is_code_7(no_daemon: tuple[Path, bytes], content: bytes) -> None:
    token_file, stdin = no_daemon
    token_file.write_bytes(content)
    code, out = _run_shim(ADD_ENV, stdin)
    assert code == 1 and out is not None
    assert out["code"] == cni.INVALID_CONFIG and "ipamdTokenFile" in out["msg"]


def test_shim_a_token_with_no_daemon_listening_is_try_again_later(no_daemon: tuple[Path, bytes]) -> None:
    token_file, stdin = no_daemon
    token_file.write_text("ab" * 32 + "\n")
    code, out = _run_shim(ADD_ENV, stdin)
    assert code == 1 and out is not None
    assert out["code"] == cni.TRY_AGAIN_LATER and "ECONNREFUSED" in out["msg"]


def test_shim_del_with_no_daemon_spools_beside_the_token_file(no_daemon: tuple[Path, bytes]) -> None:
    token_file, stdin = no_daemon
    env = {**ADD_ENV, "CNI_COMMAND": "DEL", "CNI_NETNS": ""}
    assert _run_shim(env, stdin) == (0, None), "no token file: the daemon is not there; queued"
    token_file.write_text("ab" * 32)
    assert _run_shim({**env, "CNI_CONTAINERID": "ctr02"}, stdin) == (0, None), "nothing listening: queued"
    spooled = sorted(p.name for p in (token_file.parent / "del-spool").iterdir())
    assert spooled == ["cloud-cni.ctr01.eth0.json", "cloud-cni.ctr02.eth0.json"]


def test_shim_del_when_the_token_files_directory_does_not_exist(tmp_path: Path) -> None:
    stdin = conf(
        ipamdSocket=f"tcp://127.0.0.1:{free_port()}",
        ipamdTokenFile=str(tmp_path / "never" / "ipamd.token"),
        logFile=str(tmp_path / "shim.log"),
    )
    env = {**ADD_ENV, "CNI_COMMAND": "DEL", "CNI_NETNS": ""}
    assert _run_shim(env, stdin) == (0, None)
    assert not (tmp_path / "never").exists()
    assert os.path.exists(tmp_path / "shim.log")
