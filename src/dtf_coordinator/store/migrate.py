"""Bring a results store's schema to the newest Alembic revision.

Alembic owns the schema. The coordinator calls `upgrade(url)` on start; it is
idempotent. A store already at `HEAD_REVISION` costs one read of the version table,
and Alembic is not even imported (a quarter of a second of every coordinator's start).
Nor is it for a new DuckDB store, created at head directly (`_create_at_head`).
"""

from __future__ import annotations

import functools
import logging
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import URL, Engine, create_engine, exc, pool, text

if TYPE_CHECKING:
    from alembic.config import Config

# Alembic's scripts inside the package: `dtf_coordinator/migrations` links to the repository's
# top-level `alembic/` in a checkout, and is a copy of it in an installed wheel.
SCRIPT_LOCATION = Path(__file__).resolve().parents[1] / "migrations"
# The newest revision under alembic/versions (a test holds this to the scripts' head).
HEAD_REVISION = "0002"

# Alembic announces each of its plugins at INFO when it is imported; not a coordinator's news.
logging.getLogger("alembic.runtime.plugins").setLevel(logging.WARNING)


@functools.cache
def register_duckdb_impl() -> None:
    """Give Alembic an implementation for the `duckdb` dialect (duckdb-engine ships none).

    Defining the class registers it. DuckDB runs DDL inside transactions, so a migration
    applies whole or not at all."""
    from alembic.ddl.impl import DefaultImpl

    class AlembicDuckDBImpl(DefaultImpl):
        __dialect__ = "duckdb"
        transactional_ddl = True


def alembic_config(url: str | URL | None = None) -> Config:
    """An Alembic `Config` with no ini file (so the host's logging is left alone)."""
    from alembic.config import Config

    register_duckdb_impl()
    if not (SCRIPT_LOCATION / "env.py").is_file():
        raise FileNotFoundError(f"Alembic scripts not found at {SCRIPT_LOCATION}")
    config = Config()
    config.set_main_option("script_location", str(SCRIPT_LOCATION))
    if url is not None:
        rendered = url if isinstance(url, str) else url.render_as_string(hide_password=False)
        config.set_main_option("sqlalchemy.url", rendered.replace("%", "%%"))
    return config


def upgrade(target: str | URL | Engine) -> None:
    """Run `alembic upgrade head` on `target` (a URL, or an engine to borrow), in one transaction.

    Pass the store's engine rather than its URL where one exists: DuckDB lets a single
    process hold a database file, and an in-memory database is reachable only through it.
    """
    engine = create_engine(target, poolclass=pool.NullPool) if isinstance(target, str | URL) else target
    try:
        revisions = _stored_revisions(engine)
        if revisions == [HEAD_REVISION]:
            return
        if not revisions and engine.dialect.name == "duckdb" and _create_at_head(engine):
            return
        config = alembic_config(engine.url)
        from alembic import command

        with engine.begin() as connection:
            config.attributes["connection"] = connection
            command.upgrade(config, "head")
    finally:
        if engine is not target:
            engine.dispose()


def _create_at_head(engine: Engine) -> bool:
    """Create the newest schema in an empty DuckDB store, as the migrations would, and
    record it at `HEAD_REVISION`; False (nothing done) when the store is not empty.

    A new store is what every first `dtf run` opens, and running the migrations means
    importing Alembic: together 0.4 s of the coordinator's start. The tables are
    `schema.metadata`'s, without the secondary indexes (the migrations leave them out on
    DuckDB); a test holds the result to what `alembic upgrade head` creates."""
    from sqlalchemy.schema import CreateTable

    from dtf_coordinator.store import schema

    with engine.begin() as connection:
        tables = connection.execute(text("SELECT count(*) FROM information_schema.tables")).scalar_one()
        if tables:
            return False
        for table in schema.metadata.sorted_tables:
            connection.execute(CreateTable(table))
        connection.execute(
            text(
                "CREATE TABLE alembic_version (version_num VARCHAR(32) NOT NULL, "
                "CONSTRAINT alembic_version_pkc PRIMARY KEY (version_num))"
            )
        )
        connection.execute(text("INSERT INTO alembic_version (version_num) VALUES (:head)"), {"head": HEAD_REVISION})
    return True


def _stored_revisions(engine: Engine) -> list[str]:
    """What the version table holds; nothing when there is none (a new store)."""
    with engine.connect() as connection:
        try:
            return [str(v) for v in connection.execute(text("SELECT version_num FROM alembic_version")).scalars()]
        except exc.DBAPIError:
            return []


def current_revision(engine: Engine) -> str | None:
    """The revision the database is at, None for a database Alembic never touched."""
    from alembic.runtime.migration import MigrationContext

    register_duckdb_impl()
    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def head_revision() -> str | None:
    """The newest revision among the migration scripts."""
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(alembic_config()).get_current_head()
