"""JSON introspection on INTROSPECTION_BIND (default 127.0.0.1:61679).

    GET /healthz          200 "ok" while serving, 503 otherwise
    GET /v1/pool          {"total", "assigned", "available", "cooling", "quarantined", "max",
                           "interfaces": [{"id", "device_index", "primary", "subnet_id", "ips", "prefixes"}]}
    GET /v1/assignments   [{"network", "container_id", "ifname", "ip", "interface_id", "pod", ...}]
    GET /v1/config        the effective settings by env var name

Counts and ``ips`` cover pod-assignable addresses only, never an interface's own primary address.
The stdlib HTTP server runs in its own thread; every read of daemon state runs on the event loop
thread that owns it (``LoopReader``), so a response is one consistent view.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler
from typing import Any

import structlog

from ipamd.httpserve import serve_in_thread

log = structlog.get_logger("ipamd.introspection")

Routes = dict[str, Callable[[], Any]]


class _Handler(BaseHTTPRequestHandler):
    routes: Routes
    healthy: Callable[[], bool]
    server_version = "cloud-cni-introspection"
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        if path == "/healthz":
            ok = self.healthy()
            self._send(200 if ok else 503, b"ok\n" if ok else b"not serving\n", "text/plain")
            return
        route = self.routes.get(path)
        if route is None:
            missing = {"error": f"no such path {path}", "paths": sorted([*self.routes, "/healthz"])}
            self._send(404, json.dumps(missing).encode(), "application/json")
            return
        try:
            body = json.dumps(route(), indent=1, sort_keys=True).encode()
        except Exception as exc:
            log.warning("introspection_failed", path=path, error=str(exc))
            self._send(503, json.dumps({"error": str(exc)}).encode(), "application/json")
            return
        self._send(200, body, "application/json")

    def _send(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        return  # requests are not logged: introspection is polled


def serve(bind: str, routes: Routes, healthy: Callable[[], bool]) -> Callable[[], None]:
    """Serve in a daemon thread; returns a function that stops the server."""
    handler = type("IntrospectionHandler", (_Handler,), {"routes": routes, "healthy": staticmethod(healthy)})
    return serve_in_thread(bind, handler, "introspection")
