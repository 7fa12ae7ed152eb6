"""An IMDSv2 client: the node's identity and its interfaces, read from the instance metadata service.

Protocol (IMDSv2): ``PUT /latest/api/token`` with ``X-aws-ec2-metadata-token-ttl-seconds`` returns a
session token; every ``GET /latest/meta-data/...`` carries it in ``X-aws-ec2-metadata-token``. The
token is cached until shortly before it expires and fetched again on a 401 (IMDS restarted, instance
stopped and started). There is no fall-back to IMDSv1: new instances require tokens, and a silent
fall-back would hide a broken set-up.

Why the standard library and not botocore: botocore's fetchers (``botocore.utils.IMDSFetcher`` and
``InstanceMetadataFetcher``) are private API, undocumented, changed between releases, and built to
fetch credentials; their failures come back as empty results or private exceptions that do not map
onto our error tree. IMDS is two HTTP verbs. ``http.client`` and not ``urllib.request``: urllib
honours ``HTTP_PROXY``/``HTTPS_PROXY`` from the environment (a node with a proxy set would send the
session token to the proxy unless ``NO_PROXY`` lists 169.254.169.254) and follows redirects;
``http.client`` does neither, so metadata is always read directly from the endpoint. One connection
per request: IMDS is link-local, and an unshared connection makes the client thread-safe without
holding a lock across I/O.

Errors (``ipamd.errors``): the endpoint unreachable, a timeout, 5xx, or a token refused twice in a
row raise ``TemporaryCloudError("imds", ...)`` after ``attempts`` tries with exponential backoff;
429 raises ``ThrottledError`` and its ``Retry-After`` is honoured. A malformed value (an id, address,
CIDR or number that does not parse) and a refusal that retrying cannot fix (403: IMDS disabled)
raise ``PermanentCloudError("imds", ...)`` naming the path and the value. A 404 is "not there":
``get`` returns None. Session tokens are never logged nor put into an error message.

IMDS is only eventually consistent with the EC2 API: an interface or address can take seconds to
appear here after EC2 reports it (reference/scale-and-latency.md §3). Callers trust EC2 for the
pool and IMDS for the node's identity.
"""

from __future__ import annotations

import http.client
import ipaddress
import math
import os
import re
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import NoReturn, TypeVar
from urllib.parse import urlsplit

import structlog

from ipamd.cloud.aws.metadata import ImdsInterface, NodeMetadata
from ipamd.errors import ConfigError, PermanentCloudError, TemporaryCloudError, ThrottledError

T = TypeVar("T")

ENDPOINT_ENV = "AWS_EC2_METADATA_SERVICE_ENDPOINT"
DEFAULT_ENDPOINT = "http://169.254.169.254"
TOKEN_PATH = "/latest/api/token"
METADATA_PATH = "/latest/meta-data/"
TOKEN_HEADER = "X-aws-ec2-metadata-token"
TTL_HEADER = "X-aws-ec2-metadata-token-ttl-seconds"
MAX_TOKEN_TTL = 21600

_OPERATION = "imds"
_BACKOFF_BASE = 0.1
_BACKOFF_MAX = 2.0
_RETRY_AFTER_MAX = 10.0
_MAX_BODY = 1 << 20
_TOKEN_MARGIN = 60.0  # refresh this long before expiry (at most a tenth of the TTL)

_PATH = re.compile(r"^(?:[A-Za-z0-9._:-]+/?)*$")
_TOKEN = re.compile(r"^[\x21-\x7e]{1,4096}$")
_MAC = re.compile(r"^[0-9a-f]{2}(?::[0-9a-f]{2}){5}$")
_INSTANCE_TYPE = re.compile(r"^[a-z0-9-]+\.[a-z0-9-]+$")
_ZONE = re.compile(r"^[a-z]{2}(?:-[a-z0-9]+)+$")
_REGION = re.compile(r"^[a-z]{2}(?:-[a-z]+)+-\d+")  # also the Region prefix of a zone name

_log = structlog.get_logger(__name__)


class _Retry(Exception):
    """One attempt failed in a way that another attempt may fix."""

    def __init__(self, reason: str, retry_after: float | None = None, throttled: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry_after = retry_after
        self.throttled = throttled


@dataclass(frozen=True, slots=True)
class _Response:
    status: int
    body: bytes
    retry_after: float | None


class ImdsClient:
    """Reads instance metadata over IMDSv2. Safe to share between threads.

    ``endpoint`` defaults to ``$AWS_EC2_METADATA_SERVICE_ENDPOINT``, then ``http://169.254.169.254``.
    ``attempts`` counts the first try; ``timeout`` bounds each HTTP exchange. ``clock`` and ``sleep``
    are injected so that token expiry and backoff are tested without waiting.
    """

    def __init__(
        self,
        endpoint: str | None = None,
        *,
        token_ttl: int = MAX_TOKEN_TTL,
        timeout: float = 2.0,
        attempts: int = 5,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if endpoint is None:
            endpoint = os.environ.get(ENDPOINT_ENV) or DEFAULT_ENDPOINT
            source = ENDPOINT_ENV
        else:
            source = "endpoint"
        if (
            isinstance(token_ttl, bool)
            or not isinstance(token_ttl, int)
            or not 1 <= token_ttl <= MAX_TOKEN_TTL
        ):
            raise ValueError(f"token_ttl must be an integer in 1..{MAX_TOKEN_TTL}, got {token_ttl!r}")
        if not isinstance(timeout, int | float) or not math.isfinite(timeout) or timeout <= 0:
            raise ValueError(f"timeout must be a finite number > 0, got {timeout!r}")
        if isinstance(attempts, bool) or not isinstance(attempts, int) or attempts < 1:
            raise ValueError(f"attempts must be an integer >= 1, got {attempts!r}")
        self.endpoint, self._scheme, self._host, self._port, self._prefix = _parse_endpoint(endpoint, source)
        self._token_ttl = token_ttl
        self._timeout = float(timeout)
        self._attempts = attempts
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        self._token: str | None = None
        self._token_valid_until = -math.inf

    def __repr__(self) -> str:
        return f"ImdsClient({self.endpoint!r})"

    # -- raw access ---------------------------------------------------------------------------

    def get(self, path: str) -> str | None:
        """The text at ``/latest/meta-data/<path>``, or None if IMDS has nothing there (404).

        A path ending in "/" is a directory: one entry per line, sub-directories with a trailing "/".
        """
        if not _PATH.match(path) or ".." in path.split("/"):
            raise ValueError(f"not a metadata path: {path!r}")
        last: _Retry | None = None
        for attempt in range(1, self._attempts + 1):
            try:
                return self._attempt(path)
            except _Retry as exc:
                last = exc
            if attempt < self._attempts:
                delay = min(_BACKOFF_MAX, _BACKOFF_BASE * 2.0 ** (attempt - 1))
                if last.retry_after is not None:
                    delay = max(delay, min(last.retry_after, _RETRY_AFTER_MAX))
                _log.info("imds_retry", path=path, attempt=attempt, reason=last.reason, delay=round(delay, 3))
                self._sleep(delay)
        assert last is not None
        message = f"{path or '/'}: {last.reason} (gave up after {self._attempts} attempts)"
        if last.throttled:
            raise ThrottledError(_OPERATION, message, retry_after=last.retry_after) from last.__cause__
        raise TemporaryCloudError(_OPERATION, message, retry_after=last.retry_after) from last.__cause__

    def _attempt(self, path: str) -> str | None:
        token, fresh = self._session_token()
        response = self._exchange("GET", METADATA_PATH + path, {TOKEN_HEADER: token})
        if response.status == 401:
            self._forget(token)
            if not fresh:  # the cached token is no longer accepted: one new token, at once
                token, _ = self._session_token()
                response = self._exchange("GET", METADATA_PATH + path, {TOKEN_HEADER: token})
                if response.status == 401:
                    self._forget(token)
        if response.status == 200:
            return _decode(path, response.body)
        if response.status == 404:
            return None
        if response.status == 401:
            raise _Retry(f"GET {METADATA_PATH}{path}: HTTP 401 with a new session token")
        _raise_for_status(f"GET {METADATA_PATH}{path}", response)

    def _session_token(self) -> tuple[str, bool]:
        """The cached token and False, or a new token and True."""
        with self._lock:
            if self._token is not None and self._clock() < self._token_valid_until:
                return self._token, False
        issued = self._clock()
        response = self._exchange("PUT", TOKEN_PATH, {TTL_HEADER: str(self._token_ttl)})
        if response.status != 200:
            if response.status == 403:
                raise PermanentCloudError(
                    _OPERATION, f"PUT {TOKEN_PATH}: HTTP 403: IMDS refused a session token (disabled?)"
                )
            _raise_for_status(f"PUT {TOKEN_PATH}", response)
        try:
            token = response.body.decode("ascii").strip()
        except UnicodeDecodeError:
            token = ""
        if not _TOKEN.match(token):  # the value itself is a secret: never quoted
            raise PermanentCloudError(_OPERATION, f"PUT {TOKEN_PATH}: malformed session token")
        margin = min(_TOKEN_MARGIN, self._token_ttl / 10)
        with self._lock:
            self._token = token
            self._token_valid_until = issued + self._token_ttl - margin
        return token, True

    def _forget(self, token: str) -> None:
        with self._lock:
            if self._token == token:
                self._token = None
                self._token_valid_until = -math.inf

    def _exchange(self, method: str, path: str, headers: dict[str, str]) -> _Response:
        conn: http.client.HTTPConnection
        if self._scheme == "https":
            conn = http.client.HTTPSConnection(self._host, self._port, timeout=self._timeout)
        else:
            conn = http.client.HTTPConnection(self._host, self._port, timeout=self._timeout)
        try:
            conn.request(method, self._prefix + path, headers=headers)
            response = conn.getresponse()
            body = response.read(_MAX_BODY + 1)
            retry_after = _seconds(response.getheader("Retry-After"))
        except ssl.SSLCertVerificationError as exc:
            raise PermanentCloudError(_OPERATION, f"{method} {path}: {exc}") from exc
        except TimeoutError as exc:
            hint = ""
            if method == "PUT":  # the token's reply is the packet a low hop limit drops
                hint = " (from a pod without hostNetwork, IMDSv2 needs an HttpPutResponseHopLimit >= 2)"
            raise _Retry(f"{method} {path}: timed out after {self._timeout:g} s{hint}") from exc
        except (OSError, http.client.HTTPException) as exc:
            raise _Retry(f"{method} {path}: {type(exc).__name__}: {exc}") from exc
        finally:
            conn.close()
        if len(body) > _MAX_BODY:
            raise PermanentCloudError(_OPERATION, f"{method} {path}: response larger than {_MAX_BODY} bytes")
        return _Response(response.status, body, retry_after)

    # -- the node -----------------------------------------------------------------------------

    def node(self) -> NodeMetadata:
        """Identity, placement and every attached interface of this instance."""
        instance_id = self._required("instance-id", _aws_id("i-"))
        instance_type = self._required("instance-type", _matching(_INSTANCE_TYPE, "an instance type"))
        zone = self._required("placement/availability-zone", _matching(_ZONE, "an availability zone"))
        region_text = self.get("placement/region")
        if region_text is not None:
            region = _region("placement/region", region_text)
        else:  # older IMDS: the zone's Region prefix ("us-west-2-lax-1a" -> "us-west-2")
            region = _region("placement/availability-zone", zone)
        primary_ip = _ipv4("local-ipv4", self._required("local-ipv4", _text))
        primary_mac = self._required("mac", _mac)
        interfaces = tuple(self.interfaces())
        if primary_mac not in {iface.mac for iface in interfaces}:
            raise PermanentCloudError(
                _OPERATION, f"mac: {primary_mac!r} is not listed under network/interfaces/macs/"
            )
        return NodeMetadata(
            instance_id=instance_id,
            instance_type=instance_type,
            availability_zone=zone,
            region=region,
            primary_ip=primary_ip,
            primary_mac=primary_mac,
            interfaces=interfaces,
        )

    def interfaces(self) -> list[ImdsInterface]:
        """The attached interfaces IMDS knows of, by network card then device number."""
        path = "network/interfaces/macs/"
        listing = self._required(path, _text)
        macs = [_mac(path, entry.rstrip("/")) for entry in _lines(listing)]
        if not macs:
            raise PermanentCloudError(_OPERATION, f"{path}: no interfaces listed")
        found = [self._interface(mac) for mac in dict.fromkeys(macs)]
        return sorted(found, key=lambda i: (i.network_card, i.device_number))

    def _interface(self, mac: str) -> ImdsInterface:
        base = f"network/interfaces/macs/{mac}/"

        def required(key: str, parse: Callable[[str, str], T]) -> T:
            # The interface was listed a moment ago: a 404 now means it is being detached.
            return self._required(base + key, parse, vanished=True)

        subnet_cidr = required("subnet-ipv4-cidr-block", _cidr)
        subnet = ipaddress.IPv4Network(subnet_cidr)
        local_ipv4s = required("local-ipv4s", _ipv4_list)
        for ip in local_ipv4s:
            if ipaddress.IPv4Address(ip) not in subnet:
                raise PermanentCloudError(
                    _OPERATION, f"{base}local-ipv4s: {ip!r} is outside the subnet {subnet_cidr}"
                )
        prefixes_text = self.get(base + "ipv4-prefix")
        prefixes = () if prefixes_text is None else _cidr_list(base + "ipv4-prefix", prefixes_text)
        card_text = self.get(base + "network-card")
        return ImdsInterface(
            mac=mac,
            interface_id=required("interface-id", _aws_id("eni-")),
            device_number=required("device-number", _small_int(127)),
            network_card=0 if card_text is None else _small_int(31)(base + "network-card", card_text),
            subnet_id=required("subnet-id", _aws_id("subnet-")),
            subnet_cidr=subnet_cidr,
            vpc_id=required("vpc-id", _aws_id("vpc-")),
            vpc_cidrs=required("vpc-ipv4-cidr-blocks", _cidr_list),
            security_group_ids=required("security-group-ids", _id_list("sg-")),
            local_ipv4s=local_ipv4s,
            ipv4_prefixes=prefixes,
        )

    def _required(self, path: str, parse: Callable[[str, str], T], *, vanished: bool = False) -> T:
        text = self.get(path)
        if text is None:
            if vanished:
                raise TemporaryCloudError(_OPERATION, f"{path}: not found (404): interface detached?")
            raise PermanentCloudError(_OPERATION, f"{path}: not found (404)")
        return parse(path, text)


# -- HTTP helpers ---------------------------------------------------------------------------------


def _parse_endpoint(endpoint: str, source: str) -> tuple[str, str, str, int, str]:
    """(normalised URL, scheme, host, port, path prefix) of an http(s) endpoint."""
    value = endpoint.strip().rstrip("/")
    parts = urlsplit(value)
    try:
        port = parts.port
    except ValueError:
        port = -1
    if parts.scheme not in ("http", "https") or not parts.hostname or port == -1 or parts.query:
        allowed = "an http:// or https:// URL such as http://169.254.169.254"
        if source == ENDPOINT_ENV:
            raise ConfigError(ENDPOINT_ENV, endpoint, allowed)
        raise ValueError(f"endpoint {endpoint!r} is not {allowed}")
    default_port = 443 if parts.scheme == "https" else 80
    return value, parts.scheme, parts.hostname, port or default_port, parts.path


def _raise_for_status(request: str, response: _Response) -> NoReturn:
    """Raise the error an unexpected status means: _Retry for 429 and 5xx, else permanent."""
    if response.status == 429:
        raise _Retry(f"{request}: HTTP 429 (throttled)", retry_after=response.retry_after, throttled=True)
    if response.status >= 500:
        raise _Retry(f"{request}: HTTP {response.status}", retry_after=response.retry_after)
    raise PermanentCloudError(_OPERATION, f"{request}: unexpected HTTP {response.status}")


def _seconds(header: str | None) -> float | None:
    if header is None:
        return None
    try:
        value = float(header.strip())
    except ValueError:
        return None  # an HTTP date: ignored, the backoff applies
    return value if math.isfinite(value) and value >= 0 else None


def _decode(path: str, body: bytes) -> str:
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError:
        raise PermanentCloudError(_OPERATION, f"{path}: response is not UTF-8 text") from None


# -- value parsers: (path, text) -> value, PermanentCloudError naming both on garbage --------------


def _bad(path: str, value: str, what: str) -> PermanentCloudError:
    shown = value if len(value) <= 80 else value[:77] + "..."
    return PermanentCloudError(_OPERATION, f"{path}: {shown!r} is not {what}")


def _text(path: str, text: str) -> str:
    return text


def _one(path: str, text: str) -> str:
    value = text.strip()
    if not value or any(c.isspace() for c in value):
        raise _bad(path, text, "a single value")
    return value


def _lines(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines() if line.strip()]


def _matching(pattern: re.Pattern[str], what: str) -> Callable[[str, str], str]:
    def parse(path: str, text: str) -> str:
        value = text.strip()
        if not pattern.fullmatch(value):
            raise _bad(path, text, what)
        return value

    return parse


def _aws_id(prefix: str) -> Callable[[str, str], str]:
    return _matching(
        re.compile(re.escape(prefix) + r"[0-9a-f]{8,17}"), f"an id like {prefix}0123456789abcdef0"
    )


def _id_list(prefix: str) -> Callable[[str, str], tuple[str, ...]]:
    one = _aws_id(prefix)

    def parse(path: str, text: str) -> tuple[str, ...]:
        values = tuple(one(path, line) for line in _lines(text))
        if not values:
            raise _bad(path, text, f"a list of {prefix}... ids")
        return values

    return parse


def _mac(path: str, text: str) -> str:
    value = text.strip().lower()
    if not _MAC.match(value):
        raise _bad(path, text, "a MAC address")
    return value


def _region(path: str, text: str) -> str:
    match = _REGION.match(text.strip())
    if match is None or (path == "placement/region" and match.group(0) != text.strip()):
        raise _bad(path, text, "a Region" if path == "placement/region" else "a zone of a Region")
    return match.group(0)


def _ipv4(path: str, text: str) -> str:
    value = text.strip()
    try:
        return str(ipaddress.IPv4Address(value))
    except ValueError:
        raise _bad(path, text, "an IPv4 address") from None


def _ipv4_list(path: str, text: str) -> tuple[str, ...]:
    values = tuple(_ipv4(path, line) for line in _lines(text))
    if not values:
        raise _bad(path, text, "a list of IPv4 addresses")
    return values


def _cidr(path: str, text: str) -> str:
    value = _one(path, text)
    try:
        return str(ipaddress.IPv4Network(value, strict=True))
    except ValueError:
        raise _bad(path, text, "an IPv4 CIDR block") from None


def _cidr_list(path: str, text: str) -> tuple[str, ...]:
    values = tuple(_cidr(path, line) for line in _lines(text))
    if not values:
        raise _bad(path, text, "a list of IPv4 CIDR blocks")
    return values


def _small_int(maximum: int) -> Callable[[str, str], int]:
    def parse(path: str, text: str) -> int:
        value = text.strip()
        if not (value.isascii() and value.isdigit()) or int(value) > maximum:
            raise _bad(path, text, f"an integer in 0..{maximum}")
        return int(value)

    return parse
