"""Bring a results store's schema to the newest Alembic revision.

Alembic owns the schema. The coordinator calls `upgrade(url)` on start; it is
idempotent: on a store already at head it only reads the version table.
"""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.ddl.impl import DefaultImpl
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import URL, Engine, create_engine, pool

# The repository-root `alembic/` folder: src/dtf_coordinator/store/migrate.py -> repo root.
SCRIPT_LOCATION = Path(__file__).resolve().parents[3] / "alembic"


class AlembicDuckDBImpl(DefaultImpl):
    """Alembic's implementation for the `duckdb` dialect (duckdb-engine ships none).

    Defining the class registers it with Alembic. DuckDB runs DDL inside
    transactions, so a migration applies whole or not at all.
    """

    __dialect__ = "duckdb"
    transactional_ddl = True


def alembic_config(url: str | URL | None = None) -> Config:
    """An Alembic `Config` with no ini file (so the host's logging is left alone)."""
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
    config = alembic_config(engine.url)
    try:
        with engine.begin() as connection:
            config.attributes["connection"] = connection
            command.upgrade(config, "head")
    finally:
        if engine is not target:
            engine.dispose()


def current_revision(engine: Engine) -> str | None:
    """The revision the database is at, None for a database Alembic never touched."""
    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def head_revision() -> str | None:
    """The newest revision among the migration scripts."""
    return ScriptDirectory.from_config(alembic_config()).get_current_head()
