"""Reading `test_durations`, the newest samples of each test the writer keeps beside the
results (see `schema.test_durations`): shared by the writer, which merges new samples
into them, and the reader, which answers recorded durations from them."""

from __future__ import annotations

import json
import statistics
from collections.abc import Sequence

from sqlalchemy import Connection, select

from dtf_coordinator.store.schema import test_durations

_CHUNK = 500  # ids per IN (...) list


def id_chunks(test_ids: Sequence[str] | None) -> list[Sequence[str] | None]:
    """`test_ids` in slices short enough for an IN (...) list; [None] for every test."""
    return [None] if test_ids is None else [test_ids[i : i + _CHUNK] for i in range(0, len(test_ids), _CHUNK)]


def kept_samples(
    connection: Connection, test_ids: Sequence[str] | None, hardware_id: str | None = None
) -> list[tuple[str, str, str]]:
    """(test_id, hardware_id, samples) of the kept rows of `test_ids` (None: every test),
    of one hardware class (`hardware_id`; "" is every class together) or of all of them."""
    raw = connection.connection.driver_connection if connection.dialect.name == "duckdb" else None
    if raw is not None and test_ids is not None:
        # One list parameter and a hash join: thousands of bound IN parameters cost more.
        query = "SELECT test_id, hardware_id, samples FROM test_durations WHERE test_id IN (SELECT unnest($ids))"
        params: dict[str, object] = {"ids": list(test_ids)}
        if hardware_id is not None:
            query += " AND hardware_id = $hardware"
            params["hardware"] = hardware_id
        rows: list[tuple[str, str, str]] = raw.execute(query, params).fetchall()
        return rows
    c = test_durations.c
    base = select(c.test_id, c.hardware_id, c.samples)
    if hardware_id is not None:
        base = base.where(c.hardware_id == hardware_id)
    out: list[tuple[str, str, str]] = []
    for chunk in id_chunks(test_ids):
        query_ = base if chunk is None else base.where(c.test_id.in_(chunk))
        out.extend((str(t), str(h), str(s)) for t, h, s in connection.execute(query_))
    return out


def median_of(samples: str, last_n: int) -> float:
    """The median seconds of the newest `last_n` of a `test_durations.samples` list."""
    return float(statistics.median(sample[2] for sample in json.loads(samples)[:last_n]))
