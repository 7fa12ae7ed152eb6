"""The image archives the image tests share, each built once per tree (``./dev image``, ~40 s).

``ensure_archive()`` is build/cloud-cni-image.tar, built when missing or older than any file it is
built from (a fresh clone: once); test_image.py compares it with a build from clean, test_image_cri.py
runs it under containerd. ``ensure_upgrade_archive()`` is a second build of the same tree for the
rolling update: an hour later by ``SOURCE_DATE_EPOCH`` (another layer, another image ID) under another
tag, as a release's image would be. A failed build fails the test; it never skips.
"""

from __future__ import annotations

import os
import subprocess
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
ARCHIVE = ROOT / "build" / "cloud-cni-image.tar"
WORK = ROOT / "build" / "image"  # ./dev image's default scratch: build.json describes ARCHIVE's build
UPGRADE_ARCHIVE = ROOT / "build" / "cloud-cni-image-upgrade.tar"
UPGRADE_TAG_SUFFIX = "-upgrade"
_SOURCES = ("ipamd", "shim", "image", "bin", "pyproject.toml")


def version() -> str:
    with (ROOT / "pyproject.toml").open("rb") as f:
        return str(tomllib.load(f)["project"]["version"])


def image_name() -> str:
    return f"docker.io/library/cloud-cni:{version()}"


def build(out: Path, *args: str, env: dict[str, str] | None = None) -> None:
    """``./dev image --out=out args`` with ``env`` added to the environment."""
    done = subprocess.run(
        [str(ROOT / "dev"), "image", f"--out={out}", *args],
        cwd=ROOT,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0 and out.exists(), done.stdout[-3000:] + done.stderr[-3000:]


def ensure_archive(archive: Path = ARCHIVE, *args: str, env: dict[str, str] | None = None) -> None:
    """``build(archive, *args)`` unless ``archive`` is newer than every file it is built from."""
    if archive.exists():
        built = archive.stat().st_mtime
        newest = max(
            (
                p.stat().st_mtime
                for name in _SOURCES
                for p in [ROOT / name, *(ROOT / name).rglob("*")]
                if p.is_file() and "__pycache__" not in p.parts
            ),
            default=0.0,
        )
        if built > newest:
            return
    build(archive, *args, env=env)


def ensure_upgrade_archive() -> str:
    """The second build (``UPGRADE_ARCHIVE``); its image name."""
    epoch = subprocess.run(["git", "log", "-1", "--format=%ct"], cwd=ROOT, capture_output=True, check=True)
    tag = version() + UPGRADE_TAG_SUFFIX
    ensure_archive(
        UPGRADE_ARCHIVE,
        f"--tag={tag}",
        f"--work={ROOT / 'build' / 'image-upgrade'}",
        env={"SOURCE_DATE_EPOCH": str(int(epoch.stdout) + 3600)},
    )
    return f"docker.io/library/cloud-cni:{tag}"
