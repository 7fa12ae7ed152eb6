"""The simulator against the real daemon on one node (issue: cluster scale, item 8): the same short
workload and policy, the daemon on the sim cloud and the simulator with the same cloud latency; the
pool's cloud operations per 100 pod starts and the peak of addresses held must agree within 10%.
``tests/integration/sim_vs_daemon.py`` says how each side is run; bench/bench_sim_vs_daemon.py runs a
longer workload and more policies."""

from __future__ import annotations

from pathlib import Path

import pytest

from .sim_vs_daemon import run_daemon, run_sim, waves, write_csv

pytestmark = pytest.mark.integration

LATENCY = 0.05


@pytest.mark.parametrize("policy", ["WARM_IP_TARGET=5", "WARM_ENI_TARGET=1"])
def test_the_simulator_agrees_with_the_daemon(tmp_path: Path, policy: str) -> None:
    events = waves(seconds=50.0, seed=1)
    csv_path = write_csv(events, tmp_path / "events.csv")
    daemon = run_daemon(tmp_path, events, policy=policy, instance_type="m5.large", latency=LATENCY)
    sim = run_sim(csv_path, events, policy=policy, instance_type="m5.large", latency=LATENCY)
    detail = f"daemon {daemon}, simulator {sim}"
    assert daemon.pod_starts >= 30, detail
    assert sim.operations_per_100_starts == pytest.approx(daemon.operations_per_100_starts, rel=0.10), detail
    assert sim.peak_addresses == pytest.approx(daemon.peak_addresses, rel=0.10), detail
