"""The node image run as a node runs it: the DaemonSet's pod under the real containerd, through CRI.

deploy/base/daemonset.yaml is read here (PyYAML) and turned into CRI calls as a kubelet would: one
sandbox in the host network (the simulated VPC's node netns, where the test's containerd runs), the
init containers in order (node-init privileged, install-cni as root with every capability dropped
and a read-only root), then the ipamd container with the manifest's mounts, env and security
context. Each hostPath is a directory of the test standing for the node's: the CNI bin and conf
dirs are the ones the test's containerd execs plugins from and loads its network from, so the
application pods run on the plugin and conflist install-cni wrote. Node paths named elsewhere (the
ConfigMap's conflist: ipamdSocket, logFile; install-cni's --host-runtime-dir) are mapped with the same
table. One mount differs from the manifest: /var/run/netns stands for containerd's netns directory
(under its state dir, made a shared mount as /var/run/netns is on a node) and is mounted in the
container at that same path, because the daemon opens the path CNI_NETNS names (on a node, both are
/var/run/netns). Not passed: the pod's seccomp profile (RuntimeDefault) and the resources.

The cluster is the fake kube-apiserver (tests/fakes/kube_apiserver.py) listening on 127.0.0.1 in the
node netns, with the Node (carrying the daemon's startup taint) and each application pod's Pod. Every
container gets what kubelet gives a pod whose service account token is automounted (the manifest does
not turn it off): KUBERNETES_SERVICE_HOST/PORT and the token, ca.crt and namespace read-only at
/var/run/secrets/kubernetes.io/serviceaccount. So the daemon in the image finds its in-cluster config
itself (KUBERNETES_INTEGRATION is the manifest's), and every request it makes is checked against the
ClusterRole of deploy/rbac.yaml.

The image is build/cloud-cni-image.tar, and the rolling update's second build
build/cloud-cni-image-upgrade.tar: each built first when missing or older than the sources it is built
from (tests/integration/image_archive.py); a failed build fails the test, it never skips.
"""

from __future__ import annotations

import contextlib
import json
import re
import secrets
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.fakes import cri
from tests.fakes.admission import Admission, pod_token_user
from tests.fakes.containerd import Containerd, Pod
from tests.fakes.kube_apiserver import KubeApiServer
from tests.fakes.rbac import assert_allowed, load_rules
from tests.fakes.vpc import VPC_CIDR, VPC_PEER, EchoServer, Vpc, netns_urlopen, read_sysctl, vpc_topology

from .conftest import ROOT
from .image_archive import ARCHIVE, UPGRADE_ARCHIVE, ensure_archive, ensure_upgrade_archive, image_name

pytestmark = [pytest.mark.integration, pytest.mark.root]
pytest_plugins = ["tests.fakes.containerd", "tests.fakes.kube_apiserver"]  # pause_image, kube_tls

MANIFEST = ROOT / "deploy" / "base" / "daemonset.yaml"
CONFIGMAPS = ROOT / "deploy" / "base" / "configmap.yaml"
NODE_NETNS_DIR = "/var/run/netns"
NODE_NAME = "node-1"
HEALTHZ = "http://127.0.0.1:61679/healthz"  # the manifest's probe, in the node netns
SERVICE_ACCOUNT_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"  # where kubelet mounts the token
STARTUP_TAINT = {
    "key": "node.cloud-cni.io/agent-not-ready",
    "effect": "NoSchedule",
}  # STARTUP_TAINT's default
RULES = load_rules(ROOT / "deploy" / "rbac.yaml")
TCP_CLIENT = (
    "import socket,sys; s=socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=5);"
    "s.sendall(b'ping\\n'); print(s.recv(200).decode())"
)


def pod_spec() -> dict[str, Any]:
    return dict(yaml.safe_load(MANIFEST.read_text())["spec"]["template"]["spec"])


def configmaps() -> dict[str, dict[str, str]]:
    return {d["metadata"]["name"]: d["data"] for d in yaml.safe_load_all(CONFIGMAPS.read_text())}


def security_context(container: dict[str, Any]) -> dict[str, Any]:
    """A container's securityContext as kubelet hands it to CRI (host network, pid and ipc: the
    pod's hostNetwork)."""
    sc = container.get("securityContext", {})
    out: dict[str, Any] = {
        "privileged": bool(sc.get("privileged", False)),
        "readonly_rootfs": bool(sc.get("readOnlyRootFilesystem", False)),
        "namespace_options": {"network": "NODE", "pid": "CONTAINER", "ipc": "POD"},
        "capabilities": {
            "add_capabilities": sc.get("capabilities", {}).get("add", []),
            "drop_capabilities": sc.get("capabilities", {}).get("drop", []),
        },
    }
    if "runAsUser" in sc:
        out["run_as_user"] = {"value": sc["runAsUser"]}
    if sc.get("allowPrivilegeEscalation") is False:
        out["no_new_privs"] = True
    return out


@dataclass
class NodeDirs:
    """The test's directories standing for the node's hostPaths, by the node path they stand for."""

    by_node_path: dict[str, Path]

    def host(self, node_path: str) -> str:
        """The test's path for a node path (itself, or under, a mapped one); else unchanged."""
        for prefix, dir in sorted(self.by_node_path.items(), key=lambda kv: -len(kv[0])):
            if node_path == prefix or node_path.startswith(prefix + "/"):
                return str(dir) + node_path[len(prefix) :]
        return node_path


class DaemonSetPod:
    """The DaemonSet's pod on the test's node: sandbox, init containers, the ipamd container."""

    def __init__(
        self, runtime: Containerd, dirs: NodeDirs, work: Path, env: dict[str, str], service_account: Path
    ) -> None:
        self.runtime, self.dirs, self.work, self.extra_env = runtime, dirs, work, env
        self.service_account = service_account  # token, ca.crt, namespace: kubelet's projected volume
        self.spec = pod_spec()
        self.logs = work / "pod-logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.sandbox_config: dict[str, Any] = {}
        self.sandbox_id = ""
        self.ipamd_id = ""
        self.image = image_name()

    def volumes(self) -> dict[str, str]:
        """Volume name -> the test's directory (hostPath mapped; emptyDir and ConfigMaps made here)."""
        out = {}
        for v in self.spec["volumes"]:
            name = v["name"]
            if "hostPath" in v:
                path = Path(self.dirs.host(v["hostPath"]["path"]))
            elif "configMap" in v:
                path = self.work / "configmaps" / name
                path.mkdir(parents=True, exist_ok=True)
                for key, text in configmaps()[v["configMap"]["name"]].items():
                    value = text
                    if key.endswith(".conflist"):  # node paths inside, mapped as the hostPaths are
                        conf = json.loads(value)
                        for plugin in conf["plugins"]:
                            for field in ("ipamdSocket", "logFile"):
                                if field in plugin:
                                    plugin[field] = self.dirs.host(plugin[field])
                        value = json.dumps(conf, indent=2)
                    (path / key).write_text(value)
            else:  # emptyDir
                path = self.work / "emptydir" / f"{name}-{secrets.token_hex(2)}"
            path.mkdir(parents=True, exist_ok=True)
            out[name] = str(path)
        return out

    def run_sandbox(self) -> None:
        # kubelet makes the sandbox privileged when any of the pod's containers is (node-init).
        containers = self.spec["initContainers"] + self.spec["containers"]
        privileged = any(c.get("securityContext", {}).get("privileged") for c in containers)
        self.sandbox_config = {
            "metadata": {"name": "cloud-cni-node", "uid": str(uuid.uuid4()), "namespace": "kube-system"},
            "log_directory": str(self.logs),
            "linux": {
                "cgroup_parent": self.runtime.cgroup_parent,
                "security_context": {
                    "namespace_options": {"network": "NODE", "pid": "POD", "ipc": "POD"},
                    "privileged": privileged,
                },
            },
        }
        reply = self.runtime.cri.call("RunPodSandbox", {"config": self.sandbox_config}, timeout=60)
        self.sandbox_id = reply["pod_sandbox_id"]

    def container_config(self, container: dict[str, Any], attempt: int = 0) -> dict[str, Any]:
        volumes = self.volumes()
        mounts = []
        for m in container.get("volumeMounts", []):
            propagation = {"HostToContainer": "PROPAGATION_HOST_TO_CONTAINER"}.get(
                m.get("mountPropagation", ""), "PROPAGATION_PRIVATE"
            )
            # The pods' netns: the daemon opens the path CNI_NETNS names, the node's path, which is the
            # container's too on a node (/var/run/netns both sides); here the node's path is the test's.
            container_path = m["mountPath"]
            if container_path == NODE_NETNS_DIR:
                container_path = self.dirs.host(container_path)
            mounts.append(
                {
                    "container_path": container_path,
                    "host_path": volumes[m["name"]],
                    "readonly": bool(m.get("readOnly", False)),
                    "propagation": propagation,
                }
            )
        mounts.append(
            {
                "container_path": SERVICE_ACCOUNT_DIR,
                "host_path": str(self.service_account),
                "readonly": True,
                "propagation": "PROPAGATION_PRIVATE",
            }
        )
        env: dict[str, str] = {}
        for ref in container.get("envFrom", []):
            env.update(configmaps()[ref["configMapRef"]["name"]])
        for e in container.get("env", []):
            if "value" not in e:  # the downward API: only spec.nodeName is used
                assert e["valueFrom"]["fieldRef"]["fieldPath"] == "spec.nodeName", e
            env[e["name"]] = e.get("value", NODE_NAME)
        env.update(self.extra_env)
        # Only install-cni's --host-runtime-dir is a node path (the others are the container's /host).
        args = [self.dirs.host(a) for a in container.get("args", [])]
        return {
            "metadata": {"name": container["name"], "attempt": attempt},
            "image": {"image": self.image},
            "command": container["command"],
            "args": args,
            "envs": [{"key": k, "value": v} for k, v in env.items()],
            "mounts": mounts,
            "log_path": f"{container['name']}-{attempt}.log",
            "linux": {"security_context": security_context(container)},
        }

    def start(self, container: dict[str, Any], attempt: int = 0) -> str:
        config = self.container_config(container, attempt)
        reply = self.runtime.cri.call(
            "CreateContainer",
            {"pod_sandbox_id": self.sandbox_id, "config": config, "sandbox_config": self.sandbox_config},
            timeout=60,
        )
        cid = str(reply["container_id"])
        self.runtime.cri.call("StartContainer", {"container_id": cid}, timeout=60)
        return cid

    def status(self, cid: str) -> dict[str, Any]:
        return dict(self.runtime.cri.call("ContainerStatus", {"container_id": cid})["status"])

    def log(self, name: str, attempt: int = 0) -> str:
        path = self.logs / f"{name}-{attempt}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def run_init_containers(self) -> list[tuple[str, int]]:
        return [(c["name"], self.run_init_container(c["name"])) for c in self.spec["initContainers"]]

    def run_init_container(self, name: str, attempt: int = 0) -> int:
        """Run one init container to its exit (0, else the test fails), then remove it."""
        [container] = [c for c in self.spec["initContainers"] if c["name"] == name]
        cid = self.start(container, attempt)
        deadline = time.monotonic() + 60
        while (status := self.status(cid))["state"] != "CONTAINER_EXITED":
            assert time.monotonic() < deadline, f"{name} still running"
            time.sleep(0.05)
        assert status["exit_code"] == 0, f"{name}: {self.log(name, attempt)}"
        self.runtime.cri.call("RemoveContainer", {"container_id": cid})
        return int(status["exit_code"])

    def start_ipamd(self, attempt: int = 0) -> str:
        [ipamd] = [c for c in self.spec["containers"] if c["name"] == "ipamd"]
        self.ipamd_id = self.start(ipamd, attempt)
        return self.ipamd_id

    def stop_ipamd(self) -> None:
        grace = int(self.spec["terminationGracePeriodSeconds"])
        self.runtime.cri.call("StopContainer", {"container_id": self.ipamd_id, "timeout": grace}, timeout=60)
        self.runtime.cri.call("RemoveContainer", {"container_id": self.ipamd_id})


def wait_for(
    predicate: Callable[[], Any], what: str, timeout: float = 30.0, detail: Callable[[], Any] = lambda: ""
) -> Any:
    deadline = time.monotonic() + timeout
    while not (value := predicate()):
        assert time.monotonic() < deadline, f"{what}: not within {timeout} s: {detail()}"
        time.sleep(0.05)
    return value


def healthz(node_netns: str) -> int:
    try:
        with netns_urlopen(node_netns, HEALTHZ, timeout=1) as r:
            return int(r.status)
    except OSError:
        return 0


def get(node_netns: str, path: str) -> Any:
    with netns_urlopen(node_netns, "http://127.0.0.1:61679" + path, timeout=5) as r:
        return json.loads(r.read())


def wait_healthy(pod: DaemonSetPod, node_netns: str, timeout: float = 60.0) -> float:
    start = time.monotonic()
    while healthz(node_netns) != 200:
        status = pod.status(pod.ipamd_id)
        assert status["state"] == "CONTAINER_RUNNING", f"ipamd: {status}\n{pod.log('ipamd')[-3000:]}"
        assert time.monotonic() - start < timeout, pod.log("ipamd")[-3000:]
        time.sleep(0.02)
    return time.monotonic() - start


@dataclass
class Node:
    vpc: Vpc
    runtime: Containerd
    dirs: NodeDirs
    pod: DaemonSetPod
    api: KubeApiServer
    admission: Admission

    def run_pod(self, name: str) -> Pod:
        """An application pod as kubelet starts one: its Pod is in the API (bound to this node) first."""
        pod = self.api.get("pods", "default", name)
        if pod is None:
            pod = self.api.add_pod("default", name, NODE_NAME, uid=str(uuid.uuid4()))
        return self.runtime.run_pod(name, uid=pod["metadata"]["uid"])

    def startup_taint(self) -> bool:
        node = self.api.get("nodes", None, NODE_NAME)
        assert node is not None
        return any(t.get("key") == STARTUP_TAINT["key"] for t in node.get("spec", {}).get("taints") or [])


@contextlib.contextmanager
def image_node(work: Path, pause_image: Path, kube_tls: Any) -> Iterator[Node]:
    """The simulated VPC's node with the test's containerd (pods' netns in /var/run/netns), the fake
    API server in its netns with the Node (startup-tainted), the image imported, and the DaemonSet's
    pod's sandbox made; nothing started in it yet. At the end, every request the daemon made must be
    one deploy/rbac.yaml allows."""
    ensure_archive()
    run_dir = work / "node" / "var-run-cloud-cni"
    run_dir.mkdir(parents=True)
    with vpc_topology(run_dir / "sim-state.json", instance_type="m5.large") as vpc:
        # The token is the pod's: its user carries the node it was issued on, which the admission
        # policy (deploy/admission-policy.yaml, run on every update) compares with the Node patched.
        admission = Admission()
        api = KubeApiServer(
            tls=kube_tls, netns=vpc.node, admission=admission, user_info=pod_token_user(NODE_NAME)
        ).start()
        api.add_node(NODE_NAME, internal_ip=vpc.node_ip, taints=[STARTUP_TAINT])
        service_account = work / "serviceaccount"
        service_account.mkdir()
        (service_account / "token").write_text(api.token)
        (service_account / "ca.crt").write_bytes(Path(api.ca_path).read_bytes())
        (service_account / "namespace").write_text("kube-system")
        runtime = Containerd(work / f"ctrd-{secrets.token_hex(2)}", vpc.node, image_archive=pause_image)
        pod: DaemonSetPod | None = None
        netns_dir: Path | None = None
        try:
            # The pods' netns mounts, made a shared mount of their own as /var/run/netns is on a node
            # (HostToContainer needs it); containerd.stop() unmounts it with the rest.
            netns_dir = runtime.state / "io.containerd.grpc.v1.cri" / "netns"
            netns_dir.mkdir(parents=True)
            subprocess.run(["mount", "--bind", str(netns_dir), str(netns_dir)], check=True)
            subprocess.run(["mount", "--make-shared", str(netns_dir)], check=True)
            runtime.start()
            runtime.ctr("images", "import", "--snapshotter", runtime.snapshotter, str(ARCHIVE))
            runtime._wait(
                lambda: runtime.cri.call("ImageStatus", {"image": {"image": image_name()}}).get("image")
            )
            runtime.install_plugins("portmap")  # the conflist's second plugin; a node has it
            dirs = NodeDirs(
                {
                    "/var/run/cloud-cni": run_dir,
                    "/var/run/netns": netns_dir,
                    "/opt/cni/bin": runtime.bin_dir,
                    "/etc/cni/net.d": runtime.conf_dir,
                    "/opt/cni/cloud-cni": work / "node" / "opt-cni-cloud-cni",
                    "/var/log/cloud-cni": work / "node" / "var-log-cloud-cni",
                }
            )
            env = {
                # What kubelet sets in every container of the pod: the API server's service.
                "KUBERNETES_SERVICE_HOST": "127.0.0.1",
                "KUBERNETES_SERVICE_PORT": str(api.port),
                "CLOUD_PROVIDER": "sim",
                "DATAPATH": "linux",
                "SIM_INSTANCE_TYPE": vpc.instance_type,
                "SIM_SUBNET_CIDR": vpc.subnet,
                "SIM_VPC_CIDR": VPC_CIDR,
                "SIM_STATE_PATH": "/var/run/cloud-cni/sim-state.json",
                "SIM_API_LATENCY": "0.01",
                "MINIMUM_IP_TARGET": "6",
                "WARM_IP_TARGET": "1",
            }
            pod = DaemonSetPod(runtime, dirs, work, env, service_account)
            pod.run_sandbox()
            yield Node(vpc, runtime, dirs, pod, api, admission)
        finally:
            if pod is not None and pod.sandbox_id:  # as kubelet does when the pod is deleted
                with contextlib.suppress(cri.CriError):
                    runtime.cri.call("StopPodSandbox", {"pod_sandbox_id": pod.sandbox_id}, timeout=60)
                    runtime.cri.call("RemovePodSandbox", {"pod_sandbox_id": pod.sandbox_id}, timeout=60)
            if netns_dir is not None:  # the bind mount made here; pods' mounts inside are the fake's
                subprocess.run(["umount", str(netns_dir)], check=False, capture_output=True)
            runtime.stop()
            api.stop()
        assert runtime.forced == [], f"teardown had to force: {runtime.forced}"
        assert api.requests, "the daemon in the image made no request to the API server"
        assert_allowed(RULES, api.requests)
        denied = [(name, v.denials) for name, _, v in admission.decisions if not v.allowed]
        assert denied == [], f"the admission policy denied the daemon: {denied}"
    assert vpc.agent is not None
    assert not vpc.agent.errors, vpc.agent.errors


def test_the_daemonset_pod_runs_and_application_pods_get_addresses_with_traffic(
    tmp_path: Path, pause_image: Path, kube_tls: Any
) -> None:
    with image_node(tmp_path, pause_image, kube_tls) as n:
        assert n.pod.run_init_containers() == [("node-init", 0), ("install-cni", 0)]
        # install-cni wrote the plugin into the node's bin dir and the conflist into its net.d.
        assert (n.runtime.bin_dir / "cloud-cni").exists()
        [conflist] = [p for p in n.runtime.conf_dir.iterdir() if p.suffix == ".conflist"]
        conf = json.loads(conflist.read_text())
        assert conf["plugins"][0]["ipamdSocket"] == n.dirs.host("/var/run/cloud-cni/ipamd.sock")
        assert read_sysctl(n.vpc.node, "net.ipv4.ip_forward") == "1", "node-init set it in the node netns"

        assert n.startup_taint()
        n.pod.start_ipamd()
        wait_healthy(n.pod, n.vpc.node)
        assert n.pod.status(n.pod.ipamd_id)["state"] == "CONTAINER_RUNNING"
        # The daemon found the in-cluster config kubelet gave it, and took its startup taint off the Node.
        k8s = wait_for(
            lambda: (k := get(n.vpc.node, "/v1/k8s"))["api"]["reachable"] and k,
            "the API reached",
            detail=lambda: (get(n.vpc.node, "/v1/k8s"), n.pod.log("ipamd")[-3000:]),
        )
        assert k8s["integration"] == "on" and k8s["node"] == NODE_NAME, k8s
        assert k8s["api"]["host"] == f"https://127.0.0.1:{n.api.port}", k8s
        wait_for(lambda: not n.startup_taint(), "the startup taint removed")
        # ... by a patch the admission policy matched and admitted (RBAC alone would allow any change).
        assert [(name, v.matched, v.allowed) for name, _, v in n.admission.decisions] == [
            (NODE_NAME, True, True)
        ]

        app = n.run_pod("web-0")
        held = {a["ip"]: a for a in get(n.vpc.node, "/v1/assignments")}
        assert app.ip in held and held[app.ip]["container_id"] == app.sandbox_id, (app, held)
        with EchoServer(n.vpc.vpc_peer):
            done = n.runtime.exec_in_pod_netns(app, [sys.executable, "-c", TCP_CLIENT, VPC_PEER, "5007"])
        assert done.stdout.split()[0] == app.ip
        n.runtime.exec_in_node(["ping", "-c", "1", "-W", "2", app.ip])

        n.runtime.stop_pod(app)
        n.runtime.remove_pod(app)
        assert get(n.vpc.node, "/v1/assignments") == []
        n.pod.stop_ipamd()


def cni_check(n: Node, app: Pod) -> subprocess.CompletedProcess[str]:
    """CHECK as a runtime sends it: the installed plugin, the installed conflist's plugin config with
    the pod's ADD result as prevResult, in the node netns."""
    [conflist] = [p for p in n.runtime.conf_dir.iterdir() if p.suffix == ".conflist"]
    conf = json.loads(conflist.read_text())
    prev = {
        "cniVersion": conf["cniVersion"],
        "interfaces": [{"name": "eth0", "sandbox": app.netns_path}],
        "ips": [{"address": f"{app.ip}/32", "interface": 0}],
    }
    stdin = {"cniVersion": conf["cniVersion"], "name": conf["name"], **conf["plugins"][0], "prevResult": prev}
    env = {
        "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
        "CNI_COMMAND": "CHECK",
        "CNI_CONTAINERID": app.sandbox_id,
        "CNI_NETNS": app.netns_path,
        "CNI_IFNAME": "eth0",
        "CNI_PATH": str(n.runtime.bin_dir),
        "CNI_ARGS": f"K8S_POD_NAMESPACE={app.namespace};K8S_POD_NAME={app.name};"
        f"K8S_POD_INFRA_CONTAINER_ID={app.sandbox_id};K8S_POD_UID={app.uid}",
    }
    argv = ["nsenter", f"--net={n.runtime.node_netns_path}", "--", str(n.runtime.bin_dir / "cloud-cni")]
    return subprocess.run(argv, input=json.dumps(stdin), env=env, capture_output=True, text=True, timeout=30)


TREE_IN_PLUGIN = re.compile(rb"(/[^\s'\"]+/[0-9][0-9a-z.]*-[0-9a-f]{12})/")


class PluginHammer:
    """Threads that use the installed plugin as the runtime does while install-cni replaces it: one
    reads the plugin file, the tree it names and the conflist (JSON) in a tight loop; one execs the
    plugin with VERSION; one execs CHECK for running pods; one starts pods through CRI (RunPodSandbox,
    then, beyond ``keep`` of them, StopPodSandbox and RemovePodSandbox at once: ADD and DEL). Every
    operation is timed, so that those overlapping a window can be counted; every failure is kept."""

    def __init__(self, n: Node, running: list[Pod], keep: int = 4) -> None:
        self.n, self.running, self.keep = n, running, keep
        self.plugin = n.runtime.bin_dir / "cloud-cni"
        [self.conflist] = [p for p in n.runtime.conf_dir.iterdir() if p.suffix == ".conflist"]
        self.stop = threading.Event()
        self.errors: list[str] = []
        self.ops: dict[str, list[tuple[float, float]]] = {"read": [], "VERSION": [], "CHECK": [], "pod": []}
        self.pods: list[Pod] = []  # started by the loop and kept running
        loops = (self._read, self._version, self._check, self._pods)
        self.threads = [threading.Thread(target=self._loop, args=(f,), daemon=True) for f in loops]

    def _loop(self, op: Any) -> None:
        i = 0
        while not self.stop.is_set():
            start = time.monotonic()
            try:
                what = op(i)
            except Exception as exc:
                self.errors.append(f"{op.__name__} #{i} at {start:.3f}: {type(exc).__name__}: {exc}")
                time.sleep(0.01)
            else:
                self.ops[what].append((start, time.monotonic()))
            i += 1

    def _read(self, i: int) -> str:
        data = self.plugin.read_bytes()
        assert data.startswith(b"#!") and data.endswith((b"sys.exit(main())\n", b'"$@"\n')), (
            f"plugin: {data[-80:]!r}"
        )
        assert self.plugin.stat().st_mode & 0o111 == 0o111, oct(self.plugin.stat().st_mode)
        match = TREE_IN_PLUGIN.search(data)
        assert match, data[:200]
        tree = Path(match.group(1).decode())
        assert (tree / "cloud-cni.py").is_file() and (tree / "lib/site/shim/main.py").is_file(), tree
        assert any(p.stat().st_mode & 0o111 for p in (tree / "bin").glob("python3*")), tree
        conf = json.loads(self.conflist.read_bytes())
        assert conf["plugins"][0]["type"] == "cloud-cni", conf
        return "read"

    def _version(self, i: int) -> str:
        done = subprocess.run(
            [str(self.plugin)],
            input='{"cniVersion": "1.0.0"}',
            env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "CNI_COMMAND": "VERSION"},
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert done.returncode == 0, (done.returncode, done.stderr[-500:])
        assert "1.0.0" in json.loads(done.stdout)["supportedVersions"], done.stdout
        return "VERSION"

    def _check(self, i: int) -> str:
        app = self.running[i % len(self.running)]
        done = cni_check(self.n, app)
        assert done.returncode == 0 and done.stdout == "", (app.name, done.stdout, done.stderr[-500:])
        return "CHECK"

    def _pods(self, i: int) -> str:
        pod = self.n.run_pod(f"during-{i}")
        assert pod.ip, pod
        if len(self.pods) < self.keep:
            self.pods.append(pod)
        else:
            self.n.runtime.stop_pod(pod)
            self.n.runtime.remove_pod(pod)
        return "pod"

    def __enter__(self) -> PluginHammer:
        for t in self.threads:
            t.start()
        deadline = time.monotonic() + 30
        while not all(self.ops.values()):  # every loop has done one before the window opens
            assert not self.errors and time.monotonic() < deadline, self.errors or self.ops
            time.sleep(0.01)
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(timeout=60)

    def during(self, start: float, end: float) -> dict[str, int]:
        """How many operations of each kind overlapped [start, end]."""
        return {k: sum(1 for a, b in v if a < end and b > start) for k, v in self.ops.items()}


def test_a_rolling_update_restarts_the_daemon_from_a_second_image_and_pods_keep_their_addresses(
    tmp_path: Path, pause_image: Path, kube_tls: Any
) -> None:
    """install-cni re-runs from a second image (another build, under another tag) while pods are
    started, CHECKed and the plugin exec'd and read: none sees a missing or partial plugin, tree or
    conflist. Then the old ipamd container gets SIGTERM within the grace period (StopContainer); with
    no daemon serving, an ADD fails "try again later" and a pod's DEL is queued (StopPodSandbox
    succeeds); a new ipamd container starts from the second image: the checkpoint carries over through
    the run-dir hostPath, the queued DEL is applied, the runtime's retried ADD succeeds."""
    second = ensure_upgrade_archive()
    with image_node(tmp_path, pause_image, kube_tls) as n:
        n.pod.run_init_containers()
        n.pod.start_ipamd()
        wait_healthy(n.pod, n.vpc.node)
        apps = [n.run_pod(f"web-{i}") for i in range(3)]
        assert {a["ip"]: a["container_id"] for a in get(n.vpc.node, "/v1/assignments")} == {
            a.ip: a.sandbox_id for a in apps
        }

        # The plugin upgrade: install-cni from the second image, the old daemon serving throughout.
        n.runtime.ctr("images", "import", "--snapshotter", n.runtime.snapshotter, str(UPGRADE_ARCHIVE))
        n.runtime._wait(lambda: n.runtime.cri.call("ImageStatus", {"image": {"image": second}}).get("image"))
        first_id = n.runtime.cri.call("ImageStatus", {"image": {"image": image_name()}})["image"]["id"]
        assert n.runtime.cri.call("ImageStatus", {"image": {"image": second}})["image"]["id"] != first_id
        n.pod.image = second
        plugin = n.runtime.bin_dir / "cloud-cni"
        [conflist] = [p for p in n.runtime.conf_dir.iterdir() if p.suffix == ".conflist"]
        old_plugin, old_conf = plugin.read_bytes(), conflist.read_bytes()
        old_inodes = (plugin.stat().st_ino, conflist.stat().st_ino)
        with PluginHammer(n, apps) as hammer:
            # The new pod's init containers in order: node-init again (its settings already there), then
            # install-cni; only install-cni's window is counted below.
            n.pod.run_init_container("node-init", attempt=1)
            assert read_sysctl(n.vpc.node, "net.ipv4.ip_forward") == "1"
            opened = time.monotonic()
            n.pod.run_init_container("install-cni", attempt=1)
            closed = time.monotonic()
            time.sleep(0.2)  # a few more after the switch
        during = hammer.during(opened, closed)
        print(f"install-cni re-run {closed - opened:.2f} s; operations during it: {during}")
        assert hammer.errors == [], hammer.errors
        assert during["read"] >= 50 and during["VERSION"] >= 3 and during["CHECK"] >= 2, during
        assert during["pod"] >= 1, during
        # The second run happened and replaced both files (a rename: new inodes), with the same bits.
        log = n.pod.log("install-cni", 1)
        assert "installed /host/opt/cni/bin/cloud-cni" in log and "10-cloud-cni.conflist" in log, log
        assert "(already there)" in log, (
            log
        )  # the same runtime's bits: the first run's tree, checked and kept
        assert plugin.stat().st_ino != old_inodes[0] and conflist.stat().st_ino != old_inodes[1]
        assert plugin.read_bytes() == old_plugin and conflist.read_bytes() == old_conf
        match = TREE_IN_PLUGIN.search(plugin.read_bytes())
        assert match and Path(match.group(1).decode(), "cloud-cni.py").is_file()
        apps += hammer.pods  # started while the plugin was replaced: checked and deleted below
        before = {a["ip"]: a["container_id"] for a in get(n.vpc.node, "/v1/assignments")}
        assert before == {a.ip: a.sandbox_id for a in apps}

        stopped = time.monotonic()
        n.pod.stop_ipamd()
        assert time.monotonic() - stopped < int(n.pod.spec["terminationGracePeriodSeconds"])
        assert Path(n.dirs.host("/var/run/cloud-cni/ipam.json")).exists(), "the checkpoint stays"
        assert not Path(n.dirs.host("/var/run/cloud-cni/ipamd.sock")).exists(), "the socket went with it"

        # An ADD with no daemon serving: a CNI error kubelet retries ("try again later").
        with pytest.raises(cri.CriError, match=r"daemon is not reachable.*try again later"):
            n.run_pod("in-the-gap")
        # A pod deleted with no daemon serving: its DEL is queued on the node and the pod goes.
        leaving = apps.pop()
        n.runtime.stop_pod(leaving)
        n.runtime.remove_pod(leaving)
        spool = Path(n.dirs.host("/var/run/cloud-cni/del-spool"))
        assert [p for p in spool.iterdir() if p.is_file()], "the DEL is queued"
        n.pod.start_ipamd(attempt=1)
        wait_healthy(n.pod, n.vpc.node)
        status = n.pod.status(n.pod.ipamd_id)
        tagged = n.runtime.cri.call("ImageStatus", {"image": {"image": second}})["image"]
        assert second in tagged["repo_tags"] and status["image_ref"] == tagged["id"], status
        assert status["state"] == "CONTAINER_RUNNING" and status["metadata"]["attempt"] == 1

        # The queued DEL applied (the daemon drains the queue as it starts); every other pod kept its address.
        wait_for(
            lambda: leaving.ip not in {a["ip"] for a in get(n.vpc.node, "/v1/assignments")}, "queued DEL"
        )
        assert not [p for p in spool.iterdir() if p.is_file()], "the queue is empty"
        after = {a["ip"]: a["container_id"] for a in get(n.vpc.node, "/v1/assignments")}
        del before[leaving.ip]
        assert after == before, "running pods keep their addresses"
        for app in apps:
            done = cni_check(n, app)
            assert done.returncode == 0 and done.stdout == "", (app.name, done.stdout, done.stderr)
        retried = n.run_pod("in-the-gap")  # the runtime's retry, now served
        more = [retried, *(n.run_pod(f"web-{i}") for i in range(3, 5))]
        ips = [p.ip for p in apps + more]
        assert len(set(ips)) == len(ips), f"an address handed out twice: {ips}"
        for app in apps + more:  # before, during and after the plugin upgrade: CHECK, then DEL
            done = cni_check(n, app)
            assert done.returncode == 0 and done.stdout == "", (app.name, done.stdout, done.stderr)
            n.runtime.exec_in_node(["ping", "-c", "1", "-W", "2", app.ip])
            n.runtime.stop_pod(app)
            n.runtime.remove_pod(app)
        assert get(n.vpc.node, "/v1/assignments") == []
        gone = cni_check(n, apps[0])
        assert gone.returncode != 0, "CHECK of a removed pod fails: the passes above can fail"
        n.pod.stop_ipamd()
