"""ipamd.migrate.awsvpc: aws-vpc-cni's checkpoint read, validated and adopted; its host side named.

Rows are written as aws-vpc-cni writes them (pkg/ipamd/datastore/data_store.go in
aws/amazon-vpc-cni-k8s: compact JSON, fields in struct order). Interface ``eni-n`` has device index
n, its primary address 10.1.0.n, and is primary for n = 0, as on AWS (network card 0).
"""

from __future__ import annotations

import copy
import dataclasses
import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ipamd import checkpoint
from ipamd.errors import CheckpointError, RequestError
from ipamd.migrate import awsvpc
from ipamd.migrate.awsvpc import (
    ANY_TABLE,
    MAIN_TABLE,
    UNKNOWN_INTERFACE,
    AwsCheckpointError,
    AwsCheckpointNotFound,
    HostSide,
    Route,
    Rule,
    adopt,
    host_side,
    legacy_veth_name,
    load,
    parse,
)
from ipamd.pool.datastore import AddressState, Datastore
from ipamd.pool.model import (
    AttachmentKey,
    ContainerID,
    IfName,
    InterfaceId,
    InterfaceView,
    PodRef,
)
from tests.fakes import awsvpc as awsvpc_file

NETWORK = "cloud-cni"
T0 = 1_700_000_000.0
CID = "6a3c8e1f" * 8  # a 64-hex sandbox ID, as containerd makes them


def row(
    ip: str = "10.0.0.10",
    *,
    container: str = CID,
    stamp: int | None = 1_700_000_000_123_456_789,
    **fields: Any,
) -> dict[str, Any]:
    """One allocation as current aws-vpc-cni writes it (metadata fields omitempty)."""
    return awsvpc_file.row(ip, container, stamp=stamp, **fields)


document = awsvpc_file.document


def encode(doc: object) -> bytes:
    return json.dumps(doc, separators=(",", ":")).encode()


def iface(n: int, ips: Sequence[str] = (), prefixes: Sequence[str] = ()) -> InterfaceView:
    return InterfaceView(
        id=InterfaceId(f"eni-{n}"),
        device_index=n,
        primary=n == 0,
        subnet_id="subnet-1",
        subnet_cidr="10.0.0.0/16",
        primary_ip=f"10.1.0.{n}",
        ips=tuple(ips),
        prefixes=tuple(prefixes),
        mac=f"02:00:00:00:00:{n:02x}",
    )


# --- the host veth name --------------------------------------------------------------------------

# The examples of aws/amazon-vpc-cni-k8s pkg/networkutils/names_test.go (TestGeneratePodHostVethName,
# TestGeneratePodHostVethNameSuffix); the algorithm is stated in /work/shared/reference/aws-vpc-cni.md
# line 32 ("host veth = prefix + sha1("<ns>.<pod>") hex[:11]") and is GeneratePodHostVethName in
# pkg/networkutils/names.go. The index > 0 rows apply that function's "<name>.<index>" by hand:
# printf 'kube-system.coredns-57ff979f67-qqbdh.1' | sha1sum -> ceb4ba3e890a8d08...
VETH_NAMES = [
    pytest.param("eni", "kube-system", "coredns-57ff979f67-qqbdh", 0, "enib5faff8a083", id="eni-prefix"),
    pytest.param("vlan", "kube-system", "coredns-57ff979f67-qqbdh", 0, "vlanb5faff8a083", id="vlan-prefix"),
    pytest.param("eni", "kube-system", "coredns-57ff979f67-8ns9b", 0, "eni9571956a6cc", id="coredns-8ns9b"),
    pytest.param("eni", "default", "sample-pod", 0, "enicc21c2d7785", id="default-sample-pod"),
    pytest.param("eni", "kube-system", "coredns-57ff979f67-qqbdh", 1, "eniceb4ba3e890", id="index-1"),
    pytest.param("eni", "kube-system", "coredns-57ff979f67-qqbdh", 2, "eni8574824b815", id="index-2"),
]


@pytest.mark.parametrize(("prefix", "namespace", "name", "index", "expected"), VETH_NAMES)
def test_legacy_veth_name_is_aws_vpc_cnis(
    prefix: str, namespace: str, name: str, index: int, expected: str
) -> None:
    assert legacy_veth_name(namespace, name, prefix=prefix, index=index) == expected
    assert len(expected) <= 15  # IFNAMSIZ - 1


@pytest.mark.parametrize(
    ("prefix", "index"),
    [("", 0), ("abcde", 0), ("en-", 0), ("eni", -1)],
    ids=["empty-prefix", "prefix-too-long", "prefix-punctuation", "negative-index"],
)
def test_legacy_veth_name_refuses(prefix: str, index: int) -> None:
    with pytest.raises(ValueError, match=r"prefix|index"):
        legacy_veth_name("default", "web-0", prefix=prefix, index=index)


# --- valid checkpoints ---------------------------------------------------------------------------

VALID = [
    pytest.param(
        document(row()),
        [("aws-cni", CID, "eth0", "10.0.0.10", 1_700_000_000.123456789, "default", "web-0", 1)],
        id="current-row",
    ),
    pytest.param(
        {
            "version": "vpc-cni-ipam/1",
            "allocations": [
                {"networkName": "aws-cni", "containerID": "c1", "ifName": "eth0", "ipv4": "10.0.0.11"}
            ],
        },
        [("aws-cni", "c1", "eth0", "10.0.0.11", 0.0, "", "", 1)],
        id="older-row-without-timestamp-or-metadata",
    ),
    pytest.param(
        document(row(count=None), row("10.0.0.12", container="c2", count=3, name="db-1")),
        [
            ("aws-cni", CID, "eth0", "10.0.0.10", 1_700_000_000.123456789, "default", "web-0", 1),
            ("aws-cni", "c2", "eth0", "10.0.0.12", 1_700_000_000.123456789, "default", "db-1", 3),
        ],
        id="interfaces-count-omitted-and-multi-nic",
    ),
    pytest.param(
        document(dict(row(namespace="", name="", count=None), ipv6="")),
        [("aws-cni", CID, "eth0", "10.0.0.10", 1_700_000_000.123456789, "", "", 1)],
        id="empty-metadata-and-empty-ipv6",
    ),
    pytest.param(
        document(
            row(network="_migrated-from-cri", ifname="unknown", stamp=0, namespace="", name="", count=None)
        ),
        [("_migrated-from-cri", CID, "unknown", "10.0.0.10", 0.0, "", "", 1)],
        id="backfilled-from-cri",
    ),
    pytest.param(document(row(stamp=-6795364578871345152)), None, id="go-zero-time"),
    pytest.param({"version": "vpc-cni-ipam/1", "allocations": None}, [], id="allocations-null"),
    pytest.param({"version": "vpc-cni-ipam/1", "allocations": []}, [], id="allocations-empty"),
    pytest.param(document(row("100.64.3.4")), None, id="custom-networking-cgnat-address"),
]


@pytest.mark.parametrize(("doc", "expected"), VALID)
def test_parse_accepts(doc: dict[str, Any], expected: list[tuple[object, ...]] | None) -> None:
    parsed = parse(encode(doc))
    if expected is None:
        assert len(parsed.allocations) == len(doc["allocations"])
        return
    got = [
        (
            a.network,
            a.container_id,
            a.ifname,
            a.ipv4,
            a.allocated_at,
            a.pod_namespace,
            a.pod_name,
            a.interfaces_count,
        )
        for a in parsed.allocations
    ]
    assert got == expected
    assert [a.index for a in parsed.allocations] == list(range(len(expected)))


# --- invalid checkpoints: each names its field and what is allowed --------------------------------


def _with(field: str, value: object, base: dict[str, Any] | None = None) -> dict[str, Any]:
    """document(row()) with allocations[0].<field> set (or removed when value is ...)."""
    doc = copy.deepcopy(base or document(row()))
    target = doc["allocations"][0]
    *parents, last = field.split(".")
    for part in parents:
        target = target[part]
    if value is ...:
        del target[last]
    else:
        target[last] = value
    return doc


INVALID_BYTES = [
    pytest.param(b"", "checkpoint: the file is empty", id="empty"),
    pytest.param(b" \n", "checkpoint: the file is empty", id="whitespace"),
    pytest.param(b'{"version": "vpc-cni-ipam/1", "allocations": [', "not valid JSON", id="truncated"),
    pytest.param(b"\xff\xfe{}", "not UTF-8", id="not-utf8"),
    pytest.param(b'{"version":"vpc-cni-ipam/1","allocations":[],"x":NaN}', "NaN is not valid JSON", id="nan"),
    pytest.param(b"[]", "checkpoint: [] is not a JSON object", id="top-level-list"),
    pytest.param(
        b'{"version":"vpc-cni-ipam/1","version":"vpc-cni-ipam/1","allocations":[]}',
        "checkpoint: field 'version' appears more than once",
        id="duplicate-top-field",
    ),
]


@pytest.mark.parametrize(("data", "message"), INVALID_BYTES)
def test_parse_refuses_bytes(data: bytes, message: str) -> None:
    with pytest.raises(AwsCheckpointError, match=re.escape(message)):
        parse(data)


INVALID: list[tuple[dict[str, Any], str]] = [
    # the version decides the schema: an unknown one is refused before anything else is read
    ({"allocations": []}, "version: missing; expected 'vpc-cni-ipam/1'"),
    ({"version": "vpc-cni-ipam/2", "allocations": []}, "version: 'vpc-cni-ipam/2' is not 'vpc-cni-ipam/1'"),
    ({"version": 1, "allocations": 7}, "version: 1 is not 'vpc-cni-ipam/1'"),
    ({"version": "vpc-cni-ipam/1"}, "allocations: missing; expected a list of allocation objects"),
    ({"version": "vpc-cni-ipam/1", "allocations": {}}, "allocations: {} is not a list"),
    ({"version": "vpc-cni-ipam/1", "allocations": [], "cooling": []}, "checkpoint: unknown field 'cooling'"),
    (
        {"version": "vpc-cni-ipam/1", "allocations": ["10.0.0.1"]},
        "allocations[0]: '10.0.0.1' is not an object",
    ),
    (
        _with("ip", "10.0.0.9"),
        "allocations[0]: unknown field 'ip'; allowed: networkName, containerID, ifName",
    ),
    (_with("networkName", ...), "allocations[0].networkName: missing; expected a string matching"),
    (_with("networkName", ""), "allocations[0].networkName: '' is not a string matching"),
    (_with("networkName", "aws cni"), "allocations[0].networkName: 'aws cni' is not a string matching"),
    (_with("networkName", 5), "allocations[0].networkName: 5 is not a string matching"),
    (_with("containerID", ...), "allocations[0].containerID: missing; expected a string matching"),
    (_with("containerID", "-abc"), "allocations[0].containerID: '-abc' is not a string matching"),
    (_with("containerID", "a" * 1025), "allocations[0].containerID: 'aaaa"),
    (_with("ifName", ...), "allocations[0].ifName: missing; expected an interface name"),
    (_with("ifName", ""), "allocations[0].ifName: '' is not an interface name"),
    (
        _with("ifName", "eth0123456789012"),
        "allocations[0].ifName: 'eth0123456789012' is not an interface name",
    ),
    (_with("ifName", "eth/0"), "allocations[0].ifName: 'eth/0' is not an interface name"),
    (_with("ifName", ".."), "allocations[0].ifName: '..' is not an interface name"),
    (_with("ipv4", ...), "allocations[0].ipv4: missing; expected an IPv4 address in dotted-quad form"),
    (_with("ipv4", 167772170), "allocations[0].ipv4: 167772170 is not an IPv4 address"),
    (_with("ipv4", "10.0.0.010"), "allocations[0].ipv4: '10.0.0.010' is not an IPv4 address"),
    (_with("ipv4", "10.0.0.10/32"), "allocations[0].ipv4: '10.0.0.10/32' is not an IPv4 address"),
    (_with("ipv4", "2600:1f14::5"), "allocations[0].ipv4: '2600:1f14::5' is not an IPv4 address"),
    (_with("ipv4", "0.0.0.0"), "allocations[0].ipv4: '0.0.0.0' is not an IPv4 address"),
    (_with("ipv4", "127.0.0.1"), "allocations[0].ipv4: '127.0.0.1' is not an IPv4 address"),
    (_with("ipv4", "169.254.1.1"), "allocations[0].ipv4: '169.254.1.1' is not an IPv4 address"),
    (_with("ipv4", "224.0.0.5"), "allocations[0].ipv4: '224.0.0.5' is not an IPv4 address"),
    (_with("ipv4", "255.255.255.255"), "allocations[0].ipv4: '255.255.255.255' is not an IPv4 address"),
    (
        _with("ipv6", "2600:1f14::5"),
        "allocations[0].ipv6: '2600:1f14::5': an IPv6 pod; this daemon pools IPv4",
    ),
    (_with("ipv6", 6), "allocations[0].ipv6: 6 is not a string"),
    (_with("allocationTimestamp", 1.7e18), "allocations[0].allocationTimestamp: 1.7e+18 is not an integer"),
    (_with("allocationTimestamp", "1700000000"), "allocations[0].allocationTimestamp: '1700000000' is not"),
    (_with("allocationTimestamp", True), "allocations[0].allocationTimestamp: True is not an integer"),
    (_with("allocationTimestamp", 1 << 63), "allocations[0].allocationTimestamp: 9223372036854775808 is not"),
    (_with("metadata", []), "allocations[0].metadata: [] is not an object with fields k8sPodNamespace"),
    (_with("metadata.podUID", "u"), "allocations[0].metadata: unknown field 'podUID'"),
    (
        _with("metadata.k8sPodNamespace", "Default"),
        "allocations[0].metadata.k8sPodNamespace: 'Default' is not",
    ),
    (_with("metadata.k8sPodNamespace", "a" * 64), "allocations[0].metadata.k8sPodNamespace: 'aaaa"),
    (_with("metadata.k8sPodNamespace", 3), "allocations[0].metadata.k8sPodNamespace: 3 is not a Kubernetes"),
    (
        _with("metadata.k8sPodName", "web_0"),
        "allocations[0].metadata.k8sPodName: 'web_0' is not a Kubernetes pod",
    ),
    (_with("metadata.k8sPodName", "web-0."), "allocations[0].metadata.k8sPodName: 'web-0.' is not"),
    (_with("metadata.k8sPodName", ...), "allocations[0].metadata.k8sPodName: missing while k8sPodNamespace"),
    (
        _with("metadata.k8sPodNamespace", ...),
        "allocations[0].metadata.k8sPodNamespace: missing while k8sPodName",
    ),
    (
        _with("metadata.interfacesCount", 0),
        "allocations[0].metadata.interfacesCount: 0 is not an integer from 1",
    ),
    (_with("metadata.interfacesCount", -1), "allocations[0].metadata.interfacesCount: -1 is not"),
    (_with("metadata.interfacesCount", "2"), "allocations[0].metadata.interfacesCount: '2' is not"),
    (_with("metadata.interfacesCount", True), "allocations[0].metadata.interfacesCount: True is not"),
    (_with("metadata.interfacesCount", 65), "allocations[0].metadata.interfacesCount: 65 is not"),
    # duplicates name both rows
    (
        document(row(), row("10.0.0.11", container="c2"), row("10.0.0.10", container="c3")),
        "allocations[2].ipv4: '10.0.0.10' is already at allocations[0].ipv4; an address belongs to one pod",
    ),
    (
        document(row(), row("10.0.0.11", container="other"), row("10.0.0.12")),
        f"allocations[2]: (networkName='aws-cni', containerID='{CID}', ifName='eth0') is already at "
        "allocations[0]; an attachment holds one address",
    ),
]


def _case_id(case: tuple[dict[str, Any], str]) -> str:
    return case[1].split(":")[0] + ":" + case[1].split(":")[1][:24].strip()


@pytest.mark.parametrize(("doc", "message"), INVALID, ids=[_case_id(c) for c in INVALID])
def test_parse_refuses(doc: dict[str, Any], message: str) -> None:
    with pytest.raises(AwsCheckpointError) as caught:
        parse(encode(doc))
    assert str(caught.value).startswith(message), str(caught.value)


def test_parse_refuses_the_first_bad_row_of_many() -> None:
    doc = document(row(), row("10.0.0.11", container="c2"), row("10.0.0.300", container="c3"))
    with pytest.raises(AwsCheckpointError, match=r"^allocations\[2\]\.ipv4: '10\.0\.0\.300'"):
        parse(encode(doc))


def test_errors_are_checkpoint_errors() -> None:
    assert issubclass(AwsCheckpointError, CheckpointError)
    assert issubclass(AwsCheckpointNotFound, AwsCheckpointError)


# --- load ----------------------------------------------------------------------------------------


def test_load_reads_a_file(tmp_path: Path) -> None:
    path = tmp_path / "ipam.json"
    path.write_bytes(encode(document(row(), row("10.0.0.11", container="c2"))))
    assert [a.ipv4 for a in load(path).allocations] == ["10.0.0.10", "10.0.0.11"]


def test_load_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "aws-node" / "ipam.json"
    with pytest.raises(AwsCheckpointNotFound, match=rf"^{re.escape(str(path))}: no such file"):
        load(path)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "the file is empty"),
        (b'{"version":"vpc-cni-ipam/1","allocations":[{"networkName"', "not valid JSON"),
        (encode(_with("ipv4", "10.0.0.x")), r"allocations\[0\]\.ipv4: '10\.0\.0\.x' is not"),
    ],
    ids=["empty", "corrupt", "bad-field"],
)
def test_load_names_the_file(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "ipam.json"
    path.write_bytes(content)
    with pytest.raises(AwsCheckpointError, match=rf"^{re.escape(str(path))}: .*{message}") as caught:
        load(path)
    assert not isinstance(caught.value, AwsCheckpointNotFound)


def test_load_unreadable(tmp_path: Path) -> None:
    with pytest.raises(
        AwsCheckpointError, match=rf"^{re.escape(str(tmp_path))}: cannot be read \(Is a directory\)"
    ):
        load(tmp_path)


def test_load_refuses_a_huge_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(awsvpc, "MAX_SIZE", 64)
    path = tmp_path / "ipam.json"
    path.write_bytes(encode(document(row(), row("10.0.0.11", container="c2"))))
    with pytest.raises(AwsCheckpointError, match="larger than 64 bytes"):
        load(path)


# --- adopt ---------------------------------------------------------------------------------------

NODE = (
    iface(0, ["10.0.0.10", "10.0.0.11", "10.0.0.12"]),
    iface(1, ["10.0.1.20", "10.0.1.21"]),
    iface(2, prefixes=["10.0.2.32/28"]),
)


def _node_checkpoint() -> awsvpc.AwsCheckpoint:
    return parse(
        encode(
            document(
                row("10.0.0.10", container="c-primary", name="web-0"),
                row("10.0.1.21", container="c-secondary", name="web-1", stamp=1_700_000_100_000_000_000),
                row("10.0.2.37", container="c-prefix", namespace="kube-system", name="coredns-1"),
                row("10.0.9.9", container="c-gone", name="web-9"),
            )
        )
    )


def test_adopt_keys_each_pod_as_the_runtime_will() -> None:
    adoption = adopt(_node_checkpoint(), NODE, network=NETWORK)
    got = [
        (p.assignment.key, p.assignment.ip, p.assignment.interface_id, p.assignment.pod, p.held)
        for p in adoption.pods
    ]
    assert got == [
        (
            AttachmentKey(NETWORK, ContainerID("c-primary"), IfName("eth0")),
            "10.0.0.10",
            "eni-0",
            PodRef("default", "web-0"),
            True,
        ),
        (
            AttachmentKey(NETWORK, ContainerID("c-secondary"), IfName("eth0")),
            "10.0.1.21",
            "eni-1",
            PodRef("default", "web-1"),
            True,
        ),
        (
            AttachmentKey(NETWORK, ContainerID("c-prefix"), IfName("eth0")),
            "10.0.2.37",
            "eni-2",
            PodRef("kube-system", "coredns-1"),
            True,
        ),
        (
            AttachmentKey(NETWORK, ContainerID("c-gone"), IfName("eth0")),
            "10.0.9.9",
            UNKNOWN_INTERFACE,
            PodRef("default", "web-9"),
            False,
        ),
    ]
    assert adoption.pods[1].assignment.assigned_at == 1_700_000_100.0
    assert all(p.assignment.netns == "" for p in adoption.pods)  # aws-vpc-cni does not record it
    assert [p.source.container_id for p in adoption.unheld] == ["c-gone"]
    assert adoption.notes == (
        "allocations[3]: 10.0.9.9 (default/web-9) is on no interface the cloud lists for this node: "
        "adopted as an orphaned assignment (its DEL finds it; no other pod gets the address)",
    )
    assert sorted(a.key for a in adoption.snapshot.assignments) == [
        a.key for a in adoption.snapshot.assignments
    ]


def test_adopted_pods_hold_their_addresses_in_the_datastore() -> None:
    """The daemon's start: interfaces synced, then the adoption restored on top (ipamd.daemon)."""
    store = Datastore(cooldown=30.0)
    store.sync_interfaces(NODE, now=T0)
    adoption = adopt(_node_checkpoint(), store.interfaces(), network=NETWORK)
    report = store.restore(adoption.snapshot, now=T0)
    assert report.restored == 3
    assert [a.ip for a in report.orphaned] == ["10.0.9.9"]  # reported, not dropped
    for pod in adoption.pods:
        assert store.get(pod.assignment.key) == pod.assignment
    for ip in ("10.0.0.10", "10.0.1.21", "10.0.2.37"):
        assert store.address_state(ip, now=T0) is AddressState.ASSIGNED
    stats = store.stats(now=T0)
    assert (stats.assigned, stats.total) == (3, 3 + 2 + 16)
    # a new pod never gets an adopted address
    taken = {
        store.assign(
            AttachmentKey(NETWORK, ContainerID(f"new-{i}"), IfName("eth0")),
            PodRef(),
            netns="/var/run/netns/x",
            now=T0,
        ).ip
        for i in range(stats.available)
    }
    assert not taken & {"10.0.0.10", "10.0.1.21", "10.0.2.37", "10.0.9.9"}


def test_adoption_is_a_valid_cloud_cni_checkpoint() -> None:
    """The first commit after adoption writes the store's snapshot: it must encode and decode."""
    store = Datastore(cooldown=30.0)
    store.sync_interfaces(NODE, now=T0)
    store.restore(adopt(_node_checkpoint(), store.interfaces(), network=NETWORK).snapshot, now=T0)
    data = checkpoint.encode(store.snapshot(now=T0), generation=1, written_at=T0)
    assert checkpoint.decode(data).snapshot == store.snapshot(now=T0)


def test_adopt_keys_backfilled_rows_by_eth0() -> None:
    parsed = parse(
        encode(
            document(
                row(
                    network="_migrated-from-cri",
                    ifname="unknown",
                    stamp=None,
                    namespace="",
                    name="",
                    count=None,
                )
            )
        )
    )
    adoption = adopt(parsed, NODE, network=NETWORK)
    assert adoption.pods[0].assignment.key == AttachmentKey(NETWORK, ContainerID(CID), IfName("eth0"))
    assert adoption.pods[0].assignment.pod == PodRef()
    assert adoption.notes == (
        "allocations[0]: a row aws-vpc-cni backfilled from the CRI (networkName '_migrated-from-cri', "
        "ifName 'unknown'): adopted with ifName 'eth0'",
        "allocations[0]: 10.0.0.10 names no pod (written by an older aws-vpc-cni): its host veth cannot "
        "be named, its route and rules are found by address",
    )


@pytest.mark.parametrize(
    "second",
    [
        row("10.0.0.11", network="other-net"),
        row("10.0.0.11", network="_migrated-from-cri", ifname="unknown"),
    ],
    ids=["two-networks", "backfilled-and-current"],
)
def test_adopt_refuses_two_rows_becoming_one_attachment(second: dict[str, Any]) -> None:
    parsed = parse(encode(document(row(), second)))
    with pytest.raises(AwsCheckpointError, match=r"^allocations\[1\]: adopted as .* like allocations\[0\]"):
        adopt(parsed, NODE, network=NETWORK)


def test_adopt_notes_multi_nic_pods() -> None:
    adoption = adopt(parse(encode(document(row(count=2)))), NODE, network=NETWORK)
    assert adoption.notes == (
        "allocations[0]: default/web-0 has 2 interfaces (multi-NIC); only this one, on network card 0, "
        "is adopted: the others stay as aws-vpc-cni left them",
    )


@pytest.mark.parametrize("network", ["", "cloud cni", "-x"], ids=["empty", "space", "leading-dash"])
def test_adopt_refuses_a_bad_network_name(network: str) -> None:
    with pytest.raises(ValueError, match="is not a CNI network name"):
        adopt(parse(encode(document(row()))), NODE, network=network)


def test_adopt_of_nothing() -> None:
    adoption = adopt(parse(b'{"version":"vpc-cni-ipam/1","allocations":null}'), NODE, network=NETWORK)
    assert (adoption.pods, adoption.snapshot.assignments, adoption.notes) == ((), (), ())


def test_adopt_leaves_out_pods_whose_veth_is_gone() -> None:
    """aws-vpc-cni's own rule at restart: a pod's veth suffix on no link means the pod was deleted
    while no daemon ran (its DEL went to a plugin that could not reach ipamd)."""
    parsed = parse(
        encode(
            document(
                row("10.0.0.10", container="c-0", name="web-0"),
                row("10.0.1.21", container="c-1", name="web-1"),
                row("10.0.2.37", container="c-2", name="web-2"),
                row("10.0.0.11", container="c-3", namespace="", name="", count=None),
            )
        )
    )
    links = [
        "lo",
        "ens5",
        legacy_veth_name("default", "web-0"),
        legacy_veth_name("default", "web-1", prefix="cali"),
    ]
    adoption = adopt(parsed, NODE, network=NETWORK, host_links=links)
    assert [p.source.container_id for p in adoption.pods] == ["c-0", "c-1", "c-3"]
    assert [r.container_id for r in adoption.gone] == ["c-2"]
    assert "10.0.2.37" not in {a.ip for a in adoption.snapshot.assignments}
    assert adoption.notes[0] == (
        "allocations[2]: 10.0.2.37 (default/web-2): the pod's host veth is gone (deleted while no daemon "
        "ran): not adopted, its address not assigned"
    )
    assert [p.source.container_id for p in adopt(parsed, NODE, network=NETWORK).pods] == [
        "c-0",
        "c-1",
        "c-2",
        "c-3",
    ]


def test_adopt_cools_every_other_held_address() -> None:
    """aws-vpc-cni keeps no cool-downs: an address it freed just before the switch must not go to a
    new pod at once, so every held address no adopted pod has starts cooling."""
    adoption = adopt(_node_checkpoint(), NODE, network=NETWORK, cool_until=T0 + 30.0)
    cooling = dict(adoption.snapshot.cooling)
    assert set(cooling.values()) == {T0 + 30.0}
    assert set(cooling) == (
        {"10.0.0.11", "10.0.0.12", "10.0.1.20"} | {f"10.0.2.{32 + i}" for i in range(16)}
    ) - {"10.0.2.37"}
    store = Datastore(cooldown=30.0)
    store.sync_interfaces(NODE, now=T0)
    report = store.restore(adoption.snapshot, now=T0)
    assert (report.restored, report.cooling) == (3, 18)
    assert (store.stats(now=T0).available, store.stats(now=T0 + 31.0).available) == (0, 18)
    checkpoint.decode(checkpoint.encode(store.snapshot(now=T0), generation=1, written_at=T0))


# --- host side -----------------------------------------------------------------------------------

HOST_SIDE = [
    pytest.param(
        "10.0.0.10",
        {},
        HostSide(
            ip="10.0.0.10",
            host_veth="eni0d7763386da",
            route=Route("10.0.0.10/32", "eni0d7763386da"),
            rules=(Rule(512, MAIN_TABLE, dst="10.0.0.10/32"),),
            interface_id=InterfaceId("eni-0"),
            table=None,
        ),
        id="primary-interface-no-from-rule",
    ),
    pytest.param(
        "10.0.1.21",
        {},
        HostSide(
            ip="10.0.1.21",
            host_veth="eni0d7763386da",
            route=Route("10.0.1.21/32", "eni0d7763386da"),
            rules=(Rule(512, MAIN_TABLE, dst="10.0.1.21/32"), Rule(1536, 2, src="10.0.1.21/32")),
            interface_id=InterfaceId("eni-1"),
            table=2,
        ),
        id="secondary-interface-table-device-plus-one",
    ),
    pytest.param(
        "10.0.2.47",
        {},
        HostSide(
            ip="10.0.2.47",
            host_veth="eni0d7763386da",
            route=Route("10.0.2.47/32", "eni0d7763386da"),
            rules=(Rule(512, MAIN_TABLE, dst="10.0.2.47/32"), Rule(1536, 3, src="10.0.2.47/32")),
            interface_id=InterfaceId("eni-2"),
            table=3,
        ),
        id="prefix-address",
    ),
    pytest.param(
        "10.0.9.9",
        {},
        HostSide(
            ip="10.0.9.9",
            host_veth="eni0d7763386da",
            route=Route("10.0.9.9/32", "eni0d7763386da"),
            rules=(Rule(512, MAIN_TABLE, dst="10.0.9.9/32"), Rule(1536, ANY_TABLE, src="10.0.9.9/32")),
            interface_id=None,
            table=None,
        ),
        id="unheld-from-rule-in-any-table",
    ),
    pytest.param(
        "10.0.1.20",
        {"namespace": "", "name": "", "count": None},
        HostSide(
            ip="10.0.1.20",
            host_veth="",
            route=Route("10.0.1.20/32", ""),
            rules=(Rule(512, MAIN_TABLE, dst="10.0.1.20/32"), Rule(1536, 2, src="10.0.1.20/32")),
            interface_id=InterfaceId("eni-1"),
            table=2,
        ),
        id="row-without-pod",
    ),
    pytest.param(
        "10.0.0.11",
        {"namespace": "kube-system", "name": "coredns-57ff979f67-qqbdh", "count": 3},
        HostSide(
            ip="10.0.0.11",
            host_veth="enib5faff8a083",
            route=Route("10.0.0.11/32", "enib5faff8a083"),
            rules=(Rule(512, MAIN_TABLE, dst="10.0.0.11/32"),),
            interface_id=InterfaceId("eni-0"),
            table=None,
            other_veths=("eniceb4ba3e890", "eni8574824b815"),
        ),
        id="multi-nic-pod",
    ),
]


@pytest.mark.parametrize(("ip", "fields", "expected"), HOST_SIDE)
def test_host_side(ip: str, fields: dict[str, Any], expected: HostSide) -> None:
    allocation = parse(encode(document(row(ip, **fields)))).allocations[0]
    assert host_side(allocation, NODE) == expected


def test_host_side_with_a_custom_veth_prefix() -> None:
    allocation = parse(encode(document(row()))).allocations[0]
    side = host_side(allocation, NODE, veth_prefix="abc")
    assert (side.host_veth, side.route.device) == ("abc0d7763386da", "abc0d7763386da")


def test_host_side_matches_cloud_cnis_own_datapath() -> None:
    """aws-vpc-cni's priorities and tables are the Linux datapath's: adopted rules need no change."""
    from ipamd.datapath.linux import netlink
    from ipamd.datapath.linux.datapath import table_of

    assert (awsvpc.PRIO_TO_POD, awsvpc.PRIO_FROM_POD, MAIN_TABLE) == (
        netlink.PRIO_TO_POD,
        netlink.PRIO_FROM_POD,
        netlink.MAIN,
    )
    for n in range(8):
        view = iface(n, [f"10.0.{n}.5"])
        allocation = parse(encode(document(row(f"10.0.{n}.5")))).allocations[0]
        assert host_side(allocation, [view]).table == table_of(view)


# --- agreement with the rpc layer's validation of the same values ---------------------------------


def _accepted(field: str, value: str) -> bool:
    try:
        parse(encode(_with(field, value)))
    except AwsCheckpointError:
        return False
    return True


def _rpc_accepts(check: Any, value: str) -> bool:
    try:
        check(value)
    except RequestError:
        return False
    return True


ID_TEXT = st.text(alphabet="ab09_.-/ :Zé\t", max_size=18)


@settings(max_examples=300, deadline=None)
@given(value=ID_TEXT)
def test_ids_agree_with_the_rpc_layer(value: str) -> None:
    """A row is adopted only under a key a DEL can carry: the same rules as ipamd.rpc.validate."""
    from ipamd.rpc import validate

    assert _accepted("containerID", value) == _rpc_accepts(validate.container_id, value)
    assert _accepted("networkName", value) == _rpc_accepts(validate.network_name, value)
    assert _accepted("ifName", value) == _rpc_accepts(validate.ifname, value)


# --- property: every allocation adopted exactly once, no address twice ---------------------------

_PREFIX = "10.0.200.16/28"
_CANDIDATES = [f"10.0.{i // 200}.{i % 200 + 1}" for i in range(600)] + [
    f"10.0.200.{16 + i}" for i in range(16)
]


@st.composite
def nodes(draw: st.DrawFn) -> tuple[list[dict[str, Any]], list[InterfaceView], set[str]]:
    """aws-vpc-cni rows with distinct addresses and keys, and the interfaces the cloud lists: each
    row's address on one of them (as an IP, or in eni-2's prefix) or on none."""
    ips = draw(st.lists(st.sampled_from(_CANDIDATES), unique=True, max_size=40))
    keys = draw(
        st.lists(
            st.tuples(
                st.sampled_from(["aws-cni", "other"]),
                st.sampled_from(["c1", "c2", "c3", CID]),
                st.sampled_from(["eth0", "eth1", "net1"]),
            ),
            unique=True,
            min_size=len(ips),
            max_size=len(ips),
        )
    )
    rows: list[dict[str, Any]] = []
    held: dict[int, list[str]] = {0: [], 1: [], 2: []}
    in_prefix = False
    for i, (ip, (network, container, ifname)) in enumerate(zip(ips, keys, strict=True)):
        if ip.startswith("10.0.200."):
            in_prefix = in_prefix or draw(st.booleans())
        else:
            holder = draw(st.sampled_from([0, 1, 2, None]))
            if holder is not None:
                held[holder].append(ip)
        rows.append(
            row(
                ip,
                network=network,
                container=container,
                ifname=ifname,
                name=f"pod-{i}",
                stamp=draw(st.integers(min_value=0, max_value=2_000_000_000 * 10**9)),
                count=draw(st.sampled_from([None, 1])),
            )
        )
    views = [
        iface(0, held[0]),
        iface(1, held[1]),
        iface(2, held[2], prefixes=[_PREFIX] if in_prefix else []),
    ]
    on_interfaces = set(held[0] + held[1] + held[2]) | (
        {ip for ip in ips if ip.startswith("10.0.200.")} if in_prefix else set()
    )
    return rows, views, on_interfaces


def _distinct_keys(rows: list[dict[str, Any]]) -> bool:
    """Rows of two networks for one (container, ifName) would become one attachment: refused."""
    keys = [(r["containerID"], r["ifName"]) for r in rows]
    return len(set(keys)) == len(keys)


@settings(max_examples=200, deadline=None)
@given(node=nodes(), data=st.data())
def test_every_allocation_adopted_exactly_once(
    node: tuple[list[dict[str, Any]], list[InterfaceView], set[str]], data: st.DataObject
) -> None:
    rows, views, on_interfaces = node
    parsed = parse(encode(document(*rows)))
    assert [a.ipv4 for a in parsed.allocations] == [r["ipv4"] for r in rows]
    alive = data.draw(
        st.none() | st.sets(st.sampled_from([r["metadata"]["k8sPodName"] for r in rows] or ["x"]))
    )
    links = None if alive is None else [legacy_veth_name("default", name) for name in alive]
    cool_until = data.draw(st.none() | st.just(T0 + 30.0))
    if not _distinct_keys(rows):
        with pytest.raises(AwsCheckpointError, match="two rows cannot become one attachment"):
            adopt(parsed, views, network=NETWORK, host_links=links, cool_until=cool_until)
        return
    adoption = adopt(parsed, views, network=NETWORK, host_links=links, cool_until=cool_until)

    # every row once: adopted, or gone (its pod's veth on no link); in order
    kept = [a for a in parsed.allocations if alive is None or a.pod_name in alive]
    assert [p.source for p in adoption.pods] == kept
    assert list(adoption.gone) == [a for a in parsed.allocations if a not in kept]
    # one snapshot entry per adopted pod; no key and no address twice, in use or cooling
    assert sorted(adoption.snapshot.assignments, key=lambda a: a.ip) == sorted(
        (p.assignment for p in adoption.pods), key=lambda a: a.ip
    )
    assert len({a.key for a in adoption.snapshot.assignments}) == len(kept)
    in_use = {a.ip for a in adoption.snapshot.assignments}
    assert len(in_use) == len(kept)
    assert not in_use & {ip for ip, _ in adoption.snapshot.cooling}
    assert {p.assignment.ip for p in adoption.held} == {a.ipv4 for a in kept} & on_interfaces
    assert len(adoption.unheld) == len([n for n in adoption.notes if "is on no interface" in n])

    # restored on top of the listed interfaces: held ones assigned, the others reported as orphans
    store = Datastore(cooldown=30.0)
    store.sync_interfaces(views, now=T0)
    report = store.restore(adoption.snapshot, now=T0)
    assert report.restored == len(adoption.held)
    assert {a.key for a in report.orphaned} == {p.assignment.key for p in adoption.unheld}
    assert store.stats(now=T0).assigned == len(adoption.held)
    for pod in adoption.pods:
        assert store.get(pod.assignment.key) is not None
        assert store.find_by_ip(pod.assignment.ip) == store.get(pod.assignment.key)
    checkpoint.decode(checkpoint.encode(store.snapshot(now=T0), generation=1, written_at=T0))


@settings(max_examples=100, deadline=None)
@given(node=nodes(), data=st.data())
def test_an_address_twice_is_refused_naming_both_rows(
    node: tuple[list[dict[str, Any]], list[InterfaceView], set[str]], data: st.DataObject
) -> None:
    rows = node[0]
    if not rows:
        return
    first = data.draw(st.integers(min_value=0, max_value=len(rows) - 1))
    at = data.draw(st.integers(min_value=first + 1, max_value=len(rows)))
    copy_ = dict(rows[first], containerID="another-container", networkName="aws-cni")
    rows = [*rows[:at], copy_, *rows[at:]]
    with pytest.raises(AwsCheckpointError) as caught:
        parse(encode(document(*rows)))
    assert str(caught.value) == (
        f"allocations[{at}].ipv4: {rows[first]['ipv4']!r} is already at allocations[{first}].ipv4; "
        "an address belongs to one pod"
    )


def test_allocation_is_frozen() -> None:
    allocation = parse(encode(document(row()))).allocations[0]
    with pytest.raises(dataclasses.FrozenInstanceError):
        allocation.ipv4 = "10.0.0.99"  # type: ignore[misc]
