"""Request validation and the one mapping from daemon errors to gRPC status + CNI code."""

from __future__ import annotations

import grpc
import pytest

from ipamd import errors
from ipamd.requests import NO_DNS, PodDns, prev_result_ips
from ipamd.rpc import validate
from ipamd.rpc.errors import to_rpc_failure
from ipamd.rpc.pb import ipamd_pb2 as pb


@pytest.mark.parametrize(
    ("exc", "status", "code"),
    [
        (errors.RequestError("CNI_IFNAME", "bad"), grpc.StatusCode.INVALID_ARGUMENT, 4),
        (errors.RequestError("CNI_CONTAINERID", "bad"), grpc.StatusCode.INVALID_ARGUMENT, 4),
        (errors.RequestError("name", "bad"), grpc.StatusCode.INVALID_ARGUMENT, 7),
        (errors.RequestError("prevResult", "bad"), grpc.StatusCode.INVALID_ARGUMENT, 7),
        (errors.AllocationNotFound("gone"), grpc.StatusCode.NOT_FOUND, 3),
        (errors.NoAddressAvailable("empty"), grpc.StatusCode.RESOURCE_EXHAUSTED, 11),
        (errors.CheckpointError("disk"), grpc.StatusCode.UNAVAILABLE, 5),
        (errors.ThrottledError("assign_ips", "slow down"), grpc.StatusCode.UNAVAILABLE, 11),
        (errors.SubnetFull("assign_ips", "full"), grpc.StatusCode.FAILED_PRECONDITION, 11),
        (errors.PoolError("odd"), grpc.StatusCode.INTERNAL, 999),
        (RuntimeError("bug"), grpc.StatusCode.INTERNAL, 999),
    ],
    ids=lambda v: type(v).__name__ if isinstance(v, BaseException) else str(v),
)
def test_error_mapping(exc: BaseException, status: grpc.StatusCode, code: int) -> None:
    failure = to_rpc_failure(exc)
    assert (failure.status, failure.cni_code) == (status, code)
    assert failure.message


def _att(**kw: str) -> pb.Attachment:
    base = {"container_id": "abc123", "ifname": "eth0", "netns": "/var/run/netns/x", "network_name": "net"}
    base.update(kw)
    return pb.Attachment(**base)


@pytest.mark.parametrize(
    ("kw", "field"),
    [
        ({"container_id": ""}, "CNI_CONTAINERID"),
        ({"container_id": "_x"}, "CNI_CONTAINERID"),
        ({"container_id": "a b"}, "CNI_CONTAINERID"),
        ({"container_id": "a" * 1025}, "CNI_CONTAINERID"),
        ({"ifname": ""}, "CNI_IFNAME"),
        ({"ifname": "."}, "CNI_IFNAME"),
        ({"ifname": ".."}, "CNI_IFNAME"),
        ({"ifname": "a" * 16}, "CNI_IFNAME"),
        ({"ifname": "eth 0"}, "CNI_IFNAME"),
        ({"ifname": "eth:0"}, "CNI_IFNAME"),
        ({"ifname": "eth/0"}, "CNI_IFNAME"),
        ({"netns": ""}, "CNI_NETNS"),
        ({"netns": "netns/x"}, "CNI_NETNS"),
        ({"network_name": ""}, "name"),
        ({"network_name": "-net"}, "name"),
    ],
    ids=lambda v: str(v)[:30],
)
def test_invalid_attachment_names_the_field(kw: dict[str, str], field: str) -> None:
    with pytest.raises(errors.RequestError) as err:
        validate.attachment(_att(**kw), netns_required=True)
    assert err.value.field == field


def test_valid_attachment_and_optional_netns_on_del() -> None:
    call = validate.attachment(_att(ifname="a" * 15, container_id="A1_b.c-d"), netns_required=True)
    assert call.key.ifname == "a" * 15 and call.key.network == "net"
    assert validate.attachment(_att(netns=""), netns_required=False).netns == ""


def test_dns_is_validated_and_carried_on_the_call() -> None:
    msg = pb.Dns(
        servers=["10.96.0.10", "FD00::A"],
        searches=["svc.cluster.local", "cluster.local."],
        options=["ndots:5"],
    )
    dns = validate.dns(msg)
    assert dns == PodDns(("10.96.0.10", "fd00::a"), ("svc.cluster.local", "cluster.local."), ("ndots:5",))
    assert validate.dns(pb.Dns()) == NO_DNS
    assert validate.attachment(_att(), netns_required=True, dns=dns).dns == dns
    assert validate.attachment(_att(), netns_required=True).dns == NO_DNS


@pytest.mark.parametrize(
    ("kw", "field"),
    [
        ({"servers": ["10.0.0"]}, "servers"),
        ({"servers": ["dns.example"]}, "servers"),
        ({"servers": ["fe80::1%eth0"]}, "servers"),
        ({"servers": [""]}, "servers"),
        ({"servers": ["10.0.0.1"] * 33}, "servers"),
        ({"searches": [""]}, "searches"),
        ({"searches": ["a b"]}, "searches"),
        ({"searches": ["-a.local"]}, "searches"),
        ({"searches": ["x" * 64]}, "searches"),
        ({"searches": ["a." * 127]}, "searches"),
        ({"searches": ["a"] * 33}, "searches"),
        ({"options": [""]}, "options"),
        ({"options": ["a b"]}, "options"),
        ({"options": ["x\t"]}, "options"),
        ({"options": ["x" * 256]}, "options"),
        ({"options": ["ndots:5"] * 33}, "options"),
    ],
    ids=lambda v: str(v)[:30],
)
def test_invalid_dns_names_the_field(kw: dict[str, list[str]], field: str) -> None:
    with pytest.raises(errors.RequestError) as err:
        validate.dns(pb.Dns(**kw))
    assert err.value.field == f"runtimeConfig.dns.{field}"
    assert to_rpc_failure(err.value).cni_code == 7


@pytest.mark.parametrize(
    ("text", "required", "ok"),
    [
        ("", False, True),
        ("", True, False),
        ("{", False, False),
        ("[]", False, False),
        ('{"ips": [{"address": "10.0.0.5/32"}]}', True, True),
    ],
    ids=["absent", "absent-required", "broken", "not-object", "valid"],
)
def test_prev_result(text: str, required: bool, ok: bool) -> None:
    if ok:
        validate.prev_result(text, required=required)
    else:
        with pytest.raises(errors.RequestError) as err:
            validate.prev_result(text, required=required)
        assert err.value.field == "prevResult"


def test_prev_result_ips_ignores_junk() -> None:
    parsed = {"ips": [{"address": "10.0.0.5/32"}, {"address": 7}, "x", {"gateway": "1.1.1.1"}]}
    assert prev_result_ips(parsed) == ["10.0.0.5"]
    assert prev_result_ips({"ips": "nope"}) == []
    assert prev_result_ips(None) == []
