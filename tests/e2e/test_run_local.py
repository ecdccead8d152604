"""`dtf run -n 2` as a user runs it: a real coordinator and workers started for the run."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from collections import Counter
from pathlib import Path

import psutil
import pytest

from dtf.run.args import batch_pytest_args
from tests.e2e.run_suites import (
    CRASH_ID,
    HANG_ID,
    MIXED,
    MIXED_MORE,
    PASSING,
    SEGFAULT_ID,
    dtf_run,
    plain_pytest,
    summary_counts,
    verbose_outcomes,
    write_suite,
)

pytestmark = pytest.mark.e2e


def _collected(tmp_path: Path, *args: str) -> list[str]:
    out = plain_pytest(tmp_path, "--collect-only", *args).stdout
    return [line for line in out.splitlines() if "::" in line]


@pytest.mark.parametrize("head_start", [False, True], ids=["all-on-the-cluster", "head-start"])
def test_mixed_suite_reports_like_pytest_and_survives_crashes_and_hang(tmp_path: Path, head_start: bool) -> None:
    """With the head start, the run's session runs the first tests itself while its cluster
    starts, in a child of its own: a test that crashes it is reported as on a worker."""
    write_suite(tmp_path, {"test_mixed.py": MIXED, "test_more.py": MIXED_MORE})
    junit = tmp_path / "out.xml"

    run = dtf_run(
        tmp_path, "--data-dir", str(tmp_path / ".dtf"), "--junitxml", str(junit), "--timeout", "8",
        "--", "suite", env={"DTF_HEAD_START": "1" if head_start else "0"},
    )  # fmt: skip

    assert run.returncode == 1, run.stdout + run.stderr
    assert ("ran here while the cluster started" in run.stdout) == head_start, run.stdout
    # The same counts as plain pytest over the tests that do not kill their process;
    # the two crashes and the hang are three more failures.
    plain = plain_pytest(tmp_path, "suite", *(f"--deselect={i}" for i in (CRASH_ID, SEGFAULT_ID, HANG_ID)))
    expected = summary_counts(plain.stdout)
    expected["failed"] += 3
    del expected["deselected"]
    assert summary_counts(run.stdout) == expected, run.stdout
    assert re.search(r"^=+ 5 failed, 6 passed, 1 skipped, 1 error in [\d.]+s =+$", run.stdout, re.M), run.stdout
    # Failures are printed with their text; a test that took its process down says how.
    assert "arithmetic is broken" in run.stdout
    assert "ValueError: bad value" in run.stdout
    assert f"FAILED {CRASH_ID} - crashed: pytest exited with code 3" in run.stdout
    assert "crashed: pytest killed by SIGSEGV while this test was running" in run.stdout
    assert "Fatal Python error: Segmentation fault" in run.stdout  # its output, as pytest's faulthandler wrote it
    assert "crashed: pytest timed out after 8.0s while this test was running" in run.stdout

    # pytest's own JUnit XML, written by the run's session, holds every collected test exactly once.
    collected = _collected(tmp_path, "suite")
    cases = ET.parse(junit).getroot().iter("testcase")
    ids = Counter(c.get("classname", "").replace(".", "/") + ".py::" + c.get("name", "") for c in cases)
    assert sorted(ids) == sorted(collected) and set(ids.values()) == {1}
    suite = ET.parse(junit).getroot().find("testsuite")
    assert suite is not None
    assert (suite.get("tests"), suite.get("failures"), suite.get("errors"), suite.get("skipped")) == (
        "13",
        "5",
        "1",
        "1",
    )
    crash = ET.parse(junit).getroot().find(".//testcase[@name='test_crash']/failure")
    assert crash is not None and "crash" in crash.get("message", "")


def test_passing_suite_exits_zero_and_second_run_uses_recorded_durations(tmp_path: Path) -> None:
    write_suite(tmp_path, {"test_ok.py": PASSING})
    data_dir = str(tmp_path / ".dtf")

    first = dtf_run(tmp_path, "-n", "2", "--data-dir", data_dir, "--", "suite")
    second = dtf_run(tmp_path, "-n", "2", "--data-dir", data_dir, "--", "suite", "-p", "no:randomly")

    assert first.returncode == 0, first.stdout + first.stderr
    assert re.search(r"^=+ 8 passed in [\d.]+s =+$", first.stdout, re.M), first.stdout
    assert "dtf: 8 tests, 0 with recorded durations, 8 estimated" in first.stdout
    assert second.returncode == 0, second.stdout + second.stderr
    assert "dtf: 8 tests, 8 with recorded durations, 0 estimated" in second.stdout
    # With no idle time (DTF_IDLE_TIMEOUT=0 here), each run stopped the cluster it started,
    # even one whose coordinator was up before the run's session looked for it.
    info = json.loads((tmp_path / ".dtf" / "connection.json").read_text())
    pids = [c["pid"] for c in info["coordinators"]] + [w["pid"] for w in info["workers"]]
    assert not [pid for pid in pids if psutil.pid_exists(pid) and psutil.Process(pid).status() != "zombie"]


def test_head_start_runs_the_first_tests_while_its_cluster_starts_and_leaves_nothing_running(tmp_path: Path) -> None:
    write_suite(tmp_path, {"test_ok.py": PASSING})
    data_dir = tmp_path / ".dtf"

    # Without -n the session itself starts the cluster, once pytest has started: the
    # coordinator's start then outlasts collecting one small file on any machine, where a
    # cluster started before pytest (dtf run -n) can be up first on a slow one.
    run = dtf_run(tmp_path, "--data-dir", str(data_dir), "--", "-v", "suite", env={"DTF_HEAD_START": "1"})
    plain = subprocess.run(
        [sys.executable, "-m", "pytest", "-v", "-p", "no:cacheprovider", "suite"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
    )

    assert run.returncode == 0, run.stdout + run.stderr
    assert verbose_outcomes(run.stdout) == verbose_outcomes(plain.stdout), run.stdout
    # All of them ran in the session's child, or, where the cluster came up sooner (a slow
    # machine's first imports), the first ones did and the cluster ran the rest.
    here = re.search(r"dtf: all 8 tests ran in this session|dtf: (\d+) tests, .*\((\d+) more ran here", run.stdout)
    assert here is not None, run.stdout
    assert here.group(1) is None or int(here.group(1)) + int(here.group(2)) == 8, run.stdout
    # The run stopped the cluster it started (DTF_IDLE_TIMEOUT=0 here), and removed the
    # data directory it made where nothing ran on the cluster.
    assert data_dir.exists() == (here.group(1) is not None)
    assert not [p for p in psutil.process_iter(["cmdline"]) if str(data_dir) in " ".join(p.info["cmdline"] or ())]


def test_a_cluster_that_cannot_start_is_stopped_and_the_run_says_why(tmp_path: Path) -> None:
    write_suite(tmp_path, {"test_ok.py": PASSING})
    data_dir = tmp_path / ".dtf"
    (data_dir / "results.duckdb").mkdir(parents=True)  # a directory where the store's file goes

    run = dtf_run(tmp_path, "-n", "2", "--data-dir", str(data_dir), "--", "suite")

    assert run.returncode == 2, run.stdout + run.stderr
    assert "exited during start-up" in run.stdout, run.stdout
    # Its workers, which never reached a coordinator, are not left waiting for one.
    assert not [p for p in psutil.process_iter(["cmdline"]) if str(data_dir) in " ".join(p.info["cmdline"] or ())]


def test_empty_selection_exits_5(tmp_path: Path) -> None:
    write_suite(tmp_path, {"test_ok.py": PASSING})

    run = dtf_run(tmp_path, "-n", "2", "--data-dir", str(tmp_path / ".dtf"), "--", "suite", "-k", "nomatch")

    assert run.returncode == 5, run.stdout + run.stderr
    assert re.search(r"^=+ 8 deselected in [\d.]+s =+$", run.stdout, re.M), run.stdout
    assert not (tmp_path / ".dtf").exists()  # the cluster started meanwhile is gone, with its directory


def test_collection_error_exits_2_with_pytests_message(tmp_path: Path) -> None:
    write_suite(tmp_path, {"test_ok.py": PASSING, "test_broken.py": "def test_x(:\n    pass\n"})

    run = dtf_run(tmp_path, "-n", "2", "--data-dir", str(tmp_path / ".dtf"), "--", "suite")

    assert run.returncode == 2, run.stdout + run.stderr
    assert "SyntaxError" in run.stdout
    assert "test_broken.py" in run.stdout


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["tests", "-k", "slow", "-x", "--tb=short"], ["tests", "-k", "slow", "-x", "--tb=short"]),
        (["--lf", "-p", "no:randomly", "tests/a.py::test_x", "--sw"], ["-p", "no:randomly", "tests/a.py::test_x"]),
        (["-n", "4", "--dist", "loadscope", "-v"], ["-v"]),
        (["-nauto", "--dist=load", "--pyargs", "pkg"], ["--pyargs", "pkg"]),
        (["--junitxml", "out.xml", "--junit-xml=o.xml", "--pdb", "-q"], ["-q"]),
        (["--dtf=2", "--dtf-data-dir", "/d", "--dtf-keep", "x"], ["x"]),
        (["-v", "--", "-weird-path", "--lf"], ["-v", "--", "-weird-path", "--lf"]),
    ],
)
def test_batches_get_the_runs_arguments_but_not_what_belongs_to_its_session(
    args: list[str], expected: list[str]
) -> None:
    assert batch_pytest_args(args) == expected


def test_ctrl_c_stops_the_cluster_and_exits_2(tmp_path: Path) -> None:
    write_suite(tmp_path, {"test_hang.py": "import time\n\n\ndef test_hang():\n    time.sleep(600)\n"})
    data_dir = tmp_path / ".dtf"
    argv = [sys.executable, "-m", "dtf.cli.main", "run", "-n", "1", "--data-dir", str(data_dir), "--", "suite"]
    proc = subprocess.Popen(
        argv,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),  # a background child ignores it otherwise
    )
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            if "dtf: 1 tests" in line:  # the cluster is up and the batch submitted
                break
        time.sleep(1.0)
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=30)
    finally:
        proc.kill()

    assert proc.returncode == 2, out
    assert "KeyboardInterrupt" in out
    pids = json.loads((data_dir / "connection.json").read_text())
    started = [c["pid"] for c in pids["coordinators"]] + [w["pid"] for w in pids["workers"]]
    assert not [pid for pid in started if psutil.pid_exists(pid) and psutil.Process(pid).status() != "zombie"]


def test_a_cold_run_warms_one_pytest_server_for_all_its_workers(tmp_path: Path) -> None:
    """The workers share one warm pytest server: what the conftest imports is imported by
    the run's own session and by that server, not once per worker as well."""
    (tmp_path / "counted_helpers.py").write_text(
        "from pathlib import Path\n\n"
        "with (Path(__file__).parent / 'imports.log').open('a') as log:\n"
        "    log.write('imported\\n')\n"
    )
    (tmp_path / "conftest.py").write_text("import counted_helpers\n")
    for name in ("test_a.py", "test_b.py"):
        (tmp_path / name).write_text("".join(f"def test_{i}():\n    pass\n\n\n" for i in range(4)))
    data_dir = tmp_path / ".dtf"

    run = dtf_run(tmp_path, "-n", "2", "--data-dir", str(data_dir), "--", "-q")

    assert run.returncode == 0, run.stdout + run.stderr
    assert summary_counts(run.stdout) == {"passed": 8}
    assert (tmp_path / "imports.log").read_text() == "imported\nimported\n"
    clones = [
        line for w in ("worker-1", "worker-2") for line in (data_dir / "logs" / f"{w}.log").read_text().splitlines()
    ]
    assert sum("a clone of the warm one another process shares" in line for line in clones) == 1
