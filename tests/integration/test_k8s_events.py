"""The event recorder through the real client against the fake kube-apiserver, on a simulated clock:
series aggregation, the client-go-style budget, a bounded queue, retries."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ipamd.events import Event, NodeReporter, Regarding
from ipamd.k8s.api import ConfigSource, KubeApi
from ipamd.k8s.recorder import BURST, EventRecorder
from ipamd.pool.model import PodRef
from tests.fakes.kube_apiserver import KubeApiServer

pytestmark = pytest.mark.integration

NODE = "node-a"


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)


@pytest.fixture
def api(kube_apiserver: KubeApiServer, tmp_path: Path) -> Iterator[KubeApi]:
    kube_apiserver.add_node(NODE)
    kube_apiserver.add_namespace("team")
    source = ConfigSource("kubeconfig", kube_apiserver.kubeconfig(tmp_path / "kubeconfig"))
    yield KubeApi.from_source(source)


def writes(server: KubeApiServer) -> list[str]:
    return [r.verb for r in server.requests if r.resource == "events"]


def throttled(note: str = "throttled") -> Event:
    return Event(Regarding("Node", NODE), "Warning", "CloudThrottled", "CallCloudAPI", note)


def test_a_ten_minute_storm_is_one_event_and_a_few_writes(
    api: KubeApi, kube_apiserver: KubeApiServer
) -> None:
    clock = Clock()
    recorder = EventRecorder(api, f"ipamd-{NODE}", clock=clock, sleep=clock.sleep)
    emitted = 0
    end = clock.now + 600
    while clock.now < end:
        for _ in range(10):  # 100 throttled calls a second, each reported (a worst case)
            recorder.emit(throttled(f"call {emitted}"))
            emitted += 1
        recorder.pump()
        clock.now += 0.1
    clock.now += 61
    recorder.pump()
    events = kube_apiserver.events()
    assert len(events) == 1
    assert events[0]["series"]["count"] == emitted >= 60_000
    assert events[0]["note"] == "call 0"  # immutable: the first occurrence's
    verbs = writes(kube_apiserver)
    assert verbs.count("create") == 1
    assert len(verbs) <= 12, verbs  # one create, then at most one series update a minute
    assert recorder.stats.dropped_budget == recorder.stats.dropped_queue == 0


def test_budget_per_object_and_type(api: KubeApi, kube_apiserver: KubeApiServer) -> None:
    clock = Clock()
    recorder = EventRecorder(api, f"ipamd-{NODE}", clock=clock, sleep=clock.sleep)
    reporter = NodeReporter(recorder, NODE)
    for i in range(BURST + 5):  # distinct conditions: each is a new Event
        reporter.node(f"Reason{i}", "x", action="Test")
    recorder.pump()
    assert len(kube_apiserver.events()) == BURST
    assert recorder.stats.dropped_budget == 5
    # Another object, or another type, has its own budget.
    reporter.pod(PodRef("default", "p", "u"), "IPAllocationDelayed", "waited", action="AssignIP")
    reporter.node("Fine", "ok", action="Test", type="Normal")
    recorder.pump()
    assert len(kube_apiserver.events()) == BURST + 2
    # One token back per 5 minutes.
    clock.now += 301
    reporter.node("Later", "x", action="Test")
    reporter.node("Later2", "x", action="Test")
    recorder.pump()
    assert len(kube_apiserver.events()) == BURST + 3
    assert recorder.stats.dropped_budget == 6


def test_a_full_queue_drops_without_blocking(api: KubeApi, kube_apiserver: KubeApiServer) -> None:
    recorder = EventRecorder(api, "x", queue_size=10)
    t0 = time.perf_counter()
    for i in range(100):
        recorder.emit(throttled(str(i)))
    assert time.perf_counter() - t0 < 0.5
    assert recorder.stats.dropped_queue == 90
    assert recorder.stats.public(recorder.queued())["dropped"] == 90


def test_429_is_retried_after_retry_after_and_a_dead_api_drops(
    api: KubeApi, kube_apiserver: KubeApiServer
) -> None:
    clock = Clock()
    recorder = EventRecorder(api, "x", clock=clock, sleep=clock.sleep)
    kube_apiserver.fail_next(1, 429, retry_after=2, path_contains="/events")
    recorder.emit(throttled())
    recorder.pump()
    assert len(kube_apiserver.events()) == 1
    assert clock.slept == [2.0]
    kube_apiserver.refuse()
    recorder.emit(Event(Regarding("Node", NODE), "Warning", "SubnetExhausted", "GrowPool", "full"))
    recorder.pump()  # never raises
    assert recorder.stats.dropped_failed == 1


def test_pod_event_shape(api: KubeApi, kube_apiserver: KubeApiServer) -> None:
    clock = Clock()
    clock.now = 1_800_000_000.0  # a whole second: the MicroTime keeps its fraction
    recorder = EventRecorder(api, f"ipamd-{NODE}", clock=clock)
    NodeReporter(recorder, NODE).pod(
        PodRef("team", "web", "uid-1"), "IPAllocationDelayed", "n" * 5000, action="AssignIP"
    )
    recorder.pump()
    (event,) = kube_apiserver.events()
    assert event["metadata"]["namespace"] == "team"
    assert event["regarding"] == {
        "apiVersion": "v1",
        "kind": "Pod",
        "name": "web",
        "namespace": "team",
        "uid": "uid-1",
    }
    assert event["eventTime"].endswith(".000000Z")
    assert len(event["note"]) == 1024
