"""`dtf run` reports what plain pytest reports, test by test, on suites that use pytest's
features: each small suite runs under both, and every test id's outcome (pytest's `-v`
words), the summary line and the exit code must be the same.

One cluster (`dtf up`) serves every suite of this module; each suite runs in a directory
of its own."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.run_suites import dtf_run, dtf_up, summary_counts, verbose_outcomes

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def cluster_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """`dtf up` with two workers, running for the whole module; its data directory."""
    with dtf_up(tmp_path_factory.mktemp("compat-cluster")) as data_dir:
        yield data_dir


def _pytest(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "pytest", "-v", "-p", "no:cacheprovider", *args]
    return subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=120, check=False)


def _write(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))


def assert_same(plain: subprocess.CompletedProcess[str], run: subprocess.CompletedProcess[str]) -> None:
    both = f"--- pytest ---\n{plain.stdout}{plain.stderr}\n--- dtf run ---\n{run.stdout}{run.stderr}"
    assert run.returncode == plain.returncode, both
    assert verbose_outcomes(run.stdout) == verbose_outcomes(plain.stdout), both
    assert summary_counts(run.stdout) == summary_counts(plain.stdout), both


SUITES: dict[str, tuple[dict[str, str], list[str]]] = {
    # Test methods inherited from a base class in another module, and a test class imported
    # into a second module: their reports name the file where the method is defined.
    "inherited_classes": (
        {
            "test_graph.py": """
                class BaseGraphTester:
                    size = 0

                    def test_nodes(self):
                        assert self.size >= 0

                    def test_fails_for_big(self):
                        assert self.size < 3


                class TestGraph(BaseGraphTester):
                    size = 1
            """,
            "test_special.py": """
                from test_graph import BaseGraphTester, TestGraph


                class TestSpecialGraph(BaseGraphTester):
                    size = 5

                    def test_own(self):
                        pass
            """,
        },
        ["."],
    ),
    "unittest": (
        {
            "test_cases.py": """
                import unittest


                class Cases(unittest.TestCase):
                    @classmethod
                    def setUpClass(cls):
                        cls.shared = [1, 2, 3]

                    def test_ok(self):
                        self.assertEqual(sum(self.shared), 6)

                    def test_fails(self):
                        self.assertEqual(len(self.shared), 4)

                    @unittest.skip("not here")
                    def test_skipped(self):
                        pass

                    @unittest.expectedFailure
                    def test_expected(self):
                        self.assertTrue(False)

                    @unittest.expectedFailure
                    def test_unexpected_success(self):
                        pass

                    def test_sub(self):
                        for i in range(3):
                            with self.subTest(i=i):
                                self.assertNotEqual(i, 1)
            """,
        },
        ["."],
    ),
    "doctests": (
        {
            "mod.py": '''
                def double(x):
                    """
                    >>> double(2)
                    4
                    """
                    return 2 * x


                def wrong(x):
                    """
                    >>> wrong(1)
                    3
                    """
                    return x
            ''',
            "guide.txt": """
                >>> 1 + 1
                2
            """,
            "test_plain.py": "def test_plain():\n    pass\n",
        },
        ["--doctest-modules", "--doctest-glob=*.txt", "."],
    ),
    "outcomes": (
        {
            "test_outcomes.py": """
                import warnings

                import pytest


                @pytest.mark.xfail(reason="known")
                def test_xfail():
                    assert 0


                @pytest.mark.xfail(reason="fixed")
                def test_xpass():
                    pass


                @pytest.mark.xfail(strict=True, reason="must fail")
                def test_xpass_strict():
                    pass


                def test_xfail_inline():
                    pytest.xfail("decided at run time")


                @pytest.mark.skipif(True, reason="never")
                def test_skipif():
                    pass


                @pytest.fixture
                def broken():
                    raise RuntimeError("setup broke")


                @pytest.fixture
                def bad_teardown():
                    yield
                    raise RuntimeError("teardown broke")


                def test_setup_error(broken):
                    pass


                def test_teardown_error(bad_teardown):
                    pass


                def test_warns():
                    warnings.warn("careful", UserWarning)


                def test_prints():
                    print("captured")
                    assert False
            """,
            "test_module_skip.py": """
                import pytest

                pytest.skip("the whole module", allow_module_level=True)


                def test_never():
                    pass
            """,
            "test_importorskip.py": """
                import pytest

                pytest.importorskip("no_such_module_anywhere")


                def test_never():
                    pass
            """,
            "test_module_fixture.py": """
                import pytest


                @pytest.fixture(scope="module")
                def expensive():
                    raise RuntimeError("module fixture broke")


                def test_one(expensive):
                    pass


                def test_two(expensive):
                    pass
            """,
        },
        ["-rA", "."],
    ),
    "ids": (
        {
            "test_ids.py": """
                import pytest


                @pytest.mark.parametrize("v", ["a::b", "x y", "[", "ü", "a", "a", "", "1.5"])
                def test_odd(v):
                    assert v != "["


                @pytest.mark.parametrize("v", [pytest.param(1, id="with/slash"), pytest.param(2, id="tab\\tin")])
                def test_named(v):
                    pass


                class TestNested:
                    class TestInner:
                        @pytest.mark.parametrize("n", range(3))
                        def test_deep(self, n):
                            pass
            """,
        },
        ["."],
    ),
    "conftest_reorders_and_deselects": (
        {
            "conftest.py": """
                def pytest_collection_modifyitems(config, items):
                    dropped = [i for i in items if "drop" in i.name]
                    items[:] = [i for i in reversed(items) if "drop" not in i.name]
                    config.hook.pytest_deselected(items=dropped)
            """,
            "test_order.py": "".join(f"def test_{n}():\n    pass\n\n\n" for n in ("a", "b", "drop_c", "d")),
        },
        ["."],
    ),
    "importlib_same_basenames": (
        {
            "one/test_same.py": "def test_in_one():\n    pass\n",
            "two/test_same.py": "def test_in_two():\n    assert False\n",
        },
        ["--import-mode=importlib", "."],
    ),
    "subtests": (
        {
            "test_sub.py": """
                def test_loop(subtests):
                    for i in range(4):
                        with subtests.test(i=i):
                            assert i != 2
            """,
        },
        ["."],
    ),
    "keyword_and_marker_selection": (
        {
            "pytest.ini": "[pytest]\nmarkers =\n    slow: slow tests\n",
            "test_sel.py": """
                import pytest


                @pytest.mark.slow
                def test_slow_one():
                    pass


                def test_fast_one():
                    pass


                def test_fast_two():
                    pass
            """,
        },
        ["-k", "fast or slow", "-m", "not slow", "."],
    ),
}


@pytest.mark.parametrize("name", list(SUITES))
def test_dtf_run_reports_each_test_as_pytest_does(name: str, tmp_path: Path, cluster_dir: Path) -> None:
    files, args = SUITES[name]
    _write(tmp_path, files)

    plain = _pytest(tmp_path, *args)
    run = dtf_run(tmp_path, "--data-dir", str(cluster_dir), "--", "-v", "-p", "no:cacheprovider", *args)

    assert_same(plain, run)


def test_a_collection_error_exits_2_as_pytest_does(tmp_path: Path, cluster_dir: Path) -> None:
    _write(tmp_path, {"test_ok.py": "def test_ok():\n    pass\n", "test_broken.py": "def test_x(:\n    pass\n"})

    plain = _pytest(tmp_path, ".")
    run = dtf_run(tmp_path, "--data-dir", str(cluster_dir), "--", "-v", "-p", "no:cacheprovider", ".")

    assert plain.returncode == run.returncode == 2, run.stdout + run.stderr
    assert "SyntaxError" in run.stdout and "ERROR test_broken.py" in run.stdout
    assert "Interrupted: 1 error during collection" in run.stdout


def test_a_run_from_below_the_rootdir_with_testpaths_and_addopts(tmp_path: Path, cluster_dir: Path) -> None:
    _write(
        tmp_path,
        {
            "pytest.ini": "[pytest]\ntestpaths = tests\naddopts = -ra\n",
            "tests/test_top.py": "def test_top():\n    pass\n",
            "tests/sub/test_low.py": "def test_low():\n    assert False\n",
        },
    )

    at_root = (
        _pytest(tmp_path),
        dtf_run(tmp_path, "--data-dir", str(cluster_dir), "--", "-v", "-p", "no:cacheprovider"),
    )
    below = tmp_path / "tests" / "sub"
    from_below = (
        _pytest(below, "."),
        dtf_run(below, "--data-dir", str(cluster_dir), "--", "-v", "-p", "no:cacheprovider", "."),
    )

    for plain, run in (at_root, from_below):
        assert_same(plain, run)
    assert "test_low.py::test_low FAILED" in from_below[1].stdout


def test_pyargs_from_another_directory(tmp_path: Path) -> None:
    """A package found on sys.path, its tests run by name from a directory outside it."""
    _write(
        tmp_path / "lib",
        {
            "mypkg/__init__.py": "",
            "mypkg/core.py": "def add(a, b):\n    return a + b\n",
            "mypkg/tests/__init__.py": "",
            "mypkg/tests/test_core.py": """
                from mypkg.core import add


                def test_add():
                    assert add(1, 2) == 3


                def test_wrong():
                    assert add(1, 1) == 3
            """,
        },
    )
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {**os.environ, "PYTHONPATH": str(tmp_path / "lib")}
    argv = ["-v", "-p", "no:cacheprovider", "--pyargs", "mypkg"]

    plain = subprocess.run(
        [sys.executable, "-m", "pytest", *argv], cwd=elsewhere, env=env, capture_output=True, text=True, check=False
    )
    run = subprocess.run(
        [sys.executable, "-m", "dtf.cli.main", "run", "-n", "2", "--data-dir", str(tmp_path / ".dtf"), "--", *argv],
        cwd=elsewhere,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )

    assert_same(plain, run)
    assert summary_counts(run.stdout) == {"failed": 1, "passed": 1}


XDIST_SUITE = {
    "conftest.py": """
        import os
        from pathlib import Path


        def pytest_configure(config):
            # The per-worker resource suites build from worker_id: a file per worker here.
            config.worker_log = Path(__file__).parent / "workers"
            config.worker_log.mkdir(exist_ok=True)
    """,
    "test_db_a.py": """
        import os

        import pytest


        @pytest.mark.xdist_group("db")
        def test_writes(worker_id, testrun_uid, request):
            (request.config.worker_log / f"db-{os.getpid()}").write_text(worker_id + " " + testrun_uid)


        @pytest.mark.parametrize("n", range(6))
        def test_free(n, worker_id):
            assert worker_id.startswith("gw") and os.environ["PYTEST_XDIST_WORKER"] == worker_id
    """,
    "test_db_b.py": """
        import os

        import pytest


        @pytest.mark.xdist_group("db")
        def test_reads(request):
            (request.config.worker_log / f"db-{os.getpid()}").write_text("read")


        @pytest.mark.parametrize("n", range(6))
        def test_free_too(n):
            assert os.environ["PYTEST_XDIST_WORKER_COUNT"] == "2"
    """,
}


def test_xdist_groups_worker_ids_and_dist_mode_as_pytest_xdist_runs_them(tmp_path: Path, cluster_dir: Path) -> None:
    _write(tmp_path, XDIST_SUITE)
    args = ["-p", "no:cacheprovider", "-n", "2", "--dist", "loadgroup", "."]

    xdist = subprocess.run(
        [sys.executable, "-m", "pytest", "-v", *args], cwd=tmp_path, capture_output=True, text=True, check=False
    )
    for marker in (tmp_path / "workers").iterdir():
        marker.unlink()
    run = dtf_run(tmp_path, "--data-dir", str(cluster_dir), "--", "-v", *args)

    assert run.returncode == xdist.returncode == 0, run.stdout + run.stderr
    assert summary_counts(run.stdout) == summary_counts(xdist.stdout) == {"passed": 14}
    # The group's two tests ran in one process, as under xdist; -n 2 was the run's worker count.
    assert len(list((tmp_path / "workers").iterdir())) == 1, run.stdout
    assert "2 workers (running cluster)" in run.stdout
    assert "[gw" not in run.stdout  # no xdist worker of its own was started


def test_x_stops_every_worker_at_the_first_failure(tmp_path: Path, cluster_dir: Path) -> None:
    _write(
        tmp_path,
        {
            "test_early.py": "def test_fails():\n    assert False\n",
            "test_slow_a.py": "".join(f"def test_a{i}():\n    __import__('time').sleep(1)\n\n\n" for i in range(15)),
            "test_slow_b.py": "".join(f"def test_b{i}():\n    __import__('time').sleep(1)\n\n\n" for i in range(15)),
        },
    )

    run = dtf_run(tmp_path, "--data-dir", str(cluster_dir), "--", "-p", "no:cacheprovider", "-x", ".")

    assert run.returncode == 1, run.stdout + run.stderr
    assert "stopping after 1 failures" in run.stdout
    counts = summary_counts(run.stdout)
    assert counts["failed"] == 1 and counts.get("passed", 0) < 20, run.stdout  # of 30 one-second tests


def test_lf_after_a_run_reruns_what_failed_in_it(tmp_path: Path, cluster_dir: Path) -> None:
    _write(tmp_path, {"test_some.py": "def test_ok():\n    pass\n\n\ndef test_bad():\n    assert False\n"})

    run = dtf_run(tmp_path, "--data-dir", str(cluster_dir), "--", ".")
    last_failed = subprocess.run(
        [sys.executable, "-m", "pytest", "-v", "--lf", "."], cwd=tmp_path, capture_output=True, text=True, check=False
    )
    again = dtf_run(tmp_path, "--data-dir", str(cluster_dir), "--", "-v", "--lf", ".")

    assert run.returncode == 1
    assert last_failed.returncode == 1 and summary_counts(last_failed.stdout) == {"failed": 1}
    assert "run-last-failure: rerun previous 1 failure" in last_failed.stdout
    assert summary_counts(again.stdout) == {"failed": 1}, again.stdout


def test_s_shows_what_tests_print_while_they_run(tmp_path: Path, cluster_dir: Path) -> None:
    """pytest's `-s` across workers: a test that waits until its first line has been seen in
    the run's own output passes only if that line is shown while the test still runs."""
    seen = tmp_path / "seen"
    _write(
        tmp_path,
        {
            "test_live.py": f"""
                import pathlib
                import sys
                import time


                def test_waits_until_its_output_is_seen():
                    print("LIVE-BEFORE the wait", flush=True)
                    print("LIVE-STDERR a warning", file=sys.stderr, flush=True)
                    seen = pathlib.Path({str(seen)!r})
                    deadline = time.monotonic() + 60
                    while not seen.exists() and time.monotonic() < deadline:
                        time.sleep(0.05)
                    assert seen.exists(), "the first line was never shown"
                    print("LIVE-AFTER the wait")
                """,
            "test_many.py": """
                import pytest


                @pytest.mark.parametrize("n", range(6))
                def test_prints(n):
                    print(f"MANY-{n}")
                """,
        },
    )
    argv = [sys.executable, "-m", "dtf.cli.main", "run", "--data-dir", str(cluster_dir), "--"]
    argv += ["-s", "-p", "no:cacheprovider", "."]
    with (tmp_path / "stderr.log").open("w+") as errors:
        proc = subprocess.Popen(argv, cwd=tmp_path, stdout=subprocess.PIPE, stderr=errors, text=True)
        assert proc.stdout is not None
        lines = []
        try:
            for line in proc.stdout:
                lines.append(line)
                if "LIVE-BEFORE" in line:
                    seen.touch()
            proc.wait(120)
        finally:
            proc.kill()
        errors.seek(0)
        stderr = errors.read()
    stdout = "".join(lines)

    assert proc.returncode == 0, stdout + stderr
    assert summary_counts(stdout) == {"passed": 7}, stdout
    assert "LIVE-AFTER the wait" in stdout and "LIVE-STDERR a warning" in stderr, stdout + stderr
    assert all(f"MANY-{n}" in stdout for n in range(6)), stdout
