"""A worker killed with SIGKILL and started again under the same id: the task it was
running is requeued at once (not after its lease runs out, which its heartbeats would
otherwise renew for ever), and the task's process, which outlived the worker, is killed."""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

import psutil
import pytest

from tests.e2e.e2e_harness import Cluster, wait_until

pytestmark = pytest.mark.e2e

LEASE_S = 120.0


def long_then_quick(marker: Path, pid_file: Path) -> dict[str, object]:
    """A task whose first attempt records its pid and sleeps; a later one ends at once."""
    code = (
        "import os, pathlib, sys, time\n"
        f"marker, pid_file = pathlib.Path({str(marker)!r}), pathlib.Path({str(pid_file)!r})\n"
        "if marker.exists():\n"
        "    print('second attempt'); sys.exit(0)\n"
        "marker.touch(); pid_file.write_text(str(os.getpid())); time.sleep(300)\n"
    )
    return {"type": "command", "parameters": {"command": [sys.executable, "-c", code]}}


def test_a_restarted_worker_gives_up_the_task_it_lost_and_its_orphan_is_killed(
    cluster: Cluster, tmp_path: Path
) -> None:
    # Leases far longer than the test, and a worker never marked offline: only the
    # restart itself may give the task up.
    cluster.start_coordinator(task_scheduler={"lease_timeout": LEASE_S}, health_monitor={"failure_threshold": 10_000})
    worker = cluster.start_worker("worker-a")
    client = cluster.client()
    cluster.wait_workers("worker-a")
    pid_file = tmp_path / "task.pid"
    [task_id] = client.submit(long_then_quick(tmp_path / "marker", pid_file))
    wait_until(lambda: client.task(task_id)["status"] == "running" and pid_file.exists(), 30, "the task to run")
    orphan = int(wait_until(lambda: pid_file.read_text().strip(), 10, "the task's pid"))

    assert worker.proc is not None
    os.kill(worker.proc.pid, signal.SIGKILL)  # the worker alone, as the OOM killer would
    worker.proc.wait()
    assert psutil.pid_exists(orphan), "the task runs in a session of its own and outlives its worker"
    restarted = time.monotonic()
    worker.start()

    done = cluster.wait_final([task_id])[task_id]
    assert done["status"] == "completed" and done["results"]["stdout_tail"] == "second attempt\n"
    assert time.monotonic() - restarted < LEASE_S / 4, "requeued at the restart, not when the lease ran out"
    assert done["metadata"]["dtf"]["attempts"] == 2
    wait_until(lambda: not psutil.pid_exists(orphan) or psutil.Process(orphan).status() == "zombie", 10, "the orphan")
