"""Taking a node over from aws-vpc-cni at start: when, what to restore, and the file's rename.

The daemon (``Daemon._run``) calls, in this order (docs/adoption-aws-vpc-cni.md):

    source = adoption.path_to_adopt(settings, loaded.source)   None: start as today
    adopted = await adoption.take_over(source, store.interfaces(), ...)
                                        None: no file there; AwsCheckpointError: stop the start
    store.restore(adopted.adoption.snapshot, ...)   ... our checkpoint committed ...
    await adoption.set_aside(adopted)   the file renamed: never adopted twice

The pure part (reading, validating, keying) is ``ipamd.migrate.awsvpc``; this module adds the
decision from the settings, the worker thread for the read, and the rename.
"""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from ipamd.config import Settings
from ipamd.migrate import awsvpc
from ipamd.pool.model import InterfaceView

__all__ = ["ADOPTED_SUFFIX", "Adopted", "path_to_adopt", "set_aside", "take_over"]

ADOPTED_SUFFIX = ".adopted-by-cloud-cni"
_PROVIDERS = ("aws", "sim")  # sim: the same start on the simulated cloud (tests, demo)
_DATAPATHS = ("linux", "none")


@dataclass(frozen=True, slots=True)
class Adopted:
    """One adoption at start; ``renamed_to`` is set once the file is set aside."""

    path: Path
    adoption: awsvpc.Adoption
    renamed_to: Path | None = None

    def public(self) -> dict[str, Any]:
        """For GET /v1/adoption and the start-up log."""
        return {
            "adopted": True,
            "from": str(self.path),
            "renamed_to": None if self.renamed_to is None else str(self.renamed_to),
            "pods": len(self.adoption.pods),
            "held": len(self.adoption.held),
            "orphaned": len(self.adoption.unheld),
            "gone": len(self.adoption.gone),
            "notes": list(self.adoption.notes),
        }


def path_to_adopt(settings: Settings, source: str) -> Path | None:
    """aws-vpc-cni's checkpoint to adopt at this start, or None. Only when no checkpoint of ours,
    its previous generation or a quarantined copy exists (``source`` "none"): a lost or damaged
    checkpoint of ours is recovered, never replaced by aws-node's, which is older than it."""
    if source != "none" or settings.aws_vpc_cni_checkpoint is None:
        return None
    if settings.cloud_provider not in _PROVIDERS or settings.datapath not in _DATAPATHS:
        return None
    return Path(settings.aws_vpc_cni_checkpoint)


def _host_links() -> list[str]:
    """The names of this network namespace's links (a pod whose host veth is on none is gone)."""
    return [name for _, name in socket.if_nameindex()]


async def take_over(
    path: Path,
    interfaces: Sequence[InterfaceView],
    *,
    network: str,
    cool_until: float,
    wired: bool,
) -> Adopted | None:
    """Read aws-vpc-cni's checkpoint in a worker thread and key its rows as ours. None: no file
    (a fresh node). AwsCheckpointError: a file that cannot be adopted (the start stops: starting
    without the record would hand running pods' addresses to new pods). ``wired``: the datapath
    wires pods (linux), so rows whose host veth is gone are left out."""
    try:
        legacy = await asyncio.to_thread(awsvpc.load, path)
    except awsvpc.AwsCheckpointNotFound:
        return None
    links = await asyncio.to_thread(_host_links) if wired else None
    adoption = awsvpc.adopt(legacy, interfaces, network=network, cool_until=cool_until, host_links=links)
    return Adopted(path=path, adoption=adoption)


async def set_aside(adopted: Adopted) -> Adopted:
    """Rename the adopted file to ``<name>.adopted-by-cloud-cni`` (kept for forensics). Called
    after our checkpoint is durable. OSError passes to the caller (the adoption stands: our
    checkpoint now exists, so a later start does not adopt again)."""
    target = adopted.path.with_name(adopted.path.name + ADOPTED_SUFFIX)
    await asyncio.to_thread(os.replace, adopted.path, target)
    return replace(adopted, renamed_to=target)
