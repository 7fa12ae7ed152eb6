"""The shim's transport: ADD + DEL over the Unix socket vs over loopback TCP with the token.

Two daemons on the sim provider (DATAPATH=none, a warm pool: no cloud call), one with IPAMD_SOCKET
a Unix socket, one with IPAMD_SOCKET=tcp://127.0.0.1:PORT (token file beside the checkpoint). The
plugin is exec'd as a runtime does, as `cloud-cni install-shim` lays it on a node (the pip shim
when the installer is missing); each round makes one ADD then one DEL of a new container through
each transport, interleaved and alternating which goes first, so machine noise hits both alike.
Prints p50 / p99 of ADD, DEL and the round trip (fork to exit, ms), the child's CPU per round
trip, and the ratio TCP / UDS.

    .venv/bin/python bench/bench_transport.py [--rounds 300]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _daemon import WARM_POOL_ENV, Daemon, free_port, load_average, median, percentile
from bench_shim_exec import PIP_SHIM, deploy_shim

BASE_ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "CNI_PATH": "/opt/cni/bin", "CNI_IFNAME": "eth0"}


def exec_plugin(plugin: Path, env: dict[str, str], stdin: bytes) -> tuple[float, float]:
    """Run the plugin once: (wall ms fork to exit, child CPU ms)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run([str(plugin)], input=stdin, env=env, capture_output=True, check=False)
    wall = (time.perf_counter() - start) * 1000
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise SystemExit(f"{env['CNI_COMMAND']} failed: {done.stdout.decode()}")
    cpu = (after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime) * 1000
    return wall, cpu


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--rounds", type=int, default=300, help="ADD+DEL rounds per transport (default 300)")
    parser.add_argument("--dir", type=Path, default=None, help="parent of the daemons' directories")
    args = parser.parse_args()
    tcp_env = {**WARM_POOL_ENV, "IPAMD_SOCKET": f"tcp://127.0.0.1:{free_port()}"}
    with (
        Daemon(args.dir, **WARM_POOL_ENV) as uds,
        Daemon(args.dir, **tcp_env) as tcp,
        tempfile.TemporaryDirectory() as tmp,
    ):
        uds.wait_available(300)
        tcp.wait_available(300)
        print(f"UDS {uds.describe()}\nTCP {tcp.describe()}")
        plugin = deploy_shim(Path(tmp)) or PIP_SHIM
        base = {"cniVersion": "1.0.0", "name": "cloud-cni", "type": "cloud-cni", "logFile": f"{tmp}/shim.log"}
        token_file = str(Path(tcp.env["CHECKPOINT_PATH"]).parent / "ipamd.token")
        confs = {
            "UDS": json.dumps({**base, "ipamdSocket": uds.socket}).encode(),
            "TCP": json.dumps({**base, "ipamdSocket": tcp.socket, "ipamdTokenFile": token_file}).encode(),
        }
        wall: dict[str, list[float]] = {f"{t} {v}": [] for t in confs for v in ("ADD", "DEL", "ADD+DEL")}
        cpu: dict[str, list[float]] = {t: [] for t in confs}

        def round_trip(transport: str, i: int) -> None:
            cid = f"bt{transport.lower()}{i:07d}"
            env = {**BASE_ENV, "CNI_CONTAINERID": cid, "CNI_NETNS": f"/var/run/netns/{cid}",
                   "CNI_ARGS": f"IgnoreUnknown=1;K8S_POD_NAMESPACE=bench;K8S_POD_NAME={cid}"}  # fmt: skip
            add, add_cpu = exec_plugin(plugin, {**env, "CNI_COMMAND": "ADD"}, confs[transport])
            delete, del_cpu = exec_plugin(
                plugin, {**env, "CNI_COMMAND": "DEL", "CNI_NETNS": ""}, confs[transport]
            )
            wall[f"{transport} ADD"].append(add)
            wall[f"{transport} DEL"].append(delete)
            wall[f"{transport} ADD+DEL"].append(add + delete)
            cpu[transport].append(add_cpu + del_cpu)

        for i in range(20):  # warm the page cache and both daemons
            for transport in confs:
                round_trip(transport, i)
        for values in (*wall.values(), *cpu.values()):
            values.clear()
        for i in range(args.rounds):
            order = ("UDS", "TCP") if i % 2 == 0 else ("TCP", "UDS")
            for transport in order:
                round_trip(transport, 1000 + i)
        print(f"rounds: {args.rounds}, interleaved; plugin {plugin}")
        for name, values in wall.items():
            extra = f"  CPU p50 {median(cpu[name[:3]]):5.2f} ms" if name.endswith("ADD+DEL") else ""
            print(f"  {name:<12} p50 {median(values):6.2f} ms  p99 {percentile(values, 0.99):6.2f} ms{extra}")
        for stat, fn in (("p50", median), ("p99", lambda v: percentile(v, 0.99))):
            ratio = fn(wall["TCP ADD+DEL"]) / fn(wall["UDS ADD+DEL"])
            print(f"ADD+DEL {stat} ratio TCP / UDS {ratio:.3f}")
        print(f"CPU p50 ratio TCP / UDS {median(cpu['TCP']) / median(cpu['UDS']):.3f}")
        print(f"load average (1 min) at the end: {load_average()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
