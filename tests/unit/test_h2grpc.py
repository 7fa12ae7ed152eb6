"""shim.h2grpc against a real grpc.aio server (the library the daemon serves with) on a Unix socket,
and against scripted HTTP/2 peers for what grpcio never sends: Huffman, the dynamic table,
CONTINUATION, padding, GOAWAY, RST_STREAM, garbage, silence.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import hpack
import pytest

from ipamd.rpc.pb import ipamd_pb2 as pb
from ipamd.rpc.pb import ipamd_pb2_grpc as pb_grpc
from shim import h2grpc
from shim.h2grpc import GrpcError, ProtocolError, Unavailable, unary_call

STATUS = "/cloudcni.v1.IpamBackend/Status"
ADD = "/cloudcni.v1.IpamBackend/Add"
Context = grpc.aio.ServicerContext[Any, Any]


class Servicer(pb_grpc.IpamBackendServicer):
    """Answers STATUS from the request's network name; fails ADD as the daemon does."""

    async def Status(self, request: pb.StatusRequest, context: Context) -> pb.StatusReply:
        return pb.StatusReply(ready=True, available=7, assigned=3, total=10, message=request.network_name)

    async def Add(self, request: pb.AddRequest, context: Context) -> pb.AddReply:
        code, _, message = request.cni_version.partition(":")
        context.set_trailing_metadata((("cni-code", "11"), ("x-extra", "a"), ("x-extra", "b")))
        await context.abort(grpc.StatusCode[code], message)
        raise AssertionError("unreachable")


async def _echo(request: bytes, context: Context) -> bytes:
    return request


async def _sized(request: bytes, context: Context) -> bytes:
    size = int(request)
    return bytes(i % 251 for i in range(size))


async def _slow(request: bytes, context: Context) -> bytes:
    await asyncio.sleep(float(request))
    return b"late"


async def _binary_metadata(request: bytes, context: Context) -> bytes:
    context.set_trailing_metadata((("cni-code", "3"), ("trace-bin", b"\x00\xff")))
    await context.abort(grpc.StatusCode.NOT_FOUND, "gone")
    raise AssertionError("unreachable")


ODD = grpc.method_handlers_generic_handler(
    "test.Odd",
    {
        name: grpc.unary_unary_rpc_method_handler(fn)
        for name, fn in (
            ("Echo", _echo),
            ("Sized", _sized),
            ("Slow", _slow),
            ("BinaryMetadata", _binary_metadata),
        )
    },
)


class AioServer:
    """A grpc.aio server on a Unix socket, run by its own event loop in a thread."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.server: grpc.aio.Server | None = None

    async def _start(self) -> None:
        self.server = grpc.aio.server()
        pb_grpc.add_IpamBackendServicer_to_server(Servicer(), self.server)  # type: ignore[abstract]
        self.server.add_generic_rpc_handlers((ODD,))
        self.server.add_insecure_port(f"unix:{self.path}")
        await self.server.start()

    async def _stop(self) -> None:
        assert self.server is not None
        await self.server.stop(None)

    def __enter__(self) -> AioServer:
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self.loop).result(10)
        return self

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self._stop(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    path = tmp_path_factory.mktemp("grpc") / "ipamd.sock"
    with AioServer(path):
        yield str(path)


# --- against grpc.aio ----------------------------------------------------------------------------


def test_unary_call_returns_the_reply_grpc_serialized(server: str) -> None:
    request = pb.StatusRequest(network_name="pod-net").SerializeToString()
    reply = pb.StatusReply.FromString(unary_call(server, STATUS, request, timeout=5))
    assert reply == pb.StatusReply(ready=True, available=7, assigned=3, total=10, message="pod-net")


def test_many_calls_in_a_row(server: str) -> None:
    for i in range(50):
        request = pb.StatusRequest(network_name=f"n{i}").SerializeToString()
        assert pb.StatusReply.FromString(unary_call(server, STATUS, request)).message == f"n{i}"


@pytest.mark.parametrize(
    ("status", "message"),
    [
        ("RESOURCE_EXHAUSTED", "no address available on node"),
        ("NOT_FOUND", "allocation 4f2a/eth0 not found"),
        ("INVALID_ARGUMENT", "CNI_IFNAME 'eth0 ' is not valid: 100% wrong"),
        ("UNAVAILABLE", "checkpoint: disque plein — écriture refusée ✗"),
        ("INTERNAL", "line one\nline two\ttab %41 literal"),
        ("FAILED_PRECONDITION", ""),
    ],
    ids=["exhausted", "not-found", "percent", "non-ascii", "control-chars", "empty"],
)
def test_error_status_message_and_trailing_metadata(server: str, status: str, message: str) -> None:
    request = pb.AddRequest(cni_version=f"{status}:{message}").SerializeToString()
    with pytest.raises(GrpcError) as caught:
        unary_call(server, ADD, request, timeout=5)
    assert caught.value.status == grpc.StatusCode[status].value[0]
    assert caught.value.message == message
    assert caught.value.metadata["cni-code"] == "11"
    assert caught.value.metadata["x-extra"] == "a,b"
    assert "grpc-status" not in caught.value.metadata
    assert str(caught.value).startswith(status)


def test_binary_metadata_stays_base64(server: str) -> None:
    with pytest.raises(GrpcError) as caught:
        unary_call(server, "/test.Odd/BinaryMetadata", b"", timeout=5)
    assert caught.value.status == 5
    assert caught.value.metadata == {"cni-code": "3", "trace-bin": "AP8"}


def test_unknown_method_is_unimplemented(server: str) -> None:
    with pytest.raises(GrpcError) as caught:
        unary_call(server, "/cloudcni.v1.IpamBackend/Nope", b"", timeout=5)
    assert caught.value.status == 12


@pytest.mark.parametrize(
    "size", [0, 1, 16_384, 65_536 + 1, 3 << 20], ids=["empty", "1B", "frame", "64KiB+1", "3MiB"]
)
def test_large_replies_flow_control(server: str, size: int) -> None:
    reply = unary_call(server, "/test.Odd/Sized", str(size).encode(), timeout=10)
    assert reply == bytes(i % 251 for i in range(size))


@pytest.mark.parametrize("size", [70_000, 1 << 20], ids=["70KB", "1MiB"])
def test_large_requests_wait_for_window_updates(server: str, size: int) -> None:
    request = bytes(range(256)) * (size // 256)
    assert unary_call(server, "/test.Odd/Echo", request, timeout=10) == request


def test_reply_above_the_limit_is_resource_exhausted(server: str) -> None:
    with pytest.raises(GrpcError) as caught:
        unary_call(server, "/test.Odd/Sized", str(h2grpc.MAX_RESPONSE_MESSAGE + 1).encode(), timeout=10)
    assert caught.value.status == 8


def test_slow_daemon_times_out(server: str) -> None:
    """Our clock and the server's (grpc-timeout) run out together: usually ours fires first
    (Unavailable), under load the server's DEADLINE_EXCEEDED can arrive first."""
    started = time.monotonic()
    with pytest.raises((Unavailable, GrpcError)) as caught:
        unary_call(server, "/test.Odd/Slow", b"5", timeout=0.3)
    assert 0.25 < time.monotonic() - started < 2
    if isinstance(caught.value, Unavailable):
        assert caught.value.sent is True
        assert "within 0.3s" in caught.value.reason
    else:
        assert caught.value.status == 4


# --- no daemon ------------------------------------------------------------------------------------


def test_missing_socket_is_unavailable_not_sent(tmp_path: Path) -> None:
    with pytest.raises(Unavailable) as caught:
        unary_call(str(tmp_path / "absent.sock"), STATUS, b"")
    assert caught.value.sent is False
    assert "ENOENT" in caught.value.reason


def test_stale_socket_file_is_unavailable_not_sent(tmp_path: Path) -> None:
    path = tmp_path / "stale.sock"
    with socket.socket(socket.AF_UNIX) as s:
        s.bind(str(path))  # bound, never listening: what a crashed daemon leaves behind
    with pytest.raises(Unavailable) as caught:
        unary_call(str(path), STATUS, b"")
    assert caught.value.sent is False
    assert "ECONNREFUSED" in caught.value.reason


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="timeout"):
        unary_call("/nonexistent", STATUS, b"", timeout=0)
    with pytest.raises(ValueError, match="must start with"):
        unary_call("/nonexistent", "cloudcni.v1.IpamBackend/Status", b"")


# --- scripted peers ---------------------------------------------------------------------------------


def frame(kind: int, flags: int, stream: int, payload: bytes = b"") -> bytes:
    return len(payload).to_bytes(3, "big") + bytes((kind, flags)) + stream.to_bytes(4, "big") + payload


def message(body: bytes) -> bytes:
    return b"\x00" + len(body).to_bytes(4, "big") + body


SETTINGS = frame(4, 0, 0, b"\x00\x03\x00\x00\x00\x64")  # MAX_CONCURRENT_STREAMS 100
OK_HEADERS = [(":status", "200"), ("content-type", "application/grpc")]
OK_TRAILERS = [("grpc-status", "0")]


def headers(encoder: hpack.Encoder, fields: list[tuple[str, str]], flags: int = 0x4) -> bytes:
    return frame(1, flags, 1, encoder.encode(fields))


class ScriptedPeer:
    """A Unix socket server that answers each connection with ``script(received_so_far)`` bytes
    once the client's first bytes arrive, then records what else the client sends until it
    closes. ``close_after`` closes at once after sending instead."""

    def __init__(self, path: Path, script: Callable[[], bytes], close_after: bool = False) -> None:
        self.path = path
        self.script = script
        self.close_after = close_after
        self.received = bytearray()
        self.listener = socket.socket(socket.AF_UNIX)
        self.listener.bind(str(path))
        self.listener.listen(8)
        self.thread = threading.Thread(target=self._serve, daemon=True)

    def _serve(self) -> None:
        with contextlib.suppress(OSError):
            conn, _ = self.listener.accept()
            with conn:
                conn.settimeout(5)
                self.received += conn.recv(65536)
                conn.sendall(self.script())
                if self.close_after:
                    return
                while chunk := conn.recv(65536):
                    self.received += chunk

    def __enter__(self) -> ScriptedPeer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.listener.close()
        self.thread.join(10)


def call_peer(tmp_path: Path, script: Callable[[], bytes], timeout: float = 5, **kw: Any) -> bytes:
    with ScriptedPeer(tmp_path / "peer.sock", script, **kw) as peer:
        return unary_call(str(peer.path), STATUS, b"req", timeout=timeout)


def test_huffman_dynamic_table_continuation_and_padding(tmp_path: Path) -> None:
    """What a proxy might send: Huffman everywhere, dynamic-table hits across the two header
    blocks, the header block split into HEADERS + CONTINUATION, padded and prioritized frames,
    the body in several DATA frames, an unknown frame type, a PING and a graceful GOAWAY."""

    def script() -> bytes:
        enc = hpack.Encoder()
        block = enc.encode([*OK_HEADERS, ("server", "envoy"), ("cni-code", "0")])
        head = frame(1, 0x8 | 0x20, 1, b"\x03" + b"\x00\x00\x00\x00\x10" + block[:3] + b"pad")
        body = message(b"hello, shim")
        return (
            SETTINGS
            + frame(4, 0x1, 0)  # SETTINGS ACK
            + frame(0xBB, 0, 0, b"unknown extension")
            + frame(6, 0, 0, b"12345678")
            + head
            + frame(9, 0x4, 1, block[3:])
            + frame(0, 0x8, 1, b"\x02" + body[:4] + b"\x00\x00")
            + frame(8, 0, 0, b"\x00\x00\x10\x00")
            + frame(0, 0, 1, body[4:])
            + frame(7, 0, 0, b"\x00\x00\x00\x01\x00\x00\x00\x00")  # GOAWAY NO_ERROR, last 1
            + frame(1, 0x5, 1, enc.encode([("grpc-status", "0"), ("server", "envoy"), ("cni-code", "0")]))
        )

    assert call_peer(tmp_path, script) == b"hello, shim"


def test_client_answers_settings_and_ping(tmp_path: Path) -> None:
    def script() -> bytes:
        return SETTINGS + frame(6, 0, 0, b"pingdata")

    with ScriptedPeer(tmp_path / "peer.sock", script) as peer:
        with pytest.raises(Unavailable) as caught:
            unary_call(str(peer.path), STATUS, b"req", timeout=0.5)
    assert caught.value.sent is True
    assert "within 0.5s" in caught.value.reason
    sent = bytes(peer.received)
    assert sent.startswith(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
    assert frame(4, 0x1, 0) in sent  # SETTINGS ACK
    assert frame(6, 0x1, 0, b"pingdata") in sent  # PING ACK
    decoded = dict(hpack.Decoder().decode(_header_block(sent), raw=True))
    assert decoded == {
        b":method": b"POST",
        b":scheme": b"http",
        b":path": STATUS.encode(),
        b":authority": b"localhost",
        b"content-type": b"application/grpc",
        b"te": b"trailers",
        b"grpc-timeout": b"500m",
    }
    assert frame(0, 0x1, 1, message(b"req")) in sent


def _header_block(sent: bytes) -> bytes:
    pos = 24
    while pos < len(sent):
        length = int.from_bytes(sent[pos : pos + 3], "big")
        if sent[pos + 3] == 1:
            return sent[pos + 9 : pos + 9 + length]
        pos += 9 + length
    raise AssertionError("no HEADERS frame")


def _ok(enc: hpack.Encoder, body: bytes = b"x") -> bytes:
    return headers(enc, OK_HEADERS) + frame(0, 0, 1, message(body)) + headers(enc, OK_TRAILERS, 0x5)


Scenario = Callable[[hpack.Encoder], bytes]
UNAVAILABLE_SCENARIOS: list[tuple[str, Scenario, bool, str]] = [
    (
        "goaway-before-our-stream",
        lambda e: frame(7, 0, 0, bytes(4) + b"\x00\x00\x00\x00shutting down"),
        False,
        "shutting",
    ),
    ("refused-stream", lambda e: frame(3, 0, 1, b"\x00\x00\x00\x07"), False, "REFUSED_STREAM"),
    ("reset-cancel", lambda e: headers(e, OK_HEADERS) + frame(3, 0, 1, b"\x00\x00\x00\x08"), True, "CANCEL"),
    ("goaway-error", lambda e: frame(7, 0, 0, b"\x00\x00\x00\x01\x00\x00\x00\x02"), True, "INTERNAL_ERROR"),
    (
        "closed-mid-body",
        lambda e: headers(e, OK_HEADERS) + frame(0, 0, 1, b"\x00\x00"),
        True,
        "closed the connection",
    ),
]


@pytest.mark.parametrize(
    ("scenario", "sent", "reason"),
    [s[1:] for s in UNAVAILABLE_SCENARIOS],
    ids=[s[0] for s in UNAVAILABLE_SCENARIOS],
)
def test_peer_gives_up(tmp_path: Path, scenario: Scenario, sent: bool, reason: str) -> None:
    with pytest.raises(Unavailable) as caught:
        call_peer(tmp_path, lambda: SETTINGS + scenario(hpack.Encoder()), close_after=True)
    assert caught.value.sent is sent
    assert reason in caught.value.reason
    assert not isinstance(caught.value, ProtocolError)


PROTOCOL_SCENARIOS: list[tuple[str, Callable[[], bytes], str]] = [
    ("http1-reply", lambda: b"HTTP/1.1 400 Bad Request\r\nConnection: close\r\n\r\n", "FRAME_SIZE_ERROR"),
    ("not-settings-first", lambda: frame(6, 0, 0, bytes(8)), "not SETTINGS"),
    ("frame-too-big", lambda: SETTINGS + frame(0, 0, 1, bytes(16_385)), "16385-byte frame"),
    ("settings-odd-length", lambda: SETTINGS + frame(4, 0, 0, bytes(5)), "SETTINGS frame of 5"),
    ("settings-on-stream", lambda: SETTINGS + frame(4, 0, 1), "SETTINGS frame on stream 1"),
    ("enable-push", lambda: frame(4, 0, 0, b"\x00\x02\x00\x00\x00\x01"), "ENABLE_PUSH"),
    ("max-frame-size", lambda: frame(4, 0, 0, b"\x00\x05\x00\x00\x10\x00"), "MAX_FRAME_SIZE"),
    ("window-too-big", lambda: frame(4, 0, 0, b"\x00\x04\x80\x00\x00\x00"), "INITIAL_WINDOW_SIZE"),
    ("push-promise", lambda: SETTINGS + frame(5, 0x4, 1, bytes(4)), "PUSH_PROMISE"),
    ("data-before-headers", lambda: SETTINGS + frame(0, 0x1, 1, message(b"x")), "DATA frame outside"),
    ("data-stream-0", lambda: SETTINGS + frame(0, 0, 0, b"x"), "DATA frame on stream 0"),
    ("headers-stream-3", lambda: SETTINGS + frame(1, 0x4, 3, b"\x88"), "stream 3"),
    ("bad-hpack", lambda: SETTINGS + frame(1, 0x4, 1, b"\x80"), "COMPRESSION_ERROR: header field index 0"),
    ("bad-huffman", lambda: SETTINGS + frame(1, 0x4, 1, b"\x00\x81\xff\x00"), "COMPRESSION_ERROR"),
    ("lone-continuation", lambda: SETTINGS + frame(9, 0x4, 1, b"\x88"), "CONTINUATION frame without"),
    (
        "interleaved",
        lambda: SETTINGS + frame(1, 0, 1, b"\x88") + frame(6, 0, 0, bytes(8)),
        "inside a header block",
    ),
    ("bad-padding", lambda: SETTINGS + frame(1, 0x8 | 0x4, 1, b"\x09\x88"), "padding longer"),
    ("no-status", lambda: SETTINGS + frame(1, 0x4, 1, b"\x5f\x10application/grpc"), ":status"),
    ("ping-size", lambda: SETTINGS + frame(6, 0, 0, bytes(7)), "PING frame"),
    ("window-update-0", lambda: SETTINGS + frame(8, 0, 0, bytes(4)), "WINDOW_UPDATE of 0"),
    ("window-overflow", lambda: SETTINGS + frame(8, 0, 0, b"\x7f\xff\xff\xff"), "FLOW_CONTROL_ERROR"),
    ("rst-size", lambda: SETTINGS + frame(3, 0, 1, bytes(3)), "RST_STREAM frame of 3"),
    ("goaway-size", lambda: SETTINGS + frame(7, 0, 0, bytes(4)), "GOAWAY frame of 4"),
    ("priority-size", lambda: SETTINGS + frame(2, 0, 1, bytes(4)), "PRIORITY frame"),
    (
        "headers-after-trailers-start",
        lambda: SETTINGS + frame(1, 0x4, 1, b"\x88\x5f\x10application/grpc") + frame(1, 0x4, 1, b"\x88"),
        "does not end the stream",
    ),
]


@pytest.mark.parametrize(
    ("script", "reason"), [s[1:] for s in PROTOCOL_SCENARIOS], ids=[s[0] for s in PROTOCOL_SCENARIOS]
)
def test_protocol_violations_fail_fast_and_clearly(
    tmp_path: Path, script: Callable[[], bytes], reason: str
) -> None:
    started = time.monotonic()
    with pytest.raises(ProtocolError, match=reason) as caught:
        call_peer(tmp_path, script)
    assert caught.value.sent is True
    assert time.monotonic() - started < 2  # no waiting for the timeout


GRPC_SCENARIOS: list[tuple[str, Scenario, int, str]] = [
    (
        "no-grpc-status",
        lambda e: headers(e, OK_HEADERS) + frame(0, 0x1, 1, message(b"x")),
        2,
        "no grpc-status",
    ),
    (
        "trailers-no-status",
        lambda e: headers(e, OK_HEADERS) + headers(e, [("a", "b")], 0x5),
        2,
        "no grpc-status",
    ),
    ("bad-status", lambda e: headers(e, [*OK_HEADERS, ("grpc-status", "x1")], 0x5), 2, "invalid grpc-status"),
    (
        "http-503",
        lambda e: headers(e, [(":status", "503"), ("content-type", "text/html")]),
        14,
        "HTTP status 503",
    ),
    ("http-404-only", lambda e: headers(e, [(":status", "404")], 0x5), 12, "HTTP status 404"),
    (
        "content-type",
        lambda e: headers(e, [(":status", "200"), ("content-type", "text/plain")]),
        2,
        "text/plain",
    ),
    (
        "compressed",
        lambda e: (
            headers(e, OK_HEADERS) + frame(0, 0, 1, b"\x01" + message(b"x")[1:]) + headers(e, OK_TRAILERS, 5)
        ),
        13,
        "compressed",
    ),
    (
        "framing",
        lambda e: headers(e, OK_HEADERS) + frame(0, 0, 1, message(b"xy")[:-1]) + headers(e, OK_TRAILERS, 5),
        13,
        "framing",
    ),
    ("no-message", lambda e: headers(e, [*OK_HEADERS, *OK_TRAILERS], 0x5), 13, "no message"),
    (
        "two-messages",
        lambda e: (
            headers(e, OK_HEADERS)
            + frame(0, 0, 1, message(b"a") + message(b"b"))
            + headers(e, OK_TRAILERS, 5)
        ),
        13,
        "framing",
    ),
    (
        "percent-huffman",
        lambda e: headers(
            e, [*OK_HEADERS, ("grpc-status", "5"), ("grpc-message", "caf%C3%A9 %zz 100%")], 0x5
        ),
        5,
        "café %zz 100%",
    ),
]


@pytest.mark.parametrize(
    ("scenario", "status", "message_part"),
    [s[1:] for s in GRPC_SCENARIOS],
    ids=[s[0] for s in GRPC_SCENARIOS],
)
def test_bad_or_failed_responses_are_grpc_errors(
    tmp_path: Path, scenario: Scenario, status: int, message_part: str
) -> None:
    with pytest.raises(GrpcError) as caught:
        call_peer(tmp_path, lambda: SETTINGS + scenario(hpack.Encoder()))
    assert caught.value.status == status
    assert message_part in caught.value.message


def test_informational_headers_are_skipped(tmp_path: Path) -> None:
    def script() -> bytes:
        enc = hpack.Encoder()
        return SETTINGS + headers(enc, [(":status", "100")]) + _ok(enc, b"after 100")

    assert call_peer(tmp_path, script) == b"after 100"


def test_peer_that_accepts_and_closes_is_unavailable_sent(tmp_path: Path) -> None:
    with pytest.raises(Unavailable) as caught:
        call_peer(tmp_path, lambda: b"", close_after=True)
    assert caught.value.sent is True


def test_silent_peer_times_out(tmp_path: Path) -> None:
    started = time.monotonic()
    with pytest.raises(Unavailable) as caught:
        call_peer(tmp_path, lambda: b"", timeout=0.3)
    assert 0.25 < time.monotonic() - started < 2
    assert caught.value.sent is True
    assert "within 0.3s" in caught.value.reason


def test_peer_that_shrinks_the_window_gets_the_rest_later(tmp_path: Path) -> None:
    """SETTINGS_INITIAL_WINDOW_SIZE 0 after our request left: nothing more is sent until a
    WINDOW_UPDATE; here everything already fit, so the reply still comes."""

    def script() -> bytes:
        enc = hpack.Encoder()
        return (
            frame(4, 0, 0, b"\x00\x04\x00\x00\x00\x00")
            + frame(8, 0, 1, b"\x00\x00\x00\x10")
            + _ok(enc, b"ok")
        )

    assert call_peer(tmp_path, script) == b"ok"


@pytest.mark.parametrize(
    ("seconds", "value"),
    [(30.0, b"30000m"), (0.0001, b"1m"), (1.0005, b"1001m"), (99_999.999, b"99999999m"), (1e6, b"1000001S")],
)
def test_grpc_timeout_header(seconds: float, value: bytes) -> None:
    assert h2grpc._grpc_timeout(seconds) == value


def test_imports_only_cheap_modules() -> None:
    """What `import shim.h2grpc` (and a Huffman decode) loads in a bare interpreter: the shim pays
    for every module on every exec."""
    root = str(Path(__file__).resolve().parents[2])
    code = (
        f"import sys; sys.path.insert(0, {root!r}); before = set(sys.modules)\n"
        "from shim import h2grpc, hpack\n"
        "hpack.Decoder().decode(bytes.fromhex('828684418cf1e3c2e5f23a6ba0ab90f4ff'))\n"
        "print(' '.join(sorted(set(sys.modules) - before)))"
    )
    out = subprocess.run([sys.executable, "-I", "-S", "-c", code], capture_output=True, text=True, check=True)
    assert set(out.stdout.split()) == {
        "__future__",
        "_socket",
        "errno",
        "shim",
        "shim._huffman",
        "shim.h2grpc",
        "shim.hpack",
    }
