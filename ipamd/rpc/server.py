"""The gRPC service of proto/ipamd.proto on the daemon's Unix socket, plus grpc.health.v1.

The servicer only translates: proto -> validated call (``ipamd.rpc.validate``) -> ``IpamService``
-> proto, and any exception -> status + ``cni-code`` trailer (``ipamd.rpc.errors``).

Where there is no Unix socket (Windows), ``IPAMD_SOCKET=tcp://127.0.0.1:PORT`` (or ``[::1]``)
serves the same services on loopback TCP, and every call, health included, must carry
``authorization: Bearer <token>``: a token made at each start and written (mode 0600) to
``IPAMD_TOKEN_FILE`` before the port is bound (``TokenInterceptor``; docs/shim.md, "On Windows").
"""

from __future__ import annotations

import contextlib
import hmac
import os
import secrets
import socket
import stat
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import grpc
import structlog
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from ipamd import durable
from ipamd.config import tcp_endpoint
from ipamd.errors import ConfigError
from ipamd.metrics import Metrics, RpcRecorder
from ipamd.rpc import validate
from ipamd.rpc.errors import CNI_CODE_KEY, to_rpc_failure
from ipamd.rpc.pb import ipamd_pb2 as pb
from ipamd.rpc.pb import ipamd_pb2_grpc as pb_grpc
from ipamd.service import IpamService

if TYPE_CHECKING:
    from ipamd.config import Settings

    _ServerInterceptor = grpc.aio.ServerInterceptor[Any, Any]  # generic in the stubs only
else:
    _ServerInterceptor = grpc.aio.ServerInterceptor

log = structlog.get_logger("ipamd.rpc")
R = TypeVar("R")

SERVICE_NAME = "cloudcni.v1.IpamBackend"
Context = grpc.aio.ServicerContext[Any, Any]
_METHODS = ("add", "del", "check", "gc", "status")


class IpamServicer(pb_grpc.IpamBackendServicer):
    def __init__(self, service: IpamService, metrics: Metrics | None = None) -> None:
        self.service = service
        self.metrics = metrics
        # label lookups take a lock and hash the labels: done once here, not on every call
        self._recorders: dict[str, RpcRecorder] = (
            {m: metrics.rpc_recorder(m) for m in _METHODS} if metrics is not None else {}
        )

    async def _serve(self, method: str, context: Context, fn: Callable[[], Awaitable[R]]) -> R:
        start = time.perf_counter()
        recorder = self._recorders.get(method)
        try:
            reply = await fn()
        except Exception as exc:
            failure = to_rpc_failure(exc)
            if recorder is not None:
                recorder.served(ok=False, seconds=time.perf_counter() - start)
            log.warning("rpc_failed", method=method, cni_code=failure.cni_code, error=failure.message)
            context.set_trailing_metadata(((CNI_CODE_KEY, str(failure.cni_code)),))
            await context.abort(failure.status, failure.message)
            raise  # unreachable: abort raises
        if recorder is not None:
            recorder.served(ok=True, seconds=time.perf_counter() - start)
        return reply

    async def Add(self, request: pb.AddRequest, context: Context) -> pb.AddReply:
        async def run() -> pb.AddReply:
            call = validate.attachment(request.attachment, netns_required=True, dns=validate.dns(request.dns))
            result = await self.service.add(call)
            w = result.wiring
            return pb.AddReply(
                ip=result.assignment.ip,
                prefix_length=w.prefix_length,
                gateway=w.gateway,
                host_ifname=w.host_ifname,
                host_mac=w.host_mac,
                sandbox_mac=w.sandbox_mac,
                mtu=w.mtu,
                routes=[pb.Route(dst=dst, gw=gw) for dst, gw in w.routes],
                interface_id=result.assignment.interface_id,
                device_index=result.device_index,
            )

        return await self._serve("add", context, run)

    async def Del(self, request: pb.DelRequest, context: Context) -> pb.DelReply:
        async def run() -> pb.DelReply:
            call = validate.attachment(request.attachment, netns_required=False)
            prev = validate.prev_result(request.prev_result, required=False)
            await self.service.delete(call, prev)
            return pb.DelReply()

        return await self._serve("del", context, run)

    async def Check(self, request: pb.CheckRequest, context: Context) -> pb.CheckReply:
        async def run() -> pb.CheckReply:
            call = validate.attachment(request.attachment, netns_required=True)
            prev = validate.prev_result(request.prev_result, required=True)
            await self.service.check(call, prev)
            return pb.CheckReply()

        return await self._serve("check", context, run)

    async def Gc(self, request: pb.GcRequest, context: Context) -> pb.GcReply:
        async def run() -> pb.GcReply:
            network = validate.network_name(request.network_name)
            valid = [
                (validate.container_id(a.container_id), validate.ifname(a.ifname))
                for a in request.valid_attachments
            ]
            released = await self.service.gc(network, valid)
            return pb.GcReply(released=released)

        return await self._serve("gc", context, run)

    async def Status(self, request: pb.StatusRequest, context: Context) -> pb.StatusReply:
        async def run() -> pb.StatusReply:
            s = self.service.status()
            return pb.StatusReply(
                ready=s.ready, available=s.available, assigned=s.assigned, total=s.total, message=s.message
            )

        return await self._serve("status", context, run)


# sockaddr_un.sun_path holds 108 bytes on Linux, the terminating NUL included.
_SUN_PATH_MAX = 107


def _claim_socket_path(path: Path) -> None:
    """Remove a stale socket; refuse if a daemon is serving there or the path cannot be a socket.

    The directory is the caller's (``ipamd.daemon.prepare_directory``): made 0700 when the daemon
    creates it, checked and left alone when it exists.
    """
    if len(os.fsencode(path)) > _SUN_PATH_MAX:
        raise ConfigError(
            "IPAMD_SOCKET", str(path), f"a path of at most {_SUN_PATH_MAX} bytes (a Unix socket's limit)"
        )
    try:
        st = path.lstat()
    except FileNotFoundError:
        return
    except OSError as exc:
        raise ConfigError(
            "IPAMD_SOCKET", str(path), f"a path the daemon can inspect ({exc.strerror})"
        ) from None
    if not stat.S_ISSOCK(st.st_mode):
        raise ConfigError("IPAMD_SOCKET", str(path), "a path that is a socket or does not exist")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.settimeout(1.0)
        probe.connect(str(path))
    except OSError:
        try:
            path.unlink()  # stale: nobody is listening
        except FileNotFoundError:
            pass
        except OSError as exc:
            allowed = f"a path where the stale socket can be removed ({exc.strerror})"
            raise ConfigError("IPAMD_SOCKET", str(path), allowed) from None
        return
    finally:
        probe.close()
    raise ConfigError(
        "IPAMD_SOCKET", str(path), "a socket no other daemon is serving (one is listening there)"
    )


_AUTHORIZATION = "authorization"


def _claim_tcp_port(value: str, host: str, port: int) -> None:
    """Refuse a port something already listens on (another daemon, or anyone else)."""
    probe = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    try:
        probe.settimeout(1.0)
        probe.connect((host, port))
    except OSError:
        return
    finally:
        probe.close()
    raise ConfigError("IPAMD_SOCKET", value, "a loopback port nothing else listens on (something does)")


def _metadata_value(metadata: Sequence[tuple[str, str | bytes]] | None, key: str) -> bytes | None:
    for name, value in metadata or ():
        if name == key:
            return value if isinstance(value, bytes) else value.encode("utf-8", "surrogateescape")
    return None


class TokenInterceptor(_ServerInterceptor):
    """Lets a call through only with ``authorization: Bearer <token>`` (compared in constant time).

    Anything else, an unknown method included, is answered UNAUTHENTICATED with a message naming
    the token file, never the token. Health is not exempt: the probes use the introspection
    endpoint's /healthz, not gRPC (docs/deploy.md), so nothing needs to call without the token.
    """

    def __init__(self, token: str, token_file: Path) -> None:
        self._expected = f"Bearer {token}".encode("ascii")
        self.token_file = token_file
        message = (
            "this call carries no valid token: send metadata 'authorization: Bearer <token>' with "
            f"the token in {token_file} (the daemon writes a new one at every start)"
        )

        async def deny(request: Any, context: Context) -> None:
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, message)

        self._deny = {
            (False, False): grpc.unary_unary_rpc_method_handler(deny),
            (False, True): grpc.unary_stream_rpc_method_handler(deny),
            (True, False): grpc.stream_unary_rpc_method_handler(deny),
            (True, True): grpc.stream_stream_rpc_method_handler(deny),
        }

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any]]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any]:
        handler = await continuation(handler_call_details)
        presented = _metadata_value(handler_call_details.invocation_metadata, _AUTHORIZATION)
        if presented is not None and hmac.compare_digest(presented, self._expected):
            return handler
        log.warning(
            "rpc_unauthenticated",
            method=handler_call_details.method,
            token="missing" if presented is None else "wrong",
            token_file=str(self.token_file),
        )
        if handler is None:  # an unknown method: the caller learns nothing before it authenticates
            return self._deny[(False, False)]
        return self._deny[(handler.request_streaming, handler.response_streaming)]


class RpcServer:
    """The socket's life: ``claim`` (refuse if another daemon serves it), ``serve``, ``start``, ``stop``.

    The gRPC server itself is made in ``start``: a daemon that fails before serving has no server
    to shut down (an unstopped grpc.aio server left for the garbage collector schedules its
    shutdown on a closed event loop). ``close`` undoes whatever was done, at any point.

    ``local_file`` is the file the shim finds the daemon by, and the DEL spool lives beside it:
    the Unix socket, or with TCP the token file. The daemon prepares its directory
    (``local_variable`` names the setting).
    """

    def __init__(
        self,
        service: IpamService | None,
        socket_path: str,
        metrics: Metrics | None = None,
        *,
        token_file: str | None = None,
    ) -> None:
        self.address = socket_path
        self.tcp = tcp_endpoint(socket_path)
        if self.tcp is not None and token_file is None:
            raise ValueError("a tcp:// IPAMD_SOCKET needs a token file")
        self.token_file = Path(token_file) if self.tcp is not None and token_file is not None else None
        self.path = Path(socket_path)  # the Unix socket; with TCP unused
        self.local_file = self.token_file if self.token_file is not None else self.path
        self.local_variable = "IPAMD_TOKEN_FILE" if self.tcp is not None else "IPAMD_SOCKET"
        self.metrics = metrics
        self.service = service
        self.server: grpc.aio.Server | None = None
        self.health: Any = None
        self.claimed = False
        self.bound = False  # the socket file is ours to remove only once we made it

    @classmethod
    def from_settings(cls, settings: Settings, metrics: Metrics | None = None) -> RpcServer:
        return cls(None, settings.ipamd_socket, metrics, token_file=settings.effective_ipamd_token_file)

    def claim(self) -> None:
        if self.tcp is not None:
            _claim_tcp_port(self.address, *self.tcp)
        else:
            _claim_socket_path(self.path)
        self.claimed = True

    def serve(self, service: IpamService) -> None:
        self.service = service

    def remove_socket(self) -> None:
        if self.bound and self.tcp is None:
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()

    def _new_token(self) -> str:
        """A fresh token, on disk (0600, atomically) before the port is bound. The file is left at
        stop: the next start replaces it, and no daemon accepts the old token any more."""
        assert self.token_file is not None
        token = secrets.token_hex(32)
        try:
            durable.write_atomic(self.token_file, token.encode("ascii"), mode=0o600)
        except OSError as exc:
            reason = exc.strerror or type(exc).__name__
            raise ConfigError(
                "IPAMD_TOKEN_FILE", str(self.token_file), f"a file the daemon can write ({reason})"
            ) from None
        return token

    async def start(self) -> None:
        if not self.claimed:
            self.claim()
        interceptors: list[grpc.aio.ServerInterceptor[Any, Any]] = []
        if self.token_file is not None:
            interceptors.append(TokenInterceptor(self._new_token(), self.token_file))
        server = grpc.aio.server(
            interceptors=interceptors,
            options=[("grpc.so_reuseport", 0), ("grpc.max_receive_message_length", 4 << 20)],
        )
        self.server = server
        self.health = health.aio.HealthServicer()  # type: ignore[attr-defined]
        health_pb2_grpc.add_HealthServicer_to_server(self.health, server)
        if self.service is not None:
            pb_grpc.add_IpamBackendServicer_to_server(IpamServicer(self.service, self.metrics), server)
        if self.tcp is not None:
            await self._start_tcp(server, *self.tcp)
        else:
            await self._start_unix(server)
        for name in ("", SERVICE_NAME):
            await self.health.set(name, health_pb2.HealthCheckResponse.SERVING)
        if self.token_file is not None:
            log.info("rpc_serving", socket=self.address, token_file=str(self.token_file))
        else:
            log.info("rpc_serving", socket=str(self.path))

    async def _start_unix(self, server: grpc.aio.Server) -> None:
        old = os.umask(0o177)  # the socket is born 0600: no window where others can connect
        try:
            try:
                server.add_insecure_port(f"unix:{self.path}")
                self.bound = True
            except RuntimeError:  # grpc says only "Failed to bind"; its own log line has the cause
                raise ConfigError(
                    "IPAMD_SOCKET", str(self.path), "a path a Unix socket can be bound at"
                ) from None
            await server.start()
        finally:
            os.umask(old)
        os.chmod(self.path, 0o600)

    async def _start_tcp(self, server: grpc.aio.Server, host: str, port: int) -> None:
        target = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        try:
            bound = server.add_insecure_port(target)  # that address only: never a wildcard
        except RuntimeError:
            bound = 0
        if bound != port:
            raise ConfigError("IPAMD_SOCKET", self.address, "a loopback port the daemon can listen on")
        self.bound = True
        await server.start()

    async def stop(self, grace: float) -> None:
        """Stop accepting, let in-flight calls finish (up to ``grace``), remove the socket."""
        if self.server is not None:
            await self.health.enter_graceful_shutdown()
            await self.server.stop(grace)
            self.server = None
        self.remove_socket()

    async def close(self) -> None:
        """Release everything at once (a failed start): no grace, the socket file removed."""
        if self.server is not None:
            await self.server.stop(None)
            self.server = None
        self.remove_socket()
