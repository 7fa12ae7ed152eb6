"""The one place that speaks to the Kubernetes API: the official ``kubernetes`` client, used raw.

Configuration comes from the client's own loaders: the in-cluster service account (token refreshed
by the client) or a kubeconfig file. Requests go through the client's ``ApiClient`` (TLS, bearer
token, proxies as configured) with ``param_serialize`` / ``call_api``; bodies are read and parsed
here instead of deserialised into the client's models. Why: the daemon needs five fields of a Pod,
and model deserialisation of a pod list costs far more CPU and memory than ``json.loads`` (the
daemon's memory target is 80 MB with 110 pods and its watches open). Every answer is a plain
``dict`` checked by the caller; every failure is one ``ApiError``.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import structlog

from ipamd.errors import ConfigError

log = structlog.get_logger("ipamd.k8s")

SERVICE_ACCOUNT_TOKEN = "/var/run/secrets/kubernetes.io/serviceaccount/token"
_READ_TIMEOUT = 10.0
_CONNECT_TIMEOUT = 5.0


class ApiError(Exception):
    """A request failed. ``status`` is the HTTP status (0: no answer: refused, reset, timed out)."""

    def __init__(self, status: int, reason: str, message: str, retry_after: float | None = None) -> None:
        super().__init__(f"{status} {reason}: {message}" if status else message)
        self.status = status
        self.reason = reason
        self.retry_after = retry_after

    @property
    def gone(self) -> bool:
        return self.status == 410

    @property
    def not_found(self) -> bool:
        return self.status == 404


@dataclass(frozen=True, slots=True)
class ConfigSource:
    kind: str  # "in-cluster" | "kubeconfig"
    detail: str


def find_config(env: Mapping[str, str], kubeconfig: str | None) -> ConfigSource | None:
    """Where a Kubernetes config is to be had: in-cluster first (as client-go), else KUBECONFIG."""
    if env.get("KUBERNETES_SERVICE_HOST") and os.path.exists(SERVICE_ACCOUNT_TOKEN):
        return ConfigSource("in-cluster", env["KUBERNETES_SERVICE_HOST"])
    if kubeconfig and os.path.exists(kubeconfig):
        return ConfigSource("kubeconfig", kubeconfig)
    return None


def missing_config_message(env: Mapping[str, str], kubeconfig: str | None) -> str:
    parts = []
    if not env.get("KUBERNETES_SERVICE_HOST"):
        parts.append("KUBERNETES_SERVICE_HOST is unset")
    elif not os.path.exists(SERVICE_ACCOUNT_TOKEN):
        parts.append(f"no service account token at {SERVICE_ACCOUNT_TOKEN}")
    if not kubeconfig:
        parts.append("KUBECONFIG is unset")
    elif not os.path.exists(kubeconfig):
        parts.append(f"KUBECONFIG file {kubeconfig} does not exist")
    return "a Kubernetes config: in-cluster service account or KUBECONFIG (" + "; ".join(parts) + ")"


class KubeApi:
    """Blocking JSON requests to the API server; safe to share between threads.

    ``observe(verb, resource, status)`` is called once per request (metrics and the request budget).
    """

    def __init__(self, api_client: Any, observe: Callable[[str, str, int], None] | None = None) -> None:
        self._client = api_client
        self._observe = observe
        self._open: set[Any] = set()
        self._lock = threading.Lock()

    @classmethod
    def from_source(
        cls, source: ConfigSource, observe: Callable[[str, str, int], None] | None = None
    ) -> KubeApi:
        from kubernetes import client, config

        configuration = client.Configuration()
        try:
            if source.kind == "in-cluster":
                config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
            else:
                config.load_kube_config(  # type: ignore[no-untyped-call]
                    config_file=source.detail, client_configuration=configuration
                )
        except Exception as exc:  # the loaders raise ConfigException, ValueError, OSError, yaml errors
            raise ConfigError(
                "KUBECONFIG" if source.kind == "kubeconfig" else "KUBERNETES_INTEGRATION",
                source.detail,
                f"a usable Kubernetes config ({type(exc).__name__}: {exc})",
            ) from None
        # Retries are the daemon's (jittered backoff per loop), not urllib3's silent ones.
        configuration.retries = False
        return cls(client.ApiClient(configuration), observe)

    @property
    def host(self) -> str:
        return str(self._client.configuration.host)

    def request(
        self,
        method: str,
        path: str,
        *,
        query: Mapping[str, str] | None = None,
        body: Any = None,
        content_type: str | None = None,
        timeout: float = _READ_TIMEOUT,
        verb: str = "",
    ) -> dict[str, Any]:
        """One request; the parsed JSON object of a 2xx answer, else ``ApiError``."""
        response = self._send(
            method,
            path,
            query=query,
            body=body,
            content_type=content_type,
            timeout=(_CONNECT_TIMEOUT, timeout),
            verb=verb,
        )
        try:
            data = response.read()
        except Exception as exc:
            raise ApiError(0, "ReadFailed", f"{method} {path}: {exc}") from None
        try:
            value = json.loads(data)
        except ValueError:
            raise ApiError(response.status, "BadBody", f"{method} {path}: the answer is not JSON") from None
        if not isinstance(value, dict):
            raise ApiError(response.status, "BadBody", f"{method} {path}: the answer is not an object")
        return value

    def watch(
        self, path: str, query: Mapping[str, str], *, timeout: float, verb: str = "watch"
    ) -> Iterator[dict[str, Any]]:
        """The events of a watch, one dict each, until the server ends the stream.

        ``timeout`` bounds the wait for the next bytes (a dead connection is noticed); ``close_all``
        from another thread ends the stream at once.
        """
        from kubernetes.watch.watch import iter_resp_lines

        response = self._send(
            "GET",
            path,
            query={**query, "watch": "true"},
            body=None,
            content_type=None,
            timeout=(_CONNECT_TIMEOUT, timeout),
            verb=verb,
        )
        raw = response.response
        with self._lock:
            self._open.add(raw)
        try:
            for line in iter_resp_lines(raw):  # type: ignore[no-untyped-call]
                try:
                    event = json.loads(line)
                except ValueError:
                    raise ApiError(200, "BadBody", f"watch {path}: a line that is not JSON") from None
                if not isinstance(event, dict):
                    raise ApiError(200, "BadBody", f"watch {path}: an event that is not an object")
                yield event
        except ApiError:
            raise
        except Exception as exc:  # read time-out, reset, closed by close_all
            raise ApiError(0, "StreamEnded", f"watch {path}: {type(exc).__name__}: {exc}") from None
        finally:
            with self._lock:
                self._open.discard(raw)
            raw.release_conn()

    def close_all(self) -> None:
        """End every open watch stream (shutdown: the threads reading them return)."""
        with self._lock:
            streams = list(self._open)
        for raw in streams:
            try:
                raw.shutdown()
            except Exception as exc:
                log.debug("watch_shutdown_failed", error=str(exc))

    def _send(
        self,
        method: str,
        path: str,
        *,
        query: Mapping[str, str] | None,
        body: Any,
        content_type: str | None,
        timeout: tuple[float, float],
        verb: str,
    ) -> Any:
        headers = {"Accept": "application/json"}
        if content_type:
            headers["Content-Type"] = content_type
        resource = _resource_of(path)
        try:
            _, url, headers, body, _ = self._client.param_serialize(
                method,
                path,
                query_params=list((query or {}).items()),
                header_params=headers,
                body=body,
                auth_settings=["BearerToken"],
            )
            response = self._client.call_api(
                method, url, header_params=headers, body=body, _request_timeout=timeout
            )
        except Exception as exc:  # urllib3: refused, reset, TLS, time-out
            self._count(verb or method.lower(), resource, 0)
            raise ApiError(0, "Unreachable", f"{method} {path}: {_root_cause(exc)}") from None
        status = int(response.status)
        self._count(verb or method.lower(), resource, status)
        if 200 <= status < 300:
            return response
        raise _error_from(response, method, path)

    def _count(self, verb: str, resource: str, status: int) -> None:
        if self._observe is not None:
            self._observe(verb, resource, status)


def _resource_of(path: str) -> str:
    """The resource a path names, for metrics: /api/v1/namespaces/x/pods/y -> pods."""
    parts = [p for p in path.split("?", 1)[0].split("/") if p]
    if parts[:1] == ["api"]:
        parts = parts[2:]
    elif parts[:1] == ["apis"]:
        parts = parts[3:]
    if parts[:1] == ["namespaces"] and len(parts) >= 3:
        parts = parts[2:]
    return parts[0] if parts else "unknown"


def _error_from(response: Any, method: str, path: str) -> ApiError:
    status = int(response.status)
    retry_after: float | None = None
    raw_retry = response.getheader("Retry-After")
    if raw_retry:
        try:
            retry_after = max(0.0, min(float(raw_retry), 300.0))
        except ValueError:
            retry_after = None
    reason, message = "", ""
    try:
        body = json.loads(response.read())
        if isinstance(body, dict):
            reason = str(body.get("reason") or "")
            message = str(body.get("message") or "")
    except Exception:  # the body is information only
        pass
    return ApiError(status, reason or str(response.reason or ""), f"{method} {path}: {message}", retry_after)


def _root_cause(exc: BaseException) -> str:
    seen = exc
    while seen.__cause__ is not None or getattr(seen, "reason", None) is not None:
        nxt = seen.__cause__ or getattr(seen, "reason", None)
        if not isinstance(nxt, BaseException) or nxt is seen:
            break
        seen = nxt
    return f"{type(seen).__name__}: {seen}"
