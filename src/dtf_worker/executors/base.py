"""What every executor takes and returns."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from dtf_common.errors import DtfError, InvalidArgument, Unavailable
from dtf_common.pb.dtf.v1 import types_pb2
from dtf_worker.executors.environment import inherited
from dtf_worker.executors.params import Parameters
from dtf_worker.executors.process import ProcessRun, run_process
from dtf_worker.lease import Lease


class ProgressSink(Protocol):
    """Sends a running task's finished results, and what it printed since the last call."""

    def __call__(self, records: list[types_pb2.ResultRecord], stdout: str = "", stderr: str = "") -> None: ...


@dataclass(frozen=True)
class ExecutionContext:
    """Where and as whom one leased task runs.

    `working_dir` belongs to this task alone; it is the default cwd and holds the
    executor's own files (logs, JUnit XML) under `.dtf/`. Setting `cancel` stops the
    task: its process group is killed and the executor returns promptly.
    `materialize(sha256)` returns a project snapshot's directory, fetching it when
    needed (set by the worker daemon; None where snapshots cannot be fetched).
    `slot_index` tells apart the tasks running at the same time on this machine's
    workers (see `TaskRunner`): a batch that plays an xdist worker is `gw<slot_index>`.
    `report_progress(records, stdout, stderr)` sends results (and live output) before the
    task ends; a result sent so must not be in the task's final records too.
    """

    worker_id: str
    hardware_id: str
    working_dir: Path
    default_timeout: float
    cancel: asyncio.Event = field(default_factory=asyncio.Event)
    kill_grace_s: float = 2.0
    task_id: str = ""
    cache_dir: Path | None = None
    materialize: Callable[[str], Awaitable[Path]] | None = None
    slot_index: int = 0
    # Sends results of the running task ahead of its end (a PROGRESS outcome, spooled
    # first), with what it printed meanwhile where it runs with live output; None where
    # nothing streams them.
    report_progress: ProgressSink | None = None

    @property
    def files_dir(self) -> Path:
        return self.working_dir / ".dtf"

    def child_env(self, extra: Mapping[str, str]) -> dict[str, str]:
        """The worker's environment less its credentials, then where the task stands, then
        the task's own variables. Tasks run code the worker does not trust with its token."""
        own = {"DTF_WORKER_ID": self.worker_id, "DTF_HARDWARE_ID": self.hardware_id, "DTF_TASK_ID": self.task_id}
        if self.cache_dir is not None:
            own["DTF_CACHE_DIR"] = str(self.cache_dir)  # shared across tasks: models, datasets
        return {**inherited(os.environ), **own, **extra}

    async def task_cwd(self, params: Parameters) -> Path:
        """Where the task runs. Without `parameters.snapshot`: `parameters.cwd`, else the
        working directory. With one: `<snapshot>/<subdir>`, or `parameters.cwd` taken
        relative to that. Raises InvalidArgument for bad parameters and
        SnapshotUnavailable when the snapshot cannot be fetched."""
        ref = params.snapshot()
        if ref is None:
            return params.cwd(self.working_dir)
        params.cwd_in(Path())  # a bad cwd fails before any download
        if self.materialize is None:
            raise InvalidArgument("this worker cannot fetch snapshots", field="parameters.snapshot")
        try:
            root = await self.materialize(ref.sha256)
        except DtfError as exc:
            raise SnapshotUnavailable(f"cannot fetch snapshot {ref.sha256}: {exc.message}") from exc
        cwd = params.cwd_in(root / ref.subdir)
        if not cwd.is_dir():
            where = cwd.relative_to(root).as_posix()
            raise InvalidArgument(f"{where} is not a directory in the snapshot", field="parameters.snapshot.subdir")
        return cwd

    async def run_process(
        self, argv: Sequence[str], *, cwd: Path, env: Mapping[str, str], time_limit: float
    ) -> ProcessRun:
        """Run the task's process in its own group, stopped by this context's cancel event."""
        return await run_process(
            argv,
            cwd=cwd,
            env=env,
            time_limit=time_limit,
            cancel=self.cancel,
            log_dir=self.files_dir,
            kill_grace_s=self.kill_grace_s,
        )


class SnapshotUnavailable(Unavailable):
    """The task's snapshot could not be fetched or unpacked (a retry may succeed elsewhere)."""


@dataclass
class ExecutionResult:
    """How a task ended. `results` becomes the task's `results` JSON; `records` its Results."""

    ok: bool
    error: str | None = None
    results: dict[str, Any] = field(default_factory=dict)
    records: list[types_pb2.ResultRecord] = field(default_factory=list)
    non_retryable: bool = False

    @classmethod
    def invalid(cls, exc: InvalidArgument) -> ExecutionResult:
        """Bad parameters fail the same way on every worker, so retrying is pointless."""
        return cls(ok=False, error=f"invalid parameters: {exc.message}", non_retryable=True)

    @classmethod
    def no_snapshot(cls, exc: SnapshotUnavailable) -> ExecutionResult:
        return cls(ok=False, error=exc.message)


class Executor(Protocol):
    """Runs one task type. Never raises for task-level problems: they come back as a result."""

    async def run(self, lease: Lease, ctx: ExecutionContext) -> ExecutionResult: ...
