"""The gRPC service of proto/ipamd.proto on the daemon's Unix socket, plus grpc.health.v1.

The servicer only translates: proto -> validated call (``ipamd.rpc.validate``) -> ``IpamService``
-> proto, and any exception -> status + ``cni-code`` trailer (``ipamd.rpc.errors``).
"""

from __future__ import annotations

import contextlib
import os
import socket
import stat
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import grpc
import structlog
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from ipamd.errors import ConfigError
from ipamd.metrics import Metrics, RpcRecorder
from ipamd.rpc import validate
from ipamd.rpc.errors import CNI_CODE_KEY, to_rpc_failure
from ipamd.rpc.pb import ipamd_pb2 as pb
from ipamd.rpc.pb import ipamd_pb2_grpc as pb_grpc
from ipamd.service import IpamService

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
            call = validate.attachment(request.attachment, netns_required=True)
            result = await self.service.add(call)
            w = result.wiring
            return pb.AddReply(
                ip=result.assignment.ip,
                prefix_length=32,
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


class RpcServer:
    """The socket's life: ``claim`` (refuse if another daemon serves it), ``serve``, ``start``, ``stop``.

    The gRPC server itself is made in ``start``: a daemon that fails before serving has no server
    to shut down (an unstopped grpc.aio server left for the garbage collector schedules its
    shutdown on a closed event loop). ``close`` undoes whatever was done, at any point.
    """

    def __init__(self, service: IpamService | None, socket_path: str, metrics: Metrics | None = None) -> None:
        self.path = Path(socket_path)
        self.metrics = metrics
        self.service = service
        self.server: grpc.aio.Server | None = None
        self.health: Any = None
        self.claimed = False
        self.bound = False  # the socket file is ours to remove only once we made it

    def claim(self) -> None:
        _claim_socket_path(self.path)
        self.claimed = True

    def serve(self, service: IpamService) -> None:
        self.service = service

    def remove_socket(self) -> None:
        if self.bound:
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()

    async def start(self) -> None:
        if not self.claimed:
            self.claim()
        server = grpc.aio.server(
            options=[("grpc.so_reuseport", 0), ("grpc.max_receive_message_length", 4 << 20)]
        )
        self.server = server
        self.health = health.aio.HealthServicer()  # type: ignore[attr-defined]
        health_pb2_grpc.add_HealthServicer_to_server(self.health, server)
        if self.service is not None:
            pb_grpc.add_IpamBackendServicer_to_server(IpamServicer(self.service, self.metrics), server)
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
        for name in ("", SERVICE_NAME):
            await self.health.set(name, health_pb2.HealthCheckResponse.SERVING)
        log.info("rpc_serving", socket=str(self.path))

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
