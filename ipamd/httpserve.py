"""One HTTP server in a daemon thread, stopped quickly: metrics and introspection.

``socketserver``'s ``shutdown()`` waits for ``serve_forever`` to look at its stop flag, which it does
every ``poll_interval`` (0.5 s by default; prometheus_client's ``start_http_server`` keeps that
default). The daemon stops both servers on SIGTERM, one after the other, and a rolling update's gap
with no serving daemon on the node includes that wait (docs/deploy.md, "Under containerd"): polled
every 50 ms, the two stop in about 0.1 s instead of up to 1 s.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

POLL_INTERVAL = 0.05  # seconds: how soon serve_forever notices a shutdown


def serve_in_thread(bind: str, handler: type[BaseHTTPRequestHandler], name: str) -> Callable[[], None]:
    """Serve ``handler`` on ``host:port`` (``[v6]:port`` too) in a daemon thread; returns ``stop``."""
    host, _, port = bind.rpartition(":")
    server = ThreadingHTTPServer((host.strip("[]"), int(port)), handler)
    server.daemon_threads = True
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": POLL_INTERVAL}, name=name, daemon=True
    )
    thread.start()

    def stop() -> None:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)

    return stop
