"""Table definitions of the results store.

The store is a view of the command log: the tables hold what applying committed
commands produced, keyed by the ids the leader stamped, so rewriting a row is always
an idempotent upsert. Alembic owns the physical schema (`alembic/versions/`); these
definitions mirror it and are what the writer and the reader build statements from.

Portable choices, so that DuckDB, PostgreSQL and SQLite read the same rows:

- JSON columns are TEXT holding a JSON document (`JSON_COLUMNS` lists them).
- Timestamps are naive `TIMESTAMP` columns holding UTC; the writer converts aware
  datetimes on the way in and the reader attaches UTC on the way out.

The secondary indexes below serve the common filters on PostgreSQL and SQLite. The
migration leaves them out on DuckDB, where index maintenance cut upsert rates several
times over and sped up no read (see `alembic/versions/0001_initial.py`).
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    Float,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
)

metadata = MetaData(naming_convention={"pk": "pk_%(table_name)s", "ix": "ix_%(table_name)s_%(column_0_N_name)s"})

tasks = Table(
    "tasks",
    metadata,
    Column("task_id", String, primary_key=True),
    Column("type", String, nullable=False),
    Column("status", String, nullable=False),
    Column("priority", Integer, nullable=False),
    Column("create_time", DateTime, nullable=False),
    Column("start_time", DateTime),
    Column("end_time", DateTime),
    Column("worker_id", String),
    Column("parameters", Text),
    Column("dependencies", Text),
    Column("results", Text),
    Column("error", Text),
    Column("metadata", Text),
    Column("attempts", Integer, nullable=False),
    Column("submitter", String),
    # Log index of the command that produced this version of the row; an upsert
    # never replaces a row with one from an earlier index.
    Column("updated_index", BigInteger, nullable=False),
    Index("ix_tasks_status", "status"),
    Index("ix_tasks_type", "type"),
    Index("ix_tasks_worker_id", "worker_id"),
    Index("ix_tasks_create_time", "create_time"),
)

results = Table(
    "results",
    metadata,
    Column("result_id", String, primary_key=True),
    Column("task_id", String, nullable=False),
    Column("worker_id", String),
    Column("test_id", String, nullable=False),
    Column("hardware_id", String),
    Column("timestamp", DateTime, nullable=False),
    Column("metrics", Text),
    Column("status", String, nullable=False),
    Column("execution_time", Float, nullable=False),
    Column("hardware_metrics", Text),
    Column("environment", Text),
    Column("raw_data", Text),
    Column("metadata", Text),
    Index("ix_results_task_id", "task_id"),
    Index("ix_results_test_hardware_time", "test_id", "hardware_id", "timestamp"),
    Index("ix_results_worker_id", "worker_id"),
    Index("ix_results_timestamp", "timestamp"),
    Index("ix_results_status", "status"),
)

workers = Table(
    "workers",
    metadata,
    Column("worker_id", String, primary_key=True),
    Column("status", String, nullable=False),
    Column("hardware_id", String),
    Column("capabilities", Text),
    Column("last_seen", DateTime, nullable=False),
    Column("current_task", String),
    Column("performance_metrics", Text),
    Column("health_status", Text),
    Column("metadata", Text),
)

# The newest results of each test that say how long it takes (`DURATION_STATUSES`), per
# hardware class and over all classes (hardware_id ""): what duration-aware scheduling
# reads, at a cost that does not grow with the history. `samples` is a JSON list of
# [timestamp, result_id, seconds], newest first, at most DURATION_SAMPLES long. Derived
# from `results` by the writer, in the same transaction.
test_durations = Table(
    "test_durations",
    metadata,
    Column("test_id", String, primary_key=True),
    Column("hardware_id", String, primary_key=True),
    Column("samples", Text, nullable=False),
)

# Statuses that say how long a test takes; a partial run does not.
DURATION_STATUSES = ("success", "failure")
DURATION_SAMPLES = 5
ANY_HARDWARE = ""

store_meta = Table(
    "store_meta",
    metadata,
    Column("key", String, primary_key=True),
    Column("value", Text, nullable=False),
)

APPLIED_INDEX_KEY = "applied_index"

JSON_COLUMNS: dict[str, frozenset[str]] = {
    "tasks": frozenset({"parameters", "dependencies", "results", "metadata"}),
    "results": frozenset({"metrics", "hardware_metrics", "environment", "raw_data", "metadata"}),
    "workers": frozenset({"capabilities", "performance_metrics", "health_status", "metadata"}),
}
