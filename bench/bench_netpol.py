# ruff: noqa: E501  (usage lines, table printouts and the children's one-line scripts read better unwrapped)
"""What NetworkPolicy enforcement costs: programming latency, full rebuilds, throughput, memory.

    PYTHONPATH=. .venv/bin/python bench/bench_netpol.py latency    [--pods 1000] [--policies 200] [--local 50] [--changes 200]
    PYTHONPATH=. .venv/bin/python bench/bench_netpol.py rebuild    [--sizes 100,1000,10000] [--rounds 3]
    PYTHONPATH=. .venv/bin/python bench/bench_netpol.py throughput [--policies 50] [--rounds 6] [--seconds 3]
    PYTHONPATH=. .venv/bin/python bench/bench_netpol.py rss        [--pods 10000] [--local 50]

Root (network namespaces, nftables). Everything runs in namespaces the script creates.

latency: the real daemon (DATAPATH=linux, ENABLE_NETWORK_POLICY=true, standard mode) in the node
  namespace of a simulated VPC (m5.xlarge), the fake kube-apiserver inside that namespace holding
  --pods pods (--local of them on this node, wired through the real CNI plugin) in pods/50
  namespaces and --policies policies of eight shapes (deny-all, pod and namespace selectors,
  named ports, ipBlock with except, egress). Then --changes changes, one at a time, cycling through:
  a remote pod's label, a policy's port, a namespace's label, a remote pod created, deleted, and a
  local pod's label. Each is timed from just before the API write until the daemon's
  /v1/policy says that write's resourceVersion is programmed (polled every 5 ms: the figure is
  end to end, API delivery and the poll included). Prints p50 / p99 (goal p99 <= 1 s).
rebuild: the watched state (ClusterState) replaced from N pod objects (N/50 namespaces, 10
  policies each, 100 local pods), compiled, and the whole table applied with ``nft -f`` in an empty
  namespace: each step's median over --rounds, and the table's objects. Growth per pod is printed
  (near linear: the ratio of time per pod between sizes).
throughput: two pod namespaces behind a node namespace (veths, /32 routes, as the Linux datapath
  wires them); one TCP stream from x/a to x/b for --seconds, in alternating rounds with no table and
  with --policies policies selecting both pods (the allowing rule last). Prints the median Gbit/s of
  each and the ratio (goal >= 0.95).
rss: the daemon as in latency with --pods pods in the API; VmRSS with ENABLE_NETWORK_POLICY=true
  (every pod of the cluster watched) and with it false (only this node's pods), same pods.
Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from contextlib import ExitStack
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from _daemon import percentile, ratio_line  # noqa: E402

from tests.fakes import netns  # noqa: E402

NODE = "ip-10-0-0-10.ec2.internal"
PORTS = [
    {"name": "http", "containerPort": 8080, "protocol": "TCP"},
    {"name": "metrics", "containerPort": 9090, "protocol": "TCP"},
    {"name": "dns", "containerPort": 53, "protocol": "UDP"},
]


# --- a cluster of a given size ----------------------------------------------------------------------


def namespace_names(pods: int) -> list[str]:
    return [f"ns-{i}" for i in range(max(1, pods // 50))]


def namespace_labels(i: int) -> dict[str, str]:
    return {"team": f"t{i % 5}", "env": "prod" if i % 2 else "dev"}


def pod_labels(i: int) -> dict[str, str]:
    return {"app": f"a{i % 10}", "tier": ("web", "db", "cache")[i % 3]}


def remote_ip(i: int) -> str:
    return f"10.128.{i // 250}.{i % 250 + 1}"


def policy_spec(j: int, namespaces: list[str]) -> tuple[str, str, dict[str, Any]]:
    ns = namespaces[j % len(namespaces)]
    app = {"matchLabels": {"app": f"a{j % 10}"}}
    shape = j % 8
    if shape == 0:
        spec: dict[str, Any] = {"podSelector": app, "policyTypes": ["Ingress", "Egress"]}
    elif shape == 1:
        spec = {
            "podSelector": app,
            "ingress": [
                {"from": [{"podSelector": {"matchLabels": {"tier": "web"}}}], "ports": [{"port": "http"}]}
            ],
        }
    elif shape == 2:
        spec = {
            "podSelector": app,
            "ingress": [
                {
                    "from": [
                        {
                            "namespaceSelector": {"matchLabels": {"team": f"t{j % 5}"}},
                            "podSelector": {"matchLabels": {"tier": "db"}},
                        }
                    ],
                    "ports": [{"port": 5432}],
                }
            ],
        }
    elif shape == 3:
        spec = {
            "podSelector": app,
            "ingress": [
                {
                    "from": [{"ipBlock": {"cidr": "10.128.0.0/16", "except": ["10.128.1.0/24"]}}],
                    "ports": [{"port": 80, "endPort": 90}],
                }
            ],
        }
    elif shape == 4:
        spec = {
            "podSelector": app,
            "policyTypes": ["Egress"],
            "egress": [
                {
                    "to": [{"namespaceSelector": {"matchLabels": {"env": "prod"}}}],
                    "ports": [{"port": "metrics"}],
                }
            ],
        }
    elif shape == 5:
        spec = {
            "podSelector": app,
            "policyTypes": ["Egress"],
            "egress": [
                {
                    "to": [{"ipBlock": {"cidr": "0.0.0.0/0", "except": ["169.254.169.254/32"]}}],
                    "ports": [{"port": 443}],
                }
            ],
        }
    elif shape == 6:
        spec = {
            "podSelector": {},
            "ingress": [
                {
                    "from": [
                        {
                            "namespaceSelector": {},
                            "podSelector": {
                                "matchExpressions": [
                                    {"key": "app", "operator": "NotIn", "values": ["a1", "a2"]}
                                ]
                            },
                        }
                    ]
                }
            ],
        }
    else:
        spec = {
            "podSelector": app,
            "policyTypes": ["Egress"],
            "egress": [
                {
                    "to": [{"podSelector": {"matchLabels": {"app": f"a{(j + 1) % 10}"}}}],
                    "ports": [{"port": "dns", "protocol": "UDP"}],
                }
            ],
        }
    return ns, f"p-{j}", spec


def pod_object(i: int, namespaces: list[str], node: str, ip: str) -> dict[str, Any]:
    return {
        "metadata": {
            "namespace": namespaces[i % len(namespaces)],
            "name": f"pod-{i}",
            "labels": pod_labels(i),
        },
        "spec": {"nodeName": node, "containers": [{"name": "app", "ports": PORTS}]},
        "status": {"phase": "Running", "podIP": ip},
    }


# --- the daemon in a simulated VPC ----------------------------------------------------------------


class Node:
    """The real daemon in a VPC node namespace with the fake API server inside it."""

    def __init__(
        self, stack: ExitStack, tmp: Path, *, pods: int, policies: int, local: int, enabled: bool
    ) -> None:
        from tests.fakes.kube_apiserver import KubeApiServer
        from tests.fakes.vpc import SUBNET, VPC_CIDR, vpc_topology
        from tests.integration.conftest import DaemonProcess, daemon_env

        self.vpc = stack.enter_context(vpc_topology(tmp / "sim" / "state.json", instance_type="m5.xlarge"))
        self.api = KubeApiServer(netns=self.vpc.node).start()
        stack.callback(self.api.stop)
        self.namespaces = namespace_names(pods)
        self.api.add_node(NODE, internal_ip=self.vpc.node_ip)
        for i, ns in enumerate(self.namespaces):
            self.api.add_namespace(ns, labels=namespace_labels(i))
        self.remote = pods - local
        for i in range(self.remote):
            obj = pod_object(i, self.namespaces, f"node-{i % 50}", remote_ip(i))
            meta = obj["metadata"]
            self.api.add_pod(
                meta["namespace"],
                meta["name"],
                obj["spec"]["nodeName"],
                labels=meta["labels"],
                containers=obj["spec"]["containers"],
                pod_ip=remote_ip(i),
            )
        for j in range(policies):
            ns, name, spec = policy_spec(j, self.namespaces)
            self.api.put_network_policy(ns, name, spec)
        env = daemon_env(
            tmp,
            DATAPATH="linux",
            SIM_INSTANCE_TYPE=self.vpc.instance_type,
            SIM_SUBNET_CIDR=SUBNET,
            SIM_VPC_CIDR=VPC_CIDR,
            SIM_STATE_PATH=str(self.vpc.state_path),
            MINIMUM_IP_TARGET=str(local + 2),
            WARM_IP_TARGET="2",
            KUBECONFIG=self.api.kubeconfig(tmp / "kubeconfig"),
            NODE_NAME=NODE,
            KUBERNETES_INTEGRATION="on",
            STARTUP_TAINT="",
            ENABLE_NETWORK_POLICY="true" if enabled else "false",
            LOG_LEVEL="warning",
        )
        self.daemon = DaemonProcess(dir=tmp, env=env, netns=self.vpc.node)
        self.daemon.start()
        stack.callback(
            lambda: self.daemon.kill() if self.daemon.proc and self.daemon.proc.poll() is None else None
        )
        self.daemon.wait_pool(lambda p: p["total"] >= local, timeout=60)
        self.local: list[tuple[str, str]] = []
        for k in range(local):
            self.wire(self.remote + k)
        if enabled:
            self.programmed()

    def wire(self, i: int) -> None:
        from tests.integration.test_shim_exec import netconf, shim

        ns_name, name = self.namespaces[i % len(self.namespaces)], f"pod-{i}"
        self.api.add_pod(
            ns_name, name, NODE, labels=pod_labels(i), containers=[{"name": "app", "ports": PORTS}]
        )
        pod_ns = self.vpc.new_pod()
        args = f"IgnoreUnknown=1;K8S_POD_NAMESPACE={ns_name};K8S_POD_NAME={name};K8S_POD_UID={uuid.uuid4()}"
        done = shim(
            "ADD", netconf(self.daemon.socket), cid=f"ctr-{i}", netns=f"/var/run/netns/{pod_ns}", args=args
        )
        if done.code != 0:
            raise SystemExit(f"ADD {ns_name}/{name}: {done}")
        ip = done.json["ips"][0]["address"].split("/")[0]

        def status(obj: dict[str, Any]) -> None:
            obj["status"].update(podIP=ip, podIPs=[{"ip": ip}])

        self.api.update_pod(ns_name, name, status)
        self.local.append((ns_name, name))

    def programmed_rv(self) -> dict[str, int]:
        return dict(self.daemon.get("/v1/policy").get("programmed_resource_versions") or {})

    def wait(self, watch: str, rv: int, timeout: float = 30.0) -> float:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.programmed_rv().get(watch, -1) >= rv:
                return time.monotonic()
            time.sleep(0.005)
        raise SystemExit(f"{watch} rv {rv} not programmed after {timeout} s")

    def programmed(self) -> None:
        for watch, kind in (
            ("netpol-pods", "pods"),
            ("namespaces", "namespaces"),
            ("networkpolicies", "networkpolicies"),
        ):
            self.wait(watch, self.api.latest_rv(kind), timeout=120)

    def rss_kb(self) -> int:
        assert self.daemon.proc is not None
        for line in Path(f"/proc/{self.daemon.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        return 0


def run_latency(args: argparse.Namespace) -> None:
    rng = random.Random(7)
    with ExitStack() as stack, tempfile.TemporaryDirectory(prefix="bench-netpol-") as d:
        t0 = time.monotonic()
        node = Node(stack, Path(d), pods=args.pods, policies=args.policies, local=args.local, enabled=True)
        view = node.daemon.get("/v1/policy")
        print(
            f"set-up {time.monotonic() - t0:.1f} s: {args.pods} pods ({args.local} on this node), "
            f"{len(node.namespaces)} namespaces, {args.policies} policies; table {view['objects']}"
        )
        samples: dict[str, list[float]] = {}
        created: list[tuple[str, str]] = []
        for n in range(args.changes):
            kind = ("pod-label", "policy", "namespace-label", "pod-create", "pod-delete", "local-pod-label")[
                n % 6
            ]
            i = rng.randrange(node.remote)
            ns_i = rng.randrange(len(node.namespaces))
            start = time.monotonic()
            if kind == "pod-label":
                obj = node.api.set_pod_labels(
                    node.namespaces[i % len(node.namespaces)],
                    f"pod-{i}",
                    {**pod_labels(i), "app": f"a{rng.randrange(10)}"},
                )
                watch = "netpol-pods"
            elif kind == "policy":
                ns, name, spec = policy_spec(rng.randrange(args.policies), node.namespaces)
                spec = {**spec, "ingress": [{"ports": [{"port": 1000 + n}]}]}
                obj = node.api.put_network_policy(ns, name, spec)
                watch = "networkpolicies"
            elif kind == "namespace-label":
                obj = node.api.set_namespace_labels(
                    node.namespaces[ns_i], {"team": f"t{rng.randrange(5)}", "env": "prod"}
                )
                watch = "namespaces"
            elif kind == "pod-create":
                name = f"extra-{n}"
                ns = node.namespaces[ns_i]
                obj = node.api.add_pod(
                    ns,
                    name,
                    "node-7",
                    labels=pod_labels(n),
                    containers=[{"name": "app", "ports": PORTS}],
                    pod_ip=f"10.129.{n // 250}.{n % 250 + 1}",
                )
                created.append((ns, name))
                watch = "netpol-pods"
            elif kind == "pod-delete":
                ns, name = created.pop(0)
                obj = node.api.delete_pod(ns, name) or {}
                watch = "netpol-pods"
            else:
                ns, name = node.local[rng.randrange(len(node.local))]
                obj = node.api.set_pod_labels(
                    ns, name, {**pod_labels(rng.randrange(10)), "app": f"a{rng.randrange(10)}"}
                )
                watch = "netpol-pods"
            rv = int(obj["metadata"]["resourceVersion"])
            samples.setdefault(kind, []).append(node.wait(watch, rv) - start)
        everything = [s for v in samples.values() for s in v]
        print(f"{'change':<18} {'n':>4} {'p50 ms':>8} {'p99 ms':>8}")
        for kind, v in samples.items():
            print(
                f"{kind:<18} {len(v):>4} {statistics.median(v) * 1000:8.1f} {percentile(v, 0.99) * 1000:8.1f}"
            )
        print(
            f"{'all':<18} {len(everything):>4} {statistics.median(everything) * 1000:8.1f} {percentile(everything, 0.99) * 1000:8.1f}"
        )
        print(
            ratio_line(
                "programming latency p99", percentile(everything, 0.99), 1.0, "s", higher_is_better=False
            )
        )
        view = node.daemon.get("/v1/policy")
        print(f"transactions {view['transactions']}; table {view['objects']}")


def run_rss(args: argparse.Namespace) -> None:
    out = {}
    for enabled in (False, True):
        with ExitStack() as stack, tempfile.TemporaryDirectory(prefix="bench-netpol-") as d:
            node = Node(stack, Path(d), pods=args.pods, policies=200, local=args.local, enabled=enabled)
            time.sleep(2.0)
            out[enabled] = node.rss_kb()
            print(
                f"ENABLE_NETWORK_POLICY={'true' if enabled else 'false':<5}: daemon VmRSS {out[enabled] / 1024:.1f} MB "
                f"({args.pods} pods in the API, {args.local} on this node)"
            )
    print(f"NetworkPolicy with {args.pods} pods watched: +{(out[True] - out[False]) / 1024:.1f} MB")


# --- rebuild --------------------------------------------------------------------------------------


def run_rebuild(args: argparse.Namespace) -> None:
    from ipamd.netpol.cluster import ClusterState
    from ipamd.netpol.compile import Compiler, LocalPod
    from ipamd.netpol.nft import full_script

    print(
        f"{'pods':>6} {'policies':>8} {'state ms':>9} {'compile ms':>10} {'script ms':>9} {'nft ms':>8} "
        f"{'total ms':>9} {'us/pod':>7} {'chains':>6} {'rules':>6} {'sets':>5} {'elements':>8} {'script KB':>9}"
    )
    for size in (int(s) for s in args.sizes.split(",")):
        namespaces = namespace_names(size)
        local_n = min(100, size)
        pods = [
            pod_object(i, namespaces, NODE if i < local_n else f"node-{i % 50}", remote_ip(i))
            for i in range(size)
        ]
        ns_objs = [
            {"metadata": {"name": n, "labels": {"kubernetes.io/metadata.name": n, **namespace_labels(i)}}}
            for i, n in enumerate(namespaces)
        ]
        policies = []
        for j in range(10 * len(namespaces)):
            ns, name, spec = policy_spec(j, namespaces)
            policies.append({"metadata": {"namespace": ns, "name": name}, "spec": spec})
        local = [
            LocalPod(p["metadata"]["namespace"], p["metadata"]["name"], p["status"]["podIP"], f"ccni{i:011x}")
            for i, p in enumerate(pods[:local_n])
        ]
        times: dict[str, list[float]] = {k: [] for k in ("state", "compile", "script", "nft")}
        objects: dict[str, int] = {}
        text = ""
        with netns.namespaces("nftbench") as (ns_name,):
            for _ in range(args.rounds):
                t0 = time.perf_counter()
                state = ClusterState(NODE)
                state.replace_namespaces(ns_objs)
                state.replace_pods(pods)
                state.replace_policies(policies)
                t1 = time.perf_counter()
                desired = Compiler().compile(state, local, strict=False)
                t2 = time.perf_counter()
                text = full_script(desired)
                t3 = time.perf_counter()
                subprocess.run(
                    ["ip", "netns", "exec", ns_name, "nft", "-f", "-"], input=text.encode(), check=True
                )
                t4 = time.perf_counter()
                for k, a, b in (("state", t0, t1), ("compile", t1, t2), ("script", t2, t3), ("nft", t3, t4)):
                    times[k].append(b - a)
                objects = desired.objects()
        med = {k: statistics.median(v) * 1000 for k, v in times.items()}
        total = sum(med.values())
        print(
            f"{size:>6} {len(policies):>8} {med['state']:9.1f} {med['compile']:10.1f} {med['script']:9.1f} {med['nft']:8.1f} "
            f"{total:9.1f} {total * 1000 / size:7.1f} {objects['chains']:>6} {objects['rules']:>6} {objects['sets']:>5} "
            f"{objects['set_elements']:>8} {len(text) / 1024:9.1f}"
        )


# --- throughput -----------------------------------------------------------------------------------

_RECEIVER = r"""
import socket, sys, time
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind(("0.0.0.0", 5201)); s.listen(1)
print("ready", flush=True)
while True:
    c, _ = s.accept()
    buf = bytearray(1 << 20); view = memoryview(buf); total = 0; start = None
    while True:
        n = c.recv_into(view)
        if not n:
            break
        if start is None:
            start = time.perf_counter()
        total += n
    print(f"{total} {time.perf_counter() - start}", flush=True)
    c.close()
"""
_SENDER = r"""
import socket, sys, time
s = socket.create_connection((sys.argv[1], 5201)); data = b"\0" * (1 << 20); end = time.monotonic() + float(sys.argv[2])
while time.monotonic() < end:
    s.sendall(data)
s.close()
"""


def run_throughput(args: argparse.Namespace) -> None:
    from ipamd.netpol.cluster import ClusterState
    from ipamd.netpol.compile import Compiler, LocalPod
    from ipamd.netpol.nft import full_script

    with netns.namespaces("tpnode", "tpa", "tpb") as (node, a, b):
        ips = {a: "10.0.0.2", b: "10.0.0.3"}
        veths = {a: "ccni0000000000a", b: "ccni0000000000b"}
        netns.run(node, "sysctl", "-qw", "net.ipv4.ip_forward=1")
        for pod in (a, b):
            netns.veth(node, veths[pod], pod, "eth0")
            netns.ip(pod, "addr", "add", f"{ips[pod]}/32", "dev", "eth0")
            netns.ip(pod, "link", "set", "eth0", "up")
            netns.ip(pod, "route", "add", "169.254.1.1", "dev", "eth0", "scope", "link")
            netns.ip(pod, "route", "add", "default", "via", "169.254.1.1", "dev", "eth0")
            netns.ip(node, "link", "set", veths[pod], "up")
            mac = netns.ip(node, "-br", "link", "show", veths[pod]).split()[2]
            netns.ip(pod, "neigh", "replace", "169.254.1.1", "lladdr", mac, "dev", "eth0", "nud", "permanent")
            netns.ip(node, "route", "add", f"{ips[pod]}/32", "dev", veths[pod], "scope", "link")
        # --policies policies in namespace x selecting both pods both ways; what allows a -> b comes last
        pods = [
            {
                "metadata": {"namespace": "x", "name": n, "labels": {"pod": n, "app": "bench"}},
                "spec": {
                    "nodeName": NODE,
                    "containers": [{"name": "c", "ports": [{"name": "iperf", "containerPort": 5201}]}],
                },
                "status": {"podIP": ip},
            }
            for n, ip in (("a", ips[a]), ("b", ips[b]))
        ]
        policies = []
        for j in range(args.policies - 1):
            _, name, spec = policy_spec(j, ["x"])
            spec = {
                **spec,
                "podSelector": {"matchLabels": {"app": "bench"}},
                "policyTypes": ["Ingress", "Egress"],
            }
            policies.append({"metadata": {"namespace": "x", "name": name}, "spec": spec})
        policies.append(
            {
                "metadata": {"namespace": "x", "name": "allow"},
                "spec": {
                    "podSelector": {"matchLabels": {"app": "bench"}},
                    "policyTypes": ["Ingress", "Egress"],
                    "ingress": [
                        {
                            "from": [{"podSelector": {"matchLabels": {"pod": "a"}}}],
                            "ports": [{"port": "iperf"}],
                        }
                    ],
                    "egress": [{"to": [{"podSelector": {"matchLabels": {"pod": "b"}}}]}],
                },
            }
        )
        state = ClusterState(NODE)
        state.replace_namespaces(
            [{"metadata": {"name": "x", "labels": {"kubernetes.io/metadata.name": "x"}}}]
        )
        state.replace_pods(pods)
        state.replace_policies(policies)
        table = Compiler().compile(
            state, [LocalPod("x", "a", ips[a], veths[a]), LocalPod("x", "b", ips[b], veths[b])], strict=False
        )
        load = full_script(table)
        receiver = subprocess.Popen(
            ["ip", "netns", "exec", b, sys.executable, "-c", _RECEIVER], stdout=subprocess.PIPE, text=True
        )
        assert receiver.stdout is not None
        receiver.stdout.readline()
        results: dict[str, list[float]] = {"none": [], "policies": []}
        try:
            for r in range(args.rounds * 2):
                mode = ("none", "policies")[r % 2]
                netns.run(node, "nft", "delete", "table", "inet", "cloud-cni-netpol", check=False)
                if mode == "policies":
                    subprocess.run(
                        ["ip", "netns", "exec", node, "nft", "-f", "-"], input=load.encode(), check=True
                    )
                subprocess.run(
                    ["ip", "netns", "exec", a, sys.executable, "-c", _SENDER, ips[b], str(args.seconds)],
                    check=True,
                )
                total, seconds = receiver.stdout.readline().split()
                results[mode].append(int(total) * 8 / float(seconds) / 1e9)
        finally:
            receiver.kill()
        rules = table.objects()["rules"]
        print(
            f"a -> b TCP, {args.rounds} rounds of {args.seconds} s each way, table: {args.policies} policies, {rules} rules"
        )
        for mode, v in results.items():
            print(
                f"{mode:<9} Gbit/s median {statistics.median(v):6.2f}  rounds {' '.join(f'{x:.2f}' for x in v)}"
            )
        ratio = statistics.median(results["policies"]) / statistics.median(results["none"])
        print(ratio_line("throughput with policies / without", ratio, 0.95, "x", higher_is_better=True))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="what", required=True)
    p = sub.add_parser("latency")
    p.add_argument("--pods", type=int, default=1000)
    p.add_argument("--policies", type=int, default=200)
    p.add_argument("--local", type=int, default=50)
    p.add_argument("--changes", type=int, default=200)
    p = sub.add_parser("rebuild")
    p.add_argument("--sizes", default="100,1000,10000")
    p.add_argument("--rounds", type=int, default=3)
    p = sub.add_parser("throughput")
    p.add_argument("--policies", type=int, default=50)
    p.add_argument("--rounds", type=int, default=6)
    p.add_argument("--seconds", type=float, default=3.0)
    p = sub.add_parser("rss")
    p.add_argument("--pods", type=int, default=10000)
    p.add_argument("--local", type=int, default=50)
    args = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("root: network namespaces and nftables")
    print(f"bench_netpol {args.what} {time.strftime('%Y-%m-%d %H:%M:%S')} load {os.getloadavg()[0]:.2f}")
    {"latency": run_latency, "rebuild": run_rebuild, "throughput": run_throughput, "rss": run_rss}[args.what](
        args
    )


if __name__ == "__main__":
    main()
