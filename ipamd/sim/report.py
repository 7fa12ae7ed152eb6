"""Results for people and programs: the comparison table, the ``--json`` document, the plots.

matplotlib is imported only by :func:`plot` (it costs about a second to import), with the Agg backend:
the command runs on servers and in CI, never with a display.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ipamd.sim.metrics import RunResult

__all__ = ["document", "plot", "table"]


def document(
    results: Sequence[RunResult], *, nodes: int, sim_seconds: float, wall_seconds: float
) -> dict[str, Any]:
    """``--json``: ``{"nodes", "sim_seconds", "wall_seconds", "policies": [...]}``."""
    return {
        "nodes": nodes,
        "sim_seconds": sim_seconds,
        "wall_seconds": round(wall_seconds, 3),
        "policies": [r.summary() for r in results],
    }


def _n(value: float) -> str:
    return f"{value:,.0f}"


def table(results: Sequence[RunResult], *, title: str) -> str:
    """The comparison as plain text: one row per policy, then each policy's cloud calls by API."""
    head = (
        "policy",
        "CNI wait p50/p99/max s",
        "waited",
        "delayed*",
        "idle/node mean p99",
        "subnet peak",
        "cloud calls",
        "throttled",
        "delayed by thr.",
        "gave up",
    )
    rows = [head]
    for r in results:
        p50, p99, top = r.cni_wait
        rows.append(
            (
                r.name,
                f"{p50:.2f}/{p99:.2f}/{top:.1f}",
                _n(r.pods_waited),
                _n(r.pods_delayed),
                f"{r.idle_mean:.1f} {r.idle_p99:.0f}",
                _n(r.subnet_peak_used),
                _n(sum(r.calls.values())),
                _n(sum(r.throttled.values())),
                _n(r.delayed_by_throttling),
                _n(sum(r.gave_up.values())),
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(head))]
    lines = [title, ""]
    for index, row in enumerate(rows):
        cells = [row[0].ljust(widths[0])] + [
            cell.rjust(w) for cell, w in zip(row[1:], widths[1:], strict=True)
        ]
        lines.append("  ".join(cells).rstrip())
        if index == 0:
            lines.append("  ".join("-" * w for w in widths))
    lines += [
        "",
        "waited: pods whose ADD found no address and waited for the cloud; delayed*: of those, pods whose",
        "node had a throttled call while they waited. idle: addresses held and not assigned, per node,",
        "sampled; subnet peak: addresses the nodes held at once, interfaces' own included. Calls count",
        "every API request, throttled ones included; 'delayed by thr.' counts throttled attempts made",
        "while a pod of that node waited; 'gave up': calls that ran out of retries.",
        "",
        "Cloud calls by API (throttled):",
    ]
    for r in results:
        parts = [f"{api} {_n(n)} ({_n(r.throttled.get(api, 0))})" for api, n in r.calls.items()]
        lines.append(f"  {r.name}: " + (", ".join(parts) if parts else "none"))
    other = [r for r in results if r.pods_unstarted or r.evicted or r.overrides]
    if other:
        lines += ["", "Also:"]
        for r in other:
            notes = []
            if r.pods_unstarted:
                notes.append(f"{_n(r.pods_unstarted)} pods without an address at the end")
            if r.evicted:
                notes.append(f"{_n(r.evicted)} pods evicted by drains")
            if r.overrides:
                notes.append("cool-down overrides " + ", ".join(f"{k} {v}" for k, v in r.overrides.items()))
            lines.append(f"  {r.name}: " + "; ".join(notes))
    return "\n".join(lines) + "\n"


def plot(results: Sequence[RunResult], folder: str, *, title: str) -> list[Path]:
    """idle.png (idle addresses per node), waits.png (CNI waits), subnet.png (addresses in use) over
    time, one series per policy. Returns the files written."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    written = []

    def minutes(values: Sequence[float]) -> list[float]:
        return [v / 60 for v in values]

    fig, ax = plt.subplots(figsize=(10, 5))
    for r in results:
        ax.plot(minutes([s.t for s in r.samples]), [s.idle_mean for s in r.samples], label=r.name)
    ax.set(xlabel="minutes", ylabel="idle addresses per node (mean)", title=f"Idle addresses - {title}")
    ax.legend(fontsize="small")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    written.append(out / "idle.png")
    fig.savefig(written[-1], dpi=100)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(10, 5))
    for r in results:
        ax.scatter(
            minutes(r.waited_at), list(r.waited_for), s=6, alpha=0.6, label=f"{r.name} ({r.pods_waited})"
        )
    ax.set(xlabel="minutes", ylabel="CNI wait, ADD to address (s)", title=f"Pods that waited - {title}")
    if any(r.pods_waited for r in results):
        ax.set_yscale("log")
        ax.legend(fontsize="small")
    else:
        ax.text(0.5, 0.5, "no pod waited for an address", ha="center", transform=ax.transAxes)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    written.append(out / "waits.png")
    fig.savefig(written[-1], dpi=100)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(10, 5))
    for r in results:
        ax.plot(minutes([s.t for s in r.samples]), [s.subnet_used for s in r.samples], label=r.name)
    ax.set(xlabel="minutes", ylabel="addresses in use in the subnets", title=f"Subnet use - {title}")
    ax.legend(fontsize="small")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    written.append(out / "subnet.png")
    fig.savefig(written[-1], dpi=100)
    plt.close(fig)
    return written
