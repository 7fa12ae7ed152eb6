"""The cloud-cni CNI plugin: a dispatch table, each verb parse -> one daemon call -> print.

Exec'd by the container runtime once per CNI call, so it imports only the C modules it needs
(no grpc, no protobuf, no json, no socket, no re: see docs/shim.md for the measured reasons).
stdout carries only the CNI result or the CNI error JSON; logs go to the conflist ``logFile``.
"""

from __future__ import annotations

import sys
import time

from shim import _fs, cni, h2grpc, jsonlite, pb, spool

SERVICE = "/cloudcni.v1.IpamBackend/"
_TIMEOUT = {"ADD": 60.0, "DEL": 30.0, "CHECK": 30.0, "GC": 60.0, "STATUS": 10.0}

# gRPC status -> CNI code when the daemon sent no cni-code trailer: UNAVAILABLE, DEADLINE_EXCEEDED
# and RESOURCE_EXHAUSTED -> 11 (try again later); UNAUTHENTICATED (TCP: the token in ipamdTokenFile
# is not the daemon's, even read again) -> 7, invalid network config naming ipamdTokenFile: it does
# not clear by itself, and the fix is in the conflist (or the daemon's IPAMD_TOKEN_FILE);
# anything else -> 999.
_UNAVAILABLE, _DEADLINE_EXCEEDED, _RESOURCE_EXHAUSTED, _UNAUTHENTICATED = 14, 4, 8, 16
_MAX_TOKEN = 1024


class _Log:
    """One JSON line per call, appended to the log file; never stdout; failures to log are ignored."""

    def __init__(self) -> None:
        self.path = cni.DEFAULT_LOG_FILE
        self.fields: dict[str, object] = {}
        self.started = time.monotonic()

    def write(self, **fields: object) -> None:
        record = {"ts": time.time(), **self.fields, **fields}
        record["ms"] = round((time.monotonic() - self.started) * 1000, 2)
        line = (jsonlite.dumps(record) + "\n").encode()
        try:
            _fs.append(self.path, line)
        except FileNotFoundError:
            try:
                _fs.mkdir(cni.parent_path(self.path), 0o755)
                _fs.append(self.path, line)
            except OSError:
                return
        except OSError:
            return


def _call(inv: cni.Invocation, method: str, request: bytes) -> bytes:
    """One unary call to the daemon; daemon errors become CniError with the daemon's CNI code."""
    try:
        if inv.ipamd_tcp is None:
            return h2grpc.unary_call(
                inv.ipamd_socket, SERVICE + method, request, timeout=_TIMEOUT[inv.command]
            )
        return _call_tcp(inv, inv.ipamd_tcp, SERVICE + method, request)
    except h2grpc.GrpcError as err:
        code = err.metadata.get("cni-code", "")
        if code.isdigit():
            raise cni.CniError(
                int(code), err.message, f"daemon answered {method} with gRPC status {err.status}"
            ) from None
        if err.status in (_UNAVAILABLE, _DEADLINE_EXCEEDED, _RESOURCE_EXHAUSTED):
            raise cni.CniError(cni.TRY_AGAIN_LATER, err.message, f"gRPC status {err.status}") from None
        if err.status == _UNAUTHENTICATED:
            raise cni.CniError(
                cni.INVALID_CONFIG,
                f"ipamdTokenFile: the daemon refused the token in {inv.ipamd_token_file}: {err.message}",
                "ipamdTokenFile must be the daemon's IPAMD_TOKEN_FILE",
            ) from None
        raise cni.CniError(cni.INTERNAL, err.message, f"gRPC status {err.status}") from None


def _call_tcp(inv: cni.Invocation, address: tuple[str, int], path: str, request: bytes) -> bytes:
    """The call over loopback TCP with the daemon's token, read from its file now: every start of
    the daemon writes a new one. Refused, and the file has changed since it was read (the daemon
    restarted in between), the call is made once more with the new token: a refused call never ran."""
    deadline = time.monotonic() + _TIMEOUT[inv.command]
    token = _read_token(inv.ipamd_token_file)
    try:
        return h2grpc.unary_call(
            address, path, request, timeout=_TIMEOUT[inv.command], metadata=((b"authorization", token),)
        )
    except h2grpc.GrpcError as err:
        if err.status != _UNAUTHENTICATED:
            raise
        fresh = _read_token(inv.ipamd_token_file)
        if fresh == token:
            raise
    remaining = max(deadline - time.monotonic(), 0.001)
    return h2grpc.unary_call(address, path, request, timeout=remaining, metadata=((b"authorization", fresh),))


def _read_token(path: str) -> bytes:
    """``Bearer <token>`` from the token file. A file that cannot be read means no daemon to talk to
    (not started yet, or gone): Unavailable, so ADD says try again later and DEL is queued."""
    try:
        with open(path, "rb") as file:  # io is loaded at start-up: no import
            raw = file.read(_MAX_TOKEN + 1)
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise h2grpc.Unavailable(
            f"cannot read the daemon's token file {path}: {reason}", sent=False
        ) from None
    token = raw.strip()
    if not 0 < len(token) <= _MAX_TOKEN or any(not 0x21 <= byte <= 0x7E for byte in token):
        raise cni.CniError(
            cni.INVALID_CONFIG,
            f"ipamdTokenFile: {path} does not hold a token (1 to {_MAX_TOKEN} printable ASCII characters)",
            "ipamdTokenFile must be the daemon's IPAMD_TOKEN_FILE",
        )
    return b"Bearer " + token


def _unreachable(inv: cni.Invocation, err: h2grpc.Unavailable) -> str:
    return f"the cloud-cni daemon is not reachable on {inv.ipamd_socket}: {err.reason}"


def _spool_anchor(inv: cni.Invocation) -> str:
    """The file the DEL spool lives beside, as the daemon sees it: the Unix socket, or with TCP the
    token file (ipamd.rpc.server.RpcServer.local_file)."""
    return inv.ipamd_token_file if inv.ipamd_tcp is not None else inv.ipamd_socket


def cmd_add(inv: cni.Invocation, log: _Log) -> str:
    try:
        reply = _call(inv, "Add", pb.encode_add_request(inv))
    except h2grpc.Unavailable as err:
        raise cni.CniError(cni.TRY_AGAIN_LATER, _unreachable(inv, err), "try again later") from None
    result = pb.decode_add_reply(reply)
    log.fields["ip"] = result["ip"]
    return cni.add_result(inv, result)


def cmd_del(inv: cni.Invocation, log: _Log) -> str:
    request = pb.encode_del_request(inv, reason="cni-del")
    try:
        _call(inv, "Del", request)
        return ""
    except h2grpc.Unavailable as err:
        reason = _unreachable(inv, err)
    except cni.CniError as err:
        if err.code in (cni.INVALID_ENV, cni.INVALID_CONFIG, cni.DECODE_FAILED):
            raise  # the request itself is wrong: queueing it would not help
        reason = f"daemon error {err.code}: {err.msg}"
    # DEL must never keep a pod from terminating: queue it durably and succeed.
    path = spool.enqueue(
        _spool_anchor(inv), f"{inv.network_name}.{inv.container_id}.{inv.ifname}", spool_entry(inv)
    )
    log.fields.update(spooled=path or "no daemon directory: nothing to queue", reason=reason)
    return ""


def spool_entry(inv: cni.Invocation) -> bytes:
    entry = {
        "version": spool.SPOOL_VERSION,
        "network": inv.network_name,
        "containerID": inv.container_id,
        "ifName": inv.ifname,
        "netns": inv.netns,
        "podNamespace": inv.pod_namespace,
        "podName": inv.pod_name,
        "podUID": inv.pod_uid,
        "prevResult": inv.prev_result_json,
        "queuedAt": time.time(),
    }
    return jsonlite.dumps(entry).encode()


def cmd_check(inv: cni.Invocation, log: _Log) -> str:
    try:
        _call(inv, "Check", pb.encode_check_request(inv))
    except h2grpc.Unavailable as err:
        raise cni.CniError(cni.TRY_AGAIN_LATER, _unreachable(inv, err), "try again later") from None
    return ""


def cmd_gc(inv: cni.Invocation, log: _Log) -> str:
    if inv.valid_attachments is None:
        log.fields["skipped"] = "no cni.dev/valid-attachments"
        return ""  # the spec: without the key, GC does nothing
    try:
        reply = pb.decode_gc_reply(_call(inv, "Gc", pb.encode_gc_request(inv)))
    except h2grpc.Unavailable as err:
        raise cni.CniError(cni.TRY_AGAIN_LATER, _unreachable(inv, err), "try again later") from None
    log.fields["released"] = reply["released"]
    return ""


def cmd_status(inv: cni.Invocation, log: _Log) -> str:
    try:
        reply = pb.decode_status_reply(_call(inv, "Status", pb.encode_status_request(inv)))
    except h2grpc.Unavailable as err:
        raise cni.CniError(cni.NOT_AVAILABLE, _unreachable(inv, err), "") from None
    except cni.CniError as err:
        raise cni.CniError(cni.NOT_AVAILABLE, err.msg, err.details) from None
    if not reply["ready"]:
        raise cni.CniError(cni.NOT_AVAILABLE, reply["message"] or "the daemon cannot serve ADD now", "")
    return ""


def cmd_version(inv: cni.Invocation, log: _Log) -> str:
    return cni.version_json(inv.cni_version)


HANDLERS = {
    "ADD": cmd_add,
    "DEL": cmd_del,
    "CHECK": cmd_check,
    "GC": cmd_gc,
    "STATUS": cmd_status,
    "VERSION": cmd_version,
}


def run(env: dict[str, str], stdin: bytes) -> tuple[int, str]:
    """The whole plugin as a function: (exit code, stdout text)."""
    log = _Log()
    version = cni.LATEST_VERSION
    try:
        inv = cni.parse(env, stdin)
        version = inv.cni_version
        log.path = inv.log_file
        log.fields.update(cmd=inv.command, container_id=inv.container_id, ifname=inv.ifname)
        out = HANDLERS[inv.command](inv, log)
    except cni.CniError as err:
        version = err.cni_version or version
        log.write(result="error", code=err.code, msg=err.msg)
        return 1, cni.error_json(err, version)
    except Exception as exc:  # a bug: still CNI error JSON on stdout, never a traceback
        internal = cni.CniError(cni.INTERNAL, f"internal error: {type(exc).__name__}: {exc}", "")
        log.write(result="error", code=internal.code, msg=internal.msg)
        return 1, cni.error_json(internal, version)
    log.write(result="ok")
    return 0, out


def main() -> int:
    code, out = run(_fs.environ(), sys.stdin.buffer.read())
    if out:
        sys.stdout.write(out if out.endswith("\n") else out + "\n")
        sys.stdout.flush()
    return code
