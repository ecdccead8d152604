"""A coordinator told to stop exits: cleanly when its stop finishes, and with exit status 1
and the stacks of what it waited on when the stop hangs, instead of ignoring SIGTERM."""

from __future__ import annotations

import subprocess
import sys
import textwrap

PROGRAM = """\
import asyncio, logging, sys, time
from dtf_coordinator.shutdown import stop_within

logging.basicConfig(level=logging.INFO)

async def finishes():
    await asyncio.sleep(0.05)

async def waits_for_ever():
    await asyncio.Event().wait()

async def blocks_the_loop():
    time.sleep(60)

async def main(stop):
    await stop_within(stop, 0.5, backstop_s=0.5)
    time.sleep(1.5)  # past the backstop: it must have been cancelled
    print("stopped")

asyncio.run(main(globals()[sys.argv[1]]))
"""


def stop(how: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(PROGRAM), how], capture_output=True, text=True, timeout=60
    )


def test_a_stop_that_finishes_returns_and_cancels_the_backstop() -> None:
    done = stop("finishes")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "stopped"


def test_a_stop_that_hangs_exits_1_showing_where_it_waits() -> None:
    done = stop("waits_for_ever")
    assert done.returncode == 1
    assert "did not stop within 0.5 s" in done.stderr
    assert "waits_for_ever" in done.stderr  # the hanging coroutine's stack
    assert "stopped" not in done.stdout


def test_a_stop_that_blocks_the_event_loop_still_exits_with_the_threads_stacks() -> None:
    done = stop("blocks_the_loop")
    assert done.returncode == 1
    assert "Timeout" in done.stderr  # faulthandler's report
    assert "blocks_the_loop" in done.stderr
    assert "stopped" not in done.stdout
