"""Durable DEL queue: when the daemon is unreachable, DEL is written here and succeeds.

A pod must never be kept from terminating because the daemon is down. The DEL is queued as one JSON
file in ``<socket dir>/del-spool/`` (over TCP: ``<token file dir>/del-spool/``) (temp file, fsync,
rename, fsync of the directory where the OS allows it) and the daemon drains the queue before it
serves any ADD, and again periodically. DEL is idempotent, so a DEL that was both delivered and
queued does no harm. The format is read by ``ipamd/spool.py``; the directory is the one its
``spool_dir`` names (``Path(...).parent / "del-spool"``), on Linux and on Windows.
"""

from __future__ import annotations

from shim import _fs, cni

SPOOL_DIRNAME = "del-spool"
SPOOL_VERSION = "cloud-cni-del/1"


def spool_dir(socket_path: str) -> str:
    return cni.join_path(cni.parent_path(socket_path), SPOOL_DIRNAME)


# The write below repeats ipamd/durable.py on purpose: the shim may not import ipamd (the "shim
# imports nothing heavy" contract) and calls ``posix``/``nt`` (shim/_fs.py) rather than ``os``.
def enqueue(socket_path: str, name: str, body: bytes) -> str | None:
    """Write ``body`` durably as ``<spool>/<name>.json``; returns the path. ``name`` is made of
    validated CNI identifiers (container ID, ifname, network name), so it is a safe file name.

    ``socket_path`` is the daemon's Unix socket, or with TCP its token file: the spool is beside it.
    None when that directory does not exist: no daemon ever ran there, so no daemon holds
    state a DEL could release, and the DEL succeeds with nothing to queue."""
    directory = spool_dir(socket_path)
    try:
        _fs.mkdir(directory, 0o700)
    except FileExistsError:
        pass
    except FileNotFoundError:
        return None
    final = cni.join_path(directory, f"{name}.json")
    tmp = cni.join_path(directory, f".{name}.{_fs.getpid()}.tmp")
    _fs.write_synced(tmp, body)
    _fs.replace(tmp, final)
    _fs.fsync_directory(directory)
    return final
