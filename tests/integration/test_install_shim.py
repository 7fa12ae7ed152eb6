"""`cloud-cni install-shim`: the plugin as a node gets it, exec'd the way a container runtime execs it.

Every plugin here runs with an `env -i` style environment (the CNI variables and nothing else: no
PATH, no PYTHONPATH, no PYTHONHOME, no venv), so it finds nothing but the tree it was installed with.
Host and container see the same paths here (host runtime dir == runtime dir).
"""

from __future__ import annotations

import ast
import hashlib
import json
import os
import shutil
import stat
import struct
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from ipamd import cli, elf, install_shim
from ipamd.errors import InstallError
from ipamd.install_shim import ORIGIN_LIB, Installed, install

from .conftest import ROOT, DaemonProcess

pytestmark = pytest.mark.integration

MB = 1_000_000
INTERPRETER = Path(os.path.realpath(getattr(sys, "_base_executable", None) or sys.executable))
# Taken when the module is collected, before any install: the installer only ever reads it.
INTERPRETER_SHA256 = hashlib.sha256(INTERPRETER.read_bytes()).hexdigest()
CRI_ARGS = "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME={cid};K8S_POD_INFRA_CONTAINER_ID={cid}"
# A stand-in shim: it reports what the interpreter loaded and how it was started. It tests the
# installer on its own, whatever the real shim imports today; it loads C extensions from lib-dynload.
PROBE_SHIM = """\
import _json
import _socket
import posix
import sys

VERSION = {version!r}


def main() -> int:
    origins = [getattr(m.__spec__, "origin", None) for m in list(sys.modules.values()) if m.__spec__]
    report = {{
        "version": VERSION,
        "argv": sys.argv,
        "flags": (sys.flags.isolated, sys.flags.no_site, sys.flags.utf8_mode),
        "prefix": sys.prefix,
        "environ": sorted(k.decode() for k in posix.environ),
        "files": sorted(o for o in origins if o not in (None, "built-in", "frozen")),
        "stdin": sys.stdin.buffer.read().decode(),
    }}
    sys.stdout.write(repr(report) + "\\n")
    return 0
"""


@dataclass
class Done:
    code: int
    stdout: str
    stderr: str

    @property
    def json(self) -> Any:
        return json.loads(self.stdout)

    @property
    def report(self) -> Any:
        assert self.code == 0, self
        return ast.literal_eval(self.stdout)


def run(plugin: Path, env: dict[str, str], stdin: bytes = b"") -> Done:
    proc = subprocess.run([str(plugin)], input=stdin, env=env, capture_output=True, timeout=60, check=False)
    return Done(proc.returncode, proc.stdout.decode(), proc.stderr.decode())


def cni_env(command: str, cid: str, cni_bin: Path) -> dict[str, str]:
    return {
        "CNI_COMMAND": command,
        "CNI_CONTAINERID": cid,
        "CNI_IFNAME": "eth0",
        "CNI_NETNS": f"/var/run/netns/{cid}",
        "CNI_PATH": str(cni_bin),
        "CNI_ARGS": CRI_ARGS.format(cid=cid),
    }


def netconf(socket: str, log: Path) -> bytes:
    conf = {"cniVersion": "1.0.0", "name": "cloud-cni", "type": "cloud-cni", "ipamdSocket": socket}
    return json.dumps({**conf, "logFile": str(log)}).encode()


def probe_shim(parent: Path, version: str = "v1") -> Path:
    package = parent / f"probe-shim-{version}" / "shim"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "main.py").write_text(PROBE_SHIM.format(version=version))
    return package


def node_dirs(tmp: Path) -> tuple[Path, Path]:
    cni_bin = tmp / "opt-cni-bin"
    cni_bin.mkdir()
    return cni_bin, tmp / "opt-cni-cloud-cni"


def files_of(tree: Path) -> list[Path]:
    return sorted(p for p in tree.rglob("*") if p.is_file())


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Installed:
    """The real shim, installed once for the module's tests."""
    cni_bin, runtime = node_dirs(tmp_path_factory.mktemp("node"))
    return install(runtime_dir=runtime, cni_bin_dir=cni_bin, host_runtime_dir=runtime)


# --- the real shim, under the CNI contract -------------------------------------------------------


def test_version_answers_with_the_supported_versions(installed: Installed, tmp_path: Path) -> None:
    stdin = json.dumps({"cniVersion": "1.0.0", "logFile": str(tmp_path / "shim.log")}).encode()
    done = run(installed.plugin, {"CNI_COMMAND": "VERSION"}, stdin)
    assert done.code == 0, done
    assert done.json["cniVersion"] == "1.0.0"
    assert {"0.4.0", "1.0.0"} <= set(done.json["supportedVersions"])
    assert done.stderr == ""


def test_add_with_the_daemon_unreachable_is_cni_error_11(installed: Installed, tmp_path: Path) -> None:
    missing = str(tmp_path / "no-daemon" / "ipamd.sock")
    done = run(
        installed.plugin,
        cni_env("ADD", "unreach01", installed.plugin.parent),
        netconf(missing, tmp_path / "l"),
    )
    assert done.code != 0, done
    err = done.json
    assert err["code"] == 11, err
    assert err["cniVersion"] == "1.0.0" and err["msg"], err
    assert done.stderr == ""


def test_add_against_the_daemon_returns_an_ip(
    installed: Installed, daemon: DaemonProcess, tmp_path: Path
) -> None:
    daemon.start()
    conf = netconf(daemon.socket, tmp_path / "shim.log")
    env = cni_env("ADD", "inst0001", installed.plugin.parent)
    add = run(installed.plugin, env, conf)
    assert add.code == 0, add
    result = add.json
    assert result["cniVersion"] == "1.0.0"
    [ip] = result["ips"]
    address, _, length = ip["address"].partition("/")
    assert length == "32", ip
    assigned = {a["container_id"]: a["ip"] for a in daemon.get("/v1/assignments")}
    assert assigned == {"inst0001": address}
    done = run(installed.plugin, {**env, "CNI_COMMAND": "DEL"}, conf)
    assert done.code == 0 and done.stdout == "", done
    assert daemon.get("/v1/pool")["assigned"] == 0


def test_the_runtime_is_small_and_holds_only_what_the_shim_loads(installed: Installed) -> None:
    tree = installed.tree
    files = files_of(tree)
    size = sum(p.stat().st_size for p in files)
    print(f"runtime {tree.name}: {len(files)} files, {size / MB:.1f} MB ({installed.wrapper} plugin)")
    assert size == installed.size and size < 15 * MB
    names = [str(p.relative_to(tree)) for p in files]
    foreign = ("site-packages", "dist-packages", "grpc", "_grpc", "google", "ipamd", "protobuf", "yaml")
    assert not [n for n in names if any(p.startswith(foreign) for p in Path(n).parts)], names
    v = f"{sys.version_info.major}.{sys.version_info.minor}"
    stdlib = f"{sys.platlibdir}/python{v}/"
    assert {f"bin/python{v}", f"{stdlib}os.py", f"{stdlib}encodings/__init__.py", "cloud-cni.py"} <= set(
        names
    )
    copied = [n for n in names if n.startswith(stdlib) and n.endswith(".py")]
    assert len(copied) <= 10, f"only what the shim loads, not the standard library: {copied}"
    # every module has bytecode for this interpreter, valid without looking at the source
    sources = [p for p in files if p.suffix == ".py" and p.name != "cloud-cni.py"]
    assert any(p.parent.name == "shim" for p in sources)
    for source in sources:
        pyc = source.parent / "__pycache__" / f"{source.stem}.{sys.implementation.cache_tag}.pyc"
        header = pyc.read_bytes()[:16]
        assert int.from_bytes(header[4:8], "little") == 0b01, f"{pyc}: not an unchecked hash-based pyc"
    for path in [installed.plugin, installed.interpreter, *tree.rglob("*.so*")]:
        assert stat.S_IMODE(path.stat().st_mode) == 0o755, path
        if path.read_bytes().startswith(elf.MAGIC):
            needed = elf.dynamic(path.read_bytes()).needed
            assert all(
                n.startswith(("libc.", "libm.", "libpthread.", "libdl.", "libpython", "ld-")) for n in needed
            )


# --- the installer, on a stand-in shim -----------------------------------------------------------


def test_the_plugin_runs_only_from_its_tree_whatever_the_environment(tmp_path: Path) -> None:
    cni_bin, runtime = node_dirs(tmp_path)
    done = install(runtime_dir=runtime, cni_bin_dir=cni_bin, shim_dir=probe_shim(tmp_path))
    assert done.plugin == cni_bin / "cloud-cni" and str(done.host_tree) == str(done.tree)
    hostile = {
        "PYTHONPATH": str(ROOT),
        "PYTHONHOME": sys.prefix,
        "PYTHONSTARTUP": "/nonexistent",
        "LANG": "de_DE.ISO-8859-1",
        "LC_ALL": "de_DE.ISO-8859-1",
        "PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin",
    }
    for env in ({}, {"CNI_COMMAND": "VERSION", **hostile}):
        report = run(done.plugin, env, b"{}").report
        assert report["flags"] == (1, 1, 1), "isolated, no site, UTF-8 mode"
        assert report["prefix"] == str(done.tree)
        assert report["files"], report
        assert all(f.startswith(str(done.tree) + "/") for f in report["files"]), report["files"]
        assert any("/lib-dynload/_json." in f for f in report["files"])
        assert report["stdin"] == "{}"


def test_reinstall_upgrade_and_cleanup(tmp_path: Path) -> None:
    cni_bin, runtime = node_dirs(tmp_path)
    v1 = install(runtime_dir=runtime, cni_bin_dir=cni_bin, shim_dir=probe_shim(tmp_path, "v1"))
    again = install(runtime_dir=runtime, cni_bin_dir=cni_bin, shim_dir=probe_shim(tmp_path / "again", "v1"))
    assert again.reused and again.tree == v1.tree, "the same content is the same tree, left as it is"

    (runtime / ".new-99999").mkdir()  # an install that died half-way
    (runtime / ".check-99999").mkdir()  # ... while it ran the check
    v2 = install(runtime_dir=runtime, cni_bin_dir=cni_bin, shim_dir=probe_shim(tmp_path, "v2"))
    assert v2.tree != v1.tree and not v2.reused
    assert run(v2.plugin, {}).report["version"] == "v2"
    assert v1.tree.is_dir(), (
        "the previous tree stays: a plugin exec'd before the switch may still be starting"
    )
    assert {".new-99999", ".check-99999"} <= set(v2.removed)

    v3 = install(runtime_dir=runtime, cni_bin_dir=cni_bin, shim_dir=probe_shim(tmp_path, "v3"))
    assert sorted(p.name for p in runtime.iterdir()) == sorted([v2.tree.name, v3.tree.name])
    assert v3.removed == (v1.tree.name,)
    assert sorted(os.listdir(cni_bin)) == ["cloud-cni"], "no temporary file left beside the plugin"

    # a tree damaged on disk (say, by a crash before its data reached the disk) is rebuilt
    v3.interpreter.write_bytes(b"")
    fixed = install(runtime_dir=runtime, cni_bin_dir=cni_bin, shim_dir=probe_shim(tmp_path / "fix", "v3"))
    assert not fixed.reused and fixed.tree == v3.tree
    assert run(fixed.plugin, {}).report["version"] == "v3"


def test_cli_installs_the_plugin_then_the_conflist(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cni_bin, runtime = node_dirs(tmp_path)
    conf_dir = tmp_path / "etc-cni-net.d"
    conf_dir.mkdir()
    conflist = ROOT / "deploy" / "10-cloud-cni.conflist"
    argv = ["install-shim", "--cni-bin-dir", str(cni_bin), "--runtime-dir", str(runtime)]
    argv += ["--host-runtime-dir", str(runtime), "--conflist", str(conflist), "--cni-conf-dir", str(conf_dir)]
    assert cli.main([*argv, "--shim-dir", str(probe_shim(tmp_path))]) == 0
    out = capsys.readouterr().out
    assert f"installed {cni_bin / 'cloud-cni'}" in out and f"installed {conf_dir / conflist.name}" in out
    assert (conf_dir / conflist.name).read_bytes() == conflist.read_bytes()
    assert stat.S_IMODE((conf_dir / conflist.name).stat().st_mode) == 0o644
    assert os.listdir(conf_dir) == [conflist.name]

    bad = tmp_path / "bad.conflist"
    bad.write_text("{not json")
    assert cli.main([*argv[:-4], "--conflist", str(bad), "--cni-conf-dir", str(tmp_path / "other")]) == 1
    assert "bad.conflist is not JSON" in capsys.readouterr().err


def test_a_shim_that_needs_more_than_the_stdlib_is_refused(tmp_path: Path) -> None:
    cni_bin, runtime = node_dirs(tmp_path)
    package = probe_shim(tmp_path)
    (package / "main.py").write_text("import yaml\n\ndef main() -> int:\n    return 0\n")
    with pytest.raises(InstallError, match=r"cannot import shim\.main"):
        install(runtime_dir=runtime, cni_bin_dir=cni_bin, shim_dir=package)
    assert os.listdir(cni_bin) == [], "nothing the runtime execs was written"
    assert os.listdir(runtime) == []


def image_python(prefix: Path, runpath: bytes | None) -> Path | None:
    """This interpreter laid out as a Python image at ``prefix`` (bin/python3.X; lib/ with links to
    this one's libpython and standard library), its search path rewritten to ``runpath`` in place
    (as patchelf does when the new path is no longer than the old one), or taken out of its dynamic
    section with None. None when this interpreter links no libpython through one absolute RUNPATH."""
    data = INTERPRETER.read_bytes()
    dynamic = elf.dynamic(data)
    libpython = [n for n in dynamic.needed if n.startswith("libpython")]
    if not libpython or len(dynamic.runpath) != 1 or len(dynamic.runpath[0]) < len(ORIGIN_LIB):
        return None
    old = dynamic.runpath[0].encode() + b"\0"
    assert data.count(old) == 1
    v = f"python{sys.version_info.major}.{sys.version_info.minor}"
    (prefix / "bin").mkdir(parents=True)
    (prefix / "lib").mkdir()
    python = prefix / "bin" / v
    python.write_bytes(
        without_runpath(data) if runpath is None else data.replace(old, runpath.ljust(len(old), b"\0"))
    )
    python.chmod(0o755)
    (prefix / "lib" / libpython[0]).symlink_to(Path(dynamic.runpath[0]) / libpython[0])
    (prefix / "lib" / v).symlink_to(Path(dynamic.runpath[0]) / v)
    return python


def without_runpath(data: bytes) -> bytes:
    """``data`` with its DT_RUNPATH entry taken out of the dynamic section (the entries after it move
    up one, a DT_NULL fills the end), as in a distribution's python3 that links libpython."""
    if data[4:6] != b"\x02\x01":
        pytest.skip("the test reads the dynamic section of 64-bit little-endian files only")
    (phoff,) = struct.unpack_from("<Q", data, 32)
    phentsize, phnum = struct.unpack_from("<HH", data, 54)
    headers = [struct.unpack_from("<IIQQQQ", data, phoff + i * phentsize) for i in range(phnum)]
    [(_, _, offset, _, _, size)] = [h for h in headers if h[0] == 2]  # PT_DYNAMIC
    entries = [struct.unpack_from("<qQ", data, at) for at in range(offset, offset + size, 16)]
    kept = [e for e in entries if e[0] != 29]  # DT_RUNPATH
    assert len(kept) == len(entries) - 1
    section = b"".join(struct.pack("<qQ", *e) for e in [*kept, (0, 0)])
    return data[:offset] + section + data[offset + size :]


def relocatable_python(prefix: Path) -> Path | None:
    """This interpreter laid out as the official python images lay theirs out: RUNPATH
    ``$ORIGIN/../lib``. None when this interpreter has no libpython."""
    return image_python(prefix, ORIGIN_LIB.encode())


def test_an_interpreter_that_finds_its_libpython_gets_a_shebang_plugin(tmp_path: Path) -> None:
    python = relocatable_python(tmp_path / "image-python")
    if python is None:
        pytest.skip("this interpreter links no libpython, or not through an absolute RUNPATH")
    cni_bin, runtime = node_dirs(tmp_path)
    shim = str(probe_shim(tmp_path))
    code = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(ROOT)!r})
        from ipamd.install_shim import install
        done = install(runtime_dir={str(runtime)!r}, cni_bin_dir={str(cni_bin)!r}, shim_dir={shim!r})
        print(repr((done.wrapper, done.relocated, str(done.tree))))
    """)
    out = subprocess.run(
        [str(python), "-I", "-c", code], env={}, capture_output=True, timeout=60, check=False
    )
    assert out.returncode == 0, out.stderr.decode()
    wrapper, relocated, tree = ast.literal_eval(out.stdout.decode())
    assert wrapper == "shebang" and not relocated, "its RUNPATH is $ORIGIN/../lib already"
    plugin = cni_bin / "cloud-cni"
    first = plugin.read_text().splitlines()[0]
    assert first == f"#!{tree}/bin/{python.name} -ISXutf8"
    report = run(plugin, {}).report
    assert report["flags"] == (1, 1, 1)
    assert "LD_LIBRARY_PATH" not in report["environ"], "no shell, no loader variables: the kernel runs it"
    assert all(f.startswith(tree + "/") for f in report["files"])
    shutil.rmtree(tmp_path / "image-python")  # the tree runs on its own: its origin is gone
    assert run(plugin, {}).report["prefix"] == tree


# --- the interpreter's RUNPATH: rewritten in the copy, or the sh wrapper -------------------------


def install_with(python: Path, env: dict[str, str], cni_bin: Path, runtime: Path, **kw: str) -> Any:
    """``install`` run by ``python``: (wrapper, relocated, tree)."""
    args = ", ".join(
        f"{k}={v!r}" for k, v in {"runtime_dir": str(runtime), "cni_bin_dir": str(cni_bin), **kw}.items()
    )
    code = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(ROOT)!r})
        from ipamd.install_shim import install
        done = install({args})
        print(repr((done.wrapper, done.relocated, str(done.tree))))
    """)
    out = subprocess.run(
        [str(python), "-I", "-c", code], env=env, capture_output=True, timeout=60, check=False
    )
    assert out.returncode == 0, out.stderr.decode()
    return ast.literal_eval(out.stdout.decode())


def test_the_copy_finds_its_libpython_through_a_rewritten_runpath(
    installed: Installed, tmp_path: Path
) -> None:
    source = elf.dynamic(INTERPRETER.read_bytes())
    links = any(n.startswith("libpython") for n in source.needed)
    runpath = source.runpath
    if not links or len(runpath) != 1 or not runpath[0].startswith("/") or len(runpath[0]) < len(ORIGIN_LIB):
        pytest.skip(f"this interpreter links {source.needed}, RUNPATH {source.runpath}: nothing to rewrite")
    assert installed.relocated, "a libpython and an absolute RUNPATH long enough: the copy's is rewritten"
    assert hashlib.sha256(INTERPRETER.read_bytes()).hexdigest() == INTERPRETER_SHA256, (
        "the source is only read"
    )
    assert installed.wrapper == "shebang"
    v = f"{sys.version_info.major}.{sys.version_info.minor}"
    assert installed.plugin.read_text().splitlines()[0] == f"#!{installed.tree}/bin/python{v} -ISXutf8"
    assert elf.dynamic(installed.interpreter.read_bytes()) == elf.Dynamic(source.needed, (ORIGIN_LIB,))
    # the real shim, exec'd by the kernel with nothing in its environment but the CNI command
    stdin = json.dumps({"cniVersion": "1.0.0", "logFile": str(tmp_path / "shim.log")}).encode()
    done = run(installed.plugin, {"CNI_COMMAND": "VERSION"}, stdin)
    assert done.code == 0 and done.stderr == "", done
    assert done.json["cniVersion"] == "1.0.0" and "1.0.0" in done.json["supportedVersions"]
    # ... and the libpython the copy maps, with no help from the environment, is the tree's
    maps = subprocess.run(
        [str(installed.interpreter), "-I", "-S", "-c", "print(open('/proc/self/maps').read())"],
        env={},
        capture_output=True,
        timeout=60,
        check=True,
    ).stdout.decode()
    mapped = {line.split()[-1] for line in maps.splitlines() if "/libpython" in line}
    [soname] = [n for n in source.needed if n.startswith("libpython")]
    assert mapped == {os.path.realpath(installed.tree / "lib" / soname)}


@pytest.fixture
def short_path() -> Iterator[Path]:
    """A fresh path of 13 bytes ("/tmp/" and 8 letters), one short of $ORIGIN/../lib; removed after."""
    path = Path(tempfile.mkdtemp(dir="/tmp", prefix=""))
    path.rmdir()
    assert len(str(path)) < len(ORIGIN_LIB)
    yield path
    if path.is_symlink():
        path.unlink()


@pytest.mark.parametrize("case", ["no-runpath", "runpath-too-short"])
def test_an_interpreter_whose_runpath_cannot_be_rewritten_gets_the_sh_wrapper(
    tmp_path: Path, short_path: Path, case: str
) -> None:
    prefix = tmp_path / "image-python"
    if case == "no-runpath":
        python = image_python(prefix, None)
        env = {"LD_LIBRARY_PATH": str(prefix / "lib")}  # how such an image finds its libpython
    else:
        python = image_python(prefix, str(short_path).encode())
        short_path.symlink_to(prefix / "lib")  # its RUNPATH: the image's lib/, by a short name
        env = {}
    if python is None:
        pytest.skip("this interpreter links no libpython, or not through an absolute RUNPATH")
    assert elf.rewrite_search_path(python.read_bytes(), ORIGIN_LIB.encode()) is None
    cni_bin, runtime = node_dirs(tmp_path)
    wrapper, relocated, tree = install_with(python, env, cni_bin, runtime, shim_dir=str(probe_shim(tmp_path)))
    assert (wrapper, relocated) == ("sh", False)
    plugin = cni_bin / "cloud-cni"
    assert plugin.read_text().startswith("#!/bin/sh\n")
    copied = elf.dynamic(Path(tree, "bin", python.name).read_bytes())
    assert copied.runpath == elf.dynamic(python.read_bytes()).runpath, "copied as it is"
    shutil.rmtree(prefix)  # the tree runs on its own: its origin is gone
    report = run(plugin, {}).report
    assert "LD_LIBRARY_PATH" in report["environ"], "the wrapper points the loader at the tree"
    assert report["prefix"] == tree
    assert all(f.startswith(tree + "/") for f in report["files"])


def test_a_shebang_line_too_long_for_the_kernel_gets_the_sh_wrapper(tmp_path: Path) -> None:
    cni_bin, runtime = node_dirs(tmp_path)
    host = "/" + "/".join(["d" * 30] * 3)  # the #! line would pass 127 bytes
    done = install(
        runtime_dir=runtime, cni_bin_dir=cni_bin, host_runtime_dir=host, shim_dir=probe_shim(tmp_path)
    )
    assert (done.wrapper, done.relocated) == ("sh", False)
    text = done.plugin.read_text()
    assert text.startswith("#!/bin/sh\n") and f" {host}/{done.tree.name}/bin/python" in text
    source = elf.dynamic(INTERPRETER.read_bytes())
    assert elf.dynamic(done.interpreter.read_bytes()).runpath == source.runpath, "no rewrite for sh"


def test_a_bad_rewrite_is_caught_before_anything_is_installed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    wrong = "$ORIGIN/../nolib"  # a copy that cannot find its libpython, or finds another
    if elf.rewrite_search_path(INTERPRETER.read_bytes(), wrong.encode()) is None:
        pytest.skip("this interpreter's RUNPATH cannot be rewritten")
    monkeypatch.setattr(install_shim, "ORIGIN_LIB", wrong)
    cni_bin, runtime = node_dirs(tmp_path)
    with pytest.raises(InstallError, match=r"shebang plugin .* cannot import|loads files from outside"):
        install(runtime_dir=runtime, cni_bin_dir=cni_bin, shim_dir=probe_shim(tmp_path))
    assert os.listdir(cni_bin) == [], "nothing the runtime execs was written"
    assert os.listdir(runtime) == [], "no tree, no staging or check directory left"
