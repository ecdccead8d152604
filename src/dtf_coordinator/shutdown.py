"""A coordinator's stop, bounded: it exits even when a part of it will not stop."""

from __future__ import annotations

import asyncio
import faulthandler
import logging
import os
import sys
from collections.abc import Callable, Coroutine
from typing import Any

log = logging.getLogger("dtf.coordinator")

# SIGTERM to exit: the API's 5 s to close its connections, gRPC's 1 s grace, a last store
# flush and the consensus stop, with room to spare on a loaded machine.
STOP_DEADLINE_S = 20.0


async def stop_within(
    stop: Callable[[], Coroutine[Any, Any, None]], deadline_s: float, backstop_s: float = 5.0
) -> None:
    """Stop cleanly, or show where the stop hangs and exit 1.

    A coordinator that never exits after SIGTERM holds its ports and its store's lock, and
    whoever stops it can only SIGKILL it without learning why. Exiting is safe: what was
    acknowledged is in the fsynced command log, and the store is rebuilt from it.
    """
    # The backstop, for a stop that blocks the event loop itself (a call that never returns).
    faulthandler.dump_traceback_later(deadline_s + backstop_s, exit=True)
    try:
        stopping = asyncio.create_task(stop(), name="dtf-stop")
        await asyncio.wait({stopping}, timeout=deadline_s)
        if stopping.done():
            stopping.result()
            return
        log.error("the coordinator did not stop within %g s; where its tasks wait:", deadline_s)
        for task in asyncio.all_tasks():
            try:
                task.print_stack(file=sys.stderr)
            except Exception:  # a frame without a line number (3.11's linecache): name the task at least
                print(f"{task!r} (its stack could not be printed)", file=sys.stderr)
        faulthandler.dump_traceback(all_threads=True)
        logging.shutdown()
        os._exit(1)
    finally:
        faulthandler.cancel_dump_traceback_later()
