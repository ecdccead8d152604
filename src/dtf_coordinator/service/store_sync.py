"""Keeps the results store a view of the applied log.

Effects mark tasks and workers dirty and queue result rows; `flush` materialises the
rows at the current applied index and writes them in one batch (an idempotent upsert
per table, off the event loop), recording the index it reached. It runs every
`database.flush_interval`, and at once before the API reads results (`catch_up`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import datetime
from typing import Any, Protocol

from dtf_coordinator.service.loops import LoopService
from dtf_coordinator.service.views import result_row, task_row, worker_row
from dtf_coordinator.state import Effect, ResultsRecorded, StateMachine, TaskTransition, WorkerChanged

log = logging.getLogger("dtf.store")


class StoreWriter(Protocol):
    def upsert_tasks(self, rows: list[dict[str, Any]]) -> None: ...
    def add_results(self, rows: list[dict[str, Any]]) -> None: ...
    def upsert_workers(self, rows: list[dict[str, Any]]) -> None: ...
    def set_applied_index(self, index: int) -> None: ...
    def flush(self) -> object: ...


class StoreSync(LoopService):
    name = "results store flush"

    def __init__(self, state: Callable[[], StateMachine], writer: StoreWriter, *, interval: float = 0.05) -> None:
        self._state = state  # the node may replace its state machine (snapshot restore)
        self.writer = writer
        self.interval = interval
        self.dirty_tasks: set[str] = set()
        self.dirty_workers: set[str] = set()
        self.results: list[dict[str, Any]] = []
        self.flushed_index = 0
        self._lock = asyncio.Lock()

    def on_effects(self, effects: list[Effect]) -> None:
        for effect in effects:
            if isinstance(effect, TaskTransition):
                self.dirty_tasks.add(effect.task_id)
            elif isinstance(effect, ResultsRecorded):
                self.results.extend(result_row(r, effect.hardware_id) for r in effect.records)
            elif isinstance(effect, WorkerChanged):
                self.dirty_workers.add(effect.worker_id)

    def adopt(self, state: StateMachine, result_rows: list[dict[str, Any]]) -> None:
        """After a snapshot from another node replaced the state: rewrite every task and
        worker, and take the result rows that came with it."""
        self.dirty_tasks.update(state.tasks)
        self.dirty_workers.update(state.workers)
        for row in result_rows:
            stamp = row.get("timestamp")
            self.results.append(
                {**row, "timestamp": datetime.fromisoformat(stamp) if isinstance(stamp, str) else stamp}
            )

    def skip_stored(self, stored_index: int) -> bool:
        """Drop what is pending when the store already holds the log up to the state's
        applied index (`stored_index`, its own record, written with the rows): a restart
        re-emits the effects of every entry it replays, and writing them all again made
        the coordinator's start grow with the log. False, keeping them, otherwise."""
        if self.state.applied_index > stored_index:
            return False
        self.dirty_tasks.clear()
        self.dirty_workers.clear()
        self.results.clear()
        self.flushed_index = max(self.flushed_index, stored_index)
        return True

    @property
    def state(self) -> StateMachine:
        return self._state()

    @property
    def pending(self) -> int:
        return len(self.dirty_tasks) + len(self.dirty_workers) + len(self.results)

    async def flush(self) -> int:
        """Write everything applied so far; returns the applied index the store now holds."""
        async with self._lock:
            index = self.state.applied_index
            if not self.pending:
                if index > self.flushed_index:
                    self.writer.set_applied_index(index)
                    await asyncio.to_thread(self.writer.flush)
                    self.flushed_index = index
                return index
            tasks, self.dirty_tasks = self.dirty_tasks, set()
            workers, self.dirty_workers = self.dirty_workers, set()
            results, self.results = self.results, []
            state = self.state
            self.writer.upsert_tasks([task_row(state.tasks[t], index) for t in tasks if t in state.tasks])
            self.writer.upsert_workers([worker_row(state.workers[w]) for w in workers if w in state.workers])
            self.writer.add_results(results)
            self.writer.set_applied_index(index)
            # A failed flush keeps its rows buffered in the writer for the next one.
            await asyncio.to_thread(self.writer.flush)
            self.flushed_index = index
            return index

    async def catch_up(self) -> int:
        """Flush now when the store is behind the applied log, so that a read sees every
        result of every task already seen finished. Concurrent callers share one flush."""
        if not self.pending and self.state.applied_index <= self.flushed_index:
            return self.flushed_index
        return await self.flush()

    async def run_once(self) -> int:
        """One pass of the loop: flush when anything is waiting. A failed flush raises; its
        rows stay derivable from the log and buffered in the writer, so the next pass
        retries them."""
        return await self.catch_up()
