"""Named network namespaces for tests: created here, always deleted, never left behind.

Every datapath and containerd test runs inside namespaces it creates (a node, a VPC router, pods,
peers outside the VPC) with no link to the host's real interfaces, so that a missing route can
never send a packet out of the machine. Names carry a random suffix (``cc-<role>-<hex>``) so that
parallel or aborted runs never collide; ``sweep()`` removes what an aborted run left.
"""

from __future__ import annotations

import contextlib
import secrets
import subprocess
from collections.abc import Iterator, Sequence

PREFIX = "cc-"


def run(
    netns: str | None, *argv: str, check: bool = True, timeout: float = 20
) -> subprocess.CompletedProcess[str]:
    """Run ``argv`` inside ``netns`` (None: here)."""
    cmd = ["ip", "netns", "exec", netns, *argv] if netns else list(argv)
    return subprocess.run(cmd, capture_output=True, text=True, check=check, timeout=timeout)


def ip(netns: str | None, *args: str, check: bool = True) -> str:
    return run(netns, "ip", *args, check=check).stdout


def create(role: str) -> str:
    name = f"{PREFIX}{role}-{secrets.token_hex(3)}"
    subprocess.run(["ip", "netns", "add", name], check=True, capture_output=True)
    ip(name, "link", "set", "lo", "up")
    return name


def delete(name: str) -> None:
    # Kill what still runs inside (servers a test started), then the namespace itself.
    pids = subprocess.run(["ip", "netns", "pids", name], capture_output=True, text=True).stdout.split()
    for pid in pids:
        subprocess.run(["kill", "-9", pid], capture_output=True)
    subprocess.run(["ip", "netns", "del", name], capture_output=True)


def existing() -> list[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def sweep(prefix: str = PREFIX) -> None:
    for name in existing():
        if name.startswith(prefix):
            delete(name)


@contextlib.contextmanager
def namespaces(*roles: str) -> Iterator[Sequence[str]]:
    made = [create(r) for r in roles]
    try:
        yield made
    finally:
        for name in made:
            delete(name)


def veth(a_ns: str, a_name: str, b_ns: str, b_name: str, *, a_mac: str | None = None) -> None:
    """A veth pair with one end in each namespace (created in ``a_ns``, the peer moved to ``b_ns``)."""
    args = ["link", "add", a_name]
    if a_mac:
        args += ["address", a_mac]
    ip(a_ns, *args, "type", "veth", "peer", "name", b_name, "netns", b_ns)
    ip(a_ns, "link", "set", a_name, "up")
    ip(b_ns, "link", "set", b_name, "up")
