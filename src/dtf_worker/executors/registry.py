"""Task type -> executor."""

from __future__ import annotations

from dtf_common.errors import InvalidArgument
from dtf_worker.executors.base import Executor
from dtf_worker.executors.benchmark import BenchmarkExecutor
from dtf_worker.executors.command import CommandExecutor
from dtf_worker.executors.noop import NoopExecutor
from dtf_worker.executors.pytest_batch import PytestExecutor

EXECUTORS: dict[str, Executor] = {
    "command": CommandExecutor(),
    "pytest": PytestExecutor(),
    "benchmark": BenchmarkExecutor(),
    "noop": NoopExecutor(),
}


def get_executor(task_type: str) -> Executor:
    try:
        return EXECUTORS[task_type]
    except KeyError:
        known = ", ".join(sorted(EXECUTORS))
        raise InvalidArgument(f"unknown task type {task_type!r}; this worker runs {known}", field="type") from None
