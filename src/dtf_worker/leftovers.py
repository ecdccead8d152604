"""Task processes a worker's last life left running.

Tasks run in sessions of their own (so that a task's whole process group can be
stopped), which also means they outlive a worker killed with SIGKILL. Its next start
finds them by their working directory, which is under the worker's runs directory, and
kills their process groups before that directory is cleared: the coordinator has, or
will have, given those tasks to someone else.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
from pathlib import Path

import psutil

log = logging.getLogger("dtf.worker")


def kill_leftover_tasks(runs_dir: Path) -> int:
    """Kill the process group of every process of this user whose working directory is
    under `runs_dir`; returns how many processes were found."""
    if not runs_dir.is_dir() or not any(runs_dir.iterdir()):
        return 0  # no task's directory, so no task to look for: spare the walk over every process
    root = str(runs_dir.resolve())
    me, uid = os.getpid(), os.getuid()
    groups: set[int] = set()
    found = 0
    for proc in psutil.process_iter(["pid", "uids", "cwd"]):
        info = proc.info
        cwd = info.get("cwd")
        uids = info.get("uids")
        if info["pid"] == me or not cwd or uids is None or uids.real != uid:
            continue
        if cwd == root or cwd.startswith(root + os.sep):
            found += 1
            with contextlib.suppress(psutil.Error, OSError):
                groups.add(os.getpgid(info["pid"]))
            with contextlib.suppress(psutil.Error):
                proc.kill()  # also when it left its group
    for group in groups - {os.getpgid(me)}:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(group, signal.SIGKILL)
    if found:
        log.warning("killed %d task processes left running by this worker's last life", found)
    return found
