"""shim.cni: every line of reference/cni-spec.md's checklist, per supported version, as a table."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ipamd.errors import RequestError
from ipamd.rpc import validate
from ipamd.rpc.pb import ipamd_pb2 as gen
from shim import cni, pb

ROOT = Path(__file__).resolve().parents[2]
VERSIONS = list(cni.SUPPORTED_VERSIONS)
# What containerd's CRI sends (reference/lab-facts.md).
CRI_ARGS = ";".join(
    [
        "IgnoreUnknown=1",
        "K8S_POD_NAMESPACE=default",
        "K8S_POD_NAME=web-0",
        "K8S_POD_INFRA_CONTAINER_ID=4f6a",
        "K8S_POD_UID=9b1c-77",
    ]
)
NETNS = "/var/run/netns/cni-1234"


def conf(version: str = "1.0.0", **extra: Any) -> dict[str, Any]:
    return {"cniVersion": version, "name": "cloud-cni", "type": "cloud-cni", **extra}


def env(command: str, **overrides: str | None) -> dict[str, str]:
    base = {"CNI_COMMAND": command, "CNI_PATH": "/opt/cni/bin"}
    if command in ("ADD", "DEL", "CHECK"):
        base.update(CNI_CONTAINERID="4f6a0e", CNI_IFNAME="eth0", CNI_NETNS=NETNS, CNI_ARGS=CRI_ARGS)
    merged = {**base, **overrides}
    return {k: v for k, v in merged.items() if v is not None}


def parse(command: str, config: dict[str, Any] | bytes, **overrides: str | None) -> cni.Invocation:
    stdin = config if isinstance(config, bytes) else json.dumps(config).encode()
    return cni.parse(env(command, **overrides), stdin)


def fails(
    command: str, config: dict[str, Any] | bytes, code: int, needle: str = "", **overrides: str | None
) -> cni.CniError:
    with pytest.raises(cni.CniError) as info:
        parse(command, config, **overrides)
    err = info.value
    assert err.code == code, err
    assert needle in err.msg, err
    out = json.loads(cni.error_json(err))
    assert list(out) == ["cniVersion", "code", "msg", "details"]
    return err


def needs_version(command: str) -> str:
    return "1.1.0" if command in ("GC", "STATUS") else "1.0.0"


# ---- errors: {"cniVersion","code","msg","details"}; success in the input cniVersion -----------


@pytest.mark.parametrize("version", VERSIONS)
def test_error_json_has_the_four_keys_in_the_request_version(version: str) -> None:
    err = fails("ADD", conf(version), cni.INVALID_ENV, "CNI_CONTAINERID", CNI_CONTAINERID="-bad")
    assert err.cni_version == version
    assert json.loads(cni.error_json(err)) == {
        "cniVersion": version,
        "code": 4,
        "msg": "CNI_CONTAINERID='-bad' must match ^[a-zA-Z0-9][a-zA-Z0-9_.-]*$",
        "details": "",
    }
    assert json.loads(cni.error_json(err, "0.4.0"))["cniVersion"] == "0.4.0", "an explicit version wins"


@pytest.mark.parametrize(
    ("stdin", "expected"),
    [
        (b"{bad", cni.LATEST_VERSION),
        (b'{"cniVersion": 1}', cni.LATEST_VERSION),
        (b'{"cniVersion": "0.3.1"}', "0.3.1"),  # unsupported, still the request's: the error says why
        (b'{"cniVersion": "latest"}', cni.LATEST_VERSION),
        (json.dumps({"cniVersion": "1" * 40}).encode(), cni.LATEST_VERSION),
    ],
    ids=["undecodable", "not-a-string", "unsupported", "not-a-version", "too-long"],
)
def test_error_version_when_the_request_has_no_usable_one(stdin: bytes, expected: str) -> None:
    with pytest.raises(cni.CniError) as info:
        cni.parse(env("ADD"), stdin)
    assert json.loads(cni.error_json(info.value))["cniVersion"] == expected


def test_cni_error_carries_code_msg_details() -> None:
    err = cni.CniError(cni.TRY_AGAIN_LATER, "pool empty", "retry")
    assert (err.code, err.msg, err.details, err.cni_version) == (11, "pool empty", "retry", None)
    assert str(err) == "CNI error 11: pool empty (retry)"
    assert json.loads(cni.error_json(err, "1.0.0")) == {
        "cniVersion": "1.0.0",
        "code": 11,
        "msg": "pool empty",
        "details": "retry",
    }


def test_error_codes_are_the_spec_codes() -> None:
    assert (cni.UNKNOWN, cni.INCOMPATIBLE_VERSION, cni.UNSUPPORTED_FIELD, cni.UNKNOWN_CONTAINER) == (
        0,
        1,
        2,
        3,
    )
    assert (cni.INVALID_ENV, cni.IO_FAILURE, cni.DECODE_FAILED, cni.INVALID_CONFIG, cni.INVALID_NETNS) == (
        4,
        5,
        6,
        7,
        8,
    )
    assert (cni.TRY_AGAIN_LATER, cni.NOT_AVAILABLE, cni.LIMITED_CONNECTIVITY, cni.INTERNAL) == (
        11,
        50,
        51,
        999,
    )


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("command", ["ADD", "DEL", "CHECK"])
def test_success_is_in_the_input_version(command: str, version: str) -> None:
    config = conf(version, prevResult={"cniVersion": version, "ips": []})
    inv = parse(command, config)
    assert inv.cni_version == version
    assert json.loads(cni.add_result(inv, veth_reply()))["cniVersion"] == version


@pytest.mark.parametrize(
    ("stdin", "answer"),
    [
        (b"", cni.LATEST_VERSION),
        (b'{"cniVersion": "0.4.0"}', "0.4.0"),
        (b'{"cniVersion": "1.0.0"}', "1.0.0"),
        (b'{"cniVersion": "1.1.0", "name": "x"}', "1.1.0"),
        (b'{"cniVersion": "0.3.1"}', cni.LATEST_VERSION),
        (b"{not json", cni.LATEST_VERSION),
        (b"[]", cni.LATEST_VERSION),
    ],
    ids=["empty-stdin", "0.4.0", "1.0.0", "1.1.0", "unsupported", "not-json", "not-object"],
)
def test_version_never_fails_and_answers_in_the_request_version_or_the_latest(
    stdin: bytes, answer: str
) -> None:
    inv = cni.parse({"CNI_COMMAND": "VERSION"}, stdin)
    assert (inv.command, inv.cni_version) == ("VERSION", answer)
    assert json.loads(cni.version_json(inv.cni_version)) == {
        "cniVersion": answer,
        "supportedVersions": VERSIONS,
    }


def test_version_needs_no_other_env_and_ignores_invalid_env() -> None:
    inv = cni.parse({"CNI_COMMAND": "VERSION", "CNI_CONTAINERID": "-bad", "CNI_IFNAME": "a/b"}, b"")
    assert inv.container_id == inv.ifname == ""


def test_version_picks_up_valid_paths_and_ignores_bad_ones() -> None:
    inv = cni.parse(
        {"CNI_COMMAND": "VERSION"}, json.dumps({"ipamdSocket": "/run/x.sock", "logFile": 3}).encode()
    )
    assert (inv.ipamd_socket, inv.log_file) == ("/run/x.sock", cni.DEFAULT_LOG_FILE)


# ---- cniVersion: supported per verb, else code 1 ---------------------------------------------

VERSION_TABLE = [
    *[(command, v, None) for command in ("ADD", "DEL", "CHECK") for v in VERSIONS],
    *[(command, "1.1.0", None) for command in ("GC", "STATUS")],
    *[(command, v, 1) for command in ("GC", "STATUS") for v in ("0.4.0", "1.0.0")],
    *[("CHECK", v, 1) for v in ("0.1.0", "0.2.0", "0.3.0", "0.3.1")],
    *[
        (command, v, 1)
        for command in ("ADD", "DEL")
        for v in ("0.1.0", "0.3.1", "1.2.0", "9.9.9", "1.0", "", "x")
    ],
]


@pytest.mark.parametrize(
    ("command", "version", "code"), VERSION_TABLE, ids=[f"{c}-{v or 'empty'}" for c, v, _ in VERSION_TABLE]
)
def test_versions_each_verb_accepts(command: str, version: str, code: int | None) -> None:
    config = conf(version, prevResult={"ips": []})
    if code is None:
        assert parse(command, config).cni_version == version
    else:
        err = fails(
            command, config, code, "cniVersion" if version in VERSIONS else "incompatible CNI version"
        )
        assert err.cni_version == (version if version[:1].isdigit() else None)
        assert ", ".join(cni._VERSIONS_FOR[command]) in err.details


@pytest.mark.parametrize(
    ("config", "code", "needle"),
    [
        ({"name": "n", "type": "t"}, 7, "cniVersion: required"),
        ({"cniVersion": None, "name": "n", "type": "t"}, 7, "cniVersion: required"),
        ({"cniVersion": 1.0, "name": "n", "type": "t"}, 7, "cniVersion: must be a string, not a number"),
        (
            {"cniVersion": ["1.0.0"], "name": "n", "type": "t"},
            7,
            "cniVersion: must be a string, not an array",
        ),
    ],
    ids=["missing", "null", "number", "array"],
)
def test_cni_version_missing_or_ill_typed_is_code_7(config: dict[str, Any], code: int, needle: str) -> None:
    fails("ADD", config, code, needle)


# ---- stdin: undecodable 6, invalid network configuration 7 naming the field ------------------


@pytest.mark.parametrize("command", ["ADD", "DEL", "CHECK", "GC", "STATUS"])
@pytest.mark.parametrize(
    ("stdin", "code", "needle"),
    [
        (b"", 6, "failed to decode the network configuration: Expecting value"),
        (b"{not json", 6, "failed to decode"),
        (b'{"cniVersion": "1.0.0",}', 6, "line 1 column 24"),
        (b"\xff\xfe\x00", 6, "failed to decode"),
        (b'{"a": "\xc3\x28"}', 6, "can't decode byte 0xc3"),
        (b"[" * 50_000, 6, "nested too deeply"),
        (b'{"a": 1} {"b": 2}', 6, "Extra data"),
        (b"[]", 6, "must be a JSON object, not an array"),
        (b'"cloud-cni"', 6, "not a string"),
        (b"null", 6, "not null"),
        (b"1", 6, "not a number"),
    ],
    ids=[
        "empty",
        "broken",
        "trailing-comma",
        "bad-utf16",
        "bad-utf8",
        "deep",
        "two-docs",
        "array",
        "string",
        "null",
        "number",
    ],
)
def test_undecodable_stdin_is_code_6(command: str, stdin: bytes, code: int, needle: str) -> None:
    fails(command, stdin, code, needle)


@pytest.mark.parametrize("command", ["ADD", "DEL", "CHECK", "GC", "STATUS"])
@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        ({"name": None}, "name: the network name is required"),
        ({"name": ""}, "name: the network name is required"),
        ({"name": 7}, "name: must be a string"),
        ({"name": "-net"}, "name: network name '-net' must match"),
        ({"name": "net work"}, "must match"),
        ({"name": "net/1"}, "must match"),
        ({"name": "net\n"}, "must match"),  # re's "$" would let a trailing newline through
        ({"name": "n" * 1025}, "longer than 1024"),
        ({"name": "résumé"}, "must match"),
        ({"type": None}, "type: the plugin type is required"),
        ({"type": ""}, "type: the plugin type is required"),
        ({"type": ["cloud-cni"]}, "type: must be a string"),
        ({"ipamdSocket": 5}, "ipamdSocket: must be a string"),
        ({"ipamdSocket": "run/ipamd.sock"}, "ipamdSocket: 'run/ipamd.sock' must be an absolute path"),
        ({"ipamdSocket": "/run/\x00"}, "must be an absolute path"),
        ({"ipamdSocket": "/" + "s" * 107}, "at most 107 bytes"),
        ({"logFile": False}, "logFile: must be a string"),
        ({"logFile": ""}, "logFile: '' must be an absolute path"),
        ({"logFile": "shim.log"}, "must be an absolute path"),
    ],
    ids=lambda v: str(v)[:40],
)
def test_invalid_network_config_is_code_7_naming_the_field(
    command: str, extra: dict[str, Any], needle: str
) -> None:
    config = {
        k: v for k, v in {**conf(needs_version(command), prevResult={}), **extra}.items() if v is not None
    }
    fails(command, config, cni.INVALID_CONFIG, needle)


@pytest.mark.parametrize("name", ["cloud-cni", "a", "0", "k8s-pod-network", "net_1.2-x", "N" * 1024])
def test_valid_network_names(name: str) -> None:
    assert parse("ADD", conf(name=name)).network_name == name


def test_config_defaults_and_overrides() -> None:
    inv = parse("ADD", conf())
    assert (inv.ipamd_socket, inv.log_file) == (
        "/var/run/cloud-cni/ipamd.sock",
        "/var/log/cloud-cni/shim.log",
    )
    inv = parse("ADD", conf(ipamdSocket="/run/c/ipamd.sock", logFile="/tmp/shim.log"))
    assert (inv.ipamd_socket, inv.log_file) == ("/run/c/ipamd.sock", "/tmp/shim.log")
    inv = parse("ADD", conf(ipamdSocket=None, logFile=None))
    assert (inv.ipamd_socket, inv.log_file) == (cni.DEFAULT_IPAMD_SOCKET, cni.DEFAULT_LOG_FILE), (
        "null is absent"
    )


def test_unknown_config_keys_and_runtime_config_are_kept_not_checked() -> None:
    config = conf(
        runtimeConfig={"portMappings": []}, capabilities={"portMappings": True}, mtu="9001", args={"cni": {}}
    )
    inv = parse("ADD", config)
    assert inv.config == config


# ---- env per verb: required vars missing -> 4 naming every one; others ignored ----------------

REQUIRED = {
    "ADD": ["CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME"],
    "CHECK": ["CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME"],
    "DEL": ["CNI_CONTAINERID", "CNI_IFNAME"],
    "GC": ["CNI_PATH"],
    "STATUS": [],
}
MISSING_TABLE = [
    (command, var, empty, version)
    for command, names in REQUIRED.items()
    for var in names
    for empty in (False, True)
    for version in (VERSIONS if command in ("ADD", "DEL", "CHECK") else ["1.1.0"])
]


@pytest.mark.parametrize(
    ("command", "var", "empty", "version"),
    MISSING_TABLE,
    ids=[f"{c}-{v}-{'empty' if e else 'unset'}-{ver}" for c, v, e, ver in MISSING_TABLE],
)
def test_a_missing_required_env_var_is_code_4_naming_it(
    command: str, var: str, empty: bool, version: str
) -> None:
    err = fails(command, conf(version, prevResult={}), cni.INVALID_ENV, var, **{var: "" if empty else None})
    assert err.msg == f"missing required environment variable {var}"
    assert err.cni_version == version


def test_all_missing_vars_are_named_at_once() -> None:
    err = fails("ADD", conf(), 4, "", CNI_CONTAINERID=None, CNI_NETNS=None, CNI_IFNAME=None)
    assert err.msg == "missing required environment variables CNI_CONTAINERID, CNI_NETNS, CNI_IFNAME"
    assert "ADD needs CNI_COMMAND, CNI_CONTAINERID, CNI_NETNS, CNI_IFNAME" in err.details


@pytest.mark.parametrize(
    ("value", "needle"),
    [
        (None, "missing required environment variable CNI_COMMAND"),
        ("", "missing"),
        ("add", "'add' is not a CNI verb"),
        ("GET", "not a CNI verb"),
    ],
    ids=["unset", "empty", "lowercase", "unknown"],
)
def test_cni_command_missing_or_unknown_is_code_4(value: str | None, needle: str) -> None:
    with pytest.raises(cni.CniError) as info:
        cni.parse({} if value is None else {"CNI_COMMAND": value}, json.dumps(conf()).encode())
    assert info.value.code == 4 and needle in info.value.msg
    assert "ADD, DEL, CHECK, GC, STATUS, VERSION" in info.value.details


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("command", ["ADD", "DEL", "CHECK"])
@pytest.mark.parametrize("var", ["CNI_ARGS", "CNI_PATH"])
def test_cni_args_and_cni_path_are_optional_for_attachment_verbs(
    command: str, var: str, version: str
) -> None:
    inv = parse(command, conf(version, prevResult={}), **{var: None})
    assert (inv.args if var == "CNI_ARGS" else inv.path) in ({}, "")


def test_env_values_are_carried() -> None:
    inv = parse("ADD", conf())
    assert (inv.command, inv.container_id, inv.ifname, inv.netns, inv.path) == (
        "ADD",
        "4f6a0e",
        "eth0",
        NETNS,
        "/opt/cni/bin",
    )
    assert (inv.pod_namespace, inv.pod_name, inv.pod_uid, inv.pod_infra_container_id) == (
        "default",
        "web-0",
        "9b1c-77",
        "4f6a",
    )
    assert inv.network_name == "cloud-cni"


@pytest.mark.parametrize("command", ["GC", "STATUS"])
def test_gc_and_status_ignore_attachment_env(command: str) -> None:
    bad = {"CNI_CONTAINERID": "-bad", "CNI_IFNAME": "a/b", "CNI_NETNS": "relative", "CNI_ARGS": "FOO"}
    inv = parse(command, conf("1.1.0"), **bad)
    assert (inv.container_id, inv.ifname, inv.netns, inv.args) == ("", "", "", {})


def test_status_needs_only_cni_command() -> None:
    inv = cni.parse({"CNI_COMMAND": "STATUS"}, json.dumps(conf("1.1.0")).encode())
    assert (inv.command, inv.network_name, inv.path) == ("STATUS", "cloud-cni", "")


def test_env_errors_come_before_stdin_errors() -> None:
    fails("ADD", b"{bad", cni.INVALID_ENV, "CNI_NETNS", CNI_NETNS=None)


# ---- validation: container ID, ifname, netns (code 4 naming the variable) ---------------------

CONTAINER_IDS = [
    ("4f6a0e", None),
    ("default-busybox", None),
    ("a", None),
    ("A_b.c-d", None),
    ("0" * 64, None),
    ("x" * 1024, None),
    ("", "missing"),
    ("-abc", "must match"),
    ("_abc", "must match"),
    (".abc", "must match"),
    ("ab c", "must match"),
    ("ab/c", "must match"),
    ("ab:c", "must match"),
    ("abc\n", "must match"),
    ("abcé", "must match"),
    ("ab\udcffc", "must match"),
    ("x" * 1025, "longer than 1024"),
]


@pytest.mark.parametrize("command", ["ADD", "DEL", "CHECK"])
@pytest.mark.parametrize(("value", "problem"), CONTAINER_IDS, ids=[repr(v)[:20] for v, _ in CONTAINER_IDS])
def test_container_id(command: str, value: str, problem: str | None) -> None:
    config = conf(prevResult={})
    if problem is None:
        assert parse(command, config, CNI_CONTAINERID=value).container_id == value
    else:
        err = fails(command, config, cni.INVALID_ENV, "CNI_CONTAINERID", CNI_CONTAINERID=value)
        assert problem in err.msg


IFNAMES = [
    ("eth0", None),
    ("e", None),
    ("x" * 15, None),
    ("net-1_2.3@x", None),
    ("ééééééé", None),  # 14 bytes
    ("", "missing"),
    ("x" * 16, "longer than 15 bytes"),
    ("éééééééé", "longer than 15 bytes"),  # 8 characters, 16 bytes: the kernel counts bytes
    (".", "not a valid interface name"),
    ("..", "not a valid interface name"),
    ("eth/0", "'/', ':' or whitespace"),
    ("eth:0", "'/', ':' or whitespace"),
    ("eth 0", "'/', ':' or whitespace"),
    ("eth\t0", "'/', ':' or whitespace"),
    ("eth0\n", "'/', ':' or whitespace"),
    ("eth\u00a00", "'/', ':' or whitespace"),  # no-break space is whitespace
    ("eth\x1c", "'/', ':' or whitespace"),  # so is the file separator, for Python and the daemon
    ("eth\x000", "'/', ':' or whitespace"),
    ("eth\udcff", "not valid UTF-8"),
]


@pytest.mark.parametrize("command", ["ADD", "DEL", "CHECK"])
@pytest.mark.parametrize(("value", "problem"), IFNAMES, ids=[repr(v)[:20] for v, _ in IFNAMES])
def test_ifname(command: str, value: str, problem: str | None) -> None:
    config = conf(prevResult={})
    if problem is None:
        assert parse(command, config, CNI_IFNAME=value).ifname == value
    else:
        err = fails(command, config, cni.INVALID_ENV, "CNI_IFNAME", CNI_IFNAME=value)
        assert problem in err.msg


NETNSES = [
    (NETNS, None),
    ("/proc/1234/ns/net", None),
    ("/" + "n" * 4095, None),
    ("var/run/netns/x", "must be an absolute path"),
    ("/run/\x00x", "must be an absolute path"),
    ("/run/\udcff", "must be an absolute path"),
    ("/" + "n" * 4096, "must be an absolute path"),
]


@pytest.mark.parametrize("command", ["ADD", "DEL", "CHECK"])
@pytest.mark.parametrize(("value", "problem"), NETNSES, ids=[repr(v)[:20] for v, _ in NETNSES])
def test_netns(command: str, value: str, problem: str | None) -> None:
    config = conf(prevResult={})
    if problem is None:
        assert parse(command, config, CNI_NETNS=value).netns == value
    else:
        fails(command, config, cni.INVALID_ENV, "CNI_NETNS", CNI_NETNS=value)


# ---- the shim's rules are at least the daemon's: what it accepts, the daemon accepts ---------


@settings(max_examples=300)
@given(value=st.text(st.characters(codec=None, exclude_categories=()), max_size=20))
def test_what_the_shim_accepts_the_daemon_accepts(value: str) -> None:
    for check, daemon in ((cni._id_problem, validate.container_id), (cni._ifname_problem, validate.ifname)):
        if check(value) is None:
            daemon(value)
    if cni._id_problem(value) is None:
        validate.network_name(value)


# ---- runtimeConfig.dns (the "dns" capability): ADD only, forwarded, bad -> 7 naming the field ---

CLUSTER_DNS = {
    "servers": ["10.96.0.10", "fd00::a"],
    "searches": ["default.svc.cluster.local", "svc.cluster.local", "cluster.local."],
    "options": ["ndots:5"],
}


def test_runtime_config_dns_is_read_on_add() -> None:
    inv = parse("ADD", conf(runtimeConfig={"dns": CLUSTER_DNS, "portMappings": []}))
    assert inv.dns == CLUSTER_DNS


@pytest.mark.parametrize(
    ("config", "expected"),
    [
        (conf(), None),
        (conf(runtimeConfig=None), None),
        (conf(runtimeConfig={"portMappings": []}), None),
        (conf(runtimeConfig={"dns": None}), None),
        (conf(runtimeConfig={"dns": {}}), {"servers": [], "searches": [], "options": []}),
        (
            conf(runtimeConfig={"dns": {"servers": ["10.0.0.2"], "searches": None}}),
            {"servers": ["10.0.0.2"], "searches": [], "options": []},
        ),
    ],
    ids=["no-runtime-config", "runtime-config-null", "no-dns", "dns-null", "dns-empty", "lists-optional"],
)
def test_runtime_config_dns_absent_or_partial(config: dict[str, Any], expected: Any) -> None:
    assert parse("ADD", config).dns == expected


@pytest.mark.parametrize("command", ["DEL", "CHECK"])
def test_runtime_config_dns_is_not_read_on_other_verbs(command: str) -> None:
    config = conf(runtimeConfig={"dns": {"servers": ["not an address"]}}, prevResult={"ips": []})
    assert parse(command, config).dns is None


BAD_DNS = [
    ({"runtimeConfig": []}, "runtimeConfig: must be an object"),
    ({"runtimeConfig": {"dns": "10.0.0.2"}}, "runtimeConfig.dns: must be an object"),
    ({"runtimeConfig": {"dns": {"servers": "10.0.0.2"}}}, "runtimeConfig.dns.servers: must be a list"),
    ({"runtimeConfig": {"dns": {"servers": [10]}}}, "runtimeConfig.dns.servers[0]: must be a string"),
    ({"runtimeConfig": {"dns": {"servers": ["10.0.0"]}}}, "runtimeConfig.dns.servers[0]"),
    ({"runtimeConfig": {"dns": {"servers": ["ok", "10.0.0.2"]}}}, "runtimeConfig.dns.servers[0]"),
    ({"runtimeConfig": {"dns": {"servers": ["fe80::1%eth0"]}}}, "runtimeConfig.dns.servers[0]"),
    ({"runtimeConfig": {"dns": {"servers": ["10.0.0.2"] * 33}}}, "runtimeConfig.dns.servers: more than 32"),
    ({"runtimeConfig": {"dns": {"searches": ["a b"]}}}, "runtimeConfig.dns.searches[0]"),
    ({"runtimeConfig": {"dns": {"searches": ["-x.local"]}}}, "runtimeConfig.dns.searches[0]"),
    ({"runtimeConfig": {"dns": {"searches": ["a..b"]}}}, "runtimeConfig.dns.searches[0]"),
    ({"runtimeConfig": {"dns": {"searches": ["x" * 64]}}}, "runtimeConfig.dns.searches[0]"),
    ({"runtimeConfig": {"dns": {"searches": [("a" * 63 + ".") * 4]}}}, "runtimeConfig.dns.searches[0]"),
    ({"runtimeConfig": {"dns": {"searches": {"a": 1}}}}, "runtimeConfig.dns.searches: must be a list"),
    ({"runtimeConfig": {"dns": {"options": [""]}}}, "runtimeConfig.dns.options[0]"),
    ({"runtimeConfig": {"dns": {"options": ["ndots:5", "a b"]}}}, "runtimeConfig.dns.options[1]"),
    ({"runtimeConfig": {"dns": {"options": ["x\n"]}}}, "runtimeConfig.dns.options[0]"),
    ({"runtimeConfig": {"dns": {"options": [None]}}}, "runtimeConfig.dns.options[0]: must be a string"),
]


@pytest.mark.parametrize(("extra", "needle"), BAD_DNS, ids=[needle for _, needle in BAD_DNS])
def test_bad_runtime_config_dns_is_code_7_naming_the_field(extra: dict[str, Any], needle: str) -> None:
    fails("ADD", conf(**extra), cni.INVALID_CONFIG, needle)


IP_TEXTS = [
    ("10.96.0.10", True),
    ("0.0.0.0", True),
    ("255.255.255.255", True),
    ("256.1.1.1", False),
    ("01.2.3.4", False),
    ("1.2.3", False),
    ("1.2.3.4.", False),
    ("::", True),
    ("::1", True),
    ("fd00::a", True),
    ("1:2:3:4:5:6:7:8", True),
    ("1:2:3:4:5:6:7::", True),
    ("1:2:3:4:5:6::7", True),
    ("1:2:3:4:5:6:7:8:9", False),
    ("1::2::3", False),
    (":::", False),
    (":1::", False),
    ("12345::", False),
    ("::ffff:10.0.0.1", True),
    ("1:2:3:4:5:6:1.2.3.4", True),
    ("1:2:3:4:5:6:7:1.2.3.4", False),
    ("::1.2.3", False),
    ("fe80::1%eth0", False),
    ("", False),
    ("\uff11.2.3.4", False),  # a fullwidth digit one
]


@pytest.mark.parametrize(("text", "ok"), IP_TEXTS, ids=[t or "empty" for t, _ in IP_TEXTS])
def test_ip_address_check(text: str, ok: bool) -> None:
    assert cni._is_ip_address(text) is ok


def _daemon_accepts_dns(**fields: list[str]) -> bool:
    try:
        validate.dns(gen.Dns(**fields))
    except RequestError:
        return False
    return True


@settings(max_examples=300)
@given(
    value=st.one_of(
        st.ip_addresses().map(str),
        st.ip_addresses(v=6).map(lambda a: a.exploded),
        st.text(st.sampled_from("0123456789abcdefABCDEF:.%"), max_size=45),
    )
)
def test_shim_and_daemon_agree_on_dns_servers(value: str) -> None:
    assert cni._is_ip_address(value) == _daemon_accepts_dns(servers=[value])


@settings(max_examples=300)
@given(
    value=st.one_of(
        st.text(st.sampled_from("ab-_.Z9 "), max_size=12),
        st.text(st.characters(codec="utf-8"), max_size=8),
        st.from_regex(r"[a-z]{1,70}(\.[a-z0-9-]{1,70}){0,5}\.?", fullmatch=True),
    )
)
def test_shim_and_daemon_agree_on_dns_searches_and_options(value: str) -> None:
    assert cni._is_domain(value) == _daemon_accepts_dns(searches=[value])
    assert cni._is_resolver_option(value) == _daemon_accepts_dns(options=[value])


# ---- ADD ------------------------------------------------------------------------------------


def veth_reply(**overrides: Any) -> pb.AddReply:
    reply = gen.AddReply(
        ip="10.0.1.7",
        prefix_length=32,
        gateway="169.254.1.1",
        host_ifname="cni5e3a1f2c",
        host_mac="ee:ee:ee:ee:ee:ee",
        sandbox_mac="0a:58:0a:00:01:07",
        mtu=9001,
        routes=[gen.Route(dst="169.254.1.1/32"), gen.Route(dst="0.0.0.0/0", gw="169.254.1.1")],
        interface_id="eni-0abc",
        device_index=1,
    )
    decoded = pb.decode_add_reply(reply.SerializeToString())
    decoded.update(overrides)  # type: ignore[typeddict-item]
    return decoded


def ipam_only_reply(**overrides: Any) -> pb.AddReply:
    """DATAPATH none: the daemon assigned an address and wired nothing."""
    return veth_reply(gateway="", host_ifname="", host_mac="", sandbox_mac="", mtu=0, routes=[], **overrides)


VETH_INTERFACES_10 = [
    {"name": "cni5e3a1f2c", "mac": "ee:ee:ee:ee:ee:ee"},
    {"name": "eth0", "mac": "0a:58:0a:00:01:07", "sandbox": NETNS},
]
ROUTES = [{"dst": "169.254.1.1/32"}, {"dst": "0.0.0.0/0", "gw": "169.254.1.1"}]
RESULTS = {
    "0.4.0": {
        "cniVersion": "0.4.0",
        "interfaces": VETH_INTERFACES_10,
        "ips": [{"version": "4", "interface": 1, "address": "10.0.1.7/32", "gateway": "169.254.1.1"}],
        "routes": ROUTES,
        "dns": {},
    },
    "1.0.0": {
        "cniVersion": "1.0.0",
        "interfaces": VETH_INTERFACES_10,
        "ips": [{"interface": 1, "address": "10.0.1.7/32", "gateway": "169.254.1.1"}],
        "routes": ROUTES,
        "dns": {},
    },
    "1.1.0": {
        "cniVersion": "1.1.0",
        "interfaces": [
            {"name": "cni5e3a1f2c", "mac": "ee:ee:ee:ee:ee:ee", "mtu": 9001},
            {"name": "eth0", "mac": "0a:58:0a:00:01:07", "mtu": 9001, "sandbox": NETNS},
        ],
        "ips": [{"interface": 1, "address": "10.0.1.7/32", "gateway": "169.254.1.1"}],
        "routes": ROUTES,
        "dns": {},
    },
}


@pytest.mark.parametrize("version", VERSIONS)
def test_add_result_shape_per_version(version: str) -> None:
    text = cni.add_result(parse("ADD", conf(version)), veth_reply())
    assert text == json.dumps(RESULTS[version]), "same keys, same order"


def test_add_result_versions_differ_only_where_the_spec_does() -> None:
    r040, r100, r110 = (RESULTS[v] for v in VERSIONS)
    assert (
        [{k: v for k, v in ip.items() if k != "version"} for ip in r040["ips"]] == r100["ips"] == r110["ips"]
    )
    assert r040["interfaces"] == r100["interfaces"]
    assert [{k: v for k, v in i.items() if k != "mtu"} for i in r110["interfaces"]] == r100["interfaces"]


@pytest.mark.parametrize("version", VERSIONS)
def test_add_result_interfaces_host_side_sandbox_and_index(version: str) -> None:
    result = json.loads(cni.add_result(parse("ADD", conf(version)), veth_reply()))
    host, container = result["interfaces"]
    assert "sandbox" not in host, "the host side is in the host namespace"
    assert container["sandbox"] == NETNS and container["name"] == "eth0"
    assert (
        result["interfaces"][result["ips"][0]["interface"]] is container or result["ips"][0]["interface"] == 1
    )


@pytest.mark.parametrize("version", VERSIONS)
def test_add_result_when_the_daemon_wired_nothing(version: str) -> None:
    result = json.loads(cni.add_result(parse("ADD", conf(version)), ipam_only_reply()))
    assert result["interfaces"] == [] and result["routes"] == [] and result["dns"] == {}
    [ip] = result["ips"]
    assert "interface" not in ip and "gateway" not in ip
    assert ip["address"] == "10.0.1.7/32"


@pytest.mark.parametrize("version", VERSIONS)
def test_add_result_without_a_host_side_still_lists_the_container_side(version: str) -> None:
    result = json.loads(cni.add_result(parse("ADD", conf(version)), veth_reply(host_ifname="", host_mac="")))
    [container] = result["interfaces"]
    assert container["name"] == "eth0" and result["ips"][0]["interface"] == 0


@pytest.mark.parametrize("version", VERSIONS)
def test_add_result_ipv6(version: str) -> None:
    reply = veth_reply(
        ip="fd00::7", prefix_length=128, gateway="fe80::1", routes=[{"dst": "::/0", "gw": "fe80::1"}]
    )
    [ip] = json.loads(cni.add_result(parse("ADD", conf(version)), reply))["ips"]
    assert ip["address"] == "fd00::7/128"
    assert ip.get("version") == ("6" if version == "0.4.0" else None)


def test_add_result_prefix_zero_is_a_host_route_and_nonsense_is_an_internal_error() -> None:
    inv = parse("ADD", conf())
    assert json.loads(cni.add_result(inv, veth_reply(prefix_length=0)))["ips"][0]["address"] == "10.0.1.7/32"
    for bad in ({"prefix_length": 33}, {"prefix_length": -1}, {"ip": ""}):
        with pytest.raises(cni.CniError) as info:
            cni.add_result(inv, veth_reply(**bad))
        assert info.value.code == cni.INTERNAL


@pytest.mark.parametrize("version", VERSIONS)
def test_add_ignores_prev_result(version: str) -> None:
    inv = parse("ADD", conf(version, prevResult={"cniVersion": version, "ips": [{"address": "10.9.9.9/32"}]}))
    assert inv.prev_result is None and inv.prev_result_json == ""
    inv = parse("ADD", conf(version, prevResult="not even an object"))
    assert inv.prev_result is None


# ---- DEL ------------------------------------------------------------------------------------


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("netns", ["", None], ids=["empty", "unset"])
def test_del_without_netns_or_prev_result(version: str, netns: str | None) -> None:
    """containerd's second DEL: empty CNI_NETNS, no prevResult."""
    inv = parse("DEL", conf(version), CNI_NETNS=netns)
    assert (inv.netns, inv.prev_result, inv.prev_result_json) == ("", None, "")


@pytest.mark.parametrize("version", VERSIONS)
def test_del_passes_prev_result_through(version: str) -> None:
    prev = RESULTS[version]
    inv = parse("DEL", conf(version, prevResult=prev))
    assert inv.prev_result == prev
    assert json.loads(inv.prev_result_json) == prev
    assert validate.prev_result(inv.prev_result_json, required=False) == prev


@pytest.mark.parametrize("command", ["DEL", "CHECK"])
@pytest.mark.parametrize(
    ("prev", "needle"),
    [
        ([], "prevResult: must be a JSON object, not an array"),
        ("x", "not a string"),
        (1, "not a number"),
        ({"pad": "x" * (1 << 20)}, "larger than 1 MiB"),
    ],
    ids=["array", "string", "number", "too-big"],
)
def test_prev_result_must_be_an_object_of_at_most_1_mib(command: str, prev: Any, needle: str) -> None:
    fails(command, conf(prevResult=prev), cni.INVALID_CONFIG, needle)


def test_del_prev_result_null_counts_as_absent() -> None:
    assert parse("DEL", conf(prevResult=None)).prev_result is None


# ---- CHECK ----------------------------------------------------------------------------------


@pytest.mark.parametrize("version", VERSIONS)
def test_check_requires_prev_result(version: str) -> None:
    err = fails("CHECK", conf(version), cni.INVALID_CONFIG, "prevResult: required for CHECK")
    assert err.cni_version == version
    fails("CHECK", conf(version, prevResult=None), cni.INVALID_CONFIG, "prevResult")
    assert parse("CHECK", conf(version, prevResult=RESULTS[version])).prev_result == RESULTS[version]


# ---- CNI_ARGS -------------------------------------------------------------------------------

ARGS_TABLE = [
    ("", None, ""),
    (CRI_ARGS, None, ""),
    ("K8S_POD_NAMESPACE=ns;K8S_POD_NAME=p", None, ""),
    ("K8S_POD_NAME=", None, ""),
    ("IgnoreUnknown=1;FOO=bar", None, ""),
    ("FOO=bar;IgnoreUnknown=1", None, ""),
    ("IgnoreUnknown=true;FOO=bar", None, ""),
    ("IgnoreUnknown=TRUE;FOO=bar", None, ""),
    ("IgnoreUnknown=0", None, ""),
    ("FOO=bar", 2, "CNI_ARGS: unsupported field 'FOO=bar'"),
    ("FOO=bar;BAZ=", 2, "unsupported fields 'FOO=bar', 'BAZ='"),
    ("IgnoreUnknown=0;FOO=bar", 2, "'FOO=bar'"),
    ("IgnoreUnknown=false;FOO=bar", 2, "'FOO=bar'"),
    ("k8s_pod_name=x", 2, "'k8s_pod_name=x'"),  # keys are case-sensitive, as libcni's
    ("=x", 2, "'=x'"),
    ("IgnoreUnknown=yes", 4, "CNI_ARGS: IgnoreUnknown='yes' is not 1, true, 0 or false"),
    ("FOO", 4, "CNI_ARGS: 'FOO' is not a KEY=VALUE pair"),
    ("A=B=C", 4, "'A=B=C' is not a KEY=VALUE pair"),
    ("K8S_POD_NAME=a;", 4, "'' is not a KEY=VALUE pair"),
    (";K8S_POD_NAME=a", 4, "not a KEY=VALUE pair"),
    ("K8S_POD_NAME=a b", 4, "CNI_ARGS K8S_POD_NAME='a b' is not valid"),
    ("K8S_POD_NAMESPACE=" + "n" * 254, 4, "CNI_ARGS K8S_POD_NAMESPACE="),
    ("K8S_POD_UID=\udcff", 4, "K8S_POD_UID"),
    ("K8S_POD_INFRA_CONTAINER_ID=a\tb", 4, "K8S_POD_INFRA_CONTAINER_ID"),
]


@pytest.mark.parametrize("command", ["ADD", "DEL", "CHECK"])
@pytest.mark.parametrize(("args", "code", "needle"), ARGS_TABLE, ids=[repr(a)[:40] for a, _, _ in ARGS_TABLE])
def test_cni_args(command: str, args: str, code: int | None, needle: str) -> None:
    config = conf(prevResult={})
    if code is None:
        parse(command, config, CNI_ARGS=args)
    else:
        fails(command, config, code, needle, CNI_ARGS=args)


def test_cni_args_values_and_last_one_wins() -> None:
    inv = parse("ADD", conf(), CNI_ARGS="K8S_POD_NAME=a;IgnoreUnknown=1;X=1;K8S_POD_NAME=b")
    assert inv.args == {"K8S_POD_NAME": "b", "IgnoreUnknown": "1", "X": "1"}
    assert (inv.pod_name, inv.pod_namespace, inv.pod_uid, inv.pod_infra_container_id) == ("b", "", "", "")


def test_unsupported_field_details_say_how_to_ignore_it() -> None:
    err = fails("ADD", conf(), 2, "FOO", CNI_ARGS="FOO=bar")
    assert "IgnoreUnknown=1" in err.details and "K8S_POD_NAME" in err.details


# ---- GC -------------------------------------------------------------------------------------

VALID = "cni.dev/valid-attachments"
LEGACY = "cni.dev/attachments"
GC_TABLE: list[tuple[str, dict[str, Any], list[tuple[str, str]] | str | None]] = [
    ("neither", {}, None),
    (
        "valid",
        {VALID: [{"containerID": "c1", "ifname": "eth0"}, {"containerID": "c2", "ifname": "net1"}]},
        [("c1", "eth0"), ("c2", "net1")],
    ),
    ("legacy", {LEGACY: [{"containerID": "c1", "ifname": "eth0"}]}, [("c1", "eth0")]),
    (
        "both",
        {VALID: [{"containerID": "c1", "ifname": "eth0"}], LEGACY: [{"containerID": "c9", "ifname": "eth0"}]},
        [("c1", "eth0")],
    ),
    ("empty-list", {VALID: []}, []),
    ("null", {VALID: None}, None),
    ("null-falls-back", {VALID: None, LEGACY: [{"containerID": "c1", "ifname": "eth0"}]}, [("c1", "eth0")]),
    ("extra-keys", {VALID: [{"containerID": "c1", "ifname": "eth0", "netns": "/x"}]}, [("c1", "eth0")]),
    ("duplicates", {VALID: [{"containerID": "c1", "ifname": "eth0"}] * 2}, [("c1", "eth0")] * 2),
    (
        "not-a-list",
        {VALID: {"containerID": "c1"}},
        f"{VALID}: must be a list of {{containerID, ifname}}, not an object",
    ),
    ("legacy-not-a-list", {LEGACY: "c1"}, f"{LEGACY}: must be a list"),
    ("entry-not-object", {VALID: ["c1"]}, f"{VALID}[0]: must be an object, not a string"),
    ("no-container-id", {VALID: [{"ifname": "eth0"}]}, f"{VALID}[0].containerID: must be a string"),
    ("no-ifname", {VALID: [{"containerID": "c1"}]}, f"{VALID}[0].ifname: must be a string"),
    (
        "bad-container-id",
        {VALID: [{"containerID": "c1", "ifname": "eth0"}, {"containerID": "-c", "ifname": "eth0"}]},
        f"{VALID}[1].containerID: '-c' must match",
    ),
    (
        "bad-ifname",
        {VALID: [{"containerID": "c1", "ifname": "eth/0"}]},
        f"{VALID}[0].ifname: 'eth/0' must not contain",
    ),
    ("long-ifname", {VALID: [{"containerID": "c1", "ifname": "x" * 16}]}, "longer than 15 bytes"),
]


@pytest.mark.parametrize(("case", "extra", "expected"), GC_TABLE, ids=[c for c, _, _ in GC_TABLE])
def test_gc_valid_attachments(
    case: str, extra: dict[str, Any], expected: list[tuple[str, str]] | str | None
) -> None:
    config = conf("1.1.0", **extra)
    if isinstance(expected, str):
        fails("GC", config, cni.INVALID_CONFIG, expected)
    else:
        inv = parse("GC", config)
        assert inv.valid_attachments == expected
        assert inv.network_name == "cloud-cni"


def test_gc_needs_only_cni_command_and_cni_path() -> None:
    inv = cni.parse(
        {"CNI_COMMAND": "GC", "CNI_PATH": "/opt/cni/bin"}, json.dumps(conf("1.1.0", **{VALID: []})).encode()
    )
    assert (inv.command, inv.path, inv.valid_attachments) == ("GC", "/opt/cni/bin", [])


# ---- attachment key and the daemon's own view of the request --------------------------------


@pytest.mark.parametrize("command", ["ADD", "DEL", "CHECK"])
def test_a_parsed_call_passes_the_daemons_validation(command: str) -> None:
    inv = parse(command, conf(prevResult=RESULTS["1.0.0"]), CNI_NETNS="" if command == "DEL" else NETNS)
    encoded = {"ADD": pb.encode_add_request, "DEL": pb.encode_del_request, "CHECK": pb.encode_check_request}[
        command
    ](inv)
    request = {"ADD": gen.AddRequest, "DEL": gen.DelRequest, "CHECK": gen.CheckRequest}[command].FromString(
        encoded
    )
    call = validate.attachment(request.attachment, netns_required=command != "DEL")
    assert (call.key.network, call.key.container_id, call.key.ifname) == (
        inv.network_name,
        inv.container_id,
        inv.ifname,
    )
    assert call.pod.namespace == "default" and call.pod.name == "web-0"
    if command != "ADD":
        validate.prev_result(request.prev_result, required=command == "CHECK")


# ---- fuzz: parse only ever returns an Invocation or raises CniError --------------------------

ANY_TEXT = st.text(st.characters(codec=None, exclude_categories=()), max_size=24)
ENV_KEYS = st.sampled_from(
    ["CNI_COMMAND", "CNI_CONTAINERID", "CNI_IFNAME", "CNI_NETNS", "CNI_ARGS", "CNI_PATH", "PATH"]
)
env_values = st.one_of(
    ANY_TEXT,
    st.sampled_from(
        [*cni.COMMANDS, "abc", "eth0", NETNS, CRI_ARGS, "IgnoreUnknown=1;FOO=bar", "FOO=bar", ""]
    ),
)
random_envs = st.fixed_dictionaries(
    {"CNI_COMMAND": st.sampled_from([*cni.COMMANDS, "", "BOGUS"])},
    optional={
        name: env_values for name in ("CNI_CONTAINERID", "CNI_IFNAME", "CNI_NETNS", "CNI_ARGS", "CNI_PATH")
    },
) | st.dictionaries(st.one_of(ENV_KEYS, ANY_TEXT), env_values, max_size=7)
# a valid env for the verb with at most two variables changed or removed
near_valid_envs = st.builds(
    lambda command, changes: env(command, **changes),
    st.sampled_from(cni.COMMANDS),
    st.dictionaries(
        st.sampled_from(["CNI_CONTAINERID", "CNI_IFNAME", "CNI_NETNS", "CNI_ARGS", "CNI_PATH"]),
        st.none() | env_values,
        max_size=2,
    )
    | st.just({}),
)
# three in four near valid, so that most examples get past the env checks to the configuration
envs = st.integers(0, 3).flatmap(lambda i: random_envs if i == 0 else near_valid_envs)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | ANY_TEXT,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(ANY_TEXT, inner, max_size=3),
    max_leaves=10,
)
config_like = st.fixed_dictionaries(
    {},
    optional={
        "cniVersion": st.sampled_from([*VERSIONS, "0.3.1", "", "x", "1" * 40]) | json_values,
        "name": st.sampled_from(["net", "-x", ""]) | json_values,
        "type": st.just("cloud-cni") | json_values,
        "ipamdSocket": st.just("/run/x.sock") | json_values,
        "logFile": st.just("/tmp/x.log") | json_values,
        "prevResult": st.just(RESULTS["1.0.0"]) | json_values,
        VALID: st.lists(st.fixed_dictionaries({"containerID": ANY_TEXT, "ifname": ANY_TEXT}), max_size=2)
        | json_values,
        LEGACY: json_values,
    },
)
# a valid configuration with at most three keys changed, added or removed
near_valid_configs = st.builds(
    lambda version, changes: {k: v for k, v in {**conf(version), **changes}.items() if v is not None},
    st.sampled_from(VERSIONS),
    st.dictionaries(
        st.sampled_from(["cniVersion", "name", "type", "ipamdSocket", "prevResult", VALID, LEGACY]),
        st.none()
        | st.sampled_from(["1.1.0", RESULTS["1.1.0"], [{"containerID": "c1", "ifname": "eth0"}]])
        | json_values,
        max_size=3,
    )
    | st.just({}),
)
other_stdins = st.one_of(
    st.binary(max_size=64),
    json_values.map(lambda v: json.dumps(v).encode()),
    config_like.map(lambda v: json.dumps(v).encode()),
    config_like.map(lambda v: json.dumps(v, ensure_ascii=False).encode("utf-8", "surrogatepass")),
)
stdins = st.integers(0, 3).flatmap(
    lambda i: other_stdins if i == 0 else near_valid_configs.map(lambda v: json.dumps(v).encode())
)


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(environ=envs, stdin=stdins)
def test_fuzz_parse_returns_an_invocation_or_raises_cni_error(environ: dict[str, str], stdin: bytes) -> None:
    try:
        inv = cni.parse(environ, stdin)
    except cni.CniError as err:
        out = json.loads(cni.error_json(err))
        assert list(out) == ["cniVersion", "code", "msg", "details"]
        assert out["code"] in (1, 2, 4, 6, 7)
        assert isinstance(out["msg"], str) and out["msg"]
        assert isinstance(out["cniVersion"], str)
        return
    assert inv.command in cni.COMMANDS and inv.cni_version in cni.SUPPORTED_VERSIONS
    assert json.loads(cni.version_json(inv.cni_version))["supportedVersions"] == VERSIONS
    if inv.command in ("ADD", "DEL", "CHECK"):
        pb.encode_del_request(inv)  # every string it carries can go on the wire
        assert inv.network_name and inv.container_id and inv.ifname
        call = validate.attachment(
            gen.DelRequest.FromString(pb.encode_del_request(inv)).attachment,
            netns_required=inv.command != "DEL",
        )
        assert call.key.container_id == inv.container_id
    if inv.command == "GC":
        pb.encode_gc_request(inv)


# ---- start-up cost ---------------------------------------------------------------------------

PROBE = """
import sys
sys.path.insert(0, {root!r})
before = set(sys.modules)
from shim import cni, pb, jsonlite
environ = {{"CNI_COMMAND": "ADD", "CNI_CONTAINERID": "c1", "CNI_IFNAME": "eth0", "CNI_NETNS": "/n"}}
environ["CNI_ARGS"] = {args!r}
inv = cni.parse(environ, b'{{"cniVersion": "1.0.0", "name": "n", "type": "t"}}')
pb.decode_add_reply(pb.encode_add_request(inv))
cni.add_result(inv, pb.decode_add_reply(b"\\x0a\\x0810.0.0.1\\x10\\x20\\x22\\x01h"))
for stdin in (b"{{bad", b"[]"):
    try:
        cni.parse({{"CNI_COMMAND": "DEL"}}, stdin)
    except cni.CniError as err:
        cni.error_json(err)
print(repr(sorted(set(sys.modules) - before)))
"""


def test_the_shim_modules_import_nothing_but_c_modules() -> None:
    out = subprocess.run(
        [sys.executable, "-I", "-S", "-c", PROBE.format(root=str(ROOT), args=CRI_ARGS)],
        capture_output=True,
        text=True,
        check=True,
        env={k: v for k, v in os.environ.items() if not k.startswith("PYTHON")},
    ).stdout
    assert ast.literal_eval(out) == ["__future__", "_json", "shim", "shim.cni", "shim.jsonlite", "shim.pb"]
