"""Median cost of one ADD+DEL pair (assign + unassign) in the datastore, in microseconds.

Two shapes: 15 interfaces x 50 secondary IPs (750 IPs) and 15 interfaces x 49 /28 prefixes (11,760
addresses). The pool is kept half full with pods so that choice and indexes are exercised in a
realistic state. Cool-down is on and simulated time advances so that about half of the free addresses
are cooling at any moment: every freed address goes through cooling and expiry. A last line measures
the worst case, where every free address is cooling and each ADD takes the cool-down fallback.

    PYTHONPATH=. .venv/bin/python bench/bench_datastore.py
"""

from __future__ import annotations

import ipaddress
import statistics
import time

from ipamd.pool.datastore import Datastore
from ipamd.pool.model import AttachmentKey, ContainerID, IfName, InterfaceId, InterfaceView, PodRef

INTERFACES = 15
ROUNDS = 20
PAIRS_PER_ROUND = 2_000
COOLDOWN = 30.0


def _interfaces(*, prefixes: bool) -> list[InterfaceView]:
    views = []
    for index in range(INTERFACES):
        base = int(ipaddress.IPv4Address("10.0.0.0")) + index * 4096
        primary_ip = str(ipaddress.IPv4Address(base + 4095))
        if prefixes:
            cidrs = tuple(f"{ipaddress.IPv4Address(base + 16 * n)}/28" for n in range(49))
            view = InterfaceView(
                InterfaceId(f"eni-{index}"), index, index == 0, "subnet", "10.0.0.0/16", primary_ip
            )
            views.append(view.with_addresses((), cidrs))
        else:
            ips = tuple(str(ipaddress.IPv4Address(base + n)) for n in range(50))
            view = InterfaceView(
                InterfaceId(f"eni-{index}"), index, index == 0, "subnet", "10.0.0.0/16", primary_ip
            )
            views.append(view.with_addresses(ips, ()))
    return views


def _key(n: int) -> AttachmentKey:
    return AttachmentKey("k8s-pod-network", ContainerID(f"{n:064x}"), IfName("eth0"))


def bench(label: str, views: list[InterfaceView], *, all_cooling: bool = False) -> None:
    now = 1_700_000_000.0
    store = Datastore(cooldown=COOLDOWN)
    store.sync_interfaces(views, now=now)
    total = store.stats(now=now).total
    pod = PodRef("default", "bench", "uid")
    for n in range(total // 2):  # half full, spread over interfaces and prefixes
        store.assign(_key(n), pod, netns="/var/run/netns/x", now=now)
    # simulated seconds per pair: half the free addresses cooling, or (worst case) all of them and more
    step = 0.0001 if all_cooling else COOLDOWN / (total - total // 2) * 2
    medians = []
    serial = total
    for _ in range(ROUNDS):
        samples = []
        for _ in range(PAIRS_PER_ROUND):
            now += step
            key = _key(serial)
            serial += 1
            start = time.perf_counter()
            store.assign(key, pod, netns="/var/run/netns/x", now=now)
            store.unassign(key, now=now)
            samples.append(time.perf_counter() - start)
        medians.append(statistics.median(samples))
    stats = store.stats(now=now)
    print(
        f"{label}: {total} addresses, median {statistics.median(medians) * 1e6:.1f} us per assign+unassign "
        f"(best round {min(medians) * 1e6:.1f} us; cooling {stats.cooling}, "
        f"cooldown_overrides {store.cooldown_overrides})"
    )


def main() -> None:
    bench("secondary IPs", _interfaces(prefixes=False))
    bench("prefixes     ", _interfaces(prefixes=True))
    bench("prefixes, every free address cooling", _interfaces(prefixes=True), all_cooling=True)


if __name__ == "__main__":
    main()
