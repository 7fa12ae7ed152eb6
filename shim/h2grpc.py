"""A gRPC unary call over HTTP/2 cleartext (h2c, prior knowledge), without grpcio.

The daemon is reached on a Unix socket, or where there is none (Windows) on loopback TCP, with
TCP_NODELAY and the daemon's token in an ``authorization`` header (docs/shim.md, "On Windows").

The shim is exec'd once per pod, and ``import grpc`` alone costs ~110 ms there; this module imports
only ``_socket``, ``time``, ``errno`` and ``shim.hpack``. It opens one connection per call, sends
the connection preface, SETTINGS, HEADERS and the DATA of the request in one write, then reads
until the response stream ends, answering SETTINGS and PING and granting flow-control credit as
the response arrives. Everything the server sends is checked (RFC 9113, RFC 7541, gRPC's
PROTOCOL-HTTP2); an unknown frame type is ignored, as HTTP/2 requires.

Exceptions::

    Exception
     +-- GrpcError        the daemon answered with a non-OK status: status, message, metadata
     +-- Unavailable      no answer; .sent is False when the daemon certainly did not process the
          |               request (no connection, REFUSED_STREAM, GOAWAY before our stream), else True
          +-- ProtocolError  the peer broke HTTP/2, HPACK or gRPC framing (sent=True)

A timeout (connecting or waiting for the answer) is ``Unavailable``; ``ValueError`` means a bad
argument.
"""

from __future__ import annotations

import _socket
import errno
import time

from shim import hpack

# gRPC status codes, by number (https://grpc.github.io/grpc/core/md_doc_statuscodes.html).
STATUS_NAMES = (
    "OK",
    "CANCELLED",
    "UNKNOWN",
    "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "OUT_OF_RANGE",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
    "UNAUTHENTICATED",
)
UNKNOWN = 2
RESOURCE_EXHAUSTED = 8
INTERNAL = 13

# gRPC's mapping of an HTTP status to a gRPC status when the response carries none.
_HTTP_TO_GRPC = {400: INTERNAL, 401: 16, 403: 7, 404: 12, 429: 14, 502: 14, 503: 14, 504: 14}

# HTTP/2 error codes (RFC 9113 7), for messages.
_H2_ERRORS = (
    "NO_ERROR",
    "PROTOCOL_ERROR",
    "INTERNAL_ERROR",
    "FLOW_CONTROL_ERROR",
    "SETTINGS_TIMEOUT",
    "STREAM_CLOSED",
    "FRAME_SIZE_ERROR",
    "REFUSED_STREAM",
    "CANCEL",
    "COMPRESSION_ERROR",
    "CONNECT_ERROR",
    "ENHANCE_YOUR_CALM",
    "INADEQUATE_SECURITY",
    "HTTP_1_1_REQUIRED",
)
_REFUSED_STREAM = 7

_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
# Frame types (RFC 9113 6) and flags.
_DATA = 0
_HEADERS = 1
_PRIORITY = 2
_RST_STREAM = 3
_SETTINGS = 4
_PUSH_PROMISE = 5
_PING = 6
_GOAWAY = 7
_WINDOW_UPDATE = 8
_CONTINUATION = 9
_END_STREAM = 0x1
_ACK = 0x1
_END_HEADERS = 0x4
_PADDED = 0x8
_PRIORITY_FLAG = 0x20
# SETTINGS parameters.
_ENABLE_PUSH = 2
_INITIAL_WINDOW_SIZE = 4
_MAX_FRAME_SIZE = 5

_STREAM = 1  # the one stream of the connection
_AUTHORIZATION = b"authorization"
_DEFAULT_WINDOW = 65535
_DEFAULT_FRAME_SIZE = 16384  # the largest frame we accept: we never raise SETTINGS_MAX_FRAME_SIZE
_MAX_WINDOW = (1 << 31) - 1
# Credit we give the server, for the connection and the stream: a reply of this size needs no
# WINDOW_UPDATE from us; past half of it we grant more as the data arrives.
RECEIVE_WINDOW = 1 << 20
MAX_RESPONSE_MESSAGE = 4 << 20  # as grpcio's default max_receive_message_length
_MAX_HEADER_BLOCK = 256 * 1024  # HEADERS + CONTINUATION bytes of one block

_HEX_DIGITS = b"0123456789abcdefABCDEF"


class GrpcError(Exception):
    """The daemon answered with gRPC status ``status`` (a number, never 0).

    ``metadata`` holds the trailing metadata other than grpc-status and grpc-message, e.g. the
    daemon's ``cni-code``; names are lower case and a ``-bin`` value stays base64 text.
    """

    def __init__(self, status: int, message: str, metadata: dict[str, str] | None = None) -> None:
        self.status = status
        self.message = message
        self.metadata = metadata if metadata is not None else {}
        name = STATUS_NAMES[status] if 0 <= status < len(STATUS_NAMES) else f"status {status}"
        super().__init__(f"{name}: {message}" if message else name)


class Unavailable(Exception):
    """No answer from the daemon. ``sent`` is False only when it certainly did not process the
    request: the connection could not be made, or the server refused the stream."""

    def __init__(self, reason: str, *, sent: bool) -> None:
        self.reason = reason
        self.sent = sent
        super().__init__(reason)


class ProtocolError(Unavailable):
    """The peer is not speaking HTTP/2 or gRPC correctly; the request was sent."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason, sent=True)


def unary_call(
    address: str | tuple[str, int],
    path: str,
    request: bytes,
    *,
    timeout: float = 30.0,
    authority: str = "localhost",
    metadata: tuple[tuple[bytes, bytes], ...] = (),
) -> bytes:
    """Call the unary method ``path`` (e.g. "/cloudcni.v1.IpamBackend/Add") with the serialized
    request message; return the serialized response message.

    ``address`` is a Unix socket path (not on Windows), or a (host, port) pair for TCP: an IPv4 or
    IPv6 literal (the caller checks it is loopback). ``metadata`` are extra request headers,
    lower-case ASCII names; ``authorization`` is sent as never indexed (RFC 7541 7.1.3).
    ``timeout`` bounds the whole call (connect included) and is sent as grpc-timeout.
    """
    if not timeout > 0:
        raise ValueError(f"timeout must be positive, not {timeout!r}")
    if not path.startswith("/"):
        raise ValueError(f"method path must start with '/': {path!r}")
    raw_path = path.encode("ascii")  # UnicodeEncodeError is a ValueError
    raw_authority = authority.encode("ascii")
    for name, value in metadata:
        if not name or name != name.lower() or name[:1] == b":" or _has_forbidden_bytes(name + value):
            raise ValueError(f"invalid metadata name or value for {name!r}")
    deadline = time.monotonic() + timeout
    if isinstance(address, tuple):
        host, port = address
        where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        sock = _socket.socket(_socket.AF_INET6 if ":" in host else _socket.AF_INET, _socket.SOCK_STREAM)
    else:
        where = address
        family = getattr(_socket, "AF_UNIX", None)
        if family is None:  # CPython on Windows (cpython#77589); shim.cni refuses such a conflist first
            raise ValueError(f"this Python has no Unix sockets: {address!r} needs a (host, port) instead")
        sock = _socket.socket(family, _socket.SOCK_STREAM)
    try:
        sock.settimeout(timeout)
        try:
            if isinstance(address, tuple):
                # one write of preface + SETTINGS + HEADERS + DATA; answers to the server's frames
                # must not wait for an ACK of it (Nagle's algorithm + delayed ACK: ~40 ms)
                sock.setsockopt(_socket.IPPROTO_TCP, _socket.TCP_NODELAY, 1)
            sock.connect(address)
        except TimeoutError as exc:
            raise Unavailable(f"connect to {where}: timed out after {timeout:g}s", sent=False) from exc
        except OSError as exc:
            raise Unavailable(f"connect to {where}: {_os_error(exc)}", sent=False) from exc
        call = _Call(sock, deadline, timeout)
        return call.run(raw_path, raw_authority, request, metadata)
    finally:
        sock.close()


def _has_forbidden_bytes(raw: bytes) -> bool:
    """Control characters (NUL, CR, LF...) and non-ASCII: nothing our metadata may carry."""
    return any(not 0x20 <= byte <= 0x7E for byte in raw)


def _os_error(exc: OSError) -> str:
    if exc.errno is not None and exc.errno in errno.errorcode:
        return f"{errno.errorcode[exc.errno]} ({exc.strerror})"
    return str(exc)


def _frame(kind: int, flags: int, stream: int, payload: bytes = b"") -> bytes:
    return len(payload).to_bytes(3, "big") + bytes((kind, flags)) + stream.to_bytes(4, "big") + payload


def _grpc_timeout(seconds: float) -> bytes:
    """The grpc-timeout value: at most 8 digits and a unit; rounded up, so never zero."""
    millis = int(seconds * 1000)
    if millis < seconds * 1000:
        millis += 1
    if millis < 100_000_000:
        return b"%dm" % millis
    return b"%dS" % min(millis // 1000 + 1, 99_999_999)


def _percent_decode(raw: bytes) -> str:
    """grpc-message is UTF-8 with %XX escapes; a malformed escape stays as it is."""
    if b"%" not in raw:
        return raw.decode("utf-8", "replace")
    parts = raw.split(b"%")
    out = bytearray(parts[0])
    for part in parts[1:]:
        if len(part) >= 2 and part[0] in _HEX_DIGITS and part[1] in _HEX_DIGITS:
            out.append(int(part[:2], 16))
            out += part[2:]
        else:
            out += b"%" + part
    return out.decode("utf-8", "replace")


def _h2_error(code: int) -> str:
    return _H2_ERRORS[code] if 0 <= code < len(_H2_ERRORS) else f"error 0x{code:x}"


def _strip_padding(flags: int, payload: bytes, kind: str) -> bytes:
    if not flags & _PADDED:
        return payload
    if not payload or payload[0] >= len(payload):
        raise ProtocolError(f"{kind} frame padding longer than the frame")
    return payload[1 : len(payload) - payload[0]]


class _Call:
    """The state of the one connection and its one stream, while the response is read."""

    def __init__(self, sock: _socket.socket, deadline: float, timeout: float) -> None:
        self.sock = sock
        self.deadline = deadline
        self.timeout = timeout
        self.decoder = hpack.Decoder()
        # sending
        self.message = b""  # the framed request message
        self.message_sent = 0  # how much of it went out in DATA: the rest awaits flow-control credit
        self.send_connection_window = _DEFAULT_WINDOW
        self.send_stream_window = _DEFAULT_WINDOW
        self.peer_initial_window = _DEFAULT_WINDOW
        self.peer_max_frame = _DEFAULT_FRAME_SIZE
        # receiving
        self.seen_settings = False
        self.receive_connection_window = RECEIVE_WINDOW
        self.receive_stream_window = RECEIVE_WINDOW
        self.unacknowledged = 0  # DATA bytes received since we last granted credit
        self.continuation: bytearray | None = None  # a header block awaiting CONTINUATION
        self.continuation_ends_stream = False
        self.headers: list[tuple[bytes, bytes]] | None = None
        self.trailers: list[tuple[bytes, bytes]] | None = None
        self.data = bytearray()
        self.done = False
        self.goaway = ""
        self.send_failed = ""

    def run(
        self, path: bytes, authority: bytes, request: bytes, metadata: tuple[tuple[bytes, bytes], ...] = ()
    ) -> bytes:
        block = hpack.encode(
            [
                (b":method", b"POST"),
                (b":scheme", b"http"),
                (b":path", path),
                (b":authority", authority),
                (b"content-type", b"application/grpc"),
                (b"te", b"trailers"),
                (b"grpc-timeout", _grpc_timeout(self.timeout)),
                *((name, value) for name, value in metadata if name != _AUTHORIZATION),
            ]
        )
        for name, value in metadata:
            if name == _AUTHORIZATION:  # 6.2.3 literal never indexed, static name 23: a credential
                block += hpack.encode_integer(23, 4, 0x10) + hpack.encode_integer(len(value), 7) + value
        out = bytearray(_PREFACE)
        out += _frame(
            _SETTINGS,
            0,
            0,
            _ENABLE_PUSH.to_bytes(2, "big")
            + (0).to_bytes(4, "big")
            + _INITIAL_WINDOW_SIZE.to_bytes(2, "big")
            + RECEIVE_WINDOW.to_bytes(4, "big"),
        )
        out += _frame(_WINDOW_UPDATE, 0, 0, (RECEIVE_WINDOW - _DEFAULT_WINDOW).to_bytes(4, "big"))
        for start in range(0, max(len(block), 1), _DEFAULT_FRAME_SIZE):
            chunk = block[start : start + _DEFAULT_FRAME_SIZE]
            last = start + _DEFAULT_FRAME_SIZE >= len(block)
            kind = _HEADERS if start == 0 else _CONTINUATION
            out += _frame(kind, _END_HEADERS if last else 0, _STREAM, chunk)
        self.message = b"\x00" + len(request).to_bytes(4, "big") + request
        self._send_data(out)
        self._send(out)
        return self._receive()

    def _send(self, out: bytearray) -> None:
        """Send; a failure is remembered, not raised: the answer may be in our receive buffer
        already (a server may answer and close), so reading goes on until it ends."""
        if self.send_failed:
            return
        self.sock.settimeout(max(self.deadline - time.monotonic(), 0.001))
        try:
            self.sock.sendall(out)
        except OSError as exc:  # TimeoutError included: the peer does not read
            self.send_failed = "timed out" if isinstance(exc, TimeoutError) else _os_error(exc)

    def _send_data(self, out: bytearray) -> None:
        """Append to ``out`` the DATA frames that the peer's flow-control windows allow."""
        message = self.message
        while self.message_sent < len(message):
            start = self.message_sent
            size = min(len(message) - start, self.send_connection_window, self.send_stream_window)
            size = min(size, self.peer_max_frame)
            if size <= 0:
                return
            self.message_sent += size
            self.send_connection_window -= size
            self.send_stream_window -= size
            end_stream = _END_STREAM if self.message_sent == len(message) else 0
            out += _frame(_DATA, end_stream, _STREAM, message[start : start + size])

    def _receive(self) -> bytes:
        buffer = bytearray()
        while True:
            remaining = self.deadline - time.monotonic()
            if remaining <= 0:
                raise Unavailable(f"no answer from the daemon within {self.timeout:g}s", sent=True)
            self.sock.settimeout(remaining)
            chunk: bytes | None
            try:
                chunk = self.sock.recv(65536)
            except TimeoutError as exc:
                raise Unavailable(f"no answer from the daemon within {self.timeout:g}s", sent=True) from exc
            except ConnectionResetError:
                chunk = None  # it closed with our frames unread: the same end as a plain close
            except OSError as exc:
                raise Unavailable(f"reading from the daemon failed: {_os_error(exc)}", sent=True) from exc
            if not chunk:
                notes = [f"GOAWAY {self.goaway}"] if self.goaway else []
                notes += ["ECONNRESET"] if chunk is None else []
                notes += [f"sending failed: {self.send_failed}"] if self.send_failed else []
                why = f" ({'; '.join(notes)})" if notes else ""
                raise Unavailable(f"the daemon closed the connection before answering{why}", sent=True)
            buffer += chunk
            out = bytearray()
            offset = 0
            while len(buffer) - offset >= 9:
                length = buffer[offset] << 16 | buffer[offset + 1] << 8 | buffer[offset + 2]
                if length > _DEFAULT_FRAME_SIZE:
                    raise ProtocolError(
                        f"FRAME_SIZE_ERROR: a {length}-byte frame exceeds {_DEFAULT_FRAME_SIZE}"
                        + ("" if self.seen_settings else " (is this an HTTP/2 gRPC server?)")
                    )
                end = offset + 9 + length
                if end > len(buffer):
                    break
                kind = buffer[offset + 3]
                flags = buffer[offset + 4]
                stream = int.from_bytes(buffer[offset + 5 : offset + 9], "big") & _MAX_WINDOW
                payload = bytes(buffer[offset + 9 : end])
                offset = end
                self._on_frame(kind, flags, stream, payload, out)
                if self.done:
                    return self._result()
            del buffer[:offset]
            if out:
                self._send(out)

    def _on_frame(self, kind: int, flags: int, stream: int, payload: bytes, out: bytearray) -> None:
        if not self.seen_settings:
            if kind != _SETTINGS or flags & _ACK:
                raise ProtocolError(
                    f"the daemon's first frame is of type {kind}, not SETTINGS"
                    " (is this an HTTP/2 gRPC server?)"
                )
            self.seen_settings = True
        if self.continuation is not None and kind != _CONTINUATION:
            raise ProtocolError(f"PROTOCOL_ERROR: frame of type {kind} inside a header block")
        if kind == _DATA:
            self._on_data(flags, stream, payload, out)
        elif kind in (_HEADERS, _CONTINUATION):
            self._on_headers(kind, flags, stream, payload)
        elif kind == _SETTINGS:
            self._on_settings(flags, stream, payload, out)
        elif kind == _WINDOW_UPDATE:
            self._on_window_update(stream, payload, out)
        elif kind == _PING:
            if stream != 0 or len(payload) != 8:
                raise ProtocolError(f"PING frame with stream {stream} and {len(payload)} bytes")
            if not flags & _ACK:
                out += _frame(_PING, _ACK, 0, payload)
        elif kind == _RST_STREAM:
            self._on_rst_stream(stream, payload)
        elif kind == _GOAWAY:
            self._on_goaway(stream, payload)
        elif kind == _PRIORITY:
            if stream == 0 or len(payload) != 5:
                raise ProtocolError(f"PRIORITY frame with stream {stream} and {len(payload)} bytes")
        elif kind == _PUSH_PROMISE:
            raise ProtocolError("PROTOCOL_ERROR: PUSH_PROMISE although we disabled push")
        # any other type is an extension we do not know: RFC 9113 5.5 says ignore it

    def _on_data(self, flags: int, stream: int, payload: bytes, out: bytearray) -> None:
        if stream != _STREAM:
            raise ProtocolError(f"PROTOCOL_ERROR: DATA frame on stream {stream}")
        self.receive_connection_window -= len(payload)
        self.receive_stream_window -= len(payload)
        if self.receive_connection_window < 0 or self.receive_stream_window < 0:
            raise ProtocolError("FLOW_CONTROL_ERROR: the daemon sent more DATA than the window allowed")
        if self.headers is None or self.trailers is not None:
            raise ProtocolError("PROTOCOL_ERROR: DATA frame outside the response body")
        self.data += _strip_padding(flags, payload, "DATA")
        if len(self.data) > MAX_RESPONSE_MESSAGE + 5:
            raise GrpcError(
                RESOURCE_EXHAUSTED, f"response larger than the {MAX_RESPONSE_MESSAGE} bytes allowed"
            )
        if flags & _END_STREAM:
            self.done = True
            return
        self.unacknowledged += len(payload)
        if self.unacknowledged >= RECEIVE_WINDOW // 2:
            grant = self.unacknowledged.to_bytes(4, "big")
            out += _frame(_WINDOW_UPDATE, 0, 0, grant) + _frame(_WINDOW_UPDATE, 0, _STREAM, grant)
            self.receive_connection_window += self.unacknowledged
            self.receive_stream_window += self.unacknowledged
            self.unacknowledged = 0

    def _on_headers(self, kind: int, flags: int, stream: int, payload: bytes) -> None:
        if stream != _STREAM:
            raise ProtocolError(f"PROTOCOL_ERROR: header block on stream {stream}")
        if kind == _CONTINUATION:
            if self.continuation is None:
                raise ProtocolError("PROTOCOL_ERROR: CONTINUATION frame without HEADERS")
            self.continuation += payload
        else:
            payload = _strip_padding(flags, payload, "HEADERS")
            if flags & _PRIORITY_FLAG:
                if len(payload) < 5:
                    raise ProtocolError("HEADERS frame too short for its priority fields")
                payload = payload[5:]
            self.continuation = bytearray(payload)
            self.continuation_ends_stream = bool(flags & _END_STREAM)
        if len(self.continuation) > _MAX_HEADER_BLOCK:
            raise ProtocolError(f"header block larger than {_MAX_HEADER_BLOCK} bytes")
        if flags & _END_HEADERS:
            block, self.continuation = bytes(self.continuation), None
            self._on_header_block(block, self.continuation_ends_stream)

    def _on_header_block(self, block: bytes, end_stream: bool) -> None:
        try:
            fields = self.decoder.decode(block)
        except hpack.HpackError as exc:
            raise ProtocolError(f"COMPRESSION_ERROR: {exc}") from exc
        if self.headers is None:
            status = _field(fields, b":status")
            if status is None or len(status) != 3 or not status.isdigit():
                raise ProtocolError(f"response headers without a valid :status ({status!r})")
            if status[0:1] == b"1" and not end_stream:
                return  # an informational (1xx) response: the real one follows
            self.headers = fields
            if end_stream:
                self.done = True  # trailers-only: the status is in this block
                return
            content_type = _field(fields, b"content-type") or b""
            if status != b"200":
                code = int(status)
                raise GrpcError(_HTTP_TO_GRPC.get(code, UNKNOWN), f"HTTP status {code} from the daemon")
            if not content_type.startswith(b"application/grpc"):
                raise GrpcError(UNKNOWN, f"response content-type is {content_type.decode('latin-1')!r}")
        elif self.trailers is None and end_stream:
            self.trailers = fields
            self.done = True
        else:
            raise ProtocolError(
                "PROTOCOL_ERROR: a header block after the headers that does not end the stream"
            )

    def _on_settings(self, flags: int, stream: int, payload: bytes, out: bytearray) -> None:
        if stream != 0:
            raise ProtocolError(f"PROTOCOL_ERROR: SETTINGS frame on stream {stream}")
        if flags & _ACK:
            if payload:
                raise ProtocolError("FRAME_SIZE_ERROR: SETTINGS ACK with a payload")
            return
        if len(payload) % 6:
            raise ProtocolError(f"FRAME_SIZE_ERROR: SETTINGS frame of {len(payload)} bytes")
        for offset in range(0, len(payload), 6):
            identifier = payload[offset] << 8 | payload[offset + 1]
            value = int.from_bytes(payload[offset + 2 : offset + 6], "big")
            if identifier == _ENABLE_PUSH and value != 0:
                raise ProtocolError(f"PROTOCOL_ERROR: a server sent SETTINGS_ENABLE_PUSH={value}")
            if identifier == _INITIAL_WINDOW_SIZE:
                if value > _MAX_WINDOW:
                    raise ProtocolError(f"FLOW_CONTROL_ERROR: SETTINGS_INITIAL_WINDOW_SIZE={value}")
                self.send_stream_window += value - self.peer_initial_window
                self.peer_initial_window = value
            elif identifier == _MAX_FRAME_SIZE:
                if not _DEFAULT_FRAME_SIZE <= value < 1 << 24:
                    raise ProtocolError(f"PROTOCOL_ERROR: SETTINGS_MAX_FRAME_SIZE={value}")
                self.peer_max_frame = value
            # SETTINGS_HEADER_TABLE_SIZE does not concern us: our encoder never indexes; the
            # others (and unknown ones, such as grpc's 0xfe03) we ignore
        out += _frame(_SETTINGS, _ACK, 0)
        self._send_data(out)

    def _on_window_update(self, stream: int, payload: bytes, out: bytearray) -> None:
        if len(payload) != 4:
            raise ProtocolError(f"FRAME_SIZE_ERROR: WINDOW_UPDATE frame of {len(payload)} bytes")
        increment = int.from_bytes(payload, "big") & _MAX_WINDOW
        if stream == 0:
            if increment == 0:
                raise ProtocolError("PROTOCOL_ERROR: connection WINDOW_UPDATE of 0")
            self.send_connection_window += increment
            if self.send_connection_window > _MAX_WINDOW:
                raise ProtocolError("FLOW_CONTROL_ERROR: connection window above 2^31-1")
        elif stream == _STREAM:
            if increment == 0:
                raise ProtocolError("PROTOCOL_ERROR: stream WINDOW_UPDATE of 0")
            self.send_stream_window += increment
            if self.send_stream_window > _MAX_WINDOW:
                raise ProtocolError("FLOW_CONTROL_ERROR: stream window above 2^31-1")
        else:
            return  # a stream we never opened, or closed: nothing to update
        self._send_data(out)

    def _on_rst_stream(self, stream: int, payload: bytes) -> None:
        if len(payload) != 4:
            raise ProtocolError(f"FRAME_SIZE_ERROR: RST_STREAM frame of {len(payload)} bytes")
        if stream == 0:
            raise ProtocolError("PROTOCOL_ERROR: RST_STREAM on stream 0")
        if stream != _STREAM:
            return
        code = int.from_bytes(payload, "big")
        if code == _REFUSED_STREAM:  # RFC 9113 8.7: the request was not processed
            raise Unavailable("the daemon refused the call (REFUSED_STREAM)", sent=False)
        raise Unavailable(f"the daemon reset the call ({_h2_error(code)})", sent=True)

    def _on_goaway(self, stream: int, payload: bytes) -> None:
        if stream != 0:
            raise ProtocolError(f"PROTOCOL_ERROR: GOAWAY on stream {stream}")
        if len(payload) < 8:
            raise ProtocolError(f"FRAME_SIZE_ERROR: GOAWAY frame of {len(payload)} bytes")
        last_stream = int.from_bytes(payload[:4], "big") & _MAX_WINDOW
        code = int.from_bytes(payload[4:8], "big")
        debug = payload[8:].decode("utf-8", "replace")
        self.goaway = _h2_error(code) + (f": {debug}" if debug else "")
        if last_stream < _STREAM:  # RFC 9113 6.8: streams above last_stream were not processed
            raise Unavailable(
                f"the daemon is going away and did not take the call ({self.goaway})", sent=False
            )
        if code != 0:
            raise Unavailable(f"the daemon closed the connection ({self.goaway})", sent=True)
        # a graceful GOAWAY that covers our stream: the answer still comes

    def _result(self) -> bytes:
        assert self.headers is not None
        fields = self.trailers if self.trailers is not None else self.headers
        raw_status = _field(fields, b"grpc-status")
        raw_message = _field(fields, b"grpc-message") or b""
        metadata: dict[str, str] = {}
        for name, value in fields:
            if name[:1] == b":" or name in (b"grpc-status", b"grpc-message", b"content-type"):
                continue
            key = name.decode("latin-1")
            text = value.decode("utf-8", "replace")
            metadata[key] = f"{metadata[key]},{text}" if key in metadata else text
        if raw_status is None:
            http = _field(self.headers, b":status") or b"200"
            if http != b"200":
                code = int(http)
                raise GrpcError(
                    _HTTP_TO_GRPC.get(code, UNKNOWN), f"HTTP status {code} from the daemon", metadata
                )
            raise GrpcError(UNKNOWN, "the response carries no grpc-status", metadata)
        if not raw_status.isdigit() or len(raw_status) > 9:
            raise GrpcError(UNKNOWN, f"invalid grpc-status {raw_status.decode('latin-1')!r}", metadata)
        status = int(raw_status)
        if status != 0:
            raise GrpcError(status, _percent_decode(raw_message), metadata)
        data = self.data
        if len(data) < 5:
            raise GrpcError(
                INTERNAL, "the response has no message" if not data else "truncated response message"
            )
        if data[0] != 0:
            raise GrpcError(INTERNAL, "compressed response message, but no compression was negotiated")
        length = int.from_bytes(data[1:5], "big")
        if len(data) != 5 + length:
            raise GrpcError(
                INTERNAL, f"response message framing: {length}-byte message in {len(data) - 5} bytes of DATA"
            )
        return bytes(data[5:])


def _field(fields: list[tuple[bytes, bytes]], name: bytes) -> bytes | None:
    for key, value in fields:
        if key == name:
            return value
    return None
