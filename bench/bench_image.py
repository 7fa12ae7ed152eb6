"""The container image's figures: sizes, what takes the room, build time, digest reproducibility.

    .venv/bin/python bench/bench_image.py                 # the archive ./dev image wrote, and its root
    .venv/bin/python bench/bench_image.py --build 2       # as root: build it twice from clean first

Reads build/cloud-cni-image.tar (every blob checked against its digest, the layer against the
configuration's diff_id) and prints its sha256, the manifest digest, the archive's size, the layer's
compressed and uncompressed sizes and file count; from build/image/rootfs (the root the layer was
made of, kept by the build) the bytes of its parts and of their bytecode; from build/image/build.json
the time of each build step. ``--build N`` first runs ``./dev image`` N times, each after removing
build/image (so the Debian packages and the wheels are downloaded again), with the same
SOURCE_DATE_EPOCH, and prints each run's wall time and archive sha256, then whether they are equal.
Asserts nothing.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

PROJECT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(PROJECT))

from image import oci  # noqa: E402

ARCHIVE = PROJECT / "build/cloud-cni-image.tar"
WORK = PROJECT / "build/image"
SITE = "usr/local/lib/python3.11/dist-packages"
PARTS = {
    "Debian: libraries, interpreter, nft, iptables, busybox": "",
    "Python standard library": "usr/lib/python3.11",
    "site-packages": SITE,
    "  kubernetes": f"{SITE}/kubernetes",
    "  grpc": f"{SITE}/grpc",
    "  cryptography": f"{SITE}/cryptography",
    "  botocore": f"{SITE}/botocore",
    "  pydantic, pydantic_core": f"{SITE}/pydantic {SITE}/pydantic_core",
    "  pyroute2": f"{SITE}/pyroute2",
    "  ipamd, shim": f"{SITE}/ipamd {SITE}/shim",
}
MIB = 1024 * 1024


def _bytes(paths: list[Path]) -> tuple[int, int]:
    """Apparent bytes of the regular files under ``paths``, and of their bytecode."""
    total = pyc = 0
    for top in paths:
        for directory, _, files in os.walk(top):
            for name in files:
                path = os.path.join(directory, name)
                if not os.path.islink(path):
                    size = os.lstat(path).st_size
                    total += size
                    pyc += size if name.endswith(".pyc") else 0
    return total, pyc


def _sha256(path: Path) -> str:
    sha = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            sha.update(chunk)
    return sha.hexdigest()


def _shown(path: Path) -> str:
    return str(path.relative_to(PROJECT)) if path.is_relative_to(PROJECT) else str(path)


def build(rounds: int, archive: Path, work: Path) -> None:
    epoch = subprocess.run(["git", "log", "-1", "--format=%ct"], cwd=PROJECT, capture_output=True, check=True)
    env = {
        **os.environ,
        "SOURCE_DATE_EPOCH": os.environ.get("SOURCE_DATE_EPOCH") or epoch.stdout.decode().strip(),
    }
    digests = []
    for i in range(rounds):
        shutil.rmtree(work, ignore_errors=True)
        start = time.monotonic()
        argv = [str(PROJECT / "dev"), "image", f"--out={archive}", f"--work={work}"]
        subprocess.run(argv, cwd=PROJECT, env=env, check=True, capture_output=True)
        digests.append(_sha256(archive))
        print(f"build {i + 1}: {time.monotonic() - start:.1f} s from clean, archive sha256:{digests[-1]}")
    print(f"same archive every time: {len(set(digests)) == 1} (SOURCE_DATE_EPOCH={env['SOURCE_DATE_EPOCH']})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--build", type=int, default=0, metavar="N", help="build N times from clean first")
    parser.add_argument("--out", type=Path, default=ARCHIVE, help="the archive (as the build's --out)")
    parser.add_argument("--work", type=Path, default=WORK, help="the build's scratch (as its --work)")
    args = parser.parse_args()
    archive, work = args.out.resolve(), args.work.resolve()
    if args.build:
        build(args.build, archive, work)
    summary = oci.inspect(archive)
    print(f"{_shown(archive)}: {summary.name}")
    print(f"  archive sha256     {summary.archive_sha256}")
    print(f"  manifest           {summary.manifest_digest}")
    print(f"  archive            {summary.archive_size / MIB:7.1f} MiB")
    print(f"  layer, gzip        {summary.layer_size / MIB:7.1f} MiB")
    print(f"  layer, tar         {summary.layer_tar_size / MIB:7.1f} MiB ({summary.files} files)")
    print(f"  user {summary.config['config']['User']}, cmd {summary.config['config'].get('Cmd')}")
    root = work / "rootfs"
    if root.is_dir():
        total, total_pyc = _bytes([root])
        print(f"{_shown(root)}: {total / MIB:.1f} MiB in files ({total_pyc / MIB:.1f} bytecode)")
        python = _bytes([root / "usr/lib/python3.11", root / SITE])
        for label, rels in PARTS.items():
            if rels:
                size, pyc = _bytes([root / rel for rel in rels.split()])
            else:
                size, pyc = total - python[0], total_pyc - python[1]
            print(f"  {label:<56} {size / MIB:6.1f} MiB ({pyc / MIB:.1f} bytecode)")
    report = work / "build.json"
    if report.exists():
        seconds = json.loads(report.read_text())["seconds"]
        steps = ", ".join(f"{name} {value}" for name, value in seconds.items())
        print(f"last build's steps (s): {steps}; total {sum(seconds.values()):.1f}")


if __name__ == "__main__":
    main()
