"""The status screen of ``fiml up``: a rich renderable for terminals, one line for logs (pure)."""

from __future__ import annotations

import time
from collections.abc import Iterable

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from infra.monitor import Snapshot
from infra.supervisor import Child, ChildState

__all__ = ["render", "summary_line"]

_STATE_STYLE = {
    ChildState.RUNNING: "green",
    ChildState.BACKOFF: "yellow",
    ChildState.FAILED: "bold red",
    ChildState.STOPPING: "yellow",
    ChildState.STOPPED: "dim",
    ChildState.NEW: "dim",
}
_HEALTH_STYLE = {"up": "green", "degraded": "yellow", "down": "red"}


def _age(ms: int, now_ms: int) -> str:
    seconds = max(0, now_ms - ms) / 1000
    return f"{seconds:.0f} s ago" if seconds < 120 else f"{seconds / 60:.0f} min ago"


def render(snap: Snapshot, children: Iterable[Child], dashboard_url: str) -> RenderableType:
    """Pipeline, processes and providers in three small tables."""
    head = Table.grid(padding=(0, 2))
    head.add_row(
        Text("broker", style="bold"),
        Text(f"{snap.bootstrap} " + ("up" if snap.broker_up else "DOWN"),
             style="green" if snap.broker_up else "bold red"),
        Text("topics", style="bold"), Text(str(snap.topics)),
    )  # fmt: skip
    head.add_row(
        Text("ticks in", style="bold"),
        Text(f"{snap.ticks_per_s:,.1f}/s  ({snap.ticks_total:,} total)"),
        Text("prices out", style="bold"),
        Text(f"{snap.prices_per_s:,.1f}/s  ({snap.prices_total:,} total)"),
    )
    head.add_row(
        Text("dashboard", style="bold"), Text(dashboard_url, style="cyan underline"),
        Text("clients", style="bold"), Text("?" if snap.clients is None else str(snap.clients)),
    )  # fmt: skip

    procs = Table("process", "state", "pid", "restarts", "last exit", box=None,
                  header_style="bold")  # fmt: skip
    for child in children:
        pid = child.process.pid if child.process is not None else None
        procs.add_row(
            child.spec.name,
            Text(child.state.value, style=_STATE_STYLE[child.state]),
            "" if pid is None else str(pid),
            str(child.restarts),
            "" if child.last_exit is None else str(child.last_exit),
        )

    health = Table("provider", "state", "reliability", "error bps", "staleness ms", "updated",
                   "reason", box=None, header_style="bold")  # fmt: skip
    now_ms = time.time_ns() // 1_000_000
    for name in sorted(snap.providers):
        h = snap.providers[name]
        health.add_row(
            name,
            Text(h.state, style=_HEALTH_STYLE.get(h.state, "")),
            "" if h.reliability is None else f"{h.reliability:.2f}",
            "" if h.error_bps is None else f"{h.error_bps:.1f}",
            "" if h.staleness_ms is None else f"{h.staleness_ms:,.0f}",
            _age(h.event_time_ms, now_ms),
            (h.reason or "")[:40],
        )
    if not snap.providers:
        health.add_row("(no health records yet)", "", "", "", "", "", "")
    return Group(
        head, Text(""), procs, Text(""), health, Text("Ctrl-C stops everything.", style="dim")
    )


def summary_line(snap: Snapshot, children: Iterable[Child]) -> str:
    """The same, on one line, for logs and CI (``--headless``)."""
    procs = " ".join(f"{c.spec.name}={c.state.value}" for c in children)
    providers = " ".join(f"{n}={h.state}" for n, h in sorted(snap.providers.items()))
    return (
        f"broker={'up' if snap.broker_up else 'down'} ticks/s={snap.ticks_per_s:.1f} "
        f"prices/s={snap.prices_per_s:.1f} prices={snap.prices_total} "
        f"clients={'?' if snap.clients is None else snap.clients} {procs} {providers}"
    ).strip()
