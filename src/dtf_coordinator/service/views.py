"""Read views of state-machine records: the public schemas and the results-store rows."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from dtf_common.convert import loads_obj, ms_to_datetime
from dtf_common.schemas import RESERVED_METADATA_KEY, Requirements, Scheduling, Task, Worker
from dtf_coordinator.state import TaskState, WorkerState


def _ms(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz=UTC)


def task_view(t: TaskState) -> Task:
    scheduling = Scheduling(
        requirements=Requirements(
            hardware=t.needs.hardware or None,
            min_gpus=t.needs.min_gpus,
            min_memory_mb=t.needs.min_memory_mb,
            labels=t.needs.labels,
            exclude_workers=list(t.needs.exclude_workers),
        ),
        attempts=t.attempts,
        max_retries=t.max_retries,
        timeout=t.timeout_s or None,
        submitter=t.submitter,
    )
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
        metadata={**loads_obj(t.metadata_json), RESERVED_METADATA_KEY: scheduling.model_dump()},
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
