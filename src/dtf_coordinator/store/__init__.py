"""The results store: a view of the command log in SQL (DuckDB by default).

`open_store(url)` migrates the schema (Alembic owns it) and returns a `Store` whose
`writer` takes the rows applied commands produced and flushes them as idempotent
upserts, and whose `reader` answers the API's, the dashboard's and the scheduler's
queries.
"""

from dtf_coordinator.store.engine import Store, create_store_engine, open_store
from dtf_coordinator.store.migrate import upgrade
from dtf_coordinator.store.queries import StoreReader
from dtf_coordinator.store.writer import StoreWriter

__all__ = ["Store", "StoreReader", "StoreWriter", "create_store_engine", "open_store", "upgrade"]
