"""Tables for the CLI (rich)."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table

STATUS_STYLE = {
    "completed": "green",
    "success": "green",
    "failed": "red",
    "failure": "red",
    "cancelled": "yellow",
    "partial": "yellow",
    "running": "cyan",
    "assigned": "cyan",
    "pending": "white",
    "online": "green",
    "busy": "cyan",
    "offline": "red",
    "error": "red",
}


def _styled(status: str) -> str:
    style = STATUS_STYLE.get(status, "white")
    return f"[{style}]{status}[/]"


def _console() -> Console:
    return Console()


def print_status(status: dict[str, Any]) -> None:
    table = Table(title=f"coordinator {status.get('node_id', '')}", show_header=False)
    table.add_row("status", str(status.get("status")))
    table.add_row("leader", str(status.get("leader_id")))
    table.add_row("queue depth", f"{status.get('queue_depth')} / {status.get('max_queue_size')}")
    table.add_row("tasks", "  ".join(f"{k} {v}" for k, v in status.get("tasks", {}).items()))
    table.add_row("workers", "  ".join(f"{k} {v}" for k, v in status.get("workers", {}).items()))
    table.add_row("applied index", str(status.get("applied_index")))
    _console().print(table)


def task_name(task: dict[str, Any]) -> str:
    meta = task.get("metadata") or {}
    params = task.get("parameters") or {}
    name = meta.get("name") or params.get("entry") or params.get("command") or params.get("args") or ""
    return name if isinstance(name, str) else " ".join(map(str, name))


def print_tasks(page: dict[str, Any]) -> None:
    table = Table(title=f"tasks ({page['count']} matching)")
    for col in ("task_id", "type", "name", "status", "priority", "worker", "error"):
        table.add_column(col)
    for t in page["data"]:
        table.add_row(
            t["task_id"][:8],
            t["type"],
            task_name(t)[:40],
            _styled(t["status"]),
            str(t["priority"]),
            t.get("worker_id") or "",
            (t.get("error") or "")[:60],
        )
    _console().print(table)


def print_workers(workers: list[dict[str, Any]]) -> None:
    table = Table(title=f"workers ({len(workers)})")
    for col in ("worker_id", "status", "hardware_id", "hardware", "slots", "done", "failed", "last seen"):
        table.add_column(col)
    for w in workers:
        caps = w.get("capabilities", {})
        perf = w.get("performance_metrics", {})
        table.add_row(
            w["worker_id"],
            _styled(w["status"]),
            w.get("hardware_id", ""),
            ",".join(caps.get("hardware", [])),
            str(caps.get("slots", "")),
            str(perf.get("tasks_completed", "")),
            str(perf.get("tasks_failed", "")),
            str(w.get("last_seen", ""))[:19],
        )
    _console().print(table)


def format_metrics(metrics: dict[str, Any], limit: int = 4) -> str:
    """Scalar metrics as `k=v`; nested ones (latency percentiles) by their p50."""
    parts = []
    for key, value in metrics.items():
        if isinstance(value, dict) and "p50" in value:
            value, key = value["p50"], f"{key}.p50"
        if isinstance(value, bool) or not isinstance(value, int | float | str):
            continue
        parts.append(f"{key}={value:.3g}" if isinstance(value, float) else f"{key}={value}")
        if len(parts) == limit:
            break
    return ", ".join(parts)


def print_results(page: dict[str, Any]) -> None:
    table = Table(title=f"results ({page['count']} matching)")
    for col in ("test_id", "status", "seconds", "worker", "metrics"):
        table.add_column(col)
    for r in page["data"]:
        shown = format_metrics(r.get("metrics") or {})
        table.add_row(r["test_id"], _styled(r["status"]), f"{r['execution_time']:.3f}", r["worker_id"], shown)
    _console().print(table)
