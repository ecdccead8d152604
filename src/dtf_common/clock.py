"""Wall-clock time as the project counts it: integer milliseconds since the Unix epoch.

Pure cores never read a clock: the leader stamps `time_ms` into each command, and the
shells that need "now" take a `clock: Callable[[], int]` defaulting to `wall_ms`, so a
test can pass its own.
"""

from __future__ import annotations

import time
from collections.abc import Callable

Clock = Callable[[], int]


def wall_ms() -> int:
    """Milliseconds since the epoch, from the system's wall clock."""
    return time.time_ns() // 1_000_000
