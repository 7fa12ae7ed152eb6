"""Import cost of the daemon and its heavy dependencies: time and RSS, each in a fresh interpreter.

    PYTHONPATH=. .venv/bin/python bench/bench_imports.py [--rounds 5]

Each case runs in a new `python -c` (this venv's interpreter, the one the daemon runs on), which
imports the case's modules and prints the wall time of those imports and its VmRSS (from
/proc/self/status) afterwards. Cases are interleaved round by round, so machine noise hits them
alike. "grpc" and "grpcio client" are what the CNI plugin would import per exec if it used grpcio
(docs/shim.md). "daemon" is what every node loads whatever its cloud (`ipamd.daemon`, the sim
provider, introspection); the other cases add a provider's or a client's imports on top of it, so
"+ MiB" is their own cost. Prints the median of the rounds and their range; asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys

DAEMON = ["ipamd.daemon", "ipamd.cloud.sim", "ipamd.introspection"]
# What the providers import, lazily included (ipamd/cloud/*/client.py).
AWS = ["ipamd.cloud.aws.client", "boto3", "botocore.session", "botocore.loaders"]
AZURE = [
    "ipamd.cloud.azure.client",
    "azure.identity",
    "azure.core.pipeline.policies",
    "azure.core.polling",
    "azure.core.rest",
    "azure.mgmt.core",
    "azure.mgmt.core.exceptions",
    "azure.mgmt.core.policies",
    "azure.mgmt.core.polling.arm_polling",
]
CASES: dict[str, list[str]] = {
    "interpreter only": [],
    "grpc": ["grpc"],
    "grpcio client (ipamd.rpc.client)": ["ipamd.rpc.client"],
    "daemon": DAEMON,
    "daemon + the AWS provider (boto3)": [*DAEMON, *AWS],
    "daemon + azure.identity": [*DAEMON, "azure.identity"],
    "daemon + the Azure provider (azure.identity, azure.mgmt.core)": [*DAEMON, *AZURE],
    "daemon + kubernetes": [*DAEMON, "kubernetes"],
}

CHILD = """
import importlib, json, sys, time
names = json.loads(sys.argv[1])
started = time.perf_counter()
for name in names:
    importlib.import_module(name)
elapsed = time.perf_counter() - started
rss = next(l for l in open("/proc/self/status") if l.startswith("VmRSS:")).split()[1]
print(json.dumps({"seconds": elapsed, "rss_kb": int(rss)}))
"""


def measure(names: list[str]) -> tuple[float, float]:
    """Import time in ms and VmRSS in MiB of one fresh interpreter that imports ``names``."""
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, json.dumps(names)],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": os.environ.get("PYTHONPATH", ".")},
    )
    if proc.returncode != 0:
        raise SystemExit(f"importing {names} failed:\n{proc.stderr}")
    out = json.loads(proc.stdout)
    return out["seconds"] * 1e3, out["rss_kb"] / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5, help="fresh interpreters per case (default 5)")
    args = parser.parse_args()

    samples: dict[str, list[tuple[float, float]]] = {name: [] for name in CASES}
    for _ in range(args.rounds):
        for name, modules in CASES.items():
            samples[name].append(measure(modules))

    print(f"python {sys.version.split()[0]} ({sys.executable}); {args.rounds} rounds, interleaved")
    print(f"load average (1 min) at the end: {os.getloadavg()[0]:.2f}")
    print()
    print("| case | import ms, median (range) | VmRSS MiB, median (range) | + MiB over daemon |")
    print("|---|---|---|---|")
    base = statistics.median(rss for _, rss in samples["daemon"])
    for name, runs in samples.items():
        ms = [t for t, _ in runs]
        mb = [r for _, r in runs]
        extra = f"{statistics.median(mb) - base:+.1f}" if name.startswith("daemon +") else ""
        print(
            f"| {name} | {statistics.median(ms):.0f} ({min(ms):.0f}-{max(ms):.0f}) | "
            f"{statistics.median(mb):.1f} ({min(mb):.1f}-{max(mb):.1f}) | {extra} |"
        )


if __name__ == "__main__":
    main()
