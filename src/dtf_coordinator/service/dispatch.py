"""Long-poll leasing: workers wait here, the dispatcher places ready tasks on them.

A worker's LeaseTasks call parks a `Poller`. Whenever tasks become ready or a worker
starts waiting, one dispatch pass asks the planner for a placement over all waiting
workers, proposes it as one AssignTasks command, and hands each worker the leases it
was granted once the command is durable. Leases granted but not yet known to be
delivered (a poll that timed out, a new leader) are handed out again on the worker's
next poll; the worker ignores a lease id it already runs.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass

from dtf_common.clock import wall_ms
from dtf_common.pb.dtf.v1 import commands_pb2
from dtf_common.schemas import TaskStatus
from dtf_coordinator.consensus import Consensus
from dtf_coordinator.scheduling import Planner
from dtf_coordinator.service.loops import LoopService
from dtf_coordinator.state import Assigned

log = logging.getLogger("dtf.dispatch")
Grant = tuple[str, str]  # (task_id, lease_id)


@dataclass(eq=False)
class Poller:
    worker_id: str
    max_tasks: int
    future: asyncio.Future[list[Grant]]


class Dispatcher(LoopService):
    """A pass when kicked (tasks became ready, a worker started waiting), and every
    `backoff_poll_s` in case a kick was missed."""

    name = "dispatch"

    def __init__(
        self,
        node: Consensus,
        planner: Planner,
        *,
        on_granted: Callable[[list[tuple[str, str, str]], int], None] | None = None,
        new_lease_id: Callable[[], str] = lambda: uuid.uuid4().hex,
        backoff_poll_s: float = 0.2,
        clock: Callable[[], int] = wall_ms,
    ) -> None:
        self._clock = clock
        self.node = node
        self.planner = planner
        self.waiting: dict[str, Poller] = {}
        self.delivered: set[str] = set()
        self._on_granted = on_granted
        self._new_lease_id = new_lease_id
        self.interval = backoff_poll_s

    def undelivered(self, worker_id: str) -> list[Grant]:
        state = self.node.state
        worker = state.workers.get(worker_id)
        if worker is None:
            return []
        return [
            (task_id, lease_id)
            for lease_id, task_id in worker.leases.items()
            if lease_id not in self.delivered and state.tasks[task_id].status is TaskStatus.ASSIGNED
        ]

    def mark_delivered(self, grants: list[Grant]) -> None:
        self.delivered.update(lease_id for _, lease_id in grants)
        live = self.node.state.leases
        if len(self.delivered) > 2 * len(live) + 1_000:
            # Forget leases that ended; only current ones can still be handed out again.
            self.delivered.intersection_update(live)

    def forget(self, lease_ids: list[str]) -> None:
        self.delivered.difference_update(lease_ids)

    async def wait_for_tasks(self, worker_id: str, max_tasks: int, wait_s: float) -> list[Grant]:
        pending = self.undelivered(worker_id)[:max_tasks]
        if pending or max_tasks <= 0:
            return pending
        previous = self.waiting.pop(worker_id, None)
        if previous is not None and not previous.future.done():
            previous.future.set_result([])  # a newer poll from the same worker replaces it
        poller = Poller(worker_id, max_tasks, asyncio.get_running_loop().create_future())
        self.waiting[worker_id] = poller
        self.kick()
        try:
            return await asyncio.wait_for(asyncio.shield(poller.future), timeout=max(0.0, wait_s))
        except TimeoutError:
            return []
        finally:
            if self.waiting.get(worker_id) is poller:
                del self.waiting[worker_id]

    async def run_once(self) -> int:
        """One placement pass; returns the number of leases granted."""
        state = self.node.state
        waiting = {w: p.max_tasks for w, p in self.waiting.items() if not p.future.done()}
        if not waiting or not state.ready or not self.node.is_leader():
            return 0
        plan = self.planner.plan(state, waiting, self._clock())
        if not plan:
            return 0
        command = commands_pb2.Command(
            assign_tasks=commands_pb2.AssignTasks(
                assignments=[
                    commands_pb2.Assignment(task_id=p.task_id, worker_id=p.worker_id, lease_id=self._new_lease_id())
                    for p in plan
                ]
            )
        )
        outcome = await self.node.propose(command)
        if not isinstance(outcome, Assigned):
            return 0
        by_worker: dict[str, list[Grant]] = {}
        for task_id, worker_id, lease_id in outcome.granted:
            by_worker.setdefault(worker_id, []).append((task_id, lease_id))
        for worker_id, grants in by_worker.items():
            poller = self.waiting.get(worker_id)
            if poller is not None and not poller.future.done():
                poller.future.set_result(grants)
        if self._on_granted is not None:
            self._on_granted(outcome.granted, command.time_ms)
        return len(outcome.granted)
