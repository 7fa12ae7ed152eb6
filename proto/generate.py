"""Generate the Python gRPC code for proto/ipamd.proto into ipamd/rpc/pb (or OUT_DIR).

    python proto/generate.py [OUT_DIR]

tests/unit/test_proto_generated.py runs this into a temporary directory and fails when the
committed files differ: regenerate and commit after every change to the .proto.
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent
PROTO_DIR = ROOT / "proto"
PACKAGE = "ipamd.rpc.pb"


def generate(out_dir: Path) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    # protoc finds the mypy plugins (protoc-gen-mypy, from mypy-protobuf) on PATH, next to python.
    bindir = str(Path(sys.executable).parent)
    os.environ["PATH"] = bindir + os.pathsep + os.environ.get("PATH", "")
    include = Path(protoc.__file__).parent / "_proto"
    args = [
        "protoc",
        f"-I{PROTO_DIR}",
        f"-I{include}",
        f"--python_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        f"--mypy_out={out_dir}",
        f"--mypy_grpc_out={out_dir}",
        str(PROTO_DIR / "ipamd.proto"),
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")
    # protoc writes a top-level import; make it package-relative.
    for name in ("ipamd_pb2_grpc.py", "ipamd_pb2_grpc.pyi"):
        grpc_file = out_dir / name
        text = grpc_file.read_text()
        text = re.sub(r"^import ipamd_pb2 as", f"from {PACKAGE} import ipamd_pb2 as", text, flags=re.M)
        grpc_file.write_text(text)
    init = out_dir / "__init__.py"
    init.write_text('"""Generated from proto/ipamd.proto by proto/generate.py: do not edit."""\n')
    return [*sorted(out_dir.glob("ipamd_pb2*")), init]


if __name__ == "__main__":
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "ipamd" / "rpc" / "pb"
    for path in generate(target):
        print(path)
