"""The service layer: what the REST API and the gRPC worker service call.

Writes become commands proposed to consensus and answer with the committed outcome;
reads are served from this node's state machine.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from dtf_common.errors import Conflict, InvalidArgument, NotFound, NotLeader, PermissionDenied, QueueFull
from dtf_common.pb.dtf.v1 import commands_pb2, types_pb2
from dtf_common.schemas import Task, TaskCreate, TaskStatus, Worker, WorkerStatus
from dtf_coordinator.consensus import Consensus
from dtf_coordinator.metrics import Metrics
from dtf_coordinator.service import to_log
from dtf_coordinator.service.dispatch import Dispatcher
from dtf_coordinator.service.events import EventHub
from dtf_coordinator.service.views import iso_time, results_messages, task_view, worker_view
from dtf_coordinator.service.worker_records import (
    Heartbeat,
    HeartbeatAck,
    LeaseGrant,
    OutcomeAck,
    Registered,
    WorkerRegistration,
)
from dtf_coordinator.state import (
    Cancelled,
    Effect,
    LeasesReleased,
    Outcome,
    Rejected,
    ReportAcks,
    ResultsRecorded,
    StateMachine,
    Submitted,
    TaskOutput,
    TaskState,
    TaskTransition,
    WorkerChanged,
    WorkerState,
)

# The WebSocket channel of committed results, one message per task and report.
RESULTS = "results"


@dataclass(frozen=True, slots=True)
class TaskFilter:
    status: TaskStatus | None = None
    type: str | None = None
    worker_id: str | None = None
    priority: int | None = None
    since: datetime | None = None
    until: datetime | None = None

    def matches(self, t: TaskState) -> bool:
        if self.status is not None and t.status is not self.status:
            return False
        if self.type is not None and t.type != self.type:
            return False
        if self.worker_id is not None and t.worker_id != self.worker_id:
            return False
        if self.priority is not None and t.priority != self.priority:
            return False
        if self.since is not None and t.create_ms < self.since.timestamp() * 1000:
            return False
        return not (self.until is not None and t.create_ms > self.until.timestamp() * 1000)


# The namespace of result ids the coordinator derives (uuid5) from what a worker sent.
RESULT_IDS = uuid.UUID("6a3c1c6e-2f53-5d1e-9a57-2d5b0f3e8c11")


def result_id(task_id: str, lease_id: str, given: str) -> str:
    """A result record's id: the worker's own id for it, within its task's lease. Stable
    (a report sent again upserts the same rows) and never another task's."""
    return str(uuid.uuid5(RESULT_IDS, f"{task_id}/{lease_id}/{given}"))


class Coordinator:
    def __init__(
        self,
        node: Consensus,
        dispatcher: Dispatcher,
        *,
        hub: EventHub,
        metrics: Metrics,
        max_queue_size: int,
        heartbeat_interval_s: float,
        lease_ttl_s: float,
    ) -> None:
        self.node = node
        self.dispatcher = dispatcher
        self.hub = hub
        self.metrics = metrics
        self.max_queue_size = max_queue_size
        self.heartbeat_interval_s = heartbeat_interval_s
        self.lease_ttl_s = lease_ttl_s
        self.started_at = time.time()
        # node id -> {"api_url", "grpc_address"} of every coordinator, for sending clients on.
        self.directory: dict[str, dict[str, str]] = {}

    def worker_address_of(self, node_id: object) -> str | None:
        entry = self.directory.get(node_id) if isinstance(node_id, str) else None
        return entry.get("grpc_address") if entry else None

    def api_url_of(self, node_id: object) -> str | None:
        entry = self.directory.get(node_id) if isinstance(node_id, str) else None
        return entry.get("api_url") if entry else None

    async def read_barrier(self, consistency: str) -> None:
        """For a linearizable read: wait until this node's state holds every write
        acknowledged before now, as a quorum confirms. A cluster of one always does."""
        if consistency == "linearizable":
            await self.node.read_barrier()

    @property
    def state(self) -> StateMachine:
        return self.node.state

    async def _propose(self, command: commands_pb2.Command) -> Outcome:
        outcome = await self.node.propose(command)
        if isinstance(outcome, Rejected):
            raise outcome.error
        return outcome

    # ------------------------------------------------------------------ effects

    def on_effects(self, effects: list[Effect]) -> None:
        """Called after every applied batch, in log order."""
        kick = False
        live = self.hub.has_subscribers("task_updates")
        results = self.hub.has_subscribers(RESULTS)
        for effect in effects:
            if isinstance(effect, TaskTransition):
                if effect.status is TaskStatus.PENDING or effect.status.terminal:
                    kick = True
                if live:
                    self.hub.publish(
                        "task_updates",
                        {
                            "type": "task_update",
                            "task_id": effect.task_id,
                            "status": effect.status.value,
                            "worker_id": effect.worker_id,
                            "timestamp": iso_time(effect.time_ms),
                        },
                    )
            elif isinstance(effect, WorkerChanged):
                kick = True
            elif isinstance(effect, ResultsRecorded) and results:
                for message in results_messages(effect):
                    self.hub.publish(RESULTS, message)
            elif isinstance(effect, TaskOutput) and results:
                # On the results channel, so that a follower reads a test's output before
                # its result, in the order the worker sent them.
                self.hub.publish(
                    RESULTS,
                    {
                        "type": "task_output",
                        "task_id": effect.task_id,
                        "worker_id": effect.worker_id,
                        "stdout": effect.stdout,
                        "stderr": effect.stderr,
                    },
                )
        if kick:
            self.dispatcher.kick()

    # ------------------------------------------------------------------ tasks

    async def submit(self, tasks: list[TaskCreate], submitter: str) -> list[str]:
        if not tasks:
            raise InvalidArgument("submit at least one task", field="body")
        state = self.node.state
        if state.pending_count + len(tasks) > self.max_queue_size:
            raise QueueFull(
                f"queue is full: {state.pending_count} pending, limit {self.max_queue_size}",
                field="task_scheduler.max_queue_size",
            )
        specs = [to_log.task_spec(t, submitter=submitter) for t in tasks]
        outcome = await self._propose(commands_pb2.Command(submit_tasks=commands_pb2.SubmitTasks(tasks=specs)))
        assert isinstance(outcome, Submitted)
        return outcome.task_ids

    async def cancel(
        self, task_ids: list[str], reason: str = "cancelled by user", *, by: str | None = None
    ) -> Cancelled:
        """Cancel tasks; `by`: the caller's subject, who may cancel only the tasks it
        submitted (None: an admin, or the coordinator itself)."""
        if by is not None:
            for task_id in task_ids:
                task = self.node.state.tasks.get(task_id)
                if task is not None and task.submitter != by:
                    raise PermissionDenied(
                        f"task {task_id} was submitted by {task.submitter}: "
                        "only its submitter or an admin may cancel it",
                        field="task_id",
                    )
        outcome = await self._propose(
            commands_pb2.Command(cancel_tasks=commands_pb2.CancelTasks(task_ids=task_ids, reason=reason))
        )
        assert isinstance(outcome, Cancelled)
        return outcome

    def get_task(self, task_id: str) -> Task:
        task = self.node.state.tasks.get(task_id)
        if task is None:
            raise NotFound(f"task {task_id} not found", field="task_id")
        return task_view(task)

    def list_tasks(self, flt: TaskFilter, offset: int, limit: int) -> tuple[list[Task], int]:
        """Newest first."""
        matches = [t for t in reversed(self.node.state.tasks.values()) if flt.matches(t)]
        return [task_view(t) for t in matches[offset : offset + limit]], len(matches)

    # ------------------------------------------------------------------ workers (read)

    def get_worker(self, worker_id: str) -> Worker:
        worker = self.node.state.workers.get(worker_id)
        if worker is None:
            raise NotFound(f"worker {worker_id} not found", field="worker_id")
        return worker_view(worker)

    def list_workers(self, status: WorkerStatus | None = None) -> list[Worker]:
        return [worker_view(w) for w in self.node.state.workers.values() if status is None or w.status is status]

    # ------------------------------------------------------------------ worker service

    async def register_worker(self, req: WorkerRegistration, *, enrolling: bool = False) -> Registered:
        """Register a worker, or register it again. `enrolling`: with a join token, which may
        take a new worker id or an offline one, never one a live worker holds."""
        if not req.worker_id:
            raise InvalidArgument("worker_id is required", field="worker_id")
        known = self.node.state.workers.get(req.worker_id)
        if enrolling and known is not None and known.status is not WorkerStatus.OFFLINE:
            raise Conflict(
                f"worker {req.worker_id} is enrolled and {known.status.value}: it registers with its own "
                "credential, not a join token",
                field="worker_id",
            )
        await self._propose(
            commands_pb2.Command(
                register_worker=commands_pb2.RegisterWorker(
                    worker_id=req.worker_id,
                    hardware_id=req.hardware_id,
                    capabilities=to_log.capabilities(req.capabilities),
                    metadata_json=req.metadata_json,
                    name=req.name,
                    held_lease_ids=req.lease_ids,
                    reports_held=req.reports_leases,
                )
            )
        )
        # Leases assigned to this worker before (a restarted daemon) are offered again on its next poll.
        worker = self.node.state.workers[req.worker_id]
        self.dispatcher.forget(list(worker.leases))
        return Registered(
            worker_id=req.worker_id,
            heartbeat_interval_s=self.heartbeat_interval_s,
            lease_ttl_s=self.lease_ttl_s,
            coordinator_id=self.node.node_id,
        )

    def _worker(self, worker_id: str) -> WorkerState:
        worker = self.node.state.workers.get(worker_id)
        if worker is None or worker.status is WorkerStatus.OFFLINE:
            raise NotFound(
                f"worker {worker_id} is not registered (or was marked offline): register again", field="worker_id"
            )
        return worker

    async def heartbeat(self, req: Heartbeat) -> HeartbeatAck:
        self._worker(req.worker_id)
        await self._propose(
            commands_pb2.Command(
                worker_heartbeat=commands_pb2.WorkerHeartbeat(
                    worker_id=req.worker_id,
                    health_json=req.health_json,
                    performance_json=req.performance_json,
                    held_lease_ids=req.lease_ids,
                    reports_held=True,
                )
            )
        )
        held = self.node.state.workers[req.worker_id].leases
        revoked = tuple(lease_id for lease_id in req.lease_ids if lease_id not in held)
        return HeartbeatAck(revoked_lease_ids=revoked, lease_ttl_s=self.lease_ttl_s)

    async def lease(self, worker_id: str, max_tasks: int, wait_ms: int) -> list[LeaseGrant]:
        if not self.node.is_leader():
            # Only the leader hands out work: send the worker there.
            raise NotLeader("this coordinator is not the leader", leader_hint=self.node.leader_hint())
        self._worker(worker_id)
        if max_tasks < 0 or max_tasks > 10_000:
            raise InvalidArgument("max_tasks must be between 0 and 10000", field="max_tasks")
        grants = await self.dispatcher.wait_for_tasks(worker_id, max_tasks, min(wait_ms, 60_000) / 1000)
        state = self.node.state
        leased: list[LeaseGrant] = []
        delivered = []
        for task_id, lease_id in grants:
            t = state.tasks.get(task_id)
            if t is None or t.lease_id != lease_id:
                continue  # cancelled or requeued between grant and delivery
            delivered.append((task_id, lease_id))
            leased.append(
                LeaseGrant(
                    task_id=t.task_id,
                    lease_id=lease_id,
                    type=t.type,
                    parameters_json=t.parameters_json,
                    attempt=t.attempts,
                    timeout_s=t.timeout_s,
                    lease_expires_ms=t.lease_expires_ms or 0,
                    metadata_json=t.metadata_json,
                    priority=t.priority,
                )
            )
        self.dispatcher.mark_delivered(delivered)
        return leased

    async def report(self, worker_id: str, outcomes: Iterable[types_pb2.TaskOutcome]) -> list[OutcomeAck]:
        """Record a worker's outcomes. They are the command log's own records (the wire
        carries them in that form), stamped here with what the worker may not choose: its
        authenticated id, and for each result record the outcome's task and an id of the
        coordinator's, so that no report can write over another task's results. (The state
        machine accepts an outcome only from the worker holding its lease.)"""
        batch = []
        for o in outcomes:
            if o.kind == types_pb2.TaskOutcome.KIND_UNSPECIFIED:
                raise InvalidArgument(f"outcome for task {o.task_id} has no kind", field="outcomes.kind")
            o.worker_id = worker_id
            for record in o.results:
                record.result_id = result_id(o.task_id, o.lease_id, record.result_id)
                record.task_id = o.task_id
                record.worker_id = worker_id
            batch.append(o)
        if not batch:
            return []
        outcome = await self._propose(commands_pb2.Command(report_outcomes=commands_pb2.ReportOutcomes(outcomes=batch)))
        assert isinstance(outcome, ReportAcks)
        return [OutcomeAck(t, lease, accepted, detail) for t, lease, accepted, detail in outcome.acks]

    async def deregister(self, worker_id: str, returned: list[str]) -> int:
        outcome = await self._propose(
            commands_pb2.Command(
                deregister_worker=commands_pb2.DeregisterWorker(worker_id=worker_id, returned_lease_ids=returned)
            )
        )
        assert isinstance(outcome, LeasesReleased)
        return len(outcome.requeued)

    # ------------------------------------------------------------------ status

    def status(self, *, fingerprint: bool = False) -> dict[str, Any]:
        state = self.node.state
        extra = {"state_fingerprint": state.fingerprint()} if fingerprint else {}
        workers: dict[str, int] = {s.value: 0 for s in WorkerStatus}
        for w in state.workers.values():
            workers[w.status.value] += 1
        return {
            "status": "ok" if self.node.is_leader() else "follower",
            "node_id": self.node.node_id,
            "leader_id": self.node.leader_hint(),
            "is_leader": self.node.is_leader(),
            "uptime_seconds": round(time.time() - self.started_at, 3),
            "applied_index": state.applied_index,
            "tasks": {s.value: n for s, n in state.status_counts.items()},
            "queue_depth": state.pending_count,
            "max_queue_size": self.max_queue_size,
            "workers": workers,
            **extra,
        }

    def update_gauges(self) -> None:
        state = self.node.state
        for s, n in state.status_counts.items():
            self.metrics.tasks.labels(s.value).set(n)
        self.metrics.queue_depth.set(state.pending_count)
        counts = dict.fromkeys(WorkerStatus, 0)
        for w in state.workers.values():
            counts[w.status] += 1
        for ws, n in counts.items():
            self.metrics.workers.labels(ws.value).set(n)
        self.metrics.applied_index.set(state.applied_index)
        status = self.node.status()
        self.metrics.raft_term.set(status.term)
        self.metrics.raft_commit_index.set(status.commit_index)
        self.metrics.raft_is_leader.set(1 if self.node.is_leader() else 0)
