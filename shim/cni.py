"""The CNI contract (reference/cni-spec.md), pure: env + stdin in, an ``Invocation`` or a ``CniError`` out.

Validation applies the daemon's own rules (ipamd/rpc/validate.py) before anything is sent, so a bad
call fails here with the CNI code that names what to fix, without a round trip:

====  ==========================================================================================
code  when
====  ==========================================================================================
1     cniVersion not supported; CHECK below 0.4.0; GC and STATUS below 1.1.0
2     CNI_ARGS carries a key this plugin does not know and no IgnoreUnknown=1/true
4     a required env var missing (all named), or CNI_COMMAND, CNI_CONTAINERID, CNI_IFNAME,
      CNI_NETNS, CNI_ARGS (pair syntax, IgnoreUnknown value, K8S_POD_* values) invalid
6     stdin is not JSON (bad syntax, not UTF-8, too deeply nested) or not a JSON object
7     a field of the network configuration missing or invalid (named): cniVersion, name, type,
      ipamdSocket, ipamdTokenFile, logFile, prevResult, cni.dev/valid-attachments,
      runtimeConfig.dns (ADD only); on Windows an ipamdSocket that is not tcp:// (CPython has no
      AF_UNIX there)
====  ==========================================================================================

Which env vars a verb needs (SPEC.md "Parameters"): ADD and CHECK need CNI_CONTAINERID, CNI_NETNS
and CNI_IFNAME; DEL the same but CNI_NETNS may be empty; GC needs CNI_PATH; STATUS and VERSION
nothing but CNI_COMMAND. An empty variable counts as missing, as libcni's skel counts it. Variables a
verb does not need are ignored, never validated.

prevResult: cloud-cni creates the pod's interface and address, so it is the first plugin of a
chain. On ADD a prevResult can only come from a misordered conflist and describes nothing this
plugin created: it is ignored (``prev_result`` is None), as the reference "main" plugins do. On DEL
and CHECK it is this plugin's own ADD result, possibly amended by later plugins: it is passed through
unchanged to the daemon as JSON text, which tears down and checks from its own allocation record.

runtimeConfig.dns: the pod's DNS ({"servers", "searches", "options"}), sent by runtimes to plugins
whose conflist entry declares ``"capabilities": {"dns": true}`` (the Windows conflist does: the
Windows datapath puts it on the pod's HCN endpoint). Read on ADD only and forwarded to the daemon;
absent or null: nothing is sent. The CNI result's "dns" stays empty.

Paths (``logFile``, ``ipamdTokenFile``, the DEL spool beside them) follow the platform's syntax:
``PLATFORM`` (``sys.platform``, read at every call: tests set it to "win32" on Linux) decides
what is absolute and where a path's parent is (``is_absolute_path``, ``parent_path``, ``join_path``).
"""

from __future__ import annotations

import sys

from shim import jsonlite

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (~10 ms); mypy knows the name

if TYPE_CHECKING:
    from collections.abc import Mapping

    from shim.pb import AddReply

SUPPORTED_VERSIONS = ("0.4.0", "1.0.0", "1.1.0")
LATEST_VERSION = SUPPORTED_VERSIONS[-1]
DEFAULT_IPAMD_SOCKET = "/var/run/cloud-cni/ipamd.sock"
DEFAULT_LOG_FILE = "/var/log/cloud-cni/shim.log"
COMMANDS = ("ADD", "DEL", "CHECK", "GC", "STATUS", "VERSION")

# CNI error codes (SPEC.md "Error codes"; 0, 8 and 999 are libcni's).
UNKNOWN = 0
INCOMPATIBLE_VERSION = 1
UNSUPPORTED_FIELD = 2
UNKNOWN_CONTAINER = 3
INVALID_ENV = 4
IO_FAILURE = 5
DECODE_FAILED = 6
INVALID_CONFIG = 7
INVALID_NETNS = 8
TRY_AGAIN_LATER = 11
NOT_AVAILABLE = 50
LIMITED_CONNECTIVITY = 51
INTERNAL = 999

_REQUIRED_ENV = {
    "ADD": ("CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME"),
    "CHECK": ("CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME"),
    "DEL": ("CNI_CONTAINERID", "CNI_IFNAME"),
    "GC": ("CNI_PATH",),
    "STATUS": (),
}
_VERSIONS_FOR = {
    "ADD": SUPPORTED_VERSIONS,
    "DEL": SUPPORTED_VERSIONS,
    "CHECK": ("0.4.0", "1.0.0", "1.1.0"),  # CHECK came with 0.4.0
    "GC": ("1.1.0",),  # GC and STATUS came with 1.1.0
    "STATUS": ("1.1.0",),
}
_ATTACHMENT_VERBS = ("ADD", "DEL", "CHECK")
_POD_ARGS = (
    ("K8S_POD_NAMESPACE", 253),
    ("K8S_POD_NAME", 253),
    ("K8S_POD_UID", 253),
    ("K8S_POD_INFRA_CONTAINER_ID", 1024),
)
_KNOWN_ARGS = ("IgnoreUnknown", *(key for key, _ in _POD_ARGS))
_GC_KEYS = ("cni.dev/valid-attachments", "cni.dev/attachments")  # the second: libcni's legacy name

# The daemon's limits (ipamd/rpc/validate.py).
_MAX_ID = 1024
_MAX_IFNAME_BYTES = 15  # IFNAMSIZ - 1; counted in bytes, as the kernel and libcni count
_MAX_PATH = 4096  # PATH_MAX: CNI_NETNS (the daemon's limit) and logFile
_MAX_PREV_RESULT = 1 << 20
_MAX_UNIX_PATH = 107  # sun_path is 108 bytes with its NUL
_MAX_DNS_ENTRIES = 32  # per runtimeConfig.dns list
_MAX_DNS_NAME = 253
_MAX_DNS_OPTION = 255

_ALNUM = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789")
_ID_CHARS = _ALNUM | frozenset("_.-")
_ID_RULE = "must match ^[a-zA-Z0-9][a-zA-Z0-9_.-]*$"

PLATFORM = sys.platform
_DRIVE_LETTERS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")


class CniError(Exception):
    """A CNI error result: ``code`` (the constants above), ``msg`` (names the field), ``details``.

    ``cni_version`` is the cniVersion of the request when ``parse`` could read one, so that the
    error is printed in the version the runtime asked for; None otherwise.
    """

    def __init__(self, code: int, msg: str, details: str = "", *, cni_version: str | None = None) -> None:
        super().__init__(code, msg, details)
        self.code = code
        self.msg = msg
        self.details = details
        self.cni_version = cni_version

    def __str__(self) -> str:
        return f"CNI error {self.code}: {self.msg}" + (f" ({self.details})" if self.details else "")


class Invocation:
    """One validated CNI call. Fields a verb does not carry keep their defaults ("" / None)."""

    __slots__ = (
        "args",
        "cni_version",
        "command",
        "config",
        "container_id",
        "dns",
        "ifname",
        "ipamd_socket",
        "ipamd_tcp",
        "ipamd_token_file",
        "log_file",
        "netns",
        "network_name",
        "path",
        "pod_infra_container_id",
        "pod_name",
        "pod_namespace",
        "pod_uid",
        "prev_result",
        "prev_result_json",
        "valid_attachments",
    )

    def __init__(
        self,
        command: str,
        *,
        container_id: str = "",
        netns: str = "",
        ifname: str = "",
        path: str = "",
        args: dict[str, str] | None = None,
        pod_namespace: str = "",
        pod_name: str = "",
        pod_uid: str = "",
        pod_infra_container_id: str = "",
        config: dict[str, object] | None = None,
        cni_version: str = LATEST_VERSION,
        network_name: str = "",
        ipamd_socket: str = DEFAULT_IPAMD_SOCKET,
        ipamd_tcp: tuple[str, int] | None = None,
        ipamd_token_file: str = "",
        log_file: str = DEFAULT_LOG_FILE,
        prev_result: dict[str, object] | None = None,
        prev_result_json: str = "",
        valid_attachments: list[tuple[str, str]] | None = None,
        dns: dict[str, list[str]] | None = None,
    ) -> None:
        self.command = command
        self.container_id = container_id  # CNI_CONTAINERID
        self.netns = netns  # CNI_NETNS; "" on a DEL without one
        self.ifname = ifname  # CNI_IFNAME
        self.path = path  # CNI_PATH (unused: the shim delegates to no other plugin)
        self.args = {} if args is None else args  # CNI_ARGS, every pair
        self.pod_namespace = pod_namespace  # CNI_ARGS K8S_POD_*: "" when the runtime sends none
        self.pod_name = pod_name
        self.pod_uid = pod_uid
        self.pod_infra_container_id = pod_infra_container_id
        self.config = {} if config is None else config  # the network configuration from stdin
        self.cni_version = cni_version
        self.network_name = network_name  # the configuration's "name"
        self.ipamd_socket = ipamd_socket  # as configured: a Unix socket path or tcp://127.0.0.1:PORT
        self.ipamd_tcp = ipamd_tcp  # (host, port) when ipamdSocket is tcp://; None for a Unix socket
        self.ipamd_token_file = ipamd_token_file  # ipamdTokenFile: the daemon's token (TCP only)
        self.log_file = log_file
        self.prev_result = prev_result  # DEL (optional) and CHECK (required) only
        self.prev_result_json = prev_result_json  # prev_result as the JSON text the daemon reads; ""
        self.valid_attachments = valid_attachments  # GC: [(container_id, ifname)]; None: do nothing
        self.dns = dns  # ADD: runtimeConfig.dns as {"servers", "searches", "options"}; None: not sent

    def __repr__(self) -> str:
        fields = ", ".join(f"{name}={getattr(self, name)!r}" for name in self.__slots__ if name != "config")
        return f"Invocation({fields})"


# ---- output ----------------------------------------------------------------------------------


def error_json(err: CniError, cni_version: str | None = None) -> str:
    """The error result: {"cniVersion", "code", "msg", "details"}."""
    version = cni_version or err.cni_version or LATEST_VERSION
    return jsonlite.dumps({"cniVersion": version, "code": err.code, "msg": err.msg, "details": err.details})


def version_json(cni_version: str) -> str:
    """The VERSION result: {"cniVersion", "supportedVersions"}."""
    return jsonlite.dumps({"cniVersion": cni_version, "supportedVersions": list(SUPPORTED_VERSIONS)})


def add_result(inv: Invocation, reply: AddReply) -> str:
    """The ADD result in ``inv.cni_version`` from the daemon's AddReply.

    interfaces: the host side of the veth when the daemon made one (``host_ifname``), then the
    container side (name CNI_IFNAME, sandbox CNI_NETNS) when the daemon wired anything. With
    DATAPATH none the daemon wires nothing: no interfaces, and the address carries no "interface"
    index (optional in every version). 1.1.0 adds "mtu" to interfaces; 0.4.0 adds "version" to ips.
    Keys come in the order libcni's Go types print them.
    """
    version = inv.cni_version
    ip = reply["ip"]
    if not ip:
        raise CniError(INTERNAL, "the daemon answered ADD without an address", "AddReply.ip is empty")
    v6 = ":" in ip
    full = 128 if v6 else 32
    prefix = reply["prefix_length"] or full  # proto3 cannot tell 0 from unset; a pod address is a host route
    if not 0 < prefix <= full:
        raise CniError(INTERNAL, f"the daemon answered ADD with prefix length {prefix} for {ip}", "")
    with_mtu = version not in ("0.4.0", "1.0.0") and reply["mtu"] > 0

    interfaces: list[dict[str, object]] = []
    if reply["host_ifname"]:
        host: dict[str, object] = {"name": reply["host_ifname"]}
        if reply["host_mac"]:
            host["mac"] = reply["host_mac"]
        if with_mtu:
            host["mtu"] = reply["mtu"]
        interfaces.append(host)
    container_index = None
    if reply["host_ifname"] or reply["sandbox_mac"]:
        container: dict[str, object] = {"name": inv.ifname}
        if reply["sandbox_mac"]:
            container["mac"] = reply["sandbox_mac"]
        if with_mtu:
            container["mtu"] = reply["mtu"]
        container["sandbox"] = inv.netns
        container_index = len(interfaces)
        interfaces.append(container)

    address: dict[str, object] = {}
    if version == "0.4.0":
        address["version"] = "6" if v6 else "4"
    if container_index is not None:
        address["interface"] = container_index
    address["address"] = f"{ip}/{prefix}"
    if reply["gateway"]:
        address["gateway"] = reply["gateway"]

    routes: list[dict[str, object]] = []
    for route in reply["routes"]:
        entry: dict[str, object] = {"dst": route["dst"]}
        if route["gw"]:
            entry["gw"] = route["gw"]
        routes.append(entry)

    result = {"cniVersion": version, "interfaces": interfaces, "ips": [address], "routes": routes, "dns": {}}
    return jsonlite.dumps(result)


# ---- input -----------------------------------------------------------------------------------


def parse(command_env: Mapping[str, str], stdin: bytes) -> Invocation:
    """Validate one CNI call: env vars first (code 4), then the network configuration on stdin.

    Raises only ``CniError``; its ``cni_version`` is the request's cniVersion when one was readable.
    """
    config: object = None
    decode_error = ""
    try:
        config = jsonlite.loads(stdin)
    except ValueError as exc:
        decode_error = str(exc)
    hint = _version_hint(config)
    try:
        return _parse(command_env, config, decode_error, hint)
    except CniError as err:
        if err.cni_version is None:
            err.cni_version = hint
        raise


def _parse(env: Mapping[str, str], config: object, decode_error: str, hint: str | None) -> Invocation:
    command = env.get("CNI_COMMAND", "")
    if command not in COMMANDS:
        what = "missing required environment variable CNI_COMMAND"
        if command:
            what = f"CNI_COMMAND={_show(command)} is not a CNI verb"
        raise CniError(INVALID_ENV, what, "CNI_COMMAND is one of " + ", ".join(COMMANDS))
    if command == "VERSION":
        return _version_call(config, hint)

    missing = [name for name in _REQUIRED_ENV[command] if not env.get(name)]
    if missing:
        plural = "s" if len(missing) > 1 else ""
        raise CniError(
            INVALID_ENV,
            f"missing required environment variable{plural} {', '.join(missing)}",
            f"{command} needs CNI_COMMAND, {', '.join(_REQUIRED_ENV[command])}",
        )
    inv = Invocation(command, path=env.get("CNI_PATH", ""))
    if command in _ATTACHMENT_VERBS:
        inv.container_id = _container_id(env["CNI_CONTAINERID"])
        inv.ifname = _env_ifname(env["CNI_IFNAME"])
        inv.netns = _netns(env.get("CNI_NETNS", ""))

    if decode_error:
        raise CniError(DECODE_FAILED, f"failed to decode the network configuration: {decode_error}", "")
    if not isinstance(config, dict):
        raise CniError(
            DECODE_FAILED,
            f"the network configuration must be a JSON object, not {_json_type(config)}",
            "stdin carries one plugin's network configuration",
        )
    inv.config = config
    inv.cni_version = _cni_version(config, command)
    inv.network_name = _network_name(config)
    _plugin_type(config)
    inv.ipamd_socket, inv.ipamd_tcp = _ipamd_socket(config)
    inv.ipamd_token_file = _path_field(config, "ipamdTokenFile", "", _MAX_PATH)
    if inv.ipamd_tcp is not None and not inv.ipamd_token_file:
        raise CniError(
            INVALID_CONFIG,
            f"ipamdTokenFile: required with ipamdSocket {_show(inv.ipamd_socket)}",
            "the file the daemon writes its token to (its IPAMD_TOKEN_FILE)",
        )
    inv.log_file = _path_field(config, "logFile", DEFAULT_LOG_FILE, _MAX_PATH)

    if command in _ATTACHMENT_VERBS:
        inv.args = _cni_args(env.get("CNI_ARGS", ""))
        inv.pod_namespace = inv.args.get("K8S_POD_NAMESPACE", "")
        inv.pod_name = inv.args.get("K8S_POD_NAME", "")
        inv.pod_uid = inv.args.get("K8S_POD_UID", "")
        inv.pod_infra_container_id = inv.args.get("K8S_POD_INFRA_CONTAINER_ID", "")
    if command in ("DEL", "CHECK"):
        inv.prev_result, inv.prev_result_json = _prev_result(config, required=command == "CHECK")
    if command == "GC":
        inv.valid_attachments = _valid_attachments(config)
    if command == "ADD":
        inv.dns = _runtime_dns(config)
    return inv


def _version_call(config: object, hint: str | None) -> Invocation:
    """VERSION is the negotiation itself: it never fails on its input. It answers in the request's
    cniVersion when that is supported, else (no stdin, not JSON, another version) in the latest."""
    inv = Invocation("VERSION", cni_version=hint if hint in SUPPORTED_VERSIONS else LATEST_VERSION)
    if isinstance(config, dict):
        inv.config = config
        try:
            inv.ipamd_socket, inv.ipamd_tcp = _ipamd_socket(config)
        except CniError:
            inv.ipamd_socket = DEFAULT_IPAMD_SOCKET
        try:
            inv.log_file = _path_field(config, "logFile", DEFAULT_LOG_FILE, _MAX_PATH)
        except CniError:
            inv.log_file = DEFAULT_LOG_FILE
    return inv


def _version_hint(config: object) -> str | None:
    """The request's cniVersion when it looks like a version (echoed in error results)."""
    if not isinstance(config, dict):
        return None
    value = config.get("cniVersion")
    if not isinstance(value, str) or not 0 < len(value) <= 32:
        return None
    parts = value.split(".")
    return value if all(p and p.isascii() and p.isdigit() for p in parts) else None


def _cni_version(config: dict[str, object], command: str) -> str:
    value = config.get("cniVersion")
    if value is None:
        raise CniError(INVALID_CONFIG, "cniVersion: required in the network configuration", "")
    if not isinstance(value, str):
        raise CniError(INVALID_CONFIG, f"cniVersion: must be a string, not {_json_type(value)}", "")
    allowed = _VERSIONS_FOR[command]
    if value in allowed:
        return value
    if value in SUPPORTED_VERSIONS:
        msg = f"{command} needs cniVersion {allowed[0]} or later, the configuration has {_show(value)}"
    else:
        msg = f"incompatible CNI version: the configuration has cniVersion {_show(value)}"
    raise CniError(INCOMPATIBLE_VERSION, msg, f"{command} supports {', '.join(allowed)}")


def _network_name(config: dict[str, object]) -> str:
    value = config.get("name")
    if value is None or value == "":
        raise CniError(INVALID_CONFIG, "name: the network name is required", "")
    if not isinstance(value, str):
        raise CniError(INVALID_CONFIG, f"name: must be a string, not {_json_type(value)}", "")
    problem = _id_problem(value)
    if problem:
        raise CniError(INVALID_CONFIG, f"name: network name {_show(value)} {problem}", "")
    return value


def _plugin_type(config: dict[str, object]) -> str:
    value = config.get("type")
    if value is None or value == "":
        raise CniError(INVALID_CONFIG, "type: the plugin type is required", "")
    if not isinstance(value, str):
        raise CniError(INVALID_CONFIG, f"type: must be a string, not {_json_type(value)}", "")
    return value


def _path_field(config: dict[str, object], key: str, default: str, limit: int) -> str:
    """An optional absolute path setting (null or absent: the default)."""
    value = config.get(key)
    if value is None:
        return default
    if not isinstance(value, str):
        raise CniError(INVALID_CONFIG, f"{key}: must be a string, not {_json_type(value)}", "")
    if not is_absolute_path(value) or "\0" in value:
        hint = _WINDOWS_ABSOLUTE if PLATFORM == "win32" else ""
        raise CniError(INVALID_CONFIG, f"{key}: {_show(value)} must be an absolute path", hint)
    size = _utf8_len(value)
    if size is None or size > limit:
        raise CniError(
            INVALID_CONFIG, f"{key}: {_show(value)} must be valid UTF-8 of at most {limit} bytes", ""
        )
    return value


_WINDOWS_ABSOLUTE = r"on Windows: C:\... or C:/..., or rooted on the current drive, \... or /..."


def is_absolute_path(path: str) -> bool:
    r"""Linux: starts with "/". Windows: a drive path (``C:\...``, ``C:/...``) or one rooted on the
    current drive (``\k\...``, ``/k/...``), as containerd's own settings are written; not UNC or
    device paths (``\\server\share``, ``\\?\...``, ``\\.\pipe\...``): the daemon writes its token
    and reads the DEL spool on a local disk."""
    if PLATFORM != "win32":
        return path.startswith("/")
    if path[:1] in _DRIVE_LETTERS and path[1:2] == ":" and path[2:3] in ("\\", "/"):
        return True
    return path[:1] in ("\\", "/") and path[1:2] not in ("\\", "/")


def _separators() -> str:
    return "\\/" if PLATFORM == "win32" else "/"


def parent_path(path: str) -> str:
    r"""The directory that holds ``path``, as pathlib's ``parent`` names it, so that the shim and
    the daemon agree on the DEL spool's place: "/run/x.sock" -> "/run", "/x" -> "/"; on Windows
    either separator, and "C:\x" -> "C:\"."""
    cut = max(path.rfind(sep) for sep in _separators())
    if cut < 0:
        return "."
    head = path[:cut]
    if not head or (PLATFORM == "win32" and len(head) == 2 and head[1] == ":"):
        return path[: cut + 1]  # a root: "/", "\", "C:\", "C:/"
    return head


def join_path(directory: str, name: str) -> str:
    """``name`` in ``directory``, with the separator ``directory`` already uses (Windows takes both)."""
    if directory.endswith(tuple(_separators())):
        return directory + name
    sep = "\\" if PLATFORM == "win32" and "\\" in directory else "/"
    return f"{directory}{sep}{name}"


_TCP = "tcp://127.0.0.1:PORT or tcp://[::1]:PORT (loopback only)"
_WINDOWS_TCP = (
    f"on Windows the plugin reaches the daemon on {_TCP}, the daemon's IPAMD_SOCKET, with "
    "ipamdTokenFile: CPython has no Unix sockets there"
)


def _ipamd_socket(config: dict[str, object]) -> tuple[str, tuple[str, int] | None]:
    """ipamdSocket: a Unix socket path, or the daemon's loopback TCP port (as its IPAMD_SOCKET); on
    Windows only the TCP port.

    Loopback only, as the daemon: the token travels in clear text, so it must never leave the node.
    """
    value = config.get("ipamdSocket")
    if not isinstance(value, str) or not value.startswith("tcp://"):
        if PLATFORM == "win32" and (value is None or isinstance(value, str)):
            what = "required" if value is None else f"{_show(value)} is a Unix socket path"
            raise CniError(INVALID_CONFIG, f"ipamdSocket: {what}: {_WINDOWS_TCP}", "")
        return _path_field(config, "ipamdSocket", DEFAULT_IPAMD_SOCKET, _MAX_UNIX_PATH), None
    host, sep, port = value[6:].rpartition(":")
    bare = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if (
        not sep
        or not (port.isascii() and port.isdigit() and len(port) <= 5 and 0 < int(port) < 65536)
        or bare not in ("127.0.0.1", "::1")
        or (":" in bare) != (bare != host)  # an IPv6 address only in brackets
    ):
        allowed = _TCP if PLATFORM == "win32" else f"a Unix socket path, or {_TCP}"
        raise CniError(INVALID_CONFIG, f"ipamdSocket: {_show(value)} is not {allowed}", "")
    return value, (bare, int(port))


def _prev_result(config: dict[str, object], *, required: bool) -> tuple[dict[str, object] | None, str]:
    value = config.get("prevResult")
    if value is None:
        if required:
            raise CniError(
                INVALID_CONFIG, "prevResult: required for CHECK", "the result of the ADD being checked"
            )
        return None, ""
    if not isinstance(value, dict):
        raise CniError(INVALID_CONFIG, f"prevResult: must be a JSON object, not {_json_type(value)}", "")
    try:
        text = jsonlite.dumps(value)
    except RecursionError:
        raise CniError(INVALID_CONFIG, "prevResult: nested too deeply", "") from None
    if len(text) > _MAX_PREV_RESULT:
        raise CniError(INVALID_CONFIG, "prevResult: larger than 1 MiB", "")
    return value, text


def _valid_attachments(config: dict[str, object]) -> list[tuple[str, str]] | None:
    """GC's valid attachments; None when neither key is there (null counts as absent)."""
    for key in _GC_KEYS:
        value = config.get(key)
        if value is not None:
            break
    else:
        return None
    if not isinstance(value, list):
        raise CniError(
            INVALID_CONFIG, f"{key}: must be a list of {{containerID, ifname}}, not {_json_type(value)}", ""
        )
    found: list[tuple[str, str]] = []
    for i, entry in enumerate(value):
        where = f"{key}[{i}]"
        if not isinstance(entry, dict):
            raise CniError(INVALID_CONFIG, f"{where}: must be an object, not {_json_type(entry)}", "")
        container_id, ifname = entry.get("containerID"), entry.get("ifname")
        if not isinstance(container_id, str):
            raise CniError(INVALID_CONFIG, f"{where}.containerID: must be a string", "")
        if not isinstance(ifname, str):
            raise CniError(INVALID_CONFIG, f"{where}.ifname: must be a string", "")
        problem = _id_problem(container_id)
        if problem:
            raise CniError(INVALID_CONFIG, f"{where}.containerID: {_show(container_id)} {problem}", "")
        problem = _ifname_problem(ifname)
        if problem:
            raise CniError(INVALID_CONFIG, f"{where}.ifname: {_show(ifname)} {problem}", "")
        found.append((container_id, ifname))
    return found


def _runtime_dns(config: dict[str, object]) -> dict[str, list[str]] | None:
    """runtimeConfig.dns (the "dns" capability); None when absent or null. Each list is optional."""
    runtime = config.get("runtimeConfig")
    if runtime is None:
        return None
    if not isinstance(runtime, dict):
        raise CniError(INVALID_CONFIG, f"runtimeConfig: must be an object, not {_json_type(runtime)}", "")
    value = runtime.get("dns")
    if value is None:
        return None
    if not isinstance(value, dict):
        raise CniError(INVALID_CONFIG, f"runtimeConfig.dns: must be an object, not {_json_type(value)}", "")
    dns: dict[str, list[str]] = {}
    for key, check, rule in (
        ("servers", _is_ip_address, "an IPv4 or IPv6 address"),
        ("searches", _is_domain, f"a DNS domain name of at most {_MAX_DNS_NAME} characters"),
        ("options", _is_resolver_option, f"1-{_MAX_DNS_OPTION} characters without spaces"),
    ):
        field = f"runtimeConfig.dns.{key}"
        entries = value.get(key)
        if entries is None:
            entries = []
        if not isinstance(entries, list):
            raise CniError(
                INVALID_CONFIG, f"{field}: must be a list of strings, not {_json_type(entries)}", ""
            )
        if len(entries) > _MAX_DNS_ENTRIES:
            raise CniError(INVALID_CONFIG, f"{field}: more than {_MAX_DNS_ENTRIES} entries", "")
        for i, entry in enumerate(entries):
            if not isinstance(entry, str):
                raise CniError(INVALID_CONFIG, f"{field}[{i}]: must be a string, not {_json_type(entry)}", "")
            if not check(entry):
                raise CniError(INVALID_CONFIG, f"{field}[{i}]: {_show(entry)} is not {rule}", "")
        dns[key] = entries
    return dns


_DIGITS = frozenset("0123456789")
_LABEL_CHARS = _ALNUM | frozenset("_-")


def _is_ipv4(text: str) -> bool:
    """Dotted quad, no leading zeros: what Python's ipaddress (the daemon's check) accepts."""
    parts = text.split(".")
    return len(parts) == 4 and all(
        0 < len(p) <= 3 and _DIGITS.issuperset(p) and (p == "0" or p[0] != "0") and int(p) <= 255
        for p in parts
    )


def _is_ip_address(text: str) -> bool:
    """An IPv4 or IPv6 address as ipaddress.ip_address reads it, without a scope ("%eth0"); the shim
    does not import ipaddress (~5 ms), tests/unit/test_shim_cni.py holds the two equal."""
    if ":" not in text:
        return _is_ipv4(text)
    if "." in text:  # an IPv4 tail stands for the last two groups
        cut = text.rfind(":")
        if not _is_ipv4(text[cut + 1 :]):
            return False
        text = text[: cut + 1] + "0:0"
    head, sep, tail = text.partition("::")
    if "::" in tail:
        return False
    groups = (head.split(":") if head else []) + (tail.split(":") if tail else [])
    if not all(0 < len(g) <= 4 and _HEX.issuperset(g) for g in groups):
        return False
    return len(groups) < 8 if sep else len(groups) == 8


def _is_domain(text: str) -> bool:
    """Dot-separated labels of 1-63 letters, digits, "_" or "-" (not first or last), an optional
    trailing dot, at most 253 characters: the daemon's rule (ipamd/rpc/validate.py)."""
    if len(text) > _MAX_DNS_NAME:
        return False
    labels = (text[:-1] if text.endswith(".") else text).split(".")
    return all(
        0 < len(label) <= 63 and _LABEL_CHARS.issuperset(label) and label[0] != "-" and label[-1] != "-"
        for label in labels
    )


def _is_resolver_option(text: str) -> bool:
    return 0 < len(text) <= _MAX_DNS_OPTION and text.isprintable() and " " not in text


def _cni_args(text: str) -> dict[str, str]:
    """CNI_ARGS "K=V;K=V" as libcni's LoadArgs reads it: every pair needs exactly one "="; unknown
    keys are an error (code 2) unless IgnoreUnknown is 1 or true; the last value of a key wins."""
    args: dict[str, str] = {}
    if not text:
        return args
    unknown: list[str] = []
    for pair in text.split(";"):
        key, sep, value = pair.partition("=")
        if not sep or "=" in value:
            raise CniError(
                INVALID_ENV, f"CNI_ARGS: {_show(pair)} is not a KEY=VALUE pair", "pairs are separated by ';'"
            )
        args[key] = value
        if key not in _KNOWN_ARGS:
            unknown.append(pair)
    ignore = args.get("IgnoreUnknown", "false").lower()
    if ignore not in ("1", "true", "0", "false"):
        raise CniError(
            INVALID_ENV,
            f"CNI_ARGS: IgnoreUnknown={_show(args['IgnoreUnknown'])} is not 1, true, 0 or false",
            "",
        )
    if unknown and ignore not in ("1", "true"):
        plural = "s" if len(unknown) > 1 else ""
        raise CniError(
            UNSUPPORTED_FIELD,
            f"CNI_ARGS: unsupported field{plural} {', '.join(_show(p) for p in unknown)}",
            f"known keys: {', '.join(_KNOWN_ARGS)}; add IgnoreUnknown=1 to ignore the others",
        )
    for key, limit in _POD_ARGS:
        value = args.get(key, "")
        size = _utf8_len(value)
        if size is None or len(value) > limit or any(c.isspace() for c in value):
            raise CniError(
                INVALID_ENV,
                f"CNI_ARGS {key}={_show(value)} is not valid",
                f"at most {limit} characters of UTF-8, no whitespace",
            )
    return args


def _container_id(value: str) -> str:
    problem = _id_problem(value)
    if problem:
        raise CniError(INVALID_ENV, f"CNI_CONTAINERID={_show(value)} {problem}", "")
    return value


def _env_ifname(value: str) -> str:
    problem = _ifname_problem(value)
    if problem:
        raise CniError(INVALID_ENV, f"CNI_IFNAME={_show(value)} {problem}", "")
    return value


def _netns(value: str) -> str:
    if not value:
        return ""  # only DEL gets here without one: ADD and CHECK require it
    if _is_guid(value):  # an HCN namespace: containerd on Windows passes its GUID
        return value
    size = _utf8_len(value)
    if not value.startswith("/") or "\0" in value or size is None or size > _MAX_PATH:
        raise CniError(
            INVALID_ENV, f"CNI_NETNS={_show(value)} must be an absolute path or an HCN namespace GUID", ""
        )
    return value


_HEX = frozenset("0123456789abcdefABCDEF")


def _is_guid(value: str) -> bool:
    """8-4-4-4-12 hex digits (no re: the shim does not import it)."""
    parts = value.split("-")
    return [len(p) for p in parts] == [8, 4, 4, 4, 12] and all(_HEX.issuperset(p) for p in parts)


def _id_problem(value: str) -> str | None:
    """Container IDs and network names: ^[a-zA-Z0-9][a-zA-Z0-9_.-]*$, at most 1024 characters."""
    if not value:
        return "must not be empty"
    if len(value) > _MAX_ID:
        return f"is longer than {_MAX_ID} characters"
    if value[0] not in _ALNUM or not _ID_CHARS.issuperset(value):
        return _ID_RULE
    return None


def _ifname_problem(value: str) -> str | None:
    """Interface names: 1-15 bytes, not "." or "..", no "/", ":", whitespace or NUL."""
    if not value:
        return "must not be empty"
    size = _utf8_len(value)
    if size is None:
        return "is not valid UTF-8"
    if size > _MAX_IFNAME_BYTES:
        return f"is longer than {_MAX_IFNAME_BYTES} bytes"
    if value in (".", ".."):
        return "is not a valid interface name"
    if "/" in value or ":" in value or "\0" in value or any(c.isspace() for c in value):
        return "must not contain '/', ':' or whitespace"
    return None


def _utf8_len(value: str) -> int | None:
    """The UTF-8 length; None for strings that cannot be UTF-8 (lone surrogates from undecodable env)."""
    if value.isascii():
        return len(value)
    try:
        return len(value.encode("utf-8"))
    except UnicodeEncodeError:
        return None


def _show(value: str) -> str:
    """A value quoted for an error message, cut to 80 characters."""
    return repr(value[:80]) + ("..." if len(value) > 80 else "")


def _json_type(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"
