"""Durable file replacement: write beside the file, fsync, rename over it, fsync the directory.

The one copy of the pattern in ipamd, for every file the daemon or the installer replaces in place:
the checkpoint (``ipamd.checkpoint``, which also keeps the previous generation), the simulated
cloud's state (``ipamd.cloud.sim``), the installed plugin and its network config
(``ipamd.install_shim``). The shim's DEL spool (``shim/spool.py``) keeps its own copy: the shim may
not import ipamd (pyproject.toml, "shim imports nothing heavy").
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

__all__ = ["fsync_directory", "write_atomic"]

# O_BINARY: on Windows an fd is text mode without it, and every "\n" written would become "\r\n".
_OPEN_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0)


def fsync_directory(directory: Path) -> None:
    """Make the renames and links made in ``directory`` durable.

    A no-op where directories cannot be opened for fsync (Windows: NTFS journals renames itself).
    """
    if not hasattr(os, "O_DIRECTORY"):
        return
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | getattr(os, "O_CLOEXEC", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(
    path: Path,
    data: bytes,
    *,
    mode: int = 0o600,
    tmp: Path | None = None,
    make_parent: bool = False,
    before_replace: Callable[[], None] | None = None,
    replace: Callable[[Path, Path], None] = os.replace,
) -> None:
    """Durably replace ``path`` with ``data``: a reader sees the old or the new file, complete.

    ``data`` is written to ``tmp`` (default ``.<name>.<pid>.tmp`` beside ``path``: one writer per
    path at a time), fsync'd and renamed over ``path``; then the directory is fsync'd, so the
    rename survives a crash. The file gets ``mode`` exactly, whatever the umask (where ``fchmod``
    exists). ``before_replace`` runs after the fsync, just before the rename (the checkpoint links
    the previous generation there). ``replace(tmp, path)`` is the rename (install-shim's Windows exe
    passes one that moves a running exe aside first). On a failure before the rename, ``tmp`` is
    removed and ``path`` is untouched. With ``make_parent`` a missing directory is created (mode
    0700), and only when opening ``tmp`` finds it missing: a write whose directory exists pays no
    extra syscall.
    """
    directory = path.parent
    if tmp is None:
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        fd = os.open(tmp, _OPEN_FLAGS, mode)
    except FileNotFoundError:
        if not make_parent:
            raise
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(tmp, _OPEN_FLAGS, mode)
    try:
        try:
            if hasattr(os, "fchmod"):
                os.fchmod(fd, mode)
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        if before_replace is not None:
            before_replace()
        replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_directory(directory)
