"""The pytest executor on real suites, and the reading of its plugin's lines."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import signal
import textwrap
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from dtf_pytest.cases import outcome_of, read_lines
from dtf_worker.executors.base import ExecutionResult
from dtf_worker.executors.process import ProcessRun
from dtf_worker.executors.pytest_batch import PytestExecutor, summarize_failure
from dtf_worker.executors.pytest_pool import BatchSpec, PytestServer, PytestServerPool, ServerKey
from dtf_worker.executors.pytest_share import FORK_VARIABLE
from tests.unit.test_worker_executors import context, is_gone, leased, run

SUITE = textwrap.dedent(
    """
    import pytest

    def test_passes():
        pass

    def test_fails():
        assert 1 == 2, "one is not two"

    @pytest.mark.skip(reason="not today")
    def test_skipped():
        pass

    class TestGroup:
        @pytest.mark.parametrize("x", [1, 2])
        def test_param(self, x):
            assert x
    """
)


def test_pytest_batch_reports_one_result_per_test_with_pytests_own_reports(tmp_path: Path) -> None:
    suite = tmp_path / "suite"
    (suite / "tests").mkdir(parents=True)
    (suite / "tests" / "test_demo.py").write_text(SUITE)
    task = leased("pytest", {"node_ids": ["tests/test_demo.py"], "cwd": str(suite)})
    result = run(task, context(tmp_path))

    assert not result.ok and result.error == "1 failed"
    keys = ("exit_code", "passed", "failed", "skipped", "errors", "collected")
    assert {k: result.results[k] for k in keys} == {
        "exit_code": 1,
        "passed": 3,
        "failed": 1,
        "skipped": 1,
        "errors": 0,
        "collected": 5,
    }
    records = {record.test_id: record for record in result.records}
    assert {k: v.status for k, v in records.items()} == {
        "tests/test_demo.py::test_passes": "success",
        "tests/test_demo.py::test_fails": "failure",
        "tests/test_demo.py::test_skipped": "partial",
        "tests/test_demo.py::TestGroup::test_param[1]": "success",
        "tests/test_demo.py::TestGroup::test_param[2]": "success",
    }
    failed = json.loads(records["tests/test_demo.py::test_fails"].raw_data_json)
    assert failed["outcome"] == "failed" and "one is not two" in failed["message"]
    # pytest's own reports, one per phase, ready for the collecting session to replay.
    assert [(r["when"], r["outcome"]) for r in failed["reports"]] == [
        ("setup", "passed"),
        ("call", "failed"),
        ("teardown", "passed"),
    ]
    assert failed["reports"][1]["longrepr"]["reprcrash"]["message"].startswith("AssertionError: one is not two")
    skipped = json.loads(records["tests/test_demo.py::test_skipped"].raw_data_json)
    assert skipped["message"] == "Skipped: not today"


OUTCOMES_SUITE = """
    import warnings

    import pytest

    @pytest.mark.xfail(reason="known bug")
    def test_xfail():
        assert 0

    @pytest.mark.xfail(reason="fixed since")
    def test_xpass():
        pass

    @pytest.mark.xfail(strict=True, reason="must fail")
    def test_xpass_strict():
        pass

    @pytest.fixture
    def broken_teardown():
        yield
        raise RuntimeError("teardown broke")

    def test_teardown_error(broken_teardown):
        pass

    def test_warns():
        warnings.warn("mind this", UserWarning)
"""


def test_each_test_gets_pytests_word_for_its_outcome_and_its_warnings(tmp_path: Path) -> None:
    suite = _suite(tmp_path, {"test_outcomes.py": OUTCOMES_SUITE})
    task = leased("pytest", {"args": ["test_outcomes.py"], "cwd": str(suite)})
    result = run(task, context(tmp_path))

    raw = {r.test_id.split("::")[1]: json.loads(r.raw_data_json) for r in result.records}
    assert {name: data["outcome"] for name, data in raw.items()} == {
        "test_xfail": "xfailed",
        "test_xpass": "xpassed",
        "test_xpass_strict": "failed",
        "test_teardown_error": "error",
        "test_warns": "passed",
    }
    assert raw["test_xfail"]["message"] == "known bug"
    [warning] = raw["test_warns"]["warnings"]
    assert (warning["message"], warning["category"]) == ("mind this", "builtins:UserWarning")


def test_select_runs_exactly_the_named_tests_in_that_order_and_names_those_not_collected(tmp_path: Path) -> None:
    suite = _suite(
        tmp_path,
        {
            "test_a.py": "def test_one(): pass\ndef test_two(): pass\ndef test_three(): pass\n",
            "test_b.py": "raise ImportError('never imported: none of its tests is selected')\n",
        },
    )
    select = ["test_a.py::test_three", "test_a.py::test_one", "test_a.py::test_gone"]
    task = leased("pytest", {"args": ["."], "select": select, "cwd": str(suite)})
    result = run(task, context(tmp_path))

    assert [r.test_id for r in result.records] == ["test_a.py::test_three", "test_a.py::test_one"]
    assert result.results["collected"] == 2 and result.results["missing"] == ["test_a.py::test_gone"]
    assert "collect_errors" not in result.results  # test_b.py was never imported


def test_a_batch_playing_an_xdist_worker_gets_its_id_and_the_runs(tmp_path: Path) -> None:
    suite = _suite(
        tmp_path,
        {
            "test_xdist.py": """
                import os

                def test_ids(worker_id, testrun_uid, request):
                    assert worker_id == "gw3" == os.environ["PYTEST_XDIST_WORKER"]
                    assert testrun_uid == "run-1" == os.environ["PYTEST_XDIST_TESTRUNUID"]
                    assert os.environ["PYTEST_XDIST_WORKER_COUNT"] == "4"
                    assert request.config.workerinput["workerid"] == "gw3"
            """
        },
    )
    workerinput = {"workercount": 4, "testrunuid": "run-1"}
    task = leased("pytest", {"args": ["test_xdist.py"], "workerinput": workerinput, "cwd": str(suite)})
    ctx = context(tmp_path)
    result = run(task, dataclasses.replace(ctx, slot_index=3))

    assert result.ok, result.results["stdout_tail"]


def test_report_lines_are_read_up_to_a_torn_last_line() -> None:
    lines = [
        '{"collected": 2, "missing": []}',
        '{"id": "t.py::a", "reports": [{"when": "call", "outcome": "failed"}]}',
        '{"id": "t.py::b", "reports": [{"when": "setup", "outcome": "skipped", "wasxfail": "x"}]}',
        '{"yielded": true}',
        '{"id": "t.py::c", "repo',
    ]
    batch = read_lines(lines)
    assert [(c.node_id, c.outcome) for c in batch.cases] == [("t.py::a", "failed"), ("t.py::b", "xfailed")]
    assert batch.collected == 2 and batch.yielded


@pytest.mark.parametrize(
    ("phases", "word"),
    [
        ([("setup", "passed"), ("call", "passed"), ("teardown", "passed")], "passed"),
        ([("setup", "failed")], "error"),
        ([("setup", "passed"), ("call", "failed"), ("teardown", "failed")], "failed"),
        ([("setup", "passed"), ("call", "passed"), ("teardown", "failed")], "error"),
        ([("setup", "skipped")], "skipped"),
    ],
)
def test_outcome_words_follow_pytest(phases: list[tuple[str, str]], word: str) -> None:
    assert outcome_of([{"when": w, "outcome": o} for w, o in phases]) == word


def test_a_running_batch_sends_each_tests_result_before_it_ends_and_not_again(tmp_path: Path) -> None:
    suite = _suite(
        tmp_path,
        {"test_slow.py": "".join(f"def test_{i}():\n    __import__('time').sleep(0.2)\n\n\n" for i in range(6))},
    )
    sent: list[list[str]] = []
    ctx = dataclasses.replace(
        context(tmp_path),
        report_progress=lambda records, stdout="", stderr="": sent.append([r.test_id for r in records]),
    )
    result = run(leased("pytest", {"args": ["test_slow.py"], "cwd": str(suite)}), ctx)

    streamed = [t for ids in sent for t in ids]
    final = [r.test_id for r in result.records]
    # Sent while the batch ran (the last test's line waits for the session's end).
    assert result.ok and len(streamed) >= 3, sent
    assert streamed + final == [f"test_slow.py::test_{i}" for i in range(6)]  # each once, in order


def test_a_batch_with_live_output_sends_what_its_tests_print_and_nothing_of_its_own_pytest(tmp_path: Path) -> None:
    suite = _suite(
        tmp_path,
        {
            "test_loud.py": "import sys, time\n\n\n"
            + "".join(
                f"def test_{i}():\n    print('out-{i}')\n    print('err-{i}', file=sys.stderr)\n"
                "    time.sleep(0.2)\n\n\n"
                for i in range(4)
            )
        },
    )
    sent: list[tuple[list[str], str, str]] = []
    ctx = dataclasses.replace(
        context(tmp_path),
        report_progress=lambda records, stdout="", stderr="": sent.append(
            ([r.test_id for r in records], stdout, stderr)
        ),
    )
    result = run(leased("pytest", {"args": ["-s", "test_loud.py"], "cwd": str(suite), "live_output": True}), ctx)

    stdout, stderr = "".join(s[1] for s in sent), "".join(s[2] for s in sent)
    assert result.ok, result.error
    assert stdout.split() == [f"out-{i}" for i in range(4)], stdout  # no session header, no progress
    assert stderr.split() == [f"err-{i}" for i in range(4)], stderr
    first_output = next(i for i, s in enumerate(sent) if s[1])
    assert first_output < len(sent) - 1, sent  # sent while the batch ran, not only at its end


def test_pytest_killed_by_its_time_limit_still_reports_finished_tests(tmp_path: Path) -> None:
    (tmp_path / "test_slow.py").write_text(
        textwrap.dedent(
            """
            import subprocess
            import time
            from pathlib import Path

            def test_quick():
                pass

            def test_stuck():
                child = subprocess.Popen(["sleep", "600"])
                (Path(__file__).parent / "grandchild.pid").write_text(str(child.pid))
                time.sleep(60)
            """
        )
    )
    task = leased("pytest", {"node_ids": ["test_slow.py"], "cwd": str(tmp_path), "timeout": 6})
    result = run(task, context(tmp_path))
    assert not result.ok
    assert result.error == "pytest timed out after 6.0s; 1 tests completed"
    assert [(r.test_id, r.status) for r in result.records] == [("test_slow.py::test_quick", "success")]
    # The whole process group went: what the test started as well.
    assert is_gone(int((tmp_path / "grandchild.pid").read_text()))


def test_failure_summaries() -> None:
    def ran(exit_code: int, **fields: Any) -> ProcessRun:
        values: dict[str, Any] = {
            "exit_code": exit_code,
            "timed_out": False,
            "cancelled": False,
            "timeout_s": 5.0,
            "wall_time_s": 1.0,
            "cpu_time_s": 1.0,
            "peak_memory_mb": 1.0,
            "stdout_tail": "",
            "stderr_tail": "",
        }
        return ProcessRun(**{**values, **fields})

    assert summarize_failure(ran(1), Counter(failed=2, error=1), 9) == "2 failed; 1 error"
    assert (
        summarize_failure(ran(4, stderr_tail="ERROR: file or directory not found: x\n"), Counter(), 0)
        == "pytest exit code 4 (usage error): ERROR: file or directory not found: x"
    )
    assert summarize_failure(ran(5), Counter(), 0) == "pytest exit code 5 (no tests collected)"
    assert summarize_failure(ran(-9), Counter(failed=1), 3) == "pytest killed by SIGKILL; 3 tests completed; 1 failed"


# -- batches forked from a long-lived pytest process ------------------------------------


@pytest.fixture
def pool() -> Iterator[PytestServerPool]:
    servers = PytestServerPool()
    try:
        yield servers
    finally:
        servers.close()


def _run_in(pool: PytestServerPool, tmp_path: Path, node_ids: list[str], **params: Any) -> ExecutionResult:
    task = leased("pytest", {"node_ids": node_ids, "cwd": str(tmp_path / "suite"), **params})
    return asyncio.run(PytestExecutor(pool).run(task, context(tmp_path)))


def _suite(tmp_path: Path, files: dict[str, str]) -> Path:
    suite = tmp_path / "suite"
    suite.mkdir(exist_ok=True)
    (suite / "pytest.ini").write_text("[pytest]\n")
    for name, text in files.items():
        (suite / name).write_text(textwrap.dedent(text))
    return suite


# A conftest whose imports log each time they run, and a test that fails if module state
# leaked into its process from another batch.
COUNTED_CONFTEST = {
    "heavy_helpers.py": """
        from pathlib import Path

        with (Path(__file__).parent / "imports.log").open("a") as log:
            log.write("imported\\n")
    """,
    "conftest.py": "import heavy_helpers\n",
    "test_state.py": """
        SEEN = []

        def test_first_in_its_process():
            SEEN.append(1)
            assert SEEN == [1]
    """,
}


def test_batches_fork_from_one_warm_server_and_share_no_module_state(tmp_path: Path, pool: PytestServerPool) -> None:
    suite = _suite(tmp_path, COUNTED_CONFTEST)

    runs = [_run_in(pool, tmp_path, ["test_state.py::test_first_in_its_process"]) for _ in range(3)]

    assert [(r.ok, r.results["process"], r.results["passed"]) for r in runs] == [(True, "forked", 1)] * 3
    assert pool.started == 1
    # What the conftest imports was imported once, by the server; every batch found it in memory.
    assert (suite / "imports.log").read_text() == "imported\n"


def test_a_segfault_ends_only_its_batch(tmp_path: Path, pool: PytestServerPool) -> None:
    _suite(
        tmp_path,
        {
            "test_segv.py": """
                import ctypes

                def test_before():
                    pass

                def test_segfault():
                    ctypes.string_at(0)

                def test_after():
                    pass
            """
        },
    )

    crashed = _run_in(pool, tmp_path, ["test_segv.py"])
    after = _run_in(pool, tmp_path, ["test_segv.py::test_after"])

    assert not crashed.ok
    assert crashed.results["exit_code"] == -signal.SIGSEGV
    assert crashed.error == "pytest killed by SIGSEGV; 1 tests completed"
    assert [r.test_id for r in crashed.records] == ["test_segv.py::test_before"]
    assert "Segmentation fault" in crashed.results["stderr_tail"]  # faulthandler's report
    assert after.ok and after.results["process"] == "forked"
    assert pool.started == 1  # the server outlived its child


def test_a_changed_test_or_conftest_gives_the_next_batch_a_fresh_server(tmp_path: Path, pool: PytestServerPool) -> None:
    """The warm server imported both (its warm-up collects every test module), so an edit
    to either makes it stale."""
    suite = _suite(
        tmp_path,
        {
            "conftest.py": "import pytest\n\n@pytest.fixture\ndef answer():\n    return 1\n",
            "test_answer.py": "def test_answer(answer):\n    assert answer == 1\n",
        },
    )
    first = _run_in(pool, tmp_path, ["test_answer.py"])
    (suite / "test_answer.py").write_text("def test_answer(answer):\n    assert answer == 2\n")
    test_changed = _run_in(pool, tmp_path, ["test_answer.py"])
    (suite / "conftest.py").write_text("import pytest\n\n@pytest.fixture\ndef answer():\n    return 2  # changed\n")
    conftest_changed = _run_in(pool, tmp_path, ["test_answer.py"])

    assert first.ok
    assert test_changed.error == "1 failed"  # the edited test ran
    assert conftest_changed.ok  # so did the edited conftest
    assert pool.started == 3


def test_a_selection_runs_in_the_warm_session_without_collecting_again(tmp_path: Path, pool: PytestServerPool) -> None:
    suite = _suite(
        tmp_path,
        {
            "test_counted.py": """
                from pathlib import Path

                with (Path(__file__).parent / "imports.log").open("a") as log:
                    log.write("imported\\n")

                def test_one():
                    pass

                def test_two():
                    assert False
            """,
            "test_broken.py": "import no_such_module\n\ndef test_never():\n    pass\n",
        },
    )
    args = {"args": ["."], "workerinput": {"workercount": 2, "testrunuid": "r"}}

    runs = [
        _run_in(pool, tmp_path, [], select=["test_counted.py::test_one"], **args),
        _run_in(pool, tmp_path, [], select=["test_counted.py::test_two", "test_counted.py::test_one"], **args),
        _run_in(pool, tmp_path, [], select=["test_broken.py::test_never", "test_counted.py::test_one"], **args),
    ]

    assert [r.results["process"] for r in runs] == ["resumed"] * 3
    assert [[rec.test_id for rec in r.records] for r in runs] == [
        ["test_counted.py::test_one"],
        ["test_counted.py::test_two", "test_counted.py::test_one"],
        ["test_counted.py::test_one"],
    ]
    assert (runs[0].ok, runs[1].error) == (True, "1 failed")
    # A file the server could not collect: its tests are missing, with pytest's report why.
    assert runs[2].results["missing"] == ["test_broken.py::test_never"]
    [error] = runs[2].results["collect_errors"]
    assert "no_such_module" in error["longrepr"]
    assert (suite / "imports.log").read_text() == "imported\n"  # by the server, once
    assert pool.started == 1


def test_without_fork_each_batch_starts_a_fresh_pytest(
    tmp_path: Path, pool: PytestServerPool, monkeypatch: pytest.MonkeyPatch
) -> None:
    _suite(tmp_path, {"test_ok.py": "def test_ok():\n    pass\n"})
    monkeypatch.setenv(FORK_VARIABLE, "0")

    result = _run_in(pool, tmp_path, ["test_ok.py"])

    assert result.ok and result.results["process"] == "fresh"
    assert pool.started == 0


def _wait_for(path: Path) -> None:
    deadline = time.monotonic() + 60  # only a guard against a hang
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.05)


def test_a_server_whose_worker_goes_away_kills_its_batch(tmp_path: Path) -> None:
    suite = _suite(
        tmp_path,
        {
            "test_wait.py": """
                import subprocess
                import time
                from pathlib import Path

                def test_wait():
                    child = subprocess.Popen(["sleep", "600"])
                    (Path(__file__).parent / "grandchild.pid").write_text(str(child.pid))
                    time.sleep(600)
            """
        },
    )

    async def scenario() -> tuple[int, int]:
        key = ServerKey.of(suite, ["-q"], {"PATH": os.environ["PATH"]})
        server = PytestServer.spawn(key)
        assert await server.wait_ready(60)
        assert server.proc is not None and server.proc.stdin is not None
        server.proc.stdin.write(
            (json.dumps(BatchSpec(["-q", "test_wait.py"], suite, {}, tmp_path / "logs").message()) + "\n").encode()
        )
        server.proc.stdin.flush()
        started = await server.lines.read(30)
        assert started is not None and "started" in started
        pid_file = suite / "grandchild.pid"
        await asyncio.to_thread(_wait_for, pid_file)
        server.proc.stdin.close()  # what the server sees when its worker dies
        server.proc.wait(30)
        return int(started["started"]), int(pid_file.read_text())

    child, grandchild = asyncio.run(scenario())

    assert is_gone(child) and is_gone(grandchild)


def test_each_result_is_stamped_when_its_test_ended(tmp_path: Path, pool: PytestServerPool) -> None:
    _suite(
        tmp_path,
        {"test_two.py": "import time\n\ndef test_a():\n    time.sleep(0.05)\n\ndef test_b():\n    time.sleep(0.01)\n"},
    )
    before_ms = time.time_ns() // 1_000_000

    result = _run_in(pool, tmp_path, ["test_two.py"])
    after_ms = time.time_ns() // 1_000_000

    a, b = result.records
    assert (a.test_id, b.test_id) == ("test_two.py::test_a", "test_two.py::test_b")
    assert before_ms < a.timestamp_ms < b.timestamp_ms <= after_ms  # b started after a ended


def test_what_the_warm_up_put_in_the_environment_stays_there(tmp_path: Path, pool: PytestServerPool) -> None:
    """A conftest in a package is imported once, by the server: what it set in the
    environment must still be there in every batch, as in a fresh process."""
    suite = _suite(tmp_path, {})
    (suite / "tests").mkdir()
    (suite / "tests" / "__init__.py").write_text("")
    (suite / "tests" / "conftest.py").write_text('import os\n\nos.environ.setdefault("SET_BY_CONFTEST", "yes")\n')
    (suite / "tests" / "test_env.py").write_text(
        'import os\n\ndef test_env():\n    assert os.environ.get("SET_BY_CONFTEST") == "yes"\n'
        '    assert "DTF_TASK_ID" in os.environ\n'
    )

    runs = [_run_in(pool, tmp_path, ["tests/test_env.py"]) for _ in range(2)]

    assert [(r.ok, r.results["process"]) for r in runs] == [(True, "forked")] * 2, runs[0].results["stdout_tail"]
    assert pool.started == 1


def test_a_suite_that_makes_warnings_errors_runs_forked(tmp_path: Path, pool: PytestServerPool) -> None:
    """No warning of pytest's own (such as a plugin module imported before pytest could
    rewrite it) may reach a batch that the same fresh pytest process would not see."""
    suite = _suite(tmp_path, {"test_ok.py": "def test_ok():\n    pass\n"})
    (suite / "pytest.ini").write_text("[pytest]\nfilterwarnings = error\n")

    result = _run_in(pool, tmp_path, ["test_ok.py"])

    assert result.ok and result.results["process"] == "forked", result.results["stdout_tail"]
    assert "warning" not in result.results["stdout_tail"].lower()


# -- warm servers shared between processes ------------------------------------------------


def _shared_pools(tmp_path: Path, n: int) -> list[PytestServerPool]:
    """Pools as in `n` workers on one machine: each its own, sharing one directory."""
    share = tmp_path / "share"
    share.mkdir(mode=0o700, exist_ok=True)
    return [PytestServerPool(share=share) for _ in range(n)]


async def _run_batch(pool: PytestServerPool, tmp_path: Path, worker: str, node_ids: list[str]) -> ExecutionResult:
    (tmp_path / worker).mkdir(exist_ok=True)
    task = leased("pytest", {"node_ids": node_ids, "cwd": str(tmp_path / "suite")})
    return await PytestExecutor(pool).run(task, context(tmp_path / worker, worker_id=worker))


def test_a_second_worker_clones_the_first_ones_warm_server_and_outlives_it(tmp_path: Path) -> None:
    suite = _suite(tmp_path, COUNTED_CONFTEST)
    first, second = _shared_pools(tmp_path, 2)
    node_ids = ["test_state.py::test_first_in_its_process"]
    try:
        a = asyncio.run(_run_batch(first, tmp_path, "w1", node_ids))
        b = asyncio.run(_run_batch(second, tmp_path, "w2", node_ids))
        first.close()  # the clone's origin goes away
        c = asyncio.run(_run_batch(second, tmp_path, "w2", node_ids))
    finally:
        first.close()
        second.close()

    assert [(r.ok, r.results["process"]) for r in (a, b, c)] == [(True, "forked")] * 3
    assert (first.started, first.cloned, second.started, second.cloned) == (1, 0, 0, 1)
    # One warm-up for both workers: the conftest's imports ran once, module state did not leak.
    assert (suite / "imports.log").read_text() == "imported\n"


def test_workers_starting_together_warm_one_server(tmp_path: Path) -> None:
    suite = _suite(tmp_path, COUNTED_CONFTEST)
    pools = _shared_pools(tmp_path, 3)
    node_ids = ["test_state.py::test_first_in_its_process"]

    async def together() -> list[ExecutionResult]:
        return list(await asyncio.gather(*(_run_batch(p, tmp_path, f"w{i}", node_ids) for i, p in enumerate(pools))))

    try:
        results = asyncio.run(together())
    finally:
        for pool in pools:
            pool.close()

    assert [(r.ok, r.results["process"]) for r in results] == [(True, "forked")] * 3
    assert sorted((p.started, p.cloned) for p in pools) == [(0, 1), (0, 1), (1, 0)]
    assert (suite / "imports.log").read_text() == "imported\n"


def test_a_shared_server_whose_files_changed_gives_no_clone(tmp_path: Path) -> None:
    suite = _suite(
        tmp_path,
        {
            "conftest.py": "import pytest\n\n@pytest.fixture\ndef answer():\n    return 1\n",
            "test_answer.py": "def test_answer(answer):\n    assert answer == 2\n",
        },
    )
    first, second = _shared_pools(tmp_path, 2)
    try:
        before = asyncio.run(_run_batch(first, tmp_path, "w1", ["test_answer.py"]))
        (suite / "conftest.py").write_text("import pytest\n\n@pytest.fixture\ndef answer():\n    return 2\n")
        after = asyncio.run(_run_batch(second, tmp_path, "w2", ["test_answer.py"]))
    finally:
        first.close()
        second.close()

    assert before.error == "1 failed"
    assert after.ok  # the edited conftest, in a server of the second worker's own
    assert (second.started, second.cloned) == (1, 0)


def test_a_clone_shares_in_its_origins_place_once_the_origin_exits(tmp_path: Path) -> None:
    suite = _suite(tmp_path, COUNTED_CONFTEST)
    first, second, third = _shared_pools(tmp_path, 3)
    node_ids = ["test_state.py::test_first_in_its_process"]
    try:
        asyncio.run(_run_batch(first, tmp_path, "w1", node_ids))
        asyncio.run(_run_batch(second, tmp_path, "w2", node_ids))
        (socket_path,) = (tmp_path / "share").glob("*.sock")
        first.close()  # its server stops sharing; the second worker's clone takes over
        deadline = time.monotonic() + 30  # only a guard against a hang
        while not socket_path.exists():
            assert time.monotonic() < deadline, "no clone took over"
            time.sleep(0.05)
        result = asyncio.run(_run_batch(third, tmp_path, "w3", node_ids))
    finally:
        for pool in (first, second, third):
            pool.close()

    assert result.ok and result.results["process"] == "forked"
    assert (third.started, third.cloned) == (0, 1)
    assert (suite / "imports.log").read_text() == "imported\n"
