"""Whole-process cost of one gRPC call with shim.h2grpc, against the floor of the interpreter.

    .venv/bin/python bench/bench_h2grpc.py [--rounds 300]

Starts a grpc.aio server (the library the daemon serves with) on a Unix socket in a temp dir, in
a thread of this process, serving IpamBackend/Status. Precompiles shim/ (PYTHONDONTWRITEBYTECODE
is set on these machines, and -I ignores it anyway), then execs the real interpreter (not the
venv's symlink, not a pyenv shim) with -I -S, interleaved round by round so that machine noise
hits every case alike:
  - floor: `python -I -S -c pass`;
  - import: a 4-line script that sets sys.path and imports shim.h2grpc;
  - call: the same plus one Status call (the reply is checked: the process exits 1 otherwise).
Each is timed from before fork to after exit (subprocess.run). Prints p50 / p99 of each and the
ratio to the floor; asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import compileall
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import grpc

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _daemon import load_average, median, percentile

from ipamd.rpc.pb import ipamd_pb2 as pb
from ipamd.rpc.pb import ipamd_pb2_grpc as pb_grpc

ROOT = Path(__file__).resolve().parents[1]
REAL_PYTHON = os.path.realpath(sys.executable)

IMPORT_SCRIPT = f"""import sys
sys.path.insert(0, {str(ROOT)!r})
from shim import h2grpc
"""
# StatusRequest{{network_name: "bench"}}; the reply must say ready (field 1 = true).
CALL_SCRIPT = (
    IMPORT_SCRIPT
    + """reply = h2grpc.unary_call({socket!r}, "/cloudcni.v1.IpamBackend/Status", b"\\n\\x05bench", timeout=5)
sys.exit(0 if reply.startswith(b"\\x08\\x01") else 1)
"""
)


class StatusServicer(pb_grpc.IpamBackendServicer):
    async def Status(self, request: pb.StatusRequest, context: Any) -> pb.StatusReply:
        return pb.StatusReply(ready=True, available=100, assigned=10, total=110)


class Server:
    """grpc.aio on a Unix socket, run by an event loop in a thread."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.server: grpc.aio.Server | None = None

    async def _start(self) -> None:
        self.server = grpc.aio.server()
        pb_grpc.add_IpamBackendServicer_to_server(StatusServicer(), self.server)  # type: ignore[abstract]
        self.server.add_insecure_port(f"unix:{self.path}")
        await self.server.start()

    async def _stop(self) -> None:
        assert self.server is not None
        await self.server.stop(None)

    def __enter__(self) -> Server:
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self.loop).result(10)
        return self

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self._stop(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


def run(argv: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    proc = subprocess.run(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"{argv} exited {proc.returncode}:\n{proc.stderr.decode()}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--rounds", type=int, default=300, help="timed execs of each case (default 300)")
    parser.add_argument("--warmup", type=int, default=20, help="untimed rounds first (default 20)")
    args = parser.parse_args()

    if not compileall.compile_dir(str(ROOT / "shim"), quiet=1):
        raise SystemExit("compileall failed on shim/")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    with tempfile.TemporaryDirectory(prefix="bench-h2grpc-") as tmp:
        socket_path = f"{tmp}/ipamd.sock"
        cases = {
            "python -I -S -c pass (floor)": [REAL_PYTHON, "-I", "-S", "-c", "pass"],
            "import shim.h2grpc": [REAL_PYTHON, "-I", "-S", "-c", IMPORT_SCRIPT],
            "import + one Status call": [
                REAL_PYTHON,
                "-I",
                "-S",
                "-c",
                CALL_SCRIPT.format(socket=socket_path),
            ],
        }
        samples: dict[str, list[float]] = {name: [] for name in cases}
        with Server(socket_path):
            for i in range(args.warmup + args.rounds):
                for name, argv in cases.items():
                    elapsed = run(argv, env)
                    if i >= args.warmup:
                        samples[name].append(elapsed)

    print(f"interpreter {REAL_PYTHON} (-I -S), {args.rounds} rounds after {args.warmup} warm-up, interleaved")
    print(f"load average (1 min) {load_average()}, {os.cpu_count()} CPUs")
    floor = samples["python -I -S -c pass (floor)"]
    floor_p50, floor_p99 = median(floor) * 1000, percentile(floor, 0.99) * 1000
    print(f"{'case':<30} {'p50 ms':>8} {'p99 ms':>8}  {'p50/floor':>9} {'p99/floor':>9}  {'p50 - floor':>11}")
    for name, values in samples.items():
        p50, p99 = median(values) * 1000, percentile(values, 0.99) * 1000
        print(
            f"{name:<30} {p50:8.2f} {p99:8.2f}  {p50 / floor_p50:9.2f} {p99 / floor_p99:9.2f}  "
            f"{p50 - floor_p50:+8.2f} ms"
        )


if __name__ == "__main__":
    main()
