"""Short runs of the soak scripts (bench/soak_cni.py, bench/soak_kill.py), and checks that their
checkers, and the CI rule of tests/conftest.py, do fail when they should.

The full runs (10,000 fuzzed CNI calls, 100 SIGKILLs) are in docs/performance.md.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

pytestmark = pytest.mark.integration

BENCH = Path(__file__).resolve().parents[2] / "bench"


def _load(name: str) -> ModuleType:
    if str(BENCH) not in sys.path:
        sys.path.insert(0, str(BENCH))  # the scripts import bench/_daemon.py as `_daemon`
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, BENCH / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


soak_cni = _load("soak_cni")
soak_kill = _load("soak_kill")


def test_fuzzed_cni_calls_through_the_shim_find_nothing() -> None:
    with soak_cni.Daemon(**soak_cni.DAEMON_ENV) as daemon:
        daemon.wait_available(16)
        report = soak_cni.soak(daemon, calls=300, seed=11, workers=4)
        assert report.violations == []
        assert report.calls == 300 and report.daemon_alive and report.spool_drained
        verbs = {verb for verb, _ in report.outcomes}
        assert verbs == {"ADD", "DEL", "CHECK", "GC", "STATUS", "VERSION"}
        assert report.outcomes[("ADD", "ok")] > 0 and report.outcomes[("DEL", "ok")] > 0
        assert sum(n for (_, label), n in report.outcomes.items() if label != "ok") > 0, "mutations bite"

        # The end-state check itself: an attachment the daemon does not hold is reported.
        model = soak_cni.Model()
        model.live[("cloud-cni", "never-added", "eth0")] = "10.9.9.9"
        tampered = soak_cni.Report()
        soak_cni.final_check(daemon, model, tampered)
        assert any("never-added" in v for v in tampered.violations), tampered.violations


def test_cni_output_check_rejects_a_traceback_and_a_bare_failure() -> None:
    call = soak_cni.Call("ADD", {"CNI_COMMAND": "ADD"}, b"{}", [])
    report = soak_cni.Report()
    soak_cni.check_output(call, soak_cni.Outcome(1, b"", b"Traceback (most recent call last):", 0.0), report)
    soak_cni.check_output(call, soak_cni.Outcome(1, b'{"code": "7", "msg": "x"}', b"", 0.0), report)
    soak_cni.check_output(call, soak_cni.Outcome(0, b'{"cniVersion": "1.0.0"}', b"", 0.0), report)
    assert len(report.violations) == 4, report.violations  # traceback + no JSON, bad error, no result


def test_sigkill_under_churn_loses_leaks_and_resurrects_nothing() -> None:
    with soak_kill.make_daemon() as daemon:
        daemon.wait_available(4)
        report, tracker = soak_kill.soak(daemon, kills=5, seed=3, workers=4, max_churn=0.6)
        assert report.violations == []
        assert report.kills >= 5 and report.restarts == 5 and report.checks == 6
        assert report.calls["ADD"] > 20 and report.calls["DEL"] > 20
        assert report.retries > 0, "no call was ever cut by a kill"

        # The state check itself: a live ADD the daemon never saw is reported as lost.
        tracker.live["kill-ghost"] = "10.9.9.9"
        tampered = soak_kill.Report()
        soak_kill.check_state(daemon, tracker, tampered, "tampered")
        assert any("kill-ghost" in v and "lost" in v for v in tampered.violations), tampered.violations


def _monitor(could_grow: bool) -> object:
    monitor = soak_kill.PoolMonitor.__new__(soak_kill.PoolMonitor)
    monitor.interval = 0.1
    monitor.samples = [(100.0 + i / 10, could_grow) for i in range(30)]
    return monitor


@pytest.mark.parametrize(
    ("could_grow", "override_wait", "answered", "expected"),
    [
        (True, 2.0, 101.0, (1, 0, 0)),
        (False, 2.0, 101.0, (0, 1, 0)),
        (True, 0.5, 101.3, (0, 0, 1)),
        (True, 2.0, 103.0, (0, 0, 0)),
    ],
    ids=["early-while-pool-could-grow", "pool-blocked", "after-the-wait", "cooled"],
)
def test_cooldown_check(
    could_grow: bool, override_wait: float, answered: float, expected: tuple[int, int, int]
) -> None:
    """A DEL first sent at 100.5 (cool-down 2 s) and an ADD sent at 100.7 getting the same IP:
    (violations, overrides while the pool could not grow, overrides after the daemon's wait)."""
    tracker = soak_kill.Tracker()
    tracker.releases["10.0.0.9"].append(soak_kill.Release("old", "10.0.0.9", 100.5, 100.6))
    tracker.handouts.append(soak_kill.Handout("new", "10.0.0.9", 100.7, answered))
    report = soak_kill.Report(override_wait=override_wait)
    soak_kill.check_cooldown(tracker, _monitor(could_grow), report)
    counts = (len(report.violations), report.overrides_pool_blocked, report.overrides_after_wait)
    assert counts == expected, report.violations


# The inner runs need neither the cache nor hypothesis (its plugin costs seconds at session start).
QUIET = ("-p", "no:cacheprovider", "-p", "no:hypothesispytest")


def test_ci_fails_a_skipped_root_test(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    pytester.makeini("[pytest]\nmarkers =\n    root: needs root\n")
    pytester.makeconftest("from tests.conftest import pytest_runtest_makereport  # noqa: F401\n")
    pytester.makepyfile(
        """
        import pytest

        @pytest.mark.root
        @pytest.mark.skipif(True, reason="network namespaces need root")
        def test_root_skipif():
            pass

        @pytest.mark.root
        def test_root_skip_in_body():
            pytest.skip("no containerd")

        @pytest.mark.root
        def test_root_runs():
            pass

        @pytest.mark.root
        @pytest.mark.xfail(reason="known")
        def test_root_xfail():
            assert False

        def test_other_skip():
            pytest.skip("by design")
        """
    )
    monkeypatch.setenv("CI", "true")
    ci = pytester.runpytest(*QUIET)
    ci.assert_outcomes(passed=1, failed=1, errors=1, skipped=1, xfailed=1)
    ci.stdout.fnmatch_lines(["*CI=true and this test is marked `root`*network namespaces need root*"])
    monkeypatch.setenv("CI", "false")
    local = pytester.runpytest(*QUIET)
    local.assert_outcomes(passed=1, skipped=3, xfailed=1)
