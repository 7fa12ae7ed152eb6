"""Soak the CNI plugin: thousands of fuzzed CNI calls through the real `cloud-cni-shim` executable
against a running daemon (sim provider, DATAPATH=none).

Every call picks a verb (ADD, DEL, CHECK, GC, STATUS, VERSION, now and then a bogus one) and a CNI
version (0.4.0, 1.0.0, 1.1.0, now and then an unsupported one), builds the env and the network
config a runtime would send (containerd's CNI_ARGS, tests/integration/test_shim_exec.py), then
mutates some of it: env vars dropped, emptied or invalid, CNI_ARGS garbled, stdin truncated, bit
flipped, not UTF-8, deeply nested, fields of the wrong type, a prevResult from another container, a
socket nobody listens on, GC attachment lists that keep only some pods.

Checks, each counted:

* no traceback ever, on stdout or stderr;
* every non-zero exit prints one CNI error object on stdout: ``cniVersion`` (str), ``code`` (int),
  ``msg`` (str); every success prints what the spec says (an ADD result with ``ips``, a VERSION
  object, nothing for DEL, CHECK, GC and STATUS);
* the daemon stays alive (its process, and /healthz at the end);
* at the end the daemon holds exactly what live ADDs took: the script keeps a model of the
  attachments ((network, container ID, ifname) -> IP) from what the calls *sent* and how they
  *exited*: an ADD that exited 0 adds one, a DEL that exited 0 on the daemon's socket removes one
  (a DEL the shim queued in the daemon's del-spool counts too: the script waits for the daemon to
  drain it), a GC that exited 0 removes the network's attachments it did not list. The model is
  compared with /v1/assignments. GC calls run alone (the other workers wait), so the model is exact.

Usage: PYTHONPATH=. .venv/bin/python bench/soak_cni.py [--calls 10000] [--seed 1] [--workers 4]
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import json
import random
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _daemon import Daemon, load_average

SHIM = Path(sys.executable).parent / "cloud-cni-shim"
VERBS = ("ADD", "DEL", "CHECK", "GC", "STATUS", "VERSION")
VERSIONS = ("0.4.0", "1.0.0", "1.1.0")
BAD_VERSIONS: tuple[Any, ...] = ("0.3.1", "0.2.0", "9.9.9", "", "1.0", 1, None, ["1.0.0"])
NETWORKS = ("cloud-cni", "cloud-cni-b")
IFNAMES = ("eth0", "net1")
# What containerd's CRI sends (reference/lab-facts.md).
CRI_ARGS = (
    "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME={pod};"
    "K8S_POD_INFRA_CONTAINER_ID={cid};K8S_POD_UID=uid-{pod}"
)
DAEMON_ENV = {
    "SIM_INSTANCE_TYPE": "c5.18xlarge",
    "WARM_IP_TARGET": "16",
    "MINIMUM_IP_TARGET": "32",
    "IP_COOLDOWN_PERIOD": "0",
}

Key = tuple[str, str, str]  # (network, container ID, ifname)


@dataclass
class Call:
    verb: str  # the verb the call was built for (CNI_COMMAND may have been mutated away from it)
    env: dict[str, str | bytes]
    stdin: bytes
    mutations: list[str]


@dataclass
class Outcome:
    code: int
    stdout: bytes
    stderr: bytes
    seconds: float


@dataclass
class Report:
    calls: int = 0
    seconds: float = 0.0
    outcomes: collections.Counter[tuple[str, str]] = field(default_factory=collections.Counter)
    codes: collections.Counter[tuple[str, int]] = field(default_factory=collections.Counter)
    mutations: collections.Counter[str] = field(default_factory=collections.Counter)
    violations: list[str] = field(default_factory=list)
    stderr_nonempty: int = 0
    internal: list[str] = field(default_factory=list)  # CNI code 999: the shim's "a bug" path
    live_expected: int = 0
    live_held: int = 0
    daemon_alive: bool = True
    spool_drained: bool = True

    def violation(self, text: str) -> None:
        if len(self.violations) < 1000:
            self.violations.append(text)


class Model:
    """The attachments the daemon should hold, from the calls' inputs and exit codes."""

    def __init__(self) -> None:
        self.live: dict[Key, str] = {}
        self.results: dict[Key, dict[str, Any]] = {}  # the last ADD result, for prevResult

    def apply(self, call: Call, out: Outcome, socket: str, report: Report) -> None:
        if out.code != 0:
            return  # a refused call changes nothing
        command = _text(call.env.get("CNI_COMMAND"))
        conf = _json_object(call.stdin)
        if conf is None or command not in ("ADD", "DEL", "GC"):
            return
        if conf.get("ipamdSocket") != socket:
            return  # another socket: not this daemon (a DEL there is queued in that directory)
        network = conf.get("name")
        if command == "GC":
            gc_list = conf.get("cni.dev/valid-attachments", conf.get("cni.dev/attachments"))
            if not isinstance(gc_list, list):
                return  # GC without the key does nothing
            alive = {
                (e.get("containerID"), e.get("ifname") or e.get("ifName"))
                for e in gc_list
                if isinstance(e, dict)
            }
            for key in [k for k in self.live if k[0] == network and (k[1], k[2]) not in alive]:
                del self.live[key]
            return
        key = (str(network), _text(call.env.get("CNI_CONTAINERID")), _text(call.env.get("CNI_IFNAME")))
        if command == "DEL":
            self.live.pop(key, None)
            return
        result = json.loads(out.stdout)
        ip = result["ips"][0]["address"].split("/")[0]
        if key in self.live and self.live[key] != ip:
            report.violation(f"ADD twice for {key} gave {self.live[key]} then {ip}")
        self.live[key] = ip
        self.results[key] = result


def _text(value: str | bytes | None) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "surrogateescape")
    return value or ""


def _json_object(data: bytes) -> dict[str, Any] | None:
    try:
        doc = json.loads(data)
    except (ValueError, RecursionError):
        return None
    return doc if isinstance(doc, dict) else None


class Fuzzer:
    """Builds one call: a plausible runtime call, then zero or more mutations."""

    def __init__(self, rng: random.Random, socket: str, log_file: str, worker: int, containers: int) -> None:
        self.rng = rng
        self.socket = socket
        self.log_file = log_file
        self.cids = [f"w{worker}c{n:03d}" for n in range(containers)]
        self.dead_socket = str(Path(log_file).parent / "nobody" / "ipamd.sock")

    def build(self, model: Model, gc_keys: list[Key] | None = None) -> Call:
        rng = self.rng
        verb = rng.choice(VERBS) if gc_keys is None else "GC"
        mutations: list[str] = []
        version: Any = rng.choice(VERSIONS)
        if verb in ("GC", "STATUS") and rng.random() < 0.7:
            version = "1.1.0"  # mostly the version these verbs need (older ones are code 1 by the spec)
        if rng.random() < 0.05:
            version = rng.choice(BAD_VERSIONS)
            mutations.append("version")
        cid, ifname = rng.choice(self.cids), rng.choice(IFNAMES)
        network = rng.choice(NETWORKS)
        env: dict[str, str | bytes] = {
            "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
            "CNI_COMMAND": verb,
            "CNI_PATH": "/opt/cni/bin",
        }
        if verb in ("ADD", "DEL", "CHECK"):
            env.update(
                CNI_CONTAINERID=cid,
                CNI_IFNAME=ifname,
                CNI_NETNS=f"/var/run/netns/{cid}",
                CNI_ARGS=CRI_ARGS.format(pod=cid, cid=cid),
            )
        conf: dict[str, Any] = {
            "cniVersion": version,
            "name": network,
            "type": "cloud-cni",
            "ipamdSocket": self.socket,
            "logFile": self.log_file,
        }
        prev = model.results.get((network, cid, ifname))
        if verb in ("DEL", "CHECK") and prev is not None and rng.random() < 0.8:
            conf["prevResult"] = prev
        elif verb == "CHECK":
            conf["prevResult"] = {"cniVersion": version, "ips": []}
        if verb == "GC" and gc_keys is not None and rng.random() < 0.9:
            keep = [k for k in gc_keys if k[0] == network and rng.random() < 0.7]
            name = "cni.dev/valid-attachments" if rng.random() < 0.8 else "cni.dev/attachments"
            conf[name] = [{"containerID": c, "ifname": i} for _, c, i in keep]
        if rng.random() < 0.35:
            for _ in range(rng.choice((1, 1, 1, 2, 3))):
                mutations.append(
                    self._mutate_env(env) if rng.random() < 0.5 else self._mutate_conf(conf, model)
                )
        stdin = json.dumps(conf).encode()
        if rng.random() < 0.04:
            stdin, name = self._mutate_bytes(stdin)
            mutations.append(name)
        return Call(verb, env, stdin, mutations)

    def _mutate_env(self, env: dict[str, str | bytes]) -> str:
        rng = self.rng
        var = rng.choice(
            ("CNI_COMMAND", "CNI_CONTAINERID", "CNI_IFNAME", "CNI_NETNS", "CNI_ARGS", "CNI_PATH", "JUNK")
        )
        choices: dict[str, tuple[str | bytes | None, ...]] = {
            "CNI_COMMAND": (None, "", "add", "BOGUS", "ADD ", "DEL\n", b"\xff"),
            "CNI_CONTAINERID": (None, "", "-bad", "a b", "x" * 1025, "é", b"c\xff", "ok.id_-1", ".hidden"),
            "CNI_IFNAME": (None, "", ".", "..", "a" * 16, "eth/0", "eth 0", "eth:0", "é" * 8, "lo", "eth0\n"),
            "CNI_NETNS": (None, "", "relative/ns", "/" + "n" * 5000, "/proc/1/ns/net", b"/ns/\xff"),
            "CNI_ARGS": (
                None,
                "",
                "FOO=bar",
                "IgnoreUnknown=1;FOO=bar",
                "garbage",
                ";;;",
                "=x",
                "K8S_POD_NAME=",
                "IgnoreUnknown=maybe;FOO=bar",
                "IgnoreUnknown=1;K8S_POD_NAME=" + "p" * 5000,
                "IgnoreUnknown=1;K8S_POD_NAMESPACE=a=b",
            ),
            "CNI_PATH": (None, "", "/nonexistent"),
            "JUNK": ("x" * 10000, b"\xfe\xff", "=", ""),
        }
        value = rng.choice(choices[var])
        if value is None:
            env.pop(var, None)
        else:
            env[var if var != "JUNK" else "CNI_JUNK_" + str(rng.randrange(3))] = value
        return f"env:{var}"

    def _mutate_conf(self, conf: dict[str, Any], model: Model) -> str:
        rng = self.rng
        field_ = rng.choice(
            (
                "cniVersion",
                "name",
                "type",
                "ipamdSocket",
                "logFile",
                "prevResult",
                "gc-list",
                "extra",
            )
        )
        junk: tuple[Any, ...] = (None, 0, -1, 3.5, True, "", [], {}, "x" * 300)
        if field_ == "cniVersion":
            conf["cniVersion"] = rng.choice(BAD_VERSIONS + junk)
        elif field_ == "name":
            conf["name"] = rng.choice(("-bad", "a b", "x" * 2000, "é", *junk))
        elif field_ == "type":
            conf["type"] = rng.choice(("bridge", *junk))
        elif field_ == "ipamdSocket":
            conf["ipamdSocket"] = rng.choice((self.dead_socket, "relative.sock", "/" + "s" * 200, *junk))
        elif field_ == "logFile":
            conf["logFile"] = rng.choice(("/proc/nope/log", "x" * 5000, *junk))
        elif field_ == "prevResult":
            others = list(model.results.values())
            conf["prevResult"] = rng.choice(
                (
                    "a string",
                    [1, 2],
                    {"ips": "x"},
                    {"ips": [{"address": "bogus"}]},
                    {"cniVersion": "1.0.0", "ips": [{"address": "10.0.0.1/32", "interface": 99}]},
                    {"cniVersion": "1.0.0", "interfaces": [{"name": 5}]},
                    rng.choice(others) if others else None,
                    *junk,
                )
            )
        elif field_ == "gc-list":
            name = rng.choice(("cni.dev/valid-attachments", "cni.dev/attachments"))
            conf[name] = rng.choice(
                ("x", [1], [{"containerID": 5}], [{"ifname": "eth0"}], [{"containerID": "-x", "ifname": "a"}])
            )
        else:
            conf[rng.choice(("dns", "ipam", "capabilities", "runtimeConfig", "args", "zzz"))] = rng.choice(
                junk
            )
        return f"conf:{field_}"

    def _mutate_bytes(self, data: bytes) -> tuple[bytes, str]:
        rng = self.rng
        kind = rng.choice(("truncate", "flip", "not-utf8", "nested", "empty", "huge", "nul"))
        if kind == "truncate":
            return data[: rng.randrange(len(data))], "bytes:truncate"
        if kind == "flip":
            buf = bytearray(data)
            for _ in range(rng.randint(1, 4)):
                buf[rng.randrange(len(buf))] ^= 1 << rng.randrange(8)
            return bytes(buf), "bytes:flip"
        if kind == "not-utf8":
            return data.replace(b'"type"', b'"ty\xffpe"', 1), "bytes:not-utf8"
        if kind == "nested":
            depth = rng.choice((100, 1000, 100_000))
            return b"[" * depth + b"]" * depth, "bytes:nested"
        if kind == "empty":
            return b"", "bytes:empty"
        if kind == "huge":
            return data[:-1] + b', "pad": "' + b"p" * (2 << 20) + b'"}', "bytes:huge"
        return data.replace(b"cloud-cni", b"cloud\x00cni", 1), "bytes:nul"


def run_shim(call: Call, shim: Path = SHIM) -> Outcome:
    env = {k.encode() if isinstance(k, str) else k: v.encode() if isinstance(v, str) else v
           for k, v in call.env.items()}  # fmt: skip
    started = time.perf_counter()
    proc = subprocess.run(
        [str(shim)], input=call.stdin, env=env, capture_output=True, timeout=120, check=False
    )
    return Outcome(proc.returncode, proc.stdout, proc.stderr, time.perf_counter() - started)


def check_output(call: Call, out: Outcome, report: Report) -> str:
    """Checks one call's output; returns its outcome label ('ok' or 'err<code>')."""
    where = f"{call.verb} {call.mutations} env={_short(call.env)} stdin={call.stdin[:200]!r}"
    text = out.stdout + out.stderr
    if b"Traceback" in text:
        report.violation(f"traceback: {where}\nstdout={out.stdout[:2000]!r}\nstderr={out.stderr[:2000]!r}")
    if out.stderr:
        report.stderr_nonempty += 1
    command = _text(call.env.get("CNI_COMMAND"))
    if out.code != 0:
        try:
            err = json.loads(out.stdout)
        except ValueError:
            report.violation(f"exit {out.code} without a JSON error: {where}: stdout={out.stdout[:500]!r}")
            return "err?"
        if not (
            isinstance(err, dict)
            and isinstance(err.get("cniVersion"), str)
            and type(err.get("code")) is int
            and isinstance(err.get("msg"), str)
        ):
            report.violation(f"exit {out.code} with an invalid CNI error: {where}: {err!r:.500}")
            return "err?"
        report.codes[(call.verb, err["code"])] += 1
        if err["code"] == 999 and len(report.internal) < 100:
            report.internal.append(f"{where}: {err['msg']}")
        return f"err{err['code']}"
    if command == "ADD":
        try:
            result = json.loads(out.stdout)
            assert isinstance(result["cniVersion"], str) and result["ips"][0]["address"].endswith("/32")
        except (ValueError, KeyError, IndexError, TypeError, AssertionError):
            report.violation(f"ADD exit 0 without a result: {where}: stdout={out.stdout[:500]!r}")
    elif command == "VERSION":
        try:
            assert set(json.loads(out.stdout)["supportedVersions"]) == set(VERSIONS)
        except (ValueError, KeyError, TypeError, AssertionError):
            report.violation(f"VERSION exit 0 without a version object: {where}: {out.stdout[:500]!r}")
    elif out.stdout.strip():
        report.violation(f"{command} exit 0 printed something: {where}: {out.stdout[:500]!r}")
    return "ok"


def _short(env: dict[str, str | bytes]) -> dict[str, str]:
    return {k: (repr(v)[:60]) for k, v in env.items() if k != "PATH"}


class GcGate:
    """Many ordinary calls at once, or one GC alone (so that the model of a GC is exact)."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._running = 0
        self._exclusive = False

    @contextlib.contextmanager
    def shared(self) -> Iterator[None]:
        with self._cond:
            self._cond.wait_for(lambda: not self._exclusive)
            self._running += 1
        try:
            yield
        finally:
            with self._cond:
                self._running -= 1
                self._cond.notify_all()

    @contextlib.contextmanager
    def exclusive(self) -> Iterator[None]:
        with self._cond:
            self._cond.wait_for(lambda: not self._exclusive)
            self._exclusive = True
            self._cond.wait_for(lambda: self._running == 0)
        try:
            yield
        finally:
            with self._cond:
                self._exclusive = False
                self._cond.notify_all()


def soak(daemon: Daemon, calls: int, seed: int, workers: int = 4, shim: Path = SHIM) -> Report:
    """Run ``calls`` fuzzed calls through ``shim`` against ``daemon``; the checks land in the report."""
    report = Report()
    model = Model()
    lock = threading.Lock()  # guards model and report
    gate = GcGate()
    counter = iter(range(calls))
    log_file = str(daemon.dir / "shim.log")

    def worker(n: int) -> None:
        fuzzer = Fuzzer(random.Random(f"{seed}-{n}"), daemon.socket, log_file, n, containers=8)
        while True:
            with lock:
                if next(counter, None) is None:
                    return
            if fuzzer.rng.random() < 1 / 12:  # a GC: alone, so the model sees the attachments it keeps
                with gate.exclusive():
                    call = fuzzer.build(model, gc_keys=list(model.live))
                    out = run_shim(call, shim)
                    with lock:
                        label = check_output(call, out, report)
                        model.apply(call, out, daemon.socket, report)
            else:
                with gate.shared():
                    with lock:
                        call = fuzzer.build(model)
                    out = run_shim(call, shim)
                    with lock:
                        label = check_output(call, out, report)
                        model.apply(call, out, daemon.socket, report)
            with lock:
                report.calls += 1
                report.outcomes[(call.verb, label)] += 1
                report.mutations.update(m.split(":")[0] for m in call.mutations)
                if daemon.proc is not None and daemon.proc.poll() is not None:
                    report.daemon_alive = False

    started = time.perf_counter()
    threads = [threading.Thread(target=worker, args=(n,), daemon=True) for n in range(workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    report.seconds = time.perf_counter() - started
    final_check(daemon, model, report)
    return report


def final_check(daemon: Daemon, model: Model, report: Report) -> None:
    """The daemon is alive and holds exactly the model's attachments (after its DEL spool drains)."""
    if daemon.proc is None or daemon.proc.poll() is not None:
        report.daemon_alive = False
        report.violation(f"the daemon died: {daemon.log_path.read_text()[-3000:]}")
        return
    spool = Path(daemon.socket).parent / "del-spool"
    deadline = time.monotonic() + 15  # the daemon drains its spool every 5 s
    while list(spool.glob("*.json")) and time.monotonic() < deadline:
        time.sleep(0.2)
    if list(spool.glob("*.json")):
        report.spool_drained = False
        report.violation(f"the daemon's del-spool was not drained: {sorted(p.name for p in spool.iterdir())}")
    try:
        held = {
            (a["network"], a["container_id"], a["ifname"]): a["ip"] for a in daemon.get("/v1/assignments")
        }
        daemon.wait_ready(timeout=5)
    except (OSError, SystemExit) as exc:
        report.daemon_alive = False
        report.violation(f"the daemon stopped answering: {exc}")
        return
    report.live_expected, report.live_held = len(model.live), len(held)
    for key in sorted(set(held) | set(model.live)):
        if held.get(key) != model.live.get(key):
            report.violation(
                f"attachment {key}: daemon holds {held.get(key)}, live ADDs say {model.live.get(key)}"
            )
    ips = collections.Counter(held.values())
    for ip, n in ips.items():
        if n > 1:
            report.violation(f"{ip} is assigned to {n} attachments")


def print_report(report: Report, seed: int, workers: int, daemon: Daemon) -> None:
    print(f"soak_cni: seed {seed}, {workers} workers, shim {SHIM}")
    print(f"{daemon.describe()}, load {load_average()}")
    print(f"calls: {report.calls} in {report.seconds:.1f} s: {report.calls / report.seconds:.1f} calls/s")
    print("per verb and outcome (okay / CNI error code):")
    verbs = sorted({v for v, _ in report.outcomes})
    for verb in verbs:
        cells = ", ".join(f"{label} {n}" for (v, label), n in sorted(report.outcomes.items()) if v == verb)
        print(f"  {verb:<8} {sum(n for (v, _), n in report.outcomes.items() if v == verb):6d}: {cells}")
    print("mutated calls by kind: " + ", ".join(f"{k} {n}" for k, n in sorted(report.mutations.items())))
    print(f"stderr non-empty: {report.stderr_nonempty}")
    print(f"daemon alive: {report.daemon_alive}; del-spool drained: {report.spool_drained}")
    print(f"attachments: live ADDs {report.live_expected}, daemon holds {report.live_held}")
    print(f"violations: {len(report.violations)}")
    for text in report.violations[:20]:
        print("  " + text)
    # Not a violation of the checks above (the output is a valid CNI error), but worth a look.
    print(f"internal errors (CNI code 999), first of them: {len(report.internal)}")
    for text in report.internal[:5]:
        print("  " + text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--workers", type=int, default=4)
    args = parser.parse_args(argv)
    if not SHIM.exists():
        raise SystemExit(f"{SHIM} not found: install the project (./dev) first")
    with Daemon(**DAEMON_ENV) as daemon:
        daemon.wait_available(16)
        report = soak(daemon, args.calls, args.seed, args.workers)
        print_report(report, args.seed, args.workers, daemon)
    return 1 if report.violations else 0


if __name__ == "__main__":
    sys.exit(main())
