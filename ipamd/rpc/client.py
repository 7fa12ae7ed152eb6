"""A gRPC client for the daemon's socket, for the demo, the benchmarks and the tests.

``socket_path`` is what the daemon's IPAMD_SOCKET says: a Unix socket path, or
``tcp://127.0.0.1:PORT`` / ``tcp://[::1]:PORT``, which needs the daemon's token file (read again
for every call: a restarted daemon has a new token).

The CNI shim does not use this module (it must not import grpc: see shim/).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import grpc

from ipamd.config import tcp_endpoint
from ipamd.rpc.errors import CNI_CODE_KEY
from ipamd.rpc.pb import ipamd_pb2 as pb
from ipamd.rpc.pb import ipamd_pb2_grpc as pb_grpc


class CniFailure(Exception):
    """A call the daemon refused: the gRPC status and the CNI error code it carried."""

    def __init__(self, status: grpc.StatusCode, cni_code: int, message: str) -> None:
        super().__init__(status, cni_code, message)
        self.status = status
        self.cni_code = cni_code
        self.message = message

    def __str__(self) -> str:
        return f"CNI error {self.cni_code} ({self.status.name}): {self.message}"


def attachment(
    container_id: str,
    *,
    ifname: str = "eth0",
    netns: str = "",
    network: str = "cloud-cni",
    namespace: str = "default",
    pod: str = "",
    uid: str = "",
) -> pb.Attachment:
    return pb.Attachment(
        container_id=container_id,
        ifname=ifname,
        netns=netns or f"/var/run/netns/{container_id[:12]}",
        network_name=network,
        pod=pb.PodInfo(
            namespace=namespace, name=pod or container_id[:12], uid=uid, infra_container_id=container_id
        ),
    )


def _failure(exc: grpc.RpcError) -> CniFailure:
    code = 999
    trailing: Any = exc.trailing_metadata() if isinstance(exc, grpc.Call) else None
    for key, value in trailing or ():
        if key == CNI_CODE_KEY:
            code = int(value)
    status = exc.code() if isinstance(exc, grpc.Call) else grpc.StatusCode.UNKNOWN
    details = exc.details() if isinstance(exc, grpc.Call) else str(exc)
    return CniFailure(status, code, details or "")


class IpamClient:
    """Blocking client; one channel, reused for every call."""

    def __init__(self, socket_path: str, timeout: float = 30.0, *, token_file: str | None = None) -> None:
        tcp = tcp_endpoint(socket_path)
        if tcp is None:
            target = f"unix:{socket_path}"
        elif token_file is None:
            raise ValueError(f"{socket_path} is TCP: the daemon's token file (IPAMD_TOKEN_FILE) is needed")
        else:
            host, port = tcp
            target = f"ipv6:[{host}]:{port}" if ":" in host else f"ipv4:{host}:{port}"
        self.token_file = Path(token_file) if tcp is not None and token_file is not None else None
        self.channel = grpc.insecure_channel(target)
        self.stub = pb_grpc.IpamBackendStub(self.channel)
        self.timeout = timeout

    def metadata(self) -> tuple[tuple[str, str], ...]:
        """The call's metadata: over TCP the token, read now from the token file."""
        if self.token_file is None:
            return ()
        return (("authorization", "Bearer " + self.token_file.read_text().strip()),)

    def close(self) -> None:
        self.channel.close()

    def __enter__(self) -> IpamClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def add(self, att: pb.Attachment, cni_version: str = "1.0.0") -> pb.AddReply:
        try:
            return self.stub.Add(
                pb.AddRequest(attachment=att, cni_version=cni_version),
                timeout=self.timeout,
                metadata=self.metadata(),
            )
        except grpc.RpcError as exc:
            raise _failure(exc) from None

    def delete(self, att: pb.Attachment, prev_result: str = "", reason: str = "cni-del") -> None:
        try:
            self.stub.Del(
                pb.DelRequest(attachment=att, prev_result=prev_result, reason=reason),
                timeout=self.timeout,
                metadata=self.metadata(),
            )
        except grpc.RpcError as exc:
            raise _failure(exc) from None

    def check(self, att: pb.Attachment, prev_result: str) -> None:
        try:
            self.stub.Check(
                pb.CheckRequest(attachment=att, prev_result=prev_result),
                timeout=self.timeout,
                metadata=self.metadata(),
            )
        except grpc.RpcError as exc:
            raise _failure(exc) from None

    def gc(self, network: str, valid: list[tuple[str, str]]) -> int:
        refs = [pb.AttachmentRef(container_id=c, ifname=i) for c, i in valid]
        try:
            reply = self.stub.Gc(
                pb.GcRequest(network_name=network, valid_attachments=refs),
                timeout=self.timeout,
                metadata=self.metadata(),
            )
        except grpc.RpcError as exc:
            raise _failure(exc) from None
        return reply.released

    def status(self, network: str = "cloud-cni") -> pb.StatusReply:
        try:
            return self.stub.Status(
                pb.StatusRequest(network_name=network), timeout=self.timeout, metadata=self.metadata()
            )
        except grpc.RpcError as exc:
            raise _failure(exc) from None
