"""What must hold before the root becomes a layer; a failed check stops the build.

- Every ELF file's DT_NEEDED libraries are in the root, on its RUNPATH or the loader's default
  directories: a pruned or left-out package would otherwise surface as a missing library at run time.
- The containers' commands run in the root, as the unprivileged user where the DaemonSet does not
  need root: the CLI, every module the daemon may load, the AWS and Azure clients made (no network
  call), nft and iptables, and ``cloud-cni install-shim`` with the plugin it installs answering
  ``VERSION`` from its copied runtime.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from image.debian import BUSYBOX_APPLETS, NONROOT, PYTHON, TRIPLET, BuildError
from image.python import in_root
from ipamd import elf

LOADER_DIRS = (f"usr/lib/{TRIPLET}", "usr/lib")  # the loader's defaults on Debian (merged /usr)

# Run by the image's interpreter as the unprivileged user: imports and client objects, no network call.
SMOKE = """
import importlib, json, os, pkgutil, sys
import ipamd, shim
failed = {}
for package in (ipamd, shim):
    for module in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
        if module.name.endswith(".__main__"):  # python -m ipamd: the daemon itself
            continue
        try:
            importlib.import_module(module.name)
        except Exception as exc:
            failed[module.name] = f"{type(exc).__name__}: {exc}"
assert not failed, failed
importlib.import_module("kubernetes.client")
from ipamd.cloud.aws.client import make_ec2_client
ec2 = make_ec2_client("us-east-1")
assert ec2.meta.service_model.service_name == "ec2", ec2.meta.service_model.service_name
import botocore.session
sts = botocore.session.get_session().create_client("sts", region_name="us-east-1")
from ipamd.cloud.azure.client import Arm, make_credential
arm = Arm(make_credential(None, "http://169.254.169.254"), "0000", endpoint="https://management.azure.com")
from kubernetes import client
client.ApiClient(client.Configuration())
pruned = ("aiohttp", "kubernetes.aio", "azure.mgmt.network", "azure.mgmt.compute")
loaded = [m for m in sys.modules if m.startswith(pruned)]
assert not loaded, loaded
print(json.dumps({"modules": len(sys.modules), "uid": os.getuid()}))
"""


def elf_libraries(root: Path) -> None:
    """Every ELF file's needed libraries resolve inside the root."""
    missing: dict[str, list[str]] = {}
    for path in sorted(root.rglob("*")):
        if not path.is_file() or path.is_symlink():
            continue
        with path.open("rb") as f:
            if f.read(4) != elf.MAGIC:
                continue
        data = path.read_bytes()
        try:
            info = elf.dynamic(data)
        except elf.ElfError:
            continue  # not a dynamic object (static archive members, firmware, ...)
        origin = "/" + str(path.parent.relative_to(root))
        dirs = [d.replace("$ORIGIN", origin).replace("${ORIGIN}", origin) for d in info.runpath]
        dirs += ["/" + d for d in LOADER_DIRS]
        for lib in info.needed:
            if not any((root / d.lstrip("/") / lib).exists() for d in dirs):
                missing.setdefault(lib, []).append(str(path.relative_to(root)))
    if missing:
        lines = [f"{lib} (needed by {', '.join(users[:3])})" for lib, users in sorted(missing.items())]
        raise BuildError("libraries missing from the image: " + "; ".join(lines))


def commands(root: Path) -> dict[str, object]:
    """Run the containers' commands in the root; what they reported."""
    out = in_root(root, [PYTHON, "-c", SMOKE], user=NONROOT, capture=True).stdout.decode()
    smoke = json.loads(out.strip().splitlines()[-1])
    if smoke["uid"] != NONROOT:
        raise BuildError(f"the smoke check ran as uid {smoke['uid']}")
    help_text = in_root(root, ["cloud-cni", "--help"], user=NONROOT, capture=True).stdout.decode()
    if "install-shim" not in help_text:
        raise BuildError("cloud-cni --help does not list install-shim")
    for argv in (
        ["nft", "--version"],
        ["iptables-legacy-save", "--version"],
        ["iptables-nft-save", "--version"],
    ):
        in_root(root, argv, user=NONROOT, capture=True)
    applets = set(in_root(root, ["busybox", "--list"], capture=True).stdout.decode().split())
    if not set(BUSYBOX_APPLETS) <= applets:
        raise BuildError(f"busybox lacks {sorted(set(BUSYBOX_APPLETS) - applets)}")
    return {"smoke": smoke, "install_shim": install_shim(root)}


def install_shim(root: Path) -> str:
    """``cloud-cni install-shim`` into a scratch directory of the root, as the install-cni init container
    runs it (root), then the installed plugin's ``VERSION`` through its own runtime. What they wrote
    (the scratch directory, the plugin's log: shim/cni.py DEFAULT_LOG_FILE) is removed after."""
    scratch = "/tmp/install-shim-check"
    leftovers = [root / scratch.lstrip("/"), root / "var/log/cloud-cni"]
    if any(path.exists() for path in leftovers):
        raise BuildError(f"the root already has one of {[str(p) for p in leftovers]}")
    for rel in ("bin", "rt"):
        (leftovers[0] / rel).mkdir(parents=True)
    try:
        argv = ["cloud-cni", "install-shim", f"--cni-bin-dir={scratch}/bin"]
        argv += [f"--runtime-dir={scratch}/rt", f"--host-runtime-dir={scratch}/rt"]
        done = in_root(root, argv, capture=True)
        plugin = in_root(
            root,
            [f"{scratch}/bin/cloud-cni"],
            env={"CNI_COMMAND": "VERSION"},
            capture=True,
            stdin=b'{"cniVersion": "1.0.0"}',
        )
        versions = json.loads(plugin.stdout)["supportedVersions"]
        if "1.0.0" not in versions:
            raise BuildError(f"the installed plugin answers VERSION with {versions}")
        return done.stdout.decode().strip()
    finally:
        for path in leftovers:
            if path.exists():
                shutil.rmtree(path)
