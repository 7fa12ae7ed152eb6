"""The request handler every local HTTP fake shares: each method goes to ``server.fake.handle``.

HTTP/1.1 keep-alive like the real endpoints, Nagle off (without it, a response written in two parts
stalls ~40 ms on the client's delayed ACK), and no request log on stderr.
"""

from __future__ import annotations

from http.server import BaseHTTPRequestHandler
from typing import Any


class FakeHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True

    def _dispatch(self, method: str) -> None:
        self.server.fake.handle(self, method)  # type: ignore[attr-defined]

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_PATCH(self) -> None:
        self._dispatch("PATCH")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: pytest output stays readable."""
