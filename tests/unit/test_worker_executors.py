"""Executors against real subprocesses: exit codes, time limits, group kills, measurements."""

from __future__ import annotations

import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Any

import psutil
import pytest

from dtf_worker.executors.base import ExecutionContext, ExecutionResult
from dtf_worker.executors.registry import default_executors
from dtf_worker.lease import Lease

EXECUTORS = default_executors()


def leased(task_type: str, parameters: dict[str, Any], **fields: Any) -> Lease:
    return Lease(task_id="task-1", lease_id="lease-1", type=task_type, parameters=parameters, **fields)


def context(tmp_path: Path, **overrides: Any) -> ExecutionContext:
    work = tmp_path / "work"
    work.mkdir(exist_ok=True)
    values: dict[str, Any] = {
        "worker_id": "w1",
        "hardware_id": "cpu-test",
        "working_dir": work,
        "default_timeout": 60.0,
        "kill_grace_s": 0.5,
    }
    return ExecutionContext(**{**values, **overrides})


def run(lease: Lease, ctx: ExecutionContext) -> ExecutionResult:
    return asyncio.run(EXECUTORS.get(lease.type).run(lease, ctx))


def is_gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE  # dead, awaiting its new parent's reap
    except psutil.NoSuchProcess:
        return True


def test_command_exit_code_and_output_tails(tmp_path: Path) -> None:
    task = leased("command", {"command": ["sh", "-c", "echo out; echo first >&2; echo boom >&2; exit 3"]})
    result = run(task, context(tmp_path))
    assert not result.ok and not result.non_retryable
    assert result.error == "exit code 3: boom"
    assert result.results["exit_code"] == 3
    assert result.results["stdout_tail"] == "out\n"
    [record] = result.records
    assert record.status == "failure" and record.task_id == "task-1" and record.worker_id == "w1"
    assert record.test_id == "sh -c 'echo out; echo first >&2; echo boom >&2; exit 3'"
    assert json.loads(record.environment_json)["hardware_id"] == "cpu-test"
    assert json.loads(record.metrics_json)["exit_code"] == 3
    assert set(json.loads(record.hardware_metrics_json)) == {"peak_memory_mb", "cpu_time_s"}


def test_command_success_with_env_cwd_and_named_test(tmp_path: Path) -> None:
    task = leased(
        "command",
        {
            "command": 'printf "%s" "$GREETING" > greeting.txt',
            "env": {"GREETING": "hello", "N": 3},
            "cwd": str(tmp_path),
        },
        metadata={"name": "greet"},
    )
    result = run(task, context(tmp_path))
    assert result.ok and result.error is None
    assert (tmp_path / "greeting.txt").read_text() == "hello"
    assert result.records[0].test_id == "greet" and result.records[0].status == "success"


def test_timeout_kills_the_whole_process_group(tmp_path: Path) -> None:
    task = leased("command", {"command": "sleep 30 & echo $! > grandchild.pid; wait", "timeout": 0.5})
    ctx = context(tmp_path)
    began = time.monotonic()
    result = run(task, ctx)
    assert time.monotonic() - began < 5
    assert result.error == "timed out after 0.5s" and result.results["timed_out"]
    grandchild = int((ctx.working_dir / "grandchild.pid").read_text())
    deadline = time.monotonic() + 3
    while not is_gone(grandchild) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert is_gone(grandchild)


def test_a_process_ignoring_sigterm_is_killed_after_the_grace(tmp_path: Path) -> None:
    code = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(30)"
    task = leased("command", {"command": [sys.executable, "-c", code], "timeout": 0.5})
    began = time.monotonic()
    result = run(task, context(tmp_path, kill_grace_s=0.3))
    assert time.monotonic() - began < 5
    assert result.results["exit_code"] == -9 and result.error == "timed out after 0.5s"


def test_cancel_event_stops_the_task(tmp_path: Path) -> None:
    ctx = context(tmp_path)

    async def cancel_soon() -> ExecutionResult:
        running = asyncio.create_task(EXECUTORS.get("command").run(leased("command", {"command": "sleep 30"}), ctx))
        await asyncio.sleep(0.3)
        ctx.cancel.set()
        return await running

    began = time.monotonic()
    result = asyncio.run(cancel_soon())
    assert time.monotonic() - began < 5
    assert not result.ok and result.error == "cancelled"


def test_measures_cpu_time_and_peak_memory(tmp_path: Path) -> None:
    code = (
        "import time\n"
        "block = bytearray(80 * 1024 * 1024)\n"
        "end = time.process_time() + 0.3\n"
        "while time.process_time() < end: pass\n"
    )
    result = run(leased("command", {"command": [sys.executable, "-c", code]}), context(tmp_path))
    assert result.ok, result.error
    assert result.results["peak_memory_mb"] >= 80
    assert result.results["cpu_time_s"] >= 0.25
    assert result.results["wall_time_s"] >= result.results["cpu_time_s"] * 0.9


@pytest.mark.parametrize(
    ("parameters", "field"),
    [
        ({}, "parameters.command"),
        ({"command": 5}, "parameters.command"),
        ({"command": []}, "parameters.command"),
        ({"command": "true", "env": {"A": ["x"]}}, "parameters.env.A"),
        ({"command": "true", "timeout": -1}, "parameters.timeout"),
    ],
)
def test_invalid_parameters_are_not_retryable(tmp_path: Path, parameters: dict[str, Any], field: str) -> None:
    result = run(leased("command", parameters), context(tmp_path))
    assert not result.ok and result.non_retryable
    assert result.error is not None and field in result.error


def test_missing_executable_is_a_retryable_failure(tmp_path: Path) -> None:
    result = run(leased("command", {"command": ["/nonexistent/tool"]}), context(tmp_path))
    assert not result.ok and not result.non_retryable
    assert result.error is not None and result.error.startswith("cannot start command")


def test_noop_and_unknown_type(tmp_path: Path) -> None:
    result = run(leased("noop", {}), context(tmp_path))
    assert result.ok and result.results == {"noop": True} and result.records == []
    with pytest.raises(Exception, match="unknown task type 'nope'"):
        EXECUTORS.get("nope")


def test_tasks_learn_who_runs_them_and_where_to_cache(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    ctx = context(tmp_path, task_id="task-1", cache_dir=cache)
    task = leased(
        "command",
        {"command": 'echo "$DTF_TASK_ID $DTF_WORKER_ID $DTF_HARDWARE_ID $DTF_CACHE_DIR $OWN"', "env": {"OWN": "x"}},
    )
    result = run(task, ctx)
    assert result.results["stdout_tail"] == f"task-1 w1 cpu-test {cache} x\n"


def test_tasks_do_not_inherit_the_workers_credentials(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WORKER_API_KEY", "worker-token")
    monkeypatch.setenv("DTF_COORDINATOR__API_KEY", "worker-token")
    monkeypatch.setenv("HARMLESS", "kept")
    task = leased("command", {"command": 'echo "${WORKER_API_KEY:-none} ${DTF_COORDINATOR__API_KEY:-none} $HARMLESS"'})
    assert run(task, context(tmp_path)).results["stdout_tail"] == "none none kept\n"
