"""deploy/ stays honest: the manifests, conflist and dashboard agree with the daemon they deploy.

Everything here reads the files an operator applies (``kubectl apply -k deploy/``) and checks them
against the code: env var names against ``ipamd.config.VARIABLES``, paths and ports against the
settings' defaults, the conflist against the shim's versions, the dashboard against the metrics the
daemon exports, and every field against the Kubernetes API models of the ``kubernetes`` client.
"""

from __future__ import annotations

import dataclasses
import json
import re
import tomllib
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import Any

import kubernetes.client.models as k8s_models
import pytest
import yaml
from prometheus_client.metrics import MetricWrapperBase

from ipamd import install_shim
from ipamd.cli import make_parser
from ipamd.cloud.factory import make_provider
from ipamd.config import VARIABLES, Settings
from ipamd.daemon import make_datapath
from ipamd.metrics import Metrics
from ipamd.pool.model import PoolStats
from shim.cni import SUPPORTED_VERSIONS

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
NAMESPACE = "kube-system"
RUN_DIR = "/var/run/cloud-cni"
VAR_BY_NAME = {v.name: v for v in VARIABLES}
MODELS = {
    "DaemonSet": "V1DaemonSet",
    "ConfigMap": "V1ConfigMap",
    "ServiceAccount": "V1ServiceAccount",
    "ClusterRole": "V1ClusterRole",
    "ClusterRoleBinding": "V1ClusterRoleBinding",
    "ValidatingAdmissionPolicy": "V1ValidatingAdmissionPolicy",
    "ValidatingAdmissionPolicyBinding": "V1ValidatingAdmissionPolicyBinding",
    "CustomResourceDefinition": "V1CustomResourceDefinition",
}
CLUSTER_SCOPED = {
    "ClusterRole",
    "ClusterRoleBinding",
    "ValidatingAdmissionPolicy",
    "ValidatingAdmissionPolicyBinding",
    "CustomResourceDefinition",
}
# What the kubelet puts in an env var from the downward API, for the env the daemon starts with.
DOWNWARD_API = {"spec.nodeName": "node-1.example.internal"}
SCALARS = {"str", "int", "bool", "float", "object", "datetime", "date"}
SCRAPE_LABELS = {"instance", "job"}  # added by Prometheus to every scraped series


# --- loading -------------------------------------------------------------------------------------


def kustomization_files(directory: Path) -> list[Path]:
    """The manifest files the kustomization in ``directory`` builds from: its ``resources``, and those of
    the directories it names, recursively (kustomize's own reading, less patches and generators)."""
    files = []
    for resource in yaml.safe_load((directory / "kustomization.yaml").read_text())["resources"]:
        path = directory / resource
        files += kustomization_files(path) if path.is_dir() else [path]
    return files


def manifest_files() -> list[Path]:
    """What ``kubectl apply -k deploy/`` applies: the files of deploy/base/ and deploy/crd/. The overlays
    (deploy/overlays/, tests/unit/test_manifests.py) and deploy/windows/ (test_deploy_windows.py) are
    kustomizations of their own."""
    return sorted(kustomization_files(DEPLOY))


def load_objects() -> list[dict[str, Any]]:
    objects = []
    for path in manifest_files():
        for doc in yaml.safe_load_all(path.read_text()):
            if doc is not None:
                objects.append(doc)
    return objects


def one(kind: str, name: str | None = None) -> dict[str, Any]:
    found = [
        o for o in load_objects() if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)
    ]
    assert len(found) == 1, f"expected exactly one {kind} {name or ''} in deploy/, found {len(found)}"
    return found[0]


def daemonset() -> dict[str, Any]:
    return one("DaemonSet", "cloud-cni")


def pod_spec() -> dict[str, Any]:
    spec: dict[str, Any] = daemonset()["spec"]["template"]["spec"]
    return spec


def container(name: str = "ipamd") -> dict[str, Any]:
    found = [c for c in pod_spec()["containers"] if c["name"] == name]
    assert len(found) == 1, f"the DaemonSet has no single container {name}"
    return found[0]


def init_container(name: str = "install-cni") -> dict[str, Any]:
    inits = pod_spec().get("initContainers", [])
    assert [c["name"] for c in inits] == ["node-init", "install-cni"], "node-init, then install-cni"
    return next(c for c in inits if c["name"] == name)


def all_containers() -> list[dict[str, Any]]:
    return [*pod_spec().get("initContainers", []), *pod_spec()["containers"]]


def config_data() -> dict[str, str]:
    data: dict[str, str] = one("ConfigMap", "cloud-cni-config")["data"]
    return data


def conflist() -> dict[str, Any]:
    data: dict[str, Any] = json.loads((DEPLOY / "10-cloud-cni.conflist").read_text())
    return data


def daemon_env(c: dict[str, Any] | None = None) -> dict[str, str]:
    """The environment the ipamd container ``c`` (default: this DaemonSet's) starts with: the
    ConfigMaps of deploy/ it names (envFrom), then its env (which wins). Downward API values stand in
    as ``DOWNWARD_API`` says."""
    c = container() if c is None else c
    env: dict[str, str] = {}
    for source in c.get("envFrom", []):
        env.update(one("ConfigMap", source["configMapRef"]["name"])["data"])
    for var in c.get("env", []):
        if "valueFrom" in var:
            assert set(var["valueFrom"]) == {"fieldRef"}, f"{var['name']}: only the downward API"
            env[var["name"]] = DOWNWARD_API[var["valueFrom"]["fieldRef"]["fieldPath"]]
            continue
        assert "value" in var, f"{var['name']}: the daemon's settings are plain values"
        env[var["name"]] = var["value"]
    return env


def daemon_settings() -> Settings:
    return Settings.from_env(daemon_env())


def host_path_of(c: dict[str, Any], mount_path: str) -> dict[str, Any]:
    """The hostPath volume mounted at ``mount_path`` in container ``c``."""
    volumes = {v["name"]: v for v in pod_spec()["volumes"]}
    mounts = [m for m in c.get("volumeMounts", []) if m["mountPath"] == mount_path]
    assert len(mounts) == 1, f"{c['name']}: nothing (or more than one volume) mounted at {mount_path}"
    volume = volumes[mounts[0]["name"]]
    assert "hostPath" in volume, f"{c['name']}: {mount_path} is not a hostPath volume"
    return {**volume["hostPath"], "mount": mounts[0]}


def port_of(bind: str | None) -> int:
    assert bind is not None
    return int(bind.rpartition(":")[2])


# --- every file parses, every field is a Kubernetes API field ------------------------------------


def test_every_manifest_parses_as_kubernetes_objects_in_kube_system() -> None:
    objects = load_objects()
    assert {o["kind"] for o in objects} == set(MODELS), "deploy/ holds exactly the expected kinds"
    for o in objects:
        assert o.get("apiVersion") and o["metadata"].get("name"), o
        if o["kind"] in CLUSTER_SCOPED:
            assert "namespace" not in o["metadata"], f"{o['kind']} is cluster-scoped"
        else:
            assert o["metadata"].get("namespace") == NAMESPACE, f"{o['kind']} {o['metadata']['name']}"


def unknown_fields(value: Any, type_name: str, path: str) -> Iterator[str]:
    """Keys of ``value`` that the Kubernetes model ``type_name`` (recursively) does not have."""
    if type_name.lower().startswith("list["):
        assert isinstance(value, list), f"{path}: expected a list"
        for i, item in enumerate(value):
            yield from unknown_fields(item, type_name[5:-1], f"{path}[{i}]")
        return
    if type_name in SCALARS or type_name.lower().startswith("dict"):
        return  # object: int-or-string and quantities; Dict[str, str]: labels, data
    model = getattr(k8s_models, type_name)  # an unknown type name fails here, never passes silently
    assert isinstance(value, dict), f"{path}: expected an object ({type_name})"
    attr_by_key = {key: attr for attr, key in model.attribute_map.items()}
    for key, sub in value.items():
        if key not in attr_by_key:
            yield f"{path}.{key}"
        else:
            yield from unknown_fields(sub, model.openapi_types[attr_by_key[key]], f"{path}.{key}")


def test_every_field_is_a_kubernetes_api_field() -> None:
    """A misspelt field (mountpropagation, readOnlyRootFileSystem) is silently dropped by older API
    servers and rejected by strict ones; either way the manifest would not do what it says."""
    bad = []
    for o in load_objects():
        bad += unknown_fields(o, MODELS[o["kind"]], f"{o['kind']}/{o['metadata']['name']}")
    assert bad == [], f"not fields of the Kubernetes API: {bad}"


def test_configmap_values_are_strings() -> None:
    for cm in (o for o in load_objects() if o["kind"] == "ConfigMap"):
        for key, value in cm["data"].items():
            assert isinstance(value, str), f"{cm['metadata']['name']}.{key}: quote it, ConfigMap data is text"


# --- settings: names, values, defaults -----------------------------------------------------------


def test_every_env_var_set_is_a_daemon_variable() -> None:
    names = set(config_data())
    for c in all_containers():
        names |= {v["name"] for v in c.get("env", [])}
    assert "CLOUD_PROVIDER" in names and "WARM_ENI_TARGET" in names
    unknown = sorted(names - set(VAR_BY_NAME))
    assert unknown == [], f"the daemon reads no such variable (ipamd/config.py VARIABLES): {unknown}"


def test_envfrom_refers_to_the_shipped_configmap() -> None:
    refs = [s["configMapRef"]["name"] for s in container().get("envFrom", [])]
    assert refs == ["cloud-cni-config"]
    assert one("ConfigMap", refs[0])


def test_configmap_parses_and_holds_the_daemon_defaults() -> None:
    data = config_data()
    Settings.from_env({**data, "CLOUD_PROVIDER": "sim"})  # raises ConfigError on a bad value
    for name, raw in data.items():
        var = VAR_BY_NAME[name]
        assert not var.required, f"{name} is required: set it in daemonset.yaml, not the tuning ConfigMap"
        assert var.default is not None, f"{name} is unset by default: leave it commented out"
        assert var.parse(raw) == var.parse(var.default), (
            f"{name}={raw!r}, the daemon default is {var.default!r}: the ConfigMap claims to show defaults"
        )


def test_the_daemon_env_starts_this_build(tmp_path: Path) -> None:
    """The provider and datapath the DaemonSet names are ones this build serves."""
    env = daemon_env()
    assert env.get("CLOUD_PROVIDER"), "CLOUD_PROVIDER is required and never guessed"
    assert container()["env"][0]["name"] == "CLOUD_PROVIDER", "docs/deploy.md patches env/0 to pick it"
    settings = Settings.from_env(env)
    make_datapath(settings)  # raises ConfigError for a datapath this build does not wire
    make_provider(dataclasses.replace(settings, sim_state_path=str(tmp_path / "sim.json")))


def test_node_name_comes_from_the_downward_api() -> None:
    env = {v["name"]: v.get("valueFrom") for v in container()["env"]}
    assert env["NODE_NAME"] == {"fieldRef": {"fieldPath": "spec.nodeName"}}
    assert "NODE_NAME" not in config_data(), "the ConfigMap is shared by every node: no node name in it"
    assert daemon_settings().node_name == DOWNWARD_API["spec.nodeName"]


def test_shutdown_timeout_fits_in_the_grace_period() -> None:
    grace = pod_spec()["terminationGracePeriodSeconds"]
    timeout = daemon_settings().shutdown_timeout
    assert timeout + 10 <= grace, (
        f"SHUTDOWN_TIMEOUT {timeout}s leaves no time to flush before SIGKILL ({grace}s)"
    )


# --- paths and ports -----------------------------------------------------------------------------


def test_socket_checkpoint_and_sim_state_live_in_the_host_run_dir() -> None:
    s = daemon_settings()
    for path in (s.ipamd_socket, s.checkpoint_path, s.effective_sim_state_path):
        assert str(PurePosixPath(path).parent) == RUN_DIR, path
    hp = host_path_of(container(), RUN_DIR)
    assert hp["path"] == RUN_DIR and hp["type"] == "DirectoryOrCreate"
    assert not hp["mount"].get("readOnly"), "the daemon writes its socket and checkpoint there"
    assert conflist()["plugins"][0]["ipamdSocket"] == s.ipamd_socket


def test_netns_dir_propagates_from_the_host() -> None:
    hp = host_path_of(container(), "/var/run/netns")
    assert hp["path"] == "/var/run/netns"
    assert hp["mount"].get("mountPropagation") == "HostToContainer"


def test_shim_log_dir_is_a_host_dir() -> None:
    log_dir = str(PurePosixPath(conflist()["plugins"][0]["logFile"]).parent)
    hp = host_path_of(container(), log_dir)
    assert hp["path"] == log_dir and hp["type"] == "DirectoryOrCreate"


def test_init_container_installs_the_plugin_runtime_and_conflist_into_host_dirs() -> None:
    c = init_container()
    assert c["command"] == ["cloud-cni", "install-shim"]
    args = make_parser().parse_args([*c["command"][1:], *c["args"]])  # the CLI accepts exactly these
    # the runtime execs /opt/cni/bin/<type>: the plugin's name is the conflist's plugin type
    assert host_path_of(c, args.cni_bin_dir)["path"] == "/opt/cni/bin"
    assert conflist()["plugins"][0]["type"] == install_shim.PLUGIN
    # the plugin names its runtime by the node's path: it must be where the runtime dir really is
    runtime = host_path_of(c, args.runtime_dir)
    assert runtime["path"] == args.host_runtime_dir and runtime["type"] == "DirectoryOrCreate"
    assert host_path_of(c, args.cni_conf_dir)["path"] == "/etc/cni/net.d"
    for path in (args.cni_bin_dir, args.runtime_dir, args.cni_conf_dir):
        assert not host_path_of(c, path)["mount"].get("readOnly"), path
    # the conflist comes from the shipped ConfigMap, under its own name
    source = PurePosixPath(args.conflist)
    mount = next(m for m in c["volumeMounts"] if m["mountPath"] == str(source.parent))
    volume = next(v for v in pod_spec()["volumes"] if v["name"] == mount["name"])
    assert source.name in one("ConfigMap", volume["configMap"]["name"])["data"]
    assert source.name == "10-cloud-cni.conflist"


def test_metrics_port_is_the_metrics_bind_port() -> None:
    port = port_of(daemon_settings().metrics_bind)
    ports = {p["name"]: p["containerPort"] for p in container()["ports"]}
    assert ports.get("metrics") == port
    assert daemonset()["spec"]["template"]["metadata"]["annotations"]["prometheus.io/port"] == str(port)


def test_probes_hit_healthz_on_the_introspection_bind() -> None:
    bind = daemon_settings().introspection_bind
    assert bind is not None, "the probes need introspection on"
    host, _, port = bind.rpartition(":")
    c = container()
    probes = {kind: c[kind] for kind in ("startupProbe", "readinessProbe", "livenessProbe") if kind in c}
    assert {"readinessProbe", "livenessProbe"} <= set(probes)
    for kind, probe in probes.items():
        get = probe["httpGet"]
        assert (get.get("host"), get["port"], get["path"]) == (host, int(port), "/healthz"), kind
    assert probes["livenessProbe"]["periodSeconds"] > probes["readinessProbe"]["periodSeconds"]


def test_volume_references_resolve() -> None:
    volumes = {v["name"]: v for v in pod_spec()["volumes"]}
    used = {m["name"] for c in all_containers() for m in c.get("volumeMounts", [])}
    assert used <= set(volumes), f"mounts of undefined volumes: {used - set(volumes)}"
    assert set(volumes) <= used, f"volumes nothing mounts: {set(volumes) - used}"
    for v in volumes.values():
        if "configMap" in v:
            assert one("ConfigMap", v["configMap"]["name"])


# --- the pod's contract with the node ------------------------------------------------------------


def test_daemonset_runs_on_every_node_before_anything_else() -> None:
    ds = daemonset()
    spec = pod_spec()
    assert spec["hostNetwork"] is True
    assert spec["priorityClassName"] == "system-node-critical"
    assert {"operator": "Exists"} in spec["tolerations"], "tolerate every taint"
    assert ds["spec"]["updateStrategy"] == {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxUnavailable": "10%"},
    }
    assert (
        ds["spec"]["selector"]["matchLabels"].items() <= ds["spec"]["template"]["metadata"]["labels"].items()
    )
    assert "dnsPolicy" not in spec or spec["dnsPolicy"] in ("ClusterFirst", "Default"), (
        "the daemon must not depend on cluster DNS, which needs the pod network it provides"
    )


def test_containers_are_not_privileged_and_name_their_capabilities() -> None:
    node_init = init_container("node-init")
    assert node_init["command"] == ["cloud-cni", "node-init"] and "args" not in node_init
    assert node_init["securityContext"]["privileged"] is True  # the one exception: it writes /proc/sys
    for c in all_containers():
        if c is node_init or c["name"] == "node-init":
            continue
        sc = c["securityContext"]
        assert sc.get("privileged") is False, c["name"]
        added = set(sc.get("capabilities", {}).get("add", []))
        if added & {"SYS_ADMIN", "CAP_SYS_ADMIN"}:
            # the API rejects false with CAP_SYS_ADMIN, and no_new_privs means nothing with it
            assert sc.get("allowPrivilegeEscalation") is not False, c["name"]
    assert set(container()["securityContext"]["capabilities"]["add"]) == {"NET_ADMIN", "NET_RAW", "SYS_ADMIN"}
    assert "add" not in init_container()["securityContext"].get("capabilities", {})


def test_ipamd_resources() -> None:
    assert container()["resources"] == {
        "requests": {"cpu": "25m", "memory": "80Mi"},
        "limits": {"memory": "160Mi"},
    }


# --- RBAC ----------------------------------------------------------------------------------------


def test_rbac_is_least_privilege_and_bound_to_the_daemonset_account() -> None:
    role = one("ClusterRole", "cloud-cni")
    granted = {
        (group, resource, verb)
        for rule in role["rules"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }
    want = (
        {("", "nodes", v) for v in ("get", "list", "watch", "patch")}
        | {("", "pods", v) for v in ("get", "list", "watch")}
        | {("events.k8s.io", "events", v) for v in ("create", "patch")}
        | {("crd.k8s.amazonaws.com", "eniconfigs", v) for v in ("get", "list", "watch")}
        | {("", "namespaces", v) for v in ("list", "watch")}  # ENABLE_NETWORK_POLICY only
        | {("networking.k8s.io", "networkpolicies", v) for v in ("list", "watch")}
    )
    assert granted == want
    assert all("*" not in part for grant in granted for part in grant)
    verbs = {verb for rule in role["rules"] for verb in rule["verbs"]}
    assert verbs <= {"get", "list", "watch", "patch", "create"}, f"verbs the daemon never uses: {verbs}"
    assert all(set(rule) == {"apiGroups", "resources", "verbs"} for rule in role["rules"]), (
        "no resourceNames (a ClusterRole cannot name each daemon's node) and no nonResourceURLs"
    )

    account = pod_spec()["serviceAccountName"]
    sa = one("ServiceAccount", account)
    binding = one("ClusterRoleBinding")
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "ClusterRole",
        "name": role["metadata"]["name"],
    }
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": account, "namespace": NAMESPACE}]
    assert sa["metadata"]["namespace"] == NAMESPACE


# --- conflist ------------------------------------------------------------------------------------


def test_conflist_is_a_cloud_cni_network_the_shim_supports() -> None:
    conf = conflist()
    assert conf["name"] == "cloud-cni"
    assert conf["cniVersion"] in SUPPORTED_VERSIONS
    assert conf["cniVersion"] == "1.0.0", "1.0.0: containerd 1.6 rejects a 1.1.0 result (docs/deploy.md)"
    types = [p["type"] for p in conf["plugins"]]
    assert types[0] == "cloud-cni", "cloud-cni assigns the address: it comes first in the chain"
    assert types == ["cloud-cni", "portmap"]


def test_conflist_configmap_equals_the_conflist_file() -> None:
    data = one("ConfigMap", "cloud-cni-conflist")["data"]
    assert set(data) == {"10-cloud-cni.conflist"}
    assert json.loads(data["10-cloud-cni.conflist"]) == conflist()


# --- dashboard -----------------------------------------------------------------------------------


def exported_series() -> dict[str, set[str]]:
    """Sample name -> label names, for every series ``Metrics`` exports (pool gauges included)."""
    metrics = Metrics()
    metrics.watch_pool(
        lambda: PoolStats(total=3, assigned=1, available=1, cooling=1, quarantined=0, interfaces=1),
        lambda: 29,
    )
    for collector in vars(metrics).values():  # a labelled metric has no series until a child exists
        if isinstance(collector, MetricWrapperBase) and collector._labelnames:
            collector.labels(*("x" for _ in collector._labelnames))
    series: dict[str, set[str]] = {}
    for family in metrics.registry.collect():
        for sample in family.samples:
            series.setdefault(sample.name, set()).update(sample.labels)
    return series


def dashboard_queries(node: Any) -> Iterator[tuple[str, str]]:
    """(query, legendFormat) for every PromQL string in the dashboard: targets and variable queries."""
    if isinstance(node, dict):
        if node.get("type") == "datasource":
            return  # the data source picker: its query is a plugin type, not PromQL
        for key in ("expr", "definition", "query"):
            if isinstance(node.get(key), str):
                yield node[key], node.get("legendFormat", "")
        for value in node.values():
            yield from dashboard_queries(value)
    elif isinstance(node, list):
        for item in node:
            yield from dashboard_queries(item)


METRIC = re.compile(r"\bcloudcni_\w+")
BY_LABELS = re.compile(r"\b(?:by|without)\s*\(([^)]*)\)")
MATCHER = re.compile(r"(\w+)\s*(?:=~|!~|!=|=)\s*\"")
LABEL_VALUES = re.compile(r"label_values\(\s*\w+\s*,\s*(\w+)\s*\)")
LEGEND = re.compile(r"\{\{\s*(\w+)\s*\}\}")


def test_dashboard_uses_only_exported_metrics_and_their_labels() -> None:
    text = (DEPLOY / "dashboards" / "cloud-cni.json").read_text()
    dashboard = json.loads(text)
    series = exported_series()
    assert "cloudcni_pool_ips_total" in series and "cloudcni_cloud_calls_total" in series

    referenced = set(METRIC.findall(text))
    assert referenced, "the dashboard shows cloud-cni metrics"
    missing = sorted(referenced - set(series))
    assert missing == [], f"not exported by ipamd.metrics.Metrics: {missing}"

    queries = list(dashboard_queries(dashboard))
    assert len(queries) >= 6
    for query, legend in queries:
        names = METRIC.findall(query)
        assert names, f"query shows no cloud-cni metric: {query}"
        labels: set[str] = set()
        for group in BY_LABELS.findall(query):
            labels |= {label.strip() for label in group.split(",") if label.strip()}
        labels |= set(MATCHER.findall(query)) | set(LABEL_VALUES.findall(query)) | set(LEGEND.findall(legend))
        known = SCRAPE_LABELS.union(*(series.get(n, set()) for n in names))
        assert labels <= known, f"labels {sorted(labels - known)} not on {names} ({query})"


# --- kustomization -------------------------------------------------------------------------------


def test_kustomization_lists_every_manifest_and_the_image() -> None:
    kustomization = yaml.safe_load((DEPLOY / "kustomization.yaml").read_text())
    assert kustomization["resources"] == ["crd", "base"], "deploy/ is the sim deployment: base/ and the CRD"
    listed = {str(p.relative_to(DEPLOY)) for p in manifest_files()}
    on_disk = {str(p.relative_to(DEPLOY)) for d in ("base", "crd") for p in (DEPLOY / d).glob("*.yaml")}
    on_disk -= {"base/kustomization.yaml", "crd/kustomization.yaml"}
    assert {"base/rbac.yaml", "base/admission-policy.yaml", "crd/eniconfig-crd.yaml"} <= on_disk
    assert listed == on_disk, f"unlisted: {sorted(on_disk - listed)}; missing: {sorted(listed - on_disk)}"

    base = yaml.safe_load((DEPLOY / "base" / "kustomization.yaml").read_text())
    images = {i["name"]: i for i in base["images"]}
    used = {c["image"] for c in all_containers()}
    assert used == set(images), f"containers use {used}, kustomization rewrites {set(images)}"
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert images["cloud-cni"]["newTag"] == version, "the image tag follows the package version"
    # deploy/windows/ is checked against this copy (test_deploy_windows.py): the same reference
    assert kustomization["images"] == base["images"]


def test_the_old_paths_are_links_to_what_kustomize_reads() -> None:
    """deploy/rbac.yaml and its siblings are named by docs and tests; kustomize reads deploy/base/ and
    deploy/crd/ (an overlay may not sit inside its base). A link replaced by a copy would drift."""
    manifests = {p.name: p for p in manifest_files()}
    links = {p.name: p for p in DEPLOY.glob("*.yaml") if p.name != "kustomization.yaml"}
    assert set(links) == set(manifests), "one link at deploy/ per manifest of deploy/base/ and deploy/crd/"
    for name, link in links.items():
        assert link.is_symlink(), f"deploy/{name} is a copy: make it a link to {manifests[name]}"
        assert link.resolve() == manifests[name].resolve(), name


@pytest.mark.parametrize("path", ["10-cloud-cni.conflist", "dashboards/cloud-cni.json"])
def test_json_files_parse(path: str) -> None:
    assert isinstance(json.loads((DEPLOY / path).read_text()), dict)
