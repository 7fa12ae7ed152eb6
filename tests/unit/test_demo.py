"""The demo's explanation of the pool it held: computed from the settings and the samples."""

from __future__ import annotations

from ipamd.demo import Sample, explain

SETTINGS = {"ENABLE_PREFIX_DELEGATION": True, "WARM_PREFIX_TARGET": 1, "IP_COOLDOWN_PERIOD": 4.0}
FIVE_PREFIXES = [f"10.0.{i}.16/28" for i in range(5)]


def test_peak_is_explained_by_assigned_cooling_and_the_warm_prefix() -> None:
    peak = Sample(3.5, total=80, assigned=30, cooling=20, prefixes=FIVE_PREFIXES)
    idle = Sample(12.0, total=16, assigned=0, cooling=0, prefixes=FIVE_PREFIXES[:1])
    text = "\n".join(explain(SETTINGS, peak, 30, idle))
    assert "Why 80 addresses for at most 30 pods" in text
    assert "80 addresses = 5 prefixes of 16: 30 assigned to pods, 20 cooling, 30 free" in text
    assert "ENABLE_PREFIX_DELEGATION=true" in text
    assert "IP_COOLDOWN_PERIOD=4.0 s" in text
    assert "WARM_PREFIX_TARGET=1: the daemon keeps 16 addresses free" in text
    assert "30 + 20 + 16 = 66 addresses, rounded up to whole prefixes: 5 x 16 = 80" in text
    assert "idle, with no pod left: 16 addresses = 1 prefix of 16" in text


def test_the_sum_is_not_claimed_when_the_samples_do_not_add_up() -> None:
    peak = Sample(3.5, total=80, assigned=10, cooling=0, prefixes=FIVE_PREFIXES)
    text = "\n".join(explain(SETTINGS, peak, 10, None))
    assert "rounded up" not in text
    assert "10 assigned to pods, 0 cooling, 70 free" in text


def test_without_prefixes_the_explanation_speaks_of_addresses() -> None:
    settings = {"WARM_IP_TARGET": 5, "IP_COOLDOWN_PERIOD": 30}
    peak = Sample(1.0, total=12, assigned=7, cooling=0)
    text = "\n".join(explain(settings, peak, 7, None))
    assert "the pool held 12 addresses: 7 assigned to pods, 0 cooling, 5 free" in text
    assert "prefix" not in text
    assert "WARM_IP_TARGET=5" in text
