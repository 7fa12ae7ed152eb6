"""The fake kube-apiserver (tests/fakes/kube_apiserver.py) driven by the real ``kubernetes`` client.

Every test talks HTTPS to 127.0.0.1 with the fake's CA file (certificate verification on) and the
bearer token from the kubeconfig the fake writes, so the fake is pinned to what the client sends and
accepts. An autouse guard refuses non-loopback connects and clears proxy variables.
"""

from __future__ import annotations

import datetime
import ipaddress
import json
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import urllib3
from kubernetes import client, config, watch
from kubernetes.client import ApiClient, ApiException
from kubernetes.config import incluster_config

from tests.fakes.admission import Admission, pod_token_user
from tests.fakes.azure_tls import make_tls_files
from tests.fakes.kube_apiserver import (
    ENICONFIG_GROUP,
    ENICONFIG_VERSION,
    NAMESPACE_NAME_LABEL,
    KubeApiServer,
)

pytestmark = pytest.mark.integration

READ_TIMEOUT = (5, 5)  # a watch that misses an expected event fails in seconds instead of hanging
TAINT_A = {"key": "example.com/a", "value": "x", "effect": "NoSchedule"}
TAINT_B = {"key": "example.com/b", "effect": "NoExecute"}
TAINT_C = {"key": "example.com/c", "effect": "NoSchedule"}
_PROXY_ENV = (
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "ALL_PROXY",
    "http_proxy",
    "https_proxy",
    "all_proxy",
    "KUBECONFIG",
)


@pytest.fixture(autouse=True)
def _loopback_only(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in _PROXY_ENV:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    real_connect = socket.socket.connect

    def connect(sock: socket.socket, address: Any) -> None:
        if sock.family in (socket.AF_INET, socket.AF_INET6):
            assert ipaddress.ip_address(address[0]).is_loopback, f"non-loopback connect to {address!r}"
        real_connect(sock, address)

    monkeypatch.setattr(socket.socket, "connect", connect)


@pytest.fixture
def kube(kube_apiserver: KubeApiServer) -> KubeApiServer:
    kube_apiserver.add_node("node-a", taints=[TAINT_A, TAINT_B], labels={"zone": "z1"})
    kube_apiserver.add_node("node-b")
    return kube_apiserver


@pytest.fixture
def api(kube: KubeApiServer, tmp_path: Path) -> Iterator[ApiClient]:
    api_client = config.new_client_from_config(config_file=kube.kubeconfig(tmp_path / "kubeconfig"))
    try:
        yield api_client
    finally:
        api_client.close()


@pytest.fixture
def core(api: ApiClient) -> client.CoreV1Api:
    return client.CoreV1Api(api)


@pytest.fixture
def events_api(api: ApiClient) -> client.EventsV1Api:
    return client.EventsV1Api(api)


@pytest.fixture
def networking(api: ApiClient) -> client.NetworkingV1Api:
    return client.NetworkingV1Api(api)


def _status(err: ApiException) -> dict[str, Any]:
    body = json.loads(err.body)
    assert body["kind"] == "Status" and body["apiVersion"] == "v1" and body["status"] == "Failure"
    assert body["code"] == err.status
    return dict(body)


def _micro_now() -> str:
    now = datetime.datetime.now(datetime.UTC)
    # Never a whole second: the typed client re-serialises it with isoformat(), which drops ".000000".
    return now.replace(microsecond=now.microsecond or 1).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _event(name: str, **overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "metadata": {"name": name},
        "eventTime": _micro_now(),
        "reportingController": "cloud-cni.io/ipamd",
        "reportingInstance": "ipamd-node-a",
        "action": "AllocateIP",
        "reason": "WarmPoolLow",
        "note": "warm pool below target",
        "type": "Normal",
        "regarding": {"apiVersion": "v1", "kind": "Node", "name": "node-a"},
    }
    body.update(overrides)
    return body


def _raw(api: ApiClient, method: str, path: str, body: Any = None, content_type: str | None = None) -> Any:
    """A request the generated methods would refuse client-side, sent through the same ApiClient."""
    headers = {"Accept": "application/json"}
    if content_type:
        headers["Content-Type"] = content_type
    params = api.param_serialize(
        method=method, resource_path=path, header_params=headers, body=body, auth_settings=["BearerToken"]
    )
    response = api.call_api(*params)
    response.read()
    return response


def _taint(taint: client.V1Taint) -> dict[str, str]:
    return {k: v for k, v in (("key", taint.key), ("value", taint.value), ("effect", taint.effect)) if v}


def _causes(err: ApiException) -> list[str]:
    return [cause["field"] for cause in _status(err)["details"]["causes"]]


def _watch_until(list_fn: Callable[..., Any], *args: Any, last: str, **kwargs: Any) -> list[tuple[str, str]]:
    """A watch's events as (type, "namespace/name" or "name"), up to the first about ``last``: a test
    writes ``last`` after the changes it expects, so the list holds every event the watch sent."""
    w = watch.Watch()
    seen = []
    for event in w.stream(list_fn, *args, _request_timeout=READ_TIMEOUT, **kwargs):
        meta = event["raw_object"]["metadata"]
        key = f"{meta['namespace']}/{meta['name']}" if meta.get("namespace") else meta["name"]
        seen.append((event["type"], key))
        if key == last:
            w.stop()
    return seen


# --- connection, TLS and authentication ---------------------------------------------------------


def test_kubeconfig_names_the_fake_with_its_ca_and_token(kube: KubeApiServer, tmp_path: Path) -> None:
    path = kube.kubeconfig(tmp_path / "kubeconfig")
    cfg = client.Configuration()
    config.load_kube_config(config_file=path, client_configuration=cfg)
    assert cfg.host == kube.url and cfg.host.startswith("https://127.0.0.1:")
    assert cfg.verify_ssl is True and Path(cfg.ssl_ca_cert).resolve() == Path(kube.ca_path).resolve()
    assert cfg.api_key["BearerToken"] == f"Bearer {kube.token}"
    with ApiClient(cfg) as api_client:
        assert client.VersionApi(api_client).get_code().git_version.startswith("v1.")
        assert client.CoreV1Api(api_client).read_node("node-a").metadata.name == "node-a"


def test_a_client_trusting_another_ca_fails_the_handshake(kube: KubeApiServer, tmp_path: Path) -> None:
    cfg = client.Configuration(host=kube.url, retries=False)
    cfg.ssl_ca_cert = make_tls_files(tmp_path / "other-ca").ca_path
    cfg.api_key = {"BearerToken": f"Bearer {kube.token}"}
    with ApiClient(cfg) as api_client, pytest.raises(ApiException) as err:
        client.CoreV1Api(api_client).read_node("node-a")
    assert err.value.status == 0 and "CERTIFICATE_VERIFY_FAILED" in err.value.reason
    assert kube.requests == []


def test_the_in_cluster_config_authenticates_as_the_apiserver_reads_the_header(
    kube: KubeApiServer, tmp_path: Path
) -> None:
    """The client's in-cluster loader sends ``authorization: bearer <token>`` (lower-case scheme): the
    apiserver's authenticator takes the scheme in any case, so must the fake."""
    (tmp_path / "token").write_text(kube.token)
    (tmp_path / "ca.crt").write_bytes(Path(kube.ca_path).read_bytes())
    env = {"KUBERNETES_SERVICE_HOST": "127.0.0.1", "KUBERNETES_SERVICE_PORT": str(kube.port)}
    cfg = client.Configuration()
    loader = incluster_config.InClusterConfigLoader(
        token_filename=str(tmp_path / "token"), cert_filename=str(tmp_path / "ca.crt"), environ=env
    )
    loader.load_and_set(cfg)
    assert cfg.api_key["BearerToken"] == f"bearer {kube.token}"
    with ApiClient(cfg) as api_client:
        assert client.CoreV1Api(api_client).read_node("node-a").metadata.name == "node-a"


def test_requests_without_the_bearer_token_get_401(kube: KubeApiServer) -> None:
    for token in (None, "Bearer not-the-token", f"Basic {kube.token}", "Bearer", f"{kube.token}"):
        cfg = client.Configuration(host=kube.url)
        cfg.ssl_ca_cert = kube.ca_path
        if token:
            cfg.api_key = {"BearerToken": token}
        with ApiClient(cfg) as api_client, pytest.raises(client.exceptions.UnauthorizedException) as err:
            client.CoreV1Api(api_client).read_node("node-a")
        body = _status(err.value)
        assert (err.value.status, body["reason"], body["message"]) == (401, "Unauthorized", "Unauthorized")
    assert [(r.verb, r.resource, r.name, r.status) for r in kube.requests] == [
        ("get", "nodes", "node-a", 401)
    ] * 5


# --- reads ---------------------------------------------------------------------------------------


def test_missing_objects_and_unknown_paths_are_404_statuses(
    kube: KubeApiServer, api: ApiClient, core: client.CoreV1Api, events_api: client.EventsV1Api
) -> None:
    with pytest.raises(client.exceptions.NotFoundException) as err:
        core.read_node("nope")
    body = _status(err.value)
    assert body["reason"] == "NotFound" and body["message"] == 'nodes "nope" not found'
    assert body["details"] == {"name": "nope", "kind": "nodes"}
    with pytest.raises(ApiException) as err:
        events_api.read_namespaced_event("gone", "default")
    assert _status(err.value)["details"] == {"name": "gone", "group": "events.k8s.io", "kind": "events"}
    response = _raw(api, "GET", "/api/v1/widgets")
    assert response.status == 404
    assert json.loads(response.data)["message"] == "the server could not find the requested resource"


def test_get_and_list_nodes_and_pods_with_selectors(kube: KubeApiServer, core: client.CoreV1Api) -> None:
    kube.add_pod("default", "web-1", "node-a", labels={"app": "web"}, pod_ip="10.1.0.5")
    kube.add_pod("kube-system", "dns-1", "node-a", labels={"app": "dns"})
    kube.add_pod("default", "web-2", "node-b", labels={"app": "web"})
    kube.add_pod("default", "pending", None)

    def names(pods: Any) -> list[str]:
        return [p.metadata.name for p in pods.items]

    assert names(core.list_pod_for_all_namespaces(field_selector="spec.nodeName=node-a")) == [
        "web-1",
        "dns-1",
    ]
    assert names(core.list_namespaced_pod("default", field_selector="spec.nodeName=node-a")) == ["web-1"]
    assert names(core.list_pod_for_all_namespaces(field_selector="spec.nodeName=")) == ["pending"]
    both = core.list_pod_for_all_namespaces(field_selector="spec.nodeName!=node-b,metadata.namespace=default")
    assert names(both) == ["pending", "web-1"]
    assert names(core.list_pod_for_all_namespaces(label_selector="app=web")) == ["web-1", "web-2"]
    assert names(core.list_pod_for_all_namespaces(label_selector="app in (dns),!missing")) == ["dns-1"]
    assert [n.metadata.name for n in core.list_node(field_selector="metadata.name=node-b").items] == [
        "node-b"
    ]
    pod = core.read_namespaced_pod("web-1", "default")
    assert (pod.spec.node_name, pod.status.pod_ip) == ("node-a", "10.1.0.5")
    with pytest.raises(ApiException) as err:
        core.list_pod_for_all_namespaces(field_selector="spec.bogus=1")
    assert (
        err.value.status == 400 and _status(err.value)["message"] == "field label not supported: spec.bogus"
    )
    raw = json.loads(core.list_namespaced_pod("default", _preload_content=False).data)
    assert raw["kind"] == "PodList" and raw["apiVersion"] == "v1"
    assert all("kind" not in item and "apiVersion" not in item for item in raw["items"])


def test_resource_versions_increase_on_writes_only(kube: KubeApiServer, core: client.CoreV1Api) -> None:
    first = int(core.read_node("node-a").metadata.resource_version)
    patched = core.patch_node("node-a", {"metadata": {"labels": {"ready": "yes"}}})
    second = int(patched.metadata.resource_version)
    pod = kube.add_pod("default", "p", "node-a")
    third = int(pod["metadata"]["resourceVersion"])
    assert first < second < third
    assert pod["metadata"]["uid"] and pod["metadata"]["creationTimestamp"].endswith("Z")
    assert int(core.list_node().metadata.resource_version) == third == int(kube.resource_version)
    noop = core.patch_node("node-a", {"metadata": {"labels": {"ready": "yes"}}})
    assert noop.metadata.resource_version == str(second) and kube.resource_version == str(third)


def test_lists_from_cache_and_consistent_lists_are_counted_apart(
    kube: KubeApiServer, core: client.CoreV1Api
) -> None:
    core.list_node(resource_version="0")
    core.list_pod_for_all_namespaces(resource_version="0", field_selector="spec.nodeName=node-a")
    core.list_node()
    assert kube.list_reads("nodes") == {"rv0": 1, "consistent": 1, "exact": 0}
    assert kube.list_reads() == {"rv0": 2, "consistent": 1, "exact": 0}
    assert [r.query.get("resourceVersion") for r in kube.requests] == ["0", "0", None]


def test_list_pages_with_limit_and_continue(kube: KubeApiServer, core: client.CoreV1Api) -> None:
    for i in range(5):
        kube.add_pod("default", f"p{i}", "node-a")
    first = core.list_namespaced_pod("default", limit=2)
    assert [p.metadata.name for p in first.items] == ["p0", "p1"]
    assert first.metadata.remaining_item_count == 3 and first.metadata._continue
    kube.add_pod("default", "p5", "node-a")  # after the snapshot: not in this list
    second = core.list_namespaced_pod("default", limit=2, _continue=first.metadata._continue)
    third = core.list_namespaced_pod("default", limit=2, _continue=second.metadata._continue)
    assert [p.metadata.name for p in second.items + third.items] == ["p2", "p3", "p4"]
    assert (
        third.metadata._continue is None
        and third.metadata.resource_version == first.metadata.resource_version
    )
    kube.compact()
    with pytest.raises(ApiException) as err:
        core.list_namespaced_pod("default", limit=2, _continue=first.metadata._continue)
    assert err.value.status == 410 and _status(err.value)["reason"] == "Expired"


def test_a_node_count_with_limit_1_and_where_limit_is_ignored_or_the_count_left_out(
    kube: KubeApiServer, core: client.CoreV1Api
) -> None:
    for i in range(3):
        kube.add_node(f"node-{i}", labels={"pool": "x"})
    # a consistent read with limit=1: one Node, the rest counted (what CLOUD_API_BUDGET polls)
    counted = core.list_node(limit=1)
    assert [n.metadata.name for n in counted.items] == ["node-0"]
    assert counted.metadata.remaining_item_count == 4 and counted.metadata._continue
    # resourceVersion=0 is served from the watch cache, which does not page: every Node, no count
    cached = core.list_node(limit=1, resource_version="0")
    assert len(cached.items) == 5
    assert cached.metadata.remaining_item_count is None and cached.metadata._continue is None
    # a selector: still paged, but etcd's count would include what it drops, so none is given
    selected = core.list_node(limit=1, label_selector="pool=x")
    assert len(selected.items) == 1 and selected.metadata._continue
    assert selected.metadata.remaining_item_count is None
    assert kube.list_reads("nodes") == {"rv0": 1, "consistent": 2, "exact": 0}


# --- watches -------------------------------------------------------------------------------------


def test_watch_replays_every_change_after_a_resource_version(
    kube: KubeApiServer, core: client.CoreV1Api
) -> None:
    kube.add_pod("default", "old", "node-a")
    listed = core.list_pod_for_all_namespaces(resource_version="0")
    kube.add_pod("default", "new", "node-a")
    kube.update_pod("default", "new", lambda p: p["metadata"].setdefault("labels", {}).update(v="2"))
    kube.delete_pod("default", "old")
    w = watch.Watch()
    seen = []
    for event in w.stream(
        core.list_pod_for_all_namespaces,
        resource_version=listed.metadata.resource_version,
        _request_timeout=READ_TIMEOUT,
    ):
        seen.append(
            (event["type"], event["object"].metadata.name, int(event["object"].metadata.resource_version))
        )
        if len(seen) == 3:
            w.stop()
    assert [s[:2] for s in seen] == [("ADDED", "new"), ("MODIFIED", "new"), ("DELETED", "old")]
    rvs = [s[2] for s in seen]
    assert int(listed.metadata.resource_version) < rvs[0] < rvs[1] < rvs[2] == int(kube.resource_version)
    assert kube.wait_for_watches(0), "the fake noticed the client hanging up"


def test_watch_from_now_starts_with_synthetic_added_then_goes_live(
    kube: KubeApiServer, core: client.CoreV1Api
) -> None:
    w = watch.Watch()
    seen = []
    for event in w.stream(core.list_node, _request_timeout=READ_TIMEOUT):
        seen.append((event["type"], event["object"].metadata.name))
        if len(seen) == 2:
            kube.patch_node_direct("node-b", lambda n: n["metadata"]["labels"].update(role="x"))
        if len(seen) == 3:
            assert event["object"].metadata.labels["role"] == "x"
            w.stop()
    assert seen == [("ADDED", "node-a"), ("ADDED", "node-b"), ("MODIFIED", "node-b")]
    assert kube.requests[-1].verb == "watch" and kube.requests[-1].query["watch"] == "true"


def test_selectors_apply_to_watch_events(kube: KubeApiServer, core: client.CoreV1Api) -> None:
    """Objects entering the selection are ADDED, leaving it DELETED (previous content, new RV)."""
    start = kube.resource_version
    kube.add_pod("default", "pending", None)  # not on node-a: nothing
    kube.update_pod("default", "pending", lambda p: p["spec"].update(nodeName="node-a"))  # bound: ADDED
    kube.add_pod("default", "elsewhere", "node-b")  # nothing
    kube.update_pod("default", "pending", lambda p: p["status"].update(phase="Succeeded"))  # DELETED
    done = kube.add_pod("default", "marker", "node-a")  # ADDED: everything before it has been sent
    w = watch.Watch()
    seen: list[tuple[str, str, str]] = []
    for event in w.stream(
        core.list_pod_for_all_namespaces,
        field_selector="spec.nodeName=node-a,status.phase=Running",
        resource_version=start,
        _request_timeout=READ_TIMEOUT,
    ):
        obj = event["raw_object"]
        seen.append((event["type"], obj["metadata"]["name"], obj["status"]["phase"]))
        if obj["metadata"]["name"] == "marker":
            w.stop()
    assert seen == [
        ("ADDED", "pending", "Running"),
        ("DELETED", "pending", "Running"),
        ("ADDED", "marker", "Running"),
    ]
    assert int(done["metadata"]["resourceVersion"]) == int(kube.resource_version)


def test_bookmarks_come_only_when_allowed(kube: KubeApiServer, core: client.CoreV1Api) -> None:
    kube.bookmark_interval = 0.1
    w = watch.Watch()
    types = []
    for event in w.stream(core.list_node, allow_watch_bookmarks=True, _request_timeout=READ_TIMEOUT):
        types.append(event["type"])
        if event["type"] == "BOOKMARK":
            raw = event["raw_object"]
            assert raw == {
                "kind": "Node",
                "apiVersion": "v1",
                "metadata": {"resourceVersion": kube.resource_version},
            }
            assert w.resource_version == kube.resource_version
        if types.count("BOOKMARK") == 2:
            w.stop()
    assert types[:2] == ["ADDED", "ADDED"] and types[2:] == ["BOOKMARK", "BOOKMARK"]
    assert kube.wait_for_watches(0)

    w = watch.Watch()
    types = []
    for event in w.stream(core.list_node, _request_timeout=READ_TIMEOUT):
        types.append(event["type"])
        if len(types) == 2:
            assert kube.send_bookmarks() == 0
            time.sleep(0.3)  # three periodic bookmark intervals
            kube.patch_node_direct("node-a", lambda n: n["metadata"]["labels"].update(seen="1"))
        if event["type"] == "MODIFIED":
            w.stop()
    assert types == ["ADDED", "ADDED", "MODIFIED"]


def test_bookmark_on_request(kube: KubeApiServer, core: client.CoreV1Api) -> None:
    kube.bookmark_interval = 60
    w = watch.Watch()
    types = []
    for event in w.stream(core.list_node, allow_watch_bookmarks=True, _request_timeout=READ_TIMEOUT):
        types.append(event["type"])
        if len(types) == 2:
            assert kube.send_bookmarks() == 1
        if event["type"] == "BOOKMARK":
            w.stop()
    assert types == ["ADDED", "ADDED", "BOOKMARK"]


def test_a_compacted_resource_version_is_a_410_error_event(
    kube: KubeApiServer, core: client.CoreV1Api
) -> None:
    old = core.list_node().metadata.resource_version
    kube.add_node("node-c")
    kube.compact()
    raw = core.list_node(
        watch=True, resource_version=old, _preload_content=False, _request_timeout=READ_TIMEOUT
    )
    try:
        assert raw.status == 200
        lines = [json.loads(line) for line in raw.data.splitlines() if line]
    finally:
        raw.release_conn()
    assert len(lines) == 1 and lines[0]["type"] == "ERROR"
    status = lines[0]["object"]
    assert (status["kind"], status["code"], status["reason"]) == ("Status", 410, "Expired")
    assert status["message"] == f"too old resource version: {old} ({kube.resource_version})"
    with pytest.raises(ApiException) as err:  # with timeout_seconds the client does not retry
        list(watch.Watch().stream(core.list_node, resource_version=old, timeout_seconds=5))
    assert err.value.status == 410
    kube.clear_requests()
    with pytest.raises(ApiException) as err:  # without, it retries once from the same RV, then raises
        list(watch.Watch().stream(core.list_node, resource_version=old, _request_timeout=READ_TIMEOUT))
    assert err.value.status == 410 and [r.verb for r in kube.requests] == ["watch", "watch"]


def test_history_length_bounds_the_replay_window(kube: KubeApiServer, core: client.CoreV1Api) -> None:
    kube.max_history = 1
    start = int(kube.resource_version)
    kube.add_node("node-c")
    kube.add_node("node-d")  # node-c's change falls out of the history
    with pytest.raises(ApiException) as err:
        list(watch.Watch().stream(core.list_node, resource_version=str(start), timeout_seconds=5))
    assert err.value.status == 410
    w = watch.Watch()
    for event in w.stream(core.list_node, resource_version=str(start + 1), _request_timeout=READ_TIMEOUT):
        assert (event["type"], event["object"].metadata.name) == ("ADDED", "node-d")
        w.stop()


def test_a_watch_can_be_answered_with_http_410(kube: KubeApiServer, core: client.CoreV1Api) -> None:
    kube.expire_next_watches(1)
    with pytest.raises(ApiException) as err:
        list(watch.Watch().stream(core.list_node, _request_timeout=READ_TIMEOUT))
    assert err.value.status == 410 and json.loads(err.value.body)["reason"] == "Expired"
    w = watch.Watch()
    for _ in w.stream(core.list_node, _request_timeout=READ_TIMEOUT):
        w.stop()
    assert [(r.verb, r.status) for r in kube.requests] == [("watch", 410), ("watch", 200)]


def test_timeout_seconds_ends_the_stream_cleanly(kube: KubeApiServer, core: client.CoreV1Api) -> None:
    started = time.monotonic()
    events = list(watch.Watch().stream(core.list_node, timeout_seconds=1, _request_timeout=READ_TIMEOUT))
    elapsed = time.monotonic() - started
    assert [e["type"] for e in events] == ["ADDED", "ADDED"]
    assert 1.0 <= elapsed < 3.0
    assert kube.wait_for_watches(0)


def test_drop_watches_cuts_the_stream(kube: KubeApiServer, core: client.CoreV1Api) -> None:
    w = watch.Watch()
    seen = []
    with pytest.raises(urllib3.exceptions.ProtocolError):
        for event in w.stream(core.list_node, _request_timeout=READ_TIMEOUT):
            seen.append(event["type"])
            if len(seen) == 2:
                assert kube.open_watches == 1
                assert kube.drop_watches() == 1
    assert seen == ["ADDED", "ADDED"]
    assert kube.wait_for_watches(0)


# --- writes --------------------------------------------------------------------------------------


def test_json_patch_with_a_failing_test_is_422_and_changes_nothing(
    kube: KubeApiServer, core: client.CoreV1Api
) -> None:
    before = kube.get("nodes", None, "node-a")
    patch = [
        {
            "op": "test",
            "path": "/spec/taints/1",
            "value": {"key": "example.com/other", "effect": "NoExecute"},
        },
        {"op": "remove", "path": "/spec/taints/1"},
    ]
    with pytest.raises(client.exceptions.UnprocessableEntityException) as err:
        core.patch_node("node-a", patch)
    assert _status(err.value) == {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": "the server rejected our request due to an error in our request",
        "reason": "Invalid",
        "details": {},
        "code": 422,
    }
    assert kube.get("nodes", None, "node-a") == before
    assert kube.last_patch_error == "testing value /spec/taints/1 failed: test failed"
    assert kube.requests[-1].content_type == "application/json-patch+json"


def test_json_patch_test_then_remove_drops_one_taint(kube: KubeApiServer, core: client.CoreV1Api) -> None:
    rv = core.read_node("node-a").metadata.resource_version
    patch = [
        {"op": "test", "path": "/metadata/resourceVersion", "value": rv},
        {"op": "test", "path": "/spec/taints/1", "value": TAINT_B},
        {"op": "remove", "path": "/spec/taints/1"},
    ]
    node = core.patch_node("node-a", patch)
    assert [_taint(t) for t in node.spec.taints] == [TAINT_A]
    assert int(node.metadata.resource_version) > int(rv)
    with pytest.raises(ApiException) as err:  # the same patch again: the RV test fails
        core.patch_node("node-a", patch)
    assert err.value.status == 422


def test_strategic_merge_replaces_taints_whole_and_merges_maps(
    kube: KubeApiServer, core: client.CoreV1Api
) -> None:
    patch = {
        "metadata": {"labels": {"zone": None, "pool": "warm"}, "annotations": {"a": "1"}},
        "spec": {"taints": [TAINT_C]},
        "status": {"conditions": [{"type": "Ready", "status": "False"}]},  # the status subresource owns it
    }
    node = core.patch_node("node-a", patch)
    assert [_taint(t) for t in node.spec.taints] == [TAINT_C]
    assert node.metadata.labels == {"kubernetes.io/hostname": "node-a", "pool": "warm"}
    assert node.metadata.annotations == {"a": "1"}
    assert node.status.conditions[0].status == "True"
    assert kube.requests[-1].content_type == "application/strategic-merge-patch+json"
    merged = core.patch_node(
        "node-a",
        {"metadata": {"annotations": {"b": "2", "a": None}}},
        _content_type="application/merge-patch+json",
    )
    assert merged.metadata.annotations == {"b": "2"}
    assert kube.requests[-1].content_type == "application/merge-patch+json"


def test_node_taints_are_validated(kube: KubeApiServer, core: client.CoreV1Api) -> None:
    with pytest.raises(ApiException) as err:
        core.patch_node(
            "node-b", {"spec": {"taints": [{"key": "k", "effect": "Sometimes"}, TAINT_C, TAINT_C]}}
        )
    body = _status(err.value)
    assert (
        err.value.status == 422 and body["details"]["kind"] == "Node" and body["details"]["name"] == "node-b"
    )
    assert _causes(err.value) == ["spec.taints[0].effect", "spec.taints[2]"]
    assert 'Unsupported value: "Sometimes": supported values: "NoSchedule"' in body["message"]


def test_put_with_a_stale_resource_version_is_a_conflict(kube: KubeApiServer, core: client.CoreV1Api) -> None:
    node = core.read_node("node-a")
    kube.patch_node_direct("node-a", lambda n: n["metadata"]["labels"].update(other="writer"))
    node.metadata.labels["mine"] = "1"
    with pytest.raises(client.exceptions.ConflictException) as err:
        core.replace_node("node-a", node)
    body = _status(err.value)
    assert body["reason"] == "Conflict" and body["details"] == {"name": "node-a", "kind": "nodes"}
    assert body["message"].startswith(
        'Operation cannot be fulfilled on nodes "node-a": the object has been modified'
    )
    fresh = core.read_node("node-a")
    fresh.metadata.labels["mine"] = "1"
    updated = core.replace_node("node-a", fresh)
    assert updated.metadata.labels["mine"] == "1" and updated.metadata.labels["other"] == "writer"
    updated.metadata.resource_version = None  # no RV: an unconditional update
    updated.metadata.labels["again"] = "1"
    assert core.replace_node("node-a", updated).metadata.labels["again"] == "1"
    assert [r.verb for r in kube.requests if r.method == "PUT"] == ["update"] * 3


# --- events.k8s.io/v1 ----------------------------------------------------------------------------


def test_event_create_is_validated_like_the_apiserver(
    kube: KubeApiServer, api: ApiClient, events_api: client.EventsV1Api
) -> None:
    def rejected(body: dict[str, Any], namespace: str = "default") -> ApiException:
        with pytest.raises(ApiException) as err:
            events_api.create_namespaced_event(namespace, body)
        assert err.value.status == 422 and _status(err.value)["reason"] == "Invalid"
        return err.value

    err = rejected({k: v for k, v in _event("e1").items() if k not in ("reportingInstance", "action")})
    assert _causes(err) == ["reportingInstance", "action"]
    assert _status(err)["message"] == (
        'Event.events.k8s.io "e1" is invalid: [reportingInstance: Required value, action: Required value]'
    )
    assert _causes(rejected(_event("e2", reportingController="x" * 64))) == ["reportingController"]
    assert _causes(rejected(_event("e3", action="a" * 129))) == ["action"]
    assert _causes(rejected(_event("e4", note="n" * 1025))) == ["message"]  # the internal field name
    assert _causes(rejected(_event("e5", type="Info"))) == ["type"]
    kube.add_namespace("kube-node-lease")
    assert _causes(rejected(_event("e6"), "kube-node-lease")) == ["involvedObject.namespace"]
    missing_time = {k: v for k, v in _event("e7").items() if k != "eventTime"}
    response = _raw(api, "POST", "/apis/events.k8s.io/v1/namespaces/default/events", missing_time)
    body = json.loads(response.data)
    assert response.status == 422 and [c["field"] for c in body["details"]["causes"]] == ["eventTime"]
    with pytest.raises(ApiException) as bad_time:  # a whole second: the client sends "...:05+00:00"
        events_api.create_namespaced_event("default", _event("e8", eventTime="2025-01-02T03:04:05.000000Z"))
    message = _status(bad_time.value)["message"]
    assert bad_time.value.status == 400 and 'cannot parse "+00:00" as ".000000"' in message
    response = _raw(
        api, "POST", "/apis/events.k8s.io/v1/namespaces/default/events", _event("e8", eventTime="x")
    )
    assert response.status == 400
    with pytest.raises(ApiException) as no_ns:
        events_api.create_namespaced_event("nowhere", _event("e9"))
    assert no_ns.value.status == 404 and _status(no_ns.value)["message"] == 'namespaces "nowhere" not found'
    assert kube.events() == []
    created = events_api.create_namespaced_event("default", _event("ok"))
    assert created.metadata.namespace == "default" and created.metadata.uid
    assert kube.events()[0]["eventTime"].endswith("Z")


def test_event_name_conflicts_and_series_updates(kube: KubeApiServer, events_api: client.EventsV1Api) -> None:
    first = events_api.create_namespaced_event("default", _event("pool.1"))
    with pytest.raises(client.exceptions.ConflictException) as err:
        events_api.create_namespaced_event("default", _event("pool.1"))
    body = _status(err.value)
    assert (
        body["reason"] == "AlreadyExists"
        and body["message"] == 'events.events.k8s.io "pool.1" already exists'
    )
    assert body["details"] == {"name": "pool.1", "group": "events.k8s.io", "kind": "events"}
    series = {"series": {"count": 2, "lastObservedTime": _micro_now()}}
    patched = events_api.patch_namespaced_event(
        "pool.1", "default", series, _content_type="application/merge-patch+json"
    )
    assert patched.series.count == 2 and int(patched.metadata.resource_version) > int(
        first.metadata.resource_version
    )
    again = events_api.patch_namespaced_event(
        "pool.1", "default", {"series": {"count": 3}}
    )  # strategic merge
    assert again.series.count == 3 and again.series.last_observed_time == patched.series.last_observed_time
    with pytest.raises(ApiException) as err:
        events_api.patch_namespaced_event("pool.1", "default", {"series": {"count": 1}})
    assert err.value.status == 422 and _causes(err.value) == ["series.count"]
    with pytest.raises(ApiException) as err:
        events_api.patch_namespaced_event("pool.1", "default", {"note": "rewritten"})
    assert err.value.status == 422 and _causes(err.value) == ["message"]
    assert "field is immutable" in _status(err.value)["message"]
    current = events_api.read_namespaced_event("pool.1", "default")
    current.series.count = 4
    assert events_api.replace_namespaced_event("pool.1", "default", current).series.count == 4
    assert [e["series"]["count"] for e in kube.events()] == [4]


# --- fault injection -----------------------------------------------------------------------------


def test_429_with_retry_after_surfaces_as_api_exception(kube: KubeApiServer, core: client.CoreV1Api) -> None:
    kube.fail_next(1, 429, retry_after=7, path_contains="/nodes/node-a", verb="patch")
    with pytest.raises(ApiException) as err:
        core.patch_node("node-a", {"metadata": {"labels": {"x": "1"}}})
    assert err.value.status == 429 and err.value.headers["Retry-After"] == "7"
    assert err.value.body == "Too many requests, please try again later.\n"  # APF answers in text
    kube.fail_next(1, 429, retry_after=2, verb="patch", body="status")
    with pytest.raises(ApiException) as err:
        core.patch_node("node-a", {"metadata": {"labels": {"x": "1"}}})
    assert _status(err.value)["details"] == {"retryAfterSeconds": 2}
    kube.clear_requests()
    kube.fail_next(1, 429, retry_after=0, verb="get")  # urllib3 retries GETs that carry Retry-After
    assert core.read_node("node-a").metadata.name == "node-a"
    assert [(r.verb, r.status) for r in kube.requests] == [("get", 429), ("get", 200)]


def test_server_errors_are_status_objects(kube: KubeApiServer, core: client.CoreV1Api) -> None:
    kube.fail_next(1, 503, path_contains="/nodes")
    with pytest.raises(client.exceptions.ServiceException) as err:
        core.list_node()
    assert err.value.status == 503 and _status(err.value)["reason"] == "ServiceUnavailable"
    kube.fail_next(2, 500)
    for _ in range(2):
        with pytest.raises(client.exceptions.ServiceException) as err:
            core.read_node("node-b")
        assert _status(err.value)["reason"] == "InternalError"
    assert core.read_node("node-b").metadata.name == "node-b"


def test_refuse_then_accept_on_the_same_port(kube: KubeApiServer, core: client.CoreV1Api) -> None:
    core.read_node("node-a")  # a pooled keep-alive connection
    kube.refuse()
    with pytest.raises(urllib3.exceptions.MaxRetryError) as err:
        core.read_node("node-a")
    assert isinstance(err.value.reason, urllib3.exceptions.NewConnectionError)
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", kube.port), timeout=1).close()
    kube.accept()
    assert core.read_node("node-a").metadata.name == "node-a"
    assert kube.url.endswith(f":{kube.port}")


def test_dropped_connections_get_no_answer(kube: KubeApiServer, core: client.CoreV1Api) -> None:
    kube.drop_connections_next(1, path_contains="/nodes/node-a")
    with pytest.raises(urllib3.exceptions.ProtocolError):  # PATCH is not retried
        core.patch_node("node-a", {"metadata": {"labels": {"x": "1"}}})
    assert kube.get("nodes", None, "node-a")["metadata"]["labels"].get("x") is None
    kube.drop_connections_next(1)
    assert core.read_node("node-b").metadata.name == "node-b"  # GET is retried by urllib3
    assert [(r.verb, r.status) for r in kube.requests] == [("patch", 0), ("get", 0), ("get", 200)]


def test_latency_applies_per_request(kube: KubeApiServer, core: client.CoreV1Api) -> None:
    kube.latency = 0.2
    started = time.monotonic()
    core.read_node("node-a")
    assert time.monotonic() - started >= 0.2
    kube.latency = lambda request: 0.3 if request.verb == "patch" else 0.0
    started = time.monotonic()
    core.read_node("node-a")
    assert time.monotonic() - started < 0.2
    started = time.monotonic()
    core.patch_node("node-a", {"metadata": {"labels": {"slow": "1"}}})
    assert time.monotonic() - started >= 0.3


# --- namespaces, NetworkPolicies and the pod fields NetworkPolicy enforcement reads -----------------


def test_namespaces_are_objects_the_client_lists_gets_and_watches(
    kube: KubeApiServer, api: ApiClient, core: client.CoreV1Api
) -> None:
    listed = core.list_namespace()
    names = [ns.metadata.name for ns in listed.items]
    assert names == ["default", "kube-node-lease", "kube-public", "kube-system"]
    for ns in listed.items:
        assert ns.metadata.labels == {NAMESPACE_NAME_LABEL: ns.metadata.name}
        assert ns.metadata.uid and ns.metadata.creation_timestamp and ns.metadata.resource_version
        assert (ns.spec.finalizers, ns.status.phase) == (["kubernetes"], "Active")
    raw = json.loads(core.list_namespace(_preload_content=False).data)
    assert (raw["kind"], raw["apiVersion"]) == ("NamespaceList", "v1")
    assert all("kind" not in item for item in raw["items"])
    assert core.read_namespace("kube-system").metadata.name == "kube-system"
    with pytest.raises(ApiException) as err:
        core.read_namespace("nope")
    assert err.value.status == 404 and _status(err.value)["message"] == 'namespaces "nope" not found'
    assert _raw(api, "GET", "/api/v1/namespaces/default/status").status == 404  # no subresources here
    assert [
        ns.metadata.name for ns in core.list_namespace(field_selector="status.phase=Active").items
    ] == names

    kube.add_namespace("team-a", labels={"team": "a"})
    kube.set_namespace_labels("team-a", {"team": "b"})
    kube.delete_namespace("team-a")  # Terminating (MODIFIED), then DELETED
    kube.add_namespace("marker")
    seen = _watch_until(core.list_namespace, last="marker", resource_version=listed.metadata.resource_version)
    assert seen == [
        ("ADDED", "team-a"),
        ("MODIFIED", "team-a"),
        ("MODIFIED", "team-a"),
        ("DELETED", "team-a"),
        ("ADDED", "marker"),
    ]
    assert kube.get("namespaces", None, "team-a") is None

    w = watch.Watch()
    live = []
    for event in w.stream(core.list_namespace, _request_timeout=READ_TIMEOUT):
        live.append((event["type"], event["object"].metadata.name, event["object"].status.phase))
        if len(live) == 5:
            kube.add_pod("team-c", "web", "node-a")  # add_pod creates its namespace
        if len(live) == 6:
            w.stop()
    assert live == [("ADDED", name, "Active") for name in [*names, "marker", "team-c"]]
    assert [(r.verb, r.resource, r.namespace, r.name) for r in kube.requests if r.verb == "get"] == [
        ("get", "namespaces", "kube-system", "kube-system"),  # RequestInfo: a namespace is in itself
        ("get", "namespaces", "nope", "nope"),
        ("get", "namespaces", "default", "default"),
    ]
    assert kube.errors == []


def test_the_metadata_name_label_stays_whatever_the_labels_say(
    kube: KubeApiServer, core: client.CoreV1Api
) -> None:
    created = kube.add_namespace("team-a", labels={NAMESPACE_NAME_LABEL: "other", "team": "a"})
    assert created["metadata"]["labels"] == {NAMESPACE_NAME_LABEL: "team-a", "team": "a"}
    assert kube.add_namespace("team-a") == created  # idempotent: no write
    cleared = kube.set_namespace_labels("team-a", {})
    assert cleared["metadata"]["labels"] == {NAMESPACE_NAME_LABEL: "team-a"}
    assert int(cleared["metadata"]["resourceVersion"]) > int(created["metadata"]["resourceVersion"])
    assert cleared["metadata"]["uid"] == created["metadata"]["uid"]
    rv = kube.resource_version
    assert kube.set_namespace_labels("team-a", {NAMESPACE_NAME_LABEL: "renamed"}) == cleared  # a no-op
    assert kube.resource_version == rv
    relabelled = kube.add_namespace("team-a", labels={"env": "prod"})
    assert core.read_namespace("team-a").metadata.labels == {NAMESPACE_NAME_LABEL: "team-a", "env": "prod"}
    assert relabelled["metadata"]["resourceVersion"] == kube.resource_version != rv
    with pytest.raises(ValueError, match=r"metadata\.labels"):
        kube.set_namespace_labels("team-a", {"bad key!": "x"})
    with pytest.raises(ValueError, match="may not be deleted"):
        kube.delete_namespace("kube-system")
    with pytest.raises(KeyError):
        kube.set_namespace_labels("nope", {})
    assert kube.delete_namespace("nope") is None


def test_label_selectors_on_namespaces_in_lists_and_watches(
    kube: KubeApiServer, core: client.CoreV1Api
) -> None:
    kube.add_namespace("team-a", labels={"team": "a", "env": "prod"})
    kube.add_namespace("team-b", labels={"team": "b"})

    def names(selector: str) -> list[str]:
        return [ns.metadata.name for ns in core.list_namespace(label_selector=selector).items]

    assert names("team") == ["team-a", "team-b"]
    assert names("team=a") == ["team-a"]
    assert names("env!=prod,team") == ["team-b"]
    assert names(f"{NAMESPACE_NAME_LABEL} in (team-b,default)") == ["default", "team-b"]
    assert names("!team") == ["default", "kube-node-lease", "kube-public", "kube-system"]
    start = kube.resource_version
    kube.set_namespace_labels("team-b", {"team": "b", "env": "prod"})  # enters env=prod: ADDED
    kube.set_namespace_labels("team-a", {"team": "a"})  # leaves it: DELETED
    kube.add_namespace("marker", labels={"env": "prod"})
    seen = _watch_until(core.list_namespace, last="marker", label_selector="env=prod", resource_version=start)
    assert seen == [("ADDED", "team-b"), ("DELETED", "team-a"), ("ADDED", "marker")]


def test_network_policies_through_networking_v1_api(
    kube: KubeApiServer, api: ApiClient, networking: client.NetworkingV1Api
) -> None:
    kube.add_namespace("team-a")
    kube.add_namespace("team-b")
    deny = kube.put_network_policy("team-a", "deny-all", {})
    allow = {
        "podSelector": {"matchLabels": {"app": "web"}},
        "ingress": [
            {
                "from": [{"namespaceSelector": {"matchLabels": {NAMESPACE_NAME_LABEL: "team-b"}}}],
                "ports": [{"port": "http"}, {"port": 53, "protocol": "UDP"}],
            }
        ],
        "egress": [{}],
    }
    kube.put_network_policy("team-a", "allow-web", allow, labels={"tier": "web"})
    kube.put_network_policy("team-b", "deny-all", {"podSelector": {}, "policyTypes": ["Egress"]})
    assert deny["metadata"]["generation"] == 1 and deny["spec"] == {
        "podSelector": {},
        "policyTypes": ["Ingress"],
    }

    everywhere = networking.list_network_policy_for_all_namespaces()
    assert [(p.metadata.namespace, p.metadata.name) for p in everywhere.items] == [
        ("team-a", "allow-web"),
        ("team-a", "deny-all"),
        ("team-b", "deny-all"),
    ]
    assert [p.metadata.name for p in networking.list_namespaced_network_policy("team-a").items] == [
        "allow-web",
        "deny-all",
    ]
    got = networking.read_namespaced_network_policy("allow-web", "team-a")
    assert got.spec.policy_types == ["Ingress", "Egress"]  # defaulted: there are egress rules
    assert [(port.port, port.protocol) for port in got.spec.ingress[0].ports] == [
        ("http", "TCP"),
        (53, "UDP"),
    ]
    assert got.spec.ingress[0]._from[0].namespace_selector.match_labels == {NAMESPACE_NAME_LABEL: "team-b"}
    assert networking.read_namespaced_network_policy("deny-all", "team-b").spec.policy_types == ["Egress"]
    labelled = networking.list_network_policy_for_all_namespaces(label_selector="tier=web")
    assert [p.metadata.name for p in labelled.items] == ["allow-web"]
    assert networking.list_namespaced_network_policy("team-b", label_selector="tier").items == []
    raw = json.loads(networking.list_namespaced_network_policy("team-a", _preload_content=False).data)
    assert (raw["kind"], raw["apiVersion"]) == ("NetworkPolicyList", "networking.k8s.io/v1")
    assert all("kind" not in item for item in raw["items"])

    with pytest.raises(ApiException) as err:
        networking.read_namespaced_network_policy("nope", "team-a")
    assert _status(err.value)["message"] == 'networkpolicies.networking.k8s.io "nope" not found'
    with pytest.raises(ApiException) as err:
        networking.create_namespaced_network_policy("team-a", {"metadata": {"name": "x"}, "spec": {}})
    assert err.value.status == 405
    with pytest.raises(KeyError, match="team-z"):
        kube.put_network_policy("team-z", "p", {})

    rv = kube.resource_version
    assert kube.put_network_policy("team-a", "deny-all", {}) == deny  # the same spec again: a no-op
    assert kube.resource_version == rv
    changed = kube.put_network_policy("team-a", "deny-all", {"podSelector": {"matchLabels": {"a": "b"}}})
    assert changed["metadata"]["generation"] == 2 and changed["metadata"]["uid"] == deny["metadata"]["uid"]
    relabelled = kube.put_network_policy(
        "team-a", "deny-all", {"podSelector": {"matchLabels": {"a": "b"}}}, labels={"x": "y"}
    )
    assert relabelled["metadata"]["generation"] == 2  # metadata only: the generation stays
    assert (
        relabelled["metadata"]["resourceVersion"]
        == kube.resource_version
        != changed["metadata"]["resourceVersion"]
    )
    logged = [(r.verb, r.api_group, r.resource, r.namespace, r.path) for r in kube.requests][:2]
    assert logged == [
        ("list", "networking.k8s.io", "networkpolicies", "", "/apis/networking.k8s.io/v1/networkpolicies"),
        (
            "list",
            "networking.k8s.io",
            "networkpolicies",
            "team-a",
            "/apis/networking.k8s.io/v1/namespaces/team-a/networkpolicies",
        ),
    ]
    assert kube.errors == []


def test_network_policy_watches_resume_from_a_resource_version(
    kube: KubeApiServer, networking: client.NetworkingV1Api
) -> None:
    kube.add_namespace("team-a")
    kube.add_namespace("team-b")
    kube.put_network_policy("team-a", "old", {})
    listed = networking.list_network_policy_for_all_namespaces(resource_version="0")
    start = listed.metadata.resource_version
    kube.put_network_policy("team-a", "a", {})
    kube.put_network_policy("team-b", "b", {})
    modified = kube.put_network_policy("team-a", "a", {"podSelector": {"matchLabels": {"app": "web"}}})
    kube.delete_network_policy("team-b", "b")
    kube.delete_network_policy("team-a", "old")
    kube.put_network_policy("team-a", "marker", {})
    assert kube.delete_network_policy("team-a", "gone") is None

    everywhere = _watch_until(
        networking.list_network_policy_for_all_namespaces, last="team-a/marker", resource_version=start
    )
    assert everywhere == [
        ("ADDED", "team-a/a"),
        ("ADDED", "team-b/b"),
        ("MODIFIED", "team-a/a"),
        ("DELETED", "team-b/b"),
        ("DELETED", "team-a/old"),
        ("ADDED", "team-a/marker"),
    ]
    one_namespace = _watch_until(
        networking.list_namespaced_network_policy, "team-a", last="team-a/marker", resource_version=start
    )
    assert one_namespace == [
        ("ADDED", "team-a/a"),
        ("MODIFIED", "team-a/a"),
        ("DELETED", "team-a/old"),
        ("ADDED", "team-a/marker"),
    ]
    resumed = _watch_until(
        networking.list_network_policy_for_all_namespaces,
        last="team-a/marker",
        resource_version=modified["metadata"]["resourceVersion"],
    )
    assert resumed == [("DELETED", "team-b/b"), ("DELETED", "team-a/old"), ("ADDED", "team-a/marker")]
    w = watch.Watch()
    now = []
    for event in w.stream(networking.list_namespaced_network_policy, "team-a", _request_timeout=READ_TIMEOUT):
        now.append((event["type"], event["object"].metadata.name, event["object"].metadata.generation))
        if len(now) == 2:
            w.stop()
    assert now == [("ADDED", "a", 2), ("ADDED", "marker", 1)]  # from now: synthetic ADDED per policy
    watched_from = [r.query.get("resourceVersion") for r in kube.requests if r.verb == "watch"]
    assert watched_from == [start, start, modified["metadata"]["resourceVersion"], None]


def test_an_expired_network_policy_watch_is_410(
    kube: KubeApiServer, networking: client.NetworkingV1Api
) -> None:
    kube.add_namespace("team-a")
    old = networking.list_network_policy_for_all_namespaces().metadata.resource_version
    kube.put_network_policy("team-a", "p", {})
    kube.compact()
    raw = networking.list_network_policy_for_all_namespaces(
        watch=True, resource_version=old, _preload_content=False, _request_timeout=READ_TIMEOUT
    )
    try:
        assert raw.status == 200
        lines = [json.loads(line) for line in raw.data.splitlines() if line]
    finally:
        raw.release_conn()
    assert [(e["type"], e["object"]["code"], e["object"]["reason"]) for e in lines] == [
        ("ERROR", 410, "Expired")
    ]
    assert lines[0]["object"]["message"] == f"too old resource version: {old} ({kube.resource_version})"
    with pytest.raises(ApiException) as err:
        list(
            watch.Watch().stream(
                networking.list_namespaced_network_policy, "team-a", resource_version=old, timeout_seconds=5
            )
        )
    assert err.value.status == 410
    kube.expire_next_watches(1)
    with pytest.raises(ApiException) as err:
        list(
            watch.Watch().stream(
                networking.list_network_policy_for_all_namespaces, _request_timeout=READ_TIMEOUT
            )
        )
    assert err.value.status == 410 and kube.requests[-1].resource == "networkpolicies"


def test_deleting_a_namespace_deletes_its_pods_and_network_policies(
    kube: KubeApiServer,
    core: client.CoreV1Api,
    networking: client.NetworkingV1Api,
    events_api: client.EventsV1Api,
) -> None:
    kube.add_namespace("team-a", labels={"team": "a"})
    kube.add_pod("team-a", "web-1", "node-a")
    kube.add_pod("team-a", "web-2", "node-b")
    kube.add_pod("default", "kept", "node-a")
    kube.put_network_policy("team-a", "deny-all", {})
    kube.put_network_policy("default", "kept", {})
    events_api.create_namespaced_event(
        "team-a", _event("e1", regarding={"kind": "Pod", "name": "web-1", "namespace": "team-a"})
    )
    start = kube.resource_version
    gone = kube.delete_namespace("team-a")
    assert gone is not None and gone["status"]["phase"] == "Terminating" and "finalizers" not in gone["spec"]
    assert (
        gone["metadata"]["deletionTimestamp"] and gone["metadata"]["resourceVersion"] == kube.resource_version
    )
    kube.add_pod("marker", "marker", "node-a")  # creates namespace marker
    kube.put_network_policy("marker", "marker", {})

    pods = _watch_until(core.list_pod_for_all_namespaces, last="marker/marker", resource_version=start)
    assert pods == [("DELETED", "team-a/web-1"), ("DELETED", "team-a/web-2"), ("ADDED", "marker/marker")]
    policies = _watch_until(
        networking.list_network_policy_for_all_namespaces, last="marker/marker", resource_version=start
    )
    assert policies == [("DELETED", "team-a/deny-all"), ("ADDED", "marker/marker")]
    namespaces = _watch_until(core.list_namespace, last="marker", resource_version=start)
    assert namespaces == [("MODIFIED", "team-a"), ("DELETED", "team-a"), ("ADDED", "marker")]
    assert [p["metadata"]["name"] for p in kube.objects("pods")] == ["kept", "marker"]
    assert [p["metadata"]["name"] for p in kube.objects("networkpolicies")] == ["kept", "marker"]
    assert kube.events() == []  # events go with their namespace too
    with pytest.raises(ApiException) as err:
        events_api.create_namespaced_event("team-a", _event("e2"))
    assert err.value.status == 404 and _status(err.value)["message"] == 'namespaces "team-a" not found'
    assert [ns.metadata.name for ns in core.list_namespace(label_selector="team").items] == []


def test_pods_carry_their_containers_ports_and_labels(kube: KubeApiServer, core: client.CoreV1Api) -> None:
    web = {
        "name": "web",
        "image": "nginx:1.27",
        "ports": [
            {"name": "http", "containerPort": 8080},
            {"name": "dns", "containerPort": 53, "protocol": "UDP"},
        ],
    }
    sidecar = {"name": "envoy", "image": "envoy:1.31", "ports": [{"name": "admin", "containerPort": 9901}]}
    kube.add_pod(
        "default", "web", "node-a", labels={"app": "web"}, pod_ip="10.1.0.5", containers=[web, sidecar]
    )
    kube.add_pod("default", "plain", "node-a")
    kube.add_pod(
        "default",
        "host",
        "node-a",
        host_network=True,
        containers=[{"name": "agent", "image": "a", "ports": [{"name": "metrics", "containerPort": 9100}]}],
    )
    assert web["ports"][0] == {"name": "http", "containerPort": 8080}  # the caller's dicts are not changed

    pods = {p.metadata.name: p for p in core.list_pod_for_all_namespaces().items}
    got = [
        (c.name, [(port.name, port.container_port, port.protocol) for port in c.ports or []])
        for c in pods["web"].spec.containers
    ]
    assert got == [("web", [("http", 8080, "TCP"), ("dns", 53, "UDP")]), ("envoy", [("admin", 9901, "TCP")])]
    assert (pods["web"].status.pod_ip, pods["web"].metadata.labels) == ("10.1.0.5", {"app": "web"})
    assert [(c.name, c.ports) for c in pods["plain"].spec.containers] == [("app", None)]
    host_port = pods["host"].spec.containers[0].ports[0]
    assert (host_port.container_port, host_port.host_port, host_port.protocol) == (9100, 9100, "TCP")

    start = kube.resource_version
    relabelled = kube.set_pod_labels("default", "web", {"app": "api"})
    assert kube.set_pod_labels("default", "web", {"app": "api"}) == relabelled  # a no-op
    kube.set_pod_labels("default", "plain", {"app": "web"})
    kube.set_pod_labels("default", "plain", {})
    kube.add_pod("default", "marker", "node-a", labels={"app": "web"})
    seen = _watch_until(
        core.list_pod_for_all_namespaces,
        last="default/marker",
        label_selector="app=web",
        resource_version=start,
    )
    assert seen == [
        ("DELETED", "default/web"),  # left the selection
        ("ADDED", "default/plain"),
        ("DELETED", "default/plain"),
        ("ADDED", "default/marker"),
    ]
    assert "labels" not in kube.get("pods", "default", "plain")["metadata"]
    assert kube.get("pods", "default", "web")["metadata"]["labels"] == {"app": "api"}
    with pytest.raises(KeyError):
        kube.set_pod_labels("default", "nope", {})


# --- custom resources and the request log --------------------------------------------------------


def test_eniconfigs_through_custom_objects_api(kube: KubeApiServer, api: ApiClient) -> None:
    kube.put_eniconfig("us-east-1a", {"subnet": "subnet-0a", "securityGroups": ["sg-1"]})
    custom = client.CustomObjectsApi(api)
    got = custom.get_cluster_custom_object(ENICONFIG_GROUP, ENICONFIG_VERSION, "eniconfigs", "us-east-1a")
    assert got["spec"]["subnet"] == "subnet-0a" and got["kind"] == "ENIConfig"
    listed = custom.list_cluster_custom_object(ENICONFIG_GROUP, ENICONFIG_VERSION, "eniconfigs")
    assert (
        listed["kind"] == "ENIConfigList"
        and listed["items"][0]["apiVersion"] == "crd.k8s.amazonaws.com/v1alpha1"
    )
    with pytest.raises(ApiException) as err:
        custom.get_cluster_custom_object(ENICONFIG_GROUP, ENICONFIG_VERSION, "eniconfigs", "nope")
    assert _status(err.value)["message"] == 'eniconfigs.crd.k8s.amazonaws.com "nope" not found'
    w = watch.Watch()
    seen = []
    for event in w.stream(
        custom.list_cluster_custom_object,
        ENICONFIG_GROUP,
        ENICONFIG_VERSION,
        "eniconfigs",
        _request_timeout=READ_TIMEOUT,
    ):
        if not seen:
            kube.put_eniconfig("us-east-1a", {"subnet": "subnet-0b"})
            kube.delete_eniconfig("us-east-1a")
        seen.append(
            (event["type"], event["object"]["spec"]["subnet"], event["object"]["metadata"]["generation"])
        )
        if len(seen) == 3:
            w.stop()
    assert seen == [("ADDED", "subnet-0a", 1), ("MODIFIED", "subnet-0b", 2), ("DELETED", "subnet-0b", 2)]


def test_request_log_records_rbac_verbs(
    kube: KubeApiServer, core: client.CoreV1Api, events_api: client.EventsV1Api
) -> None:
    kube.add_pod("default", "p", "node-a")
    t0 = time.monotonic()
    core.read_node("node-a")
    core.list_node(field_selector="metadata.name=node-a")
    core.list_pod_for_all_namespaces(field_selector="spec.nodeName=node-a", resource_version="0")
    list(watch.Watch().stream(core.list_node, timeout_seconds=1, _request_timeout=READ_TIMEOUT))
    core.patch_node("node-a", [{"op": "add", "path": "/metadata/labels/x", "value": "1"}])
    core.replace_node("node-a", core.read_node("node-a"))
    events_api.create_namespaced_event("default", _event("logged"))
    events_api.delete_namespaced_event("logged", "default")
    with pytest.raises(ApiException):
        core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name="x")))
    t1 = time.monotonic()
    got = [
        (r.verb, r.api_group, r.version, r.resource, r.namespace, r.name, r.status)
        for r in kube.requests_between(t0, t1)
    ]
    assert got == [
        ("get", "", "v1", "nodes", "", "node-a", 200),
        ("list", "", "v1", "nodes", "", "node-a", 200),
        ("list", "", "v1", "pods", "", "", 200),
        ("watch", "", "v1", "nodes", "", "", 200),
        ("patch", "", "v1", "nodes", "", "node-a", 200),
        ("get", "", "v1", "nodes", "", "node-a", 200),
        ("update", "", "v1", "nodes", "", "node-a", 200),
        ("create", "events.k8s.io", "v1", "events", "default", "", 201),
        ("delete", "events.k8s.io", "v1", "events", "default", "logged", 200),
        ("create", "", "v1", "namespaces", "", "", 405),  # namespaces are read-only here
    ]
    patch = next(r for r in kube.requests if r.verb == "patch")
    assert patch.content_type == "application/json-patch+json" and patch.method == "PATCH"
    assert patch.path == "/api/v1/nodes/node-a" and patch.user_agent.startswith("OpenAPI-Generator/")
    assert kube.errors == []


# --- admission -----------------------------------------------------------------------------------


def test_an_admission_policy_sees_every_update_and_its_denial_is_the_apiservers_403(
    kube_tls: Any, tmp_path: Path
) -> None:
    """deploy/admission-policy.yaml in the fake: the daemon's token may take the startup taint off its
    own Node and change nothing else; the denial is a 403 Forbidden naming the policy and binding."""
    admission = Admission()
    server = KubeApiServer(tls=kube_tls, admission=admission, user_info=pod_token_user("node-a")).start()
    try:
        startup = {"key": "node.cloud-cni.io/agent-not-ready", "effect": "NoSchedule"}
        server.add_node("node-a", taints=[startup, TAINT_A])
        server.add_node("node-b", taints=[startup])
        api_client = config.new_client_from_config(config_file=server.kubeconfig(tmp_path / "kubeconfig"))
        with api_client:
            core = client.CoreV1Api(api_client)
            for name, body in (
                ("node-a", {"metadata": {"labels": {"x": "y"}}}),  # not a taint
                ("node-b", {"spec": {"taints": []}}),  # another node's
            ):
                with pytest.raises(ApiException) as err:
                    core.patch_node(name, body)
                status = _status(err.value)
                assert (err.value.status, status["reason"]) == (403, "Forbidden"), status
                assert status["message"].startswith(
                    f"nodes \"{name}\" is forbidden: ValidatingAdmissionPolicy '{admission.policy_name}' "
                    f"with binding '{admission.binding_name}' denied request: "
                ), status
            core.patch_node("node-a", {"spec": {"taints": [TAINT_A]}})
        node_a, node_b = server.get("nodes", None, "node-a"), server.get("nodes", None, "node-b")
        assert node_a is not None and node_b is not None
        assert node_a["spec"]["taints"] == [TAINT_A] and node_b["spec"]["taints"] == [startup]
        assert [(n, op, v.matched, v.allowed) for n, op, v in admission.decisions] == [
            ("node-a", "UPDATE", True, False),
            ("node-b", "UPDATE", True, False),
            ("node-a", "UPDATE", True, True),
        ]
    finally:
        server.stop()
