"""SNAT of pod traffic leaving the VPC/VNet to the node's primary IP, with nftables or iptables.

Why: a pod's address is a real VPC address, but only the VPC routes it. Traffic to anything outside
the VPC (an internet gateway, a peered network not listed, an on-premises range) must leave with the
node's primary IP, as aws-vpc-cni does, unless ``EXTERNAL_SNAT`` says a NAT gateway does it (then
nothing of ours is installed). A pod whose address belongs to a secondary interface would otherwise
egress by that interface (rule ``from <pod ip> lookup <table>``); SNATed traffic has to leave by the
primary interface instead, so the connection is marked and the datapath's policy rule
``fwmark 0x80/0x80 lookup main priority 1024`` sends marked packets through the main table.

What is installed (nftables; the iptables rendering does the same but for DNATed connections, below)::

    table ip cloud-cni
      set no_snat            VPC CIDRs + EXCLUDE_SNAT_CIDRS (an interval set; may be empty)
      chain nodeport         filter, hook prerouting, priority mangle       (NODE_PORT_SUPPORT only)
        iifname "<primary>" fib daddr . iif type local           ct mark |= 0x80
      chain prerouting       filter, hook prerouting, priority dstnat + 10
        iifname "<prefix>*" ct state new ip daddr != @no_snat  ct mark |= 0x80   (not EXTERNAL_SNAT)
        ct mark & 0x80 == 0x80                                  meta mark |= 0x80   (every packet)
      chain postrouting      nat, hook postrouting, priority srcnat            (not EXTERNAL_SNAT)
        ct mark & 0x80 == 0x80 ip daddr != @no_snat             snat to <primary ip> fully-random

NodePorts (``NODE_PORT_SUPPORT``, aws-vpc-cni's ``AWS_VPC_CNI_NODE_PORT_SUPPORT``): a connection that
arrives by the primary interface for one of the node's own addresses (a NodePort, a hostPort) is
marked before kube-proxy's DNAT, as aws-vpc-cni marks it (``-m addrtype --dst-type LOCAL
--limit-iface-in``). The pod's replies carry the mark, so rule 1024 routes them through the main
table and out of the primary interface, where kube-proxy's reverse NAT gives them the node's address.
Without it, a pod on a secondary interface answers a connection kube-proxy did not masquerade
(``externalTrafficPolicy: Local``) by its own interface with the node's primary address as the
source, which the VPC's source/destination check drops. It is installed with ``EXTERNAL_SNAT`` too.

The marking chain runs *after* destination NAT (dstnat + 10, not the mangle priority): a pod's
connection to a Service ClusterIP is judged by the backend kube-proxy chose, so pod -> Service ->
pod in the VPC keeps the pod's source address (as with aws-vpc-cni) and is not pulled into the main
table, while a Service whose endpoint is outside the VPC is SNATed. The mark still precedes the
routing decision: every prerouting hook runs before routing. The SNAT rule checks the destination
again so that nothing bound for the no-SNAT set is ever SNATed, whatever marked it (kube-proxy's
IPVS mode forwards after local delivery, behind any prerouting check).

iptables: our own chains in the ``nat`` and ``mangle`` tables, refilled with
``iptables-restore --noflush`` (declaring a chain there flushes it), and one jump to each::

    nat PREROUTING    -j CLOUD-CNI-CONNMARK  appended: after kube-proxy's KUBE-SERVICES, so a
                                             connection DNATed there is not marked (iptables has
                                             no hook between DNAT and routing to judge it by)
    nat POSTROUTING   -j CLOUD-CNI-SNAT      inserted first
    mangle PREROUTING -j CLOUD-CNI-RESTORE   inserted first

The nat table sees only the first packet of a connection, and mangle PREROUTING (-150) runs before
nat PREROUTING (-100): CLOUD-CNI-CONNMARK therefore sets the packet mark of that first packet as
well as the connection mark, and CLOUD-CNI-RESTORE copies the bit to every later packet. With
NodePort support CLOUD-CNI-RESTORE first marks the connections arriving by the primary interface for a
local address (``-i <primary> -m addrtype --dst-type LOCAL --limit-iface-in -j CONNMARK``): mangle
runs before kube-proxy's DNAT. Jumps are
added only when missing; duplicates and jumps to chains we no longer use are deleted. Each table is
committed atomically (one restore input holds both; legacy iptables commits them one after the
other).

Backend choice (``choose_backend``; ``SNAT_BACKEND=auto``):

1. ``iptables-legacy`` when the node's legacy ``nat`` table already has rules (kube-proxy or Docker
   in iptables-legacy mode, or our own chains from an earlier start). Both frameworks would work side
   by side (their hooks are independent since Linux 4.18), but operators and node tooling that
   read ``iptables-legacy-save`` would not see the SNAT, and which of two NAT rules at the same
   priority wins would depend on the order of registration. Counting our own chains keeps the
   choice stable across restarts.
2. ``nftables`` when ``nft`` works: one transaction replaces our whole table, no other program's
   ``iptables-restore`` rewrites it, the chains can sit after DNAT, and the host's own
   ``iptables-nft`` (often older than ours) never has to parse rules that our newer one wrote.
3. otherwise ``iptables-legacy`` (a kernel without nf_tables; iptables-nft would fail the same way).

``SNAT_BACKEND=iptables`` picks the variant the node uses: legacy when its nat table has rules or
nf_tables is unusable, iptables-nft otherwise. Because the choice can change (kube-proxy may start
after us on a fresh node), the first ``apply`` also removes our rules from the other backends, and
``remove`` removes them from every backend. Probing creates no table and registers no hook:
``iptables-legacy-save`` and ``iptables-nft-save`` without ``-t`` list only the tables that exist.

Errors: a command that fails, is missing or hangs raises ``SnatError`` with the command and its
stderr (capped); an invalid ``SnatConfig`` raises ``SnatConfigError`` (a ``SnatError`` and a
``ValueError``) naming the field. The daemon maps ``SnatError`` to ``DatapathError``.
"""

from __future__ import annotations

import ipaddress
import re
import subprocess
import threading
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import structlog

MARK = 0x80
TABLE = "cloud-cni"  # nftables: table ip cloud-cni
SET = "no_snat"
CHAIN_CONNMARK = "CLOUD-CNI-CONNMARK"  # iptables nat: mark new pod connections leaving the VPC
CHAIN_SNAT = "CLOUD-CNI-SNAT"  # iptables nat: SNAT marked connections
CHAIN_RESTORE = "CLOUD-CNI-RESTORE"  # iptables mangle: connection mark bit -> packet mark
CHAIN_PREFIX = "CLOUD-CNI-"

BACKENDS = ("nftables", "iptables-legacy", "iptables-nft")
REQUESTS = ("auto", "nftables", "iptables", *BACKENDS[1:])
TIMEOUT = 15.0  # seconds for one nft / iptables command (iptables waits up to 10 s for its lock)

_STDERR_CAP = 400
_VETH_PREFIX = re.compile(r"[A-Za-z0-9]{1,4}")
_IFNAME = re.compile(r"[A-Za-z0-9_.@-]{1,15}")  # a Linux interface name (IFNAMSIZ 16), nothing to quote
_JUMP = re.compile(rf"(?:^|\s)-[jg] {CHAIN_PREFIX}[A-Z0-9-]+(?:\s|$)")

Runner = Callable[..., subprocess.CompletedProcess[str]]

_log = structlog.get_logger(__name__)


class SnatError(Exception):
    """An nft / iptables command failed, is missing or did not answer; the message says which."""


class SnatConfigError(SnatError, ValueError):
    """A ``SnatConfig`` field or the requested backend is invalid; ``field`` names it."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


@dataclass(frozen=True, slots=True)
class SnatConfig:
    primary_ip: str  # the SNAT source: the node's primary IPv4 address
    no_snat_cidrs: tuple[str, ...]  # VPC CIDRs + EXCLUDE_SNAT_CIDRS (overlaps and duplicates allowed)
    veth_prefix: str = "ccni"  # host veths are <prefix> + 11 hex
    external_snat: bool = False  # True: no SNAT (the NodePort marking stays, with node_port_if)
    random_fully: bool = True  # fully-random source ports (--random-fully)
    node_port_if: str = ""  # the primary interface: mark NodePort connections arriving by it; "": off

    def __post_init__(self) -> None:
        try:
            if not isinstance(self.primary_ip, str):
                raise ValueError
            ip = ipaddress.IPv4Address(self.primary_ip)
        except ValueError:
            raise SnatConfigError("primary_ip", f"{self.primary_ip!r} is not an IPv4 address") from None
        if ip.is_unspecified or ip.is_multicast or ip.is_loopback or int(ip) == 0xFFFFFFFF:
            raise SnatConfigError("primary_ip", f"{self.primary_ip!r} is not a unicast host address")
        if isinstance(self.no_snat_cidrs, str) or not isinstance(self.no_snat_cidrs, Sequence):
            raise SnatConfigError("no_snat_cidrs", f"a tuple of IPv4 CIDRs, got {self.no_snat_cidrs!r}")
        for i, cidr in enumerate(self.no_snat_cidrs):
            try:
                if not isinstance(cidr, str):
                    raise ValueError
                ipaddress.IPv4Network(cidr, strict=True)
            except ValueError:
                raise SnatConfigError(
                    f"no_snat_cidrs[{i}]", f"{cidr!r} is not an IPv4 CIDR such as 10.0.0.0/16"
                ) from None
        object.__setattr__(self, "no_snat_cidrs", tuple(self.no_snat_cidrs))
        if not isinstance(self.veth_prefix, str) or not _VETH_PREFIX.fullmatch(self.veth_prefix):
            raise SnatConfigError("veth_prefix", f"{self.veth_prefix!r} is not 1 to 4 letters or digits")
        for name in ("external_snat", "random_fully"):
            if not isinstance(getattr(self, name), bool):
                raise SnatConfigError(name, f"a bool, got {getattr(self, name)!r}")
        if not isinstance(self.node_port_if, str) or (
            self.node_port_if and not _IFNAME.fullmatch(self.node_port_if)
        ):
            raise SnatConfigError(
                "node_port_if",
                f"{self.node_port_if!r} is not an interface name (1-15 of A-Z a-z 0-9 _ . @ -)",
            )

    @property
    def installs(self) -> bool:
        """Whether anything of ours is installed: SNAT, or only the NodePort marking."""
        return not self.external_snat or bool(self.node_port_if)


def no_snat_networks(cfg: SnatConfig) -> list[ipaddress.IPv4Network]:
    """The no-SNAT set, sorted and collapsed: nft refuses overlapping intervals, and one form for a
    set makes the rendered rules (and so ``matches``) independent of how the CIDRs were listed."""
    return list(ipaddress.collapse_addresses(ipaddress.IPv4Network(c) for c in cfg.no_snat_cidrs))


# -- nftables --------------------------------------------------------------------------------------

_NFT_DELETE = f"table ip {TABLE}\ndelete table ip {TABLE}\n"  # "add, then delete": never fails


def _nft_table(cfg: SnatConfig) -> str:
    """Our table exactly as ``nft list table`` prints it (nftables 1.0), so ``matches`` compares text.

    nft prints a /32 as a bare address and a mark as 0x%08x; that is why it is written so here.
    """
    nets = [str(n.network_address) if n.prefixlen == 32 else str(n) for n in no_snat_networks(cfg)]
    mark = f"0x{MARK:08x}"
    random = " fully-random" if cfg.random_fully else ""
    elements = f"\t\telements = {{ {', '.join(nets)} }}\n" if nets else ""
    chains = []
    if cfg.node_port_if:
        chains.append(
            "\tchain nodeport {\n"
            "\t\ttype filter hook prerouting priority mangle; policy accept;\n"
            f'\t\tiifname "{cfg.node_port_if}" fib daddr . iif type local ct mark set ct mark | {mark}\n'
            "\t}\n"
        )
    snat_mark = ""
    if not cfg.external_snat:
        new_out = f'iifname "{cfg.veth_prefix}*" ct state new ip daddr != @{SET}'
        snat_mark = f"\t\t{new_out} ct mark set ct mark | {mark}\n"
    chains.append(
        "\tchain prerouting {\n"
        "\t\ttype filter hook prerouting priority dstnat + 10; policy accept;\n"
        f"{snat_mark}"
        f"\t\tct mark & {mark} == {mark} meta mark set meta mark | {mark}\n"
        "\t}\n"
    )
    if not cfg.external_snat:
        chains.append(
            "\tchain postrouting {\n"
            "\t\ttype nat hook postrouting priority srcnat; policy accept;\n"
            f"\t\tct mark & {mark} == {mark} ip daddr != @{SET} snat to {cfg.primary_ip}{random}\n"
            "\t}\n"
        )
    return (
        f"table ip {TABLE} {{\n"
        f"\tset {SET} {{\n"
        "\t\ttype ipv4_addr\n"
        "\t\tflags interval\n"
        f"{elements}"
        "\t}\n" + "".join(f"\n{chain}" for chain in chains) + "}\n"
    )


def render_nft(cfg: SnatConfig) -> str:
    """The ``nft -f -`` script that makes our table match ``cfg`` in one transaction.

    It deletes our table (creating it first, so that the delete never fails) and defines it again;
    nothing outside ``table ip cloud-cni`` is named. When nothing is installed (``external_snat``
    without ``node_port_if``) only the deletion.
    """
    if not cfg.installs:
        return _NFT_DELETE
    return _NFT_DELETE + _nft_table(cfg)


def _normal(text: str) -> str:
    return " ".join(text.split())


# -- iptables --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Jump:
    chain: str  # a built-in chain
    spec: str  # the rule after "-A <chain> ", as iptables-save prints it
    first: bool  # insert at the top (else append)


_JUMPS: dict[str, tuple[_Jump, ...]] = {
    "nat": (
        _Jump("PREROUTING", f"-j {CHAIN_CONNMARK}", first=False),
        _Jump("POSTROUTING", f"-j {CHAIN_SNAT}", first=True),
    ),
    "mangle": (_Jump("PREROUTING", f"-j {CHAIN_RESTORE}", first=True),),
}


@dataclass(slots=True)
class _Tables:
    """Our part of the iptables tables: our chains with their rules, and the jumps into them."""

    chains: dict[str, dict[str, list[str]]] = field(default_factory=dict)  # table -> chain -> specs
    jumps: dict[str, list[tuple[str, str]]] = field(default_factory=dict)  # table -> (chain, spec)

    def empty(self) -> bool:
        return not any(self.chains.values()) and not any(self.jumps.values())


def _iptables_chains(cfg: SnatConfig) -> dict[str, dict[str, list[str]]]:
    """Our chains and their rules, each as iptables-save prints it (iptables 1.8)."""
    if not cfg.installs:
        return {}
    xmark = f"{MARK:#x}/{MARK:#x}"
    returns = [f"-d {n} -j RETURN" for n in no_snat_networks(cfg)]
    random = " --random-fully" if cfg.random_fully else ""
    local = "-m addrtype --dst-type LOCAL --limit-iface-in"
    node_port = [f"-i {cfg.node_port_if} {local} -j CONNMARK --set-xmark {xmark}"] if cfg.node_port_if else []
    mangle = {CHAIN_RESTORE: [*node_port, f"-m connmark --mark {xmark} -j MARK --set-xmark {xmark}"]}
    if cfg.external_snat:
        return {"mangle": mangle}
    return {
        "nat": {
            CHAIN_CONNMARK: [
                f"! -i {cfg.veth_prefix}+ -j RETURN",
                *returns,
                f"-j CONNMARK --set-xmark {xmark}",
                f"-j MARK --set-xmark {xmark}",  # the first packet: mangle's restore ran before us
            ],
            CHAIN_SNAT: [
                f"-m connmark ! --mark {xmark} -j RETURN",
                *returns,
                f"-j SNAT --to-source {cfg.primary_ip}{random}",
            ],
        },
        "mangle": mangle,
    }


def _wanted(cfg: SnatConfig) -> _Tables:
    chains = _iptables_chains(cfg)
    jumps = {t: [(j.chain, j.spec) for j in _JUMPS[t]] for t in chains}
    return _Tables(chains=chains, jumps=jumps)


def render_iptables(cfg: SnatConfig) -> tuple[str, str]:
    """``(nat, mangle)``: our part of each table as ``iptables-save`` prints it, jumps included.

    This is the state ``apply`` establishes and ``matches`` compares with; ``apply`` feeds the chain
    lines to ``iptables-restore --noflush`` and adds each jump only when it is missing (inserted
    first, or appended after kube-proxy's for nat PREROUTING). ``("", "")`` with ``external_snat``:
    nothing of ours.
    """
    wanted = _wanted(cfg)
    out = []
    for table in ("nat", "mangle"):
        chains = wanted.chains.get(table, {})
        if not chains:
            out.append("")
            continue
        lines = [f"*{table}"]
        lines += [f":{name} - [0:0]" for name in chains]
        lines += [f"-A {chain} {spec}" for chain, spec in wanted.jumps[table]]
        lines += [f"-A {name} {spec}" for name, specs in chains.items() for spec in specs]
        lines.append("COMMIT")
        out.append("\n".join(lines) + "\n")
    return out[0], out[1]


def _parse_save(text: str) -> _Tables:
    """Our chains and the jumps into them, from ``iptables-save`` output (every table in it)."""
    found = _Tables()
    table = ""
    for line in text.splitlines():
        if line.startswith("*"):
            table = line[1:].strip()
        elif line.startswith(":" + CHAIN_PREFIX) and table:
            found.chains.setdefault(table, {}).setdefault(line[1:].split()[0], [])
        elif line.startswith("-A ") and table:
            _, chain, *rest = line.split(" ", 2)
            spec = rest[0] if rest else ""
            if chain.startswith(CHAIN_PREFIX):
                found.chains.setdefault(table, {}).setdefault(chain, []).append(spec)
            elif _JUMP.search(spec):
                found.jumps.setdefault(table, []).append((chain, spec))
    return found


def _restore_input(wanted: _Tables, current: _Tables) -> str:
    """The ``iptables-restore --noflush`` input that turns ``current`` into ``wanted``; "" if none."""
    out: list[str] = []
    for table in ("nat", "mangle"):
        want_chains = wanted.chains.get(table, {})
        have_chains = current.chains.get(table, {})
        have_jumps = current.jumps.get(table, [])
        if not want_chains and not have_chains and not have_jumps:
            continue
        keep = Counter(wanted.jumps.get(table, []))
        lines = [f"*{table}"]
        # Declaring a chain creates it or flushes it: ours are refilled from scratch, and a chain
        # we no longer use is emptied so that -X can delete it once nothing jumps to it.
        lines += [f":{name} - [0:0]" for name in {**have_chains, **want_chains}]
        for chain, spec in have_jumps:
            if keep[(chain, spec)] > 0:
                keep[(chain, spec)] -= 1
            else:  # a duplicate, or a jump we no longer make
                lines.append(f"-D {chain} {spec}")
        lines += [f"-X {name}" for name in have_chains if name not in want_chains]
        lines += [f"-A {name} {spec}" for name, specs in want_chains.items() for spec in specs]
        for jump in _JUMPS.get(table, ()):
            if keep[(jump.chain, jump.spec)] > 0:
                lines.append(
                    f"-I {jump.chain} 1 {jump.spec}" if jump.first else f"-A {jump.chain} {jump.spec}"
                )
        lines.append("COMMIT")
        out += lines
    return "\n".join(out) + "\n" if out else ""


# -- running commands ------------------------------------------------------------------------------


class _Shell:
    """Runs nft / iptables here or, for tests, inside a named netns through ``ip netns exec``."""

    def __init__(self, netns: str | None, run: Runner, timeout: float = TIMEOUT) -> None:
        self.netns = netns
        self._run = run
        self._timeout = timeout

    def __call__(self, *argv: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        """Run ``argv``; raise ``SnatError`` if it cannot run, times out or exits non-zero."""
        result = self.attempt(*argv, stdin=stdin)
        if result.returncode != 0:
            raise _failed(argv, result)
        return result

    def attempt(self, *argv: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        """Run ``argv`` and return its result whatever the exit status."""
        cmd = ["ip", "netns", "exec", self.netns, *argv] if self.netns else list(argv)
        try:
            return self._run(
                cmd, input=stdin, capture_output=True, text=True, timeout=self._timeout, check=False
            )
        except subprocess.TimeoutExpired:
            raise SnatError(f"{' '.join(argv)}: no answer in {self._timeout:g} s") from None
        except OSError as exc:  # the binary is missing or not executable
            raise SnatError(f"{argv[0]}: cannot run: {exc.strerror or exc}") from None

    def ok(self, *argv: str) -> bool:
        """Whether ``argv`` runs and exits 0 (a probe: a missing tool is a no)."""
        try:
            return self.attempt(*argv).returncode == 0
        except SnatError:
            return False


def _failed(argv: Sequence[str], result: subprocess.CompletedProcess[str]) -> SnatError:
    stderr = result.stderr.strip()
    if len(stderr) > _STDERR_CAP:
        stderr = stderr[:_STDERR_CAP] + "..."
    return SnatError(f"{' '.join(argv)}: exit status {result.returncode}: {stderr or 'no message'}")


def _legacy_nat_in_use(sh: _Shell) -> bool:
    """Whether the legacy iptables nat table exists here and has rules (anyone's, ours included)."""
    try:
        result = sh.attempt("iptables-legacy-save")
    except SnatError:
        return False
    if result.returncode != 0:
        return False
    in_nat = False
    for line in result.stdout.splitlines():
        if line.startswith("*"):
            in_nat = line == "*nat"
        elif in_nat and line.startswith("-A "):
            return True
    return False


def choose_backend(requested: str = "auto", *, netns: str | None = None, run: Runner = subprocess.run) -> str:
    """The backend to use: "nftables", "iptables-legacy" or "iptables-nft" (the module docstring
    says why). ``requested`` is SNAT_BACKEND: "auto", "nftables", "iptables" (the variant the node
    uses), or a variant by name."""
    if requested not in REQUESTS:
        raise SnatConfigError("backend", f"{requested!r} is not one of {', '.join(REQUESTS)}")
    if requested in BACKENDS:
        return requested
    sh = _Shell(netns, run)
    if _legacy_nat_in_use(sh):
        return "iptables-legacy"
    if requested == "iptables":
        return "iptables-nft" if sh.ok("iptables-nft-save") else "iptables-legacy"
    return "nftables" if sh.ok("nft", "list", "tables") else "iptables-legacy"


# -- the backend-neutral interface -----------------------------------------------------------------


class Snat:
    """Installs, checks and removes our SNAT rules. Blocking (runs commands); thread-safe.

    ``backend``: SNAT_BACKEND ("auto", "nftables", "iptables", or an iptables variant), resolved
    once here by ``choose_backend``. Afterwards ``backend`` is "nftables" or "iptables" and
    ``variant`` the chosen "nftables", "iptables-legacy" or "iptables-nft". ``netns``: run the
    commands in that named netns (tests); None: in the caller's (the daemon's, the node's).
    """

    def __init__(
        self, backend: str = "auto", *, netns: str | None = None, run: Runner = subprocess.run
    ) -> None:
        self._sh = _Shell(netns, run)
        self.variant = choose_backend(backend, netns=netns, run=run)
        self.backend = "nftables" if self.variant == "nftables" else "iptables"
        self._lock = threading.Lock()
        self._others_checked = False
        _log.info("snat_backend", backend=self.variant, requested=backend)

    def __repr__(self) -> str:
        return f"Snat({self.variant!r})"

    def apply(self, cfg: SnatConfig) -> None:
        """Make the installed rules match ``cfg`` (nothing to install: remove them). Idempotent."""
        if not cfg.installs:
            self.remove()
            return
        with self._lock:
            if not self._others_checked:
                for variant in BACKENDS:
                    if variant != self.variant:
                        self._remove_from(variant, probe=True)
                self._others_checked = True
            if self.variant == "nftables":
                self._sh("nft", "-f", "-", stdin=render_nft(cfg))
            else:
                save = self._sh(f"{self.variant}-save").stdout
                text = _restore_input(_wanted(cfg), _parse_save(save))
                if text:
                    self._restore(self.variant, text)
        _log.info(
            "snat_applied",
            backend=self.variant,
            primary_ip=cfg.primary_ip,
            no_snat=[str(n) for n in no_snat_networks(cfg)],
            veth_prefix=cfg.veth_prefix,
            snat=not cfg.external_snat,
            node_port_if=cfg.node_port_if or None,
        )

    def remove(self) -> None:
        """Delete every rule, chain and table of ours, from every backend. Idempotent."""
        with self._lock:
            removed = [v for v in BACKENDS if self._remove_from(v, probe=v != self.variant)]
        if removed:
            _log.info("snat_removed", backends=removed)

    def matches(self, cfg: SnatConfig) -> bool:
        """Whether the chosen backend holds exactly the rules ``cfg`` asks for (nothing of ours when
        it installs nothing). Only our table / chains and our jumps are compared."""
        with self._lock:
            if self.variant == "nftables":
                listed = self._nft_listing()
                if not cfg.installs:
                    return listed is None
                return listed is not None and _normal(listed) == _normal(_nft_table(cfg))
            current = _parse_save(self._sh(f"{self.variant}-save").stdout)
            wanted = _wanted(cfg)
            return {t: c for t, c in current.chains.items() if c} == wanted.chains and all(
                Counter(current.jumps.get(t, [])) == Counter(wanted.jumps.get(t, []))
                for t in ("nat", "mangle")
            )

    # -- helpers (the lock is held) ----------------------------------------------------------------

    def _nft_listing(self) -> str | None:
        """``nft list table ip cloud-cni``, or None when there is no such table."""
        argv = ("nft", "list", "table", "ip", TABLE)
        result = self._sh.attempt(*argv)
        if result.returncode == 0:
            return result.stdout
        if "No such file or directory" in result.stderr:  # ENOENT: no such table
            return None
        raise _failed(argv, result)

    def _remove_from(self, variant: str, *, probe: bool) -> bool:
        """Remove ours from ``variant``; True if there was something. ``probe``: a backend we did not
        choose may be unusable here (no binary, no kernel support): then nothing of ours is in it."""
        if variant == "nftables":
            argv: tuple[str, ...] = ("nft", "list", "tables", "ip")
        else:  # without -t, iptables-save lists only the tables that exist: it loads no module
            argv = (f"{variant}-save",)
        try:
            result = self._sh.attempt(*argv)
        except SnatError:
            if probe:
                return False
            raise
        if result.returncode != 0:
            if probe:
                return False
            raise _failed(argv, result)
        if variant == "nftables":
            if f"table ip {TABLE}" not in result.stdout.splitlines():
                return False
            self._sh("nft", "-f", "-", stdin=_NFT_DELETE)
            return True
        text = _restore_input(_Tables(), _parse_save(result.stdout))
        if not text:
            return False
        self._restore(variant, text)
        return True

    def _restore(self, variant: str, text: str) -> None:
        self._sh(f"{variant}-restore", "--noflush", "--wait=10", stdin=text)
