"""`cloud-cni install-shim` for Windows, the parts that run anywhere: cloud-cni.exe (distlib's
launcher, the shebang line, the zip), the runtime tree's file list, the host path rules.

``launcher_reads`` below is distlib's PC/launcher.c (``find_shebang``, ``find_terminator``,
``find_executable_and_args``) in Python: what the real launcher takes from the file.
"""

from __future__ import annotations

import io
import os
import shlex
import struct
import subprocess
import sys
import zipfile
from pathlib import Path, PurePosixPath, PureWindowsPath

import pytest

from ipamd import install_shim
from ipamd.errors import InstallError
from ipamd.install_shim import (
    FLAGS,
    WINDOWS_SHEBANG_MAX,
    Installed,
    _windows_current_tag,
    _windows_tree_files,
    describe,
    launcher_dirs,
    windows_exe,
    windows_host_path,
    windows_launcher,
    windows_shebang,
)

ROOT = Path(__file__).resolve().parents[2]
HOST = PureWindowsPath("C:\\Program Files\\containerd\\cni\\cloud-cni")
TREE = HOST / "3.11.7-0123456789ab"
MAX_PATH = 260


def pip_distlib() -> Path:
    import pip

    return Path(pip.__file__).parent / "_vendor" / "distlib"


def launcher_reads(exe: bytes) -> tuple[str, str]:
    """(executable, arguments) as distlib's launcher takes them from ``exe``."""
    end = exe.rfind(b"PK\x05\x06")  # the last end-of-central-directory record
    assert end >= 0, "Unable to find an appended archive."
    cdsize, cdoffset = struct.unpack_from("<II", exe, end + 12)
    start = end - cdsize - cdoffset  # the archive's first byte, for offsets counted from it
    if exe[start : start + 2] == b"#!":  # offsets counted from the file's start (zipapp)
        at = start
    else:
        window = exe[max(0, start - MAX_PATH) : start]
        found = window.rfind(b"#!")
        assert found >= 0, "Failed to find shebang"
        at = max(0, start - MAX_PATH) + found
    chunk = exe[at : at + MAX_PATH]
    ends = [i for i in (chunk.find(b"\r"), chunk.find(b"\n")) if i >= 0]
    assert ends, "Expected to find terminator in shebang line"
    line = chunk[: min(ends)].decode("utf-8")
    assert len(line) < MAX_PATH
    rest = line.lstrip()
    assert rest[:1] == "#"
    rest = rest[1:].lstrip()
    assert rest[:1] == "!"
    rest = rest[1:].lstrip()
    at = 0
    while True:  # the first ".exe" followed by a quote, whitespace or the end
        at = rest.lower().find(".exe", at)
        assert at >= 0, "Expected to find a command ending in '.exe' in shebang line"
        after = rest[at + 4 : at + 5]
        if after in ("", '"') or after.isspace():
            break
        at += 4
    end_of_exe = at + 4
    executable = rest[:end_of_exe]
    if rest.startswith('"'):
        assert rest[end_of_exe] == '"', "Expected terminating double-quote for executable"
        executable = rest[1:end_of_exe]
        end_of_exe += 1
    else:
        assert rest[end_of_exe : end_of_exe + 1] != '"', "Terminating quote without starting quote"
    return executable, rest[end_of_exe:].lstrip()


# ---- the launcher ------------------------------------------------------------------------------


def test_the_launcher_is_distlibs_t64_exe_from_pip() -> None:
    t64 = pip_distlib() / "t64.exe"
    assert t64.is_file(), "pip's wheel carries distlib's Windows launchers on every platform"
    data = windows_launcher(launcher_dirs(), "win-amd64")
    assert data == t64.read_bytes()
    assert data[:2] == b"MZ"
    (pe,) = struct.unpack_from("<I", data, 0x3C)
    assert data[pe : pe + 4] == b"PE\0\0"
    assert struct.unpack_from("<H", data, pe + 4) == (0x8664,), "x86-64"
    arm = windows_launcher(launcher_dirs(), "win-arm64")
    (pe,) = struct.unpack_from("<I", arm, 0x3C)
    assert struct.unpack_from("<H", arm, pe + 4) == (0xAA64,), "ARM64"


def test_a_missing_launcher_is_refused_naming_it_and_where_it_was_looked_for(tmp_path: Path) -> None:
    with pytest.raises(InstallError, match=r"t64\.exe.*not in .*empty.*install pip") as err:
        windows_launcher([tmp_path / "empty"], "win-amd64")
    assert str(tmp_path / "empty" / "t64.exe") in str(err.value)
    with pytest.raises(InstallError, match="neither distlib nor pip is installed"):
        windows_launcher([], "win-amd64")
    with pytest.raises(InstallError, match="no console launcher for platform 'linux-x86_64'"):
        windows_launcher(launcher_dirs(), "linux-x86_64")
    (tmp_path / "t64.exe").write_bytes(b"#!/bin/sh\n")
    with pytest.raises(InstallError, match="not a Windows executable"):
        windows_launcher([tmp_path], "win-amd64")


# ---- the shebang line ---------------------------------------------------------------------------


def test_the_shebang_line_quotes_paths_with_spaces_and_ends_with_crlf() -> None:
    line = windows_shebang(TREE / "python.exe", TREE / "cloud-cni.py")
    assert line == (
        b'#!"C:\\Program Files\\containerd\\cni\\cloud-cni\\3.11.7-0123456789ab\\python.exe" -I -S -X utf8 '
        b'"C:\\Program Files\\containerd\\cni\\cloud-cni\\3.11.7-0123456789ab\\cloud-cni.py"\r\n'
    )
    assert windows_shebang(TREE / "python.exe").endswith(b'python.exe" -I -S -X utf8\r\n')


@pytest.mark.parametrize(
    ("python", "script", "why"),
    [
        (TREE / "python3.11", None, "must be a .exe"),
        (PureWindowsPath("C:\\a.exe dir\\python.exe"), None, "the only one in its path"),
        (PureWindowsPath('C:\\a"b\\python.exe'), None, "a quote"),
        (TREE / "python.exe", PureWindowsPath("C:\\x#!y\\cloud-cni.py"), "'#!'"),
        (PureWindowsPath("C:\\ünï\\python.exe"), None, "not ASCII"),
        (PureWindowsPath("C:\\" + "d" * 200 + "\\python.exe"), TREE / "cloud-cni.py", "at most 260"),
    ],
    ids=["not-exe", "exe-in-dir", "quote", "hash-bang", "non-ascii", "too-long"],
)
def test_a_shebang_the_launcher_would_misread_is_refused(
    python: PureWindowsPath, script: PureWindowsPath | None, why: str
) -> None:
    with pytest.raises(InstallError, match="launcher's #! line") as err:
        windows_shebang(python, script)
    assert why in str(err.value)


def test_the_longest_shebang_the_launcher_reads() -> None:
    base = len(b'#!"C:\\\\python.exe" -I -S -X utf8\r\n')
    fits = PureWindowsPath("C:\\" + "d" * (WINDOWS_SHEBANG_MAX - base) + "\\python.exe")
    line = windows_shebang(fits)
    assert len(line) == WINDOWS_SHEBANG_MAX
    exe = windows_exe(b"MZ" + bytes(5000), line, "")
    assert launcher_reads(exe) == (str(fits), " ".join(FLAGS))
    with pytest.raises(InstallError, match="at most 260"):
        windows_shebang(PureWindowsPath("C:\\" + "d" * (WINDOWS_SHEBANG_MAX - base + 1) + "\\python.exe"))


# ---- cloud-cni.exe ------------------------------------------------------------------------------


def test_the_exe_is_the_launcher_the_shebang_and_a_zip_whose_main_runs_the_shim() -> None:
    launcher = windows_launcher(launcher_dirs(), "win-amd64")
    shebang = windows_shebang(TREE / "python.exe", TREE / "cloud-cni.py")
    main = install_shim._ENTRY.format(site=str(TREE / "site"))
    exe = windows_exe(launcher, shebang, main)
    assert exe.startswith(launcher) and exe[len(launcher) :].startswith(shebang)
    archive = zipfile.ZipFile(io.BytesIO(exe))
    assert archive.namelist() == ["__main__.py"] and archive.testzip() is None
    assert archive.read("__main__.py").decode() == main
    assert archive.getinfo("__main__.py").compress_type == zipfile.ZIP_STORED
    assert "sys.path.insert(0, 'C:\\\\Program Files\\\\containerd" in main
    executable, args = launcher_reads(exe)
    assert executable == str(TREE / "python.exe")
    assert args == f'-I -S -X utf8 "{TREE / "cloud-cni.py"}"'
    assert windows_exe(launcher, shebang, main) == exe, "the same tree gives the same bytes"


def test_the_archive_offsets_count_from_its_own_start() -> None:
    """The launcher's "case 2": the archive starts right after the shebang line, which it finds by
    looking back from there."""
    shebang = windows_shebang(TREE / "python.exe")
    exe = windows_exe(b"MZ" + b"#!" * 100, shebang, "pass\n")  # a "#!" in the launcher changes nothing
    end = exe.rfind(b"PK\x05\x06")
    cdsize, cdoffset = struct.unpack_from("<II", exe, end + 12)
    assert exe[end - cdsize - cdoffset :].startswith(b"PK\x03\x04")
    assert exe[: end - cdsize - cdoffset].endswith(shebang)
    assert launcher_reads(exe)[0] == str(TREE / "python.exe")


def test_a_launcher_that_is_not_an_exe_is_refused() -> None:
    with pytest.raises(InstallError, match="no MZ header"):
        windows_exe(b"\x7fELF", windows_shebang(TREE / "python.exe"), "")


@pytest.fixture
def linux_tree(tmp_path: Path) -> Path:
    """A runtime tree in the Windows layout (site/, cloud-cni.py) holding the real shim, built by the
    installer's own _Tree and _finish; its interpreter is this one."""
    tree = install_shim._Tree(tmp_path / "tree")
    for source in sorted((ROOT / "shim").glob("*.py")):
        tree.put(f"site/shim/{source.name}", source.read_bytes())
    install_shim._finish(tree, PurePosixPath(tree.root), "site")
    return tree.root


def run_version(argv: list[str]) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        argv,
        input=b'{"cniVersion": "1.0.0", "logFile": "/dev/null"}',
        env={"CNI_COMMAND": "VERSION"},
        capture_output=True,
        timeout=60,
        check=False,
    )


def test_the_exe_runs_the_shim_as_the_launcher_runs_it(linux_tree: Path, tmp_path: Path) -> None:
    """The command the launcher makes of the shebang, "<python>" <args> "<the exe>", with this
    interpreter (linked as python.exe) and a Linux tree: Windows paths cannot run here."""
    python = tmp_path / "bin" / "python.exe"
    python.parent.mkdir()
    python.symlink_to(os.path.realpath(sys.executable))
    launcher = windows_launcher(launcher_dirs(), "win-amd64")
    shebang = f'#!"{python}" -I -S -X utf8 "{linux_tree / "cloud-cni.py"}"\r\n'.encode()
    exe = tmp_path / "cloud-cni.exe"
    exe.write_bytes(windows_exe(launcher, shebang, install_shim._ENTRY.format(site=str(linux_tree / "site"))))
    executable, args = launcher_reads(exe.read_bytes())
    assert executable == str(python)
    done = run_version([executable, *shlex.split(args), str(exe)])
    assert done.returncode == 0 and done.stderr == b"", done
    assert done.stdout.startswith(b'{"cniVersion": "1.0.0", "supportedVersions": [')


def test_the_exe_also_runs_as_a_zip_application(linux_tree: Path, tmp_path: Path) -> None:
    """``python cloud-cni.exe``: Python opens the archive behind the launcher's bytes and runs its
    __main__.py, which puts the tree's site directory on sys.path and imports shim.main."""
    launcher = windows_launcher(launcher_dirs(), "win-amd64")
    exe = tmp_path / "cloud-cni.exe"
    main = install_shim._ENTRY.format(site=str(linux_tree / "site"))
    exe.write_bytes(windows_exe(launcher, windows_shebang(TREE / "python.exe"), main))
    done = run_version([sys.executable, *FLAGS, str(exe)])
    assert done.returncode == 0 and done.stderr == b"", done
    assert b'"supportedVersions"' in done.stdout


def test_the_installed_exe_names_its_tree(tmp_path: Path) -> None:
    plugin = tmp_path / "cloud-cni.exe"
    assert _windows_current_tag(plugin, HOST) is None, "no plugin yet"
    shebang = windows_shebang(TREE / "python.exe", TREE / "cloud-cni.py")
    plugin.write_bytes(windows_exe(b"MZ" + bytes(100), shebang, "pass\n"))
    assert _windows_current_tag(plugin, HOST) == "3.11.7-0123456789ab"
    assert _windows_current_tag(plugin, PureWindowsPath("C:\\elsewhere")) is None
    other = HOST / "not-a-tag"
    plugin.write_bytes(windows_exe(b"MZ", windows_shebang(other / "python.exe"), "pass\n"))
    assert _windows_current_tag(plugin, HOST) is None


def test_the_exe_is_replaced_beside_and_renamed_over(tmp_path: Path) -> None:
    plugin = tmp_path / "cloud-cni.exe"
    install_shim._replace_exe(plugin, b"MZ one\r\n\n")
    install_shim._replace_exe(plugin, b"MZ two\n")
    assert plugin.read_bytes() == b"MZ two\n"
    assert os.listdir(tmp_path) == ["cloud-cni.exe"]


def test_a_running_exe_is_moved_aside_then_replaced(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Windows refuses to replace an exe that runs, and lets it be renamed (simulated: the first
    rename over it is refused)."""
    plugin = tmp_path / "cloud-cni.exe"
    plugin.write_bytes(b"MZ running")
    replace = os.replace
    refused = []

    def windows_replace(source: Path, target: Path) -> None:
        if Path(target) == plugin and Path(source).name.startswith(".cloud-cni.exe.tmp-") and not refused:
            refused.append(source)
            raise PermissionError(13, "Access is denied", str(target))
        replace(source, target)

    monkeypatch.setattr(install_shim.os, "replace", windows_replace)
    install_shim._replace_exe(plugin, b"MZ new")
    assert refused and plugin.read_bytes() == b"MZ new"
    aside = tmp_path / f".cloud-cni.exe.old-{os.getpid()}"
    assert aside.read_bytes() == b"MZ running"
    monkeypatch.undo()
    install_shim._remove_old_exes(tmp_path)
    assert os.listdir(tmp_path) == ["cloud-cni.exe"]


# ---- the runtime tree ---------------------------------------------------------------------------

PY = "C:\\Python311"
LOADED = [
    ("encodings", f"{PY}\\Lib\\encodings\\__init__.py"),
    ("encodings.utf_8", f"{PY}\\Lib\\encodings\\utf_8.py"),
    ("encodings.aliases", "c:\\python311\\lib\\encodings\\aliases.py"),  # any case: Windows' paths
    ("__future__", f"{PY}\\Lib\\__future__.py"),
    ("_socket", f"{PY}\\DLLs\\_socket.pyd"),
    ("shim.main", "C:\\rt\\.new-7\\site\\shim\\main.py"),
    ("shim", "C:\\rt\\.new-7\\site\\shim\\__init__.py"),
]


def tree_files(loaded: list[tuple[str, str]], beside: list[str] | None = None) -> dict[str, str]:
    return _windows_tree_files(
        loaded,
        f"{PY}\\Lib",
        f"{PY}\\DLLs",
        site="C:\\rt\\.new-7\\site",
        executable=f"{PY}\\python.exe",
        libpython=f"{PY}\\python311.dll",
        beside=beside or [],
    )


def test_the_windows_tree_holds_the_interpreter_its_dll_and_what_the_shim_loads() -> None:
    files = tree_files(
        LOADED, ["python.exe", "python311.dll", "VCRUNTIME140.dll", "vcruntime140_1.dll", "x.txt"]
    )
    assert files == {
        "python.exe": f"{PY}\\python.exe",
        "python311.dll": f"{PY}\\python311.dll",
        "VCRUNTIME140.dll": f"{PY}\\VCRUNTIME140.dll",
        "vcruntime140_1.dll": f"{PY}\\vcruntime140_1.dll",
        "Lib/os.py": f"{PY}\\Lib\\os.py",
        "Lib/encodings/__init__.py": f"{PY}\\Lib\\encodings\\__init__.py",
        "Lib/encodings/utf_8.py": f"{PY}\\Lib\\encodings\\utf_8.py",
        "Lib/encodings/aliases.py": "c:\\python311\\lib\\encodings\\aliases.py",
        "Lib/__future__.py": f"{PY}\\Lib\\__future__.py",
        "DLLs/_socket.pyd": f"{PY}\\DLLs\\_socket.pyd",
    }


def test_without_a_c_runtime_beside_python_none_is_copied() -> None:
    assert not [rel for rel in tree_files(LOADED) if "vcruntime" in rel.lower()]


def test_a_module_from_outside_the_standard_library_is_refused() -> None:
    with pytest.raises(InstallError, match=r"loads yaml from D:\\yaml\.py, outside the standard library"):
        tree_files([*LOADED, ("yaml", "D:\\yaml.py")])


def test_the_file_list_from_what_the_shim_really_loads() -> None:
    """This interpreter's probe (the shim's real imports), its Linux paths read as Windows reads a
    rooted path: every module lands in Lib/ or DLLs/."""
    site = ROOT
    report = install_shim._probe(install_shim._base_executable(), site)
    files = _windows_tree_files(
        report.loaded,
        report.stdlib,
        report.dynload[0],
        site=str(site),
        executable="C:\\Python311\\python.exe",
        libpython="C:\\Python311\\python311.dll",
    )
    stdlib = [o for _, o in report.loaded if not o.startswith(str(site))]
    landmark = str(PureWindowsPath(report.stdlib, "os.py"))
    interpreter = ["C:\\Python311\\python.exe", "C:\\Python311\\python311.dll"]
    assert stdlib and sorted(files.values()) == sorted({*stdlib, landmark, *interpreter})
    assert any(rel.startswith("DLLs/_socket.") for rel in files)
    assert "Lib/encodings/__init__.py" in files


def test_the_windows_probe_is_python() -> None:
    compile(install_shim._WINDOWS_PROBE, "probe.py", "exec")
    assert "sys.argv[-1]" in install_shim._WINDOWS_PROBE, "through the launcher, the exe's path comes first"


# ---- the host path and the entry point ---------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "path"),
    [
        ("C:\\Program Files\\containerd\\cni\\cloud-cni", "C:\\Program Files\\containerd\\cni\\cloud-cni"),
        ("c:/opt/cni/cloud-cni", "c:\\opt\\cni\\cloud-cni"),
        ("C:\\k\\cloud-cni (1)", "C:\\k\\cloud-cni (1)"),
    ],
)
def test_a_host_runtime_dir_on_windows(text: str, path: str) -> None:
    assert str(windows_host_path(text)) == path


@pytest.mark.parametrize(
    "text",
    [
        "/opt/cni/cloud-cni",  # the CLI's default, for Linux
        "opt\\cni",
        "C:",
        "C:opt\\cni",
        "\\\\server\\share\\cni",
        'C:\\a"b',
        "C:\\a#!b",
        "C:\\ünï",
        "C:\\a\\\tb",
        "C:\\a  b",
        "C:\\a\\ b",
    ],
)
def test_a_host_runtime_dir_the_shebang_cannot_carry_is_refused(text: str) -> None:
    with pytest.raises(InstallError, match="on Windows a drive path"):
        windows_host_path(text)


def test_install_on_windows_refuses_a_linux_host_path_before_touching_anything(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "platform", "win32")
    with pytest.raises(InstallError, match="host runtime dir '/opt/cni/cloud-cni': on Windows"):
        install_shim.install(
            runtime_dir=tmp_path / "rt", cni_bin_dir=tmp_path, host_runtime_dir="/opt/cni/cloud-cni"
        )
    assert not (tmp_path / "rt").exists()


def test_describe_a_windows_install() -> None:
    done = Installed(
        plugin=Path("C:/opt/cni/bin/cloud-cni.exe"),
        tree=Path("/rt/3.11.7-0123456789ab"),
        host_tree=TREE,
        interpreter=Path("/rt/3.11.7-0123456789ab/python.exe"),
        wrapper="exe",
        relocated=False,
        python="3.11.7",
        size=12_300_000,
        files=60,
        glibc="",
        reused=False,
        removed=(),
        conflist=None,
    )
    [line] = describe(done)
    assert "(distlib's console launcher): Python 3.11.7 in C:\\Program Files" in line
    assert line.endswith("60 files, 12.3 MB") and "glibc" not in line
