"""Building ResultRecords: every record carries the same identity and environment fields."""

from __future__ import annotations

import functools
import json
import platform
import time
import uuid
from typing import Any

from dtf_common.pb.dtf.v1 import types_pb2
from dtf_worker.executors.base import ExecutionContext
from dtf_worker.lease import Lease

# Failure texts and output tails are cut to this many characters so one noisy test
# cannot make a report batch too large for a gRPC message.
MAX_TEXT_CHARS = 8 * 1024


def clip(text: str, limit: int = MAX_TEXT_CHARS) -> str:
    """Keep the end: the last lines of output say most about a failure."""
    return text if len(text) <= limit else "..." + text[-limit:]


@functools.cache
def _platform() -> tuple[str, str]:
    return platform.python_version(), platform.platform()


def environment(ctx: ExecutionContext) -> dict[str, Any]:
    python, system = _platform()
    return {"hardware_id": ctx.hardware_id, "python": python, "platform": system}


def _dumps(value: dict[str, Any] | None) -> str:
    return json.dumps(value or {}, separators=(",", ":"), default=str)


def new_record(
    lease: Lease,
    ctx: ExecutionContext,
    *,
    test_id: str,
    status: str,
    execution_time: float,
    metrics: dict[str, Any] | None = None,
    hardware_metrics: dict[str, Any] | None = None,
    raw_data: dict[str, Any] | None = None,
    metadata: dict[str, Any] | None = None,
) -> types_pb2.ResultRecord:
    return types_pb2.ResultRecord(
        result_id=str(uuid.uuid4()),
        task_id=lease.task_id,
        worker_id=ctx.worker_id,
        test_id=test_id,
        timestamp_ms=time.time_ns() // 1_000_000,
        metrics_json=_dumps(metrics),
        status=status,
        execution_time=max(0.0, execution_time),
        hardware_metrics_json=_dumps(hardware_metrics),
        environment_json=_dumps(environment(ctx)),
        raw_data_json=_dumps(raw_data),
        metadata_json=_dumps({"task_type": lease.type, "attempt": lease.attempt, **(metadata or {})}),
    )
