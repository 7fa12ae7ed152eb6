"""The node image under containerd (CRI), as tests/integration/test_image_cri.py runs it: cold start
and the upgrade gap.

Each repeat builds a fresh simulated VPC node with its own containerd and the fake API server in its
netns (the daemon reads its in-cluster config and takes its startup taint off, as in the test),
imports build/cloud-cni-image.tar, runs the DaemonSet's sandbox and init containers from
deploy/base/daemonset.yaml, then measures:

* cold start: CreateContainer + StartContainer of the ipamd container -> /healthz 200, and -> the
  first application pod's RunPodSandbox returning (an empty sim node: the pool fills on the way);
* upgrade: with a loop of RunPodSandbox calls running (each failure retried at once, as a runtime
  would, only faster), StopContainer (SIGTERM, the manifest's grace period) + RemoveContainer +
  CreateContainer + StartContainer from a second build of the image (build/cloud-cni-image-upgrade.tar,
  another tag: ``ensure_upgrade_archive``, built first when stale, as the test does). The gap is the last
  RunPodSandbox that succeeded on the old daemon -> the first that succeeded on the new one; the
  socket gap is the time the daemon's Unix socket refused connections (probed every 5 ms). An ADD
  counts for the old daemon when it returned before the socket went, for the new one after it came
  back; the ADD gap includes the loop's own latency (one RunPodSandbox, ~0.1 s).

Prints the median (and the max, with few repeats) and the upgrade gap against the 2 s goal.

    .venv/bin/python bench/bench_image_cri.py [--n 3]
"""

from __future__ import annotations

import argparse
import socket
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.fakes import cri
from tests.fakes.azure_tls import make_tls_files
from tests.fakes.containerd import build_pause_image
from tests.integration.image_archive import UPGRADE_ARCHIVE, ensure_upgrade_archive
from tests.integration.test_image_cri import image_node, wait_healthy

GAP_GOAL = 2.0


def serving(path: str) -> bool:
    with socket.socket(socket.AF_UNIX) as s:
        try:
            s.connect(path)
        except OSError:
            return False
        return True


def one_round(work: Path, pause: Path, tls: Any, second: str) -> dict[str, float]:
    out: dict[str, float] = {}
    with image_node(work, pause, tls) as n:
        n.runtime.ctr("images", "import", "--snapshotter", n.runtime.snapshotter, str(UPGRADE_ARCHIVE))
        n.pod.run_init_containers()
        start = time.monotonic()
        n.pod.start_ipamd()
        wait_healthy(n.pod, n.vpc.node)
        out["healthz"] = time.monotonic() - start
        first = n.run_pod("first")
        out["first_pod"] = time.monotonic() - start
        pods = [first]

        sock = n.dirs.host("/var/run/cloud-cni/ipamd.sock")
        stop = threading.Event()
        ok_times: list[float] = []
        down: list[float] = []

        def add_loop() -> None:
            i = 0
            while not stop.is_set():
                try:
                    pods.append(n.run_pod(f"loop-{i}"))
                    ok_times.append(time.monotonic())
                except cri.CriError:
                    pass
                i += 1

        def probe() -> None:
            was = True
            while not stop.is_set():
                now = serving(sock)
                if now != was:  # went away, came back
                    down.append(time.monotonic())
                was = now
                time.sleep(0.005)

        threads = [threading.Thread(target=add_loop), threading.Thread(target=probe)]
        for t in threads:
            t.start()
        time.sleep(1.0)
        upgrade_at = time.monotonic()
        n.pod.stop_ipamd()
        out["stop"] = time.monotonic() - upgrade_at
        n.pod.image = second
        started_at = time.monotonic()
        n.pod.start_ipamd(attempt=1)
        wait_healthy(n.pod, n.vpc.node)
        healthy_at, deadline = time.monotonic(), time.monotonic() + 20
        while not [t for t in ok_times if t > healthy_at] and time.monotonic() < deadline:
            time.sleep(0.02)
        stop.set()
        for t in threads:
            t.join()
        # Served by the old daemon: ended before its socket went; by the new: after the socket came back.
        assert len(down) >= 2, f"the socket never went away and came back: {down}"
        before = [t for t in ok_times if t < down[0]]
        after = [t for t in ok_times if t > down[1]]
        out["gap"] = (after[0] - before[-1]) if before and after else float("nan")
        out["socket_gap"] = down[1] - down[0]
        out["start_to_socket"] = down[1] - started_at
        for pod in pods:
            n.runtime.stop_pod(pod)
            n.runtime.remove_pod(pod)
        n.pod.stop_ipamd()
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--n", type=int, default=3, help="repeats (default 3)")
    args = parser.parse_args()
    pause = build_pause_image(Path(tempfile.gettempdir()) / "cc-bench-images")
    second = ensure_upgrade_archive()
    tls = make_tls_files(Path(tempfile.mkdtemp(prefix="cc-bench-tls-")))
    rounds = []
    for i in range(args.n):
        with tempfile.TemporaryDirectory(prefix="cc-imgcri-") as tmp:
            r = one_round(Path(tmp), pause, tls, second)
        print(f"round {i}: " + " ".join(f"{k}={v:.3f}s" for k, v in r.items()), flush=True)
        rounds.append(r)
    print(f"\n{args.n} repeats (median / max):")
    labels = {
        "healthz": "ipamd container start -> /healthz 200",
        "first_pod": "ipamd container start -> first pod's address",
        "gap": "upgrade: last ADD on old -> first ADD on new",
        "socket_gap": "upgrade: no socket serving",
        "stop": "upgrade: StopContainer + RemoveContainer",
        "start_to_socket": "upgrade: CreateContainer -> socket serving",
    }
    for key, label in labels.items():
        values = [r[key] for r in rounds]
        print(f"  {label:48s} {statistics.median(values):7.3f} s / {max(values):7.3f} s")
    gap = statistics.median(r["gap"] for r in rounds)
    print(f"  upgrade gap / {GAP_GOAL:.0f} s goal: {gap / GAP_GOAL:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
