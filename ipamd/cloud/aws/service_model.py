"""The EC2 service model the daemon's client loads: botocore's, cut to the operations it calls.

botocore parses a service's whole model when a client is made; EC2's has ~700 operations and costs
the daemon ~32 MB of memory for the ten it calls (measured: ``bench/bench_aws.py --only rss``). The
package ships the same model trimmed to those operations and the shapes they reach, documentation
removed, under ``data/ec2/<api version>/service-2.json``, and botocore's endpoints data (every
partition and region, ~8 MB once parsed) with only EC2's entries as ``data/endpoints.json``;
``make_ec2_client`` puts that directory first on botocore's data path, so everything else (endpoint
rules, paginators, the retry config) still comes from the installed botocore.

Regenerate after a botocore upgrade, or when the provider calls a new operation::

    .venv/bin/python -m ipamd.cloud.aws.service_model

tests/unit/test_aws_service_model.py checks that the shipped model covers every operation the
provider calls and agrees with the installed botocore on every shape it keeps. An EC2 model that
gained members since the trim only lacks what the daemon neither sends nor reads.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

DATA_DIR = Path(__file__).resolve().parent / "data"
SERVICE = "ec2"

# Every EC2 operation the daemon calls (provider, limits, leak sweeps), and nothing else.
OPERATIONS = (
    "AssignPrivateIpAddresses",
    "AttachNetworkInterface",
    "CreateNetworkInterface",
    "DeleteNetworkInterface",
    "DescribeInstanceTypes",
    "DescribeNetworkInterfaces",
    "DescribeSubnets",
    "DetachNetworkInterface",
    "ModifyNetworkInterfaceAttribute",
    "UnassignPrivateIpAddresses",
)


def _strip(value: Any) -> Any:
    """``value`` without its documentation (most of a model's bytes)."""
    if isinstance(value, dict):
        return {k: _strip(v) for k, v in value.items() if k not in ("documentation", "documentationUrl")}
    if isinstance(value, list):
        return [_strip(v) for v in value]
    return value


def _referenced(shape: dict[str, Any]) -> Iterable[str]:
    for member in (shape.get("members") or {}).values():
        yield member["shape"]
    for key in ("member", "key", "value"):
        if isinstance(shape.get(key), dict):
            yield shape[key]["shape"]


def trim(model: dict[str, Any], operations: Iterable[str] = OPERATIONS) -> dict[str, Any]:
    """The model cut to ``operations`` and every shape they reach (inputs, outputs, errors)."""
    ops = {name: model["operations"][name] for name in operations}
    shapes = model["shapes"]
    keep: set[str] = set()
    todo: list[str] = []
    for op in ops.values():
        for key in ("input", "output"):
            if key in op:
                todo.append(op[key]["shape"])
        todo.extend(e["shape"] for e in op.get("errors", ()))
    while todo:
        name = todo.pop()
        if name in keep:
            continue
        keep.add(name)
        todo.extend(_referenced(shapes[name]))
    return {
        "version": model.get("version", "2.0"),
        "metadata": model["metadata"],
        "operations": _strip(ops),
        "shapes": {name: _strip(shapes[name]) for name in sorted(keep)},
    }


def trim_endpoints(endpoints: dict[str, Any], services: Iterable[str] = (SERVICE,)) -> dict[str, Any]:
    """botocore's endpoints data (every partition and region) with only ``services``' entries.

    botocore reads all of it for every client (~8 MB of memory) to resolve the service's partition.
    """
    keep = set(services)
    partitions = []
    for partition in endpoints["partitions"]:
        trimmed = {k: v for k, v in partition.items() if k != "services"}
        trimmed["services"] = {k: v for k, v in partition.get("services", {}).items() if k in keep}
        partitions.append(trimmed)
    return {**{k: v for k, v in endpoints.items() if k != "partitions"}, "partitions": partitions}


def installed_endpoints() -> dict[str, Any]:
    from botocore.loaders import Loader

    loaded: dict[str, Any] = Loader().load_data("endpoints")
    return loaded


def installed_model() -> dict[str, Any]:
    """The full EC2 model of the installed botocore (its own data path only)."""
    from botocore.loaders import Loader

    loaded: dict[str, Any] = Loader().load_service_model(SERVICE, "service-2")
    return loaded


def shipped_path(api_version: str) -> Path:
    return DATA_DIR / SERVICE / api_version / "service-2.json"


def main() -> None:
    model = installed_model()
    path = shipped_path(model["metadata"]["apiVersion"])
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(trim(model), indent=1, sort_keys=True) + "\n")
    print(f"{path}: {len(OPERATIONS)} operations")
    endpoints = DATA_DIR / "endpoints.json"
    endpoints.write_text(json.dumps(trim_endpoints(installed_endpoints()), indent=1, sort_keys=True) + "\n")
    print(f"{endpoints}: {SERVICE} in every partition")


if __name__ == "__main__":
    main()
