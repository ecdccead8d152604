"""Following a run's batches against an in-memory coordinator: crashes, yields, and a
prediction meeting its collection."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dtf.run.config import RunConfig
from dtf.run.execution import PRIORITY, PRIORITY_REMAINDER, Execution, split_evenly
from dtf.run.plan import Batch
from dtf.run.runner import recorded_durations


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

    def finish(self, task_id: str, outcomes: dict[str, str], *, status: str = "completed", **summary: Any) -> None:
        """End a task with one result per test (`outcome` by node id)."""
        self.results[task_id] = [
            {
                "test_id": node_id,
                "status": {"passed": "success", "failed": "failure", "skipped": "partial"}[outcome],
                "execution_time": 0.01,
                "worker_id": "w1",
                "raw_data": {"outcome": outcome},
            }
            for node_id, outcome in outcomes.items()
        ]
        counted = {k: sum(o == v for o in outcomes.values()) for k, v in (("passed", "passed"), ("failed", "failed"))}
        self.tasks[task_id].update(status=status, worker_id="w1", results={**counted, **summary})

    def open_ids(self) -> list[str]:
        return [t for t, body in self.tasks.items() if body["status"] == "pending"]

    def node_ids(self, task_id: str) -> list[str]:
        return list(self.tasks[task_id]["parameters"]["node_ids"])


IDS = [f"t/test_{f}.py::test_{i}" for f in "ab" for i in range(4)]


def execution(coordinator: InMemoryCoordinator, ids: list[str] = IDS, **fields: Any) -> Execution:
    config = RunConfig(workers=2, pytest_args=[], cwd=Path("/p"), data_dir=Path("/p/.dtf"))
    return Execution(
        coordinator, config, {n: i for i, n in enumerate(ids)}, dict.fromkeys(ids, 0.05), n_workers=2, **fields
    )


def test_a_crashed_batch_blames_its_first_missing_test_and_runs_the_rest_again() -> None:
    coordinator = InMemoryCoordinator()
    run = execution(coordinator)
    [task] = run.submit([Batch(tuple(IDS[:4]), 0.2)])

    coordinator.finish(task, {IDS[0]: "passed"}, status="failed", exit_code=-11, stderr_tail="Segmentation fault")
    run.poll_once()

    assert run.outcomes[IDS[0]].outcome == "passed"
    crashed = run.outcomes[IDS[1]]
    assert crashed.failed and crashed.message == "crashed: pytest exited with code -11 while this test was running"
    assert "Segmentation fault" in crashed.details
    [again] = coordinator.open_ids()
    assert coordinator.node_ids(again) == IDS[2:4]


def test_a_yielded_batch_shares_its_remaining_tests_ahead_of_the_queue() -> None:
    coordinator = InMemoryCoordinator()
    run = execution(coordinator, guessed=set(IDS))
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
    run = execution(coordinator, guessed={IDS[4], IDS[7]})
    batches = [Batch(tuple(IDS[:4]), 0.2), Batch(tuple(IDS[4:]), 0.2), Batch((IDS[7],), 1)]
    recorded, guessed, few = run.submit(batches)

    assert "yield_after" not in coordinator.tasks[recorded]["parameters"]
    assert coordinator.tasks[guessed]["parameters"]["yield_after"] == pytest.approx(run.yield_after(0.2))
    assert "yield_after" not in coordinator.tasks[few]["parameters"]  # too few tests to share


def test_results_named_by_their_pytest_argument_count_for_their_node_id() -> None:
    coordinator = InMemoryCoordinator()
    node_id = "sub/test_x.py::test_a"  # rootdir above the run's directory
    run = execution(coordinator, [node_id, "sub/test_x.py::test_b"], arguments={node_id: "test_x.py::test_a"})
    [task] = run.submit([Batch((node_id,), 0.1)])
    assert coordinator.node_ids(task) == ["test_x.py::test_a"]

    coordinator.finish(task, {"test_x.py::test_a": "passed"})
    run.poll_once()

    assert run.outcomes[node_id].node_id == node_id and run.done


@pytest.mark.parametrize(
    ("args", "named"),
    [
        ([], ["t/test_a.py", IDS[4], IDS[5]]),
        (["-q", "--tb=short"], ["t/test_a.py", IDS[4], IDS[5]]),
        (["-k", "not slow"], IDS[:6]),
        (["-mslow"], IDS[:6]),
        (["t/test_a.py::test_1"], IDS[:6]),
    ],
)
def test_a_batch_holding_every_test_of_a_file_names_the_file(args: list[str], named: list[str]) -> None:
    """Unless the user's arguments may select fewer of a file's tests than it holds."""
    coordinator = InMemoryCoordinator()
    run = execution(coordinator)
    run.config = replace(run.config, pytest_args=args)

    [task] = run.submit([Batch(tuple(IDS[:6]), 0.3)])

    assert coordinator.node_ids(task) == named


# -- a prediction meeting its collection ---------------------------------------------


def test_a_failed_batch_of_a_prediction_waits_for_the_collection() -> None:
    coordinator = InMemoryCoordinator()
    run = execution(coordinator, verified=False)
    [task] = run.submit([Batch(tuple(IDS[:3]), 0.15)])
    coordinator.finish(task, {IDS[0]: "passed"}, status="failed", exit_code=4)
    run.poll_once()

    assert IDS[1] not in run.outcomes and not coordinator.open_ids()  # not judged yet
    assert not run.done

    assert run.verify(IDS, {}) == []  # the prediction holds: judged now, as any crash

    assert run.outcomes[IDS[1]].message.startswith("crashed: pytest exited with code 4")
    [again] = coordinator.open_ids()
    assert coordinator.node_ids(again) == [IDS[2]]


def test_batches_of_whole_files_confirm_a_prediction_without_a_collection() -> None:
    coordinator = InMemoryCoordinator()
    run = execution(coordinator, verified=False)
    a, b = IDS[:4], IDS[4:]
    assert run.names_whole_files([Batch(tuple(a), 0.2), Batch(tuple(b), 0.2)])
    run.confirming = True
    first, second = run.submit([Batch(tuple(a), 0.2), Batch(tuple(b), 0.2)])
    assert coordinator.node_ids(first) == ["t/test_a.py"]  # named whole: its pytest collects the file

    coordinator.finish(first, dict.fromkeys(a, "passed"), exit_code=0, collected=4)
    run.poll_once()
    assert not run.verified  # test_b.py is not seen yet
    coordinator.finish(
        second, {**dict.fromkeys(b[:3], "passed"), b[3]: "failed"}, status="failed", exit_code=1, collected=4
    )
    run.poll_once()

    assert run.verified and not run.needs_collection and run.done
    assert len(run.outcomes) == 8


@pytest.mark.parametrize(
    ("reported", "summary"),
    [
        ([*IDS[:4], "t/test_a.py::test_new"], {"exit_code": 0, "collected": 5}),  # the file holds a new test
        (IDS[:3], {"exit_code": 0, "collected": 3}),  # one test is gone
        (IDS[:2], {"exit_code": -11, "collected": 4}),  # the batch crashed
        (IDS[:2], {"exit_code": 0, "collected": 4, "yielded": True}),  # it yielded
        (IDS[:4], {"exit_code": 0}),  # a worker that does not say what it collected
    ],
)
def test_a_batch_that_cannot_confirm_its_files_sends_the_run_to_its_collection(
    reported: list[str], summary: dict[str, Any]
) -> None:
    coordinator = InMemoryCoordinator()
    run = execution(coordinator, verified=False, confirming=True)
    first, _ = run.submit([Batch(tuple(IDS[:4]), 0.2), Batch(tuple(IDS[4:]), 0.2)])

    coordinator.finish(first, dict.fromkeys(reported, "passed"), **summary)
    run.poll_once()

    assert run.needs_collection and not run.verified


def test_a_batch_of_part_of_a_file_does_not_confirm_it() -> None:
    coordinator = InMemoryCoordinator()
    run = execution(coordinator, verified=False, confirming=True)
    assert not run.names_whole_files([Batch(tuple(IDS[:2]), 0.1), Batch(tuple(IDS[2:]), 0.3)])
    part, _ = run.submit([Batch(tuple(IDS[:2]), 0.1), Batch(tuple(IDS[2:]), 0.3)])

    coordinator.finish(part, dict.fromkeys(IDS[:2], "passed"), exit_code=0, collected=2)
    run.poll_once()

    assert not run.verified and not run.needs_collection  # neither confirmed nor refuted


def test_a_prediction_that_holds_in_another_order_changes_nothing() -> None:
    coordinator = InMemoryCoordinator()
    run = execution(coordinator, verified=False)
    run.submit([Batch(tuple(IDS), 0.4)])

    assert run.verify(list(reversed(IDS)), {}) == []
    assert run.verified and coordinator.cancelled == [] and len(run.open) == 1


def test_a_prediction_that_differs_is_replaced_by_the_collection() -> None:
    coordinator = InMemoryCoordinator()
    run = execution(coordinator, verified=False)
    done, running = run.submit([Batch((IDS[0], IDS[1]), 0.1), Batch(tuple(IDS[2:]), 0.3)])
    coordinator.finish(done, {IDS[0]: "passed", IDS[1]: "failed"})
    run.poll_once()
    collected = [IDS[0], *IDS[2:], "t/test_c.py::test_new"]  # IDS[1] is gone, test_new is new

    todo = run.verify(collected, {})

    assert todo == [*IDS[2:], "t/test_c.py::test_new"]  # IDS[0] keeps its result
    assert set(run.outcomes) == {IDS[0]}
    assert coordinator.cancelled == [running] and not run.open
    assert list(run.order) == collected


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
    run = execution(coordinator)
    [task] = run.submit([Batch(tuple(IDS[:2]), 0.1)])
    coordinator.finish(task, {}, status="failed", exit_code=5)
    coordinator.tasks[task]["error"] = "pytest exit code 5 (no tests collected)"

    run.poll_once()

    assert not run.outcomes and run.done and not coordinator.open_ids()
    assert run.why_missing == dict.fromkeys(
        IDS[:2], "its batch ran none of its tests (pytest exit code 5 (no tests collected))"
    )
