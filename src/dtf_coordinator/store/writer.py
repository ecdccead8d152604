"""Batched, idempotent writes into the results store.

The coordinator applies committed log entries and hands the writer the rows they
produced (`upsert_tasks`, `add_results`, `upsert_workers`) together with the index
of the last applied entry (`set_applied_index`). The writer only buffers; `flush()`
writes everything buffered in one transaction, so the store's `applied_index` and
the rows it covers always land together. After a crash, the coordinator replays the
log from its last snapshot and hands the same rows again: every write is an upsert
keyed by id, so a replay never duplicates, and a task row never goes back to an
older version (its `updated_index` only moves forward).

On DuckDB a flush builds one pandas DataFrame per table and runs one
`INSERT ... SELECT ... ON CONFLICT DO UPDATE` per table over it (bulk appends are what
DuckDB is fast at). A flush of a few rows (`SMALL_FLUSH_ROWS`) is instead one multi-row
`INSERT ... VALUES` upsert per table, so a coordinator that has only registered workers
has not paid half a second of its start for importing pandas; the first tasks start
that import in the background, while they run. On other dialects a flush runs the
same upsert as an executemany.

Row dicts use the column names of `schema.py` as keys. Datetimes are timezone-aware
(a naive datetime is taken as UTC) or None; JSON columns hold JSON text (anything
else is serialised with `json.dumps`). A missing optional column is written as NULL;
an unknown key, a missing required one or a value of the wrong type raises
`ValueError` when the row is handed over, so that no row can make every later
`flush()` fail.
"""

from __future__ import annotations

import importlib
import json
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, Engine, Select, Table, column, select, table
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.sql.expression import ColumnClause

from dtf_coordinator.store.durations import kept_samples
from dtf_coordinator.store.schema import (
    ANY_HARDWARE,
    APPLIED_INDEX_KEY,
    DURATION_SAMPLES,
    DURATION_STATUSES,
    JSON_COLUMNS,
    results,
    store_meta,
    tasks,
    test_durations,
    workers,
)

if TYPE_CHECKING:
    import pandas as pd

Row = dict[str, Any]
# Up to this many rows a flush is one multi-row VALUES upsert per table, which needs no
# pandas. Measured with results and tasks on a 2-core machine: 6 rows each flushed in
# 30 ms (DataFrames: 40 ms), but 64 rows each took 151 ms (DataFrames: 41 ms).
SMALL_FLUSH_ROWS = 16
# duckdb-engine compiles PostgreSQL's INSERT ... ON CONFLICT.
UpsertInsert = postgresql.Insert | sqlite.Insert


@dataclass(frozen=True)
class _TableSpec:
    table: Table
    key: str
    keys: tuple[str, ...]
    columns: tuple[str, ...]
    required: frozenset[str]
    datetimes: frozenset[str]
    integers: frozenset[str]
    floats: frozenset[str]
    json: frozenset[str]
    # Column a stored row must not be ahead of for an upsert to replace it.
    version: str | None = None

    @classmethod
    def of(cls, t: Table, version: str | None = None) -> _TableSpec:
        return cls(
            table=t,
            key=next(iter(t.primary_key.columns)).name,
            keys=tuple(c.name for c in t.primary_key.columns),
            columns=tuple(c.name for c in t.columns),
            required=frozenset(c.name for c in t.columns if not c.nullable),
            datetimes=frozenset(c.name for c in t.columns if c.type.python_type is datetime),
            integers=frozenset(c.name for c in t.columns if c.type.python_type is int),
            floats=frozenset(c.name for c in t.columns if c.type.python_type is float),
            json=JSON_COLUMNS.get(t.name, frozenset()),
            version=version,
        )


_TASKS = _TableSpec.of(tasks, version="updated_index")
_RESULTS = _TableSpec.of(results)
_WORKERS = _TableSpec.of(workers)
_SPECS = (_TASKS, _RESULTS, _WORKERS)
_DURATIONS = _TableSpec.of(test_durations)


def to_utc_naive(value: datetime | None) -> datetime | None:
    """The UTC wall time of `value` without tzinfo (the store's timestamp convention)."""
    if value is None or value.tzinfo is None:
        return value
    return value.astimezone(UTC).replace(tzinfo=None)


class StoreWriter:
    """Buffers rows from applied commands and writes them in one transaction per flush.

    Thread-safe: rows may be handed over from one thread while another flushes.
    Flushes are serialised; rows handed over during a flush go into the next one.
    If a flush fails, its rows return to the buffer (rows handed over meanwhile win)
    and the error propagates, so the next flush retries them.
    """

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._dialect = engine.dialect.name
        self._insert = _dialect_insert(self._dialect)
        self._lock = threading.Lock()
        self._flush_lock = threading.Lock()
        self._buffers: dict[str, dict[Any, tuple[Any, ...]]] = {s.table.name: {} for s in _SPECS}
        self._applied_index: int | None = None
        self._pandas_import: threading.Thread | None = None

    # -- handing rows over -------------------------------------------------

    def upsert_tasks(self, rows: Iterable[Mapping[str, Any]]) -> None:
        """Buffer task rows; a later row for the same `task_id` replaces an earlier one."""
        if self._buffer(_TASKS, rows):
            self._expect_bulk()

    def add_results(self, rows: Iterable[Mapping[str, Any]]) -> None:
        """Buffer result rows, keyed by `result_id` (a repeated id updates, never duplicates)."""
        if self._buffer(_RESULTS, rows):
            self._expect_bulk()

    def _expect_bulk(self) -> None:
        """Tasks mean results to come, in bulk, and bulk flushes need pandas (half a second to
        import): import it now, beside the tasks' work, rather than in the flush that needs
        it. That flush is what a client reading a finished task's results waits for."""
        if self._dialect == "duckdb" and self._pandas_import is None:
            thread = threading.Thread(target=importlib.import_module, args=("pandas",), name="dtf-pandas", daemon=True)
            thread.start()
            # Only once started: a flush on another thread joins whatever it finds here.
            self._pandas_import = thread

    def _await_pandas(self) -> None:
        """Let the background import finish rather than import pandas beside it: two threads
        importing pandas (and DuckDB reaching for it) at once is asking for an import-lock
        deadlock, which would hang every later flush."""
        if self._pandas_import is not None:
            self._pandas_import.join()

    def upsert_workers(self, rows: Iterable[Mapping[str, Any]]) -> None:
        """Buffer worker rows; a later row for the same `worker_id` replaces an earlier one."""
        self._buffer(_WORKERS, rows)

    def set_applied_index(self, index: int) -> None:
        """Record that the buffered rows reflect the log up to `index` (written by the next flush)."""
        if index < 0:
            raise ValueError(f"applied index must not be negative, got {index}")
        with self._lock:
            self._applied_index = index

    def pending_rows(self) -> int:
        """Rows buffered and not yet flushed (after de-duplication by key)."""
        with self._lock:
            return sum(len(b) for b in self._buffers.values())

    def _buffer(self, spec: _TableSpec, rows: Iterable[Mapping[str, Any]]) -> int:
        prepared = [_prepare(spec, row) for row in rows]
        key = spec.columns.index(spec.key)
        with self._lock:
            buffer = self._buffers[spec.table.name]
            for values in prepared:
                buffer[values[key]] = values
        return len(prepared)

    # -- writing -----------------------------------------------------------

    def flush(self) -> int:
        """Write everything buffered in one transaction; return the number of rows written.

        Synchronous and blocking: call it from a worker thread, not the event loop.
        """
        with self._flush_lock:
            with self._lock:
                batch, self._buffers = self._buffers, {s.table.name: {} for s in _SPECS}
                applied, self._applied_index = self._applied_index, None
            written = sum(len(b) for b in batch.values())
            if written == 0 and applied is None:
                return 0
            try:
                self._write_batch(batch, applied)
            except BaseException:
                self._requeue(batch, applied)
                raise
            return written

    def _write_batch(self, batch: dict[str, dict[Any, tuple[Any, ...]]], applied: int | None) -> None:
        work = [(spec, list(batch[spec.table.name].values())) for spec in _SPECS if batch[spec.table.name]]
        with self._engine.connect() as connection:
            # Read before the transaction, which then writes them with the results: flushes
            # are serialised, so nothing else changes these rows meanwhile.
            durations = _durations_after(connection, list(batch[_RESULTS.table.name].values()))
            connection.rollback()  # ends the read's implicit transaction
            if durations:
                work.append((_DURATIONS, durations))
            if self._dialect != "duckdb":
                with connection.begin():
                    for spec, rows in work:
                        connection.execute(self._upsert(spec), [_to_params(spec, values) for values in rows])
                    if applied is not None:
                        self._write_applied_index(connection, applied)
                return
            if sum(len(rows) for _, rows in work) <= SMALL_FLUSH_ROWS:
                # A few rows (workers registering, the first tasks of a run): one multi-row
                # VALUES upsert per table, without pandas.
                with connection.begin():
                    for spec, rows in work:
                        stmt = self._upsert_values(spec, [_to_params(spec, values) for values in rows])
                        connection.execute(stmt)
                    if applied is not None:
                        self._write_applied_index(connection, applied)
                return
            # DuckDB: one DataFrame per table, registered as a view and upserted in one
            # statement. Views are registered and dropped outside the transaction, since
            # a failed statement leaves the transaction unable to run anything else.
            raw = connection.connection.driver_connection
            if raw is None:
                raise RuntimeError("the DuckDB connection is closed")
            self._await_pandas()
            views: list[str] = []
            try:
                for spec, rows in work:
                    view = f"dtf_upsert_{spec.table.name}"
                    raw.register(view, _frame(spec, rows))
                    views.append(view)
                with connection.begin():
                    for (spec, _), view in zip(work, views, strict=True):
                        columns: list[ColumnClause[Any]] = [column(name) for name in spec.columns]
                        source = select(*columns)
                        connection.execute(self._upsert(spec, source=source.select_from(table(view))))
                    if applied is not None:
                        self._write_applied_index(connection, applied)
            finally:
                for view in views:
                    raw.unregister(view)

    def _requeue(self, batch: dict[str, dict[Any, tuple[Any, ...]]], applied: int | None) -> None:
        with self._lock:
            for name, rows in batch.items():
                newer = self._buffers[name]
                rows.update(newer)
                self._buffers[name] = rows
            if self._applied_index is None:
                self._applied_index = applied

    def _upsert(self, spec: _TableSpec, source: Select[*tuple[Any, ...]] | None = None) -> UpsertInsert:
        """The upsert of `spec`'s rows, from `source` (a SELECT) or with bound parameters."""
        stmt = self._insert(spec.table)
        if source is not None:
            stmt = stmt.from_select(list(spec.columns), source)
        return self._on_conflict(spec, stmt)

    def _upsert_values(self, spec: _TableSpec, rows: list[Row]) -> UpsertInsert:
        """The upsert of `rows` as one multi-row VALUES statement."""
        return self._on_conflict(spec, self._insert(spec.table).values(rows))

    @staticmethod
    def _on_conflict(spec: _TableSpec, stmt: UpsertInsert) -> UpsertInsert:
        excluded = stmt.excluded
        where = None
        if spec.version is not None:
            where = spec.table.c[spec.version] <= excluded[spec.version]
        return stmt.on_conflict_do_update(
            index_elements=list(spec.keys),
            set_={name: excluded[name] for name in spec.columns if name not in spec.keys},
            where=where,
        )

    def _write_applied_index(self, connection: Connection, index: int) -> None:
        stmt = self._insert(store_meta).values(key=APPLIED_INDEX_KEY, value=str(index))
        connection.execute(stmt.on_conflict_do_update(index_elements=["key"], set_={"value": stmt.excluded["value"]}))


def _durations_after(connection: Connection, rows: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    """The `test_durations` rows that `rows` (new results) change: each test's newest
    DURATION_SAMPLES samples per hardware class and over all classes, merged with those
    stored. A result seen again (a replay) replaces its own sample."""
    at = {name: i for i, name in enumerate(_RESULTS.columns)}
    fresh: dict[tuple[str, str], dict[str, list[Any]]] = {}
    for values in rows:
        if values[at["status"]] not in DURATION_STATUSES:
            continue
        stamp = to_utc_naive(values[at["timestamp"]])
        assert stamp is not None  # a required column
        sample = [
            stamp.isoformat(timespec="microseconds"),
            values[at["result_id"]],
            float(values[at["execution_time"]]),
        ]
        test_id, hardware_id = values[at["test_id"]], values[at["hardware_id"]]
        for key in {(test_id, ANY_HARDWARE), (test_id, hardware_id or ANY_HARDWARE)}:
            fresh.setdefault(key, {})[sample[1]] = sample
    if not fresh:
        return []
    for test_id, hardware_id, stored in kept_samples(connection, sorted({test_id for test_id, _ in fresh})):
        new = fresh.get((test_id, hardware_id))
        if new is not None:
            for sample in json.loads(stored):
                new.setdefault(sample[1], sample)
    out = []
    for (test_id, hardware_id), samples in fresh.items():
        newest = sorted(samples.values(), key=lambda s: (s[0], s[1]), reverse=True)[:DURATION_SAMPLES]
        out.append((test_id, hardware_id, json.dumps(newest, separators=(",", ":"))))
    return out


def _dialect_insert(dialect: str) -> Callable[[Table], UpsertInsert]:
    """The INSERT construct with ON CONFLICT support for `dialect`."""
    if dialect in ("duckdb", "postgresql"):
        return postgresql.insert
    if dialect == "sqlite":
        return sqlite.insert
    raise NotImplementedError(f"the results store supports duckdb, postgresql and sqlite, not {dialect}")


def _prepare(spec: _TableSpec, row: Mapping[str, Any]) -> tuple[Any, ...]:
    """Check one row and return its values in column order."""
    unknown = row.keys() - set(spec.columns)
    if unknown:
        raise ValueError(f"{spec.table.name}: unknown column(s) {sorted(unknown)}")
    missing = [name for name in spec.required if row.get(name) is None]
    if missing:
        raise ValueError(f"{spec.table.name}: missing required column(s) {sorted(missing)}")
    values = []
    for name in spec.columns:
        value = row.get(name)
        if value is not None:
            if name in spec.json:
                if not isinstance(value, str):
                    value = json.dumps(value, separators=(",", ":"), default=str)
            elif name in spec.datetimes and not isinstance(value, datetime):
                raise ValueError(f"{spec.table.name}.{name}: expected a datetime, got {type(value).__name__}")
            elif name in spec.integers and not isinstance(value, int):
                raise ValueError(f"{spec.table.name}.{name}: expected an int, got {type(value).__name__}")
            elif name in spec.floats and not isinstance(value, int | float):
                raise ValueError(f"{spec.table.name}.{name}: expected a number, got {type(value).__name__}")
        values.append(value)
    return tuple(values)


def _to_params(spec: _TableSpec, values: tuple[Any, ...]) -> Row:
    row = dict(zip(spec.columns, values, strict=True))
    for name in spec.datetimes:
        row[name] = to_utc_naive(row[name])
    return row


def _frame(spec: _TableSpec, rows: list[tuple[Any, ...]]) -> pd.DataFrame:
    """One DataFrame over `rows` with explicit dtypes (no inference surprises in DuckDB)."""
    import pandas as pd

    data: dict[str, pd.Series[Any]] = {}
    for name, values in zip(spec.columns, zip(*rows, strict=True), strict=True):
        if name in spec.datetimes:
            stamps = pd.to_datetime(pd.Series(values, dtype=object), utc=True)
            data[name] = stamps.dt.tz_localize(None).astype("datetime64[us]")
        elif name in spec.integers:
            data[name] = pd.Series(values, dtype="Int64")
        elif name in spec.floats:
            data[name] = pd.Series(values, dtype="float64")
        else:
            data[name] = pd.Series(values, dtype=object)
    return pd.DataFrame(data)
