"""The results store as one object: an engine, its writer and its reader.

DuckDB lets a single process hold a database file, so the writer and the reader share
one engine (each call takes its own pooled connection). `open_store(url)` migrates the
schema to head first, then hands back the `Store`.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from types import TracebackType
from typing import Any

from sqlalchemy import Engine, create_engine, event, make_url
from sqlalchemy.engine import URL
from sqlalchemy.pool import StaticPool

from dtf_coordinator.store import migrate
from dtf_coordinator.store.queries import StoreReader
from dtf_coordinator.store.writer import StoreWriter


class Store:
    """Owns the engine; `writer` buffers and flushes rows, `reader` answers queries."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.writer = StoreWriter(engine)
        self.reader = StoreReader(engine)
        self._closed = False
        # An in-memory DuckDB lives while a connection to it is open.
        self._keepalive = engine.raw_connection() if _is_memory_duckdb(engine.url) else None

    @property
    def url(self) -> URL:
        return self.engine.url

    def close(self, *, flush: bool = True) -> None:
        """Flush what is buffered (unless `flush=False`) and release the database."""
        if self._closed:
            return
        try:
            if flush:
                self.writer.flush()
        finally:
            self._closed = True
            if self._keepalive is not None:
                self._keepalive.close()
            self.engine.dispose()

    def __enter__(self) -> Store:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close(flush=exc_type is None)


def create_store_engine(url: str | URL) -> Engine:
    """An engine for the store at `url`, creating the parent folder of a database file.

    An in-memory database is shared by every thread of the process (the writer's
    flush thread and the API's): DuckDB's becomes a named in-memory database,
    SQLite's a single connection.
    """
    parsed = make_url(url)
    backend = parsed.get_backend_name()
    database = parsed.database or ""
    kwargs: dict[str, Any] = {}
    if backend in ("duckdb", "sqlite") and database and not database.startswith(":memory:"):
        Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)
    if backend == "duckdb" and database in ("", ":memory:"):
        parsed = parsed.set(database=f":memory:dtf_{uuid.uuid4().hex}")
    if backend == "sqlite" and database in ("", ":memory:"):
        kwargs.update(poolclass=StaticPool, connect_args={"check_same_thread": False})
    engine = create_engine(parsed, **kwargs)
    if backend == "sqlite":
        event.listen(engine, "connect", _sqlite_pragmas)
    return engine


def open_store(url: str | URL, *, upgrade: bool = True) -> Store:
    """Open the results store at `url`, migrating its schema to head unless `upgrade=False`."""
    store = Store(create_store_engine(url))
    try:
        if upgrade:
            migrate.upgrade(store.engine)
    except BaseException:
        store.close(flush=False)
        raise
    return store


def _is_memory_duckdb(url: URL) -> bool:
    return url.get_backend_name() == "duckdb" and (url.database or "").startswith(":memory:")


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute("PRAGMA busy_timeout = 10000")
        cursor.execute("PRAGMA journal_mode = WAL")
    finally:
        cursor.close()
