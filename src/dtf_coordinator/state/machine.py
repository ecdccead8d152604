"""The coordinator's replicated state machine.

`StateMachine.apply(index, command)` is the only way state changes. Time comes from
`command.time_ms` (stamped by the leader), ids from the command, so the same log gives
the same state on every node and after every restart.
"""

from __future__ import annotations

import hashlib
import heapq
import json
from bisect import bisect_left
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from dtf_common.errors import Conflict, InvalidArgument, NotFound, QueueFull
from dtf_common.pb.dtf.v1 import commands_pb2, types_pb2
from dtf_common.schemas import TaskStatus, WorkerStatus
from dtf_coordinator.state.model import TRANSITIONS, InvariantError, Needs, Offers, TaskState, WorkerState
from dtf_coordinator.state.outcomes import (
    Assigned,
    Cancelled,
    Done,
    Effect,
    LeasesReleased,
    Outcome,
    Rejected,
    ReportAcks,
    ResultsRecorded,
    Submitted,
    TaskOutput,
    TaskTransition,
    WorkerChanged,
)

SNAPSHOT_VERSION = 1
# Plain ints: attribute access through the protobuf enum wrapper is slow on the hot path.
STARTED = int(types_pb2.TaskOutcome.STARTED)
COMPLETED = int(types_pb2.TaskOutcome.COMPLETED)
PROGRESS = int(types_pb2.TaskOutcome.PROGRESS)
FAILED = int(types_pb2.TaskOutcome.FAILED)
_LEASED = frozenset({TaskStatus.ASSIGNED, TaskStatus.RUNNING})


@dataclass(frozen=True, slots=True)
class StateParams:
    """Constants of the state machine; every replica must use the same values."""

    max_queue_size: int = 10_000
    lease_ttl_ms: int = 30_000
    max_attempts: int = 3
    retry_backoff_ms: int = 1_000
    retry_backoff_max_ms: int = 60_000


class StateMachine:
    def __init__(self, params: StateParams | None = None) -> None:
        self.params = params or StateParams()
        self.applied_index = 0
        self.tasks: dict[str, TaskState] = {}
        self.workers: dict[str, WorkerState] = {}
        self.leases: dict[str, str] = {}  # lease_id -> task_id
        self.dependents: dict[str, list[str]] = {}
        # Ready tasks (pending, dependencies met): priority -> submitter -> (seq, task id),
        # sorted by seq, so a requeued task keeps its place by age, as a restored state has it.
        self.ready: dict[int, dict[str, list[tuple[int, str]]]] = {}
        self.pending_count = 0
        self.status_counts: dict[TaskStatus, int] = dict.fromkeys(TaskStatus, 0)
        # Fair share: tasks each submitter holds leased, and when it was last granted one.
        self.leased_by_submitter: dict[str, int] = {}
        self.last_served: dict[str, int] = {}
        self._grants = 0
        self._seq = 0
        self._effects: list[Effect] = []

    # ------------------------------------------------------------------ entry points

    def apply(self, index: int, command: commands_pb2.Command) -> Outcome:
        if index <= self.applied_index:
            raise InvariantError(f"entry {index} applied twice (applied_index={self.applied_index})")
        self.applied_index = index
        now = command.time_ms
        body = command.WhichOneof("body")
        handler = _HANDLERS.get(body or "")
        if handler is None:
            return Rejected(InvalidArgument(f"unknown command {body!r}", field="body"))
        outcome: Outcome = handler(self, getattr(command, body or ""), now)
        return outcome

    def skip_to(self, index: int) -> None:
        """Count a log entry that carries no command (a Raft leader's no-op, a membership change)."""
        if index <= self.applied_index:
            raise InvariantError(f"entry {index} applied twice (applied_index={self.applied_index})")
        self.applied_index = index

    def drain_effects(self) -> list[Effect]:
        effects, self._effects = self._effects, []
        return effects

    def iter_ready(self) -> Iterator[TaskState]:
        """Ready tasks in scheduling order: priority, then fair share among submitters, then age.

        Within a priority the next task comes from the submitter holding the fewest leased
        tasks (counting those yielded so far), then the one served least recently, so one
        large submission cannot starve a small one, even when workers take one task at a time.
        The queues are iterated in place (no copy, so a pass costs what it reads): do not
        apply commands while consuming this iterator.
        """
        for priority in sorted(self.ready, reverse=True):
            turn = self._grants
            held_by, served = self.leased_by_submitter, self.last_served
            heap = [
                (held_by.get(submitter, 0), served.get(submitter, 0), submitter, iter(ids))
                for submitter, ids in self.ready[priority].items()
            ]
            heapq.heapify(heap)
            while heap:
                held, _, submitter, it = heap[0]
                entry = next(it, None)
                if entry is None:
                    heapq.heappop(heap)
                    continue
                turn += 1
                heapq.heapreplace(heap, (held + 1, turn, submitter, it))
                yield self.tasks[entry[1]]

    def expired_leases(self, now_ms: int) -> list[str]:
        """Leases expired at `now_ms`, earliest first, then by task age.

        The order is part of the replicated result (a dependent's error names the first
        dependency that failed), so it must not depend on how `self.leases` was built:
        a state restored from a snapshot holds the same leases in another order.
        """
        expired = [
            (expiry, self.tasks[task_id].seq, lease_id)
            for lease_id, task_id in self.leases.items()
            if (expiry := self.tasks[task_id].lease_expires_ms) is not None and expiry <= now_ms
        ]
        return [lease_id for *_, lease_id in sorted(expired)]

    # ------------------------------------------------------------------ commands

    def _submit(self, cmd: commands_pb2.SubmitTasks, now: int) -> Outcome:
        specs = list(cmd.tasks)
        if not specs:
            return Rejected(InvalidArgument("no tasks to submit", field="tasks"))
        if self.pending_count + len(specs) > self.params.max_queue_size:
            return Rejected(
                QueueFull(
                    f"queue is full: {self.pending_count} pending, limit {self.params.max_queue_size}",
                    field="task_scheduler.max_queue_size",
                )
            )
        error = self._validate_batch(specs)
        if error is not None:
            return Rejected(error)
        # Dependencies inside the batch come first: submit in topological order.
        for spec in _topological(specs):
            self._add_task(spec, now)
        return Submitted([s.task_id for s in specs])

    def _validate_batch(self, specs: list[types_pb2.TaskSpec]) -> InvalidArgument | None:
        batch: dict[str, types_pb2.TaskSpec] = {}
        for i, spec in enumerate(specs):
            if not spec.task_id:
                return InvalidArgument("task_id missing", field=f"[{i}].task_id")
            if spec.task_id in self.tasks or spec.task_id in batch:
                return InvalidArgument(f"task_id {spec.task_id} already exists", field=f"[{i}].task_id")
            batch[spec.task_id] = spec
        for i, spec in enumerate(specs):
            for dep in spec.dependencies:
                if dep == spec.task_id:
                    return InvalidArgument(f"task {dep} depends on itself", field=f"[{i}].dependencies")
                if dep not in self.tasks and dep not in batch:
                    return InvalidArgument(f"unknown dependency {dep}", field=f"[{i}].dependencies")
        cycle = _find_cycle(batch)
        if cycle:
            return InvalidArgument("dependency cycle: " + " -> ".join(cycle), field="dependencies")
        return None

    def _add_task(self, spec: types_pb2.TaskSpec, now: int) -> None:
        self._seq += 1
        req = spec.requirements
        task = TaskState(
            task_id=spec.task_id,
            type=spec.type,
            priority=spec.priority,
            parameters_json=spec.parameters_json or "{}",
            dependencies=tuple(spec.dependencies),
            needs=Needs(req.hardware, req.min_gpus, req.min_memory_mb, dict(req.labels), tuple(req.exclude_workers)),
            metadata_json=spec.metadata_json or "{}",
            max_retries=spec.max_retries,
            timeout_s=spec.timeout_s,
            submitter=spec.submitter,
            create_ms=now,
            seq=self._seq,
        )
        self.tasks[task.task_id] = task
        self.status_counts[TaskStatus.PENDING] += 1
        self.pending_count += 1
        self._effects.append(TaskTransition(task.task_id, TaskStatus.PENDING, None, now))
        broken = next(
            (
                self.tasks[d]
                for d in task.dependencies
                if self.tasks[d].status in (TaskStatus.FAILED, TaskStatus.CANCELLED)
            ),
            None,
        )
        if broken is not None:
            self._fail_dependent(task, broken, now)
            return
        for dep_id in task.dependencies:
            if self.tasks[dep_id].status is not TaskStatus.COMPLETED:
                task.waiting_on += 1
                self.dependents.setdefault(dep_id, []).append(task.task_id)
        if task.waiting_on == 0:
            self._enqueue(task)

    def _register(self, cmd: commands_pb2.RegisterWorker, now: int) -> Outcome:
        caps = cmd.capabilities
        offers = Offers(
            hardware=tuple(caps.hardware) or ("cpu",),
            gpu_count=caps.gpu_count,
            memory_mb=caps.memory_mb,
            labels=dict(caps.labels),
            slots=max(1, caps.slots),
            details_json=caps.details_json or "{}",
        )
        worker = self.workers.get(cmd.worker_id)
        if worker is None:
            worker = WorkerState(
                worker_id=cmd.worker_id,
                name=cmd.name or cmd.worker_id,
                hardware_id=cmd.hardware_id,
                offers=offers,
                metadata_json=cmd.metadata_json or "{}",
                registered_ms=now,
                last_seen_ms=now,
            )
            self.workers[worker.worker_id] = worker
        else:
            # A re-registration (a restarted daemon, or one that lost its coordinator)
            # keeps history. A running lease the worker no longer holds died with its last
            # process: lost now, not a lease timeout later. Assigned ones it never saw
            # are offered to it again.
            worker.name = cmd.name or worker.name
            worker.hardware_id = cmd.hardware_id
            worker.offers = offers
            worker.metadata_json = cmd.metadata_json or worker.metadata_json
            worker.last_seen_ms = now
            if cmd.reports_held:
                released = LeasesReleased()
                held = set(cmd.held_lease_ids)
                for lease_id, task_id in list(worker.leases.items()):
                    task = self.tasks[task_id]
                    if lease_id not in held and task.status is TaskStatus.RUNNING:
                        self._lose_lease(task, now, f"worker {worker.worker_id} restarted without it", released)
                self._refresh_worker_status(worker, seen=True)
                self._effects.append(WorkerChanged(worker.worker_id))
                return released
        self._refresh_worker_status(worker, seen=True)
        self._effects.append(WorkerChanged(worker.worker_id))
        return Done()

    def _heartbeat(self, cmd: commands_pb2.WorkerHeartbeat, now: int) -> Outcome:
        worker = self.workers.get(cmd.worker_id)
        if worker is None:
            return Rejected(NotFound(f"worker {cmd.worker_id} is not registered", field="worker_id"))
        worker.last_seen_ms = now
        if cmd.health_json:
            worker.health_json = cmd.health_json
            worker.critical = _json_obj(cmd.health_json).get("status") == "critical"
        if cmd.performance_json:
            worker.performance_json = cmd.performance_json
        # Only what the worker says it still holds: a lease it lost (its process died with
        # the worker's last life) must run out, not be kept alive by the next life.
        expiry = now + self.params.lease_ttl_ms
        held = set(cmd.held_lease_ids) if cmd.reports_held else worker.leases.keys()
        for lease_id, task_id in worker.leases.items():
            if lease_id in held:
                self.tasks[task_id].lease_expires_ms = expiry
        self._refresh_worker_status(worker, seen=True)
        self._effects.append(WorkerChanged(worker.worker_id))
        return Done()

    def _assign(self, cmd: commands_pb2.AssignTasks, now: int) -> Outcome:
        granted: list[tuple[str, str, str]] = []
        for a in cmd.assignments:
            task = self.tasks.get(a.task_id)
            worker = self.workers.get(a.worker_id)
            # The plan was made against the leader's view; anything that changed since
            # (cancelled task, lost worker, full worker) is skipped, not an error.
            if task is None or worker is None or not task.ready or not worker.alive:
                continue
            if not worker.offers.satisfies(task.needs, worker.worker_id):
                continue
            if worker.free_slots() <= 0 or a.lease_id in self.leases:
                continue
            self._dequeue(task)
            task.worker_id = worker.worker_id  # before the transition, so its effect names the worker
            self._transition(task, TaskStatus.ASSIGNED, now)
            task.lease_id = a.lease_id
            task.lease_expires_ms = now + self.params.lease_ttl_ms
            task.attempts += 1
            task.start_ms = None
            self._grants += 1
            self.last_served[task.submitter] = self._grants
            self.leases[a.lease_id] = task.task_id
            worker.leases[a.lease_id] = task.task_id
            self._refresh_worker_status(worker)
            granted.append((task.task_id, worker.worker_id, a.lease_id))
        return Assigned(granted)

    def _report(self, cmd: commands_pb2.ReportOutcomes, now: int) -> Outcome:
        acks: list[tuple[str, str, bool, str]] = []
        for o in cmd.outcomes:
            task = self.tasks.get(o.task_id)
            if task is None or task.lease_id != o.lease_id or self.leases.get(o.lease_id) != o.task_id:
                acks.append((o.task_id, o.lease_id, False, "lease is not current"))
                continue
            if o.worker_id and task.worker_id != o.worker_id:
                acks.append((o.task_id, o.lease_id, False, f"the lease is held by worker {task.worker_id}"))
                continue
            worker = self.workers.get(task.worker_id or "")
            if o.stdout or o.stderr:
                self._effects.append(TaskOutput(o.task_id, o.worker_id, o.stdout, o.stderr))
            if o.kind in (STARTED, PROGRESS):
                if task.status is TaskStatus.ASSIGNED:
                    self._transition(task, TaskStatus.RUNNING, now)
                    task.start_ms = now
                if o.kind == PROGRESS and o.results:
                    self._effects.append(ResultsRecorded(list(o.results), worker.hardware_id if worker else ""))
                acks.append((o.task_id, o.lease_id, True, ""))
                continue
            if o.kind not in (COMPLETED, FAILED):
                acks.append((o.task_id, o.lease_id, False, "outcome kind missing"))
                continue
            if o.results:
                self._effects.append(ResultsRecorded(list(o.results), worker.hardware_id if worker else ""))
            task.results_json = o.results_json or None
            run_ms = now - (task.start_ms if task.start_ms is not None else now)
            self._release_lease(task)
            if worker is not None:
                worker.busy_ms += max(0, run_ms)
                if o.kind == COMPLETED:
                    worker.completed += 1
                else:
                    worker.failed += 1
                worker.last_seen_ms = now
                self._refresh_worker_status(worker)
            if o.kind == COMPLETED:
                task.error = None
                self._finish(task, TaskStatus.COMPLETED, now)
            else:
                task.failures += 1
                error = o.error or "task failed"
                if not o.non_retryable and task.failures <= task.max_retries:
                    self._requeue(task, now, f"attempt {task.attempts} failed: {error}", backoff=True)
                else:
                    task.error = error
                    self._finish(task, TaskStatus.FAILED, now)
            acks.append((o.task_id, o.lease_id, True, ""))
        return ReportAcks(acks)

    def _cancel(self, cmd: commands_pb2.CancelTasks, now: int) -> Outcome:
        cancelled, final, unknown = [], [], []
        for task_id in cmd.task_ids:
            task = self.tasks.get(task_id)
            if task is None:
                unknown.append(task_id)
            elif task.status.terminal:
                final.append(task_id)
            else:
                if task.status is TaskStatus.PENDING:
                    self._dequeue(task)
                else:
                    self._release_lease(task)
                task.error = cmd.reason or "cancelled"
                self._finish(task, TaskStatus.CANCELLED, now)
                cancelled.append(task_id)
        if unknown and not cancelled and not final:
            return Rejected(NotFound(f"unknown task {unknown[0]}", field="task_id"))
        if final and not cancelled and not unknown and len(final) == 1:
            task = self.tasks[final[0]]
            return Rejected(Conflict(f"task {final[0]} is already {task.status.value}", field="task_id"))
        return Cancelled(cancelled, final, unknown)

    def _expire(self, _cmd: commands_pb2.ExpireLeases, now: int) -> Outcome:
        released = LeasesReleased()
        for lease_id in self.expired_leases(now):
            task = self.tasks[self.leases[lease_id]]
            self._lose_lease(task, now, "lease expired", released)
        return released

    def _offline(self, cmd: commands_pb2.WorkerOffline, now: int) -> Outcome:
        worker = self.workers.get(cmd.worker_id)
        if worker is None:
            return Rejected(NotFound(f"worker {cmd.worker_id} is not registered", field="worker_id"))
        released = LeasesReleased()
        for task_id in list(worker.leases.values()):
            self._lose_lease(self.tasks[task_id], now, f"worker {worker.worker_id} offline: {cmd.reason}", released)
        worker.status = WorkerStatus.OFFLINE
        self._effects.append(WorkerChanged(worker.worker_id))
        return released

    def _deregister(self, cmd: commands_pb2.DeregisterWorker, now: int) -> Outcome:
        worker = self.workers.get(cmd.worker_id)
        if worker is None:
            return Rejected(NotFound(f"worker {cmd.worker_id} is not registered", field="worker_id"))
        released = LeasesReleased()
        returned = set(cmd.returned_lease_ids)
        for lease_id, task_id in list(worker.leases.items()):
            task = self.tasks[task_id]
            if lease_id in returned:
                # Handed back on purpose: not the task's fault, so no attempt is counted.
                task.attempts -= 1
                self._release_lease(task)
                self._requeue(task, now, "returned by a stopping worker", backoff=False)
                released.requeued.append(task_id)
            else:
                self._lose_lease(task, now, f"worker {worker.worker_id} left", released)
        worker.status = WorkerStatus.OFFLINE
        self._effects.append(WorkerChanged(worker.worker_id))
        return released

    # ------------------------------------------------------------------ task lifecycle

    def _transition(self, task: TaskState, new: TaskStatus, now: int) -> None:
        if new not in TRANSITIONS[task.status]:
            raise InvariantError(f"task {task.task_id}: {task.status.value} -> {new.value} is not allowed")
        self.status_counts[task.status] -= 1
        self.status_counts[new] += 1
        was_leased, leased = task.status in _LEASED, new in _LEASED
        if was_leased != leased:
            self._count_leased(task.submitter, 1 if leased else -1)
        if task.status is TaskStatus.PENDING:
            self.pending_count -= 1
        if new is TaskStatus.PENDING:
            self.pending_count += 1
        task.status = new
        self._effects.append(TaskTransition(task.task_id, new, task.worker_id, now))

    def _count_leased(self, submitter: str, delta: int) -> None:
        held = self.leased_by_submitter.get(submitter, 0) + delta
        if held:
            self.leased_by_submitter[submitter] = held
        else:
            self.leased_by_submitter.pop(submitter, None)

    def _enqueue(self, task: TaskState) -> None:
        ids = self.ready.setdefault(task.priority, {}).setdefault(task.submitter, [])
        key = (task.seq, task.task_id)
        i = bisect_left(ids, key)
        if i == len(ids) or ids[i] != key:
            ids.insert(i, key)

    def _dequeue(self, task: TaskState) -> None:
        by_submitter = self.ready.get(task.priority, {})
        ids = by_submitter.get(task.submitter, [])
        key = (task.seq, task.task_id)
        i = bisect_left(ids, key)
        if i == len(ids) or ids[i] != key:
            return
        del ids[i]
        if not ids:
            del by_submitter[task.submitter]
            if not by_submitter:
                del self.ready[task.priority]

    def _release_lease(self, task: TaskState) -> None:
        if task.lease_id is None:
            return
        self.leases.pop(task.lease_id, None)
        worker = self.workers.get(task.worker_id or "")
        if worker is not None:
            worker.leases.pop(task.lease_id, None)
            self._refresh_worker_status(worker)
        task.lease_id = None
        task.lease_expires_ms = None

    def _lose_lease(self, task: TaskState, now: int, reason: str, released: LeasesReleased) -> None:
        self._release_lease(task)
        task.lost += 1
        if task.lost >= self.params.max_attempts:
            task.error = f"{reason}; lost {task.lost} leases (task_scheduler.max_attempts={self.params.max_attempts})"
            self._finish(task, TaskStatus.FAILED, now)
            released.failed.append(task.task_id)
        else:
            self._requeue(task, now, reason, backoff=False)
            released.requeued.append(task.task_id)

    def _requeue(self, task: TaskState, now: int, reason: str, *, backoff: bool) -> None:
        task.error = reason
        if backoff:
            delay = self.params.retry_backoff_ms * 2 ** max(0, task.failures - 1)
            task.not_before_ms = now + min(delay, self.params.retry_backoff_max_ms)
        self._transition(task, TaskStatus.PENDING, now)
        task.worker_id = None
        task.start_ms = None
        self._enqueue(task)

    def _finish(self, task: TaskState, status: TaskStatus, now: int) -> None:
        self._transition(task, status, now)
        task.end_ms = now
        # Walk dependents with a work list: chains can be longer than Python's recursion limit.
        work = [task]
        while work:
            done = work.pop()
            for dep_id in self.dependents.pop(done.task_id, []):
                dependent = self.tasks[dep_id]
                if dependent.status is not TaskStatus.PENDING:
                    continue
                if done.status is TaskStatus.COMPLETED:
                    dependent.waiting_on -= 1
                    if dependent.waiting_on == 0:
                        self._enqueue(dependent)
                else:
                    self._fail_dependent(dependent, done, now)
                    work.append(dependent)

    def _fail_dependent(self, dependent: TaskState, cause: TaskState, now: int) -> None:
        self._dequeue(dependent)
        why = cause.error or cause.status.value
        dependent.error = f"dependency {cause.task_id} {cause.status.value}: {why}"
        self._transition(dependent, TaskStatus.FAILED, now)
        dependent.end_ms = now

    def _refresh_worker_status(self, worker: WorkerState, *, seen: bool = False) -> None:
        """Derive online/busy/error from leases and health; offline sticks until the worker is seen again."""
        before = worker.status
        if before is WorkerStatus.OFFLINE and not seen:
            return
        if worker.critical:
            worker.status = WorkerStatus.ERROR
        elif len(worker.leases) >= worker.offers.slots:
            worker.status = WorkerStatus.BUSY
        else:
            worker.status = WorkerStatus.ONLINE
        if worker.status is not before:
            self._effects.append(WorkerChanged(worker.worker_id))

    # ------------------------------------------------------------------ snapshots

    def snapshot(self) -> dict[str, Any]:
        """The whole state as plain data sharing nothing with the live state, so it can be
        serialized on another thread while commands keep being applied."""
        return {
            "version": SNAPSHOT_VERSION,
            "applied_index": self.applied_index,
            "seq": self._seq,
            "grants": self._grants,
            "last_served": dict(self.last_served),
            "tasks": [t.to_dict() for t in sorted(self.tasks.values(), key=lambda t: t.seq)],
            "workers": [w.to_dict() for w in self.workers.values()],
        }

    @classmethod
    def restore(cls, data: dict[str, Any], params: StateParams | None = None) -> StateMachine:
        if data.get("version") != SNAPSHOT_VERSION:
            raise InvariantError(f"unsupported snapshot version {data.get('version')}")
        sm = cls(params)
        sm.applied_index = data["applied_index"]
        sm._seq = data["seq"]
        sm._grants = data.get("grants", 0)
        sm.last_served = dict(data.get("last_served", {}))
        for raw in data["tasks"]:
            task = TaskState.from_dict(raw)
            sm.tasks[task.task_id] = task
            sm.status_counts[task.status] += 1
            if task.status is TaskStatus.PENDING:
                sm.pending_count += 1
                if task.waiting_on == 0:
                    sm._enqueue(task)
            if task.lease_id is not None:
                sm.leases[task.lease_id] = task.task_id
            if task.status in _LEASED:
                sm._count_leased(task.submitter, 1)
        for task in sm.tasks.values():
            if task.status is TaskStatus.PENDING:
                for dep_id in task.dependencies:
                    if sm.tasks[dep_id].status is not TaskStatus.COMPLETED:
                        sm.dependents.setdefault(dep_id, []).append(task.task_id)
        for raw in data["workers"]:
            worker = WorkerState.from_dict(raw)
            sm.workers[worker.worker_id] = worker
        return sm

    def restored(self, data: dict[str, Any]) -> StateMachine:
        """A machine with this one's parameters holding a snapshot's `data`."""
        return StateMachine.restore(data, self.params)

    def fingerprint(self) -> str:
        """A digest of the whole state: equal on replicas that applied the same log."""
        return hashlib.sha256(json.dumps(self.snapshot(), sort_keys=True).encode()).hexdigest()


def _json_obj(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text) if text else {}
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _find_cycle(batch: dict[str, types_pb2.TaskSpec]) -> list[str] | None:
    """A cycle among the batch's tasks, as a path of ids, or None (iterative DFS)."""
    WHITE, GREY, BLACK = 0, 1, 2
    color = dict.fromkeys(batch, WHITE)
    for root in batch:
        if color[root] != WHITE:
            continue
        stack: list[tuple[str, Iterator[str]]] = [(root, iter(batch[root].dependencies))]
        color[root] = GREY
        while stack:
            node, deps = stack[-1]
            nxt = next((d for d in deps if d in batch), None)
            if nxt is None:
                color[node] = BLACK
                stack.pop()
            elif color[nxt] == GREY:
                path = [n for n, _ in stack]
                return [*path[path.index(nxt) :], nxt]
            elif color[nxt] == WHITE:
                color[nxt] = GREY
                stack.append((nxt, iter(batch[nxt].dependencies)))
    return None


def _topological(specs: list[types_pb2.TaskSpec]) -> list[types_pb2.TaskSpec]:
    by_id = {s.task_id: s for s in specs}
    done: set[str] = set()
    order: list[types_pb2.TaskSpec] = []

    def visit(spec: types_pb2.TaskSpec) -> None:
        stack = [(spec, False)]
        while stack:
            node, expanded = stack.pop()
            if node.task_id in done:
                continue
            if expanded:
                done.add(node.task_id)
                order.append(node)
                continue
            stack.append((node, True))
            stack.extend((by_id[d], False) for d in node.dependencies if d in by_id and d not in done)

    for spec in specs:
        visit(spec)
    return order


_HANDLERS: dict[str, Any] = {
    "submit_tasks": StateMachine._submit,
    "register_worker": StateMachine._register,
    "worker_heartbeat": StateMachine._heartbeat,
    "assign_tasks": StateMachine._assign,
    "report_outcomes": StateMachine._report,
    "cancel_tasks": StateMachine._cancel,
    "expire_leases": StateMachine._expire,
    "worker_offline": StateMachine._offline,
    "deregister_worker": StateMachine._deregister,
}
