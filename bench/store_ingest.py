"""Ingest rate of the results store on a temporary DuckDB file.

Compares the store's write path (rows buffered, then one DataFrame upsert per table
per flush) with row-by-row SQLAlchemy INSERTs, and prints rows per second:

    .venv/bin/python bench/store_ingest.py [--batches 10] [--batch-size 5000] [--row-by-row 500]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from dtf_coordinator.store import Store, open_store
from dtf_coordinator.store.schema import results
from dtf_coordinator.store.writer import to_utc_naive

T0 = datetime(2025, 3, 1, tzinfo=UTC)


def result_rows(count: int) -> list[dict[str, Any]]:
    return [
        {
            "result_id": str(uuid.uuid4()),
            "task_id": str(uuid.uuid4()),
            "worker_id": f"worker-{i % 16}",
            "test_id": f"tests/test_mod_{i % 200}.py::test_{i % 37}",
            "hardware_id": "cpu-x86_64",
            "timestamp": T0 + timedelta(milliseconds=i),
            "metrics": json.dumps({"latency_ms": i % 97, "throughput": 1000 + i % 13}),
            "status": "success" if i % 10 else "failure",
            "execution_time": 0.01 * (i % 300),
            "hardware_metrics": json.dumps({"cpu_percent": 42.0, "rss_mb": 512}),
            "environment": json.dumps({"python": "3.11", "os": "linux"}),
            "raw_data": "{}",
            "metadata": "{}",
        }
        for i in range(count)
    ]


def task_rows(count: int, status: str, index: int) -> list[dict[str, Any]]:
    return [
        {
            "task_id": f"{i:08d}-0000-4000-8000-{uuid.UUID(int=i).hex[-12:]}",
            "type": "pytest",
            "status": status,
            "priority": 5,
            "create_time": T0 + timedelta(milliseconds=i),
            "start_time": None if status == "pending" else T0 + timedelta(seconds=1, milliseconds=i),
            "worker_id": None if status == "pending" else f"worker-{i % 16}",
            "parameters": json.dumps({"tests": [f"tests/test_mod_{i % 200}.py::test_{i % 37}"]}),
            "dependencies": "[]",
            "metadata": "{}",
            "attempts": 0,
            "submitter": "ci",
            "updated_index": index,
        }
        for i in range(count)
    ]


def timed_batches(
    label: str, hand_over: Callable[[list[dict[str, Any]]], None], store: Store, data: list[dict[str, Any]], size: int
) -> None:
    handover = flushing = 0.0
    batches = range(0, len(data), size)
    for b, first in enumerate(batches, 1):
        started = time.perf_counter()
        hand_over(data[first : first + size])
        store.writer.set_applied_index(b)
        handed = time.perf_counter()
        store.writer.flush()
        handover += handed - started
        flushing += time.perf_counter() - handed
    n = len(data)
    print(
        f"StoreWriter {label:<26} {n:>7,} rows in {len(batches)} batches of {size:,}: "
        f"{n / flushing:>9,.0f} rows/s flush, {n / (handover + flushing):>9,.0f} rows/s with hand-over"
    )


def bench_store_writer(path: Path, batches: int, batch_size: int) -> None:
    n = batches * batch_size
    with open_store(f"duckdb:///{path}") as store:
        results_data = result_rows(n)
        timed_batches("results, new:", store.writer.add_results, store, results_data, batch_size)
        timed_batches("results, replayed:", store.writer.add_results, store, results_data, batch_size)
        timed_batches("tasks, new (pending):", store.writer.upsert_tasks, store, task_rows(n, "pending", 1), batch_size)
        timed_batches(
            "tasks, updated (running):", store.writer.upsert_tasks, store, task_rows(n, "running", 2), batch_size
        )


def bench_row_by_row(path: Path, count: int) -> None:
    with open_store(f"duckdb:///{path}") as store:
        rows = result_rows(count)
        for row in rows:
            row["timestamp"] = to_utc_naive(row["timestamp"])
        statement = results.insert()
        started = time.perf_counter()
        for row in rows:
            with store.engine.begin() as connection:
                connection.execute(statement, row)
        elapsed = time.perf_counter() - started
        print(
            f"row-by-row INSERT, one transaction each: {count:>7,} rows: {count / elapsed:>9,.0f} rows/s "
            f"({1000 * elapsed / count:.2f} ms/row)"
        )

        for row in rows:
            row["result_id"] = str(uuid.uuid4())
        started = time.perf_counter()
        with store.engine.begin() as connection:
            for row in rows:
                connection.execute(statement, row)
        elapsed = time.perf_counter() - started
        print(
            f"row-by-row INSERT, one transaction:      {count:>7,} rows: {count / elapsed:>9,.0f} rows/s "
            f"({1000 * elapsed / count:.2f} ms/row)"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batches", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=5_000)
    parser.add_argument("--row-by-row", type=int, default=500)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        bench_store_writer(Path(folder) / "bulk.duckdb", args.batches, args.batch_size)
        bench_row_by_row(Path(folder) / "rows.duckdb", args.row_by_row)


if __name__ == "__main__":
    main()
