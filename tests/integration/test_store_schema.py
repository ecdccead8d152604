"""Alembic owns the results store's schema: migrations create it, match schema.py and rerun idempotently."""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import create_engine, inspect, text

from dtf_coordinator.store import migrate, open_store
from dtf_coordinator.store.schema import metadata

TABLES = {"tasks", "results", "workers", "store_meta", "test_durations"}
INDEXES = {
    "ix_tasks_status",
    "ix_tasks_type",
    "ix_tasks_worker_id",
    "ix_tasks_create_time",
    "ix_results_task_id",
    "ix_results_test_hardware_time",
    "ix_results_worker_id",
    "ix_results_timestamp",
    "ix_results_status",
}


@pytest.fixture(params=["duckdb", "sqlite"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return f"{request.param}:///{tmp_path / 'store.db'}"


def index_names(url: str) -> set[str]:
    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            if engine.dialect.name == "duckdb":
                return set(connection.execute(text("SELECT index_name FROM duckdb_indexes()")).scalars())
            inspector = inspect(connection)
            return {str(ix["name"]) for name in TABLES for ix in inspector.get_indexes(name)}
    finally:
        engine.dispose()


def test_upgrade_creates_tables_and_indexes_at_head(url: str) -> None:
    migrate.upgrade(url)

    engine = create_engine(url)
    try:
        assert TABLES | {"alembic_version"} == set(inspect(engine).get_table_names())
        assert migrate.current_revision(engine) == migrate.head_revision() is not None
    finally:
        engine.dispose()
    # Row stores get the secondary indexes; DuckDB scans columns instead (see the migration).
    assert index_names(url) == (set() if url.startswith("duckdb") else INDEXES)


def test_upgrade_is_idempotent_and_keeps_data(url: str) -> None:
    migrate.upgrade(url)
    with open_store(url) as store:
        store.writer.set_applied_index(3)
    migrate.upgrade(url)
    with open_store(url) as store:
        store.writer.set_applied_index(4)
        assert store.reader.applied_index() == 3
    with open_store(url) as store:
        assert store.reader.applied_index() == 4


def test_the_head_revision_the_coordinator_checks_is_the_scripts_head() -> None:
    # A store at HEAD_REVISION is opened without running Alembic: a migration added
    # without moving it would never be applied.
    assert migrate.head_revision() == migrate.HEAD_REVISION


@pytest.mark.parametrize("new", [True, False], ids=["new store", "store at head"])
def test_a_duckdb_store_is_opened_without_importing_alembic(tmp_path: Path, new: bool) -> None:
    url = f"duckdb:///{tmp_path / 'store.duckdb'}"
    if not new:
        migrate.upgrade(url)
    code = (
        "import sys; from dtf_coordinator.store import open_store\n"
        f"with open_store({url!r}) as store: store.writer.set_applied_index(1)\n"
        "print('alembic' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.strip() == "False"
    with open_store(url) as store:
        assert store.reader.applied_index() == 1
    engine = create_engine(url)
    try:
        assert migrate.current_revision(engine) == migrate.HEAD_REVISION
    finally:
        engine.dispose()


def _duckdb_schema(url: str) -> dict[str, list[tuple[object, ...]]]:
    engine = create_engine(url)
    queries = {
        "columns": "SELECT table_name, ordinal_position, column_name, data_type, is_nullable, column_default "
        "FROM information_schema.columns ORDER BY table_name, ordinal_position",
        "constraints": "SELECT table_name, constraint_type, constraint_column_names::VARCHAR, constraint_text "
        "FROM duckdb_constraints() ORDER BY ALL",
        "indexes": "SELECT table_name, index_name, sql FROM duckdb_indexes() ORDER BY ALL",
        "version": "SELECT version_num FROM alembic_version",
    }
    try:
        with engine.connect() as connection:
            return {name: [tuple(row) for row in connection.execute(text(sql))] for name, sql in queries.items()}
    finally:
        engine.dispose()


def test_a_new_duckdb_store_gets_the_schema_the_migrations_create(tmp_path: Path) -> None:
    migrated, created = (f"duckdb:///{tmp_path / name}" for name in ("migrated.duckdb", "created.duckdb"))
    engine = create_engine(migrated)
    try:
        with engine.begin() as connection:
            config = migrate.alembic_config(engine.url)
            config.attributes["connection"] = connection
            command.upgrade(config, "head")
    finally:
        engine.dispose()
    migrate.upgrade(created)  # new and empty: created at head, no migration runs

    schema = _duckdb_schema(created)
    assert {row[0] for row in schema["columns"]} == TABLES | {"alembic_version"}
    assert schema == _duckdb_schema(migrated)


def test_a_duckdb_store_with_tables_but_no_version_is_left_to_alembic(tmp_path: Path) -> None:
    url = f"duckdb:///{tmp_path / 'store.duckdb'}"
    engine = create_engine(url)
    try:
        with engine.begin() as connection:
            connection.execute(text("CREATE TABLE tasks (task_id VARCHAR PRIMARY KEY)"))
        with pytest.raises(Exception, match="tasks"):  # Alembic's CREATE TABLE tasks: it exists
            migrate.upgrade(engine)
        with engine.connect() as connection:  # nothing was created beside it, nor stamped
            tables = set(connection.execute(text("SELECT table_name FROM information_schema.tables")).scalars())
        assert tables == {"tasks"}
    finally:
        engine.dispose()


def test_migrations_match_the_table_definitions(tmp_path: Path) -> None:
    # DuckDB reflects no indexes, so the comparison runs on SQLite.
    url = f"sqlite:///{tmp_path / 'store.sqlite'}"
    migrate.upgrade(url)
    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            context = MigrationContext.configure(connection, opts={"compare_type": True})
            assert compare_metadata(context, metadata) == []
    finally:
        engine.dispose()


def test_upgrading_a_store_with_history_fills_its_test_durations(url: str) -> None:
    engine = create_engine(url)
    try:
        with engine.begin() as connection:
            config = migrate.alembic_config(engine.url)
            config.attributes["connection"] = connection
            command.upgrade(config, "0001")  # a store written before test_durations existed
            for n, (test_id, hardware_id, seconds) in enumerate(
                [("t1", "cpu", 1.0), ("t1", "cpu", 3.0), ("t1", "gpu", 8.0), ("t2", None, 2.0)]
            ):
                connection.execute(
                    text(
                        "INSERT INTO results (result_id, task_id, test_id, hardware_id, timestamp, status, "
                        "execution_time) VALUES (:r, 'task', :t, :h, :ts, 'success', :s)"
                    ),
                    {"r": f"r{n}", "t": test_id, "h": hardware_id, "ts": f"2026-01-01 00:00:0{n}", "s": seconds},
                )
    finally:
        engine.dispose()

    with open_store(url) as store:  # upgrades to head
        assert store.reader.test_durations() == {"t1": 3.0, "t2": 2.0}
        assert store.reader.test_durations(hardware_id="cpu") == {"t1": 2.0}
        assert store.reader.test_durations(hardware_id="gpu") == {"t1": 8.0}


def test_open_store_creates_missing_parent_folders(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "store.duckdb"
    with open_store(f"duckdb:///{path}") as store:
        assert store.reader.applied_index() == 0
    assert path.is_file()


@pytest.mark.parametrize("url", ["duckdb:///:memory:", "sqlite://"])
def test_in_memory_store_is_shared_between_threads(url: str) -> None:
    with open_store(url) as store:
        store.writer.set_applied_index(9)
        flusher = threading.Thread(target=store.writer.flush)
        flusher.start()
        flusher.join()
        assert store.reader.applied_index() == 9
