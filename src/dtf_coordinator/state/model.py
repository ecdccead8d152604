"""The records the state machine keeps: tasks, workers and their leases."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from dtf_common.schemas import TaskStatus, WorkerStatus

# Allowed task transitions, declared once and checked on every change.
TRANSITIONS: dict[TaskStatus, frozenset[TaskStatus]] = {
    TaskStatus.PENDING: frozenset({TaskStatus.ASSIGNED, TaskStatus.CANCELLED, TaskStatus.FAILED}),
    TaskStatus.ASSIGNED: frozenset(
        {TaskStatus.RUNNING, TaskStatus.COMPLETED, TaskStatus.FAILED, TaskStatus.PENDING, TaskStatus.CANCELLED}
    ),
    TaskStatus.RUNNING: frozenset({TaskStatus.COMPLETED, TaskStatus.FAILED, TaskStatus.PENDING, TaskStatus.CANCELLED}),
    TaskStatus.COMPLETED: frozenset(),
    TaskStatus.FAILED: frozenset(),
    TaskStatus.CANCELLED: frozenset(),
}


class InvariantError(AssertionError):
    """A broken invariant of the state machine: a bug, never bad input."""


@dataclass(slots=True)
class Needs:
    hardware: str = ""
    min_gpus: int = 0
    min_memory_mb: int = 0
    labels: dict[str, str] = field(default_factory=dict)
    exclude_workers: tuple[str, ...] = ()


@dataclass(slots=True)
class Offers:
    hardware: tuple[str, ...] = ("cpu",)
    gpu_count: int = 0
    memory_mb: int = 0
    labels: dict[str, str] = field(default_factory=dict)
    slots: int = 1
    details_json: str = "{}"

    def satisfies(self, needs: Needs, worker_id: str = "") -> bool:
        if needs.exclude_workers and worker_id in needs.exclude_workers:
            return False
        if needs.hardware and needs.hardware not in self.hardware:
            return False
        if needs.min_gpus > self.gpu_count or needs.min_memory_mb > self.memory_mb:
            return False
        return all(self.labels.get(k) == v for k, v in needs.labels.items())


@dataclass(slots=True)
class TaskState:
    task_id: str
    type: str
    priority: int
    parameters_json: str
    dependencies: tuple[str, ...]
    needs: Needs
    metadata_json: str
    max_retries: int
    timeout_s: float
    submitter: str
    create_ms: int
    seq: int  # submission order: the tie-breaker after priority and fair share
    status: TaskStatus = TaskStatus.PENDING
    start_ms: int | None = None
    end_ms: int | None = None
    worker_id: str | None = None
    lease_id: str | None = None
    lease_expires_ms: int | None = None
    attempts: int = 0  # leases granted
    failures: int = 0  # executor failures (counted against max_retries)
    lost: int = 0  # leases lost to expiry or a lost worker
    not_before_ms: int = 0  # retry backoff
    waiting_on: int = 0  # dependencies not yet completed
    results_json: str | None = None
    error: str | None = None

    @property
    def ready(self) -> bool:
        return self.status is TaskStatus.PENDING and self.waiting_on == 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "task_id": self.task_id,
            "type": self.type,
            "priority": self.priority,
            "parameters_json": self.parameters_json,
            "dependencies": list(self.dependencies),
            "needs": {
                "hardware": self.needs.hardware,
                "min_gpus": self.needs.min_gpus,
                "min_memory_mb": self.needs.min_memory_mb,
                "labels": dict(self.needs.labels),
                "exclude_workers": list(self.needs.exclude_workers),
            },
            "metadata_json": self.metadata_json,
            "max_retries": self.max_retries,
            "timeout_s": self.timeout_s,
            "submitter": self.submitter,
            "create_ms": self.create_ms,
            "seq": self.seq,
            "status": self.status.value,
            "start_ms": self.start_ms,
            "end_ms": self.end_ms,
            "worker_id": self.worker_id,
            "lease_id": self.lease_id,
            "lease_expires_ms": self.lease_expires_ms,
            "attempts": self.attempts,
            "failures": self.failures,
            "lost": self.lost,
            "not_before_ms": self.not_before_ms,
            "waiting_on": self.waiting_on,
            "results_json": self.results_json,
            "error": self.error,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TaskState:
        d = dict(d)
        d["dependencies"] = tuple(d["dependencies"])
        needs = d["needs"]
        d["needs"] = Needs(
            **{**needs, "labels": dict(needs["labels"]), "exclude_workers": tuple(needs.get("exclude_workers", ()))}
        )
        d["status"] = TaskStatus(d["status"])
        return cls(**d)


@dataclass(slots=True)
class WorkerState:
    worker_id: str
    name: str
    hardware_id: str
    offers: Offers
    metadata_json: str
    registered_ms: int
    last_seen_ms: int
    status: WorkerStatus = WorkerStatus.ONLINE
    health_json: str = "{}"
    critical: bool = False  # the last health report said "critical" (derived from health_json)
    performance_json: str = "{}"
    leases: dict[str, str] = field(default_factory=dict)  # lease_id -> task_id, in grant order
    completed: int = 0
    failed: int = 0
    busy_ms: int = 0  # total run time of finished tasks, for performance weighting

    @property
    def alive(self) -> bool:
        return self.status is not WorkerStatus.OFFLINE

    def free_slots(self, cap: int = 0) -> int:
        limit = min(self.offers.slots, cap) if cap else self.offers.slots
        return max(0, limit - len(self.leases))

    def mean_task_seconds(self) -> float | None:
        done = self.completed + self.failed
        return self.busy_ms / 1000 / done if done else None

    def to_dict(self) -> dict[str, Any]:
        o = self.offers
        return {
            "worker_id": self.worker_id,
            "name": self.name,
            "hardware_id": self.hardware_id,
            "offers": {
                "hardware": list(o.hardware),
                "gpu_count": o.gpu_count,
                "memory_mb": o.memory_mb,
                "labels": dict(o.labels),
                "slots": o.slots,
                "details_json": o.details_json,
            },
            "metadata_json": self.metadata_json,
            "registered_ms": self.registered_ms,
            "last_seen_ms": self.last_seen_ms,
            "status": self.status.value,
            "health_json": self.health_json,
            "critical": self.critical,
            "performance_json": self.performance_json,
            "leases": dict(self.leases),
            "completed": self.completed,
            "failed": self.failed,
            "busy_ms": self.busy_ms,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> WorkerState:
        d = dict(d)
        offers = dict(d["offers"])
        offers["hardware"] = tuple(offers["hardware"])
        offers["labels"] = dict(offers["labels"])
        d["leases"] = dict(d["leases"])
        d["offers"] = Offers(**offers)
        d["status"] = WorkerStatus(d["status"])
        return cls(**d)
