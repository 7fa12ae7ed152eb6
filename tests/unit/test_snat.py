"""The SNAT module without a kernel: exact renderings, validation, backend choice, and the commands
``Snat`` runs (a fake runner stands in for nft / iptables; tests/integration/test_snat_netns.py runs
the real ones)."""

from __future__ import annotations

import re
import subprocess
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest

from ipamd.datapath.linux.snat import (
    MARK,
    Snat,
    SnatConfig,
    SnatConfigError,
    SnatError,
    choose_backend,
    no_snat_networks,
    render_iptables,
    render_nft,
)


def _tabs(text: str) -> str:
    """Dedent, then each leading group of four spaces becomes a tab (nft lists with tabs)."""
    lines = textwrap.dedent(text).lstrip("\n").splitlines(keepends=True)
    return "".join(re.sub(r"^(?: {4})+", lambda m: "\t" * (len(m.group()) // 4), line) for line in lines)


DELETE = "table ip cloud-cni\ndelete table ip cloud-cni\n"

NFT_ONE_CIDR = _tabs("""
    table ip cloud-cni {
        set no_snat {
            type ipv4_addr
            flags interval
            elements = { 10.0.0.0/16 }
        }

        chain prerouting {
            type filter hook prerouting priority dstnat + 10; policy accept;
            iifname "ccni*" ct state new ip daddr != @no_snat ct mark set ct mark | 0x00000080
            ct mark & 0x00000080 == 0x00000080 meta mark set meta mark | 0x00000080
        }

        chain postrouting {
            type nat hook postrouting priority srcnat; policy accept;
            ct mark & 0x00000080 == 0x00000080 ip daddr != @no_snat snat to 10.0.0.10 fully-random
        }
    }
""")

NFT_EMPTY_ENI_NOT_RANDOM = _tabs("""
    table ip cloud-cni {
        set no_snat {
            type ipv4_addr
            flags interval
        }

        chain prerouting {
            type filter hook prerouting priority dstnat + 10; policy accept;
            iifname "eni*" ct state new ip daddr != @no_snat ct mark set ct mark | 0x00000080
            ct mark & 0x00000080 == 0x00000080 meta mark set meta mark | 0x00000080
        }

        chain postrouting {
            type nat hook postrouting priority srcnat; policy accept;
            ct mark & 0x00000080 == 0x00000080 ip daddr != @no_snat snat to 10.0.0.10
        }
    }
""")

NFT_SEVERAL = _tabs("""
    table ip cloud-cni {
        set no_snat {
            type ipv4_addr
            flags interval
            elements = { 10.0.0.0/16, 10.9.9.9, 100.64.0.0/10, 192.0.2.0/24 }
        }

        chain prerouting {
            type filter hook prerouting priority dstnat + 10; policy accept;
            iifname "ccni*" ct state new ip daddr != @no_snat ct mark set ct mark | 0x00000080
            ct mark & 0x00000080 == 0x00000080 meta mark set meta mark | 0x00000080
        }

        chain postrouting {
            type nat hook postrouting priority srcnat; policy accept;
            ct mark & 0x00000080 == 0x00000080 ip daddr != @no_snat snat to 10.1.2.3 fully-random
        }
    }
""")

SEVERAL = ("192.0.2.0/24", "10.0.0.0/16", "10.0.3.0/24", "10.9.9.9/32", "10.0.0.0/16", "100.64.0.0/10")


@pytest.mark.parametrize(
    ("cfg", "expected"),
    [
        (SnatConfig("10.0.0.10", ("10.0.0.0/16",)), DELETE + NFT_ONE_CIDR),
        (
            SnatConfig("10.0.0.10", (), veth_prefix="eni", random_fully=False),
            DELETE + NFT_EMPTY_ENI_NOT_RANDOM,
        ),
        (SnatConfig("10.1.2.3", SEVERAL), DELETE + NFT_SEVERAL),
        (SnatConfig("10.0.0.10", ("10.0.0.0/16",), external_snat=True), DELETE),
    ],
    ids=["one-cidr", "no-exclusions-eni-not-random", "several-collapsed", "external-snat-deletes"],
)
def test_render_nft(cfg: SnatConfig, expected: str) -> None:
    assert render_nft(cfg) == expected


IPT_NAT_ONE_CIDR = """\
*nat
:CLOUD-CNI-CONNMARK - [0:0]
:CLOUD-CNI-SNAT - [0:0]
-A PREROUTING -j CLOUD-CNI-CONNMARK
-A POSTROUTING -j CLOUD-CNI-SNAT
-A CLOUD-CNI-CONNMARK ! -i ccni+ -j RETURN
-A CLOUD-CNI-CONNMARK -d 10.0.0.0/16 -j RETURN
-A CLOUD-CNI-CONNMARK -j CONNMARK --set-xmark 0x80/0x80
-A CLOUD-CNI-CONNMARK -j MARK --set-xmark 0x80/0x80
-A CLOUD-CNI-SNAT -m connmark ! --mark 0x80/0x80 -j RETURN
-A CLOUD-CNI-SNAT -d 10.0.0.0/16 -j RETURN
-A CLOUD-CNI-SNAT -j SNAT --to-source 10.0.0.10 --random-fully
COMMIT
"""

IPT_NAT_EMPTY_ENI_NOT_RANDOM = """\
*nat
:CLOUD-CNI-CONNMARK - [0:0]
:CLOUD-CNI-SNAT - [0:0]
-A PREROUTING -j CLOUD-CNI-CONNMARK
-A POSTROUTING -j CLOUD-CNI-SNAT
-A CLOUD-CNI-CONNMARK ! -i eni+ -j RETURN
-A CLOUD-CNI-CONNMARK -j CONNMARK --set-xmark 0x80/0x80
-A CLOUD-CNI-CONNMARK -j MARK --set-xmark 0x80/0x80
-A CLOUD-CNI-SNAT -m connmark ! --mark 0x80/0x80 -j RETURN
-A CLOUD-CNI-SNAT -j SNAT --to-source 10.0.0.10
COMMIT
"""

IPT_NAT_SEVERAL = """\
*nat
:CLOUD-CNI-CONNMARK - [0:0]
:CLOUD-CNI-SNAT - [0:0]
-A PREROUTING -j CLOUD-CNI-CONNMARK
-A POSTROUTING -j CLOUD-CNI-SNAT
-A CLOUD-CNI-CONNMARK ! -i ccni+ -j RETURN
-A CLOUD-CNI-CONNMARK -d 10.0.0.0/16 -j RETURN
-A CLOUD-CNI-CONNMARK -d 10.9.9.9/32 -j RETURN
-A CLOUD-CNI-CONNMARK -d 100.64.0.0/10 -j RETURN
-A CLOUD-CNI-CONNMARK -d 192.0.2.0/24 -j RETURN
-A CLOUD-CNI-CONNMARK -j CONNMARK --set-xmark 0x80/0x80
-A CLOUD-CNI-CONNMARK -j MARK --set-xmark 0x80/0x80
-A CLOUD-CNI-SNAT -m connmark ! --mark 0x80/0x80 -j RETURN
-A CLOUD-CNI-SNAT -d 10.0.0.0/16 -j RETURN
-A CLOUD-CNI-SNAT -d 10.9.9.9/32 -j RETURN
-A CLOUD-CNI-SNAT -d 100.64.0.0/10 -j RETURN
-A CLOUD-CNI-SNAT -d 192.0.2.0/24 -j RETURN
-A CLOUD-CNI-SNAT -j SNAT --to-source 10.1.2.3 --random-fully
COMMIT
"""

IPT_MANGLE = """\
*mangle
:CLOUD-CNI-RESTORE - [0:0]
-A PREROUTING -j CLOUD-CNI-RESTORE
-A CLOUD-CNI-RESTORE -m connmark --mark 0x80/0x80 -j MARK --set-xmark 0x80/0x80
COMMIT
"""


IPT_MANGLE_NODE_PORT = """\
*mangle
:CLOUD-CNI-RESTORE - [0:0]
-A PREROUTING -j CLOUD-CNI-RESTORE
-A CLOUD-CNI-RESTORE -i ens5 -m addrtype --dst-type LOCAL --limit-iface-in -j CONNMARK --set-xmark 0x80/0x80
-A CLOUD-CNI-RESTORE -m connmark --mark 0x80/0x80 -j MARK --set-xmark 0x80/0x80
COMMIT
"""

NFT_NODE_PORT_ONLY = """\
table ip cloud-cni
delete table ip cloud-cni
table ip cloud-cni {
\tset no_snat {
\t\ttype ipv4_addr
\t\tflags interval
\t\telements = { 10.0.0.0/16 }
\t}

\tchain nodeport {
\t\ttype filter hook prerouting priority mangle; policy accept;
\t\tiifname "ens5" fib daddr . iif type local ct mark set ct mark | 0x00000080
\t}

\tchain prerouting {
\t\ttype filter hook prerouting priority dstnat + 10; policy accept;
\t\tct mark & 0x00000080 == 0x00000080 meta mark set meta mark | 0x00000080
\t}
}
"""


def test_render_nft_node_port() -> None:
    """The NodePort chain sits before the others; with EXTERNAL_SNAT it is all, with the mark copy."""
    both = render_nft(SnatConfig("10.0.0.10", ("10.0.0.0/16",), node_port_if="ens5"))
    plain = render_nft(SnatConfig("10.0.0.10", ("10.0.0.0/16",)))
    chain = NFT_NODE_PORT_ONLY[
        NFT_NODE_PORT_ONLY.index("\tchain nodeport") : NFT_NODE_PORT_ONLY.index("\tchain prerouting")
    ]
    assert both == plain.replace("\tchain prerouting", chain + "\tchain prerouting", 1)
    only = SnatConfig("10.0.0.10", ("10.0.0.0/16",), external_snat=True, node_port_if="ens5")
    assert only.installs and render_nft(only) == NFT_NODE_PORT_ONLY
    assert not SnatConfig("10.0.0.10", (), external_snat=True).installs


@pytest.mark.parametrize(
    ("cfg", "expected"),
    [
        (SnatConfig("10.0.0.10", ("10.0.0.0/16",)), (IPT_NAT_ONE_CIDR, IPT_MANGLE)),
        (
            SnatConfig("10.0.0.10", (), veth_prefix="eni", random_fully=False),
            (IPT_NAT_EMPTY_ENI_NOT_RANDOM, IPT_MANGLE),
        ),
        (SnatConfig("10.1.2.3", SEVERAL), (IPT_NAT_SEVERAL, IPT_MANGLE)),
        (SnatConfig("10.0.0.10", ("10.0.0.0/16",), external_snat=True), ("", "")),
        (
            SnatConfig("10.0.0.10", ("10.0.0.0/16",), node_port_if="ens5"),
            (IPT_NAT_ONE_CIDR, IPT_MANGLE_NODE_PORT),
        ),
        (
            SnatConfig("10.0.0.10", ("10.0.0.0/16",), external_snat=True, node_port_if="ens5"),
            ("", IPT_MANGLE_NODE_PORT),
        ),
    ],
    ids=[
        "one-cidr",
        "no-exclusions-eni-not-random",
        "several-collapsed",
        "external-snat-nothing",
        "node-port",
        "external-snat-node-port-only",
    ],
)
def test_render_iptables(cfg: SnatConfig, expected: tuple[str, str]) -> None:
    assert render_iptables(cfg) == expected


def test_no_snat_networks_collapse_in_one_order() -> None:
    a = SnatConfig("10.0.0.10", ("10.0.1.0/24", "10.0.0.0/24", "10.0.0.0/24"))
    assert [str(n) for n in no_snat_networks(a)] == ["10.0.0.0/23"]
    assert render_nft(a) == render_nft(SnatConfig("10.0.0.10", ("10.0.0.0/23",)))
    assert MARK == 0x80


@pytest.mark.parametrize(
    ("kwargs", "field_name"),
    [
        ({"primary_ip": "10.0.0.300"}, "primary_ip"),
        ({"primary_ip": "fd00::1"}, "primary_ip"),
        ({"primary_ip": "0.0.0.0"}, "primary_ip"),
        ({"primary_ip": "224.0.0.1"}, "primary_ip"),
        ({"primary_ip": "127.0.0.1"}, "primary_ip"),
        ({"primary_ip": "255.255.255.255"}, "primary_ip"),
        ({"primary_ip": 167772170}, "primary_ip"),
        ({"no_snat_cidrs": "10.0.0.0/16"}, "no_snat_cidrs"),
        ({"no_snat_cidrs": ("10.0.0.0/16", "10.0.0.1/16")}, "no_snat_cidrs[1]"),
        ({"no_snat_cidrs": ("fd00::/8",)}, "no_snat_cidrs[0]"),
        ({"no_snat_cidrs": ("10.0.0.0/33",)}, "no_snat_cidrs[0]"),
        ({"no_snat_cidrs": (None,)}, "no_snat_cidrs[0]"),
        ({"veth_prefix": ""}, "veth_prefix"),
        ({"veth_prefix": "ccni0"}, "veth_prefix"),
        ({"veth_prefix": 'a"; '}, "veth_prefix"),
        ({"veth_prefix": "c*"}, "veth_prefix"),
        ({"external_snat": "false"}, "external_snat"),
        ({"random_fully": 1}, "random_fully"),
        ({"node_port_if": "eth0; drop"}, "node_port_if"),
        ({"node_port_if": 'eth0"'}, "node_port_if"),
        ({"node_port_if": "a" * 16}, "node_port_if"),
        ({"node_port_if": None}, "node_port_if"),
    ],
    ids=lambda v: v if isinstance(v, str) else repr(v)[:40],
)
def test_config_validation_names_the_field(kwargs: dict[str, Any], field_name: str) -> None:
    args: dict[str, Any] = {"primary_ip": "10.0.0.10", "no_snat_cidrs": ("10.0.0.0/16",), **kwargs}
    with pytest.raises(SnatConfigError) as info:
        SnatConfig(**args)
    assert info.value.field == field_name
    assert str(info.value).startswith(field_name + ": ")
    assert isinstance(info.value, ValueError) and isinstance(info.value, SnatError)


def test_config_accepts_a_list_and_keeps_a_tuple() -> None:
    cfg = SnatConfig("10.0.0.10", ["10.0.0.0/16", "192.0.2.7"])  # type: ignore[arg-type]
    assert cfg.no_snat_cidrs == ("10.0.0.0/16", "192.0.2.7")
    assert hash(cfg) == hash(SnatConfig("10.0.0.10", ("10.0.0.0/16", "192.0.2.7")))


# -- a fake nft / iptables ------------------------------------------------------------------------


@dataclass
class FakeRunner:
    """Answers commands from a table: argv (without the netns prefix) -> (exit status, stdout,
    stderr) or an exception to raise. Unknown commands exit 127 (as ``ip netns exec`` does for a
    missing binary), so probes of the backends a test does not set up find nothing. Records calls."""

    answers: dict[tuple[str, ...], tuple[int, str, str] | BaseException] = field(default_factory=dict)
    calls: list[tuple[list[str], str | None]] = field(default_factory=list)
    netns: str | None = None

    def __call__(self, cmd: Sequence[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
        assert kwargs["capture_output"] and kwargs["text"] and kwargs["timeout"] > 0 and not kwargs["check"]
        cmd = list(cmd)
        self.calls.append((cmd, kwargs.get("input")))
        if self.netns:
            assert cmd[:4] == ["ip", "netns", "exec", self.netns]
            cmd = cmd[4:]
        answer = self.answers.get(tuple(cmd), (127, "", f"{cmd[0]}: not found"))
        if isinstance(answer, BaseException):
            raise answer
        rc, out, err = answer
        return subprocess.CompletedProcess(cmd, rc, out, err)

    def argvs(self) -> list[list[str]]:
        return [c[4:] if self.netns else c for c, _ in self.calls]

    def stdin_of(self, program: str) -> list[str | None]:
        return [i for c, i in self.calls if program in c]


LEGACY_WITH_KUBE_PROXY = "*nat\n:POSTROUTING ACCEPT [0:0]\n-A POSTROUTING -j KUBE-POSTROUTING\nCOMMIT\n"
LEGACY_FILTER_ONLY = (
    "*filter\n:INPUT ACCEPT [0:0]\n-A INPUT -j ACCEPT\nCOMMIT\n*nat\n:POSTROUTING ACCEPT [0:0]\nCOMMIT\n"
)
OK = (0, "", "")
LEGACY_SAVE = ("iptables-legacy-save",)
NFT_SAVE = ("iptables-nft-save",)
NFT_TABLES = ("nft", "list", "tables")


@pytest.mark.parametrize(
    ("requested", "answers", "expected"),
    [
        ("auto", {NFT_TABLES: OK}, "nftables"),
        ("auto", {LEGACY_SAVE: (0, LEGACY_FILTER_ONLY, ""), NFT_TABLES: OK}, "nftables"),
        ("auto", {LEGACY_SAVE: (0, LEGACY_WITH_KUBE_PROXY, ""), NFT_TABLES: OK}, "iptables-legacy"),
        ("auto", {NFT_TABLES: (1, "", "Operation not supported")}, "iptables-legacy"),
        ("iptables", {NFT_SAVE: OK}, "iptables-nft"),
        ("iptables", {LEGACY_SAVE: (0, LEGACY_WITH_KUBE_PROXY, ""), NFT_SAVE: OK}, "iptables-legacy"),
        ("iptables", {}, "iptables-legacy"),
        ("nftables", {}, "nftables"),
        ("iptables-nft", {}, "iptables-nft"),
        ("iptables-legacy", {}, "iptables-legacy"),
    ],
    ids=[
        "auto-nft",
        "auto-legacy-without-nat-rules",
        "auto-legacy-kube-proxy",
        "auto-no-nf_tables",
        "iptables-nft",
        "iptables-follows-legacy",
        "iptables-nothing-works",
        "nftables-asked",
        "iptables-nft-asked",
        "iptables-legacy-asked",
    ],
)
def test_choose_backend(requested: str, answers: dict[tuple[str, ...], Any], expected: str) -> None:
    runner = FakeRunner(answers)
    assert choose_backend(requested, run=runner) == expected
    if requested in ("nftables", "iptables-nft", "iptables-legacy"):
        assert runner.calls == []  # asked by name: nothing is probed


def test_choose_backend_rejects_an_unknown_name() -> None:
    with pytest.raises(SnatConfigError) as info:
        choose_backend("ipfw", run=FakeRunner())
    assert info.value.field == "backend"


CFG = SnatConfig("10.0.0.10", ("10.0.0.0/16",))


def test_nftables_apply_sends_one_script_and_clears_other_backends() -> None:
    ours_in_legacy = "*mangle\n:CLOUD-CNI-RESTORE - [0:0]\n-A PREROUTING -j CLOUD-CNI-RESTORE\nCOMMIT\n"
    runner = FakeRunner(
        {
            ("nft", "list", "tables"): OK,
            ("nft", "-f", "-"): OK,
            ("iptables-legacy-save",): (0, ours_in_legacy, ""),
            ("iptables-legacy-restore", "--noflush", "--wait=10"): OK,
        },
        netns="cc-x",
    )
    snat = Snat("auto", netns="cc-x", run=runner)
    assert (snat.backend, snat.variant) == ("nftables", "nftables")
    snat.apply(CFG)
    snat.apply(CFG)  # other backends are cleared once, on the first apply
    assert runner.stdin_of("nft") == [None, render_nft(CFG), render_nft(CFG)]  # a probe, 2 applies
    assert runner.stdin_of("iptables-legacy-restore") == [
        "*mangle\n:CLOUD-CNI-RESTORE - [0:0]\n-D PREROUTING -j CLOUD-CNI-RESTORE\n"
        "-X CLOUD-CNI-RESTORE\nCOMMIT\n"
    ]
    # iptables-nft-save "is not found" here: a probe of a backend we did not choose is not an error
    assert ["iptables-nft-save"] in runner.argvs()


def _iptables(save: str) -> tuple[Snat, FakeRunner]:
    runner = FakeRunner(
        {("iptables-nft-save",): (0, save, ""), ("iptables-nft-restore", "--noflush", "--wait=10"): OK}
    )
    return Snat("iptables-nft", run=runner), runner


def test_iptables_apply_adds_missing_jumps_once() -> None:
    snat, runner = _iptables("*nat\n:PREROUTING ACCEPT [0:0]\n-A PREROUTING -j KUBE-SERVICES\nCOMMIT\n")
    snat.apply(CFG)
    [text] = runner.stdin_of("iptables-nft-restore")
    assert text == (
        "*nat\n"
        ":CLOUD-CNI-CONNMARK - [0:0]\n"
        ":CLOUD-CNI-SNAT - [0:0]\n"
        "-A CLOUD-CNI-CONNMARK ! -i ccni+ -j RETURN\n"
        "-A CLOUD-CNI-CONNMARK -d 10.0.0.0/16 -j RETURN\n"
        "-A CLOUD-CNI-CONNMARK -j CONNMARK --set-xmark 0x80/0x80\n"
        "-A CLOUD-CNI-CONNMARK -j MARK --set-xmark 0x80/0x80\n"
        "-A CLOUD-CNI-SNAT -m connmark ! --mark 0x80/0x80 -j RETURN\n"
        "-A CLOUD-CNI-SNAT -d 10.0.0.0/16 -j RETURN\n"
        "-A CLOUD-CNI-SNAT -j SNAT --to-source 10.0.0.10 --random-fully\n"
        "-A PREROUTING -j CLOUD-CNI-CONNMARK\n"  # after kube-proxy's KUBE-SERVICES (DNAT first)
        "-I POSTROUTING 1 -j CLOUD-CNI-SNAT\n"
        "COMMIT\n"
        "*mangle\n"
        ":CLOUD-CNI-RESTORE - [0:0]\n"
        "-A CLOUD-CNI-RESTORE -m connmark --mark 0x80/0x80 -j MARK --set-xmark 0x80/0x80\n"
        "-I PREROUTING 1 -j CLOUD-CNI-RESTORE\n"
        "COMMIT\n"
    )


def test_iptables_apply_keeps_one_jump_and_drops_stale_chains() -> None:
    nat, mangle = render_iptables(CFG)
    save = nat.replace(
        "-A POSTROUTING -j CLOUD-CNI-SNAT\n",
        "-A POSTROUTING -j CLOUD-CNI-SNAT\n-A POSTROUTING -d 203.0.113.0/24 -j RETURN\n"
        "-A POSTROUTING -j CLOUD-CNI-SNAT\n-A PREROUTING -i eth9 -j CLOUD-CNI-OLD\n",
    ).replace(":CLOUD-CNI-SNAT - [0:0]\n", ":CLOUD-CNI-SNAT - [0:0]\n:CLOUD-CNI-OLD - [0:0]\n")
    snat, runner = _iptables(save + mangle)
    assert not snat.matches(CFG)
    snat.apply(CFG)
    [text] = runner.stdin_of("iptables-nft-restore")
    assert text is not None
    nat_part = text.split("*mangle")[0]
    assert "-D POSTROUTING -j CLOUD-CNI-SNAT\n" in nat_part and nat_part.count("-D ") == 2
    assert "-D PREROUTING -i eth9 -j CLOUD-CNI-OLD\n-X CLOUD-CNI-OLD\n" in nat_part
    assert "-I " not in text and "-A PREROUTING" not in text and "-A POSTROUTING" not in text
    assert "203.0.113.0/24" not in text  # someone else's rule is never named


def test_iptables_matches_compares_our_part_only() -> None:
    nat, mangle = render_iptables(CFG)
    others = "*filter\n:INPUT ACCEPT [0:0]\n-A INPUT -j ACCEPT\nCOMMIT\n"
    snat, _ = _iptables(others + nat.replace("COMMIT", "-A POSTROUTING -j MASQUERADE\nCOMMIT") + mangle)
    assert snat.matches(CFG)
    assert not snat.matches(SnatConfig("10.0.0.10", ("10.0.0.0/16",), external_snat=True))
    assert not snat.matches(SnatConfig("10.0.0.11", ("10.0.0.0/16",)))
    snat, _ = _iptables(others)
    assert snat.matches(SnatConfig("10.0.0.10", (), external_snat=True))
    assert not snat.matches(CFG)


def test_iptables_remove_deletes_ours_and_nothing_when_clean() -> None:
    nat, mangle = render_iptables(CFG)
    snat, runner = _iptables(nat + mangle)
    snat.remove()
    [text] = runner.stdin_of("iptables-nft-restore")
    assert text == (
        "*nat\n:CLOUD-CNI-CONNMARK - [0:0]\n:CLOUD-CNI-SNAT - [0:0]\n"
        "-D PREROUTING -j CLOUD-CNI-CONNMARK\n-D POSTROUTING -j CLOUD-CNI-SNAT\n"
        "-X CLOUD-CNI-CONNMARK\n-X CLOUD-CNI-SNAT\nCOMMIT\n"
        "*mangle\n:CLOUD-CNI-RESTORE - [0:0]\n-D PREROUTING -j CLOUD-CNI-RESTORE\n"
        "-X CLOUD-CNI-RESTORE\nCOMMIT\n"
    )
    snat, runner = _iptables("*nat\n:POSTROUTING ACCEPT [0:0]\nCOMMIT\n")
    snat.remove()
    assert runner.stdin_of("iptables-nft-restore") == []


def test_external_snat_apply_removes() -> None:
    runner = FakeRunner(
        {
            ("nft", "list", "tables", "ip"): (0, "table ip cloud-cni\ntable ip nat\n", ""),
            ("nft", "-f", "-"): OK,
        }
    )
    snat = Snat("nftables", run=runner)
    snat.apply(SnatConfig("10.0.0.10", (), external_snat=True))
    assert runner.stdin_of("nft") == [None, render_nft(SnatConfig("10.0.0.10", (), external_snat=True))]


NFT_LIST = ("nft", "list", "table", "ip", "cloud-cni")
WRAPPED = NFT_SEVERAL.replace(", 100.64", ",\n\t\t\t     100.64")  # nft wraps long element lists
EXTRA_RULE = NFT_ONE_CIDR.replace("\t}\n\n\tchain postrouting", "\t\tcounter\n\t}\n\n\tchain postrouting")


@pytest.mark.parametrize(
    ("cfg", "listing", "expected"),
    [
        (CFG, (0, NFT_ONE_CIDR, ""), True),
        (SnatConfig("10.1.2.3", SEVERAL), (0, WRAPPED, ""), True),
        (CFG, (0, NFT_ONE_CIDR.replace(" fully-random", ""), ""), False),
        (CFG, (0, EXTRA_RULE, ""), False),
        (CFG, (0, NFT_ONE_CIDR.replace("10.0.0.0/16", "10.0.0.0/8"), ""), False),
        (CFG, (1, "", "Error: No such file or directory\nlist table ip cloud-cni\n"), False),
    ],
    ids=["same", "same-wrapped", "not-random", "extra-rule", "other-set", "absent"],
)
def test_nft_matches(cfg: SnatConfig, listing: tuple[int, str, str], expected: bool) -> None:
    assert Snat("nftables", run=FakeRunner({NFT_LIST: listing})).matches(cfg) is expected


def test_nft_matches_external_snat_means_absent() -> None:
    absent = FakeRunner({NFT_LIST: (1, "", "Error: No such file or directory")})
    assert Snat("nftables", run=absent).matches(SnatConfig("10.0.0.10", (), external_snat=True))
    present = FakeRunner({NFT_LIST: (0, NFT_ONE_CIDR, "")})
    assert not Snat("nftables", run=present).matches(SnatConfig("10.0.0.10", (), external_snat=True))


@pytest.mark.parametrize(
    ("answer", "message"),
    [
        (
            (1, "", "Error: Operation not permitted\n"),
            "nft -f -: exit status 1: Error: Operation not permitted",
        ),
        ((1, "", ""), "nft -f -: exit status 1: no message"),
        ((1, "", "x" * 1000), "nft -f -: exit status 1: " + "x" * 400 + "..."),
        (subprocess.TimeoutExpired(["nft"], 15), "nft -f -: no answer in 15 s"),
        (FileNotFoundError(2, "No such file or directory"), "nft: cannot run: No such file or directory"),
    ],
    ids=["stderr", "silent", "capped", "timeout", "missing"],
)
def test_command_errors(answer: tuple[int, str, str] | BaseException, message: str) -> None:
    snat = Snat("nftables", run=FakeRunner({("nft", "-f", "-"): answer}))
    with pytest.raises(SnatError) as info:
        snat.apply(CFG)
    assert str(info.value) == message


def test_listing_error_other_than_absent_is_raised() -> None:
    runner = FakeRunner({NFT_LIST: (1, "", "Error: Operation not permitted")})
    with pytest.raises(SnatError, match="Operation not permitted"):
        Snat("nftables", run=runner).matches(CFG)
