"""A real containerd (1.6, the CRI plugin) driven as a kubelet drives it, inside a throwaway node netns.

Isolation: containerd is started with ``nsenter --net=/run/netns/<node>`` in a node namespace that
``tests.fakes.netns`` created with only loopback up, and no link or route to the host's interfaces,
so nothing a pod or a CNI plugin does can leave the machine. CRI creates the pods' namespaces from
there, and execs the CNI plugins there. Only the network namespace is switched (not ``ip netns
exec``, which also makes a private mount namespace): containerd's mounts (rootfs overlays, /dev/shm,
the pods' netns bind mounts) stay visible to the test, which enters a pod with ``nsenter --net`` and
checks at teardown that none is left.

Everything containerd owns is private to one directory: root, state, config, CNI conf and bin dirs,
the pods' netns mounts (``netns_mounts_under_state_dir``), runc's state (the runc ``Root`` option,
else /run/containerd/runc), and the cgroups (under a parent named after the node). Its socket lives
in a short directory of its own (a Unix socket path has at most 107 bytes). Only the shims' sockets
are in the fixed /run/containerd/s, named by a hash of our address, and removed by the shims on exit
(or by ``stop()`` when a shim had to be killed).

No registry: the sandbox ("pause") image is an OCI archive built here from the static busybox
(``sleep`` as its process), imported with ``ctr images import``. CRI pulls nothing that is present.

Pitfalls met on this machine (see also ../shared/reference/lab-facts.md): CAP_SYS_RESOURCE is missing,
so ``restrict_oom_score_adj = true``; CRI reloads the CNI conf dir on fsnotify events and ignores a
file moved in with ``mv``, so conflists are written in place (cp semantics) and we wait until
``Status`` reports the new network; CRI's stream server listens on TCP, so it is put on the node's
loopback with port 0.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import io
import json
import os
import platform
import secrets
import shlex
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from tests.fakes import cri, netns

CNI_PLUGINS = Path("/usr/lib/cni")
BUSYBOX = Path("/bin/busybox")
PAUSE_IMAGE = "localhost/cc-pause:1"
CRI_NAMESPACE = "k8s.io"
CONFLIST = "10-test.conflist"
ENV = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOME": "/root"}
# overlayfs needs the kernel's overlay and a filesystem that can be an overlay's upper layer (ext4
# and tmpfs can, an overlay cannot: a test run inside a container image); native copies every layer,
# slower, and works anywhere.
SNAPSHOTTERS = ("overlayfs", "native")


# --- the pause stand-in image ----------------------------------------------------------------------


def _blob(layout: dict[str, bytes], data: bytes, media_type: str) -> dict[str, Any]:
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    layout["blobs/sha256/" + digest.removeprefix("sha256:")] = data
    return {"mediaType": media_type, "digest": digest, "size": len(data)}


def _rootfs_layer() -> bytes:
    """An uncompressed tar: /bin/busybox and two applets; the mount points runc needs are made by runc."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name in ("bin", "etc", "tmp"):
            info = tarfile.TarInfo(name)
            info.type, info.mode = tarfile.DIRTYPE, 0o755
            tar.addfile(info)
        data = BUSYBOX.read_bytes()
        info = tarfile.TarInfo("bin/busybox")
        info.size, info.mode = len(data), 0o755
        tar.addfile(info, io.BytesIO(data))
        for applet in ("sleep", "sh"):
            info = tarfile.TarInfo(f"bin/{applet}")
            info.type, info.linkname = tarfile.SYMTYPE, "busybox"
            tar.addfile(info)
    return out.getvalue()


def build_pause_image(cache_dir: Path, name: str = PAUSE_IMAGE) -> Path:
    """An OCI image archive (oci-layout + index.json + blobs) for ``ctr images import``; built once
    per busybox binary and name, then reused from ``cache_dir``."""
    key = hashlib.sha256(BUSYBOX.read_bytes() + name.encode()).hexdigest()[:16]
    archive = cache_dir / f"cc-pause-{key}.tar"
    if archive.exists():
        return archive
    arch = {"x86_64": "amd64", "aarch64": "arm64"}.get(platform.machine(), platform.machine())
    layout: dict[str, bytes] = {"oci-layout": b'{"imageLayoutVersion": "1.0.0"}'}
    layer_bytes = _rootfs_layer()
    layer = _blob(layout, layer_bytes, "application/vnd.oci.image.layer.v1.tar")
    config = {
        "architecture": arch,
        "os": "linux",
        # An hour is far longer than any test; a pod the teardown missed still ends on its own.
        "config": {"Entrypoint": ["/bin/sleep", "3600"], "Env": ["PATH=/bin"], "WorkingDir": "/"},
        "rootfs": {"type": "layers", "diff_ids": [layer["digest"]]},
    }
    config_desc = _blob(layout, json.dumps(config).encode(), "application/vnd.oci.image.config.v1+json")
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": config_desc,
        "layers": [layer],
    }
    manifest_desc = _blob(layout, json.dumps(manifest).encode(), "application/vnd.oci.image.manifest.v1+json")
    manifest_desc["platform"] = {"architecture": arch, "os": "linux"}
    manifest_desc["annotations"] = {
        "io.containerd.image.name": name,
        "org.opencontainers.image.ref.name": name.rpartition(":")[2],
    }
    index = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json"}
    layout["index.json"] = json.dumps({**index, "manifests": [manifest_desc]}).encode()
    cache_dir.mkdir(parents=True, exist_ok=True)
    partial = archive.with_suffix(f".{os.getpid()}.partial")
    with tarfile.open(partial, "w") as tar:
        for path, data in layout.items():
            info = tarfile.TarInfo(path)
            info.size, info.mode = len(data), 0o644
            tar.addfile(info, io.BytesIO(data))
    partial.rename(archive)
    return archive


# --- the runtime -----------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Pod:
    name: str
    namespace: str
    uid: str
    sandbox_id: str
    ip: str  # PodSandboxStatus network.ip ("" when the CNI result had none)
    netns_path: str  # the pod's network namespace, from the verbose status (runtimeSpec)
    pid: int  # the sandbox process, in the root pid namespace


@dataclasses.dataclass(frozen=True)
class CniCall:
    """One exec of a plugin installed with ``record=True``."""

    command: str
    container_id: str
    netns: str
    ifname: str
    plugin: str


class ContainerdError(AssertionError):
    pass


def _config_toml(c: Containerd) -> str:
    cri_plugin = '[plugins."io.containerd.grpc.v1.cri"'
    return f"""\
version = 2
root = "{c.root}"
state = "{c.state}"
disabled_plugins = [
  "io.containerd.snapshotter.v1.aufs",
  "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.zfs",
  "io.containerd.snapshotter.v1.devmapper",
]

[grpc]
  address = "{c.socket}"

[debug]
  level = "info"

[metrics]
  address = ""

[plugins."io.containerd.internal.v1.opt"]
  path = "{c.dir / "opt"}"

{cri_plugin}]
  sandbox_image = "{c.image}"
  restrict_oom_score_adj = true
  netns_mounts_under_state_dir = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  enable_selinux = false
  disable_apparmor = true

{cri_plugin}.containerd]
  snapshotter = "{c.snapshotter}"
  default_runtime_name = "runc"

{cri_plugin}.containerd.runtimes.runc]
  runtime_type = "io.containerd.runc.v2"

{cri_plugin}.containerd.runtimes.runc.options]
  Root = "{c.state / "runc"}"

{cri_plugin}.cni]
  bin_dir = "{c.bin_dir}"
  conf_dir = "{c.conf_dir}"
  max_conf_num = 1
"""


def _netns_inode(path: str) -> int:
    return os.stat(path).st_ino


def _pick_snapshotter(dir: Path) -> str:
    if "\toverlay\n" not in Path("/proc/filesystems").read_text():
        return SNAPSHOTTERS[1]
    best, kind = "", ""
    resolved = str(dir.resolve()) + "/"
    for line in Path("/proc/self/mounts").read_text().splitlines():
        _source, point, fstype = line.split()[:3]
        if resolved.startswith(point.rstrip("/") + "/") and len(point) >= len(best):
            best, kind = point, fstype
    return SNAPSHOTTERS[1] if kind == "overlay" else SNAPSHOTTERS[0]


def _running(pid: int) -> bool:
    """Alive and not a zombie (a killed process whose parent has not reaped it yet is gone enough)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] != "Z"
    except OSError:
        return False


def _mounts_under(*roots: Path) -> list[str]:
    """Mount points at or under ``roots`` (this mount namespace), deepest first."""
    found = []
    prefixes = [str(r.resolve()) for r in roots]
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        point = line.split()[4].replace("\\040", " ")
        if any(point == p or point.startswith(p + "/") for p in prefixes):
            found.append(point)
    return sorted(set(found), key=lambda p: (-p.count("/"), p))


class Containerd:
    """One containerd with the CRI plugin, in ``node_netns``, everything under ``dir``.

    ``start()`` runs it and imports the pause image; ``stop()`` removes every sandbox through CRI,
    stops containerd, kills what is left of ours (shims, pods, plugins: anything still in the node
    netns, so stop a daemon you ran there first), unmounts what it mounted and removes its cgroups.
    ``stop()`` is safe to call twice and after a failed ``start()``.
    """

    def __init__(
        self,
        dir: Path,
        node_netns: str,
        *,
        image_archive: Path,
        image: str = PAUSE_IMAGE,
        snapshotter: str | None = None,
    ) -> None:
        self.dir = dir
        self.node_netns = node_netns
        self.node_netns_path = f"/run/netns/{node_netns}"
        self.image_archive = image_archive
        self.image = image
        self.snapshotter = snapshotter or _pick_snapshotter(dir)
        self.root = dir / "root"
        self.state = dir / "state"
        self.conf_dir = dir / "net.d"
        self.bin_dir = dir / "cni-bin"
        self.calls_log = dir / "cni-calls.log"
        self.log_path = dir / "containerd.log"
        self.cgroup_parent = f"/{node_netns}"
        self._sock_dir = Path(tempfile.mkdtemp(prefix="cc-ctrd-", dir="/run"))
        self.socket = self._sock_dir / "containerd.sock"
        self.proc: subprocess.Popen[bytes] | None = None
        self._client: cri.Client | None = None
        self.forced: list[str] = []  # what the last stop() had to force
        for d in (self.root, self.state, self.conf_dir, self.bin_dir):
            d.mkdir(parents=True, exist_ok=True)
        self.install_plugins("loopback")  # CRI sets up lo in every pod with it

    # --- lifecycle

    @property
    def cri(self) -> cri.Client:
        assert self._client is not None, "containerd not started"
        return self._client

    def start(self, timeout: float = 30.0) -> Containerd:
        config = self.dir / "config.toml"
        config.write_text(_config_toml(self))
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                ["nsenter", f"--net={self.node_netns_path}", "containerd", "--config", str(config)],
                env=ENV,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                start_new_session=True,
            )
        self._client = cri.Client(self.socket)
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise ContainerdError(f"containerd exited {self.proc.returncode}:\n{self.logs()[-3000:]}")
            if self.socket.exists():
                with contextlib.suppress(cri.CriError):
                    self.cri.call("Version", timeout=2)
                    break
            if time.monotonic() > deadline:
                raise ContainerdError(f"containerd not serving after {timeout}s:\n{self.logs()[-3000:]}")
            time.sleep(0.05)
        self.ctr("images", "import", "--snapshotter", self.snapshotter, str(self.image_archive))
        # CRI learns of the image from containerd's event stream: wait until it resolves it locally,
        # or RunPodSandbox would try to pull it (and fail: there is no network).
        self._wait(lambda: self.cri.call("ImageStatus", {"image": {"image": self.image}}).get("image"))
        return self

    def ctr(self, *args: str) -> str:
        argv = ["ctr", "--address", str(self.socket), "--namespace", CRI_NAMESPACE, *args]
        done = subprocess.run(argv, env=ENV, capture_output=True, text=True, timeout=60)
        if done.returncode != 0:
            raise ContainerdError(f"{' '.join(argv)}: {done.stderr}")
        return done.stdout

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def _wait(self, predicate: Any, timeout: float = 20.0, what: str = "") -> Any:
        deadline = time.monotonic() + timeout
        while True:
            value = predicate()
            if value:
                return value
            if time.monotonic() > deadline:
                raise ContainerdError(f"timed out waiting for {what or predicate}")
            time.sleep(0.05)

    def stop(self) -> list[str]:
        """Tear everything down; returns what had to be forced (empty after a clean run)."""
        forced: list[str] = []
        if self.proc is not None and self.proc.poll() is None and self._client is not None:
            with contextlib.suppress(cri.CriError):
                for sandbox in self.cri.call("ListPodSandbox", timeout=10).get("items", []):
                    forced.append(f"sandbox {sandbox['metadata']['name']} not removed")
                    with contextlib.suppress(cri.CriError):
                        self.cri.call("StopPodSandbox", {"pod_sandbox_id": sandbox["id"]}, timeout=20)
                        self.cri.call("RemovePodSandbox", {"pod_sandbox_id": sandbox["id"]}, timeout=20)
        if self._client is not None:
            self._client.close()
            self._client = None
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                forced.append("containerd ignored SIGTERM")
                self.proc.kill()
                self.proc.wait(5)
        forced += self._kill_leftover_processes()
        for point in _mounts_under(self.dir, self._sock_dir):
            forced.append(f"mount {point}")
            subprocess.run(["umount", "--lazy", point], capture_output=True)
        self._remove_cgroups()
        shutil.rmtree(self._sock_dir, ignore_errors=True)
        self.forced = forced
        return forced

    def _kill_leftover_processes(self) -> list[str]:
        """Shims and plugins (in the node netns) and pods (in our cgroup parent), SIGKILLed.

        A pod's process is found by its cgroup, not its root: runc gives it its own mount namespace,
        where /proc/<pid>/root reads as "/"."""
        try:
            node = _netns_inode(self.node_netns_path)
        except FileNotFoundError:
            node = -1
        victims: dict[int, str] = {}
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit() or int(entry.name) == os.getpid():
                continue
            try:
                in_node = (entry / "ns/net").stat().st_ino == node
                cgroups = [line.split(":", 2)[2] for line in (entry / "cgroup").read_text().splitlines()]
                in_pod = any((c + "/").startswith(self.cgroup_parent + "/") for c in cgroups)
                if in_node or in_pod:
                    cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                    victims[int(entry.name)] = cmdline
            except (OSError, IndexError):
                continue
        for pid, cmdline in victims.items():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            for shim_socket in self._shim_sockets(cmdline):
                with contextlib.suppress(FileNotFoundError):
                    shim_socket.unlink()
        deadline = time.monotonic() + 10
        alive = dict(victims)
        while alive and time.monotonic() < deadline:
            alive = {p: c for p, c in alive.items() if _running(p)}
            time.sleep(0.05)
        return [f"killed {pid} {cmdline.strip()}" for pid, cmdline in victims.items()]

    def _shim_sockets(self, cmdline: str) -> list[Path]:
        """The /run/containerd/s socket a killed shim leaves: sha256(address/namespace/id), as in
        containerd 1.6 runtime/v2/shim.SocketAddress."""
        argv = cmdline.split()
        if "-id" not in argv or "-namespace" not in argv:
            return []
        ident = argv[argv.index("-id") + 1]
        namespace = argv[argv.index("-namespace") + 1]
        digest = hashlib.sha256(f"{self.socket}/{namespace}/{ident}".encode()).hexdigest()
        return [Path("/run/containerd/s") / digest]

    def _remove_cgroups(self) -> None:
        base = Path("/sys/fs/cgroup")
        for parent in [
            base / self.cgroup_parent.strip("/"),
            *base.glob(f"*/{self.cgroup_parent.strip('/')}"),
        ]:
            if parent.is_dir():
                for child in sorted(parent.rglob("*"), key=lambda p: -len(p.parts)):
                    if child.is_dir():
                        with contextlib.suppress(OSError):
                            child.rmdir()
                with contextlib.suppress(OSError):
                    parent.rmdir()

    # --- CNI configuration

    def install_plugins(self, *names: str, record: bool = False) -> None:
        """Put stock plugins (from /usr/lib/cni) into the bin dir; ``record`` wraps each in a shell
        script that appends one line per exec to ``calls_log`` first."""
        for name in names:
            target = self.bin_dir / name
            target.unlink(missing_ok=True)
            if record:
                self.install_recorder(name, CNI_PLUGINS / name)
            else:
                target.symlink_to(CNI_PLUGINS / name)

    def install_recorder(self, name: str, real: Path) -> None:
        script = (
            "#!/bin/sh\n"
            f'printf \'%s|%s|%s|%s|{name}\\n\' "$CNI_COMMAND" "$CNI_CONTAINERID" "$CNI_NETNS" '
            f'"$CNI_IFNAME" >> {shlex.quote(str(self.calls_log))}\n'
            f'exec {shlex.quote(str(real))} "$@"\n'
        )
        path = self.bin_dir / name
        path.unlink(missing_ok=True)
        path.write_text(script)
        path.chmod(0o755)

    def install_cloud_cni(self, how: str = "install-shim", record: bool = False) -> Path:
        """The project's plugin as bin dir / cloud-cni. ``install-shim``: as a node gets it (`cloud-cni
        install-shim`, a self-contained tree); ``venv``: a symlink to this venv's cloud-cni-shim
        script (its shebang names the venv's interpreter, so it runs under containerd's bare env)."""
        plugin = self.bin_dir / "cloud-cni"
        plugin.unlink(missing_ok=True)
        if how == "install-shim":
            from ipamd.install_shim import install

            runtime = self.dir / "opt-cni-cloud-cni"
            install(runtime_dir=runtime, cni_bin_dir=self.bin_dir, host_runtime_dir=runtime)
        elif how == "venv":
            plugin.symlink_to(Path(sys.executable).parent / "cloud-cni-shim")
        else:
            raise ValueError(how)
        if record:
            real = plugin.with_name("cloud-cni.real")
            plugin.rename(real)
            self.install_recorder("cloud-cni", real)
        return plugin

    def cni_calls(self) -> list[CniCall]:
        if not self.calls_log.exists():
            return []
        return [CniCall(*line.split("|")) for line in self.calls_log.read_text().splitlines()]

    def write_conflist(self, conf: dict[str, Any] | str, timeout: float = 20.0) -> dict[str, Any]:
        """Write the conflist in place (cp semantics: CRI ignores a file moved in) and wait until
        CRI has loaded exactly it. Any other conflist is removed first."""
        text = conf if isinstance(conf, str) else json.dumps(conf, indent=2)
        wanted = json.loads(text)
        for other in self.conf_dir.iterdir():
            if other.name != CONFLIST:
                other.unlink()
        with open(self.conf_dir / CONFLIST, "w") as f:
            f.write(text)

        def loaded() -> bool:
            info = self.cri.call("Status", {"verbose": True}).get("info", {})
            networks = json.loads(info.get("cniconfig", "{}")).get("Networks") or []
            sources = [json.loads(n["Config"]["Source"]) for n in networks if n["Config"].get("Source")]
            return wanted in sources

        self._wait(loaded, timeout, f"CRI to load {CONFLIST}")
        return wanted

    # --- pods

    def run_pod(
        self, name: str, namespace: str = "default", uid: str | None = None, timeout: float = 60.0
    ) -> Pod:
        uid = uid or str(uuid.uuid4())
        config = {
            "metadata": {"name": name, "uid": uid, "namespace": namespace, "attempt": 0},
            "hostname": name,
            "labels": {"io.kubernetes.pod.name": name, "io.kubernetes.pod.namespace": namespace},
            "linux": {
                "cgroup_parent": self.cgroup_parent,
                "security_context": {"namespace_options": {"network": "POD", "pid": "POD", "ipc": "POD"}},
            },
        }
        reply = self.cri.call("RunPodSandbox", {"config": config}, timeout=timeout)
        return self.pod(reply["pod_sandbox_id"])

    def status(self, sandbox_id: str) -> dict[str, Any]:
        reply = self.cri.call("PodSandboxStatus", {"pod_sandbox_id": sandbox_id, "verbose": True})
        reply["info"] = json.loads(reply.get("info", {}).get("info", "{}"))
        return dict(reply)

    def pod(self, sandbox_id: str) -> Pod:
        reply = self.status(sandbox_id)
        status, info = reply["status"], reply["info"]
        namespaces = info["runtimeSpec"]["linux"]["namespaces"]
        [netns_path] = [n.get("path", "") for n in namespaces if n["type"] == "network"]
        return Pod(
            name=status["metadata"]["name"],
            namespace=status["metadata"]["namespace"],
            uid=status["metadata"]["uid"],
            sandbox_id=sandbox_id,
            ip=status.get("network", {}).get("ip", ""),
            netns_path=netns_path,
            pid=int(info.get("pid", 0)),
        )

    def stop_pod(self, pod: Pod) -> None:
        self.cri.call("StopPodSandbox", {"pod_sandbox_id": pod.sandbox_id})

    def remove_pod(self, pod: Pod) -> None:
        self.cri.call("RemovePodSandbox", {"pod_sandbox_id": pod.sandbox_id})

    def sandboxes(self) -> list[dict[str, Any]]:
        return list(self.cri.call("ListPodSandbox").get("items", []))

    # --- looking inside

    def exec_in_pod_netns(
        self, pod: Pod, argv: Sequence[str], check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        return self._nsenter(pod.netns_path, argv, check)

    def exec_in_node(self, argv: Sequence[str], check: bool = True) -> subprocess.CompletedProcess[str]:
        return self._nsenter(self.node_netns_path, argv, check)

    @staticmethod
    def _nsenter(path: str, argv: Sequence[str], check: bool) -> subprocess.CompletedProcess[str]:
        cmd = ["nsenter", f"--net={path}", "--", *argv]
        return subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=30, check=check)

    def node_links(self) -> list[str]:
        out = self.exec_in_node(["ip", "-o", "link", "show"]).stdout
        return [line.split(":")[1].strip().split("@")[0] for line in out.splitlines()]

    def pod_netns_mounts(self) -> list[str]:
        """The pods' netns bind mounts that still exist (under the state dir)."""
        return [m for m in _mounts_under(self.state) if "/netns/" in m]


def require_root() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root: network namespaces and containerd")


@contextlib.contextmanager
def node(
    dir: Path, image_archive: Path, *, node_netns: str | None = None, snapshotter: str | None = None
) -> Iterator[Containerd]:
    """A containerd in a node netns, stopped on exit whatever happened inside. The netns is created
    and deleted here unless ``node_netns`` names one the caller made (e.g. the node of
    tests/fakes/vpc.py, for a datapath that needs the node's uplink)."""
    name = node_netns or netns.create("node")
    runtime: Containerd | None = None
    try:
        runtime = Containerd(dir, name, image_archive=image_archive, snapshotter=snapshotter)
        runtime.start()
        yield runtime
    finally:
        if runtime is not None:
            runtime.stop()
        if node_netns is None:
            netns.delete(name)


@pytest.fixture(scope="session")
def pause_image(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_pause_image(tmp_path_factory.getbasetemp() / "images")


@pytest.fixture
def containerd_node(tmp_path: Path, pause_image: Path) -> Iterator[Containerd]:
    """A started containerd in a fresh node netns (needs root; skipped otherwise)."""
    require_root()
    with node(tmp_path / f"ctrd-{secrets.token_hex(2)}", pause_image) as runtime:
        yield runtime
    assert runtime.forced == [], f"teardown had to force: {runtime.forced}"
