"""`/api/tasks`: submit, read, list and cancel tasks."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from annotated_types import MaxLen, MinLen
from fastapi import APIRouter, Body, Path, Query
from pydantic import BeforeValidator, Field

from dtf_common.errors import DtfError
from dtf_common.schemas import (
    MAX_TASK_BATCH,
    PRIORITY_MAX,
    PRIORITY_MIN,
    Page,
    Task,
    TaskCreate,
    TaskCreated,
    TaskStatus,
)
from dtf_coordinator.api.deps import Context, PageQuery, Reader, Submitter
from dtf_coordinator.api.problems import PROBLEM_RESPONSES, Problem
from dtf_coordinator.auth import Principal, Role
from dtf_coordinator.service.coordinator import TaskFilter
from dtf_coordinator.service.views import env_names_only


def _as_seen_by(who: Principal, task: Task) -> Task:
    """Environment values only for the task's submitter and admins."""
    if who.role is Role.ADMIN or task.scheduling.submitter == who.subject:
        return task
    return env_names_only(task)


router = APIRouter(prefix="/api/tasks", tags=["tasks"], responses=PROBLEM_RESPONSES)


def _as_batch(value: Any) -> Any:
    """One task is a batch of one: `{...}` becomes `[{...}]` before validation."""
    return [value] if isinstance(value, dict) else value


# The body is one TaskCreate or a list of them. Either way it is validated as a list, so
# an invalid field is named `body[i].<field>` (`body[0].<field>` for a single task).
TaskSubmission = Annotated[
    list[TaskCreate],
    MinLen(1),
    MaxLen(MAX_TASK_BATCH),
    BeforeValidator(_as_batch, json_schema_input_type=TaskCreate | list[TaskCreate]),
]

SUBMIT_EXAMPLE = {
    "type": "command",
    "priority": 5,
    "parameters": {"command": ["pytest", "-q", "tests/test_model.py"], "timeout": 600},
    "requirements": {"hardware": "cuda", "min_gpus": 1},
}

TaskId = Annotated[str, Path(description="the task's UUID")]


Consistency = Literal["local", "linearizable"]
CONSISTENCY_HELP = (
    "local: this coordinator's applied state (fast, may lag the leader by a few ms); linearizable: "
    "confirmed with a quorum first (ReadIndex), so it reflects every write acknowledged before the "
    "request, or answers 503"
)


class TaskQuery(PageQuery):
    status: TaskStatus | None = None
    type: str | None = Field(default=None, description="task type, e.g. command, pytest, benchmark")
    worker_id: str | None = None
    priority: int | None = Field(default=None, ge=PRIORITY_MIN, le=PRIORITY_MAX)
    since: datetime | None = Field(default=None, description="created at or after (ISO 8601; naive means UTC)")
    until: datetime | None = Field(default=None, description="created at or before (ISO 8601; naive means UTC)")
    consistency: Consistency = Field(default="local", description=CONSISTENCY_HELP)


def _body_field(error: DtfError) -> DtfError:
    """Name a submission error's field from the body's root, as validation errors are:
    the state machine's `[3].dependencies` is the body's `body[3].dependencies`."""
    if error.field and error.field.startswith("["):
        error.field = "body" + error.field
    return error


def _utc(value: datetime | None) -> datetime | None:
    return value.replace(tzinfo=UTC) if value is not None and value.tzinfo is None else value


@router.post(
    "",
    status_code=201,
    response_model=TaskCreated,
    summary="Submit one task or a batch",
    responses={
        413: {"model": Problem, "description": "The body is over `security.max_body_bytes`"},
        429: {"model": Problem, "description": "The queue is full; retry after `Retry-After` seconds"},
        503: {"model": Problem, "description": "This node cannot take writes now"},
    },
)
async def submit_tasks(
    tasks: Annotated[
        TaskSubmission,
        Body(
            description=f"One task, or a list of up to {MAX_TASK_BATCH}. A batch is accepted or refused whole; "
            "dependencies may name tasks of the same batch (give them `task_id`s) or tasks already submitted.",
            examples=[SUBMIT_EXAMPLE],
        ),
    ],
    ctx: Context,
    who: Submitter,
) -> TaskCreated:
    try:
        task_ids = await ctx.coordinator.submit(tasks, submitter=who.subject)
    except DtfError as exc:
        raise _body_field(exc) from None
    return TaskCreated(task_ids=task_ids)


@router.get("", response_model=Page[Task], summary="List tasks, newest first")
async def list_tasks(query: Annotated[TaskQuery, Query()], ctx: Context, who: Reader) -> Page[Task]:
    await ctx.coordinator.read_barrier(query.consistency)
    flt = TaskFilter(
        status=query.status,
        type=query.type,
        worker_id=query.worker_id,
        priority=query.priority,
        since=_utc(query.since),
        until=_utc(query.until),
    )
    tasks, count = ctx.coordinator.list_tasks(flt, query.offset, query.limit)
    return Page[Task](data=[_as_seen_by(who, t) for t in tasks], count=count, offset=query.offset, limit=query.limit)


@router.get("/{task_id}", response_model=Task, summary="One task", responses={404: {"model": Problem}})
async def get_task(
    task_id: TaskId,
    ctx: Context,
    who: Reader,
    consistency: Annotated[Consistency, Query(description=CONSISTENCY_HELP)] = "local",
) -> Task:
    """A task as it is. Its environment values (`parameters.env`) show only to its
    submitter and to admins; others see the names, each with the value `(hidden)`."""
    await ctx.coordinator.read_barrier(consistency)
    return _as_seen_by(who, ctx.coordinator.get_task(task_id))


@router.post(
    "/{task_id}/cancel",
    response_model=Task,
    summary="Cancel a task",
    responses={
        403: {"model": Problem, "description": "Neither the task's submitter nor an admin"},
        404: {"model": Problem, "description": "No such task"},
        409: {"model": Problem, "description": "The task has already finished"},
    },
)
async def cancel_task(task_id: TaskId, ctx: Context, who: Submitter) -> Task:
    """Cancel a pending, assigned or running task; answers the task as it is after the cancel.

    Only the task's submitter (the subject of the token that submitted it) or an admin
    may. A leased task's lease is revoked; its worker is told so on its next heartbeat.
    """
    ctx.coordinator.get_task(task_id)  # 404 before anything is written to the log
    await ctx.coordinator.cancel([task_id], by=None if who.role is Role.ADMIN else who.subject)
    return _as_seen_by(who, ctx.coordinator.get_task(task_id))
