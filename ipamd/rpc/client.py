"""A gRPC client for the daemon's socket, for the demo, the benchmarks and the tests.

The CNI shim does not use this module (it must not import grpc: see shim/).
"""

from __future__ import annotations

from typing import Any

import grpc

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

    def __init__(self, socket_path: str, timeout: float = 30.0) -> None:
        self.channel = grpc.insecure_channel(f"unix:{socket_path}")
        self.stub = pb_grpc.IpamBackendStub(self.channel)
        self.timeout = timeout

    def close(self) -> None:
        self.channel.close()

    def __enter__(self) -> IpamClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def add(self, att: pb.Attachment, cni_version: str = "1.0.0") -> pb.AddReply:
        try:
            return self.stub.Add(pb.AddRequest(attachment=att, cni_version=cni_version), timeout=self.timeout)
        except grpc.RpcError as exc:
            raise _failure(exc) from None

    def delete(self, att: pb.Attachment, prev_result: str = "", reason: str = "cni-del") -> None:
        try:
            self.stub.Del(
                pb.DelRequest(attachment=att, prev_result=prev_result, reason=reason), timeout=self.timeout
            )
        except grpc.RpcError as exc:
            raise _failure(exc) from None

    def check(self, att: pb.Attachment, prev_result: str) -> None:
        try:
            self.stub.Check(pb.CheckRequest(attachment=att, prev_result=prev_result), timeout=self.timeout)
        except grpc.RpcError as exc:
            raise _failure(exc) from None

    def gc(self, network: str, valid: list[tuple[str, str]]) -> int:
        refs = [pb.AttachmentRef(container_id=c, ifname=i) for c, i in valid]
        try:
            reply = self.stub.Gc(
                pb.GcRequest(network_name=network, valid_attachments=refs), timeout=self.timeout
            )
        except grpc.RpcError as exc:
            raise _failure(exc) from None
        return reply.released

    def status(self, network: str = "cloud-cni") -> pb.StatusReply:
        try:
            return self.stub.Status(pb.StatusRequest(network_name=network), timeout=self.timeout)
        except grpc.RpcError as exc:
            raise _failure(exc) from None
