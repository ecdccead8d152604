"""`command` tasks: run one program or shell line and record how it went.

parameters: {"command": [argv...] | "shell line", "env": {...}, "cwd": "...",
             "timeout": seconds, "test_id": "...", "snapshot": {"sha256": "...", "subdir": "..."}}
"""

from __future__ import annotations

import shlex
from typing import Any

from dtf_common.errors import InvalidArgument
from dtf_common.schemas import ResultStatus
from dtf_worker.executors.base import ExecutionContext, ExecutionResult, SnapshotUnavailable
from dtf_worker.executors.params import Parameters
from dtf_worker.executors.records import new_record
from dtf_worker.lease import Lease


def command_text(command: list[str] | str) -> str:
    return command if isinstance(command, str) else shlex.join(command)


class CommandExecutor:
    async def run(self, lease: Lease, ctx: ExecutionContext) -> ExecutionResult:
        try:
            params = Parameters.of(lease)
            command = params.command()
            env, cwd = ctx.child_env(params.env()), await ctx.task_cwd(params)
            timeout = params.timeout(lease.timeout_s, ctx.default_timeout)
            test_id = params.text("test_id") or str(lease.metadata.get("name") or command_text(command))
        except InvalidArgument as exc:
            return ExecutionResult.invalid(exc)
        except SnapshotUnavailable as exc:
            return ExecutionResult.no_snapshot(exc)

        try:
            run = await ctx.run_process(command, cwd=cwd, env=env, time_limit=timeout)
        except OSError as exc:
            return ExecutionResult(ok=False, error=f"cannot start command: {exc}")

        error = run.failure()
        measured = run.measurements()
        results: dict[str, Any] = {
            "exit_code": run.exit_code,
            **measured,
            "timed_out": run.timed_out,
            "stdout_tail": run.stdout_tail,
            "stderr_tail": run.stderr_tail,
        }
        record = new_record(
            lease,
            ctx,
            test_id=test_id,
            status=(ResultStatus.SUCCESS if error is None else ResultStatus.FAILURE).value,
            execution_time=run.wall_time_s,
            metrics={"exit_code": run.exit_code, **measured},
            hardware_metrics={"peak_memory_mb": measured["peak_memory_mb"], "cpu_time_s": measured["cpu_time_s"]},
            raw_data={
                "command": command_text(command),
                "exit_code": run.exit_code,
                "timed_out": run.timed_out,
                "stdout_tail": run.stdout_tail,
                "stderr_tail": run.stderr_tail,
            },
        )
        return ExecutionResult(ok=error is None, error=error, results=results, records=[record])
