"""SimCloud: limits, subnet exhaustion, addresses with one holder, persistence, throttling, faults."""

from __future__ import annotations

import ipaddress
import json
import random
import re
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from ipamd.cloud.limiter import CloudCaller, RetryPolicy, TokenBucket
from ipamd.cloud.sim import INSTANCE_TYPES, SimCloud
from ipamd.errors import (
    CloudError,
    InterfaceNotFound,
    LimitExceeded,
    PermanentCloudError,
    SubnetFull,
    TemporaryCloudError,
    ThrottledError,
)
from ipamd.pool.model import InterfaceId, InterfaceView


class FakeClock:
    def __init__(self) -> None:
        self.now = 500.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def make(*, clock: FakeClock | None = None, **kwargs: Any) -> SimCloud:
    clock = clock or FakeClock()
    return SimCloud(clock=clock, sleep=clock.sleep, **kwargs)


def primary(sim: SimCloud) -> InterfaceView:
    (view,) = [i for i in sim.list_interfaces() if i.primary]
    return view


def holdings(views: list[InterfaceView]) -> list[int]:
    """Every address held, as integers: primaries, secondary IPs and each member of each prefix."""
    held: list[int] = []
    for view in views:
        held.append(int(ipaddress.IPv4Address(view.primary_ip)))
        held.extend(int(ipaddress.IPv4Address(ip)) for ip in view.ips)
        for prefix in view.prefixes:
            held.extend(int(a) for a in ipaddress.IPv4Network(prefix))
    return held


def assert_consistent(sim: SimCloud, views: list[InterfaceView]) -> None:
    """The cloud-wide invariants: one holder per address, nothing reserved, limits respected."""
    limits = sim.instance_limits()
    held = holdings(views)
    assert len(held) == len(set(held)), "an address has two holders"
    subnet = ipaddress.IPv4Network(views[0].subnet_cidr)
    first, last = int(subnet.network_address), int(subnet.broadcast_address)
    assert all(first + 4 <= a < last for a in held), "a reserved or foreign address was handed out"
    assert len(views) <= limits.max_interfaces
    assert [v.device_index for v in views] == sorted({v.device_index for v in views})
    assert sum(v.primary for v in views) == 1
    for view in views:
        assert len(view.ips) + len(view.prefixes) <= limits.secondary_per_interface
        assert list(view.ips) == sorted(view.ips, key=ipaddress.IPv4Address)
        for prefix in view.prefixes:
            net = ipaddress.IPv4Network(prefix)  # strict: raises if not aligned
            assert net.prefixlen == 28 and net.subnet_of(subnet)
        if not limits.prefix_delegation:
            assert view.prefixes == ()
    assert sim.free_addresses() == subnet.num_addresses - 5 - len(held)


# --- the instance table and a fresh node ----------------------------------------------------------


@pytest.mark.parametrize(
    ("instance_type", "interfaces", "ipv4", "pd"),
    [
        pytest.param("m5.large", 3, 10, True, id="m5.large"),
        pytest.param("t3.medium", 3, 6, True, id="t3.medium"),
        pytest.param("t3.small", 3, 4, True, id="t3.small"),
        pytest.param("c5.18xlarge", 15, 50, True, id="c5.18xlarge"),
        pytest.param("azure-nic-256", 1, 256, False, id="azure"),
    ],
)
def test_instance_table(instance_type: str, interfaces: int, ipv4: int, pd: bool) -> None:
    limits = INSTANCE_TYPES[instance_type]
    assert (limits.max_interfaces, limits.ipv4_per_interface, limits.prefix_delegation) == (
        interfaces,
        ipv4,
        pd,
    )
    assert make(instance_type=instance_type).instance_limits() == limits


def test_a_new_node_has_only_its_primary_interface() -> None:
    sim = make()
    (view,) = sim.list_interfaces()
    assert view.primary and view.device_index == 0
    assert view.primary_ip == "10.0.0.4"  # .0-.3 are reserved
    assert view.ips == () and view.prefixes == ()
    assert re.fullmatch(r"eni-[0-9a-f]{12}", view.id)
    assert re.fullmatch(r"02(:[0-9a-f]{2}){5}", view.mac)
    assert (view.subnet_id, view.subnet_cidr) == ("subnet-sim", "10.0.0.0/22")
    assert sim.name == "sim"


@pytest.mark.parametrize(
    ("kwargs", "param"),
    [
        pytest.param({"instance_type": "m9.huge"}, "instance_type", id="unknown-type"),
        pytest.param({"subnet_cidr": "10.0.0.1/24"}, "subnet_cidr", id="host-bits"),
        pytest.param({"subnet_cidr": "fd00::/64"}, "subnet_cidr", id="ipv6"),
        pytest.param({"subnet_cidr": "10.0.0.0/29"}, "subnet_cidr", id="too-small"),
        pytest.param({"seed": "1"}, "seed", id="seed-str"),
        pytest.param({"latency": -0.1}, "latency", id="negative-latency"),
        pytest.param({"latency": float("nan")}, "latency", id="nan-latency"),
        pytest.param({"throttle_rate": 0}, "throttle_rate", id="zero-rate"),
        pytest.param({"throttle_burst": 0}, "throttle_burst", id="zero-burst"),
    ],
)
def test_constructor_names_the_bad_parameter(kwargs: dict[str, Any], param: str) -> None:
    with pytest.raises(ValueError, match=param):
        make(**kwargs)


# --- limits ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("instance_type", ["t3.small", "t3.medium", "m5.large", "c5.18xlarge"])
def test_interface_and_slot_limits(instance_type: str) -> None:
    sim = make(instance_type=instance_type, subnet_cidr="10.0.0.0/20")
    limits = sim.instance_limits()
    slots = limits.secondary_per_interface
    with pytest.raises(LimitExceeded):
        sim.attach_interface(slots + 1, 0)
    attached = [sim.attach_interface(slots, 0) for _ in range(limits.max_interfaces - 1)]
    assert [v.device_index for v in attached] == list(range(1, limits.max_interfaces))
    assert all(len(v.ips) == slots for v in attached)
    before = sim.list_interfaces()
    with pytest.raises(LimitExceeded):
        sim.attach_interface(1, 0)
    with pytest.raises(LimitExceeded):
        sim.assign_ips(attached[0].id, 1)
    sim.assign_ips(before[0].id, slots - 1)
    with pytest.raises(LimitExceeded):
        sim.assign_ips(before[0].id, 2)
    assert len(sim.assign_ips(before[0].id, 1)) == 1
    with pytest.raises(LimitExceeded):
        sim.assign_prefixes(before[0].id, 1)  # prefixes and IPs share the slots
    assert_consistent(sim, sim.list_interfaces())


def test_prefix_and_ip_slots_are_shared() -> None:
    sim = make(instance_type="t3.medium")  # 5 slots per interface
    view = sim.attach_interface(0, 3)
    assert len(view.prefixes) == 3
    sim.assign_ips(view.id, 2)
    with pytest.raises(LimitExceeded):
        sim.assign_prefixes(view.id, 1)
    with pytest.raises(LimitExceeded):
        sim.attach_interface(3, 3)


@pytest.mark.parametrize("instance_type", ["t2.medium", "azure-nic-256"])
def test_prefixes_need_prefix_delegation(instance_type: str) -> None:
    sim = make(instance_type=instance_type)
    with pytest.raises(LimitExceeded, match="prefix delegation"):
        sim.assign_prefixes(primary(sim).id, 1)
    if sim.instance_limits().max_interfaces > 1:
        with pytest.raises(LimitExceeded, match="prefix delegation"):
            sim.attach_interface(0, 1)
    assert sim.list_interfaces()[0].prefixes == ()


def test_azure_like_nic_holds_255_secondary_ipconfigs() -> None:
    sim = make(instance_type="azure-nic-256")
    nic = primary(sim)
    with pytest.raises(LimitExceeded):
        sim.attach_interface(1, 0)
    assert len(sim.assign_ips(nic.id, 255)) == 255
    with pytest.raises(LimitExceeded):
        sim.assign_ips(nic.id, 1)
    assert_consistent(sim, sim.list_interfaces())


# --- the subnet -------------------------------------------------------------------------------


def test_subnet_full_changes_nothing() -> None:
    sim = make(subnet_cidr="10.0.0.0/27")  # 27 usable addresses; the primary takes one
    sim.attach_interface(9, 0)  # 10 more
    third = sim.attach_interface(8, 0)  # 9 more
    before = sim.list_interfaces()
    assert sim.free_addresses() == 7
    with pytest.raises(SubnetFull):
        sim.assign_ips(before[0].id, 9)  # the slots allow 9, the subnet has 7: nothing is assigned
    assert sim.list_interfaces() == before
    assert sim.free_addresses() == 7
    assert len(sim.assign_ips(before[0].id, 7)) == 7
    assert sim.free_addresses() == 0
    with pytest.raises(SubnetFull):
        sim.assign_ips(third.id, 1)
    assert_consistent(sim, sim.list_interfaces())


def test_attach_that_cannot_be_met_leaves_no_interface() -> None:
    sim = make(subnet_cidr="10.0.0.0/27")
    sim.assign_ips(primary(sim).id, 9)
    sim.attach_interface(9, 0)
    before = sim.list_interfaces()
    assert sim.free_addresses() == 7
    with pytest.raises(SubnetFull):
        sim.attach_interface(7, 0)  # needs 8 with its own primary address
    assert sim.list_interfaces() == before
    assert sim.free_addresses() == 7
    assert len(sim.attach_interface(6, 0).ips) == 6
    assert sim.free_addresses() == 0


def test_a_28_subnet_hands_out_exactly_its_eleven_usable_addresses() -> None:
    sim = make(instance_type="azure-nic-256", subnet_cidr="192.168.7.16/28")
    nic = primary(sim)
    got = sim.assign_ips(nic.id, 10)
    assert [nic.primary_ip, *got] == [f"192.168.7.{n}" for n in range(20, 31)]
    with pytest.raises(SubnetFull):
        sim.assign_ips(nic.id, 1)


def test_prefixes_are_aligned_free_blocks_and_never_overlap() -> None:
    sim = make(subnet_cidr="10.0.0.0/26")  # blocks .16/28 and .32/28 can be delegated; .0 and .48 not
    nic = primary(sim)
    with pytest.raises(SubnetFull):
        sim.assign_prefixes(nic.id, 3)
    sim.assign_ips(nic.id, 8)  # .5-.12
    assert sim.assign_prefixes(nic.id, 1) == ["10.0.0.16/28"]
    eni = sim.attach_interface(3, 0)
    assert eni.primary_ip == "10.0.0.13"
    assert eni.ips == ("10.0.0.14", "10.0.0.15", "10.0.0.32")  # skips the delegated block
    with pytest.raises(SubnetFull):
        sim.assign_prefixes(eni.id, 1)  # .32/28 now holds addresses: not delegable
    sim.release_ips(eni.id, ["10.0.0.32"])
    assert sim.assign_prefixes(eni.id, 1) == ["10.0.0.32/28"]
    assert_consistent(sim, sim.list_interfaces())


def test_an_interface_attached_with_ips_and_prefixes_keeps_them_apart() -> None:
    sim = make()
    sim.assign_ips(primary(sim).id, 9)  # .5-.13: block .0/28 has two free addresses left
    eni = sim.attach_interface(2, 1)
    assert eni.prefixes == ("10.0.0.16/28",)
    assert (eni.primary_ip, eni.ips) == ("10.0.0.14", ("10.0.0.15", "10.0.0.32"))
    assert_consistent(sim, sim.list_interfaces())


def test_prefixes_on_a_large_node() -> None:
    sim = make(instance_type="c5.18xlarge", subnet_cidr="10.1.0.0/16")
    views = [sim.attach_interface(0, 49) for _ in range(3)]
    prefixes = [p for v in views for p in v.prefixes]
    assert len(prefixes) == len(set(prefixes)) == 147
    assert all(int(ipaddress.IPv4Network(p).network_address) % 16 == 0 for p in prefixes)
    assert_consistent(sim, sim.list_interfaces())


# --- interfaces coming and going ------------------------------------------------------------------


def test_detach_frees_the_device_index_and_the_addresses() -> None:
    sim = make()
    first = sim.attach_interface(2, 0)
    second = sim.attach_interface(2, 0)
    free = sim.free_addresses()
    sim.detach_interface(first.id)
    assert sim.free_addresses() == free + 3
    again = sim.attach_interface(2, 0)
    assert again.device_index == first.device_index == 1
    assert again.id not in (first.id, second.id)
    assert (again.primary_ip, again.ips) == (first.primary_ip, first.ips)  # lowest free first


def test_detaching_the_primary_interface_is_refused() -> None:
    sim = make()
    with pytest.raises(PermanentCloudError, match="primary"):
        sim.detach_interface(primary(sim).id)
    assert len(sim.list_interfaces()) == 1


def test_already_gone_is_not_an_error() -> None:
    sim = make()
    gone = sim.attach_interface(2, 0)
    sim.detach_interface(gone.id)
    sim.detach_interface(gone.id)
    sim.detach_interface(InterfaceId("eni-000000000000"))
    sim.release_ips(gone.id, list(gone.ips))
    sim.release_prefixes(gone.id, ["10.0.0.16/28"])
    nic = primary(sim)
    sim.release_ips(nic.id, ["10.0.0.200", "192.168.0.1"])  # never held, or outside the subnet
    sim.release_prefixes(nic.id, ["10.0.3.240/28"])
    assert sim.list_interfaces() == [nic]


@pytest.mark.parametrize(
    "call",
    [
        pytest.param(lambda sim, i: sim.assign_ips(i, 1), id="assign_ips"),
        pytest.param(lambda sim, i: sim.assign_prefixes(i, 1), id="assign_prefixes"),
    ],
)
def test_assign_on_an_unknown_interface(call: Callable[[SimCloud, InterfaceId], object]) -> None:
    with pytest.raises(InterfaceNotFound):
        call(make(), InterfaceId("eni-000000000000"))


def test_a_released_ip_is_gone_and_others_stay() -> None:
    sim = make()
    eni = sim.attach_interface(4, 0)
    sim.release_ips(eni.id, [eni.ips[1], eni.ips[3]])
    (after,) = [v for v in sim.list_interfaces() if v.id == eni.id]
    assert after.ips == (eni.ips[0], eni.ips[2])


@pytest.mark.parametrize(
    "call",
    [
        pytest.param(lambda sim, v: sim.release_ips(v.id, [v.primary_ip]), id="release-primary-ip"),
        pytest.param(lambda sim, v: sim.release_ips(v.id, ["not-an-ip"]), id="malformed-ip"),
        pytest.param(lambda sim, v: sim.release_prefixes(v.id, ["10.0.0.17/28"]), id="unaligned-prefix"),
        pytest.param(lambda sim, v: sim.release_prefixes(v.id, ["10.0.0.0/27"]), id="not-a-28"),
        pytest.param(lambda sim, v: sim.assign_ips(v.id, -1), id="negative-count"),
        pytest.param(lambda sim, v: sim.attach_interface(1, -1), id="negative-prefix-count"),
    ],
)
def test_invalid_requests_are_permanent_errors(call: Callable[[SimCloud, InterfaceView], object]) -> None:
    sim = make()
    before = sim.list_interfaces()
    with pytest.raises(PermanentCloudError, match="InvalidParameterValue"):
        call(sim, before[0])
    assert sim.list_interfaces() == before


def test_count_zero_is_a_no_op() -> None:
    sim = make()
    nic = primary(sim)
    assert sim.assign_ips(nic.id, 0) == []
    assert sim.assign_prefixes(nic.id, 0) == []
    assert sim.list_interfaces() == [nic]


# --- determinism and persistence ----------------------------------------------------------------


def scenario(sim: SimCloud) -> list[object]:
    """A fixed sequence of calls touching every mutating operation; returns what each answered."""
    out: list[object] = []
    a = sim.attach_interface(3, 0)
    b = sim.attach_interface(0, 2)
    out += [a, b]
    out.append(sim.assign_ips(a.id, 2))
    out.append(sim.assign_prefixes(b.id, 1))
    sim.release_ips(a.id, [a.ips[0]])
    sim.release_prefixes(b.id, [b.prefixes[0]])
    sim.detach_interface(a.id)
    out.append(sim.attach_interface(1, 1))
    out.append(sim.list_interfaces())
    return out


def test_same_seed_same_ids_and_addresses() -> None:
    assert scenario(make(seed=11)) == scenario(make(seed=11))
    one, other = make(seed=11), make(seed=12)
    assert scenario(one) != scenario(other)
    ours, theirs = one.list_interfaces(), other.list_interfaces()
    assert [v.id for v in ours] != [v.id for v in theirs]
    assert [(v.primary_ip, v.ips, v.prefixes) for v in ours] == [
        (v.primary_ip, v.ips, v.prefixes) for v in theirs
    ]


def test_ids_do_not_depend_on_latency_jitter() -> None:
    assert scenario(make(seed=3)) == scenario(make(seed=3, latency=0.2))


def test_a_restarted_sim_finds_the_same_cloud_and_continues_identically(tmp_path: Path) -> None:
    path = tmp_path / "cloud" / "sim.json"  # the parent directory is created
    node: dict[str, Any] = {"instance_type": "c5.18xlarge", "seed": 5}
    first = make(state_path=str(path), **node)
    scenario(first)
    restarted = make(state_path=str(path), **node)
    assert restarted.list_interfaces() == first.list_interfaces()
    assert restarted.free_addresses() == first.free_addresses()

    reference = make(**node)  # never restarted: the same calls must give the same answers
    scenario(reference)
    assert scenario(restarted) == scenario(reference)
    assert make(state_path=path, **node).list_interfaces() == reference.list_interfaces()


def test_state_is_written_after_every_change_and_atomically(tmp_path: Path) -> None:
    path = tmp_path / "sim.json"
    sim = make(state_path=path)
    assert path.exists()  # the fresh node itself is saved
    eni = sim.attach_interface(2, 0)
    doc = json.loads(path.read_text())
    assert [i["id"] for i in doc["interfaces"]] == [primary(sim).id, eni.id]
    sim.release_ips(eni.id, [eni.ips[0]])
    assert json.loads(path.read_text())["interfaces"][1]["ips"] == [eni.ips[1]]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sim.json"]  # no temp files left


def test_a_failed_write_changes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "sim.json"
    sim = make(state_path=path)
    before, saved = sim.list_interfaces(), path.read_bytes()
    path.unlink()
    path.mkdir()  # os.replace onto a directory fails
    with pytest.raises(OSError):
        sim.attach_interface(2, 0)
    assert sim.list_interfaces() == before
    path.rmdir()
    path.write_bytes(saved)
    assert make(state_path=path).list_interfaces() == before


def _doc(tmp_path: Path) -> dict[str, Any]:
    sim = make(state_path=tmp_path / "seed.json", subnet_cidr="10.0.0.0/24")
    sim.attach_interface(2, 1)
    sim.assign_ips(primary(sim).id, 1)
    doc: dict[str, Any] = json.loads((tmp_path / "seed.json").read_text())
    return doc


def _set(path: str, value: object) -> Callable[[dict[str, Any]], None]:
    def edit(doc: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        node: Any = doc
        for key in parents:
            node = node[int(key)] if isinstance(node, list) else node[key]
        if isinstance(node, list):
            node[int(last)] = value
        else:
            node[last] = value

    return edit


@pytest.mark.parametrize(
    "edit",
    [
        pytest.param(_set("version", 99), id="version"),
        pytest.param(_set("format", "other"), id="format"),
        pytest.param(_set("next_id", "3"), id="next-id-type"),
        pytest.param(_set("interfaces", {}), id="interfaces-type"),
        pytest.param(_set("interfaces.1.device_index", True), id="device-index-bool"),
        pytest.param(_set("interfaces.1.device_index", 0), id="device-index-twice"),
        pytest.param(_set("interfaces.1.device_index", 7), id="device-index-range"),
        pytest.param(_set("interfaces.1.primary", True), id="two-primaries"),
        pytest.param(_set("interfaces.1.id", None), id="id-missing"),
        pytest.param(_set("interfaces.1.primary_ip", "10.0.0.1"), id="reserved-address"),
        pytest.param(_set("interfaces.1.primary_ip", "10.9.0.9"), id="foreign-address"),
        pytest.param(_set("interfaces.1.primary_ip", "10.0.0.4"), id="address-two-holders"),
        pytest.param(_set("interfaces.1.ips.0", "10.0.0.17"), id="address-inside-a-prefix"),
        pytest.param(_set("interfaces.1.ips.0", "nope"), id="malformed-address"),
        pytest.param(_set("interfaces.1.prefixes.0", "10.0.0.20/28"), id="unaligned-prefix"),
        pytest.param(_set("interfaces.1.prefixes.0", "10.0.0.0/28"), id="reserved-block"),
        pytest.param(_set("interfaces.1.prefixes.0", "10.0.0.32/27"), id="not-a-28"),
        pytest.param(_set("interfaces.1.ips", [f"10.0.0.{n}" for n in range(100, 110)]), id="too-many"),
        pytest.param(lambda doc: doc["interfaces"].append(doc["interfaces"][1]), id="interface-twice"),
    ],
)
def test_a_corrupt_state_file_is_refused_by_name(
    tmp_path: Path, edit: Callable[[dict[str, Any]], None]
) -> None:
    doc = _doc(tmp_path)
    edit(doc)
    path = tmp_path / "broken.json"
    path.write_text(json.dumps(doc))
    with pytest.raises(ValueError, match=re.escape(str(path))):
        make(state_path=path, subnet_cidr="10.0.0.0/24")


@pytest.mark.parametrize("content", [b"", b"{not json", b"[]", b"\xff\xfe", b"null"])
def test_an_unreadable_state_file_is_refused_by_name(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "sim.json"
    path.write_bytes(content)
    with pytest.raises(ValueError, match=re.escape(str(path))):
        make(state_path=path)


@pytest.mark.parametrize(
    ("kwargs", "key"),
    [
        pytest.param({"instance_type": "t3.medium"}, "instance_type", id="instance-type"),
        pytest.param({"subnet_cidr": "10.0.4.0/22"}, "subnet_cidr", id="subnet"),
    ],
)
def test_a_state_file_for_another_node_is_refused(tmp_path: Path, kwargs: dict[str, Any], key: str) -> None:
    path = tmp_path / "sim.json"
    make(state_path=path)
    with pytest.raises(ValueError, match=key) as info:
        make(state_path=path, **kwargs)
    assert str(path) in str(info.value)


# --- latency, throttling and faults --------------------------------------------------------------


def test_latency_is_jittered_and_describe_calls_are_quicker() -> None:
    clock = FakeClock()
    sim = make(clock=clock, latency=0.4)
    nic = primary(sim)
    clock.sleeps.clear()
    for _ in range(20):
        sim.assign_ips(nic.id, 1)
        sim.release_ips(nic.id, ["10.0.0.5"])
    assert all(0.3 <= s <= 0.5 for s in clock.sleeps)
    assert len(set(clock.sleeps)) > 1
    clock.sleeps.clear()
    sim.list_interfaces()
    (slept,) = clock.sleeps
    assert 0.075 <= slept <= 0.125


def test_no_latency_no_sleep() -> None:
    clock = FakeClock()
    scenario(make(clock=clock))
    assert clock.sleeps == []


def test_latency_is_slept_outside_the_lock() -> None:
    sims: list[SimCloud] = []
    answered: list[int] = []

    def sleep(seconds: float) -> None:
        # while this call "waits for the API", another thread must get through
        if not answered:
            answered.append(0)
            other = threading.Thread(target=lambda: answered.append(len(sims[0].list_interfaces())))
            other.start()
            other.join(timeout=5)

    sims.append(SimCloud(latency=0.01, sleep=sleep))
    sims[0].attach_interface(1, 0)
    assert answered == [0, 1]


def test_throttling_answers_request_limit_exceeded_with_retry_after() -> None:
    clock = FakeClock()
    sim = make(clock=clock, throttle_rate=2.0, throttle_burst=3)
    nic = primary(sim)  # one token
    sim.assign_ips(nic.id, 1)
    sim.assign_ips(nic.id, 1)
    with pytest.raises(ThrottledError, match="RequestLimitExceeded") as info:
        sim.assign_ips(nic.id, 1)
    assert info.value.retry_after == pytest.approx(0.5)
    assert sim.calls["assign_ips"] == 3
    clock.now += 0.5
    (after,) = sim.list_interfaces()
    assert len(after.ips) == 2  # the throttled call changed nothing


def test_the_caller_rides_out_sim_throttling() -> None:
    clock = FakeClock()
    sim = make(clock=clock, throttle_rate=1.0, throttle_burst=2)
    caller = CloudCaller(
        TokenBucket(1000, 1000, clock=clock),  # a generous local limiter: the cloud pushes back
        RetryPolicy(base_delay=0.01, max_delay=0.05),
        clock=clock,
        sleep=clock.sleep,
        rng=random.Random(0),
    )
    nic = primary(sim)
    start = clock.now
    for _ in range(6):
        caller.call("assign_ips", lambda: sim.assign_ips(nic.id, 1))
    assert clock.now - start >= 4.0  # 2 burst tokens - 1 for primary(), then one a second
    clock.now += 1.0
    assert len(primary(sim).ips) == 6


def test_injected_faults_fire_in_order_then_stop_and_change_nothing() -> None:
    sim = make()
    nic = primary(sim)
    boom = TemporaryCloudError("assign_ips", "InternalError")
    full = SubnetFull("assign_ips", "InsufficientFreeAddressesInSubnet")
    sim.inject("assign_ips", boom, times=2)
    sim.inject("assign_ips", full)
    raised: list[CloudError] = []
    for _ in range(3):
        with pytest.raises(CloudError) as info:
            sim.assign_ips(nic.id, 1)
        raised.append(info.value)
    assert raised == [boom, boom, full]
    assert sim.list_interfaces() == [nic]
    sim.attach_interface(1, 0)  # other operations are not affected
    assert len(sim.assign_ips(nic.id, 1)) == 1
    assert sim.calls["assign_ips"] == 4


@pytest.mark.parametrize(
    ("args", "param"),
    [
        pytest.param(("assign_ip", TemporaryCloudError("x", "y"), 1), "operation", id="unknown-op"),
        pytest.param(("assign_ips", ValueError("x"), 1), "error", id="not-a-cloud-error"),
        pytest.param(("assign_ips", TemporaryCloudError("x", "y"), 0), "times", id="zero-times"),
    ],
)
def test_inject_validates(args: tuple[str, Any, int], param: str) -> None:
    with pytest.raises(ValueError, match=param):
        make().inject(*args)


def test_calls_are_counted_per_operation() -> None:
    sim = make()
    scenario(sim)
    assert sim.calls == {
        "attach_interface": 3,
        "assign_ips": 1,
        "assign_prefixes": 1,
        "release_ips": 1,
        "release_prefixes": 1,
        "detach_interface": 1,
        "list_interfaces": 1,
    }


# --- concurrency and random operation sequences --------------------------------------------------


def test_concurrent_callers_never_share_an_address() -> None:
    sim = make(instance_type="c5.18xlarge", subnet_cidr="10.0.0.0/22")
    enis = [sim.attach_interface(0, 0) for _ in range(4)]
    errors: list[BaseException] = []

    def churn(eni: InterfaceView, seed: int) -> None:
        rng = random.Random(seed)
        try:
            for _ in range(60):
                got = sim.assign_ips(eni.id, rng.randint(1, 5))
                sim.release_ips(eni.id, rng.sample(got, rng.randint(0, len(got))))
                if rng.random() < 0.3:
                    held = next(v for v in sim.list_interfaces() if v.id == eni.id).ips
                    sim.release_ips(eni.id, list(held))
        except LimitExceeded:
            pass
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=churn, args=(eni, n)) for n, eni in enumerate(enis)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert_consistent(sim, sim.list_interfaces())


EXPECTED = (LimitExceeded, SubnetFull)


class SimCloudMachine(RuleBasedStateMachine):
    """Random calls against a small subnet; every answer and every view must stay consistent."""

    def __init__(self) -> None:
        super().__init__()
        self.sim = make()
        self.model: dict[str, tuple[set[str], set[str]]] = {}

    @initialize(
        instance_type=st.sampled_from(["t3.small", "t3.medium", "m5.large", "t2.medium", "azure-nic-256"]),
        prefixlen=st.sampled_from([25, 26, 27]),
    )
    def start(self, instance_type: str, prefixlen: int) -> None:
        self.sim = make(instance_type=instance_type, subnet_cidr=f"10.2.3.0/{prefixlen}")
        self.model = {v.id: (set(v.ips), set(v.prefixes)) for v in self.sim.list_interfaces()}

    def _pick(self, data: st.DataObject) -> str:
        ids = [*sorted(self.model), "eni-000000000000"]
        return data.draw(st.sampled_from(ids))

    @rule(ips=st.integers(0, 6), prefixes=st.integers(0, 2))
    def attach(self, ips: int, prefixes: int) -> None:
        try:
            view = self.sim.attach_interface(ips, prefixes)
        except EXPECTED:
            return
        assert (len(view.ips), len(view.prefixes)) == (ips, prefixes)
        self.model[view.id] = (set(view.ips), set(view.prefixes))

    @rule(data=st.data())
    def detach(self, data: st.DataObject) -> None:
        iface = self._pick(data)
        try:
            self.sim.detach_interface(InterfaceId(iface))
        except PermanentCloudError:
            assert iface == self._primary_id()
            return
        self.model.pop(iface, None)

    @rule(data=st.data(), count=st.integers(0, 6))
    def assign_ips(self, data: st.DataObject, count: int) -> None:
        iface = self._pick(data)
        try:
            got = self.sim.assign_ips(InterfaceId(iface), count)
        except InterfaceNotFound:
            assert iface not in self.model
            return
        except EXPECTED:
            return
        assert len(got) == count
        assert not set(got) & self.model[iface][0]
        self.model[iface][0].update(got)

    @rule(data=st.data(), count=st.integers(0, 2))
    def assign_prefixes(self, data: st.DataObject, count: int) -> None:
        iface = self._pick(data)
        try:
            got = self.sim.assign_prefixes(InterfaceId(iface), count)
        except InterfaceNotFound:
            assert iface not in self.model
            return
        except EXPECTED:
            return
        assert len(got) == count
        self.model[iface][1].update(got)

    @rule(data=st.data())
    def release_ips(self, data: st.DataObject) -> None:
        iface = self._pick(data)
        held = sorted(self.model.get(iface, (set(), set()))[0])
        drop = data.draw(st.lists(st.sampled_from(held), unique=True)) if held else []
        others = [ip for other, (ips, _) in self.model.items() if other != iface for ip in ips]
        # someone else's address, a reserved one and a foreign one: none may be released
        self.sim.release_ips(InterfaceId(iface), [*drop, *others, "10.2.3.1", "172.16.0.1"])
        if iface in self.model:
            self.model[iface][0].difference_update(drop)

    @rule(data=st.data())
    def release_prefixes(self, data: st.DataObject) -> None:
        iface = self._pick(data)
        held = sorted(self.model.get(iface, (set(), set()))[1])
        drop = data.draw(st.lists(st.sampled_from(held), unique=True)) if held else []
        others = [p for other, (_, prefixes) in self.model.items() if other != iface for p in prefixes]
        self.sim.release_prefixes(InterfaceId(iface), [*drop, *others])
        if iface in self.model:
            self.model[iface][1].difference_update(drop)

    def _primary_id(self) -> str:
        return primary(self.sim).id

    @invariant()
    def the_cloud_agrees_with_every_answer_it_gave(self) -> None:
        views = self.sim.list_interfaces()
        assert {v.id: (set(v.ips), set(v.prefixes)) for v in views} == self.model
        assert_consistent(self.sim, views)


SimCloudMachine.TestCase.settings = settings(
    max_examples=100,
    stateful_step_count=25,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
test_random_operation_sequences = SimCloudMachine.TestCase
