"""The task lifecycle rule by rule: what a user submitting, running and cancelling tasks relies on."""

from __future__ import annotations

import json
from itertools import pairwise

import pytest

from dtf_common.errors import Conflict, InvalidArgument, NotFound, QueueFull
from dtf_common.pb.dtf.v1 import commands_pb2, types_pb2
from dtf_common.schemas import TaskStatus, WorkerStatus
from dtf_coordinator.scheduling import Planner
from dtf_coordinator.state import (
    Assigned,
    Cancelled,
    Done,
    LeasesReleased,
    Rejected,
    ReportAcks,
    ResultsRecorded,
    StateMachine,
    StateParams,
    Submitted,
    TaskOutput,
    TaskTransition,
)
from dtf_coordinator.state.model import InvariantError
from tests.unit.commands import (
    Driver,
    Kind,
    assign,
    cancel,
    completed,
    deregister,
    expire,
    failed,
    heartbeat,
    offline,
    outcome,
    register,
    report,
    spec,
    started,
    submit,
)


def status(d: Driver, task_id: str) -> TaskStatus:
    return d.sm.tasks[task_id].status


def ready_ids(d: Driver) -> list[str]:
    return [t.task_id for t in d.sm.iter_ready()]


# ---------------------------------------------------------------------- submission


def test_submitted_tasks_are_pending_and_counted() -> None:
    d = Driver()
    out = d.apply(submit(spec("a"), spec("b"), at=5))
    assert out == Submitted(["a", "b"])
    assert status(d, "a") is TaskStatus.PENDING
    assert d.sm.tasks["a"].create_ms == 5
    assert d.sm.pending_count == 2
    assert d.sm.status_counts[TaskStatus.PENDING] == 2
    assert ready_ids(d) == ["a", "b"]


def test_empty_submission_is_rejected() -> None:
    out = Driver().apply(submit())
    assert isinstance(out, Rejected) and isinstance(out.error, InvalidArgument)


@pytest.mark.parametrize("second_batch", [False, True])
def test_duplicate_task_id_is_rejected_and_nothing_is_added(second_batch: bool) -> None:
    d = Driver()
    if second_batch:
        d.apply(submit(spec("a")))
        out = d.apply(submit(spec("b"), spec("a")))
    else:
        out = d.apply(submit(spec("a"), spec("b"), spec("a")))
    assert isinstance(out, Rejected) and isinstance(out.error, InvalidArgument)
    assert "a already exists" in out.error.message
    assert "b" not in d.sm.tasks


def test_missing_task_id_is_rejected() -> None:
    out = Driver().apply(submit(spec("")))
    assert isinstance(out, Rejected) and isinstance(out.error, InvalidArgument)
    assert out.error.field == "[0].task_id"


def test_dependency_cycle_is_rejected_naming_the_cycle() -> None:
    d = Driver()
    d.apply(submit(spec("root")))
    out = d.apply(
        submit(
            spec("x", dependencies=["root"]),
            spec("a", dependencies=["c"]),
            spec("b", dependencies=["a"]),
            spec("c", dependencies=["b", "x"]),
        )
    )
    assert isinstance(out, Rejected) and isinstance(out.error, InvalidArgument)
    message = out.error.message
    assert message.startswith("dependency cycle: ")
    path = message.removeprefix("dependency cycle: ").split(" -> ")
    # A closed path through exactly the three tasks of the cycle, each step a real dependency.
    assert path[0] == path[-1]
    assert sorted(path[:-1]) == ["a", "b", "c"]
    deps = {"a": {"c"}, "b": {"a"}, "c": {"b", "x"}}
    assert all(nxt in deps[cur] for cur, nxt in pairwise(path))
    assert set(d.sm.tasks) == {"root"}


def test_unknown_dependency_is_rejected() -> None:
    d = Driver()
    out = d.apply(submit(spec("a"), spec("b", dependencies=["a", "ghost"])))
    assert isinstance(out, Rejected) and isinstance(out.error, InvalidArgument)
    assert "unknown dependency ghost" in out.error.message
    assert out.error.field == "[1].dependencies"
    assert d.sm.tasks == {}


def test_self_dependency_is_rejected() -> None:
    d = Driver()
    out = d.apply(submit(spec("a", dependencies=["a"])))
    assert isinstance(out, Rejected) and isinstance(out.error, InvalidArgument)
    assert "a depends on itself" in out.error.message
    assert d.sm.tasks == {}


def test_batch_may_list_dependents_before_their_dependencies() -> None:
    d = Driver()
    d.apply(submit(spec("c", dependencies=["b"]), spec("b", dependencies=["a"]), spec("a")))
    assert ready_ids(d) == ["a"]
    assert d.sm.tasks["c"].waiting_on == 1


def test_queue_full_rejects_the_whole_batch() -> None:
    d = Driver(StateParams(max_queue_size=3))
    d.apply(submit(spec("a"), spec("b")))
    out = d.apply(submit(spec("c"), spec("d")))
    assert isinstance(out, Rejected) and isinstance(out.error, QueueFull)
    assert set(d.sm.tasks) == {"a", "b"}
    assert d.apply(submit(spec("c"))) == Submitted(["c"])


def test_queue_room_comes_back_when_tasks_leave_pending() -> None:
    d = Driver(StateParams(max_queue_size=1))
    d.apply(register("w"))
    d.apply(submit(spec("a")))
    assert isinstance(d.apply(submit(spec("b"))), Rejected)
    d.apply(assign(("a", "w", "L1")))
    assert d.apply(submit(spec("b"))) == Submitted(["b"])


# ---------------------------------------------------------------------- dependencies


def test_dependent_waits_until_its_dependency_completes() -> None:
    d = Driver()
    d.apply(register("w", slots=2))
    d.apply(submit(spec("a")))
    d.apply(submit(spec("b", dependencies=["a"])))
    assert ready_ids(d) == ["a"]
    # Even a hand-made assignment of the waiting task is refused.
    assert d.apply(assign(("b", "w", "Lb"), ("a", "w", "La"))) == Assigned([("a", "w", "La")])
    d.apply(started("a", "La"))
    assert ready_ids(d) == []
    d.apply(completed("a", "La"))
    assert ready_ids(d) == ["b"]


def test_dependency_on_already_completed_task_is_ready_at_once() -> None:
    d = Driver()
    d.apply(register("w"))
    d.apply(submit(spec("a")))
    d.apply(assign(("a", "w", "L")))
    d.apply(completed("a", "L"))
    d.apply(submit(spec("b", dependencies=["a"])))
    assert ready_ids(d) == ["b"]


def test_dependents_of_a_failed_task_fail_naming_it() -> None:
    d = Driver()
    d.apply(register("w"))
    d.apply(submit(spec("a"), spec("b", dependencies=["a"]), spec("c", dependencies=["b"]), spec("x")))
    d.apply(assign(("a", "w", "L")))
    d.apply(failed("a", "L", error="exit 2", at=10))
    assert status(d, "a") is TaskStatus.FAILED
    assert status(d, "b") is TaskStatus.FAILED
    assert status(d, "c") is TaskStatus.FAILED
    assert status(d, "x") is TaskStatus.PENDING
    assert "dependency a failed" in (d.sm.tasks["b"].error or "")
    assert "exit 2" in (d.sm.tasks["b"].error or "")
    assert "dependency b failed" in (d.sm.tasks["c"].error or "")
    assert d.sm.tasks["c"].end_ms == 10
    assert ready_ids(d) == ["x"]
    assert d.sm.pending_count == 1


def test_submitting_onto_a_failed_dependency_fails_at_once() -> None:
    d = Driver()
    d.apply(submit(spec("a")))
    d.apply(cancel("a", reason="not needed"))
    out = d.apply(submit(spec("b", dependencies=["a"]), spec("c", dependencies=["b"])))
    assert out == Submitted(["b", "c"])
    assert status(d, "b") is TaskStatus.FAILED
    assert d.sm.tasks["b"].error == "dependency a cancelled: not needed"
    assert status(d, "c") is TaskStatus.FAILED
    assert "dependency b failed" in (d.sm.tasks["c"].error or "")
    assert d.sm.pending_count == 0


def test_cancelling_a_task_fails_its_dependents() -> None:
    d = Driver()
    d.apply(submit(spec("a"), spec("b", dependencies=["a"])))
    d.apply(cancel("a"))
    assert status(d, "b") is TaskStatus.FAILED
    assert "dependency a cancelled" in (d.sm.tasks["b"].error or "")


def test_chain_of_5000_fails_transitively_without_recursion() -> None:
    n = 5_000
    d = Driver()
    d.apply(register("w"))
    # Listed last-first, so ordering the batch must not recurse either.
    specs = [spec(f"t{i}", dependencies=[f"t{i - 1}"] if i else []) for i in range(n)]
    assert isinstance(d.apply(submit(*reversed(specs))), Submitted)
    d.apply(assign(("t0", "w", "L")))
    d.apply(failed("t0", "L"))
    assert d.sm.status_counts[TaskStatus.FAILED] == n
    assert d.sm.pending_count == 0
    assert d.sm.tasks[f"t{n - 1}"].error is not None
    assert d.sm.tasks[f"t{n - 1}"].error.startswith(f"dependency t{n - 2} failed")


def test_cycle_through_5000_tasks_is_found_without_recursion() -> None:
    n = 5_000
    specs = [spec(f"t{i}", dependencies=[f"t{(i + 1) % n}"]) for i in range(n)]
    out = Driver().apply(submit(*specs))
    assert isinstance(out, Rejected) and "dependency cycle" in out.error.message


# ---------------------------------------------------------------------- assignment and leases


def test_assignment_leases_the_task_and_fills_the_worker() -> None:
    d = Driver(StateParams(lease_ttl_ms=1_000))
    d.apply(register("w", slots=1))
    d.apply(submit(spec("a"), spec("b")))
    out = d.apply(assign(("a", "w", "L1"), ("b", "w", "L2"), at=100))
    assert out == Assigned([("a", "w", "L1")])
    task = d.sm.tasks["a"]
    assert (task.status, task.worker_id, task.lease_id, task.lease_expires_ms, task.attempts) == (
        TaskStatus.ASSIGNED,
        "w",
        "L1",
        1_100,
        1,
    )
    assert d.sm.workers["w"].leases == {"L1": "a"}
    assert d.sm.workers["w"].status is WorkerStatus.BUSY
    assert ready_ids(d) == ["b"]


def test_assignment_is_skipped_for_unknown_offline_or_duplicate() -> None:
    d = Driver()
    d.apply(register("w", slots=4))
    d.apply(register("gone"))
    d.apply(offline("gone"))
    d.apply(submit(spec("a"), spec("b"), spec("c")))
    out = d.apply(
        assign(
            ("ghost", "w", "L0"),
            ("a", "nobody", "L1"),
            ("a", "gone", "L2"),
            ("a", "w", "L3"),
            ("a", "w", "L4"),  # already assigned
            ("b", "w", "L3"),  # lease id in use
        )
    )
    assert out == Assigned([("a", "w", "L3")])
    assert status(d, "b") is TaskStatus.PENDING


def test_started_then_completed() -> None:
    d = Driver()
    d.apply(register("w"))
    d.apply(submit(spec("a")))
    d.apply(assign(("a", "w", "L"), at=10))
    assert d.apply(started("a", "L", at=20)) == ReportAcks([("a", "L", True, "")])
    assert status(d, "a") is TaskStatus.RUNNING
    assert d.sm.tasks["a"].start_ms == 20
    d.apply(completed("a", "L", at=50))
    task = d.sm.tasks["a"]
    assert (task.status, task.end_ms, task.lease_id) == (TaskStatus.COMPLETED, 50, None)
    worker = d.sm.workers["w"]
    assert (worker.leases, worker.completed, worker.busy_ms, worker.status) == ({}, 1, 30, WorkerStatus.ONLINE)
    assert d.sm.leases == {}


def test_stale_report_changes_nothing() -> None:
    d = Driver(StateParams(lease_ttl_ms=100))
    d.apply(register("w1"))
    d.apply(register("w2"))
    d.apply(submit(spec("a")))
    d.apply(assign(("a", "w1", "old"), at=0))
    d.apply(expire(at=100))
    d.apply(assign(("a", "w2", "new"), at=150))
    before = d.sm.fingerprint()
    out = d.apply(completed("a", "old", at=160))
    assert out == ReportAcks([("a", "old", False, "lease is not current")])
    assert status(d, "a") is TaskStatus.ASSIGNED
    assert d.sm.tasks["a"].lease_id == "new"
    # Only the applied index moved.
    snap = d.sm.snapshot()
    snap["applied_index"] -= 1
    assert StateMachine.restore(snap).fingerprint() == before


def test_progress_records_results_of_a_running_task_and_changes_nothing_else() -> None:
    d = Driver()
    d.apply(register("w"))
    d.apply(submit(spec("a")))
    d.apply(assign(("a", "w", "L"), at=10))
    d.sm.drain_effects()
    records = [types_pb2.ResultRecord(result_id=f"r{i}", task_id="a", test_id=f"t{i}") for i in range(3)]

    out = d.apply(report(outcome("a", "L", Kind.PROGRESS, results=records[:2]), at=20))

    assert out == ReportAcks([("a", "L", True, "")])
    assert status(d, "a") is TaskStatus.RUNNING and d.sm.tasks["a"].lease_id == "L"
    [recorded] = [e for e in d.sm.drain_effects() if isinstance(e, ResultsRecorded)]
    assert [r.test_id for r in recorded.records] == ["t0", "t1"]
    d.apply(report(outcome("a", "L", Kind.COMPLETED, results=records[2:]), at=30))
    assert status(d, "a") is TaskStatus.COMPLETED
    # A late piece of a lease that is no longer current records nothing.
    d.sm.drain_effects()
    out = d.apply(report(outcome("a", "L", Kind.PROGRESS, results=records[:1]), at=40))
    assert out == ReportAcks([("a", "L", False, "lease is not current")])
    assert not [e for e in d.sm.drain_effects() if isinstance(e, ResultsRecorded)]


def test_live_output_is_passed_on_before_the_results_it_preceded_and_a_stale_lease_sends_none() -> None:
    d = Driver()
    d.apply(register("w"))
    d.apply(submit(spec("a")))
    d.apply(assign(("a", "w", "L"), at=10))
    d.sm.drain_effects()
    progress = outcome("a", "L", Kind.PROGRESS, results=[types_pb2.ResultRecord(result_id="r", task_id="a")])
    progress.worker_id, progress.stdout, progress.stderr = "w", "hello\n", "careful\n"

    d.apply(report(progress, at=20))

    effects = [e for e in d.sm.drain_effects() if isinstance(e, TaskOutput | ResultsRecorded)]
    assert [type(e) for e in effects] == [TaskOutput, ResultsRecorded]
    assert effects[0] == TaskOutput("a", "w", "hello\n", "careful\n")
    d.apply(completed("a", "L", at=30))
    d.sm.drain_effects()
    d.apply(report(progress, at=40))
    assert not [e for e in d.sm.drain_effects() if isinstance(e, TaskOutput)]


def test_report_for_unknown_task_is_refused() -> None:
    d = Driver()
    out = d.apply(completed("ghost", "L"))
    assert out == ReportAcks([("ghost", "L", False, "lease is not current")])


def test_heartbeat_renews_every_lease_of_the_worker() -> None:
    d = Driver(StateParams(lease_ttl_ms=1_000))
    d.apply(register("w", slots=2))
    d.apply(submit(spec("a"), spec("b")))
    d.apply(assign(("a", "w", "La"), ("b", "w", "Lb"), at=0))
    d.apply(heartbeat("w", at=900))
    assert d.apply(expire(at=1_500)) == LeasesReleased([], [])
    assert d.sm.tasks["a"].lease_expires_ms == 1_900
    out = d.apply(expire(at=1_900))
    assert out == LeasesReleased(["a", "b"], [])


def test_heartbeat_renews_only_the_leases_the_worker_says_it_holds() -> None:
    d = Driver(StateParams(lease_ttl_ms=1_000))
    d.apply(register("w", slots=2))
    d.apply(submit(spec("a"), spec("b")))
    d.apply(assign(("a", "w", "La"), ("b", "w", "Lb"), at=0))
    d.apply(started("a", "La", at=10))
    d.apply(started("b", "Lb", at=10))
    d.apply(heartbeat("w", at=900, held=["Lb"]))  # La died with the worker's last life
    assert d.sm.tasks["a"].lease_expires_ms == 1_000 and d.sm.tasks["b"].lease_expires_ms == 1_900
    assert d.apply(expire(at=1_000)) == LeasesReleased(["a"], [])
    assert d.sm.tasks["b"].status is TaskStatus.RUNNING


def test_a_worker_that_registers_again_loses_the_running_leases_it_no_longer_holds_at_once() -> None:
    d = Driver(StateParams(lease_ttl_ms=60_000))
    d.apply(register("w", slots=3, held=[]))
    d.apply(submit(spec("lost"), spec("kept"), spec("unseen")))
    d.apply(assign(("lost", "w", "L1"), ("kept", "w", "L2"), ("unseen", "w", "L3"), at=0))
    d.apply(started("lost", "L1", at=10))
    d.apply(started("kept", "L2", at=10))
    d.sm.drain_effects()

    out = d.apply(register("w", slots=3, held=["L2"], at=500))  # a restart: L1's process is gone

    assert out == LeasesReleased(["lost"], [])
    lost = d.sm.tasks["lost"]
    assert lost.status is TaskStatus.PENDING and lost.lease_id is None and "restarted" in (lost.error or "")
    assert d.sm.tasks["kept"].status is TaskStatus.RUNNING  # it still runs it
    assert d.sm.tasks["unseen"].status is TaskStatus.ASSIGNED  # never delivered: offered again
    assert any(isinstance(e, TaskTransition) and e.task_id == "lost" for e in d.sm.drain_effects())


def test_a_registration_that_reports_no_leases_keeps_them_until_they_run_out() -> None:
    """An older worker's registration (or an entry from before registrations said): as before."""
    d = Driver(StateParams(lease_ttl_ms=60_000))
    d.apply(register("w"))
    d.apply(submit(spec("a")))
    d.apply(assign(("a", "w", "L"), at=0))
    d.apply(started("a", "L", at=10))
    assert d.apply(register("w", at=500)) == Done()
    assert d.sm.tasks["a"].status is TaskStatus.RUNNING


def test_heartbeat_from_unknown_worker_is_rejected() -> None:
    out = Driver().apply(heartbeat("ghost"))
    assert isinstance(out, Rejected) and isinstance(out.error, NotFound)


def test_expired_lease_requeues_and_counts_the_loss_then_fails_after_max_attempts() -> None:
    d = Driver(StateParams(lease_ttl_ms=100, max_attempts=3))
    d.apply(register("w", slots=1))
    d.apply(submit(spec("a"), spec("after", dependencies=["a"])))
    now = 0
    for attempt in range(1, 4):
        d.apply(assign(("a", "w", f"L{attempt}"), at=now))
        d.apply(started("a", f"L{attempt}", at=now + 1))
        assert d.apply(expire(at=now + 99)) == LeasesReleased([], [])
        out = d.apply(expire(at=now + 100))
        task = d.sm.tasks["a"]
        assert task.lost == attempt
        assert task.attempts == attempt
        assert d.sm.workers["w"].leases == {}
        if attempt < 3:
            assert out == LeasesReleased(["a"], [])
            assert task.status is TaskStatus.PENDING
            assert task.lease_id is None and task.worker_id is None
        else:
            assert out == LeasesReleased([], ["a"])
            assert task.status is TaskStatus.FAILED
            assert "max_attempts=3" in (task.error or "")
        now += 1_000
    assert status(d, "after") is TaskStatus.FAILED


def test_worker_offline_releases_its_leases_and_takes_no_work() -> None:
    d = Driver(StateParams(max_attempts=5))
    d.apply(register("w", slots=2))
    d.apply(submit(spec("a"), spec("b")))
    d.apply(assign(("a", "w", "La"), ("b", "w", "Lb")))
    out = d.apply(offline("w", reason="missed heartbeats"))
    assert out == LeasesReleased(["a", "b"], [])
    assert d.sm.tasks["a"].lost == 1
    assert "missed heartbeats" in (d.sm.tasks["a"].error or "")
    assert d.sm.workers["w"].status is WorkerStatus.OFFLINE
    assert d.sm.workers["w"].leases == {} and d.sm.leases == {}
    assert d.apply(assign(("a", "w", "L2"))) == Assigned([])
    assert Planner().plan(d.sm, {"w": 2}, now_ms=0) == []
    # Seen again, it is back in service.
    d.apply(heartbeat("w"))
    assert d.sm.workers["w"].status is WorkerStatus.ONLINE
    assert d.apply(assign(("a", "w", "L2"))) == Assigned([("a", "w", "L2")])


def test_deregister_requeues_returned_leases_without_counting_an_attempt() -> None:
    d = Driver()
    d.apply(register("w", slots=2))
    d.apply(submit(spec("a"), spec("b")))
    d.apply(assign(("a", "w", "La"), ("b", "w", "Lb")))
    d.apply(started("b", "Lb"))
    out = d.apply(deregister("w", returned=["La"]))
    assert out == LeasesReleased(["a", "b"], [])
    a, b = d.sm.tasks["a"], d.sm.tasks["b"]
    assert (a.attempts, a.lost) == (0, 0)
    assert (b.attempts, b.lost) == (1, 1)
    assert d.sm.workers["w"].status is WorkerStatus.OFFLINE
    assert d.sm.pending_count == 2


def test_unknown_worker_offline_or_deregister_is_rejected() -> None:
    d = Driver()
    assert isinstance(d.apply(offline("ghost")), Rejected)
    assert isinstance(d.apply(deregister("ghost")), Rejected)


def test_worker_reports_critical_health_as_error_status() -> None:
    d = Driver()
    d.apply(register("w"))
    d.apply(heartbeat("w", health_json='{"status": "critical"}'))
    assert d.sm.workers["w"].status is WorkerStatus.ERROR
    d.apply(heartbeat("w", health_json='{"status": "healthy"}'))
    assert d.sm.workers["w"].status is WorkerStatus.ONLINE


# ---------------------------------------------------------------------- failures, retries, cancellation


def test_retry_backoff_doubles_and_the_planner_waits_for_it() -> None:
    d = Driver(StateParams(retry_backoff_ms=1_000, retry_backoff_max_ms=60_000))
    d.apply(register("w"))
    d.apply(submit(spec("a", max_retries=3)))
    planner = Planner()
    now = 0
    for failure, delay in enumerate([1_000, 2_000, 4_000], start=1):
        lease = f"L{failure}"
        assert d.apply(assign(("a", "w", lease), at=now)).granted
        d.apply(failed("a", lease, error="flaky", at=now + 10))
        task = d.sm.tasks["a"]
        assert task.status is TaskStatus.PENDING
        assert task.failures == failure
        assert task.not_before_ms == now + 10 + delay
        assert f"attempt {failure} failed: flaky" in (task.error or "")
        assert planner.plan(d.sm, {"w": 1}, now_ms=task.not_before_ms - 1) == []
        now = task.not_before_ms
        assert [p.task_id for p in planner.plan(d.sm, {"w": 1}, now_ms=now)] == ["a"]
    d.apply(assign(("a", "w", "L4"), at=now))
    d.apply(failed("a", "L4", error="still flaky", at=now + 1))
    assert status(d, "a") is TaskStatus.FAILED
    assert d.sm.tasks["a"].error == "still flaky"


def test_retry_backoff_is_capped() -> None:
    d = Driver(StateParams(retry_backoff_ms=1_000, retry_backoff_max_ms=3_000))
    d.apply(register("w"))
    d.apply(submit(spec("a", max_retries=10)))
    for i in range(5):
        d.apply(assign(("a", "w", f"L{i}"), at=0))
        d.apply(failed("a", f"L{i}", at=0))
    assert d.sm.tasks["a"].not_before_ms == 3_000


def test_non_retryable_failure_fails_at_once() -> None:
    d = Driver()
    d.apply(register("w"))
    d.apply(submit(spec("a", max_retries=5)))
    d.apply(assign(("a", "w", "L")))
    d.apply(failed("a", "L", error="bad parameters", non_retryable=True))
    assert status(d, "a") is TaskStatus.FAILED
    assert d.sm.workers["w"].failed == 1


def test_skipped_backoff_tasks_do_not_hold_back_ready_ones() -> None:
    d = Driver()
    d.apply(register("w"))
    d.apply(submit(spec("a", priority=9, max_retries=1), spec("b")))
    d.apply(assign(("a", "w", "L")))
    d.apply(failed("a", "L", at=0))
    assert [p.task_id for p in Planner().plan(d.sm, {"w": 1}, now_ms=1)] == ["b"]


def test_cancel_pending_and_running_tasks() -> None:
    d = Driver()
    d.apply(register("w"))
    d.apply(submit(spec("a"), spec("b")))
    d.apply(assign(("a", "w", "L")))
    d.apply(started("a", "L"))
    out = d.apply(cancel("a", "b", reason="user asked", at=7))
    assert out == Cancelled(["a", "b"], [], [])
    for task_id in ("a", "b"):
        task = d.sm.tasks[task_id]
        assert (task.status, task.error, task.end_ms) == (TaskStatus.CANCELLED, "user asked", 7)
    assert d.sm.workers["w"].leases == {} and d.sm.leases == {}
    assert ready_ids(d) == []
    # The worker's late result for the cancelled run is refused.
    assert d.apply(completed("a", "L")).acks[0][2] is False
    assert status(d, "a") is TaskStatus.CANCELLED


def test_cancel_of_a_finished_task_is_a_conflict() -> None:
    d = Driver()
    d.apply(register("w"))
    d.apply(submit(spec("a")))
    d.apply(assign(("a", "w", "L")))
    d.apply(completed("a", "L"))
    out = d.apply(cancel("a"))
    assert isinstance(out, Rejected) and isinstance(out.error, Conflict)
    assert "already completed" in out.error.message
    assert status(d, "a") is TaskStatus.COMPLETED


def test_cancel_unknown_task_is_not_found_and_mixed_lists_report_each() -> None:
    d = Driver()
    d.apply(submit(spec("a"), spec("b")))
    d.apply(cancel("b"))
    out = d.apply(cancel("ghost"))
    assert isinstance(out, Rejected) and isinstance(out.error, NotFound)
    assert d.apply(cancel("a", "b", "ghost")) == Cancelled(["a"], ["b"], ["ghost"])


def test_each_task_reaches_a_terminal_status_once() -> None:
    d = Driver()
    d.apply(register("w"))
    d.apply(submit(spec("a")))
    d.apply(assign(("a", "w", "L")))
    d.sm.drain_effects()
    d.apply(completed("a", "L"))
    d.apply(completed("a", "L"))
    d.apply(cancel("a"))
    transitions = [e for e in d.sm.drain_effects() if isinstance(e, TaskTransition)]
    assert [(e.task_id, e.status) for e in transitions] == [("a", TaskStatus.COMPLETED)]


# ---------------------------------------------------------------------- ordering and matching


def test_higher_priority_goes_first_then_submission_order() -> None:
    d = Driver()
    d.apply(submit(spec("low1", priority=1), spec("high", priority=9), spec("low2", priority=1), spec("mid")))
    assert ready_ids(d) == ["high", "low1", "low2", "mid"]
    d.apply(register("w", slots=2))
    assert [p.task_id for p in Planner().plan(d.sm, {"w": 2}, now_ms=0)] == ["high", "low1"]


def test_fair_share_interleaves_submitters_within_a_priority() -> None:
    d = Driver()
    d.apply(submit(*[spec(f"big{i}", submitter="alice") for i in range(5)]))
    d.apply(submit(spec("small0", submitter="bob"), spec("small1", submitter="bob")))
    assert ready_ids(d) == ["big0", "small0", "big1", "small1", "big2", "big3", "big4"]


def test_fair_share_holds_when_workers_take_one_task_at_a_time() -> None:
    d = Driver()
    d.apply(register("w"))
    d.apply(submit(*[spec(f"a{i}", submitter="alice") for i in range(4)]))
    d.apply(submit(*[spec(f"b{i}", submitter="bob") for i in range(4)]))
    planner = Planner()
    order = []
    for i in range(8):
        [placement] = planner.plan(d.sm, {"w": 1}, now_ms=i)
        d.apply(assign((placement.task_id, "w", f"L{i}"), at=i))
        d.apply(completed(placement.task_id, f"L{i}", at=i))
        order.append(placement.task_id)
    assert [t[0] for t in order[:4]] == ["a", "b", "a", "b"]


def test_fair_share_favours_the_submitter_holding_fewer_leases() -> None:
    d = Driver()
    d.apply(register("w", slots=8))
    d.apply(submit(*[spec(f"a{i}", submitter="alice") for i in range(5)]))
    d.apply(assign(("a0", "w", "L0"), ("a1", "w", "L1")))
    d.apply(submit(*[spec(f"b{i}", submitter="bob") for i in range(3)]))
    assert ready_ids(d) == ["b0", "b1", "a2", "b2", "a3", "a4"]


@pytest.mark.parametrize(
    ("needs", "eligible"),
    [
        ({}, {"cpu-small", "cuda-2", "cuda-8-lab"}),
        ({"hardware": "cuda"}, {"cuda-2", "cuda-8-lab"}),
        ({"hardware": "rocm"}, set()),
        ({"min_gpus": 4}, {"cuda-8-lab"}),
        ({"min_memory_mb": 16_000}, {"cuda-2", "cuda-8-lab"}),
        ({"min_memory_mb": 64_001}, set()),
        ({"labels": {"zone": "lab"}}, {"cuda-8-lab"}),
        ({"labels": {"zone": "lab", "os": "linux"}}, {"cuda-8-lab"}),
        ({"labels": {"zone": "office"}}, set()),
        ({"hardware": "cpu", "min_memory_mb": 8_000}, {"cpu-small", "cuda-2", "cuda-8-lab"}),
    ],
)
def test_requirements_match_worker_capabilities(needs: dict[str, object], eligible: set[str]) -> None:
    d = Driver()
    d.apply(register("cpu-small", memory_mb=8_000, slots=4))
    d.apply(register("cuda-2", hardware=["cpu", "cuda"], gpus=2, memory_mb=32_000, slots=4))
    d.apply(
        register(
            "cuda-8-lab",
            hardware=["cpu", "cuda"],
            gpus=8,
            memory_mb=64_000,
            labels={"zone": "lab", "os": "linux"},
            slots=4,
        )
    )
    d.apply(submit(spec("t", **needs)))  # type: ignore[arg-type]
    granted = set()
    for i, worker_id in enumerate(sorted(d.sm.workers)):
        out = d.apply(assign(("t", worker_id, f"L{i}")))
        if out.granted:
            granted.add(worker_id)
            d.apply(deregister(worker_id, returned=[f"L{i}"]))
            d.apply(register(worker_id, slots=4, **_caps(worker_id)))
    assert granted == eligible
    placed = Planner().plan(d.sm, {w: 1 for w in d.sm.workers}, now_ms=0)
    assert {p.worker_id for p in placed} <= eligible
    assert len(placed) == (1 if eligible else 0)


def _caps(worker_id: str) -> dict[str, object]:
    return {
        "cpu-small": {"memory_mb": 8_000},
        "cuda-2": {"hardware": ["cpu", "cuda"], "gpus": 2, "memory_mb": 32_000},
        "cuda-8-lab": {
            "hardware": ["cpu", "cuda"],
            "gpus": 8,
            "memory_mb": 64_000,
            "labels": {"zone": "lab", "os": "linux"},
        },
    }[worker_id]


def test_worker_without_declared_hardware_offers_cpu_and_one_slot() -> None:
    d = Driver()
    d.apply(register("w", hardware=[], slots=0))
    offers = d.sm.workers["w"].offers
    assert (offers.hardware, offers.slots) == (("cpu",), 1)


# ---------------------------------------------------------------------- log discipline, snapshots


def test_an_index_applied_twice_is_an_invariant_error() -> None:
    sm = StateMachine()
    sm.apply(1, submit(spec("a")))
    with pytest.raises(InvariantError):
        sm.apply(1, submit(spec("b")))


def test_command_without_body_is_rejected() -> None:
    out = Driver().apply(commands_pb2.Command(time_ms=1))
    assert isinstance(out, Rejected) and isinstance(out.error, InvalidArgument)


def test_snapshot_restore_keeps_the_state_and_its_queues() -> None:
    d = Driver(StateParams(lease_ttl_ms=100))
    d.apply(register("w", slots=2))
    d.apply(submit(spec("a", priority=2), spec("b", dependencies=["a"]), spec("c", submitter="s"), spec("d")))
    d.apply(assign(("a", "w", "La"), at=10))
    d.apply(started("a", "La", at=20))
    restored = StateMachine.restore(d.sm.snapshot(), d.params)
    assert restored.fingerprint() == d.sm.fingerprint()
    assert restored.leases == d.sm.leases
    assert restored.pending_count == d.sm.pending_count
    assert restored.status_counts == d.sm.status_counts
    assert [t.task_id for t in restored.iter_ready()] == ready_ids(d)
    follow = [completed("a", "La", at=30), expire(at=500)]
    for command in follow:
        assert restored.apply(d.sm.applied_index + 1, command) == d.apply(command)
    assert restored.fingerprint() == d.sm.fingerprint()
    assert [t.task_id for t in restored.iter_ready()] == ready_ids(d)


def test_snapshot_of_another_version_is_refused() -> None:
    snap = StateMachine().snapshot()
    snap["version"] = 99
    with pytest.raises(InvariantError):
        StateMachine.restore(snap)


def test_replaying_the_log_gives_the_same_fingerprint() -> None:
    d = Driver()
    d.apply(register("w", slots=3))
    d.apply(submit(*[spec(f"t{i}", priority=i % 3, submitter=f"s{i % 2}", max_retries=1) for i in range(10)]))
    d.apply(assign(*[(f"t{i}", "w", f"L{i}") for i in range(3)], at=5))
    d.apply(failed("t0", "L0", at=6))
    d.apply(completed("t1", "L1", at=7))
    d.apply(expire(at=60_000))
    assert d.replay().fingerprint() == d.sm.fingerprint()


def test_requeued_task_keeps_its_age_place_and_restore_agrees() -> None:
    d = Driver()
    d.apply(register("w"))
    d.apply(submit(spec("a", max_retries=1), spec("b"), spec("c")))
    d.apply(assign(("a", "w", "L")))
    d.apply(failed("a", "L"))
    assert ready_ids(d) == ["a", "b", "c"]
    restored = StateMachine.restore(d.sm.snapshot(), d.params)
    assert [t.task_id for t in restored.iter_ready()] == ready_ids(d)


def test_a_snapshot_is_a_copy_that_later_commands_do_not_change() -> None:
    d = Driver()
    d.apply(register("w", slots=2, labels={"zone": "a"}))
    d.apply(submit(spec("a", labels={"zone": "a"}), spec("b")))
    snap = d.sm.snapshot()
    frozen = json.dumps(snap, sort_keys=True)
    d.apply(assign(("a", "w", "La")))
    assert json.dumps(snap, sort_keys=True) == frozen
    # A machine restored from it is independent of the one it came from, both ways.
    restored = StateMachine.restore(snap, d.params)
    restored.apply(d.sm.applied_index, assign(("b", "w", "Lb")))
    assert d.sm.workers["w"].leases == {"La": "a"}
    assert restored.workers["w"].leases == {"Lb": "b"}
    restored.workers["w"].offers.labels["zone"] = "b"
    restored.tasks["a"].needs.labels["zone"] = "b"
    assert json.dumps(snap, sort_keys=True) == frozen


def test_a_restored_machine_expires_leases_like_the_original() -> None:
    d = Driver(StateParams(lease_ttl_ms=100, max_attempts=1))
    d.apply(register("w", slots=2))
    d.apply(submit(spec("a"), spec("b"), spec("c", dependencies=["a", "b"])))
    # Granted in the opposite order to submission.
    d.apply(assign(("b", "w", "Lb"), at=0))
    d.apply(assign(("a", "w", "La"), at=0))
    restored = StateMachine.restore(d.sm.snapshot(), d.params)
    index = d.sm.applied_index + 1
    released = restored.apply(index, expire(at=100))
    assert released == d.apply(expire(at=100))
    assert restored.tasks["c"].error == d.sm.tasks["c"].error
    assert restored.fingerprint() == d.sm.fingerprint()


def test_transition_effects_name_the_worker_involved() -> None:
    d = Driver()
    d.apply(register("w"))
    d.apply(submit(spec("a", max_retries=1)))
    d.sm.drain_effects()
    d.apply(assign(("a", "w", "L1"), at=1))
    d.apply(started("a", "L1", at=2))
    d.apply(failed("a", "L1", at=3))
    d.apply(assign(("a", "w", "L2"), at=4_000))
    d.apply(completed("a", "L2", at=4_001))
    transitions = [
        (e.status.value, e.worker_id, e.time_ms) for e in d.sm.drain_effects() if isinstance(e, TaskTransition)
    ]
    assert transitions == [
        ("assigned", "w", 1),
        ("running", "w", 2),
        ("pending", "w", 3),  # requeued, from the worker it failed on
        ("assigned", "w", 4_000),
        ("completed", "w", 4_001),
    ]
