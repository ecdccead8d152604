"""Following a run's batches against an in-memory coordinator: crashes, yields, reruns,
tests a batch did not collect."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dtf.run.config import RunConfig
from dtf.run.execution import PRIORITY, PRIORITY_REMAINDER, Attempt, Execution, split_evenly
from dtf.run.history import recorded_durations
from dtf.run.plan import Batch


@dataclass
class InMemoryCoordinator:
    """The part of the coordinator a run talks to: tasks it submitted, and their results."""

    tasks: dict[str, dict[str, Any]] = field(default_factory=dict)
    results: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    recorded: dict[str, float] = field(default_factory=dict)  # over every hardware class
    recorded_on: dict[str, dict[str, float]] = field(default_factory=dict)  # per class
    live: list[str] = field(default_factory=lambda: ["w1", "w2"])
    cancelled: list[str] = field(default_factory=list)
    ids: itertools.count[int] = field(default_factory=itertools.count)

    def submit(self, tasks: list[dict[str, Any]] | dict[str, Any]) -> list[str]:
        out = []
        for body in tasks if isinstance(tasks, list) else [tasks]:
            task_id = f"t{next(self.ids)}"
            self.tasks[task_id] = {**body, "task_id": task_id, "status": "pending"}
            out.append(task_id)
        return out

    def task(self, task_id: str) -> dict[str, Any]:
        return self.tasks[task_id]

    def all_results(self, **filters: Any) -> list[dict[str, Any]]:
        return self.results.get(filters["task_id"], [])

    def durations(self, test_ids: list[str], *, hardware_id: str | None = None) -> dict[str, float]:
        recorded = self.recorded if hardware_id is None else self.recorded_on.get(hardware_id, {})
        return {t: recorded[t] for t in test_ids if t in recorded}

    def cancel(self, task_id: str) -> dict[str, Any]:
        self.cancelled.append(task_id)
        self.tasks[task_id]["status"] = "cancelled"
        return self.tasks[task_id]

    def workers(self) -> list[dict[str, Any]]:
        return [{"worker_id": w, "status": "online"} for w in self.live]

    # -- what a worker does --------------------------------------------------------

    def finish(
        self, task_id: str, outcomes: dict[str, str], *, status: str = "completed", worker: str = "w1", **summary: Any
    ) -> None:
        """End a task with one result per test (`outcome` by node id)."""
        self.results[task_id] = [
            {
                "test_id": node_id,
                "status": {"passed": "success", "failed": "failure", "skipped": "partial"}[outcome],
                "execution_time": 0.01,
                "worker_id": worker,
                "raw_data": {"outcome": outcome},
            }
            for node_id, outcome in outcomes.items()
        ]
        counted = {k: sum(o == v for o in outcomes.values()) for k, v in (("passed", "passed"), ("failed", "failed"))}
        self.tasks[task_id].update(status=status, worker_id=worker, results={**counted, **summary})

    def open_ids(self) -> list[str]:
        return [t for t, body in self.tasks.items() if body["status"] == "pending"]

    def node_ids(self, task_id: str) -> list[str]:
        return list(self.tasks[task_id]["parameters"]["select"])


IDS = [f"t/test_{f}.py::test_{i}" for f in "ab" for i in range(4)]


def execution(
    coordinator: InMemoryCoordinator, ids: list[str] = IDS, *, reruns: int = 0, **fields: Any
) -> tuple[Execution, list[Attempt]]:
    """An execution of `ids`, and the attempts it hands on, in order."""
    config = RunConfig(workers=2, pytest_args=[], cwd=Path("/p"), data_dir=Path("/p/.dtf"), reruns=reruns)
    seen: list[Attempt] = []
    run = Execution(
        coordinator,
        config,
        {n: i for i, n in enumerate(ids)},
        dict.fromkeys(ids, 0.05),
        seen.append,
        parameters={"args": ["tests"], "cwd": "/p"},
        n_workers=2,
        **fields,
    )
    return run, seen


def test_every_batch_runs_the_runs_arguments_and_selects_its_tests_in_collection_order() -> None:
    coordinator = InMemoryCoordinator()
    run, _ = execution(coordinator)
    [task] = run.submit([Batch((IDS[3], IDS[0], IDS[5]), 0.15)])

    assert coordinator.tasks[task]["parameters"] == {"args": ["tests"], "cwd": "/p", "select": [IDS[0], IDS[3], IDS[5]]}


def test_results_are_handed_on_in_the_order_the_batch_ran_them() -> None:
    coordinator = InMemoryCoordinator()
    run, seen = execution(coordinator)
    [task] = run.submit([Batch(tuple(IDS[:3]), 0.15)])

    coordinator.finish(task, {IDS[2]: "failed", IDS[0]: "passed", IDS[1]: "skipped"})
    run.poll_once()

    assert [(a.node_id, a.outcome, a.final) for a in seen] == [
        (IDS[0], "passed", True),
        (IDS[1], "skipped", True),
        (IDS[2], "failed", True),
    ]
    assert run.done and not run.missing().keys() & set(IDS[:3])


def test_a_crashed_batch_blames_its_first_missing_test_and_runs_the_rest_again() -> None:
    coordinator = InMemoryCoordinator()
    run, seen = execution(coordinator)
    [task] = run.submit([Batch(tuple(IDS[:4]), 0.2)])

    coordinator.finish(task, {IDS[0]: "passed"}, status="failed", exit_code=-11, stderr_tail="Segmentation fault")
    run.poll_once()

    assert run.outcomes[IDS[0]].outcome == "passed"
    crashed = run.outcomes[IDS[1]]
    assert crashed.failed and crashed.row is None
    assert crashed.crash == "crashed: pytest exited with code -11 while this test was running"
    assert "Segmentation fault" in crashed.details
    assert [a.node_id for a in seen] == IDS[:2]
    [again] = coordinator.open_ids()
    assert coordinator.node_ids(again) == IDS[2:4]


def test_a_yielded_batch_shares_its_remaining_tests_ahead_of_the_queue() -> None:
    coordinator = InMemoryCoordinator()
    run, _ = execution(coordinator, guessed=set(IDS))
    first, queued = run.submit([Batch(tuple(IDS[:6]), 0.3), Batch(tuple(IDS[6:]), 0.1)])
    assert "yield_after" in coordinator.tasks[first]["parameters"]

    coordinator.finish(first, {IDS[0]: "passed"}, yielded=True, exit_code=2)
    run.poll_once()

    pieces = [t for t in coordinator.open_ids() if t != queued]
    assert [coordinator.node_ids(t) for t in pieces] == [IDS[1:4], IDS[4:6]]  # one per worker
    assert {coordinator.tasks[t]["priority"] for t in pieces} == {PRIORITY_REMAINDER}
    assert coordinator.tasks[queued]["priority"] == PRIORITY < PRIORITY_REMAINDER
    assert not any("yield_after" in coordinator.tasks[t]["parameters"] for t in pieces)  # no second yield
    assert not run.outcomes.keys() - {IDS[0]}  # nothing blamed


def test_only_batches_of_several_tests_holding_a_guess_may_yield() -> None:
    coordinator = InMemoryCoordinator()
    run, _ = execution(coordinator, guessed={IDS[4], IDS[7]})
    batches = [Batch(tuple(IDS[:4]), 0.2), Batch(tuple(IDS[4:]), 0.2), Batch((IDS[7],), 1)]
    recorded, guessed, few = run.submit(batches)

    assert "yield_after" not in coordinator.tasks[recorded]["parameters"]
    assert coordinator.tasks[guessed]["parameters"]["yield_after"] == pytest.approx(run.yield_after(0.2))
    assert "yield_after" not in coordinator.tasks[few]["parameters"]  # too few tests to share


def test_a_failing_test_runs_again_away_from_its_worker_and_a_pass_ends_it_flaky() -> None:
    coordinator = InMemoryCoordinator()
    run, seen = execution(coordinator, reruns=2)
    [task] = run.submit([Batch(tuple(IDS[:2]), 0.1)])

    coordinator.finish(task, {IDS[0]: "passed", IDS[1]: "failed"}, worker="w1")
    run.poll_once()
    [rerun] = coordinator.open_ids()
    assert coordinator.node_ids(rerun) == [IDS[1]]
    assert coordinator.tasks[rerun]["requirements"] == {"exclude_workers": ["w1"]}
    assert coordinator.tasks[rerun]["metadata"]["attempt"] == 2
    assert not run.done  # its rerun is open

    coordinator.finish(rerun, {IDS[1]: "passed"}, worker="w2")
    run.poll_once()

    assert [(a.node_id, a.outcome, a.final) for a in seen] == [
        (IDS[0], "passed", True),
        (IDS[1], "failed", False),
        (IDS[1], "passed", True),
    ]
    [(final, history)] = run.flaky()
    assert final.node_id == IDS[1] and [a.worker_id for a in history] == ["w1"]


def test_a_test_that_fails_every_attempt_is_a_failure() -> None:
    coordinator = InMemoryCoordinator()
    run, seen = execution(coordinator, reruns=1)
    [task] = run.submit([Batch((IDS[0],), 0.1)])
    coordinator.finish(task, {IDS[0]: "failed"})
    run.poll_once()
    [rerun] = coordinator.open_ids()
    coordinator.finish(rerun, {IDS[0]: "failed"})
    run.poll_once()

    assert [a.final for a in seen] == [False, True]
    assert run.outcomes[IDS[0]].failed and not run.flaky()


def test_tests_a_batch_did_not_collect_are_missing_with_the_workers_reason() -> None:
    coordinator = InMemoryCoordinator()
    run, _ = execution(coordinator)
    [task] = run.submit([Batch(tuple(IDS[:3]), 0.15)])
    coordinator.finish(
        task,
        {IDS[0]: "passed"},
        missing=[IDS[1], IDS[2]],
        collect_errors=[{"longrepr": "ImportError while importing test module\nE   ModuleNotFoundError: x"}],
    )

    run.poll_once()

    assert run.done and not coordinator.open_ids()  # nothing crashed, nothing runs again
    assert run.missing() == {
        **{n: "the worker's pytest did not collect it: E   ModuleNotFoundError: x" for n in IDS[1:3]},
        **{n: "no result was recorded" for n in IDS[3:]},
    }


def test_a_cancelled_batch_blames_no_test() -> None:
    coordinator = InMemoryCoordinator()
    run, seen = execution(coordinator)
    [task] = run.submit([Batch(tuple(IDS[:2]), 0.1)])
    run.cancel_open()

    run.poll_once()

    assert coordinator.cancelled == [task] and not seen and run.done
    assert run.missing()[IDS[0]] == "its batch was cancelled"


@given(st.lists(st.floats(0, 5), max_size=30), st.integers(1, 8))
def test_split_evenly_keeps_the_order_and_makes_at_most_the_pieces_asked(costs: list[float], pieces: int) -> None:
    ids = [f"t.py::x{i}" for i in range(len(costs))]
    estimates = dict(zip(ids, costs, strict=True))

    batches = split_evenly(ids, estimates, pieces)

    assert [n for b in batches for n in b.node_ids] == ids
    assert len(batches) == min(pieces, len(ids)) or not ids
    assert all(b.node_ids for b in batches)


def test_split_evenly_balances_by_estimate() -> None:
    estimates = {"a": 3.0, "b": 1.0, "c": 1.0, "d": 1.0}
    assert [b.node_ids for b in split_evenly(list(estimates), estimates, 2)] == [("a",), ("b", "c", "d")]


def test_durations_come_from_the_runs_hardware_classes_first() -> None:
    coordinator = InMemoryCoordinator(
        recorded={"a": 1.0, "b": 2.0, "c": 3.0},
        recorded_on={"cpu-x": {"a": 10.0, "b": 20.0}, "gpu-y": {"a": 30.0}},
    )

    assert recorded_durations(coordinator, ["a", "b", "c", "d"], ["cpu-x"]) == {"a": 10.0, "b": 20.0, "c": 3.0}
    # Several classes in the run: the mean of those that ran the test; any class for the rest.
    assert recorded_durations(coordinator, ["a", "b", "c"], ["cpu-x", "gpu-y"]) == {"a": 20.0, "b": 20.0, "c": 3.0}
    assert recorded_durations(coordinator, ["a"], []) == {"a": 1.0}


def test_a_batch_whose_pytest_ran_nothing_leaves_its_tests_missing_not_crashed() -> None:
    coordinator = InMemoryCoordinator()
    run, _ = execution(coordinator)
    [task] = run.submit([Batch(tuple(IDS[:2]), 0.1)])
    coordinator.finish(task, {}, status="failed", exit_code=5)
    coordinator.tasks[task]["error"] = "pytest exit code 5 (no tests collected)"

    run.poll_once()

    assert not run.outcomes and run.done and not coordinator.open_ids()
    assert run.why_missing == dict.fromkeys(
        IDS[:2], "its batch ran none of its tests (pytest exit code 5 (no tests collected))"
    )


def test_results_pushed_while_a_batch_runs_are_taken_in_at_once_and_only_once() -> None:
    coordinator = InMemoryCoordinator()
    run, seen = execution(coordinator, reruns=1)
    [task] = run.submit([Batch(tuple(IDS[:3]), 0.15)])

    first = {"test_id": IDS[0], "worker_id": "w1", "raw_data": {"outcome": "passed"}, "execution_time": 0.01}
    second = {"test_id": IDS[1], "worker_id": "w1", "raw_data": {"outcome": "failed"}, "execution_time": 0.01}
    run.feed(task, [first, second])

    assert [(a.node_id, a.final) for a in seen] == [(IDS[0], True), (IDS[1], False)]  # before the batch ends
    [rerun] = [t for t in coordinator.open_ids() if t != task]
    # The batch ends; its read brings the same two again, and the third: each is taken once.
    coordinator.finish(task, {IDS[0]: "passed", IDS[1]: "failed", IDS[2]: "passed"})
    run.poll_once()

    assert [(a.node_id, a.final) for a in seen] == [(IDS[0], True), (IDS[1], False), (IDS[2], True)]
    assert coordinator.open_ids() == [rerun]  # one rerun of the failure, not two
