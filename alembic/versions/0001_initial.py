"""Create the results store: tasks, results, workers and store_meta.

Revision ID: 0001
Revises:

Written by hand so that it runs on DuckDB as well as PostgreSQL and SQLite.

The secondary indexes are created on PostgreSQL and SQLite only. On DuckDB an ART
index turns every update of a row into a delete and an insert in each index: measured
with 5,000-row batches, task upserts that change a row fell from 150,000-210,000 rows/s
without the four task indexes to 16,000-52,000 rows/s with them, and result inserts
lost a quarter of their rate to the five result indexes, while filtered and ordered
reads over a million results ran no faster with them (DuckDB scans columns with
zone maps instead).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _secondary_indexes() -> bool:
    return op.get_bind().dialect.name != "duckdb"


def upgrade() -> None:
    indexed = _secondary_indexes()
    op.create_table(
        "tasks",
        sa.Column("task_id", sa.String(), nullable=False),
        sa.Column("type", sa.String(), nullable=False),
        sa.Column("status", sa.String(), nullable=False),
        sa.Column("priority", sa.Integer(), nullable=False),
        sa.Column("create_time", sa.DateTime(), nullable=False),
        sa.Column("start_time", sa.DateTime(), nullable=True),
        sa.Column("end_time", sa.DateTime(), nullable=True),
        sa.Column("worker_id", sa.String(), nullable=True),
        sa.Column("parameters", sa.Text(), nullable=True),
        sa.Column("dependencies", sa.Text(), nullable=True),
        sa.Column("results", sa.Text(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("metadata", sa.Text(), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("submitter", sa.String(), nullable=True),
        sa.Column("updated_index", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("task_id", name="pk_tasks"),
    )
    if indexed:
        op.create_index("ix_tasks_status", "tasks", ["status"])
        op.create_index("ix_tasks_type", "tasks", ["type"])
        op.create_index("ix_tasks_worker_id", "tasks", ["worker_id"])
        op.create_index("ix_tasks_create_time", "tasks", ["create_time"])

    op.create_table(
        "results",
        sa.Column("result_id", sa.String(), nullable=False),
        sa.Column("task_id", sa.String(), nullable=False),
        sa.Column("worker_id", sa.String(), nullable=True),
        sa.Column("test_id", sa.String(), nullable=False),
        sa.Column("hardware_id", sa.String(), nullable=True),
        sa.Column("timestamp", sa.DateTime(), nullable=False),
        sa.Column("metrics", sa.Text(), nullable=True),
        sa.Column("status", sa.String(), nullable=False),
        sa.Column("execution_time", sa.Float(), nullable=False),
        sa.Column("hardware_metrics", sa.Text(), nullable=True),
        sa.Column("environment", sa.Text(), nullable=True),
        sa.Column("raw_data", sa.Text(), nullable=True),
        sa.Column("metadata", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("result_id", name="pk_results"),
    )
    if indexed:
        op.create_index("ix_results_task_id", "results", ["task_id"])
        op.create_index("ix_results_test_hardware_time", "results", ["test_id", "hardware_id", "timestamp"])
        op.create_index("ix_results_worker_id", "results", ["worker_id"])
        op.create_index("ix_results_timestamp", "results", ["timestamp"])
        op.create_index("ix_results_status", "results", ["status"])

    op.create_table(
        "workers",
        sa.Column("worker_id", sa.String(), nullable=False),
        sa.Column("status", sa.String(), nullable=False),
        sa.Column("hardware_id", sa.String(), nullable=True),
        sa.Column("capabilities", sa.Text(), nullable=True),
        sa.Column("last_seen", sa.DateTime(), nullable=False),
        sa.Column("current_task", sa.String(), nullable=True),
        sa.Column("performance_metrics", sa.Text(), nullable=True),
        sa.Column("health_status", sa.Text(), nullable=True),
        sa.Column("metadata", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("worker_id", name="pk_workers"),
    )

    op.create_table(
        "store_meta",
        sa.Column("key", sa.String(), nullable=False),
        sa.Column("value", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("key", name="pk_store_meta"),
    )


def downgrade() -> None:
    indexed = _secondary_indexes()
    op.drop_table("store_meta")
    op.drop_table("workers")
    if indexed:
        for name in (
            "ix_results_status",
            "ix_results_timestamp",
            "ix_results_worker_id",
            "ix_results_test_hardware_time",
            "ix_results_task_id",
        ):
            op.drop_index(name, table_name="results")
    op.drop_table("results")
    if indexed:
        for name in ("ix_tasks_create_time", "ix_tasks_worker_id", "ix_tasks_type", "ix_tasks_status"):
            op.drop_index(name, table_name="tasks")
    op.drop_table("tasks")
