"""The checkpoint: the pool's assignments, cool-downs and quarantine in one crash-consistent file.

Public surface (docs/checkpoint.md explains the format, the write protocol and recovery)::

    encode(snapshot, *, generation, written_at) -> bytes     validated, checksummed JSON
    decode(data) -> DecodedCheckpoint                        validates everything or raises
    write_atomic(path, data)                                 tmp + fsync + keep .prev + replace + fsync dir
    load(path, *, now) -> LoadResult                         current, else .prev (quarantine), else lost
    GroupCommitter(path, snapshot_fn, ...)                   one durable write per batch of callers
    WriteObserver                                            sees every write (the metrics implement it)

Every failure to read, validate or write is a ``CheckpointError`` whose message names the field path
and what is allowed there, e.g. ``assignments[3].ip: '10.0.0.x' is not an IP address (...)``.
"""

from __future__ import annotations

import asyncio
import functools
import glob
import hashlib
import ipaddress
import json
import math
import os
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, NoReturn, Protocol

import structlog

from ipamd import durable, strictjson
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

__all__ = [
    "VERSION",
    "DecodedCheckpoint",
    "GroupCommitter",
    "LoadResult",
    "LoadSource",
    "WriteObserver",
    "decode",
    "encode",
    "load",
    "previous_path",
    "write_atomic",
]

log = structlog.get_logger("ipamd.checkpoint")

VERSION = "cloud-cni-ipam/1"

_TOP_FIELDS = ("version", "generation", "written_at", "assignments", "cooling", "quarantined", "checksum")
_ASSIGNMENT_FIELDS = (
    "network",
    "containerID",
    "ifName",
    "ip",
    "interfaceID",
    "podNamespace",
    "podName",
    "podUID",
    "netns",
    "assignedAt",
)
_COOLING_FIELDS = ("ip", "until")
_CHECKSUM_RE = re.compile(r"sha256:[0-9a-f]{64}")

_IP = "an IP address (IPv4 or IPv6 without a zone, e.g. '10.0.0.5')"
_NON_EMPTY = "a non-empty string"
_STRING = "a string"
_TIME = "a finite number (seconds since the epoch)"
_GENERATION = "a non-negative integer"

IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


@dataclass(frozen=True, slots=True)
class DecodedCheckpoint:
    snapshot: PoolSnapshot
    generation: int
    written_at: float


# --- validation primitives, shared by encode (refuse to write) and decode (refuse to read) -----


_MISSING = strictjson.MISSING


def _reject(path: str, value: object, allowed: str) -> NoReturn:
    strictjson.reject(CheckpointError, path, value, allowed)


def _string(value: object, path: str, *, non_empty: bool = False) -> str:
    if not isinstance(value, str) or (non_empty and not value):
        _reject(path, value, _NON_EMPTY if non_empty else _STRING)
    return value


@functools.lru_cache(maxsize=8192)
def _parse_ip(text: str) -> IpAddress | None:
    """A pool holds a bounded set of addresses, so the cache makes re-validation on every write cheap."""
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.scope_id is not None:
        return None
    return address


def _ip(value: object, path: str) -> str:
    if not isinstance(value, str) or _parse_ip(value) is None:
        _reject(path, value, _IP)
    return value


def _time(value: object, path: str) -> float:
    if isinstance(value, int | float) and not isinstance(value, bool):
        try:
            seconds = float(value)
        except OverflowError:
            seconds = math.inf
        if math.isfinite(seconds):
            return seconds
    _reject(path, value, _TIME)


def _generation(value: object, path: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        _reject(path, value, _GENERATION)
    return value


def _ip_path(section: str, index: int) -> str:
    return f"{section}[{index}]" if section == "quarantined" else f"{section}[{index}].ip"


def _check_unique(snapshot: PoolSnapshot) -> None:
    """One assignment per attachment; an address in at most one place (two pods, or in use and free).

    Paths are formatted only on failure: encode runs this on every write.
    """
    keys: dict[AttachmentKey, int] = {}
    owners: dict[IpAddress | None, tuple[str, int]] = {}
    sections = (
        ("assignments", [a.ip for a in snapshot.assignments]),
        ("cooling", [ip for ip, _ in snapshot.cooling]),
        ("quarantined", list(snapshot.quarantined)),
    )
    for i, assignment in enumerate(snapshot.assignments):
        first = keys.setdefault(assignment.key, i)
        if first != i:
            key = assignment.key
            raise CheckpointError(
                f"assignments[{i}]: attachment (network={key.network!r}, containerID={key.container_id!r}, "
                f"ifName={key.ifname!r}) is already at assignments[{first}]; an attachment holds one address"
            )
    for section, ips in sections:
        for i, ip in enumerate(ips):
            owner = owners.setdefault(_parse_ip(ip), (section, i))
            if owner != (section, i):
                raise CheckpointError(
                    f"{_ip_path(section, i)}: {ip!r} is already at {_ip_path(*owner)}; "
                    "an address appears once across assignments, cooling and quarantined"
                )


# --- encode -------------------------------------------------------------------------------------


def _canonical(body: Mapping[str, object]) -> bytes:
    """The bytes the checksum covers: sorted keys, no whitespace, ASCII, Python's shortest floats."""
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False)
    return text.encode("ascii")


def _checksum(canonical: bytes) -> str:
    return "sha256:" + hashlib.sha256(canonical).hexdigest()


def _assignment_doc(a: Assignment) -> dict[str, object]:
    key, pod = a.key, a.pod
    return {  # members in sorted order: the canonical form needs no sort_keys pass
        "assignedAt": a.assigned_at,
        "containerID": key.container_id,
        "ifName": key.ifname,
        "interfaceID": a.interface_id,
        "ip": a.ip,
        "netns": a.netns,
        "network": key.network,
        "podName": pod.name,
        "podNamespace": pod.namespace,
        "podUID": pod.uid,
    }


@functools.lru_cache(maxsize=4096)
def _assignment_json(a: Assignment) -> str | None:
    """One assignment's canonical JSON, or None when the decoder would reject it.

    Cached by value: a pool's assignments change a few at a time between writes, and serializing
    and validating all of them is most of a write's CPU (which competes with the event loop for
    the GIL). The validation is the decoder's own, so encode can never write what decode rejects.
    """
    doc = _assignment_doc(a)
    try:
        _assignment(strictjson.JsonObject(list(doc.items())), "assignment")
    except CheckpointError:
        return None
    return json.dumps(doc, separators=(",", ":"), ensure_ascii=True, allow_nan=False)


def _is_ip(value: object) -> bool:
    return type(value) is str and _parse_ip(value) is not None


def _is_time(value: object) -> bool:
    return type(value) is float and math.isfinite(value)


def encode(snapshot: PoolSnapshot, *, generation: int, written_at: float) -> bytes:
    """Serialize ``snapshot``; raises CheckpointError rather than write what decode would reject."""
    fragments: list[str] = []
    for i, a in enumerate(snapshot.assignments):
        try:
            fragment = _assignment_json(a)
        except TypeError:  # unhashable junk in a field: let the validator name it
            fragment = None
        if fragment is None:
            _assignment(strictjson.JsonObject(list(_assignment_doc(a).items())), f"assignments[{i}]")
            raise AssertionError("unreachable: the validator accepted what it rejected")
        fragments.append(fragment)
    cooling: list[object] = []
    for i, (ip, until) in enumerate(snapshot.cooling):
        entry = {"ip": ip, "until": until}
        if not (_is_ip(ip) and _is_time(until)):  # paths are formatted only on the slow path
            _cooling(strictjson.JsonObject(list(entry.items())), f"cooling[{i}]")
        cooling.append(entry)
    quarantined = [
        ip if _is_ip(ip) else _ip(ip, f"quarantined[{i}]") for i, ip in enumerate(snapshot.quarantined)
    ]
    rest: dict[str, object] = {  # every member but "assignments", which sorts first, in sorted order
        "cooling": cooling,
        "generation": _generation(generation, "generation"),
        "quarantined": quarantined,
        "version": VERSION,
        "written_at": _time(written_at, "written_at"),
    }
    _check_unique(snapshot)
    tail = json.dumps(rest, separators=(",", ":"), ensure_ascii=True, allow_nan=False)
    canonical = ('{"assignments":[' + ",".join(fragments) + "]," + tail[1:]).encode("ascii")
    # The file is the canonical body with the checksum appended as one more member.
    return canonical[:-1] + b',"checksum":"' + _checksum(canonical).encode("ascii") + b'"}\n'


# --- decode -------------------------------------------------------------------------------------


def _parse(data: bytes) -> object:
    try:
        return strictjson.loads(data)
    except strictjson.StrictJsonError as exc:
        raise CheckpointError(f"checkpoint: {exc}") from exc


def _object(value: object, path: str, fields: tuple[str, ...]) -> strictjson.JsonObject:
    return strictjson.fields_object(CheckpointError, value, path, fields)


def _list(value: object, path: str, allowed: str) -> list[object]:
    if not isinstance(value, list):
        _reject(path, value, allowed)
    return value


def _assignment(value: object, path: str) -> Assignment:
    doc = _object(value, path, _ASSIGNMENT_FIELDS)

    def text(name: str, *, non_empty: bool = False) -> str:
        return _string(doc.get(name, _MISSING), f"{path}.{name}", non_empty=non_empty)

    return Assignment(
        key=AttachmentKey(
            network=text("network", non_empty=True),
            container_id=ContainerID(text("containerID", non_empty=True)),
            ifname=IfName(text("ifName", non_empty=True)),
        ),
        ip=_ip(doc.get("ip", _MISSING), f"{path}.ip"),
        interface_id=InterfaceId(text("interfaceID", non_empty=True)),
        pod=PodRef(namespace=text("podNamespace"), name=text("podName"), uid=text("podUID")),
        assigned_at=_time(doc.get("assignedAt", _MISSING), f"{path}.assignedAt"),
        netns=text("netns"),
    )


def _cooling(value: object, path: str) -> tuple[str, float]:
    doc = _object(value, path, _COOLING_FIELDS)
    return _ip(doc.get("ip", _MISSING), f"{path}.ip"), _time(doc.get("until", _MISSING), f"{path}.until")


def decode(data: bytes) -> DecodedCheckpoint:
    """Parse and validate a checkpoint. Raises CheckpointError naming the first bad field.

    Order: the version decides the schema, then every field, then the checksum (which catches a
    damaged file whose fields still look valid, e.g. one address changed into another).
    """
    top = _parse(data)
    if not isinstance(top, strictjson.JsonObject):
        _reject("checkpoint", top, "a JSON object")
    version = top.get("version", _MISSING)
    if version != VERSION:
        _reject("version", version, f"a supported version (this daemon reads {VERSION!r})")
    _object(top, "checkpoint", _TOP_FIELDS)
    generation = _generation(top.get("generation", _MISSING), "generation")
    written_at = _time(top.get("written_at", _MISSING), "written_at")
    assignments = _list(top.get("assignments", _MISSING), "assignments", "a list of assignment objects")
    cooling = _list(top.get("cooling", _MISSING), "cooling", "a list of {ip, until} objects")
    quarantined = _list(top.get("quarantined", _MISSING), "quarantined", "a list of IP addresses")
    snapshot = PoolSnapshot(
        assignments=tuple(_assignment(v, f"assignments[{i}]") for i, v in enumerate(assignments)),
        cooling=tuple(_cooling(v, f"cooling[{i}]") for i, v in enumerate(cooling)),
        quarantined=tuple(_ip(v, f"quarantined[{i}]") for i, v in enumerate(quarantined)),
    )
    _check_unique(snapshot)
    found = top.get("checksum", _MISSING)
    if not isinstance(found, str) or not _CHECKSUM_RE.fullmatch(found):
        _reject("checksum", found, "'sha256:' followed by 64 lowercase hex digits")
    expected = _checksum(_canonical({k: v for k, v in top.items() if k != "checksum"}))
    if found != expected:
        raise CheckpointError(
            f"checksum: {found} does not match the content ({expected}); "
            "the file changed after it was written"
        )
    return DecodedCheckpoint(snapshot=snapshot, generation=generation, written_at=written_at)


# --- durable write ------------------------------------------------------------------------------


def previous_path(path: Path) -> Path:
    """Where ``write_atomic`` keeps the generation before the current one."""
    return path.with_name(path.name + ".prev")


def _link_previous(path: Path) -> None:
    """Hard-link the current file to ``<path>.prev`` without a moment where the current is missing."""
    link = path.with_name(f"{path.name}.prev.{os.getpid()}.tmp")
    try:
        os.link(path, link)
    except FileNotFoundError:
        return  # first write: nothing to keep
    except FileExistsError:  # os.link never overwrites, and a crash may have left one behind
        link.unlink()
        os.link(path, link)
    os.replace(link, previous_path(path))


def write_atomic(path: Path, data: bytes) -> None:
    """Durably replace ``path`` with ``data``; the old content stays readable as ``<path>.prev``.

    A reader sees either the old or the new file, complete, at every instant. Parent directory is
    created with mode 0700 if missing; the files are 0600. The temporary file is
    ``<name>.<pid>.tmp``, the pattern ``load`` removes after a crash.
    """
    durable.write_atomic(
        path,
        data,
        mode=0o600,
        tmp=path.with_name(f"{path.name}.{os.getpid()}.tmp"),
        make_parent=True,
        before_replace=lambda: _link_previous(path),
    )


# --- load ---------------------------------------------------------------------------------------

LoadSource = Literal["none", "current", "previous", "lost"]


@dataclass(frozen=True, slots=True)
class LoadResult:
    """What ``load`` found. With ``needs_quarantine`` the caller must quarantine every address the
    node holds that ``snapshot`` does not assign, before serving (docs/checkpoint.md)."""

    source: LoadSource
    snapshot: PoolSnapshot
    generation: int
    problems: list[str] = field(default_factory=list)
    needs_quarantine: bool = False


def _move_aside(path: Path, now: float, problems: list[str], reason: str) -> None:
    stamp = int(now) if math.isfinite(now) else 0
    target = path.with_name(f"{path.name}.corrupt-{stamp}")
    n = 0
    while target.exists() or target.is_symlink():
        n += 1
        target = path.with_name(f"{path.name}.corrupt-{stamp}.{n}")
    try:
        os.replace(path, target)
    except OSError as exc:
        problems.append(f"{path}: {reason}; could not move it aside: {exc}")
        return
    problems.append(f"{path}: {reason}; moved aside to {target.name}")


def _read(path: Path, now: float, problems: list[str]) -> DecodedCheckpoint | Literal["missing"] | None:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return "missing"
    except OSError as exc:
        _move_aside(path, now, problems, f"unreadable ({exc})")
        return None
    try:
        return decode(data)
    except CheckpointError as exc:
        _move_aside(path, now, problems, str(exc))
        return None


def load(path: Path, *, now: float) -> LoadResult:
    """Read the checkpoint at start-up, before any writer runs. Never raises for a bad file."""
    problems: list[str] = []
    for stale in path.parent.glob(glob.escape(path.name) + ".*.tmp"):
        try:
            stale.unlink()
            problems.append(f"{stale}: removed a temporary file left by an interrupted write")
        except OSError as exc:
            problems.append(f"{stale}: could not remove a stale temporary file: {exc}")

    current = _read(path, now, problems)
    if isinstance(current, DecodedCheckpoint):
        return LoadResult("current", current.snapshot, current.generation, problems)
    previous = _read(previous_path(path), now, problems)
    if isinstance(previous, DecodedCheckpoint):
        return LoadResult("previous", previous.snapshot, previous.generation, problems, needs_quarantine=True)
    if current == "missing" and previous == "missing":
        evidence = sorted(p.name for p in path.parent.glob(glob.escape(path.name) + "*.corrupt-*"))
        if not evidence:
            return LoadResult("none", PoolSnapshot(), 0, problems)
        # A previous start moved the files aside and stopped before writing a new checkpoint.
        problems.append(f"{path}: missing, and no checkpoint was written since {', '.join(evidence)}")
    return LoadResult("lost", PoolSnapshot(), 0, problems, needs_quarantine=True)


# --- group commit -------------------------------------------------------------------------------


class WriteObserver(Protocol):
    """Sees every write attempt of a GroupCommitter; the metrics layer implements it.

    ``seconds`` is the encode and durable write in the worker thread (until the failure, if
    ``ok`` is false); ``batch`` the number of callers the write answers (0 for the final flush).
    """

    def on_checkpoint_write(self, *, ok: bool, seconds: float, batch: int) -> None: ...


_INLINE_WRITE_MAX = 0.0003  # seconds: a write this fast blocks the event loop less than a thread hop costs


class GroupCommitter:
    """Makes in-memory pool changes durable, one write for every caller that arrived meanwhile.

    ``await commit()`` returns the generation of a write that started after the call (so it holds
    the caller's change: ``snapshot_fn`` runs on the event loop when a write starts) and has
    completed durably. Callers arriving while a write is in flight form the next batch. The encode
    and the write run in a worker thread. A failed write fails its batch only, with CheckpointError;
    the next commit tries again.
    """

    def __init__(
        self,
        path: Path,
        snapshot_fn: Callable[[], PoolSnapshot],
        *,
        clock: Callable[[], float] = time.time,
        write: Callable[[Path, bytes], None] = write_atomic,
        initial_generation: int = 0,
        observer: WriteObserver | None = None,
    ) -> None:
        self._path = path
        self._snapshot_fn = snapshot_fn
        self._clock = clock
        self._write = write
        self._observer = observer
        self._attempted = initial_generation  # every attempt takes a new number, so none is reused
        self._waiters: list[asyncio.Future[int]] = []
        self._task: asyncio.Task[None] | None = None
        self._dirty = False
        self._closed = False
        self.generation = initial_generation  # last durable generation
        self.writes = 0
        self.failures = 0
        self.last_write_seconds = 0.0

    def mark_dirty(self) -> None:
        """Record a change that need not be awaited; the next write (or ``close``) carries it."""
        self._dirty = True

    async def commit(self) -> int:
        if self._closed:
            raise CheckpointError(f"checkpoint {self._path}: the committer is closed")
        waiter: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._drain(), name="checkpoint-writer")
        return await waiter

    async def close(self) -> None:
        """Refuse new commits, finish the batches in flight, then write once more if anything is dirty."""
        self._closed = True
        if self._task is not None:
            await self._task
        if self._dirty:
            _, error = await self._write_once(batch=0)
            if error is not None:
                raise self._error(error)

    async def _drain(self) -> None:
        # The only writer. It exits when no waiter is left; commit() starts a new one. Both run on
        # the event loop, so no commit can slip in between the final check and the task finishing.
        batch: list[asyncio.Future[int]] = []
        try:
            while self._waiters:
                batch, self._waiters = self._waiters, []
                generation, error = await self._write_once(batch=len(batch))
                for waiter in batch:
                    if waiter.done():  # its caller was cancelled; the write went ahead anyway
                        continue
                    if error is None:
                        waiter.set_result(generation)
                    else:
                        waiter.set_exception(self._error(error))
        except BaseException:
            for waiter in [*batch, *self._waiters]:
                waiter.cancel()
            self._waiters = []
            raise

    async def _write_once(self, *, batch: int) -> tuple[int, Exception | None]:
        self._attempted += 1
        generation = self._attempted
        self._dirty = False
        timing = [0.0]
        try:
            snapshot = self._snapshot_fn()
            written_at = self._clock()
            if batch == 1 and 0 < self.last_write_seconds <= _INLINE_WRITE_MAX:
                # A lone caller and a fast medium (the tmpfs of /var/run): writing on the loop is
                # cheaper than two thread hand-offs. Slow disks and batches go to the writer thread.
                self._encode_and_write(snapshot, generation, written_at, timing)
            else:
                await asyncio.to_thread(self._encode_and_write, snapshot, generation, written_at, timing)
        except Exception as exc:
            self._dirty = True
            self.failures += 1
            log.warning(
                "checkpoint_write_failed", path=str(self._path), generation=generation, error=str(exc)
            )
            self._observe(ok=False, seconds=timing[0], batch=batch)
            return generation, exc
        self.generation = generation
        self.writes += 1
        self.last_write_seconds = timing[0]
        self._observe(ok=True, seconds=timing[0], batch=batch)
        return generation, None

    def _encode_and_write(
        self, snapshot: PoolSnapshot, generation: int, written_at: float, timing: list[float]
    ) -> None:
        started = time.perf_counter()
        try:
            self._write(self._path, encode(snapshot, generation=generation, written_at=written_at))
        finally:
            timing[0] = time.perf_counter() - started

    def _observe(self, *, ok: bool, seconds: float, batch: int) -> None:
        if self._observer is not None:
            self._observer.on_checkpoint_write(ok=ok, seconds=seconds, batch=batch)

    def _error(self, cause: Exception) -> CheckpointError:
        error = CheckpointError(f"checkpoint {self._path}: write failed: {cause}")
        error.__cause__ = cause
        return error
