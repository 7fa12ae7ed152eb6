"""``cloud-cni node-init``: the kernel settings the Linux datapath needs, set once per node boot by a
privileged init container (the daemon's own container keeps /proc/sys read-only and only checks).

- ``net.ipv4.ip_forward=1``: the node routes between pod veths and its interfaces.
- ``rp_filter=2`` (loose) on ``default`` and on every existing interface that is strict: replies
  to a pod on a secondary interface arrive by that interface while the main table's route to their
  source points elsewhere, and strict mode drops them. Interfaces attached later inherit
  ``default``. (The effective value is the larger of ``all`` and the interface's, so ``all=1``
  stays compatible.)
"""

from __future__ import annotations

import os

from ipamd.errors import DatapathError

SYS = "/proc/sys"


def _read(key: str) -> str:
    with open(f"{SYS}/{key}") as f:
        return f.read().strip()


def _write(key: str, value: str) -> None:
    try:
        with open(f"{SYS}/{key}", "w") as f:
            f.write(value)
    except OSError as exc:
        raise DatapathError(f"cannot set {key.replace('/', '.')}={value}: {exc.strerror}") from None


def settings_needed() -> dict[str, str]:
    """Every sysctl (as a /proc/sys path) whose value must change, with the value it needs."""
    wanted = {"net/ipv4/ip_forward": "1", "net/ipv4/conf/default/rp_filter": "2"}
    for name in sorted(os.listdir(f"{SYS}/net/ipv4/conf")):
        if name not in ("all", "default", "lo"):
            key = f"net/ipv4/conf/{name}/rp_filter"
            if _read(key) == "1":
                wanted[key] = "2"
    return {key: value for key, value in wanted.items() if _read(key) != value}


def run() -> list[str]:
    """Apply what is needed; returns one line per change."""
    changes = []
    for key, value in settings_needed().items():
        before = _read(key)
        _write(key, value)
        changes.append(f"{key.replace('/', '.')}: {before} -> {value}")
    return changes


__all__ = ["run", "settings_needed"]
