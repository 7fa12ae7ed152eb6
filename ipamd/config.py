"""Settings: every environment variable the daemon reads, parsed and validated in one table.

A bad value stops the daemon at start with one line naming the variable, the value and what is
allowed (``ConfigError``); there is no silent default for a value that was set. docs/configuration.md
is the operator's reference and a test keeps it in step with ``VARIABLES``.
"""

from __future__ import annotations

import ipaddress
import math
import operator
import re
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from ipamd.errors import ConfigError
from ipamd.pool.model import WarmPoolTargets

PROVIDERS = ("aws", "azure", "sim")
DATAPATHS = ("linux", "windows", "none")
LOG_LEVELS = ("debug", "info", "warning", "error")
POOL_MODES = ("static", "adaptive")
_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")
_CLUSTER_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,99}$")


def _choice(allowed: tuple[str, ...]) -> Callable[[str], str]:
    def parse(raw: str) -> str:
        value = raw.strip().lower()
        if value not in allowed:
            raise ValueError("one of " + ", ".join(allowed))
        return value

    return parse


def _int_at_least(low: int) -> Callable[[str], int]:
    def parse(raw: str) -> int:
        try:
            value = int(raw.strip(), 10)
        except ValueError:
            raise ValueError(f"an integer >= {low}") from None
        if value < low:
            raise ValueError(f"an integer >= {low}")
        return value

    return parse


def _seconds(raw: str) -> float:
    try:
        value = float(raw.strip())
    except ValueError:
        raise ValueError("a number of seconds >= 0") from None
    if not math.isfinite(value) or value < 0:
        raise ValueError("a number of seconds >= 0")
    return value


def _positive_rate(raw: str) -> float:
    try:
        value = float(raw.strip())
    except ValueError:
        raise ValueError("a number > 0 (calls per second)") from None
    if not math.isfinite(value) or value <= 0:
        raise ValueError("a number > 0 (calls per second)")
    return value


def _api_budget(raw: str) -> dict[str, float]:
    """``class=rate,...``: cluster-wide calls per second per action class (ipamd.cloud.budget).

    Which classes a provider has is checked in ``Settings.from_env``, where CLOUD_PROVIDER is known.
    """
    from ipamd.cloud.budget import ARM_CLASSES, EC2_CLASSES

    known = (*EC2_CLASSES, *ARM_CLASSES)
    allowed = (
        f"class=calls-per-second pairs, comma-separated, e.g. assign=4,interface=4,attach=4,describe=16; "
        f"classes: {', '.join(EC2_CLASSES)} (aws, sim) or {', '.join(ARM_CLASSES)} (azure); rates > 0"
    )
    budget: dict[str, float] = {}
    for item in raw.split(","):
        cls, sep, rate_text = (part.strip() for part in item.partition("="))
        if not sep or cls.lower() not in known or cls.lower() in budget:
            raise ValueError(allowed)
        try:
            rate = float(rate_text)
        except ValueError:
            raise ValueError(allowed) from None
        if not math.isfinite(rate) or rate <= 0:
            raise ValueError(allowed)
        budget[cls.lower()] = rate
    return budget


def _positive_duration(raw: str) -> float:
    value = _duration(raw)
    if value <= 0:
        raise ValueError("seconds > 0 (300) or a duration such as 90s, 5m, 1h30m")
    return value


def _bool(raw: str) -> bool:
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ValueError("true or false")


def _path(raw: str) -> str:
    value = raw.strip()
    if not value.startswith("/") or "\0" in value:
        raise ValueError("an absolute path")
    return value


def _path_or_off(raw: str) -> str | None:
    if raw.strip().lower() == "off":
        return None
    try:
        return _path(raw)
    except ValueError:
        raise ValueError("an absolute path, or off") from None


_CNI_NETWORK = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9_.\-]*")  # what ipamd/rpc/validate.py accepts in a call


def _cni_network(raw: str) -> str:
    value = raw.strip()
    if len(value) > 1024 or not _CNI_NETWORK.fullmatch(value):
        raise ValueError("a CNI network name: [a-zA-Z0-9][a-zA-Z0-9_.-]*, at most 1024 characters")
    return value


def _aws_veth_prefix(raw: str) -> str:
    value = raw.strip()
    if not re.fullmatch(r"[A-Za-z0-9]{1,4}", value):
        raise ValueError("1 to 4 letters or digits, as aws-node's AWS_VPC_K8S_CNI_VETHPREFIX")
    return value


_LOOPBACK_HOSTS = ("127.0.0.1", "::1")
_SOCKET_ALLOWED = (
    "an absolute path (a Unix socket), or tcp://127.0.0.1:PORT or tcp://[::1]:PORT (loopback only)"
)


def tcp_endpoint(value: str) -> tuple[str, int] | None:
    """IPAMD_SOCKET's TCP form as (host, port): ``tcp://127.0.0.1:PORT`` or ``tcp://[::1]:PORT``.

    None for a Unix socket path. Loopback only: the calls carry the daemon's token in clear text.
    ValueError (saying what is allowed) for any other tcp:// value.
    """
    if not value.startswith("tcp://"):
        return None
    host, sep, port = value.removeprefix("tcp://").rpartition(":")
    if not sep or not (port.isascii() and port.isdigit() and len(port) <= 5) or not 0 < int(port) < 65536:
        raise ValueError(f"{_SOCKET_ALLOWED}, with a port 1-65535")
    bare = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if bare not in _LOOPBACK_HOSTS or (":" in bare) != (bare != host):  # IPv6 only in brackets
        raise ValueError(f"{_SOCKET_ALLOWED}; host {host!r} is refused")
    return bare, int(port)


def _ipamd_socket(raw: str) -> str:
    value = raw.strip()
    if tcp_endpoint(value) is not None:
        return value
    if not value.startswith("/") or "\0" in value:
        raise ValueError(_SOCKET_ALLOWED)
    return value


def _bind(raw: str) -> str | None:
    """host:port, [v6]:port, or ``off``."""
    value = raw.strip()
    if value.lower() == "off":
        return None
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError("host:port with a port 1-65535, or off")
    host = host.removeprefix("[").removesuffix("]")
    try:
        ipaddress.ip_address(host)
    except ValueError:
        if host != "localhost":
            raise ValueError("host:port with an IP address or localhost as host, or off") from None
    return value


def _cluster_name(raw: str) -> str:
    value = raw.strip()
    if value and not _CLUSTER_NAME.match(value):
        raise ValueError("letters, digits, '_', '.', '-' (at most 100, starting alphanumeric)")
    return value


def _cidr(raw: str) -> str:
    try:
        net = ipaddress.IPv4Network(raw.strip(), strict=True)
    except ValueError:
        raise ValueError("an IPv4 CIDR such as 10.0.0.0/22") from None
    if net.prefixlen > 28:
        raise ValueError("an IPv4 CIDR of /28 or larger")
    return str(net)


def _url(raw: str) -> str:
    value = raw.strip()
    scheme, sep, rest = value.partition("://")
    if scheme not in ("http", "https") or not sep or not rest or any(c.isspace() for c in value):
        raise ValueError("an http:// or https:// URL")
    return value.rstrip("/")


def _aws_region(raw: str) -> str:
    value = raw.strip()
    parts = value.split("-")
    if (
        len(parts) < 3
        or not parts[-1].isdigit()
        or not all(p.isalnum() for p in parts)
        or value != value.lower()
    ):
        raise ValueError("an AWS Region name such as us-east-1")
    return value


def _aws_ids(prefix: str, *, many: bool) -> Callable[[str], Any]:
    def check(item: str) -> str:
        body = item.removeprefix(prefix)
        if not item.startswith(prefix) or not body or not all(c in "0123456789abcdef" for c in body):
            raise ValueError(f"{'a comma-separated list of ' if many else 'an '}id(s) like {prefix}0123abcd")
        return item

    def parse(raw: str) -> Any:
        items = [item.strip() for item in raw.split(",") if item.strip()]
        if not many:
            if len(items) != 1:
                raise ValueError(f"one id like {prefix}0123abcd")
            return check(items[0])
        if not items or len(items) > 16:
            raise ValueError(f"1 to 16 comma-separated ids like {prefix}0123abcd")
        return tuple(check(item) for item in items)

    return parse


def _tags(raw: str) -> dict[str, str]:
    import json

    try:
        value = json.loads(raw)
    except ValueError:
        raise ValueError('a JSON object of string tags, e.g. {"team": "net"}') from None
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        raise ValueError('a JSON object of string tags, e.g. {"team": "net"}')
    reserved = [
        k
        for k in value
        if k.startswith(("aws:", "node.k8s.amazonaws.com/", "cluster.k8s.amazonaws.com/", "cloud-cni/"))
    ]
    if reserved or len(value) > 40 or any(len(k) > 128 or len(v) > 256 for k, v in value.items()):
        raise ValueError(
            "at most 40 tags, keys <= 128 and values <= 256 characters, none of the reserved prefixes"
        )
    return dict(value)


def _instance_type(raw: str) -> str:
    from ipamd.cloud.sim import INSTANCE_TYPES  # the sim's table is the one list of simulated types

    value = raw.strip()
    if value not in INSTANCE_TYPES:
        raise ValueError("one of " + ", ".join(sorted(INSTANCE_TYPES)))
    return value


@dataclass(frozen=True, slots=True)
class Variable:
    name: str
    field: str
    default: str | None  # None: unset (or required when ``required``)
    parse: Callable[[str], Any]
    doc: str
    required: bool = False
    azure_default: str | None = None  # the default when CLOUD_PROVIDER=azure, if it differs
    empty_means_off: bool = False  # set but empty: the empty value (off), not the default


# Warm-pool targets an operator may set. If any is set, the azure defaults of the others are not
# applied (setting WARM_ENI_TARGET alone must mean warm-ENI mode, as on AWS).
_POOL_MODE_VARS = ("WARM_ENI_TARGET", "WARM_IP_TARGET", "MINIMUM_IP_TARGET", "WARM_PREFIX_TARGET")


def _guid(raw: str) -> str:
    value = raw.strip().lower()
    if not re.fullmatch(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", value):
        raise ValueError("a GUID such as 00000000-0000-0000-0000-000000000000")
    return value


def _cidrs(raw: str) -> tuple[str, ...]:
    items = [item.strip() for item in raw.split(",") if item.strip()]
    out = []
    for item in items:
        try:
            out.append(str(ipaddress.IPv4Network(item, strict=True)))
        except ValueError:
            raise ValueError(
                f"comma-separated IPv4 CIDRs such as 192.0.2.0/24,198.51.100.0/24 ({item!r} is not)"
            ) from None
    return tuple(out)


def _veth_prefix(raw: str) -> str:
    value = raw.strip()
    if not re.fullmatch(r"[a-z][a-z0-9]{0,3}", value):
        raise ValueError(
            "1 to 4 lowercase letters or digits, starting with a letter (host veth = prefix + 11 hex)"
        )
    return value


def _mtu(raw: str) -> int:
    try:
        value = int(raw.strip())
    except ValueError:
        raise ValueError("an integer MTU from 576 to 9001") from None
    if not 576 <= value <= 9001:
        raise ValueError("an integer MTU from 576 to 9001")
    return value


def _https_url(raw: str) -> str:
    value = _url(raw)
    if not value.startswith("https://"):
        raise ValueError("an https:// URL (ARM is only spoken over TLS)")
    return value


_DURATION = re.compile(r"^(?:(\d+(?:\.\d+)?)h)?(?:(\d+(?:\.\d+)?)m(?!s))?(?:(\d+(?:\.\d+)?)s)?$")


def _duration(raw: str) -> float:
    """Seconds as a number (``300``) or a Go-style duration (``5m``, ``1h30m``, ``90s``)."""
    value = raw.strip()
    allowed = "seconds (300) or a duration such as 90s, 5m, 1h30m"
    try:
        return _seconds(value)
    except ValueError:
        pass
    match = _DURATION.match(value)
    if not value or match is None or not any(match.groups()):
        raise ValueError(allowed)
    hours, minutes, seconds = (float(g) if g else 0.0 for g in match.groups())
    return hours * 3600 + minutes * 60 + seconds


def _adaptive_window(raw: str) -> float:
    """ADAPTIVE_WINDOW: a duration of at least a minute (the history is kept in 30 slices of it)."""
    allowed = "a duration of at least 1m: seconds (1800) or such as 90s, 30m, 1h"
    try:
        value = _duration(raw)
    except ValueError:
        raise ValueError(allowed) from None
    if value < 60:
        raise ValueError(allowed)
    return value


def _integration(raw: str) -> str:
    return _choice(("auto", "on", "off"))(raw)


_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_LABEL_NAME = re.compile(r"^[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$")
_TAINT_VALUE = re.compile(r"^([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?$")
TAINT_EFFECTS = ("NoSchedule", "PreferNoSchedule", "NoExecute")


def _node_name(raw: str) -> str:
    value = raw.strip()
    if len(value) > 253 or not _DNS_SUBDOMAIN.match(value):
        raise ValueError("a Node name: a lowercase DNS subdomain of at most 253 characters")
    return value


def _qualified_key(value: str) -> bool:
    """A Kubernetes qualified name: [DNS-subdomain prefix /] name of at most 63 characters."""
    prefix, sep, name = value.rpartition("/")
    if sep and (not prefix or len(prefix) > 253 or not _DNS_SUBDOMAIN.match(prefix)):
        return False
    return bool(_LABEL_NAME.match(name))


def _label_key(raw: str) -> str:
    value = raw.strip()
    if not _qualified_key(value):
        raise ValueError("a label or annotation key such as k8s.amazonaws.com/eniConfig")
    return value


def _taint(raw: str) -> str:
    """``key[=value]:Effect`` as kubectl writes it, or empty (disabled)."""
    value = raw.strip()
    allowed = "key[=value]:Effect with Effect NoSchedule, PreferNoSchedule or NoExecute, or empty"
    if not value:
        return ""
    spec, sep, effect = value.rpartition(":")
    key, _, taint_value = spec.partition("=")
    valid = sep and effect in TAINT_EFFECTS and _qualified_key(key) and _TAINT_VALUE.match(taint_value)
    if not valid:
        raise ValueError(allowed)
    return value


def _azure_subnet_id(raw: str) -> str:
    value = raw.strip()
    if not re.fullmatch(
        r"/subscriptions/[^/]+/resourceGroups/[^/]+/providers/Microsoft\.Network/virtualNetworks/[^/]+"
        r"/subnets/[^/]+",
        value,
        flags=re.IGNORECASE,
    ):
        raise ValueError(
            "a subnet resource id: /subscriptions/S/resourceGroups/G/providers/Microsoft.Network/"
            "virtualNetworks/V/subnets/N"
        )
    return value


VARIABLES: tuple[Variable, ...] = (
    Variable("CLOUD_PROVIDER", "cloud_provider", None, _choice(PROVIDERS),
             "aws, azure or sim (in-process simulated cloud). Required: never guessed.", required=True),
    Variable("DATAPATH", "datapath", "linux" if sys.platform.startswith("linux") else "windows",
             _choice(DATAPATHS), "linux (veth + routes), windows (HNS), none (IPAM only)."),
    Variable("IPAMD_SOCKET", "ipamd_socket", "/var/run/cloud-cni/ipamd.sock", _ipamd_socket,
             "gRPC Unix socket (mode 0600, parent directory 0700), or tcp://127.0.0.1:PORT or "
             "tcp://[::1]:PORT (Windows: loopback only, every call carries the token of IPAMD_TOKEN_FILE)."),
    Variable("IPAMD_TOKEN_FILE", "ipamd_token_file", None, _path,
             "IPAMD_SOCKET=tcp:// only: a fresh token is written here (mode 0600) at every start. "
             "Unset: ipamd.token beside CHECKPOINT_PATH."),
    Variable("CHECKPOINT_PATH", "checkpoint_path", "/var/run/cloud-cni/ipam.json", _path,
             "Crash-consistent state: assignments, cool-downs, quarantine."),
    Variable("METRICS_BIND", "metrics_bind", "0.0.0.0:61678", _bind,
             "Prometheus /metrics listen address, or off."),
    Variable("INTROSPECTION_BIND", "introspection_bind", "127.0.0.1:61679", _bind,
             "JSON introspection listen address, or off."),
    Variable("WARM_ENI_TARGET", "warm_eni_target", "1", _int_at_least(0),
             "Free interfaces' worth of IPs to keep warm (ignored when WARM_IP/MINIMUM_IP set)."),
    Variable("WARM_IP_TARGET", "warm_ip_target", "0", _int_at_least(0),
             "Free IPs to keep warm; 0 = unset. Replaces WARM_ENI_TARGET when set.", azure_default="8"),
    Variable("MINIMUM_IP_TARGET", "minimum_ip_target", "0", _int_at_least(0),
             "IPs to hold at least; 0 = unset. Replaces WARM_ENI_TARGET when set.", azure_default="16"),
    Variable("IP_BATCH_SIZE", "ip_batch_size", "1", _int_at_least(1),
             "Warm-IP mode: IPs held move on multiples of this (CNS batchSize): one cloud write per batch.",
             azure_default="16"),
    Variable("WARM_PREFIX_TARGET", "warm_prefix_target", "0", _int_at_least(0),
             "Free /28 prefixes to keep warm with prefix delegation; 0 = unset."),
    Variable("ENABLE_PREFIX_DELEGATION", "enable_prefix_delegation", "false", _bool,
             "Hold /28 prefixes instead of single secondary IPs (AWS Nitro)."),
    Variable("MAX_ENI", "max_eni", None, _int_at_least(1),
             "Cap on interfaces, at most the instance limit. Unset: the instance limit."),
    Variable("IP_COOLDOWN_PERIOD", "ip_cooldown_period", "30", _seconds,
             "Seconds a released IP rests before reuse (kept across restarts)."),
    Variable("MAX_PODS", "max_pods", None, _int_at_least(1),
             "Cap on pod IPs held. Unset: the Node's capacity.pods, else the instance's interfaces "
             "x (IPs per interface - 1) + 2 (one interface fewer with custom networking)."),
    Variable("CLUSTER_NAME", "cluster_name", "", _cluster_name,
             "Tagged on every cloud resource the daemon creates."),
    Variable("POOL_RELEASE_DELAY", "pool_release_delay", "30", _seconds,
             "Hysteresis: the pool shrinks only after this many seconds without growing or shrinking."),
    Variable("POOL_MIN_ACTION_INTERVAL", "pool_min_action_interval", "0", _seconds,
             "Least seconds between two pool batches (0: react at once; the reference paces at 5)."),
    Variable("POOL_MODE", "pool_mode", "static", _choice(POOL_MODES),
             "static: the targets above, as set; adaptive: learn the node's pod starts and choose the free "
             "addresses and batch itself (WARM_IP/MINIMUM_IP/WARM_PREFIX targets, IP_BATCH_SIZE and "
             "POOL_RELEASE_DELAY are floors; WARM_ENI_TARGET is ignored; docs/pool-policy.md)."),
    Variable("ADAPTIVE_WINDOW", "adaptive_window", "30m", _adaptive_window,
             "POOL_MODE=adaptive: how long a burst of pod starts is remembered, i.e. pre-warmed for and not "
             "released (at least 1m)."),
    Variable("ADD_WAIT_TIMEOUT", "add_wait_timeout", "5", _seconds,
             "How long an ADD waits for the pool to grow when it is empty, before CNI error 11.",
             azure_default="30"),
    Variable("COOLDOWN_OVERRIDE_WAIT", "cooldown_override_wait", "2", _seconds,
             "Seconds an ADD that finds only cooling addresses waits for the pool to grow before it takes "
             "the one cooling longest (at once when the pool cannot grow; at most ADD_WAIT_TIMEOUT)."),
    Variable("CLOUD_API_RATE", "cloud_api_rate", "5", _positive_rate,
             "Client-side limit on cloud API calls per second (token bucket refill).", azure_default="1"),
    Variable("CLOUD_API_BURST", "cloud_api_burst", "10", _int_at_least(1),
             "Client-side token bucket size for cloud API calls."),
    Variable("CLOUD_API_BUDGET", "cloud_api_budget", None, _api_budget,
             "Cluster-wide cloud API calls per second per action class, e.g. "
             "assign=4,interface=4,attach=4,describe=16 (azure: write=, read=); each node takes budget / "
             "the Kubernetes node count, on top of CLOUD_API_RATE. Needs the Kubernetes integration."),
    Variable("CLOUD_API_BUDGET_POLL_INTERVAL", "cloud_api_budget_poll_interval", "10m", _positive_duration,
             "CLOUD_API_BUDGET: how often the node count is read from the API (jittered +-20%)."),
    Variable("CLOUD_API_BUDGET_BUSY_POLL_INTERVAL", "cloud_api_budget_busy_poll_interval", "30",
             _positive_duration,
             "CLOUD_API_BUDGET: while calls wait for this node's share, the node count is read again once "
             "it is this old (a scale-up is seen within it instead of within the poll interval)."),
    Variable("CLOUD_API_BUDGET_ASSUMED_NODES", "cloud_api_budget_assumed_nodes", "100", _int_at_least(1),
             "CLOUD_API_BUDGET: the node count assumed until the API has answered once."),
    Variable("GROWTH_PAUSE", "growth_pause", "120", _seconds,
             "Seconds growth pauses after the subnet is full or a limit is hit."),
    Variable("RECONCILE_INTERVAL", "reconcile_interval", "60", _seconds,
             "Seconds between reconciles of the pool with what the cloud reports."),
    Variable("SHUTDOWN_TIMEOUT", "shutdown_timeout", "10", _seconds,
             "Seconds SIGTERM waits for in-flight calls before the daemon exits."),
    Variable("LOG_LEVEL", "log_level", "info", _choice(LOG_LEVELS), "debug, info, warning or error."),
    Variable("KUBERNETES_INTEGRATION", "kubernetes_integration", "auto", _integration,
             "auto (on when in-cluster or KUBECONFIG config exists), on (refuse to start without), off."),
    Variable("NODE_NAME", "node_name", None, _node_name,
             "This node's name (downward API spec.nodeName)."),
    Variable("KUBECONFIG", "kubeconfig", None, _path,
             "Kubeconfig file to use when not in-cluster (the in-cluster service account wins)."),
    Variable("STARTUP_TAINT", "startup_taint", "node.cloud-cni.io/agent-not-ready:NoSchedule", _taint,
             "Removed from the Node once the daemon can serve a pod (key[=value]:Effect); set empty: off.",
             empty_means_off=True),
    Variable("STARTUP_TAINT_TIMEOUT", "startup_taint_timeout", "5m", _duration,
             "Remove the startup taint anyway after this, with a Warning event saying why."),
    Variable("POD_GONE_GRACE", "pod_gone_grace", "15m", _duration,
             "An assignment whose pod is absent from a synced watch this long, and whose netns is gone, "
             "is released."),
    Variable("ENABLE_NETWORK_POLICY", "enable_network_policy", "false", _bool,
             "linux datapath: enforce NetworkPolicy (nftables table cloud-cni-netpol; needs the Kubernetes "
             "integration)."),
    Variable("NETWORK_POLICY_ENFORCING_MODE", "network_policy_enforcing_mode", "standard",
             _choice(("standard", "strict")),
             "standard: a new pod is open until its policies are programmed; strict: it is denied until "
             "then."),
    Variable("NETWORK_POLICY_MIN_INTERVAL", "network_policy_min_interval", "0.05", _seconds,
             "Seconds the NetworkPolicy programmer gathers watch events before one nft transaction."),
    Variable("AWS_VPC_K8S_CNI_CUSTOM_NETWORK_CFG", "custom_network_cfg", "false", _bool,
             "aws only: ENIConfig custom networking (pod ENIs in the ENIConfig's subnet and groups)."),
    Variable("ENI_CONFIG_LABEL_DEF", "eni_config_label_def", "k8s.amazonaws.com/eniConfig", _label_key,
             "aws only: Node label naming the ENIConfig (custom networking)."),
    Variable("ENI_CONFIG_ANNOTATION_DEF", "eni_config_annotation_def", "k8s.amazonaws.com/eniConfig",
             _label_key, "aws only: Node annotation naming the ENIConfig (custom networking)."),
    Variable("AZURE_POD_SUBNET_ID", "azure_pod_subnet_id", None, _azure_subnet_id,
             "azure only: subnet pod ipConfigurations are created in. Unset: the NIC's own subnet."),
    Variable("AZURE_POD_SUBNET_LABEL", "azure_pod_subnet_label", "cloud-cni.io/pod-subnet", _label_key,
             "azure only: Node label: a subnet of the node's VNet for pod IPs (AZURE_POD_SUBNET_ID wins)."),
    Variable("AWS_REGION", "aws_region", None, _aws_region,
             "aws only: the Region. Unset: from the instance metadata (placement/region)."),
    Variable("AWS_ENDPOINT_URL", "aws_endpoint_url", None, _url,
             "aws only: EC2 API endpoint override (tests use a local emulator). Unset: the Region's."),
    Variable("AWS_EC2_METADATA_SERVICE_ENDPOINT", "aws_imds_endpoint", None, _url,
             "aws only: instance metadata endpoint. Unset: http://169.254.169.254."),
    Variable("ENI_SUBNET_ID", "eni_subnet_id", None, _aws_ids("subnet-", many=False),
             "aws only: subnet for new ENIs. Unset: the node's primary ENI's subnet."),
    Variable("ENI_SECURITY_GROUPS", "eni_security_groups", None, _aws_ids("sg-", many=True),
             "aws only: comma-separated security groups for new ENIs. Unset: the primary ENI's."),
    Variable("ADDITIONAL_ENI_TAGS", "additional_eni_tags", None, _tags,
             "aws only: JSON object of extra tags on every ENI the daemon creates."),
    Variable("ENI_ATTACH_TIMEOUT", "eni_attach_timeout", "30", _seconds,
             "aws only: seconds to wait for a new ENI to attach before it is deleted again."),
    Variable("LEAKED_ENI_CLEANUP_INTERVAL", "leaked_eni_cleanup_interval", "3600", _seconds,
             "Seconds between sweeps for leaked (available, > 5 min old) interfaces of the cluster; 0: off."),
    Variable("POD_MTU", "pod_mtu", None, _mtu,
             "linux datapath: MTU of pod veths and secondary interfaces. Unset: the primary interface's."),
    Variable("VETH_PREFIX", "veth_prefix", "ccni", _veth_prefix,
             "linux datapath: host veth names are this prefix + 11 hex of sha1(container id/ifname)."),
    Variable("CNI_NETWORK_NAME", "cni_network_name", "cloud-cni", _cni_network,
             "The \"name\" of the node's conflist (deploy/10-cloud-cni.conflist): the network aws-vpc-cni's "
             "adopted pods are keyed by, so that the runtime's DEL and GC find them."),
    Variable("AWS_VPC_CNI_CHECKPOINT", "aws_vpc_cni_checkpoint", "/var/run/aws-node/ipam.json", _path_or_off,
             "aws only (and sim): aws-vpc-cni's checkpoint, adopted at a start that finds no checkpoint of "
             "ours (docs/adoption-aws-vpc-cni.md), then renamed to *.adopted-by-cloud-cni; or off."),
    Variable("AWS_VPC_CNI_VETH_PREFIX", "aws_vpc_cni_veth_prefix", "eni", _aws_veth_prefix,
             "The host veth prefix aws-node had (its AWS_VPC_K8S_CNI_VETHPREFIX) for the adopted pods' "
             "veths, which the linux datapath renames to `VETH_PREFIX` names."),
    Variable("EXTERNAL_SNAT", "external_snat", "false", _bool,
             "true = no SNAT here (a NAT gateway does it; windows: no OutBoundNAT policy); pods egress by "
             "their interface."),
    Variable("EXCLUDE_SNAT_CIDRS", "exclude_snat_cidrs", "", _cidrs,
             "comma-separated CIDRs reached without SNAT, besides the VPC/VNet CIDRs (windows: OutBoundNAT "
             "exceptions)."),
    Variable("NODE_PORT_SUPPORT", "node_port_support", "true", _bool,
             "linux datapath: connections arriving by the primary interface for a node address (NodePorts, "
             "hostPorts) are answered by the primary interface, also by pods on secondary interfaces "
             "(docs/datapath.md); also with EXTERNAL_SNAT."),
    Variable("SNAT_BACKEND", "snat_backend", "auto",
             _choice(("auto", "nftables", "iptables", "iptables-legacy", "iptables-nft")),
             "linux datapath: auto, nftables or iptables (docs/datapath.md: how auto chooses)."),
    Variable("INTERFACE_LINK_TIMEOUT", "interface_link_timeout", "10", _seconds,
             "linux datapath: seconds to wait for a newly attached interface's link to appear."),
    Variable("HCN_BACKEND", "hcn_backend", "computenetwork", _choice(("computenetwork", "fake")),
             "windows datapath: computenetwork (the node's HCN, Windows only) or fake (the in-package fake "
             "HCN: tests and the demo, any OS)."),
    Variable("HCN_FAKE_STATE", "hcn_fake_state", None, _path,
             "windows datapath, HCN_BACKEND=fake: the fake HCN's state file. Unset: beside CHECKPOINT_PATH."),
    Variable("HCN_TRACE", "hcn_trace", None, _path,
             "windows datapath: append every HCN call to this file as a JSON line {method, kind, doc}."),
    Variable("HCN_CALL_TIMEOUT", "hcn_call_timeout", "20", _seconds,
             "windows datapath: seconds one HCN call may take before the datapath gives up on it."),
    Variable("CLUSTER_CIDRS", "cluster_cidrs", "", _cidrs,
             "windows datapath: pod CIDRs of the cluster beyond the VPC/VNet, exempt from OutBoundNAT."),
    Variable("SERVICE_CIDRS", "service_cidrs", "", _cidrs,
             "windows datapath: the cluster's service CIDRs, exempt from OutBoundNAT."),
    Variable("AZURE_ARM_ENDPOINT", "azure_arm_endpoint", "https://management.azure.com", _https_url,
             "azure only: Azure Resource Manager endpoint (sovereign clouds; tests use a local fake)."),
    Variable("AZURE_ARM_CA_BUNDLE", "azure_arm_ca_bundle", None, _path,
             "azure only: PEM file of CAs trusted for AZURE_ARM_ENDPOINT. Unset: the system store."),
    Variable("AZURE_IMDS_ENDPOINT", "azure_imds_endpoint", "http://169.254.169.254", _url,
             "azure only: instance metadata endpoint (also the managed-identity token endpoint)."),
    Variable("AZURE_CLIENT_ID", "azure_client_id", None, _guid,
             "azure only: client id of the user-assigned managed identity. Unset: the system-assigned one."),
    Variable("SIM_STATE_PATH", "sim_state_path", None, _path,
             "sim only: the simulated cloud's state file. Unset: next to CHECKPOINT_PATH."),
    Variable("SIM_INSTANCE_TYPE", "sim_instance_type", "m5.large", _instance_type,
             "sim only: instance type whose limits the simulated node has."),
    Variable("SIM_SUBNET_CIDR", "sim_subnet_cidr", "10.0.0.0/22", _cidr, "sim only: the node's subnet."),
    Variable("SIM_API_LATENCY", "sim_api_latency", "0.05", _seconds,
             "sim only: seconds a mutating cloud call takes (jittered)."),
    Variable("SIM_THROTTLE_RATE", "sim_throttle_rate", None, _positive_rate,
             "sim only: the simulated cloud's own throttling refill rate; unset = no throttling."),
    Variable("SIM_VPC_CIDR", "sim_vpc_cidr", "10.0.0.0/16", _cidr,
             "sim only: the simulated VPC's CIDR (what the linux datapath does not SNAT)."),
    Variable("SIM_SEED", "sim_seed", "0", _int_at_least(0), "sim only: seed for ids and latency jitter."),
)  # fmt: skip


# --- aws-node's variable names (docs/migrate-from-aws-vpc-cni.md) --------------------------------
#
# A node switched in place from aws-vpc-cni keeps aws-node's environment. Three kinds of names:
# the same name (WARM_IP_TARGET, POD_MTU, ...: VARIABLES reads them as they are), an ``Alias`` (aws-node's
# name for one of our variables, its value translated), and an ``AwsNodeOnly`` variable (no setting
# here: accepted with a log line when nothing the operator relies on is lost, refused otherwise).
# ``Settings.from_env`` stays pure: what it found is returned as ``Settings.alias_notes``, which the
# daemon logs at start, one line each.

_GO_TRUE = ("t",)  # Go's strconv.ParseBool spellings beyond ours (aws-node parses booleans with it)
_GO_FALSE = ("f",)


def _go_bool(raw: str) -> str:
    """An aws-node boolean: ours (true/false, 1/0, yes/no, on/off) or Go's t/f, any case."""
    value = raw.strip().lower()
    if value in _GO_TRUE:
        return "true"
    if value in _GO_FALSE:
        return "false"
    try:
        return "true" if _bool(value) else "false"
    except ValueError:
        raise ValueError("true or false (aws-node's t, f, 1, 0 too)") from None


def _disable_switch(off: str) -> Callable[[str], str | None]:
    """aws-node's DISABLE_X=true: our variable's ``off`` value; false asks for nothing (None)."""

    def translate(raw: str) -> str | None:
        return off if _go_bool(raw) == "true" else None

    return translate


def _as_is(raw: str) -> str:
    return raw.strip()


def _aws_node_cidrs(raw: str) -> str:
    """aws-node's EXCLUDE_SNAT_CIDRS: host bits are cleared (Go's net.ParseCIDR), IPv4 only here."""
    out = []
    for item in (part.strip() for part in raw.split(",")):
        if not item:
            continue
        try:
            net = ipaddress.ip_network(item, strict=False)
        except ValueError:
            raise ValueError(f"comma-separated IPv4 CIDRs such as 192.0.2.0/24 ({item!r} is not)") from None
        if net.version != 4:
            raise ValueError(f"comma-separated IPv4 CIDRs: pods have IPv4 addresses only ({item!r} is IPv6)")
        out.append(str(net))
    return ",".join(out)


def _aws_node_bind(raw: str) -> str:
    """aws-node's INTROSPECTION_BIND_ADDRESS: Go's ``:PORT`` (every address) or host:port; no unix:."""
    value = raw.strip()
    if value.startswith("unix:"):
        raise ValueError("host:port or :port (cloud-cni serves introspection over TCP only, not unix:)")
    return "0.0.0.0" + value if value.startswith(":") else value


def _same_cidrs(a: Any, b: Any) -> bool:
    return set(a) == set(b)


def _connmark(raw: str) -> str:
    """aws-node's AWS_VPC_K8S_CNI_CONNMARK: an integer as Go's ParseInt(s, 0) reads it, 1 to 2^32-1."""
    try:
        mark = int(raw.strip(), 0)
    except ValueError:
        raise ValueError("an integer mark such as 0x80 or 128") from None
    if not 0 < mark <= 0xFFFFFFFF:
        raise ValueError("an integer mark from 1 to 0xffffffff")
    return f"0x{mark:x}"


@dataclass(frozen=True, slots=True)
class Alias:
    """aws-node's name for one of our variables.

    ``translate`` turns its value into our variable's text (then parsed by our parser), raising
    ValueError with what aws-node's form allows; None: the value asks for nothing (aws-node's default
    of a DISABLE_* switch), so our variable keeps its own value or default. Our name wins when both are
    set with the same meaning; a different meaning is a ConfigError naming both. ``fallback``: in
    aws-node our variable only defaults to this one, so ours wins whatever the two say.
    """

    name: str
    variable: str
    translate: Callable[[str], str | None]
    values: str  # how a value carries over (docs/migrate-from-aws-vpc-cni.md)
    fallback: bool = False
    same: Callable[[Any, Any], bool] = operator.eq


ALIASES: tuple[Alias, ...] = (
    Alias("AWS_VPC_K8S_CNI_EXTERNALSNAT", "EXTERNAL_SNAT", _go_bool, "true/false as set (Go's t/f too)."),
    Alias("AWS_VPC_CNI_NODE_PORT_SUPPORT", "NODE_PORT_SUPPORT", _go_bool,
          "true/false as set (Go's t/f too); aws-node's default is true, as ours."),
    Alias("AWS_VPC_K8S_CNI_EXCLUDE_SNAT_CIDRS", "EXCLUDE_SNAT_CIDRS", _aws_node_cidrs,
          "the same comma-separated list; host bits are cleared as aws-node does (10.1.2.3/16 is "
          "10.1.0.0/16); IPv6 entries are refused; compared with ours as a set.", same=_same_cidrs),
    Alias("AWS_VPC_K8S_CNI_VETHPREFIX", "VETH_PREFIX", _as_is,
          "as set; 1 to 4 lowercase letters or digits. aws-node's default `eni` keeps the host veths' prefix "
          "that other node software matches (Calico's interfacePrefix on EKS)."),
    Alias("AWS_VPC_ENI_MTU", "POD_MTU", _as_is,
          "pods and secondary interfaces get this MTU when `POD_MTU` is unset (in aws-node `POD_MTU` "
          "defaults to it, so a `POD_MTU` that is set wins without a conflict); 576 to 9001. The primary "
          "interface's MTU is left as the node has it.", fallback=True),
    Alias("MY_NODE_NAME", "NODE_NAME", _as_is,
          "read when `NODE_NAME` is unset (`NODE_NAME` wins, as it always has).", fallback=True),
    Alias("DISABLE_METRICS", "METRICS_BIND", _disable_switch("off"),
          "`true`: `off`; `false`: nothing asked, `METRICS_BIND` or its default (`0.0.0.0:61678`, aws-node's "
          "port) stands."),
    Alias("INTROSPECTION_BIND_ADDRESS", "INTROSPECTION_BIND", _aws_node_bind,
          "host:port as set; Go's `:PORT` is `0.0.0.0:PORT`; `unix:` sockets are refused."),
    Alias("DISABLE_INTROSPECTION", "INTROSPECTION_BIND", _disable_switch("off"),
          "`true`: `off` (with `INTROSPECTION_BIND_ADDRESS` also set: refused as a contradiction, where "
          "aws-node ignores the address); `false`: nothing asked."),
    Alias("AWS_VPC_K8S_CNI_BACKING_STORE", "AWS_VPC_CNI_CHECKPOINT", _as_is,
          "the same path: the aws-node checkpoint adopted at the switch "
          "([adoption](adoption-aws-vpc-cni.md)); cloud-cni keeps its own at `CHECKPOINT_PATH` and never "
          "writes aws-node's, only renames it once adopted."),
    Alias("DISABLE_LEAKED_ENI_CLEANUP", "LEAKED_ENI_CLEANUP_INTERVAL", _disable_switch("0"),
          "`true`: `0` (no periodic sweep; the start-up sweep of this node's own interfaces still runs); "
          "`false`: nothing asked."),
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class AwsNodeOnly:
    """An aws-node variable with no setting here.

    ``canonical`` names a value (ValueError: not a value aws-node takes). Values in ``inert`` lose
    nothing (an info line; None: every value); values in ``ignored`` ask for something cloud-cni does
    not do and are ignored with a warning (None: every value not inert). Every other value is refused:
    ignoring it would change pod networking the operator relies on. ``domain``: all values, for the doc.
    """

    name: str
    canonical: Callable[[str], str]
    inert: tuple[str, ...] | None
    ignored: tuple[str, ...] | None
    why: str
    domain: tuple[str, ...] | None = None


_BOOLS = ("true", "false")

AWS_NODE_ONLY: tuple[AwsNodeOnly, ...] = (
    AwsNodeOnly("AWS_VPC_K8S_CNI_RANDOMIZESNAT", _choice(("prng", "hashrandom", "none")), ("prng",),
                ("hashrandom",),
                "cloud-cni's SNAT always picks fully random source ports (`prng`, aws-node's default). "
                "`hashrandom` (iptables --random) is ignored: fully random ports are at least as "
                "unpredictable. `none` is refused: source ports would be randomized anyway, which an "
                "operator who turned randomization off relies on not happening.",
                ("prng", "hashrandom", "none")),
    AwsNodeOnly("AWS_VPC_K8S_CNI_CONNMARK", _connmark, ("0x80",), (),
                "cloud-cni marks SNATed connections with 0x80 (aws-node's default), always. Another mark was "
                "chosen to stay clear of another program's bits (kube-proxy 0xc000, Calico 0xffff0000); "
                "0x80 could break that program's routing, so it is refused."),
    AwsNodeOnly("AWS_VPC_K8S_CNI_CONFIGURE_RPFILTER", _go_bool, ("true",), ("false",),
                "cloud-cni's node-init init container sets rp_filter=2 and the daemon writes it only where "
                "it differs; `false` (leave rp_filter alone) is ignored.", _BOOLS),
    AwsNodeOnly("DISABLE_NETWORK_RESOURCE_PROVISIONING", _go_bool, ("false",), (),
                "cloud-cni always creates, attaches and fills interfaces itself; `true` means another agent "
                "provisions them, and the daemon would create ENIs and take addresses reserved for it.",
                _BOOLS),
    AwsNodeOnly("ENABLE_IPv4", _go_bool, ("true",), (),
                "pods get IPv4 addresses only; `false` is an IPv6-only cluster.", _BOOLS),
    AwsNodeOnly("ENABLE_IPv6", _go_bool, ("false",), (),
                "pods get IPv4 addresses only; `true` is an IPv6 cluster.", _BOOLS),
    AwsNodeOnly("ENABLE_POD_ENI", _go_bool, ("false",), (),
                "security groups for pods (branch ENIs on a trunk ENI) are not implemented: pods with a "
                "SecurityGroupPolicy would silently get the node's security groups.", _BOOLS),
    AwsNodeOnly("POD_SECURITY_GROUP_ENFORCING_MODE", _choice(("strict", "standard")), ("strict", "standard"),
                (), "only matters with `ENABLE_POD_ENI=true`, which is refused.", ("strict", "standard")),
    AwsNodeOnly("ENABLE_SUBNET_DISCOVERY", _go_bool, ("false",), ("true",),
                "new ENIs go to `ENI_SUBNET_ID` or the primary ENI's subnet; subnets tagged "
                "kubernetes.io/role/cni are not discovered. Ignored with a warning: `true` is aws-node's "
                "default and, with no tagged subnet, changes nothing.", _BOOLS),
    AwsNodeOnly("ANNOTATE_POD_IP", _go_bool, ("false",), ("true",),
                "pods are not annotated with vpc.amazonaws.com/pod-ips (Calico reads it to learn a pod's "
                "address sooner, and falls back to status.podIP).", _BOOLS),
    AwsNodeOnly("HTTP_TIMEOUT", _as_is, (), None,
                "cloud-cni's EC2 client waits 10 s to connect and 10 s per read (aws-node's default) and "
                "retries with its own backoff."),
    AwsNodeOnly("AWS_VPC_K8S_CNI_LOGLEVEL", _as_is, (), None,
                "the daemon logs JSON lines to stderr at `LOG_LEVEL` (default info); aws-node's level (its "
                "manifest's DEBUG) was for its log file."),
    AwsNodeOnly("AWS_VPC_K8S_CNI_LOG_FILE", _as_is, (), None,
                "the daemon logs to stderr only (`kubectl logs`)."),
    AwsNodeOnly("AWS_VPC_K8S_PLUGIN_LOG_FILE", _as_is, (), None,
                "the plugin logs one JSON line per call to the conflist's `logFile` (default "
                "/var/log/cloud-cni/shim.log)."),
    AwsNodeOnly("AWS_VPC_K8S_PLUGIN_LOG_LEVEL", _as_is, (), None,
                "the plugin has no log level: one line per call."),
    AwsNodeOnly("VPC_ID", _as_is, None, (), "the VPC is read from the instance metadata."),
    AwsNodeOnly("VPC_CNI_VERSION", _as_is, None, (), "informational in aws-node's manifest."),
    AwsNodeOnly("MY_POD_NAME", _as_is, None, (), "not needed: events name the Node."),
)  # fmt: skip

# aws-node variables that cloud-cni reads under the same name, and where the value's form differs.
AWS_NODE_SAME_NAMES: tuple[tuple[str, str], ...] = (
    ("WARM_ENI_TARGET", ""),
    ("WARM_IP_TARGET", ""),
    ("MINIMUM_IP_TARGET", ""),
    ("WARM_PREFIX_TARGET", ""),
    ("ENABLE_PREFIX_DELEGATION", ""),
    ("MAX_ENI", ""),
    ("IP_COOLDOWN_PERIOD", "seconds; fractions allowed"),
    ("POD_MTU", "secondary interfaces get it too"),
    ("CLUSTER_NAME", ""),
    ("ADDITIONAL_ENI_TAGS", "keys with a reserved prefix (aws:, node.k8s.amazonaws.com/, ...) are refused"),
    ("AWS_VPC_K8S_CNI_CUSTOM_NETWORK_CFG", ""),
    ("ENI_CONFIG_LABEL_DEF", ""),
    ("ENI_CONFIG_ANNOTATION_DEF", ""),
    ("NETWORK_POLICY_ENFORCING_MODE", "takes effect with `ENABLE_NETWORK_POLICY=true`"),
)


@dataclass(frozen=True, slots=True)
class AliasNote:
    """An aws-node variable found in the environment and what came of it: one start-up log line.

    ``outcome``: ``applied`` (it set our variable), ``agrees`` (ours, or an alias before it, is set
    and means the same: that one wins), ``unused`` (a fallback; ours is set), ``default`` (the value
    asks for nothing), ``inert`` (no setting here, nothing lost), ``ignored`` (no setting here, and
    what it asks for is not done: a warning).
    """

    name: str
    value: str
    variable: str | None  # ours it maps to; None: no equivalent here
    outcome: str
    reason: str = ""

    @property
    def warning(self) -> bool:
        return self.outcome == "ignored"

    def log(self, logger: Any) -> None:
        """One structured line on ``logger`` (a structlog logger): the daemon calls this at start."""
        if self.variable is not None:
            logger.info(
                "aws_node_variable_alias",
                alias=self.name,
                variable=self.variable,
                value=self.value,
                outcome=self.outcome,
            )
        elif self.warning:
            logger.warning("aws_node_variable_ignored", alias=self.name, value=self.value, reason=self.reason)
        else:
            logger.info("aws_node_variable_inert", alias=self.name, value=self.value, reason=self.reason)


def _aliased(var: Variable, env: Mapping[str, str], notes: list[AliasNote]) -> tuple[bool, Any]:
    """``var``'s value as aws-node's names set it: (True, value) when an alias supplies it; (False,
    None) when our own name, or its default, stands. One note per alias set; conflicts raise."""
    found = [(a, env[a.name]) for a in ALIASES if a.variable == var.name and (env.get(a.name) or "").strip()]
    if not found:
        return False, None
    ours_raw = env.get(var.name) or ""
    ours: Any = None
    if ours_raw.strip():
        try:
            ours = var.parse(ours_raw)
        except ValueError as exc:
            raise ConfigError(var.name, ours_raw, "allowed: " + str(exc)) from None
    chosen: tuple[Alias, str, Any] | None = None
    for alias, raw in found:
        try:
            text = alias.translate(raw)
            value = None if text is None else var.parse(text)
        except ValueError as exc:
            raise ConfigError(alias.name, raw, f"allowed: {exc} (aws-node's name for {var.name})") from None
        if text is None:
            outcome = "default"
        elif ours_raw.strip():
            if not alias.fallback and not alias.same(value, ours):
                raise ConfigError(
                    var.name,
                    ours_raw,
                    f"{alias.name}={raw!r}, aws-node's name for {var.name}, asks for something else: "
                    "unset one of them, or give both the same meaning",
                )
            outcome = "unused" if alias.fallback else "agrees"
        elif chosen is None:
            chosen, outcome = (alias, raw, value), "applied"
        elif alias.same(value, chosen[2]):
            outcome = "agrees"
        else:
            raise ConfigError(
                alias.name,
                raw,
                f"contradicts {chosen[0].name}={chosen[1]!r} (both are aws-node's names for {var.name}): "
                "unset one of them",
            )
        notes.append(AliasNote(alias.name, raw, var.name, outcome))
    return (True, chosen[2]) if chosen is not None else (False, None)


def _aws_node_only(env: Mapping[str, str], notes: list[AliasNote]) -> None:
    """The aws-node variables with no setting here: a note each, or ConfigError for a refused value."""
    for entry in AWS_NODE_ONLY:
        raw = env.get(entry.name) or ""
        if not raw.strip():
            continue
        try:
            value = entry.canonical(raw)
        except ValueError as exc:
            raise ConfigError(entry.name, raw, f"allowed: {exc}; {entry.why}") from None
        if entry.inert is None or value in entry.inert:
            notes.append(AliasNote(entry.name, raw, None, "inert", entry.why))
        elif entry.ignored is None or value in entry.ignored:
            notes.append(AliasNote(entry.name, raw, None, "ignored", entry.why))
        else:  # both are tuples here: ``inert`` and ``ignored`` None accept every value
            accepted = ", ".join((*entry.inert, *entry.ignored))
            allowed = f"{accepted} or unset" if accepted else "unset"
            raise ConfigError(entry.name, raw, f"not supported by cloud-cni: {entry.why} Allowed: {allowed}")


@dataclass(frozen=True, slots=True)
class Settings:
    cloud_provider: str
    datapath: str = "none"
    ipamd_socket: str = "/var/run/cloud-cni/ipamd.sock"
    ipamd_token_file: str | None = None
    checkpoint_path: str = "/var/run/cloud-cni/ipam.json"
    metrics_bind: str | None = None
    introspection_bind: str | None = None
    warm_eni_target: int = 1
    warm_ip_target: int = 0
    minimum_ip_target: int = 0
    warm_prefix_target: int = 0
    enable_prefix_delegation: bool = False
    max_eni: int | None = None
    ip_cooldown_period: float = 30.0
    ip_batch_size: int = 1
    max_pods: int | None = None
    cluster_name: str = ""
    pool_release_delay: float = 30.0
    pool_min_action_interval: float = 0.0
    pool_mode: str = "static"
    adaptive_window: float = 1800.0
    add_wait_timeout: float = 5.0
    cooldown_override_wait: float = 2.0
    cloud_api_rate: float = 5.0
    cloud_api_burst: int = 10
    cloud_api_budget: dict[str, float] | None = None
    cloud_api_budget_poll_interval: float = 600.0
    cloud_api_budget_busy_poll_interval: float = 30.0
    cloud_api_budget_assumed_nodes: int = 100
    growth_pause: float = 120.0
    reconcile_interval: float = 60.0
    shutdown_timeout: float = 10.0
    log_level: str = "info"
    kubernetes_integration: str = "off"
    node_name: str | None = None
    kubeconfig: str | None = None
    startup_taint: str = ""
    startup_taint_timeout: float = 300.0
    pod_gone_grace: float = 900.0
    custom_network_cfg: bool = False
    enable_network_policy: bool = False
    network_policy_enforcing_mode: str = "standard"
    network_policy_min_interval: float = 0.05
    eni_config_label_def: str = "k8s.amazonaws.com/eniConfig"
    eni_config_annotation_def: str = "k8s.amazonaws.com/eniConfig"
    azure_pod_subnet_id: str | None = None
    azure_pod_subnet_label: str = "cloud-cni.io/pod-subnet"
    aws_region: str | None = None
    aws_endpoint_url: str | None = None
    aws_imds_endpoint: str | None = None
    eni_subnet_id: str | None = None
    eni_security_groups: tuple[str, ...] | None = None
    additional_eni_tags: dict[str, str] | None = None
    eni_attach_timeout: float = 30.0
    leaked_eni_cleanup_interval: float = 3600.0
    pod_mtu: int | None = None
    veth_prefix: str = "ccni"
    cni_network_name: str = "cloud-cni"
    aws_vpc_cni_checkpoint: str | None = None
    aws_vpc_cni_veth_prefix: str = "eni"
    external_snat: bool = False
    node_port_support: bool = True
    exclude_snat_cidrs: tuple[str, ...] = ()
    snat_backend: str = "auto"
    interface_link_timeout: float = 10.0
    hcn_backend: str = "computenetwork"
    hcn_fake_state: str | None = None
    hcn_trace: str | None = None
    hcn_call_timeout: float = 20.0
    cluster_cidrs: tuple[str, ...] = ()
    service_cidrs: tuple[str, ...] = ()
    sim_vpc_cidr: str = "10.0.0.0/16"
    azure_arm_endpoint: str = "https://management.azure.com"
    azure_arm_ca_bundle: str | None = None
    azure_imds_endpoint: str = "http://169.254.169.254"
    azure_client_id: str | None = None
    sim_state_path: str | None = None
    sim_instance_type: str = "m5.large"
    sim_subnet_cidr: str = "10.0.0.0/22"
    sim_api_latency: float = 0.05
    sim_throttle_rate: float | None = None
    sim_seed: int = 0
    # aws-node variables found in the environment (logged by the daemon at start); not a setting, so
    # two Settings with the same values are equal whichever names set them.
    alias_notes: tuple[AliasNote, ...] = field(default=(), compare=False)

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Settings:
        """Parse every variable of ``VARIABLES`` (or aws-node's name for it, ``ALIASES``) and check
        aws-node's variables that have no setting here (``AWS_NODE_ONLY``); the first bad one raises
        ConfigError. Pure: what was found under aws-node's names is returned in ``alias_notes``."""
        values: dict[str, Any] = {}
        notes: list[AliasNote] = []
        azure = (env.get("CLOUD_PROVIDER") or "").strip().lower() == "azure"
        # POOL_MODE=adaptive chooses the warm target itself: the azure warm-IP defaults would be floors.
        mode_set = any((env.get(name) or "").strip() for name in _POOL_MODE_VARS) or (
            (env.get("POOL_MODE") or "").strip().lower() == "adaptive"
        )
        for var in VARIABLES:
            raw = env.get(var.name)
            supplied, value = _aliased(var, env, notes)
            if supplied:
                values[var.field] = value
                continue
            if raw is not None and var.empty_means_off and raw.strip() == "":
                values[var.field] = var.parse("")
                continue
            if raw is None or raw.strip() == "":
                if var.required:
                    raise ConfigError(var.name, raw or "", "required: " + var.doc)
                default = var.default
                if azure and var.azure_default is not None and not (mode_set and var.name in _POOL_MODE_VARS):
                    default = var.azure_default
                values[var.field] = None if default is None else var.parse(default)
                continue
            try:
                values[var.field] = var.parse(raw)
            except ValueError as exc:
                raise ConfigError(var.name, raw, "allowed: " + str(exc)) from None
        if azure and values["enable_prefix_delegation"]:
            raise ConfigError(
                "ENABLE_PREFIX_DELEGATION",
                env.get("ENABLE_PREFIX_DELEGATION", ""),
                "false on azure: Azure NICs hold single secondary ipConfigurations, not /28 prefixes",
            )
        if values["custom_network_cfg"] and values["cloud_provider"] != "aws":
            raise ConfigError(
                "AWS_VPC_K8S_CNI_CUSTOM_NETWORK_CFG",
                env.get("AWS_VPC_K8S_CNI_CUSTOM_NETWORK_CFG", ""),
                "false unless CLOUD_PROVIDER=aws (ENIConfig is AWS custom networking; "
                "on azure: AZURE_POD_SUBNET_ID)",
            )
        if values["enable_network_policy"] and values["datapath"] != "linux":
            raise ConfigError(
                "ENABLE_NETWORK_POLICY",
                env.get("ENABLE_NETWORK_POLICY", ""),
                f"true only with DATAPATH=linux (DATAPATH={values['datapath']}: NetworkPolicy is enforced "
                "in nftables on Linux nodes; Windows nodes do not enforce it yet)",
            )
        if values["enable_network_policy"] and values["kubernetes_integration"] == "off":
            raise ConfigError(
                "ENABLE_NETWORK_POLICY",
                env.get("ENABLE_NETWORK_POLICY", ""),
                "true needs the Kubernetes integration (KUBERNETES_INTEGRATION auto or on): policies, "
                "namespaces and pods are read from the API",
            )
        if values["cloud_api_budget"] is not None:
            _check_api_budget(values, env.get("CLOUD_API_BUDGET", ""))
        _aws_node_only(env, notes)
        return cls(**values, alias_notes=tuple(notes))

    def targets(self) -> WarmPoolTargets:
        """The pool's targets. With custom networking pods never take the primary ENI's addresses
        (aws-vpc-cni's skipPrimary). On azure a pod subnet on another NIC does the same; the provider
        says so (``provider.primary_interface_pods``), and ``PoolManager.set_primary_interface_pods``
        applies it to the targets and the datastore."""
        return WarmPoolTargets(
            warm_eni=self.warm_eni_target,
            warm_ip=self.warm_ip_target,
            minimum_ip=self.minimum_ip_target,
            warm_prefix=self.warm_prefix_target,
            prefix_delegation=self.enable_prefix_delegation,
            max_eni=self.max_eni,
            max_pods=self.max_pods,
            cooldown=self.ip_cooldown_period,
            release_delay=self.pool_release_delay,
            ip_batch=self.ip_batch_size,
            primary_interface_pods=not self.custom_network_cfg,
        )

    @property
    def effective_ipamd_token_file(self) -> str:
        if self.ipamd_token_file:
            return self.ipamd_token_file
        return self.checkpoint_path.rsplit("/", 1)[0] + "/ipamd.token"

    @property
    def effective_hcn_fake_state(self) -> str:
        if self.hcn_fake_state:
            return self.hcn_fake_state
        return self.checkpoint_path.rsplit("/", 1)[0] + "/hcn-fake.json"

    @property
    def effective_sim_state_path(self) -> str:
        if self.sim_state_path:
            return self.sim_state_path
        return self.checkpoint_path.rsplit("/", 1)[0] + "/sim-cloud.json"

    def public(self) -> dict[str, Any]:
        """The effective settings by env var name, for GET /v1/config and the start-up log."""
        by_field = {f.name: getattr(self, f.name) for f in fields(self)}
        return {var.name: by_field[var.field] for var in VARIABLES}


def _check_api_budget(values: Mapping[str, Any], raw: str) -> None:
    """CLOUD_API_BUDGET's classes are the provider's, and the node count comes from the API."""
    from ipamd.cloud.budget import check_budget

    try:
        check_budget(values["cloud_api_budget"], values["cloud_provider"])
    except ValueError as exc:
        raise ConfigError("CLOUD_API_BUDGET", raw, "allowed: " + str(exc)) from None
    if values["kubernetes_integration"] == "off":
        raise ConfigError(
            "CLOUD_API_BUDGET",
            raw,
            "set only with the Kubernetes integration (KUBERNETES_INTEGRATION auto or on): each node's "
            "share is the budget divided by the node count the API reports",
        )


def check_datapath(settings: Settings, platform: str = sys.platform) -> None:
    """Whether this build can run DATAPATH on this platform; the daemon and ``config check`` ask."""
    if settings.datapath == "none":
        return
    if settings.datapath == "linux":
        if not platform.startswith("linux"):
            raise ConfigError("DATAPATH", settings.datapath, "linux only on Linux nodes")
        return
    if settings.hcn_backend == "computenetwork" and platform != "win32":
        raise ConfigError(
            "HCN_BACKEND",
            settings.hcn_backend,
            "computenetwork only on Windows nodes; fake runs DATAPATH=windows anywhere (tests, demo)",
        )


def markdown_table() -> str:
    """The env var table of docs/configuration.md (a test keeps the doc equal to this)."""
    lines = ["| variable | default | meaning |", "|---|---|---|"]
    for var in VARIABLES:
        if var.required:
            default = "required"
        elif var.name == "DATAPATH":
            default = "`linux` on Linux"
        elif var.default is None:
            default = "unset"
        else:
            default = f"`{var.default}`" if var.default else "empty"
        if var.azure_default is not None:
            default += f" (`{var.azure_default}` on azure)"
        names = [f"`{a.name}`" for a in ALIASES if a.variable == var.name]
        also = (
            f" Also set by aws-node's {', '.join(names)} ([migrating](migrate-from-aws-vpc-cni.md))."
            if names
            else ""
        )
        lines.append(f"| `{var.name}` | {default} | {var.doc}{also} |")
    return "\n".join(lines) + "\n"


def alias_markdown_table() -> str:
    """The aws-node name table of docs/migrate-from-aws-vpc-cni.md (a test keeps the doc equal to this)."""
    lines = ["| aws-node variable | cloud-cni variable | how the value carries over |", "|---|---|---|"]
    for alias in ALIASES:
        lines.append(f"| `{alias.name}` | `{alias.variable}` | {alias.values} |")
    for name, differs in AWS_NODE_SAME_NAMES:
        lines.append(f"| `{name}` | `{name}` | same name{'; ' + differs if differs else ''}. |")
    return "\n".join(lines) + "\n"


def _values(values: tuple[str, ...] | None, every: str) -> str:
    if values is None:
        return every
    return ", ".join(f"`{v}`" for v in values) or "none"


def aws_node_only_markdown_table() -> str:
    """The table of aws-node variables with no setting here (docs/migrate-from-aws-vpc-cni.md)."""
    lines = [
        "| aws-node variable | accepted, nothing lost (info) | ignored (warning) | refused | why |",
        "|---|---|---|---|---|",
    ]
    for entry in AWS_NODE_ONLY:
        if entry.inert is None or entry.ignored is None:
            refused = "none"
        elif entry.domain is None:
            refused = "any other value"
        else:
            refused = _values(tuple(v for v in entry.domain if v not in (*entry.inert, *entry.ignored)), "")
        inert = _values(entry.inert, "any value")
        ignored = (
            "none"
            if entry.inert is None
            else _values(entry.ignored, "any value" if not entry.inert else "any other value")
        )
        lines.append(f"| `{entry.name}` | {inert} | {ignored} | {refused} | {entry.why} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(markdown_table(), end="")
