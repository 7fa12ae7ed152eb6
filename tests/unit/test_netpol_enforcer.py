"""The NetworkPolicy enforcer without a kernel or an API server: its failures and its CNI path.

A recording ``Nft`` stands in for the command (it can refuse the next transactions), and a reflector
factory hands back reflectors that never run: each test feeds the three watches through the callbacks
the enforcer gave them, then calls ``program()`` itself. The programmer thread is started but waits
``min_interval`` (60 s) after any change, so it never programs while a test looks.

Covered: nothing is programmed before every watch has listed, then a full replace; deltas and no-ops
afterwards; a failed transaction (counted, reported, its events kept, a full rebuild next); the
programmed resourceVersions; strict mode's pending pods (before and after the first program) and the
skeleton ``prepare`` makes; standard mode's ADD that never waits for nft; a pod's removal; a malformed
policy (reported, its pods isolated); ``PolicyDatapath`` undoing the wiring when the rules fail; the
per-pod introspection; and regressions found in review: a compile that raises keeps its events,
strict mode's early write cannot land on a table just programmed, ``stop`` runs no last
transaction, a cancelled ADD never leaves its pod registered.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, cast

import pytest

from ipamd.datapath.base import NO_DNS, NoDatapath, PodDns, PodWiring
from ipamd.k8s.reflector import Reflector
from ipamd.netpol.compile import BASE_RULES, PREROUTING_RULES
from ipamd.netpol.enforcer import Enforcer, PolicyDatapath
from ipamd.netpol.nft import Nft, NftError
from ipamd.pool.model import Assignment, AttachmentKey, ContainerID, IfName, InterfaceId, PodRef

if TYPE_CHECKING:
    from ipamd.k8s.api import KubeApi

NODE = "node-1"
T = "inet cloud-cni-netpol"
FULL_HEADER = f"add table {T}\ndelete table {T}\n"
API = cast("KubeApi", object())  # the fake reflectors never call it


class RecordingNft(Nft):
    def __init__(self) -> None:
        super().__init__(binary="/nonexistent/nft")
        self.scripts: list[str] = []
        self.exists = False
        self.failing = 0

    def fail_next(self, n: int) -> None:
        self.failing = n

    def run(self, text: str) -> None:
        if self.failing:
            self.failing -= 1
            raise NftError("nft -f exited 1: Error: Could not process rule: No such file or directory")
        self.scripts.append(text)

    def table_exists(self) -> bool:
        return self.exists

    def delete_table(self) -> bool:
        existed, self.exists = self.exists, False
        return existed


class QuietReflector(Reflector):
    """A real reflector (its name, its ``ReflectorState``) that never lists nor watches."""

    def start(self) -> None:
        return None

    def stop(self) -> None:
        return None

    def join(self, timeout: float) -> None:
        return None


@dataclass
class Watches:
    """The reflector factory: keeps each watch's callbacks to drive the enforcer with."""

    replace: dict[str, Callable[[list[dict[str, Any]]], None]] = field(default_factory=dict)
    apply: dict[str, Callable[[str, dict[str, Any]], None]] = field(default_factory=dict)
    on_listed: dict[str, Callable[[str], None]] = field(default_factory=dict)

    def __call__(self, api: KubeApi, name: str, path: str, **kw: Any) -> Reflector:
        self.replace[name], self.apply[name], self.on_listed[name] = (
            kw["replace"],
            kw["apply"],
            kw["on_listed"],
        )
        return QuietReflector(api, name, path, **kw)

    def listed(self, name: str, items: list[dict[str, Any]], version: str = "1") -> None:
        self.replace[name](items)
        self.on_listed[name](version)

    def list_all(self, *, pods: list[dict[str, Any]], policies: list[dict[str, Any]] | None = None) -> None:
        self.listed("networkpolicies", policies or [])
        self.listed("namespaces", [ns_obj("x")])
        self.listed("netpol-pods", pods)


@dataclass
class Rig:
    enforcer: Enforcer
    nft: RecordingNft
    watches: Watches


Make = Callable[[bool], Rig]  # rig(strict): an enforcer started on quiet watches


@pytest.fixture
def rig() -> Iterator[Make]:
    made: list[Enforcer] = []

    def make(strict: bool) -> Rig:
        nft, watches = RecordingNft(), Watches()
        enforcer = Enforcer(node_name=NODE, strict=strict, veth_name=veth, nft=nft, min_interval=60.0)
        enforcer.start(API, reflector_factory=watches)
        made.append(enforcer)
        return Rig(enforcer, nft, watches)

    yield make
    for enforcer in made:
        enforcer.stop()
        enforcer.join(5.0)


def veth(key: AttachmentKey) -> str:
    return "ccni" + key.container_id[:11]


def assignment(name: str, ip: str, cid: str) -> Assignment:
    key = AttachmentKey("aws-cni", ContainerID(cid), IfName("eth0"))
    return Assignment(key, ip, InterfaceId("eni-1"), PodRef("x", name, f"uid-{name}"), 0.0)


A = assignment("a", "10.0.0.5", "aaaaaaaaaaaaaaaa")
B = assignment("b", "10.0.0.6", "bbbbbbbbbbbbbbbb")
VA, VB = veth(A.key), veth(B.key)


def pod_obj(name: str, ip: str, labels: dict[str, str], rv: str = "1") -> dict[str, Any]:
    return {
        "metadata": {"namespace": "x", "name": name, "labels": labels, "resourceVersion": rv},
        "spec": {"nodeName": NODE},
        "status": {"phase": "Running", "podIP": ip},
    }


def ns_obj(name: str) -> dict[str, Any]:
    return {"metadata": {"name": name, "labels": {"kubernetes.io/metadata.name": name}}}


def policy_obj(name: str, spec: dict[str, Any], rv: str = "1") -> dict[str, Any]:
    return {"metadata": {"namespace": "x", "name": name, "resourceVersion": rv}, "spec": spec}


POD_A, POD_B = pod_obj("a", A.ip, {"app": "db"}), pod_obj("b", B.ip, {"app": "web"})
ALLOW_WEB = policy_obj(
    "allow-web",
    {
        "podSelector": {"matchLabels": {"app": "db"}},
        "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": "web"}}}]}],
    },
)


def test_nothing_is_programmed_before_every_watch_listed_then_the_table_is_replaced_whole(rig: Make) -> None:
    r = rig(False)
    r.enforcer.seed([A])
    assert r.enforcer.program() is False
    r.watches.listed("networkpolicies", [ALLOW_WEB])
    r.watches.listed("namespaces", [ns_obj("x")])
    assert r.enforcer.program() is False
    assert r.nft.scripts == []
    assert r.enforcer.public()["programmed"] is False
    r.watches.listed("netpol-pods", [POD_A, POD_B])
    assert r.enforcer.program() is True
    assert len(r.nft.scripts) == 1
    assert r.nft.scripts[0].startswith(FULL_HEADER)
    assert f"add chain {T} i-{VA}" in r.nft.scripts[0]
    assert r.enforcer.stats.full == 1


def test_after_the_first_program_a_change_is_a_delta_and_no_change_runs_nothing(rig: Make) -> None:
    r = rig(False)
    r.enforcer.seed([A])
    r.watches.list_all(pods=[POD_A, POD_B])
    assert r.enforcer.program() is True
    r.watches.apply["networkpolicies"]("ADDED", ALLOW_WEB)
    assert r.enforcer.program() is True
    delta = r.nft.scripts[-1]
    assert "delete table" not in delta
    assert f"add chain {T} i-{VA}" in delta
    assert f'add element {T} ingress {{ "{VA}" : jump i-{VA} }}' in delta
    assert r.enforcer.program() is False
    assert len(r.nft.scripts) == 2
    assert (r.enforcer.stats.transactions, r.enforcer.stats.full) == (2, 1)


def test_a_failed_transaction_is_counted_keeps_its_events_and_the_next_one_rebuilds_the_table(
    rig: Make,
) -> None:
    r = rig(False)
    r.enforcer.seed([A])
    r.watches.list_all(pods=[POD_A, POD_B])
    r.enforcer.program()
    r.watches.apply["networkpolicies"]("ADDED", policy_obj("allow-web", ALLOW_WEB["spec"], rv="7"))
    r.nft.fail_next(1)
    with pytest.raises(NftError):
        r.enforcer.program()
    assert r.enforcer.current is None
    view = r.enforcer.public()
    assert view["programmed"] is False
    assert r.enforcer.stats.failures == view["transactions"]["failures"] == 1
    assert "No such file or directory" in view["transactions"]["last_error"]
    assert view["programmed_resource_versions"]["networkpolicies"] < 7
    assert len(r.nft.scripts) == 1
    assert r.enforcer.program() is True
    assert r.nft.scripts[-1].startswith(FULL_HEADER)
    assert f"add chain {T} i-{VA}" in r.nft.scripts[-1]
    view = r.enforcer.public()
    assert view["programmed_resource_versions"]["networkpolicies"] == 7
    assert view["transactions"] == {
        "total": 2,
        "full_rebuilds": 2,
        "failures": 1,
        "last_error": None,
        "last_seconds": view["transactions"]["last_seconds"],
    }


def test_programmed_resource_versions_follow_the_lists_and_the_applied_events(rig: Make) -> None:
    r = rig(False)
    r.watches.listed("networkpolicies", [], version="100")
    r.watches.listed("namespaces", [ns_obj("x")], version="200")
    r.watches.listed("netpol-pods", [POD_A], version="300")
    r.enforcer.program()
    want = {"networkpolicies": 100, "namespaces": 200, "netpol-pods": 300}
    assert r.enforcer.public()["programmed_resource_versions"] == want
    r.watches.apply["netpol-pods"]("MODIFIED", pod_obj("a", A.ip, {"app": "db", "v": "2"}, rv="305"))
    r.watches.apply["networkpolicies"]("ADDED", policy_obj("p", {"podSelector": {}}, rv="310"))
    r.enforcer.program()
    want.update({"netpol-pods": 305, "networkpolicies": 310})
    assert r.enforcer.public()["programmed_resource_versions"] == want


def test_strict_pod_added_before_the_first_program_denies_it_in_the_existing_table(rig: Make) -> None:
    r = rig(True)
    r.enforcer.pod_added(A)
    assert r.nft.scripts == [
        f"add element {T} pending-ips {{ {A.ip} }}\n"
        f'add element {T} pending-veths {{ "{VA}" }}\n'
        f'add element {T} local-veths {{ "{VA}" }}\n'
        f'add element {T} local-sources {{ "{VA}" . {A.ip} }}\n'
    ]
    assert r.enforcer.current is None


def test_strict_pod_added_programs_it_pending_until_the_watch_sees_it(rig: Make) -> None:
    r = rig(True)
    r.watches.list_all(pods=[POD_A])
    r.enforcer.pod_added(B)  # not programmed yet: this ADD makes the full table, B pending in it
    assert len(r.nft.scripts) == 1
    assert r.nft.scripts[0].startswith(FULL_HEADER)
    assert f"add element {T} pending-ips {{ {B.ip} }}" in r.nft.scripts[0]
    current = r.enforcer.current
    assert current is not None
    assert current.pending_ips == {B.ip}
    assert current.pending_veths == {VB}
    assert r.enforcer.public()["pods"][0]["state"].startswith("pending")
    r.watches.apply["netpol-pods"]("ADDED", POD_B)
    assert r.enforcer.program() is True
    assert f"delete element {T} pending-ips {{ {B.ip} }}" in r.nft.scripts[-1]
    assert r.enforcer.current is not None
    assert r.enforcer.current.pending_ips == frozenset()
    assert r.enforcer.public()["pods"][0]["state"].startswith("open")


def test_standard_pod_added_never_runs_nft_and_the_next_program_includes_the_pod(rig: Make) -> None:
    r = rig(False)
    r.enforcer.pod_added(A)  # before the watches listed
    r.watches.list_all(pods=[POD_A, POD_B])
    r.enforcer.program()
    r.enforcer.pod_added(B)
    assert len(r.nft.scripts) == 1
    assert r.enforcer.program() is True
    assert f'add element {T} local-sources {{ "{VB}" . {B.ip} }}' in r.nft.scripts[-1]
    current = r.enforcer.current
    assert current is not None
    assert current.local_sources == {f'"{VA}" . {A.ip}', f'"{VB}" . {B.ip}'}
    assert current.pending_ips == frozenset()


def test_strict_prepare_creates_the_skeleton_only_when_there_is_no_table(rig: Make) -> None:
    r = rig(True)
    r.nft.exists = True
    r.enforcer.prepare()
    assert r.nft.scripts == []
    r.nft.exists = False
    r.enforcer.prepare()
    assert len(r.nft.scripts) == 1
    text = r.nft.scripts[0]
    assert "delete table" not in text  # an existing table is never replaced here
    assert f"add chain {T} postrouting" in text
    assert f"add set {T} pending-ips" in text
    for rule in BASE_RULES:
        assert f"add rule {T} postrouting {rule}\n" in text
    for rule in PREROUTING_RULES:
        assert f"add rule {T} prerouting {rule}\n" in text


def test_standard_prepare_never_runs_nft(rig: Make) -> None:
    r = rig(False)
    r.enforcer.prepare()
    assert r.nft.scripts == []


def test_pod_removed_drops_its_chain_and_map_entries_in_the_next_delta(rig: Make) -> None:
    r = rig(False)
    r.enforcer.seed([A, B])
    r.watches.list_all(pods=[POD_A, POD_B], policies=[ALLOW_WEB])
    r.enforcer.program()
    assert r.enforcer.current is not None
    assert f"i-{VA}" in r.enforcer.current.chains
    r.enforcer.pod_removed(A)
    assert r.enforcer.program() is True
    delta = r.nft.scripts[-1]
    assert f"delete chain {T} i-{VA}" in delta
    assert f'delete element {T} ingress {{ "{VA}" }}' in delta
    assert f'delete element {T} local-veths {{ "{VA}" }}' in delta
    assert f'delete element {T} local-sources {{ "{VA}" . {A.ip} }}' in delta
    # its map entry goes before its chain (a map must stop jumping to a chain before it is deleted)
    assert delta.index(f"delete element {T} ingress") < delta.index(f"delete chain {T} i-{VA}")
    assert r.enforcer.current is not None
    assert f"i-{VA}" not in r.enforcer.current.chains
    assert [p["pod"] for p in r.enforcer.public()["pods"]] == ["x/b"]


def test_a_malformed_policy_is_reported_and_isolates_the_pods_it_selects(rig: Make) -> None:
    r = rig(False)
    r.enforcer.seed([A, B])
    bad = policy_obj("bad", {"podSelector": {"matchLabels": {"app": "db"}}, "ingress": [{"from": [{}]}]})
    r.watches.list_all(pods=[POD_A, POD_B], policies=[bad])
    r.enforcer.program()
    view = r.enforcer.public()
    [broken] = view["broken_policies"]
    assert (broken["namespace"], broken["name"]) == ("x", "bad")
    assert "spec.ingress[0].from[0]" in broken["error"]
    assert view["malformed_objects"]["policies"] == 1
    assert r.enforcer.current is not None
    assert r.enforcer.current.chains[f"i-{VA}"] == ("counter drop",)
    assert f"i-{VB}" not in r.enforcer.current.chains
    states = {p["pod"]: p["state"] for p in view["pods"]}
    assert states["x/a"] == "isolated"
    assert states["x/b"].startswith("open")


class RecordingDatapath(NoDatapath):
    def __init__(self, enforcer: Enforcer) -> None:
        self.enforcer = enforcer
        self.calls: list[tuple[str, str, int]] = []  # (call, pod, local pods the enforcer knew then)

    async def add_pod(self, assignment: Assignment, *, dns: PodDns = NO_DNS) -> PodWiring:
        self.calls.append(("add", assignment.pod.name, len(self.enforcer.public()["pods"])))
        return PodWiring(host_ifname=veth(assignment.key))

    async def del_pod(self, assignment: Assignment) -> None:
        self.calls.append(("del", assignment.pod.name, len(self.enforcer.public()["pods"])))


def test_policy_datapath_add_undoes_the_wiring_when_the_rules_fail(rig: Make) -> None:
    r = rig(True)
    r.watches.list_all(pods=[POD_A])
    inner = RecordingDatapath(r.enforcer)
    datapath = PolicyDatapath(inner, r.enforcer)
    r.nft.fail_next(1)
    with pytest.raises(NftError):
        asyncio.run(datapath.add_pod(A))
    assert [c[:2] for c in inner.calls] == [("add", "a"), ("del", "a")]
    assert r.enforcer.public()["pods"] == []
    assert r.enforcer.stats.failures == 1
    assert r.nft.scripts == []


def test_policy_datapath_del_tears_down_first_then_forgets_the_pod(rig: Make) -> None:
    r = rig(True)
    r.watches.list_all(pods=[POD_A])
    inner = RecordingDatapath(r.enforcer)
    datapath = PolicyDatapath(inner, r.enforcer)
    wiring = asyncio.run(datapath.add_pod(A))
    assert wiring.host_ifname == VA
    assert r.nft.scripts[-1].startswith(FULL_HEADER)  # strict: ADD returned once the table was in
    assert [p["pod"] for p in r.enforcer.public()["pods"]] == ["x/a"]
    asyncio.run(datapath.del_pod(A))
    # the inner datapath tears down first (the enforcer still has the pod), then the enforcer forgets it
    assert inner.calls == [("add", "a", 0), ("del", "a", 1)]
    assert r.enforcer.public()["pods"] == []


def test_public_shows_an_isolated_pod_with_its_chain_and_sets_and_an_open_one(rig: Make) -> None:
    r = rig(False)
    r.enforcer.seed([A, B])
    r.watches.list_all(pods=[POD_A, POD_B], policies=[ALLOW_WEB])
    r.enforcer.program()
    view = r.enforcer.public()
    assert (view["mode"], view["table"], view["programmed"], view["policies"]) == ("standard", T, True, 1)
    assert set(view["watches"]) == {"networkpolicies", "namespaces", "netpol-pods"}
    assert view["watches"]["namespaces"]["synced"] is False  # the quiet reflectors' own state
    a, b = view["pods"]
    assert (a["pod"], a["ip"], a["veth"], a["state"]) == ("x/a", A.ip, VA, "isolated")
    ingress = a["ingress"]
    assert ingress["policies"] == ["allow-web"]
    assert ingress["chain"] == f"i-{VA}"
    assert ingress["rules"] == 2  # the peer set's accept, then counter drop
    [(peer_set, count)] = ingress["set_elements"].items()
    assert peer_set.startswith("p-")
    assert count == 1  # b, the one pod labelled app=web
    assert "egress" not in a
    assert (b["pod"], b["state"]) == ("x/b", "open (no policy selects it)")
    assert "ingress" not in b


# --- regressions (found by review) -----------------------------------------------------------------


def test_a_compile_that_fails_keeps_its_events_and_the_next_program_rebuilds(
    rig: Make, monkeypatch: pytest.MonkeyPatch
) -> None:
    r = rig(False)
    r.enforcer.seed([A])
    r.watches.list_all(pods=[POD_A, POD_B])
    assert r.enforcer.program() is True
    r.watches.apply["networkpolicies"]("ADDED", policy_obj("allow-web", ALLOW_WEB["spec"], rv="9"))
    real = r.enforcer.compiler.compile

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("a bug in the compiler")

    monkeypatch.setattr(r.enforcer.compiler, "compile", broken)
    with pytest.raises(RuntimeError):
        r.enforcer.program()
    assert r.enforcer.current is None and r.enforcer.stats.failures == 1
    assert r.enforcer.stats.programmed_rv.get("networkpolicies", -1) < 9
    monkeypatch.setattr(r.enforcer.compiler, "compile", real)
    assert r.enforcer.program() is True
    assert r.nft.scripts[-1].startswith(FULL_HEADER) and f"add chain {T} i-{VA}" in r.nft.scripts[-1]
    assert r.enforcer.stats.programmed_rv["networkpolicies"] == 9


def test_strict_early_pod_added_cannot_land_on_a_table_just_programmed(rig: Make) -> None:
    """The check "not programmed yet" and the direct write happen under the programmer's lock: when
    the last list arrives and a full program runs meanwhile, pod_added then programs the pod the
    diffed way (a direct write on top of the new table would never be undone by a delta)."""
    r = rig(True)
    with r.enforcer._program_lock:
        t = threading.Thread(target=r.enforcer.pod_added, args=(B,))
        t.start()
        t.join(0.2)
        assert t.is_alive()  # waiting for the lock, not writing on its own
        r.watches.list_all(pods=[POD_A])
        r.enforcer.program()
    t.join(5)
    assert r.nft.scripts[0].startswith(FULL_HEADER)  # the full program came first, no direct write
    assert r.enforcer.current is not None and B.ip in r.enforcer.current.pending_ips


def test_stop_does_not_run_one_more_transaction(rig: Make) -> None:
    r = rig(False)
    enforcer = Enforcer(node_name=NODE, strict=False, veth_name=veth, nft=r.nft, min_interval=0.3)
    watches = Watches()
    enforcer.start(API, reflector_factory=watches)
    watches.list_all(pods=[POD_A])
    time.sleep(0.1)  # the programmer is now gathering (min_interval 0.3 s)
    enforcer.stop()
    enforcer.join(5.0)
    assert r.nft.scripts == []


def test_a_cancelled_add_never_leaves_the_pod_registered(rig: Make) -> None:
    r = rig(True)
    r.watches.list_all(pods=[POD_A])
    r.enforcer.program()
    release = threading.Event()
    real = r.enforcer.pod_added

    def slow(a: Assignment) -> None:
        release.wait(5)
        real(a)

    r.enforcer.pod_added = slow  # type: ignore[method-assign]
    inner = RecordingDatapath(r.enforcer)
    dp = PolicyDatapath(inner, r.enforcer)

    async def cancel_mid_add() -> None:
        task = asyncio.ensure_future(dp.add_pod(A))
        await asyncio.sleep(0.05)
        task.cancel()
        asyncio.get_running_loop().call_later(0.1, release.set)
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(cancel_mid_add())
    # the wiring is undone only after the late thread registered the pod, which is then removed
    assert inner.calls == [("add", "a", 0), ("del", "a", 1)]
    assert r.enforcer.public()["pods"] == []
