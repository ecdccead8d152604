"""Read views of what the log built: the public schemas, the results-store rows and the
WebSocket's results messages, from the state machine's records and the log's results.

The one way out of the log's forms, as `to_log.py` is the one way in.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from dtf_common.convert import loads_obj, ms_to_datetime
from dtf_common.pb.dtf.v1 import types_pb2
from dtf_common.schemas import RESERVED_METADATA_KEY, ResultStatus, Task, Worker
from dtf_coordinator.state import ResultsRecorded, TaskState, WorkerState

RESULT_STATUSES = frozenset(s.value for s in ResultStatus)


def _ms(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz=UTC)


def iso_time(ms: int) -> str:
    """Milliseconds since the epoch as the ISO 8601 UTC text the WebSocket messages carry."""
    return _ms(ms).isoformat().replace("+00:00", "Z")


def scheduling_record(t: TaskState) -> dict[str, Any]:
    """A task's `Scheduling` record (what it asked for, what happened to it) as the task
    view carries it under `metadata["dtf"]`: built straight from the state's record, in
    the schema's own shape (a test holds the two together), since the submission was
    validated once already and a view is read far more often than a task is submitted."""
    needs = t.needs
    return {
        "requirements": {
            "hardware": needs.hardware or None,
            "min_gpus": needs.min_gpus,
            "min_memory_mb": needs.min_memory_mb,
            "labels": dict(needs.labels),
            "exclude_workers": list(needs.exclude_workers),
        },
        "attempts": t.attempts,
        "max_retries": t.max_retries,
        "timeout": t.timeout_s or None,
        "submitter": t.submitter,
    }


HIDDEN = "(hidden)"


def env_names_only(task: Task) -> Task:
    """`task` as a caller who neither submitted it nor is an admin sees it: the names of
    its environment variables (`parameters.env`), not their values, which often hold
    credentials."""
    env = task.parameters.get("env")
    if not isinstance(env, dict) or not env:
        return task
    return task.model_copy(update={"parameters": {**task.parameters, "env": dict.fromkeys(env, HIDDEN)}})


def task_view(t: TaskState) -> Task:
    return Task(
        task_id=t.task_id,
        type=t.type,
        status=t.status,
        priority=t.priority,
        create_time=_ms(t.create_ms),
        start_time=ms_to_datetime(t.start_ms),
        end_time=ms_to_datetime(t.end_ms),
        worker_id=t.worker_id,
        parameters=loads_obj(t.parameters_json),
        dependencies=list(t.dependencies),
        results=loads_obj(t.results_json) if t.results_json else None,
        error=t.error,
        metadata={**loads_obj(t.metadata_json), RESERVED_METADATA_KEY: scheduling_record(t)},
    )


def worker_view(w: WorkerState) -> Worker:
    o = w.offers
    performance = loads_obj(w.performance_json)
    performance.update(
        tasks_completed=w.completed,
        tasks_failed=w.failed,
        mean_task_seconds=w.mean_task_seconds(),
        leases_held=len(w.leases),
    )
    return Worker(
        worker_id=w.worker_id,
        status=w.status,
        hardware_id=w.hardware_id,
        capabilities={
            "hardware": list(o.hardware),
            "gpu_count": o.gpu_count,
            "memory_mb": o.memory_mb,
            "labels": o.labels,
            "slots": o.slots,
            "details": loads_obj(o.details_json),
        },
        last_seen=_ms(w.last_seen_ms),
        current_task=next(iter(w.leases.values()), None),
        performance_metrics=performance,
        health_status=loads_obj(w.health_json),
        metadata={**loads_obj(w.metadata_json), "name": w.name},
    )


def task_row(t: TaskState, index: int) -> dict[str, Any]:
    return {
        "task_id": t.task_id,
        "type": t.type,
        "status": t.status.value,
        "priority": t.priority,
        "create_time": _ms(t.create_ms),
        "start_time": ms_to_datetime(t.start_ms),
        "end_time": ms_to_datetime(t.end_ms),
        "worker_id": t.worker_id,
        "parameters": t.parameters_json,
        "dependencies": json.dumps(list(t.dependencies)),
        "results": t.results_json,
        "error": t.error,
        "metadata": t.metadata_json,
        "attempts": t.attempts,
        "submitter": t.submitter,
        "updated_index": index,
    }


def worker_row(w: WorkerState) -> dict[str, Any]:
    view = worker_view(w)
    return {
        "worker_id": w.worker_id,
        "status": w.status.value,
        "hardware_id": w.hardware_id,
        "capabilities": json.dumps(view.capabilities),
        "last_seen": view.last_seen,
        "current_task": view.current_task,
        "performance_metrics": json.dumps(view.performance_metrics),
        "health_status": w.health_json,
        "metadata": json.dumps(view.metadata),
    }


def result_row(record: types_pb2.ResultRecord, hardware_id: str) -> dict[str, Any]:
    """A result as the results store keeps it (JSON columns as text); a status outside
    the schema's is stored as a failure."""
    return {
        "result_id": record.result_id,
        "task_id": record.task_id,
        "worker_id": record.worker_id,
        "test_id": record.test_id,
        "hardware_id": hardware_id,
        "timestamp": ms_to_datetime(record.timestamp_ms),
        "metrics": record.metrics_json or "{}",
        "status": record.status if record.status in RESULT_STATUSES else "failure",
        "execution_time": max(0.0, record.execution_time),
        "hardware_metrics": record.hardware_metrics_json or "{}",
        "environment": record.environment_json or "{}",
        "raw_data": record.raw_data_json or "{}",
        "metadata": record.metadata_json or "{}",
    }


def results_messages(effect: ResultsRecorded) -> list[dict[str, Any]]:
    """A committed batch of results as `results` messages, one per task, in the order the
    worker sent them: what follows a running task (`dtf run`) reads its tests as they end."""
    by_task: dict[str, list[dict[str, Any]]] = {}
    for record in effect.records:
        by_task.setdefault(record.task_id, []).append(
            {
                "result_id": record.result_id,
                "test_id": record.test_id,
                "status": record.status,
                "execution_time": record.execution_time,
                "worker_id": record.worker_id,
                "timestamp": iso_time(record.timestamp_ms),
                "raw_data": loads_obj(record.raw_data_json),
            }
        )
    return [{"type": "results", "task_id": task_id, "results": rows} for task_id, rows in by_task.items()]
