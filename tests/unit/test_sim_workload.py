"""Workload files (schema, errors naming the field, the shipped ones), lazy event sources, CSV replay."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest

from ipamd.sim.sources import CREATE, DELETE, NODE_ADD, NODE_REMOVE, events, replay, replay_span
from ipamd.sim.workload import (
    WorkloadError,
    load_workload,
    parse_duration,
    parse_workload,
    scaled,
    shipped_workloads,
)

SMALL = """
name: small
duration: 10m
nodes:
  - name: a
    count: 3
    pods_per_node: 2
sources:
  - kind: churn
    per_node_per_hour: 60
    lifetime: {dist: exponential, mean: 2m}
"""


def test_every_shipped_workload_loads_and_starts_lazily() -> None:
    names = shipped_workloads()
    assert {
        "default",
        "steady-churn",
        "rollout-bursts",
        "cronjob-waves",
        "scale-up-1000",
        "node-drain",
    } <= set(names)
    for name in names:
        workload = load_workload(name)
        stream = events(scaled(workload, 10), seed=1, until=workload.duration)
        first = list(itertools.islice(stream, 50))
        assert first and all(a.t <= b.t for a, b in itertools.pairwise(first)), name


def test_the_default_workload_is_what_simulate_runs_at_5000_nodes() -> None:
    default = load_workload("default")
    assert default.initial_nodes == 5000 and default.duration == 3600
    assert {s.kind for s in default.sources} == {"churn", "rollouts", "cronjobs"}


def _nodes(groups: str) -> str:
    return f"name: x\nnodes: [{groups}]\n"


def _sources(sources: str) -> str:
    return _nodes("{name: a, count: 1}") + f"sources: [{sources}]\n"


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("name: x\nnodes: []\n", "nodes: List should have at least 1 item"),
        (_nodes("{name: a, count: -1}"), "nodes.0.count: Input should be greater than or equal to 0"),
        (_nodes("{name: a, count: 1, cuont: 2}"), "nodes.0.cuont: Extra inputs are not permitted"),
        (_nodes("{name: a, count: 1, instance_type: m9.huge}"), "nodes.0.instance_type: Value error, one of"),
        (_nodes("{name: a, count: 1, subnets: [10.0.0.1/16]}"), "nodes.0.subnets.0: Value error, an IPv4"),
        (
            _sources("{kind: churn, per_node_per_hour: 1, lifetime: 5 minutes}"),
            "sources.0.churn.lifetime.fixed.value: Value error, a duration",
        ),
        (
            _sources("{kind: churn, per_node_per_hour: 1, lifetime: {dist: normal}}"),
            "sources.0.churn.lifetime: Input tag 'normal' found using 'dist' does not match",
        ),
        (
            _sources("{kind: scale_up, at: 1m, nodes: 5, group: b, pods_per_node: 1}"),
            "sources.0.group: 'b' is not a node group",
        ),
        (_sources("{kind: surge}"), "sources.0: Input tag 'surge' found using 'kind'"),
        (
            _nodes(
                "{name: a, count: 1, subnets: [10.0.0.0/16]}, {name: b, count: 1, subnets: [10.0.1.0/24]}"
            ),
            "subnets 10.0.0.0/16 and 10.0.1.0/24 overlap",
        ),
        ("name: [unclosed\n", "not valid YAML"),
        ("- a list\n", "a workload is a mapping"),
    ],
    ids=[
        "no-nodes", "negative", "typo", "instance", "cidr", "duration", "dist", "group", "kind", "overlap",
        "yaml", "not-a-mapping",
    ],
)  # fmt: skip
def test_bad_workloads_name_the_field(text: str, says: str) -> None:
    with pytest.raises(WorkloadError) as info:
        parse_workload(text, source="w.yaml", json_text=False)
    assert says in str(info.value)
    assert str(info.value).startswith("w.yaml: ")


def test_workload_files_in_yaml_and_json(tmp_path: Path) -> None:
    yaml_file = tmp_path / "w.yaml"
    yaml_file.write_text(SMALL)
    from_yaml = load_workload(str(yaml_file))
    json_file = tmp_path / "w.json"
    json_file.write_text(json.dumps(from_yaml.model_dump(by_alias=True)))
    assert load_workload(str(json_file)) == from_yaml
    assert from_yaml.duration == 600
    with pytest.raises(WorkloadError, match="cannot read"):
        load_workload(str(tmp_path / "missing.yaml"))
    with pytest.raises(WorkloadError, match="no workload 'nope': shipped ones are"):
        load_workload("nope")


def test_durations() -> None:
    assert [parse_duration(v) for v in (90, "90", "90s", "5m", "1h30m", "1.5h")] == [
        90,
        90,
        90,
        300,
        5400,
        5400,
    ]
    for bad in ("", "5 minutes", "-1", True, "1d"):
        with pytest.raises(ValueError):
            parse_duration(bad)


def test_scaling_shares_nodes_out_in_proportion() -> None:
    groups = "{name: a, count: 3, subnets: [10.0.0.0/24]}, {name: b, count: 1, subnets: [10.1.0.0/24]}"
    workload = parse_workload(_nodes(groups), source="x", json_text=False)
    assert [g.count for g in scaled(workload, 10).nodes] == [8, 2]  # 7.5 and 2.5: the first remainder wins
    assert [g.count for g in scaled(workload, 1).nodes] == [1, 0]


def test_events_start_with_the_cluster_then_churn_in_time_order() -> None:
    workload = parse_workload(SMALL, source="x", json_text=False)
    stream = list(events(workload, seed=3, until=600))
    nodes = [e for e in stream if e.kind == NODE_ADD]
    assert [e.node for e in nodes] == ["a-0", "a-1", "a-2"] and all(e.t == 0 for e in nodes)
    initial = [e for e in stream if e.kind == CREATE and e.t == 0]
    assert len(initial) == 3 * 2 + round(3 * 60 / 3600 * 120)  # static pods + churn's steady state
    later = [e for e in stream if e.t > 0]
    assert later and all(e.kind == CREATE and e.lifetime is not None for e in later)
    assert all(a.t <= b.t for a, b in itertools.pairwise(stream))
    assert len({e.pod for e in stream if e.kind == CREATE}) == len([e for e in stream if e.kind == CREATE])
    assert stream == list(events(workload, seed=3, until=600))  # the same seed, the same workload


def test_rollouts_replace_every_replica_and_drains_replace_nodes() -> None:
    workload = parse_workload(
        """
name: r
duration: 1h
nodes: [{name: a, count: 10}]
sources:
  - {kind: rollouts, deployments_per_1000_nodes: 300, replicas: 4, bursts_every: 10m, share_per_burst: 1}
  - {kind: drain, at: 5m, nodes: 2, every: 30s, group: a, boot: 60}
""",
        source="r",
        json_text=False,
    )
    stream = list(events(workload, seed=1, until=3600))
    created = {e.pod for e in stream if e.kind == CREATE}
    deleted = [e.pod for e in stream if e.kind == DELETE]
    assert len(deleted) == len(set(deleted)) and set(deleted) <= created
    assert len(created) - len(deleted) == 3 * 4  # 3 deployments of 4 replicas, always
    removed = [e for e in stream if e.kind == NODE_REMOVE]
    added = [e for e in stream if e.kind == NODE_ADD and e.t > 0]
    assert [e.t for e in removed] == [300.0, 330.0] and [e.t for e in added] == [360.0, 390.0]
    assert [e.node for e in added] == ["a-10", "a-11"]


# --- replay ---------------------------------------------------------------------------------------


def test_replay_reads_pod_events_with_their_nodes(tmp_path: Path) -> None:
    path = tmp_path / "events.csv"
    path.write_text(
        "time,event,pod,node\n0,create,web-1,ip-1\n5,create,web-2,ip-2\n7.5,delete,web-1,\n9,delete,gone,\n"
    )
    assert replay_span(str(path)) == (["ip-1", "ip-2"], 9.0)
    stream = list(replay(str(path), until=100))
    assert [(e.t, e.kind, e.node) for e in stream] == [
        (0.0, NODE_ADD, "ip-1"),
        (0.0, NODE_ADD, "ip-2"),
        (0.0, CREATE, "ip-1"),
        (5.0, CREATE, "ip-2"),
        (7.5, DELETE, ""),  # web-1; "gone" was never created: no event
    ]
    assert stream[2].pod == stream[4].pod


@pytest.mark.parametrize(
    ("rows", "says"),
    [
        ("when,event,pod\n", "events.csv:1: the header must name the columns"),
        (
            "time,event,pod,node\n1,create,a,n\n0,delete,a,\n",
            "events.csv:3: time: 0.0 is before the previous",
        ),
        ("time,event,pod,node\nsoon,create,a,n\n", "events.csv:2: time: seconds from the start"),
        ("time,event,pod,node\n1,start,a,n\n", "events.csv:2: event: create or delete"),
        ("time,event,pod,node\n1,create,a,\n", "events.csv:2: node: a create names the node"),
        ("time,event,pod,node\n1,create,a,n\n2,create,a,n\n", "events.csv:3: pod: 'a' is created twice"),
    ],
    ids=["header", "order", "time", "event", "node", "twice"],
)
def test_bad_event_files_name_the_line_and_column(tmp_path: Path, rows: str, says: str) -> None:
    path = tmp_path / "events.csv"
    path.write_text(rows)
    with pytest.raises(WorkloadError) as info:
        replay_span(str(path))
    assert says in str(info.value)
