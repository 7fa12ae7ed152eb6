"""Durable DEL queue: when the daemon is unreachable, DEL is written here and succeeds.

A pod must never be kept from terminating because the daemon is down. The DEL is queued as one JSON
file in ``<socket dir>/del-spool/`` (over TCP: ``<token file dir>/del-spool/``) (temp file, fsync,
rename, fsync of the directory) and the daemon drains the queue before it serves any ADD, and again
periodically. DEL is idempotent, so a DEL that was both delivered and queued does no harm. The
format is read by ``ipamd/spool.py``.
"""

from __future__ import annotations

import posix

SPOOL_DIRNAME = "del-spool"
SPOOL_VERSION = "cloud-cni-del/1"


def spool_dir(socket_path: str) -> str:
    parent = socket_path.rpartition("/")[0] or "."
    return f"{parent}/{SPOOL_DIRNAME}"


# The write below repeats ipamd/durable.py on purpose: the shim may not import ipamd (the "shim
# imports nothing heavy" contract) and uses ``posix`` rather than ``os`` to stay import-light.
def _fsync_dir(path: str) -> None:
    fd = posix.open(path, posix.O_RDONLY | posix.O_DIRECTORY)
    try:
        posix.fsync(fd)
    finally:
        posix.close(fd)


def enqueue(socket_path: str, name: str, body: bytes) -> str | None:
    """Write ``body`` durably as ``<spool>/<name>.json``; returns the path. ``name`` is made of
    validated CNI identifiers (container ID, ifname, network name), so it is a safe file name.

    ``socket_path`` is the daemon's Unix socket, or with TCP its token file: the spool is beside it.
    None when that directory does not exist: no daemon ever ran there, so no daemon holds
    state a DEL could release, and the DEL succeeds with nothing to queue."""
    directory = spool_dir(socket_path)
    try:
        posix.mkdir(directory, 0o700)
    except FileExistsError:
        pass
    except FileNotFoundError:
        return None
    final = f"{directory}/{name}.json"
    tmp = f"{directory}/.{name}.{posix.getpid()}.tmp"
    fd = posix.open(tmp, posix.O_WRONLY | posix.O_CREAT | posix.O_TRUNC | posix.O_CLOEXEC, 0o600)
    try:
        view = memoryview(body)
        while view:
            view = view[posix.write(fd, view) :]
        posix.fsync(fd)
    finally:
        posix.close(fd)
    posix.rename(tmp, final)
    _fsync_dir(directory)
    return final
