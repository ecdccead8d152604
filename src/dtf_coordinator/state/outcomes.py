"""What applying a command returns (outcomes) and what it changed (effects).

Outcomes answer the proposer. Effects feed the results store, the WebSocket hub and
metrics; they are cheap references, read back against the state when consumed.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from dtf_common.errors import DtfError
from dtf_common.pb.dtf.v1 import types_pb2
from dtf_common.schemas import TaskStatus


@dataclass(frozen=True, slots=True)
class Rejected:
    error: DtfError


@dataclass(frozen=True, slots=True)
class Submitted:
    task_ids: list[str]


@dataclass(frozen=True, slots=True)
class Assigned:
    # (task_id, worker_id, lease_id) of the assignments that took effect.
    granted: list[tuple[str, str, str]]


@dataclass(frozen=True, slots=True)
class ReportAcks:
    # One (task_id, lease_id, accepted, detail) per reported outcome, in order.
    acks: list[tuple[str, str, bool, str]]


@dataclass(frozen=True, slots=True)
class Cancelled:
    cancelled: list[str]
    already_final: list[str]
    unknown: list[str]


@dataclass(frozen=True, slots=True)
class LeasesReleased:
    requeued: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Done:
    """A command that needs no answer beyond 'applied'."""


Outcome = Rejected | Submitted | Assigned | ReportAcks | Cancelled | LeasesReleased | Done


@dataclass(frozen=True, slots=True)
class TaskTransition:
    task_id: str
    status: TaskStatus
    worker_id: str | None
    time_ms: int


@dataclass(frozen=True, slots=True)
class ResultsRecorded:
    records: list[types_pb2.ResultRecord]
    hardware_id: str


@dataclass(frozen=True, slots=True)
class TaskOutput:
    """What a running task printed, for those who follow it live; nothing stores it."""

    task_id: str
    worker_id: str
    stdout: str
    stderr: str


@dataclass(frozen=True, slots=True)
class WorkerChanged:
    worker_id: str


Effect = TaskTransition | ResultsRecorded | TaskOutput | WorkerChanged
