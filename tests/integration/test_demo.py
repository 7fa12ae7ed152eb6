"""``cloud-cni demo`` as a newcomer runs it: the real daemon and the real plugin, start to finish."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


def demo(*args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-c", "import sys; from ipamd.cli import main; sys.exit(main())", "demo", *args],
        capture_output=True,
        text=True,
        timeout=180,
        cwd=ROOT,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def test_the_windows_demo_makes_two_hcn_calls_per_add_and_per_del_and_leaves_no_endpoint() -> None:
    out = demo("--pods", "6", "--datapath", "windows")
    started = int(re.search(r"pods started\s+(\d+) \(0 failed\)", out).group(1))  # type: ignore[union-attr]
    calls = dict(re.findall(r"(\w+) (\d+)", re.search(r"HCN calls\s+(.*)", out).group(1)))  # type: ignore[union-attr]
    assert int(calls["create_endpoint"]) == started
    assert int(calls["delete_endpoint"]) == started
    assert int(calls["modify_namespace"]) == 2 * started  # attach on ADD, detach on DEL
    assert re.search(r"HCN networks / endpoints left\s+1 / 0", out), out
