"""Small pytest suites that `dtf run` end-to-end tests write into a temporary directory."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

from dtf.run.cluster import live_cluster
from tests.e2e.e2e_harness import wait_until

PASSING = """
import pytest


@pytest.mark.parametrize("n", range(6))
def test_square(n):
    assert n * n >= 0


class TestText:
    def test_upper(self):
        assert "a".upper() == "A"

    def test_strip(self):
        assert " a ".strip() == "a"
"""

MIXED = """
import ctypes
import os
import time

import pytest


def test_pass():
    pass


def test_slow_pass():
    time.sleep(0.2)


def test_fail():
    assert 1 + 1 == 3, "arithmetic is broken"


@pytest.mark.skip(reason="not on this machine")
def test_skip():
    pass


@pytest.fixture
def broken_fixture():
    raise RuntimeError("fixture exploded")


def test_setup_error(broken_fixture):
    pass


def test_crash():
    os._exit(3)


def test_segfault():
    ctypes.string_at(0)


def test_hang():
    time.sleep(600)


@pytest.mark.parametrize("x", [1, 2, 3])
def test_param(x):
    assert x > 0
"""

MIXED_MORE = """
def test_other_pass():
    pass


def test_other_fail():
    raise ValueError("bad value")
"""

CRASH_ID = "suite/test_mixed.py::test_crash"
SEGFAULT_ID = "suite/test_mixed.py::test_segfault"
HANG_ID = "suite/test_mixed.py::test_hang"


def write_suite(root: Path, files: dict[str, str]) -> Path:
    suite = root / "suite"
    suite.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (suite / name).write_text(text)
    return suite


def dtf_run(
    cwd: Path, *args: str, timeout: float = 120, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "dtf.cli.main", "run", *args]
    environ = {**os.environ, **(env or {})}
    return subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False, env=environ)


def plain_pytest(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *args]
    return subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=120, check=False)


def summary_counts(output: str) -> dict[str, int]:
    """The counts in pytest's last summary line: {"failed": 3, "passed": 120, "warning": 2, ...}
    (plurals made singular: "2 errors" counts as "error")."""
    line = [x for x in output.splitlines() if re.search(r" in [\d.]+s", x)][-1]
    counts = {
        re.sub(r"(error|warning)s$", r"\1", word): int(n)
        for n, word in re.findall(r"(\d+) ((?:subtests )?[a-z]+)", line.split(" in ")[0])
    }
    return counts


def verbose_outcomes(output: str) -> list[tuple[str, str]]:
    """Every (test id, word) line of pytest's `-v` output, sorted: `a.py::t PASSED [ 50%]`."""
    words = "PASSED|FAILED|SKIPPED|XFAIL|XPASS|ERROR|RERUN|SUBPASSED|SUBFAILED|SUBSKIPPED"
    found = re.findall(rf"^(\S.*?::.*?) ({words})(?: |$)", output, re.M)
    return sorted(found)


@contextlib.contextmanager
def dtf_up(root: Path) -> Iterator[Path]:
    """`dtf up` with two workers in root/up, running until the block ends; its data directory."""
    data_dir = root / "up"
    argv = [sys.executable, "-m", "dtf.cli.main", "up", "--data-dir", str(data_dir), "--port", "0", "--grpc-port", "0"]
    with open(root / "up.log", "wb") as log:
        proc = subprocess.Popen(argv, cwd=root, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_until(lambda: live_cluster(data_dir), 60, lambda: (root / "up.log").read_text())
        yield data_dir
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
