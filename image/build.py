"""``python -m image.build``: the image as an OCI archive, build/cloud-cni-image.tar (``./dev image``).

Steps, each timed: the Debian packages (mmdebstrap) and the root made of them, the relinked
interpreter, the Python packages installed and pruned, bytecode, the checks (libraries; the
containers' commands in the root), the layer and the archive. SOURCE_DATE_EPOCH, when unset, is the
last commit's time, so one commit gives one digest; the other inputs are the Debian archive's state
(the packages' versions: /var/lib/dpkg/status.d in the image) and the wheels pinned in
image/requirements.txt.

Needs root (the root's files belong to root and to the unprivileged user; chroot), mmdebstrap, gcc,
binutils and git; ``./dev image`` installs them.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from image import checks, debian, oci, python
from image.debian import NONROOT, BuildError

HERE = Path(__file__).resolve().parent
PROJECT = HERE.parent
LOCK = HERE / "requirements.txt"
REPOSITORY = "docker.io/library/cloud-cni"
PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
TAG = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")  # the OCI distribution spec's tag grammar

T = TypeVar("T")


def source_date_epoch() -> int:
    value = os.environ.get("SOURCE_DATE_EPOCH")
    if value:
        return int(value)
    out = subprocess.run(["git", "log", "-1", "--format=%ct"], cwd=PROJECT, capture_output=True, check=True)
    return int(out.stdout)


def project_version() -> str:
    with (PROJECT / "pyproject.toml").open("rb") as f:
        return str(tomllib.load(f)["project"]["version"])


def image_config() -> dict[str, object]:
    """The configuration's ``config``: who runs what by default (docs/deploy.md "The image")."""
    return {
        # The DaemonSet's three containers set runAsUser: 0 (each needs root: deploy/base/daemonset.yaml);
        # anything else run from the image (cloud-cni plan, status, ...) runs unprivileged.
        "User": f"{NONROOT}:{NONROOT}",
        "Env": [f"PATH={PATH}"],
        "Cmd": ["cloud-cni", "--help"],
        "WorkingDir": "/",
    }


def build(
    out: Path, work: Path, *, relock: bool, log: Callable[[str], None], tag: str | None = None
) -> dict[str, object]:
    epoch = source_date_epoch()
    version = project_version()
    if tag is not None and not TAG.match(tag):
        raise BuildError(f"--tag {tag!r}: a tag is 1-128 of A-Z a-z 0-9 _ . -, not starting with . or -")
    env = {**os.environ, "SOURCE_DATE_EPOCH": str(epoch), "LC_ALL": "C.UTF-8"}
    os.environ["SOURCE_DATE_EPOCH"] = str(epoch)  # the project's wheel (pip wheel) and anything else
    pip = [sys.executable, "-m", "pip"]
    root = work / "rootfs"
    work.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}

    def step(name: str, fn: Callable[[], T]) -> T:
        start = time.monotonic()
        value = fn()
        timings[name] = round(time.monotonic() - start, 1)
        log(f"image: {name}: {timings[name]} s")
        return value

    if relock or not LOCK.exists():
        step("lock", lambda: python.lock(PROJECT, LOCK, pip))
    packages = step("debian packages", lambda: debian.fetch(work / "staging", work / "mmdebstrap.log", env))
    chosen = debian.select(packages)
    step("debian root", lambda: debian.make_root(root, chosen))
    step("interpreter", lambda: debian.link_interpreter(work / "staging", root, work))
    wheel = step("wheels", lambda: python.wheels(PROJECT, LOCK, work / "wheels", pip))
    step("python install", lambda: python.install(root, work / "wheels", python.locked(LOCK), wheel))
    removed = step("prune", lambda: python.prune(root))
    sourceless = step("bytecode", lambda: python.compile_all(root))
    step("check libraries", lambda: checks.elf_libraries(root))
    reports = step("check commands", lambda: checks.commands(root))
    layer = step("layer", lambda: oci.write_layer(root, work / "layer.tar.gz", epoch))
    labels = {
        "org.opencontainers.image.title": "cloud-cni",
        "org.opencontainers.image.version": version,
        "org.opencontainers.image.licenses": "Apache-2.0",
    }
    name = f"{REPOSITORY}:{tag or version}"
    image = step(
        "archive",
        lambda: oci.write_archive(layer, out, name=name, epoch=epoch, config=image_config(), labels=labels),
    )
    (work / "layer.tar.gz").unlink()
    result: dict[str, object] = {
        "archive": str(out),
        "name": name,
        "manifest": image.manifest.digest,
        "archive_size": out.stat().st_size,
        "layer_size": layer.blob.size,
        "layer_tar_size": layer.tar_size,
        "entries": layer.entries,
        "source_date_epoch": epoch,
        "debian_packages": {p.name: p.version for p in chosen},
        "pruned": [{"what": r.what, "why": r.why, "bytes": r.size} for r in removed],
        "sourceless_bytes": sourceless,
        "install_shim": reports["install_shim"],
        "seconds": timings,
    }
    (work / "build.json").write_text(json.dumps(result, indent=2) + "\n")  # the steps in their order
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m image.build", description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=PROJECT / "build/cloud-cni-image.tar")
    parser.add_argument("--work", type=Path, default=PROJECT / "build/image", help="scratch (kept: caches)")
    parser.add_argument("--lock", action="store_true", help="re-resolve image/requirements.txt first")
    parser.add_argument("--tag", help="the image's tag (default: the version in pyproject.toml)")
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        print("image: the build needs root (chroot, files owned by other users)", file=sys.stderr)
        return 1
    start = time.monotonic()
    try:
        result = build(args.out.resolve(), args.work.resolve(), relock=args.lock, log=print, tag=args.tag)
    except BuildError as exc:
        print(f"image: {exc}", file=sys.stderr)
        return 1
    archive_mib, tar_mib = (int(str(result[k])) / (1024 * 1024) for k in ("archive_size", "layer_tar_size"))
    print(
        f"image: {result['archive']}: {result['name']} manifest {result['manifest']}\n"
        f"image: {archive_mib:.1f} MiB archive, {tar_mib:.1f} MiB uncompressed, "
        f"{time.monotonic() - start:.0f} s"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
