"""What every executor takes and returns."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from dtf_common.errors import InvalidArgument
from dtf_common.pb.dtf.v1 import types_pb2, worker_service_pb2


@dataclass(frozen=True)
class ExecutionContext:
    """Where and as whom one leased task runs.

    `working_dir` belongs to this task alone; it is the default cwd and holds the
    executor's own files (logs, JUnit XML) under `.dtf/`. Setting `cancel` stops the
    task: its process group is killed and the executor returns promptly.
    """

    worker_id: str
    hardware_id: str
    working_dir: Path
    default_timeout: float
    cancel: asyncio.Event = field(default_factory=asyncio.Event)
    kill_grace_s: float = 2.0

    @property
    def files_dir(self) -> Path:
        return self.working_dir / ".dtf"


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


class Executor(Protocol):
    """Runs one task type. Never raises for task-level problems: they come back as a result."""

    async def run(self, task: worker_service_pb2.LeasedTask, ctx: ExecutionContext) -> ExecutionResult: ...
