"""The IMDSv2 client against a fake IMDS built from moto's live state (tests/fakes/imds.py).

Nothing here may reach 169.254.169.254 or any non-loopback address: the autouse guard below fails a
test that did not point AWS_EC2_METADATA_SERVICE_ENDPOINT at a loopback fake, and refuses any
non-loopback connect while the test runs.
"""

from __future__ import annotations

import http.client
import ipaddress
import os
import socket
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import pytest

from ipamd.cloud.aws.imds import DEFAULT_ENDPOINT, ENDPOINT_ENV, ImdsClient
from ipamd.errors import ConfigError, PermanentCloudError, TemporaryCloudError, ThrottledError
from tests.fakes.imds import FakeImds, fake_imds_fixture  # noqa: F401 - registers fixture fake_imds
from tests.fakes.moto_ec2 import Node, free_port

pytestmark = pytest.mark.integration


class ManualClock:
    """Moves only when advanced or slept on; shared by the client and the fake."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def dead_imds(monkeypatch: pytest.MonkeyPatch) -> str:
    """An IMDS endpoint on a loopback port nobody listens on."""
    url = f"http://127.0.0.1:{free_port()}"
    monkeypatch.setenv(ENDPOINT_ENV, url)
    return url


@pytest.fixture(autouse=True)
def _loopback_only(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name in ("fake_imds", "dead_imds"):
        if name in request.fixturenames:
            request.getfixturevalue(name)
    endpoint = os.environ.get(ENDPOINT_ENV)
    assert endpoint, f"a test must set {ENDPOINT_ENV} (use the fake_imds or dead_imds fixture)"
    assert ipaddress.ip_address(urlsplit(endpoint).hostname or "").is_loopback, endpoint

    real_connect = socket.socket.connect

    def connect(sock: socket.socket, address: Any) -> None:
        if sock.family in (socket.AF_INET, socket.AF_INET6):
            host = ipaddress.ip_address(address[0])
            assert host.is_loopback, f"test tried to connect to non-loopback {address!r}"
        real_connect(sock, address)

    monkeypatch.setattr(socket.socket, "connect", connect)
    yield


@pytest.fixture
def clock(fake_imds: FakeImds) -> ManualClock:
    c = ManualClock()
    fake_imds.clock = c
    return c


def client(clock: ManualClock | None = None, **kwargs: Any) -> ImdsClient:
    if clock is not None:
        kwargs.update(clock=clock, sleep=clock.sleep)
    else:
        kwargs.setdefault("sleep", lambda _: None)
    return ImdsClient(**kwargs)


def mac_path(node: Node, key: str) -> str:
    return f"network/interfaces/macs/{node.mac}/{key}"


def attach_eni(node: Node, device_index: int, secondary: int) -> dict[str, Any]:
    ec2 = node.moto.client()
    eni = ec2.create_network_interface(
        SubnetId=node.subnet_id, Groups=[node.security_group_id], SecondaryPrivateIpAddressCount=secondary
    )["NetworkInterface"]
    ec2.attach_network_interface(
        NetworkInterfaceId=eni["NetworkInterfaceId"], InstanceId=node.instance_id, DeviceIndex=device_index
    )
    return dict(eni)


# -- the node as moto knows it ----------------------------------------------------------------


def test_node_matches_moto(fake_imds: FakeImds, ec2_node: Node) -> None:
    meta = client().node()  # endpoint from the environment, set by the fixture

    assert (meta.instance_id, meta.instance_type) == (ec2_node.instance_id, ec2_node.instance_type)
    assert (meta.availability_zone, meta.region) == ("us-east-1a", "us-east-1")
    assert (meta.primary_ip, meta.primary_mac) == (ec2_node.primary_ip, ec2_node.mac)
    [primary] = meta.interfaces
    assert meta.primary_interface == primary
    assert primary.interface_id == ec2_node.primary_eni
    assert (primary.device_number, primary.network_card) == (0, 0)
    assert (primary.subnet_id, primary.subnet_cidr) == (ec2_node.subnet_id, ec2_node.subnet_cidr)
    assert (primary.vpc_id, primary.vpc_cidrs) == (ec2_node.vpc_id, (ec2_node.vpc_cidr,))
    assert primary.security_group_ids == (ec2_node.security_group_id,)
    assert primary.local_ipv4s == (ec2_node.primary_ip,)
    assert primary.ipv4_prefixes == ()


def test_attached_eni_and_new_ips_appear(fake_imds: FakeImds, ec2_node: Node) -> None:
    eni = attach_eni(ec2_node, device_index=1, secondary=2)
    ec2_node.moto.client().assign_private_ip_addresses(
        NetworkInterfaceId=ec2_node.primary_eni, SecondaryPrivateIpAddressCount=1
    )

    interfaces = client().interfaces()

    in_moto = ec2_node.interfaces()
    assert [i.interface_id for i in interfaces] == [ec2_node.primary_eni, eni["NetworkInterfaceId"]]
    assert [i.device_number for i in interfaces] == [0, 1]
    for got, want in zip(interfaces, in_moto, strict=True):
        addresses = sorted(want["PrivateIpAddresses"], key=lambda a: not a["Primary"])
        assert got.local_ipv4s == tuple(a["PrivateIpAddress"] for a in addresses)
        assert got.mac == want["MacAddress"]
    assert len(interfaces[0].local_ipv4s) == 2
    assert len(interfaces[1].local_ipv4s) == 3


def test_stale_for_hides_new_eni_and_ips_until_imds_catches_up(
    fake_imds: FakeImds, ec2_node: Node, clock: ManualClock
) -> None:
    fake_imds.stale_for = 5.0
    imds = client(clock)
    eni = attach_eni(ec2_node, device_index=1, secondary=1)
    ec2_node.moto.client().assign_private_ip_addresses(
        NetworkInterfaceId=ec2_node.primary_eni, SecondaryPrivateIpAddressCount=1
    )

    first = imds.interfaces()
    clock.advance(4.9)
    still = imds.interfaces()
    clock.advance(0.1)
    caught_up = imds.interfaces()

    assert [i.interface_id for i in first] == [ec2_node.primary_eni]
    assert first[0].local_ipv4s == (ec2_node.primary_ip,)
    assert still == first
    assert [i.interface_id for i in caught_up] == [ec2_node.primary_eni, eni["NetworkInterfaceId"]]
    assert [len(i.local_ipv4s) for i in caught_up] == [2, 2]


# -- endpoint and configuration ---------------------------------------------------------------


def test_endpoint_from_argument_then_environment_then_default(
    dead_imds: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert ImdsClient("http://127.0.0.1:1/").endpoint == "http://127.0.0.1:1"
    assert ImdsClient().endpoint == dead_imds
    monkeypatch.delenv(ENDPOINT_ENV)
    assert ImdsClient().endpoint == DEFAULT_ENDPOINT == "http://169.254.169.254"  # no request made


@pytest.mark.parametrize(
    "kwargs",
    [
        {"endpoint": "ftp://127.0.0.1"},
        {"endpoint": "127.0.0.1:80"},
        {"endpoint": "http://127.0.0.1:notaport"},
        {"token_ttl": 0},
        {"token_ttl": 21601},
        {"attempts": 0},
        {"timeout": 0},
    ],
    ids=["scheme", "no-scheme", "port", "ttl-0", "ttl-too-long", "attempts-0", "timeout-0"],
)
def test_bad_arguments_are_refused(dead_imds: str, kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        ImdsClient(**kwargs)


def test_bad_endpoint_variable_names_the_variable(dead_imds: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENDPOINT_ENV, "169.254.169.254")
    with pytest.raises(ConfigError, match=ENDPOINT_ENV):
        ImdsClient()


@pytest.mark.parametrize("path", ["../user-data", "/instance-id", "instance-id?x=1", "a//b"])
def test_get_refuses_paths_outside_meta_data(dead_imds: str, path: str) -> None:
    with pytest.raises(ValueError, match="metadata path"):
        ImdsClient().get(path)


# -- the token protocol -----------------------------------------------------------------------


def raw(fake: FakeImds, method: str, path: str, headers: dict[str, str]) -> tuple[int, str]:
    url = urlsplit(fake.url)
    conn = http.client.HTTPConnection(url.hostname or "", url.port, timeout=5)
    try:
        conn.request(method, path, headers=headers)
        response = conn.getresponse()
        return response.status, response.read().decode()
    finally:
        conn.close()


def test_fake_requires_a_token(fake_imds: FakeImds, ec2_node: Node) -> None:
    ttl = "X-aws-ec2-metadata-token-ttl-seconds"
    assert raw(fake_imds, "GET", "/latest/meta-data/instance-id", {})[0] == 401
    bad = {"X-aws-ec2-metadata-token": "not-a-token"}
    assert raw(fake_imds, "GET", "/latest/meta-data/instance-id", bad)[0] == 401
    for value in ("0", "21601", "abc"):
        assert raw(fake_imds, "PUT", "/latest/api/token", {ttl: value})[0] == 400
    assert raw(fake_imds, "PUT", "/latest/api/token", {})[0] == 400
    assert raw(fake_imds, "PUT", "/latest/api/token", {ttl: "60", "X-Forwarded-For": "10.0.0.9"})[0] == 403
    status, token = raw(fake_imds, "PUT", "/latest/api/token", {ttl: "60"})
    assert status == 200
    good = {"X-aws-ec2-metadata-token": token}
    assert raw(fake_imds, "GET", "/latest/meta-data/instance-id", good) == (200, ec2_node.instance_id)
    assert raw(fake_imds, "GET", "/latest/meta-data/network/interfaces/macs/", good) == (
        200,
        ec2_node.mac + "/",
    )


def test_token_is_cached_and_refreshed_before_it_expires(fake_imds: FakeImds, clock: ManualClock) -> None:
    imds = client(clock, token_ttl=60)  # refreshed 6 s (a tenth of the TTL) before expiry

    imds.get("instance-id")
    clock.advance(53)
    imds.get("instance-type")
    assert fake_imds.count("PUT") == 1
    clock.advance(2)
    imds.get("instance-id")
    clock.advance(61)
    imds.get("instance-id")

    assert fake_imds.count("PUT") == 3
    assert [status for _, _, status in fake_imds.log] == [200] * 7  # never a 401
    assert clock.sleeps == []


def test_token_is_fetched_again_on_401(fake_imds: FakeImds, clock: ManualClock, ec2_node: Node) -> None:
    imds = client(clock)
    imds.get("instance-id")
    fake_imds.revoke_tokens()  # IMDS restarted: the cached token is unknown now

    assert imds.get("instance-id") == ec2_node.instance_id
    assert [(m, s) for m, _, s in fake_imds.log] == [
        ("PUT", 200),
        ("GET", 200),
        ("GET", 401),
        ("PUT", 200),
        ("GET", 200),
    ]
    assert clock.sleeps == []  # refreshed at once, no backoff


def test_tokens_never_reach_logs_or_errors(
    fake_imds: FakeImds, clock: ManualClock, capsys: pytest.CaptureFixture[str]
) -> None:
    imds = client(clock, attempts=2)
    imds.get("instance-id")
    fake_imds.fail_next(5, 503)
    with pytest.raises(
        TemporaryCloudError, match=r"^imds: instance-type: GET .*instance-type: HTTP 503"
    ) as caught:
        imds.get("instance-type")

    tokens = fake_imds.tokens()
    out = capsys.readouterr()
    assert tokens
    for token in tokens:
        assert token not in str(caught.value)
        assert token not in repr(imds)
        assert token not in out.out + out.err


# -- failures ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "retry_after", "sleeps"),
    [
        (500, None, [0.1, 0.2]),
        (0, None, [0.1, 0.2]),
        (429, 1.5, [1.5, 1.5]),
    ],
    ids=["500", "connection-dropped", "429-retry-after"],
)
def test_transient_failures_are_retried(
    fake_imds: FakeImds,
    clock: ManualClock,
    status: int,
    retry_after: float | None,
    sleeps: list[float],
) -> None:
    fake_imds.fail_next(2, status, retry_after=retry_after)

    assert client(clock).get("instance-id") == fake_imds.node.instance_id
    assert clock.sleeps == sleeps


@pytest.mark.parametrize(
    ("status", "error"), [(500, TemporaryCloudError), (429, ThrottledError)], ids=["500", "429"]
)
def test_persistent_failure_gives_up_after_attempts(
    fake_imds: FakeImds, clock: ManualClock, status: int, error: type[TemporaryCloudError]
) -> None:
    fake_imds.fail_next(100, status)

    with pytest.raises(
        error, match=rf"^imds: instance-id: PUT /latest/api/token: HTTP {status}.*after 3 attempts"
    ) as caught:
        client(clock, attempts=3).node()

    assert type(caught.value) is error
    assert caught.value.operation == "imds"
    assert fake_imds.requests == 3
    assert clock.sleeps == [0.1, 0.2]


def test_token_refused_is_permanent(fake_imds: FakeImds, clock: ManualClock) -> None:
    fake_imds.fail_next(1, 403)  # IMDS disabled on the instance (http-endpoint disabled)
    with pytest.raises(PermanentCloudError, match="HTTP 403"):
        client(clock).get("instance-id")
    assert fake_imds.requests == 1
    assert clock.sleeps == []


def test_unreachable_endpoint_is_temporary(dead_imds: str) -> None:
    sleeps: list[float] = []
    with pytest.raises(TemporaryCloudError, match="ConnectionRefusedError") as caught:
        ImdsClient(attempts=2, sleep=sleeps.append).get("instance-id")
    assert isinstance(caught.value.__cause__, ConnectionRefusedError)
    assert sleeps == [0.1]


def test_timeout_is_temporary_and_hints_at_the_hop_limit(fake_imds: FakeImds) -> None:
    fake_imds.delay = 0.3
    with pytest.raises(TemporaryCloudError, match=r"timed out after 0.05 s.*HttpPutResponseHopLimit"):
        client(timeout=0.05, attempts=2).get("instance-id")


MALFORMED = [
    # (path, served value, the part the error must quote)
    ("instance-id", "x-1234", "x-1234"),
    ("local-ipv4", "10.0.0.300", "10.0.0.300"),
    ("network/interfaces/macs/", "not-a-mac/", "not-a-mac"),
    ("{mac}/device-number", "one", "one"),
    ("{mac}/subnet-ipv4-cidr-block", "10.0.0.1/20", "10.0.0.1/20"),
    ("{mac}/vpc-ipv4-cidr-blocks", "10.0.0.0/16\nbogus", "bogus"),
    ("{mac}/security-group-ids", "default", "default"),
    ("{mac}/local-ipv4s", "192.168.0.1", "192.168.0.1"),
]


@pytest.mark.parametrize(
    ("path", "value", "quoted"), MALFORMED, ids=[f"{p.removeprefix('{mac}/')}={v!r}" for p, v, _ in MALFORMED]
)
def test_malformed_value_is_permanent_and_named(
    fake_imds: FakeImds, ec2_node: Node, path: str, value: str, quoted: str
) -> None:
    path = path.replace("{mac}/", f"network/interfaces/macs/{ec2_node.mac}/")
    fake_imds.override(path, value)
    sleeps: list[float] = []

    with pytest.raises(PermanentCloudError) as caught:
        ImdsClient(sleep=sleeps.append).node()

    assert str(caught.value).startswith(f"imds: {path}: {quoted!r} ")
    assert sleeps == []


@pytest.mark.parametrize(
    ("overrides", "expect"),
    [
        (
            {"placement/region": None, "{mac}/network-card": None},
            {"region": "us-east-1", "network_card": 0, "ipv4_prefixes": ()},
        ),
        (
            {"placement/region": None, "placement/availability-zone": "us-west-2-lax-1a"},
            {"region": "us-west-2", "availability_zone": "us-west-2-lax-1a"},
        ),
        (
            {"{mac}/network-card": "1", "{mac}/ipv4-prefix": "10.0.1.16/28\n10.0.1.32/28"},
            {"network_card": 1, "ipv4_prefixes": ("10.0.1.16/28", "10.0.1.32/28")},
        ),
    ],
    ids=["absent", "local-zone", "present"],
)
def test_optional_values(
    fake_imds: FakeImds, ec2_node: Node, overrides: dict[str, str | None], expect: dict[str, Any]
) -> None:
    for path, value in overrides.items():
        fake_imds.override(path.replace("{mac}/", f"network/interfaces/macs/{ec2_node.mac}/"), value)

    meta = ImdsClient().node()

    for field, want in expect.items():
        target = meta if hasattr(meta, field) else meta.primary_interface
        assert getattr(target, field) == want, field


def test_missing_identity_is_permanent(fake_imds: FakeImds) -> None:
    fake_imds.override("instance-id", None)
    with pytest.raises(PermanentCloudError, match="instance-id: not found"):
        ImdsClient().node()


def test_interface_vanishing_mid_read_is_temporary(fake_imds: FakeImds, ec2_node: Node) -> None:
    fake_imds.override(mac_path(ec2_node, "interface-id"), None)
    with pytest.raises(TemporaryCloudError, match=r"interface-id: not found.*detached"):
        ImdsClient().interfaces()
