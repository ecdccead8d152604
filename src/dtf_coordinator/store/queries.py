"""Reads over the results store: listings for the API, durations for sharding, a summary.

Every method is synchronous (run it in a worker thread from async code) and takes its
own pooled connection. Rows come back as dicts keyed by column name, JSON columns
parsed to Python objects and timestamps as timezone-aware UTC datetimes.
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Engine, Select, Table, func, literal_column, select
from sqlalchemy.sql.elements import ColumnElement

from dtf_coordinator.store.durations import id_chunks, kept_samples, median_of
from dtf_coordinator.store.schema import (
    ANY_HARDWARE,
    APPLIED_INDEX_KEY,
    DURATION_SAMPLES,
    DURATION_STATUSES,
    JSON_COLUMNS,
    results,
    store_meta,
    tasks,
    workers,
)
from dtf_coordinator.store.writer import to_utc_naive

Row = dict[str, Any]


class StoreReader:
    """Queries over the store; safe to call from several threads at once."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._dialect = engine.dialect.name

    # -- single rows ----------------------------------------------------------

    def get_result(self, result_id: str) -> Row | None:
        return self._one(results, results.c.result_id == result_id)

    def get_task(self, task_id: str) -> Row | None:
        return self._one(tasks, tasks.c.task_id == task_id)

    def get_worker(self, worker_id: str) -> Row | None:
        return self._one(workers, workers.c.worker_id == worker_id)

    def applied_index(self) -> int:
        """The log index the store has applied up to; 0 for a store never written."""
        with self._engine.connect() as connection:
            value = connection.execute(
                select(store_meta.c.value).where(store_meta.c.key == APPLIED_INDEX_KEY)
            ).scalar_one_or_none()
        return int(value) if value is not None else 0

    def export_results(self) -> list[dict[str, Any]]:
        """Every result row as JSON-ready data, for a snapshot sent to another coordinator."""
        with self._engine.connect() as connection:
            rows = connection.execute(select(results).order_by(results.c.result_id)).mappings().all()
        return [{k: (v.isoformat() if isinstance(v, datetime) else v) for k, v in row.items()} for row in rows]

    # -- listings ---------------------------------------------------------------

    def list_results(
        self,
        *,
        task_id: str | None = None,
        worker_id: str | None = None,
        test_id: str | None = None,
        status: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        offset: int = 0,
        limit: int = 100,
    ) -> tuple[list[Row], int]:
        """One page of results, newest first, and the count of all that match.

        `since` is inclusive and `until` exclusive, both on `timestamp`.
        """
        c = results.c
        where = _conditions(
            (c.task_id, task_id), (c.worker_id, worker_id), (c.test_id, test_id), (c.status, status)
        ) + _between(c.timestamp, since, until)
        return self._page(results, where, (c.timestamp.desc(), c.result_id.desc()), offset, limit)

    def list_tasks(
        self,
        *,
        status: str | None = None,
        type: str | None = None,
        worker_id: str | None = None,
        priority: int | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        offset: int = 0,
        limit: int = 100,
    ) -> tuple[list[Row], int]:
        """One page of tasks, newest `create_time` first, and the count of all that match."""
        c = tasks.c
        where = _conditions(
            (c.status, status), (c.type, type), (c.worker_id, worker_id), (c.priority, priority)
        ) + _between(c.create_time, since, until)
        return self._page(tasks, where, (c.create_time.desc(), c.task_id.desc()), offset, limit)

    def list_workers(self, *, status: str | None = None) -> list[Row]:
        """Every worker the store knows, by `worker_id`."""
        query = select(workers).where(*_conditions((workers.c.status, status))).order_by(workers.c.worker_id)
        with self._engine.connect() as connection:
            return [_row(workers, r) for r in connection.execute(query).mappings()]

    # -- analysis -------------------------------------------------------------

    def test_durations(
        self, test_ids: Sequence[str] | None = None, hardware_id: str | None = None, last_n: int = 5
    ) -> dict[str, float]:
        """Median `execution_time` of each test's `last_n` newest results that passed or failed.

        What duration-aware sharding reads. `hardware_id` narrows the history to one kind
        of hardware; tests without such results are absent from the answer.
        """
        if last_n < 1:
            raise ValueError(f"last_n must be at least 1, got {last_n}")
        if test_ids is not None and not test_ids:
            return {}
        with self._engine.connect() as connection:
            if last_n <= DURATION_SAMPLES:  # kept by the writer: no scan of the history
                kept = kept_samples(connection, test_ids, hardware_id or ANY_HARDWARE)
                return {test: median_of(samples, last_n) for test, _, samples in kept}
            durations: dict[str, float] = {}
            for chunk in id_chunks(test_ids):
                durations.update(self._durations(connection, chunk, hardware_id, last_n))
        return durations

    def _durations(
        self, connection: Connection, test_ids: Sequence[str] | None, hardware_id: str | None, last_n: int
    ) -> dict[str, float]:
        c = results.c
        where = [c.status.in_(DURATION_STATUSES), *_conditions((c.hardware_id, hardware_id))]
        if test_ids is not None:
            where.append(c.test_id.in_(test_ids))
        newest_first = func.row_number().over(partition_by=c.test_id, order_by=(c.timestamp.desc(), c.result_id.desc()))
        ranked = select(c.test_id, c.execution_time, newest_first.label("recency")).where(*where).subquery()
        recent = ranked.c.recency <= last_n
        median = self._percentile(0.5, ranked.c.execution_time)
        if median is not None:
            query = select(ranked.c.test_id, median).where(recent).group_by(ranked.c.test_id)
            return {test: float(value) for test, value in connection.execute(query)}
        samples: dict[str, list[float]] = {}
        for test, seconds in connection.execute(select(ranked.c.test_id, ranked.c.execution_time).where(recent)):
            samples.setdefault(test, []).append(seconds)
        return {test: float(statistics.median(values)) for test, values in samples.items()}

    def summary(self, now: datetime | None = None) -> dict[str, Any]:
        """Counts and timings for a dashboard.

        `tasks_by_status`, `results_by_status`, `workers_by_status`: counts;
        `results_per_hour`: the 24 hours up to `now` (default: the current time), oldest
        first, as `{"hour": <start, UTC>, "count": n}`; `execution_time_by_type`: per task
        type, `count`, `mean`, `p50` and `p95` of its results' `execution_time`;
        `applied_index`.
        """
        now = (now or datetime.now(UTC)).astimezone(UTC)
        last_hour = now.replace(minute=0, second=0, microsecond=0)
        first_hour = last_hour - timedelta(hours=23)
        with self._engine.begin() as connection:
            summary: dict[str, Any] = {
                "tasks_by_status": _counts(connection, tasks.c.status),
                "results_by_status": _counts(connection, results.c.status),
                "workers_by_status": _counts(connection, workers.c.status),
                "results_per_hour": self._per_hour(connection, first_hour, now),
                "execution_time_by_type": self._timings_by_type(connection),
            }
        summary["applied_index"] = self.applied_index()
        return summary

    def _per_hour(self, connection: Connection, first_hour: datetime, now: datetime) -> list[dict[str, Any]]:
        ts = results.c.timestamp
        # Literal arguments, so the SELECT and GROUP BY expressions are identical (PostgreSQL).
        if self._dialect == "sqlite":
            bucket = func.strftime(literal_column("'%Y-%m-%d %H:00:00'"), ts)
        else:
            bucket = func.date_trunc(literal_column("'hour'"), ts)
        query = (
            select(bucket.label("hour"), func.count().label("n"))
            .where(ts >= to_utc_naive(first_hour), ts <= to_utc_naive(now))
            .group_by(bucket)
        )
        counts: dict[datetime, int] = {}
        for hour, n in connection.execute(query):
            start = datetime.fromisoformat(hour) if isinstance(hour, str) else hour
            counts[_aware(start)] = int(n)
        hours = (first_hour + timedelta(hours=i) for i in range(24))
        return [{"hour": hour, "count": counts.get(hour, 0)} for hour in hours]

    def _timings_by_type(self, connection: Connection) -> dict[str, dict[str, float | int]]:
        seconds = results.c.execution_time
        joined = results.join(tasks, tasks.c.task_id == results.c.task_id)
        p50, p95 = self._percentile(0.5, seconds), self._percentile(0.95, seconds)
        if p50 is not None and p95 is not None:
            query = (
                select(tasks.c.type, func.count(), func.avg(seconds), p50, p95)
                .select_from(joined)
                .group_by(tasks.c.type)
            )
            return {
                kind: {"count": int(n), "mean": float(mean), "p50": float(median), "p95": float(high)}
                for kind, n, mean, median, high in connection.execute(query)
            }
        samples: dict[str, list[float]] = {}
        for kind, value in connection.execute(select(tasks.c.type, seconds).select_from(joined)):
            samples.setdefault(kind, []).append(value)
        return {kind: _timings(values) for kind, values in samples.items()}

    def _percentile(self, fraction: float, value: ColumnElement[Any]) -> ColumnElement[Any] | None:
        """A continuous percentile aggregate, or None where the dialect has none (SQLite)."""
        if self._dialect in ("duckdb", "postgresql"):
            return func.percentile_cont(fraction).within_group(value)
        return None

    # -- helpers ----------------------------------------------------------------

    def _one(self, source: Table, condition: ColumnElement[bool]) -> Row | None:
        with self._engine.connect() as connection:
            found = connection.execute(select(source).where(condition)).mappings().first()
        return _row(source, found) if found is not None else None

    def _page(
        self,
        source: Table,
        where: list[ColumnElement[bool]],
        order_by: tuple[ColumnElement[Any], ...],
        offset: int,
        limit: int,
    ) -> tuple[list[Row], int]:
        if offset < 0 or limit < 0:
            raise ValueError(f"offset and limit must not be negative, got {offset} and {limit}")
        page: Select[Any] = select(source).where(*where).order_by(*order_by).offset(offset).limit(limit)
        count = select(func.count()).select_from(source).where(*where)
        # One transaction, so the page and the count see the same snapshot.
        with self._engine.begin() as connection:
            total = int(connection.execute(count).scalar_one())
            rows = [_row(source, r) for r in connection.execute(page).mappings()] if limit else []
        return rows, total


def _conditions(*pairs: tuple[ColumnElement[Any], Any]) -> list[ColumnElement[bool]]:
    return [col == value for col, value in pairs if value is not None]


def _between(col: ColumnElement[Any], since: datetime | None, until: datetime | None) -> list[ColumnElement[bool]]:
    where = []
    if since is not None:
        where.append(col >= to_utc_naive(since))
    if until is not None:
        where.append(col < to_utc_naive(until))
    return where


def _counts(connection: Connection, col: ColumnElement[Any]) -> dict[str, int]:
    query = select(col, func.count()).group_by(col)
    return {str(value): int(n) for value, n in connection.execute(query)}


def _timings(values: list[float]) -> dict[str, float | int]:
    ordered = sorted(values)
    return {
        "count": len(ordered),
        "mean": statistics.fmean(ordered),
        "p50": _interpolate(ordered, 0.5),
        "p95": _interpolate(ordered, 0.95),
    }


def _interpolate(ordered: list[float], fraction: float) -> float:
    """`percentile_cont`: linear interpolation between the closest ranks."""
    position = fraction * (len(ordered) - 1)
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def _aware(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _row(source: Table, mapping: Any) -> Row:
    """A result row as a dict: JSON text parsed, timestamps made aware (UTC)."""
    row = dict(mapping)
    json_columns = JSON_COLUMNS.get(source.name, frozenset())
    for name, value in row.items():
        if value is None:
            continue
        if name in json_columns:
            row[name] = json.loads(value)
        elif isinstance(value, datetime):
            row[name] = _aware(value)
    return row
