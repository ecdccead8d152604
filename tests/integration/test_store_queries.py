"""The results store's reader: filters, pagination, durations for sharding, the dashboard summary."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from dtf_coordinator.store import Store, open_store

T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)


def task_row(n: int, **changes: Any) -> dict[str, Any]:
    row: dict[str, Any] = {
        "task_id": f"task-{n:04d}",
        "type": "pytest",
        "status": "pending",
        "priority": 5,
        "create_time": T0 + timedelta(minutes=n),
        "attempts": 0,
        "updated_index": n,
    }
    return row | changes


def result_row(n: int, **changes: Any) -> dict[str, Any]:
    row: dict[str, Any] = {
        "result_id": f"result-{n:04d}",
        "task_id": "task-0000",
        "worker_id": "w1",
        "test_id": "test_a",
        "hardware_id": "cpu",
        "timestamp": T0 + timedelta(minutes=n),
        "status": "success",
        "execution_time": 1.0,
    }
    return row | changes


@pytest.fixture(params=["duckdb", "sqlite"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    with open_store(f"{request.param}:///{tmp_path / 'store.db'}") as opened:
        yield opened


def ids(rows: list[dict[str, Any]], key: str) -> list[int]:
    return [int(row[key].rsplit("-", 1)[1]) for row in rows]


def test_list_results_filters_newest_first_with_total_count(store: Store) -> None:
    store.writer.add_results(
        [
            result_row(
                n,
                task_id=f"task-{n % 3:04d}",
                worker_id=f"w{n % 2}",
                test_id=f"test_{n % 5}",
                status="failure" if n % 4 == 0 else "success",
            )
            for n in range(60)
        ]
    )
    store.writer.flush()

    rows, total = store.reader.list_results(limit=3)
    assert (ids(rows, "result_id"), total) == ([59, 58, 57], 60)

    rows, total = store.reader.list_results(task_id="task-0001", worker_id="w1", limit=100)
    expected = [n for n in range(59, -1, -1) if n % 3 == 1 and n % 2 == 1]
    assert (ids(rows, "result_id"), total) == (expected, len(expected))

    rows, total = store.reader.list_results(test_id="test_2", status="failure")
    expected = [n for n in range(59, -1, -1) if n % 5 == 2 and n % 4 == 0]
    assert (ids(rows, "result_id"), total) == (expected, len(expected))

    rows, total = store.reader.list_results(since=T0 + timedelta(minutes=10), until=T0 + timedelta(minutes=20))
    assert (ids(rows, "result_id"), total) == (list(range(19, 9, -1)), 10)


def test_list_results_pages_through_everything_once(store: Store) -> None:
    store.writer.add_results([result_row(n) for n in range(25)])
    store.writer.flush()
    seen: list[int] = []
    for offset in range(0, 30, 10):
        rows, total = store.reader.list_results(offset=offset, limit=10)
        assert total == 25
        seen += ids(rows, "result_id")
    assert seen == list(range(24, -1, -1))
    assert store.reader.list_results(offset=100, limit=10) == ([], 25)
    with pytest.raises(ValueError):
        store.reader.list_results(limit=-1)


def test_list_tasks_filters_and_pages(store: Store) -> None:
    store.writer.upsert_tasks(
        [
            task_row(
                n,
                status=["pending", "running", "completed"][n % 3],
                type="command" if n % 2 else "pytest",
                worker_id=None if n % 3 == 0 else f"w{n % 2}",
                priority=n % 4,
            )
            for n in range(40)
        ]
    )
    store.writer.flush()

    rows, total = store.reader.list_tasks(limit=5, offset=5)
    assert (ids(rows, "task_id"), total) == ([34, 33, 32, 31, 30], 40)

    rows, total = store.reader.list_tasks(status="completed", type="command")
    expected = [n for n in range(39, -1, -1) if n % 3 == 2 and n % 2 == 1]
    assert (ids(rows, "task_id"), total) == (expected, len(expected))

    rows, total = store.reader.list_tasks(worker_id="w0", priority=2)
    expected = [n for n in range(39, -1, -1) if n % 3 != 0 and n % 2 == 0 and n % 4 == 2]
    assert (ids(rows, "task_id"), total) == (expected, len(expected))

    rows, total = store.reader.list_tasks(since=T0 + timedelta(minutes=38))
    assert (ids(rows, "task_id"), total) == ([39, 38], 2)
    assert store.reader.list_tasks(until=T0)[1] == 0


def test_test_durations_take_the_median_of_the_last_n_passes_and_failures(store: Store) -> None:
    times_a = [100.0, 100.0, 1.0, 2.0, 3.0, 4.0, 50.0]  # oldest first; the newest five: 1, 2, 3, 4, 50
    rows = [result_row(n, test_id="test_a", execution_time=t) for n, t in enumerate(times_a)]
    rows += [
        result_row(10, test_id="test_b", execution_time=8.0, status="failure"),
        result_row(11, test_id="test_b", execution_time=6.0),
        result_row(12, test_id="test_b", execution_time=999.0, status="partial"),
        result_row(13, test_id="test_c", execution_time=7.0, hardware_id="cuda"),
        result_row(14, test_id="test_c", execution_time=1.0),
    ]
    store.writer.add_results(rows)
    store.writer.flush()

    assert store.reader.test_durations() == {"test_a": 3.0, "test_b": 7.0, "test_c": 4.0}
    assert store.reader.test_durations(last_n=2) == {"test_a": 27.0, "test_b": 7.0, "test_c": 4.0}
    assert store.reader.test_durations(["test_b", "test_c", "test_z"], hardware_id="cuda") == {"test_c": 7.0}
    assert store.reader.test_durations([]) == {}


def test_test_durations_count_a_result_written_twice_once(store: Store) -> None:
    rows = [result_row(n, execution_time=t) for n, t in enumerate([1.0, 2.0, 9.0])]
    store.writer.add_results(rows)
    store.writer.flush()
    store.writer.add_results(rows[2:])  # a replay of the log hands the same result again
    store.writer.flush()

    assert store.reader.test_durations() == {"test_a": 2.0}  # not the median of 1, 2, 9, 9


def test_test_durations_over_more_runs_than_kept_read_the_history(store: Store) -> None:
    times = [1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 10.0, 10.0, 10.0]  # oldest first
    store.writer.add_results([result_row(n, execution_time=t) for n, t in enumerate(times)])
    store.writer.flush()

    assert store.reader.test_durations() == {"test_a": 10.0}  # the newest five: 1, 1, 10, 10, 10
    assert store.reader.test_durations(last_n=9) == {"test_a": 1.0}


def test_test_durations_for_many_test_ids(store: Store) -> None:
    store.writer.add_results([result_row(n, test_id=f"t{n % 700}", execution_time=float(n % 700)) for n in range(1400)])
    store.writer.flush()
    wanted = [f"t{i}" for i in range(700)]
    durations = store.reader.test_durations(wanted, last_n=1)
    assert durations == {f"t{i}": float(i) for i in range(700)}


def test_summary_counts_and_timings(store: Store) -> None:
    store.writer.upsert_tasks([task_row(1, type="pytest", status="completed"), task_row(2, type="benchmark")])
    store.writer.add_results(
        [result_row(n, task_id="task-0001", execution_time=float(n + 1)) for n in range(20)]
        + [result_row(100, task_id="task-0002", execution_time=5.0, status="failure")]
        + [result_row(200, task_id="task-0002", timestamp=T0 - timedelta(days=3), status="partial")]
    )
    store.writer.upsert_workers([{"worker_id": "w1", "status": "busy", "last_seen": T0}])
    store.writer.set_applied_index(12)
    store.writer.flush()

    summary = store.reader.summary(now=T0 + timedelta(minutes=110))

    assert summary["tasks_by_status"] == {"completed": 1, "pending": 1}
    assert summary["results_by_status"] == {"success": 20, "failure": 1, "partial": 1}
    assert summary["workers_by_status"] == {"busy": 1}
    assert summary["applied_index"] == 12
    per_hour = summary["results_per_hour"]
    assert len(per_hour) == 24
    assert per_hour[0]["hour"] == T0 + timedelta(hours=-22)
    assert [(h["hour"], h["count"]) for h in per_hour[-3:]] == [
        (T0 - timedelta(hours=1), 0),
        (T0, 20),
        (T0 + timedelta(hours=1), 1),
    ]
    timings = summary["execution_time_by_type"]
    assert timings["pytest"] == pytest.approx({"count": 20, "mean": 10.5, "p50": 10.5, "p95": 19.05})
    assert timings["benchmark"] == pytest.approx({"count": 2, "mean": 3.0, "p50": 3.0, "p95": 4.8})


def test_an_empty_store_reads_as_empty(store: Store) -> None:
    assert store.reader.get_result("nope") is None
    assert store.reader.list_results() == ([], 0)
    assert store.reader.list_tasks() == ([], 0)
    assert store.reader.list_workers() == []
    assert store.reader.test_durations() == {}
    summary = store.reader.summary()
    assert summary["tasks_by_status"] == {} and summary["execution_time_by_type"] == {}
    assert sum(h["count"] for h in summary["results_per_hour"]) == 0
    assert summary["applied_index"] == 0
