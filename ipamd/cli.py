"""cloud-cni: the daemon and the operator's commands.

cloud-cni ipamd          run the node daemon in the foreground (also: python -m ipamd)
cloud-cni status         what the running daemon holds: pool, interfaces, assignments, Kubernetes
cloud-cni config check   validate an environment as the daemon would and print the effective settings
cloud-cni max-pods TYPE  max pods of an AWS instance type, as the EKS max-pods calculator computes it
cloud-cni demo           the daemon on the simulated cloud, driven through a node story
cloud-cni simulate       compare warm-pool policies on a simulated cluster of thousands of nodes
cloud-cni plan           the subnet a simulated cluster needs at its peak under a policy
cloud-cni install-shim   put the CNI plugin and its private Python runtime on the node (init container)
cloud-cni node-init      the kernel settings the Linux datapath needs (privileged init container)
cloud-cni version
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from importlib.metadata import PackageNotFoundError, version

from ipamd import maxpods_cli
from ipamd.errors import CloudCniError, ConfigError
from ipamd.sim import cli as sim_cli


def _version() -> str:
    try:
        return version("cloud-cni")
    except PackageNotFoundError:
        return "0+unknown"


def run_ipamd() -> int:
    from ipamd import log
    from ipamd.config import Settings

    try:
        settings = Settings.from_env(os.environ)
    except ConfigError as exc:
        print(f"cloud-cni ipamd: {exc}", file=sys.stderr)
        return 2
    log.configure(settings.log_level)
    from ipamd.daemon import Daemon, TaskGaveUp

    # One line, never a traceback: exit 2 for a setting to change (the daemon has released the
    # socket and the checkpoint lock), 1 for anything else that stopped it (StartFailed, the cloud).
    try:
        return asyncio.run(Daemon(settings).run())
    except ConfigError as exc:
        print(f"cloud-cni ipamd: {exc}", file=sys.stderr)
        return 2
    except TaskGaveUp as exc:
        print(f"cloud-cni ipamd: stopped: {exc}", file=sys.stderr)
        return 1
    except CloudCniError as exc:
        print(f"cloud-cni ipamd: cannot start: {exc}", file=sys.stderr)
        return 1


def run_install_shim(args: argparse.Namespace) -> int:
    from ipamd import install_shim

    try:
        done = install_shim.install(
            runtime_dir=args.runtime_dir,
            cni_bin_dir=args.cni_bin_dir,
            host_runtime_dir=args.host_runtime_dir,
            conflist=args.conflist,
            cni_conf_dir=args.cni_conf_dir,
            shim_dir=args.shim_dir,
        )
    except (CloudCniError, OSError) as exc:
        print(f"cloud-cni install-shim: {exc}", file=sys.stderr)
        return 1
    for line in install_shim.describe(done):
        print(line)
    return 0


def run_node_init() -> int:
    from ipamd import node_init

    try:
        changes = node_init.run()
    except CloudCniError as exc:
        print(f"cloud-cni node-init: {exc}", file=sys.stderr)
        return 1
    for line in changes or ["nothing to change"]:
        print(f"cloud-cni node-init: {line}")
    return 0


_STATUS_TIMEOUT = 5.0


def _emit(text: str) -> None:
    """Write to stdout; a reader that went away (``| head``) is not an error worth a traceback."""
    try:
        sys.stdout.write(text)
        sys.stdout.flush()
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # quiet the exit-time flush


class _StatusFailed(Exception):
    """The status could not be read; the message is the one line the command prints."""


def _unreachable(endpoint: str, exc: BaseException) -> _StatusFailed:
    if isinstance(exc, ConnectionRefusedError):
        reason = "connection refused"
    elif isinstance(exc, TimeoutError):
        reason = f"no answer in {_STATUS_TIMEOUT:g}s"
    elif isinstance(exc, OSError):
        reason = (exc.strerror or str(exc) or type(exc).__name__).lower()
    else:  # http.client.HTTPException: something answered, not HTTP
        reason = f"not an HTTP answer: {type(exc).__name__}"
    return _StatusFailed(
        f"cannot reach the daemon's introspection at {endpoint} ({reason}); "
        "is INTROSPECTION_BIND off or elsewhere?"
    )


def _fetch_status(endpoint: str) -> tuple[object, object, object | None]:
    """GET /v1/pool, /v1/assignments and /v1/k8s (``None`` when the daemon has no such path) over
    one plain HTTP connection: the daemon binds loopback, so no proxy and no TLS apply."""
    import http.client
    import json

    from ipamd import status

    host, port = status.parse_endpoint(endpoint)
    conn = http.client.HTTPConnection(host, port, timeout=_STATUS_TIMEOUT)

    def get(path: str, *, optional: bool = False) -> object | None:
        try:
            conn.request("GET", path, headers={"Accept": "application/json"})
            response = conn.getresponse()
            body = response.read()
        except (OSError, http.client.HTTPException) as exc:
            raise _unreachable(endpoint, exc) from None
        if response.status == 404 and optional:
            return None
        if response.status != 200:
            detail = body.decode("utf-8", "replace").strip().splitlines()[:1]
            raise _StatusFailed(
                f"the daemon at {endpoint} answered {response.status} {response.reason} for {path}"
                + (f": {detail[0][:200]}" if detail else "")
            )
        try:
            doc: object = json.loads(body)
        except ValueError as exc:
            raise _StatusFailed(f"the daemon at {endpoint} sent {path} that is not JSON ({exc})") from None
        return doc

    try:
        return get("/v1/pool"), get("/v1/assignments"), get("/v1/k8s", optional=True)
    finally:
        conn.close()


def run_status(args: argparse.Namespace) -> int:
    import json
    import time

    from ipamd import status

    endpoint = args.introspection or os.environ.get("INTROSPECTION_BIND", "").strip()
    endpoint = endpoint or status.DEFAULT_INTROSPECTION
    if endpoint.lower() == "off":
        print(
            "cloud-cni status: INTROSPECTION_BIND is off: the daemon serves no introspection "
            "(give --introspection HOST:PORT if it does elsewhere)",
            file=sys.stderr,
        )
        return 1
    try:
        status.parse_endpoint(endpoint)
    except ValueError as exc:
        source = "--introspection " if args.introspection else "INTROSPECTION_BIND="
        print(f"cloud-cni status: {source}{exc}", file=sys.stderr)
        return 2
    try:
        pool, assignments, k8s = _fetch_status(endpoint)
        if args.json:
            text = json.dumps({"pool": pool, "assignments": assignments, "kubernetes": k8s}, indent=2) + "\n"
        else:
            text = status.render_status(pool, assignments, k8s, now=time.time())
    except _StatusFailed as exc:
        print(f"cloud-cni status: {exc}", file=sys.stderr)
        return 1
    except status.DocumentError as exc:
        print(
            f"cloud-cni status: the daemon at {endpoint} sent an unexpected document: {exc}", file=sys.stderr
        )
        return 1
    _emit(text)
    return 0


def run_config_check(args: argparse.Namespace) -> int:
    """Exit 0 and print the effective settings, or exit 2 with the line the daemon would print."""
    import json
    from pathlib import Path

    from ipamd import status
    from ipamd.config import Settings

    prog = "cloud-cni config check"
    env: dict[str, str] = dict(os.environ)
    if args.env_file:
        try:
            env = status.parse_env_file(Path(args.env_file).read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            print(f"{prog}: cannot read {args.env_file}: {reason}", file=sys.stderr)
            return 2
        except status.EnvFileError as exc:
            print(f"{prog}: {args.env_file} {exc}", file=sys.stderr)
            return 2
    from ipamd.config import check_datapath
    from ipamd.k8s.integration import decide

    try:
        settings = Settings.from_env(env)
        check_datapath(settings)
        # Which Kubernetes config the daemon would use; no request is made.
        decide(env, settings.kubernetes_integration, settings.kubeconfig, settings.node_name)
    except ConfigError as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        return 2
    if args.json:
        _emit(json.dumps(settings.public(), indent=2) + "\n")
    else:
        _emit("\n".join(status.render_settings(settings, env)) + "\n")
    return 0


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cloud-cni", description=__doc__.split("\n\n")[0] if __doc__ else None
    )
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("ipamd", help="run the node daemon (settings from the environment: docs/configuration.md)")
    demo = sub.add_parser("demo", help="run the daemon on the simulated cloud through a node story")
    demo.add_argument("--pods", type=int, default=30, help="pods in the scale-up burst (default 30)")
    demo.add_argument("--plot", metavar="FILE.png", help="draw pool size and demand over time")
    demo.add_argument(
        "--datapath",
        choices=("none", "windows"),
        default="none",
        help="none (IPAM only, default) or windows (DATAPATH=windows on the fake HCN)",
    )
    status = sub.add_parser(
        "status",
        help="what the running daemon holds: pool, interfaces, assignments, Kubernetes",
        description="Read the running daemon's introspection endpoint and print a summary.",
    )
    status.add_argument("--json", action="store_true", help="print the documents as read, as one JSON object")
    status.add_argument(
        "--introspection",
        metavar="HOST:PORT",
        help="where the daemon serves introspection (default: $INTROSPECTION_BIND, else 127.0.0.1:61679)",
    )
    config = sub.add_parser("config", help="check the daemon's settings")
    config_sub = config.add_subparsers(dest="config_command", required=True)
    check = config_sub.add_parser(
        "check",
        help="validate an environment as the daemon would and print the effective settings",
        description="Validate the settings as the daemon does at start (exit 2 with its one line if "
        "invalid) and print NAME=value for every variable, marked (set) or (azure default).",
    )
    check.add_argument(
        "--env-file", metavar="FILE", help="read KEY=VALUE lines from FILE instead of the environment"
    )
    check.add_argument("--json", action="store_true", help="print the settings as JSON (as GET /v1/config)")
    maxpods_cli.add_max_pods_parser(sub)
    sim_cli.add_parsers(sub)
    sub.add_parser("version", help="print the version")
    sub.add_parser("node-init", help="set ip_forward and loose rp_filter for the Linux datapath (as root)")
    installer = sub.add_parser(
        "install-shim",
        help="install the CNI plugin with a private Python runtime (the node needs only glibc)",
        description="Install <cni-bin-dir>/cloud-cni and the runtime it runs (docs/deploy.md).",
    )
    installer.add_argument(
        "--cni-bin-dir", default="/opt/cni/bin", help="where the plugin goes (default /opt/cni/bin)"
    )
    installer.add_argument(
        "--runtime-dir", required=True, help="where the runtime goes, e.g. /host/opt/cni/cloud-cni"
    )
    installer.add_argument(
        "--host-runtime-dir",
        default="/opt/cni/cloud-cni",
        help="--runtime-dir as the node sees it; the plugin names it (default /opt/cni/cloud-cni)",
    )
    installer.add_argument("--conflist", help="also install this network configuration list ...")
    installer.add_argument("--cni-conf-dir", help="... into this directory, after the plugin")
    installer.add_argument("--shim-dir", help=argparse.SUPPRESS)  # tests: another shim package
    return parser


def main(argv: list[str] | None = None) -> int:
    args = make_parser().parse_args(argv)
    if args.command == "ipamd":
        return run_ipamd()
    if args.command == "install-shim":
        return run_install_shim(args)
    if args.command == "node-init":
        return run_node_init()
    if args.command == "status":
        return run_status(args)
    if args.command == "config":
        return run_config_check(args)
    if args.command == "max-pods":
        return maxpods_cli.run_max_pods(args)
    if args.command in ("simulate", "plan"):
        return sim_cli.run(args)
    if args.command == "version":
        print(_version())
        return 0
    if args.command == "demo":
        from ipamd.demo import main as demo_main

        return demo_main(pods=args.pods, plot=args.plot, datapath=args.datapath)
    raise AssertionError(f"no handler for command {args.command!r}")


if __name__ == "__main__":
    raise SystemExit(main())
