"""A fault-injecting HTTP proxy in front of the moto EC2 server.

The daemon under test runs as a subprocess, so faults are injected at the HTTP boundary: the
daemon's AWS_ENDPOINT_URL points here, and every EC2 query-API call is counted by Action, delayed,
failed or forwarded to moto according to the rules a test sets. Loopback only.
"""

from __future__ import annotations

import collections
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

MUTATING = frozenset(
    {
        "CreateNetworkInterface",
        "AttachNetworkInterface",
        "DetachNetworkInterface",
        "DeleteNetworkInterface",
        "ModifyNetworkInterfaceAttribute",
        "AssignPrivateIpAddresses",
        "UnassignPrivateIpAddresses",
        "CreateTags",
    }
)

_ERRORS = {
    "RequestLimitExceeded": (503, "Request limit exceeded."),
    "InternalError": (500, "An internal error has occurred."),
    "Unavailable": (503, "The service is unavailable."),
    "InsufficientFreeAddressesInSubnet": (400, "The specified subnet does not have enough free addresses."),
    "UnauthorizedOperation": (403, "You are not authorized to perform this operation."),
}


def error_body(code: str, message: str) -> bytes:
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f"<Response><Errors><Error><Code>{code}</Code><Message>{message}</Message></Error></Errors>"
        "<RequestID>00000000-0000-0000-0000-000000000000</RequestID></Response>"
    ).encode()


@dataclass
class Fault:
    action: str  # an EC2 Action name, or "*" for every call
    code: str  # an EC2 error code from _ERRORS
    times: int  # how many calls fail; -1: until cleared
    after_forward: bool = False  # forward to moto first (the call happened), then answer the error


@dataclass
class Ec2Proxy:
    upstream: str
    server: ThreadingHTTPServer | None = None
    calls: collections.Counter[str] = field(default_factory=collections.Counter)
    faults: list[Fault] = field(default_factory=list)
    delays: dict[str, float] = field(default_factory=dict)  # Action (or "mutating", "*") -> seconds
    lock: threading.Lock = field(default_factory=threading.Lock)
    log: list[tuple[float, str, int]] = field(default_factory=list)  # (time, action, status)

    @property
    def url(self) -> str:
        assert self.server is not None
        host, port = self.server.server_address[:2]
        return f"http://{host!s}:{port}"

    def fail(self, action: str, code: str, times: int = 1, *, after_forward: bool = False) -> None:
        with self.lock:
            self.faults.append(Fault(action, code, times, after_forward))

    def clear(self) -> None:
        with self.lock:
            self.faults.clear()
            self.delays.clear()

    def mutating_calls(self) -> int:
        with self.lock:
            return sum(n for action, n in self.calls.items() if action in MUTATING)

    def total_calls(self) -> int:
        with self.lock:
            return sum(self.calls.values())

    def _fault_for(self, action: str) -> Fault | None:
        with self.lock:
            for fault in self.faults:
                if fault.action in (action, "*") and fault.times != 0:
                    if fault.times > 0:
                        fault.times -= 1
                    return fault
        return None

    def _delay_for(self, action: str) -> float:
        with self.lock:
            if action in self.delays:
                return self.delays[action]
            if action in MUTATING and "mutating" in self.delays:
                return self.delays["mutating"]
            return self.delays.get("*", 0.0)

    def handle(self, body: bytes, headers: dict[str, str], path: str) -> tuple[int, bytes, str]:
        params = urllib.parse.parse_qs(body.decode(errors="replace"))
        action = params.get("Action", ["?"])[0]
        with self.lock:
            self.calls[action] += 1
        delay = self._delay_for(action)
        if delay:
            time.sleep(delay)
        fault = self._fault_for(action)
        if fault is not None and not fault.after_forward:
            status, message = _ERRORS[fault.code]
            self._record(action, status)
            return status, error_body(fault.code, message), "text/xml"
        status, data, ctype = self._forward(body, headers, path)
        if fault is not None:
            status, message = _ERRORS[fault.code]
            data, ctype = error_body(fault.code, message), "text/xml"
        self._record(action, status)
        return status, data, ctype

    def _record(self, action: str, status: int) -> None:
        with self.lock:
            self.log.append((time.monotonic(), action, status))

    def _forward(self, body: bytes, headers: dict[str, str], path: str) -> tuple[int, bytes, str]:
        keep = {k: v for k, v in headers.items() if k.lower() not in ("host", "content-length", "connection")}
        req = urllib.request.Request(self.upstream + path, data=body, headers=keep, method="POST")
        try:
            with urllib.request.urlopen(req, timeout=60) as r:
                return r.status, r.read(), r.headers.get("Content-Type", "text/xml")
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read(), exc.headers.get("Content-Type", "text/xml")

    def start(self) -> Ec2Proxy:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                body = self.rfile.read(length)
                status, data, ctype = proxy.handle(body, dict(self.headers.items()), self.path)
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: object) -> None:
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True, name="ec2-proxy").start()
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
