"""A fake IMDSv2 server on 127.0.0.1, built from moto's live EC2 state.

moto's own IMDS is static (``i-fake``) and knows nothing of the instances a test creates
(reference/lab-facts.md), so this server answers for one moto instance, the test's node. Each request
asks moto for what it needs (the node's attached ENIs, their subnet and VPC) through boto3, so an ENI
or IP that the daemon creates through the EC2 API shows up here as it would on a real instance.

It speaks the protocol as IMDS does: ``PUT /latest/api/token`` with
``X-aws-ec2-metadata-token-ttl-seconds`` in 1..21600 (else 400; 403 with ``X-Forwarded-For``), every
``GET`` needs a live token in ``X-aws-ec2-metadata-token`` (else 401), tokens expire on ``clock``,
directory listings have one entry per line and sub-directories end in "/". Header names and paths are
spelled out here on purpose, not imported from the client, so that the fake checks the client.

Knobs for tests: ``fail_next(n, status)`` (status 0 drops the connection), ``delay`` (seconds before
each answer), ``stale_for`` (IMDS lag: an ENI, IP or prefix appears only ``stale_for`` seconds after
the fake first saw it in moto; what existed at start counts as old, and nothing ever disappears
again once shown), ``override(path, text | None)`` (garbage or a 404 for one path), ``revoke_tokens()``,
``clock`` (assign a fake clock before the first request), ``requests`` and ``log`` (method, path,
status) of every request.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from http.server import ThreadingHTTPServer
from typing import Any

import pytest

from tests.fakes.http_handler import FakeHandler
from tests.fakes.moto_ec2 import MotoEc2, Node

TOKEN_HEADER = "X-aws-ec2-metadata-token"
TTL_HEADER = "X-aws-ec2-metadata-token-ttl-seconds"
MAX_TTL = 21600
MACS = "network/interfaces/macs"


_clients: dict[str, Any] = {}
_clients_lock = threading.Lock()


def _client(moto: MotoEc2) -> Any:
    """One boto3 client per moto server (clients are thread-safe; making one costs ~10 ms)."""
    with _clients_lock:
        if moto.endpoint not in _clients:
            _clients[moto.endpoint] = moto.client()
        return _clients[moto.endpoint]


class FakeImds:
    """IMDSv2 for one moto instance; see the module docstring for the knobs."""

    def __init__(self, moto: MotoEc2, node: Node, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.moto = moto
        self.node = node
        self.clock = clock
        self.delay = 0.0
        self.stale_for = 0.0
        self.requests = 0
        self.log: list[tuple[str, str, int]] = []
        self._lock = threading.Lock()
        self._tokens: dict[str, float] = {}
        self._failures: deque[tuple[int, float | None]] = deque()
        self._overrides: dict[str, str | None] = {}
        self._first_seen: dict[str, float] = {}
        self._shown: set[str] = set()
        self._subnet_cidrs: dict[str, str] = {}
        self._ec2 = _client(moto)
        instance = self._ec2.describe_instances(InstanceIds=[node.instance_id])["Reservations"][0][
            "Instances"
        ][0]
        # Fixed for the life of an instance: read once.
        self._static = {
            "instance-id": node.instance_id,
            "instance-type": instance["InstanceType"],
            "local-ipv4": instance["PrivateIpAddress"],
            "mac": node.mac,
            "placement/availability-zone": instance["Placement"]["AvailabilityZone"],
            "placement/region": self._ec2.meta.region_name,
        }
        self._visible_enis()  # what exists now is old: shown even with stale_for set later
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self._server.daemon_threads = True
        self._server.fake = self  # type: ignore[attr-defined]
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(0.01,), name="fake-imds", daemon=True
        )

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> FakeImds:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    # -- knobs --------------------------------------------------------------------------------

    def fail_next(self, n: int, status: int = 500, *, retry_after: float | None = None) -> None:
        """Answer the next ``n`` requests (tokens included) with ``status``; 0 drops the connection."""
        with self._lock:
            self._failures.extend([(status, retry_after)] * n)

    def override(self, path: str, value: str | None) -> None:
        """Serve ``value`` at ``latest/meta-data/<path>`` (None: 404) instead of moto's state."""
        with self._lock:
            self._overrides[path.strip("/")] = value

    def clear_overrides(self) -> None:
        with self._lock:
            self._overrides.clear()

    def revoke_tokens(self) -> None:
        """Forget every token issued, as a restarted IMDS would: the next GETs get 401."""
        with self._lock:
            self._tokens.clear()

    def tokens(self) -> list[str]:
        """The tokens issued and not revoked (tests check that none leaks into logs or errors)."""
        with self._lock:
            return list(self._tokens)

    def count(self, method: str, path_prefix: str = "") -> int:
        with self._lock:
            return sum(1 for m, p, _ in self.log if m == method and p.startswith(path_prefix))

    # -- serving ------------------------------------------------------------------------------

    def handle(self, handler: _Handler, method: str) -> None:
        path = handler.path.split("?", 1)[0]
        length = int(handler.headers.get("Content-Length") or 0)
        if length:
            handler.rfile.read(length)
        with self._lock:
            self.requests += 1
            failure = self._failures.popleft() if self._failures else None
        if self.delay:
            time.sleep(self.delay)
        headers: dict[str, str] = {}
        if failure is not None:
            status, retry_after = failure
            body = "injected failure"
            if retry_after is not None:
                headers["Retry-After"] = f"{retry_after:g}"
        else:
            try:
                status, body, headers = self._respond(method, path, handler)
            except Exception as exc:  # moto trouble: a 500, as IMDS would give
                status, body = 500, f"fake imds: {type(exc).__name__}"
        with self._lock:
            self.log.append((method, path, status))
        if status == 0:
            handler.close_connection = True
            return
        data = body.encode()
        try:
            handler.send_response(status)
            handler.send_header("Content-Type", "text/plain")
            handler.send_header("Content-Length", str(len(data)))
            for name, value in headers.items():
                handler.send_header(name, value)
            handler.end_headers()
            handler.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):  # the client gave up (its timeout ran out)
            handler.close_connection = True

    def _respond(self, method: str, path: str, handler: _Handler) -> tuple[int, str, dict[str, str]]:
        if method == "PUT":
            if path != "/latest/api/token":
                return 403, "Forbidden", {}
            if handler.headers.get("X-Forwarded-For") is not None:
                return 403, "Forbidden", {}
            raw = handler.headers.get(TTL_HEADER)
            if raw is None or not raw.strip().isdigit() or not 1 <= int(raw) <= MAX_TTL:
                return 400, "Bad Request", {}
            token = secrets.token_urlsafe(42)
            with self._lock:
                self._tokens[token] = self.clock() + int(raw)
            return 200, token, {TTL_HEADER: str(int(raw))}
        if method != "GET":
            return 405, "Method Not Allowed", {}
        token = handler.headers.get(TOKEN_HEADER)
        with self._lock:
            expires = self._tokens.get(token or "")
            if expires is not None and self.clock() >= expires:
                del self._tokens[token or ""]
                expires = None
        if expires is None:
            return 401, "Unauthorized", {}
        if path in ("/latest/meta-data", "/latest/meta-data/"):
            rel = ""
        elif path.startswith("/latest/meta-data/"):
            rel = path[len("/latest/meta-data/") :].strip("/")
        else:
            return 404, "Not Found", {}
        value = self._lookup(rel)
        if value is None:
            return 404, "Not Found", {}
        return 200, value, {}

    def _lookup(self, rel: str) -> str | None:
        with self._lock:
            if rel in self._overrides:
                return self._overrides[rel]
        if rel in self._static:
            return self._static[rel]
        directories = {
            "": ["instance-id", "instance-type", "local-ipv4", "mac", "network/", "placement/"],
            "placement": ["availability-zone", "region"],
            "network": ["interfaces/"],
            "network/interfaces": ["macs/"],
        }
        if rel in directories:
            return "\n".join(directories[rel])
        if rel != MACS and not rel.startswith(MACS + "/"):
            return None
        enis = self._visible_enis()
        parts = rel[len(MACS) :].strip("/").split("/") if rel != MACS else []
        if not parts:
            return "\n".join(f"{mac}/" for mac in enis)
        eni = enis.get(parts[0])
        if eni is None or len(parts) > 2:
            return None
        values = self._mac_values(eni)
        if len(parts) == 1:
            return "\n".join(sorted(key for key, get in values.items() if get() is not None))
        get = values.get(parts[1])
        return None if get is None else get()

    def _mac_values(self, eni: dict[str, Any]) -> dict[str, Callable[[], str | None]]:
        attachment = eni["Attachment"]

        def vpc() -> dict[str, Any]:
            return dict(self._ec2.describe_vpcs(VpcIds=[eni["VpcId"]])["Vpcs"][0])

        def vpc_cidrs() -> str:
            blocks = vpc().get("CidrBlockAssociationSet", [])
            return "\n".join(b["CidrBlock"] for b in blocks if b["CidrBlockState"]["State"] == "associated")

        return {
            "device-number": lambda: str(attachment["DeviceIndex"]),
            "interface-id": lambda: str(eni["NetworkInterfaceId"]),
            "ipv4-prefix": lambda: "\n".join(eni["_prefixes"]) or None,
            "local-ipv4s": lambda: "\n".join(eni["_ips"]),
            "mac": lambda: str(eni["MacAddress"]).lower(),
            "network-card": lambda: str(attachment.get("NetworkCardIndex", 0)),
            "owner-id": lambda: str(eni["OwnerId"]),
            "security-group-ids": lambda: "\n".join(g["GroupId"] for g in eni["Groups"]),
            "security-groups": lambda: "\n".join(g["GroupName"] for g in eni["Groups"]),
            "subnet-id": lambda: str(eni["SubnetId"]),
            "subnet-ipv4-cidr-block": lambda: self._subnet_cidr(eni["SubnetId"]),
            "vpc-id": lambda: str(eni["VpcId"]),
            "vpc-ipv4-cidr-block": lambda: str(vpc()["CidrBlock"]),
            "vpc-ipv4-cidr-blocks": vpc_cidrs,
        }

    def _subnet_cidr(self, subnet_id: str) -> str:
        cidr = self._subnet_cidrs.get(subnet_id)
        if cidr is None:  # a subnet's CIDR never changes
            cidr = str(self._ec2.describe_subnets(SubnetIds=[subnet_id])["Subnets"][0]["CidrBlock"])
            self._subnet_cidrs[subnet_id] = cidr
        return cidr

    def _visible_enis(self) -> dict[str, dict[str, Any]]:
        """The node's attached ENIs by MAC, device order, with only the IPs and prefixes IMDS shows."""
        found = self._ec2.describe_network_interfaces(
            Filters=[{"Name": "attachment.instance-id", "Values": [self.node.instance_id]}]
        )["NetworkInterfaces"]
        now = self.clock()
        enis: dict[str, dict[str, Any]] = {}
        for eni in sorted(found, key=lambda e: e["Attachment"]["DeviceIndex"]):
            eni_id = eni["NetworkInterfaceId"]
            # IPs and prefixes age from when they were first seen, even on an ENI not shown yet.
            addresses = sorted(eni.get("PrivateIpAddresses", []), key=lambda a: not a.get("Primary"))
            eni["_ips"] = [
                a["PrivateIpAddress"]
                for a in addresses
                if a.get("Primary") or self._visible(f"ip:{eni_id}:{a['PrivateIpAddress']}", now)
            ]
            eni["_prefixes"] = [
                p["Ipv4Prefix"]
                for p in eni.get("Ipv4Prefixes", [])
                if self._visible(f"prefix:{eni_id}:{p['Ipv4Prefix']}", now)
            ]
            if self._visible(f"eni:{eni_id}", now):
                enis[str(eni["MacAddress"]).lower()] = eni
        return enis

    def _visible(self, key: str, now: float) -> bool:
        with self._lock:
            if key in self._shown:
                return True
            first = self._first_seen.setdefault(key, now)
            if now - first >= self.stale_for:
                self._shown.add(key)
                return True
            return False


class _Handler(FakeHandler):
    """Every method to the fake's ``handle``."""


def start_fake_imds(moto: MotoEc2, node: Node, *, clock: Callable[[], float] = time.monotonic) -> FakeImds:
    """A running fake IMDS for ``node``; the caller stops it (daemon-subprocess tests pass ``.url``)."""
    return FakeImds(moto, node, clock=clock).start()


@pytest.fixture(name="fake_imds")
def fake_imds_fixture(
    moto_ec2: MotoEc2, ec2_node: Node, monkeypatch: pytest.MonkeyPatch
) -> Iterator[FakeImds]:
    """The node's IMDS, with AWS_EC2_METADATA_SERVICE_ENDPOINT pointing at it for this test."""
    fake = start_fake_imds(moto_ec2, ec2_node)
    monkeypatch.setenv("AWS_EC2_METADATA_SERVICE_ENDPOINT", fake.url)
    try:
        yield fake
    finally:
        fake.stop()
