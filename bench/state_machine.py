"""Cost of the pure state machine and planner per task, without any I/O.

Submits N tasks in batches of 500, then repeatedly plans for two 256-slot workers,
assigns, starts and completes them. Prints microseconds per task for each step and the
tasks per second one core could apply if nothing else ran: the ceiling for a single
coordinator's command throughput.

    python bench/state_machine.py [--tasks 20000]
"""

from __future__ import annotations

import argparse
import time
import uuid

from dtf_common.pb.dtf.v1 import commands_pb2 as c
from dtf_common.pb.dtf.v1 import types_pb2 as t
from dtf_coordinator.scheduling import Planner
from dtf_coordinator.state import Assigned, StateMachine, StateParams


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", type=int, default=20_000)
    n = parser.parse_args().tasks
    sm = StateMachine(StateParams(max_queue_size=n * 2))
    index = 0

    def apply(cmd: c.Command) -> object:
        nonlocal index
        index += 1
        cmd.time_ms = 1_000
        return sm.apply(index, cmd)

    specs = [t.TaskSpec(task_id=str(uuid.uuid4()), type="noop", priority=5, submitter="bench") for _ in range(n)]
    cost = dict.fromkeys(("submit", "plan", "assign", "start", "complete"), 0.0)
    t0 = time.perf_counter()
    for i in range(0, n, 500):
        apply(c.Command(submit_tasks=c.SubmitTasks(tasks=specs[i : i + 500])))
    cost["submit"] = time.perf_counter() - t0
    for worker in ("w1", "w2"):
        caps = t.Capabilities(hardware=["cpu"], slots=256)
        apply(c.Command(register_worker=c.RegisterWorker(worker_id=worker, capabilities=caps)))
    planner = Planner()
    while sm.pending_count:
        t0 = time.perf_counter()
        plan = planner.plan(sm, {"w1": 256, "w2": 256}, 2_000)
        t1 = time.perf_counter()
        assignments = [c.Assignment(task_id=p.task_id, worker_id=p.worker_id, lease_id=uuid.uuid4().hex) for p in plan]
        granted = apply(c.Command(assign_tasks=c.AssignTasks(assignments=assignments)))
        assert isinstance(granted, Assigned)
        t2 = time.perf_counter()
        starts = [
            t.TaskOutcome(task_id=tid, lease_id=lease, kind=t.TaskOutcome.STARTED) for tid, _, lease in granted.granted
        ]
        apply(c.Command(report_outcomes=c.ReportOutcomes(outcomes=starts)))
        t3 = time.perf_counter()
        ends = [
            t.TaskOutcome(task_id=tid, lease_id=lease, kind=t.TaskOutcome.COMPLETED)
            for tid, _, lease in granted.granted
        ]
        apply(c.Command(report_outcomes=c.ReportOutcomes(outcomes=ends)))
        t4 = time.perf_counter()
        sm.drain_effects()
        cost["plan"] += t1 - t0
        cost["assign"] += t2 - t1
        cost["start"] += t3 - t2
        cost["complete"] += t4 - t3
    total = sum(cost.values())
    for step, seconds in cost.items():
        print(f"{step:>9}: {seconds / n * 1e6:6.1f} us/task")
    print(f"{'total':>9}: {total / n * 1e6:6.1f} us/task -> at most {n / total:,.0f} tasks/s on one core")
    # A short task's start and end usually travel together, and the worker then sends the end only.
    no_start = total - cost["start"]
    print(f"without separate starts: {no_start / n * 1e6:6.1f} us/task -> at most {n / no_start:,.0f} tasks/s")


if __name__ == "__main__":
    main()
