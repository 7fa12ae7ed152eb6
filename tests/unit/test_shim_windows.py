"""The plugin's Windows rules, checked on Linux (docs/shim.md, "On Windows").

``shim.cni.PLATFORM`` decides the path rules and is read at every call, so each rule runs here for
both platforms. The OS calls go through ``shim/_fs.py`` on ``posix`` here; that the same calls
exist in Windows' ``nt`` is checked statically, by mypy with ``--platform win32`` against typeshed.
"""

from __future__ import annotations

import _socket
import json
import os
import string
import subprocess
import sys
from pathlib import Path, PurePosixPath, PureWindowsPath

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ipamd import spool as daemon_spool
from shim import _fs, cni, h2grpc, spool
from shim import main as shim_main

ROOT = Path(__file__).resolve().parents[2]
GUID = "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0"  # containerd's CNI_NETNS on Windows: the HCN namespace
ENV = {
    "CNI_COMMAND": "ADD",
    "CNI_CONTAINERID": "ctr01",
    "CNI_IFNAME": "eth0",
    "CNI_NETNS": GUID,
    "CNI_PATH": "C:\\opt\\cni\\bin",
}


@pytest.fixture
def windows(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cni, "PLATFORM", "win32")


def conf(**keys: object) -> bytes:
    return json.dumps({"cniVersion": "1.1.0", "name": "cloud-cni", "type": "cloud-cni", **keys}).encode()


def parse_error(stdin: bytes, command: str = "ADD") -> cni.CniError:
    with pytest.raises(cni.CniError) as err:
        cni.parse({**ENV, "CNI_COMMAND": command}, stdin)
    return err.value


# ---- what is an absolute path -----------------------------------------------------------------

ABSOLUTE = [
    ("linux", "/var/log/cloud-cni/shim.log", True),
    ("linux", "//double/slash", True),
    ("linux", "C:\\k\\shim.log", False),
    ("linux", "C:/k/shim.log", False),
    ("linux", "\\k\\shim.log", False),
    ("linux", "relative/shim.log", False),
    ("win32", "C:\\k\\shim.log", True),
    ("win32", "c:/k/shim.log", True),
    ("win32", "D:\\", True),
    ("win32", "C:\\Program Files\\cloud-cni\\ipamd.token", True),
    ("win32", "/k/shim.log", True),
    ("win32", "\\k\\shim.log", True),
    ("win32", "/var/log/cloud-cni/shim.log", True),
    ("win32", "C:k\\shim.log", False),  # relative to drive C:'s current directory
    ("win32", "C:", False),
    ("win32", "k\\shim.log", False),
    ("win32", "1:\\k", False),
    ("win32", "\\\\server\\share\\shim.log", False),
    ("win32", "//server/share/shim.log", False),
    ("win32", "\\\\?\\C:\\k\\shim.log", False),
    ("win32", "\\\\.\\pipe\\cloud-cni", False),
    ("win32", "", False),
]


@pytest.mark.parametrize(
    ("platform", "path", "absolute"), ABSOLUTE, ids=[f"{p}:{v!r}" for p, v, _ in ABSOLUTE]
)
def test_what_is_an_absolute_path(
    monkeypatch: pytest.MonkeyPatch, platform: str, path: str, absolute: bool
) -> None:
    monkeypatch.setattr(cni, "PLATFORM", platform)
    assert cni.is_absolute_path(path) is absolute


@pytest.mark.parametrize("key", ["logFile", "ipamdTokenFile"])
@pytest.mark.parametrize(
    "path", ["C:\\ProgramData\\cloud-cni\\x", "C:/ProgramData/cloud-cni/x", "/k/cloud-cni/x", "\\k\\x"]
)
def test_windows_paths_in_the_conflist_on_windows(windows: None, key: str, path: str) -> None:
    keys = {"ipamdSocket": "tcp://127.0.0.1:50051", "ipamdTokenFile": "C:\\k\\ipamd.token", key: path}
    inv = cni.parse(ENV, conf(**keys))
    assert (inv.log_file if key == "logFile" else inv.ipamd_token_file) == path
    assert inv.ipamd_tcp == ("127.0.0.1", 50051) and inv.netns == GUID


@pytest.mark.parametrize("key", ["logFile", "ipamdTokenFile"])
@pytest.mark.parametrize("path", ["C:\\k\\x", "C:/k/x", "\\k\\x"])
def test_windows_paths_are_refused_on_linux(key: str, path: str) -> None:
    keys = {"ipamdSocket": "tcp://127.0.0.1:50051", "ipamdTokenFile": "/run/ipamd.token", key: path}
    err = parse_error(conf(**keys))
    assert (err.code, err.msg) == (7, f"{key}: {path!r} must be an absolute path")


@pytest.mark.parametrize("path", ["k\\x", "C:x", "\\\\server\\share\\x", "\\\\?\\C:\\x"])
def test_relative_unc_and_device_paths_are_refused_on_windows(windows: None, path: str) -> None:
    err = parse_error(conf(ipamdSocket="tcp://127.0.0.1:50051", ipamdTokenFile="C:\\k\\t", logFile=path))
    assert err.code == 7 and err.msg == f"logFile: {path!r} must be an absolute path"
    assert "C:\\..." in err.details


# ---- the transport on Windows: TCP only -------------------------------------------------------


@pytest.mark.parametrize(
    ("socket", "what"),
    [
        ("/var/run/cloud-cni/ipamd.sock", "'/var/run/cloud-cni/ipamd.sock' is a Unix socket path"),
        ("C:\\k\\ipamd.sock", "is a Unix socket path"),
        (None, "required"),
    ],
    ids=["posix-path", "windows-path", "absent"],
)
def test_a_unix_socket_is_code_7_on_windows_naming_tcp(windows: None, socket: str | None, what: str) -> None:
    keys: dict[str, object] = {"ipamdTokenFile": "C:\\k\\ipamd.token"}
    if socket is not None:
        keys["ipamdSocket"] = socket
    err = parse_error(conf(**keys))
    assert err.code == cni.INVALID_CONFIG
    assert err.msg.startswith("ipamdSocket: ") and what in err.msg
    assert "tcp://127.0.0.1:PORT" in err.msg and "Unix sockets" in err.msg


def test_a_unix_socket_is_still_the_default_on_linux() -> None:
    inv = cni.parse(ENV, conf())
    assert (inv.ipamd_socket, inv.ipamd_tcp) == (cni.DEFAULT_IPAMD_SOCKET, None)


def test_a_bad_tcp_address_on_windows_does_not_offer_a_unix_socket(windows: None) -> None:
    err = parse_error(conf(ipamdSocket="tcp://10.0.0.1:50051", ipamdTokenFile="C:\\k\\t"))
    assert err.code == 7 and "Unix socket" not in err.msg and "tcp://127.0.0.1:PORT" in err.msg


def test_version_never_fails_on_windows_without_an_ipamd_socket(windows: None) -> None:
    code, out = shim_main.run({"CNI_COMMAND": "VERSION"}, conf())
    assert code == 0 and json.loads(out)["supportedVersions"] == list(cni.SUPPORTED_VERSIONS)


def test_h2grpc_refuses_a_unix_socket_where_python_has_none(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delattr(_socket, "AF_UNIX")  # CPython on Windows
    with pytest.raises(ValueError, match="no Unix sockets"):
        h2grpc.unary_call("/run/ipamd.sock", "/x/Y", b"", timeout=1)


# ---- a path's parent: where the DEL spool goes --------------------------------------------------

PARENTS = [
    ("linux", "/var/run/cloud-cni/ipamd.sock", "/var/run/cloud-cni"),
    ("linux", "/ipamd.sock", "/"),
    ("linux", "/a\\b/ipamd.sock", "/a\\b"),  # a backslash is a file name's character on Linux
    ("win32", "C:\\ProgramData\\cloud-cni\\ipamd.token", "C:\\ProgramData\\cloud-cni"),
    ("win32", "C:/ProgramData/cloud-cni/ipamd.token", "C:/ProgramData/cloud-cni"),
    ("win32", "C:\\ipamd.token", "C:\\"),
    ("win32", "C:/ipamd.token", "C:/"),
    ("win32", "/k/ipamd.token", "/k"),
    ("win32", "\\ipamd.token", "\\"),
    ("win32", "C:\\k/mixed\\ipamd.token", "C:\\k/mixed"),
]


@pytest.mark.parametrize(("platform", "path", "parent"), PARENTS, ids=[f"{p}:{v!r}" for p, v, _ in PARENTS])
def test_parent_path(monkeypatch: pytest.MonkeyPatch, platform: str, path: str, parent: str) -> None:
    monkeypatch.setattr(cni, "PLATFORM", platform)
    assert cni.parent_path(path) == parent


SPOOLS = [
    ("linux", "/var/run/cloud-cni/ipamd.sock", "/var/run/cloud-cni/del-spool"),
    ("linux", "/ipamd.sock", "/del-spool"),
    ("win32", "C:\\ProgramData\\cloud-cni\\ipamd.token", "C:\\ProgramData\\cloud-cni\\del-spool"),
    ("win32", "C:/ProgramData/cloud-cni/ipamd.token", "C:/ProgramData/cloud-cni/del-spool"),
    ("win32", "C:\\ipamd.token", "C:\\del-spool"),
    ("win32", "/k/ipamd.token", "/k/del-spool"),
]


@pytest.mark.parametrize(("platform", "anchor", "where"), SPOOLS, ids=[f"{p}:{v!r}" for p, v, _ in SPOOLS])
def test_the_spool_is_where_the_daemon_drains_it(
    monkeypatch: pytest.MonkeyPatch, platform: str, anchor: str, where: str
) -> None:
    """The daemon's ``ipamd.spool.spool_dir`` is ``Path(anchor).parent / "del-spool"``: on Windows a
    WindowsPath, which compares as Windows does (either separator, any case)."""
    monkeypatch.setattr(cni, "PLATFORM", platform)
    assert spool.spool_dir(anchor) == where
    if platform == "win32":
        assert PureWindowsPath(where) == PureWindowsPath(anchor).parent / daemon_spool.SPOOL_DIRNAME
    else:
        assert where == str(daemon_spool.spool_dir(anchor))


NAME = st.text(string.ascii_letters + string.digits + "._-", min_size=1, max_size=8).filter(
    lambda n: n not in (".", "..")
)


@st.composite
def windows_paths(draw: st.DrawFn) -> str:
    root = draw(st.sampled_from(["C:\\", "c:/", "Z:\\", "\\", "/"]))
    names = draw(st.lists(NAME, min_size=1, max_size=5))
    seps = draw(st.lists(st.sampled_from(["\\", "/"]), min_size=len(names), max_size=len(names)))
    return root + "".join(n + s for n, s in zip(names, seps, strict=True))[:-1]


@given(windows_paths())
def test_parent_path_is_pathlibs_on_windows(path: str) -> None:
    old = cni.PLATFORM
    cni.PLATFORM = "win32"
    try:
        assert PureWindowsPath(cni.parent_path(path)) == PureWindowsPath(path).parent
        joined = cni.join_path(cni.parent_path(path), "del-spool")
        assert PureWindowsPath(joined) == PureWindowsPath(path).parent / "del-spool"
    finally:
        cni.PLATFORM = old


@given(st.lists(NAME, min_size=1, max_size=5))
def test_parent_path_is_pathlibs_on_linux(names: list[str]) -> None:
    path = "/" + "/".join(names)
    assert cni.parent_path(path) == str(PurePosixPath(path).parent)
    assert cni.join_path(cni.parent_path(path), "x") == str(PurePosixPath(path).parent / "x")


# ---- the plugin end to end, with Windows' rules -------------------------------------------------


def test_del_with_the_daemon_down_spools_beside_the_token_file_on_windows(
    windows: None, tmp_path: Path
) -> None:
    """Paths rooted on the current drive (/tmp/...) are Windows paths too: the whole DEL runs here."""
    token = tmp_path / "run" / "ipamd.token"
    token.parent.mkdir()
    log = tmp_path / "log" / "shim.log"
    stdin = conf(ipamdSocket="tcp://127.0.0.1:1", ipamdTokenFile=str(token), logFile=str(log))
    code, out = shim_main.run({**ENV, "CNI_COMMAND": "DEL", "CNI_NETNS": ""}, stdin)
    assert (code, out) == (0, "")
    [entry] = (token.parent / "del-spool").iterdir()
    assert entry.name == "cloud-cni.ctr01.eth0.json"
    assert json.loads(entry.read_bytes())["containerID"] == "ctr01"
    [line] = log.read_bytes().splitlines(keepends=True)
    assert line.endswith(b"}\n") and b"\r" not in line, "one JSON line, written as bytes"
    assert json.loads(line)["spooled"] == str(entry)


def test_add_over_a_unix_socket_is_code_7_end_to_end_on_windows(windows: None, tmp_path: Path) -> None:
    code, out = shim_main.run(ENV, conf(ipamdSocket=str(tmp_path / "ipamd.sock")))
    assert code == 1 and json.loads(out)["code"] == 7 and "tcp://127.0.0.1:PORT" in json.loads(out)["msg"]


# ---- the OS calls -------------------------------------------------------------------------------


def test_every_os_call_of_the_shim_exists_in_windows_nt(tmp_path: Path) -> None:
    """mypy, told the platform is win32, reads typeshed's ``nt`` for ``shim/_fs.py`` (and
    ``_socket`` for Windows in h2grpc): a call that Windows' Python lacks fails here."""
    for platform in ("win32", "linux"):
        cache = str(tmp_path / platform)
        done = subprocess.run(
            [sys.executable, "-m", "mypy", "--platform", platform, "--cache-dir", cache, "-p", "shim"],
            capture_output=True,
            text=True,
            cwd=ROOT,
            timeout=300,
        )
        assert done.returncode == 0, f"{platform}: {done.stdout}{done.stderr}"


def test_only_fs_touches_the_os_module() -> None:
    """posix/nt in one place, and no ``os`` anywhere in the shim (its import budget)."""
    for source in sorted((ROOT / "shim").glob("*.py")):
        text = source.read_text()
        for banned in ("import posix", "import nt", "import os\n", "from os "):
            if banned in text:
                assert source.name == "_fs.py" and banned in ("import posix", "import nt"), (source, banned)


def test_fs_writes_bytes_as_they_are(tmp_path: Path) -> None:
    path = str(tmp_path / "f")
    _fs.write_synced(path, b"a\nb\r\n\x1a")
    _fs.append(path, b"c\n")
    assert Path(path).read_bytes() == b"a\nb\r\n\x1ac\n"
    assert oct(os.stat(path).st_mode & 0o777) == oct(0o600 & ~current_umask())


def current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_fs_environ_is_the_environment_as_text() -> None:
    assert _fs.environ() == dict(os.environ)


def test_directory_fsync_is_skipped_where_directories_cannot_be_opened(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    with pytest.raises(FileNotFoundError):
        _fs.fsync_directory(str(tmp_path / "missing"))
    monkeypatch.setattr(_fs, "O_DIRECTORY", None)  # Windows
    _fs.fsync_directory(str(tmp_path / "missing"))
