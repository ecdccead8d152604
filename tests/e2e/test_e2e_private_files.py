"""What a coordinator and a worker keep on disk is their user's alone: directories 0700,
files 0600 (the command log holds task environments; the spool, task results), while the
files a task writes keep the task's own umask."""

from __future__ import annotations

import stat
import sys
from pathlib import Path

import pytest

from tests.e2e.e2e_harness import Cluster

pytestmark = pytest.mark.e2e


def modes(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): stat.S_IMODE(p.stat().st_mode) for p in [root, *root.rglob("*")]}


def test_data_directories_and_files_are_readable_by_their_owner_only(cluster: Cluster, tmp_path: Path) -> None:
    coordinator = cluster.start_coordinator()
    worker = cluster.start_worker("worker-a")
    client = cluster.client()
    cluster.wait_workers("worker-a")
    code = "import os, stat; open('out.txt', 'w').close(); print(oct(stat.S_IMODE(os.stat('out.txt').st_mode)))"
    [task_id] = client.submit({"type": "command", "parameters": {"command": [sys.executable, "-c", code]}})
    done = cluster.wait_final([task_id])[task_id]
    assert done["status"] == "completed"

    # A coordinator creates nothing anyone else needs: all of it is private.
    database = Path(coordinator.config["database"]["path"])
    coordinator_files = modes(coordinator.data_dir) | {database.name: stat.S_IMODE(database.stat().st_mode)}
    assert "log/log.bin" in coordinator_files and "log/hardstate.json" in coordinator_files
    open_to_others = {name: oct(mode) for name, mode in coordinator_files.items() if mode & 0o077}
    assert not open_to_others, f"readable or writable by others: {open_to_others}"
    # A worker's directory is closed to others, and its spool (task results) is private too.
    working_dir = Path(worker.config["execution"]["working_dir"])
    assert stat.S_IMODE(working_dir.stat().st_mode) == 0o700
    assert stat.S_IMODE((working_dir / "spool").stat().st_mode) == 0o700
    assert stat.S_IMODE((working_dir / "spool" / "outcomes.spool").stat().st_mode) == 0o600
    # The task's own file was made with the umask the worker was started with, not the worker's private one.
    assert done["results"]["stdout_tail"].strip() == oct(0o666 & ~0o022)
