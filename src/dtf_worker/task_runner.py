"""Runs leased tasks side by side and spools their outcomes.

Each task gets its own working directory and cancel event. Its STARTED outcome is
spooled before it runs and its COMPLETED or FAILED outcome after, unless it was stopped
on purpose (lease revoked, worker shutting down): then nothing more is reported and the
coordinator decides what happens to the task. A lease the client could not read
(`UnreadableLease`) goes the same way and fails at once, not retried.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import os
import shutil
import time
from collections import Counter, OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from dtf_common.errors import InvalidArgument
from dtf_common.pb.dtf.v1 import types_pb2
from dtf_common.worker_env import INDEX_VARIABLE, PREWARM_VARIABLE
from dtf_worker.executors.base import ExecutionContext, ExecutionResult
from dtf_worker.executors.registry import ExecutorRegistry
from dtf_worker.hardening import redact
from dtf_worker.lease import AnyLease, UnreadableLease
from dtf_worker.spool import Spool

log = logging.getLogger("dtf.worker")
Outcome = types_pb2.TaskOutcome
_REMEMBERED_LEASES = 10_000
# Well under the coordinator's 64 MiB message limit: a larger outcome goes in pieces.
MAX_OUTCOME_BYTES = 8 * 1024 * 1024


def split_outcome(outcome: types_pb2.TaskOutcome, limit: int = MAX_OUTCOME_BYTES) -> list[types_pb2.TaskOutcome]:
    """An outcome as messages of at most about `limit` bytes each: its records, in order,
    in PROGRESS outcomes of the same lease, and the outcome itself with the last of them.
    Nothing is dropped: a single record too large on its own keeps its identity and
    status, and says that its raw data was cut."""
    if outcome.ByteSize() <= limit:
        return [outcome]
    records = list(outcome.results)
    del outcome.results[:]
    base = outcome.ByteSize()
    pieces: list[list[types_pb2.ResultRecord]] = [[]]
    size = 0
    for record in records:
        if _field_size(record.ByteSize()) > limit - base:
            record.raw_data_json = json.dumps({"truncated": True, "bytes": len(record.raw_data_json)})
        cost = _field_size(record.ByteSize())
        if pieces[-1] and size + cost > limit - base:
            pieces.append([])
            size = 0
        pieces[-1].append(record)
        size += cost
    out = []
    for piece in pieces[:-1]:
        progress = Outcome(task_id=outcome.task_id, lease_id=outcome.lease_id, worker_id=outcome.worker_id)
        progress.kind = Outcome.PROGRESS
        progress.results.extend(piece)
        out.append(progress)
    outcome.results.extend(pieces[-1])
    out.append(outcome)
    return out


def _field_size(message_bytes: int) -> int:
    """Bytes an embedded message takes in its parent: a one-byte tag, a varint length, the message."""
    return 1 + max(1, (message_bytes.bit_length() + 6) // 7) + message_bytes


@dataclass
class RunningTask:
    lease: AnyLease
    ctx: ExecutionContext
    started: float
    job: asyncio.Task[None] | None = None
    # "revoked" or "shutdown": the task was stopped on purpose and its outcome is not reported.
    drop_reason: str | None = None


class TaskRunner:
    def __init__(
        self,
        *,
        executors: ExecutorRegistry,
        worker_id: str,
        runs_dir: Path,
        cache_dir: Path,
        default_timeout: float,
        spool: Spool,
        on_spooled: Callable[[], None],
        slots: int = 1,
    ) -> None:
        self.executors = executors
        self.worker_id = worker_id
        self.slots = max(1, slots)
        try:
            self.first_slot = int(os.environ.get(INDEX_VARIABLE, "0")) * self.slots
        except ValueError:
            self.first_slot = 0
        self.hardware_id = ""
        self.runs_dir = runs_dir
        self.cache_dir = cache_dir
        self.default_timeout = default_timeout
        self.spool = spool
        self.on_spooled = on_spooled
        # Fetches a project snapshot by hash (the daemon sets it once it has a client).
        self.materialize: Callable[[str], Awaitable[Path]] | None = None
        self.running: dict[str, RunningTask] = {}
        # The worker's tokens, which no outcome may carry (the daemon keeps this current).
        self.secrets: set[str] = set()
        self.counts: Counter[str] = Counter()
        self.slot_freed = asyncio.Event()
        # Leases whose final outcome awaits acknowledgement, from this life or, spooled, the last.
        self._reporting: set[str] = {
            outcome.lease_id for _key, outcome in spool.pending() if outcome.kind in (Outcome.COMPLETED, Outcome.FAILED)
        }
        self._done: OrderedDict[str, None] = OrderedDict()  # leases already run: a re-delivery is ignored
        # A `dtf run` that started this worker announced its batches: warm up for them now.
        executors.prewarm(os.environ.pop(PREWARM_VARIABLE, None))

    def held_leases(self) -> list[str]:
        """Running tasks, and finished ones whose outcome the coordinator has not yet acknowledged."""
        return sorted(set(self.running) | self._reporting)

    async def wait_for_free_slot(self, slots: int) -> int:
        """How many slots are free, once at least one is."""
        while len(self.running) >= slots:
            self.slot_freed.clear()
            await self.slot_freed.wait()
        return slots - len(self.running)

    def start(self, lease: AnyLease) -> None:
        if lease.lease_id in self.running or lease.lease_id in self._done:
            log.info("lease %s of task %s is already running or done here; ignored", lease.lease_id, lease.task_id)
            return
        ctx = ExecutionContext(
            worker_id=self.worker_id,
            hardware_id=self.hardware_id,
            working_dir=self.runs_dir / f"{lease.task_id}.{lease.lease_id}",
            default_timeout=self.default_timeout,
            task_id=lease.task_id,
            cache_dir=self.cache_dir,
            materialize=self.materialize,
            slot_index=self.first_slot + self._free_slot(),
            report_progress=functools.partial(self._spool_progress, lease),
        )
        running = RunningTask(lease=lease, ctx=ctx, started=time.monotonic())
        self.running[lease.lease_id] = running
        running.job = asyncio.create_task(self._execute(running), name=f"dtf-task-{lease.task_id}")

    def _free_slot(self) -> int:
        """The lowest slot no running task holds."""
        taken = {r.ctx.slot_index - self.first_slot for r in self.running.values()}
        return next(i for i in range(len(taken) + 1) if i not in taken)

    def revoke(self, lease_id: str) -> None:
        running = self.running.get(lease_id)
        if running is None or running.drop_reason:
            return
        running.drop_reason = "revoked"
        running.ctx.cancel.set()
        log.warning("lease %s of task %s was revoked; stopping the task", lease_id, running.lease.task_id)

    def acknowledged(self, outcomes: list[types_pb2.TaskOutcome]) -> None:
        for outcome in outcomes:
            if outcome.kind in (Outcome.COMPLETED, Outcome.FAILED):
                self._reporting.discard(outcome.lease_id)

    async def finish(self, grace_s: float) -> list[str]:
        """Give running tasks `grace_s` to end, then cancel the rest. Returns the lease ids of
        the cancelled tasks: the coordinator may give them to another worker at once."""
        jobs = {r.job for r in self.running.values() if r.job is not None}
        if jobs:
            log.info("waiting up to %.0fs for %d running tasks", grace_s, len(jobs))
            await asyncio.wait(jobs, timeout=grace_s)
        left = list(self.running.values())
        for running in left:
            running.drop_reason = running.drop_reason or "shutdown"
            running.ctx.cancel.set()
        jobs = {r.job for r in left if r.job is not None}
        if jobs:
            await asyncio.wait(jobs, timeout=max(r.ctx.kill_grace_s for r in left) + 5)
        return [r.lease.lease_id for r in left if r.drop_reason == "shutdown"]

    async def _execute(self, running: RunningTask) -> None:
        lease, ctx = running.lease, running.ctx
        # One INFO line per task (its end): at thousands of short tasks a second, logging
        # each start as well cost a quarter of the worker's CPU.
        log.debug(
            "task %s (%s) started: lease %s, attempt %d", lease.task_id, lease.type, lease.lease_id, lease.attempt
        )
        try:
            self._spool(lease, Outcome.STARTED)
            ctx.working_dir.mkdir(parents=True, exist_ok=True)
            result = await self._run_executor(lease, ctx)
            took = time.monotonic() - running.started
            if running.drop_reason:
                log.info(
                    "task %s stopped after %.2fs (%s); outcome not reported", lease.task_id, took, running.drop_reason
                )
                return
            self._spool(lease, Outcome.COMPLETED if result.ok else Outcome.FAILED, result)
            self._reporting.add(lease.lease_id)
            self.counts["completed" if result.ok else "failed"] += 1
            if result.ok:
                log.info("task %s (%s) completed in %.2fs, attempt %d", lease.task_id, lease.type, took, lease.attempt)
            else:
                log.info("task %s failed in %.2fs: %s", lease.task_id, took, result.error)
        finally:
            del self.running[lease.lease_id]
            self._done[lease.lease_id] = None
            if len(self._done) > _REMEMBERED_LEASES:
                self._done.popitem(last=False)
            self.slot_freed.set()
            await asyncio.to_thread(shutil.rmtree, ctx.working_dir, True)

    async def _run_executor(self, lease: AnyLease, ctx: ExecutionContext) -> ExecutionResult:
        try:
            executor = self.executors.get(lease.type)
        except InvalidArgument as exc:
            return ExecutionResult(ok=False, error=exc.message, non_retryable=True)
        if isinstance(lease, UnreadableLease):
            return ExecutionResult.invalid(lease.problem)
        try:
            return await executor.run(lease, ctx)
        except Exception as exc:
            log.exception("executor for task %s raised", lease.task_id)
            return ExecutionResult(ok=False, error=f"worker error: {type(exc).__name__}: {exc}")

    def _spool_progress(
        self,
        lease: AnyLease,
        records: list[types_pb2.ResultRecord],
        stdout: str = "",
        stderr: str = "",
    ) -> None:
        """Results of a running task, ahead of its end: recorded at once, and read by
        whoever follows the task while it runs (`dtf run`), after the output it printed
        before them."""
        running = self.running.get(lease.lease_id)
        if not (records or stdout or stderr) or running is None or running.drop_reason:
            return
        outcome = Outcome(task_id=lease.task_id, lease_id=lease.lease_id, worker_id=self.worker_id)
        outcome.kind = Outcome.PROGRESS
        outcome.stdout, outcome.stderr = stdout, stderr
        outcome.results.extend(records)
        try:
            self._put(outcome)
        except OSError:
            log.exception("cannot spool results of task %s; they go with its end", lease.task_id)
            raise

    def _spool(
        self,
        lease: AnyLease,
        kind: types_pb2.TaskOutcome.Kind,
        result: ExecutionResult | None = None,
    ) -> None:
        outcome = Outcome(task_id=lease.task_id, lease_id=lease.lease_id, worker_id=self.worker_id, kind=kind)
        if result is not None:
            outcome.error = result.error or ""
            outcome.results_json = json.dumps(result.results, default=str)
            outcome.results.extend(result.records)
            outcome.non_retryable = result.non_retryable
        try:
            self._put(outcome)
        except OSError:
            # Without the spool the outcome cannot be made durable; the lease will expire and
            # the coordinator requeue the task, which is the at-least-once path anyway.
            log.exception("cannot spool the outcome of task %s", lease.task_id)

    def _put(self, outcome: types_pb2.TaskOutcome) -> None:
        """Spool an outcome, with the worker's credentials taken out of what the task
        printed or reported, in pieces of a message's size, and wake the sender."""
        redact(outcome, self.secrets)
        for piece in split_outcome(outcome):
            self.spool.put(piece)
        self.on_spooled()
