"""``cloud-cni simulate`` and ``cloud-cni plan`` through ``ipamd.cli.main`` on tiny clusters."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ipamd.cli import main

TINY = ["--nodes", "4", "--hours", "0.1", "--quiet"]
ISSUE_KEYS = {
    "name",
    "cni_wait_p50_s",
    "cni_wait_p99_s",
    "pods_waited",
    "idle_per_node_mean",
    "cloud_calls",
    "throttled_calls",
    "delayed_by_throttling",
}


def test_simulate_json_has_the_issues_shape(capsys: pytest.CaptureFixture[str]) -> None:
    policies = ["WARM_ENI_TARGET=1", "MINIMUM_IP_TARGET=10,WARM_IP_TARGET=2"]
    assert main(["simulate", *TINY, "--json", "--policy", policies[0], "--policy", policies[1]]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert set(doc) == {"nodes", "sim_seconds", "wall_seconds", "policies"}
    assert doc["nodes"] == 4 and doc["sim_seconds"] == 360.0 and doc["wall_seconds"] > 0
    assert [p["name"] for p in doc["policies"]] == policies  # as written
    for entry in doc["policies"]:
        assert set(entry) >= ISSUE_KEYS
        assert isinstance(entry["cni_wait_p99_s"], float) and isinstance(entry["cloud_calls"], int)
        assert entry["pods_started"] > 0 and entry["subnet_peak_used"] > 0
    eni, minimum = doc["policies"]
    assert eni["idle_per_node_mean"] > minimum["idle_per_node_mean"]  # a whole ENI warm vs 2 addresses


def test_simulate_prints_a_table_by_default(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["simulate", *TINY, "--policy", "WARM_IP_TARGET=5", "--workload", "steady-churn"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("steady-churn: 4 nodes, 0.1 h simulated, seed 1")
    assert "WARM_IP_TARGET=5" in out and "CNI wait p50/p99/max s" in out and "Cloud calls by API" in out


def test_simulate_runs_the_default_policies(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["simulate", "--nodes", "2", "--hours", "0.02", "--quiet", "--json"]) == 0
    names = [p["name"] for p in json.loads(capsys.readouterr().out)["policies"]]
    assert names == [
        "WARM_ENI_TARGET=1",
        "WARM_IP_TARGET=5",
        "MINIMUM_IP_TARGET=10,WARM_IP_TARGET=2",
        "ENABLE_PREFIX_DELEGATION=true,WARM_PREFIX_TARGET=1",
        "CLOUD_PROVIDER=azure,WARM_IP_TARGET=8,IP_BATCH_SIZE=16",
        "POOL_MODE=adaptive",
    ]


def test_simulate_replays_a_csv(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "events.csv"
    rows = ["time,event,pod,node"]
    rows += [f"{10 + i},create,p{i},node-{i % 2}" for i in range(12)]
    rows += [f"{60 + i},delete,p{i}," for i in range(6)]
    path.write_text("\n".join(rows) + "\n")
    argv = ["simulate", "--events", str(path), "--json", "--quiet", "--policy", "WARM_IP_TARGET=2"]
    assert main(argv) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["nodes"] == 2 and doc["sim_seconds"] == 65.0  # until the file's last event
    (entry,) = doc["policies"]
    assert entry["pods_started"] == 12 and entry["pods_unstarted"] == 0


def test_simulate_plots(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["simulate", *TINY, "--policy", "WARM_IP_TARGET=1", "--plot", str(tmp_path / "plots"), "--json"]
    assert main(argv) == 0
    capsys.readouterr()
    for name in ("idle.png", "waits.png", "subnet.png"):
        assert (tmp_path / "plots" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (
            ["--policy", "WARM_IP_TARGT=5"],
            "cloud-cni simulate: WARM_IP_TARGT='5' is invalid: not a cloud-cni setting",
        ),
        (["--policy", "WARM_IP_TARGET=x"], "WARM_IP_TARGET='x' is invalid: allowed: an integer >= 0"),
        (["--workload", "nope"], "cloud-cni simulate: no workload 'nope'"),
        (["--instance-type", "m9.huge"], "--instance-type: one of"),
        (["--subnet-cidr", "10.0.0.1/24"], "--subnet-cidr: subnets.0: Value error, an IPv4 CIDR"),
    ],
    ids=["unknown-setting", "bad-value", "workload", "instance", "subnet"],
)
def test_simulate_refuses_bad_input_in_one_line(
    argv: list[str], says: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["simulate", *TINY, *argv]) == 2
    err = capsys.readouterr().err
    assert says in err and len(err.strip().splitlines()) == 1


def test_plan_sizes_the_subnet_and_the_headroom(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["plan", "--nodes", "20", "--hours", "0.1", "--quiet", "--instance-type", "m5.large", "--json"]
    assert main([*argv, "--subnet-cidr", "10.0.0.0/24"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert (
        doc["nodes"] == 20 and doc["instance_types"] == ["m5.large"] and doc["policy"] == "WARM_ENI_TARGET=1"
    )
    peak, length = doc["peak_used"], doc["needed_prefix_length"]
    # the smallest subnet holding the peak and the 5 reserved addresses; one size smaller does not
    assert (1 << (32 - length)) - 5 >= peak > (1 << (31 - length)) - 5 or doc["peak_blocks"] * 16 > 1 << (
        31 - length
    )
    subnet = doc["subnet"]
    assert subnet["cidr"] == "10.0.0.0/24" and subnet["usable"] == 251
    assert subnet["fits"] is False and subnet["headroom"] < 0  # 20 warm nodes hold far more than 251

    assert main([*argv[:-1], "--subnet-cidr", "10.0.0.0/16"]) == 0
    out = capsys.readouterr().out
    assert (
        "smallest subnet for the peak: /" in out
        and "10.0.0.0/16: 65,531 usable;" in out
        and "to spare" in out
    )


def test_plan_refuses_a_bad_cidr(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["plan", "--nodes", "2", "--subnet-cidr", "10.0.0/33"]) == 2
    assert "--subnet-cidr='10.0.0/33' is invalid" in capsys.readouterr().err
