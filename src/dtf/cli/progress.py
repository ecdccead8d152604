"""Live progress of submitted tasks (rich), until every one is finished."""

from __future__ import annotations

import time
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

FINAL = {"completed", "failed", "cancelled"}


def _fetch(client: Any, ids: list[str], known: dict[str, dict[str, Any]]) -> None:
    open_ids = [i for i in ids if known.get(i, {}).get("status") not in FINAL]
    if len(open_ids) <= 50:
        for task_id in open_ids:
            known[task_id] = client.task(task_id)
        return
    wanted, offset = set(open_ids), 0
    while wanted:
        page = client.tasks(offset=offset, limit=1000)
        for task in page["data"]:
            if task["task_id"] in wanted:
                known[task["task_id"]] = task
                wanted.discard(task["task_id"])
        offset += len(page["data"])
        if not page["data"] or offset >= page["count"]:
            break


def wait_for_tasks(
    client: Any, ids: list[str], *, poll_s: float = 0.25, console: Console | None = None
) -> list[dict[str, Any]]:
    console = console or Console(stderr=True)
    known: dict[str, dict[str, Any]] = {}
    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[counts]}"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=console, transient=False) as progress:
        bar = progress.add_task("tasks", total=len(ids), counts="")
        while True:
            _fetch(client, ids, known)
            counts: dict[str, int] = {}
            for task in known.values():
                counts[task["status"]] = counts.get(task["status"], 0) + 1
            done = sum(n for s, n in counts.items() if s in FINAL)
            text = "  ".join(f"{s} {n}" for s, n in sorted(counts.items()))
            progress.update(bar, completed=done, counts=text)
            if done >= len(ids):
                break
            time.sleep(poll_s)
    return [known[i] for i in ids]
