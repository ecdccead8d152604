"""Keep each test's newest durations in a table of their own.

Revision ID: 0002
Revises: 0001

Reading a test's recorded duration from `results` scanned its whole history, so every
`dtf run` planned more slowly as results accumulated (0.4 s for 2,000 tests over 400,000
results). `test_durations` keeps the newest few samples of each test, per hardware
class and over all of them; the writer maintains it with the results. This revision
fills it from the results already stored.
"""

import json
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SAMPLES = 5
STATUSES = ("success", "failure")


def upgrade() -> None:
    table = op.create_table(
        "test_durations",
        sa.Column("test_id", sa.String(), nullable=False),
        sa.Column("hardware_id", sa.String(), nullable=False),
        sa.Column("samples", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("test_id", "hardware_id", name="pk_test_durations"),
    )
    results = sa.table(
        "results",
        sa.column("result_id", sa.String()),
        sa.column("test_id", sa.String()),
        sa.column("hardware_id", sa.String()),
        sa.column("timestamp", sa.DateTime()),
        sa.column("status", sa.String()),
        sa.column("execution_time", sa.Float()),
    )
    rows = []
    for by_hardware in (True, False):
        partition = [results.c.test_id, results.c.hardware_id] if by_hardware else [results.c.test_id]
        recency = sa.func.row_number().over(
            partition_by=partition, order_by=(results.c.timestamp.desc(), results.c.result_id.desc())
        )
        ranked = (
            sa.select(
                results.c.test_id,
                results.c.hardware_id,
                results.c.timestamp,
                results.c.result_id,
                results.c.execution_time,
                recency.label("recency"),
            )
            .where(results.c.status.in_(STATUSES))
            .subquery()
        )
        if by_hardware:
            query = sa.select(ranked).where(ranked.c.recency <= SAMPLES, ranked.c.hardware_id.is_not(None))
        else:
            query = sa.select(ranked).where(ranked.c.recency <= SAMPLES)
        samples: dict[tuple[str, str], list[list[object]]] = {}
        for test_id, hardware_id, stamp, result_id, seconds, _ in op.get_bind().execute(
            query.order_by(ranked.c.test_id, ranked.c.recency)
        ):
            key = (test_id, hardware_id if by_hardware else "")
            samples.setdefault(key, []).append([stamp.isoformat(timespec="microseconds"), result_id, float(seconds)])
        rows += [{"test_id": t, "hardware_id": h, "samples": json.dumps(s)} for (t, h), s in samples.items()]
    if rows:
        op.bulk_insert(table, rows)


def downgrade() -> None:
    op.drop_table("test_durations")
