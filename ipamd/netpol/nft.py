"""Puts a ``Ruleset`` into the kernel: one ``nft -f`` transaction per change, the smallest one that
turns what is there into what should be.

``script(current, desired)`` is pure: set elements added and deleted, chains created, flushed and
refilled, or deleted, dispatch-map entries swapped, in the order the kernel needs (a chain exists
before a map jumps to it; a map stops jumping to a chain before it is deleted). ``full_script`` makes
the whole table in one transaction that first deletes it (``add table`` then ``delete table``: a
table left by an earlier run is replaced atomically, never flushed first), used at start and after
any failure. A failed transaction changes nothing (nft's commit is all or nothing): what was
programmed stays, so an error never opens a pod, nor closes one that was open.

Why the ``nft`` command and not a library: the Python bindings of libnftables are a distribution
package (python3-nftables), not on PyPI, and take the same text; pyroute2's nftables support has no
sets of concatenations nor vmaps. The command reads the script on stdin: one process per
transaction, a few milliseconds, off the event loop.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterable

from ipamd.errors import DatapathError
from ipamd.netpol.compile import (
    BASE_RULES,
    FAMILY,
    FIXED_MAPS,
    FIXED_SETS,
    HOOK_PRIORITY,
    PREROUTING_PRIORITY,
    PREROUTING_RULES,
    TABLE,
    Ruleset,
)

T = f"{FAMILY} {TABLE}"
_CHUNK = 2000  # elements per command: keeps each line of the script a sane size


class NftError(DatapathError):
    """A transaction the kernel (or nft) refused: nothing of it was applied."""


def _elements(kind: str, name: str, items: Iterable[str]) -> list[str]:
    ordered = sorted(items)
    return [
        f"{kind} element {T} {name} {{ {', '.join(ordered[i : i + _CHUNK])} }}"
        for i in range(0, len(ordered), _CHUNK)
    ]


def _quote_if(key: str) -> str:
    return f'"{key}"'


def _map_items(
    kind: str, name: str, entries: dict[str, str], keys: Iterable[str], *, ifname: bool
) -> list[str]:
    items = [f"{_quote_if(k) if ifname else k} : {entries[k]}" for k in sorted(keys)]
    if kind == "delete":
        items = [_quote_if(k) if ifname else k for k in sorted(keys)]
    if not items:
        return []
    return [
        f"{kind} element {T} {name} {{ {', '.join(items[i : i + _CHUNK])} }}"
        for i in range(0, len(items), _CHUNK)
    ]


def skeleton() -> list[str]:
    lines = [f"add table {T}"]
    for name, kind in FIXED_SETS.items():
        lines.append(f"add set {T} {name} {{ type {kind}; }}")
    for name, kind in FIXED_MAPS.items():
        lines.append(f"add map {T} {name} {{ type {kind}; }}")
    hook = f"type filter hook postrouting priority {HOOK_PRIORITY}; policy accept;"
    lines.append(f"add chain {T} postrouting {{ {hook} }}")
    hook = f"type filter hook prerouting priority {PREROUTING_PRIORITY}; policy accept;"
    lines.append(f"add chain {T} prerouting {{ {hook} }}")
    return lines


def base_rules() -> list[str]:
    """The base chains' rules (the skeleton's chains are empty until these are added, once)."""
    return [f"add rule {T} postrouting {rule}" for rule in BASE_RULES] + [
        f"add rule {T} prerouting {rule}" for rule in PREROUTING_RULES
    ]


def full_script(desired: Ruleset) -> str:
    """The whole table, replacing whatever table of that name is there, in one transaction."""
    lines = [f"add table {T}", f"delete table {T}", *skeleton(), *base_rules()]
    lines += script(Ruleset(), desired, include_header=False).splitlines()
    return "\n".join(lines) + "\n"


def script(current: Ruleset, desired: Ruleset, *, include_header: bool = True) -> str:
    """The commands turning ``current`` into ``desired`` ("" when they are the same)."""
    add_sets: list[str] = []
    elements: list[str] = []
    for name, (kind, items) in desired.sets.items():
        old = current.sets.get(name)
        if old is None:
            add_sets.append(f"add set {T} {name} {{ type {kind}; }}")
            if items:
                elements += _elements("add", name, items)
        elif old[1] is not items and old[1] != items:
            if old[1] - items:
                elements += _elements("delete", name, old[1] - items)
            if items - old[1]:
                elements += _elements("add", name, items - old[1])
    for name, old_items, new_items in (
        ("pending-ips", current.pending_ips, desired.pending_ips),
        ("pending-veths", current.pending_veths, desired.pending_veths),
        ("local-veths", current.local_veths, desired.local_veths),
        ("local-sources", current.local_sources, desired.local_sources),  # elements already quoted
    ):
        quote = name in ("pending-veths", "local-veths")
        if old_items - new_items:
            elements += _elements(
                "delete", name, [_quote_if(v) if quote else v for v in old_items - new_items]
            )
        if new_items - old_items:
            elements += _elements("add", name, [_quote_if(v) if quote else v for v in new_items - old_items])
    chains: list[str] = []
    for name, rules in desired.chains.items():
        old_rules = current.chains.get(name)
        if old_rules == rules:
            continue
        chains.append(f"add chain {T} {name}" if old_rules is None else f"flush chain {T} {name}")
        chains += [f"add rule {T} {name} {rule}" for rule in rules]
    maps: list[str] = []
    for name, old_map, new_map in (
        ("ingress", current.ingress, desired.ingress),
        ("egress", current.egress, desired.egress),
    ):
        ifname = name == "ingress"
        gone = [k for k, v in old_map.items() if new_map.get(k) != v]
        new = [k for k, v in new_map.items() if old_map.get(k) != v]
        maps += _map_items("delete", name, old_map, gone, ifname=ifname)
        maps += _map_items("add", name, new_map, new, ifname=ifname)
    removals = [f"delete chain {T} {name}" for name in current.chains if name not in desired.chains]
    removals += [f"delete set {T} {name}" for name in current.sets if name not in desired.sets]
    lines = add_sets + elements + chains + maps + removals
    if not lines:
        return ""
    return "\n".join(lines) + "\n"


class Nft:
    """Runs scripts with the ``nft`` command (in the daemon's network namespace)."""

    def __init__(self, binary: str | None = None, timeout: float = 30.0) -> None:
        self.binary = binary or shutil.which("nft") or "/usr/sbin/nft"
        self.timeout = timeout

    def run(self, text: str) -> None:
        try:
            done = subprocess.run(
                [self.binary, "-f", "-"],
                input=text.encode(),
                capture_output=True,
                timeout=self.timeout,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise NftError(f"nft -f: {exc}") from exc
        if done.returncode != 0:
            raise NftError(f"nft -f exited {done.returncode}: {done.stderr.decode(errors='replace')[:2000]}")

    def table_exists(self) -> bool:
        done = subprocess.run(
            [self.binary, "list", "table", FAMILY, TABLE],
            capture_output=True,
            timeout=self.timeout,
            check=False,
        )
        return done.returncode == 0

    def delete_table(self) -> bool:
        """Remove the table (enforcement turned off); False when there was none."""
        if not self.table_exists():
            return False
        self.run(f"delete table {T}\n")
        return True


__all__ = ["Nft", "NftError", "base_rules", "full_script", "script", "skeleton"]
