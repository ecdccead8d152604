"""The results store's writer: idempotent upserts, bulk flushes, applied_index, crash safety."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from dtf_coordinator.store import Store, open_store, writer
from dtf_coordinator.store.schema import results

T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)


def task_row(n: int, **changes: Any) -> dict[str, Any]:
    row: dict[str, Any] = {
        "task_id": f"task-{n:06d}",
        "type": "pytest",
        "status": "pending",
        "priority": 5,
        "create_time": T0 + timedelta(seconds=n),
        "start_time": None,
        "end_time": None,
        "worker_id": None,
        "parameters": json.dumps({"tests": [f"t{n}"]}),
        "dependencies": "[]",
        "results": None,
        "error": None,
        "metadata": "{}",
        "attempts": 0,
        "submitter": "ci",
        "updated_index": 1,
    }
    return row | changes


def result_row(n: int, **changes: Any) -> dict[str, Any]:
    row: dict[str, Any] = {
        "result_id": f"result-{n:06d}",
        "task_id": f"task-{n % 100:06d}",
        "worker_id": "w1",
        "test_id": f"test_{n % 50}",
        "hardware_id": "cpu",
        "timestamp": T0 + timedelta(milliseconds=n),
        "metrics": json.dumps({"n": n}),
        "status": "success",
        "execution_time": 0.5,
        "hardware_metrics": "{}",
        "environment": "{}",
        "raw_data": "{}",
        "metadata": "{}",
    }
    return row | changes


def worker_row(name: str, **changes: Any) -> dict[str, Any]:
    row: dict[str, Any] = {"worker_id": name, "status": "online", "hardware_id": "cpu", "last_seen": T0}
    return row | changes


@pytest.fixture(params=["duckdb", "duckdb-values", "sqlite"])
def store(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Store]:
    """Each DuckDB write path on its own: DataFrame upserts for every flush ("duckdb"), and
    multi-row VALUES upserts for every flush but the 20,000-row one ("duckdb-values")."""
    dialect = request.param.split("-")[0]
    monkeypatch.setattr(writer, "SMALL_FLUSH_ROWS", 1_000 if request.param == "duckdb-values" else 0)
    with open_store(f"{dialect}:///{tmp_path / 'store.db'}") as opened:
        yield opened


def count(store: Store, table: str) -> int:
    with store.engine.connect() as connection:
        return int(connection.execute(text(f"SELECT count(*) FROM {table}")).scalar_one())


def test_flushing_the_same_rows_twice_keeps_one_row_each_with_the_latest_values(store: Store) -> None:
    for _ in range(2):
        store.writer.upsert_tasks([task_row(i) for i in range(10)])
        store.writer.add_results([result_row(i) for i in range(10)])
        store.writer.upsert_workers([worker_row("w1")])
        store.writer.flush()
    assert (count(store, "tasks"), count(store, "results"), count(store, "workers")) == (10, 10, 1)

    store.writer.upsert_tasks([task_row(3, status="running", worker_id="w1", updated_index=2)])
    store.writer.add_results([result_row(3, status="failure", execution_time=9.0)])
    store.writer.upsert_workers([worker_row("w1", status="busy", current_task="task-000003")])
    store.writer.flush()

    task = store.reader.get_task("task-000003")
    result = store.reader.get_result("result-000003")
    worker = store.reader.get_worker("w1")
    assert task is not None and (task["status"], task["worker_id"]) == ("running", "w1")
    assert result is not None and (result["status"], result["execution_time"]) == ("failure", 9.0)
    assert worker is not None and (worker["status"], worker["current_task"]) == ("busy", "task-000003")
    assert (count(store, "tasks"), count(store, "results"), count(store, "workers")) == (10, 10, 1)


def test_a_batch_keeps_the_last_row_per_key(store: Store) -> None:
    store.writer.upsert_tasks([task_row(1, status=s, updated_index=i) for i, s in enumerate(["pending", "running"])])
    store.writer.upsert_tasks([task_row(1, status="completed", updated_index=7)])
    assert store.writer.pending_rows() == 1
    assert store.writer.flush() == 1
    assert store.writer.pending_rows() == 0
    task = store.reader.get_task("task-000001")
    assert task is not None and (task["status"], task["updated_index"]) == ("completed", 7)


def test_a_replayed_older_task_row_never_overwrites_a_newer_one(store: Store) -> None:
    store.writer.upsert_tasks([task_row(1, status="completed", updated_index=50)])
    store.writer.flush()
    # A restart replays entries after the last snapshot, which precede what the store holds.
    store.writer.upsert_tasks([task_row(1, status="running", updated_index=30)])
    store.writer.flush()
    task = store.reader.get_task("task-000001")
    assert task is not None and (task["status"], task["updated_index"]) == ("completed", 50)


def test_values_round_trip_with_json_parsed_and_times_in_utc(store: Store) -> None:
    plus_two = timezone(timedelta(hours=2))
    store.writer.upsert_tasks(
        [task_row(1, create_time=datetime(2025, 3, 1, 14, 0, tzinfo=plus_two), results={"passed": 3}, error=None)]
    )
    store.writer.flush()
    task = store.reader.get_task("task-000001")
    assert task is not None
    assert task["create_time"] == datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
    assert task["create_time"].tzinfo is UTC
    assert task["parameters"] == {"tests": ["t1"]}
    assert task["dependencies"] == []
    assert task["results"] == {"passed": 3}
    assert task["start_time"] is None and task["error"] is None


def test_twenty_thousand_results_flush_in_one_go(store: Store) -> None:
    store.writer.add_results([result_row(i) for i in range(20_000)])
    store.writer.set_applied_index(20_000)
    assert store.writer.flush() == 20_000
    rows, total = store.reader.list_results(limit=5)
    assert total == count(store, "results") == 20_000
    assert [r["result_id"] for r in rows] == [f"result-{i:06d}" for i in range(19_999, 19_994, -1)]
    assert store.reader.applied_index() == 20_000


def test_rows_that_break_the_schema_are_refused_when_handed_over(store: Store) -> None:
    with pytest.raises(ValueError, match="unknown column"):
        store.writer.upsert_tasks([task_row(1, colour="red")])
    with pytest.raises(ValueError, match="missing required"):
        store.writer.add_results([result_row(1, test_id=None)])
    with pytest.raises(ValueError, match="expected a datetime"):
        store.writer.upsert_workers([worker_row("w1", last_seen="yesterday")])
    with pytest.raises(ValueError, match="expected an int"):
        store.writer.upsert_tasks([task_row(1, priority="high")])
    with pytest.raises(ValueError, match="expected a number"):
        store.writer.add_results([result_row(1, execution_time="slow")])
    with pytest.raises(ValueError, match="negative"):
        store.writer.set_applied_index(-1)
    assert store.writer.pending_rows() == 0


def test_applied_index_survives_reopening(tmp_path: Path) -> None:
    url = f"duckdb:///{tmp_path / 'store.duckdb'}"
    with open_store(url) as store:
        assert store.reader.applied_index() == 0
        store.writer.upsert_tasks([task_row(1)])
        store.writer.set_applied_index(41)
        store.writer.flush()
        store.writer.set_applied_index(42)  # written by close()
    with open_store(url) as store:
        assert store.reader.applied_index() == 42
        assert store.reader.get_task("task-000001") is not None


def test_a_failed_flush_keeps_its_rows_for_the_next_one(store: Store) -> None:
    store.writer.upsert_tasks([task_row(1)])
    store.writer.add_results([result_row(1), result_row(2)])
    store.writer.set_applied_index(5)
    with store.engine.begin() as connection:
        results.drop(connection)
    with pytest.raises(Exception, match="results"):
        store.writer.flush()
    assert store.writer.pending_rows() == 3
    assert store.reader.get_task("task-000001") is None  # the transaction rolled back whole
    assert store.reader.applied_index() == 0

    store.writer.add_results([result_row(2, status="failure")])  # handed over meanwhile: wins
    with store.engine.begin() as connection:
        results.create(connection)
    assert store.writer.flush() == 3
    second = store.reader.get_result("result-000002")
    assert second is not None and second["status"] == "failure"
    assert store.reader.applied_index() == 5


def test_rows_handed_over_while_flushing_are_all_written(store: Store) -> None:
    done = threading.Event()

    def flush_until_done() -> None:
        while not done.is_set():
            store.writer.flush()

    flusher = threading.Thread(target=flush_until_done)
    flusher.start()
    try:
        for batch in range(20):
            store.writer.add_results([result_row(batch * 100 + i) for i in range(100)])
            store.writer.set_applied_index(batch + 1)
    finally:
        done.set()
        flusher.join()
    store.writer.flush()
    assert count(store, "results") == 2_000
    assert store.reader.applied_index() == 20


CHILD_PRELUDE = """
import os, sys
from datetime import UTC, datetime, timedelta
from dtf_coordinator.store import open_store

T0 = datetime(2025, 3, 1, tzinfo=UTC)

def results(first, n):
    return [
        {"result_id": f"r{i}", "task_id": "t", "test_id": f"test_{i % 50}", "status": "success",
         "timestamp": T0 + timedelta(milliseconds=i), "execution_time": 1.0}
        for i in range(first, first + n)
    ]

store = open_store(sys.argv[1])
"""


def run_child(body: str, url: str) -> subprocess.Popen[str]:
    code = CHILD_PRELUDE + textwrap.dedent(body)
    return subprocess.Popen([sys.executable, "-c", code, url], stdout=subprocess.PIPE, text=True)


def test_a_coordinator_that_has_registered_workers_only_has_not_imported_pandas(tmp_path: Path) -> None:
    # Half a second of a coordinator's start on a small machine: workers registering are
    # written without it (the first tasks start its import in the background).
    child = run_child(
        """
        store.writer.upsert_workers([{"worker_id": "w1", "status": "online", "hardware_id": "cpu", "last_seen": T0}])
        store.writer.set_applied_index(3)
        store.writer.flush()
        assert store.reader.get_worker("w1")["status"] == "online"
        print("pandas" in sys.modules)
        """,
        f"duckdb:///{tmp_path / 'store.duckdb'}",
    )
    out, _ = child.communicate(timeout=60)
    assert child.returncode == 0
    assert out.strip() == "False"


def test_rows_flushed_before_a_crash_are_readable_after_it(tmp_path: Path) -> None:
    url = f"duckdb:///{tmp_path / 'store.duckdb'}"
    child = run_child(
        """
        store.writer.add_results(results(0, 5_000))
        store.writer.set_applied_index(77)
        store.writer.flush()
        os._exit(0)  # no close, no checkpoint
        """,
        url,
    )
    assert child.wait(timeout=60) == 0
    with open_store(url) as store:
        assert store.reader.list_results(limit=0)[1] == 5_000
        assert store.reader.applied_index() == 77


def test_a_flush_killed_midway_leaves_all_or_nothing(tmp_path: Path) -> None:
    url = f"duckdb:///{tmp_path / 'store.duckdb'}"
    # The child times a first flush, then starts a second one of the same size, which
    # the parent kills about halfway through (past building the DataFrame, inside the
    # INSERT or the commit).
    child = run_child(
        """
        import time
        store.writer.add_results(results(0, 100_000))
        store.writer.set_applied_index(1)
        started = time.perf_counter()
        store.writer.flush()
        print(time.perf_counter() - started, flush=True)
        store.writer.add_results(results(100_000, 100_000))
        store.writer.set_applied_index(2)
        print("flushing", flush=True)
        store.writer.flush()
        time.sleep(60)
        """,
        url,
    )
    assert child.stdout is not None
    first_flush = float(child.stdout.readline())
    assert child.stdout.readline().strip() == "flushing"
    threading.Event().wait(first_flush * 0.6)
    os.kill(child.pid, signal.SIGKILL)
    assert child.wait(timeout=60) == -signal.SIGKILL

    with open_store(url) as store:
        total = store.reader.list_results(limit=0)[1]
        applied = store.reader.applied_index()
    assert (total, applied) in {(100_000, 1), (200_000, 2)}
