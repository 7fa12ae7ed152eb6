"""Max pods: the one formula (ipamd.pool.maxpods) and ``cloud-cni max-pods`` (ipamd.maxpods_cli).

Expected values are aws-vpc-cni's published ones: misc/eni-max-pods.txt lists, per instance type,
the max pods (``ENIs x (IPv4 per ENI - 1) + 2``) and the max pods with custom networking (one ENI
fewer); the EKS max-pods calculator (amazon-eks-ami files/max-pods-calculator.sh) caps its default
answer at 110, or 250 above 30 vCPUs (m5.large: 29; with prefix delegation 110).
"""

from __future__ import annotations

import argparse

import pytest

from ipamd.cloud.aws.limits import KNOWN_LIMITS, KNOWN_VCPUS
from ipamd.maxpods_cli import add_max_pods_parser, run_max_pods
from ipamd.pool.maxpods import explain_max_pods, max_pods
from ipamd.pool.model import InstanceLimits

# (max pods, max pods with custom networking) from aws-vpc-cni misc/eni-max-pods.txt, for every type
# the shipped limits table knows.
PUBLISHED: dict[str, tuple[int, int]] = {
    "t2.nano": (4, 3), "t2.micro": (4, 3), "t2.small": (11, 8), "t2.medium": (17, 12),
    "t2.large": (35, 24), "t2.xlarge": (44, 30), "t2.2xlarge": (44, 30),
    "t3.nano": (4, 3), "t3.micro": (4, 3), "t3.small": (11, 8), "t3.medium": (17, 12),
    "t3.large": (35, 24), "t3.xlarge": (58, 44), "t3.2xlarge": (58, 44),
    "m4.large": (20, 11), "m4.xlarge": (58, 44), "m4.2xlarge": (58, 44),
    "m5.large": (29, 20), "m5.xlarge": (58, 44), "m5.2xlarge": (58, 44), "m5.4xlarge": (234, 205),
    "m5.8xlarge": (234, 205), "m5.12xlarge": (234, 205), "m5.16xlarge": (737, 688),
    "m5.24xlarge": (737, 688), "m5.metal": (737, 688),
    "r5.large": (29, 20), "r5.xlarge": (58, 44), "r5.2xlarge": (58, 44), "r5.4xlarge": (234, 205),
    "r5.8xlarge": (234, 205), "r5.12xlarge": (234, 205), "r5.16xlarge": (737, 688),
    "r5.24xlarge": (737, 688),
    "m6i.large": (29, 20), "m6i.xlarge": (58, 44), "m6i.2xlarge": (58, 44), "m6i.4xlarge": (234, 205),
    "m6i.8xlarge": (234, 205), "m6i.12xlarge": (234, 205), "m6i.16xlarge": (737, 688),
    "m6i.24xlarge": (737, 688), "m6i.32xlarge": (737, 688),
    "c5.large": (29, 20), "c5.xlarge": (58, 44), "c5.2xlarge": (58, 44), "c5.4xlarge": (234, 205),
    "c5.9xlarge": (234, 205), "c5.12xlarge": (234, 205), "c5.18xlarge": (737, 688),
    "c5.24xlarge": (737, 688),
    "p3.2xlarge": (58, 44), "p3.8xlarge": (234, 205), "p3.16xlarge": (234, 205),
    "p3dn.24xlarge": (737, 688),
}  # fmt: skip


def test_every_shipped_type_has_a_published_value() -> None:
    assert set(KNOWN_LIMITS) == set(PUBLISHED)
    assert set(KNOWN_VCPUS) == set(KNOWN_LIMITS)


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_max_allowed_equals_eni_max_pods_txt(name: str) -> None:
    limits = KNOWN_LIMITS[name]
    plain, custom = PUBLISHED[name]
    assert max_pods(limits, prefix_delegation=False, custom_networking=False) == plain
    assert max_pods(limits, prefix_delegation=False, custom_networking=True) == custom
    assert limits.default_max_pods == plain


@pytest.mark.parametrize(
    ("name", "pd", "custom", "cpus", "cap", "expected"),
    [
        pytest.param("m5.large", False, False, 2, None, 29, id="m5.large"),
        pytest.param("t3.medium", False, False, 2, None, 17, id="t3.medium"),
        pytest.param("m5.large", False, True, 2, None, 20, id="m5.large-custom-networking"),
        pytest.param("m5.large", True, False, 2, None, 110, id="m5.large-prefix-delegation"),
        pytest.param("m5.large", True, False, None, None, 434, id="m5.large-prefix-delegation-max-allowed"),
        pytest.param("m5.large", True, True, 2, None, 110, id="m5.large-pd-custom-networking"),
        pytest.param("m5.large", True, True, None, None, 290, id="m5.large-pd-custom-max-allowed"),
        pytest.param("m5.4xlarge", False, False, 16, None, 110, id="m5.4xlarge-capped-110"),
        pytest.param("c5.9xlarge", False, False, 36, None, 234, id="c5.9xlarge-under-250"),
        pytest.param("m5.16xlarge", False, False, 64, None, 250, id="m5.16xlarge-capped-250"),
        pytest.param("m5.16xlarge", False, False, 30, None, 110, id="thirty-vcpus-is-low"),
        pytest.param("m5.16xlarge", False, False, 31, None, 250, id="thirty-one-vcpus-is-high"),
        pytest.param("t2.medium", True, False, 2, None, 17, id="xen-ignores-prefix-delegation"),
        pytest.param("m5.large", False, False, 2, 12, 12, id="cap"),
        pytest.param("m5.large", False, False, None, 500, 29, id="cap-above-allowed"),
    ],
)
def test_calculator(  # noqa: PLR0917 - one parameter per calculator input
    name: str, pd: bool, custom: bool, cpus: int | None, cap: int | None, expected: int
) -> None:
    limits = KNOWN_LIMITS[name]
    assert (
        max_pods(limits, prefix_delegation=pd, custom_networking=custom, cpu_count=cpus, cap=cap) == expected
    )


def test_explain_shows_the_terms() -> None:
    got = explain_max_pods(
        KNOWN_LIMITS["m5.large"], prefix_delegation=True, custom_networking=True, cpu_count=2
    )
    assert (got.interfaces, got.addresses_per_interface, got.allowed, got.ceiling, got.value) == (
        2,
        144,
        290,
        110,
        110,
    )
    assert got.prefix_delegation and got.custom_networking and got.platform_limit is None


def test_a_platform_limit_replaces_the_formula() -> None:
    azure = InstanceLimits("Standard_D4s_v3", 2, 256, detachable_interfaces=False, max_pods=250)
    assert max_pods(azure, prefix_delegation=False, custom_networking=True) == 250
    assert max_pods(azure, prefix_delegation=False, custom_networking=False, cap=30) == 30


def test_custom_networking_on_a_one_interface_instance_leaves_the_host_pods() -> None:
    assert max_pods(InstanceLimits("tiny", 1, 4), prefix_delegation=False, custom_networking=True) == 2


@pytest.mark.parametrize(("cpus", "cap"), [(0, None), (None, 0), (-1, None)])
def test_nonsense_arguments_are_refused(cpus: int | None, cap: int | None) -> None:
    with pytest.raises(ValueError):
        max_pods(
            KNOWN_LIMITS["m5.large"],
            prefix_delegation=False,
            custom_networking=False,
            cpu_count=cpus,
            cap=cap,
        )


# --- cloud-cni max-pods ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["m5.large"], "29"),
        (["t3.medium"], "17"),
        (["m5.large", "--custom-networking"], "20"),
        (["m5.large", "--prefix-delegation"], "110"),
        (["m5.large", "--prefix-delegation", "--max-allowed"], "434"),
        (["m5.16xlarge"], "250"),
        (["m5.16xlarge", "--cpu-count", "8"], "110"),
        (["m5.16xlarge", "--max-allowed"], "737"),
        (["m5.large", "--max-pods-cap", "10"], "10"),
    ],
)
def test_cli_prints_the_number(argv: list[str], expected: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert run_max_pods(argv) == 0
    out, err = capsys.readouterr()
    assert out == expected + "\n" and err == ""


def test_cli_explain(capsys: pytest.CaptureFixture[str]) -> None:
    assert run_max_pods(["m5.large", "--prefix-delegation", "--custom-networking", "--explain"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "110"
    assert "allowed = (3 - 1) x (10 - 1) x 16 + 2 = 290" in lines
    assert any(line.startswith("recommended: at most 110 (2 vCPUs") for line in lines)
    assert lines[-1] == "max pods = 110"


def test_cli_unknown_type_is_one_line_and_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert run_max_pods(["x9.mega"]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.count("\n") == 1 and "'x9.mega'" in err and "cloud-cni max-pods --list" in err


def test_cli_list(capsys: pytest.CaptureFixture[str]) -> None:
    assert run_max_pods(["--list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == len(KNOWN_LIMITS)
    assert "m5.large\t3 ENIs x 10 IPv4\t2 vCPUs\tnitro" in lines
    assert lines.index("m5.large\t3 ENIs x 10 IPv4\t2 vCPUs\tnitro") < lines.index(
        "m5.xlarge\t4 ENIs x 15 IPv4\t4 vCPUs\tnitro"
    )


def test_cli_wires_into_a_parent_parser(capsys: pytest.CaptureFixture[str]) -> None:
    parser = argparse.ArgumentParser(prog="cloud-cni")
    sub = parser.add_subparsers(dest="command", required=True)
    add_max_pods_parser(sub)
    args = parser.parse_args(["max-pods", "m5.large", "--custom-networking"])
    assert args.command == "max-pods"
    assert run_max_pods(args) == 0
    assert capsys.readouterr().out == "20\n"
    with pytest.raises(SystemExit) as exit_info:
        parser.parse_args(["max-pods", "m5.large", "--cpu-count", "0"])
    assert exit_info.value.code == 2
