"""deploy/windows/ stays honest: the HostProcess DaemonSet and its conflist agree with the daemon, the
plugin and the Linux deployment they are applied after.

The same approach as test_deploy.py (whose helpers are reused): every field against the Kubernetes API
models of the ``kubernetes`` client, env var names against ``ipamd.config.VARIABLES`` and their values
through ``Settings.from_env``, the conflist through the shim's own parser, install-shim's arguments
through the CLI's parser. Windows-only values are checked for what they are on Windows
(``check_datapath(..., "win32")``) and replaced only where this Linux host cannot run them
(HCN_BACKEND=fake to build the datapath). The state directory's ACL is read out of the init container's
script: exactly SYSTEM and Administrators, inherited.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import re
import shlex
import tomllib
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any

import pytest
import yaml

import shim.cni
from ipamd import install_shim
from ipamd.cli import make_parser
from ipamd.cloud.factory import make_provider
from ipamd.config import Settings, check_datapath, tcp_endpoint
from ipamd.daemon import make_datapath
from ipamd.errors import ConfigError
from tests.unit import test_deploy as linux
from tests.unit.test_deploy import DOWNWARD_API, MODELS, VAR_BY_NAME, port_of, unknown_fields

WINDOWS = linux.DEPLOY / "windows"
NAMESPACE = linux.NAMESPACE
# The daemon's state directory as the daemon and the plugin name it (ipamd/config.py takes only paths
# that start with "/"), and as Windows resolves it on the system drive.
STATE_DIR = "/ProgramData/cloud-cni"
SYSTEM_DRIVE = "C:"
SYSTEM_SID = "S-1-5-18"  # NT AUTHORITY\SYSTEM
ADMINISTRATORS_SID = "S-1-5-32-544"  # BUILTIN\Administrators
# What the init container's icacls must grant: full control to each, inherited by files ((OI)) and
# directories ((CI)) below.
GRANTS = {f"*{SYSTEM_SID}:(OI)(CI)F", f"*{ADMINISTRATORS_SID}:(OI)(CI)F"}
NETNS_GUID = "5f7b2c1e-8d4a-4b3e-9a6f-0c1d2e3f4a5b"  # containerd's HCN namespace ID, as CNI_NETNS
# Linux-only securityContext fields, pod and container level: meaningless in a Windows pod, and
# refused by the API once spec.os.name is windows.
LINUX_ONLY_POD = {"seLinuxOptions", "seccompProfile", "appArmorProfile", "fsGroup",
                  "fsGroupChangePolicy", "sysctls", "runAsUser", "runAsGroup", "supplementalGroups",
                  "supplementalGroupsPolicy", "seLinuxChangePolicy"}  # fmt: skip
LINUX_ONLY_CONTAINER = {"seLinuxOptions", "seccompProfile", "appArmorProfile", "capabilities",
                        "readOnlyRootFilesystem", "privileged", "allowPrivilegeEscalation", "procMount",
                        "runAsUser", "runAsGroup"}  # fmt: skip


# --- loading -------------------------------------------------------------------------------------


def manifest_files() -> list[Path]:
    return sorted(p for p in WINDOWS.glob("*.yaml") if p.name != "kustomization.yaml")


def load_objects() -> list[dict[str, Any]]:
    return [doc for path in manifest_files() for doc in yaml.safe_load_all(path.read_text()) if doc]


def one(kind: str, name: str | None = None) -> dict[str, Any]:
    found = [
        o for o in load_objects() if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)
    ]
    assert len(found) == 1, f"expected exactly one {kind} {name or ''} in deploy/windows/, found {len(found)}"
    return found[0]


def daemonset() -> dict[str, Any]:
    return one("DaemonSet", "cloud-cni-windows")


def pod_spec(ds: dict[str, Any] | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = (ds or daemonset())["spec"]["template"]["spec"]
    return spec


def container(name: str = "ipamd") -> dict[str, Any]:
    found = [c for c in pod_spec()["containers"] if c["name"] == name]
    assert len(found) == 1, f"the Windows DaemonSet has no single container {name}"
    return found[0]


def init_container(name: str) -> dict[str, Any]:
    inits = pod_spec().get("initContainers", [])
    assert [c["name"] for c in inits] == ["state-dir", "install-cni"], "lock the state dir, then install"
    return next(c for c in inits if c["name"] == name)


def all_containers(spec: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    spec = spec or pod_spec()
    return [*spec.get("initContainers", []), *spec["containers"]]


def conflist() -> dict[str, Any]:
    data: dict[str, Any] = json.loads((WINDOWS / "10-cloud-cni.conflist").read_text())
    return data


def daemon_env() -> dict[str, str]:
    """The environment the Windows ipamd container starts with: the Linux deployment's ConfigMaps it
    names (envFrom), then its own env."""
    return linux.daemon_env(container())


def daemon_settings() -> Settings:
    return Settings.from_env(daemon_env())


def on_system_drive(rooted: str) -> str:
    """A path rooted without a drive (``/ProgramData/x``), as Windows resolves it on the system drive."""
    assert rooted.startswith("/") and not rooted.startswith("//"), rooted
    return SYSTEM_DRIVE + rooted.replace("/", "\\")


def plugin_config() -> dict[str, Any]:
    """What the runtime hands the plugin on stdin: its entry of the list, with the list's cniVersion and
    name (libcni's buildOneConfig)."""
    conf = conflist()
    return {"cniVersion": conf["cniVersion"], "name": conf["name"], **conf["plugins"][0]}


# --- the state directory's ACL, read out of the init container's script --------------------------

_DIR = re.compile(r"\$dir\s*=\s*'([^']*)'")
_ALLOWED = re.compile(r"\$allowed\s*=\s*@\(([^)]*)\)")
_CHANGES_ACL = ("/grant", "/deny", "/remove", "/inheritance", "/reset", "/setowner", "/restore")


def icacls_calls(script: str) -> list[list[str]]:
    """The arguments of every top-level ``icacls.exe`` statement of the PowerShell script."""
    calls = []
    for statement in script.split(";"):
        if statement.strip().lower().startswith("icacls.exe"):
            calls.append(shlex.split(statement, posix=True)[1:])
    return calls


def acl_problems(script: str, directory: str) -> list[str]:
    """Why the script does not leave ``directory`` readable by SYSTEM and Administrators only, with
    the ACL inherited below it; [] when it does."""
    problems = []
    found = _DIR.findall(script)
    if found != [directory]:
        problems.append(f"$dir is {found}, not {directory!r}")
    changes = [call for call in icacls_calls(script) if any(a.lower().startswith(_CHANGES_ACL) for a in call)]
    if len(changes) != 1:
        return [*problems, f"expected one icacls call that sets the ACL, found {changes}"]
    call = [a for a in changes[0] if a.lower() != "/q"]
    if call[0] != "$dir":
        problems.append(f"icacls changes {call[0]}, not $dir")
    switches = [a.lower() for a in call[1:] if a.startswith("/")]
    if switches != ["/inheritance:r", "/grant:r"]:
        problems.append(f"switches {switches}: /inheritance:r (drop what C:\\ProgramData passes down) "
                        "and /grant:r (replace, not add to, explicit grants), nothing else")  # fmt: skip
    grants = [a for a in call[1:] if not a.startswith("/")]
    if set(grants) != GRANTS or len(grants) != len(GRANTS):
        problems.append(f"grants {grants}, not exactly {sorted(GRANTS)}")
    allowed = _ALLOWED.findall(script)
    sids = {s.strip().strip("'") for s in allowed[0].split(",")} if len(allowed) == 1 else set()
    if sids != {SYSTEM_SID, ADMINISTRATORS_SID}:
        problems.append(f"the check afterwards allows {sids or allowed}, not SYSTEM and Administrators")
    if script.find("ReparsePoint") > script.find("icacls.exe") or "ReparsePoint" not in script:
        problems.append("a link or junction must be refused before icacls follows it")
    return problems


# --- every file parses, every field is a Kubernetes API field ------------------------------------


def test_only_the_daemonset_and_its_conflist_no_rbac_of_its_own() -> None:
    objects = load_objects()
    assert sorted((o["kind"], o["metadata"]["name"]) for o in objects) == [
        ("ConfigMap", "cloud-cni-windows-conflist"),
        ("DaemonSet", "cloud-cni-windows"),
    ], "the ServiceAccount, RBAC, admission policy and settings come from deploy/ (applied first)"
    linux_names = {(o["kind"], o["metadata"]["name"]) for o in linux.load_objects()}
    for o in objects:
        assert o["metadata"].get("namespace") == NAMESPACE, o["metadata"]["name"]
        assert (o["kind"], o["metadata"]["name"]) not in linux_names, "would replace a Linux object"


def test_every_field_is_a_kubernetes_api_field() -> None:
    bad = []
    for o in load_objects():
        bad += unknown_fields(o, MODELS[o["kind"]], f"{o['kind']}/{o['metadata']['name']}")
    assert bad == [], f"not fields of the Kubernetes API: {bad}"


def test_the_field_check_catches_a_misspelt_windows_field() -> None:
    """The validator fails where the API server would drop a field: hostProcess spelt in lower case
    would leave a plain Windows container that cannot reach HCN or the node's files."""
    ds = copy.deepcopy(daemonset())
    options = pod_spec(ds)["securityContext"]["windowsOptions"]
    options["hostprocess"] = options.pop("hostProcess")
    pod_spec(ds)["containers"][0]["volumeMount"] = []
    bad = list(unknown_fields(ds, "V1DaemonSet", "DaemonSet"))
    assert bad == [
        "DaemonSet.spec.template.spec.securityContext.windowsOptions.hostprocess",
        "DaemonSet.spec.template.spec.containers[0].volumeMount",
    ]


def test_configmap_values_are_strings_and_the_conflist_equals_its_file() -> None:
    data = one("ConfigMap", "cloud-cni-windows-conflist")["data"]
    assert set(data) == {"10-cloud-cni.conflist"}
    assert all(isinstance(v, str) for v in data.values())
    assert json.loads(data["10-cloud-cni.conflist"]) == conflist()


# --- a HostProcess pod as SYSTEM, on every Windows node ------------------------------------------


def test_host_process_as_system_in_the_node_network_on_windows_nodes() -> None:
    spec = pod_spec()
    assert spec["hostNetwork"] is True, "the API refuses a HostProcess pod without hostNetwork"
    options = spec["securityContext"]["windowsOptions"]
    assert options == {"hostProcess": True, "runAsUserName": "NT AUTHORITY\\SYSTEM"}
    for c in all_containers():
        own = c.get("securityContext", {}).get("windowsOptions", {})
        assert own.get("hostProcess", True) is True, f"{c['name']}: a HostProcess pod holds only HostProcess"
        assert own.get("runAsUserName", options["runAsUserName"]) == "NT AUTHORITY\\SYSTEM", c["name"]
    assert spec["nodeSelector"] == {"kubernetes.io/os": "windows"}
    assert spec["os"] == {"name": "windows"}


def test_no_linux_only_security_fields() -> None:
    """With spec.os.name windows the API refuses these; HostProcess has no capabilities to name."""
    spec = pod_spec()
    assert set(spec.get("securityContext", {})) & LINUX_ONLY_POD == set()
    for c in all_containers():
        assert set(c.get("securityContext", {})) & LINUX_ONLY_CONTAINER == set(), c["name"]


def test_scheduled_like_the_linux_daemonset() -> None:
    """Same priority, tolerations, account, rollout and grace period as deploy/daemonset.yaml."""
    ds, spec, lspec = daemonset(), pod_spec(), linux.pod_spec()
    for key in ("priorityClassName", "tolerations", "serviceAccountName", "terminationGracePeriodSeconds"):
        assert spec[key] == lspec[key], key
    assert spec["priorityClassName"] == "system-node-critical"
    assert {"operator": "Exists"} in spec["tolerations"]
    assert ds["spec"]["updateStrategy"] == linux.daemonset()["spec"]["updateStrategy"]
    assert "dnsPolicy" not in spec or spec["dnsPolicy"] in ("ClusterFirst", "Default")


def test_selectors_do_not_overlap_the_linux_daemonset() -> None:
    ds, lds = daemonset(), linux.daemonset()
    mine, theirs = ds["spec"]["selector"]["matchLabels"], lds["spec"]["selector"]["matchLabels"]
    assert mine.items() <= ds["spec"]["template"]["metadata"]["labels"].items()
    assert not theirs.items() <= ds["spec"]["template"]["metadata"]["labels"].items()
    assert not mine.items() <= lds["spec"]["template"]["metadata"]["labels"].items()


def test_reuses_the_linux_account_and_settings() -> None:
    account = pod_spec()["serviceAccountName"]
    assert linux.one("ServiceAccount", account)["metadata"]["namespace"] == NAMESPACE
    binding = linux.one("ClusterRoleBinding")
    assert {"kind": "ServiceAccount", "name": account, "namespace": NAMESPACE} in binding["subjects"]
    assert [s["configMapRef"]["name"] for s in container()["envFrom"]] == ["cloud-cni-config"]
    assert linux.one("ConfigMap", "cloud-cni-config")


# --- the daemon's settings -----------------------------------------------------------------------


def test_every_env_var_set_is_a_daemon_variable() -> None:
    names = {v["name"] for c in all_containers() for v in c.get("env", [])}
    assert {"DATAPATH", "HCN_BACKEND", "IPAMD_SOCKET", "IPAMD_TOKEN_FILE", "CHECKPOINT_PATH"} <= names
    unknown = sorted(names - set(VAR_BY_NAME))
    assert unknown == [], f"the daemon reads no such variable (ipamd/config.py VARIABLES): {unknown}"
    assert container()["env"][0]["name"] == "CLOUD_PROVIDER", "one overlay path picks it on both OSes"


def test_the_env_parses_and_selects_the_windows_datapath_on_windows_only(tmp_path: Path) -> None:
    settings = daemon_settings()
    assert (settings.datapath, settings.hcn_backend) == ("windows", "computenetwork")
    check_datapath(settings, "win32")  # what a Windows node's daemon asks at start
    with pytest.raises(ConfigError) as refused:
        check_datapath(settings, "linux")
    assert refused.value.variable == "HCN_BACKEND", "the node's HCN exists only on Windows"
    # Only the Windows-only part replaced: the same datapath on the fake HCN, built here.
    fake = dataclasses.replace(settings, hcn_backend="fake", hcn_fake_state=str(tmp_path / "hcn.json"))
    datapath = make_datapath(fake)
    try:
        assert datapath.name == "windows"
    finally:
        datapath.close()
    make_provider(dataclasses.replace(settings, sim_state_path=str(tmp_path / "sim.json")))
    assert settings.node_name == DOWNWARD_API["spec.nodeName"]


def test_rpc_is_loopback_tcp_and_the_token_lives_in_the_locked_state_dir() -> None:
    s = daemon_settings()
    assert tcp_endpoint(s.ipamd_socket) == ("127.0.0.1", 50051)
    assert s.ipamd_token_file is not None
    for path in (s.ipamd_token_file, s.checkpoint_path):
        assert str(PurePosixPath(path).parent) == STATE_DIR, path
    assert s.shutdown_timeout + 10 <= pod_spec()["terminationGracePeriodSeconds"]


def test_state_paths_are_rooted_because_the_config_refuses_a_drive() -> None:
    """Why the env says /ProgramData/... and not C:\\ProgramData\\...: ipamd/config.py takes only paths
    that start with "/". When it learns drive letters, write the drive and drop this test."""
    env = {**daemon_env(), "CHECKPOINT_PATH": on_system_drive(STATE_DIR + "/ipam.json")}
    with pytest.raises(ConfigError) as refused:
        Settings.from_env(env)
    assert refused.value.variable == "CHECKPOINT_PATH"


def test_probes_and_metrics_follow_the_settings() -> None:
    s = daemon_settings()
    assert s.introspection_bind is not None
    host, _, port = s.introspection_bind.rpartition(":")
    c = container()
    for kind in ("startupProbe", "readinessProbe", "livenessProbe"):
        get = c[kind]["httpGet"]
        assert (get.get("host"), get["port"], get["path"]) == (host, int(port), "/healthz"), kind
        assert c[kind] == linux.container()[kind], f"{kind}: as on Linux"
    metrics = port_of(s.metrics_bind)
    assert {p["name"]: p["containerPort"] for p in c["ports"]} == {"metrics": metrics}
    assert daemonset()["spec"]["template"]["metadata"]["annotations"]["prometheus.io/port"] == str(metrics)
    assert c["resources"] == linux.container()["resources"], "the Linux figures until Windows is measured"


# --- the state directory -------------------------------------------------------------------------


def test_the_state_dir_is_locked_to_system_and_administrators_before_anything_runs() -> None:
    c = init_container("state-dir")
    assert c["command"][0] == "powershell.exe" and c["command"][-1] == "-Command"
    [script] = c["args"]
    assert acl_problems(script, on_system_drive(STATE_DIR)) == []
    assert '"' not in script, "double quotes would be escaped again on the way to powershell.exe"


@pytest.mark.parametrize(
    ("old", "new", "problem"),
    [
        pytest.param("'*S-1-5-32-544:(OI)(CI)F'", "'*S-1-5-32-544:(OI)(CI)F' '*S-1-5-32-545:(OI)(CI)RX'",
                     "grants", id="users-can-read"),
        pytest.param("/grant:r", "/grant", "switches", id="grant-adds-to-explicit"),
        pytest.param("/inheritance:r ", "", "switches", id="inherits-programdata"),
        pytest.param("'*S-1-5-18:(OI)(CI)F'", "'*S-1-5-18:F'", "grants", id="not-inherited-by-new-files"),
        pytest.param("cloud-cni'", "cloud-cni2'", "$dir", id="another-directory"),
        pytest.param("'S-1-5-32-544')", "'S-1-5-32-544', 'S-1-5-11')", "allows", id="check-allows-users"),
    ],
)  # fmt: skip
def test_the_acl_check_catches_a_wider_or_wrong_acl(old: str, new: str, problem: str) -> None:
    script = init_container("state-dir")["args"][0]
    assert old in script
    problems = acl_problems(script.replace(old, new, 1), on_system_drive(STATE_DIR))
    assert problems and problem in problems[0], problems


def test_the_plugin_log_and_del_queue_are_under_the_locked_state_dir() -> None:
    plugin = conflist()["plugins"][0]
    for path in (plugin["logFile"], plugin["ipamdTokenFile"]):
        assert PurePosixPath(path).is_relative_to(STATE_DIR), path  # the DEL queue: beside the token


# --- the conflist, through the shim's parser -----------------------------------------------------


def test_conflist_is_a_cloud_cni_network_like_the_linux_one() -> None:
    conf, lconf = conflist(), linux.conflist()
    assert (conf["cniVersion"], conf["name"]) == (lconf["cniVersion"], lconf["name"])
    assert conf["cniVersion"] in shim.cni.SUPPORTED_VERSIONS
    # portmap is an iptables plugin: no Windows build, so hostPort is not offered (docs/windows.md)
    assert [p["type"] for p in conf["plugins"]] == [install_shim.PLUGIN]


def test_the_plugin_asks_for_the_pods_dns_on_windows_only() -> None:
    """containerd sends runtimeConfig.dns (kubelet's cluster DNS) only to a plugin that declares the
    capability; Windows pods get their resolver from the HCN endpoint, Linux pods from resolv.conf."""
    assert conflist()["plugins"][0]["capabilities"] == {"dns": True}
    assert "dns" not in linux.conflist()["plugins"][0].get("capabilities", {})


@pytest.mark.parametrize("platform", ["linux", "win32"])
@pytest.mark.parametrize(
    "env",
    [
        pytest.param({"CNI_COMMAND": "ADD", "CNI_NETNS": NETNS_GUID}, id="add"),
        pytest.param({"CNI_COMMAND": "DEL", "CNI_NETNS": ""}, id="del-namespace-gone"),
    ],
)
def test_the_shim_accepts_the_conflist_and_finds_the_daemon(
    env: dict[str, str], platform: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As the plugin parses it here, and with the rules it applies on Windows (shim.cni.PLATFORM)."""
    if platform == "win32":
        monkeypatch.setattr(shim.cni, "PLATFORM", "win32")
    call = {"CNI_CONTAINERID": "0123456789abcdef", "CNI_IFNAME": "eth0", "CNI_PATH": r"C:\opt\cni\bin", **env}
    inv = shim.cni.parse(call, json.dumps(plugin_config()).encode())
    s = daemon_settings()
    assert inv.ipamd_socket == s.ipamd_socket
    assert inv.ipamd_tcp == tcp_endpoint(s.ipamd_socket)
    assert inv.ipamd_token_file == s.ipamd_token_file
    assert inv.log_file == conflist()["plugins"][0]["logFile"]
    assert inv.netns == env["CNI_NETNS"]
    if env["CNI_COMMAND"] == "ADD":  # what containerd adds for the capability
        config = {**plugin_config(), "runtimeConfig": {"dns": {"servers": ["10.96.0.10"]}}}
        assert shim.cni.parse(call, json.dumps(config).encode()).dns == {
            "servers": ["10.96.0.10"],
            "searches": [],
            "options": [],
        }


def test_the_shim_refuses_the_conflist_without_its_token_file() -> None:
    config = {k: v for k, v in plugin_config().items() if k != "ipamdTokenFile"}
    call = {"CNI_COMMAND": "ADD", "CNI_CONTAINERID": "c1", "CNI_IFNAME": "eth0", "CNI_NETNS": NETNS_GUID}
    with pytest.raises(shim.cni.CniError) as refused:
        shim.cni.parse(call, json.dumps(config).encode())
    assert refused.value.code == shim.cni.INVALID_CONFIG and "ipamdTokenFile" in refused.value.msg


# --- install-shim --------------------------------------------------------------------------------


def test_install_cni_runs_install_shim_with_the_linux_flags_on_windows_paths() -> None:
    c, lc = init_container("install-cni"), linux.init_container()
    assert c["command"] == lc["command"] == ["cloud-cni", "install-shim"]
    assert [a for a in c["args"] if a.startswith("--")] == [a for a in lc["args"] if a.startswith("--")]
    args = make_parser().parse_args([*c["command"][1:], *c["args"]])  # the CLI accepts exactly these
    assert (args.cni_bin_dir, args.cni_conf_dir) == (r"C:\opt\cni\bin", r"C:\etc\cni\net.d")
    # HostProcess: the node's directories directly, so the plugin names the path it was written to
    assert args.host_runtime_dir == args.runtime_dir == r"C:\opt\cni\cloud-cni"
    for path in (args.cni_bin_dir, args.runtime_dir, args.cni_conf_dir, args.conflist):
        assert PureWindowsPath(path).drive == SYSTEM_DRIVE, path
    # the conflist comes from the shipped ConfigMap, under its own name
    source = PureWindowsPath(args.conflist)
    mounts = [m for m in c["volumeMounts"] if PureWindowsPath(m["mountPath"]) == source.parent]
    assert len(mounts) == 1 and mounts[0].get("readOnly") is True
    volume = next(v for v in pod_spec()["volumes"] if v["name"] == mounts[0]["name"])
    assert source.name in one("ConfigMap", volume["configMap"]["name"])["data"]
    assert source.name == "10-cloud-cni.conflist"


def test_volumes_resolve_and_none_is_a_host_path() -> None:
    """A HostProcess container reaches the node's files directly: hostPath volumes would only add a
    second name for them."""
    volumes = {v["name"]: v for v in pod_spec()["volumes"]}
    used = {m["name"] for c in all_containers() for m in c.get("volumeMounts", [])}
    assert used == set(volumes)
    assert all("hostPath" not in v for v in volumes.values())


# --- kustomization -------------------------------------------------------------------------------


def test_kustomization_lists_the_windows_manifests_and_the_linux_image() -> None:
    kustomization = yaml.safe_load((WINDOWS / "kustomization.yaml").read_text())
    assert set(kustomization["resources"]) == {p.name for p in manifest_files()}
    linux_kustomization = yaml.safe_load((linux.DEPLOY / "kustomization.yaml").read_text())
    assert kustomization["images"] == linux_kustomization["images"], "one image reference (issue 15)"
    assert {c["image"] for c in all_containers()} == {i["name"] for i in kustomization["images"]}
    version = tomllib.loads((linux.ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert kustomization["images"][0]["newTag"] == version
    assert not any("windows" in r for r in linux_kustomization["resources"]), "applied on its own"
