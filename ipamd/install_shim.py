"""``cloud-cni install-shim``: put a self-contained CNI plugin on a node that has no Python.

The init container copies a private runtime for the shim out of its own image: the real interpreter
binary, its libpython when it links one, and only the standard-library files the shim loads under
``-I -S`` (found by importing ``shim.main`` in a child of the same interpreter), with the shim package
and precompiled bytecode. Everything in it needs only glibc; nothing comes from site-packages.

Layout, under ``runtime_dir`` (the node's ``host_runtime_dir``)::

    <version>-<hash>/                    one immutable tree per content, e.g. 3.11.7-4f0c2a9d81b3
        bin/python3.X                    the interpreter (its RUNPATH may be rewritten: below)
        lib/libpython3.X.so.1.0          when the interpreter links it
        lib/python3.X/{os.py,encodings/...,lib-dynload/...}   (``sys.platlibdir`` for ``lib``; a
                                         sourceless standard library's .pyc files, as they are)
        lib/site/shim/...                the plugin, with __pycache__
        cloud-cni.py                     the entry: sys.path, then shim.main.main()
    <cni_bin_dir>/cloud-cni              what the runtime execs: a shebang script or a /bin/sh wrapper

The plugin is a shebang script, exec'd by the kernel, when the copied interpreter finds its libpython
beside itself: it links none, its RUNPATH already is ``$ORIGIN/../lib`` (the official python images),
or its RUNPATH string is long enough to be rewritten to that in the copy, in place (a Python built
into its own prefix, such as pyenv's ``<prefix>/lib``). Otherwise it is a ``/bin/sh`` wrapper that sets
``LD_LIBRARY_PATH``: a shell more per CNI call (``_plugin_kind``).

Upgrades are atomic: a tree is built under ``.new-<pid>``, checked by running the interpreter in it
as the plugin file will (the same ``#!`` line or wrapper, an empty environment),
fsynced, and renamed into place; a tree is never modified once it has its name. The switch is the
rename of ``cloud-cni`` over the old plugin file, so an exec sees the old plugin and its tree or the new
one and its tree. The previous tree is kept (a plugin exec'd just before the switch may still be
starting in it); older ones are removed.

On Windows (``sys.platform == "win32"``) the plugin is ``<cni_bin_dir>\\cloud-cni.exe``, distlib's
console launcher followed by a shebang line and a zip archive, and the tree has the layout of a
Windows installation (python.exe, python3X.dll, Lib\\, DLLs\\): the section at the end of this
module, and docs/shim.md "On Windows: cloud-cni.exe and its runtime".
"""

from __future__ import annotations

import ast
import contextlib
import hashlib
import io
import os
import py_compile
import re
import shlex
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path, PurePath, PurePosixPath, PureWindowsPath
from typing import Any

from ipamd import durable, elf
from ipamd.errors import InstallError

PLUGIN = "cloud-cni"
FORMAT = "cloud-cni-runtime/2"  # part of every tree's hash: a layout change makes new trees
TAG = re.compile(r"^[0-9][0-9a-z.]*-[0-9a-f]{12}$")
# What a glibc node always has. Anything else (libz, libssl, libffi...) a node may lack.
GLIBC = re.compile(
    r"^(?:lib(?:c|m|pthread|dl|rt|util|resolv)\.so\.\d+|ld-linux[\w.-]*\.so\.\d+|ld64\.so\.\d+)$"
)
SAFE_PATH = re.compile(r"^(?:/[A-Za-z0-9._+-]+)+$")  # goes into a shebang line and a shell script
SHEBANG_MAX = 127  # bytes the kernel reads of a "#!" line before Linux 5.1 (256 since)
# Python flags for every exec: isolated (no environment, no user site, no script dir on sys.path),
# no site, and UTF-8 mode, so that the node's locale never asks for a codec the tree does not ship.
FLAGS = ("-I", "-S", "-X", "utf8")
# Where a copied interpreter finds lib/libpython3.X.so.1.0: the tree's lib/, relative to its bin/.
ORIGIN_LIB = "$ORIGIN/../lib"
_SHEBANG_FLAGS = "-ISXutf8"  # Linux passes one "#!" argument: FLAGS, combined

# Run by the interpreter being copied (and then by the copy): import the shim, then report what got
# loaded from files, where the interpreter thinks its prefix is, and which libpython it mapped.
# It imports nothing before the snapshot of sys.modules, and nothing but builtins after it.
_PROBE = r"""
import sys
sys.dont_write_bytecode = True
sys.path.insert(0, sys.argv[1])
import shim.main
loaded = []
for name, module in list(sys.modules.items()):
    origin = getattr(getattr(module, "__spec__", None), "origin", None)
    if origin not in (None, "built-in", "frozen"):
        loaded.append((name, origin))
with open("/proc/self/maps") as maps:
    fields = [line.split(None, 5) for line in maps]
libpython = sorted({f[5].strip() for f in fields if len(f) == 6 and "/libpython" in f[5]})
stdlib = sys.modules["encodings"].__spec__.origin.rpartition("/")[0].rpartition("/")[0]
print(repr({
    "loaded": sorted(loaded),
    "prefix": sys.prefix,
    "exec_prefix": sys.exec_prefix,
    "stdlib": stdlib,
    "dynload": [p for p in sys.path if p.endswith("/lib-dynload")],
    "libpython": libpython,
}))
"""

_ENTRY = """\
import sys

sys.path.insert(0, {site!r})
from shim.main import main

sys.exit(main())
"""


@dataclass(frozen=True)
class Installed:
    plugin: Path  # <cni_bin_dir>/cloud-cni (Windows: cloud-cni.exe)
    tree: Path  # the runtime tree it runs, under runtime_dir
    host_tree: PurePath  # the same tree as the node sees it (PureWindowsPath on Windows)
    interpreter: Path
    wrapper: str  # "shebang" or "sh"; "exe" on Windows (distlib's launcher)
    relocated: bool  # the copied interpreter's RUNPATH was rewritten to ORIGIN_LIB
    python: str  # e.g. 3.11.7
    size: int  # bytes in the tree
    files: int
    glibc: str  # oldest glibc the tree runs on, e.g. "2.34"; "" on Windows
    reused: bool  # the tree was already there, complete
    removed: tuple[str, ...]  # older trees deleted
    conflist: Path | None


@dataclass(frozen=True)
class _Python:
    executable: Path  # the real binary, symlinks resolved
    version: str  # 3.11
    full_version: str  # 3.11.7
    libpython: Path | None
    soname: str | None
    runs_from_origin: bool  # finds libpython in <its dir>/../lib without help
    relocatable: bool  # its copy can be made to: RUNPATH rewritten in place to ORIGIN_LIB


def _base_executable() -> Path:
    """The interpreter itself, not a venv's (on Windows a venv's python.exe is a redirector)."""
    return Path(os.path.realpath(getattr(sys, "_base_executable", None) or sys.executable))


def _full_version() -> str:
    v = sys.version_info
    return f"{v.major}.{v.minor}.{v.micro}" + (
        "" if v.releaselevel == "final" else f"{v.releaselevel[0]}{v.serial}"
    )


def _this_python() -> _Python:
    exe = _base_executable()
    data = exe.read_bytes()
    if not data.startswith(elf.MAGIC):
        raise InstallError(f"{exe} is not an ELF binary (a wrapper script?): run with the real interpreter")
    try:
        dynamic = elf.dynamic(data)
    except elf.ElfError as exc:
        raise InstallError(f"cannot read the interpreter {exe}: {exc}") from None
    soname = next((n for n in dynamic.needed if n.startswith("libpython")), None)
    v = sys.version_info
    full = _full_version()
    origin = {p.replace("${ORIGIN}", "$ORIGIN").rstrip("/") for p in dynamic.runpath}
    return _Python(
        executable=exe,
        version=f"{v.major}.{v.minor}",
        full_version=full,
        libpython=_find_libpython(soname) if soname else None,
        soname=soname,
        runs_from_origin=soname is None or ORIGIN_LIB in origin,
        relocatable=soname is not None and elf.rewrite_search_path(data, ORIGIN_LIB.encode()) is not None,
    )


def _find_libpython(soname: str) -> Path:
    """The libpython this process runs on: from its memory map, else where sysconfig says it is.

    The interpreter's DT_NEEDED says whether it links libpython at all: sysconfig alone can claim
    a shared build for an interpreter that has libpython built in (Debian's /usr/bin/python3).
    """
    try:
        with open("/proc/self/maps") as maps:
            fields = [line.split(None, 5) for line in maps]
    except OSError:
        fields = []
    mapped = {f[5].strip() for f in fields if len(f) == 6}
    for path in sorted(mapped):
        if PurePosixPath(path).name == soname and os.path.isfile(path):
            return Path(path)
    libdir = sysconfig.get_config_var("LIBDIR") or ""
    for name in (soname, sysconfig.get_config_var("INSTSONAME"), sysconfig.get_config_var("LDLIBRARY")):
        if name and os.path.isfile(os.path.join(libdir, name)):
            return Path(os.path.realpath(os.path.join(libdir, name)))
    raise InstallError(f"the interpreter links {soname}, which is neither mapped nor in LIBDIR {libdir!r}")


@dataclass(frozen=True)
class _Report:
    """What ``_PROBE`` saw in one interpreter."""

    loaded: tuple[tuple[str, str], ...]  # (module, file) for every module loaded from a file
    prefix: str
    exec_prefix: str
    stdlib: str
    dynload: tuple[str, ...]
    libpython: tuple[str, ...]  # mapped libpython files


def _probe(python: Path, site: Path) -> _Report:
    """Run ``_PROBE`` in the interpreter being copied, with the loader environment this process has
    (an image may point the loader at its libpython with ``LD_LIBRARY_PATH``)."""
    env = {k: v for k, v in os.environ.items() if k == "LD_LIBRARY_PATH"}
    return _run_probe([str(python), *FLAGS, "-B", "-c", _PROBE, str(site)], env, str(python))


def _run_probe(argv: list[str], env: dict[str, str], who: str) -> _Report:
    done = subprocess.run(argv, env=env, capture_output=True, timeout=60, check=False)
    if done.returncode != 0:
        raise InstallError(
            f"{who} cannot import shim.main under -I -S (exit {done.returncode}):\n"
            f"{done.stderr.decode(errors='replace')}"
        )
    lines = done.stdout.decode(errors="replace").splitlines()
    try:  # the last line: anything the shim prints when imported comes before it
        raw: Any = ast.literal_eval(lines[-1])
    except (IndexError, ValueError, SyntaxError):
        raise InstallError(f"{who}: unexpected output from the import probe: {lines[-3:]}") from None
    return _Report(
        loaded=tuple((str(name), str(origin)) for name, origin in raw["loaded"]),
        prefix=str(raw["prefix"]),
        exec_prefix=str(raw["exec_prefix"]),
        stdlib=str(raw["stdlib"]),
        dynload=tuple(str(p) for p in raw["dynload"]),
        libpython=tuple(str(p) for p in raw["libpython"]),
    )


def _under(path: str, root: str) -> bool:
    return PurePosixPath(path).is_relative_to(root)


# O_BINARY: Windows opens in text mode without it, and write() would turn every \n into \r\n.
_O_NEW = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0)


class _Tree:
    """A runtime tree being built: every file written once, its digest kept for the tree's name.

    ``sync``: fsync each file as it is written (Windows, where a file opened read-only cannot be
    fsync'd later); otherwise ``_sync_tree`` does it in one pass."""

    def __init__(self, root: Path, *, sync: bool = False) -> None:
        self.root = root
        self.sync = sync
        self.digests: dict[str, str] = {}

    def put(self, rel: str, data: bytes, mode: int = 0o644) -> Path:
        path = self.root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, _O_NEW, mode)
        try:
            if hasattr(os, "fchmod"):  # not on Windows (before 3.13), where modes mean little
                os.fchmod(fd, mode)  # exact, whatever the umask
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            if self.sync:
                os.fsync(fd)
        finally:
            os.close(fd)
        self.digests[rel] = hashlib.sha256(data).hexdigest()
        return path

    def copy(self, rel: str, source: Path, runpath: str | None = None) -> Path:
        """Copy ``source`` to ``rel``; an ELF file cut to its loadable image, with its library search
        path rewritten to ``runpath`` when given (the source is only read)."""
        data = source.read_bytes()
        if not data.startswith(elf.MAGIC):
            return self.put(rel, data)
        try:  # the interpreter, libpython, extension modules
            image = elf.loadable_image(data)
        except elf.ElfError as exc:
            raise InstallError(f"cannot read {source}: {exc}") from None
        del data  # one library in memory at a time: the init container's limit is small
        if runpath is not None:
            patched = elf.rewrite_search_path(image, runpath.encode())
            if patched is None:
                raise InstallError(f"cannot rewrite the library search path of {source} to {runpath}")
            image = patched
        return self.put(rel, image, 0o755)

    def name(self, version: str, *salt: str) -> str:
        h = hashlib.sha256(
            "\n".join([FORMAT, *salt, *(f"{k} {v}" for k, v in sorted(self.digests.items()))]).encode()
        )
        return f"{version}-{h.hexdigest()[:12]}"


def _shim_source(shim_dir: Path | None) -> Path:
    if shim_dir is not None:
        return shim_dir
    import shim

    return Path(shim.__path__[0])


def _build(tree: _Tree, python: _Python, shim_dir: Path, relocate: bool) -> _Report:
    """Copy the shim, then the interpreter and the stdlib files the shim loads, into ``tree``; with
    ``relocate``, the interpreter's RUNPATH becomes ``ORIGIN_LIB`` in the copy."""
    for source in sorted(shim_dir.rglob("*.py")):
        relative = source.relative_to(shim_dir)
        if "__pycache__" not in relative.parts:
            tree.put(f"lib/site/shim/{relative}", source.read_bytes())
    site = str(tree.root / "lib/site")
    found = _probe(python.executable, tree.root / "lib/site")
    stdlib, dynload = found.stdlib, found.dynload
    if len(dynload) != 1:
        raise InstallError(f"expected one lib-dynload directory on sys.path, found {list(dynload)}")
    libdir = f"{sys.platlibdir}/python{python.version}"
    tree.copy(f"bin/python{python.version}", python.executable, ORIGIN_LIB if relocate else None)
    if python.libpython is not None:
        tree.copy(f"lib/{python.soname}", python.libpython)
    # getpath's landmark for the prefix: os.py, or os.pyc in a sourceless standard library (the image's)
    landmark = "os.py" if Path(stdlib, "os.py").is_file() else "os.pyc"
    tree.copy(f"{libdir}/{landmark}", Path(stdlib, landmark))
    (tree.root / libdir / "lib-dynload").mkdir(parents=True, exist_ok=True)  # ... and for exec_prefix
    for name, origin in found.loaded:
        if _under(origin, site):
            continue
        if _under(origin, dynload[0]):
            rel = f"{libdir}/lib-dynload/{PurePosixPath(origin).relative_to(dynload[0])}"
        elif _under(origin, stdlib):
            rel = f"{libdir}/{PurePosixPath(origin).relative_to(stdlib)}"
        else:
            raise InstallError(f"the shim loads {name} from {origin}, outside the standard library")
        if rel not in tree.digests:
            tree.copy(rel, Path(origin))
    return found


def _check_libraries(tree: _Tree, python: _Python) -> str:
    """Refuse a tree that needs a library beyond glibc; return the oldest glibc it runs on."""
    foreign: dict[str, list[str]] = {}
    floors: list[tuple[int, ...]] = []
    for rel in sorted(tree.digests):
        data = (tree.root / rel).read_bytes()
        if not data.startswith(elf.MAGIC):
            continue
        try:
            needed = elf.dynamic(data).needed
        except elf.ElfError as exc:
            raise InstallError(f"cannot read {rel}: {exc}") from None
        for lib in needed:
            if not GLIBC.match(lib) and lib != python.soname:
                foreign.setdefault(lib, []).append(rel)
        floor = elf.glibc_floor(data)
        if floor is not None:
            floors.append(floor)
    if foreign:
        needs = "; ".join(f"{lib} (by {', '.join(users)})" for lib, users in sorted(foreign.items()))
        raise InstallError(
            f"the runtime would need libraries a node may not have: {needs}. Build the image from a Python "
            "whose interpreter and the extension modules the shim loads link only glibc "
            "(the official python images do)"
        )
    return ".".join(map(str, max(floors, default=(0,))))


def _finish(tree: _Tree, host: PurePath, site: str = "lib/site") -> None:
    """Write the entry script and the bytecode; they name the tree's path on the node."""
    tree.put("cloud-cni.py", _ENTRY.format(site=str(host / site)).encode())
    for rel in sorted(r for r in tree.digests if r.endswith(".py") and r != "cloud-cni.py"):
        source = tree.root / rel
        cache = Path(_cache_path(str(source)))
        py_compile.compile(
            str(source),
            cfile=str(cache),
            dfile=str(host / rel),  # tracebacks name the file as the node sees it
            doraise=True,
            invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH,  # the tree never changes
        )


def _cache_path(source: str) -> str:
    import importlib.util

    return importlib.util.cache_from_source(source)


def _probe_as_plugin(tree: Path, version: str, kind: str) -> _Report:
    """Run ``_PROBE`` in ``tree`` the way the runtime runs the plugin: a file with the plugin's own
    ``#!`` line (or its /bin/sh wrapper, pointed at the probe instead of cloud-cni.py) exec'd with an
    empty environment. The loader must find libpython on its own: a bad RUNPATH fails here."""
    python = str(tree / f"bin/python{version}")
    check = tree.parent / f".check-{os.getpid()}"
    shutil.rmtree(check, ignore_errors=True)
    check.mkdir()
    try:
        launcher = check / "probe"
        argv, env = [str(launcher)], {}
        if kind == "shebang":
            line = _shebang_line(PurePosixPath(tree), version)
            launcher.write_text(f"{line}\n{_PROBE}")
            if len(line) > SHEBANG_MAX or not SAFE_PATH.match(str(tree)):
                # tree is this container's path, not the node's: run what the kernel would run
                argv = [python, _SHEBANG_FLAGS, str(launcher)]
        else:
            script = check / "probe.py"
            script.write_text(_PROBE)
            launcher.write_text("#!/bin/sh\n" + _sh_exec(PurePosixPath(tree), version, str(script)))
            if not os.path.exists("/bin/sh"):  # an image without a shell: what the wrapper would exec
                argv, env = [python, *FLAGS, str(script)], {"LD_LIBRARY_PATH": str(tree / "lib")}
        launcher.chmod(0o755)
        return _run_probe([*argv, str(tree / "lib/site")], env, f"the {kind} plugin for {tree}")
    finally:
        shutil.rmtree(check, ignore_errors=True)


def _verify(tree: Path, python: _Python, kind: str, expected: _Report) -> None:
    """Run the tree's interpreter as the plugin will run; everything must come from the tree."""
    tree = Path(os.path.abspath(tree))
    _check_copy(tree, _probe_as_plugin(tree, python.version, kind), expected)


def _check_copy(tree: Path, found: _Report, expected: _Report) -> None:
    """What the copy reported (``found``) must all come from ``tree`` and be what the original
    loaded. Paths compare as the OS compares them (case-insensitively on Windows)."""
    root = os.path.realpath(tree)
    for key, prefix in (("prefix", found.prefix), ("exec_prefix", found.exec_prefix)):
        if os.path.normcase(os.path.realpath(prefix)) != os.path.normcase(root):
            raise InstallError(
                f"the copied interpreter's {key} is {prefix}, not {root}: a landmark is missing"
            )
    outside = [f for _, f in found.loaded if not Path(os.path.realpath(f)).is_relative_to(root)]
    outside += [f for f in found.libpython if not Path(os.path.realpath(f)).is_relative_to(root)]
    if outside:
        raise InstallError(f"the copied runtime loads files from outside {root}: {outside}")
    names = {n for n, _ in found.loaded}
    wanted = {n for n, _ in expected.loaded}
    if names != wanted:
        raise InstallError(f"the copy loads {sorted(names ^ wanted)} differently from the original")


def _sync_tree(root: Path) -> None:
    for directory, _dirs, files in os.walk(root, topdown=False):
        for name in files:
            fd = os.open(os.path.join(directory, name), os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        os.chmod(directory, 0o755)
        durable.fsync_directory(Path(directory))


def write_atomic(path: Path, data: bytes, mode: int) -> None:
    """Write ``data`` beside ``path`` under a name the runtime ignores, fsync, rename over ``path``."""
    durable.write_atomic(path, data, mode=mode, tmp=path.with_name(f".{path.name}.tmp-{os.getpid()}"))


def plugin_text(kind: str, host_tree: PurePosixPath, version: str) -> str:
    """The file the runtime execs. ``shebang``: the entry itself, run by the tree's interpreter (no
    shell needed: Bottlerocket has none). ``sh``: a shell wrapper that points the loader at the tree's
    libpython, for an interpreter that does not find it beside itself (its RUNPATH names a directory
    of the image it came from and could not be rewritten), or a ``#!`` line that would be too long."""
    if kind == "shebang":
        line = _shebang_line(host_tree, version)
        if len(line) > SHEBANG_MAX:
            raise InstallError(f"the plugin's #! line would be {len(line)} bytes (at most {SHEBANG_MAX})")
        entry = _ENTRY.format(site=str(host_tree / "lib/site"))
        return (
            f"{line}\n# cloud-cni CNI plugin, installed by `cloud-cni install-shim` (docs/deploy.md)\n{entry}"
        )
    if kind != "sh":
        raise ValueError(kind)
    return (
        "#!/bin/sh\n"
        "# cloud-cni CNI plugin, installed by `cloud-cni install-shim` (docs/deploy.md). The interpreter\n"
        "# does not find its libpython on its own: point the loader at the tree's.\n"
        + _sh_exec(host_tree, version, str(host_tree / "cloud-cni.py"))
    )


def _shebang_line(tree: PurePosixPath, version: str) -> str:
    return f"#!{tree}/bin/python{version} {_SHEBANG_FLAGS}"


def _sh_exec(tree: PurePosixPath, version: str, script: str) -> str:
    argv = " ".join(shlex.quote(a) for a in (f"{tree}/bin/python{version}", *FLAGS, script))
    return f'LD_LIBRARY_PATH={shlex.quote(str(tree / "lib"))} exec {argv} "$@"\n'


def _plugin_kind(python: _Python, host: PurePosixPath) -> str:
    """``shebang`` when the copied interpreter finds its libpython on its own (as it is, or once its
    RUNPATH is rewritten) and the ``#!`` line fits; ``sh`` otherwise. The shell costs ~0.75 ms of CPU
    per CNI call (``sh -c true``), paid on every pod start."""
    tag = f"{python.full_version}-{'0' * 12}"  # every tree's name has this length
    fits = len(_shebang_line(host / tag, python.version)) <= SHEBANG_MAX
    return "shebang" if fits and (python.runs_from_origin or python.relocatable) else "sh"


def _current_tag(plugin: Path, host: PurePosixPath) -> str | None:
    """The tree the installed plugin runs, if it is one of ours."""
    try:
        text = plugin.read_bytes()[:4096].decode("utf-8", "replace")
    except OSError:
        return None
    match = re.search(re.escape(str(host)) + r"/([^/\s'\"]+)/", text)
    return match.group(1) if match and TAG.match(match.group(1)) else None


def _remove_stale(runtime_dir: Path, keep: set[str]) -> tuple[str, ...]:
    removed = []
    for entry in sorted(runtime_dir.iterdir()):
        if entry.name in keep or not entry.is_dir() or entry.is_symlink():
            continue
        if TAG.match(entry.name) or entry.name.startswith((".new-", ".old-", ".check-")):
            shutil.rmtree(entry, ignore_errors=True)
            removed.append(entry.name)
    return tuple(removed)


def _read_conflist(path: Path) -> bytes:
    import json

    data = path.read_bytes()
    try:
        conf = json.loads(data)
    except ValueError as exc:
        raise InstallError(f"{path} is not JSON: {exc}") from None
    if not isinstance(conf, dict) or not isinstance(conf.get("plugins"), list) or not conf.get("cniVersion"):
        raise InstallError(f"{path} is not a CNI network configuration list (cniVersion, plugins)")
    return data


def install(
    *,
    runtime_dir: str | os.PathLike[str],
    cni_bin_dir: str | os.PathLike[str] = "/opt/cni/bin",
    host_runtime_dir: str | os.PathLike[str] | None = None,
    conflist: str | os.PathLike[str] | None = None,
    cni_conf_dir: str | os.PathLike[str] | None = None,
    shim_dir: str | os.PathLike[str] | None = None,
) -> Installed:
    """Install the plugin ``<cni_bin_dir>/cloud-cni`` and its runtime under ``runtime_dir``.

    ``host_runtime_dir`` is ``runtime_dir`` as the node sees it (default: the same path). With
    ``conflist`` and ``cni_conf_dir``, the network configuration is installed too, after the plugin.
    ``shim_dir`` is the shim package to install (default: the importable ``shim``). On Windows the
    plugin is ``cloud-cni.exe`` and its runtime a Windows one (``_install_windows``).
    """
    if sys.platform == "win32":
        return _install_windows(
            runtime_dir=runtime_dir,
            cni_bin_dir=cni_bin_dir,
            host_runtime_dir=host_runtime_dir,
            conflist=conflist,
            cni_conf_dir=cni_conf_dir,
            shim_dir=shim_dir,
        )
    runtime = Path(runtime_dir)
    bin_dir = Path(cni_bin_dir)
    host = PurePosixPath(os.fspath(host_runtime_dir if host_runtime_dir is not None else runtime_dir))
    if not SAFE_PATH.match(str(host)):
        raise InstallError(
            f"host runtime dir {str(host)!r}: an absolute path of letters, digits and ._+- only"
        )
    if (conflist is None) != (cni_conf_dir is None):
        raise InstallError("--conflist and --cni-conf-dir go together")
    conf = _read_conflist(Path(conflist)) if conflist is not None else None
    if not bin_dir.is_dir():
        raise InstallError(f"CNI bin dir {bin_dir} does not exist")
    python = _this_python()
    kind = _plugin_kind(python, host)
    relocate = kind == "shebang" and not python.runs_from_origin
    plugin = bin_dir / PLUGIN

    runtime.mkdir(parents=True, exist_ok=True)
    stage = runtime / f".new-{os.getpid()}"
    shutil.rmtree(stage, ignore_errors=True)
    try:
        tree = _Tree(stage)
        shim = _shim_source(Path(shim_dir) if shim_dir is not None else None)
        expected = _build(tree, python, shim, relocate)
        glibc = _check_libraries(tree, python)
        tag = tree.name(python.full_version, str(host), kind)
        target = runtime / tag
        reused = target.is_dir() and _verifies(target, python, kind, expected)
        if not reused:
            _finish(tree, host / tag)
            _verify(stage, python, kind, expected)
            _sync_tree(stage)
            if target.exists():  # present but broken: move it aside, it goes with the stale trees
                aside = runtime / f".old-{os.getpid()}"
                shutil.rmtree(aside, ignore_errors=True)
                os.rename(target, aside)
            os.rename(stage, target)
            durable.fsync_directory(runtime)
    finally:
        shutil.rmtree(stage, ignore_errors=True)

    previous = _current_tag(plugin, host)
    write_atomic(plugin, plugin_text(kind, host / tag, python.version).encode(), 0o755)
    installed_conf = None
    if conf is not None and cni_conf_dir is not None and conflist is not None:
        installed_conf = Path(cni_conf_dir) / Path(conflist).name
        write_atomic(installed_conf, conf, 0o644)
    removed = _remove_stale(runtime, {tag} | ({previous} if previous else set()))
    files = [p for p in target.rglob("*") if p.is_file()]
    return Installed(
        plugin=plugin,
        tree=target,
        host_tree=host / tag,
        interpreter=target / f"bin/python{python.version}",
        wrapper=kind,
        relocated=relocate,
        python=python.full_version,
        size=sum(p.stat().st_size for p in files),
        files=len(files),
        glibc=glibc,
        reused=reused,
        removed=removed,
        conflist=installed_conf,
    )


def _verifies(tree: Path, python: _Python, kind: str, expected: _Report) -> bool:
    try:
        _verify(tree, python, kind, expected)
    except (InstallError, OSError, subprocess.SubprocessError):
        return False
    return True


def describe(done: Installed) -> list[str]:
    """What the init container prints (kubectl logs -c install-cni)."""
    how = f"{done.wrapper}, RUNPATH {ORIGIN_LIB}" if done.relocated else done.wrapper
    if done.wrapper == "exe":
        how = "distlib's console launcher"
    needs = f"; the node needs glibc {done.glibc} or newer" if done.glibc else ""
    lines = [
        f"installed {done.plugin} ({how}): Python {done.python} in {done.host_tree}, "
        f"{done.files} files, {done.size / 1e6:.1f} MB{' (already there)' if done.reused else ''}{needs}"
    ]
    if done.conflist is not None:
        lines.append(f"installed {done.conflist}")
    if done.removed:
        lines.append(f"removed older runtimes: {', '.join(done.removed)}")
    return lines


# --- Windows ------------------------------------------------------------------------------------
#
# containerd on Windows execs <cni bin dir>\cloud-cni.exe. Windows has no "#!": the plugin is the
# console launcher pip itself writes for console scripts on Windows (distlib's t64.exe, vendored in
# pip), followed by a shebang line and a zip archive, as distlib 0.4.4's ScriptMaker._write_script
# lays it out (launcher + shebang + zip whose __main__.py runs the entry). The launcher finds the
# archive's end record, the "#!" line just before the archive, and runs
# ``"<python.exe>" <arguments> "<its own path>" <its arguments>`` as a child in a job object,
# passing stdin/stdout/stderr, the environment and the exit code through (distlib PC/launcher.c).
#
# The arguments name the tree's entry script (``-I -S -X utf8 "<tree>\cloud-cni.py"``), so Python
# runs that file and never opens the archive: run as a zip application, the same shim starts through
# runpy and zipimport, which load 10 more stdlib modules and cost ~5.5 ms more per exec (measured on
# Linux, python -I -S, 60 runs). The archive's __main__.py is the same entry, so the exe also works
# as ``python.exe cloud-cni.exe``.
#
# Tree (``runtime_dir\<version>-<hash>\``), the layout of a Windows installation, where getpath
# finds the prefix by the landmark Lib\os.py beside python3X.dll and puts DLLs\ and Lib\ on sys.path:
#
#     python.exe, python3X.dll, vcruntime140.dll, vcruntime140_1.dll (when beside python.exe)
#     Lib\os.py, Lib\encodings\... (the stdlib files the shim loads, with __pycache__)
#     DLLs\_socket.pyd ... (the extension modules it loads)
#     site\shim\...
#     cloud-cni.py (the entry: sys.path, then shim.main.main())

WINDOWS_PLUGIN = "cloud-cni.exe"
# Windows' MAX_PATH: the launcher reads that many bytes before the archive to find "#!", and decodes
# the line into a buffer of that many characters.
WINDOWS_SHEBANG_MAX = 260
# A drive path of plain names (spaces allowed inside a name): it goes into the shebang line, quoted;
# no '"', and no "#!" that the launcher would take for the start of the line.
WINDOWS_SAFE_PATH = re.compile(r"^[A-Za-z]:(?:\\[A-Za-z0-9._+()-]+(?: [A-Za-z0-9._+()-]+)*)+$")
# distlib's console launchers, by sysconfig.get_platform() (distlib's ScriptMaker._get_launcher).
LAUNCHERS = {"win-amd64": "t64.exe", "win-arm64": "t64-arm.exe", "win32": "t32.exe"}
_VCRUNTIME = ("vcruntime140.dll", "vcruntime140_1.dll")  # what python3X.dll links beyond the OS

# _PROBE for Windows: no /proc; python3X.dll is the module sys.dllhandle names. The site directory is
# the last argument: run through the launcher, the launcher's own path comes before it.
_WINDOWS_PROBE = r"""
import sys
sys.dont_write_bytecode = True
sys.path.insert(0, sys.argv[-1])
import shim.main
loaded = []
for name, module in list(sys.modules.items()):
    origin = getattr(getattr(module, "__spec__", None), "origin", None)
    if origin not in (None, "built-in", "frozen"):
        loaded.append((name, origin))
import _winapi
stdlib = sys.modules["encodings"].__spec__.origin.rpartition("\\")[0].rpartition("\\")[0]
print(repr({
    "loaded": sorted(loaded),
    "prefix": sys.prefix,
    "exec_prefix": sys.exec_prefix,
    "stdlib": stdlib,
    "dynload": [p for p in sys.path if p.rstrip("\\").lower().endswith("\\dlls")],
    "libpython": [_winapi.GetModuleFileName(sys.dllhandle)],
}))
"""


def windows_host_path(text: str) -> PureWindowsPath:
    """``host_runtime_dir`` on Windows: a drive path of plain names (either separator)."""
    path = PureWindowsPath(text)
    if not WINDOWS_SAFE_PATH.match(str(path)):
        raise InstallError(
            f"host runtime dir {text!r}: on Windows a drive path (C:\\...) of letters, digits, "
            "spaces and ._+-() only"
        )
    return path


def windows_shebang(python: PureWindowsPath, script: PureWindowsPath | None = None) -> bytes:
    """The line distlib's launcher reads: the interpreter, quoted, then its arguments (the FLAGS,
    then the script to run, quoted), ended by CRLF (the launcher stops at CR or LF).

    The launcher takes the executable to end at the first ".exe" followed by a quote, a space or
    the end, and the line to start at the last "#!" in the 260 bytes before the archive."""
    paths = [str(python)] + ([str(script)] if script is not None else [])
    line = f'#!"{python}" {" ".join(FLAGS)}' + (f' "{script}"' if script is not None else "")
    raw = (line + "\r\n").encode("ascii", "replace")
    problem = None
    if not str(python).lower().endswith(".exe") or ".exe" in str(python.parent).lower():
        problem = "the interpreter must be a .exe, the only one in its path"
    elif any(not p.isascii() or any(c in p for c in '"\r\n') or "#!" in p for p in paths):
        problem = "a path holds a quote, a line break, '#!' or a character that is not ASCII"
    elif len(raw) > WINDOWS_SHEBANG_MAX:
        problem = f"{len(raw)} bytes, the launcher reads at most {WINDOWS_SHEBANG_MAX}"
    if problem:
        raise InstallError(f"cannot write the launcher's #! line {line!r}: {problem}")
    return raw


def windows_exe(launcher: bytes, shebang: bytes, main: str) -> bytes:
    """``cloud-cni.exe``: the launcher, the shebang line, a zip archive holding ``__main__.py``.

    The archive is built on its own, so its offsets count from its first byte, as distlib builds it;
    the launcher finds it from its end record. Stored, not deflated (zipimport then needs no zlib),
    with a fixed timestamp: the same tree gives the same bytes."""
    if not launcher.startswith(b"MZ"):
        raise InstallError("the launcher is not a Windows executable (no MZ header)")
    if not shebang.startswith(b"#!") or not shebang.endswith(b"\n"):
        raise InstallError(f"not a shebang line: {shebang[:80]!r}")
    stream = io.BytesIO()
    with zipfile.ZipFile(stream, "w") as archive:
        archive.writestr(zipfile.ZipInfo("__main__.py", date_time=(1980, 1, 1, 0, 0, 0)), main.encode())
    return launcher + shebang + stream.getvalue()


def launcher_dirs() -> list[Path]:
    """Where distlib's launchers are: an installed distlib, then the copy pip vendors (pip's wheel
    carries the Windows launchers on every platform). Found without importing either."""
    import importlib.util

    dirs = []
    for package, sub in (("distlib", ""), ("pip", "_vendor/distlib")):
        spec = importlib.util.find_spec(package)
        for location in (spec.submodule_search_locations or []) if spec is not None else []:
            dirs.append(Path(location, sub))
    return dirs


def windows_launcher(dirs: Iterable[Path], platform: str) -> bytes:
    """The bytes of distlib's console launcher for ``platform`` (``sysconfig.get_platform()``)."""
    name = LAUNCHERS.get(platform)
    if name is None:
        raise InstallError(f"no console launcher for platform {platform!r} (distlib has {sorted(LAUNCHERS)})")
    looked = []
    for directory in dirs:
        path = directory / name
        looked.append(str(path))
        if path.is_file():
            data = path.read_bytes()
            if not data.startswith(b"MZ"):
                raise InstallError(f"{path} is not a Windows executable (no MZ header)")
            return data
    raise InstallError(
        f"distlib's console launcher {name}, which cloud-cni.exe is built on, is not in "
        f"{', '.join(looked) or 'any place: neither distlib nor pip is installed'}: install pip (it "
        "vendors distlib and its launchers) or distlib in the image that runs install-shim"
    )


def _windows_tree_files(
    loaded: Iterable[tuple[str, str]],
    stdlib: str,
    dlls_dir: str,
    *,
    site: str,
    executable: str,
    libpython: str,
    beside: Iterable[str] = (),
) -> dict[str, str]:
    """Where each file of a Windows runtime tree comes from: {path in the tree: source}.

    ``loaded`` is what the probe saw loaded from files; modules under ``site`` (the shim) are the
    tree's own. ``beside`` lists the names in python.exe's directory, for the C runtime DLLs.
    Paths compare as Windows compares them, case-insensitively."""
    exe = PureWindowsPath(executable)
    files = {"python.exe": str(exe), PureWindowsPath(libpython).name: libpython}
    for name in sorted(beside):
        if name.lower() in _VCRUNTIME:
            files[name] = str(exe.parent / name)
    files["Lib/os.py"] = str(PureWindowsPath(stdlib, "os.py"))  # getpath's landmark for the prefix
    for module, origin in sorted(loaded):
        path = PureWindowsPath(origin)
        if path.is_relative_to(site):
            continue
        if path.is_relative_to(dlls_dir):  # first: it may lie under the stdlib, as lib-dynload does
            rel = f"DLLs/{path.relative_to(dlls_dir).as_posix()}"
        elif path.is_relative_to(stdlib):
            rel = f"Lib/{path.relative_to(stdlib).as_posix()}"
        else:
            raise InstallError(
                f"the shim loads {module} from {origin}, outside the standard library ({stdlib}, {dlls_dir})"
            )
        files.setdefault(rel, origin)
    return files


def _windows_env() -> dict[str, str]:
    """What a probe gets of the environment: Winsock does not start without SYSTEMROOT (WinError
    10106 when _socket is imported). containerd passes the plugin its own environment, which has it."""
    return {"SYSTEMROOT": os.environ.get("SYSTEMROOT", "C:\\Windows")}


def _windows_probe(argv: list[str], script: Path, site: Path, who: str) -> _Report:
    """Run ``_WINDOWS_PROBE`` from ``script`` with ``argv`` before it (an interpreter and its
    flags, or a probe exe whose shebang names ``script``)."""
    script.write_text(_WINDOWS_PROBE)
    return _run_probe([*argv, str(site)], _windows_env(), who)


def _windows_verify(tree: Path, launcher: bytes, expected: _Report) -> None:
    """Run ``_WINDOWS_PROBE`` in ``tree`` as containerd runs the plugin: an exe of the same launcher
    whose shebang names the tree's python.exe and the probe. Everything must come from the tree."""
    tree = Path(os.path.abspath(tree))
    check = tree.parent / f".check-{os.getpid()}"
    shutil.rmtree(check, ignore_errors=True)
    check.mkdir()
    try:
        script = check / "probe.py"
        python = PureWindowsPath(tree / "python.exe")
        try:
            shebang = windows_shebang(python, PureWindowsPath(script))
        except InstallError:  # this container's path, not the node's: run what the launcher would
            argv = [str(python), *FLAGS, str(script)]
        else:
            exe = check / "probe.exe"
            exe.write_bytes(windows_exe(launcher, shebang, _WINDOWS_PROBE))
            argv = [str(exe)]
        found = _windows_probe(argv, script, tree / "site", f"the plugin for {tree}")
    finally:
        shutil.rmtree(check, ignore_errors=True)
    _check_copy(tree, found, expected)


def _windows_current_tag(plugin: Path, host: PureWindowsPath) -> str | None:
    """The tree the installed cloud-cni.exe runs, if it is one of ours: named in its shebang."""
    try:
        data = plugin.read_bytes()
    except OSError:
        return None
    match = re.search(re.escape(f'#!"{host}\\') + r'([^\\"]+)\\python\.exe"', data.decode("latin-1"))
    return match.group(1) if match and TAG.match(match.group(1)) else None


def _replace_exe(path: Path, data: bytes) -> None:
    """Write ``data`` beside ``path`` and rename it over ``path`` (``durable.write_atomic``). Windows
    refuses to replace an exe that is running (a CNI call in flight) but lets it be renamed: then the
    running one is moved aside first (distlib does the same), and removed by a later install once it
    has exited."""

    def replace_running(tmp: Path, target: Path) -> None:
        try:
            os.replace(tmp, target)
        except PermissionError:
            os.replace(target, target.with_name(f".{target.name}.old-{os.getpid()}"))
            os.replace(tmp, target)

    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    durable.write_atomic(path, data, mode=0o755, tmp=tmp, replace=replace_running)


def _remove_old_exes(bin_dir: Path) -> None:
    """Plugins moved aside while they ran, and temporary files of installs that died; still running,
    they stay until the next install."""
    for entry in bin_dir.glob(f".{WINDOWS_PLUGIN}.*"):
        if entry.name.startswith((f".{WINDOWS_PLUGIN}.old-", f".{WINDOWS_PLUGIN}.tmp-")):
            with contextlib.suppress(OSError):
                entry.unlink()


def _install_windows(
    *,
    runtime_dir: str | os.PathLike[str],
    cni_bin_dir: str | os.PathLike[str],
    host_runtime_dir: str | os.PathLike[str] | None,
    conflist: str | os.PathLike[str] | None,
    cni_conf_dir: str | os.PathLike[str] | None,
    shim_dir: str | os.PathLike[str] | None,
) -> Installed:
    """``install`` on Windows: the tree above and ``<cni_bin_dir>\\cloud-cni.exe``."""
    runtime = Path(os.path.abspath(runtime_dir))  # the probe's module paths are absolute
    bin_dir = Path(cni_bin_dir)
    host = windows_host_path(os.fspath(host_runtime_dir if host_runtime_dir is not None else runtime_dir))
    if (conflist is None) != (cni_conf_dir is None):
        raise InstallError("--conflist and --cni-conf-dir go together")
    conf = _read_conflist(Path(conflist)) if conflist is not None else None
    if not bin_dir.is_dir():
        raise InstallError(f"CNI bin dir {bin_dir} does not exist")
    launcher = windows_launcher(launcher_dirs(), sysconfig.get_platform())
    executable = _base_executable()
    full = _full_version()
    longest = host / f"{full}-{'0' * 12}"  # every tree's name has this length
    windows_shebang(longest / "python.exe", longest / "cloud-cni.py")  # refused before touching anything
    plugin = bin_dir / WINDOWS_PLUGIN

    runtime.mkdir(parents=True, exist_ok=True)
    stage = runtime / f".new-{os.getpid()}"
    probe = runtime / f".check-{os.getpid()}"
    shutil.rmtree(stage, ignore_errors=True)
    try:
        tree = _Tree(stage, sync=True)
        shim = _shim_source(Path(shim_dir) if shim_dir is not None else None)
        for source in sorted(shim.rglob("*.py")):
            relative = source.relative_to(shim)
            if "__pycache__" not in relative.parts:
                tree.put(f"site/shim/{relative.as_posix()}", source.read_bytes())
        shutil.rmtree(probe, ignore_errors=True)
        probe.mkdir()
        try:
            script = probe / "probe.py"
            argv = [str(executable), *FLAGS, "-B", str(script)]
            found = _windows_probe(argv, script, stage / "site", str(executable))
        finally:
            shutil.rmtree(probe, ignore_errors=True)
        if len(found.dynload) != 1 or len(found.libpython) != 1:
            raise InstallError(
                f"expected one DLLs directory on sys.path and one python DLL, found {list(found.dynload)} "
                f"and {list(found.libpython)}"
            )
        if not Path(found.stdlib, "os.py").is_file():
            raise InstallError(
                f"{executable} keeps its standard library in {found.stdlib}, not a directory with os.py "
                "(the embeddable distribution?): install-shim copies from a full installation"
            )
        files = _windows_tree_files(
            found.loaded,
            found.stdlib,
            found.dynload[0],
            site=str(stage / "site"),
            executable=str(executable),
            libpython=found.libpython[0],
            beside=os.listdir(executable.parent),
        )
        for rel, source_file in sorted(files.items()):
            tree.put(
                rel,
                Path(source_file).read_bytes(),
                0o755 if rel.endswith((".exe", ".dll", ".pyd")) else 0o644,
            )
        (stage / "DLLs").mkdir(exist_ok=True)  # exec_prefix\DLLs: sys.path's place for extension modules
        tag = tree.name(full, str(host), "exe", sysconfig.get_platform())
        target = runtime / tag
        reused = target.is_dir() and _windows_verifies(target, launcher, found)
        if not reused:
            _finish(tree, host / tag, "site")
            _windows_verify(stage, launcher, found)
            if target.exists():  # present but broken: move it aside, it goes with the stale trees
                aside = runtime / f".old-{os.getpid()}"
                shutil.rmtree(aside, ignore_errors=True)
                os.rename(target, aside)
            os.rename(stage, target)
    finally:
        shutil.rmtree(stage, ignore_errors=True)

    previous = _windows_current_tag(plugin, host)
    shebang = windows_shebang(host / tag / "python.exe", host / tag / "cloud-cni.py")
    _replace_exe(plugin, windows_exe(launcher, shebang, _ENTRY.format(site=str(host / tag / "site"))))
    installed_conf = None
    if conf is not None and cni_conf_dir is not None and conflist is not None:
        installed_conf = Path(cni_conf_dir) / Path(conflist).name
        write_atomic(installed_conf, conf, 0o644)
    removed = _remove_stale(runtime, {tag} | ({previous} if previous else set()))
    _remove_old_exes(bin_dir)
    tree_files = [p for p in target.rglob("*") if p.is_file()]
    return Installed(
        plugin=plugin,
        tree=target,
        host_tree=host / tag,
        interpreter=target / "python.exe",
        wrapper="exe",
        relocated=False,
        python=full,
        size=sum(p.stat().st_size for p in tree_files),
        files=len(tree_files),
        glibc="",
        reused=reused,
        removed=removed,
        conflist=installed_conf,
    )


def _windows_verifies(tree: Path, launcher: bytes, expected: _Report) -> bool:
    try:
        _windows_verify(tree, launcher, expected)
    except (InstallError, OSError, subprocess.SubprocessError):
        return False
    return True
