"""Stopping a coordinator nobody uses: the clusters `dtf run` starts stay up between runs
(so the next run finds warm workers) and go away on their own once idle.

A coordinator is busy while a task is unfinished, a WebSocket client is connected, or an
API request came in within the idle time; `IdleShutdown` sets the stop event once it
has been idle for `idle_s` seconds. Off (0) for every other coordinator.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from dtf_common.schemas import TaskStatus
from dtf_coordinator.service.loops import LoopService
from dtf_coordinator.state import StateMachine

log = logging.getLogger("dtf.idle")

UNFINISHED = (TaskStatus.PENDING, TaskStatus.ASSIGNED, TaskStatus.RUNNING)


class Activity:
    """When the API last saw a request, and how many WebSocket clients it holds."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.last = clock()
        self.sockets = 0

    def touch(self) -> None:
        self.last = self.clock()


class IdleShutdown(LoopService):
    name = "idle-shutdown"

    def __init__(
        self, idle_s: float, activity: Activity, state: Callable[[], StateMachine], stop: asyncio.Event
    ) -> None:
        self.idle_s = idle_s
        self.activity = activity
        self.state = state
        self.stop = stop
        self.interval = min(1.0, idle_s / 4)

    async def run_once(self) -> bool:
        """Whether this pass stopped the coordinator."""
        counts = self.state().status_counts
        if self.activity.sockets or any(counts[s] for s in UNFINISHED):
            self.activity.touch()
            return False
        idle = self.activity.clock() - self.activity.last
        if idle < self.idle_s:
            return False
        log.info("no request, client or unfinished task for %.0fs: stopping", idle)
        self.stop.set()
        return True
