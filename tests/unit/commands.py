"""Builders for state machine commands, so tests read as the story they tell.

Every builder returns a `commands_pb2.Command` stamped with `time_ms`; `Driver` applies
them to a `StateMachine` with increasing log indexes and keeps the log for replays.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from dtf_common.pb.dtf.v1 import commands_pb2, types_pb2
from dtf_coordinator.state import Outcome, StateMachine, StateParams

Kind = types_pb2.TaskOutcome.Kind


def spec(
    task_id: str,
    *,
    priority: int = 0,
    dependencies: Sequence[str] = (),
    submitter: str = "",
    max_retries: int = 0,
    hardware: str = "",
    min_gpus: int = 0,
    min_memory_mb: int = 0,
    labels: Mapping[str, str] | None = None,
    type: str = "command",
    exclude_workers: Sequence[str] = (),
) -> types_pb2.TaskSpec:
    return types_pb2.TaskSpec(
        task_id=task_id,
        type=type,
        priority=priority,
        dependencies=list(dependencies),
        submitter=submitter,
        max_retries=max_retries,
        requirements=types_pb2.Requirements(
            hardware=hardware,
            min_gpus=min_gpus,
            min_memory_mb=min_memory_mb,
            labels=dict(labels or {}),
            exclude_workers=list(exclude_workers),
        ),
    )


def submit(*specs: types_pb2.TaskSpec, at: int = 0) -> commands_pb2.Command:
    return commands_pb2.Command(time_ms=at, submit_tasks=commands_pb2.SubmitTasks(tasks=list(specs)))


def register(
    worker_id: str,
    *,
    slots: int = 1,
    hardware: Sequence[str] = ("cpu",),
    gpus: int = 0,
    memory_mb: int = 0,
    labels: Mapping[str, str] | None = None,
    at: int = 0,
    held: Sequence[str] | None = None,
) -> commands_pb2.Command:
    """`held`: the leases the worker reports holding as it registers (None: it reports none)."""
    caps = types_pb2.Capabilities(
        hardware=list(hardware), gpu_count=gpus, memory_mb=memory_mb, labels=dict(labels or {}), slots=slots
    )
    return commands_pb2.Command(
        time_ms=at,
        register_worker=commands_pb2.RegisterWorker(
            worker_id=worker_id,
            hardware_id=f"hw-{worker_id}",
            capabilities=caps,
            held_lease_ids=list(held or ()),
            reports_held=held is not None,
        ),
    )


def heartbeat(
    worker_id: str, *, at: int = 0, health_json: str = "", held: Sequence[str] | None = None
) -> commands_pb2.Command:
    """`held`: the leases the worker reports holding (None: an entry from before heartbeats
    said, which renews them all)."""
    return commands_pb2.Command(
        time_ms=at,
        worker_heartbeat=commands_pb2.WorkerHeartbeat(
            worker_id=worker_id, health_json=health_json, held_lease_ids=list(held or ()), reports_held=held is not None
        ),
    )


def assign(*triples: tuple[str, str, str], at: int = 0) -> commands_pb2.Command:
    """Assignments as (task_id, worker_id, lease_id)."""
    return commands_pb2.Command(
        time_ms=at,
        assign_tasks=commands_pb2.AssignTasks(
            assignments=[commands_pb2.Assignment(task_id=t, worker_id=w, lease_id=lease) for t, w, lease in triples]
        ),
    )


def outcome(
    task_id: str,
    lease_id: str,
    kind: types_pb2.TaskOutcome.Kind.ValueType,
    *,
    error: str = "",
    non_retryable: bool = False,
    results: Iterable[types_pb2.ResultRecord] = (),
) -> types_pb2.TaskOutcome:
    return types_pb2.TaskOutcome(
        task_id=task_id, lease_id=lease_id, kind=kind, error=error, non_retryable=non_retryable, results=list(results)
    )


def report(*outcomes: types_pb2.TaskOutcome, at: int = 0) -> commands_pb2.Command:
    return commands_pb2.Command(time_ms=at, report_outcomes=commands_pb2.ReportOutcomes(outcomes=list(outcomes)))


def started(task_id: str, lease_id: str, *, at: int = 0) -> commands_pb2.Command:
    return report(outcome(task_id, lease_id, Kind.STARTED), at=at)


def completed(task_id: str, lease_id: str, *, at: int = 0) -> commands_pb2.Command:
    return report(outcome(task_id, lease_id, Kind.COMPLETED), at=at)


def failed(
    task_id: str, lease_id: str, *, error: str = "boom", non_retryable: bool = False, at: int = 0
) -> commands_pb2.Command:
    return report(outcome(task_id, lease_id, Kind.FAILED, error=error, non_retryable=non_retryable), at=at)


def cancel(*task_ids: str, reason: str = "", at: int = 0) -> commands_pb2.Command:
    return commands_pb2.Command(
        time_ms=at, cancel_tasks=commands_pb2.CancelTasks(task_ids=list(task_ids), reason=reason)
    )


def expire(*, at: int) -> commands_pb2.Command:
    return commands_pb2.Command(time_ms=at, expire_leases=commands_pb2.ExpireLeases())


def offline(worker_id: str, *, reason: str = "lost", at: int = 0) -> commands_pb2.Command:
    return commands_pb2.Command(
        time_ms=at, worker_offline=commands_pb2.WorkerOffline(worker_id=worker_id, reason=reason)
    )


def deregister(worker_id: str, *, returned: Sequence[str] = (), at: int = 0) -> commands_pb2.Command:
    return commands_pb2.Command(
        time_ms=at,
        deregister_worker=commands_pb2.DeregisterWorker(worker_id=worker_id, returned_lease_ids=list(returned)),
    )


@dataclass
class Driver:
    """A state machine plus the log of every command applied to it."""

    params: StateParams = field(default_factory=StateParams)
    sm: StateMachine = field(init=False)
    log: list[tuple[int, bytes]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.sm = StateMachine(self.params)

    def apply(self, command: commands_pb2.Command) -> Any:
        index = self.sm.applied_index + 1
        self.log.append((index, command.SerializeToString()))
        result: Outcome = self.sm.apply(index, command)
        return result

    def replay(self) -> StateMachine:
        """A fresh state machine fed the same log."""
        fresh = StateMachine(self.params)
        for index, raw in self.log:
            command = commands_pb2.Command()
            command.ParseFromString(raw)
            fresh.apply(index, command)
        return fresh
