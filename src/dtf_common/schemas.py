"""Pydantic schemas for the public data model: Task, Worker and Result.

Field names and status values are those of the owner's design. Schemas come in
families by role: `TaskCreate` is what a client may send, `Task` what it reads back.

What a client may send is bounded so that it can always be read back: free-form JSON
(`parameters`, `metadata`) by `dtf_common.json_limits` (depth, encoded size, valid
Unicode, finite numbers, 64-bit integers), every string by a length (which also makes
pydantic refuse a lone surrogate), every number by a range the command log can carry.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, Generic, TypeVar

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator
from pydantic_core import PydanticCustomError

from dtf_common.errors import InvalidArgument
from dtf_common.json_limits import MAX_JSON_DEPTH as MAX_JSON_DEPTH
from dtf_common.json_limits import KiB, MiB, check_json

MAX_TASK_BATCH = 10_000
MAX_DEPENDENCIES = 1_000
PRIORITY_MIN, PRIORITY_MAX = 0, 10
# Free-form JSON of a task, as encoded compactly (nesting: MAX_JSON_DEPTH levels).
MAX_PARAMETERS_BYTES = 1 * MiB
MAX_METADATA_BYTES = 64 * KiB
MAX_LABELS = 64
MAX_LABEL_CHARS = 256
MAX_WORKER_ID_CHARS = 256
MAX_GPUS = 1024
MAX_MEMORY_MB = 2**40  # 1 EiB: far above any machine, far below the log's int64
MAX_RETRIES = 100
MAX_TIMEOUT_S = 7 * 86400

TaskType = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[a-z][a-z0-9_.-]*$")]
Identifier = Annotated[str, Field(min_length=1, max_length=128)]
# A length bound makes pydantic check that the text is valid Unicode (no lone surrogate).
Label = Annotated[str, Field(max_length=MAX_LABEL_CHARS)]
WorkerId = Annotated[str, Field(max_length=MAX_WORKER_ID_CHARS)]


def _within_limits(max_bytes: int) -> AfterValidator:
    """`json_limits.check_json` as a pydantic validator: a violation is a validation
    error of the field, typed by its reason (`json_too_deep`, `string_unicode`...)."""

    def check(value: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        try:
            check_json(value, field=info.field_name or "value", max_bytes=max_bytes)
        except InvalidArgument as exc:
            # The message goes in the context: a template would read its braces as fields.
            raise PydanticCustomError(exc.context["reason"], "{message}", {"message": exc.message}) from None
        return value

    return AfterValidator(check)


def _documented(max_bytes: int, what: str) -> Any:
    """The schema's account of a free-form JSON object's limits (OpenAPI has no keyword
    for depth or encoded size, hence the `x-` extensions)."""
    return Field(
        description=f"{what}: a JSON object at most {MAX_JSON_DEPTH} levels deep and {max_bytes} bytes encoded; "
        "strings valid Unicode, numbers finite, integers within signed 64 bits",
        json_schema_extra={"x-max-depth": MAX_JSON_DEPTH, "x-max-bytes": max_bytes},
    )


Parameters = Annotated[
    dict[str, Any],
    _within_limits(MAX_PARAMETERS_BYTES),
    _documented(MAX_PARAMETERS_BYTES, "what the task's executor needs"),
]
Metadata = Annotated[
    dict[str, Any],
    _within_limits(MAX_METADATA_BYTES),
    _documented(MAX_METADATA_BYTES, 'free-form, kept with the task; the key "dtf" is reserved'),
]


class TaskStatus(StrEnum):
    PENDING = "pending"
    ASSIGNED = "assigned"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def terminal(self) -> bool:
        return self in TERMINAL_TASK_STATUSES


TERMINAL_TASK_STATUSES = frozenset({TaskStatus.COMPLETED, TaskStatus.FAILED, TaskStatus.CANCELLED})


class WorkerStatus(StrEnum):
    ONLINE = "online"
    OFFLINE = "offline"
    BUSY = "busy"
    ERROR = "error"


class ResultStatus(StrEnum):
    SUCCESS = "success"
    FAILURE = "failure"
    PARTIAL = "partial"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Requirements(_Strict):
    """What a task needs from a worker. Every field is optional."""

    hardware: str | None = Field(default=None, max_length=32, description='"cpu", "cuda", "rocm", "mps", "webgpu"...')
    min_gpus: int = Field(default=0, ge=0, le=MAX_GPUS)
    min_memory_mb: int = Field(default=0, ge=0, le=MAX_MEMORY_MB)
    labels: dict[Label, Label] = Field(default_factory=dict, max_length=MAX_LABELS)
    exclude_workers: list[WorkerId] = Field(
        default_factory=list, max_length=1000, description="workers that must not run it (reruns go elsewhere)"
    )


class TaskCreate(_Strict):
    """A task as submitted: `POST /api/tasks` takes one of these or a list of them."""

    task_id: str | None = Field(default=None, description="UUID; generated when absent")
    type: TaskType
    priority: int = Field(default=5, ge=PRIORITY_MIN, le=PRIORITY_MAX, description="0 lowest, 10 highest")
    parameters: Parameters = Field(default_factory=dict)
    dependencies: list[str] = Field(default_factory=list, max_length=MAX_DEPENDENCIES)
    requirements: Requirements = Field(default_factory=Requirements)
    metadata: Metadata = Field(default_factory=dict)
    max_retries: int = Field(default=0, ge=0, le=MAX_RETRIES, description="extra attempts after an executor failure")
    timeout: float | None = Field(
        default=None, gt=0, le=MAX_TIMEOUT_S, description="seconds; worker default when absent"
    )

    @field_validator("task_id")
    @classmethod
    def _uuid(cls, value: str | None) -> str | None:
        if value is None:
            return None
        return str(uuid.UUID(value))

    @field_validator("dependencies")
    @classmethod
    def _dependency_ids(cls, value: list[str]) -> list[str]:
        return [str(uuid.UUID(v)) for v in value]

    @field_validator("metadata")
    @classmethod
    def _unreserved(cls, value: dict[str, Any]) -> dict[str, Any]:
        if RESERVED_METADATA_KEY in value:
            raise ValueError(f'the key "{RESERVED_METADATA_KEY}" is reserved for the coordinator\'s scheduling record')
        return value


RESERVED_METADATA_KEY = "dtf"


class Scheduling(BaseModel):
    """How the coordinator handles a task: what it asked for and what happened to it.

    Reported under `metadata["dtf"]`, so the Task model keeps exactly the owner's fields.
    """

    requirements: Requirements = Field(default_factory=Requirements)
    attempts: int = Field(default=0, description="leases granted so far")
    max_retries: int = 0
    timeout: float | None = None
    submitter: str = ""


class Task(BaseModel):
    """A task as the coordinator reports it: the owner's fields, no more.

    `metadata` holds the submitter's metadata plus, under the reserved key "dtf", the
    coordinator's scheduling record (`Scheduling`: requirements, attempts, max_retries,
    timeout, submitter).
    """

    task_id: str
    type: str
    status: TaskStatus
    priority: int
    create_time: datetime
    start_time: datetime | None = None
    end_time: datetime | None = None
    worker_id: str | None = None
    parameters: dict[str, Any] = Field(default_factory=dict)
    dependencies: list[str] = Field(default_factory=list)
    results: dict[str, Any] | None = None
    error: str | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)

    @property
    def scheduling(self) -> Scheduling:
        return Scheduling.model_validate(self.metadata.get(RESERVED_METADATA_KEY, {}))


class Worker(BaseModel):
    worker_id: str
    status: WorkerStatus
    hardware_id: str
    capabilities: dict[str, Any] = Field(default_factory=dict)
    last_seen: datetime
    current_task: str | None = None
    performance_metrics: dict[str, Any] = Field(default_factory=dict)
    health_status: dict[str, Any] = Field(default_factory=dict)
    metadata: dict[str, Any] = Field(default_factory=dict)


class Result(BaseModel):
    result_id: str
    task_id: str
    worker_id: str
    test_id: str
    timestamp: datetime
    metrics: dict[str, Any] = Field(default_factory=dict)
    status: ResultStatus
    execution_time: float = Field(ge=0)
    hardware_metrics: dict[str, Any] = Field(default_factory=dict)
    environment: dict[str, Any] = Field(default_factory=dict)
    raw_data: dict[str, Any] = Field(default_factory=dict)
    metadata: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _ids(self) -> Result:
        if not self.test_id:
            raise ValueError("test_id must not be empty")
        return self


class TaskCreated(BaseModel):
    task_ids: list[str]


T = TypeVar("T")


class Page(BaseModel, Generic[T]):
    """One page of a listing: `data` and the `count` of all matches."""

    data: list[T]
    count: int
    offset: int
    limit: int
