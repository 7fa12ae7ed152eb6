"""The trimmed EC2 model the daemon ships: it covers every call, and agrees with the installed botocore."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from botocore import xform_name

from ipamd.cloud.aws import service_model
from ipamd.cloud.aws.client import make_ec2_client

ROOT = Path(__file__).resolve().parents[2]


def shipped() -> dict[str, Any]:
    (path,) = list((service_model.DATA_DIR / "ec2").glob("*/service-2.json"))
    return dict(json.loads(path.read_text()))


def called_operations() -> set[str]:
    """Every EC2 method the daemon's code calls on its client (``self._ec2.x(`` / ``ec2.x(``)."""
    names: set[str] = set()
    for path in (ROOT / "ipamd").rglob("*.py"):
        text = path.read_text()
        names |= set(re.findall(r"\b(?:self\._ec2|ec2)\.([a-z_]+)\(", text))
        names |= set(re.findall(r"get_paginator\(\"([a-z_]+)\"\)", text))
    return names - {"get_paginator", "can_paginate"}


def test_every_call_the_daemon_makes_is_in_the_shipped_model() -> None:
    ops = {xform_name(name) for name in shipped()["operations"]}
    assert called_operations(), "the scan found no call: it is broken"
    assert called_operations() <= ops
    assert set(service_model.OPERATIONS) == set(shipped()["operations"])


def test_the_shipped_model_agrees_with_the_installed_botocore() -> None:
    full = service_model.installed_model()
    ours = shipped()
    assert ours["metadata"]["apiVersion"] == full["metadata"]["apiVersion"]
    for name, shape in ours["shapes"].items():
        assert name in full["shapes"], name
        theirs = full["shapes"][name]
        assert shape["type"] == theirs["type"], name
        for member, ref in (shape.get("members") or {}).items():
            assert theirs["members"][member]["shape"] == ref["shape"], f"{name}.{member}"
    for name, op in ours["operations"].items():
        assert op["http"] == full["operations"][name]["http"], name


def test_trim_keeps_what_the_operations_reach() -> None:
    model = {
        "metadata": {"apiVersion": "x"},
        "operations": {
            "A": {"name": "A", "input": {"shape": "AReq"}, "documentation": "long"},
            "B": {"name": "B", "input": {"shape": "BReq"}},
        },
        "shapes": {
            "AReq": {"type": "structure", "members": {"L": {"shape": "List"}}, "documentation": "d"},
            "List": {"type": "list", "member": {"shape": "Item"}},
            "Item": {"type": "map", "key": {"shape": "S"}, "value": {"shape": "S"}},
            "S": {"type": "string"},
            "BReq": {"type": "structure", "members": {}},
        },
    }
    trimmed = service_model.trim(model, ["A"])
    assert set(trimmed["operations"]) == {"A"}
    assert set(trimmed["shapes"]) == {"AReq", "List", "Item", "S"}
    assert "documentation" not in json.dumps(trimmed)


@pytest.mark.parametrize("operation", service_model.OPERATIONS)
def test_the_client_builds_each_request_from_the_shipped_model(operation: str) -> None:
    client = make_ec2_client("us-east-1", endpoint_url="http://127.0.0.1:9")
    assert operation in client.meta.service_model.operation_names
    assert len(client.meta.service_model.operation_names) == len(service_model.OPERATIONS)


def test_the_shipped_endpoints_keep_every_partition_and_region_with_ec2_only() -> None:
    full = service_model.installed_endpoints()
    ours = json.loads((service_model.DATA_DIR / "endpoints.json").read_text())
    assert [p["partition"] for p in ours["partitions"]] == [p["partition"] for p in full["partitions"]]
    for mine, theirs in zip(ours["partitions"], full["partitions"], strict=True):
        assert mine["regions"] == theirs["regions"]
        assert set(mine["services"]) == {"ec2"} & set(theirs["services"])
        assert mine["services"].get("ec2") == theirs["services"].get("ec2")
