"""Shim exec cost: fork to exit of the CNI plugin for ADD and DEL against a warm daemon.

Measures, in one run and interleaved so that machine noise hits every case alike:
  - the floor: `python -I -S -c pass` with the same real interpreter;
  - `cloud-cni-shim` as pip put it in the environment's bin/;
  - the plugin as `cloud-cni install-shim` lays it on a node (deploy/), when that installer exists;
each ADD (DATAPATH=none, warm pool: no cloud call) and each DEL of the same container.
Prints p50 / p99 and the ratio to the floor and to the targets (ADD p50 <= 40 ms, p99 <= 80 ms).

    .venv/bin/python bench/bench_shim_exec.py [--rounds 300]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _daemon import WARM_POOL_ENV, Daemon, load_average, median, percentile

REAL_PYTHON = os.path.realpath(sys.executable)
PIP_SHIM = Path(sys.executable).parent / "cloud-cni-shim"


CPU: dict[str, list[float]] = {}  # case -> the child's user + system CPU per call, ms


def timed(argv: list[str], env: dict[str, str], stdin: bytes, case: str = "") -> tuple[float, bytes, int]:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run(argv, input=stdin, env=env, capture_output=True, check=False)
    elapsed = (time.perf_counter() - start) * 1000
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime) * 1000
    CPU.setdefault(case, []).append(cpu)
    return elapsed, done.stdout, done.returncode


def deploy_shim(workdir: Path) -> Path | None:
    try:
        from ipamd import install_shim
    except ImportError:
        return None
    bin_dir, runtime = workdir / "bin", workdir / "cloud-cni"
    bin_dir.mkdir()
    install_shim.install(cni_bin_dir=bin_dir, runtime_dir=runtime, host_runtime_dir=runtime)
    return bin_dir / "cloud-cni"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--rounds", type=int, default=300, help="ADD+DEL rounds per plugin (default 300)")
    parser.add_argument("--dir", type=Path, default=None, help="parent of the daemon's directory")
    args = parser.parse_args()
    base_env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "CNI_PATH": "/opt/cni/bin", "CNI_IFNAME": "eth0"}
    with Daemon(args.dir, **WARM_POOL_ENV) as daemon, tempfile.TemporaryDirectory() as tmp:
        daemon.wait_available(300)
        print(daemon.describe())
        conf = json.dumps(
            {"cniVersion": "1.0.0", "name": "cloud-cni", "type": "cloud-cni", "ipamdSocket": daemon.socket,
             "logFile": f"{tmp}/shim.log"}
        ).encode()  # fmt: skip
        plugins: dict[str, Path] = {"pip bin/cloud-cni-shim": PIP_SHIM}
        deployed = deploy_shim(Path(tmp))
        if deployed is not None:
            plugins["deploy /opt/cni/bin/cloud-cni"] = deployed
        samples: dict[str, list[float]] = {"floor: python -I -S -c pass": []}
        for name in plugins:
            samples[f"{name} ADD"] = []
            samples[f"{name} DEL"] = []
        runs: list[tuple[str, Callable[[int], None]]] = []

        def floor(_: int) -> None:
            ms, _out, _code = timed(
                [REAL_PYTHON, "-I", "-S", "-c", "pass"], base_env, b"", "floor: python -I -S -c pass"
            )
            samples["floor: python -I -S -c pass"].append(ms)

        runs.append(("floor", floor))
        for name, path in plugins.items():

            def one(i: int, name: str = name, path: Path = path) -> None:
                cid = f"bench{abs(hash(name)) % 1000:03d}{i:06d}"
                env = {**base_env, "CNI_CONTAINERID": cid, "CNI_NETNS": f"/var/run/netns/{cid}",
                       "CNI_ARGS": f"IgnoreUnknown=1;K8S_POD_NAMESPACE=bench;K8S_POD_NAME={cid}"}  # fmt: skip
                ms, out, code = timed([str(path)], {**env, "CNI_COMMAND": "ADD"}, conf, f"{name} ADD")
                if code != 0:
                    raise SystemExit(f"{name} ADD failed: {out.decode()}")
                samples[f"{name} ADD"].append(ms)
                ms, out, code = timed(
                    [str(path)], {**env, "CNI_COMMAND": "DEL", "CNI_NETNS": ""}, conf, f"{name} DEL"
                )
                if code != 0:
                    raise SystemExit(f"{name} DEL failed: {out.decode()}")
                samples[f"{name} DEL"].append(ms)

            runs.append((name, one))
        for i in range(20):  # warm the page cache and the daemon
            for _, run in runs:
                run(i)
        for values in (*samples.values(), *CPU.values()):
            values.clear()
        for i in range(args.rounds):
            for _, run in runs:
                run(1000 + i)
        floor_p50 = median(samples["floor: python -I -S -c pass"])
        print(f"rounds: {args.rounds}, interleaved; real interpreter {REAL_PYTHON}")
        for name, values in samples.items():
            p50, p99 = median(values), percentile(values, 0.99)
            print(
                f"  {name:<40} p50 {p50:6.1f} ms  p99 {p99:6.1f} ms  ratio to floor {p50 / floor_p50:4.2f}"
                f"  CPU p50 {median(CPU[name]):5.2f} ms"
            )
        for name in plugins:
            add = samples[f"{name} ADD"]
            p50, p99 = median(add), percentile(add, 0.99)
            for label, value, target in (("p50", p50, 40.0), ("p99", p99, 80.0)):
                verdict = "met" if value <= target else "MISSED"
                ratio = value / target
                print(
                    f"{name} ADD {label} {value:.1f} ms target <= {target:.0f} ms ratio {ratio:.2f} {verdict}"
                )
        print(f"load average (1 min) at the end: {load_average()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
