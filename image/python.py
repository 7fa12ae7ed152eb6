"""The Python part of the image: the wheel lock, the install into the root, pruning, bytecode.

The packages are cloud-cni's run-time dependencies (pyproject.toml ``[project] dependencies``, no
extra), pinned with their wheel's sha256 in ``image/requirements.txt`` (``lock``: resolved for
CPython 3.11 on manylinux x86-64, at the versions of the development virtualenv when it has them).
They are installed by the image's own interpreter, chrooted into the root, with pip from the
virtualenv (``/usr/local``, Debian's scheme for packages that are not Debian's), from wheels only.

Then what the daemon and the CLI cannot load goes (``CUT``, ``PRUNED``: each with its reason;
docs/deploy.md lists them with their sizes), and every module is compiled once, serially, to
unchecked-hash bytecode: the root filesystem is read-only in the DaemonSet and never changes, so
nothing is compiled at run time and no source is even stat'ed, and the same sources give the same
bytes. The third-party modules keep only that bytecode (``compile_all``); the extension modules are
stripped of what only a debugger reads.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import tomllib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import pip as pip_module
from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from image.debian import PYTHON, BuildError

SITE = f"usr/local/lib/{PYTHON}/dist-packages"  # where pip installs for Debian's interpreter
PROJECT = "cloud-cni"
# The wheels that fit the image: CPython 3.11, manylinux up to bookworm's glibc 2.36, x86-64.
PLATFORM_ARGS = (
    *[f"--platform=manylinux_2_{minor}_x86_64" for minor in range(36, 4, -1)],
    "--platform=manylinux2014_x86_64",
    "--platform=manylinux2010_x86_64",
    "--platform=manylinux1_x86_64",
    "--python-version=3.11",
    "--implementation=cp",
    "--abi=cp311",
    "--only-binary=:all:",
)
# The image's marker environment, for the requirements of the installed distributions.
MARKERS: dict[str, str] = {
    **{k: str(v) for k, v in default_environment().items()},
    "python_version": "3.11",
    "python_full_version": "3.11.2",
    "sys_platform": "linux",
    "platform_system": "Linux",
    "platform_machine": "x86_64",
    "os_name": "posix",
    "implementation_name": "cpython",
    "platform_python_implementation": "CPython",
    "extra": "",
}

# Requirements the image does not honour: the daemon cannot load the required distribution, which
# goes with every distribution that only it needed.
CUT = {
    (PROJECT, "azure-mgmt-network"): "ipamd/cloud/azure/client.py sends its ARM calls through "
    "azure-mgmt-core's pipeline and imports neither generated client (only tests/ do)",
    (PROJECT, "azure-mgmt-compute"): "as azure-mgmt-network",
    ("kubernetes", "aiohttp"): "only kubernetes.aio (the asyncio client, pruned below) imports it; "
    "ipamd/k8s uses the blocking ApiClient",
    ("kubernetes", "aiohttp-retry"): "as aiohttp",
}
# Requirements pyproject.toml does not declare but the code imports, which the cuts must keep.
UNDECLARED = {
    (PROJECT, "azure-mgmt-core"): "ipamd/cloud/azure/client.py imports azure.mgmt.core, which pyproject.toml "
    "brings in only through azure-mgmt-network and azure-mgmt-compute",
}
# Paths under site-packages removed, and why. A directory ends in "/"; ``KEEP`` names what stays in it.
PRUNED = {
    "kubernetes/aio/": "the asyncio client: nothing imports it (ipamd/k8s/api.py uses kubernetes.client)",
    "botocore/data/": "the models of every AWS service but EC2 (ipamd/cloud/aws/client.py) and STS "
    "(the web-identity credentials of IRSA); the files at its top (endpoints, partitions, defaults) stay",
    "boto3/data/": "boto3's resource models: the daemon makes clients, never resources",
    "websocket/tests/": "websocket-client's own tests, shipped in its package",
}
KEEP = {
    "botocore/data/": ("ec2", "sts"),
    "boto3/data/": (),
}
# Packages emptied but for their __init__.py, and why: ``kubernetes.client`` names its generated APIs
# and models in an export table and imports one only when it is first used (its module ``__getattr__``),
# so the package and ``kubernetes.client.models`` still import without them.
EMPTIED = {
    "kubernetes/client/api/": "the generated API classes (CoreV1Api, ...): ipamd/k8s/api.py sends every "
    "request through ApiClient.param_serialize and call_api and names none of them",
    "kubernetes/client/models/": "the generated pydantic models (V1Node, ...): ipamd/k8s reads the JSON "
    "answers itself and never has ApiClient deserialize one into a model",
}
# Into /usr/local, Debian's place for packages that are not Debian's: its EXTERNALLY-MANAGED marker
# guards Debian's own packages against pip, and the image has no apt to conflict with.
PIP_ENV = {"PYTHONPATH": "/tmp/build/pip", "PIP_ROOT_USER_ACTION": "ignore"}  # the root's user is root
INSTALL = ("--no-deps", "--no-compile", "--no-warn-script-location", "--quiet", "--break-system-packages")
PRUNED_SUFFIXES = {".pyi": "type stubs: read by type checkers, never by the interpreter"}


def requirements(project: Path) -> list[str]:
    with (project / "pyproject.toml").open("rb") as f:
        return list(tomllib.load(f)["project"]["dependencies"])


def lock(project: Path, out: Path, pip: Sequence[str]) -> None:
    """Resolve the project's requirements to one wheel each and write them, pinned, with hashes."""
    installed = {}
    for dist in metadata.distributions():
        name = canonicalize_name(dist.metadata["Name"] or "")
        if name and name != PROJECT:
            installed[name] = dist.version
    with tempfile.TemporaryDirectory() as tmp:
        reqs = Path(tmp, "requirements.txt")
        reqs.write_text("\n".join(requirements(project)) + "\n")
        constraints = Path(tmp, "constraints.txt")  # the virtualenv's versions: what the tests ran
        constraints.write_text("".join(f"{n}=={v}\n" for n, v in sorted(installed.items())))
        report = Path(tmp, "report.json")
        _pip(
            pip,
            "install",
            "--dry-run",
            "--ignore-installed",
            f"--target={tmp}/target",
            *PLATFORM_ARGS,
            f"--constraint={constraints}",
            f"--report={report}",
            f"--requirement={reqs}",
        )
        chosen = json.loads(report.read_text())["install"]
    lines = []
    for item in chosen:
        name = canonicalize_name(item["metadata"]["name"])
        sha = item["download_info"]["archive_info"]["hashes"]["sha256"]
        lines.append(f"{name}=={item['metadata']['version']} --hash=sha256:{sha}\n")
    out.write_text(
        "# The image's Python packages: cloud-cni's run-time dependencies (pyproject.toml [project]\n"
        "# dependencies), one wheel each for CPython 3.11 on manylinux x86-64, at the versions of the\n"
        "# development virtualenv where it has them. Regenerate: ./dev image --lock\n"
        + "".join(sorted(lines))
    )


def _pip(pip: Sequence[str], *args: str) -> None:
    # -qq: errors only (a pip configured with extra local indexes warns about each of them per package)
    done = subprocess.run([*pip, *args, "-qq", "--disable-pip-version-check"], check=False)
    if done.returncode != 0:
        raise BuildError(f"pip {args[0]} failed (exit {done.returncode})")


def wheels(project: Path, lockfile: Path, dest: Path, pip: Sequence[str]) -> Path:
    """The locked wheels (downloaded once, checked against their hashes) and the project's own wheel,
    built from the files git tracks or would track (not build/, not __pycache__); the project's."""
    dest.mkdir(parents=True, exist_ok=True)
    _pip(pip, "download", "--no-deps", *PLATFORM_ARGS, f"--dest={dest}", f"--requirement={lockfile}")
    for old in dest.glob("cloud_cni-*.whl"):
        old.unlink()
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard", "--deduplicate"],
        cwd=project,
        capture_output=True,
        check=True,
    ).stdout
    with tempfile.TemporaryDirectory() as tmp:
        source = Path(tmp, "src")
        for rel in sorted(p for p in listed.decode().split("\0") if p):
            wanted = rel.split("/")[0] in ("ipamd", "shim", "bin") or rel in ("pyproject.toml", "README.md")
            if wanted and (project / rel).is_file():  # a deleted file is listed until committed
                (source / rel).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(project / rel, source / rel)
        _pip(pip, "wheel", "--no-deps", "--no-build-isolation", f"--wheel-dir={dest}", str(source))
    (built,) = dest.glob("cloud_cni-*.whl")
    return built


def locked(lockfile: Path) -> list[str]:
    """``name==version`` of every line of the lock."""
    return [line.split()[0] for line in lockfile.read_text().splitlines() if line and line[0] != "#"]


def install(root: Path, wheel_dir: Path, pins: Iterable[str], project_wheel: Path) -> None:
    """pip, run by the root's interpreter in the root, installs the pins and the project; then checks
    that they satisfy each other's requirements (a lock older than pyproject.toml fails here)."""
    pip_package = Path(pip_module.__file__ or "").resolve().parent  # the virtualenv's pip, alone
    names = [*pins, f"{PROJECT}=={project_wheel.name.split('-')[1]}"]  # cloud_cni-<version>-py3-...
    binds = {wheel_dir: "/tmp/build/wheels", pip_package: "/tmp/build/pip/pip"}
    common = ["--disable-pip-version-check", "--no-cache-dir"]
    in_root(
        root,
        [
            PYTHON,
            "-m",
            "pip",
            "install",
            *common,
            "--no-index",
            "--find-links=/tmp/build/wheels",
            *INSTALL,
            *names,
        ],
        binds=binds,
        env=PIP_ENV,
    )
    in_root(root, [PYTHON, "-m", "pip", "check", *common], binds=binds, env=PIP_ENV)


def in_root(
    root: Path,
    argv: Sequence[str],
    *,
    binds: Mapping[Path, str] | None = None,
    env: Mapping[str, str] | None = None,
    user: int = 0,
    capture: bool = False,
    stdin: bytes = b"",
) -> subprocess.CompletedProcess[bytes]:
    """Run ``argv`` chrooted into ``root`` as ``user``, in a mount namespace of its own: /dev, /proc
    and ``binds`` (read-only, at their paths in the root) are mounted there and vanish with it. The
    environment is PATH, HOME, PYTHONDONTWRITEBYTECODE (the interpreter's imports leave no bytecode
    behind: ``compile_all`` writes it all) and ``env``; stdout and stderr are returned with ``capture``."""
    places = sorted((binds or {}).items(), key=lambda bind: bind[1])
    variables = {"R": str(root)}
    script = ['mount --rbind /dev "$R/dev"', 'mount -t proc proc "$R/proc"']
    made: list[Path] = []
    for i, (source, target) in enumerate(places):
        path = root / target.lstrip("/")
        made += [p for p in (path, *path.parents) if p.is_relative_to(root) and not p.exists()]
        path.mkdir(parents=True, exist_ok=True)
        variables[f"B{i}"] = str(source)
        script.append(f'mount --bind "$B{i}" "$R{target}"')
        script.append(f'mount -o remount,bind,ro "$R{target}"')
    script.append(f'exec chroot --userspec={user}:{user} "$R" env -i "$@"')
    home = "/root" if user == 0 else "/home/nonroot"
    base = {
        "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin",
        "HOME": home,
        "PYTHONDONTWRITEBYTECODE": "1",
    }
    base.update(env or {})
    args = [f"{k}={v}" for k, v in base.items()] + list(argv)
    try:
        done = subprocess.run(
            ["unshare", "--mount", "--propagation=private", "sh", "-ec", "\n".join(script), "sh", *args],
            env={**os.environ, **variables},
            input=stdin,
            capture_output=capture,
            check=False,
        )
    finally:
        for path in sorted(set(made), key=lambda p: len(p.parts), reverse=True):  # the mount points made
            path.rmdir()
    if done.returncode != 0:
        detail = done.stderr.decode(errors="replace")[-2000:] if capture else ""
        raise BuildError(f"in the root: {' '.join(argv)}: exit {done.returncode} {detail}".rstrip())
    return done


@dataclass(frozen=True)
class Removed:
    what: str  # a distribution (name==version) or a path under site-packages
    why: str
    size: int  # bytes


def prune(root: Path) -> list[Removed]:
    """Remove ``CUT`` distributions (with what only they needed), ``PRUNED`` paths, what ``EMPTIED``
    packages hold and ``PRUNED_SUFFIXES``."""
    site = root / SITE
    removed = []
    for dist, why in _unreachable(site).items():
        removed.append(Removed(dist.name, why, _remove_dist(site, dist)))
    for prefix, why in PRUNED.items():
        top = site / prefix
        keep = KEEP.get(prefix)
        if keep is None:
            removed.append(Removed(prefix, why, _size(top)))
            shutil.rmtree(top)
            continue
        size = 0
        for child in sorted(top.iterdir()):
            if child.is_dir() and child.name not in keep:
                size += _size(child)
                shutil.rmtree(child)
        but = f" but {', '.join(keep)}" if keep else ""
        removed.append(Removed(f"{prefix}* (every directory{but})", why, size))
    for prefix, why in EMPTIED.items():
        top = site / prefix
        if not (top / "__init__.py").is_file():
            raise BuildError(f"{prefix}__init__.py is not in the installed packages: look at EMPTIED again")
        size = 0
        for child in sorted(top.iterdir()):
            if child.name != "__init__.py":
                size += _size(child)
                if child.is_dir():
                    shutil.rmtree(child)
                else:
                    child.unlink()
        removed.append(Removed(f"{prefix}* (but __init__.py)", why, size))
    for suffix, why in PRUNED_SUFFIXES.items():
        stubs = sorted(site.rglob(f"*{suffix}"))
        removed.append(Removed(f"*{suffix}", why, sum(p.stat().st_size for p in stubs)))
        for path in stubs:
            path.unlink()
    removed.append(Removed("*.so symbol tables", STRIP_WHY, _strip(sorted(site.rglob("*.so")))))
    return removed


STRIP_WHY = (
    "strip --strip-unneeded: the static symbol table and debug sections some wheels ship (PyYAML's _yaml, "
    "cryptography's _rust); the loader reads only the dynamic ones"
)


def _strip(libraries: Sequence[Path]) -> int:
    """Strip ``libraries`` in place; the bytes saved."""
    before = sum(p.stat().st_size for p in libraries)
    if libraries:
        done = subprocess.run(["strip", "--strip-unneeded", *map(str, libraries)], check=False)
        if done.returncode != 0:
            raise BuildError(f"strip failed (exit {done.returncode})")
    return before - sum(p.stat().st_size for p in libraries)


@dataclass(frozen=True)
class _Dist:
    name: str  # canonical
    version: str
    info: Path  # the .dist-info directory
    requires: tuple[str, ...]  # canonical names, markers evaluated for the image


def _dists(site: Path) -> dict[str, _Dist]:
    found: dict[str, _Dist] = {}
    for info in sorted(site.glob("*.dist-info")):
        meta = metadata.PathDistribution(info).metadata
        requires = []
        for raw in meta.get_all("Requires-Dist") or []:
            req = Requirement(raw)
            if req.marker is None or req.marker.evaluate(MARKERS):
                requires.append(canonicalize_name(req.name))
        name = canonicalize_name(meta["Name"])
        found[name] = _Dist(name, meta["Version"], info, tuple(requires))
    return found


def _unreachable(site: Path) -> dict[_Dist, str]:
    """The installed distributions the project no longer reaches once ``CUT`` is applied, each with
    the reason of the cut that orphaned it."""
    dists = _dists(site)

    def reach(cut: Iterable[tuple[str, str]]) -> set[str]:
        cuts = set(cut)
        seen: set[str] = set()
        todo = [PROJECT]
        while todo:
            name = todo.pop()
            if name in seen or name not in dists:
                continue
            seen.add(name)
            todo.extend(r for r in dists[name].requires if (name, r) not in cuts)
            todo.extend(r for (n, r) in UNDECLARED if n == name)
        return seen

    kept = reach(CUT)
    gone: dict[_Dist, str] = {}
    for edge, why in CUT.items():  # attribute each orphan to the first cut that orphans it alone
        for name in sorted(reach(()) - reach([edge]) - kept):
            gone.setdefault(dists[name], why if name == edge[1] else f"needed only by {edge[1]} ({why})")
    for name in sorted(set(dists) - kept):
        gone.setdefault(dists[name], "needed only by what is cut")
    return gone


def _remove_dist(site: Path, dist: _Dist) -> int:
    size = 0
    record = (dist.info / "RECORD").read_text().splitlines()
    dirs = set()
    for line in record:
        rel = line.rsplit(",", 2)[0]
        path = (site / rel).resolve()
        if path.is_file() or path.is_symlink():
            size += path.lstat().st_size
            path.unlink()
            dirs.add(path.parent)
    for leaf in sorted(dirs, key=lambda d: len(d.parts), reverse=True):
        for directory in (leaf, *leaf.parents):  # the directories it leaves empty
            if directory == site or not directory.is_dir() or any(directory.iterdir()):
                break
            directory.rmdir()
    if dist.info.exists():
        size += _size(dist.info)
        shutil.rmtree(dist.info)
    return size


def _size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.lstat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())


# Our own packages keep their sources beside their bytecode: their tracebacks show the lines. Every
# other module, of site-packages and of the standard library, is sourceless (below); none reads its
# own source at run time (pydantic's _docs_extraction does, only for use_attribute_docstrings, which
# ipamd does not set; inspect.getsource is called by no module the daemon loads).
WITH_SOURCE = ("ipamd", "shim")
# Sourceless packages compiled as ``python -OO`` would (no docstrings, no asserts): the legacy .pyc is
# imported at any optimization level. Only where it was checked that nothing reads a docstring and no
# assert does more than guard: the kubernetes client's generated models and APIs are mostly docstrings.
WITHOUT_DOCSTRINGS = ("kubernetes",)


def compile_all(root: Path) -> int:
    """Every module of the standard library and of site-packages to unchecked-hash bytecode, serially
    in a sorted order, with a fixed hash seed: marshal's output depends on what the compiling process
    did before, and the order of a frozenset constant on the string hashes.

    Every module but ``WITH_SOURCE``'s becomes sourceless: it is compiled to ``<module>.pyc`` in place
    of its ``.py`` (the legacy layout, which the interpreter imports without a source), and the ``.py``
    goes, which halves what they take. ``cloud-cni install-shim`` copies the standard library's
    ``.pyc`` the shim loads as they are. ``WITHOUT_DOCSTRINGS`` are compiled at optimization level 2.
    The bytes of the removed sources."""
    stdlib, site = root / "usr/lib" / PYTHON, root / SITE
    for base in (stdlib, site):
        for cache in base.rglob("__pycache__"):
            shutil.rmtree(cache)
    argv = [PYTHON, "-m", "compileall", "-q", "-f", "-j1", "--invalidation-mode=unchecked-hash", "-b"]
    env = {"PYTHONHASHSEED": "0"}
    in_root(root, [*argv, f"/usr/lib/{PYTHON}"], env=env)
    special = "|".join((*WITH_SOURCE, *WITHOUT_DOCSTRINGS))
    in_root(root, [*argv, "-x", f"^/{SITE}/({special})/", f"/{SITE}"], env=env)
    in_root(root, [*argv, "-o", "2", *(f"/{SITE}/{name}" for name in WITHOUT_DOCSTRINGS)], env=env)
    keep = [a for a in argv if a != "-b"]  # into __pycache__, beside the sources
    in_root(root, [*keep, *(f"/{SITE}/{name}" for name in WITH_SOURCE)], env=env)
    removed = 0
    for base in (stdlib, site):
        for source in sorted(base.rglob("*.py")):
            if base == site and source.relative_to(site).parts[0] in WITH_SOURCE:
                continue
            if not source.with_suffix(".pyc").is_file():
                raise BuildError(f"{source.relative_to(root)} was not compiled")
            removed += source.stat().st_size
            source.unlink()
    return removed
