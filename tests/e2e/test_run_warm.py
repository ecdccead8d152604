"""`dtf run` on a cluster that is already running, `--keep` and `dtf down`, `--reruns`,
and the pytest plugin (`pytest --dtf N`), with real processes."""

from __future__ import annotations

import importlib.util
import json
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from dtf.client import DtfClient
from dtf.run.cluster import live_cluster
from tests.e2e.e2e_harness import wait_until
from tests.e2e.run_suites import MIXED_MORE, PASSING, dtf_run, dtf_up, summary_counts, write_suite

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]

FLAKY = """
from pathlib import Path


def test_flaky():
    marker = Path(__file__).parent / "attempted"
    if not marker.exists():
        marker.write_text("1")
        raise AssertionError("fails on its first attempt")


def test_fine():
    pass
"""

BROKEN = """
def test_always():
    assert 1 == 2, "always broken"
"""


def _pids(data_dir: Path) -> list[int]:
    info = json.loads((data_dir / "connection.json").read_text())
    return [c["pid"] for c in info["coordinators"]] + [w["pid"] for w in info["workers"]]


def _running(pid: int) -> bool:
    return psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE


def _dtf(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "dtf.cli.main", *args]
    return subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=60, check=False)


@pytest.fixture(name="dtf_up")
def running_cluster(tmp_path: Path) -> Iterator[Path]:
    with dtf_up(tmp_path) as data_dir:
        yield data_dir


@pytest.fixture
def kept(tmp_path: Path) -> Iterator[Path]:
    """A data directory whose cluster (if a test leaves one running) is stopped at the end."""
    data_dir = tmp_path / ".dtf"
    try:
        yield data_dir
    finally:
        if (data_dir / "connection.json").exists():
            _dtf(tmp_path, "down", "--data-dir", str(data_dir))


def test_runs_use_a_running_cluster_and_the_plugin_matches_dtf_run(tmp_path: Path, dtf_up: Path) -> None:
    write_suite(tmp_path, {"test_ok.py": PASSING, "test_more.py": MIXED_MORE})
    before = _pids(dtf_up)

    run = dtf_run(tmp_path, "-n", "2", "--data-dir", str(dtf_up), "--", "suite")
    argv = [sys.executable, "-m", "pytest", "--dtf", "2", "--dtf-data-dir", str(dtf_up), "suite"]
    plugin = subprocess.run(argv, cwd=tmp_path, capture_output=True, text=True, timeout=120, check=False)

    assert run.returncode == 1, run.stdout + run.stderr
    assert "2 workers (running cluster)" in run.stdout
    assert summary_counts(run.stdout) == {"failed": 1, "passed": 9}, run.stdout
    assert plugin.returncode == run.returncode, plugin.stdout + plugin.stderr
    assert summary_counts(plugin.stdout) == summary_counts(run.stdout), plugin.stdout
    assert "FAILED suite/test_more.py::test_other_fail - ValueError: bad value" in plugin.stdout
    assert "(running cluster)" in plugin.stdout
    # Neither run started or stopped a process of the cluster.
    assert _pids(dtf_up) == before
    assert all(_running(pid) for pid in before)

    # The same cluster as a remote one: by URL and token, with the project shipped as a
    # snapshot where this install has snapshots.
    info = json.loads((dtf_up / "connection.json").read_text())
    remote = dtf_run(tmp_path, "--coordinator", info["api_url"], "--token", info["admin_token"], "--", "suite")

    assert remote.returncode == 1, remote.stdout + remote.stderr
    assert f"2 workers at {info['api_url']}" in remote.stdout
    assert summary_counts(remote.stdout) == summary_counts(run.stdout), remote.stdout
    if importlib.util.find_spec("dtf.run.snapshot") is not None:
        assert "dtf: project snapshot" in remote.stdout


def test_keep_reruns_on_another_worker_and_down(tmp_path: Path, kept: Path) -> None:
    write_suite(tmp_path, {"test_flaky.py": FLAKY})
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "test_broken.py").write_text(BROKEN)
    flaky_id = "suite/test_flaky.py::test_flaky"

    first = dtf_run(tmp_path, "-n", "2", "--keep", "--reruns", "2", "--data-dir", str(kept), "--", "suite")

    assert first.returncode == 0, first.stdout + first.stderr
    assert f"FLAKY {flaky_id} - passed on attempt 2 after 1 failed" in first.stdout
    assert re.search(r"^=+ 2 passed, 1 rerun in [\d.]+s =+$", first.stdout, re.M), first.stdout
    assert "dtf down --data-dir" in first.stdout
    pids = _pids(kept)
    assert all(_running(pid) for pid in pids)  # --keep: still running after dtf run exited

    # The store holds both attempts; the rerun went to the other worker and says what it reran.
    with DtfClient.from_connection(kept / "connection.json") as client:
        rows = sorted(client.all_results(test_id=flaky_id), key=lambda r: r["timestamp"])
        assert [r["status"] for r in rows] == ["failure", "success"]
        assert rows[0]["worker_id"] != rows[1]["worker_id"]
        rerun = client.task(rows[1]["task_id"])
        assert {k: rerun["metadata"][k] for k in ("rerun_of", "attempt")} == {"rerun_of": flaky_id, "attempt": 2}

    # A test that fails every time is a failure; the kept cluster is used again.
    broken = dtf_run(tmp_path, "--reruns", "1", "--data-dir", str(kept), "--", "broken")

    assert broken.returncode == 1, broken.stdout + broken.stderr
    assert "(running cluster)" in broken.stdout
    assert "FAILED broken/test_broken.py::test_always - AssertionError: always broken" in broken.stdout
    assert re.search(r"^=+ 1 failed, 1 rerun in [\d.]+s =+$", broken.stdout, re.M), broken.stdout
    assert _pids(kept) == pids

    down = _dtf(tmp_path, "down", "--data-dir", str(kept))

    assert down.returncode == 0, down.stderr
    assert not [pid for pid in pids if _running(pid)]
    assert live_cluster(kept) is None


def test_plain_pytest_is_untouched_by_the_plugin() -> None:
    config_tests = "tests/unit/test_config.py"
    argv = [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider", config_tests]
    plain = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=60, check=False)

    assert plain.returncode == 0, plain.stdout + plain.stderr
    assert re.search(r"^\d+ tests collected", plain.stdout, re.M), plain.stdout
    assert "dtf run" not in plain.stdout + plain.stderr


def test_a_run_leaves_its_cluster_for_the_next_until_it_is_idle(tmp_path: Path) -> None:
    write_suite(tmp_path, {"test_ok.py": PASSING})
    data_dir = tmp_path / ".dtf"
    argv = ["run", "-n", "2", "--idle-timeout", "4", "--data-dir", str(data_dir), "--", "suite"]

    first = _dtf(tmp_path, *argv)
    pids = _pids(data_dir)
    second = _dtf(tmp_path, *argv)

    assert first.returncode == 0 and second.returncode == 0, first.stdout + second.stdout
    assert f"the cluster in {data_dir} keeps running for" in first.stdout and "once idle" in first.stdout
    assert all(_running(pid) for pid in pids)  # the run is over, the cluster is not
    assert "2 workers (running cluster)" in second.stdout and _pids(data_dir) == pids
    # Idle for 4 s: the coordinator stops, and its workers follow it.
    wait_until(lambda: not any(_running(pid) for pid in pids), 60, lambda: str([_running(p) for p in pids]))
    assert live_cluster(data_dir) is None
