"""The reflector's backoff: growing while the API keeps failing, back to its bottom once a watch
streams again (a watch that worked for hours and is then cut must not wait as if it had failed for
hours), with an API double that lists, streams and cuts as told."""

from __future__ import annotations

import random
from collections.abc import Iterator, Mapping
from typing import Any, cast

from ipamd.k8s.api import ApiError, KubeApi
from ipamd.k8s.reflector import BACKOFF_MIN, Reflector


class CuttingApi:
    """Lists one object; each watch yields ``events`` events (0: none) and is then cut."""

    def __init__(self, events: int) -> None:
        self.events = events
        self.rv = 10

    def request(self, method: str, path: str, **kw: Any) -> dict[str, Any]:
        return {"items": [], "metadata": {"resourceVersion": str(self.rv)}}

    def watch(self, path: str, query: Mapping[str, str], *, timeout: float) -> Iterator[dict[str, Any]]:
        for _ in range(self.events):
            self.rv += 1
            yield {"type": "BOOKMARK", "object": {"metadata": {"resourceVersion": str(self.rv)}}}
        raise ApiError(0, "", "Response ended prematurely")


def delays(events: int, cuts: int = 8) -> list[float]:
    slept: list[float] = []
    reflector: Reflector

    def sleep(seconds: float) -> bool:
        slept.append(seconds)
        if len(slept) >= cuts:
            reflector.stop()
        return False

    reflector = Reflector(
        cast(KubeApi, CuttingApi(events)),
        "pods",
        "/api/v1/pods",
        replace=lambda items: None,
        apply=lambda kind, obj: None,
        rng=random.Random(7),
        sleep=sleep,
    )
    reflector.run()
    return slept


def test_backoff_grows_while_no_watch_streams() -> None:
    slept = delays(events=0)
    assert slept[-1] > 8 * BACKOFF_MIN  # 0.8 s doubling: well past its bottom after 8 failures


def test_a_watch_that_streamed_starts_the_backoff_again_from_its_bottom() -> None:
    slept = delays(events=3)
    assert all(d <= 1.5 * BACKOFF_MIN for d in slept), slept  # jitter 0.5-1.5 x the first step
