"""Background loops: a pass each interval or at once when kicked; a failing pass does
not end the loop; a loop with a stop condition ends by itself."""

from __future__ import annotations

import asyncio

from dtf_coordinator.service.loops import LoopService


class Recorder(LoopService):
    name = "recorder"

    def __init__(self, interval: float, *, fail_first: bool = False, passes: int | None = None) -> None:
        self.interval = interval
        self.passes = 0
        self.fail_first = fail_first
        self.limit = passes

    def should_run(self) -> bool:
        return self.limit is None or self.passes < self.limit

    async def run_once(self) -> int:
        self.passes += 1
        if self.fail_first and self.passes == 1:
            raise RuntimeError("first pass fails")
        return self.passes


def test_a_kick_runs_a_pass_at_once_instead_of_after_the_interval() -> None:
    async def scenario() -> int:
        loop = Recorder(interval=60)
        task = asyncio.create_task(loop.run())
        await asyncio.sleep(0.05)
        before = loop.passes
        loop.kick()
        await asyncio.sleep(0.05)
        task.cancel()
        return loop.passes - before

    assert asyncio.run(scenario()) == 1


def test_a_failing_pass_is_logged_and_the_loop_goes_on() -> None:
    async def scenario() -> int:
        loop = Recorder(interval=0.01, fail_first=True)
        task = asyncio.create_task(loop.run())
        await asyncio.sleep(0.2)
        task.cancel()
        return loop.passes

    assert asyncio.run(scenario()) >= 3


def test_a_loop_whose_condition_fails_ends_by_itself() -> None:
    async def scenario() -> int:
        loop = Recorder(interval=0.01, passes=3)
        loop.run_first = True
        await asyncio.wait_for(loop.run(), timeout=5)
        return loop.passes

    assert asyncio.run(scenario()) == 3
