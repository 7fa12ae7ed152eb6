"""The simulator's foundations: the event engine's clock and ordering, the subnet allocator, the
account's buckets and the API calls behind each operation, and policies parsed as the daemon does."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator
from typing import Any, NamedTuple

import pytest

from ipamd.cloud.budget import operation_cost
from ipamd.errors import ConfigError
from ipamd.sim.cloud import CLASSES, OPERATIONS, AccountBucket, CloudApi
from ipamd.sim.engine import Engine
from ipamd.sim.settings import DEFAULT_POLICIES, parse_policy, split_settings
from ipamd.sim.subnet import RESERVED_ADDRESSES, Subnet, SubnetExhausted, Usage, ip_text

# --- engine ---------------------------------------------------------------------------------------


class Ev(NamedTuple):
    t: float
    name: str


def _engine(events: list[Ev], log: list[tuple[float, str]]) -> Engine[Ev]:
    return Engine(iter(events), lambda e: log.append((e.t, e.name)))


def test_engine_runs_callbacks_in_time_order_and_fifo_at_equal_times() -> None:
    log: list[tuple[float, str]] = []
    engine = _engine([], log)

    def note(now: float, name: Any) -> None:
        log.append((now, name))

    engine.at(5.0, note, "c")
    engine.at(1.0, note, "a")
    engine.at(5.0, note, "d")
    engine.at(1.0, note, "b")
    engine.run(10.0)
    assert log == [(1.0, "a"), (1.0, "b"), (5.0, "c"), (5.0, "d")]
    assert engine.now == 10.0


def test_engine_merges_the_stream_first_at_equal_times() -> None:
    log: list[tuple[float, str]] = []
    engine = _engine([Ev(1.0, "s1"), Ev(2.0, "s2"), Ev(2.0, "s2b"), Ev(4.0, "s4")], log)
    engine.at(2.0, lambda now, _: log.append((now, "h2")))
    engine.at(3.0, lambda now, _: engine.at(now, lambda n, _: log.append((n, "h3-again"))))
    engine.run(10.0)
    assert log == [(1.0, "s1"), (2.0, "s2"), (2.0, "s2b"), (2.0, "h2"), (3.0, "h3-again"), (4.0, "s4")]


def test_engine_runs_in_steps_and_never_goes_back() -> None:
    log: list[tuple[float, str]] = []
    engine = _engine([Ev(1.0, "a"), Ev(3.0, "b")], log)
    engine.run(2.0)
    assert log == [(1.0, "a")] and engine.now == 2.0
    with pytest.raises(ValueError, match=r"clock is at 2\.0"):
        engine.at(1.5, lambda now, _: None)
    engine.run(5.0)
    assert log == [(1.0, "a"), (3.0, "b")]
    assert engine.events == 2


def test_engine_refuses_a_stream_out_of_order() -> None:
    engine = _engine([Ev(2.0, "a"), Ev(1.0, "b")], [])
    with pytest.raises(ValueError, match="out of order"):
        engine.run(5.0)


def test_engine_reports_progress_lazily() -> None:
    def stream() -> Iterator[Ev]:
        for i in range(20_000):
            yield Ev(float(i), "x")

    seen: list[float] = []
    engine = Engine(stream(), lambda e: None)
    engine.run(30_000.0, seen.append)
    assert seen and seen == sorted(seen) and len(seen) == 20_000 // 8192


# --- subnet ---------------------------------------------------------------------------------------


def test_subnet_reserves_five_addresses_and_packs_ips() -> None:
    subnet = Subnet("10.0.0.0/24")
    assert subnet.capacity == 256 - RESERVED_ADDRESSES == 251
    ips = [ip_text(v) for v in subnet.take_ips(3, now=1.0)]
    assert ips == ["10.0.0.4", "10.0.0.5", "10.0.0.6"]  # .0-.3 reserved
    assert subnet.free_blocks == 16 - 2  # the first and the last /28 hold reserved addresses
    everything = subnet.take_ips(subnet.free, now=2.0)
    assert "10.0.0.255" not in {ip_text(v) for v in everything}  # the broadcast address
    assert subnet.free == 0 and subnet.peak_used == 251 and subnet.peak_used_at == 2.0
    with pytest.raises(SubnetExhausted):
        subnet.take_ips(1, now=3.0)


def test_subnet_prefixes_need_whole_free_blocks() -> None:
    subnet = Subnet("10.0.0.0/26")  # 4 blocks: the first and last hold reserved addresses
    assert subnet.free_blocks == 2
    a, b = subnet.take_prefixes(2, now=0.0)
    assert {ip_text(a), ip_text(b)} == {"10.0.0.16", "10.0.0.32"}
    assert subnet.free > 0  # addresses are left ...
    with pytest.raises(SubnetExhausted, match="prefixes"):
        subnet.take_prefixes(1, now=0.0)  # ... but no whole block
    subnet.give_prefixes([a])
    ips = subnet.take_ips(3, now=0.0)  # IPs fill the reserved blocks first: the freed block stays whole
    assert all(not a <= v < a + 16 for v in ips)
    assert subnet.take_prefixes(1, now=0.0) == [a]


def test_subnet_gives_back_and_refuses_what_it_did_not_hand_out() -> None:
    usage = Usage()
    one, two = Subnet("10.0.0.0/28", usage=usage), Subnet("10.0.1.0/28", usage=usage)
    taken = one.take_ips(4, now=1.0) + two.take_ips(5, now=2.0)
    assert usage.used == 9 and usage.peak == 9 and usage.peak_at == 2.0
    one.give_ips(taken[:4])
    assert usage.used == 5 and usage.peak == 9 and one.used == 0
    with pytest.raises(ValueError, match="not in use"):
        one.give_ips(taken[:1])
    with pytest.raises(ValueError, match="/28 or larger"):
        Subnet("10.0.0.0/29")


def test_subnet_addresses_are_inside_and_unique_under_churn() -> None:
    subnet = Subnet("10.0.0.0/22")
    net = ipaddress.IPv4Network(subnet.cidr)
    held: set[int] = set()
    prefixes: list[int] = []
    for round_ in range(50):
        new = subnet.take_ips(7, now=float(round_))
        assert held.isdisjoint(new)
        held.update(new)
        prefixes += subnet.take_prefixes(1, now=float(round_))
        back = sorted(held)[round_ % 3 :: 4]
        subnet.give_ips(back)
        held.difference_update(back)
        if round_ % 5 == 0:
            subnet.give_prefixes([prefixes.pop(0)])
    blocks = {p // 16 for p in prefixes}
    assert all(v // 16 not in blocks for v in held)
    assert all(ipaddress.IPv4Address(v) in net for v in held)
    assert subnet.used == len(held) + 16 * len(prefixes)


# --- the cloud's buckets and calls ----------------------------------------------------------------


def test_account_bucket_capacity_refill_and_throttle() -> None:
    bucket = AccountBucket(100, 5)
    assert all(bucket.take(0.0) for _ in range(100))
    assert not bucket.take(0.0)
    assert bucket.next_token_in(0.0) == pytest.approx(0.2)
    assert not bucket.take(0.1)
    assert bucket.take(0.2)
    assert bucket.take(1000.0) and bucket.tokens == 99  # refills up to the capacity only


def test_cloud_charges_calls_in_order_and_throttles_at_the_empty_bucket() -> None:
    import random

    api = CloudApi("aws", rng=random.Random(0))
    attach = OPERATIONS["aws"]["attach_interface"]
    api.buckets["attach"].tokens = 0.0
    assert api.admit(attach, 0.0) == (False, None)  # EC2 sends no Retry-After
    made = [
        "DescribeNetworkInterfaces",
        "CreateNetworkInterface",
        "AttachNetworkInterface",
        "DeleteNetworkInterface",
    ]
    assert api.calls == dict.fromkeys(made, 1)  # the created ENI is deleted again
    assert api.throttled == {"AttachNetworkInterface": 1}

    azure = CloudApi("azure", rng=random.Random(0))
    azure.buckets["write"].tokens = 0.0
    admitted, retry_after = azure.admit(OPERATIONS["azure"]["assign_ips"], 0.0)
    assert not admitted and retry_after == 1.0  # ARM: seconds until its bucket has a token (10/s)


@pytest.mark.parametrize("provider", ["aws", "azure"])
def test_operations_cost_what_the_daemon_budgets_them(provider: str) -> None:
    """One place per fact: the calls simulated per operation are the ones ipamd.cloud.budget counts."""
    for name, operation in OPERATIONS[provider].items():
        assert operation.cost() == dict(operation_cost(provider, name)), name
        assert all(cls in CLASSES[provider] for _, cls in operation.calls)


# --- policies -------------------------------------------------------------------------------------


def test_split_settings_keeps_a_budget_whole() -> None:
    assert split_settings("WARM_IP_TARGET=5,CLOUD_API_BUDGET=assign=4,interface=2,MAX_PODS=20") == {
        "WARM_IP_TARGET": "5",
        "CLOUD_API_BUDGET": "assign=4,interface=2",
        "MAX_PODS": "20",
    }
    with pytest.raises(ConfigError, match="NAME=VALUE"):
        split_settings("warm_ip_target=5")
    with pytest.raises(ConfigError, match="given once"):
        split_settings("WARM_IP_TARGET=5,WARM_IP_TARGET=6")


def test_policies_are_parsed_by_the_daemons_settings() -> None:
    eni, ip5, minimum, prefixes, azure, adaptive = (parse_policy(p) for p in DEFAULT_POLICIES)
    assert adaptive.settings.pool_mode == "adaptive" and adaptive.name == "POOL_MODE=adaptive"
    assert eni.targets.warm_eni == 1 and not eni.targets.warm_ip_mode and eni.name == "WARM_ENI_TARGET=1"
    assert ip5.targets.warm_ip == 5
    assert (minimum.targets.minimum_ip, minimum.targets.warm_ip) == (10, 2)
    assert prefixes.targets.prefix_delegation and prefixes.targets.warm_prefix == 1
    # azure's defaults apply where not set: CLOUD_API_RATE 1, batches of 16, ADD_WAIT_TIMEOUT 30
    assert azure.provider == "azure" and azure.targets.ip_batch == 16 and azure.targets.warm_ip == 8
    assert azure.settings.cloud_api_rate == 1 and azure.settings.add_wait_timeout == 30
    assert azure.targets.minimum_ip == 0  # a pool-mode variable was set: azure's MINIMUM_IP default is not
    budget = parse_policy("CLOUD_API_BUDGET=assign=4,describe=16")
    assert dict(budget.budget) == {"assign": 4.0, "describe": 16.0}
    assert parse_policy("POOL_MODE=adaptive").settings.pool_mode == "adaptive"


@pytest.mark.parametrize(
    ("text", "variable", "says"),
    [
        ("WARM_IP_TARGT=5", "WARM_IP_TARGT", "not a cloud-cni setting"),
        ("WARM_IP_TARGET=-1", "WARM_IP_TARGET", "an integer >= 0"),
        ("METRICS_BIND=off", "METRICS_BIND", "not modelled by the simulator"),
        ("CLOUD_PROVIDER=sim", "CLOUD_PROVIDER", "aws or azure"),
        ("CLOUD_API_BUDGET=write=5", "CLOUD_API_BUDGET", "classes of CLOUD_PROVIDER=aws"),
        ("POOL_MODE=smart", "POOL_MODE", "static, adaptive"),
        ("CLOUD_PROVIDER=azure,ENABLE_PREFIX_DELEGATION=true", "ENABLE_PREFIX_DELEGATION", "false on azure"),
    ],
    ids=["typo", "negative", "not-modelled", "sim-provider", "budget-class", "pool-mode", "azure-prefixes"],
)
def test_bad_policies_are_the_daemons_config_errors(text: str, variable: str, says: str) -> None:
    with pytest.raises(ConfigError, match=says) as info:
        parse_policy(text)
    assert info.value.variable == variable
