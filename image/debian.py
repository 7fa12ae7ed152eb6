"""The Debian part of the image: which packages, which of their files, and the interpreter.

mmdebstrap resolves and downloads the packages (``--variant=extract`` into a staging directory that
keeps the .deb files; it verifies the archive's signatures). The root is then made here from the
packages the containers run and their hard dependencies, minus the few that exist only for dpkg's
maintainer scripts (``EXCLUDED``): the image has no package manager and runs no maintainer script.
Each package's files are extracted as the .deb lists them, on a merged /usr, without the paths in
``DROPPED`` (manual pages, translations, ...; each .deb's copyright file is kept). Every package's
control paragraph goes to ``/var/lib/dpkg/status.d/<package>``, where image scanners read what is
installed (as in distroless images).

The interpreter is Debian's own, relinked (``link_interpreter``): Debian's ``/usr/bin/python3.11``
links libz and libexpat, which ``cloud-cni install-shim`` refuses to copy to a node (a node may lack
them: ipamd/install_shim.py). Linked from the same package version's ``libpython3.11.a`` with the
static libexpat and libz of the same archive, it needs only libc and libm and behaves as Debian's.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tarfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

SUITE = "bookworm"
TRIPLET = "x86_64-linux-gnu"
PYTHON = "python3.11"

# What the containers run, with their hard dependencies (docs/deploy.md "The image").
ROOTS = (
    "base-files",  # /etc/os-release, by which scanners know the distribution; the directory skeleton
    "python3.11-minimal",  # the interpreter (its binary replaced by link_interpreter's)
    "libpython3.11-stdlib",  # the standard library
    "nftables",  # nft: SNAT (ipamd/datapath/linux/snat.py) and NetworkPolicy (ipamd/netpol/nft.py)
    "iptables",  # iptables-{legacy,nft}-{save,restore}: SNAT where the node's rules are iptables'
    "busybox",  # sh, cat, ls, ...: `kubectl exec` into the container (BUSYBOX_APPLETS)
    "libstdc++6",  # linked by the extension modules of grpcio and protobuf (the wheels do not bundle it)
)
# Only to link the interpreter; none of their files is in the image.
LINK_ONLY = ("libpython3.11-dev", "libexpat1-dev", "zlib1g-dev")
# Hard dependencies left out, and why: nothing in the image runs them.
EXCLUDED = {
    "dpkg": "the package manager (readline-common's `dpkg | install-info` is for its info-page trigger)",
    "tar": "dpkg's",
    "mawk": "awk for base-files' maintainer scripts",
}
# Files not extracted (prefixes of paths under the root), and why.
DROPPED = {
    "usr/share/man/": "manual pages",
    "usr/share/info/": "info pages",
    "usr/share/locale/": "message translations: the tools run in the C locale",
    "usr/share/lintian/": "Debian's packaging checks",
    "usr/share/bug/": "reportbug's scripts",
    "usr/share/doc-base/": "documentation registrations",
    f"usr/lib/{TRIPLET}/gconv/": "glibc's iconv modules: Python has its own codecs, and nothing in the image "
    "calls iconv(3)",
    f"usr/lib/{PYTHON}/pydoc_data/": "the texts of the interactive help()",
}
# /usr/share/doc keeps only each package's copyright file (the licences).
DOC = "usr/share/doc/"
# The busybox applets linked into /usr/bin (a shell and what reading logs and files takes).
BUSYBOX_APPLETS = (
    *("sh", "cat", "ls", "head", "tail", "less", "grep", "wc", "find", "du"),
    *("ps", "env", "id", "sleep", "timeout"),
)
MERGED = ("bin", "sbin", "lib", "lib64")  # directories that are links into /usr (Debian's merged /usr)

# The unprivileged user of the image's configuration (as in distroless images).
NONROOT = 65532
PASSWD = (
    "root:x:0:0:root:/root:/sbin/nologin\n"
    f"nonroot:x:{NONROOT}:{NONROOT}:nonroot:/home/nonroot:/sbin/nologin\n"
    "nobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin\n"
)
GROUP = f"root:x:0:\nnonroot:x:{NONROOT}:\nnogroup:x:65534:\n"
NSSWITCH = "passwd: files\ngroup: files\nshadow: files\nhosts: files dns\nnetworks: files\nprotocols: files\n"
NSSWITCH += "services: files\n"


class BuildError(Exception):
    """A build step failed; the message says which and why."""


@dataclass(frozen=True)
class Package:
    name: str
    version: str
    deb: Path
    control: str  # the control paragraph, as dpkg-deb prints it
    depends: tuple[tuple[str, ...], ...]  # Pre-Depends and Depends: alternatives per entry
    provides: tuple[str, ...]


def fetch(staging: Path, log: Path, env: Mapping[str, str]) -> dict[str, Package]:
    """Resolve and download ROOTS and LINK_ONLY with their dependencies; the packages by name."""
    if staging.exists():
        shutil.rmtree(staging)
    argv = [
        "mmdebstrap",
        "--variant=extract",
        "--mode=root",
        "--format=directory",
        "--skip=cleanup/apt/cache",
        f"--include={','.join(ROOTS + LINK_ONLY)}",
        SUITE,  # no mirror given: the default archive with its -updates and -security suites
        str(staging),
    ]
    with log.open("w") as out:
        done = subprocess.run(argv, stdout=out, stderr=subprocess.STDOUT, env=dict(env), check=False)
    if done.returncode != 0:
        raise BuildError(f"mmdebstrap failed (exit {done.returncode}); its log: {log}")
    return {p.name: p for p in map(_read, sorted((staging / "var/cache/apt/archives").glob("*.deb")))}


def _read(deb: Path) -> Package:
    control = _run(["dpkg-deb", "--field", str(deb)]).decode()
    fields: dict[str, str] = {}
    for line in control.splitlines():
        if line[:1] not in (" ", "\t", "") and ":" in line:
            key, _, value = line.partition(":")
            fields[key] = value.strip()
    relations = ", ".join(v for v in (fields.get("Pre-Depends"), fields.get("Depends")) if v)
    return Package(
        name=fields["Package"],
        version=fields["Version"],
        deb=deb,
        control=control if control.endswith("\n") else control + "\n",
        depends=tuple(tuple(_names(entry.split("|"))) for entry in relations.split(",") if entry.strip()),
        provides=tuple(_names(fields.get("Provides", "").split(","))),
    )


def _names(parts: Iterable[str]) -> Iterable[str]:
    for part in parts:
        name = part.strip().split(" ")[0].split("(")[0].split(":")[0]
        if name:
            yield name


def select(packages: Mapping[str, Package]) -> list[Package]:
    """ROOTS and everything they hard-depend on, except EXCLUDED; sorted by name.

    An alternative (``a | b``) is met by its first member that was downloaded and is not excluded; a
    dependency met only by excluded packages is dropped with them."""
    providers: dict[str, str] = {}
    for pkg in packages.values():
        for virtual in pkg.provides:
            providers.setdefault(virtual, pkg.name)
    chosen: set[str] = set()
    todo = list(ROOTS)
    while todo:
        name = todo.pop()
        if name in chosen:
            continue
        if name not in packages:
            raise BuildError(f"package {name} was not downloaded")
        chosen.add(name)
        for alternatives in packages[name].depends:
            for alt in alternatives:
                real = alt if alt in packages else providers.get(alt, "")
                if real and real not in EXCLUDED:
                    todo.append(real)
                    break
    return [packages[n] for n in sorted(chosen)]


def _run(argv: list[str]) -> bytes:
    done = subprocess.run(argv, capture_output=True, check=False)
    if done.returncode != 0:
        raise BuildError(f"{' '.join(argv)}: exit {done.returncode}: {done.stderr.decode(errors='replace')}")
    return done.stdout


def kept(rel: str) -> bool:
    """Whether a package's file (a path relative to the root, on the merged /usr) goes in the image."""
    if any(rel.startswith(prefix) or rel + "/" == prefix for prefix in DROPPED):
        return False
    if rel.startswith(DOC):
        parts = rel[len(DOC) :].split("/")
        return len(parts) == 1 or (len(parts) == 2 and parts[1] == "copyright")
    return True


def merged(name: str) -> str:
    """An archive member's path on the merged /usr: ``./lib/x`` -> ``usr/lib/x``."""
    rel = os.path.normpath(name.removeprefix("./")).lstrip("/")
    if rel == ".":
        return ""
    top = rel.split("/", 1)[0]
    return f"usr/{rel}" if top in MERGED else rel


def make_root(root: Path, packages: Iterable[Package]) -> None:
    """A fresh root: the merged-/usr links, then every package's kept files, its status entry."""
    if root.exists():
        shutil.rmtree(root)
    root.mkdir(mode=0o755)
    for top in MERGED:
        (root / "usr" / top).mkdir(parents=True, exist_ok=True)
        (root / top).symlink_to(f"usr/{top}")
    status = root / "var/lib/dpkg/status.d"
    status.mkdir(parents=True)
    for pkg in packages:
        _extract(pkg.deb, root)
        (status / pkg.name).write_text(pkg.control)
    configure(root)


def _extract(deb: Path, root: Path) -> None:
    proc = subprocess.Popen(["dpkg-deb", "--fsys-tarfile", str(deb)], stdout=subprocess.PIPE)
    assert proc.stdout is not None
    with tarfile.open(fileobj=proc.stdout, mode="r|") as tar:
        for member in tar:
            rel = merged(member.name)
            if not rel or not kept(rel):
                continue
            target = root / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            if member.isdir():
                if not target.is_dir():
                    target.mkdir()
            else:
                if target.is_symlink() or target.exists():
                    target.unlink()
                if member.issym():
                    target.symlink_to(member.linkname)
                elif member.islnk():
                    os.link(root / merged(member.linkname), target)
                elif member.isreg():
                    source = tar.extractfile(member)
                    assert source is not None
                    with target.open("wb") as out:
                        shutil.copyfileobj(source, out)
                else:
                    raise BuildError(f"{deb.name}: {member.name}: unexpected member type {member.type!r}")
            os.chown(target, member.uid, member.gid, follow_symlinks=False)
            if not member.issym():
                os.chmod(target, member.mode)
    if proc.wait() != 0:
        raise BuildError(f"dpkg-deb --fsys-tarfile {deb} failed")


def configure(root: Path) -> None:
    """What maintainer scripts and the base image would otherwise set up: users, links, directories."""
    etc = root / "etc"
    (etc / "passwd").write_text(PASSWD)
    (etc / "group").write_text(GROUP)
    (etc / "nsswitch.conf").write_text(NSSWITCH)
    for name in ("passwd", "group", "nsswitch.conf"):
        os.chmod(etc / name, 0o644)
    # base-files' postinst turns these into links to /run.
    for rel, link in (("var/run", "/run"), ("var/lock", "/run/lock")):
        path = root / rel
        if path.is_dir() and not path.is_symlink():
            path.rmdir()
        if not path.is_symlink():
            path.symlink_to(link)
    for rel, mode in (("tmp", 0o1777), ("root", 0o700), ("dev", 0o755), ("proc", 0o755), ("sys", 0o755)):
        (root / rel).mkdir(exist_ok=True)
        os.chmod(root / rel, mode)
    home = root / "home/nonroot"
    home.mkdir(parents=True, exist_ok=True)
    os.chown(home, NONROOT, NONROOT)
    bin_dir = root / "usr/bin"
    if not (bin_dir / "python3").is_symlink():
        (bin_dir / "python3").symlink_to(PYTHON)  # python3-minimal's link, without its tools
    for applet in BUSYBOX_APPLETS:
        if not (bin_dir / applet).exists():
            (bin_dir / applet).symlink_to("busybox")


def link_interpreter(staging: Path, root: Path, work: Path) -> Path:
    """Replace the root's ``/usr/bin/python3.11`` with one that links only libc and libm.

    The objects are the package's own (``python.o``, ``libpython3.11.a`` from libpython3.11-dev, the
    same version as the standard library in the root), with libexpat and libz linked statically
    (Debian builds pyexpat and zlib into the interpreter), and the link flags of Debian's build
    (``sysconfig`` LINKFORSHARED: the extension modules find the C API in the executable). The C
    library and start files come from the staging root (``--sysroot``): the image's glibc, not the
    build machine's. ``glibc_compat.c`` keeps two symbols at their older glibc versions, so that the
    runtime copied to nodes needs glibc 2.34 (Amazon Linux 2023), not the build's 2.36."""
    config = staging / f"usr/lib/{PYTHON}/config-3.11-{TRIPLET}"
    libdir = staging / f"usr/lib/{TRIPLET}"
    out = work / PYTHON
    _run(
        [
            "gcc",
            f"--sysroot={staging}",
            "-no-pie",  # libpython3.11.a is built without -fPIE, as Debian's interpreter is
            "-O2",
            "-o",
            str(out),
            str(config / "python.o"),
            "-Xlinker",
            "-export-dynamic",
            "-Wl,-O1",
            "-Wl,-Bsymbolic-functions",
            str(Path(__file__).with_name("glibc_compat.c")),
            str(config / f"lib{PYTHON}.a"),
            str(libdir / "libexpat.a"),
            str(libdir / "libz.a"),
            "-lm",
        ]
    )
    _run(["strip", "--strip-all", str(out)])
    target = root / f"usr/bin/{PYTHON}"
    mode = target.stat().st_mode & 0o7777
    shutil.copyfile(out, target)
    os.chmod(target, mode)
    return target
