"""Every deployment of deploy/, as ``kubectl kustomize`` builds it, is valid for the Kubernetes versions
EKS and AKS run and agrees with the daemon it deploys.

Deployments (``OVERLAYS``): deploy/ (sim), deploy/overlays/aws/ and azure/, and for Windows nodes
deploy/windows/ (sim), deploy/overlays/aws-windows/ and azure-windows/, each Windows one read together
with the Linux one applied before it (its ConfigMap and ServiceAccount).

Schemas: kubernetes-validate's strict JSON schemas (every object closed, so an unknown or misspelt
field fails, as it does in a strict API server), one set per Kubernetes minor version, shipped in the
package: offline. ``KUBERNETES_VERSIONS`` runs from 1.30, the oldest this deployment supports (the
admission policy is admissionregistration.k8s.io/v1, which 1.29 lacks) to 1.37, the newest that
kubernetes-validate 1.37.0 ships; EKS (standard and extended support) and AKS (community support and
LTS) run versions in that range. Raise the floor as they retire versions, and extend the range when
the package ships a newer one. The CRD is checked as an apiextensions.k8s.io/v1 object.

Against the code, for every DaemonSet of every deployment: env var names against
``ipamd.config.VARIABLES`` (and the one alias the daemon reads, MY_NODE_NAME), values through
``Settings.from_env``, the ConfigMap against the daemon's defaults for the deployment's cloud, socket
and host paths against the settings and the plugin's parser, ports against METRICS_BIND and
INTROSPECTION_BIND, probe paths against the daemon's own introspection server (started here on
loopback), commands and install-shim's arguments through the CLI's parser, the conflist's plugin
type against the file install-shim installs.

kubectl (with kustomize v5 or later inside) builds the deployments; without it these tests skip, and
fail under CI=true.
"""

from __future__ import annotations

import copy
import functools
import json
import os
import re
import shutil
import socket
import subprocess
import tomllib
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
import yaml
from kubernetes_validate.utils import SchemaNotFoundError, ValidationError, all_versions, validate

import shim.cni
from ipamd import install_shim, introspection
from ipamd.cli import make_parser
from ipamd.config import VARIABLES, Settings, check_datapath
from ipamd.metrics import Metrics

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
NAMESPACE = "kube-system"
KUBERNETES_VERSIONS = tuple(f"1.{minor}" for minor in range(30, 38))
MIN_KUSTOMIZE = (5, 0)
VAR_BY_NAME = {v.name: v for v in VARIABLES}
ALIASES = {"MY_NODE_NAME": "NODE_NAME"}  # aws-vpc-cni's name, read by Settings.from_env
DOWNWARD_API = {"spec.nodeName": "node-1.example.internal"}
PROBES = ("startupProbe", "readinessProbe", "livenessProbe")
ENICONFIG_CRD = ("CustomResourceDefinition", "eniconfigs.crd.k8s.amazonaws.com")
LINUX_OBJECTS = {
    ("ServiceAccount", "cloud-cni"),
    ("ClusterRole", "cloud-cni"),
    ("ClusterRoleBinding", "cloud-cni"),
    ("ConfigMap", "cloud-cni-config"),
    ("ConfigMap", "cloud-cni-conflist"),
    ("ValidatingAdmissionPolicy", "cloud-cni-node-writes"),
    ("ValidatingAdmissionPolicyBinding", "cloud-cni-node-writes"),
    ("DaemonSet", "cloud-cni"),
}
CLUSTER_SCOPED = {
    "ClusterRole",
    "ClusterRoleBinding",
    "CustomResourceDefinition",
    "ValidatingAdmissionPolicy",
    "ValidatingAdmissionPolicyBinding",
}
WINDOWS_OBJECTS = {("DaemonSet", "cloud-cni-windows"), ("ConfigMap", "cloud-cni-windows-conflist")}


@dataclass(frozen=True)
class Overlay:
    name: str
    path: Path
    cloud: str  # the CLOUD_PROVIDER it sets
    linux: str | None = None  # a Windows deployment: the Linux one applied before it
    # (kind, name) of the objects that differ from the same deployment on sim
    changes: frozenset[tuple[str, str]] = frozenset()

    @property
    def platform(self) -> str:
        return "linux" if self.linux is None else "win32"


OVERLAYS = [
    Overlay("sim", DEPLOY, "sim"),
    Overlay("aws", DEPLOY / "overlays" / "aws", "aws", changes=frozenset({("DaemonSet", "cloud-cni")})),
    Overlay(
        "azure",
        DEPLOY / "overlays" / "azure",
        "azure",
        changes=frozenset(
            {("DaemonSet", "cloud-cni"), ("ConfigMap", "cloud-cni-config"), ("ClusterRole", "cloud-cni")}
        ),
    ),
    Overlay("sim-windows", DEPLOY / "windows", "sim", linux="sim"),
    Overlay(
        "aws-windows",
        DEPLOY / "overlays" / "aws-windows",
        "aws",
        linux="aws",
        changes=frozenset({("DaemonSet", "cloud-cni-windows")}),
    ),
    Overlay(
        "azure-windows",
        DEPLOY / "overlays" / "azure-windows",
        "azure",
        linux="azure",
        changes=frozenset({("DaemonSet", "cloud-cni-windows")}),
    ),
]
BY_NAME = {o.name: o for o in OVERLAYS}
EACH = [pytest.param(o, id=o.name) for o in OVERLAYS]


# --- building ------------------------------------------------------------------------------------


def unavailable(reason: str) -> None:
    """Skip on a developer's machine without the tool; fail in CI, where a skip would hide it."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI=true: {reason}")
    pytest.skip(reason)


@functools.cache
def kubectl() -> tuple[str | None, str]:
    """kubectl's path, or None and why it cannot build the deployments."""
    path = shutil.which("kubectl")
    if path is None:
        return None, "kubectl is not on PATH: these tests build deploy/ with `kubectl kustomize`"
    out = subprocess.run(
        [path, "version", "--client", "-o", "json"], capture_output=True, text=True, timeout=60
    )
    version = json.loads(out.stdout or "{}").get("kustomizeVersion", "unknown")
    found = re.fullmatch(r"v(\d+)\.(\d+)\..*", version)
    if found is None or (int(found[1]), int(found[2])) < MIN_KUSTOMIZE:
        return None, (
            f"{path} has kustomize {version} inside; the overlays need v5 or later (kubectl 1.27+; "
            "Debian's kubernetes-client is kubectl 1.20 with kustomize v2.0.3)"
        )
    return path, ""


@functools.cache
def _build(path: Path) -> str:
    binary, problem = kubectl()
    if binary is None:
        unavailable(problem)
    out = subprocess.run([str(binary), "kustomize", str(path)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, f"kubectl kustomize {path.relative_to(ROOT)}: {out.stderr.strip()}"
    return out.stdout


def build(overlay: Overlay) -> list[dict[str, Any]]:
    """The objects ``kubectl apply -k`` would send for ``overlay`` (a fresh copy each call)."""
    return [doc for doc in yaml.safe_load_all(_build(overlay.path)) if doc is not None]


def one(objects: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    found = [o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind} {name}, found {len(found)}"
    return found[0]


def daemonset(overlay: Overlay) -> dict[str, Any]:
    return one(build(overlay), "DaemonSet", "cloud-cni" if overlay.linux is None else "cloud-cni-windows")


def pod_spec(ds: dict[str, Any]) -> dict[str, Any]:
    spec: dict[str, Any] = ds["spec"]["template"]["spec"]
    return spec


def containers(ds: dict[str, Any]) -> list[dict[str, Any]]:
    return [*pod_spec(ds).get("initContainers", []), *pod_spec(ds)["containers"]]


def container(ds: dict[str, Any], name: str) -> dict[str, Any]:
    found = [c for c in containers(ds) if c["name"] == name]
    assert len(found) == 1, f"no single container {name}"
    return found[0]


def cluster_objects(overlay: Overlay) -> list[dict[str, Any]]:
    """What is in the cluster once ``overlay`` is applied: with the Linux deployment before it."""
    before = build(BY_NAME[overlay.linux]) if overlay.linux else []
    return [*before, *build(overlay)]


def daemon_env(overlay: Overlay, *, config_maps: bool = True) -> dict[str, str]:
    """The environment the ipamd container starts with: the ConfigMaps it names (envFrom), then its
    env, which wins; downward API values as ``DOWNWARD_API`` says."""
    objects = cluster_objects(overlay)
    ipamd = container(daemonset(overlay), "ipamd")
    env: dict[str, str] = {}
    for source in ipamd.get("envFrom", []) if config_maps else []:
        env.update(one(objects, "ConfigMap", source["configMapRef"]["name"])["data"])
    for var in ipamd.get("env", []):
        if "valueFrom" in var:
            env[var["name"]] = DOWNWARD_API[var["valueFrom"]["fieldRef"]["fieldPath"]]
        else:
            env[var["name"]] = var["value"]
    return env


def settings(overlay: Overlay) -> Settings:
    return Settings.from_env(daemon_env(overlay))


def conflist(overlay: Overlay) -> dict[str, Any]:
    """The network configuration install-cni installs: the ConfigMap key its --conflist names."""
    ds = daemonset(overlay)
    install = container(ds, "install-cni")
    args = make_parser().parse_args([*install["command"][1:], *install["args"]])
    path = args.conflist.replace("\\", "/")
    directory, _, key = path.rpartition("/")
    mounts = [m for m in install["volumeMounts"] if m["mountPath"].replace("\\", "/") == directory]
    assert len(mounts) == 1, f"install-cni: nothing mounted at {directory}"
    volume = next(v for v in pod_spec(ds)["volumes"] if v["name"] == mounts[0]["name"])
    data = one(build(overlay), "ConfigMap", volume["configMap"]["name"])["data"]
    assert key in data, f"ConfigMap {volume['configMap']['name']} has no {key}"
    conf: dict[str, Any] = json.loads(data[key])
    return conf


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return int(response.status), response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


# --- what each deployment holds ------------------------------------------------------------------


def test_every_overlay_is_checked_here() -> None:
    on_disk = {p.parent.name for p in (DEPLOY / "overlays").glob("*/kustomization.yaml")}
    checked = {o.path.name for o in OVERLAYS if o.path.parent == DEPLOY / "overlays"}
    assert on_disk == checked, f"add {sorted(on_disk - checked)} to OVERLAYS"


@pytest.mark.parametrize("overlay", EACH)
def test_the_deployment_builds_with_the_objects_of_its_cloud(overlay: Overlay) -> None:
    objects = build(overlay)
    names = {(o["kind"], o["metadata"]["name"]) for o in objects}
    assert len(names) == len(objects), "an object twice"
    if overlay.linux is not None:
        assert names == WINDOWS_OBJECTS, "RBAC, the admission policy and settings come from the Linux one"
    elif overlay.cloud == "azure":
        assert names == LINUX_OBJECTS, "ENIConfig is AWS custom networking: no CRD on Azure"
    else:
        assert names == LINUX_OBJECTS | {ENICONFIG_CRD}
    for o in objects:
        if o["kind"] in CLUSTER_SCOPED:
            assert "namespace" not in o["metadata"], f"{o['kind']} is cluster-scoped"
        else:
            assert o["metadata"]["namespace"] == NAMESPACE, o["metadata"]["name"]


@pytest.mark.parametrize("overlay", [pytest.param(o, id=o.name) for o in OVERLAYS if o.changes])
def test_an_overlay_changes_only_what_it_says(overlay: Overlay) -> None:
    """Against the same deployment on sim (deploy/ or deploy/windows/): the objects it names changed,
    every other one as it was."""
    sim = BY_NAME["sim" if overlay.linux is None else "sim-windows"]
    base = {(o["kind"], o["metadata"]["name"]): o for o in build(sim)}
    changed = {
        (o["kind"], o["metadata"]["name"])
        for o in build(overlay)
        if o != base[(o["kind"], o["metadata"]["name"])]
    }
    assert changed == overlay.changes


@pytest.mark.parametrize("overlay", EACH)
def test_the_cloud_provider_is_the_overlays(overlay: Overlay) -> None:
    env = container(daemonset(overlay), "ipamd")["env"]
    assert env[0] == {"name": "CLOUD_PROVIDER", "value": overlay.cloud}, "first, on Linux and Windows"
    assert settings(overlay).cloud_provider == overlay.cloud


def test_rbac_on_azure_is_the_base_without_eniconfigs() -> None:
    def grants(overlay: str) -> set[tuple[str, str, str]]:
        role = one(build(BY_NAME[overlay]), "ClusterRole", "cloud-cni")
        return {
            (group, resource, verb)
            for rule in role["rules"]
            for group in rule["apiGroups"]
            for resource in rule["resources"]
            for verb in rule["verbs"]
        }

    eniconfigs = {("crd.k8s.amazonaws.com", "eniconfigs", v) for v in ("get", "list", "watch")}
    assert eniconfigs <= grants("sim") and grants("aws") == grants("sim")
    assert grants("azure") == grants("sim") - eniconfigs


@pytest.mark.parametrize("overlay", EACH)
def test_every_image_is_the_package_version(overlay: Overlay) -> None:
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert {c["image"] for c in containers(daemonset(overlay))} == {f"cloud-cni:{version}"}


# --- the Kubernetes API schemas ------------------------------------------------------------------


def test_the_schema_package_ships_every_version_checked() -> None:
    shipped = {v.rpartition(".")[0] for v in all_versions()}
    assert set(KUBERNETES_VERSIONS) <= shipped, (
        f"kubernetes-validate lacks {set(KUBERNETES_VERSIONS) - shipped}"
    )


def schema_problems(obj: dict[str, Any], version: str) -> str | None:
    """Why the API server of ``version`` would refuse ``obj`` (strict: no unknown field); None if not."""
    where = f"{obj['kind']}/{obj['metadata']['name']} on {version}"
    try:
        used = validate(obj, version, strict=True)
    except SchemaNotFoundError:
        return f"{where}: no {obj['apiVersion']} {obj['kind']} in this version"
    except ValidationError as exc:
        return f"{where}: {'.'.join(str(p) for p in exc.path) or '(top)'}: {exc.message}"
    # the package falls back to the newest version it has at or below the one asked for
    assert used == version, f"asked for {version}, validated against {used}"
    return None


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("overlay", EACH)
def test_every_object_is_valid_for_the_kubernetes_version(overlay: Overlay, version: str) -> None:
    problems = [p for o in build(overlay) if (p := schema_problems(o, version))]
    assert problems == []


@pytest.mark.parametrize(
    ("kind", "change", "field"),
    [
        pytest.param("DaemonSet", lambda o: pod_spec(o)["containers"][0]["securityContext"].update(
            readOnlyRootFileSystem=True), "readOnlyRootFileSystem", id="misspelt-container-field"),
        pytest.param("DaemonSet", lambda o: pod_spec(o)["containers"][0]["ports"][0].update(
            containerPort="61678"), "not of type 'integer'", id="port-as-string"),
        pytest.param("DaemonSet", lambda o: pod_spec(o)["containers"][0]["livenessProbe"]["httpGet"].update(
            paths="/healthz"), "paths", id="misspelt-probe-field"),
        pytest.param("ClusterRole", lambda o: o["rules"][0].update(verb=["get"]), "verb", id="rbac-rule"),
        pytest.param("ValidatingAdmissionPolicy", lambda o: o["spec"]["validations"][0].update(expr="true"),
                     "expr", id="admission-policy"),
        pytest.param("CustomResourceDefinition", lambda o: o["spec"]["versions"][0].update(servedd=True),
                     "servedd", id="crd"),
        pytest.param("ConfigMap", lambda o: o["data"].update(WARM_IP_TARGET=8), "not of type 'string'",
                     id="configmap-number"),
    ],
)  # fmt: skip
def test_the_schema_check_refuses_what_the_api_server_would(kind: str, change: Any, field: str) -> None:
    """The check can fail: strict everywhere, on nested objects of every kind deploy/ holds."""
    obj = copy.deepcopy(next(o for o in build(BY_NAME["sim"]) if o["kind"] == kind))
    change(obj)
    problem = schema_problems(obj, KUBERNETES_VERSIONS[0])
    assert problem is not None and field in problem, problem


def test_the_versions_differ_where_the_api_does() -> None:
    """Why every version is checked: a field new in 1.32 (pod-level resources) passes there and fails
    on 1.30; the admission policy's API group version does not exist before 1.30."""
    ds = copy.deepcopy(daemonset(BY_NAME["sim"]))
    pod_spec(ds)["resources"] = {"limits": {"memory": "200Mi"}}
    assert schema_problems(ds, "1.32") is None
    assert "resources" in (schema_problems(ds, "1.30") or "")
    policy = one(build(BY_NAME["sim"]), "ValidatingAdmissionPolicy", "cloud-cni-node-writes")
    assert "no admissionregistration.k8s.io/v1" in (schema_problems(policy, "1.29") or "")


# --- the daemon's settings -----------------------------------------------------------------------


def test_the_alias_is_one_the_daemon_reads() -> None:
    for alias, name in ALIASES.items():
        env = {"CLOUD_PROVIDER": "sim", alias: "node-7"}
        assert getattr(Settings.from_env(env), VAR_BY_NAME[name].field) == "node-7", alias


@pytest.mark.parametrize("overlay", EACH)
def test_every_env_var_set_is_a_daemon_variable(overlay: Overlay) -> None:
    objects = cluster_objects(overlay)
    ds = daemonset(overlay)
    names = {v["name"] for c in containers(ds) for v in c.get("env", [])}
    for c in containers(ds):
        for source in c.get("envFrom", []):
            names |= set(one(objects, "ConfigMap", source["configMapRef"]["name"])["data"])
    assert {"CLOUD_PROVIDER", "NODE_NAME", "WARM_IP_TARGET"} <= names
    unknown = sorted(names - set(VAR_BY_NAME) - set(ALIASES))
    assert unknown == [], f"the daemon reads no such variable (ipamd/config.py VARIABLES): {unknown}"


@pytest.mark.parametrize("overlay", EACH)
def test_the_env_parses_for_the_nodes_platform(overlay: Overlay) -> None:
    s = settings(overlay)  # a bad value raises ConfigError naming it
    check_datapath(s, overlay.platform)  # what the daemon asks at start on that node
    assert s.datapath == ("linux" if overlay.linux is None else "windows")
    assert s.node_name == DOWNWARD_API["spec.nodeName"]


@pytest.mark.parametrize("overlay", EACH)
def test_the_configmap_holds_the_daemons_defaults_for_the_cloud(overlay: Overlay) -> None:
    """cloud-cni-config writes out what is in force: the daemon with it runs as the daemon without it.
    On Azure that takes the Azure defaults: the base's WARM_ENI_TARGET=1 would switch them off."""
    with_config = settings(overlay)
    without = Settings.from_env(daemon_env(overlay, config_maps=False))
    differ = {
        name: (getattr(with_config, v.field), getattr(without, v.field))
        for name, v in VAR_BY_NAME.items()
        if getattr(with_config, v.field) != getattr(without, v.field)
    }
    assert differ == {}, f"ConfigMap value, daemon default on {overlay.cloud}: {differ}"


# --- paths, ports and probes ---------------------------------------------------------------------


@pytest.mark.parametrize("overlay", [pytest.param(o, id=o.name) for o in OVERLAYS if o.linux is None])
def test_the_socket_and_state_are_on_host_paths_the_plugin_finds(overlay: Overlay) -> None:
    """Linux: the plugin runs on the node and connects to the socket by the node's path."""
    ds, s = daemonset(overlay), settings(overlay)
    ipamd = container(ds, "ipamd")
    volumes = {v["name"]: v for v in pod_spec(ds)["volumes"]}
    plugin = conflist(overlay)["plugins"][0]
    for path in (s.ipamd_socket, s.checkpoint_path, plugin["logFile"]):
        parent = str(PurePosixPath(path).parent)
        mounts = [m for m in ipamd["volumeMounts"] if m["mountPath"] == parent]
        assert len(mounts) == 1, f"{path}: its directory {parent} is not mounted in ipamd"
        host = volumes[mounts[0]["name"]].get("hostPath", {})
        assert host.get("path") == parent, f"{path}: {parent} is not the node's {parent}"
        assert not mounts[0].get("readOnly"), path
    assert s.ipamd_socket == VAR_BY_NAME["IPAMD_SOCKET"].default == shim.cni.DEFAULT_IPAMD_SOCKET


def test_on_aws_the_daemon_can_adopt_and_set_aside_aws_vpc_cnis_checkpoint() -> None:
    """An in-place switch from aws-vpc-cni: AWS_VPC_CNI_CHECKPOINT's directory is the node's, writable
    (the adopted file is renamed); elsewhere it is not mounted."""
    for overlay in OVERLAYS:
        if overlay.linux is not None:
            continue
        ds, s = daemonset(overlay), settings(overlay)
        volumes = {v["name"]: v for v in pod_spec(ds)["volumes"]}
        assert s.aws_vpc_cni_checkpoint is not None
        parent = str(PurePosixPath(s.aws_vpc_cni_checkpoint).parent)
        mounts = [m for m in container(ds, "ipamd")["volumeMounts"] if m["mountPath"] == parent]
        if overlay.cloud != "aws":
            assert mounts == [], f"{overlay.name}: {parent} mounted where nothing is adopted"
            continue
        assert len(mounts) == 1, f"{overlay.name}: {parent} is not mounted in ipamd"
        assert volumes[mounts[0]["name"]]["hostPath"]["path"] == parent and not mounts[0].get("readOnly")


@pytest.mark.parametrize("overlay", EACH)
def test_the_plugin_parses_the_conflist_and_finds_the_daemon(
    overlay: Overlay, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(shim.cni, "PLATFORM", overlay.platform)
    conf, s = conflist(overlay), settings(overlay)
    netns = "/var/run/netns/cni-1" if overlay.linux is None else "5f7b2c1e-8d4a-4b3e-9a6f-0c1d2e3f4a5b"
    call = {"CNI_COMMAND": "ADD", "CNI_CONTAINERID": "0123456789ab", "CNI_IFNAME": "eth0", "CNI_NETNS": netns}
    stdin = {"cniVersion": conf["cniVersion"], "name": conf["name"], **conf["plugins"][0]}
    inv = shim.cni.parse(call, json.dumps(stdin).encode())
    assert inv.ipamd_socket == s.ipamd_socket
    if inv.ipamd_tcp is not None:
        assert inv.ipamd_token_file == s.effective_ipamd_token_file


@pytest.mark.parametrize("overlay", EACH)
def test_the_conflist_names_the_plugin_install_shim_installs(overlay: Overlay) -> None:
    """The runtime execs <bin dir>/<type> (on Windows <type>.exe): the file install-shim writes."""
    assert conflist(overlay)["plugins"][0]["type"] == install_shim.PLUGIN


@pytest.mark.parametrize("overlay", EACH)
def test_commands_are_the_cli_and_install_shim_gets_its_options(overlay: Overlay) -> None:
    ds = daemonset(overlay)
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    ran = {}
    for c in containers(ds):
        if c["command"][0] == "powershell.exe":
            continue  # Windows' state-dir: test_deploy_windows.py reads its script
        assert c["command"][0] in scripts, f"{c['name']}: {c['command'][0]} is not a console script"
        try:
            args = make_parser().parse_args([*c["command"][1:], *c.get("args", [])])
        except SystemExit:
            pytest.fail(f"{c['name']}: `{' '.join(c['command'] + c.get('args', []))}` is refused by the CLI")
        ran[c["name"]] = args.command
    assert ran.get("ipamd") == "ipamd" and ran.get("install-cni") == "install-shim"
    install = container(ds, "install-cni")
    args = make_parser().parse_args([*install["command"][1:], *install["args"]])
    if overlay.linux is None:
        volumes = {v["name"]: v for v in pod_spec(ds)["volumes"]}
        mounts = {m["mountPath"]: volumes[m["name"]] for m in install["volumeMounts"]}
        assert mounts[args.cni_bin_dir]["hostPath"]["path"] == "/opt/cni/bin"
        assert mounts[args.cni_conf_dir]["hostPath"]["path"] == "/etc/cni/net.d"
        assert mounts[args.runtime_dir]["hostPath"]["path"] == args.host_runtime_dir
    else:  # HostProcess: the node's own directories
        assert args.runtime_dir == args.host_runtime_dir


@pytest.mark.parametrize("overlay", EACH)
def test_metrics_port_and_scrape_annotations_follow_metrics_bind(
    overlay: Overlay, metrics_server: str
) -> None:
    ds, s = daemonset(overlay), settings(overlay)
    assert s.metrics_bind is not None
    port = int(s.metrics_bind.rpartition(":")[2])
    assert {p["name"]: p["containerPort"] for p in container(ds, "ipamd")["ports"]} == {"metrics": port}
    annotations = ds["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/port"] == str(port)
    assert annotations["prometheus.io/scrape"] == "true"
    # prometheus_client answers every path: the path is the one the daemon documents (ipamd.metrics)
    assert annotations["prometheus.io/path"] == "/metrics"
    status, body = get(f"http://{metrics_server}{annotations['prometheus.io/path']}")
    assert status == 200 and "cloudcni_" in body


class Introspection:
    """The daemon's introspection server (ipamd.introspection) on loopback; its health route needs no
    daemon state, so it is served here as the daemon serves it."""

    def __init__(self) -> None:
        self.healthy = True
        self.bind = f"127.0.0.1:{free_port()}"
        self.stop = introspection.serve(self.bind, {}, lambda: self.healthy)

    def status(self, path: str, *, healthy: bool) -> int:
        self.healthy = healthy
        return get(f"http://{self.bind}{path}")[0]


@pytest.fixture(scope="module")
def introspection_server() -> Iterator[Introspection]:
    server = Introspection()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def metrics_server() -> Iterator[str]:
    bind = f"127.0.0.1:{free_port()}"
    stop = Metrics().serve(bind)
    yield bind
    stop()


@pytest.mark.parametrize("overlay", EACH)
def test_probes_reach_the_health_route_of_the_introspection_server(
    overlay: Overlay, introspection_server: Introspection
) -> None:
    ipamd, s = container(daemonset(overlay), "ipamd"), settings(overlay)
    assert s.introspection_bind is not None, "the probes need introspection on"
    host, _, port = s.introspection_bind.rpartition(":")
    assert set(PROBES) <= set(ipamd), "startup, readiness and liveness"
    paths = set()
    for kind in PROBES:
        http = ipamd[kind]["httpGet"]
        assert (http.get("host"), http["port"]) == (host, int(port)), f"{kind}: not INTROSPECTION_BIND"
        paths.add(http["path"])
    for path in paths:
        status = introspection_server.status
        assert status(path, healthy=True) == 200, f"{path}: not a route of ipamd.introspection"
        assert status(path, healthy=False) == 503, f"{path}: does not report the daemon's health"


def test_the_probe_check_can_fail(introspection_server: Introspection) -> None:
    assert introspection_server.status("/health", healthy=True) == 404
    assert introspection_server.status("/v1/pool", healthy=True) == 404, (
        "a daemon route, not the health route"
    )
