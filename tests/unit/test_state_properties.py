"""The state machine under random command sequences, with time passed in as data.

A hypothesis rule-based machine submits DAGs of tasks, registers workers with random
capabilities, plans with every strategy, starts, completes and fails tasks, heartbeats,
advances time and expires leases, takes workers offline, deregisters them, cancels and
restores snapshots. After every step it checks what users rely on: no task is lost or
finished twice, dependencies and requirements are respected, leases are consistent, and
the same log always rebuilds the same state.

Run more examples with `DTF_HYPOTHESIS_EXAMPLES=5000 pytest --timeout=0 ...` (the suite-wide
300 s timeout would otherwise stop a long run part-way).
"""

from __future__ import annotations

import os
from collections import Counter
from typing import Any

from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from dtf_common.errors import Conflict, InvalidArgument, NotFound, QueueFull
from dtf_common.pb.dtf.v1 import commands_pb2
from dtf_common.schemas import TaskStatus, WorkerStatus
from dtf_coordinator.scheduling.planner import STRATEGIES, Planner
from dtf_coordinator.state import (
    Assigned,
    Cancelled,
    LeasesReleased,
    Rejected,
    ReportAcks,
    StateMachine,
    StateParams,
    Submitted,
    TaskTransition,
)
from dtf_coordinator.state.model import Needs, Offers
from tests.unit.commands import (
    assign,
    cancel,
    completed,
    deregister,
    expire,
    failed,
    heartbeat,
    offline,
    register,
    spec,
    started,
    submit,
)

PARAMS = StateParams(
    max_queue_size=30, lease_ttl_ms=1_000, max_attempts=2, retry_backoff_ms=100, retry_backoff_max_ms=400
)
LEASED = (TaskStatus.ASSIGNED, TaskStatus.RUNNING)
SUBMITTERS = ("alice", "bob", "carol")

needs_st = st.sampled_from(
    [
        {},
        {},
        {"hardware": "cpu"},
        {"hardware": "cuda"},
        {"hardware": "cuda", "min_gpus": 2},
        {"min_memory_mb": 16_000},
        {"labels": {"zone": "a"}},
        {"hardware": "cuda", "labels": {"zone": "b"}},
    ]
)
caps_st = st.fixed_dictionaries(
    {
        "hardware": st.sampled_from([("cpu",), ("cpu", "cuda")]),
        "gpus": st.integers(0, 4),
        "memory_mb": st.sampled_from([0, 8_000, 32_000]),
        "labels": st.sampled_from([{}, {"zone": "a"}, {"zone": "b"}]),
        "slots": st.integers(1, 3),
    }
)


def _has_cycle(batch: dict[str, list[str]]) -> bool:
    state: dict[str, int] = {}

    def visit(node: str) -> bool:
        state[node] = 1
        for dep in batch[node]:
            if dep in batch and (state.get(dep) == 1 or (dep not in state and visit(dep))):
                return True
        state[node] = 2
        return False

    return any(node not in state and visit(node) for node in batch)


def _without_index(sm: StateMachine) -> dict[str, Any]:
    snap = sm.snapshot()
    del snap["applied_index"]
    return snap


def _comparable(out: Any) -> Any:
    return (type(out.error), out.error.to_dict()) if isinstance(out, Rejected) else out


class LifecycleMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.sm = StateMachine(PARAMS)
        self.shadow: StateMachine | None = None  # the machine a snapshot was taken from, still running
        self.log: list[tuple[int, bytes]] = []
        self.now = 0
        self.next_task = 0
        self.next_lease = 0
        self.submitted: set[str] = set()
        self.status: dict[str, TaskStatus] = {}  # from TaskTransition effects only
        self.finished: set[str] = set()
        self.lease_cap: dict[str, int] = {}  # most leases a worker may hold (slots, or more after shrinking)
        self.expiry: dict[str, int] = {}  # lease id -> expiry the model expects
        self.lost: Counter[str] = Counter()
        self.failures: Counter[str] = Counter()
        self.stale: list[tuple[str, str]] = []
        self.planners = {s: Planner(strategy=s) for s in STRATEGIES}

    # ------------------------------------------------------------------ plumbing

    def apply(self, command: commands_pb2.Command) -> Any:
        command.time_ms = self.now
        index = self.sm.applied_index + 1
        self.log.append((index, command.SerializeToString()))
        out = self.sm.apply(index, command)
        if self.shadow is not None:
            assert _comparable(self.shadow.apply(index, command)) == _comparable(out)
            self.shadow.drain_effects()
        for effect in self.sm.drain_effects():
            if isinstance(effect, TaskTransition):
                assert effect.task_id not in self.finished, f"{effect.task_id} left a final status"
                assert effect.time_ms == self.now
                if effect.status in LEASED:
                    assert effect.worker_id == self.sm.tasks[effect.task_id].worker_id is not None
                self.status[effect.task_id] = effect.status
                if effect.status.terminal:
                    self.finished.add(effect.task_id)
        return out

    def leased(self) -> list[tuple[str, str]]:
        return sorted((t.task_id, t.lease_id) for t in self.sm.tasks.values() if t.lease_id is not None)

    def lose(self, task_id: str, lease_id: str) -> None:
        """Model of a lost lease: counted, then requeued or failed after max_attempts."""
        self.lost[task_id] += 1
        self.expiry.pop(lease_id, None)
        self.stale.append((task_id, lease_id))
        task = self.sm.tasks[task_id]
        assert task.lost == self.lost[task_id]
        assert task.lease_id is None and lease_id not in self.sm.leases
        if self.lost[task_id] >= PARAMS.max_attempts:
            assert task.status is TaskStatus.FAILED
            assert f"max_attempts={PARAMS.max_attempts}" in (task.error or "")
        else:
            assert task.status is TaskStatus.PENDING

    # ------------------------------------------------------------------ rules

    @initialize(slots=st.integers(1, 3))
    def a_plain_worker(self, slots: int) -> None:
        self.apply(register("w0", slots=slots))
        self.lease_cap["w0"] = slots

    @rule(
        data=st.data(),
        tasks=st.lists(
            st.tuples(st.integers(0, 2), st.sampled_from(SUBMITTERS), st.integers(0, 2), needs_st),
            min_size=1,
            max_size=5,
        ),
    )
    def submit_batch(self, data: st.DataObject, tasks: list[tuple[int, str, int, dict[str, Any]]]) -> None:
        ids = [f"t{self.next_task + i}" for i in range(len(tasks))]
        existing = sorted(self.submitted)
        batch: dict[str, list[str]] = {}
        specs = []
        for i, (priority, submitter, retries, needs) in enumerate(tasks):
            # Mostly earlier ids (a DAG); sometimes a later one in the batch, which may close a cycle.
            earlier = existing + ids[:i]
            pool = earlier + ids[i + 1 :] if data.draw(st.integers(0, 9)) == 0 else earlier
            deps = data.draw(st.lists(st.sampled_from(pool), max_size=3, unique=True)) if pool else []
            batch[ids[i]] = deps
            specs.append(
                spec(ids[i], priority=priority, submitter=submitter, max_retries=retries, dependencies=deps, **needs)
            )
        pending_before = self.sm.pending_count
        out = self.apply(submit(*specs))
        if pending_before + len(specs) > PARAMS.max_queue_size:
            event("queue full")
            assert isinstance(out, Rejected) and isinstance(out.error, QueueFull)
        elif _has_cycle(batch):
            event("cycle rejected")
            assert isinstance(out, Rejected) and isinstance(out.error, InvalidArgument)
            assert out.error.message.startswith("dependency cycle: ")
        else:
            assert out == Submitted(ids)
            self.submitted.update(ids)
            self.next_task += len(ids)
            for task_id, deps in batch.items():
                broken = [d for d in deps if self.sm.tasks[d].status in (TaskStatus.FAILED, TaskStatus.CANCELLED)]
                if broken:
                    assert self.sm.tasks[task_id].status is TaskStatus.FAILED
        if not isinstance(out, Submitted):
            assert not any(i in self.sm.tasks for i in ids)

    @rule(index=st.integers(0, 5), caps=caps_st)
    def register_worker(self, index: int, caps: dict[str, Any]) -> None:
        worker_id = f"w{index}"
        self.apply(register(worker_id, **caps))
        worker = self.sm.workers[worker_id]
        assert worker.offers.slots == caps["slots"]
        assert worker.status is not WorkerStatus.OFFLINE
        self.lease_cap[worker_id] = max(caps["slots"], len(worker.leases))

    @rule(
        data=st.data(),
        strategy=st.sampled_from(STRATEGIES),
        worker_cap=st.integers(0, 3),
        task_cap=st.integers(0, 2),
    )
    def plan_and_assign(self, data: st.DataObject, strategy: str, worker_cap: int, task_cap: int) -> None:
        planner = self.planners[strategy]  # type: ignore[index]
        planner.worker_cap, planner.task_cap_per_worker = worker_cap, task_cap
        waiting = {w: data.draw(st.integers(1, 3)) for w in sorted(self.sm.workers) if data.draw(st.integers(0, 3))}
        active_before = {w.worker_id for w in self.sm.workers.values() if w.leases}
        plan = planner.plan(self.sm, waiting, self.now)

        placed = Counter(p.worker_id for p in plan)
        assert len({p.task_id for p in plan}) == len(plan), "a task placed twice"
        for p in plan:
            task, worker = self.sm.tasks[p.task_id], self.sm.workers[p.worker_id]
            assert task.ready and task.not_before_ms <= self.now
            assert worker.alive and worker.offers.satisfies(task.needs)
        for worker_id, n in placed.items():
            assert n <= min(waiting[worker_id], self.sm.workers[worker_id].free_slots(task_cap))
        if worker_cap:
            assert len(active_before | set(placed)) <= max(worker_cap, len(active_before))
        else:
            # Work conserving: a ready task left out means no waiting worker that fits it has room.
            room = {
                w: min(asked, self.sm.workers[w].free_slots(task_cap)) - placed[w]
                for w, asked in waiting.items()
                if self.sm.workers[w].alive
            }
            chosen = {p.task_id for p in plan}
            for task in self.sm.iter_ready():
                if task.task_id not in chosen and task.not_before_ms <= self.now:
                    fits = [w for w, r in room.items() if r > 0 and self.sm.workers[w].offers.satisfies(task.needs)]
                    assert not fits, f"{task.task_id} left out while {fits} wait for work"

        leases = [f"L{self.next_lease + i}" for i in range(len(plan))]
        self.next_lease += len(plan)
        out = self.apply(assign(*[(p.task_id, p.worker_id, lease) for p, lease in zip(plan, leases, strict=True)]))
        assert out == Assigned([(p.task_id, p.worker_id, lease) for p, lease in zip(plan, leases, strict=True)])
        event(f"plan placed {len(plan) if len(plan) < 3 else ' 3 or more'} tasks")
        for task_id, _worker_id, lease in out.granted:
            self.check_granted(task_id, lease)

    @rule(data=st.data())
    @precondition(lambda self: self.sm.workers and self.submitted)
    def assign_by_hand(self, data: st.DataObject) -> None:
        """An assignment from a stale plan: the state machine re-checks it."""
        task = self.sm.tasks[data.draw(st.sampled_from(sorted(self.submitted)))]
        worker = self.sm.workers[data.draw(st.sampled_from(sorted(self.sm.workers)))]
        reuse = data.draw(st.booleans()) and bool(self.sm.leases)
        lease = sorted(self.sm.leases)[0] if reuse else f"L{self.next_lease}"
        self.next_lease += 1
        acceptable = (
            task.ready
            and worker.alive
            and worker.offers.satisfies(task.needs)
            and worker.free_slots() > 0
            and lease not in self.sm.leases
        )
        out = self.apply(assign((task.task_id, worker.worker_id, lease)))
        assert out == Assigned([(task.task_id, worker.worker_id, lease)] if acceptable else [])
        if acceptable:
            self.check_granted(task.task_id, lease)

    def check_granted(self, task_id: str, lease: str) -> None:
        task = self.sm.tasks[task_id]
        assert task.status is TaskStatus.ASSIGNED and task.lease_id == lease
        assert all(self.sm.tasks[d].status is TaskStatus.COMPLETED for d in task.dependencies)
        assert self.sm.workers[task.worker_id or ""].offers.satisfies(task.needs)
        assert task.lease_expires_ms == self.now + PARAMS.lease_ttl_ms
        self.expiry[lease] = self.now + PARAMS.lease_ttl_ms

    @rule(data=st.data())
    @precondition(lambda self: self.sm.leases)
    def start(self, data: st.DataObject) -> None:
        task_id, lease = data.draw(st.sampled_from(self.leased()))
        was = self.sm.tasks[task_id].status
        out = self.apply(started(task_id, lease))
        assert out == ReportAcks([(task_id, lease, True, "")])
        task = self.sm.tasks[task_id]
        assert task.status is TaskStatus.RUNNING
        if was is TaskStatus.ASSIGNED:
            assert task.start_ms == self.now

    @rule(data=st.data(), ok=st.booleans(), non_retryable=st.booleans())
    @precondition(lambda self: self.sm.leases)
    def finish(self, data: st.DataObject, ok: bool, non_retryable: bool) -> None:
        task_id, lease = data.draw(st.sampled_from(self.leased()))
        worker_id = self.sm.tasks[task_id].worker_id or ""
        command = completed(task_id, lease) if ok else failed(task_id, lease, non_retryable=non_retryable)
        assert self.apply(command) == ReportAcks([(task_id, lease, True, "")])
        task = self.sm.tasks[task_id]
        assert task.lease_id is None and lease not in self.sm.workers[worker_id].leases
        self.expiry.pop(lease)
        self.stale.append((task_id, lease))
        if ok:
            assert task.status is TaskStatus.COMPLETED
            return
        self.failures[task_id] += 1
        if not non_retryable and self.failures[task_id] <= task.max_retries:
            event("failure retried with backoff")
            assert task.status is TaskStatus.PENDING
            backoff = min(PARAMS.retry_backoff_ms * 2 ** (self.failures[task_id] - 1), PARAMS.retry_backoff_max_ms)
            assert task.not_before_ms == self.now + backoff
        else:
            assert task.status is TaskStatus.FAILED

    @rule(data=st.data(), kind=st.sampled_from(["started", "completed", "failed"]))
    @precondition(lambda self: self.stale)
    def stale_report(self, data: st.DataObject, kind: str) -> None:
        task_id, lease = data.draw(st.sampled_from(self.stale))
        if self.sm.tasks[task_id].lease_id == lease:
            return
        before = _without_index(self.sm)
        command = {"started": started, "completed": completed, "failed": failed}[kind](task_id, lease)
        assert self.apply(command) == ReportAcks([(task_id, lease, False, "lease is not current")])
        assert _without_index(self.sm) == before

    @rule(data=st.data())
    @precondition(lambda self: self.sm.workers)
    def worker_heartbeat(self, data: st.DataObject) -> None:
        worker_id = data.draw(st.sampled_from(sorted(self.sm.workers)))
        self.apply(heartbeat(worker_id))
        worker = self.sm.workers[worker_id]
        assert worker.alive and worker.last_seen_ms == self.now
        for lease in worker.leases:
            self.expiry[lease] = self.now + PARAMS.lease_ttl_ms

    @rule(delta=st.integers(0, 1_500))
    def advance_time_and_expire(self, delta: int) -> None:
        self.now += delta
        due = sorted((self.sm.leases[lease], lease) for lease, at in self.expiry.items() if at <= self.now)
        out = self.apply(expire(at=self.now))
        assert isinstance(out, LeasesReleased)
        assert sorted(out.requeued + out.failed) == sorted(t for t, _ in due)
        for task_id, lease in due:
            self.lose(task_id, lease)
        if out.failed:
            event("expiry failed a task after max_attempts")
        assert sorted(out.failed) == sorted(t for t, _ in due if self.sm.tasks[t].status is TaskStatus.FAILED)
        for lease, at in self.expiry.items():
            assert self.sm.tasks[self.sm.leases[lease]].lease_expires_ms == at > self.now

    @rule(data=st.data())
    @precondition(lambda self: self.sm.workers)
    def worker_offline(self, data: st.DataObject) -> None:
        worker_id = data.draw(st.sampled_from(sorted(self.sm.workers)))
        held = sorted((t, lease) for lease, t in self.sm.workers[worker_id].leases.items())
        out = self.apply(offline(worker_id))
        assert sorted(out.requeued + out.failed) == [t for t, _ in held]
        for task_id, lease in held:
            self.lose(task_id, lease)
        if out.failed:
            event("lost worker failed a task after max_attempts")
        assert self.sm.workers[worker_id].status is WorkerStatus.OFFLINE

    @rule(data=st.data())
    @precondition(lambda self: self.sm.workers)
    def deregister_worker(self, data: st.DataObject) -> None:
        worker_id = data.draw(st.sampled_from(sorted(self.sm.workers)))
        held = sorted((t, lease) for lease, t in self.sm.workers[worker_id].leases.items())
        returned = data.draw(st.lists(st.sampled_from(held), unique=True)) if held else []
        attempts = {t: self.sm.tasks[t].attempts for t, _ in held}
        out = self.apply(deregister(worker_id, returned=[lease for _, lease in returned]))
        assert sorted(out.requeued + out.failed) == [t for t, _ in held]
        for task_id, lease in held:
            if (task_id, lease) in returned:
                self.expiry.pop(lease)
                self.stale.append((task_id, lease))
                task = self.sm.tasks[task_id]
                assert task.status is TaskStatus.PENDING and task.attempts == attempts[task_id] - 1
            else:
                self.lose(task_id, lease)
        assert self.sm.workers[worker_id].status is WorkerStatus.OFFLINE and not self.sm.workers[worker_id].leases

    @rule(data=st.data(), unknown=st.booleans())
    @precondition(lambda self: self.submitted)
    def cancel_tasks(self, data: st.DataObject, unknown: bool) -> None:
        ids = data.draw(st.lists(st.sampled_from(sorted(self.submitted)), min_size=1, max_size=3, unique=True))
        ids += ["ghost"] if unknown else []
        final = [t for t in ids if t in self.sm.tasks and self.sm.tasks[t].status.terminal]
        live = [t for t in ids if t in self.sm.tasks and not self.sm.tasks[t].status.terminal]
        leases = {t: self.sm.tasks[t].lease_id for t in live}
        out = self.apply(cancel(*ids, reason="by test"))
        if not live and not unknown and len(final) == 1:
            assert isinstance(out, Rejected) and isinstance(out.error, Conflict)
            return
        assert isinstance(out, Cancelled) and out.unknown == (["ghost"] if unknown else [])
        assert sorted(out.cancelled + out.already_final) == sorted(final + live)
        assert set(final) <= set(out.already_final)
        for task_id in live:
            task = self.sm.tasks[task_id]
            if task_id in out.cancelled:
                assert task.status is TaskStatus.CANCELLED and task.error == "by test"
            else:
                # Failed a moment earlier in the same command, by a cancelled dependency.
                event("cancel reached a dependent first")
                assert task.status is TaskStatus.FAILED
                assert "cancelled: by test" in (task.error or "")
            lease = leases[task_id]
            if lease is not None:
                self.expiry.pop(lease)
                self.stale.append((task_id, lease))

    @rule()
    def snapshot_and_restore(self) -> None:
        """Carry on with a machine restored from a snapshot; the original keeps running beside it."""
        restored = StateMachine.restore(self.sm.snapshot(), PARAMS)
        assert restored.fingerprint() == self.sm.fingerprint()
        assert [t.task_id for t in restored.iter_ready()] == [t.task_id for t in self.sm.iter_ready()]
        self.shadow, self.sm = self.sm, restored

    @rule()
    def heartbeat_from_unknown_worker_is_rejected(self) -> None:
        before = _without_index(self.sm)
        out = self.apply(heartbeat("nobody"))
        assert isinstance(out, Rejected) and isinstance(out.error, NotFound)
        assert _without_index(self.sm) == before

    # ------------------------------------------------------------------ invariants

    @invariant()
    def no_task_lost(self) -> None:
        sm = self.sm
        assert set(sm.tasks) == self.submitted
        recount = Counter(t.status for t in sm.tasks.values())
        assert {s: n for s, n in sm.status_counts.items() if n} == dict(recount)
        assert sum(sm.status_counts.values()) == len(sm.tasks)
        assert sm.pending_count == recount[TaskStatus.PENDING]

    @invariant()
    def effects_tell_every_status_change(self) -> None:
        assert self.status == {t.task_id: t.status for t in self.sm.tasks.values()}

    @invariant()
    def dependencies_respected(self) -> None:
        tasks = self.sm.tasks
        for task in tasks.values():
            dep_status = [tasks[d].status for d in task.dependencies]
            if task.status in (*LEASED, TaskStatus.COMPLETED):
                assert all(s is TaskStatus.COMPLETED for s in dep_status), task.task_id
            if task.status is TaskStatus.PENDING:
                assert not any(s in (TaskStatus.FAILED, TaskStatus.CANCELLED) for s in dep_status), task.task_id
                assert task.waiting_on == sum(s is not TaskStatus.COMPLETED for s in dep_status)
        ready = [t.task_id for t in self.sm.iter_ready()]
        assert len(ready) == len(set(ready))
        assert set(ready) == {t.task_id for t in tasks.values() if t.ready}

    @invariant()
    def leases_consistent(self) -> None:
        sm = self.sm
        for lease, task_id in sm.leases.items():
            task = sm.tasks[task_id]
            assert task.status in LEASED and task.lease_id == lease
            assert sm.workers[task.worker_id or ""].leases.get(lease) == task_id
        assert {t.task_id for t in sm.tasks.values() if t.status in LEASED} == set(sm.leases.values())
        assert sum(len(w.leases) for w in sm.workers.values()) == len(sm.leases)
        assert set(self.expiry) == set(sm.leases)
        held = Counter(t.submitter for t in sm.tasks.values() if t.status in LEASED)
        assert sm.leased_by_submitter == dict(held)
        for worker in sm.workers.values():
            assert len(worker.leases) <= self.lease_cap[worker.worker_id]
            self.lease_cap[worker.worker_id] = max(worker.offers.slots, len(worker.leases))
            if not worker.alive:
                assert not worker.leases
            elif worker.status is not WorkerStatus.ERROR:
                full = len(worker.leases) >= worker.offers.slots
                assert worker.status is (WorkerStatus.BUSY if full else WorkerStatus.ONLINE)

    @invariant()
    def attempts_counted(self) -> None:
        for task_id, task in self.sm.tasks.items():
            assert task.lost == self.lost[task_id]
            assert task.lost < PARAMS.max_attempts or task.status is TaskStatus.FAILED
            assert task.failures == self.failures[task_id]

    def teardown(self) -> None:
        # Determinism: the same log into a fresh machine gives the same state.
        fresh = StateMachine(PARAMS)
        for index, raw in self.log:
            command = commands_pb2.Command()
            command.ParseFromString(raw)
            fresh.apply(index, command)
        assert fresh.fingerprint() == self.sm.fingerprint()
        assert [t.task_id for t in fresh.iter_ready()] == [t.task_id for t in self.sm.iter_ready()]


LifecycleMachine.TestCase.settings = settings(
    max_examples=int(os.environ.get("DTF_HYPOTHESIS_EXAMPLES", "150")),
    stateful_step_count=80,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
TestLifecycle = LifecycleMachine.TestCase


def test_offers_satisfy_exactly_the_needs_they_cover() -> None:
    offers = Offers(hardware=("cpu", "cuda"), gpu_count=2, memory_mb=16_000, labels={"zone": "a"})
    assert offers.satisfies(Needs())
    assert offers.satisfies(Needs("cuda", 2, 16_000, {"zone": "a"}))
    assert not offers.satisfies(Needs("rocm"))
    assert not offers.satisfies(Needs(min_gpus=3))
    assert not offers.satisfies(Needs(min_memory_mb=16_001))
    assert not offers.satisfies(Needs(labels={"zone": "b"}))
    assert not offers.satisfies(Needs(labels={"rack": "1"}))
