"""A CRI client (k8s.io/cri-api runtime.v1) for tests: the calls a kubelet makes to run a pod sandbox.

Why a vendored .proto compiled in-process rather than the descriptor inside /usr/bin/containerd:
the vendored subset (``runtime_v1.proto``) is a reviewable text with the exact names and field
numbers, independent of how a distribution built its containerd; ``grpc_tools.protoc`` (a dev
dependency already) turns it into a descriptor set in memory at first use, and ``message_factory``
makes the message classes from it, so no generated ``_pb2`` file is written, cached or imported, and
nothing can go stale. The descriptor embedded in the containerd binary is still read, but only by a
test (``embedded_descriptor``), which checks the subset against the runtime actually under test.

Calls go through ``channel.unary_unary`` with the full method path; requests are built from plain
dicts with ``json_format.ParseDict`` so a test reads like the CRI's JSON (crictl's ``-o json``).
"""

from __future__ import annotations

import functools
import tempfile
import zlib
from pathlib import Path
from typing import Any

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool, json_format, message, message_factory

PROTO = Path(__file__).with_name("runtime_v1.proto")
PACKAGE = "runtime.v1"


@functools.cache
def file_descriptor() -> descriptor_pb2.FileDescriptorProto:
    """The vendored subset, compiled by protoc (in this process) into a FileDescriptorProto."""
    from grpc_tools import protoc

    with tempfile.TemporaryDirectory(prefix="cri-proto-") as tmp:
        out = Path(tmp) / "runtime_v1.pb"
        argv = ["protoc", f"-I{PROTO.parent}", f"--descriptor_set_out={out}", PROTO.name]
        if protoc.main(argv) != 0:
            raise RuntimeError(f"protoc failed on {PROTO}")
        [proto] = descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes()).file
    return proto


@functools.cache
def messages() -> dict[str, type[message.Message]]:
    """Every message class of the subset by its short name (``RunPodSandboxRequest``)."""
    classes = message_factory.GetMessages([file_descriptor()], pool=descriptor_pool.DescriptorPool())
    return {name.removeprefix(PACKAGE + "."): cls for name, cls in classes.items()}


def build(name: str, value: dict[str, Any] | None = None) -> message.Message:
    return json_format.ParseDict(value or {}, messages()[name]())


def to_dict(msg: message.Message) -> dict[str, Any]:
    return json_format.MessageToDict(
        msg, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
    )


def embedded_descriptor(binary: Path = Path("/usr/bin/containerd")) -> descriptor_pb2.FileDescriptorProto:
    """The runtime.v1 api.proto descriptor a Go binary registered (gogo stores it gzip'd)."""
    data = binary.read_bytes()
    start = 0
    while (start := data.find(b"\x1f\x8b\x08", start)) >= 0:
        try:
            raw = zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(data[start : start + (1 << 20)])
            proto = descriptor_pb2.FileDescriptorProto.FromString(raw)
        except (zlib.error, message.DecodeError):
            proto = None
        if proto is not None and proto.package == PACKAGE and proto.name.endswith("api.proto"):
            return proto
        start += 3
    raise LookupError(f"no {PACKAGE} descriptor in {binary}")


class CriError(Exception):
    def __init__(self, method: str, err: grpc.RpcError) -> None:
        self.code = err.code() if isinstance(err, grpc.Call) else None
        self.details = err.details() if isinstance(err, grpc.Call) else str(err)
        super().__init__(f"{method}: {self.code}: {self.details}")


class Client:
    """Unary RuntimeService and ImageService calls over the runtime's Unix socket; dicts in and out."""

    def __init__(self, socket: str | Path, timeout: float = 60.0) -> None:
        self.channel = grpc.insecure_channel(f"unix://{socket}")
        self.timeout = timeout
        self._methods = {
            m.name: (f"/{PACKAGE}.{s.name}/{m.name}", m.input_type, m.output_type)
            for s in file_descriptor().service
            for m in s.method
        }

    def call(self, method: str, request: dict[str, Any] | None = None, timeout: float | None = None) -> Any:
        path, in_type, out_type = self._methods[method]
        in_type, out_type = in_type.rsplit(".", 1)[1], out_type.rsplit(".", 1)[1]
        stub = self.channel.unary_unary(
            path,
            request_serializer=lambda m: m.SerializeToString(),
            response_deserializer=messages()[out_type].FromString,
        )
        try:
            reply = stub(build(in_type, request), timeout=timeout or self.timeout)
        except grpc.RpcError as err:
            raise CriError(method, err) from None
        return to_dict(reply)

    def close(self) -> None:
        self.channel.close()
