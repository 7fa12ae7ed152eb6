"""Every OS call the plugin makes, on the C module that ``os`` wraps: ``posix``, or ``nt`` on Windows.

The shim does not import ``os`` (its import budget, docs/shim.md). CPython builds exactly one of
``posix`` and ``nt``; the calls below exist in both with the same meaning, except:

* ``O_CLOEXEC``: Windows has none; ``nt.open`` makes every descriptor non-inheritable (PEP 446);
* ``O_BINARY``: Windows only, and needed there: without it ``nt.open`` opens in text mode and
  ``write`` turns every ``\\n`` into ``\\r\\n``;
* a directory cannot be opened to fsync it on Windows (no ``O_DIRECTORY``): NTFS journals the
  rename itself, as ``ipamd/durable.py`` says; the step is skipped there;
* ``rename`` fails on Windows when the target exists: ``replace`` replaces on both.

``mypy --platform win32`` checks this module against typeshed's ``nt`` (tests/unit/test_shim_windows.py).
Path syntax (what is absolute, a path's parent) is in ``shim.cni``, with the rules of the conflist.
"""

from __future__ import annotations

import sys

if sys.platform == "win32":
    import nt as _os
else:
    import posix as _os

O_CLOEXEC: int = getattr(_os, "O_CLOEXEC", 0)
O_BINARY: int = getattr(_os, "O_BINARY", 0)
O_DIRECTORY: int | None = getattr(_os, "O_DIRECTORY", None)  # None: directories cannot be fsync'd
_APPEND = _os.O_WRONLY | _os.O_APPEND | _os.O_CREAT | O_CLOEXEC | O_BINARY
_CREATE = _os.O_WRONLY | _os.O_CREAT | _os.O_TRUNC | O_CLOEXEC | O_BINARY


def environ() -> dict[str, str]:
    """The process environment as text (``posix.environ`` holds bytes, ``nt.environ`` text)."""
    if sys.platform == "win32":
        return dict(_os.environ)
    return {
        k.decode("utf-8", "surrogateescape"): v.decode("utf-8", "surrogateescape")
        for k, v in _os.environ.items()
    }


def getpid() -> int:
    return _os.getpid()


def mkdir(path: str, mode: int) -> None:
    """Windows ignores ``mode`` (Python 3.13 and later: 0o700 gives the directory an ACL of its own)."""
    _os.mkdir(path, mode)


def append(path: str, data: bytes) -> None:
    """Append ``data`` to ``path`` (created with mode 0o600) in one write.

    On Linux an O_APPEND write is atomic with respect to other appenders. On Windows the C runtime
    seeks to the end and then writes: two plugins appending at the same moment can overwrite each
    other's line (docs/shim.md, "On Windows")."""
    fd = _os.open(path, _APPEND, 0o600)
    try:
        _os.write(fd, data)
    finally:
        _os.close(fd)


def write_synced(path: str, data: bytes) -> None:
    """Create or truncate ``path`` (mode 0o600), write all of ``data`` and fsync it."""
    fd = _os.open(path, _CREATE, 0o600)
    try:
        view = memoryview(data)
        while view:
            view = view[_os.write(fd, view) :]
        _os.fsync(fd)
    finally:
        _os.close(fd)


def replace(source: str, target: str) -> None:
    _os.replace(source, target)


def fsync_directory(path: str) -> None:
    """Make a rename in ``path`` durable; nothing to do where a directory cannot be opened (Windows)."""
    if O_DIRECTORY is None:
        return
    fd = _os.open(path, _os.O_RDONLY | O_DIRECTORY | O_CLOEXEC)
    try:
        _os.fsync(fd)
    finally:
        _os.close(fd)
