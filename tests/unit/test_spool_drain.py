"""``ipamd.spool.drain``: no queued DEL blocks the queue or the daemon's start.

The service is a small fake with the one method the drain uses (``DelApplier``); the files are
the shim's own format, written in a tmp spool directory.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from ipamd import spool
from ipamd.errors import CheckpointError
from ipamd.metrics import Metrics
from ipamd.requests import Call


class Service:
    """Applies DELs; the containers in ``failing`` raise instead."""

    def __init__(self, failing: dict[str, Exception]) -> None:
        self.failing = failing
        self.deleted: list[str] = []

    async def delete(self, call: Call, prev_result: dict[str, Any] | None) -> None:
        error = self.failing.get(call.key.container_id)
        if error is not None:
            raise error
        self.deleted.append(call.key.container_id)


def queue(socket: Path, container_id: str, **fields: object) -> Path:
    directory = socket.parent / spool.SPOOL_DIRNAME
    directory.mkdir(exist_ok=True)
    entry: dict[str, object] = {
        "version": spool.SPOOL_VERSION,
        "network": "cloud-cni",
        "containerID": container_id,
        "ifName": "eth0",
        "netns": "",
        "podNamespace": "default",
        "podName": container_id,
        "podUID": "",
        "prevResult": "",
        "queuedAt": 0.0,
    }
    entry.update(fields)
    path = directory / f"cloud-cni.{container_id}.eth0.json"
    path.write_text(json.dumps(entry))
    return path


def set_aside(metrics: Metrics, reason: str) -> float | None:
    return metrics.registry.get_sample_value("cloudcni_spooled_dels_set_aside_total", {"reason": reason})


def test_a_del_that_raises_is_set_aside_and_the_others_are_applied(tmp_path: Path) -> None:
    socket = tmp_path / "ipamd.sock"
    first, broken, last = (queue(socket, cid) for cid in ("aaaa0001", "bbbb0002", "cccc0003"))
    service = Service({"bbbb0002": CheckpointError("checkpoint: write failed: disk full")})
    metrics = Metrics()

    applied = asyncio.run(spool.drain(service, str(socket), metrics=metrics))

    assert applied == 2 and service.deleted == ["aaaa0001", "cccc0003"]
    assert not first.exists() and not last.exists()
    failed = broken.parent / spool.FAILED_DIRNAME / broken.name
    assert failed.exists() and not broken.exists(), "kept on disk, out of the queue"
    assert json.loads(failed.read_text())["containerID"] == "bbbb0002", "kept as it was queued"
    assert set_aside(metrics, "failed") == 1
    assert failed.parent.stat().st_mode & 0o777 == 0o700

    # The next drain does not try it again, and finds nothing else to do.
    assert asyncio.run(spool.drain(service, str(socket), metrics=metrics)) == 0
    assert set_aside(metrics, "failed") == 1


def test_an_unexpected_error_while_parsing_is_set_aside(tmp_path: Path) -> None:
    socket = tmp_path / "ipamd.sock"
    deep = "[" * 100_000 + "]" * 100_000  # valid JSON, deeper than the parser recurses
    nested = queue(socket, "dddd0004", prevResult=deep)
    queue(socket, "eeee0005")
    service = Service({})
    metrics = Metrics()

    assert asyncio.run(spool.drain(service, str(socket), metrics=metrics)) == 1
    assert service.deleted == ["eeee0005"]
    assert (nested.parent / spool.FAILED_DIRNAME / nested.name).exists()
    assert set_aside(metrics, "failed") == 1


def test_a_malformed_entry_is_moved_to_bad(tmp_path: Path) -> None:
    socket = tmp_path / "ipamd.sock"
    malformed = queue(socket, "ffff0006", version="cloud-cni-del/99")
    queue(socket, "gggg0007")
    metrics = Metrics()

    assert asyncio.run(spool.drain(Service({}), str(socket), metrics=metrics)) == 1
    assert malformed.with_suffix(".bad").exists() and not malformed.exists()
    assert set_aside(metrics, "invalid") == 1 and set_aside(metrics, "failed") == 0


def test_a_spool_that_is_not_a_directory_drains_nothing(tmp_path: Path) -> None:
    socket = tmp_path / "ipamd.sock"
    (tmp_path / spool.SPOOL_DIRNAME).write_text("not a directory")
    assert asyncio.run(spool.drain(Service({}), str(socket))) == 0
