"""The one translator between protobuf messages and the Pydantic schemas."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from dtf_common.pb.dtf.v1 import types_pb2
from dtf_common.schemas import Requirements, Result, ResultStatus


def dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), default=str)


def loads_obj(text: str | None) -> dict[str, Any]:
    """Parse a JSON object field; empty text is {}; a non-object is wrapped as {"value": ...}."""
    if not text:
        return {}
    value = json.loads(text)
    return value if isinstance(value, dict) else {"value": value}


def ms_to_datetime(ms: int | None) -> datetime | None:
    return None if ms is None else datetime.fromtimestamp(ms / 1000, tz=UTC)


def datetime_to_ms(value: datetime) -> int:
    return int(value.timestamp() * 1000)


def requirements_from_pb(req: types_pb2.Requirements) -> Requirements:
    return Requirements(
        hardware=req.hardware or None,
        min_gpus=req.min_gpus,
        min_memory_mb=req.min_memory_mb,
        labels=dict(req.labels),
        exclude_workers=list(req.exclude_workers),
    )


def capabilities_to_dict(caps: types_pb2.Capabilities) -> dict[str, Any]:
    return {
        "hardware": list(caps.hardware),
        "gpu_count": caps.gpu_count,
        "memory_mb": caps.memory_mb,
        "labels": dict(caps.labels),
        "slots": caps.slots,
        "details": loads_obj(caps.details_json),
    }


def result_from_pb(record: types_pb2.ResultRecord) -> Result:
    return Result(
        result_id=record.result_id,
        task_id=record.task_id,
        worker_id=record.worker_id,
        test_id=record.test_id,
        timestamp=ms_to_datetime(record.timestamp_ms) or datetime.now(UTC),
        metrics=loads_obj(record.metrics_json),
        status=ResultStatus(record.status or "success"),
        execution_time=max(0.0, record.execution_time),
        hardware_metrics=loads_obj(record.hardware_metrics_json),
        environment=loads_obj(record.environment_json),
        raw_data=loads_obj(record.raw_data_json),
        metadata=loads_obj(record.metadata_json),
    )


def result_to_row(record: types_pb2.ResultRecord, hardware_id: str) -> dict[str, Any]:
    """A result as the results store keeps it (JSON columns as text)."""
    status = record.status if record.status in ResultStatus.__members__.values() else "failure"
    return {
        "result_id": record.result_id,
        "task_id": record.task_id,
        "worker_id": record.worker_id,
        "test_id": record.test_id,
        "hardware_id": hardware_id,
        "timestamp": ms_to_datetime(record.timestamp_ms),
        "metrics": record.metrics_json or "{}",
        "status": status,
        "execution_time": max(0.0, record.execution_time),
        "hardware_metrics": record.hardware_metrics_json or "{}",
        "environment": record.environment_json or "{}",
        "raw_data": record.raw_data_json or "{}",
        "metadata": record.metadata_json or "{}",
    }
