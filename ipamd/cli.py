"""``cloud-cni``: the daemon and the operator's commands.

cloud-cni ipamd        run the node daemon in the foreground (also: python -m ipamd)
cloud-cni demo         the daemon on the simulated cloud, driven through a node story
cloud-cni install-shim put the CNI plugin and its private Python runtime on the node (init container)
cloud-cni node-init    the kernel settings the Linux datapath needs (privileged init container)
cloud-cni version
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from importlib.metadata import PackageNotFoundError, version

from ipamd.errors import CloudCniError, ConfigError


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
    from ipamd.daemon import Daemon

    try:
        return asyncio.run(Daemon(settings).run())
    except ConfigError as exc:
        print(f"cloud-cni ipamd: {exc}", file=sys.stderr)
        return 2
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


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cloud-cni", description=__doc__.split("\n\n")[0] if __doc__ else None
    )
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("ipamd", help="run the node daemon (settings from the environment: docs/configuration.md)")
    demo = sub.add_parser("demo", help="run the daemon on the simulated cloud through a node story")
    demo.add_argument("--pods", type=int, default=30, help="pods in the scale-up burst (default 30)")
    demo.add_argument("--plot", metavar="FILE.png", help="draw pool size and demand over time")
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
    if args.command == "version":
        print(_version())
        return 0
    from ipamd.demo import main as demo_main

    return demo_main(pods=args.pods, plot=args.plot)


if __name__ == "__main__":
    raise SystemExit(main())
