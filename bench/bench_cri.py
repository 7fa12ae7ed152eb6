"""Pod start as a kubelet sees it: CRI RunPodSandbox with the stock bridge plugin vs cloud-cni.

Two real containerds (tests/fakes/containerd.py), each in its own isolated node netns with its own
1.0.0 conflist: one with the stock ``bridge`` + ``host-local`` plugins (the baseline), one with
``cloud-cni`` as `cloud-cni install-shim` lays it down, against a sim daemon (CLOUD_PROVIDER=sim,
warm pool: no cloud call on the path). Rounds are interleaved (the order flips every round) so that
machine noise hits both alike. Per plugin: RunPodSandbox latency, and run + stop + remove.
Prints p50 / p99 and the ratio cloud-cni / bridge of the medians.

    .venv/bin/python bench/bench_cri.py [--n 30] [--datapath none|linux]

``--datapath none`` (default): the daemon assigns an address and wires nothing (the pod gets no
interface), and runs in the root netns. ``--datapath linux``: the daemon runs inside cloud-cni's
node netns, as it would on a node, and wires the pod.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from _daemon import ROOT, WARM_POOL_ENV, Daemon, load_average, median, percentile

from tests.fakes import containerd
from tests.fakes.vpc import SUBNET, VPC_CIDR, vpc_topology

WARMUP = 3
# Reads a URL from inside a netns (the daemon's HTTP endpoints are on that netns' loopback).
# No proxy: the URL is on the netns' loopback.
PROBE = (
    "import sys, urllib.request; o = urllib.request.build_opener(urllib.request.ProxyHandler({}));"
    " print(o.open(sys.argv[1], timeout=2).read().decode())"
)


class NodeDaemon(Daemon):
    """The daemon inside a node netns (``nsenter --net``: the mount namespace stays the host's, so
    the pods' netns paths CRI passes in CNI_NETNS resolve). Its HTTP endpoints are on that netns'
    loopback, so they are read from a process started there."""

    def __init__(self, netns_path: str, parent: Path | None = None, **env: str) -> None:
        super().__init__(parent, **env)
        self.netns_path = netns_path

    def __enter__(self) -> NodeDaemon:
        with open(self.log_path, "wb") as err:
            self.proc = subprocess.Popen(
                ["nsenter", f"--net={self.netns_path}", sys.executable, "-m", "ipamd"],
                env=self.env,
                stdout=subprocess.DEVNULL,
                stderr=err,
                cwd=ROOT,
            )
        self.wait_ready()
        return self

    def get(self, path: str) -> Any:
        return json.loads(self._fetch(path))

    def _fetch(self, path: str) -> str:
        url = f"http://{self.env['INTROSPECTION_BIND']}{path}"
        done = subprocess.run(
            ["nsenter", f"--net={self.netns_path}", sys.executable, "-I", "-c", PROBE, url],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
        if done.returncode != 0:
            raise OSError(done.stderr.strip().splitlines()[-1:] or "probe failed")
        return done.stdout

    def wait_ready(self, timeout: float = 30.0) -> None:
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise SystemExit(f"daemon exited {self.proc.returncode}:\n{self.log_path.read_text()}")
            try:
                self._fetch("/healthz")  # 200 (its body is not JSON)
                return
            except OSError:
                time.sleep(0.1)
        raise SystemExit(f"daemon not ready after {timeout}s:\n{self.log_path.read_text()}")


def bridge_conflist(data_dir: Path) -> dict[str, Any]:
    ipam = {"type": "host-local", "ranges": [[{"subnet": "10.88.0.0/24"}]], "dataDir": str(data_dir)}
    bridge = {"type": "bridge", "bridge": "cni0", "isGateway": True, "ipMasq": False, "ipam": ipam}
    return {"cniVersion": "1.0.0", "name": "bridge-baseline", "plugins": [bridge]}


def cloud_cni_conflist(socket: str, log_file: Path) -> dict[str, Any]:
    plugin = {"type": "cloud-cni", "ipamdSocket": socket, "logFile": str(log_file)}
    return {"cniVersion": "1.0.0", "name": "cloud-cni", "plugins": [plugin]}


def cycle(runtime: containerd.Containerd, name: str) -> tuple[float, float, str]:
    """RunPodSandbox (timed alone), then stop + remove; returns (run ms, cycle ms, pod IP)."""
    start = time.perf_counter()
    reply = runtime.cri.call("RunPodSandbox", {"config": pod_config(runtime, name)})
    run_ms = (time.perf_counter() - start) * 1000
    sandbox = reply["pod_sandbox_id"]
    ip = runtime.cri.call("PodSandboxStatus", {"pod_sandbox_id": sandbox})["status"]["network"]["ip"]
    paused = time.perf_counter()  # the status read is ours, not the kubelet's: left out of the cycle
    runtime.cri.call("StopPodSandbox", {"pod_sandbox_id": sandbox})
    runtime.cri.call("RemovePodSandbox", {"pod_sandbox_id": sandbox})
    cycle_ms = run_ms + (time.perf_counter() - paused) * 1000
    return run_ms, cycle_ms, ip


def pod_config(runtime: containerd.Containerd, name: str) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "uid": f"uid-{name}", "namespace": "bench", "attempt": 0},
        "hostname": name,
        "linux": {
            "cgroup_parent": runtime.cgroup_parent,
            "security_context": {"namespace_options": {"network": "POD", "pid": "POD", "ipc": "POD"}},
        },
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--n", type=int, default=30, help="pods per plugin (default 30)")
    parser.add_argument("--datapath", choices=("none", "linux"), default="none", help="the daemon's DATAPATH")
    parser.add_argument("--dir", type=Path, default=None, help="parent of the work directory")
    parser.add_argument(
        "--burst", type=int, default=0, help="instead: bursts of this many parallel RunPodSandbox calls"
    )
    parser.add_argument("--bursts", type=int, default=6, help="with --burst: bursts per plugin (default 6)")
    args = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("needs root: network namespaces and containerd")

    with tempfile.TemporaryDirectory(prefix="bench-cri-", dir=args.dir) as tmp_name, ExitStack() as stack:
        tmp = Path(tmp_name)
        image = containerd.build_pause_image(tmp / "images")
        cloud_netns: str | None = None
        env = {**WARM_POOL_ENV, "DATAPATH": args.datapath}
        if args.datapath == "linux":
            # cloud-cni's node is a simulated VPC node (tests/fakes/vpc.py): eth0 with the sim's
            # primary MAC and IP, a router, hot-plugged ENIs; the pool stays on the primary ENI.
            vpc = stack.enter_context(vpc_topology(tmp / "sim" / "state.json", instance_type="m5.large"))
            cloud_netns = vpc.node
            env = {
                "DATAPATH": "linux",
                "SIM_INSTANCE_TYPE": vpc.instance_type,
                "SIM_SUBNET_CIDR": SUBNET,
                "SIM_VPC_CIDR": VPC_CIDR,
                "SIM_STATE_PATH": str(vpc.state_path),
                "WARM_IP_TARGET": "8",
                "MINIMUM_IP_TARGET": "9",
                "IP_COOLDOWN_PERIOD": "0",
            }
        bridge = stack.enter_context(containerd.node(tmp / "bridge-node", image))
        cloud = stack.enter_context(containerd.node(tmp / "cloud-node", image, node_netns=cloud_netns))
        bridge.install_plugins("bridge", "host-local")
        bridge.write_conflist(bridge_conflist(tmp / "host-local"))
        cloud.install_cloud_cni("install-shim")
        daemon: Daemon = (
            NodeDaemon(cloud.node_netns_path, tmp, **env) if args.datapath == "linux" else Daemon(tmp, **env)
        )
        with daemon:
            daemon.wait_available(WARMUP + 6 if args.datapath == "linux" else WARMUP + 8)
            cloud.write_conflist(cloud_cni_conflist(daemon.socket, tmp / "shim.log"))
            if args.burst:
                run_bursts(bridge, cloud, daemon, args)
                return 0
            samples = run_interleaved(bridge, cloud, args.n)
            if args.datapath == "linux":
                probe = cloud.run_pod("probe")  # the wired pod answers from the node
                cloud.exec_in_node(["ping", "-c", "1", "-W", "2", probe.ip])
                cloud.stop_pod(probe)
                cloud.remove_pod(probe)
            report(samples, args, cloud.snapshotter)
    return 0


def _children_cpu_ms(pid: int) -> float:
    """CPU of the reaped children of ``pid`` (utime + stime of waited-for children): for containerd,
    the CNI plugins it exec'd (the runtime shims are re-parented, runc runs under them)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[13]) + int(fields[14])) * 1000 / os.sysconf("SC_CLK_TCK")


def run_bursts(
    bridge: containerd.Containerd, cloud: containerd.Containerd, daemon: Daemon, args: argparse.Namespace
) -> None:
    """Bursts of ``args.burst`` RunPodSandbox calls at once per plugin, alternating plugins; each pod's
    latency, the burst's wall time, and CPU per pod: the plugins' (containerd's reaped children) and,
    for cloud-cni, the daemon's. Pods are stopped and removed between bursts, untimed."""
    from concurrent.futures import ThreadPoolExecutor

    cases: dict[str, containerd.Containerd] = {"bridge + host-local": bridge, "cloud-cni": cloud}
    lat: dict[str, list[float]] = {name: [] for name in cases}
    walls: dict[str, list[float]] = {name: [] for name in cases}
    plugin_cpu: dict[str, float] = dict.fromkeys(cases, 0.0)
    daemon_cpu = 0.0
    pool = ThreadPoolExecutor(max_workers=args.burst)

    def start(runtime: containerd.Containerd, name: str) -> tuple[float, str]:
        t0 = time.perf_counter()
        reply = runtime.cri.call("RunPodSandbox", {"config": pod_config(runtime, name)}, timeout=120)
        return (time.perf_counter() - t0) * 1000, reply["pod_sandbox_id"]

    for b in range(args.bursts + 1):  # the first burst of each plugin warms up
        order = list(cases.items()) if b % 2 == 0 else list(reversed(cases.items()))
        for name, runtime in order:
            assert runtime.proc is not None
            cpu0, d0 = _children_cpu_ms(runtime.proc.pid), daemon.cpu_seconds()
            t0 = time.perf_counter()
            names = [f"{name.split()[0]}-{b}-{i}" for i in range(args.burst)]
            results = list(pool.map(lambda n, r=runtime: start(r, n), names))
            wall = (time.perf_counter() - t0) * 1000
            cpu1, d1 = _children_cpu_ms(runtime.proc.pid), daemon.cpu_seconds()
            for _, sandbox in results:
                runtime.cri.call("StopPodSandbox", {"pod_sandbox_id": sandbox}, timeout=60)
                runtime.cri.call("RemovePodSandbox", {"pod_sandbox_id": sandbox}, timeout=60)
            if b == 0:
                continue
            lat[name].extend(ms for ms, _ in results)
            walls[name].append(wall)
            plugin_cpu[name] += cpu1 - cpu0
            if name == "cloud-cni":
                daemon_cpu += (d1 - d0) * 1000
    pool.shutdown()
    pods = args.burst * args.bursts
    print(
        f"{args.bursts} bursts of {args.burst} parallel RunPodSandbox per plugin after a warm-up burst, "
        f"alternating; cloud-cni DATAPATH={args.datapath}; load {load_average()}"
    )
    for name in cases:
        print(
            f"  {name:<22} RunPodSandbox p50 {median(lat[name]):7.1f} ms  "
            f"p99 {percentile(lat[name], 0.99):7.1f} ms  burst wall p50 {median(walls[name]):7.1f} ms  "
            f"plugin CPU {plugin_cpu[name] / pods:5.1f} ms/pod"
        )
    print(f"  cloud-cni daemon CPU {daemon_cpu / pods:5.1f} ms/pod")
    base, ours = lat["bridge + host-local"], lat["cloud-cni"]
    print(
        f"ratio cloud-cni / bridge: RunPodSandbox p50 {median(ours) / median(base):.2f} (goal <= 1.15), "
        f"burst wall p50 {median(walls['cloud-cni']) / median(walls['bridge + host-local']):.2f}"
    )


def run_interleaved(
    bridge: containerd.Containerd, cloud: containerd.Containerd, n: int
) -> dict[str, dict[str, list[float]]]:
    cases: dict[str, containerd.Containerd] = {"bridge + host-local": bridge, "cloud-cni": cloud}
    samples: dict[str, dict[str, list[float]]] = {name: {"run": [], "cycle": []} for name in cases}
    order: list[tuple[str, Callable[[int], tuple[float, float, str]]]] = [
        (name, lambda i, r=runtime, name=name: cycle(r, f"{name.split()[0]}-{i:03d}"))
        for name, runtime in cases.items()
    ]
    for i in range(WARMUP + n):
        for name, one in order if i % 2 == 0 else reversed(order):
            run_ms, cycle_ms, ip = one(i)
            if not ip:
                raise SystemExit(f"{name}: pod {i} has no IP in PodSandboxStatus")
            if i >= WARMUP:
                samples[name]["run"].append(run_ms)
                samples[name]["cycle"].append(cycle_ms)
    return samples


def report(samples: dict[str, dict[str, list[float]]], args: argparse.Namespace, snapshotter: str) -> None:
    version = subprocess.run(["containerd", "--version"], capture_output=True, text=True).stdout.split()
    print(
        f"containerd {version[2] if len(version) > 2 else '?'} (CRI, snapshotter {snapshotter}), "
        f"N={args.n} per plugin after {WARMUP} warm-up, interleaved, cloud-cni DATAPATH={args.datapath}, "
        f"load {load_average()}"
    )
    print(f"{'':<22} {'RunPodSandbox ms':>20} {'run+stop+remove ms':>22}")
    print(f"{'':<22} {'p50':>9} {'p99':>10} {'p50':>10} {'p99':>11}")
    for name, by in samples.items():
        run, whole = by["run"], by["cycle"]
        print(
            f"{name:<22} {median(run):9.1f} {percentile(run, 0.99):10.1f} "
            f"{median(whole):10.1f} {percentile(whole, 0.99):11.1f}"
        )
    base, ours = samples["bridge + host-local"], samples["cloud-cni"]
    print(
        f"ratio cloud-cni / bridge (medians): RunPodSandbox {median(ours['run']) / median(base['run']):.2f}, "
        f"run+stop+remove {median(ours['cycle']) / median(base['cycle']):.2f}"
    )


if __name__ == "__main__":
    sys.exit(main())
