"""Fixtures shared across test packages: the local fakes of the clouds (loopback only) and the
containerd harness; and the CI rule that a root-only test may not skip there."""

from __future__ import annotations

import os
from collections.abc import Generator

import pytest

pytest_plugins = [
    "tests.fakes.moto_ec2",
    "tests.fakes.imds",
    "tests.fakes.azure_arm",
    "tests.fakes.containerd",
    "tests.fakes.kube_apiserver",
    "pytester",  # tests/integration/test_soak.py runs a generated test file to check the CI rule below
]

ROOT_SKIP_IN_CI = (
    "CI=true and this test is marked `root`: CI runs as root, so a skip here means the datapath, SNAT, "
    "containerd or node-init checks did not run at all. Skipped because: {reason}"
)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """In CI (CI=true), a skipped test marked `root` fails the run instead of skipping silently.

    Only `root`-marked tests are in scope: other skips are by design and stay skips, e.g. the DEL
    case of tests/integration/test_shim_exec.py that another test covers, or
    tests/integration/test_install_shim.py on interpreters without a shared libpython. An expected
    failure (xfail) is not a skip and is left alone.
    """
    report = yield
    if (
        report.skipped
        and not hasattr(report, "wasxfail")
        and item.get_closest_marker("root") is not None
        and os.environ.get("CI") == "true"
    ):
        longrepr = report.longrepr
        reason = longrepr[2] if isinstance(longrepr, tuple) and len(longrepr) == 3 else str(longrepr)
        reason = reason.removeprefix("Skipped: ")
        report.outcome = "failed"
        report.longrepr = ROOT_SKIP_IN_CI.format(reason=reason)
    return report
