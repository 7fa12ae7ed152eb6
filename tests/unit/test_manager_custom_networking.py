"""The manager without pods on the primary interface (custom networking), on the simulated cloud:
growth goes to secondary interfaces, the datastore follows the targets, and the capacity the manager
reports ("settled", "growth blocked", max IPs) leaves the primary out."""

from __future__ import annotations

import asyncio

import pytest

from ipamd.errors import NoAddressAvailable
from ipamd.pool.model import WarmPoolTargets
from tests.unit.pool_node import POD, assign_pods, key, make_node, place_pods, settle


def test_pods_go_to_secondary_interfaces_only() -> None:
    node = make_node(targets=WarmPoolTargets(primary_interface_pods=False))
    assert node.store.primary_interface_pods is False  # the manager set the datastore's flag
    asyncio.run(settle(node))
    assert node.held() == [0, 9]
    ips = asyncio.run(place_pods(node, 10))
    primary = node.primary()
    assert not set(ips) & set(primary.ips) and primary.ips == ()
    assert node.held() == [0, 9, 9] and node.cloud_held() == [0, 9, 9]
    assert node.manager.max_ips == 20  # (3 - 1) x 9 + 2


def test_a_full_node_is_settled_and_says_why() -> None:
    node = make_node(targets=WarmPoolTargets(primary_interface_pods=False))
    asyncio.run(place_pods(node, 18))
    now = node.clock()
    with pytest.raises(NoAddressAvailable):
        assign_pods(node, 1, prefix="extra")
    assert node.manager.pool_settled(now)  # nothing left to grow into: the primary does not count
    assert "the pool holds its maximum: 18 addresses" in node.manager.growth_blocked(now)


def test_switching_pods_off_the_primary_keeps_the_pods_already_there() -> None:
    node = make_node()
    asyncio.run(settle(node))
    (on_primary,) = assign_pods(node, 1, prefix="old")
    assert on_primary in node.primary().ips
    node.manager.set_primary_interface_pods(False)
    assert node.store.primary_interface_pods is False
    assert not node.manager.targets.primary_interface_pods
    assert node.store.assign(key("old0"), POD, netns="ns", now=node.clock()).ip == on_primary
    asyncio.run(settle(node))
    (new,) = assign_pods(node, 1, prefix="new")
    assert new not in node.primary().ips
    node.manager.set_primary_interface_pods(True)
    assert node.store.primary_interface_pods is True
