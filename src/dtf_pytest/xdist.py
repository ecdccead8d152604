"""pytest-xdist's options, switched off in the sessions dtf itself distributes.

Both sides of `dtf run` are pytest sessions that may carry xdist's `-n` (on the command
line, or in `addopts` of the project's configuration): the run's own session, which
reads it as its number of workers, and every batch, which plays one worker. Neither
may then start xdist's own workers. pytest-xdist's worker processes switch its options
off the same way before they configure.
"""

from __future__ import annotations

from typing import Any


def xdist_request(option: Any) -> tuple[Any, str]:
    """The `-n` and `--dist` the session was given (None and "no" when it was not)."""
    dist = getattr(option, "dist", "no") or "no"
    if getattr(option, "distload", False):
        dist = "load"
    return getattr(option, "numprocesses", None), str(dist)


def disable_xdist(option: Any) -> None:
    """Switch xdist off in a session that parsed its options: call before xdist's own
    `pytest_cmdline_main` (from a hook wrapper), which would turn `-n` into workers."""
    for name, off in (("numprocesses", None), ("maxprocesses", None), ("dist", "no"), ("distload", False)):
        if hasattr(option, name):
            setattr(option, name, off)
    if hasattr(option, "tx"):
        option.tx = []
    if hasattr(option, "looponfail"):
        option.looponfail = False
