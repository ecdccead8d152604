"""`dtf run` when things go wrong outside the tests: a worker killed mid-run, a test the
workers never report."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from tests.e2e.e2e_harness import wait_until
from tests.e2e.run_suites import PASSING, dtf_run, summary_counts, write_suite

pytestmark = pytest.mark.e2e

# The first attempt of test_victim says where it runs and waits there; the worker running
# it is then killed. The attempt after that passes.
VICTIM = """
import os
import time
from pathlib import Path


def test_before():
    pass


def test_victim():
    marker = Path(__file__).parent / "victim.json"
    if not marker.exists():
        marker.write_text('{"worker": "%s", "pid": %d}' % (os.environ["DTF_WORKER_ID"], os.getpid()))
        time.sleep(120)


def test_after():
    pass
"""

# Workers deselect one test that the client collects: no batch ever reports it.
ONLY_ON_THE_CLIENT = """


def pytest_collection_modifyitems(config, items):
    if hasattr(config, "workerinput"):  # an xdist worker, as every batch of dtf run plays one
        items[:] = [item for item in items if item.name != "test_square[5]"]
"""


def _gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def test_a_worker_killed_mid_run_loses_no_test(tmp_path: Path) -> None:
    suite = write_suite(tmp_path, {"test_victim.py": VICTIM, "test_ok.py": PASSING})
    data_dir = tmp_path / ".dtf"
    argv = [sys.executable, "-m", "dtf.cli.main", "run", "-n", "2", "--data-dir", str(data_dir), "--", "suite"]
    with open(tmp_path / "run.out", "w") as out, open(tmp_path / "run.err", "w") as err:
        proc = subprocess.Popen(argv, cwd=tmp_path, stdout=out, stderr=err)
    try:
        victim = wait_until(
            lambda: json.loads((suite / "victim.json").read_text()) if (suite / "victim.json").exists() else None,
            60,
            lambda: (tmp_path / "run.err").read_text(),
            ignore=(ValueError,),
        )
        workers = json.loads((data_dir / "connection.json").read_text())["workers"]
        [worker_pid] = [w["pid"] for w in workers if w["id"] == victim["worker"]]
        os.kill(worker_pid, signal.SIGKILL)
        code = proc.wait(120)
    finally:
        proc.kill()

    stdout = (tmp_path / "run.out").read_text()
    assert code == 0, stdout + (tmp_path / "run.err").read_text()
    assert summary_counts(stdout) == {"passed": 11}, stdout  # every test, the victim on its second attempt
    assert _gone(victim["pid"])  # the killed worker's batch did not outlive it


def test_a_test_the_workers_never_report_fails_the_run(tmp_path: Path) -> None:
    write_suite(tmp_path, {"conftest.py": ONLY_ON_THE_CLIENT, "test_ok.py": PASSING})

    run = dtf_run(tmp_path, "-n", "1", "--data-dir", str(tmp_path / ".dtf"), "--", "suite")

    assert run.returncode == 1, run.stdout + run.stderr
    assert "FAILED suite/test_ok.py::test_square[5] - dtf: no result" in run.stdout
    assert "dtf: no result was recorded: the worker's pytest did not collect it" in run.stdout
    assert re.search(r"^=+ 1 failed, 7 passed in [\d.]+s =+$", run.stdout, re.M), run.stdout
