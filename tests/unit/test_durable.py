"""ipamd.durable: the one write-beside, fsync, rename, fsync-directory helper."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from ipamd import durable


@pytest.mark.parametrize("umask", [0, 0o022, 0o077], ids=["umask-000", "umask-022", "umask-077"])
def test_file_gets_the_mode_asked_for_whatever_the_umask(tmp_path: Path, umask: int) -> None:
    path = tmp_path / "plugin"
    old = os.umask(umask)
    try:
        durable.write_atomic(path, b"#!/bin/sh\n", mode=0o755)
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o755
    assert path.read_bytes() == b"#!/bin/sh\n"


def test_replaces_and_leaves_no_temporary_file(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    durable.write_atomic(path, b"one")
    durable.write_atomic(path, b"two")
    assert path.read_bytes() == b"two"
    assert [p.name for p in tmp_path.iterdir()] == ["state.json"]


def test_missing_directory_is_an_error_unless_asked_to_make_it(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "state.json"
    with pytest.raises(FileNotFoundError):
        durable.write_atomic(path, b"x")
    durable.write_atomic(path, b"x", make_parent=True)
    assert path.read_bytes() == b"x"
    assert stat.S_IMODE(path.parent.stat().st_mode) & 0o077 == 0


def test_before_replace_runs_after_the_data_is_written_and_before_the_rename(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    tmp = tmp_path / "state.json.tmp"
    durable.write_atomic(path, b"old")
    seen: list[tuple[bytes, bytes]] = []
    durable.write_atomic(
        path, b"new", tmp=tmp, before_replace=lambda: seen.append((path.read_bytes(), tmp.read_bytes()))
    )
    assert seen == [(b"old", b"new")]
    assert path.read_bytes() == b"new"


def test_a_failing_before_replace_leaves_the_file_and_removes_the_temporary(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    durable.write_atomic(path, b"old")

    def fail() -> None:
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError, match="No space left"):
        durable.write_atomic(path, b"new", before_replace=fail)
    assert path.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["state.json"]


def test_the_directory_is_fsynced_after_the_rename(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "state.json"
    synced: list[str] = []
    real_fsync = os.fsync

    def recording_fsync(fd: int) -> None:
        synced.append("dir" if stat.S_ISDIR(os.fstat(fd).st_mode) else f"file:{path.exists()}")
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", recording_fsync)
    durable.write_atomic(path, b"x")
    assert synced == ["file:False", "dir"]
