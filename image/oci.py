"""The image as an OCI archive: one deterministic layer, its configuration, the manifest, the index.

The same root gives the same bytes: entries depth-first in byte order of their names, each file's
mode and numeric owner as in the root (no user or group names), modification times clamped to
``epoch`` (SOURCE_DATE_EPOCH), PAX headers only where a ustar field cannot hold a value (a long name),
hard links as links to the first name in that order; gzip with no file name and mtime 0. The JSON
documents are written with sorted keys and no spaces.

The archive is an OCI image layout (``oci-layout``, ``index.json``, ``blobs/sha256/``) in a tar. Its
index names the image ``docker.io/library/cloud-cni:<version>``, the reference ``image: cloud-cni``
with deploy/base/kustomization.yaml's ``newTag`` resolves to, in the annotation containerd reads
(``io.containerd.image.name``) and in the OCI one (``org.opencontainers.image.ref.name``).
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import stat
import tarfile
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
CONFIG = "application/vnd.oci.image.config.v1+json"
MANIFEST = "application/vnd.oci.image.manifest.v1+json"
INDEX = "application/vnd.oci.image.index.v1+json"
REF_NAME = "org.opencontainers.image.ref.name"
CONTAINERD_NAME = "io.containerd.image.name"
GZIP_LEVEL = 9


class _Sink(Protocol):
    def write(self, data: memoryview, /) -> int: ...


class _Counted(io.RawIOBase):
    """A write-only stream that hashes and counts what passes to ``inner``."""

    def __init__(self, inner: _Sink) -> None:
        self.inner = inner
        self.sha = hashlib.sha256()
        self.size = 0

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        view = memoryview(data).cast("B")
        self.sha.update(view)
        self.size += len(view)
        self.inner.write(view)
        return len(view)


@dataclass(frozen=True)
class Blob:
    digest: str  # sha256:<hex> of the bytes in the archive
    size: int
    path: Path  # where its bytes are until the archive is written


@dataclass(frozen=True)
class Layer:
    blob: Blob  # the gzip
    diff_id: str  # sha256:<hex> of the uncompressed tar
    tar_size: int  # bytes of the uncompressed tar
    entries: int


def _walk(root: Path) -> Iterator[Path]:
    """Every path under ``root`` (not ``root``), depth-first, names in byte order."""
    with os.scandir(root) as it:
        children = sorted(it, key=lambda e: os.fsencode(e.name))
    for entry in children:
        path = Path(entry.path)
        yield path
        if entry.is_dir(follow_symlinks=False):
            yield from _walk(path)


def write_layer(root: Path, out: Path, epoch: int) -> Layer:
    """The root as a gzip'd tar at ``out``."""
    entries = 0
    with out.open("wb") as raw:
        compressed = _Counted(raw)
        with gzip.GzipFile(
            filename="", mode="wb", fileobj=compressed, mtime=0, compresslevel=GZIP_LEVEL
        ) as gz:
            plain = _Counted(gz)
            with tarfile.open(fileobj=plain, mode="w|", format=tarfile.PAX_FORMAT) as tar:
                for path in _walk(root):
                    info = tar.gettarinfo(str(path), arcname=str(path.relative_to(root)))
                    mode = path.lstat().st_mode
                    if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode) or stat.S_ISLNK(mode)):
                        raise ValueError(f"{path}: only files, directories and links go in the layer")
                    info.uname = info.gname = ""
                    info.mtime = min(int(info.mtime), epoch)
                    entries += 1
                    if info.isreg():
                        with path.open("rb") as f:
                            tar.addfile(info, f)
                    else:
                        tar.addfile(info)
    return Layer(
        blob=Blob(f"sha256:{compressed.sha.hexdigest()}", compressed.size, out),
        diff_id=f"sha256:{plain.sha.hexdigest()}",
        tar_size=plain.size,
        entries=entries,
    )


def _json(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":")).encode()


def _blob(data: bytes, directory: Path) -> Blob:
    digest = hashlib.sha256(data).hexdigest()
    path = directory / digest
    path.write_bytes(data)
    return Blob(f"sha256:{digest}", len(data), path)


@dataclass(frozen=True)
class Image:
    name: str  # docker.io/library/cloud-cni:0.1.0
    manifest: Blob
    config: Blob
    layer: Layer


def write_archive(
    layer: Layer,
    out: Path,
    *,
    name: str,
    epoch: int,
    config: dict[str, Any],
    labels: dict[str, str],
) -> Image:
    """The OCI archive of an image made of ``layer``: ``config`` is the image configuration's
    ``config`` (Env, User, Cmd, ...); ``labels`` go there and into the manifest's annotations."""
    created = datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    with tempfile.TemporaryDirectory(dir=out.parent) as tmp:
        blobs = Path(tmp)
        image_config = {
            "architecture": "amd64",
            "os": "linux",
            "created": created,
            "config": {**config, "Labels": labels},
            "rootfs": {"type": "layers", "diff_ids": [layer.diff_id]},
            "history": [{"created": created, "created_by": "image/build.py (python -m image.build)"}],
        }
        config_blob = _blob(_json(image_config), blobs)
        manifest = {
            "schemaVersion": 2,
            "mediaType": MANIFEST,
            "config": {"mediaType": CONFIG, "digest": config_blob.digest, "size": config_blob.size},
            "layers": [{"mediaType": LAYER, "digest": layer.blob.digest, "size": layer.blob.size}],
            "annotations": {**labels, "org.opencontainers.image.created": created},
        }
        manifest_blob = _blob(_json(manifest), blobs)
        tag = name.rpartition(":")[2]
        index = {
            "schemaVersion": 2,
            "mediaType": INDEX,
            "manifests": [
                {
                    "mediaType": MANIFEST,
                    "digest": manifest_blob.digest,
                    "size": manifest_blob.size,
                    "platform": {"architecture": "amd64", "os": "linux"},
                    "annotations": {CONTAINERD_NAME: name, REF_NAME: tag},
                }
            ],
        }
        files: dict[str, Path | bytes] = {
            "oci-layout": _json({"imageLayoutVersion": "1.0.0"}),
            "index.json": _json(index),
        }
        for blob in (layer.blob, config_blob, manifest_blob):
            files[f"blobs/sha256/{blob.digest.removeprefix('sha256:')}"] = blob.path
        partial = out.with_name(out.name + ".partial")
        with tarfile.open(partial, "w", format=tarfile.USTAR_FORMAT) as tar:
            for directory in ("blobs", "blobs/sha256"):
                tar.addfile(_member(directory, 0, epoch, tarfile.DIRTYPE))
            for member_name in sorted(files):
                content = files[member_name]
                if isinstance(content, bytes):
                    tar.addfile(_member(member_name, len(content), epoch), io.BytesIO(content))
                else:
                    with content.open("rb") as f:
                        tar.addfile(_member(member_name, content.stat().st_size, epoch), f)
        partial.replace(out)
    return Image(name, manifest_blob, config_blob, layer)


def _member(name: str, size: int, epoch: int, kind: bytes = tarfile.REGTYPE) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.size = size
    info.mtime = epoch
    info.mode = 0o755 if kind == tarfile.DIRTYPE else 0o644
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


@dataclass(frozen=True)
class Summary:
    """What an archive holds, every digest checked."""

    name: str
    manifest_digest: str
    archive_sha256: str
    archive_size: int
    layer_size: int  # compressed
    layer_tar_size: int  # uncompressed
    files: int
    config: dict[str, Any]


def inspect(archive: Path) -> Summary:
    """Read an archive written by ``write_archive``, checking every blob against its digest and the
    layer's uncompressed tar against the configuration's diff_id."""
    sha = hashlib.sha256()
    with archive.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            sha.update(chunk)
    with tarfile.open(archive) as tar:

        def blob(digest: str) -> bytes:
            f = tar.extractfile(f"blobs/sha256/{digest.removeprefix('sha256:')}")
            assert f is not None
            data = f.read()
            if f"sha256:{hashlib.sha256(data).hexdigest()}" != digest:
                raise ValueError(f"blob {digest} does not match its digest")
            return data

        layout = tar.extractfile("index.json")
        assert layout is not None
        (entry,) = json.loads(layout.read())["manifests"]
        manifest = json.loads(blob(entry["digest"]))
        config = json.loads(blob(manifest["config"]["digest"]))
        (layer,) = manifest["layers"]
        data = blob(layer["digest"])
    plain = gzip.decompress(data)
    if f"sha256:{hashlib.sha256(plain).hexdigest()}" != config["rootfs"]["diff_ids"][0]:
        raise ValueError("the layer does not match the configuration's diff_id")
    with tarfile.open(fileobj=io.BytesIO(plain)) as layer_tar:
        files = sum(1 for m in layer_tar if not m.isdir())
    return Summary(
        name=entry["annotations"][CONTAINERD_NAME],
        manifest_digest=entry["digest"],
        archive_sha256=f"sha256:{sha.hexdigest()}",
        archive_size=archive.stat().st_size,
        layer_size=len(data),
        layer_tar_size=len(plain),
        files=files,
        config=config,
    )
