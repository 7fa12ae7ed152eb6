"""CNI plugin entry point. VERSION is answered here; the other verbs are forwarded to the daemon
by the full shim (tracked in its own issue) and until then fail with CNI error 50."""

from __future__ import annotations

import json
import os
import sys

SUPPORTED_VERSIONS = ("0.4.0", "1.0.0", "1.1.0")


def _print(obj: dict[str, object]) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def main() -> int:
    command = os.environ.get("CNI_COMMAND", "")
    try:
        config = json.loads(sys.stdin.read() or "{}")
    except ValueError:
        config = {}
    version = config.get("cniVersion", "1.0.0") if isinstance(config, dict) else "1.0.0"
    if command == "VERSION":
        _print({"cniVersion": version, "supportedVersions": list(SUPPORTED_VERSIONS)})
        return 0
    _print(
        {
            "cniVersion": version,
            "code": 50,
            "msg": f"CNI_COMMAND {command or '(unset)'} is not served by this build of cloud-cni",
            "details": "only VERSION is implemented so far",
        }
    )
    return 1


if __name__ == "__main__":
    raise SystemExit(main())
