"""ipamd.checkpoint: format, validation, durable write, recovery on load, group commit."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import json
import os
import random
import stat
import threading
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ipamd import checkpoint
from ipamd.checkpoint import GroupCommitter, decode, encode, load, write_atomic
from ipamd.errors import CheckpointError
from ipamd.pool.model import (
    Assignment,
    AttachmentKey,
    ContainerID,
    IfName,
    InterfaceId,
    PodRef,
    PoolSnapshot,
)

NOW = 1_700_000_000.0


def _assignment(n: int, ip: str) -> Assignment:
    return Assignment(
        key=AttachmentKey("aws-cni", ContainerID(f"{n:064x}"), IfName("eth0")),
        ip=ip,
        interface_id=InterfaceId("eni-0a1b2c3d4e5f60718"),
        pod=PodRef("default", f"web-{n}", f"uid-{n}"),
        assigned_at=NOW + n + 0.25,
        netns=f"/var/run/netns/cni-{n}",
    )


def _sample() -> PoolSnapshot:
    return PoolSnapshot(
        assignments=(
            _assignment(0, "10.0.0.10"),
            _assignment(1, "10.0.0.11"),
            _assignment(2, "2600:1f14:abc::5"),
        ),
        cooling=(("10.0.0.20", NOW + 30.0), ("10.0.0.21", NOW + 31.5)),
        quarantined=("10.0.0.30",),
    )


def _run(coro: Coroutine[Any, Any, Any], timeout: float = 5.0) -> Any:
    async def guarded() -> Any:
        async with asyncio.timeout(timeout):
            return await coro

    return asyncio.run(guarded())


def test_public_surface() -> None:
    assert sorted(checkpoint.__all__) == [
        "DecodedCheckpoint",
        "GroupCommitter",
        "LoadResult",
        "LoadSource",
        "VERSION",
        "WriteObserver",
        "decode",
        "encode",
        "load",
        "previous_path",
        "write_atomic",
    ]


# --- format -------------------------------------------------------------------------------------

_text = st.text(max_size=12)
_name = st.text(min_size=1, max_size=12)
_time = st.floats(allow_nan=False, allow_infinity=False)
_ips = st.one_of(st.ip_addresses(v=4), st.ip_addresses(v=4), st.ip_addresses(v=6)).map(str)


@st.composite
def snapshots(draw: st.DrawFn) -> PoolSnapshot:
    ips = draw(st.lists(_ips, unique=True, max_size=24))
    n_assigned = draw(st.integers(0, len(ips)))
    n_cooling = draw(st.integers(0, len(ips) - n_assigned))
    keys = draw(
        st.lists(
            st.builds(AttachmentKey, _name, _name.map(ContainerID), _name.map(IfName)),
            unique=True,
            min_size=n_assigned,
            max_size=n_assigned,
        )
    )
    assignments = tuple(
        Assignment(
            key=key,
            ip=ip,
            interface_id=InterfaceId(draw(_name)),
            pod=draw(st.builds(PodRef, _text, _text, _text)),
            assigned_at=draw(_time),
            netns=draw(_text),
        )
        for key, ip in zip(keys, ips, strict=False)
    )
    cooling = tuple((ip, draw(_time)) for ip in ips[n_assigned : n_assigned + n_cooling])
    return PoolSnapshot(assignments, cooling, tuple(ips[n_assigned + n_cooling :]))


@settings(max_examples=150)
@given(snapshot=snapshots(), generation=st.integers(0, 2**63), written_at=_time)
def test_round_trip(snapshot: PoolSnapshot, generation: int, written_at: float) -> None:
    data = encode(snapshot, generation=generation, written_at=written_at)
    decoded = decode(data)
    assert decoded.snapshot == snapshot
    assert decoded.generation == generation
    assert decoded.written_at == written_at
    assert encode(decoded.snapshot, generation=generation, written_at=written_at) == data


def test_encoded_file_is_versioned_json_with_checksum_of_canonical_body() -> None:
    doc = json.loads(encode(_sample(), generation=7, written_at=NOW))
    assert doc["version"] == "cloud-cni-ipam/1"
    assert doc["generation"] == 7
    assert doc["assignments"][0] == {
        "network": "aws-cni",
        "containerID": f"{0:064x}",
        "ifName": "eth0",
        "ip": "10.0.0.10",
        "interfaceID": "eni-0a1b2c3d4e5f60718",
        "podNamespace": "default",
        "podName": "web-0",
        "podUID": "uid-0",
        "netns": "/var/run/netns/cni-0",
        "assignedAt": NOW + 0.25,
    }
    assert doc["cooling"][1] == {"ip": "10.0.0.21", "until": NOW + 31.5}
    assert doc["quarantined"] == ["10.0.0.30"]
    assert doc.pop("checksum") == "sha256:" + hashlib.sha256(_canonical(doc)).hexdigest()


def _canonical(doc: dict[str, Any]) -> bytes:
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def _doc() -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(encode(_sample(), generation=5, written_at=NOW))
    return doc


def _seal(doc: dict[str, Any]) -> bytes:
    """A document with a correct checksum, so that the field check under test is what fires."""
    body = {k: v for k, v in doc.items() if k != "checksum"}
    return json.dumps({**body, "checksum": "sha256:" + hashlib.sha256(_canonical(body)).hexdigest()}).encode()


def _set(path: tuple[str | int, ...], value: object) -> Callable[[dict[str, Any]], None]:
    def mutate(doc: dict[str, Any]) -> None:
        target: Any = doc
        for step in path[:-1]:
            target = target[step]
        target[path[-1]] = value

    return mutate


def _delete(path: tuple[str | int, ...]) -> Callable[[dict[str, Any]], None]:
    def mutate(doc: dict[str, Any]) -> None:
        target: Any = doc
        for step in path[:-1]:
            target = target[step]
        del target[path[-1]]

    return mutate


def _copy_key(doc: dict[str, Any]) -> None:
    for name in ("network", "containerID", "ifName"):
        doc["assignments"][1][name] = doc["assignments"][0][name]


_A2 = ("assignments", 2)
BROKEN = [
    pytest.param(
        _delete(("version",)), "version: missing; expected a supported version", id="version-missing"
    ),
    pytest.param(
        _set(("version",), "cloud-cni-ipam/2"), "version: 'cloud-cni-ipam/2' is not a", id="version-future"
    ),
    pytest.param(_set(("version",), 1), "version: 1 is not a supported version", id="version-number"),
    pytest.param(
        _set(("extra",), 1), "checkpoint: unknown field 'extra'; allowed: version,", id="top-unknown"
    ),
    pytest.param(
        _delete(("generation",)), "generation: missing; expected a non-negative integer", id="gen-missing"
    ),
    pytest.param(
        _set(("generation",), -1), "generation: -1 is not a non-negative integer", id="gen-negative"
    ),
    pytest.param(
        _set(("generation",), True), "generation: True is not a non-negative integer", id="gen-bool"
    ),
    pytest.param(_set(("generation",), 1.5), "generation: 1.5 is not a non-negative integer", id="gen-float"),
    pytest.param(
        _set(("generation",), "5"), "generation: '5' is not a non-negative integer", id="gen-string"
    ),
    pytest.param(
        _set(("written_at",), "now"), "written_at: 'now' is not a finite number", id="written-string"
    ),
    pytest.param(_set(("written_at",), None), "written_at: None is not a finite number", id="written-null"),
    pytest.param(_set(("written_at",), 10**400), "written_at: 1000000000", id="written-overflows-float"),
    pytest.param(
        _set(("assignments",), {}), "assignments: {} is not a list of assignment objects", id="a-dict"
    ),
    pytest.param(_delete(("assignments",)), "assignments: missing; expected a list", id="a-missing"),
    pytest.param(
        _set(("assignments", 1), "x"), "assignments[1]: 'x' is not an object with fields", id="a-str"
    ),
    pytest.param(
        _set((*_A2, "mac"), "m"), "assignments[2]: unknown field 'mac'; allowed: network,", id="a-unknown"
    ),
    pytest.param(
        _set((*_A2, "ip"), "10.0.0.x"), "assignments[2].ip: '10.0.0.x' is not an IP address", id="ip-bad"
    ),
    pytest.param(
        _delete((*_A2, "ip")), "assignments[2].ip: missing; expected an IP address", id="ip-missing"
    ),
    pytest.param(
        _set((*_A2, "ip"), "fe80::1%eth0"), "assignments[2].ip: 'fe80::1%eth0' is not an IP", id="ip-zone"
    ),
    pytest.param(_set((*_A2, "ip"), 167772161), "assignments[2].ip: 167772161 is not an IP", id="ip-number"),
    pytest.param(
        _set((*_A2, "ip"), "10.0.0.5/32"), "assignments[2].ip: '10.0.0.5/32' is not an IP", id="ip-cidr"
    ),
    pytest.param(
        _set((*_A2, "ip"), "10.0.0.05"), "assignments[2].ip: '10.0.0.05' is not an IP", id="ip-zero-pad"
    ),
    pytest.param(_set((*_A2, "ip"), ""), "assignments[2].ip: '' is not an IP address", id="ip-empty"),
    pytest.param(
        _set((*_A2, "network"), None), "assignments[2].network: None is not a non-empty", id="net-null"
    ),
    pytest.param(
        _set((*_A2, "containerID"), ""), "assignments[2].containerID: '' is not a non-empty", id="cid-empty"
    ),
    pytest.param(
        _delete((*_A2, "ifName")), "assignments[2].ifName: missing; expected a non-empty", id="if-missing"
    ),
    pytest.param(
        _set((*_A2, "interfaceID"), 5), "assignments[2].interfaceID: 5 is not a non-empty", id="iface-int"
    ),
    pytest.param(_set((*_A2, "podName"), 5), "assignments[2].podName: 5 is not a string", id="pod-name-int"),
    pytest.param(
        _set((*_A2, "podNamespace"), None), "assignments[2].podNamespace: None is not a", id="pod-ns-null"
    ),
    pytest.param(_set((*_A2, "podUID"), []), "assignments[2].podUID: [] is not a string", id="pod-uid-list"),
    pytest.param(
        _delete((*_A2, "netns")), "assignments[2].netns: missing; expected a string", id="netns-missing"
    ),
    pytest.param(
        _set((*_A2, "assignedAt"), "x"), "assignments[2].assignedAt: 'x' is not a finite", id="at-str"
    ),
    pytest.param(
        _set((*_A2, "assignedAt"), False), "assignments[2].assignedAt: False is not a", id="at-bool"
    ),
    pytest.param(
        _set((*_A2, "ip"), "10.0.0.10"),
        "assignments[2].ip: '10.0.0.10' is already at assignments[0].ip",
        id="ip-in-two-assignments",
    ),
    pytest.param(
        _set(("assignments", 1, "ip"), "2600:1f14:0abc:0:0:0:0:5"),  # the same address spelled otherwise
        "assignments[2].ip: '2600:1f14:abc::5' is already at assignments[1].ip",
        id="ipv6-other-spelling-of-same-address",
    ),
    pytest.param(
        _copy_key,
        "assignments[1]: attachment (network='aws-cni', containerID='0000",
        id="attachment-twice",
    ),
    pytest.param(_set(("cooling",), None), "cooling: None is not a list of {ip, until} objects", id="c-null"),
    pytest.param(
        _set(("cooling", 0), ["10.0.0.20", 1.0]), "cooling[0]: ['10.0.0.20', 1.0] is not an obj", id="c-list"
    ),
    pytest.param(_set(("cooling", 1, "ip"), "x"), "cooling[1].ip: 'x' is not an IP address", id="c-ip-bad"),
    pytest.param(
        _delete(("cooling", 1, "until")), "cooling[1].until: missing; expected a finite", id="c-until-gone"
    ),
    pytest.param(
        _set(("cooling", 0, "until"), "soon"), "cooling[0].until: 'soon' is not a finite", id="c-until-str"
    ),
    pytest.param(
        _set(("cooling", 0, "since"), 1.0), "cooling[0]: unknown field 'since'; allowed: ip, un", id="c-extra"
    ),
    pytest.param(
        _set(("cooling", 0, "ip"), "10.0.0.11"),
        "cooling[0].ip: '10.0.0.11' is already at assignments[1].ip",
        id="cooling-ip-also-assigned",
    ),
    pytest.param(
        _set(("quarantined",), "10.0.0.30"), "quarantined: '10.0.0.30' is not a list of IP", id="q-str"
    ),
    pytest.param(_set(("quarantined", 0), 5), "quarantined[0]: 5 is not an IP address", id="q-int"),
    pytest.param(
        _set(("quarantined", 0), "10.0.0.21"),
        "quarantined[0]: '10.0.0.21' is already at cooling[1].ip",
        id="quarantined-ip-also-cooling",
    ),
    pytest.param(
        _delete(("checksum",)), "checksum: missing; expected 'sha256:' followed by 64", id="sum-missing"
    ),
]


@pytest.mark.parametrize(("mutate", "message"), BROKEN)
def test_decode_names_the_broken_field(mutate: Callable[[dict[str, Any]], None], message: str) -> None:
    doc = _doc()
    mutate(doc)
    data = _seal(doc) if "checksum" in doc else json.dumps(doc).encode()
    with pytest.raises(CheckpointError) as caught:
        decode(data)
    assert str(caught.value).startswith(message)


def _edit(old: str, new: str) -> Callable[[], str]:
    """The sealed sample document with one textual edit (which must apply)."""

    def edited() -> str:
        text = _seal(_doc()).decode()
        assert old in text
        return text.replace(old, new, 1)

    return edited


RAW = [
    pytest.param(b"", "checkpoint: the file is empty; expected a JSON object", id="empty"),
    pytest.param(b"\xff\xfe{}", "checkpoint: not UTF-8", id="not-utf8"),
    pytest.param(b"\xef\xbb\xbf{}", "checkpoint: not valid JSON", id="bom"),
    pytest.param(b"[]", "checkpoint: [] is not a JSON object", id="array"),
    pytest.param(b"null", "checkpoint: None is not a JSON object", id="null"),
    pytest.param(b'{"version":', "checkpoint: not valid JSON", id="cut"),
    pytest.param(b"[" * 100_000, "checkpoint: nested too deeply", id="deep"),
    pytest.param(b'{"generation":' + b"9" * 5000 + b"}", "checkpoint: not valid JSON", id="int-too-long"),
    pytest.param(_edit(f'"written_at": {NOW}', '"written_at": NaN'), "checkpoint: NaN", id="nan"),
    pytest.param(
        _edit(f'"written_at": {NOW}', '"written_at": 1e999'),
        "written_at: inf is not a finite number",
        id="float-overflows-to-inf",
    ),
    pytest.param(
        _edit('{"assignments"', '{"generation": 1, "assignments"'),
        "checkpoint: field 'generation' appears more than once",
        id="duplicate-top-member",
    ),
    pytest.param(
        _edit('"assignments": [{', '"assignments": [{"ip": "10.9.9.9", '),
        "assignments[0]: field 'ip' appears more than once",
        id="duplicate-assignment-member",
    ),
    pytest.param(
        _edit('"checksum": "sha256:', '"checksum": "md5:'),
        "checksum: 'md5:",
        id="checksum-algorithm",
    ),
    pytest.param(
        _edit('"10.0.0.30"', '"10.0.0.31"'),
        "checksum: sha256:",  # every field still valid: only the checksum sees the damage
        id="checksum-mismatch",
    ),
]


@pytest.mark.parametrize(("data", "message"), RAW)
def test_decode_rejects_malformed_files(data: bytes | Callable[[], str], message: str) -> None:
    raw = data if isinstance(data, bytes) else data().encode()
    with pytest.raises(CheckpointError) as caught:
        decode(raw)
    assert str(caught.value).startswith(message)


def _with_first(**changes: Any) -> PoolSnapshot:
    s = _sample()
    first = dataclasses.replace(s.assignments[0], **changes)
    return PoolSnapshot((first, *s.assignments[1:]), s.cooling, s.quarantined)


@pytest.mark.parametrize(
    ("snapshot", "generation", "written_at", "message"),
    [
        pytest.param(_with_first(ip="10.0.0.x"), 1, NOW, "assignments[0].ip: '10.0.0.x' is not", id="bad-ip"),
        pytest.param(
            _with_first(assigned_at=float("nan")), 1, NOW, "assignments[0].assignedAt: nan", id="nan"
        ),
        pytest.param(
            _with_first(ip="10.0.0.11"), 1, NOW, "assignments[1].ip: '10.0.0.11' is already", id="dup"
        ),
        pytest.param(
            _with_first(key=AttachmentKey("aws-cni", ContainerID(""), IfName("eth0"))),
            1,
            NOW,
            "assignments[0].containerID: '' is not a non-empty string",
            id="empty-container-id",
        ),
        pytest.param(
            PoolSnapshot(cooling=(("10.0.0.1", float("inf")),)), 1, NOW, "cooling[0].until: inf", id="inf"
        ),
        pytest.param(
            PoolSnapshot(quarantined=("x",)), 1, NOW, "quarantined[0]: 'x' is not an IP", id="q-bad"
        ),
        pytest.param(_sample(), -1, NOW, "generation: -1 is not a non-negative integer", id="gen"),
        pytest.param(_sample(), 1, float("nan"), "written_at: nan is not a finite number", id="written-at"),
    ],
)
def test_encode_refuses_what_decode_would_reject(
    snapshot: PoolSnapshot, generation: int, written_at: float, message: str
) -> None:
    with pytest.raises(CheckpointError) as caught:
        encode(snapshot, generation=generation, written_at=written_at)
    assert str(caught.value).startswith(message)


def test_every_truncation_is_a_checkpoint_error() -> None:
    data = encode(_sample(), generation=3, written_at=NOW)
    for n in range(len(data)):
        if data[:n].rstrip() == data.rstrip():
            assert decode(data[:n]).generation == 3  # only the trailing newline is gone
            continue
        with pytest.raises(CheckpointError):
            decode(data[:n])


# --- durable write ------------------------------------------------------------------------------


@pytest.fixture
def umask_zero() -> Any:
    old = os.umask(0)  # the modes must come from the code, not from a friendly umask
    yield
    os.umask(old)


@pytest.mark.usefixtures("umask_zero")
def test_write_atomic_creates_private_directory_and_files(tmp_path: Path) -> None:
    path = tmp_path / "run" / "cloud-cni" / "ipam.json"
    write_atomic(path, b"one")
    write_atomic(path, b"two")
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(checkpoint.previous_path(path).stat().st_mode) == 0o600


def test_write_atomic_keeps_exactly_the_previous_generation(tmp_path: Path) -> None:
    path = tmp_path / "ipam.json"
    write_atomic(path, b"one")
    assert not checkpoint.previous_path(path).exists()
    write_atomic(path, b"two")
    write_atomic(path, b"three")
    assert path.read_bytes() == b"three"
    assert (tmp_path / "ipam.json.prev").read_bytes() == b"two"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ipam.json", "ipam.json.prev"]


def test_write_atomic_replaces_a_link_left_by_a_crash(tmp_path: Path) -> None:
    path = tmp_path / "ipam.json"
    write_atomic(path, b"one")
    (tmp_path / f"ipam.json.prev.{os.getpid()}.tmp").write_bytes(b"stale")
    write_atomic(path, b"two")
    assert (tmp_path / "ipam.json.prev").read_bytes() == b"one"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ipam.json", "ipam.json.prev"]


def test_failed_write_leaves_current_and_no_temporary_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "ipam.json"
    write_atomic(path, b"one")

    def failing_fsync(fd: int) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(os, "fsync", failing_fsync)
    with pytest.raises(OSError, match="Input/output error"):
        write_atomic(path, b"two")
    assert path.read_bytes() == b"one"
    assert [p.name for p in tmp_path.iterdir()] == ["ipam.json"]


# --- load ---------------------------------------------------------------------------------------


def _write_generations(path: Path, *generations: int) -> list[bytes]:
    written = []
    for generation in generations:
        snapshot = PoolSnapshot(assignments=(_assignment(generation, f"10.0.1.{generation}"),))
        data = encode(snapshot, generation=generation, written_at=NOW + generation)
        write_atomic(path, data)
        written.append(data)
    return written


def test_load_fresh_node_is_none(tmp_path: Path) -> None:
    result = load(tmp_path / "missing-dir" / "ipam.json", now=NOW)
    assert result.source == "none"
    assert result.snapshot == PoolSnapshot()
    assert (result.generation, result.problems, result.needs_quarantine) == (0, [], False)


def test_load_current(tmp_path: Path) -> None:
    path = tmp_path / "ipam.json"
    _write_generations(path, 1, 2)
    result = load(path, now=NOW)
    assert (result.source, result.generation, result.needs_quarantine, result.problems) == (
        "current",
        2,
        False,
        [],
    )
    assert result.snapshot.assignments[0].ip == "10.0.1.2"


def test_corrupt_current_falls_back_to_previous_with_quarantine(tmp_path: Path) -> None:
    path = tmp_path / "ipam.json"
    _write_generations(path, 1, 2)
    path.write_bytes(b'{"version": "cloud-cni-ipam/1", "generation": 2, "assign')
    result = load(path, now=NOW + 0.9)
    assert (result.source, result.generation, result.needs_quarantine) == ("previous", 1, True)
    assert result.snapshot.assignments[0].ip == "10.0.1.1"
    aside = tmp_path / f"ipam.json.corrupt-{int(NOW)}"
    assert aside.read_bytes().endswith(b'"assign')  # kept for the post-mortem, never deleted
    assert not path.exists()
    assert len(result.problems) == 1
    assert result.problems[0].startswith(f"{path}: checkpoint: not valid JSON")
    assert result.problems[0].endswith(f"moved aside to {aside.name}")


def test_missing_current_falls_back_to_previous(tmp_path: Path) -> None:
    path = tmp_path / "ipam.json"
    _write_generations(path, 1, 2)
    path.unlink()
    result = load(path, now=NOW)
    assert (result.source, result.generation, result.needs_quarantine) == ("previous", 1, True)


def test_unreadable_current_is_moved_aside(tmp_path: Path) -> None:
    path = tmp_path / "ipam.json"
    _write_generations(path, 1, 2)
    path.unlink()
    path.mkdir()  # reading it fails with an OSError (IsADirectoryError), even as root
    result = load(path, now=NOW)
    assert (result.source, result.generation) == ("previous", 1)
    assert "unreadable" in result.problems[0]
    assert (tmp_path / f"ipam.json.corrupt-{int(NOW)}").is_dir()


def test_nothing_valid_is_lost(tmp_path: Path) -> None:
    path = tmp_path / "ipam.json"
    _write_generations(path, 1, 2)
    path.write_bytes(b"garbage")
    checkpoint.previous_path(path).write_bytes(b"")
    result = load(path, now=NOW)
    assert (result.source, result.generation, result.needs_quarantine) == ("lost", 0, True)
    assert result.snapshot == PoolSnapshot()
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        f"ipam.json.corrupt-{int(NOW)}",
        f"ipam.json.prev.corrupt-{int(NOW)}",
    ]
    assert len(result.problems) == 2


def test_corrupt_current_without_previous_is_lost(tmp_path: Path) -> None:
    path = tmp_path / "ipam.json"
    path.write_bytes(b"{}")
    result = load(path, now=NOW)
    assert (result.source, result.needs_quarantine) == ("lost", True)
    assert "version: missing" in result.problems[0]


def test_a_restart_before_the_next_write_stays_lost(tmp_path: Path) -> None:
    """The first start moved both files aside; a crash before it wrote must not look like a fresh node."""
    path = tmp_path / "ipam.json"
    path.write_bytes(b"garbage")
    assert load(path, now=NOW).source == "lost"
    again = load(path, now=NOW + 5)
    assert (again.source, again.needs_quarantine) == ("lost", True)
    assert f"ipam.json.corrupt-{int(NOW)}" in again.problems[0]


def test_moving_aside_never_overwrites_an_earlier_corrupt_file(tmp_path: Path) -> None:
    path = tmp_path / "ipam.json"
    (tmp_path / f"ipam.json.corrupt-{int(NOW)}").write_bytes(b"first")
    path.write_bytes(b"second")
    load(path, now=NOW)
    assert (tmp_path / f"ipam.json.corrupt-{int(NOW)}").read_bytes() == b"first"
    assert (tmp_path / f"ipam.json.corrupt-{int(NOW)}.1").read_bytes() == b"second"


def test_stale_temporary_files_are_removed(tmp_path: Path) -> None:
    path = tmp_path / "ipam.json"
    _write_generations(path, 1)
    stale = [tmp_path / "ipam.json.4242.tmp", tmp_path / "ipam.json.prev.4242.tmp"]
    unrelated = [tmp_path / "other.json.1.tmp", tmp_path / "ipam.jsonx.1.tmp", tmp_path / "ipam.json.tmpl"]
    for p in stale + unrelated:
        p.write_bytes(b"x")
    result = load(path, now=NOW)
    assert result.source == "current"
    assert not any(p.exists() for p in stale)
    assert all(p.exists() for p in unrelated)
    assert sorted(result.problems) == [
        f"{p}: removed a temporary file left by an interrupted write" for p in stale
    ]


def test_truncated_at_every_length_recovers(tmp_path: Path) -> None:
    path = tmp_path / "ipam.json"
    prev, data = _write_generations(path, 1, 2)
    for n in range(len(data)):
        complete = data[:n].rstrip() == data.rstrip()
        for with_previous in (True, False):
            for p in tmp_path.iterdir():
                p.unlink()
            path.write_bytes(data[:n])
            if with_previous:
                checkpoint.previous_path(path).write_bytes(prev)
            result = load(path, now=NOW)
            if complete:
                assert (result.source, result.needs_quarantine) == ("current", False)
            elif with_previous:
                assert (result.source, result.generation, result.needs_quarantine) == ("previous", 1, True)
            else:
                assert (result.source, result.needs_quarantine) == ("lost", True)


# --- group commit -------------------------------------------------------------------------------


class State:
    """In-memory pool state whose snapshot records how many changes it contains."""

    def __init__(self) -> None:
        self.changes = 0

    def change(self) -> int:
        self.changes += 1
        return self.changes

    def snapshot(self) -> PoolSnapshot:
        return PoolSnapshot(cooling=(("10.0.0.1", float(self.changes)),))


class FakeWrite:
    """A write that takes ``delay`` seconds and records which changes each generation holds."""

    def __init__(self, delay: float = 0.0, fail: set[int] | None = None) -> None:
        self.delay = delay
        self.fail = fail or set()  # call numbers (1-based) that raise OSError
        self.calls = 0
        self.started = threading.Event()
        self.gate: threading.Event | None = None
        self.changes_in: dict[int, float] = {}
        self.threads: set[int] = set()

    def __call__(self, path: Path, data: bytes) -> None:
        self.calls += 1  # calls never overlap: the committer has a single writer
        call = self.calls
        self.threads.add(threading.get_ident())
        self.started.set()
        if self.gate is not None:
            self.gate.wait(5)
        time.sleep(self.delay)
        if call in self.fail:
            raise OSError(28, "No space left on device")
        decoded = decode(data)
        self.changes_in[decoded.generation] = decoded.snapshot.cooling[0][1]


def test_concurrent_commits_are_batched_and_each_covers_its_change(tmp_path: Path) -> None:
    state, write = State(), FakeWrite(delay=0.02)
    committer = GroupCommitter(tmp_path / "ipam.json", state.snapshot, write=write, clock=lambda: NOW)
    rng = random.Random(7)

    async def caller() -> None:
        await asyncio.sleep(rng.random() * 0.05)
        mine = state.change()
        generation = await committer.commit()
        assert write.changes_in[generation] >= mine

    async def main() -> None:
        await asyncio.gather(*(caller() for _ in range(100)))
        await committer.close()

    _run(main())
    assert 2 <= write.calls <= 10
    assert committer.writes == write.calls
    assert committer.generation == write.calls
    assert threading.get_ident() not in write.threads  # the write ran off the event loop


def test_no_commit_is_ever_lost(tmp_path: Path) -> None:
    state, write = State(), FakeWrite()
    committer = GroupCommitter(tmp_path / "ipam.json", state.snapshot, write=write, initial_generation=40)
    rng = random.Random(11)
    returned: list[int] = []

    async def caller() -> None:
        for _ in range(5):
            if rng.random() < 0.5:
                await asyncio.sleep(rng.random() * 0.003)
            else:
                await asyncio.sleep(0)
            mine = state.change()
            generation = await committer.commit()
            assert write.changes_in[generation] >= mine
            returned.append(generation)

    async def main() -> None:
        await asyncio.gather(*(caller() for _ in range(200)))
        await committer.close()

    _run(main())
    assert len(returned) == 1000
    assert min(returned) == 41
    assert write.calls < 1000


def test_failed_write_fails_its_batch_only(tmp_path: Path) -> None:
    state, write = State(), FakeWrite(fail={1})
    gate = write.gate = threading.Event()
    committer = GroupCommitter(tmp_path / "ipam.json", state.snapshot, write=write)

    async def main() -> None:
        first = asyncio.create_task(committer.commit())
        assert await asyncio.to_thread(write.started.wait, 5)
        later = [asyncio.create_task(committer.commit()) for _ in range(3)]
        await asyncio.sleep(0.01)
        gate.set()
        with pytest.raises(CheckpointError, match="No space left on device") as caught:
            await first
        assert isinstance(caught.value.__cause__, OSError)
        assert await asyncio.gather(*later) == [2, 2, 2]  # generation 1 was the failed attempt
        assert await committer.commit() == 3
        await committer.close()

    _run(main())
    assert (write.calls, committer.writes, committer.failures, committer.generation) == (3, 2, 1, 3)


class RecordingObserver:
    def __init__(self) -> None:
        self.writes: list[tuple[bool, int]] = []
        self.seconds: list[float] = []

    def on_checkpoint_write(self, *, ok: bool, seconds: float, batch: int) -> None:
        self.writes.append((ok, batch))
        self.seconds.append(seconds)


def test_observer_sees_every_write_with_its_batch(tmp_path: Path) -> None:
    state, write = State(), FakeWrite(delay=0.01, fail={1})
    gate = write.gate = threading.Event()
    observer = RecordingObserver()
    committer = GroupCommitter(tmp_path / "ipam.json", state.snapshot, write=write, observer=observer)

    async def main() -> None:
        first = asyncio.create_task(committer.commit())
        assert await asyncio.to_thread(write.started.wait, 5)
        later = [asyncio.create_task(committer.commit()) for _ in range(3)]
        await asyncio.sleep(0.01)
        gate.set()
        with pytest.raises(CheckpointError):
            await first
        await asyncio.gather(*later)
        committer.mark_dirty()
        await committer.close()

    _run(main())
    # the failed write of one caller, one write for the three that waited, the final flush for none
    assert observer.writes == [(False, 1), (True, 3), (True, 0)]
    assert all(s >= 0.01 for s in observer.seconds)  # the time of the write itself, failed or not


def test_snapshot_error_fails_the_batch_as_checkpoint_error(tmp_path: Path) -> None:
    calls = 0

    def snapshot() -> PoolSnapshot:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("datastore bug")
        return State().snapshot()

    committer = GroupCommitter(tmp_path / "ipam.json", snapshot, write=FakeWrite())

    async def main() -> None:
        with pytest.raises(CheckpointError, match="datastore bug"):
            await committer.commit()
        assert await committer.commit() == 2

    _run(main())


def test_cancelled_caller_does_not_disturb_its_batch(tmp_path: Path) -> None:
    write = FakeWrite(delay=0.01)
    committer = GroupCommitter(tmp_path / "ipam.json", State().snapshot, write=write)

    async def main() -> None:
        a = asyncio.create_task(committer.commit())
        b = asyncio.create_task(committer.commit())
        await asyncio.sleep(0)
        a.cancel()
        assert await b == 1
        assert await committer.commit() == 2
        await committer.close()

    _run(main())
    assert write.calls == 2


def test_close_flushes_only_when_dirty(tmp_path: Path) -> None:
    write = FakeWrite()
    committer = GroupCommitter(tmp_path / "ipam.json", State().snapshot, write=write)

    async def main() -> None:
        await committer.close()
        assert write.calls == 0
        committer.mark_dirty()
        await committer.close()
        assert write.calls == 1
        await committer.close()
        assert write.calls == 1
        with pytest.raises(CheckpointError, match="closed"):
            await committer.commit()

    _run(main())


def test_close_waits_for_the_write_in_flight(tmp_path: Path) -> None:
    write = FakeWrite(delay=0.02)
    committer = GroupCommitter(tmp_path / "ipam.json", State().snapshot, write=write)

    async def main() -> None:
        pending = asyncio.create_task(committer.commit())
        await asyncio.sleep(0)
        await committer.close()
        assert pending.done()
        assert pending.result() == 1

    _run(main())
    assert write.calls == 1


def test_close_retries_a_failed_write_and_reports_a_final_failure(tmp_path: Path) -> None:
    write = FakeWrite(fail={1, 3})
    ok = GroupCommitter(tmp_path / "a.json", State().snapshot, write=write)
    failing = GroupCommitter(tmp_path / "b.json", State().snapshot, write=write)

    async def main() -> None:
        with pytest.raises(CheckpointError):
            await ok.commit()  # call 1 fails
        await ok.close()  # call 2: the change is still unwritten, so close writes it
        failing.mark_dirty()
        with pytest.raises(CheckpointError, match="No space left"):
            await failing.close()  # call 3 fails

    _run(main())
    assert (ok.writes, failing.writes, write.calls) == (1, 0, 3)


def test_commits_to_real_files_load_back(tmp_path: Path) -> None:
    path = tmp_path / "run" / "ipam.json"
    snapshot = _sample()
    committer = GroupCommitter(path, lambda: snapshot, clock=lambda: NOW, initial_generation=9)

    async def main() -> list[int]:
        generations = list(await asyncio.gather(*(committer.commit() for _ in range(5))))
        generations.append(await committer.commit())
        await committer.close()
        return generations

    generations = _run(main())
    assert generations == [10, 10, 10, 10, 10, 11]
    assert committer.last_write_seconds > 0
    result = load(path, now=NOW)
    assert (result.source, result.generation, result.snapshot) == ("current", 11, snapshot)
    assert decode(checkpoint.previous_path(path).read_bytes()).generation == 10
