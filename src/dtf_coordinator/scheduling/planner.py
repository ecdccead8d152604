"""Placement of ready tasks on workers that are waiting for work.

Matching first (a task's requirements against a worker's capabilities), then ordering:
tasks in priority order with fair share among submitters and age (the state machine's
ready order), workers by the load balancer's strategy. The planner returns a plan; the
service proposes it as an AssignTasks command, and the state machine re-checks every
assignment when it applies it, so a stale plan can never over-assign.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Literal

from dtf_common.schemas import WorkerStatus
from dtf_coordinator.state.machine import StateMachine
from dtf_coordinator.state.model import TaskState, WorkerState

Strategy = Literal["fair_share", "round_robin", "least_loaded", "performance_weighted"]
STRATEGIES: tuple[Strategy, ...] = ("fair_share", "round_robin", "least_loaded", "performance_weighted")


@dataclass(frozen=True, slots=True)
class Placement:
    task_id: str
    worker_id: str


@dataclass
class Planner:
    strategy: Strategy = "fair_share"
    worker_cap: int = 0  # most workers holding work at once; 0 = no cap
    task_cap_per_worker: int = 0  # most tasks one worker holds; 0 = its slots
    scan_limit: int = 50_000  # ready tasks examined per pass, so a pass stays bounded
    _rr_cursor: int = field(default=0, repr=False)

    def plan(self, state: StateMachine, waiting: Mapping[str, int], now_ms: int) -> list[Placement]:
        """Place ready tasks on `waiting` workers (worker_id -> slots it asked for)."""
        capacity: dict[str, int] = {}
        for worker_id, asked in waiting.items():
            worker = state.workers.get(worker_id)
            # A worker whose own health report says critical gets no new work until it recovers.
            if worker is None or not worker.alive or worker.status is WorkerStatus.ERROR:
                continue
            free = min(asked, worker.free_slots(self.task_cap_per_worker))
            if free > 0:
                capacity[worker_id] = free
        if self.worker_cap:
            capacity = self._apply_worker_cap(state, capacity)
        if not capacity:
            return []
        held = {w: len(state.workers[w].leases) for w in capacity}
        order = sorted(capacity)
        pick = self._picker(state, held, order)
        plan: list[Placement] = []
        remaining = sum(capacity.values())
        for scanned, task in enumerate(state.iter_ready()):
            if remaining == 0 or scanned >= self.scan_limit:
                break
            if task.not_before_ms > now_ms:
                continue
            eligible = [w for w in order if capacity[w] > 0 and state.workers[w].offers.satisfies(task.needs, w)]
            if not eligible:
                continue
            worker_id = pick(task, eligible)
            plan.append(Placement(task.task_id, worker_id))
            capacity[worker_id] -= 1
            held[worker_id] += 1
            remaining -= 1
        return plan

    def _apply_worker_cap(self, state: StateMachine, capacity: dict[str, int]) -> dict[str, int]:
        active = {w.worker_id for w in state.workers.values() if w.leases}
        room = self.worker_cap - len(active)
        allowed = {w: c for w, c in capacity.items() if w in active}
        for worker_id in sorted(w for w in capacity if w not in active):
            if room <= 0:
                break
            allowed[worker_id] = capacity[worker_id]
            room -= 1
        return allowed

    def _picker(
        self, state: StateMachine, held: dict[str, int], order: list[str]
    ) -> Callable[[TaskState, list[str]], str]:
        workers = state.workers
        if self.strategy == "round_robin":

            def round_robin(_task: TaskState, eligible: list[str]) -> str:
                # Rotate over the stable worker order, starting after the last one chosen.
                n = len(order)
                for step in range(n):
                    candidate = order[(self._rr_cursor + step) % n]
                    if candidate in eligible:
                        self._rr_cursor = (order.index(candidate) + 1) % n
                        return candidate
                return eligible[0]

            return round_robin
        if self.strategy == "least_loaded":

            def least_loaded(_task: TaskState, eligible: list[str]) -> str:
                return min(eligible, key=lambda w: (held[w] / workers[w].offers.slots, _cpu(workers[w]), w))

            return least_loaded
        if self.strategy == "performance_weighted":

            def performance_weighted(_task: TaskState, eligible: list[str]) -> str:
                # Faster workers (lower mean task time) take work first; unknown ones count as average.
                means = {w: workers[w].mean_task_seconds() for w in eligible}
                known = [s for s in means.values() if s is not None]
                default = sum(known) / len(known) if known else 1.0

                def cost(w: str) -> tuple[float, str]:
                    mean = means[w]
                    return ((default if mean is None else mean) * (1 + held[w]), w)

                return min(eligible, key=cost)

            return performance_weighted

        def fair_share(_task: TaskState, eligible: list[str]) -> str:
            # Each worker's share of the work in proportion to its slots.
            return min(eligible, key=lambda w: (held[w] / workers[w].offers.slots, w))

        return fair_share


def _cpu(worker: WorkerState) -> float:
    try:
        value = json.loads(worker.health_json or "{}").get("cpu_percent", 0.0)
    except (ValueError, AttributeError):
        return 0.0
    return float(value) if isinstance(value, int | float) else 0.0
