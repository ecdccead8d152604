"""Task type -> executor: the registry a worker's `TaskRunner` is given.

`default_executors()` is what a worker daemon runs (command, pytest, benchmark, noop);
tests and embedders may build their own. An executor that can get ready for work
announced before it arrives (`Prewarms`: the pytest executor starts the warm server
for the batches a `dtf run` announced) is told at once.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol, runtime_checkable

from dtf_common.errors import InvalidArgument
from dtf_worker.executors.base import Executor


@runtime_checkable
class Prewarms(Protocol):
    def prewarm(self, announced: str | None) -> None:
        """Get ready for the work `announced` (the starter's JSON; None: nothing announced)."""


class ExecutorRegistry:
    def __init__(self, executors: Mapping[str, Executor]) -> None:
        self._executors = dict(executors)

    def get(self, task_type: str) -> Executor:
        try:
            return self._executors[task_type]
        except KeyError:
            known = ", ".join(sorted(self._executors))
            raise InvalidArgument(f"unknown task type {task_type!r}; this worker runs {known}", field="type") from None

    def prewarm(self, announced: str | None) -> None:
        if announced is None:
            return
        for executor in self._executors.values():
            if isinstance(executor, Prewarms):
                executor.prewarm(announced)

    @property
    def task_types(self) -> list[str]:
        return sorted(self._executors)


def default_executors() -> ExecutorRegistry:
    """Every task type a worker daemon runs, each with an executor of its own."""
    from dtf_worker.executors.benchmark import BenchmarkExecutor
    from dtf_worker.executors.command import CommandExecutor
    from dtf_worker.executors.noop import NoopExecutor
    from dtf_worker.executors.pytest_batch import PytestExecutor

    return ExecutorRegistry(
        {
            "command": CommandExecutor(),
            "pytest": PytestExecutor(),
            "benchmark": BenchmarkExecutor(),
            "noop": NoopExecutor(),
        }
    )
