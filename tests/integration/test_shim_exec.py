"""The CNI plugin exec'd as a container runtime calls it: CNI env + network config on stdin.

The plugin under test is the `cloud-cni-shim` pip put in the environment's bin/, run with a minimal
environment (no PYTHONPATH), against the real daemon on its real socket.
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from .conftest import DaemonProcess

pytestmark = pytest.mark.integration

SHIM = Path(sys.executable).parent / "cloud-cni-shim"
VERSIONS = ["0.4.0", "1.0.0", "1.1.0"]
# What containerd's CRI sends (reference/lab-facts.md).
CRI_ARGS = (
    "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME={pod};"
    "K8S_POD_INFRA_CONTAINER_ID={cid};K8S_POD_UID=uid-{pod}"
)


@dataclass
class Done:
    code: int
    stdout: str
    stderr: str

    @property
    def json(self) -> Any:
        return json.loads(self.stdout)


def netconf(socket: str, version: str = "1.0.0", **extra: Any) -> dict[str, Any]:
    conf: dict[str, Any] = {
        "cniVersion": version,
        "name": "cloud-cni",
        "type": "cloud-cni",
        "ipamdSocket": socket,
        "logFile": str(Path(socket).parent.parent / "shim.log"),
    }
    conf.update(extra)
    return conf


def shim(
    command: str,
    conf: dict[str, Any] | bytes,
    *,
    cid: str = "ctr0001",
    ifname: str = "eth0",
    netns: str | None = None,
    args: str | None = None,
    env: dict[str, str] | None = None,
) -> Done:
    environ = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "CNI_COMMAND": command, "CNI_PATH": "/opt/cni/bin"}
    if command in ("ADD", "DEL", "CHECK"):
        environ.update(
            CNI_CONTAINERID=cid,
            CNI_IFNAME=ifname,
            CNI_NETNS=f"/var/run/netns/{cid}" if netns is None else netns,
            CNI_ARGS=CRI_ARGS.format(pod=cid, cid=cid) if args is None else args,
        )
    if env is not None:
        environ = {k: v for k, v in {**environ, **env}.items() if v is not None}
    stdin = conf if isinstance(conf, bytes) else json.dumps(conf).encode()
    proc = subprocess.run([str(SHIM)], input=stdin, env=environ, capture_output=True, timeout=60, check=False)
    return Done(proc.returncode, proc.stdout.decode(), proc.stderr.decode())


def assert_cni_error(done: Done, code: int, needle: str = "") -> dict[str, Any]:
    assert done.code != 0, done
    err = done.json
    assert set(err) >= {"cniVersion", "code", "msg"}, err
    assert err["code"] == code, err
    assert needle in err["msg"] + err.get("details", ""), err
    return dict(err)


@pytest.fixture
def served(daemon: DaemonProcess) -> DaemonProcess:
    return daemon.start()


@pytest.mark.parametrize("version", VERSIONS)
def test_add_check_del_lifecycle_in_each_version(served: DaemonProcess, version: str) -> None:
    conf = netconf(served.socket, version)
    add = shim("ADD", conf, cid=f"life{version.replace('.', '')}")
    assert add.code == 0, add
    result = add.json
    assert result["cniVersion"] == version
    [ip] = result["ips"]
    assert ip["address"].endswith("/32")
    if version == "0.4.0":
        assert ip["version"] == "4"
    else:
        assert "version" not in ip
    assert add.stderr == ""
    again = shim("ADD", conf, cid=f"life{version.replace('.', '')}")
    assert again.code == 0 and again.json["ips"][0]["address"] == ip["address"], "ADD twice: same IP"
    check = shim("CHECK", {**conf, "prevResult": result}, cid=f"life{version.replace('.', '')}")
    assert check.code == 0 and check.stdout == "", check
    first = shim("DEL", {**conf, "prevResult": result}, cid=f"life{version.replace('.', '')}")
    assert first.code == 0 and first.stdout == "", first
    second = shim("DEL", conf, cid=f"life{version.replace('.', '')}", netns="")
    assert second.code == 0 and second.stdout == "", "DEL twice, with empty CNI_NETNS, succeeds"
    gone = shim("CHECK", {**conf, "prevResult": result}, cid=f"life{version.replace('.', '')}")
    assert_cni_error(gone, 3)
    assert served.get("/v1/pool")["assigned"] == 0


def test_version_verb() -> None:
    done = shim("VERSION", {"cniVersion": "1.0.0"})
    assert done.code == 0
    assert set(done.json["supportedVersions"]) == set(VERSIONS)


@pytest.mark.parametrize(
    ("command", "version", "code"),
    [
        ("CHECK", "0.3.1", 1),
        ("GC", "1.0.0", 1),
        ("STATUS", "1.0.0", 1),
        ("ADD", "0.2.0", 1),
        ("ADD", "9.9.9", 1),
    ],
    ids=["check-0.3.1", "gc-1.0.0", "status-1.0.0", "add-0.2.0", "add-9.9.9"],
)
def test_verbs_need_their_minimum_version(
    served: DaemonProcess, command: str, version: str, code: int
) -> None:
    assert_cni_error(shim(command, netconf(served.socket, version)), code)


@pytest.mark.parametrize(
    ("env", "needle"),
    [
        ({"CNI_CONTAINERID": None}, "CNI_CONTAINERID"),
        ({"CNI_CONTAINERID": "-bad"}, "CNI_CONTAINERID"),
        ({"CNI_IFNAME": None}, "CNI_IFNAME"),
        ({"CNI_IFNAME": "a-very-long-ifname"}, "CNI_IFNAME"),
        ({"CNI_IFNAME": "eth/0"}, "CNI_IFNAME"),
        ({"CNI_NETNS": None}, "CNI_NETNS"),
    ],
    ids=["no-id", "bad-id", "no-ifname", "long-ifname", "slash-ifname", "no-netns"],
)
@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("command", ["ADD", "DEL", "CHECK"])
def test_missing_or_invalid_env_is_code_4_naming_it(
    served: DaemonProcess, env: dict[str, str], needle: str, version: str, command: str
) -> None:
    if command == "DEL" and needle == "CNI_NETNS":
        pytest.skip("DEL may have an empty CNI_NETNS: the lifecycle test covers it")
    conf = netconf(served.socket, version, prevResult={"cniVersion": version, "ips": []})
    done = shim(command, conf, env=env)
    assert_cni_error(done, 4, needle)
    assert served.get("/v1/pool")["assigned"] == 0


@pytest.mark.parametrize(
    ("stdin", "code"),
    [(b"", 6), (b"{not json", 6), (b"[]", 6), (b'{"cniVersion": "1.1.0"}', 7)],
    ids=["empty", "broken", "array", "no-name"],
)
@pytest.mark.parametrize("command", ["ADD", "DEL", "CHECK", "GC", "STATUS"])
def test_malformed_stdin(served: DaemonProcess, stdin: bytes, code: int, command: str) -> None:
    done = shim(command, stdin)
    err = done.json
    assert done.code != 0 and err["code"] in (code, 6, 7)


def test_unknown_cni_args_rejected_unless_ignore_unknown(served: DaemonProcess) -> None:
    conf = netconf(served.socket)
    assert_cni_error(shim("ADD", conf, args="FOO=bar"), 2, "FOO")
    assert shim("ADD", conf, args="IgnoreUnknown=1;FOO=bar").code == 0


def test_fifty_shims_in_parallel_get_distinct_ips(daemon: DaemonProcess) -> None:
    daemon.start(SIM_INSTANCE_TYPE="c5.18xlarge", WARM_IP_TARGET="10", MINIMUM_IP_TARGET="20")
    conf = netconf(daemon.socket)
    with ThreadPoolExecutor(50) as pool:
        results = list(pool.map(lambda i: shim("ADD", conf, cid=f"par{i:03d}"), range(50)))
    assert all(r.code == 0 for r in results), [r for r in results if r.code][:3]
    ips = {r.json["ips"][0]["address"] for r in results}
    assert len(ips) == 50
    assert daemon.get("/v1/pool")["assigned"] == 50


def test_gc_with_valid_attachments_and_without_the_key(served: DaemonProcess) -> None:
    conf = netconf(served.socket)
    for cid in ("keep01", "stale01"):
        assert shim("ADD", conf, cid=cid).code == 0
    gc11 = netconf(served.socket, "1.1.0")
    noop = shim("GC", gc11)
    assert noop.code == 0 and noop.stdout == ""
    assert served.get("/v1/pool")["assigned"] == 2, "GC without cni.dev/valid-attachments does nothing"
    done = shim("GC", {**gc11, "cni.dev/valid-attachments": [{"containerID": "keep01", "ifname": "eth0"}]})
    assert done.code == 0 and done.stdout == ""
    assert [a["container_id"] for a in served.get("/v1/assignments")] == ["keep01"]


def test_status_ready(served: DaemonProcess) -> None:
    served.wait_pool(lambda p: p["available"] > 0)
    done = shim("STATUS", netconf(served.socket, "1.1.0"))
    assert done.code == 0 and done.stdout == ""


@pytest.mark.parametrize(
    ("command", "code"),
    [("ADD", 11), ("CHECK", 11), ("STATUS", 50), ("GC", 11)],
    ids=["add", "check", "status", "gc"],
)
def test_daemon_down(tmp_path: Path, command: str, code: int) -> None:
    conf = netconf(
        str(tmp_path / "run" / "ipamd.sock"), "1.1.0", prevResult={"cniVersion": "1.1.0", "ips": []}
    )
    if command == "GC":
        conf["cni.dev/valid-attachments"] = []
    assert_cni_error(shim(command, conf), code)


def test_del_succeeds_when_the_sockets_directory_does_not_exist(tmp_path: Path) -> None:
    """No daemon ever ran there, so no state to release: nothing is queued and DEL succeeds (the
    kill soak found DEL answering 999 here)."""
    done = shim("DEL", netconf(str(tmp_path / "never" / "ipamd.sock"), "1.0.0"))
    assert (done.code, done.stdout) == (0, "")
    assert not (tmp_path / "never").exists()


def test_del_with_daemon_down_is_queued_and_drained_on_restart(daemon: DaemonProcess) -> None:
    daemon.start()
    conf = netconf(daemon.socket)
    ips = {}
    for cid in ("spool01", "spool02", "spool03"):
        add = shim("ADD", conf, cid=cid)
        ips[cid] = add.json["ips"][0]["address"]
    assert daemon.stop() == 0
    for cid in ("spool01", "spool02"):
        done = shim("DEL", conf, cid=cid)
        assert done.code == 0 and done.stdout == "", "DEL never blocks pod termination"
    queued = sorted(p.name for p in (Path(daemon.socket).parent / "del-spool").iterdir())
    assert len(queued) == 2, queued
    daemon.start()
    # Drained before the socket served anything: the first thing a client sees is the result.
    assert [a["container_id"] for a in daemon.get("/v1/assignments")] == ["spool03"]
    assert not list((Path(daemon.socket).parent / "del-spool").glob("*.json"))
    assert any(e.get("event") == "spooled_dels_drained" for e in daemon.events())


def test_logs_go_to_the_log_file_never_stdout(served: DaemonProcess) -> None:
    conf = netconf(served.socket)
    done = shim("ADD", conf, cid="logged01")
    assert done.code == 0 and done.stderr == ""
    log = Path(conf["logFile"]).read_text().splitlines()
    record = json.loads(log[-1])
    assert record["container_id"] == "logged01" and record["result"] == "ok"


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    stdin=st.one_of(
        st.binary(max_size=200),
        st.recursive(
            st.none() | st.booleans() | st.integers() | st.text(max_size=10),
            lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=8), c, max_size=4),
            max_leaves=8,
        ).map(lambda v: json.dumps(v).encode()),
        st.fixed_dictionaries(
            {"cniVersion": st.sampled_from([*VERSIONS, "0.3.1", "x"]), "name": st.text(max_size=8)},
            optional={
                "type": st.text(max_size=8),
                "ipamdSocket": st.text(max_size=20),
                "prevResult": st.integers(),
            },
        ).map(lambda v: json.dumps(v).encode()),
    ),
    command=st.sampled_from(["ADD", "DEL", "CHECK", "GC", "STATUS", "VERSION", "BOGUS", ""]),
)
def test_fuzzed_stdin_never_tracebacks(stdin: bytes, command: str) -> None:
    done = shim(command, stdin, args="")
    assert "Traceback" not in done.stdout + done.stderr
    if done.stdout:
        out = json.loads(done.stdout)
        if done.code != 0:
            assert isinstance(out["code"], int) and isinstance(out["msg"], str)
    else:
        assert done.code == 0


def test_shim_imports_nothing_heavy() -> None:
    probe = "import sys; import shim.main; print(sorted(m for m in sys.modules))"
    root = Path(__file__).resolve().parents[2]
    out = subprocess.run(
        [sys.executable, "-I", "-S", "-c", f"import sys; sys.path.insert(0, {str(root)!r}); {probe}"],
        capture_output=True,
        text=True,
        check=True,
        env={k: v for k, v in os.environ.items() if not k.startswith("PYTHON")},
    ).stdout
    modules = set(ast.literal_eval(out))
    for heavy in ("grpc", "google", "json", "re", "socket", "ipamd", "typing", "dataclasses", "logging"):
        assert heavy not in modules, heavy
